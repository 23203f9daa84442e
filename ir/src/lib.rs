//! `ir`: the base of atomc. Input: ONNX bytes. Output: a verified [`Graph`] of high-level
//! ops with dtypes and static shapes inferred, and the reference interpreter that defines
//! what every op means (every other stage is tested against it).
//!
//! Invariant: `ir` knows nothing of egg, Cranelift or LLVM.
//!
//! A graph in the text form, specialized and run by the reference interpreter:
//!
//! ```
//! let g = ir::text::parse(r#"graph {
//!   input %x: f32[n,3]
//!   const %b: f32[3] = [1.0, -2.0, 0.5]
//!   %y = Add@17 "add" (%x, %b)
//!   %z = Relu@17 "relu" (%y)
//!   output %z
//! }"#)?;
//! let shapes = [("x".to_string(), vec![1, 3])].into_iter().collect();
//! let g = ir::infer::specialize(&g, &shapes)?;
//! let x = ir::Tensor::from_vec(vec![1, 3], vec![0.5f32, 0.5, 0.5])?;
//! let out = ir::interp::run(&g, vec![x])?;
//! assert_eq!(out[0].as_slice::<f32>(), Some(&[1.5f32, 0.0, 1.0][..]));
//! # Ok::<(), ir::Error>(())
//! ```

pub mod atom;
pub mod attr;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod kernel;
pub mod kernel_hash;
pub mod onnx;
pub mod partition;
pub mod schedule;
pub mod op;
pub mod ops;
pub mod padding;
pub mod shape;
pub mod stats;
pub mod tensor;
pub mod text;
pub mod verify;
pub mod winograd;

pub use atom::{Atom, AtomKind};
pub use attr::{Attr, Attrs};
pub use dtype::DType;
pub use error::{Error, Result};
pub use graph::{Dim, Graph, Input, Node, NodeId, Value, ValueId, ValueType};
pub use op::{Op, OpKind};
pub use tensor::{Data, Elem, Tensor};
