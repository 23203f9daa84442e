//! The atomc runtime: executes a partitioned plan (`ir::partition::Plan`) whose kernels are
//! compiled by `codegen`.
//!
//! Input: a specialized atom graph and its plan. Output: an [`Executable`] that runs it on
//! caller tensors, writing outputs in place. It knows nothing of ONNX files, sessions or
//! decomposition (the root crate's `Session` drives it).
//!
//! - [`memory`]: the static memory plan: where each value lives (a caller's input or output
//!   buffer, a weight, or an offset in one arena shared by values whose lifetimes do not
//!   overlap).
//! - [`pool`]: the thread pool that runs each kernel's parallel range in static shares.
//! - [`exec`]: the executable: compiled kernels, pointer tables, the arena, host steps.
//! - [`standalone`]: one compiled kernel on buffers of its own, for measurement.
//! - `ffi`: the crate's only unsafe code (raw kernel calls, byte copies, lending a closure
//!   to worker threads).

pub mod exec;
mod ffi;
pub mod memory;
pub mod pool;
pub mod standalone;

pub use exec::{CodeGen, Error, Executable, StepTime, check_input_count, jit_target};
pub use standalone::KernelBuffers;
pub use memory::{Location, MemoryPlan};
pub use pool::ThreadPool;
