//! Property tests of the image family's lowering rules: Resize/Upsample over every opset
//! form (constant scales or sizes, so shapes are static) with random modes, coordinate
//! transformations, nearest modes, antialias, exclude_outside, cubic coefficient, axes,
//! aspect policies, tf_crop_and_resize rois and extrapolation; GridSample (2-D and 3-D,
//! every mode and padding, both align_corners); AffineGrid; RoiAlign (avg/max, both
//! coordinate modes, fixed and adaptive sampling ratios).
//!
//! Tolerances: nearest Resize is exact (0.0: a gather). Interpolating ops multiply the
//! same f64-derived weights as the reference but sum in a different association (and
//! RoiAlign accumulates in f32 where the reference uses f64): 1e-5 relative, 1e-2 for f16
//! outputs (one f16 ulp is ~1e-3). Integer Resize outputs are exact (rounded sums of the
//! same terms).
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

const COORDS: &[&str] = &[
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
    "tf_half_pixel_for_nn",
];
const NEAREST: &[&str] = &["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"];
const SCALES: &[f32] = &[0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0];

#[derive(Debug, Clone)]
struct ResizeCase {
    version: u32,
    mode: &'static str,
    coord: &'static str,
    nearest: &'static str,
    antialias: bool,
    exclude_outside: bool,
    cubic_a: f32,
    extrapolation: f32,
    /// Resized axes (None: all).
    axes: Option<Vec<i64>>,
    /// Scale choices per resized axis (indices into SCALES) or sizes.
    use_sizes: bool,
    picks: Vec<usize>,
    sizes: Vec<i64>,
    policy: &'static str,
    roi: Vec<f32>,
}

fn resize_case(rank: usize) -> impl Strategy<Value = ResizeCase> {
    (
        (
            prop_oneof![Just(10u32), Just(11), Just(13), Just(18), Just(19)],
            prop_oneof![Just("nearest"), Just("linear"), Just("cubic")],
            0..COORDS.len(),
            0..NEAREST.len(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(-0.75f32), Just(-0.5)],
            -2.0f32..2.0,
        ),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(0..SCALES.len(), rank),
            proptest::collection::vec(1i64..=7, rank),
            prop_oneof![Just("stretch"), Just("not_larger"), Just("not_smaller")],
            proptest::collection::vec(-0.3f32..0.6, rank),
            proptest::collection::vec(0.5f32..1.3, rank),
        ),
    )
        .prop_map(
            move |(
                (version, mode, ci, ni, antialias, exclude_outside, cubic_a, extrapolation),
                (use_axes, use_sizes, picks, sizes, policy, r0, r1),
            )| {
                let mut coord = COORDS[ci];
                if coord == "tf_half_pixel_for_nn" && version >= 13 {
                    coord = "asymmetric";
                }
                let mode = if version < 11 && mode == "cubic" { "linear" } else { mode };
                // Axes (opset 18+): the last two, possibly reversed.
                let axes = (version >= 18 && use_axes && rank >= 2).then(|| {
                    if picks[0] % 2 == 0 { vec![rank as i64 - 2, rank as i64 - 1] } else { vec![-1, rank as i64 - 2] }
                });
                let n = axes.as_ref().map_or(rank, Vec::len);
                let mut roi: Vec<f32> = r0[..n].to_vec();
                roi.extend(&r1[..n]);
                ResizeCase {
                    version,
                    mode,
                    coord,
                    nearest: NEAREST[ni],
                    antialias: antialias && version >= 18,
                    exclude_outside: exclude_outside && version >= 11,
                    cubic_a,
                    extrapolation,
                    axes,
                    use_sizes: use_sizes && version >= 11,
                    picks: picks[..n].to_vec(),
                    sizes: sizes[..n].to_vec(),
                    policy,
                    roi,
                }
            },
        )
}

fn resize_graph(c: &ResizeCase, x: Tensor, upsample: bool) -> (ir::Graph, Vec<Tensor>) {
    let scales: Vec<f32> = c.picks.iter().map(|&i| SCALES[i]).collect();
    let scales_t = Tensor::from_vec(vec![scales.len()], scales.clone()).unwrap();
    if upsample {
        // Upsample scales every axis.
        let all: Vec<f32> = (0..x.rank()).map(|i| c.picks.get(i).map_or(1.0, |&k| SCALES[k])).collect();
        let scales_t = Tensor::from_vec(vec![all.len()], all).unwrap();
        let attrs = vec![("mode", Attr::String(c.mode.replace("cubic", "linear")))];
        return one_op("Upsample", 9, attrs, &[Arg::Input(x), Arg::Const(scales_t)], 1);
    }
    let mut attrs = vec![("mode", Attr::String(c.mode.into()))];
    if c.version >= 11 {
        attrs.push(("coordinate_transformation_mode", Attr::String(c.coord.into())));
        attrs.push(("nearest_mode", Attr::String(c.nearest.into())));
        attrs.push(("cubic_coeff_a", Attr::Float(c.cubic_a)));
        attrs.push(("exclude_outside", Attr::Int(c.exclude_outside as i64)));
        attrs.push(("extrapolation_value", Attr::Float(c.extrapolation)));
    }
    if c.version >= 18 {
        attrs.push(("antialias", Attr::Int(c.antialias as i64)));
        if let Some(a) = &c.axes {
            attrs.push(("axes", ints(a)));
        }
        if c.use_sizes {
            attrs.push(("keep_aspect_ratio_policy", Attr::String(c.policy.into())));
        }
    }
    if c.version < 11 {
        return one_op("Resize", 10, attrs, &[Arg::Input(x), Arg::Const(scales_t)], 1);
    }
    let roi = if c.coord == "tf_crop_and_resize" {
        Arg::Const(Tensor::from_vec(vec![c.roi.len()], c.roi.clone()).unwrap())
    } else {
        Arg::Absent
    };
    let args = if c.use_sizes {
        vec![Arg::Input(x), roi, Arg::Absent, Arg::Const(Tensor::from_vec(vec![c.sizes.len()], c.sizes.clone()).unwrap())]
    } else {
        vec![Arg::Input(x), roi, Arg::Const(scales_t)]
    };
    one_op("Resize", c.version, attrs, &args, 1)
}

fn resize_input() -> impl Strategy<Value = (ResizeCase, Tensor)> {
    (1usize..=4)
        .prop_flat_map(|r| (resize_case(r), shape(r, 5)))
        .prop_flat_map(|(c, s)| (Just(c), f32_tensor(s, 10.0)))
}

proptest! {
    #![proptest_config(config(48))]

    /// Resize over random opset forms, modes and attributes, in f32, f16, f64, u8 and i8.
    #[test]
    fn resize(
        (c, x) in resize_input(),
        dt in prop_oneof![Just(DType::F32), Just(DType::F32), Just(DType::F16), Just(DType::F64), Just(DType::U8), Just(DType::I8)],
    ) {
        let x = if dt == DType::U8 { Tensor::from_vec(x.shape().to_vec(), x.to_f64_vec().iter().map(|v| (v + 10.0) as f32 * 12.0).collect::<Vec<f32>>()).unwrap() } else { x };
        let x = cast(x, dt);
        let (g, feeds) = resize_graph(&c, x, false);
        let tol = if c.mode == "nearest" || !dt.is_float() { 0.0 } else if dt == DType::F16 { 1e-2 } else { 1e-5 };
        check_rule("image/resize", &g, feeds, tol)?;
    }

    /// Upsample-9 (nearest and linear, constant scales).
    #[test]
    fn upsample((c, x) in resize_input()) {
        let (g, feeds) = resize_graph(&c, x, true);
        check_rule("image/resize", &g, feeds, 1e-5)?;
    }
}

/// A GridSample case: X [N, C, D..] and grid [N, H.., r] with values in about [-1.3, 1.3]
/// (some exactly on pixel centres and edges).
fn grid_case() -> impl Strategy<Value = (Tensor, Tensor)> {
    (1usize..=2, 1usize..=2, 2usize..=3)
        .prop_flat_map(|(n, c, r)| (Just(n), Just(c), shape(r, 4), shape(r, 3)))
        .prop_flat_map(|(n, c, d, h)| {
            let r = d.len();
            let mut xs = vec![n, c];
            xs.extend(&d);
            let mut gs = vec![n];
            gs.extend(&h);
            gs.push(r);
            let gn: usize = gs.iter().product();
            let exact = prop_oneof![Just(-1.0f32), Just(-0.5), Just(0.0), Just(0.5), Just(1.0), Just(0.25)];
            let val = prop_oneof![3 => -1.3f32..1.3, 1 => exact];
            (f32_tensor(xs, 5.0), proptest::collection::vec(val, gn), Just(gs))
        })
        .prop_map(|(x, g, gs)| (x, Tensor::from_vec(gs, g).unwrap()))
}

proptest! {
    #![proptest_config(config(40))]

    /// GridSample: every mode, padding and align_corners, 2-D and 3-D.
    #[test]
    fn gridsample(
        (x, grid) in grid_case(),
        mode in prop_oneof![Just("linear"), Just("nearest"), Just("cubic")],
        padding in prop_oneof![Just("zeros"), Just("border"), Just("reflection")],
        align in 0i64..=1,
        dt in prop_oneof![Just(DType::F32), Just(DType::F32), Just(DType::F64), Just(DType::F16)],
    ) {
        prop_assume!(mode != "cubic" || x.rank() == 4);
        let attrs = vec![
            ("mode", Attr::String(mode.into())),
            ("padding_mode", Attr::String(padding.into())),
            ("align_corners", Attr::Int(align)),
        ];
        let (g, feeds) = one_op("GridSample", 20, attrs, &[Arg::Input(cast(x, dt)), Arg::Input(cast(grid, dt))], 1);
        check_rule("image/gridsample", &g, feeds, if dt == DType::F16 { 1e-2 } else { 1e-5 })?;
    }

    /// AffineGrid 2-D and 3-D with a constant size.
    #[test]
    fn affinegrid(
        (theta, size) in (1usize..=2, 2usize..=3, shape(3, 4)).prop_flat_map(|(n, r, d)| {
            let mut size = vec![n as i64, 1];
            size.extend(d[..r].iter().map(|&v| v as i64));
            (f32_tensor(vec![n, r, r + 1], 2.0), Just(size))
        }),
        align in 0i64..=1,
        dt in prop_oneof![Just(DType::F32), Just(DType::F64), Just(DType::F16)],
    ) {
        let size = Tensor::from_vec(vec![size.len()], size).unwrap();
        let (g, feeds) = one_op("AffineGrid", 20, vec![("align_corners", Attr::Int(align))], &[Arg::Input(cast(theta, dt)), Arg::Const(size)], 1);
        check_rule("image/affinegrid", &g, feeds, if dt == DType::F16 { 1e-2 } else { 1e-5 })?;
    }

    /// RoiAlign: avg/max, both coordinate modes, sampling_ratio 0 (constant rois) to 3.
    #[test]
    fn roialign(
        (x, rois, bi) in (1usize..=2, 1usize..=3, 1usize..=6, 1usize..=6, 1usize..=3).prop_flat_map(|(n, c, h, w, r)| {
            let lim = (h.max(w) + 2) as f32;
            (f32_tensor(vec![n, c, h, w], 5.0),
             proptest::collection::vec(-2.0f32..lim, 4 * r).prop_map(move |v| Tensor::from_vec(vec![r, 4], v).unwrap()),
             proptest::collection::vec(0i64..n as i64, r).prop_map(move |v| Tensor::from_vec(vec![r], v).unwrap()))
        }),
        max in any::<bool>(),
        half in any::<bool>(),
        sr in 0i64..=3,
        out in (1i64..=3, 1i64..=3),
        scale in prop_oneof![Just(0.5f32), Just(1.0), Just(2.0)],
        v16 in any::<bool>(),
        dt in prop_oneof![Just(DType::F32), Just(DType::F32), Just(DType::F64)],
    ) {
        let attrs = vec![
            ("mode", Attr::String(if max { "max" } else { "avg" }.into())),
            ("coordinate_transformation_mode", Attr::String(if half { "half_pixel" } else { "output_half_pixel" }.into())),
            ("sampling_ratio", Attr::Int(sr)),
            ("output_height", Attr::Int(out.0)),
            ("output_width", Attr::Int(out.1)),
            ("spatial_scale", Attr::Float(scale)),
        ];
        let attrs: Vec<_> = if v16 { attrs } else { attrs.into_iter().filter(|(k, _)| *k != "coordinate_transformation_mode").collect() };
        let rois = cast(rois, dt);
        let rois = if sr == 0 { Arg::Const(rois) } else { Arg::Input(rois) };
        let (g, feeds) = one_op("RoiAlign", if v16 { 16 } else { 10 }, attrs, &[Arg::Input(cast(x, dt)), rois, Arg::Input(bi)], 1);
        check_rule("image/roialign", &g, feeds, 1e-5)?;
    }
}
