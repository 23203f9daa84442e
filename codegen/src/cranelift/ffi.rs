//! The only unsafe code of the crate: turning the JIT's code address into a function
//! pointer, calling it, and freeing the JIT memory. Callers check every buffer first.
#![allow(unsafe_code)]

use cranelift_jit::JITModule;

use super::{JitKernel, RuntimeError};
use crate::Error;

/// The ABI of a compiled kernel: the buffer base pointers (inputs, then the output, then
/// null or the kernel's prepared data), and the share `[begin, end)` of the parallel range
/// to run; 0 on success.
type KernelFn = extern "C" fn(*const *mut u8, i64, i64) -> i32;

/// Calls the compiled kernel at `code`.
///
/// `code` must be the finalized address of a function built by `lower` with the [`KernelFn`]
/// signature, for a kernel whose input buffers have exactly the byte lengths of `inputs` and
/// whose output buffer has the byte length of `output` (checked by `JitKernel::run`).
/// `prepared` is what `JitKernel::prepare` gave for these inputs, when it gives anything.
pub(crate) fn call(code: *const u8, inputs: &[&[u8]], output: &mut [u8], prepared: Option<&[f32]>, extent: usize) -> i32 {
    let mut ptrs: Vec<*mut u8> = inputs.iter().map(|b| b.as_ptr().cast_mut()).collect();
    ptrs.push(output.as_mut_ptr());
    ptrs.push(prepared.map_or(std::ptr::null_mut(), |p| p.as_ptr().cast::<u8>().cast_mut()));
    // SAFETY: `code` points to finalized, executable code of a function with the signature
    // `KernelFn` (the JIT module that owns it lives as long as the `JitKernel` calling us),
    // and function pointers and data pointers have one size on every host Cranelift targets.
    let f = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
    // The generated code only reads through the input pointers, only inside `[0, numel)`
    // of each input (statically proven or checked at run time) and writes only inside
    // `[0, numel)` of the output, whose lengths the caller checked; a Winograd kernel reads
    // the prepared slot, which is null (it returns an error) or `prepare`'s filters for
    // these weights, of the length it reads. It does not keep the pointers. `extent` is the
    // kernel's parallel extent: the whole range.
    f(ptrs.as_ptr(), 0, extent as i64)
}

impl JitKernel {
    /// Runs the share `begin..end` of the kernel's parallel range (see
    /// [`JitKernel::parallel_extent`]) on raw buffers, without copying or checking them.
    /// Returns an error for a range outside `0..=parallel_extent` or a run-time failure of
    /// the code (a Gather position out of range, ...).
    ///
    /// # Safety
    /// `buffers` must point to `inputs().len() + 2` pointers: a base pointer per buffer,
    /// each valid for `numel * dtype.size()` bytes of its buffer (inputs readable, output
    /// writable) for the duration of the call, then null or the data
    /// [`JitKernel::prepare`] gave from the constant inputs these buffers hold; the output
    /// must not overlap any input; and calls running at the same time on one output must
    /// have disjoint ranges.
    pub unsafe fn run_raw(&self, buffers: *const *mut u8, begin: usize, end: usize) -> Result<(), Error> {
        if begin > end || end > self.parallel_extent {
            return Err(Error::InvalidInput {
                kernel: self.name.clone(),
                msg: format!("range {begin}..{end} outside 0..{}", self.parallel_extent),
            });
        }
        // SAFETY: as in `call`; the buffers are the caller's obligation.
        let f = unsafe { std::mem::transmute::<*const u8, KernelFn>(self.code) };
        match f(buffers, begin as i64, end as i64) {
            0 => Ok(()),
            code => Err(Error::Runtime {
                kernel: self.name.clone(),
                msg: RuntimeError::from_code(code)
                    .map_or_else(|| format!("unknown error code {code}"), |e| e.message().into()),
            }),
        }
    }
}

// SAFETY: after `compile` the code is immutable; the module is only touched on drop, which
// needs exclusive ownership. Calls from several threads share nothing but read-only code.
unsafe impl Send for JitKernel {}
// SAFETY: see `Send`: `&JitKernel` only reads immutable code and metadata.
unsafe impl Sync for JitKernel {}

/// Frees the memory of a JIT module.
pub(crate) fn free(module: JITModule) {
    // SAFETY: the only function pointers into this module's memory are created by `call`
    // for the duration of one call; the owning `JitKernel` is being dropped, so none is live.
    unsafe { module.free_memory() }
}

/// Calls a test function of type `extern "C" fn(src: *const f32, dst: *mut f32)` at `code`
/// that reads at most four f32 from `src` and writes at most four to `dst`.
#[cfg(test)]
pub(crate) fn call_f32x4(code: *const u8, src: &[f32; 4], dst: &mut [f32; 4]) {
    type TestFn = extern "C" fn(*const f32, *mut f32);
    // SAFETY: the caller passes the finalized address of such a function, built by the
    // vmath tests, whose module is alive for the call.
    let f = unsafe { std::mem::transmute::<*const u8, TestFn>(code) };
    // It reads 16 bytes at most from `src` and writes 16 at most to `dst`: both have 16.
    f(src.as_ptr(), dst.as_mut_ptr());
}
