//! Device math: what the CPU code gets from host helpers (the reference's Rust or C
//! library functions), emitted inline as scalar LLVM IR for the GPU, where there are no
//! host helpers. f64 exp, log and atan follow fdlibm (`e_exp.c`, `e_log.c`, `s_atan.c`:
//! same reduction and coefficients, written as their bits); the other f64 functions are
//! compositions (`expm1` and `log1p` by the Kahan and Goldberg tricks); f64 sin, cos and
//! tan take fdlibm's kernels after a Payne-Hanek reduction (192 bits of 2/pi from a table);
//! f64 erf is its Taylor series below 1.5 and erfc's continued fraction above. The f32
//! functions compute in f64 (or reduce to the f32 atan polynomial of `vmath.rs`) and round
//! once; fmod is exact, by quotient steps of up to 51 bits with an
//! exact remainder (`fma`); sin, cos and tan of f32 beyond `|x| > 1e4` reduce by pi/2 with
//! the bits of 2/pi (Payne-Hanek, 128 bits of 2/pi per argument) and then take `vmath.rs`'s
//! polynomials. Error bounds, checked against the reference over ranges in
//! `dmath_tests.rs`:
//!
//! | function               | dtype | domain tested                 | test bound |
//! |------------------------|-------|-------------------------------|------------|
//! | exp                    | f64   | [-745, 709.7]                 | 1 ulp      |
//! | atan, asin, acos       | f64   | [-1e20, 1e20], [-1, 1]        | 2 ulp      |
//! | sinh, cosh, tanh       | f64   | [-720, 720]                   | 4 ulp      |
//! | sin, cos               | f64   | [-MAX, MAX]                   | 2 ulp      |
//! | tan                    | f64   | [-MAX, MAX]                   | 4 ulp      |
//! | erf                    | f64   | [-1e300, 1e300]               | 2 ulp      |
//! | asinh, acosh, atanh    | f64   | their domains                 | 4 ulp      |
//! | log                    | f64   | (0, MAX], subnormals          | 1 ulp      |
//! | pow                    | f64   | a in [1e-3, 1e3], b in [-40, 40] | 2^-52 (1 + \|b ln a\|) relative; exact for powers of two |
//! | pow                    | f32   | a in [1e-3, 1e3], b in [-12, 12] | 1 ulp   |
//! | fmod                   | both  | any finite                    | exact      |
//! | asin, acos             | f32   | [-1, 1]                       | 3 ulp      |
//! | asinh, acosh, atanh    | f32   | their domains                 | 1 ulp      |
//! | sin, cos               | f32   | [1e4, MAX]                    | 2 ulp      |
//! | tan                    | f32   | [1e4, MAX]                    | 4 ulp      |
//!
//! Special values (zeros, infinities, NaN, pow's sign rules) are those of C99. The f32
//! bounds are against the f64 function rounded once: the reference's own `f32::acosh` and
//! `f32::atanh` are up to 23 ulp off near 1, and its `f32::asinh` and `f32::acosh`
//! overflow to inf beyond `|x| > 1.7e38` (these do not).

use super::lower::{Lower, double_literal};
use super::vmath;
use ir::atom::{BinaryFn, UnaryFn};
use ir::dtype::DType;

/// `floor(2/pi * 2^240)`: the first 240 bits of 2/pi after the binary point.
const TWO_OVER_PI_240: &str = "1124809776187544279507997106716295999256865926021540629657413695461646011";

/// f32 functions without a polynomial in `vmath.rs`, on a scalar `x`.
pub(super) fn unary32(l: &mut Lower<'_>, f: UnaryFn, x: &str) -> Option<String> {
    if l.lanes != 1 {
        return None;
    }
    if !matches!(f, UnaryFn::Asin | UnaryFn::Acos | UnaryFn::Asinh | UnaryFn::Acosh | UnaryFn::Atanh) {
        return None;
    }
    let mut d = D { l };
    let x64 = d.ins(format!("fpext float {x} to double"));
    let one = d.c(1.0);
    Some(match f {
        // asin x = atan(x / sqrt((1 - x)(1 + x))); acos x = 2 atan(sqrt((1 - x) / (1 + x))).
        UnaryFn::Asin | UnaryFn::Acos => {
            let lo = d.op("fsub", &one, &x64);
            let hi = d.op("fadd", &one, &x64);
            let t = if f == UnaryFn::Asin {
                let p = d.op("fmul", &lo, &hi);
                let s = d.call("sqrt", &[&p]);
                d.op("fdiv", &x64, &s)
            } else {
                let q = d.op("fdiv", &lo, &hi);
                d.call("sqrt", &[&q])
            };
            let t32 = d.ins(format!("fptrunc double {t} to float"));
            let a = vmath::emit(d.l, UnaryFn::Atan, &t32)?;
            if f == UnaryFn::Asin { a } else { d.ins(format!("fmul float {a}, 0x4000000000000000")) }
        }
        _ => {
            let y = match f {
                // sign(x) log(|x| + sqrt(x^2 + 1))
                UnaryFn::Asinh => {
                    let a = d.call("fabs", &[&x64]);
                    let a2 = d.op("fmul", &a, &a);
                    let p = d.op("fadd", &a2, &one);
                    let s = d.call("sqrt", &[&p]);
                    let t = d.op("fadd", &a, &s);
                    let y = d.log(&t);
                    d.call2("copysign", &y, &x64)
                }
                // log(x + sqrt((x - 1)(x + 1)))
                UnaryFn::Acosh => {
                    let lo = d.op("fsub", &x64, &one);
                    let hi = d.op("fadd", &x64, &one);
                    let p = d.op("fmul", &lo, &hi);
                    let s = d.call("sqrt", &[&p]);
                    let t = d.op("fadd", &x64, &s);
                    let y = d.log(&t);
                    // x < 1 (where x + sqrt(x^2 - 1) can round to 0 for large negative x).
                    let below = d.cmp("olt", &x64, &one);
                    let nan = d.c(f64::NAN);
                    d.sel("double", &below, &nan, &y)
                }
                // log((1 + x) / (1 - x)) / 2
                _ => {
                    let hi = d.op("fadd", &one, &x64);
                    let lo = d.op("fsub", &one, &x64);
                    let q = d.op("fdiv", &hi, &lo);
                    let y = d.log(&q);
                    let half = d.c(0.5);
                    d.op("fmul", &y, &half)
                }
            };
            // Tiny |x|: the result is x (the log of 1 + x loses x's low bits).
            let a = d.call("fabs", &[&x64]);
            let tiny = d.c(2f64.powi(-26));
            let small = d.ins(format!("fcmp olt double {a}, {tiny}"));
            let y = if f == UnaryFn::Acosh { y } else { d.sel("double", &small, &x64, &y) };
            d.ins(format!("fptrunc double {y} to float"))
        }
    })
}

/// f64 functions on a scalar `x`.
pub(super) fn unary64(l: &mut Lower<'_>, f: UnaryFn, x: &str) -> Option<String> {
    if l.lanes != 1 {
        return None;
    }
    let mut d = D { l };
    Some(match f {
        UnaryFn::Exp => d.exp(x),
        UnaryFn::Log => d.log(x),
        UnaryFn::Atan => d.atan(x),
        UnaryFn::Asin | UnaryFn::Acos => d.asin_acos(x, f == UnaryFn::Asin),
        UnaryFn::Sinh => d.sinh(x),
        UnaryFn::Cosh => d.cosh(x),
        UnaryFn::Tanh => d.tanh(x),
        UnaryFn::Asinh => d.asinh(x),
        UnaryFn::Acosh => d.acosh(x),
        UnaryFn::Atanh => d.atanh(x),
        UnaryFn::Sin => d.sin_cos_tan(x, Trig::Sin),
        UnaryFn::Cos => d.sin_cos_tan(x, Trig::Cos),
        UnaryFn::Tan => d.sin_cos_tan(x, Trig::Tan),
        UnaryFn::Erf => d.erf(x),
        _ => return None,
    })
}

/// Pow and Fmod of scalars of `dt` (f32 computes in f64 and rounds once).
pub(super) fn binary(l: &mut Lower<'_>, f: BinaryFn, a: &str, b: &str, dt: DType) -> Option<String> {
    if l.lanes != 1 || !matches!(f, BinaryFn::Pow | BinaryFn::Fmod) || !matches!(dt, DType::F32 | DType::F64) {
        return None;
    }
    let mut d = D { l };
    let wide = dt == DType::F32;
    let (a, b) = if wide {
        (d.ins(format!("fpext float {a} to double")), d.ins(format!("fpext float {b} to double")))
    } else {
        (a.to_string(), b.to_string())
    };
    let y = if f == BinaryFn::Pow { d.pow(&a, &b) } else { d.fmod(&a, &b) };
    Some(if wide { d.ins(format!("fptrunc double {y} to float")) } else { y })
}

/// `|x| mod pi/2` for an f32 `a = |x|` in `(1e4, MAX]` (else an unused value): the
/// remainder in `[-pi/4, pi/4]` (an f32) and the quadrant (an i32, mod 4).
pub(super) fn reduce_pio2(l: &mut Lower<'_>, a: &str) -> (String, String) {
    let mut d = D { l };
    // a = M 2^E with a 24-bit M, E = be - 150. The bits of 2/pi before position E - 1
    // make multiples of 4 (whole turns); the 128 from there give M * V / 2^126 (mod 4),
    // with 126 fraction bits.
    let bits = d.ins(format!("bitcast float {a} to i32"));
    let be = d.ins(format!("lshr i32 {bits}, 23"));
    let be = d.ins(format!("call i32 @llvm.smax.i32(i32 {be}, i32 140)"));
    d.l.decls.insert("declare i32 @llvm.smax.i32(i32, i32)".into());
    let frac = d.ins(format!("and i32 {bits}, 8388607"));
    let m = d.ins(format!("or i32 {frac}, 8388608"));
    // V = bits [E - 1, E + 126] of 2/pi: the 240-bit constant shifted by 264 - be.
    let sh = d.ins(format!("sub i32 264, {be}"));
    let sh = d.ins(format!("zext i32 {sh} to i256"));
    let w = d.ins(format!("lshr i256 {TWO_OVER_PI_240}, {sh}"));
    let v = d.ins(format!("trunc i256 {w} to i128"));
    let m = d.ins(format!("zext i32 {m} to i128"));
    let full = d.ins(format!("mul i128 {m}, {v}"));
    // The nearest quadrant, and the rest as a signed fraction of a quadrant (2^-128 units).
    let half = 1u128 << 125;
    let rounded = d.ins(format!("add i128 {full}, {half}"));
    let q = d.ins(format!("lshr i128 {rounded}, 126"));
    let q = d.ins(format!("trunc i128 {q} to i32"));
    let f = d.ins(format!("shl i128 {full}, 2"));
    let hi = d.ins(format!("ashr i128 {f}, 64"));
    let hi = d.ins(format!("trunc i128 {hi} to i64"));
    let lo = d.ins(format!("trunc i128 {f} to i64"));
    let hi = d.ins(format!("sitofp i64 {hi} to double"));
    let lo = d.ins(format!("uitofp i64 {lo} to double"));
    let (s64, s128) = (d.c(2f64.powi(-64)), d.c(2f64.powi(-128)));
    let lo = d.op("fmul", &lo, &s128);
    let fr = d.fma(&hi, &s64, &lo);
    let pio2 = d.c(std::f64::consts::FRAC_PI_2);
    let r = d.op("fmul", &fr, &pio2);
    (d.ins(format!("fptrunc double {r} to float")), q)
}

/// The bits of 2/pi after 64 zero bits, for the f64 reduction (its 4-word windows).
const TWO_OVER_PI_WORDS: [u64; 20] = [
    0x0000_0000_0000_0000,
    0xA2F9_836E_4E44_1529,
    0xFC27_57D1_F534_DDC0,
    0xDB62_9599_3C43_9041,
    0xFE51_63AB_DEBB_C561,
    0xB724_6E3A_424D_D2E0,
    0x0649_2EEA_09D1_921C,
    0xFE1D_EB1C_B129_A73E,
    0xE882_35F5_2EBB_4484,
    0xE99C_7026_B45F_7E41,
    0x3991_D639_8353_39F4,
    0x9C84_5F8B_BDF9_283B,
    0x1FF8_97FF_DE05_980F,
    0xEF2F_118B_5A0A_6D1F,
    0x6D36_7ECF_27CB_09B7,
    0x4F46_3F66_9E5F_EA2D,
    0x7527_BAC7_EBE5_F17B,
    0x3D07_39F7_8A52_92EA,
    0x6BFB_5FB1_1F8D_5D08,
    0x5603_3046_FC7B_6BAB,
];

/// Which of sin, cos, tan.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trig {
    Sin,
    Cos,
    Tan,
}

/// The emitter of scalar f64 code.
struct D<'l, 'a> {
    l: &'l mut Lower<'a>,
}

impl D<'_, '_> {
    fn ins(&mut self, rhs: impl AsRef<str>) -> String {
        self.l.ins(rhs)
    }

    /// An f64 literal.
    fn c(&self, v: f64) -> String {
        double_literal(v)
    }

    /// `op double a, b`.
    fn op(&mut self, op: &str, a: &str, b: &str) -> String {
        self.ins(format!("{op} double {a}, {b}"))
    }

    fn iop(&mut self, op: &str, a: &str, b: &str) -> String {
        self.ins(format!("{op} i64 {a}, {b}"))
    }

    /// Unary intrinsic `llvm.<name>.f64`.
    fn call(&mut self, name: &str, args: &[&str]) -> String {
        self.l.intrinsic(name, "double", args)
    }

    fn call2(&mut self, name: &str, a: &str, b: &str) -> String {
        self.l.intrinsic(name, "double", &[a, b])
    }

    fn fma(&mut self, a: &str, b: &str, c: &str) -> String {
        self.l.intrinsic("fma", "double", &[a, b, c])
    }

    fn cmp(&mut self, cc: &str, a: &str, b: &str) -> String {
        self.ins(format!("fcmp {cc} double {a}, {b}"))
    }

    fn sel(&mut self, ty: &str, c: &str, a: &str, b: &str) -> String {
        self.ins(format!("select i1 {c}, {ty} {a}, {ty} {b}"))
    }

    fn bits(&mut self, x: &str) -> String {
        self.ins(format!("bitcast double {x} to i64"))
    }

    /// `2^n` for an i64 `n` in [-1022, 1023].
    fn pow2(&mut self, n: &str) -> String {
        let b = self.iop("add", n, "1023");
        let b = self.iop("shl", &b, "52");
        self.ins(format!("bitcast i64 {b} to double"))
    }

    /// `y * 2^n` for an i64 `n` in [-2044, 2046] (two normal factors).
    fn scale(&mut self, y: &str, n: &str) -> String {
        let n1 = self.iop("ashr", n, "1");
        let n2 = self.iop("sub", n, &n1);
        let s1 = self.pow2(&n1);
        let s2 = self.pow2(&n2);
        let y = self.op("fmul", y, &s1);
        self.op("fmul", &y, &s2)
    }

    /// `sum coefs[i] * z^i` by Horner's rule.
    fn poly(&mut self, z: &str, coefs: &[f64]) -> String {
        let (last, rest) = coefs.split_last().unwrap_or((&0.0, &[]));
        let mut acc = self.c(*last);
        for c in rest.iter().rev() {
            let cv = self.c(*c);
            acc = self.fma(&acc, z, &cv);
        }
        acc
    }

    /// fdlibm's exp: `x = k ln2 + r`, `exp(r) = 1 + r + r c / (2 - c)`.
    fn exp(&mut self, x: &str) -> String {
        const P: [f64; 5] = [
            f64::from_bits(0x3FC5_5555_5555_553E),
            f64::from_bits(0xBF66_C16C_16BE_BD93),
            f64::from_bits(0x3F11_566A_AF25_DE2C),
            f64::from_bits(0xBEBB_BD41_C5D2_6BF1),
            f64::from_bits(0x3E66_3769_72BE_A4D0),
        ];
        const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
        const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
        // Clamp (NaN compares false and stays): e^-746 < 2^-1075, e^710 > MAX.
        let (hi_c, lo_c) = (self.c(710.0), self.c(-746.0));
        let over = self.cmp("ogt", x, &hi_c);
        let x = self.sel("double", &over, &hi_c, x);
        let under = self.cmp("olt", &x, &lo_c);
        let x = self.sel("double", &under, &lo_c, &x);
        let (inv, magic) = (self.c(std::f64::consts::LOG2_E), self.c(6_755_399_441_055_744.0));
        let t = self.fma(&x, &inv, &magic);
        let k = self.op("fsub", &t, &magic);
        let ki = self.ins(format!("call i64 @llvm.fptosi.sat.i64.f64(double {k})"));
        self.l.decls.insert("declare i64 @llvm.fptosi.sat.i64.f64(double)".into());
        let nk = self.ins(format!("fneg double {k}"));
        let (l2h, l2l) = (self.c(LN2_HI), self.c(LN2_LO));
        let hi = self.fma(&nk, &l2h, &x);
        let lo = self.op("fmul", &k, &l2l);
        let r = self.op("fsub", &hi, &lo);
        let z = self.op("fmul", &r, &r);
        let p = self.poly(&z, &P);
        let zp = self.op("fmul", &z, &p);
        let c = self.op("fsub", &r, &zp);
        let rc = self.op("fmul", &r, &c);
        let two = self.c(2.0);
        let den = self.op("fsub", &two, &c);
        let q = self.op("fdiv", &rc, &den);
        let s = self.op("fsub", &lo, &q);
        let s = self.op("fsub", &s, &hi);
        let one = self.c(1.0);
        let y = self.op("fsub", &one, &s);
        self.scale(&y, &ki)
    }

    /// fdlibm's log: `x = 2^k m`, `m` in [sqrt(1/2), sqrt(2)), `log m` from `s = f / (2 + f)`.
    fn log(&mut self, x: &str) -> String {
        const LG: [f64; 7] = [
            f64::from_bits(0x3FE5_5555_5555_5593),
            f64::from_bits(0x3FD9_9999_9997_FA04),
            f64::from_bits(0x3FD2_4924_9422_9359),
            f64::from_bits(0x3FCC_71C5_1D8E_78AF),
            f64::from_bits(0x3FC7_4664_96CB_03DE),
            f64::from_bits(0x3FC3_9A09_D078_C69F),
            f64::from_bits(0x3FC2_F112_DF3E_5244),
        ];
        const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
        const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
        // Subnormals: scale by 2^54 and take 54 off the exponent.
        let min = self.c(f64::MIN_POSITIVE);
        let tiny = self.cmp("olt", x, &min);
        let big = self.c(2f64.powi(54));
        let scaled = self.op("fmul", x, &big);
        let xs = self.sel("double", &tiny, &scaled, x);
        let eadj = self.sel("i64", &tiny, "-54", "0");
        let sqrt_half = std::f64::consts::FRAC_1_SQRT_2.to_bits().cast_signed();
        let ix = self.bits(&xs);
        let ix = self.iop("sub", &ix, &sqrt_half.to_string());
        let e = self.iop("ashr", &ix, "52");
        let e = self.iop("add", &e, &eadj);
        let mant = self.iop("and", &ix, "4503599627370495");
        let mant = self.iop("add", &mant, &sqrt_half.to_string());
        let m = self.ins(format!("bitcast i64 {mant} to double"));
        let one = self.c(1.0);
        let f = self.op("fsub", &m, &one);
        let two = self.c(2.0);
        let den = self.op("fadd", &two, &f);
        let s = self.op("fdiv", &f, &den);
        let z = self.op("fmul", &s, &s);
        let q = self.poly(&z, &LG);
        let r = self.op("fmul", &z, &q);
        let half = self.c(0.5);
        let hf = self.op("fmul", &half, &f);
        let hfsq = self.op("fmul", &hf, &f);
        let ef = self.ins(format!("sitofp i64 {e} to double"));
        let lo = self.c(LN2_LO);
        let elo = self.op("fmul", &ef, &lo);
        let hr = self.op("fadd", &hfsq, &r);
        let t = self.fma(&s, &hr, &elo);
        let t = self.op("fsub", &t, &hfsq);
        let t = self.op("fadd", &t, &f);
        let hi = self.c(LN2_HI);
        let y = self.fma(&ef, &hi, &t);
        // Special values: log(inf) = inf, log(0) = -inf, log(<0) = NaN, NaN stays.
        let inf = self.c(f64::INFINITY);
        let m = self.cmp("oeq", x, &inf);
        let y = self.sel("double", &m, &inf, &y);
        let zero = self.c(0.0);
        let m = self.cmp("oeq", x, &zero);
        let ninf = self.c(f64::NEG_INFINITY);
        let y = self.sel("double", &m, &ninf, &y);
        let m = self.cmp("olt", x, &zero);
        let nan = self.c(f64::NAN);
        let y = self.sel("double", &m, &nan, &y);
        let m = self.cmp("uno", x, x);
        self.sel("double", &m, x, &y)
    }

    /// C99 `pow`: `exp(b log|a|)`, exact when `|a|` is a power of two and `b log2|a|` an
    /// integer, with the sign and special-value rules.
    fn pow(&mut self, a: &str, b: &str) -> String {
        let ax = self.call("fabs", &[a]);
        let l = self.log(&ax);
        let y = self.op("fmul", b, &l);
        let m = self.exp(&y);
        // |a| = 2^k exactly (normal): 2^(b k) when that is an integer.
        let bits = self.bits(&ax);
        let mant = self.iop("and", &bits, "4503599627370495");
        let be = self.iop("lshr", &bits, "52");
        let is_p2 = self.ins(format!("icmp eq i64 {mant}, 0"));
        let normal = self.ins(format!("icmp ult i64 {be}, 2047"));
        let nonzero = self.ins(format!("icmp ugt i64 {be}, 0"));
        let p2 = self.ins(format!("and i1 {is_p2}, {normal}"));
        let p2 = self.ins(format!("and i1 {p2}, {nonzero}"));
        let k = self.iop("sub", &be, "1023");
        let kf = self.ins(format!("sitofp i64 {k} to double"));
        let e = self.op("fmul", b, &kf);
        let ef = self.call("floor", &[&e]);
        let whole = self.cmp("oeq", &e, &ef);
        let exact = self.ins(format!("and i1 {p2}, {whole}"));
        let (lo, hi) = (self.c(-2000.0), self.c(2000.0));
        let ec = self.call2("maxnum", &ef, &lo);
        let ec = self.call2("minnum", &ec, &hi);
        let ei = self.ins(format!("fptosi double {ec} to i64"));
        let one = self.c(1.0);
        let p = self.scale(&one, &ei);
        let m = self.sel("double", &exact, &p, &m);
        // The sign: negative for a negative (or -0) base and an odd integer exponent;
        // NaN for a negative base and a non-integer exponent.
        let bt = self.call("trunc", &[b]);
        let bint = self.cmp("oeq", &bt, b);
        let half = self.c(0.5);
        let h = self.op("fmul", b, &half);
        let ht = self.call("trunc", &[&h]);
        let hfrac = self.cmp("une", &ht, &h);
        let odd = self.ins(format!("and i1 {bint}, {hfrac}"));
        let abits = self.bits(a);
        let aneg = self.ins(format!("icmp slt i64 {abits}, 0"));
        let flip = self.ins(format!("and i1 {aneg}, {odd}"));
        let inf = self.c(f64::INFINITY);
        let nm = self.ins(format!("fneg double {m}"));
        let m = self.sel("double", &flip, &nm, &m);
        let zero = self.c(0.0);
        let below = self.cmp("olt", a, &zero);
        let frac = self.ins(format!("xor i1 {bint}, true"));
        let bad = self.ins(format!("and i1 {below}, {frac}"));
        let a_fin = self.cmp("olt", &ax, &inf);
        let bad = self.ins(format!("and i1 {bad}, {a_fin}"));
        let nan = self.c(f64::NAN);
        let m = self.sel("double", &bad, &nan, &m);
        // pow(+-1, +-inf) = 1, pow(x, 0) = 1 and pow(1, y) = 1, even for NaN.
        let unit = self.cmp("oeq", &ax, &one);
        let babs = self.call("fabs", &[b]);
        let binf = self.cmp("oeq", &babs, &inf);
        let c1 = self.ins(format!("and i1 {unit}, {binf}"));
        let c2 = self.cmp("oeq", b, &zero);
        let c3 = self.cmp("oeq", a, &one);
        let c = self.ins(format!("or i1 {c1}, {c2}"));
        let c = self.ins(format!("or i1 {c}, {c3}"));
        self.sel("double", &c, &one, &m)
    }

    /// `log(1 + u)` from `log(w)`, `w = 1 + u` rounded (Goldberg: `log(w) u / (w - 1)`).
    fn log1p(&mut self, u: &str) -> String {
        let one = self.c(1.0);
        let w = self.op("fadd", &one, u);
        let wm1 = self.op("fsub", &w, &one);
        let l = self.log(&w);
        let q = self.op("fdiv", u, &wm1);
        let y = self.op("fmul", &l, &q);
        let zero = self.c(0.0);
        let exact = self.cmp("oeq", &wm1, &zero);
        let y = self.sel("double", &exact, u, &y);
        let inf = self.c(f64::INFINITY);
        let big = self.cmp("oeq", u, &inf);
        self.sel("double", &big, u, &y)
    }

    /// `exp(x) - 1` from `u = exp(x)` (Kahan: `(u - 1) x / log(u)`).
    fn expm1(&mut self, x: &str) -> String {
        let u = self.exp(x);
        let one = self.c(1.0);
        let um1 = self.op("fsub", &u, &one);
        let l = self.log(&u);
        let q = self.op("fdiv", x, &l);
        let y = self.op("fmul", &um1, &q);
        let exact = self.cmp("oeq", &u, &one);
        let y = self.sel("double", &exact, x, &y);
        let minus = self.c(-1.0);
        let low = self.cmp("oeq", &um1, &minus);
        let y = self.sel("double", &low, &minus, &y);
        let hi = self.c(700.0);
        let big = self.cmp("ogt", x, &hi);
        self.sel("double", &big, &u, &y)
    }

    /// fdlibm's atan: `|x|` reduced to `[0, 7/16]` around atan(1/2), atan(1), atan(3/2),
    /// atan(inf), then `t - t^3 P(t^2)`.
    fn atan(&mut self, x: &str) -> String {
        const HI: [u64; 4] = [0x3FDD_AC67_0561_BB4F, 0x3FE9_21FB_5444_2D18, 0x3FEF_730B_D281_F69B, 0x3FF9_21FB_5444_2D18];
        const LO: [u64; 4] = [0x3C7A_2B7F_222F_65E2, 0x3C81_A626_3314_5C07, 0x3C70_0788_7AF0_CBBD, 0x3C91_A626_3314_5C07];
        const AT: [u64; 11] = [
            0x3FD5_5555_5555_550D,
            0xBFC9_9999_9998_EBC4,
            0x3FC2_4924_9200_83FF,
            0xBFBC_71C6_FE23_1671,
            0x3FB7_45CD_C54C_206E,
            0xBFB3_B0F2_AF74_9A6D,
            0x3FB1_0D66_A0D0_3D51,
            0xBFAD_DE2D_52DE_FD9A,
            0x3FA9_7B4B_2476_0DEB,
            0xBFA2_B444_2C6A_6C2F,
            0x3F90_AD3A_E322_DA11,
        ];
        let a = self.call("fabs", &[x]);
        let one = self.c(1.0);
        // Arguments: [0, 7/16): a; [7/16, 11/16): (2a - 1) / (2 + a); [11/16, 19/16):
        // (a - 1) / (a + 1); [19/16, 39/16): (a - 1.5) / (1 + 1.5 a); beyond: -1 / a.
        let (two, m1) = (self.c(2.0), self.c(-1.0));
        let t0 = self.fma(&two, &a, &m1);
        let d0 = self.op("fadd", &two, &a);
        let r0 = self.op("fdiv", &t0, &d0);
        let t1 = self.op("fsub", &a, &one);
        let d1 = self.op("fadd", &a, &one);
        let r1 = self.op("fdiv", &t1, &d1);
        let h = self.c(1.5);
        let t2 = self.op("fsub", &a, &h);
        let d2 = self.fma(&h, &a, &one);
        let r2 = self.op("fdiv", &t2, &d2);
        let r3 = self.op("fdiv", &m1, &a);
        let bounds = [7.0 / 16.0, 11.0 / 16.0, 19.0 / 16.0, 39.0 / 16.0];
        let mut t = a.clone();
        let (mut hi, mut lo) = (self.c(0.0), self.c(0.0));
        for (i, r) in [r0, r1, r2, r3].iter().enumerate() {
            let b = self.c(bounds[i]);
            let past = self.cmp("oge", &a, &b);
            t = self.sel("double", &past, r, &t);
            let (h, l) = (self.c(f64::from_bits(HI[i])), self.c(f64::from_bits(LO[i])));
            hi = self.sel("double", &past, &h, &hi);
            lo = self.sel("double", &past, &l, &lo);
        }
        let z = self.op("fmul", &t, &t);
        let at: Vec<f64> = AT.iter().map(|b| f64::from_bits(*b)).collect();
        let p = self.poly(&z, &at);
        // atan(t) = t - t z P(z) with P(z) = at0 - at1 z + ...: t (1 - ...) as fdlibm.
        let zp = self.op("fmul", &z, &p);
        let tzp = self.op("fmul", &t, &zp);
        let c = self.op("fsub", &tzp, &lo);
        let c = self.op("fsub", &c, &t);
        let y = self.op("fsub", &hi, &c);
        let y = self.call2("copysign", &y, x);
        let nan = self.cmp("uno", x, x);
        self.sel("double", &nan, x, &y)
    }

    /// asin x = atan(x / sqrt((1 - x)(1 + x))); acos x = 2 atan(sqrt((1 - x) / (1 + x))).
    fn asin_acos(&mut self, x: &str, asin: bool) -> String {
        let one = self.c(1.0);
        let lo = self.op("fsub", &one, x);
        let hi = self.op("fadd", &one, x);
        if asin {
            let p = self.op("fmul", &lo, &hi);
            let s = self.call("sqrt", &[&p]);
            let t = self.op("fdiv", x, &s);
            self.atan(&t)
        } else {
            let q = self.op("fdiv", &lo, &hi);
            let s = self.call("sqrt", &[&q]);
            let a = self.atan(&s);
            self.op("fadd", &a, &a)
        }
    }

    /// `exp(|x| / 2)^2 / 2`: `e^|x| / 2` without overflowing before the result does.
    fn half_exp_big(&mut self, a: &str) -> String {
        let half = self.c(0.5);
        let ah = self.op("fmul", a, &half);
        let h = self.exp(&ah);
        let hh = self.op("fmul", &h, &half);
        self.op("fmul", &hh, &h)
    }

    /// sinh x = sign(x) (E + E / (E + 1)) / 2, `E = expm1(|x|)`; `e^|x| / 2` past 22.
    fn sinh(&mut self, x: &str) -> String {
        let a = self.call("fabs", &[x]);
        let e = self.expm1(&a);
        let one = self.c(1.0);
        let e1 = self.op("fadd", &e, &one);
        let q = self.op("fdiv", &e, &e1);
        let s = self.op("fadd", &e, &q);
        let half = self.c(0.5);
        let s = self.op("fmul", &s, &half);
        let big = self.half_exp_big(&a);
        let cut = self.c(22.0);
        let past = self.cmp("ogt", &a, &cut);
        let y = self.sel("double", &past, &big, &s);
        self.call2("copysign", &y, x)
    }

    /// cosh x = (e + 1/e) / 2, `e = exp(|x|)`; `e^|x| / 2` past 22.
    fn cosh(&mut self, x: &str) -> String {
        let a = self.call("fabs", &[x]);
        let e = self.exp(&a);
        let half = self.c(0.5);
        let he = self.op("fmul", &e, &half);
        let q = self.op("fdiv", &half, &e);
        let s = self.op("fadd", &he, &q);
        let big = self.half_exp_big(&a);
        let cut = self.c(22.0);
        let past = self.cmp("ogt", &a, &cut);
        self.sel("double", &past, &big, &s)
    }

    /// tanh x = sign(x) E / (E + 2), `E = expm1(2|x|)`; 1 past 22.
    fn tanh(&mut self, x: &str) -> String {
        let a = self.call("fabs", &[x]);
        let a2 = self.op("fadd", &a, &a);
        let e = self.expm1(&a2);
        let two = self.c(2.0);
        let d = self.op("fadd", &e, &two);
        let t = self.op("fdiv", &e, &d);
        let one = self.c(1.0);
        let cut = self.c(22.0);
        let past = self.cmp("ogt", &a, &cut);
        let y = self.sel("double", &past, &one, &t);
        self.call2("copysign", &y, x)
    }

    /// asinh x = sign(x) log1p(a + a^2 / (1 + sqrt(1 + a^2))); log(a) + ln 2 past 2^28.
    fn asinh(&mut self, x: &str) -> String {
        let a = self.call("fabs", &[x]);
        let one = self.c(1.0);
        let a2 = self.op("fmul", &a, &a);
        let p = self.op("fadd", &a2, &one);
        let s = self.call("sqrt", &[&p]);
        let d = self.op("fadd", &s, &one);
        let q = self.op("fdiv", &a2, &d);
        let u = self.op("fadd", &a, &q);
        let small = self.log1p(&u);
        let big = self.log_twice(&a);
        let cut = self.c(2f64.powi(28));
        let past = self.cmp("ogt", &a, &cut);
        let y = self.sel("double", &past, &big, &small);
        self.call2("copysign", &y, x)
    }

    /// `log(2 a)` without overflowing `2 a`.
    fn log_twice(&mut self, a: &str) -> String {
        let l = self.log(a);
        let ln2 = self.c(std::f64::consts::LN_2);
        self.op("fadd", &l, &ln2)
    }

    /// acosh x = log1p(t + sqrt(2t + t^2)), `t = x - 1`; log(x) + ln 2 past 2^28; NaN
    /// below 1.
    fn acosh(&mut self, x: &str) -> String {
        let one = self.c(1.0);
        let t = self.op("fsub", x, &one);
        let two = self.c(2.0);
        let t2 = self.op("fadd", &t, &two);
        let p = self.op("fmul", &t, &t2);
        let s = self.call("sqrt", &[&p]);
        let u = self.op("fadd", &t, &s);
        let small = self.log1p(&u);
        let big = self.log_twice(x);
        let cut = self.c(2f64.powi(28));
        let past = self.cmp("ogt", x, &cut);
        let y = self.sel("double", &past, &big, &small);
        let below = self.cmp("olt", x, &one);
        let nan = self.c(f64::NAN);
        self.sel("double", &below, &nan, &y)
    }

    /// atanh x = sign(x) log1p(2a / (1 - a)) / 2.
    fn atanh(&mut self, x: &str) -> String {
        let a = self.call("fabs", &[x]);
        let one = self.c(1.0);
        let a2 = self.op("fadd", &a, &a);
        let d = self.op("fsub", &one, &a);
        let u = self.op("fdiv", &a2, &d);
        let l = self.log1p(&u);
        let half = self.c(0.5);
        let y = self.op("fmul", &l, &half);
        self.call2("copysign", &y, x)
    }

    /// `a mod pi/2` for an f64 `a` in `[pi/4, MAX]` (else an unused value): the remainder
    /// in `[-pi/4, pi/4]` and the quadrant (an i32, mod 4). `a = M 2^E` with a 53-bit `M`;
    /// 192 bits of 2/pi from position E - 1 (a 4-word window of a table) give
    /// `M V / 2^190` mod 4, with 190 fraction bits.
    fn reduce_pio2(&mut self, a: &str) -> (String, String) {
        let table = "@atomc_two_over_pi";
        let words: Vec<String> = TWO_OVER_PI_WORDS.iter().map(|w| format!("i64 {}", w.cast_signed())).collect();
        self.l.decls.insert(format!("{table} = internal unnamed_addr constant [20 x i64] [{}]", words.join(", ")));
        let bits = self.bits(a);
        let be = self.iop("lshr", &bits, "52");
        self.l.decls.insert("declare i64 @llvm.smax.i64(i64, i64)".into());
        let be = self.ins(format!("call i64 @llvm.smax.i64(i64 {be}, i64 1022)"));
        let mant = self.iop("and", &bits, "4503599627370495");
        let m = self.iop("or", &mant, "4503599627370496");
        // Position E - 1 of 2/pi is bit be - 1013 of the table.
        let idx = self.iop("sub", &be, "1013");
        let w = self.iop("lshr", &idx, "6");
        let sh = self.iop("and", &idx, "63");
        let mut window = "0".to_string();
        for i in 0..4 {
            let wi = self.iop("add", &w, &i.to_string());
            let ptr = self.ins(format!("getelementptr inbounds [20 x i64], ptr {table}, i64 0, i64 {wi}"));
            let word = self.ins(format!("load i64, ptr {ptr}, align 8"));
            let word = self.ins(format!("zext i64 {word} to i256"));
            let placed = self.ins(format!("shl i256 {word}, {}", 64 * (3 - i)));
            window = self.ins(format!("or i256 {window}, {placed}"));
        }
        let sh = self.ins(format!("zext i64 {sh} to i256"));
        let v = self.ins(format!("shl i256 {window}, {sh}"));
        let v = self.ins(format!("lshr i256 {v}, 64"));
        let v = self.ins(format!("trunc i256 {v} to i192"));
        let m = self.ins(format!("zext i64 {m} to i192"));
        let full = self.ins(format!("mul i192 {m}, {v}"));
        // The nearest quadrant, and the rest as a signed fraction of a quadrant.
        let bias = self.ins("shl i192 1, 189");
        let rounded = self.ins(format!("add i192 {full}, {bias}"));
        let q = self.ins(format!("lshr i192 {rounded}, 190"));
        let q = self.ins(format!("trunc i192 {q} to i32"));
        let f = self.ins(format!("shl i192 {full}, 2"));
        let hi = self.ins(format!("ashr i192 {f}, 128"));
        let hi = self.ins(format!("trunc i192 {hi} to i64"));
        let mid = self.ins(format!("lshr i192 {f}, 64"));
        let mid = self.ins(format!("trunc i192 {mid} to i64"));
        let hi = self.ins(format!("sitofp i64 {hi} to double"));
        let mid = self.ins(format!("uitofp i64 {mid} to double"));
        let (s64, s128) = (self.c(2f64.powi(-64)), self.c(2f64.powi(-128)));
        let mid = self.op("fmul", &mid, &s128);
        let fr = self.fma(&hi, &s64, &mid);
        let pio2 = self.c(std::f64::consts::FRAC_PI_2);
        (self.op("fmul", &fr, &pio2), q)
    }

    /// fdlibm's sin, cos and tan kernels on `[-pi/4, pi/4]` after the reduction by pi/2
    /// (tan is their quotient).
    fn sin_cos_tan(&mut self, x: &str, which: Trig) -> String {
        const S: [u64; 6] = [0xBFC5_5555_5555_5549, 0x3F81_1111_1110_F8A6, 0xBF2A_01A0_19C1_61D5, 0x3EC7_1DE3_57B1_FE7D, 0xBE5A_E5E6_8A2B_9CEB, 0x3DE5_D93A_5ACF_D57C];
        const C: [u64; 6] = [0x3FA5_5555_5555_554C, 0xBF56_C16C_16C1_5177, 0x3EFA_01A0_19CB_1590, 0xBE92_7E4F_809C_52AD, 0x3E21_EE9E_BDB4_B1C4, 0xBDA8_FAE9_BE88_38D4];
        let a = self.call("fabs", &[x]);
        let (big_r, big_q) = self.reduce_pio2(&a);
        let quarter = self.c(std::f64::consts::FRAC_PI_4);
        let small = self.cmp("olt", &a, &quarter);
        let r = self.sel("double", &small, &a, &big_r);
        let q = self.sel("i32", &small, "0", &big_q);
        let z = self.op("fmul", &r, &r);
        // sin r = r + r^3 (S1 + z (S2 + ...)).
        let s: Vec<f64> = S.iter().map(|b| f64::from_bits(*b)).collect();
        let c: Vec<f64> = C.iter().map(|b| f64::from_bits(*b)).collect();
        let sp = self.poly(&z, &s[1..]);
        let s1 = self.c(s[0]);
        let zs = self.fma(&z, &sp, &s1);
        let v = self.op("fmul", &z, &r);
        let sin = self.fma(&v, &zs, &r);
        // cos r = w + ((1 - w) - z/2 + z^2 (C1 + ...)), w = 1 - z/2.
        let cp = self.poly(&z, &c);
        let zc = self.op("fmul", &z, &cp);
        let half = self.c(0.5);
        let hz = self.op("fmul", &half, &z);
        let one = self.c(1.0);
        let w = self.op("fsub", &one, &hz);
        let t = self.op("fsub", &one, &w);
        let t = self.op("fsub", &t, &hz);
        let zzc = self.op("fmul", &z, &zc);
        let t = self.op("fadd", &t, &zzc);
        let cos = self.op("fadd", &w, &t);
        let q = if which == Trig::Cos { self.ins(format!("add i32 {q}, 1")) } else { q };
        let odd = self.ins(format!("and i32 {q}, 1"));
        let even = self.ins(format!("icmp eq i32 {odd}, 0"));
        let y = match which {
            Trig::Sin | Trig::Cos => {
                let y = self.sel("double", &even, &sin, &cos);
                let neg = self.ins(format!("and i32 {q}, 2"));
                let neg = self.ins(format!("icmp ne i32 {neg}, 0"));
                let ny = self.ins(format!("fneg double {y}"));
                self.sel("double", &neg, &ny, &y)
            }
            Trig::Tan => {
                let n = self.sel("double", &even, &sin, &cos);
                let d = self.sel("double", &even, &cos, &sin);
                let y = self.op("fdiv", &n, &d);
                let ny = self.ins(format!("fneg double {y}"));
                self.sel("double", &even, &y, &ny)
            }
        };
        let y = if which == Trig::Cos {
            y
        } else {
            let neg = self.ins(format!("fneg double {y}"));
            let xb = self.bits(x);
            let xneg = self.ins(format!("icmp slt i64 {xb}, 0"));
            self.sel("double", &xneg, &neg, &y)
        };
        // inf and NaN give NaN.
        let inf = self.c(f64::INFINITY);
        let finite = self.cmp("olt", &a, &inf);
        let nan = self.c(f64::NAN);
        self.sel("double", &finite, &y, &nan)
    }

    /// erf: its Taylor series (34 terms, Horner in x^2) below 1.5; above, `1 - erfc` with
    /// erfc's continued fraction `e^-x^2 / sqrt(pi) / (x + (1/2) / (x + (2/2) / (x + ...)))`
    /// (150 levels) and `e^-x^2` from the exact `x^2 = hi + lo`.
    fn erf(&mut self, x: &str) -> String {
        let a = self.call("fabs", &[x]);
        let z = self.op("fmul", &a, &a);
        let two_over_sqrt_pi = 2.0 / std::f64::consts::PI.sqrt();
        let mut fact = 1.0f64;
        let coefs: Vec<f64> = (0..34)
            .map(|n| {
                if n > 0 {
                    fact *= f64::from(n);
                }
                let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
                sign * two_over_sqrt_pi / (fact * f64::from(2 * n + 1))
            })
            .collect();
        let p = self.poly(&z, &coefs);
        let small = self.op("fmul", &a, &p);
        // erf(6) rounds to 1 (NaN compares false and stays).
        let six = self.c(6.0);
        let over = self.cmp("ogt", &a, &six);
        let a = self.sel("double", &over, &six, &a);
        let z = self.op("fmul", &a, &a);
        let mut f = a.clone();
        for k in (1..=150).rev() {
            let c = self.c(f64::from(k) / 2.0);
            let q = self.op("fdiv", &c, &f);
            f = self.op("fadd", &a, &q);
        }
        let nz = self.ins(format!("fneg double {z}"));
        let lo = self.fma(&a, &a, &nz);
        let e = self.exp(&nz);
        let ne = self.ins(format!("fneg double {e}"));
        let e = self.fma(&ne, &lo, &e);
        let inv_sqrt_pi = self.c(1.0 / std::f64::consts::PI.sqrt());
        let e = self.op("fmul", &e, &inv_sqrt_pi);
        let erfc = self.op("fdiv", &e, &f);
        let one = self.c(1.0);
        let large = self.op("fsub", &one, &erfc);
        let cut = self.c(1.5);
        let below = self.cmp("olt", &a, &cut);
        let y = self.sel("double", &below, &small, &large);
        self.call2("copysign", &y, x)
    }

    /// The exponent of a positive finite `x` (`floor(log2 x)`, subnormals included).
    fn exponent(&mut self, x: &str) -> String {
        let bits = self.bits(x);
        let be = self.iop("lshr", &bits, "52");
        let e = self.iop("sub", &be, "1023");
        let mant = self.iop("and", &bits, "4503599627370495");
        self.l.decls.insert("declare i64 @llvm.ctlz.i64(i64, i1)".into());
        let lz = self.ins(format!("call i64 @llvm.ctlz.i64(i64 {mant}, i1 false)"));
        // A subnormal is mant * 2^-1074: its exponent is 63 - lz - 1074.
        let sub = self.iop("sub", "-1011", &lz);
        let is_sub = self.ins(format!("icmp eq i64 {be}, 0"));
        self.sel("i64", &is_sub, &sub, &e)
    }

    /// C `fmod` (exact): `|a|` reduced by `|b| 2^k` while it is at least `|b|`, each step
    /// taking a quotient of under 2^52 and its exact remainder.
    fn fmod(&mut self, a: &str, b: &str) -> String {
        let ax = self.call("fabs", &[a]);
        let bx = self.call("fabs", &[b]);
        let inf = self.c(f64::INFINITY);
        let zero = self.c(0.0);
        // NaN for b = 0, an infinite a or a NaN; a for an infinite b.
        let a_fin = self.cmp("olt", &ax, &inf);
        let b_pos = self.cmp("ogt", &bx, &zero);
        let b_fin = self.cmp("olt", &bx, &inf);
        let b_inf = self.cmp("oeq", &bx, &inf);
        let ok = self.ins(format!("and i1 {a_fin}, {b_pos}"));
        let run = self.ins(format!("and i1 {ok}, {b_fin}"));
        let one = self.c(1.0);
        let r0 = self.sel("double", &run, &ax, &zero);
        let t0 = self.sel("double", &run, &bx, &one);
        let eb = self.exponent(&t0);
        let slot = self.l.slot("double");
        self.l.write("double", &r0, &slot);
        let (head, body, exit) = (self.l.block("fmod"), self.l.block("fmodstep"), self.l.block("fmoddone"));
        self.l.jump(&head);
        self.l.start(&head);
        let r = self.l.read("double", &slot);
        let done = self.cmp("olt", &r, &t0);
        self.l.branch(&done, &exit, &body);
        self.l.start(&body);
        let er = self.exponent(&r);
        let gap = self.iop("sub", &er, &eb);
        let gap = self.iop("sub", &gap, "51");
        self.l.decls.insert("declare i64 @llvm.smax.i64(i64, i64)".into());
        let k = self.ins(format!("call i64 @llvm.smax.i64(i64 {gap}, i64 0)"));
        let t = self.scale(&t0, &k);
        let q = self.op("fdiv", &r, &t);
        let q = self.call("trunc", &[&q]);
        // q is the quotient or one off: one more step of the exact remainder fixes it.
        let nq = self.ins(format!("fneg double {q}"));
        let e0 = self.fma(&nq, &t, &r);
        let low = self.cmp("oge", &e0, &t);
        let high = self.cmp("olt", &e0, &zero);
        let up = self.sel("double", &low, &one, &zero);
        let q = self.op("fadd", &q, &up);
        let down = self.sel("double", &high, &one, &zero);
        let q = self.op("fsub", &q, &down);
        let nq = self.ins(format!("fneg double {q}"));
        let rem = self.fma(&nq, &t, &r);
        self.l.write("double", &rem, &slot);
        self.l.jump(&head);
        self.l.start(&exit);
        let r = self.l.read("double", &slot);
        let y = self.call2("copysign", &r, a);
        let y = self.sel("double", &b_inf, a, &y);
        let nan = self.c(f64::NAN);
        let y = self.sel("double", &ok, &y, &nan);
        // A NaN operand gives NaN.
        let nan_in = self.cmp("uno", a, b);
        self.sel("double", &nan_in, &nan, &y)
    }
}
