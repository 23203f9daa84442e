//! Bad input gives a clear error, never a panic: the malformed-model corpus in
//! `tests/bad_models/` (each file with the text its error must contain, in `expected.txt`)
//! and wrong inputs at run time.

#![allow(clippy::expect_used)]

use atomc::session::{random_inputs, Options, Session};
use ir::infer::InputShapes;
use ir::{Dim, Tensor};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Import, specialize (symbolic dims as 1), and run on random inputs: the first error.
fn load_and_run(path: &Path) -> Result<(), String> {
    let model = ir::onnx::import_file(path).map_err(|e| e.to_string())?;
    let g = &model.graph;
    let shapes: InputShapes = g
        .inputs
        .iter()
        .map(|i| {
            let s = i.dims.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { 1 }).collect();
            (g.name(i.value).to_string(), s)
        })
        .collect();
    let spec = ir::infer::specialize(g, &shapes).map_err(|e| e.to_string())?;
    let inputs = random_inputs(&model, &shapes, 0).map_err(|e| e.to_string())?;
    ir::interp::run(&spec, inputs.into_iter().map(|(_, t)| t).collect()).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn malformed_models_give_the_expected_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_models");
    let expected = std::fs::read_to_string(dir.join("expected.txt")).expect("expected.txt");
    let mut failures = Vec::new();
    let mut count = 0;
    for line in expected.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (file, want) = line.split_once('\t').expect("file<TAB>text");
        count += 1;
        let result = catch_unwind(AssertUnwindSafe(|| load_and_run(&dir.join(file))));
        match result {
            Err(_) => failures.push(format!("{file}: PANICKED")),
            Ok(Ok(())) => failures.push(format!("{file}: no error (expected '{want}')")),
            Ok(Err(e)) if !e.contains(want) => failures.push(format!("{file}: error '{e}' does not contain '{want}'")),
            Ok(Err(e)) => eprintln!("{file}: {e}"),
        }
    }
    assert!(count >= 30, "the corpus has only {count} models");
    assert!(failures.is_empty(), "{} of {count} bad models misbehaved:\n{}", failures.len(), failures.join("\n"));
}

fn mlp() -> Session {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.onnx");
    Session::load(path, Options::default()).expect("the example model loads")
}

fn run_err(inputs: Vec<(String, Tensor)>) -> String {
    match mlp().run(inputs) {
        Ok(_) => panic!("the run should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_dtype_names_the_input() {
    let e = run_err(vec![("x".into(), Tensor::from_vec(vec![2, 64], vec![0i64; 128]).expect("tensor"))]);
    assert!(e.contains("input 'x' must be f32, got i64"), "{e}");
}

#[test]
fn wrong_shape_names_the_input() {
    let e = run_err(vec![("x".into(), Tensor::from_vec(vec![2, 63], vec![0f32; 126]).expect("tensor"))]);
    assert!(e.contains("input 'x' has shape [2,63] but the model declares [batch,64]"), "{e}");
    let e = run_err(vec![("x".into(), Tensor::from_vec(vec![128], vec![0f32; 128]).expect("tensor"))]);
    assert!(e.contains("input 'x' has rank 1 but the model declares rank 2"), "{e}");
}

#[test]
fn wrong_input_count_names_the_input() {
    let e = run_err(vec![]);
    assert!(e.contains("input 'x' is missing"), "{e}");
    let x = Tensor::from_vec(vec![2, 64], vec![0f32; 128]).expect("tensor");
    let e = run_err(vec![("x".into(), x.clone()), ("extra".into(), x)]);
    assert!(e.contains("no input named 'extra'"), "{e}");
}

#[test]
fn cli_reports_a_bad_npy_file() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad_npy");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let bad = tmp.join("x.npy");
    std::fs::write(&bad, b"not an npy file").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atomc"))
        .args(["run", "examples/mlp.onnx", "--output-dir"])
        .arg(&tmp)
        .arg("--input")
        .arg(format!("x={}", bad.display()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("atomc runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("input 'x'") && stderr.contains("x.npy"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn run_into_names_the_input() {
    let mut s = mlp();
    let x = Tensor::from_vec(vec![2, 64], vec![0.5f32; 128]).expect("tensor");
    let mut outputs = vec![Tensor::scalar(0f32)];
    let err = |s: &mut Session, inputs: &[&Tensor], outputs: &mut [Tensor]| match s.run_into(inputs, outputs) {
        Ok(()) => panic!("the run should fail"),
        Err(e) => e.to_string(),
    };
    let e = err(&mut s, &[], &mut outputs);
    assert!(e.contains("the model takes 1 inputs (x), 0 given"), "{e}");
    let wrong = Tensor::from_vec(vec![2, 64], vec![0i64; 128]).expect("tensor");
    let e = err(&mut s, &[&wrong], &mut outputs);
    assert!(e.contains("input 'x' must be f32, got i64"), "{e}");
    let e = err(&mut s, &[&Tensor::from_vec(vec![2, 63], vec![0f32; 126]).expect("tensor")], &mut outputs);
    assert!(e.contains("input 'x' has shape [2,63] but the model declares [batch,64]"), "{e}");
    s.run_into(&[&x], &mut outputs).expect("a good run");
    assert_eq!(outputs[0].shape(), &[2, 10]);
    let e = err(&mut s, &[&x], &mut []);
    assert!(e.contains("the model has 1 outputs, 0 output tensors given"), "{e}");
    // A second input shape is specialized and compiled too; the first stays cached.
    let x3 = Tensor::from_vec(vec![3, 64], vec![0.5f32; 192]).expect("tensor");
    s.run_into(&[&x3], &mut outputs).expect("a second shape");
    assert_eq!(outputs[0].shape(), &[3, 10]);
    let y3 = outputs[0].clone();
    s.run_into(&[&x], &mut outputs).expect("the first shape again");
    assert_eq!(outputs[0].shape(), &[2, 10]);
    let want = s.run(vec![("x".into(), x3)]).expect("run");
    assert_eq!(want[0].1, y3);
}

#[test]
fn executable_checks_inputs_against_its_static_shapes() {
    let model = ir::onnx::import_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.onnx")).expect("import");
    let shapes: InputShapes = [("x".to_string(), vec![2, 64])].into_iter().collect();
    let spec = ir::infer::specialize(&model.graph, &shapes).expect("specialize");
    let atoms = atomc::session::decompose_strict(&spec).expect("decompose");
    let pool = std::sync::Arc::new(runtime::ThreadPool::new(2).expect("pool"));
    let mut exec = runtime::Executable::from_graph(atoms, pool).expect("compile");
    let e = exec.run(vec![Tensor::from_vec(vec![3, 64], vec![0f32; 192]).expect("tensor")]).expect_err("bad shape");
    assert!(e.to_string().contains("input 'x' must have shape [2,64], got [3,64]"), "{e}");
    let e = exec.run(vec![Tensor::from_vec(vec![2, 64], vec![0u8; 128]).expect("tensor")]).expect_err("bad dtype");
    assert!(e.to_string().contains("input 'x' must be f32, got u8"), "{e}");
    let e = exec.run(vec![]).expect_err("no input");
    assert!(e.to_string().contains("the model takes 1 inputs (x), 0 given"), "{e}");
}

#[test]
fn cli_names_an_input_of_the_wrong_shape_or_dtype() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wrong_npy");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    for (file, t, want) in [
        ("shape.npy", Tensor::from_vec(vec![2, 63], vec![0f32; 126]), "input 'x' has shape [2,63] but the model declares [batch,64]"),
        ("dtype.npy", Tensor::from_vec(vec![2, 64], vec![0i64; 128]), "input 'x' must be f32, got i64"),
    ] {
        let path = tmp.join(file);
        atomc::npy::write(&path, &t.expect("tensor")).expect("write npy");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_atomc"))
            .args(["run", "examples/mlp.onnx", "--output-dir"])
            .arg(&tmp)
            .arg("--input")
            .arg(format!("x={}", path.display()))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("atomc runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(want), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn cli_compile_bind_errors_name_the_input() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad_bind");
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let npy = |file: &str, t: Result<Tensor, ir::Error>| {
        let path = tmp.join(file);
        atomc::npy::write(&path, &t.expect("tensor")).expect("write npy");
        format!("{}", path.display())
    };
    let good = npy("good.npy", Tensor::from_vec(vec![2, 64], vec![0f32; 128]));
    let shape = npy("shape.npy", Tensor::from_vec(vec![2, 63], vec![0f32; 126]));
    let dtype = npy("dtype.npy", Tensor::from_vec(vec![2, 64], vec![0i64; 128]));
    let garbage = tmp.join("garbage.npy");
    std::fs::write(&garbage, b"not an npy file").expect("write");
    let missing = tmp.join("missing.npy");
    let bind = |spec: String| vec!["--bind".to_string(), spec];
    let cases: Vec<(Vec<String>, &str)> = vec![
        (bind(format!("y={good}")), "--bind names 'y', which is not an input of the model (its inputs: x)"),
        (bind(format!("x={shape}")), "--bind x: the value has shape [2,63] but the model declares [batch,64]"),
        (bind(format!("x={dtype}")), "--bind x: the value is i64 but the model declares the input as f32[batch,64]"),
        (bind(format!("x={}", garbage.display())), "--bind x: npy file"),
        (bind(format!("x={}", missing.display())), "missing.npy"),
        (bind("x".into()), "--bind x: expected NAME=FILE.npy"),
        ([bind(format!("x={good}")), bind(format!("x={good}"))].concat(), "--bind x: the input is bound more than once"),
        (
            [bind(format!("x={good}")), vec!["--shape".into(), "x=3x64".into()]].concat(),
            "--bind x: the value has shape [2,64] but --shape gives [3,64]",
        ),
    ];
    for (args, want) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_atomc"))
            .args(["compile", "examples/mlp.onnx", "-o"])
            .arg(tmp.join("out"))
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("atomc runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
