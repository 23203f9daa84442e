//! Math functions the generated code calls: `extern "C"` wrappers around exactly the Rust
//! functions the reference interpreter uses (`f32::exp`, `libm::erff`, ...), so JIT and
//! reference agree bit for bit. (Vectorized polynomial versions come later.)

use ir::atom::BinaryFn;

/// A unary f32 helper: its symbol and address.
pub(crate) struct Helper {
    pub name: &'static str,
    pub addr: *const u8,
    pub arity: usize,
}

/// Defines, in the module that invokes it, one `extern "C"` helper per unary function on
/// one element type (`$t`), `unary(f)` (the helper's name) and `unary_all()` (every helper
/// with its address): for the f32 helpers here and the LLVM backend's f64 ones.
macro_rules! unary_helpers {
    ($t:ty; $($f:ident => $name:ident: $body:expr),* $(,)?) => {
        $(
            extern "C" fn $name(x: $t) -> $t {
                let f: fn($t) -> $t = $body;
                f(x)
            }
        )*
        #[doc = concat!("The helper computing `f` on ", stringify!($t), ", if there is one.")]
        pub(crate) fn unary(f: ir::atom::UnaryFn) -> Option<&'static str> {
            match f {
                $(ir::atom::UnaryFn::$f => Some(stringify!($name)),)*
                _ => None,
            }
        }
        fn unary_all() -> Vec<$crate::cranelift::libcalls::Helper> {
            vec![$($crate::cranelift::libcalls::Helper { name: stringify!($name), addr: $name as *const u8, arity: 1 }),*]
        }
    };
}
#[cfg_attr(not(feature = "llvm"), allow(unused_imports))] // used by llvm/helpers64.rs
pub(crate) use unary_helpers;

unary_helpers! {
    f32;
    Exp => atomc_expf: f32::exp,
    Log => atomc_logf: f32::ln,
    Sin => atomc_sinf: f32::sin,
    Cos => atomc_cosf: f32::cos,
    Tan => atomc_tanf: f32::tan,
    Asin => atomc_asinf: f32::asin,
    Acos => atomc_acosf: f32::acos,
    Atan => atomc_atanf: f32::atan,
    Sinh => atomc_sinhf: f32::sinh,
    Cosh => atomc_coshf: f32::cosh,
    Asinh => atomc_asinhf: f32::asinh,
    Acosh => atomc_acoshf: f32::acosh,
    Atanh => atomc_atanhf: f32::atanh,
    Tanh => atomc_tanhf: f32::tanh,
    Erf => atomc_erff: libm::erff,
}

extern "C" fn atomc_powf(a: f32, b: f32) -> f32 {
    a.powf(b)
}

/// C `fmod`: the sign of the dividend.
extern "C" fn atomc_fmodf(a: f32, b: f32) -> f32 {
    a % b
}

/// Python `%`: the sign of the divisor.
extern "C" fn atomc_modf(a: f32, b: f32) -> f32 {
    let r = a % b;
    if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
        r + b
    } else {
        r
    }
}

/// The helper computing `f` on two f32 operands, if there is one. (`Mod` of floats is
/// invalid in the reference: floats take `Fmod`.)
pub(crate) fn binary(f: BinaryFn) -> Option<&'static str> {
    match f {
        BinaryFn::Pow => Some("atomc_powf"),
        BinaryFn::Fmod => Some("atomc_fmodf"),
        _ => None,
    }
}

/// Every helper, to register with the JIT and declare in the module.
pub(crate) fn all() -> Vec<Helper> {
    let mut v = unary_all();
    v.push(Helper {
        name: "atomc_powf",
        addr: atomc_powf as *const u8,
        arity: 2,
    });
    v.push(Helper {
        name: "atomc_fmodf",
        addr: atomc_fmodf as *const u8,
        arity: 2,
    });
    v.push(Helper {
        name: "atomc_modf",
        addr: atomc_modf as *const u8,
        arity: 2,
    });
    v
}
