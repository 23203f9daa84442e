//! Turns an extraction back into an `ir::Graph`: atoms become `atom.*` nodes, constants
//! graph constants, and high-level terms (host ops, unlowerable nodes) their original node.
//! Values keep the source graph's names where a class stands for a source value; graph
//! outputs keep their names (an identity view is added where a class is output twice or
//! is an input).

use crate::egraph::EG;
use crate::extract::Extraction;
use crate::lang::Term;
use egg::Id;
use ir::atom::{Atom, ViewMap};
use ir::{Error, Graph, Node, NodeId, Result, ValueId};
use std::collections::{HashMap, HashSet};

pub struct Built {
    pub graph: Graph,
    /// Nodes left high-level: (node name, op, reason).
    pub high_level: Vec<(String, String, String)>,
}

pub fn build(src: &Graph, eg: &EG, value_class: &HashMap<ValueId, Id>, ex: &Extraction) -> Result<Built> {
    let mut g = Graph::default();
    // Source names per class (node outputs and inputs first, in source order).
    let mut class_name: HashMap<Id, (ValueId, String)> = HashMap::new();
    let mut order: Vec<ValueId> = src.inputs.iter().map(|i| i.value).collect();
    for n in &src.nodes {
        order.extend(n.outputs.iter().flatten());
    }
    let mut consts: Vec<ValueId> = src.consts.keys().copied().collect();
    consts.sort();
    order.extend(consts);
    for v in order {
        if let Some(&c) = value_class.get(&v) {
            class_name.entry(eg.find(c)).or_insert((v, src.name(v).to_string()));
        }
    }
    let producer: HashMap<ValueId, String> =
        src.nodes.iter().flat_map(|n| n.outputs.iter().flatten().map(|&o| (o, n.name.clone()))).collect();
    let mut value_of: HashMap<Id, ValueId> = HashMap::new();
    // Graph inputs first, with their declared dims.
    for (i, input) in src.inputs.iter().enumerate() {
        let v = g.add_value(src.name(input.value));
        g.values[v.index()].ty = src.value(input.value).ty.clone();
        g.inputs.push(ir::Input { value: v, dtype: input.dtype, dims: input.dims.clone() });
        if let Some(&c) = value_class.get(&input.value) {
            let c = eg.find(c);
            if matches!(ex.choice.get(&c), Some(Term::Input(j)) if *j as usize == i) {
                value_of.insert(c, v);
            }
        }
    }
    let mut emitted_nodes: HashSet<NodeId> = HashSet::new();
    let mut high_level = Vec::new();
    let mut counter = 0usize;
    // Iterative post-order DFS from the outputs.
    let roots: Vec<Id> = src.outputs.iter().filter_map(|o| value_class.get(o).map(|&c| eg.find(c))).collect();
    let mut visiting: HashSet<Id> = HashSet::new();
    let mut owner: HashMap<Id, String> = HashMap::new();
    for root in roots {
        let mut stack: Vec<(Id, bool)> = vec![(root, false)];
        while let Some((c, expanded)) = stack.pop() {
            if value_of.contains_key(&c) {
                continue;
            }
            let term = ex
                .choice
                .get(&c)
                .ok_or_else(|| Error::Internal(format!("class {c} has no extracted term (a cycle or an untyped term)")))?;
            let kids: Vec<Id> = egg::Language::children(term).iter().map(|&k| eg.find(k)).collect();
            if !expanded {
                if !visiting.insert(c) {
                    return Err(Error::Internal(format!("class {c} is on a cycle of the extraction")));
                }
                stack.push((c, true));
                let own = match term {
                    Term::Hl(h, _) => eg.analysis.hl.get(*h as usize).map(|n| n.name.clone()),
                    _ => class_name.get(&c).and_then(|(v, _)| producer.get(v).cloned()),
                }
                .or_else(|| owner.get(&c).cloned())
                .unwrap_or_default();
                owner.insert(c, own.clone());
                for &k in kids.iter().rev() {
                    if !value_of.contains_key(&k) && !matches!(ex.choice.get(&k), Some(Term::Absent)) {
                        owner.entry(k).or_insert_with(|| own.clone());
                        stack.push((k, false));
                    }
                }
                continue;
            }
            visiting.remove(&c);
            let ty = eg[c].data.ty.clone();
            let name = |counter: &mut usize, fallback: &str| -> String {
                match class_name.get(&c) {
                    Some((_, n)) => n.clone(),
                    None => {
                        *counter += 1;
                        format!("{fallback}.{counter}")
                    }
                }
            };
            match term {
                Term::Absent => {}
                Term::Input(_) => {
                    return Err(Error::Internal("input class extracted as another input".into()));
                }
                Term::Const(k) => {
                    let t = eg
                        .analysis
                        .consts
                        .get(*k as usize)
                        .cloned()
                        .ok_or_else(|| Error::Internal("dangling constant".into()))?;
                    let v = g.add_value(name(&mut counter, "const"));
                    g.values[v.index()].ty = Some(ir::ValueType::of(&t));
                    g.consts.insert(v, t);
                    value_of.insert(c, v);
                }
                Term::Atom(a, _) => {
                    let atom = eg.analysis.atoms.get(*a as usize).ok_or_else(|| Error::Internal("dangling atom".into()))?;
                    let own = owner.get(&c).cloned().unwrap_or_default();
                    let v = g.add_value(name(&mut counter, &own));
                    g.values[v.index()].ty = ty;
                    let inputs: Vec<Option<ValueId>> = kids.iter().map(|k| value_of.get(k).copied()).collect();
                    counter += 1;
                    g.nodes.push(Node {
                        name: format!("{own}/{}{counter}", &atom.kind().name()[5..]),
                        op: atom.to_op(),
                        inputs,
                        outputs: vec![Some(v)],
                    });
                    value_of.insert(c, v);
                }
                Term::Hl(h, _) => {
                    let hl = eg.analysis.hl.get(*h as usize).ok_or_else(|| Error::Internal("dangling op".into()))?;
                    if !emitted_nodes.insert(hl.node) {
                        // Another output of an emitted node: its value is already mapped.
                        continue;
                    }
                    let node = src.node(hl.node);
                    let inputs: Vec<Option<ValueId>> = kids
                        .iter()
                        .map(|k| if matches!(ex.choice.get(k), Some(Term::Absent)) { None } else { value_of.get(k).copied() })
                        .collect();
                    let mut outputs = Vec::new();
                    for o in &node.outputs {
                        match o {
                            None => outputs.push(None),
                            Some(o) => {
                                let v = g.add_value(src.name(*o));
                                g.values[v.index()].ty = src.value(*o).ty.clone();
                                outputs.push(Some(v));
                                if let Some(&oc) = value_class.get(o) {
                                    value_of.entry(eg.find(oc)).or_insert(v);
                                }
                            }
                        }
                    }
                    let reason = high_level_reason(eg, *h);
                    high_level.push((node.name.clone(), node.op.kind.name().to_string(), reason));
                    g.nodes.push(Node { name: node.name.clone(), op: node.op.clone(), inputs, outputs });
                    if !value_of.contains_key(&c) {
                        return Err(Error::Internal(format!("node '{}' does not produce its class", node.name)));
                    }
                }
            }
        }
    }
    // Outputs, by their source names.
    let mut used: HashSet<ValueId> = HashSet::new();
    for &o in &src.outputs {
        let c = value_class.get(&o).map(|&c| eg.find(c)).ok_or_else(|| Error::Internal("output without class".into()))?;
        let v = *value_of.get(&c).ok_or_else(|| Error::Internal(format!("output '{}' was not built", src.name(o))))?;
        let is_input = g.inputs.iter().any(|i| i.value == v);
        if g.name(v) == src.name(o) && !is_input && used.insert(v) {
            g.outputs.push(v);
            continue;
        }
        let ty = g.value(v).ty.clone();
        let shape = ty.as_ref().and_then(|t| t.shape.clone()).unwrap_or_default();
        let w = g.add_value(src.name(o));
        g.values[w.index()].ty = ty;
        g.nodes.push(Node {
            name: format!("{}/output", src.name(o)),
            op: Atom::View(ViewMap::identity(&shape)).to_op(),
            inputs: vec![Some(v)],
            outputs: vec![Some(w)],
        });
        g.outputs.push(w);
    }
    Ok(Built { graph: g, high_level })
}

/// Why a high-level term could not be lowered.
pub fn high_level_reason(eg: &EG, h: u32) -> String {
    let Some(hl) = eg.analysis.hl.get(h as usize) else { return "unknown".into() };
    if let Some(r) = crate::host::reason(hl.op.kind.name()) {
        return format!("host op: {r}");
    }
    if !hl.lowerable {
        return "host: data-dependent shape".into();
    }
    if let Some(r) = eg.analysis.errors.iter().filter(|(_, e, _)| *e == h).find_map(|(_, _, m)| crate::host::host_only_reason(m)) {
        return format!("host: {r}");
    }
    let errs: Vec<String> =
        eg.analysis.errors.iter().filter(|(_, e, _)| *e == h).map(|(r, _, m)| format!("{r}: {m}")).collect();
    if errs.is_empty() { "no lowering rule".into() } else { format!("lowering failed: {}", errs.join("; ")) }
}
