//! DAG-aware extraction (see [`extract`]): alternatives are compared by the cost of their
//! whole region, each shared subterm paid once, rather than by tree cost (which counts a
//! shared subterm once per use and grows exponentially on residual networks). High-level
//! ops cost far more than any atom term, so they are extracted only where no lowering
//! exists (host ops).
//!
//! Atom costs come from the target description: FLOPs over peak FLOP/s at its vector width
//! plus bytes moved over bandwidth; views cost almost nothing (they fuse into loads).

use crate::egraph::EG;
use crate::lang::Term;
use egg::Id;
use ir::atom::Atom;
use std::collections::{HashMap, HashSet};
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
/// Phase 1 gives every class a *level*: the cheapest over its e-nodes of the node's own
/// cost plus the highest level among its children (a critical-path cost: it cannot blow up
/// on shared subterms as tree costs do, and it is strictly larger than every child's).
/// Phase 2 revisits, lowest level first, each class with several e-nodes whose children all
/// sit at lower levels (so no choice can close a cycle), and picks the one whose region
/// (its sub-DAG under the current choices, each class once, down to the `boundary` classes
/// that stand for the source graph's values) costs least.
pub fn extract(eg: &EG, roots: &[Id], target: &Target, boundary: &HashSet<Id>) -> Extraction {
    let own: HashMap<Id, Vec<f64>> = eg
        .classes()
        .map(|c| (c.id, c.nodes.iter().map(|n| node_cost(eg, c.id, n, target).max(1e-15)).collect()))
        .collect();
    let mut level: HashMap<Id, (f64, usize)> = HashMap::new();
    // Worklist from the leaves up: a class is revisited when a child's level improves.
    let mut parents: HashMap<Id, Vec<Id>> = HashMap::new();
    for c in eg.classes() {
        for n in &c.nodes {
            for &k in egg::Language::children(n) {
                parents.entry(eg.find(k)).or_default().push(c.id);
            }
        }
    }
    let mut work: Vec<Id> = eg.classes().filter(|c| c.nodes.iter().any(egg::Language::is_leaf)).map(|c| c.id).collect();
    let mut queued: HashSet<Id> = work.iter().copied().collect();
    while let Some(c) = work.pop() {
        queued.remove(&c);
        let mut improved = false;
        for (i, n) in eg[c].nodes.iter().enumerate() {
            let mut high = 0.0f64;
            let mut ok = true;
            for &k in egg::Language::children(n) {
                let k = eg.find(k);
                match level.get(&k) {
                    Some((l, _)) if k != c => high = high.max(*l),
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                continue;
            }
            let l = own[&c][i] + high;
            if level.get(&c).is_none_or(|(old, _)| l < *old * (1.0 - 1e-12)) {
                level.insert(c, (l, i));
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
    let mut choice: HashMap<Id, usize> = level.iter().map(|(&c, &(_, i))| (c, i)).collect();
    // The e-nodes of class `c` whose children all sit below it.
    let eligible = |c: Id| -> Vec<usize> {
        let lc = level.get(&c).map_or(f64::INFINITY, |l| l.0);
        eg[c]
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                egg::Language::children(*n).iter().all(|&k| level.get(&eg.find(k)).is_some_and(|l| l.0 < lc))
            })
            .map(|(i, _)| i)
            .collect()
    };
    let mut multi: Vec<(f64, Id)> = eg
        .classes()
        .filter_map(|c| level.get(&c.id).map(|l| (l.0, c.id)))
        .filter(|&(_, c)| eg[c].nodes.len() > 1)
        .collect();
    multi.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (_, c) in multi {
        let candidates = eligible(c);
        if candidates.len() < 2 {
            continue;
        }
        let mut best: Option<(f64, usize)> = None;
        for i in candidates {
            let kids: Vec<Id> = egg::Language::children(&eg[c].nodes[i]).iter().map(|&k| eg.find(k)).collect();
            let Some(cost) = region_cost(eg, &own, &choice, &kids, boundary) else {
                // Too large a region to compare: keep the phase-1 choice.
                best = None;
                break;
            };
            let total = own[&c][i] + cost;
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

/// Classes a region walk may visit before the comparison is given up.
const WALK_BUDGET: usize = 4096;

/// The cost of the region below `kids` under `choice`: every class once, stopping at
/// boundary classes (values of the source graph, shared by every alternative).
fn region_cost(
    eg: &EG,
    own: &HashMap<Id, Vec<f64>>,
    choice: &HashMap<Id, usize>,
    kids: &[Id],
    boundary: &HashSet<Id>,
) -> Option<f64> {
    let mut seen: HashSet<Id> = HashSet::new();
    let mut stack: Vec<Id> = kids.to_vec();
    let mut total = 0.0;
    while let Some(c) = stack.pop() {
        if boundary.contains(&c) || !seen.insert(c) {
            continue;
        }
        if seen.len() > WALK_BUDGET {
            return None;
        }
        let i = *choice.get(&c)?;
        total += own[&c][i];
        for &k in egg::Language::children(&eg[c].nodes[i]) {
            stack.push(eg.find(k));
        }
    }
    Some(total)
}
