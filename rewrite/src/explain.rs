//! Provenance for `atomc explain`: for each high-level node, the atoms it became (the
//! extracted sub-DAG between its inputs and its outputs) and the rules that got it there
//! (its lowering rules, then the algebra rules that fired inside that sub-DAG).

use crate::egraph::EG;
use crate::extract::Extraction;
use crate::lang::Term;
use egg::Id;
use ir::atom::Atom;
use ir::shape::fmt_shape;
use ir::{Graph, ValueId};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// What one source node became.
#[derive(Clone, Debug)]
pub struct NodeProvenance {
    pub node: String,
    pub op: String,
    /// One line per atom, in dependency order.
    pub atoms: Vec<String>,
    /// Rule names, lowering first, each once.
    pub rules: Vec<String>,
    /// Left high-level (host op or unlowered), with the reason.
    pub high_level: Option<String>,
    /// No output of the node is computed on its own: a consumer absorbed it (a conv whose
    /// weights took a following BatchNorm's scale is computed inside the BatchNorm's atoms).
    pub absorbed: bool,
}

impl std::fmt::Display for NodeProvenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} ({})", self.node, self.op)?;
        if let Some(r) = &self.high_level {
            writeln!(f, "  stays high-level: {r}")?;
        }
        if self.absorbed {
            writeln!(f, "  absorbed: computed inside its consumers' atoms (e.g. folded into the next node)")?;
        }
        writeln!(f, "  rules: {}", if self.rules.is_empty() { "(none)".into() } else { self.rules.join(", ") })?;
        writeln!(f, "  atoms ({}):", self.atoms.len())?;
        for a in &self.atoms {
            writeln!(f, "    {a}")?;
        }
        Ok(())
    }
}

/// A one-line description of an atom and its output type.
pub fn describe(atom: &Atom, out: &str) -> String {
    let mut s = String::new();
    let _ = match atom {
        Atom::View(v) => {
            let mut d = format!("View {} strides={:?}", fmt_shape(&v.shape), v.strides);
            if v.offset != 0 {
                let _ = write!(d, " offset={}", v.offset);
            }
            if !v.guards.is_empty() {
                let _ = write!(d, " guards={} pad={}", v.guards.len(), v.pad);
            }
            write!(s, "{d}")
        }
        Atom::Unary(u) => write!(s, "Unary {}", u.name()),
        Atom::Binary(b) => write!(s, "Binary {}", b.name()),
        Atom::Select => write!(s, "Select"),
        Atom::Reduce { op, axes } => write!(s, "Reduce {} axes={axes:?}", op.name()),
        Atom::MatMul => write!(s, "MatMul"),
        Atom::Gather { axis } => write!(s, "Gather axis={axis}"),
        Atom::Scatter { axis, mode } => write!(s, "Scatter axis={axis} {}", mode.name()),
        Atom::Cast(d) => write!(s, "Cast {d}"),
        Atom::Const(t) => write!(s, "Const {}", fmt_shape(t.shape())),
    };
    format!("{s} -> {out}")
}

pub fn provenance(src: &Graph, eg: &EG, value_class: &HashMap<ValueId, Id>, ex: &Extraction) -> Vec<NodeProvenance> {
    // Classes that are a source value (boundaries between nodes).
    let boundary: HashSet<Id> = value_class.values().map(|&c| eg.find(c)).collect();
    let mut out = Vec::new();
    for (ni, node) in src.nodes.iter().enumerate() {
        let outs: Vec<Id> =
            node.outputs.iter().flatten().filter_map(|o| value_class.get(o)).map(|&c| eg.find(c)).collect();
        let mut region: Vec<Id> = Vec::new();
        let mut seen: HashSet<Id> = HashSet::new();
        let mut high_level = None;
        // Post-order walk inside the node's region.
        let mut stack: Vec<(Id, bool)> = outs.iter().map(|&c| (c, false)).collect();
        while let Some((c, expanded)) = stack.pop() {
            if expanded {
                region.push(c);
                continue;
            }
            if !seen.insert(c) {
                continue;
            }
            let Some(term) = ex.choice.get(&c) else { continue };
            if let Term::Hl(h, _) = term {
                if eg.analysis.hl.get(*h as usize).is_some_and(|hl| hl.node.index() == ni) {
                    high_level = Some(crate::build::high_level_reason(eg, *h));
                }
                continue;
            }
            stack.push((c, true));
            for &k in egg::Language::children(term) {
                let k = eg.find(k);
                if !boundary.contains(&k) || outs.contains(&k) {
                    stack.push((k, false));
                }
            }
        }
        let mut atoms = Vec::new();
        for c in &region {
            if let Some(Term::Atom(a, _)) = ex.choice.get(c)
                && let Some(atom) = eg.analysis.atoms.get(*a as usize)
            {
                let ty = eg[*c].data.ty.as_ref().map_or("?".to_string(), |t| t.to_string());
                atoms.push(describe(atom, &ty));
            }
        }
        let region_set: HashSet<Id> = region.iter().copied().collect();
        let mut rules: Vec<String> = Vec::new();
        for a in &eg.analysis.log {
            let mine = match a.hl {
                Some(h) => eg.analysis.hl.get(h as usize).is_some_and(|hl| hl.node.index() == ni),
                None => region_set.contains(&eg.find(a.class)),
            };
            if mine && !rules.iter().any(|r| r == a.rule) {
                rules.push(a.rule.to_string());
            }
        }
        let absorbed = !outs.is_empty() && outs.iter().all(|c| !ex.choice.contains_key(c));
        out.push(NodeProvenance {
            node: node.name.clone(),
            op: node.op.kind.name().to_string(),
            atoms,
            rules,
            high_level,
            absorbed,
        });
    }
    out
}
