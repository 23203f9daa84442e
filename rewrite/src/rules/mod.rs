//! Rules are data: one table per op family (`rules/<family>.rs`), each entry a named
//! [`Rule`] with a one-line identity, what it matches, and the function that builds the
//! right-hand side through [`Lx`]. Lowering rules match high-level ops and only go from
//! high level to atoms; algebra rules match atoms and are directional (no blanket
//! commutativity). See `rewrite/RULES.md`.
//!
//! Every rule becomes one egg `Rewrite` (a searcher over the e-nodes it matches and an
//! applier that unions the built term with the matched class), run by egg's `Runner`.

pub mod algebra;
pub mod attention;
pub mod binary;
pub mod conv;
pub mod image;
pub mod index;
pub mod layout;
pub mod linalg;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod rnn;
pub mod signal;
pub mod unary;

use crate::egraph::{Applied, EG, HlNode, Tables};
use crate::lang::Term;
use crate::lx::Lx;
use egg::{Applier, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use ir::atom::{Atom, AtomKind};
use ir::Result;

/// Lowers one output of a high-level node; `Ok(None)` when the rule does not apply.
pub type LowerFn = fn(&mut Lx, &HlNode, &[Option<Id>]) -> Result<Option<Id>>;
/// Rewrites an atom over its input classes; `Ok(None)` when the rule does not apply.
pub type AlgebraFn = fn(&mut Lx, &Atom, &[Id]) -> Result<Option<Id>>;

/// What a rule matches and how it builds its right-hand side.
#[derive(Clone, Copy)]
pub enum Action {
    /// High-level ops by ONNX name.
    Lower { ops: &'static [&'static str], apply: LowerFn },
    /// Atoms of these kinds.
    Algebra { atoms: &'static [AtomKind], apply: AlgebraFn },
}

/// A named rewrite rule.
#[derive(Clone, Copy)]
pub struct Rule {
    /// `family/what`.
    pub name: &'static str,
    /// The identity the rule applies, in one line.
    pub identity: &'static str,
    pub action: Action,
}

impl Rule {
    pub fn family(&self) -> &'static str {
        self.name.split('/').next().unwrap_or(self.name)
    }
}

/// Every rule, in table order.
pub fn all() -> Vec<Rule> {
    [
        unary::RULES,
        binary::RULES,
        layout::RULES,
        reduce::RULES,
        index::RULES,
        linalg::RULES,
        conv::RULES,
        pool::RULES,
        norm::RULES,
        image::RULES,
        quant::RULES,
        loss::RULES,
        attention::RULES,
        rnn::RULES,
        signal::RULES,
        algebra::RULES,
    ]
    .concat()
}

/// The egg rewrites of the given rules (indices into `rules` identify them in `Tables`).
pub fn rewrites(rules: &[Rule]) -> Vec<Rewrite<Term, Tables>> {
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let m = RuleMatch { index: i, rule: *r };
            Rewrite::new(r.name, m, m).ok()
        })
        .collect()
}

#[derive(Clone, Copy)]
struct RuleMatch {
    index: usize,
    rule: Rule,
}

impl RuleMatch {
    /// The e-nodes of a class this rule matches: (term, children).
    fn matching(&self, eg: &EG, class: Id) -> Vec<Term> {
        eg[class]
            .nodes
            .iter()
            .filter(|n| match (n, &self.rule.action) {
                (Term::Hl(h, _), Action::Lower { ops, .. }) => {
                    let t = &eg.analysis;
                    t.hl.get(*h as usize).is_some_and(|hl| {
                        hl.lowerable && ops.contains(&hl.op.kind.name()) && !t.done.contains(&(self.index, *h))
                    })
                }
                (Term::Atom(a, _), Action::Algebra { atoms, .. }) => {
                    eg.analysis.atoms.get(*a as usize).is_some_and(|atom| atoms.contains(&atom.kind()))
                }
                _ => false,
            })
            .cloned()
            .collect()
    }
}

impl Searcher<Term, Tables> for RuleMatch {
    fn search_eclass_with_limit(&self, eg: &EG, class: Id, _limit: usize) -> Option<SearchMatches<'_, Term>> {
        if self.matching(eg, class).is_empty() {
            return None;
        }
        Some(SearchMatches { eclass: class, substs: vec![Subst::default()], ast: None })
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

impl Applier<Term, Tables> for RuleMatch {
    fn apply_one(
        &self,
        eg: &mut EG,
        class: Id,
        _subst: &Subst,
        _ast: Option<&PatternAst<Term>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        let mut out = Vec::new();
        for term in self.matching(eg, class) {
            let built = match (&term, &self.rule.action) {
                (Term::Hl(h, ch), Action::Lower { apply, .. }) => {
                    eg.analysis.done.insert((self.index, *h));
                    let Some(hl) = eg.analysis.hl.get(*h as usize).cloned() else { continue };
                    let args: Vec<Option<Id>> = ch
                        .iter()
                        .map(|&c| if eg[c].nodes.iter().any(|n| matches!(n, Term::Absent)) { None } else { Some(c) })
                        .collect();
                    let r = apply(&mut Lx::new(eg), &hl, &args);
                    match r {
                        Ok(Some(id)) => {
                            if eg[id].data.ty.as_ref() != Some(&hl.ty) {
                                let got = eg[id].data.ty.as_ref().map_or("?".into(), |t| t.to_string());
                                eg.analysis.errors.push((
                                    self.rule.name,
                                    *h,
                                    format!("built a {got} term for a {} output", hl.ty),
                                ));
                                continue;
                            }
                            eg.analysis.log.push(Applied { rule: self.rule.name, class, hl: Some(*h) });
                            id
                        }
                        Ok(None) => continue,
                        Err(e) => {
                            eg.analysis.errors.push((self.rule.name, *h, e.to_string()));
                            continue;
                        }
                    }
                }
                (Term::Atom(a, ch), Action::Algebra { apply, .. }) => {
                    let Some(atom) = eg.analysis.atoms.get(*a as usize).cloned() else { continue };
                    match apply(&mut Lx::new(eg), &atom, ch) {
                        Ok(Some(id)) if eg.find(id) != eg.find(class) => {
                            if eg[id].data.ty != eg[class].data.ty {
                                continue;
                            }
                            eg.analysis.log.push(Applied { rule: self.rule.name, class, hl: None });
                            id
                        }
                        _ => continue,
                    }
                }
                _ => continue,
            };
            if eg.union(class, built) {
                out.push(built);
            }
        }
        out
    }
}

/// An error of a rule about the model it lowers.
pub(crate) fn err(msg: impl Into<String>) -> ir::Error {
    ir::Error::InvalidModel(msg.into())
}

/// The dtype float math runs in, as the reference does it: f32 for f16/bf16, else the
/// dtype itself.
pub(crate) fn compute_dtype(d: ir::DType) -> ir::DType {
    match d {
        ir::DType::F16 | ir::DType::BF16 => ir::DType::F32,
        d => d,
    }
}

/// Required input `i` of a high-level node.
pub fn arg(args: &[Option<Id>], i: usize) -> Result<Id> {
    args.get(i).copied().flatten().ok_or_else(|| ir::Error::InvalidModel(format!("required input {i} is missing")))
}
