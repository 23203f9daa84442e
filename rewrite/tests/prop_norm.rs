//! Property tests of the norm family's lowering rules: random `[N, C, ...]` shapes, axes,
//! epsilons, parameters as constants or inputs, all outputs, opset versions (BatchNorm 7
//! with `spatial = 0`, 9, 15 with `training_mode`; GroupNorm 18 and 21) and f16 inputs.
//!
//! Tolerances: 1e-5 for f32 (the statistics are summed in another order than the
//! reference's eight-lane sums); 2e-3 for f16 (one f16 ulp after rounding the f32 result).
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// A `[N, C, ...]` input of rank 2 to 4 and its channel count.
fn nc_input(lim: f32) -> impl Strategy<Value = Tensor> {
    (2usize..=4).prop_flat_map(|r| shape(r, 4)).prop_flat_map(move |s| f32_tensor(s, lim))
}

/// A parameter as a constant or a graph input.
fn param(t: Tensor, constant: bool) -> Arg {
    if constant { Arg::Const(t) } else { Arg::Input(t) }
}

/// `n` values in `[lo, hi]` from a seed (deterministic, for parameter tensors).
fn values(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn tensor(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

proptest! {
    #![proptest_config(config(128))]

    /// BatchNormalization in inference (opset 7 spatial/non-spatial, 9, 15) and training
    /// (opset 15: Y, running mean and var; opset 9: also the saved mean and var).
    #[test]
    fn batch_norm(
        x in nc_input(5.0),
        seed in any::<u64>(),
        version in prop_oneof![Just(7u32), Just(9), Just(15)],
        spatial in any::<bool>(),
        training in any::<bool>(),
        constant in any::<bool>(),
        eps in prop_oneof![Just(1e-5f32), Just(0.01)],
        f16 in any::<bool>(),
    ) {
        let s = x.shape().to_vec();
        let spatial = spatial || version != 7;
        let pshape: Vec<usize> = if spatial { vec![s[1]] } else { s[1..].to_vec() };
        let pn: usize = pshape.iter().product();
        let scale = tensor(&pshape, values(seed, pn, -2.0, 2.0));
        let bias = tensor(&pshape, values(seed ^ 1, pn, -2.0, 2.0));
        let mean = tensor(&pshape, values(seed ^ 2, pn, -1.0, 1.0));
        let var = tensor(&pshape, values(seed ^ 3, pn, 0.1, 2.0));
        let training = training && version != 7;
        let mut attrs = vec![("epsilon", Attr::Float(eps)), ("momentum", Attr::Float(0.8))];
        if version == 7 {
            attrs.push(("spatial", Attr::Int(spatial as i64)));
        }
        if version >= 14 {
            attrs.push(("training_mode", Attr::Int(training as i64)));
        }
        let outputs = match (training, version >= 14) { (false, _) => 1, (true, true) => 3, (true, false) => 5 };
        let dt = if f16 { DType::F16 } else { DType::F32 };
        let args = [
            Arg::Input(x.cast(dt)),
            param(scale.cast(dt), constant),
            param(bias.cast(dt), constant),
            param(mean.cast(dt), constant),
            param(var.cast(dt), constant),
        ];
        let (g, feeds) = one_op("BatchNormalization", version, attrs, &args, outputs);
        check_rule("norm/batchnorm", &g, feeds, if f16 { 2e-3 } else { 1e-5 })?;
    }

    /// LayerNormalization: every axis, scale/bias of the row shape or the full shape,
    /// optional bias, the Mean and InvStdDev outputs, stash types.
    #[test]
    fn layer_norm(
        x in (1usize..=4).prop_flat_map(|r| shape(r, 4)).prop_flat_map(|s| f32_tensor(s, 5.0)),
        axis in 0usize..4,
        negative in any::<bool>(),
        full_params in any::<bool>(),
        with_bias in any::<bool>(),
        outputs in 1usize..=3,
        seed in any::<u64>(),
        eps in prop_oneof![Just(1e-5f32), Just(0.1)],
        stash_f64 in any::<bool>(),
        f16 in any::<bool>(),
    ) {
        let s = x.shape().to_vec();
        let r = s.len();
        let axis = axis % r;
        let ps: Vec<usize> = if full_params { s.clone() } else { s[axis..].to_vec() };
        let pn = ps.iter().product();
        let dt = if f16 { DType::F16 } else { DType::F32 };
        let scale = tensor(&ps, values(seed, pn, -2.0, 2.0)).cast(dt);
        let bias = tensor(&ps, values(seed ^ 5, pn, -2.0, 2.0)).cast(dt);
        let axis = axis as i64 - if negative { r as i64 } else { 0 };
        let attrs = vec![
            ("axis", Attr::Int(axis)),
            ("epsilon", Attr::Float(eps)),
            ("stash_type", Attr::Int(if stash_f64 { 11 } else { 1 })),
        ];
        let b = if with_bias { Arg::Const(bias) } else { Arg::Absent };
        let (g, feeds) = one_op("LayerNormalization", 17, attrs, &[Arg::Input(x.cast(dt)), Arg::Const(scale), b], outputs);
        check_rule("norm/layernorm", &g, feeds, if f16 { 2e-3 } else { 1e-5 })?;
    }

    /// RMSNormalization: every axis, scale of the row or full shape.
    #[test]
    fn rms_norm(
        x in (1usize..=4).prop_flat_map(|r| shape(r, 4)).prop_flat_map(|s| f32_tensor(s, 5.0)),
        axis in 0usize..4,
        full_params in any::<bool>(),
        seed in any::<u64>(),
        eps in prop_oneof![Just(1e-5f32), Just(0.1)],
        f16 in any::<bool>(),
    ) {
        let s = x.shape().to_vec();
        let axis = axis % s.len();
        let ps: Vec<usize> = if full_params { s.clone() } else { s[axis..].to_vec() };
        let dt = if f16 { DType::F16 } else { DType::F32 };
        let scale = tensor(&ps, values(seed, ps.iter().product(), -2.0, 2.0)).cast(dt);
        let attrs = vec![("axis", Attr::Int(axis as i64)), ("epsilon", Attr::Float(eps))];
        let (g, feeds) = one_op("RMSNormalization", 23, attrs, &[Arg::Input(x.cast(dt)), Arg::Input(scale)], 1);
        check_rule("norm/rmsnorm", &g, feeds, if f16 { 2e-3 } else { 1e-5 })?;
    }

    /// GroupNormalization (opset 18: per-group parameters, 21: per-channel) and
    /// InstanceNormalization.
    #[test]
    fn group_and_instance_norm(
        batch in 1usize..=3,
        groups in 1usize..=3,
        per in 1usize..=3,
        rest in proptest::collection::vec(1usize..=3, 0..=2),
        seed in any::<u64>(),
        kind in 0usize..3,
        eps in prop_oneof![Just(1e-5f32), Just(0.01)],
    ) {
        let c = groups * per;
        let mut s = vec![batch, c];
        s.extend(&rest);
        let x = tensor(&s, values(seed ^ 9, s.iter().product(), -5.0, 5.0));
        let (op, version, pn) = match kind {
            0 => ("GroupNormalization", 18, groups),
            1 => ("GroupNormalization", 21, c),
            _ => ("InstanceNormalization", 22, c),
        };
        let scale = tensor(&[pn], values(seed, pn, -2.0, 2.0));
        let bias = tensor(&[pn], values(seed ^ 3, pn, -2.0, 2.0));
        let mut attrs = vec![("epsilon", Attr::Float(eps))];
        if kind < 2 {
            attrs.push(("num_groups", Attr::Int(groups as i64)));
        }
        let (g, feeds) = one_op(op, version, attrs, &[Arg::Input(x), Arg::Const(scale), Arg::Input(bias)], 1);
        check_rule("norm/groupnorm", &g, feeds, 1e-5)?;
    }

    /// MeanVarianceNormalization over random axes (default [0, 2, 3] for rank 4).
    #[test]
    fn mvn(
        x in shape(4, 4).prop_flat_map(|s| f32_tensor(s, 5.0)),
        mask in proptest::collection::vec(any::<bool>(), 4),
        default_axes in any::<bool>(),
    ) {
        let axes: Vec<i64> = (0..4).filter(|&a| mask[a as usize]).collect();
        let attrs = if default_axes || axes.is_empty() { vec![] } else { vec![("axes", ints(&axes))] };
        let (g, feeds) = one_op("MeanVarianceNormalization", 13, attrs, &[Arg::Input(x)], 1);
        check_rule("norm/mvn", &g, feeds, 1e-5)?;
    }
}
