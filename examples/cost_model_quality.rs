//! How well the analytic cost model (`search::cost::predict`) ranks schedules: samples
//! candidate schedules of GEMMs, 3x3 convolutions (guarded, and over inputs padded
//! beforehand with their Winograd candidate always among the samples), a depthwise convolution, softmax-like
//! reductions (along and across rows) and elementwise kernels, measures each (compiled by the JIT,
//! run on the runtime's thread pool), and prints Spearman's rank correlation between
//! predicted and measured time, per kernel and over all samples (ranks within a kernel,
//! pooled as ranks of time relative to the kernel's fastest).
//!
//! `cargo run --release --example cost_model_quality [-- --threads N --per-kernel N --verbose --only NAME]`

use anyhow::{Context, Result, bail};
use atomc::tune::measure;
use ir::DType;
use ir::atom::{BinaryFn, ReduceFn, UnaryFn};
use ir::kernel::{Affine, Body, Buffer, Expr, KGuard, Kernel};
use runtime::{KernelBuffers, ThreadPool};
use search::Space;
use search::cost::{predict, spearman};
use std::time::Duration;

fn buf(name: &str, numel: usize) -> Buffer {
    Buffer { name: name.into(), dtype: DType::F32, numel }
}

fn load(buf: usize, offset: i64, coefs: &[i64], guards: Vec<KGuard>) -> Expr {
    Expr::Load { buf, index: Affine { offset, coefs: coefs.to_vec() }, guards, pad: 0.0 }
}

fn mul(a: Expr, b: Expr) -> Expr {
    Expr::Binary(BinaryFn::Mul, Box::new(a), Box::new(b))
}

/// c[m, n] = sum_k a[m, k] b[k, n].
fn gemm(m: usize, kk: usize, n: usize) -> Kernel {
    Kernel {
        name: format!("gemm_{m}x{kk}x{n}"),
        inputs: vec![buf("a", m * kk), buf("b", kk * n)],
        output: buf("c", m * n),
        out_shape: vec![m, n],
        red_shape: vec![kk],
        store: Affine { offset: 0, coefs: vec![n as i64, 1] },
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: mul(load(0, 0, &[kk as i64, 0, 1], vec![]), load(1, 0, &[0, 1, n as i64], vec![])),
            epilogue: Expr::Acc,
        },
    }
}

/// y[0, co, h, w] = sum_{ci, kh, kw} x[ci, h+kh-1, w+kw-1] w[co, ci, kh, kw] (pad 1), then
/// relu.
fn conv3x3(c: usize, h: usize, w: usize) -> Kernel {
    let (c_, h_, w_) = (c as i64, h as i64, w as i64);
    let guards = vec![
        KGuard { expr: Affine { offset: -1, coefs: vec![0, 0, 1, 0, 0, 1, 0] }, bound: h_ },
        KGuard { expr: Affine { offset: -1, coefs: vec![0, 0, 0, 1, 0, 0, 1] }, bound: w_ },
    ];
    let x = load(0, -w_ - 1, &[0, 0, w_, 1, h_ * w_, w_, 1], guards);
    let wt = load(1, 0, &[0, c_ * 9, 0, 0, 9, 3, 1], vec![]);
    let relu = Expr::Binary(BinaryFn::Max, Box::new(Expr::Acc), Box::new(Expr::Const { value: 0.0, dtype: DType::F32 }));
    Kernel {
        name: format!("conv3x3_{c}x{h}x{w}"),
        inputs: vec![buf("x", c * h * w), buf("w", c * c * 9)],
        output: buf("y", c * h * w),
        out_shape: vec![1, c, h, w],
        red_shape: vec![c, 3, 3],
        store: Affine { offset: 0, coefs: vec![c_ * h_ * w_, h_ * w_, w_, 1] },
        body: Body::Compute { reduce: Some(ReduceFn::Sum), body: mul(x, wt), epilogue: relu },
    }
}

/// y[c, h, w] = sum_{kh, kw} x[c, h+kh-1, w+kw-1] w[c, kh, kw] (pad 1).
/// A 3x3 conv of `c` into `k` channels over an input padded beforehand (`h + 2` x `w + 2`,
/// no guards), bias and ReLU: the shape ResNet's 3x3 convs take after `ir::padding`, which a
/// Winograd schedule runs.
fn padded_conv3x3(k: usize, c: usize, h: usize, w: usize) -> Kernel {
    let (k_, c_, h_, w_) = (k as i64, c as i64, h as i64, w as i64);
    let (ph, pw) = (h_ + 2, w_ + 2);
    let biased = Expr::Binary(BinaryFn::Add, Box::new(Expr::Acc), Box::new(load(2, 0, &[0, 1, 0, 0], vec![])));
    Kernel {
        name: format!("padded_conv3x3_{k}x{c}x{h}x{w}"),
        inputs: vec![buf("x", (c_ * ph * pw) as usize), buf("w", k * c * 9), buf("bias", k)],
        output: buf("y", k * h * w),
        out_shape: vec![1, k, h, w],
        red_shape: vec![c, 3, 3],
        store: Affine { offset: 0, coefs: vec![k_ * h_ * w_, h_ * w_, w_, 1] },
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: mul(load(0, 0, &[0, 0, pw, 1, ph * pw, pw, 1], vec![]), load(1, 0, &[0, c_ * 9, 0, 0, 9, 3, 1], vec![])),
            epilogue: Expr::Binary(BinaryFn::Max, Box::new(biased), Box::new(Expr::Const { value: 0.0, dtype: DType::F32 })),
        },
    }
}

fn depthwise(c: usize, h: usize, w: usize) -> Kernel {
    let (h_, w_) = (h as i64, w as i64);
    let guards = vec![
        KGuard { expr: Affine { offset: -1, coefs: vec![0, 1, 0, 1, 0] }, bound: h_ },
        KGuard { expr: Affine { offset: -1, coefs: vec![0, 0, 1, 0, 1] }, bound: w_ },
    ];
    let x = load(0, -w_ - 1, &[h_ * w_, w_, 1, w_, 1], guards);
    let wt = load(1, 0, &[9, 0, 0, 3, 1], vec![]);
    Kernel {
        name: format!("depthwise_{c}x{h}x{w}"),
        inputs: vec![buf("x", c * h * w), buf("w", c * 9)],
        output: buf("y", c * h * w),
        out_shape: vec![c, h, w],
        red_shape: vec![3, 3],
        store: Affine { offset: 0, coefs: vec![h_ * w_, w_, 1] },
        body: Body::Compute { reduce: Some(ReduceFn::Sum), body: mul(x, wt), epilogue: Expr::Acc },
    }
}

/// s[r, 0] = sum_j exp(x[r, j] - m[r]) (the denominator of a softmax over rows).
fn softmax_sum(rows: usize, cols: usize) -> Kernel {
    let x = load(0, 0, &[cols as i64, 0, 1], vec![]);
    let m = load(1, 0, &[1, 0, 0], vec![]);
    let body = Expr::Unary(UnaryFn::Exp, Box::new(Expr::Binary(BinaryFn::Sub, Box::new(x), Box::new(m))));
    Kernel {
        name: format!("softmax_sum_{rows}x{cols}"),
        inputs: vec![buf("x", rows * cols), buf("m", rows)],
        output: buf("s", rows),
        out_shape: vec![rows, 1],
        red_shape: vec![cols],
        store: Affine { offset: 0, coefs: vec![1, 1] },
        body: Body::Compute { reduce: Some(ReduceFn::Sum), body, epilogue: Expr::Acc },
    }
}

/// s[0, c] = sum_r exp(x[r, c]) (a reduction over rows: the output is contiguous).
fn column_sum(rows: usize, cols: usize) -> Kernel {
    let x = load(0, 0, &[0, 1, cols as i64], vec![]);
    Kernel {
        name: format!("column_expsum_{rows}x{cols}"),
        inputs: vec![buf("x", rows * cols)],
        output: buf("s", cols),
        out_shape: vec![1, cols],
        red_shape: vec![rows],
        store: Affine { offset: 0, coefs: vec![0, 1] },
        body: Body::Compute { reduce: Some(ReduceFn::Sum), body: Expr::Unary(UnaryFn::Exp, Box::new(x)), epilogue: Expr::Acc },
    }
}

/// y[a, b, c] = x[a, b, c] * s[b] (a 3-D elementwise kernel with a broadcast).
fn scale3(a: usize, b: usize, c: usize) -> Kernel {
    let (b_, c_) = (b as i64, c as i64);
    let body = mul(load(0, 0, &[b_ * c_, c_, 1], vec![]), load(1, 0, &[0, 1, 0], vec![]));
    Kernel {
        name: format!("scale_{a}x{b}x{c}"),
        inputs: vec![buf("x", a * b * c), buf("s", b)],
        output: buf("y", a * b * c),
        out_shape: vec![a, b, c],
        red_shape: vec![],
        store: Affine { offset: 0, coefs: vec![b_ * c_, c_, 1] },
        body: Body::Compute { reduce: None, body, epilogue: Expr::Acc },
    }
}

/// y[a, b] = tanh(x[a, b]) * g[b] + r[a, b].
fn elementwise(a: usize, b: usize) -> Kernel {
    let x = load(0, 0, &[b as i64, 1], vec![]);
    let g = load(1, 0, &[0, 1], vec![]);
    let r = load(2, 0, &[b as i64, 1], vec![]);
    let body = Expr::Binary(BinaryFn::Add, Box::new(mul(Expr::Unary(UnaryFn::Tanh, Box::new(x)), g)), Box::new(r));
    Kernel {
        name: format!("elementwise_{a}x{b}"),
        inputs: vec![buf("x", a * b), buf("g", b), buf("r", a * b)],
        output: buf("y", a * b),
        out_shape: vec![a, b],
        red_shape: vec![],
        store: Affine { offset: 0, coefs: vec![b as i64, 1] },
        body: Body::Compute { reduce: None, body, epilogue: Expr::Acc },
    }
}

fn arg(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).with_context(|| format!("{name} needs a value"))?.parse().with_context(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads = arg(&args, "--threads", std::thread::available_parallelism().map_or(1, |n| n.get()))?;
    let per_kernel = arg(&args, "--per-kernel", 80)?;
    let verbose = args.iter().any(|a| a == "--verbose");
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    if threads == 0 || per_kernel < 2 {
        bail!("--threads must be at least 1 and --per-kernel at least 2");
    }
    let pool = ThreadPool::new(threads)?;
    let target = runtime::jit_target(threads);
    let kernels = [
        gemm(256, 256, 256),
        gemm(64, 512, 96),
        conv3x3(32, 28, 28),
        conv3x3(64, 40, 40),
        padded_conv3x3(16, 16, 16, 16),
        padded_conv3x3(32, 32, 8, 8),
        padded_conv3x3(8, 2, 16, 16),
        depthwise(64, 56, 56),
        softmax_sum(512, 384),
        column_sum(256, 512),
        elementwise(256, 1024),
        scale3(16, 64, 256),
    ];
    let (mut all_pred, mut all_meas) = (Vec::new(), Vec::new());
    let mut total = 0;
    println!("{:<24} {:>8} {:>9}  {:<50} model's pick (measured / fastest)", "kernel", "samples", "spearman", "fastest measured");
    for k in kernels.iter().filter(|k| only.as_ref().is_none_or(|o| k.name.contains(o.as_str()))) {
        let candidates = Space::of(k, &target).candidates();
        // An even sample over the space's order (which varies every knob).
        let step = candidates.len().div_ceil(per_kernel).max(1);
        let winograd = candidates.iter().find(|s| s.winograd()).cloned();
        let mut sample: Vec<_> = candidates.into_iter().step_by(step).collect();
        // The one Winograd candidate, always.
        if let Some(w) = winograd.filter(|w| !sample.contains(w)) {
            sample.push(w);
        }
        let mut buffers = KernelBuffers::new(k)?;
        buffers.fill(1);
        let (mut pred, mut meas, mut scheds) = (Vec::new(), Vec::new(), Vec::new());
        for s in sample {
            let jit = codegen::JitKernel::compile(k, &s)?;
            let Some((t, _)) = measure(|| buffers.run(k, &jit, &pool).is_ok(), Duration::from_millis(15)) else {
                bail!("kernel {} failed under {s}", k.name);
            };
            pred.push(predict(k, &s, &target));
            meas.push(t);
            scheds.push(s);
        }
        if verbose {
            for ((p, m), s) in pred.iter().zip(&meas).zip(&scheds) {
                println!("    predicted {:>10.1} us  measured {:>10.1} us  {s}", p * 1e6, m * 1e6);
            }
        }
        let rho = spearman(&pred, &meas).unwrap_or(f64::NAN);
        let fastest = meas.iter().copied().fold(f64::INFINITY, f64::min);
        let best_i = (0..meas.len()).min_by(|&a, &b| meas[a].total_cmp(&meas[b])).unwrap_or(0);
        let pick_i = (0..pred.len()).min_by(|&a, &b| pred[a].total_cmp(&pred[b])).unwrap_or(0);
        println!(
            "{:<24} {:>8} {:>9.3}  {:<50} {} ({:.2}x)",
            k.name,
            meas.len(),
            rho,
            format!("{} {:.1} us", scheds[best_i], fastest * 1e6),
            scheds[pick_i],
            meas[pick_i] / fastest
        );
        total += meas.len();
        // Pooled: times relative to the kernel's fastest (measured and predicted).
        let pred_min = pred.iter().copied().fold(f64::INFINITY, f64::min);
        all_pred.extend(pred.iter().map(|p| p / pred_min));
        all_meas.extend(meas.iter().map(|m| m / fastest));
    }
    let rho = spearman(&all_pred, &all_meas).unwrap_or(f64::NAN);
    println!("overall: {total} schedules, spearman {rho:.3} (relative to each kernel's fastest), {threads} threads");
    Ok(())
}
