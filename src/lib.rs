//! atomc: an operator-decomposition kernel compiler for neural networks. This facade
//! re-exports the stages and holds what the CLI and the tests share (npy I/O, model
//! loading and running).

pub use ir;

pub mod aot;
pub mod jit;
pub mod npy;
pub mod session;

pub use session::{Backend, Session};
