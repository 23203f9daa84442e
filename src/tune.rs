//! `atomc tune`: searches each kernel's schedule space by measurement and records every
//! improvement at once.
//!
//! 1. The model is specialized, decomposed and partitioned as a session would; identical
//!    kernels (same text but for the name) are tuned once.
//! 2. Each kernel is compiled with its untuned schedule (the cost model's pick,
//!    `search::best_by_model`, what the runtime uses without a record) and with the
//!    recorded best when the store has one (a second tune resumes from it), on buffers of
//!    seeded data, and timed (see [`measure`]). The heuristic `search::default_schedule`'s
//!    output is the reference every new best is checked against before it is accepted,
//!    and a new best must win a second, back-to-back timing against the old one.
//! 3. Search: the space is ranked by the cost model and the top few are measured, with
//!    the best two of each axis order (the kernel's own, and reordered); then
//!    evolution: a mutation of one of the best measured schedules. The budget (trials
//!    and/or a deadline) goes, trial by trial, to the kernel with the largest expected gain
//!    (its share of the model's time x its remaining headroom, first the model's predicted
//!    headroom, then shrinking with every trial that did not improve).
//! 4. The whole model is timed before (untuned) and after (best schedules).
//!
//! Records go through [`Store`]: [`DbStore`] on the JSONL database of `search::records`
//! (keyed by `Kernel::canonical_hash`, the target's fingerprint and the thread count), or
//! [`MemoryStore`] for one process.

use crate::bench::full_shapes;
use crate::session::{decompose_strict, random_inputs};
use ir::Tensor;
use ir::infer::InputShapes;
use ir::kernel::Kernel;
use ir::partition::{Plan, Step};
use ir::schedule::Schedule;
use runtime::{Executable, KernelBuffers, ThreadPool};
use search::{KernelClass, Space};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use targets::Target;

/// How to tune.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// Measured candidates in all (without it and without a deadline: [`DEFAULT_TRIALS`]).
    pub trials: Option<usize>,
    /// Wall-clock limit of the search (the final model timing comes after it).
    pub deadline: Option<Duration>,
    /// Threads that run each kernel, as in a session.
    pub threads: usize,
    /// The code generator whose kernels are measured (and whose target the records name).
    pub codegen: runtime::CodeGen,
    /// Shapes of inputs with symbolic dims (others default to 1).
    pub shapes: InputShapes,
    /// Seed of the buffers' data and of the search.
    pub seed: u64,
    /// Least total time of the timed runs of one measurement.
    pub min_measure_time: Duration,
    /// Least total time of the timed runs of the whole model.
    pub min_model_time: Duration,
}

/// The trials when neither trials nor a deadline is given.
pub const DEFAULT_TRIALS: usize = 100;
/// Candidates from the cost model's ranking measured first for each kernel.
const TOP_CANDIDATES: usize = 6;
/// Candidates of each axis order (plain, reordered) measured first for each kernel.
const FAMILY_CANDIDATES: usize = 2;
/// Relative tolerance of the check that a tuned kernel computes what the default does.
const TOLERANCE: f32 = 1e-3;

impl Default for TuneOptions {
    fn default() -> TuneOptions {
        TuneOptions {
            trials: None,
            deadline: None,
            threads: 1,
            codegen: runtime::CodeGen::Cranelift,
            shapes: InputShapes::new(),
            seed: 0,
            min_measure_time: Duration::from_millis(20),
            min_model_time: Duration::from_millis(500),
        }
    }
}

/// Errors of tuning.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Session(#[from] crate::session::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    Codegen(#[from] codegen::Error),
    #[error("cannot start {threads} threads: {source}")]
    Threads { threads: usize, source: std::io::Error },
    #[error("recording a tuning result: {0}")]
    Store(String),
    #[error("writing the plot {path}: {msg}")]
    Plot { path: String, msg: String },
}

impl From<ir::Error> for Error {
    fn from(e: ir::Error) -> Error {
        Error::Session(e.into())
    }
}

/// Where tuning results go: the best schedule known for a kernel, and every improvement.
pub trait Store {
    /// The best recorded schedule of the kernel whose `Kernel::canonical_hash` is `key`.
    fn best(&self, key: &str) -> Option<Schedule>;
    /// Records that `schedule` ran kernel `k` (hash `key`) in `seconds` (median of `runs`);
    /// called at once for every improvement, so that an interrupted tune loses nothing.
    fn record(&mut self, key: &str, k: &Kernel, schedule: &Schedule, seconds: f64, runs: usize) -> Result<(), Error>;
}

/// A [`Store`] in memory (one tuning process).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    best: HashMap<String, (Schedule, f64)>,
}

impl MemoryStore {
    /// How many kernels have a record.
    pub fn len(&self) -> usize {
        self.best.len()
    }

    pub fn is_empty(&self) -> bool {
        self.best.is_empty()
    }
}

impl Store for MemoryStore {
    fn best(&self, key: &str) -> Option<Schedule> {
        self.best.get(key).map(|(s, _)| s.clone())
    }

    fn record(&mut self, key: &str, _k: &Kernel, schedule: &Schedule, seconds: f64, _runs: usize) -> Result<(), Error> {
        let better = self.best.get(key).is_none_or(|(_, t)| seconds < *t);
        if better {
            self.best.insert(key.to_string(), (schedule.clone(), seconds));
        }
        Ok(())
    }
}

/// A [`Store`] on a records file: the bests of the records there when it opened (and of
/// those appended since), every record appended to the file at once under its lock.
#[derive(Debug)]
pub struct DbStore {
    db: search::Db,
    records: search::Records,
    /// The target as the records name it (the code generator's view of the host).
    target: Target,
    threads: u32,
}

impl DbStore {
    /// Opens (and loads) the records file at `path` for kernels compiled by `codegen` and
    /// run on `threads` threads; lines it skipped are in [`DbStore::warnings`].
    pub fn open(path: &Path, threads: usize, codegen: runtime::CodeGen) -> Result<DbStore, Error> {
        let db = search::Db::open(path);
        let records = db.load().map_err(|e| Error::Store(e.to_string()))?;
        let planner = codegen.planner(threads);
        Ok(DbStore { db, records, target: planner.target, threads: threads as u32 })
    }

    /// Lines of the file that were skipped (corrupt, truncated), as `file:line: why`.
    pub fn warnings(&self) -> &[String] {
        &self.records.warnings
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }
}

impl Store for DbStore {
    fn best(&self, key: &str) -> Option<Schedule> {
        self.records.best(key, &self.target.fingerprint(), self.threads).map(|r| r.schedule.clone())
    }

    fn record(&mut self, _key: &str, k: &Kernel, schedule: &Schedule, seconds: f64, runs: usize) -> Result<(), Error> {
        let method = format!(
            "median of {runs} runs after a warm-up, outliers beyond 3 MAD dropped, {} thread(s)",
            self.threads
        );
        let mut r = search::Record::new(k, &self.target, schedule.clone(), seconds * 1e9, runs as u32, &method, self.threads);
        r.gflops = Some(search::cost::flops(k) / seconds.max(1e-12) / 1e9);
        self.db.append(&r).map_err(|e| Error::Store(e.to_string()))?;
        self.records.records.push(r);
        Ok(())
    }
}

/// Where the search stands, for a progress display.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The kernel the last trial measured (1-based) and the number of kernels.
    pub kernel: usize,
    pub kernels: usize,
    pub kernel_name: String,
    pub trials: usize,
    /// The trial budget, when one was given.
    pub trial_budget: Option<usize>,
    /// That kernel's best time so far and its GFLOP/s.
    pub best_s: f64,
    pub gflops: f64,
    /// The model's estimated latency: the sum over kernels of occurrences x best time.
    pub model_s: f64,
}

/// One kernel's outcome.
#[derive(Clone, Debug)]
pub struct KernelReport {
    pub name: String,
    pub class: KernelClass,
    /// How many kernels of the model share it.
    pub count: usize,
    pub flops: f64,
    /// Seconds with the untuned schedule, and with the best found.
    pub before_s: f64,
    pub after_s: f64,
    pub before: Schedule,
    pub after: Schedule,
    pub trials: usize,
    /// Whether it started from a recorded schedule (a resumed tune).
    pub resumed: bool,
}

/// What a tune did.
#[derive(Clone, Debug)]
pub struct TuneReport {
    pub kernels: Vec<KernelReport>,
    /// Whole-model median latency before and after, in milliseconds.
    pub model_before_ms: f64,
    pub model_after_ms: f64,
    pub trials: usize,
    /// After each trial: (trials so far, the lowest estimate of the model's latency in ms
    /// so far). An estimate can rise when a best is timed again (its first timing was
    /// biased low); the curve keeps the best-so-far, so it never rises.
    pub curve: Vec<(usize, f64)>,
    /// Improvements recorded during the search (first measurements not counted).
    pub recorded: usize,
    pub elapsed: Duration,
}

/// One kernel being tuned.
struct Tuning {
    kernel: Kernel,
    key: String,
    count: usize,
    flops: f64,
    space: Space,
    buffers: KernelBuffers,
    reference: Vec<u8>,
    untuned: Schedule,
    before_s: f64,
    best: (Schedule, f64),
    /// Measured schedules, fastest first.
    measured: Vec<(f64, Schedule)>,
    seen: HashSet<Schedule>,
    queue: Vec<Schedule>,
    potential: f64,
    trials: usize,
    exhausted: bool,
    /// Started from a recorded schedule.
    resumed: bool,
}

/// Tunes the model at `path`, recording improvements in `store`; `progress` is called after
/// every trial.
pub fn tune(path: &Path, options: &TuneOptions, store: &mut dyn Store, progress: &mut dyn FnMut(&Progress)) -> Result<TuneReport, Error> {
    let start = Instant::now();
    let model = ir::onnx::import_file(path)?;
    let shapes = full_shapes(&model, &options.shapes)?;
    let specialized = ir::infer::specialize(&model.graph, &shapes)?;
    let graph = decompose_strict(&specialized)?;
    let plan = ir::partition::partition(&graph)?;
    let threads = options.threads.max(1);
    let pool = Arc::new(ThreadPool::new(threads).map_err(|source| Error::Threads { threads, source })?);
    let target = options.codegen.target(threads);
    let mut rng = options.seed ^ 0x5DEE_CE66_D1CE_4E5B;

    // Unique kernels, in plan order.
    let mut groups: Vec<(String, Kernel, usize)> = Vec::new();
    for step in &plan.steps {
        if let Step::Kernel { kernel, .. } = step {
            let key = kernel.canonical_hash();
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => g.2 += 1,
                None => groups.push((key, kernel.clone(), 1)),
            }
        }
    }
    let mut tunings = Vec::new();
    for (key, kernel, count) in groups {
        if let Some(t) = start_tuning(kernel, key, count, &target, &pool, store, options)? {
            tunings.push(t);
        }
    }

    let inputs: Vec<Tensor> = random_inputs(&model, &shapes, options.seed)?.into_iter().map(|(_, t)| t).collect();
    let untuned: HashMap<String, Schedule> = tunings.iter().map(|t| (t.key.clone(), t.untuned.clone())).collect();
    let model_before_ms = model_latency(&graph, &plan, &pool, &untuned, options.codegen, &inputs, options.min_model_time)? * 1e3;

    let budget = match (options.trials, options.deadline) {
        (None, None) => Some(DEFAULT_TRIALS),
        (t, _) => t,
    };
    let mut trials = 0;
    let mut recorded = 0;
    let mut curve = vec![(0, estimate(&tunings) * 1e3)];
    let n = tunings.len();
    loop {
        if budget.is_some_and(|b| trials >= b) || options.deadline.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        let Some(i) = (0..n)
            .filter(|&i| !tunings[i].exhausted)
            .max_by(|&a, &b| priority(&tunings[a]).total_cmp(&priority(&tunings[b])))
        else {
            break;
        };
        let t = &mut tunings[i];
        let Some(candidate) = next_candidate(t, &mut rng) else {
            t.exhausted = true;
            continue;
        };
        t.seen.insert(candidate.clone());
        t.trials += 1;
        trials += 1;
        let old = t.best.1;
        if let Some((seconds, _)) = try_candidate(t, &candidate, &pool, options)? {
            let pos = t.measured.partition_point(|m| m.0 <= seconds);
            t.measured.insert(pos, (seconds, candidate.clone()));
            if seconds < old && let Some((seconds, runs)) = confirm(t, &candidate, &pool, options)? {
                t.best = (candidate.clone(), seconds);
                store.record(&t.key, &t.kernel, &candidate, seconds, runs)?;
                recorded += 1;
                t.potential = t.potential.max(1.0 - seconds / old);
            } else {
                t.potential *= 0.8;
            }
        } else {
            t.potential *= 0.8;
        }
        let model_s = estimate(&tunings);
        let lowest = curve.last().map_or(f64::INFINITY, |c| c.1);
        curve.push((trials, lowest.min(model_s * 1e3)));
        let t = &tunings[i];
        progress(&Progress {
            kernel: i + 1,
            kernels: n,
            kernel_name: t.kernel.name.clone(),
            trials,
            trial_budget: budget,
            best_s: t.best.1,
            gflops: t.flops / t.best.1.max(1e-12) / 1e9,
            model_s,
        });
    }

    let best: HashMap<String, Schedule> = tunings.iter().map(|t| (t.key.clone(), t.best.0.clone())).collect();
    let model_after_ms = model_latency(&graph, &plan, &pool, &best, options.codegen, &inputs, options.min_model_time)? * 1e3;
    let kernels = tunings
        .into_iter()
        .map(|t| KernelReport {
            name: t.kernel.name.clone(),
            class: t.space.class,
            count: t.count,
            flops: t.flops,
            before_s: t.before_s,
            after_s: t.best.1,
            before: t.untuned,
            after: t.best.0,
            trials: t.trials,
            resumed: t.resumed,
        })
        .collect();
    Ok(TuneReport { kernels, model_before_ms, model_after_ms, trials, curve, recorded, elapsed: start.elapsed() })
}

/// Compiles and times a kernel's untuned schedule and recorded best; `None` when the JIT
/// does not compile the kernel or it has a single schedule.
fn start_tuning(
    kernel: Kernel,
    key: String,
    count: usize,
    target: &Target,
    pool: &ThreadPool,
    store: &mut dyn Store,
    options: &TuneOptions,
) -> Result<Option<Tuning>, Error> {
    let space = Space::of(&kernel, target);
    if space.class == KernelClass::Fixed {
        return Ok(None);
    }
    let reference_schedule = search::default_schedule(&kernel, target);
    let jit = match options.codegen.compile(&kernel, &reference_schedule) {
        Ok(j) => j,
        Err(codegen::Error::Unsupported { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut buffers = KernelBuffers::new(&kernel)?;
    buffers.fill(options.seed);
    if buffers.run(&kernel, &*jit, pool).is_err() {
        // The seeded data is not valid input for this kernel (a gather position, an integer
        // division): it is not tuned.
        return Ok(None);
    }
    let reference = buffers.output();
    let untuned = search::best_by_model(&kernel, target);
    let ranked = search::cost::ranked(&kernel, target);
    let flops = search::cost::flops(&kernel);
    let mut t = Tuning {
        kernel,
        key,
        count,
        flops,
        space,
        buffers,
        reference,
        untuned: untuned.clone(),
        before_s: f64::INFINITY,
        best: (untuned.clone(), f64::INFINITY),
        measured: Vec::new(),
        seen: HashSet::new(),
        queue: Vec::new(),
        potential: 0.0,
        trials: 0,
        exhausted: false,
        resumed: false,
    };
    let Some((before, runs)) = try_candidate(&mut t, &untuned, pool, options)? else {
        return Ok(None);
    };
    t.before_s = before;
    t.best.1 = before;
    t.measured.push((before, untuned.clone()));
    t.seen.insert(untuned.clone());
    match store.best(&t.key) {
        Some(recorded) => {
            t.resumed = true;
            if recorded != untuned
                && recorded.validate(&t.kernel).is_ok()
                && let Some((s, _)) = try_candidate(&mut t, &recorded, pool, options)?
            {
                t.seen.insert(recorded.clone());
                let pos = t.measured.partition_point(|m| m.0 <= s);
                t.measured.insert(pos, (s, recorded.clone()));
                if s < t.best.1 {
                    t.best = (recorded, s);
                }
            }
        }
        // The first measurement of a kernel is a record too: a later tune starts from it.
        None => store.record(&t.key, &t.kernel, &untuned, before, runs)?,
    }
    // The cost model's headroom over the untuned pick, and its error margin.
    let predicted_now = search::predict(&t.kernel, &t.best.0, target);
    let predicted_best = ranked.first().map_or(predicted_now, |r| r.0);
    let margin = if t.space.class == KernelClass::Contraction { 0.3 } else { 0.15 };
    t.potential = (1.0 - predicted_best / predicted_now.max(1e-12)).max(0.0) + margin;
    // The model's top few, then the best few of each axis order (the kernel's own, and
    // reordered to vectorize its channels) not among them: mutation changes one knob, and
    // a reordered point blocks other axes than a plain one, so the search seldom crosses
    // between the two, and the model ranks across them least surely.
    let mut queue: Vec<Schedule> = ranked.iter().take(TOP_CANDIDATES).map(|r| r.1.clone()).collect();
    for reordered in [false, true] {
        for (_, s) in ranked.iter().filter(|r| r.1.reorder().is_some() == reordered).take(FAMILY_CANDIDATES) {
            if !queue.contains(s) {
                queue.push(s.clone());
            }
        }
    }
    queue.reverse();
    t.queue = queue;
    Ok(Some(t))
}

/// The expected gain of one more trial on `t`: its share of the model's time (occurrences
/// x best time) times its remaining headroom.
fn priority(t: &Tuning) -> f64 {
    t.count as f64 * t.best.1 * t.potential
}

/// The model's estimated latency: occurrences x best time, summed.
fn estimate(tunings: &[Tuning]) -> f64 {
    tunings.iter().map(|t| t.count as f64 * t.best.1).sum()
}

/// The next schedule to measure: the cost model's top candidates first, then mutations of
/// one of the three best measured; `None` when no new one turns up.
fn next_candidate(t: &mut Tuning, rng: &mut u64) -> Option<Schedule> {
    while let Some(s) = t.queue.pop() {
        if !t.seen.contains(&s) {
            return Some(s);
        }
    }
    for _ in 0..32 {
        let parents = t.measured.len().clamp(1, 3);
        let parent = t.measured.get((next_u64(rng) % parents as u64) as usize).map_or(&t.best.0, |m| &m.1);
        let mut child = t.space.mutate(parent, next_u64(rng));
        if next_u64(rng).is_multiple_of(3) {
            child = t.space.mutate(&child, next_u64(rng));
        }
        if !t.seen.contains(&child) {
            return Some(child);
        }
    }
    t.space.candidates().into_iter().find(|s| !t.seen.contains(s))
}

/// A candidate that measured faster than `t`'s best, checked before it becomes the best:
/// it must compute what the default schedule computes, and beat the best again when both
/// are timed once more, back to back (the fastest of many noisy timings is biased low: on
/// microsecond kernels at two threads, unconfirmed bests made whole models slower). Returns
/// the candidate's second timing; on a rejection the best's fresh timing replaces its old
/// one, so the bar stays honest.
fn confirm(t: &mut Tuning, candidate: &Schedule, pool: &ThreadPool, options: &TuneOptions) -> Result<Option<(f64, usize)>, Error> {
    if !verify(t, candidate, pool, options.codegen)? {
        return Ok(None);
    }
    let incumbent = t.best.0.clone();
    let Some((again, runs)) = try_candidate(t, candidate, pool, options)? else {
        return Ok(None);
    };
    match try_candidate(t, &incumbent, pool, options)? {
        Some((best, _)) if best <= again => {
            t.best.1 = best;
            if t.best.0 == t.untuned {
                // The same schedule as the untuned one: the report compares like with like.
                t.before_s = best;
            }
            Ok(None)
        }
        _ => Ok(Some((again, runs))),
    }
}

/// Compiles and times `s` on `t`'s buffers; `None` when the code generator refuses it or
/// the run fails.
fn try_candidate(t: &mut Tuning, s: &Schedule, pool: &ThreadPool, options: &TuneOptions) -> Result<Option<(f64, usize)>, Error> {
    let jit = match options.codegen.compile(&t.kernel, s) {
        Ok(j) => j,
        Err(_) => return Ok(None),
    };
    let kernel = &t.kernel;
    let buffers = &mut t.buffers;
    Ok(measure(|| buffers.run(kernel, &*jit, pool).is_ok(), options.min_measure_time))
}

/// Whether `s` computes what the default schedule computes on `t`'s data (f32 outputs
/// within a relative [`TOLERANCE`], others exactly).
fn verify(t: &mut Tuning, s: &Schedule, pool: &ThreadPool, codegen: runtime::CodeGen) -> Result<bool, Error> {
    let jit = codegen.compile(&t.kernel, s)?;
    t.buffers.run(&t.kernel, &*jit, pool)?;
    let out = t.buffers.output();
    if t.kernel.output.dtype != ir::DType::F32 {
        return Ok(out == t.reference);
    }
    let f32s = |b: &[u8]| -> Vec<f32> { b.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect() };
    let (got, want) = (f32s(&out), f32s(&t.reference));
    Ok(got.len() == want.len()
        && got.iter().zip(&want).all(|(&a, &b)| (a - b).abs() <= TOLERANCE * b.abs().max(1.0) || (a.is_nan() && b.is_nan())))
}

/// Times `run` (which returns whether it succeeded): one warm-up run, then timed runs until
/// at least 5 and `floor` in total (at most 10,000); outliers beyond the median plus three
/// median absolute deviations are dropped and the median of the rest is returned, in
/// seconds, with the number of timed runs. `None` when a run fails.
pub fn measure(mut run: impl FnMut() -> bool, floor: Duration) -> Option<(f64, usize)> {
    if !run() {
        return None;
    }
    let mut times = Vec::new();
    let mut total = Duration::ZERO;
    while (times.len() < 5 || total < floor) && times.len() < 10_000 {
        let start = Instant::now();
        if !run() {
            return None;
        }
        let d = start.elapsed();
        total += d;
        times.push(d.as_secs_f64());
    }
    Some((robust_median(&mut times), times.len()))
}

/// The median after dropping values beyond the median plus three median absolute
/// deviations.
pub fn robust_median(times: &mut [f64]) -> f64 {
    let median = |v: &mut Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return f64::NAN;
        }
        if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
    };
    let mut all = times.to_vec();
    let m = median(&mut all);
    let mut dev: Vec<f64> = times.iter().map(|t| (t - m).abs()).collect();
    let mad = median(&mut dev);
    let mut kept: Vec<f64> = times.iter().copied().filter(|&t| t <= m + 3.0 * mad).collect();
    median(&mut kept)
}

/// The whole model's median latency in seconds with each kernel compiled with the
/// schedule of its key in `schedules` (else the cost model's pick).
fn model_latency(
    graph: &ir::Graph,
    plan: &Plan,
    pool: &Arc<ThreadPool>,
    schedules: &HashMap<String, Schedule>,
    codegen: runtime::CodeGen,
    inputs: &[Tensor],
    floor: Duration,
) -> Result<f64, Error> {
    let target = &codegen.target(pool.threads());
    let pick = |k: &Kernel| schedules.get(&k.canonical_hash()).cloned().unwrap_or_else(|| search::best_by_model(k, target));
    let mut exec = Executable::with_schedules(graph.clone(), plan.clone(), pool.clone(), &pick, codegen)?;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let mut outputs = exec.run(inputs.to_vec())?;
    let mut failed = None;
    let seconds = measure(
        || match exec.run_into(&refs, &mut outputs) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        },
        floor,
    );
    match (seconds, failed) {
        (_, Some(e)) => Err(e.into()),
        (Some((s, _)), None) => Ok(s),
        (None, None) => Err(ir::Error::Internal("model timing failed".into()).into()),
    }
}

/// SplitMix64.
fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes an SVG plot of the model's estimated latency (best so far) against trials.
pub fn plot(curve: &[(usize, f64)], path: &Path, title: &str) -> Result<(), Error> {
    use plotters::prelude::*;
    let err = |msg: String| Error::Plot { path: path.display().to_string(), msg };
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let max_x = curve.iter().map(|c| c.0).max().unwrap_or(1).max(1);
    let max_y = curve.iter().map(|c| c.1).fold(0.0, f64::max).max(1e-6) * 1.05;
    let min_y = curve.iter().map(|c| c.1).fold(f64::INFINITY, f64::min).min(max_y) * 0.95;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0..max_x, min_y..max_y)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("trials")
        .y_desc("estimated model latency (ms, best so far)")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart.draw_series(LineSeries::new(curve.iter().copied(), &BLUE)).map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

impl std::fmt::Display for TuneReport {
    /// The per-kernel table (slowest first) and the model's latency before and after.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rows: Vec<&KernelReport> = self.kernels.iter().collect();
        rows.sort_by(|a, b| (b.before_s * b.count as f64).total_cmp(&(a.before_s * a.count as f64)));
        writeln!(f, "{:<28} {:>5} {:>12} {:>11} {:>11} {:>8} {:>7}  schedule", "kernel", "count", "class", "before us", "after us", "speedup", "GFLOP/s")?;
        for k in rows {
            let speedup = k.before_s / k.after_s.max(1e-12);
            writeln!(
                f,
                "{:<28} {:>5} {:>12} {:>11.2} {:>11.2} {:>7.2}x {:>7.2}  {}",
                truncate(&k.name, 28),
                k.count,
                k.class.name(),
                k.before_s * 1e6,
                k.after_s * 1e6,
                speedup,
                k.flops / k.after_s.max(1e-12) / 1e9,
                k.after
            )?;
        }
        writeln!(
            f,
            "model latency: {:.4} ms before, {:.4} ms after ({:.2}x); {} trials, {} records, {:.1} s",
            self.model_before_ms,
            self.model_after_ms,
            self.model_before_ms / self.model_after_ms.max(1e-12),
            self.trials,
            self.recorded,
            self.elapsed.as_secs_f64()
        )
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).chain(['~']).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_median_drops_outliers() {
        let mut v = vec![1.0, 1.1, 0.9, 1.0, 50.0];
        assert_eq!(robust_median(&mut v), 1.0);
        let mut even = vec![1.0, 2.0, 3.0, 4.0];
        assert_eq!(robust_median(&mut even), 2.5);
    }

    #[test]
    fn measure_stops_on_failure_and_counts_runs() {
        let mut calls = 0;
        let t = measure(
            || {
                calls += 1;
                true
            },
            Duration::ZERO,
        );
        assert!(t.is_some_and(|(t, runs)| t >= 0.0 && runs == 5));
        assert_eq!(calls, 6);
        assert!(measure(|| false, Duration::ZERO).is_none());
    }
}
