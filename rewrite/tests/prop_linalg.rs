//! Property tests of the linalg family's lowering rules: MatMul, Gemm, Einsum, Det,
//! MatMulInteger and QLinearMatMul against the reference interpreter on random shapes,
//! attributes and values. Each test states its tolerance (`|got - want| <= tol * (1 +
//! |want|)`, see `common::close`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ir::{Attr, DType, Tensor};
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

/// Broadcastable batch dims for two matmul operands.
fn batch_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (0usize..=2, 0usize..=2, proptest::collection::vec((1usize..=3, 0u8..3), 2)).prop_map(|(ra, rb, dims)| {
        let full: Vec<(usize, u8)> = dims;
        let pick = |r: usize, which: u8| -> Vec<usize> {
            full[2 - r..].iter().map(|&(n, k)| if k == which { 1 } else { n }).collect()
        };
        (pick(ra, 1), pick(rb, 2))
    })
}

proptest! {
    #![proptest_config(config(24))]

    /// MatMul with 1-D operands and broadcast batch dims: exact (the MatMul atom is the
    /// reference kernel, with the same order of the k-sums).
    #[test]
    fn matmul((ba, bb) in batch_pair(), m in 1usize..=4, k in 0usize..=4, n in 1usize..=4,
              a1 in any::<bool>(), b1 in any::<bool>(), f16 in any::<bool>(), seed in any::<u64>()) {
        let mut sa = if a1 { vec![k] } else { ba.clone() };
        if !a1 { sa.extend([m, k]); }
        let mut sb = if b1 { vec![k] } else { bb.clone() };
        if !b1 { sb.extend([k, n]); }
        let (mut a, mut b) = (tensor(&sa, seed), tensor(&sb, seed + 1));
        if f16 {
            a = a.cast(DType::F16);
            b = b.cast(DType::F16);
        }
        let (g, feeds) = one_op("MatMul", 13, vec![], &[Arg::Input(a), Arg::Input(b)], 1);
        check_rule("linalg/matmul", &g, feeds, 0.0)?;
    }

    /// Gemm with transposes, alpha, beta and every C broadcast: 1e-6 (the same products and
    /// sums as the reference, rounding identically but for f16 outputs).
    #[test]
    fn gemm(m in 1usize..=4, k in 1usize..=4, n in 1usize..=4, ta in any::<bool>(), tb in any::<bool>(),
            alpha in prop_oneof![Just(1.0f32), -2.0f32..2.0], beta in prop_oneof![Just(1.0f32), -2.0f32..2.0],
            c_kind in 0usize..6, dtype in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::F64), Just(DType::I32)],
            seed in any::<u64>()) {
        let sa = if ta { vec![k, m] } else { vec![m, k] };
        let sb = if tb { vec![n, k] } else { vec![k, n] };
        let mk = |s: &[usize], sd: u64| {
            if dtype == DType::I32 { int_tensor(s, sd, -5, 5, dtype) } else { tensor(s, sd).cast(dtype) }
        };
        let c_shape: Option<Vec<usize>> = match c_kind {
            0 => None,
            1 => Some(vec![]),
            2 => Some(vec![n]),
            3 => Some(vec![1, n]),
            4 => Some(vec![m, 1]),
            _ => Some(vec![m, n]),
        };
        let mut args = vec![Arg::Input(mk(&sa, seed)), Arg::Const(mk(&sb, seed + 1))];
        if let Some(cs) = &c_shape {
            args.push(Arg::Input(mk(cs, seed + 2)));
        }
        let attrs = vec![
            ("transA", Attr::Int(ta as i64)),
            ("transB", Attr::Int(tb as i64)),
            ("alpha", Attr::Float(alpha)),
            ("beta", Attr::Float(beta)),
        ];
        let (g, feeds) = one_op("Gemm", 13, attrs, &args, 1);
        check_rule("linalg/gemm", &g, feeds, 1e-6)?;
    }

    /// Einsum over a set of equations (contractions, batch, diagonals, sums, outer
    /// products, three operands, ellipsis broadcasting): 1e-5 (sums reassociate where
    /// the reference does not take its GEMM path).
    #[test]
    fn einsum(case in 0usize..14, dims in proptest::collection::vec(1usize..=4, 6), f16 in any::<bool>(), seed in any::<u64>()) {
        let [i, j, k, l, b, e] = [dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]];
        let (eq, shapes): (&str, Vec<Vec<usize>>) = match case {
            0 => ("ij,jk->ik", vec![vec![i, j], vec![j, k]]),
            1 => ("bij,bjk->bik", vec![vec![b, i, j], vec![b, j, k]]),
            2 => ("ii->i", vec![vec![i, i]]),
            3 => ("ii", vec![vec![i, i]]),
            4 => ("ij->", vec![vec![i, j]]),
            5 => ("i,i", vec![vec![i], vec![i]]),
            6 => ("ij->ji", vec![vec![i, j]]),
            7 => ("...ij,...jk->...ik", vec![vec![b, 1, i, j], vec![e, j, k]]),
            8 => ("bii->bi", vec![vec![b, i, i]]),
            9 => ("ij,jk,kl->il", vec![vec![i, j], vec![j, k], vec![k, l]]),
            10 => ("i,j->ij", vec![vec![i], vec![j]]),
            11 => ("abc,cd,de->abe", vec![vec![i, j, k], vec![k, l], vec![l, e]]),
            12 => ("bij,bkj->bki", vec![vec![b, i, j], vec![b, k, j]]),
            _ => ("iij,jk->ki", vec![vec![i, i, j], vec![j, k]]),
        };
        let args: Vec<Arg> = shapes
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let t = tensor(s, seed + n as u64);
                Arg::Input(if f16 { t.cast(DType::F16) } else { t })
            })
            .collect();
        let (g, feeds) = one_op("Einsum", 12, vec![("equation", Attr::String(eq.into()))], &args, 1);
        check_rule("linalg/einsum", &g, feeds, if f16 { 2e-3 } else { 1e-5 })?;
    }

    /// Det of batches of small matrices, some singular (a zero or repeated column): 1e-5
    /// (the same LU arithmetic as the reference, pivot for pivot).
    #[test]
    fn det(n in 1usize..=5, batch in proptest::collection::vec(1usize..=3, 0..=2), singular in 0usize..3,
           f16 in any::<bool>(), seed in any::<u64>()) {
        let mut shape = batch.clone();
        shape.extend([n, n]);
        let mut t = tensor(&shape, seed);
        if singular > 0 && n > 1 {
            let mut v = t.to_f64_vec();
            for chunk in v.chunks_mut(n * n) {
                for r in 0..n {
                    chunk[r * n + 1] = if singular == 1 { 0.0 } else { chunk[r * n] };
                }
            }
            t = Tensor::from_vec(shape.clone(), v.iter().map(|&x| x as f32).collect::<Vec<_>>()).unwrap();
        }
        if f16 {
            t = t.cast(DType::F16);
        }
        let (g, feeds) = one_op("Det", 11, vec![], &[Arg::Input(t)], 1);
        check_rule("linalg/det", &g, feeds, if f16 { 2e-3 } else { 1e-5 })?;
    }

    /// MatMulInteger with zero points per tensor, per row of A and per column of B, u8 and
    /// i8: exact (i32 arithmetic).
    #[test]
    fn matmul_integer(m in 1usize..=4, k in 1usize..=4, n in 1usize..=4, batch in 0usize..=2, signed in any::<bool>(),
                      za in 0usize..3, zb in 0usize..3, seed in any::<u64>()) {
        let (dt, lo, hi) = if signed { (DType::I8, -128, 127) } else { (DType::U8, 0, 255) };
        let mut sa = if batch > 0 { vec![batch] } else { vec![] };
        sa.extend([m, k]);
        let a = int_tensor(&sa, seed, lo, hi, dt);
        let b = int_tensor(&[k, n], seed + 1, lo, hi, dt);
        let zpa = match za {
            0 => Arg::Absent,
            1 => Arg::Input(int_tensor(&[], seed + 2, lo, hi, dt)),
            _ => Arg::Input(int_tensor(&[m], seed + 2, lo, hi, dt)),
        };
        let zpb = match zb {
            0 => Arg::Absent,
            1 => Arg::Const(int_tensor(&[1], seed + 3, lo, hi, dt)),
            _ => Arg::Const(int_tensor(&[n], seed + 3, lo, hi, dt)),
        };
        let (g, feeds) = one_op("MatMulInteger", 10, vec![], &[Arg::Input(a), Arg::Const(b), zpa, zpb], 1);
        check_rule("linalg/matmul-integer", &g, feeds, 0.0)?;
    }

    /// QLinearMatMul with f32 or f16 scales per tensor/row/column: exact (the same f32
    /// multiplier and f64 rounding as the reference).
    #[test]
    fn qlinear_matmul(m in 1usize..=4, k in 1usize..=4, n in 1usize..=4, batch in 0usize..=2, signed in any::<bool>(),
                      per_row in any::<bool>(), per_col in any::<bool>(), f16 in any::<bool>(), seed in any::<u64>()) {
        let (dt, lo, hi) = if signed { (DType::I8, -128, 127) } else { (DType::U8, 0, 255) };
        let sd = if f16 { DType::F16 } else { DType::F32 };
        let mut sa = if batch > 0 { vec![batch] } else { vec![] };
        sa.extend([m, k]);
        let scale = |s: &[usize], sd_: u64| -> Tensor {
            let v: Vec<f32> = noise(s.iter().product(), sd_).iter().map(|x| 0.01 + 0.02 * (x + 1.0)).collect();
            Tensor::from_vec(s.to_vec(), v).unwrap().cast(sd)
        };
        let a_s = if per_row { vec![m] } else { vec![] };
        let b_s = if per_col { vec![n] } else { vec![] };
        let args = [
            Arg::Input(int_tensor(&sa, seed, lo, hi, dt)),
            Arg::Const(scale(&a_s, seed + 1)),
            Arg::Const(int_tensor(&a_s, seed + 2, lo, hi, dt)),
            Arg::Input(int_tensor(&[k, n], seed + 3, lo, hi, dt)),
            Arg::Const(scale(&b_s, seed + 4)),
            Arg::Const(int_tensor(&b_s, seed + 5, lo, hi, dt)),
            Arg::Const(scale(&[], seed + 6)),
            Arg::Const(int_tensor(&[], seed + 7, lo, hi, dt)),
        ];
        let (g, feeds) = one_op("QLinearMatMul", 21, vec![], &args, 1);
        check_rule("linalg/qlinear-matmul", &g, feeds, 0.0)?;
    }
}
