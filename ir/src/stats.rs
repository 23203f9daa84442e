//! Model statistics for `atomc inspect`: op histogram, parameter count and FLOPs of a
//! specialized graph (a multiply-add counts as 2 FLOPs).

use crate::graph::{Graph, Node, ValueType};
use std::collections::BTreeMap;

/// How many nodes of each op type.
pub fn op_histogram(g: &Graph) -> BTreeMap<&'static str, usize> {
    let mut h = BTreeMap::new();
    for n in &g.nodes {
        *h.entry(n.op.kind.name()).or_insert(0) += 1;
    }
    h
}

/// FLOPs of one node given the types of its values, when its shapes are known.
pub fn node_flops(g: &Graph, n: &Node) -> Option<u64> {
    let ty = |v: Option<&Option<crate::ValueId>>| -> Option<&ValueType> { g.value((*v?)?).ty.as_ref() };
    let shape = |v| ty(v).and_then(|t| t.shape.as_deref());
    let numel = |s: &[usize]| s.iter().product::<usize>() as u64;
    let out = shape(n.outputs.first())?;
    Some(match n.op.kind.name() {
        "MatMul" | "MatMulInteger" | "QLinearMatMul" => {
            let a = shape(n.inputs.first())?;
            let k = *a.last()? as u64;
            2 * numel(out) * k
        }
        "Gemm" => {
            let a = shape(n.inputs.first())?;
            let trans_a = n.op.attrs.int_or("transA", 0).ok()? != 0;
            let k = if trans_a { a.first()? } else { a.last()? };
            2 * numel(out) * *k as u64
        }
        "Conv" | "ConvInteger" | "QLinearConv" => {
            let w = shape(n.inputs.get(1))?;
            2 * numel(out) * numel(w.get(1..)?)
        }
        "ConvTranspose" => {
            let x = shape(n.inputs.first())?;
            let w = shape(n.inputs.get(1))?;
            2 * numel(x) * numel(w.get(1..)?)
        }
        _ => {
            let inputs: u64 = n.inputs.iter().filter_map(|v| shape(Some(v)).map(numel)).max().unwrap_or(0);
            inputs.max(numel(out))
        }
    })
}

/// Total FLOPs of a specialized graph (nodes with unknown shapes count 0) and the number of
/// nodes whose shapes were unknown.
pub fn flops(g: &Graph) -> (u64, usize) {
    let mut total = 0;
    let mut unknown = 0;
    for n in &g.nodes {
        match node_flops(g, n) {
            Some(f) => total += f,
            None => unknown += 1,
        }
    }
    (total, unknown)
}
