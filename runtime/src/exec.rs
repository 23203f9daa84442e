//! [`Executable`]: a partitioned atom graph ready to run. Every kernel is compiled by
//! `codegen` once; the values live where the [`MemoryPlan`] puts them (the caller's input
//! and output tensors, the graph's weights read in place, one arena allocated once); each
//! compiled kernel has a precomputed table of buffer pointers, of which only the slots
//! that point into the caller's tensors are patched per run. A run of a model whose steps
//! are all compiled kernels allocates nothing after the first one.
//!
//! Kernels the JIT does not support (`codegen::Error::Unsupported`: f16, u8, ... dtypes)
//! run on the kernel reference evaluator, and host steps on `Op::eval`, on tensors copied
//! out of their buffers (these steps allocate).
//!
//! Tiered compilation: [`Executable::upgrade_in_background`] recompiles every compiled
//! kernel with a second code generator (LLVM, slower to compile, faster code) on a
//! background thread; each finished kernel is swapped in at the start of the next run (a
//! kernel is never replaced during a run), so the first results come as fast as Cranelift
//! compiles and the steady state runs the LLVM code.

use crate::ffi::{self, Ptrs};
use crate::memory::{ALIGN, Location, MemoryPlan};
use crate::pool::ThreadPool;
use codegen::{JitKernel, NativeKernel};
use ir::graph::{Graph, ValueId};
use ir::kernel::Kernel;
use ir::schedule::Schedule;
use ir::partition::{Plan, Step};
use ir::shape::fmt_shape;
use ir::{DType, Tensor};
use search::{Planner, Source};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Errors of building and running an executable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Memory(#[from] crate::memory::Error),
    #[error(transparent)]
    Codegen(#[from] codegen::Error),
    #[error(transparent)]
    Ir(#[from] ir::Error),
}

/// One aligned line of the arena.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; ALIGN]);

/// Where a pointer-table slot points during a run.
#[derive(Clone, Copy, Debug)]
enum Io {
    Input(usize),
    Output(usize),
}

/// How one plan step runs.
enum Exec {
    /// A compiled kernel on its pointer table; `patches` are the slots set per run.
    /// `tuned`: its schedule came from a tuning record.
    Jit { kernel: Box<dyn NativeKernel>, table: Ptrs, patches: Vec<(usize, Io)>, extent: usize, grain: usize, tuned: bool, schedule: String },
    /// A kernel on the reference evaluator (plan step `step`).
    Eval { step: usize },
    /// Graph node `node` on the interpreter.
    Host { node: usize },
}

/// A partitioned atom graph with compiled kernels, its memory and a thread pool.
pub struct Executable {
    graph: Graph,
    plan: Plan,
    memory: MemoryPlan,
    steps: Vec<Exec>,
    /// Owns the arena; only `base` (taken once) is used to reach it.
    _arena: Vec<Line>,
    base: *mut u8,
    pool: Arc<ThreadPool>,
    /// This run's input and output base addresses (filled in place per run).
    in_ptrs: Vec<*mut u8>,
    out_ptrs: Vec<*mut u8>,
    /// Values without a static shape (host steps only), as tensors.
    dynamic: HashMap<ValueId, Tensor>,
    /// Wall time per step accumulated over runs while profiling (`None`: off).
    profile: Option<Vec<Duration>>,
    /// Kernels being recompiled in the background (`None`: none, or all have arrived).
    upgrades: Option<Upgrades>,
    /// How many kernels the background compiles have replaced so far.
    upgraded: usize,
}

/// A kernel compiled in the background to replace the one of step `step`.
struct Upgrade {
    step: usize,
    kernel: Box<dyn NativeKernel>,
    grain: usize,
    tuned: bool,
    schedule: String,
}

/// The receiving end of a background compile. Dropping it asks the compiler thread to stop
/// and waits for it (at most the rest of one kernel's compile): a compiler thread left
/// running could still be inside LLVM when the process exits and LLVM's global destructors
/// run, which crashes the process after `main` has returned.
struct Upgrades {
    arrivals: Receiver<Upgrade>,
    cancel: Arc<AtomicBool>,
    compiler: Option<JoinHandle<()>>,
}

impl Drop for Upgrades {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(compiler) = self.compiler.take() {
            // A panic on the compiler thread has already been reported there; the kernels it
            // did not deliver keep their current code.
            let _ = compiler.join();
        }
    }
}

/// The time one plan step took over the profiled runs.
#[derive(Clone, Debug)]
pub struct StepTime {
    /// The kernel's name, or the host node's.
    pub name: String,
    /// `kernel` (compiled), `evaluator` (a kernel the backend lacks) or `host`.
    pub kind: &'static str,
    /// A compiled kernel whose schedule came from a tuning record.
    pub tuned: bool,
    /// A compiled kernel's schedule.
    pub schedule: Option<String>,
    pub total: Duration,
}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (native, all) = self.compiled_kernels();
        f.debug_struct("Executable")
            .field("kernels", &all)
            .field("compiled", &native)
            .field("arena_bytes", &self.memory.arena_bytes)
            .finish_non_exhaustive()
    }
}

/// The code generator that compiles the kernels of an [`Executable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CodeGen {
    /// Cranelift (`codegen::cranelift`): 128-bit vectors. The default.
    #[default]
    Cranelift,
    /// LLVM 19 (`codegen::llvm`, cargo feature `llvm`): vectors as wide as the host's
    /// registers (512 bits with AVX-512), O3.
    #[cfg(feature = "llvm")]
    Llvm,
}

impl CodeGen {
    /// The host as this code generator sees it (the vector width it emits).
    pub fn host_target(self) -> targets::Target {
        match self {
            CodeGen::Cranelift => targets::Target::host().with_vector_bits(128),
            #[cfg(feature = "llvm")]
            CodeGen::Llvm => {
                let lanes = codegen::llvm::HostTarget::detect().map_or(4, codegen::llvm::HostTarget::f32_lanes);
                targets::Target::host().with_vector_bits(32 * lanes as u32)
            }
        }
    }

    /// Compiles `k` under schedule `s` for the host.
    pub fn compile(self, k: &Kernel, s: &Schedule) -> Result<Box<dyn NativeKernel>, codegen::Error> {
        match self {
            CodeGen::Cranelift => JitKernel::compile(k, s).map(|j| Box::new(j) as Box<dyn NativeKernel>),
            #[cfg(feature = "llvm")]
            CodeGen::Llvm => codegen::llvm::LlvmKernel::compile(k, s).map(|j| Box::new(j) as Box<dyn NativeKernel>),
        }
    }

    /// The host target of this code generator with `threads` cores.
    pub fn target(self, threads: usize) -> targets::Target {
        targets::Target { cores: threads.max(1), ..self.host_target() }
    }

    /// The planner without tuning records for this code generator at `threads` threads.
    pub fn planner(self, threads: usize) -> Planner {
        Planner::new(self.host_target(), u32::try_from(threads).unwrap_or(u32::MAX))
    }
}

/// A compiled kernel, where its schedule came from, and the schedule.
type Compiled = (Box<dyn NativeKernel>, Source, Schedule);

/// How a kernel's schedule is chosen, and where it came from.
type Pick<'a> = dyn Fn(&Kernel) -> (Schedule, Source) + 'a;

/// The target Cranelift compiles for: the host with 128-bit vectors, `threads` cores.
pub fn jit_target(threads: usize) -> targets::Target {
    CodeGen::Cranelift.target(threads)
}

/// Compiles one kernel for the host with `codegen` under the schedule `pick` gives (a
/// tuning record's or the cost model's) and says where the schedule came from; should the
/// code generator refuse the schedule, with the heuristic `search::default_schedule`
/// instead. `None` when the backend does not support the kernel (it then runs on the
/// kernel evaluator). The only call of the code generators.
fn compile_kernel(k: &Kernel, pick: &Pick<'_>, codegen: CodeGen, threads: usize) -> Result<Option<Compiled>, Error> {
    let compile = |s: &Schedule| codegen.compile(k, s);
    let (chosen, source) = pick(k);
    let compiled = match compile(&chosen) {
        // A Winograd schedule the code generator cannot apply (an epilogue without a vector
        // form, another backend) falls back like an invalid one, not to the evaluator.
        Err(e)
            if matches!(e, codegen::Error::InvalidKernel { .. } | codegen::Error::Internal { .. })
                || (chosen.winograd() && matches!(e, codegen::Error::Unsupported { .. })) =>
        {
            let target = codegen.target(threads);
            let fallback = search::default_schedule(k, &target);
            if fallback == chosen {
                compile(&chosen).map(|j| (j, source, chosen))
            } else {
                compile(&fallback).map(|j| (j, Source::Model, fallback))
            }
        }
        other => other.map(|j| (j, source, chosen)),
    };
    match compiled {
        Ok(j) => Ok(Some(j)),
        Err(codegen::Error::Unsupported { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An error naming the model's inputs unless `given` is their number.
pub fn check_input_count(g: &Graph, given: usize) -> Result<(), ir::Error> {
    if given == g.inputs.len() {
        return Ok(());
    }
    let names: Vec<&str> = g.inputs.iter().map(|i| g.name(i.value)).collect();
    Err(ir::Error::InvalidInput(format!(
        "the model takes {} inputs ({}), {given} given",
        names.len(),
        names.join(", ")
    )))
}

fn internal(msg: String) -> Error {
    ir::Error::Internal(msg).into()
}

impl Executable {
    /// Partitions an atom graph and builds it (see [`Executable::new`]).
    pub fn from_graph(graph: Graph, pool: Arc<ThreadPool>) -> Result<Executable, Error> {
        Executable::from_graph_with(graph, pool, CodeGen::default())
    }

    /// Partitions an atom graph and builds it with the kernels compiled by `codegen`.
    pub fn from_graph_with(graph: Graph, pool: Arc<ThreadPool>, codegen: CodeGen) -> Result<Executable, Error> {
        let planner = codegen.planner(pool.threads());
        Executable::from_graph_planned(graph, pool, &planner, codegen)
    }

    /// Partitions an atom graph and builds it with the schedules `planner` picks.
    pub fn from_graph_planned(graph: Graph, pool: Arc<ThreadPool>, planner: &Planner, codegen: CodeGen) -> Result<Executable, Error> {
        let plan = ir::partition::partition(&graph)?;
        Executable::new_planned(graph, plan, pool, planner, codegen)
    }

    /// [`Executable::new_planned`] with the cost model's schedules (no tuning records).
    pub fn new(graph: Graph, plan: Plan, pool: Arc<ThreadPool>) -> Result<Executable, Error> {
        Executable::new_with(graph, plan, pool, CodeGen::default())
    }

    /// [`Executable::new`] with the kernels compiled by `codegen` (no tuning records).
    pub fn new_with(graph: Graph, plan: Plan, pool: Arc<ThreadPool>, codegen: CodeGen) -> Result<Executable, Error> {
        let planner = codegen.planner(pool.threads());
        Executable::new_planned(graph, plan, pool, &planner, codegen)
    }

    /// Compiles every kernel of `plan` (a partition of the specialized atom graph `graph`)
    /// with `codegen` and the schedule `planner` picks (a tuning record's, else the cost
    /// model's), plans the memory and allocates the arena. Kernels run their parallel range
    /// on `pool`.
    pub fn new_planned(graph: Graph, plan: Plan, pool: Arc<ThreadPool>, planner: &Planner, codegen: CodeGen) -> Result<Executable, Error> {
        Executable::build(graph, plan, pool, &|k: &Kernel| planner.schedule(k), codegen)
    }

    /// As [`Executable::new`], each kernel compiled by `codegen` with the schedule `pick`
    /// gives it (the tuner measures candidates this way).
    pub fn with_schedules(
        graph: Graph,
        plan: Plan,
        pool: Arc<ThreadPool>,
        pick: &dyn Fn(&Kernel) -> Schedule,
        codegen: CodeGen,
    ) -> Result<Executable, Error> {
        Executable::build(graph, plan, pool, &|k: &Kernel| (pick(k), Source::Model), codegen)
    }

    fn build(graph: Graph, plan: Plan, pool: Arc<ThreadPool>, pick: &Pick<'_>, codegen: CodeGen) -> Result<Executable, Error> {
        let threads = pool.threads();
        let memory = MemoryPlan::new(&graph, &plan)?;
        let mut arena = vec![Line([0; ALIGN]); memory.arena_bytes.div_ceil(ALIGN)];
        let base = arena.as_mut_ptr().cast::<u8>();
        let mut steps = Vec::with_capacity(plan.steps.len());
        for (i, step) in plan.steps.iter().enumerate() {
            steps.push(match step {
                Step::Host { node } => Exec::Host { node: *node },
                Step::Kernel { kernel, inputs, output } => match compile_kernel(kernel, pick, codegen, threads)? {
                    None => Exec::Eval { step: i },
                    Some((jit, source, schedule)) => {
                        // What the kernel derives from its constant f32 inputs (weights),
                        // prepared once.
                        let constant = |i: usize| -> Option<Vec<u8>> {
                            let v = *inputs.get(i)?;
                            match (memory.location(v), graph.consts.get(&v).map(|t| t.data())) {
                                (Some(Location::Weight), Some(ir::Data::F32(x))) => Some(x.iter().flat_map(|f| f.to_ne_bytes()).collect()),
                                _ => None,
                            }
                        };
                        let prepared = jit.prepare(&constant);
                        // Winograd with weights that are not constant would transform them on
                        // every call: the heuristic schedule instead.
                        let (jit, source, schedule) = if schedule.winograd() && prepared.is_none() {
                            let fallback = search::default_schedule(kernel, &codegen.target(threads));
                            (codegen.compile(kernel, &fallback)?, Source::Model, fallback)
                        } else {
                            (jit, source, schedule)
                        };
                        let mut table = Ptrs { ptrs: Vec::new(), lens: Vec::new(), prepared: None };
                        let mut patches = Vec::new();
                        for (slot, &v) in inputs.iter().chain([output]).enumerate() {
                            let bytes = static_bytes(&graph, v)?;
                            let ptr = match memory.location(v) {
                                Some(Location::Input(k)) => {
                                    patches.push((slot, Io::Input(*k)));
                                    std::ptr::null_mut()
                                }
                                Some(Location::Output(k)) => {
                                    patches.push((slot, Io::Output(*k)));
                                    std::ptr::null_mut()
                                }
                                Some(Location::Weight) => {
                                    let t = graph.consts.get(&v).ok_or_else(|| {
                                        internal(format!("weight '{}' has no data", graph.name(v)))
                                    })?;
                                    if t.byte_len() != bytes {
                                        return Err(internal(format!("weight '{}' has the wrong size", graph.name(v))));
                                    }
                                    t.byte_ptr().cast_mut()
                                }
                                Some(Location::Arena { offset, bytes: n }) => {
                                    if *n != bytes || offset + n > memory.arena_bytes {
                                        return Err(internal(format!("arena slice of '{}' is wrong", graph.name(v))));
                                    }
                                    base.wrapping_add(*offset)
                                }
                                Some(Location::Dynamic) | None => {
                                    return Err(internal(format!(
                                        "kernel '{}' reads or writes '{}', which has no static location",
                                        kernel.name,
                                        graph.name(v)
                                    )));
                                }
                            };
                            table.ptrs.push(ptr);
                            table.lens.push(bytes);
                        }
                        table.ptrs.push(std::ptr::null_mut());
                        table.set_prepared(prepared);
                        let extent = jit.parallel_extent();
                        let grain = search::cost::share_grain(kernel, extent);
                        Exec::Jit { kernel: jit, table, patches, extent, grain, tuned: source.is_record(), schedule: schedule.to_string() }
                    }
                },
            });
        }
        let (ni, no) = (graph.inputs.len(), graph.outputs.len());
        Ok(Executable {
            graph,
            plan,
            memory,
            steps,
            _arena: arena,
            base,
            pool,
            in_ptrs: vec![std::ptr::null_mut(); ni],
            out_ptrs: vec![std::ptr::null_mut(); no],
            dynamic: HashMap::new(),
            profile: None,
            upgrades: None,
            upgraded: 0,
        })
    }

    /// Starts recompiling every compiled kernel with `codegen` under the schedules `planner`
    /// picks, on a background thread, one kernel at a time in plan order. Each kernel that
    /// compiles replaces its step's kernel at the start of the next run (see
    /// [`Executable::run_into`]); one the code generator refuses keeps its current code. A
    /// second call replaces the first (waiting for its thread to finish its current kernel).
    pub fn upgrade_in_background(&mut self, planner: Arc<Planner>, codegen: CodeGen) -> Result<(), Error> {
        let work: Vec<(usize, Kernel)> = self
            .steps
            .iter()
            .zip(&self.plan.steps)
            .enumerate()
            .filter_map(|(i, (exec, step))| match (exec, step) {
                (Exec::Jit { .. }, Step::Kernel { kernel, .. }) => Some((i, kernel.clone())),
                _ => None,
            })
            .collect();
        let (send, arrivals) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let threads = self.pool.threads();
        let compiler = std::thread::Builder::new()
            .name("atomc-upgrade".into())
            .spawn(move || {
                for (step, k) in work {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Ok(Some((kernel, source, schedule))) = compile_kernel(&k, &|k: &Kernel| planner.schedule(k), codegen, threads) {
                        let grain = search::cost::share_grain(&k, kernel.parallel_extent());
                        let upgrade = Upgrade { step, kernel, grain, tuned: source.is_record(), schedule: schedule.to_string() };
                        if send.send(upgrade).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| internal(format!("cannot start the background compiler thread: {e}")))?;
        self.upgrades = Some(Upgrades { arrivals, cancel, compiler: Some(compiler) });
        Ok(())
    }

    /// Whether a background compile (see [`Executable::upgrade_in_background`]) may still
    /// deliver kernels.
    pub fn is_upgrading(&self) -> bool {
        self.upgrades.is_some()
    }

    /// How many kernels background compiles have replaced so far.
    pub fn upgraded_kernels(&self) -> usize {
        self.upgraded
    }

    /// Blocks until the background compile has finished and swaps in every kernel it made.
    pub fn wait_for_upgrades(&mut self) {
        while let Some(up) = &self.upgrades {
            match up.arrivals.recv() {
                Ok(u) => self.swap_in(u),
                Err(_) => self.upgrades = None,
            }
        }
    }

    /// Swaps in the kernels the background compile has finished so far.
    fn apply_upgrades(&mut self) {
        while let Some(up) = &self.upgrades {
            match up.arrivals.try_recv() {
                Ok(u) => self.swap_in(u),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.upgrades = None,
            }
        }
    }

    fn swap_in(&mut self, u: Upgrade) {
        if let Some(Exec::Jit { kernel, extent, grain, tuned, schedule, .. }) = self.steps.get_mut(u.step)
            && kernel.inputs().len() == u.kernel.inputs().len()
        {
            *extent = u.kernel.parallel_extent();
            *kernel = u.kernel;
            *grain = u.grain;
            *tuned = u.tuned;
            *schedule = u.schedule;
            self.upgraded += 1;
        }
    }

    /// The graph it runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The memory plan.
    pub fn memory(&self) -> &MemoryPlan {
        &self.memory
    }

    /// How many kernels run as native code, and how many in all.
    pub fn compiled_kernels(&self) -> (usize, usize) {
        let native = self.steps.iter().filter(|s| matches!(s, Exec::Jit { .. })).count();
        (native, self.plan.num_kernels())
    }

    /// Whether a run allocates nothing (after the first): every step is a compiled kernel
    /// and every output has a static shape.
    pub fn is_allocation_free(&self) -> bool {
        self.steps.iter().all(|s| matches!(s, Exec::Jit { .. }))
            && self.memory.copied_outputs.iter().all(|(_, v)| !matches!(self.memory.location(*v), Some(Location::Dynamic)))
    }

    /// Runs on `inputs` (in the order of the graph's inputs, with exactly their dtypes and
    /// shapes), writing `outputs` (in the order of the graph's outputs) in place. An output
    /// whose dtype or shape is not the graph output's is replaced by a new tensor, so
    /// passing the previous run's outputs back makes the run allocation-free (see
    /// [`Executable::is_allocation_free`]).
    ///
    /// Kernels that a background compile has finished are swapped in first.
    pub fn run_into(&mut self, inputs: &[&Tensor], outputs: &mut [Tensor]) -> Result<(), Error> {
        self.apply_upgrades();
        let g = &self.graph;
        check_input_count(g, inputs.len())?;
        for (input, t) in g.inputs.iter().zip(inputs) {
            let name = g.name(input.value);
            if t.dtype() != input.dtype {
                return Err(ir::Error::InvalidInput(format!("input '{name}' must be {}, got {}", input.dtype, t.dtype())).into());
            }
            let shape = static_shape(g, input.value)?;
            if t.shape() != shape {
                return Err(ir::Error::InvalidInput(format!(
                    "input '{name}' must have shape {}, got {}",
                    fmt_shape(shape),
                    fmt_shape(t.shape())
                ))
                .into());
            }
        }
        if outputs.len() != g.outputs.len() {
            return Err(ir::Error::InvalidInput(format!(
                "the model has {} outputs, {} output tensors given",
                g.outputs.len(),
                outputs.len()
            ))
            .into());
        }
        for (&v, out) in g.outputs.iter().zip(outputs.iter_mut()) {
            if let Some(ir::graph::ValueType { dtype, shape: Some(shape) }) = &g.value(v).ty
                && (out.dtype() != *dtype || out.shape() != shape.as_slice())
            {
                *out = Tensor::zeros(*dtype, shape.clone())?;
            }
        }
        for (p, t) in self.in_ptrs.iter_mut().zip(inputs) {
            *p = t.byte_ptr().cast_mut();
        }
        for (p, t) in self.out_ptrs.iter_mut().zip(outputs.iter_mut()) {
            *p = t.byte_ptr_mut();
        }
        for i in 0..self.steps.len() {
            let start = self.profile.is_some().then(Instant::now);
            self.run_step(i, inputs)?;
            if let (Some(start), Some(times)) = (start, self.profile.as_mut()) {
                times[i] += start.elapsed();
            }
        }
        self.copy_outputs(inputs, outputs)?;
        self.dynamic.clear();
        Ok(())
    }

    /// How many compiled kernels have a schedule from a tuning record.
    pub fn tuned_kernels(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Exec::Jit { tuned: true, .. })).count()
    }

    /// Starts (or stops) timing every step of the following runs; starting resets the times.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![Duration::ZERO; self.steps.len()]);
    }

    /// The time of every step over the runs since profiling started, in plan order
    /// (`None` when not profiling).
    pub fn profile(&self) -> Option<Vec<StepTime>> {
        let times = self.profile.as_ref()?;
        Some(
            self.steps
                .iter()
                .zip(&self.plan.steps)
                .zip(times)
                .map(|((exec, step), &total)| {
                    let kind = match exec {
                        Exec::Jit { .. } => "kernel",
                        Exec::Eval { .. } => "evaluator",
                        Exec::Host { .. } => "host",
                    };
                    let name = match step {
                        Step::Kernel { kernel, .. } => kernel.name.clone(),
                        Step::Host { node } => self.graph.nodes.get(*node).map_or_else(String::new, |n| n.name.clone()),
                    };
                    let tuned = matches!(exec, Exec::Jit { tuned: true, .. });
                    let schedule = match exec {
                        Exec::Jit { schedule, .. } => Some(schedule.clone()),
                        _ => None,
                    };
                    StepTime { name, kind, tuned, schedule, total }
                })
                .collect(),
        )
    }

    /// Runs on `inputs` (in the order of the graph's inputs) and returns new output tensors.
    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
        let mut outputs: Vec<Tensor> = self.graph.outputs.iter().map(|_| Tensor::scalar(0f32)).collect();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        self.run_into(&refs, &mut outputs)?;
        Ok(outputs)
    }

    fn run_step(&mut self, i: usize, inputs: &[&Tensor]) -> Result<(), Error> {
        let (step, node) = match &mut self.steps[i] {
            Exec::Jit { kernel, table, patches, extent, grain, .. } => {
                for &(slot, io) in patches.iter() {
                    table.ptrs[slot] = match io {
                        Io::Input(k) => self.in_ptrs[k],
                        Io::Output(k) => self.out_ptrs[k],
                    };
                }
                let (kernel, table) = (&**kernel, &*table);
                self.pool.run(*extent, *grain, |begin, end| ffi::call(kernel, table, begin, end))?;
                return Ok(());
            }
            Exec::Eval { step } => (*step, None),
            Exec::Host { node } => (i, Some(*node)),
        };
        let Some(node) = node else {
            let Some(Step::Kernel { kernel, inputs: vals, output }) = self.plan.steps.get(step) else {
                return Err(internal("an evaluator step is not a kernel".into()));
            };
            let args: Vec<Arg> = vals.iter().map(|&v| self.read(v, inputs)).collect::<Result<_, _>>()?;
            let refs: Vec<&Tensor> = args.iter().map(Arg::tensor).collect();
            let where_ = || format!("kernel '{}'", kernel.name);
            ir::kernel::verify(kernel).map_err(|e| e.context(where_()))?;
            let t = kernel.eval(&refs).map_err(|e| e.context(where_()))?;
            drop(args);
            let output = *output;
            return self.write(output, t);
        };
        let g = &self.graph;
        let node = g.nodes.get(node).ok_or_else(|| internal("the plan names no node".into()))?;
        let args: Vec<Option<Arg>> =
            node.inputs.iter().map(|v| v.map(|v| self.read(v, inputs)).transpose()).collect::<Result<_, _>>()?;
        let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_ref().map(Arg::tensor)).collect();
        let outs = node
            .op
            .eval(&refs, node.outputs.len())
            .map_err(|e| e.context(format!("node '{}' ({})", node.name, node.op.kind.name())))?;
        drop(args);
        let vals: Vec<Option<ValueId>> = node.outputs.clone();
        for (v, t) in vals.into_iter().zip(outs) {
            if let Some(v) = v {
                self.write(v, t)?;
            }
        }
        Ok(())
    }

    /// Value `v` as a tensor (borrowed where it is one, else copied out of its buffer).
    fn read<'a>(&'a self, v: ValueId, inputs: &[&'a Tensor]) -> Result<Arg<'a>, Error> {
        let g = &self.graph;
        let from = |ptr: *const u8| -> Result<Arg<'a>, Error> {
            let ty = g.value(v).ty.as_ref().ok_or_else(|| internal(format!("value '{}' has no type", g.name(v))))?;
            let shape = static_shape(g, v)?.to_vec();
            Ok(Arg::Owned(ffi::read(ptr, static_bytes(g, v)?, ty.dtype, shape)?))
        };
        match self.memory.location(v) {
            Some(Location::Input(k)) => inputs.get(*k).map(|t| Arg::Borrowed(t)).ok_or_else(|| internal("input index".into())),
            Some(Location::Weight) => g
                .consts
                .get(&v)
                .map(|t| Arg::Borrowed(t.as_ref()))
                .ok_or_else(|| internal(format!("weight '{}' has no data", g.name(v)))),
            Some(Location::Dynamic) => self
                .dynamic
                .get(&v)
                .map(Arg::Borrowed)
                .ok_or_else(|| internal(format!("value '{}' read before it was computed", g.name(v)))),
            Some(Location::Output(k)) => from(self.out_ptrs[*k]),
            Some(Location::Arena { offset, .. }) => from(self.base.wrapping_add(*offset)),
            None => Err(internal(format!("value '{}' has no location", g.name(v)))),
        }
    }

    /// Stores `t` as the value `v` computed by an evaluator or host step.
    fn write(&mut self, v: ValueId, t: Tensor) -> Result<(), Error> {
        let g = &self.graph;
        match self.memory.location(v) {
            Some(Location::Dynamic) => {
                self.dynamic.insert(v, t);
            }
            Some(Location::Arena { offset, bytes }) => ffi::write(&t, self.base.wrapping_add(*offset), *bytes)?,
            Some(Location::Output(k)) => ffi::write(&t, self.out_ptrs[*k], static_bytes(g, v)?)?,
            // A value nobody reads.
            None => {}
            Some(Location::Input(_) | Location::Weight) => {
                return Err(internal(format!("a step writes '{}', an input or weight", g.name(v))));
            }
        }
        Ok(())
    }

    /// Copies the outputs no kernel wrote in place into the caller's tensors.
    fn copy_outputs(&mut self, inputs: &[&Tensor], outputs: &mut [Tensor]) -> Result<(), Error> {
        for k in 0..self.memory.copied_outputs.len() {
            let (i, v) = self.memory.copied_outputs[k];
            if matches!(self.memory.location(v), Some(Location::Dynamic)) {
                let t = self.dynamic.get(&v).cloned();
                let t = t.ok_or_else(|| internal(format!("output '{}' was not computed", self.graph.name(v))))?;
                *outputs.get_mut(i).ok_or_else(|| internal("output index".into()))? = t;
                continue;
            }
            let t = self.read(v, inputs)?;
            let bytes = static_bytes(&self.graph, v)?;
            ffi::write(t.tensor(), self.out_ptrs[i], bytes)?;
        }
        Ok(())
    }
}

/// A step argument: a tensor that exists, or a copy out of a buffer.
enum Arg<'a> {
    Borrowed(&'a Tensor),
    Owned(Tensor),
}

impl Arg<'_> {
    fn tensor(&self) -> &Tensor {
        match self {
            Arg::Borrowed(t) => t,
            Arg::Owned(t) => t,
        }
    }
}

fn static_shape(g: &Graph, v: ValueId) -> Result<&[usize], Error> {
    match &g.value(v).ty {
        Some(ir::graph::ValueType { shape: Some(s), .. }) => Ok(s),
        _ => Err(internal(format!("value '{}' has no static shape", g.name(v)))),
    }
}

/// The bytes of a value with a static type.
fn static_bytes(g: &Graph, v: ValueId) -> Result<usize, Error> {
    let dtype: DType = g.value(v).ty.as_ref().map(|t| t.dtype).ok_or_else(|| internal(format!("value '{}' has no type", g.name(v))))?;
    let n: usize = static_shape(g, v)?.iter().product();
    n.checked_mul(dtype.size()).ok_or_else(|| internal(format!("value '{}' is too large", g.name(v))))
}
