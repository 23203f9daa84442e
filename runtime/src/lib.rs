//! The atomc runtime: executes a partitioned plan (`ir::partition::Plan`) whose kernels are
//! compiled by `codegen`.
//!
//! - [`memory`]: the static memory plan: where each value lives (a caller's input or output
//!   buffer, a weight, or an offset in one arena shared by values whose lifetimes do not
//!   overlap).

pub mod memory;

pub use memory::{Location, MemoryPlan};
