//! Rules of the image family.
//!
//! `Resize`/`Upsample` with static shapes: the source positions and weights of every
//! output position are constants (planned by the reference's own code, `ir::ops::image`),
//! so nearest mode is one constant-index Gather per axis and linear/cubic (antialias,
//! exclude_outside included) one Gather of the taps, a multiply by constant weights and a
//! sum per resized axis, in the reference's pass order; tf_crop_and_resize extrapolation is
//! a Select with a constant mask. `GridSample` computes its indices and weights from the
//! grid (in f64, as the reference does) and gathers each tap; `AffineGrid` is a MatMul of
//! constant base coordinates with theta; `RoiAlign` computes its bilinear sample positions
//! from the rois (a static sample count: `sampling_ratio > 0`, or constant rois).

use crate::rules::{compute_dtype, err};
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{Atom, BinaryFn, ReduceFn, UnaryFn, row_major};
use ir::ops::image::{
    GridParams, Interp, Padding, RoiParams, filter_taps, grid_coord, identity_axis, nearest_table, plan_resize,
};
use ir::{DType, Result, Tensor};
use std::sync::Arc;

pub const RULES: &[Rule] = &[
    Rule {
        name: "image/resize",
        identity: "Resize(x) = per resized axis: Sum_k w[o,k] * Gather(x, idx[o,k]) (constant idx, w); nearest: Gather(x, idx[o])",
        action: Action::Lower { ops: &["Resize", "Upsample"], apply: resize },
    },
    Rule {
        name: "image/gridsample",
        identity: "GridSample(x, g) = Sum over taps of w(g) * Gather(x, idx(g)) (masked for zero padding)",
        action: Action::Lower { ops: &["GridSample"], apply: grid_sample },
    },
    Rule {
        name: "image/affinegrid",
        identity: "AffineGrid(theta, size) = MatMul(base [P, r+1] (constant), theta^T)",
        action: Action::Lower { ops: &["AffineGrid"], apply: affine_grid },
    },
    Rule {
        name: "image/roialign",
        identity: "RoiAlign(x, rois, b) = Sum/Max over bilinear samples of w(rois) * Gather(x[b], pos(rois))",
        action: Action::Lower { ops: &["RoiAlign"], apply: roi_align },
    },
];

// ---------------------------------------------------------------------------------------
// Resize / Upsample (planned by the reference's own code: `ir::ops::image::plan_resize`)
// ---------------------------------------------------------------------------------------

/// `x` with the positions of `axis` marked in `outside` replaced by `fill`.
fn fill_outside(lx: &mut Lx, x: Id, axis: usize, outside: &[bool], fill: f64) -> Result<Id> {
    if !outside.iter().any(|&o| o) {
        return Ok(x);
    }
    let shape = lx.shape(x)?;
    let mut ms = vec![1usize; shape.len()];
    ms[axis] = outside.len();
    let mask = lx.konst(Tensor::from_vec(ms, outside.to_vec())?);
    let f = lx.scalar(lx.dtype(x)?, fill)?;
    lx.select(mask, f, x)
}

fn resize(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let upsample = n.op.kind.name() == "Upsample";
    let x = arg(args, 0)?;
    let in_shape = lx.shape(x)?;
    let dt = lx.dtype(x)?;
    let values: Vec<Option<Arc<Tensor>>> = args.iter().map(|a| a.and_then(|id| lx.value(id))).collect();
    let input = |i: usize| (args.get(i).is_some_and(Option::is_some), values.get(i).and_then(|v| v.as_deref()));
    let (p, plan) = plan_resize(upsample, &n.op.attrs, n.op.version, &in_shape, input)?
        .ok_or_else(|| err("Resize scales, sizes and roi must be constants to lower with static shapes"))?;
    if n.ty.shape.as_deref() != Some(&plan.out_shape[..]) {
        return Err(err(format!("Resize plan {:?} differs from the inferred output {}", plan.out_shape, n.ty)));
    }
    if plan.out_shape.contains(&0) || in_shape.contains(&0) {
        return lx.full(dt, &plan.out_shape, 0.0).map(Some);
    }
    let rank = in_shape.len();
    if p.interp == Interp::Nearest {
        let mut y = x;
        for (a, &len) in in_shape.iter().enumerate() {
            let table = nearest_table(&p, &plan, a, len);
            let idx: Vec<i64> = table.iter().map(|t| t.map_or(0, |i| i as i64)).collect();
            let outside: Vec<bool> = table.iter().map(Option::is_none).collect();
            let ident = idx.len() == len && idx.iter().enumerate().all(|(i, &v)| v == i as i64);
            if !ident {
                let c = lx.konst(Tensor::from_vec(vec![idx.len()], idx)?);
                y = lx.take(y, c, a)?;
            }
            y = fill_outside(lx, y, a, &outside, p.extrapolation)?;
        }
        return Ok(Some(y));
    }
    let cdt = if dt.is_float() { compute_dtype(dt) } else { DType::F64 };
    let mut shape = in_shape.clone();
    let mut axes: Vec<usize> = (0..rank).filter(|&a| !identity_axis(&p, &plan, a, shape[a])).collect();
    axes.sort_by(|&a, &b| {
        let growth = |k: usize| plan.out_shape[k] as f64 / shape[k].max(1) as f64;
        growth(a).total_cmp(&growth(b)).then(b.cmp(&a))
    });
    let mut y = lx.cast(x, cdt)?;
    for a in axes {
        let taps = filter_taps(&p, &plan, a, shape[a]);
        let out_len = plan.out_shape[a];
        let index: Vec<i64> = taps.index.iter().map(|&i| i as i64).collect();
        let idx = lx.konst(Tensor::from_vec(vec![out_len, taps.n], index)?);
        let g = lx.take(y, idx, a)?; // [.., out_len, n, ..]
        let mut ws = vec![1usize; rank + 1];
        ws[a] = out_len;
        ws[a + 1] = taps.n;
        let w = lx.konst(Tensor::from_vec(ws, taps.weight.clone())?.cast(cdt));
        let t = lx.mul(g, w)?;
        let s = lx.reduce(ReduceFn::Sum, t, &[a + 1], false)?;
        y = fill_outside(lx, s, a, &taps.outside, p.extrapolation)?;
        shape[a] = out_len;
    }
    if !dt.is_float() {
        y = lx.unary(UnaryFn::Round, y)?;
    }
    lx.cast(y, dt).map(Some)
}

// ---------------------------------------------------------------------------------------
// GridSample
// ---------------------------------------------------------------------------------------

/// `x` (f64) reflected into `[lo, hi]` by folding at the borders (the reference's `reflect`).
fn reflect(lx: &mut Lx, x: Id, lo: f64, hi: f64) -> Result<Id> {
    let range = hi - lo;
    if range <= 0.0 {
        let s = lx.shape(x)?;
        return lx.full(DType::F64, &s, lo);
    }
    let lo_c = lx.scalar(DType::F64, lo)?;
    let hi_c = lx.scalar(DType::F64, hi)?;
    // One side: d = distance past the border, k = whole ranges in it, r = the rest.
    let side = |lx: &mut Lx, d: Id, even_from: Id, odd_from: Id, even_sign: f64| -> Result<Id> {
        let q = lx.binary_scalar(BinaryFn::Div, d, range)?;
        let k = lx.unary(UnaryFn::Floor, q)?;
        let kr = lx.binary_scalar(BinaryFn::Mul, k, range)?;
        let r = lx.sub(d, kr)?;
        let m = lx.binary_scalar(BinaryFn::Fmod, k, 2.0)?;
        let zero = lx.scalar(DType::F64, 0.0)?;
        let even = lx.binary(BinaryFn::Eq, m, zero)?;
        let (a, b) = if even_sign > 0.0 {
            (lx.add(even_from, r)?, lx.sub(odd_from, r)?)
        } else {
            (lx.sub(even_from, r)?, lx.add(odd_from, r)?)
        };
        lx.select(even, a, b)
    };
    let d_lo = lx.sub(lo_c, x)?;
    let below = side(lx, d_lo, lo_c, hi_c, 1.0)?;
    let d_hi = lx.sub(x, hi_c)?;
    let above = side(lx, d_hi, hi_c, lo_c, -1.0)?;
    let is_below = lx.binary(BinaryFn::Lt, x, lo_c)?;
    let is_above = lx.binary(BinaryFn::Gt, x, hi_c)?;
    let t = lx.select(is_above, above, x)?;
    lx.select(is_below, below, t)
}

/// `min(max(x, lo), hi)` on an f64 tensor.
fn clamp(lx: &mut Lx, x: Id, lo: f64, hi: f64) -> Result<Id> {
    let a = lx.binary_scalar(BinaryFn::Max, x, lo)?;
    lx.binary_scalar(BinaryFn::Min, a, hi)
}

/// One tap of one axis: flat offset contribution (i64), weight (compute dtype) and, where
/// padding can drop it, a validity mask.
struct AxisTap {
    offset: Id,
    weight: Id,
    valid: Option<Id>,
}

fn grid_sample(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let attrs = &n.op.attrs;
    let GridParams { interp, padding, align_corners: align } = GridParams::parse(attrs)?;
    let x = arg(args, 0)?;
    let grid = arg(args, 1)?;
    let xs = lx.shape(x)?;
    let gs = lx.shape(grid)?;
    let dt = lx.dtype(x)?;
    let cdt = compute_dtype(dt);
    let grid_is_f32 = lx.dtype(grid)? != DType::F64;
    let r = xs.len() - 2;
    let (nb, ch) = (xs[0], xs[1]);
    let dims = &xs[2..];
    let p: usize = dims.iter().product();
    let q: usize = gs[1..=r].iter().product();
    let mut out_shape = vec![nb, ch];
    out_shape.extend(&gs[1..=r]);
    if out_shape.contains(&0) {
        return lx.full(dt, &out_shape, 0.0).map(Some);
    }
    let in_strides = row_major(dims);
    let g = lx.cast(grid, DType::F64)?;
    let g = lx.reshape(g, &[nb, q, r])?;
    let mut per_axis: Vec<Vec<AxisTap>> = Vec::with_capacity(r);
    for (i, &len) in dims.iter().enumerate() {
        let comp = r - 1 - i;
        let v = lx.strided(g, &[(0, nb, 1), (0, q, 1), (comp as i64, 1, 1)])?;
        let v = lx.reshape(v, &[nb, q])?;
        let lf = len as f64;
        let v1 = lx.binary_scalar(BinaryFn::Add, v, 1.0)?;
        let mut c = if align {
            let h = lx.binary_scalar(BinaryFn::Div, v1, 2.0)?;
            lx.binary_scalar(BinaryFn::Mul, h, lf - 1.0)?
        } else {
            let m = lx.binary_scalar(BinaryFn::Mul, v1, lf)?;
            let m = lx.binary_scalar(BinaryFn::Sub, m, 1.0)?;
            lx.binary_scalar(BinaryFn::Div, m, 2.0)?
        };
        if grid_is_f32 {
            let f = lx.cast(c, DType::F32)?;
            c = lx.cast(f, DType::F64)?;
        }
        if interp == Interp::Nearest {
            c = lx.unary(UnaryFn::Round, c)?;
        }
        let (lo, hi) = if align { (0.0, lf - 1.0) } else { (-0.5, lf - 0.5) };
        match padding {
            Padding::Border => {
                let cl = clamp(lx, c, 0.0, lf - 1.0)?;
                let lo_c = lx.scalar(DType::F64, lo)?;
                let hi_c = lx.scalar(DType::F64, hi)?;
                let below = lx.binary(BinaryFn::Lt, c, lo_c)?;
                let above = lx.binary(BinaryFn::Gt, c, hi_c)?;
                let out = lx.binary(BinaryFn::Or, below, above)?;
                c = lx.select(out, cl, c)?;
            }
            Padding::Reflection => c = reflect(lx, c, lo, hi)?,
            Padding::Zeros => {}
        }
        // A non-finite coordinate has no taps: (c - c) == 0 only for finite c.
        let cc = lx.sub(c, c)?;
        let zero = lx.scalar(DType::F64, 0.0)?;
        let finite = lx.binary(BinaryFn::Eq, cc, zero)?;
        let c = lx.select(finite, c, zero)?;
        let base = lx.unary(UnaryFn::Floor, c)?;
        let t = lx.sub(c, base)?;
        let taps: Vec<(i64, Id)> = match interp {
            Interp::Nearest => vec![(0, lx.full(DType::F64, &[nb, q], 1.0)?)],
            Interp::Linear => {
                let one = lx.scalar(DType::F64, 1.0)?;
                vec![(0, lx.sub(one, t)?), (1, t)]
            }
            Interp::Cubic => {
                let mut v = Vec::new();
                for k in -1i64..=2 {
                    v.push((k, cubic_of(lx, t, k as f64)?));
                }
                v
            }
        };
        let last = lf - 1.0;
        let mut list = Vec::new();
        for (k, w) in taps {
            let at = lx.binary_scalar(BinaryFn::Add, base, k as f64)?;
            let (idx, valid) = match padding {
                Padding::Zeros => {
                    let lo_ok = lx.binary_scalar(BinaryFn::Ge, at, 0.0)?;
                    let hi_ok = lx.binary_scalar(BinaryFn::Le, at, last)?;
                    let ok = lx.binary(BinaryFn::And, lo_ok, hi_ok)?;
                    let ok = lx.binary(BinaryFn::And, ok, finite)?;
                    (clamp(lx, at, 0.0, last)?, Some(ok))
                }
                Padding::Border => (clamp(lx, at, 0.0, last)?, Some(finite)),
                Padding::Reflection => {
                    let rf = reflect(lx, at, lo, hi)?;
                    let ri = lx.cast(rf, DType::I64)?;
                    let rf = lx.cast(ri, DType::F64)?;
                    (clamp(lx, rf, 0.0, last)?, Some(finite))
                }
            };
            let idx = lx.cast(idx, DType::I64)?;
            let offset = lx.binary_scalar(BinaryFn::Mul, idx, in_strides[i] as f64)?;
            let weight = lx.cast(w, cdt)?;
            list.push(AxisTap { offset, weight, valid });
        }
        per_axis.push(list);
    }
    let xc = lx.cast(x, cdt)?;
    let xf = lx.reshape(xc, &[nb, ch, p])?;
    // Every combination of one tap per axis, the first axis outermost (the reference's order).
    let counts: Vec<usize> = per_axis.iter().map(Vec::len).collect();
    let total: usize = counts.iter().product();
    let mut pick = vec![0usize; r];
    let mut acc: Option<Id> = None;
    for _ in 0..total {
        let mut off: Option<Id> = None;
        let mut w: Option<Id> = None;
        let mut valid: Option<Id> = None;
        for (a, &k) in pick.iter().enumerate() {
            let tap = &per_axis[a][k];
            off = Some(match off {
                None => tap.offset,
                Some(o) => lx.add(o, tap.offset)?,
            });
            w = Some(match w {
                None => tap.weight,
                Some(o) => lx.mul(o, tap.weight)?,
            });
            if let Some(v) = tap.valid {
                valid = Some(match valid {
                    None => v,
                    Some(o) => lx.binary(BinaryFn::And, o, v)?,
                });
            }
        }
        let (Some(off), Some(w)) = (off, w) else { return Err(err("GridSample without spatial axes")) };
        let off = lx.reshape(off, &[nb, 1, q])?;
        let off = lx.broadcast_to(off, &[nb, ch, q])?;
        let gv = lx.atom(Atom::Gather { axis: 2 }, &[xf, off])?;
        let w = lx.reshape(w, &[nb, 1, q])?;
        let mut term = lx.mul(w, gv)?;
        if let Some(v) = valid {
            let v = lx.reshape(v, &[nb, 1, q])?;
            let zero = lx.scalar(cdt, 0.0)?;
            term = lx.select(v, term, zero)?;
        }
        acc = Some(match acc {
            None => term,
            Some(a) => lx.add(a, term)?,
        });
        for d in (0..r).rev() {
            pick[d] += 1;
            if pick[d] < counts[d] {
                break;
            }
            pick[d] = 0;
        }
    }
    let y = acc.ok_or_else(|| err("GridSample without taps"))?;
    let y = lx.reshape(y, &out_shape)?;
    lx.cast(y, dt).map(Some)
}

/// The cubic weight (a = -0.75) of tap `k` in -1..=2 at fraction `t` in [0, 1): taps 0 and
/// 1 are within distance 1, taps -1 and 2 within [1, 2] (where the outer polynomial is 0
/// at exactly 2, as the reference's `cubic_weight`).
fn cubic_of(lx: &mut Lx, t: Id, k: f64) -> Result<Id> {
    let a = -0.75;
    let d = lx.binary_scalar(BinaryFn::Sub, t, k)?;
    let d = lx.unary(UnaryFn::Abs, d)?;
    if k == 0.0 || k == 1.0 {
        // ((a + 2) d - (a + 3)) d d + 1
        let u = lx.binary_scalar(BinaryFn::Mul, d, a + 2.0)?;
        let u = lx.binary_scalar(BinaryFn::Sub, u, a + 3.0)?;
        let u = lx.mul(u, d)?;
        let u = lx.mul(u, d)?;
        lx.binary_scalar(BinaryFn::Add, u, 1.0)
    } else {
        // ((a d - 5a) d + 8a) d - 4a
        let u = lx.binary_scalar(BinaryFn::Mul, d, a)?;
        let u = lx.binary_scalar(BinaryFn::Sub, u, 5.0 * a)?;
        let u = lx.mul(u, d)?;
        let u = lx.binary_scalar(BinaryFn::Add, u, 8.0 * a)?;
        let u = lx.mul(u, d)?;
        let u = lx.binary_scalar(BinaryFn::Sub, u, 4.0 * a)?;
        // Distance 2 exactly (t = 0 for tap 2) is weight 0 in the reference.
        let two = lx.binary_scalar(BinaryFn::Lt, d, 2.0)?;
        let zero = lx.scalar(DType::F64, 0.0)?;
        lx.select(two, u, zero)
    }
}

// ---------------------------------------------------------------------------------------
// AffineGrid
// ---------------------------------------------------------------------------------------


fn affine_grid(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let align = n.op.attrs.int_or("align_corners", 0)? != 0;
    let theta = arg(args, 0)?;
    let size = lx.const_i64s(arg(args, 1)?, "AffineGrid size")?;
    let ts = lx.shape(theta)?;
    let dt = lx.dtype(theta)?;
    let cdt = compute_dtype(dt);
    let r = match size.len() {
        4 => 2,
        5 => 3,
        k => return Err(err(format!("AffineGrid size must have 4 or 5 values, got {k}"))),
    };
    let dims: Vec<usize> = size[2..].iter().map(|&d| d.max(0) as usize).collect();
    let per: usize = dims.iter().product();
    let nb = ts[0];
    let mut out_shape = vec![nb];
    out_shape.extend(&dims);
    out_shape.push(r);
    if out_shape.contains(&0) {
        return lx.full(dt, &out_shape, 0.0).map(Some);
    }
    // base[p, k] = (x, y[, z], 1) of point p, x along the innermost axis.
    let mut base = Vec::with_capacity(per * (r + 1));
    let mut idx = vec![0usize; r];
    for _ in 0..per {
        for k in 0..r {
            base.push(grid_coord(idx[r - 1 - k], dims[r - 1 - k], align));
        }
        base.push(1.0);
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let b = lx.konst(Tensor::from_vec(vec![per, r + 1], base)?.cast(cdt));
    let th = lx.cast(theta, cdt)?;
    let tt = lx.transpose(th, &[0, 2, 1])?; // [N, r+1, r]
    let y = lx.matmul(b, tt)?; // [N, per, r]
    let y = lx.reshape(y, &out_shape)?;
    lx.cast(y, dt).map(Some)
}

// ---------------------------------------------------------------------------------------
// RoiAlign
// ---------------------------------------------------------------------------------------

fn roi_align(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let attrs = &n.op.attrs;
    let RoiParams { max: max_mode, half_pixel, out_h: oh, out_w: ow, sampling_ratio: sr, spatial_scale: scale } =
        RoiParams::parse(attrs, n.op.version)?;
    let x = arg(args, 0)?;
    let rois = arg(args, 1)?;
    let bidx = arg(args, 2)?;
    let xs = lx.shape(x)?;
    let dt = lx.dtype(x)?;
    let cdt = compute_dtype(dt);
    let (ch, height, width) = (xs[1], xs[2], xs[3]);
    let nr = lx.shape(rois)?[0];
    let out_shape = vec![nr, ch, oh, ow];
    if out_shape.contains(&0) || height == 0 || width == 0 {
        return lx.full(dt, &out_shape, 0.0).map(Some);
    }
    let off = if half_pixel { 0.5 } else { 0.0 };
    // Per-roi sample counts: static with sampling_ratio > 0, else from constant rois.
    let (gh_r, gw_r): (Vec<usize>, Vec<usize>) = if sr > 0 {
        (vec![sr; nr], vec![sr; nr])
    } else {
        let rv = lx.value(rois).ok_or_else(|| {
            crate::host::host_only("RoiAlign with sampling_ratio 0 takes its sample count from the rois' data")
        })?;
        let rv = rv.to_f64_vec();
        let mut gh = Vec::with_capacity(nr);
        let mut gw = Vec::with_capacity(nr);
        for r in 0..nr {
            let [x0, y0, x1, y1] = [0, 1, 2, 3].map(|k| rv[r * 4 + k] * scale - off);
            let (mut rw, mut rh) = (x1 - x0, y1 - y0);
            if !half_pixel {
                rw = rw.max(1.0);
                rh = rh.max(1.0);
            }
            gh.push((rh / oh as f64).ceil().max(0.0) as usize);
            gw.push((rw / ow as f64).ceil().max(0.0) as usize);
        }
        (gh, gw)
    };
    let ghm = gh_r.iter().copied().max().unwrap_or(1).max(1);
    let gwm = gw_r.iter().copied().max().unwrap_or(1).max(1);
    let uniform = gh_r.iter().all(|&g| g == ghm) && gw_r.iter().all(|&g| g == gwm);
    // Roi values [R, 1, 1] in f64.
    let rf = lx.cast(rois, DType::F64)?;
    let coord = |lx: &mut Lx, k: usize| -> Result<Id> {
        let c = lx.strided(rf, &[(0, nr, 1), (k as i64, 1, 1)])?;
        let c = lx.reshape(c, &[nr, 1, 1])?;
        let c = lx.binary_scalar(BinaryFn::Mul, c, scale)?;
        lx.binary_scalar(BinaryFn::Sub, c, off)
    };
    let x0 = coord(lx, 0)?;
    let y0 = coord(lx, 1)?;
    let x1 = coord(lx, 2)?;
    let y1 = coord(lx, 3)?;
    let mut rw = lx.sub(x1, x0)?;
    let mut rh = lx.sub(y1, y0)?;
    if !half_pixel {
        rw = lx.binary_scalar(BinaryFn::Max, rw, 1.0)?;
        rh = lx.binary_scalar(BinaryFn::Max, rh, 1.0)?;
    }
    let bin_h = lx.binary_scalar(BinaryFn::Div, rh, oh as f64)?;
    let bin_w = lx.binary_scalar(BinaryFn::Div, rw, ow as f64)?;
    // Sample coordinates along one axis: [R, O, G] = start + o*bin + (g + 0.5)*bin/grid.
    let samples = |lx: &mut Lx, start: Id, bin: Id, o: usize, gm: usize, grid: &[usize]| -> Result<(Id, Id)> {
        let oi = lx.konst(Tensor::from_vec(vec![1, o, 1], (0..o).map(|v| v as f64).collect::<Vec<_>>())?);
        let gi = lx.konst(Tensor::from_vec(vec![1, 1, gm], (0..gm).map(|v| v as f64 + 0.5).collect::<Vec<_>>())?);
        let gc = lx.konst(Tensor::from_vec(vec![nr, 1, 1], grid.iter().map(|&g| g.max(1) as f64).collect::<Vec<_>>())?);
        let a = lx.mul(oi, bin)?;
        let a = lx.add(start, a)?;
        let b = lx.mul(gi, bin)?;
        let b = lx.div(b, gc)?;
        let c = lx.add(a, b)?;
        // Valid samples: g < grid of the roi.
        let gidx = lx.konst(Tensor::from_vec(vec![1, 1, gm], (0..gm).map(|v| v as f64).collect::<Vec<_>>())?);
        let gn = lx.konst(Tensor::from_vec(vec![nr, 1, 1], grid.iter().map(|&g| g as f64).collect::<Vec<_>>())?);
        let valid = lx.binary(BinaryFn::Lt, gidx, gn)?;
        let valid = lx.broadcast_to(valid, &[nr, o, gm])?;
        Ok((c, valid))
    };
    let gh_c: Vec<usize> = gh_r.clone();
    let gw_c: Vec<usize> = gw_r.clone();
    let (yy, vgy) = samples(lx, y0, bin_h, oh, ghm, &gh_c)?;
    let (xx, vgx) = samples(lx, x0, bin_w, ow, gwm, &gw_c)?;
    // Per axis: (in range, low index, high index, low weight, high weight), [R, O, G].
    let axis = |lx: &mut Lx, v: Id, len: usize| -> Result<[Id; 5]> {
        let l = len as f64;
        let ge = lx.binary_scalar(BinaryFn::Ge, v, -1.0)?;
        let le = lx.binary_scalar(BinaryFn::Le, v, l)?;
        let inr = lx.binary(BinaryFn::And, ge, le)?;
        let v = lx.binary_scalar(BinaryFn::Max, v, 0.0)?;
        let lo = lx.unary(UnaryFn::Floor, v)?;
        let at_end = lx.binary_scalar(BinaryFn::Ge, lo, l - 1.0)?;
        let last = lx.scalar(DType::F64, l - 1.0)?;
        let lo = lx.select(at_end, last, lo)?;
        let lo1 = lx.binary_scalar(BinaryFn::Add, lo, 1.0)?;
        let hi = lx.select(at_end, last, lo1)?;
        let v = lx.select(at_end, last, v)?;
        let lw = lx.sub(v, lo)?; // weight of the high index
        let one = lx.scalar(DType::F64, 1.0)?;
        let hw = lx.sub(one, lw)?; // weight of the low index
        Ok([inr, lo, hi, hw, lw])
    };
    let [iy, ylo, yhi, hy, ly] = axis(lx, yy, height)?;
    let [ix, xlo, xhi, hx, lx_w] = axis(lx, xx, width)?;
    // Combine to [R, OH, GH, OW, GW].
    let full = [nr, oh, ghm, ow, gwm];
    let m = oh * ghm * ow * gwm;
    let ys = |lx: &mut Lx, t: Id| -> Result<Id> {
        let t = lx.reshape(t, &[nr, oh, ghm, 1, 1])?;
        lx.broadcast_to(t, &full)
    };
    let xsb = |lx: &mut Lx, t: Id| -> Result<Id> {
        let t = lx.reshape(t, &[nr, 1, 1, ow, gwm])?;
        lx.broadcast_to(t, &full)
    };
    let iy = ys(lx, iy)?;
    let ix = xsb(lx, ix)?;
    let inside = lx.binary(BinaryFn::And, iy, ix)?;
    let vy = ys(lx, vgy)?;
    let vx = xsb(lx, vgx)?;
    let counted = lx.binary(BinaryFn::And, vy, vx)?;
    let ylo = ys(lx, ylo)?;
    let yhi = ys(lx, yhi)?;
    let hy = ys(lx, hy)?;
    let ly = ys(lx, ly)?;
    let xlo = xsb(lx, xlo)?;
    let xhi = xsb(lx, xhi)?;
    let hx = xsb(lx, hx)?;
    let lx_w = xsb(lx, lx_w)?;
    let zero64 = lx.scalar(DType::F64, 0.0)?;
    let xb = lx.take(x, bidx, 0)?; // [R, C, H, W]
    let xb = lx.cast(xb, cdt)?;
    let xb = lx.reshape(xb, &[nr, ch, height * width])?;
    let corners = [(ylo, xlo, hy, hx), (ylo, xhi, hy, lx_w), (yhi, xlo, ly, hx), (yhi, xhi, ly, lx_w)];
    let mut terms = Vec::with_capacity(4);
    for (yi, xi, wy, wx) in corners {
        let pos = lx.binary_scalar(BinaryFn::Mul, yi, width as f64)?;
        let pos = lx.add(pos, xi)?;
        let pos = lx.select(inside, pos, zero64)?;
        let pos = lx.cast(pos, DType::I64)?;
        let w = lx.mul(wy, wx)?;
        let w = lx.select(inside, w, zero64)?;
        let w = lx.cast(w, cdt)?;
        let pos = lx.reshape(pos, &[nr, 1, m])?;
        let pos = lx.broadcast_to(pos, &[nr, ch, m])?;
        let g = lx.atom(Atom::Gather { axis: 2 }, &[xb, pos])?;
        let w = lx.reshape(w, &[nr, 1, m])?;
        terms.push(lx.mul(w, g)?);
    }
    let combine = |lx: &mut Lx, f: BinaryFn, t: &[Id]| -> Result<Id> {
        let mut acc = t[0];
        for &v in &t[1..] {
            acc = lx.binary(f, acc, v)?;
        }
        Ok(acc)
    };
    let samp_shape = [nr, ch, oh, ghm, ow, gwm];
    let y = if max_mode {
        let v = combine(lx, BinaryFn::Max, &terms)?;
        let v = lx.reshape(v, &samp_shape)?;
        let v = if uniform {
            v
        } else {
            let c = lx.reshape(counted, &[nr, 1, oh, ghm, ow, gwm])?;
            let ninf = lx.scalar(cdt, f64::NEG_INFINITY)?;
            lx.select(c, v, ninf)?
        };
        let v = lx.reduce(ReduceFn::Max, v, &[3, 5], false)?;
        // A roi without samples keeps the initial 0.
        let empty: Vec<bool> = gh_r.iter().zip(&gw_r).map(|(&h, &w)| h * w == 0).collect();
        if empty.iter().any(|&e| e) {
            let e = lx.konst(Tensor::from_vec(vec![nr, 1, 1, 1], empty)?);
            let z = lx.scalar(cdt, 0.0)?;
            lx.select(e, z, v)?
        } else {
            v
        }
    } else {
        let s = combine(lx, BinaryFn::Add, &terms)?;
        let s = lx.reshape(s, &samp_shape)?;
        let s = if uniform {
            s
        } else {
            let c = lx.reshape(counted, &[nr, 1, oh, ghm, ow, gwm])?;
            let z = lx.scalar(cdt, 0.0)?;
            lx.select(c, s, z)?
        };
        let s = lx.reduce(ReduceFn::Sum, s, &[3, 5], false)?;
        let count: Vec<f64> = gh_r.iter().zip(&gw_r).map(|(&h, &w)| (h * w).max(1) as f64).collect();
        let c = lx.konst(Tensor::from_vec(vec![nr, 1, 1, 1], count)?.cast(cdt));
        lx.div(s, c)?
    };
    lx.cast(y, dt).map(Some)
}
