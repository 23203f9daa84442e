//! The f64 math the generated CPU code calls: `extern "C"` wrappers around exactly the
//! Rust functions the reference interpreter uses on f64 (`f64::exp`, `libm::erf`, ...),
//! so the JIT agrees with the reference bit for bit. Like the f32 helpers of
//! `cranelift/libcalls.rs`, an object file calls the C library's function instead
//! (`atomc_exp` -> `exp`). The GPU has no host helpers: `dmath.rs` computes these there.

use crate::cranelift::libcalls::{Helper, unary_helpers};
use ir::atom::BinaryFn;

unary_helpers! {
    f64;
    Exp => atomc_exp: f64::exp,
    Log => atomc_log: f64::ln,
    Sin => atomc_sin: f64::sin,
    Cos => atomc_cos: f64::cos,
    Tan => atomc_tan: f64::tan,
    Asin => atomc_asin: f64::asin,
    Acos => atomc_acos: f64::acos,
    Atan => atomc_atan: f64::atan,
    Sinh => atomc_sinh: f64::sinh,
    Cosh => atomc_cosh: f64::cosh,
    Asinh => atomc_asinh: f64::asinh,
    Acosh => atomc_acosh: f64::acosh,
    Atanh => atomc_atanh: f64::atanh,
    Tanh => atomc_tanh: f64::tanh,
    Erf => atomc_erf: libm::erf,
}

extern "C" fn atomc_pow(a: f64, b: f64) -> f64 {
    a.powf(b)
}

/// C `fmod`: the sign of the dividend.
extern "C" fn atomc_fmod(a: f64, b: f64) -> f64 {
    a % b
}

/// The helper computing `f` on two f64 operands, if there is one.
pub(super) fn binary(f: BinaryFn) -> Option<&'static str> {
    match f {
        BinaryFn::Pow => Some("atomc_pow"),
        BinaryFn::Fmod => Some("atomc_fmod"),
        _ => None,
    }
}

/// Every f64 helper, to register with the JIT and rename in objects.
pub(super) fn all() -> Vec<Helper> {
    let mut v = unary_all();
    v.push(Helper { name: "atomc_pow", addr: atomc_pow as *const u8, arity: 2 });
    v.push(Helper { name: "atomc_fmod", addr: atomc_fmod as *const u8, arity: 2 });
    v
}
