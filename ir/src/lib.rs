//! `ir`: the base of atomc. Input: ONNX bytes. Output: a verified [`Graph`] of high-level
//! ops with dtypes and static shapes inferred, and the reference interpreter that defines
//! what every op means (every other stage is tested against it).
//!
//! Invariant: `ir` knows nothing of egg, Cranelift or LLVM.

pub mod attr;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod onnx;
pub mod op;
pub mod ops;
pub mod shape;
pub mod stats;
pub mod tensor;
pub mod text;
pub mod verify;

pub use attr::{Attr, Attrs};
pub use dtype::DType;
pub use error::{Error, Result};
pub use graph::{Dim, Graph, Input, Node, NodeId, Value, ValueId, ValueType};
pub use op::{Op, OpKind};
pub use tensor::{Data, Elem, Tensor};
