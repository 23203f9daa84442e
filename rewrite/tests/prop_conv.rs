//! Property tests of the conv family's rules against the reference interpreter on random
//! geometries (1-D to 3-D, groups, strides, dilations, pads, auto_pad), dtypes and values.
//! Every Conv alternative is checked twice: with all rules (`check_rule`, extraction picks
//! by cost) and alone (`check_alone`: only that rule and the algebra rules may fire, so the
//! extracted graph is that alternative). Tolerances are `|got - want| <= tol * (1 + |want|)`
//! and stated per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ir::{Attr, DType, Graph, Tensor};
use proptest::prelude::*;


fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(shape.to_vec(), noise(shape.iter().product(), seed)).unwrap()
}

/// Integers in [lo, hi] as `dtype`.
fn int_tensor(shape: &[usize], seed: u64, lo: i64, hi: i64, dtype: DType) -> Tensor {
    let v: Vec<f64> = noise(shape.iter().product(), seed)
        .iter()
        .map(|&x| (lo as f64 + ((x as f64 + 1.0) / 2.0 * (hi - lo + 1) as f64).floor()).min(hi as f64))
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap().cast(dtype)
}

/// Decomposes `graph` with only `rule` and the algebra rules, requires `rule` to have fired
/// and nothing to stay high-level, and compares with the reference within `tol`.
fn check_alone(rule: &str, graph: &Graph, feeds: Vec<Tensor>, tol: f64) -> Result<(), TestCaseError> {
    let want = match ir::interp::run(graph, feeds.clone()) {
        Ok(w) => w,
        Err(e) => return Err(TestCaseError::reject(format!("reference rejects the case: {e}"))),
    };
    let opts = rewrite::Options { only_rules: vec![rule.to_string(), "algebra/".to_string()], ..Default::default() };
    let d = rewrite::decompose(graph, &opts).map_err(|e| TestCaseError::fail(format!("decompose failed: {e}")))?;
    if let Some((n, op, why)) = d.report.high_level.first() {
        return Err(TestCaseError::fail(format!("{n} ({op}) stayed high-level with {rule} alone: {why}")));
    }
    if !d.fired.contains(&rule) {
        return Err(TestCaseError::fail(format!("rule {rule} did not fire alone")));
    }
    let got = ir::interp::run(&d.graph, feeds).map_err(|e| TestCaseError::fail(format!("atom graph failed: {e}")))?;
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        close(g, w, tol).map_err(|e| TestCaseError::fail(format!("{rule} alone, output {k}: {e}")))?;
    }
    Ok(())
}

/// A random conv geometry.
#[derive(Clone, Debug)]
struct Geo {
    n: usize,
    group: usize,
    cg: usize,
    mg: usize,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<usize>,
    image: Vec<usize>,
    auto_pad: &'static str,
}

impl Geo {
    fn x_shape(&self) -> Vec<usize> {
        [self.n, self.group * self.cg].into_iter().chain(self.image.iter().copied()).collect()
    }
    fn w_shape(&self) -> Vec<usize> {
        [self.group * self.mg, self.cg].into_iter().chain(self.kernel.iter().copied()).collect()
    }
    fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let i64s = |v: &[usize]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
        let mut a = vec![
            ("group", Attr::Int(self.group as i64)),
            ("strides", i64s(&self.strides)),
            ("dilations", i64s(&self.dilations)),
            ("kernel_shape", i64s(&self.kernel)),
        ];
        if self.auto_pad == "NOTSET" {
            a.push(("pads", i64s(&self.pads)));
        } else {
            a.push(("auto_pad", Attr::String(self.auto_pad.into())));
        }
        a
    }
}

/// Geometries with `nsp` spatial dims from the given ranges (the image always holds the
/// dilated kernel).
#[allow(clippy::too_many_arguments)]
fn geo(nsp: impl Strategy<Value = usize>, group: std::ops::RangeInclusive<usize>, cg: std::ops::RangeInclusive<usize>,
       kernel: std::ops::RangeInclusive<usize>, stride: std::ops::RangeInclusive<usize>, dil: std::ops::RangeInclusive<usize>,
       pad: std::ops::RangeInclusive<usize>, modes: &'static [&'static str]) -> impl Strategy<Value = Geo> {
    (nsp, 1usize..=2, group, cg, 1usize..=2).prop_flat_map(move |(nsp, n, g, cg, mg)| {
        (
            proptest::collection::vec(kernel.clone(), nsp),
            proptest::collection::vec(stride.clone(), nsp),
            proptest::collection::vec(dil.clone(), nsp),
            proptest::collection::vec(pad.clone(), 2 * nsp),
            proptest::collection::vec(0usize..=3, nsp),
            proptest::sample::select(modes),
        )
            .prop_map(move |(kernel, strides, dilations, pads, extra, auto_pad)| {
                let image = (0..nsp).map(|d| (kernel[d] - 1) * dilations[d] + 1 + extra[d]).collect();
                Geo { n, group: g, cg, mg, kernel, strides, dilations, pads, image, auto_pad }
            })
    })
}

const ALL_MODES: &[&str] = &["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"];

/// A float Conv graph of `geo` (weights constant or an input, optional bias, f32 or f16).
fn conv_graph(geo: &Geo, w_const: bool, bias: bool, f16: bool, seed: u64) -> (Graph, Vec<Tensor>) {
    let d = if f16 { DType::F16 } else { DType::F32 };
    let x = tensor(&geo.x_shape(), seed).cast(d);
    let w = tensor(&geo.w_shape(), seed + 1).cast(d);
    let mut args = vec![Arg::Input(x), if w_const { Arg::Const(w) } else { Arg::Input(w) }];
    if bias {
        args.push(Arg::Const(tensor(&[geo.group * geo.mg], seed + 2).cast(d)));
    }
    one_op("Conv", 11, geo.attrs(), &args, 1)
}

/// Both checks of a Conv alternative.
fn check_conv(rule: &str, g: &Graph, feeds: Vec<Tensor>, tol: f64) -> Result<(), TestCaseError> {
    check_rule(rule, g, feeds.clone(), tol)?;
    check_alone(rule, g, feeds, tol)
}

proptest! {
    #![proptest_config(config(12))]

    /// im2col + MatMul on any geometry: 1e-5 (f32 sums in another order than the blocked
    /// reference GEMM; the bias is added last), 2e-3 for f16 outputs (one f16 rounding).
    #[test]
    fn im2col(geo in geo(1usize..=3, 1..=2, 1..=3, 1..=3, 1..=2, 1..=2, 0..=2, ALL_MODES),
              w_const in any::<bool>(), bias in any::<bool>(), f16 in any::<bool>(), seed in any::<u64>()) {
        let (g, feeds) = conv_graph(&geo, w_const, bias, f16, seed);
        check_conv("conv/im2col-matmul", &g, feeds, if f16 { 2e-3 } else { 1e-5 })?;
    }

    /// 1x1 convs as one MatMul of the weights and the input: 1e-5.
    #[test]
    fn pointwise(geo in geo(1usize..=3, 1..=2, 1..=4, 1..=1, 1..=1, 1..=2, 0..=0, &["NOTSET", "VALID"]),
                 w_const in any::<bool>(), bias in any::<bool>(), seed in any::<u64>()) {
        let (g, feeds) = conv_graph(&geo, w_const, bias, false, seed);
        check_conv("conv/pointwise-matmul", &g, feeds, 1e-5)?;
    }

    /// Depthwise (one input channel per group, any channel multiplier) as Mul + Reduce Sum:
    /// 1e-5 (taps summed by the Reduce in another order than the reference's accumulation).
    #[test]
    fn depthwise(geo in geo(1usize..=3, 1..=4, 1..=1, 1..=3, 1..=2, 1..=2, 0..=2, ALL_MODES),
                 w_const in any::<bool>(), bias in any::<bool>(), f16 in any::<bool>(), seed in any::<u64>()) {
        let (g, feeds) = conv_graph(&geo, w_const, bias, f16, seed);
        check_conv("conv/depthwise-reduce", &g, feeds, if f16 { 2e-3 } else { 1e-5 })?;
    }

    /// Winograd F(2x2, 3x3): 1e-4 (the transforms add and subtract up to 16 rounded
    /// terms; values are in [-1, 1] and channel sums stay below ~40).
    #[test]
    fn winograd(geo in geo(Just(2usize), 1..=1, 1..=4, 3..=3, 1..=1, 1..=1, 0..=2, &["NOTSET", "NOTSET", "SAME_UPPER", "VALID"]),
                w_const in any::<bool>(), bias in any::<bool>(), f16 in any::<bool>(), seed in any::<u64>()) {
        let (g, feeds) = conv_graph(&geo, w_const, bias, f16, seed);
        check_conv("conv/winograd-f2x3", &g, feeds, if f16 { 2e-3 } else { 1e-4 })?;
    }
}

/// A random ConvTranspose case: geometry plus output_padding / output_shape.
fn transpose_graph(geo: &Geo, out_pad: &[usize], out_delta: Option<&[i64]>, bias: bool, seed: u64) -> Option<(Graph, Vec<Tensor>)> {
    let nsp = geo.kernel.len();
    // Input spatial = geo.image (any size >= 1), weights [C, M/G, k..].
    let x_shape: Vec<usize> = [geo.n, geo.group * geo.cg].into_iter().chain(geo.image.iter().copied()).collect();
    let w_shape: Vec<usize> = [geo.group * geo.cg, geo.mg].into_iter().chain(geo.kernel.iter().copied()).collect();
    let i64s = |v: &[usize]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
    let mut attrs = vec![
        ("group", Attr::Int(geo.group as i64)),
        ("strides", i64s(&geo.strides)),
        ("dilations", i64s(&geo.dilations)),
    ];
    // Output padding must stay below the stride or the dilation.
    let op: Vec<usize> = (0..nsp).map(|d| out_pad[d] % geo.strides[d].max(geo.dilations[d])).collect();
    attrs.push(("output_padding", i64s(&op)));
    let natural: Vec<i64> = (0..nsp)
        .map(|d| (geo.strides[d] * (geo.image[d] - 1) + op[d] + (geo.kernel[d] - 1) * geo.dilations[d] + 1) as i64)
        .collect();
    if let Some(delta) = out_delta {
        let shape: Vec<i64> = (0..nsp).map(|d| (natural[d] + delta[d]).max(1)).collect();
        attrs.push(("output_shape", Attr::Ints(shape)));
    } else if geo.auto_pad == "NOTSET" {
        let pads: Vec<usize> = (0..2 * nsp).map(|i| geo.pads[i].min(((natural[i % nsp] - 1) / 2) as usize)).collect();
        attrs.push(("pads", i64s(&pads)));
    } else {
        attrs.push(("auto_pad", Attr::String(geo.auto_pad.into())));
    }
    let mut args = vec![Arg::Input(tensor(&x_shape, seed)), Arg::Const(tensor(&w_shape, seed + 1))];
    if bias {
        args.push(Arg::Const(tensor(&[geo.group * geo.mg], seed + 2)));
    }
    Some(one_op("ConvTranspose", 11, attrs, &args, 1))
}

proptest! {
    #![proptest_config(config(12))]

    /// ConvTranspose as zero insertion + conv and as MatMul + col2im, with groups,
    /// dilations, pads, auto_pad, output_padding and output_shape: 1e-5 (sums reassociate).
    #[test]
    fn conv_transpose(geo in geo(1usize..=3, 1..=2, 1..=2, 1..=3, 1..=3, 1..=2, 0..=2, &["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
                      out_pad in proptest::collection::vec(0usize..=2, 3),
                      out_delta in proptest::option::of(proptest::collection::vec(-2i64..=2, 3)),
                      bias in any::<bool>(), seed in any::<u64>()) {
        if let Some((g, feeds)) = transpose_graph(&geo, &out_pad, out_delta.as_deref(), bias, seed) {
            check_conv("conv/transpose-zero-insert", &g, feeds.clone(), 1e-5)?;
            check_conv("conv/transpose-col2im", &g, feeds, 1e-5)?;
        }
    }

    /// ConvInteger with per-tensor and per-channel zero points (u8 and i8): exact.
    #[test]
    fn conv_integer(geo in geo(1usize..=2, 1..=2, 1..=2, 1..=3, 1..=2, 1..=2, 0..=1, ALL_MODES),
                    signed in any::<bool>(), zx in any::<bool>(), zw in 0usize..3, seed in any::<u64>()) {
        let (dt, lo, hi) = if signed { (DType::I8, -128, 127) } else { (DType::U8, 0, 255) };
        let m = geo.group * geo.mg;
        let args = [
            Arg::Input(int_tensor(&geo.x_shape(), seed, lo, hi, dt)),
            Arg::Const(int_tensor(&geo.w_shape(), seed + 1, lo, hi, dt)),
            if zx { Arg::Input(int_tensor(&[], seed + 2, lo, hi, dt)) } else { Arg::Absent },
            match zw {
                0 => Arg::Absent,
                1 => Arg::Const(int_tensor(&[1], seed + 3, lo, hi, dt)),
                _ => Arg::Const(int_tensor(&[m], seed + 3, lo, hi, dt)),
            },
        ];
        let (g, feeds) = one_op("ConvInteger", 10, geo.attrs(), &args, 1);
        check_rule("conv/integer", &g, feeds, 0.0)?;
    }

    /// QLinearConv with per-channel weight scales and zero points and an i32 bias: exact
    /// (the same f32 multiplier and f64 rounding as the reference).
    #[test]
    fn qlinear_conv(geo in geo(1usize..=2, 1..=2, 1..=2, 1..=3, 1..=2, 1..=2, 0..=1, ALL_MODES),
                    signed in any::<bool>(), per_channel in any::<bool>(), bias in any::<bool>(), seed in any::<u64>()) {
        let (dt, lo, hi) = if signed { (DType::I8, -128, 127) } else { (DType::U8, 0, 255) };
        let m = geo.group * geo.mg;
        let ws = if per_channel { vec![m] } else { vec![] };
        let scale = |s: &[usize], sd: u64| -> Tensor {
            Tensor::from_vec(s.to_vec(), noise(s.iter().product(), sd).iter().map(|x| 0.002 + 0.004 * (x + 1.0)).collect::<Vec<f32>>()).unwrap()
        };
        let mut args = vec![
            Arg::Input(int_tensor(&geo.x_shape(), seed, lo, hi, dt)),
            Arg::Const(scale(&[], seed + 1)),
            Arg::Const(int_tensor(&[], seed + 2, lo, hi, dt)),
            Arg::Const(int_tensor(&geo.w_shape(), seed + 3, lo, hi, dt)),
            Arg::Const(scale(&ws, seed + 4)),
            Arg::Const(int_tensor(&ws, seed + 5, lo, hi, dt)),
            Arg::Const(Tensor::from_vec(vec![], vec![0.5f32]).unwrap()),
            Arg::Const(int_tensor(&[], seed + 6, lo, hi, dt)),
        ];
        if bias {
            args.push(Arg::Const(int_tensor(&[m], seed + 7, -1000, 1000, DType::I32)));
        }
        let (g, feeds) = one_op("QLinearConv", 10, geo.attrs(), &args, 1);
        check_rule("conv/qlinear", &g, feeds, 0.0)?;
    }

    /// DeformConv with random offsets (samples inside, between and outside the image),
    /// optional mask and bias, offset groups: 1e-5 (the multilinear weights and corner
    /// sums are the reference's; the channel sums reassociate).
    #[test]
    fn deform_conv(geo in geo(1usize..=3, 1..=2, 1..=2, 1..=2, 1..=2, 1..=2, 0..=1, &["NOTSET"]),
                   og_all in any::<bool>(), mask in any::<bool>(), bias in any::<bool>(), seed in any::<u64>()) {
        let nsp = geo.kernel.len();
        let c = geo.group * geo.cg;
        let og = if og_all { c } else { 1 };
        let taps: usize = geo.kernel.iter().product();
        let grid: Vec<usize> = (0..nsp)
            .map(|d| {
                let ext = (geo.kernel[d] - 1) * geo.dilations[d] + 1;
                (geo.image[d] + geo.pads[d] + geo.pads[d + nsp] - ext) / geo.strides[d] + 1
            })
            .collect();
        let off_shape: Vec<usize> = [geo.n, og * taps * nsp].into_iter().chain(grid.iter().copied()).collect();
        let offsets = Tensor::from_vec(off_shape.clone(), noise(off_shape.iter().product(), seed + 3).iter().map(|x| x * 2.5).collect::<Vec<f32>>()).unwrap();
        let mut args = vec![
            Arg::Input(tensor(&geo.x_shape(), seed)),
            Arg::Const(tensor(&geo.w_shape(), seed + 1)),
            Arg::Input(offsets),
            if bias { Arg::Const(tensor(&[geo.group * geo.mg], seed + 2)) } else { Arg::Absent },
        ];
        if mask {
            let ms: Vec<usize> = [geo.n, og * taps].into_iter().chain(grid.iter().copied()).collect();
            args.push(Arg::Input(tensor(&ms, seed + 4)));
        }
        let mut attrs = geo.attrs();
        attrs.push(("offset_group", Attr::Int(og as i64)));
        let (g, feeds) = one_op("DeformConv", 19, attrs, &args, 1);
        check_rule("conv/deform", &g, feeds, 1e-5)?;
    }

    /// Col2Im with blocks, strides, dilations and pads, constant image/block shapes: 1e-6
    /// (the taps add in the reference's order; only zeros are added in addition).
    #[test]
    fn col2im(geo in geo(1usize..=3, 1..=1, 1..=3, 1..=3, 1..=3, 1..=2, 0..=2, &["NOTSET"]),
              int in any::<bool>(), seed in any::<u64>()) {
        let nsp = geo.kernel.len();
        let grid: Vec<usize> = (0..nsp)
            .map(|d| {
                let ext = (geo.kernel[d] - 1) * geo.dilations[d] + 1;
                (geo.image[d] + geo.pads[d] + geo.pads[d + nsp] - ext) / geo.strides[d] + 1
            })
            .collect();
        let taps: usize = geo.kernel.iter().product();
        let x_shape = vec![geo.n, geo.cg * taps, grid.iter().product()];
        let x = if int { int_tensor(&x_shape, seed, -50, 50, DType::I32) } else { tensor(&x_shape, seed) };
        let to_t = |v: &[usize]| Tensor::from_vec(vec![v.len()], v.iter().map(|&x| x as i64).collect::<Vec<_>>()).unwrap();
        let i64s = |v: &[usize]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
        let attrs = vec![("strides", i64s(&geo.strides)), ("dilations", i64s(&geo.dilations)), ("pads", i64s(&geo.pads))];
        let args = [Arg::Input(x), Arg::Const(to_t(&geo.image)), Arg::Const(to_t(&geo.kernel))];
        let (g, feeds) = one_op("Col2Im", 18, attrs, &args, 1);
        check_rule("conv/col2im", &g, feeds, 1e-6)?;
    }

    /// Conv (constant weights, optional constant bias) followed by a per-channel scale
    /// (Einsum `n c [spatial] , c -> n c [spatial]`, an elementwise Mul of a broadcast
    /// constant): the scale folds into the weights. 1e-5 (each weight is scaled once
    /// before the sums instead of each output after them).
    #[test]
    fn fold_scale(geo in geo(1usize..=3, 1..=2, 1..=3, 1..=3, 1..=2, 1..=2, 0..=2, ALL_MODES),
                  bias in any::<bool>(), seed in any::<u64>()) {
        let g = fold_graph(&geo, bias, seed, "Einsum");
        check_rule("conv/fold-scale-into-weights", &g.0, g.1, 1e-5)?;
    }
}

/// Conv then a per-channel scale by `how` ("Einsum" or "Mul" with a [1, M, 1..] constant).
fn fold_graph(geo: &Geo, bias: bool, seed: u64, how: &str) -> (Graph, Vec<Tensor>) {
    let nsp = geo.kernel.len();
    let m = geo.group * geo.mg;
    let x_shape = geo.x_shape();
    let dims: Vec<String> = x_shape.iter().map(|n| n.to_string()).collect();
    let letters = &"defg"[..nsp];
    let attrs: Vec<String> = geo
        .attrs()
        .into_iter()
        .map(|(k, v)| match v {
            Attr::Int(i) => format!("{k}={i}"),
            Attr::Ints(v) => format!("{k}=[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")),
            Attr::String(s) => format!("{k}=\"{s}\""),
            _ => String::new(),
        })
        .collect();
    let scale_shape: Vec<usize> = if how == "Einsum" { vec![m] } else { [1, m].into_iter().chain(std::iter::repeat_n(1, nsp)).collect() };
    let scale_dims: Vec<String> = scale_shape.iter().map(|n| n.to_string()).collect();
    let second = if how == "Einsum" {
        format!("%y = Einsum@12 \"scale\" {{equation=\"nc{letters},c->nc{letters}\"}} (%c, %s)")
    } else {
        "%y = Mul@14 \"scale\" (%c, %s)".to_string()
    };
    let text = format!(
        "graph {{\n  input %x: f32[{}]\n  input %w: f32[{}]\n  input %b: f32[{m}]\n  input %s: f32[{}]\n  %c = Conv@11 \"conv\" {{{}}} (%x, %w{})\n  {second}\n  output %y\n}}",
        dims.join(","),
        geo.w_shape().iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
        scale_dims.join(","),
        attrs.join(", "),
        if bias { ", %b" } else { "" },
    );
    let mut g = ir::text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // Weights, bias and scale become constants.
    let consts = [("w", tensor(&geo.w_shape(), seed + 1)), ("b", tensor(&[m], seed + 2)), ("s", tensor(&scale_shape, seed + 3))];
    for (name, t) in consts {
        let pos = g.inputs.iter().position(|i| g.name(i.value) == name).unwrap();
        let v = g.inputs.remove(pos).value;
        g.consts.insert(v, std::sync::Arc::new(t));
    }
    let shapes = [("x".to_string(), x_shape.clone())].into_iter().collect();
    let g = ir::infer::specialize(&g, &shapes).unwrap();
    (g, vec![tensor(&x_shape, seed)])
}

/// Conv followed by Mul by a [1, M, 1, 1] constant (what BatchNormalization lowers to)
/// folds too. The Mul lowering belongs to the binary family: until it is merged this
/// test only checks that the graph builds and that the reference runs it.
#[test]
fn fold_scale_after_mul() {
    let lowers_mul = rewrite::rules::all()
        .iter()
        .any(|r| matches!(r.action, rewrite::rules::Action::Lower { ops, .. } if ops.contains(&"Mul")));
    let geo = Geo {
        n: 2,
        group: 1,
        cg: 3,
        mg: 4,
        kernel: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        image: vec![5, 6],
        auto_pad: "NOTSET",
    };
    for bias in [false, true] {
        let (g, feeds) = fold_graph(&geo, bias, 7, "Mul");
        assert!(ir::interp::run(&g, feeds.clone()).is_ok());
        if lowers_mul {
            check_rule("conv/fold-scale-into-weights", &g, feeds, 1e-5).unwrap();
        }
    }
}
