//! `atomc tune` on the example MLP: a short tune records every tuned kernel, a second tune
//! on the same store (in memory, or the records file reopened) resumes from those records,
//! and the CLI prints the table, writes the plot and appends to the records file.

use anyhow::Result;
use atomc::tune::{DbStore, MemoryStore, Store, TuneOptions, tune};
use std::path::Path;
use std::time::Duration;

fn options(trials: usize) -> TuneOptions {
    TuneOptions {
        trials: Some(trials),
        threads: 2,
        min_measure_time: Duration::from_millis(2),
        min_model_time: Duration::from_millis(20),
        ..TuneOptions::default()
    }
}

#[test]
fn a_second_tune_resumes_from_the_records() -> Result<()> {
    let model = Path::new("examples/mlp.onnx");
    let mut store = MemoryStore::default();
    let mut calls = 0;
    let first = tune(model, &options(20), &mut store, &mut |_| calls += 1)?;
    assert!(!first.kernels.is_empty());
    assert!(first.trials > 0 && first.trials <= 20, "{} trials", first.trials);
    assert_eq!(calls, first.trials);
    assert_eq!(first.curve.len(), first.trials + 1);
    assert!(first.curve.windows(2).all(|w| w[1].1 <= w[0].1), "best-so-far never rises");
    assert!(first.model_before_ms > 0.0 && first.model_after_ms > 0.0);
    assert_eq!(store.len(), first.kernels.len());
    assert!(first.kernels.iter().all(|k| !k.resumed));
    // A kernel whose untuned schedule stayed best reports one timing for both columns (a
    // new best was accepted only after beating the incumbent back to back).
    assert!(first.kernels.iter().filter(|k| k.after == k.before).all(|k| k.after_s == k.before_s));

    let second = tune(model, &options(0), &mut store, &mut |_| {})?;
    assert_eq!(second.trials, 0);
    assert_eq!(second.kernels.len(), first.kernels.len());
    assert!(second.kernels.iter().all(|k| k.resumed));
    Ok(())
}

#[test]
fn the_cli_prints_the_table_and_writes_the_plot() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("atomc-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let plot = dir.join("tune.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atomc"))
        .args(["tune", "examples/mlp.onnx", "--trials", "8", "--threads", "1", "--plot"])
        .arg(&plot)
        .arg("--db")
        .arg(dir.join("records.jsonl"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("speedup") && stdout.contains("model latency:"), "{stdout}");
    let svg = std::fs::read_to_string(&plot)?;
    assert!(svg.starts_with("<svg") && svg.contains("trials"), "{}", &svg[..svg.len().min(200)]);
    assert!(std::fs::read_to_string(dir.join("records.jsonl"))?.lines().count() > 0);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn the_records_file_keeps_the_bests_across_processes() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("atomc-tune-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("records.jsonl");
    let first = {
        let mut store = DbStore::open(&path, 2, runtime::CodeGen::Cranelift)?;
        tune(Path::new("examples/mlp.onnx"), &options(20), &mut store, &mut |_| {})?
    };
    let lines = std::fs::read_to_string(&path)?.lines().count();
    assert!(lines >= first.kernels.len(), "{lines} records for {} kernels", first.kernels.len());
    // A new store on the same file (a second process) resumes every kernel.
    let mut store = DbStore::open(&path, 2, runtime::CodeGen::Cranelift)?;
    assert!(store.warnings().is_empty(), "{:?}", store.warnings());
    let second = tune(Path::new("examples/mlp.onnx"), &options(0), &mut store, &mut |_| {})?;
    assert!(second.kernels.iter().all(|k| k.resumed));
    // Another thread count is another key: nothing to resume.
    let mut other = DbStore::open(&path, 1, runtime::CodeGen::Cranelift)?;
    let third = tune(Path::new("examples/mlp.onnx"), &TuneOptions { threads: 1, ..options(0) }, &mut other, &mut |_| {})?;
    assert!(third.kernels.iter().all(|k| !k.resumed));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn the_memory_store_keeps_the_fastest() {
    let mut store = MemoryStore::default();
    let s = ir::schedule::Schedule::naive();
    let fast = ir::schedule::Schedule { steps: vec![ir::schedule::ScheduleStep::Parallel { axes: 1 }] };
    let k = ir::kernel::Kernel {
        name: "a".into(),
        inputs: vec![],
        output: ir::kernel::Buffer { name: "y".into(), dtype: ir::DType::F32, numel: 4 },
        out_shape: vec![4],
        red_shape: vec![],
        store: ir::kernel::Affine { offset: 0, coefs: vec![1] },
        body: ir::kernel::Body::Compute {
            reduce: None,
            body: ir::kernel::Expr::Const { value: 1.0, dtype: ir::DType::F32 },
            epilogue: ir::kernel::Expr::Acc,
        },
    };
    assert!(store.record("h", &k, &s, 2.0, 5).is_ok());
    assert!(store.record("h", &k, &fast, 1.0, 5).is_ok());
    assert!(store.record("h", &k, &s, 3.0, 5).is_ok());
    assert_eq!(store.best("h"), Some(fast));
    assert_eq!(store.best("other"), None);
    assert_eq!(store.len(), 1);
}

/// `--backend llvm`: the kernels measured are LLVM's, and the records name LLVM's view of
/// the host, so an LLVM session uses them and a Cranelift one (another target) does not.
#[cfg(feature = "llvm")]
#[test]
fn llvm_records_serve_llvm_sessions_only() -> Result<()> {
    use atomc::session::{Backend, Options, Session};
    let dir = std::env::temp_dir().join(format!("atomc-tune-llvm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("records.jsonl");
    let report = {
        let mut store = DbStore::open(&path, 1, runtime::CodeGen::Llvm)?;
        let options = TuneOptions { threads: 1, codegen: runtime::CodeGen::Llvm, ..options(12) };
        tune(Path::new("examples/mlp.onnx"), &options, &mut store, &mut |_| {})?
    };
    assert!(!report.kernels.is_empty() && report.trials > 0);
    let session = |backend| -> Result<usize> {
        let mut s = Session::load("examples/mlp.onnx", Options { backend, threads: Some(1), db: Some(path.clone()), ..Options::default() })?;
        // The shape the tune specialized to (symbolic dims as 1).
        let x = ir::Tensor::from_vec(vec![1, 64], vec![0.1f32; 64])?;
        s.run(vec![("x".to_string(), x)])?;
        Ok(s.tuned_kernels())
    };
    assert!(session(Backend::Llvm)? > 0, "an LLVM session uses the LLVM records");
    assert_eq!(session(Backend::Cranelift)?, 0, "a Cranelift session does not");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
