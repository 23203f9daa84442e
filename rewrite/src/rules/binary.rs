//! Rules of the binary family: arithmetic, comparisons, logical and bitwise ops map to one
//! `Binary` atom over numpy-broadcast operands (the atoms have the reference semantics:
//! integer wrapping and truncating division, NaN-propagating Max/Min, f32 math for
//! f16/bf16); the variadic ops fold pairwise; `PRelu` and `Where` are selects.

use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::compute_dtype;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::Result;
use ir::atom::BinaryFn;

pub const RULES: &[Rule] = &[
    Rule {
        name: "binary/elementwise",
        identity: "Op(a, b) = Binary(f, bcast(a), bcast(b)) for arithmetic, comparison, logical and bitwise ops",
        action: Action::Lower {
            ops: &[
                "Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And",
                "Or", "Xor", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
            ],
            apply: elementwise,
        },
    },
    Rule {
        name: "binary/mod",
        identity: "Mod(a, b) = Binary(Fmod if fmod else Mod, a, b)",
        action: Action::Lower { ops: &["Mod"], apply: modulo },
    },
    Rule {
        name: "binary/bitshift",
        identity: "BitShift(a, n) = Binary(Shl or Shr by direction, a, n)",
        action: Action::Lower { ops: &["BitShift"], apply: bitshift },
    },
    Rule {
        name: "binary/variadic",
        identity: "Max/Min/Sum(x1..xn) = fold(f, x1..xn); Mean = Sum / n (in f32 for f16/bf16)",
        action: Action::Lower { ops: &["Max", "Min", "Sum", "Mean"], apply: variadic },
    },
    Rule {
        name: "binary/prelu",
        identity: "PRelu(x, s) = select(x < 0, x * bcast(s), x)",
        action: Action::Lower { ops: &["PRelu"], apply: prelu },
    },
    Rule {
        name: "binary/where",
        identity: "Where(c, a, b) = Select(bcast(c), bcast(a), bcast(b))",
        action: Action::Lower { ops: &["Where"], apply: where_ },
    },
];

fn elementwise(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let f = match n.op.kind.name() {
        "Add" => BinaryFn::Add,
        "Sub" => BinaryFn::Sub,
        "Mul" => BinaryFn::Mul,
        "Div" => BinaryFn::Div,
        "Pow" => BinaryFn::Pow,
        "Equal" => BinaryFn::Eq,
        "Less" => BinaryFn::Lt,
        "Greater" => BinaryFn::Gt,
        "LessOrEqual" => BinaryFn::Le,
        "GreaterOrEqual" => BinaryFn::Ge,
        "And" => BinaryFn::And,
        "Or" => BinaryFn::Or,
        "Xor" => BinaryFn::Xor,
        "BitwiseAnd" => BinaryFn::BitAnd,
        "BitwiseOr" => BinaryFn::BitOr,
        "BitwiseXor" => BinaryFn::BitXor,
        _ => return Ok(None),
    };
    let (a, b) = (arg(args, 0)?, arg(args, 1)?);
    lx.binary(f, a, b).map(Some)
}

fn modulo(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let f = if n.op.attrs.int_or("fmod", 0)? != 0 { BinaryFn::Fmod } else { BinaryFn::Mod };
    let (a, b) = (arg(args, 0)?, arg(args, 1)?);
    lx.binary(f, a, b).map(Some)
}

fn bitshift(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let f = match n.op.attrs.string("direction")? {
        Some("LEFT") => BinaryFn::Shl,
        Some("RIGHT") => BinaryFn::Shr,
        _ => return Ok(None),
    };
    let (a, b) = (arg(args, 0)?, arg(args, 1)?);
    lx.binary(f, a, b).map(Some)
}

fn variadic(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let op = n.op.kind.name();
    let f = match op {
        "Max" => BinaryFn::Max,
        "Min" => BinaryFn::Min,
        "Sum" | "Mean" => BinaryFn::Add,
        _ => return Ok(None),
    };
    let xs: Vec<Id> = (0..args.len()).map(|i| arg(args, i)).collect::<Result<_>>()?;
    let Some(&first) = xs.first() else { return Ok(None) };
    let d = lx.dtype(first)?;
    // Max/Min select one of their operands (no rounding); sums accumulate in f32 for
    // f16/bf16 like the reference, and round once at the end.
    let work = if f == BinaryFn::Add { compute_dtype(d) } else { d };
    let mut acc = lx.cast(first, work)?;
    for &x in &xs[1..] {
        let x = lx.cast(x, work)?;
        acc = lx.binary(f, acc, x)?;
    }
    if op == "Mean" && xs.len() > 1 {
        acc = lx.binary_scalar(BinaryFn::Div, acc, xs.len() as f64)?;
    }
    lx.cast(acc, d).map(Some)
}

fn prelu(lx: &mut Lx, _n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, slope) = (arg(args, 0)?, arg(args, 1)?);
    let s = lx.shape(x)?;
    let slope = lx.broadcast_to(slope, &s)?;
    let neg = lx.binary_scalar(BinaryFn::Lt, x, 0.0)?;
    // The Mul atom computes f16/bf16 in f32 and rounds once, as the reference does.
    let m = lx.mul(x, slope)?;
    lx.select(neg, m, x).map(Some)
}

fn where_(lx: &mut Lx, _n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (c, a, b) = (arg(args, 0)?, arg(args, 1)?, arg(args, 2)?);
    lx.select(c, a, b).map(Some)
}
