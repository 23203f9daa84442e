//! The linalg op family: matrix products (MatMul, Gemm, MatMulInteger, QLinearMatMul),
//! Einsum and Det, plus the blocked GEMM kernel ([`gemm`]) that the conv family also runs on.
//!
//! The GEMM packs blocks of both operands into contiguous panels and multiplies them with a
//! register-blocked `MR x NR` micro-kernel whose fixed-size loops the compiler vectorizes.
//! Floats accumulate in their own precision; integers wrap (as C++ would).

use crate::dtype::DType;
use crate::error::Result;
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, demote, promote, transpose};
use crate::shape::{broadcast, broadcast_strides, fmt_shape, for_each_index, strides};
use crate::tensor::{Elem, Tensor, checked_numel};
use crate::{bail_model, with_float, with_numeric};
use half::f16;

crate::op_family! {
    /// Ops of the linalg family.
    pub enum LinalgOp {
        MatMul,
        Gemm,
        Einsum,
        Det,
        MatMulInteger,
        QLinearMatMul,
    }
}

impl LinalgOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        match self {
            LinalgOp::MatMul => {
                let dtype = same_dtypes(cx, "MatMul", &[0, 1])?;
                if dtype == DType::Bool {
                    return Err(bad_dtype("MatMul", dtype));
                }
                Ok(vec![shaped(dtype, matmul_dims_of(cx, 0, 1)?.map(|d| d.out))])
            }
            LinalgOp::Gemm => {
                let dtype = same_dtypes(cx, "Gemm", &[0, 1])?;
                if dtype == DType::Bool || matches!(dtype, DType::I8 | DType::U8 | DType::I16 | DType::U16) {
                    return Err(bad_dtype("Gemm", dtype));
                }
                if let Some(c) = cx.opt(2) {
                    if c.ty.dtype != dtype {
                        bail_model!("Gemm input C is {} but A is {dtype}", c.ty.dtype);
                    }
                } else if cx.version < 11 {
                    bail_model!("Gemm input C is required before opset 11");
                }
                Ok(vec![shaped(dtype, gemm_dims_of(cx)?.map(|d| vec![d.m, d.n]))])
            }
            LinalgOp::Einsum => einsum_infer(cx),
            LinalgOp::Det => {
                let dtype = cx.dtype(0)?;
                if !dtype.is_float() {
                    return Err(bad_dtype("Det", dtype));
                }
                let shape = match cx.shape(0)? {
                    Some(s) => Some(det_batch_shape(s)?),
                    None => None,
                };
                Ok(vec![shaped(dtype, shape)])
            }
            LinalgOp::MatMulInteger => {
                check_quantized_operand(cx, "MatMulInteger", 0, Some(2))?;
                check_quantized_operand(cx, "MatMulInteger", 1, Some(3))?;
                check_quant_param(cx, 2, 0, QuantAxis::Rows, "a_zero_point")?;
                check_quant_param(cx, 3, 1, QuantAxis::Cols, "b_zero_point")?;
                Ok(vec![shaped(DType::I32, matmul_dims_of(cx, 0, 1)?.map(|d| d.out))])
            }
            LinalgOp::QLinearMatMul => {
                check_quantized_operand(cx, "QLinearMatMul", 0, Some(2))?;
                check_quantized_operand(cx, "QLinearMatMul", 3, Some(5))?;
                check_quant_param(cx, 1, 0, QuantAxis::Rows, "a_scale")?;
                check_quant_param(cx, 2, 0, QuantAxis::Rows, "a_zero_point")?;
                check_quant_param(cx, 4, 3, QuantAxis::Cols, "b_scale")?;
                check_quant_param(cx, 5, 3, QuantAxis::Cols, "b_zero_point")?;
                for i in [1, 4, 6] {
                    let d = cx.dtype(i)?;
                    if !d.is_float() {
                        bail_model!("QLinearMatMul scale input {i} must be a float tensor, got {d}");
                    }
                }
                let out_dtype = cx.dtype(7)?;
                if !matches!(out_dtype, DType::I8 | DType::U8) {
                    bail_model!("QLinearMatMul y_zero_point must be int8 or uint8, got {out_dtype}");
                }
                Ok(vec![shaped(out_dtype, matmul_dims_of(cx, 0, 3)?.map(|d| d.out))])
            }
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        let out = match self {
            LinalgOp::MatMul => {
                let (a, b) = (promote(cx.input(0)?), promote(cx.input(1)?));
                let dims = matmul_dims(a.shape(), b.shape())?;
                let t = with_numeric!(a.dtype(), "MatMul", T => {
                    let v = batched_matmul::<T>(a.slice()?, b.slice()?, &dims);
                    Tensor::from_vec(dims.out.clone(), v)?
                });
                demote(t, cx.out_dtype(0)?)
            }
            LinalgOp::Gemm => gemm_eval(cx)?,
            LinalgOp::Einsum => einsum_eval(cx)?,
            LinalgOp::Det => det_eval(cx)?,
            LinalgOp::MatMulInteger => {
                let (a, b) = (cx.input(0)?, cx.input(1)?);
                let dims = matmul_dims(a.shape(), b.shape())?;
                let av = minus_zero_point(a, cx.opt(2), QuantAxis::Rows)?;
                let bv = minus_zero_point(b, cx.opt(3), QuantAxis::Cols)?;
                Tensor::from_vec(dims.out.clone(), batched_matmul::<i32>(&av, &bv, &dims))?
            }
            LinalgOp::QLinearMatMul => qlinear_matmul_eval(cx)?,
        };
        Ok(vec![out])
    }
}

/// A value type with a shape when known.
fn shaped(dtype: DType, shape: Option<Vec<usize>>) -> ValueType {
    ValueType { dtype, shape }
}

/// The common dtype of the listed inputs, or an error naming the first that differs.
fn same_dtypes(cx: &InferCx, op: &str, inputs: &[usize]) -> Result<DType> {
    let first = cx.dtype(inputs[0])?;
    for &i in &inputs[1..] {
        let d = cx.dtype(i)?;
        if d != first {
            bail_model!("{op} input {i} is {d} but input {} is {first}", inputs[0]);
        }
    }
    Ok(first)
}

// ---------------------------------------------------------------------------------------
// The GEMM kernel.

/// An element type the GEMM kernel computes in: floats with ordinary arithmetic, integers
/// with wrapping arithmetic.
pub(crate) trait Scalar: Elem {
    fn add(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    /// Multiplication by an attribute factor (`alpha`, `beta`).
    fn scale(self, factor: f32) -> Self;
}

macro_rules! impl_scalar_float {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            #[inline(always)]
            fn add(self, other: Self) -> Self { self + other }
            #[inline(always)]
            fn mul(self, other: Self) -> Self { self * other }
            fn scale(self, factor: f32) -> Self { self * factor as $t }
        }
    )*};
}
impl_scalar_float!(f32, f64);

macro_rules! impl_scalar_int {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            #[inline(always)]
            fn add(self, other: Self) -> Self { self.wrapping_add(other) }
            #[inline(always)]
            fn mul(self, other: Self) -> Self { self.wrapping_mul(other) }
            fn scale(self, factor: f32) -> Self { <$t>::from_f64(self as f64 * factor as f64) }
        }
    )*};
}
impl_scalar_int!(i8, u8, i16, u16, i32, u32, i64, u64);

/// A read-only strided matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major matrix with rows of `cols` elements.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        MatRef { data, rs: cols, cs: 1 }
    }
}

/// Rows of the micro-kernel tile.
const MR: usize = 4;
/// Columns of the micro-kernel tile.
const NR: usize = 8;
/// Depth of a packed block.
const KC: usize = 256;
/// Rows of a packed block of A (a multiple of MR).
const MC: usize = 128;
/// Columns of a packed block of B (a multiple of NR).
const NC: usize = 2048;

/// `c[i * ldc + j] += sum_k a(i, k) * b(k, j)` for an `m x k` matrix `a` and a `k x n`
/// matrix `b`. `c` must hold `(m - 1) * ldc + n` elements.
pub(crate) fn gemm<T: Scalar>(m: usize, n: usize, k: usize, a: MatRef<T>, b: MatRef<T>, c: &mut [T], ldc: usize) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let kc_max = KC.min(k);
    let mut apack = vec![T::default(); MC.min(m.next_multiple_of(MR)) * kc_max];
    let mut bpack = vec![T::default(); NC.min(n.next_multiple_of(NR)) * kc_max];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack_b(b, pc, kc, jc, nc, n, &mut bpack);
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                pack_a(a, ic, mc, pc, kc, m, &mut apack);
                for (jp, bpanel) in bpack.chunks_exact(kc * NR).take(nc.div_ceil(NR)).enumerate() {
                    let j0 = jc + jp * NR;
                    let nr = NR.min(n - j0);
                    for (ip, apanel) in apack.chunks_exact(kc * MR).take(mc.div_ceil(MR)).enumerate() {
                        let i0 = ic + ip * MR;
                        let acc = micro_kernel(apanel, bpanel);
                        for (r, acc_row) in acc.iter().enumerate().take(MR.min(m - i0)) {
                            let start = (i0 + r) * ldc + j0;
                            for (o, &v) in c[start..start + nr].iter_mut().zip(acc_row) {
                                *o = o.add(v);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The `MR x NR` product of a packed panel of A (`MR` values per k) and one of B (`NR`).
#[inline(always)]
fn micro_kernel<T: Scalar>(apanel: &[T], bpanel: &[T]) -> [[T; NR]; MR] {
    let (ap, _) = apanel.as_chunks::<MR>();
    let (bp, _) = bpanel.as_chunks::<NR>();
    let mut acc = [[T::default(); NR]; MR];
    for (a, b) in ap.iter().zip(bp) {
        for (acc_row, &ar) in acc.iter_mut().zip(a) {
            for (o, &bc) in acc_row.iter_mut().zip(b) {
                *o = o.add(ar.mul(bc));
            }
        }
    }
    acc
}

/// Packs rows `ic..ic+mc`, depth `pc..pc+kc` of `a` into panels of `MR` rows (zero-padded).
fn pack_a<T: Scalar>(a: MatRef<T>, ic: usize, mc: usize, pc: usize, kc: usize, m: usize, dst: &mut [T]) {
    for (p, panel) in dst.chunks_exact_mut(kc * MR).take(mc.div_ceil(MR)).enumerate() {
        for r in 0..MR {
            let i = ic + p * MR + r;
            if i >= m || i >= ic + mc {
                for kk in 0..kc {
                    panel[kk * MR + r] = T::default();
                }
                continue;
            }
            let row = i * a.rs + pc * a.cs;
            for kk in 0..kc {
                panel[kk * MR + r] = a.data[row + kk * a.cs];
            }
        }
    }
}

/// Packs depth `pc..pc+kc`, columns `jc..jc+nc` of `b` into panels of `NR` columns
/// (zero-padded).
fn pack_b<T: Scalar>(b: MatRef<T>, pc: usize, kc: usize, jc: usize, nc: usize, n: usize, dst: &mut [T]) {
    for (p, panel) in dst.chunks_exact_mut(kc * NR).take(nc.div_ceil(NR)).enumerate() {
        let j0 = jc + p * NR;
        let width = NR.min(n - j0).min(jc + nc - j0);
        for kk in 0..kc {
            let out = &mut panel[kk * NR..(kk + 1) * NR];
            let row = (pc + kk) * b.rs + j0 * b.cs;
            if b.cs == 1 {
                out[..width].copy_from_slice(&b.data[row..row + width]);
            } else {
                for (c, o) in out[..width].iter_mut().enumerate() {
                    *o = b.data[row + c * b.cs];
                }
            }
            out[width..].fill(T::default());
        }
    }
}

// ---------------------------------------------------------------------------------------
// MatMul and its integer forms.

/// The dimensions of a numpy-style matmul.
#[derive(Clone, Debug)]
struct MatMulDims {
    /// Batch dims of A and B (without the matrix dims) and their broadcast.
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    out: Vec<usize>,
}

/// Numpy matmul dimensions: a 1-D A is a row vector, a 1-D B a column vector (the added
/// dim is dropped from the output), batch dims broadcast.
fn matmul_dims(a: &[usize], b: &[usize]) -> Result<MatMulDims> {
    let scalar = || {
        crate::Error::InvalidModel(format!(
            "matmul operands must have rank >= 1, got {} and {}",
            fmt_shape(a),
            fmt_shape(b)
        ))
    };
    let (a_batch, m, ka) = match a {
        [k] => (&[][..], 1, *k),
        [batch @ .., m, k] => (batch, *m, *k),
        [] => return Err(scalar()),
    };
    let (b_batch, kb, n) = match b {
        [k] => (&[][..], *k, 1),
        [batch @ .., k, n] => (batch, *k, *n),
        [] => return Err(scalar()),
    };
    if ka != kb {
        bail_model!(
            "matmul inner dimensions differ: A {} has {ka} columns, B {} has {kb} rows",
            fmt_shape(a),
            fmt_shape(b)
        );
    }
    let batch = broadcast(a_batch, b_batch).map_err(|_| {
        crate::Error::InvalidModel(format!(
            "matmul batch dimensions of A {} and B {} do not broadcast",
            fmt_shape(a),
            fmt_shape(b)
        ))
    })?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(MatMulDims {
        a_batch: a_batch.to_vec(),
        b_batch: b_batch.to_vec(),
        batch,
        m,
        k: ka,
        n,
        out,
    })
}

/// Matmul dims from the shapes of inputs `a` and `b`, when both are known.
fn matmul_dims_of(cx: &InferCx, a: usize, b: usize) -> Result<Option<MatMulDims>> {
    match (cx.shape(a)?, cx.shape(b)?) {
        (Some(sa), Some(sb)) => Ok(Some(matmul_dims(sa, sb)?)),
        _ => Ok(None),
    }
}

/// The numpy matmul of row-major `a` and `b` with dims `d`.
fn batched_matmul<T: Scalar>(a: &[T], b: &[T], d: &MatMulDims) -> Vec<T> {
    let (m, k, n) = (d.m, d.k, d.n);
    let batches: usize = d.batch.iter().product();
    let mut out = vec![T::default(); batches * m * n];
    let a_batches: usize = d.a_batch.iter().product();
    let b_batches: usize = d.b_batch.iter().product();
    if b_batches == 1 && a_batches == batches {
        // One B for every A matrix: stack the A matrices into one tall product.
        gemm(batches * m, n, k, MatRef::rows(a, k), MatRef::rows(b, n), &mut out, n);
        return out;
    }
    let sa = broadcast_strides(&d.a_batch, &d.batch);
    let sb = broadcast_strides(&d.b_batch, &d.batch);
    for_each_index(&d.batch, [&sa, &sb], |i, [ia, ib]| {
        let am = MatRef::rows(&a[ia * m * k..], k);
        let bm = MatRef::rows(&b[ib * k * n..], n);
        gemm(m, n, k, am, bm, &mut out[i * m * n..], n);
    });
    out
}

/// Which axis a 1-D quantization parameter (zero point, scale) runs along.
#[derive(Clone, Copy, PartialEq)]
pub enum QuantAxis {
    /// Per row of A: a vector of length M is read as `[M, 1]`.
    Rows,
    /// Per column of B: a vector of length N broadcasts as is.
    Cols,
}

/// The shape under which a quantization parameter of `param` shape broadcasts against an
/// operand of shape `operand` (per-tensor, per-row of A or per-column of B).
pub fn quant_param_shape(param: &[usize], operand: &[usize], axis: QuantAxis, what: &str) -> Result<Vec<usize>> {
    let numel: usize = param.iter().product();
    let shape = if numel == 1 {
        vec![]
    } else if axis == QuantAxis::Rows && param.len() == 1 && operand.len() >= 2 {
        vec![param[0], 1]
    } else {
        param.to_vec()
    };
    let ok = broadcast(&shape, operand).is_ok_and(|b| b == operand);
    if !ok {
        bail_model!(
            "{what} of shape {} does not fit an operand of shape {}",
            fmt_shape(param),
            fmt_shape(operand)
        );
    }
    Ok(shape)
}

/// `t - zero_point` as i32, the zero point per tensor, row or column.
fn minus_zero_point(t: &Tensor, zp: Option<&Tensor>, axis: QuantAxis) -> Result<Vec<i32>> {
    let values: Vec<i32> = t.to_i64_vec().into_iter().map(|x| x as i32).collect();
    let Some(zp) = zp else { return Ok(values) };
    let zshape = quant_param_shape(zp.shape(), t.shape(), axis, "zero point")?;
    let zv = zp.to_i64_vec();
    let st = broadcast_strides(&zshape, t.shape());
    let mut out = Vec::with_capacity(values.len());
    for_each_index(t.shape(), [&st], |i, [iz]| {
        out.push(values[i].wrapping_sub(zv[iz] as i32))
    });
    Ok(out)
}

/// Checks that input `i` is int8/uint8 and its optional zero point `zp` has the same type.
fn check_quantized_operand(cx: &InferCx, op: &str, i: usize, zp: Option<usize>) -> Result<()> {
    let d = cx.dtype(i)?;
    if !matches!(d, DType::I8 | DType::U8) {
        bail_model!("{op} input {i} must be int8 or uint8, got {d}");
    }
    if let Some(z) = zp.and_then(|z| cx.opt(z).map(|f| (z, f.ty.dtype)))
        && z.1 != d
    {
        bail_model!("{op} zero point input {} is {} but its operand is {d}", z.0, z.1);
    }
    Ok(())
}

/// Checks, when both shapes are known, that quantization parameter input `param` fits
/// operand input `operand`.
fn check_quant_param(cx: &InferCx, param: usize, operand: usize, axis: QuantAxis, what: &str) -> Result<()> {
    let param_shape = cx.opt(param).and_then(|f| f.ty.shape.as_deref());
    if let (Some(p), Some(o)) = (param_shape, cx.shape(operand)?) {
        quant_param_shape(p, o, axis, what)?;
    }
    Ok(())
}

/// Rounds an f32 to the precision of the scale dtype `dtype` (f16/bf16 scales compute there).
fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Requantizes an i32 accumulator: `saturate(round_half_even(acc * multiplier + zero_point))`.
pub(crate) fn requantize(acc: i32, multiplier: f32, zero_point: i64, out: DType) -> f64 {
    let v = (acc as f64 * multiplier as f64 + zero_point as f64).round_ties_even();
    let (lo, hi) = if out == DType::I8 {
        (-128.0, 127.0)
    } else {
        (0.0, 255.0)
    };
    v.clamp(lo, hi)
}

fn qlinear_matmul_eval(cx: &EvalCx) -> Result<Tensor> {
    let (a, b) = (cx.input(0)?, cx.input(3)?);
    let dims = matmul_dims(a.shape(), b.shape())?;
    let av = minus_zero_point(a, cx.opt(2), QuantAxis::Rows)?;
    let bv = minus_zero_point(b, cx.opt(5), QuantAxis::Cols)?;
    let acc = batched_matmul::<i32>(&av, &bv, &dims);
    // Scales broadcast to the output: A's per row, B's per column.
    let out_shape = dims.out.clone();
    let (a_scale, b_scale, y_scale) = (cx.input(1)?, cx.input(4)?, cx.input(6)?);
    let scale_dtype = a_scale.dtype();
    let a_mat_shape = matrix_view_shape(a.shape(), &dims, true);
    let b_mat_shape = matrix_view_shape(b.shape(), &dims, false);
    let full_shape: Vec<usize> = dims.batch.iter().copied().chain([dims.m, dims.n]).collect();
    let sa = quant_param_shape(a_scale.shape(), &a_mat_shape, QuantAxis::Rows, "a_scale")?;
    let sb = quant_param_shape(b_scale.shape(), &b_mat_shape, QuantAxis::Cols, "b_scale")?;
    let y_zp = cx.input(7)?;
    let (sy, szp) = (y_scale.shape().to_vec(), y_zp.shape().to_vec());
    for (s, what) in [
        (&sa, "a_scale"),
        (&sb, "b_scale"),
        (&sy, "y_scale"),
        (&szp, "y_zero_point"),
    ] {
        if !broadcast(s, &full_shape).is_ok_and(|b| b == full_shape) {
            bail_model!("QLinearMatMul {what} of shape {} does not fit the output", fmt_shape(s));
        }
    }
    let (av_s, bv_s, yv_s) = (f32_values(a_scale), f32_values(b_scale), f32_values(y_scale));
    let zpv = y_zp.to_i64_vec();
    let strides_of = |s: &[usize]| broadcast_strides(s, &full_shape);
    let (st_a, st_b, st_y, st_z) = (strides_of(&sa), strides_of(&sb), strides_of(&sy), strides_of(&szp));
    let out_dtype = cx.out_dtype(0)?;
    let mut values = Vec::with_capacity(acc.len());
    for_each_index(&full_shape, [&st_a, &st_b, &st_y, &st_z], |i, [ia, ib, iy, iz]| {
        let mult = round_to(scale_dtype, round_to(scale_dtype, av_s[ia] * bv_s[ib]) / yv_s[iy]);
        values.push(requantize(acc[i], mult, zpv[iz], out_dtype));
    });
    Tensor::from_fn_f64(out_dtype, out_shape, |i| values[i])
}

/// An operand's shape as a (batch..., rows, cols) matrix stack, 1-D operands expanded as
/// matmul reads them (A as a row, B as a column).
fn matrix_view_shape(shape: &[usize], dims: &MatMulDims, is_a: bool) -> Vec<usize> {
    match (shape.len(), is_a) {
        (1, true) => vec![1, dims.k],
        (1, false) => vec![dims.k, 1],
        _ => shape.to_vec(),
    }
}

/// Every element as f32.
fn f32_values(t: &Tensor) -> Vec<f32> {
    t.to_f64_vec().into_iter().map(|x| x as f32).collect()
}

// ---------------------------------------------------------------------------------------
// Gemm.

/// The problem size of a Gemm.
pub struct GemmDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
}

/// The problem size of a Gemm of A and B (and C, which must broadcast to the output), with
/// `transA` and `transB` from `attrs`.
pub fn gemm_dims(attrs: &crate::attr::Attrs, a: &[usize], b: &[usize], c: Option<&[usize]>) -> Result<GemmDims> {
    let trans_a = attrs.int_or("transA", 0)? != 0;
    let trans_b = attrs.int_or("transB", 0)? != 0;
    let (&[a0, a1], &[b0, b1]) = (a, b) else {
        bail_model!("Gemm needs 2-D A and B, got {} and {}", fmt_shape(a), fmt_shape(b));
    };
    let (m, ka) = if trans_a { (a1, a0) } else { (a0, a1) };
    let (kb, n) = if trans_b { (b1, b0) } else { (b0, b1) };
    if ka != kb {
        bail_model!(
            "Gemm inner dimensions differ: A {} (transA={}) gives K={ka}, B {} (transB={}) gives K={kb}",
            fmt_shape(a),
            trans_a as i32,
            fmt_shape(b),
            trans_b as i32
        );
    }
    if let Some(c) = c
        && !broadcast(c, &[m, n]).is_ok_and(|s| s == [m, n])
    {
        bail_model!(
            "Gemm C of shape {} does not broadcast to the output [{m},{n}]",
            fmt_shape(c)
        );
    }
    Ok(GemmDims {
        m,
        n,
        k: ka,
        trans_a,
        trans_b,
    })
}

fn gemm_dims_of(cx: &InferCx) -> Result<Option<GemmDims>> {
    let c = match cx.opt(2) {
        Some(f) => match &f.ty.shape {
            Some(s) => Some(s.as_slice()),
            None => return Ok(None),
        },
        None => None,
    };
    match (cx.shape(0)?, cx.shape(1)?) {
        (Some(a), Some(b)) => Ok(Some(gemm_dims(cx.attrs, a, b, c)?)),
        _ => Ok(None),
    }
}

fn gemm_eval(cx: &EvalCx) -> Result<Tensor> {
    let (a, b) = (promote(cx.input(0)?), promote(cx.input(1)?));
    let c = cx.opt(2).map(promote);
    let d = gemm_dims(cx.attrs, a.shape(), b.shape(), c.as_ref().map(|c| c.shape()))?;
    let alpha = cx.attrs.float_or("alpha", 1.0)?;
    let beta = cx.attrs.float_or("beta", 1.0)?;
    let t = with_numeric!(a.dtype(), "Gemm", T => {
        let (av, bv) = (a.slice::<T>()?, b.slice::<T>()?);
        let am = if d.trans_a { MatRef { data: av, rs: 1, cs: d.m } } else { MatRef::rows(av, d.k) };
        let bm = if d.trans_b { MatRef { data: bv, rs: 1, cs: d.k } } else { MatRef::rows(bv, d.n) };
        let mut out = vec![T::default(); d.m * d.n];
        gemm(d.m, d.n, d.k, am, bm, &mut out, d.n);
        if alpha != 1.0 {
            out.iter_mut().for_each(|x| *x = x.scale(alpha));
        }
        if let Some(c) = &c {
            let cv = c.slice::<T>()?;
            let st = broadcast_strides(c.shape(), &[d.m, d.n]);
            for_each_index(&[d.m, d.n], [&st], |i, [ic]| {
                let term = if beta == 1.0 { cv[ic] } else { cv[ic].scale(beta) };
                out[i] = out[i].add(term);
            });
        }
        Tensor::from_vec(vec![d.m, d.n], out)?
    });
    Ok(demote(t, cx.out_dtype(0)?))
}

// ---------------------------------------------------------------------------------------
// Einsum.

/// A parsed einsum equation: every axis of every operand and of the output named by a label
/// id; ellipsis dims get their own ids after the letters.
#[derive(Debug)]
pub struct EinsumPlan {
    /// The labels of each operand's axes.
    pub inputs: Vec<Vec<usize>>,
    /// The labels of the output's axes.
    pub output: Vec<usize>,
    /// Labels that stand for ellipsis dims (size-1 broadcasting allowed).
    pub ellipsis_labels: Vec<usize>,
    /// Label ids run below this.
    pub num_labels: usize,
}

/// Label ids of the letters a-z, A-Z.
fn letter_id(c: char) -> Option<usize> {
    match c {
        'a'..='z' => Some(c as usize - 'a' as usize),
        'A'..='Z' => Some(26 + c as usize - 'A' as usize),
        _ => None,
    }
}

/// A term split into letters, with the position of its ellipsis if any.
fn parse_term(term: &str) -> Result<(Vec<usize>, Option<usize>)> {
    let mut letters = vec![];
    let mut ellipsis = None;
    let mut rest = term;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("...") {
            if ellipsis.is_some() {
                bail_model!("Einsum term '{term}' has more than one ellipsis");
            }
            ellipsis = Some(letters.len());
            rest = &rest[3..];
            continue;
        }
        match letter_id(c) {
            Some(id) => letters.push(id),
            None => bail_model!("Einsum term '{term}' has an invalid character '{c}'"),
        }
        rest = &rest[c.len_utf8()..];
    }
    Ok((letters, ellipsis))
}

/// Parses an einsum `equation` for operands of `ranks` (letters are labels 0..52, ellipsis
/// dims 52..; without `->` the output is the ellipsis then the labels used once, in ASCII
/// order).
pub fn parse_einsum(equation: &str, ranks: &[usize]) -> Result<EinsumPlan> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        bail_model!(
            "Einsum equation '{equation}' has {} operand terms but the node has {} inputs",
            terms.len(),
            ranks.len()
        );
    }
    let parsed: Vec<(Vec<usize>, Option<usize>)> = terms.iter().map(|t| parse_term(t)).collect::<Result<_>>()?;
    // The ellipsis stands for the same number of trailing-aligned dims everywhere.
    let mut ell_rank = 0;
    for (i, ((letters, ell), &rank)) in parsed.iter().zip(ranks).enumerate() {
        match ell {
            Some(_) if rank >= letters.len() => ell_rank = ell_rank.max(rank - letters.len()),
            None if rank == letters.len() => {}
            _ => bail_model!("Einsum term '{}' does not match the rank {rank} of input {i}", terms[i]),
        }
    }
    let ellipsis_labels: Vec<usize> = (52..52 + ell_rank).collect();
    let mut inputs = vec![];
    for ((letters, ell), &rank) in parsed.iter().zip(ranks) {
        let mut labels = letters.clone();
        if let Some(pos) = ell {
            let own = rank - letters.len();
            labels.splice(pos..pos, ellipsis_labels[ell_rank - own..].iter().copied());
        }
        inputs.push(labels);
    }
    let output = match rhs {
        Some(r) => {
            let (letters, ell) = parse_term(r)?;
            for (i, l) in letters.iter().enumerate() {
                if letters[..i].contains(l) {
                    bail_model!("Einsum output term '{r}' repeats a label");
                }
                if !parsed.iter().any(|(ls, _)| ls.contains(l)) {
                    bail_model!("Einsum output term '{r}' has a label that no input has");
                }
            }
            let mut labels = letters;
            match ell {
                Some(pos) => {
                    labels.splice(pos..pos, ellipsis_labels.iter().copied());
                }
                None if ell_rank > 0 => {
                    bail_model!("Einsum output term '{r}' must contain '...' as the inputs do")
                }
                None => {}
            }
            labels
        }
        None => {
            let mut counts = [0usize; 52];
            for (letters, _) in &parsed {
                for &l in letters {
                    counts[l] += 1;
                }
            }
            // ASCII order: upper case before lower case.
            let order = (26..52).chain(0..26);
            ellipsis_labels
                .iter()
                .copied()
                .chain(order.filter(|&l| counts[l] == 1))
                .collect()
        }
    };
    Ok(EinsumPlan {
        inputs,
        output,
        ellipsis_labels,
        num_labels: 52 + ell_rank,
    })
}

/// The size of every label (`None` for unused ones), checking that operands agree.
pub fn einsum_sizes(plan: &EinsumPlan, shapes: &[&[usize]]) -> Result<Vec<Option<usize>>> {
    let mut sizes: Vec<Option<usize>> = vec![None; plan.num_labels];
    for (i, (labels, shape)) in plan.inputs.iter().zip(shapes).enumerate() {
        for (&l, &d) in labels.iter().zip(shape.iter()) {
            let broadcastable = plan.ellipsis_labels.contains(&l);
            sizes[l] = match sizes[l] {
                None => Some(d),
                Some(s) if s == d => Some(s),
                Some(1) if broadcastable => Some(d),
                Some(s) if broadcastable && d == 1 => Some(s),
                Some(s) => bail_model!(
                    "Einsum input {i} of shape {} has size {d} for a label of size {s} elsewhere",
                    fmt_shape(shape)
                ),
            };
        }
    }
    Ok(sizes)
}

fn einsum_infer(cx: &InferCx) -> Result<Vec<ValueType>> {
    let equation = cx
        .attrs
        .string("equation")?
        .ok_or_else(|| crate::Error::InvalidModel("Einsum attribute 'equation' is missing".into()))?;
    let dtype = cx.dtype(0)?;
    if dtype == DType::Bool {
        return Err(bad_dtype("Einsum", dtype));
    }
    let mut shapes = vec![];
    for i in 0..cx.num_inputs() {
        if cx.dtype(i)? != dtype {
            bail_model!("Einsum input {i} is {} but input 0 is {dtype}", cx.dtype(i)?);
        }
        shapes.push(cx.shape(i)?);
    }
    let Some(shapes) = shapes.into_iter().collect::<Option<Vec<&[usize]>>>() else {
        return Ok(vec![ValueType::unknown(dtype)]);
    };
    let ranks: Vec<usize> = shapes.iter().map(|s| s.len()).collect();
    let plan = parse_einsum(equation, &ranks)?;
    let sizes = einsum_sizes(&plan, &shapes)?;
    let out: Vec<usize> = plan.output.iter().map(|&l| sizes[l].unwrap_or(1)).collect();
    Ok(vec![ValueType::new(dtype, out)])
}

fn einsum_eval(cx: &EvalCx) -> Result<Tensor> {
    let equation = cx.attrs.string_or("equation", "")?;
    let inputs: Vec<_> = (0..cx.inputs.len())
        .map(|i| cx.input(i).map(promote))
        .collect::<Result<_>>()?;
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let ranks: Vec<usize> = shapes.iter().map(|s| s.len()).collect();
    let plan = parse_einsum(equation, &ranks)?;
    let sizes = einsum_sizes(&plan, &shapes)?;
    if let [a, b] = inputs.as_slice()
        && let Some(t) = einsum_pair_as_gemm(&plan, &sizes, a, b)?
    {
        return Ok(demote(t, cx.out_dtype(0)?));
    }
    // Iterate output labels (outer) then summed labels (inner).
    let mut order = plan.output.clone();
    for labels in &plan.inputs {
        for &l in labels {
            if !order.contains(&l) {
                order.push(l);
            }
        }
    }
    let dims: Vec<usize> = order.iter().map(|&l| sizes[l].unwrap_or(1)).collect();
    // Per-operand stride of each iterated label (summed over repeats: diagonals; 0 where the
    // operand broadcasts it).
    let op_strides: Vec<Vec<usize>> = plan
        .inputs
        .iter()
        .zip(&shapes)
        .map(|(labels, shape)| {
            let st = strides(shape);
            order
                .iter()
                .map(|&o| {
                    labels
                        .iter()
                        .zip(shape.iter().zip(&st))
                        .filter(|&(&l, (&d, _))| l == o && d != 1)
                        .map(|(_, (_, &s))| s)
                        .sum()
                })
                .collect()
        })
        .collect();
    let out_shape: Vec<usize> = dims[..plan.output.len()].to_vec();
    let inner: usize = dims[plan.output.len()..].iter().product();
    let dtype = inputs.first().map(|t| t.dtype()).unwrap_or(DType::F32);
    let t = with_numeric!(dtype, "Einsum", T => {
        let datas: Vec<&[T]> = inputs.iter().map(|t| t.slice::<T>()).collect::<Result<_>>()?;
        let total = checked_numel(&dims)?;
        let out_len = checked_numel(&out_shape)?;
        let mut out = vec![T::default(); out_len];
        if total > 0 {
            let mut idx = vec![0usize; dims.len()];
            let mut offs = vec![0usize; datas.len()];
            for lin in 0..total {
                let mut prod = datas.first().map(|d| d[offs[0]]).unwrap_or_default();
                for (d, &o) in datas.iter().zip(&offs).skip(1) {
                    prod = prod.mul(d[o]);
                }
                let o = &mut out[lin / inner.max(1)];
                *o = o.add(prod);
                // Advance the odometer.
                for ax in (0..dims.len()).rev() {
                    idx[ax] += 1;
                    for (off, st) in offs.iter_mut().zip(&op_strides) {
                        *off += st[ax];
                    }
                    if idx[ax] < dims[ax] {
                        break;
                    }
                    for (off, st) in offs.iter_mut().zip(&op_strides) {
                        *off -= st[ax] * dims[ax];
                    }
                    idx[ax] = 0;
                }
            }
        }
        Tensor::from_vec(out_shape, out)?
    });
    Ok(demote(t, cx.out_dtype(0)?))
}

/// A two-operand einsum as a batched GEMM: `A` permuted to (batch, rows, contracted), `B`
/// to (batch, contracted, columns), the product permuted to the output order. `None` when a
/// label is not one of those four kinds (diagonals, single-operand sums) or broadcasts.
fn einsum_pair_as_gemm(plan: &EinsumPlan, sizes: &[Option<usize>], a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    let (la, lb, out) = (&plan.inputs[0], &plan.inputs[1], &plan.output);
    let plain = |labels: &[usize], shape: &[usize]| {
        labels.iter().enumerate().all(|(i, l)| !labels[..i].contains(l))
            && labels.iter().zip(shape).all(|(&l, &d)| sizes[l] == Some(d))
            && labels
                .iter()
                .all(|l| out.contains(l) || (la.contains(l) && lb.contains(l)))
    };
    if !plain(la, a.shape()) || !plain(lb, b.shape()) {
        return Ok(None);
    }
    let batch: Vec<usize> = out
        .iter()
        .copied()
        .filter(|l| la.contains(l) && lb.contains(l))
        .collect();
    let rows: Vec<usize> = out
        .iter()
        .copied()
        .filter(|l| la.contains(l) && !lb.contains(l))
        .collect();
    let cols: Vec<usize> = out
        .iter()
        .copied()
        .filter(|l| lb.contains(l) && !la.contains(l))
        .collect();
    let inner: Vec<usize> = la
        .iter()
        .copied()
        .filter(|l| lb.contains(l) && !out.contains(l))
        .collect();
    let size = |ls: &[usize]| -> usize { ls.iter().map(|&l| sizes[l].unwrap_or(1)).product() };
    let (nb, m, n, k) = (size(&batch), size(&rows), size(&cols), size(&inner));
    let position = |labels: &[usize], l: usize| labels.iter().position(|&x| x == l).unwrap_or(0);
    let permuted = |t: &Tensor, labels: &[usize], order: Vec<&usize>| -> Result<Tensor> {
        let perm: Vec<usize> = order.into_iter().map(|&l| position(labels, l)).collect();
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            Ok(t.clone())
        } else {
            transpose(t, &perm)
        }
    };
    let at = permuted(a, la, batch.iter().chain(&rows).chain(&inner).collect())?;
    let bt = permuted(b, lb, batch.iter().chain(&inner).chain(&cols).collect())?;
    let product_labels: Vec<usize> = batch.iter().chain(&rows).chain(&cols).copied().collect();
    let product_shape: Vec<usize> = product_labels.iter().map(|&l| sizes[l].unwrap_or(1)).collect();
    let product = with_numeric!(at.dtype(), "Einsum", T => {
        let (av, bv) = (at.slice::<T>()?, bt.slice::<T>()?);
        let mut c = vec![T::default(); nb * m * n];
        for i in 0..nb {
            let (am, bm) = (MatRef::rows(&av[i * m * k..], k), MatRef::rows(&bv[i * k * n..], n));
            gemm(m, n, k, am, bm, &mut c[i * m * n..], n);
        }
        Tensor::from_vec(product_shape, c)?
    });
    let perm: Vec<usize> = out.iter().map(|&l| position(&product_labels, l)).collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(Some(product));
    }
    Ok(Some(transpose(&product, &perm)?))
}

// ---------------------------------------------------------------------------------------
// Det.

fn det_batch_shape(s: &[usize]) -> Result<Vec<usize>> {
    match s {
        [batch @ .., m, n] if m == n => Ok(batch.to_vec()),
        _ => bail_model!("Det needs square matrices in the last two dims, got {}", fmt_shape(s)),
    }
}

fn det_eval(cx: &EvalCx) -> Result<Tensor> {
    let x = promote(cx.input(0)?);
    let batch = det_batch_shape(x.shape())?;
    let n = x.shape()[x.rank() - 1];
    let t = with_float!(x.dtype(), "Det", T => {
        let v = x.slice::<T>()?;
        let dets: Vec<T> = if n == 0 {
            vec![1.0; batch.iter().product()]
        } else {
            v.chunks_exact(n * n).map(|m| lu_det(m, n)).collect()
        };
        Tensor::from_vec(batch, dets)?
    });
    Ok(demote(t, cx.out_dtype(0)?))
}

/// The determinant of a row-major `n x n` matrix by LU with partial pivoting.
fn lu_det<T: num_traits::Float>(m: &[T], n: usize) -> T {
    let mut a = m.to_vec();
    let mut det = T::one();
    for col in 0..n {
        let pivot = (col..n).fold(col, |best, r| {
            if a[r * n + col].abs() > a[best * n + col].abs() {
                r
            } else {
                best
            }
        });
        let p = a[pivot * n + col];
        if p == T::zero() {
            return T::zero();
        }
        if pivot != col {
            for j in 0..n {
                a.swap(pivot * n + j, col * n + j);
            }
            det = -det;
        }
        det = det * p;
        for r in col + 1..n {
            let f = a[r * n + col] / p;
            if f != T::zero() {
                for j in col..n {
                    let v = a[col * n + j];
                    a[r * n + j] = a[r * n + j] - f * v;
                }
            }
        }
    }
    det
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn gemm_matches_naive_on_ragged_sizes() {
        for &(m, n, k) in &[(1, 1, 1), (5, 13, 7), (130, 9, 300), (3, 2100, 4)] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 % 11) as f64) - 5.0).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 5 % 13) as f64) - 6.0).collect();
            let mut c = vec![0.0; m * n];
            gemm(m, n, k, MatRef::rows(&a, k), MatRef::rows(&b, n), &mut c, n);
            assert_eq!(c, naive(m, n, k, &a, &b), "m={m} n={n} k={k}");
        }
    }

    #[test]
    fn matmul_dims_promote_vectors_and_broadcast() -> Result<()> {
        let d = matmul_dims(&[2, 1, 3, 4], &[5, 4, 6])?;
        assert_eq!(d.out, vec![2, 5, 3, 6]);
        assert_eq!(matmul_dims(&[4], &[4])?.out, Vec::<usize>::new());
        assert_eq!(matmul_dims(&[3, 4], &[4])?.out, vec![3]);
        assert!(matmul_dims(&[3, 4], &[5, 6]).is_err());
        Ok(())
    }

    #[test]
    fn einsum_implicit_output_is_sorted_single_labels() -> Result<()> {
        let plan = parse_einsum("ij,jk", &[2, 2])?;
        assert_eq!(plan.output, vec![8, 10]);
        let plan = parse_einsum("...ii->...i", &[3])?;
        assert_eq!(plan.inputs[0], vec![52, 8, 8]);
        assert_eq!(plan.output, vec![52, 8]);
        Ok(())
    }

    fn run(kind: LinalgOp, attrs: crate::attr::Attrs, inputs: &[&Tensor]) -> Result<Tensor> {
        let op = crate::op::Op {
            kind: crate::op::OpKind::Linalg(kind),
            attrs,
            version: 21,
        };
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|&t| Some(t)).collect();
        let mut out = op.eval(&inputs, 1)?;
        out.pop().ok_or_else(|| crate::Error::Internal("no output".into()))
    }

    #[test]
    fn einsum_contraction_with_permuted_labels() -> Result<()> {
        // out[b,k,i] = sum_j a[b,i,j] * c[b,k,j], through the batched-GEMM path.
        let (nb, ni, nj, nk) = (2, 3, 4, 5);
        let a: Vec<f32> = (0..nb * ni * nj).map(|v| (v % 7) as f32 - 3.0).collect();
        let c: Vec<f32> = (0..nb * nk * nj).map(|v| (v % 5) as f32 - 2.0).collect();
        let ta = Tensor::from_vec(vec![nb, ni, nj], a.clone())?;
        let tc = Tensor::from_vec(vec![nb, nk, nj], c.clone())?;
        let mut attrs = crate::attr::Attrs::new();
        attrs.set("equation", crate::attr::Attr::String("bij, bkj -> bki".into()));
        let got = run(LinalgOp::Einsum, attrs, &[&ta, &tc])?;
        assert_eq!(got.shape(), &[nb, nk, ni]);
        let got = got.slice::<f32>()?;
        for b in 0..nb {
            for k in 0..nk {
                for i in 0..ni {
                    let want: f32 = (0..nj)
                        .map(|j| a[(b * ni + i) * nj + j] * c[(b * nk + k) * nj + j])
                        .sum();
                    assert_eq!(got[(b * nk + k) * ni + i], want);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn einsum_diagonal_and_sum() -> Result<()> {
        let x = Tensor::from_vec(vec![2, 2], vec![1.0f64, 2.0, 3.0, 4.0])?;
        let mut attrs = crate::attr::Attrs::new();
        attrs.set("equation", crate::attr::Attr::String("ii".into()));
        assert_eq!(run(LinalgOp::Einsum, attrs, &[&x])?.slice::<f64>()?, &[5.0]);
        Ok(())
    }

    #[test]
    fn det_with_pivoting() {
        // [[0,1],[2,3]] needs a row swap: det = -2.
        assert_eq!(lu_det(&[0.0f64, 1.0, 2.0, 3.0], 2), -2.0);
        assert_eq!(lu_det(&[2.0f64, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 4.0], 3), 24.0);
    }

    #[test]
    fn requantize_rounds_half_to_even_and_saturates() {
        assert_eq!(requantize(5, 0.5, 0, DType::U8), 2.0);
        assert_eq!(requantize(7, 0.5, 0, DType::U8), 4.0);
        assert_eq!(requantize(1000, 1.0, 0, DType::I8), 127.0);
    }
}
