//! Property tests of the loss family's lowering rules: scores `[N, C, d...]` (rank 2 to
//! 4), targets with and without an `ignore_index` (also negative and out of the class
//! range), optional class weights, the three reductions, the log_prob output, f32/f64/f16.
//!
//! Tolerances: 1e-5 (the mean and sum reductions and the log-softmax reassociate float
//! sums); 2e-3 for f16 (one f16 ulp after rounding the f32 result).
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// Scores, targets in `[0, C)` with some set to `ignore` (when given), and weights.
#[allow(clippy::type_complexity)]
fn case() -> impl Strategy<Value = (Tensor, Tensor, Tensor, Option<i64>)> {
    (
        1usize..=3,
        1usize..=4,
        proptest::collection::vec(1usize..=3, 0..=2),
        proptest::option::of(prop_oneof![Just(-1i64), Just(0), Just(2), Just(10)]),
    )
        .prop_flat_map(|(n, c, rest, ignore)| {
            let mut s = vec![n, c];
            s.extend(&rest);
            let mut ts = vec![n];
            ts.extend(&rest);
            let tn: usize = ts.iter().product();
            (
                f32_tensor(s, 4.0),
                proptest::collection::vec((0..c as i64, any::<bool>()), tn),
                f32_tensor(vec![c], 2.0),
                Just(ts),
                Just(ignore),
            )
        })
        .prop_map(|(x, t, w, ts, ignore)| {
            let tv: Vec<i64> = t
                .iter()
                .map(|&(v, drop)| match ignore {
                    Some(ii) if drop => ii,
                    _ => v,
                })
                .collect();
            let w = Tensor::from_vec(
                vec![w.numel()],
                w.to_f64_vec().iter().map(|v| v.abs() as f32 + 0.1).collect::<Vec<_>>(),
            )
            .unwrap();
            (x, Tensor::from_vec(ts, tv).unwrap(), w, ignore)
        })
}

fn attrs(reduction: &str, ignore: Option<i64>) -> Vec<(&'static str, Attr)> {
    let mut a = vec![("reduction", Attr::String(reduction.to_string()))];
    if let Some(ii) = ignore {
        a.push(("ignore_index", Attr::Int(ii)));
    }
    a
}

const REDUCTIONS: &[&str] = &["none", "sum", "mean"];

proptest! {
    #![proptest_config(config(128))]

    /// NegativeLogLikelihoodLoss over log-probability-like scores.
    #[test]
    fn nll(
        (x, t, w, ignore) in case(),
        red in 0usize..3,
        weighted in any::<bool>(),
        i32_target in any::<bool>(),
        dtype in prop_oneof![Just(DType::F32), Just(DType::F64), Just(DType::F16)],
    ) {
        let t = if i32_target { t.cast(DType::I32) } else { t };
        let wa = if weighted { Arg::Const(w.cast(dtype)) } else { Arg::Absent };
        let (g, feeds) = one_op("NegativeLogLikelihoodLoss", 22, attrs(REDUCTIONS[red], ignore), &[Arg::Input(x.cast(dtype)), Arg::Input(t), wa], 1);
        check_rule("loss/nll", &g, feeds, if dtype == DType::F16 { 2e-3 } else { 1e-5 })?;
    }

    /// SoftmaxCrossEntropyLoss with and without the log_prob output.
    #[test]
    fn sce(
        (x, t, w, ignore) in case(),
        red in 0usize..3,
        weighted in any::<bool>(),
        log_prob in any::<bool>(),
        dtype in prop_oneof![Just(DType::F32), Just(DType::F64), Just(DType::F16)],
    ) {
        let wa = if weighted { Arg::Input(w.cast(dtype)) } else { Arg::Absent };
        let outputs = if log_prob { 2 } else { 1 };
        let (g, feeds) = one_op("SoftmaxCrossEntropyLoss", 13, attrs(REDUCTIONS[red], ignore), &[Arg::Input(x.cast(dtype)), Arg::Input(t), wa], outputs);
        check_rule("loss/sce", &g, feeds, if dtype == DType::F16 { 2e-3 } else { 1e-5 })?;
    }
}
