//! The unsafe code of the LLVM backend: an LLVM context that lives exactly as long as the
//! JIT engine built in it (inkwell ties an engine to a borrowed context, so the context is
//! boxed, leaked for the engine's lifetime and freed after the engine), and calling the
//! compiled function. Callers check every buffer first.
#![allow(unsafe_code)]

use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;

use super::LlvmKernel;
use crate::Error;
use crate::cranelift::RuntimeError;

/// The ABI of a compiled kernel: the buffer base pointers (inputs, then the output), and
/// the share `[begin, end)` of the parallel range to run; 0 on success.
type KernelFn = extern "C" fn(*const *mut u8, i64, i64) -> i32;

/// A context and the JIT engine that owns the module built in it (and its code).
pub(crate) struct Engine {
    /// `None` only while dropping: dropped before the context.
    engine: Option<ExecutionEngine<'static>>,
    context: *mut Context,
}

impl Engine {
    /// A fresh context, for [`Engine::with_engine`] to attach the engine to.
    pub(crate) fn new() -> Engine {
        Engine { engine: None, context: Box::into_raw(Box::new(Context::create())) }
    }

    /// The context, for building the module the engine will own.
    pub(crate) fn context(&self) -> &'static Context {
        // SAFETY: the box is freed only in `drop`, after the engine and every module built
        // in it (modules are locals of `compile`, or owned by the engine) are gone; callers
        // do not keep the reference beyond the `Engine` (`compile` drops its module first).
        unsafe { &*self.context }
    }

    pub(crate) fn set(&mut self, engine: ExecutionEngine<'static>) {
        self.engine = Some(engine);
    }

    pub(crate) fn get(&self) -> Option<&ExecutionEngine<'static>> {
        self.engine.as_ref()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The engine (with its module and code) first, then the context it was built in.
        drop(self.engine.take());
        // SAFETY: `context` came from `Box::into_raw` in `new` and is freed once, here;
        // nothing built in it is alive any more.
        drop(unsafe { Box::from_raw(self.context) });
    }
}

impl LlvmKernel {
    /// Runs the share `begin..end` of the kernel's parallel range (see
    /// [`LlvmKernel::parallel_extent`]) on raw buffers, without copying or checking them.
    /// Returns an error for a range outside `0..=parallel_extent` or a run-time failure of
    /// the code (a Gather position out of range, ...).
    ///
    /// # Safety
    /// `buffers` must point to `inputs().len() + 1` base pointers, each valid for
    /// `numel * dtype.size()` bytes of its buffer (inputs readable, output writable) for
    /// the duration of the call; the output must not overlap any input; and calls running
    /// at the same time on one output must have disjoint ranges.
    pub unsafe fn run_raw(&self, buffers: *const *mut u8, begin: usize, end: usize) -> Result<(), Error> {
        if begin > end || end > self.parallel_extent {
            return Err(Error::InvalidInput {
                kernel: self.name.clone(),
                msg: format!("range {begin}..{end} outside 0..{}", self.parallel_extent),
            });
        }
        // SAFETY: `code` is the address LLVM's JIT gave for the kernel function, defined
        // with the `KernelFn` signature in `lower`; the engine owning it lives as long as
        // `self`. The buffers are the caller's obligation.
        let f = unsafe { std::mem::transmute::<usize, KernelFn>(self.code) };
        match f(buffers, begin as i64, end as i64) {
            0 => Ok(()),
            code => Err(Error::Runtime {
                kernel: self.name.clone(),
                msg: RuntimeError::from_code(code).map_or_else(|| format!("unknown error code {code}"), |e| e.message().into()),
            }),
        }
    }
}

/// Runs the whole kernel on checked slices (`LlvmKernel::run` checked every length).
pub(crate) fn call(kernel: &LlvmKernel, inputs: &[&[u8]], output: &mut [u8]) -> Result<(), Error> {
    let mut ptrs: Vec<*mut u8> = inputs.iter().map(|b| b.as_ptr().cast_mut()).collect();
    ptrs.push(output.as_mut_ptr());
    ptrs.push(std::ptr::null_mut());
    // SAFETY: one pointer per buffer with exactly its byte length (checked by `run`), then
    // no prepared data; the output is a distinct `&mut` slice; one call covers the whole
    // range.
    unsafe { kernel.run_raw(ptrs.as_ptr(), 0, kernel.parallel_extent) }
}

// SAFETY: after `compile` the code is immutable; the engine and context are only touched
// on drop, which needs exclusive ownership. Calls from several threads share nothing but
// read-only code.
unsafe impl Send for LlvmKernel {}
// SAFETY: see `Send`: `&LlvmKernel` only reads immutable code and metadata.
unsafe impl Sync for LlvmKernel {}
