//! Accuracy tests of [`super::vmath`]: each function is JIT-compiled alone, as F32 and as
//! F32X4, with and without FMA, and swept over dense grids, random bit patterns and special
//! values against an f64 reference. The vector and scalar results must agree bit for bit,
//! the error must stay under the bound documented in `vmath.rs`, and the IR has no call.
//! On x86-64 the same IR compiled for plain SSE2 (FMA then by `fmaf` calls) must give the
//! same bits as on the host.

use super::{ffi, vmath};
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Module, default_libcall_names};
use ir::atom::UnaryFn;

extern "C" fn fmaf(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// The optional x86 features Cranelift can use.
const X86_FEATURES: [&str; 19] = [
    "has_sse3",
    "has_ssse3",
    "has_cmpxchg16b",
    "has_sse41",
    "has_sse42",
    "has_avx",
    "has_avx2",
    "has_fma",
    "has_avx_vnni",
    "has_avx512bitalg",
    "has_avx512dq",
    "has_avx512vl",
    "has_avx512vbmi",
    "has_avx512f",
    "has_avx512vnni",
    "has_popcnt",
    "has_bmi1",
    "has_bmi2",
    "has_lzcnt",
];

/// One compiled `fn(src, dst)` computing `f` on one F32 or one F32X4.
struct Jit {
    module: Option<JITModule>,
    code: *const u8,
    ir: String,
    vector: bool,
}

impl Drop for Jit {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            ffi::free(m);
        }
    }
}

impl Jit {
    /// `baseline`: without the host's optional x86 features (plain SSE2, FMA by libcall).
    fn new(f: UnaryFn, vector: bool, fma: bool, baseline: bool) -> Jit {
        let mut flags = settings::builder();
        for (name, value) in [
            ("opt_level", "speed"),
            ("is_pic", "false"),
            ("use_colocated_libcalls", "false"),
        ] {
            flags.set(name, value).unwrap();
        }
        let mut isa = cranelift_native::builder().unwrap();
        if baseline && cfg!(target_arch = "x86_64") {
            for name in X86_FEATURES {
                isa.set(name, "false").unwrap();
            }
        }
        let isa = isa.finish(settings::Flags::new(flags)).unwrap();
        let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
        // Only reached when the host has no FMA instruction.
        jb.symbol("fmaf", fmaf as *const u8);
        let mut module = JITModule::new(jb);
        let ptr = module.target_config().pointer_type();
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        sig.params.push(AbiParam::new(ptr));
        let id = module.declare_anonymous_function(&sig).unwrap();
        let mut ctx = module.make_context();
        ctx.func.signature = sig;
        let mut fctx = FunctionBuilderContext::new();
        let ty = if vector { types::F32X4 } else { types::F32 };
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let block = b.create_block();
            b.append_block_params_for_function_params(block);
            b.switch_to_block(block);
            let (src, dst) = (b.block_params(block)[0], b.block_params(block)[1]);
            let x = b.ins().load(ty, MemFlagsData::new().with_notrap(), src, 0);
            let y = vmath::emit(&mut b, f, x, fma).unwrap();
            b.ins().store(MemFlagsData::new().with_notrap(), y, dst, 0);
            b.ins().return_(&[]);
            b.seal_all_blocks();
            b.finalize(module.target_config());
        }
        let ir = ctx.func.display().to_string();
        module.define_function(id, &mut ctx).unwrap();
        module.clear_context(&mut ctx);
        module.finalize_definitions().unwrap();
        let code = module.get_finalized_function(id);
        Jit {
            module: Some(module),
            code,
            ir,
            vector,
        }
    }

    fn run(&self, xs: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(xs.len());
        let step = if self.vector { 4 } else { 1 };
        for chunk in xs.chunks(step) {
            let mut src = [0.0f32; 4];
            src[..chunk.len()].copy_from_slice(chunk);
            let mut dst = [0.0f32; 4];
            ffi::call_f32x4(self.code, &src, &mut dst);
            out.extend_from_slice(&dst[..chunk.len()]);
        }
        out
    }
}

/// The f64 reference.
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
        UnaryFn::Cosh => x.cosh(),
        other => panic!("no reference for {other:?}"),
    }
}

/// The size of one f32 ulp at `r` (subnormal spacing below the normals; 2^104 above MAX).
fn ulp(r: f64) -> f64 {
    let a = r.abs();
    let e = if a < f64::from(f32::MIN_POSITIVE) {
        -126
    } else {
        (a.log2().floor() as i32).min(127)
    };
    2f64.powi(e - 23)
}

/// Error of `y` against `r` in ulps of `r` (infinity counts as 2^128), and relative error.
fn error(y: f32, r: f64) -> (f64, f64) {
    if r.is_nan() || y.is_nan() {
        return if r.is_nan() && y.is_nan() {
            (0.0, 0.0)
        } else {
            (f64::INFINITY, f64::INFINITY)
        };
    }
    let big = 2f64.powi(128);
    let yn = if y.is_infinite() {
        big.copysign(f64::from(y))
    } else {
        f64::from(y)
    };
    let rn = r.clamp(-big, big);
    let d = (yn - rn).abs();
    // Relative error only where the reference is a normal f32 (subnormals are spaced
    // absolutely).
    let rel = if rn.abs() < f64::from(f32::MIN_POSITIVE) {
        0.0
    } else {
        d / rn.abs()
    };
    (d / ulp(rn), rel)
}

/// A tiny xorshift generator, for reproducible random points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
}

/// Test points: a dense grid over `[lo, hi]`, random bit patterns inside it, and specials.
fn points(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(2 * n + 32);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        v.push((f64::from(lo) + t * (f64::from(hi) - f64::from(lo))) as f32);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    while v.len() < 2 * n {
        let x = f32::from_bits(rng.next());
        if x >= lo && x <= hi {
            v.push(x);
        }
    }
    v.extend([
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        1.0,
        -1.0,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    v
}

/// The sweep's result for one function.
struct Measured {
    ulp: f64,
    rel: f64,
    worst: f32,
}

/// Runs `f` over `xs` (only points in `[lo, hi]` count for the error) in every mode, checks
/// vector == scalar bit for bit and no call, and returns the worst error without and with
/// FMA.
fn sweep(f: UnaryFn, xs: &[f32], lo: f32, hi: f32) -> [Measured; 2] {
    [false, true].map(|fma| {
        let mut m = Measured {
            ulp: 0.0,
            rel: 0.0,
            worst: 0.0,
        };
        let s = Jit::new(f, false, fma, false);
        let v = Jit::new(f, true, fma, false);
        for j in [&s, &v] {
            assert!(
                !j.ir.contains("call"),
                "{f:?} (fma {fma}) emits a call:\n{}",
                j.ir
            );
            assert_eq!(
                j.ir.contains(" fma "),
                fma,
                "{f:?}: fused multiply-adds iff asked for:\n{}",
                j.ir
            );
        }
        let ys = s.run(xs);
        let yv = v.run(xs);
        if cfg!(target_arch = "x86_64") {
            // The same IR on a plain SSE2 x86-64 computes the same bits.
            for vector in [false, true] {
                let yb = Jit::new(f, vector, fma, true).run(xs);
                for ((x, a), b) in xs.iter().zip(&ys).zip(&yb) {
                    assert!(
                        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                        "{f:?}({x:e}) fma {fma} vector {vector}: host {a:e} != SSE2 {b:e}"
                    );
                }
            }
        }
        for ((x, a), b) in xs.iter().zip(&ys).zip(&yv) {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{f:?}({x:e}) fma {fma}: scalar {a:e} != vector {b:e}"
            );
            if !(*x >= lo && *x <= hi) {
                continue;
            }
            let (u, r) = error(*a, reference(f, f64::from(*x)));
            if u > m.ulp {
                m.ulp = u;
                m.worst = *x;
            }
            m.rel = m.rel.max(r);
        }
        m
    })
}

/// Runs one function over its domain and asserts its bounds; prints the measurement.
fn check(f: UnaryFn, lo: f32, hi: f32, extra: &[f32], max_ulp: f64, max_rel: f64) {
    let mut xs = points(lo, hi, 1 << 18);
    xs.extend_from_slice(extra);
    for (m, fma) in sweep(f, &xs, lo, hi).iter().zip([false, true]) {
        eprintln!(
            "{f:?} on [{lo:e}, {hi:e}], fma {fma}: max {:.2} ulp (at {:e}), max relative {:.2e}",
            m.ulp, m.worst, m.rel
        );
        assert!(
            m.ulp <= max_ulp && m.rel <= max_rel,
            "{f:?} fma {fma}: max {:.2} ulp at {:e}, relative {:.2e}",
            m.ulp,
            m.worst,
            m.rel
        );
    }
}

/// `f` at the given points, all modes agreeing (checked by `sweep`), compared bit for bit.
fn specials(f: UnaryFn, cases: &[(f32, f32)]) {
    for fma in [false, true] {
        for vector in [false, true] {
            let j = Jit::new(f, vector, fma, false);
            let xs: Vec<f32> = cases.iter().map(|c| c.0).collect();
            let ys = j.run(&xs);
            for ((x, want), got) in cases.iter().zip(ys) {
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{f:?}({x:e}) fma {fma} vector {vector}: got {got:e}, want {want:e}"
                );
            }
        }
    }
}

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

#[test]
fn exp_accuracy() {
    check(
        UnaryFn::Exp,
        -104.0,
        89.0,
        &[88.72, 88.7228, -87.3, -103.9],
        1.5,
        1.2e-7,
    );
    specials(
        UnaryFn::Exp,
        &[
            (NAN, NAN),
            (INF, INF),
            (-INF, 0.0),
            (89.0, INF),
            (1000.0, INF),
            (-110.0, 0.0),
            (0.0, 1.0),
            (-0.0, 1.0),
        ],
    );
}

#[test]
fn log_accuracy() {
    let near_one: Vec<f32> = (0..1 << 16)
        .map(|i| 0.9 + 0.2 * i as f32 / 65536.0)
        .collect();
    check(UnaryFn::Log, 0.0, f32::MAX, &near_one, 1.5, 1.2e-7);
    specials(
        UnaryFn::Log,
        &[
            (NAN, NAN),
            (0.0, -INF),
            (-0.0, -INF),
            (-1.0, NAN),
            (-INF, NAN),
            (INF, INF),
            (1.0, 0.0),
        ],
    );
}

#[test]
fn tanh_accuracy() {
    check(
        UnaryFn::Tanh,
        -12.0,
        12.0,
        &[0.625, -0.625, 0.6249],
        2.0,
        2e-7,
    );
    specials(
        UnaryFn::Tanh,
        &[
            (NAN, NAN),
            (INF, 1.0),
            (-INF, -1.0),
            (0.0, 0.0),
            (-0.0, -0.0),
        ],
    );
}

#[test]
fn erf_accuracy() {
    check(UnaryFn::Erf, -6.0, 6.0, &[0.875, -0.875, 0.8749], 2.0, 2e-7);
    specials(
        UnaryFn::Erf,
        &[
            (NAN, NAN),
            (INF, 1.0),
            (-INF, -1.0),
            (0.0, 0.0),
            (-0.0, -0.0),
        ],
    );
}

/// Near -4..4, and the f32 in [0.5, 1e4] closest to multiples of pi/2 (found by an
/// exhaustive f64 search: |x - j pi/2| down to 4.2e-9 at x = 252.8982).
fn sin_cos_points() -> Vec<f32> {
    let mut v: Vec<f32> = (0..1 << 16)
        .map(|i| -4.0 + 8.0 * i as f32 / 65536.0)
        .collect();
    for bits in [
        0x437c_e5f1_u32,
        0x43fc_e5f1,
        0x4096_cbe4,
        0x447c_e5f1,
        0x4116_cbe4,
        0x44fc_e5f1,
        0x4162_31d6,
        0x3fc9_0fdb,
        0x4196_cbe4,
        0x450b_e628,
        0x41bc_7edd,
        0x457c_e5f1,
    ] {
        let x = f32::from_bits(bits);
        v.extend([x, -x, f32::from_bits(bits + 1), f32::from_bits(bits - 1)]);
    }
    v
}

#[test]
fn sin_accuracy() {
    let small = sin_cos_points();
    check(UnaryFn::Sin, -1e4, 1e4, &small, 3.0, 3e-7);
    specials(
        UnaryFn::Sin,
        &[
            (NAN, NAN),
            (INF, NAN),
            (-INF, NAN),
            (0.0, 0.0),
            (-0.0, -0.0),
        ],
    );
}

#[test]
fn cos_accuracy() {
    let small = sin_cos_points();
    check(UnaryFn::Cos, -1e4, 1e4, &small, 3.0, 3e-7);
    specials(
        UnaryFn::Cos,
        &[(NAN, NAN), (INF, NAN), (-INF, NAN), (0.0, 1.0), (-0.0, 1.0)],
    );
}

#[test]
fn tan_accuracy() {
    let small = sin_cos_points();
    check(UnaryFn::Tan, -1e4, 1e4, &small, 4.0, 5e-7);
    specials(
        UnaryFn::Tan,
        &[
            (NAN, NAN),
            (INF, NAN),
            (-INF, NAN),
            (0.0, 0.0),
            (-0.0, -0.0),
        ],
    );
}

#[test]
fn atan_accuracy() {
    let cuts = [0.414_213_57, 0.414_213_6, 2.414_213_7, 2.414_214, 1.0, -1.0];
    check(UnaryFn::Atan, f32::MIN, f32::MAX, &cuts, 2.5, 2e-7);
    let pio2 = std::f32::consts::FRAC_PI_2;
    specials(
        UnaryFn::Atan,
        &[
            (NAN, NAN),
            (INF, pio2),
            (-INF, -pio2),
            (0.0, 0.0),
            (-0.0, -0.0),
        ],
    );
}

#[test]
fn sinh_accuracy() {
    check(
        UnaryFn::Sinh,
        -90.0,
        90.0,
        &[1.0, -1.0, 0.9999, 89.4, 89.41],
        2.0,
        2e-7,
    );
    specials(
        UnaryFn::Sinh,
        &[
            (NAN, NAN),
            (INF, INF),
            (-INF, -INF),
            (0.0, 0.0),
            (-0.0, -0.0),
            (90.0, INF),
        ],
    );
}

#[test]
fn cosh_accuracy() {
    check(UnaryFn::Cosh, -90.0, 90.0, &[89.4, 89.41, -89.4], 2.0, 2e-7);
    specials(
        UnaryFn::Cosh,
        &[
            (NAN, NAN),
            (INF, INF),
            (-INF, INF),
            (0.0, 1.0),
            (-0.0, 1.0),
            (-90.0, INF),
        ],
    );
}

#[test]
fn other_functions_and_types_have_no_polynomial() {
    let mut func = cranelift_codegen::ir::Function::new();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let block = b.create_block();
    b.switch_to_block(block);
    let x = b.ins().f32const(1.0);
    assert!(vmath::emit(&mut b, UnaryFn::Sqrt, x, false).is_none());
    assert!(vmath::emit(&mut b, UnaryFn::Asin, x, false).is_none());
    let d = b.ins().f64const(1.0);
    assert!(vmath::emit(&mut b, UnaryFn::Exp, d, false).is_none());
}
