//! The loss op family: `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss`, over
//! scores of shape `[N, C, d1, ..., dk]` and class targets of shape `[N, d1, ..., dk]`,
//! with optional per-class weights, an ignored target value and `none`/`sum`/`mean`
//! reduction.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, compute_dtype, demote, promote};
use crate::shape::fmt_shape;
use crate::tensor::{Elem, Tensor};
use num_traits::Float;

crate::op_family! {
    /// Ops of the loss family.
    pub enum LossOp { NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss }
}

/// How the per-element losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

/// The attributes shared by both ops.
struct Params {
    reduction: Reduction,
    ignore_index: Option<i64>,
}

impl Params {
    fn parse(cx_attrs: &crate::attr::Attrs) -> Result<Params> {
        let reduction = match cx_attrs.string_or("reduction", "mean")? {
            "none" => Reduction::None,
            "sum" => Reduction::Sum,
            "mean" => Reduction::Mean,
            other => {
                return Err(Error::InvalidModel(format!(
                    "attribute 'reduction' must be none, sum or mean, got '{other}'"
                )));
            }
        };
        Ok(Params { reduction, ignore_index: cx_attrs.int("ignore_index")? })
    }
}

impl LossOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        let params = Params::parse(cx.attrs)?;
        let dtype = cx.dtype(0)?;
        if !dtype.is_float() {
            return Err(bad_dtype(self.name(), dtype));
        }
        let target_dtype = cx.dtype(1)?;
        if !matches!(target_dtype, DType::I32 | DType::I64) {
            return Err(Error::InvalidModel(format!(
                "{}: target must be int32 or int64, got {target_dtype}",
                self.name()
            )));
        }
        if let Some(w) = cx.opt(2)
            && w.ty.dtype != dtype
        {
            return Err(Error::InvalidModel(format!(
                "{}: weight is {} but the scores are {dtype}",
                self.name(),
                w.ty.dtype
            )));
        }
        let scores = cx.shape(0)?;
        let target = cx.shape(1)?;
        if let (Some(s), Some(t)) = (scores, target) {
            check_shapes(s, t, cx.opt(2).and_then(|w| w.ty.shape.as_deref()))?;
        }
        let loss = match params.reduction {
            Reduction::None => ValueType { dtype, shape: target.map(<[usize]>::to_vec) },
            Reduction::Sum | Reduction::Mean => ValueType::new(dtype, vec![]),
        };
        match self {
            LossOp::NegativeLogLikelihoodLoss => Ok(vec![loss]),
            LossOp::SoftmaxCrossEntropyLoss => {
                Ok(vec![loss, ValueType { dtype, shape: scores.map(<[usize]>::to_vec) }])
            }
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        let params = Params::parse(cx.attrs)?;
        let scores = promote(cx.input(0)?);
        let dtype = cx.input(0)?.dtype();
        let target = cx.input(1)?.to_i64_vec();
        let weight = cx.opt(2).map(|w| promote(w).into_owned());
        let want_log_prob = cx.outputs.len() > 1;
        let (loss, log_prob) = crate::with_float!(compute_dtype(dtype), self.name(), T => {
            let x = scores.slice::<T>()?;
            let w = match &weight {
                Some(w) => Some(w.slice::<T>()?),
                None => None,
            };
            let shape = scores.shape();
            let (n, c) = (shape[0], shape[1]);
            let d: usize = shape[2..].iter().product();
            let log_prob = match self {
                LossOp::NegativeLogLikelihoodLoss => None,
                LossOp::SoftmaxCrossEntropyLoss => Some(log_softmax_axis1(x, n, c, d)),
            };
            let input = log_prob.as_deref().unwrap_or(x);
            let loss = nll::<T>(input, &target, w, n, c, d, &params)?;
            let loss = Tensor::from_vec(cx.out_shape(0)?.to_vec(), loss)?;
            let log_prob = match log_prob {
                Some(lp) if want_log_prob => Some(Tensor::from_vec(shape.to_vec(), lp)?),
                _ => None,
            };
            (loss, log_prob)
        });
        let mut out = vec![demote(loss, dtype)];
        if let Some(lp) = log_prob {
            out.push(demote(lp, dtype));
        }
        Ok(out)
    }
}

/// Checks scores `[N, C, d...]` against target `[N, d...]` and weight `[C]`.
fn check_shapes(scores: &[usize], target: &[usize], weight: Option<&[usize]>) -> Result<()> {
    if scores.len() < 2 {
        return Err(Error::InvalidModel(format!(
            "scores must have rank >= 2 ([N, C, ...]), got shape {}",
            fmt_shape(scores)
        )));
    }
    let expected: Vec<usize> = std::iter::once(scores[0]).chain(scores[2..].iter().copied()).collect();
    if target != expected.as_slice() {
        return Err(Error::InvalidModel(format!(
            "target shape {} does not match scores shape {} (expected {})",
            fmt_shape(target),
            fmt_shape(scores),
            fmt_shape(&expected)
        )));
    }
    if let Some(w) = weight
        && w != [scores[1]]
    {
        return Err(Error::InvalidModel(format!(
            "weight shape {} must be [C] = [{}]",
            fmt_shape(w),
            scores[1]
        )));
    }
    Ok(())
}

/// Log-softmax over axis 1 of a `[n, c, d]` buffer.
fn log_softmax_axis1<T: Elem + Float>(x: &[T], n: usize, c: usize, d: usize) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    for b in 0..n {
        let base = b * c * d;
        for j in 0..d {
            let at = |k: usize| base + k * d + j;
            let max = (0..c).map(|k| x[at(k)]).fold(T::neg_infinity(), T::max);
            let sum = (0..c).fold(T::zero(), |s, k| s + (x[at(k)] - max).exp());
            let log_sum = sum.ln();
            for k in 0..c {
                out[at(k)] = x[at(k)] - max - log_sum;
            }
        }
    }
    out
}

/// The negative log-likelihood of `input` (`[n, c, d]` log-probabilities) at `target`
/// (`[n, d]`), weighted and reduced.
fn nll<T: Elem + Float>(
    input: &[T],
    target: &[i64],
    weight: Option<&[T]>,
    n: usize,
    c: usize,
    d: usize,
    params: &Params,
) -> Result<Vec<T>> {
    let mut losses = Vec::with_capacity(n * d);
    let mut weight_sum = T::zero();
    for b in 0..n {
        for j in 0..d {
            let t = target[b * d + j];
            if Some(t) == params.ignore_index {
                losses.push(T::zero());
                continue;
            }
            let class = usize::try_from(t).ok().filter(|&k| k < c).ok_or_else(|| {
                Error::InvalidInput(format!("target value {t} is out of range for {c} classes"))
            })?;
            let w = weight.map_or(T::one(), |w| w[class]);
            weight_sum = weight_sum + w;
            losses.push(-input[(b * c + class) * d + j] * w);
        }
    }
    Ok(match params.reduction {
        Reduction::None => losses,
        Reduction::Sum => vec![losses.iter().fold(T::zero(), |s, &v| s + v)],
        Reduction::Mean => {
            let sum = losses.iter().fold(T::zero(), |s, &v| s + v);
            // The weights of the counted targets (1 each without weights).
            vec![sum / weight_sum]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Attr, Attrs};
    use crate::op::{Op, OpKind};

    fn run(op: LossOp, attrs: Attrs, inputs: &[Option<&Tensor>], outs: usize) -> Result<Vec<Tensor>> {
        Op { kind: OpKind::Loss(op), attrs, version: 22 }.eval(inputs, outs)
    }

    #[test]
    fn nll_mean_with_weight_and_ignore() -> Result<()> {
        let x = Tensor::from_vec(vec![2, 3], vec![-1.0f32, -2.0, -3.0, -4.0, -5.0, -6.0])?;
        let t = Tensor::from_vec(vec![2], vec![2i64, 1])?;
        let w = Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0])?;
        let out = run(LossOp::NegativeLogLikelihoodLoss, Attrs::new(), &[Some(&x), Some(&t), Some(&w)], 1)?;
        // (3*3 + 5*2) / (3 + 2)
        assert_eq!(out[0].slice::<f32>()?, &[19.0 / 5.0]);
        let mut attrs = Attrs::new();
        attrs.set("ignore_index", Attr::Int(1));
        let out = run(LossOp::NegativeLogLikelihoodLoss, attrs, &[Some(&x), Some(&t), Some(&w)], 1)?;
        assert_eq!(out[0].slice::<f32>()?, &[3.0]);
        Ok(())
    }

    #[test]
    fn sce_uniform_scores_give_log_c() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 4, 1], vec![0.5f64; 4])?;
        let t = Tensor::from_vec(vec![1, 1], vec![3i32])?;
        let mut attrs = Attrs::new();
        attrs.set("reduction", Attr::String("none".into()));
        let out = run(LossOp::SoftmaxCrossEntropyLoss, attrs, &[Some(&x), Some(&t)], 2)?;
        assert_eq!(out[0].shape(), &[1, 1]);
        assert!((out[0].slice::<f64>()?[0] - 4f64.ln()).abs() < 1e-12);
        assert!((out[1].slice::<f64>()?[2] + 4f64.ln()).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn target_out_of_range_is_an_error() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 2], vec![0.0f32, 0.0])?;
        let t = Tensor::from_vec(vec![1], vec![5i64])?;
        assert!(run(LossOp::NegativeLogLikelihoodLoss, Attrs::new(), &[Some(&x), Some(&t)], 1).is_err());
        Ok(())
    }
}
