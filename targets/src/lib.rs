//! `targets`: what atomc knows about the machines it compiles for. A [`Target`] gives the
//! vector width, core count, peak FLOP/s, memory bandwidth and cache sizes that the
//! extraction cost model and the schedule heuristic use. [`Target::host`] detects this machine.
//!
//! Invariant: `targets` depends on nothing else in atomc.

/// A target description.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub name: String,
    pub triple: String,
    /// Widest SIMD register in bits usable by the backend that will run the code.
    pub vector_bits: u32,
    pub cores: usize,
    /// Clock in GHz (nominal).
    pub ghz: f64,
    /// f32 FMA units per core (each does `vector_bits / 32` lanes per cycle).
    pub fma_units: u32,
    /// Sustained memory bandwidth in GB/s (all cores).
    pub bandwidth_gbs: f64,
    /// L1 data cache bytes per core.
    pub l1_bytes: usize,
    /// L2 cache bytes per core.
    pub l2_bytes: usize,
}

impl Target {
    /// This machine, detected from CPU features (nominal clock and bandwidth).
    pub fn host() -> Target {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Target {
            name: "host".into(),
            triple: format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
            vector_bits: host_vector_bits(),
            cores,
            ghz: 2.5,
            fma_units: 2,
            bandwidth_gbs: 10.0,
            l1_bytes: host_cache_bytes(1).unwrap_or(32 * 1024),
            l2_bytes: host_cache_bytes(2).unwrap_or(1024 * 1024),
        }
    }

    /// The Cranelift backend's view of a target: 128-bit SIMD whatever the hardware has.
    pub fn with_vector_bits(mut self, bits: u32) -> Target {
        self.vector_bits = bits;
        self
    }

    /// Peak f32 FLOP/s of one core (FMA = 2 FLOPs).
    pub fn peak_flops(&self) -> f64 {
        self.ghz * 1e9 * self.fma_units as f64 * (self.vector_bits / 32) as f64 * 2.0
    }

    pub fn bandwidth_bytes_per_s(&self) -> f64 {
        self.bandwidth_gbs * 1e9
    }
}

/// The size of the data or unified cache of `level` of CPU 0, from Linux sysfs.
fn host_cache_bytes(level: u32) -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.flatten().find_map(|entry| {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let lvl: u32 = read("level")?.trim().parse().ok()?;
        let kind = read("type")?;
        if lvl != level || kind.trim() == "Instruction" {
            return None;
        }
        let size = read("size")?;
        let size = size.trim();
        let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
        let n: usize = digits.parse().ok()?;
        Some(match unit {
            "K" => n * 1024,
            "M" => n * 1024 * 1024,
            _ => n,
        })
    })
}

#[cfg(target_arch = "x86_64")]
fn host_vector_bits() -> u32 {
    if std::arch::is_x86_feature_detected!("avx512f") {
        512
    } else if std::arch::is_x86_feature_detected!("avx2") {
        256
    } else {
        128
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn host_vector_bits() -> u32 {
    128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_has_a_positive_peak() {
        let t = Target::host();
        assert!(t.vector_bits >= 128);
        assert!(t.peak_flops() >= 1e9);
        assert_eq!(t.clone().with_vector_bits(128).vector_bits, 128);
        assert!(t.l1_bytes >= 4096 && t.l2_bytes >= t.l1_bytes, "{t:?}");
    }
}
