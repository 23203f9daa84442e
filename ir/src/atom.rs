//! Atoms: the closed set of primitives every high-level op is decomposed into (by the
//! `rewrite` crate), and the only ops a code generator has to implement.
//!
//! There are ten kinds ([`AtomKind`]). [`Atom`] is the typed form (what the rewriter builds
//! and a backend reads); in a [`crate::Graph`] an atom is an [`Op`] of kind
//! [`OpKind::Atom`] whose attributes encode the parameters, so atom graphs are printed,
//! parsed, verified and interpreted like any graph. The reference semantics of the
//! elementwise, reduction, contraction and indexing atoms *are* those of the high-level ops
//! they name (one definition, in `ops/`); [`ViewMap`] is the one new semantics, defined here.
//!
//! Shape rules are strict so that a backend never broadcasts implicitly: `Binary` and
//! `Select` take operands of one shape (broadcasting is an explicit View with stride 0),
//! `MatMul` takes `[B.., M, K] x [B.., K, N]` with equal batch dims, `Reduce` keeps the
//! reduced axes with extent 1.

use crate::attr::{Attr, Attrs};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, Fact, InferCx, Op, OpKind};
use crate::ops::binary::BinaryOp;
use crate::ops::index::IndexOp;
use crate::ops::linalg::LinalgOp;
use crate::ops::reduce::ReduceOp;
use crate::ops::unary::UnaryOp;
use crate::shape::fmt_shape;
use crate::tensor::{Elem, Tensor, cast_elem, checked_numel};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The kinds of atoms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AtomKind {
    View,
    Unary,
    Binary,
    Select,
    Reduce,
    MatMul,
    Gather,
    Scatter,
    Cast,
    Const,
}

impl AtomKind {
    pub const ALL: &'static [AtomKind] = &[
        AtomKind::View,
        AtomKind::Unary,
        AtomKind::Binary,
        AtomKind::Select,
        AtomKind::Reduce,
        AtomKind::MatMul,
        AtomKind::Gather,
        AtomKind::Scatter,
        AtomKind::Cast,
        AtomKind::Const,
    ];

    /// The op name in graphs and the text form (`atom.View`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AtomKind::View => "atom.View",
            AtomKind::Unary => "atom.Unary",
            AtomKind::Binary => "atom.Binary",
            AtomKind::Select => "atom.Select",
            AtomKind::Reduce => "atom.Reduce",
            AtomKind::MatMul => "atom.MatMul",
            AtomKind::Gather => "atom.Gather",
            AtomKind::Scatter => "atom.Scatter",
            AtomKind::Cast => "atom.Cast",
            AtomKind::Const => "atom.Const",
        }
    }

    pub fn from_name(name: &str) -> Option<AtomKind> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        Atom::from_attrs(self, cx.attrs)?.infer(cx.inputs)
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        Atom::from_attrs(self, cx.attrs)?.eval(cx.inputs)
    }
}

macro_rules! fn_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($v),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            pub fn name(self) -> &'static str {
                match self { $($name::$v => stringify!($v)),* }
            }
            pub fn from_name(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|f| f.name() == s)
            }
        }
    };
}

fn_enum! {
    /// Elementwise functions of one operand (output dtype = input dtype but for `IsNaN`).
    UnaryFn {
        Neg, Abs, Sign, Sqrt, Recip, Exp, Log, Sin, Cos, Tan, Asin, Acos, Atan, Sinh, Cosh,
        Asinh, Acosh, Atanh, Tanh, Erf, Floor, Ceil, Round, Not, BitNot, IsNaN,
    }
}

fn_enum! {
    /// Elementwise functions of two operands of one shape. Comparisons give bool.
    /// `Mod` has the sign of the divisor (Python), `Fmod` the sign of the dividend (C).
    BinaryFn {
        Add, Sub, Mul, Div, Pow, Mod, Fmod, Max, Min, Eq, Lt, Le, Gt, Ge, And, Or, Xor,
        BitAnd, BitOr, BitXor, Shl, Shr,
    }
}

fn_enum! {
    /// Reductions. `ArgMax`/`ArgMin` reduce one axis to the first extremal index (i64).
    ReduceFn { Sum, Prod, Max, Min, ArgMax, ArgMin }
}

fn_enum! {
    /// How `Scatter` combines an update with the element it lands on.
    ScatterMode { Replace, Add, Mul, Max, Min }
}

impl UnaryFn {
    fn op(self) -> UnaryOp {
        match self {
            UnaryFn::Neg => UnaryOp::Neg,
            UnaryFn::Abs => UnaryOp::Abs,
            UnaryFn::Sign => UnaryOp::Sign,
            UnaryFn::Sqrt => UnaryOp::Sqrt,
            UnaryFn::Recip => UnaryOp::Reciprocal,
            UnaryFn::Exp => UnaryOp::Exp,
            UnaryFn::Log => UnaryOp::Log,
            UnaryFn::Sin => UnaryOp::Sin,
            UnaryFn::Cos => UnaryOp::Cos,
            UnaryFn::Tan => UnaryOp::Tan,
            UnaryFn::Asin => UnaryOp::Asin,
            UnaryFn::Acos => UnaryOp::Acos,
            UnaryFn::Atan => UnaryOp::Atan,
            UnaryFn::Sinh => UnaryOp::Sinh,
            UnaryFn::Cosh => UnaryOp::Cosh,
            UnaryFn::Asinh => UnaryOp::Asinh,
            UnaryFn::Acosh => UnaryOp::Acosh,
            UnaryFn::Atanh => UnaryOp::Atanh,
            UnaryFn::Tanh => UnaryOp::Tanh,
            UnaryFn::Erf => UnaryOp::Erf,
            UnaryFn::Floor => UnaryOp::Floor,
            UnaryFn::Ceil => UnaryOp::Ceil,
            UnaryFn::Round => UnaryOp::Round,
            UnaryFn::Not => UnaryOp::Not,
            UnaryFn::BitNot => UnaryOp::BitwiseNot,
            UnaryFn::IsNaN => UnaryOp::IsNaN,
        }
    }
}

impl BinaryFn {
    /// The high-level op with these semantics, and its attributes.
    fn op(self) -> (BinaryOp, Attrs) {
        let mut a = Attrs::new();
        let op = match self {
            BinaryFn::Add => BinaryOp::Add,
            BinaryFn::Sub => BinaryOp::Sub,
            BinaryFn::Mul => BinaryOp::Mul,
            BinaryFn::Div => BinaryOp::Div,
            BinaryFn::Pow => BinaryOp::Pow,
            BinaryFn::Mod => BinaryOp::Mod,
            BinaryFn::Fmod => {
                a.set("fmod", Attr::Int(1));
                BinaryOp::Mod
            }
            BinaryFn::Max => BinaryOp::Max,
            BinaryFn::Min => BinaryOp::Min,
            BinaryFn::Eq => BinaryOp::Equal,
            BinaryFn::Lt => BinaryOp::Less,
            BinaryFn::Le => BinaryOp::LessOrEqual,
            BinaryFn::Gt => BinaryOp::Greater,
            BinaryFn::Ge => BinaryOp::GreaterOrEqual,
            BinaryFn::And => BinaryOp::And,
            BinaryFn::Or => BinaryOp::Or,
            BinaryFn::Xor => BinaryOp::Xor,
            BinaryFn::BitAnd => BinaryOp::BitwiseAnd,
            BinaryFn::BitOr => BinaryOp::BitwiseOr,
            BinaryFn::BitXor => BinaryOp::BitwiseXor,
            BinaryFn::Shl => {
                a.set("direction", Attr::String("LEFT".into()));
                BinaryOp::BitShift
            }
            BinaryFn::Shr => {
                a.set("direction", Attr::String("RIGHT".into()));
                BinaryOp::BitShift
            }
        };
        (op, a)
    }

    /// Whether the result is bool whatever the operand dtype.
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryFn::Eq | BinaryFn::Lt | BinaryFn::Le | BinaryFn::Gt | BinaryFn::Ge)
    }
}

/// One validity condition of a [`ViewMap`]: `0 <= offset + Σ coefs[d]·i[d] < bound`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guard {
    pub coefs: Vec<i64>,
    pub offset: i64,
    pub bound: i64,
}

/// An affine re-indexing of a row-major input: output element `i` (a multi-index over
/// `shape`) is `input[offset + Σ strides[d]·i[d]]` when every guard holds, else `pad`.
///
/// Reshape, transpose, slice (any step, negative too), broadcast (stride 0), pad (guards),
/// flip and sliding windows (im2col without copying) are all views.
#[derive(Clone, Debug)]
pub struct ViewMap {
    pub shape: Vec<usize>,
    pub strides: Vec<i64>,
    pub offset: i64,
    pub guards: Vec<Guard>,
    /// The value of a guarded-out element (converted to the dtype).
    pub pad: f64,
}

impl PartialEq for ViewMap {
    fn eq(&self, o: &ViewMap) -> bool {
        self.shape == o.shape
            && self.strides == o.strides
            && self.offset == o.offset
            && self.guards == o.guards
            && self.pad.to_bits() == o.pad.to_bits()
    }
}
impl Eq for ViewMap {}
impl Hash for ViewMap {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.shape.hash(h);
        self.strides.hash(h);
        self.offset.hash(h);
        self.guards.hash(h);
        self.pad.to_bits().hash(h);
    }
}

impl ViewMap {
    /// The row-major view of a tensor of `shape` (the identity).
    pub fn identity(shape: &[usize]) -> ViewMap {
        ViewMap { shape: shape.to_vec(), strides: row_major(shape), offset: 0, guards: vec![], pad: 0.0 }
    }

    /// Whether this view reads every element of a `in_numel`-element input once, in order.
    pub fn is_identity(&self, in_numel: usize) -> bool {
        let numel: usize = self.shape.iter().product();
        if numel != in_numel || self.offset != 0 || !self.guards.is_empty() {
            return false;
        }
        let want = row_major(&self.shape);
        self.shape.iter().zip(self.strides.iter().zip(&want)).all(|(&n, (s, w))| n == 1 || s == w)
    }

    /// The flat input index of output multi-index `i`, or `None` where a guard fails.
    pub fn index(&self, i: &[usize]) -> Option<i64> {
        for g in &self.guards {
            let v = g.offset + g.coefs.iter().zip(i).map(|(c, &x)| c * x as i64).sum::<i64>();
            if v < 0 || v >= g.bound {
                return None;
            }
        }
        Some(self.offset + self.strides.iter().zip(i).map(|(s, &x)| s * x as i64).sum::<i64>())
    }

    /// Checks the map's own consistency (ranks match).
    pub fn check(&self) -> Result<()> {
        let r = self.shape.len();
        if self.strides.len() != r || self.guards.iter().any(|g| g.coefs.len() != r) {
            return Err(Error::InvalidModel(format!(
                "view of rank {r} has {} strides or a guard of another rank",
                self.strides.len()
            )));
        }
        checked_numel(&self.shape)?;
        Ok(())
    }

    /// The same view with unit dims dropped and adjacent dims merged where the inner one
    /// continues the outer one (in the strides and in every guard), so `compose` sees
    /// `[3, 4, 4]` read contiguously as one dim of 48.
    fn merged(&self) -> ViewMap {
        let mut shape: Vec<usize> = Vec::new();
        let mut strides: Vec<i64> = Vec::new();
        let mut coefs: Vec<Vec<i64>> = vec![Vec::new(); self.guards.len()];
        for d in 0..self.shape.len() {
            let n = self.shape[d];
            if n == 1 {
                continue;
            }
            let joins = shape.last().is_some_and(|_| {
                let p = shape.len() - 1;
                strides[p] == self.strides[d] * n as i64
                    && self.guards.iter().zip(&coefs).all(|(g, c)| c[p] == g.coefs[d] * n as i64)
            });
            if joins {
                let p = shape.len() - 1;
                shape[p] *= n;
                strides[p] = self.strides[d];
                for (c, g) in coefs.iter_mut().zip(&self.guards) {
                    c[p] = g.coefs[d];
                }
            } else {
                shape.push(n);
                strides.push(self.strides[d]);
                for (c, g) in coefs.iter_mut().zip(&self.guards) {
                    c.push(g.coefs[d]);
                }
            }
        }
        let guards = self
            .guards
            .iter()
            .zip(coefs)
            .map(|(g, coefs)| Guard { coefs, offset: g.offset, bound: g.bound })
            .collect();
        ViewMap { shape, strides, offset: self.offset, guards, pad: self.pad }
    }

    /// The view of this view: `outer` reads this view's output (row-major), so the
    /// composition is a single view when `outer`'s flat indices decompose affinely into
    /// this view's multi-index (after merging contiguous dims). Returns `None` when they
    /// do not.
    pub fn compose(&self, outer: &ViewMap) -> Option<ViewMap> {
        if self.shape.contains(&0) || outer.shape.contains(&0) {
            return None;
        }
        self.merged().compose_merged(outer)
    }

    /// Why `self.compose(outer)` fails, when splitting one of `outer`'s axes would fix it:
    /// `Some((d, l))` when walking outer axis `d` runs past the end of the (merged) inner dim
    /// it moves along, and splitting `d` into `(n_d / l, l)` (row-major) keeps the inner part
    /// inside that dim: the reading kernel can then loop over both parts instead of
    /// materializing this view. `None` when no such split exists (or none is needed).
    pub fn split_hint(&self, outer: &ViewMap) -> Option<(usize, usize)> {
        if self.shape.contains(&0) || outer.shape.contains(&0) {
            return None;
        }
        let m = self.merged();
        let inner_strides = row_major(&m.shape);
        let mut base = vec![0i64; m.shape.len()];
        let mut rem = outer.offset;
        for (j, &st) in inner_strides.iter().enumerate() {
            if st != 0 {
                base[j] = rem.div_euclid(st);
                rem = rem.rem_euclid(st);
            }
        }
        if rem != 0 {
            return None;
        }
        for (d, (&n, &s)) in outer.shape.iter().zip(&outer.strides).enumerate() {
            if n <= 1 || s <= 0 {
                continue;
            }
            let Some(j) = (0..m.shape.len()).find(|&j| m.shape[j] > 1 && inner_strides[j] != 0 && s % inner_strides[j] == 0) else {
                continue;
            };
            let (c, dim) = (s / inner_strides[j], m.shape[j] as i64);
            if base[j] + c * (n as i64 - 1) < dim {
                continue;
            }
            if base[j] != 0 || dim % c != 0 {
                return None;
            }
            let l = (dim / c) as usize;
            if l > 1 && l < n && n % l == 0 {
                return Some((d, l));
            }
            return None;
        }
        None
    }

    #[allow(clippy::needless_range_loop)] // index arithmetic over two ranks reads clearer
    fn compose_merged(&self, outer: &ViewMap) -> Option<ViewMap> {
        // Each inner index j_k must be an affine function of the outer indices: assign every
        // outer stride to one inner dim whose row-major stride divides it, then check that
        // every j_k stays in [0, n_k) over the whole outer box (conservative: positions an
        // outer guard masks are checked too), so the mixed-radix decomposition is exact.
        let inner_strides = row_major(&self.shape);
        let r_in = self.shape.len();
        let r_out = outer.shape.len();
        // coef[j][d]: how inner index j moves per unit of outer index d.
        let mut coef = vec![vec![0i64; r_out]; r_in];
        let mut base = vec![0i64; r_in];
        // Decompose the offset.
        let mut rem = outer.offset;
        for j in 0..r_in {
            let st = inner_strides[j];
            if st == 0 {
                continue;
            }
            base[j] = rem.div_euclid(st);
            rem = rem.rem_euclid(st);
        }
        if rem != 0 {
            return None;
        }
        for d in 0..r_out {
            if outer.shape[d] <= 1 {
                continue;
            }
            let s = outer.strides[d];
            if s == 0 {
                continue;
            }
            // The stride must be a multiple of one inner stride, and moving along the whole
            // outer axis must stay inside that inner dim's extent range (checked below).
            let mut found = false;
            for j in 0..r_in {
                let st = inner_strides[j];
                if self.shape[j] <= 1 || st == 0 {
                    continue;
                }
                if s % st == 0 {
                    coef[j][d] = s / st;
                    found = true;
                    break;
                }
            }
            if !found {
                return None;
            }
        }
        for j in 0..r_in {
            let (mut lo, mut hi) = (base[j], base[j]);
            for d in 0..r_out {
                let span = coef[j][d] * (outer.shape[d] as i64 - 1).max(0);
                if span < 0 {
                    lo += span;
                } else {
                    hi += span;
                }
            }
            if lo < 0 || hi >= self.shape[j] as i64 {
                return None;
            }
        }
        // Inner flat = Σ_j (base_j + Σ_d coef_jd i_d) * inner_stride_j, so the composed
        // view reads self at those inner multi-indices.
        let mut strides = vec![0i64; r_out];
        let mut offset = self.offset;
        for j in 0..r_in {
            offset += base[j] * self.strides[j];
            for d in 0..r_out {
                strides[d] += coef[j][d] * self.strides[j];
            }
        }
        let mut guards = outer.guards.clone();
        for g in &self.guards {
            let mut coefs = vec![0i64; r_out];
            let mut off = g.offset;
            for j in 0..r_in {
                off += g.coefs[j] * base[j];
                for d in 0..r_out {
                    coefs[d] += g.coefs[j] * coef[j][d];
                }
            }
            guards.push(Guard { coefs, offset: off, bound: g.bound });
        }
        if !self.guards.is_empty() && !outer.guards.is_empty() && self.pad.to_bits() != outer.pad.to_bits() {
            return None;
        }
        let pad = if self.guards.is_empty() { outer.pad } else { self.pad };
        Some(ViewMap { shape: outer.shape.clone(), strides, offset, guards, pad })
    }

    fn to_attrs(&self, a: &mut Attrs) {
        a.set("shape", Attr::Ints(self.shape.iter().map(|&n| n as i64).collect()));
        a.set("strides", Attr::Ints(self.strides.clone()));
        if self.offset != 0 {
            a.set("offset", Attr::Int(self.offset));
        }
        if !self.guards.is_empty() {
            let mut g = Vec::new();
            for guard in &self.guards {
                g.push(guard.offset);
                g.push(guard.bound);
                g.extend(&guard.coefs);
            }
            a.set("guards", Attr::Ints(g));
            // A float when exact in f32 (0, -0, ±inf, small integers), else an f64 scalar.
            if (self.pad as f32) as f64 == self.pad || self.pad.is_nan() {
                a.set("pad", Attr::Float(self.pad as f32));
            } else {
                a.set("pad", Attr::Tensor(Tensor::scalar(self.pad)));
            }
        }
    }

    fn from_attrs(a: &Attrs) -> Result<ViewMap> {
        let shape: Vec<usize> = a
            .ints("shape")?
            .ok_or_else(|| Error::InvalidModel("atom.View needs 'shape'".into()))?
            .iter()
            .map(|&n| usize::try_from(n).map_err(|_| Error::InvalidModel(format!("view dim {n} is negative"))))
            .collect::<Result<_>>()?;
        let strides = a.ints_or("strides", &[])?;
        let r = shape.len();
        let flat = a.ints_or("guards", &[])?;
        let mut guards = Vec::new();
        if !flat.is_empty() {
            if flat.len() % (r + 2) != 0 {
                return Err(Error::InvalidModel(format!("view guards of {} ints are not groups of {}", flat.len(), r + 2)));
            }
            for g in flat.chunks(r + 2) {
                guards.push(Guard { offset: g[0], bound: g[1], coefs: g[2..].to_vec() });
            }
        }
        let pad = match a.get("pad") {
            None => 0.0,
            Some(Attr::Float(f)) => *f as f64,
            Some(Attr::Int(i)) => *i as f64,
            Some(Attr::Tensor(t)) => t.scalar_f64()?,
            Some(other) => return Err(Error::InvalidModel(format!("view pad must be a number, got {}", other.kind()))),
        };
        let v = ViewMap { shape, strides, offset: a.int_or("offset", 0)?, guards, pad };
        v.check()?;
        Ok(v)
    }

    /// Materializes the view of `x`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        self.check()?;
        crate::with_data!(x.data(), v => self.apply_slice(v).and_then(|out| Tensor::from_vec(self.shape.clone(), out)))
    }

    fn apply_slice<T: Elem>(&self, v: &[T]) -> Result<Vec<T>> {
        let n: usize = self.shape.iter().product();
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return Ok(out);
        }
        let pad: T = cast_elem::<f64, T>(self.pad);
        let r = self.shape.len();
        let mut idx = vec![0usize; r];
        let mut flat = self.offset;
        let mut gv: Vec<i64> = self.guards.iter().map(|g| g.offset).collect();
        let len = v.len() as i64;
        for _ in 0..n {
            let ok = self.guards.iter().zip(&gv).all(|(g, &x)| x >= 0 && x < g.bound);
            if ok {
                if flat < 0 || flat >= len {
                    return Err(Error::InvalidModel(format!(
                        "view reads element {flat} of a {len}-element input at output index {idx:?}"
                    )));
                }
                out.push(v[flat as usize]);
            } else {
                out.push(pad);
            }
            // Odometer step, updating the flat index and guard values incrementally.
            let mut d = r;
            while d > 0 {
                d -= 1;
                idx[d] += 1;
                flat += self.strides[d];
                for (g, x) in self.guards.iter().zip(gv.iter_mut()) {
                    *x += g.coefs[d];
                }
                if idx[d] < self.shape[d] {
                    break;
                }
                let back = self.shape[d] as i64;
                flat -= self.strides[d] * back;
                for (g, x) in self.guards.iter().zip(gv.iter_mut()) {
                    *x -= g.coefs[d] * back;
                }
                idx[d] = 0;
            }
        }
        Ok(out)
    }
}

/// Row-major strides of a shape.
pub fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![0i64; shape.len()];
    let mut acc = 1i64;
    for d in (0..shape.len()).rev() {
        s[d] = acc;
        acc *= shape[d] as i64;
    }
    s
}

/// An atom with its parameters. Equality and hashing compare `Const` tensors by identity
/// (the same `Arc`), everything else by value, so atoms can key a hash-consing table.
#[derive(Clone, Debug)]
pub enum Atom {
    View(ViewMap),
    Unary(UnaryFn),
    Binary(BinaryFn),
    /// `cond ? a : b`, all three of one shape.
    Select,
    /// Reduces `axes` to extent 1.
    Reduce { op: ReduceFn, axes: Vec<usize> },
    /// `[B.., M, K] x [B.., K, N] -> [B.., M, N]`.
    MatMul,
    /// `out[i] = data[i with axis replaced by index[i]]` (`GatherElements`).
    Gather { axis: usize },
    /// `out = data; out[i with axis replaced by index[i]] (mode)= updates[i]` (`ScatterElements`).
    Scatter { axis: usize, mode: ScatterMode },
    Cast(DType),
    Const(Arc<Tensor>),
}

impl PartialEq for Atom {
    fn eq(&self, o: &Atom) -> bool {
        match (self, o) {
            (Atom::View(a), Atom::View(b)) => a == b,
            (Atom::Unary(a), Atom::Unary(b)) => a == b,
            (Atom::Binary(a), Atom::Binary(b)) => a == b,
            (Atom::Select, Atom::Select) | (Atom::MatMul, Atom::MatMul) => true,
            (Atom::Reduce { op: a, axes: x }, Atom::Reduce { op: b, axes: y }) => a == b && x == y,
            (Atom::Gather { axis: a }, Atom::Gather { axis: b }) => a == b,
            (Atom::Scatter { axis: a, mode: m }, Atom::Scatter { axis: b, mode: n }) => a == b && m == n,
            (Atom::Cast(a), Atom::Cast(b)) => a == b,
            (Atom::Const(a), Atom::Const(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}
impl Eq for Atom {}
impl Hash for Atom {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.kind().hash(h);
        match self {
            Atom::View(v) => v.hash(h),
            Atom::Unary(f) => f.hash(h),
            Atom::Binary(f) => f.hash(h),
            Atom::Reduce { op, axes } => {
                op.hash(h);
                axes.hash(h);
            }
            Atom::Gather { axis } => axis.hash(h),
            Atom::Scatter { axis, mode } => {
                axis.hash(h);
                mode.hash(h);
            }
            Atom::Cast(d) => d.hash(h),
            Atom::Const(t) => (Arc::as_ptr(t) as usize).hash(h),
            Atom::Select | Atom::MatMul => {}
        }
    }
}

impl Atom {
    pub fn kind(&self) -> AtomKind {
        match self {
            Atom::View(_) => AtomKind::View,
            Atom::Unary(_) => AtomKind::Unary,
            Atom::Binary(_) => AtomKind::Binary,
            Atom::Select => AtomKind::Select,
            Atom::Reduce { .. } => AtomKind::Reduce,
            Atom::MatMul => AtomKind::MatMul,
            Atom::Gather { .. } => AtomKind::Gather,
            Atom::Scatter { .. } => AtomKind::Scatter,
            Atom::Cast(_) => AtomKind::Cast,
            Atom::Const(_) => AtomKind::Const,
        }
    }

    /// How many inputs the atom takes.
    pub fn arity(&self) -> usize {
        match self {
            Atom::Const(_) => 0,
            Atom::View(_) | Atom::Unary(_) | Atom::Reduce { .. } | Atom::Cast(_) => 1,
            Atom::Binary(_) | Atom::MatMul | Atom::Gather { .. } => 2,
            Atom::Select | Atom::Scatter { .. } => 3,
        }
    }

    /// The graph op encoding this atom.
    pub fn to_op(&self) -> Op {
        let mut a = Attrs::new();
        match self {
            Atom::View(v) => v.to_attrs(&mut a),
            Atom::Unary(f) => a.set("fn", Attr::String(f.name().into())),
            Atom::Binary(f) => a.set("fn", Attr::String(f.name().into())),
            Atom::Reduce { op, axes } => {
                a.set("fn", Attr::String(op.name().into()));
                a.set("axes", Attr::Ints(axes.iter().map(|&x| x as i64).collect()));
            }
            Atom::Gather { axis } => a.set("axis", Attr::Int(*axis as i64)),
            Atom::Scatter { axis, mode } => {
                a.set("axis", Attr::Int(*axis as i64));
                a.set("mode", Attr::String(mode.name().into()));
            }
            Atom::Cast(d) => a.set("to", Attr::String(d.name().into())),
            Atom::Const(t) => a.set("value", Attr::Tensor((**t).clone())),
            Atom::Select | Atom::MatMul => {}
        }
        Op { kind: OpKind::Atom(self.kind()), attrs: a, version: 0 }
    }

    /// The atom an op encodes, if it is one.
    pub fn from_op(op: &Op) -> Result<Option<Atom>> {
        match op.kind {
            OpKind::Atom(k) => Atom::from_attrs(k, &op.attrs).map(Some),
            _ => Ok(None),
        }
    }

    pub fn from_attrs(kind: AtomKind, a: &Attrs) -> Result<Atom> {
        fn named<T>(a: &Attrs, key: &str, f: impl Fn(&str) -> Option<T>) -> Result<T> {
            let s = a
                .string(key)?
                .ok_or_else(|| Error::InvalidModel(format!("atom needs attribute '{key}'")))?;
            f(s).ok_or_else(|| Error::InvalidModel(format!("unknown atom {key} '{s}'")))
        }
        fn axis(a: &Attrs) -> Result<usize> {
            let v = a.req_int("axis")?;
            usize::try_from(v).map_err(|_| Error::InvalidModel(format!("atom axis {v} is negative")))
        }
        Ok(match kind {
            AtomKind::View => Atom::View(ViewMap::from_attrs(a)?),
            AtomKind::Unary => Atom::Unary(named(a, "fn", UnaryFn::from_name)?),
            AtomKind::Binary => Atom::Binary(named(a, "fn", BinaryFn::from_name)?),
            AtomKind::Select => Atom::Select,
            AtomKind::Reduce => Atom::Reduce {
                op: named(a, "fn", ReduceFn::from_name)?,
                axes: a
                    .ints_or("axes", &[])?
                    .iter()
                    .map(|&x| usize::try_from(x).map_err(|_| Error::InvalidModel(format!("reduce axis {x} is negative"))))
                    .collect::<Result<_>>()?,
            },
            AtomKind::MatMul => Atom::MatMul,
            AtomKind::Gather => Atom::Gather { axis: axis(a)? },
            AtomKind::Scatter => Atom::Scatter { axis: axis(a)?, mode: named(a, "mode", ScatterMode::from_name)? },
            AtomKind::Cast => Atom::Cast(named(a, "to", DType::from_name)?),
            AtomKind::Const => Atom::Const(Arc::new(
                a.tensor("value")?
                    .ok_or_else(|| Error::InvalidModel("atom.Const needs 'value'".into()))?
                    .clone(),
            )),
        })
    }

    /// The high-level op that defines this atom's semantics (all but View and Const).
    fn reference_op(&self) -> Option<Op> {
        let mut attrs = Attrs::new();
        let (kind, version) = match self {
            Atom::View(_) | Atom::Const(_) => return None,
            Atom::Unary(f) => (OpKind::Unary(f.op()), 21),
            Atom::Binary(f) => {
                let (op, a) = f.op();
                attrs = a;
                (OpKind::Binary(op), 21)
            }
            Atom::Select => (OpKind::Binary(BinaryOp::Where), 21),
            Atom::Reduce { op, axes } => {
                let axes: Vec<i64> = axes.iter().map(|&x| x as i64).collect();
                attrs.set("keepdims", Attr::Int(1));
                // No axes reduces nothing (not everything, as ONNX's default would).
                attrs.set("noop_with_empty_axes", Attr::Int(1));
                let rop = match op {
                    ReduceFn::Sum => ReduceOp::ReduceSum,
                    ReduceFn::Prod => ReduceOp::ReduceProd,
                    ReduceFn::Max => ReduceOp::ReduceMax,
                    ReduceFn::Min => ReduceOp::ReduceMin,
                    ReduceFn::ArgMax => ReduceOp::ArgMax,
                    ReduceFn::ArgMin => ReduceOp::ArgMin,
                };
                if matches!(op, ReduceFn::ArgMax | ReduceFn::ArgMin) {
                    attrs.set("axis", Attr::Int(axes.first().copied().unwrap_or(0)));
                } else {
                    attrs.set("axes", Attr::Ints(axes));
                }
                (OpKind::Reduce(rop), 11)
            }
            Atom::MatMul => (OpKind::Linalg(LinalgOp::MatMul), 13),
            Atom::Gather { axis } => {
                attrs.set("axis", Attr::Int(*axis as i64));
                (OpKind::Index(IndexOp::GatherElements), 13)
            }
            Atom::Scatter { axis, mode } => {
                attrs.set("axis", Attr::Int(*axis as i64));
                let r = match mode {
                    ScatterMode::Replace => "none",
                    ScatterMode::Add => "add",
                    ScatterMode::Mul => "mul",
                    ScatterMode::Max => "max",
                    ScatterMode::Min => "min",
                };
                attrs.set("reduction", Attr::String(r.into()));
                (OpKind::Index(IndexOp::ScatterElements), 18)
            }
            Atom::Cast(to) => {
                attrs.set("to", Attr::Int(to.onnx_code() as i64));
                (OpKind::Unary(UnaryOp::Cast), 21)
            }
        };
        Some(Op { kind, attrs, version })
    }

    /// Checks the atom's strict shape rules on its input types.
    fn check_inputs(&self, tys: &[&ValueType]) -> Result<()> {
        if tys.len() != self.arity() {
            return Err(Error::InvalidModel(format!(
                "{} takes {} inputs, got {}",
                self.kind().name(),
                self.arity(),
                tys.len()
            )));
        }
        let shape = |i: usize| tys[i].shape.as_deref();
        let same = |i: usize, j: usize| -> Result<()> {
            if shape(i) != shape(j) {
                return Err(Error::InvalidModel(format!(
                    "{} operands differ in shape: {} and {}",
                    self.kind().name(),
                    tys[i],
                    tys[j]
                )));
            }
            Ok(())
        };
        match self {
            Atom::Binary(_) => same(0, 1)?,
            Atom::Select => {
                same(0, 1)?;
                same(1, 2)?;
            }
            Atom::MatMul => {
                if let (Some(a), Some(b)) = (shape(0), shape(1))
                    && (a.len() < 2 || a.len() != b.len() || a[..a.len() - 2] != b[..b.len() - 2])
                {
                    return Err(Error::InvalidModel(format!(
                        "atom.MatMul needs [B.., M, K] x [B.., K, N] with equal batch dims, got {} and {}",
                        fmt_shape(a),
                        fmt_shape(b)
                    )));
                }
            }
            Atom::Gather { axis } | Atom::Scatter { axis, .. } => {
                if let (Some(d), Some(i)) = (shape(0), shape(1))
                    && (d.len() != i.len() || *axis >= d.len())
                {
                    return Err(Error::InvalidModel(format!(
                        "{} needs index of the data's rank and axis {axis} < rank, got {} and {}",
                        self.kind().name(),
                        fmt_shape(d),
                        fmt_shape(i)
                    )));
                }
            }
            Atom::Reduce { op, axes } => {
                if let Some(s) = shape(0)
                    && (axes.iter().any(|&a| a >= s.len())
                        || (matches!(op, ReduceFn::ArgMax | ReduceFn::ArgMin) && axes.len() != 1))
                {
                    return Err(Error::InvalidModel(format!(
                        "atom.Reduce axes {axes:?} are invalid for {}",
                        fmt_shape(s)
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Output type from input types.
    pub fn infer(&self, inputs: &[Option<Fact>]) -> Result<Vec<ValueType>> {
        let tys: Vec<&ValueType> = inputs
            .iter()
            .map(|f| f.map(|f| f.ty).ok_or_else(|| Error::InvalidModel("atoms take no omitted inputs".into())))
            .collect::<Result<_>>()?;
        self.check_inputs(&tys)?;
        match self {
            Atom::View(v) => Ok(vec![ValueType::new(tys[0].dtype, v.shape.clone())]),
            Atom::Const(t) => Ok(vec![ValueType::of(t)]),
            _ => {
                let op = self.reference_op().ok_or_else(|| Error::Internal("atom without reference op".into()))?;
                op.infer(inputs, 1)
            }
        }
    }

    /// Reference evaluation.
    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let ts: Vec<&Tensor> = inputs
            .iter()
            .map(|t| t.ok_or_else(|| Error::InvalidModel("atoms take no omitted inputs".into())))
            .collect::<Result<_>>()?;
        let tys: Vec<ValueType> = ts.iter().map(|t| ValueType::of(t)).collect();
        self.check_inputs(&tys.iter().collect::<Vec<_>>())?;
        match self {
            Atom::View(v) => Ok(vec![v.apply(ts[0])?]),
            Atom::Const(t) => Ok(vec![(**t).clone()]),
            _ => {
                let op = self.reference_op().ok_or_else(|| Error::Internal("atom without reference op".into()))?;
                op.eval(inputs, 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    #[test]
    fn view_transpose_pad_and_window() -> Result<()> {
        let x = t(&[2, 3], vec![0., 1., 2., 3., 4., 5.]);
        let tr = ViewMap { shape: vec![3, 2], strides: vec![1, 3], offset: 0, guards: vec![], pad: 0.0 };
        assert_eq!(tr.apply(&x)?.slice::<f32>()?, &[0., 3., 1., 4., 2., 5.]);
        // Pad one column on each side of a row: [-1, x, -1].
        let pad = ViewMap {
            shape: vec![2, 5],
            strides: vec![3, 1],
            offset: -1,
            guards: vec![Guard { coefs: vec![0, 1], offset: -1, bound: 3 }],
            pad: -1.0,
        };
        assert_eq!(pad.apply(&x)?.slice::<f32>()?, &[-1., 0., 1., 2., -1., -1., 3., 4., 5., -1.]);
        // Sliding windows of 2 over the columns.
        let win = ViewMap { shape: vec![2, 2, 2], strides: vec![3, 1, 1], offset: 0, guards: vec![], pad: 0.0 };
        assert_eq!(win.apply(&x)?.slice::<f32>()?, &[0., 1., 1., 2., 3., 4., 4., 5.]);
        Ok(())
    }

    #[test]
    fn view_out_of_bounds_is_an_error() {
        let x = t(&[2], vec![0., 1.]);
        let v = ViewMap { shape: vec![3], strides: vec![1], offset: 0, guards: vec![], pad: 0.0 };
        assert!(v.apply(&x).is_err());
    }

    #[test]
    fn compose_transpose_twice_is_identity() -> Result<()> {
        let tr = ViewMap { shape: vec![3, 2], strides: vec![1, 3], offset: 0, guards: vec![], pad: 0.0 };
        let back = ViewMap { shape: vec![2, 3], strides: vec![1, 2], offset: 0, guards: vec![], pad: 0.0 };
        let c = tr.compose(&back).ok_or_else(|| Error::Internal("not composable".into()))?;
        assert!(c.is_identity(6));
        Ok(())
    }

    #[test]
    fn compose_agrees_with_applying_twice() -> Result<()> {
        let x = t(&[4, 6], (0..24).map(|i| i as f32).collect());
        // Slice rows 1..3, columns with step 2 reversed; then pad and transpose.
        let inner = ViewMap { shape: vec![2, 3], strides: vec![6, -2], offset: 6 + 5, guards: vec![], pad: 0.0 };
        let outer = ViewMap {
            shape: vec![3, 2],
            strides: vec![1, 3],
            offset: 0,
            guards: vec![Guard { coefs: vec![1, 0], offset: 0, bound: 2 }],
            pad: 9.0,
        };
        let twice = outer.apply(&inner.apply(&x)?)?;
        let c = inner.compose(&outer).ok_or_else(|| Error::Internal("not composable".into()))?;
        assert_eq!(c.apply(&x)?.slice::<f32>()?, twice.slice::<f32>()?);
        Ok(())
    }

    #[test]
    fn compose_merges_contiguous_dims() -> Result<()> {
        // A padded [2,3,4] view read back as [2,12]: the inner [3,4] dims merge.
        let x = t(&[2, 3, 4], (0..24).map(|i| i as f32).collect());
        let inner = ViewMap {
            shape: vec![2, 3, 4],
            strides: vec![12, 4, 1],
            offset: 0,
            guards: vec![Guard { coefs: vec![1, 0, 0], offset: 0, bound: 1 }],
            pad: 7.0,
        };
        let outer = ViewMap { shape: vec![2, 12], strides: vec![12, 1], offset: 0, guards: vec![], pad: 0.0 };
        let c = inner.compose(&outer).ok_or_else(|| Error::Internal("not composable".into()))?;
        assert_eq!(c.apply(&x)?.slice::<f32>()?, outer.apply(&inner.apply(&x)?)?.slice::<f32>()?);
        Ok(())
    }

    #[test]
    fn atoms_round_trip_through_ops() -> Result<()> {
        let atoms = vec![
            Atom::View(ViewMap {
                shape: vec![2],
                strides: vec![1],
                offset: -1,
                guards: vec![Guard { coefs: vec![1], offset: -1, bound: 1 }],
                pad: f64::NEG_INFINITY,
            }),
            Atom::View(ViewMap {
                shape: vec![1],
                strides: vec![1],
                offset: 0,
                guards: vec![Guard { coefs: vec![1], offset: 0, bound: 1 }],
                pad: f64::MIN,
            }),
            Atom::Unary(UnaryFn::Exp),
            Atom::Binary(BinaryFn::Fmod),
            Atom::Reduce { op: ReduceFn::ArgMax, axes: vec![1] },
            Atom::Scatter { axis: 0, mode: ScatterMode::Add },
            Atom::Cast(DType::F16),
        ];
        for a in atoms {
            assert_eq!(Atom::from_op(&a.to_op())?, Some(a));
        }
        Ok(())
    }

    #[test]
    fn binary_rejects_implicit_broadcast() {
        let a = t(&[2, 3], vec![0.; 6]);
        let b = t(&[3], vec![0.; 3]);
        assert!(Atom::Binary(BinaryFn::Add).eval(&[Some(&a), Some(&b)]).is_err());
    }
}
