//! Builds a [`Graph`] from a decoded `ModelProto`: names to typed ids, attributes to
//! [`Attrs`], `Constant` nodes and initializers to constants, then a topological sort
//! (petgraph) that also rejects cycles, and structural verification.

use super::proto::{self, attribute_type as at, ModelProto, NodeProto};
use super::tensor::tensor_from_proto;
use crate::attr::{Attr, Attrs};
use crate::dtype::DType;
use crate::error::{Error, Result, ResultExt};
use crate::graph::{Dim, Graph, Input, Node, ValueId};
use crate::op::{Op, OpKind};
use crate::tensor::Tensor;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// The newest default-domain opset atomc knows.
pub const MAX_OPSET: i64 = 27;
/// The oldest default-domain opset atomc accepts.
pub const MIN_OPSET: i64 = 7;

/// An imported model.
#[derive(Clone, Debug)]
pub struct Model {
    pub graph: Graph,
    /// The default-domain opset version.
    pub opset: u32,
    pub ir_version: i64,
    pub producer: String,
}

/// Reads and imports a model file; external data is looked up next to it.
pub fn import_file(path: &Path) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(|cause| Error::Io { path: path.to_path_buf(), cause })?;
    let dir = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    import_bytes(&bytes, dir).context(|| format!("model '{}'", path.display()))
}

/// Imports a model from its bytes. `base_dir` is where external data lives (`None`: no
/// external data allowed).
pub fn import_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Model> {
    let model = ModelProto::decode(bytes).map_err(|e| {
        Error::InvalidModel(format!("not a valid ONNX protobuf (the file may be truncated or not ONNX): {e}"))
    })?;
    let mut opset = None;
    for o in &model.opset_import {
        match o.domain.as_deref().unwrap_or("") {
            "" | "ai.onnx" => opset = o.version,
            _ => {}
        }
    }
    let opset = opset.ok_or_else(|| Error::InvalidModel("no opset_import for the default ONNX domain".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(Error::Unsupported(format!(
            "default-domain opset {opset} (atomc reads opsets {MIN_OPSET} to {MAX_OPSET})"
        )));
    }
    let graph = model.graph.as_ref().ok_or_else(|| Error::InvalidModel("the model has no graph".into()))?;
    let mut b = Builder { g: Graph::default(), names: HashMap::new(), opset: opset as u32, base_dir };
    b.build(graph, &model)?;
    Ok(Model {
        graph: b.g,
        opset: opset as u32,
        ir_version: model.ir_version.unwrap_or(0),
        producer: model.producer_name.clone().unwrap_or_default(),
    })
}

struct Builder<'a> {
    g: Graph,
    names: HashMap<String, ValueId>,
    opset: u32,
    base_dir: Option<&'a Path>,
}

impl Builder<'_> {
    /// Defines a new value name; a name defined twice is an error.
    fn define(&mut self, name: &str, what: &str) -> Result<ValueId> {
        if name.is_empty() {
            return Err(Error::InvalidModel(format!("{what} has an empty name")));
        }
        if self.names.contains_key(name) {
            return Err(Error::InvalidModel(format!("{what} '{name}' is defined more than once")));
        }
        let id = self.g.add_value(name);
        self.names.insert(name.to_string(), id);
        Ok(id)
    }

    fn build(&mut self, graph: &proto::GraphProto, model: &ModelProto) -> Result<()> {
        if !graph.sparse_initializer.is_empty() {
            return Err(Error::Unsupported("sparse initializers".into()));
        }
        for init in &graph.initializer {
            let name = init.name.clone().unwrap_or_default();
            let t = tensor_from_proto(init, self.base_dir).context(|| format!("initializer '{name}'"))?;
            let id = self.define(&name, "initializer")?;
            self.g.consts.insert(id, Arc::new(t));
        }
        for vi in &graph.input {
            let name = vi.name.clone().unwrap_or_default();
            if let Some(&id) = self.names.get(&name)
                && self.g.consts.contains_key(&id) {
                    continue; // An input with an initializer: a constant here.
                }
            let (dtype, dims) = input_type(vi).context(|| format!("graph input '{name}'"))?;
            let id = self.define(&name, "graph input")?;
            self.g.inputs.push(Input { value: id, dtype, dims });
        }
        // Nodes: first define every output, so the order of nodes in the file does not matter.
        let mut pending: Vec<(usize, &NodeProto)> = Vec::new();
        for (i, n) in graph.node.iter().enumerate() {
            let where_ = || node_label(n, i);
            let op_type = n.op_type.as_deref().unwrap_or("");
            let domain = n.domain.as_deref().unwrap_or("");
            if op_type == "Constant" && matches!(domain, "" | "ai.onnx") {
                let out = n.output.first().filter(|_| n.output.len() == 1).ok_or_else(|| {
                    Error::InvalidModel("Constant must have exactly one output".into())
                });
                let out = out.context(where_)?;
                let t = constant_value(n, self.base_dir).context(where_)?;
                let id = self.define(out, "value").context(where_)?;
                self.g.consts.insert(id, Arc::new(t));
                continue;
            }
            for o in &n.output {
                if !o.is_empty() {
                    self.define(o, "value").context(where_)?;
                }
            }
            pending.push((i, n));
        }
        let mut nodes = Vec::with_capacity(pending.len());
        for &(i, n) in &pending {
            nodes.push(self.node(n, model).context(|| node_label(n, i))?);
        }
        self.g.nodes = topo_sort(nodes)?;
        for vi in &graph.output {
            let name = vi.name.clone().unwrap_or_default();
            let id = *self.names.get(&name).ok_or_else(|| {
                Error::InvalidModel(format!("graph output '{name}' is not produced by any node, input or initializer"))
            })?;
            self.g.outputs.push(id);
        }
        if self.g.outputs.is_empty() {
            return Err(Error::InvalidModel("the graph has no outputs".into()));
        }
        crate::verify::verify(&self.g)
    }

    fn node(&mut self, n: &NodeProto, model: &ModelProto) -> Result<Node> {
        let op_type = n.op_type.as_deref().unwrap_or("");
        let domain = n.domain.as_deref().unwrap_or("");
        if !matches!(domain, "" | "ai.onnx") {
            let local = model.functions.iter().any(|f| f.name.as_deref() == Some(op_type));
            return Err(Error::Unsupported(format!(
                "op '{op_type}' of domain '{domain}'{}",
                if local { " (a model-local function)" } else { "" }
            )));
        }
        let kind = OpKind::from_name(op_type).ok_or_else(|| {
            Error::Unsupported(format!("op '{op_type}' of domain 'ai.onnx' (opset {})", self.opset))
        })?;
        let mut attrs = Attrs::new();
        for a in &n.attribute {
            let name = a.name.clone().unwrap_or_default();
            let value = attr_value(a, self.base_dir).context(|| format!("attribute '{name}'"))?;
            if attrs.has(&name) {
                return Err(Error::InvalidModel(format!("attribute '{name}' is given twice")));
            }
            attrs.set(&name, value);
        }
        let mut inputs = Vec::with_capacity(n.input.len());
        for name in &n.input {
            if name.is_empty() {
                inputs.push(None);
            } else {
                let id = *self.names.get(name).ok_or_else(|| {
                    Error::InvalidModel(format!(
                        "input '{name}' is not produced by any node, graph input or initializer"
                    ))
                })?;
                inputs.push(Some(id));
            }
        }
        let outputs = n
            .output
            .iter()
            .map(|o| if o.is_empty() { None } else { self.names.get(o).copied() })
            .collect();
        Ok(Node {
            name: n.name.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| n.output.first().cloned().unwrap_or_default()),
            op: Op { kind, attrs, version: self.opset },
            inputs,
            outputs,
        })
    }
}

/// `node 'conv1' (Conv)` or, for an unnamed node, `node #3 (Conv)`.
fn node_label(n: &NodeProto, index: usize) -> String {
    let op = n.op_type.as_deref().unwrap_or("?");
    match n.name.as_deref() {
        Some(name) if !name.is_empty() => format!("node '{name}' ({op})"),
        _ => format!("node #{index} ({op})"),
    }
}

fn input_type(vi: &proto::ValueInfoProto) -> Result<(DType, Vec<Dim>)> {
    use proto::type_proto::Value;
    let name = vi.name.as_deref().unwrap_or("");
    let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(t)) => t,
        Some(_) => return Err(Error::Unsupported("non-tensor input types (sequence, map, optional)".into())),
        None => return Err(Error::InvalidModel("the input has no type".into())),
    };
    let code = tt.elem_type.unwrap_or(0);
    let dtype = DType::from_onnx_code(code).ok_or_else(|| {
        Error::Unsupported(format!("element type {} ({code})", DType::onnx_code_name(code)))
    })?;
    let shape = tt.shape.as_ref().ok_or_else(|| {
        Error::Unsupported("inputs without a declared rank".into())
    })?;
    let mut dims = Vec::with_capacity(shape.dim.len());
    for (k, d) in shape.dim.iter().enumerate() {
        use proto::tensor_shape_proto::dimension::Value as D;
        dims.push(match &d.value {
            Some(D::DimValue(v)) if *v >= 0 => Dim::Fixed(
                usize::try_from(*v).map_err(|_| Error::InvalidModel(format!("dim {k} = {v} is too large")))?,
            ),
            // -1 is a common way to write "unknown"; anything below is malformed.
            Some(D::DimValue(-1)) => Dim::Symbol(format!("{name}.{k}")),
            Some(D::DimValue(v)) => return Err(Error::InvalidModel(format!("dim {k} is negative ({v})"))),
            // "?" (like an empty name) marks an unknown dim, not one shared with others.
            Some(D::DimParam(p)) if !p.is_empty() && p != "?" => Dim::Symbol(p.clone()),
            _ => Dim::Symbol(format!("{name}.{k}")),
        });
    }
    let fixed: Vec<usize> = dims.iter().filter_map(|d| if let Dim::Fixed(n) = d { Some(*n) } else { None }).collect();
    crate::tensor::checked_numel(&fixed)?;
    Ok((dtype, dims))
}

fn attr_value(a: &proto::AttributeProto, base_dir: Option<&Path>) -> Result<Attr> {
    if a.ref_attr_name.is_some() {
        return Err(Error::Unsupported("attribute references (only valid inside functions)".into()));
    }
    let ty = match a.r#type {
        Some(t) => t,
        // Very old exporters leave `type` unset: infer it from the field that is set.
        None => {
            if a.f.is_some() {
                at::FLOAT
            } else if a.i.is_some() {
                at::INT
            } else if a.s.is_some() {
                at::STRING
            } else if a.t.is_some() {
                at::TENSOR
            } else if !a.floats.is_empty() {
                at::FLOATS
            } else if !a.ints.is_empty() {
                at::INTS
            } else if !a.strings.is_empty() {
                at::STRINGS
            } else {
                return Err(Error::InvalidModel("attribute without a type or value".into()));
            }
        }
    };
    let text = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| Error::InvalidModel("string is not UTF-8".into()))
    };
    Ok(match ty {
        at::FLOAT => Attr::Float(a.f.unwrap_or(0.0)),
        at::INT => Attr::Int(a.i.unwrap_or(0)),
        at::STRING => Attr::String(text(a.s.as_deref().unwrap_or(&[]))?),
        at::TENSOR => {
            let t = a.t.as_ref().ok_or_else(|| Error::InvalidModel("tensor attribute without a tensor".into()))?;
            Attr::Tensor(tensor_from_proto(t, base_dir)?)
        }
        at::FLOATS => Attr::Floats(a.floats.clone()),
        at::INTS => Attr::Ints(a.ints.clone()),
        at::STRINGS => Attr::Strings(a.strings.iter().map(|s| text(s)).collect::<Result<_>>()?),
        at::GRAPH | at::GRAPHS => return Err(Error::Unsupported("graph attributes (control flow)".into())),
        at::TENSORS | at::SPARSE_TENSOR | at::SPARSE_TENSORS | at::TYPE_PROTO | at::TYPE_PROTOS => {
            return Err(Error::Unsupported(format!("attributes of type code {ty}")));
        }
        other => return Err(Error::InvalidModel(format!("unknown attribute type code {other}"))),
    })
}

/// The value of a `Constant` node, from whichever of its attributes is set.
fn constant_value(n: &NodeProto, base_dir: Option<&Path>) -> Result<Tensor> {
    if n.attribute.len() != 1 {
        return Err(Error::InvalidModel(format!(
            "Constant must have exactly one attribute, has {}",
            n.attribute.len()
        )));
    }
    let a = &n.attribute[0];
    let name = a.name.as_deref().unwrap_or("");
    let attr = attr_value(a, base_dir).context(|| format!("attribute '{name}'"))?;
    Ok(match (name, attr) {
        ("value", Attr::Tensor(t)) => t,
        ("value_float", Attr::Float(f)) => Tensor::scalar(f),
        ("value_floats", Attr::Floats(f)) => Tensor::from_vec(vec![f.len()], f)?,
        ("value_int", Attr::Int(i)) => Tensor::scalar(i),
        ("value_ints", Attr::Ints(i)) => Tensor::from_i64s(i),
        ("value_string" | "value_strings", _) => return Err(Error::Unsupported("string constants".into())),
        ("sparse_value", _) => return Err(Error::Unsupported("sparse constants".into())),
        (name, a) => {
            return Err(Error::InvalidModel(format!("Constant attribute '{name}' of type {} is not valid", a.kind())))
        }
    })
}

/// Orders nodes so each comes after the producers of its inputs; a cycle is an error.
fn topo_sort(nodes: Vec<Node>) -> Result<Vec<Node>> {
    let mut producer: HashMap<ValueId, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.outputs.iter().flatten() {
            producer.insert(*o, i);
        }
    }
    let mut dag = petgraph::graph::DiGraph::<usize, ()>::with_capacity(nodes.len(), nodes.len());
    let idx: Vec<_> = (0..nodes.len()).map(|i| dag.add_node(i)).collect();
    let mut seen = HashSet::new();
    for (i, n) in nodes.iter().enumerate() {
        for v in n.inputs.iter().flatten() {
            if let Some(&p) = producer.get(v)
                && seen.insert((p, i)) {
                    dag.add_edge(idx[p], idx[i], ());
                }
        }
    }
    let order = petgraph::algo::toposort(&dag, None).map_err(|cycle| {
        let n = &nodes[dag[cycle.node_id()]];
        Error::InvalidModel(format!(
            "the graph has a cycle through node '{}' ({})",
            n.name,
            n.op.kind.name()
        ))
    })?;
    let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|ix| slots[dag[ix]].take()).collect())
}
