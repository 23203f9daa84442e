//! `targets`: what atomc knows about the machines it compiles for. A [`Target`] gives the
//! ISA features, vector widths, registers, caches, cores, clock, FMA units, peak FLOP/s and
//! memory bandwidth that the extraction cost model and the schedule search use.
//! [`Target::host`] detects this machine (CPU features, cache sizes from sysfs) and takes
//! the figures [`calibrate`] measured when a calibration file for it exists;
//! [`Target::named`] gives static descriptions of other machines. [`Target::fingerprint`]
//! identifies a target for tuning records.
//!
//! Invariant: `targets` depends on nothing else in atomc.

mod calibrate;
mod simd;

pub use calibrate::{
    CALIBRATION_FORMAT, CalibrateOptions, Calibration, CalibrationError, WidthGflops, calibrate, calibrate_with,
    calibration_path, load_calibration_from, store_calibration,
};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A target description.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub name: String,
    pub triple: String,
    /// The CPU or GPU model (`model name` of /proc/cpuinfo on the host).
    pub cpu_model: String,
    /// ISA features code may use (`avx2`, `fma`, `avx512f`, `neon`, `sm_80`, ...).
    pub features: Vec<String>,
    /// Widest SIMD register in bits usable by the backend that will run the code
    /// (Cranelift: 128; see [`Target::with_vector_bits`]).
    pub vector_bits: u32,
    /// Widest SIMD register the ISA has (what LLVM would use).
    pub isa_vector_bits: u32,
    /// Architectural vector registers.
    pub vector_registers: u32,
    /// Per-core L1 data cache, per-core (or per-cluster) L2 and shared L3, in bytes (0: none).
    pub l1_bytes: usize,
    pub l2_bytes: usize,
    pub l3_bytes: usize,
    pub cores: usize,
    /// Clock in GHz (nominal).
    pub ghz: f64,
    /// f32 FMA units per core (each does `vector_bits / 32` lanes per cycle).
    pub fma_units: u32,
    /// Sustained memory bandwidth in GB/s (all cores).
    pub bandwidth_gbs: f64,
    /// Measured figures, when this target was calibrated (host only).
    pub calibration: Option<Calibration>,
}

/// f32 FMA units per core assumed for the host (current x86-64 and Arm server cores have 2).
const HOST_FMA_UNITS: u32 = 2;

impl Target {
    /// This machine: CPU features detected at run time, cache sizes from
    /// `/sys/devices/system/cpu/cpu0/cache` (defaults when unreadable), the CPU model from
    /// `/proc/cpuinfo`, and the calibrated FLOP/s and bandwidth when [`calibrate`] stored
    /// them for this machine (a corrupt calibration file is ignored with a warning). Detected
    /// once per process.
    pub fn host() -> Target {
        static HOST: OnceLock<Target> = OnceLock::new();
        HOST.get_or_init(|| {
            let path = calibration_path(&Target::detect_host());
            Target::host_with_calibration(path.as_deref())
        })
        .clone()
    }

    /// The detected host with the calibration at `path` when it holds one for this machine;
    /// an unreadable, corrupt or foreign file is ignored with a warning on stderr.
    pub fn host_with_calibration(path: Option<&Path>) -> Target {
        let mut t = Target::detect_host();
        match path.map(|p| load_calibration_from(p, &t)) {
            Some(Ok(Some(c))) => t.apply_calibration(c),
            Some(Err(e)) => eprintln!("warning: ignoring the calibration file: {e}"),
            Some(Ok(None)) | None => {}
        }
        t
    }

    /// The host as detected, without calibration.
    pub fn detect_host() -> Target {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let features = host_features();
        let isa_bits = host_vector_bits();
        let caches = host_caches();
        Target {
            name: "host".into(),
            triple: format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
            cpu_model: host_cpu_model(),
            vector_registers: if features.iter().any(|f| f == "avx512f") || cfg!(target_arch = "aarch64") { 32 } else { 16 },
            features,
            vector_bits: isa_bits,
            isa_vector_bits: isa_bits,
            l1_bytes: caches.0.unwrap_or(32 << 10),
            l2_bytes: caches.1.unwrap_or(1 << 20),
            l3_bytes: caches.2.unwrap_or(8 << 20),
            cores,
            ghz: 2.5,
            fma_units: HOST_FMA_UNITS,
            bandwidth_gbs: 10.0,
            calibration: None,
        }
    }

    /// A static description by name: `host`, `aarch64` (any ARMv8-A core with NEON),
    /// `neoverse-n1` (an AArch64 Neoverse-N1-class
    /// core, e.g. AWS Graviton2), `sm_80` (NVIDIA A100) or `sm_90` (NVIDIA H100).
    pub fn named(name: &str) -> Option<Target> {
        match name {
            "host" => Some(Target::host()),
            "neoverse-n1" => Some(Target {
                name: "neoverse-n1".into(),
                triple: "aarch64-unknown-linux-gnu".into(),
                cpu_model: "Arm Neoverse-N1".into(),
                features: ["neon", "fp16", "dotprod", "lse", "rcpc"].map(String::from).to_vec(),
                vector_bits: 128,
                isa_vector_bits: 128,
                vector_registers: 32,
                l1_bytes: 64 << 10,
                l2_bytes: 1 << 20,
                l3_bytes: 32 << 20,
                cores: 64,
                ghz: 2.5,
                fma_units: 2,
                bandwidth_gbs: 150.0,
                calibration: None,
            }),
            // Any ARMv8-A core: NEON only, a modest cache hierarchy (Cortex-A72 class).
            "aarch64" => Some(Target {
                name: "aarch64".into(),
                triple: "aarch64-unknown-linux-gnu".into(),
                cpu_model: "generic ARMv8-A".into(),
                features: vec!["neon".into()],
                vector_bits: 128,
                isa_vector_bits: 128,
                vector_registers: 32,
                l1_bytes: 32 << 10,
                l2_bytes: 1 << 20,
                l3_bytes: 0,
                cores: 4,
                ghz: 2.0,
                fma_units: 2,
                bandwidth_gbs: 20.0,
                calibration: None,
            }),
            // A100: 64 f32 lanes per SM (19.5 TFLOP/s); H100: 128 (67 TFLOP/s).
            "sm_80" => Some(Target::nvptx("sm_80", "NVIDIA A100 (SXM4 80GB)", 108, 1.41, 2, 192 << 10, 40 << 20, 2039.0)),
            "sm_90" => Some(Target::nvptx("sm_90", "NVIDIA H100 (SXM5)", 132, 1.98, 4, 256 << 10, 50 << 20, 3350.0)),
            _ => None,
        }
    }

    /// The names [`Target::named`] knows.
    pub const NAMES: &'static [&'static str] = &["host", "aarch64", "neoverse-n1", "sm_80", "sm_90"];

    /// An NVPTX GPU: a "core" is a streaming multiprocessor, a 1024-bit vector a warp of
    /// 32 f32 lanes and an FMA unit one warp-wide FMA per cycle (`fma_units` x 32 f32 lanes
    /// per SM); L1 is the SM's combined L1/shared memory, L2 the device's.
    #[allow(clippy::too_many_arguments)]
    fn nvptx(sm: &str, model: &str, sms: usize, ghz: f64, fma_units: u32, l1: usize, l2: usize, bandwidth_gbs: f64) -> Target {
        Target {
            name: sm.into(),
            triple: "nvptx64-nvidia-cuda".into(),
            cpu_model: model.into(),
            features: vec![sm.into(), "ptx".into()],
            vector_bits: 1024,
            isa_vector_bits: 1024,
            vector_registers: 255,
            l1_bytes: l1,
            l2_bytes: l2,
            l3_bytes: 0,
            cores: sms,
            ghz,
            fma_units,
            bandwidth_gbs,
            calibration: None,
        }
    }

    /// The Cranelift backend's view of a target: 128-bit SIMD whatever the hardware has.
    pub fn with_vector_bits(mut self, bits: u32) -> Target {
        self.vector_bits = bits;
        self
    }

    /// Identifies the target for tuning records: architecture, ISA features, the vector
    /// width the backend uses, the CPU model and the core count. Stable across runs on one
    /// machine (it leaves out calibrated figures, clock and bandwidth).
    pub fn fingerprint(&self) -> String {
        let arch = self.triple.split('-').next().unwrap_or("unknown");
        format!("{arch};{};v{};{};{}c", self.features.join(","), self.vector_bits, self.cpu_model.trim(), self.cores)
    }

    /// Peak f32 FLOP/s of one core at the backend's vector width (FMA = 2 FLOPs): the
    /// calibrated figure for that width when there is one, else the nominal
    /// clock x FMA units x lanes x 2.
    pub fn peak_flops(&self) -> f64 {
        if let Some(g) = self.calibration.as_ref().and_then(|c| c.gflops_at(self.vector_bits)) {
            return g * 1e9;
        }
        self.ghz * 1e9 * self.fma_units as f64 * (self.vector_bits / 32) as f64 * 2.0
    }

    pub fn bandwidth_bytes_per_s(&self) -> f64 {
        self.bandwidth_gbs * 1e9
    }

    /// Takes measured figures: the bandwidth, and (through [`Target::peak_flops`]) the
    /// FLOP/s per vector width.
    pub fn apply_calibration(&mut self, c: Calibration) {
        if c.bandwidth_gbs.is_finite() && c.bandwidth_gbs > 0.0 {
            self.bandwidth_gbs = c.bandwidth_gbs;
        }
        self.calibration = Some(c);
    }

    /// One line of key figures (for `atomc targets`).
    pub fn summary(&self) -> String {
        let kib = |b: usize| if b >= 1 << 20 { format!("{}M", b >> 20) } else { format!("{}K", b >> 10) };
        format!(
            "{:<12} {:<26} {} cores @ {:.2} GHz, vectors {} bits (ISA {}), {} vregs, L1 {} L2 {} L3 {}, peak {:.1} GFLOP/s/core, {:.1} GB/s{}",
            self.name,
            self.triple,
            self.cores,
            self.ghz,
            self.vector_bits,
            self.isa_vector_bits,
            self.vector_registers,
            kib(self.l1_bytes),
            kib(self.l2_bytes),
            kib(self.l3_bytes),
            self.peak_flops() / 1e9,
            self.bandwidth_gbs,
            if self.calibration.is_some() { " (calibrated)" } else { "" }
        )
    }
}

/// atomc's per-user directory: `$ATOMC_HOME`, else `$XDG_CACHE_HOME/atomc`, else
/// `~/.cache/atomc` (`None` when none of these variables is set).
pub fn atomc_home() -> Option<PathBuf> {
    let var = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty()).map(PathBuf::from);
    var("ATOMC_HOME")
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("atomc")))
        .or_else(|| var("HOME").map(|p| p.join(".cache").join("atomc")))
}

#[cfg(target_arch = "x86_64")]
fn host_features() -> Vec<String> {
    let mut f = Vec::new();
    macro_rules! detect {
        ($($name:tt),*) => {
            $(if std::arch::is_x86_feature_detected!($name) { f.push($name.to_string()); })*
        };
    }
    detect!("sse2", "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512vnni");
    f
}

#[cfg(target_arch = "aarch64")]
fn host_features() -> Vec<String> {
    let mut f = Vec::new();
    macro_rules! detect {
        ($($name:tt),*) => {
            $(if std::arch::is_aarch64_feature_detected!($name) { f.push($name.to_string()); })*
        };
    }
    detect!("neon", "fp16", "dotprod", "sve", "sve2");
    f
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn host_features() -> Vec<String> {
    Vec::new()
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

/// `model name` (x86) or `CPU part` (Arm) of the first CPU in /proc/cpuinfo.
fn host_cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "model name" | "CPU part").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// L1 data, L2 and L3 sizes of cpu0 from sysfs (each `None` when unreadable).
fn host_caches() -> (Option<usize>, Option<usize>, Option<usize>) {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let (mut l1, mut l2, mut l3) = (None, None, None);
    let Ok(entries) = std::fs::read_dir(dir) else { return (l1, l2, l3) };
    for e in entries.flatten() {
        let read = |f: &str| std::fs::read_to_string(e.path().join(f)).map(|s| s.trim().to_string()).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else { continue };
        let Some(bytes) = parse_cache_size(&size) else { continue };
        match (level.as_str(), kind.as_str()) {
            ("1", "Data" | "Unified") => l1 = Some(bytes),
            ("2", _) => l2 = Some(bytes),
            ("3", _) => l3 = Some(bytes),
            _ => {}
        }
    }
    (l1, l2, l3)
}

/// `32K`, `1024K`, `32M` or a plain byte count.
fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_detection_is_sane() {
        let t = Target::detect_host();
        assert!(t.vector_bits >= 128 && t.isa_vector_bits >= t.vector_bits);
        assert!(t.peak_flops() >= 1e9);
        assert!(t.cores >= 1);
        assert!(t.l1_bytes >= 4 << 10 && t.l1_bytes <= t.l2_bytes, "{t:?}");
        assert!(!t.cpu_model.is_empty());
        if cfg!(target_arch = "x86_64") {
            assert!(t.features.iter().any(|f| f == "sse2"), "{:?}", t.features);
        }
        assert_eq!(t.clone().with_vector_bits(128).vector_bits, 128);
        assert!(t.l1_bytes >= 4096 && t.l2_bytes >= t.l1_bytes, "{t:?}");
    }

    #[test]
    fn the_fingerprint_is_stable_and_names_the_backend_width() {
        let a = Target::detect_host();
        assert_eq!(a.fingerprint(), Target::detect_host().fingerprint());
        let narrow = a.clone().with_vector_bits(128).fingerprint();
        assert!(narrow.contains(";v128;"), "{narrow}");
        let mut other = a.clone().with_vector_bits(128);
        other.cores += 1;
        assert_ne!(other.fingerprint(), narrow);
        let mut calibrated = a.clone();
        calibrated.bandwidth_gbs *= 2.0;
        assert_eq!(calibrated.fingerprint(), a.fingerprint());
    }

    #[test]
    fn static_descriptions_are_present() {
        for name in Target::NAMES {
            let t = Target::named(name).ok_or(name);
            assert!(t.is_ok_and(|t| t.peak_flops() > 1e9 && t.bandwidth_gbs > 0.0 && t.cores > 0), "{name}");
        }
        assert!(Target::named("neoverse-n1").is_some_and(|t| t.triple.starts_with("aarch64") && t.vector_bits == 128));
        assert!(Target::named("sm_90").is_some_and(|t| t.triple.starts_with("nvptx64") && t.cores == 132));
        assert!(Target::named("pentium-4").is_none());
    }

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("32K"), Some(32 << 10));
        assert_eq!(parse_cache_size("1024K\n"), Some(1 << 20));
        assert_eq!(parse_cache_size("32M"), Some(32 << 20));
        assert_eq!(parse_cache_size("4096"), Some(4096));
        assert_eq!(parse_cache_size("big"), None);
        assert_eq!(parse_cache_size(""), None);
    }
}
