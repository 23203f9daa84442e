//! Schedules applied by the Cranelift backend, each compared with the reference
//! `Kernel::eval`: register-blocked contractions with tails, guarded (padded) and strided
//! vector loads at the borders, parallel shares of a blocked axis, and illegal schedules.

use codegen::{Error, JitKernel};
use ir::atom::{BinaryFn, ReduceFn};
use ir::dtype::DType;
use ir::kernel::{Affine, Body, Buffer, Expr, KGuard, Kernel};
use ir::schedule::{Schedule, ScheduleStep};
use ir::tensor::Tensor;
use proptest::prelude::*;

type R = Result<(), Box<dyn std::error::Error>>;

fn buf(name: &str, numel: usize) -> Buffer {
    Buffer {
        name: name.into(),
        dtype: DType::F32,
        numel,
    }
}

fn aff(offset: i64, coefs: &[i64]) -> Affine {
    Affine {
        offset,
        coefs: coefs.to_vec(),
    }
}

fn load(buf: usize, index: Affine, guards: Vec<KGuard>, pad: f64) -> Expr {
    Expr::Load {
        buf,
        index,
        guards,
        pad,
    }
}

fn f32b(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

fn to_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn data(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| ((i * 37 + seed * 11) % 23) as f32 * 0.25 - 2.5)
        .collect()
}

/// Runs `k` compiled with `s` on `inputs` and compares with `Kernel::eval`: bit for bit, or
/// within a tolerance where the code uses FMA. Returns the output.
fn check(
    k: &Kernel,
    s: &Schedule,
    inputs: &[Vec<f32>],
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let j = JitKernel::compile(k, s)?;
    let bytes: Vec<Vec<u8>> = inputs.iter().map(|v| f32b(v)).collect();
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let mut out = vec![0u8; k.output.numel * 4];
    j.run(&refs, &mut out)?;
    let got = to_f32(&out);
    let ts: Vec<Tensor> = inputs
        .iter()
        .map(|v| Tensor::from_vec(vec![v.len()], v.clone()))
        .collect::<Result<_, _>>()?;
    let trefs: Vec<&Tensor> = ts.iter().collect();
    let want = k.eval(&trefs)?.to_f64_vec();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let w = *w as f32;
        if j.uses_fma() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "'{}' with {s}: [{i}] {g} vs {w}",
                k.name
            );
        } else {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "'{}' with {s}: [{i}] {g} vs {w}",
                k.name
            );
        }
    }
    Ok(got)
}

fn matmul(m: usize, kk: usize, n: usize) -> Kernel {
    let (k_, n_) = (kk as i64, n as i64);
    Kernel {
        name: "mm".into(),
        inputs: vec![buf("a", m * kk), buf("b", kk * n), buf("bias", n)],
        output: buf("c", m * n),
        out_shape: vec![m, n],
        red_shape: vec![kk],
        store: aff(0, &[n_, 1]),
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: Expr::Binary(
                BinaryFn::Mul,
                Box::new(load(0, aff(0, &[k_, 0, 1]), vec![], 0.0)),
                Box::new(load(1, aff(0, &[0, 1, n_]), vec![], 0.0)),
            ),
            epilogue: Expr::Binary(
                BinaryFn::Max,
                Box::new(Expr::Binary(
                    BinaryFn::Add,
                    Box::new(Expr::Acc),
                    Box::new(load(2, aff(0, &[0, 1]), vec![], 0.0)),
                )),
                Box::new(Expr::Const {
                    value: -1.0,
                    dtype: DType::F32,
                }),
            ),
        },
    }
}

fn gemm(p: usize, mr: usize, nr: usize) -> Schedule {
    let mut steps = vec![
        ScheduleStep::Parallel { axes: p },
        ScheduleStep::Vectorize { axis: 1, lanes: 4 },
        ScheduleStep::RegisterBlock {
            axis: 0,
            factor: mr,
        },
    ];
    if nr > 1 {
        steps.push(ScheduleStep::Unroll {
            axis: 1,
            factor: nr,
        });
    }
    Schedule { steps }
}

/// `y[c, h, w] = sum_{kh, kw} x[c, s*h + kh - p, s*w + kw - p] * wt[c, kh, kw]` (pad `p`,
/// stride `s`, 3x3 window) with value `pad` outside: a depthwise conv, or (with `max`) a
/// max pool of the window.
fn window(c: usize, h: usize, w: usize, s: usize, p: usize, max: bool) -> Kernel {
    let (oh, ow) = ((h + 2 * p - 3) / s + 1, (w + 2 * p - 3) / s + 1);
    let (h_, w_, s_, p_) = (h as i64, w as i64, s as i64, p as i64);
    let guards = vec![
        KGuard {
            expr: aff(-p_, &[0, s_, 0, 1, 0]),
            bound: h_,
        },
        KGuard {
            expr: aff(-p_, &[0, 0, s_, 0, 1]),
            bound: w_,
        },
    ];
    let x = load(
        0,
        aff(-p_ * w_ - p_, &[h_ * w_, s_ * w_, s_, w_, 1]),
        guards,
        if max { f64::NEG_INFINITY } else { 0.0 },
    );
    let body = if max {
        x
    } else {
        Expr::Binary(
            BinaryFn::Mul,
            Box::new(x),
            Box::new(load(1, aff(0, &[9, 0, 0, 3, 1]), vec![], 0.0)),
        )
    };
    let mut inputs = vec![buf("x", c * h * w)];
    if !max {
        inputs.push(buf("wt", c * 9));
    }
    Kernel {
        name: if max { "pool" } else { "dwconv" }.into(),
        inputs,
        output: buf("y", c * oh * ow),
        out_shape: vec![c, oh, ow],
        red_shape: vec![3, 3],
        store: aff(0, &[(oh * ow) as i64, ow as i64, 1]),
        body: Body::Compute {
            reduce: Some(if max { ReduceFn::Max } else { ReduceFn::Sum }),
            body,
            epilogue: Expr::Acc,
        },
    }
}

fn vec_rows(block: Option<(usize, usize)>, nr: usize) -> Schedule {
    let mut steps = vec![
        ScheduleStep::Parallel { axes: 1 },
        ScheduleStep::Vectorize { axis: 2, lanes: 4 },
    ];
    if let Some((axis, factor)) = block {
        steps.push(ScheduleStep::RegisterBlock { axis, factor });
    }
    if nr > 1 {
        steps.push(ScheduleStep::Unroll {
            axis: 2,
            factor: nr,
        });
    }
    Schedule { steps }
}

#[test]
fn blocked_matmul_with_row_and_column_tails() -> R {
    for (m, kk, n) in [(9, 5, 23), (4, 1, 12), (1, 3, 5), (7, 6, 3), (13, 17, 29)] {
        let k = matmul(m, kk, n);
        let ins = [data(m * kk, 1), data(kk * n, 2), data(n, 3)];
        for s in [
            gemm(1, 4, 3),
            gemm(0, 3, 2),
            gemm(1, 1, 1),
            gemm(0, 5, 4),
            Schedule::naive(),
        ] {
            check(&k, &s, &ins)?;
        }
    }
    Ok(())
}

#[test]
fn fma_is_used_for_sums_of_products_when_the_host_has_it() -> R {
    let k = matmul(8, 8, 8);
    let j = JitKernel::compile(&k, &gemm(1, 4, 2))?;
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        j.uses_fma(),
        std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx")
    );
    assert!(j.is_vectorized());
    assert_eq!(j.parallel_extent(), 2);
    Ok(())
}

#[test]
fn guarded_vector_loads_at_the_borders() -> R {
    // Padded 3x3 windows: the first and last vectors of a row straddle the padding.
    for (h, w) in [(5, 9), (6, 16), (3, 4), (7, 13)] {
        for max in [false, true] {
            let k = window(3, h, w, 1, 1, max);
            let mut ins = vec![data(3 * h * w, 5)];
            if !max {
                ins.push(data(27, 6));
            }
            for s in [
                vec_rows(None, 1),
                vec_rows(Some((1, 2)), 2),
                vec_rows(Some((1, 4)), 3),
            ] {
                let j = JitKernel::compile(&k, &s)?;
                assert!(j.is_vectorized(), "{s}");
                check(&k, &s, &ins)?;
            }
        }
    }
    Ok(())
}

#[test]
fn strided_vector_loads_gather_lanes() -> R {
    // Stride 2 with and without padding: lanes 2 apart. With (9, 17, 0) the last vector's
    // last lane reads the buffer's last element, so the two-vector load (one element
    // further) must not run there.
    for (h, w, p) in [(9, 17, 1), (11, 20, 0), (8, 8, 1), (9, 17, 0)] {
        for max in [false, true] {
            let k = window(2, h, w, 2, p, max);
            let mut ins = vec![data(2 * h * w, 7)];
            if !max {
                ins.push(data(18, 8));
            }
            for s in [vec_rows(None, 1), vec_rows(Some((1, 3)), 2)] {
                check(&k, &s, &ins)?;
            }
        }
    }
    Ok(())
}

/// Running the parallel range in shares writes what one whole run writes, for a blocked
/// parallel axis (blocks of 4 rows of 10, the last one short) and for two flattened axes.
#[test]
#[allow(unsafe_code)]
fn parallel_shares_of_blocked_and_flattened_axes() -> R {
    let k = matmul(10, 3, 9);
    let ins = [data(30, 1), data(27, 2), data(9, 3)];
    let bytes: Vec<Vec<u8>> = ins.iter().map(|v| f32b(v)).collect();
    let k3 = window(3, 6, 9, 1, 1, false);
    let ins3 = [data(3 * 54, 4), data(27, 5)];
    let bytes3: Vec<Vec<u8>> = ins3.iter().map(|v| f32b(v)).collect();
    let flat = Schedule {
        steps: vec![
            ScheduleStep::Parallel { axes: 2 },
            ScheduleStep::Vectorize { axis: 2, lanes: 4 },
        ],
    };
    for (k, bytes, s, extent) in [(&k, &bytes, gemm(1, 4, 2), 3), (&k3, &bytes3, flat, 18)] {
        let j = JitKernel::compile(k, &s)?;
        assert_eq!(j.parallel_extent(), extent);
        let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let mut whole = vec![0u8; k.output.numel * 4];
        j.run(&refs, &mut whole)?;
        let mut parts = vec![0u8; k.output.numel * 4];
        let mut ptrs: Vec<*mut u8> = bytes.iter().map(|b| b.as_ptr().cast_mut()).collect();
        ptrs.extend([parts.as_mut_ptr(), std::ptr::null_mut()]);
        for (b, e) in [(0, 1), (1, 1), (1, extent - 1), (extent - 1, extent)] {
            // SAFETY: every buffer has the kernel's byte length; the output is separate.
            unsafe { j.run_raw(ptrs.as_ptr(), b, e)? };
        }
        assert_eq!(whole, parts, "{s}");
    }
    Ok(())
}

#[test]
fn illegal_schedules_are_errors() {
    let k = matmul(4, 4, 8);
    for steps in [
        vec![ScheduleStep::Vectorize { axis: 0, lanes: 3 }],
        vec![ScheduleStep::Reorder { order: vec![0, 0] }],
        vec![ScheduleStep::Parallel { axes: 3 }],
        vec![ScheduleStep::RegisterBlock { axis: 0, factor: 0 }],
        vec![ScheduleStep::Unroll { axis: 1, factor: 2 }],
    ] {
        let s = Schedule { steps };
        let e = JitKernel::compile(&k, &s).err();
        assert!(matches!(e, Some(Error::InvalidKernel { .. })), "{s}: {e:?}");
    }
    // Legal, but not this backend's vector width.
    let s = Schedule {
        steps: vec![ScheduleStep::Vectorize { axis: 1, lanes: 8 }],
    };
    assert!(matches!(
        JitKernel::compile(&k, &s),
        Err(Error::Unsupported { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random sizes and tiles: the blocked contraction equals the reference. Reductions of
    /// 8 and more run the top-tested loop (with one column, fresh broadcasts).
    #[test]
    fn blocked_matmul_equals_reference(
        m in 1usize..11, kk in 1usize..20, n in 1usize..27,
        mr in 1usize..6, nr in 1usize..4, p in 0usize..2,
    ) {
        let k = matmul(m, kk, n);
        let ins = [data(m * kk, 9), data(kk * n, 10), data(n, 11)];
        check(&k, &gemm(p, mr, nr), &ins).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

/// `y[co, oh, ow] = bias[co] + sum_{ci, kh, kw} x[ci, s*oh + kh - p, s*ow + kw - p] *
/// wt[co, ci, kh, kw]`, then relu: a 3x3 conv with padding `p` (zeros) and stride `s`.
fn conv(ci: usize, co: usize, h: usize, w: usize, s: usize, p: usize) -> Kernel {
    let (oh, ow) = ((h + 2 * p - 3) / s + 1, (w + 2 * p - 3) / s + 1);
    let (h_, w_, s_, p_, ci_) = (h as i64, w as i64, s as i64, p as i64, ci as i64);
    let guards = vec![
        KGuard {
            expr: aff(-p_, &[0, s_, 0, 0, 1, 0]),
            bound: h_,
        },
        KGuard {
            expr: aff(-p_, &[0, 0, s_, 0, 0, 1]),
            bound: w_,
        },
    ];
    let x = load(
        0,
        aff(-p_ * w_ - p_, &[0, s_ * w_, s_, h_ * w_, w_, 1]),
        guards,
        0.0,
    );
    let wt = load(1, aff(0, &[ci_ * 9, 0, 0, 9, 3, 1]), vec![], 0.0);
    let biased = Expr::Binary(
        BinaryFn::Add,
        Box::new(Expr::Acc),
        Box::new(load(2, aff(0, &[1, 0, 0]), vec![], 0.0)),
    );
    Kernel {
        name: "conv".into(),
        inputs: vec![buf("x", ci * h * w), buf("wt", co * ci * 9), buf("bias", co)],
        output: buf("y", co * oh * ow),
        out_shape: vec![co, oh, ow],
        red_shape: vec![ci, 3, 3],
        store: aff(0, &[(oh * ow) as i64, ow as i64, 1]),
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: Expr::Binary(BinaryFn::Mul, Box::new(x), Box::new(wt)),
            epilogue: Expr::Binary(
                BinaryFn::Max,
                Box::new(biased),
                Box::new(Expr::Const {
                    value: 0.0,
                    dtype: DType::F32,
                }),
            ),
        },
    }
}

/// `base` with cache blocks of `panels` micro-tile widths along `axis` and, with `pack`,
/// input `input` packed.
fn tiled(base: Schedule, axis: usize, panels: usize, pack: Option<usize>) -> Schedule {
    let mut steps = base.steps.clone();
    let size = panels * base.tile_columns();
    steps.push(ScheduleStep::Tile { axis, size });
    if let Some(input) = pack {
        steps.push(ScheduleStep::Pack { input });
    }
    Schedule { steps }
}

#[test]
fn packed_blocks_of_gemm_and_conv_match() -> R {
    let k = matmul(37, 70, 45);
    let ins = [data(37 * 70, 1), data(70 * 45, 2), data(45, 3)];
    for s in [
        tiled(gemm(1, 4, 2), 1, 2, Some(1)),
        tiled(gemm(0, 4, 2), 1, 3, None),
        tiled(gemm(1, 3, 1), 1, 1, Some(1)),
    ] {
        s.validate(&k)?;
        check(&k, &s, &ins)?;
    }
    let k = conv(5, 9, 11, 14, 2, 1);
    let ins = [data(5 * 11 * 14, 4), data(9 * 5 * 9, 5), data(9, 6)];
    let s = tiled(vec_rows(Some((0, 4)), 2), 2, 1, Some(0));
    check(&k, &s, &ins)?;
    // The heuristic packs a large enough contraction.
    let t = targets::Target::host().with_vector_bits(128);
    let k = matmul(64, 96, 80);
    let s = search::default_schedule(&k, &t);
    assert_eq!(s.pack(), Some(1), "{s}");
    check(&k, &s, &[data(64 * 96, 7), data(96 * 80, 8), data(80, 9)])?;
    Ok(())
}

/// Every candidate of a conv's space that runs the input channels innermost
/// (`reduce_order`), plain, packed and reordered to vectorize the channels, at strides 1
/// and 2, matches the reference.
#[test]
fn conv_candidates_with_the_channels_innermost_match() -> R {
    let t = targets::Target::host().with_vector_bits(128);
    for stride in [1, 2] {
        let k = conv(6, 9, 11, 14, stride, 1);
        let ins = [data(6 * 11 * 14, 4), data(9 * 6 * 9, 5), data(9, 6)];
        let ordered: Vec<Schedule> = search::Space::of(&k, &t).candidates().into_iter().filter(|s| s.reduce_order().is_some()).collect();
        assert!(ordered.iter().any(|s| s.reorder().is_some()) && ordered.iter().any(|s| s.pack().is_some()));
        for s in &ordered {
            assert_eq!(s.reduce_order(), Some(&[1, 2, 0][..]), "{s}");
            check(&k, s, &ins)?;
        }
    }
    Ok(())
}

/// A packed schedule with parallel shares writes what one whole run writes.
#[test]
#[allow(unsafe_code)]
fn parallel_shares_of_packed_blocks() -> R {
    let k = conv(3, 10, 7, 9, 1, 1);
    let ins = [data(3 * 63, 1), data(270, 2), data(10, 3)];
    let bytes: Vec<Vec<u8>> = ins.iter().map(|v| f32b(v)).collect();
    let s = tiled(vec_rows(Some((0, 4)), 1), 2, 1, Some(0));
    let j = JitKernel::compile(&k, &s)?;
    assert_eq!(j.parallel_extent(), 3);
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let mut whole = vec![0u8; k.output.numel * 4];
    j.run(&refs, &mut whole)?;
    let mut parts = vec![0u8; k.output.numel * 4];
    let mut ptrs: Vec<*mut u8> = bytes.iter().map(|b| b.as_ptr().cast_mut()).collect();
    ptrs.extend([parts.as_mut_ptr(), std::ptr::null_mut()]);
    for (b, e) in [(0, 1), (1, 3)] {
        // SAFETY: every buffer has the kernel's byte length; the output is separate.
        unsafe { j.run_raw(ptrs.as_ptr(), b, e)? };
    }
    assert_eq!(whole, parts, "{s}");
    check(&k, &s, &ins)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Random legal blocked and packed schedules of a GEMM with a bias + clamp epilogue:
    /// sizes that are not multiples of the blocks.
    #[test]
    fn packed_matmul_equals_reference(
        m in 1usize..20, kk in 1usize..20, n in 1usize..40,
        mr in 1usize..6, nr in 1usize..4, p in 0usize..2,
        panels in 1usize..4, pack in any::<bool>(),
    ) {
        let k = matmul(m, kk, n);
        let ins = [data(m * kk, 9), data(kk * n, 10), data(n, 11)];
        let s = tiled(gemm(p, mr, nr), 1, panels, pack.then_some(1));
        check(&k, &s, &ins).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }

    /// The output channels as the vector axis: a padded 3x3 conv reordered to
    /// `(oh, ow, co)`, pixels of a row blocked, rows parallel, the weights packed once per
    /// block of channels, and each vector of channels stored lane by lane (the output is
    /// not contiguous along them).
    #[test]
    fn channel_vectorized_conv_equals_reference(
        ci in 1usize..4, co in 1usize..14, h in 3usize..9, w in 3usize..12,
        stride in 1usize..3, pad in 0usize..2,
        mr in 1usize..7, nr in 1usize..4, panels in 1usize..3, p in 0usize..2, pack in any::<bool>(),
    ) {
        let k = conv(ci, co, h, w, stride, pad);
        let (oh, ow) = ((h + 2 * pad - 3) / stride + 1, (w + 2 * pad - 3) / stride + 1);
        prop_assume!(oh > 0 && ow > 0);
        let ins = [data(ci * h * w, 15), data(co * ci * 9, 16), data(co, 17)];
        let mut steps = vec![
            ScheduleStep::Reorder { order: vec![1, 2, 0] },
            ScheduleStep::Parallel { axes: p },
            ScheduleStep::Vectorize { axis: 2, lanes: 4 },
            ScheduleStep::RegisterBlock { axis: 1, factor: mr },
            ScheduleStep::Unroll { axis: 2, factor: nr },
        ];
        if pack {
            steps.push(ScheduleStep::Tile { axis: 2, size: 4 * nr * panels });
            steps.push(ScheduleStep::Pack { input: 1 });
        }
        let s = Schedule { steps };
        s.validate(&k).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&k, &s, &ins).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }

    /// Random legal packed schedules of a padded 3x3 conv (stride 1 or 2) with bias + relu.
    #[test]
    fn packed_conv_equals_reference(
        ci in 1usize..4, co in 1usize..10, h in 3usize..9, w in 3usize..15,
        stride in 1usize..3, pad in 0usize..2,
        mr in 1usize..5, nr in 1usize..3, panels in 1usize..7, pack in any::<bool>(),
    ) {
        let k = conv(ci, co, h, w, stride, pad);
        let (oh, ow) = ((h + 2 * pad - 3) / stride + 1, (w + 2 * pad - 3) / stride + 1);
        prop_assume!(oh > 0 && ow > 0);
        let ins = [data(ci * h * w, 12), data(co * ci * 9, 13), data(co, 14)];
        let s = tiled(vec_rows(Some((0, mr)), nr), 2, panels, pack.then_some(0));
        check(&k, &s, &ins).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

/// A 3x3 stride-1 conv over an input padded beforehand (`c` x `(oh + 2)` x `(ow + 2)`, no
/// guards) into `k` x `oh` x `ow`, with a batch axis of extent 1, then
/// `relu(acc * scale[k] + bias[k] + residual)`: the kernel a Winograd schedule runs. The
/// weights are `[k][c][3][3]`, or `[k][3][3][c]` with `channels_last` (contiguous along
/// the input channels); `weights_first` swaps the product's operands and the inputs.
fn padded_conv(k: usize, c: usize, oh: usize, ow: usize, channels_last: bool, weights_first: bool) -> Kernel {
    let (k_, c_, oh_, ow_) = (k as i64, c as i64, oh as i64, ow as i64);
    let (ph, pw) = (oh_ + 2, ow_ + 2);
    let (xb, wb) = if weights_first { (1, 0) } else { (0, 1) };
    let x = load(xb, aff(0, &[0, 0, pw, 1, ph * pw, pw, 1]), vec![], 0.0);
    let wcoefs = if channels_last { [0, 9 * c_, 0, 0, 1, 3 * c_, c_] } else { [0, 9 * c_, 0, 0, 9, 3, 1] };
    let wt = load(wb, aff(0, &wcoefs), vec![], 0.0);
    let product = if weights_first { (wt, x) } else { (x, wt) };
    let per_channel = |b: usize| load(b, aff(0, &[0, 1, 0, 0]), vec![], 0.0);
    let out = aff(0, &[k_ * oh_ * ow_, oh_ * ow_, ow_, 1]);
    let bin = |f, a: Expr, b: Expr| Expr::Binary(f, Box::new(a), Box::new(b));
    let epilogue = bin(
        BinaryFn::Max,
        bin(BinaryFn::Add, bin(BinaryFn::Add, bin(BinaryFn::Mul, Expr::Acc, per_channel(2)), per_channel(3)), load(4, out.clone(), vec![], 0.0)),
        Expr::Const { value: 0.0, dtype: DType::F32 },
    );
    let mut inputs = vec![buf("x", c * (ph * pw) as usize), buf("w", k * c * 9)];
    if weights_first {
        inputs.swap(0, 1);
    }
    inputs.extend([buf("scale", k), buf("bias", k), buf("residual", k * oh * ow)]);
    Kernel {
        name: "winograd_conv".into(),
        inputs,
        output: buf("y", k * oh * ow),
        out_shape: vec![1, k, oh, ow],
        red_shape: vec![c, 3, 3],
        store: out,
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: Expr::Binary(BinaryFn::Mul, Box::new(product.0), Box::new(product.1)),
            epilogue,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Winograd F(2x2, 3x3) against the direct reference: channel counts that fill a
    /// vector of input channels or not, blocks of 4 or 8 tiles, within a tile row or across
    /// two, weights strided or
    /// contiguous along the input channels, either operand order; through `run` (which
    /// prepares the filters) and `run_raw` with filters prepared once, the blocks in two
    /// shares (bit for bit the same), and `run_raw` without them an error. The transforms
    /// reassociate the sums: within 1e-4 relative.
    #[test]
    #[allow(unsafe_code)]
    fn winograd_conv_equals_reference(
        k4 in 1usize..4, c in 1usize..7, ty in 1usize..5, tx4 in 1usize..5,
        channels_last in any::<bool>(), weights_first in any::<bool>(), seed in 0u64..1000,
    ) {
        let (k, oh, ow) = (4 * k4, 2 * ty, 8 * tx4);
        let kernel = padded_conv(k, c, oh, ow, channels_last, weights_first);
        let s = Schedule { steps: vec![ScheduleStep::Winograd] };
        s.validate(&kernel).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (x, w) = (data(c * (oh + 2) * (ow + 2), seed), data(k * c * 9, seed + 1));
        let mut ins = if weights_first { vec![w, x] } else { vec![x, w] };
        ins.extend([data(k, seed + 2), data(k, seed + 3), data(k * oh * ow, seed + 4)]);
        let j = JitKernel::compile(&kernel, &s).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let bytes: Vec<Vec<u8>> = ins.iter().map(|v| f32b(v)).collect();
        let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let mut out = vec![0u8; k * oh * ow * 4];
        j.run(&refs, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Again with the filters prepared once, in two shares of the blocks.
        let weights = usize::from(!weights_first);
        let mut prepared = j.prepare(&|i| (i == weights).then(|| bytes[weights].clone())).ok_or_else(|| TestCaseError::fail("nothing prepared"))?;
        let mut again = vec![0u8; k * oh * ow * 4];
        let mut ptrs: Vec<*mut u8> = bytes.iter().map(|b| b.as_ptr().cast_mut()).collect();
        ptrs.extend([again.as_mut_ptr(), prepared.as_mut_ptr().cast::<u8>()]);
        let extent = j.parallel_extent();
        let tiles = oh / 2 * (ow / 2);
        prop_assert_eq!(extent, tiles / if tiles % 8 == 0 { 8 } else { 4 });
        for (b, e) in [(0, 1), (1, extent)] {
            // SAFETY: every buffer has the kernel's byte length, the output is separate, and
            // the prepared slot holds what `prepare` gave for these weights.
            unsafe { j.run_raw(ptrs.as_ptr(), b, e) }.map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        ptrs[ins.len() + 1] = std::ptr::null_mut();
        // SAFETY: as above, with a null prepared slot, which the kernel checks first.
        let missing = unsafe { j.run_raw(ptrs.as_ptr(), 0, extent) };
        prop_assert!(missing.as_ref().is_err_and(|e| e.to_string().contains("prepared data")), "{missing:?}");
        let ts: Vec<Tensor> = ins.iter().map(|v| Tensor::from_vec(vec![v.len()], v.clone())).collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let trefs: Vec<&Tensor> = ts.iter().collect();
        let want = kernel.eval(&trefs).map_err(|e| TestCaseError::fail(e.to_string()))?.to_f64_vec();
        for (i, ((g, p), w)) in to_f32(&out).iter().zip(to_f32(&again)).zip(&want).enumerate() {
            prop_assert!((f64::from(*g) - w).abs() <= 1e-4 * (1.0 + w.abs()), "[{i}] {g} vs {w} ({k}x{c}, {oh}x{ow})");
            prop_assert_eq!(g.to_bits(), p.to_bits(), "[{}] prepared filters differ", i);
        }
    }
}
