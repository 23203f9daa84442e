//! The ONNX backend node tests (from the `onnx==1.22.0` wheel, fetched by
//! `scripts/fetch-onnx-node-tests.sh`) run against a backend, compared with rtol 1e-3 /
//! atol 1e-4 (exact for integers and bools).
//!
//! `tests/conformance/allowlist.txt` lists the tests that must pass: one of them failing
//! fails this target. Tests that pass but are not listed are reported so the list can grow
//! (`ATOMC_BLESS=1` rewrites it). `ATOMC_NODE_FILTER=substr` runs a subset. Without the
//! data the target says so and passes, unless `ATOMC_REQUIRE_DATA=1` (set by the test
//! script and CI), where missing data is a failure.

mod common;

use atomc::session::Backend;
use ir::{DType, Tensor};
use prost::Message;
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn data_dir() -> PathBuf {
    match std::env::var_os("ATOMC_ONNX_NODE_TESTS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cache/onnx-1.22.0/onnx/backend/test/data/node"),
    }
}

fn read_pb(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let proto = ir::onnx::proto::TensorProto::decode(bytes.as_slice()).map_err(|e| format!("{}: {e}", path.display()))?;
    ir::onnx::tensor_from_proto(&proto, None).map_err(|e| format!("{}: {e}", path.display()))
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v = vec![];
    for i in 0.. {
        let p = dir.join(format!("{prefix}_{i}.pb"));
        if !p.exists() {
            break;
        }
        v.push(p);
    }
    v
}


/// Runs one node test; `Ok(true)` when it passed with some node left high-level (a host op
/// or a data-dependent shape, run by the interpreter).
fn run_test(dir: &Path, backend: Backend) -> Result<bool, String> {
    let mut host_ops = false;
    let model = ir::onnx::import_file(&dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let data = dir.join("test_data_set_0");
    let inputs: Vec<Tensor> = numbered(&data, "input").iter().map(|p| read_pb(p)).collect::<Result<_, _>>()?;
    let wants: Vec<Tensor> = numbered(&data, "output").iter().map(|p| read_pb(p)).collect::<Result<_, _>>()?;
    let g = &model.graph;
    if inputs.len() != g.inputs.len() {
        return Err(format!("{} inputs in the data, {} in the model", inputs.len(), g.inputs.len()));
    }
    let shapes = g.inputs.iter().zip(&inputs).map(|(i, t)| (g.name(i.value).to_string(), t.shape().to_vec())).collect();
    let specialized = ir::infer::specialize(g, &shapes).map_err(|e| e.to_string())?;
    let got = match backend {
        Backend::Interp => ir::interp::run(&specialized, inputs).map_err(|e| e.to_string())?,
        _ => {
            // Only host ops and data-dependent shapes may stay high-level.
            let g = atomc::session::decompose_strict(&specialized).map_err(|e| e.to_string())?;
            host_ops = has_host_ops(&g);
            if host_ops {
                // Node tests pass shapes, axes, pads and scales as runtime inputs, which makes
                // shapes data-dependent. A deployed model has them as constants: freeze them
                // and require the then static graph to decompose and match too.
                let frozen = run_frozen(&model.graph, &inputs, &wants, backend)?;
                host_ops = frozen;
            }
            run_atoms(&g, inputs, backend)?
        }
    };
    if got.len() != wants.len() {
        return Err(format!("{} outputs, expected {}", got.len(), wants.len()));
    }
    for (k, (a, b)) in got.iter().zip(&wants).enumerate() {
        common::compare_elementwise(a, b).map_err(|e| format!("output {k}: {e}"))?;
    }
    Ok(host_ops)
}

/// Runs an atom graph on interp-atoms (the interpreter), interp-kernels (partitioned) or
/// cranelift or llvm (partitioned and compiled).
fn run_atoms(g: &ir::Graph, inputs: Vec<Tensor>, backend: Backend) -> Result<Vec<Tensor>, String> {
    if let Some(codegen) = backend.codegen() {
        let pool = std::sync::Arc::new(runtime::ThreadPool::new(2).map_err(|e| e.to_string())?);
        let mut exec =
            runtime::Executable::from_graph_with(g.clone(), pool, codegen).map_err(|e| format!("compile: {e}"))?;
        return exec.run(inputs).map_err(|e| e.to_string());
    }
    if backend == Backend::InterpKernels {
        let plan = ir::partition::partition(g).map_err(|e| format!("partition: {e}"))?;
        ir::partition::run_plan(g, &plan, inputs).map_err(|e| e.to_string())
    } else {
        ir::interp::run(g, inputs).map_err(|e| e.to_string())
    }
}

fn has_host_ops(g: &ir::Graph) -> bool {
    g.nodes.iter().any(|n| !matches!(n.op.kind, ir::OpKind::Atom(_)))
}

/// Runs the test on `backend` (interp-atoms or interp-kernels) with its integer inputs (and small float ones, and bool
/// flags) turned into constants; `Ok(true)` when some node still stays high-level.
fn run_frozen(graph: &ir::Graph, inputs: &[Tensor], wants: &[Tensor], backend: Backend) -> Result<bool, String> {
    let mut g = graph.clone();
    let mut feeds = Vec::new();
    let mut kept = Vec::new();
    for (input, t) in graph.inputs.iter().zip(inputs) {
        // Integer inputs, and float scalars or short vectors (scales, window parameters).
        let small_float = t.dtype().is_float() && t.rank() <= 1 && t.numel() <= 8;
        let flag = t.dtype() == DType::Bool && t.numel() == 1;
        if matches!(t.dtype(), DType::I64 | DType::I32) || small_float || flag {
            g.consts.insert(input.value, std::sync::Arc::new(t.clone()));
        } else {
            kept.push(input.clone());
            feeds.push(t.clone());
        }
    }
    g.inputs = kept;
    let shapes = g.inputs.iter().zip(&feeds).map(|(i, t)| (g.name(i.value).to_string(), t.shape().to_vec())).collect();
    let specialized = ir::infer::specialize(&g, &shapes).map_err(|e| format!("with shape-like inputs frozen: {e}"))?;
    let d = atomc::session::decompose_strict(&specialized).map_err(|e| format!("with shape-like inputs frozen: {e}"))?;
    let got = run_atoms(&d, feeds, backend).map_err(|e| format!("with shape-like inputs frozen: {e}"))?;
    for (k, (a, b)) in got.iter().zip(wants).enumerate() {
        common::compare_elementwise(a, b).map_err(|e| format!("with shape-like inputs frozen: output {k}: {e}"))?;
    }
    if has_host_ops(&d) && std::env::var("ATOMC_VERBOSE").is_ok_and(|v| v == "1") {
        let ops: Vec<&str> = d.nodes.iter().filter(|n| !matches!(n.op.kind, ir::OpKind::Atom(_))).map(|n| n.op.kind.name()).collect();
        println!("HOST {}", ops.join(" "));
    }
    Ok(has_host_ops(&d))
}

fn main() -> ExitCode {
    let require = std::env::var("ATOMC_REQUIRE_DATA").is_ok_and(|v| v == "1");
    let dir = data_dir();
    let allow_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/allowlist.txt");
    let allow: BTreeSet<String> = std::fs::read_to_string(&allow_path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("conformance: no ONNX node tests at {} (run scripts/fetch-onnx-node-tests.sh)", dir.display());
        return if require { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    };
    let mut tests: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    tests.sort();
    let filter = std::env::var("ATOMC_NODE_FILTER").ok();
    let verbose = std::env::var("ATOMC_VERBOSE").is_ok_and(|v| v == "1");
    // Every backend runs the same allowlist (default: all of them; ATOMC_BACKEND=a,b picks).
    let names = std::env::var("ATOMC_BACKEND")
        .unwrap_or_else(|_| Backend::all().iter().map(|b| b.name()).collect::<Vec<_>>().join(","));
    let mut backends = Vec::new();
    for b in names.split(',') {
        match Backend::from_name(b.trim()) {
            Some(b) => backends.push(b),
            None => {
                eprintln!("conformance: unknown backend '{b}' in ATOMC_BACKEND");
                return ExitCode::FAILURE;
            }
        }
    }
    let bless = std::env::var("ATOMC_BLESS").is_ok_and(|v| v == "1") && filter.is_none();
    let mut ok = true;
    std::panic::set_hook(Box::new(|_| {}));
    for backend in backends {
        let (mut passed, mut failed) = (BTreeSet::new(), Vec::new());
        let mut with_host_ops = 0usize;
        for t in &tests {
            let name = t.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let result = catch_unwind(AssertUnwindSafe(|| run_test(t, backend)))
                .unwrap_or_else(|p| Err(format!("PANIC: {}", panic_text(&p))));
            match result {
                Ok(host) => {
                    with_host_ops += host as usize;
                    passed.insert(name);
                }
                Err(e) => {
                    if verbose {
                        println!("FAIL {name}: {e}");
                    }
                    failed.push((name, e));
                }
            }
        }
        let regressions: Vec<_> = failed.iter().filter(|(n, _)| allow.contains(n)).collect();
        let panics: Vec<_> = failed.iter().filter(|(_, e)| e.starts_with("PANIC")).collect();
        let new: Vec<_> = passed.iter().filter(|n| !allow.contains(*n)).collect();
        for (n, e) in &regressions {
            println!("REGRESSION ({}) {n}: {e}", backend.name());
        }
        for (n, e) in &panics {
            println!("PANICKED ({}) {n}: {e}", backend.name());
        }
        if !new.is_empty() {
            println!("{} tests pass on {} but are not on the allowlist (ATOMC_BLESS=1 adds them):", new.len(), backend.name());
            for n in &new {
                println!("  {n}");
            }
        }
        // The allowlist is what the reference interpreter passes.
        if bless && backend == Backend::Interp {
            let mut text = String::from("# ONNX node tests that must pass on every backend (one per line).\n");
            for n in &passed {
                text.push_str(n);
                text.push('\n');
            }
            if let Err(e) = std::fs::write(&allow_path, text) {
                eprintln!("cannot write {}: {e}", allow_path.display());
                return ExitCode::FAILURE;
            }
        }
        println!("conformance ({}): {} regressions, {} panics", backend.name(), regressions.len(), panics.len());
        println!("{} passed, {} failed", passed.len(), failed.len());
        if backend != Backend::Interp {
            println!(
                "{with_host_ops} of the passing tests ran some node high-level (a host op, or a shape that depends on \
                 data) even with shape-like inputs frozen as constants"
            );
        }
        ok &= regressions.is_empty() && panics.is_empty();
    }
    let _ = std::panic::take_hook();
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}
