//! `Lx`, the builder that rules use to add atoms to the e-graph. Every method checks its
//! operands (the atom's own inference runs before the e-node is added), so a rule with a
//! shape mistake fails with an error naming the atom instead of building a bad term.
//!
//! Beyond the ten atoms it offers the compound helpers the rule families share: numpy
//! broadcasting for `binary`/`select`, `reshape`, `transpose`, `slice`, `pad`, `concat`,
//! numpy `matmul`, reductions with or without kept dims, and ONNX-style `take` (Gather).

use crate::egraph::EG;
use crate::lang::Term;
use egg::Id;
use ir::atom::{Atom, BinaryFn, Guard, ReduceFn, UnaryFn, ViewMap, row_major};
use ir::{DType, Error, Result, Tensor, ValueType};
use std::sync::Arc;

/// The rule-side view of the e-graph.
pub struct Lx<'a> {
    pub eg: &'a mut EG,
}

fn err(msg: impl Into<String>) -> Error {
    Error::InvalidModel(msg.into())
}

impl<'a> Lx<'a> {
    pub fn new(eg: &'a mut EG) -> Lx<'a> {
        Lx { eg }
    }

    // ---- facts -------------------------------------------------------------------------

    /// The type of a class (error for an omitted input or an untyped term).
    pub fn ty(&self, x: Id) -> Result<ValueType> {
        self.eg[x].data.ty.clone().ok_or_else(|| err("operand has no known type"))
    }

    /// The static shape of a class.
    pub fn shape(&self, x: Id) -> Result<Vec<usize>> {
        self.ty(x)?.shape.ok_or_else(|| err("operand shape is not static"))
    }

    pub fn rank(&self, x: Id) -> Result<usize> {
        Ok(self.shape(x)?.len())
    }

    pub fn dtype(&self, x: Id) -> Result<DType> {
        Ok(self.ty(x)?.dtype)
    }

    pub fn numel(&self, x: Id) -> Result<usize> {
        Ok(self.shape(x)?.iter().product())
    }

    /// The value of a class when it is a (folded) constant.
    pub fn value(&self, x: Id) -> Option<Arc<Tensor>> {
        self.eg[x].data.value.clone()
    }

    /// A constant operand as i64s (shapes, axes, pads...), or an error naming `what`.
    pub fn const_i64s(&self, x: Id, what: &str) -> Result<Vec<i64>> {
        self.value(x)
            .map(|t| t.to_i64_vec())
            .ok_or_else(|| err(format!("{what} must be a constant to lower with static shapes")))
    }

    /// A constant operand as f64s.
    pub fn const_f64s(&self, x: Id, what: &str) -> Result<Vec<f64>> {
        self.value(x)
            .map(|t| t.to_f64_vec())
            .ok_or_else(|| err(format!("{what} must be a constant to lower with static shapes")))
    }

    /// The atoms (with their inputs) in class `x`, for algebra rules.
    pub fn atoms_in(&self, x: Id) -> Vec<(Atom, Vec<Id>)> {
        self.eg[x]
            .nodes
            .iter()
            .filter_map(|n| match n {
                Term::Atom(i, ch) => self.eg.analysis.atoms.get(*i as usize).map(|a| (a.clone(), ch.clone())),
                _ => None,
            })
            .collect()
    }

    // ---- atoms -------------------------------------------------------------------------

    /// Adds an atom over `args` after checking that it infers.
    pub fn atom(&mut self, a: Atom, args: &[Id]) -> Result<Id> {
        // Type-check only: the analysis folds constants once, when the e-node is added.
        let kids: Vec<&crate::egraph::ClassData> = args.iter().map(|&c| &self.eg[c].data).collect();
        let tys: Option<Vec<&ValueType>> = kids.iter().map(|k| k.ty.as_ref()).collect();
        let why = match tys {
            None => Some("an operand has no type".to_string()),
            Some(tys) => {
                let facts: Vec<Option<ir::op::Fact>> = tys
                    .iter()
                    .zip(&kids)
                    .map(|(ty, k)| Some(ir::op::Fact { ty, value: k.value.as_deref() }))
                    .collect();
                match a.infer(&facts) {
                    Ok(out) if out.len() == 1 => None,
                    Ok(_) => Some("inference failed".to_string()),
                    Err(e) => Some(e.to_string()),
                }
            }
        };
        if let Some(why) = why {
            let tys: Vec<String> =
                kids.iter().map(|k| k.ty.as_ref().map_or("?".to_string(), |t| t.to_string())).collect();
            return Err(Error::Internal(format!("{} over ({}) is invalid: {why}", a.kind().name(), tys.join(", "))));
        }
        let i = self.eg.analysis.intern_atom(a);
        Ok(self.eg.add(Term::Atom(i, args.to_vec())))
    }

    /// A constant.
    pub fn konst(&mut self, t: Tensor) -> Id {
        self.konst_arc(Arc::new(t))
    }

    pub fn konst_arc(&mut self, t: Arc<Tensor>) -> Id {
        let i = self.eg.analysis.intern_const(t);
        self.eg.add(Term::Const(i))
    }

    /// A 0-d constant of `dtype` holding `v` (converted with Cast semantics).
    pub fn scalar(&mut self, dtype: DType, v: f64) -> Result<Id> {
        let t = Tensor::from_vec(vec![], vec![v])?.cast(dtype);
        Ok(self.konst(t))
    }

    /// A constant of `shape` filled with `v` (a broadcast view of one element).
    pub fn full(&mut self, dtype: DType, shape: &[usize], v: f64) -> Result<Id> {
        let s = self.scalar(dtype, v)?;
        self.broadcast_to(s, shape)
    }

    /// The indices along `axis` of a tensor of `shape`, as `dtype` (an iota constant).
    pub fn iota(&mut self, dtype: DType, shape: &[usize], axis: usize) -> Result<Id> {
        let n = *shape.get(axis).ok_or_else(|| err("iota axis out of range"))?;
        let line = Tensor::from_vec(vec![n], (0..n).map(|i| i as f64).collect::<Vec<_>>())?.cast(dtype);
        let mut s1 = vec![1usize; shape.len()];
        s1[axis] = n;
        let c = self.konst(line.reshaped(s1)?);
        self.broadcast_to(c, shape)
    }

    pub fn view(&mut self, x: Id, v: ViewMap) -> Result<Id> {
        let n = self.numel(x)?;
        if v.is_identity(n) && self.shape(x)? == v.shape {
            return Ok(x);
        }
        self.atom(Atom::View(v), &[x])
    }

    pub fn unary(&mut self, f: UnaryFn, x: Id) -> Result<Id> {
        self.atom(Atom::Unary(f), &[x])
    }

    /// An elementwise binary atom with numpy broadcasting of the operands.
    pub fn binary(&mut self, f: BinaryFn, a: Id, b: Id) -> Result<Id> {
        let (sa, sb) = (self.shape(a)?, self.shape(b)?);
        let out = ir::shape::broadcast(&sa, &sb)?;
        let a = self.broadcast_to(a, &out)?;
        let b = self.broadcast_to(b, &out)?;
        self.atom(Atom::Binary(f), &[a, b])
    }

    /// `f(x, v)` with a scalar `v` of x's dtype.
    pub fn binary_scalar(&mut self, f: BinaryFn, x: Id, v: f64) -> Result<Id> {
        let s = self.scalar(self.dtype(x)?, v)?;
        self.binary(f, x, s)
    }

    pub fn add(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary(BinaryFn::Add, a, b)
    }
    pub fn sub(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary(BinaryFn::Sub, a, b)
    }
    pub fn mul(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary(BinaryFn::Mul, a, b)
    }
    pub fn div(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary(BinaryFn::Div, a, b)
    }
    pub fn max(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary(BinaryFn::Max, a, b)
    }
    pub fn min(&mut self, a: Id, b: Id) -> Result<Id> {
        self.binary(BinaryFn::Min, a, b)
    }

    /// `cond ? a : b` with numpy broadcasting of all three.
    pub fn select(&mut self, c: Id, a: Id, b: Id) -> Result<Id> {
        let s = ir::shape::broadcast_all([&self.shape(c)?[..], &self.shape(a)?[..], &self.shape(b)?[..]])?;
        let c = self.broadcast_to(c, &s)?;
        let a = self.broadcast_to(a, &s)?;
        let b = self.broadcast_to(b, &s)?;
        self.atom(Atom::Select, &[c, a, b])
    }

    pub fn cast(&mut self, x: Id, to: DType) -> Result<Id> {
        if self.dtype(x)? == to {
            return Ok(x);
        }
        self.atom(Atom::Cast(to), &[x])
    }

    /// A reduction over `axes` (sorted, deduplicated); `keepdims = false` drops them.
    pub fn reduce(&mut self, op: ReduceFn, x: Id, axes: &[usize], keepdims: bool) -> Result<Id> {
        let shape = self.shape(x)?;
        let mut axes = axes.to_vec();
        axes.sort_unstable();
        axes.dedup();
        if axes.is_empty() && !matches!(op, ReduceFn::ArgMax | ReduceFn::ArgMin) {
            return Ok(x);
        }
        let r = self.atom(Atom::Reduce { op, axes: axes.clone() }, &[x])?;
        if keepdims {
            return Ok(r);
        }
        let out: Vec<usize> = shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &n)| n).collect();
        self.reshape(r, &out)
    }

    /// Batched contraction with numpy `matmul` semantics (1-D operands promoted, batch
    /// dims broadcast).
    pub fn matmul(&mut self, a: Id, b: Id) -> Result<Id> {
        let (mut sa, mut sb) = (self.shape(a)?, self.shape(b)?);
        let (ra, rb) = (sa.len(), sb.len());
        if ra == 0 || rb == 0 {
            return Err(err("MatMul operands must have rank >= 1"));
        }
        let mut a = a;
        let mut b = b;
        if ra == 1 {
            sa = vec![1, sa[0]];
            a = self.reshape(a, &sa)?;
        }
        if rb == 1 {
            sb = vec![sb[0], 1];
            b = self.reshape(b, &sb)?;
        }
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        if k != k2 {
            return Err(err(format!("MatMul inner dims differ: {k} and {k2}")));
        }
        let batch = ir::shape::broadcast(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
        let mut fa = batch.clone();
        fa.extend([m, k]);
        let mut fb = batch.clone();
        fb.extend([k, n]);
        let a = self.broadcast_to(a, &fa)?;
        let b = self.broadcast_to(b, &fb)?;
        let y = self.atom(Atom::MatMul, &[a, b])?;
        let mut out = batch;
        if ra > 1 {
            out.push(m);
        }
        if rb > 1 {
            out.push(n);
        }
        self.reshape(y, &out)
    }

    // ---- views -------------------------------------------------------------------------

    pub fn reshape(&mut self, x: Id, shape: &[usize]) -> Result<Id> {
        let n = self.numel(x)?;
        if shape.iter().product::<usize>() != n {
            return Err(err(format!("cannot reshape {n} elements to {shape:?}")));
        }
        self.view(x, ViewMap::identity(shape))
    }

    /// Output axis `i` is input axis `perm[i]`.
    pub fn transpose(&mut self, x: Id, perm: &[usize]) -> Result<Id> {
        let s = self.shape(x)?;
        if perm.len() != s.len() || {
            let mut p = perm.to_vec();
            p.sort_unstable();
            p != (0..s.len()).collect::<Vec<_>>()
        } {
            return Err(err(format!("{perm:?} is not a permutation of {} axes", s.len())));
        }
        let st = row_major(&s);
        self.view(
            x,
            ViewMap {
                shape: perm.iter().map(|&p| s[p]).collect(),
                strides: perm.iter().map(|&p| st[p]).collect(),
                offset: 0,
                guards: vec![],
                pad: 0.0,
            },
        )
    }

    /// Numpy broadcast of `x` to `shape` (stride 0 on new and size-1 axes).
    pub fn broadcast_to(&mut self, x: Id, shape: &[usize]) -> Result<Id> {
        let s = self.shape(x)?;
        if s == shape {
            return Ok(x);
        }
        if s.len() > shape.len() {
            return Err(err(format!("cannot broadcast {s:?} to {shape:?}")));
        }
        let st = row_major(&s);
        let lead = shape.len() - s.len();
        let mut strides = vec![0i64; shape.len()];
        for (i, (&n, &t)) in s.iter().zip(&shape[lead..]).enumerate() {
            if n == t {
                strides[lead + i] = if n == 1 { 0 } else { st[i] };
            } else if n != 1 {
                return Err(err(format!("cannot broadcast {s:?} to {shape:?}")));
            }
        }
        self.view(x, ViewMap { shape: shape.to_vec(), strides, offset: 0, guards: vec![], pad: 0.0 })
    }

    /// Per axis `(start, len, step)` with `start` a valid index when `len > 0` (negative
    /// steps walk backwards).
    pub fn strided(&mut self, x: Id, axes: &[(i64, usize, i64)]) -> Result<Id> {
        let s = self.shape(x)?;
        if axes.len() != s.len() {
            return Err(err("strided slice needs one (start, len, step) per axis"));
        }
        let st = row_major(&s);
        let mut offset = 0i64;
        let mut shape = Vec::new();
        let mut strides = Vec::new();
        for (d, &(start, len, step)) in axes.iter().enumerate() {
            if len > 0 {
                let last = start + step * (len as i64 - 1);
                if start < 0 || start >= s[d] as i64 || last < 0 || last >= s[d] as i64 {
                    return Err(err(format!("slice of axis {d} ({start}, {len}, {step}) leaves extent {}", s[d])));
                }
                offset += start * st[d];
            }
            shape.push(len);
            strides.push(step * st[d]);
        }
        if shape.contains(&0) {
            offset = 0;
        }
        self.view(x, ViewMap { shape, strides, offset, guards: vec![], pad: 0.0 })
    }

    /// Constant padding: `begins[d]`/`ends[d]` elements before/after axis d (negative crops).
    pub fn pad(&mut self, x: Id, begins: &[i64], ends: &[i64], value: f64) -> Result<Id> {
        let s = self.shape(x)?;
        let r = s.len();
        if begins.len() != r || ends.len() != r {
            return Err(err("pad needs begin and end per axis"));
        }
        let st = row_major(&s);
        let mut shape = Vec::new();
        let mut guards = Vec::new();
        let mut offset = 0i64;
        for d in 0..r {
            let n = s[d] as i64 + begins[d] + ends[d];
            if n < 0 {
                return Err(err(format!("padding axis {d} of extent {} by ({}, {}) is negative", s[d], begins[d], ends[d])));
            }
            shape.push(n as usize);
            offset -= begins[d] * st[d];
            if begins[d] > 0 || ends[d] > 0 {
                let mut coefs = vec![0i64; r];
                coefs[d] = 1;
                guards.push(Guard { coefs, offset: -begins[d], bound: s[d] as i64 });
            }
        }
        if shape.contains(&0) {
            offset = 0;
            guards.clear();
        }
        self.view(x, ViewMap { shape, strides: st, offset, guards, pad: value })
    }

    /// Reverses `axis`.
    pub fn flip(&mut self, x: Id, axis: usize) -> Result<Id> {
        let s = self.shape(x)?;
        let mut axes: Vec<(i64, usize, i64)> = s.iter().map(|&n| (0, n, 1)).collect();
        let n = *s.get(axis).ok_or_else(|| err("flip axis out of range"))?;
        axes[axis] = (n as i64 - 1, n, -1);
        self.strided(x, &axes)
    }

    /// Concatenation along `axis`: each part padded to the full extent (with the neutral
    /// element of the combining op: -0.0 for floats, 0 for integers, false for bool) and
    /// combined by Add (Or for bool).
    pub fn concat(&mut self, xs: &[Id], axis: usize) -> Result<Id> {
        let first = *xs.first().ok_or_else(|| err("concat of nothing"))?;
        let dtype = self.dtype(first)?;
        let shapes: Vec<Vec<usize>> = xs.iter().map(|&x| self.shape(x)).collect::<Result<_>>()?;
        let total: usize = shapes.iter().map(|s| s.get(axis).copied().unwrap_or(0)).sum();
        let parts: Vec<(Id, usize)> =
            xs.iter().zip(&shapes).filter(|(_, s)| s.get(axis) != Some(&0)).map(|(&x, s)| (x, s[axis])).collect();
        if parts.len() == 1 {
            return Ok(parts[0].0);
        }
        if parts.is_empty() {
            return Ok(first);
        }
        let (pad, f) = match dtype {
            DType::Bool => (0.0, BinaryFn::Or),
            d if d.is_float() => (-0.0, BinaryFn::Add),
            _ => (0.0, BinaryFn::Add),
        };
        let r = shapes[0].len();
        let mut acc: Option<Id> = None;
        let mut at = 0usize;
        for (x, n) in parts {
            let mut b = vec![0i64; r];
            let mut e = vec![0i64; r];
            b[axis] = at as i64;
            e[axis] = (total - at - n) as i64;
            at += n;
            let p = self.pad(x, &b, &e, pad)?;
            acc = Some(match acc {
                None => p,
                Some(a) => self.atom(Atom::Binary(f), &[a, p])?,
            });
        }
        acc.ok_or_else(|| err("concat of nothing"))
    }

    /// ONNX `Gather`: `out[a.., i.., b..] = x[a.., idx[i..], b..]` along `axis`, negative
    /// indices counted from the end.
    pub fn take(&mut self, x: Id, idx: Id, axis: usize) -> Result<Id> {
        let xs = self.shape(x)?;
        let is = self.shape(idx)?;
        let n = *xs.get(axis).ok_or_else(|| err("gather axis out of range"))?;
        let idx = self.cast(idx, DType::I64)?;
        let idx = self.normalize_index(idx, n)?;
        // Data viewed as [a.., n, (1 per index dim)..., b..] broadcast over the index dims;
        // index viewed as [1.., idx.., 1..] broadcast over a and b; gather on `axis`.
        let mut out: Vec<usize> = xs[..axis].to_vec();
        out.extend(&is);
        out.extend(&xs[axis + 1..]);
        let mut dshape: Vec<usize> = xs[..axis].to_vec();
        dshape.push(n);
        dshape.extend(std::iter::repeat_n(1, is.len().saturating_sub(1)));
        dshape.extend(&xs[axis + 1..]);
        let mut gshape = out.clone();
        if is.is_empty() {
            // Scalar index: gather one element on the axis, then drop it.
            gshape = xs[..axis].to_vec();
            gshape.push(1);
            gshape.extend(&xs[axis + 1..]);
        }
        let mut ishape = vec![1usize; axis];
        ishape.extend(if is.is_empty() { vec![1] } else { is.clone() });
        ishape.extend(std::iter::repeat_n(1, xs.len() - axis - 1));
        let d = self.reshape(x, &dshape)?;
        // Broadcast the data's singleton index dims: extent of the gather output but along the
        // gathered axis, which keeps n.
        let mut dfull = gshape.clone();
        dfull[axis] = n;
        let d = self.broadcast_to(d, &dfull)?;
        let i = self.reshape(idx, &ishape)?;
        let i = self.broadcast_to(i, &gshape)?;
        let g = self.atom(Atom::Gather { axis }, &[d, i])?;
        self.reshape(g, &out)
    }

    /// `i < 0 ? i + n : i` for an i64 index tensor.
    pub fn normalize_index(&mut self, idx: Id, n: usize) -> Result<Id> {
        if let Some(v) = self.value(idx)
            && v.to_i64_vec().iter().all(|&i| i >= 0)
        {
            return Ok(idx);
        }
        let zero = self.scalar(DType::I64, 0.0)?;
        let neg = self.binary(BinaryFn::Lt, idx, zero)?;
        let shifted = self.binary_scalar(BinaryFn::Add, idx, n as f64)?;
        self.select(neg, shifted, idx)
    }
}
