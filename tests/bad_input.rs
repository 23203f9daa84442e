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
