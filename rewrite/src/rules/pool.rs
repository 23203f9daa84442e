//! Rules of the pool family. Windowed pools read their input through one sliding-window
//! View (`[N, C, O1.., K1..]`, guards for the padding) and reduce the kernel axes:
//! MaxPool is `Reduce Max` (pad = the dtype's lowest value, as the reference's fold
//! starts there), its Indices output an `ArgMax` over the flattened window gathered from
//! a constant table of flat input positions; AveragePool is `Reduce Sum` divided by a
//! constant count tensor (valid taps, or taps inside input plus explicit padding);
//! LpPool sums `|x|^p` and takes the `1/p` power. Global pools reduce the spatial axes,
//! MaxUnpool is a `Scatter` into zeros, LRN a window View over the channels.

use crate::rules::{err, compute_dtype};
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{BinaryFn, Guard, ReduceFn, UnaryFn, ViewMap, row_major};
use ir::ops::pool::{Lrn, Windows, lp_exponent, storage_order, unpool_shape};
use ir::{DType, Result, Tensor};

pub const RULES: &[Rule] = &[
    Rule {
        name: "pool/maxpool",
        identity: "MaxPool(x) = ReduceMax_k(Window(x, pad=lowest)); Indices = Gather(table, ArgMax_k(Window(x, pad=-inf))) + plane base",
        action: Action::Lower { ops: &["MaxPool"], apply: max_pool },
    },
    Rule {
        name: "pool/averagepool",
        identity: "AveragePool(x) = ReduceSum_k(Window(x, pad=0)) / count (constant per output position)",
        action: Action::Lower { ops: &["AveragePool"], apply: average_pool },
    },
    Rule {
        name: "pool/lppool",
        identity: "LpPool(x) = (ReduceSum_k |Window(x, pad=0)|^p)^(1/p)",
        action: Action::Lower { ops: &["LpPool"], apply: lp_pool },
    },
    Rule {
        name: "pool/global",
        identity: "GlobalAverage/Max/LpPool(x) = ReduceSum/Max over the spatial axes (keepdims), / n or ^(1/p)",
        action: Action::Lower { ops: &["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"], apply: global_pool },
    },
    Rule {
        name: "pool/maxunpool",
        identity: "MaxUnpool(x, i) = Scatter(zeros[numel(out)], position of i in out, x)",
        action: Action::Lower { ops: &["MaxUnpool"], apply: max_unpool },
    },
    Rule {
        name: "pool/lrn",
        identity: "LRN(x) = x / (bias + alpha/size * ReduceSum(ChannelWindow(x^2, pad=0)))^beta",
        action: Action::Lower { ops: &["LRN"], apply: lrn },
    },
];



/// The lowest value of a dtype where the reference starts its max fold (`Bounded::min_value`).
/// f64 uses -inf: `f64::MIN` does not survive the View's attribute encoding (not exact in f32).
fn lowest(d: DType) -> f64 {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => f64::from(f32::MIN),
        DType::F64 => f64::NEG_INFINITY,
        DType::I8 => -128.0,
        DType::I16 => -32768.0,
        DType::I32 => -2147483648.0,
        DType::U8 | DType::U16 | DType::U32 | DType::U64 => 0.0,
        _ => f64::NEG_INFINITY,
    }
}

/// The sliding-window view `[N, C, O1..On, K1..Kn]` of `x` (`[N, C, S1..Sn]`): element
/// `x[n, c, o*s + k*d - pad_begin]`, or `pad` where that lies outside the input.
pub(crate) fn window_view(lx: &mut Lx, x: Id, w: &Windows, pad: f64) -> Result<Id> {
    let shape = lx.shape(x)?;
    let n = shape.len() - 2;
    let st = row_major(&shape);
    let r = 2 + 2 * n;
    let mut vshape = vec![shape[0], shape[1]];
    vshape.extend(&w.out);
    vshape.extend(&w.kernel);
    let mut strides = vec![st[0], st[1]];
    let mut offset = 0i64;
    let mut guards = Vec::new();
    for i in 0..n {
        strides.push(w.strides[i] as i64 * st[2 + i]);
    }
    for i in 0..n {
        strides.push(w.dilations[i] as i64 * st[2 + i]);
    }
    for i in 0..n {
        let pb = w.pads_begin[i] as i64;
        offset -= pb * st[2 + i];
        let last = (w.out[i] as i64 - 1) * w.strides[i] as i64 + (w.kernel[i] as i64 - 1) * w.dilations[i] as i64 - pb;
        if pb > 0 || last >= shape[2 + i] as i64 {
            let mut coefs = vec![0i64; r];
            coefs[2 + i] = w.strides[i] as i64;
            coefs[2 + n + i] = w.dilations[i] as i64;
            guards.push(Guard { coefs, offset: -pb, bound: shape[2 + i] as i64 });
        }
    }
    if vshape.contains(&0) {
        offset = 0;
        guards.clear();
    }
    lx.view(x, ViewMap { shape: vshape, strides, offset, guards, pad })
}

/// The kernel axes of a window view of a rank-`rank` input.
fn kernel_axes(rank: usize) -> Vec<usize> {
    let n = rank - 2;
    (2 + n..2 + 2 * n).collect()
}

fn max_pool(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let shape = lx.shape(x)?;
    let dt = lx.dtype(x)?;
    let w = Windows::parse(n.op.kind.name(), &n.op.attrs, &shape)?;
    let column_major = storage_order(&n.op.attrs)?;
    let cdt = compute_dtype(dt);
    let rank = shape.len();
    if n.output == 0 {
        let xc = lx.cast(x, cdt)?;
        let v = window_view(lx, xc, &w, lowest(cdt))?;
        let mut m = lx.reduce(ReduceFn::Max, v, &kernel_axes(rank), false)?;
        if cdt == DType::F64 && (0..rank - 2).any(|i| w.taps(i, shape[2 + i]).iter().any(|t| t.count == 0)) {
            // A window without valid taps is f64::MIN in the reference; the view pads -inf.
            m = lx.binary_scalar(BinaryFn::Max, m, f64::MIN)?;
        }
        return lx.cast(m, dt).map(Some);
    }
    if n.output != 1 {
        return Ok(None);
    }
    // Indices: ArgMax over the flattened window (pad -inf ranks below every valid tap, so
    // integers are compared exactly in f32), then the tap's flat position from a table.
    let kdt = if dt.is_float() { cdt } else { DType::F32 };
    let xk = lx.cast(x, kdt)?;
    let v = window_view(lx, xk, &w, f64::NEG_INFINITY)?;
    let nsp = rank - 2;
    let ktot: usize = w.kernel.iter().product();
    let otot: usize = w.out.iter().product();
    let mut flat_shape = vec![shape[0], shape[1]];
    flat_shape.extend(&w.out);
    flat_shape.push(ktot);
    let v = lx.reshape(v, &flat_shape)?;
    let am = lx.reduce(ReduceFn::ArgMax, v, &[rank], true)?;
    // table[o.., k] = flat spatial position of tap k of window o (row- or column-major), -1 outside.
    let spatial = &shape[2..];
    let mut table = Vec::with_capacity(otot * ktot);
    let mut any_empty = false;
    let mut o = vec![0usize; nsp];
    for _ in 0..otot {
        let mut k = vec![0usize; nsp];
        let mut valid_any = false;
        for _ in 0..ktot {
            let mut pos = Vec::with_capacity(nsp);
            let mut ok = true;
            for i in 0..nsp {
                let p = (o[i] * w.strides[i] + k[i] * w.dilations[i]) as i64 - w.pads_begin[i] as i64;
                ok &= p >= 0 && p < spatial[i] as i64;
                pos.push(p);
            }
            table.push(if ok {
                valid_any = true;
                let mut flat = 0i64;
                if column_major {
                    for i in (0..nsp).rev() {
                        flat = flat * spatial[i] as i64 + pos[i];
                    }
                } else {
                    for i in 0..nsp {
                        flat = flat * spatial[i] as i64 + pos[i];
                    }
                }
                flat
            } else {
                -1
            });
            odometer(&mut k, &w.kernel);
        }
        any_empty |= !valid_any;
        odometer(&mut o, &w.out);
    }
    let mut tshape = vec![1usize, 1];
    tshape.extend(&w.out);
    tshape.push(ktot);
    let t = lx.konst(Tensor::from_vec(tshape, table)?);
    let t = lx.broadcast_to(t, &flat_shape)?;
    let mut ishape = flat_shape.clone();
    ishape[rank] = 1;
    let at = lx.atom(ir::atom::Atom::Gather { axis: rank }, &[t, am])?;
    let plane: usize = spatial.iter().product();
    let planes = shape[0] * shape[1];
    let base: Vec<i64> = (0..planes).map(|p| (p * plane) as i64).collect();
    let mut bshape = vec![shape[0], shape[1]];
    bshape.extend(std::iter::repeat_n(1, nsp + 1));
    let b = lx.konst(Tensor::from_vec(bshape, base)?);
    let mut idx = lx.add(at, b)?;
    if any_empty {
        let zero = lx.scalar(DType::I64, 0.0)?;
        let neg = lx.binary(BinaryFn::Lt, at, zero)?;
        let m1 = lx.scalar(DType::I64, -1.0)?;
        idx = lx.select(neg, m1, idx)?;
    }
    let mut out = vec![shape[0], shape[1]];
    out.extend(&w.out);
    lx.reshape(idx, &out).map(Some)
}

/// Advances a row-major multi-index over `dims`.
fn odometer(i: &mut [usize], dims: &[usize]) {
    for d in (0..i.len()).rev() {
        i[d] += 1;
        if i[d] < dims[d] {
            return;
        }
        i[d] = 0;
    }
}

fn average_pool(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let shape = lx.shape(x)?;
    let dt = lx.dtype(x)?;
    let cdt = compute_dtype(dt);
    let w = Windows::parse(n.op.kind.name(), &n.op.attrs, &shape)?;
    let include_pad = n.op.attrs.int_or("count_include_pad", 0)? != 0;
    let xc = lx.cast(x, cdt)?;
    let v = window_view(lx, xc, &w, 0.0)?;
    let s = lx.reduce(ReduceFn::Sum, v, &kernel_axes(shape.len()), false)?;
    // The count of each output position: the product of the per-axis counts.
    let taps: Vec<_> = (0..shape.len() - 2).map(|i| w.taps(i, shape[2 + i])).collect();
    let otot: usize = w.out.iter().product();
    let mut o = vec![0usize; w.out.len()];
    let mut cnt = Vec::with_capacity(otot);
    for _ in 0..otot {
        let c: usize = o
            .iter()
            .enumerate()
            .map(|(i, &oi)| if include_pad { taps[i][oi].with_pad } else { taps[i][oi].count })
            .product();
        cnt.push(c as f64);
        odometer(&mut o, &w.out);
    }
    let mut cshape = vec![1usize, 1];
    cshape.extend(&w.out);
    let c = lx.konst(Tensor::from_vec(cshape, cnt)?.cast(cdt));
    let y = lx.div(s, c)?;
    lx.cast(y, dt).map(Some)
}

/// `|x|^p` as the reference computes it (exact products for p = 1 and 2).
fn lp_term(lx: &mut Lx, x: Id, p: f64) -> Result<Id> {
    if p == 2.0 {
        lx.mul(x, x)
    } else if p == 1.0 {
        lx.unary(UnaryFn::Abs, x)
    } else {
        let a = lx.unary(UnaryFn::Abs, x)?;
        lx.binary_scalar(BinaryFn::Pow, a, p)
    }
}

fn lp_pool(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let shape = lx.shape(x)?;
    let dt = lx.dtype(x)?;
    let cdt = compute_dtype(dt);
    let p = lp_exponent(&n.op.attrs)?;
    let w = Windows::parse(n.op.kind.name(), &n.op.attrs, &shape)?;
    let xc = lx.cast(x, cdt)?;
    let v = window_view(lx, xc, &w, 0.0)?;
    let t = lp_term(lx, v, p)?;
    let s = lx.reduce(ReduceFn::Sum, t, &kernel_axes(shape.len()), false)?;
    let y = lx.binary_scalar(BinaryFn::Pow, s, 1.0 / p)?;
    lx.cast(y, dt).map(Some)
}

fn global_pool(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let shape = lx.shape(x)?;
    if shape.len() < 2 {
        return Err(err("global pool input must have rank >= 2"));
    }
    let dt = lx.dtype(x)?;
    let cdt = compute_dtype(dt);
    let axes: Vec<usize> = (2..shape.len()).collect();
    let plane: usize = shape[2..].iter().product();
    let xc = lx.cast(x, cdt)?;
    let y = match n.op.kind.name() {
        "GlobalMaxPool" => {
            if axes.is_empty() {
                xc
            } else {
                lx.reduce(ReduceFn::Max, xc, &axes, true)?
            }
        }
        "GlobalAveragePool" => {
            let s = if axes.is_empty() { xc } else { lx.reduce(ReduceFn::Sum, xc, &axes, true)? };
            lx.binary_scalar(BinaryFn::Div, s, plane as f64)?
        }
        "GlobalLpPool" => {
            let p = lp_exponent(&n.op.attrs)?;
            let t = lp_term(lx, xc, p)?;
            let s = if axes.is_empty() { t } else { lx.reduce(ReduceFn::Sum, t, &axes, true)? };
            lx.binary_scalar(BinaryFn::Pow, s, 1.0 / p)?
        }
        _ => return Ok(None),
    };
    lx.cast(y, dt).map(Some)
}

fn max_unpool(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let idx = arg(args, 1)?;
    let shape = lx.shape(x)?;
    let inferred = unpool_shape(&n.op.attrs, &shape)?;
    let out_shape = n.ty.shape.clone().ok_or_else(|| err("MaxUnpool output shape is not static"))?;
    let dt = lx.dtype(x)?;
    let total: usize = out_shape.iter().product();
    let m = lx.numel(x)?;
    let mut pos = lx.reshape(idx, &[m])?;
    if inferred != out_shape {
        // Re-address each flat index of the inferred shape in the (larger) output shape.
        let ost = row_major(&out_shape);
        let mut rest = pos;
        let mut acc: Option<Id> = None;
        for d in (0..inferred.len()).rev() {
            let digit = lx.binary_scalar(BinaryFn::Mod, rest, inferred[d] as f64)?;
            let term = lx.binary_scalar(BinaryFn::Mul, digit, ost[d] as f64)?;
            acc = Some(match acc {
                None => term,
                Some(a) => lx.add(a, term)?,
            });
            rest = lx.binary_scalar(BinaryFn::Div, rest, inferred[d] as f64)?;
        }
        pos = acc.ok_or_else(|| err("MaxUnpool of rank 0"))?;
    }
    let upd = lx.reshape(x, &[m])?;
    let zeros = lx.full(dt, &[total], 0.0)?;
    let y = lx.atom(ir::atom::Atom::Scatter { axis: 0, mode: ir::atom::ScatterMode::Replace }, &[zeros, pos, upd])?;
    lx.reshape(y, &out_shape).map(Some)
}

fn lrn(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let shape = lx.shape(x)?;
    if shape.len() < 3 {
        return Err(err("LRN input must have rank >= 3"));
    }
    let Lrn { size, alpha, beta, bias } = Lrn::parse(&n.op.attrs)?;
    let dt = lx.dtype(x)?;
    let cdt = compute_dtype(dt);
    let (bn, c) = (shape[0], shape[1]);
    let plane: usize = shape[2..].iter().product();
    let before = (size - 1) / 2;
    let xc = lx.cast(x, cdt)?;
    let sq = lx.mul(xc, xc)?;
    let sq = lx.reshape(sq, &[bn, c, plane])?;
    let p = plane as i64;
    let mut v = ViewMap {
        shape: vec![bn, c, size, plane],
        strides: vec![c as i64 * p, p, p, 1],
        offset: -(before as i64) * p,
        guards: vec![Guard { coefs: vec![0, 1, 1, 0], offset: -(before as i64), bound: c as i64 }],
        pad: 0.0,
    };
    if v.shape.contains(&0) {
        v.offset = 0;
        v.guards.clear();
    }
    let win = lx.view(sq, v)?;
    let s = lx.reduce(ReduceFn::Sum, win, &[2], false)?;
    let s = lx.reshape(s, &shape)?;
    let a = lx.binary_scalar(BinaryFn::Mul, s, alpha / size as f64)?;
    let a = lx.binary_scalar(BinaryFn::Add, a, bias)?;
    let d = lx.binary_scalar(BinaryFn::Pow, a, beta)?;
    let y = lx.div(xc, d)?;
    lx.cast(y, dt).map(Some)
}
