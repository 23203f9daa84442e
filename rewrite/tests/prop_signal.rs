//! Property tests of the signal family's rules: DFT (opset 17 axis attribute and opset 20
//! axis input, real/complex input, forward, inverse, RFFT, IRFFT, with and without
//! `dft_length` cropping or zero-padding), STFT (random frames, steps, windows, onesided
//! or full), the three window functions and MelWeightMatrix (constants).
//!
//! Tolerances: DFT/STFT 1e-4 (a MatMul with exact cos/sin coefficients against the
//! reference's mixed-radix FFT; both sum at most 16 terms of size O(1) in f32, so they
//! differ by a few ulps of the largest partial sum); windows and mel matrices exact (0.0:
//! the same f64 formula rounded once to the output dtype).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ir::graph::Node;
use ir::{Attr, Attrs, DType, Graph, Op, OpKind, Tensor};
use proptest::prelude::*;
use std::sync::Arc;

/// A one-op graph whose inputs are all constants, typed without folding (specialization
/// would fold the node away, leaving nothing to lower).
fn const_op(op: &str, version: u32, attrs: Vec<(&str, Attr)>, inputs: Vec<Tensor>) -> Graph {
    let kind = OpKind::from_name(op).unwrap();
    let mut a = Attrs::new();
    for (k, v) in attrs {
        a.set(k, v);
    }
    let mut g = Graph::default();
    let ins: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let v = g.add_value(format!("c{i}"));
            g.consts.insert(v, Arc::new(t));
            Some(v)
        })
        .collect();
    let out = g.add_value("out");
    g.outputs = vec![out];
    g.nodes.push(Node { name: "node".into(), op: Op { kind, attrs: a, version }, inputs: ins, outputs: vec![Some(out)] });
    ir::infer::infer_types(&mut g, false).unwrap();
    g
}

fn signal(shape: Vec<usize>) -> impl Strategy<Value = Tensor> {
    f32_tensor(shape, 2.0)
}

#[derive(Debug, Clone)]
struct DftCase {
    x: Tensor,
    axis: usize,
    negative_axis: bool,
    inverse: bool,
    onesided: bool,
    dft_length: Option<i64>,
    opset20: bool,
    axis_input: bool,
}

fn dft_case() -> impl Strategy<Value = DftCase> {
    (1usize..=3, any::<bool>())
        .prop_flat_map(|(sig_rank, complex)| {
            let c = if complex { 2 } else { 1 };
            (shape(sig_rank, 6), Just(c), 0..sig_rank)
        })
        .prop_flat_map(|(mut s, c, axis)| {
            s.push(c);
            let complex = c == 2;
            (
                signal(s),
                Just(axis),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                proptest::option::of(1i64..=10),
                any::<bool>(),
                any::<bool>(),
                Just(complex),
            )
        })
        .prop_map(|(x, axis, negative_axis, inverse, onesided, dft_length, opset20, axis_input, complex)| {
            // RFFT needs a real input, IRFFT a complex one.
            let onesided = onesided && (inverse == complex);
            DftCase { x, axis, negative_axis, inverse, onesided, dft_length, opset20, axis_input }
        })
}

#[derive(Debug, Clone)]
struct StftCase {
    x: Tensor,
    onesided: bool,
    step: i64,
    frame_len: usize,
    /// 0: frame_length input, 1: window input, 2: both, 3: neither (whole signal).
    how: u8,
    window: Tensor,
}

fn stft_case() -> impl Strategy<Value = StftCase> {
    (1usize..=2, 1usize..=16, any::<bool>(), any::<bool>())
        .prop_flat_map(|(b, len, onesided, complex)| {
            let c = if complex && !onesided { 2 } else { 1 };
            (signal(vec![b, len, c]), Just(onesided), 1i64..=4, 1..=len, 0u8..=3)
        })
        .prop_flat_map(|(x, onesided, step, frame_len, how)| {
            let frame_len = if how == 3 { x.shape()[1] } else { frame_len };
            (Just(x), Just(onesided), Just(step), Just(frame_len), Just(how), f32_tensor(vec![frame_len], 1.0))
        })
        .prop_map(|(x, onesided, step, frame_len, how, window)| StftCase { x, onesided, step, frame_len, how, window })
}

proptest! {
    #![proptest_config(config(48))]

    /// DFT in every mode (tolerance 1e-4, see the header).
    #[test]
    fn dft(c in dft_case()) {
        // IRFFT of one point has length 2 * (1 - 1) = 0: invalid without dft_length.
        prop_assume!(!(c.onesided && c.inverse && c.dft_length.is_none() && c.x.shape()[c.axis] < 2));
        let rank = c.x.rank();
        let axis = if c.negative_axis { c.axis as i64 - rank as i64 } else { c.axis as i64 };
        let mut attrs = vec![("inverse", Attr::Int(i64::from(c.inverse))), ("onesided", Attr::Int(i64::from(c.onesided)))];
        let mut args = vec![Arg::Input(c.x.clone())];
        args.push(match c.dft_length {
            Some(l) => Arg::Const(Tensor::scalar(l)),
            None => Arg::Absent,
        });
        let version = if c.opset20 {
            if c.axis_input || axis != -2 {
                args.push(Arg::Const(Tensor::scalar(axis)));
            }
            20
        } else {
            attrs.push(("axis", Attr::Int(axis)));
            17
        };
        let (g, feeds) = one_op("DFT", version, attrs, &args, 1);
        check_rule("signal/dft-matmul", &g, feeds, 1e-4)?;
    }

    /// STFT (tolerance 1e-4, see the header).
    #[test]
    fn stft(c in stft_case()) {
        let mut args = vec![Arg::Input(c.x.clone()), Arg::Const(Tensor::scalar(c.step))];
        args.push(if c.how == 1 || c.how == 2 { Arg::Input(c.window.clone()) } else { Arg::Absent });
        if c.how == 0 || c.how == 2 {
            args.push(Arg::Const(Tensor::scalar(c.frame_len as i64)));
        }
        let (g, feeds) = one_op("STFT", 17, vec![("onesided", Attr::Int(i64::from(c.onesided)))], &args, 1);
        check_rule("signal/stft-frames", &g, feeds, 1e-4)?;
    }

    /// Hann, Hamming and Blackman windows of constant size: exact.
    #[test]
    fn windows(op in 0usize..3, size in 0i64..=12, periodic in any::<bool>(), dt in 0usize..3, int32 in any::<bool>()) {
        let name = ["HannWindow", "HammingWindow", "BlackmanWindow"][op];
        let code = [DType::F32, DType::F64, DType::F16][dt].onnx_code() as i64;
        let size = if int32 { Tensor::scalar(size as i32) } else { Tensor::scalar(size) };
        let attrs = vec![("periodic", Attr::Int(i64::from(periodic))), ("output_datatype", Attr::Int(code))];
        let g = const_op(name, 17, attrs, vec![size]);
        check_rule("signal/window-const", &g, vec![], 0.0)?;
    }

    /// MelWeightMatrix of constant inputs: exact.
    #[test]
    fn mel(bins in 1i32..=8, dft_length in 8i32..=64, fast in any::<bool>(), lo in 0.0f32..0.5, hi in 0.5f32..1.0, f64_out in any::<bool>()) {
        let rate: i32 = if fast { 16000 } else { 8000 };
        // The highest frequency that still falls on a bin of the spectrogram.
        let top = (dft_length / 2) as f32 * rate as f32 / (dft_length + 1) as f32;
        let (lower, upper) = (lo * top, hi * top);
        let code = if f64_out { DType::F64 } else { DType::F32 }.onnx_code() as i64;
        let inputs = vec![
            Tensor::scalar(bins),
            Tensor::scalar(dft_length),
            Tensor::scalar(rate),
            Tensor::scalar(lower),
            Tensor::scalar(upper),
        ];
        let g = const_op("MelWeightMatrix", 17, vec![("output_datatype", Attr::Int(code))], inputs);
        check_rule("signal/mel-const", &g, vec![], 0.0)?;
    }
}
