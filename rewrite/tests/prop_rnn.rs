//! Property tests of the rnn family's unrolling rules: RNN, GRU and LSTM over random
//! sizes, directions (forward, reverse, bidirectional), layouts, optional bias, initial
//! states, peepholes and `sequence_lens` (zero lengths included), every activation of the
//! spec's set with random alpha/beta, `clip`, `linear_before_reset` and `input_forget`; all
//! outputs compared.
//!
//! Tolerance 1e-4: the unrolled steps reassociate the gate sums (`X·Wᵀ + Wb` then
//! `H·Rᵀ + Rb` instead of the reference's left-to-right sum) and sigmoid is `1/(1+e^-x)`
//! rather than the reference's two-branch form; errors of a few f32 ulps per step compound
//! over at most 4 steps of values of size O(1).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// Deterministic pseudo-random values in [-lim, lim] (an LCG on `seed`).
fn data(seed: &mut u64, shape: &[usize], lim: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (2.0 * unit(seed) - 1.0) * lim).collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn unit(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32) / ((1u64 << 24) as f32)
}

fn pick(seed: &mut u64, n: usize) -> usize {
    ((unit(seed) * n as f32) as usize).min(n - 1)
}

const ACTS: &[&str] = &[
    "Relu",
    "Tanh",
    "Sigmoid",
    "Affine",
    "LeakyRelu",
    "ThresholdedRelu",
    "ScaledTanh",
    "HardSigmoid",
    "Elu",
    "Softsign",
    "Softplus",
];

#[derive(Debug, Clone)]
struct Case {
    /// 0: RNN, 1: GRU, 2: LSTM.
    op: usize,
    /// 0 forward, 1 reverse, 2 bidirectional.
    dir: usize,
    layout: i64,
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    bias: bool,
    init: bool,
    lens: bool,
    peep: bool,
    custom_acts: bool,
    clip: Option<f32>,
    flag: bool,
    f16: bool,
    seed: u64,
}

fn case(op: usize) -> impl Strategy<Value = Case> {
    (
        (0usize..3, 0i64..=1, 1usize..=4, 1usize..=3, 1usize..=3, 1usize..=3),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (proptest::option::of(0.5f32..3.0), any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(move |(a, b, c)| Case {
            op,
            dir: a.0,
            layout: a.1,
            seq: a.2,
            batch: a.3,
            input: a.4,
            hidden: a.5,
            bias: b.0,
            init: b.1,
            lens: b.2,
            peep: b.3,
            custom_acts: b.4,
            clip: c.0,
            flag: c.1,
            f16: c.2,
            seed: c.3,
        })
}

fn build(c: &Case) -> (ir::Graph, Vec<Tensor>) {
    let mut seed = c.seed;
    let (name, gates, per_dir) = match c.op {
        0 => ("RNN", 1, 1),
        1 => ("GRU", 3, 2),
        _ => ("LSTM", 4, 3),
    };
    let nd = if c.dir == 2 { 2 } else { 1 };
    let dtype = if c.f16 { DType::F16 } else { DType::F32 };
    let h = c.hidden;
    let xs = if c.layout == 0 { vec![c.seq, c.batch, c.input] } else { vec![c.batch, c.seq, c.input] };
    let state = if c.layout == 0 { vec![nd, c.batch, h] } else { vec![c.batch, nd, h] };
    let mut args = vec![
        Arg::Input(data(&mut seed, &xs, 1.5).cast(dtype)),
        Arg::Input(data(&mut seed, &[nd, gates * h, c.input], 1.0).cast(dtype)),
        Arg::Input(data(&mut seed, &[nd, gates * h, h], 1.0).cast(dtype)),
    ];
    args.push(if c.bias { Arg::Input(data(&mut seed, &[nd, 2 * gates * h], 1.0).cast(dtype)) } else { Arg::Absent });
    args.push(if c.lens {
        let l: Vec<i32> = (0..c.batch).map(|_| pick(&mut seed, c.seq + 1) as i32).collect();
        Arg::Input(Tensor::from_vec(vec![c.batch], l).unwrap())
    } else {
        Arg::Absent
    });
    args.push(if c.init { Arg::Input(data(&mut seed, &state, 1.0).cast(dtype)) } else { Arg::Absent });
    if c.op == 2 {
        args.push(if c.init { Arg::Input(data(&mut seed, &state, 1.0).cast(dtype)) } else { Arg::Absent });
        args.push(if c.peep { Arg::Input(data(&mut seed, &[nd, 3 * h], 1.0).cast(dtype)) } else { Arg::Absent });
    }
    let dir = ["forward", "reverse", "bidirectional"][c.dir];
    let mut attrs = vec![
        ("direction", Attr::String(dir.into())),
        ("layout", Attr::Int(c.layout)),
        ("hidden_size", Attr::Int(h as i64)),
    ];
    if c.custom_acts {
        let n = per_dir * nd;
        let names: Vec<String> = (0..n).map(|_| ACTS[pick(&mut seed, ACTS.len())].to_string()).collect();
        let alphas: Vec<f32> = (0..n).map(|_| 0.1 + unit(&mut seed)).collect();
        let betas: Vec<f32> = (0..n).map(|_| unit(&mut seed)).collect();
        attrs.push(("activations", Attr::Strings(names)));
        attrs.push(("activation_alpha", Attr::Floats(alphas)));
        attrs.push(("activation_beta", Attr::Floats(betas)));
    }
    if let Some(cl) = c.clip {
        attrs.push(("clip", Attr::Float(cl)));
    }
    match c.op {
        1 => attrs.push(("linear_before_reset", Attr::Int(i64::from(c.flag)))),
        2 => attrs.push(("input_forget", Attr::Int(i64::from(c.flag)))),
        _ => {}
    }
    let outs = if c.op == 2 { 3 } else { 2 };
    one_op(name, 22, attrs, &args, outs)
}

/// f32 tolerance from the header; f16 results are rounded to f16 (ulp ~1e-3 near 1), so
/// an f32 difference of one ulp can flip the last f16 bit.
fn tol(c: &Case) -> f64 {
    if c.f16 { 4e-3 } else { 1e-4 }
}

proptest! {
    #![proptest_config(config(20))]

    #[test]
    fn rnn(c in case(0)) {
        let (g, feeds) = build(&c);
        check_rule("rnn/unroll-rnn", &g, feeds, tol(&c))?;
    }

    #[test]
    fn gru(c in case(1)) {
        let (g, feeds) = build(&c);
        check_rule("rnn/unroll-gru", &g, feeds, tol(&c))?;
    }

    #[test]
    fn lstm(c in case(2)) {
        let (g, feeds) = build(&c);
        check_rule("rnn/unroll-lstm", &g, feeds, tol(&c))?;
    }
}
