//! Owned tensors: a static shape and a typed, contiguous, row-major buffer.

use crate::dtype::DType;
use crate::error::{Error, Result};
use half::{bf16, f16};
use std::fmt;

/// The largest number of elements a tensor may have (2^31). Shapes are checked against it
/// before anything is allocated, so absurd dimensions are an error, not an abort.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// The elements of a tensor, one variant per [`DType`].
#[derive(Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
}

/// Runs `$body` with `$v` bound to the typed vector inside a [`Data`] (any variant).
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $body,
            $crate::Data::F64($v) => $body,
            $crate::Data::F16($v) => $body,
            $crate::Data::BF16($v) => $body,
            $crate::Data::I8($v) => $body,
            $crate::Data::U8($v) => $body,
            $crate::Data::I16($v) => $body,
            $crate::Data::U16($v) => $body,
            $crate::Data::I32($v) => $body,
            $crate::Data::U32($v) => $body,
            $crate::Data::I64($v) => $body,
            $crate::Data::U64($v) => $body,
            $crate::Data::Bool($v) => $body,
        }
    };
}

/// Runs `$body` with the type alias `$t` set to the Rust element type of `$dtype`.
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F32 => { type $t = f32; $body }
            $crate::DType::F64 => { type $t = f64; $body }
            $crate::DType::F16 => { type $t = half::f16; $body }
            $crate::DType::BF16 => { type $t = half::bf16; $body }
            $crate::DType::I8 => { type $t = i8; $body }
            $crate::DType::U8 => { type $t = u8; $body }
            $crate::DType::I16 => { type $t = i16; $body }
            $crate::DType::U16 => { type $t = u16; $body }
            $crate::DType::I32 => { type $t = i32; $body }
            $crate::DType::U32 => { type $t = u32; $body }
            $crate::DType::I64 => { type $t = i64; $body }
            $crate::DType::U64 => { type $t = u64; $body }
            $crate::DType::Bool => { type $t = bool; $body }
        }
    };
}

/// A Rust type that can be the element of a tensor.
pub trait Elem: Copy + PartialEq + PartialOrd + Default + fmt::Debug + Send + Sync + 'static {
    const DTYPE: DType;
    fn into_data(v: Vec<Self>) -> Data;
    fn slice(d: &Data) -> Option<&[Self]>;
    fn slice_mut(d: &mut Data) -> Option<&mut Vec<Self>>;
    /// Exact for every integer up to 2^53 and every float.
    fn to_f64(self) -> f64;
    /// Float to integer truncates toward zero and saturates; to bool is `!= 0`.
    fn from_f64(v: f64) -> Self;
    fn to_i128(self) -> i128;
    /// Integer to integer wraps (as C's conversions do); to bool is `!= 0`.
    fn from_i128(v: i128) -> Self;
}

macro_rules! impl_elem_int {
    ($t:ty, $variant:ident) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$variant;
            fn into_data(v: Vec<Self>) -> Data { Data::$variant(v) }
            fn slice(d: &Data) -> Option<&[Self]> { if let Data::$variant(v) = d { Some(v) } else { None } }
            fn slice_mut(d: &mut Data) -> Option<&mut Vec<Self>> { if let Data::$variant(v) = d { Some(v) } else { None } }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn to_i128(self) -> i128 { self as i128 }
            fn from_i128(v: i128) -> Self { v as $t }
        }
    };
}
impl_elem_int!(i8, I8);
impl_elem_int!(u8, U8);
impl_elem_int!(i16, I16);
impl_elem_int!(u16, U16);
impl_elem_int!(i32, I32);
impl_elem_int!(u32, U32);
impl_elem_int!(i64, I64);
impl_elem_int!(u64, U64);

macro_rules! impl_elem_float {
    ($t:ty, $variant:ident) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$variant;
            fn into_data(v: Vec<Self>) -> Data { Data::$variant(v) }
            fn slice(d: &Data) -> Option<&[Self]> { if let Data::$variant(v) = d { Some(v) } else { None } }
            fn slice_mut(d: &mut Data) -> Option<&mut Vec<Self>> { if let Data::$variant(v) = d { Some(v) } else { None } }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn to_i128(self) -> i128 { self as i128 }
            fn from_i128(v: i128) -> Self { v as $t }
        }
    };
}
impl_elem_float!(f32, F32);
impl_elem_float!(f64, F64);

macro_rules! impl_elem_half {
    ($t:ty, $variant:ident) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$variant;
            fn into_data(v: Vec<Self>) -> Data { Data::$variant(v) }
            fn slice(d: &Data) -> Option<&[Self]> { if let Data::$variant(v) = d { Some(v) } else { None } }
            fn slice_mut(d: &mut Data) -> Option<&mut Vec<Self>> { if let Data::$variant(v) = d { Some(v) } else { None } }
            fn to_f64(self) -> f64 { self.to_f64() }
            fn from_f64(v: f64) -> Self { <$t>::from_f64(v) }
            fn to_i128(self) -> i128 { self.to_f32() as i128 }
            fn from_i128(v: i128) -> Self { <$t>::from_f64(v as f64) }
        }
    };
}
impl_elem_half!(f16, F16);
impl_elem_half!(bf16, BF16);

impl Elem for bool {
    const DTYPE: DType = DType::Bool;
    fn into_data(v: Vec<Self>) -> Data { Data::Bool(v) }
    fn slice(d: &Data) -> Option<&[Self]> { if let Data::Bool(v) = d { Some(v) } else { None } }
    fn slice_mut(d: &mut Data) -> Option<&mut Vec<Self>> { if let Data::Bool(v) = d { Some(v) } else { None } }
    fn to_f64(self) -> f64 { if self { 1.0 } else { 0.0 } }
    fn from_f64(v: f64) -> Self { v != 0.0 }
    fn to_i128(self) -> i128 { self as i128 }
    fn from_i128(v: i128) -> Self { v != 0 }
}

impl Data {
    pub fn dtype(&self) -> DType {
        with_data!(self, v => elem_dtype(v))
    }

    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros (false for bool) of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> Data {
        with_dtype!(dtype, T => T::into_data(vec![T::default(); n]))
    }
}

fn elem_dtype<T: Elem>(_: &[T]) -> DType {
    T::DTYPE
}

/// The number of elements of a shape, or an error when it exceeds [`MAX_ELEMENTS`].
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    let mut n: usize = 1;
    for &d in shape {
        n = n.checked_mul(d).filter(|&n| n <= MAX_ELEMENTS).ok_or_else(|| {
            Error::InvalidModel(format!(
                "shape {} has more than 2^31 elements",
                crate::shape::fmt_shape(shape)
            ))
        })?;
    }
    Ok(n)
}

/// An owned tensor: shape and row-major data.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

impl Tensor {
    /// A tensor from a shape and matching data.
    pub fn new(shape: Vec<usize>, data: Data) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        if n != data.len() {
            return Err(Error::Internal(format!(
                "tensor of shape {} built with {} elements",
                crate::shape::fmt_shape(&shape),
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor from a shape and a vector of elements.
    pub fn from_vec<T: Elem>(shape: Vec<usize>, v: Vec<T>) -> Result<Tensor> {
        Tensor::new(shape, T::into_data(v))
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Elem>(v: T) -> Tensor {
        Tensor { shape: vec![], data: T::into_data(vec![v]) }
    }

    /// A rank-1 i64 tensor (shapes, axes, indices).
    pub fn from_i64s(v: Vec<i64>) -> Tensor {
        Tensor { shape: vec![v.len()], data: Data::I64(v) }
    }

    /// All zeros.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        Ok(Tensor { shape, data: Data::zeros(dtype, n) })
    }

    /// `f(i)` for each linear index, converted from f64.
    pub fn from_fn_f64(dtype: DType, shape: Vec<usize>, mut f: impl FnMut(usize) -> f64) -> Result<Tensor> {
        let n = checked_numel(&shape)?;
        let data = with_dtype!(dtype, T => T::into_data((0..n).map(|i| T::from_f64(f(i))).collect()));
        Ok(Tensor { shape, data })
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    pub fn into_data(self) -> Data {
        self.data
    }

    /// The address of the first element, as bytes (native-endian elements, `bool` as one
    /// byte 0 or 1), valid for [`Tensor::byte_len`] bytes while the tensor is neither
    /// dropped nor mutated. Runtimes hand it to compiled code; reading through it is theirs
    /// to justify.
    pub fn byte_ptr(&self) -> *const u8 {
        with_data!(&self.data, v => v.as_ptr().cast::<u8>())
    }

    /// [`Tensor::byte_ptr`] for writing: the elements may be overwritten in place (a
    /// `bool` only with 0 or 1) through it while the tensor is not otherwise used.
    pub fn byte_ptr_mut(&mut self) -> *mut u8 {
        with_data!(&mut self.data, v => v.as_mut_ptr().cast::<u8>())
    }

    /// The size of the data in bytes: `numel * dtype.size()`.
    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype().size()
    }

    /// The elements as a slice of `T`, or `None` when the dtype differs.
    pub fn as_slice<T: Elem>(&self) -> Option<&[T]> {
        T::slice(&self.data)
    }

    /// The elements as a slice of `T`, or an internal error naming both dtypes.
    pub fn slice<T: Elem>(&self) -> Result<&[T]> {
        T::slice(&self.data).ok_or_else(|| {
            Error::Internal(format!("expected a {} tensor, got {}", T::DTYPE, self.dtype()))
        })
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshaped(mut self, shape: Vec<usize>) -> Result<Tensor> {
        if checked_numel(&shape)? != self.numel() {
            return Err(Error::InvalidModel(format!(
                "cannot reshape {} elements to {}",
                self.numel(),
                crate::shape::fmt_shape(&shape)
            )));
        }
        self.shape = shape;
        Ok(self)
    }

    /// Every element converted to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_data!(&self.data, v => v.iter().map(|x| x.to_f64()).collect())
    }

    /// Every element converted to i64 (integers wrap, floats truncate).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        with_data!(&self.data, v => v.iter().map(|x| x.to_i128() as i64).collect())
    }

    /// Element conversion with ONNX `Cast` semantics.
    pub fn cast(&self, to: DType) -> Tensor {
        if to == self.dtype() {
            return self.clone();
        }
        let data = with_data!(&self.data, v => cast_vec(v, to));
        Tensor { shape: self.shape.clone(), data }
    }

    /// The single element of a one-element tensor, as f64.
    pub fn scalar_f64(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::InvalidModel(format!(
                "expected a single value, got a tensor of shape {}",
                crate::shape::fmt_shape(&self.shape)
            )));
        }
        Ok(self.to_f64_vec()[0])
    }

    /// The single element of a one-element tensor, as i64.
    pub fn scalar_i64(&self) -> Result<i64> {
        if self.numel() != 1 {
            return Err(Error::InvalidModel(format!(
                "expected a single value, got a tensor of shape {}",
                crate::shape::fmt_shape(&self.shape)
            )));
        }
        Ok(self.to_i64_vec()[0])
    }
}

fn cast_vec<S: Elem>(v: &[S], to: DType) -> Data {
    with_dtype!(to, T => T::into_data(v.iter().map(|&x| cast_elem::<S, T>(x)).collect()))
}

/// Converts one element with ONNX `Cast` semantics: through f64 when either side is a
/// float, through i128 between integers (so 64-bit integers stay exact).
pub fn cast_elem<S: Elem, T: Elem>(x: S) -> T {
    let float = S::DTYPE.is_float() || T::DTYPE.is_float();
    if float {
        if T::DTYPE == DType::F32 && S::DTYPE.is_int() {
            // Round once, from the exact integer, not twice through f64.
            return T::from_f64((x.to_i128() as f32) as f64);
        }
        T::from_f64(x.to_f64())
    } else {
        T::from_i128(x.to_i128())
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}{}>", self.dtype(), crate::shape::fmt_shape(&self.shape))?;
        let n = self.numel().min(16);
        with_data!(&self.data, v => write!(f, "{:?}{}", &v[..n], if self.numel() > 16 { "..." } else { "" }))
    }
}
