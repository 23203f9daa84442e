//! Rules of the norm family: every normalization is statistics by `Reduce` atoms (two-pass:
//! mean, then mean squared deviation) and an elementwise affine map, computed in f32 (f64
//! for f64 inputs) like the reference, then converted back. BatchNormalization in inference
//! folds to `x * a + b` per channel (constant when the parameters are); in training it uses
//! the batch statistics and also produces the running (and saved) statistics.

use crate::rules::err;
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::reduce::{binary_scalar, count, full, norm_axis, red};
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{ReduceFn, UnaryFn};
use ir::{DType, Result};

pub const RULES: &[Rule] = &[
    Rule {
        name: "norm/batchnorm",
        identity: "BatchNormalization(x) = x * a + b, a = scale / sqrt(var + eps), b = B - mean * a",
        action: Action::Lower { ops: &["BatchNormalization"], apply: batch_norm },
    },
    Rule {
        name: "norm/layernorm",
        identity: "LayerNormalization(x) = (x - mean) * recip(sqrt(var + eps)) * scale + B over axes [axis..]",
        action: Action::Lower { ops: &["LayerNormalization"], apply: layer_norm },
    },
    Rule {
        name: "norm/rmsnorm",
        identity: "RMSNormalization(x) = x * recip(sqrt(mean(x^2) + eps)) * scale over axes [axis..]",
        action: Action::Lower { ops: &["RMSNormalization"], apply: rms_norm },
    },
    Rule {
        name: "norm/groupnorm",
        identity: "GroupNormalization(x) = x * a + b, a = scale * recip(sqrt(var_g + eps)), b = bias - mean_g * a",
        action: Action::Lower { ops: &["GroupNormalization", "InstanceNormalization"], apply: group_norm },
    },
    Rule {
        name: "norm/mvn",
        identity: "MeanVarianceNormalization(x) = (x - mean) / (sqrt(var) + 1e-9) over axes",
        action: Action::Lower { ops: &["MeanVarianceNormalization"], apply: mvn },
    },
];


/// The dtype the norm ops compute in: f64 for f64, else f32.
fn compute(dtype: DType) -> DType {
    if dtype == DType::F64 { DType::F64 } else { DType::F32 }
}

/// Mean and population variance over `axes` (kept), two-pass; also returns `x - mean`.
fn moments(lx: &mut Lx, x: Id, axes: &[usize]) -> Result<(Id, Id, Id)> {
    let cnt = count(&lx.shape(x)?, axes) as f64;
    let s = red(lx, ReduceFn::Sum, x, axes)?;
    let mean = binary_scalar(lx, ir::atom::BinaryFn::Div, s, cnt)?;
    let d = lx.sub(x, mean)?;
    let sq = lx.mul(d, d)?;
    let ss = red(lx, ReduceFn::Sum, sq, axes)?;
    let var = binary_scalar(lx, ir::atom::BinaryFn::Div, ss, cnt)?;
    Ok((mean, var, d))
}

/// `1 / sqrt(v + eps)`.
fn inv_std(lx: &mut Lx, var: Id, eps: f64) -> Result<Id> {
    let ve = binary_scalar(lx, ir::atom::BinaryFn::Add, var, eps)?;
    let sd = lx.unary(UnaryFn::Sqrt, ve)?;
    lx.unary(UnaryFn::Recip, sd)
}

fn batch_norm(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let attrs = &n.op.attrs;
    let v = n.op.version;
    let training = if v >= 14 { attrs.int_or("training_mode", 0)? == 1 } else { n.num_outputs > 1 };
    if attrs.int_or("is_test", 1)? == 0 && v < 7 {
        return Ok(None);
    }
    let spatial = v >= 9 || attrs.int_or("spatial", 1)? != 0;
    let eps = f64::from(attrs.float_or("epsilon", 1e-5)?);
    let momentum = f64::from(attrs.float_or("momentum", 0.9)?);
    let shape = lx.shape(x)?;
    let rank = shape.len();
    if rank < 2 {
        return Err(err("BatchNormalization input must have rank >= 2"));
    }
    let dtype = lx.dtype(x)?;
    let ct = compute(dtype);
    // Parameters broadcast against x: [C, 1, ...] (spatial) or x.shape[1..].
    let pshape: Vec<usize> = if spatial { vec![shape[1]] } else { shape[1..].to_vec() };
    let mut bshape = pshape.clone();
    bshape.resize(rank - 1, 1);
    let mut params = Vec::new();
    for i in 1..5 {
        let p = arg(args, i)?;
        let p = lx.cast(p, ct)?;
        params.push(lx.reshape(p, &bshape)?);
    }
    let (scale, bias, mean, var) = (params[0], params[1], params[2], params[3]);
    let xc = lx.cast(x, ct)?;
    let (bm, bv) = if training {
        let axes: Vec<usize> = if spatial { std::iter::once(0).chain(2..rank).collect() } else { vec![0] };
        let (m, var, _) = moments(lx, xc, &axes)?;
        let m = lx.reshape(m, &bshape)?;
        let var = lx.reshape(var, &bshape)?;
        (m, var)
    } else {
        (mean, var)
    };
    match n.output {
        0 => {
            let ve = binary_scalar(lx, ir::atom::BinaryFn::Add, bv, eps)?;
            let sd = lx.unary(UnaryFn::Sqrt, ve)?;
            let a = lx.div(scale, sd)?;
            let ma = lx.mul(bm, a)?;
            let b = lx.sub(bias, ma)?;
            let xa = lx.mul(xc, a)?;
            let y = lx.add(xa, b)?;
            lx.cast(y, dtype).map(Some)
        }
        k @ 1..=4 if training => {
            let stat = match k {
                1 | 2 => {
                    let (run, batch) = if k == 1 { (mean, bm) } else { (var, bv) };
                    // momentum and 1 - momentum rounded like the reference's compute type.
                    let (mom, keep) = if ct == DType::F32 {
                        let m = momentum as f32;
                        (f64::from(m), f64::from(1.0f32 - m))
                    } else {
                        (momentum, 1.0 - momentum)
                    };
                    let a = binary_scalar(lx, ir::atom::BinaryFn::Mul, run, mom)?;
                    let b = binary_scalar(lx, ir::atom::BinaryFn::Mul, batch, keep)?;
                    lx.add(a, b)?
                }
                3 => bm,
                _ => bv,
            };
            let stat = lx.reshape(stat, &pshape)?;
            lx.cast(stat, n.ty.dtype).map(Some)
        }
        _ => Ok(None),
    }
}

/// LayerNormalization (or RMSNormalization with `rms`): output `n.output` of
/// Y, Mean, InvStdDev.
fn layer_norm_impl(lx: &mut Lx, n: &HlNode, args: &[Option<Id>], rms: bool) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let attrs = &n.op.attrs;
    let code = attrs.int_or("stash_type", 1)?;
    let stash = i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx_code)
        .filter(|d| d.is_float())
        .ok_or_else(|| err(format!("stash_type {code} is not a float type")))?;
    let eps = f64::from(attrs.float_or("epsilon", 1e-5)?);
    let shape = lx.shape(x)?;
    let rank = shape.len();
    let axis = norm_axis(attrs.int_or("axis", -1)?, rank)?;
    let axes: Vec<usize> = (axis..rank).collect();
    let dtype = lx.dtype(x)?;
    let ct = compute(dtype);
    let mut stat_shape = shape[..axis].to_vec();
    stat_shape.resize(rank, 1);
    if count(&shape, &axes) == 0 {
        // Empty rows: Y is empty, the statistics are zero.
        return match n.output {
            0 => Ok(Some(x)),
            _ => full(lx, stash, &stat_shape, 0.0).map(Some),
        };
    }
    let xc = lx.cast(x, ct)?;
    let (mean, var, d) = if rms {
        let sq = lx.mul(xc, xc)?;
        let s = lx.reduce(ReduceFn::Sum, sq, &axes, true)?;
        let var = binary_scalar(lx, ir::atom::BinaryFn::Div, s, count(&shape, &axes) as f64)?;
        let zero = full(lx, ct, &stat_shape, 0.0)?;
        (zero, var, xc)
    } else {
        moments(lx, xc, &axes)?
    };
    let inv = inv_std(lx, var, eps)?;
    match n.output {
        0 => {
            let scale = arg(args, 1)?;
            let scale = lx.cast(scale, ct)?;
            let di = lx.mul(d, inv)?;
            let mut y = lx.mul(di, scale)?;
            if !rms && let Some(b) = args.get(2).copied().flatten() {
                let b = lx.cast(b, ct)?;
                y = lx.add(y, b)?;
            }
            lx.cast(y, dtype).map(Some)
        }
        1 => lx.cast(mean, stash).map(Some),
        2 => lx.cast(inv, stash).map(Some),
        _ => Ok(None),
    }
}

fn layer_norm(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    layer_norm_impl(lx, n, args, false)
}

fn rms_norm(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    layer_norm_impl(lx, n, args, true)
}

/// GroupNormalization and InstanceNormalization (one channel per group): statistics per
/// (sample, group), then per-channel scale and bias (per group before GroupNormalization 21).
fn group_norm(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let shape = lx.shape(x)?;
    if shape.len() < 2 {
        return Err(err("normalization input must have rank >= 2 (N, C, ...)"));
    }
    let eps = f64::from(n.op.attrs.float_or("epsilon", 1e-5)?);
    let (batch, channels) = (shape[0], shape[1]);
    let plane: usize = shape[2..].iter().product();
    let is_group = n.op.kind.name() == "GroupNormalization";
    let groups = if is_group {
        let g = n.op.attrs.req_int("num_groups")?;
        usize::try_from(g)
            .ok()
            .filter(|&g| g > 0 && channels % g == 0)
            .ok_or_else(|| err(format!("bad num_groups {g}")))?
    } else {
        channels
    };
    if shape.iter().product::<usize>() == 0 {
        return Ok(Some(x));
    }
    let per = channels / groups;
    let per_group_params = is_group && n.op.version < 21;
    let dtype = lx.dtype(x)?;
    let ct = compute(dtype);
    let xc = lx.cast(x, ct)?;
    let x4 = lx.reshape(xc, &[batch, groups, per, plane])?;
    let (mean, var, _) = moments(lx, x4, &[2, 3])?;
    let inv = inv_std(lx, var, eps)?;
    let pshape = if per_group_params { [1, groups, 1, 1] } else { [1, groups, per, 1] };
    let scale = lx.cast(arg(args, 1)?, ct)?;
    let scale = lx.reshape(scale, &pshape)?;
    let bias = lx.cast(arg(args, 2)?, ct)?;
    let bias = lx.reshape(bias, &pshape)?;
    let a = lx.mul(inv, scale)?;
    let ma = lx.mul(mean, a)?;
    let b = lx.sub(bias, ma)?;
    let xa = lx.mul(x4, a)?;
    let y = lx.add(xa, b)?;
    let y = lx.reshape(y, &shape)?;
    lx.cast(y, dtype).map(Some)
}

fn mvn(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let rank = lx.rank(x)?;
    let axes = n.op.attrs.ints_or("axes", &[0, 2, 3])?;
    let mut axes = ir::shape::normalize_axes(&axes, rank)?;
    axes.sort_unstable();
    let dtype = lx.dtype(x)?;
    if lx.numel(x)? == 0 {
        return Ok(Some(x));
    }
    let xc = lx.cast(x, compute(dtype))?;
    let (_, var, d) = moments(lx, xc, &axes)?;
    let sd = lx.unary(UnaryFn::Sqrt, var)?;
    let den = binary_scalar(lx, ir::atom::BinaryFn::Add, sd, 1e-9)?;
    let y = lx.div(d, den)?;
    lx.cast(y, dtype).map(Some)
}
