//! PTX validation (cargo feature `llvm`): every kernel of the zoo and real models
//! (`$ATOMC_MODELS`) and of the float ONNX node tests on the conformance allowlist is
//! scheduled for the GPU, compiled by LLVM's NVPTX backend, and assembled by `ptxas` for
//! sm_80 and sm_90: one module per model, the node tests' distinct kernels in a few
//! modules. Kernels the GPU code generator refuses (host helpers, Scatter, dtypes) are
//! counted by reason and printed, not failures; a refused compile of an accepted kernel or
//! a ptxas error is. Without ptxas (`ATOMC_PTXAS`, `ATOMC_VENV`, or `$ATOMC_CACHE/venv`
//! with `nvidia-cuda-nvcc-cu12`) or the data, a test prints why and passes, unless
//! `ATOMC_REQUIRE_DATA=1`.
#![cfg(feature = "llvm")]
#![allow(clippy::expect_used)]

use codegen::llvm::nvptx::{self, GpuKernel};
use ir::kernel::Kernel;
use ir::partition::Step;
use ir::schedule::Schedule;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Kernels per module for the node tests (a few ptxas calls in all).
const CHUNK: usize = 400;

fn require() -> bool {
    std::env::var("ATOMC_REQUIRE_DATA").is_ok_and(|v| v == "1")
}

/// ptxas, or `None` after saying why (a failure under `ATOMC_REQUIRE_DATA=1`).
fn ptxas() -> Option<PathBuf> {
    let p = nvptx::find_ptxas();
    if p.is_none() {
        assert!(!require(), "ptxas not found: set ATOMC_PTXAS or ATOMC_VENV, or run scripts/test.sh");
        eprintln!("skipped: ptxas not found (set ATOMC_PTXAS or ATOMC_VENV, or run scripts/test.sh)");
    }
    p
}

/// The kernels of `g` (specialized) after decomposition and partitioning (host steps
/// skipped).
fn kernels_of(g: &ir::Graph) -> Result<Vec<Kernel>, String> {
    let d = atomc::session::decompose_strict(g).map_err(|e| e.to_string())?;
    let plan = ir::partition::partition(&d).map_err(|e| e.to_string())?;
    Ok(plan.steps.into_iter().filter_map(|s| if let Step::Kernel { kernel, .. } = s { Some(kernel) } else { None }).collect())
}

/// What happened to a set of kernels.
#[derive(Default)]
struct Tally {
    accepted: usize,
    refused: BTreeMap<String, usize>,
}

impl Tally {
    fn print(&self, what: &str) {
        let refused: usize = self.refused.values().sum();
        println!("{what}: ptxas accepted {} kernels for sm_80 and sm_90; {refused} refused by the GPU code generator", self.accepted);
        for (why, n) in &self.refused {
            println!("  {n:>4} x {why}");
        }
    }
}

/// The reason of a refusal without the kernel's name, for counting.
fn reason(e: &codegen::Error) -> String {
    match e {
        codegen::Error::Unsupported { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

/// Compiles the accepted kernels of `kernels` into one module and assembles it for every
/// GPU; the refused ones go to the tally.
fn assemble(ptxas: &Path, what: &str, kernels: &[Kernel], tally: &mut Tally) {
    let target = targets::Target::named("sm_80").expect("sm_80 is a known target");
    let schedules: Vec<Schedule> = kernels.iter().map(|k| search::default_schedule(k, &target)).collect();
    let mut ok = Vec::new();
    for (i, (k, s)) in kernels.iter().zip(&schedules).enumerate() {
        match nvptx::check(k, s) {
            Ok(()) => ok.push(GpuKernel { entry: nvptx::entry_name(&format!("k{i}"), &k.name), kernel: k, schedule: s }),
            Err(e) => *tally.refused.entry(reason(&e)).or_default() += 1,
        }
    }
    if ok.is_empty() {
        return;
    }
    for gpu in nvptx::GPUS {
        let m = nvptx::compile_ptx(&ok, gpu).unwrap_or_else(|e| panic!("{what}: NVPTX compile for {gpu}: {e}"));
        nvptx::run_ptxas(ptxas, &m.ptx, gpu).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    tally.accepted += ok.len();
}

fn models_dir() -> PathBuf {
    std::env::var_os("ATOMC_MODELS").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cache/models"), PathBuf::from)
}

/// The input shapes of a model: from its reference manifest when there is one, else its
/// static shapes.
fn shapes(stem: &str, g: &ir::Graph) -> ir::infer::InputShapes {
    let manifest = models_dir().join("refs").join(stem).join("manifest.json");
    let from_manifest: Option<serde_json::Value> = std::fs::read_to_string(manifest).ok().and_then(|t| serde_json::from_str(&t).ok());
    let mut out = ir::infer::InputShapes::new();
    for input in &g.inputs {
        let name = g.name(input.value).to_string();
        let listed = from_manifest.as_ref().and_then(|m| {
            m["inputs"].as_array()?.iter().find(|i| i["name"] == name.as_str())?["shape"].as_array().map(|s| s.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect())
        });
        let dims = listed.unwrap_or_else(|| input.dims.iter().map(|d| if let ir::Dim::Fixed(n) = d { *n } else { 1 }).collect());
        out.insert(name, dims);
    }
    out
}

#[test]
fn ptxas_accepts_the_kernels_of_every_zoo_and_real_model() {
    let Some(ptxas) = ptxas() else { return };
    let mut models: Vec<PathBuf> = ["zoo", "real"]
        .iter()
        .filter_map(|d| std::fs::read_dir(models_dir().join(d)).ok())
        .flat_map(|e| e.filter_map(|e| e.ok().map(|e| e.path())))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    if models.is_empty() {
        assert!(!require(), "no models under {} (run scripts/test.sh)", models_dir().display());
        eprintln!("skipped: no models under {} (run scripts/test.sh)", models_dir().display());
        return;
    }
    let mut total = Tally::default();
    for path in &models {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let model = ir::onnx::import_file(path).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let g = ir::infer::specialize(&model.graph, &shapes(&stem, &model.graph)).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let kernels = kernels_of(&g).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let mut t = Tally::default();
        assemble(&ptxas, &stem, &kernels, &mut t);
        t.print(&stem);
        assert!(t.accepted > 0, "{stem}: no kernel runs on the GPU");
        total.accepted += t.accepted;
        for (why, n) in t.refused {
            *total.refused.entry(why).or_default() += n;
        }
    }
    total.print(&format!("{} models", models.len()));
}

fn read_pb(path: &Path) -> Result<ir::Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let proto = ir::onnx::proto::TensorProto::decode(bytes.as_slice()).map_err(|e| format!("{}: {e}", path.display()))?;
    ir::onnx::tensor_from_proto(&proto, None).map_err(|e| format!("{}: {e}", path.display()))
}

/// The kernels of one node test when all its inputs and outputs are f32 (`None` else).
fn node_test_kernels(dir: &Path) -> Result<Option<Vec<Kernel>>, String> {
    let model = ir::onnx::import_file(&dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let g = &model.graph;
    let data = dir.join("test_data_set_0");
    let mut inputs = Vec::new();
    for i in 0..g.inputs.len() {
        inputs.push(read_pb(&data.join(format!("input_{i}.pb")))?);
    }
    let outputs_f32 = (0..g.outputs.len()).all(|i| read_pb(&data.join(format!("output_{i}.pb"))).is_ok_and(|t| t.dtype() == ir::DType::F32));
    if !outputs_f32 || inputs.iter().any(|t| t.dtype() != ir::DType::F32) {
        return Ok(None);
    }
    let shapes = g.inputs.iter().zip(&inputs).map(|(i, t)| (g.name(i.value).to_string(), t.shape().to_vec())).collect();
    let spec = ir::infer::specialize(g, &shapes).map_err(|e| e.to_string())?;
    kernels_of(&spec).map(Some)
}

#[test]
fn ptxas_accepts_the_kernels_of_the_float_node_tests_on_the_allowlist() {
    let Some(ptxas) = ptxas() else { return };
    let dir = std::env::var_os("ATOMC_ONNX_NODE_TESTS")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cache/onnx-1.22.0/onnx/backend/test/data/node"), PathBuf::from);
    if !dir.is_dir() {
        assert!(!require(), "no ONNX node tests at {} (run scripts/test.sh)", dir.display());
        eprintln!("skipped: no ONNX node tests at {}", dir.display());
        return;
    }
    let allow = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/allowlist.txt")).expect("the allowlist");
    let (mut tests, mut skipped) = (0, 0);
    let mut seen = BTreeSet::new();
    let mut kernels = Vec::new();
    for name in allow.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match node_test_kernels(&dir.join(name)) {
            Ok(Some(ks)) => {
                tests += 1;
                kernels.extend(ks.into_iter().filter(|k| seen.insert(k.canonical_hash())));
            }
            Ok(None) => {}
            // Tests whose graph needs run-time shapes (a data-dependent shape) are
            // counted, not failures: the conformance suite covers them on the host.
            Err(_) => skipped += 1,
        }
    }
    let mut t = Tally::default();
    for (i, chunk) in kernels.chunks(CHUNK).enumerate() {
        assemble(&ptxas, &format!("node tests, module {i}"), chunk, &mut t);
    }
    t.print(&format!("{tests} float node tests ({} distinct kernels; {skipped} tests not lowered to static kernels)", kernels.len()));
    assert!(t.accepted > 0, "no node-test kernel runs on the GPU");
}

#[test]
fn atomc_compile_for_a_gpu_writes_the_ptx_the_plan_and_the_weights() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nvptx-cli");
    let _ = std::fs::remove_dir_all(&out);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.onnx");
    let run = |gpu: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_atomc"))
            .arg("compile")
            .arg(&model)
            .arg("-o")
            .arg(&out)
            .args(["--shape", "x=2x64", "--target", "nvptx64-nvidia-cuda", "--gpu", gpu])
            .output()
            .expect("atomc runs")
    };
    let bad = run("sm_70");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown GPU 'sm_70' (known: sm_80, sm_90)"));
    let ok = run("sm_80");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let plan: atomc::gpu_plan::Plan = serde_json::from_str(&std::fs::read_to_string(out.join("mlp.plan.json")).expect("plan")).expect("plan JSON");
    let ptx = std::fs::read_to_string(out.join(&plan.steps[0].ptx)).expect("ptx");
    assert_eq!((plan.gpu.as_str(), plan.steps.len(), plan.outputs[0].shape.as_slice()), ("sm_80", 3, &[2usize, 10][..]));
    assert_eq!(std::fs::metadata(out.join(&plan.weights)).expect("weights").len() as usize, plan.weight_bytes);
    for s in &plan.steps {
        assert!(ptx.contains(&format!(".entry {}(", s.entry)), "no entry {}", s.entry);
        assert_eq!(s.bindings.len() + 1, ptx.split(&format!(".entry {}(", s.entry)).nth(1).map_or(0, |t| t.split(')').next().unwrap_or("").matches(".param").count()));
    }
    if let Some(p) = ptxas() {
        nvptx::run_ptxas(&p, &ptx, "sm_80").expect("ptxas accepts the written PTX");
    }
}
