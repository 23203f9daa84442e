//! The Cranelift backend: JIT-compiles one [`Kernel`] into native code for the host.
//!
//! The generated function is `extern "C" fn(buffers: *const *mut u8, begin: i64, end: i64)
//! -> i32`: `buffers` holds the base address of every input buffer, then the output's, then
//! null or the data [`JitKernel::prepare`] gave (a Winograd kernel's transformed filters);
//! the function runs the loop nest that the kernel's [`Schedule`] shapes (see `nest.rs`;
//! a Winograd schedule's code is `winograd.rs`'s) over
//! the share `[begin, end)` of [`JitKernel::parallel_extent`] (threads run disjoint shares
//! at once). It returns 0, or a nonzero [`RuntimeError`] code when the data makes the
//! kernel fail (a Gather or Scatter position out of range, an integer division by zero). Every memory
//! access is either proven in bounds at compile time from the static shapes or checked at
//! run time.
//!
//! Supported: dtypes f32, i64, i32 and bool; loads with guards, gathers, constants, axis
//! indices, the elementwise functions of the atoms that have a direct instruction or a
//! helper in [`libcalls`], select, casts between the supported dtypes, and the reductions
//! Sum, Prod, Max and Min; Scatter kernels (`scatter.rs`: the data copied, then every
//! update in order, positions checked at run time). Everything else is an
//! [`Error::Unsupported`].
//!
//! A `Vectorize` step runs its axis on f32x4 (with a scalar tail) when every value is f32
//! and the functions have vector forms (see [`JitKernel::is_vectorized`]); guarded and
//! strided loads take one vector load when lanes 0 and 3 are in bounds, else go lane by
//! lane. A Sum of f32 products accumulates with `fma` when the host has FMA (AVX and FMA on
//! x64): one rounding where the reference rounds twice ([`JitKernel::uses_fma`]); all else
//! is exact.
//!
//! Transcendental functions (exp, log, tanh, erf, sin, cos, tan, atan, sinh, cosh) are
//! inline polynomials (`vmath.rs`, errors of a few ulp documented there), the same code on
//! scalars and vectors; the rest call the Rust functions of the reference (`libcalls.rs`).
//!
//! [`compile_object`] compiles a whole [`Program`] of kernels ahead of time into one object
//! file with a C entry point (see `object.rs`).

mod ffi;
pub(crate) mod libcalls;
mod lower;
mod vmath;

pub use vmath::has as is_polynomial;
#[cfg(test)]
mod vmath_tests;
pub(crate) mod object;

pub use object::{BufferRef, OutputCopy, Program, ProgramStep, TensorDesc, compile_object};
mod nest;
mod scatter;
mod winograd;

use crate::Error;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;
use ir::kernel::{Buffer, Kernel};
use ir::schedule::Schedule;

/// Why compiled code stopped: its nonzero return codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum RuntimeError {
    GatherOutOfRange = 1,
    LoadOutOfBounds = 2,
    DivisionByZero = 3,
    ScatterOutOfRange = 4,
    NotPrepared = 5,
}

impl RuntimeError {
    pub(crate) fn from_code(code: i32) -> Option<RuntimeError> {
        [
            RuntimeError::GatherOutOfRange,
            RuntimeError::LoadOutOfBounds,
            RuntimeError::DivisionByZero,
            RuntimeError::ScatterOutOfRange,
            RuntimeError::NotPrepared,
        ]
        .into_iter()
        .find(|e| *e as i32 == code)
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            RuntimeError::GatherOutOfRange => "a Gather position is out of range",
            RuntimeError::LoadOutOfBounds => "a load index is out of the bounds of its buffer",
            RuntimeError::DivisionByZero => "integer division by zero",
            RuntimeError::ScatterOutOfRange => "a Scatter position is out of range",
            RuntimeError::NotPrepared => "the kernel's prepared data (JitKernel::prepare) was not given",
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
    fma: bool,
    parallel_extent: usize,
    /// The convolution a Winograd schedule runs, whose filters [`JitKernel::prepare`]
    /// transforms.
    winograd: Option<ir::winograd::WinogradConv>,
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

impl JitKernel {
    /// Compiles `k` for the host CPU, its loop nest shaped by schedule `s` (an illegal
    /// step is an [`Error::InvalidKernel`]).
    pub fn compile(k: &Kernel, s: &Schedule) -> Result<JitKernel, Error> {
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
        let def = match lower::define(&mut module, k, s, None) {
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
        let code = module.get_finalized_function(def.id);
        Ok(JitKernel {
            name: k.name.clone(),
            inputs: k.inputs.clone(),
            output: k.output.clone(),
            module: Some(module),
            code,
            vectorized: def.vectorized,
            fma: def.fma,
            parallel_extent: s.parallel_extent(k),
            winograd: if s.winograd() { ir::winograd::WinogradConv::of(k).ok() } else { None },
        })
    }

    /// The extent of the range that `begin..end` splits: the flattened first output axes
    /// of the schedule's `Parallel` step (a register-blocked axis counts its blocks), 1
    /// without one (the kernel runs whole). Disjoint shares may run at once on several
    /// threads.
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

    /// Whether the code accumulates a Sum of f32 products with fused multiply-adds (one
    /// rounding where the reference rounds twice: results differ in the last bits).
    pub fn uses_fma(&self) -> bool {
        self.fma
    }

    /// Under a Winograd schedule with constant weights (`constant(i)`: the bytes of input
    /// `i` when constant), the transformed filters
    /// ([`ir::winograd::WinogradConv::transform_filters`]), which the kernel reads from the
    /// slot of [`JitKernel::run_raw`]'s table after the output (given null, it returns an
    /// error; [`JitKernel::run`] prepares them from its inputs). `None` otherwise.
    pub fn prepare(&self, constant: &dyn Fn(usize) -> Option<Vec<u8>>) -> Option<Box<[f32]>> {
        let conv = self.winograd.as_ref()?;
        conv.transform_filters(&constant(conv.weights)?).map(Vec::into_boxed_slice)
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
        // A Winograd kernel reads its transformed filters from the table: made here from the
        // inputs given.
        let prepared = self.prepare(&|i| inputs.get(i).map(|b| b.to_vec()));
        match ffi::call(self.code, inputs, output, prepared.as_deref(), self.parallel_extent) {
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
