//! atomc code generators: kernel IR (`ir::kernel::Kernel`) and a schedule
//! (`ir::schedule::Schedule`, chosen by `search`) to native code.
//!
//! Today there is one backend, [`cranelift`]: it JIT-compiles one kernel into a function
//! `extern "C" fn(buffers: *const *mut u8, begin: i64, end: i64) -> i32` (a share of the
//! parallel range) and wraps it in a safe [`JitKernel`] whose [`JitKernel::run`] checks
//! every buffer against the kernel's declared buffers before calling it. The semantics are
//! those of the atoms (`ir::atom::Atom::eval`), exactly for the exact operations (a Sum of
//! products accumulated with FMA rounds once per step).
//! Ahead of time, [`cranelift::compile_object`] compiles a whole [`cranelift::Program`] of
//! kernels into one object file with a C entry point.

pub mod cranelift;
mod error;

pub use cranelift::JitKernel;
pub use error::Error;
