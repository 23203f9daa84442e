//! Rules of the unary family: math functions map to `Unary` atoms, activations become
//! short atom expressions (computed in f32 for f16/bf16, like the reference), `Clip` is a
//! pair of selects, `Cast`/`CastLike` are `Cast`, `Identity`/`Dropout` vanish.
//!
//! Clamps are written as `select(y > lo, y, lo)`-style comparisons rather than `Max`/`Min`
//! atoms wherever the reference uses `Float::max`/`min` (which ignore NaN), so NaN
//! behaves exactly as in the reference kernels.

use crate::rules::compute_dtype;
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{BinaryFn, UnaryFn};
use ir::{DType, Error, Result};

pub const RULES: &[Rule] = &[
    Rule {
        name: "unary/relu",
        identity: "Relu(x) = max(x, 0)",
        action: Action::Lower { ops: &["Relu"], apply: relu },
    },
    Rule {
        name: "unary/math",
        identity: "Abs/Neg/Reciprocal/Sqrt/Exp/Log/trig/Erf/Floor/Ceil/Round/Sign/Not/BitwiseNot/IsNaN(x) = Unary(f, x)",
        action: Action::Lower {
            ops: &[
                "Abs", "Neg", "Reciprocal", "Sqrt", "Exp", "Log", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh",
                "Cosh", "Asinh", "Acosh", "Atanh", "Tanh", "Erf", "Floor", "Ceil", "Round", "Sign", "Not",
                "BitwiseNot", "IsNaN",
            ],
            apply: math,
        },
    },
    Rule {
        name: "unary/isinf",
        identity: "IsInf(x) = (pos && x == inf) || (neg && x == -inf)",
        action: Action::Lower { ops: &["IsInf"], apply: isinf },
    },
    Rule {
        name: "unary/sigmoid",
        identity: "Sigmoid(x) = 1 / (1 + exp(-x))",
        action: Action::Lower { ops: &["Sigmoid"], apply: sigmoid },
    },
    Rule {
        name: "unary/elu-family",
        identity: "Elu/Selu/Celu/LeakyRelu/ThresholdedRelu(x) = select(x <cmp> t, f(x), g(x))",
        action: Action::Lower { ops: &["Elu", "Selu", "Celu", "LeakyRelu", "ThresholdedRelu"], apply: elu_family },
    },
    Rule {
        name: "unary/hard",
        identity: "HardSigmoid(x) = clamp(a x + b, 0, 1); HardSwish(x) = x * clamp(x/6 + 1/2, 0, 1)",
        action: Action::Lower { ops: &["HardSigmoid", "HardSwish"], apply: hard },
    },
    Rule {
        name: "unary/softplus",
        identity: "Softplus(x) = max(x, 0) + log1p(exp(-|x|)); Mish(x) = x * tanh(Softplus(x))",
        action: Action::Lower { ops: &["Softplus", "Mish"], apply: softplus_mish },
    },
    Rule {
        name: "unary/softsign",
        identity: "Softsign(x) = x / (1 + |x|)",
        action: Action::Lower { ops: &["Softsign"], apply: softsign },
    },
    Rule {
        name: "unary/gelu",
        identity: "Gelu(x) = x/2 (1 + erf(x / sqrt 2)), or x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))",
        action: Action::Lower { ops: &["Gelu"], apply: gelu },
    },
    Rule {
        name: "unary/swish",
        identity: "Swish(x) = x * sigmoid(alpha x)",
        action: Action::Lower { ops: &["Swish"], apply: swish },
    },
    Rule {
        name: "unary/shrink",
        identity: "Shrink(x) = x < -l ? x + b : (x > l ? x - b : 0)",
        action: Action::Lower { ops: &["Shrink"], apply: shrink },
    },
    Rule {
        name: "unary/clip",
        identity: "Clip(x, lo, hi) = select(y > hi, hi, y) where y = select(x < lo, lo, x)",
        action: Action::Lower { ops: &["Clip"], apply: clip },
    },
    Rule {
        name: "unary/cast",
        identity: "Cast(x) = CastLike(x, t) = Cast(dtype, x)",
        action: Action::Lower { ops: &["Cast", "CastLike"], apply: cast },
    },
    Rule {
        name: "unary/identity",
        identity: "Identity(x) = x; Dropout(x) = (x, all true) in inference mode",
        action: Action::Lower { ops: &["Identity", "Dropout"], apply: identity },
    },
];


/// `f(x)` computed in x's compute dtype ([`compute_dtype`]) and cast back to x's dtype.
pub(crate) fn in_compute(lx: &mut Lx, x: Id, f: impl FnOnce(&mut Lx, Id) -> Result<Id>) -> Result<Id> {
    let d = lx.dtype(x)?;
    let xc = lx.cast(x, compute_dtype(d))?;
    let y = f(lx, xc)?;
    lx.cast(y, d)
}

/// A 0-d constant of x's dtype.
fn konst_like(lx: &mut Lx, x: Id, v: f64) -> Result<Id> {
    let d = lx.dtype(x)?;
    lx.scalar(d, v)
}

/// `x <cmp> v` for a scalar `v` of x's dtype (bool result).
fn cmp_scalar(lx: &mut Lx, f: BinaryFn, x: Id, v: f64) -> Result<Id> {
    lx.binary_scalar(f, x, v)
}

/// `1 / (1 + exp(-x))`, the reference's sigmoid.
pub(crate) fn sigmoid_of(lx: &mut Lx, x: Id) -> Result<Id> {
    let n = lx.unary(UnaryFn::Neg, x)?;
    let e = lx.unary(UnaryFn::Exp, n)?;
    let d = lx.binary_scalar(BinaryFn::Add, e, 1.0)?;
    lx.unary(UnaryFn::Recip, d)
}

/// `log(1 + x)` accurate for small `x` (Goldberg: `x * log(u) / (u - 1)` with `u = 1 + x`).
pub(crate) fn log1p_of(lx: &mut Lx, x: Id) -> Result<Id> {
    let u = lx.binary_scalar(BinaryFn::Add, x, 1.0)?;
    let d = lx.binary_scalar(BinaryFn::Sub, u, 1.0)?;
    let l = lx.unary(UnaryFn::Log, u)?;
    let q = lx.div(x, d)?;
    let r = lx.mul(l, q)?;
    let exact = cmp_scalar(lx, BinaryFn::Eq, d, 0.0)?;
    lx.select(exact, x, r)
}

/// `exp(x) - 1`.
fn expm1_of(lx: &mut Lx, x: Id) -> Result<Id> {
    let e = lx.unary(UnaryFn::Exp, x)?;
    lx.binary_scalar(BinaryFn::Sub, e, 1.0)
}

/// `ln(1 + e^x)` without overflow: `max(x, 0) + log1p(exp(-|x|))` (NaN propagates).
pub(crate) fn softplus_of(lx: &mut Lx, x: Id) -> Result<Id> {
    let pos = lx.binary_scalar(BinaryFn::Max, x, 0.0)?;
    let a = lx.unary(UnaryFn::Abs, x)?;
    let na = lx.unary(UnaryFn::Neg, a)?;
    let e = lx.unary(UnaryFn::Exp, na)?;
    let l = log1p_of(lx, e)?;
    lx.add(pos, l)
}

/// `Float::max(x, v)` (NaN gives `v`).
fn fmax_scalar(lx: &mut Lx, x: Id, v: f64) -> Result<Id> {
    let c = cmp_scalar(lx, BinaryFn::Gt, x, v)?;
    let k = konst_like(lx, x, v)?;
    lx.select(c, x, k)
}

/// `Float::min(x, v)` (NaN gives `v`).
fn fmin_scalar(lx: &mut Lx, x: Id, v: f64) -> Result<Id> {
    let c = cmp_scalar(lx, BinaryFn::Lt, x, v)?;
    let k = konst_like(lx, x, v)?;
    lx.select(c, x, k)
}

fn relu(lx: &mut Lx, _n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    lx.binary_scalar(BinaryFn::Max, x, 0.0).map(Some)
}

fn math(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let f = match n.op.kind.name() {
        "Reciprocal" => UnaryFn::Recip,
        "BitwiseNot" => UnaryFn::BitNot,
        other => match UnaryFn::from_name(other) {
            Some(f) => f,
            None => return Ok(None),
        },
    };
    lx.unary(f, x).map(Some)
}

fn isinf(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let neg = n.op.attrs.int_or("detect_negative", 1)? != 0;
    let pos = n.op.attrs.int_or("detect_positive", 1)? != 0;
    let mut acc: Option<Id> = None;
    for (on, v) in [(pos, f64::INFINITY), (neg, f64::NEG_INFINITY)] {
        if !on {
            continue;
        }
        let e = cmp_scalar(lx, BinaryFn::Eq, x, v)?;
        acc = Some(match acc {
            None => e,
            Some(a) => lx.binary(BinaryFn::Or, a, e)?,
        });
    }
    match acc {
        Some(a) => Ok(Some(a)),
        None => {
            let s = lx.shape(x)?;
            lx.full(DType::Bool, &s, 0.0).map(Some)
        }
    }
}

fn sigmoid(lx: &mut Lx, _n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    in_compute(lx, x, sigmoid_of).map(Some)
}

fn alpha(n: &HlNode, name: &str, default: f32) -> Result<f64> {
    Ok(f64::from(n.op.attrs.float_or(name, default)?))
}

fn elu_family(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let op = n.op.kind.name();
    let a = match op {
        "Elu" | "ThresholdedRelu" | "Celu" => alpha(n, "alpha", 1.0)?,
        "LeakyRelu" => alpha(n, "alpha", 0.01)?,
        "Selu" => alpha(n, "alpha", 1.673_263_2)?,
        _ => return Ok(None),
    };
    let gamma = alpha(n, "gamma", 1.050_701)?;
    if op == "Celu" && a == 0.0 {
        return Err(Error::InvalidModel("Celu attribute 'alpha' must not be 0".into()));
    }
    in_compute(lx, x, |lx, x| match op {
        "Elu" => {
            // x < 0 ? alpha * expm1(x) : x
            let c = cmp_scalar(lx, BinaryFn::Lt, x, 0.0)?;
            let e = expm1_of(lx, x)?;
            let e = lx.binary_scalar(BinaryFn::Mul, e, a)?;
            lx.select(c, e, x)
        }
        "Selu" => {
            // x > 0 ? gamma x : gamma (alpha e^x - alpha)
            let c = cmp_scalar(lx, BinaryFn::Gt, x, 0.0)?;
            let p = lx.binary_scalar(BinaryFn::Mul, x, gamma)?;
            let e = lx.unary(UnaryFn::Exp, x)?;
            let e = lx.binary_scalar(BinaryFn::Mul, e, a)?;
            let e = lx.binary_scalar(BinaryFn::Sub, e, a)?;
            let e = lx.binary_scalar(BinaryFn::Mul, e, gamma)?;
            lx.select(c, p, e)
        }
        "Celu" => {
            // x > 0 ? x : alpha expm1(x / alpha)
            let c = cmp_scalar(lx, BinaryFn::Gt, x, 0.0)?;
            let q = lx.binary_scalar(BinaryFn::Div, x, a)?;
            let e = expm1_of(lx, q)?;
            let e = lx.binary_scalar(BinaryFn::Mul, e, a)?;
            lx.select(c, x, e)
        }
        "LeakyRelu" => {
            let c = cmp_scalar(lx, BinaryFn::Lt, x, 0.0)?;
            let m = lx.binary_scalar(BinaryFn::Mul, x, a)?;
            lx.select(c, m, x)
        }
        _ => {
            // ThresholdedRelu: x > alpha ? x : 0
            let c = cmp_scalar(lx, BinaryFn::Gt, x, a)?;
            let z = konst_like(lx, x, 0.0)?;
            lx.select(c, x, z)
        }
    })
    .map(Some)
}

fn hard(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let swish = n.op.kind.name() == "HardSwish";
    let (a, b) = if swish {
        (1.0 / 6.0, 0.5)
    } else {
        (alpha(n, "alpha", 0.2)?, alpha(n, "beta", 0.5)?)
    };
    in_compute(lx, x, |lx, x| {
        let y = lx.binary_scalar(BinaryFn::Mul, x, a)?;
        let y = lx.binary_scalar(BinaryFn::Add, y, b)?;
        let y = fmax_scalar(lx, y, 0.0)?;
        let y = fmin_scalar(lx, y, 1.0)?;
        if swish { lx.mul(x, y) } else { Ok(y) }
    })
    .map(Some)
}

fn softplus_mish(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let mish = n.op.kind.name() == "Mish";
    in_compute(lx, x, |lx, x| {
        let s = softplus_of(lx, x)?;
        if mish {
            let t = lx.unary(UnaryFn::Tanh, s)?;
            lx.mul(x, t)
        } else {
            Ok(s)
        }
    })
    .map(Some)
}

fn softsign(lx: &mut Lx, _n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    in_compute(lx, x, |lx, x| {
        let a = lx.unary(UnaryFn::Abs, x)?;
        let d = lx.binary_scalar(BinaryFn::Add, a, 1.0)?;
        lx.div(x, d)
    })
    .map(Some)
}

fn gelu(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let tanh = match n.op.attrs.string_or("approximate", "none")? {
        "none" => false,
        "tanh" => true,
        other => {
            return Err(Error::InvalidModel(format!(
                "Gelu attribute 'approximate' must be \"none\" or \"tanh\", got \"{other}\""
            )));
        }
    };
    in_compute(lx, x, |lx, x| {
        let inner = if tanh {
            // k * (x + c * x * x * x), evaluated in the reference's order.
            let c = lx.binary_scalar(BinaryFn::Mul, x, 0.044_715)?;
            let c = lx.mul(c, x)?;
            let c = lx.mul(c, x)?;
            let s = lx.add(x, c)?;
            let k = konst_like(lx, x, (2.0 / std::f64::consts::PI).sqrt())?;
            let t = lx.mul(k, s)?;
            lx.unary(UnaryFn::Tanh, t)?
        } else {
            let t = lx.binary_scalar(BinaryFn::Mul, x, std::f64::consts::FRAC_1_SQRT_2)?;
            lx.unary(UnaryFn::Erf, t)?
        };
        let one_plus = lx.binary_scalar(BinaryFn::Add, inner, 1.0)?;
        let half = lx.binary_scalar(BinaryFn::Mul, x, 0.5)?;
        lx.mul(half, one_plus)
    })
    .map(Some)
}

fn swish(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let a = alpha(n, "alpha", 1.0)?;
    in_compute(lx, x, |lx, x| {
        let ax = lx.binary_scalar(BinaryFn::Mul, x, a)?;
        let s = sigmoid_of(lx, ax)?;
        lx.mul(x, s)
    })
    .map(Some)
}

fn shrink(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let lambd = alpha(n, "lambd", 0.5)?;
    let bias = alpha(n, "bias", 0.0)?;
    let d = lx.dtype(x)?;
    // Integers compute through f64 and convert back, as the reference does.
    let work = if d.is_float() { compute_dtype(d) } else { DType::F64 };
    let xc = lx.cast(x, work)?;
    let lo = lx.scalar(work, lambd)?;
    let neg_lo = lx.unary(UnaryFn::Neg, lo)?;
    let below = lx.binary(BinaryFn::Lt, xc, neg_lo)?;
    let above = lx.binary(BinaryFn::Gt, xc, lo)?;
    let plus = lx.binary_scalar(BinaryFn::Add, xc, bias)?;
    let minus = lx.binary_scalar(BinaryFn::Sub, xc, bias)?;
    let zero = lx.scalar(work, 0.0)?;
    let inner = lx.select(above, minus, zero)?;
    let y = lx.select(below, plus, inner)?;
    lx.cast(y, d).map(Some)
}

/// A Clip bound input as a 0-d tensor of `dtype`.
fn clip_bound(lx: &mut Lx, b: Id, dtype: DType) -> Result<Id> {
    if lx.numel(b)? != 1 {
        return Err(Error::InvalidModel("Clip bound must be a single value".into()));
    }
    let b = lx.reshape(b, &[])?;
    lx.cast(b, dtype)
}

fn clip(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let d = lx.dtype(x)?;
    let work = compute_dtype(d);
    let (lo, hi) = if n.op.version < 11 {
        let mut b = |name: &str| -> Result<Option<Id>> {
            match n.op.attrs.float(name)? {
                Some(v) => lx.scalar(work, f64::from(v)).map(Some),
                None => Ok(None),
            }
        };
        (b("min")?, b("max")?)
    } else {
        let lo = match args.get(1).copied().flatten() {
            Some(b) => Some(clip_bound(lx, b, work)?),
            None => None,
        };
        let hi = match args.get(2).copied().flatten() {
            Some(b) => Some(clip_bound(lx, b, work)?),
            None => None,
        };
        (lo, hi)
    };
    in_compute(lx, x, |lx, x| {
        let mut y = x;
        if let Some(lo) = lo {
            let c = lx.binary(BinaryFn::Lt, y, lo)?;
            y = lx.select(c, lo, y)?;
        }
        if let Some(hi) = hi {
            let c = lx.binary(BinaryFn::Gt, y, hi)?;
            y = lx.select(c, hi, y)?;
        }
        Ok(y)
    })
    .map(Some)
}

fn cast(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    lx.cast(x, n.ty.dtype).map(Some)
}

fn identity(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    // Dropout: inference mode, or a zero ratio, is the identity. Training with a nonzero or
    // runtime ratio draws a random mask: that stays on the host (whose interpreter rejects it).
    if n.op.kind.name() == "Dropout" {
        let training = match args.get(2).copied().flatten() {
            None => false,
            Some(t) => lx.value(t).is_none_or(|v| v.to_f64_vec().iter().any(|&b| b != 0.0)),
        };
        let zero_ratio = match args.get(1).copied().flatten() {
            None => false,
            Some(r) => lx.value(r).is_some_and(|v| v.to_f64_vec().iter().all(|&p| p == 0.0)),
        };
        if training && !zero_ratio {
            return Err(crate::host::host_only("training-mode Dropout draws a random mask"));
        }
    }
    if n.output == 0 {
        return Ok(Some(x));
    }
    let s = lx.shape(x)?;
    lx.full(n.ty.dtype, &s, 1.0).map(Some)
}
