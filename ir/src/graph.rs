//! The high-level graph: values (typed ids), nodes in topological order, graph inputs with
//! possibly symbolic dims, constants (initializers and folded values) and outputs.

use crate::dtype::DType;
use crate::op::Op;
use crate::shape::fmt_shape;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A value (an edge of the graph).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// A node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The dtype of a value and its static shape, when known (`None`: data-dependent).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValueType {
    pub dtype: DType,
    pub shape: Option<Vec<usize>>,
}

impl ValueType {
    pub fn new(dtype: DType, shape: Vec<usize>) -> ValueType {
        ValueType { dtype, shape: Some(shape) }
    }

    /// A value of known dtype and unknown shape.
    pub fn unknown(dtype: DType) -> ValueType {
        ValueType { dtype, shape: None }
    }

    /// The type of a tensor.
    pub fn of(t: &Tensor) -> ValueType {
        ValueType::new(t.dtype(), t.shape().to_vec())
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shape {
            Some(s) => write!(f, "{}{}", self.dtype, fmt_shape(s)),
            None => write!(f, "{}[?]", self.dtype),
        }
    }
}

/// One dimension of a graph input: fixed, or a name resolved when the graph is specialized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(usize),
    Symbol(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
        }
    }
}

/// A graph input: its value, dtype and declared dims.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub value: ValueId,
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

impl Input {
    /// The dims as a static shape, when none is symbolic.
    pub fn static_shape(&self) -> Option<Vec<usize>> {
        self.dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n),
                Dim::Symbol(_) => None,
            })
            .collect()
    }
}

/// A value: its name (from the model) and its type once inferred.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: Option<ValueType>,
}

/// An operator application.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// `None` for an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    /// `None` for an omitted optional output.
    pub outputs: Vec<Option<ValueId>>,
}

/// A graph of high-level ops. Nodes are kept in topological order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<ValueId>,
    /// Constant values: initializers, `Constant` nodes and folded subgraphs.
    pub consts: HashMap<ValueId, Arc<Tensor>>,
}

impl Graph {
    /// Adds a value and returns its id.
    pub fn add_value(&mut self, name: impl Into<String>) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(Value { name: name.into(), ty: None });
        id
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }

    pub fn name(&self, id: ValueId) -> &str {
        &self.values[id.index()].name
    }

    /// The value with this name.
    pub fn find(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name).map(|i| ValueId(i as u32))
    }

    /// Node ids in order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + use<> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Number of weight elements (constants).
    pub fn num_params(&self) -> usize {
        self.consts.values().map(|t| t.numel()).sum()
    }
}
