//! The image op family: `Resize` (every opset form from 10 to 19), the deprecated
//! `Upsample`, `GridSample` (2-D and N-D), `AffineGrid` and `RoiAlign`.
//!
//! Resize is separable: nearest mode is one N-D gather (exact for every dtype), linear and
//! cubic run one 1-D pass per resized axis, each output position a short weighted sum of
//! input positions (the "taps") computed once per axis.

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, compute_dtype, demote, promote};
use crate::shape::{fmt_shape, normalize_axes, strides};
use crate::tensor::{Elem, MAX_ELEMENTS, Tensor, checked_numel};
use num_traits::Float;

crate::op_family! {
    /// Ops of the image family.
    pub enum ImageOp { Resize, Upsample, GridSample, AffineGrid, RoiAlign }
}

impl ImageOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        match self {
            ImageOp::Resize | ImageOp::Upsample => resize_infer(self, cx),
            ImageOp::GridSample => grid_sample_infer(cx),
            ImageOp::AffineGrid => affine_grid_infer(cx),
            ImageOp::RoiAlign => roi_align_infer(cx),
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        match self {
            ImageOp::Resize | ImageOp::Upsample => resize_eval(self, cx),
            ImageOp::GridSample => grid_sample_eval(cx),
            ImageOp::AffineGrid => affine_grid_eval(cx),
            ImageOp::RoiAlign => roi_align_eval(cx),
        }
    }
}

fn bad_attr(name: &str, value: impl std::fmt::Display) -> Error {
    Error::InvalidModel(format!("attribute '{name}' has an unsupported value '{value}'"))
}

/// Keys cubic convolution weight at distance `t` with coefficient `a`.
fn cubic_weight(t: f64, a: f64) -> f64 {
    let t = t.abs();
    if t <= 1.0 {
        ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    } else if t < 2.0 {
        ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------
// Resize / Upsample
// ---------------------------------------------------------------------------------------

/// The interpolation of a resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    Nearest,
    Linear,
    Cubic,
}

/// How an output coordinate maps back to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
    /// Opset 11-12 only.
    TfHalfPixelForNn,
}

/// How nearest mode rounds a fractional input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Upsample and Resize-10: truncate when upsampling, round up when downsampling.
    Legacy,
}

/// How `sizes` with `axes` keep the aspect ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// The attributes of `Resize` and `Upsample`.
#[derive(Clone, Debug)]
pub struct ResizeParams {
    pub interp: Interp,
    pub coord: CoordMode,
    pub nearest: NearestMode,
    pub cubic_a: f64,
    pub exclude_outside: bool,
    pub extrapolation: f64,
    pub antialias: bool,
    pub axes: Option<Vec<i64>>,
    pub policy: AspectPolicy,
}

impl ResizeParams {
    /// Parses the attributes of `Resize` (`upsample` false) or `Upsample` at `version`.
    pub fn parse(upsample: bool, attrs: &Attrs, version: u32) -> Result<ResizeParams> {
        let legacy = upsample || version < 11;
        let interp = match attrs.string_or("mode", "nearest")? {
            "nearest" => Interp::Nearest,
            "linear" | "bilinear" => Interp::Linear,
            "cubic" if !legacy => Interp::Cubic,
            other => return Err(bad_attr("mode", other)),
        };
        if legacy {
            return Ok(ResizeParams {
                interp,
                coord: CoordMode::Asymmetric,
                nearest: NearestMode::Legacy,
                cubic_a: -0.75,
                exclude_outside: false,
                extrapolation: 0.0,
                antialias: false,
                axes: None,
                policy: AspectPolicy::Stretch,
            });
        }
        let coord = match attrs.string_or("coordinate_transformation_mode", "half_pixel")? {
            "half_pixel" => CoordMode::HalfPixel,
            "half_pixel_symmetric" => CoordMode::HalfPixelSymmetric,
            "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
            "align_corners" => CoordMode::AlignCorners,
            "asymmetric" => CoordMode::Asymmetric,
            "tf_crop_and_resize" => CoordMode::TfCropAndResize,
            "tf_half_pixel_for_nn" if version < 13 => CoordMode::TfHalfPixelForNn,
            other => return Err(bad_attr("coordinate_transformation_mode", other)),
        };
        let nearest = match attrs.string_or("nearest_mode", "round_prefer_floor")? {
            "round_prefer_floor" => NearestMode::RoundPreferFloor,
            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
            "floor" => NearestMode::Floor,
            "ceil" => NearestMode::Ceil,
            other => return Err(bad_attr("nearest_mode", other)),
        };
        let policy = match attrs.string_or("keep_aspect_ratio_policy", "stretch")? {
            "stretch" => AspectPolicy::Stretch,
            "not_larger" => AspectPolicy::NotLarger,
            "not_smaller" => AspectPolicy::NotSmaller,
            other => return Err(bad_attr("keep_aspect_ratio_policy", other)),
        };
        Ok(ResizeParams {
            interp,
            coord,
            nearest,
            cubic_a: f64::from(attrs.float_or("cubic_coeff_a", -0.75)?),
            exclude_outside: attrs.int_or("exclude_outside", 0)? != 0,
            extrapolation: f64::from(attrs.float_or("extrapolation_value", 0.0)?),
            antialias: attrs.int_or("antialias", 0)? != 0,
            axes: attrs.ints("axes")?.map(<[i64]>::to_vec),
            policy,
        })
    }
}

/// What the resize does to each axis of the input.
#[derive(Debug, PartialEq)]
pub struct ResizePlan {
    pub out_shape: Vec<usize>,
    /// The scale of every axis (1 for axes left alone).
    pub scales: Vec<f64>,
    /// `[start, end]` of the region of interest of every axis (tf_crop_and_resize).
    pub roi: Vec<(f64, f64)>,
}

/// The parameters and plan of a `Resize` (`upsample` false) or `Upsample` node of `version`
/// on an input of `in_shape`; `input(i)` says whether optional input `i` is present and
/// gives its value when it is constant. `None` when a needed input is not constant.
pub fn plan_resize<'t>(
    upsample: bool,
    attrs: &Attrs,
    version: u32,
    in_shape: &[usize],
    input: impl Fn(usize) -> (bool, Option<&'t Tensor>),
) -> Result<Option<(ResizeParams, ResizePlan)>> {
    let op = if upsample { ImageOp::Upsample } else { ImageOp::Resize };
    let p = ResizeParams::parse(upsample, attrs, version)?;
    let args = ResizeArgs::gather(op, attrs, version, input)?;
    Ok(resize_plan(&p, in_shape, &args)?.map(|plan| (p, plan)))
}

/// An optional tensor input of the resize: omitted (or empty), unknown or known.
enum Arg<T> {
    Absent,
    Unknown,
    Known(Vec<T>),
}

impl<T> Arg<T> {
    fn from_tensor(t: Option<&Tensor>, present: bool, f: impl Fn(&Tensor) -> Vec<T>) -> Arg<T> {
        match (present, t) {
            (false, _) => Arg::Absent,
            (true, None) => Arg::Unknown,
            (true, Some(t)) if t.numel() == 0 => Arg::Absent,
            (true, Some(t)) => Arg::Known(f(t)),
        }
    }
}

/// The roi, scales and sizes of a resize, as the op's opset form gives them.
struct ResizeArgs {
    roi: Arg<f64>,
    scales: Arg<f64>,
    sizes: Arg<i64>,
}

impl ResizeArgs {
    /// `input(i)`: whether input `i` is present, and its value if known.
    fn gather<'t>(
        op: ImageOp,
        attrs: &Attrs,
        version: u32,
        input: impl Fn(usize) -> (bool, Option<&'t Tensor>),
    ) -> Result<ResizeArgs> {
        let arg_f64 = |i: usize| {
            let (present, t) = input(i);
            Arg::from_tensor(t, present, Tensor::to_f64_vec)
        };
        if op == ImageOp::Upsample && version < 9 {
            let scales = attrs
                .floats("scales")?
                .ok_or_else(|| Error::InvalidModel("Upsample needs the 'scales' attribute".into()))?;
            let scales = scales.iter().map(|&s| f64::from(s)).collect();
            return Ok(ResizeArgs { roi: Arg::Absent, scales: Arg::Known(scales), sizes: Arg::Absent });
        }
        if op == ImageOp::Upsample || version < 11 {
            return Ok(ResizeArgs { roi: Arg::Absent, scales: arg_f64(1), sizes: Arg::Absent });
        }
        let (present, sizes) = input(3);
        Ok(ResizeArgs {
            roi: arg_f64(1),
            scales: arg_f64(2),
            sizes: Arg::from_tensor(sizes, present, Tensor::to_i64_vec),
        })
    }
}

/// Works out the output shape, the per-axis scales and the roi; `None` when a needed
/// value is unknown.
fn resize_plan(p: &ResizeParams, in_shape: &[usize], args: &ResizeArgs) -> Result<Option<ResizePlan>> {
    let rank = in_shape.len();
    let axes = match &p.axes {
        Some(a) => normalize_axes(a, rank)?,
        None => (0..rank).collect(),
    };
    let n = axes.len();
    let mut scales = vec![1.0; rank];
    let mut out_shape = in_shape.to_vec();
    match (&args.scales, &args.sizes) {
        (Arg::Unknown, _) | (_, Arg::Unknown) => return Ok(None),
        (Arg::Known(_), Arg::Known(_)) => {
            return Err(Error::InvalidModel("Resize takes scales or sizes, not both".into()));
        }
        (Arg::Absent, Arg::Absent) => return Err(Error::InvalidModel("Resize needs scales or sizes".into())),
        (Arg::Known(s), Arg::Absent) => {
            if s.len() != n {
                return Err(Error::InvalidModel(format!("Resize has {} scales for {n} axes", s.len())));
            }
            for (&a, &scale) in axes.iter().zip(s) {
                if !(scale > 0.0 && scale.is_finite()) {
                    return Err(Error::InvalidModel(format!("Resize scale {scale} must be positive")));
                }
                let out = (in_shape[a] as f64 * scale).floor();
                if out > MAX_ELEMENTS as f64 {
                    return Err(Error::InvalidModel(format!("Resize output size {out} is too large")));
                }
                scales[a] = scale;
                out_shape[a] = out as usize;
            }
        }
        (Arg::Absent, Arg::Known(sizes)) => {
            if sizes.len() != n {
                return Err(Error::InvalidModel(format!("Resize has {} sizes for {n} axes", sizes.len())));
            }
            let mut wanted = Vec::with_capacity(n);
            for &s in sizes {
                let s = usize::try_from(s)
                    .ok()
                    .filter(|&s| s <= MAX_ELEMENTS)
                    .ok_or_else(|| Error::InvalidModel(format!("Resize size {s} is out of range")))?;
                wanted.push(s);
            }
            let ratios: Vec<f64> =
                axes.iter().zip(&wanted).map(|(&a, &s)| s as f64 / in_shape[a] as f64).collect();
            let common = match p.policy {
                AspectPolicy::Stretch => None,
                AspectPolicy::NotLarger => Some(ratios.iter().copied().fold(f64::INFINITY, f64::min)),
                AspectPolicy::NotSmaller => Some(ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            };
            for (k, &a) in axes.iter().enumerate() {
                match common {
                    None => {
                        scales[a] = ratios[k];
                        out_shape[a] = wanted[k];
                    }
                    Some(c) => {
                        let out = (c * in_shape[a] as f64 + 0.5).floor();
                        if !(0.0..=MAX_ELEMENTS as f64).contains(&out) {
                            return Err(Error::InvalidModel(format!(
                                "Resize output size {out} is out of range"
                            )));
                        }
                        scales[a] = c;
                        out_shape[a] = out as usize;
                    }
                }
            }
        }
    }
    for &a in &axes {
        if in_shape[a] == 0 && out_shape[a] != 0 {
            return Err(Error::InvalidModel(format!(
                "Resize cannot fill axis {a} of size {} from an empty input axis",
                out_shape[a]
            )));
        }
    }
    let mut roi = vec![(0.0, 1.0); rank];
    if p.coord == CoordMode::TfCropAndResize {
        match &args.roi {
            Arg::Unknown => return Ok(None),
            Arg::Absent => {
                return Err(Error::InvalidModel("Resize with tf_crop_and_resize needs the roi input".into()));
            }
            Arg::Known(r) => {
                if r.len() != 2 * n {
                    return Err(Error::InvalidModel(format!(
                        "Resize roi has {} values, expected {} (2 per axis)",
                        r.len(),
                        2 * n
                    )));
                }
                for (k, &a) in axes.iter().enumerate() {
                    roi[a] = (r[k], r[n + k]);
                }
            }
        }
    }
    checked_numel(&out_shape)?;
    Ok(Some(ResizePlan { out_shape, scales, roi }))
}

fn resize_infer(op: ImageOp, cx: &InferCx) -> Result<Vec<ValueType>> {
    let p = ResizeParams::parse(op == ImageOp::Upsample, cx.attrs, cx.version)?;
    let dt = cx.dtype(0)?;
    if p.interp != Interp::Nearest && dt == DType::Bool {
        return Err(bad_dtype(op.name(), dt));
    }
    let legacy_scales = op == ImageOp::Upsample || cx.version < 11;
    let scales_at = if legacy_scales { 1 } else { 2 };
    if let Some(s) = cx.opt(scales_at)
        && !s.ty.dtype.is_float()
    {
        return Err(Error::InvalidModel(format!("{} scales must be float, got {}", op.name(), s.ty.dtype)));
    }
    if !legacy_scales
        && let Some(s) = cx.opt(3)
        && s.ty.dtype != DType::I64
    {
        return Err(Error::InvalidModel(format!("Resize sizes must be int64, got {}", s.ty.dtype)));
    }
    let Some(x) = cx.shape(0)? else { return Ok(vec![ValueType::unknown(dt)]) };
    let args = ResizeArgs::gather(op, cx.attrs, cx.version, |i| {
        let f = cx.opt(i);
        (f.is_some(), f.and_then(|f| f.value))
    })?;
    match resize_plan(&p, x, &args)? {
        Some(plan) => Ok(vec![ValueType::new(dt, plan.out_shape)]),
        None => Ok(vec![ValueType::unknown(dt)]),
    }
}

fn resize_eval(op: ImageOp, cx: &EvalCx) -> Result<Vec<Tensor>> {
    let p = ResizeParams::parse(op == ImageOp::Upsample, cx.attrs, cx.version)?;
    let x = cx.input(0)?;
    let args = ResizeArgs::gather(op, cx.attrs, cx.version, |i| (cx.opt(i).is_some(), cx.opt(i)))?;
    let plan = resize_plan(&p, x.shape(), &args)?
        .ok_or_else(|| Error::Internal("Resize plan unknown with every input known".into()))?;
    let out = match p.interp {
        Interp::Nearest => resize_nearest(&p, &plan, x)?,
        Interp::Linear | Interp::Cubic => resize_filtered(&p, &plan, x)?,
    };
    Ok(vec![out])
}

/// The input coordinate of output position `x` along one axis.
fn source_coord(
    p: &ResizeParams,
    x: usize,
    scale: f64,
    in_len: usize,
    out_len: usize,
    roi: (f64, f64),
) -> f64 {
    let x = x as f64;
    let in_f = in_len as f64;
    // ONNX uses the unrounded output length `scale * input length` here.
    let out_f = scale * in_f;
    match p.coord {
        CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
        CoordMode::HalfPixelSymmetric => {
            let adjustment = out_len as f64 / out_f;
            let offset = in_f / 2.0 * (1.0 - adjustment);
            offset + (x + 0.5) / scale - 0.5
        }
        CoordMode::PytorchHalfPixel => {
            if out_f == 1.0 {
                -0.5
            } else {
                (x + 0.5) / scale - 0.5
            }
        }
        CoordMode::AlignCorners => {
            if out_f == 1.0 {
                0.0
            } else {
                x * (in_f - 1.0) / (out_f - 1.0)
            }
        }
        CoordMode::Asymmetric => x / scale,
        CoordMode::TfHalfPixelForNn => (x + 0.5) / scale,
        CoordMode::TfCropAndResize => {
            let span = (roi.1 - roi.0) * (in_f - 1.0);
            let rel = if out_f == 1.0 { span / 2.0 } else { x * span / (out_f - 1.0) };
            rel + roi.0 * (in_f - 1.0)
        }
    }
}

/// Whether tf_crop_and_resize puts the coordinate outside the input (extrapolated).
fn extrapolated(p: &ResizeParams, coord: f64, in_len: usize) -> bool {
    p.coord == CoordMode::TfCropAndResize && (coord < 0.0 || coord > in_len as f64 - 1.0)
}

/// Marks an output position filled with the extrapolation value.
const OUTSIDE: usize = usize::MAX;

/// For each output position along one axis, the nearest input index (`None` where
/// tf_crop_and_resize extrapolates).
pub fn nearest_table(p: &ResizeParams, plan: &ResizePlan, axis: usize, in_len: usize) -> Vec<Option<usize>> {
    let (scale, out_len) = (plan.scales[axis], plan.out_shape[axis]);
    (0..out_len)
        .map(|x| {
            let c = source_coord(p, x, scale, in_len, out_len, plan.roi[axis]);
            if extrapolated(p, c, in_len) {
                return None;
            }
            let r = match p.nearest {
                NearestMode::RoundPreferFloor => (c - 0.5).ceil(),
                NearestMode::RoundPreferCeil => (c + 0.5).floor(),
                NearestMode::Floor => c.floor(),
                NearestMode::Ceil => c.ceil(),
                NearestMode::Legacy if scale < 1.0 => c.ceil(),
                NearestMode::Legacy => c.floor(),
            };
            Some(r.clamp(0.0, in_len.saturating_sub(1) as f64) as usize)
        })
        .collect()
}

fn resize_nearest(p: &ResizeParams, plan: &ResizePlan, x: &Tensor) -> Result<Tensor> {
    let in_shape = x.shape();
    let in_strides = strides(in_shape);
    // Input offset contributed by each output index of each axis.
    let offsets: Vec<Vec<usize>> = (0..in_shape.len())
        .map(|a| {
            nearest_table(p, plan, a, in_shape[a])
                .into_iter()
                .map(|i| i.map_or(OUTSIDE, |i| i * in_strides[a]))
                .collect()
        })
        .collect();
    let out_shape = plan.out_shape.clone();
    crate::with_data!(x.data(), v => {
        let fill = Elem::from_f64(p.extrapolation);
        Tensor::from_vec(out_shape.clone(), gather_rows(v, &out_shape, &offsets, fill))
    })
}

/// `out[i0, .., ik] = src[sum offsets[a][ia]]`, or `fill` where any offset is [`OUTSIDE`].
/// Output rows reading the same input row are copied from the previous one.
fn gather_rows<T: Elem>(src: &[T], out_shape: &[usize], offsets: &[Vec<usize>], fill: T) -> Vec<T> {
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let Some((last, lead)) = offsets.split_last() else {
        out.extend_from_slice(&src[..1]);
        return out;
    };
    let row_len = last.len();
    let rows = n / row_len;
    let lead_shape = &out_shape[..lead.len()];
    let mut idx = vec![0usize; lead.len()];
    let mut prev_base = None;
    for _ in 0..rows {
        let base = lead.iter().zip(&idx).try_fold(0usize, |acc, (o, &i)| {
            let off = o[i];
            if off == OUTSIDE { None } else { Some(acc + off) }
        });
        match base {
            None => out.extend(std::iter::repeat_n(fill, row_len)),
            Some(b) if prev_base == Some(b) => {
                let start = out.len() - row_len;
                out.extend_from_within(start..);
            }
            Some(b) => out.extend(last.iter().map(|&o| if o == OUTSIDE { fill } else { src[b + o] })),
        }
        prev_base = base;
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < lead_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// The weighted input positions of each output position along one axis: `n` taps each.
pub struct Taps {
    pub n: usize,
    pub index: Vec<usize>,
    pub weight: Vec<f64>,
    /// Output positions set to the extrapolation value.
    pub outside: Vec<bool>,
}

/// The taps of a linear or cubic resize along `axis` (input length `in_len`).
pub fn filter_taps(p: &ResizeParams, plan: &ResizePlan, axis: usize, in_len: usize) -> Taps {
    let (scale, out_len) = (plan.scales[axis], plan.out_shape[axis]);
    let radius = if p.interp == Interp::Cubic { 2.0 } else { 1.0 };
    // Antialiasing widens the kernel by 1/scale when downsampling.
    let s = if p.antialias { scale.min(1.0) } else { 1.0 };
    let start = (-radius / s).floor() as i64 + 1;
    let n = (2 - 2 * start) as usize;
    let kernel = |t: f64| match p.interp {
        Interp::Cubic => cubic_weight(t, p.cubic_a),
        _ => (1.0 - t.abs()).max(0.0),
    };
    let mut taps = Taps {
        n,
        index: Vec::with_capacity(out_len * n),
        weight: Vec::with_capacity(out_len * n),
        outside: Vec::with_capacity(out_len),
    };
    let last = in_len.saturating_sub(1) as i64;
    for x in 0..out_len {
        let c = source_coord(p, x, scale, in_len, out_len, plan.roi[axis]);
        taps.outside.push(extrapolated(p, c, in_len));
        let floor = c.floor();
        // An integral coordinate takes its window one to the left with ratio 1, as ONNX does.
        let ratio = if c == floor { 1.0 } else { c - floor };
        let first = ((c - ratio) as i64).saturating_add(start);
        let at = taps.weight.len();
        for k in 0..n as i64 {
            let i = first.saturating_add(k);
            let inside = (0..=last).contains(&i);
            let w = if p.exclude_outside && !inside { 0.0 } else { kernel(s * ((start + k) as f64 - ratio)) };
            taps.weight.push(w);
            taps.index.push(i.clamp(0, last) as usize);
        }
        if p.antialias || p.exclude_outside {
            let w = &mut taps.weight[at..];
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|wk| *wk /= sum);
            }
        }
    }
    taps
}

/// Whether resizing `axis` leaves it unchanged.
pub fn identity_axis(p: &ResizeParams, plan: &ResizePlan, axis: usize, in_len: usize) -> bool {
    plan.scales[axis] == 1.0
        && plan.out_shape[axis] == in_len
        && (p.coord != CoordMode::TfCropAndResize || plan.roi[axis] == (0.0, 1.0))
}

fn resize_filtered(p: &ResizeParams, plan: &ResizePlan, x: &Tensor) -> Result<Tensor> {
    let dt = x.dtype();
    let cdt = if dt.is_float() { compute_dtype(dt) } else { DType::F64 };
    let xc =
        if x.dtype() == cdt { std::borrow::Cow::Borrowed(x) } else { std::borrow::Cow::Owned(x.cast(cdt)) };
    let out = crate::with_float!(cdt, "Resize", T => resize_passes::<T>(p, plan, &xc)?);
    Ok(if dt.is_float() {
        demote(out, dt)
    } else {
        // Integers round half to even and saturate, like the reference's saturate_cast.
        crate::ops::common::map(&out, |v: f64| v.round_ties_even())?.cast(dt)
    })
}

/// Runs one separable pass per resized axis, in the precision of `T`.
fn resize_passes<T: Elem + Float>(p: &ResizeParams, plan: &ResizePlan, x: &Tensor) -> Result<Tensor> {
    if plan.out_shape.contains(&0) {
        return Tensor::zeros(T::DTYPE, plan.out_shape.clone());
    }
    let mut shape = x.shape().to_vec();
    let fill = T::from(p.extrapolation).unwrap_or_else(T::zero);
    let mut axes: Vec<usize> = (0..shape.len()).filter(|&a| !identity_axis(p, plan, a, shape[a])).collect();
    // Shrink first and grow last, and among equal growth resize inner axes (the gathering
    // pass) first: the passes then touch the fewest elements.
    axes.sort_by(|&a, &b| {
        let growth = |k: usize| plan.out_shape[k] as f64 / shape[k].max(1) as f64;
        growth(a).total_cmp(&growth(b)).then(b.cmp(&a))
    });
    let mut data: Option<Vec<T>> = None;
    for axis in axes {
        let taps = filter_taps(p, plan, axis, shape[axis]);
        let src = match &data {
            Some(d) => d.as_slice(),
            None => x.slice::<T>()?,
        };
        data = Some(resize_axis(src, &shape, axis, &taps, fill));
        shape[axis] = plan.out_shape[axis];
    }
    match data {
        Some(d) => Tensor::from_vec(shape, d),
        None => Ok(x.clone()),
    }
}

/// One separable pass: `[outer, in_len, inner]` to `[outer, out_len, inner]`.
fn resize_axis<T: Float>(data: &[T], shape: &[usize], axis: usize, taps: &Taps, fill: T) -> Vec<T> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let (in_len, out_len, n) = (shape[axis], taps.outside.len(), taps.n);
    let weights: Vec<T> = taps.weight.iter().map(|&w| T::from(w).unwrap_or_else(T::zero)).collect();
    let mut out = vec![T::zero(); outer * out_len * inner];
    if inner == 1 {
        // The innermost axis: each output is a short dot product of scattered inputs.
        for (src, dst) in data.chunks_exact(in_len.max(1)).zip(out.chunks_exact_mut(out_len.max(1))) {
            for (xo, d) in dst.iter_mut().enumerate() {
                *d = if taps.outside[xo] {
                    fill
                } else {
                    let (w, idx) = (&weights[xo * n..(xo + 1) * n], &taps.index[xo * n..(xo + 1) * n]);
                    w.iter().zip(idx).fold(T::zero(), |acc, (&w, &i)| acc + w * src[i])
                };
            }
        }
        return out;
    }
    for o in 0..outer {
        let src = &data[o * in_len * inner..(o + 1) * in_len * inner];
        for xo in 0..out_len {
            let dst = &mut out[(o * out_len + xo) * inner..(o * out_len + xo + 1) * inner];
            if taps.outside[xo] {
                dst.fill(fill);
                continue;
            }
            // Whole rows at a time: contiguous multiply-adds.
            for k in 0..n {
                let w = weights[xo * n + k];
                let row = &src[taps.index[xo * n + k] * inner..][..inner];
                for (d, &s) in dst.iter_mut().zip(row) {
                    *d = *d + w * s;
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// GridSample
// ---------------------------------------------------------------------------------------

/// How GridSample reads outside the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Zeros,
    Border,
    Reflection,
}

/// The attributes of `GridSample`.
pub struct GridParams {
    pub interp: Interp,
    pub padding: Padding,
    pub align_corners: bool,
}

impl GridParams {
    pub fn parse(attrs: &Attrs) -> Result<GridParams> {
        let interp = match attrs.string_or("mode", "linear")? {
            "linear" | "bilinear" => Interp::Linear,
            "nearest" => Interp::Nearest,
            "cubic" | "bicubic" => Interp::Cubic,
            other => return Err(bad_attr("mode", other)),
        };
        let padding = match attrs.string_or("padding_mode", "zeros")? {
            "zeros" => Padding::Zeros,
            "border" => Padding::Border,
            "reflection" => Padding::Reflection,
            other => return Err(bad_attr("padding_mode", other)),
        };
        Ok(GridParams { interp, padding, align_corners: attrs.int_or("align_corners", 0)? != 0 })
    }
}

fn grid_sample_infer(cx: &InferCx) -> Result<Vec<ValueType>> {
    GridParams::parse(cx.attrs)?;
    let dt = cx.dtype(0)?;
    if !dt.is_float() {
        return Err(Error::Unsupported(format!("GridSample on {dt} input")));
    }
    let gdt = cx.dtype(1)?;
    if !gdt.is_float() {
        return Err(bad_dtype("GridSample grid", gdt));
    }
    let (Some(x), Some(g)) = (cx.shape(0)?, cx.shape(1)?) else { return Ok(vec![ValueType::unknown(dt)]) };
    let r = x.len().saturating_sub(2);
    if x.len() < 3 || g.len() != x.len() || g[0] != x[0] || g[r + 1] != r {
        return Err(Error::InvalidModel(format!(
            "GridSample needs X [N, C, D1..Dr] and grid [N, H1..Hr, r], got {} and {}",
            fmt_shape(x),
            fmt_shape(g)
        )));
    }
    if x[2..].contains(&0) {
        return Err(Error::InvalidModel(format!(
            "GridSample input {} has an empty spatial axis",
            fmt_shape(x)
        )));
    }
    let mut out = vec![x[0], x[1]];
    out.extend_from_slice(&g[1..=r]);
    Ok(vec![ValueType::new(dt, out)])
}

/// Reflects `x` into `[lo, hi]` by folding at the borders.
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let range = hi - lo;
    if range <= 0.0 {
        return lo;
    }
    if x < lo {
        let d = lo - x;
        let k = (d / range).floor();
        let r = d - k * range;
        if k % 2.0 == 0.0 { lo + r } else { hi - r }
    } else if x > hi {
        let d = x - hi;
        let k = (d / range).floor();
        let r = d - k * range;
        if k % 2.0 == 0.0 { hi - r } else { lo + r }
    } else {
        x
    }
}

/// The input index read for integer position `i` of an axis of length `len`, or `None`
/// where zero padding applies.
fn grid_pixel(i: i64, len: usize, padding: Padding, bounds: (f64, f64)) -> Option<usize> {
    let last = len as i64 - 1;
    match padding {
        Padding::Zeros => (0..=last).contains(&i).then_some(i as usize),
        Padding::Border => Some(i.clamp(0, last) as usize),
        Padding::Reflection => Some((reflect(i as f64, bounds.0, bounds.1) as i64).clamp(0, last) as usize),
    }
}

/// The sizes and grid of one GridSample call.
struct GridGeometry<'a> {
    batch: usize,
    channels: usize,
    dims: &'a [usize],
    positions: usize,
    /// Per axis, the coordinate range inside which no padding applies.
    bounds: &'a [(f64, f64)],
    grid: &'a [f64],
    grid_is_f32: bool,
}

fn grid_sample_typed<T: Elem + Float>(
    p: &GridParams,
    geo: &GridGeometry,
    x: &Tensor,
    out_shape: &[usize],
) -> Result<Tensor> {
    let GridGeometry { batch, channels, dims, positions, bounds, grid: g, grid_is_f32 } = *geo;
    let r = dims.len();
    let in_size: usize = dims.iter().product();
    let in_strides = strides(dims);
    let xv = x.slice::<T>()?;
    let mut out = vec![T::zero(); batch * channels * positions];
    // Per axis: (input offset, weight) of each tap; the taps of a position are their product.
    let mut axis_taps: Vec<Vec<(usize, f64)>> = vec![Vec::with_capacity(4); r];
    let mut combined: Vec<(usize, T)> = Vec::new();
    let mut scratch: Vec<(usize, T)> = Vec::new();
    for n in 0..batch {
        for pos in 0..positions {
            let gp = &g[(n * positions + pos) * r..(n * positions + pos + 1) * r];
            for (i, taps) in axis_taps.iter_mut().enumerate() {
                taps.clear();
                let len = dims[i];
                // The grid lists coordinates innermost axis first (x, y, z).
                let v = gp[r - 1 - i];
                let mut c = if p.align_corners {
                    (v + 1.0) / 2.0 * (len as f64 - 1.0)
                } else {
                    ((v + 1.0) * len as f64 - 1.0) / 2.0
                };
                if grid_is_f32 {
                    c = c as f32 as f64;
                }
                if p.interp == Interp::Nearest {
                    c = c.round_ties_even();
                }
                let (lo, hi) = bounds[i];
                if c < lo || c > hi {
                    match p.padding {
                        Padding::Border => c = c.clamp(0.0, len as f64 - 1.0),
                        Padding::Reflection => c = reflect(c, lo, hi),
                        Padding::Zeros => {}
                    }
                }
                if !c.is_finite() {
                    continue;
                }
                let base = c.floor();
                let t = c - base;
                let base = base as i64;
                let mut push = |k: i64, w: f64| {
                    if let Some(idx) = grid_pixel(base.saturating_add(k), len, p.padding, bounds[i]) {
                        taps.push((idx * in_strides[i], w));
                    }
                };
                match p.interp {
                    Interp::Nearest => push(0, 1.0),
                    Interp::Linear => {
                        push(0, 1.0 - t);
                        push(1, t);
                    }
                    Interp::Cubic => {
                        for k in -1..=2 {
                            push(k, cubic_weight(t - k as f64, -0.75));
                        }
                    }
                }
            }
            combined.clear();
            combined.push((0, T::one()));
            for taps in &axis_taps {
                std::mem::swap(&mut combined, &mut scratch);
                combined.clear();
                for &(o, w) in &scratch {
                    for &(to, tw) in taps {
                        combined.push((o + to, w * T::from(tw).unwrap_or_else(T::zero)));
                    }
                }
            }
            for c in 0..channels {
                let plane = &xv[(n * channels + c) * in_size..(n * channels + c + 1) * in_size];
                let v = combined.iter().fold(T::zero(), |acc, &(o, w)| acc + w * plane[o]);
                out[(n * channels + c) * positions + pos] = v;
            }
        }
    }
    Tensor::from_vec(out_shape.to_vec(), out)
}

fn grid_sample_eval(cx: &EvalCx) -> Result<Vec<Tensor>> {
    let p = GridParams::parse(cx.attrs)?;
    let (x, grid) = (cx.input(0)?, cx.input(1)?);
    let dt = x.dtype();
    let xs = x.shape();
    let (batch, channels, dims) = (xs[0], xs[1], &xs[2..]);
    let out_shape = cx.out_shape(0)?;
    let positions: usize = out_shape[2..].iter().product();
    let g = grid.to_f64_vec();
    let grid_is_f32 = grid.dtype() != DType::F64;
    let bounds: Vec<(f64, f64)> = dims
        .iter()
        .map(|&d| if p.align_corners { (0.0, d as f64 - 1.0) } else { (-0.5, d as f64 - 0.5) })
        .collect();
    let xc = promote(x);
    let geo = GridGeometry { batch, channels, dims, positions, bounds: &bounds, grid: &g, grid_is_f32 };
    let out = crate::with_float!(compute_dtype(dt), "GridSample", T => grid_sample_typed::<T>(&p, &geo, &xc, out_shape)?);
    Ok(vec![demote(out, dt)])
}

// ---------------------------------------------------------------------------------------
// AffineGrid
// ---------------------------------------------------------------------------------------

/// Checks theta against `size` and returns the spatial dims of the grid.
fn affine_dims(theta: &[usize], size: &[i64]) -> Result<Vec<usize>> {
    let mut dims = Vec::with_capacity(size.len());
    for &s in size {
        dims.push(
            usize::try_from(s)
                .map_err(|_| Error::InvalidModel(format!("AffineGrid size {s} is negative")))?,
        );
    }
    let r = match dims.len() {
        4 => 2,
        5 => 3,
        k => return Err(Error::InvalidModel(format!("AffineGrid size must have 4 or 5 values, got {k}"))),
    };
    if theta != [dims[0], r, r + 1] {
        return Err(Error::InvalidModel(format!(
            "AffineGrid theta {} must be [{}, {r}, {}] for size {size:?}",
            fmt_shape(theta),
            dims[0],
            r + 1
        )));
    }
    Ok(dims[2..].to_vec())
}

fn affine_grid_infer(cx: &InferCx) -> Result<Vec<ValueType>> {
    let dt = cx.dtype(0)?;
    if !dt.is_float() {
        return Err(bad_dtype("AffineGrid", dt));
    }
    if cx.dtype(1)? != DType::I64 {
        return Err(Error::InvalidModel(format!("AffineGrid size must be int64, got {}", cx.dtype(1)?)));
    }
    let (Some(theta), Some(size)) = (cx.shape(0)?, cx.value(1)?) else {
        return Ok(vec![ValueType::unknown(dt)]);
    };
    let dims = affine_dims(theta, &size.to_i64_vec())?;
    let mut out = vec![theta[0]];
    out.extend_from_slice(&dims);
    out.push(dims.len());
    Ok(vec![ValueType::new(dt, out)])
}

/// The normalized coordinate of index `i` along an axis of `len` points, in [-1, 1]
/// (a single aligned point sits at -1, as in the ONNX reference).
pub fn grid_coord(i: usize, len: usize, align_corners: bool) -> f64 {
    if len <= 1 {
        if align_corners { -1.0 } else { 0.0 }
    } else if align_corners {
        -1.0 + i as f64 * (2.0 / (len - 1) as f64)
    } else {
        let step = 2.0 / len as f64;
        -1.0 + step / 2.0 + i as f64 * step
    }
}

fn affine_grid_eval(cx: &EvalCx) -> Result<Vec<Tensor>> {
    let align = cx.attrs.int_or("align_corners", 0)? != 0;
    let theta_t = cx.input(0)?;
    let dims = affine_dims(theta_t.shape(), &cx.input(1)?.to_i64_vec())?;
    let theta = theta_t.to_f64_vec();
    let r = dims.len();
    let per: usize = dims.iter().product();
    let batch = theta_t.shape()[0];
    let mut out = Vec::with_capacity(batch * per * r);
    let mut idx = vec![0usize; r];
    let mut homo = vec![1.0; r + 1];
    for n in 0..batch {
        let th = &theta[n * r * (r + 1)..(n + 1) * r * (r + 1)];
        idx.iter_mut().for_each(|i| *i = 0);
        for _ in 0..per {
            // Homogeneous point (x, y[, z], 1): x runs along the innermost axis.
            for k in 0..r {
                homo[k] = grid_coord(idx[r - 1 - k], dims[r - 1 - k], align);
            }
            for row in th.chunks_exact(r + 1) {
                out.push(row.iter().zip(&homo).map(|(a, b)| a * b).sum::<f64>());
            }
            for d in (0..r).rev() {
                idx[d] += 1;
                if idx[d] < dims[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    Ok(vec![Tensor::from_vec(cx.out_shape(0)?.to_vec(), out)?.cast(theta_t.dtype())])
}

// ---------------------------------------------------------------------------------------
// RoiAlign
// ---------------------------------------------------------------------------------------

/// The attributes of `RoiAlign`.
pub struct RoiParams {
    pub max: bool,
    pub half_pixel: bool,
    pub out_h: usize,
    pub out_w: usize,
    pub sampling_ratio: usize,
    pub spatial_scale: f64,
}

impl RoiParams {
    pub fn parse(attrs: &Attrs, version: u32) -> Result<RoiParams> {
        let max = match attrs.string_or("mode", "avg")? {
            "avg" => false,
            "max" => true,
            other => return Err(bad_attr("mode", other)),
        };
        let default_coord = if version < 16 { "output_half_pixel" } else { "half_pixel" };
        let half_pixel = match attrs.string_or("coordinate_transformation_mode", default_coord)? {
            "half_pixel" => true,
            "output_half_pixel" => false,
            other => return Err(bad_attr("coordinate_transformation_mode", other)),
        };
        let positive = |name: &str| -> Result<usize> {
            let v = attrs.int_or(name, 1)?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| Error::InvalidModel(format!("attribute '{name}' must be positive, got {v}")))
        };
        let sr = attrs.int_or("sampling_ratio", 0)?;
        Ok(RoiParams {
            max,
            half_pixel,
            out_h: positive("output_height")?,
            out_w: positive("output_width")?,
            sampling_ratio: usize::try_from(sr).map_err(|_| {
                Error::InvalidModel(format!("attribute 'sampling_ratio' must be >= 0, got {sr}"))
            })?,
            spatial_scale: f64::from(attrs.float_or("spatial_scale", 1.0)?),
        })
    }
}

fn roi_align_infer(cx: &InferCx) -> Result<Vec<ValueType>> {
    let p = RoiParams::parse(cx.attrs, cx.version)?;
    let dt = cx.dtype(0)?;
    if !dt.is_float() {
        return Err(bad_dtype("RoiAlign", dt));
    }
    if cx.dtype(1)? != dt {
        return Err(Error::InvalidModel(format!("RoiAlign rois must be {dt} like X, got {}", cx.dtype(1)?)));
    }
    if cx.dtype(2)? != DType::I64 {
        return Err(Error::InvalidModel(format!(
            "RoiAlign batch_indices must be int64, got {}",
            cx.dtype(2)?
        )));
    }
    let (Some(x), Some(rois), Some(bi)) = (cx.shape(0)?, cx.shape(1)?, cx.shape(2)?) else {
        return Ok(vec![ValueType::unknown(dt)]);
    };
    if x.len() != 4 || rois.len() != 2 || rois[1] != 4 || bi != [rois[0]] {
        return Err(Error::InvalidModel(format!(
            "RoiAlign needs X [N, C, H, W], rois [R, 4] and batch_indices [R], got {}, {} and {}",
            fmt_shape(x),
            fmt_shape(rois),
            fmt_shape(bi)
        )));
    }
    Ok(vec![ValueType::new(dt, vec![rois[0], x[1], p.out_h, p.out_w])])
}

/// One bilinear sample of a RoiAlign bin: four plane offsets and their weights.
fn roi_sample(y: f64, x: f64, height: usize, width: usize) -> ([usize; 4], [f64; 4]) {
    if y < -1.0 || y > height as f64 || x < -1.0 || x > width as f64 || height == 0 || width == 0 {
        return ([0; 4], [0.0; 4]);
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let (mut y_low, mut x_low) = (y as usize, x as usize);
    let y_high = if y_low >= height - 1 {
        y_low = height - 1;
        y = y_low as f64;
        y_low
    } else {
        y_low + 1
    };
    let x_high = if x_low >= width - 1 {
        x_low = width - 1;
        x = x_low as f64;
        x_low
    } else {
        x_low + 1
    };
    let (ly, lx) = (y - y_low as f64, x - x_low as f64);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    (
        [y_low * width + x_low, y_low * width + x_high, y_high * width + x_low, y_high * width + x_high],
        [hy * hx, hy * lx, ly * hx, ly * lx],
    )
}

/// The most bilinear samples (times channels) one roi may take before it is refused.
const MAX_ROI_SAMPLES: usize = 1 << 30;

fn roi_align_eval(cx: &EvalCx) -> Result<Vec<Tensor>> {
    let p = RoiParams::parse(cx.attrs, cx.version)?;
    let x = cx.input(0)?;
    let rois = cx.input(1)?.to_f64_vec();
    let batch_indices = cx.input(2)?.to_i64_vec();
    let (batch, channels, height, width) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let plane = height * width;
    let xv = x.to_f64_vec();
    let bins = p.out_h * p.out_w;
    let mut out = vec![0.0f64; batch_indices.len() * channels * bins];
    let offset = if p.half_pixel { 0.5 } else { 0.0 };
    for (r, &b) in batch_indices.iter().enumerate() {
        let b = usize::try_from(b).ok().filter(|&b| b < batch).ok_or_else(|| {
            Error::InvalidInput(format!("RoiAlign batch index {b} is out of range for batch {batch}"))
        })?;
        let roi = &rois[r * 4..r * 4 + 4];
        let [x0, y0, x1, y1] = [0, 1, 2, 3].map(|k| roi[k] * p.spatial_scale - offset);
        let (mut roi_w, mut roi_h) = (x1 - x0, y1 - y0);
        if !p.half_pixel {
            roi_w = roi_w.max(1.0);
            roi_h = roi_h.max(1.0);
        }
        let (bin_h, bin_w) = (roi_h / p.out_h as f64, roi_w / p.out_w as f64);
        let grid =
            |ratio: f64| if p.sampling_ratio > 0 { p.sampling_ratio } else { ratio.ceil().max(0.0) as usize };
        let (grid_h, grid_w) = (grid(bin_h), grid(bin_w));
        if grid_h.saturating_mul(grid_w).saturating_mul(bins).saturating_mul(channels) > MAX_ROI_SAMPLES {
            return Err(Error::InvalidInput(format!(
                "RoiAlign roi {r} needs too many samples ({grid_h}x{grid_w} per bin)"
            )));
        }
        let count = (grid_h * grid_w).max(1) as f64;
        for ph in 0..p.out_h {
            for pw in 0..p.out_w {
                let bin = ph * p.out_w + pw;
                let mut first = true;
                for iy in 0..grid_h {
                    let yy = y0 + ph as f64 * bin_h + (iy as f64 + 0.5) * bin_h / grid_h as f64;
                    for ix in 0..grid_w {
                        let xx = x0 + pw as f64 * bin_w + (ix as f64 + 0.5) * bin_w / grid_w as f64;
                        let (pos, w) = roi_sample(yy, xx, height, width);
                        for c in 0..channels {
                            let src = &xv[(b * channels + c) * plane..(b * channels + c + 1) * plane];
                            let dst = &mut out[(r * channels + c) * bins + bin];
                            let terms = [0, 1, 2, 3].map(|k| w[k] * src.get(pos[k]).copied().unwrap_or(0.0));
                            if p.max {
                                // ONNX pools the largest weighted corner, not the interpolated value.
                                let v = terms.into_iter().fold(f64::NEG_INFINITY, f64::max);
                                *dst = if first { v } else { dst.max(v) };
                            } else {
                                *dst += terms.iter().sum::<f64>();
                            }
                        }
                        first = false;
                    }
                }
                if !p.max {
                    for c in 0..channels {
                        out[(r * channels + c) * bins + bin] /= count;
                    }
                }
            }
        }
    }
    Ok(vec![Tensor::from_vec(cx.out_shape(0)?.to_vec(), out)?.cast(x.dtype())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::{Op, OpKind};

    fn run(op: ImageOp, attrs: Attrs, version: u32, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
        let mut out = Op { kind: OpKind::Image(op), attrs, version }.eval(inputs, 1)?;
        out.pop().ok_or_else(|| Error::Internal("no output".into()))
    }

    #[test]
    fn nearest_upsample_repeats_pixels() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![1u8, 2, 3, 4])?;
        let scales = Tensor::from_vec(vec![4], vec![1.0f32, 1.0, 2.0, 2.0])?;
        let mut attrs = Attrs::new();
        attrs.set("coordinate_transformation_mode", Attr::String("asymmetric".into()));
        attrs.set("nearest_mode", Attr::String("floor".into()));
        let y = run(ImageOp::Resize, attrs, 13, &[Some(&x), None, Some(&scales)])?;
        assert_eq!(y.shape(), &[1, 1, 4, 4]);
        assert_eq!(y.slice::<u8>()?, &[1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
        Ok(())
    }

    #[test]
    fn linear_half_pixel_upsample() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 2], vec![0.0f32, 4.0])?;
        let sizes = Tensor::from_vec(vec![2], vec![1i64, 4])?;
        let mut attrs = Attrs::new();
        attrs.set("mode", Attr::String("linear".into()));
        let y = run(ImageOp::Resize, attrs, 19, &[Some(&x), None, None, Some(&sizes)])?;
        // Source coordinates -0.25, 0.25, 0.75, 1.25 (clamped at the edges).
        assert_eq!(y.slice::<f32>()?, &[0.0, 1.0, 3.0, 4.0]);
        Ok(())
    }

    #[test]
    fn resize_rejects_scales_and_sizes_together() -> Result<()> {
        let x = Tensor::from_vec(vec![2], vec![1.0f32, 2.0])?;
        let scales = Tensor::from_vec(vec![1], vec![2.0f32])?;
        let sizes = Tensor::from_vec(vec![1], vec![4i64])?;
        assert!(
            run(ImageOp::Resize, Attrs::new(), 19, &[Some(&x), None, Some(&scales), Some(&sizes)]).is_err()
        );
        Ok(())
    }

    #[test]
    fn grid_sample_identity_grid_reproduces_input() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![1.0f32, 2.0, 3.0, 4.0])?;
        let mut attrs = Attrs::new();
        attrs.set("align_corners", Attr::Int(1));
        let theta = Tensor::from_vec(vec![1, 2, 3], vec![1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0])?;
        let size = Tensor::from_vec(vec![4], vec![1i64, 1, 2, 2])?;
        let grid = run(ImageOp::AffineGrid, attrs.clone(), 20, &[Some(&theta), Some(&size)])?;
        assert_eq!(grid.slice::<f32>()?, &[-1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0]);
        let y = run(ImageOp::GridSample, attrs, 20, &[Some(&x), Some(&grid)])?;
        assert_eq!(y.slice::<f32>()?, x.slice::<f32>()?);
        // Far outside the input, zero padding reads zeros.
        let far = Tensor::from_vec(vec![1, 1, 1, 2], vec![1e30f32, -1e30])?;
        let mut attrs = Attrs::new();
        attrs.set("mode", Attr::String("cubic".into()));
        let y = run(ImageOp::GridSample, attrs, 20, &[Some(&x), Some(&far)])?;
        assert_eq!(y.slice::<f32>()?, &[0.0]);
        Ok(())
    }

    #[test]
    fn roi_align_averages_a_constant_plane() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 1, 4, 4], vec![2.0f32; 16])?;
        let rois = Tensor::from_vec(vec![1, 4], vec![0.0f32, 0.0, 3.0, 3.0])?;
        let bi = Tensor::from_vec(vec![1], vec![0i64])?;
        let mut attrs = Attrs::new();
        attrs.set("output_height", Attr::Int(2));
        attrs.set("output_width", Attr::Int(2));
        let y = run(ImageOp::RoiAlign, attrs, 16, &[Some(&x), Some(&rois), Some(&bi)])?;
        assert_eq!(y.slice::<f32>()?, &[2.0; 4]);
        let bad = Tensor::from_vec(vec![1], vec![3i64])?;
        assert!(run(ImageOp::RoiAlign, Attrs::new(), 16, &[Some(&x), Some(&rois), Some(&bad)]).is_err());
        Ok(())
    }

    #[test]
    fn degenerate_resizes_do_not_panic() -> Result<()> {
        let x = Tensor::from_vec(vec![1, 3], vec![1.0f32, 2.0, 3.0])?;
        let mut attrs = Attrs::new();
        attrs.set("mode", Attr::String("cubic".into()));
        attrs.set("antialias", Attr::Int(1));
        let sizes = Tensor::from_vec(vec![2], vec![1i64, 0])?;
        let y = run(ImageOp::Resize, attrs.clone(), 19, &[Some(&x), None, None, Some(&sizes)])?;
        assert_eq!(y.shape(), &[1, 0]);
        // A far-away crop window is all extrapolation.
        attrs.set("coordinate_transformation_mode", Attr::String("tf_crop_and_resize".into()));
        attrs.set("extrapolation_value", Attr::Float(9.0));
        let roi = Tensor::from_vec(vec![4], vec![0.0f32, 1e30, 1.0, 2e30])?;
        let sizes = Tensor::from_vec(vec![2], vec![1i64, 2])?;
        let y = run(ImageOp::Resize, attrs, 19, &[Some(&x), Some(&roi), None, Some(&sizes)])?;
        assert_eq!(y.slice::<f32>()?, &[9.0, 9.0]);
        Ok(())
    }
}
