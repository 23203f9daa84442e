//! Property tests of the pool family's lowering rules: random 1-D to 3-D windows (kernel,
//! strides, dilations, pads, ceil_mode, auto_pad), dtypes and attributes, compared with the
//! reference interpreter.
//!
//! Tolerances: MaxPool (values and Indices), GlobalMaxPool and MaxUnpool are exact (0.0:
//! they only select elements). Sums (AveragePool, LpPool, GlobalAverage/LpPool, LRN) are
//! reassociated (a Reduce instead of the reference's loop order) and use `powf` the same
//! way, so they agree to rounding: 1e-5 relative in f32/f64, 1e-2 for f16 outputs (one
//! f16 ulp is ~1e-3 and a rounding difference in f32 can flip the last f16 bit).
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// One spatial axis of a pool: (len, kernel, stride, dilation, pad_begin, pad_end).
fn axis() -> impl Strategy<Value = (usize, usize, usize, usize, usize, usize)> {
    (1usize..=3, 1usize..=3, 1usize..=2)
        .prop_flat_map(|(k, s, d)| (Just(k), Just(s), Just(d), 0..k, 0..k))
        .prop_flat_map(|(k, s, d, pb, pe)| {
            let span = (k - 1) * d + 1;
            let lo = span.saturating_sub(pb + pe).max(1);
            (lo..=lo + 4, Just(k), Just(s), Just(d), Just(pb), Just(pe))
        })
}

/// A pool geometry: N, C, per-axis parameters, auto_pad and ceil_mode.
#[derive(Debug, Clone)]
struct Geo {
    n: usize,
    c: usize,
    axes: Vec<(usize, usize, usize, usize, usize, usize)>,
    auto_pad: &'static str,
    ceil: bool,
}

fn geo(max_rank: usize) -> impl Strategy<Value = Geo> {
    (
        1usize..=2,
        1usize..=3,
        proptest::collection::vec(axis(), 1..=max_rank),
        prop_oneof![Just("NOTSET"), Just("NOTSET"), Just("VALID"), Just("SAME_UPPER"), Just("SAME_LOWER")],
        any::<bool>(),
    )
        .prop_map(|(n, c, mut axes, auto_pad, ceil)| {
            if auto_pad == "VALID" {
                // VALID drops the pads: the input alone must hold a window.
                for a in &mut axes {
                    a.0 = a.0.max((a.1 - 1) * a.3 + 1);
                }
            }
            Geo { n, c, axes, auto_pad, ceil }
        })
}

impl Geo {
    fn shape(&self) -> Vec<usize> {
        let mut s = vec![self.n, self.c];
        s.extend(self.axes.iter().map(|a| a.0));
        s
    }

    fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let k: Vec<i64> = self.axes.iter().map(|a| a.1 as i64).collect();
        let s: Vec<i64> = self.axes.iter().map(|a| a.2 as i64).collect();
        let d: Vec<i64> = self.axes.iter().map(|a| a.3 as i64).collect();
        let mut p: Vec<i64> = self.axes.iter().map(|a| a.4 as i64).collect();
        p.extend(self.axes.iter().map(|a| a.5 as i64));
        let mut v = vec![("kernel_shape", ints(&k)), ("strides", ints(&s)), ("dilations", ints(&d))];
        if self.auto_pad == "NOTSET" {
            v.push(("pads", ints(&p)));
            v.push(("ceil_mode", Attr::Int(self.ceil as i64)));
        } else {
            v.push(("auto_pad", Attr::String(self.auto_pad.into())));
        }
        v
    }
}

fn with_values(g: Geo) -> impl Strategy<Value = (Geo, Tensor)> {
    let s = g.shape();
    (Just(g), f32_tensor(s, 8.0))
}

fn float_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F32), Just(DType::F16), Just(DType::F64), Just(DType::BF16)]
}

fn tol_for(d: DType, t: f64) -> f64 {
    match d {
        DType::F16 | DType::BF16 => 1e-2,
        _ => t,
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// MaxPool values and (when asked) Indices in both storage orders: exact.
    #[test]
    fn maxpool(
        (g, x) in geo(3).prop_flat_map(with_values),
        dt in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::F64), Just(DType::U8), Just(DType::I8)],
        outs in 1usize..=2,
        order in 0i64..=1,
    ) {
        let x = if dt == DType::U8 { Tensor::from_vec(x.shape().to_vec(), x.to_f64_vec().iter().map(|v| (v + 8.0) as f32 * 10.0).collect::<Vec<f32>>()).unwrap() } else { x };
        let x = cast(x, dt);
        let mut attrs = g.attrs();
        attrs.push(("storage_order", Attr::Int(order)));
        let (gr, feeds) = one_op("MaxPool", 12, attrs, &[Arg::Input(x)], outs);
        check_rule("pool/maxpool", &gr, feeds, 0.0)?;
    }

    /// AveragePool with and without count_include_pad: reassociated sum, 1e-5.
    #[test]
    fn averagepool((g, x) in geo(3).prop_flat_map(with_values), dt in float_dtype(), cip in 0i64..=1) {
        let mut attrs = g.attrs();
        attrs.push(("count_include_pad", Attr::Int(cip)));
        let (gr, feeds) = one_op("AveragePool", 19, attrs, &[Arg::Input(cast(x, dt))], 1);
        check_rule("pool/averagepool", &gr, feeds, tol_for(dt, 1e-5))?;
    }

    /// LpPool for p = 1, 2, 3: reassociated sum and powf, 1e-5.
    #[test]
    fn lppool((g, x) in geo(2).prop_flat_map(with_values), dt in float_dtype(), p in 1i64..=3) {
        let mut attrs = g.attrs();
        attrs.push(("p", Attr::Int(p)));
        let (gr, feeds) = one_op("LpPool", 18, attrs, &[Arg::Input(cast(x, dt))], 1);
        check_rule("pool/lppool", &gr, feeds, tol_for(dt, 1e-5))?;
    }

    /// GlobalAveragePool / GlobalMaxPool / GlobalLpPool over ranks 2 to 5.
    #[test]
    fn global(
        x in (2usize..=5).prop_flat_map(|r| shape(r, 4)).prop_flat_map(|s| f32_tensor(s, 8.0)),
        which in 0usize..3,
        dt in float_dtype(),
        p in 1i64..=3,
    ) {
        let op = ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"][which];
        let attrs = if which == 2 { vec![("p", Attr::Int(p))] } else { vec![] };
        let (gr, feeds) = one_op(op, 2, attrs, &[Arg::Input(cast(x, dt))], 1);
        let tol = if which == 1 { 0.0 } else { tol_for(dt, 1e-5) };
        check_rule("pool/global", &gr, feeds, tol)?;
    }

    /// MaxUnpool with the default and with a larger output_shape: exact.
    #[test]
    fn maxunpool(
        (shape, k, s, extra, seed) in (1usize..=2, 1usize..=2, proptest::collection::vec(1usize..=3, 1..=2))
            .prop_flat_map(|(n, c, sp)| {
                let r = sp.len();
                let mut shape = vec![n, c];
                shape.extend(sp);
                (Just(shape), proptest::collection::vec(1usize..=3, r), proptest::collection::vec(1usize..=3, r),
                 proptest::collection::vec(0usize..=2, r + 2), any::<u64>())
            }),
        with_shape in any::<bool>(),
        dt in float_dtype(),
    ) {
        let r = k.len();
        let mut inferred = shape[..2].to_vec();
        for i in 0..r {
            inferred.push((shape[2 + i] - 1) * s[i] + k[i]);
        }
        let total: usize = inferred.iter().product();
        let m: usize = shape.iter().product();
        let idx: Vec<i64> = (0..m).map(|i| ((seed.wrapping_mul(6364136223846793005).wrapping_add((i as u64).wrapping_mul(1442695040888963407))) >> 33) as i64 % total as i64).collect();
        let x = Tensor::from_vec(shape.clone(), (0..m).map(|i| i as f32 - 3.5).collect::<Vec<f32>>()).unwrap();
        let i = Tensor::from_vec(shape.clone(), idx).unwrap();
        let attrs = vec![
            ("kernel_shape", ints(&k.iter().map(|&v| v as i64).collect::<Vec<_>>())),
            ("strides", ints(&s.iter().map(|&v| v as i64).collect::<Vec<_>>())),
        ];
        let mut args = vec![Arg::Input(cast(x, dt)), Arg::Input(i)];
        if with_shape {
            let os: Vec<i64> = inferred.iter().zip(&extra).enumerate().map(|(d, (&a, &e))| if d < 2 { a as i64 } else { (a + e) as i64 }).collect();
            args.push(Arg::Const(Tensor::from_vec(vec![os.len()], os).unwrap()));
        }
        let (gr, feeds) = one_op("MaxUnpool", 11, attrs, &args, 1);
        check_rule("pool/maxunpool", &gr, feeds, 0.0)?;
    }

    /// LRN with random size, alpha, beta, bias over ranks 3 and 4.
    #[test]
    fn lrn(
        x in (3usize..=4).prop_flat_map(|r| shape(r, 5)).prop_flat_map(|s| f32_tensor(s, 4.0)),
        size in 1i64..=5,
        alpha in 1e-4f32..1.0,
        beta in 0.25f32..1.0,
        bias in 0.5f32..3.0,
        dt in float_dtype(),
    ) {
        let attrs = vec![("size", Attr::Int(size)), ("alpha", Attr::Float(alpha)), ("beta", Attr::Float(beta)), ("bias", Attr::Float(bias))];
        let (gr, feeds) = one_op("LRN", 13, attrs, &[Arg::Input(cast(x, dt))], 1);
        check_rule("pool/lrn", &gr, feeds, tol_for(dt, 1e-5))?;
    }
}
