//! The pool op family (not yet implemented).

use crate::error::Result;
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::tensor::Tensor;

crate::op_family! {
    /// Ops of the pool family.
    pub enum PoolOp {}
}

impl PoolOp {
    pub fn infer(self, _cx: &InferCx) -> Result<Vec<ValueType>> {
        match self {}
    }

    pub fn eval(self, _cx: &EvalCx) -> Result<Vec<Tensor>> {
        match self {}
    }
}
