//! The Cranelift backend: JIT-compiles one [`Kernel`] into native code for the host.
//!
//! The generated function is `extern "C" fn(buffers: *const *mut u8, begin: i64, end: i64)
//! -> i32`: `buffers` holds the base address of every input buffer, then the output's; the
//! function runs a loop nest over the output axes (and, for a reduction, the reduction axes
//! inside them) that evaluates the expression tree at each point and stores the result,
//! with axis 0 restricted to `[begin, end)`, a share of the kernel's
//! [`JitKernel::parallel_extent`] (threads run disjoint shares at once). It returns
//! 0, or a nonzero [`RuntimeError`] code when the data makes the kernel fail (a Gather
//! position out of range, an integer division by zero). Every memory access is either
//! proven in bounds at compile time from the static shapes or checked at run time.
//!
//! Supported: dtypes f32, i64, i32 and bool; loads with guards, gathers, constants, axis
//! indices, the elementwise functions of the atoms that have a direct instruction or a
//! helper in [`libcalls`], select, casts between the supported dtypes, and the reductions
//! Sum, Prod, Max and Min. Everything else is an [`Error::Unsupported`].
//!
//! When every value is f32, every load is contiguous (unguarded, in bounds) or constant
//! along the innermost output axis and the output is contiguous along it, that axis runs
//! on f32x4 vectors with a scalar tail (see [`JitKernel::is_vectorized`]). No FMA: a fused
//! multiply-add rounds once where the reference rounds twice, and results must be exact.
//!
//! [`compile_object`] compiles a whole [`Program`] of kernels ahead of time into one object
//! file with a C entry point (see `object.rs`).

mod ffi;
mod libcalls;
mod lower;
pub(crate) mod vmath;
#[cfg(test)]
mod vmath_tests;
mod object;

pub use object::{BufferRef, OutputCopy, Program, ProgramStep, TensorDesc, compile_object};

use crate::Error;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;
use ir::kernel::{Buffer, Kernel};

/// Why compiled code stopped: its nonzero return codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum RuntimeError {
    GatherOutOfRange = 1,
    LoadOutOfBounds = 2,
    DivisionByZero = 3,
}

impl RuntimeError {
    fn from_code(code: i32) -> Option<RuntimeError> {
        [
            RuntimeError::GatherOutOfRange,
            RuntimeError::LoadOutOfBounds,
            RuntimeError::DivisionByZero,
        ]
        .into_iter()
        .find(|e| *e as i32 == code)
    }

    fn message(self) -> &'static str {
        match self {
            RuntimeError::GatherOutOfRange => "a Gather position is out of range",
            RuntimeError::LoadOutOfBounds => "a load index is out of the bounds of its buffer",
            RuntimeError::DivisionByZero => "integer division by zero",
        }
    }
}

/// One kernel compiled to native code.
pub struct JitKernel {
    name: String,
    inputs: Vec<Buffer>,
    output: Buffer,
    /// Owns the code; `None` only while dropping.
    module: Option<JITModule>,
    code: *const u8,
    vectorized: bool,
    parallel_extent: usize,
}

impl std::fmt::Debug for JitKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitKernel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for JitKernel {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            ffi::free(m);
        }
    }
}

/// The extent of a kernel's parallel range (see [`JitKernel::parallel_extent`]).
pub fn parallel_extent(k: &Kernel) -> usize {
    match (&k.body, k.out_shape.as_slice()) {
        (ir::kernel::Body::Compute { .. }, [n, _, ..]) => *n,
        _ => 1,
    }
}

impl JitKernel {
    /// Compiles `k` for the host CPU.
    pub fn compile(k: &Kernel) -> Result<JitKernel, Error> {
        // The kernel IR's own checks (dtypes, axes, static bounds, injective store) first.
        ir::kernel::verify(k).map_err(|e| {
            let msg = e.to_string();
            let prefix = format!("invalid model: kernel '{}': ", k.name);
            let msg = msg
                .strip_prefix(&prefix)
                .map_or_else(|| msg.clone(), str::to_string);
            Error::InvalidKernel {
                kernel: k.name.clone(),
                msg,
            }
        })?;
        let internal = |msg: String| Error::Internal {
            kernel: k.name.clone(),
            msg,
        };
        let mut flags = settings::builder();
        for (name, value) in [
            ("opt_level", "speed"),
            ("is_pic", "false"),
            ("use_colocated_libcalls", "false"),
        ] {
            flags
                .set(name, value)
                .map_err(|e| internal(format!("setting {name}: {e}")))?;
        }
        let isa = cranelift_native::builder()
            .map_err(|e| Error::Unsupported {
                kernel: k.name.clone(),
                msg: format!("host not supported by Cranelift: {e}"),
            })?
            .finish(settings::Flags::new(flags))
            .map_err(|e| internal(format!("building the target ISA: {e}")))?;
        let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
        for h in libcalls::all() {
            jb.symbol(h.name, h.addr);
        }
        let mut module = JITModule::new(jb);
        let (func, vectorized) = match lower::define(&mut module, k, None) {
            Ok(f) => f,
            Err(e) => {
                ffi::free(module);
                return Err(e);
            }
        };
        if let Err(e) = module.finalize_definitions() {
            ffi::free(module);
            return Err(internal(format!("finalizing: {e}")));
        }
        let code = module.get_finalized_function(func);
        Ok(JitKernel {
            name: k.name.clone(),
            inputs: k.inputs.clone(),
            output: k.output.clone(),
            module: Some(module),
            code,
            vectorized,
            parallel_extent: parallel_extent(k),
        })
    }

    /// The extent of the range that `begin..end` splits: the kernel's axis 0 when it has
    /// several output axes, else 1 (the kernel runs whole). Disjoint shares of it may run
    /// at once on several threads.
    pub fn parallel_extent(&self) -> usize {
        self.parallel_extent
    }

    /// The input buffers, in order.
    pub fn inputs(&self) -> &[Buffer] {
        &self.inputs
    }

    /// The output buffer.
    pub fn output(&self) -> &Buffer {
        &self.output
    }

    /// Whether the innermost output axis runs on f32x4 vectors (with a scalar tail).
    pub fn is_vectorized(&self) -> bool {
        self.vectorized
    }

    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the kernel on `inputs` (one byte slice per input buffer, native-endian elements)
    /// writing `output`. Every slice must have exactly its buffer's byte length.
    pub fn run(&self, inputs: &[&[u8]], output: &mut [u8]) -> Result<(), Error> {
        let bad = |msg: String| Error::InvalidInput {
            kernel: self.name.clone(),
            msg,
        };
        if inputs.len() != self.inputs.len() {
            return Err(bad(format!(
                "{} input buffers given, the kernel takes {}",
                inputs.len(),
                self.inputs.len()
            )));
        }
        for (b, data) in self
            .inputs
            .iter()
            .chain([&self.output])
            .zip(inputs.iter().map(|d| d.len()).chain([output.len()]))
        {
            let want = b
                .numel
                .checked_mul(b.dtype.size())
                .ok_or_else(|| bad(format!("buffer '{}' is too large", b.name)))?;
            if data != want {
                return Err(bad(format!(
                    "buffer '{}' ({} x {}) needs {want} bytes, got {data}",
                    b.name, b.numel, b.dtype
                )));
            }
        }
        if self.module.is_none() {
            return Err(Error::Internal {
                kernel: self.name.clone(),
                msg: "kernel code was freed".into(),
            });
        }
        match ffi::call(self.code, inputs, output, self.parallel_extent) {
            0 => Ok(()),
            code => Err(Error::Runtime {
                kernel: self.name.clone(),
                msg: RuntimeError::from_code(code).map_or_else(
                    || format!("unknown error code {code}"),
                    |e| e.message().into(),
                ),
            }),
        }
    }
}
