//! Partitioning an atom graph into kernels ([`crate::kernel`]) and running the result.
//!
//! Input: a specialized graph of atoms, possibly with high-level *host* nodes (anything
//! that is not [`OpKind::Atom`], and atoms whose shapes are not static). Output: a [`Plan`],
//! a topologically ordered list of kernels and host steps.
//!
//! Fusion: a View becomes part of its consumer's load index (views compose with
//! [`ViewMap::compose`]; where they do not, the inner value is materialized). Unary, Binary,
//! Select, Cast and Gather fuse into their consumer's expression when they have a single
//! consumer and are read without guards (a guard masks the *value*, so it cannot be pushed
//! below an elementwise function), except into a MatMul operand the MatMul reads more
//! than once per element (a left operand with several output columns, a right operand with
//! several rows): that computation is materialized once instead of recomputed per read.
//! A Reduce or MatMul anchors a kernel: its input
//! expression is the fused prologue, and a chain of single-consumer elementwise atoms (and
//! reshapes) after it is the epilogue, diamonds included: a value read by several
//! elementwise nodes that join again (a clip's Select reads `x` and `x < 0`; SiLU's Mul
//! reads `x` and `sigmoid(x)`) joins the epilogue with the whole diamond. Scatter is its own kernel. Graph outputs, values
//! read by host steps and elementwise values with several consumers are materialized
//! (row-major), and so is a padded tensor read through unguarded windows
//! ([`crate::padding`] splits a conv's padded window into the two): a copy that tests the
//! guards once per element, so that the contraction's hot loop tests none.

use crate::atom::{Atom, BinaryFn, ViewMap, row_major};
use crate::dtype::DType;
use crate::error::{Error, Result, ResultExt};
use crate::graph::{Graph, ValueId};
use crate::kernel::{Affine, Body, Buffer, Expr, KGuard, Kernel};
use crate::shape::fmt_shape;
use crate::tensor::Tensor;
use std::sync::Arc;

/// One step of a plan.
#[allow(clippy::large_enum_variant)] // a plan holds few steps; kernels are read in place
#[derive(Clone, Debug)]
pub enum Step {
    /// A kernel reading `inputs` (its buffers, in order) and writing `output`.
    Kernel { kernel: Kernel, inputs: Vec<ValueId>, output: ValueId },
    /// Graph node `node`, run by the interpreter.
    Host { node: usize },
}

/// Kernels and host steps in topological order.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    /// The number of kernel steps.
    pub fn num_kernels(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Kernel { .. })).count()
    }

    /// The number of host steps.
    pub fn num_host_steps(&self) -> usize {
        self.steps.len() - self.num_kernels()
    }
}

/// The loop axes of a kernel being built: logical axis `a` (an output or reduction axis of
/// the anchor, or an axis of an elementwise value) runs as the row-major axes `factors[a]`.
/// Splitting an axis changes no flat position (the factors are row-major), only what loads
/// can express: a view that merges axes a load cannot un-merge affinely (an im2col window
/// read as `[C*KH*KW, OH*OW]`) composes once the kernel loops over the parts.
struct Splits {
    factors: Vec<Vec<usize>>,
}

/// The longest path of elementwise nodes from a value to the node that joins it again that
/// an anchor's epilogue absorbs (a decomposed sigmoid is four).
const MAX_DIAMOND_PATH: usize = 8;

/// The most splits tried per kernel (each one adds a loop axis).
const MAX_SPLITS: usize = 16;

impl Splits {
    fn none(ext: &[usize]) -> Splits {
        Splits { factors: ext.iter().map(|&n| vec![n]).collect() }
    }

    /// The loop extents of logical axes `range`.
    fn shape(&self, range: std::ops::Range<usize>) -> Vec<usize> {
        self.factors[range].iter().flatten().copied().collect()
    }

    /// The loop strides of an access with stride `logical[a]` along logical axis `a`.
    fn strides(&self, logical: &[i64]) -> Vec<i64> {
        let mut out = Vec::new();
        for (f, &s) in self.factors.iter().zip(logical) {
            let inner = row_major(f);
            out.extend(inner.iter().map(|&t| s * t));
        }
        out
    }

    /// Splits loop axis `axis` (of the flattened loop axes) into `(n / l, l)` if it belongs
    /// to one of the first `splittable` logical axes; false when it cannot.
    fn split(&mut self, axis: usize, l: usize, splittable: usize) -> bool {
        let mut at = axis;
        for f in self.factors.iter_mut().take(splittable) {
            if at < f.len() {
                let n = f[at];
                if l <= 1 || l >= n || n % l != 0 {
                    return false;
                }
                f[at] = n / l;
                f.insert(at + 1, l);
                return true;
            }
            at -= f.len();
        }
        false
    }
}

/// What [`Part::plan_splits`] reads through the kernel's loop axes.
enum Probe {
    /// A value read with these strides per logical axis.
    Value(ValueId, Vec<i64>),
    /// A node computed at the row-major access of the logical axes.
    Node(usize),
}

/// What produces a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prod {
    /// A graph input, constant or host output: a buffer from the start or once its step ran.
    Buffer,
    /// Atom node `n` (static shapes).
    Atom(usize),
}

struct Part<'g> {
    g: &'g Graph,
    atoms: Vec<Option<Atom>>,
    prod: Vec<Prod>,
    /// Distinct consumer nodes of each value.
    consumers: Vec<Vec<usize>>,
    /// Materialized on purpose: outputs, host inputs, shared elementwise values, chain ends.
    root: Vec<bool>,
    /// A value inside an anchor's epilogue chain (never materialized).
    absorbed: Vec<bool>,
    /// The anchor node (Reduce/MatMul) whose kernel computes this chain end.
    chain_anchor: Vec<Option<usize>>,
    /// Available as a buffer (computed, or computed by an earlier step).
    ready: Vec<bool>,
    /// Being materialized (a cycle would be an internal error, not a stack overflow).
    busy: Vec<bool>,
    steps: Vec<(usize, Step)>,
}

/// The buffers of the kernel being built.
struct KB {
    inputs: Vec<ValueId>,
    /// The anchor's value inside its epilogue (read as `Acc`).
    acc: Option<ValueId>,
}

impl KB {
    fn buf(&mut self, v: ValueId) -> usize {
        match self.inputs.iter().position(|&x| x == v) {
            Some(i) => i,
            None => {
                self.inputs.push(v);
                self.inputs.len() - 1
            }
        }
    }
}

fn is_elementwise(a: &Atom) -> bool {
    matches!(a, Atom::Unary(_) | Atom::Binary(_) | Atom::Select | Atom::Cast(_))
}

/// The access of a row-major value over kernel axes `ext` whose first `shape.len()` axes
/// index it (the others, reduction axes, do not move it).
fn row_major_access(shape: &[usize], ext: &[usize]) -> ViewMap {
    let mut strides = row_major(shape);
    strides.resize(ext.len(), 0);
    ViewMap { shape: ext.to_vec(), strides, offset: 0, guards: vec![], pad: 0.0 }
}

fn affine(offset: i64, coefs: &[i64]) -> Affine {
    Affine { offset, coefs: coefs.to_vec() }
}

fn bin(f: BinaryFn, a: Expr, b: Expr) -> Expr {
    Expr::Binary(f, Box::new(a), Box::new(b))
}

fn i64c(v: i64) -> Expr {
    Expr::Const { value: v as f64, dtype: DType::I64 }
}

/// An index expression as i64, negative values counted from `extent` (as GatherElements
/// and ScatterElements do).
fn position(e: Expr, dtype: DType, extent: usize) -> Expr {
    let p = if dtype == DType::I64 { e } else { Expr::Cast(DType::I64, Box::new(e)) };
    Expr::Select(
        Box::new(bin(BinaryFn::Lt, p.clone(), i64c(0))),
        Box::new(bin(BinaryFn::Add, p.clone(), i64c(extent as i64))),
        Box::new(p),
    )
}

/// A one-element constant read without guards, as an `Expr::Const` (when exact in f64).
fn scalar_const(t: &Tensor, a: &ViewMap) -> Option<Expr> {
    if !a.guards.is_empty() || t.numel() != 1 {
        return None;
    }
    let value = t.scalar_f64().ok()?;
    let exact = t.dtype().is_float() || value.abs() < 9.0e15;
    exact.then_some(Expr::Const { value, dtype: t.dtype() })
}

impl<'g> Part<'g> {
    fn new(g: &'g Graph) -> Result<Part<'g>> {
        let nv = g.values.len();
        let mut p = Part {
            g,
            atoms: Vec::with_capacity(g.nodes.len()),
            prod: vec![Prod::Buffer; nv],
            consumers: vec![Vec::new(); nv],
            root: vec![false; nv],
            absorbed: vec![false; nv],
            chain_anchor: vec![None; nv],
            ready: vec![false; nv],
            busy: vec![false; nv],
            steps: Vec::new(),
        };
        for (i, node) in g.nodes.iter().enumerate() {
            let atom = match Atom::from_op(&node.op)? {
                Some(a) if p.static_node(i) && p.expressible(i, &a) => Some(a),
                _ => None,
            };
            for v in node.inputs.iter().flatten() {
                if !p.consumers[v.index()].contains(&i) {
                    p.consumers[v.index()].push(i);
                }
                if atom.is_none() {
                    p.root[v.index()] = true;
                }
            }
            if atom.is_some() {
                for v in node.outputs.iter().flatten() {
                    p.prod[v.index()] = Prod::Atom(i);
                }
            }
            p.atoms.push(atom);
        }
        for v in &g.outputs {
            p.root[v.index()] = true;
        }
        for input in &g.inputs {
            p.ready[input.value.index()] = true;
        }
        for v in g.consts.keys() {
            p.ready[v.index()] = true;
        }
        // Static decisions: shared elementwise values, anchor chains, scatters.
        for i in 0..g.nodes.len() {
            let Some(atom) = p.atoms[i].clone() else { continue };
            let Some(v) = g.nodes[i].outputs.first().copied().flatten() else { continue };
            match atom {
                Atom::Unary(_) | Atom::Binary(_) | Atom::Select | Atom::Cast(_) | Atom::Gather { .. } => {
                    // (A value an earlier anchor's epilogue absorbed is computed there.)
                    if p.consumers[v.index()].len() > 1 && !p.absorbed[v.index()] {
                        p.root[v.index()] = true;
                    }
                }
                Atom::Scatter { .. } => p.root[v.index()] = true,
                Atom::Reduce { .. } | Atom::MatMul => {
                    if matches!(atom, Atom::MatMul) {
                        p.materialize_reused_operands(i, v)?;
                    }
                    let mut cur = v;
                    while !p.root[cur.index()] {
                        let Some((next, inner)) = p.chain_step(cur)? else { break };
                        p.absorbed[cur.index()] = true;
                        for u in inner {
                            p.absorbed[u.index()] = true;
                        }
                        cur = next;
                    }
                    p.root[cur.index()] = true;
                    p.chain_anchor[cur.index()] = Some(i);
                }
                Atom::View(vm) if !vm.guards.is_empty() => {
                    // A padded tensor read through unguarded windows (see `crate::padding`)
                    // is materialized once, so the windows read it without guards.
                    let numel = |s: &[usize]| s.iter().product::<usize>();
                    let windowed = p.consumers[v.index()].iter().all(|&c| {
                        matches!(&p.atoms[c], Some(Atom::View(w)) if w.guards.is_empty() && numel(&w.shape) > numel(&vm.shape))
                    });
                    if windowed && !p.consumers[v.index()].is_empty() {
                        p.root[v.index()] = true;
                    }
                }
                Atom::View(_) | Atom::Const(_) => {}
            }
        }
        Ok(p)
    }

    /// The next link of an anchor's epilogue chain after value `cur`: the output of its
    /// one consumer, elementwise (or an identity view); or, where `cur` has several
    /// elementwise consumers, a diamond: one of them (the merge) reads `cur` and the
    /// outputs of all the others, each of which has the merge as its only consumer, as
    /// `Select(x < 0, 0, x)` (a clip) or `x * sigmoid(x)` (SiLU: `sigmoid` a path of
    /// [`MAX_DIAMOND_PATH`] nodes at most) read `x` twice. Returns
    /// the merge's output and the diamond's inner values. `None` where the chain ends:
    /// another consumer, or a next value that is (or ends) another anchor's chain.
    fn chain_step(&self, cur: ValueId) -> Result<Option<(ValueId, Vec<ValueId>)>> {
        let out = |c: usize| self.g.nodes[c].outputs.first().copied().flatten();
        let elementwise = |c: usize| self.atoms[c].as_ref().is_some_and(is_elementwise) && self.g.nodes[c].outputs.len() == 1;
        let free = |v: ValueId| !self.absorbed[v.index()] && self.chain_anchor[v.index()].is_none();
        let consumers = &self.consumers[cur.index()];
        let (next, inner) = match consumers[..] {
            [c] => {
                let ok = match &self.atoms[c] {
                    Some(a) if is_elementwise(a) => true,
                    Some(Atom::View(vm)) => vm.is_identity(self.numel(cur)?),
                    _ => false,
                };
                match out(c) {
                    Some(next) if ok => (next, Vec::new()),
                    _ => return Ok(None),
                }
            }
            [] => return Ok(None),
            _ => {
                if !consumers.iter().all(|&c| elementwise(c)) {
                    return Ok(None);
                }
                // From another consumer `c`, a path of elementwise nodes whose outputs are
                // each read once, the last by the merge: the values on it.
                let path = |c: usize, merge: usize| -> Option<Vec<ValueId>> {
                    let (mut node, mut values) = (c, Vec::new());
                    for _ in 0..MAX_DIAMOND_PATH {
                        let u = out(node).filter(|u| elementwise(node) && !self.root[u.index()] && free(*u))?;
                        values.push(u);
                        match self.consumers[u.index()][..] {
                            [n] if n == merge => return Some(values),
                            [n] => node = n,
                            _ => return None,
                        }
                    }
                    None
                };
                let Some((merge, inner)) = consumers.iter().find_map(|&m| {
                    let mut inner = Vec::new();
                    for &c in consumers.iter().filter(|&&c| c != m) {
                        inner.extend(path(c, m)?);
                    }
                    Some((m, inner))
                }) else {
                    return Ok(None);
                };
                match out(merge) {
                    Some(next) => (next, inner),
                    None => return Ok(None),
                }
            }
        };
        Ok(free(next).then_some((next, inner)))
    }

    /// A MatMul reads each element of its left operand once per output column and each
    /// element of its right operand once per output row: an elementwise computation fused
    /// into such an operand would be recomputed that many times, so (reused more than once)
    /// it is materialized instead. Views on the way still fuse into the load.
    fn materialize_reused_operands(&mut self, n: usize, out: ValueId) -> Result<()> {
        let (_, shape) = self.ty(out)?;
        let [.., rows, cols] = *shape else { return Ok(()) };
        for (k, reuse) in [(0, cols), (1, rows)] {
            if reuse < 2 {
                continue;
            }
            let mut u = self.input(n, k)?;
            while let Prod::Atom(j) = self.prod[u.index()]
                && matches!(self.atoms[j], Some(Atom::View(_)))
            {
                u = self.input(j, 0)?;
            }
            if let Prod::Atom(j) = self.prod[u.index()]
                && self.atoms[j].as_ref().is_some_and(|a| is_elementwise(a) || matches!(a, Atom::Gather { .. }))
            {
                self.root[u.index()] = true;
            }
        }
        Ok(())
    }

    /// Whether every input and output of node `i` has a static shape.
    fn static_node(&self, i: usize) -> bool {
        let node = &self.g.nodes[i];
        node.inputs.iter().chain(&node.outputs).all(|v| {
            v.is_some_and(|v| self.g.value(v).ty.as_ref().is_some_and(|t| t.shape.is_some()))
        })
    }

    /// Whether the kernel IR expresses atom node `i`: its `Binary` takes operands of one
    /// dtype (`Pow` of a float base and an integer exponent runs on the host).
    fn expressible(&self, i: usize, a: &Atom) -> bool {
        let node = &self.g.nodes[i];
        let dtype = |k: usize| node.inputs.get(k).copied().flatten().and_then(|v| self.ty(v).ok()).map(|t| t.0);
        !matches!(a, Atom::Binary(_)) || dtype(0) == dtype(1)
    }

    fn ty(&self, v: ValueId) -> Result<(DType, &'g [usize])> {
        let g: &'g Graph = self.g;
        match &g.value(v).ty {
            Some(crate::graph::ValueType { dtype, shape: Some(s) }) => Ok((*dtype, s.as_slice())),
            _ => Err(Error::Internal(format!("value '{}' has no static type", g.name(v)))),
        }
    }

    fn numel(&self, v: ValueId) -> Result<usize> {
        Ok(self.ty(v)?.1.iter().product())
    }

    fn buffer(&self, v: ValueId) -> Result<Buffer> {
        let (dtype, shape) = self.ty(v)?;
        Ok(Buffer { name: self.g.name(v).to_string(), dtype, numel: shape.iter().product() })
    }

    fn input(&self, n: usize, k: usize) -> Result<ValueId> {
        self.g.nodes[n].inputs.get(k).copied().flatten().ok_or_else(|| {
            Error::InvalidModel(format!("node '{}' lacks input {k}", self.g.nodes[n].name))
        })
    }

    fn load(&self, kb: &mut KB, v: ValueId, a: &ViewMap) -> Expr {
        Expr::Load {
            buf: kb.buf(v),
            index: affine(a.offset, &a.strides),
            guards: a.guards.iter().map(|g| KGuard { expr: affine(g.offset, &g.coefs), bound: g.bound }).collect(),
            pad: if a.guards.is_empty() { 0.0 } else { a.pad },
        }
    }

    /// The expression of `v` read through access `a` (over the kernel's axes).
    fn expr(&mut self, kb: &mut KB, v: ValueId, a: &ViewMap) -> Result<Expr> {
        if kb.acc == Some(v) {
            return Ok(Expr::Acc);
        }
        if self.ready[v.index()] {
            if let Some(t) = self.g.consts.get(&v)
                && let Some(c) = scalar_const(t, a)
            {
                return Ok(c);
            }
            return Ok(self.load(kb, v, a));
        }
        let Prod::Atom(n) = self.prod[v.index()] else {
            return Err(Error::Internal(format!("value '{}' read before it is computed", self.g.name(v))));
        };
        let Some(atom) = self.atoms[n].clone() else {
            return Err(Error::Internal(format!("value '{}' has no atom", self.g.name(v))));
        };
        let fusable =
            (!self.root[v.index()] && !self.absorbed[v.index()]) || (kb.acc.is_some() && self.absorbed[v.index()]);
        match &atom {
            Atom::View(_) => return self.node_expr(kb, n, &atom, a),
            Atom::Const(t) => {
                if let Some(c) = scalar_const(t, a) {
                    return Ok(c);
                }
            }
            Atom::Unary(_) | Atom::Binary(_) | Atom::Select | Atom::Cast(_) | Atom::Gather { .. }
                if fusable && a.guards.is_empty() =>
            {
                return self.node_expr(kb, n, &atom, a);
            }
            _ => {}
        }
        self.materialize(v)?;
        Ok(self.load(kb, v, a))
    }

    /// The expression computing node `n`'s output at access `a` (the node is inlined).
    fn node_expr(&mut self, kb: &mut KB, n: usize, atom: &Atom, a: &ViewMap) -> Result<Expr> {
        let arg = |p: &mut Self, kb: &mut KB, k: usize| -> Result<Expr> {
            let v = p.input(n, k)?;
            p.expr(kb, v, a)
        };
        Ok(match atom {
            Atom::Unary(f) => Expr::Unary(*f, Box::new(arg(self, kb, 0)?)),
            Atom::Binary(f) => Expr::Binary(*f, Box::new(arg(self, kb, 0)?), Box::new(arg(self, kb, 1)?)),
            Atom::Select => Expr::Select(
                Box::new(arg(self, kb, 0)?),
                Box::new(arg(self, kb, 1)?),
                Box::new(arg(self, kb, 2)?),
            ),
            Atom::Cast(d) => Expr::Cast(*d, Box::new(arg(self, kb, 0)?)),
            Atom::View(vm) => {
                let u = self.input(n, 0)?;
                let direct = a.shape == vm.shape
                    && a.offset == 0
                    && a.guards.is_empty()
                    && a.strides == row_major(&vm.shape);
                let composed = if direct { Some(vm.clone()) } else { vm.compose(a) };
                match composed {
                    Some(c) => self.expr(kb, u, &c)?,
                    None => {
                        let v = self.g.nodes[n].outputs.first().copied().flatten().ok_or_else(|| {
                            Error::InvalidModel(format!("node '{}' has no output", self.g.nodes[n].name))
                        })?;
                        self.materialize(v)?;
                        self.load(kb, v, a)
                    }
                }
            }
            Atom::Gather { axis } => {
                let data = self.input(n, 0)?;
                let idx = self.input(n, 1)?;
                let (_, dshape) = self.ty(data)?;
                let (idt, ishape) = self.ty(idx)?;
                let mut strides = row_major(dshape);
                let stride = strides[*axis];
                strides[*axis] = 0;
                let inner = ViewMap { shape: ishape.to_vec(), strides, offset: 0, guards: vec![], pad: 0.0 };
                let direct = a.shape.starts_with(ishape)
                    && a.offset == 0
                    && a.guards.is_empty()
                    && a.strides == row_major_access(ishape, &a.shape).strides;
                let composed = if direct {
                    let mut s = inner.strides.clone();
                    s.resize(a.shape.len(), 0);
                    Some(ViewMap { shape: a.shape.clone(), strides: s, offset: 0, guards: vec![], pad: 0.0 })
                } else {
                    inner.compose(a)
                };
                let Some(c) = composed else {
                    let v = self.out(n)?;
                    self.materialize(v)?;
                    return Ok(self.load(kb, v, a));
                };
                self.materialize(data)?;
                let pos = self.expr(kb, idx, a)?;
                Expr::Gather {
                    buf: kb.buf(data),
                    index: affine(c.offset, &c.strides),
                    stride,
                    extent: dshape[*axis] as i64,
                    pos: Box::new(position(pos, idt, dshape[*axis])),
                }
            }
            Atom::Const(_) | Atom::Reduce { .. } | Atom::MatMul | Atom::Scatter { .. } => {
                let v = self.out(n)?;
                self.materialize(v)?;
                self.load(kb, v, a)
            }
        })
    }

    /// A split of the kernel's loop axes (see [`Splits`]) that lets a view on the way from
    /// `v` (read through access `a`) compose where it would otherwise be materialized.
    fn split_hint(&self, v: ValueId, a: &ViewMap, depth: usize) -> Option<(usize, usize)> {
        if self.ready[v.index()] || depth > 64 {
            return None;
        }
        let Prod::Atom(n) = self.prod[v.index()] else { return None };
        let atom = self.atoms[n].as_ref()?;
        let fusable = !self.root[v.index()] && !self.absorbed[v.index()];
        if is_elementwise(atom) && !fusable {
            return None;
        }
        self.node_split_hint(n, atom, a, depth)
    }

    /// [`Part::split_hint`] for node `n` computed at access `a`.
    fn node_split_hint(&self, n: usize, atom: &Atom, a: &ViewMap, depth: usize) -> Option<(usize, usize)> {
        match atom {
            Atom::View(vm) => {
                let u = self.input(n, 0).ok()?;
                let direct = a.shape == vm.shape && a.offset == 0 && a.guards.is_empty() && a.strides == row_major(&vm.shape);
                let composed = if direct { Some(vm.clone()) } else { vm.compose(a) };
                match composed {
                    Some(c) => self.split_hint(u, &c, depth + 1),
                    None => vm.split_hint(a),
                }
            }
            _ if is_elementwise(atom) && a.guards.is_empty() => (0..self.g.nodes[n].inputs.len())
                .filter_map(|k| self.input(n, k).ok())
                .find_map(|u| self.split_hint(u, a, depth + 1)),
            _ => None,
        }
    }

    /// Splits the loop axes of a kernel over `ext` (the first `splittable` of them may be
    /// split) until no read through `probes` (a value and its logical strides, or a node
    /// computed at the row-major access) needs another split.
    fn plan_splits(&self, ext: &[usize], splittable: usize, probes: &[Probe]) -> Splits {
        let mut splits = Splits::none(ext);
        for _ in 0..MAX_SPLITS {
            let shape = splits.shape(0..ext.len());
            let access = |strides: Vec<i64>| ViewMap { shape: shape.clone(), strides, offset: 0, guards: vec![], pad: 0.0 };
            let hint = probes.iter().find_map(|p| match p {
                Probe::Value(v, strides) => self.split_hint(*v, &access(splits.strides(strides)), 0),
                Probe::Node(n) => {
                    let atom = self.atoms[*n].as_ref()?;
                    self.node_split_hint(*n, atom, &access(splits.strides(&row_major(ext))), 0)
                }
            });
            match hint {
                Some((axis, l)) if splits.split(axis, l, splittable) => {}
                _ => break,
            }
        }
        splits
    }

    fn out(&self, n: usize) -> Result<ValueId> {
        self.g.nodes[n]
            .outputs
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| Error::InvalidModel(format!("node '{}' has no output", self.g.nodes[n].name)))
    }

    /// Makes `v` a buffer: adds the step computing it (and, first, those it reads).
    fn materialize(&mut self, v: ValueId) -> Result<()> {
        if self.ready[v.index()] {
            return Ok(());
        }
        let Prod::Atom(n) = self.prod[v.index()] else {
            return Err(Error::Internal(format!("value '{}' read before it is computed", self.g.name(v))));
        };
        let atom = self.atoms[n].clone().ok_or_else(|| Error::Internal("host node in materialize".into()))?;
        if self.busy[v.index()] {
            return Err(Error::Internal(format!("value '{}' needs itself to be materialized", self.g.name(v))));
        }
        self.busy[v.index()] = true;
        let r = self.materialize_atom(v, n, &atom);
        self.busy[v.index()] = false;
        r
    }

    fn materialize_atom(&mut self, v: ValueId, n: usize, atom: &Atom) -> Result<()> {
        let g = self.g;
        let name = g.nodes[n].name.clone();
        let (kernel, inputs) = match self.chain_anchor[v.index()] {
            Some(an) => self.anchor_kernel(an, v).context(|| format!("node '{name}'"))?,
            None => match atom {
                Atom::Const(_) => {
                    self.ready[v.index()] = true;
                    self.steps.push((n, Step::Host { node: n }));
                    return Ok(());
                }
                Atom::Scatter { axis, .. } => self.scatter_kernel(n, atom, *axis, v).context(|| format!("node '{name}'"))?,
                Atom::Reduce { .. } | Atom::MatMul => {
                    return Err(Error::Internal(format!("anchor '{name}' without a chain")));
                }
                _ => {
                    let (_, shape) = self.ty(v)?;
                    let mut kb = KB { inputs: vec![], acc: None };
                    let shape = self.plan_splits(shape, shape.len(), &[Probe::Node(n)]).shape(0..shape.len());
                    let a = row_major_access(&shape, &shape);
                    let body = self.node_expr(&mut kb, n, atom, &a).context(|| format!("node '{name}'"))?;
                    let k = Kernel {
                        name: name.clone(),
                        inputs: kb.inputs.iter().map(|&x| self.buffer(x)).collect::<Result<_>>()?,
                        output: self.buffer(v)?,
                        out_shape: shape.clone(),
                        red_shape: vec![],
                        store: affine(0, &row_major(&shape)),
                        body: Body::Compute { reduce: None, body, epilogue: Expr::Acc },
                    };
                    (k, kb.inputs)
                }
            },
        };
        self.ready[v.index()] = true;
        let key = match self.prod[v.index()] {
            Prod::Atom(k) => k,
            Prod::Buffer => n,
        };
        self.steps.push((key, Step::Kernel { kernel, inputs, output: v }));
        Ok(())
    }

    /// The kernel of Reduce/MatMul node `an` with its epilogue chain ending at `end`.
    fn anchor_kernel(&mut self, an: usize, end: ValueId) -> Result<(Kernel, Vec<ValueId>)> {
        let atom = self.atoms[an].clone().ok_or_else(|| Error::Internal("anchor is not an atom".into()))?;
        let v0 = self.out(an)?;
        let x = self.input(an, 0)?;
        let (_, xs) = self.ty(x)?;
        let (out_shape, red_shape, reduce, body_accesses) = match &atom {
            Atom::Reduce { op, axes } => {
                let kept: Vec<usize> = (0..xs.len()).filter(|d| !axes.contains(d)).collect();
                let out: Vec<usize> = kept.iter().map(|&d| xs[d]).collect();
                let red: Vec<usize> = axes.iter().map(|&d| xs[d]).collect();
                let rs = row_major(xs);
                let strides: Vec<i64> = kept.iter().chain(axes).map(|&d| rs[d]).collect();
                let reduce = if axes.is_empty() { None } else { Some(*op) };
                (out, red, reduce, vec![strides])
            }
            Atom::MatMul => {
                let y = self.input(an, 1)?;
                let (_, ys) = self.ty(y)?;
                let r = xs.len();
                if r < 2 || ys.len() != r {
                    return Err(Error::InvalidModel("matmul operands of bad rank".into()));
                }
                let (m, k, nn) = (xs[r - 2], xs[r - 1], ys[r - 1]);
                let mut out: Vec<usize> = xs[..r - 2].to_vec();
                out.extend([m, nn]);
                let (ra, rb) = (row_major(xs), row_major(ys));
                // Axes: batch.., m, n, k.
                let mut sa: Vec<i64> = ra[..r - 2].to_vec();
                sa.extend([ra[r - 2], 0, ra[r - 1]]);
                let mut sb: Vec<i64> = rb[..r - 2].to_vec();
                sb.extend([0, rb[r - 1], rb[r - 2]]);
                (out, vec![k], Some(crate::atom::ReduceFn::Sum), vec![sa, sb])
            }
            _ => return Err(Error::Internal("anchor is not a Reduce or MatMul".into())),
        };
        let mut ext = out_shape.clone();
        ext.extend(&red_shape);
        // ArgMax/ArgMin reduce exactly one axis.
        let splittable = match reduce {
            Some(crate::atom::ReduceFn::ArgMax | crate::atom::ReduceFn::ArgMin) => out_shape.len(),
            _ => ext.len(),
        };
        let probes = body_accesses
            .iter()
            .enumerate()
            .map(|(k, strides)| Ok(Probe::Value(self.input(an, k)?, strides.clone())))
            .collect::<Result<Vec<_>>>()?;
        let splits = self.plan_splits(&ext, splittable, &probes);
        let (logical_out, logical_red) = (out_shape.len(), ext.len());
        let out_shape = splits.shape(0..logical_out);
        let red_shape = splits.shape(logical_out..logical_red);
        let ext = splits.shape(0..logical_red);
        let mut kb = KB { inputs: vec![], acc: None };
        let mut operands = Vec::new();
        for (k, strides) in body_accesses.into_iter().enumerate() {
            let a = ViewMap { shape: ext.clone(), strides: splits.strides(&strides), offset: 0, guards: vec![], pad: 0.0 };
            let v = self.input(an, k)?;
            operands.push(self.expr(&mut kb, v, &a)?);
        }
        let body = match operands.len() {
            1 => operands.remove(0),
            _ => {
                let b = operands.remove(1);
                bin(BinaryFn::Mul, operands.remove(0), b)
            }
        };
        let epilogue = if end == v0 {
            Expr::Acc
        } else {
            // The epilogue runs over the output axes only.
            kb.acc = Some(v0);
            let a = row_major_access(&out_shape, &out_shape);
            let n_end = match self.prod[end.index()] {
                Prod::Atom(n) => n,
                Prod::Buffer => return Err(Error::Internal("chain end without producer".into())),
            };
            let atom_end = self.atoms[n_end].clone().ok_or_else(|| Error::Internal("chain end is not an atom".into()))?;
            let e = self.node_expr(&mut kb, n_end, &atom_end, &a);
            kb.acc = None;
            e?
        };
        let k = Kernel {
            name: self.g.nodes[an].name.clone(),
            inputs: kb.inputs.iter().map(|&x| self.buffer(x)).collect::<Result<_>>()?,
            output: self.buffer(end)?,
            out_shape: out_shape.clone(),
            red_shape,
            store: affine(0, &row_major(&out_shape)),
            body: Body::Compute { reduce, body, epilogue },
        };
        Ok((k, kb.inputs))
    }

    fn scatter_kernel(&mut self, n: usize, atom: &Atom, axis: usize, v: ValueId) -> Result<(Kernel, Vec<ValueId>)> {
        let Atom::Scatter { mode, .. } = atom else {
            return Err(Error::Internal("not a scatter".into()));
        };
        let data = self.input(n, 0)?;
        let idx = self.input(n, 1)?;
        let upd = self.input(n, 2)?;
        let (_, ds) = self.ty(data)?;
        let (_, us) = self.ty(upd)?;
        let (idt, _) = self.ty(idx)?;
        self.materialize(data)?;
        let mut kb = KB { inputs: vec![], acc: None };
        let db = kb.buf(data);
        let a = row_major_access(us, us);
        let pos = self.expr(&mut kb, idx, &a)?;
        let value = self.expr(&mut kb, upd, &a)?;
        let mut coefs = row_major(ds);
        let stride = coefs[axis];
        coefs[axis] = 0;
        let k = Kernel {
            name: self.g.nodes[n].name.clone(),
            inputs: kb.inputs.iter().map(|&x| self.buffer(x)).collect::<Result<_>>()?,
            output: self.buffer(v)?,
            out_shape: us.to_vec(),
            red_shape: vec![],
            store: affine(0, &row_major(us)),
            body: Body::Scatter {
                data: db,
                mode: *mode,
                index: affine(0, &coefs),
                stride,
                extent: ds[axis] as i64,
                pos: position(pos, idt, ds[axis]),
                value,
            },
        };
        Ok((k, kb.inputs))
    }
}

/// Partitions a specialized atom graph (with host nodes) into kernels and host steps.
pub fn partition(g: &Graph) -> Result<Plan> {
    let mut p = Part::new(g)?;
    for i in 0..g.nodes.len() {
        let node = &g.nodes[i];
        if p.atoms[i].is_none() {
            for v in node.inputs.iter().flatten() {
                p.materialize(*v).context(|| format!("inputs of node '{}'", node.name))?;
            }
            p.steps.push((i, Step::Host { node: i }));
            for v in node.outputs.iter().flatten() {
                p.ready[v.index()] = true;
            }
            continue;
        }
        for v in node.outputs.iter().flatten() {
            if p.root[v.index()] && !p.absorbed[v.index()] && !matches!(p.atoms[i], Some(Atom::Const(_))) {
                p.materialize(*v)?;
            }
        }
    }
    for v in &g.outputs {
        p.materialize(*v)?;
    }
    let mut steps = p.steps;
    steps.sort_by_key(|(k, _)| *k);
    Ok(Plan { steps: steps.into_iter().map(|(_, s)| s).collect() })
}

/// Runs a plan of `g` on `inputs` (in the order of `g.inputs`); returns the outputs in the
/// order of `g.outputs`.
pub fn run_plan(g: &Graph, plan: &Plan, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
    run_plan_with(g, plan, inputs, &mut |_, k, args| eval_kernel(k, args))
}

/// Executes one kernel step: `(step index, kernel, inputs) -> output buffer`.
pub type KernelExec<'a> = dyn FnMut(usize, &Kernel, &[&Tensor]) -> Result<Tensor> + 'a;

/// Runs a plan with `exec(step index, kernel, inputs)` executing each kernel step (a
/// compiled backend); host steps run on the reference interpreter.
pub fn run_plan_with(
    g: &Graph,
    plan: &Plan,
    inputs: Vec<Tensor>,
    exec: &mut KernelExec<'_>,
) -> Result<Vec<Tensor>> {
    if inputs.len() != g.inputs.len() {
        return Err(Error::InvalidInput(format!("the model takes {} inputs, {} given", g.inputs.len(), inputs.len())));
    }
    let mut env: Vec<Option<Arc<Tensor>>> = vec![None; g.values.len()];
    for (id, t) in &g.consts {
        env[id.index()] = Some(t.clone());
    }
    for (input, t) in g.inputs.iter().zip(inputs) {
        let name = g.name(input.value);
        if t.dtype() != input.dtype {
            return Err(Error::InvalidInput(format!("input '{name}' must be {}, got {}", input.dtype, t.dtype())));
        }
        if let Some(s) = input.static_shape()
            && s != t.shape()
        {
            return Err(Error::InvalidInput(format!(
                "input '{name}' must have shape {}, got {}",
                fmt_shape(&s),
                fmt_shape(t.shape())
            )));
        }
        env[input.value.index()] = Some(Arc::new(t));
    }
    let get = |env: &[Option<Arc<Tensor>>], v: ValueId| {
        env[v.index()]
            .clone()
            .ok_or_else(|| Error::Internal(format!("value '{}' read before it was computed", g.name(v))))
    };
    for (step_index, step) in plan.steps.iter().enumerate() {
        match step {
            Step::Host { node } => {
                let node = g.nodes.get(*node).ok_or_else(|| Error::Internal("plan names no node".into()))?;
                let where_ = || format!("node '{}' ({})", node.name, node.op.kind.name());
                let mut args = Vec::with_capacity(node.inputs.len());
                for input in &node.inputs {
                    args.push(match input {
                        None => None,
                        Some(v) => Some(get(&env, *v).context(where_)?),
                    });
                }
                let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_deref()).collect();
                let out = node.op.eval(&refs, node.outputs.len()).context(where_)?;
                for (o, t) in node.outputs.iter().zip(out) {
                    if let Some(o) = o {
                        env[o.index()] = Some(Arc::new(t));
                    }
                }
            }
            Step::Kernel { kernel, inputs, output } => {
                let where_ = || format!("kernel '{}'", kernel.name);
                let args: Vec<Arc<Tensor>> = inputs.iter().map(|&v| get(&env, v)).collect::<Result<_>>().context(where_)?;
                let refs: Vec<&Tensor> = args.iter().map(|a| a.as_ref()).collect();
                let shape = match &g.value(*output).ty {
                    Some(crate::graph::ValueType { shape: Some(s), .. }) => s.clone(),
                    _ => return Err(Error::Internal(format!("kernel output '{}' has no static shape", g.name(*output)))),
                };
                let t = exec(step_index, kernel, &refs).context(where_)?;
                env[output.index()] = Some(Arc::new(t.reshaped(shape).context(where_)?));
            }
        }
    }
    g.outputs.iter().map(|&o| get(&env, o).map(Arc::unwrap_or_clone)).collect()
}

fn eval_kernel(k: &Kernel, inputs: &[&Tensor]) -> Result<Tensor> {
    crate::kernel::verify(k)?;
    k.eval(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(text: &str) -> Graph {
        let g = crate::text::parse(text).unwrap();
        crate::infer::specialize(&g, &Default::default()).unwrap()
    }

    /// Runs the plan and the atom graph on the same inputs; they must agree exactly.
    fn check(g: &Graph, plan: &Plan) {
        let inputs: Vec<Tensor> = g
            .inputs
            .iter()
            .map(|i| {
                Tensor::from_fn_f64(i.dtype, i.static_shape().unwrap(), |k| ((k * 7 % 5) as f64 - 2.0) * 0.75).unwrap()
            })
            .collect();
        let want = crate::interp::run(g, inputs.clone()).unwrap();
        let got = run_plan(g, plan, inputs).unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.shape(), b.shape());
            let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }

    fn kernels(plan: &Plan) -> Vec<&Kernel> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Kernel { kernel, .. } => Some(kernel),
                Step::Host { .. } => None,
            })
            .collect()
    }

    #[test]
    fn elementwise_operand_of_matmul_is_materialized_when_reused() {
        // exp(x) feeds a MatMul with 5 output columns: computing it once beats 5 times.
        let text = |rows: usize| {
            format!(
                r#"graph {{
  input %x: f32[{rows},4]
  input %w: f32[4,5]
  %e: f32[{rows},4] = atom.Unary@0 "e" {{fn="Exp"}} (%x)
  %y: f32[{rows},5] = atom.MatMul@0 "mm" (%e, %w)
  output %y
}}"#
            )
        };
        let g = graph(&text(3));
        let plan = partition(&g).unwrap();
        let ks = kernels(&plan);
        assert_eq!(ks.len(), 2, "{plan:#?}");
        assert_eq!(ks[0].name, "e");
        check(&g, &plan);
        // The right operand (w side) is read once per row: with one row, fusing is free.
        let g = graph(&text(1));
        let g2 = graph(
            r#"graph {
  input %x: f32[1,4]
  input %w: f32[4,5]
  %e: f32[4,5] = atom.Unary@0 "e" {fn="Exp"} (%w)
  %y: f32[1,5] = atom.MatMul@0 "mm" (%x, %e)
  output %y
}"#,
        );
        let plan = partition(&g2).unwrap();
        assert_eq!(kernels(&plan).len(), 1, "{plan:#?}");
        check(&g2, &plan);
        // The left operand is read once per column (5): materialized even for one row.
        assert_eq!(kernels(&partition(&g).unwrap()).len(), 2);
    }

    #[test]
    fn relu_of_matmul_plus_bias_is_one_kernel() {
        let g = graph(
            r#"graph {
  input %x: f32[3,4]
  input %w: f32[4,5]
  input %b: f32[5]
  %y: f32[3,5] = atom.MatMul@0 "mm" (%x, %w)
  %bb: f32[3,5] = atom.View@0 "bb" {shape=[3, 5], strides=[0, 1]} (%b)
  %z: f32[3,5] = atom.Binary@0 "add" {fn="Add"} (%y, %bb)
  const %zero: f32[] = [0.0]
  %zz: f32[3,5] = atom.View@0 "zz" {shape=[3, 5], strides=[0, 0]} (%zero)
  %r: f32[3,5] = atom.Binary@0 "relu" {fn="Max"} (%z, %zz)
  output %r
}"#,
        );
        let plan = partition(&g).unwrap();
        let ks = kernels(&plan);
        assert_eq!(ks.len(), 1, "{plan:#?}");
        assert_eq!(plan.steps.len(), 1, "{plan:#?}");
        let Body::Compute { reduce, epilogue, .. } = &ks[0].body else { panic!("not compute") };
        assert_eq!(*reduce, Some(crate::atom::ReduceFn::Sum));
        assert!(matches!(epilogue, Expr::Binary(BinaryFn::Max, _, _)), "{epilogue:?}");
        assert_eq!(ks[0].red_shape, vec![4]);
        check(&g, &plan);
    }

    #[test]
    fn clip_and_silu_diamonds_join_the_epilogue() {
        // y = mm; c = y < 0; r = c ? 0 : y (a clip reads y twice); s = r * recip(exp(-r))
        // (a path of three nodes, as SiLU's sigmoid, then r again).
        let text = |extra: &str| {
            format!(
                r#"graph {{
  input %x: f32[3,4]
  input %w: f32[4,5]
  %y: f32[3,5] = atom.MatMul@0 "mm" (%x, %w)
  const %zero: f32[] = [0.0]
  %zz: f32[3,5] = atom.View@0 "zz" {{shape=[3, 5], strides=[0, 0]}} (%zero)
  %c: bool[3,5] = atom.Binary@0 "lt" {{fn="Lt"}} (%y, %zz)
  %r: f32[3,5] = atom.Select@0 "clip" (%c, %zz, %y)
  %n: f32[3,5] = atom.Unary@0 "neg" {{fn="Neg"}} (%r)
  %e: f32[3,5] = atom.Unary@0 "exp" {{fn="Exp"}} (%n)
  %g: f32[3,5] = atom.Unary@0 "recip" {{fn="Recip"}} (%e)
  %s: f32[3,5] = atom.Binary@0 "silu" {{fn="Mul"}} (%r, %g)
  {extra}
}}"#
            )
        };
        let g = graph(&text("output %s"));
        let plan = partition(&g).unwrap();
        assert_eq!(kernels(&plan).len(), 1, "{plan:#?}");
        check(&g, &plan);
        // A diamond member read outside the diamond ends the chain there.
        let g = graph(&text("output %s\n  output %c"));
        let plan = partition(&g).unwrap();
        assert!(kernels(&plan).len() > 1, "{plan:#?}");
        check(&g, &plan);
    }

    #[test]
    fn softmax_is_a_few_kernels_and_transpose_fuses_into_the_matmul() {
        let g = graph(
            r#"graph {
  input %q: f32[2,3,4]
  input %k: f32[2,5,4]
  %kt: f32[2,4,5] = atom.View@0 "kt/View1" {shape=[2, 4, 5], strides=[20, 1, 4]} (%k)
  %s: f32[2,3,5] = atom.MatMul@0 "scores/MatMul2" (%q, %kt)
  %softmax.3: f32[2,3,1] = atom.Reduce@0 "softmax/Reduce4" {axes=[2], fn="Max"} (%s)
  %softmax.5: f32[2,3,5] = atom.View@0 "softmax/View6" {shape=[2, 3, 5], strides=[3, 1, 0]} (%softmax.3)
  %softmax.7: f32[2,3,5] = atom.Binary@0 "softmax/Binary8" {fn="Sub"} (%s, %softmax.5)
  %softmax.9: f32[2,3,5] = atom.Unary@0 "softmax/Unary10" {fn="Exp"} (%softmax.7)
  %softmax.11: f32[2,3,1] = atom.Reduce@0 "softmax/Reduce12" {axes=[2], fn="Sum"} (%softmax.9)
  %softmax.13: f32[2,3,1] = atom.Unary@0 "softmax/Unary14" {fn="Recip"} (%softmax.11)
  %softmax.15: f32[2,3,5] = atom.View@0 "softmax/View16" {shape=[2, 3, 5], strides=[3, 1, 0]} (%softmax.13)
  %p: f32[2,3,5] = atom.Binary@0 "softmax/Binary17" {fn="Mul"} (%softmax.9, %softmax.15)
  output %p
}"#,
        );
        let plan = partition(&g).unwrap();
        let ks = kernels(&plan);
        // matmul, max, exp(s - max), sum + recip, the product.
        assert!(ks.len() <= 5, "{} kernels: {plan:#?}", ks.len());
        // The matmul kernel reads k directly (the transpose is its load index).
        let mm = ks.iter().find(|k| k.name == "scores/MatMul2").unwrap();
        assert_eq!(mm.inputs.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["q", "k"]);
        assert!(ks.iter().all(|k| k.name != "kt/View1"));
        let Body::Compute { body, .. } = &mm.body else { panic!("not compute") };
        let Expr::Binary(BinaryFn::Mul, _, b) = body else { panic!("{body:?}") };
        // Axes (b, m, n, k): k[b, n, k] = 20 b + 4 n + k.
        assert!(matches!(&**b, Expr::Load { index, .. } if index.coefs == [20, 0, 4, 1]), "{b:?}");
        check(&g, &plan);
    }

    #[test]
    fn two_anchors_sharing_an_epilogue() {
        let g = graph(
            r#"graph {
  input %x: f32[3,4]
  input %w: f32[4,5]
  %a: f32[3,5] = atom.MatMul@0 "mm1" (%x, %w)
  %b: f32[3,5] = atom.MatMul@0 "mm2" (%x, %w)
  %c: f32[3,5] = atom.Binary@0 "add" {fn="Add"} (%a, %b)
  %r: f32[3,1] = atom.Reduce@0 "sum" {axes=[1], fn="Sum"} (%c)
  %s: f32[3,1] = atom.Reduce@0 "max" {axes=[1], fn="Max"} (%c)
  %t: f32[3,1] = atom.Binary@0 "sub" {fn="Sub"} (%r, %s)
  output %t
}"#,
        );
        let plan = partition(&g).unwrap();
        // mm2; mm1 + add; sum; max - sum.
        assert_eq!(plan.num_kernels(), 4, "{plan:#?}");
        check(&g, &plan);
    }

    #[test]
    fn padded_views_compose_and_scatter_gather_run() {
        let g = graph(
            r#"graph {
  input %x: f32[2,3]
  input %i: i64[2,3]
  %p: f32[2,5] = atom.View@0 "pad" {shape=[2, 5], strides=[3, 1], offset=-1, guards=[-1, 3, 0, 1], pad=-1.0} (%x)
  %t: f32[5,2] = atom.View@0 "t" {shape=[5, 2], strides=[1, 5]} (%p)
  %e: f32[5,2] = atom.Unary@0 "exp" {fn="Exp"} (%t)
  %idx: i64[2,3] = atom.Unary@0 "abs" {fn="Abs"} (%i)
  %g: f32[2,3] = atom.Gather@0 "g" {axis=1} (%x, %idx)
  %s: f32[2,3] = atom.Scatter@0 "s" {axis=1, mode="Add"} (%x, %idx, %g)
  output %e
  output %s
}"#,
        );
        let plan = partition(&g).unwrap();
        assert!(kernels(&plan).iter().all(|k| k.name != "pad"), "{plan:#?}");
        check(&g, &plan);
    }

    /// The number of guarded loads in `e`.
    fn guarded_loads(e: &Expr) -> usize {
        match e {
            Expr::Load { guards, .. } => usize::from(!guards.is_empty()),
            Expr::Gather { pos, .. } => guarded_loads(pos),
            Expr::Unary(_, a) | Expr::Cast(_, a) => guarded_loads(a),
            Expr::Binary(_, a, b) => guarded_loads(a) + guarded_loads(b),
            Expr::Select(c, a, b) => guarded_loads(c) + guarded_loads(a) + guarded_loads(b),
            Expr::Const { .. } | Expr::Axis(_) | Expr::Acc => 0,
        }
    }

    /// A 3x3 stride-2 pad-1 conv of x [1, 2, 6, 6] by w [4, 2*3*3]: the padded window
    /// [2, 3, 3, 3, 3] read as [18, 9] by a MatMul, then a Neg.
    const STRIDED_CONV: &str = r#"graph {
  input %x: f32[1,2,6,6]
  input %w: f32[4,18]
  %win: f32[2,3,3,3,3] = atom.View@0 "win" {shape=[2, 3, 3, 3, 3], strides=[36, 6, 1, 12, 2], offset=-7, guards=[-1, 6, 0, 1, 0, 2, 0, -1, 6, 0, 0, 1, 0, 2], pad=0.0} (%x)
  %col: f32[18,9] = atom.View@0 "col" {shape=[18, 9], strides=[9, 1]} (%win)
  %y: f32[4,9] = atom.MatMul@0 "mm" (%w, %col)
  %r: f32[4,9] = atom.Unary@0 "neg" {fn="Neg"} (%y)
  output %r
}"#;

    #[test]
    fn a_split_padded_window_is_read_without_guards() {
        // Split, the padded x [2, 7, 7] (the window never reaches a high border) is a
        // kernel of its own and the MatMul reads it without a guard.
        let mut g = graph(STRIDED_CONV);
        assert_eq!(crate::padding::materialize_padded_windows(&mut g).unwrap(), 1);
        let plan = partition(&g).unwrap();
        let ks = kernels(&plan);
        assert_eq!(ks.len(), 2, "{plan:#?}");
        assert_eq!(ks[0].name, "win.pad");
        assert_eq!(ks[0].output.numel, 2 * 7 * 7);
        let Body::Compute { body, .. } = &ks[1].body else { panic!("not a compute kernel") };
        assert_eq!(guarded_loads(body), 0, "{:#?}", ks[1]);
        check(&g, &plan);
    }

    #[test]
    fn im2col_window_merged_for_a_matmul_splits_the_kernel_axes() {
        // The window read as [18, 9] cannot compose over the merged axes; the kernel loops
        // over [4, 3, 3] outputs and [2, 3, 3] reductions instead of copying the window.
        let g = graph(STRIDED_CONV);
        let plan = partition(&g).unwrap();
        let ks = kernels(&plan);
        assert_eq!(ks.len(), 1, "{plan:#?}");
        assert_eq!((ks[0].out_shape.as_slice(), ks[0].red_shape.as_slice()), ([4, 3, 3].as_slice(), [2, 3, 3].as_slice()));
        check(&g, &plan);
    }
}
