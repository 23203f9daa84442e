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
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

#[test]
fn dropping_an_executable_while_it_upgrades_is_safe() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.onnx");
    let model = ir::onnx::import_file(&path).unwrap();
    let specialized = ir::infer::specialize(&model.graph, &shapes(&model)).unwrap();
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let mut exec = Executable::from_graph_with(decompose_strict(&specialized).unwrap(), pool, CodeGen::Cranelift).unwrap();
    exec.upgrade_in_background(Arc::new(UPGRADE.planner(1)), UPGRADE).unwrap();
    assert!(exec.is_upgrading());
    drop(exec);
}

/// `Session` with the `auto` backend: Cranelift kernels at once, LLVM's after the wait.
#[cfg(feature = "llvm")]
#[test]
fn auto_backend_switches_to_llvm_kernels() {
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
