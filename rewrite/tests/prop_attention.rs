//! Property tests of the attention family's lowering rules: `Attention` over random
//! 3-D/4-D layouts, grouped heads, past key/value, bool/float masks of every broadcast
//! rank (short key axes too), causality, `nonpad_kv_seqlen` (opset 24), scale, softcap and
//! every `qk_matmul_output_mode`, all four outputs compared; `RotaryEmbedding` with and
//! without position ids, interleaved or not, partial rotary dims, 3-D and 4-D inputs.
//!
//! Tolerances: f32 attention 1e-5 (the dot products and softmax sums are reassociated by
//! the MatMul/Reduce atoms; values are O(1)); f16 attention 4e-3 (an f32 difference of a
//! few ulps can flip the rounding of the f16 result, whose ulp is ~1e-3 near 1); rotary
//! 1e-6 (the same products and one add/sub per element, in the same order).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// Deterministic pseudo-random values in [-lim, lim] (an LCG on `seed`).
fn data(seed: &mut u64, shape: &[usize], lim: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((*seed >> 40) as f32) / ((1u64 << 24) as f32);
            (2.0 * u - 1.0) * lim
        })
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 33
}

#[derive(Debug, Clone)]
struct Case {
    packed: bool,
    batch: usize,
    kv_heads: usize,
    group: usize,
    q_seq: usize,
    kv_seq: usize,
    head: usize,
    v_head: usize,
    past: Option<usize>,
    /// 0: none, 1: bool, 2: float.
    mask: u8,
    mask_rank: usize,
    causal: bool,
    scale: Option<f32>,
    softcap: Option<f32>,
    mode: i64,
    nonpad: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (any::<bool>(), 1usize..=2, 1usize..=2, 1usize..=2, 1usize..=3, 1usize..=3, 1usize..=4, 1usize..=4),
        (proptest::option::of(0usize..=2), 0u8..=2, 1usize..=4, any::<bool>()),
        (proptest::option::of(0.1f32..1.0), proptest::option::of(0.5f32..5.0), 0i64..=3, any::<bool>(), any::<u64>()),
    )
        .prop_map(|(a, b, c)| Case {
            packed: a.0,
            batch: a.1,
            kv_heads: a.2,
            group: a.3,
            q_seq: a.4,
            kv_seq: a.5,
            head: a.6,
            v_head: a.7,
            past: b.0,
            mask: b.1,
            mask_rank: b.2,
            causal: b.3,
            scale: c.0,
            softcap: c.1,
            mode: c.2,
            nonpad: c.3,
            seed: c.4,
        })
}

/// The Attention graph of a case, its inputs in `dtype`.
fn attention_graph(c: &Case, dtype: DType) -> (ir::Graph, Vec<Tensor>) {
    let mut seed = c.seed;
    let hq = c.kv_heads * c.group;
    let (q, k, v) = if c.packed {
        (
            data(&mut seed, &[c.batch, c.q_seq, hq * c.head], 2.0),
            data(&mut seed, &[c.batch, c.kv_seq, c.kv_heads * c.head], 2.0),
            data(&mut seed, &[c.batch, c.kv_seq, c.kv_heads * c.v_head], 2.0),
        )
    } else {
        (
            data(&mut seed, &[c.batch, hq, c.q_seq, c.head], 2.0),
            data(&mut seed, &[c.batch, c.kv_heads, c.kv_seq, c.head], 2.0),
            data(&mut seed, &[c.batch, c.kv_heads, c.kv_seq, c.v_head], 2.0),
        )
    };
    let total = c.kv_seq + c.past.unwrap_or(0);
    let mut args = vec![Arg::Input(q.cast(dtype)), Arg::Input(k.cast(dtype)), Arg::Input(v.cast(dtype))];
    // Mask: leading dims either the scores' or 1, key axis possibly shorter.
    let target = [c.batch, hq, c.q_seq, total];
    let mut ms: Vec<usize> = target[4 - c.mask_rank..].to_vec();
    let r = ms.len();
    for d in ms.iter_mut().take(r - 1) {
        if next(&mut seed).is_multiple_of(2) {
            *d = 1;
        }
    }
    ms[r - 1] = 1 + (next(&mut seed) as usize) % total;
    match c.mask {
        1 => {
            let n: usize = ms.iter().product();
            let bits: Vec<bool> = (0..n).map(|_| !next(&mut seed).is_multiple_of(4)).collect();
            args.push(Arg::Input(Tensor::from_vec(ms.clone(), bits).unwrap()));
        }
        2 => args.push(Arg::Input(data(&mut seed, &ms, 1.0).cast(dtype))),
        _ => args.push(Arg::Absent),
    }
    match c.past {
        Some(p) => {
            args.push(Arg::Input(data(&mut seed, &[c.batch, c.kv_heads, p, c.head], 2.0).cast(dtype)));
            args.push(Arg::Input(data(&mut seed, &[c.batch, c.kv_heads, p, c.v_head], 2.0).cast(dtype)));
        }
        None => {
            args.push(Arg::Absent);
            args.push(Arg::Absent);
        }
    }
    let version = if c.nonpad {
        let lens: Vec<i64> = (0..c.batch).map(|_| (next(&mut seed) as usize % (total + 1)) as i64).collect();
        args.push(Arg::Input(Tensor::from_vec(vec![c.batch], lens).unwrap()));
        24
    } else {
        23
    };
    let mut attrs = vec![("qk_matmul_output_mode", Attr::Int(c.mode)), ("is_causal", Attr::Int(i64::from(c.causal)))];
    if c.packed {
        attrs.push(("q_num_heads", Attr::Int(hq as i64)));
        attrs.push(("kv_num_heads", Attr::Int(c.kv_heads as i64)));
    }
    if let Some(s) = c.scale {
        attrs.push(("scale", Attr::Float(s)));
    }
    if let Some(s) = c.softcap {
        attrs.push(("softcap", Attr::Float(s)));
    }
    one_op("Attention", version, attrs, &args, 4)
}

#[derive(Debug, Clone)]
struct Rope {
    packed: bool,
    batch: usize,
    heads: usize,
    seq: usize,
    half_head: usize,
    rot_half: Option<usize>,
    interleaved: bool,
    positions: Option<usize>,
    seed: u64,
}

fn rope() -> impl Strategy<Value = Rope> {
    (
        any::<bool>(),
        1usize..=2,
        1usize..=2,
        1usize..=3,
        1usize..=4,
        proptest::option::of(1usize..=4),
        any::<bool>(),
        proptest::option::of(1usize..=5),
        any::<u64>(),
    )
        .prop_map(|(packed, batch, heads, seq, half_head, rot_half, interleaved, positions, seed)| Rope {
            packed,
            batch,
            heads,
            seq,
            half_head,
            rot_half: rot_half.map(|r| r.min(half_head)),
            interleaved,
            positions,
            seed,
        })
}

proptest! {
    #![proptest_config(config(48))]

    /// Attention in f32 (tolerance 1e-5, see the header).
    #[test]
    fn attention_f32(c in case()) {
        let (g, feeds) = attention_graph(&c, DType::F32);
        check_rule("attention/sdpa", &g, feeds, 1e-5)?;
    }

    /// RotaryEmbedding (tolerance 1e-6, see the header).
    #[test]
    fn rotary(r in rope()) {
        let mut seed = r.seed;
        let hd = 2 * r.half_head;
        let x = if r.packed {
            data(&mut seed, &[r.batch, r.seq, r.heads * hd], 2.0)
        } else {
            data(&mut seed, &[r.batch, r.heads, r.seq, hd], 2.0)
        };
        let half = r.rot_half.unwrap_or(r.half_head);
        let mut args = vec![Arg::Input(x)];
        match r.positions {
            Some(rows) => {
                args.push(Arg::Input(data(&mut seed, &[rows, half], 1.0)));
                args.push(Arg::Input(data(&mut seed, &[rows, half], 1.0)));
                let ids: Vec<i64> = (0..r.batch * r.seq).map(|_| (next(&mut seed) as usize % rows) as i64).collect();
                args.push(Arg::Input(Tensor::from_vec(vec![r.batch, r.seq], ids).unwrap()));
            }
            None => {
                args.push(Arg::Input(data(&mut seed, &[r.batch, r.seq, half], 1.0)));
                args.push(Arg::Input(data(&mut seed, &[r.batch, r.seq, half], 1.0)));
            }
        }
        let mut attrs = vec![("interleaved", Attr::Int(i64::from(r.interleaved)))];
        if r.packed {
            attrs.push(("num_heads", Attr::Int(r.heads as i64)));
        }
        if let Some(h) = r.rot_half {
            attrs.push(("rotary_embedding_dim", Attr::Int(2 * h as i64)));
        }
        let (g, feeds) = one_op("RotaryEmbedding", 23, attrs, &args, 1);
        check_rule("attention/rotary", &g, feeds, 1e-6)?;
    }
}

proptest! {
    #![proptest_config(config(12))]

    /// Attention in f16, computed in f32 and cast back (tolerance 4e-3, see the header).
    #[test]
    fn attention_f16(c in case()) {
        let (g, feeds) = attention_graph(&c, DType::F16);
        check_rule("attention/sdpa", &g, feeds, 4e-3)?;
    }
}
