//! The only unsafe code of the crate: turning the JIT's code address into a function
//! pointer, calling it, and freeing the JIT memory. Callers check every buffer first.
#![allow(unsafe_code)]

use cranelift_jit::JITModule;

/// The ABI of a compiled kernel: input base pointers, output base pointer; 0 on success.
type KernelFn = extern "C" fn(*const *const u8, *mut u8) -> i32;

/// Calls the compiled kernel at `code`.
///
/// `code` must be the finalized address of a function built by `lower` with the [`KernelFn`]
/// signature, for a kernel whose input buffers have exactly the byte lengths of `inputs` and
/// whose output buffer has the byte length of `output` (checked by `JitKernel::run`).
pub(crate) fn call(code: *const u8, inputs: &[&[u8]], output: &mut [u8]) -> i32 {
    let ptrs: Vec<*const u8> = inputs.iter().map(|b| b.as_ptr()).collect();
    // SAFETY: `code` points to finalized, executable code of a function with the signature
    // `KernelFn` (the JIT module that owns it lives as long as the `JitKernel` calling us),
    // and function pointers and data pointers have one size on every host Cranelift targets.
    let f = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
    // The generated code reads only `ptrs[..inputs.len()]`, only inside `[0, numel)` of each
    // input (statically proven or checked at run time) and writes only inside `[0, numel)`
    // of the output, whose lengths the caller checked. It does not keep the pointers.
    f(ptrs.as_ptr(), output.as_mut_ptr())
}

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
