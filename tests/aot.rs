//! Ahead-of-time compilation end to end: `atomc compile` writes an object file, the C
//! driver `tests/aot/driver.c` links with it (`cc driver.c model.o -lm`), runs it on seeded
//! random inputs, and its outputs are compared with the reference interpreter: max
//! absolute error / max |reference| <= 1e-4 per output.
//!
//! `examples/mlp.onnx` always runs; the zoo models come from `$ATOMC_MODELS/zoo/` and are
//! skipped (with a printed reason) when `ATOMC_MODELS` is unset, unless
//! `ATOMC_REQUIRE_DATA=1`. A missing C compiler fails the test with a hint to install one.
//! With feature `llvm` the zoo models are also compiled by LLVM (`--target
//! x86_64-unknown-linux-gnu`, on an x86-64 host); AArch64 objects are run under qemu by
//! `tests/aot_aarch64.rs`.
//!
//! `--bind NAME=FILE.npy`: a model whose `Resize` takes its scales as an input (a host op,
//! refused with a hint naming that input) compiles once the scales are bound, and the
//! object takes the image only.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use atomc::session::{Backend, Options, Session, random_inputs};
use ir::Tensor;
use ir::infer::InputShapes;
use ir::onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;

const MAX_REL_ERROR: f64 = 1e-4;

fn cc() -> String {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let ok = Command::new(&cc).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "no C compiler: `{cc} --version` failed; install a C compiler (e.g. `apt-get install gcc`) or set CC");
    cc
}

/// Max |got - want| / max |want|.
fn rel_error(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    let err = got.iter().zip(want).fold(0.0f64, |m, (a, b)| if a.is_nan() != b.is_nan() { f64::INFINITY } else { m.max((a - b).abs()) });
    err / scale
}

fn bytes_of(t: &ir::Tensor) -> Vec<u8> {
    match t.data() {
        ir::Data::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::I64(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::I32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        _ => panic!("test inputs are f32, i64, i32 or bool, got {}", t.dtype()),
    }
}

fn values_of(dtype: ir::DType, b: &[u8]) -> Vec<f64> {
    match dtype {
        ir::DType::F32 => b.chunks_exact(4).map(|c| f64::from(f32::from_ne_bytes(c.try_into().unwrap()))).collect(),
        ir::DType::I32 => b.chunks_exact(4).map(|c| f64::from(i32::from_ne_bytes(c.try_into().unwrap()))).collect(),
        ir::DType::I64 => b.chunks_exact(8).map(|c| i64::from_ne_bytes(c.try_into().unwrap()) as f64).collect(),
        ir::DType::Bool => b.iter().map(|&x| f64::from(x)).collect(),
        d => panic!("output dtype {d}"),
    }
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aot").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the test directory");
    d
}

/// Compiles `model` with `atomc compile`, runs it through the C driver and compares it
/// with the interpreter.
fn check(model: &Path, name: &str, shapes: &[(&str, Vec<usize>)], extra: &[&str]) {
    check_bound(model, name, shapes, &[], extra);
}

/// [`check`] with the inputs `bound` given as `--bind NAME=FILE.npy`: the object's inputs
/// are the others (its JSON lists exactly those) and the interpreter runs the model with
/// the bound values.
fn check_bound(model: &Path, name: &str, shapes: &[(&str, Vec<usize>)], bound: &[(&str, Tensor)], extra: &[&str]) {
    let cc = cc();
    let dir = out_dir(name);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atomc"));
    cmd.arg("compile").arg(model).arg("-o").arg(&dir).args(["--name", name]).args(extra);
    for (input, dims) in shapes {
        let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
        cmd.arg("--shape").arg(format!("{input}={}", dims.join("x")));
    }
    for (input, t) in bound {
        let file = dir.join(format!("bound_{input}.npy"));
        atomc::npy::write(&file, t).expect("write a bound value");
        cmd.arg("--bind").arg(format!("{input}={}", file.display()));
    }
    let out = cmd.output().expect("atomc runs");
    assert!(out.status.success(), "atomc compile failed: {}", String::from_utf8_lossy(&out.stderr));
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    for ext in ["o", "h", "json"] {
        assert!(dir.join(format!("{name}.{ext}")).is_file(), "{name}.{ext} written");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap()).expect("JSON");
    assert!(json["kernels"].as_u64().unwrap() > 0);
    let object_inputs: Vec<&str> = json["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    let bound_names: Vec<&str> = json["bound"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(bound_names, bound.iter().map(|(n, _)| *n).collect::<Vec<_>>(), "{name}: the JSON's bound inputs");

    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aot/driver.c");
    let exe = dir.join("drv");
    let out = Command::new(&cc)
        .args(["-std=c11", "-O1", "-Wall", "-Werror", "-include"])
        .arg(dir.join(format!("{name}.h")))
        .arg(format!("-DATOMC_NAME={name}"))
        .arg(&driver)
        .arg(dir.join(format!("{name}.o")))
        .args(["-lm", "-o"])
        .arg(&exe)
        .output()
        .expect("cc runs");
    assert!(out.status.success(), "cc failed: {}", String::from_utf8_lossy(&out.stderr));

    let mut session = Session::load(model, Options { backend: Backend::Interp, threads: None, ..Options::default() }).expect("load");
    let shapes: InputShapes = shapes.iter().map(|(n, d)| (n.to_string(), d.clone())).collect();
    let mut inputs = random_inputs(session.model(), &shapes, 7).expect("random inputs");
    for (input, t) in &mut inputs {
        if let Some((_, value)) = bound.iter().find(|(b, _)| b == input) {
            *t = value.clone();
        }
    }
    let unbound: Vec<&(String, Tensor)> = inputs.iter().filter(|(n, _)| !bound.iter().any(|(b, _)| b == n)).collect();
    assert_eq!(object_inputs, unbound.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), "{name}: the object's inputs");
    for (i, (_, t)) in unbound.iter().enumerate() {
        std::fs::write(dir.join(format!("input_{i}.bin")), bytes_of(t)).unwrap();
    }
    let want = session.run(inputs).expect("the interpreter runs");
    let out = Command::new(&exe).arg(&dir).output().expect("the driver runs");
    assert!(
        out.status.success(),
        "driver failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    for (i, (oname, t)) in want.iter().enumerate() {
        let got = std::fs::read(dir.join(format!("output_{i}.bin"))).unwrap();
        let got = values_of(t.dtype(), &got);
        assert_eq!(got.len(), t.numel(), "{name}: output '{oname}' length");
        let err = rel_error(&got, &t.to_f64_vec());
        eprintln!("{name}: output '{oname}' max relative error {err:.3e}");
        assert!(err <= MAX_REL_ERROR, "{name}: output '{oname}' differs from the interpreter: {err:.3e}");
    }
}

/// `$ATOMC_MODELS/zoo/<file>`, or `None` (skip) when the data is not configured.
fn zoo_model(file: &str) -> Option<PathBuf> {
    let require = std::env::var("ATOMC_REQUIRE_DATA").is_ok_and(|v| v == "1");
    let Some(dir) = std::env::var_os("ATOMC_MODELS") else {
        assert!(!require, "ATOMC_MODELS is unset and ATOMC_REQUIRE_DATA=1");
        eprintln!("skipped: ATOMC_MODELS is unset (the zoo models live in $ATOMC_MODELS/zoo)");
        return None;
    };
    let p = PathBuf::from(dir).join("zoo").join(file);
    if !p.is_file() {
        assert!(!require, "missing {}", p.display());
        eprintln!("skipped: no {}", p.display());
        return None;
    }
    Some(p)
}

#[test]
fn mlp_links_with_a_c_driver_and_matches_the_interpreter() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.onnx");
    check(&model, "mlp", &[("x", vec![3, 64])], &[]);
}

#[test]
fn resnet_style_links_and_matches() {
    if let Some(model) = zoo_model("resnet_style.onnx") {
        check(&model, "resnet_style", &[], &[]);
    }
}

/// ResNet-style's five 3x3 stride-1 convs run as Winograd on the Cranelift host (x86-64),
/// and the object carries their transformed filters in its weights (the step's prepared
/// slot), so it transforms nothing per call; `resnet_style_links_and_matches` checks the
/// results.
#[test]
fn resnet_style_winograd_filters_are_prepared_in_the_object() {
    let Some(model) = zoo_model("resnet_style.onnx") else { return };
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let m = ir::onnx::import_file(&model).expect("the zoo model imports");
    let built = atomc::aot::build_planned(&m.graph, "resnet_style", &InputShapes::new(), &search::Planner::host_cranelift(1))
        .expect("ResNet-style builds");
    let prepared: Vec<usize> = built.program.steps.iter().filter_map(|s| s.prepared.map(|(_, bytes)| bytes)).collect();
    // 16 points x 16 x 16 channels (twice) and x 32 x 32 (three times), 4 bytes each.
    assert_eq!(prepared, [16384, 16384, 65536, 65536, 65536], "{:?}", built.program.steps);
}

#[test]
fn transformer_encoder_links_and_matches() {
    if let Some(model) = zoo_model("transformer_encoder.onnx") {
        check(&model, "transformer_encoder", &[], &[]);
    }
}

/// The LLVM object for x86-64 (this host's CPU), where the host is x86-64.
#[cfg(feature = "llvm")]
const LLVM_X86_64: &[&str] = &["--target", "x86_64-unknown-linux-gnu"];

#[cfg(feature = "llvm")]
#[test]
fn mlp_llvm_x86_64_links_and_matches() {
    if cfg!(target_arch = "x86_64") {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.onnx");
        check(&model, "mlp_llvm", &[("x", vec![3, 64])], LLVM_X86_64);
    }
}

#[cfg(feature = "llvm")]
#[test]
fn resnet_style_llvm_x86_64_links_and_matches() {
    if let Some(model) = zoo_model("resnet_style.onnx").filter(|_| cfg!(target_arch = "x86_64")) {
        check(&model, "resnet_style_llvm", &[], LLVM_X86_64);
    }
}

#[cfg(feature = "llvm")]
#[test]
fn transformer_encoder_llvm_x86_64_links_and_matches() {
    if let Some(model) = zoo_model("transformer_encoder.onnx").filter(|_| cfg!(target_arch = "x86_64")) {
        check(&model, "transformer_encoder_llvm", &[], LLVM_X86_64);
    }
}

/// An AArch64 object is an AArch64 ELF file (e_machine 183), whatever the host.
#[cfg(feature = "llvm")]
#[test]
fn aarch64_object_is_an_aarch64_elf() {
    let g = ir::text::parse("graph {\n  input %x: f32[4,64]\n  %y = Tanh@13 \"t\" (%x)\n  output %y\n}\n").unwrap();
    let shapes = InputShapes::new();
    for cpu in [None, Some("neoverse-n1")] {
        let backend = atomc::aot::ObjectBackend::resolve(Some("aarch64-unknown-linux-gnu"), cpu).expect("aarch64 target");
        let built = atomc::aot::build_for(&g, "m", &shapes, &backend.planner(), &backend).expect("compiles");
        assert_eq!(&built.object[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([built.object[18], built.object[19]]), 183, "e_machine is AArch64");
    }
    let err = atomc::aot::ObjectBackend::resolve(Some("aarch64-unknown-linux-gnu"), Some("sm_90")).expect_err("a GPU is no AArch64 CPU");
    assert!(err.to_string().contains("neoverse-n1"), "{err}");
}

/// Without the LLVM backend a foreign target is a clear error.
#[cfg(not(feature = "llvm"))]
#[test]
fn foreign_target_needs_the_llvm_feature() {
    let foreign = if cfg!(target_arch = "aarch64") { "x86_64-unknown-linux-gnu" } else { "aarch64-unknown-linux-gnu" };
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.onnx");
    let dir = out_dir("foreign");
    let out = Command::new(env!("CARGO_BIN_EXE_atomc"))
        .arg("compile")
        .arg(&model)
        .arg("-o")
        .arg(&dir)
        .args(["--shape", "x=2x64", "--target", foreign])
        .output()
        .expect("atomc runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--features llvm") && err.contains(foreign), "{err}");
}

#[test]
fn unknown_target_is_a_clear_error() {
    let err = atomc::aot::ObjectBackend::resolve(Some("riscv64-unknown-linux-gnu"), None).expect_err("unknown triple");
    assert!(err.to_string().contains("x86_64-unknown-linux-gnu"), "{err}");
}

#[test]
fn missing_symbolic_dim_is_a_clear_error() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.onnx");
    let dir = out_dir("missing_dim");
    let out = Command::new(env!("CARGO_BIN_EXE_atomc"))
        .arg("compile")
        .arg(&model)
        .arg("-o")
        .arg(&dir)
        .output()
        .expect("atomc runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("symbolic dim") && err.contains("--shape x="), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn host_op_is_refused_naming_the_node() {
    let g = ir::text::parse(
        "graph {\n  input %x: f32[4]\n  %i = NonZero@13 \"nz\" (%x)\n  output %i\n}\n",
    )
    .unwrap();
    let err = atomc::aot::build(&g, "m", &InputShapes::new()).err().expect("a host op is refused");
    let msg = err.to_string();
    assert!(msg.contains("'nz'") && msg.contains("NonZero") && msg.contains("host"), "{msg}");
    let g = ir::text::parse("graph {\n  input %x: f32[n,4]\n  %y = Relu@14 \"r\" (%x)\n  output %y\n}\n").unwrap();
    let msg = atomc::aot::build(&g, "m", &InputShapes::new()).err().expect("a symbolic dim is refused").to_string();
    assert!(msg.contains("'n'") && msg.contains("--shape x="), "{msg}");
}

/// A tensor value info `name: f32[dims]`.
fn f32_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension { value: Some(tensor_shape_proto::dimension::Value::DimValue(d)) })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: Some(1), shape: Some(TensorShapeProto { dim }) })),
        }),
    }
}

/// `resize.onnx` in `dir`: `y = Resize(x f32[1,2,3,4], roi omitted, scales f32[4])`
/// (opset 13, linear), the scales an input: its output shape depends on their values.
fn resize_model(dir: &Path) -> PathBuf {
    let node = NodeProto {
        input: vec!["x".into(), String::new(), "scales".into()],
        output: vec!["y".into()],
        name: Some("resize".into()),
        op_type: Some("Resize".into()),
        domain: None,
        attribute: vec![ir::onnx::proto::AttributeProto {
            name: Some("mode".into()),
            r#type: Some(ir::onnx::proto::attribute_type::STRING),
            s: Some(b"linear".to_vec()),
            ..Default::default()
        }],
    };
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto {
            node: vec![node],
            name: Some("resize".into()),
            input: vec![f32_info("x", &[1, 2, 3, 4]), f32_info("scales", &[4])],
            output: vec![ValueInfoProto { name: Some("y".into()), r#type: None }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join("resize.onnx");
    std::fs::write(&path, model.encode_to_vec()).expect("write the model");
    path
}

fn scales() -> Tensor {
    Tensor::from_vec(vec![4], vec![1.0f32, 1.0, 2.0, 1.5]).unwrap()
}

#[test]
fn a_resize_with_its_scales_bound_links_and_matches() {
    let model = resize_model(&out_dir("resize_model"));
    let err = atomc::aot::compile(&model, &out_dir("resize_refused"), &atomc::aot::Options::default()).expect_err("scales unknown");
    let msg = err.to_string();
    assert!(msg.contains("'resize' (Resize)") && msg.contains("--bind scales=FILE.npy"), "{msg}");
    assert!(matches!(&err, atomc::aot::Error::HostStep { bind, .. } if bind == &["scales"]), "{err:?}");
    check_bound(&model, "resize_bound", &[], &[("scales", scales())], &[]);
}

#[cfg(feature = "llvm")]
#[test]
fn a_resize_with_its_scales_bound_links_and_matches_llvm_x86_64() {
    if cfg!(target_arch = "x86_64") {
        let model = resize_model(&out_dir("resize_model_llvm"));
        check_bound(&model, "resize_bound_llvm", &[], &[("scales", scales())], LLVM_X86_64);
    }
}

#[test]
fn bound_inputs_leave_the_api_and_resolve_shared_dims() {
    let g = ir::text::parse(
        "graph {\n  input %x: f32[n,4]\n  input %b: f32[n,4]\n  %y = Add@14 \"a\" (%x, %b)\n  output %y\n}\n",
    )
    .unwrap();
    let b = Tensor::from_vec(vec![3, 4], (0..12).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let bound = atomc::aot::bind_inputs(&g, &[("b".into(), b)]).expect("binds");
    assert_eq!(bound.inputs.len(), 1);
    assert_eq!(bound.inputs[0].dims, vec![ir::Dim::Fixed(3), ir::Dim::Fixed(4)], "n comes from the bound value");
    let built = atomc::aot::build(&bound, "m", &InputShapes::new()).expect("compiles without --shape");
    assert_eq!(built.program.inputs.len(), 1);
    assert_eq!(built.program.inputs[0].shape, vec![3, 4]);
}
