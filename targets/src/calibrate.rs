//! Calibration: measured f32 FMA throughput per vector width on one core and memory
//! bandwidth on all cores, stored as JSON per machine so that [`crate::Target::host`] uses
//! measured figures instead of nominal ones.
//!
//! The file is `target-<hash>.json` in [`crate::atomc_home`], `<hash>` the FNV-1a-64 of the
//! host's [`crate::Target::fingerprint`] (at its native vector width); it holds the
//! fingerprint too, and a file whose fingerprint or format differs is not used.

use crate::Target;
use crate::simd;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The version of the calibration file.
pub const CALIBRATION_FORMAT: u32 = 1;

/// Measured figures of one machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub format: u32,
    /// [`Target::fingerprint`] of the host measured (native vector width).
    pub fingerprint: String,
    /// f32 GFLOP/s of one core (FMA = 2 FLOPs) per vector width in bits.
    pub fma: Vec<WidthGflops>,
    /// Triad bandwidth over all cores, GB/s (bytes read and written, no write-allocate).
    pub bandwidth_gbs: f64,
    /// Threads the bandwidth was measured with.
    pub bandwidth_threads: u32,
    /// How the figures were taken (repeats, sizes), for people reading the file.
    pub method: String,
    /// Seconds since the Unix epoch when measured.
    pub unix_time: u64,
}

/// The FMA throughput at one vector width.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WidthGflops {
    pub bits: u32,
    pub gflops: f64,
}

impl Calibration {
    /// The measured GFLOP/s at `bits`, if that width was measured.
    pub fn gflops_at(&self, bits: u32) -> Option<f64> {
        self.fma.iter().find(|w| w.bits == bits).map(|w| w.gflops).filter(|g| g.is_finite() && *g > 0.0)
    }
}

/// Errors of reading and writing calibration files.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("no directory for atomc's files: set ATOMC_HOME, XDG_CACHE_HOME or HOME")]
    NoHome,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a calibration file: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: calibration format {found}, this atomc reads format {CALIBRATION_FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("{path}: measured on another machine ('{found}', this one is '{expected}')")]
    OtherMachine { path: PathBuf, found: String, expected: String },
}

/// How much [`calibrate_with`] measures.
#[derive(Clone, Copy, Debug)]
pub struct CalibrateOptions {
    /// Timed repeats per figure (the median is kept).
    pub repeats: usize,
    /// Iterations of the FMA kernel per repeat (each 12 vector FMAs).
    pub fma_iters: u64,
    /// f32 elements per triad array (three arrays).
    pub triad_elems: usize,
}

impl Default for CalibrateOptions {
    /// 7 repeats of 4M FMA iterations (about 10 ms each) and a triad over three 64 MiB
    /// arrays (larger than any L3).
    fn default() -> Self {
        CalibrateOptions { repeats: 7, fma_iters: 4_000_000, triad_elems: 16 << 20 }
    }
}

/// Measures this machine with the default options (about a second).
pub fn calibrate() -> Calibration {
    calibrate_with(CalibrateOptions::default())
}

/// Measures f32 FMA throughput on one core at 128, 256 and 512 bits (those the CPU has;
/// 128 is Cranelift's peak) and the triad bandwidth `a = b + s * c` on all cores, each the
/// median of `repeats` timed runs after one warm-up.
pub fn calibrate_with(o: CalibrateOptions) -> Calibration {
    let host = Target::detect_host();
    let repeats = o.repeats.max(1);
    let mut fma = Vec::new();
    for bits in [128u32, 256, 512] {
        if simd::fma_chains(bits, 1).is_none() {
            continue;
        }
        let flops = o.fma_iters as f64 * simd::CHAINS as f64 * (bits / 32) as f64 * 2.0;
        let secs = median_seconds(repeats, || {
            std::hint::black_box(simd::fma_chains(bits, o.fma_iters));
        });
        fma.push(WidthGflops { bits, gflops: flops / secs / 1e9 });
    }
    let threads = host.cores.max(1);
    let n = o.triad_elems.max(threads);
    let (mut a, b, c) = (vec![0f32; n], vec![1f32; n], vec![2f32; n]);
    let chunk = n.div_ceil(threads);
    let bytes = 3.0 * 4.0 * n as f64;
    let secs = median_seconds(repeats, || {
        std::thread::scope(|s| {
            for ((a, b), c) in a.chunks_mut(chunk).zip(b.chunks(chunk)).zip(c.chunks(chunk)) {
                s.spawn(move || {
                    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                        *a = b + 0.5 * c;
                    }
                });
            }
        });
        std::hint::black_box(&mut a);
    });
    Calibration {
        format: CALIBRATION_FORMAT,
        fingerprint: host.fingerprint(),
        fma,
        bandwidth_gbs: bytes / secs / 1e9,
        bandwidth_threads: threads as u32,
        method: format!(
            "median of {repeats} runs after 1 warm-up; FMA: {} iterations of {} independent chains, 1 thread; triad: 3 x {} f32, {threads} threads",
            o.fma_iters,
            simd::CHAINS,
            n
        ),
        unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    }
}

/// The median wall time of `repeats` runs of `f`, after one untimed run.
fn median_seconds(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64().max(1e-9)
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Where the calibration of `t` (the detected host) is stored by default.
pub fn calibration_path(t: &Target) -> Option<PathBuf> {
    let hash = t.fingerprint().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3));
    crate::atomc_home().map(|d| d.join(format!("target-{hash:016x}.json")))
}

/// Writes `c` as pretty JSON to `path` (default: [`calibration_path`] of the host), creating
/// the directory; returns the path written.
pub fn store_calibration(c: &Calibration, path: Option<&Path>) -> Result<PathBuf, CalibrationError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => calibration_path(&Target::detect_host()).ok_or(CalibrationError::NoHome)?,
    };
    let io = |source| CalibrationError::Io { path: path.clone(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let json = serde_json::to_string_pretty(c).map_err(|source| CalibrationError::Json { path: path.clone(), source })?;
    std::fs::write(&path, json + "\n").map_err(io)?;
    Ok(path)
}

/// Reads the calibration at `path` for target `t`: `Ok(None)` when the file does not exist;
/// an error when it is not valid JSON of this format or was measured on another machine.
pub fn load_calibration_from(path: &Path, t: &Target) -> Result<Option<Calibration>, CalibrationError> {
    let text = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CalibrationError::Io { path: path.into(), source }),
    };
    let c: Calibration = serde_json::from_str(&text).map_err(|source| CalibrationError::Json { path: path.into(), source })?;
    if c.format != CALIBRATION_FORMAT {
        return Err(CalibrationError::Format { path: path.into(), found: c.format });
    }
    if c.fingerprint != t.fingerprint() {
        return Err(CalibrationError::OtherMachine { path: path.into(), found: c.fingerprint, expected: t.fingerprint() });
    }
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("atomc-targets-test-{}-{name}", std::process::id()))
    }

    fn quick() -> Calibration {
        calibrate_with(CalibrateOptions { repeats: 3, fma_iters: 20_000, triad_elems: 1 << 16 })
    }

    #[test]
    fn calibration_measures_and_round_trips() -> Result<(), CalibrationError> {
        let c = quick();
        assert!(c.gflops_at(128).is_some_and(|g| g > 0.01), "{c:?}");
        assert!(c.bandwidth_gbs > 0.01, "{c:?}");
        let path = scratch("roundtrip/target.json");
        let written = store_calibration(&c, Some(&path))?;
        let host = Target::detect_host();
        let loaded = load_calibration_from(&written, &host)?;
        let _ = std::fs::remove_dir_all(scratch("roundtrip"));
        assert_eq!(loaded.as_ref(), Some(&c));
        let mut t = host.clone().with_vector_bits(128);
        if let Some(l) = loaded {
            t.apply_calibration(l);
        }
        assert_eq!(t.bandwidth_gbs, c.bandwidth_gbs);
        assert_eq!(Some(t.peak_flops() / 1e9), c.gflops_at(128));
        Ok(())
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_an_error_and_a_missing_one_is_none() -> Result<(), CalibrationError> {
        let host = Target::detect_host();
        let path = scratch("corrupt.json");
        assert!(load_calibration_from(&path, &host)?.is_none());
        std::fs::write(&path, "{\"format\": 1, \"fingerprint\": ").map_err(|source| CalibrationError::Io { path: path.clone(), source })?;
        let corrupt = load_calibration_from(&path, &host);
        assert!(matches!(corrupt, Err(CalibrationError::Json { .. })), "{corrupt:?}");
        let t = Target::host_with_calibration(Some(&path));
        assert!(t.calibration.is_none());
        let mut other = quick();
        other.fingerprint = "riscv64;;v128;someone else;1c".into();
        store_calibration(&other, Some(&path))?;
        let foreign = load_calibration_from(&path, &host);
        let _ = std::fs::remove_file(&path);
        assert!(matches!(foreign, Err(CalibrationError::OtherMachine { .. })), "{foreign:?}");
        Ok(())
    }
}
