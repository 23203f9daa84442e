//! Runs allocate nothing: a counting global allocator wraps the system one, and after two
//! warm-up runs, five runs of `Session::run_into` on the Cranelift backend must not allocate
//! at all, at one and at two threads. Models: `examples/mlp.onnx` (always present) and the
//! zoo models `resnet_style` and `transformer_encoder` from `$ATOMC_MODELS/zoo` (skipped
//! with a message when the variable is unset, unless `ATOMC_REQUIRE_DATA=1`).
//!
//! One test function: other tests running at the same time would allocate too.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use atomc::session::{random_inputs, Backend, Options, Session};
use ir::{Dim, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's obligations are `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by five `run_into` calls after two warm-up runs.
fn allocations(path: &Path, threads: usize) -> usize {
    let mut session = Session::load(path, Options { backend: Backend::Cranelift, threads: Some(threads), ..Options::default() })
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let g = &session.model().graph;
    let shapes = g
        .inputs
        .iter()
        .map(|i| {
            let s = i.dims.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { 1 }).collect();
            (g.name(i.value).to_string(), s)
        })
        .collect();
    let inputs: Vec<Tensor> = random_inputs(session.model(), &shapes, 7).unwrap().into_iter().map(|(_, t)| t).collect();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let mut outputs: Vec<Tensor> = Vec::new();
    outputs.resize_with(session.output_names().len(), || Tensor::scalar(0f32));
    for _ in 0..2 {
        session.run_into(&refs, &mut outputs).unwrap();
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..5 {
        session.run_into(&refs, &mut outputs).unwrap();
    }
    let n = ALLOCATIONS.load(Ordering::SeqCst) - before;
    // The outputs are the ones `run` computes.
    let want = session
        .run(g_inputs(&session, &inputs))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for ((_, w), got) in want.iter().zip(&outputs) {
        assert_eq!(w, got, "{}: run_into and run disagree", path.display());
    }
    n
}

fn g_inputs(session: &Session, inputs: &[Tensor]) -> Vec<(String, Tensor)> {
    let g = &session.model().graph;
    g.inputs.iter().zip(inputs).map(|(i, t)| (g.name(i.value).to_string(), t.clone())).collect()
}

#[test]
fn runs_allocate_nothing() {
    let models = common::mlp_and_zoo_models(&["resnet_style", "transformer_encoder"]);
    let mut failures = Vec::new();
    for path in &models {
        for threads in [1, 2] {
            let n = allocations(path, threads);
            eprintln!("{}: {threads} thread(s): {n} allocations in 5 runs", path.display());
            if n != 0 {
                failures.push(format!("{} at {threads} thread(s): {n} allocations", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "runs allocated:\n{}", failures.join("\n"));
}
