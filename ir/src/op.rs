//! Operators of the high-level graph: [`OpKind`] is a closed enum of op families (one
//! module under `ops/` each, with its own closed enum), and [`Op`] is a kind, its
//! attributes and the opset version it was imported at (for version-dependent semantics).
//!
//! Every op defines two functions, side by side in its family's file:
//! - `infer`: output dtypes and, where derivable, shapes, from input facts (dtype, shape,
//!   and the value when it is a known constant);
//! - `eval`: the reference semantics, given input tensors and the output types that
//!   `infer` computed with every input value known (so shape logic is written once).

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::ops;
use crate::tensor::Tensor;

/// Declares a family's closed enum with its ONNX names (`name`, `from_name`, `ALL`).
#[macro_export]
macro_rules! op_family {
    ($(#[$m:meta])* pub enum $name:ident { $($variant:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }
        impl $name {
            /// Every op of the family.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            /// The ONNX op type.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),* }
            }
            /// The op of an ONNX op type.
            pub fn from_name(name: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|op| op.name() == name)
            }
        }
    };
}

macro_rules! op_kinds {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// Every high-level operator atomc accepts, grouped by family.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum OpKind { $($variant($ty)),* }

        impl OpKind {
            /// The ONNX op type name.
            pub fn name(self) -> &'static str {
                match self { $(OpKind::$variant(op) => op.name()),* }
            }
            /// The op of a default-domain ONNX op type.
            pub fn from_name(name: &str) -> Option<OpKind> {
                $(if let Some(op) = <$ty>::from_name(name) { return Some(OpKind::$variant(op)); })*
                None
            }
            /// Every op kind.
            pub fn all() -> Vec<OpKind> {
                let mut v = Vec::new();
                $(v.extend(<$ty>::ALL.iter().map(|&op| OpKind::$variant(op)));)*
                v
            }
            fn infer_impl(self, cx: &InferCx) -> Result<Vec<ValueType>> {
                match self { $(OpKind::$variant(op) => op.infer(cx)),* }
            }
            fn eval_impl(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
                match self { $(OpKind::$variant(op) => op.eval(cx)),* }
            }
        }
    };
}

op_kinds! {
    Unary(ops::unary::UnaryOp),
    Binary(ops::binary::BinaryOp),
    Layout(ops::layout::LayoutOp),
    Reduce(ops::reduce::ReduceOp),
    Index(ops::index::IndexOp),
    Linalg(ops::linalg::LinalgOp),
    Conv(ops::conv::ConvOp),
    Pool(ops::pool::PoolOp),
    Norm(ops::norm::NormOp),
    Image(ops::image::ImageOp),
    Quant(ops::quant::QuantOp),
    Loss(ops::loss::LossOp),
    Attention(ops::attention::AttentionOp),
    Rnn(ops::rnn::RnnOp),
    Signal(ops::signal::SignalOp),
    Atom(crate::atom::AtomKind),
}

impl OpKind {
    /// Whether the op's outputs depend only on its inputs (it can be constant-folded).
    pub fn is_deterministic(self) -> bool {
        true
    }
}

impl Op {
    /// The value of the op's single output when the input *types* alone determine it
    /// (`Shape`, `Size` of a statically shaped value), so it folds to a constant.
    pub fn value_from_types(&self, inputs: &[Option<Fact>]) -> Result<Option<Tensor>> {
        let cx = InferCx { attrs: &self.attrs, version: self.version, inputs, num_outputs: 1 };
        match self.kind {
            OpKind::Layout(op) => op.value_from_types(&cx),
            _ => Ok(None),
        }
    }
}

/// An operator instance: kind, attributes and the opset version of its domain.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub kind: OpKind,
    pub attrs: Attrs,
    pub version: u32,
}

/// What is known about one input during inference.
#[derive(Clone, Copy, Debug)]
pub struct Fact<'a> {
    pub ty: &'a ValueType,
    pub value: Option<&'a Tensor>,
}

/// The inputs of shape and dtype inference for one node.
pub struct InferCx<'a> {
    pub attrs: &'a Attrs,
    pub version: u32,
    /// One entry per declared input; `None` for an omitted optional input.
    pub inputs: &'a [Option<Fact<'a>>],
    /// How many outputs the node declares (omitted optional ones included).
    pub num_outputs: usize,
}

impl<'a> InferCx<'a> {
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// An optional input: `None` when omitted or beyond the declared inputs.
    pub fn opt(&self, i: usize) -> Option<&Fact<'a>> {
        self.inputs.get(i).and_then(|f| f.as_ref())
    }

    /// A required input.
    pub fn input(&self, i: usize) -> Result<&Fact<'a>> {
        self.opt(i).ok_or_else(|| Error::InvalidModel(format!("required input {i} is missing")))
    }

    pub fn dtype(&self, i: usize) -> Result<DType> {
        Ok(self.input(i)?.ty.dtype)
    }

    /// The static shape of input `i`, if known.
    pub fn shape(&self, i: usize) -> Result<Option<&'a [usize]>> {
        Ok(self.input(i)?.ty.shape.as_deref())
    }

    /// The value of input `i`, if it is a known constant.
    pub fn value(&self, i: usize) -> Result<Option<&'a Tensor>> {
        Ok(self.input(i)?.value)
    }

    /// Optional input `i` as i64s: the outer `None` means omitted, the inner one unknown.
    pub fn opt_i64s(&self, i: usize) -> Option<Option<Vec<i64>>> {
        self.opt(i).map(|f| f.value.map(|t| t.to_i64_vec()))
    }
}

/// The inputs of the reference evaluation of one node.
pub struct EvalCx<'a> {
    pub attrs: &'a Attrs,
    pub version: u32,
    /// One entry per declared input; `None` for an omitted optional input.
    pub inputs: &'a [Option<&'a Tensor>],
    /// The output types, every shape known.
    pub outputs: &'a [ValueType],
}

impl<'a> EvalCx<'a> {
    pub fn opt(&self, i: usize) -> Option<&'a Tensor> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn input(&self, i: usize) -> Result<&'a Tensor> {
        self.opt(i).ok_or_else(|| Error::InvalidModel(format!("required input {i} is missing")))
    }

    /// The shape of output `i`.
    pub fn out_shape(&self, i: usize) -> Result<&'a [usize]> {
        self.outputs
            .get(i)
            .and_then(|t| t.shape.as_deref())
            .ok_or_else(|| Error::Internal(format!("output {i} has no inferred shape at evaluation")))
    }

    pub fn out_dtype(&self, i: usize) -> Result<DType> {
        self.outputs
            .get(i)
            .map(|t| t.dtype)
            .ok_or_else(|| Error::Internal(format!("output {i} has no inferred type")))
    }
}

impl Op {
    /// Output types from input facts.
    pub fn infer(&self, inputs: &[Option<Fact>], num_outputs: usize) -> Result<Vec<ValueType>> {
        let cx = InferCx { attrs: &self.attrs, version: self.version, inputs, num_outputs };
        let mut out = self.kind.infer_impl(&cx)?;
        if out.len() < num_outputs {
            return Err(Error::InvalidModel(format!(
                "{} produces {} outputs but the node declares {}",
                self.kind.name(),
                out.len(),
                num_outputs
            )));
        }
        out.truncate(num_outputs);
        for t in &out {
            if let Some(s) = &t.shape {
                crate::tensor::checked_numel(s)?;
            }
        }
        Ok(out)
    }

    /// Evaluates the op on concrete inputs. The outputs are checked against inference.
    pub fn eval(&self, inputs: &[Option<&Tensor>], num_outputs: usize) -> Result<Vec<Tensor>> {
        let types: Vec<Option<ValueType>> =
            inputs.iter().map(|t| t.map(ValueType::of)).collect();
        let facts: Vec<Option<Fact>> = types
            .iter()
            .zip(inputs)
            .map(|(ty, t)| ty.as_ref().map(|ty| Fact { ty, value: *t }))
            .collect();
        let out_types = self.infer(&facts, num_outputs)?;
        if out_types.iter().any(|t| t.shape.is_none()) {
            return Err(Error::Internal(format!(
                "{}: inference left an output shape unknown with every input known",
                self.kind.name()
            )));
        }
        let cx = EvalCx { attrs: &self.attrs, version: self.version, inputs, outputs: &out_types };
        let mut out = self.kind.eval_impl(&cx)?;
        out.truncate(num_outputs);
        for (i, (t, ty)) in out.iter().zip(&out_types).enumerate() {
            if t.dtype() != ty.dtype || Some(t.shape()) != ty.shape.as_deref() {
                return Err(Error::Internal(format!(
                    "{} output {i} is {}{} but inference said {}",
                    self.kind.name(),
                    t.dtype(),
                    crate::shape::fmt_shape(t.shape()),
                    ty
                )));
            }
        }
        if out.len() < num_outputs {
            return Err(Error::Internal(format!(
                "{} evaluated {} outputs, {} expected",
                self.kind.name(),
                out.len(),
                num_outputs
            )));
        }
        Ok(out)
    }
}
