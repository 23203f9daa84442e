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
use std::collections::{BTreeMap, HashMap};
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

/// Greedy DAG extraction from `roots`.
pub fn extract(eg: &EG, roots: &[Id], target: &Target) -> Extraction {
    // Per class: the best node so far with the set of classes (and their own costs) below it.
    type Set = BTreeMap<Id, f64>;
    let mut best: HashMap<Id, (f64, Term, Set)> = HashMap::new();
    let classes: Vec<Id> = eg.classes().map(|c| c.id).collect();
    // Parents index for a worklist.
    let mut parents: HashMap<Id, Vec<Id>> = HashMap::new();
    for c in eg.classes() {
        for n in &c.nodes {
            for &k in egg::Language::children(n) {
                parents.entry(eg.find(k)).or_default().push(c.id);
            }
        }
    }
    let mut work: Vec<Id> = classes;
    let mut queued: std::collections::HashSet<Id> = work.iter().copied().collect();
    while let Some(c) = work.pop() {
        queued.remove(&c);
        let mut improved = false;
        for n in &eg[c].nodes {
            let kids: Vec<Id> = egg::Language::children(n).iter().map(|&k| eg.find(k)).collect();
            if kids.contains(&c) || !kids.iter().all(|k| best.contains_key(k)) {
                continue;
            }
            let own = node_cost(eg, c, n, target);
            let mut set: Set = Set::new();
            for k in &kids {
                if let Some((_, _, ks)) = best.get(k) {
                    for (id, v) in ks {
                        set.insert(*id, *v);
                    }
                    let kc = best.get(k).map_or(0.0, |b| b.0 - b.2.values().sum::<f64>());
                    set.insert(*k, kc);
                }
            }
            if set.contains_key(&c) {
                continue;
            }
            let total = own + set.values().sum::<f64>();
            let better = match best.get(&c) {
                None => true,
                Some((old, _, _)) => total < *old - 1e-15 * old.abs(),
            };
            if better {
                best.insert(c, (total, n.clone(), set));
                improved = true;
            }
        }
        if improved && let Some(ps) = parents.get(&c) {
            for &p in ps {
                let p = eg.find(p);
                if queued.insert(p) {
                    work.push(p);
                }
            }
        }
    }
    // Follow the choices from the roots.
    let mut choice = HashMap::new();
    let mut stack: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    let mut cost = 0.0;
    while let Some(c) = stack.pop() {
        if choice.contains_key(&c) {
            continue;
        }
        let Some((total, n, set)) = best.get(&c) else { continue };
        cost += total - set.values().sum::<f64>();
        for &k in egg::Language::children(n) {
            stack.push(eg.find(k));
        }
        choice.insert(c, n.clone());
    }
    Extraction { choice, cost }
}
