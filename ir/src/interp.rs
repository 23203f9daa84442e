//! The reference interpreter: runs a specialized graph node by node with each op's
//! reference `eval`. It defines what every op means; every other stage is tested against it.

use crate::error::{Error, Result, ResultExt};
use crate::graph::{Graph, ValueId};
use crate::shape::fmt_shape;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Runs `graph` (specialized: input shapes static) on `inputs`, given in the order of
/// `graph.inputs`. Returns the outputs in the order of `graph.outputs`.
pub fn run(graph: &Graph, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
    if inputs.len() != graph.inputs.len() {
        return Err(Error::InvalidInput(format!(
            "the model takes {} inputs, {} given",
            graph.inputs.len(),
            inputs.len()
        )));
    }
    let mut env: Vec<Option<Arc<Tensor>>> = vec![None; graph.values.len()];
    for (id, t) in &graph.consts {
        env[id.index()] = Some(t.clone());
    }
    for (input, t) in graph.inputs.iter().zip(inputs) {
        let name = graph.name(input.value);
        if t.dtype() != input.dtype {
            return Err(Error::InvalidInput(format!(
                "input '{name}' must be {}, got {}",
                input.dtype,
                t.dtype()
            )));
        }
        if let Some(s) = input.static_shape()
            && s != t.shape() {
                return Err(Error::InvalidInput(format!(
                    "input '{name}' must have shape {}, got {}",
                    fmt_shape(&s),
                    fmt_shape(t.shape())
                )));
            }
        env[input.value.index()] = Some(Arc::new(t));
    }
    // The last node that reads each value, so intermediate tensors are freed early.
    let mut last_use = vec![usize::MAX; graph.values.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        for v in node.inputs.iter().flatten() {
            last_use[v.index()] = i;
        }
    }
    for o in &graph.outputs {
        last_use[o.index()] = usize::MAX;
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        let where_ = || format!("node '{}' ({})", node.name, node.op.kind.name());
        let mut args: Vec<Option<Arc<Tensor>>> = Vec::with_capacity(node.inputs.len());
        for input in &node.inputs {
            args.push(match input {
                None => None,
                Some(v) => Some(get(&env, graph, *v).context(where_)?),
            });
        }
        let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_deref()).collect();
        let out = node.op.eval(&refs, node.outputs.len()).context(where_)?;
        for (o, t) in node.outputs.iter().zip(out) {
            if let Some(o) = o {
                env[o.index()] = Some(Arc::new(t));
            }
        }
        for v in node.inputs.iter().flatten() {
            if last_use[v.index()] == i && !graph.consts.contains_key(v) {
                env[v.index()] = None;
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|&o| get(&env, graph, o).map(Arc::unwrap_or_clone))
        .collect()
}

fn get(env: &[Option<Arc<Tensor>>], graph: &Graph, v: ValueId) -> Result<Arc<Tensor>> {
    env[v.index()]
        .clone()
        .ok_or_else(|| Error::Internal(format!("value '{}' read before it was computed", graph.name(v))))
}
