//! The layout op family: ops that move, copy or generate elements without arithmetic on
//! them. Reshapes (Reshape, Flatten, Squeeze, Unsqueeze), strided copies (Transpose,
//! Expand, Tile, Slice, DepthToSpace, SpaceToDepth), joins and splits (Concat, Split),
//! padding (Pad, CenterCropPad), shape queries (Shape, Size), generators (ConstantOfShape,
//! Range, EyeLike, OneHot) and element rearrangements (Trilu, ReverseSequence, BitCast).
//!
//! Each op reads its parameters through one function generic over [`NodeView`], which
//! `infer` (input facts) and `eval` (input tensors) both implement, so shape logic is
//! written once. Most copies are a strided read of the input ([`View`]).

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::shape::{broadcast, broadcast_strides, fmt_shape, normalize_axes, normalize_axis, strides};
use crate::tensor::{Elem, MAX_ELEMENTS, Tensor, checked_numel};
use crate::{bail_model, bail_unsupported, with_data, with_dtype};
use half::{bf16, f16};

crate::op_family! {
    /// Ops of the layout family.
    pub enum LayoutOp {
        Reshape,
        Flatten,
        Squeeze,
        Unsqueeze,
        Transpose,
        Expand,
        Concat,
        Split,
        Slice,
        Pad,
        Tile,
        Shape,
        Size,
        ConstantOfShape,
        Range,
        EyeLike,
        Trilu,
        DepthToSpace,
        SpaceToDepth,
        CenterCropPad,
        ReverseSequence,
        OneHot,
        BitCast,
    }
}

impl LayoutOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        match self {
            LayoutOp::Reshape => same_dtype(cx, reshape_shape(cx)?),
            LayoutOp::Flatten => same_dtype(cx, flatten_shape(cx)?),
            LayoutOp::Squeeze => same_dtype(cx, squeeze_shape(cx)?),
            LayoutOp::Unsqueeze => same_dtype(cx, unsqueeze_shape(cx)?),
            LayoutOp::Transpose => same_dtype(cx, transpose_perm(cx)?.map(|p| p.out_shape)),
            LayoutOp::Expand => same_dtype(cx, expand_shape(cx)?),
            LayoutOp::Concat => concat_infer(cx),
            LayoutOp::Split => split_infer(cx),
            LayoutOp::Slice => same_dtype(cx, slice_params(cx)?.map(|p| p.iter().map(|a| a.len).collect())),
            LayoutOp::Pad => same_dtype(cx, pad_params(cx)?.map(|p| p.out_shape)),
            LayoutOp::Tile => same_dtype(cx, tile_params(cx)?.map(|(_, shape)| shape)),
            LayoutOp::Shape => {
                let range = shape_range(cx)?;
                Ok(vec![value_type(DType::I64, range.map(|(s, e)| vec![e - s]))])
            }
            LayoutOp::Size => {
                cx.input(0)?;
                Ok(vec![ValueType::new(DType::I64, vec![])])
            }
            LayoutOp::ConstantOfShape => {
                let value = constant_of_shape_value(cx.attrs)?;
                Ok(vec![value_type(value.dtype(), constant_of_shape_shape(cx)?)])
            }
            LayoutOp::Range => {
                let (dtype, count) = range_params(cx)?;
                Ok(vec![value_type(dtype, count.map(|n| vec![n]))])
            }
            LayoutOp::EyeLike => {
                let dtype = eye_like_dtype(cx)?;
                Ok(vec![value_type(dtype, cx.shape(0)?.map(<[usize]>::to_vec))])
            }
            LayoutOp::Trilu => {
                trilu_k(cx)?;
                same_dtype(cx, cx.shape(0)?.map(<[usize]>::to_vec))
            }
            LayoutOp::DepthToSpace => same_dtype(cx, depth_to_space_view(cx)?.map(|(_, shape)| shape)),
            LayoutOp::SpaceToDepth => same_dtype(cx, space_to_depth_view(cx)?.map(|(_, shape)| shape)),
            LayoutOp::CenterCropPad => same_dtype(cx, center_crop_pad_params(cx)?.map(|p| p.out_shape)),
            LayoutOp::ReverseSequence => {
                reverse_sequence_axes(cx)?;
                same_dtype(cx, cx.shape(0)?.map(<[usize]>::to_vec))
            }
            LayoutOp::OneHot => {
                let (dtype, plan) = one_hot_params(cx)?;
                Ok(vec![value_type(dtype, plan.map(|p| p.out_shape))])
            }
            LayoutOp::BitCast => {
                let to = bit_cast_dtype(cx)?;
                Ok(vec![value_type(to, cx.shape(0)?.map(<[usize]>::to_vec))])
            }
        }
    }

    /// The output's value when it follows from input types alone: Shape and Size of an
    /// input with a static shape. The driver can fold these even when the input's value is
    /// unknown, which makes Shape→Gather→Concat→Reshape chains constant.
    pub fn value_from_types(self, cx: &InferCx) -> Result<Option<Tensor>> {
        let Some(shape) = cx.shape(0)? else { return Ok(None) };
        Ok(match self {
            LayoutOp::Shape => {
                shape_range(cx)?.map(|(s, e)| Tensor::from_i64s(shape[s..e].iter().map(|&d| d as i64).collect()))
            }
            LayoutOp::Size => Some(Tensor::scalar(checked_numel(shape)? as i64)),
            _ => None,
        })
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        let out = match self {
            LayoutOp::Reshape | LayoutOp::Flatten | LayoutOp::Squeeze | LayoutOp::Unsqueeze => {
                cx.input(0)?.clone().reshaped(cx.out_shape(0)?.to_vec())?
            }
            LayoutOp::Transpose => {
                let t = cx.input(0)?;
                let perm = need(transpose_perm(cx)?)?;
                View::contiguous(t.shape()).permuted(&perm.perm).read(t, perm.out_shape)?
            }
            LayoutOp::Expand => {
                let t = cx.input(0)?;
                let shape = cx.out_shape(0)?;
                let st = broadcast_strides(t.shape(), shape).into_iter().map(to_isize).collect();
                View { shape: shape.to_vec(), strides: st, base: 0 }.read(t, shape.to_vec())?
            }
            LayoutOp::Concat => concat_eval(cx)?,
            LayoutOp::Split => return split_eval(cx),
            LayoutOp::Slice => {
                let t = cx.input(0)?;
                let axes = need(slice_params(cx)?)?;
                let st = strides(t.shape());
                let mut view = View { shape: vec![], strides: vec![], base: 0 };
                for (a, &s) in axes.iter().zip(&st) {
                    view.base += a.start as isize * to_isize(s);
                    view.shape.push(a.len);
                    view.strides.push(a.step as isize * to_isize(s));
                }
                view.read(t, cx.out_shape(0)?.to_vec())?
            }
            LayoutOp::Pad => {
                let t = cx.input(0)?;
                let p = need(pad_params(cx)?)?;
                let fill = pad_constant(cx, t.dtype())?;
                pad(t, &p, &fill)?
            }
            LayoutOp::Tile => {
                let t = cx.input(0)?;
                let (view, shape) = need(tile_params(cx)?)?;
                view.read(t, shape)?
            }
            LayoutOp::Shape => {
                let t = cx.input(0)?;
                let (s, e) = need(shape_range(cx)?)?;
                let dims = t.shape()[s..e].iter().map(|&d| d as i64).collect();
                Tensor::from_i64s(dims)
            }
            LayoutOp::Size => Tensor::scalar(cx.input(0)?.numel() as i64),
            LayoutOp::ConstantOfShape => {
                let value = constant_of_shape_value(cx.attrs)?;
                let shape = cx.out_shape(0)?.to_vec();
                let n = checked_numel(&shape)?;
                with_dtype!(value.dtype(), T => {
                    let v = value.slice::<T>()?[0];
                    Tensor::from_vec(shape, vec![v; n])?
                })
            }
            LayoutOp::Range => range_eval(cx)?,
            LayoutOp::EyeLike => {
                let k = cx.attrs.int_or("k", 0)?;
                let shape = cx.out_shape(0)?.to_vec();
                let cols = shape[1];
                Tensor::from_fn_f64(cx.out_dtype(0)?, shape, |i| {
                    let (r, c) = ((i / cols) as i64, (i % cols) as i64);
                    if c - r == k { 1.0 } else { 0.0 }
                })?
            }
            LayoutOp::Trilu => trilu_eval(cx)?,
            LayoutOp::DepthToSpace => {
                let t = cx.input(0)?;
                let (view, shape) = need(depth_to_space_view(cx)?)?;
                view.read(t, shape)?
            }
            LayoutOp::SpaceToDepth => {
                let t = cx.input(0)?;
                let (view, shape) = need(space_to_depth_view(cx)?)?;
                view.read(t, shape)?
            }
            LayoutOp::CenterCropPad => {
                let t = cx.input(0)?;
                let p = need(center_crop_pad_params(cx)?)?;
                pad(t, &p, &Tensor::zeros(t.dtype(), vec![])?)?
            }
            LayoutOp::ReverseSequence => reverse_sequence_eval(cx)?,
            LayoutOp::OneHot => one_hot_eval(cx)?,
            LayoutOp::BitCast => bit_cast_eval(cx)?,
        };
        Ok(vec![out])
    }
}

// ---------------------------------------------------------------------------------------
// Reading node parameters in infer and eval alike.

/// One input as both contexts see it: dtype, static shape when known, value when known.
#[derive(Clone, Copy)]
struct In<'t> {
    dtype: DType,
    shape: Option<&'t [usize]>,
    value: Option<&'t Tensor>,
}

/// What `infer` ([`InferCx`]) and `eval` ([`EvalCx`]) share: attributes, opset and inputs.
trait NodeView {
    fn attrs(&self) -> &Attrs;
    fn version(&self) -> u32;
    /// Input `i`, or `None` when omitted.
    fn get(&self, i: usize) -> Option<In<'_>>;

    /// Required input `i` of `op`, named `name` in errors.
    fn req(&self, op: &str, i: usize, name: &str) -> Result<In<'_>> {
        self.get(i).ok_or_else(|| Error::InvalidModel(format!("{op} input '{name}' (input {i}) is missing")))
    }

    /// An integer input (a shape, axes, pads...): the outer `None` when omitted, the inner
    /// one when its value is unknown. Checks its dtype (int64 or int32) and rank (at most 1).
    fn ints(&self, op: &str, i: usize, name: &str) -> Result<Option<Option<Vec<i64>>>> {
        let Some(x) = self.get(i) else { return Ok(None) };
        if !matches!(x.dtype, DType::I64 | DType::I32) {
            bail_model!("{op} input '{name}' must be int64 or int32, got {}", x.dtype);
        }
        if let Some(s) = x.shape
            && s.len() > 1
        {
            bail_model!("{op} input '{name}' must be 1-D, has shape {}", fmt_shape(s));
        }
        Ok(Some(x.value.map(Tensor::to_i64_vec)))
    }

    /// A required integer input; `None` when its value is unknown.
    fn req_ints(&self, op: &str, i: usize, name: &str) -> Result<Option<Vec<i64>>> {
        self.ints(op, i, name)?
            .ok_or_else(|| Error::InvalidModel(format!("{op} input '{name}' (input {i}) is missing")))
    }

    /// Integers given as attribute `name` before opset `since` and as input `i` from it on:
    /// the outer `None` when absent, the inner one when the input's value is unknown.
    fn ints_attr_or_input(&self, op: &str, since: u32, name: &str, i: usize) -> Result<Option<Option<Vec<i64>>>> {
        if self.version() < since {
            Ok(self.attrs().ints(name)?.map(|v| Some(v.to_vec())))
        } else {
            self.ints(op, i, name)
        }
    }
}

impl NodeView for InferCx<'_> {
    fn attrs(&self) -> &Attrs {
        self.attrs
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn get(&self, i: usize) -> Option<In<'_>> {
        self.opt(i).map(|f| In { dtype: f.ty.dtype, shape: f.ty.shape.as_deref(), value: f.value })
    }
}

impl NodeView for EvalCx<'_> {
    fn attrs(&self) -> &Attrs {
        self.attrs
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn get(&self, i: usize) -> Option<In<'_>> {
        self.opt(i).map(|t| In { dtype: t.dtype(), shape: Some(t.shape()), value: Some(t) })
    }
}

fn value_type(dtype: DType, shape: Option<Vec<usize>>) -> ValueType {
    ValueType { dtype, shape }
}

/// One output with the dtype of input 0.
fn same_dtype(cx: &InferCx, shape: Option<Vec<usize>>) -> Result<Vec<ValueType>> {
    Ok(vec![value_type(cx.dtype(0)?, shape)])
}

/// A parameter that inference derives from input values, which are all known at evaluation.
fn need<T>(x: Option<T>) -> Result<T> {
    x.ok_or_else(|| Error::Internal("a layout op's parameters are unknown at evaluation".into()))
}

fn to_isize(x: usize) -> isize {
    x as isize
}

/// `v` as a dimension: negative or above [`MAX_ELEMENTS`] is an error naming `what`.
fn to_dim(v: i128, what: &str) -> Result<usize> {
    if v < 0 || v > MAX_ELEMENTS as i128 {
        bail_model!("{what} would be {v}");
    }
    Ok(v as usize)
}

/// A possibly negative axis in `[-rank, rank]` (one past the end allowed), as `[0, rank]`.
fn normalize_axis_inclusive(axis: i64, rank: usize, what: &str) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis > r {
        bail_model!("{what} {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

// ---------------------------------------------------------------------------------------
// Kernels.

/// A strided read of a tensor: the element at multi-index `idx` of `shape` is
/// `src[base + Σ idx[d]·strides[d]]` (strides may be zero or negative).
#[derive(Clone, Debug)]
struct View {
    shape: Vec<usize>,
    strides: Vec<isize>,
    base: isize,
}

impl View {
    /// The identity view of a contiguous tensor of `shape`.
    fn contiguous(shape: &[usize]) -> View {
        View { shape: shape.to_vec(), strides: strides(shape).into_iter().map(to_isize).collect(), base: 0 }
    }

    /// The view with its axes permuted: axis `i` of the result is axis `perm[i]`.
    fn permuted(&self, perm: &[usize]) -> View {
        View {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            base: self.base,
        }
    }

    /// Materializes the view of `t` as a tensor of shape `out_shape` (same element count).
    fn read(&self, t: &Tensor, out_shape: Vec<usize>) -> Result<Tensor> {
        with_data!(t.data(), v => Tensor::from_vec(out_shape, gather(v, self)?))
    }
}

/// The elements of `view` over `src`, in row-major order of the view.
fn gather<T: Copy>(src: &[T], view: &View) -> Result<Vec<T>> {
    let n = checked_numel(&view.shape)?;
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    // Drop unit axes and merge axes that are contiguous with each other.
    let mut dims: Vec<(usize, isize)> = Vec::with_capacity(view.shape.len());
    for (&d, &s) in view.shape.iter().zip(&view.strides) {
        if d == 1 {
            continue;
        }
        match dims.last_mut() {
            Some(last) if last.1 == s * d as isize => *last = (last.0 * d, s),
            _ => dims.push((d, s)),
        }
    }
    let (mut lo, mut hi) = (view.base, view.base);
    for &(d, s) in &dims {
        let extent = (d as isize - 1) * s;
        if extent < 0 { lo += extent } else { hi += extent }
    }
    if lo < 0 || hi as usize >= src.len() {
        return Err(Error::Internal(format!("strided view {view:?} reads outside a buffer of {} elements", src.len())));
    }
    let (inner_n, inner_s) = dims.pop().unwrap_or((1, 1));
    let mut idx = vec![0usize; dims.len()];
    let mut off = view.base;
    loop {
        let o = off as usize;
        match inner_s {
            1 => out.extend_from_slice(&src[o..o + inner_n]),
            0 => out.resize(out.len() + inner_n, src[o]),
            s => out.extend((0..inner_n).map(|i| src[(off + i as isize * s) as usize])),
        }
        let mut d = dims.len();
        loop {
            if d == 0 {
                return Ok(out);
            }
            d -= 1;
            idx[d] += 1;
            off += dims[d].1;
            if idx[d] < dims[d].0 {
                break;
            }
            off -= dims[d].1 * dims[d].0 as isize;
            idx[d] = 0;
        }
    }
}

/// How Pad fills positions outside the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

impl PadMode {
    fn parse(s: &str) -> Result<PadMode> {
        Ok(match s {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            other => bail_unsupported!("Pad mode '{other}'"),
        })
    }
}

/// Per-axis pads (negative ones crop) over the full rank, and the resulting shape.
#[derive(Clone, Debug)]
struct PadParams {
    begins: Vec<i64>,
    ends: Vec<i64>,
    mode: PadMode,
    out_shape: Vec<usize>,
}

/// The padded size of an axis of size `n`.
fn padded_dim(n: usize, begin: i64, end: i64, axis: usize) -> Result<usize> {
    let m = n as i128 + i128::from(begin.min(0)) + i128::from(end.min(0));
    if m < 0 {
        bail_model!("pads {begin},{end} crop more than the {n} elements of axis {axis}");
    }
    to_dim(m + i128::from(begin.max(0)) + i128::from(end.max(0)), &format!("the padded size of axis {axis}"))
}

/// For each output position of one axis, the input index it reads (`None`: the fill value).
fn pad_axis_map(n: usize, begin: i64, end: i64, mode: PadMode, axis: usize) -> Result<Vec<Option<usize>>> {
    let out = padded_dim(n, begin, end, axis)?;
    let lo = i128::from(begin.min(0)).unsigned_abs() as usize;
    let m = (n as i128 + i128::from(begin.min(0)) + i128::from(end.min(0))) as usize;
    let before = begin.max(0) as usize;
    if m == 0 && out > 0 && mode != PadMode::Constant {
        bail_model!("Pad cannot pad the empty axis {axis} in mode {mode:?}");
    }
    let (m_i, before_i) = (m as i64, before as i64);
    Ok((0..out)
        .map(|i| {
            let k = i as i64 - before_i;
            let j = if (0..m_i).contains(&k) {
                k
            } else {
                match mode {
                    PadMode::Constant => return None,
                    PadMode::Edge => k.clamp(0, m_i - 1),
                    PadMode::Wrap => k.rem_euclid(m_i),
                    PadMode::Reflect if m_i == 1 => 0,
                    PadMode::Reflect => {
                        let period = 2 * (m_i - 1);
                        let r = k.rem_euclid(period);
                        if r >= m_i { period - r } else { r }
                    }
                }
            };
            Some(lo + j as usize)
        })
        .collect())
}

/// Pads (or crops) `t` per `p`, filling with the one-element tensor `fill` in constant mode.
fn pad(t: &Tensor, p: &PadParams, fill: &Tensor) -> Result<Tensor> {
    let in_shape = t.shape();
    checked_numel(&p.out_shape)?;
    let maps = (0..in_shape.len())
        .map(|d| pad_axis_map(in_shape[d], p.begins[d], p.ends[d], p.mode, d))
        .collect::<Result<Vec<_>>>()?;
    with_dtype!(t.dtype(), T => {
        let fill = *fill.slice::<T>()?.first().ok_or_else(|| Error::InvalidModel("the pad value is empty".into()))?;
        Tensor::from_vec(p.out_shape.clone(), pad_gather(t.slice::<T>()?, in_shape, &maps, fill)?)
    })
}

fn pad_gather<T: Copy>(src: &[T], in_shape: &[usize], maps: &[Vec<Option<usize>>], fill: T) -> Result<Vec<T>> {
    let out_shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    let n = checked_numel(&out_shape)?;
    let mut out = Vec::with_capacity(n);
    let Some((inner, outer_maps)) = maps.split_last() else {
        out.extend_from_slice(src);
        return Ok(out);
    };
    if n == 0 {
        return Ok(out);
    }
    let st = strides(in_shape);
    // The inner axis is often fill, a contiguous run of the input, then fill.
    let first = inner.iter().position(Option::is_some);
    let run = first.map_or(0, |f| inner[f..].iter().take_while(|x| x.is_some()).count());
    let contiguous = first.is_none_or(|f| {
        inner[f..f + run].windows(2).all(|w| matches!(w, [Some(a), Some(b)] if *b == *a + 1))
            && inner[f + run..].iter().all(Option::is_none)
    });
    let mut idx = vec![0usize; outer_maps.len()];
    loop {
        let mut base = Some(0usize);
        for (d, map) in outer_maps.iter().enumerate() {
            base = base.and_then(|b| map[idx[d]].map(|i| b + i * st[d]));
        }
        match base {
            None => out.resize(out.len() + inner.len(), fill),
            Some(b) if contiguous => {
                let f = first.unwrap_or(0);
                out.resize(out.len() + f, fill);
                if let Some(Some(i0)) = inner.get(f) {
                    let row = src
                        .get(b + i0..b + i0 + run)
                        .ok_or_else(|| Error::Internal("Pad reads outside its input".into()))?;
                    out.extend_from_slice(row);
                }
                out.resize(out.len() + inner.len() - f - run, fill);
            }
            Some(b) => out.extend(inner.iter().map(|m| m.and_then(|i| src.get(b + i).copied()).unwrap_or(fill))),
        }
        let mut d = idx.len();
        loop {
            if d == 0 {
                return Ok(out);
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reshape, Flatten, Squeeze, Unsqueeze: the same data under another shape.

fn reshape_shape(v: &impl NodeView) -> Result<Option<Vec<usize>>> {
    let data = v.req("Reshape", 0, "data")?;
    let Some(target) = v.req_ints("Reshape", 1, "shape")? else { return Ok(None) };
    let allowzero = v.attrs().int_or("allowzero", 0)? != 0;
    if allowzero && target.contains(&0) && target.contains(&-1) {
        bail_model!("shape {target:?} has both 0 and -1, which allowzero=1 forbids");
    }
    if target.iter().filter(|&&d| d == -1).count() > 1 {
        bail_model!("shape {target:?} has more than one -1");
    }
    let mut out = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 => {
                inferred = Some(i);
                out.push(1);
            }
            0 if !allowzero => {
                let Some(s) = data.shape else { return Ok(None) };
                let Some(&copied) = s.get(i) else {
                    bail_model!(
                        "shape {target:?} copies dim {i} (a 0) but the input {} has rank {}",
                        fmt_shape(s),
                        s.len()
                    );
                };
                out.push(copied);
            }
            d if d < 0 => bail_model!("shape {target:?} has the invalid dim {d}"),
            d => out.push(to_dim(i128::from(d), "a Reshape dim")?),
        }
    }
    let Some(in_shape) = data.shape else {
        return Ok(if inferred.is_none() { Some(out) } else { None });
    };
    let n_in = checked_numel(in_shape)?;
    let n_known = checked_numel(&out)?;
    if let Some(i) = inferred {
        if n_known == 0 || n_in % n_known != 0 {
            bail_model!(
                "cannot reshape {} ({n_in} elements) to {target:?}: the -1 dim cannot be inferred",
                fmt_shape(in_shape)
            );
        }
        out[i] = n_in / n_known;
    } else if n_known != n_in {
        bail_model!(
            "cannot reshape {} ({n_in} elements) to {} ({n_known} elements)",
            fmt_shape(in_shape),
            fmt_shape(&out)
        );
    }
    Ok(Some(out))
}

fn flatten_shape(v: &impl NodeView) -> Result<Option<Vec<usize>>> {
    let Some(s) = v.req("Flatten", 0, "input")?.shape else { return Ok(None) };
    let axis = normalize_axis_inclusive(v.attrs().int_or("axis", 1)?, s.len(), "axis")?;
    Ok(Some(vec![checked_numel(&s[..axis])?, checked_numel(&s[axis..])?]))
}

fn squeeze_shape(v: &impl NodeView) -> Result<Option<Vec<usize>>> {
    let data = v.req("Squeeze", 0, "data")?;
    let axes = v.ints_attr_or_input("Squeeze", 13, "axes", 1)?;
    let Some(s) = data.shape else { return Ok(None) };
    // No axes (or an empty list, as onnxruntime reads it) squeezes every unit axis.
    let axes = match axes {
        None => vec![],
        Some(None) => return Ok(None),
        Some(Some(a)) => a,
    };
    if axes.is_empty() {
        return Ok(Some(s.iter().copied().filter(|&d| d != 1).collect()));
    }
    let axes = normalize_axes(&axes, s.len())?;
    for &a in &axes {
        if s[a] != 1 {
            bail_model!("cannot squeeze axis {a} of size {} (shape {})", s[a], fmt_shape(s));
        }
    }
    Ok(Some(s.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()))
}

fn unsqueeze_shape(v: &impl NodeView) -> Result<Option<Vec<usize>>> {
    let data = v.req("Unsqueeze", 0, "data")?;
    let axes = v
        .ints_attr_or_input("Unsqueeze", 13, "axes", 1)?
        .ok_or_else(|| Error::InvalidModel("'axes' is missing".into()))?;
    let (Some(s), Some(axes)) = (data.shape, axes) else { return Ok(None) };
    let rank = s.len() + axes.len();
    let axes = normalize_axes(&axes, rank)?;
    let mut rest = s.iter();
    Ok(Some((0..rank).map(|i| if axes.contains(&i) { 1 } else { rest.next().copied().unwrap_or(1) }).collect()))
}

// ---------------------------------------------------------------------------------------
// Transpose, Expand, Tile, DepthToSpace, SpaceToDepth: strided reads.

struct Perm {
    perm: Vec<usize>,
    out_shape: Vec<usize>,
}

fn transpose_perm(v: &impl NodeView) -> Result<Option<Perm>> {
    let Some(s) = v.req("Transpose", 0, "data")?.shape else { return Ok(None) };
    let perm: Vec<usize> = match v.attrs().ints("perm")? {
        None => (0..s.len()).rev().collect(),
        Some(p) => {
            let ok = p.len() == s.len() && (0..s.len()).all(|i| p.contains(&(i as i64)));
            if !ok {
                bail_model!("perm {p:?} is not a permutation of the {} axes of {}", s.len(), fmt_shape(s));
            }
            p.iter().map(|&a| a as usize).collect()
        }
    };
    let out_shape = perm.iter().map(|&p| s[p]).collect();
    Ok(Some(Perm { perm, out_shape }))
}

fn expand_shape(v: &impl NodeView) -> Result<Option<Vec<usize>>> {
    let data = v.req("Expand", 0, "input")?;
    let Some(target) = v.req_ints("Expand", 1, "shape")? else { return Ok(None) };
    let target: Vec<usize> =
        target.iter().map(|&d| to_dim(i128::from(d), "an Expand shape dim")).collect::<Result<_>>()?;
    let Some(s) = data.shape else { return Ok(None) };
    broadcast(s, &target).map(Some).map_err(|_| {
        Error::InvalidModel(format!("input shape {} cannot be expanded to {}", fmt_shape(s), fmt_shape(&target)))
    })
}

/// Tile as a strided read of shape `[r0, d0, r1, d1, ...]` (stride 0 on the repeats), and
/// the output shape `[r0·d0, r1·d1, ...]`.
fn tile_params(v: &impl NodeView) -> Result<Option<(View, Vec<usize>)>> {
    let data = v.req("Tile", 0, "input")?;
    let Some(repeats) = v.req_ints("Tile", 1, "repeats")? else { return Ok(None) };
    let Some(s) = data.shape else { return Ok(None) };
    if repeats.len() != s.len() {
        bail_model!("repeats has {} values but the input {} has rank {}", repeats.len(), fmt_shape(s), s.len());
    }
    let st = strides(s);
    let mut view = View { shape: vec![], strides: vec![], base: 0 };
    let mut out = vec![];
    for (d, &r) in repeats.iter().enumerate() {
        let r = to_dim(i128::from(r), "a Tile repeat")?;
        view.shape.extend([r, s[d]]);
        view.strides.extend([0, to_isize(st[d])]);
        out.push(to_dim(r as i128 * s[d] as i128, "a tiled dim")?);
    }
    Ok(Some((view, out)))
}

/// The blocksize of DepthToSpace/SpaceToDepth and the NCHW input shape.
fn block_params(v: &impl NodeView, op: &str) -> Result<Option<(usize, [usize; 4])>> {
    let b = v.attrs().req_int("blocksize")?;
    if b <= 0 {
        bail_model!("blocksize {b} must be positive");
    }
    let Some(s) = v.req(op, 0, "input")?.shape else { return Ok(None) };
    let &[n, c, h, w] = s else { bail_model!("the input must have rank 4, has shape {}", fmt_shape(s)) };
    Ok(Some((to_dim(i128::from(b), "blocksize")?, [n, c, h, w])))
}

fn depth_to_space_view(v: &impl NodeView) -> Result<Option<(View, Vec<usize>)>> {
    let Some((b, [n, c, h, w])) = block_params(v, "DepthToSpace")? else { return Ok(None) };
    let Some(bb) = b.checked_mul(b).filter(|&bb| c % bb == 0) else {
        bail_model!("channels {c} are not divisible by blocksize² ({b}²)");
    };
    let cb = c / bb;
    let hb = to_dim(h as i128 * b as i128, "the output height")?;
    let wb = to_dim(w as i128 * b as i128, "the output width")?;
    let view = match v.attrs().string_or("mode", "DCR")? {
        "DCR" => View::contiguous(&[n, b, b, cb, h, w]).permuted(&[0, 3, 4, 1, 5, 2]),
        "CRD" => View::contiguous(&[n, cb, b, b, h, w]).permuted(&[0, 1, 4, 2, 5, 3]),
        other => bail_model!("mode '{other}' is neither DCR nor CRD"),
    };
    Ok(Some((view, vec![n, cb, hb, wb])))
}

fn space_to_depth_view(v: &impl NodeView) -> Result<Option<(View, Vec<usize>)>> {
    let Some((b, [n, c, h, w])) = block_params(v, "SpaceToDepth")? else { return Ok(None) };
    if b > h.max(w).max(1) || h % b != 0 || w % b != 0 {
        bail_model!("height {h} and width {w} must be divisible by blocksize {b}");
    }
    let view = View::contiguous(&[n, c, h / b, b, w / b, b]).permuted(&[0, 3, 5, 1, 2, 4]);
    let cbb = to_dim(c as i128 * b as i128 * b as i128, "the output channels")?;
    Ok(Some((view, vec![n, cbb, h / b, w / b])))
}

// ---------------------------------------------------------------------------------------
// Concat and Split.

fn concat_infer(cx: &InferCx) -> Result<Vec<ValueType>> {
    if cx.num_inputs() == 0 {
        bail_model!("Concat needs at least one input");
    }
    let axis = cx.attrs.req_int("axis")?;
    let dtype = cx.dtype(0)?;
    let mut shapes = Vec::with_capacity(cx.num_inputs());
    for i in 0..cx.num_inputs() {
        let x = cx.req("Concat", i, "inputs")?;
        if x.dtype != dtype {
            bail_model!("input {i} is {} but input 0 is {dtype}", x.dtype);
        }
        shapes.push(x.shape);
    }
    let Some(shapes) = shapes.into_iter().collect::<Option<Vec<_>>>() else {
        return Ok(vec![ValueType::unknown(dtype)]);
    };
    let first = shapes[0];
    if first.is_empty() {
        bail_model!("cannot concatenate scalars");
    }
    let axis = normalize_axis(axis, first.len())?;
    let mut out = first.to_vec();
    for (i, s) in shapes.iter().enumerate().skip(1) {
        let same_dims = s.len() == first.len() && (0..s.len()).all(|d| d == axis || s[d] == first[d]);
        if !same_dims {
            bail_model!(
                "input {i} has shape {} but input 0 has {}: all dims but axis {axis} must match",
                fmt_shape(s),
                fmt_shape(first)
            );
        }
        out[axis] += s[axis];
    }
    Ok(vec![ValueType::new(dtype, out)])
}

fn concat_eval(cx: &EvalCx) -> Result<Tensor> {
    let out_shape = cx.out_shape(0)?;
    let axis = normalize_axis(cx.attrs.req_int("axis")?, out_shape.len())?;
    let outer = checked_numel(&out_shape[..axis])?;
    let inputs = (0..cx.inputs.len()).map(|i| cx.input(i)).collect::<Result<Vec<_>>>()?;
    with_dtype!(cx.out_dtype(0)?, T => {
        let parts = inputs
            .iter()
            .map(|t| Ok((t.slice::<T>()?, t.shape()[axis..].iter().product::<usize>())))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(checked_numel(out_shape)?);
        for o in 0..outer {
            for (src, chunk) in &parts {
                out.extend_from_slice(&src[o * chunk..(o + 1) * chunk]);
            }
        }
        Tensor::from_vec(out_shape.to_vec(), out)
    })
}

/// Split's axis and the size of each output along it.
fn split_sizes(v: &impl NodeView, outputs: usize) -> Result<Option<(usize, Vec<usize>)>> {
    let data = v.req("Split", 0, "input")?;
    let split = v.ints_attr_or_input("Split", 13, "split", 1)?;
    let num_outputs = if v.version() >= 18 { v.attrs().int("num_outputs")? } else { None };
    let Some(s) = data.shape else { return Ok(None) };
    if s.is_empty() {
        bail_model!("cannot split a scalar");
    }
    let axis = normalize_axis(v.attrs().int_or("axis", 0)?, s.len())?;
    let dim = s[axis];
    let sizes = match (split, num_outputs) {
        (Some(_), Some(_)) => bail_model!("both 'split' and 'num_outputs' are given"),
        (Some(None), _) => return Ok(None),
        (Some(Some(split)), None) => {
            if split.len() != outputs {
                bail_model!("'split' has {} sizes but the node has {outputs} outputs", split.len());
            }
            let sizes = split.iter().map(|&d| to_dim(i128::from(d), "a split size")).collect::<Result<Vec<_>>>()?;
            if sizes.iter().sum::<usize>() != dim {
                bail_model!("split sizes {split:?} do not add up to dim {dim} of axis {axis}");
            }
            sizes
        }
        (None, n) => {
            if n.is_some_and(|n| n != outputs as i64) {
                bail_model!("num_outputs is {} but the node has {outputs} outputs", n.unwrap_or(0));
            }
            if outputs == 0 {
                bail_model!("no outputs");
            }
            let chunk = dim.div_ceil(outputs);
            let rest = dim as i128 - (chunk * (outputs - 1)) as i128;
            if rest < 0 {
                bail_model!("dim {dim} of axis {axis} cannot be split into {outputs} parts of {chunk}");
            }
            let mut sizes = vec![chunk; outputs];
            sizes[outputs - 1] = rest as usize;
            sizes
        }
    };
    Ok(Some((axis, sizes)))
}

fn split_infer(cx: &InferCx) -> Result<Vec<ValueType>> {
    let dtype = cx.dtype(0)?;
    Ok(match (split_sizes(cx, cx.num_outputs)?, cx.shape(0)?) {
        (Some((axis, sizes)), Some(s)) => sizes
            .into_iter()
            .map(|n| {
                let mut shape = s.to_vec();
                shape[axis] = n;
                ValueType::new(dtype, shape)
            })
            .collect(),
        _ => vec![ValueType::unknown(dtype); cx.num_outputs],
    })
}

fn split_eval(cx: &EvalCx) -> Result<Vec<Tensor>> {
    let t = cx.input(0)?;
    let (axis, sizes) = need(split_sizes(cx, cx.outputs.len())?)?;
    let s = t.shape();
    let outer = checked_numel(&s[..axis])?;
    let inner = checked_numel(&s[axis + 1..])?;
    with_dtype!(t.dtype(), T => {
        let src = t.slice::<T>()?;
        let row = s[axis] * inner;
        let mut start = 0;
        let mut outs = Vec::with_capacity(sizes.len());
        for (k, &n) in sizes.iter().enumerate() {
            let chunk = n * inner;
            let mut out = Vec::with_capacity(outer * chunk);
            for o in 0..outer {
                out.extend_from_slice(&src[o * row + start..o * row + start + chunk]);
            }
            start += chunk;
            outs.push(Tensor::from_vec(cx.out_shape(k)?.to_vec(), out)?);
        }
        Ok(outs)
    })
}

// ---------------------------------------------------------------------------------------
// Slice.

/// What Slice reads along one axis: `len` elements from `start`, `step` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceAxis {
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

/// One [`SliceAxis`] per input axis (whole axes where not sliced).
fn slice_params(v: &impl NodeView) -> Result<Option<Vec<SliceAxis>>> {
    let data = v.req("Slice", 0, "data")?;
    let (starts, ends, axes, steps) = if v.version() < 10 {
        let req = |name: &str| {
            v.attrs()
                .ints(name)?
                .map(|x| Some(x.to_vec()))
                .ok_or_else(|| Error::InvalidModel(format!("attribute '{name}' is missing")))
        };
        (req("starts")?, req("ends")?, v.attrs().ints("axes")?.map(|x| Some(x.to_vec())), None)
    } else {
        (
            v.req_ints("Slice", 1, "starts")?,
            v.req_ints("Slice", 2, "ends")?,
            v.ints("Slice", 3, "axes")?,
            v.ints("Slice", 4, "steps")?,
        )
    };
    let (Some(s), Some(starts), Some(ends)) = (data.shape, starts, ends) else { return Ok(None) };
    let (Some(axes), Some(steps)) =
        (axes.map_or(Some(None), |a| a.map(Some)), steps.map_or(Some(None), |a| a.map(Some)))
    else {
        return Ok(None);
    };
    slice_plan(s, &starts, &ends, axes.as_deref(), steps.as_deref()).map(Some)
}

/// What Slice reads along each axis of an input of shape `s`, given the values of its
/// `starts`, `ends` and optional `axes` and `steps`.
pub fn slice_plan(s: &[usize], starts: &[i64], ends: &[i64], axes: Option<&[i64]>, steps: Option<&[i64]>) -> Result<Vec<SliceAxis>> {
    let n = starts.len();
    if ends.len() != n || axes.is_some_and(|a| a.len() != n) || steps.is_some_and(|a| a.len() != n) {
        bail_model!(
            "starts, ends, axes and steps must have the same length: {starts:?}, {ends:?}, {axes:?}, {steps:?}"
        );
    }
    let axes = match axes {
        Some(a) => normalize_axes(a, s.len())?,
        None => {
            if n > s.len() {
                bail_model!("{n} starts for an input of rank {}", s.len());
            }
            (0..n).collect()
        }
    };
    let mut out: Vec<SliceAxis> = s.iter().map(|&d| SliceAxis { start: 0, step: 1, len: d }).collect();
    for (k, &axis) in axes.iter().enumerate() {
        let step = steps.map_or(1, |st| st[k]);
        if step == 0 {
            bail_model!("step 0 on axis {axis}");
        }
        out[axis] = slice_axis(s[axis], starts[k], ends[k], step);
    }
    Ok(out)
}

/// ONNX Slice clamping on one axis of size `dim` (negative starts/ends count from the end).
fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> SliceAxis {
    let d = dim as i128;
    let wrap = |x: i64| if x < 0 { i128::from(x) + d } else { i128::from(x) };
    let (mut s, mut e, st) = (wrap(start), wrap(end), i128::from(step));
    let len = if st > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        if e > s { (e - s - 1) / st + 1 } else { 0 }
    } else {
        s = s.max(0).min(d - 1);
        e = e.max(-1).min(d - 1);
        if s > e { (s - e - 1) / -st + 1 } else { 0 }
    };
    // With at most one element the step is never taken: keep it 1 so strides stay small.
    let step = if len <= 1 { 1 } else { step };
    SliceAxis { start: if len == 0 { 0 } else { s as i64 }, step, len: len as usize }
}

// ---------------------------------------------------------------------------------------
// Pad and CenterCropPad.

fn pad_params(v: &impl NodeView) -> Result<Option<PadParams>> {
    let data = v.req("Pad", 0, "data")?;
    let mode = PadMode::parse(v.attrs().string_or("mode", "constant")?)?;
    let (pads, axes) = if v.version() < 11 {
        let pads = v.attrs().ints("pads")?.ok_or_else(|| Error::InvalidModel("attribute 'pads' is missing".into()))?;
        (Some(pads.to_vec()), None)
    } else {
        let axes = if v.version() >= 18 { v.ints("Pad", 3, "axes")? } else { None };
        if let Some(c) = v.get(2)
            && c.dtype != data.dtype
        {
            bail_model!("constant_value is {} but data is {}", c.dtype, data.dtype);
        }
        (v.req_ints("Pad", 1, "pads")?, axes)
    };
    let Some(s) = data.shape else { return Ok(None) };
    let Some(pads) = pads else { return Ok(None) };
    let axes: Vec<usize> = match axes {
        None => (0..s.len()).collect(),
        Some(None) => return Ok(None),
        Some(Some(a)) => normalize_axes(&a, s.len())?,
    };
    if pads.len() != 2 * axes.len() {
        bail_model!("pads {pads:?} must have 2 values per padded axis ({} axes)", axes.len());
    }
    let (mut begins, mut ends) = (vec![0; s.len()], vec![0; s.len()]);
    for (k, &a) in axes.iter().enumerate() {
        begins[a] = pads[k];
        ends[a] = pads[axes.len() + k];
    }
    let out_shape = (0..s.len()).map(|d| padded_dim(s[d], begins[d], ends[d], d)).collect::<Result<_>>()?;
    if mode != PadMode::Constant {
        for (d, &n) in s.iter().enumerate() {
            if n == 0 && (begins[d] > 0 || ends[d] > 0) {
                bail_model!("cannot pad the empty axis {d} in mode {mode:?}");
            }
        }
    }
    Ok(Some(PadParams { begins, ends, mode, out_shape }))
}

/// Pad's fill value as a one-element tensor of `dtype`.
fn pad_constant(cx: &EvalCx, dtype: DType) -> Result<Tensor> {
    if cx.version < 11 {
        return Ok(Tensor::scalar(cx.attrs.float_or("value", 0.0)?).cast(dtype));
    }
    match cx.opt(2) {
        Some(t) if t.numel() == 1 => Ok(t.clone()),
        Some(t) if t.numel() > 1 => {
            bail_model!("Pad constant_value must be a single value, has shape {}", fmt_shape(t.shape()))
        }
        _ => Tensor::zeros(dtype, vec![]),
    }
}

/// CenterCropPad as constant-zero pads (negative ones crop), centered with the extra
/// element on the end side.
fn center_crop_pad_params(v: &impl NodeView) -> Result<Option<PadParams>> {
    let data = v.req("CenterCropPad", 0, "input_data")?;
    let Some(target) = v.req_ints("CenterCropPad", 1, "shape")? else { return Ok(None) };
    let Some(s) = data.shape else { return Ok(None) };
    let axes = match v.attrs().ints("axes")? {
        Some(a) => normalize_axes(a, s.len())?,
        None => (0..s.len()).collect(),
    };
    if target.len() != axes.len() {
        bail_model!("shape {target:?} has {} values for {} axes", target.len(), axes.len());
    }
    let (mut begins, mut ends) = (vec![0; s.len()], vec![0; s.len()]);
    let mut out_shape = s.to_vec();
    for (&a, &t) in axes.iter().zip(&target) {
        let t = to_dim(i128::from(t), "a CenterCropPad target dim")?;
        // Truncating division puts the odd element at the end for both pads and crops.
        let diff = t as i64 - s[a] as i64;
        (begins[a], ends[a]) = (diff / 2, diff - diff / 2);
        out_shape[a] = t;
    }
    Ok(Some(PadParams { begins, ends, mode: PadMode::Constant, out_shape }))
}

// ---------------------------------------------------------------------------------------
// Shape, ConstantOfShape, Range, EyeLike.

/// The clamped `[start, end)` range of input dims that Shape returns.
fn shape_range(v: &impl NodeView) -> Result<Option<(usize, usize)>> {
    let Some(s) = v.req("Shape", 0, "data")?.shape else { return Ok(None) };
    let r = s.len() as i64;
    let (start, end) =
        if v.version() >= 15 { (v.attrs().int_or("start", 0)?, v.attrs().int_or("end", r)?) } else { (0, r) };
    let clamp = |x: i64| (if x < 0 { x.saturating_add(r) } else { x }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end));
    Ok(Some((s, e.max(s))))
}

/// ConstantOfShape's fill value (f32 zero by default).
fn constant_of_shape_value(attrs: &Attrs) -> Result<Tensor> {
    match attrs.tensor("value")? {
        None => Ok(Tensor::scalar(0f32)),
        Some(t) if t.numel() == 1 => Ok(t.clone()),
        Some(t) => bail_model!("ConstantOfShape 'value' must have one element, has shape {}", fmt_shape(t.shape())),
    }
}

fn constant_of_shape_shape(v: &impl NodeView) -> Result<Option<Vec<usize>>> {
    let Some(dims) = v.req_ints("ConstantOfShape", 0, "input")? else { return Ok(None) };
    let shape = dims.iter().map(|&d| to_dim(i128::from(d), "a ConstantOfShape dim")).collect::<Result<Vec<_>>>()?;
    checked_numel(&shape)?;
    Ok(Some(shape))
}

/// Range's dtype and, when start, limit and delta are known, its length.
fn range_params(v: &impl NodeView) -> Result<(DType, Option<usize>)> {
    let names = ["start", "limit", "delta"];
    let xs = (0..3).map(|i| v.req("Range", i, names[i])).collect::<Result<Vec<_>>>()?;
    let dtype = xs[0].dtype;
    for (x, name) in xs.iter().zip(names) {
        if x.dtype != dtype {
            bail_model!("'{name}' is {} but 'start' is {dtype}", x.dtype);
        }
        if x.dtype == DType::Bool || matches!(x.dtype, DType::U8 | DType::U16 | DType::U32 | DType::U64 | DType::I8) {
            bail_model!("Range does not accept element type {}", x.dtype);
        }
        if let Some(s) = x.shape
            && checked_numel(s)? != 1
        {
            bail_model!("'{name}' must be a scalar, has shape {}", fmt_shape(s));
        }
    }
    let (Some(a), Some(b), Some(c)) = (xs[0].value, xs[1].value, xs[2].value) else { return Ok((dtype, None)) };
    let count = if dtype.is_float() {
        let (start, limit, delta) = (a.scalar_f64()?, b.scalar_f64()?, c.scalar_f64()?);
        if delta == 0.0 || !(start.is_finite() && limit.is_finite() && delta.is_finite()) {
            bail_model!("cannot make a range from {start} to {limit} by {delta}");
        }
        let n = ((limit - start) / delta).ceil().max(0.0);
        if n > MAX_ELEMENTS as f64 {
            bail_model!("a range from {start} to {limit} by {delta} has more than {MAX_ELEMENTS} elements");
        }
        n as usize
    } else {
        let (start, limit, delta) = (a.scalar_i64()? as i128, b.scalar_i64()? as i128, c.scalar_i64()? as i128);
        if delta == 0 {
            bail_model!("delta is 0");
        }
        let span = if delta > 0 { limit - start } else { start - limit };
        let n = if span > 0 { (span - 1) / delta.abs() + 1 } else { 0 };
        to_dim(n, "the length of the range")?
    };
    Ok((dtype, Some(count)))
}

fn range_eval(cx: &EvalCx) -> Result<Tensor> {
    let dtype = cx.out_dtype(0)?;
    let n = cx.out_shape(0)?[0];
    let (start, delta) = (cx.input(0)?, cx.input(2)?);
    if dtype.is_int() {
        let (s, d) = (start.scalar_i64()? as i128, delta.scalar_i64()? as i128);
        return with_dtype!(dtype, T => {
            Tensor::from_vec(vec![n], (0..n).map(|i| T::from_i128(s + i as i128 * d)).collect::<Vec<T>>())
        });
    }
    let (s, d) = (start.scalar_f64()?, delta.scalar_f64()?);
    let low_precision = matches!(dtype, DType::F16 | DType::BF16);
    let stash_f32 = cx.attrs.int_or("stash_type", if cx.version >= 27 { 1 } else { 11 })? == 1;
    if low_precision && stash_f32 {
        let (s, d) = (s as f32, d as f32);
        let v: Vec<f32> = (0..n).map(|i| s + i as f32 * d).collect();
        return Ok(Tensor::from_vec(vec![n], v)?.cast(dtype));
    }
    Tensor::from_fn_f64(dtype, vec![n], |i| s + i as f64 * d)
}

fn eye_like_dtype(cx: &InferCx) -> Result<DType> {
    let x = cx.req("EyeLike", 0, "input")?;
    if let Some(s) = x.shape
        && s.len() != 2
    {
        bail_model!("the input must have rank 2, has shape {}", fmt_shape(s));
    }
    match cx.attrs.int("dtype")? {
        None => Ok(x.dtype),
        Some(code) => DType::from_onnx_code(code as i32)
            .ok_or_else(|| Error::Unsupported(format!("EyeLike dtype {}", DType::onnx_code_name(code as i32)))),
    }
}

// ---------------------------------------------------------------------------------------
// Trilu, ReverseSequence, OneHot, BitCast.

/// Trilu's diagonal offset `k` (input 1, default 0); `None` when unknown.
fn trilu_k(v: &impl NodeView) -> Result<Option<i64>> {
    if let Some(s) = v.req("Trilu", 0, "input")?.shape
        && s.len() < 2
    {
        bail_model!("the input must have rank >= 2, has shape {}", fmt_shape(s));
    }
    match v.get(1) {
        None => Ok(Some(0)),
        Some(k) => {
            if k.dtype != DType::I64 {
                bail_model!("k must be int64, got {}", k.dtype);
            }
            k.value.map(Tensor::scalar_i64).transpose()
        }
    }
}

fn trilu_eval(cx: &EvalCx) -> Result<Tensor> {
    let t = cx.input(0)?;
    let k = need(trilu_k(cx)?)?;
    let upper = cx.attrs.int_or("upper", 1)? != 0;
    let s = t.shape();
    let (rows, cols) = (s[s.len() - 2], s[s.len() - 1]);
    let keep = |r: usize, c: usize| {
        let diag = c as i64 - r as i64;
        if upper { diag >= k } else { diag <= k }
    };
    with_dtype!(t.dtype(), T => {
        let mut v = t.slice::<T>()?.to_vec();
        for m in v.chunks_mut((rows * cols).max(1)) {
            for (i, x) in m.iter_mut().enumerate() {
                if !keep(i / cols, i % cols) {
                    *x = T::default();
                }
            }
        }
        Tensor::from_vec(s.to_vec(), v)
    })
}

/// ReverseSequence's (batch axis, time axis), after checking the inputs.
fn reverse_sequence_axes(v: &impl NodeView) -> Result<(usize, usize)> {
    let data = v.req("ReverseSequence", 0, "input")?;
    let lens = v.req("ReverseSequence", 1, "sequence_lens")?;
    let batch = v.attrs().int_or("batch_axis", 1)?;
    let time = v.attrs().int_or("time_axis", 0)?;
    if !matches!((batch, time), (0, 1) | (1, 0)) {
        bail_model!("batch_axis {batch} and time_axis {time} must be 0 and 1 in some order");
    }
    let (batch, time) = (batch as usize, time as usize);
    if lens.dtype != DType::I64 {
        bail_model!("sequence_lens must be int64, got {}", lens.dtype);
    }
    if let Some(s) = data.shape {
        if s.len() < 2 {
            bail_model!("the input must have rank >= 2, has shape {}", fmt_shape(s));
        }
        if let Some(l) = lens.shape
            && l != [s[batch]]
        {
            bail_model!("sequence_lens has shape {} but the batch size is {}", fmt_shape(l), s[batch]);
        }
        if let Some(lens) = lens.value {
            for (b, &n) in lens.to_i64_vec().iter().enumerate() {
                if n < 0 || n as u64 > s[time] as u64 {
                    bail_model!("sequence_lens[{b}] = {n} is outside [0, {}]", s[time]);
                }
            }
        }
    }
    Ok((batch, time))
}

fn reverse_sequence_eval(cx: &EvalCx) -> Result<Tensor> {
    let (batch_axis, _) = reverse_sequence_axes(cx)?;
    let t = cx.input(0)?;
    let lens = cx.input(1)?.to_i64_vec();
    let s = t.shape();
    let inner = checked_numel(&s[2..])?;
    let slab = |b: usize, time: usize| {
        let (i0, i1) = if batch_axis == 0 { (b, time) } else { (time, b) };
        (i0 * s[1] + i1) * inner
    };
    with_dtype!(t.dtype(), T => {
        let src = t.slice::<T>()?;
        let mut out = src.to_vec();
        for (b, &n) in lens.iter().enumerate() {
            let n = n as usize;
            for time in 0..n {
                let (to, from) = (slab(b, time), slab(b, n - 1 - time));
                out[to..to + inner].copy_from_slice(&src[from..from + inner]);
            }
        }
        Tensor::from_vec(s.to_vec(), out)
    })
}

/// Where OneHot's new axis goes and how deep it is.
struct OneHotPlan {
    axis: usize,
    depth: usize,
    out_shape: Vec<usize>,
}

fn one_hot_params(v: &impl NodeView) -> Result<(DType, Option<OneHotPlan>)> {
    let indices = v.req("OneHot", 0, "indices")?;
    let depth = v.req("OneHot", 1, "depth")?;
    let values = v.req("OneHot", 2, "values")?;
    if indices.dtype == DType::Bool || depth.dtype == DType::Bool {
        bail_model!("indices and depth must be numeric");
    }
    if let Some(s) = values.shape
        && checked_numel(s)? != 2
    {
        bail_model!("values must hold [off_value, on_value], has shape {}", fmt_shape(s));
    }
    let (Some(s), Some(depth)) = (indices.shape, depth.value) else { return Ok((values.dtype, None)) };
    let d = depth.scalar_f64()?.trunc();
    if !(d >= 1.0 && d <= MAX_ELEMENTS as f64) {
        bail_model!("depth {d} must be a positive count");
    }
    let depth = d as usize;
    let axis = normalize_axis(v.attrs().int_or("axis", -1)?, s.len() + 1)?;
    let mut out_shape = s.to_vec();
    out_shape.insert(axis, depth);
    Ok((values.dtype, Some(OneHotPlan { axis, depth, out_shape })))
}

fn one_hot_eval(cx: &EvalCx) -> Result<Tensor> {
    let plan = need(one_hot_params(cx)?.1)?;
    let indices = cx.input(0)?;
    let values = cx.input(2)?;
    let inner = checked_numel(&indices.shape()[plan.axis..])?;
    let depth = plan.depth as i64;
    with_dtype!(values.dtype(), T => {
        let (off, on) = match values.slice::<T>()? {
            &[off, on] => (off, on),
            _ => bail_model!("OneHot values must hold two elements"),
        };
        let mut out = vec![off; checked_numel(&plan.out_shape)?];
        for (p, &ix) in indices.to_i64_vec().iter().enumerate() {
            let ix = if ix < 0 { ix + depth } else { ix };
            if (0..depth).contains(&ix) {
                let (o, i) = (p / inner, p % inner);
                out[(o * plan.depth + ix as usize) * inner + i] = on;
            }
        }
        Tensor::from_vec(plan.out_shape, out)
    })
}

fn bit_cast_dtype(cx: &InferCx) -> Result<DType> {
    let from = cx.req("BitCast", 0, "input")?.dtype;
    let code = cx.attrs.req_int("to")?;
    let to = i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx_code)
        .ok_or_else(|| Error::Unsupported(format!("BitCast to {}", DType::onnx_code_name(code as i32))))?;
    if from.size() != to.size() {
        bail_model!(
            "cannot bit-cast {from} ({} bits) to {to} ({} bits): widths differ",
            from.size() * 8,
            to.size() * 8
        );
    }
    Ok(to)
}

/// An element's bit pattern, zero-extended to 64 bits, and back.
trait Bits: Elem {
    fn to_bits64(self) -> u64;
    fn from_bits64(b: u64) -> Self;
}

macro_rules! impl_bits {
    ($($t:ty => $u:ty),*) => {
        $(impl Bits for $t {
            fn to_bits64(self) -> u64 { self as $u as u64 }
            fn from_bits64(b: u64) -> Self { b as $u as $t }
        })*
    };
}
impl_bits!(i8 => u8, u8 => u8, i16 => u16, u16 => u16, i32 => u32, u32 => u32, i64 => u64, u64 => u64);

macro_rules! impl_bits_float {
    ($($t:ty => $u:ty),*) => {
        $(impl Bits for $t {
            fn to_bits64(self) -> u64 { u64::from(self.to_bits()) }
            fn from_bits64(b: u64) -> Self { <$t>::from_bits(b as $u) }
        })*
    };
}
impl_bits_float!(f32 => u32, f64 => u64, f16 => u16, bf16 => u16);

impl Bits for bool {
    fn to_bits64(self) -> u64 {
        u64::from(self)
    }
    fn from_bits64(b: u64) -> Self {
        b != 0
    }
}

fn bit_cast_eval(cx: &EvalCx) -> Result<Tensor> {
    let t = cx.input(0)?;
    let bits: Vec<u64> = with_dtype!(t.dtype(), T => t.slice::<T>()?.iter().map(|&x| x.to_bits64()).collect());
    with_dtype!(cx.out_dtype(0)?, T => {
        Tensor::from_vec(t.shape().to_vec(), bits.into_iter().map(T::from_bits64).collect::<Vec<T>>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::{Op, OpKind};

    fn run(
        op: LayoutOp,
        attrs: &[(&str, Attr)],
        version: u32,
        inputs: &[Option<&Tensor>],
        outputs: usize,
    ) -> Result<Vec<Tensor>> {
        let mut a = Attrs::new();
        for (k, v) in attrs {
            a.set(k, v.clone());
        }
        Op { kind: OpKind::Layout(op), attrs: a, version }.eval(inputs, outputs)
    }

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap_or_else(|_| Tensor::scalar(f32::NAN))
    }

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        f32s(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec()
    }

    #[test]
    fn reshape_copies_zero_and_infers_minus_one() {
        let x = iota(&[2, 3, 4]);
        let shape = Tensor::from_i64s(vec![0, -1, 2]);
        let out = run(LayoutOp::Reshape, &[], 21, &[Some(&x), Some(&shape)], 1).unwrap_or_default();
        assert_eq!(out[0].shape(), &[2, 6, 2]);
        let bad = Tensor::from_i64s(vec![5, 5]);
        let err = run(LayoutOp::Reshape, &[], 21, &[Some(&x), Some(&bad)], 1).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("[2,3,4]") && e.contains("[5,5]")));
    }

    #[test]
    fn slice_with_negative_step_and_clamped_ends() {
        let x = iota(&[2, 5]);
        let starts = Tensor::from_i64s(vec![i64::MAX, 0]);
        let ends = Tensor::from_i64s(vec![i64::MIN, 1]);
        let axes = Tensor::from_i64s(vec![1, 0]);
        let steps = Tensor::from_i64s(vec![-2, 1]);
        let out = run(LayoutOp::Slice, &[], 13, &[Some(&x), Some(&starts), Some(&ends), Some(&axes), Some(&steps)], 1)
            .unwrap_or_default();
        assert_eq!(out[0].shape(), &[1, 3]);
        assert_eq!(vals(&out[0]), vec![4.0, 2.0, 0.0]);
    }

    #[test]
    fn pad_reflect_edge_wrap_and_crop() {
        let x = f32s(&[3], &[1.0, 2.0, 3.0]);
        let pads = Tensor::from_i64s(vec![2, 3]);
        let mode = |m: &str| [("mode", Attr::String(m.into()))];
        let reflect = run(LayoutOp::Pad, &mode("reflect"), 18, &[Some(&x), Some(&pads)], 1).unwrap_or_default();
        assert_eq!(vals(&reflect[0]), vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0, 2.0]);
        let edge = run(LayoutOp::Pad, &mode("edge"), 18, &[Some(&x), Some(&pads)], 1).unwrap_or_default();
        assert_eq!(vals(&edge[0]), vec![1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]);
        let wrap = run(LayoutOp::Pad, &mode("wrap"), 18, &[Some(&x), Some(&pads)], 1).unwrap_or_default();
        assert_eq!(vals(&wrap[0]), vec![2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        let crop = Tensor::from_i64s(vec![-1, 1]);
        let value = f32s(&[], &[9.0]);
        let c = run(LayoutOp::Pad, &[], 18, &[Some(&x), Some(&crop), Some(&value)], 1).unwrap_or_default();
        assert_eq!(vals(&c[0]), vec![2.0, 3.0, 9.0]);
    }

    #[test]
    fn depth_to_space_crd_matches_hand_computation() {
        // [1, 4, 1, 1] with blocksize 2: CRD puts channel c·4 + i·2 + j at (i, j).
        let x = iota(&[1, 4, 1, 1]);
        let attrs = [("blocksize", Attr::Int(2)), ("mode", Attr::String("CRD".into()))];
        let out = run(LayoutOp::DepthToSpace, &attrs, 13, &[Some(&x)], 1).unwrap_or_default();
        assert_eq!(out[0].shape(), &[1, 1, 2, 2]);
        assert_eq!(vals(&out[0]), vec![0.0, 1.0, 2.0, 3.0]);
        // DCR on [1, 8, 1, 1] -> [1, 2, 2, 2]: output channel c at (i, j) is input (i·2 + j)·2 + c.
        let x = iota(&[1, 8, 1, 1]);
        let out = run(LayoutOp::DepthToSpace, &attrs[..1], 13, &[Some(&x)], 1).unwrap_or_default();
        assert_eq!(vals(&out[0]), vec![0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0]);
    }

    #[test]
    fn split_by_num_outputs_leaves_a_smaller_last_chunk() {
        let x = iota(&[7]);
        let out = run(LayoutOp::Split, &[("num_outputs", Attr::Int(3))], 18, &[Some(&x)], 3).unwrap_or_default();
        let shapes: Vec<_> = out.iter().map(|t| t.shape().to_vec()).collect();
        assert_eq!(shapes, vec![vec![3], vec![3], vec![1]]);
        assert_eq!(vals(&out[2]), vec![6.0]);
    }

    #[test]
    fn range_counts_with_negative_delta() {
        let (s, l, d) = (Tensor::scalar(10i32), Tensor::scalar(4i32), Tensor::scalar(-3i32));
        let out = run(LayoutOp::Range, &[], 11, &[Some(&s), Some(&l), Some(&d)], 1).unwrap_or_default();
        assert_eq!(vals(&out[0]), vec![10.0, 7.0]);
    }

    #[test]
    fn tile_and_expand_use_zero_strides() {
        let x = f32s(&[2, 1], &[1.0, 2.0]);
        let reps = Tensor::from_i64s(vec![2, 2]);
        let out = run(LayoutOp::Tile, &[], 13, &[Some(&x), Some(&reps)], 1).unwrap_or_default();
        assert_eq!(vals(&out[0]), vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
        let shape = Tensor::from_i64s(vec![2, 3]);
        let out = run(LayoutOp::Expand, &[], 13, &[Some(&x), Some(&shape)], 1).unwrap_or_default();
        assert_eq!(vals(&out[0]), vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    }

    #[test]
    fn bit_cast_keeps_bits() {
        let x = f32s(&[2], &[1.0, -0.0]);
        let out = run(LayoutOp::BitCast, &[("to", Attr::Int(6))], 26, &[Some(&x)], 1).unwrap_or_default();
        assert_eq!(out[0].to_i64_vec(), vec![0x3f80_0000, i32::MIN as i64]);
        assert!(run(LayoutOp::BitCast, &[("to", Attr::Int(7))], 26, &[Some(&x)], 1).is_err());
    }

    #[test]
    fn concat_mismatch_names_the_input() {
        let (a, b) = (iota(&[2, 3]), iota(&[3, 2]));
        let err = run(LayoutOp::Concat, &[("axis", Attr::Int(0))], 13, &[Some(&a), Some(&b)], 1).err();
        assert!(err.is_some_and(|e| e.to_string().contains("input 1 has shape [3,2]")));
    }

    #[test]
    fn infer_knows_shapes_from_values_alone() {
        use crate::op::Fact;
        let unknown = ValueType::unknown(DType::F32);
        let target = Tensor::from_i64s(vec![4, 6]);
        let target_ty = ValueType::of(&target);
        let facts = [Some(Fact { ty: &unknown, value: None }), Some(Fact { ty: &target_ty, value: Some(&target) })];
        let op = Op { kind: OpKind::Layout(LayoutOp::Reshape), attrs: Attrs::new(), version: 21 };
        assert_eq!(op.infer(&facts, 1).ok(), Some(vec![ValueType::new(DType::F32, vec![4, 6])]));
        let x = ValueType::new(DType::F16, vec![2, 3, 5]);
        let op = Op { kind: OpKind::Layout(LayoutOp::Shape), attrs: Attrs::new(), version: 21 };
        let facts = [Some(Fact { ty: &x, value: None })];
        assert_eq!(op.infer(&facts, 1).ok(), Some(vec![ValueType::new(DType::I64, vec![3])]));
        let cx = InferCx { attrs: &op.attrs, version: 21, inputs: &facts, num_outputs: 1 };
        let value = LayoutOp::Shape.value_from_types(&cx).ok().flatten().map(|t| t.to_i64_vec());
        assert_eq!(value, Some(vec![2, 3, 5]));
    }

    #[test]
    fn old_opsets_take_attributes() {
        let x = iota(&[1, 4]);
        let ints = |v: &[i64]| Attr::Ints(v.to_vec());
        let slice = [("starts", ints(&[1])), ("ends", ints(&[-1])), ("axes", ints(&[1]))];
        let out = run(LayoutOp::Slice, &slice, 9, &[Some(&x)], 1).unwrap_or_default();
        assert_eq!(vals(&out[0]), vec![1.0, 2.0]);
        let pad = [("pads", ints(&[0, 1, 0, 0])), ("value", Attr::Float(7.0))];
        let out = run(LayoutOp::Pad, &pad, 10, &[Some(&x)], 1).unwrap_or_default();
        assert_eq!(vals(&out[0]), vec![7.0, 0.0, 1.0, 2.0, 3.0]);
        let out = run(LayoutOp::Squeeze, &[("axes", ints(&[0]))], 11, &[Some(&x)], 1).unwrap_or_default();
        assert_eq!(out[0].shape(), &[4]);
        let split = [("split", ints(&[1, 3])), ("axis", Attr::Int(1))];
        let out = run(LayoutOp::Split, &split, 11, &[Some(&x)], 2).unwrap_or_default();
        assert_eq!(vals(&out[1]), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn center_crop_pad_crops_left_of_center_and_pads_right() {
        let x = iota(&[5]);
        let shape = Tensor::from_i64s(vec![2]);
        let out = run(LayoutOp::CenterCropPad, &[], 18, &[Some(&x), Some(&shape)], 1).unwrap_or_default();
        assert_eq!(vals(&out[0]), vec![1.0, 2.0]);
        let shape = Tensor::from_i64s(vec![8]);
        let out = run(LayoutOp::CenterCropPad, &[], 18, &[Some(&x), Some(&shape)], 1).unwrap_or_default();
        assert_eq!(vals(&out[0]), vec![0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0]);
    }
}
