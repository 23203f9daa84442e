//! Rules of the linalg family: `MatMul` is the MatMul atom (numpy broadcasting through
//! views), `Gemm` adds transposing views, scaling and the broadcast bias, `Einsum` becomes
//! diagonal/broadcast views, sums of single-operand labels and one batched MatMul per
//! operand pair, `Det` is an unrolled LU factorization with partial pivoting (ArgMax, a row
//! Gather and Select), and the integer forms subtract zero points in i32 and requantize
//! with the reference's rounding.

use crate::rules::{err, compute_dtype};
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{Atom, BinaryFn, ReduceFn, UnaryFn, ViewMap, row_major};
use ir::ops::linalg::{GemmDims, QuantAxis, einsum_sizes, gemm_dims, parse_einsum, quant_param_shape};
use ir::{DType, Result};

pub const RULES: &[Rule] = &[
    Rule {
        name: "linalg/matmul",
        identity: "MatMul(a, b) = MatMul atom over numpy-broadcast views of a and b",
        action: Action::Lower { ops: &["MatMul"], apply: matmul },
    },
    Rule {
        name: "linalg/gemm",
        identity: "Gemm(A, B, C) = alpha * (A' @ B') + beta * C, A'/B' transposing views",
        action: Action::Lower { ops: &["Gemm"], apply: gemm },
    },
    Rule {
        name: "linalg/einsum",
        identity: "Einsum = diagonal views, sums of private labels, batched MatMul per pair, transpose",
        action: Action::Lower { ops: &["Einsum"], apply: einsum },
    },
    Rule {
        name: "linalg/det",
        identity: "Det(X) = product of LU pivots (partial pivoting unrolled) with the swap signs",
        action: Action::Lower { ops: &["Det"], apply: det },
    },
    Rule {
        name: "linalg/matmul-integer",
        identity: "MatMulInteger(a, b, za, zb) = MatMul(i32(a) - za, i32(b) - zb)",
        action: Action::Lower { ops: &["MatMulInteger"], apply: matmul_integer },
    },
    Rule {
        name: "linalg/qlinear-matmul",
        identity: "QLinearMatMul = saturate(round_even(MatMulInteger * (sa*sb/sy) + zy))",
        action: Action::Lower { ops: &["QLinearMatMul"], apply: qlinear_matmul },
    },
];


// ---- shared helpers (also used by the conv family) ------------------------------------


/// `x` cast to its compute dtype.
pub(crate) fn promote(lx: &mut Lx, x: Id) -> Result<Id> {
    let d = lx.dtype(x)?;
    lx.cast(x, compute_dtype(d))
}

/// `x * factor` with the reference's attribute scaling: floats multiply by the factor in
/// their own precision, integers go through f64 and back (truncating, saturating).
pub(crate) fn scale_by(lx: &mut Lx, x: Id, factor: f32) -> Result<Id> {
    let d = lx.dtype(x)?;
    if d.is_float() {
        return lx.binary_scalar(BinaryFn::Mul, x, factor as f64);
    }
    let f = lx.cast(x, DType::F64)?;
    let y = lx.binary_scalar(BinaryFn::Mul, f, factor as f64)?;
    lx.cast(y, d)
}

/// `i32(t) - i32(zero_point)`, the zero point per tensor, row (`rows`) or column.
fn minus_zero_point(lx: &mut Lx, t: Id, zp: Option<Id>, axis: QuantAxis) -> Result<Id> {
    let t32 = lx.cast(t, DType::I32)?;
    let Some(z) = zp else { return Ok(t32) };
    let zshape = quant_param_shape(&lx.shape(z)?, &lx.shape(t)?, axis, "zero point")?;
    let z32 = lx.cast(z, DType::I32)?;
    let z32 = lx.reshape(z32, &zshape)?;
    lx.sub(t32, z32)
}

/// `x` (f32) rounded to the precision of `d` when `d` is a half type (as the reference
/// computes f16/bf16 scale products).
pub(crate) fn round_to(lx: &mut Lx, x: Id, d: DType) -> Result<Id> {
    if matches!(d, DType::F16 | DType::BF16) {
        let h = lx.cast(x, d)?;
        return lx.cast(h, DType::F32);
    }
    Ok(x)
}

/// `saturate(round_half_even(acc * mult + zp))` in f64, cast to `out` (i8 or u8): the
/// reference requantization of an i32 accumulator.
pub(crate) fn requantize(lx: &mut Lx, acc: Id, mult: Id, zp: Id, out: DType) -> Result<Id> {
    let a = lx.cast(acc, DType::F64)?;
    let m = lx.cast(mult, DType::F64)?;
    let z = lx.cast(zp, DType::F64)?;
    let v = lx.mul(a, m)?;
    let v = lx.add(v, z)?;
    let v = lx.unary(UnaryFn::Round, v)?;
    let (lo, hi) = if out == DType::I8 { (-128.0, 127.0) } else { (0.0, 255.0) };
    let v = lx.binary_scalar(BinaryFn::Max, v, lo)?;
    let v = lx.binary_scalar(BinaryFn::Min, v, hi)?;
    lx.cast(v, out)
}

// ---- MatMul, Gemm ----------------------------------------------------------------------

fn matmul(lx: &mut Lx, _n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (a, b) = (arg(args, 0)?, arg(args, 1)?);
    // The MatMul atom's semantics are MatMul's (f16 computes in f32 and rounds once).
    lx.matmul(a, b).map(Some)
}

fn gemm(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let attrs = &n.op.attrs;
    let alpha = attrs.float_or("alpha", 1.0)?;
    let beta = attrs.float_or("beta", 1.0)?;
    let out = n.ty.dtype;
    let a = promote(lx, arg(args, 0)?)?;
    let b = promote(lx, arg(args, 1)?)?;
    let c_shape = match args.get(2).copied().flatten() {
        Some(c) => Some(lx.shape(c)?),
        None => None,
    };
    let GemmDims { trans_a, trans_b, .. } = gemm_dims(attrs, &lx.shape(a)?, &lx.shape(b)?, c_shape.as_deref())?;
    let a = if trans_a { lx.transpose(a, &[1, 0])? } else { a };
    let b = if trans_b { lx.transpose(b, &[1, 0])? } else { b };
    let mut y = lx.matmul(a, b)?;
    if alpha != 1.0 {
        y = scale_by(lx, y, alpha)?;
    }
    if let Some(c) = args.get(2).copied().flatten() {
        let mut c = promote(lx, c)?;
        if beta != 1.0 {
            c = scale_by(lx, c, beta)?;
        }
        y = lx.add(y, c)?;
    }
    lx.cast(y, out).map(Some)
}

// ---- MatMulInteger, QLinearMatMul ------------------------------------------------------

fn matmul_integer(lx: &mut Lx, _n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (a, b) = (arg(args, 0)?, arg(args, 1)?);
    let za = args.get(2).copied().flatten();
    let zb = args.get(3).copied().flatten();
    let a = minus_zero_point(lx, a, za, QuantAxis::Rows)?;
    let b = minus_zero_point(lx, b, zb, QuantAxis::Cols)?;
    lx.matmul(a, b).map(Some)
}

fn qlinear_matmul(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (a, b) = (arg(args, 0)?, arg(args, 3)?);
    let (sa, za, sb, zb) = (arg(args, 1)?, args.get(2).copied().flatten(), arg(args, 4)?, args.get(5).copied().flatten());
    let (sy, zy) = (arg(args, 6)?, arg(args, 7)?);
    let (ash, bsh) = (lx.shape(a)?, lx.shape(b)?);
    let a32 = minus_zero_point(lx, a, za, QuantAxis::Rows)?;
    let b32 = minus_zero_point(lx, b, zb, QuantAxis::Cols)?;
    let acc = lx.matmul(a32, b32)?;
    // The accumulator as (batch.., m, n), operands as matrices (1-D expanded).
    let k = *ash.last().ok_or_else(|| err("QLinearMatMul A must have rank >= 1"))?;
    let a_mat = if ash.len() == 1 { vec![1, k] } else { ash.clone() };
    let b_mat = if bsh.len() == 1 { vec![k, 1] } else { bsh.clone() };
    let (m, nn) = (a_mat[a_mat.len() - 2], b_mat[b_mat.len() - 1]);
    let batch = ir::shape::broadcast(&a_mat[..a_mat.len() - 2], &b_mat[..b_mat.len() - 2])?;
    let mut full = batch;
    full.extend([m, nn]);
    let acc = lx.reshape(acc, &full)?;
    let scale_dtype = lx.dtype(sa)?;
    let sa_shape = quant_param_shape(&lx.shape(sa)?, &a_mat, QuantAxis::Rows, "a_scale")?;
    let sb_shape = quant_param_shape(&lx.shape(sb)?, &b_mat, QuantAxis::Cols, "b_scale")?;
    let sa = lx.cast(sa, DType::F32)?;
    let sa = lx.reshape(sa, &sa_shape)?;
    let sb = lx.cast(sb, DType::F32)?;
    let sb = lx.reshape(sb, &sb_shape)?;
    let sy = lx.cast(sy, DType::F32)?;
    let p = lx.mul(sa, sb)?;
    let p = round_to(lx, p, scale_dtype)?;
    let mult = lx.div(p, sy)?;
    let mult = round_to(lx, mult, scale_dtype)?;
    let y = requantize(lx, acc, mult, zy, n.ty.dtype)?;
    if lx.shape(y)? != full {
        return Err(err("QLinearMatMul scales or zero point do not fit the output"));
    }
    let out = n.ty.shape.clone().ok_or_else(|| err("QLinearMatMul output shape is not static"))?;
    lx.reshape(y, &out).map(Some)
}

// ---- Einsum ----------------------------------------------------------------------------

/// Sums `x` (labels `ls`) over the labels for which `drop` holds.
fn sum_labels(lx: &mut Lx, x: Id, ls: &[usize], drop: impl Fn(usize) -> bool) -> Result<(Id, Vec<usize>)> {
    let axes: Vec<usize> = (0..ls.len()).filter(|&i| drop(ls[i])).collect();
    if axes.is_empty() {
        return Ok((x, ls.to_vec()));
    }
    let y = lx.reduce(ReduceFn::Sum, x, &axes, false)?;
    Ok((y, ls.iter().copied().filter(|&l| !drop(l)).collect()))
}

/// `x` (labels `ls`) transposed to the label order `order` (a permutation of `ls`).
fn to_order(lx: &mut Lx, x: Id, ls: &[usize], order: &[usize]) -> Result<Id> {
    let perm: Vec<usize> =
        order.iter().map(|l| ls.iter().position(|x| x == l).ok_or_else(|| err("einsum label lost"))).collect::<Result<_>>()?;
    lx.transpose(x, &perm)
}

/// Contracts two operands with distinct labels, keeping the labels in `keep`.
fn contract(lx: &mut Lx, a: (Id, Vec<usize>), b: (Id, Vec<usize>), keep: &[usize], sizes: &[Option<usize>]) -> Result<(Id, Vec<usize>)> {
    let (la0, lb0) = (a.1.clone(), b.1.clone());
    let (a, la) = sum_labels(lx, a.0, &a.1, |l| !lb0.contains(&l) && !keep.contains(&l))?;
    let (b, lb) = sum_labels(lx, b.0, &b.1, |l| !la0.contains(&l) && !keep.contains(&l))?;
    let batch: Vec<usize> = la.iter().copied().filter(|l| lb.contains(l) && keep.contains(l)).collect();
    let inner: Vec<usize> = la.iter().copied().filter(|l| lb.contains(l) && !keep.contains(l)).collect();
    let rows: Vec<usize> = la.iter().copied().filter(|l| !lb.contains(l)).collect();
    let cols: Vec<usize> = lb.iter().copied().filter(|l| !la.contains(l)).collect();
    let size = |ls: &[usize]| -> usize { ls.iter().map(|&l| sizes[l].unwrap_or(1)).product() };
    let dims = |ls: &[usize]| -> Vec<usize> { ls.iter().map(|&l| sizes[l].unwrap_or(1)).collect() };
    if inner.is_empty() {
        // No contraction: an elementwise product of broadcast views in the order
        // a's labels then b's own.
        let mut out_l = la.clone();
        out_l.extend(&cols);
        let b_order: Vec<usize> = la.iter().copied().filter(|l| lb.contains(l)).chain(cols.iter().copied()).collect();
        let bt = to_order(lx, b, &lb, &b_order)?;
        let bshape: Vec<usize> = out_l.iter().map(|l| if lb.contains(l) { sizes[*l].unwrap_or(1) } else { 1 }).collect();
        let bt = lx.reshape(bt, &bshape)?;
        let ashape: Vec<usize> = out_l.iter().map(|l| if la.contains(l) { sizes[*l].unwrap_or(1) } else { 1 }).collect();
        let at = lx.reshape(a, &ashape)?;
        let y = lx.mul(at, bt)?;
        return Ok((y, out_l));
    }
    let a_order: Vec<usize> = batch.iter().chain(&rows).chain(&inner).copied().collect();
    let b_order: Vec<usize> = batch.iter().chain(&inner).chain(&cols).copied().collect();
    let at = to_order(lx, a, &la, &a_order)?;
    let at = lx.reshape(at, &[size(&batch), size(&rows), size(&inner)])?;
    let bt = to_order(lx, b, &lb, &b_order)?;
    let bt = lx.reshape(bt, &[size(&batch), size(&inner), size(&cols)])?;
    let y = lx.atom(Atom::MatMul, &[at, bt])?;
    let out_l: Vec<usize> = batch.iter().chain(&rows).chain(&cols).copied().collect();
    let y = lx.reshape(y, &dims(&out_l))?;
    Ok((y, out_l))
}

fn einsum(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let equation = n.op.attrs.string("equation")?.ok_or_else(|| err("Einsum needs 'equation'"))?.to_string();
    let xs: Vec<Id> = args.iter().map(|a| a.ok_or_else(|| err("Einsum input is missing"))).collect::<Result<_>>()?;
    let xs: Vec<Id> = xs.into_iter().map(|x| promote(lx, x)).collect::<Result<_>>()?;
    let shapes: Vec<Vec<usize>> = xs.iter().map(|&x| lx.shape(x)).collect::<Result<_>>()?;
    let ranks: Vec<usize> = shapes.iter().map(|s| s.len()).collect();
    let plan = parse_einsum(&equation, &ranks)?;
    let sizes = einsum_sizes(&plan, &shapes.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
    // Each operand as a view with distinct labels (diagonals: summed strides) broadcast to
    // the full label sizes.
    let mut ops: Vec<(Id, Vec<usize>)> = Vec::new();
    for ((&x, labels), shape) in xs.iter().zip(&plan.inputs).zip(&shapes) {
        let st = row_major(shape);
        let mut uniq: Vec<usize> = Vec::new();
        for &l in labels {
            if !uniq.contains(&l) {
                uniq.push(l);
            }
        }
        let vshape: Vec<usize> = uniq.iter().map(|&l| sizes[l].unwrap_or(1)).collect();
        let strides: Vec<i64> = uniq
            .iter()
            .map(|&u| labels.iter().zip(shape.iter().zip(&st)).filter(|&(&l, (&d, _))| l == u && d != 1).map(|(_, (_, &s))| s).sum())
            .collect();
        let v = if vshape.contains(&0) { ViewMap::identity(&vshape) } else { ViewMap { shape: vshape.clone(), strides, offset: 0, guards: vec![], pad: 0.0 } };
        let x = if vshape.contains(&0) {
            let d = lx.dtype(x)?;
            lx.full(d, &vshape, 0.0)?
        } else {
            lx.view(x, v)?
        };
        ops.push((x, uniq));
    }
    let mut rest = ops.into_iter();
    let first = rest.next().ok_or_else(|| err("Einsum has no inputs"))?;
    let later: Vec<(Id, Vec<usize>)> = rest.collect();
    // Labels needed after operand i: the output's and those of later operands.
    let needed_after = |i: usize| -> Vec<usize> {
        let mut k = plan.output.clone();
        for (_, ls) in &later[i..] {
            k.extend(ls);
        }
        k
    };
    let keep0 = needed_after(0);
    let mut acc = sum_labels(lx, first.0, &first.1, |l| !keep0.contains(&l))?;
    for (i, op) in later.iter().enumerate() {
        let keep = needed_after(i + 1);
        acc = contract(lx, acc, op.clone(), &keep, &sizes)?;
    }
    let out_labels = plan.output.clone();
    let (y, ls) = sum_labels(lx, acc.0, &acc.1, |l| !out_labels.contains(&l))?;
    let y = to_order(lx, y, &ls, &out_labels)?;
    lx.cast(y, n.ty.dtype).map(Some)
}

// ---- Det -------------------------------------------------------------------------------

fn det(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = promote(lx, arg(args, 0)?)?;
    let d = lx.dtype(x)?;
    let shape = lx.shape(x)?;
    let r = shape.len();
    if r < 2 || shape[r - 1] != shape[r - 2] {
        return Err(err("Det needs square matrices"));
    }
    let batch = shape[..r - 2].to_vec();
    let nb: usize = batch.iter().product();
    let size = shape[r - 1];
    if size == 0 || nb == 0 {
        let one = lx.full(d, &batch, 1.0)?;
        return lx.cast(one, n.ty.dtype).map(Some);
    }
    let mut s = lx.reshape(x, &[nb, size, size])?;
    let mut det = lx.full(d, &[nb], 1.0)?;
    let mut zero: Option<Id> = None;
    for step in 0..size {
        let m = size - step;
        let pivot;
        if m == 1 {
            pivot = lx.reshape(s, &[nb])?;
        } else {
            // p = the first row of maximal |a| in the column; P = that row.
            let col = lx.strided(s, &[(0, nb, 1), (0, m, 1), (0, 1, 1)])?;
            let abs = lx.unary(UnaryFn::Abs, col)?;
            let p = lx.atom(Atom::Reduce { op: ReduceFn::ArgMax, axes: vec![1] }, &[abs])?;
            let idx = lx.broadcast_to(p, &[nb, 1, m])?;
            let prow = lx.atom(Atom::Gather { axis: 1 }, &[s, idx])?;
            let pv = lx.strided(prow, &[(0, nb, 1), (0, 1, 1), (0, 1, 1)])?;
            pivot = lx.reshape(pv, &[nb])?;
            // Swap: the pivot row's place takes row 0; rows 1.. remain.
            let io = lx.iota(DType::I64, &[nb, m, 1], 1)?;
            let is_p = lx.binary(BinaryFn::Eq, io, p)?;
            let row0 = lx.strided(s, &[(0, nb, 1), (0, 1, 1), (0, m, 1)])?;
            let swapped = lx.select(is_p, row0, s)?;
            let rest = lx.strided(swapped, &[(0, nb, 1), (1, m - 1, 1), (1, m - 1, 1)])?;
            let lead = lx.strided(swapped, &[(0, nb, 1), (1, m - 1, 1), (0, 1, 1)])?;
            let pb = lx.reshape(pivot, &[nb, 1, 1])?;
            let f = lx.div(lead, pb)?;
            let prest = lx.strided(prow, &[(0, nb, 1), (0, 1, 1), (1, m - 1, 1)])?;
            let fp = lx.mul(f, prest)?;
            s = lx.sub(rest, fp)?;
            // A swap negates the determinant.
            let zi = lx.scalar(DType::I64, 0.0)?;
            let moved = lx.binary(BinaryFn::Gt, p, zi)?;
            let moved = lx.reshape(moved, &[nb])?;
            let neg = lx.unary(UnaryFn::Neg, det)?;
            det = lx.select(moved, neg, det)?;
        }
        det = lx.mul(det, pivot)?;
        let zf = lx.scalar(d, 0.0)?;
        let z = lx.binary(BinaryFn::Eq, pivot, zf)?;
        zero = Some(match zero {
            None => z,
            Some(o) => lx.binary(BinaryFn::Or, o, z)?,
        });
    }
    if let Some(z) = zero {
        let zf = lx.scalar(d, 0.0)?;
        det = lx.select(z, zf, det)?;
    }
    let det = lx.reshape(det, &batch)?;
    lx.cast(det, n.ty.dtype).map(Some)
}
