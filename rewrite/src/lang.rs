//! The e-graph language: one [`Term`] enum holds the graph's leaves (inputs, constants, an
//! omitted optional input), high-level ops and atoms. Op and atom parameters are interned
//! in the analysis tables ([`crate::egraph::Tables`]), so a term is a small index plus its
//! children, and two identical atoms over the same classes hash-cons to one e-node.

use egg::{Id, Language};

/// One e-node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Term {
    /// Graph input `i` (index into `Graph::inputs`).
    Input(u32),
    /// Constant `i` of the constant table.
    Const(u32),
    /// An omitted optional input of a high-level op.
    Absent,
    /// Output of a high-level op: index into the high-level table, and the op's inputs.
    Hl(u32, Vec<Id>),
    /// An atom: index into the atom table, and its inputs.
    Atom(u32, Vec<Id>),
}

impl Language for Term {
    type Discriminant = (u8, u32);

    fn discriminant(&self) -> (u8, u32) {
        match self {
            Term::Input(i) => (0, *i),
            Term::Const(i) => (1, *i),
            Term::Absent => (2, 0),
            Term::Hl(i, _) => (3, *i),
            Term::Atom(i, _) => (4, *i),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant() && self.children().len() == other.children().len()
    }

    fn children(&self) -> &[Id] {
        match self {
            Term::Hl(_, c) | Term::Atom(_, c) => c,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Term::Hl(_, c) | Term::Atom(_, c) => c,
            _ => &mut [],
        }
    }
}
