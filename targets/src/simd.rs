//! The FMA throughput kernels [`crate::calibrate`] times: 12 independent chains of f32
//! fused multiply-adds on vectors of 128, 256 or 512 bits, enough chains to cover the FMA
//! latency of every current core (latency 4-5 cycles x 2 units) within 16 registers.
//!
//! Why unsafe is allowed here and sound: the 256- and 512-bit kernels (and the 128-bit one
//! with FMA3) are `#[target_feature]` functions, which may only be called where the CPU has
//! those features. [`fma_chains`] calls each only after `is_x86_feature_detected!` has
//! confirmed the features at run time; the kernels themselves touch no memory (no pointer
//! intrinsics), so the only obligation is that feature check.
#![allow(unsafe_code)]

/// Independent accumulator chains per kernel.
pub const CHAINS: u64 = 12;

/// Runs `iters` iterations of [`CHAINS`] FMAs on `bits`-wide f32 vectors and returns a value
/// depending on every chain (so nothing is optimized away); `None` when this CPU has no
/// such vectors. Without FMA3, the 128-bit kernel multiplies then adds (what code for
/// that CPU does).
pub fn fma_chains(bits: u32, iters: u64) -> Option<f32> {
    let (a, b) = (std::hint::black_box(0.999_999f32), std::hint::black_box(1e-6f32));
    arch::fma_chains(bits, iters, a, b)
}

#[cfg(target_arch = "x86_64")]
mod arch {
    use std::arch::x86_64::*;

    macro_rules! kernel {
        ($name:ident, $feat:literal, $vec:ty, $set1:ident, $step:ident, $first:ident, $add:ident) => {
            #[target_feature(enable = $feat)]
            fn $name(iters: u64, a: f32, b: f32) -> f32 {
                let (va, vb) = ($set1(a), $set1(b));
                let mut acc: [$vec; 12] = [$set1(1.0); 12];
                for _ in 0..iters {
                    for x in acc.iter_mut() {
                        *x = $step(*x, va, vb);
                    }
                }
                let mut s = acc[0];
                for x in &acc[1..] {
                    s = $add(s, *x);
                }
                $first(s)
            }
        };
    }

    /// `x * a + b` without FMA3: two SSE instructions.
    #[target_feature(enable = "sse2")]
    fn mul_add_ps(x: __m128, a: __m128, b: __m128) -> __m128 {
        _mm_add_ps(_mm_mul_ps(x, a), b)
    }

    kernel!(fma128, "fma", __m128, _mm_set1_ps, _mm_fmadd_ps, _mm_cvtss_f32, _mm_add_ps);
    kernel!(muladd128, "sse2", __m128, _mm_set1_ps, mul_add_ps, _mm_cvtss_f32, _mm_add_ps);
    kernel!(fma256, "avx,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_cvtss_f32, _mm256_add_ps);
    kernel!(fma512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_cvtss_f32, _mm512_add_ps);

    pub fn fma_chains(bits: u32, iters: u64, a: f32, b: f32) -> Option<f32> {
        let fma = is_x86_feature_detected!("fma");
        // SAFETY: each kernel runs only when the features it enables are present.
        match bits {
            128 if fma => Some(unsafe { fma128(iters, a, b) }),
            128 if is_x86_feature_detected!("sse2") => Some(unsafe { muladd128(iters, a, b) }),
            256 if fma && is_x86_feature_detected!("avx") => Some(unsafe { fma256(iters, a, b) }),
            512 if is_x86_feature_detected!("avx512f") => Some(unsafe { fma512(iters, a, b) }),
            _ => None,
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use std::arch::aarch64::*;

    /// NEON is part of the AArch64 base ISA: no run-time check is needed.
    pub fn fma_chains(bits: u32, iters: u64, a: f32, b: f32) -> Option<f32> {
        if bits != 128 {
            return None;
        }
        let (va, vb) = (vdupq_n_f32(a), vdupq_n_f32(b));
        let mut acc = [vdupq_n_f32(1.0); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = vfmaq_f32(vb, *x, va);
            }
        }
        Some(acc.iter().map(|x| vgetq_lane_f32::<0>(*x)).sum())
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod arch {
    /// Portable code: 4-lane arrays the compiler may vectorize.
    pub fn fma_chains(bits: u32, iters: u64, a: f32, b: f32) -> Option<f32> {
        if bits != 128 {
            return None;
        }
        let mut acc = [[1.0f32; 4]; 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                for l in x.iter_mut() {
                    *l = l.mul_add(a, b);
                }
            }
        }
        Some(acc.iter().map(|x| x[0]).sum())
    }
}
