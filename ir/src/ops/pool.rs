//! The pooling op family: windowed pooling over 1 to 3 spatial dims (MaxPool with its
//! optional Indices output, AveragePool, LpPool), global pooling over all spatial dims,
//! MaxUnpool (the scatter that inverts MaxPool), and LRN (a window across channels).
//!
//! Windowed pools share one geometry ([`Windows`], parsed once for inference and
//! evaluation) and one kernel ([`reduce_windows`]) that walks each window's valid taps
//! with a contiguous innermost loop.

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, demote, promote};
use crate::ops::norm::lane_sum;
use crate::shape::fmt_shape;
use crate::tensor::{Elem, MAX_ELEMENTS, Tensor};
use crate::{bail_model, bail_unsupported};
use num_traits::{Bounded, Float};

crate::op_family! {
    /// Ops of the pool family.
    pub enum PoolOp {
        MaxPool,
        AveragePool,
        LpPool,
        GlobalAveragePool,
        GlobalMaxPool,
        GlobalLpPool,
        MaxUnpool,
        LRN,
    }
}

impl PoolOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        let name = self.name();
        let dtype = cx.dtype(0)?;
        let shape = cx.shape(0)?;
        match self {
            PoolOp::MaxPool => {
                check_dtype(
                    name,
                    dtype,
                    &[
                        DType::F32,
                        DType::F64,
                        DType::F16,
                        DType::BF16,
                        DType::I8,
                        DType::U8,
                    ],
                )?;
                storage_order(cx.attrs)?;
                let out = match shape {
                    Some(s) => Some(Windows::parse(name, cx.attrs, s)?.out_shape(s)),
                    None => None,
                };
                Ok(vec![
                    ValueType {
                        dtype,
                        shape: out.clone(),
                    },
                    ValueType {
                        dtype: DType::I64,
                        shape: out,
                    },
                ])
            }
            PoolOp::AveragePool | PoolOp::LpPool => {
                check_float(name, dtype)?;
                if self == PoolOp::LpPool {
                    lp_exponent(cx.attrs)?;
                }
                let out = match shape {
                    Some(s) => Some(Windows::parse(name, cx.attrs, s)?.out_shape(s)),
                    None => None,
                };
                Ok(vec![ValueType { dtype, shape: out }])
            }
            PoolOp::GlobalAveragePool | PoolOp::GlobalMaxPool | PoolOp::GlobalLpPool => {
                if self == PoolOp::GlobalMaxPool {
                    check_dtype(
                        name,
                        dtype,
                        &[
                            DType::F32,
                            DType::F64,
                            DType::F16,
                            DType::BF16,
                            DType::I8,
                            DType::U8,
                        ],
                    )?;
                } else {
                    check_float(name, dtype)?;
                }
                if self == PoolOp::GlobalLpPool {
                    lp_exponent(cx.attrs)?;
                }
                let Some(s) = shape else {
                    return Ok(vec![ValueType::unknown(dtype)]);
                };
                if s.len() < 2 {
                    bail_model!(
                        "{name} input must have rank >= 2 (N, C, spatial...), got {}",
                        fmt_shape(s)
                    );
                }
                let mut out = s[..2].to_vec();
                out.resize(s.len(), 1);
                Ok(vec![ValueType::new(dtype, out)])
            }
            PoolOp::MaxUnpool => {
                check_float(name, dtype)?;
                let idx = cx.input(1)?.ty;
                if idx.dtype != DType::I64 {
                    bail_model!("MaxUnpool indices (input 1) must be i64, got {}", idx.dtype);
                }
                if let (Some(x), Some(i)) = (shape, idx.shape.as_deref())
                    && x != i
                {
                    bail_model!(
                        "MaxUnpool indices shape {} differs from input shape {}",
                        fmt_shape(i),
                        fmt_shape(x)
                    );
                }
                let Some(s) = shape else {
                    return Ok(vec![ValueType::unknown(dtype)]);
                };
                let inferred = unpool_shape(cx.attrs, s)?;
                let out = match cx.opt(2) {
                    None => Some(inferred),
                    Some(f) => match f.value {
                        Some(v) => Some(unpool_requested_shape(&inferred, &v.to_i64_vec())?),
                        None => None,
                    },
                };
                Ok(vec![ValueType { dtype, shape: out }])
            }
            PoolOp::LRN => {
                check_float(name, dtype)?;
                Lrn::parse(cx.attrs)?;
                if let Some(s) = shape
                    && s.len() < 3
                {
                    bail_model!(
                        "LRN input must have rank >= 3 (N, C, spatial...), got {}",
                        fmt_shape(s)
                    );
                }
                Ok(vec![ValueType {
                    dtype,
                    shape: shape.map(<[usize]>::to_vec),
                }])
            }
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        let name = self.name();
        let x = cx.input(0)?;
        match self {
            PoolOp::MaxPool => {
                let win = Windows::parse(name, cx.attrs, x.shape())?;
                let grid = Grid::new(name, &win, x.shape())?;
                let column_major = storage_order(cx.attrs)?;
                let xp = promote(x);
                let want_indices = cx.outputs.len() > 1;
                let (y, indices) = match xp.dtype() {
                    DType::F32 => max_pool::<f32>(&xp, &grid, want_indices, column_major)?,
                    DType::F64 => max_pool::<f64>(&xp, &grid, want_indices, column_major)?,
                    DType::I8 => max_pool::<i8>(&xp, &grid, want_indices, column_major)?,
                    DType::U8 => max_pool::<u8>(&xp, &grid, want_indices, column_major)?,
                    other => return Err(bad_dtype(name, other)),
                };
                let out_shape = cx.out_shape(0)?.to_vec();
                let mut out = vec![demote(Tensor::new(out_shape.clone(), y)?, x.dtype())];
                if want_indices {
                    out.push(Tensor::from_vec(out_shape, indices)?);
                }
                Ok(out)
            }
            PoolOp::AveragePool | PoolOp::LpPool => {
                let win = Windows::parse(name, cx.attrs, x.shape())?;
                let grid = Grid::new(name, &win, x.shape())?;
                let mode = if self == PoolOp::LpPool {
                    Mean::Lp(lp_exponent(cx.attrs)?)
                } else if cx.attrs.int_or("count_include_pad", 0)? != 0 {
                    Mean::IncludePad
                } else {
                    Mean::ExcludePad
                };
                let xp = promote(x);
                let y = crate::with_float!(xp.dtype(), name, T => {
                    Tensor::from_vec(cx.out_shape(0)?.to_vec(), avg_pool::<T>(xp.slice::<T>()?, &grid, mode))?
                });
                Ok(vec![demote(y, x.dtype())])
            }
            PoolOp::GlobalAveragePool | PoolOp::GlobalMaxPool | PoolOp::GlobalLpPool => {
                let planes = x.shape()[..2].iter().product::<usize>();
                let xp = promote(x);
                let y = if self == PoolOp::GlobalMaxPool {
                    match xp.dtype() {
                        DType::F32 => global_max::<f32>(&xp, planes)?,
                        DType::F64 => global_max::<f64>(&xp, planes)?,
                        DType::I8 => global_max::<i8>(&xp, planes)?,
                        DType::U8 => global_max::<u8>(&xp, planes)?,
                        other => return Err(bad_dtype(name, other)),
                    }
                } else {
                    let p = if self == PoolOp::GlobalLpPool {
                        Some(lp_exponent(cx.attrs)?)
                    } else {
                        None
                    };
                    crate::with_float!(xp.dtype(), name, T => T::into_data(global_mean::<T>(xp.slice::<T>()?, planes, p)))
                };
                Ok(vec![demote(
                    Tensor::new(cx.out_shape(0)?.to_vec(), y)?,
                    x.dtype(),
                )])
            }
            PoolOp::MaxUnpool => {
                let inferred = unpool_shape(cx.attrs, x.shape())?;
                let indices = cx.input(1)?.slice::<i64>()?;
                let out_shape = cx.out_shape(0)?;
                crate::with_dtype!(x.dtype(), T => {
                    let y = max_unpool(x.slice::<T>()?, indices, &inferred, out_shape)?;
                    Ok(vec![Tensor::from_vec(out_shape.to_vec(), y)?])
                })
            }
            PoolOp::LRN => {
                let lrn = Lrn::parse(cx.attrs)?;
                let xp = promote(x);
                let y = crate::with_float!(xp.dtype(), name, T => {
                    Tensor::from_vec(x.shape().to_vec(), lrn.apply::<T>(xp.slice::<T>()?, x.shape()))?
                });
                Ok(vec![demote(y, x.dtype())])
            }
        }
    }
}

fn check_dtype(op: &str, dtype: DType, allowed: &[DType]) -> Result<()> {
    if allowed.contains(&dtype) {
        Ok(())
    } else {
        Err(bad_dtype(op, dtype))
    }
}

fn check_float(op: &str, dtype: DType) -> Result<()> {
    check_dtype(
        op,
        dtype,
        &[DType::F32, DType::F64, DType::F16, DType::BF16],
    )
}

/// MaxPool's `storage_order`: whether Indices are column-major over the spatial dims.
pub fn storage_order(attrs: &Attrs) -> Result<bool> {
    match attrs.int_or("storage_order", 0)? {
        0 => Ok(false),
        1 => Ok(true),
        other => bail_model!("MaxPool attribute 'storage_order' must be 0 or 1, got {other}"),
    }
}

/// The `p` of LpPool and GlobalLpPool (an int since opset 2, a float before).
pub fn lp_exponent(attrs: &Attrs) -> Result<f64> {
    let p = attrs.float_or("p", 2.0)?;
    if !(p > 0.0 && p.is_finite()) {
        bail_model!("attribute 'p' must be positive, got {p}");
    }
    Ok(f64::from(p))
}

/// A per-spatial-axis attribute: `n` values, each at least `min`, or `default` when absent.
fn spatial_ints(
    op: &str,
    attrs: &Attrs,
    name: &str,
    n: usize,
    default: usize,
    min: i64,
) -> Result<Vec<usize>> {
    let Some(v) = attrs.ints(name)? else {
        return Ok(vec![default; n]);
    };
    if v.len() != n {
        bail_model!(
            "{op} attribute '{name}' has {} values for {n} spatial dims",
            v.len()
        );
    }
    v.iter()
        .map(|&d| {
            if d < min {
                bail_model!("{op} attribute '{name}' has value {d}, below the minimum {min}");
            }
            usize::try_from(d).map_err(|_| {
                Error::InvalidModel(format!("{op} attribute '{name}' value {d} is too large"))
            })
        })
        .collect()
}

/// The window layout of a pooling op along each spatial axis, `auto_pad` resolved.
/// Output position `o` at tap `k` reads input position `o * stride + k * dilation - pad_begin`.
#[derive(Debug)]
pub struct Windows {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub pads_end: Vec<usize>,
    /// Output length of each spatial axis.
    pub out: Vec<usize>,
}

impl Windows {
    /// Parses `kernel_shape`, `strides`, `dilations`, `pads`, `auto_pad` and `ceil_mode`
    /// for an input of `shape` (N, C, spatial...).
    pub fn parse(op: &str, attrs: &Attrs, shape: &[usize]) -> Result<Windows> {
        if shape.len() < 3 {
            bail_model!(
                "{op} input must have rank >= 3 (N, C, spatial...), got {}",
                fmt_shape(shape)
            );
        }
        let spatial = &shape[2..];
        let n = spatial.len();
        if attrs.ints("kernel_shape")?.is_none() {
            bail_model!("{op} requires attribute 'kernel_shape'");
        }
        let kernel = spatial_ints(op, attrs, "kernel_shape", n, 1, 1)?;
        let strides = spatial_ints(op, attrs, "strides", n, 1, 1)?;
        let dilations = spatial_ints(op, attrs, "dilations", n, 1, 1)?;
        let pads = match attrs.ints("pads")? {
            None => vec![0; 2 * n],
            Some(_) => spatial_ints(op, attrs, "pads", 2 * n, 0, 0)?,
        };
        if let Some(p) = pads.iter().find(|&&p| p > MAX_ELEMENTS) {
            bail_model!("{op} pad {p} is larger than any tensor");
        }
        let ceil_mode = attrs.int_or("ceil_mode", 0)? != 0;
        let auto_pad = attrs.string_or("auto_pad", "NOTSET")?;
        let mut win = Windows {
            kernel,
            strides,
            dilations,
            pads_begin: vec![0; n],
            pads_end: vec![0; n],
            out: vec![0; n],
        };
        for i in 0..n {
            let (k, s, d, len) = (win.kernel[i], win.strides[i], win.dilations[i], spatial[i]);
            let span = (k - 1)
                .checked_mul(d)
                .and_then(|v| v.checked_add(1))
                .ok_or_else(|| {
                    Error::InvalidModel(format!("{op} kernel {k} with dilation {d} is too large"))
                })?;
            match auto_pad {
                "NOTSET" | "VALID" => {
                    let (pb, pe) = if auto_pad == "NOTSET" {
                        (pads[i], pads[n + i])
                    } else {
                        (0, 0)
                    };
                    let padded = len + pb + pe;
                    if padded < span {
                        bail_model!(
                            "{op}: spatial dim {i} of size {len} (padded {padded}) is smaller than the window {span}"
                        );
                    }
                    let mut out = if ceil_mode {
                        (padded - span).div_ceil(s) + 1
                    } else {
                        (padded - span) / s + 1
                    };
                    // The last window must start inside the input or its leading pad.
                    if ceil_mode && (out - 1) * s >= len + pb {
                        out -= 1;
                    }
                    win.pads_begin[i] = pb;
                    win.pads_end[i] = pe;
                    win.out[i] = out;
                }
                "SAME_UPPER" | "SAME_LOWER" => {
                    let out = len.div_ceil(s);
                    let total = (out.saturating_sub(1) * s + span).saturating_sub(len);
                    let pb = if auto_pad == "SAME_LOWER" {
                        total.div_ceil(2)
                    } else {
                        total / 2
                    };
                    win.pads_begin[i] = pb;
                    win.pads_end[i] = total - pb;
                    win.out[i] = out;
                }
                other => bail_model!(
                    "{op} auto_pad '{other}' is not NOTSET, SAME_UPPER, SAME_LOWER or VALID"
                ),
            }
        }
        Ok(win)
    }

    fn out_shape(&self, in_shape: &[usize]) -> Vec<usize> {
        let mut s = in_shape[..2].to_vec();
        s.extend(&self.out);
        s
    }

    /// The taps of each output position along spatial axis `i` of length `len`.
    pub fn taps(&self, i: usize, len: usize) -> Vec<Taps> {
        let (k, s, d, pb, pe) = (
            self.kernel[i],
            self.strides[i],
            self.dilations[i],
            self.pads_begin[i],
            self.pads_end[i],
        );
        (0..self.out[i])
            .map(|o| {
                // Window start in input coordinates: o * s - pb (may be negative).
                let start = (o * s) as i64 - pb as i64;
                let (d_i, len_i) = (d as i64, len as i64);
                let lo = if start < 0 {
                    (-start + d_i - 1) / d_i
                } else {
                    0
                };
                let hi = if len_i > start {
                    ((len_i - start + d_i - 1) / d_i).min(k as i64)
                } else {
                    0
                };
                let limit = len_i + pe as i64;
                let with_pad = if limit > start {
                    ((limit - start + d_i - 1) / d_i).min(k as i64)
                } else {
                    0
                };
                let count = (hi - lo).max(0);
                Taps {
                    first: if count > 0 {
                        (start + lo * d_i) as usize
                    } else {
                        0
                    },
                    count: count as usize,
                    with_pad: with_pad as usize,
                }
            })
            .collect()
    }
}

/// The valid taps of one window along one axis: input positions `first + j * dilation`
/// for `j < count`; `with_pad` counts the taps inside input plus explicit padding.
#[derive(Clone, Copy, Debug)]
pub struct Taps {
    pub first: usize,
    pub count: usize,
    pub with_pad: usize,
}

/// Pooling geometry with the spatial axes padded to exactly three (leading size-1 axes),
/// so one loop nest serves 1-D, 2-D and 3-D pooling.
struct Grid {
    in_dims: [usize; 3],
    dilations: [usize; 3],
    /// Per axis, the taps of each output position.
    taps: [Vec<Taps>; 3],
    /// Kernel length along the last axis.
    kernel_w: usize,
    /// The output positions along the last axis whose windows lie wholly inside the input.
    interior_w: std::ops::Range<usize>,
    /// N * C.
    planes: usize,
}

impl Grid {
    fn new(op: &str, win: &Windows, shape: &[usize]) -> Result<Grid> {
        let n = shape.len() - 2;
        if n > 3 {
            bail_unsupported!("{op} over {n} spatial dims (at most 3)");
        }
        let lead = 3 - n;
        let mut in_dims = [1; 3];
        let mut dilations = [1; 3];
        let mut taps: [Vec<Taps>; 3] = std::array::from_fn(|_| {
            vec![Taps {
                first: 0,
                count: 1,
                with_pad: 1,
            }]
        });
        for i in 0..n {
            in_dims[lead + i] = shape[2 + i];
            dilations[lead + i] = win.dilations[i];
            taps[lead + i] = win.taps(i, shape[2 + i]);
        }
        let kernel_w = win.kernel.last().copied().unwrap_or(1);
        let full = |t: &Taps| t.count == kernel_w;
        let lo = taps[2].iter().position(full).unwrap_or(0);
        let hi = taps[2].iter().rposition(full).map_or(0, |i| i + 1).max(lo);
        Ok(Grid {
            in_dims,
            dilations,
            taps,
            kernel_w,
            interior_w: lo..hi,
            planes: shape[0] * shape[1],
        })
    }

    fn plane_len(&self) -> usize {
        self.in_dims.iter().product()
    }

    fn out_plane_len(&self) -> usize {
        self.taps.iter().map(Vec::len).product()
    }
}

/// Folds every window of one input plane: `step(acc, value)` over the valid taps, then
/// `finish(acc, valid_taps, taps_within_pads)` per output element.
///
/// One row of accumulators covers a row of outputs; for the windows wholly inside the
/// input the loop runs over output positions innermost (contiguous for stride 1).
fn reduce_windows<T: Copy, A: Copy, O>(
    plane: &[T],
    g: &Grid,
    out: &mut Vec<O>,
    init: A,
    step: impl Fn(A, T) -> A,
    finish: impl Fn(A, usize, usize) -> O,
) {
    let [_, ih, iw] = g.in_dims;
    let [dd, dh, dw] = g.dilations;
    let tws = &g.taps[2];
    let interior = g.interior_w.clone();
    let sw = if interior.len() > 1 {
        tws[interior.start + 1].first - tws[interior.start].first
    } else {
        1
    };
    let mut acc = vec![init; tws.len()];
    for td in &g.taps[0] {
        for th in &g.taps[1] {
            acc.fill(init);
            for jd in 0..td.count {
                let id = td.first + jd * dd;
                for jh in 0..th.count {
                    let row_off = (id * ih + th.first + jh * dh) * iw;
                    let row = &plane[row_off..row_off + iw];
                    for ow in (0..interior.start).chain(interior.end..tws.len()) {
                        let tw = tws[ow];
                        for j in 0..tw.count {
                            acc[ow] = step(acc[ow], row[tw.first + j * dw]);
                        }
                    }
                    if interior.is_empty() {
                        continue;
                    }
                    let accs = &mut acc[interior.clone()];
                    for k in 0..g.kernel_w {
                        let base = tws[interior.start].first + k * dw;
                        if sw == 1 {
                            for (a, &v) in accs.iter_mut().zip(&row[base..base + interior.len()]) {
                                *a = step(*a, v);
                            }
                        } else {
                            for (a, &v) in accs.iter_mut().zip(row[base..].iter().step_by(sw)) {
                                *a = step(*a, v);
                            }
                        }
                    }
                }
            }
            for (&a, tw) in acc.iter().zip(tws) {
                out.push(finish(
                    a,
                    td.count * th.count * tw.count,
                    td.with_pad * th.with_pad * tw.with_pad,
                ));
            }
        }
    }
}

/// The first maximal valid tap of each window of one plane, as (value, offset in plane);
/// offset `usize::MAX` for a window without valid taps.
fn argmax_windows<T: Copy + PartialOrd + Bounded>(
    plane: &[T],
    g: &Grid,
    out: &mut Vec<(T, usize)>,
) {
    let [_, ih, iw] = g.in_dims;
    let [dd, dh, dw] = g.dilations;
    for td in &g.taps[0] {
        for th in &g.taps[1] {
            for tw in &g.taps[2] {
                let mut best = (T::min_value(), usize::MAX);
                for jd in 0..td.count {
                    for jh in 0..th.count {
                        let row_off = ((td.first + jd * dd) * ih + th.first + jh * dh) * iw;
                        for j in 0..tw.count {
                            let at = row_off + tw.first + j * dw;
                            if best.1 == usize::MAX || plane[at] > best.0 {
                                best = (plane[at], at);
                            }
                        }
                    }
                }
                out.push(best);
            }
        }
    }
}

/// MaxPool: the maximum of each window and, when `indices` is asked for, its flat index
/// in the whole input tensor (row-major, or column-major over the spatial dims when
/// `column_major`); -1 for a window with no valid tap.
fn max_pool<T: Elem + Bounded>(
    x: &Tensor,
    g: &Grid,
    indices: bool,
    column_major: bool,
) -> Result<(crate::tensor::Data, Vec<i64>)> {
    let xs = x.slice::<T>()?;
    let plane_len = g.plane_len();
    let n_out = g.planes * g.out_plane_len();
    let mut y = Vec::with_capacity(n_out);
    if !indices {
        for p in 0..g.planes {
            let plane = &xs[p * plane_len..(p + 1) * plane_len];
            reduce_windows(
                plane,
                g,
                &mut y,
                T::min_value(),
                |m, v| if v > m { v } else { m },
                |m, _, _| m,
            );
        }
        return Ok((T::into_data(y), vec![]));
    }
    let mut idx = Vec::with_capacity(n_out);
    let mut pairs: Vec<(T, usize)> = Vec::with_capacity(g.out_plane_len());
    let [_, ih, iw] = g.in_dims;
    for p in 0..g.planes {
        let plane = &xs[p * plane_len..(p + 1) * plane_len];
        let base = (p * plane_len) as i64;
        pairs.clear();
        argmax_windows(plane, g, &mut pairs);
        for &(m, at) in &pairs {
            y.push(m);
            idx.push(if at == usize::MAX {
                -1
            } else if column_major {
                // First spatial axis fastest. Leading padded axes have size 1, so the
                // same formula serves 1-D, 2-D and 3-D.
                let (d, h, w) = (at / (ih * iw), (at / iw) % ih, at % iw);
                base + (d + h * g.in_dims[0] + w * g.in_dims[0] * ih) as i64
            } else {
                base + at as i64
            });
        }
    }
    Ok((T::into_data(y), idx))
}

/// How AveragePool and LpPool divide or combine a window's sum.
#[derive(Clone, Copy)]
enum Mean {
    /// Average over the valid taps.
    ExcludePad,
    /// Average over the taps inside input plus explicit padding.
    IncludePad,
    /// `(sum |x|^p)^(1/p)` over the valid taps (padding counts as zero).
    Lp(f64),
}

fn avg_pool<T: Float + Elem>(xs: &[T], g: &Grid, mode: Mean) -> Vec<T> {
    let plane_len = g.plane_len();
    let mut y = Vec::with_capacity(g.planes * g.out_plane_len());
    for p in 0..g.planes {
        let plane = &xs[p * plane_len..(p + 1) * plane_len];
        match mode {
            Mean::ExcludePad => reduce_windows(
                plane,
                g,
                &mut y,
                T::zero(),
                |a, v| a + v,
                |s, n, _| s / T::from_f64(n as f64),
            ),
            Mean::IncludePad => reduce_windows(
                plane,
                g,
                &mut y,
                T::zero(),
                |a, v| a + v,
                |s, _, n| s / T::from_f64(n as f64),
            ),
            Mean::Lp(p) => {
                let (pt, inv) = (T::from_f64(p), T::from_f64(1.0 / p));
                reduce_windows(
                    plane,
                    g,
                    &mut y,
                    T::zero(),
                    |a, v| a + lp_term(v, pt, p),
                    |s, _, _| s.powf(inv),
                )
            }
        }
    }
    y
}

/// `|v|^p`, exact multiplication for the common p = 1 and p = 2.
fn lp_term<T: Float>(v: T, pt: T, p: f64) -> T {
    if p == 2.0 {
        v * v
    } else if p == 1.0 {
        v.abs()
    } else {
        v.abs().powf(pt)
    }
}

fn global_max<T: Elem + Bounded>(x: &Tensor, planes: usize) -> Result<crate::tensor::Data> {
    let xs = x.slice::<T>()?;
    let plane_len = xs.len().checked_div(planes).unwrap_or(0);
    let y: Vec<T> = (0..planes)
        .map(|p| {
            xs[p * plane_len..(p + 1) * plane_len]
                .iter()
                .fold(T::min_value(), |m, &v| if v > m { v } else { m })
        })
        .collect();
    Ok(T::into_data(y))
}

/// GlobalAveragePool (`p` absent) or GlobalLpPool over each contiguous plane.
fn global_mean<T: Float + Elem>(xs: &[T], planes: usize, p: Option<f64>) -> Vec<T> {
    let plane_len = xs.len().checked_div(planes).unwrap_or(0);
    (0..planes)
        .map(|i| {
            let plane = &xs[i * plane_len..(i + 1) * plane_len];
            match p {
                None => lane_sum(plane, |v| v) / T::from_f64(plane_len as f64),
                Some(p) => {
                    let pt = T::from_f64(p);
                    lane_sum(plane, |v| lp_term(v, pt, p)).powf(T::from_f64(1.0 / p))
                }
            }
        })
        .collect()
}

/// MaxUnpool's default output shape: `(in - 1) * stride - pad_begin - pad_end + kernel`.
pub fn unpool_shape(attrs: &Attrs, shape: &[usize]) -> Result<Vec<usize>> {
    if shape.len() < 3 {
        bail_model!(
            "MaxUnpool input must have rank >= 3 (N, C, spatial...), got {}",
            fmt_shape(shape)
        );
    }
    let n = shape.len() - 2;
    if attrs.ints("kernel_shape")?.is_none() {
        bail_model!("MaxUnpool requires attribute 'kernel_shape'");
    }
    let kernel = spatial_ints("MaxUnpool", attrs, "kernel_shape", n, 1, 1)?;
    let strides = spatial_ints("MaxUnpool", attrs, "strides", n, 1, 1)?;
    let pads = match attrs.ints("pads")? {
        None => vec![0; 2 * n],
        Some(_) => spatial_ints("MaxUnpool", attrs, "pads", 2 * n, 0, 0)?,
    };
    let mut out = shape[..2].to_vec();
    for i in 0..n {
        let full = shape[2 + i]
            .saturating_sub(1)
            .checked_mul(strides[i])
            .and_then(|v| v.checked_add(kernel[i]))
            .ok_or_else(|| Error::InvalidModel("MaxUnpool output is too large".into()))?;
        let len = full
            .checked_sub(pads[i].saturating_add(pads[n + i]))
            .ok_or_else(|| {
                Error::InvalidModel(format!(
                    "MaxUnpool pads on spatial dim {i} exceed the unpooled size {full}"
                ))
            })?;
        out.push(len);
    }
    Ok(out)
}

/// The `output_shape` input of MaxUnpool: same rank, each dim at least the default one.
fn unpool_requested_shape(inferred: &[usize], requested: &[i64]) -> Result<Vec<usize>> {
    if requested.len() != inferred.len() {
        bail_model!(
            "MaxUnpool output_shape has {} dims, the input has {}",
            requested.len(),
            inferred.len()
        );
    }
    requested
        .iter()
        .zip(inferred)
        .map(|(&r, &d)| match usize::try_from(r) {
            Ok(r) if r >= d => Ok(r),
            _ => bail_model!(
                "MaxUnpool output_shape {requested:?} is smaller than the unpooled shape {}",
                fmt_shape(inferred)
            ),
        })
        .collect()
}

/// Scatters `x[i]` to flat position `indices[i]` of the default unpooled shape, which
/// sits at the leading corner of the (possibly larger) output.
fn max_unpool<T: Elem>(
    x: &[T],
    indices: &[i64],
    inferred: &[usize],
    out_shape: &[usize],
) -> Result<Vec<T>> {
    let total: usize = inferred.iter().product();
    let mut y = vec![T::default(); out_shape.iter().product()];
    let same = inferred == out_shape;
    let out_strides = crate::shape::strides(out_shape);
    for (&v, &i) in x.iter().zip(indices) {
        let at = usize::try_from(i)
            .ok()
            .filter(|&i| i < total)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "MaxUnpool index {i} is out of range for {} elements",
                    total
                ))
            })?;
        let pos = if same {
            at
        } else {
            let mut rest = at;
            let mut pos = 0;
            for d in (0..inferred.len()).rev() {
                pos += (rest % inferred[d]) * out_strides[d];
                rest /= inferred[d];
            }
            pos
        };
        y[pos] = v;
    }
    Ok(y)
}

/// LRN: `y = x / (bias + alpha / size * sum of x^2 over neighbouring channels)^beta`.
pub struct Lrn {
    pub size: usize,
    pub alpha: f64,
    pub beta: f64,
    pub bias: f64,
}

impl Lrn {
    /// Parses `size`, `alpha`, `beta` and `bias`.
    pub fn parse(attrs: &Attrs) -> Result<Lrn> {
        let size = attrs.req_int("size")?;
        if size < 1 {
            bail_model!("LRN attribute 'size' must be positive, got {size}");
        }
        Ok(Lrn {
            size: size as usize,
            alpha: f64::from(attrs.float_or("alpha", 1e-4)?),
            beta: f64::from(attrs.float_or("beta", 0.75)?),
            bias: f64::from(attrs.float_or("bias", 1.0)?),
        })
    }

    fn apply<T: Float + Elem>(&self, xs: &[T], shape: &[usize]) -> Vec<T> {
        let (n, c) = (shape[0], shape[1]);
        let plane: usize = shape[2..].iter().product();
        let before = (self.size - 1) / 2;
        let after = self.size - 1 - before;
        let (alpha, beta, bias) = (
            T::from_f64(self.alpha / self.size as f64),
            T::from_f64(self.beta),
            T::from_f64(self.bias),
        );
        let mut y = vec![T::zero(); xs.len()];
        let mut sq = vec![T::zero(); plane];
        for b in 0..n {
            let batch = &xs[b * c * plane..(b + 1) * c * plane];
            for ch in 0..c {
                sq.iter_mut().for_each(|s| *s = T::zero());
                for other in ch.saturating_sub(before)..(ch + after + 1).min(c) {
                    for (s, &v) in sq
                        .iter_mut()
                        .zip(&batch[other * plane..(other + 1) * plane])
                    {
                        *s = *s + v * v;
                    }
                }
                let off = (b * c + ch) * plane;
                for ((o, &v), &s) in y[off..off + plane]
                    .iter_mut()
                    .zip(&batch[ch * plane..(ch + 1) * plane])
                    .zip(&sq)
                {
                    *o = v / (bias + alpha * s).powf(beta);
                }
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::Op;
    use crate::op::OpKind;

    fn run(
        op: PoolOp,
        attrs: &[(&str, Attr)],
        inputs: &[&Tensor],
        outputs: usize,
    ) -> Result<Vec<Tensor>> {
        let mut a = Attrs::new();
        for (k, v) in attrs {
            a.set(k, v.clone());
        }
        let op = Op {
            kind: OpKind::Pool(op),
            attrs: a,
            version: 22,
        };
        let ins: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        op.eval(&ins, outputs)
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.slice::<f32>().map(<[f32]>::to_vec).unwrap_or_default()
    }

    #[test]
    fn max_pool_with_pads_and_indices() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 1, 3, 3], (1..=9).map(|v| v as f32).collect())?;
        let out = run(
            PoolOp::MaxPool,
            &[
                ("kernel_shape", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1, 1, 0, 0])),
                ("strides", Attr::Ints(vec![2, 2])),
            ],
            &[&x],
            2,
        )?;
        assert_eq!(out[0].shape(), &[1, 1, 2, 2]);
        assert_eq!(f32s(&out[0]), vec![1.0, 3.0, 7.0, 9.0]);
        assert_eq!(out[1].slice::<i64>()?, &[0, 2, 6, 8]);
        Ok(())
    }

    #[test]
    fn average_pool_ceil_counts_pads_only_inside_explicit_padding() -> Result<()> {
        // in 3, kernel 2, stride 2, ceil: windows [0,1] and [2] (the second one hangs over).
        let x = Tensor::from_vec(vec![1, 1, 3], vec![1.0f32, 3.0, 5.0])?;
        let ceil = ("ceil_mode", Attr::Int(1));
        let k = ("kernel_shape", Attr::Ints(vec![2]));
        let s = ("strides", Attr::Ints(vec![2]));
        let out = run(
            PoolOp::AveragePool,
            &[
                ceil.clone(),
                k.clone(),
                s.clone(),
                ("count_include_pad", Attr::Int(1)),
            ],
            &[&x],
            1,
        )?;
        assert_eq!(f32s(&out[0]), vec![2.0, 5.0]);
        Ok(())
    }

    #[test]
    fn lp_pool_and_global_pools() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![3.0f32, 4.0, 0.0, 0.0])?;
        let lp = run(
            PoolOp::LpPool,
            &[
                ("kernel_shape", Attr::Ints(vec![2, 2])),
                ("p", Attr::Int(2)),
            ],
            &[&x],
            1,
        )?;
        assert_eq!(f32s(&lp[0]), vec![5.0]);
        let avg = run(PoolOp::GlobalAveragePool, &[], &[&x], 1)?;
        assert_eq!(avg[0].shape(), &[1, 1, 1, 1]);
        assert_eq!(f32s(&avg[0]), vec![1.75]);
        let max = run(PoolOp::GlobalMaxPool, &[], &[&x], 1)?;
        assert_eq!(f32s(&max[0]), vec![4.0]);
        Ok(())
    }

    #[test]
    fn max_unpool_rejects_out_of_range_index() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 1, 1, 1], vec![1.0f32])?;
        let i = Tensor::from_vec(vec![1, 1, 1, 1], vec![4i64])?;
        let k = ("kernel_shape", Attr::Ints(vec![2, 2]));
        assert!(run(PoolOp::MaxUnpool, std::slice::from_ref(&k), &[&x, &i], 1).is_err());
        let i = Tensor::from_vec(vec![1, 1, 1, 1], vec![3i64])?;
        let y = run(PoolOp::MaxUnpool, &[k], &[&x, &i], 1)?;
        assert_eq!(f32s(&y[0]), vec![0.0, 0.0, 0.0, 1.0]);
        Ok(())
    }
}
