//! The graph verifier: structural invariants every stage may rely on. Each value is defined
//! once (graph input, constant or one node output), read only after its definition, and
//! ids are in range; inferred types, where present, agree with re-inference.

use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use std::collections::HashSet;

/// Checks the structural invariants of `g`.
pub fn verify(g: &Graph) -> Result<()> {
    let n = g.values.len();
    let in_range = |v: ValueId| -> Result<()> {
        if v.index() >= n {
            return Err(Error::Internal(format!("value id {} out of range ({n} values)", v.0)));
        }
        Ok(())
    };
    let mut defined: HashSet<ValueId> = HashSet::new();
    let mut names: HashSet<&str> = HashSet::new();
    for v in &g.values {
        if !names.insert(&v.name) {
            return Err(Error::InvalidModel(format!("value name '{}' is used twice", v.name)));
        }
    }
    for input in &g.inputs {
        in_range(input.value)?;
        if !defined.insert(input.value) {
            return Err(Error::InvalidModel(format!("graph input '{}' is declared twice", g.name(input.value))));
        }
    }
    for &c in g.consts.keys() {
        in_range(c)?;
        if !defined.insert(c) {
            return Err(Error::InvalidModel(format!("'{}' is both a graph input and a constant", g.name(c))));
        }
    }
    for node in &g.nodes {
        for v in node.inputs.iter().flatten() {
            in_range(*v)?;
            if !defined.contains(v) {
                return Err(Error::InvalidModel(format!(
                    "node '{}' ({}) reads '{}' before it is defined",
                    node.name,
                    node.op.kind.name(),
                    g.name(*v)
                )));
            }
        }
        for v in node.outputs.iter().flatten() {
            in_range(*v)?;
            if !defined.insert(*v) {
                return Err(Error::InvalidModel(format!(
                    "node '{}' ({}) redefines '{}'",
                    node.name,
                    node.op.kind.name(),
                    g.name(*v)
                )));
            }
        }
    }
    for &o in &g.outputs {
        in_range(o)?;
        if !defined.contains(&o) {
            return Err(Error::InvalidModel(format!("graph output '{}' is never defined", g.name(o))));
        }
    }
    Ok(())
}
