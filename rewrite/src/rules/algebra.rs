//! Algebra rules over atoms: views compose into one view (so transpose/reshape pairs
//! cancel and identity views vanish), and multiplying by one or adding zero is the operand.

use crate::lx::Lx;
use crate::rules::{Action, Rule};
use egg::Id;
use ir::Result;
use ir::atom::{Atom, AtomKind, BinaryFn};

pub const RULES: &[Rule] = &[
    Rule {
        name: "algebra/view-of-view",
        identity: "View(v2, View(v1, x)) = View(v1 then v2, x) when the maps compose affinely",
        action: Action::Algebra { atoms: &[AtomKind::View], apply: view_of_view },
    },
    Rule {
        name: "algebra/mul-one",
        identity: "x * 1 = x (1 broadcast to x's shape)",
        action: Action::Algebra { atoms: &[AtomKind::Binary], apply: mul_one },
    },
    Rule {
        name: "algebra/add-zero",
        identity: "x + 0 = x (0 broadcast to x's shape; not for -0.0 semantics of x = -0.0)",
        action: Action::Algebra { atoms: &[AtomKind::Binary], apply: add_zero },
    },
];

fn view_of_view(lx: &mut Lx, atom: &Atom, args: &[Id]) -> Result<Option<Id>> {
    let Atom::View(outer) = atom else { return Ok(None) };
    for (inner, ch) in lx.atoms_in(args[0]) {
        let Atom::View(inner) = inner else { continue };
        if let Some(v) = inner.compose(outer) {
            return lx.view(ch[0], v).map(Some);
        }
    }
    Ok(None)
}

/// Whether class `x` is a constant whose every element is `v`.
fn all_equal(lx: &Lx, x: Id, v: f64) -> bool {
    lx.value(x).is_some_and(|t| t.numel() > 0 && t.to_f64_vec().iter().all(|&e| e.to_bits() == v.to_bits()))
}

fn mul_one(lx: &mut Lx, atom: &Atom, args: &[Id]) -> Result<Option<Id>> {
    if *atom != Atom::Binary(BinaryFn::Mul) {
        return Ok(None);
    }
    Ok(if all_equal(lx, args[1], 1.0) {
        Some(args[0])
    } else if all_equal(lx, args[0], 1.0) {
        Some(args[1])
    } else {
        None
    })
}

fn add_zero(lx: &mut Lx, atom: &Atom, args: &[Id]) -> Result<Option<Id>> {
    if *atom != Atom::Binary(BinaryFn::Add) {
        return Ok(None);
    }
    // x + (-0.0) = x exactly for every x (also -0.0); x + 0.0 turns -0.0 into 0.0, so only
    // integer zeros and negative float zeros are dropped.
    let is_neutral = |lx: &Lx, c: Id| {
        lx.value(c).is_some_and(|t| {
            t.numel() > 0
                && if t.dtype().is_float() {
                    t.to_f64_vec().iter().all(|&e| e.to_bits() == (-0.0f64).to_bits())
                } else {
                    t.to_i64_vec().iter().all(|&e| e == 0)
                }
        })
    };
    Ok(if is_neutral(lx, args[1]) {
        Some(args[0])
    } else if is_neutral(lx, args[0]) {
        Some(args[1])
    } else {
        None
    })
}
