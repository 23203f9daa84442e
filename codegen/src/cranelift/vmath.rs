//! Polynomial f32 transcendentals emitted inline as Cranelift IR (no libm call), for `F32`
//! and `F32X4` values alike: one instruction sequence whose lanes are independent, so a
//! vector loop and its scalar tail agree bit for bit.
//!
//! Techniques: `exp` rounds `x*log2(e)` to an integer `k` with the 1.5*2^23 trick, reduces
//! by `ln 2` in two parts (Cody-Waite), evaluates a degree-6 polynomial and scales by `2^k`
//! built from exponent bits in two steps (so overflow gives +inf and underflow rounds once
//! into the subnormals). `log` splits `x = m*2^e` with `m` in `[sqrt(1/2), sqrt(2))` from
//! the bits (subnormals scaled up first) and uses `log(1+f) = f - f^2/2 + s(f^2/2 + R(s^2))`,
//! `s = f/(2+f)`. `tanh` is an odd polynomial below 0.625, else `1 - 2/(exp(2|x|)+1)`.
//! `erf` is `x + x P(x^2)` below 0.875, else `1 - exp(-x^2 + G(|x|))` (|x| clamped to 4,
//! where erf rounds to 1). `sin`/`cos`/`tan` reduce `|x|` by pi/2 in four parts (three of
//! 11 bits, so `j*part` is exact without FMA for `j < 2^13`), evaluate the sine and cosine
//! polynomials on `|r| <= pi/4` and pick, divide and sign by the quadrant. `atan` maps
//! `|x|` above tan(pi/8) to `(|x|-1)/(|x|+1)` (+pi/4) or `-1/|x|` (+pi/2) and evaluates an
//! odd polynomial. `sinh`/`cosh` are `h -+ 1/(4h)` with `h = exp(|x|)/2` (scaled inside
//! `exp`, so no early overflow), `sinh` an odd polynomial below 1. Odd functions are
//! computed on `|x|` and take the sign of `x` (so `f(-0) = -0`). Coefficients: weighted
//! minimax fits from `codegen/tools/vmath_coefs.py`.
//!
//! Measured maximum errors against an f64 reference (`vmath_tests.rs`: a grid of 2^18 points
//! and 2^18 random bit patterns in the domain, cut points, special values; scalar and vector
//! bit for bit identical), without FMA / with FMA:
//!
//! | function | domain        | max error (ulp) | max relative error | test bound |
//! |----------|---------------|-----------------|--------------------|------------|
//! | exp      | [-104, 89]    | 0.93 / 0.99     | 7.8e-8 / 8.2e-8    | 1.5 ulp    |
//! | log      | (0, MAX]      | 0.74 / 0.74     | 7.5e-8 / 7.5e-8    | 1.5 ulp    |
//! | tanh     | [-12, 12]     | 1.22 / 1.22     | 1.3e-7 / 1.3e-7    | 2 ulp      |
//! | erf      | [-6, 6]       | 1.21 / 1.09     | 8.9e-8 / 8.3e-8    | 2 ulp      |
//! | sin      | [-1e4, 1e4]   | 2.16 / 2.16     | 1.7e-7 / 1.7e-7    | 3 ulp      |
//! | cos      | [-1e4, 1e4]   | 2.23 / 2.23     | 1.6e-7 / 1.6e-7    | 3 ulp      |
//! | tan      | [-1e4, 1e4]   | 3.42 / 3.42     | 2.5e-7 / 2.7e-7    | 4 ulp      |
//! | atan     | [-MAX, MAX]   | 1.73 / 1.73     | 1.3e-7 / 1.3e-7    | 2.5 ulp    |
//! | sinh     | [-90, 90]     | 1.53 / 1.53     | 1.2e-7 / 1.2e-7    | 2 ulp      |
//! | cosh     | [-90, 90]     | 1.36 / 1.36     | 1.2e-7 / 1.2e-7    | 2 ulp      |
//!
//! (ulp: of the f64 reference rounded to f32, subnormal spacing below the normals; relative
//! error where the reference is a normal f32. Outside the domains shown exp overflows or
//! underflows, tanh and erf are +-1 and sinh/cosh overflow, all as they should.)
//!
//! Valid ranges: every f32 for exp, log, tanh, erf, atan, sinh and cosh. sin, cos and tan
//! meet the bound for `|x| <= 1e4` (including the f32 closest to multiples of pi/2 there);
//! beyond that the reduction loses accuracy and above about 2^22 the results are
//! meaningless, so the kernel lowering (`lower.rs`) sends lanes with `|x| > 1e4` (and
//! infinities and NaN) to the reference's function on a cold path.
//! Special values: NaN gives NaN; exp(+inf) = +inf, exp(-inf) = 0, overflow +inf, underflow
//! 0 or a subnormal; log(0) = -inf, log(x < 0) = NaN, log(+inf) = +inf; tanh(+-inf) = +-1;
//! erf(+-inf) = +-1; sin/cos/tan(+-inf) = NaN; atan(+-inf) = +-pi/2; sinh(+-inf) = +-inf,
//! cosh(+-inf) = +inf.
//!
//! Not here (`emit` gives None): asin, acos, asinh, acosh, atanh, and every
//! non-transcendental.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use crate::vmath_coefs::*;
use ir::atom::UnaryFn;

/// Whether `f` has a polynomial here (then [`emit`] gives `Some` for F32 and F32X4): the
/// Cranelift backend computes it within a few ulp of the reference, not bit for bit.
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

/// Emits f(x) for x of type F32 or F32X4; None if `f` has no polynomial here.
/// `fma`: whether the ISA has fused multiply-add (then use the `fma` instruction in the
/// polynomial evaluation, else fmul+fadd).
/// Pass `module.isa().has_native_fma()`: without native FMA each `fma` becomes an `fmaf`
/// call per lane.
pub(crate) fn emit(b: &mut FunctionBuilder, f: UnaryFn, x: Value, fma: bool) -> Option<Value> {
    let ty = b.func.dfg.value_type(x);
    let ity = if ty == types::F32 {
        types::I32
    } else if ty == types::F32X4 {
        types::I32X4
    } else {
        return None;
    };
    let mut e = Emit { b, ty, ity, fma };
    match f {
        UnaryFn::Exp => Some(e.exp(x)),
        UnaryFn::Log => Some(e.log(x)),
        UnaryFn::Tanh => Some(e.tanh(x)),
        UnaryFn::Erf => Some(e.erf(x)),
        UnaryFn::Sin => Some(e.sin_cos(x, Trig::Sin)),
        UnaryFn::Cos => Some(e.sin_cos(x, Trig::Cos)),
        UnaryFn::Tan => Some(e.sin_cos(x, Trig::Tan)),
        UnaryFn::Atan => Some(e.atan(x)),
        UnaryFn::Sinh => Some(e.sinh(x)),
        UnaryFn::Cosh => Some(e.cosh(x)),
        UnaryFn::Neg
        | UnaryFn::Abs
        | UnaryFn::Sign
        | UnaryFn::Sqrt
        | UnaryFn::Recip
        | UnaryFn::Asin
        | UnaryFn::Acos
        | UnaryFn::Asinh
        | UnaryFn::Acosh
        | UnaryFn::Atanh
        | UnaryFn::Floor
        | UnaryFn::Ceil
        | UnaryFn::Round
        | UnaryFn::Not
        | UnaryFn::BitNot
        | UnaryFn::IsNaN => None,
    }
}

/// Which function of the pi/2 reduction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trig {
    Sin,
    Cos,
    Tan,
}

/// The emitter: `ty` is F32 or F32X4, `ity` the integer type of the same shape.
struct Emit<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    ty: Type,
    ity: Type,
    fma: bool,
}

impl Emit<'_, '_> {
    fn vector(&self) -> bool {
        self.ty.is_vector()
    }

    /// A float constant of type `ty`.
    fn f(&mut self, c: f32) -> Value {
        let v = self.b.ins().f32const(c);
        if self.vector() {
            self.b.ins().splat(self.ty, v)
        } else {
            v
        }
    }

    /// An integer constant of type `ity`.
    fn i(&mut self, c: i32) -> Value {
        let v = self.b.ins().iconst(types::I32, i64::from(c));
        if self.vector() {
            self.b.ins().splat(self.ity, v)
        } else {
            v
        }
    }

    fn bits(&mut self, x: Value) -> Value {
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(self.ity, flags, x)
    }

    fn float(&mut self, x: Value) -> Value {
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(self.ty, flags, x)
    }

    fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }

    fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }

    fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }

    /// `a * b + c`, fused when the ISA has FMA.
    fn madd(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// `a * c + d` with a constant `c`.
    fn maddc(&mut self, a: Value, c: f32, d: Value) -> Value {
        let c = self.f(c);
        self.madd(a, c, d)
    }

    /// `sum coefs[i] * x^i` by Horner's rule.
    fn poly(&mut self, x: Value, coefs: &[f32]) -> Value {
        let (last, rest) = coefs.split_last().unwrap_or((&0.0, &[]));
        let mut acc = self.f(*last);
        for c in rest.iter().rev() {
            let cv = self.f(*c);
            acc = self.madd(acc, x, cv);
        }
        acc
    }

    /// `a` where `mask` holds, else `b` (`mask` from an `fcmp`/`icmp` of this shape).
    fn sel(&mut self, mask: Value, a: Value, b: Value) -> Value {
        if self.vector() {
            let at = self.b.func.dfg.value_type(a);
            let mt = self.b.func.dfg.value_type(mask);
            let m = if mt == at {
                mask
            } else {
                let flags = MemFlagsData::new().with_endianness(Endianness::Little);
                self.b.ins().bitcast(at, flags, mask)
            };
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().select(mask, a, b)
        }
    }

    fn fcmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(cc, a, b)
    }

    fn fcmpc(&mut self, cc: FloatCC, a: Value, c: f32) -> Value {
        let c = self.f(c);
        self.b.ins().fcmp(cc, a, c)
    }

    /// `c` where `a cc c`, else `a`.
    fn replace_if(&mut self, a: Value, cc: FloatCC, c: f32) -> Value {
        let m = self.fcmpc(cc, a, c);
        let cv = self.f(c);
        self.sel(m, cv, a)
    }

    /// Integer shift (the amount is a scalar for vectors).
    fn shl(&mut self, x: Value, n: i32) -> Value {
        let n = self.b.ins().iconst(types::I32, i64::from(n));
        self.b.ins().ishl(x, n)
    }

    fn sshr(&mut self, x: Value, n: i32) -> Value {
        let n = self.b.ins().iconst(types::I32, i64::from(n));
        self.b.ins().sshr(x, n)
    }

    fn iaddc(&mut self, x: Value, c: i32) -> Value {
        let c = self.i(c);
        self.b.ins().iadd(x, c)
    }

    fn bandc(&mut self, x: Value, c: i32) -> Value {
        let c = self.i(c);
        self.b.ins().band(x, c)
    }

    /// `|x|` and the sign bit of `x` (as an integer).
    fn abs_sign(&mut self, x: Value) -> (Value, Value) {
        let a = self.b.ins().fabs(x);
        let bits = self.bits(x);
        let sign = self.bandc(bits, i32::MIN);
        (a, sign)
    }

    /// `y` with its sign bit flipped where `sign` (an integer sign bit) is set.
    fn xor_sign(&mut self, y: Value, sign: Value) -> Value {
        let bits = self.bits(y);
        let r = self.b.ins().bxor(bits, sign);
        self.float(r)
    }

    /// Rounds `t` (|t| < 2^22) to an integer: (as a float, as an integer).
    fn round(&mut self, t_plus_magic: Value) -> (Value, Value) {
        let magic = self.f(MAGIC);
        let k = self.sub(t_plus_magic, magic);
        let bits = self.bits(t_plus_magic);
        let ki = self.iaddc(bits, -MAGIC.to_bits().cast_signed());
        (k, ki)
    }

    /// `2^n` for an integer `n` in [-126, 127].
    fn pow2(&mut self, n: Value) -> Value {
        let biased = self.iaddc(n, 127);
        let bits = self.shl(biased, 23);
        self.float(bits)
    }

    fn exp(&mut self, x: Value) -> Value {
        self.exp_scaled(x, 89.0, 0)
    }

    /// `exp(x) * 2^n` for `n` in {0, -1}, where `exp(hi) * 2^n` overflows.
    fn exp_scaled(&mut self, x: Value, hi: f32, n: i32) -> Value {
        // Clamp (NaN compares false and stays): exp(-104) < 2^-150.
        let x = self.replace_if(x, FloatCC::GreaterThan, hi);
        let x = self.replace_if(x, FloatCC::LessThan, -104.0);
        let magic = self.f(MAGIC);
        let t = self.maddc(x, LOG2E, magic);
        let (k, ki) = self.round(t);
        let r = self.maddc(k, -LN2_HI, x);
        let r = self.maddc(k, -LN2_LO, r);
        let q = self.poly(r, &EXP_P);
        let r2 = self.mul(r, r);
        let p = self.madd(r2, q, r);
        let one = self.f(1.0);
        let p = self.add(p, one);
        // 2^k = 2^k1 * 2^k2 with k1 = k >> 1: each factor is normal for k in [-151, 130].
        let ki = if n == 0 { ki } else { self.iaddc(ki, n) };
        let k1 = self.sshr(ki, 1);
        let k2 = self.b.ins().isub(ki, k1);
        let s1 = self.pow2(k1);
        let s2 = self.pow2(k2);
        let y = self.mul(p, s1);
        self.mul(y, s2)
    }

    fn log(&mut self, x: Value) -> Value {
        // Subnormals: scale by 2^23 and take 23 off the exponent.
        let tiny = self.fcmpc(FloatCC::LessThan, x, f32::MIN_POSITIVE);
        let scale = self.f(8_388_608.0);
        let scaled = self.mul(x, scale);
        let xs = self.sel(tiny, scaled, x);
        let minus23 = self.i(-23);
        let zero_i = self.i(0);
        let eadj = self.sel(tiny, minus23, zero_i);
        // x = m * 2^e, m in [sqrt(1/2), sqrt(2)).
        let sqrt_half = std::f32::consts::FRAC_1_SQRT_2.to_bits().cast_signed();
        let ix = self.bits(xs);
        let ix = self.iaddc(ix, -sqrt_half);
        let e = self.sshr(ix, 23);
        let e = self.b.ins().iadd(e, eadj);
        let mant = self.bandc(ix, 0x007f_ffff);
        let mant = self.iaddc(mant, sqrt_half);
        let m = self.float(mant);
        let one = self.f(1.0);
        let f = self.sub(m, one);
        let two = self.f(2.0);
        let den = self.add(two, f);
        let s = self.b.ins().fdiv(f, den);
        let z = self.mul(s, s);
        let q = self.poly(z, &LOG_Q);
        let r = self.mul(z, q);
        let half = self.f(0.5);
        let hf = self.mul(half, f);
        let hfsq = self.mul(hf, f);
        let ef = self.b.ins().fcvt_from_sint(self.ty, e);
        let lo = self.f(LN2_LO);
        let elo = self.mul(ef, lo);
        let hr = self.add(hfsq, r);
        let t = self.madd(s, hr, elo);
        let t = self.sub(t, hfsq);
        let t = self.add(t, f);
        let y = self.maddc(ef, LN2_HI, t);
        // Special values.
        let y = {
            let m = self.fcmpc(FloatCC::Equal, x, f32::INFINITY);
            let inf = self.f(f32::INFINITY);
            self.sel(m, inf, y)
        };
        let y = {
            let m = self.fcmpc(FloatCC::Equal, x, 0.0);
            let ninf = self.f(f32::NEG_INFINITY);
            self.sel(m, ninf, y)
        };
        let y = {
            let m = self.fcmpc(FloatCC::LessThan, x, 0.0);
            let nan = self.f(f32::NAN);
            self.sel(m, nan, y)
        };
        let m = self.fcmp(FloatCC::Unordered, x, x);
        self.sel(m, x, y)
    }

    fn tanh(&mut self, x: Value) -> Value {
        let (a, sign) = self.abs_sign(x);
        // Small: a + a^3 P(a^2).
        let z = self.mul(a, a);
        let p = self.poly(z, &TANH_P);
        let a3 = self.mul(a, z);
        let small = self.madd(a3, p, a);
        // Large: 1 - 2 / (exp(2a) + 1) (exp overflows to +inf for large a: 1).
        let a2 = self.add(a, a);
        let e = self.exp(a2);
        let one = self.f(1.0);
        let two = self.f(2.0);
        let e1 = self.add(e, one);
        let q = self.b.ins().fdiv(two, e1);
        let large = self.sub(one, q);
        let m = self.fcmpc(FloatCC::LessThan, a, TANH_CUT);
        let y = self.sel(m, small, large);
        self.xor_sign(y, sign)
    }

    fn erf(&mut self, x: Value) -> Value {
        let (a, sign) = self.abs_sign(x);
        // Small: a + a P(a^2).
        let z = self.mul(a, a);
        let p = self.poly(z, &ERF_P);
        let small = self.madd(a, p, a);
        // Large: 1 - exp(-a^2 + G(a - mid)), a clamped to 4 (erf(4) rounds to 1).
        let ac = self.replace_if(a, FloatCC::GreaterThan, ERF_MAX);
        let mid = self.f(ERF_MID);
        let d = self.sub(ac, mid);
        let g = self.poly(d, &ERF_G);
        let nac = self.b.ins().fneg(ac);
        let y = self.madd(nac, ac, g);
        let e = self.exp(y);
        let one = self.f(1.0);
        let large = self.sub(one, e);
        let m = self.fcmpc(FloatCC::LessThan, a, ERF_CUT);
        let y = self.sel(m, small, large);
        self.xor_sign(y, sign)
    }

    /// `e^|x| / 2`, overflowing where cosh does.
    fn half_exp(&mut self, a: Value) -> Value {
        self.exp_scaled(a, 90.0, -1)
    }

    fn cosh(&mut self, x: Value) -> Value {
        let a = self.b.ins().fabs(x);
        let h = self.half_exp(a);
        let quarter = self.f(0.25);
        let q = self.b.ins().fdiv(quarter, h);
        self.add(h, q)
    }

    fn sinh(&mut self, x: Value) -> Value {
        let (a, sign) = self.abs_sign(x);
        let z = self.mul(a, a);
        let p = self.poly(z, &SINH_P);
        let a3 = self.mul(a, z);
        let small = self.madd(a3, p, a);
        let h = self.half_exp(a);
        let quarter = self.f(0.25);
        let q = self.b.ins().fdiv(quarter, h);
        let large = self.sub(h, q);
        let m = self.fcmpc(FloatCC::LessThan, a, SINH_CUT);
        let y = self.sel(m, small, large);
        self.xor_sign(y, sign)
    }

    fn atan(&mut self, x: Value) -> Value {
        let (a, sign) = self.abs_sign(x);
        let big = self.fcmpc(FloatCC::GreaterThan, a, TAN_3PI_8);
        let mid = self.fcmpc(FloatCC::GreaterThan, a, TAN_PI_8);
        let one = self.f(1.0);
        let minus_one = self.f(-1.0);
        let t_big = self.b.ins().fdiv(minus_one, a);
        let num = self.sub(a, one);
        let den = self.add(a, one);
        let t_mid = self.b.ins().fdiv(num, den);
        let t = self.sel(mid, t_mid, a);
        let t = self.sel(big, t_big, t);
        let zero = self.f(0.0);
        let (pio4_hi, pio4_lo) = (self.f(PIO4_HI), self.f(PIO4_LO));
        let (pio2_hi, pio2_lo) = (self.f(PIO2_HI), self.f(PIO2_LO));
        let hi = self.sel(mid, pio4_hi, zero);
        let hi = self.sel(big, pio2_hi, hi);
        let lo = self.sel(mid, pio4_lo, zero);
        let lo = self.sel(big, pio2_lo, lo);
        // base + t + t^3 P(t^2), the small parts first.
        let z = self.mul(t, t);
        let p = self.poly(z, &ATAN_P);
        let t3 = self.mul(t, z);
        let c = self.madd(t3, p, lo);
        let y = self.add(t, c);
        let y = self.add(hi, y);
        self.xor_sign(y, sign)
    }

    fn sin_cos(&mut self, x: Value, which: Trig) -> Value {
        let (a, sign) = self.abs_sign(x);
        // j = round(a * 2/pi), r = a - j pi/2 in four parts.
        let magic = self.f(MAGIC);
        let t = self.maddc(a, TWO_OVER_PI, magic);
        let (j, ji) = self.round(t);
        let mut r = a;
        for p in PIO2 {
            r = self.maddc(j, -p, r);
        }
        let z = self.mul(r, r);
        // sin(r) = r + r^3 S(z).
        let s = self.poly(z, &SIN_S);
        let r3 = self.mul(r, z);
        let sin = self.madd(r3, s, r);
        // cos(r) = (1 - z/2) + z^2 C(z).
        let c = self.poly(z, &COS_C);
        let one = self.f(1.0);
        let h = self.maddc(z, -0.5, one);
        let z2 = self.mul(z, z);
        let cos = self.madd(z2, c, h);
        // Quadrant q = j (+1 for cos): odd q takes the cosine, q & 2 negates; tan is
        // sin/cos for even j, -cos/sin for odd j.
        let q = if which == Trig::Cos {
            self.iaddc(ji, 1)
        } else {
            ji
        };
        let odd = self.bandc(q, 1);
        let zero = self.i(0);
        let is_even = self.b.ins().icmp(IntCC::Equal, odd, zero);
        let y = match which {
            Trig::Sin | Trig::Cos => {
                let y = self.sel(is_even, sin, cos);
                let neg = self.bandc(q, 2);
                let neg = self.shl(neg, 30);
                self.xor_sign(y, neg)
            }
            Trig::Tan => {
                let n = self.sel(is_even, sin, cos);
                let d = self.sel(is_even, cos, sin);
                let y = self.b.ins().fdiv(n, d);
                let neg = self.shl(odd, 31);
                self.xor_sign(y, neg)
            }
        };
        if which == Trig::Cos {
            y
        } else {
            self.xor_sign(y, sign)
        }
    }
}
