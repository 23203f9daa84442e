//! Tuning records: measured schedules, one JSON object per line in an append-only file
//! (`records.jsonl`), and the [`Planner`] that compiles every kernel with the fastest
//! recorded schedule for it on this target, else the cost model's pick.
//!
//! A [`Record`] is keyed by the kernel's [`Kernel::canonical_hash`] (names ignored), the
//! target's [`Target::fingerprint`] and the thread count. [`Db::append`] writes a whole line
//! with one `write_all` under an exclusive file lock, so tuners appending at once never
//! interleave or lose a line. [`Db::load`] skips a corrupt or truncated line with a warning
//! (`file:line`) and ignores records of another format or compiler version.

use ir::kernel::Kernel;
use ir::schedule::{SCHEDULE_FORMAT, Schedule};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use targets::Target;

/// The version of a record's fields.
pub const RECORD_FORMAT: u32 = 1;

/// The compiler version records are valid for: the crate version, the schedule format
/// and the kernel hash format. A record of another version is ignored.
pub fn compiler_version() -> String {
    format!("atomc {} schedule/{SCHEDULE_FORMAT} kernel/{}", env!("CARGO_PKG_VERSION"), ir::kernel_hash::CANONICAL_FORMAT)
}

/// One measurement of one schedule of one kernel on one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    /// [`compiler_version`] of the atomc that measured it.
    pub compiler: String,
    /// [`Kernel::canonical_hash`].
    pub kernel: String,
    /// The kernel's name when measured (for people; not part of the key).
    pub kernel_name: String,
    /// [`Target::fingerprint`] of the target as the backend sees it.
    pub target: String,
    pub schedule: Schedule,
    pub median_ns: f64,
    pub runs: u32,
    /// How it was measured, e.g. "median of 25 runs after 3 warm-up, outliers beyond 3 MAD
    /// dropped, 1 thread".
    pub method: String,
    pub threads: u32,
    pub gflops: Option<f64>,
    /// Seconds since the Unix epoch.
    pub unix_time: u64,
}

impl Record {
    /// A record of this compiler for `kernel` on `target`, timed now (`gflops` unset).
    pub fn new(kernel: &Kernel, target: &Target, schedule: Schedule, median_ns: f64, runs: u32, method: &str, threads: u32) -> Record {
        Record {
            format: RECORD_FORMAT,
            compiler: compiler_version(),
            kernel: kernel.canonical_hash(),
            kernel_name: kernel.name.clone(),
            target: target.fingerprint(),
            schedule,
            median_ns,
            runs,
            method: method.into(),
            threads,
            gflops: None,
            unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    }
}

/// Errors of the records file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no directory for atomc's files: set ATOMC_DB, ATOMC_HOME, XDG_CACHE_HOME or HOME")]
    NoHome,
    #[error("tuning records {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("tuning record for kernel '{kernel}': {source}")]
    Json { kernel: String, source: serde_json::Error },
}

/// An append-only file of records.
#[derive(Clone, Debug)]
pub struct Db {
    path: PathBuf,
}

impl Db {
    /// The records file at `path` (created by the first [`Db::append`]).
    pub fn open(path: impl Into<PathBuf>) -> Db {
        Db { path: path.into() }
    }

    /// `$ATOMC_DB`, else `records.jsonl` in [`targets::atomc_home`].
    pub fn default_path() -> Option<PathBuf> {
        std::env::var_os("ATOMC_DB")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| targets::atomc_home().map(|d| d.join("records.jsonl")))
    }

    /// The database at [`Db::default_path`] when that file exists.
    pub fn default_existing() -> Option<Db> {
        Db::default_path().filter(|p| p.is_file()).map(Db::open)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io { path: self.path.clone(), source }
    }

    /// Appends `r` as one line: serialized first, then written with one `write_all` while
    /// holding an exclusive lock on the file (other appenders wait). A last line left
    /// unterminated by a crash is terminated first, so the new record starts its own line.
    pub fn append(&self, r: &Record) -> Result<(), Error> {
        let mut line = serde_json::to_string(r).map_err(|source| Error::Json { kernel: r.kernel_name.clone(), source })?;
        line.push('\n');
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let mut f = OpenOptions::new().read(true).append(true).create(true).open(&self.path).map_err(|e| self.io(e))?;
        f.lock().map_err(|e| self.io(e))?;
        let len = f.metadata().map_err(|e| self.io(e))?.len();
        if len > 0 {
            let mut last = [0u8];
            f.seek(SeekFrom::Start(len - 1)).map_err(|e| self.io(e))?;
            f.read_exact(&mut last).map_err(|e| self.io(e))?;
            if last[0] != b'\n' {
                line.insert(0, '\n');
            }
        }
        let written = f.write_all(line.as_bytes()).and_then(|()| f.flush());
        let unlocked = f.unlock();
        written.and(unlocked).map_err(|e| self.io(e))
    }

    /// Every usable record (a missing file has none), under a shared lock. A line that is
    /// not a record is skipped with a warning; a record of another format or compiler is
    /// ignored (counted in [`Records::other_versions`]).
    pub fn load(&self) -> Result<Records, Error> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Records::default()),
            Err(e) => return Err(self.io(e)),
        };
        f.lock_shared().map_err(|e| self.io(e))?;
        let mut bytes = Vec::new();
        let read = f.read_to_end(&mut bytes);
        f.unlock().map_err(|e| self.io(e))?;
        read.map_err(|e| self.io(e))?;
        Ok(Records::parse(&bytes, &self.path.display().to_string()))
    }
}

/// The records of a file that this compiler can use.
#[derive(Clone, Debug, Default)]
pub struct Records {
    pub records: Vec<Record>,
    /// One per skipped line: `file:line: why`.
    pub warnings: Vec<String>,
    /// Records of another format or compiler version, not used.
    pub other_versions: usize,
}

impl Records {
    /// Parses JSON lines; `source` names the file in warnings.
    pub fn parse(bytes: &[u8], source: &str) -> Records {
        let mut out = Records::default();
        let current = compiler_version();
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let warn = |why: String| format!("{source}:{}: skipped: {why}", i + 1);
            let value: serde_json::Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(e) => {
                    out.warnings.push(warn(format!("not a JSON record ({e})")));
                    continue;
                }
            };
            let format = value.get("format").and_then(serde_json::Value::as_u64);
            let compiler = value.get("compiler").and_then(serde_json::Value::as_str);
            if format != Some(RECORD_FORMAT as u64) || compiler != Some(current.as_str()) {
                out.other_versions += 1;
                continue;
            }
            match serde_json::from_value::<Record>(value) {
                Ok(r) => out.records.push(r),
                Err(e) => out.warnings.push(warn(format!("not a valid record ({e})"))),
            }
        }
        out
    }

    /// The records for this kernel, target and thread count, with a finite time.
    pub fn matching<'a>(&'a self, kernel_hash: &str, target_fingerprint: &str, threads: u32) -> impl Iterator<Item = &'a Record> + use<'a> {
        let (kernel, target) = (kernel_hash.to_owned(), target_fingerprint.to_owned());
        self.records
            .iter()
            .filter(move |r| r.kernel == kernel && r.target == target && r.threads == threads && r.median_ns.is_finite())
    }

    /// The fastest matching record.
    pub fn best(&self, kernel_hash: &str, target_fingerprint: &str, threads: u32) -> Option<&Record> {
        self.matching(kernel_hash, target_fingerprint, threads).min_by(|a, b| a.median_ns.total_cmp(&b.median_ns))
    }
}

/// Where a kernel's schedule came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// The fastest valid tuning record (its measured time).
    Record { median_ns: f64 },
    /// The cost model's pick ([`crate::best_by_model`] at the planner's thread count).
    Model,
}

impl Source {
    pub fn is_record(&self) -> bool {
        matches!(self, Source::Record { .. })
    }
}

/// Chooses the schedule of every kernel compiled: the fastest record for the kernel on this
/// target at this thread count whose schedule validates for the kernel, else the fallback.
#[derive(Clone, Debug)]
pub struct Planner {
    /// The target as the backend sees it (Cranelift: 128-bit vectors).
    pub target: Target,
    /// Threads the kernels run on.
    pub threads: u32,
    pub records: Option<Records>,
    fingerprint: String,
}

impl Planner {
    /// A planner without records (every schedule is the heuristic's).
    pub fn new(target: Target, threads: u32) -> Planner {
        let fingerprint = target.fingerprint();
        Planner { target, threads, records: None, fingerprint }
    }

    /// The planner for Cranelift on the host: 128-bit vectors, `threads` threads.
    pub fn host_cranelift(threads: u32) -> Planner {
        Planner::new(Target::host().with_vector_bits(128), threads)
    }

    pub fn with_records(mut self, records: Records) -> Planner {
        self.records = Some(records);
        self
    }

    /// The schedule for `k` and where it came from.
    pub fn schedule(&self, k: &Kernel) -> (Schedule, Source) {
        if let Some(records) = &self.records {
            let hash = k.canonical_hash();
            let best = records
                .matching(&hash, &self.fingerprint, self.threads)
                .filter(|r| r.schedule.validate(k).is_ok())
                .min_by(|a, b| a.median_ns.total_cmp(&b.median_ns));
            if let Some(r) = best {
                return (r.schedule.clone(), Source::Record { median_ns: r.median_ns });
            }
        }
        (self.fallback(k), Source::Model)
    }

    /// The schedule of a kernel without a usable record.
    fn fallback(&self, k: &Kernel) -> Schedule {
        let target = Target { cores: self.threads.max(1) as usize, ..self.target.clone() };
        crate::best_by_model(k, &target)
    }
}
