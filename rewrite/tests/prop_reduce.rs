//! Property tests of the reduce family's lowering rules: random shapes (rank 0 to 4, some
//! with empty axes), axes (attribute or input by opset, negative, empty with and without
//! `noop_with_empty_axes`), `keepdims`, dtypes and values with many ties.
//!
//! Tolerances: 0.0 (exact) for integer and bool results, arg reductions, Hardmax, TopK
//! and the max/min/sum/prod reductions (the same `Reduce` kernel as the reference); 1e-5
//! for float results whose formula is reassociated (two-pass log-sum-exp, softmax, the
//! triangular-window scans, normalization); 2e-3 for f16 (one f16 ulp after rounding).
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// (ONNX op, rule) of the multi-axis reductions.
const REDUCTIONS: &[(&str, &str)] = &[
    ("ReduceSum", "reduce/sum"),
    ("ReduceMean", "reduce/mean"),
    ("ReduceMax", "reduce/max"),
    ("ReduceMin", "reduce/min"),
    ("ReduceProd", "reduce/prod"),
    ("ReduceL1", "reduce/l1"),
    ("ReduceL2", "reduce/l2"),
    ("ReduceLogSum", "reduce/log-sum"),
    ("ReduceLogSumExp", "reduce/log-sum-exp"),
    ("ReduceSumSquare", "reduce/sum-square"),
];

/// A shape of rank 0 to 4 with dims 1..=4, or with one dim 0 when `empty`.
fn shape_maybe_empty() -> impl Strategy<Value = Vec<usize>> {
    (any_shape(), any::<bool>(), 0usize..4).prop_map(|(mut s, empty, at)| {
        if empty && s.len() >= 2 && at == 0 {
            s[1] = 0;
        }
        s
    })
}

/// Axes from a mask over the rank, each possibly written negative.
fn axes_of(rank: usize, mask: &[bool], neg: &[bool]) -> Vec<i64> {
    (0..rank).filter(|&a| mask[a]).map(|a| if neg[a] { a as i64 - rank as i64 } else { a as i64 }).collect()
}

/// A one-op reduction graph; `new_form` takes the axes as an input (opset 18), else as an
/// attribute (opset 13, ReduceSum 11).
fn reduction_graph(
    op: &str,
    x: Tensor,
    axes: &[i64],
    keep: bool,
    noop: bool,
    new_form: bool,
    omit_empty: bool,
) -> (ir::Graph, Vec<Tensor>) {
    let mut attrs = vec![("keepdims", Attr::Int(keep as i64))];
    if new_form {
        attrs.push(("noop_with_empty_axes", Attr::Int(noop as i64)));
        let axes_arg = if axes.is_empty() && omit_empty {
            Arg::Absent
        } else {
            Arg::Const(Tensor::from_vec(vec![axes.len()], axes.to_vec()).unwrap())
        };
        one_op(op, 18, attrs, &[Arg::Input(x), axes_arg], 1)
    } else {
        if !axes.is_empty() {
            attrs.push(("axes", ints(axes)));
        }
        let v = if op == "ReduceSum" { 11 } else { 13 };
        one_op(op, v, attrs, &[Arg::Input(x)], 1)
    }
}

fn float_tol(op: &str) -> f64 {
    match op {
        "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceMean" | "ReduceL1" | "ReduceL2"
        | "ReduceSumSquare" | "ReduceLogSum" => 1e-6,
        _ => 1e-5,
    }
}

/// A tensor of small integers (many ties) as `dtype`.
fn small_ints(shape: Vec<usize>, dtype: DType) -> impl Strategy<Value = Tensor> {
    i64_tensor(shape, -2, 2).prop_map(move |t| t.cast(dtype))
}

proptest! {
    #![proptest_config(config(256))]

    /// Float reductions over random axes, both axes forms, keepdims and noop.
    #[test]
    fn float_reductions(
        op in 0..REDUCTIONS.len(),
        x in shape_maybe_empty().prop_flat_map(|s| f32_tensor(s, 3.0)),
        mask in proptest::collection::vec(any::<bool>(), 4),
        neg in proptest::collection::vec(any::<bool>(), 4),
        keep in any::<bool>(),
        noop in any::<bool>(),
        new_form in any::<bool>(),
        omit_empty in any::<bool>(),
    ) {
        let (name, rule) = REDUCTIONS[op];
        let axes = axes_of(x.rank(), &mask, &neg);
        let (g, feeds) = reduction_graph(name, x, &axes, keep, noop, new_form, omit_empty);
        check_rule(rule, &g, feeds, float_tol(name))?;
    }

    /// Integer reductions are exact (wrapping; L2 and the logarithms through f64).
    #[test]
    fn int_reductions(
        op in 0..REDUCTIONS.len(),
        dtype in prop_oneof![Just(DType::I32), Just(DType::I64)],
        x in any_shape().prop_flat_map(move |s| small_ints(s, DType::I32)),
        mask in proptest::collection::vec(any::<bool>(), 4),
        keep in any::<bool>(),
        new_form in any::<bool>(),
    ) {
        let (name, rule) = REDUCTIONS[op];
        prop_assume!(name != "ReduceLogSumExp");
        let axes = axes_of(x.rank(), &mask, &[false; 4]);
        let (g, feeds) = reduction_graph(name, x.cast(dtype), &axes, keep, false, new_form, true);
        check_rule(rule, &g, feeds, 0.0)?;
    }

    /// f16 reductions compute in f32 like the reference.
    #[test]
    fn f16_reductions(
        op in 0..REDUCTIONS.len(),
        x in shape(3, 4).prop_flat_map(|s| f32_tensor(s, 3.0)),
        mask in proptest::collection::vec(any::<bool>(), 4),
        keep in any::<bool>(),
    ) {
        let (name, rule) = REDUCTIONS[op];
        let axes = axes_of(3, &mask, &[false; 4]);
        let (g, feeds) = reduction_graph(name, x.cast(DType::F16), &axes, keep, false, true, true);
        check_rule(rule, &g, feeds, 2e-3)?;
    }

    /// Bool max/min (any/all): exact.
    #[test]
    fn bool_max_min(
        max in any::<bool>(),
        x in shape(3, 3).prop_flat_map(|s| i64_tensor(s, 0, 1)),
        mask in proptest::collection::vec(any::<bool>(), 4),
        keep in any::<bool>(),
    ) {
        let (name, rule) = if max { ("ReduceMax", "reduce/max") } else { ("ReduceMin", "reduce/min") };
        let axes = axes_of(3, &mask, &[false; 4]);
        let (g, feeds) = reduction_graph(name, x.cast(DType::Bool), &axes, keep, false, true, true);
        check_rule(rule, &g, feeds, 0.0)?;
    }

    /// ArgMax/ArgMin with ties, select_last_index, negative axes, keepdims: exact.
    #[test]
    fn arg_max_min(
        max in any::<bool>(),
        x in (1usize..=4).prop_flat_map(|r| shape(r, 4)).prop_flat_map(|s| small_ints(s, DType::F32)),
        axis in 0usize..4,
        negative in any::<bool>(),
        keep in any::<bool>(),
        last in any::<bool>(),
        f16 in any::<bool>(),
    ) {
        let r = x.rank();
        let axis = (axis % r) as i64 - if negative { r as i64 } else { 0 };
        let x = if f16 { x.cast(DType::F16) } else { x };
        let attrs = vec![
            ("axis", Attr::Int(axis)),
            ("keepdims", Attr::Int(keep as i64)),
            ("select_last_index", Attr::Int(last as i64)),
        ];
        let (g, feeds) = one_op(if max { "ArgMax" } else { "ArgMin" }, 13, attrs, &[Arg::Input(x)], 1);
        check_rule("reduce/arg", &g, feeds, 0.0)?;
    }

    /// Softmax and LogSoftmax, opset 11 (coerced to 2-D) and 13 (one axis).
    #[test]
    fn softmax_and_log(
        log in any::<bool>(),
        x in (1usize..=4).prop_flat_map(|r| shape(r, 4)).prop_flat_map(|s| f32_tensor(s, 20.0)),
        axis in 0usize..5,
        negative in any::<bool>(),
        old in any::<bool>(),
        f16 in any::<bool>(),
    ) {
        let r = x.rank();
        let axis = if old { (axis % (r + 1)) as i64 } else { (axis % r) as i64 - if negative { r as i64 } else { 0 } };
        let x = if f16 { x.cast(DType::F16) } else { x };
        let (name, rule) = if log { ("LogSoftmax", "reduce/log-softmax") } else { ("Softmax", "reduce/softmax") };
        let (g, feeds) = one_op(name, if old { 11 } else { 13 }, vec![("axis", Attr::Int(axis))], &[Arg::Input(x)], 1);
        check_rule(rule, &g, feeds, if f16 { 2e-3 } else { 1e-5 })?;
    }

    /// Hardmax with ties (the first maximum wins), opset 11 and 13: exact.
    #[test]
    fn hardmax(
        x in (1usize..=4).prop_flat_map(|r| shape(r, 4)).prop_flat_map(|s| small_ints(s, DType::F32)),
        axis in 0usize..5,
        old in any::<bool>(),
    ) {
        let r = x.rank();
        let axis = if old { (axis % (r + 1)) as i64 } else { (axis % r) as i64 - r as i64 };
        let (g, feeds) = one_op("Hardmax", if old { 11 } else { 13 }, vec![("axis", Attr::Int(axis))], &[Arg::Input(x)], 1);
        check_rule("reduce/hardmax", &g, feeds, 0.0)?;
    }

    /// LpNormalization, p = 1 and 2, lanes of zeros staying zero.
    #[test]
    fn lp_normalization(
        x in (1usize..=4).prop_flat_map(|r| shape(r, 4)).prop_flat_map(|s| small_ints(s, DType::F32)),
        axis in 0usize..4,
        p in 1i64..=2,
    ) {
        let axis = (axis % x.rank()) as i64;
        let (g, feeds) = one_op("LpNormalization", 22, vec![("axis", Attr::Int(axis)), ("p", Attr::Int(p))], &[Arg::Input(x)], 1);
        check_rule("reduce/lp-normalization", &g, feeds, 1e-6)?;
    }

    /// CumSum/CumProd: exclusive, reverse, negative axes, constant or run-time axis, short
    /// axes (triangular window) and long ones (log-step scan), f32 (1e-5: the sums
    /// reassociate), f16 (2e-3) and i32 (exact).
    #[test]
    fn scans(
        prod in any::<bool>(),
        dims in (1usize..=3).prop_flat_map(|r| shape(r, 5)),
        long in proptest::option::of(17usize..=40),
        axis in 0usize..3,
        negative in any::<bool>(),
        exclusive in any::<bool>(),
        reverse in any::<bool>(),
        runtime_axis in any::<bool>(),
        dtype in prop_oneof![Just(DType::F32), Just(DType::I32), Just(DType::F16)],
        seed in any::<u64>(),
    ) {
        let r = dims.len();
        let axis_n = axis % r;
        let mut dims = dims;
        if let Some(n) = long {
            dims[axis_n] = n;
        }
        let numel: usize = dims.iter().product();
        // Values near 1 keep long products finite; small integers for sums.
        let mut s = seed;
        let vals: Vec<f32> = (0..numel)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let k = (s >> 60) as i64 % 5 - 2;
                if prod && dtype != DType::I32 { 1.0 + k as f32 / 8.0 } else { k as f32 }
            })
            .collect();
        let x = Tensor::from_vec(dims, vals).unwrap().cast(dtype);
        let axis = axis_n as i64 - if negative { r as i64 } else { 0 };
        let a = Tensor::scalar(axis);
        let a = if runtime_axis { Arg::Input(a) } else { Arg::Const(a) };
        let attrs = vec![("exclusive", Attr::Int(exclusive as i64)), ("reverse", Attr::Int(reverse as i64))];
        let (name, rule, v) = if prod { ("CumProd", "reduce/cumprod", 26) } else { ("CumSum", "reduce/cumsum", 14) };
        let (g, feeds) = one_op(name, v, attrs, &[Arg::Input(x), a], 1);
        let tol = match dtype { DType::I32 => 0.0, DType::F16 => 2e-3, _ => 1e-5 };
        check_rule(rule, &g, feeds, tol)?;
    }

    /// TopK: ties broken by index, NaN sorting above every number, largest and smallest,
    /// k from the input (opset 11) or the attribute (opset 1), ints: exact.
    #[test]
    fn top_k(
        x in (1usize..=3).prop_flat_map(|r| shape(r, 5)).prop_flat_map(|s| small_ints(s, DType::F32)),
        nan_at in proptest::option::of(0usize..8),
        axis in 0usize..3,
        k in 0usize..6,
        largest in any::<bool>(),
        old in any::<bool>(),
        dtype in prop_oneof![Just(DType::F32), Just(DType::I64), Just(DType::U8), Just(DType::F16)],
    ) {
        let r = x.rank();
        let axis_n = axis % r;
        let k = k % (x.shape()[axis_n] + 1);
        let mut x = x;
        if let Some(at) = nan_at && dtype.is_float() && at < x.numel() {
            let mut v = x.to_f64_vec();
            v[at] = f64::NAN;
            x = Tensor::from_vec(x.shape().to_vec(), v.iter().map(|&f| f as f32).collect::<Vec<_>>()).unwrap();
        }
        let x = if dtype == DType::U8 { x.cast(DType::I64).cast(DType::U8) } else { x.cast(dtype) };
        let mut attrs = vec![("axis", Attr::Int(axis_n as i64 - r as i64)), ("largest", Attr::Int(largest as i64))];
        let (g, feeds) = if old && largest {
            attrs.retain(|(n, _)| *n != "largest");
            attrs.push(("k", Attr::Int(k as i64)));
            one_op("TopK", 1, attrs, &[Arg::Input(x)], 2)
        } else {
            one_op("TopK", 11, attrs, &[Arg::Input(x), Arg::Const(Tensor::from_i64s(vec![k as i64]))], 2)
        };
        check_rule("reduce/topk", &g, feeds, 0.0)?;
    }
}
