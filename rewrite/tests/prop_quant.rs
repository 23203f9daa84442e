//! Property tests of the quant family's lowering rules: per-tensor, per-axis (negative
//! axes too) and blocked layouts (blocks that do not divide the axis included), scales and
//! zero points as constants or runtime inputs, every quantized type, values that round at
//! exact halves and saturate, NaN and ±inf.
//!
//! Tolerance 0.0 (exact): quantized outputs are integers, and the lowering performs the
//! reference's divisions, roundings and products in the same types (the f32 rounding of a
//! quotient equals the reference's f64 rounding of it, and adding a zero point is exact
//! wherever the result is not saturated).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// A data shape, the `axis`/`block_size` attributes, and the scale shape of a layout:
/// per-tensor (`[]` or `[1]`), per-axis or blocked.
fn layout() -> impl Strategy<Value = (Vec<usize>, i64, i64, Vec<usize>)> {
    (any_shape(), 0usize..3, 0usize..4, any::<bool>(), 1usize..=4).prop_map(|(x, kind, ax, neg, block)| {
        let r = x.len();
        if r == 0 || kind == 0 {
            let s = if neg { vec![1] } else { vec![] };
            return (x, 1, 0, s);
        }
        let a = ax % r;
        let axis = if neg { a as i64 - r as i64 } else { a as i64 };
        if kind == 1 {
            return (x.clone(), axis, 0, vec![x[a]]);
        }
        let mut s = x.clone();
        s[a] = x[a].div_ceil(block);
        (x, axis, block as i64, s)
    })
}

/// f32 data with exact halves (rounding ties), large values (saturation) and specials.
fn data(shape: Vec<usize>) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    let elem = prop_oneof![
        6 => -300.0f32..300.0,
        3 => (-40i32..40).prop_map(|v| v as f32 * 0.5),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
    ];
    proptest::collection::vec(elem, n).prop_map(move |v| Tensor::from_vec(shape.clone(), v).unwrap())
}

/// Scales: mostly positive, sometimes negative, exact powers of two included.
fn scales(shape: Vec<usize>) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    let elem = prop_oneof![3 => 0.01f32..4.0, 1 => Just(0.5f32), 1 => Just(1.0f32), 1 => -2.0f32..-0.1];
    proptest::collection::vec(elem, n).prop_map(move |v| Tensor::from_vec(shape.clone(), v).unwrap())
}

fn quantized_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::U8), Just(DType::I8), Just(DType::U16), Just(DType::I16)]
}

/// A constant or a runtime input.
fn place(t: Tensor, konst: bool) -> Arg {
    if konst { Arg::Const(t) } else { Arg::Input(t) }
}

proptest! {
    #![proptest_config(config(64))]

    /// QuantizeLinear over every layout and quantized type, with or without a zero point
    /// (the type then from output_dtype or u8), f32/f16/bf16 data and scales and the
    /// `precision` attribute: exact.
    #[test]
    fn quantize(((_, axis, block, _), x, s, z) in layout().prop_flat_map(|l| {
                    let (xs, ss) = (l.0.clone(), l.3.clone());
                    (Just(l), data(xs), scales(ss.clone()), i64_tensor(ss, -60, 60))
                }),
                out in quantized_dtype(), zp_mode in 0usize..3, konst in any::<bool>(),
                xd in prop_oneof![3 => Just(DType::F32), 1 => Just(DType::F16), 1 => Just(DType::BF16)],
                sd in prop_oneof![3 => Just(DType::F32), 1 => Just(DType::F16)],
                precision in prop_oneof![3 => Just(0i64), 1 => Just(10i64), 1 => Just(1i64)]) {
        let mut attrs = vec![("axis", Attr::Int(axis))];
        if block > 0 {
            attrs.push(("block_size", Attr::Int(block)));
        }
        if precision != 0 {
            attrs.push(("precision", Attr::Int(precision)));
        }
        let zp = match zp_mode {
            0 => Arg::Absent,
            1 => {
                attrs.push(("output_dtype", Attr::Int(i64::from(out.onnx_code()))));
                Arg::Absent
            }
            _ => place(z.cast(out), konst),
        };
        let args = [Arg::Input(cast(x, xd)), place(cast(s, sd), konst), zp];
        let (g, feeds) = one_op("QuantizeLinear", 25, attrs, &args, 1);
        check_rule("quant/quantize", &g, feeds, 0.0)?;
    }

    /// QuantizeLinear of i32 data (the division in f64): exact.
    #[test]
    fn quantize_i32(((_, axis, block, _), x, s) in layout().prop_flat_map(|l| {
                        let (xs, ss) = (l.0.clone(), l.3.clone());
                        (Just(l), i64_tensor(xs, -1000, 1000), scales(ss))
                    }), out in quantized_dtype()) {
        let mut attrs = vec![("axis", Attr::Int(axis)), ("output_dtype", Attr::Int(i64::from(out.onnx_code())))];
        if block > 0 {
            attrs.push(("block_size", Attr::Int(block)));
        }
        let (g, feeds) = one_op("QuantizeLinear", 25, attrs, &[Arg::Input(x.cast(DType::I32)), Arg::Input(s), Arg::Absent], 1);
        check_rule("quant/quantize", &g, feeds, 0.0)?;
    }

    /// DequantizeLinear over every layout, input type (i32 included) and output type, with
    /// or without a zero point: exact.
    #[test]
    fn dequantize(((_, axis, block, _), x, s, z) in layout().prop_flat_map(|l| {
                      let (xs, ss) = (l.0.clone(), l.3.clone());
                      (Just(l), i64_tensor(xs, -200, 300), scales(ss.clone()), i64_tensor(ss, -50, 120))
                  }),
                  xd in prop_oneof![Just(DType::U8), Just(DType::I8), Just(DType::U16), Just(DType::I16), Just(DType::I32)],
                  sd in prop_oneof![3 => Just(DType::F32), 1 => Just(DType::F16), 1 => Just(DType::BF16)],
                  with_zp in any::<bool>(), konst in any::<bool>(),
                  out in prop_oneof![Just(0i64), Just(1i64), Just(10i64)]) {
        let mut attrs = vec![("axis", Attr::Int(axis))];
        if block > 0 {
            attrs.push(("block_size", Attr::Int(block)));
        }
        if out != 0 {
            attrs.push(("output_dtype", Attr::Int(out)));
        }
        let zp = if with_zp { place(z.cast(xd), konst) } else { Arg::Absent };
        let args = [Arg::Input(x.cast(xd)), place(cast(s, sd), konst), zp];
        let (g, feeds) = one_op("DequantizeLinear", 25, attrs, &args, 1);
        check_rule("quant/dequantize", &g, feeds, 0.0)?;
    }

    /// DynamicQuantizeLinear's three outputs, on mixed-sign, one-sided, all-zero and
    /// NaN-containing data: exact.
    #[test]
    fn dynamic(x in any_shape().prop_flat_map(data), shift in prop_oneof![Just(0.0f32), Just(500.0f32), Just(-500.0f32)], zeros in any::<bool>()) {
        let v: Vec<f32> = x.to_f64_vec().iter().map(|&e| if zeros { 0.0 } else { e as f32 + shift }).collect();
        let v: Vec<f32> = v.into_iter().map(|e| if e.is_infinite() { 1.0 } else { e }).collect();
        let x = Tensor::from_vec(x.shape().to_vec(), v).unwrap();
        let (g, feeds) = one_op("DynamicQuantizeLinear", 11, vec![], &[Arg::Input(x)], 3);
        check_rule("quant/dynamic", &g, feeds, 0.0)?;
    }

    /// Empty data (a zero dim), per-tensor and per-axis: exact.
    #[test]
    fn empty(per_axis in any::<bool>(), n in 1usize..4) {
        let x = Tensor::from_vec(vec![0, n], Vec::<f32>::new()).unwrap();
        let s = if per_axis { Tensor::from_vec(vec![n], vec![0.5f32; n]).unwrap() } else { Tensor::scalar(0.5f32) };
        let (g, feeds) = one_op("QuantizeLinear", 21, vec![("axis", Attr::Int(1))], &[Arg::Input(x), Arg::Const(s.clone())], 1);
        check_rule("quant/quantize", &g, feeds, 0.0)?;
        let q = Tensor::from_vec(vec![0, n], Vec::<u8>::new()).unwrap();
        let (g, feeds) = one_op("DequantizeLinear", 21, vec![("axis", Attr::Int(1))], &[Arg::Input(q), Arg::Const(s)], 1);
        check_rule("quant/dequantize", &g, feeds, 0.0)?;
        let x = Tensor::from_vec(vec![n, 0], Vec::<f32>::new()).unwrap();
        let (g, feeds) = one_op("DynamicQuantizeLinear", 11, vec![], &[Arg::Input(x)], 3);
        check_rule("quant/dynamic", &g, feeds, 0.0)?;
    }
}
