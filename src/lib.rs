//! atomc: an operator-decomposition kernel compiler for neural networks. This facade
//! re-exports the stages and holds what the CLI and the tests share (npy I/O, model
//! loading and running, benchmarking, tuning and the tuning records a compile uses).

pub use ir;
pub use runtime;

pub mod bench;
pub mod aot;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "llvm")]
pub mod gpu;
pub mod gpu_plan;
pub mod npy;
pub mod session;
pub mod tuning;
pub mod tune;

pub use session::{Backend, Session};
