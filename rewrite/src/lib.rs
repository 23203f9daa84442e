//! `rewrite`: decomposition of a specialized high-level graph into atoms by equality
//! saturation (egg). Input: an `ir::Graph` with static shapes. Output: an `ir::Graph` of
//! atoms (plus host ops, see [`host`]), a [`Report`] of the saturation, and per-node
//! provenance for `atomc explain`.
//!
//! Pipeline: the graph becomes an e-graph of high-level terms ([`lang::Term`]); lowering
//! and algebra rules ([`rules`]) run under a bounded `Runner`; a DAG-aware extractor
//! ([`extract`]) with target-aware atom costs picks one term per class; [`build`] turns the
//! choice back into a graph.
//!
//! Invariant: `rewrite` depends on `ir` and `targets` only.

pub mod build;
pub mod egraph;
pub mod explain;
pub mod extract;
pub mod host;
pub mod lang;
pub mod lx;
pub mod rules;

use crate::egraph::{EG, HlNode, Tables};
use crate::lang::Term;
use egg::{Id, Runner, SimpleScheduler, StopReason};
use ir::{Error, Graph, Result};
use std::time::{Duration, Instant};

/// Bounds and choices of one decomposition.
#[derive(Clone, Debug)]
pub struct Options {
    pub iter_limit: usize,
    pub node_limit: usize,
    pub time_limit: Duration,
    pub target: targets::Target,
    /// Only rules whose name starts with one of these prefixes (all when empty).
    pub only_rules: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            iter_limit: 12,
            node_limit: 200_000,
            time_limit: Duration::from_secs(10),
            target: targets::Target::host(),
            only_rules: vec![],
        }
    }
}

/// Why and where saturation stopped, and how big the e-graph got.
#[derive(Clone, Debug)]
pub struct Report {
    pub stop_reason: String,
    pub iterations: usize,
    pub enodes: usize,
    pub eclasses: usize,
    pub rules_applied: usize,
    pub saturate_time: Duration,
    pub extract_time: Duration,
    pub total_time: Duration,
    /// Nodes left high-level: (node name, op, reason).
    pub high_level: Vec<(String, String, String)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "saturation: {} after {} iterations, {} e-nodes in {} e-classes, {} rule applications; \
             saturate {:.1} ms, extract {:.1} ms, total {:.1} ms",
            self.stop_reason,
            self.iterations,
            self.enodes,
            self.eclasses,
            self.rules_applied,
            self.saturate_time.as_secs_f64() * 1e3,
            self.extract_time.as_secs_f64() * 1e3,
            self.total_time.as_secs_f64() * 1e3
        )
    }
}

/// The result of decomposing a graph.
pub struct Decomposed {
    pub graph: Graph,
    /// Names of the rules that fired, each once, in first-application order.
    pub fired: Vec<&'static str>,
    pub report: Report,
    pub provenance: Vec<explain::NodeProvenance>,
}

/// Decomposes a specialized graph (static input shapes, types inferred) into atoms.
pub fn decompose(graph: &Graph, opts: &Options) -> Result<Decomposed> {
    let start = Instant::now();
    let mut rules = rules::all();
    if !opts.only_rules.is_empty() {
        rules.retain(|r| opts.only_rules.iter().any(|p| r.name.starts_with(p.as_str())));
    }
    let (eg, value_class) = seed(graph)?;
    let rewrites = rules::rewrites(&rules);
    let runner = Runner::<Term, Tables>::new(Tables::default())
        .with_egraph(eg)
        .with_iter_limit(opts.iter_limit)
        .with_node_limit(opts.node_limit)
        .with_time_limit(opts.time_limit)
        .with_scheduler(SimpleScheduler)
        .run(&rewrites);
    let saturate_time = start.elapsed();
    let stop_reason = match &runner.stop_reason {
        Some(StopReason::Saturated) => "saturated".to_string(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("e-node limit ({n})"),
        Some(StopReason::TimeLimit(s)) => format!("time limit ({s:.1} s)"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "not run".to_string(),
    };
    let iterations = runner.iterations.len();
    let eg = runner.egraph;
    let t = Instant::now();
    let roots: Vec<Id> = graph.outputs.iter().filter_map(|o| value_class.get(o).map(|&c| eg.find(c))).collect();
    let boundary: std::collections::HashSet<Id> = value_class.values().map(|&c| eg.find(c)).collect();
    let ex = extract::extract(&eg, &roots, &opts.target, &boundary);
    let extract_time = t.elapsed();
    let mut built = build::build(graph, &eg, &value_class, &ex)?;
    ir::padding::materialize_padded_windows(&mut built.graph)?;
    let high_level = built.high_level.clone();
    let provenance = explain::provenance(graph, &eg, &value_class, &ex);
    let report = Report {
        stop_reason,
        iterations,
        enodes: eg.total_number_of_nodes(),
        eclasses: eg.number_of_classes(),
        rules_applied: eg.analysis.log.len(),
        saturate_time,
        extract_time,
        total_time: start.elapsed(),
        high_level,
    };
    let mut fired: Vec<&'static str> = Vec::new();
    for a in &eg.analysis.log {
        if !fired.contains(&a.rule) {
            fired.push(a.rule);
        }
    }
    Ok(Decomposed { graph: built.graph, fired, report, provenance })
}

/// Builds the initial e-graph: one class per graph value.
fn seed(graph: &Graph) -> Result<(EG, std::collections::HashMap<ir::ValueId, Id>)> {
    let mut eg = EG::new(Tables::default());
    let mut class = std::collections::HashMap::new();
    for (i, input) in graph.inputs.iter().enumerate() {
        let ty = graph.value(input.value).ty.clone().ok_or_else(|| {
            Error::InvalidModel(format!("input '{}' has no type: specialize the graph first", graph.name(input.value)))
        })?;
        eg.analysis.inputs.push(ty);
        let id = eg.add(Term::Input(i as u32));
        class.insert(input.value, id);
    }
    let mut consts: Vec<_> = graph.consts.iter().collect();
    consts.sort_by_key(|(v, _)| **v);
    for (v, t) in consts {
        let c = eg.analysis.intern_const(t.clone());
        let id = eg.add(Term::Const(c));
        class.insert(*v, id);
    }
    let absent = eg.add(Term::Absent);
    for (ni, node) in graph.nodes.iter().enumerate() {
        let mut args = Vec::with_capacity(node.inputs.len());
        for v in &node.inputs {
            args.push(match v {
                None => absent,
                Some(v) => *class.get(v).ok_or_else(|| {
                    Error::Internal(format!("node '{}' reads '{}' before it is defined", node.name, graph.name(*v)))
                })?,
            });
        }
        let static_shape = |v: &ir::ValueId| graph.value(*v).ty.as_ref().is_some_and(|t| t.shape.is_some());
        let lowerable = node.inputs.iter().flatten().all(static_shape) && node.outputs.iter().flatten().all(static_shape);
        for (k, o) in node.outputs.iter().enumerate() {
            let Some(o) = o else { continue };
            if graph.consts.contains_key(o) {
                continue;
            }
            let ty = graph.value(*o).ty.clone().ok_or_else(|| {
                Error::InvalidModel(format!("value '{}' has no type: specialize the graph first", graph.name(*o)))
            })?;
            let h = eg.analysis.hl.len() as u32;
            eg.analysis.hl.push(HlNode {
                node: ir::NodeId(ni as u32),
                name: node.name.clone(),
                op: node.op.clone(),
                output: k,
                num_outputs: node.outputs.len(),
                ty,
                lowerable,
            });
            let id = eg.add(Term::Hl(h, args.clone()));
            class.insert(*o, id);
        }
    }
    eg.rebuild();
    Ok((eg, class))
}
