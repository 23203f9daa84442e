//! ONNX import: decodes a `ModelProto` with prost and builds a verified [`Graph`] of
//! high-level ops. Only the default (`ai.onnx`) domain is accepted; initializers,
//! `Constant` nodes and external data (resolved inside the model's folder only) become
//! graph constants.

mod import;
pub mod proto;
mod tensor;

pub use import::{import_bytes, import_file, Model};
pub use tensor::tensor_from_proto;
