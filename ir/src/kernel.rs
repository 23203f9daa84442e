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

use crate::atom::{Atom, BinaryFn, ReduceFn, ScatterMode, UnaryFn};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::fmt_shape;
use crate::tensor::{Elem, Tensor, cast_elem, checked_numel};
use std::fmt;

/// `offset + Σ coefs[a] · i[a]` over the kernel's axes (output axes, then reduction axes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Affine {
    pub offset: i64,
    pub coefs: Vec<i64>,
}

impl Affine {
    /// The smallest and largest value over the box `0 <= i_a < extents[a]` of the leading
    /// axes `extents` gives (exact, in i128; the coefficients of later axes are ignored);
    /// `None` when the box is empty.
    pub fn range(&self, extents: &[i64]) -> Option<(i128, i128)> {
        bounds(i128::from(self.offset), self.coefs.iter().zip(extents).map(|(&c, &n)| (c, i128::from(n))))
    }

    /// The value at axis indices `i`.
    pub fn eval(&self, i: &[usize]) -> i64 {
        self.offset + self.coefs.iter().zip(i).map(|(c, &x)| c * x as i64).sum::<i64>()
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

/// The most domain points one evaluation step materializes (the domain is processed in
/// chunks along the first output axis; a single row may exceed it).
const CHUNK_POINTS: usize = 1 << 20;

/// Affine values, address arithmetic and their intervals stay within ±2^61 so that no
/// intermediate sum or product overflows i64.
const AFFINE_LIMIT: i128 = 1 << 61;

impl Kernel {
    /// The number of output axes (`R`) and reduction axes (`S`).
    pub fn rank(&self) -> (usize, usize) {
        (self.out_shape.len(), self.red_shape.len())
    }

    /// The buffer with index `buf` (inputs first, then the output).
    pub fn buffer(&self, buf: usize) -> Option<&Buffer> {
        if buf < self.inputs.len() { self.inputs.get(buf) } else if buf == self.inputs.len() { Some(&self.output) } else { None }
    }

    /// The same kernel with its output axes in another order: axis `j` of the result is
    /// axis `order[j]` of `self` (`order` a permutation of `0..R`; the reduction axes keep
    /// their place). Every index, guard, store and [`Expr::Axis`] is renumbered, so the
    /// result computes the same output buffer, point for point.
    pub fn reorder_out_axes(&self, order: &[usize]) -> Kernel {
        let r = self.out_shape.len();
        let all: Vec<usize> = order.iter().copied().chain(r..r + self.red_shape.len()).collect();
        Kernel { out_shape: order.iter().filter_map(|&a| self.out_shape.get(a).copied()).collect(), ..self.permute_axes(&all) }
    }

    /// The same kernel with its reduction axes in another order: reduction axis `j` of the
    /// result is reduction axis `order[j]` of `self` (`order` a permutation of
    /// `0..red_shape.len()`). Every index and guard is renumbered, so the result computes
    /// the same sums (in another order: the same up to rounding).
    pub fn reorder_red_axes(&self, order: &[usize]) -> Kernel {
        let r = self.out_shape.len();
        let all: Vec<usize> = (0..r).chain(order.iter().map(|&a| r + a)).collect();
        Kernel { red_shape: order.iter().filter_map(|&a| self.red_shape.get(a).copied()).collect(), ..self.permute_axes(&all) }
    }

    /// Whether every load of `e` (but those `packed` says are read from a packed panel,
    /// which is flat) reads the reduction axes as one flat axis: each reduction axis's
    /// coefficient (of the index and of every guard) is the next one's times its extent.
    /// The Cranelift nest then runs them as one loop, and the cost model prices it so.
    pub fn reads_reduction_flat(&self, e: &Expr, packed: &dyn Fn(&Expr) -> bool) -> bool {
        let r = self.out_shape.len();
        let flat = |c: &[i64]| {
            let at = |a: usize| c.get(a).copied().unwrap_or(0);
            (1..self.red_shape.len()).all(|i| at(r + i - 1) == at(r + i) * self.red_shape[i] as i64)
        };
        match e {
            Expr::Load { index, guards, .. } => packed(e) || (flat(&index.coefs) && guards.iter().all(|g| flat(&g.expr.coefs))),
            Expr::Gather { .. } => false,
            Expr::Axis(a) => *a < r,
            Expr::Const { .. } | Expr::Acc => true,
            Expr::Unary(_, x) | Expr::Cast(_, x) => self.reads_reduction_flat(x, packed),
            Expr::Binary(_, x, y) => self.reads_reduction_flat(x, packed) && self.reads_reduction_flat(y, packed),
            Expr::Select(c, x, y) => [c, x, y].iter().all(|x| self.reads_reduction_flat(x, packed)),
        }
    }

    /// Indices, guards, store and [`Expr::Axis`] renumbered so that axis `j` (output axes,
    /// then reduction axes) is axis `perm[j]` of `self`; the shapes are left as they are.
    fn permute_axes(&self, perm: &[usize]) -> Kernel {
        // `to[a]`: where old axis `a` goes.
        let mut to: Vec<usize> = (0..perm.len()).collect();
        for (j, &a) in perm.iter().enumerate() {
            if let Some(t) = to.get_mut(a) {
                *t = j;
            }
        }
        // An index over the output axes only (a store, an epilogue load) keeps that length.
        let r = self.out_shape.len();
        let affine = |x: &Affine| {
            let len = if x.coefs.len() > r { perm.len() } else { r };
            let coefs: Vec<i64> = perm.iter().take(len).map(|&a| x.coefs.get(a).copied().unwrap_or(0)).collect();
            Affine { offset: x.offset, coefs }
        };
        fn expr(e: &Expr, affine: &dyn Fn(&Affine) -> Affine, to: &[usize]) -> Expr {
            let rec = |x: &Expr| Box::new(expr(x, affine, to));
            match e {
                Expr::Load { buf, index, guards, pad } => Expr::Load {
                    buf: *buf,
                    index: affine(index),
                    guards: guards.iter().map(|g| KGuard { expr: affine(&g.expr), bound: g.bound }).collect(),
                    pad: *pad,
                },
                Expr::Gather { buf, index, stride, extent, pos } => {
                    Expr::Gather { buf: *buf, index: affine(index), stride: *stride, extent: *extent, pos: rec(pos) }
                }
                Expr::Const { value, dtype } => Expr::Const { value: *value, dtype: *dtype },
                Expr::Axis(a) => Expr::Axis(to.get(*a).copied().unwrap_or(*a)),
                Expr::Unary(f, x) => Expr::Unary(*f, rec(x)),
                Expr::Binary(f, a, b) => Expr::Binary(*f, rec(a), rec(b)),
                Expr::Select(c, a, b) => Expr::Select(rec(c), rec(a), rec(b)),
                Expr::Cast(d, x) => Expr::Cast(*d, rec(x)),
                Expr::Acc => Expr::Acc,
            }
        }
        let body = match &self.body {
            Body::Compute { reduce, body, epilogue } => {
                Body::Compute { reduce: *reduce, body: expr(body, &affine, &to), epilogue: expr(epilogue, &affine, &to) }
            }
            Body::Scatter { data, mode, index, stride, extent, pos, value } => Body::Scatter {
                data: *data,
                mode: *mode,
                index: affine(index),
                stride: *stride,
                extent: *extent,
                pos: expr(pos, &affine, &to),
                value: expr(value, &affine, &to),
            },
        };
        Kernel {
            name: self.name.clone(),
            inputs: self.inputs.clone(),
            output: self.output.clone(),
            out_shape: self.out_shape.clone(),
            red_shape: self.red_shape.clone(),
            store: affine(&self.store),
            body,
        }
    }

    fn input_buffer(&self, buf: usize) -> Result<&Buffer> {
        self.inputs.get(buf).ok_or_else(|| {
            self.err(format!("reads buffer {buf}, but it has {} input buffers", self.inputs.len()))
        })
    }

    fn err(&self, msg: String) -> Error {
        Error::InvalidModel(format!("kernel '{}': {msg}", self.name))
    }

    /// Reference evaluation, with exactly the semantics of the atoms: `Unary`, `Binary`,
    /// `Select`, `Cast` and the reduction are computed by [`Atom::eval`] on tensors of the
    /// iteration domain, loads are [`crate::atom::ViewMap`] reads, a scatter is
    /// [`Atom::Scatter`] on the flat buffer. `inputs[i]` is buffer `i` (any shape; its
    /// flat data is used). The result is the flat output buffer: shape `[output.numel]`,
    /// zero where the store writes nothing (where it writes twice, the later point in
    /// row-major order wins). Out-of-range reads, writes and positions are errors.
    pub fn eval(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        if inputs.len() != self.inputs.len() {
            return Err(self.err(format!("takes {} inputs, got {}", self.inputs.len(), inputs.len())));
        }
        for (b, t) in self.inputs.iter().zip(inputs) {
            if b.dtype != t.dtype() || b.numel != t.numel() {
                return Err(Error::InvalidInput(format!(
                    "kernel '{}': buffer '{}' is {}[{}], got a {} tensor of {} elements",
                    self.name,
                    b.name,
                    b.dtype,
                    b.numel,
                    t.dtype(),
                    t.numel()
                )));
            }
        }
        checked_numel(&self.out_shape)?;
        checked_numel(&self.red_shape)?;
        match &self.body {
            Body::Compute { reduce, body, epilogue } => {
                self.eval_compute(inputs, *reduce, body, epilogue, CHUNK_POINTS)
            }
            Body::Scatter { data, mode, index, stride, extent, pos, value } => {
                self.eval_scatter(inputs, *data, *mode, index, *stride, *extent, pos, value)
            }
        }
    }

    fn eval_compute(
        &self,
        inputs: &[&Tensor],
        reduce: Option<ReduceFn>,
        body: &Expr,
        epilogue: &Expr,
        chunk_points: usize,
    ) -> Result<Tensor> {
        let (r, s) = self.rank();
        if reduce.is_none() && s != 0 {
            return Err(self.err(format!("has {s} reduction axes but no reduction")));
        }
        let mut out = Tensor::zeros(self.output.dtype, vec![self.output.numel])?;
        let rows = self.out_shape.first().copied().unwrap_or(1);
        if self.out_shape.contains(&0) {
            return Ok(out);
        }
        let row_points: usize = self.out_shape.iter().skip(1).chain(&self.red_shape).product::<usize>().max(1);
        let chunk = (chunk_points / row_points).clamp(1, rows);
        let mut start = 0;
        while start < rows {
            let n = chunk.min(rows - start);
            let mut out_dims = self.out_shape.clone();
            if let Some(d) = out_dims.first_mut() {
                *d = n;
            }
            let dom_dims: Vec<usize> = out_dims.iter().chain(&self.red_shape).copied().collect();
            let dom = Domain { dims: &dom_dims, start, kernel: self, inputs, acc: None };
            let b = dom.eval(body)?;
            let acc = match reduce {
                None => b,
                Some(op) => {
                    if matches!(op, ReduceFn::ArgMax | ReduceFn::ArgMin) && s != 1 {
                        return Err(self.err(format!("{} reduces {s} axes, it needs exactly one", op.name())));
                    }
                    let red = Atom::Reduce { op, axes: (r..r + s).collect() };
                    first(red.eval(&[Some(&b)])?)?.reshaped(out_dims.clone())?
                }
            };
            let dom = Domain { dims: &out_dims, start, kernel: self, inputs, acc: Some(&acc) };
            let y = dom.eval(epilogue)?;
            if y.dtype() != self.output.dtype {
                return Err(self.err(format!(
                    "epilogue computes {} but output '{}' is {}",
                    y.dtype(),
                    self.output.name,
                    self.output.dtype
                )));
            }
            let addrs = dom.affine(&self.store, "store")?;
            dom.check_addresses(&addrs, None, &self.output, "store")?;
            store(&mut out, &y, &addrs)?;
            start += n;
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_scatter(
        &self,
        inputs: &[&Tensor],
        data: usize,
        mode: ScatterMode,
        index: &Affine,
        stride: i64,
        extent: i64,
        pos: &Expr,
        value: &Expr,
    ) -> Result<Tensor> {
        let b = self.input_buffer(data)?;
        if b.dtype != self.output.dtype || b.numel != self.output.numel {
            return Err(self.err(format!(
                "scatters into a copy of '{}' ({}[{}]) but output '{}' is {}[{}]",
                b.name, b.dtype, b.numel, self.output.name, self.output.dtype, self.output.numel
            )));
        }
        let dom = Domain { dims: &self.out_shape, start: 0, kernel: self, inputs, acc: None };
        let p = dom.eval(pos)?;
        if p.dtype() != DType::I64 {
            return Err(self.err(format!("scatter position is {}, it must be i64", p.dtype())));
        }
        let v = dom.eval(value)?;
        if v.dtype() != self.output.dtype {
            return Err(self.err(format!("scatters {} values into {} output '{}'", v.dtype(), self.output.dtype, self.output.name)));
        }
        let base = dom.affine(index, "scatter index")?;
        let targets = dom.positions(&base, p.slice::<i64>()?, stride, extent, &self.output, "scatter")?;
        let n = targets.len();
        let data_t = inputs[data].clone().reshaped(vec![b.numel])?;
        let atom = Atom::Scatter { axis: 0, mode };
        first(atom.eval(&[Some(&data_t), Some(&Tensor::from_i64s(targets)), Some(&v.reshaped(vec![n])?)])?)
    }
}

fn first(v: Vec<Tensor>) -> Result<Tensor> {
    v.into_iter().next().ok_or_else(|| Error::Internal("atom gave no output".into()))
}

/// Writes `y` (row-major over the chunk) at `addrs` of `out` (same dtype, checked addresses).
fn store(out: &mut Tensor, y: &Tensor, addrs: &[i64]) -> Result<()> {
    fn put<T: Elem>(out: &mut Tensor, y: &Tensor, addrs: &[i64]) -> Result<()> {
        let shape = out.shape().to_vec();
        let mut data = std::mem::replace(out, Tensor::scalar(false)).into_data();
        let vals = y.slice::<T>()?;
        let o = T::slice_mut(&mut data).ok_or_else(|| Error::Internal("store dtype mismatch".into()))?;
        for (&a, &v) in addrs.iter().zip(vals) {
            if let Some(slot) = o.get_mut(a as usize) {
                *slot = v;
            }
        }
        *out = Tensor::new(shape, data)?;
        Ok(())
    }
    crate::with_dtype!(y.dtype(), T => put::<T>(out, y, addrs))
}

/// One evaluation step: expressions over a box of the iteration domain (`dims`, with the
/// first axis offset by `start`), as row-major tensors of shape `dims`.
struct Domain<'a> {
    dims: &'a [usize],
    start: usize,
    kernel: &'a Kernel,
    inputs: &'a [&'a Tensor],
    acc: Option<&'a Tensor>,
}

impl Domain<'_> {
    fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The affine's value at every point, row-major.
    fn affine(&self, a: &Affine, what: &str) -> Result<Vec<i64>> {
        let k = self.kernel;
        if a.coefs.len() != self.dims.len() {
            return Err(k.err(format!(
                "{what} index {} has {} coefficients for {} axes",
                fmt_affine(a),
                a.coefs.len(),
                self.dims.len()
            )));
        }
        let offset = a.offset as i128 + a.coefs.first().map_or(0, |&c| c as i128 * self.start as i128);
        match interval(&a.coefs, offset, self.dims) {
            Some((lo, hi)) if lo < -AFFINE_LIMIT || hi > AFFINE_LIMIT || offset.abs() > AFFINE_LIMIT => {
                return Err(k.err(format!("{what} index {} overflows", fmt_affine(a))));
            }
            None => return Ok(vec![]),
            _ => {}
        }
        let mut vals = Vec::with_capacity(self.numel());
        vals.push(offset as i64);
        for (&c, &n) in a.coefs.iter().zip(self.dims) {
            let mut next = Vec::with_capacity(vals.len() * n);
            for &v in &vals {
                next.extend((0..n as i64).map(|i| v + c * i));
            }
            vals = next;
        }
        Ok(vals)
    }

    /// Whether every guard holds, per point (`None`: no guards).
    fn guards(&self, guards: &[KGuard]) -> Result<Option<Vec<bool>>> {
        if guards.is_empty() {
            return Ok(None);
        }
        let mut ok = vec![true; self.numel()];
        for g in guards {
            let v = self.affine(&g.expr, "guard")?;
            for (o, &x) in ok.iter_mut().zip(&v) {
                *o &= x >= 0 && x < g.bound;
            }
        }
        Ok(Some(ok))
    }

    /// Checks every address (where `valid`) lies in `buf`.
    fn check_addresses(&self, addrs: &[i64], valid: Option<&[bool]>, buf: &Buffer, what: &str) -> Result<()> {
        let len = buf.numel as i64;
        for (p, &a) in addrs.iter().enumerate() {
            if (a < 0 || a >= len) && valid.is_none_or(|v| v.get(p).copied().unwrap_or(true)) {
                return Err(self.kernel.err(format!(
                    "{what} of buffer '{}' at element {a} of {len} (domain point {:?})",
                    buf.name,
                    self.point(p)
                )));
            }
        }
        Ok(())
    }

    /// The addresses `base + pos * stride`, checking `0 <= pos < extent` and the bounds.
    fn positions(&self, base: &[i64], pos: &[i64], stride: i64, extent: i64, buf: &Buffer, what: &str) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(base.len());
        for (p, (&b, &i)) in base.iter().zip(pos).enumerate() {
            if i < 0 || i >= extent {
                return Err(Error::InvalidModel(format!(
                    "kernel '{}': {what} position {i} is out of range 0..{extent} for buffer '{}' (domain point {:?})",
                    self.kernel.name,
                    buf.name,
                    self.point(p)
                )));
            }
            let a = b as i128 + i as i128 * stride as i128;
            if a < 0 || a >= buf.numel as i128 {
                return Err(self.kernel.err(format!(
                    "{what} of buffer '{}' at element {a} of {} (domain point {:?})",
                    buf.name,
                    buf.numel,
                    self.point(p)
                )));
            }
            out.push(a as i64);
        }
        Ok(out)
    }

    /// The domain multi-index of flat point `p` (for errors).
    fn point(&self, mut p: usize) -> Vec<usize> {
        let mut idx = vec![0; self.dims.len()];
        for (d, &n) in self.dims.iter().enumerate().rev() {
            idx[d] = p % n.max(1);
            p /= n.max(1);
        }
        if let Some(i) = idx.first_mut() {
            *i += self.start;
        }
        idx
    }

    fn eval(&self, e: &Expr) -> Result<Tensor> {
        let k = self.kernel;
        let shape = self.dims.to_vec();
        let atom1 = |a: Atom, x: &Expr| -> Result<Tensor> { first(a.eval(&[Some(&self.eval(x)?)])?) };
        match e {
            Expr::Load { buf, index, guards, pad } => {
                let b = k.input_buffer(*buf)?;
                let addrs = self.affine(index, "load")?;
                let valid = self.guards(guards)?;
                self.check_addresses(&addrs, valid.as_deref(), b, "load")?;
                crate::with_data!(self.inputs[*buf].data(), v => {
                    Tensor::from_vec(shape, read(v, &addrs, valid.as_deref(), *pad))
                })
            }
            Expr::Gather { buf, index, stride, extent, pos } => {
                let b = k.input_buffer(*buf)?;
                let p = self.eval(pos)?;
                if p.dtype() != DType::I64 {
                    return Err(k.err(format!("gather position is {}, it must be i64", p.dtype())));
                }
                let base = self.affine(index, "gather")?;
                let addrs = self.positions(&base, p.slice::<i64>()?, *stride, *extent, b, "gather")?;
                crate::with_data!(self.inputs[*buf].data(), v => Tensor::from_vec(shape, read(v, &addrs, None, 0.0)))
            }
            Expr::Const { value, dtype } => Tensor::from_fn_f64(*dtype, shape, |_| *value),
            Expr::Axis(a) => {
                if *a >= self.dims.len() {
                    return Err(k.err(format!("axis i{a} used where there are {} axes", self.dims.len())));
                }
                let mut coefs = vec![0; self.dims.len()];
                coefs[*a] = 1;
                Tensor::from_vec(shape, self.affine(&Affine { offset: 0, coefs }, "axis")?)
            }
            Expr::Unary(f, x) => atom1(Atom::Unary(*f), x),
            Expr::Cast(d, x) => atom1(Atom::Cast(*d), x),
            Expr::Binary(f, a, b) => first(Atom::Binary(*f).eval(&[Some(&self.eval(a)?), Some(&self.eval(b)?)])?),
            Expr::Select(c, a, b) => {
                first(Atom::Select.eval(&[Some(&self.eval(c)?), Some(&self.eval(a)?), Some(&self.eval(b)?)])?)
            }
            Expr::Acc => match self.acc {
                Some(t) => Ok(t.clone()),
                None => Err(k.err("uses acc outside the epilogue".into())),
            },
        }
    }
}

/// `v[addrs[p]]` where `valid[p]` (addresses checked), else `pad` converted to `T`.
fn read<T: Elem>(v: &[T], addrs: &[i64], valid: Option<&[bool]>, pad: f64) -> Vec<T> {
    let pad: T = cast_elem::<f64, T>(pad);
    match valid {
        None => addrs.iter().map(|&a| v.get(a as usize).copied().unwrap_or(pad)).collect(),
        Some(ok) => addrs
            .iter()
            .zip(ok)
            .map(|(&a, &ok)| if ok { v.get(a as usize).copied().unwrap_or(pad) } else { pad })
            .collect(),
    }
}

/// The smallest and largest value of `offset + Σ coefs·i` over `0 <= i < dims` (`None`
/// for an empty box).
fn interval(coefs: &[i64], offset: i128, dims: &[usize]) -> Option<(i128, i128)> {
    if dims.contains(&0) {
        return None;
    }
    bounds(offset, coefs.iter().zip(dims).map(|(&c, &n)| (c, n as i128)))
}

/// The smallest and largest value of `offset + sum c * i` over `0 <= i < n` for each
/// (coefficient `c`, extent `n`) term, exact in i128; `None` when an extent is 0.
fn bounds(offset: i128, terms: impl Iterator<Item = (i64, i128)>) -> Option<(i128, i128)> {
    let (mut lo, mut hi) = (offset, offset);
    for (c, n) in terms {
        if n == 0 {
            return None;
        }
        let span = i128::from(c) * (n - 1);
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    Some((lo, hi))
}

impl Expr {
    /// The dtype of the expression's value in `kernel`; `acc` is the reduced dtype (only in
    /// an epilogue). Checks operand dtypes: binary operands and select branches agree, a
    /// select condition is bool, gather positions are i64.
    pub fn dtype(&self, kernel: &Kernel, acc: Option<DType>) -> Result<DType> {
        Ok(match self {
            Expr::Load { buf, .. } => kernel.input_buffer(*buf)?.dtype,
            Expr::Gather { buf, pos, .. } => {
                let p = pos.dtype(kernel, acc)?;
                if p != DType::I64 {
                    return Err(kernel.err(format!("gather position is {p}, it must be i64")));
                }
                kernel.input_buffer(*buf)?.dtype
            }
            Expr::Const { dtype, .. } => *dtype,
            Expr::Axis(_) => DType::I64,
            Expr::Unary(f, x) => {
                let d = x.dtype(kernel, acc)?;
                match f {
                    UnaryFn::IsNaN => DType::Bool,
                    UnaryFn::Not if d != DType::Bool => {
                        return Err(kernel.err(format!("Not of a {d} operand, it needs bool")));
                    }
                    _ => d,
                }
            }
            Expr::Binary(f, a, b) => {
                let (da, db) = (a.dtype(kernel, acc)?, b.dtype(kernel, acc)?);
                if da != db {
                    return Err(kernel.err(format!("{} of {da} and {db} operands", f.name())));
                }
                if f.is_comparison() { DType::Bool } else { da }
            }
            Expr::Select(c, a, b) => {
                let dc = c.dtype(kernel, acc)?;
                let (da, db) = (a.dtype(kernel, acc)?, b.dtype(kernel, acc)?);
                if dc != DType::Bool || da != db {
                    return Err(kernel.err(format!("select of a {dc} condition and {da}, {db} branches")));
                }
                da
            }
            Expr::Cast(d, x) => {
                x.dtype(kernel, acc)?;
                *d
            }
            Expr::Acc => acc.ok_or_else(|| kernel.err("uses acc outside the epilogue".into()))?,
        })
    }
}

/// Checks a kernel's consistency (ranks, buffers, dtypes) and proves every load, gather,
/// scatter and store index in bounds for the static shapes; a `Compute` store must also be
/// injective (distinct output points are stored at distinct addresses).
pub fn verify(k: &Kernel) -> Result<()> {
    let (r, s) = k.rank();
    let body_dims: Vec<usize> = k.out_shape.iter().chain(&k.red_shape).copied().collect();
    checked_numel(&body_dims).map_err(|e| e.context(format!("kernel '{}'", k.name)))?;
    match &k.body {
        Body::Compute { reduce, body, epilogue } => {
            check_expr(k, body, &body_dims, false, "body")?;
            check_expr(k, epilogue, &k.out_shape, true, "epilogue")?;
            let bt = body.dtype(k, None)?;
            let acc = match reduce {
                None if s != 0 => return Err(k.err(format!("has {s} reduction axes but no reduction"))),
                None => bt,
                Some(op @ (ReduceFn::ArgMax | ReduceFn::ArgMin)) => {
                    if s != 1 {
                        return Err(k.err(format!("{} reduces {s} axes, it needs exactly one", op.name())));
                    }
                    DType::I64
                }
                Some(op @ (ReduceFn::Sum | ReduceFn::Prod)) if bt == DType::Bool => {
                    return Err(k.err(format!("{} reduction of bool", op.name())));
                }
                Some(_) => bt,
            };
            let et = epilogue.dtype(k, Some(acc))?;
            if et != k.output.dtype {
                return Err(k.err(format!("stores {et} into output '{}' of {}", k.output.name, k.output.dtype)));
            }
            check_coefs(k, &k.store, r, "store")?;
            if let Some((lo, hi)) = interval(&k.store.coefs, k.store.offset as i128, &k.out_shape) {
                check_range(k, &k.output, "store", lo, hi)?;
            }
            check_injective(k)?;
        }
        Body::Scatter { data, mode, index, stride, extent, pos, value } => {
            let b = k.input_buffer(*data)?;
            if b.dtype != k.output.dtype || b.numel != k.output.numel {
                return Err(k.err(format!(
                    "scatters into a copy of '{}' ({}[{}]) but output '{}' is {}[{}]",
                    b.name, b.dtype, b.numel, k.output.name, k.output.dtype, k.output.numel
                )));
            }
            if s != 0 {
                return Err(k.err(format!("a scatter has no reduction axes, got {s}")));
            }
            if *mode != ScatterMode::Replace && k.output.dtype == DType::Bool {
                return Err(k.err(format!("scatter {} of bool", mode.name())));
            }
            check_expr(k, pos, &k.out_shape, false, "scatter position")?;
            check_expr(k, value, &k.out_shape, false, "scatter value")?;
            let pt = pos.dtype(k, None)?;
            if pt != DType::I64 {
                return Err(k.err(format!("scatter position is {pt}, it must be i64")));
            }
            let vt = value.dtype(k, None)?;
            if vt != k.output.dtype {
                return Err(k.err(format!("scatters {vt} values into output '{}' of {}", k.output.name, k.output.dtype)));
            }
            check_coefs(k, index, r, "scatter")?;
            check_indexed(k, &k.output, "scatter", index, *stride, *extent, &k.out_shape)?;
        }
    }
    Ok(())
}

fn check_coefs(k: &Kernel, a: &Affine, axes: usize, what: &str) -> Result<()> {
    if a.coefs.len() != axes {
        return Err(k.err(format!(
            "{what} index {} has {} coefficients for {axes} axes",
            fmt_affine(a),
            a.coefs.len()
        )));
    }
    Ok(())
}

fn check_range(k: &Kernel, buf: &Buffer, what: &str, lo: i128, hi: i128) -> Result<()> {
    if lo < 0 || hi >= buf.numel as i128 {
        return Err(k.err(format!(
            "{what} of buffer '{}' may touch elements {lo}..={hi}, outside 0..{}",
            buf.name, buf.numel
        )));
    }
    Ok(())
}

/// `index + pos * stride` for `0 <= pos < extent` over `dims` lies in `buf`.
fn check_indexed(k: &Kernel, buf: &Buffer, what: &str, index: &Affine, stride: i64, extent: i64, dims: &[usize]) -> Result<()> {
    if extent < 1 {
        return Err(k.err(format!("{what} of buffer '{}' has extent {extent}", buf.name)));
    }
    if let Some((lo, hi)) = interval(&index.coefs, index.offset as i128, dims) {
        let span = stride as i128 * (extent as i128 - 1);
        check_range(k, buf, what, lo + span.min(0), hi + span.max(0))?;
    }
    Ok(())
}

/// Checks ranks, axes, buffers and bounds of every load and gather of `e` over `dims`.
fn check_expr(k: &Kernel, e: &Expr, dims: &[usize], epilogue: bool, what: &str) -> Result<()> {
    let n = dims.len();
    match e {
        Expr::Load { buf, index, guards, .. } => {
            let b = k.input_buffer(*buf)?;
            check_coefs(k, index, n, &format!("{what} load of '{}'", b.name))?;
            for g in guards {
                check_coefs(k, &g.expr, n, &format!("{what} load guard of '{}'", b.name))?;
            }
            if let Some((lo, hi)) = load_interval(index, guards, dims) {
                let plain = interval(&index.coefs, index.offset as i128, dims);
                let inside = |(lo, hi): (i128, i128)| lo >= 0 && hi < b.numel as i128;
                if !inside((lo, hi)) && !plain.is_some_and(inside) {
                    check_range(k, b, &format!("{what} load"), lo, hi)?;
                }
            }
        }
        Expr::Gather { buf, index, stride, extent, pos } => {
            let b = k.input_buffer(*buf)?;
            check_coefs(k, index, n, &format!("{what} gather of '{}'", b.name))?;
            check_indexed(k, b, &format!("{what} gather"), index, *stride, *extent, dims)?;
            check_expr(k, pos, dims, epilogue, what)?;
        }
        Expr::Const { .. } => {}
        Expr::Axis(a) => {
            if *a >= n {
                return Err(k.err(format!("{what} uses axis i{a} of {n}")));
            }
        }
        Expr::Unary(_, x) | Expr::Cast(_, x) => check_expr(k, x, dims, epilogue, what)?,
        Expr::Binary(_, a, b) => {
            check_expr(k, a, dims, epilogue, what)?;
            check_expr(k, b, dims, epilogue, what)?;
        }
        Expr::Select(c, a, b) => {
            check_expr(k, c, dims, epilogue, what)?;
            check_expr(k, a, dims, epilogue, what)?;
            check_expr(k, b, dims, epilogue, what)?;
        }
        Expr::Acc => {
            if !epilogue {
                return Err(k.err(format!("{what} uses acc outside the epilogue")));
            }
        }
    }
    Ok(())
}

/// Whether a load with (non-empty) `guards` stays inside a buffer of `numel` elements
/// wherever its guards hold, over `k`'s whole iteration space (see [`load_interval`]):
/// then it needs no bounds check of its own.
pub fn guarded_in_bounds(k: &Kernel, index: &Affine, guards: &[KGuard], numel: usize) -> bool {
    if guards.is_empty() {
        return false;
    }
    let dims: Vec<usize> = k.out_shape.iter().chain(&k.red_shape).copied().collect();
    matches!(load_interval(index, guards, &dims), Some((lo, hi)) if lo >= 0 && hi < numel as i128)
}

/// An interval holding every index a guarded load reads over `dims` (`None`: it never
/// reads). The index is written `residual + Σ λ_g · guard_g` with each λ found greedily;
/// where the load happens each guard lies in `[0, bound)`, which bounds its part. The
/// verifier checks loads with it; code generators use it to drop bounds checks at the
/// points where the guards hold.
pub fn load_interval(index: &Affine, guards: &[KGuard], dims: &[usize]) -> Option<(i128, i128)> {
    let mut gr = Vec::with_capacity(guards.len());
    for g in guards {
        let (glo, ghi) = interval(&g.expr.coefs, g.expr.offset as i128, dims)?;
        let (lo, hi) = (glo.max(0), ghi.min(g.bound as i128 - 1));
        if lo > hi {
            return None; // This guard never holds.
        }
        gr.push((lo, hi));
    }
    interval(&index.coefs, 0, dims)?;
    let mut res: Vec<i128> = index.coefs.iter().map(|&c| c as i128).collect();
    let mut off = index.offset as i128;
    let (mut lo, mut hi) = (0i128, 0i128);
    for (g, &(glo, ghi)) in guards.iter().zip(&gr) {
        let gc: Vec<i128> = g.expr.coefs.iter().map(|&c| c as i128).collect();
        let Some(a) = gc.iter().position(|&c| c != 0) else { continue };
        let Some(&ra) = res.get(a) else { continue };
        if ra % gc[a] != 0 || ra == 0 {
            continue;
        }
        let lam = ra / gc[a];
        let next: Vec<i128> = res.iter().zip(&gc).map(|(r, c)| r - lam * c).collect();
        if gc.iter().zip(&next).any(|(&c, &x)| c != 0 && x != 0) {
            continue;
        }
        res = next;
        off -= lam * g.expr.offset as i128;
        let (a, b) = (lam * glo, lam * ghi);
        lo += a.min(b);
        hi += a.max(b);
    }
    let (mut rlo, mut rhi) = (off, off);
    for (&c, &n) in res.iter().zip(dims) {
        let span = c * (n as i128 - 1);
        if span < 0 {
            rlo += span;
        } else {
            rhi += span;
        }
    }
    Some((lo + rlo, hi + rhi))
}

/// A sufficient condition: sorted by |coef|, each axis of extent > 1 steps over the whole
/// span of the smaller ones (a mixed-radix layout, row-major being the normal case).
fn check_injective(k: &Kernel) -> Result<()> {
    if k.out_shape.contains(&0) {
        return Ok(());
    }
    let mut axes: Vec<(i128, usize, usize)> = k
        .store
        .coefs
        .iter()
        .zip(&k.out_shape)
        .enumerate()
        .filter(|(_, (_, n))| **n > 1)
        .map(|(a, (&c, &n))| ((c as i128).abs(), n, a))
        .collect();
    axes.sort();
    let mut span = 0i128;
    for (c, n, a) in axes {
        if c <= span {
            return Err(k.err(format!(
                "store {} into buffer '{}' is not injective over {}: axis i{a} (coefficient {c}) overlaps the smaller axes",
                fmt_affine(&k.store),
                k.output.name,
                fmt_shape(&k.out_shape)
            )));
        }
        span += c * (n as i128 - 1);
    }
    Ok(())
}

/// `4 + 3*i0 - i2`.
fn fmt_affine(a: &Affine) -> String {
    let mut s = String::new();
    for (i, &c) in a.coefs.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let (sign, m) = if c < 0 { ("-", c.unsigned_abs()) } else { ("+", c as u64) };
        if s.is_empty() {
            if c < 0 {
                s.push('-');
            }
        } else {
            s.push_str(&format!(" {sign} "));
        }
        if m != 1 {
            s.push_str(&format!("{m}*"));
        }
        s.push_str(&format!("i{i}"));
    }
    if s.is_empty() {
        return a.offset.to_string();
    }
    if a.offset != 0 {
        let sign = if a.offset < 0 { "-" } else { "+" };
        s.push_str(&format!(" {sign} {}", a.offset.unsigned_abs()));
    }
    s
}

impl fmt::Display for Affine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_affine(self))
    }
}

/// Writes an expression; buffers by name (`%x`), axes `i0..`, the reduced value `acc`.
struct ShowExpr<'a>(&'a Kernel, &'a Expr);

impl fmt::Display for ShowExpr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.0;
        let name = |b: usize| k.buffer(b).map_or_else(|| format!("%<buffer {b}>"), |b| format!("%{}", b.name));
        let sub = |e: &'_ Expr| ShowExpr(k, e).to_string();
        match self.1 {
            Expr::Load { buf, index, guards, pad } => {
                write!(f, "load({}[{index}]", name(*buf))?;
                if !guards.is_empty() {
                    for g in guards {
                        write!(f, ", 0 <= {} < {}", g.expr, g.bound)?;
                    }
                    write!(f, ", pad={pad:?}")?;
                }
                f.write_str(")")
            }
            Expr::Gather { buf, index, stride, extent, pos } => {
                write!(f, "gather({}[{index}], {} * {stride}, extent={extent})", name(*buf), sub(pos))
            }
            Expr::Const { value, dtype } => write!(f, "const<{dtype}>({value:?})"),
            Expr::Axis(a) => write!(f, "i{a}"),
            Expr::Unary(u, x) => write!(f, "{}({})", u.name(), sub(x)),
            Expr::Binary(b, x, y) => write!(f, "{}({}, {})", b.name(), sub(x), sub(y)),
            Expr::Select(c, a, b) => write!(f, "select({}, {}, {})", sub(c), sub(a), sub(b)),
            Expr::Cast(d, x) => write!(f, "cast<{d}>({})", sub(x)),
            Expr::Acc => f.write_str("acc"),
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bufs: Vec<String> = self.inputs.iter().map(|b| format!("%{}: {}[{}]", b.name, b.dtype, b.numel)).collect();
        writeln!(
            f,
            "kernel {}({}) -> %{}: {}[{}] {{",
            self.name,
            bufs.join(", "),
            self.output.name,
            self.output.dtype,
            self.output.numel
        )?;
        let r = self.out_shape.len();
        let axes = |dims: &[usize], from: usize| -> String {
            dims.iter().enumerate().map(|(a, n)| format!("i{} < {n}", a + from)).collect::<Vec<_>>().join(", ")
        };
        writeln!(f, "  for {}", if r == 0 { "()".to_string() } else { axes(&self.out_shape, 0) })?;
        match &self.body {
            Body::Compute { reduce, body, epilogue } => {
                if let Some(op) = reduce {
                    writeln!(f, "  reduce {} over {}", op.name(), axes(&self.red_shape, r))?;
                }
                writeln!(f, "  body = {}", ShowExpr(self, body))?;
                writeln!(f, "  epilogue = {}", ShowExpr(self, epilogue))?;
                writeln!(f, "  store %{}[{}]", self.output.name, self.store)?;
            }
            Body::Scatter { data, mode, index, stride, extent, pos, value } => {
                let d = self.buffer(*data).map_or_else(|| format!("<buffer {data}>"), |b| b.name.clone());
                writeln!(f, "  scatter {} from %{d}", mode.name())?;
                writeln!(f, "  pos = {}", ShowExpr(self, pos))?;
                writeln!(f, "  value = {}", ShowExpr(self, value))?;
                writeln!(f, "  store %{}[{index} + pos * {stride}], extent={extent}", self.output.name)?;
            }
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atom::{Guard, ViewMap};
    use proptest::prelude::*;

    fn buf(name: &str, dtype: DType, numel: usize) -> Buffer {
        Buffer { name: name.into(), dtype, numel }
    }
    fn aff(offset: i64, coefs: &[i64]) -> Affine {
        Affine { offset, coefs: coefs.to_vec() }
    }
    fn load(buf: usize, offset: i64, coefs: &[i64]) -> Expr {
        Expr::Load { buf, index: aff(offset, coefs), guards: vec![], pad: 0.0 }
    }
    fn bin(f: BinaryFn, a: Expr, b: Expr) -> Expr {
        Expr::Binary(f, Box::new(a), Box::new(b))
    }
    fn view(shape: &[usize], strides: &[i64], offset: i64) -> Atom {
        Atom::View(ViewMap { shape: shape.to_vec(), strides: strides.to_vec(), offset, guards: vec![], pad: 0.0 })
    }
    fn run(a: Atom, xs: &[&Tensor]) -> Result<Tensor> {
        first(a.eval(&xs.iter().map(|t| Some(*t)).collect::<Vec<_>>())?)
    }
    fn seq(shape: &[usize], f: impl Fn(usize) -> f64) -> Result<Tensor> {
        Tensor::from_fn_f64(DType::F32, shape.to_vec(), f)
    }
    /// The kernel's flat output equals the atom result (same dtype, same bits).
    fn same(k: &Tensor, atoms: &Tensor) -> Result<()> {
        assert_eq!(k, &atoms.clone().reshaped(vec![atoms.numel()])?);
        Ok(())
    }

    fn matmul_kernel(m: usize, kk: usize, n: usize) -> Kernel {
        let (k_, n_) = (kk as i64, n as i64);
        Kernel {
            name: "matmul".into(),
            inputs: vec![buf("a", DType::F32, m * kk), buf("b", DType::F32, kk * n)],
            output: buf("y", DType::F32, m * n),
            out_shape: vec![m, n],
            red_shape: vec![kk],
            store: aff(0, &[n_, 1]),
            body: Body::Compute {
                reduce: Some(ReduceFn::Sum),
                body: bin(BinaryFn::Mul, load(0, 0, &[k_, 0, 1]), load(1, 0, &[0, 1, n_])),
                epilogue: Expr::Acc,
            },
        }
    }

    fn matmul_atoms(a: &Tensor, b: &Tensor, m: usize, kk: usize, n: usize) -> Result<Tensor> {
        let (k_, n_) = (kk as i64, n as i64);
        let av = run(view(&[m, n, kk], &[k_, 0, 1], 0), &[a])?;
        let bv = run(view(&[m, n, kk], &[0, 1, n_], 0), &[b])?;
        let p = run(Atom::Binary(BinaryFn::Mul), &[&av, &bv])?;
        run(Atom::Reduce { op: ReduceFn::Sum, axes: vec![2] }, &[&p])
    }

    /// A `kh x kw` window sum over an `h x w` image padded by `p` on each side (stride 1),
    /// then `max(acc, 0)`.
    fn window_kernel(h: usize, w: usize, kh: usize, kw: usize, p: usize) -> Kernel {
        let (oh, ow) = (h + 2 * p + 1 - kh, w + 2 * p + 1 - kw);
        let (w_, p_) = (w as i64, p as i64);
        let guards = vec![
            KGuard { expr: aff(-p_, &[1, 0, 1, 0]), bound: h as i64 },
            KGuard { expr: aff(-p_, &[0, 1, 0, 1]), bound: w as i64 },
        ];
        Kernel {
            name: "window".into(),
            inputs: vec![buf("x", DType::F32, h * w)],
            output: buf("y", DType::F32, oh * ow),
            out_shape: vec![oh, ow],
            red_shape: vec![kh, kw],
            store: aff(0, &[ow as i64, 1]),
            body: Body::Compute {
                reduce: Some(ReduceFn::Sum),
                body: Expr::Load { buf: 0, index: aff(-p_ * w_ - p_, &[w_, 1, w_, 1]), guards, pad: 0.0 },
                epilogue: bin(BinaryFn::Max, Expr::Acc, Expr::Const { value: 0.0, dtype: DType::F32 }),
            },
        }
    }

    fn window_atoms(x: &Tensor, h: usize, w: usize, kh: usize, kw: usize, p: usize) -> Result<Tensor> {
        let (oh, ow) = (h + 2 * p + 1 - kh, w + 2 * p + 1 - kw);
        let (w_, p_) = (w as i64, p as i64);
        let v = Atom::View(ViewMap {
            shape: vec![oh, ow, kh, kw],
            strides: vec![w_, 1, w_, 1],
            offset: -p_ * w_ - p_,
            guards: vec![
                Guard { coefs: vec![1, 0, 1, 0], offset: -p_, bound: h as i64 },
                Guard { coefs: vec![0, 1, 0, 1], offset: -p_, bound: w as i64 },
            ],
            pad: 0.0,
        });
        let win = run(v, &[x])?;
        let s = run(Atom::Reduce { op: ReduceFn::Sum, axes: vec![2, 3] }, &[&win])?;
        let zero = Tensor::zeros(DType::F32, s.shape().to_vec())?;
        run(Atom::Binary(BinaryFn::Max), &[&s, &zero])
    }

    #[test]
    fn elementwise_add_with_broadcast() -> Result<()> {
        let k = Kernel {
            name: "add".into(),
            inputs: vec![buf("a", DType::F32, 6), buf("b", DType::F32, 3)],
            output: buf("y", DType::F32, 6),
            out_shape: vec![2, 3],
            red_shape: vec![],
            store: aff(0, &[3, 1]),
            body: Body::Compute { reduce: None, body: bin(BinaryFn::Add, load(0, 0, &[3, 1]), load(1, 0, &[0, 1])), epilogue: Expr::Acc },
        };
        verify(&k)?;
        let a = seq(&[2, 3], |i| i as f64 * 0.5)?;
        let b = seq(&[3], |i| 10.0 - i as f64)?;
        let bb = run(view(&[2, 3], &[0, 1], 0), &[&b])?;
        same(&k.eval(&[&a, &b])?, &run(Atom::Binary(BinaryFn::Add), &[&a, &bb])?)?;
        // Wrong input dtype or size: an error naming the buffer.
        let bad = Tensor::from_vec(vec![3], vec![1i64, 2, 3])?;
        let e = k.eval(&[&a, &bad]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("'b'"), "{e}");
        Ok(())
    }

    #[test]
    fn padded_window_sum_matches_atoms() -> Result<()> {
        let k = window_kernel(4, 5, 3, 3, 1);
        verify(&k)?;
        let x = seq(&[4, 5], |i| (i as f64 * 0.37).sin())?;
        same(&k.eval(&[&x])?, &window_atoms(&x, 4, 5, 3, 3, 1)?)?;
        Ok(())
    }

    #[test]
    fn matmul_matches_atoms_in_chunks() -> Result<()> {
        let (m, kk, n) = (5, 4, 3);
        let k = matmul_kernel(m, kk, n);
        verify(&k)?;
        let a = seq(&[m, kk], |i| (i as f64).cos())?;
        let b = seq(&[kk, n], |i| i as f64 * 0.1 - 0.5)?;
        let want = matmul_atoms(&a, &b, m, kk, n)?;
        same(&k.eval(&[&a, &b])?, &want)?;
        let Body::Compute { reduce, body, epilogue } = &k.body else { unreachable!() };
        for chunk in [1, 7, 25] {
            same(&k.eval_compute(&[&a, &b], *reduce, body, epilogue, chunk)?, &want)?;
        }
        // The MatMul atom computes the same contraction (up to rounding order).
        let mm = run(Atom::MatMul, &[&a, &b])?;
        for (x, y) in k.eval(&[&a, &b])?.to_f64_vec().iter().zip(mm.to_f64_vec()) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        Ok(())
    }

    #[test]
    fn axis_values_survive_chunking() -> Result<()> {
        // y[i, j] = i * 10 + j, written transposed.
        let k = Kernel {
            name: "iota".into(),
            inputs: vec![],
            output: buf("y", DType::I64, 12),
            out_shape: vec![4, 3],
            red_shape: vec![],
            store: aff(0, &[1, 4]),
            body: Body::Compute {
                reduce: None,
                body: bin(BinaryFn::Add, bin(BinaryFn::Mul, Expr::Axis(0), Expr::Const { value: 10.0, dtype: DType::I64 }), Expr::Axis(1)),
                epilogue: Expr::Acc,
            },
        };
        verify(&k)?;
        let Body::Compute { reduce, body, epilogue } = &k.body else { unreachable!() };
        let y = k.eval_compute(&[], *reduce, body, epilogue, 2)?;
        assert_eq!(y.slice::<i64>()?, &[0, 10, 20, 30, 1, 11, 21, 31, 2, 12, 22, 32]);
        Ok(())
    }

    #[test]
    fn reordered_axes_compute_the_same_buffer() -> Result<()> {
        // A padded window (guards over output and reduction axes) and an iota written
        // transposed (Axis values): every order of the output axes gives the same output.
        let x = seq(&[5, 6], |i| (i as f64 * 0.37).sin())?;
        let w = window_kernel(5, 6, 3, 2, 1);
        let want = w.eval(&[&x])?;
        let t = w.reorder_out_axes(&[1, 0]);
        verify(&t)?;
        assert_eq!(t.out_shape, vec![w.out_shape[1], w.out_shape[0]]);
        assert_eq!(t.eval(&[&x])?, want);
        let iota = Kernel {
            name: "iota".into(),
            inputs: vec![],
            output: buf("y", DType::I64, 24),
            out_shape: vec![2, 3, 4],
            red_shape: vec![],
            store: aff(0, &[1, 2, 6]),
            body: Body::Compute {
                reduce: None,
                body: bin(BinaryFn::Add, bin(BinaryFn::Mul, Expr::Axis(0), Expr::Const { value: 100.0, dtype: DType::I64 }),
                    bin(BinaryFn::Add, bin(BinaryFn::Mul, Expr::Axis(1), Expr::Const { value: 10.0, dtype: DType::I64 }), Expr::Axis(2))),
                epilogue: Expr::Acc,
            },
        };
        let want = iota.eval(&[])?;
        for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            let t = iota.reorder_out_axes(&order);
            verify(&t)?;
            assert_eq!(t.eval(&[])?, want, "order {order:?}");
        }
        Ok(())
    }

    #[test]
    fn reordered_reduction_axes_compute_the_same_sums() -> Result<()> {
        // The padded window's two reduction axes (guards over both) swapped, and a sum over
        // three axes with an Axis term in every order: the same values up to rounding.
        let x = seq(&[5, 6], |i| (i as f64 * 0.37).sin())?;
        let w = window_kernel(5, 6, 3, 2, 1);
        let want = w.eval(&[&x])?.to_f64_vec();
        let t = w.reorder_red_axes(&[1, 0]);
        verify(&t)?;
        assert_eq!(t.red_shape, vec![w.red_shape[1], w.red_shape[0]]);
        let got = t.eval(&[&x])?.to_f64_vec();
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?} vs {want:?}");
        let sum = Kernel {
            name: "sum3".into(),
            inputs: vec![],
            output: buf("y", DType::I64, 2),
            out_shape: vec![2],
            red_shape: vec![2, 3, 4],
            store: aff(0, &[1]),
            body: Body::Compute {
                reduce: Some(ReduceFn::Sum),
                body: bin(BinaryFn::Add, bin(BinaryFn::Mul, Expr::Axis(0), Expr::Axis(1)),
                    bin(BinaryFn::Mul, Expr::Axis(2), bin(BinaryFn::Add, Expr::Axis(3), Expr::Const { value: 10.0, dtype: DType::I64 }))),
                epilogue: Expr::Acc,
            },
        };
        let want = sum.eval(&[])?;
        for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            let t = sum.reorder_red_axes(&order);
            verify(&t)?;
            assert_eq!(t.eval(&[])?, want, "order {order:?}");
        }
        Ok(())
    }

    #[test]
    fn argmax_matches_atoms() -> Result<()> {
        let k = Kernel {
            name: "argmax".into(),
            inputs: vec![buf("x", DType::F32, 12)],
            output: buf("y", DType::I64, 3),
            out_shape: vec![3],
            red_shape: vec![4],
            store: aff(0, &[1]),
            body: Body::Compute { reduce: Some(ReduceFn::ArgMax), body: load(0, 0, &[4, 1]), epilogue: Expr::Acc },
        };
        verify(&k)?;
        let x = Tensor::from_vec(vec![3, 4], vec![1f32, 5., 5., 2., -1., -3., -1., -2., 0., 0., 7., 7.])?;
        let want = run(Atom::Reduce { op: ReduceFn::ArgMax, axes: vec![1] }, &[&x])?;
        same(&k.eval(&[&x])?, &want)?;
        assert_eq!(k.eval(&[&x])?.slice::<i64>()?, &[1, 0, 2]);
        Ok(())
    }

    fn gather_kernel() -> Kernel {
        // out[i, j] = data[i, idx[i, j]] for data [3, 4], idx [3, 2].
        Kernel {
            name: "gather".into(),
            inputs: vec![buf("data", DType::F32, 12), buf("idx", DType::I64, 6)],
            output: buf("y", DType::F32, 6),
            out_shape: vec![3, 2],
            red_shape: vec![],
            store: aff(0, &[2, 1]),
            body: Body::Compute {
                reduce: None,
                body: Expr::Gather { buf: 0, index: aff(0, &[4, 0]), stride: 1, extent: 4, pos: Box::new(load(1, 0, &[2, 1])) },
                epilogue: Expr::Acc,
            },
        }
    }

    #[test]
    fn gather_matches_atoms_and_checks_range() -> Result<()> {
        let k = gather_kernel();
        verify(&k)?;
        let data = seq(&[3, 4], |i| i as f64 + 0.25)?;
        let idx = Tensor::from_vec(vec![3, 2], vec![3i64, 0, 1, 1, 2, 3])?;
        same(&k.eval(&[&data, &idx])?, &run(Atom::Gather { axis: 1 }, &[&data, &idx])?)?;
        let bad = Tensor::from_vec(vec![3, 2], vec![3i64, 0, 4, 1, 2, 3])?;
        let e = k.eval(&[&data, &bad]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("position 4") && e.contains("'data'"), "{e}");
        Ok(())
    }

    #[test]
    fn scatter_add_matches_atoms() -> Result<()> {
        // data [5, 3]; out[idx[i, j], j] += upd[i, j] for idx, upd [2, 3] (with duplicates).
        for mode in [ScatterMode::Add, ScatterMode::Replace, ScatterMode::Max] {
            let k = Kernel {
                name: "scatter".into(),
                inputs: vec![buf("data", DType::F32, 15), buf("idx", DType::I64, 6), buf("upd", DType::F32, 6)],
                output: buf("y", DType::F32, 15),
                out_shape: vec![2, 3],
                red_shape: vec![],
                store: aff(0, &[]),
                body: Body::Scatter {
                    data: 0,
                    mode,
                    index: aff(0, &[0, 1]),
                    stride: 3,
                    extent: 5,
                    pos: load(1, 0, &[3, 1]),
                    value: load(2, 0, &[3, 1]),
                },
            };
            verify(&k)?;
            let data = seq(&[5, 3], |i| i as f64)?;
            let idx = Tensor::from_vec(vec![2, 3], vec![4i64, 0, 2, 4, 1, 2])?;
            let upd = seq(&[2, 3], |i| 100.0 + i as f64)?;
            same(&k.eval(&[&data, &idx, &upd])?, &run(Atom::Scatter { axis: 0, mode }, &[&data, &idx, &upd])?)?;
            let bad = Tensor::from_vec(vec![2, 3], vec![4i64, 0, 5, 4, 1, 2])?;
            assert!(k.eval(&[&data, &bad, &upd]).is_err());
        }
        Ok(())
    }

    #[test]
    fn verify_rejects_bad_kernels() {
        let msg = |k: &Kernel| verify(k).err().map(|e| e.to_string()).unwrap_or_default();
        // Out-of-bounds load: b read with row stride 4 instead of 3.
        let mut k = matmul_kernel(2, 3, 3);
        if let Body::Compute { body, .. } = &mut k.body {
            *body = bin(BinaryFn::Mul, load(0, 0, &[3, 0, 1]), load(1, 0, &[0, 1, 4]));
        }
        let e = msg(&k);
        assert!(e.contains("'b'") && e.contains("0..9") && e.contains("matmul"), "{e}");
        // A window without its guards reads outside the image.
        let mut w = window_kernel(4, 5, 3, 3, 1);
        if let Body::Compute { body: Expr::Load { guards, .. }, .. } = &mut w.body {
            guards.clear();
        }
        assert!(msg(&w).contains("'x'"), "{}", msg(&w));
        // Non-injective store: y[i0 + i1] over [2, 2].
        let mut k = matmul_kernel(2, 3, 2);
        k.store = aff(0, &[1, 1]);
        assert!(msg(&k).contains("not injective"), "{}", msg(&k));
        // A load with a coefficient per output axis only, in the body.
        let mut k = matmul_kernel(2, 3, 2);
        if let Body::Compute { body, .. } = &mut k.body {
            *body = bin(BinaryFn::Mul, load(0, 0, &[3, 0]), load(1, 0, &[0, 1, 2]));
        }
        assert!(msg(&k).contains("2 coefficients for 3 axes"), "{}", msg(&k));
        // Mixed dtypes, and acc in the body.
        let mut k = matmul_kernel(2, 3, 2);
        if let Body::Compute { body, .. } = &mut k.body {
            *body = bin(BinaryFn::Mul, load(0, 0, &[3, 0, 1]), Expr::Const { value: 1.0, dtype: DType::F64 });
        }
        assert!(msg(&k).contains("Mul of f32 and f64"), "{}", msg(&k));
        let mut k = matmul_kernel(2, 3, 2);
        if let Body::Compute { body, .. } = &mut k.body {
            *body = Expr::Acc;
        }
        assert!(msg(&k).contains("acc"), "{}", msg(&k));
        // A gather whose positions may run past the data.
        let mut g = gather_kernel();
        if let Body::Compute { body: Expr::Gather { extent, .. }, .. } = &mut g.body {
            *extent = 5;
        }
        assert!(msg(&g).contains("'data'"), "{}", msg(&g));
    }

    #[test]
    fn full_reduction_to_a_scalar_with_bias_epilogue() -> Result<()> {
        // y[] = sum(x) + bias[0], then cast to f64.
        let k = Kernel {
            name: "total".into(),
            inputs: vec![buf("x", DType::F32, 6), buf("bias", DType::F32, 1)],
            output: buf("y", DType::F64, 1),
            out_shape: vec![],
            red_shape: vec![2, 3],
            store: aff(0, &[]),
            body: Body::Compute {
                reduce: Some(ReduceFn::Sum),
                body: load(0, 0, &[3, 1]),
                epilogue: Expr::Cast(DType::F64, Box::new(bin(BinaryFn::Add, Expr::Acc, load(1, 0, &[])))),
            },
        };
        verify(&k)?;
        let x = seq(&[2, 3], |i| i as f64 * 0.1)?;
        let bias = seq(&[1], |_| 0.5)?;
        let sum = run(Atom::Reduce { op: ReduceFn::Sum, axes: vec![0, 1] }, &[&x])?.reshaped(vec![])?;
        let want = run(Atom::Cast(DType::F64), &[&run(Atom::Binary(BinaryFn::Add), &[&sum, &bias.clone().reshaped(vec![])?])?])?;
        same(&k.eval(&[&x, &bias])?, &want)?;
        assert!(k.to_string().contains("  for ()\n  reduce Sum over i0 < 2, i1 < 3\n"), "{k}");
        Ok(())
    }

    #[test]
    fn unverified_out_of_bounds_is_an_error_not_a_panic() -> Result<()> {
        let mut k = matmul_kernel(2, 3, 2);
        k.store = aff(1, &[2, 1]);
        assert!(verify(&k).err().map(|e| e.to_string()).unwrap_or_default().contains("store of buffer 'y'"));
        let a = seq(&[2, 3], |i| i as f64)?;
        let b = seq(&[3, 2], |i| i as f64)?;
        assert!(k.eval(&[&a, &b]).is_err());
        let mut k = matmul_kernel(2, 3, 2);
        if let Body::Compute { body, .. } = &mut k.body {
            *body = bin(BinaryFn::Mul, load(0, 1, &[3, 0, 1]), load(1, 0, &[0, 1, 2]));
        }
        let e = k.eval(&[&a, &b]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("load of buffer 'a' at element 6 of 6"), "{e}");
        Ok(())
    }

    #[test]
    fn guard_decomposition_proves_strided_padded_loads() -> Result<()> {
        // A stride-2 3x3 window with padding 1 over a 5x5 image: the box of the index alone
        // reaches outside, the guards bring it back in.
        let guards = vec![
            KGuard { expr: aff(-1, &[2, 0, 1, 0]), bound: 5 },
            KGuard { expr: aff(-1, &[0, 2, 0, 1]), bound: 5 },
        ];
        let k = Kernel {
            name: "conv_s2".into(),
            inputs: vec![buf("x", DType::F32, 25)],
            output: buf("y", DType::F32, 9),
            out_shape: vec![3, 3],
            red_shape: vec![3, 3],
            store: aff(0, &[3, 1]),
            body: Body::Compute {
                reduce: Some(ReduceFn::Max),
                body: Expr::Load { buf: 0, index: aff(-6, &[10, 2, 5, 1]), guards, pad: f64::NEG_INFINITY },
                epilogue: Expr::Acc,
            },
        };
        verify(&k)?;
        let x = seq(&[5, 5], |i| ((i * 7) % 11) as f64)?;
        let v = Atom::View(ViewMap {
            shape: vec![3, 3, 3, 3],
            strides: vec![10, 2, 5, 1],
            offset: -6,
            guards: vec![
                Guard { coefs: vec![2, 0, 1, 0], offset: -1, bound: 5 },
                Guard { coefs: vec![0, 2, 0, 1], offset: -1, bound: 5 },
            ],
            pad: f64::NEG_INFINITY,
        });
        let want = run(Atom::Reduce { op: ReduceFn::Max, axes: vec![2, 3] }, &[&run(v, &[&x])?])?;
        same(&k.eval(&[&x])?, &want)?;
        // Without the guards the same index is not provably in bounds.
        let mut bare = k.clone();
        if let Body::Compute { body: Expr::Load { guards, .. }, .. } = &mut bare.body {
            guards.clear();
        }
        assert!(verify(&bare).is_err());
        Ok(())
    }

    #[test]
    fn text_form_shows_buffers_axes_and_store() {
        let s = window_kernel(4, 5, 3, 3, 1).to_string();
        assert!(s.starts_with("kernel window(%x: f32[20]) -> %y: f32[20] {"), "{s}");
        assert!(s.contains("  for i0 < 4, i1 < 5\n  reduce Sum over i2 < 3, i3 < 3\n"), "{s}");
        assert!(s.contains("load(%x[5*i0 + i1 + 5*i2 + i3 - 6], 0 <= i0 + i2 - 1 < 4, 0 <= i1 + i3 - 1 < 5, pad=0.0)"), "{s}");
        assert!(s.contains("epilogue = Max(acc, const<f32>(0.0))"), "{s}");
        assert!(s.contains("store %y[5*i0 + i1]"), "{s}");
    }

    proptest! {
        #[test]
        fn matmul_kernel_equals_atoms(m in 1usize..6, kk in 1usize..6, n in 1usize..6, seed in 0u64..1000) {
            let k = matmul_kernel(m, kk, n);
            prop_assert!(verify(&k).is_ok());
            let a = seq(&[m, kk], |i| ((i as u64 * 31 + seed) % 17) as f64 - 8.5).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let b = seq(&[kk, n], |i| ((i as u64 * 13 + seed) % 7) as f64 * 0.3).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = k.eval(&[&a, &b]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let want = matmul_atoms(&a, &b, m, kk, n).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got.slice::<f32>().ok(), want.slice::<f32>().ok());
        }

        #[test]
        fn window_kernel_equals_atoms(h in 1usize..7, w in 1usize..7, kh in 1usize..4, kw in 1usize..4, p in 0usize..3) {
            prop_assume!(h + 2 * p >= kh && w + 2 * p >= kw);
            let k = window_kernel(h, w, kh, kw, p);
            prop_assert!(verify(&k).is_ok(), "{}", k);
            let x = seq(&[h, w], |i| (i as f64 * 0.71).sin()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = k.eval(&[&x]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let want = window_atoms(&x, h, w, kh, kw, p).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got.slice::<f32>().ok(), want.slice::<f32>().ok());
        }
    }
}
