//! Property tests of the binary family's lowering rules, on random numpy-broadcast shapes,
//! values (NaN, ±inf, ±0 included for floats) and dtypes.
//!
//! Tolerance 0.0 (exact) throughout: every lowering is one Binary/Select atom per
//! reference step, with the same operand order and the same f32 computation for f16/bf16
//! (the variadic sums fold left to right in f32 and round once, like the reference).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// f32 values with some small integers (ties for comparisons), NaN, ±inf and ±0.
fn special_f32(shape: Vec<usize>, lim: f32) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    let elem = prop_oneof![
        6 => -lim..=lim,
        3 => (-3i32..=3).prop_map(|v| v as f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(-0.0f32),
    ];
    proptest::collection::vec(elem, n).prop_map(move |v| Tensor::from_vec(shape.clone(), v).unwrap())
}

/// A shape that numpy-broadcasts to `out`: a suffix of it with some dims set to 1.
fn operand_shape(out: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let r = out.len();
    (0..=r, proptest::collection::vec(any::<bool>(), r)).prop_map(move |(drop, ones)| {
        out[drop..].iter().zip(&ones[drop..]).map(|(&n, &o)| if o { 1 } else { n }).collect()
    })
}

/// `k` operand shapes that broadcast together.
fn shapes(k: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    any_shape().prop_flat_map(move |s| proptest::collection::vec(operand_shape(s), k))
}

/// `k` broadcastable f32 operands.
fn operands(k: usize, lim: f32) -> impl Strategy<Value = Vec<Tensor>> {
    shapes(k).prop_flat_map(move |ss| ss.into_iter().map(|s| special_f32(s, lim)).collect::<Vec<_>>())
}

/// `k` broadcastable integer operands with values in [lo, hi].
fn int_operands(k: usize, lo: i64, hi: i64) -> impl Strategy<Value = Vec<Tensor>> {
    shapes(k).prop_flat_map(move |ss| ss.into_iter().map(|s| i64_tensor(s, lo, hi)).collect::<Vec<_>>())
}

fn float_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16), Just(DType::F64)]
}

fn int_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::I8), Just(DType::U8), Just(DType::I32), Just(DType::I64), Just(DType::U64)]
}

fn inputs(ts: Vec<Tensor>) -> Vec<Arg> {
    ts.into_iter().map(Arg::Input).collect()
}

/// Replaces zeros by ones (integer divisors).
fn nonzero(t: Tensor) -> Tensor {
    let v: Vec<i64> = t.to_i64_vec().into_iter().map(|x| if x == 0 { 1 } else { x }).collect();
    Tensor::from_vec(t.shape().to_vec(), v).unwrap()
}

proptest! {
    #![proptest_config(config(64))]

    /// Float arithmetic, Pow and comparisons with broadcasting: exact.
    #[test]
    fn float_ops(op in proptest::sample::select(&["Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"][..]),
                 xs in operands(2, 4.0), d in float_dtype()) {
        let xs: Vec<Tensor> = xs.into_iter().map(|t| cast(t, d)).collect();
        let (g, feeds) = one_op(op, 19, vec![], &inputs(xs), 1);
        check_rule("binary/elementwise", &g, feeds, 0.0)?;
    }

    /// Integer arithmetic (wrapping, truncating division by nonzero divisors), comparisons
    /// and bitwise ops: exact.
    #[test]
    fn int_ops(op in proptest::sample::select(&["Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "BitwiseAnd", "BitwiseOr", "BitwiseXor"][..]),
               xs in int_operands(2, -20, 20), d in int_dtype()) {
        let a = cast(xs[0].clone(), d);
        let b = cast(nonzero(xs[1].clone()), d);
        let b = if op == "Div" { nonzero(b).cast(d) } else { b };
        let (g, feeds) = one_op(op, 18, vec![], &[Arg::Input(a), Arg::Input(b)], 1);
        check_rule("binary/elementwise", &g, feeds, 0.0)?;
    }

    /// Pow with mixed base/exponent types (float^int, int^float, int^int): exact.
    #[test]
    fn pow_mixed(xs in int_operands(2, 1, 6), neg in any::<bool>(),
                 base in prop_oneof![Just(DType::F32), Just(DType::I32), Just(DType::I64)],
                 exp in prop_oneof![Just(DType::F32), Just(DType::I32), Just(DType::I64), Just(DType::F16)]) {
        let e = if neg { Tensor::from_vec(xs[1].shape().to_vec(), xs[1].to_i64_vec().iter().map(|v| 2 - v).collect::<Vec<i64>>()).unwrap() } else { xs[1].clone() };
        let (g, feeds) = one_op("Pow", 15, vec![], &[Arg::Input(cast(xs[0].clone(), base)), Arg::Input(cast(e, exp))], 1);
        check_rule("binary/elementwise", &g, feeds, 0.0)?;
    }

    /// Equal on bools, And/Or/Xor: exact.
    #[test]
    fn logical(op in proptest::sample::select(&["Equal", "And", "Or", "Xor"][..]), xs in int_operands(2, 0, 1)) {
        let xs: Vec<Tensor> = xs.into_iter().map(|t| t.cast(DType::Bool)).collect();
        let (g, feeds) = one_op(op, 11, vec![], &inputs(xs), 1);
        check_rule("binary/elementwise", &g, feeds, 0.0)?;
    }

    /// Mod with Python (fmod=0) or C (fmod=1) signs on integers, fmod on floats: exact.
    #[test]
    fn modulo(xs in int_operands(2, -50, 50), fmod in 0i64..2, d in prop_oneof![Just(DType::I32), Just(DType::I8), Just(DType::I64), Just(DType::U8), Just(DType::F32), Just(DType::F16)]) {
        let a = cast(xs[0].clone(), d);
        let b = cast(nonzero(xs[1].clone()), d);
        let fmod = if d.is_float() { 1 } else { fmod };
        let (g, feeds) = one_op("Mod", 13, vec![("fmod", Attr::Int(fmod))], &[Arg::Input(a), Arg::Input(b)], 1);
        check_rule("binary/mod", &g, feeds, 0.0)?;
    }

    /// BitShift left and right on unsigned types, shift counts past the width included: exact.
    #[test]
    fn bitshift(xs in int_operands(2, 0, 255), left in any::<bool>(), d in prop_oneof![Just(DType::U8), Just(DType::U16), Just(DType::U32), Just(DType::U64)]) {
        let n = Tensor::from_vec(xs[1].shape().to_vec(), xs[1].to_i64_vec().iter().map(|v| v % 12).collect::<Vec<i64>>()).unwrap();
        let dir = if left { "LEFT" } else { "RIGHT" };
        let (g, feeds) = one_op("BitShift", 11, vec![("direction", Attr::String(dir.into()))], &[Arg::Input(cast(xs[0].clone(), d)), Arg::Input(cast(n, d))], 1);
        check_rule("binary/bitshift", &g, feeds, 0.0)?;
    }

    /// Max/Min (NaN-propagating) and Sum/Mean of 1 to 4 broadcast inputs: exact.
    #[test]
    fn variadic(op in proptest::sample::select(&["Max", "Min", "Sum", "Mean"][..]), k in 1usize..=4,
                xs in operands(4, 5.0), d in float_dtype()) {
        let xs: Vec<Tensor> = xs.into_iter().take(k).map(|t| cast(t, d)).collect();
        let (g, feeds) = one_op(op, 13, vec![], &inputs(xs), 1);
        check_rule("binary/variadic", &g, feeds, 0.0)?;
    }

    /// Integer Max/Min: exact.
    #[test]
    fn variadic_int(op in proptest::sample::select(&["Max", "Min"][..]), k in 1usize..=3, xs in int_operands(3, -100, 100), d in int_dtype()) {
        let xs: Vec<Tensor> = xs.into_iter().take(k).map(|t| cast(t, d)).collect();
        let (g, feeds) = one_op(op, 13, vec![], &inputs(xs), 1);
        check_rule("binary/variadic", &g, feeds, 0.0)?;
    }

    /// PRelu with a slope broadcast to the input: exact, on floats and integers.
    #[test]
    fn prelu((x, slope) in any_shape().prop_flat_map(|s| (special_f32(s.clone(), 5.0), operand_shape(s).prop_flat_map(|t| special_f32(t, 2.0)))),
             d in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::F64), Just(DType::I32)]) {
        let (x, slope) = if d.is_float() { (cast(x, d), cast(slope, d)) } else { (x.cast(DType::I32), slope.cast(DType::I32)) };
        let (g, feeds) = one_op("PRelu", 16, vec![], &[Arg::Input(x), Arg::Input(slope)], 1);
        check_rule("binary/prelu", &g, feeds, 0.0)?;
    }

    /// Where with all three operands broadcast: exact.
    #[test]
    fn where_(xs in operands(3, 5.0), d in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::I64), Just(DType::Bool)]) {
        let c = xs[0].cast(DType::I32).cast(DType::Bool);
        let (g, feeds) = one_op("Where", 16, vec![], &[Arg::Input(c), Arg::Input(cast(xs[1].clone(), d)), Arg::Input(cast(xs[2].clone(), d))], 1);
        check_rule("binary/where", &g, feeds, 0.0)?;
    }

    /// Empty operands (a zero dim, broadcast against 1 or 0): exact.
    #[test]
    fn empty(op in proptest::sample::select(&["Add", "Less", "Max", "Mean", "Where"][..]), ones in any::<bool>(), n in 1usize..4) {
        let a = Tensor::from_vec(vec![0, n], Vec::<f32>::new()).unwrap();
        let b = if ones { Tensor::from_vec(vec![1, n], vec![1.0f32; n]).unwrap() } else { Tensor::from_vec(vec![n], vec![2.0f32; n]).unwrap() };
        let (g, feeds, rule) = match op {
            "Where" => {
                let c = Tensor::from_vec(vec![n], vec![true; n]).unwrap();
                let (g, f) = one_op(op, 16, vec![], &[Arg::Input(c), Arg::Input(a), Arg::Input(b)], 1);
                (g, f, "binary/where")
            }
            "Max" | "Mean" => {
                let (g, f) = one_op(op, 13, vec![], &[Arg::Input(a), Arg::Input(b)], 1);
                (g, f, "binary/variadic")
            }
            _ => {
                let (g, f) = one_op(op, 14, vec![], &[Arg::Input(a), Arg::Input(b)], 1);
                (g, f, "binary/elementwise")
            }
        };
        check_rule(rule, &g, feeds, 0.0)?;
    }
}
