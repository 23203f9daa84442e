//! Polynomial f32 transcendentals emitted inline as LLVM IR, for scalars and vectors of any
//! lane count alike: the algorithms of `cranelift/vmath.rs` step for step, with the same
//! coefficients (`crate::vmath_coefs`), so with FMA both backends give the same bits and
//! the error bounds documented in `cranelift/vmath.rs` hold here (checked by `tests.rs`):
//!
//! | function | domain        | test bound |
//! |----------|---------------|------------|
//! | exp      | [-104, 89]    | 1.5 ulp    |
//! | log      | (0, MAX]      | 1.5 ulp    |
//! | tanh     | [-12, 12]     | 2 ulp      |
//! | erf      | [-6, 6]       | 2 ulp      |
//! | sin, cos | [-1e4, 1e4]   | 3 ulp      |
//! | tan      | [-1e4, 1e4]   | 4 ulp      |
//! | atan     | [-MAX, MAX]   | 2.5 ulp    |
//! | sinh     | [-90, 90]     | 2 ulp      |
//! | cosh     | [-90, 90]     | 2 ulp      |
//!
//! sin, cos and tan beyond `|x| > 1e4` go to the reference's function on a cold path
//! (`lower.rs`) on the CPU; on the GPU they reduce with the bits of 2/pi (`dmath.rs`). The operations are plain IEEE `fadd`/`fmul`/`fdiv` without fast-math
//! flags, so LLVM keeps their rounding; `madd` is `llvm.fma` when the target has FMA.

use super::lower::{Lower, float_literal};
use crate::vmath_coefs::*;
use ir::atom::UnaryFn;

/// Whether `f` has a polynomial here (the same set as the Cranelift backend's).
pub fn has(f: UnaryFn) -> bool {
    matches!(
        f,
        UnaryFn::Exp
            | UnaryFn::Log
            | UnaryFn::Tanh
            | UnaryFn::Erf
            | UnaryFn::Sin
            | UnaryFn::Cos
            | UnaryFn::Tan
            | UnaryFn::Atan
            | UnaryFn::Sinh
            | UnaryFn::Cosh
    )
}

/// Emits f(x) for an f32 `x` at the lowering's current lanes; None if `f` has no
/// polynomial here.
pub(super) fn emit(l: &mut Lower<'_>, f: UnaryFn, x: &str) -> Option<String> {
    if !has(f) {
        return None;
    }
    let ty = l.shaped("float");
    let ity = l.shaped("i32");
    let mask = l.shaped("i1");
    let fma = l.fma;
    let mut e = Emit { l, ty, ity, mask, fma };
    Some(match f {
        UnaryFn::Exp => e.exp(x),
        UnaryFn::Log => e.log(x),
        UnaryFn::Tanh => e.tanh(x),
        UnaryFn::Erf => e.erf(x),
        UnaryFn::Sin => e.sin_cos(x, Trig::Sin),
        UnaryFn::Cos => e.sin_cos(x, Trig::Cos),
        UnaryFn::Tan => e.sin_cos(x, Trig::Tan),
        UnaryFn::Atan => e.atan(x),
        UnaryFn::Sinh => e.sinh(x),
        _ => e.cosh(x),
    })
}

/// Which function of the pi/2 reduction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trig {
    Sin,
    Cos,
    Tan,
}

/// The emitter: `ty` the float type, `ity` the i32 type and `mask` the i1 type of the same
/// shape.
struct Emit<'l, 'a> {
    l: &'l mut Lower<'a>,
    ty: String,
    ity: String,
    mask: String,
    fma: bool,
}

impl Emit<'_, '_> {
    /// A float constant of type `ty`.
    fn f(&mut self, c: f32) -> String {
        self.l.splat_scalar(&float_literal(c), "float")
    }

    /// An integer constant of type `ity`.
    fn i(&mut self, c: i32) -> String {
        self.l.splat_scalar(&c.to_string(), "i32")
    }

    fn op(&mut self, op: &str, a: &str, b: &str) -> String {
        let ty = if op.starts_with('f') { &self.ty } else { &self.ity };
        let line = format!("{op} {ty} {a}, {b}");
        self.l.ins(line)
    }

    fn bits(&mut self, x: &str) -> String {
        let line = format!("bitcast {} {x} to {}", self.ty, self.ity);
        self.l.ins(line)
    }

    fn float(&mut self, x: &str) -> String {
        let line = format!("bitcast {} {x} to {}", self.ity, self.ty);
        self.l.ins(line)
    }

    fn add(&mut self, a: &str, b: &str) -> String {
        self.op("fadd", a, b)
    }

    fn sub(&mut self, a: &str, b: &str) -> String {
        self.op("fsub", a, b)
    }

    fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("fmul", a, b)
    }

    fn div(&mut self, a: &str, b: &str) -> String {
        self.op("fdiv", a, b)
    }

    /// `a * b + c`, fused when the target has FMA.
    fn madd(&mut self, a: &str, b: &str, c: &str) -> String {
        if self.fma {
            let ty = self.ty.clone();
            self.l.intrinsic("fma", &ty, &[a, b, c])
        } else {
            let p = self.mul(a, b);
            self.add(&p, c)
        }
    }

    /// `a * c + d` with a constant `c`.
    fn maddc(&mut self, a: &str, c: f32, d: &str) -> String {
        let c = self.f(c);
        self.madd(a, &c, d)
    }

    /// `sum coefs[i] * x^i` by Horner's rule.
    fn poly(&mut self, x: &str, coefs: &[f32]) -> String {
        let (last, rest) = coefs.split_last().unwrap_or((&0.0, &[]));
        let mut acc = self.f(*last);
        for c in rest.iter().rev() {
            let cv = self.f(*c);
            acc = self.madd(&acc, x, &cv);
        }
        acc
    }

    /// `a` where `mask` holds, else `b` (floats or integers of this shape).
    fn sel(&mut self, mask: &str, a: &str, b: &str, int: bool) -> String {
        let ty = if int { &self.ity } else { &self.ty };
        let line = format!("select {} {mask}, {ty} {a}, {ty} {b}", self.mask);
        self.l.ins(line)
    }

    fn fcmp(&mut self, cc: &str, a: &str, b: &str) -> String {
        let line = format!("fcmp {cc} {} {a}, {b}", self.ty);
        self.l.ins(line)
    }

    fn fcmpc(&mut self, cc: &str, a: &str, c: f32) -> String {
        let c = self.f(c);
        self.fcmp(cc, a, &c)
    }

    /// `c` where `a cc c`, else `a`.
    fn replace_if(&mut self, a: &str, cc: &str, c: f32) -> String {
        let m = self.fcmpc(cc, a, c);
        let cv = self.f(c);
        self.sel(&m, &cv, a, false)
    }

    fn shl(&mut self, x: &str, n: i32) -> String {
        let n = self.i(n);
        self.op("shl", x, &n)
    }

    fn sshr(&mut self, x: &str, n: i32) -> String {
        let n = self.i(n);
        self.op("ashr", x, &n)
    }

    fn iaddc(&mut self, x: &str, c: i32) -> String {
        let c = self.i(c);
        self.op("add", x, &c)
    }

    fn bandc(&mut self, x: &str, c: i32) -> String {
        let c = self.i(c);
        self.op("and", x, &c)
    }

    fn fabs(&mut self, x: &str) -> String {
        let ty = self.ty.clone();
        self.l.intrinsic("fabs", &ty, &[x])
    }

    /// `|x|` and the sign bit of `x` (as an integer).
    fn abs_sign(&mut self, x: &str) -> (String, String) {
        let a = self.fabs(x);
        let bits = self.bits(x);
        let sign = self.bandc(&bits, i32::MIN);
        (a, sign)
    }

    /// `y` with its sign bit flipped where `sign` (an integer sign bit) is set.
    fn xor_sign(&mut self, y: &str, sign: &str) -> String {
        let bits = self.bits(y);
        let r = self.op("xor", &bits, sign);
        self.float(&r)
    }

    /// Rounds `t` (|t| < 2^22) to an integer: (as a float, as an integer).
    fn round(&mut self, t_plus_magic: &str) -> (String, String) {
        let magic = self.f(MAGIC);
        let k = self.sub(t_plus_magic, &magic);
        let bits = self.bits(t_plus_magic);
        let ki = self.iaddc(&bits, -MAGIC.to_bits().cast_signed());
        (k, ki)
    }

    /// `2^n` for an integer `n` in [-126, 127].
    fn pow2(&mut self, n: &str) -> String {
        let biased = self.iaddc(n, 127);
        let bits = self.shl(&biased, 23);
        self.float(&bits)
    }

    fn exp(&mut self, x: &str) -> String {
        self.exp_scaled(x, 89.0, 0)
    }

    /// `exp(x) * 2^n` for `n` in {0, -1}, where `exp(hi) * 2^n` overflows.
    fn exp_scaled(&mut self, x: &str, hi: f32, n: i32) -> String {
        // Clamp (NaN compares false and stays): exp(-104) < 2^-150.
        let x = self.replace_if(x, "ogt", hi);
        let x = self.replace_if(&x, "olt", -104.0);
        let magic = self.f(MAGIC);
        let t = self.maddc(&x, LOG2E, &magic);
        let (k, ki) = self.round(&t);
        let r = self.maddc(&k, -LN2_HI, &x);
        let r = self.maddc(&k, -LN2_LO, &r);
        let q = self.poly(&r, &EXP_P);
        let r2 = self.mul(&r, &r);
        let p = self.madd(&r2, &q, &r);
        let one = self.f(1.0);
        let p = self.add(&p, &one);
        // 2^k = 2^k1 * 2^k2 with k1 = k >> 1: each factor is normal for k in [-151, 130].
        let ki = if n == 0 { ki } else { self.iaddc(&ki, n) };
        let k1 = self.sshr(&ki, 1);
        let k2 = self.op("sub", &ki, &k1);
        let s1 = self.pow2(&k1);
        let s2 = self.pow2(&k2);
        let y = self.mul(&p, &s1);
        self.mul(&y, &s2)
    }

    fn log(&mut self, x: &str) -> String {
        // Subnormals: scale by 2^23 and take 23 off the exponent.
        let tiny = self.fcmpc("olt", x, f32::MIN_POSITIVE);
        let scale = self.f(8_388_608.0);
        let scaled = self.mul(x, &scale);
        let xs = self.sel(&tiny, &scaled, x, false);
        let minus23 = self.i(-23);
        let zero_i = self.i(0);
        let eadj = self.sel(&tiny, &minus23, &zero_i, true);
        // x = m * 2^e, m in [sqrt(1/2), sqrt(2)).
        let sqrt_half = std::f32::consts::FRAC_1_SQRT_2.to_bits().cast_signed();
        let ix = self.bits(&xs);
        let ix = self.iaddc(&ix, -sqrt_half);
        let e = self.sshr(&ix, 23);
        let e = self.op("add", &e, &eadj);
        let mant = self.bandc(&ix, 0x007f_ffff);
        let mant = self.iaddc(&mant, sqrt_half);
        let m = self.float(&mant);
        let one = self.f(1.0);
        let f = self.sub(&m, &one);
        let two = self.f(2.0);
        let den = self.add(&two, &f);
        let s = self.div(&f, &den);
        let z = self.mul(&s, &s);
        let q = self.poly(&z, &LOG_Q);
        let r = self.mul(&z, &q);
        let half = self.f(0.5);
        let hf = self.mul(&half, &f);
        let hfsq = self.mul(&hf, &f);
        let line = format!("sitofp {} {e} to {}", self.ity, self.ty);
        let ef = self.l.ins(line);
        let lo = self.f(LN2_LO);
        let elo = self.mul(&ef, &lo);
        let hr = self.add(&hfsq, &r);
        let t = self.madd(&s, &hr, &elo);
        let t = self.sub(&t, &hfsq);
        let t = self.add(&t, &f);
        let y = self.maddc(&ef, LN2_HI, &t);
        // Special values.
        let m = self.fcmpc("oeq", x, f32::INFINITY);
        let inf = self.f(f32::INFINITY);
        let y = self.sel(&m, &inf, &y, false);
        let m = self.fcmpc("oeq", x, 0.0);
        let ninf = self.f(f32::NEG_INFINITY);
        let y = self.sel(&m, &ninf, &y, false);
        let m = self.fcmpc("olt", x, 0.0);
        let nan = self.f(f32::NAN);
        let y = self.sel(&m, &nan, &y, false);
        let m = self.fcmp("uno", x, x);
        self.sel(&m, x, &y, false)
    }

    fn tanh(&mut self, x: &str) -> String {
        let (a, sign) = self.abs_sign(x);
        // Small: a + a^3 P(a^2).
        let z = self.mul(&a, &a);
        let p = self.poly(&z, &TANH_P);
        let a3 = self.mul(&a, &z);
        let small = self.madd(&a3, &p, &a);
        // Large: 1 - 2 / (exp(2a) + 1) (exp overflows to +inf for large a: 1).
        let a2 = self.add(&a, &a);
        let e = self.exp(&a2);
        let one = self.f(1.0);
        let two = self.f(2.0);
        let e1 = self.add(&e, &one);
        let q = self.div(&two, &e1);
        let large = self.sub(&one, &q);
        let m = self.fcmpc("olt", &a, TANH_CUT);
        let y = self.sel(&m, &small, &large, false);
        self.xor_sign(&y, &sign)
    }

    fn erf(&mut self, x: &str) -> String {
        let (a, sign) = self.abs_sign(x);
        // Small: a + a P(a^2).
        let z = self.mul(&a, &a);
        let p = self.poly(&z, &ERF_P);
        let small = self.madd(&a, &p, &a);
        // Large: 1 - exp(-a^2 + G(a - mid)), a clamped to 4 (erf(4) rounds to 1).
        let ac = self.replace_if(&a, "ogt", ERF_MAX);
        let mid = self.f(ERF_MID);
        let d = self.sub(&ac, &mid);
        let g = self.poly(&d, &ERF_G);
        let line = format!("fneg {} {ac}", self.ty);
        let nac = self.l.ins(line);
        let y = self.madd(&nac, &ac, &g);
        let e = self.exp(&y);
        let one = self.f(1.0);
        let large = self.sub(&one, &e);
        let m = self.fcmpc("olt", &a, ERF_CUT);
        let y = self.sel(&m, &small, &large, false);
        self.xor_sign(&y, &sign)
    }

    /// `e^|x| / 2`, overflowing where cosh does.
    fn half_exp(&mut self, a: &str) -> String {
        self.exp_scaled(a, 90.0, -1)
    }

    fn cosh(&mut self, x: &str) -> String {
        let a = self.fabs(x);
        let h = self.half_exp(&a);
        let quarter = self.f(0.25);
        let q = self.div(&quarter, &h);
        self.add(&h, &q)
    }

    fn sinh(&mut self, x: &str) -> String {
        let (a, sign) = self.abs_sign(x);
        let z = self.mul(&a, &a);
        let p = self.poly(&z, &SINH_P);
        let a3 = self.mul(&a, &z);
        let small = self.madd(&a3, &p, &a);
        let h = self.half_exp(&a);
        let quarter = self.f(0.25);
        let q = self.div(&quarter, &h);
        let large = self.sub(&h, &q);
        let m = self.fcmpc("olt", &a, SINH_CUT);
        let y = self.sel(&m, &small, &large, false);
        self.xor_sign(&y, &sign)
    }

    fn atan(&mut self, x: &str) -> String {
        let (a, sign) = self.abs_sign(x);
        let big = self.fcmpc("ogt", &a, TAN_3PI_8);
        let mid = self.fcmpc("ogt", &a, TAN_PI_8);
        let one = self.f(1.0);
        let minus_one = self.f(-1.0);
        let t_big = self.div(&minus_one, &a);
        let num = self.sub(&a, &one);
        let den = self.add(&a, &one);
        let t_mid = self.div(&num, &den);
        let t = self.sel(&mid, &t_mid, &a, false);
        let t = self.sel(&big, &t_big, &t, false);
        let zero = self.f(0.0);
        let (pio4_hi, pio4_lo) = (self.f(PIO4_HI), self.f(PIO4_LO));
        let (pio2_hi, pio2_lo) = (self.f(PIO2_HI), self.f(PIO2_LO));
        let hi = self.sel(&mid, &pio4_hi, &zero, false);
        let hi = self.sel(&big, &pio2_hi, &hi, false);
        let lo = self.sel(&mid, &pio4_lo, &zero, false);
        let lo = self.sel(&big, &pio2_lo, &lo, false);
        // base + t + t^3 P(t^2), the small parts first.
        let z = self.mul(&t, &t);
        let p = self.poly(&z, &ATAN_P);
        let t3 = self.mul(&t, &z);
        let c = self.madd(&t3, &p, &lo);
        let y = self.add(&t, &c);
        let y = self.add(&hi, &y);
        self.xor_sign(&y, &sign)
    }

    fn sin_cos(&mut self, x: &str, which: Trig) -> String {
        let (a, sign) = self.abs_sign(x);
        // j = round(a * 2/pi), r = a - j pi/2 in four parts.
        let magic = self.f(MAGIC);
        let t = self.maddc(&a, TWO_OVER_PI, &magic);
        let (j, ji) = self.round(&t);
        let mut r = a.clone();
        for p in PIO2 {
            r = self.maddc(&j, -p, &r);
        }
        // On the GPU (scalars), `1e4 < |x| < inf` reduces with the bits of 2/pi instead, on
        // a cold path.
        let (r, ji) = if self.l.device && self.l.lanes == 1 {
            let over = self.fcmpc("ogt", &a, 1e4);
            let finite = self.fcmpc("olt", &a, f32::INFINITY);
            let big = self.l.ins(format!("and i1 {over}, {finite}"));
            let (from, cold, done) = (self.l.block("hot"), self.l.block("cold"), self.l.block("done"));
            self.l.jump(&from);
            self.l.start(&from);
            self.l.emit(format!("br i1 {big}, label %{cold}, label %{done}, !prof !0"));
            self.l.start(&cold);
            let (big_r, big_j) = super::dmath::reduce_pio2(self.l, &a);
            let cold_end = self.l.block("coldend");
            self.l.jump(&cold_end);
            self.l.start(&cold_end);
            self.l.jump(&done);
            self.l.start(&done);
            let r = self.l.ins(format!("phi float [ {r}, %{from} ], [ {big_r}, %{cold_end} ]"));
            let ji = self.l.ins(format!("phi i32 [ {ji}, %{from} ], [ {big_j}, %{cold_end} ]"));
            (r, ji)
        } else {
            (r, ji)
        };
        let z = self.mul(&r, &r);
        // sin(r) = r + r^3 S(z).
        let s = self.poly(&z, &SIN_S);
        let r3 = self.mul(&r, &z);
        let sin = self.madd(&r3, &s, &r);
        // cos(r) = (1 - z/2) + z^2 C(z).
        let c = self.poly(&z, &COS_C);
        let one = self.f(1.0);
        let h = self.maddc(&z, -0.5, &one);
        let z2 = self.mul(&z, &z);
        let cos = self.madd(&z2, &c, &h);
        // Quadrant q = j (+1 for cos): odd q takes the cosine, q & 2 negates; tan is
        // sin/cos for even j, -cos/sin for odd j.
        let q = if which == Trig::Cos { self.iaddc(&ji, 1) } else { ji };
        let odd = self.bandc(&q, 1);
        let zero = self.i(0);
        let line = format!("icmp eq {} {odd}, {zero}", self.ity);
        let is_even = self.l.ins(line);
        let y = match which {
            Trig::Sin | Trig::Cos => {
                let y = self.sel(&is_even, &sin, &cos, false);
                let neg = self.bandc(&q, 2);
                let neg = self.shl(&neg, 30);
                self.xor_sign(&y, &neg)
            }
            Trig::Tan => {
                let n = self.sel(&is_even, &sin, &cos, false);
                let d = self.sel(&is_even, &cos, &sin, false);
                let y = self.div(&n, &d);
                let neg = self.shl(&odd, 31);
                self.xor_sign(&y, &neg)
            }
        };
        if which == Trig::Cos { y } else { self.xor_sign(&y, &sign) }
    }
}
