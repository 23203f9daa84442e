//! The unary op family: elementwise ops of one data input. Math functions and activations
//! (computed in f32 for f16/bf16, exactly for integers), logical and bitwise negation, the
//! float classifiers `IsNaN`/`IsInf`, `Clip`, the conversions `Cast`/`CastLike`, and the
//! pass-through ops `Identity` and inference-mode `Dropout`.

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, demote, map, promote};
use crate::shape::fmt_shape;
use crate::tensor::{Elem, Tensor};
use num_traits::{Float, PrimInt, WrappingNeg, WrappingSub};

crate::op_family! {
    /// Ops of the unary family.
    pub enum UnaryOp {
        Abs, Neg, Reciprocal, Sqrt, Exp, Log, Sin, Cos, Tan, Asin, Acos, Atan, Sinh, Cosh,
        Asinh, Acosh, Atanh, Tanh, Sigmoid, Relu, Erf, Floor, Ceil, Round, Sign, Not,
        BitwiseNot, IsNaN, IsInf, Elu, Selu, Celu, LeakyRelu, ThresholdedRelu, HardSigmoid,
        HardSwish, Softplus, Softsign, Mish, Gelu, Swish, Shrink, Clip, Cast, CastLike,
        Identity, Dropout,
    }
}

/// The element types an op takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Accepts {
    Float,
    /// Floats and signed integers.
    Signed,
    /// Floats and integers.
    Numeric,
    Int,
    Bool,
    Any,
}

impl Accepts {
    fn allows(self, d: DType) -> bool {
        match self {
            Accepts::Float => d.is_float(),
            Accepts::Signed => d.is_float() || d.is_signed_int(),
            Accepts::Numeric => d.is_float() || d.is_int(),
            Accepts::Int => d.is_int(),
            Accepts::Bool => d == DType::Bool,
            Accepts::Any => true,
        }
    }
}

/// The attributes of the math kernels (each op reads the fields it documents), parsed by
/// one function for both inference and evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Params {
    /// `alpha` (Elu, Selu, Celu, LeakyRelu, ThresholdedRelu, HardSigmoid, Swish), `lambd` (Shrink).
    alpha: f64,
    /// `gamma` (Selu), `beta` (HardSigmoid), `bias` (Shrink).
    beta: f64,
    /// Gelu with `approximate = "tanh"`.
    gelu_tanh: bool,
}

impl UnaryOp {
    fn accepts(self) -> Accepts {
        use UnaryOp::*;
        match self {
            Reciprocal | Sqrt | Exp | Log | Sin | Cos | Tan | Asin | Acos | Atan | Sinh | Cosh
            | Asinh | Acosh | Atanh | Tanh | Sigmoid | Erf | Floor | Ceil | Round | IsNaN
            | IsInf | Elu | Selu | Celu | LeakyRelu | ThresholdedRelu | HardSigmoid
            | HardSwish | Softplus | Softsign | Mish | Gelu | Swish | Dropout => Accepts::Float,
            Neg | Relu => Accepts::Signed,
            Abs | Sign | Shrink | Clip => Accepts::Numeric,
            BitwiseNot => Accepts::Int,
            Not => Accepts::Bool,
            Cast | CastLike | Identity => Accepts::Any,
        }
    }

    fn params(self, attrs: &Attrs) -> Result<Params> {
        use UnaryOp::*;
        let float = |name: &str, default: f32| -> Result<f64> { Ok(f64::from(attrs.float_or(name, default)?)) };
        let p = Params::default();
        Ok(match self {
            Elu | ThresholdedRelu | Swish => Params { alpha: float("alpha", 1.0)?, ..p },
            Celu => match float("alpha", 1.0)? {
                0.0 => return Err(Error::InvalidModel("Celu attribute 'alpha' must not be 0".into())),
                alpha => Params { alpha, ..p },
            },
            LeakyRelu => Params { alpha: float("alpha", 0.01)?, ..p },
            Selu => Params {
                alpha: float("alpha", 1.673_263_2)?,
                beta: float("gamma", 1.050_701)?,
                ..p
            },
            HardSigmoid => Params { alpha: float("alpha", 0.2)?, beta: float("beta", 0.5)?, ..p },
            Shrink => Params { alpha: float("lambd", 0.5)?, beta: float("bias", 0.0)?, ..p },
            Gelu => match attrs.string_or("approximate", "none")? {
                "none" => p,
                "tanh" => Params { gelu_tanh: true, ..p },
                other => {
                    return Err(Error::InvalidModel(format!(
                        "Gelu attribute 'approximate' must be \"none\" or \"tanh\", got \"{other}\""
                    )))
                }
            },
            Abs | Neg | Reciprocal | Sqrt | Exp | Log | Sin | Cos | Tan | Asin | Acos | Atan
            | Sinh | Cosh | Asinh | Acosh | Atanh | Tanh | Sigmoid | Relu | Erf | Floor | Ceil
            | Round | Sign | Not | BitwiseNot | IsNaN | IsInf | HardSwish | Softplus | Softsign
            | Mish | Clip | Cast | CastLike | Identity | Dropout => p,
        })
    }

    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        use UnaryOp::*;
        let x = cx.input(0)?.ty;
        if !self.accepts().allows(x.dtype) {
            return Err(bad_dtype(self.name(), x.dtype));
        }
        let like_x = |dtype: DType| ValueType { dtype, shape: x.shape.clone() };
        match self {
            Abs | Neg | Reciprocal | Sqrt | Exp | Log | Sin | Cos | Tan | Asin | Acos | Atan
            | Sinh | Cosh | Asinh | Acosh | Atanh | Tanh | Sigmoid | Relu | Erf | Floor | Ceil
            | Round | Sign | Not | BitwiseNot | Elu | Selu | Celu | LeakyRelu | ThresholdedRelu
            | HardSigmoid | HardSwish | Softplus | Softsign | Mish | Gelu | Swish | Shrink
            | Identity => {
                self.params(cx.attrs)?;
                Ok(vec![like_x(x.dtype)])
            }
            IsNaN => Ok(vec![like_x(DType::Bool)]),
            IsInf => {
                isinf_flags(cx.attrs)?;
                Ok(vec![like_x(DType::Bool)])
            }
            Clip => {
                infer_clip(cx, x.dtype)?;
                Ok(vec![like_x(x.dtype)])
            }
            Cast => Ok(vec![like_x(cast_target(cx.attrs)?)]),
            CastLike => Ok(vec![like_x(cx.dtype(1)?)]),
            Dropout => {
                let ratio = match cx.version {
                    12.. => match cx.opt(1) {
                        None => Some(0.5),
                        Some(f) => f.value.map(Tensor::scalar_f64).transpose()?,
                    },
                    _ => Some(f64::from(cx.attrs.float_or("ratio", 0.5)?)),
                };
                let training = match (cx.version, cx.opt(2)) {
                    (12.., Some(f)) => f.value.map(|t| t.scalar_f64().map(|v| v != 0.0)).transpose()?,
                    _ => Some(false),
                };
                check_dropout(ratio, training)?;
                Ok(vec![like_x(x.dtype), like_x(dropout_mask_dtype(cx.version, x.dtype))])
            }
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        use UnaryOp::*;
        let x = cx.input(0)?;
        let y = match self {
            Abs | Neg | Reciprocal | Sqrt | Exp | Log | Sin | Cos | Tan | Asin | Acos | Atan
            | Sinh | Cosh | Asinh | Acosh | Atanh | Tanh | Sigmoid | Relu | Erf | Floor | Ceil
            | Round | Sign | BitwiseNot | Elu | Selu | Celu | LeakyRelu | ThresholdedRelu
            | HardSigmoid | HardSwish | Softplus | Softsign | Mish | Gelu | Swish | Shrink => {
                let p = self.params(cx.attrs)?;
                let xp = promote(x);
                let y = crate::with_numeric!(xp.dtype(), self.name(), T => {
                    Tensor::from_vec(xp.shape().to_vec(), T::kernel(self, &p, xp.slice::<T>()?)?)?
                });
                demote(y, x.dtype())
            }
            Not => map::<bool, bool>(x, |v| !v)?,
            IsNaN => {
                let xp = promote(x);
                crate::with_float!(xp.dtype(), "IsNaN", T => map::<T, bool>(&xp, |v| v.is_nan())?)
            }
            IsInf => {
                let (neg, pos) = isinf_flags(cx.attrs)?;
                let xp = promote(x);
                crate::with_float!(xp.dtype(), "IsInf", T => map::<T, bool>(&xp, |v| {
                    (pos && v == T::INFINITY) || (neg && v == T::NEG_INFINITY)
                })?)
            }
            Clip => eval_clip(cx, x)?,
            Cast | CastLike => x.cast(cx.out_dtype(0)?),
            Identity => x.clone(),
            Dropout => return eval_dropout(cx, x),
        };
        Ok(vec![y])
    }
}

/// `(detect_negative, detect_positive)` of IsInf.
fn isinf_flags(attrs: &Attrs) -> Result<(bool, bool)> {
    Ok((attrs.int_or("detect_negative", 1)? != 0, attrs.int_or("detect_positive", 1)? != 0))
}

/// The `to` attribute of Cast.
fn cast_target(attrs: &Attrs) -> Result<DType> {
    let code = attrs.req_int("to")?;
    let code = i32::try_from(code)
        .map_err(|_| Error::InvalidModel(format!("Cast attribute 'to' is not a data type: {code}")))?;
    DType::from_onnx_code(code).ok_or_else(|| {
        Error::Unsupported(format!("Cast to {} (ONNX data type {code})", DType::onnx_code_name(code)))
    })
}

/// Clip takes its bounds as `min`/`max` attributes before opset 11 and as optional
/// single-element inputs of the data's type from opset 11.
fn infer_clip(cx: &InferCx, dtype: DType) -> Result<()> {
    if cx.version < 11 {
        cx.attrs.float("min")?;
        cx.attrs.float("max")?;
        return Ok(());
    }
    for (i, name) in [(1, "min"), (2, "max")] {
        if let Some(f) = cx.opt(i) {
            if f.ty.dtype != dtype {
                return Err(Error::InvalidModel(format!(
                    "Clip input '{name}' is {} but the data is {dtype}",
                    f.ty.dtype
                )));
            }
            if let Some(s) = &f.ty.shape
                && s.iter().product::<usize>() != 1
            {
                return Err(Error::InvalidModel(format!(
                    "Clip input '{name}' must be a single value, got shape {}",
                    fmt_shape(s)
                )));
            }
        }
    }
    Ok(())
}

fn eval_clip(cx: &EvalCx, x: &Tensor) -> Result<Tensor> {
    let xp = promote(x);
    let y = crate::with_numeric!(xp.dtype(), "Clip", T => {
        let (lo, hi) = if cx.version < 11 {
            let attr = |name| cx.attrs.float(name).map(|v| v.map(|v| T::from_f64(f64::from(v))));
            (attr("min")?, attr("max")?)
        } else {
            (clip_bound::<T>(cx.opt(1))?, clip_bound::<T>(cx.opt(2))?)
        };
        map::<T, T>(&xp, |v| clip(v, lo, hi))?
    });
    Ok(demote(y, x.dtype()))
}

/// A Clip bound input as the compute type `T` (f16/bf16 bounds are promoted like the data).
fn clip_bound<T: Elem>(t: Option<&Tensor>) -> Result<Option<T>> {
    let Some(t) = t else { return Ok(None) };
    let t = promote(t);
    match t.slice::<T>()? {
        [v] => Ok(Some(*v)),
        _ => Err(Error::InvalidModel(format!(
            "Clip bound must be a single value, got shape {}",
            fmt_shape(t.shape())
        ))),
    }
}

/// `min(max(v, lo), hi)`: NaN stays NaN, and `lo > hi` gives `hi` as ONNX specifies.
fn clip<T: PartialOrd>(v: T, lo: Option<T>, hi: Option<T>) -> T {
    let v = match lo {
        Some(lo) if v < lo => lo,
        _ => v,
    };
    match hi {
        Some(hi) if v > hi => hi,
        _ => v,
    }
}

/// The mask output's type: bool from opset 10, the data's type before.
fn dropout_mask_dtype(version: u32, dtype: DType) -> DType {
    if version >= 10 { DType::Bool } else { dtype }
}

/// Dropout is the identity except in training mode with a nonzero ratio, whose random
/// masks the reference interpreter does not model.
fn check_dropout(ratio: Option<f64>, training: Option<bool>) -> Result<()> {
    if let Some(r) = ratio {
        if !(0.0..1.0).contains(&r) {
            return Err(Error::InvalidModel(format!("Dropout ratio must be in [0, 1), got {r}")));
        }
        if training == Some(true) && r != 0.0 {
            return Err(Error::Unsupported(format!(
                "Dropout in training mode with ratio {r} (random masks)"
            )));
        }
    }
    Ok(())
}

fn eval_dropout(cx: &EvalCx, x: &Tensor) -> Result<Vec<Tensor>> {
    let mut out = vec![x.clone()];
    if cx.outputs.len() > 1 {
        let mask = Tensor::from_vec(x.shape().to_vec(), vec![true; x.numel()])?;
        out.push(mask.cast(cx.out_dtype(1)?));
    }
    Ok(out)
}

/// f32 and f64: the element types float math runs in.
trait Real: Float + Elem {
    /// A constant in this precision.
    fn c(v: f64) -> Self;
    fn erf(self) -> Self;
    fn round_even(self) -> Self;
}

impl Real for f32 {
    fn c(v: f64) -> f32 {
        v as f32
    }
    fn erf(self) -> f32 {
        libm::erff(self)
    }
    fn round_even(self) -> f32 {
        self.round_ties_even()
    }
}

impl Real for f64 {
    fn c(v: f64) -> f64 {
        v
    }
    fn erf(self) -> f64 {
        libm::erf(self)
    }
    fn round_even(self) -> f64 {
        self.round_ties_even()
    }
}

/// An element type with the unary math kernels: floats and integers.
trait UnaryElem: Elem {
    fn kernel(op: UnaryOp, p: &Params, x: &[Self]) -> Result<Vec<Self>>;
}

impl UnaryElem for f32 {
    fn kernel(op: UnaryOp, p: &Params, x: &[f32]) -> Result<Vec<f32>> {
        float_kernel(op, p, x)
    }
}

impl UnaryElem for f64 {
    fn kernel(op: UnaryOp, p: &Params, x: &[f64]) -> Result<Vec<f64>> {
        float_kernel(op, p, x)
    }
}

macro_rules! int_unary_elem {
    ($($t:ty),*) => {$(
        impl UnaryElem for $t {
            fn kernel(op: UnaryOp, p: &Params, x: &[$t]) -> Result<Vec<$t>> {
                int_kernel(op, p, x)
            }
        }
    )*};
}
int_unary_elem!(i8, u8, i16, u16, i32, u32, i64, u64);

fn each<T: Copy>(x: &[T], f: impl Fn(T) -> T) -> Vec<T> {
    x.iter().map(|&v| f(v)).collect()
}

/// `1 / (1 + e^-v)`: saturates cleanly to 0 or 1 when `e^-v` overflows or underflows.
fn sigmoid<T: Real>(v: T) -> T {
    T::one() / (T::one() + (-v).exp())
}

/// `ln(1 + e^v)` without overflow for large `v`.
fn softplus<T: Real>(v: T) -> T {
    if v > T::zero() { v + (-v).exp().ln_1p() } else { v.exp().ln_1p() }
}

fn float_kernel<T: Real>(op: UnaryOp, p: &Params, x: &[T]) -> Result<Vec<T>> {
    use UnaryOp::*;
    let (zero, one) = (T::zero(), T::one());
    let (alpha, beta) = (T::c(p.alpha), T::c(p.beta));
    Ok(match op {
        Abs => each(x, T::abs),
        Neg => each(x, |v| -v),
        Reciprocal => each(x, T::recip),
        Sqrt => each(x, T::sqrt),
        Exp => each(x, T::exp),
        Log => each(x, T::ln),
        Sin => each(x, T::sin),
        Cos => each(x, T::cos),
        Tan => each(x, T::tan),
        Asin => each(x, T::asin),
        Acos => each(x, T::acos),
        Atan => each(x, T::atan),
        Sinh => each(x, T::sinh),
        Cosh => each(x, T::cosh),
        Asinh => each(x, T::asinh),
        Acosh => each(x, T::acosh),
        Atanh => each(x, T::atanh),
        Tanh => each(x, T::tanh),
        Sigmoid => each(x, sigmoid),
        Relu => each(x, |v| if v < zero { zero } else { v }),
        Erf => each(x, T::erf),
        Floor => each(x, T::floor),
        Ceil => each(x, T::ceil),
        Round => each(x, T::round_even),
        Sign => each(x, |v| if v > zero { one } else if v < zero { -one } else { v }),
        Elu => each(x, |v| if v < zero { alpha * v.exp_m1() } else { v }),
        Selu => each(x, |v| if v > zero { beta * v } else { beta * (alpha * v.exp() - alpha) }),
        Celu => each(x, |v| if v > zero { v } else { alpha * (v / alpha).exp_m1() }),
        LeakyRelu => each(x, |v| if v < zero { alpha * v } else { v }),
        ThresholdedRelu => each(x, |v| if v > alpha { v } else { zero }),
        HardSigmoid => each(x, |v| (alpha * v + beta).max(zero).min(one)),
        HardSwish => {
            let (sixth, half) = (T::c(1.0 / 6.0), T::c(0.5));
            each(x, |v| v * (v * sixth + half).max(zero).min(one))
        }
        Softplus => each(x, softplus),
        Softsign => each(x, |v| v / (one + v.abs())),
        Mish => each(x, |v| v * softplus(v).tanh()),
        Gelu => {
            let half = T::c(0.5);
            if p.gelu_tanh {
                let (k, cubic) = (T::c((2.0 / std::f64::consts::PI).sqrt()), T::c(0.044_715));
                each(x, |v| half * v * (one + (k * (v + cubic * v * v * v)).tanh()))
            } else {
                let k = T::c(std::f64::consts::FRAC_1_SQRT_2);
                each(x, |v| half * v * (one + (v * k).erf()))
            }
        }
        Swish => each(x, |v| v * sigmoid(alpha * v)),
        Shrink => each(x, |v| if v < -alpha { v + beta } else if v > alpha { v - beta } else { zero }),
        Not | BitwiseNot | IsNaN | IsInf | Clip | Cast | CastLike | Identity | Dropout => {
            return Err(Error::Internal(format!("{} has no float kernel", op.name())))
        }
    })
}

/// Integer kernels: exact, wrapping where C++ would (`Abs`/`Neg` of the minimum value).
fn int_kernel<T: Elem + PrimInt + WrappingNeg + WrappingSub>(op: UnaryOp, p: &Params, x: &[T]) -> Result<Vec<T>> {
    use UnaryOp::*;
    let (zero, one) = (T::zero(), T::one());
    Ok(match op {
        Abs => each(x, |v| if v < zero { v.wrapping_neg() } else { v }),
        Neg => each(x, |v| v.wrapping_neg()),
        Relu => each(x, |v| if v < zero { zero } else { v }),
        Sign => each(x, |v| if v > zero { one } else if v < zero { zero.wrapping_sub(&one) } else { zero }),
        BitwiseNot => each(x, |v| !v),
        Shrink => each(x, |v| {
            let f = Elem::to_f64(v);
            let y = if f < -p.alpha { f + p.beta } else if f > p.alpha { f - p.beta } else { 0.0 };
            T::from_f64(y)
        }),
        Reciprocal | Sqrt | Exp | Log | Sin | Cos | Tan | Asin | Acos | Atan | Sinh | Cosh
        | Asinh | Acosh | Atanh | Tanh | Sigmoid | Erf | Floor | Ceil | Round | Not | IsNaN
        | IsInf | Elu | Selu | Celu | LeakyRelu | ThresholdedRelu | HardSigmoid | HardSwish
        | Softplus | Softsign | Mish | Gelu | Swish | Clip | Cast | CastLike | Identity
        | Dropout => return Err(bad_dtype(op.name(), T::DTYPE)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::{Op, OpKind};

    fn run(op: UnaryOp, version: u32, attrs: &[(&str, Attr)], inputs: &[Option<&Tensor>], outputs: usize) -> Result<Vec<Tensor>> {
        let mut a = Attrs::new();
        for (k, v) in attrs {
            a.set(k, v.clone());
        }
        Op { kind: OpKind::Unary(op), attrs: a, version }.eval(inputs, outputs)
    }

    fn f32s(v: &[f32]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap_or_else(|_| Tensor::scalar(0f32))
    }

    #[test]
    fn round_is_half_to_even() -> Result<()> {
        let x = f32s(&[0.5, 1.5, 2.5, -0.5, -1.5, 2.4]);
        let y = run(UnaryOp::Round, 11, &[], &[Some(&x)], 1)?;
        assert_eq!(y[0].slice::<f32>()?, &[0.0, 2.0, 2.0, -0.0, -2.0, 2.0]);
        Ok(())
    }

    #[test]
    fn clip_from_inputs_and_attributes() -> Result<()> {
        let x = Tensor::from_vec(vec![4], vec![-5i8, 0, 3, 100])?;
        let lo = Tensor::scalar(-2i8);
        let y = run(UnaryOp::Clip, 13, &[], &[Some(&x), Some(&lo), None], 1)?;
        assert_eq!(y[0].slice::<i8>()?, &[-2, 0, 3, 100]);
        let x = f32s(&[-5.0, 0.5, 9.0, f32::NAN]);
        let y = run(UnaryOp::Clip, 6, &[("min", Attr::Float(0.0)), ("max", Attr::Float(1.0))], &[Some(&x)], 1)?;
        let y = y[0].slice::<f32>()?;
        assert_eq!(&y[..3], &[0.0, 0.5, 1.0]);
        assert!(y[3].is_nan());
        // min > max gives max everywhere.
        let (lo, hi) = (Tensor::scalar(2f32), Tensor::scalar(1f32));
        let y = run(UnaryOp::Clip, 13, &[], &[Some(&f32s(&[0.0, 5.0])), Some(&lo), Some(&hi)], 1)?;
        assert_eq!(y[0].slice::<f32>()?, &[1.0, 1.0]);
        Ok(())
    }

    #[test]
    fn integer_abs_and_neg_wrap() -> Result<()> {
        let x = Tensor::from_vec(vec![3], vec![i32::MIN, -3, 4])?;
        let y = run(UnaryOp::Abs, 13, &[], &[Some(&x)], 1)?;
        assert_eq!(y[0].slice::<i32>()?, &[i32::MIN, 3, 4]);
        let y = run(UnaryOp::Neg, 13, &[], &[Some(&x)], 1)?;
        assert_eq!(y[0].slice::<i32>()?, &[i32::MIN, 3, -4]);
        let y = run(UnaryOp::Sign, 13, &[], &[Some(&x)], 1)?;
        assert_eq!(y[0].slice::<i32>()?, &[-1, -1, 1]);
        Ok(())
    }

    #[test]
    fn gelu_exact_and_tanh() -> Result<()> {
        let x = Tensor::from_vec(vec![2], vec![1.0f64, -2.0])?;
        let y = run(UnaryOp::Gelu, 20, &[], &[Some(&x)], 1)?;
        let y = y[0].slice::<f64>()?;
        // 0.5 x (1 + erf(x / sqrt 2)): erf(1/sqrt 2) = 0.682689492..., erf(-sqrt 2) = -0.954499736...
        assert!((y[0] - 0.841_344_746).abs() < 1e-8);
        assert!((y[1] + 0.045_500_263_9).abs() < 1e-8);
        let tanh = [("approximate", Attr::String("tanh".into()))];
        let y = run(UnaryOp::Gelu, 20, &tanh, &[Some(&x)], 1)?;
        assert!((y[0].slice::<f64>()?[0] - 0.841_191_990).abs() < 1e-8);
        Ok(())
    }

    #[test]
    fn f16_computes_in_f32_and_keeps_its_type() -> Result<()> {
        let x = Tensor::from_vec(vec![2], vec![half::f16::from_f32(0.0), half::f16::from_f32(-1.0)])?;
        let y = run(UnaryOp::Sigmoid, 13, &[], &[Some(&x)], 1)?;
        assert_eq!(y[0].dtype(), DType::F16);
        assert_eq!(y[0].to_f64_vec()[0], 0.5);
        Ok(())
    }

    #[test]
    fn dropout_is_identity_unless_training() -> Result<()> {
        let x = f32s(&[1.0, 2.0]);
        let y = run(UnaryOp::Dropout, 13, &[], &[Some(&x)], 2)?;
        assert_eq!(y[0], x);
        assert_eq!(y[1].slice::<bool>()?, &[true, true]);
        let (ratio, training) = (Tensor::scalar(0.5f32), Tensor::scalar(true));
        let err = run(UnaryOp::Dropout, 13, &[], &[Some(&x), Some(&ratio), Some(&training)], 1);
        assert!(matches!(err, Err(Error::Unsupported(_))));
        let zero = Tensor::scalar(0.0f32);
        let y = run(UnaryOp::Dropout, 13, &[], &[Some(&x), Some(&zero), Some(&training)], 1)?;
        assert_eq!(y[0], x);
        Ok(())
    }

    #[test]
    fn cast_rejects_unsupported_targets() {
        let x = f32s(&[1.0]);
        let err = run(UnaryOp::Cast, 19, &[("to", Attr::Int(17))], &[Some(&x)], 1);
        assert!(matches!(err, Err(Error::Unsupported(_))));
    }
}
