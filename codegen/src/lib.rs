//! atomc code generators: kernel IR (`ir::kernel::Kernel`) and a schedule
//! (`ir::schedule::Schedule`, chosen by `search`) to native code.
//!
//! Today there is one backend, [`cranelift`]: it JIT-compiles one kernel into a function
//! `extern "C" fn(buffers: *const *mut u8, begin: i64, end: i64) -> i32` (a share of the
//! parallel range) and wraps it in a safe [`JitKernel`] whose [`JitKernel::run`] checks
//! every buffer against the kernel's declared buffers before calling it. The semantics are
//! those of the atoms (`ir::atom::Atom::eval`), exactly for the exact operations (a Sum of
//! products accumulated with FMA rounds once per step).
//! With cargo feature `llvm`, [`llvm`] is the second backend: the same kernel IR, schedule
//! and function ABI lowered to LLVM IR (vectors as wide as the schedule asks: 16 f32 lanes
//! with AVX-512), optimized at O3 and JIT-compiled by LLVM 19 ([`llvm::LlvmKernel`]).
//! Ahead of time, [`cranelift::compile_object`] compiles a whole [`cranelift::Program`] of
//! kernels into one object file with a C entry point.

pub mod cranelift;
mod error;
#[cfg(feature = "llvm")]
pub mod llvm;
mod vmath_coefs;

pub use cranelift::JitKernel;
pub use error::Error;

use ir::kernel::Buffer;

/// A kernel compiled to native code by either backend: the function ABI is the same, so
/// the runtime runs shares of its parallel range without knowing which backend built it.
pub trait NativeKernel: Send + Sync + std::fmt::Debug {
    /// The kernel's name.
    fn name(&self) -> &str;
    /// The input buffers, in order.
    fn inputs(&self) -> &[Buffer];
    /// The output buffer.
    fn output(&self) -> &Buffer;
    /// The extent of the range that shares split (1: the kernel runs whole).
    fn parallel_extent(&self) -> usize;
    /// Data the kernel reads beside its buffers, derived once from constant inputs (a
    /// Winograd convolution's transformed filters), computed from `constant(i)`: the
    /// bytes of input `i` when its value is fixed for every later call, else `None` (asked
    /// only for the inputs the kernel needs). `None` when the kernel has nothing to prepare
    /// or an input it needs is not constant.
    fn prepare(&self, _constant: &dyn Fn(usize) -> Option<Vec<u8>>) -> Option<Box<[f32]>> {
        None
    }
    /// Runs the share `begin..end` of the parallel range on raw buffers.
    ///
    /// # Safety
    /// As [`JitKernel::run_raw`]: `buffers` points to one valid base pointer per buffer
    /// (inputs, then the output), each valid for its buffer's byte length during the call,
    /// then one more: null, or the data [`NativeKernel::prepare`] gave from the constant
    /// inputs `buffers` holds; the output overlaps no input; concurrent calls have
    /// disjoint ranges.
    #[allow(unsafe_code)]
    unsafe fn run_raw(&self, buffers: *const *mut u8, begin: usize, end: usize) -> Result<(), Error>;
}

#[allow(unsafe_code)]
impl NativeKernel for JitKernel {
    fn name(&self) -> &str {
        JitKernel::name(self)
    }
    fn inputs(&self) -> &[Buffer] {
        JitKernel::inputs(self)
    }
    fn output(&self) -> &Buffer {
        JitKernel::output(self)
    }
    fn parallel_extent(&self) -> usize {
        JitKernel::parallel_extent(self)
    }
    fn prepare(&self, constant: &dyn Fn(usize) -> Option<Vec<u8>>) -> Option<Box<[f32]>> {
        JitKernel::prepare(self, constant)
    }
    unsafe fn run_raw(&self, buffers: *const *mut u8, begin: usize, end: usize) -> Result<(), Error> {
        // SAFETY: the caller's obligations are those of `JitKernel::run_raw`.
        unsafe { JitKernel::run_raw(self, buffers, begin, end) }
    }
}

#[cfg(feature = "llvm")]
#[allow(unsafe_code)]
impl NativeKernel for llvm::LlvmKernel {
    fn name(&self) -> &str {
        llvm::LlvmKernel::name(self)
    }
    fn inputs(&self) -> &[Buffer] {
        llvm::LlvmKernel::inputs(self)
    }
    fn output(&self) -> &Buffer {
        llvm::LlvmKernel::output(self)
    }
    fn parallel_extent(&self) -> usize {
        llvm::LlvmKernel::parallel_extent(self)
    }
    unsafe fn run_raw(&self, buffers: *const *mut u8, begin: usize, end: usize) -> Result<(), Error> {
        // SAFETY: the caller's obligations are those of `LlvmKernel::run_raw`.
        unsafe { llvm::LlvmKernel::run_raw(self, buffers, begin, end) }
    }
}

/// Checks the slices given to a kernel's `run`: one per input buffer, each (and the
/// output) exactly its buffer's byte length.
#[cfg(feature = "llvm")]
fn check_buffers(kernel: &str, want_inputs: &[Buffer], want_output: &Buffer, inputs: &[&[u8]], output: &[u8]) -> Result<(), Error> {
    let bad = |msg: String| Error::InvalidInput { kernel: kernel.to_string(), msg };
    if inputs.len() != want_inputs.len() {
        return Err(bad(format!("{} input buffers given, the kernel takes {}", inputs.len(), want_inputs.len())));
    }
    for (b, data) in want_inputs.iter().chain([want_output]).zip(inputs.iter().map(|d| d.len()).chain([output.len()])) {
        let want = b.numel.checked_mul(b.dtype.size()).ok_or_else(|| bad(format!("buffer '{}' is too large", b.name)))?;
        if data != want {
            return Err(bad(format!("buffer '{}' ({} x {}) needs {want} bytes, got {data}", b.name, b.numel, b.dtype)));
        }
    }
    Ok(())
}
