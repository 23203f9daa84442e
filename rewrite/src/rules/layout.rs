//! Rules of the layout family: ops that move, copy or generate elements.
//!
//! Reshapes, transposes, broadcasts, slices, splits, tiles and block rearrangements are
//! single views (or a short chain of views). Concat pads each part and adds (or ors) them
//! (`Lx::concat`). Constant pads are guarded views; reflect/edge/wrap pads concatenate
//! strided (possibly reversed or broadcast) slices of the input along each padded axis.
//! Shape queries and shape-only generators become constants; masks (Trilu, EyeLike,
//! OneHot) compare iota constants and Select. ReverseSequence gathers along the time
//! axis with computed indices. BitCast is Cast between integer (and bool) types of one
//! width, where the two agree bit for bit; a float's bits are computed exactly from its
//! exponent and mantissa in f64 (and back), NaNs mapping to the canonical quiet NaN.

use crate::rules::err;
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{Atom, BinaryFn, UnaryFn};
use ir::ops::layout::slice_plan;
use ir::shape::{normalize_axes, normalize_axis};
use ir::{DType, Result, Tensor};

pub const RULES: &[Rule] = &[
    Rule {
        name: "layout/reshape",
        identity: "Reshape/Flatten/Squeeze/Unsqueeze(x) = View(row-major x under the output shape)",
        action: Action::Lower { ops: &["Reshape", "Flatten", "Squeeze", "Unsqueeze"], apply: reshape },
    },
    Rule {
        name: "layout/transpose",
        identity: "Transpose(x, perm) = View(x, shape s[perm], strides st[perm])",
        action: Action::Lower { ops: &["Transpose"], apply: transpose },
    },
    Rule {
        name: "layout/expand",
        identity: "Expand(x, shape) = View(x broadcast to broadcast(x.shape, shape), stride 0 on new axes)",
        action: Action::Lower { ops: &["Expand"], apply: expand },
    },
    Rule {
        name: "layout/concat",
        identity: "Concat(x1..xn, axis) = pad(x1) + ... + pad(xn), each padded with -0.0/0/false to the full extent",
        action: Action::Lower { ops: &["Concat"], apply: concat },
    },
    Rule {
        name: "layout/split",
        identity: "Split(x)[k] = View(x, axis from Σ sizes[..k], len sizes[k])",
        action: Action::Lower { ops: &["Split"], apply: split },
    },
    Rule {
        name: "layout/slice",
        identity: "Slice(x, starts, ends, axes, steps) = View(x, clamped start, len, step per axis)",
        action: Action::Lower { ops: &["Slice"], apply: slice },
    },
    Rule {
        name: "layout/pad-constant",
        identity: "Pad(x, pads, v) = View(x, guards on the input box, pad v) (Select with v when v is not a constant)",
        action: Action::Lower { ops: &["Pad"], apply: pad_constant },
    },
    Rule {
        name: "layout/pad-mirror",
        identity: "Pad reflect/edge/wrap(x) = Concat along each axis of strided slices (steps +1, -1, 0) of x",
        action: Action::Lower { ops: &["Pad"], apply: pad_mirror },
    },
    Rule {
        name: "layout/tile",
        identity: "Tile(x, r) = reshape(broadcast(reshape(x, [1,d0,1,d1..]), [r0,d0,r1,d1..]), [r0·d0, ..])",
        action: Action::Lower { ops: &["Tile"], apply: tile },
    },
    Rule {
        name: "layout/shape",
        identity: "Shape(x)[start:end] = Const(x.shape[start:end]); Size(x) = Const(numel(x))",
        action: Action::Lower { ops: &["Shape", "Size"], apply: shape_size },
    },
    Rule {
        name: "layout/constant-of-shape",
        identity: "ConstantOfShape(shape, value) = View(Const(value), broadcast to shape)",
        action: Action::Lower { ops: &["ConstantOfShape"], apply: constant_of_shape },
    },
    Rule {
        name: "layout/range",
        identity: "Range(s, l, d) = cast(s + iota(n)·d) computed in f64 (f32 for f16/bf16 with stash_type 1)",
        action: Action::Lower { ops: &["Range"], apply: range },
    },
    Rule {
        name: "layout/eye-like",
        identity: "EyeLike(x, k) = cast(iota_col - iota_row == k)",
        action: Action::Lower { ops: &["EyeLike"], apply: eye_like },
    },
    Rule {
        name: "layout/trilu",
        identity: "Trilu(x, k) = Select(iota_col - iota_row >= k (upper) or <= k (lower), x, 0)",
        action: Action::Lower { ops: &["Trilu"], apply: trilu },
    },
    Rule {
        name: "layout/depth-to-space",
        identity: "DepthToSpace(x) = reshape(transpose(reshape(x, [n,b,b,c',h,w] DCR | [n,c',b,b,h,w] CRD)), [n,c',h·b,w·b])",
        action: Action::Lower { ops: &["DepthToSpace"], apply: depth_to_space },
    },
    Rule {
        name: "layout/space-to-depth",
        identity: "SpaceToDepth(x) = reshape(transpose(reshape(x, [n,c,h/b,b,w/b,b]), [0,3,5,1,2,4]), [n,c·b²,h/b,w/b])",
        action: Action::Lower { ops: &["SpaceToDepth"], apply: space_to_depth },
    },
    Rule {
        name: "layout/center-crop-pad",
        identity: "CenterCropPad(x, shape) = View(x, zero pads/crops of (t - n)/2 before and the rest after)",
        action: Action::Lower { ops: &["CenterCropPad"], apply: center_crop_pad },
    },
    Rule {
        name: "layout/reverse-sequence",
        identity: "ReverseSequence(x, lens) = Gather_time(x, t < lens[b] ? lens[b] - 1 - t : t)",
        action: Action::Lower { ops: &["ReverseSequence"], apply: reverse_sequence },
    },
    Rule {
        name: "layout/one-hot",
        identity: "OneHot(i, depth, [off, on]) = Select(iota_axis == (i < 0 ? i + depth : i), on, off)",
        action: Action::Lower { ops: &["OneHot"], apply: one_hot },
    },
    Rule {
        name: "layout/bitcast",
        identity: "BitCast(x) = Cast between ints/bool of one width (wraps); floats <-> bits by exact exponent/mantissa arithmetic in f64",
        action: Action::Lower { ops: &["BitCast"], apply: bit_cast },
    },
];


/// The static output shape of the output this call builds.
pub(crate) fn out_shape(n: &HlNode) -> Result<Vec<usize>> {
    n.ty.shape.clone().ok_or_else(|| err("output shape is not static"))
}

/// An optional integer input that must be a constant: `None` when omitted.
pub(crate) fn const_ints(lx: &Lx, args: &[Option<Id>], i: usize, what: &str) -> Result<Option<Vec<i64>>> {
    match args.get(i).copied().flatten() {
        None => Ok(None),
        Some(x) => lx.const_i64s(x, what).map(Some),
    }
}

/// Integers given as attribute `name` before opset `since` and as input `i` from it on.
fn ints_attr_or_input(lx: &Lx, n: &HlNode, args: &[Option<Id>], since: u32, name: &str, i: usize) -> Result<Option<Vec<i64>>> {
    if n.op.version < since {
        Ok(n.op.attrs.ints(name)?.map(<[i64]>::to_vec))
    } else {
        const_ints(lx, args, i, name)
    }
}

/// A one-element tensor (shape `[]`, `[1]`, ...) viewed as a scalar.
pub(crate) fn as_scalar(lx: &mut Lx, x: Id) -> Result<Id> {
    lx.reshape(x, &[])
}

/// Element `i` of a tensor (flattened), as a scalar view.
fn element(lx: &mut Lx, x: Id, i: usize) -> Result<Id> {
    let n = lx.numel(x)?;
    let flat = lx.reshape(x, &[n])?;
    let one = lx.strided(flat, &[(i as i64, 1, 1)])?;
    lx.reshape(one, &[])
}

/// `(start, len, step)` over the whole of every axis but `axis`, which gets `sel`.
fn along(shape: &[usize], axis: usize, sel: (i64, usize, i64)) -> Vec<(i64, usize, i64)> {
    shape.iter().enumerate().map(|(d, &n)| if d == axis { sel } else { (0, n, 1) }).collect()
}

// ---- reshapes, transposes, broadcasts ---------------------------------------------------

fn reshape(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let out = out_shape(n)?;
    lx.reshape(x, &out).map(Some)
}

fn transpose(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let r = lx.rank(x)?;
    let perm: Vec<usize> = match n.op.attrs.ints("perm")? {
        None => (0..r).rev().collect(),
        Some(p) => p
            .iter()
            .map(|&a| usize::try_from(a).map_err(|_| err(format!("perm {p:?} has a negative axis"))))
            .collect::<Result<_>>()?,
    };
    lx.transpose(x, &perm).map(Some)
}

fn expand(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    lx.broadcast_to(x, &out_shape(n)?).map(Some)
}

fn concat(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let xs: Vec<Id> = (0..args.len()).map(|i| arg(args, i)).collect::<Result<_>>()?;
    let out = out_shape(n)?;
    let axis = normalize_axis(n.op.attrs.req_int("axis")?, out.len())?;
    lx.concat(&xs, axis).map(Some)
}

/// Split's axis and output sizes (as the reference reads them).
fn split_sizes(lx: &Lx, n: &HlNode, args: &[Option<Id>], shape: &[usize]) -> Result<(usize, Vec<usize>)> {
    let outputs = n.num_outputs;
    let axis = normalize_axis(n.op.attrs.int_or("axis", 0)?, shape.len())?;
    let split = ints_attr_or_input(lx, n, args, 13, "split", 1)?;
    let dim = shape[axis];
    let sizes = match split {
        Some(s) => s
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| err(format!("split size {d} is negative"))))
            .collect::<Result<Vec<_>>>()?,
        None => {
            let chunk = dim.div_ceil(outputs.max(1));
            let mut sizes = vec![chunk; outputs];
            if let Some(last) = sizes.last_mut() {
                *last = dim.saturating_sub(chunk * (outputs - 1));
            }
            sizes
        }
    };
    if sizes.len() != outputs || sizes.iter().sum::<usize>() != dim {
        return Err(err(format!("split sizes {sizes:?} do not split dim {dim} into {outputs} outputs")));
    }
    Ok((axis, sizes))
}

fn split(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let s = lx.shape(x)?;
    let (axis, sizes) = split_sizes(lx, n, args, &s)?;
    let start: usize = sizes[..n.output].iter().sum();
    let len = sizes[n.output];
    lx.strided(x, &along(&s, axis, (start as i64, len, 1))).map(Some)
}

fn slice(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let s = lx.shape(x)?;
    let (starts, ends, axes, steps) = if n.op.version < 10 {
        let req = |name: &str| -> Result<Vec<i64>> {
            n.op.attrs.ints(name)?.map(<[i64]>::to_vec).ok_or_else(|| err(format!("attribute '{name}' is missing")))
        };
        (req("starts")?, req("ends")?, n.op.attrs.ints("axes")?.map(<[i64]>::to_vec), None)
    } else {
        let starts = const_ints(lx, args, 1, "starts")?.ok_or_else(|| err("starts is missing"))?;
        let ends = const_ints(lx, args, 2, "ends")?.ok_or_else(|| err("ends is missing"))?;
        (starts, ends, const_ints(lx, args, 3, "axes")?, const_ints(lx, args, 4, "steps")?)
    };
    let sel: Vec<(i64, usize, i64)> = slice_plan(&s, &starts, &ends, axes.as_deref(), steps.as_deref())?
        .into_iter()
        .map(|a| (a.start, a.len, a.step))
        .collect();
    lx.strided(x, &sel).map(Some)
}

// ---- Pad, CenterCropPad ------------------------------------------------------------------

/// Pad's mode and per-axis begins/ends over the whole rank.
fn pad_params(lx: &Lx, n: &HlNode, args: &[Option<Id>], rank: usize) -> Result<(String, Vec<i64>, Vec<i64>)> {
    let mode = n.op.attrs.string_or("mode", "constant")?.to_string();
    let (pads, axes) = if n.op.version < 11 {
        let pads = n.op.attrs.ints("pads")?.ok_or_else(|| err("attribute 'pads' is missing"))?.to_vec();
        (pads, None)
    } else {
        let axes = if n.op.version >= 18 { const_ints(lx, args, 3, "axes")? } else { None };
        (const_ints(lx, args, 1, "pads")?.ok_or_else(|| err("pads is missing"))?, axes)
    };
    let axes = match axes {
        Some(a) => normalize_axes(&a, rank)?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(err(format!("pads {pads:?} must have 2 values per padded axis")));
    }
    let (mut begins, mut ends) = (vec![0; rank], vec![0; rank]);
    for (k, &a) in axes.iter().enumerate() {
        begins[a] = pads[k];
        ends[a] = pads[axes.len() + k];
    }
    Ok((mode, begins, ends))
}

/// Whether a constant fill `v` of `dtype` survives a view's attribute encoding exactly (an
/// f32 or an integer), so it can be the `pad` of a guarded view.
fn pad_value_exact(v: f64, dtype: DType) -> bool {
    if dtype.is_float() {
        v.is_nan() || (v as f32) as f64 == v
    } else {
        v.abs() < 9.0e15
    }
}

/// `x` padded by `begins`/`ends` (negative ones crop) with the one-element `fill` (zero when
/// `None`): a guarded view when the fill is a known, exactly encodable constant, else a
/// zero-padded view and a Select of the fill outside the input box.
pub(crate) fn pad_with(lx: &mut Lx, x: Id, begins: &[i64], ends: &[i64], fill: Option<Id>) -> Result<Id> {
    let Some(fill) = fill else { return lx.pad(x, begins, ends, 0.0) };
    if let Some(t) = lx.value(fill)
        && t.numel() == 1
    {
        let v = t.to_f64_vec()[0];
        if pad_value_exact(v, t.dtype()) {
            return lx.pad(x, begins, ends, v);
        }
    }
    let shape = lx.shape(x)?;
    let padded = lx.pad(x, begins, ends, 0.0)?;
    if !begins.iter().chain(ends).any(|&p| p > 0) {
        return Ok(padded);
    }
    let inside = lx.full(DType::Bool, &shape, 1.0)?;
    let mask = lx.pad(inside, begins, ends, 0.0)?;
    let f = as_scalar(lx, fill)?;
    lx.select(mask, padded, f)
}

fn pad_constant(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let dtype = lx.dtype(x)?;
    let (mode, begins, ends) = pad_params(lx, n, args, lx.rank(x)?)?;
    if mode != "constant" {
        return Ok(None);
    }
    if n.op.version < 11 {
        let v = Tensor::scalar(n.op.attrs.float_or("value", 0.0)?).cast(dtype);
        let c = lx.konst(v);
        return pad_with(lx, x, &begins, &ends, Some(c)).map(Some);
    }
    let fill = match args.get(2).copied().flatten() {
        Some(c) if lx.numel(c)? == 1 => Some(c),
        Some(c) if lx.numel(c)? > 1 => return Err(err("Pad constant_value must be a single value")),
        _ => None,
    };
    pad_with(lx, x, &begins, &ends, fill).map(Some)
}

/// For each output position of one axis, the input index it reads (reflect/edge/wrap).
fn pad_axis_map(n: usize, begin: i64, end: i64, mode: &str) -> Result<Vec<usize>> {
    let lo = (-begin.min(0)) as usize;
    let m = n as i64 + begin.min(0) + end.min(0);
    if m < 0 {
        return Err(err(format!("pads {begin},{end} crop more than {n} elements")));
    }
    let out = m + begin.max(0) + end.max(0);
    if m == 0 && out > 0 {
        return Err(err(format!("cannot pad an empty axis in mode {mode}")));
    }
    let before = begin.max(0);
    (0..out)
        .map(|i| {
            let k = i - before;
            let j = if (0..m).contains(&k) {
                k
            } else {
                match mode {
                    "edge" => k.clamp(0, m - 1),
                    "wrap" => k.rem_euclid(m),
                    "reflect" if m == 1 => 0,
                    "reflect" => {
                        let period = 2 * (m - 1);
                        let r = k.rem_euclid(period);
                        if r >= m { period - r } else { r }
                    }
                    other => return Err(err(format!("Pad mode '{other}'"))),
                }
            };
            Ok(lo + j as usize)
        })
        .collect()
}

/// `x` re-indexed along `axis` by `map` (output position -> input index), as a
/// concatenation of strided slices: maximal runs of a constant step (+1, -1, 0, ...).
pub(crate) fn index_map_view(lx: &mut Lx, x: Id, axis: usize, map: &[usize]) -> Result<Id> {
    let s = lx.shape(x)?;
    if map.len() == s[axis] && map.iter().enumerate().all(|(i, &j)| i == j) {
        return Ok(x);
    }
    if map.is_empty() {
        return lx.strided(x, &along(&s, axis, (0, 0, 1)));
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < map.len() {
        let start = map[i] as i64;
        let step = if i + 1 < map.len() { map[i + 1] as i64 - start } else { 1 };
        let mut len = 1;
        while i + len < map.len() && map[i + len] as i64 == start + step * len as i64 {
            len += 1;
        }
        let step = if len == 1 { 1 } else { step };
        parts.push(lx.strided(x, &along(&s, axis, (start, len, step)))?);
        i += len;
    }
    lx.concat(&parts, axis)
}

fn pad_mirror(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let s = lx.shape(x)?;
    let (mode, begins, ends) = pad_params(lx, n, args, s.len())?;
    if mode == "constant" {
        return Ok(None);
    }
    let mut y = x;
    for d in 0..s.len() {
        if begins[d] == 0 && ends[d] == 0 {
            continue;
        }
        let map = pad_axis_map(s[d], begins[d], ends[d], &mode)?;
        y = index_map_view(lx, y, d, &map)?;
    }
    Ok(Some(y))
}

fn center_crop_pad(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let s = lx.shape(x)?;
    let target = const_ints(lx, args, 1, "shape")?.ok_or_else(|| err("shape is missing"))?;
    let axes = match n.op.attrs.ints("axes")? {
        Some(a) => normalize_axes(a, s.len())?,
        None => (0..s.len()).collect(),
    };
    if target.len() != axes.len() {
        return Err(err("shape and axes differ in length"));
    }
    let (mut begins, mut ends) = (vec![0i64; s.len()], vec![0i64; s.len()]);
    for (&a, &t) in axes.iter().zip(&target) {
        let diff = t - s[a] as i64;
        (begins[a], ends[a]) = (diff / 2, diff - diff / 2);
    }
    lx.pad(x, &begins, &ends, 0.0).map(Some)
}

// ---- Tile, DepthToSpace, SpaceToDepth --------------------------------------------------

fn tile(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let s = lx.shape(x)?;
    let reps = const_ints(lx, args, 1, "repeats")?.ok_or_else(|| err("repeats is missing"))?;
    if reps.len() != s.len() {
        return Err(err("repeats must have one value per axis"));
    }
    let mut inter = Vec::new();
    let mut full = Vec::new();
    for (&d, &r) in s.iter().zip(&reps) {
        let r = usize::try_from(r).map_err(|_| err(format!("repeat {r} is negative")))?;
        inter.extend([1, d]);
        full.extend([r, d]);
    }
    let y = lx.reshape(x, &inter)?;
    let y = lx.broadcast_to(y, &full)?;
    lx.reshape(y, &out_shape(n)?).map(Some)
}

fn blocksize(n: &HlNode) -> Result<usize> {
    let b = n.op.attrs.req_int("blocksize")?;
    usize::try_from(b).ok().filter(|&b| b > 0).ok_or_else(|| err(format!("blocksize {b} must be positive")))
}

fn nchw(lx: &Lx, x: Id) -> Result<[usize; 4]> {
    match lx.shape(x)?[..] {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref s => Err(err(format!("input must have rank 4, has {s:?}"))),
    }
}

fn depth_to_space(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let b = blocksize(n)?;
    let [bn, c, h, w] = nchw(lx, x)?;
    if c % (b * b) != 0 {
        return Err(err(format!("channels {c} are not divisible by blocksize² ({b}²)")));
    }
    let cb = c / (b * b);
    let (inner, perm): (Vec<usize>, [usize; 6]) = match n.op.attrs.string_or("mode", "DCR")? {
        "DCR" => (vec![bn, b, b, cb, h, w], [0, 3, 4, 1, 5, 2]),
        "CRD" => (vec![bn, cb, b, b, h, w], [0, 1, 4, 2, 5, 3]),
        other => return Err(err(format!("mode '{other}' is neither DCR nor CRD"))),
    };
    let y = lx.reshape(x, &inner)?;
    let y = lx.transpose(y, &perm)?;
    lx.reshape(y, &[bn, cb, h * b, w * b]).map(Some)
}

fn space_to_depth(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let b = blocksize(n)?;
    let [bn, c, h, w] = nchw(lx, x)?;
    if h % b != 0 || w % b != 0 {
        return Err(err(format!("height {h} and width {w} must be divisible by blocksize {b}")));
    }
    let y = lx.reshape(x, &[bn, c, h / b, b, w / b, b])?;
    let y = lx.transpose(y, &[0, 3, 5, 1, 2, 4])?;
    lx.reshape(y, &[bn, c * b * b, h / b, w / b]).map(Some)
}

// ---- shape queries and generators ---------------------------------------------------------

fn shape_size(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let s = lx.shape(x)?;
    if n.op.kind.name() == "Size" {
        return Ok(Some(lx.konst(Tensor::scalar(s.iter().product::<usize>() as i64))));
    }
    let r = s.len() as i64;
    let (start, end) =
        if n.op.version >= 15 { (n.op.attrs.int_or("start", 0)?, n.op.attrs.int_or("end", r)?) } else { (0, r) };
    let clamp = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
    let (a, b) = (clamp(start), clamp(end));
    let dims: Vec<i64> = s[a..b.max(a)].iter().map(|&d| d as i64).collect();
    Ok(Some(lx.konst(Tensor::from_i64s(dims))))
}

fn constant_of_shape(lx: &mut Lx, n: &HlNode, _args: &[Option<Id>]) -> Result<Option<Id>> {
    let value = match n.op.attrs.tensor("value")? {
        None => Tensor::scalar(0f32),
        Some(t) if t.numel() == 1 => t.clone().reshaped(vec![])?,
        Some(_) => return Err(err("ConstantOfShape 'value' must have one element")),
    };
    let c = lx.konst(value);
    lx.broadcast_to(c, &out_shape(n)?).map(Some)
}

fn range(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (start, delta) = (arg(args, 0)?, arg(args, 2)?);
    let dtype = n.ty.dtype;
    let out = out_shape(n)?;
    let stash_f32 = n.op.attrs.int_or("stash_type", if n.op.version >= 27 { 1 } else { 11 })? == 1;
    let compute = if dtype.is_int() {
        dtype
    } else if matches!(dtype, DType::F16 | DType::BF16) && stash_f32 {
        DType::F32
    } else {
        DType::F64
    };
    let s = as_scalar(lx, start)?;
    let d = as_scalar(lx, delta)?;
    let s = lx.cast(s, compute)?;
    let d = lx.cast(d, compute)?;
    let i = lx.iota(compute, &out, 0)?;
    let id = lx.mul(i, d)?;
    let y = lx.add(s, id)?;
    lx.cast(y, dtype).map(Some)
}

/// `iota_col - iota_row` (i64) over the last two axes `[rows, cols]`.
fn diagonal_offsets(lx: &mut Lx, rows: usize, cols: usize) -> Result<Id> {
    let r = lx.iota(DType::I64, &[rows, cols], 0)?;
    let c = lx.iota(DType::I64, &[rows, cols], 1)?;
    lx.sub(c, r)
}

fn eye_like(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let _ = arg(args, 0)?;
    let out = out_shape(n)?;
    let [rows, cols] = out[..] else { return Err(err("EyeLike input must have rank 2")) };
    let k = n.op.attrs.int_or("k", 0)?;
    let diag = diagonal_offsets(lx, rows, cols)?;
    let on = lx.binary_scalar(BinaryFn::Eq, diag, k as f64)?;
    lx.cast(on, n.ty.dtype).map(Some)
}

fn trilu(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let s = lx.shape(x)?;
    if s.len() < 2 {
        return Err(err("Trilu input must have rank >= 2"));
    }
    let (rows, cols) = (s[s.len() - 2], s[s.len() - 1]);
    let k = match args.get(1).copied().flatten() {
        None => lx.scalar(DType::I64, 0.0)?,
        Some(k) => match lx.value(k) {
            Some(t) => lx.konst(Tensor::scalar(t.scalar_i64()?)),
            None => as_scalar(lx, k)?,
        },
    };
    let upper = n.op.attrs.int_or("upper", 1)? != 0;
    let diag = diagonal_offsets(lx, rows, cols)?;
    let keep = lx.binary(if upper { BinaryFn::Ge } else { BinaryFn::Le }, diag, k)?;
    let zero = lx.scalar(lx.dtype(x)?, 0.0)?;
    lx.select(keep, x, zero).map(Some)
}

fn reverse_sequence(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let lens = arg(args, 1)?;
    let s = lx.shape(x)?;
    let batch = n.op.attrs.int_or("batch_axis", 1)?;
    let time = n.op.attrs.int_or("time_axis", 0)?;
    let (batch, time) = match (batch, time) {
        (0, 1) => (0usize, 1usize),
        (1, 0) => (1, 0),
        _ => return Err(err("batch_axis and time_axis must be 0 and 1 in some order")),
    };
    if s.len() < 2 {
        return Err(err("ReverseSequence input must have rank >= 2"));
    }
    // Index over the first two axes: t < len[b] ? len[b] - 1 - t : t.
    let head = [s[0], s[1]];
    let t = lx.iota(DType::I64, &head, time)?;
    let mut lshape = [1usize, 1];
    lshape[batch] = s[batch];
    let l = lx.cast(lens, DType::I64)?;
    let l = lx.reshape(l, &lshape)?;
    let l = lx.broadcast_to(l, &head)?;
    let inside = lx.binary(BinaryFn::Lt, t, l)?;
    let last = lx.binary_scalar(BinaryFn::Sub, l, 1.0)?;
    let rev = lx.sub(last, t)?;
    let idx = lx.select(inside, rev, t)?;
    let mut ishape = head.to_vec();
    ishape.extend(std::iter::repeat_n(1, s.len() - 2));
    let idx = lx.reshape(idx, &ishape)?;
    let idx = lx.broadcast_to(idx, &s)?;
    lx.atom(Atom::Gather { axis: time }, &[x, idx]).map(Some)
}

fn one_hot(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let indices = arg(args, 0)?;
    let values = arg(args, 2)?;
    let out = out_shape(n)?;
    let is = lx.shape(indices)?;
    let axis = normalize_axis(n.op.attrs.int_or("axis", -1)?, is.len() + 1)?;
    let depth = out[axis];
    if lx.numel(values)? != 2 {
        return Err(err("OneHot values must hold two elements"));
    }
    let off = element(lx, values, 0)?;
    let on = element(lx, values, 1)?;
    let i = lx.cast(indices, DType::I64)?;
    let i = lx.normalize_index(i, depth)?;
    let mut ishape = is.clone();
    ishape.insert(axis, 1);
    let i = lx.reshape(i, &ishape)?;
    let pos = lx.iota(DType::I64, &out, axis)?;
    let hit = lx.binary(BinaryFn::Eq, pos, i)?;
    lx.select(hit, on, off).map(Some)
}

/// `(mantissa bits, exponent bits)` of a float format.
fn float_format(d: DType) -> Option<(i32, i32)> {
    match d {
        DType::F64 => Some((52, 11)),
        DType::F32 => Some((23, 8)),
        DType::F16 => Some((10, 5)),
        DType::BF16 => Some((7, 8)),
        _ => None,
    }
}

/// `2^k` for `k` in the normal range of f64, exactly.
fn pow2(k: i32) -> f64 {
    f64::from_bits(((k.clamp(-1022, 1023) + 1023) as u64) << 52)
}

/// `x · 2^k` (f64), exact when the result is representable: in steps that stay normal.
fn mul_pow2(lx: &mut Lx, x: Id, k: i32) -> Result<Id> {
    let mut y = x;
    let mut rest = k;
    while rest != 0 {
        let step = rest.clamp(-1000, 1000);
        y = lx.binary_scalar(BinaryFn::Mul, y, pow2(step))?;
        rest -= step;
    }
    Ok(y)
}

/// The bit pattern of float `x` (format `(mb, eb)`) as an i64 holding the pattern's value
/// read as a signed integer of the format's width: computed exactly in f64 from the
/// exponent (`floor(log2|x|)`, corrected to be exact) and the mantissa. NaNs become the
/// canonical quiet NaN (payload and sign are not observable through arithmetic).
fn float_to_bits(lx: &mut Lx, x: Id, (mb, eb): (i32, i32)) -> Result<Id> {
    let bias = (1 << (eb - 1)) - 1;
    let (emin, emax) = (1 - bias, bias);
    let width = 1 + eb + mb;
    let x = lx.cast(x, DType::F64)?;
    let a = lx.unary(UnaryFn::Abs, x)?;
    let two = lx.scalar(DType::F64, 2.0)?;
    // e = floor(log2 a), with one correction step each way for the rounding of the log.
    let l = lx.unary(UnaryFn::Log, a)?;
    let l = lx.binary_scalar(BinaryFn::Div, l, std::f64::consts::LN_2)?;
    let e = lx.unary(UnaryFn::Floor, l)?;
    let p = lx.binary(BinaryFn::Pow, two, e)?;
    let over = lx.binary(BinaryFn::Gt, p, a)?;
    let e_dn = lx.binary_scalar(BinaryFn::Sub, e, 1.0)?;
    let e = lx.select(over, e_dn, e)?;
    let p = lx.binary(BinaryFn::Pow, two, e)?;
    let p2 = lx.binary_scalar(BinaryFn::Mul, p, 2.0)?;
    let under = lx.binary(BinaryFn::Le, p2, a)?;
    let e_up = lx.binary_scalar(BinaryFn::Add, e, 1.0)?;
    let e = lx.select(under, e_up, e)?;
    let e = lx.binary_scalar(BinaryFn::Min, e, emax as f64)?;
    let e = lx.binary_scalar(BinaryFn::Max, e, emin as f64)?;
    // Normal: a = (1 + m/2^mb)·2^e; subnormal (and zero): a = m·2^(emin - mb).
    let normal = lx.binary_scalar(BinaryFn::Ge, a, pow2(emin))?;
    let pe = lx.binary(BinaryFn::Pow, two, e)?;
    let q = lx.div(a, pe)?;
    let q = lx.binary_scalar(BinaryFn::Sub, q, 1.0)?;
    let m_norm = lx.binary_scalar(BinaryFn::Mul, q, pow2(mb))?;
    let m_sub = mul_pow2(lx, a, mb - emin)?;
    let m = lx.select(normal, m_norm, m_sub)?;
    let biased = lx.binary_scalar(BinaryFn::Add, e, bias as f64)?;
    let zero = lx.scalar(DType::F64, 0.0)?;
    let ex = lx.select(normal, biased, zero)?;
    // Infinities and NaNs: all-ones exponent, mantissa 0 or the quiet bit.
    let inf = lx.binary_scalar(BinaryFn::Eq, a, f64::INFINITY)?;
    let nan = lx.unary(UnaryFn::IsNaN, x)?;
    let special = lx.binary(BinaryFn::Or, inf, nan)?;
    let quiet = lx.scalar(DType::F64, pow2(mb - 1))?;
    let m_special = lx.select(nan, quiet, zero)?;
    let m = lx.select(special, m_special, m)?;
    let top = lx.scalar(DType::F64, pow2(eb) - 1.0)?;
    let ex = lx.select(special, top, ex)?;
    let m = lx.cast(m, DType::I64)?;
    let ex = lx.cast(ex, DType::I64)?;
    let hi = lx.binary_scalar(BinaryFn::Mul, ex, pow2(mb))?;
    let bits = lx.add(hi, m)?;
    // The sign bit (also of -0.0, whose reciprocal is -inf) makes the value negative.
    let below = lx.binary_scalar(BinaryFn::Lt, x, 0.0)?;
    let r = lx.unary(UnaryFn::Recip, x)?;
    let r_below = lx.binary_scalar(BinaryFn::Lt, r, 0.0)?;
    let neg = lx.binary(BinaryFn::Or, below, r_below)?;
    let signed = lx.binary_scalar(BinaryFn::Add, bits, -pow2(width - 1))?;
    lx.select(neg, signed, bits)
}

/// The float of format `(mb, eb)` whose bit pattern is the low bits of integer `x`, as
/// `to`: sign, exponent and mantissa are split off with floor division and Python modulo
/// (exact for negative patterns too) and the value is rebuilt exactly in f64.
fn bits_to_float(lx: &mut Lx, x: Id, (mb, eb): (i32, i32), to: DType) -> Result<Id> {
    let bias = (1 << (eb - 1)) - 1;
    let emin = 1 - bias;
    let v = lx.cast(x, DType::I64)?;
    let m = lx.binary_scalar(BinaryFn::Mod, v, pow2(mb))?;
    let t = lx.sub(v, m)?;
    let t = lx.binary_scalar(BinaryFn::Div, t, pow2(mb))?;
    let ex = lx.binary_scalar(BinaryFn::Mod, t, pow2(eb))?;
    let t2 = lx.binary_scalar(BinaryFn::Mod, t, pow2(eb + 1))?;
    let neg = lx.binary_scalar(BinaryFn::Ge, t2, pow2(eb))?;
    let mf = lx.cast(m, DType::F64)?;
    let ef = lx.cast(ex, DType::F64)?;
    let two = lx.scalar(DType::F64, 2.0)?;
    let frac = lx.binary_scalar(BinaryFn::Mul, mf, pow2(-mb))?;
    let frac = lx.binary_scalar(BinaryFn::Add, frac, 1.0)?;
    let k = lx.binary_scalar(BinaryFn::Sub, ef, bias as f64)?;
    let scale = lx.binary(BinaryFn::Pow, two, k)?;
    let normal = lx.mul(frac, scale)?;
    let sub = mul_pow2(lx, mf, emin - mb)?;
    let is_sub = lx.binary_scalar(BinaryFn::Eq, ex, 0.0)?;
    let is_special = lx.binary_scalar(BinaryFn::Eq, ex, pow2(eb) - 1.0)?;
    let m_zero = lx.binary_scalar(BinaryFn::Eq, m, 0.0)?;
    let inf = lx.scalar(DType::F64, f64::INFINITY)?;
    let nan = lx.scalar(DType::F64, f64::NAN)?;
    let special = lx.select(m_zero, inf, nan)?;
    let val = lx.select(is_sub, sub, normal)?;
    let val = lx.select(is_special, special, val)?;
    let negv = lx.unary(UnaryFn::Neg, val)?;
    let val = lx.select(neg, negv, val)?;
    lx.cast(val, to)
}

fn bit_cast(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let from = lx.dtype(x)?;
    let to = n.ty.dtype;
    if from.size() != to.size() {
        return Err(err(format!("cannot bit-cast {from} to {to}: widths differ")));
    }
    let bits = match float_format(from) {
        Some(f) => float_to_bits(lx, x, f)?,
        None => x,
    };
    match float_format(to) {
        Some(f) => bits_to_float(lx, bits, f, to).map(Some),
        None => lx.cast(bits, to).map(Some),
    }
}
