//! Property tests of the unary family's lowering rules, on random shapes, values,
//! attributes and dtypes (f32, f16/bf16 computed in f32, f64, integers, bool).
//!
//! Tolerances: 0.0 (exact) wherever the lowering evaluates the same IEEE operations in the
//! same order as the reference kernel (direct Unary atoms, selects, Sigmoid, Gelu, Swish,
//! HardSigmoid, Clip, Cast, integer ops). 1e-5 where the atoms differ from the kernel's
//! special functions: `exp(x) - 1` for `expm1` (Elu, Celu, Selu), and the Goldberg
//! `log1p` for `ln_1p` (Softplus, Mish); both are within a few f32 ulps of 1 + |y|.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// f32 values with some NaN, ±inf and ±0 sprinkled in.
fn special_f32(shape: Vec<usize>, lim: f32) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    let elem = prop_oneof![
        8 => -lim..=lim,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(-0.0f32),
    ];
    proptest::collection::vec(elem, n).prop_map(move |v| Tensor::from_vec(shape.clone(), v).unwrap())
}

fn float_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16), Just(DType::F64)]
}

const MATH: &[&str] = &[
    "Abs", "Neg", "Reciprocal", "Sqrt", "Exp", "Log", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh",
    "Asinh", "Acosh", "Atanh", "Tanh", "Erf", "Floor", "Ceil", "Round", "Sign",
];

proptest! {
    #![proptest_config(config(48))]

    /// Relu = max(x, 0): exact (NaN and -0 included).
    #[test]
    fn relu(x in any_shape().prop_flat_map(|s| special_f32(s, 10.0)), d in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::I32)]) {
        let (g, feeds) = one_op("Relu", 14, vec![], &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/relu", &g, feeds, 0.0)?;
    }

    /// Each math op is its Unary atom: exact, on floats of every width.
    #[test]
    fn math_float(op in proptest::sample::select(MATH), x in any_shape().prop_flat_map(|s| special_f32(s, 3.0)), d in float_dtype()) {
        let (g, feeds) = one_op(op, 13, vec![], &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/math", &g, feeds, 0.0)?;
    }

    /// Integer Abs/Neg/Sign wrap like the reference; BitwiseNot on ints, Not on bool: exact.
    #[test]
    fn math_int(op in proptest::sample::select(&["Abs", "Neg", "Sign", "BitwiseNot"][..]),
                x in any_shape().prop_flat_map(|s| i64_tensor(s, -200, 200)),
                d in prop_oneof![Just(DType::I8), Just(DType::I32), Just(DType::I64)]) {
        let (g, feeds) = one_op(op, 18, vec![], &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/math", &g, feeds, 0.0)?;
    }

    /// Not and IsNaN: exact.
    #[test]
    fn not_isnan(x in any_shape().prop_flat_map(|s| special_f32(s, 2.0)), d in float_dtype()) {
        let b = cast(x.clone(), DType::I32).cast(DType::Bool);
        let (g, feeds) = one_op("Not", 1, vec![], &[Arg::Input(b)], 1);
        check_rule("unary/math", &g, feeds, 0.0)?;
        let (g, feeds) = one_op("IsNaN", 13, vec![], &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/math", &g, feeds, 0.0)?;
    }

    /// IsInf with every combination of the detect flags: exact.
    #[test]
    fn isinf(x in any_shape().prop_flat_map(|s| special_f32(s, 2.0)), pos in 0i64..2, neg in 0i64..2, d in float_dtype()) {
        let attrs = vec![("detect_positive", Attr::Int(pos)), ("detect_negative", Attr::Int(neg))];
        let (g, feeds) = one_op("IsInf", 20, attrs, &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/isinf", &g, feeds, 0.0)?;
    }

    /// Sigmoid = 1 / (1 + exp(-x)), the reference's formula: exact.
    #[test]
    fn sigmoid(x in any_shape().prop_flat_map(|s| special_f32(s, 30.0)), d in float_dtype()) {
        let (g, feeds) = one_op("Sigmoid", 13, vec![], &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/sigmoid", &g, feeds, 0.0)?;
    }

    /// Elu/Selu/Celu/LeakyRelu/ThresholdedRelu with random alpha (and gamma): 1e-5
    /// (exp(x) - 1 for expm1).
    #[test]
    fn elu_family(op in proptest::sample::select(&["Elu", "Selu", "Celu", "LeakyRelu", "ThresholdedRelu"][..]),
                  x in any_shape().prop_flat_map(|s| special_f32(s, 5.0)),
                  alpha in 0.1f32..3.0, gamma in 0.5f32..2.0, d in float_dtype()) {
        let mut attrs = vec![("alpha", Attr::Float(alpha))];
        if op == "Selu" {
            attrs.push(("gamma", Attr::Float(gamma)));
        }
        let (g, feeds) = one_op(op, 22, attrs, &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/elu-family", &g, feeds, 1e-5)?;
    }

    /// HardSigmoid (random alpha, beta) and HardSwish: exact, NaN mapping like Float::max.
    #[test]
    fn hard(swish in any::<bool>(), x in any_shape().prop_flat_map(|s| special_f32(s, 8.0)),
            alpha in -1.0f32..1.0, beta in -1.0f32..1.0, d in float_dtype()) {
        let (op, attrs) = if swish {
            ("HardSwish", vec![])
        } else {
            ("HardSigmoid", vec![("alpha", Attr::Float(alpha)), ("beta", Attr::Float(beta))])
        };
        let (g, feeds) = one_op(op, 22, attrs, &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/hard", &g, feeds, 0.0)?;
    }

    /// Softplus and Mish over a wide range (overflow-free): 1e-5 (log1p formula).
    #[test]
    fn softplus(mish in any::<bool>(), x in any_shape().prop_flat_map(|s| special_f32(s, 100.0)), d in float_dtype()) {
        let op = if mish { "Mish" } else { "Softplus" };
        let (g, feeds) = one_op(op, 22, vec![], &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/softplus", &g, feeds, 1e-5)?;
    }

    /// Softplus of tiny and huge magnitudes keeps its accuracy: 1e-5.
    #[test]
    fn softplus_small(x in any_shape().prop_flat_map(|s| f32_tensor(s, 1e-4))) {
        let (g, feeds) = one_op("Softplus", 22, vec![], &[Arg::Input(x)], 1);
        check_rule("unary/softplus", &g, feeds, 1e-5)?;
    }

    /// Softsign = x / (1 + |x|): exact.
    #[test]
    fn softsign(x in any_shape().prop_flat_map(|s| special_f32(s, 10.0)), d in float_dtype()) {
        let (g, feeds) = one_op("Softsign", 22, vec![], &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/softsign", &g, feeds, 0.0)?;
    }

    /// Gelu, exact and tanh approximation, in the reference's evaluation order: exact.
    #[test]
    fn gelu(tanh in any::<bool>(), x in any_shape().prop_flat_map(|s| special_f32(s, 6.0)), d in float_dtype()) {
        let attrs = if tanh { vec![("approximate", Attr::String("tanh".into()))] } else { vec![] };
        let (g, feeds) = one_op("Gelu", 20, attrs, &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/gelu", &g, feeds, 0.0)?;
    }

    /// Swish = x * sigmoid(alpha x): exact.
    #[test]
    fn swish(x in any_shape().prop_flat_map(|s| special_f32(s, 10.0)), alpha in -2.0f32..2.0, d in float_dtype()) {
        let (g, feeds) = one_op("Swish", 24, vec![("alpha", Attr::Float(alpha))], &[Arg::Input(cast(x, d))], 1);
        check_rule("unary/swish", &g, feeds, 0.0)?;
    }

    /// Shrink on floats and integers (through f64 like the reference): exact.
    #[test]
    fn shrink(x in any_shape().prop_flat_map(|s| special_f32(s, 4.0)), lambd in 0.0f32..2.0, bias in -1.0f32..1.0,
              d in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::F64), Just(DType::I32), Just(DType::U8)]) {
        let x = if d.is_float() { cast(x, d) } else { cast(x.cast(DType::F64).cast(DType::I32), d) };
        let attrs = vec![("lambd", Attr::Float(lambd)), ("bias", Attr::Float(bias))];
        let (g, feeds) = one_op("Shrink", 9, attrs, &[Arg::Input(x)], 1);
        check_rule("unary/shrink", &g, feeds, 0.0)?;
    }

    /// Clip with bounds as attributes (opset 6) or inputs (opset 13: constant, runtime or
    /// omitted, possibly lo > hi), on floats and integers: exact.
    #[test]
    fn clip(x in any_shape().prop_flat_map(|s| special_f32(s, 6.0)), lo in -4.0f32..4.0, hi in -4.0f32..4.0,
            mode in 0usize..4, has_lo in any::<bool>(), has_hi in any::<bool>(),
            d in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::I32), Just(DType::U8)]) {
        let x = if d.is_float() { cast(x, d) } else { cast(x.cast(DType::F64).cast(DType::I32), d) };
        let (g, feeds) = if mode == 0 {
            let mut attrs = vec![];
            if has_lo { attrs.push(("min", Attr::Float(lo))); }
            if has_hi { attrs.push(("max", Attr::Float(hi))); }
            one_op("Clip", 6, attrs, &[Arg::Input(cast(x, DType::F32))], 1)
        } else {
            let b = |v: f32, on: bool, shape: Vec<usize>| {
                let t = Tensor::from_vec(shape, vec![v]).unwrap().cast(d);
                if !on { Arg::Absent } else if mode == 1 { Arg::Const(t) } else { Arg::Input(t) }
            };
            let bshape = if mode == 3 { vec![1] } else { vec![] };
            one_op("Clip", 13, vec![], &[Arg::Input(x), b(lo, has_lo, bshape.clone()), b(hi, has_hi, bshape)], 1)
        };
        check_rule("unary/clip", &g, feeds, 0.0)?;
    }

    /// Cast and CastLike between any two numeric/bool dtypes (saturating, truncating,
    /// rounding as Tensor::cast): exact.
    #[test]
    fn cast_any(x in any_shape().prop_flat_map(|s| special_f32(s, 300.0)),
                from in proptest::sample::select(&DType::ALL[..]), to in proptest::sample::select(&DType::ALL[..]),
                like in any::<bool>()) {
        let x = cast(x, from);
        let (g, feeds) = if like {
            let t = Tensor::from_vec(vec![1], vec![0.0f32]).unwrap().cast(to);
            one_op("CastLike", 19, vec![], &[Arg::Input(x), Arg::Const(t)], 1)
        } else {
            one_op("Cast", 19, vec![("to", Attr::Int(i64::from(to.onnx_code())))], &[Arg::Input(x)], 1)
        };
        check_rule("unary/cast", &g, feeds, 0.0)?;
    }

    /// Identity, and Dropout (opset 7, 13, 22; inference or zero-ratio training) with its
    /// all-true mask: exact.
    #[test]
    fn identity(x in any_shape().prop_flat_map(|s| special_f32(s, 5.0)), which in 0usize..5, d in float_dtype()) {
        let x = cast(x, d);
        let (g, feeds) = match which {
            0 => one_op("Identity", 16, vec![], &[Arg::Input(x)], 1),
            1 => one_op("Dropout", 7, vec![("ratio", Attr::Float(0.3))], &[Arg::Input(x)], 2),
            2 => one_op("Dropout", 13, vec![], &[Arg::Input(x)], 2),
            3 => {
                let r = Tensor::scalar(0.0f32);
                let t = Tensor::scalar(true);
                one_op("Dropout", 22, vec![], &[Arg::Input(x), Arg::Const(r), Arg::Const(t)], 2)
            }
            _ => {
                let r = Tensor::scalar(0.25f32);
                one_op("Dropout", 22, vec![], &[Arg::Input(x), Arg::Const(r)], 1)
            }
        };
        check_rule("unary/identity", &g, feeds, 0.0)?;
    }

    /// Empty tensors (a zero dim) go through every kind of lowering: exact.
    #[test]
    fn empty(op in proptest::sample::select(&["Abs", "Sigmoid", "Gelu", "Softplus", "Clip", "IsInf", "HardSigmoid", "Shrink"][..]),
             s in proptest::collection::vec(0usize..=3, 1..=3).prop_map(|mut s| { s[0] = 0; s })) {
        let x = Tensor::from_vec(s, Vec::<f32>::new()).unwrap();
        let rule = match op {
            "Abs" => "unary/math",
            "Sigmoid" => "unary/sigmoid",
            "Gelu" => "unary/gelu",
            "Softplus" => "unary/softplus",
            "Clip" => "unary/clip",
            "IsInf" => "unary/isinf",
            "HardSigmoid" => "unary/hard",
            _ => "unary/shrink",
        };
        let (g, feeds) = one_op(op, 22, vec![], &[Arg::Input(x)], 1);
        check_rule(rule, &g, feeds, 0.0)?;
    }
}

/// Training-mode Dropout with a runtime flag draws a random mask: it stays on the host.
#[test]
fn training_dropout_with_runtime_flag_stays_on_host() {
    let x = ir::Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap();
    let r = ir::Tensor::scalar(0.5f32);
    let t = ir::Tensor::scalar(true);
    let (g, _) = one_op("Dropout", 22, vec![], &[Arg::Input(x), Arg::Input(r), Arg::Input(t)], 1);
    let d = rewrite::decompose(&g, &rewrite::Options::default()).unwrap();
    assert_eq!(d.report.high_level.len(), 1);
    assert!(d.report.high_level[0].2.starts_with("host: training-mode Dropout"), "{:?}", d.report.high_level);
}
