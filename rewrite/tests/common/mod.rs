//! Shared harness of the rule property tests: build a one-op graph, decompose it, check
//! that the rule under test fired and nothing but host ops stayed high-level, and compare
//! the atom graph with the high-level graph on the reference interpreter.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use ir::graph::{Dim, Input, Node, ValueType};
use ir::{Attr, Attrs, DType, Graph, Op, OpKind, Tensor};
use proptest::prelude::*;
use std::sync::Arc;

/// One input of the op under test: a graph input (`Input`) or a constant (`Const`), or
/// an omitted optional input.
pub enum Arg {
    Input(Tensor),
    Const(Tensor),
    Absent,
}

/// A graph of one op (ONNX name, opset version, attributes) over `args`, specialized
/// (constant-only nodes fold away: use [`one_op_unfolded`] to test rules on them).
pub fn one_op(op: &str, version: u32, attrs: Vec<(&str, Attr)>, args: &[Arg], num_outputs: usize) -> (Graph, Vec<Tensor>) {
    let (g, feeds) = build(op, version, attrs, args, num_outputs);
    let shapes = g
        .inputs
        .iter()
        .zip(&feeds)
        .map(|(i, t)| (g.name(i.value).to_string(), t.shape().to_vec()))
        .collect();
    let spec = ir::infer::specialize(&g, &shapes).unwrap_or_else(|e| panic!("{op}: specialize failed: {e}"));
    (spec, feeds)
}

/// A graph of one op with types inferred but nothing folded, so a rule sees a node whose
/// inputs are all constants (Shape, Range, windows...).
pub fn one_op_unfolded(op: &str, version: u32, attrs: Vec<(&str, Attr)>, args: &[Arg], num_outputs: usize) -> (Graph, Vec<Tensor>) {
    let (mut g, feeds) = build(op, version, attrs, args, num_outputs);
    for (input, t) in g.inputs.clone().iter().zip(&feeds) {
        g.values[input.value.index()].ty = Some(ValueType::new(t.dtype(), t.shape().to_vec()));
    }
    ir::infer::infer_types(&mut g, false).unwrap_or_else(|e| panic!("{op}: infer failed: {e}"));
    (g, feeds)
}

fn build(op: &str, version: u32, attrs: Vec<(&str, Attr)>, args: &[Arg], num_outputs: usize) -> (Graph, Vec<Tensor>) {
    let kind = OpKind::from_name(op).unwrap_or_else(|| panic!("no op {op}"));
    let mut a = Attrs::new();
    for (k, v) in attrs {
        a.set(k, v);
    }
    let mut g = Graph::default();
    let mut ins = Vec::new();
    let mut feeds = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        match arg {
            Arg::Absent => ins.push(None),
            Arg::Input(t) => {
                let v = g.add_value(format!("in{i}"));
                g.inputs.push(Input {
                    value: v,
                    dtype: t.dtype(),
                    dims: t.shape().iter().map(|&n| Dim::Fixed(n)).collect(),
                });
                feeds.push(t.clone());
                ins.push(Some(v));
            }
            Arg::Const(t) => {
                let v = g.add_value(format!("c{i}"));
                g.consts.insert(v, Arc::new(t.clone()));
                ins.push(Some(v));
            }
        }
    }
    let outs: Vec<_> = (0..num_outputs).map(|k| Some(g.add_value(format!("out{k}")))).collect();
    g.outputs = outs.iter().flatten().copied().collect();
    g.nodes.push(Node { name: "node".into(), op: Op { kind, attrs: a, version }, inputs: ins, outputs: outs });
    (g, feeds)
}

/// Deterministic values in [-1, 1) from a seed (for tests where proptest explores the
/// geometry, not the values).
pub fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Relative closeness: `|a - b| <= tol * (1 + |b|)`; NaNs match NaNs; integers exact.
pub fn close(got: &Tensor, want: &Tensor, tol: f64) -> Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!("got {:?}, want {:?}", ValueType::of(got), ValueType::of(want)));
    }
    if !got.dtype().is_float() {
        let (a, b) = (got.to_i64_vec(), want.to_i64_vec());
        return if a == b { Ok(()) } else { Err(format!("integers differ: {a:?} vs {b:?}")) };
    }
    for (i, (a, b)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        let ok = if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if a.is_infinite() || b.is_infinite() {
            *a == b
        } else {
            (a - b).abs() <= tol * (1.0 + b.abs())
        };
        if !ok {
            return Err(format!("element {i}: got {a}, want {b}"));
        }
    }
    Ok(())
}

/// Decomposes `graph`, requires `rule` to have fired and no op but host ops to stay
/// high-level, and compares both graphs on `feeds` with tolerance `tol`. An input the
/// high-level op rejects is not a counterexample (the case is skipped).
pub fn check_rule(rule: &str, graph: &Graph, feeds: Vec<Tensor>, tol: f64) -> Result<(), TestCaseError> {
    let want = match ir::interp::run(graph, feeds.clone()) {
        Ok(w) => w,
        Err(e) => return Err(TestCaseError::reject(format!("reference rejects the case: {e}"))),
    };
    let d = rewrite::decompose(graph, &rewrite::Options::default())
        .map_err(|e| TestCaseError::fail(format!("decompose failed: {e}")))?;
    if let Some((n, op, why)) = d.report.high_level.iter().find(|(_, _, w)| !w.starts_with("host")) {
        return Err(TestCaseError::fail(format!("{n} ({op}) stayed high-level: {why}")));
    }
    if !d.fired.contains(&rule) {
        return Err(TestCaseError::fail(format!("rule {rule} did not fire (fired: {:?})", d.fired)));
    }
    let got = ir::interp::run(&d.graph, feeds).map_err(|e| TestCaseError::fail(format!("atom graph failed: {e}")))?;
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        close(g, w, tol).map_err(|e| TestCaseError::fail(format!("{rule} output {k}: {e}")))?;
    }
    Ok(())
}

/// A shape of `rank` with dims in `1..=max`.
pub fn shape(rank: usize, max: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1..=max, rank)
}

/// Up to 4-D shapes with small dims.
pub fn any_shape() -> impl Strategy<Value = Vec<usize>> {
    (0usize..=4).prop_flat_map(|r| shape(r, 4))
}

/// An f32 tensor of `shape` with values in [-lim, lim].
pub fn f32_tensor(shape: Vec<usize>, lim: f32) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    proptest::collection::vec(-lim..=lim, n).prop_map(move |v| Tensor::from_vec(shape.clone(), v).unwrap())
}

/// An i64 tensor of `shape` with values in [lo, hi].
pub fn i64_tensor(shape: Vec<usize>, lo: i64, hi: i64) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    proptest::collection::vec(lo..=hi, n).prop_map(move |v| Tensor::from_vec(shape.clone(), v).unwrap())
}

/// A tensor of another dtype built from f32 values.
pub fn cast(t: Tensor, d: DType) -> Tensor {
    t.cast(d)
}

pub fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// The proptest configuration of the rule tests: `cases` cases, no persistence files.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}
