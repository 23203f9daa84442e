//! The binary op family: elementwise ops of two or more inputs with numpy broadcasting.
//! Arithmetic (integers wrap, integer division truncates and rejects zero divisors), `Pow`
//! with mixed base/exponent types, `Mod` (C or Python sign rules), the variadic
//! `Max`/`Min`/`Sum`/`Mean`, comparisons, logical and bitwise ops, `BitShift`, `PRelu` and
//! `Where`. f16/bf16 arithmetic runs in f32.

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, demote, promote};
use crate::shape::{broadcast, broadcast_strides, fmt_shape, for_each_index};
use crate::tensor::{checked_numel, Elem, Tensor};
use num_traits::PrimInt;
use std::cell::Cell;

crate::op_family! {
    /// Ops of the binary family.
    pub enum BinaryOp {
        Add, Sub, Mul, Div, Pow, Mod, Max, Min, Sum, Mean, Equal, Less, Greater, LessOrEqual,
        GreaterOrEqual, And, Or, Xor, BitShift, BitwiseAnd, BitwiseOr, BitwiseXor, PRelu,
        Where,
    }
}

/// Runs `$body` with `$t` set to the Rust type of an integer dtype; others are an error.
macro_rules! with_int {
    ($dtype:expr, $op:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::I8 => { type $t = i8; $body }
            DType::U8 => { type $t = u8; $body }
            DType::I16 => { type $t = i16; $body }
            DType::U16 => { type $t = u16; $body }
            DType::I32 => { type $t = i32; $body }
            DType::U32 => { type $t = u32; $body }
            DType::I64 => { type $t = i64; $body }
            DType::U64 => { type $t = u64; $body }
            other => return Err(bad_dtype($op, other)),
        }
    };
}

fn numeric(d: DType) -> bool {
    d.is_float() || d.is_int()
}

fn unsigned(d: DType) -> bool {
    matches!(d, DType::U8 | DType::U16 | DType::U32 | DType::U64)
}

/// The two-input arithmetic ops.
#[derive(Clone, Copy)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    /// Remainder with the sign of the dividend (C `fmod`, `Mod` with `fmod=1`).
    RemTrunc,
    /// Remainder with the sign of the divisor (Python `%`, `Mod` with `fmod=0`).
    RemFloor,
}

/// The variadic reductions over inputs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fold {
    Max,
    Min,
    Sum,
    Mean,
}

#[derive(Clone, Copy)]
enum Cmp {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Clone, Copy)]
enum Bits {
    And,
    Or,
    Xor,
}

impl BinaryOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        use BinaryOp::*;
        let two = [0, 1];
        let (dtype, shape) = match self {
            Add | Sub | Mul | Div | Mod => {
                let d = common_dtype(cx, self, &two, numeric)?;
                if self == Mod {
                    mod_is_fmod(cx.attrs, d)?;
                }
                (d, broadcast_inputs(cx, &two)?)
            }
            Pow => {
                let (base, exponent) = (cx.dtype(0)?, cx.dtype(1)?);
                if !numeric(base) {
                    return Err(bad_dtype("Pow", base));
                }
                if !numeric(exponent) {
                    return Err(bad_dtype("Pow", exponent));
                }
                (base, broadcast_inputs(cx, &two)?)
            }
            Max | Min | Sum | Mean => {
                if cx.num_inputs() == 0 {
                    return Err(Error::InvalidModel(format!("{} needs at least one input", self.name())));
                }
                let all: Vec<usize> = (0..cx.num_inputs()).collect();
                let ok = if matches!(self, Max | Min) { numeric } else { DType::is_float };
                (common_dtype(cx, self, &all, ok)?, broadcast_inputs(cx, &all)?)
            }
            Equal | Less | Greater | LessOrEqual | GreaterOrEqual => {
                let ok = if self == Equal { |_: DType| true } else { numeric };
                common_dtype(cx, self, &two, ok)?;
                (DType::Bool, broadcast_inputs(cx, &two)?)
            }
            And | Or | Xor => {
                common_dtype(cx, self, &two, |d| d == DType::Bool)?;
                (DType::Bool, broadcast_inputs(cx, &two)?)
            }
            BitShift => {
                shift_left(cx.attrs)?;
                (common_dtype(cx, self, &two, unsigned)?, broadcast_inputs(cx, &two)?)
            }
            BitwiseAnd | BitwiseOr | BitwiseXor => {
                (common_dtype(cx, self, &two, DType::is_int)?, broadcast_inputs(cx, &two)?)
            }
            PRelu => {
                let d = common_dtype(cx, self, &two, numeric)?;
                let shape = match (cx.shape(0)?, cx.shape(1)?) {
                    (Some(x), Some(slope)) => {
                        if broadcast(x, slope)? != x {
                            return Err(Error::InvalidModel(format!(
                                "PRelu slope of shape {} does not broadcast to the input shape {}",
                                fmt_shape(slope),
                                fmt_shape(x)
                            )));
                        }
                        Some(x.to_vec())
                    }
                    (x, _) => x.map(<[usize]>::to_vec),
                };
                (d, shape)
            }
            Where => {
                let cond = cx.dtype(0)?;
                if cond != DType::Bool {
                    return Err(Error::InvalidModel(format!("Where condition must be bool, got {cond}")));
                }
                (common_dtype(cx, self, &[1, 2], |_| true)?, broadcast_inputs(cx, &[0, 1, 2])?)
            }
        };
        Ok(vec![ValueType { dtype, shape }])
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        use BinaryOp::*;
        let shape = cx.out_shape(0)?;
        let y = match self {
            Add => arith(Arith::Add, self, cx, shape)?,
            Sub => arith(Arith::Sub, self, cx, shape)?,
            Mul => arith(Arith::Mul, self, cx, shape)?,
            Div => arith(Arith::Div, self, cx, shape)?,
            Mod => {
                let fmod = mod_is_fmod(cx.attrs, cx.input(0)?.dtype())?;
                let rem = if fmod { Arith::RemTrunc } else { Arith::RemFloor };
                arith(rem, self, cx, shape)?
            }
            Pow => pow(cx.input(0)?, cx.input(1)?, shape)?,
            Max => fold(Fold::Max, self, cx)?,
            Min => fold(Fold::Min, self, cx)?,
            Sum => fold(Fold::Sum, self, cx)?,
            Mean => fold(Fold::Mean, self, cx)?,
            Equal => compare(Cmp::Eq, cx, shape)?,
            Less => compare(Cmp::Lt, cx, shape)?,
            Greater => compare(Cmp::Gt, cx, shape)?,
            LessOrEqual => compare(Cmp::Le, cx, shape)?,
            GreaterOrEqual => compare(Cmp::Ge, cx, shape)?,
            And => zip2::<bool, bool, bool>(cx.input(0)?, cx.input(1)?, shape, |a, b| a && b)?,
            Or => zip2::<bool, bool, bool>(cx.input(0)?, cx.input(1)?, shape, |a, b| a || b)?,
            Xor => zip2::<bool, bool, bool>(cx.input(0)?, cx.input(1)?, shape, |a, b| a != b)?,
            BitShift => {
                let (a, b) = (cx.input(0)?, cx.input(1)?);
                let left = shift_left(cx.attrs)?;
                with_int!(a.dtype(), "BitShift", T => zip2::<T, T, T>(a, b, shape, |x, n| shift(x, n, left))?)
            }
            BitwiseAnd => bitwise(Bits::And, self, cx, shape)?,
            BitwiseOr => bitwise(Bits::Or, self, cx, shape)?,
            BitwiseXor => bitwise(Bits::Xor, self, cx, shape)?,
            PRelu => {
                let x = cx.input(0)?;
                let (xp, slope) = (promote(x), promote(cx.input(1)?));
                let y = crate::with_numeric!(xp.dtype(), "PRelu", T => {
                    zip2::<T, T, T>(&xp, &slope, shape, |v, s| if v < T::default() { v.mul(s) } else { v })?
                });
                demote(y, x.dtype())
            }
            Where => {
                let (c, x, y) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
                crate::with_dtype!(x.dtype(), T => select::<T>(c, x, y, shape)?)
            }
        };
        Ok(vec![y])
    }
}

/// The shared element type of the inputs at `indices`, which `ok` must accept.
fn common_dtype(cx: &InferCx, op: BinaryOp, indices: &[usize], ok: impl Fn(DType) -> bool) -> Result<DType> {
    let mut dtype = None;
    for &i in indices {
        let d = cx.dtype(i)?;
        if !ok(d) {
            return Err(bad_dtype(op.name(), d));
        }
        match dtype {
            None => dtype = Some(d),
            Some(first) if first != d => {
                return Err(Error::InvalidModel(format!(
                    "{} inputs must have the same element type, got {first} and {d}",
                    op.name()
                )))
            }
            Some(_) => {}
        }
    }
    dtype.ok_or_else(|| Error::Internal(format!("{} checked no inputs", op.name())))
}

/// The broadcast shape of the inputs at `indices`, `None` when one is unknown.
fn broadcast_inputs(cx: &InferCx, indices: &[usize]) -> Result<Option<Vec<usize>>> {
    let mut out: Vec<usize> = vec![];
    for &i in indices {
        match cx.shape(i)? {
            Some(s) => out = broadcast(&out, s)?,
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Whether Mod uses C `fmod` semantics; floats require it.
fn mod_is_fmod(attrs: &Attrs, dtype: DType) -> Result<bool> {
    let fmod = match attrs.int_or("fmod", 0)? {
        0 => false,
        1 => true,
        other => return Err(Error::InvalidModel(format!("Mod attribute 'fmod' must be 0 or 1, got {other}"))),
    };
    if !fmod && dtype.is_float() {
        return Err(Error::InvalidModel(format!("Mod of {dtype} inputs requires fmod=1")));
    }
    Ok(fmod)
}

/// The `direction` attribute of BitShift: `true` for "LEFT".
fn shift_left(attrs: &Attrs) -> Result<bool> {
    match attrs.string("direction")? {
        Some("LEFT") => Ok(true),
        Some("RIGHT") => Ok(false),
        Some(other) => Err(Error::InvalidModel(format!(
            "BitShift attribute 'direction' must be \"LEFT\" or \"RIGHT\", got \"{other}\""
        ))),
        None => Err(Error::InvalidModel("required attribute 'direction' is missing".into())),
    }
}

/// Shifts by `n` bits; shifting by the bit width or more gives 0.
fn shift<T: PrimInt>(x: T, n: T, left: bool) -> T {
    let bits = T::zero().count_zeros();
    match n.to_u32() {
        Some(k) if k < bits => {
            if left {
                x.unsigned_shl(k)
            } else {
                x.unsigned_shr(k)
            }
        }
        _ => T::zero(),
    }
}

/// Element arithmetic with ONNX semantics: floats IEEE, integers wrapping as in C++, integer
/// division truncating toward zero. An integer zero divisor yields 0 here: callers reject
/// zero divisors before computing.
trait Num: Elem {
    const IS_INT: bool;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn rem_trunc(self, o: Self) -> Self;
    fn rem_floor(self, o: Self) -> Self;
    fn is_zero(self) -> bool;
    fn is_nan(self) -> bool;
}

macro_rules! num_int {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const IS_INT: bool = true;
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn div(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            fn rem_trunc(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_rem(o) } }
            #[allow(unused_comparisons)]
            fn rem_floor(self, o: Self) -> Self {
                let r = self.rem_trunc(o);
                if r != 0 && ((r < 0) != (o < 0)) { r.wrapping_add(o) } else { r }
            }
            fn is_zero(self) -> bool { self == 0 }
            fn is_nan(self) -> bool { false }
        }
    )*};
}
num_int!(i8, u8, i16, u16, i32, u32, i64, u64);

macro_rules! num_float {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const IS_INT: bool = false;
            fn add(self, o: Self) -> Self { self + o }
            fn sub(self, o: Self) -> Self { self - o }
            fn mul(self, o: Self) -> Self { self * o }
            fn div(self, o: Self) -> Self { self / o }
            fn rem_trunc(self, o: Self) -> Self { self % o }
            fn rem_floor(self, o: Self) -> Self {
                let r = self % o;
                if r != 0.0 && ((r < 0.0) != (o < 0.0)) { r + o } else { r }
            }
            fn is_zero(self) -> bool { self == 0.0 }
            fn is_nan(self) -> bool { <$t>::is_nan(self) }
        }
    )*};
}
num_float!(f32, f64);

fn arith(kind: Arith, op: BinaryOp, cx: &EvalCx, shape: &[usize]) -> Result<Tensor> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let (ap, bp) = (promote(a), promote(b));
    let y = crate::with_numeric!(ap.dtype(), op.name(), T => arith_typed::<T>(kind, op, &ap, &bp, shape)?);
    Ok(demote(y, a.dtype()))
}

fn arith_typed<T: Num>(kind: Arith, op: BinaryOp, a: &Tensor, b: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let divides = matches!(kind, Arith::Div | Arith::RemTrunc | Arith::RemFloor);
    if T::IS_INT && divides && checked_numel(shape)? > 0 && b.slice::<T>()?.iter().any(|v| v.is_zero()) {
        return Err(Error::InvalidInput(format!("{}: integer division by zero", op.name())));
    }
    match kind {
        Arith::Add => zip2(a, b, shape, T::add),
        Arith::Sub => zip2(a, b, shape, T::sub),
        Arith::Mul => zip2(a, b, shape, T::mul),
        Arith::Div => zip2(a, b, shape, T::div),
        Arith::RemTrunc => zip2(a, b, shape, T::rem_trunc),
        Arith::RemFloor => zip2(a, b, shape, T::rem_floor),
    }
}

/// Pow: float bases compute in their own precision with the exponent converted to it;
/// integer bases with float exponents go through f64 and truncate; integer bases with
/// integer exponents are exact (wrapping), negative exponents truncating like `1 / b^-e`.
fn pow(base: &Tensor, exponent: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let b = promote(base);
    let y = match b.dtype() {
        DType::F32 => zip2::<f32, f32, f32>(&b, &exponent.cast(DType::F32), shape, f32::powf)?,
        DType::F64 => zip2::<f64, f64, f64>(&b, &exponent.cast(DType::F64), shape, f64::powf)?,
        d if exponent.dtype().is_float() => {
            let e = exponent.cast(DType::F64);
            with_int!(d, "Pow", T => zip2::<T, f64, T>(&b, &e, shape, |x, y| T::from_f64(Elem::to_f64(x).powf(y)))?)
        }
        d => {
            let e = exponent.cast(DType::I64);
            let zero_to_negative = Cell::new(false);
            let y = with_int!(d, "Pow", T => zip2::<T, i64, T>(&b, &e, shape, |x, n| {
                if x.is_zero() && n < 0 {
                    zero_to_negative.set(true);
                }
                int_pow(x, n)
            })?);
            if zero_to_negative.get() {
                return Err(Error::InvalidInput("Pow: integer 0 raised to a negative power".into()));
            }
            y
        }
    };
    Ok(demote(y, base.dtype()))
}

/// `x^n` for integers by squaring, wrapping on overflow.
fn int_pow<T: Num>(x: T, n: i64) -> T {
    let one = T::from_i128(1);
    if n < 0 {
        return if x == one {
            one
        } else if x == T::from_i128(-1) {
            if n % 2 == 0 { one } else { x }
        } else {
            T::default()
        };
    }
    let (mut acc, mut base, mut n) = (one, x, n.unsigned_abs());
    while n > 0 {
        if n & 1 == 1 {
            acc = acc.mul(base);
        }
        base = base.mul(base);
        n >>= 1;
    }
    acc
}

/// Max/Min propagate NaN.
fn max_nan<T: Num>(a: T, b: T) -> T {
    if a.is_nan() || (!b.is_nan() && a >= b) { a } else { b }
}

fn min_nan<T: Num>(a: T, b: T) -> T {
    if a.is_nan() || (!b.is_nan() && a <= b) { a } else { b }
}

/// Max/Min/Sum/Mean folded over the inputs with broadcasting.
fn fold(kind: Fold, op: BinaryOp, cx: &EvalCx) -> Result<Tensor> {
    let first = cx.input(0)?;
    let mut acc = promote(first).into_owned();
    for i in 1..cx.inputs.len() {
        let next = promote(cx.input(i)?);
        let shape = broadcast(acc.shape(), next.shape())?;
        acc = crate::with_numeric!(acc.dtype(), op.name(), T => match kind {
            Fold::Max => zip2::<T, T, T>(&acc, &next, &shape, max_nan)?,
            Fold::Min => zip2::<T, T, T>(&acc, &next, &shape, min_nan)?,
            Fold::Sum | Fold::Mean => zip2::<T, T, T>(&acc, &next, &shape, T::add)?,
        });
    }
    if kind == Fold::Mean && cx.inputs.len() > 1 {
        let n = cx.inputs.len() as f64;
        acc = crate::with_float!(acc.dtype(), "Mean", T => {
            let d = T::from_f64(n);
            crate::ops::common::map::<T, T>(&acc, |v| v / d)?
        });
    }
    Ok(demote(acc, first.dtype()))
}

// The macro also instantiates bool, where only `Eq` is reachable (inference rejects the rest).
#[allow(clippy::bool_comparison)]
fn compare(kind: Cmp, cx: &EvalCx, shape: &[usize]) -> Result<Tensor> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    crate::with_dtype!(a.dtype(), T => match kind {
        Cmp::Eq => zip2::<T, T, bool>(a, b, shape, |x, y| x == y),
        Cmp::Lt => zip2::<T, T, bool>(a, b, shape, |x, y| x < y),
        Cmp::Gt => zip2::<T, T, bool>(a, b, shape, |x, y| x > y),
        Cmp::Le => zip2::<T, T, bool>(a, b, shape, |x, y| x <= y),
        Cmp::Ge => zip2::<T, T, bool>(a, b, shape, |x, y| x >= y),
    })
}

fn bitwise(kind: Bits, op: BinaryOp, cx: &EvalCx, shape: &[usize]) -> Result<Tensor> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    with_int!(a.dtype(), op.name(), T => match kind {
        Bits::And => zip2::<T, T, T>(a, b, shape, |x, y| x & y),
        Bits::Or => zip2::<T, T, T>(a, b, shape, |x, y| x | y),
        Bits::Xor => zip2::<T, T, T>(a, b, shape, |x, y| x ^ y),
    })
}

/// Walks a broadcast output in runs along its innermost axis, after merging the axes that
/// every input reads contiguously (so equal shapes form one run). Calls
/// `f(offsets, strides, len)` per run: the first element's offset in each input, and each
/// input's stride along the run (1, or 0 where it is broadcast).
fn for_each_run<const N: usize>(out_shape: &[usize], inputs: [&[usize]; N], mut f: impl FnMut([usize; N], [usize; N], usize)) {
    if out_shape.contains(&0) {
        return;
    }
    let full: [Vec<usize>; N] = inputs.map(|s| broadcast_strides(s, out_shape));
    let mut dims: Vec<usize> = Vec::with_capacity(out_shape.len());
    let mut strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::with_capacity(out_shape.len()));
    for (axis, &d) in out_shape.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let merges = !dims.is_empty() && (0..N).all(|k| strides[k].last() == Some(&(full[k][axis] * d)));
        if merges {
            if let Some(last) = dims.last_mut() {
                *last *= d;
            }
            for k in 0..N {
                if let Some(last) = strides[k].last_mut() {
                    *last = full[k][axis];
                }
            }
        } else {
            dims.push(d);
            for k in 0..N {
                strides[k].push(full[k][axis]);
            }
        }
    }
    let len = dims.pop().unwrap_or(1);
    let inner: [usize; N] = std::array::from_fn(|k| strides[k].pop().unwrap_or(0));
    let outer: [&[usize]; N] = std::array::from_fn(|k| strides[k].as_slice());
    for_each_index(&dims, outer, |_, offsets| f(offsets, inner, len));
}

/// `out[i] = f(a[i'], b[i''])` with numpy broadcasting to `out_shape`, in contiguous runs.
fn zip2<A: Elem, B: Elem, O: Elem>(a: &Tensor, b: &Tensor, out_shape: &[usize], f: impl Fn(A, B) -> O) -> Result<Tensor> {
    let (av, bv) = (a.slice::<A>()?, b.slice::<B>()?);
    let mut out = Vec::with_capacity(checked_numel(out_shape)?);
    for_each_run(out_shape, [a.shape(), b.shape()], |[oa, ob], [sa, sb], len| match (sa, sb) {
        (1, 1) => out.extend(av[oa..oa + len].iter().zip(&bv[ob..ob + len]).map(|(&x, &y)| f(x, y))),
        (1, 0) => {
            let y = bv[ob];
            out.extend(av[oa..oa + len].iter().map(|&x| f(x, y)));
        }
        (0, 1) => {
            let x = av[oa];
            out.extend(bv[ob..ob + len].iter().map(|&y| f(x, y)));
        }
        _ => out.extend((0..len).map(|j| f(av[oa + j * sa], bv[ob + j * sb]))),
    });
    Tensor::from_vec(out_shape.to_vec(), out)
}

/// Where: `cond ? x : y` with numpy broadcasting of all three.
fn select<T: Elem>(cond: &Tensor, x: &Tensor, y: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let (cv, xv, yv) = (cond.slice::<bool>()?, x.slice::<T>()?, y.slice::<T>()?);
    let mut out = Vec::with_capacity(checked_numel(out_shape)?);
    for_each_run(out_shape, [cond.shape(), x.shape(), y.shape()], |[oc, ox, oy], [sc, sx, sy], len| {
        out.extend((0..len).map(|j| if cv[oc + j * sc] { xv[ox + j * sx] } else { yv[oy + j * sy] }));
    });
    Tensor::from_vec(out_shape.to_vec(), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::{Op, OpKind};

    fn run(op: BinaryOp, attrs: &[(&str, Attr)], inputs: &[&Tensor]) -> Result<Tensor> {
        let mut a = Attrs::new();
        for (k, v) in attrs {
            a.set(k, v.clone());
        }
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|&t| Some(t)).collect();
        let mut out = Op { kind: OpKind::Binary(op), attrs: a, version: 18 }.eval(&inputs, 1)?;
        out.pop().ok_or_else(|| Error::Internal("no output".into()))
    }

    #[test]
    fn broadcast_runs_cover_every_pattern() -> Result<()> {
        let a = Tensor::from_vec(vec![2, 3, 1], (0..6).collect::<Vec<i32>>())?;
        let b = Tensor::from_vec(vec![1, 4], vec![0, 10, 20, 30])?;
        let y = run(BinaryOp::Add, &[], &[&a, &b])?;
        assert_eq!(y.shape(), &[2, 3, 4]);
        let want: Vec<i32> = (0..24).map(|i| i / 4 + (i % 4) * 10).collect();
        assert_eq!(y.slice::<i32>()?, want.as_slice());
        Ok(())
    }

    #[test]
    fn integer_mod_follows_python_or_c_signs() -> Result<()> {
        let a = Tensor::from_vec(vec![4], vec![-7i32, 7, -7, 7])?;
        let b = Tensor::from_vec(vec![4], vec![3i32, -3, -3, 3])?;
        assert_eq!(run(BinaryOp::Mod, &[], &[&a, &b])?.slice::<i32>()?, &[2, -2, -1, 1]);
        let fmod = [("fmod", Attr::Int(1))];
        assert_eq!(run(BinaryOp::Mod, &fmod, &[&a, &b])?.slice::<i32>()?, &[-1, 1, -1, 1]);
        Ok(())
    }

    #[test]
    fn integer_division_truncates_and_rejects_zero() -> Result<()> {
        let a = Tensor::from_vec(vec![3], vec![-7i64, 7, i64::MIN])?;
        let b = Tensor::from_vec(vec![3], vec![2i64, -2, -1])?;
        assert_eq!(run(BinaryOp::Div, &[], &[&a, &b])?.slice::<i64>()?, &[-3, -3, i64::MIN]);
        let zero = Tensor::scalar(0i64);
        assert!(matches!(run(BinaryOp::Div, &[], &[&a, &zero]), Err(Error::Context { .. } | Error::InvalidInput(_))));
        Ok(())
    }

    #[test]
    fn pow_with_mixed_types() -> Result<()> {
        let base = Tensor::from_vec(vec![3], vec![2i32, -3, 5])?;
        let e = Tensor::from_vec(vec![3], vec![10i64, 3, -1])?;
        assert_eq!(run(BinaryOp::Pow, &[], &[&base, &e])?.slice::<i32>()?, &[1024, -27, 0]);
        let e = Tensor::scalar(0.5f32);
        assert_eq!(run(BinaryOp::Pow, &[], &[&base, &e])?.slice::<i32>()?, &[1, 0, 2]);
        let x = Tensor::from_vec(vec![2], vec![2.0f32, 9.0])?;
        let e = Tensor::scalar(2u64);
        assert_eq!(run(BinaryOp::Pow, &[], &[&x, &e])?.slice::<f32>()?, &[4.0, 81.0]);
        Ok(())
    }

    #[test]
    fn max_propagates_nan_and_broadcasts_many_inputs() -> Result<()> {
        let a = Tensor::from_vec(vec![2], vec![1.0f32, f32::NAN])?;
        let b = Tensor::from_vec(vec![2, 1], vec![f32::NAN, 0.0])?;
        let c = Tensor::scalar(3.0f32);
        let y = run(BinaryOp::Max, &[], &[&a, &b, &c])?;
        let y = y.slice::<f32>()?;
        assert!(y[0].is_nan() && y[1].is_nan() && y[3].is_nan());
        assert_eq!(y[2], 3.0);
        Ok(())
    }

    #[test]
    fn where_broadcasts_condition() -> Result<()> {
        let c = Tensor::from_vec(vec![2, 1], vec![true, false])?;
        let x = Tensor::from_vec(vec![2], vec![1u8, 2])?;
        let y = Tensor::scalar(9u8);
        assert_eq!(run(BinaryOp::Where, &[], &[&c, &x, &y])?.slice::<u8>()?, &[1, 2, 9, 9]);
        Ok(())
    }

    #[test]
    fn bitshift_past_width_is_zero() -> Result<()> {
        let a = Tensor::from_vec(vec![3], vec![1u8, 0x80, 0xff])?;
        let n = Tensor::from_vec(vec![3], vec![7u8, 8, 1])?;
        let left = [("direction", Attr::String("LEFT".into()))];
        assert_eq!(run(BinaryOp::BitShift, &left, &[&a, &n])?.slice::<u8>()?, &[0x80, 0, 0xfe]);
        Ok(())
    }
}
