//! The `atomc` command line: `inspect` a model, `explain` its decomposition, `run` it on
//! `.npy` inputs, `bench` it, `tune` its schedules, `compile` it ahead of time into an object
//! file with a C API.

use anyhow::{bail, Context, Result};
use atomc::session::{random_inputs, Backend, Options, Session};
use clap::{Parser, Subcommand};
use ir::infer::InputShapes;
use ir::Dim;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "atomc", version, about = "Operator-decomposition kernel compiler for neural networks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's inputs, outputs, op histogram, parameter count and FLOPs.
    Inspect {
        model: PathBuf,
        /// Shape of an input with symbolic dims, e.g. `--shape images=1x3x640x640`.
        #[arg(long = "shape", value_name = "NAME=DIMS")]
        shapes: Vec<String>,
    },
    /// Decompose a model into atoms and show, per node, the atoms it became and the rules
    /// that got it there, with the saturation report and the host-op list.
    Explain {
        model: PathBuf,
        /// Only this node (by name).
        #[arg(long)]
        node: Option<String>,
        /// Shape of an input with symbolic dims (others default to 1).
        #[arg(long = "shape", value_name = "NAME=DIMS")]
        shapes: Vec<String>,
        /// Also print the whole atom graph in the text form.
        #[arg(long)]
        graph: bool,
    },
    /// Run a model and write each output to `DIR/<name>.npy`.
    Run {
        model: PathBuf,
        /// An input as `NAME=FILE.npy` (repeat for each input).
        #[arg(long = "input", value_name = "NAME=FILE")]
        inputs: Vec<String>,
        /// Where to write the outputs.
        #[arg(long, value_name = "DIR")]
        output_dir: PathBuf,
        /// What executes the model: `cranelift` (fused kernels compiled to native code and
        /// run by the runtime), `interp` (the reference interpreter over high-level ops),
        /// `interp-atoms` (decomposed into atoms, then interpreted) or `interp-kernels`
        /// (atoms partitioned into fused kernels, each evaluated); in a build with cargo
        /// feature `llvm`: `llvm` (compiled by LLVM) and `auto` (tiered: Cranelift at once,
        /// LLVM's kernels swapped in as a background thread compiles them; the default there).
        #[arg(long, default_value = DEFAULT_BACKEND)]
        backend: String,
        /// Threads running each compiled kernel (default: every core).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        threads: Option<u64>,
        /// Fill inputs that were not given with seeded random values.
        #[arg(long)]
        random_inputs: bool,
        /// Seed for `--random-inputs`.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Shape of an input with symbolic dims, for `--random-inputs`.
        #[arg(long = "shape", value_name = "NAME=DIMS")]
        shapes: Vec<String>,
        /// Tuning records to schedule compiled kernels with (default: `$ATOMC_DB`, else
        /// `records.jsonl` in `$ATOMC_HOME`, `$XDG_CACHE_HOME/atomc` or `~/.cache/atomc`,
        /// when it exists).
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
    },
    /// Time a model on seeded random inputs: compile (load + prepare), first run, then
    /// median, p10, p90, mean and min over the timed runs.
    Bench {
        model: PathBuf,
        /// What executes the model (as for `run`).
        #[arg(long, default_value = DEFAULT_BACKEND)]
        backend: String,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Untimed warm-up after the first run, in milliseconds.
        #[arg(long, default_value_t = 200)]
        warmup_ms: u64,
        /// Timed runs: at least this many ...
        #[arg(long, default_value_t = 20)]
        min_runs: usize,
        /// ... and at least this long in total, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        min_time_ms: u64,
        /// Shape of an input with symbolic dims (others default to 1).
        #[arg(long = "shape", value_name = "NAME=DIMS")]
        shapes: Vec<String>,
        /// Seed of the random inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also time every kernel and host step (compiled backend) and list them, marking
        /// kernels whose schedule came from a tuning record.
        #[arg(long)]
        profile: bool,
        /// Tuning records to schedule compiled kernels with (default: `$ATOMC_DB`, else
        /// `records.jsonl` in `$ATOMC_HOME`, `$XDG_CACHE_HOME/atomc` or `~/.cache/atomc`,
        /// when it exists).
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// How compiled kernels get their schedules: `model` (the cost model's pick) or
        /// `heuristic` (the hand-written default).
        #[arg(long, default_value = "model")]
        schedules: String,
    },
    /// Tune each kernel's schedule by measurement: the cost model ranks the candidates,
    /// the best are measured, then mutations of the best; the budget goes to the kernels
    /// with the most to gain. Prints a per-kernel table and the model latency before/after.
    Tune {
        model: PathBuf,
        /// Measured candidates in all (default 100 when no --deadline is given).
        #[arg(long)]
        trials: Option<usize>,
        /// Time limit of the search, e.g. `10m`, `90s`, `1h`.
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<std::time::Duration>,
        /// The tuning records file (default: `$ATOMC_DB`, else records.jsonl in atomc's
        /// cache directory).
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// Threads running each kernel (default: every core).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        threads: Option<u64>,
        /// Shape of an input with symbolic dims (others default to 1).
        #[arg(long = "shape", value_name = "NAME=DIMS")]
        shapes: Vec<String>,
        /// Write an SVG plot of the model's best-so-far latency against trials.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// Seed of the kernels' data and of the search.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The code generator whose kernels are tuned: `cranelift`, or `llvm` (in a build
        /// with cargo feature `llvm`; the records then serve `--backend llvm` and `auto`).
        #[arg(long, default_value = "cranelift")]
        backend: String,
    },
    /// Compile a model ahead of time for static input shapes: writes `OUTDIR/<name>.o` (the
    /// kernels, the weights and the C entry point `<name>_run`), `<name>.h` and
    /// `<name>.json`. Link with `cc main.c <name>.o -lm`.
    Compile {
        model: PathBuf,
        /// Where to write the files.
        #[arg(short = 'o', long = "out-dir", value_name = "OUTDIR")]
        out_dir: PathBuf,
        /// Shape of an input with symbolic dims, e.g. `--shape x=1x64` (required for each).
        #[arg(long = "shape", value_name = "NAME=DIMS")]
        shapes: Vec<String>,
        /// Bind an input to the value in a `.npy` file (repeatable): it becomes a constant
        /// of the model and is no input of the object. Binding the inputs that shapes depend
        /// on (a Resize's scales or sizes, a Range's bounds, a OneHot's depth) lets such ops
        /// compile to kernels.
        #[arg(long = "bind", value_name = "NAME=FILE.npy")]
        binds: Vec<String>,
        /// The C name prefix (default: the model file stem as a C identifier).
        #[arg(long)]
        name: Option<String>,
        /// Tuning records to schedule compiled kernels with (default: `$ATOMC_DB`, else
        /// `records.jsonl` in `$ATOMC_HOME`, `$XDG_CACHE_HOME/atomc` or `~/.cache/atomc`,
        /// when it exists).
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// Compile for this target triple with the LLVM backend (feature `llvm`):
        /// `x86_64-unknown-linux-gnu` or `aarch64-unknown-linux-gnu` (an object, as for the
        /// host), or `nvptx64-nvidia-cuda` (with `--gpu`: `<name>.ptx`, `<name>.plan.json`,
        /// the launch plan, and `<name>.weights.bin`). Without it the object is for the host,
        /// compiled by Cranelift.
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
        /// The CPU within `--target`: `host`, or a target of that architecture from
        /// `atomc targets` (AArch64: `aarch64` (default, any ARMv8-A), `neoverse-n1`).
        #[arg(long, value_name = "NAME", requires = "target", conflicts_with = "gpu")]
        cpu: Option<String>,
        /// The GPU architecture for `--target nvptx64-nvidia-cuda`: `sm_80` or `sm_90`.
        #[arg(long, value_name = "SM")]
        gpu: Option<String>,
    },
    /// List the targets atomc knows (this host and static descriptions), one line each.
    Targets {
        /// Measure this machine first (f32 FMA throughput per vector width on one core,
        /// memory bandwidth), print the figures and store them for `Target::host`.
        #[arg(long)]
        calibrate: bool,
    },
}

/// `name=1x3x224x224` (also `name=1,3,224,224`; `name=` is a scalar).
fn parse_shapes(specs: &[String]) -> Result<InputShapes> {
    let mut out = InputShapes::new();
    for spec in specs {
        let (name, dims) = spec.rsplit_once('=').with_context(|| format!("--shape '{spec}' is not NAME=DIMS"))?;
        let dims: Vec<usize> = if dims.is_empty() {
            vec![]
        } else {
            dims.split(['x', ','])
                .map(|d| d.trim().parse::<usize>().with_context(|| format!("--shape '{spec}': '{d}' is not a dimension")))
                .collect::<Result<_>>()?
        };
        out.insert(name.to_string(), dims);
    }
    Ok(out)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { model, shapes } => inspect(&model, &shapes),
        Command::Explain { model, node, shapes, graph } => explain(&model, node.as_deref(), &shapes, graph),
        Command::Run { model, inputs, output_dir, backend, threads, random_inputs, seed, shapes, db } => {
            run(&model, &inputs, &output_dir, &backend, threads, random_inputs, seed, &shapes, db)
        }
        Command::Bench { model, backend, threads, warmup_ms, min_runs, min_time_ms, shapes, seed, json, profile, db, schedules } => {
            bench(&model, &backend, threads, warmup_ms, min_runs, min_time_ms, &shapes, seed, json, profile, db, &schedules)
        }
        Command::Tune { model, trials, deadline, db, threads, shapes, plot, seed, backend } => {
            tune(&model, trials, deadline, db.as_deref(), threads, &shapes, plot.as_deref(), seed, &backend)
        }
        Command::Compile { model, out_dir, shapes, binds, name, db, target, cpu, gpu } => match (target.as_deref(), gpu) {
            (Some("nvptx64-nvidia-cuda"), _) if !binds.is_empty() => {
                Err(anyhow::anyhow!("--bind is not supported with --target nvptx64-nvidia-cuda yet"))
            }
            (Some("nvptx64-nvidia-cuda"), gpu) => compile_gpu(&model, &out_dir, &shapes, name, gpu),
            (_, Some(_)) => Err(anyhow::anyhow!("--gpu needs --target nvptx64-nvidia-cuda")),
            (_, None) => compile(&model, &out_dir, &shapes, &binds, atomc::aot::Options { name, db, target, cpu, ..Default::default() }),
        },
        Command::Targets { calibrate } => list_targets(calibrate),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The backend of `run` and `bench` when none is named: tiered where LLVM is built in.
const DEFAULT_BACKEND: &str = if cfg!(feature = "llvm") { "auto" } else { "cranelift" };

fn parse_backend(name: &str) -> Result<Backend> {
    match Backend::from_name(name) {
        Some(b) => Ok(b),
        None => {
            let names: Vec<&str> = Backend::all().iter().map(|b| b.name()).collect();
            bail!("unknown backend '{name}' (available: {})", names.join(", "))
        }
    }
}

/// Input shapes from `--shape`, symbolic dims not given defaulting to 1 (listed in the
/// second result).
fn shapes_or_ones(g: &ir::Graph, shape_specs: &[String]) -> Result<(InputShapes, Vec<String>)> {
    let mut shapes = parse_shapes(shape_specs)?;
    let mut assumed = Vec::new();
    for input in &g.inputs {
        let name = g.name(input.value);
        if !shapes.contains_key(name) && input.static_shape().is_none() {
            let s: Vec<usize> = input.dims.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { 1 }).collect();
            assumed.push(format!("{name}={}", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")));
            shapes.insert(name.to_string(), s);
        }
    }
    Ok((shapes, assumed))
}

/// Specializes the graph; when symbolic dims were assumed to be 1, a failure says so.
fn specialize(g: &ir::Graph, shapes: &InputShapes, assumed: &[String]) -> Result<ir::Graph> {
    ir::infer::specialize(g, shapes).with_context(|| {
        if assumed.is_empty() {
            "shape inference failed".to_string()
        } else {
            format!("shape inference failed with symbolic dims assumed to be 1 ({}): give real shapes with --shape", assumed.join(" "))
        }
    })
}

fn explain(path: &std::path::Path, node: Option<&str>, shape_specs: &[String], print_graph: bool) -> Result<()> {
    let model = ir::onnx::import_file(path)?;
    let g = &model.graph;
    let (shapes, assumed) = shapes_or_ones(g, shape_specs)?;
    if !assumed.is_empty() {
        println!("assuming symbolic dims of 1: {}", assumed.join(" "));
    }
    let spec = specialize(g, &shapes, &assumed)?;
    let d = rewrite::decompose(&spec, &rewrite::Options::default())?;
    if let Some(name) = node {
        let Some(p) = d.provenance.iter().find(|p| p.node == name) else {
            let some: Vec<&str> = d.provenance.iter().take(8).map(|p| p.node.as_str()).collect();
            bail!("the model has no node named '{name}' (some nodes: {})", some.join(", "));
        };
        print!("{p}");
    } else {
        for p in &d.provenance {
            print!("{p}");
        }
    }
    println!("{}", d.report);
    let atoms = d.graph.nodes.iter().filter(|n| matches!(n.op.kind, ir::OpKind::Atom(_))).count();
    println!(
        "{} high-level nodes -> {} atoms ({} kinds exist), {} left high-level",
        spec.nodes.len(),
        atoms,
        ir::AtomKind::ALL.len(),
        d.report.high_level.len()
    );
    if let Ok(p) = ir::partition::partition(&d.graph) {
        println!("interp-kernels: {} kernels, {} host steps", p.num_kernels(), p.num_host_steps());
    }
    let pool = std::sync::Arc::new(runtime::ThreadPool::new(1)?);
    if let Ok(exec) = runtime::Executable::from_graph(d.graph.clone(), pool) {
        let (native, all) = exec.compiled_kernels();
        println!("cranelift: {native} of {all} kernels compiled to native code");
    }
    for (n, op, why) in &d.report.high_level {
        println!("  {n} ({op}): {why}");
    }
    println!("host ops (run by the interpreter between compiled parts):");
    for (op, why) in rewrite::host::HOST_OPS {
        println!("  {op:<20} {why}");
    }
    if print_graph {
        print!("{}", ir::text::print(&d.graph, Some(16)));
    }
    Ok(())
}

fn inspect(path: &std::path::Path, shape_specs: &[String]) -> Result<()> {
    let model = ir::onnx::import_file(path)?;
    let g = &model.graph;
    let (shapes, assumed) = shapes_or_ones(g, shape_specs)?;
    let spec = specialize(g, &shapes, &assumed)?;
    println!("model: {} (opset {}, ir_version {}, producer '{}')", path.display(), model.opset, model.ir_version, model.producer);
    println!("inputs:");
    for input in &g.inputs {
        println!("  {}: {}{}", g.name(input.value), input.dtype, ir::infer::fmt_dims(&input.dims));
    }
    println!("outputs:");
    for &o in &spec.outputs {
        let ty = spec.value(o).ty.as_ref().map_or("?".to_string(), |t| t.to_string());
        println!("  {}: {ty}", spec.name(o));
    }
    println!("ops ({} nodes):", g.nodes.len());
    for (op, n) in ir::stats::op_histogram(g) {
        println!("  {op:<24} {n}");
    }
    println!("parameters: {} ({} tensors)", g.num_params(), g.consts.len());
    let (flops, unknown) = ir::stats::flops(&spec);
    print!("FLOPs: {flops} ({:.3} GFLOP)", flops as f64 / 1e9);
    if !assumed.is_empty() {
        print!(", assuming symbolic dims of 1: {}", assumed.join(" "));
    }
    if unknown > 0 {
        print!(", {unknown} nodes with data-dependent shapes not counted");
    }
    println!();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run(
    path: &std::path::Path,
    input_specs: &[String],
    output_dir: &std::path::Path,
    backend: &str,
    threads: Option<u64>,
    random: bool,
    seed: u64,
    shape_specs: &[String],
    db: Option<PathBuf>,
) -> Result<()> {
    let backend = parse_backend(backend)?;
    let threads = threads.map(usize::try_from).transpose().context("--threads is too large")?;
    let mut session = Session::load(path, Options { backend, threads, db, ..Options::default() })?;
    if let Some(p) = session.planner() {
        print_records_warnings(atomc::tuning::warnings(p));
    }
    let mut inputs = Vec::new();
    for spec in input_specs {
        let (name, file) = spec.split_once('=').with_context(|| format!("--input '{spec}' is not NAME=FILE.npy"))?;
        let t = atomc::npy::read(std::path::Path::new(file)).with_context(|| format!("input '{name}'"))?;
        inputs.push((name.to_string(), t));
    }
    if random {
        let mut shapes = parse_shapes(shape_specs)?;
        for (name, t) in &inputs {
            shapes.insert(name.clone(), t.shape().to_vec());
        }
        for (name, t) in random_inputs(session.model(), &shapes, seed)? {
            if !inputs.iter().any(|(n, _)| *n == name) {
                inputs.push((name, t));
            }
        }
    }
    let outputs = session.run(inputs)?;
    std::fs::create_dir_all(output_dir).with_context(|| format!("cannot create '{}'", output_dir.display()))?;
    for (name, t) in outputs {
        let file = output_dir.join(format!("{}.npy", atomc::npy::sanitize(&name)));
        atomc::npy::write(&file, &t)?;
        println!("{name}: {}{} -> {}", t.dtype(), ir::shape::fmt_shape(t.shape()), file.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
/// `10m`, `90s`, `1h`, `500ms` or a number of seconds.
fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("'{text}' is not a duration like 10m, 90s or 1h"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("'{text}': unknown unit '{unit}' (ms, s, m or h)")),
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{text}': {e}"))
}

#[allow(clippy::too_many_arguments)]
fn tune(
    path: &std::path::Path,
    trials: Option<usize>,
    deadline: Option<std::time::Duration>,
    db: Option<&std::path::Path>,
    threads: Option<u64>,
    shape_specs: &[String],
    plot: Option<&std::path::Path>,
    seed: u64,
    backend: &str,
) -> Result<()> {
    use atomc::tune::{DbStore, Progress, TuneOptions};
    let codegen = match parse_backend(backend)? {
        Backend::Cranelift => runtime::CodeGen::Cranelift,
        #[cfg(feature = "llvm")]
        Backend::Llvm => runtime::CodeGen::Llvm,
        other => bail!("atomc tune compiles with cranelift or llvm, not '{}'", other.name()),
    };
    use indicatif::{ProgressBar, ProgressStyle};
    let threads = Options { threads: threads.map(|t| t as usize), ..Options::default() }.thread_count();
    let db = match db {
        Some(p) => p.to_path_buf(),
        None => search::Db::default_path().context("--db: no default records file")?,
    };
    let mut store = DbStore::open(&db, threads, codegen)?;
    for w in store.warnings() {
        eprintln!("warning: {w}");
    }
    let options = TuneOptions { trials, deadline, threads, codegen, shapes: parse_shapes(shape_specs)?, seed, ..TuneOptions::default() };
    let bar = match (trials, deadline) {
        (Some(n), _) => ProgressBar::new(n as u64),
        (None, Some(d)) => ProgressBar::new(d.as_secs().max(1)),
        (None, None) => ProgressBar::new(atomc::tune::DEFAULT_TRIALS as u64),
    };
    let timed = trials.is_none() && deadline.is_some();
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len}{unit} {elapsed_precise} {msg}")
            .map_err(|e| anyhow::anyhow!("progress bar template: {e}"))?,
    );
    bar.set_message("measuring the untuned kernels and model");
    let started = std::time::Instant::now();
    let mut on_progress = |p: &Progress| {
        if timed {
            bar.set_position(started.elapsed().as_secs());
        } else {
            bar.set_position(p.trials as u64);
        }
        bar.set_message(format!(
            "kernel {}/{} {} | trials {} | best {:.1} us {:.2} GFLOP/s | model ~{:.3} ms",
            p.kernel,
            p.kernels,
            p.kernel_name,
            p.trials,
            p.best_s * 1e6,
            p.gflops,
            p.model_s * 1e3
        ));
    };
    let report = atomc::tune::tune(path, &options, &mut store, &mut on_progress)?;
    bar.finish_and_clear();
    print!("{report}");
    println!("records: {}", store.path().display());
    if let Some(plot) = plot {
        let title = format!("atomc tune {}", path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()));
        atomc::tune::plot(&report.curve, plot, &title)?;
        println!("plot: {}", plot.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one per `atomc bench` flag
fn bench(
    path: &std::path::Path,
    backend: &str,
    threads: usize,
    warmup_ms: u64,
    min_runs: usize,
    min_time_ms: u64,
    shape_specs: &[String],
    seed: u64,
    json: bool,
    profile: bool,
    db: Option<PathBuf>,
    schedules: &str,
) -> Result<()> {
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let options = atomc::bench::BenchOptions {
        backend: parse_backend(backend)?,
        threads,
        warmup: std::time::Duration::from_millis(warmup_ms),
        min_runs,
        min_time: std::time::Duration::from_millis(min_time_ms),
        shapes: parse_shapes(shape_specs)?,
        seed,
        profile,
        db,
        schedules: atomc::session::SchedulePolicy::from_name(schedules)
            .with_context(|| format!("unknown --schedules '{schedules}' (model or heuristic)"))?,
    };
    let report = atomc::bench::bench(path, &options)?;
    print_records_warnings(&report.records_warnings);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

fn compile(path: &std::path::Path, out_dir: &std::path::Path, shape_specs: &[String], bind_specs: &[String], opts: atomc::aot::Options) -> Result<()> {
    let bind = bind_specs.iter().map(|s| atomc::aot::read_binding(s)).collect::<Result<Vec<_>, _>>()?;
    let opts = atomc::aot::Options { shapes: parse_shapes(shape_specs)?, bind, ..opts };
    let a = atomc::aot::compile(path, out_dir, &opts).with_context(|| format!("cannot compile '{}'", path.display()))?;
    print_records_warnings(&a.records_warnings);
    let fmt = |ts: &[codegen::cranelift::TensorDesc]| {
        ts.iter().map(|t| format!("{}: {}{}", t.name, t.dtype, ir::shape::fmt_shape(&t.shape))).collect::<Vec<_>>().join(", ")
    };
    println!("compiled {} as '{}': {} kernels, {} bytes of weights, {} bytes of workspace", path.display(), a.name, a.kernels, a.weight_bytes, a.workspace_bytes);
    println!("  inputs:  {}", fmt(&a.inputs));
    if !bind_specs.is_empty() {
        println!("  bound:   {}", bind_specs.join(", "));
    }
    println!("  outputs: {}", fmt(&a.outputs));
    println!("  wrote {}, {}, {}", a.object.display(), a.header.display(), a.json.display());
    if a.tuned_kernels > 0 {
        println!("  {} of {} kernels scheduled from tuning records", a.tuned_kernels, a.kernels);
    }
    let cc = if a.target.starts_with("aarch64") && !cfg!(target_arch = "aarch64") { "aarch64-linux-gnu-gcc" } else { "cc" };
    println!("  {} object for {} ({}); link: {cc} main.c {} -lm", a.backend, a.target, a.cpu, a.object.display());
    Ok(())
}

/// `atomc compile --target nvptx64-nvidia-cuda --gpu SM`.
#[cfg(feature = "llvm")]
fn compile_gpu(path: &std::path::Path, out_dir: &std::path::Path, shape_specs: &[String], name: Option<String>, gpu: Option<String>) -> Result<()> {
    let gpu = gpu.context("--target nvptx64-nvidia-cuda needs --gpu sm_80 or --gpu sm_90")?;
    let a = atomc::gpu::compile(path, out_dir, name.as_deref(), &parse_shapes(shape_specs)?, &gpu)
        .with_context(|| format!("cannot compile '{}' for {gpu}", path.display()))?;
    let p = &a.plan_data;
    println!(
        "compiled {} as '{}' for {}: {} kernel launches, {} bytes of weights, {} bytes of workspace",
        path.display(),
        p.name,
        p.gpu,
        p.steps.len(),
        p.weight_bytes,
        p.workspace_bytes
    );
    println!("  wrote {}, {}, {}", a.ptx.display(), a.plan.display(), a.weights.display());
    Ok(())
}

/// Without the LLVM backend there is no NVPTX code generator.
#[cfg(not(feature = "llvm"))]
fn compile_gpu(_: &std::path::Path, _: &std::path::Path, _: &[String], _: Option<String>, _: Option<String>) -> Result<()> {
    bail!("--target nvptx64-nvidia-cuda needs a build with cargo feature `llvm`")
}

/// Skipped lines of the tuning records, on stderr.
fn print_records_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: tuning records: {w}");
    }
}

/// `atomc targets [--calibrate]`.
fn list_targets(calibrate: bool) -> Result<()> {
    if calibrate {
        println!("calibrating this machine ...");
        let c = targets::calibrate();
        for w in &c.fma {
            println!("  f32 FMA, {:>3}-bit vectors, 1 core: {:>8.2} GFLOP/s", w.bits, w.gflops);
        }
        println!("  triad bandwidth, {} threads:      {:>8.2} GB/s", c.bandwidth_threads, c.bandwidth_gbs);
        println!("  ({})", c.method);
        let path = targets::store_calibration(&c, None).context("cannot store the calibration")?;
        println!("stored {}", path.display());
    }
    // First use of `Target::host` in this process: it reads the calibration just stored.
    let host = targets::Target::host();
    println!("{}", host.summary());
    let mut cranelift = host.clone().with_vector_bits(128);
    cranelift.name = "host/clif".into();
    println!("{}", cranelift.summary());
    for name in targets::Target::NAMES.iter().filter(|n| **n != "host") {
        if let Some(t) = targets::Target::named(name) {
            println!("{}", t.summary());
        }
    }
    println!("host fingerprint: {}", host.fingerprint());
    Ok(())
}
