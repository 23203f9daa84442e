//! Rules of the loss family: `NegativeLogLikelihoodLoss` gathers the target's score of each
//! position (`Gather` along the class axis), weights it (an ONNX gather of the class
//! weights) and masks the ignored targets; `SoftmaxCrossEntropyLoss` is the same over the
//! max-shifted log-softmax along the class axis, which is also its second output. The
//! reductions are `Reduce` Sum atoms (the mean divides by the summed weights).

use crate::rules::err;
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::compute_dtype;
use crate::rules::reduce::{full, scalar, softmax_along};
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{Atom, BinaryFn, ReduceFn, UnaryFn};
use ir::{DType, Result};

pub const RULES: &[Rule] = &[
    Rule {
        name: "loss/nll",
        identity: "NLL(x, t) = reduce(valid ? -Gather[1](x, t) * w[t] : 0), mean divides by Σ valid ? w[t] : 0",
        action: Action::Lower { ops: &["NegativeLogLikelihoodLoss"], apply: nll },
    },
    Rule {
        name: "loss/sce",
        identity: "SoftmaxCrossEntropyLoss(x, t) = NLL(LogSoftmax[axis 1](x), t); log_prob = LogSoftmax[axis 1](x)",
        action: Action::Lower { ops: &["SoftmaxCrossEntropyLoss"], apply: sce },
    },
];


fn nll(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    loss(lx, n, args, false)
}

fn sce(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    loss(lx, n, args, true)
}

fn loss(lx: &mut Lx, n: &HlNode, args: &[Option<Id>], softmax: bool) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let target = arg(args, 1)?;
    let weight = args.get(2).copied().flatten();
    let reduction = n.op.attrs.string_or("reduction", "mean")?.to_string();
    let ignore = n.op.attrs.int("ignore_index")?;
    let shape = lx.shape(x)?;
    if shape.len() < 2 {
        return Err(err("scores must have rank >= 2 ([N, C, ...])"));
    }
    let (batch, classes) = (shape[0], shape[1]);
    let d: usize = shape[2..].iter().product();
    let dtype = lx.dtype(x)?;
    let ct = compute_dtype(dtype);
    let xc = lx.cast(x, ct)?;
    let x3 = lx.reshape(xc, &[batch, classes, d])?;
    let input = if softmax { softmax_along(lx, x3, 1, true)? } else { x3 };
    if softmax && n.output == 1 {
        let lp = lx.reshape(input, &shape)?;
        return lx.cast(lp, dtype).map(Some);
    }
    if n.output != 0 {
        return Ok(None);
    }
    let t = lx.cast(target, DType::I64)?;
    let t = lx.reshape(t, &[batch, 1, d])?;
    // Ignored positions pick class 0 (any valid index) and are masked out below.
    let valid = match ignore {
        Some(ii) => {
            let iiv = scalar(lx, DType::I64, ii as f64)?;
            let eq = lx.binary(BinaryFn::Eq, t, iiv)?;
            Some(lx.unary(UnaryFn::Not, eq)?)
        }
        None => None,
    };
    let safe_t = match valid {
        Some(v) => {
            let zero = scalar(lx, DType::I64, 0.0)?;
            lx.select(v, t, zero)?
        }
        None => t,
    };
    let picked = if batch * d == 0 {
        full(lx, ct, &[batch, 1, d], 0.0)?
    } else {
        lx.atom(Atom::Gather { axis: 1 }, &[input, safe_t])?
    };
    let neg = lx.unary(UnaryFn::Neg, picked)?;
    let w = match weight {
        Some(w) => {
            let w = lx.cast(w, ct)?;
            Some(lx.take(w, safe_t, 0)?)
        }
        None => None,
    };
    let mut l = match w {
        Some(w) => lx.mul(neg, w)?,
        None => neg,
    };
    let zero = scalar(lx, ct, 0.0)?;
    if let Some(v) = valid {
        l = lx.select(v, l, zero)?;
    }
    let all = [0usize, 1, 2];
    let y = match reduction.as_str() {
        "none" => lx.reshape(l, &lx.shape(target)?)?,
        "sum" => lx.reduce(ReduceFn::Sum, l, &all, false)?,
        "mean" => {
            let s = lx.reduce(ReduceFn::Sum, l, &all, false)?;
            // The summed weights of the counted targets (1 each without weights).
            let ws = match (w, valid) {
                (Some(w), Some(v)) => {
                    let wv = lx.select(v, w, zero)?;
                    lx.reduce(ReduceFn::Sum, wv, &all, false)?
                }
                (Some(w), None) => lx.reduce(ReduceFn::Sum, w, &all, false)?,
                (None, Some(v)) => {
                    let c = lx.cast(v, ct)?;
                    lx.reduce(ReduceFn::Sum, c, &all, false)?
                }
                (None, None) => scalar(lx, ct, (batch * d) as f64)?,
            };
            lx.div(s, ws)?
        }
        other => return Err(err(format!("attribute 'reduction' must be none, sum or mean, got '{other}'"))),
    };
    lx.cast(y, dtype).map(Some)
}
