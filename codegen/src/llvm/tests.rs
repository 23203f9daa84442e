//! Tests of the LLVM backend against the kernel evaluator (`Kernel::eval`): contractions
//! under the host's default schedule (16-lane vectors, register blocking, tails), guarded
//! vector loads, integer, bool, f64 and cast semantics, reductions, run-time errors; and the
//! polynomial transcendentals' error against an f64 reference (same bounds as the
//! Cranelift backend's) and their bits against the Cranelift backend's.

use super::{HostTarget, LlvmKernel, is_polynomial, lower_module};
use crate::{Error, JitKernel};
use ir::atom::{BinaryFn, ReduceFn, UnaryFn};
use ir::dtype::DType;
use ir::kernel::{Affine, Body, Buffer, Expr, KGuard, Kernel};
use ir::schedule::{Schedule, ScheduleStep};
use ir::tensor::Tensor;

pub(super) type R = Result<(), Box<dyn std::error::Error>>;

pub(super) fn buf(name: &str, dtype: DType, numel: usize) -> Buffer {
    Buffer { name: name.into(), dtype, numel }
}

pub(super) fn aff(offset: i64, coefs: &[i64]) -> Affine {
    Affine { offset, coefs: coefs.to_vec() }
}

pub(super) fn load(buf: usize, index: Affine) -> Expr {
    Expr::Load { buf, index, guards: vec![], pad: 0.0 }
}

pub(super) fn bin(f: BinaryFn, a: Expr, b: Expr) -> Expr {
    Expr::Binary(f, Box::new(a), Box::new(b))
}

fn un(f: UnaryFn, a: Expr) -> Expr {
    Expr::Unary(f, Box::new(a))
}

fn host_lanes() -> usize {
    HostTarget::detect().map_or(4, HostTarget::f32_lanes)
}

pub(super) fn bytes(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::new();
    for v in t.to_f64_vec() {
        match t.dtype() {
            DType::F32 => out.extend((v as f32).to_ne_bytes()),
            DType::F64 => out.extend(v.to_ne_bytes()),
            DType::I64 => out.extend((v as i64).to_ne_bytes()),
            DType::I32 => out.extend((v as i32).to_ne_bytes()),
            _ => out.push(u8::from(v != 0.0)),
        }
    }
    out
}

pub(super) fn from_bytes(d: DType, b: &[u8]) -> Vec<f64> {
    match d {
        DType::F32 => b.chunks_exact(4).map(|c| f64::from(f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        DType::F64 => b.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
        DType::I64 => b.chunks_exact(8).map(|c| i64::from_ne_bytes(c.try_into().unwrap_or([0; 8])) as f64).collect(),
        DType::I32 => b.chunks_exact(4).map(|c| f64::from(i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        _ => b.iter().map(|&x| f64::from(x)).collect(),
    }
}

/// Runs `k` compiled by LLVM with `s` and returns the output as f64s.
fn run(k: &Kernel, s: &Schedule, inputs: &[Tensor]) -> Result<Vec<f64>, Error> {
    let j = LlvmKernel::compile(k, s)?;
    let data: Vec<Vec<u8>> = inputs.iter().map(bytes).collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut out = vec![0u8; k.output.numel * k.output.dtype.size()];
    j.run(&refs, &mut out)?;
    Ok(from_bytes(k.output.dtype, &out))
}

/// Compares the LLVM result with the evaluator's: exactly (NaN matching NaN), or within a
/// relative `tol`.
fn check(k: &Kernel, s: &Schedule, inputs: &[Tensor], tol: f64) -> R {
    let got = run(k, s, inputs)?;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let want = k.eval(&refs)?.to_f64_vec();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= tol * (1.0 + w.abs());
        assert!(same, "'{}' with {s}: [{i}] got {g}, want {w}", k.name);
    }
    Ok(())
}

pub(super) fn f32s(n: usize, seed: u64) -> Tensor {
    let v: Vec<f32> = (0..n as u64).map(|i| ((i * 37 + seed * 11) % 23) as f32 * 0.25 - 2.5).collect();
    Tensor::from_vec(vec![n], v).unwrap_or_else(|_| Tensor::scalar(0.0f32))
}

pub(super) fn matmul(m: usize, kk: usize, n: usize) -> Kernel {
    Kernel {
        name: "mm".into(),
        inputs: vec![buf("a", DType::F32, m * kk), buf("b", DType::F32, kk * n)],
        output: buf("c", DType::F32, m * n),
        out_shape: vec![m, n],
        red_shape: vec![kk],
        store: aff(0, &[n as i64, 1]),
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: bin(BinaryFn::Mul, load(0, aff(0, &[kk as i64, 0, 1])), load(1, aff(0, &[0, 1, n as i64]))),
            epilogue: un(UnaryFn::Tanh, Expr::Acc),
        },
    }
}

fn schedule(steps: Vec<ScheduleStep>) -> Schedule {
    Schedule { steps }
}

#[test]
fn matmul_under_register_blocked_wide_vector_schedules_matches_the_evaluator() -> R {
    let lanes = host_lanes();
    for &(m, kk, n) in &[(1, 1, 1), (5, 7, 3), (37, 29, 41), (16, 64, 96), (9, 3, 2 * lanes + 5)] {
        let k = matmul(m, kk, n);
        let inputs = [f32s(m * kk, 1), f32s(kk * n, 2)];
        for s in [
            Schedule::naive(),
            schedule(vec![ScheduleStep::Vectorize { axis: 1, lanes }]),
            schedule(vec![
                ScheduleStep::Parallel { axes: 1 },
                ScheduleStep::Vectorize { axis: 1, lanes },
                ScheduleStep::RegisterBlock { axis: 0, factor: 4 },
                ScheduleStep::Unroll { axis: 1, factor: 2 },
            ]),
            schedule(vec![
                ScheduleStep::Vectorize { axis: 1, lanes: 8 },
                ScheduleStep::RegisterBlock { axis: 0, factor: 6 },
                ScheduleStep::Unroll { axis: 1, factor: 3 },
            ]),
        ] {
            check(&k, &s, &inputs, 1e-5)?;
        }
    }
    Ok(())
}

/// The BLIS-style schedules: 6 x NR micro-tiles over cache blocks of the columns with the
/// shared operand packed (`Tile` + `Pack`), ragged everywhere: rows past the last whole
/// micro-tile, columns past the last whole panel (a partial panel with a partial vector,
/// in the last block only), blocks of one and of several panels, more than one block.
#[test]
fn tiled_packed_matmul_with_ragged_tails_matches_the_evaluator() -> R {
    let lanes = host_lanes();
    for &(m, kk, n) in &[(1, 1, 1), (37, 29, 41), (13, 64, 3 * lanes + 5), (8, 3, 8 * lanes), (6, 17, 2 * lanes - 1)] {
        let k = matmul(m, kk, n);
        let inputs = [f32s(m * kk, 1), f32s(kk * n, 2)];
        for (rows, nr, panels) in [(6, 4, 1), (6, 2, 3), (8, 3, 2), (3, 1, 1)] {
            let s = schedule(vec![
                ScheduleStep::Parallel { axes: 1 },
                ScheduleStep::Vectorize { axis: 1, lanes },
                ScheduleStep::RegisterBlock { axis: 0, factor: rows },
                ScheduleStep::Unroll { axis: 1, factor: nr },
                ScheduleStep::Tile { axis: 1, size: lanes * nr * panels },
                ScheduleStep::Pack { input: 1 },
            ]);
            s.validate(&k)?;
            let m = lower_module(&k, &s, HostTarget::detect()?, "")?;
            assert!(m.text.contains(&format!("alloca [{} x float]", kk * lanes * nr * panels)), "no pack scratch with {s}");
            check(&k, &s, &inputs, 1e-5)?;
        }
    }
    Ok(())
}

/// A padded 3x3 convolution (`y[co, h, w] = sum x[ci, h+kh-1, w+kw-1] * wt[co, ci, kh, kw]`)
/// blocked over output channels with the input window packed per cache block of `w`:
/// the pack resolves the guards (zero padding at both borders) and the row loop over `h`
/// runs outside the blocks.
#[test]
fn packed_padded_convolution_matches_the_evaluator() -> R {
    let lanes = host_lanes();
    for &(c, h, w) in &[(5, 4, 2 * lanes + 3), (8, 3, lanes - 1)] {
        let (c_, h_, w_) = (c as i64, h as i64, w as i64);
        let guards = vec![
            KGuard { expr: aff(-1, &[0, 0, 1, 0, 0, 1, 0]), bound: h_ },
            KGuard { expr: aff(-1, &[0, 0, 0, 1, 0, 0, 1]), bound: w_ },
        ];
        let x = Expr::Load { buf: 0, index: aff(-w_ - 1, &[c_ * h_ * w_, 0, w_, 1, h_ * w_, w_, 1]), guards, pad: 0.0 };
        let wt = load(1, aff(0, &[0, c_ * 9, 0, 0, 9, 3, 1]));
        let k = Kernel {
            name: "conv".into(),
            inputs: vec![buf("x", DType::F32, c * h * w), buf("w", DType::F32, c * c * 9)],
            output: buf("y", DType::F32, c * h * w),
            out_shape: vec![1, c, h, w],
            red_shape: vec![c, 3, 3],
            store: aff(0, &[c_ * h_ * w_, h_ * w_, w_, 1]),
            body: Body::Compute { reduce: Some(ReduceFn::Sum), body: bin(BinaryFn::Mul, x, wt), epilogue: Expr::Acc },
        };
        let inputs = [f32s(c * h * w, 7), f32s(c * c * 9, 8)];
        // The channels as the vector axis: (n, h, w, c), the weights packed, each vector
        // of channels stored lane by lane (masked at the end of the axis).
        for (nr, rows) in [(1, 6), (2, 3)] {
            let s = schedule(vec![
                ScheduleStep::Reorder { order: vec![0, 2, 3, 1] },
                ScheduleStep::Parallel { axes: 2 },
                ScheduleStep::Vectorize { axis: 3, lanes: 4 },
                ScheduleStep::RegisterBlock { axis: 2, factor: rows },
                ScheduleStep::Unroll { axis: 3, factor: nr },
                ScheduleStep::Tile { axis: 3, size: 4 * nr },
                ScheduleStep::Pack { input: 1 },
            ]);
            s.validate(&k)?;
            check(&k, &s, &inputs, 1e-5)?;
        }
        for nr in [1, 2] {
            let s = schedule(vec![
                ScheduleStep::Parallel { axes: 1 },
                ScheduleStep::Vectorize { axis: 3, lanes },
                ScheduleStep::RegisterBlock { axis: 1, factor: 6 },
                ScheduleStep::Unroll { axis: 3, factor: nr },
                ScheduleStep::Tile { axis: 3, size: lanes * nr },
                ScheduleStep::Pack { input: 0 },
            ]);
            s.validate(&k)?;
            check(&k, &s, &inputs, 1e-5)?;
        }
        // The input channels innermost, packed, reordered to vectorize the channels, and
        // plain.
        for packed in [false, true] {
            let mut steps = vec![
                ScheduleStep::ReduceOrder { order: vec![1, 2, 0] },
                ScheduleStep::Vectorize { axis: 3, lanes },
                ScheduleStep::RegisterBlock { axis: 1, factor: 3 },
            ];
            if packed {
                steps.extend([ScheduleStep::Tile { axis: 3, size: lanes }, ScheduleStep::Pack { input: 0 }]);
            }
            let s = schedule(steps);
            s.validate(&k)?;
            check(&k, &s, &inputs, 1e-5)?;
        }
        let s = schedule(vec![
            ScheduleStep::Reorder { order: vec![0, 2, 3, 1] },
            ScheduleStep::ReduceOrder { order: vec![2, 1, 0] },
            ScheduleStep::Vectorize { axis: 3, lanes: 4 },
            ScheduleStep::RegisterBlock { axis: 2, factor: 3 },
            ScheduleStep::Tile { axis: 3, size: 4 },
            ScheduleStep::Pack { input: 1 },
        ]);
        s.validate(&k)?;
        check(&k, &s, &inputs, 1e-5)?;
    }
    Ok(())
}

#[test]
fn the_module_has_wide_vectors_fma_and_the_host_attributes() -> R {
    let host = HostTarget::detect()?;
    let k = matmul(8, 8, 64);
    let s = schedule(vec![ScheduleStep::Vectorize { axis: 1, lanes: 16 }, ScheduleStep::RegisterBlock { axis: 0, factor: 4 }]);
    let m = lower_module(&k, &s, host, "")?;
    assert!(m.vectorized);
    assert!(m.text.contains("<16 x float>"));
    assert!(m.text.contains(&format!("\"target-cpu\"=\"{}\"", host.cpu)));
    assert_eq!(m.fma, host.has_fma());
    assert_eq!(m.text.contains("@llvm.fma.v16f32"), host.has_fma());
    Ok(())
}

/// A padded 1-D window `out[i] = x[i + j - 2]` (zero outside), summed over `j < 5`, then
/// max/min/select/div/sqrt in the epilogue: guarded vector loads at both borders.
#[test]
fn guarded_window_and_elementwise_epilogue_are_exact() -> R {
    let lanes = host_lanes();
    for n in [3usize, lanes, 3 * lanes + 7] {
        let guard = KGuard { expr: aff(-2, &[1, 1]), bound: n as i64 };
        let window = Expr::Load { buf: 0, index: aff(-2, &[1, 1]), guards: vec![guard], pad: 0.0 };
        let acc = Expr::Acc;
        let cond = bin(BinaryFn::Gt, acc.clone(), Expr::Const { value: 0.5, dtype: DType::F32 });
        let e = Expr::Select(
            Box::new(cond),
            Box::new(un(UnaryFn::Sqrt, bin(BinaryFn::Max, acc.clone(), load(1, aff(0, &[1]))))),
            Box::new(bin(BinaryFn::Div, bin(BinaryFn::Min, acc, load(1, aff(0, &[1]))), Expr::Const { value: 3.0, dtype: DType::F32 })),
        );
        let k = Kernel {
            name: "window".into(),
            inputs: vec![buf("x", DType::F32, n), buf("y", DType::F32, n)],
            output: buf("out", DType::F32, n),
            out_shape: vec![n],
            red_shape: vec![5],
            store: aff(0, &[1]),
            body: Body::Compute { reduce: Some(ReduceFn::Sum), body: window, epilogue: e },
        };
        let inputs = [f32s(n, 3), f32s(n, 4)];
        for s in [Schedule::naive(), schedule(vec![ScheduleStep::Vectorize { axis: 0, lanes }])] {
            check(&k, &s, &inputs, 0.0)?;
        }
    }
    Ok(())
}

/// A strided padded window per row, `out[c, i] = sum_j x[c, s*i + j - 2] * w[c, j]` (0.5
/// outside the row), for strides 1 to 5: the vector loads of `x` are contiguous, a wide
/// load and a shuffle (strides 2 to 4) or per lane (5), masked at both borders and in the
/// partial vector that ends each row (also a row shorter than a vector).
#[test]
fn strided_padded_windows_with_partial_vectors_match_the_evaluator() -> R {
    let lanes = host_lanes();
    let c = 5usize;
    for stride in 1..=5i64 {
        for n in [4usize, lanes - 3, lanes + 1, 3 * lanes + 5] {
            let w = stride as usize * n;
            let w_ = w as i64;
            let guard = KGuard { expr: aff(-2, &[0, stride, 1]), bound: w_ };
            let x = Expr::Load { buf: 0, index: aff(-2, &[w_, stride, 1]), guards: vec![guard], pad: 0.5 };
            let k = Kernel {
                name: "strided".into(),
                inputs: vec![buf("x", DType::F32, c * w), buf("w", DType::F32, c * 5)],
                output: buf("out", DType::F32, c * n),
                out_shape: vec![c, n],
                red_shape: vec![5],
                store: aff(0, &[n as i64, 1]),
                body: Body::Compute { reduce: Some(ReduceFn::Sum), body: bin(BinaryFn::Mul, x, load(1, aff(0, &[5, 0, 1]))), epilogue: Expr::Acc },
            };
            let inputs = [f32s(c * w, 5), f32s(c * 5, 6)];
            for s in [
                schedule(vec![ScheduleStep::Vectorize { axis: 1, lanes }]),
                schedule(vec![ScheduleStep::Vectorize { axis: 1, lanes: 8 }, ScheduleStep::Unroll { axis: 1, factor: 2 }]),
                schedule(vec![
                    ScheduleStep::Parallel { axes: 1 },
                    ScheduleStep::Vectorize { axis: 1, lanes },
                    ScheduleStep::RegisterBlock { axis: 0, factor: 2 },
                    ScheduleStep::Unroll { axis: 1, factor: 3 },
                ]),
            ] {
                check(&k, &s, &inputs, 1e-5)?;
            }
        }
    }
    Ok(())
}

/// A row shorter than a vector runs on one masked vector (loads and store), not on scalars.
#[test]
fn a_short_vector_axis_is_one_masked_vector() -> R {
    let host = HostTarget::detect()?;
    let k = matmul(4, 8, 7);
    let s = schedule(vec![ScheduleStep::Vectorize { axis: 1, lanes: 8 }, ScheduleStep::RegisterBlock { axis: 0, factor: 4 }]);
    let m = lower_module(&k, &s, host, "")?;
    assert!(m.vectorized);
    assert!(m.text.contains("@llvm.masked.load.v8f32"));
    assert!(m.text.contains("@llvm.masked.store.v8f32"));
    assert!(!m.text.contains("store float"));
    check(&k, &s, &[f32s(32, 1), f32s(56, 2)], 1e-5)
}

fn elementwise(name: &str, inputs: Vec<Buffer>, out: DType, n: usize, e: Expr) -> Kernel {
    Kernel {
        name: name.into(),
        inputs,
        output: buf("out", out, n),
        out_shape: vec![n],
        red_shape: vec![],
        store: aff(0, &[1]),
        body: Body::Compute { reduce: None, body: e, epilogue: Expr::Acc },
    }
}

#[test]
fn integer_bool_and_cast_semantics_match_the_evaluator() -> R {
    let ints = Tensor::from_vec(vec![8], vec![7i64, -7, i64::MIN, 0, 5, -1, 9, i64::MAX])?;
    let divs = Tensor::from_vec(vec![8], vec![2i64, 2, -1, 3, -3, 4, -4, 1])?;
    let floats = Tensor::from_vec(vec![8], vec![1.5f32, -2.5, f32::NAN, 1e20, -1e20, 0.0, -0.0, 3.99])?;
    let i = || load(0, aff(0, &[1]));
    let d = || load(1, aff(0, &[1]));
    let x = || load(2, aff(0, &[1]));
    let bufs = || vec![buf("i", DType::I64, 8), buf("d", DType::I64, 8), buf("x", DType::F32, 8)];
    let inputs = [ints, divs, floats];
    let cases: Vec<(DType, Expr)> = vec![
        (DType::I64, bin(BinaryFn::Div, i(), d())),
        (DType::I64, bin(BinaryFn::Mod, i(), d())),
        (DType::I64, bin(BinaryFn::Fmod, i(), d())),
        (DType::I64, bin(BinaryFn::Add, bin(BinaryFn::Mul, i(), d()), Expr::Axis(0))),
        (DType::I64, un(UnaryFn::Abs, bin(BinaryFn::Max, i(), d()))),
        (DType::I64, un(UnaryFn::Sign, i())),
        (DType::I64, Expr::Cast(DType::I64, Box::new(x()))),
        (DType::I32, Expr::Cast(DType::I32, Box::new(x()))),
        (DType::I32, Expr::Cast(DType::I32, Box::new(i()))),
        (DType::Bool, Expr::Cast(DType::Bool, Box::new(x()))),
        (DType::Bool, bin(BinaryFn::Xor, bin(BinaryFn::Lt, i(), d()), un(UnaryFn::IsNaN, x()))),
        (DType::F32, Expr::Cast(DType::F32, Box::new(bin(BinaryFn::Ge, x(), Expr::Const { value: 0.0, dtype: DType::F32 })))),
        (DType::F32, bin(BinaryFn::Pow, un(UnaryFn::Abs, x()), Expr::Const { value: 0.5, dtype: DType::F32 })),
        (DType::F32, un(UnaryFn::Round, x())),
        (DType::F32, un(UnaryFn::Sign, x())),
    ];
    for (n, (dt, e)) in cases.into_iter().enumerate() {
        let k = elementwise(&format!("case{n}"), bufs(), dt, 8, e);
        check(&k, &Schedule::naive(), &inputs, 0.0)?;
    }
    Ok(())
}

#[test]
fn f64_kernels_match_the_evaluator_exactly() -> R {
    let xs = vec![1.5f64, -2.5, f64::NAN, 1e300, -1e-310, 0.0, -0.0, 7.25, 3.0, -1.0];
    let ys = vec![0.5f64, 2.0, 3.0, -7.0, 1e-300, -0.0, 2.5, -3.0, 0.0, f64::INFINITY];
    let n = xs.len();
    let inputs = [Tensor::from_vec(vec![n], xs)?, Tensor::from_vec(vec![n], ys)?, f32s(n, 3)];
    let x = || load(0, aff(0, &[1]));
    let y = || load(1, aff(0, &[1]));
    let f = || load(2, aff(0, &[1]));
    let c = |v: f64| Expr::Const { value: v, dtype: DType::F64 };
    let bufs = || vec![buf("x", DType::F64, n), buf("y", DType::F64, n), buf("f", DType::F32, n)];
    let cases: Vec<(DType, Expr)> = vec![
        (DType::F64, bin(BinaryFn::Add, bin(BinaryFn::Mul, x(), y()), c(0.1))),
        (DType::F64, bin(BinaryFn::Div, x(), y())),
        (DType::F64, bin(BinaryFn::Max, x(), y())),
        (DType::F64, bin(BinaryFn::Fmod, x(), y())),
        (DType::F64, bin(BinaryFn::Pow, un(UnaryFn::Abs, x()), y())),
        (DType::F64, un(UnaryFn::Log, un(UnaryFn::Abs, x()))),
        (DType::F64, un(UnaryFn::Exp, y())),
        (DType::F64, un(UnaryFn::Erf, x())),
        (DType::F64, un(UnaryFn::Floor, x())),
        (DType::F64, un(UnaryFn::Round, x())),
        (DType::F64, un(UnaryFn::Sign, x())),
        (DType::F64, Expr::Select(Box::new(bin(BinaryFn::Lt, x(), y())), Box::new(x()), Box::new(un(UnaryFn::Neg, y())))),
        (DType::F64, Expr::Cast(DType::F64, Box::new(f()))),
        (DType::F32, Expr::Cast(DType::F32, Box::new(x()))),
        (DType::I64, Expr::Cast(DType::I64, Box::new(x()))),
        (DType::Bool, Expr::Cast(DType::Bool, Box::new(y()))),
        (DType::F64, Expr::Cast(DType::F64, Box::new(Expr::Axis(0)))),
    ];
    for (i, (dt, e)) in cases.into_iter().enumerate() {
        let k = elementwise(&format!("f64_{i}"), bufs(), dt, n, e);
        check(&k, &Schedule::naive(), &inputs, 0.0)?;
    }
    let (m, r) = (3usize, 7usize);
    let mut v: Vec<f64> = (0..m * r).map(|i| ((i * 5) % 9) as f64 - 4.0).collect();
    v[4] = f64::NAN;
    let x = Tensor::from_vec(vec![m * r], v)?;
    for (f, out) in [(ReduceFn::Sum, DType::F64), (ReduceFn::Prod, DType::F64), (ReduceFn::Max, DType::F64), (ReduceFn::Min, DType::F64), (ReduceFn::ArgMax, DType::I64)] {
        let k = Kernel {
            name: format!("reduce64_{}", f.name()),
            inputs: vec![buf("x", DType::F64, m * r)],
            output: buf("out", out, m),
            out_shape: vec![m],
            red_shape: vec![r],
            store: aff(0, &[1]),
            body: Body::Compute { reduce: Some(f), body: load(0, aff(0, &[r as i64, 1])), epilogue: Expr::Acc },
        };
        check(&k, &Schedule::naive(), std::slice::from_ref(&x), 0.0)?;
    }
    Ok(())
}

#[test]
fn reductions_and_arg_reductions_match_the_evaluator() -> R {
    let (m, n) = (5usize, 13usize);
    let mut v: Vec<f32> = (0..m * n).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    v[3] = f32::NAN;
    let x = Tensor::from_vec(vec![m * n], v)?;
    for (f, out) in [
        (ReduceFn::Sum, DType::F32),
        (ReduceFn::Prod, DType::F32),
        (ReduceFn::Max, DType::F32),
        (ReduceFn::Min, DType::F32),
        (ReduceFn::ArgMax, DType::I64),
        (ReduceFn::ArgMin, DType::I64),
    ] {
        let k = Kernel {
            name: format!("reduce_{}", f.name()),
            inputs: vec![buf("x", DType::F32, m * n)],
            output: buf("out", out, m),
            out_shape: vec![m],
            red_shape: vec![n],
            store: aff(0, &[1]),
            body: Body::Compute { reduce: Some(f), body: load(0, aff(0, &[n as i64, 1])), epilogue: Expr::Acc },
        };
        check(&k, &schedule(vec![ScheduleStep::Parallel { axes: 1 }]), std::slice::from_ref(&x), 1e-6)?;
        // Blocked rows: independent accumulators, with a row tail (5 rows by 2 and by 3).
        for factor in [2, 3] {
            check(&k, &schedule(vec![ScheduleStep::RegisterBlock { axis: 0, factor }]), std::slice::from_ref(&x), 1e-6)?;
        }
    }
    Ok(())
}

#[test]
fn run_time_errors_and_bad_buffers_are_errors() -> R {
    let pos = load(1, aff(0, &[1]));
    let k = Kernel {
        name: "gather".into(),
        inputs: vec![buf("x", DType::F32, 4), buf("p", DType::I64, 3)],
        output: buf("out", DType::F32, 3),
        out_shape: vec![3],
        red_shape: vec![],
        store: aff(0, &[1]),
        body: Body::Compute {
            reduce: None,
            body: Expr::Gather { buf: 0, index: aff(0, &[0]), stride: 1, extent: 4, pos: Box::new(pos) },
            epilogue: Expr::Acc,
        },
    };
    let x = f32s(4, 1);
    let good = Tensor::from_vec(vec![3], vec![3i64, 0, 2])?;
    check(&k, &Schedule::naive(), &[x.clone(), good], 0.0)?;
    let bad = Tensor::from_vec(vec![3], vec![3i64, 4, 2])?;
    assert!(matches!(run(&k, &Schedule::naive(), &[x, bad]), Err(Error::Runtime { .. })));
    let div = elementwise(
        "div",
        vec![buf("a", DType::I64, 2), buf("b", DType::I64, 2)],
        DType::I64,
        2,
        bin(BinaryFn::Div, load(0, aff(0, &[1])), load(1, aff(0, &[1]))),
    );
    let a = Tensor::from_vec(vec![2], vec![1i64, 2])?;
    let zero = Tensor::from_vec(vec![2], vec![1i64, 0])?;
    assert!(matches!(run(&div, &Schedule::naive(), &[a, zero]), Err(Error::Runtime { .. })));
    let j = LlvmKernel::compile(&div, &Schedule::naive())?;
    let mut out = vec![0u8; 16];
    assert!(matches!(j.run(&[&[0u8; 16]], &mut out), Err(Error::InvalidInput { .. })));
    assert!(matches!(j.run(&[&[0u8; 16], &[0u8; 8]], &mut out), Err(Error::InvalidInput { .. })));
    Ok(())
}

/// The f64 reference of a polynomial function.
fn reference(f: UnaryFn, x: f64) -> f64 {
    match f {
        UnaryFn::Exp => x.exp(),
        UnaryFn::Log => x.ln(),
        UnaryFn::Tanh => x.tanh(),
        UnaryFn::Erf => libm::erf(x),
        UnaryFn::Sin => x.sin(),
        UnaryFn::Cos => x.cos(),
        UnaryFn::Tan => x.tan(),
        UnaryFn::Atan => x.atan(),
        UnaryFn::Sinh => x.sinh(),
        _ => x.cosh(),
    }
}

/// The error of `y` in f32 ulps of the reference `r` (subnormal spacing below the normals).
fn ulps(y: f32, r: f64) -> f64 {
    if r.is_nan() || y.is_nan() {
        return if r.is_nan() && y.is_nan() { 0.0 } else { f64::INFINITY };
    }
    if r.abs() > f64::from(f32::MAX) {
        // Beyond the f32 range the only right answer is the infinity of that sign.
        return if f64::from(y) == f64::INFINITY.copysign(r) { 0.0 } else { f64::INFINITY };
    }
    let a = r.abs();
    let e = if a < f64::from(f32::MIN_POSITIVE) { -126 } else { (a.log2().floor() as i32).min(127) };
    (f64::from(y) - r).abs() / 2f64.powi(e - 23)
}

#[test]
fn polynomials_meet_their_error_bounds_and_match_cranelift_bit_for_bit() -> R {
    let lanes = host_lanes();
    let cases = [
        (UnaryFn::Exp, -104.0f32, 89.0f32, 1.5),
        (UnaryFn::Log, 1e-30, 1e30, 1.5),
        (UnaryFn::Tanh, -12.0, 12.0, 2.0),
        (UnaryFn::Erf, -6.0, 6.0, 2.0),
        (UnaryFn::Sin, -1e4, 1e4, 3.0),
        (UnaryFn::Cos, -1e4, 1e4, 3.0),
        (UnaryFn::Tan, -1e4, 1e4, 4.0),
        (UnaryFn::Atan, -1e6, 1e6, 2.5),
        (UnaryFn::Sinh, -90.0, 90.0, 2.0),
        (UnaryFn::Cosh, -90.0, 90.0, 2.0),
    ];
    let n = (1 << 16) + 3;
    for (f, lo, hi, bound) in cases {
        assert!(is_polynomial(f) && crate::cranelift::is_polynomial(f));
        let mut xs: Vec<f32> = (0..n).map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32)).collect();
        // Small magnitudes and specials too.
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 0.3, -0.7, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e5, -3e7]);
        let len = xs.len();
        let k = elementwise(&format!("{f:?}"), vec![buf("x", DType::F32, len)], DType::F32, len, un(f, load(0, aff(0, &[1]))));
        let x = Tensor::from_vec(vec![len], xs.clone())?;
        let s = schedule(vec![ScheduleStep::Vectorize { axis: 0, lanes }]);
        let got = run(&k, &s, std::slice::from_ref(&x))?;
        let mut worst = 0.0f64;
        for (&xi, &g) in xs.iter().zip(&got) {
            if xi.is_finite() && xi >= lo && xi <= hi && !(f == UnaryFn::Log && xi <= 0.0) {
                worst = worst.max(ulps(g as f32, reference(f, f64::from(xi))));
            }
        }
        assert!(worst <= bound, "{f:?}: max error {worst} ulp > {bound}");
        // The Cranelift backend computes the same polynomials with the same coefficients.
        let c = JitKernel::compile(&k, &schedule(vec![ScheduleStep::Vectorize { axis: 0, lanes: 4 }]))?;
        let mut out = vec![0u8; len * 4];
        c.run(&[&bytes(&x)], &mut out)?;
        if HostTarget::detect()?.has_fma() {
            let theirs = from_bytes(DType::F32, &out);
            for (i, (a, b)) in got.iter().zip(&theirs).enumerate() {
                assert!((a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits(), "{f:?}({}): llvm {a}, cranelift {b}", xs[i]);
            }
        }
    }
    Ok(())
}
