//! The e-class analysis: every class knows its dtype and static shape, and its value when
//! it is a constant small enough to fold (`FOLD_LIMIT`). A folded class also gets a `Const`
//! e-node, so weight-only subgraphs (BatchNorm folding, Winograd weight transforms, views
//! of weights) extract as constants. The analysis also owns the interning tables for ops,
//! atoms and constants, and the provenance log of rule applications.

use crate::lang::Term;
use egg::{Analysis, DidMerge, EGraph, Id};
use ir::{Atom, NodeId, Op, Tensor, ValueType};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Largest constant (in elements) the analysis folds.
pub const FOLD_LIMIT: usize = 1 << 22;

/// The e-graph of a decomposition.
pub type EG = EGraph<Term, Tables>;

/// One output of a high-level node of the source graph.
#[derive(Clone, Debug)]
pub struct HlNode {
    pub node: NodeId,
    pub name: String,
    pub op: Op,
    /// Which output of the node this term stands for.
    pub output: usize,
    pub num_outputs: usize,
    /// The type of this output (static shape when the node can be lowered).
    pub ty: ValueType,
    /// Every input and output shape is static, so lowering rules may run.
    pub lowerable: bool,
}

/// What is known about an e-class.
#[derive(Clone, Debug)]
pub struct ClassData {
    /// `None` for an omitted input, or for a term whose type could not be inferred.
    pub ty: Option<ValueType>,
    pub value: Option<Arc<Tensor>>,
    /// Whether a known value becomes a `Const` e-node. A broadcast of a constant keeps its
    /// value (so what is computed from it folds) but stays a view: materializing it would
    /// only copy.
    pub materialize: bool,
}

impl ClassData {
    fn unknown(ty: Option<ValueType>) -> ClassData {
        ClassData { ty, value: None, materialize: false }
    }
}

/// One recorded rule application (for `explain`).
#[derive(Clone, Debug)]
pub struct Applied {
    pub rule: &'static str,
    /// The class the rule matched (canonicalize with `find`).
    pub class: Id,
    /// The high-level term it lowered, for lowering rules.
    pub hl: Option<u32>,
}

/// Constants up to this many elements are interned by value.
const SMALL_CONST: usize = 4096;

/// A constant's dtype, shape and exact element bits.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ConstKey(ir::DType, Vec<usize>, Vec<u64>);

impl ConstKey {
    fn of(t: &Tensor) -> ConstKey {
        let bits: Vec<u64> = if t.dtype().is_float() {
            t.to_f64_vec().iter().map(|v| v.to_bits()).collect()
        } else {
            t.to_i64_vec().iter().map(|&v| v as u64).collect()
        };
        ConstKey(t.dtype(), t.shape().to_vec(), bits)
    }
}

/// Interning tables and the analysis state.
#[derive(Default)]
pub struct Tables {
    pub hl: Vec<HlNode>,
    pub atoms: Vec<Atom>,
    atom_ids: HashMap<Atom, u32>,
    pub consts: Vec<Arc<Tensor>>,
    const_ids: HashMap<usize, u32>,
    small_consts: HashMap<ConstKey, u32>,
    pub inputs: Vec<ValueType>,
    /// (rule index, high-level term) pairs already lowered, so a rule runs once per term.
    pub done: HashSet<(usize, u32)>,
    pub log: Vec<Applied>,
    /// Lowering errors: (rule, high-level term, message).
    pub errors: Vec<(&'static str, u32, String)>,
}

impl Tables {
    pub fn intern_atom(&mut self, a: Atom) -> u32 {
        if let Some(&i) = self.atom_ids.get(&a) {
            return i;
        }
        let i = self.atoms.len() as u32;
        self.atoms.push(a.clone());
        self.atom_ids.insert(a, i);
        i
    }

    /// Interns a constant: large ones by identity (weights), small ones by value, so equal
    /// scalars and index tables built by different rules share one e-class.
    pub fn intern_const(&mut self, t: Arc<Tensor>) -> u32 {
        let key = Arc::as_ptr(&t) as usize;
        if let Some(&i) = self.const_ids.get(&key) {
            return i;
        }
        let by_value = (t.numel() <= SMALL_CONST).then(|| ConstKey::of(&t));
        if let Some(k) = &by_value
            && let Some(&i) = self.small_consts.get(k)
        {
            return i;
        }
        let i = self.consts.len() as u32;
        self.consts.push(t);
        self.const_ids.insert(key, i);
        if let Some(k) = by_value {
            self.small_consts.insert(k, i);
        }
        i
    }
}

impl Analysis<Term> for Tables {
    type Data = ClassData;

    fn make(eg: &mut EG, enode: &Term, _id: Id) -> ClassData {
        let t = &eg.analysis;
        match enode {
            Term::Input(i) => ClassData::unknown(t.inputs.get(*i as usize).cloned()),
            Term::Const(i) => {
                let v = t.consts.get(*i as usize).cloned();
                ClassData { ty: v.as_deref().map(ValueType::of), value: v, materialize: true }
            }
            Term::Absent => ClassData::unknown(None),
            Term::Hl(i, _) => ClassData::unknown(t.hl.get(*i as usize).map(|h| h.ty.clone())),
            Term::Atom(i, ch) => {
                let Some(atom) = t.atoms.get(*i as usize) else {
                    return ClassData::unknown(None);
                };
                let kids: Vec<&ClassData> = ch.iter().map(|&c| &eg[c].data).collect();
                atom_data(atom, &kids)
            }
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        let mut changed_a = false;
        if a.value.is_none() && b.value.is_some() {
            a.value = b.value.clone();
            changed_a = true;
        }
        if b.materialize && !a.materialize {
            a.materialize = true;
            changed_a = true;
        }
        if a.ty.is_none() && b.ty.is_some() {
            a.ty = b.ty.clone();
            changed_a = true;
        }
        let changed_b = a.value.is_some() && b.value.is_none();
        DidMerge(changed_a, changed_b)
    }

    fn modify(eg: &mut EG, id: Id) {
        if !eg[id].data.materialize {
            return;
        }
        let Some(v) = eg[id].data.value.clone() else { return };
        if eg[id].nodes.iter().any(|n| matches!(n, Term::Const(_))) {
            return;
        }
        let c = eg.analysis.intern_const(v);
        let k = eg.add(Term::Const(c));
        eg.union(id, k);
    }
}

/// The type (and folded value) of an atom over classes with the given data.
pub fn atom_data(atom: &Atom, kids: &[&ClassData]) -> ClassData {
    let tys: Option<Vec<&ValueType>> = kids.iter().map(|k| k.ty.as_ref()).collect();
    let Some(tys) = tys else { return ClassData::unknown(None) };
    let facts: Vec<Option<ir::op::Fact>> =
        tys.iter().zip(kids).map(|(ty, k)| Some(ir::op::Fact { ty, value: k.value.as_deref() })).collect();
    let ty = match atom.infer(&facts) {
        Ok(mut v) if v.len() == 1 => v.remove(0),
        _ => return ClassData::unknown(None),
    };
    // Fold small results, and results no larger than their largest input (a broadcast of a
    // constant stays a view: folding it would only materialize copies).
    let out_numel = ty.shape.as_ref().map_or(usize::MAX, |s| s.iter().product::<usize>());
    let max_in = kids.iter().filter_map(|k| k.value.as_ref().map(|v| v.numel())).max().unwrap_or(0);
    // A view that grows its input is folded only when small, and never materialized.
    let grows = out_numel > max_in;
    let is_view = matches!(atom, Atom::View(_));
    let small = out_numel <= FOLD_LIMIT && (out_numel <= 4096 || !grows);
    let materialize = !(is_view && grows);
    let value = if small && kids.iter().all(|k| k.value.is_some()) {
        let args: Vec<Option<&Tensor>> = kids.iter().map(|k| k.value.as_deref()).collect();
        atom.eval(&args).ok().and_then(|mut v| v.pop()).map(Arc::new)
    } else {
        None
    };
    ClassData { ty: Some(ty), materialize: materialize && value.is_some(), value }
}
