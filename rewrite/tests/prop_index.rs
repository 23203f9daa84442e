//! Property tests of the index family's lowering rules: random data, axes and indices
//! (negative ones included, duplicates for the scatters), compared with the reference
//! interpreter. Gathers only move elements and scatters combine each update with the
//! element it lands on in the reference's order with the reference's own arithmetic (the
//! Scatter atom is ScatterElements), so every tolerance is 0.0.
mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// Exact: gathers move elements; scatters apply the reference's combination in order.
const EXACT: f64 = 0.0;

fn reduction() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("none"), Just("add"), Just("mul"), Just("max"), Just("min")]
}

/// A shape of rank min..=max with dims 1..=max_dim.
fn shape_r(min_rank: usize, max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    (min_rank..=max_rank).prop_flat_map(move |r| shape(r, max_dim))
}

/// Indices in `[-n, n)` of `shape`, as i64 or i32.
fn indices(shape: Vec<usize>, n: usize, i32s: bool) -> impl Strategy<Value = Tensor> {
    i64_tensor(shape, -(n as i64), n as i64 - 1).prop_map(move |t| if i32s { t.cast(DType::I32) } else { t })
}

/// A shape no larger than `s` on every axis but `axis` (which gets 1..=3).
fn fitting(s: Vec<usize>, axis: usize) -> impl Strategy<Value = Vec<usize>> {
    let dims: Vec<_> = s.iter().enumerate().map(|(d, &n)| if d == axis { (1usize..=3).boxed() } else { (1..=n).boxed() }).collect();
    dims
}

proptest! {
    #![proptest_config(config(64))]

    /// Gather along any axis with index tensors of rank 0..2 (i64 or i32): exact.
    #[test]
    fn gather(
        (x, axis, idx) in shape_r(1, 3, 4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r, shape_r(0, 2, 3), any::<bool>())
        }).prop_flat_map(|(s, axis, is, i32s)| {
            let n = s[axis];
            (f32_tensor(s, 10.0), Just(axis), indices(is, n, i32s))
        }),
        neg in any::<bool>(),
    ) {
        let a = if neg { axis as i64 - x.rank() as i64 } else { axis as i64 };
        let (g, feeds) = one_op("Gather", 13, vec![("axis", Attr::Int(a))], &[Arg::Input(x), Arg::Input(idx)], 1);
        check_rule("index/gather", &g, feeds, EXACT)?;
    }

    /// GatherElements with indices smaller than the data on the other axes: exact.
    #[test]
    fn gather_elements(
        (x, axis, idx) in shape_r(1, 3, 4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r, any::<bool>())
        }).prop_flat_map(|(s, axis, i32s)| {
            let n = s[axis];
            (f32_tensor(s.clone(), 10.0), Just(axis), fitting(s, axis).prop_flat_map(move |is| indices(is, n, i32s)))
        }),
    ) {
        let (g, feeds) = one_op("GatherElements", 13, vec![("axis", Attr::Int(axis as i64))], &[Arg::Input(x), Arg::Input(idx)], 1);
        check_rule("index/gather-elements", &g, feeds, EXACT)?;
    }

    /// GatherND with 0 or 1 batch dims and index tuples of every length, constant or
    /// runtime indices: exact.
    #[test]
    fn gather_nd(
        (x, idx, b) in (shape_r(1, 4, 3), 0usize..2).prop_flat_map(|(s, b)| {
            let r = s.len();
            let b = b.min(r - 1);
            (Just(s), Just(b), 1..=r - b, shape_r(0, 2, 3))
        }).prop_flat_map(|(s, b, m, q)| {
            // indices: [batch dims.., q.., m], each tuple entry k in [-dim, dim) of axis b + k.
            let mut is: Vec<usize> = s[..b].to_vec();
            is.extend(&q);
            is.push(m);
            let n: usize = is.iter().product();
            let dims: Vec<usize> = s[b..b + m].to_vec();
            let vals = proptest::collection::vec(any::<u32>(), n).prop_map(move |v| {
                let data: Vec<i64> = v.iter().enumerate().map(|(i, &r)| {
                    let d = dims[i % dims.len()] as i64;
                    (r as i64 % (2 * d)) - d
                }).collect();
                Tensor::from_vec(is.clone(), data).unwrap()
            });
            (f32_tensor(s, 10.0), vals, Just(b))
        }),
        constant in any::<bool>(),
    ) {
        let i = if constant { Arg::Const(idx) } else { Arg::Input(idx) };
        let (g, feeds) = one_op("GatherND", 13, vec![("batch_dims", Attr::Int(b as i64))], &[Arg::Input(x), i], 1);
        check_rule("index/gather-nd", &g, feeds, EXACT)?;
    }

    /// ScatterElements with every reduction (duplicates included), and the old Scatter:
    /// exact (f32 updates are small integers so products stay exact either way; the atom
    /// applies the reference's order anyway).
    #[test]
    fn scatter_elements(
        (x, axis, idx) in shape_r(1, 3, 4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r, any::<bool>())
        }).prop_flat_map(|(s, axis, i32s)| {
            let n = s[axis];
            (i64_tensor(s.clone(), -5, 5), Just(axis), fitting(s, axis).prop_flat_map(move |is| indices(is, n, i32s)))
        }),
        red in reduction(),
        old in any::<bool>(),
        int in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let is = idx.shape().to_vec();
        let nu: usize = is.iter().product();
        let u = Tensor::from_vec(is, (0..nu).map(|i| ((seed >> (i % 60)) % 7) as i64 - 3).collect::<Vec<_>>()).unwrap();
        let (x, u) = if int { (x, u) } else { (x.cast(DType::F32), u.cast(DType::F32)) };
        let (g, feeds) = if old {
            one_op("Scatter", 9, vec![("axis", Attr::Int(axis as i64))], &[Arg::Input(x), Arg::Input(idx), Arg::Input(u)], 1)
        } else {
            one_op("ScatterElements", 18, vec![("axis", Attr::Int(axis as i64)), ("reduction", Attr::String(red.into()))],
                &[Arg::Input(x), Arg::Input(idx), Arg::Input(u)], 1)
        };
        check_rule("index/scatter-elements", &g, feeds, EXACT)?;
    }

    /// ScatterND with tuples of every length, duplicates, negative indices and every
    /// reduction: exact.
    #[test]
    fn scatter_nd(
        (x, idx, u) in (shape_r(1, 3, 3), shape_r(1, 2, 3)).prop_flat_map(|(s, q)| {
            let r = s.len();
            (Just(s), Just(q), 1..=r)
        }).prop_flat_map(|(s, q, m)| {
            let mut is = q.clone();
            is.push(m);
            let n: usize = is.iter().product();
            let dims: Vec<usize> = s[..m].to_vec();
            let vals = proptest::collection::vec(any::<u32>(), n).prop_map(move |v| {
                let data: Vec<i64> = v.iter().enumerate().map(|(i, &r)| {
                    let d = dims[i % dims.len()] as i64;
                    (r as i64 % (2 * d)) - d
                }).collect();
                Tensor::from_vec(is.clone(), data).unwrap()
            });
            let mut us = q.clone();
            us.extend(&s[m..]);
            (i64_tensor(s, -5, 5), vals, i64_tensor(us, -3, 3))
        }),
        red in reduction(),
        int in any::<bool>(),
    ) {
        let (x, u) = if int { (x, u) } else { (x.cast(DType::F32), u.cast(DType::F32)) };
        let (g, feeds) = one_op("ScatterND", 18, vec![("reduction", Attr::String(red.into()))], &[Arg::Input(x), Arg::Input(idx), Arg::Input(u)], 1);
        check_rule("index/scatter-nd", &g, feeds, EXACT)?;
    }

    /// TensorScatter (linear and circular) along any non-batch axis, write indices
    /// omitted, constant or runtime: exact.
    #[test]
    fn tensor_scatter(
        (cache, axis, seq) in shape_r(2, 4, 4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 1..r)
        }).prop_flat_map(|(s, axis)| {
            let l = s[axis];
            (f32_tensor(s, 10.0), Just(axis), 1..=l)
        }),
        circular in any::<bool>(),
        form in 0usize..3,
        seed in any::<u64>(),
    ) {
        let cs = cache.shape().to_vec();
        let mut us = cs.clone();
        us[axis] = seq;
        let nu: usize = us.iter().product();
        let u = Tensor::from_vec(us, (0..nu).map(|i| 100.0 + i as f32).collect::<Vec<_>>()).unwrap();
        let l = cs[axis] as u64;
        let w: Vec<i64> = (0..cs[0]).map(|b| {
            let h = seed.rotate_left(b as u32 * 7);
            if circular { (h % l) as i64 } else { (h % (l - seq as u64 + 1)) as i64 }
        }).collect();
        let w = Tensor::from_i64s(w);
        let axis_attr = ("axis", Attr::Int(if seed % 2 == 0 { axis as i64 } else { axis as i64 - cs.len() as i64 }));
        let mode = ("mode", Attr::String(if circular { "circular" } else { "linear" }.into()));
        let args = match form {
            0 => vec![Arg::Input(cache), Arg::Input(u)],
            1 => vec![Arg::Input(cache), Arg::Input(u), Arg::Const(w)],
            _ => vec![Arg::Input(cache), Arg::Input(u), Arg::Input(w)],
        };
        let (g, feeds) = one_op("TensorScatter", 24, vec![axis_attr, mode], &args, 1);
        check_rule("index/tensor-scatter", &g, feeds, EXACT)?;
    }
}
