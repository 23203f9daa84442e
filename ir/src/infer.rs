//! Specialization: resolves symbolic input dims from concrete shapes, infers the dtype and
//! static shape of every value, and folds nodes whose inputs are all constant.

use crate::error::{Error, Result, ResultExt};
use crate::graph::{Dim, Graph, ValueType};
use crate::op::Fact;
use crate::shape::fmt_shape;
use std::collections::HashMap;
use std::sync::Arc;

/// Folded constants larger than this many elements stay computed at run time.
pub const FOLD_LIMIT: usize = 1 << 24;

/// Concrete shapes for graph inputs, by input name.
pub type InputShapes = HashMap<String, Vec<usize>>;

/// Returns the graph with every input shape static (symbolic dims resolved from `shapes`,
/// which may also give fixed dims, which must then agree), types inferred for every value,
/// and constant subgraphs folded.
pub fn specialize(graph: &Graph, shapes: &InputShapes) -> Result<Graph> {
    let mut g = graph.clone();
    for name in shapes.keys() {
        if !g.inputs.iter().any(|i| g.name(i.value) == name) {
            return Err(Error::InvalidInput(format!("the model has no input named '{name}'")));
        }
    }
    let mut symbols: HashMap<String, (usize, String)> = HashMap::new();
    for input in &mut g.inputs {
        let name = graph.name(input.value).to_string();
        let given = shapes.get(&name);
        if let Some(s) = given
            && s.len() != input.dims.len() {
                return Err(Error::InvalidInput(format!(
                    "input '{name}' has rank {} but the model declares rank {} ({})",
                    s.len(),
                    input.dims.len(),
                    fmt_dims(&input.dims)
                )));
            }
        let mut resolved = Vec::with_capacity(input.dims.len());
        for (k, d) in input.dims.iter().enumerate() {
            let n = match (d, given) {
                (Dim::Fixed(n), Some(s)) if s[k] != *n => {
                    return Err(Error::InvalidInput(format!(
                        "input '{name}' has shape {} but the model declares {}",
                        fmt_shape(s),
                        fmt_dims(&input.dims)
                    )));
                }
                (Dim::Fixed(n), _) => *n,
                (Dim::Symbol(sym), Some(s)) => {
                    if let Some((prev, who)) = symbols.get(sym)
                        && *prev != s[k] {
                            return Err(Error::InvalidInput(format!(
                                "dim '{sym}' is {prev} in input '{who}' but {} in input '{name}'",
                                s[k]
                            )));
                        }
                    symbols.insert(sym.clone(), (s[k], name.clone()));
                    s[k]
                }
                (Dim::Symbol(sym), None) => match symbols.get(sym) {
                    Some((n, _)) => *n,
                    None => {
                        return Err(Error::InvalidInput(format!(
                            "dim '{sym}' of input '{name}' ({}) is not resolved: give the input's shape (e.g. --shape {name}=...)",
                            fmt_dims(&input.dims)
                        )));
                    }
                },
            };
            resolved.push(n);
        }
        crate::tensor::checked_numel(&resolved).context(|| format!("input '{name}'"))?;
        input.dims = resolved.iter().map(|&n| Dim::Fixed(n)).collect();
        g.values[input.value.index()].ty = Some(ValueType::new(input.dtype, resolved));
    }
    infer_types(&mut g, true)?;
    Ok(g)
}

/// Infers the type of every value from the input types already set; with `fold`, evaluates
/// and removes nodes whose inputs are all constant.
pub fn infer_types(g: &mut Graph, fold: bool) -> Result<()> {
    for (id, t) in &g.consts {
        g.values[id.index()].ty = Some(ValueType::of(t));
    }
    let nodes = std::mem::take(&mut g.nodes);
    let mut kept = Vec::with_capacity(nodes.len());
    for node in nodes {
        let where_ = || format!("node '{}' ({})", node.name, node.op.kind.name());
        let mut facts = Vec::with_capacity(node.inputs.len());
        for &input in &node.inputs {
            match input {
                None => facts.push(None),
                Some(v) => {
                    let ty = g.values[v.index()].ty.as_ref().ok_or_else(|| {
                        Error::Internal(format!("value '{}' used before it has a type", g.name(v)))
                    });
                    facts.push(Some((ty.context(where_)?, g.consts.get(&v).map(|t| &**t))));
                }
            }
        }
        let facts: Vec<Option<Fact>> =
            facts.iter().map(|f| f.map(|(ty, value)| Fact { ty, value })).collect();
        let types = node.op.infer(&facts, node.outputs.len()).context(where_)?;
        if fold
            && let (Some(t), [Some(o)]) = (node.op.value_from_types(&facts).context(where_)?, node.outputs.as_slice()) {
                g.values[o.index()].ty = Some(ValueType::of(&t));
                g.consts.insert(*o, Arc::new(t));
                continue;
            }
        let all_const = facts.iter().flatten().all(|f| f.value.is_some());
        let small = types
            .iter()
            .all(|t| t.shape.as_ref().is_some_and(|s| s.iter().product::<usize>() <= FOLD_LIMIT));
        if fold && all_const && small && node.op.kind.is_deterministic() {
            let inputs: Vec<_> = facts.iter().map(|f| f.and_then(|f| f.value)).collect();
            let out = node.op.eval(&inputs, node.outputs.len()).context(where_)?;
            for (o, t) in node.outputs.iter().zip(out) {
                if let Some(o) = o {
                    g.values[o.index()].ty = Some(ValueType::of(&t));
                    g.consts.insert(*o, Arc::new(t));
                }
            }
            continue;
        }
        for (o, t) in node.outputs.iter().zip(types) {
            if let Some(o) = o {
                g.values[o.index()].ty = Some(t);
            }
        }
        kept.push(node);
    }
    g.nodes = kept;
    Ok(())
}

/// `[batch,3,224,224]`.
pub fn fmt_dims(dims: &[Dim]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join(","))
}
