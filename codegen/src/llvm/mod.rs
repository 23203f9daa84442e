//! The LLVM backend (cargo feature `llvm`, LLVM 19 through inkwell): JIT-compiles one
//! [`Kernel`] into native code for the host, with the same function ABI, schedule
//! semantics and results as the Cranelift backend (`crate::cranelift`), but vectors as
//! wide as the schedule asks (16 f32 lanes with AVX-512, where Cranelift stops at 4).
//!
//! The generated function is `extern "C" fn(buffers: *const *mut u8, begin: i64, end: i64)
//! -> i32` (see [`crate::cranelift`] for the ABI and the error codes). The kernel is lowered
//! to LLVM IR text (`lower.rs` expressions, `nest.rs` the loop nest of the schedule,
//! `vmath.rs` the polynomial transcendentals with the Cranelift backend's coefficients),
//! every function carries the host's `target-cpu` and `target-features` (without them LLVM
//! emits SSE2 code) and a `prefer-vector-width` of the schedule's vector, the module runs
//! LLVM's `default<O3>` pipeline, and MCJIT compiles it. Math helpers that have no
//! polynomial call the reference's Rust functions (`cranelift/libcalls.rs`), mapped into
//! the engine by address.
//!
//! Supported: what the Cranelift backend supports (dtypes f32, i64, i32, bool; guarded
//! loads, gathers, select, casts, reductions Sum, Prod, Max, Min, ArgMax, ArgMin);
//! Scatter kernels and other dtypes are an [`Error::Unsupported`].

mod dmath;
#[cfg(test)]
mod dmath_tests;
mod ffi;
mod helpers64;
mod lower;
mod nest;
pub mod nvptx;
mod object;
mod vmath;
#[cfg(test)]
mod tests;

use crate::Error;
use crate::cranelift::libcalls;
use inkwell::OptimizationLevel;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use ir::kernel::{Buffer, Kernel};
use ir::schedule::Schedule;
use std::fmt::Write as _;
use std::sync::OnceLock;

pub use object::compile_object;
pub use vmath::has as is_polynomial;

/// The name of the kernel function in its module.
const FUNCTION: &str = "atomc_kernel";

/// What the code is compiled for, in LLVM's terms: the host as LLVM detects it
/// ([`HostTarget::detect`]), or another CPU for ahead-of-time compilation
/// ([`compile_object`]).
#[derive(Clone, Debug)]
pub struct HostTarget {
    pub triple: String,
    pub cpu: String,
    pub features: String,
}

impl HostTarget {
    /// The host CPU and its features (initializes LLVM's native target once).
    pub fn detect() -> Result<&'static HostTarget, String> {
        static HOST: OnceLock<Result<HostTarget, String>> = OnceLock::new();
        HOST.get_or_init(|| {
            Target::initialize_native(&InitializationConfig::default())?;
            Ok(HostTarget {
                triple: TargetMachine::get_default_triple().as_str().to_string_lossy().into_owned(),
                cpu: TargetMachine::get_host_cpu_name().to_string(),
                features: TargetMachine::get_host_cpu_features().to_string(),
            })
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Whether the target has a fused multiply-add for f32.
    pub fn has_fma(&self) -> bool {
        self.triple.starts_with("aarch64") || self.features.split(',').any(|f| f == "+fma")
    }

    /// The widest f32 vector the target's registers hold (lanes): 16 with AVX-512F, 8
    /// with AVX, else 4.
    pub fn f32_lanes(&self) -> usize {
        let has = |f: &str| self.features.split(',').any(|x| x == f);
        if has("+avx512f") {
            16
        } else if has("+avx") {
            8
        } else {
            4
        }
    }

    fn machine(&self) -> Result<TargetMachine, String> {
        let triple = TargetTriple::create(&self.triple);
        let target = Target::from_triple(&triple).map_err(|e| e.to_string())?;
        target
            .create_target_machine(
                &triple,
                &self.cpu,
                &self.features,
                OptimizationLevel::Aggressive,
                RelocMode::Default,
                CodeModel::JITDefault,
            )
            .ok_or_else(|| format!("LLVM has no target machine for {} ({})", self.triple, self.cpu))
    }
}

/// One kernel compiled to native code by LLVM.
pub struct LlvmKernel {
    name: String,
    inputs: Vec<Buffer>,
    output: Buffer,
    /// Owns the code (declared before nothing else that needs it: dropped last is fine).
    _engine: ffi::Engine,
    code: usize,
    vectorized: bool,
    fma: bool,
    parallel_extent: usize,
}

impl std::fmt::Debug for LlvmKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlvmKernel").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The LLVM IR module of kernel `k` under schedule `s` for `host`, and whether it has a
/// vector loop and uses FMA.
pub(crate) struct Module {
    pub text: String,
    pub vectorized: bool,
    pub fma: bool,
}

/// The LLVM IR of kernel `k` under schedule `s` as one function, before it is placed in a
/// module: the body, the declarations it needs, and the lanes of its vector loop.
pub(crate) struct Function {
    pub body: String,
    pub decls: std::collections::BTreeSet<String>,
    pub vectorized: bool,
    pub fma: bool,
    pub lanes: i64,
}

impl Function {
    /// The attribute group of the function for `target`: its CPU, features and vector width.
    pub fn attributes(&self, target: &HostTarget) -> String {
        let width = (self.lanes.max(4) * 32).to_string();
        format!(
            "nounwind \"target-cpu\"=\"{}\" \"target-features\"=\"{}\" \"prefer-vector-width\"=\"{width}\" \"min-legal-vector-width\"=\"{width}\"",
            target.cpu, target.features
        )
    }
}

/// The branch-weight metadata the bodies refer to as `!0` (cold error paths).
pub(crate) const METADATA: &str = "!0 = !{!\"branch_weights\", i32 1, i32 2000}";

/// The signature of a kernel function after `define i32 @NAME`.
pub(crate) const PARAMS: &str = "(ptr noalias nocapture readonly %buffers, i64 %begin, i64 %end)";

/// Lowers `k` (verified) with schedule `s` (validated here) to one function for `target`.
pub(crate) fn lower_function(k: &Kernel, s: &Schedule, target: &HostTarget) -> Result<Function, Error> {
    let invalid = |e: ir::Error| Error::InvalidKernel { kernel: k.name.clone(), msg: e.to_string() };
    s.validate(k).map_err(invalid)?;
    if s.winograd() {
        return Err(Error::Unsupported { kernel: k.name.clone(), msg: format!("schedule '{s}': the LLVM backend has no Winograd convolution yet") });
    }
    let shaped = s.shaped(k).map_err(invalid)?;
    let mut l = lower::Lower::new(&shaped, 1, target.has_fma());
    l.kernel(s)?;
    let (vectorized, fma, lanes) = (l.vectorized, l.used_fma, l.vector_lanes);
    let (body, decls) = l.finish();
    Ok(Function { body, decls, vectorized, fma, lanes })
}

/// Lowers `k` (verified) with schedule `s` (validated here) to an LLVM IR module for `host`.
pub(crate) fn lower_module(k: &Kernel, s: &Schedule, host: &HostTarget, data_layout: &str) -> Result<Module, Error> {
    let f = lower_function(k, s, host)?;
    let mut text = String::new();
    let _ = writeln!(text, "target datalayout = \"{data_layout}\"");
    let _ = writeln!(text, "target triple = \"{}\"", host.triple);
    let _ = writeln!(text, "define i32 @{FUNCTION}{PARAMS} #0 {{\n{}}}", f.body);
    for d in &f.decls {
        let _ = writeln!(text, "{d}");
    }
    let _ = writeln!(text, "attributes #0 = {{ {} }}", f.attributes(host));
    let _ = writeln!(text, "{METADATA}");
    Ok(Module { text, vectorized: f.vectorized, fma: f.fma })
}

/// Parses and verifies the module `text` of kernel `kernel`, runs the LLVM pass pipeline
/// `passes` on it, JIT-compiles it at `level` with the math helpers the lowering calls
/// mapped to the reference's Rust functions, and returns the engine that owns the code and
/// the address of [`FUNCTION`].
fn jit(kernel: &str, text: &str, machine: &TargetMachine, passes: &str, level: OptimizationLevel) -> Result<(ffi::Engine, usize), Error> {
    let internal = |msg: String| Error::Internal { kernel: kernel.to_string(), msg };
    let mut engine = ffi::Engine::new();
    let code = {
        let context = engine.context();
        let buffer = MemoryBuffer::create_from_memory_range_copy(text.as_bytes(), kernel);
        let module = context
            .create_module_from_ir(buffer)
            .map_err(|e| internal(format!("parsing the generated IR: {}", e.to_string_lossy())))?;
        module.verify().map_err(|e| internal(format!("verifying the generated IR: {}", e.to_string_lossy())))?;
        module
            .run_passes(passes, machine, PassBuilderOptions::create())
            .map_err(|e| internal(format!("optimizing: {}", e.to_string_lossy())))?;
        let ee = module
            .create_jit_execution_engine(level)
            .map_err(|e| internal(format!("creating the JIT: {}", e.to_string_lossy())))?;
        for h in libcalls::all().into_iter().chain(helpers64::all()) {
            if let Some(f) = module.get_function(h.name) {
                ee.add_global_mapping(&f, h.addr as usize);
            }
        }
        engine.set(ee);
        let ee = engine.get().ok_or_else(|| internal("the JIT engine is gone".into()))?;
        ee.get_function_address(FUNCTION).map_err(|e| internal(format!("finding the compiled function: {e}")))?
    };
    Ok((engine, code))
}

impl LlvmKernel {
    /// Compiles `k` for the host CPU, its loop nest shaped by schedule `s` (an illegal
    /// step is an [`Error::InvalidKernel`]).
    pub fn compile(k: &Kernel, s: &Schedule) -> Result<LlvmKernel, Error> {
        ir::kernel::verify(k).map_err(|e| {
            let msg = e.to_string();
            let prefix = format!("invalid model: kernel '{}': ", k.name);
            let msg = msg.strip_prefix(&prefix).map_or_else(|| msg.clone(), str::to_string);
            Error::InvalidKernel { kernel: k.name.clone(), msg }
        })?;
        let internal = |msg: String| Error::Internal { kernel: k.name.clone(), msg };
        let host = HostTarget::detect().map_err(|e| Error::Unsupported {
            kernel: k.name.clone(),
            msg: format!("host not supported by LLVM: {e}"),
        })?;
        let machine = host.machine().map_err(&internal)?;
        let layout = machine.get_target_data().get_data_layout();
        let layout = layout.as_str().to_string_lossy().into_owned();
        let m = lower_module(k, s, host, &layout)?;
        let (engine, code) = jit(&k.name, &m.text, &machine, "default<O3>", OptimizationLevel::Aggressive)?;
        Ok(LlvmKernel {
            name: k.name.clone(),
            inputs: k.inputs.clone(),
            output: k.output.clone(),
            _engine: engine,
            code,
            vectorized: m.vectorized,
            fma: m.fma,
            parallel_extent: s.parallel_extent(k),
        })
    }

    /// The extent of the range that `begin..end` splits (as [`crate::JitKernel::parallel_extent`]).
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

    /// Whether the vectorized output axis runs on vectors (with a scalar tail).
    pub fn is_vectorized(&self) -> bool {
        self.vectorized
    }

    /// Whether the code accumulates a Sum of f32 products with fused multiply-adds.
    pub fn uses_fma(&self) -> bool {
        self.fma
    }

    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the kernel on `inputs` (one byte slice per input buffer, native-endian elements)
    /// writing `output`. Every slice must have exactly its buffer's byte length.
    pub fn run(&self, inputs: &[&[u8]], output: &mut [u8]) -> Result<(), Error> {
        crate::check_buffers(&self.name, &self.inputs, &self.output, inputs, output)?;
        ffi::call(self, inputs, output)
    }
}
