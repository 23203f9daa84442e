//! Kernel IR: one fused kernel of the compiled path. A kernel is a loop nest over its
//! *output axes* (and, for reductions and contractions, its *reduction axes*), computing
//!
//! ```text
//! for o in out_shape:                 // output axes 0..R
//!     acc = reduce_{r in red_shape} body(o, r)     // axes R..R+S; no reduction: acc = body(o)
//!     output[store(o)] = epilogue(acc, o)
//! ```
//!
//! Operands are read through [`Expr::Load`]: an affine index over all axes with guards
//! (padding) — the fused form of atom Views, so a View never has to be materialized.
//! Elementwise atoms, Select and Cast fuse into the expression tree; a Reduce or MatMul is
//! the kernel's anchor (MatMul is `reduce Sum over k of a[m,k] * b[k,n]`), with a fused
//! prologue (the body) and epilogue (bias, activation, residual add, cast). Gathers read
//! with one data-dependent coordinate; a Scatter is its own kernel kind.
//!
//! The semantics of every function are those of the atoms (`crate::atom`), so a kernel is
//! checked against the atom graph on the reference interpreter. [`verify`] proves every
//! load and store index in bounds for the static shapes, so generated code cannot read or
//! write outside its buffers.

use crate::atom::{BinaryFn, ReduceFn, ScatterMode, UnaryFn};
use crate::dtype::DType;

/// `offset + Σ coefs[a] · i[a]` over the kernel's axes (output axes, then reduction axes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Affine {
    pub offset: i64,
    pub coefs: Vec<i64>,
}

impl Affine {
    /// The value at axis indices `i`.
    pub fn eval(&self, i: &[usize]) -> i64 {
        self.offset + self.coefs.iter().zip(i).map(|(c, &x)| c * x as i64).sum::<i64>()
    }

    /// The smallest and largest value over the box `0 <= i[a] < extents[a]` (an empty box
    /// gives `None`).
    pub fn range(&self, extents: &[usize]) -> Option<(i64, i64)> {
        if extents.contains(&0) {
            return None;
        }
        let (mut lo, mut hi) = (self.offset, self.offset);
        for (c, &n) in self.coefs.iter().zip(extents) {
            let span = c * (n as i64 - 1);
            if span < 0 {
                lo += span;
            } else {
                hi += span;
            }
        }
        Some((lo, hi))
    }
}

/// A validity condition: `0 <= expr < bound`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KGuard {
    pub expr: Affine,
    pub bound: i64,
}

/// A scalar expression evaluated at one point of the kernel's iteration space.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `buffers[buf][index]` where every guard holds, else `pad` (converted to the dtype).
    Load { buf: usize, index: Affine, guards: Vec<KGuard>, pad: f64 },
    /// `buffers[buf][index + pos * stride]` with `pos` an i64 expression that must satisfy
    /// `0 <= pos < extent` (checked at run time: an error, never an out-of-bounds read).
    Gather { buf: usize, index: Affine, stride: i64, extent: i64, pos: Box<Expr> },
    Const { value: f64, dtype: DType },
    /// The current index along an axis, as i64.
    Axis(usize),
    Unary(UnaryFn, Box<Expr>),
    Binary(BinaryFn, Box<Expr>, Box<Expr>),
    /// `cond ? a : b`.
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    Cast(DType, Box<Expr>),
    /// The reduced value; only in a `Compute` epilogue.
    Acc,
}

/// A kernel parameter: one flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub name: String,
    pub dtype: DType,
    pub numel: usize,
}

/// What a kernel computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// `output[store(o)] = epilogue(reduce_r body(o, r))`. Without `reduce` there are no
    /// reduction axes and `Acc` is `body(o)`. `ArgMax`/`ArgMin` reduce one axis to the
    /// first index of the extremum (i64).
    Compute { reduce: Option<ReduceFn>, body: Expr, epilogue: Expr },
    /// The output starts as a copy of input `data`; then for every point `o` of `out_shape`
    /// (the updates' shape), `output[index(o) + pos(o) * stride] (mode)= value(o)`, with
    /// `0 <= pos < extent` checked at run time. Points are applied in row-major order.
    Scatter { data: usize, mode: ScatterMode, index: Affine, stride: i64, extent: i64, pos: Expr, value: Expr },
}

/// One kernel: inputs are buffers `0..inputs.len()`, the output is buffer `inputs.len()`.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub inputs: Vec<Buffer>,
    pub output: Buffer,
    pub out_shape: Vec<usize>,
    pub red_shape: Vec<usize>,
    /// Where each output point is stored (over the output axes; row-major normally).
    pub store: Affine,
    pub body: Body,
}
