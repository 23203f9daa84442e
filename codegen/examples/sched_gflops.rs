//! GFLOP/s of two workloads under several schedules, single thread: a 1024^3 MatMul and a
//! 3x3 conv 64->64 on 1x64x56x56 with padding 1, built directly as kernels, next to the
//! measured 128-bit (f32x4) FMA peak of one core. Run with
//! `cargo run --release -p codegen --example sched_gflops`; with `--features llvm` the LLVM
//! backend's rows follow (its default schedule uses the host's full vector width, 16 f32
//! lanes with AVX-512), as ratios of the calibrated FMA peak at that width.
//! `LLVM_TILES=6x4,8x3` adds LLVM rows with other micro-tiles (rows x vectors);
//! `LLVM_CHANNELS=1:8x2,2:5x2` adds LLVM rows of a 3x3 conv 32->32 over 8x8 (`CONV=c,h,w`
//! sizes it) with the output channels as the vector axis, packed, the pixels of axis
//! `1` (rows) or `2` (columns) of the reordered kernel `(n, h, w, c)` blocked.

use codegen::JitKernel;
use ir::atom::{BinaryFn, ReduceFn};
use ir::dtype::DType;
use ir::kernel::{Affine, Body, Buffer, Expr, KGuard, Kernel};
use ir::schedule::{Schedule, ScheduleStep};
use std::time::Instant;

fn buf(name: &str, numel: usize) -> Buffer {
    Buffer { name: name.into(), dtype: DType::F32, numel }
}

fn load(buf: usize, offset: i64, coefs: &[i64], guards: Vec<KGuard>) -> Expr {
    Expr::Load { buf, index: Affine { offset, coefs: coefs.to_vec() }, guards, pad: 0.0 }
}

fn matmul(n: usize) -> Kernel {
    let n_ = n as i64;
    Kernel {
        name: "gemm".into(),
        inputs: vec![buf("a", n * n), buf("b", n * n)],
        output: buf("c", n * n),
        out_shape: vec![n, n],
        red_shape: vec![n],
        store: Affine { offset: 0, coefs: vec![n_, 1] },
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: Expr::Binary(BinaryFn::Mul, Box::new(load(0, 0, &[n_, 0, 1], vec![])), Box::new(load(1, 0, &[0, 1, n_], vec![]))),
            epilogue: Expr::Acc,
        },
    }
}

fn conv(c: usize, h: usize, w: usize) -> Kernel {
    let (c_, h_, w_) = (c as i64, h as i64, w as i64);
    let guards = vec![
        KGuard { expr: Affine { offset: -1, coefs: vec![0, 0, 1, 0, 0, 1, 0] }, bound: h_ },
        KGuard { expr: Affine { offset: -1, coefs: vec![0, 0, 0, 1, 0, 0, 1] }, bound: w_ },
    ];
    let x = load(0, -w_ - 1, &[c_ * h_ * w_, 0, w_, 1, h_ * w_, w_, 1], guards);
    let wt = load(1, 0, &[0, c_ * 9, 0, 0, 9, 3, 1], vec![]);
    Kernel {
        name: "conv".into(),
        inputs: vec![buf("x", c * h * w), buf("w", c * c * 9)],
        output: buf("y", c * h * w),
        out_shape: vec![1, c, h, w],
        red_shape: vec![c, 3, 3],
        store: Affine { offset: 0, coefs: vec![c_ * h_ * w_, h_ * w_, w_, 1] },
        body: Body::Compute { reduce: Some(ReduceFn::Sum), body: Expr::Binary(BinaryFn::Mul, Box::new(x), Box::new(wt)), epilogue: Expr::Acc },
    }
}

fn measure(k: &Kernel, s: &Schedule, flops: f64) -> Result<f64, codegen::Error> {
    let j = JitKernel::compile(k, s)?;
    time(|i, o| j.run(i, o), k, flops)
}

/// The best of at least three runs of `run` on `k`'s buffers (more, up to half a second in
/// all, for fast ones: the best run is the one least disturbed by other load), as GFLOP/s.
fn time(run: impl Fn(&[&[u8]], &mut [u8]) -> Result<(), codegen::Error>, k: &Kernel, flops: f64) -> Result<f64, codegen::Error> {
    let ins: Vec<Vec<u8>> = k.inputs.iter().map(|b| (0..b.numel).flat_map(|i| ((i % 7) as f32 * 0.1).to_ne_bytes()).collect()).collect();
    let refs: Vec<&[u8]> = ins.iter().map(Vec::as_slice).collect();
    let mut out = vec![0u8; k.output.numel * 4];
    run(&refs, &mut out)?;
    let mut best = f64::MAX;
    let start = Instant::now();
    let mut runs = 0;
    while runs < 3 || (runs < 100 && start.elapsed().as_secs_f64() < 0.5) {
        let t = Instant::now();
        run(&refs, &mut out)?;
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    Ok(flops / best / 1e9)
}

/// GFLOP/s of 12 independent f32x4 FMA chains (enough to cover the FMA latency on two
/// pipes), the best of 5 runs of 50M FMAs; `None` without SSE FMA.
#[allow(unsafe_code)]
fn fma128_peak() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "fma")]
        fn chains(iters: usize) -> f32 {
            let mut acc = [_mm_set1_ps(0.0); 12];
            let (a, b) = (_mm_set1_ps(0.999_999), _mm_set1_ps(1e-7));
            for _ in 0..iters {
                for x in &mut acc {
                    *x = _mm_fmadd_ps(*x, a, b);
                }
            }
            let mut out = [0f32; 4];
            let sum = acc.iter().fold(_mm_set1_ps(0.0), |s, &x| _mm_add_ps(s, x));
            // SAFETY: `out` holds 4 floats.
            unsafe { _mm_storeu_ps(out.as_mut_ptr(), sum) };
            out.iter().sum()
        }
        if !std::arch::is_x86_feature_detected!("fma") {
            return None;
        }
        let iters = 50_000_000 / 12;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            // SAFETY: the host has FMA (checked above).
            let s = unsafe { chains(iters) };
            best = best.min(t.elapsed().as_secs_f64());
            std::hint::black_box(s);
        }
        Some((iters * 12 * 8) as f64 / best / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// `s` with a micro-tile of `mr` rows by `nr` vectors; a cache block of the vector axis
/// is rounded down to a multiple of the new micro-tile's columns.
fn with_micro_tile(s: &Schedule, mr: usize, nr: usize) -> Schedule {
    let mut s = s.clone();
    for st in &mut s.steps {
        match st {
            ScheduleStep::RegisterBlock { factor, .. } => *factor = mr,
            ScheduleStep::Unroll { factor, .. } => *factor = nr,
            _ => {}
        }
    }
    let cols = s.tile_columns();
    for st in &mut s.steps {
        if let ScheduleStep::Tile { size, .. } = st {
            *size = (*size / cols).max(1) * cols;
        }
    }
    s
}

fn main() -> Result<(), codegen::Error> {
    let peak = fma128_peak();
    if let Some(p) = peak {
        println!("f32x4 FMA peak (1 core)        {p:7.2} GFLOP/s");
    }
    let t = targets::Target::host().with_vector_bits(128);
    let n = 1024;
    let (c, h, w) = (64, 56, 56);
    let vec_only = |axis| Schedule { steps: vec![ScheduleStep::Vectorize { axis, lanes: 4 }] };
    for (name, k, flops, vaxis) in [
        ("gemm_f32_1024", matmul(n), 2.0 * (n * n * n) as f64, 1),
        ("conv3x3_64_56", conv(c, h, w), 2.0 * (c * h * w * c * 9) as f64, 3),
    ] {
        let def = search::default_schedule(&k, &t);
        let unpacked = Schedule { steps: def.steps.iter().filter(|s| !matches!(s, ScheduleStep::Tile { .. } | ScheduleStep::Pack { .. })).cloned().collect() };
        for (label, s) in [("naive", Schedule::naive()), ("vectorize only", vec_only(vaxis)), ("unpacked", unpacked), ("default", def.clone())] {
            let g = measure(&k, &s, flops)?;
            let ratio = peak.map_or(String::new(), |p| format!("{:4.2} of peak", g / p));
            println!("{name:14} {label:15} {g:7.2} GFLOP/s {ratio}  [{s}]");
        }
        if let Ok(v) = std::env::var("SCHED_TILES") {
            for tile in v.split(',') {
                let mut it = tile.split('x').filter_map(|x| x.parse::<usize>().ok());
                let (Some(mr), Some(nr)) = (it.next(), it.next()) else { continue };
                let s = with_micro_tile(&def, mr, nr);
                let g = measure(&k, &s, flops)?;
                println!("{name:14} {tile:15} {g:7.2} GFLOP/s   [{s}]");
            }
        }
    }
    #[cfg(feature = "llvm")]
    llvm_rows(n, (c, h, w))?;
    Ok(())
}

/// The LLVM backend on the same workloads: its default schedule (full host vector width),
/// and a vectorized-only one; `LLVM_TILES=MRxNR,...` adds register tiles.
#[cfg(feature = "llvm")]
fn llvm_rows(n: usize, (c, h, w): (usize, usize, usize)) -> Result<(), codegen::Error> {
    use codegen::llvm::{HostTarget, LlvmKernel};
    let lanes = HostTarget::detect().map_or(4, HostTarget::f32_lanes);
    let t = targets::Target::host().with_vector_bits(32 * lanes as u32);
    // The calibrated FMA peak at the LLVM vector width (what `atomc targets --calibrate`
    // measures).
    let peak = targets::calibrate().gflops_at(32 * lanes as u32);
    if let Some(p) = peak {
        println!("f32x{lanes} FMA peak (1 core, calibrated) {p:7.2} GFLOP/s");
    }
    let measure = |k: &Kernel, s: &Schedule, flops: f64| -> Result<f64, codegen::Error> {
        let j = LlvmKernel::compile(k, s)?;
        time(|i, o| j.run(i, o), k, flops)
    };
    for (name, k, flops, vaxis) in [
        ("gemm_f32_1024", matmul(n), 2.0 * (n * n * n) as f64, 1),
        ("conv3x3_64_56", conv(c, h, w), 2.0 * (c * h * w * c * 9) as f64, 3),
    ] {
        let def = search::default_schedule(&k, &t);
        let vec_only = Schedule { steps: vec![ScheduleStep::Vectorize { axis: vaxis, lanes }] };
        let mut rows = vec![("llvm vectorize".to_string(), vec_only), ("llvm default".to_string(), def.clone())];
        if let Ok(v) = std::env::var("LLVM_TILES") {
            for tile in v.split(',') {
                let mut it = tile.split('x').filter_map(|x| x.parse::<usize>().ok());
                let (Some(mr), Some(nr)) = (it.next(), it.next()) else { continue };
                rows.push((format!("llvm {tile}"), with_micro_tile(&def, mr, nr)));
            }
        }
        for (label, s) in rows {
            let g = measure(&k, &s, flops)?;
            let ratio = peak.map_or(String::new(), |p| format!("{:4.2} of peak", g / p));
            println!("{name:14} {label:15} {g:7.2} GFLOP/s {ratio}  [{s}]");
        }
    }
    if let Ok(v) = std::env::var("LLVM_CHANNELS") {
        let dims: Vec<usize> = std::env::var("CONV").unwrap_or_default().split(',').filter_map(|x| x.parse().ok()).collect();
        let (c, h, w) = match dims[..] {
            [c, h, w] => (c, h, w),
            _ => (32, 8, 8),
        };
        let k = conv(c, h, w);
        let flops = 2.0 * (c * h * w * c * 9) as f64;
        let plain = search::default_schedule(&k, &t);
        let g = measure(&k, &plain, flops)?;
        println!("conv3x3_{c}_{h} llvm default {g:7.2} GFLOP/s  [{plain}]");
        for item in v.split(',') {
            let nums: Vec<usize> = item.split([':', 'x']).filter_map(|x| x.parse().ok()).collect();
            let [axis, mr, nr] = nums[..] else { continue };
            let s = Schedule {
                steps: vec![
                    ScheduleStep::Reorder { order: vec![0, 2, 3, 1] },
                    ScheduleStep::Parallel { axes: 3 },
                    ScheduleStep::Vectorize { axis: 3, lanes },
                    ScheduleStep::RegisterBlock { axis, factor: mr },
                    ScheduleStep::Unroll { axis: 3, factor: nr },
                    ScheduleStep::Tile { axis: 3, size: lanes * nr },
                    ScheduleStep::Pack { input: 1 },
                ],
            };
            let g = measure(&k, &s, flops)?;
            println!("conv3x3_{c}_{h} llvm channels {item:8} {g:7.2} GFLOP/s  [{s}]");
        }
    }
    Ok(())
}
