//! The op families: one module each, holding every op's attributes, shape inference and
//! reference evaluation side by side.

pub mod attention;
pub mod binary;
pub mod common;
pub mod conv;
pub mod image;
pub mod index;
pub mod layout;
pub mod linalg;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod rnn;
pub mod signal;
pub mod unary;
