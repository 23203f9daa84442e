//! DAG-aware extraction: the cost of choosing an e-node is its own cost plus the cost of
//! every class in the sub-DAG below it counted once (a shared subterm is paid once), found
//! by a greedy fixpoint ("greedy DAG" extraction). High-level ops cost far more than any
//! atom term, so they are extracted only where no lowering exists (host ops).
//!
//! Atom costs come from the target description: FLOPs over peak FLOP/s at its vector width
//! plus bytes moved over bandwidth; views cost almost nothing (they fuse into loads).

use crate::egraph::EG;
use crate::lang::Term;
use egg::Id;
use ir::atom::Atom;
use std::collections::HashMap;
use targets::Target;

/// The cost of a high-level term: larger than any atom subgraph.
pub const HIGH_LEVEL_COST: f64 = 1e12;

/// The chosen e-node of every class reachable from the roots.
pub struct Extraction {
    pub choice: HashMap<Id, Term>,
    /// Total cost of the extracted DAG (each class once).
    pub cost: f64,
}

/// The estimated seconds of one e-node given its class's output type.
fn node_cost(eg: &EG, class: Id, n: &Term, target: &Target) -> f64 {
    let numel = |id: Id| -> f64 {
        eg[id].data.ty.as_ref().and_then(|t| t.shape.as_ref()).map_or(1.0, |s| s.iter().product::<usize>() as f64)
    };
    let elem = |id: Id| -> f64 { eg[id].data.ty.as_ref().map_or(4.0, |t| t.dtype.size() as f64) };
    match n {
        Term::Input(_) | Term::Const(_) | Term::Absent => 0.0,
        Term::Hl(..) => HIGH_LEVEL_COST,
        Term::Atom(a, ch) => {
            let Some(atom) = eg.analysis.atoms.get(*a as usize) else { return HIGH_LEVEL_COST };
            let out = numel(class);
            let bytes_out = out * elem(class);
            let bytes_in: f64 = ch.iter().map(|&c| numel(c) * elem(c)).sum();
            let mem = |b: f64| b / target.bandwidth_bytes_per_s();
            match atom {
                // A view fuses into its consumer's loads: a small cost per element keeps
                // extraction from stacking views needlessly.
                Atom::View(_) => 1e-3 * mem(bytes_out),
                Atom::MatMul => {
                    let k = ch
                        .first()
                        .and_then(|&c| eg[c].data.ty.as_ref())
                        .and_then(|t| t.shape.as_ref())
                        .and_then(|s| s.last().copied())
                        .unwrap_or(1) as f64;
                    2.0 * out * k / target.peak_flops() + mem(bytes_in + bytes_out)
                }
                Atom::Reduce { .. } => numel(ch[0]) / target.peak_flops() + mem(bytes_in + bytes_out),
                Atom::Unary(f) => {
                    let w = if matches!(
                        f,
                        ir::atom::UnaryFn::Neg | ir::atom::UnaryFn::Abs | ir::atom::UnaryFn::Not
                    ) {
                        1.0
                    } else {
                        10.0
                    };
                    w * out / target.peak_flops() + mem(bytes_in + bytes_out)
                }
                _ => out / target.peak_flops() + mem(bytes_in + bytes_out),
            }
        }
    }
}

/// DAG-aware extraction from `roots`.
///
/// Phase 1 computes tree costs bottom-up to a fixpoint (every class gets an acyclic
/// choice). Phase 2 revisits, cheapest first, each class that has several finite
/// alternatives and picks the one whose whole sub-DAG under the current choices (each
/// class counted once) is cheapest, skipping any that would close a cycle.
pub fn extract(eg: &EG, roots: &[Id], target: &Target) -> Extraction {
    let mut tree: HashMap<Id, (f64, usize)> = HashMap::new();
    let own: HashMap<Id, Vec<f64>> = eg
        .classes()
        .map(|c| (c.id, c.nodes.iter().map(|n| node_cost(eg, c.id, n, target).max(1e-15)).collect()))
        .collect();
    let mut changed = true;
    while changed {
        changed = false;
        for c in eg.classes() {
            for (i, n) in c.nodes.iter().enumerate() {
                let mut total = own[&c.id][i];
                let mut ok = true;
                for &k in egg::Language::children(n) {
                    let k = eg.find(k);
                    match tree.get(&k) {
                        Some((kc, _)) if k != c.id => total += kc,
                        _ => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    continue;
                }
                let better = tree.get(&c.id).is_none_or(|(old, _)| total < *old * (1.0 - 1e-12));
                if better {
                    tree.insert(c.id, (total, i));
                    changed = true;
                }
            }
        }
    }
    let mut choice: HashMap<Id, usize> = tree.iter().map(|(&c, &(_, i))| (c, i)).collect();
    // Phase 2: classes with real alternatives, in increasing tree cost (leaves first).
    let mut multi: Vec<(f64, Id)> = eg
        .classes()
        .filter(|c| {
            c.nodes
                .iter()
                .filter(|n| egg::Language::children(*n).iter().all(|&k| tree.contains_key(&eg.find(k))))
                .count()
                > 1
        })
        .filter_map(|c| tree.get(&c.id).map(|(t, _)| (*t, c.id)))
        .collect();
    multi.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (_, c) in multi {
        let mut best: Option<(f64, usize)> = None;
        for (i, n) in eg[c].nodes.iter().enumerate() {
            let kids: Vec<Id> = egg::Language::children(n).iter().map(|&k| eg.find(k)).collect();
            if !kids.iter().all(|k| choice.contains_key(k)) {
                continue;
            }
            let total = match dag_cost(eg, &own, &choice, &kids, c) {
                Walk::Cycle => continue,
                Walk::Cost(cost) => own[&c][i] + cost,
                // A very deep sub-DAG: keep the tree-cost choice (acyclic by construction).
                Walk::TooDeep => {
                    best = None;
                    break;
                }
            };
            if best.is_none_or(|(b, _)| total < b * (1.0 - 1e-12)) {
                best = Some((total, i));
            }
        }
        if let Some((_, i)) = best {
            choice.insert(c, i);
        }
    }
    // Follow the choices from the roots.
    let mut out = HashMap::new();
    let mut stack: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    let mut cost = 0.0;
    while let Some(c) = stack.pop() {
        if out.contains_key(&c) {
            continue;
        }
        let Some(&i) = choice.get(&c) else { continue };
        let n = &eg[c].nodes[i];
        cost += own[&c][i];
        for &k in egg::Language::children(n) {
            stack.push(eg.find(k));
        }
        out.insert(c, n.clone());
    }
    Extraction { choice: out, cost }
}

/// Classes a DAG-cost walk may visit before the tree cost stands in (bounds extraction
/// time on deep graphs such as unrolled RNNs).
const WALK_BUDGET: usize = 1024;

enum Walk {
    Cost(f64),
    /// The walk reached the class being decided: choosing this node would make a cycle.
    Cycle,
    TooDeep,
}

/// The cost of the sub-DAG below `kids` under `choice`, each class once.
fn dag_cost(eg: &EG, own: &HashMap<Id, Vec<f64>>, choice: &HashMap<Id, usize>, kids: &[Id], avoid: Id) -> Walk {
    let mut seen: std::collections::HashSet<Id> = std::collections::HashSet::new();
    let mut stack: Vec<Id> = kids.to_vec();
    let mut total = 0.0;
    while let Some(c) = stack.pop() {
        if c == avoid {
            return Walk::Cycle;
        }
        if !seen.insert(c) {
            continue;
        }
        if seen.len() > WALK_BUDGET {
            return Walk::TooDeep;
        }
        let Some(&i) = choice.get(&c) else { return Walk::Cycle };
        total += own[&c][i];
        for &k in egg::Language::children(&eg[c].nodes[i]) {
            stack.push(eg.find(k));
        }
    }
    Walk::Cost(total)
}
