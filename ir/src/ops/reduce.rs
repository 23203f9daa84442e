//! The reduce op family: reductions over axes (`ReduceSum`, `ReduceMean`, ...), arg
//! reductions (`ArgMax`, `ArgMin`), normalizations along an axis (`Softmax`, `LogSoftmax`,
//! `Hardmax`, `LpNormalization`), scans (`CumSum`, `CumProd`) and `TopK`.
//!
//! Every kernel views its input as `[outer, n, inner]` around the reduced axis (or, for the
//! multi-axis reductions, as alternating groups of kept and reduced dims) so inner loops run
//! over contiguous memory.

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, compute_dtype, demote, promote};
use crate::shape::{fmt_shape, for_each_index, normalize_axes, normalize_axis};
use crate::tensor::{Elem, Tensor};
use num_traits::Float;
use std::cmp::Ordering;

crate::op_family! {
    /// Ops of the reduce family.
    pub enum ReduceOp {
        ReduceSum,
        ReduceMean,
        ReduceMax,
        ReduceMin,
        ReduceProd,
        ReduceL1,
        ReduceL2,
        ReduceLogSum,
        ReduceLogSumExp,
        ReduceSumSquare,
        ArgMax,
        ArgMin,
        Softmax,
        LogSoftmax,
        Hardmax,
        CumSum,
        CumProd,
        TopK,
        LpNormalization,
    }
}

impl ReduceOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        use ReduceOp::*;
        match self {
            ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2
            | ReduceLogSum | ReduceLogSumExp | ReduceSumSquare => {
                let dtype = cx.dtype(0)?;
                check_reduce_dtype(self, dtype)?;
                // `None`: the axes are a run-time value.
                let axes: Option<Vec<i64>> = if axes_from_input(self, cx.version) {
                    match cx.opt(1) {
                        None => Some(Vec::new()),
                        Some(f) if f.ty.dtype != DType::I64 => {
                            crate::bail_model!("{} axes must be int64, got {}", self.name(), f.ty.dtype)
                        }
                        Some(f) => f.value.map(Tensor::to_i64_vec),
                    }
                } else {
                    Some(cx.attrs.ints("axes")?.map(<[i64]>::to_vec).unwrap_or_default())
                };
                let shape = match (cx.shape(0)?, axes) {
                    (Some(s), Some(a)) => Some(ReduceParams::new(cx.attrs, s, &a)?.out_shape),
                    _ => None,
                };
                Ok(vec![ValueType { dtype, shape }])
            }
            ArgMax | ArgMin => {
                let dtype = cx.dtype(0)?;
                if !(dtype.is_float() || dtype.is_int()) {
                    return Err(bad_dtype(self.name(), dtype));
                }
                let shape = cx.shape(0)?.map(|s| ArgParams::new(cx.attrs, s)).transpose()?.map(|p| p.out_shape);
                Ok(vec![ValueType { dtype: DType::I64, shape }])
            }
            Softmax | LogSoftmax | Hardmax | LpNormalization => {
                let dtype = cx.dtype(0)?;
                if !dtype.is_float() {
                    return Err(bad_dtype(self.name(), dtype));
                }
                let shape = cx.shape(0)?;
                if let Some(s) = shape {
                    Lanes::for_normalization(self, cx.attrs, cx.version, s)?;
                    if self == LpNormalization {
                        lp_order(cx.attrs)?;
                    }
                }
                Ok(vec![ValueType { dtype, shape: shape.map(<[usize]>::to_vec) }])
            }
            CumSum | CumProd => {
                let dtype = cx.dtype(0)?;
                if !(dtype.is_float() || dtype.is_int()) {
                    return Err(bad_dtype(self.name(), dtype));
                }
                let axis_dtype = cx.dtype(1)?;
                if !matches!(axis_dtype, DType::I32 | DType::I64) {
                    crate::bail_model!("{} axis must be int32 or int64, got {axis_dtype}", self.name());
                }
                let shape = cx.shape(0)?;
                if let (Some(s), Some(axis)) = (shape, cx.value(1)?) {
                    scan_axis(axis, s)?;
                }
                Ok(vec![ValueType { dtype, shape: shape.map(<[usize]>::to_vec) }])
            }
            TopK => {
                let dtype = cx.dtype(0)?;
                if !(dtype.is_float() || dtype.is_int()) {
                    return Err(bad_dtype(self.name(), dtype));
                }
                let k = if cx.version >= 10 {
                    let k_dtype = cx.dtype(1)?;
                    if k_dtype != DType::I64 {
                        crate::bail_model!("TopK k must be int64, got {k_dtype}");
                    }
                    cx.value(1)?.map(Tensor::scalar_i64).transpose()?
                } else {
                    Some(cx.attrs.req_int("k")?)
                };
                let shape = match (cx.shape(0)?, k) {
                    (Some(s), Some(k)) => Some(TopKParams::new(cx.attrs, s, k)?.out_shape),
                    _ => None,
                };
                Ok(vec![ValueType { dtype, shape: shape.clone() }, ValueType { dtype: DType::I64, shape }])
            }
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        use ReduceOp::*;
        let x = cx.input(0)?;
        match self {
            ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2
            | ReduceLogSum | ReduceLogSumExp | ReduceSumSquare => {
                let axes = if axes_from_input(self, cx.version) {
                    cx.opt(1).map(Tensor::to_i64_vec).unwrap_or_default()
                } else {
                    cx.attrs.ints("axes")?.map(<[i64]>::to_vec).unwrap_or_default()
                };
                let p = ReduceParams::new(cx.attrs, x.shape(), &axes)?;
                let y = reduce(Reduction::of(self)?, x, &p.reduced)?;
                y.reshaped(cx.out_shape(0)?.to_vec()).map(|t| vec![t])
            }
            ArgMax | ArgMin => {
                let p = ArgParams::new(cx.attrs, x.shape())?;
                let x = promote(x);
                let out = crate::with_numeric!(x.dtype(), self.name(), T => {
                    arg_reduce(x.slice::<T>()?, p.lanes, self == ArgMax, p.select_last)
                });
                Ok(vec![Tensor::from_vec(cx.out_shape(0)?.to_vec(), out)?])
            }
            Softmax | LogSoftmax | Hardmax | LpNormalization => {
                let lanes = Lanes::for_normalization(self, cx.attrs, cx.version, x.shape())?;
                let dtype = x.dtype();
                let xp = promote(x);
                let y = crate::with_float!(xp.dtype(), self.name(), T => {
                    let v = xp.slice::<T>()?;
                    let out = match self {
                        Softmax => softmax(v, lanes, false),
                        LogSoftmax => softmax(v, lanes, true),
                        Hardmax => hardmax(v, lanes),
                        _ => lp_normalize(v, lanes, lp_order(cx.attrs)?),
                    };
                    Tensor::from_vec(x.shape().to_vec(), out)?
                });
                Ok(vec![demote(y, dtype)])
            }
            CumSum | CumProd => {
                let axis = scan_axis(cx.input(1)?, x.shape())?;
                let lanes = Lanes::around(x.shape(), axis);
                let exclusive = cx.attrs.int_or("exclusive", 0)? != 0;
                let reverse = cx.attrs.int_or("reverse", 0)? != 0;
                let dtype = x.dtype();
                let xp = promote(x);
                let y = crate::with_numeric!(xp.dtype(), self.name(), T => {
                    let v = xp.slice::<T>()?;
                    let out = if self == CumSum {
                        scan(v, lanes, exclusive, reverse, T::ZERO, Num::add)
                    } else {
                        scan(v, lanes, exclusive, reverse, T::ONE, Num::mul)
                    };
                    Tensor::from_vec(x.shape().to_vec(), out)?
                });
                Ok(vec![demote(y, dtype)])
            }
            TopK => {
                let k = if cx.version >= 10 { cx.input(1)?.scalar_i64()? } else { cx.attrs.req_int("k")? };
                let p = TopKParams::new(cx.attrs, x.shape(), k)?;
                let dtype = x.dtype();
                let xp = promote(x);
                let (values, indices) = crate::with_numeric!(xp.dtype(), self.name(), T => {
                    let (v, i) = top_k(xp.slice::<T>()?, p.lanes, p.k, p.largest);
                    (Tensor::from_vec(p.out_shape.clone(), v)?, Tensor::from_vec(p.out_shape.clone(), i)?)
                });
                Ok(vec![demote(values, dtype), indices])
            }
        }
    }
}

/// Numeric element types: the identities and wrapping arithmetic the kernels need.
trait Num: Elem {
    const ZERO: Self;
    const ONE: Self;
    /// The identity of max: -inf for floats, the minimum for integers.
    const LOWEST: Self;
    /// The identity of min: +inf for floats, the maximum for integers.
    const HIGHEST: Self;
    fn add(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    fn abs(self) -> Self;
}

macro_rules! impl_num_float {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            const HIGHEST: Self = <$t>::INFINITY;
            fn add(self, other: Self) -> Self { self + other }
            fn mul(self, other: Self) -> Self { self * other }
            fn abs(self) -> Self { <$t>::abs(self) }
        }
    )*};
}
impl_num_float!(f32, f64);

macro_rules! impl_num_int {
    ($abs:ident: $($t:ty),*) => {$(
        impl Num for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            fn add(self, other: Self) -> Self { self.wrapping_add(other) }
            fn mul(self, other: Self) -> Self { self.wrapping_mul(other) }
            fn abs(self) -> Self { impl_num_int!(@$abs self) }
        }
    )*};
    (@signed $x:ident) => { $x.wrapping_abs() };
    (@unsigned $x:ident) => { $x };
}
impl_num_int!(signed: i8, i16, i32, i64);
impl_num_int!(unsigned: u8, u16, u32, u64);

/// Whether `x` is NaN (only floats can be).
#[allow(clippy::eq_op)]
fn is_nan<T: PartialEq>(x: T) -> bool {
    x != x
}

/// A total order for sorting: NaN above everything (as numpy sorts), equal NaNs equal.
fn total_cmp<T: PartialOrd>(a: T, b: T) -> Ordering {
    a.partial_cmp(&b).unwrap_or_else(|| is_nan(a).cmp(&is_nan(b)))
}

/// A tensor seen as `outer` blocks of `n` rows of `inner` contiguous elements, `n` being the
/// axis an op works along.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Lanes {
    outer: usize,
    n: usize,
    inner: usize,
}

impl Lanes {
    fn around(shape: &[usize], axis: usize) -> Lanes {
        Lanes {
            outer: shape[..axis].iter().product(),
            n: shape[axis],
            inner: shape[axis + 1..].iter().product(),
        }
    }

    /// The lanes of Softmax, LogSoftmax, Hardmax (before opset 13: the input coerced to 2D at
    /// `axis`, default 1; from 13: the single axis `axis`, default -1) and LpNormalization.
    fn for_normalization(op: ReduceOp, attrs: &Attrs, version: u32, shape: &[usize]) -> Result<Lanes> {
        let rank = shape.len();
        if op != ReduceOp::LpNormalization && version < 13 {
            let axis = attrs.int_or("axis", 1)?;
            // Coercion to 2D accepts axis == rank (an empty second dimension product of 1).
            let axis = if axis == rank as i64 { rank } else { normalize_axis(axis, rank.max(1))? };
            let axis = axis.min(rank);
            return Ok(Lanes {
                outer: shape[..axis].iter().product(),
                n: shape[axis..].iter().product(),
                inner: 1,
            });
        }
        if rank == 0 {
            crate::bail_model!("{} needs an input of rank at least 1", op.name());
        }
        let axis = normalize_axis(attrs.int_or("axis", -1)?, rank)?;
        Ok(Lanes::around(shape, axis))
    }
}

/// Whether the reduction's axes come from input 1 (ReduceSum from opset 13, the others from
/// 18) rather than the `axes` attribute.
fn axes_from_input(op: ReduceOp, version: u32) -> bool {
    version >= 18 || (op == ReduceOp::ReduceSum && version >= 13)
}

fn check_reduce_dtype(op: ReduceOp, dtype: DType) -> Result<()> {
    let ok = dtype.is_float()
        || dtype.is_int()
        || (dtype == DType::Bool && matches!(op, ReduceOp::ReduceMax | ReduceOp::ReduceMin));
    if ok { Ok(()) } else { Err(bad_dtype(op.name(), dtype)) }
}

/// What a multi-axis reduction computes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reduction {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

impl Reduction {
    fn of(op: ReduceOp) -> Result<Reduction> {
        use ReduceOp::*;
        Ok(match op {
            ReduceSum => Reduction::Sum,
            ReduceMean => Reduction::Mean,
            ReduceMax => Reduction::Max,
            ReduceMin => Reduction::Min,
            ReduceProd => Reduction::Prod,
            ReduceL1 => Reduction::L1,
            ReduceL2 => Reduction::L2,
            ReduceLogSum => Reduction::LogSum,
            ReduceLogSumExp => Reduction::LogSumExp,
            ReduceSumSquare => Reduction::SumSquare,
            ArgMax | ArgMin | Softmax | LogSoftmax | Hardmax | CumSum | CumProd | TopK | LpNormalization => {
                return Err(Error::Internal(format!("{} is not a multi-axis reduction", op.name())));
            }
        })
    }
}

/// The reduced axes and the output shape of a multi-axis reduction.
struct ReduceParams {
    reduced: Vec<bool>,
    out_shape: Vec<usize>,
}

impl ReduceParams {
    fn new(attrs: &Attrs, shape: &[usize], axes: &[i64]) -> Result<ReduceParams> {
        let keepdims = attrs.int_or("keepdims", 1)? != 0;
        let noop = attrs.int_or("noop_with_empty_axes", 0)? != 0;
        let rank = shape.len();
        let reduced = if axes.is_empty() {
            vec![!noop; rank]
        } else {
            let mut r = vec![false; rank];
            for a in normalize_axes(axes, rank)? {
                r[a] = true;
            }
            r
        };
        let out_shape = shape
            .iter()
            .zip(&reduced)
            .filter_map(|(&d, &r)| match (r, keepdims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        Ok(ReduceParams { reduced, out_shape })
    }
}

/// Folds every element of `x` (of `shape`) into the accumulator of its output position (the
/// reduced axes dropped), starting from `init`. Adjacent kept or reduced dims are merged so
/// the innermost loop is contiguous.
fn reduce_kernel<T: Copy, A: Copy>(
    x: &[T],
    shape: &[usize],
    reduced: &[bool],
    init: A,
    step: impl Fn(A, T) -> A,
) -> Vec<A> {
    let n_out: usize = shape.iter().zip(reduced).filter(|(_, r)| !**r).map(|(d, _)| d).product();
    let mut acc = vec![init; n_out];
    if x.is_empty() {
        return acc;
    }
    let mut groups: Vec<(usize, bool)> = Vec::new();
    for (&d, &r) in shape.iter().zip(reduced) {
        if d == 1 {
            continue;
        }
        match groups.last_mut() {
            Some(g) if g.1 == r => g.0 *= d,
            _ => groups.push((d, r)),
        }
    }
    let Some(&(inner, inner_reduced)) = groups.last() else {
        acc[0] = step(init, x[0]);
        return acc;
    };
    let outer = &groups[..groups.len() - 1];
    let outer_shape: Vec<usize> = outer.iter().map(|g| g.0).collect();
    let mut out_strides = vec![0; outer.len()];
    let mut stride = if inner_reduced { 1 } else { inner };
    for (i, &(d, r)) in outer.iter().enumerate().rev() {
        if !r {
            out_strides[i] = stride;
            stride *= d;
        }
    }
    for_each_index(&outer_shape, [&out_strides], |lin, [o]| {
        let row = &x[lin * inner..(lin + 1) * inner];
        if inner_reduced {
            acc[o] = row.iter().fold(acc[o], |a, &v| step(a, v));
        } else {
            for (a, &v) in acc[o..o + inner].iter_mut().zip(row) {
                *a = step(*a, v);
            }
        }
    });
    acc
}

/// The number of input elements folded into each output element.
fn reduced_count(shape: &[usize], reduced: &[bool]) -> usize {
    shape.iter().zip(reduced).filter(|(_, r)| **r).map(|(d, _)| d).product()
}

/// A multi-axis reduction; the result has the kept dims only (the caller reshapes).
fn reduce(op: Reduction, x: &Tensor, reduced: &[bool]) -> Result<Tensor> {
    let shape = x.shape();
    let dtype = x.dtype();
    let out_shape: Vec<usize> =
        shape.iter().zip(reduced).filter(|(_, r)| !**r).map(|(&d, _)| d).collect();
    match dtype {
        DType::Bool => {
            let v = x.slice::<bool>()?;
            let out = match op {
                Reduction::Max => reduce_kernel(v, shape, reduced, false, |a, b| a | b),
                Reduction::Min => reduce_kernel(v, shape, reduced, true, |a, b| a & b),
                _ => return Err(Error::InvalidModel(format!("{op:?} reduction does not accept bool"))),
            };
            Tensor::from_vec(out_shape, out)
        }
        DType::F16 | DType::BF16 => {
            let y = reduce(op, &x.cast(compute_dtype(dtype)), reduced)?;
            Ok(demote(y, dtype))
        }
        DType::F32 => Tensor::from_vec(out_shape, reduce_float(op, x.slice::<f32>()?, shape, reduced)),
        DType::F64 => Tensor::from_vec(out_shape, reduce_float(op, x.slice::<f64>()?, shape, reduced)),
        _ => crate::with_numeric!(dtype, &format!("{op:?} reduction"), T => {
            Tensor::from_vec(out_shape, reduce_int(op, x.slice::<T>()?, shape, reduced))
        }),
    }
}

fn reduce_float<T: Num + Float>(op: Reduction, x: &[T], shape: &[usize], reduced: &[bool]) -> Vec<T> {
    use Reduction::*;
    let sum = |f: fn(T) -> T| reduce_kernel(x, shape, reduced, T::ZERO, |a, v| a + f(v));
    match op {
        Sum => sum(|v| v),
        Mean => {
            let count = T::from(reduced_count(shape, reduced)).unwrap_or_else(T::nan);
            sum(|v| v).into_iter().map(|s| s / count).collect()
        }
        Max => reduce_kernel(x, shape, reduced, T::LOWEST, |a, v| if v > a || v.is_nan() { v } else { a }),
        Min => reduce_kernel(x, shape, reduced, T::HIGHEST, |a, v| if v < a || v.is_nan() { v } else { a }),
        Prod => reduce_kernel(x, shape, reduced, T::ONE, |a, v| a * v),
        L1 => sum(|v| Float::abs(v)),
        L2 => sum(|v| v * v).into_iter().map(Float::sqrt).collect(),
        LogSum => sum(|v| v).into_iter().map(Float::ln).collect(),
        SumSquare => sum(|v| v * v),
        LogSumExp => {
            // Online log-sum-exp: (running max m, sum of exp(x - m)).
            let acc = reduce_kernel(x, shape, reduced, (T::LOWEST, T::ZERO), |(m, s), v| {
                if v > m {
                    (v, s * (m - v).exp() + T::ONE)
                } else if v == m {
                    (m, s + T::ONE)
                } else {
                    (m, s + (v - m).exp())
                }
            });
            acc.into_iter().map(|(m, s)| m + s.ln()).collect()
        }
    }
}

/// Integer reductions: exact (wrapping) where the result is an integer, through f64 for
/// the mean, L2 and logarithms.
fn reduce_int<T: Num>(op: Reduction, x: &[T], shape: &[usize], reduced: &[bool]) -> Vec<T> {
    use Reduction::*;
    match op {
        Sum => reduce_kernel(x, shape, reduced, T::ZERO, T::add),
        Max => reduce_kernel(x, shape, reduced, T::LOWEST, |a, v| if v > a { v } else { a }),
        Min => reduce_kernel(x, shape, reduced, T::HIGHEST, |a, v| if v < a { v } else { a }),
        Prod => reduce_kernel(x, shape, reduced, T::ONE, T::mul),
        L1 => reduce_kernel(x, shape, reduced, T::ZERO, |a, v| a.add(v.abs())),
        SumSquare => reduce_kernel(x, shape, reduced, T::ZERO, |a, v| a.add(v.mul(v))),
        _ => {
            let xf: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
            reduce_float(op, &xf, shape, reduced).into_iter().map(T::from_f64).collect()
        }
    }
}

/// ArgMax/ArgMin attributes: the lanes around `axis` and the output shape.
struct ArgParams {
    lanes: Lanes,
    select_last: bool,
    out_shape: Vec<usize>,
}

impl ArgParams {
    fn new(attrs: &Attrs, shape: &[usize]) -> Result<ArgParams> {
        let axis = normalize_axis(attrs.int_or("axis", 0)?, shape.len())?;
        let keepdims = attrs.int_or("keepdims", 1)? != 0;
        let select_last = attrs.int_or("select_last_index", 0)? != 0;
        if shape[axis] == 0 {
            crate::bail_model!("cannot take the arg max/min over axis {axis} of size 0");
        }
        let mut out_shape = shape.to_vec();
        if keepdims {
            out_shape[axis] = 1;
        } else {
            out_shape.remove(axis);
        }
        Ok(ArgParams { lanes: Lanes::around(shape, axis), select_last, out_shape })
    }
}

/// The index of the max (or min) of each lane; ties go to the first index, or the last with
/// `select_last`. A NaN wins over every number (as numpy).
fn arg_reduce<T: PartialOrd + Copy>(x: &[T], l: Lanes, max: bool, select_last: bool) -> Vec<i64> {
    let better = |v: T, best: T| {
        let ord = total_cmp(v, best);
        let ord = if max || is_nan(v) || is_nan(best) { ord } else { ord.reverse() };
        ord == Ordering::Greater || (select_last && ord == Ordering::Equal)
    };
    let mut out = vec![0i64; l.outer * l.inner];
    for o in 0..l.outer {
        let block = &x[o * l.n * l.inner..(o + 1) * l.n * l.inner];
        let res = &mut out[o * l.inner..(o + 1) * l.inner];
        let mut best: Vec<T> = block[..l.inner].to_vec();
        for k in 1..l.n {
            let row = &block[k * l.inner..(k + 1) * l.inner];
            for ((b, r), &v) in best.iter_mut().zip(res.iter_mut()).zip(row) {
                if better(v, *b) {
                    *b = v;
                    *r = k as i64;
                }
            }
        }
    }
    out
}

/// Softmax (or log-softmax) along the lanes' axis, max-shifted for stability.
fn softmax<T: Float>(x: &[T], l: Lanes, log: bool) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    let block_len = l.n * l.inner;
    if block_len == 0 {
        return out;
    }
    if l.inner == 1 {
        for (xr, yr) in x.chunks_exact(l.n).zip(out.chunks_exact_mut(l.n)) {
            softmax_row(xr, yr, log);
        }
        return out;
    }
    let mut max = vec![T::zero(); l.inner];
    let mut sum = vec![T::zero(); l.inner];
    for (xb, yb) in x.chunks_exact(block_len).zip(out.chunks_exact_mut(block_len)) {
        max.copy_from_slice(&xb[..l.inner]);
        for row in xb.chunks_exact(l.inner) {
            for (m, &v) in max.iter_mut().zip(row) {
                if v > *m || v.is_nan() {
                    *m = v;
                }
            }
        }
        sum.fill(T::zero());
        for (row, yrow) in xb.chunks_exact(l.inner).zip(yb.chunks_exact_mut(l.inner)) {
            for (((y, &v), &m), s) in yrow.iter_mut().zip(row).zip(&max).zip(sum.iter_mut()) {
                let shifted = v - m;
                let e = shifted.exp();
                *s = *s + e;
                *y = if log { shifted } else { e };
            }
        }
        if log {
            for s in sum.iter_mut() {
                *s = s.ln();
            }
            for yrow in yb.chunks_exact_mut(l.inner) {
                for (y, &ls) in yrow.iter_mut().zip(&sum) {
                    *y = *y - ls;
                }
            }
        } else {
            for s in sum.iter_mut() {
                *s = T::one() / *s;
            }
            for yrow in yb.chunks_exact_mut(l.inner) {
                for (y, &r) in yrow.iter_mut().zip(&sum) {
                    *y = *y * r;
                }
            }
        }
    }
    out
}

/// Softmax (or log-softmax) of one contiguous row.
fn softmax_row<T: Float>(x: &[T], y: &mut [T], log: bool) {
    let max = x.iter().fold(T::neg_infinity(), |m, &v| if v > m || v.is_nan() { v } else { m });
    let mut sum = T::zero();
    for (o, &v) in y.iter_mut().zip(x) {
        let shifted = v - max;
        let e = shifted.exp();
        sum = sum + e;
        *o = if log { shifted } else { e };
    }
    if log {
        let ls = sum.ln();
        y.iter_mut().for_each(|o| *o = *o - ls);
    } else {
        let r = T::one() / sum;
        y.iter_mut().for_each(|o| *o = *o * r);
    }
}

/// One at the first maximum of each lane, zero elsewhere.
fn hardmax<T: Float>(x: &[T], l: Lanes) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    if l.n == 0 {
        return out;
    }
    let idx = arg_reduce(x, l, true, false);
    for o in 0..l.outer {
        for i in 0..l.inner {
            let k = idx[o * l.inner + i] as usize;
            out[(o * l.n + k) * l.inner + i] = T::one();
        }
    }
    out
}

/// LpNormalization's `p` (1 or 2).
fn lp_order(attrs: &Attrs) -> Result<i64> {
    match attrs.int_or("p", 2)? {
        p @ (1 | 2) => Ok(p),
        p => Err(Error::InvalidModel(format!("LpNormalization attribute 'p' must be 1 or 2, got {p}"))),
    }
}

/// `x / ||x||_p` along the lanes' axis; lanes of norm 0 stay 0.
fn lp_normalize<T: Float>(x: &[T], l: Lanes, p: i64) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    let block_len = l.n * l.inner;
    if block_len == 0 {
        return out;
    }
    let mut norm = vec![T::zero(); l.inner];
    for (xb, yb) in x.chunks_exact(block_len).zip(out.chunks_exact_mut(block_len)) {
        norm.fill(T::zero());
        for row in xb.chunks_exact(l.inner) {
            for (s, &v) in norm.iter_mut().zip(row) {
                *s = *s + if p == 1 { v.abs() } else { v * v };
            }
        }
        if p == 2 {
            for s in norm.iter_mut() {
                *s = s.sqrt();
            }
        }
        for (row, yrow) in xb.chunks_exact(l.inner).zip(yb.chunks_exact_mut(l.inner)) {
            for ((y, &v), &s) in yrow.iter_mut().zip(row).zip(&norm) {
                *y = if s == T::zero() { T::zero() } else { v / s };
            }
        }
    }
    out
}

/// CumSum/CumProd's axis (a scalar or one-element int tensor), normalized.
fn scan_axis(axis: &Tensor, shape: &[usize]) -> Result<usize> {
    if axis.numel() != 1 {
        crate::bail_model!("the scan axis must be a single value, got shape {}", fmt_shape(axis.shape()));
    }
    if shape.is_empty() {
        crate::bail_model!("cannot scan a rank-0 tensor");
    }
    normalize_axis(axis.scalar_i64()?, shape.len())
}

/// Running `op`-accumulation along the lanes' axis; `exclusive` leaves out the element
/// itself, `reverse` runs from the end.
fn scan<T: Copy>(x: &[T], l: Lanes, exclusive: bool, reverse: bool, init: T, op: fn(T, T) -> T) -> Vec<T> {
    let mut out = vec![init; x.len()];
    let mut acc = vec![init; l.inner];
    for o in 0..l.outer {
        acc.fill(init);
        for step in 0..l.n {
            let k = if reverse { l.n - 1 - step } else { step };
            let start = (o * l.n + k) * l.inner;
            let row = &x[start..start + l.inner];
            let yrow = &mut out[start..start + l.inner];
            for ((y, a), &v) in yrow.iter_mut().zip(acc.iter_mut()).zip(row) {
                if exclusive {
                    *y = *a;
                    *a = op(*a, v);
                } else {
                    *a = op(*a, v);
                    *y = *a;
                }
            }
        }
    }
    out
}

/// TopK attributes with `k` resolved.
struct TopKParams {
    lanes: Lanes,
    k: usize,
    largest: bool,
    out_shape: Vec<usize>,
}

impl TopKParams {
    fn new(attrs: &Attrs, shape: &[usize], k: i64) -> Result<TopKParams> {
        if shape.is_empty() {
            crate::bail_model!("TopK needs an input of rank at least 1");
        }
        let axis = normalize_axis(attrs.int_or("axis", -1)?, shape.len())?;
        let largest = attrs.int_or("largest", 1)? != 0;
        let n = shape[axis];
        let k = usize::try_from(k)
            .ok()
            .filter(|&k| k <= n)
            .ok_or_else(|| Error::InvalidModel(format!("TopK k = {k} is out of range for axis {axis} of size {n}")))?;
        let mut out_shape = shape.to_vec();
        out_shape[axis] = k;
        Ok(TopKParams { lanes: Lanes::around(shape, axis), k, largest, out_shape })
    }
}

/// The `k` largest (or smallest) elements of each lane, sorted, ties to the lower index,
/// with their indices along the axis.
fn top_k<T: Elem>(x: &[T], l: Lanes, k: usize, largest: bool) -> (Vec<T>, Vec<i64>) {
    let out_len = l.outer * k * l.inner;
    let mut values = vec![T::default(); out_len];
    let mut indices = vec![0i64; out_len];
    if k == 0 {
        return (values, indices);
    }
    let cmp = |a: &(T, usize), b: &(T, usize)| {
        let by_value = if largest { total_cmp(b.0, a.0) } else { total_cmp(a.0, b.0) };
        by_value.then(a.1.cmp(&b.1))
    };
    let mut lane: Vec<(T, usize)> = Vec::with_capacity(l.n);
    for o in 0..l.outer {
        for i in 0..l.inner {
            lane.clear();
            lane.extend((0..l.n).map(|j| (x[(o * l.n + j) * l.inner + i], j)));
            if k < l.n {
                lane.select_nth_unstable_by(k - 1, cmp);
                lane.truncate(k);
            }
            lane.sort_unstable_by(cmp);
            for (j, &(v, idx)) in lane.iter().enumerate() {
                let at = (o * k + j) * l.inner + i;
                values[at] = v;
                indices[at] = idx as i64;
            }
        }
    }
    (values, indices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::{Op, OpKind};

    fn run(op: ReduceOp, attrs: &[(&str, Attr)], version: u32, inputs: &[Tensor], outputs: usize) -> Result<Vec<Tensor>> {
        let mut a = Attrs::new();
        for (name, value) in attrs {
            a.set(name, value.clone());
        }
        let op = Op { kind: OpKind::Reduce(op), attrs: a, version };
        let refs: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
        op.eval(&refs, outputs)
    }

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec()
    }

    #[test]
    fn reduce_sum_middle_axis_keeps_dims() -> Result<()> {
        let x = f32s(&[2, 3, 2], &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.]);
        let y = run(ReduceOp::ReduceSum, &[], 13, &[x, Tensor::from_i64s(vec![-2])], 1)?;
        assert_eq!(y[0].shape(), &[2, 1, 2]);
        assert_eq!(vals(&y[0]), vec![9., 12., 27., 30.]);
        Ok(())
    }

    #[test]
    fn old_opsets_reduce_all_axes_by_default() -> Result<()> {
        let x = f32s(&[2, 2], &[1., 2., 3., 6.]);
        let y = run(ReduceOp::ReduceMean, &[("keepdims", Attr::Int(0))], 13, &[x], 1)?;
        assert_eq!(y[0].shape(), &[] as &[usize]);
        assert_eq!(vals(&y[0]), vec![3.]);
        Ok(())
    }

    #[test]
    fn empty_reductions_give_the_identity() -> Result<()> {
        let x = f32s(&[2, 0, 3], &[]);
        let prod = run(ReduceOp::ReduceProd, &[("axes", Attr::Ints(vec![1]))], 13, std::slice::from_ref(&x), 1)?;
        assert_eq!(vals(&prod[0]), vec![1.0; 6]);
        let max = run(ReduceOp::ReduceMax, &[("keepdims", Attr::Int(0))], 18, &[x, Tensor::from_i64s(vec![1])], 1)?;
        assert_eq!(max[0].shape(), &[2, 3]);
        assert!(vals(&max[0]).iter().all(|v| *v == f64::NEG_INFINITY));
        Ok(())
    }

    #[test]
    fn log_sum_exp_is_stable_for_large_values() -> Result<()> {
        let y = run(ReduceOp::ReduceLogSumExp, &[], 18, &[f32s(&[2], &[1000., 1000.])], 1)?;
        assert!((vals(&y[0])[0] - (1000.0 + 2f64.ln())).abs() < 1e-3);
        Ok(())
    }

    #[test]
    fn softmax_along_a_leading_axis_and_coerced_2d() -> Result<()> {
        let x = f32s(&[2, 2], &[0., 1., 0., 3.]);
        let y = run(ReduceOp::Softmax, &[("axis", Attr::Int(0))], 13, std::slice::from_ref(&x), 1)?;
        let v = vals(&y[0]);
        assert!((v[0] - 0.5).abs() < 1e-6 && (v[2] - 0.5).abs() < 1e-6);
        assert!((v[1] + v[3] - 1.0).abs() < 1e-6 && v[3] > v[1]);
        // Opset 11, axis 0: the whole tensor is one row.
        let y = run(ReduceOp::Softmax, &[("axis", Attr::Int(0))], 11, &[x], 1)?;
        assert!((vals(&y[0]).iter().sum::<f64>() - 1.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn argmax_breaks_ties_by_select_last_index() -> Result<()> {
        let x = f32s(&[1, 4], &[2., 5., 5., 1.]);
        let first = run(ReduceOp::ArgMax, &[("axis", Attr::Int(1))], 13, std::slice::from_ref(&x), 1)?;
        assert_eq!(first[0].to_i64_vec(), vec![1]);
        let last = run(ReduceOp::ArgMax, &[("axis", Attr::Int(1)), ("select_last_index", Attr::Int(1))], 13, &[x], 1)?;
        assert_eq!(last[0].to_i64_vec(), vec![2]);
        Ok(())
    }

    #[test]
    fn cumsum_exclusive_reverse() -> Result<()> {
        let x = Tensor::from_vec(vec![3], vec![1i32, 2, 3])?;
        let attrs = [("exclusive", Attr::Int(1)), ("reverse", Attr::Int(1))];
        let y = run(ReduceOp::CumSum, &attrs, 14, &[x, Tensor::scalar(0i64)], 1)?;
        assert_eq!(y[0].to_i64_vec(), vec![5, 3, 0]);
        Ok(())
    }

    #[test]
    fn top_k_ties_go_to_the_lower_index() -> Result<()> {
        let x = f32s(&[4], &[1., 3., 3., 2.]);
        let y = run(ReduceOp::TopK, &[], 11, &[x.clone(), Tensor::from_i64s(vec![2])], 2)?;
        assert_eq!(vals(&y[0]), vec![3., 3.]);
        assert_eq!(y[1].to_i64_vec(), vec![1, 2]);
        let y = run(ReduceOp::TopK, &[("largest", Attr::Int(0))], 11, &[x.clone(), Tensor::from_i64s(vec![2])], 2)?;
        assert_eq!(y[1].to_i64_vec(), vec![0, 3]);
        let err = run(ReduceOp::TopK, &[], 11, &[x, Tensor::from_i64s(vec![5])], 2);
        assert!(err.is_err_and(|e| e.to_string().contains("k = 5")));
        Ok(())
    }

    #[test]
    fn lp_normalization_leaves_zero_lanes_zero() -> Result<()> {
        let x = f32s(&[2, 2], &[3., 4., 0., 0.]);
        let y = run(ReduceOp::LpNormalization, &[], 22, &[x], 1)?;
        assert_eq!(vals(&y[0]), vec![0.6000000238418579, 0.800000011920929, 0., 0.]);
        Ok(())
    }
}
