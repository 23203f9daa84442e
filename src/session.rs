//! `Session`: a loaded model that runs on named inputs. The graph is specialized to the
//! shapes of the inputs it is given, and each specialization is cached by input shapes.
//! The default backend compiles the kernels with Cranelift and runs them on the runtime
//! (`runtime::Executable`: static memory plan, thread pool, no allocation per run).

use ir::infer::InputShapes;
use ir::onnx::Model;
use ir::partition::Plan;
use ir::{DType, Graph, Tensor};
use runtime::{Executable, ThreadPool};
use std::collections::HashMap;
use search::Planner;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What executes the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The reference interpreter over high-level ops.
    Interp,
    /// Decomposition into atoms (`rewrite`), then the reference interpreter over atoms.
    InterpAtoms,
    /// Atoms partitioned into fused kernels (`ir::partition`), each run by the kernel IR's
    /// reference evaluator; host ops run on the interpreter.
    InterpKernels,
    /// The kernels compiled to native code by the Cranelift JIT and run by the runtime
    /// (kernels it does not support yet run on the kernel evaluator). The default without
    /// cargo feature `llvm`.
    #[cfg_attr(not(feature = "llvm"), default)]
    Cranelift,
    /// The kernels compiled by LLVM 19 (vectors as wide as the host's, AVX-512: 16 f32
    /// lanes) and run by the runtime; cargo feature `llvm`.
    #[cfg(feature = "llvm")]
    Llvm,
    /// Tiered: the kernels start on Cranelift at once, and LLVM-compiled ones replace them
    /// from a background thread as they are ready (between runs). The default with cargo
    /// feature `llvm`.
    #[cfg(feature = "llvm")]
    #[cfg_attr(feature = "llvm", default)]
    Auto,
}

impl Backend {
    /// Every backend this build has, by name.
    pub fn all() -> &'static [Backend] {
        &[
            Backend::Interp,
            Backend::InterpAtoms,
            Backend::InterpKernels,
            Backend::Cranelift,
            #[cfg(feature = "llvm")]
            Backend::Llvm,
            #[cfg(feature = "llvm")]
            Backend::Auto,
        ]
    }

    /// The runtime's code generator for a compiled backend (`None` for the interpreters);
    /// for `auto`, the one that compiles first (Cranelift).
    pub fn codegen(self) -> Option<runtime::CodeGen> {
        match self {
            Backend::Cranelift => Some(runtime::CodeGen::Cranelift),
            #[cfg(feature = "llvm")]
            Backend::Auto => Some(runtime::CodeGen::Cranelift),
            #[cfg(feature = "llvm")]
            Backend::Llvm => Some(runtime::CodeGen::Llvm),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Interp => "interp",
            Backend::InterpAtoms => "interp-atoms",
            Backend::InterpKernels => "interp-kernels",
            Backend::Cranelift => "cranelift",
            #[cfg(feature = "llvm")]
            Backend::Llvm => "llvm",
            #[cfg(feature = "llvm")]
            Backend::Auto => "auto",
        }
    }

    pub fn from_name(name: &str) -> Option<Backend> {
        match name {
            "interp" => Some(Backend::Interp),
            "interp-atoms" => Some(Backend::InterpAtoms),
            "interp-kernels" => Some(Backend::InterpKernels),
            "cranelift" => Some(Backend::Cranelift),
            #[cfg(feature = "llvm")]
            "llvm" => Some(Backend::Llvm),
            #[cfg(feature = "llvm")]
            "auto" => Some(Backend::Auto),
            _ => None,
        }
    }
}

/// How a session runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub backend: Backend,
    /// Threads that run each compiled kernel's parallel range, the caller included;
    /// `None` means every core (`std::thread::available_parallelism`). The interpreter
    /// backends run on one.
    pub threads: Option<usize>,
    /// The tuning-records file whose schedules compiled kernels use (`--db`); `None`: the
    /// default database when it exists ([`search::Db::default_path`]).
    pub db: Option<PathBuf>,
    /// How the compiled backend picks each kernel's schedule.
    pub schedules: SchedulePolicy,
}

/// How a compiled kernel's schedule is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchedulePolicy {
    /// The cost model's pick over the kernel's schedule space (`search::best_by_model`).
    #[default]
    Model,
    /// The hand-written heuristic (`search::default_schedule`).
    Heuristic,
}

impl SchedulePolicy {
    pub fn from_name(name: &str) -> Option<SchedulePolicy> {
        match name {
            "model" => Some(SchedulePolicy::Model),
            "heuristic" => Some(SchedulePolicy::Heuristic),
            _ => None,
        }
    }
}

impl Options {
    /// The thread count `threads` stands for.
    pub fn thread_count(&self) -> usize {
        self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
    }
}

/// Errors of loading and running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ir(#[from] ir::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    Records(#[from] search::records::Error),
    #[error("cannot start {threads} threads: {source}")]
    Threads { threads: usize, source: std::io::Error },
}

/// A loaded model. By default it runs on the Cranelift JIT and the runtime, on every core
/// (built with cargo feature `llvm`: tiered, Cranelift at once, then LLVM's kernels).
///
/// ```
/// use atomc::session::{Options, Session};
/// let mut session = Session::load("examples/mlp.onnx", Options::default())?;
/// let x = ir::Tensor::from_vec(vec![2, 64], vec![0.1f32; 128])?;
/// let outputs = session.run(vec![("x".to_string(), x.clone())])?;
/// assert_eq!(outputs[0].0, "y");
/// assert_eq!(outputs[0].1.shape(), &[2, 10]);
/// // Positional inputs, outputs written in place: no allocation once warm.
/// let mut y = vec![outputs[0].1.clone()];
/// session.run_into(&[&x], &mut y)?;
/// assert_eq!(y[0].shape(), outputs[0].1.shape());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Session {
    model: Model,
    options: Options,
    plans: HashMap<Vec<Vec<usize>>, Prepared>,
    /// The input shapes of the last run, to find its plan without allocating.
    last: Vec<Vec<usize>>,
    /// Shared by the executables of every input shape; started on first use.
    pool: Option<Arc<ThreadPool>>,
    /// Whether compiled plans time their steps (see [`Session::set_profiling`]).
    profiling: bool,
    /// Schedules the compiled kernels (backend `cranelift`), with the tuning records.
    planner: Option<Planner>,
    /// Schedules the LLVM kernels that replace Cranelift's in the background (backend
    /// `auto`).
    #[cfg(feature = "llvm")]
    upgrade_planner: Option<Arc<Planner>>,
}

impl Session {
    /// Imports a model file.
    pub fn load(path: impl AsRef<Path>, options: Options) -> Result<Session, Error> {
        let model = ir::onnx::import_file(path.as_ref())?;
        let planner = match options.backend {
            Backend::Cranelift => Some(crate::tuning::planner(options.db.as_deref(), options.thread_count())?),
            #[cfg(feature = "llvm")]
            Backend::Llvm => {
                Some(crate::tuning::planner_for(runtime::CodeGen::Llvm, options.db.as_deref(), options.thread_count())?)
            }
            #[cfg(feature = "llvm")]
            Backend::Auto => Some(crate::tuning::planner(options.db.as_deref(), options.thread_count())?),
            _ => None,
        };
        #[cfg(feature = "llvm")]
        let upgrade_planner = match options.backend {
            Backend::Auto => {
                Some(Arc::new(crate::tuning::planner_for(runtime::CodeGen::Llvm, options.db.as_deref(), options.thread_count())?))
            }
            _ => None,
        };
        Ok(Session {
            model,
            options,
            plans: HashMap::new(),
            last: Vec::new(),
            pool: None,
            profiling: false,
            planner,
            #[cfg(feature = "llvm")]
            upgrade_planner,
        })
    }

    /// What schedules the compiled kernels (backend `cranelift`): the tuning records it
    /// loaded, with the warnings of lines it skipped.
    pub fn planner(&self) -> Option<&Planner> {
        self.planner.as_ref()
    }

    /// The imported model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The graph inputs: name, dtype, declared dims.
    pub fn inputs(&self) -> &[ir::Input] {
        &self.model.graph.inputs
    }

    /// Output names in order.
    pub fn output_names(&self) -> Vec<String> {
        let g = &self.model.graph;
        g.outputs.iter().map(|&o| g.name(o).to_string()).collect()
    }

    /// Runs the model. Every graph input must be given exactly once, by name.
    pub fn run(&mut self, inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, Error> {
        let g = &self.model.graph;
        let mut by_name: HashMap<String, Tensor> = HashMap::new();
        for (name, t) in inputs {
            if !g.inputs.iter().any(|i| g.name(i.value) == name) {
                let expected: Vec<&str> = g.inputs.iter().map(|i| g.name(i.value)).collect();
                return Err(ir::Error::InvalidInput(format!(
                    "the model has no input named '{name}' (its inputs: {})",
                    expected.join(", ")
                ))
                .into());
            }
            if by_name.insert(name.clone(), t).is_some() {
                return Err(ir::Error::InvalidInput(format!("input '{name}' is given twice")).into());
            }
        }
        let mut ordered = Vec::with_capacity(g.inputs.len());
        let mut shapes = InputShapes::new();
        for input in &g.inputs {
            let name = g.name(input.value);
            let t = by_name
                .remove(name)
                .ok_or_else(|| ir::Error::InvalidInput(format!("input '{name}' is missing")))?;
            if t.dtype() != input.dtype {
                return Err(ir::Error::InvalidInput(format!(
                    "input '{name}' must be {}, got {}",
                    input.dtype,
                    t.dtype()
                ))
                .into());
            }
            shapes.insert(name.to_string(), t.shape().to_vec());
            ordered.push(t);
        }
        let key: Vec<Vec<usize>> = ordered.iter().map(|t| t.shape().to_vec()).collect();
        self.prepare_key(key.clone(), &shapes)?;
        let prepared = self.plans.get_mut(&key).ok_or_else(|| ir::Error::Internal("no plan after prepare".into()))?;
        let outputs = match prepared {
            Prepared::Graph(graph) => ir::interp::run(graph, ordered)?,
            Prepared::Kernels(graph, plan) => ir::partition::run_plan(graph, plan, ordered)?,
            Prepared::Jit(exec) => exec.run(ordered)?,
        };
        self.last = key;
        Ok(self.output_names().into_iter().zip(outputs).collect())
    }

    /// Runs the model on `inputs` given in the order of [`Session::inputs`], writing the
    /// outputs (in the order of [`Session::output_names`]) into `outputs`; a tensor of the
    /// wrong dtype or shape there is replaced. On the Cranelift backend, with the same input
    /// shapes as the previous run and that run's outputs passed back, this allocates
    /// nothing when every step is compiled (no host step, no evaluator kernel). A new
    /// combination of input shapes is specialized and compiled first, as in `run`.
    pub fn run_into(&mut self, inputs: &[&Tensor], outputs: &mut [Tensor]) -> Result<(), Error> {
        let g = &self.model.graph;
        let num_outputs = g.outputs.len();
        runtime::check_input_count(g, inputs.len())?;
        let same = self.last.len() == inputs.len()
            && self.last.iter().zip(inputs).all(|(s, t)| s.as_slice() == t.shape())
            && self.plans.contains_key(&self.last);
        if !same {
            let mut shapes = InputShapes::new();
            for (input, t) in g.inputs.iter().zip(inputs) {
                check_input(g, input, t)?;
                shapes.insert(g.name(input.value).to_string(), t.shape().to_vec());
            }
            let key: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
            self.prepare_key(key.clone(), &shapes)?;
            self.last = key;
        }
        let prepared = self.plans.get_mut(&self.last).ok_or_else(|| ir::Error::Internal("no plan after prepare".into()))?;
        if let Prepared::Jit(exec) = prepared {
            return Ok(exec.run_into(inputs, outputs)?);
        }
        if outputs.len() != num_outputs {
            return Err(ir::Error::InvalidInput(format!(
                "the model has {} outputs, {} output tensors given",
                num_outputs,
                outputs.len()
            ))
            .into());
        }
        let owned: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        let result = match prepared {
            Prepared::Graph(graph) => ir::interp::run(graph, owned)?,
            Prepared::Kernels(graph, plan) => ir::partition::run_plan(graph, plan, owned)?,
            Prepared::Jit(exec) => exec.run(owned)?,
        };
        for (o, t) in outputs.iter_mut().zip(result) {
            *o = t;
        }
        Ok(())
    }
}

/// Checks an input's dtype (its dims are checked by specialization).
fn check_input(g: &Graph, input: &ir::Input, t: &Tensor) -> Result<(), Error> {
    let name = g.name(input.value);
    if t.dtype() != input.dtype {
        return Err(ir::Error::InvalidInput(format!("input '{name}' must be {}, got {}", input.dtype, t.dtype())).into());
    }
    Ok(())
}

impl Session {
    /// Specializes and compiles the model for `shapes` (every input with symbolic dims must
    /// be listed; static ones may be) without running it, so that compile time can be
    /// measured apart from the first run. `run` with inputs of these shapes reuses it.
    pub fn prepare(&mut self, shapes: &InputShapes) -> Result<(), Error> {
        let g = &self.model.graph;
        let mut key = Vec::with_capacity(g.inputs.len());
        let mut full = InputShapes::new();
        for input in &g.inputs {
            let name = g.name(input.value);
            let shape = input_shape(g, input, shapes)?;
            full.insert(name.to_string(), shape.clone());
            key.push(shape);
        }
        self.prepare_key(key, &full)
    }

    fn prepare_key(&mut self, key: Vec<Vec<usize>>, shapes: &InputShapes) -> Result<(), Error> {
        if self.plans.contains_key(&key) {
            return Ok(());
        }
        let specialized = ir::infer::specialize(&self.model.graph, shapes)?;
        let plan = match self.options.backend {
            Backend::Interp => Prepared::Graph(specialized),
            Backend::InterpAtoms => Prepared::Graph(decompose_strict(&specialized)?),
            Backend::InterpKernels => {
                let g = decompose_strict(&specialized)?;
                let plan = ir::partition::partition(&g)?;
                Prepared::Kernels(g, plan)
            }
            #[cfg(feature = "llvm")]
            Backend::Auto => {
                let pool = self.pool()?;
                let atoms = decompose_strict(&specialized)?;
                let mut exec = match &self.planner {
                    Some(planner) => Executable::from_graph_planned(atoms, pool, planner, runtime::CodeGen::Cranelift)?,
                    None => Executable::from_graph(atoms, pool)?,
                };
                if let Some(planner) = &self.upgrade_planner {
                    exec.upgrade_in_background(planner.clone(), runtime::CodeGen::Llvm)?;
                }
                Prepared::Jit(Box::new(exec))
            }
            Backend::Cranelift => {
                let pool = self.pool()?;
                let atoms = decompose_strict(&specialized)?;
                let exec = match (self.options.schedules, &self.planner) {
                    (SchedulePolicy::Heuristic, _) => {
                        let target = runtime::jit_target(pool.threads());
                        let plan = ir::partition::partition(&atoms)?;
                        Executable::with_schedules(atoms, plan, pool, &|k| search::default_schedule(k, &target), runtime::CodeGen::Cranelift)?
                    }
                    (SchedulePolicy::Model, Some(planner)) => {
                        Executable::from_graph_planned(atoms, pool, planner, runtime::CodeGen::Cranelift)?
                    }
                    (SchedulePolicy::Model, None) => Executable::from_graph(atoms, pool)?,
                };
                Prepared::Jit(Box::new(exec))
            }
            #[cfg(feature = "llvm")]
            Backend::Llvm => {
                let pool = self.pool()?;
                let g = decompose_strict(&specialized)?;
                let exec = match &self.planner {
                    Some(planner) => Executable::from_graph_planned(g, pool, planner, runtime::CodeGen::Llvm)?,
                    None => Executable::from_graph_with(g, pool, runtime::CodeGen::Llvm)?,
                };
                Prepared::Jit(Box::new(exec))
            }
        };
        let mut plan = plan;
        if let Prepared::Jit(exec) = &mut plan {
            exec.set_profiling(self.profiling);
        }
        self.plans.insert(key, plan);
        Ok(())
    }

    /// The thread pool, started on first use.
    fn pool(&mut self) -> Result<Arc<ThreadPool>, Error> {
        if let Some(p) = &self.pool {
            return Ok(p.clone());
        }
        let threads = self.options.thread_count();
        let pool = Arc::new(ThreadPool::new(threads).map_err(|source| Error::Threads { threads, source })?);
        self.pool = Some(pool.clone());
        Ok(pool)
    }
}

impl Session {
    /// Starts (or stops) timing each step of the compiled plans (backend `cranelift`);
    /// starting resets the times. Profiling costs two clock reads per step.
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
        for plan in self.plans.values_mut() {
            if let Prepared::Jit(exec) = plan {
                exec.set_profiling(on);
            }
        }
    }

    /// The time of each step of the plan of the last run's input shapes since profiling
    /// started, in plan order; `None` when not profiling or not on a compiled backend.
    pub fn profile(&self) -> Option<Vec<runtime::StepTime>> {
        match self.plans.get(&self.last)? {
            Prepared::Jit(exec) => exec.profile(),
            _ => None,
        }
    }

    /// Blocks until the background compiles of every prepared plan (backend `auto`) have
    /// finished and their kernels are swapped in; returns how many kernels were replaced.
    pub fn wait_for_upgrades(&mut self) -> usize {
        let mut replaced = 0;
        for plan in self.plans.values_mut() {
            if let Prepared::Jit(exec) = plan {
                exec.wait_for_upgrades();
                replaced += exec.upgraded_kernels();
            }
        }
        replaced
    }

    /// How many compiled kernels of the last run's plan have a schedule from a tuning record.
    pub fn tuned_kernels(&self) -> usize {
        match self.plans.get(&self.last) {
            Some(Prepared::Jit(exec)) => exec.tuned_kernels(),
            _ => 0,
        }
    }
}

/// What a session runs for one combination of input shapes.
enum Prepared {
    /// A graph for the interpreter (high-level ops or atoms).
    Graph(Graph),
    /// An atom graph partitioned into kernels, run by the kernel evaluator.
    Kernels(Graph, Plan),
    /// Kernels compiled by a JIT (Cranelift or LLVM), run by the runtime.
    Jit(Box<Executable>),
}

/// Decomposes a specialized graph; every node must become atoms but host ops (and nodes
/// with data-dependent shapes), else the error names the first one left and why.
pub fn decompose_strict(graph: &Graph) -> Result<Graph, Error> {
    let d = rewrite::decompose(graph, &rewrite::Options::default())?;
    if let Some((node, op, why)) = d.report.high_level.iter().find(|(_, _, why)| !why.starts_with("host")) {
        return Err(ir::Error::Unsupported(format!("node '{node}' ({op}) could not be decomposed into atoms: {why}")).into());
    }
    Ok(d.graph)
}

/// Seeded pseudo-random inputs for every graph input: floats uniform in [-1, 1), integers
/// in [0, 10), bools alternating. Symbolic dims come from `shapes` (else an error).
pub fn random_inputs(model: &Model, shapes: &InputShapes, seed: u64) -> Result<Vec<(String, Tensor)>, Error> {
    let g = &model.graph;
    let mut rng = SplitMix64(seed);
    let mut out = Vec::new();
    for input in &g.inputs {
        let name = g.name(input.value);
        let shape = input_shape(g, input, shapes)?;
        let t = Tensor::from_fn_f64(input.dtype, shape, |_| {
            let u = rng.next_f64();
            match input.dtype {
                d if d.is_float() => 2.0 * u - 1.0,
                DType::Bool => (u < 0.5) as u8 as f64,
                _ => (u * 10.0).floor(),
            }
        })?;
        out.push((name.to_string(), t));
    }
    Ok(out)
}

/// The shape of `input`: from `shapes`, else its static dims (else an error naming the
/// symbolic dims).
fn input_shape(g: &Graph, input: &ir::Input, shapes: &InputShapes) -> Result<Vec<usize>, ir::Error> {
    let name = g.name(input.value);
    match shapes.get(name) {
        Some(s) => Ok(s.clone()),
        None => input.static_shape().ok_or_else(|| {
            ir::Error::InvalidInput(format!(
                "input '{name}' has symbolic dims {}: give its shape (--shape {name}=...)",
                ir::infer::fmt_dims(&input.dims)
            ))
        }),
    }
}

/// A small seeded generator (SplitMix64) for reproducible inputs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
