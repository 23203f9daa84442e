//! Property tests: random shapes for elementwise (with broadcast and padded loads) and
//! matmul kernels, JIT output compared bit for bit with a direct evaluation in Rust in the
//! same order of operations and with the reference `Kernel::eval` (within a tolerance where
//! the kernel accumulates with FMA).

use codegen::JitKernel;
use ir::atom::{BinaryFn, ReduceFn};
use ir::dtype::DType;
use ir::kernel::{Affine, Body, Buffer, Expr, KGuard, Kernel};
use ir::schedule::{Schedule, ScheduleStep};
use proptest::prelude::*;

fn buf(name: &str, numel: usize) -> Buffer {
    Buffer {
        name: name.into(),
        dtype: DType::F32,
        numel,
    }
}

fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![0i64; shape.len()];
    let mut acc = 1i64;
    for (d, &n) in s.iter_mut().zip(shape).rev() {
        *d = acc;
        acc *= n as i64;
    }
    s
}

fn f32b(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

fn bits(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Compiles `k` with the heuristic schedule for Cranelift on this host.
fn compile(k: &Kernel) -> Result<JitKernel, codegen::Error> {
    let t = targets::Target::host().with_vector_bits(128);
    JitKernel::compile(k, &search::default_schedule(k, &t))
}

/// The bits of `Kernel::eval` on f32 inputs.
fn reference(k: &Kernel, inputs: &[&[f32]]) -> Result<Vec<u32>, TestCaseError> {
    let fail = |e: ir::Error| TestCaseError::fail(e.to_string());
    let ts: Vec<ir::tensor::Tensor> = inputs
        .iter()
        .map(|v| ir::tensor::Tensor::from_vec(vec![v.len()], v.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    let refs: Vec<&ir::tensor::Tensor> = ts.iter().collect();
    let y = k.eval(&refs).map_err(fail)?;
    Ok(y.slice::<f32>()
        .map_err(fail)?
        .iter()
        .map(|v| v.to_bits())
        .collect())
}

fn apply(f: BinaryFn, a: f32, b: f32) -> f32 {
    match f {
        BinaryFn::Add => a + b,
        BinaryFn::Sub => a - b,
        BinaryFn::Mul => a * b,
        BinaryFn::Div => a / b,
        BinaryFn::Max => {
            if a.is_nan() || (!b.is_nan() && a >= b) {
                a
            } else {
                b
            }
        }
        _ => {
            if a.is_nan() || (!b.is_nan() && a <= b) {
                a
            } else {
                b
            }
        }
    }
}

/// All multi-indices of `shape` in row-major order.
fn points(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &n in shape {
        out = out
            .into_iter()
            .flat_map(|p| (0..n).map(move |i| [p.clone(), vec![i]].concat()))
            .collect();
    }
    out
}

fn vals(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![9 => -8.0f32..8.0, 1 => Just(0.0f32), 1 => Just(-0.0f32)],
        n,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// `out[o] = a[o] (op) pad1(b)[o]` where `b` is broadcast over a random subset of axes and
    /// padded by one on both sides of its last kept axis.
    #[test]
    fn elementwise_broadcast_and_pad(
        shape in prop::collection::vec(1usize..5, 1..4),
        bcast in prop::collection::vec(any::<bool>(), 3),
        op in prop::sample::select(vec![BinaryFn::Add, BinaryFn::Sub, BinaryFn::Mul, BinaryFn::Div, BinaryFn::Max, BinaryFn::Min]),
        seed in vals(64 * 2),
    ) {
        let rank = shape.len();
        let numel: usize = shape.iter().product();
        let a: Vec<f32> = seed[..numel].to_vec();
        // b's shape: broadcast axes have extent 1; the last axis is padded (b is 2 shorter).
        let last = rank - 1;
        let b_shape: Vec<usize> = (0..rank)
            .map(|d| if d == last { shape[d].saturating_sub(2).max(1) } else if bcast[d] { 1 } else { shape[d] })
            .collect();
        let b_numel: usize = b_shape.iter().product();
        let b: Vec<f32> = seed[64..64 + b_numel].to_vec();
        let bs = row_major(&b_shape);
        let coefs: Vec<i64> = (0..rank).map(|d| if b_shape[d] == 1 && d != last { 0 } else { bs[d] }).collect();
        let guard = KGuard { expr: Affine { offset: -1, coefs: (0..rank).map(|d| i64::from(d == last)).collect() }, bound: b_shape[last] as i64 };
        let load_b = Expr::Load { buf: 1, index: Affine { offset: -1, coefs: coefs.clone() }, guards: vec![guard], pad: 0.5 };
        let load_a = Expr::Load { buf: 0, index: Affine { offset: 0, coefs: row_major(&shape) }, guards: vec![], pad: 0.0 };
        let k = Kernel {
            name: "ew".into(),
            inputs: vec![buf("a", numel), buf("b", b_numel)],
            output: buf("y", numel),
            out_shape: shape.clone(),
            red_shape: vec![],
            store: Affine { offset: 0, coefs: row_major(&shape) },
            body: Body::Compute { reduce: None, body: Expr::Binary(op, Box::new(load_a), Box::new(load_b)), epilogue: Expr::Acc },
        };
        let want: Vec<f32> = points(&shape).iter().enumerate().map(|(n, p)| {
            let j = p[last] as i64 - 1;
            let bv = if j >= 0 && j < b_shape[last] as i64 {
                let idx: i64 = -1 + p.iter().zip(&coefs).map(|(&i, &c)| i as i64 * c).sum::<i64>();
                b[idx as usize]
            } else {
                0.5
            };
            apply(op, a[n], bv)
        }).collect();
        let jit = compile(&k).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut out = vec![0u8; numel * 4];
        jit.run(&[&f32b(&a), &f32b(&b)], &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(bits(&out), bits(&f32b(&want)));
        prop_assert_eq!(bits(&out), reference(&k, &[&a, &b])?);
    }

    /// A pad-like copy `y[c, r, j] = x[c, r - pr, s*j + off]` where both indices are in
    /// the input, else the pad value: wide rows, so the nest runs the columns where the
    /// column guard holds (for strides 1, 2 and -1) without it and the rows where the row
    /// guard fails as whole pad vectors. Several schedules, compared bit for bit with the
    /// reference.
    #[test]
    fn guarded_columns_split(
        chans in 1usize..3,
        rows in 1usize..6,
        cols in 1usize..30,
        in_rows in 1usize..5,
        in_cols in 1usize..24,
        pr in 0i64..3,
        stride in prop::sample::select(vec![1i64, 2, -1]),
        off in -4i64..8,
        unroll in 1usize..4,
        parallel in 0usize..3,
        seed in vals(2 * 4 * 24),
    ) {
        let numel = chans * in_rows * in_cols;
        let x: Vec<f32> = seed[..numel].to_vec();
        let (ir_, ic) = (in_rows as i64, in_cols as i64);
        let row = KGuard { expr: Affine { offset: -pr, coefs: vec![0, 1, 0] }, bound: ir_ };
        let col = KGuard { expr: Affine { offset: off, coefs: vec![0, 0, stride] }, bound: ic };
        let load = Expr::Load {
            buf: 0,
            index: Affine { offset: -pr * ic + off, coefs: vec![ir_ * ic, ic, stride] },
            guards: vec![row, col],
            pad: -1.5,
        };
        let shape = vec![chans, rows, cols];
        let k = Kernel {
            name: "pad".into(),
            inputs: vec![buf("x", numel)],
            output: buf("y", chans * rows * cols),
            out_shape: shape.clone(),
            red_shape: vec![],
            store: Affine { offset: 0, coefs: row_major(&shape) },
            body: Body::Compute { reduce: None, body: load, epilogue: Expr::Acc },
        };
        let want = reference(&k, &[&x])?;
        let mut steps = vec![ScheduleStep::Parallel { axes: parallel }, ScheduleStep::Vectorize { axis: 2, lanes: 4 }];
        if unroll > 1 {
            steps.push(ScheduleStep::Unroll { axis: 2, factor: unroll });
        }
        for s in [Schedule { steps }, search::default_schedule(&k, &targets::Target::host().with_vector_bits(128))] {
            let jit = JitKernel::compile(&k, &s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            let mut out = vec![0u8; chans * rows * cols * 4];
            jit.run(&[&f32b(&x)], &mut out).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            prop_assert_eq!(bits(&out), want.clone(), "schedule {}", s);
        }
    }

    /// `max(x, c)` and `min(x, c)` against a constant (a ReLU's 0, also -0, infinities and
    /// a NaN constant), on vectors and tails, with NaN, signed zeros and infinities among
    /// the inputs: bit for bit the reference's NaN-propagating, first-operand-on-ties
    /// semantics.
    #[test]
    fn max_min_against_a_constant(
        n in 1usize..23,
        c in prop::sample::select(vec![0.0f32, -0.0, 1.5, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]),
        max in any::<bool>(),
        seed in prop::collection::vec(prop_oneof![4 => -4.0f32..4.0, 1 => Just(0.0f32), 1 => Just(-0.0f32), 1 => Just(f32::NAN), 1 => Just(f32::INFINITY), 1 => Just(f32::NEG_INFINITY), 1 => Just(1.5f32)], 23),
    ) {
        let x: Vec<f32> = seed[..n].to_vec();
        let f = if max { BinaryFn::Max } else { BinaryFn::Min };
        let load = Expr::Load { buf: 0, index: Affine { offset: 0, coefs: vec![1] }, guards: vec![], pad: 0.0 };
        let k = Kernel {
            name: "maxmin".into(),
            inputs: vec![buf("x", n)],
            output: buf("y", n),
            out_shape: vec![n],
            red_shape: vec![],
            store: Affine { offset: 0, coefs: vec![1] },
            body: Body::Compute {
                reduce: None,
                body: Expr::Binary(f, Box::new(load), Box::new(Expr::Const { value: f64::from(c), dtype: DType::F32 })),
                epilogue: Expr::Acc,
            },
        };
        let want: Vec<f32> = x.iter().map(|&v| apply(f, v, c)).collect();
        let jit = compile(&k).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(jit.is_vectorized() || n < 4);
        let mut out = vec![0u8; n * 4];
        jit.run(&[&f32b(&x)], &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(bits(&out), bits(&f32b(&want)));
        prop_assert_eq!(bits(&out), reference(&k, &[&x])?);
    }

    /// Max and Min reductions over the rows of a matrix, vectorized along its columns,
    /// with NaN, signed zeros and infinities among the values: bit for bit the reference
    /// (a NaN element wins, the first of equal values stays).
    #[test]
    fn max_min_reductions_with_nan_and_zeros(
        rows in 1usize..7,
        cols in 1usize..11,
        max in any::<bool>(),
        seed in prop::collection::vec(prop_oneof![4 => -4.0f32..4.0, 1 => Just(0.0f32), 1 => Just(-0.0f32), 1 => Just(f32::NAN), 1 => Just(-f32::NAN), 1 => Just(f32::INFINITY), 1 => Just(f32::NEG_INFINITY)], 70),
    ) {
        let x: Vec<f32> = seed[..rows * cols].to_vec();
        let f = if max { ReduceFn::Max } else { ReduceFn::Min };
        let k = Kernel {
            name: "reduce".into(),
            inputs: vec![buf("x", rows * cols)],
            output: buf("y", cols),
            out_shape: vec![cols],
            red_shape: vec![rows],
            store: Affine { offset: 0, coefs: vec![1] },
            body: Body::Compute {
                reduce: Some(f),
                body: Expr::Load { buf: 0, index: Affine { offset: 0, coefs: vec![1, cols as i64] }, guards: vec![], pad: 0.0 },
                epilogue: Expr::Acc,
            },
        };
        let jit = compile(&k).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(jit.is_vectorized() || cols < 4);
        let mut out = vec![0u8; cols * 4];
        jit.run(&[&f32b(&x)], &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(bits(&out), reference(&k, &[&x])?);
    }

    /// `c = a @ b` (+ bias through the epilogue), summed in k order.
    #[test]
    fn matmul_with_bias(m in 1usize..7, kk in 1usize..9, n in 1usize..7, seed in vals(48 + 48 + 6)) {
        // n >= 4 takes the f32x4 path (a broadcast along n, b contiguous).
        let a = &seed[..m * kk];
        let b = &seed[48..48 + kk * n];
        let bias = &seed[96..96 + n];
        let body = Expr::Binary(
            BinaryFn::Mul,
            Box::new(Expr::Load { buf: 0, index: Affine { offset: 0, coefs: vec![kk as i64, 0, 1] }, guards: vec![], pad: 0.0 }),
            Box::new(Expr::Load { buf: 1, index: Affine { offset: 0, coefs: vec![0, 1, n as i64] }, guards: vec![], pad: 0.0 }),
        );
        let epilogue = Expr::Binary(
            BinaryFn::Add,
            Box::new(Expr::Acc),
            Box::new(Expr::Load { buf: 2, index: Affine { offset: 0, coefs: vec![0, 1] }, guards: vec![], pad: 0.0 }),
        );
        let k = Kernel {
            name: "mm".into(),
            inputs: vec![buf("a", m * kk), buf("b", kk * n), buf("bias", n)],
            output: buf("c", m * n),
            out_shape: vec![m, n],
            red_shape: vec![kk],
            store: Affine { offset: 0, coefs: vec![n as i64, 1] },
            body: Body::Compute { reduce: Some(ReduceFn::Sum), body, epilogue },
        };
        let mut want = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f32;
                for p in 0..kk {
                    s += a[i * kk + p] * b[p * n + j];
                }
                want[i * n + j] = s + bias[j];
            }
        }
        let jit = compile(&k).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(jit.is_vectorized(), n >= 4);
        let mut out = vec![0u8; m * n * 4];
        jit.run(&[&f32b(a), &f32b(b), &f32b(bias)], &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if jit.uses_fma() {
            // One rounding per step instead of two: close, not equal.
            let got: Vec<f32> = bits(&out).into_iter().map(f32::from_bits).collect();
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{} vs {}", g, w);
            }
        } else {
            prop_assert_eq!(bits(&out), bits(&f32b(&want)));
            prop_assert_eq!(bits(&out), reference(&k, &[a, b, bias])?);
        }
    }
}
