//! Tiered compilation: an executable whose kernels a background thread recompiles
//! (`runtime::Executable::upgrade_in_background`) gives the same outputs before and after
//! the new kernels are swapped in, and the same as the interpreter. With cargo feature
//! `llvm` the second tier is LLVM and the `auto` backend of `Session` is checked too;
//! without it, Cranelift recompiles its own kernels (the swap itself is what is tested).
//!
//! Models: `examples/mlp.onnx` (always present) and the zoo models `resnet_style` and
//! `transformer_encoder` from `$ATOMC_MODELS/zoo` (skipped with a message when the
//! variable is unset, unless `ATOMC_REQUIRE_DATA=1`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use atomc::session::{decompose_strict, random_inputs};
use ir::infer::InputShapes;
use ir::{Dim, Tensor};
use runtime::{CodeGen, Executable, ThreadPool};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Held by every test that starts background compiles, so that one test can count the
/// compiler threads alive in the process without seeing another test's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How many background compiler threads (named `atomc-upgrade`) this process has (Linux).
fn compiler_threads() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "atomc-upgrade")
        .count()
}

/// The code generator of the second tier.
const UPGRADE: CodeGen = upgrade_codegen();

const fn upgrade_codegen() -> CodeGen {
    #[cfg(feature = "llvm")]
    return CodeGen::Llvm;
    #[cfg(not(feature = "llvm"))]
    CodeGen::Cranelift
}

fn models() -> Vec<PathBuf> {
    common::mlp_and_zoo_models(&["resnet_style", "transformer_encoder"])
}

/// Every input's declared shape, symbolic dims as 1.
fn shapes(model: &ir::onnx::Model) -> InputShapes {
    let g = &model.graph;
    g.inputs
        .iter()
        .map(|i| (g.name(i.value).to_string(), i.dims.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { 1 }).collect()))
        .collect()
}

/// Fails unless `got` and `want` agree within rel 1e-4 (abs 1e-5 near zero).
fn assert_close(got: &[Tensor], want: &[Tensor], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: output count");
    for (k, (a, b)) in got.iter().zip(want).enumerate() {
        assert_eq!(a.shape(), b.shape(), "{what}: output {k} shape");
        let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let tol = 1e-5 + 1e-4 * y.abs();
            assert!((x - y).abs() <= tol, "{what}: output {k}[{i}] = {x}, want {y}");
        }
    }
}

#[test]
fn swapped_kernels_give_the_same_outputs() {
    let _serial = one_at_a_time();
    for path in models() {
        let what = path.display().to_string();
        let model = ir::onnx::import_file(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        let shapes = shapes(&model);
        let inputs: Vec<Tensor> = random_inputs(&model, &shapes, 3).unwrap().into_iter().map(|(_, t)| t).collect();
        let specialized = ir::infer::specialize(&model.graph, &shapes).unwrap();
        let want = ir::interp::run(&specialized, inputs.clone()).unwrap();

        let atoms = decompose_strict(&specialized).unwrap();
        let pool = Arc::new(ThreadPool::new(2).unwrap());
        let mut exec = Executable::from_graph_with(atoms, pool, CodeGen::Cranelift).unwrap();
        let before = exec.run(inputs.clone()).unwrap();
        assert_eq!(exec.upgraded_kernels(), 0, "{what}: nothing was upgraded yet");
        assert_close(&before, &want, &format!("{what} (first tier)"));

        let planner = Arc::new(UPGRADE.planner(2));
        exec.upgrade_in_background(planner, UPGRADE).unwrap();
        exec.wait_for_upgrades();
        assert!(!exec.is_upgrading(), "{what}: still upgrading after the wait");
        let (native, _) = exec.compiled_kernels();
        assert_eq!(exec.upgraded_kernels(), native, "{what}: every compiled kernel is replaced");
        let after = exec.run(inputs).unwrap();
        assert_close(&after, &before, &format!("{what} (after the swap)"));
        eprintln!("{what}: {native} kernels swapped to {UPGRADE:?}, outputs agree");
    }
}

/// Dropped while its compiler thread is inside a compile (the largest model at hand, so
/// that the thread is still busy a moment after it starts), the executable waits for that
/// thread: none may outlive it.
#[test]
fn dropping_an_executable_while_it_upgrades_is_safe() {
    let _serial = one_at_a_time();
    let path = models().pop().unwrap();
    let model = ir::onnx::import_file(&path).unwrap();
    let specialized = ir::infer::specialize(&model.graph, &shapes(&model)).unwrap();
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let mut exec = Executable::from_graph_with(decompose_strict(&specialized).unwrap(), pool, CodeGen::Cranelift).unwrap();
    exec.upgrade_in_background(Arc::new(UPGRADE.planner(1)), UPGRADE).unwrap();
    assert!(exec.is_upgrading());
    std::thread::sleep(std::time::Duration::from_millis(20));
    drop(exec);
    // A compiler thread still inside LLVM when the process exits crashes it in LLVM's
    // global destructors.
    assert_eq!(compiler_threads(), 0, "{}: the background compiler thread outlived its executable", path.display());
}

/// `Session` with the `auto` backend: Cranelift kernels at once, LLVM's after the wait.
#[cfg(feature = "llvm")]
#[test]
fn auto_backend_switches_to_llvm_kernels() {
    let _serial = one_at_a_time();
    use atomc::session::{Backend, Options, Session};
    assert_eq!(Backend::default(), Backend::Auto, "auto is the default with feature llvm");
    for path in models() {
        let what = path.display().to_string();
        let mut session = Session::load(&path, Options { backend: Backend::Auto, threads: Some(2), ..Options::default() }).unwrap();
        let shapes = shapes(session.model());
        let inputs = random_inputs(session.model(), &shapes, 5).unwrap();
        let first: Vec<Tensor> = session.run(inputs.clone()).unwrap().into_iter().map(|(_, t)| t).collect();
        let replaced = session.wait_for_upgrades();
        assert!(replaced > 0, "{what}: no kernel was replaced by LLVM's");
        let steady: Vec<Tensor> = session.run(inputs.clone()).unwrap().into_iter().map(|(_, t)| t).collect();
        assert_close(&steady, &first, &format!("{what} (auto, after the swap)"));
        let mut llvm = Session::load(&path, Options { backend: Backend::Llvm, threads: Some(2), ..Options::default() }).unwrap();
        let want: Vec<Tensor> = llvm.run(inputs).unwrap().into_iter().map(|(_, t)| t).collect();
        assert_close(&steady, &want, &format!("{what} (auto vs llvm)"));
    }
}
