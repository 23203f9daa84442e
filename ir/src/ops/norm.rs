//! The normalization op family: BatchNormalization (inference and training forms),
//! LayerNormalization, RMSNormalization, InstanceNormalization, GroupNormalization and
//! MeanVarianceNormalization.
//!
//! Every op computes in f32 for f32/f16/bf16 inputs and in f64 for f64 inputs (statistics
//! included, which is what `stash_type = 1` asks for), then converts back to the input type.
//! Statistics are two-pass (mean, then mean squared deviation) over contiguous blocks.

use crate::attr::Attrs;
use crate::bail_model;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, demote, expand};
use crate::shape::{broadcast, fmt_shape, normalize_axes, normalize_axis};
use crate::tensor::{Elem, Tensor};
use num_traits::Float;
use std::borrow::Cow;

crate::op_family! {
    /// Ops of the norm family.
    pub enum NormOp {
        BatchNormalization,
        LayerNormalization,
        InstanceNormalization,
        GroupNormalization,
        RMSNormalization,
        MeanVarianceNormalization,
    }
}

impl NormOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        let name = self.name();
        let dtype = cx.dtype(0)?;
        if !dtype.is_float() {
            return Err(bad_dtype(name, dtype));
        }
        let shape = cx.shape(0)?;
        let same = ValueType {
            dtype,
            shape: shape.map(<[usize]>::to_vec),
        };
        match self {
            NormOp::BatchNormalization => {
                let bn = BatchNorm::parse(cx.attrs, cx.version, cx.num_outputs)?;
                let stat_dtype = cx.dtype(3)?;
                for (i, what) in [(1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")] {
                    let d = cx.dtype(i)?;
                    if !d.is_float() {
                        bail_model!("BatchNormalization {what} must be a float tensor, got {d}");
                    }
                }
                if cx.dtype(4)? != stat_dtype {
                    bail_model!(
                        "BatchNormalization input_mean is {stat_dtype} but input_var is {}",
                        cx.dtype(4)?
                    );
                }
                let mut stat_shape = None;
                if let Some(s) = shape {
                    let want = bn.param_shape(s)?;
                    for (i, what) in [(1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")] {
                        if let Some(p) = cx.shape(i)?
                            && p != want.as_slice()
                        {
                            bail_model!(
                                "BatchNormalization {what} has shape {}, expected {} for input {}",
                                fmt_shape(p),
                                fmt_shape(&want),
                                fmt_shape(s)
                            );
                        }
                    }
                    stat_shape = Some(want);
                }
                let stat = ValueType {
                    dtype: stat_dtype,
                    shape: stat_shape,
                };
                let mut out = vec![same];
                if bn.training {
                    // running mean and var, then (before opset 14) saved mean and var.
                    out.extend(std::iter::repeat_n(stat, 4));
                }
                Ok(out)
            }
            NormOp::LayerNormalization | NormOp::RMSNormalization => {
                let ln = LayerNorm::parse(name, cx.attrs)?;
                check_same_dtype(name, cx, 1, "scale", dtype)?;
                if self == NormOp::LayerNormalization && cx.opt(2).is_some() {
                    check_same_dtype(name, cx, 2, "B", dtype)?;
                }
                let Some(s) = shape else {
                    return Ok(vec![
                        same,
                        ValueType::unknown(ln.stash),
                        ValueType::unknown(ln.stash),
                    ]);
                };
                let axis = normalize_axis(ln.axis, s.len())?;
                for (i, what) in [(1, "scale"), (2, "B")] {
                    if let Some(f) = cx.opt(i)
                        && let Some(p) = f.ty.shape.as_deref()
                        && broadcast(p, s).ok().as_deref() != Some(s)
                    {
                        bail_model!(
                            "{name} {what} of shape {} does not broadcast to input {}",
                            fmt_shape(p),
                            fmt_shape(s)
                        );
                    }
                }
                let mut stats = s[..axis].to_vec();
                stats.resize(s.len(), 1);
                let stat = ValueType::new(ln.stash, stats);
                Ok(vec![same, stat.clone(), stat])
            }
            NormOp::InstanceNormalization | NormOp::GroupNormalization => {
                let groups = if self == NormOp::GroupNormalization {
                    Some(group_count(cx.attrs)?)
                } else {
                    None
                };
                check_same_dtype(name, cx, 1, "scale", dtype)?;
                check_same_dtype(name, cx, 2, "B", dtype)?;
                if let Some(s) = shape {
                    if s.len() < 2 {
                        bail_model!(
                            "{name} input must have rank >= 2 (N, C, ...), got {}",
                            fmt_shape(s)
                        );
                    }
                    let want = match groups {
                        Some(g) => {
                            if g == 0 || s[1] % g != 0 {
                                bail_model!(
                                    "{name} num_groups {g} does not divide the {} channels",
                                    s[1]
                                );
                            }
                            if cx.version < 21 { g } else { s[1] }
                        }
                        None => s[1],
                    };
                    for (i, what) in [(1, "scale"), (2, "bias")] {
                        if let Some(p) = cx.shape(i)?
                            && p != [want]
                        {
                            bail_model!(
                                "{name} {what} has shape {}, expected [{want}]",
                                fmt_shape(p)
                            );
                        }
                    }
                }
                Ok(vec![same])
            }
            NormOp::MeanVarianceNormalization => {
                if let Some(s) = shape {
                    normalize_axes(&mvn_axes(cx.attrs)?, s.len())?;
                }
                Ok(vec![same])
            }
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        let name = self.name();
        let x = cx.input(0)?;
        let dtype = x.dtype();
        let compute = if dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let xc = in_dtype(x, compute);
        match self {
            NormOp::BatchNormalization => {
                let bn = BatchNorm::parse(cx.attrs, cx.version, cx.outputs.len())?;
                let p: Vec<Cow<Tensor>> = (1..5)
                    .map(|i| cx.input(i).map(|t| in_dtype(t, compute)))
                    .collect::<Result<_>>()?;
                let out = crate::with_float!(compute, name, T => {
                    bn.eval::<T>(xc.slice::<T>()?, x.shape(), [p[0].slice()?, p[1].slice()?, p[2].slice()?, p[3].slice()?])
                        .into_iter()
                        .map(|v| Tensor::from_vec(vec![v.len()], v))
                        .collect::<Result<Vec<_>>>()?
                });
                let mut out = out.into_iter();
                let y = out.next().ok_or_else(|| {
                    Error::Internal("BatchNormalization produced no output".into())
                })?;
                let mut res = vec![demote(y.reshaped(x.shape().to_vec())?, dtype)];
                for (i, t) in out.take(cx.outputs.len().saturating_sub(1)).enumerate() {
                    res.push(demote(
                        t.reshaped(cx.out_shape(i + 1)?.to_vec())?,
                        cx.out_dtype(i + 1)?,
                    ));
                }
                Ok(res)
            }
            NormOp::LayerNormalization | NormOp::RMSNormalization => {
                let ln = LayerNorm::parse(name, cx.attrs)?;
                let axis = normalize_axis(ln.axis, x.rank())?;
                let scale = in_dtype(cx.input(1)?, compute);
                let bias = if self == NormOp::LayerNormalization {
                    cx.opt(2).map(|b| in_dtype(b, compute))
                } else {
                    None
                };
                let rms = self == NormOp::RMSNormalization;
                let (y, mean, inv) = crate::with_float!(compute, name, T => {
                    let scale = RowParam::<T>::new(&scale, x.shape(), axis)?;
                    let bias = bias.as_deref().map(|b| RowParam::<T>::new(b, x.shape(), axis)).transpose()?;
                    let (y, mean, inv) = ln.eval(xc.slice::<T>()?, x.shape(), axis, &scale, bias.as_ref(), rms);
                    (T::into_data(y), T::into_data(mean), T::into_data(inv))
                });
                let mut out = vec![demote(Tensor::new(x.shape().to_vec(), y)?, dtype)];
                if cx.outputs.len() > 1 {
                    let stats_shape = cx.out_shape(1)?.to_vec();
                    out.push(demote(Tensor::new(stats_shape.clone(), mean)?, ln.stash));
                    out.push(demote(Tensor::new(stats_shape, inv)?, ln.stash));
                }
                Ok(out)
            }
            NormOp::InstanceNormalization | NormOp::GroupNormalization => {
                let epsilon = f64::from(cx.attrs.float_or("epsilon", 1e-5)?);
                let channels = x.shape()[1];
                let groups = if self == NormOp::GroupNormalization {
                    group_count(cx.attrs)?
                } else {
                    channels
                };
                let per_group_params = self == NormOp::GroupNormalization && cx.version < 21;
                let scale = in_dtype(cx.input(1)?, compute);
                let bias = in_dtype(cx.input(2)?, compute);
                let y = crate::with_float!(compute, name, T => {
                    let (s, b) = (scale.slice::<T>()?, bias.slice::<T>()?);
                    let (s, b): (Vec<T>, Vec<T>) = if per_group_params {
                        let per = channels / groups;
                        ((0..channels).map(|c| s[c / per]).collect(), (0..channels).map(|c| b[c / per]).collect())
                    } else {
                        (s.to_vec(), b.to_vec())
                    };
                    T::into_data(group_norm(xc.slice::<T>()?, x.shape(), groups, &s, &b, T::from_f64(epsilon)))
                });
                Ok(vec![demote(Tensor::new(x.shape().to_vec(), y)?, dtype)])
            }
            NormOp::MeanVarianceNormalization => {
                let axes = normalize_axes(&mvn_axes(cx.attrs)?, x.rank())?;
                let y = crate::with_float!(compute, name, T => T::into_data(mvn(xc.slice::<T>()?, x.shape(), &axes)));
                Ok(vec![demote(Tensor::new(x.shape().to_vec(), y)?, dtype)])
            }
        }
    }
}

/// `t` converted to `dtype` (borrowed when it already is).
fn in_dtype(t: &Tensor, dtype: DType) -> Cow<'_, Tensor> {
    if t.dtype() == dtype {
        Cow::Borrowed(t)
    } else {
        Cow::Owned(t.cast(dtype))
    }
}

fn check_same_dtype(op: &str, cx: &InferCx, i: usize, what: &str, dtype: DType) -> Result<()> {
    let d = cx.dtype(i)?;
    if d != dtype {
        bail_model!("{op} {what} is {d} but the input is {dtype}");
    }
    Ok(())
}

/// The sum of `f(x)` over `v` in eight interleaved partial sums: the loop vectorizes, and
/// the rounding error is smaller than with one running sum.
pub(crate) fn lane_sum<T: Float>(v: &[T], f: impl Fn(T) -> T) -> T {
    let mut lanes = [T::zero(); 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = *l + f(x);
        }
    }
    let tail = chunks.remainder().iter().fold(T::zero(), |a, &x| a + f(x));
    let [a, b, c, d, e, g, h, i] = lanes;
    ((a + b) + (c + d)) + ((e + g) + (h + i)) + tail
}

/// Mean and variance (population) of a block, two-pass.
fn moments<T: Float>(v: &[T]) -> (T, T) {
    let n = T::from(v.len()).unwrap_or_else(T::one);
    let mean = lane_sum(v, |x| x) / n;
    let var = lane_sum(v, |x| (x - mean) * (x - mean)) / n;
    (mean, var)
}

/// BatchNormalization's attributes and form.
struct BatchNorm {
    epsilon: f64,
    momentum: f64,
    /// Statistics from the batch (and running-statistics outputs) instead of the inputs.
    training: bool,
    /// opset 7's `spatial`: one parameter per channel (1) or per element of a sample (0).
    spatial: bool,
}

impl BatchNorm {
    fn parse(attrs: &Attrs, version: u32, num_outputs: usize) -> Result<BatchNorm> {
        let training = if version >= 14 {
            match attrs.int_or("training_mode", 0)? {
                0 => false,
                1 => true,
                other => bail_model!(
                    "BatchNormalization attribute 'training_mode' must be 0 or 1, got {other}"
                ),
            }
        } else {
            // Before opset 14, requesting the statistics outputs selects training.
            num_outputs > 1
        };
        if attrs.int_or("is_test", 1)? == 0 && version < 7 {
            return Err(Error::Unsupported(
                "BatchNormalization with is_test = 0 (opset < 7)".into(),
            ));
        }
        Ok(BatchNorm {
            epsilon: f64::from(attrs.float_or("epsilon", 1e-5)?),
            momentum: f64::from(attrs.float_or("momentum", 0.9)?),
            training,
            spatial: version >= 9 || attrs.int_or("spatial", 1)? != 0,
        })
    }

    /// The shape of scale, B, mean and var for an input of `shape`.
    fn param_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        if shape.len() < 2 {
            bail_model!(
                "BatchNormalization input must have rank >= 2 (N, C, ...), got {}",
                fmt_shape(shape)
            );
        }
        Ok(if self.spatial {
            vec![shape[1]]
        } else {
            shape[1..].to_vec()
        })
    }

    /// Y, then in training the running mean and var and (before opset 14, when asked for)
    /// the saved batch mean and var, all as flat vectors.
    fn eval<T: Float>(
        &self,
        x: &[T],
        shape: &[usize],
        [scale, bias, mean, var]: [&[T]; 4],
    ) -> Vec<Vec<T>> {
        let n = shape[0];
        let (channels, plane) = if self.spatial {
            (shape[1], shape[2..].iter().product::<usize>())
        } else {
            (shape[1..].iter().product::<usize>(), 1)
        };
        let eps = T::from(self.epsilon).unwrap_or_else(T::zero);
        let (batch_mean, batch_var) = if self.training {
            let count = T::from(n * plane).unwrap_or_else(T::one);
            let mut bm = vec![T::zero(); channels];
            let mut bv = vec![T::zero(); channels];
            for c in 0..channels {
                let planes =
                    (0..n).map(|b| &x[(b * channels + c) * plane..(b * channels + c + 1) * plane]);
                let m = planes
                    .clone()
                    .fold(T::zero(), |a, p| a + lane_sum(p, |v| v))
                    / count;
                bv[c] =
                    planes.fold(T::zero(), |a, p| a + lane_sum(p, |v| (v - m) * (v - m))) / count;
                bm[c] = m;
            }
            (bm, bv)
        } else {
            (mean.to_vec(), var.to_vec())
        };
        // y = x * a + b per channel.
        let a: Vec<T> = (0..channels)
            .map(|c| scale[c] / (batch_var[c] + eps).sqrt())
            .collect();
        let b: Vec<T> = (0..channels)
            .map(|c| bias[c] - batch_mean[c] * a[c])
            .collect();
        let mut y = Vec::with_capacity(x.len());
        for (i, block) in x.chunks(plane.max(1)).enumerate() {
            let c = i % channels.max(1);
            let (ac, bc) = (a[c], b[c]);
            y.extend(block.iter().map(|&v| v * ac + bc));
        }
        if !self.training {
            return vec![y];
        }
        let mom = T::from(self.momentum).unwrap_or_else(T::zero);
        let keep = T::one() - mom;
        let running_mean = (0..channels)
            .map(|c| mean[c] * mom + batch_mean[c] * keep)
            .collect();
        let running_var = (0..channels)
            .map(|c| var[c] * mom + batch_var[c] * keep)
            .collect();
        vec![y, running_mean, running_var, batch_mean, batch_var]
    }
}

/// LayerNormalization's and RMSNormalization's attributes.
struct LayerNorm {
    axis: i64,
    epsilon: f64,
    /// The dtype of the Mean and InvStdDev outputs.
    stash: DType,
}

impl LayerNorm {
    fn parse(op: &str, attrs: &Attrs) -> Result<LayerNorm> {
        let code = attrs.int_or("stash_type", 1)?;
        let stash = i32::try_from(code)
            .ok()
            .and_then(DType::from_onnx_code)
            .filter(|d| d.is_float())
            .ok_or_else(|| {
                Error::InvalidModel(format!("{op} stash_type {code} is not a float type"))
            })?;
        Ok(LayerNorm {
            axis: attrs.int_or("axis", -1)?,
            epsilon: f64::from(attrs.float_or("epsilon", 1e-5)?),
            stash,
        })
    }

    /// Normalizes each row (the trailing dims from `axis`); returns Y, Mean, InvStdDev.
    /// With `rms`, the mean is not subtracted and the statistic is the mean square.
    fn eval<T: Float + Elem>(
        &self,
        x: &[T],
        shape: &[usize],
        axis: usize,
        scale: &RowParam<T>,
        bias: Option<&RowParam<T>>,
        rms: bool,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let m: usize = shape[axis..].iter().product();
        let rows: usize = shape[..axis].iter().product();
        let eps = T::from(self.epsilon).unwrap_or_else(T::zero);
        let mut y = vec![T::zero(); x.len()];
        let (mut means, mut invs) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
        if m == 0 {
            return (y, vec![T::zero(); rows], vec![T::zero(); rows]);
        }
        for (r, (row, out)) in x.chunks(m).zip(y.chunks_mut(m)).enumerate() {
            let (mean, var) = if rms {
                let n = T::from(m).unwrap_or_else(T::one);
                (T::zero(), lane_sum(row, |v| v * v) / n)
            } else {
                moments(row)
            };
            let inv = T::one() / (var + eps).sqrt();
            let s = scale.row(r, m);
            match bias {
                Some(b) => {
                    let b = b.row(r, m);
                    for (((o, &v), &s), &b) in out.iter_mut().zip(row).zip(s).zip(b) {
                        *o = (v - mean) * inv * s + b;
                    }
                }
                None => {
                    for ((o, &v), &s) in out.iter_mut().zip(row).zip(s) {
                        *o = (v - mean) * inv * s;
                    }
                }
            }
            means.push(mean);
            invs.push(inv);
        }
        (y, means, invs)
    }
}

/// A scale or bias broadcast against the input: one value per element of a row (shared by
/// all rows, the usual case) or one per element of the input.
struct RowParam<T> {
    values: Vec<T>,
    per_row: bool,
}

impl<T: Elem> RowParam<T> {
    fn new(t: &Tensor, x_shape: &[usize], axis: usize) -> Result<RowParam<T>> {
        let row_shape = &x_shape[axis..];
        let dims = t.shape();
        let lead = dims.iter().take_while(|&&d| d == 1).count();
        let trailing = &dims[lead..];
        let fits_row = trailing.len() <= row_shape.len()
            && broadcast(trailing, row_shape).ok().as_deref() == Some(row_shape);
        let target = if fits_row { row_shape } else { x_shape };
        let t = t.clone().reshaped(trailing.to_vec())?;
        let values = if t.shape() == target {
            t
        } else {
            expand(&t, target)?
        };
        Ok(RowParam {
            values: values.slice::<T>()?.to_vec(),
            per_row: fits_row,
        })
    }

    fn row(&self, r: usize, m: usize) -> &[T] {
        if self.per_row {
            &self.values
        } else {
            &self.values[r * m..(r + 1) * m]
        }
    }
}

/// GroupNormalization's `num_groups`.
fn group_count(attrs: &Attrs) -> Result<usize> {
    let g = attrs.req_int("num_groups")?;
    usize::try_from(g).ok().filter(|&g| g > 0).ok_or_else(|| {
        Error::InvalidModel(format!(
            "GroupNormalization num_groups must be positive, got {g}"
        ))
    })
}

/// Normalizes each (sample, group of channels) block, then applies per-channel scale and
/// bias. InstanceNormalization is the case of one channel per group.
fn group_norm<T: Float>(
    x: &[T],
    shape: &[usize],
    groups: usize,
    scale: &[T],
    bias: &[T],
    eps: T,
) -> Vec<T> {
    let channels = shape[1];
    let plane: usize = shape[2..].iter().product();
    let per_group = channels.checked_div(groups).unwrap_or(0);
    let block = per_group * plane;
    let mut y = vec![T::zero(); x.len()];
    if block == 0 {
        return y;
    }
    for (i, (xb, yb)) in x.chunks(block).zip(y.chunks_mut(block)).enumerate() {
        let (mean, var) = moments(xb);
        let inv = T::one() / (var + eps).sqrt();
        let first_channel = (i % groups) * per_group;
        for (k, (xp, yp)) in xb
            .chunks(plane.max(1))
            .zip(yb.chunks_mut(plane.max(1)))
            .enumerate()
        {
            let c = first_channel + k;
            let a = inv * scale[c];
            let b = bias[c] - mean * a;
            for (o, &v) in yp.iter_mut().zip(xp) {
                *o = v * a + b;
            }
        }
    }
    y
}

fn mvn_axes(attrs: &Attrs) -> Result<Vec<i64>> {
    attrs.ints_or("axes", &[0, 2, 3])
}

/// MeanVarianceNormalization: `(x - mean) / (std + 1e-9)` with statistics over `axes`.
fn mvn<T: Float + Elem>(x: &[T], shape: &[usize], axes: &[usize]) -> Vec<T> {
    let stat_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let st = crate::shape::broadcast_strides(&stat_shape, shape);
    let n_stat: usize = stat_shape.iter().product();
    let count = T::from(shape.iter().product::<usize>() / n_stat.max(1)).unwrap_or_else(T::one);
    let mut sum = vec![T::zero(); n_stat];
    crate::shape::for_each_index(shape, [&st], |i, [s]| sum[s] = sum[s] + x[i]);
    let mean: Vec<T> = sum.iter().map(|&s| s / count).collect();
    let mut sq = vec![T::zero(); n_stat];
    crate::shape::for_each_index(shape, [&st], |i, [s]| {
        let d = x[i] - mean[s];
        sq[s] = sq[s] + d * d;
    });
    let eps = T::from(1e-9).unwrap_or_else(T::zero);
    let denom: Vec<T> = sq.iter().map(|&q| (q / count).sqrt() + eps).collect();
    let mut y = vec![T::zero(); x.len()];
    crate::shape::for_each_index(shape, [&st], |i, [s]| y[i] = (x[i] - mean[s]) / denom[s]);
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::{Op, OpKind};

    fn run(
        op: NormOp,
        version: u32,
        attrs: &[(&str, Attr)],
        inputs: &[&Tensor],
        outputs: usize,
    ) -> Result<Vec<Tensor>> {
        let mut a = Attrs::new();
        for (k, v) in attrs {
            a.set(k, v.clone());
        }
        let op = Op {
            kind: OpKind::Norm(op),
            attrs: a,
            version,
        };
        let ins: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        op.eval(&ins, outputs)
    }

    fn close(got: &Tensor, want: &[f32]) -> bool {
        let g = got.to_f64_vec();
        g.len() == want.len()
            && g.iter()
                .zip(want)
                .all(|(a, &b)| (a - f64::from(b)).abs() < 1e-4)
    }

    #[test]
    fn layer_norm_rows_and_stats() -> Result<()> {
        let x = Tensor::from_vec(vec![2, 2], vec![1.0f32, 3.0, 0.0, 4.0])?;
        let s = Tensor::from_vec(vec![2], vec![1.0f32, 2.0])?;
        let b = Tensor::from_vec(vec![2], vec![0.0f32, 1.0])?;
        let out = run(
            NormOp::LayerNormalization,
            17,
            &[("epsilon", Attr::Float(0.0))],
            &[&x, &s, &b],
            3,
        )?;
        assert!(close(&out[0], &[-1.0, 3.0, -1.0, 3.0]), "{:?}", out[0]);
        assert_eq!(out[1].shape(), &[2, 1]);
        assert!(close(&out[1], &[2.0, 2.0]));
        assert!(close(&out[2], &[1.0, 0.5]));
        Ok(())
    }

    #[test]
    fn batch_norm_training_updates_running_stats() -> Result<()> {
        let x = Tensor::from_vec(vec![2, 1, 1], vec![1.0f32, 3.0])?;
        let one = Tensor::from_vec(vec![1], vec![1.0f32])?;
        let zero = Tensor::from_vec(vec![1], vec![0.0f32])?;
        let attrs = [
            ("training_mode", Attr::Int(1)),
            ("epsilon", Attr::Float(0.0)),
            ("momentum", Attr::Float(0.5)),
        ];
        let out = run(
            NormOp::BatchNormalization,
            15,
            &attrs,
            &[&x, &one, &zero, &zero, &one],
            3,
        )?;
        assert!(close(&out[0], &[-1.0, 1.0]));
        assert!(close(&out[1], &[1.0])); // 0 * 0.5 + 2 * 0.5
        assert!(close(&out[2], &[1.0])); // 1 * 0.5 + 1 * 0.5
        Ok(())
    }

    #[test]
    fn group_norm_opset18_scales_per_group() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 4, 1], vec![0.0f32, 2.0, 4.0, 8.0])?;
        let s = Tensor::from_vec(vec![2], vec![1.0f32, 3.0])?;
        let b = Tensor::from_vec(vec![2], vec![0.0f32, 7.0])?;
        let attrs = [("num_groups", Attr::Int(2)), ("epsilon", Attr::Float(0.0))];
        let out = run(NormOp::GroupNormalization, 18, &attrs, &[&x, &s, &b], 1)?;
        assert!(close(&out[0], &[-1.0, 1.0, 4.0, 10.0]), "{:?}", out[0]);
        assert!(run(NormOp::GroupNormalization, 21, &attrs, &[&x, &s, &b], 1).is_err());
        Ok(())
    }

    #[test]
    fn rms_norm_divides_by_root_mean_square() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 2], vec![3.0f32, 4.0])?;
        let s = Tensor::from_vec(vec![2], vec![1.0f32, 2.0])?;
        let out = run(
            NormOp::RMSNormalization,
            23,
            &[("epsilon", Attr::Float(0.0))],
            &[&x, &s],
            1,
        )?;
        let r = (12.5f32).sqrt();
        assert!(close(&out[0], &[3.0 / r, 8.0 / r]));
        Ok(())
    }
}
