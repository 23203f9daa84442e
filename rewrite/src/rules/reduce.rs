//! Rules of the reduce family: the multi-axis reductions (`ReduceSum` ... `ReduceSumSquare`)
//! become `Reduce` atoms with elementwise pre/post steps; `ArgMax`/`ArgMin` are the arg
//! `Reduce` atoms (a flip view selects the last index); `Softmax`, `LogSoftmax`, `Hardmax`
//! and `LpNormalization` are max-shifted reductions along one axis (before opset 13 the input
//! is seen as 2-D); `CumSum`/`CumProd` reduce a triangular window view; `TopK` ranks every
//! element by pairwise comparisons (ties broken by index), places the indices with a
//! `Scatter` and gathers the values.
//!
//! Float16/bfloat16 inputs are computed in f32 and converted back, like the reference.

use crate::rules::{err, compute_dtype};
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{Atom, BinaryFn, Guard, ReduceFn, ScatterMode, UnaryFn, ViewMap};
use ir::{DType, Result, Tensor};

pub const RULES: &[Rule] = &[
    Rule {
        name: "reduce/sum",
        identity: "ReduceSum(x, axes) = Reduce[Sum, axes](x)",
        action: Action::Lower { ops: &["ReduceSum"], apply: reduce_sum },
    },
    Rule {
        name: "reduce/mean",
        identity: "ReduceMean(x, axes) = Reduce[Sum, axes](x) / count",
        action: Action::Lower { ops: &["ReduceMean"], apply: reduce_mean },
    },
    Rule {
        name: "reduce/max",
        identity: "ReduceMax(x, axes) = Reduce[Max, axes](x)",
        action: Action::Lower { ops: &["ReduceMax"], apply: reduce_max },
    },
    Rule {
        name: "reduce/min",
        identity: "ReduceMin(x, axes) = Reduce[Min, axes](x)",
        action: Action::Lower { ops: &["ReduceMin"], apply: reduce_min },
    },
    Rule {
        name: "reduce/prod",
        identity: "ReduceProd(x, axes) = Reduce[Prod, axes](x)",
        action: Action::Lower { ops: &["ReduceProd"], apply: reduce_prod },
    },
    Rule {
        name: "reduce/l1",
        identity: "ReduceL1(x, axes) = Reduce[Sum, axes](|x|)",
        action: Action::Lower { ops: &["ReduceL1"], apply: reduce_l1 },
    },
    Rule {
        name: "reduce/l2",
        identity: "ReduceL2(x, axes) = sqrt(Reduce[Sum, axes](x * x))",
        action: Action::Lower { ops: &["ReduceL2"], apply: reduce_l2 },
    },
    Rule {
        name: "reduce/log-sum",
        identity: "ReduceLogSum(x, axes) = log(Reduce[Sum, axes](x))",
        action: Action::Lower { ops: &["ReduceLogSum"], apply: reduce_log_sum },
    },
    Rule {
        name: "reduce/log-sum-exp",
        identity: "ReduceLogSumExp(x, axes) = m + log(Reduce[Sum](exp(x - m))), m = Reduce[Max](x) where finite else 0",
        action: Action::Lower { ops: &["ReduceLogSumExp"], apply: reduce_log_sum_exp },
    },
    Rule {
        name: "reduce/sum-square",
        identity: "ReduceSumSquare(x, axes) = Reduce[Sum, axes](x * x)",
        action: Action::Lower { ops: &["ReduceSumSquare"], apply: reduce_sum_square },
    },
    Rule {
        name: "reduce/arg",
        identity: "ArgMax(x) = Reduce[ArgMax, axis](x); select_last_index: n - 1 - Reduce[ArgMax](flip(x))",
        action: Action::Lower { ops: &["ArgMax", "ArgMin"], apply: arg_max_min },
    },
    Rule {
        name: "reduce/softmax",
        identity: "Softmax(x) = e * recip(Reduce[Sum](e)), e = exp(x - Reduce[Max](x))",
        action: Action::Lower { ops: &["Softmax"], apply: softmax },
    },
    Rule {
        name: "reduce/log-softmax",
        identity: "LogSoftmax(x) = s - log(Reduce[Sum](exp(s))), s = x - Reduce[Max](x)",
        action: Action::Lower { ops: &["LogSoftmax"], apply: log_softmax },
    },
    Rule {
        name: "reduce/hardmax",
        identity: "Hardmax(x) = cast(iota(axis) == Reduce[ArgMax, axis](x))",
        action: Action::Lower { ops: &["Hardmax"], apply: hardmax },
    },
    Rule {
        name: "reduce/lp-normalization",
        identity: "LpNormalization(x) = norm == 0 ? 0 : x / norm, norm = ||x||_p along axis",
        action: Action::Lower { ops: &["LpNormalization"], apply: lp_normalization },
    },
    Rule {
        name: "reduce/cumsum",
        identity: "CumSum(x)[i] = Reduce[Sum, j](View(x)[i, j]) over the triangular window j <= i (guards, pad 0); long axes: log-step y += shift(y, 2^k)",
        action: Action::Lower { ops: &["CumSum"], apply: cumsum },
    },
    Rule {
        name: "reduce/cumprod",
        identity: "CumProd(x)[i] = Reduce[Prod, j](View(x)[i, j]) over the triangular window j <= i (guards, pad 1); long axes: log-step y *= shift(y, 2^k)",
        action: Action::Lower { ops: &["CumProd"], apply: cumprod },
    },
    Rule {
        name: "reduce/topk",
        identity: "TopK: rank_j = Σ_i before(i, j); perm = Scatter(rank, iota); indices = perm[:k]; values = Gather(x, indices)",
        action: Action::Lower { ops: &["TopK"], apply: top_k },
    },
];


/// A constant, shared with an equal (bitwise) constant already in the e-graph: `Lx::konst`
/// interns by pointer, so the separate rule calls of a multi-output node would otherwise
/// build distinct classes and share no subterm.
pub(crate) fn konst(lx: &mut Lx, t: Tensor) -> Id {
    let same = |c: &Tensor| {
        c.dtype() == t.dtype()
            && c.shape() == t.shape()
            && if t.dtype().is_float() {
                c.to_f64_vec().iter().zip(t.to_f64_vec()).all(|(a, b)| a.to_bits() == b.to_bits())
            } else {
                c.to_i64_vec() == t.to_i64_vec()
            }
    };
    let found = if t.numel() <= 1 << 16 { lx.eg.analysis.consts.iter().find(|c| same(c)).cloned() } else { None };
    match found {
        Some(c) => lx.konst_arc(c),
        None => lx.konst(t),
    }
}

/// A shared 0-d constant of `dtype` holding `v` (Cast semantics).
pub(crate) fn scalar(lx: &mut Lx, dtype: DType, v: f64) -> Result<Id> {
    let t = Tensor::from_vec(vec![], vec![v])?.cast(dtype);
    Ok(konst(lx, t))
}

/// A shared constant `v` broadcast to `shape`.
pub(crate) fn full(lx: &mut Lx, dtype: DType, shape: &[usize], v: f64) -> Result<Id> {
    let s = scalar(lx, dtype, v)?;
    lx.broadcast_to(s, shape)
}

/// `f(x, v)` with a shared scalar `v` of x's dtype.
pub(crate) fn binary_scalar(lx: &mut Lx, f: BinaryFn, x: Id, v: f64) -> Result<Id> {
    let s = scalar(lx, lx.dtype(x)?, v)?;
    lx.binary(f, x, s)
}

/// The indices along `axis` of a tensor of `shape` as `dtype` (a shared iota constant).
pub(crate) fn iota(lx: &mut Lx, dtype: DType, shape: &[usize], axis: usize) -> Result<Id> {
    let n = *shape.get(axis).ok_or_else(|| err("iota axis out of range"))?;
    let mut s1 = vec![1usize; shape.len()];
    s1[axis] = n;
    let line = Tensor::from_vec(s1, (0..n).map(|i| i as f64).collect::<Vec<_>>())?.cast(dtype);
    let c = konst(lx, line);
    lx.broadcast_to(c, shape)
}


/// `x` converted to its compute dtype (f16/bf16 to f32).
pub(crate) fn up(lx: &mut Lx, x: Id) -> Result<Id> {
    let d = lx.dtype(x)?;
    lx.cast(x, compute_dtype(d))
}

/// Numpy-style axis normalization (`-rank <= axis < rank`).
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    ir::shape::normalize_axis(axis, rank)
}

/// The static output shape the node must produce.
pub(crate) fn out_shape(n: &HlNode) -> Result<Vec<usize>> {
    n.ty.shape.clone().ok_or_else(|| err(format!("{} output shape is not static", n.op.kind.name())))
}

/// A `Reduce` atom with kept dims over `axes`; the operand itself for no axes (an empty
/// axes list would reduce everything).
pub(crate) fn red(lx: &mut Lx, op: ReduceFn, x: Id, axes: &[usize]) -> Result<Id> {
    if axes.is_empty() {
        return Ok(x);
    }
    lx.reduce(op, x, axes, true)
}

/// The number of elements `axes` of `shape` hold.
pub(crate) fn count(shape: &[usize], axes: &[usize]) -> usize {
    axes.iter().map(|&a| shape[a]).product()
}

/// The reduced axes of a multi-axis reduction (empty when nothing is reduced), from the
/// `axes` input (ReduceSum from opset 13, the others from 18) or attribute, with
/// `noop_with_empty_axes`.
fn reduce_axes(lx: &Lx, n: &HlNode, args: &[Option<Id>], rank: usize) -> Result<Vec<usize>> {
    let name = n.op.kind.name();
    let v = n.op.version;
    let from_input = v >= 18 || (name == "ReduceSum" && v >= 13);
    let axes: Vec<i64> = if from_input {
        match args.get(1).copied().flatten() {
            None => Vec::new(),
            Some(a) => lx.const_i64s(a, "reduction axes")?,
        }
    } else {
        n.op.attrs.ints("axes")?.map(<[i64]>::to_vec).unwrap_or_default()
    };
    if axes.is_empty() {
        let noop = n.op.attrs.int_or("noop_with_empty_axes", 0)? != 0;
        return Ok(if noop { Vec::new() } else { (0..rank).collect() });
    }
    let mut out = ir::shape::normalize_axes(&axes, rank)?;
    out.sort_unstable();
    Ok(out)
}

/// The operand, the reduced axes and the output shape of a multi-axis reduction.
fn reduce_setup(lx: &Lx, n: &HlNode, args: &[Option<Id>]) -> Result<(Id, Vec<usize>, Vec<usize>)> {
    let x = arg(args, 0)?;
    let axes = reduce_axes(lx, n, args, lx.rank(x)?)?;
    Ok((x, axes, out_shape(n)?))
}

fn simple_reduce(lx: &mut Lx, n: &HlNode, args: &[Option<Id>], op: ReduceFn) -> Result<Option<Id>> {
    let (x, axes, out) = reduce_setup(lx, n, args)?;
    let y = red(lx, op, x, &axes)?;
    lx.reshape(y, &out).map(Some)
}

fn reduce_sum(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    simple_reduce(lx, n, args, ReduceFn::Sum)
}

fn reduce_max(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    simple_reduce(lx, n, args, ReduceFn::Max)
}

fn reduce_min(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    simple_reduce(lx, n, args, ReduceFn::Min)
}

fn reduce_prod(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    simple_reduce(lx, n, args, ReduceFn::Prod)
}

fn reduce_mean(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, axes, out) = reduce_setup(lx, n, args)?;
    let dtype = lx.dtype(x)?;
    let cnt = count(&lx.shape(x)?, &axes);
    let y = if dtype.is_float() {
        let xu = up(lx, x)?;
        let s = red(lx, ReduceFn::Sum, xu, &axes)?;
        let m = binary_scalar(lx, BinaryFn::Div, s, cnt as f64)?;
        lx.cast(m, dtype)?
    } else {
        // Integers: the truncated quotient (the reference's f64 mean converted back); an
        // empty mean is 0 (NaN converted to an integer).
        let s = red(lx, ReduceFn::Sum, x, &axes)?;
        if cnt == 0 { s } else { binary_scalar(lx, BinaryFn::Div, s, cnt as f64)? }
    };
    lx.reshape(y, &out).map(Some)
}

fn reduce_l1(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, axes, out) = reduce_setup(lx, n, args)?;
    let a = lx.unary(UnaryFn::Abs, x)?;
    let y = red(lx, ReduceFn::Sum, a, &axes)?;
    lx.reshape(y, &out).map(Some)
}

fn reduce_sum_square(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, axes, out) = reduce_setup(lx, n, args)?;
    let dtype = lx.dtype(x)?;
    let xu = up(lx, x)?;
    let sq = lx.mul(xu, xu)?;
    let y = red(lx, ReduceFn::Sum, sq, &axes)?;
    let y = lx.cast(y, dtype)?;
    lx.reshape(y, &out).map(Some)
}

/// The operand in the dtype the float-valued reductions compute in: f32 for f16/bf16,
/// f64 for integers (the reference goes through f64), else itself.
fn float_compute(lx: &mut Lx, x: Id) -> Result<Id> {
    let d = lx.dtype(x)?;
    if d.is_float() { up(lx, x) } else { lx.cast(x, DType::F64) }
}

fn reduce_l2(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, axes, out) = reduce_setup(lx, n, args)?;
    let dtype = lx.dtype(x)?;
    let xc = float_compute(lx, x)?;
    let sq = lx.mul(xc, xc)?;
    let s = red(lx, ReduceFn::Sum, sq, &axes)?;
    let y = lx.unary(UnaryFn::Sqrt, s)?;
    let y = lx.cast(y, dtype)?;
    lx.reshape(y, &out).map(Some)
}

fn reduce_log_sum(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, axes, out) = reduce_setup(lx, n, args)?;
    let dtype = lx.dtype(x)?;
    let xc = float_compute(lx, x)?;
    let s = red(lx, ReduceFn::Sum, xc, &axes)?;
    let y = lx.unary(UnaryFn::Log, s)?;
    let y = lx.cast(y, dtype)?;
    lx.reshape(y, &out).map(Some)
}

fn reduce_log_sum_exp(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, axes, out) = reduce_setup(lx, n, args)?;
    let dtype = lx.dtype(x)?;
    let xc = float_compute(lx, x)?;
    let m = red(lx, ReduceFn::Max, xc, &axes)?;
    // The shift is the max where it is finite, else 0 (all -inf lanes, empty lanes and
    // +inf lanes then give -inf, -inf and +inf as the reference's online form does).
    let am = lx.unary(UnaryFn::Abs, m)?;
    let inf = scalar(lx, lx.dtype(xc)?, f64::INFINITY)?;
    let finite = lx.binary(BinaryFn::Lt, am, inf)?;
    let zero = scalar(lx, lx.dtype(xc)?, 0.0)?;
    let shift = lx.select(finite, m, zero)?;
    let d = lx.sub(xc, shift)?;
    let e = lx.unary(UnaryFn::Exp, d)?;
    let s = red(lx, ReduceFn::Sum, e, &axes)?;
    let l = lx.unary(UnaryFn::Log, s)?;
    let y = lx.add(shift, l)?;
    let y = lx.cast(y, dtype)?;
    lx.reshape(y, &out).map(Some)
}

fn arg_max_min(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let shape = lx.shape(x)?;
    let axis = norm_axis(n.op.attrs.int_or("axis", 0)?, shape.len())?;
    let last = n.op.attrs.int_or("select_last_index", 0)? != 0;
    let op = if n.op.kind.name() == "ArgMax" { ReduceFn::ArgMax } else { ReduceFn::ArgMin };
    let src = if last { lx.flip(x, axis)? } else { x };
    let mut idx = lx.atom(Atom::Reduce { op, axes: vec![axis] }, &[src])?;
    if last {
        // The first extremum of the flipped lane is the last of the lane.
        let top = scalar(lx, DType::I64, shape[axis] as f64 - 1.0)?;
        idx = lx.sub(top, idx)?;
    }
    lx.reshape(idx, &out_shape(n)?).map(Some)
}

/// The operand of Softmax/LogSoftmax/Hardmax reshaped so the normalized lanes lie along one
/// axis: before opset 13 the input coerced to 2-D at `axis` (default 1), from 13 the input
/// itself with `axis` (default -1). Returns the reshaped operand and the axis.
fn normalization_lanes(lx: &mut Lx, n: &HlNode, x: Id) -> Result<(Id, usize)> {
    let shape = lx.shape(x)?;
    let rank = shape.len();
    if n.op.version < 13 {
        let axis = n.op.attrs.int_or("axis", 1)?;
        let axis = if axis == rank as i64 { rank } else { norm_axis(axis, rank.max(1))? }.min(rank);
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis..].iter().product();
        let x2 = lx.reshape(x, &[outer, inner])?;
        return Ok((x2, 1));
    }
    if rank == 0 {
        return Err(err(format!("{} needs an input of rank at least 1", n.op.kind.name())));
    }
    Ok((x, norm_axis(n.op.attrs.int_or("axis", -1)?, rank)?))
}

/// Softmax (or log-softmax) along `axis`, in the compute dtype, max-shifted.
pub(crate) fn softmax_along(lx: &mut Lx, x: Id, axis: usize, log: bool) -> Result<Id> {
    let m = lx.reduce(ReduceFn::Max, x, &[axis], true)?;
    let s = lx.sub(x, m)?;
    let e = lx.unary(UnaryFn::Exp, s)?;
    let sum = lx.reduce(ReduceFn::Sum, e, &[axis], true)?;
    if log {
        let l = lx.unary(UnaryFn::Log, sum)?;
        lx.sub(s, l)
    } else {
        let r = lx.unary(UnaryFn::Recip, sum)?;
        lx.mul(e, r)
    }
}

fn softmax_rule(lx: &mut Lx, n: &HlNode, args: &[Option<Id>], log: bool) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let dtype = lx.dtype(x)?;
    let shape = lx.shape(x)?;
    if shape.iter().product::<usize>() == 0 {
        return Ok(Some(x));
    }
    let (xr, axis) = normalization_lanes(lx, n, x)?;
    let xu = up(lx, xr)?;
    let y = softmax_along(lx, xu, axis, log)?;
    let y = lx.cast(y, dtype)?;
    lx.reshape(y, &shape).map(Some)
}

fn softmax(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    softmax_rule(lx, n, args, false)
}

fn log_softmax(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    softmax_rule(lx, n, args, true)
}

fn hardmax(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let dtype = lx.dtype(x)?;
    let shape = lx.shape(x)?;
    if shape.iter().product::<usize>() == 0 {
        return Ok(Some(x));
    }
    let (xr, axis) = normalization_lanes(lx, n, x)?;
    let rs = lx.shape(xr)?;
    let idx = lx.atom(Atom::Reduce { op: ReduceFn::ArgMax, axes: vec![axis] }, &[xr])?;
    let iota = iota(lx, DType::I64, &rs, axis)?;
    let hit = lx.binary(BinaryFn::Eq, iota, idx)?;
    let y = lx.cast(hit, dtype)?;
    lx.reshape(y, &shape).map(Some)
}

fn lp_normalization(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let dtype = lx.dtype(x)?;
    let rank = lx.rank(x)?;
    if rank == 0 {
        return Err(err("LpNormalization needs an input of rank at least 1"));
    }
    let axis = norm_axis(n.op.attrs.int_or("axis", -1)?, rank)?;
    let p = n.op.attrs.int_or("p", 2)?;
    let xu = up(lx, x)?;
    let norm = match p {
        1 => {
            let a = lx.unary(UnaryFn::Abs, xu)?;
            lx.reduce(ReduceFn::Sum, a, &[axis], true)?
        }
        2 => {
            let sq = lx.mul(xu, xu)?;
            let s = lx.reduce(ReduceFn::Sum, sq, &[axis], true)?;
            lx.unary(UnaryFn::Sqrt, s)?
        }
        p => return Err(err(format!("LpNormalization attribute 'p' must be 1 or 2, got {p}"))),
    };
    let cd = lx.dtype(xu)?;
    let zero = scalar(lx, cd, 0.0)?;
    let is_zero = lx.binary(BinaryFn::Eq, norm, zero)?;
    let q = lx.div(xu, norm)?;
    let y = lx.select(is_zero, zero, q)?;
    lx.cast(y, dtype).map(Some)
}

/// Inclusive or exclusive, forward or reverse running sum (or product) of `x` along `axis`:
/// a window view `[outer, n, n, inner]` whose element `(i, j)` is `x[j]` where `j` is in
/// the running range of `i` and the neutral element elsewhere, reduced over `j`.
pub(crate) fn scan_along(lx: &mut Lx, x: Id, axis: usize, exclusive: bool, reverse: bool, prod: bool) -> Result<Id> {
    let shape = lx.shape(x)?;
    if shape.iter().product::<usize>() == 0 {
        return Ok(x);
    }
    let outer: usize = shape[..axis].iter().product();
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    if n > WINDOW_SCAN_MAX {
        return log_step_scan(lx, x, [outer, n, inner], exclusive, reverse, prod);
    }
    let (ni, ii) = (n as i64, inner as i64);
    // Forward: i - j (- 1 when exclusive) in [0, n); reverse: j - i (- 1).
    let (ci, cj) = if reverse { (-1, 1) } else { (1, -1) };
    let guard = Guard { coefs: vec![0, ci, cj, 0], offset: if exclusive { -1 } else { 0 }, bound: ni };
    let view = ViewMap {
        shape: vec![outer, n, n, inner],
        strides: vec![ni * ii, 0, ii, 1],
        offset: 0,
        guards: vec![guard],
        pad: if prod { 1.0 } else { 0.0 },
    };
    let w = lx.view(x, view)?;
    let op = if prod { ReduceFn::Prod } else { ReduceFn::Sum };
    let r = lx.atom(Atom::Reduce { op, axes: vec![2] }, &[w])?;
    lx.reshape(r, &shape)
}

/// The longest scanned axis that uses the `n x n` window; longer ones use the log-step scan.
pub(crate) const WINDOW_SCAN_MAX: usize = 16;

/// The running sum (product) of `x` seen as `[outer, n, inner]` by log-step doubling
/// (Hillis-Steele): `y += shift(y, s)` for `s = 1, 2, 4, ...`, the shift a padding view
/// with the neutral element; exclusive scans shift the input by one first. Floats are
/// computed in f32 for f16/bf16.
fn log_step_scan(
    lx: &mut Lx,
    x: Id,
    [outer, n, inner]: [usize; 3],
    exclusive: bool,
    reverse: bool,
    prod: bool,
) -> Result<Id> {
    let shape = lx.shape(x)?;
    let dtype = lx.dtype(x)?;
    let xu = up(lx, x)?;
    let x3 = lx.reshape(xu, &[outer, n, inner])?;
    let neutral = if prod { 1.0 } else { 0.0 };
    let f = if prod { BinaryFn::Mul } else { BinaryFn::Add };
    let shift = |lx: &mut Lx, y: Id, s: i64| {
        let (b, e) = if reverse { (-s, s) } else { (s, -s) };
        lx.pad(y, &[0, b, 0], &[0, e, 0], neutral)
    };
    let mut y = if exclusive { shift(lx, x3, 1)? } else { x3 };
    let mut s = 1usize;
    while s < n {
        let z = shift(lx, y, s as i64)?;
        y = lx.binary(f, y, z)?;
        s *= 2;
    }
    let y = lx.cast(y, dtype)?;
    lx.reshape(y, &shape)
}

fn scan_rule(lx: &mut Lx, n: &HlNode, args: &[Option<Id>], prod: bool) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let a = arg(args, 1)?;
    let rank = lx.rank(x)?;
    if rank == 0 {
        return Err(err("cannot scan a rank-0 tensor"));
    }
    let exclusive = n.op.attrs.int_or("exclusive", 0)? != 0;
    let reverse = n.op.attrs.int_or("reverse", 0)? != 0;
    if lx.value(a).is_some() {
        let v = lx.const_i64s(a, "scan axis")?;
        if v.len() != 1 {
            return Err(err("the scan axis must be a single value"));
        }
        let axis = norm_axis(v[0], rank)?;
        return scan_along(lx, x, axis, exclusive, reverse, prod).map(Some);
    }
    // A run-time axis: every candidate axis, picked by comparing the axis value.
    let ai = lx.cast(a, DType::I64)?;
    let mut acc = scan_along(lx, x, rank - 1, exclusive, reverse, prod)?;
    for axis in (0..rank - 1).rev() {
        let y = scan_along(lx, x, axis, exclusive, reverse, prod)?;
        let p = scalar(lx, DType::I64, axis as f64)?;
        let q = scalar(lx, DType::I64, axis as f64 - rank as f64)?;
        let is_p = lx.binary(BinaryFn::Eq, ai, p)?;
        let is_q = lx.binary(BinaryFn::Eq, ai, q)?;
        let hit = lx.binary(BinaryFn::Or, is_p, is_q)?;
        let hit = lx.reshape(hit, &[])?;
        acc = lx.select(hit, y, acc)?;
    }
    Ok(Some(acc))
}

fn cumsum(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    scan_rule(lx, n, args, false)
}

fn cumprod(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    scan_rule(lx, n, args, true)
}

/// `a > b` in the reference's sort order (NaN above every number, NaNs equal), with the
/// NaN masks `a_nan` and `b_num` (b is not NaN) given for floats.
fn greater_total(lx: &mut Lx, a: Id, b: Id, nan: Option<(Id, Id)>) -> Result<Id> {
    let gt = lx.binary(BinaryFn::Gt, a, b)?;
    let Some((a_nan, b_num)) = nan else { return Ok(gt) };
    let nan_above = lx.binary(BinaryFn::And, a_nan, b_num)?;
    lx.binary(BinaryFn::Or, gt, nan_above)
}

fn top_k(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let shape = lx.shape(x)?;
    let rank = shape.len();
    if rank == 0 {
        return Err(err("TopK needs an input of rank at least 1"));
    }
    let k = if n.op.version >= 10 {
        let v = lx.const_i64s(arg(args, 1)?, "TopK k")?;
        *v.first().ok_or_else(|| err("TopK k is empty"))?
    } else {
        n.op.attrs.req_int("k")?
    };
    let axis = norm_axis(n.op.attrs.int_or("axis", -1)?, rank)?;
    let largest = n.op.attrs.int_or("largest", 1)? != 0;
    let len = shape[axis];
    let k =
        usize::try_from(k).ok().filter(|&k| k <= len).ok_or_else(|| err(format!("TopK k = {k} is out of range")))?;
    let out = out_shape(n)?;
    let dtype = lx.dtype(x)?;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    if outer * k * inner == 0 {
        let d = if n.output == 0 { dtype } else { DType::I64 };
        return full(lx, d, &out, 0.0).map(Some);
    }
    let x3 = lx.reshape(x, &[outer, len, inner])?;
    // Pairwise views [outer, i, j, inner]: a = x[i], b = x[j].
    let (li, ii) = (len as i64, inner as i64);
    let pair = |si: i64, sj: i64| ViewMap {
        shape: vec![outer, len, len, inner],
        strides: vec![li * ii, si, sj, 1],
        offset: 0,
        guards: vec![],
        pad: 0.0,
    };
    let xi = lx.view(x3, pair(ii, 0))?;
    let xj = lx.view(x3, pair(0, ii))?;
    // i before j: i's value comes first, or the values tie and i < j.
    let (gn, hn) = if dtype.is_float() {
        // NaN masks of the n elements, viewed pairwise (not recomputed per pair).
        let nan = lx.unary(UnaryFn::IsNaN, x3)?;
        let num = lx.unary(UnaryFn::Not, nan)?;
        let (nan_i, nan_j) = (lx.view(nan, pair(ii, 0))?, lx.view(nan, pair(0, ii))?);
        let (num_i, num_j) = (lx.view(num, pair(ii, 0))?, lx.view(num, pair(0, ii))?);
        (Some((nan_i, num_j)), Some((nan_j, num_i)))
    } else {
        (None, None)
    };
    let g = greater_total(lx, xi, xj, gn)?;
    let h = greater_total(lx, xj, xi, hn)?;
    let (first, second) = if largest { (g, h) } else { (h, g) };
    let lower: Vec<bool> = (0..len * len).map(|p| p / len < p % len).collect();
    let lower = konst(lx, Tensor::from_vec(vec![1, len, len, 1], lower)?);
    let lower = lx.broadcast_to(lower, &[outer, len, len, inner])?;
    let not_second = lx.unary(UnaryFn::Not, second)?;
    let tie = lx.binary(BinaryFn::And, not_second, lower)?;
    let before = lx.binary(BinaryFn::Or, first, tie)?;
    let before = lx.cast(before, DType::I64)?;
    let rank_of = lx.atom(Atom::Reduce { op: ReduceFn::Sum, axes: vec![1] }, &[before])?;
    let rank_of = lx.reshape(rank_of, &[outer, len, inner])?;
    // perm[r] = the index whose rank is r.
    let iota = iota(lx, DType::I64, &[outer, len, inner], 1)?;
    let zeros = full(lx, DType::I64, &[outer, len, inner], 0.0)?;
    let perm = lx.atom(Atom::Scatter { axis: 1, mode: ScatterMode::Replace }, &[zeros, rank_of, iota])?;
    let idx = lx.strided(perm, &[(0, outer, 1), (0, k, 1), (0, inner, 1)])?;
    if n.output == 1 {
        return lx.reshape(idx, &out).map(Some);
    }
    let vals = lx.atom(Atom::Gather { axis: 1 }, &[x3, idx])?;
    lx.reshape(vals, &out).map(Some)
}
