//! Helpers shared by the op families: dtype dispatch, f16/bf16 promotion, broadcasting
//! elementwise kernels, transposition.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{broadcast_strides, for_each_index, strides};
use crate::tensor::{Elem, Tensor};
use std::borrow::Cow;

/// Runs `$body` with `$t` set to `f32` or `f64`; any other dtype is an error naming `$op`.
#[macro_export]
macro_rules! with_float {
    ($dtype:expr, $op:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F32 => { type $t = f32; $body }
            $crate::DType::F64 => { type $t = f64; $body }
            other => return Err($crate::ops::common::bad_dtype($op, other)),
        }
    };
}

/// Runs `$body` with `$t` set to any numeric (non-bool) Rust element type; half types are
/// not included (promote them first), bool is an error naming `$op`.
#[macro_export]
macro_rules! with_numeric {
    ($dtype:expr, $op:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F32 => { type $t = f32; $body }
            $crate::DType::F64 => { type $t = f64; $body }
            $crate::DType::I8 => { type $t = i8; $body }
            $crate::DType::U8 => { type $t = u8; $body }
            $crate::DType::I16 => { type $t = i16; $body }
            $crate::DType::U16 => { type $t = u16; $body }
            $crate::DType::I32 => { type $t = i32; $body }
            $crate::DType::U32 => { type $t = u32; $body }
            $crate::DType::I64 => { type $t = i64; $body }
            $crate::DType::U64 => { type $t = u64; $body }
            other => return Err($crate::ops::common::bad_dtype($op, other)),
        }
    };
}

/// The error for an op applied to a dtype it does not take.
pub fn bad_dtype(op: &str, dtype: DType) -> Error {
    Error::InvalidModel(format!("{op} does not accept element type {dtype}"))
}

/// f16 and bf16 tensors converted to f32 (the precision the interpreter computes them in);
/// other tensors unchanged.
pub fn promote(t: &Tensor) -> Cow<'_, Tensor> {
    match t.dtype() {
        DType::F16 | DType::BF16 => Cow::Owned(t.cast(DType::F32)),
        _ => Cow::Borrowed(t),
    }
}

/// The dtype computations on `dtype` run in: f32 for f16/bf16, else itself.
pub fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// Converts a result computed in [`compute_dtype`] back to `dtype`.
pub fn demote(t: Tensor, dtype: DType) -> Tensor {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// `out[i] = f(a[i])`.
pub fn map<A: Elem, O: Elem>(a: &Tensor, f: impl Fn(A) -> O) -> Result<Tensor> {
    let v: Vec<O> = a.slice::<A>()?.iter().map(|&x| f(x)).collect();
    Tensor::from_vec(a.shape().to_vec(), v)
}

/// `out[i] = f(a[i'], b[i''])` with numpy broadcasting to `out_shape`.
pub fn zip<A: Elem, B: Elem, O: Elem>(
    a: &Tensor,
    b: &Tensor,
    out_shape: &[usize],
    f: impl Fn(A, B) -> O,
) -> Result<Tensor> {
    let (av, bv) = (a.slice::<A>()?, b.slice::<B>()?);
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if a.shape() == out_shape && b.shape() == out_shape {
        out.extend(av.iter().zip(bv).map(|(&x, &y)| f(x, y)));
    } else if b.numel() == 1 && a.shape() == out_shape {
        let y = bv[0];
        out.extend(av.iter().map(|&x| f(x, y)));
    } else if a.numel() == 1 && b.shape() == out_shape {
        let x = av[0];
        out.extend(bv.iter().map(|&y| f(x, y)));
    } else {
        let sa = broadcast_strides(a.shape(), out_shape);
        let sb = broadcast_strides(b.shape(), out_shape);
        for_each_index(out_shape, [&sa, &sb], |_, [ia, ib]| out.push(f(av[ia], bv[ib])));
    }
    Tensor::from_vec(out_shape.to_vec(), out)
}

/// `out[i] = f(a[i'], b[i''], c[i'''])` with numpy broadcasting to `out_shape`.
pub fn zip3<A: Elem, B: Elem, C: Elem, O: Elem>(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    out_shape: &[usize],
    f: impl Fn(A, B, C) -> O,
) -> Result<Tensor> {
    let (av, bv, cv) = (a.slice::<A>()?, b.slice::<B>()?, c.slice::<C>()?);
    let sa = broadcast_strides(a.shape(), out_shape);
    let sb = broadcast_strides(b.shape(), out_shape);
    let sc = broadcast_strides(c.shape(), out_shape);
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for_each_index(out_shape, [&sa, &sb, &sc], |_, [ia, ib, ic]| out.push(f(av[ia], bv[ib], cv[ic])));
    Tensor::from_vec(out_shape.to_vec(), out)
}

/// Permutes the axes of `t`: output axis `i` is input axis `perm[i]`.
pub fn transpose(t: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let in_shape = t.shape();
    let out_shape: Vec<usize> = perm.iter().map(|&p| in_shape[p]).collect();
    let st = strides(in_shape);
    let perm_strides: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    crate::with_data!(t.data(), v => {
        let mut out = Vec::with_capacity(v.len());
        for_each_index(&out_shape, [&perm_strides], |_, [i]| out.push(v[i]));
        Tensor::from_vec(out_shape, out)
    })
}

/// Broadcasts `t` to `shape` (materialized).
pub fn expand(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let st = broadcast_strides(t.shape(), shape);
    crate::with_data!(t.data(), v => {
        let mut out = Vec::with_capacity(shape.iter().product());
        for_each_index(shape, [&st], |_, [i]| out.push(v[i]));
        Tensor::from_vec(shape.to_vec(), out)
    })
}
