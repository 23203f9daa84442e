//! `atomc bench` from the command line: `--json` prints one object with the statistics as
//! numbers in order, and bad input (a missing model, a bad `--shape`) is a clear error with
//! a non-zero exit, not a panic.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn atomc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atomc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("atomc starts")
}

const QUICK: [&str; 6] = ["--min-runs", "3", "--warmup-ms", "0", "--min-time-ms", "0"];

#[test]
fn json_report_has_every_statistic_in_order() {
    let mut args = vec!["bench", "examples/mlp.onnx", "--json"];
    args.extend(QUICK);
    let out = atomc(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "atomc bench failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("stdout is one JSON object");
    for field in ["threads", "compile_ms", "first_run_ms", "median_ms", "p10_ms", "p90_ms", "mean_ms", "min_ms", "runs"] {
        assert!(v[field].is_number(), "'{field}' is not a number in {v}");
    }
    for field in ["model", "backend"] {
        assert!(v[field].is_string(), "'{field}' is not a string in {v}");
    }
    let num = |f: &str| v[f].as_f64().unwrap();
    assert!(num("runs") >= 3.0, "{v}");
    assert!(num("min_ms") <= num("p10_ms"), "{v}");
    assert!(num("p10_ms") <= num("median_ms"), "{v}");
    assert!(num("median_ms") <= num("p90_ms"), "{v}");
    assert!(num("compile_ms") > 0.0, "{v}");
    assert_eq!(v["shapes"]["x"], serde_json::json!([1, 64]), "symbolic dims default to 1: {v}");
}

#[test]
fn text_report_and_shapes_and_threads() {
    let mut args = vec!["bench", "examples/mlp.onnx", "--shape", "x=4x64", "--threads", "2", "--backend", "interp-kernels"];
    args.extend(QUICK);
    let out = atomc(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "atomc bench failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    for want in ["interp-kernels", "2 threads", "x=4x64", "compile:", "first run:", "median"] {
        assert!(stdout.contains(want), "'{want}' not in:\n{stdout}");
    }
}

fn assert_fails_with(args: &[&str], want: &str) {
    let out = atomc(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "atomc {args:?} succeeded");
    assert!(!stderr.contains("panicked"), "atomc {args:?} panicked: {stderr}");
    assert!(stderr.contains(want), "atomc {args:?}: '{want}' not in stderr: {stderr}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let missing = "no/such/model.onnx";
    assert!(!Path::new(missing).exists());
    assert_fails_with(&["bench", missing, "--json"], missing);
    assert_fails_with(&["bench", "examples/mlp.onnx", "--shape", "x=2xq"], "'q' is not a dimension");
    assert_fails_with(&["bench", "examples/mlp.onnx", "--shape", "nope=2x64"], "no input named 'nope'");
    assert_fails_with(&["bench", "examples/mlp.onnx", "--shape", "x=2x64x3"], "3 dims given");
    assert_fails_with(&["bench", "examples/mlp.onnx", "--backend", "gpu"], "unknown backend 'gpu'");
}

#[test]
fn profile_lists_every_compiled_step() {
    let mut args = vec!["bench", "examples/mlp.onnx", "--json", "--profile"];
    args.extend(QUICK);
    let out = atomc(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "atomc bench failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("stdout is one JSON object");
    let steps = v["profile"].as_array().expect("a profile array");
    assert!(!steps.is_empty(), "{v}");
    let mut total = 0.0;
    let mut last = f64::INFINITY;
    for s in steps {
        assert_eq!(s["kind"], "kernel", "every step of the MLP is compiled: {v}");
        let ms = s["ms"].as_f64().unwrap();
        assert!(ms <= last, "slowest first: {v}");
        last = ms;
        total += s["percent"].as_f64().unwrap();
    }
    assert!((total - 100.0).abs() < 1e-6, "percentages add up to 100: {v}");
    // Without --profile there is no profile field.
    let mut args = vec!["bench", "examples/mlp.onnx", "--json"];
    args.extend(QUICK);
    let v: serde_json::Value = serde_json::from_slice(&atomc(&args).stdout).expect("JSON");
    assert!(v.get("profile").is_none(), "{v}");
}
