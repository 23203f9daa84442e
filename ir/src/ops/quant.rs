//! The linear quantization op family: QuantizeLinear and DequantizeLinear (per-tensor,
//! per-axis and blocked scales) and DynamicQuantizeLinear.
//!
//! Quantized types are the 8- and 16-bit integers (u8, i8, u16, i16; i32 for
//! DequantizeLinear's input); float8 and 4/2-bit types are not supported. Rounding is
//! half to even and results saturate to the quantized type's range.

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, demote};
use crate::shape::{fmt_shape, normalize_axis};
use crate::tensor::{Elem, Tensor};
use crate::{bail_model, bail_unsupported};

crate::op_family! {
    /// Ops of the quant family.
    pub enum QuantOp {
        QuantizeLinear,
        DequantizeLinear,
        DynamicQuantizeLinear,
    }
}

impl QuantOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        let name = self.name();
        let x = cx.input(0)?.ty;
        match self {
            QuantOp::QuantizeLinear => {
                if !matches!(x.dtype, DType::F32 | DType::F16 | DType::BF16 | DType::I32) {
                    return Err(bad_dtype(name, x.dtype));
                }
                let scale = cx.input(1)?.ty;
                if !matches!(
                    scale.dtype,
                    DType::F32 | DType::F16 | DType::BF16 | DType::I32
                ) {
                    bail_model!(
                        "QuantizeLinear y_scale must be f32, f16, bf16 or i32, got {}",
                        scale.dtype
                    );
                }
                division_dtype(cx.attrs, scale.dtype)?;
                let zp = cx.opt(2).map(|f| f.ty);
                let out = quantized_dtype(cx.attrs, zp.map(|t| t.dtype))?;
                check_layout(name, cx, x, scale, zp)?;
                Ok(vec![ValueType {
                    dtype: out,
                    shape: x.shape.clone(),
                }])
            }
            QuantOp::DequantizeLinear => {
                let scale = cx.input(1)?.ty;
                if !matches!(
                    x.dtype,
                    DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::I32
                ) {
                    return Err(bad_dtype(name, x.dtype));
                }
                if !matches!(scale.dtype, DType::F32 | DType::F16 | DType::BF16) {
                    bail_model!(
                        "DequantizeLinear x_scale must be f32, f16 or bf16, got {}",
                        scale.dtype
                    );
                }
                let zp = cx.opt(2).map(|f| f.ty);
                if let Some(z) = zp
                    && z.dtype != x.dtype
                {
                    bail_model!(
                        "DequantizeLinear x_zero_point is {} but x is {}",
                        z.dtype,
                        x.dtype
                    );
                }
                let out = match cx.attrs.int_or("output_dtype", 0)? {
                    0 => scale.dtype,
                    code => match onnx_dtype(code) {
                        Some(d @ (DType::F32 | DType::F16 | DType::BF16)) => d,
                        _ => bail_model!(
                            "DequantizeLinear output_dtype {code} is not f32, f16 or bf16"
                        ),
                    },
                };
                check_layout(name, cx, x, scale, zp)?;
                Ok(vec![ValueType {
                    dtype: out,
                    shape: x.shape.clone(),
                }])
            }
            QuantOp::DynamicQuantizeLinear => {
                if x.dtype != DType::F32 {
                    return Err(bad_dtype(name, x.dtype));
                }
                Ok(vec![
                    ValueType {
                        dtype: DType::U8,
                        shape: x.shape.clone(),
                    },
                    ValueType::new(DType::F32, vec![]),
                    ValueType::new(DType::U8, vec![]),
                ])
            }
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        let x = cx.input(0)?;
        match self {
            QuantOp::QuantizeLinear => {
                let scale = cx.input(1)?;
                let zp = cx.opt(2);
                let layout = Layout::new(self.name(), cx.attrs, x.shape(), scale.shape())?;
                let div = division_dtype(cx.attrs, scale.dtype())?;
                let quotients = quotients(x, scale, div, &layout)?;
                let out = cx.out_dtype(0)?;
                let y = match out {
                    DType::U8 => quantize::<u8>(&quotients, zp, &layout)?,
                    DType::I8 => quantize::<i8>(&quotients, zp, &layout)?,
                    DType::U16 => quantize::<u16>(&quotients, zp, &layout)?,
                    DType::I16 => quantize::<i16>(&quotients, zp, &layout)?,
                    other => return Err(Error::Internal(format!("QuantizeLinear to {other}"))),
                };
                Ok(vec![Tensor::new(x.shape().to_vec(), y)?])
            }
            QuantOp::DequantizeLinear => {
                let scale = cx.input(1)?;
                let layout = Layout::new(self.name(), cx.attrs, x.shape(), scale.shape())?;
                let scale = scale.cast(DType::F32);
                let scale = scale.slice::<f32>()?;
                let zp = cx.opt(2).map(|z| z.to_i64_vec());
                let y = crate::with_numeric!(x.dtype(), self.name(), T => {
                    dequantize(x.slice::<T>()?, scale, zp.as_deref(), &layout)
                });
                let y = Tensor::from_vec(x.shape().to_vec(), y)?;
                Ok(vec![demote(y, cx.out_dtype(0)?)])
            }
            QuantOp::DynamicQuantizeLinear => {
                let (y, scale, zp) = dynamic_quantize(x.slice::<f32>()?);
                Ok(vec![
                    Tensor::from_vec(x.shape().to_vec(), y)?,
                    Tensor::scalar(scale),
                    Tensor::scalar(zp),
                ])
            }
        }
    }
}

fn onnx_dtype(code: i64) -> Option<DType> {
    i32::try_from(code).ok().and_then(DType::from_onnx_code)
}

/// The name of an ONNX type code, for errors.
fn code_name(code: i64) -> &'static str {
    i32::try_from(code).map_or("unknown", DType::onnx_code_name)
}

/// QuantizeLinear's output type: y_zero_point's type, else `output_dtype`, else u8.
fn quantized_dtype(attrs: &Attrs, zero_point: Option<DType>) -> Result<DType> {
    let attr = attrs.int_or("output_dtype", 0)?;
    let requested = if attr == 0 {
        None
    } else {
        Some(onnx_dtype(attr).ok_or_else(|| {
            Error::Unsupported(format!("QuantizeLinear to {} ({attr})", code_name(attr)))
        })?)
    };
    if let (Some(r), Some(z)) = (requested, zero_point)
        && r != z
    {
        bail_model!("QuantizeLinear output_dtype is {r} but y_zero_point is {z}");
    }
    let out = zero_point.or(requested).unwrap_or(DType::U8);
    if !matches!(out, DType::U8 | DType::I8 | DType::U16 | DType::I16) {
        bail_model!("QuantizeLinear output type {out} is not a quantized type (u8, i8, u16, i16)");
    }
    match attrs.int_or("saturate", 1)? {
        0 | 1 => Ok(out),
        other => bail_model!("QuantizeLinear attribute 'saturate' must be 0 or 1, got {other}"),
    }
}

/// The type `x / y_scale` is computed in: `precision`, else y_scale's type.
fn division_dtype(attrs: &Attrs, scale: DType) -> Result<DType> {
    match attrs.int_or("precision", 0)? {
        0 => Ok(scale),
        code => match onnx_dtype(code) {
            Some(d @ (DType::F32 | DType::F16 | DType::BF16)) => Ok(d),
            _ => bail_unsupported!("QuantizeLinear precision {} ({code})", code_name(code)),
        },
    }
}

/// Checks the shapes of scale and zero point against x, where known.
fn check_layout(
    op: &str,
    cx: &InferCx,
    x: &ValueType,
    scale: &ValueType,
    zp: Option<&ValueType>,
) -> Result<()> {
    let single = |d: &[usize]| d.len() <= 1 && d.iter().product::<usize>() == 1;
    if let (Some(s), Some(z)) = (scale.shape.as_deref(), zp.and_then(|z| z.shape.as_deref()))
        && s != z
        && !(single(s) && single(z))
    {
        bail_model!(
            "{op} scale shape {} differs from zero point shape {}",
            fmt_shape(s),
            fmt_shape(z)
        );
    }
    if let (Some(xs), Some(s)) = (x.shape.as_deref(), scale.shape.as_deref()) {
        Layout::new(op, cx.attrs, xs, s)?;
    }
    Ok(())
}

/// Which scale applies to each element of x, over x viewed as `[outer, axis_len, inner]`:
/// element `(o, a, i)` uses scale `o * outer_stride + (a / block) * axis_stride + i * inner_stride`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Layout {
    outer: usize,
    axis_len: usize,
    inner: usize,
    block: usize,
    outer_stride: usize,
    axis_stride: usize,
    inner_stride: usize,
}

impl Layout {
    /// Per-tensor (scale of one element), per-axis (1-D scale of the axis length) or
    /// blocked (`block_size > 0`, scale of x's rank with the axis divided into blocks).
    fn new(op: &str, attrs: &Attrs, x: &[usize], scale: &[usize]) -> Result<Layout> {
        let n: usize = x.iter().product();
        let block_size = attrs.int_or("block_size", 0)?;
        if block_size < 0 {
            bail_model!("{op} block_size must not be negative, got {block_size}");
        }
        let per_tensor = Layout {
            outer: 1,
            axis_len: 1,
            inner: n,
            block: 1,
            outer_stride: 0,
            axis_stride: 0,
            inner_stride: 0,
        };
        if block_size == 0 && scale.iter().product::<usize>() == 1 && scale.len() <= 1 {
            return Ok(per_tensor);
        }
        let axis = normalize_axis(attrs.int_or("axis", 1)?, x.len())?;
        let (outer, axis_len, inner) = (
            x[..axis].iter().product(),
            x[axis],
            x[axis + 1..].iter().product(),
        );
        if block_size == 0 {
            if scale != [axis_len] {
                bail_model!(
                    "{op} scale of shape {} is neither a scalar nor a 1-D tensor of length {axis_len} (axis {axis} of {})",
                    fmt_shape(scale),
                    fmt_shape(x)
                );
            }
            return Ok(Layout {
                outer,
                axis_len,
                inner,
                block: 1,
                outer_stride: 0,
                axis_stride: 1,
                inner_stride: 0,
            });
        }
        let block = block_size as usize;
        let blocks = axis_len.div_ceil(block);
        let mut want = x.to_vec();
        want[axis] = blocks;
        if scale != want.as_slice() {
            bail_model!(
                "{op} blocked scale has shape {}, expected {} for input {} with block_size {block} on axis {axis}",
                fmt_shape(scale),
                fmt_shape(&want),
                fmt_shape(x)
            );
        }
        Ok(Layout {
            outer,
            axis_len,
            inner,
            block,
            outer_stride: blocks * inner,
            axis_stride: inner,
            inner_stride: 1,
        })
    }

    /// Calls `f(x_range_start, len, scale_index, scale_step)` for each run of x whose
    /// scale index advances by `scale_step` per element.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        for o in 0..self.outer {
            for a in 0..self.axis_len {
                let start = (o * self.axis_len + a) * self.inner;
                f(
                    start,
                    self.inner,
                    o * self.outer_stride + (a / self.block) * self.axis_stride,
                    self.inner_stride,
                );
            }
        }
    }
}

/// `x / scale` for every element, in the division type (f16/bf16 results rounded to it).
fn quotients(x: &Tensor, scale: &Tensor, div: DType, layout: &Layout) -> Result<Vec<f64>> {
    let mut q = vec![0.0; x.numel()];
    match (x.dtype(), div) {
        (DType::F32, DType::F32) if scale.dtype() == DType::F32 => {
            let (xs, ss) = (x.slice::<f32>()?, scale.slice::<f32>()?);
            layout.for_each_run(|start, len, s0, step| {
                for j in 0..len {
                    q[start + j] = f64::from(xs[start + j] / ss[s0 + j * step]);
                }
            });
        }
        (DType::I32, _) | (_, DType::I32) => {
            let (xs, ss) = (x.to_f64_vec(), scale.to_f64_vec());
            layout.for_each_run(|start, len, s0, step| {
                for j in 0..len {
                    q[start + j] = xs[start + j] / ss[s0 + j * step];
                }
            });
        }
        _ => {
            // Both operands rounded to the division type, divided in f32 and rounded back,
            // which is the correctly rounded division in that type.
            let xs = x.cast(div).cast(DType::F32);
            let ss = scale.cast(div).cast(DType::F32);
            let (xs, ss) = (xs.slice::<f32>()?, ss.slice::<f32>()?);
            let mut f = vec![0.0f32; xs.len()];
            layout.for_each_run(|start, len, s0, step| {
                for j in 0..len {
                    f[start + j] = xs[start + j] / ss[s0 + j * step];
                }
            });
            let rounded = Tensor::from_vec(vec![f.len()], f)?.cast(div);
            q = rounded.to_f64_vec();
        }
    }
    Ok(q)
}

/// `saturate(round_half_even(q) + zero_point)` into `T`.
fn quantize<T: Elem + num_traits::Bounded>(
    q: &[f64],
    zp: Option<&Tensor>,
    layout: &Layout,
) -> Result<crate::tensor::Data> {
    let zp = zp.map(|z| z.to_f64_vec());
    let (lo, hi) = (T::min_value().to_f64(), T::max_value().to_f64());
    let mut y = vec![T::default(); q.len()];
    layout.for_each_run(|start, len, s0, step| {
        for j in 0..len {
            let z = zp.as_ref().map_or(0.0, |z| z[s0 + j * step]);
            y[start + j] = T::from_f64((q[start + j].round_ties_even() + z).clamp(lo, hi));
        }
    });
    Ok(T::into_data(y))
}

/// `(x - zero_point) * scale` in f32, the difference taken exactly in integers.
fn dequantize<T: Elem>(x: &[T], scale: &[f32], zp: Option<&[i64]>, layout: &Layout) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    layout.for_each_run(|start, len, s0, step| {
        for j in 0..len {
            let s = s0 + j * step;
            let z = zp.map_or(0, |z| z[s]);
            y[start + j] = (x[start + j].to_i128() as i64 - z) as f32 * scale[s];
        }
    });
    y
}

/// DynamicQuantizeLinear: u8 quantization with the scale and zero point that map the data
/// range (extended to include 0) onto [0, 255].
fn dynamic_quantize(x: &[f32]) -> (Vec<u8>, f32, u8) {
    let max = x.iter().fold(0.0f32, |m, &v| m.max(v));
    let min = x.iter().fold(0.0f32, |m, &v| m.min(v));
    // An all-zero input gets scale 1, as in ONNX Runtime.
    let scale = if max == min { 1.0 } else { (max - min) / 255.0 };
    let zp = (0.0 - min / scale).clamp(0.0, 255.0).round_ties_even();
    let y = x
        .iter()
        .map(|&v| ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8)
        .collect();
    (y, scale, zp as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::{Op, OpKind};

    fn run(op: QuantOp, attrs: &[(&str, Attr)], inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let mut a = Attrs::new();
        for (k, v) in attrs {
            a.set(k, v.clone());
        }
        let op = Op {
            kind: OpKind::Quant(op),
            attrs: a,
            version: 25,
        };
        let ins: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        let n = if op.kind == OpKind::Quant(QuantOp::DynamicQuantizeLinear) {
            3
        } else {
            1
        };
        op.eval(&ins, n)
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() -> Result<()> {
        let x = Tensor::from_vec(vec![5], vec![0.5f32, 1.5, 2.5, -300.0, 300.0])?;
        let s = Tensor::scalar(1.0f32);
        let z = Tensor::scalar(0i8);
        let y = run(QuantOp::QuantizeLinear, &[], &[&x, &s, &z])?;
        assert_eq!(y[0].slice::<i8>()?, &[0, 2, 2, -128, 127]);
        Ok(())
    }

    #[test]
    fn blocked_quantization_uses_one_scale_per_block() -> Result<()> {
        // x [1, 3], blocks of 2 along axis 1: scales [1, 3] -> [[1, 1, 3]] per element.
        let x = Tensor::from_vec(vec![1, 3], vec![4.0f32, 6.0, 9.0])?;
        let s = Tensor::from_vec(vec![1, 2], vec![2.0f32, 3.0])?;
        let attrs = [
            ("axis", Attr::Int(1)),
            ("block_size", Attr::Int(2)),
            ("output_dtype", Attr::Int(5)),
        ];
        let y = run(QuantOp::QuantizeLinear, &attrs, &[&x, &s])?;
        assert_eq!(y[0].slice::<i16>()?, &[2, 3, 3]);
        let bad = Tensor::from_vec(vec![1, 3], vec![2.0f32, 3.0, 4.0])?;
        assert!(run(QuantOp::QuantizeLinear, &attrs, &[&x, &bad]).is_err());
        Ok(())
    }

    #[test]
    fn dequantize_per_axis() -> Result<()> {
        let x = Tensor::from_vec(vec![2, 2], vec![10u8, 20, 30, 40])?;
        let s = Tensor::from_vec(vec![2], vec![0.5f32, 2.0])?;
        let z = Tensor::from_vec(vec![2], vec![10u8, 0])?;
        let y = run(
            QuantOp::DequantizeLinear,
            &[("axis", Attr::Int(0))],
            &[&x, &s, &z],
        )?;
        assert_eq!(y[0].slice::<f32>()?, &[0.0, 5.0, 60.0, 80.0]);
        Ok(())
    }

    #[test]
    fn dynamic_quantize_maps_range_to_u8() -> Result<()> {
        let x = Tensor::from_vec(vec![3], vec![0.0f32, 2.0, -0.55])?;
        let out = run(QuantOp::DynamicQuantizeLinear, &[], &[&x])?;
        assert!((out[1].scalar_f64()? - 0.01).abs() < 1e-6);
        assert_eq!(out[2].slice::<u8>()?, &[55]);
        assert_eq!(out[0].slice::<u8>()?, &[55, 255, 0]);
        Ok(())
    }
}
