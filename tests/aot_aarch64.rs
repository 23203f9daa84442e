//! Ahead-of-time compilation for AArch64 (LLVM backend, feature `llvm`), run under qemu:
//! every case is compiled with `atomc::aot` for `aarch64-unknown-linux-gnu` (generic
//! ARMv8-A with NEON) into its own object, all objects of a suite are linked statically
//! with `tests/aot/batch.c` and a generated table of their entry points by ONE
//! `aarch64-linux-gnu-gcc` call and run by ONE `qemu-aarch64` process; each output is
//! compared with the reference interpreter. On an x86-64 host the node suite also runs as
//! LLVM objects for `x86_64-unknown-linux-gnu` (this CPU), linked by `cc` and run natively.
//!
//! A case refused for a host step whose output shape depends on input values (a
//! `Resize`'s scales, a `Range`'s bounds: [`AotError::HostStep`]'s `bind`) is compiled
//! again with exactly those inputs bound to the case's values (`atomc::aot::bind_inputs`,
//! as `atomc compile --bind`); it passes only if the object's outputs match.
//!
//! Suites: the float node tests of the conformance allowlist (all inputs and outputs f32;
//! elementwise rtol 1e-3 / atol 1e-4 like `tests/conformance.rs`), and every zoo and real
//! model under `$ATOMC_MODELS` (inputs from `refs/<model>/` when there, else seeded
//! random; max abs error / max |reference| <= 1e-4 like `tests/aot.rs`). A case the AOT
//! path refuses (a host step, a kernel the code generator does not support) is counted
//! and listed, not run (a failure for the models); any other compile error, a nonzero run code or a wrong output
//! fails the test. Without the cross toolchain or qemu, or without the data, a test says
//! so and passes, unless `ATOMC_REQUIRE_DATA=1`.

#![cfg(feature = "llvm")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use atomc::aot::{Error as AotError, ObjectBackend};
use atomc::session::{Backend, Options, Session, random_inputs};
use ir::infer::InputShapes;
use ir::{DType, Tensor};
use prost::Message;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const MAX_REL_ERROR: f64 = 1e-4;

/// Where a suite's objects are for, and how they are linked and run.
struct Platform {
    triple: &'static str,
    /// The C compiler that links the batch executable, and its extra flags.
    cc: &'static str,
    cc_flags: &'static [&'static str],
    /// The emulator that runs it with its arguments (`None`: run natively).
    runner: Option<(&'static str, &'static [&'static str])>,
}

const AARCH64: Platform = Platform {
    triple: "aarch64-unknown-linux-gnu",
    cc: "aarch64-linux-gnu-gcc",
    cc_flags: &["-static"],
    runner: Some(("qemu-aarch64", &["-L", "/usr/aarch64-linux-gnu"])),
};

const X86_64: Platform = Platform { triple: "x86_64-unknown-linux-gnu", cc: "cc", cc_flags: &[], runner: None };

fn require() -> bool {
    std::env::var("ATOMC_REQUIRE_DATA").is_ok_and(|v| v == "1")
}

/// Whether the cross compiler and qemu run; without them the test is skipped (a failure
/// with `ATOMC_REQUIRE_DATA=1`).
fn have_tools() -> bool {
    for tool in [AARCH64.cc, "qemu-aarch64"] {
        let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        if !ok {
            assert!(!require(), "`{tool} --version` failed and ATOMC_REQUIRE_DATA=1: install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user");
            eprintln!("skipped: `{tool} --version` failed (install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)");
            return false;
        }
    }
    true
}

/// How outputs are compared with the interpreter's.
#[derive(Clone, Copy)]
enum Tolerance {
    /// Every element within `1e-4 + 1e-3 * |want|` (exact for integers and bools).
    Elementwise,
    /// Max |got - want| / max |want| <= [`MAX_REL_ERROR`].
    Relative,
}

/// One model to compile, run and check.
struct Case {
    /// The C name prefix (unique in the suite), also the case's folder.
    name: String,
    /// What the case is, for messages.
    label: String,
    graph: ir::Graph,
    shapes: InputShapes,
    inputs: Vec<Tensor>,
    want: Vec<Tensor>,
}

/// What a suite did.
#[derive(Default)]
struct Outcome {
    passed: Vec<String>,
    /// The passed cases compiled with inputs bound (`label: inputs`).
    bound: Vec<String>,
    refused: Vec<(String, String)>,
    failed: Vec<(String, String)>,
}

fn bytes_of(t: &Tensor) -> Vec<u8> {
    match t.data() {
        ir::Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ir::Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ir::Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ir::Data::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        _ => panic!("test inputs are f32, i64, i32 or bool, got {}", t.dtype()),
    }
}

/// The tensor of `want`'s dtype and shape in the little-endian bytes `b`.
fn tensor_like(want: &Tensor, b: &[u8]) -> Result<Tensor, String> {
    let n = want.numel();
    let size = want.dtype().size();
    if b.len() != n * size {
        return Err(format!("{} bytes, expected {}", b.len(), n * size));
    }
    let shape = want.shape().to_vec();
    let t = match want.dtype() {
        DType::F32 => Tensor::from_vec(shape, b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()),
        DType::I64 => Tensor::from_vec(shape, b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()),
        DType::I32 => Tensor::from_vec(shape, b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()),
        DType::Bool => Tensor::from_vec(shape, b.iter().map(|&x| x != 0).collect::<Vec<bool>>()),
        d => return Err(format!("output dtype {d}")),
    };
    t.map_err(|e| e.to_string())
}

fn compare(got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(), String> {
    match tol {
        Tolerance::Relative => {
            let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
            let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
            let err = g
                .iter()
                .zip(&w)
                .fold(0.0f64, |m, (a, b)| if a.is_nan() != b.is_nan() { f64::INFINITY } else { m.max((a - b).abs()) });
            if err / scale > MAX_REL_ERROR {
                return Err(format!("max relative error {:.3e}", err / scale));
            }
        }
        Tolerance::Elementwise => common::compare_elementwise(got, want)?,
    }
    Ok(())
}

/// Whether an AOT error is a refusal (the model has a part AOT does not support) rather
/// than a failure.
fn is_refusal(e: &AotError) -> bool {
    matches!(e, AotError::HostStep { .. } | AotError::Codegen(codegen::Error::Unsupported { .. }) | AotError::Session(_))
}

/// How a case was compiled: the indices of the case's inputs the object takes, and the
/// names of those bound to constants.
struct Compiled {
    inputs: Vec<usize>,
    bound: Vec<String>,
}

/// Compiles case `c` into `dir/<name>.o`. A host step whose shape depends on inputs
/// (`AotError::HostStep`'s `bind`) is compiled again with exactly those inputs bound to
/// the case's values (and so on while a host step names inputs not bound yet); an error
/// comes with the inputs bound when it happened.
fn compile_case(c: &Case, dir: &Path, planner: &search::Planner, backend: &ObjectBackend) -> Result<Compiled, (AotError, Vec<String>)> {
    let names: Vec<&str> = c.graph.inputs.iter().map(|i| c.graph.name(i.value)).collect();
    let mut bound: Vec<String> = Vec::new();
    loop {
        let values: Vec<(String, Tensor)> = bound
            .iter()
            .map(|b| {
                let i = names.iter().position(|n| n == b).expect("a bound input is an input of the case");
                (b.clone(), c.inputs[i].clone())
            })
            .collect();
        let mut shapes = c.shapes.clone();
        shapes.retain(|n, _| !bound.contains(n));
        let built = atomc::aot::bind_inputs(&c.graph, &values).and_then(|g| atomc::aot::build_for(&g, &c.name, &shapes, planner, backend));
        match built {
            Ok(b) => {
                std::fs::write(dir.join(format!("{}.o", c.name)), &b.object).expect("write the object");
                let inputs = (0..names.len()).filter(|&i| !bound.iter().any(|b| b == names[i])).collect();
                return Ok(Compiled { inputs, bound });
            }
            Err(AotError::HostStep { bind, .. }) if bind.iter().any(|b| !bound.contains(b)) => {
                let new: Vec<String> = bind.into_iter().filter(|b| !bound.contains(b)).collect();
                bound.extend(new);
            }
            Err(e) => return Err((e, bound)),
        }
    }
}

/// Compiles every case for `platform` (on two threads), links them all into one
/// executable, runs it once (under qemu for AArch64) and checks every output.
fn run_suite(tag: &str, platform: &Platform, cases: Vec<Case>, tol: Tolerance) -> Outcome {
    let start = Instant::now();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aot-aarch64").join(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the suite directory");
    let backend = ObjectBackend::resolve(Some(platform.triple), None).expect("the target");
    let planner = backend.planner();
    let mut out = Outcome::default();

    let results: Vec<Result<Compiled, (AotError, Vec<String>)>> = std::thread::scope(|s| {
        let workers = 2;
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (cases, dir, planner, backend) = (&cases, &dir, &planner, &backend);
                s.spawn(move || {
                    cases
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % workers == w)
                        .map(|(i, c)| (i, compile_case(c, dir, planner, backend)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = handles.into_iter().flat_map(|h| h.join().expect("a compile worker panicked")).collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, r)| r).collect()
    });
    let compile_s = start.elapsed().as_secs_f64();

    let mut built = Vec::new();
    for (c, r) in cases.iter().zip(results) {
        match r {
            Ok(compiled) => built.push((c, compiled)),
            Err((e, bound)) => {
                let with = if bound.is_empty() { String::new() } else { format!("with {} bound: ", bound.join(", ")) };
                if is_refusal(&e) {
                    out.refused.push((c.label.clone(), format!("{with}{e}")));
                } else {
                    out.failed.push((c.label.clone(), format!("compile: {with}{e}")));
                }
            }
        }
    }
    if built.is_empty() {
        return out;
    }
    let mut table = String::from("#include <stddef.h>\n");
    let mut entries = String::new();
    for (c, compiled) in &built {
        let n = &c.name;
        let _ = writeln!(
            table,
            "int {n}_run(const void* const*, void* const*, void*); size_t {n}_workspace_size(void); int {n}_num_inputs(void);\n\
             int {n}_num_outputs(void); size_t {n}_input_bytes(int); size_t {n}_output_bytes(int);"
        );
        let _ = writeln!(
            entries,
            "  {{\"{n}\", {n}_run, {n}_workspace_size, {n}_num_inputs, {n}_num_outputs, {n}_input_bytes, {n}_output_bytes}},"
        );
        let case_dir = dir.join(n);
        std::fs::create_dir_all(&case_dir).expect("create a case directory");
        for (k, &i) in compiled.inputs.iter().enumerate() {
            std::fs::write(case_dir.join(format!("input_{k}.bin")), bytes_of(&c.inputs[i])).expect("write an input");
        }
    }
    let _ = write!(
        table,
        "typedef struct {{ const char* name; int (*run)(const void* const*, void* const*, void*); size_t (*ws)(void);\n\
         int (*ni)(void); int (*no)(void); size_t (*ib)(int); size_t (*ob)(int); }} atomc_model;\n\
         const atomc_model atomc_models[] = {{\n{entries}}};\nconst int atomc_num_models = {};\n",
        built.len()
    );
    std::fs::write(dir.join("table.c"), table).expect("write table.c");
    let exe = dir.join("batch");
    let link = Instant::now();
    let status = Command::new(platform.cc)
        .args(platform.cc_flags)
        .args(["-std=c11", "-O1", "-Wall", "-Werror"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aot/batch.c"))
        .arg(dir.join("table.c"))
        .args(built.iter().map(|(c, _)| dir.join(format!("{}.o", c.name))))
        .args(["-lm", "-o"])
        .arg(&exe)
        .output()
        .expect("the C compiler runs");
    assert!(status.status.success(), "{} failed: {}", platform.cc, String::from_utf8_lossy(&status.stderr));
    let link_s = link.elapsed().as_secs_f64();
    let run = Instant::now();
    let mut cmd = match platform.runner {
        Some((runner, args)) => {
            let mut cmd = Command::new(runner);
            cmd.args(args).arg(&exe);
            cmd
        }
        None => Command::new(&exe),
    };
    let res = cmd.arg(&dir).output().expect("the batch executable runs");
    let run_s = run.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "the batch run failed ({}): {stdout}{}", res.status, String::from_utf8_lossy(&res.stderr));
    for (c, compiled) in built {
        let line = stdout.lines().find(|l| l.split(' ').nth(1) == Some(c.name.as_str()));
        let result = match line {
            Some(l) if l.starts_with("ok ") => check_outputs(&dir.join(&c.name), c, tol),
            Some(l) => Err(l.to_string()),
            None => Err("the batch driver printed nothing for it".into()),
        };
        match result {
            Ok(()) => {
                out.passed.push(c.label.clone());
                if !compiled.bound.is_empty() {
                    out.bound.push(format!("{}: {}", c.label, compiled.bound.join(", ")));
                }
            }
            Err(e) => out.failed.push((c.label.clone(), e)),
        }
    }
    eprintln!(
        "{tag}: {} passed ({} with bound inputs), {} refused by AOT, {} failed; compile {compile_s:.1} s, link {link_s:.1} s, run {run_s:.1} s",
        out.passed.len(),
        out.bound.len(),
        out.refused.len(),
        out.failed.len()
    );
    out
}

fn check_outputs(dir: &Path, c: &Case, tol: Tolerance) -> Result<(), String> {
    for (i, want) in c.want.iter().enumerate() {
        let b = std::fs::read(dir.join(format!("output_{i}.bin"))).map_err(|e| format!("output {i}: {e}"))?;
        let got = tensor_like(want, &b).map_err(|e| format!("output {i}: {e}"))?;
        compare(&got, want, tol).map_err(|e| format!("output {i}: {e}"))?;
    }
    Ok(())
}

fn report(tag: &str, out: &Outcome) {
    for b in &out.bound {
        eprintln!("{tag}: passed with bound inputs {b}");
    }
    for (n, why) in &out.refused {
        eprintln!("{tag}: refused {n}: {why}");
    }
    for (n, why) in &out.failed {
        eprintln!("{tag}: FAILED {n}: {why}");
    }
    assert!(out.failed.is_empty(), "{tag}: {} cases failed on aarch64 (listed above)", out.failed.len());
}

fn read_pb(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let proto = ir::onnx::proto::TensorProto::decode(bytes.as_slice()).map_err(|e| format!("{}: {e}", path.display()))?;
    ir::onnx::tensor_from_proto(&proto, None).map_err(|e| format!("{}: {e}", path.display()))
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..).map(|i| dir.join(format!("{prefix}_{i}.pb"))).take_while(|p| p.exists()).collect()
}

/// The float node test in `dir` as a case (`None` when it is not all-f32), its expected
/// outputs from the interpreter.
fn node_case(index: usize, dir: &Path) -> Result<Option<Case>, String> {
    let model = ir::onnx::import_file(&dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let data = dir.join("test_data_set_0");
    let inputs: Vec<Tensor> = numbered(&data, "input").iter().map(|p| read_pb(p)).collect::<Result<_, _>>()?;
    let outputs: Vec<Tensor> = numbered(&data, "output").iter().map(|p| read_pb(p)).collect::<Result<_, _>>()?;
    if inputs.is_empty() || inputs.iter().chain(&outputs).any(|t| t.dtype() != DType::F32) {
        return Ok(None);
    }
    let g = model.graph;
    let shapes: InputShapes = g.inputs.iter().zip(&inputs).map(|(i, t)| (g.name(i.value).to_string(), t.shape().to_vec())).collect();
    let specialized = ir::infer::specialize(&g, &shapes).map_err(|e| e.to_string())?;
    let want = ir::interp::run(&specialized, inputs.clone()).map_err(|e| e.to_string())?;
    let label = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Some(Case { name: format!("n{index}"), label, graph: g, shapes, inputs, want }))
}

/// Runs the float node tests of the allowlist (`ATOMC_NODE_FILTER`: those whose name
/// contains it) as objects for `platform`, once its tools are known to run.
fn node_suite(tag: &str, platform: &Platform) {
    let dir = std::env::var_os("ATOMC_ONNX_NODE_TESTS")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cache/onnx-1.22.0/onnx/backend/test/data/node"), PathBuf::from);
    if !dir.is_dir() {
        assert!(!require(), "no ONNX node tests at {} and ATOMC_REQUIRE_DATA=1", dir.display());
        eprintln!("skipped: no ONNX node tests at {} (run scripts/fetch-onnx-node-tests.sh)", dir.display());
        return;
    }
    let allow = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/allowlist.txt"))
        .expect("the allowlist");
    let filter = std::env::var("ATOMC_NODE_FILTER").ok();
    let mut cases = Vec::new();
    let mut allowed = 0;
    for (i, name) in allow.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).enumerate() {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        allowed += 1;
        match node_case(i, &dir.join(name)) {
            Ok(Some(c)) => cases.push(c),
            Ok(None) => {}
            Err(e) => panic!("{name} is on the allowlist but the interpreter fails it: {e}"),
        }
    }
    let floats = cases.len();
    let out = run_suite(tag, platform, cases, Tolerance::Elementwise);
    eprintln!(
        "{} node tests: {} of {floats} float tests ({allowed} on the allowlist) match the interpreter, {} of them with bound inputs",
        platform.triple,
        out.passed.len(),
        out.bound.len()
    );
    report(tag, &out);
}

#[test]
fn float_node_tests_match_the_interpreter_on_aarch64() {
    if have_tools() {
        node_suite("node", &AARCH64);
    }
}

/// The same suite as LLVM objects for this x86-64 CPU, run natively (x86-64 hosts only).
#[test]
fn float_node_tests_match_the_interpreter_as_x86_64_llvm_objects() {
    if cfg!(target_arch = "x86_64") {
        node_suite("node-x86_64", &X86_64);
    }
}

#[test]
fn models_match_the_interpreter_on_aarch64() {
    let Some(models) = std::env::var_os("ATOMC_MODELS").map(PathBuf::from) else {
        assert!(!require(), "ATOMC_MODELS is unset and ATOMC_REQUIRE_DATA=1");
        eprintln!("skipped: ATOMC_MODELS is unset (the models live in $ATOMC_MODELS/{{zoo,real}})");
        return;
    };
    if !have_tools() {
        return;
    }
    let mut files = Vec::new();
    for sub in ["zoo", "real"] {
        let Ok(entries) = std::fs::read_dir(models.join(sub)) else { continue };
        files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "onnx")));
    }
    files.sort();
    assert!(!files.is_empty() || !require(), "no models in {}/{{zoo,real}}", models.display());
    let mut cases = Vec::new();
    for path in &files {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut session = Session::load(path, Options { backend: Backend::Interp, threads: None, ..Options::default() })
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let manifest = models.join("refs").join(&stem).join("manifest.json");
        let inputs: Vec<(String, Tensor)> = match std::fs::read_to_string(&manifest) {
            Ok(text) => {
                let m: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
                m["inputs"]
                    .as_array()
                    .expect("manifest inputs")
                    .iter()
                    .map(|i| {
                        let file = manifest.parent().unwrap().join(i["file"].as_str().expect("input file"));
                        (i["name"].as_str().expect("input name").to_string(), atomc::npy::read(&file).expect("input npy"))
                    })
                    .collect()
            }
            Err(_) => random_inputs(session.model(), &InputShapes::new(), 7).unwrap_or_else(|e| panic!("{stem}: {e}")),
        };
        let shapes: InputShapes = inputs.iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect();
        let want = session.run(inputs.clone()).unwrap_or_else(|e| panic!("{stem}: the interpreter: {e}"));
        let graph = session.model().graph.clone();
        let order: Vec<Tensor> = graph
            .inputs
            .iter()
            .map(|i| inputs.iter().find(|(n, _)| n == graph.name(i.value)).map(|(_, t)| t.clone()).expect("every input given"))
            .collect();
        cases.push(Case {
            name: atomc::aot::c_identifier(&format!("m_{stem}")),
            label: stem,
            graph,
            shapes,
            inputs: order,
            want: want.into_iter().map(|(_, t)| t).collect(),
        });
    }
    let total = cases.len();
    let out = run_suite("models", &AARCH64, cases, Tolerance::Relative);
    eprintln!("aarch64 models: {} of {total} match the interpreter", out.passed.len());
    report("models", &out);
    assert!(out.refused.is_empty(), "every model must compile ahead of time (refusals listed above)");
}
