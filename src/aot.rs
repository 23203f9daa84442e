//! Ahead-of-time compilation (`atomc compile`): a model becomes an object file with a C
//! entry point, a header declaring it, and a JSON description, for static input shapes.
//!
//! The pipeline is the JIT's up to the kernels: import, specialize to the given shapes,
//! decompose into atoms ([`decompose_strict`]), partition into kernels, plan the memory
//! (`runtime::MemoryPlan`); then every weight a kernel reads is laid out in one blob
//! (64-byte aligned, native endian) and `codegen::cranelift::compile_object` compiles the
//! kernels and the step list into `<name>.o` for the host. With a `--target` triple
//! (`x86_64-unknown-linux-gnu` or `aarch64-unknown-linux-gnu`, feature `llvm`) the
//! schedules are chosen for that target's description (`targets::Target`: its vector
//! width, caches and cores) and `codegen::llvm::compile_object` emits the object for it,
//! with the same C API and header. A model with a host step (an op that is not
//! decomposed into atoms) or a kernel the code generator cannot compile is refused: the
//! object must run without atomc.
//!
//! Inputs may be bound to values ([`Options::bind`], `--bind NAME=FILE.npy`): each becomes
//! a constant of the graph before specialization ([`bind_inputs`]) and leaves the C API's
//! inputs. That is how a model whose shapes depend on input values (a `Resize`'s scales,
//! a `Range`'s bounds, a `OneHot`'s depth) gets the static shapes its kernels need: the
//! refusal of such a host step names the inputs to bind ([`Error::HostStep`]).

use crate::session::decompose_strict;
use codegen::cranelift::{BufferRef, OutputCopy, Program, ProgramStep, TensorDesc, compile_object};
use ir::graph::{Dim, Graph, ValueId};
use ir::infer::InputShapes;
use ir::partition::Step;
use ir::{Tensor, shape::fmt_shape};
use runtime::{Location, MemoryPlan};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Weights and arena slices start at multiples of this many bytes.
pub const ALIGN: usize = 64;

/// What to compile.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The C name prefix of the API (default: the model file stem as a C identifier).
    pub name: Option<String>,
    /// Shapes of inputs with symbolic dims (others may be listed, with their own shape).
    pub shapes: InputShapes,
    /// The tuning records to schedule kernels with (`None`: the default database when it
    /// exists). The object runs on one thread: records at 1 thread apply.
    pub db: Option<PathBuf>,
    /// The target triple (`None`: the host, with Cranelift); any other than the host's
    /// needs the LLVM backend (feature `llvm`).
    pub target: Option<String>,
    /// The CPU within the target: a `targets::Target` name of that architecture
    /// (`aarch64`, `neoverse-n1`) or `host` (default: the host when the target is the
    /// host's architecture, else the generic `aarch64`).
    pub cpu: Option<String>,
    /// Inputs bound to values: each becomes a constant before specialization (see
    /// [`bind_inputs`]); the object's inputs are the others, in the model's order.
    pub bind: Vec<(String, Tensor)>,
}

/// The triples `--target` accepts.
pub const TRIPLES: &[&str] = &["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

/// The code generator of an object and the machine it is for.
#[derive(Clone, Debug)]
pub enum ObjectBackend {
    /// Cranelift, for the host.
    Cranelift,
    /// LLVM, for `llvm` (the triple, LLVM CPU name and features of `target`).
    #[cfg(feature = "llvm")]
    Llvm { target: Box<targets::Target>, llvm: codegen::llvm::HostTarget },
}

impl ObjectBackend {
    /// The backend and target for `triple` and `cpu` (see [`Options`]).
    pub fn resolve(triple: Option<&str>, cpu: Option<&str>) -> Result<ObjectBackend, Error> {
        let host_triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let Some(triple) = triple else {
            return match cpu {
                None => Ok(ObjectBackend::Cranelift),
                Some(_) => Err(Error::Target("--cpu needs --target".into())),
            };
        };
        if !TRIPLES.contains(&triple) {
            return Err(Error::Target(format!("unknown target '{triple}' (supported: {})", TRIPLES.join(", "))));
        }
        #[cfg(not(feature = "llvm"))]
        {
            if triple == host_triple && cpu.is_none_or(|c| c == "host") {
                Ok(ObjectBackend::Cranelift)
            } else {
                Err(Error::Target(format!(
                    "compiling for {triple}{} needs the LLVM backend: build atomc with `--features llvm`",
                    cpu.map(|c| format!(" ({c})")).unwrap_or_default()
                )))
            }
        }
        #[cfg(feature = "llvm")]
        {
            llvm_target(triple, cpu, &host_triple)
        }
    }

    /// The planner whose schedules suit this backend's target (one thread).
    pub fn planner(&self) -> search::Planner {
        match self {
            ObjectBackend::Cranelift => search::Planner::host_cranelift(1),
            #[cfg(feature = "llvm")]
            ObjectBackend::Llvm { target, .. } => search::Planner::new((**target).clone(), 1),
        }
    }

    /// The triple and CPU the object is for, and the code generator's name.
    pub fn describe(&self) -> (String, String, &'static str) {
        match self {
            ObjectBackend::Cranelift => {
                let t = targets::Target::host();
                (t.triple, t.cpu_model, "cranelift")
            }
            #[cfg(feature = "llvm")]
            ObjectBackend::Llvm { llvm, .. } => (llvm.triple.clone(), llvm.cpu.clone(), "llvm"),
        }
    }
}

/// The LLVM backend for `triple` (one of [`TRIPLES`]) and `cpu`.
#[cfg(feature = "llvm")]
fn llvm_target(triple: &str, cpu: Option<&str>, host_triple: &str) -> Result<ObjectBackend, Error> {
    use codegen::llvm::HostTarget;
    let arch = triple.split('-').next().unwrap_or_default();
    let native = triple == host_triple;
    let host = || -> Result<ObjectBackend, Error> {
        let llvm = HostTarget::detect().map_err(|e| Error::Target(format!("LLVM does not support this host: {e}")))?;
        let bits = 32 * u32::try_from(llvm.f32_lanes()).unwrap_or(4);
        let mut target = targets::Target::host().with_vector_bits(bits);
        target.triple = triple.to_string();
        Ok(ObjectBackend::Llvm { target: Box::new(target), llvm: llvm.clone() })
    };
    let named = |name: &str| -> Result<ObjectBackend, Error> {
        let known: Vec<&str> = targets::Target::NAMES
            .iter()
            .copied()
            .filter(|n| targets::Target::named(n).is_some_and(|t| *n != "host" && t.triple == triple))
            .collect();
        let target = targets::Target::named(name).filter(|t| name != "host" && t.triple == triple).ok_or_else(|| {
            let host = if native { "host, " } else { "" };
            Error::Target(format!("unknown CPU '{name}' for {triple} (known: {host}{})", known.join(", ")))
        })?;
        let mut features = vec!["+neon".to_string(), "+fp-armv8".to_string()];
        for f in &target.features {
            let llvm = match f.as_str() {
                "fp16" => "fullfp16",
                "dotprod" | "lse" | "rcpc" => f.as_str(),
                _ => continue,
            };
            features.push(format!("+{llvm}"));
        }
        let cpu = if name == "aarch64" { "generic" } else { name };
        let llvm = HostTarget { triple: triple.to_string(), cpu: cpu.to_string(), features: features.join(",") };
        Ok(ObjectBackend::Llvm { target: Box::new(target), llvm })
    };
    match (arch, cpu) {
        (_, Some("host")) | (_, None) if native => host(),
        (_, Some("host")) => Err(Error::Target(format!("--cpu host: this host is not {triple}"))),
        ("aarch64", None) => named("aarch64"),
        ("aarch64", Some(name)) => named(name),
        _ => Err(Error::Target(format!(
            "{triple} objects are compiled for this host's CPU only, and this host is {host_triple}"
        ))),
    }
}

/// What `compile` wrote.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub name: String,
    pub object: PathBuf,
    pub header: PathBuf,
    pub json: PathBuf,
    pub kernels: usize,
    pub weight_bytes: usize,
    pub workspace_bytes: usize,
    pub inputs: Vec<TensorDesc>,
    pub outputs: Vec<TensorDesc>,
    /// Kernels whose schedule came from a tuning record.
    pub tuned_kernels: usize,
    /// Lines of the tuning records that were skipped (`file:line: why`).
    pub records_warnings: Vec<String>,
    /// The triple and CPU the object is for, and the code generator (`cranelift`, `llvm`).
    pub target: String,
    pub cpu: String,
    pub backend: &'static str,
}

/// Errors of ahead-of-time compilation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ir(#[from] ir::Error),
    #[error(transparent)]
    Session(#[from] crate::session::Error),
    #[error("memory plan: {0}")]
    Memory(#[from] runtime::memory::Error),
    #[error("code generation: {0}")]
    Codegen(#[from] codegen::Error),
    #[error("input '{input}' has symbolic dim '{dim}': give its shape with --shape {input}=DIMS")]
    MissingShape { input: String, dim: String },
    #[error("--shape names '{0}', which is not an input of the model (its inputs: {1})")]
    UnknownInput(String, String),
    #[error(
        "node '{node}' ({op}) runs on the host (it was not decomposed into kernels): \
         ahead-of-time compilation supports models made only of kernels{}",
        bind_hint(.bind)
    )]
    HostStep {
        node: String,
        op: String,
        /// The graph inputs its output shape depends on: bound to values
        /// ([`Options::bind`]), they may let it lower to kernels (empty: none).
        bind: Vec<String>,
    },
    #[error("--bind names '{0}', which is not an input of the model (its inputs: {1})")]
    UnknownBind(String, String),
    #[error("--bind {input}: {why}")]
    BadBind { input: String, why: String },
    #[error("--bind {input}: {source}")]
    BindFile {
        input: String,
        source: crate::npy::NpyError,
    },
    #[error("value '{0}' has no static type after specialization")]
    Untyped(String),
    #[error("{0}")]
    Target(String),
    #[error("'{0}' is not a C identifier (letters, digits and '_', not starting with a digit)")]
    BadName(String),
    #[error("{what} '{path}': {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The `HostStep` message's advice to bind the inputs `names` (nothing when empty).
fn bind_hint(names: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let list: Vec<String> = names.iter().map(|n| format!("--bind {n}=FILE.npy")).collect();
    format!("; its output shape depends on the values of input(s) {}: binding them may let it compile ({})",
        names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "), list.join(" "))
}

/// Reads a `--bind` spec `NAME=FILE.npy`: the input's name and its value.
pub fn read_binding(spec: &str) -> Result<(String, Tensor), Error> {
    let (name, file) = spec.split_once('=').filter(|(n, f)| !n.is_empty() && !f.is_empty()).ok_or_else(|| Error::BadBind {
        input: spec.to_string(),
        why: "expected NAME=FILE.npy".into(),
    })?;
    let t = crate::npy::read(Path::new(file)).map_err(|source| Error::BindFile { input: name.to_string(), source })?;
    Ok((name.to_string(), t))
}

/// `graph` with each input named in `bound` replaced by a constant of its value (and
/// removed from the inputs). A value must have the input's dtype and rank, its declared
/// fixed dims, and one size per symbolic dim across the bound inputs; the remaining inputs
/// take those sizes for the symbols they share.
pub fn bind_inputs(graph: &Graph, bound: &[(String, Tensor)]) -> Result<Graph, Error> {
    let mut g = graph.clone();
    let mut symbols: HashMap<String, (usize, String)> = HashMap::new();
    for (k, (name, t)) in bound.iter().enumerate() {
        let bad = |why: String| Error::BadBind { input: name.clone(), why };
        if bound[..k].iter().any(|(n, _)| n == name) {
            return Err(bad("the input is bound more than once".into()));
        }
        let Some(pos) = g.inputs.iter().position(|i| g.name(i.value) == name) else {
            let names: Vec<&str> = graph.inputs.iter().map(|i| graph.name(i.value)).collect();
            return Err(Error::UnknownBind(name.clone(), names.join(", ")));
        };
        let input = &g.inputs[pos];
        let declared = ir::infer::fmt_dims(&input.dims);
        if t.dtype() != input.dtype {
            return Err(bad(format!("the value is {} but the model declares the input as {}{declared}", t.dtype(), input.dtype)));
        }
        let shape = t.shape();
        let mismatch = || bad(format!("the value has shape {} but the model declares {declared}", fmt_shape(shape)));
        if shape.len() != input.dims.len() {
            return Err(mismatch());
        }
        for (d, &n) in input.dims.iter().zip(shape) {
            match d {
                Dim::Fixed(m) if *m != n => return Err(mismatch()),
                Dim::Fixed(_) => {}
                Dim::Symbol(s) => match symbols.get(s) {
                    Some((prev, who)) if *prev != n => {
                        return Err(bad(format!("dim '{s}' is {n} here but {prev} in the value bound to '{who}'")));
                    }
                    Some(_) => {}
                    None => {
                        symbols.insert(s.clone(), (n, name.clone()));
                    }
                },
            }
        }
        let input = g.inputs.remove(pos);
        g.consts.insert(input.value, Arc::new(t.clone()));
    }
    for input in &mut g.inputs {
        for d in &mut input.dims {
            if let Dim::Symbol(s) = d
                && let Some(&(n, _)) = symbols.get(s.as_str())
            {
                *d = Dim::Fixed(n);
            }
        }
    }
    Ok(g)
}

/// The operands of a host op whose values determine its output shape (so that, constant,
/// they let the rewrite rules lower it to kernels): a table of the ops with such rules,
/// else every integer operand after the first.
fn shape_operands(g: &Graph, node: &ir::graph::Node) -> Vec<ValueId> {
    let fixed: Option<&[usize]> = match node.op.kind.name() {
        "Resize" => Some(&[1, 2, 3]),
        "Upsample" => Some(&[1]),
        "Range" => Some(&[0, 1, 2]),
        "OneHot" => Some(&[1]),
        _ => None,
    };
    let operands = node.inputs.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i, v)));
    match fixed {
        Some(at) => operands.filter(|(i, _)| at.contains(i)).map(|(_, v)| v).collect(),
        None => operands
            .filter(|&(i, v)| i > 0 && g.value(v).ty.as_ref().is_some_and(|t| t.dtype.is_int()))
            .map(|(_, v)| v)
            .collect(),
    }
}

/// The graph inputs (by name, in the graph's order) that the values `from` depend on.
fn input_ancestors(g: &Graph, from: Vec<ValueId>) -> Vec<String> {
    let producer: HashMap<ValueId, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().flatten().map(move |&v| (v, i)))
        .collect();
    let mut seen: HashSet<ValueId> = HashSet::new();
    let mut stack = from;
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        if let Some(&n) = producer.get(&v) {
            stack.extend(g.nodes[n].inputs.iter().flatten().copied());
        }
    }
    g.inputs.iter().filter(|i| seen.contains(&i.value)).map(|i| g.name(i.value).to_string()).collect()
}

/// The C identifier made from a file stem: other characters become `_`, a leading digit
/// gets a `_` before it, an empty stem gives `model`.
pub fn c_identifier(stem: &str) -> String {
    let mut s: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if s.is_empty() {
        s = "model".into();
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn is_c_identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Compiles the model at `path` into `out_dir/<name>.{o,h,json}`.
pub fn compile(path: &Path, out_dir: &Path, opts: &Options) -> Result<Artifacts, Error> {
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => c_identifier(&path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
    };
    if !is_c_identifier(&name) {
        return Err(Error::BadName(name));
    }
    let backend = ObjectBackend::resolve(opts.target.as_deref(), opts.cpu.as_deref())?;
    let model = ir::onnx::import_file(path)?;
    let graph = bind_inputs(&model.graph, &opts.bind)?;
    let mut shapes = opts.shapes.clone();
    for (input, t) in &opts.bind {
        match shapes.remove(input) {
            Some(s) if s != t.shape() => {
                return Err(Error::BadBind {
                    input: input.clone(),
                    why: format!("the value has shape {} but --shape gives {}", fmt_shape(t.shape()), fmt_shape(&s)),
                });
            }
            _ => {}
        }
    }
    let planner = crate::tuning::with_db(backend.planner(), opts.db.as_deref()).map_err(crate::session::Error::from)?;
    let built = build_for(&graph, &name, &shapes, &planner, &backend)?;
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        what: "cannot create",
        path: out_dir.to_path_buf(),
        source,
    })?;
    let object = out_dir.join(format!("{name}.o"));
    let header = out_dir.join(format!("{name}.h"));
    let json = out_dir.join(format!("{name}.json"));
    let write = |p: &Path, bytes: &[u8]| {
        std::fs::write(p, bytes).map_err(|source| Error::Io {
            what: "cannot write",
            path: p.to_path_buf(),
            source,
        })
    };
    write(&object, &built.object)?;
    write(&header, header_text(&name, &built.program).as_bytes())?;
    let desc = |t: &TensorDesc| {
        serde_json::json!({
            "name": t.name,
            "dtype": t.dtype.name(),
            "dtype_code": t.dtype.onnx_code(),
            "shape": t.shape,
        })
    };
    let (triple, cpu, codegen) = backend.describe();
    let j = serde_json::json!({
        "name": name,
        "target": &triple,
        "cpu": &cpu,
        "backend": codegen,
        "model": path.display().to_string(),
        "object": format!("{name}.o"),
        "header": format!("{name}.h"),
        "inputs": built.program.inputs.iter().map(desc).collect::<Vec<_>>(),
        "bound": opts.bind.iter().map(|(n, t)| serde_json::json!({
            "name": n,
            "dtype": t.dtype().name(),
            "shape": t.shape(),
        })).collect::<Vec<_>>(),
        "outputs": built.program.outputs.iter().map(desc).collect::<Vec<_>>(),
        "workspace_bytes": built.program.workspace_bytes,
        "workspace_align": ALIGN,
        "weight_bytes": built.weight_bytes,
        "kernels": built.kernels,
        "tuned_kernels": built.tuned_kernels,
    });
    let text = serde_json::to_string_pretty(&j).map_err(|e| ir::Error::Internal(format!("JSON: {e}")))?;
    write(&json, format!("{text}\n").as_bytes())?;
    Ok(Artifacts {
        name,
        object,
        header,
        json,
        kernels: built.kernels,
        weight_bytes: built.weight_bytes,
        workspace_bytes: built.program.workspace_bytes,
        inputs: built.program.inputs,
        outputs: built.program.outputs,
        tuned_kernels: built.tuned_kernels,
        records_warnings: crate::tuning::warnings(&planner).to_vec(),
        target: triple,
        cpu,
        backend: codegen,
    })
}

/// A compiled model in memory.
pub struct Built {
    pub object: Vec<u8>,
    pub program: Program,
    pub kernels: usize,
    /// Kernels whose schedule came from a tuning record.
    pub tuned_kernels: usize,
    pub weight_bytes: usize,
}

/// [`build_planned`] with the heuristic schedules (no tuning records).
pub fn build(graph: &Graph, name: &str, shapes: &InputShapes) -> Result<Built, Error> {
    build_planned(graph, name, shapes, &search::Planner::host_cranelift(1))
}

/// Specializes `graph` to `shapes` and compiles it with Cranelift into an object for the
/// host exporting `name_*`, each kernel with the schedule `planner` picks.
pub fn build_planned(graph: &Graph, name: &str, shapes: &InputShapes, planner: &search::Planner) -> Result<Built, Error> {
    build_for(graph, name, shapes, planner, &ObjectBackend::Cranelift)
}

/// [`build_planned`] with the code generator and target of `backend` (`planner` should be
/// [`ObjectBackend::planner`]'s, possibly with records).
pub fn build_for(
    graph: &Graph,
    name: &str,
    shapes: &InputShapes,
    planner: &search::Planner,
    backend: &ObjectBackend,
) -> Result<Built, Error> {
    let Lowered { kernels, mut program, mut weights } = lower_program(graph, shapes)?;
    let (mut schedules, sources): (Vec<_>, Vec<_>) = kernels.iter().map(|k| planner.schedule(k)).unzip();
    if matches!(backend, ObjectBackend::Cranelift) {
        prepare_winograd(&kernels, &mut schedules, &mut program, &mut weights, &planner.target);
    }
    let object = match backend {
        ObjectBackend::Cranelift => compile_object(name, &kernels, &schedules, &program, &weights)?,
        #[cfg(feature = "llvm")]
        ObjectBackend::Llvm { llvm, .. } => {
            codegen::llvm::compile_object(name, &kernels, &schedules, &program, &weights, llvm)?
        }
    };
    Ok(Built {
        object,
        program,
        kernels: kernels.len(),
        tuned_kernels: sources.iter().filter(|s| s.is_record()).count(),
        weight_bytes: weights.len(),
    })
}

/// Gives every step whose kernel runs under a Winograd schedule the transformed filters it
/// reads (`WinogradConv::transform_filters`, appended to the weight blob), as the JIT
/// runtime prepares them once; a kernel whose weights are not in the blob (an input) gets
/// the heuristic schedule of `target` instead.
fn prepare_winograd(
    kernels: &[ir::kernel::Kernel],
    schedules: &mut [ir::schedule::Schedule],
    program: &mut Program,
    weights: &mut Vec<u8>,
    target: &targets::Target,
) {
    for step in &mut program.steps {
        let (Some(k), Some(s)) = (kernels.get(step.kernel), schedules.get_mut(step.kernel)) else { continue };
        let Some(conv) = s.winograd().then(|| ir::winograd::WinogradConv::of(k).ok()).flatten() else { continue };
        let filters = match (step.buffers.get(conv.weights), k.inputs.get(conv.weights)) {
            (Some(&BufferRef::Weight(off)), Some(b)) => {
                weights.get(off..off.saturating_add(b.numel.saturating_mul(4))).and_then(|w| conv.transform_filters(w))
            }
            _ => None,
        };
        let Some(u) = filters else {
            *s = search::default_schedule(k, target);
            continue;
        };
        let at = weights.len().next_multiple_of(ALIGN);
        weights.resize(at, 0);
        weights.extend(u.iter().flat_map(|x| x.to_ne_bytes()));
        step.prepared = Some((BufferRef::Weight(at), u.len() * 4));
    }
}

/// A model lowered to kernels and the static step list that runs them, before code
/// generation (shared by the object and the GPU targets).
pub struct Lowered {
    /// The kernels, in the order of the steps that call them (one step each).
    pub kernels: Vec<ir::kernel::Kernel>,
    pub program: Program,
    /// The weight blob (`BufferRef::Weight` offsets into it), [`ALIGN`]-aligned entries.
    pub weights: Vec<u8>,
}

/// Specializes `graph` to `shapes` (every input needs a static shape), decomposes it into
/// atoms, partitions it into kernels and plans its memory; a host step is an error.
pub fn lower_program(graph: &Graph, shapes: &InputShapes) -> Result<Lowered, Error> {
    let mut full = InputShapes::new();
    for given in shapes.keys() {
        if !graph.inputs.iter().any(|i| graph.name(i.value) == given) {
            let names: Vec<&str> = graph.inputs.iter().map(|i| graph.name(i.value)).collect();
            return Err(Error::UnknownInput(given.clone(), names.join(", ")));
        }
    }
    for input in &graph.inputs {
        let iname = graph.name(input.value);
        let shape = match shapes.get(iname) {
            Some(s) => s.clone(),
            None => match input.dims.iter().find_map(|d| match d {
                Dim::Symbol(s) => Some(s.clone()),
                Dim::Fixed(_) => None,
            }) {
                Some(dim) => {
                    return Err(Error::MissingShape {
                        input: iname.to_string(),
                        dim,
                    });
                }
                None => input.dims.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { 0 }).collect(),
            },
        };
        full.insert(iname.to_string(), shape);
    }
    let spec = ir::infer::specialize(graph, &full)?;
    let g = decompose_strict(&spec)?;
    let plan = ir::partition::partition(&g)?;
    if let Some(&Step::Host { node }) = plan.steps.iter().find(|s| matches!(s, Step::Host { .. })) {
        return Err(host_step(&g, node));
    }
    let mp = MemoryPlan::new(&g, &plan)?;

    let desc = |v: ValueId| -> Result<TensorDesc, Error> {
        let ty = g.value(v).ty.as_ref().ok_or_else(|| Error::Untyped(g.name(v).to_string()))?;
        let shape = ty.shape.clone().ok_or_else(|| Error::Untyped(g.name(v).to_string()))?;
        Ok(TensorDesc {
            name: g.name(v).to_string(),
            dtype: ty.dtype,
            shape,
        })
    };
    let inputs = g.inputs.iter().map(|i| desc(i.value)).collect::<Result<Vec<_>, _>>()?;
    let outputs = g.outputs.iter().map(|&v| desc(v)).collect::<Result<Vec<_>, _>>()?;

    let mut weights: Vec<u8> = Vec::new();
    let mut weight_at: HashMap<ValueId, usize> = HashMap::new();
    let mut place_weight = |v: ValueId| -> Result<usize, Error> {
        if let Some(&o) = weight_at.get(&v) {
            return Ok(o);
        }
        let t = g
            .consts
            .get(&v)
            .ok_or_else(|| ir::Error::Internal(format!("weight '{}' has no value", g.name(v))))?;
        let off = weights.len().next_multiple_of(ALIGN);
        weights.resize(off, 0);
        weights.extend(tensor_bytes(t));
        weight_at.insert(v, off);
        Ok(off)
    };
    let mut buffer = |v: ValueId| -> Result<BufferRef, Error> {
        Ok(match mp.location(v) {
            Some(Location::Input(i)) => BufferRef::Input(*i),
            Some(Location::Output(i)) => BufferRef::Output(*i),
            Some(Location::Arena { offset, .. }) => BufferRef::Workspace(*offset),
            Some(Location::Weight) => BufferRef::Weight(place_weight(v)?),
            Some(Location::Dynamic) | None => {
                return Err(ir::Error::Internal(format!("value '{}' has no static location", g.name(v))).into());
            }
        })
    };
    let mut kernels = Vec::new();
    let mut steps = Vec::new();
    for s in &plan.steps {
        match s {
            Step::Kernel { kernel, inputs, output } => {
                let mut buffers = inputs.iter().map(|&v| buffer(v)).collect::<Result<Vec<_>, _>>()?;
                buffers.push(buffer(*output)?);
                steps.push(ProgramStep {
                    kernel: kernels.len(),
                    buffers,
                    prepared: None,
                });
                kernels.push(kernel.clone());
            }
            Step::Host { node } => return Err(host_step(&g, *node)),
        }
    }
    let mut copies = Vec::new();
    for &(i, v) in &mp.copied_outputs {
        let from = buffer(v)?;
        let bytes = outputs[i]
            .bytes()
            .ok_or_else(|| ir::Error::Internal(format!("output '{}' is too large", outputs[i].name)))?;
        copies.push(OutputCopy { output: i, from, bytes });
    }
    let program = Program {
        steps,
        copies,
        workspace_bytes: mp.arena_bytes,
        inputs,
        outputs,
    };
    Ok(Lowered { kernels, program, weights })
}

/// The error for host step `node` of `g`, naming the inputs its shape depends on.
fn host_step(g: &Graph, node: usize) -> Error {
    match g.nodes.get(node) {
        Some(n) => Error::HostStep {
            node: n.name.clone(),
            op: n.op.kind.name().to_string(),
            bind: input_ancestors(g, shape_operands(g, n)),
        },
        None => Error::HostStep { node: format!("#{node}"), op: "?".into(), bind: Vec::new() },
    }
}

/// The elements of `t`, native endian (bool as one byte 0/1).
fn tensor_bytes(t: &ir::Tensor) -> Vec<u8> {
    match t.data() {
        ir::Data::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::F64(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::F16(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::BF16(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::I8(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::U8(v) => v.clone(),
        ir::Data::I16(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::U16(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::I32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::U32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::I64(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::U64(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
    }
}

/// The C header declaring the API of `<name>.o`.
fn header_text(name: &str, p: &Program) -> String {
    let guard = format!("{}_H", name.to_ascii_uppercase());
    let list = |ts: &[TensorDesc]| {
        ts.iter()
            .enumerate()
            .map(|(i, t)| {
                let dims: Vec<String> = t.shape.iter().map(usize::to_string).collect();
                format!(
                    " *   {i}: \"{}\" {} (dtype {}) [{}], {} bytes\n",
                    t.name.replace("*/", "* /"),
                    t.dtype.name(),
                    t.dtype.onnx_code(),
                    dims.join(", "),
                    t.bytes().unwrap_or(0)
                )
            })
            .collect::<String>()
    };
    format!(
        r#"/* {name}.h: generated by atomc; the API of {name}.o (link: cc main.c {name}.o -lm).
 *
 * Inputs:
{inputs} * Outputs:
{outputs} *
 * Dtype codes are ONNX TensorProto codes: 1 float, 6 int32, 7 int64, 9 bool (1 byte).
 * Tensors are dense, row-major, native endian.
 *
 * Workspace: the caller allocates {name}_workspace_size() ({ws}) bytes aligned to 64
 * (e.g. aligned_alloc(64, size rounded up to 64)) and passes it to every call. It needs
 * no initialization, may be reused across calls, and must not be shared by calls that run
 * at the same time. The weights are inside the object: nothing else is read at run time.
 */
#ifndef {guard}
#define {guard}

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

/* Runs the model: inputs[i] points to input i, outputs[i] to the caller's buffer for
 * output i (which must not overlap the inputs). Returns 0 on success, else a nonzero code:
 * 1 a Gather position out of range, 2 a load out of bounds, 3 an integer division by zero. */
int {name}_run(const void* const* inputs, void* const* outputs, void* workspace);

/* The bytes of workspace {name}_run needs (possibly 0). */
size_t {name}_workspace_size(void);

int {name}_num_inputs(void);
int {name}_num_outputs(void);

/* Descriptions of input/output i; NULL, -1 or 0 for an i out of range. */
const char* {name}_input_name(int i);
int {name}_input_dtype(int i);
int {name}_input_rank(int i);
const int64_t* {name}_input_shape(int i);
size_t {name}_input_bytes(int i);
const char* {name}_output_name(int i);
int {name}_output_dtype(int i);
int {name}_output_rank(int i);
const int64_t* {name}_output_shape(int i);
size_t {name}_output_bytes(int i);

#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
"#,
        inputs = list(&p.inputs),
        outputs = list(&p.outputs),
        ws = p.workspace_bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_identifiers() {
        assert_eq!(c_identifier("resnet-style.v2"), "resnet_style_v2");
        assert_eq!(c_identifier("3net"), "_3net");
        assert_eq!(c_identifier(""), "model");
        assert!(is_c_identifier("mlp"));
        assert!(!is_c_identifier("1x"));
    }

    fn f32s(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    #[test]
    fn a_host_step_names_the_inputs_its_shape_depends_on() {
        let g = ir::text::parse(
            "graph {\n  input %x: f32[1,1,2,2]\n  input %s: f32[4]\n  input %t: f32[4]\n  %u = Add@14 \"add\" (%s, %t)\n  \
             %y = Resize@13 \"r\" (%x, _, %u)\n  output %y\n}\n",
        )
        .unwrap();
        match build(&g, "m", &InputShapes::new()) {
            Err(Error::HostStep { node, bind, .. }) => {
                assert_eq!(node, "r");
                assert_eq!(bind, ["s", "t"], "both inputs reach the scales through the Add");
            }
            other => panic!("expected a host step, got {:?}", other.map(|b| b.kernels)),
        }
        let half = f32s(vec![4], vec![0.5, 0.5, 0.75, 0.5]);
        let bound = bind_inputs(&g, &[("s".into(), half.clone()), ("t".into(), half)]).unwrap();
        let built = build(&bound, "m", &InputShapes::new()).unwrap();
        assert_eq!(built.program.inputs.len(), 1);
        assert_eq!(built.program.outputs[0].shape, [1, 1, 3, 2], "scales 1, 1, 1.5, 1");
    }

    #[test]
    fn bound_values_must_agree_on_shared_dims() {
        let g = ir::text::parse(
            "graph {\n  input %a: f32[n]\n  input %b: f32[n]\n  %y = Add@14 \"add\" (%a, %b)\n  output %y\n}\n",
        )
        .unwrap();
        let err = bind_inputs(&g, &[("a".into(), f32s(vec![2], vec![0.0; 2])), ("b".into(), f32s(vec![3], vec![0.0; 3]))])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--bind b: dim 'n' is 3 here but 2 in the value bound to 'a'"), "{err}");
    }
}
