//! The device math of `dmath.rs` against the reference's functions: elementwise kernels
//! compiled for the GPU and emulated on the host (`nvptx::emulate`), over ranges and the
//! special values, with the error bounds documented in `dmath.rs`.

use super::nvptx::{self, GpuKernel, emulate};
use ir::atom::{BinaryFn, UnaryFn};
use ir::dtype::DType;
use ir::kernel::{Affine, Body, Buffer, Expr, Kernel};
use ir::schedule::{Schedule, ScheduleStep};

type R = std::result::Result<(), Box<dyn std::error::Error>>;
/// A reference function.
type F64Fn = fn(f64) -> f64;
type F32Fn = fn(f32) -> f32;

fn load(buf: usize) -> Expr {
    Expr::Load { buf, index: Affine { offset: 0, coefs: vec![1] }, guards: vec![], pad: 0.0 }
}

/// `y[i] = body(x0[i], x1[i], ...)` over `n` points, `inputs` buffers, every value of `d`.
fn kernel(body: Expr, d: DType, inputs: usize, n: usize) -> Kernel {
    let buf = |name: &str| Buffer { name: name.into(), dtype: d, numel: n };
    Kernel {
        name: "dmath".into(),
        inputs: (0..inputs).map(|i| buf(&format!("x{i}"))).collect(),
        output: buf("y"),
        out_shape: vec![n],
        red_shape: vec![],
        store: Affine { offset: 0, coefs: vec![1] },
        body: Body::Compute { reduce: None, body, epilogue: Expr::Acc },
    }
}

fn gpu() -> Schedule {
    Schedule { steps: vec![ScheduleStep::GpuThreads { block: 64 }] }
}

/// Runs `y[i] = body(x0[i], x1[i], ...)` on the emulated GPU, every value of dtype `d`.
fn run(body: Expr, d: DType, columns: &[&[f64]]) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let n = columns.first().map_or(0, |c| c.len());
    let k = kernel(body, d, columns.len(), n);
    let j = emulate(&k, &gpu())?;
    let bytes = |v: &[f64]| -> Vec<u8> {
        v.iter()
            .flat_map(|&x| if d == DType::F64 { x.to_ne_bytes().to_vec() } else { (x as f32).to_ne_bytes().to_vec() })
            .collect()
    };
    let data: Vec<Vec<u8>> = columns.iter().map(|c| bytes(c)).collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut out = vec![0u8; n * d.size()];
    j.run(&refs, &mut out)?;
    Ok(if d == DType::F64 {
        out.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))).collect()
    } else {
        out.chunks_exact(4).map(|c| f64::from(f32::from_ne_bytes(c.try_into().unwrap_or([0; 4])))).collect()
    })
}

/// The distance in ulps of f32 (or f64) values: 0 for two NaNs, MAX for one.
fn ulps(a: f64, b: f64, d: DType) -> u64 {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() && b.is_nan() { 0 } else { u64::MAX };
    }
    let ord = |x: f64| -> i128 {
        let (bits, sign, mag) = if d == DType::F64 {
            let b = x.to_bits();
            (b, b >> 63, i128::from(b & !(1 << 63)))
        } else {
            let b = u64::from((x as f32).to_bits());
            (b, b >> 31, i128::from(b & 0x7fff_ffff))
        };
        let _ = bits;
        if sign == 1 { -mag } else { mag }
    };
    u64::try_from((ord(a) - ord(b)).unsigned_abs()).unwrap_or(u64::MAX)
}

/// `2^k` for k in [-1074, 1023] (`powi` overflows on the way to the subnormals).
fn pow2(k: i32) -> f64 {
    if k < -1000 { 2f64.powi(k + 100) * 2f64.powi(-100) } else { 2f64.powi(k) }
}

/// A deterministic sequence in [0, 1).
fn uniform(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// `n` values log-spaced over [lo, hi] (both positive).
fn log_spaced(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    uniform(n, seed).into_iter().map(|u| (lo.ln() + u * (hi.ln() - lo.ln())).exp()).collect()
}

/// How many of `got` are more than `bound` ulps from `want` (the first few are printed,
/// and the worst distance of the others).
fn check(what: &str, d: DType, inputs: &[&[f64]], got: &[f64], want: impl Fn(usize) -> f64, bound: u64) -> usize {
    let (mut worst, mut bad) = (0, 0);
    for (i, g) in got.iter().enumerate() {
        let w = want(i);
        let e = ulps(*g, w, d);
        if e > bound {
            bad += 1;
            if bad <= 5 {
                let args: Vec<f64> = inputs.iter().map(|c| c[i]).collect();
                eprintln!("{what}{args:?}: got {g:e}, want {w:e} ({e} ulp > {bound})");
            }
        } else {
            worst = worst.max(e);
        }
    }
    eprintln!("{what}: {} points, {bad} beyond {bound} ulp, worst of the others {worst} ulp", got.len());
    bad
}

fn unary(f: UnaryFn) -> Expr {
    Expr::Unary(f, Box::new(load(0)))
}

fn binary(f: BinaryFn) -> Expr {
    Expr::Binary(f, Box::new(load(0)), Box::new(load(1)))
}

/// The f32 values of `v` (so the reference sees what the kernel reads).
fn f32s(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|x| f64::from(x as f32)).collect()
}

const SPECIAL: [f64; 8] = [0.0, -0.0, 1.0, -1.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 0.5];

#[test]
fn f32_inverse_trig_and_hyperbolic_functions_match_the_reference() -> R {
    let signed = |mut v: Vec<f64>| {
        let neg: Vec<f64> = v.iter().map(|x| -x).collect();
        v.extend(neg);
        v.extend(SPECIAL);
        f32s(v)
    };
    // Against the f64 functions rounded once: the reference's `f32::acosh` and `f32::atanh`
    // are themselves up to 23 ulp off (near 1), while these round an f64 result once.
    let cases: [(UnaryFn, F64Fn, Vec<f64>, u64); 5] = [
        (UnaryFn::Asin, f64::asin, signed(uniform(20000, 1).into_iter().chain(log_spaced(2000, 1e-30, 1.0, 2)).collect()), 3),
        (UnaryFn::Acos, f64::acos, signed(uniform(20000, 3).into_iter().chain(log_spaced(2000, 1e-30, 1.0, 4)).collect()), 3),
        (UnaryFn::Asinh, f64::asinh, signed(log_spaced(20000, 1e-40, 3e38, 5)), 1),
        (UnaryFn::Acosh, f64::acosh, signed(log_spaced(20000, 1.0, 3e38, 6).into_iter().map(|x| x.max(1.0)).collect()), 1),
        (UnaryFn::Atanh, f64::atanh, signed(uniform(20000, 7).into_iter().chain(log_spaced(2000, 1e-40, 1.0, 8)).collect()), 1),
    ];
    let mut bad = 0;
    for (f, reference, xs, bound) in cases {
        let got = run(unary(f), DType::F32, &[&xs])?;
        bad += check(f.name(), DType::F32, &[&xs], &got, |i| f64::from(reference(xs[i]) as f32), bound);
    }
    assert_eq!(bad, 0, "results beyond the bounds");
    Ok(())
}

#[test]
fn f32_sin_cos_and_tan_of_large_arguments_match_the_reference() -> R {
    let mut xs = log_spaced(20000, 1e4, 3.4e38, 9);
    xs.extend(log_spaced(2000, 1e-3, 1e4, 10));
    let neg: Vec<f64> = xs.iter().map(|x| -x).collect();
    xs.extend(neg);
    // Close to multiples of pi/2 (the hardest reductions of f32).
    xs.extend([1.657_999_3e10, 2.017_789e15, 5.0e9, 1.0e5, 3.402_823_5e38, 16_777_216.0, 1.0e4]);
    xs.extend(SPECIAL);
    let xs = f32s(xs);
    let cases: [(UnaryFn, F32Fn, u64); 3] = [(UnaryFn::Sin, f32::sin, 2), (UnaryFn::Cos, f32::cos, 2), (UnaryFn::Tan, f32::tan, 4)];
    let mut bad = 0;
    for (f, reference, bound) in cases {
        let got = run(unary(f), DType::F32, &[&xs])?;
        bad += check(f.name(), DType::F32, &[&xs], &got, |i| f64::from(reference(xs[i] as f32)), bound);
    }
    assert_eq!(bad, 0, "results beyond the bounds");
    Ok(())
}

#[test]
fn f32_pow_and_fmod_match_the_reference() -> R {
    let n = 20000;
    let mut a = log_spaced(n, 1e-3, 1e3, 11);
    let mut b: Vec<f64> = uniform(n, 12).into_iter().map(|u| u * 24.0 - 12.0).collect();
    // Negative bases with integer exponents, and every pair of special values.
    for (i, u) in uniform(2000, 13).into_iter().enumerate() {
        a.push(-(u * 10.0));
        b.push((i % 21) as f64 - 10.0);
    }
    let specials = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1.5, -2.5];
    for x in specials {
        for y in specials {
            a.push(x);
            b.push(y);
        }
    }
    let (a, b) = (f32s(a), f32s(b));
    let got = run(binary(BinaryFn::Pow), DType::F32, &[&a, &b])?;
    let mut bad = check("pow", DType::F32, &[&a, &b], &got, |i| f64::from((a[i] as f32).powf(b[i] as f32)), 1);
    // fmod: quotients from below 1 to 2^270, signs, and the special values.
    let m = uniform(n, 14);
    let e = uniform(n, 15);
    let mut x: Vec<f64> = m.iter().zip(&e).enumerate().map(|(i, (m, e))| (1.0 + m) * 2f64.powi((e * 250.0) as i32 - 125) * if i % 3 == 0 { -1.0 } else { 1.0 }).collect();
    let mut y: Vec<f64> = uniform(n, 16).iter().zip(uniform(n, 17)).enumerate().map(|(i, (m, e))| (1.0 + m) * 2f64.powi((e * 250.0) as i32 - 125) * if i % 5 == 0 { -1.0 } else { 1.0 }).collect();
    y.iter_mut().step_by(7).for_each(|v| *v = 1e-45);
    for s in specials {
        for t in specials {
            x.push(s);
            y.push(t);
        }
    }
    let (x, y) = (f32s(x), f32s(y));
    let got = run(binary(BinaryFn::Fmod), DType::F32, &[&x, &y])?;
    bad += check("fmod", DType::F32, &[&x, &y], &got, |i| f64::from((x[i] as f32) % (y[i] as f32)), 0);
    assert_eq!(bad, 0, "results beyond the bounds");
    Ok(())
}

#[test]
fn f64_inverse_trig_and_hyperbolic_functions_match_the_reference() -> R {
    let signed = |mut v: Vec<f64>| {
        let neg: Vec<f64> = v.iter().map(|x| -x).collect();
        v.extend(neg);
        v.extend(SPECIAL);
        v
    };
    let unit = || signed(uniform(20000, 31).into_iter().chain(log_spaced(2000, 1e-300, 1.0, 32)).collect());
    let mut erf_args: Vec<f64> = uniform(20000, 39).into_iter().map(|u| u * 7.0).collect();
    erf_args.extend(log_spaced(2000, 1e-300, 1e300, 40));
    erf_args.extend([1.5, 1.5 - 1e-15, 1.5 + 1e-15, 5.9, 6.0]);
    let cases: [(UnaryFn, F64Fn, Vec<f64>, u64); 10] = [
        (UnaryFn::Erf, libm::erf, signed(erf_args), 2),
        (UnaryFn::Atan, f64::atan, signed(log_spaced(20000, 1e-300, 1e20, 33)), 2),
        (UnaryFn::Asin, f64::asin, unit(), 2),
        (UnaryFn::Acos, f64::acos, unit(), 2),
        (UnaryFn::Sinh, f64::sinh, signed(log_spaced(20000, 1e-300, 720.0, 34)), 4),
        (UnaryFn::Cosh, f64::cosh, signed(log_spaced(20000, 1e-300, 720.0, 35)), 4),
        (UnaryFn::Tanh, f64::tanh, signed(log_spaced(20000, 1e-300, 40.0, 36)), 4),
        (UnaryFn::Asinh, f64::asinh, signed(log_spaced(20000, 1e-300, 1e300, 37)), 4),
        (UnaryFn::Acosh, f64::acosh, signed(log_spaced(20000, 1.0, 1e300, 38)), 4),
        // Rust's `f64::atanh` takes `ln_1p(2x / (1 - x))` of a negative x too, up to 40 ulp
        // off near -1; the odd extension of its positive half is the C library's.
        (UnaryFn::Atanh, |x: f64| f64::atanh(x.abs()).copysign(x), unit(), 4),
    ];
    let mut bad = 0;
    for (f, reference, xs, bound) in cases {
        let got = run(unary(f), DType::F64, &[&xs])?;
        bad += check(&format!("{} f64", f.name()), DType::F64, &[&xs], &got, |i| reference(xs[i]), bound);
    }
    assert_eq!(bad, 0, "results beyond the bounds");
    Ok(())
}

#[test]
fn f64_sin_cos_and_tan_match_the_reference_over_the_whole_range() -> R {
    let mut xs = log_spaced(20000, 1e-300, 1e4, 41);
    xs.extend(log_spaced(20000, 1e4, 1.7e308, 42));
    let neg: Vec<f64> = xs.iter().map(|x| -x).collect();
    xs.extend(neg);
    // Close to multiples of pi/2 (hard reductions), and the specials.
    xs.extend([6.381_956_970_095_103e299, 5.319_372_648_326_092e255, std::f64::consts::FRAC_PI_2, std::f64::consts::PI, 1e22, f64::MAX]);
    xs.extend(SPECIAL);
    let cases: [(UnaryFn, F64Fn, u64); 3] = [(UnaryFn::Sin, f64::sin, 2), (UnaryFn::Cos, f64::cos, 2), (UnaryFn::Tan, f64::tan, 4)];
    let mut bad = 0;
    for (f, reference, bound) in cases {
        let got = run(unary(f), DType::F64, &[&xs])?;
        bad += check(&format!("{} f64", f.name()), DType::F64, &[&xs], &got, |i| reference(xs[i]), bound);
    }
    assert_eq!(bad, 0, "results beyond the bounds");
    Ok(())
}

#[test]
fn f64_exp_log_pow_and_fmod_match_the_reference() -> R {
    let n = 20000;
    let mut xs: Vec<f64> = uniform(n, 21).into_iter().map(|u| u * 1455.0 - 745.0).collect();
    xs.extend(SPECIAL);
    xs.extend([709.78, 709.79, -745.2, -708.5, 1e-300]);
    let got = run(unary(UnaryFn::Exp), DType::F64, &[&xs])?;
    let mut bad = check("exp f64", DType::F64, &[&xs], &got, |i| xs[i].exp(), 1);
    let mut xs = log_spaced(n, 4.9e-324, 1.7e308, 22);
    xs.extend(SPECIAL);
    xs.extend([-1.0, 5e-324, f64::MAX, 1.0 + f64::EPSILON, 1.0 - f64::EPSILON]);
    let got = run(unary(UnaryFn::Log), DType::F64, &[&xs])?;
    bad += check("log f64", DType::F64, &[&xs], &got, |i| xs[i].ln(), 1);
    // pow: a relative error of 2^-52 (1 + |b ln a|); powers of two exactly.
    let mut a = log_spaced(n, 1e-3, 1e3, 23);
    let mut b: Vec<f64> = uniform(n, 24).into_iter().map(|u| u * 80.0 - 40.0).collect();
    for k in -1100..1100 {
        a.push(2.0);
        b.push(f64::from(k));
        a.push(0.25);
        b.push(f64::from(k) / 2.0);
    }
    let got = run(binary(BinaryFn::Pow), DType::F64, &[&a, &b])?;
    let mut worst = 0.0f64;
    for (i, g) in got.iter().enumerate() {
        let w = a[i].powf(b[i]);
        let rel = ((g - w) / w).abs();
        let bound = f64::EPSILON * (1.0 + (b[i] * a[i].ln()).abs());
        let exact = a[i].log2().fract() == 0.0 && (b[i] * a[i].log2()).fract() == 0.0;
        assert!(if exact { *g == w } else { rel <= bound }, "pow({}, {}): got {g:e}, want {w:e}", a[i], b[i]);
        worst = worst.max(rel / bound);
    }
    eprintln!("pow f64: {} points, worst {worst:.3} of the bound", got.len());
    // fmod: exponents over the whole range, subnormals included.
    let m = uniform(n, 25);
    let x: Vec<f64> = m.iter().zip(uniform(n, 26)).map(|(m, e)| (1.0 + m) * pow2((e * 2090.0) as i32 - 1070)).collect();
    let y: Vec<f64> = uniform(n, 27).iter().zip(uniform(n, 28)).enumerate().map(|(i, (m, e))| (1.0 + m) * pow2((e * 2090.0) as i32 - 1070) * if i % 2 == 0 { -1.0 } else { 1.0 }).collect();
    let got = run(binary(BinaryFn::Fmod), DType::F64, &[&x, &y])?;
    bad += check("fmod f64", DType::F64, &[&x, &y], &got, |i| x[i] % y[i], 0);
    assert_eq!(bad, 0, "results beyond the bounds");
    Ok(())
}

#[test]
fn every_device_function_compiles_to_ptx_that_ptxas_accepts() -> R {
    let f32_unary = [UnaryFn::Asin, UnaryFn::Acos, UnaryFn::Asinh, UnaryFn::Acosh, UnaryFn::Atanh, UnaryFn::Sin, UnaryFn::Cos, UnaryFn::Tan];
    let f64_unary = [
        UnaryFn::Exp,
        UnaryFn::Log,
        UnaryFn::Atan,
        UnaryFn::Asin,
        UnaryFn::Acos,
        UnaryFn::Sinh,
        UnaryFn::Cosh,
        UnaryFn::Tanh,
        UnaryFn::Asinh,
        UnaryFn::Acosh,
        UnaryFn::Atanh,
        UnaryFn::Sin,
        UnaryFn::Cos,
        UnaryFn::Tan,
        UnaryFn::Erf,
    ];
    let mut kernels = Vec::new();
    for f in f32_unary {
        kernels.push(kernel(unary(f), DType::F32, 1, 100));
    }
    for f in f64_unary {
        kernels.push(kernel(unary(f), DType::F64, 1, 100));
    }
    for d in [DType::F32, DType::F64] {
        for f in [BinaryFn::Pow, BinaryFn::Fmod] {
            kernels.push(kernel(binary(f), d, 2, 100));
        }
    }
    let s = gpu();
    let gpu_kernels: Vec<GpuKernel<'_>> =
        kernels.iter().enumerate().map(|(i, k)| GpuKernel { entry: format!("k{i}"), kernel: k, schedule: &s }).collect();
    let ptxas = nvptx::find_ptxas();
    for g in nvptx::GPUS {
        let m = nvptx::compile_ptx(&gpu_kernels, g)?;
        assert_eq!(m.launches.len(), kernels.len());
        match &ptxas {
            Some(p) => nvptx::run_ptxas(p, &m.ptx, g)?,
            None => eprintln!("skipping ptxas: not found (set ATOMC_PTXAS, ATOMC_VENV or ATOMC_CACHE)"),
        }
    }
    Ok(())
}
