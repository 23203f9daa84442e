//! `atomc bench`: measures one model end to end on a [`Session`]. Compile time is
//! `Session::load` plus `Session::prepare` for the input shapes (wall clock); then one first
//! run, a warm-up, and timed runs until both a minimum count and a minimum total time are
//! reached; the report holds order statistics over the timed runs. The inputs are seeded
//! random tensors (`random_inputs`), built before any timing starts.

use crate::session::{random_inputs, Backend, Options, Session};
use ir::infer::InputShapes;
use ir::{Dim, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How to benchmark.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub backend: Backend,
    /// Worker threads handed to the session.
    pub threads: usize,
    /// Untimed runs for at least this long after the first run.
    pub warmup: Duration,
    /// Timed runs: at least this many ...
    pub min_runs: usize,
    /// ... and at least this much time in total.
    pub min_time: Duration,
    /// Shapes of inputs with symbolic dims; symbolic dims of inputs not listed are 1.
    pub shapes: InputShapes,
    /// Seed of the random inputs.
    pub seed: u64,
    /// How kernels' schedules are chosen.
    pub schedules: crate::session::SchedulePolicy,
    /// Time every step of the compiled plan over the timed runs ([`BenchReport::profile`]).
    pub profile: bool,
    /// The tuning records to compile with (`None`: the default database when it exists).
    pub db: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            backend: Backend::default(),
            threads: 1,
            warmup: Duration::from_millis(200),
            min_runs: 20,
            min_time: Duration::from_millis(1000),
            shapes: InputShapes::new(),
            seed: 0,
            schedules: crate::session::SchedulePolicy::default(),
            profile: false,
            db: None,
        }
    }
}

/// What `bench` measured; every time is in milliseconds. Serialized as `atomc bench --json`.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub backend: String,
    pub threads: usize,
    /// Every input's shape, as run.
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// `Session::load` + `Session::prepare`.
    pub compile_ms: f64,
    /// The first `Session::run` after `prepare`.
    pub first_run_ms: f64,
    /// Backend `auto`: from the start of the load until the background compile had
    /// swapped in its last kernel (the warm-up and the timed runs come after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgraded_after_ms: Option<f64>,
    /// Backend `auto`: kernels whose LLVM code replaced Cranelift's before the timed runs.
    pub upgraded_kernels: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Timed runs (the first run and the warm-up are not among them).
    pub runs: usize,
    pub warmup_runs: usize,
    /// With `profile`: every step of the plan, slowest first, averaged over the timed runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<StepReport>,
    /// Compiled kernels whose schedule came from a tuning record (backend `cranelift`).
    pub tuned_kernels: usize,
    /// Lines of the tuning records that were skipped (`file:line: why`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records_warnings: Vec<String>,
}

/// One plan step's share of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepReport {
    pub name: String,
    /// `kernel` (compiled), `evaluator` or `host`.
    pub kind: String,
    /// A compiled kernel whose schedule came from a tuning record.
    pub tuned: bool,
    /// A compiled kernel's schedule (empty for other steps).
    pub schedule: String,
    /// Mean time per run.
    pub ms: f64,
    /// Percent of the summed step times.
    pub percent: f64,
}

/// Errors of `bench`: those of loading, compiling and running the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Session(#[from] crate::session::Error),
}

impl From<ir::Error> for Error {
    fn from(e: ir::Error) -> Error {
        Error::Session(e.into())
    }
}

/// Loads, compiles and runs the model at `path` as `options` says, and reports the times.
pub fn bench(path: &Path, options: &BenchOptions) -> Result<BenchReport, Error> {
    let start = Instant::now();
    let mut session = Session::load(
        path,
        Options { backend: options.backend, threads: Some(options.threads), db: options.db.clone(), schedules: options.schedules },
    )?;
    let shapes = full_shapes(session.model(), &options.shapes)?;
    session.prepare(&shapes)?;
    let compile = start.elapsed();

    let inputs = random_inputs(session.model(), &shapes, options.seed)?;
    let first = timed_run(&mut session, &inputs)?;
    let upgraded_kernels = session.wait_for_upgrades();
    let upgraded_after = (upgraded_kernels > 0).then(|| start.elapsed());

    let mut warmup_runs = 0;
    let warmup_start = Instant::now();
    while warmup_start.elapsed() < options.warmup {
        timed_run(&mut session, &inputs)?;
        warmup_runs += 1;
    }

    session.set_profiling(options.profile);
    let mut times = Vec::with_capacity(options.min_runs);
    let mut total = Duration::ZERO;
    while times.len() < options.min_runs || total < options.min_time {
        let t = timed_run(&mut session, &inputs)?;
        total += t;
        times.push(ms(t));
    }
    // At least one timed run, so that the statistics exist even with `min_runs` 0.
    if times.is_empty() {
        times.push(ms(timed_run(&mut session, &inputs)?));
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let mut profile: Vec<StepReport> = session
        .profile()
        .unwrap_or_default()
        .into_iter()
        .map(|t| StepReport {
            name: t.name,
            kind: t.kind.to_string(),
            tuned: t.tuned,
            schedule: t.schedule.unwrap_or_default(),
            ms: ms(t.total) / n as f64,
            percent: 0.0,
        })
        .collect();
    let sum: f64 = profile.iter().map(|p| p.ms).sum();
    for p in &mut profile {
        p.percent = if sum > 0.0 { 100.0 * p.ms / sum } else { 0.0 };
    }
    profile.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(BenchReport {
        model: path.display().to_string(),
        backend: options.backend.name().to_string(),
        threads: options.threads,
        shapes: shapes.into_iter().collect(),
        compile_ms: ms(compile),
        first_run_ms: ms(first),
        upgraded_after_ms: upgraded_after.map(ms),
        upgraded_kernels,
        median_ms: quantile(&times, 0.5),
        p10_ms: quantile(&times, 0.1),
        p90_ms: quantile(&times, 0.9),
        mean_ms: times.iter().sum::<f64>() / n as f64,
        min_ms: times[0],
        max_ms: times[n - 1],
        runs: n,
        warmup_runs,
        profile,
        tuned_kernels: session.tuned_kernels(),
        records_warnings: session.planner().map(|p| crate::tuning::warnings(p).to_vec()).unwrap_or_default(),
    })
}

/// The shape of every input: `given`, else its declared dims with symbolic ones as 1.
/// A name in `given` that is not an input is an error.
pub(crate) fn full_shapes(model: &ir::onnx::Model, given: &InputShapes) -> Result<InputShapes, ir::Error> {
    let g = &model.graph;
    for name in given.keys() {
        if !g.inputs.iter().any(|i| g.name(i.value) == name) {
            let names: Vec<&str> = g.inputs.iter().map(|i| g.name(i.value)).collect();
            return Err(ir::Error::InvalidInput(format!(
                "--shape {name}=...: the model has no input named '{name}' (its inputs: {})",
                names.join(", ")
            )));
        }
    }
    let mut out = InputShapes::new();
    for input in &g.inputs {
        let name = g.name(input.value);
        let shape = match given.get(name) {
            Some(s) => {
                if s.len() != input.dims.len() {
                    return Err(ir::Error::InvalidInput(format!(
                        "--shape {name}=...: {} dims given, the input has {} {}",
                        s.len(),
                        input.dims.len(),
                        ir::infer::fmt_dims(&input.dims)
                    )));
                }
                s.clone()
            }
            None => input.dims.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { 1 }).collect(),
        };
        out.insert(name.to_string(), shape);
    }
    Ok(out)
}

/// One run on copies of `inputs` (copied before the clock starts).
fn timed_run(session: &mut Session, inputs: &[(String, Tensor)]) -> Result<Duration, Error> {
    let copy = inputs.to_vec();
    let start = Instant::now();
    let outputs = session.run(copy)?;
    let elapsed = start.elapsed();
    drop(outputs);
    Ok(elapsed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `q` quantile of sorted, non-empty `v`, linearly interpolated between ranks.
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

impl std::fmt::Display for BenchReport {
    /// A few readable lines.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shapes: Vec<String> = self
            .shapes
            .iter()
            .map(|(n, s)| format!("{n}={}", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")))
            .collect();
        let plural = if self.threads == 1 { "" } else { "s" };
        writeln!(f, "model:     {} ({}, {} thread{plural}, {})", self.model, self.backend, self.threads, shapes.join(" "))?;
        writeln!(f, "compile:   {:.3} ms (load + prepare)", self.compile_ms)?;
        writeln!(f, "first run: {:.3} ms", self.first_run_ms)?;
        if let Some(t) = self.upgraded_after_ms {
            writeln!(f, "tiered:    {} kernels on LLVM code {t:.3} ms after the load began", self.upgraded_kernels)?;
        }
        writeln!(
            f,
            "runs:      {} (after {} warm-up): median {:.3} ms, p10 {:.3}, p90 {:.3}, mean {:.3}, min {:.3}, max {:.3}",
            self.runs, self.warmup_runs, self.median_ms, self.p10_ms, self.p90_ms, self.mean_ms, self.min_ms, self.max_ms
        )?;
        if self.tuned_kernels > 0 {
            writeln!(f, "tuned:     {} kernels scheduled from tuning records", self.tuned_kernels)?;
        }
        if !self.profile.is_empty() {
            writeln!(f, "steps, slowest first (mean per run; * schedule from a tuning record):")?;
            for p in &self.profile {
                let mark = if p.tuned { "*" } else { " " };
                writeln!(f, "  {:>9.4} ms {:>5.1}%  {:<9}{mark} {:<32} {}", p.ms, p.percent, p.kind, p.name, p.schedule)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.1) - 1.3).abs() < 1e-12);
        assert_eq!(quantile(&[7.0], 0.9), 7.0);
    }
}
