//! The loop nest of one kernel, shaped by its [`Schedule`]:
//!
//! ```text
//! for f in [begin, end):                      // the parallel range: the first P output
//!     (i0, .., iP-1) = unflatten(f)           // axes (a blocked axis counts its blocks)
//!     for the other output axes (in order, but the blocked and the vector axis):
//!         for rows of the blocked axis, MR at a time, then one at a time:
//!             for columns of the vector axis, NR vectors at a time, then one vector,
//!             then one point at a time:
//!                 tile(rows, columns)
//! ```
//!
//! A tile is unroll-and-jam: its MR x NR accumulators stay in registers through the
//! reduction loops; each reduction step evaluates the body once per point of the tile with
//! loads cached by (node, offsets of the axes they depend on), so a load invariant along
//! the vector axis is read once per row and broadcast, and one invariant along the blocked
//! axis once per column. A Sum of products accumulates with `fma` when the ISA has it.

use super::lower::{LANES, Lower, Result};
use super::scatter::Scatter;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::Variable;
use cranelift_module::Module;
use ir::atom::{BinaryFn, ReduceFn};
use ir::dtype::DType;
use ir::kernel::{Body, Expr};
use ir::schedule::Schedule;

/// The schedule as the nest applies it.
struct Nest<'e> {
    reduce: Option<ReduceFn>,
    body: &'e Expr,
    epilogue: &'e Expr,
    /// Leading output axes that form the parallel range.
    parallel: usize,
    /// The blocked axis and its rows per tile.
    block: Option<(usize, usize)>,
    /// Vectors per row of a tile (1 without unrolling).
    unroll: usize,
    /// Output axes looped over one by one inside the parallel range, outermost first.
    loops: Vec<usize>,
}

impl<M: Module> Lower<'_, '_, M> {
    /// The whole function: entry, the nest over the share `[begin, end)`, error exits.
    pub(super) fn kernel(&mut self, s: &Schedule) -> Result<()> {
        let k = self.k;
        for b in k.inputs.iter().chain([&k.output]) {
            self.ty(b.dtype)?;
        }
        let (reduce, body, epilogue) = match &k.body {
            Body::Compute {
                reduce,
                body,
                epilogue,
            } => (reduce, body, epilogue),
            Body::Scatter { .. } if !s.steps.is_empty() => {
                return Err(self.invalid(format!("schedule '{s}' on a scatter kernel")));
            }
            Body::Scatter { .. } => (&None, &Expr::Acc, &Expr::Acc),
        };
        if reduce.is_none() && !k.red_shape.is_empty() {
            return Err(self.invalid("reduction axes without a reduction"));
        }
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let (bufs, begin, end) = (params[0], params[1], params[2]);
        let ptr_bytes = i32::from(self.ptr.bytes() as u8);
        for i in 0..=k.inputs.len() {
            let off = i32::try_from(i)
                .ok()
                .and_then(|i| i.checked_mul(ptr_bytes))
                .ok_or_else(|| self.unsupported("too many inputs"))?;
            let base = self
                .b
                .ins()
                .load(self.ptr, MemFlagsData::trusted(), bufs, off);
            self.bases.push(base);
        }
        for &n in k.out_shape.iter().chain(&k.red_shape) {
            let n = i64::try_from(n).map_err(|_| self.invalid("extent too large"))?;
            self.extents.push(n);
            let v = self.b.declare_var(types::I64);
            self.axes.push(v);
            self.offsets.push(0);
        }
        let r = k.out_shape.len();
        self.live = r;
        let done = self.b.create_block();
        if let Body::Scatter { data, mode, index, stride, extent, pos, value } = &k.body {
            self.scatter(&Scatter { data: *data, mode: *mode, index, stride: *stride, extent: *extent, pos, value })?;
        } else if !self.extents[..r].contains(&0) {
            self.check_coefs(&k.store)?;
            if r > 0 {
                match self.range(&k.store) {
                    Some((lo, hi)) if lo >= 0 && hi < k.output.numel as i128 => {}
                    _ => return Err(self.invalid("the store index leaves the output buffer")),
                }
            }
            let nest = self.nest(s, *reduce, body, epilogue)?;
            let any = self.b.ins().icmp(IntCC::SignedLessThan, begin, end);
            let go = self.b.create_block();
            self.b.ins().brif(any, go, &[], done, &[]);
            self.b.switch_to_block(go);
            if nest.parallel == 0 {
                self.inner(&nest, 0, None)?;
            } else {
                let f = self.b.declare_var(types::I64);
                self.for_range(f, Some(begin), end, 1, &mut |l| {
                    let range = l.unflatten(&nest, f);
                    l.inner(&nest, 0, range)
                })?;
            }
        }
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        let zero = self.b.ins().iconst(types::I32, 0);
        self.b.ins().return_(&[zero]);
        for (e, blk) in std::mem::take(&mut self.err_blocks) {
            self.b.switch_to_block(blk);
            let code = self.b.ins().iconst(types::I32, e as i64);
            self.b.ins().return_(&[code]);
        }
        Ok(())
    }

    /// The schedule's steps as this backend applies them (a Vectorize of a kernel whose
    /// values have no vector form here runs scalar).
    fn nest<'e>(
        &mut self,
        s: &Schedule,
        reduce: Option<ReduceFn>,
        body: &'e Expr,
        epilogue: &'e Expr,
    ) -> Result<Nest<'e>> {
        let r = self.k.out_shape.len();
        if let Some((_, lanes)) = s.vectorize()
            && lanes as i64 != LANES
        {
            return Err(self.unsupported(format!(
                "vectors of {lanes} f32 lanes (Cranelift has {LANES})"
            )));
        }
        self.vec_axis = s
            .vectorize()
            .map(|(a, _)| a)
            .filter(|&a| self.vectorizable(a, reduce.as_ref(), body, epilogue));
        let block = s.register_block();
        let unroll = match (s.unroll(), self.vec_axis) {
            (Some((_, f)), Some(_)) => f,
            _ => 1,
        };
        let parallel = s.parallel_axes();
        let loops = (parallel..r)
            .filter(|&a| Some(a) != self.vec_axis && Some(a) != block.map(|b| b.0))
            .collect();
        Ok(Nest {
            reduce,
            body,
            epilogue,
            parallel,
            block,
            unroll,
            loops,
        })
    }

    /// Sets the parallel axes from the flat index `f`; for a blocked parallel axis, returns
    /// the rows `[lo, hi)` of its block.
    fn unflatten(&mut self, nest: &Nest<'_>, f: Variable) -> Option<(Value, Value)> {
        let mut rem = self.b.use_var(f);
        let mut rows = None;
        for a in (0..nest.parallel).rev() {
            let n = self.extents[a];
            let blocked = nest.block.filter(|&(b, _)| b == a).map(|(_, mr)| mr as i64);
            let units = blocked.map_or(n, |mr| (n as u64).div_ceil(mr as u64) as i64);
            let idx = if a == 0 {
                rem
            } else {
                let u = self.b.ins().iconst(types::I64, units);
                let idx = self.b.ins().urem(rem, u);
                rem = self.b.ins().udiv(rem, u);
                idx
            };
            match blocked {
                None => self.b.def_var(self.axes[a], idx),
                Some(mr) => {
                    let lo = self.b.ins().imul_imm_s(idx, mr);
                    let top = self.b.ins().iadd_imm_s(lo, mr);
                    let n = self.b.ins().iconst(types::I64, n);
                    let hi = self.b.ins().smin(top, n);
                    rows = Some((lo, hi));
                }
            }
        }
        rows
    }

    /// The loops inside the parallel range, from `nest.loops[depth]` on.
    fn inner(&mut self, nest: &Nest<'_>, depth: usize, rows: Option<(Value, Value)>) -> Result<()> {
        if let Some(&a) = nest.loops.get(depth) {
            let zero = self.b.ins().iconst(types::I64, 0);
            let n = self.b.ins().iconst(types::I64, self.extents[a]);
            return self.for_range(self.axes[a], Some(zero), n, 1, &mut |l| {
                l.inner(nest, depth + 1, rows)
            });
        }
        match nest.block {
            None => self.columns(nest, 1),
            Some((b, mr)) => {
                let (lo, hi) = match rows {
                    Some(r) => r,
                    None => {
                        let zero = self.b.ins().iconst(types::I64, 0);
                        let n = self.b.ins().iconst(types::I64, self.extents[b]);
                        (zero, n)
                    }
                };
                let var = self.axes[b];
                self.b.def_var(var, lo);
                if mr > 1 {
                    self.for_range(var, None, hi, mr as i64, &mut |l| l.columns(nest, mr))?;
                }
                self.for_range(var, None, hi, 1, &mut |l| l.columns(nest, 1))
            }
        }
    }

    /// The vector axis in tiles of `rows` rows: `unroll` vectors, then one vector, then one
    /// point at a time; without a vector axis, one tile.
    fn columns(&mut self, nest: &Nest<'_>, rows: usize) -> Result<()> {
        let Some(v) = self.vec_axis else {
            return self.tile(nest, rows, 1, 1);
        };
        let var = self.axes[v];
        let n = self.extents[v];
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.def_var(var, zero);
        let end = self.b.ins().iconst(types::I64, n);
        if n >= LANES {
            self.vectorized = true;
            if nest.unroll > 1 {
                let cols = nest.unroll;
                self.for_range(var, None, end, LANES * cols as i64, &mut |l| {
                    l.tile(nest, rows, cols, LANES)
                })?;
            }
            self.for_range(var, None, end, LANES, &mut |l| l.tile(nest, rows, 1, LANES))?;
        }
        self.for_range(var, None, end, 1, &mut |l| l.tile(nest, rows, 1, 1))
    }

    /// `while var + step <= end { body; var += step }`, from `start` or from where `var`
    /// stands.
    pub(super) fn for_range(
        &mut self,
        var: Variable,
        start: Option<Value>,
        end: Value,
        step: i64,
        body: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        if let Some(s) = start {
            self.b.def_var(var, s);
        }
        let header = self.b.create_block();
        let inside = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(var);
        let last = self.b.ins().iadd_imm_s(i, step);
        let go = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, last, end);
        self.b.ins().brif(go, inside, &[], exit, &[]);
        self.b.switch_to_block(inside);
        body(self)?;
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// Sets the tile offsets of point (`row`, `col`).
    fn at(&mut self, nest: &Nest<'_>, row: usize, col: usize) {
        if let Some((b, _)) = nest.block {
            self.offsets[b] = row as i64;
        }
        if let Some(v) = self.vec_axis {
            self.offsets[v] = col as i64 * self.lanes;
        }
    }

    /// One micro-tile: `rows` rows (along the blocked axis) by `cols` columns of `lanes`
    /// points (along the vector axis) from the current loop counters.
    fn tile(&mut self, nest: &Nest<'_>, rows: usize, cols: usize, lanes: i64) -> Result<()> {
        let r = self.k.out_shape.len();
        self.lanes = lanes;
        let points: Vec<(usize, usize)> = (0..rows)
            .flat_map(|i| (0..cols).map(move |j| (i, j)))
            .collect();
        let mut accs: Vec<(Value, DType)> = Vec::with_capacity(points.len());
        match nest.reduce {
            None => {
                self.live = r;
                self.cache.clear();
                for &(i, j) in &points {
                    self.at(nest, i, j);
                    accs.push(self.expr(nest.body)?);
                }
            }
            Some(f @ (ReduceFn::ArgMax | ReduceFn::ArgMin)) => {
                for &(i, j) in &points {
                    self.at(nest, i, j);
                    self.cache.clear();
                    accs.push(self.arg_reduce(f, nest.body)?);
                }
            }
            Some(f) => self.reduce_tile(nest, f, &points, &mut accs)?,
        }
        self.live = r;
        self.cache.clear();
        for (&(i, j), &acc) in points.iter().zip(&accs) {
            self.at(nest, i, j);
            self.acc = Some(acc);
            let (v, d) = self.expr(nest.epilogue)?;
            self.acc = None;
            if d != self.k.output.dtype {
                return Err(self.invalid(format!(
                    "the epilogue gives {d}, the output is {}",
                    self.k.output.dtype
                )));
            }
            let idx = self.affine(&self.k.store)?;
            let addr = self.address(self.k.inputs.len(), idx, d);
            self.b
                .ins()
                .store(MemFlagsData::new().with_notrap(), v, addr, 0);
        }
        self.cache.clear();
        self.offsets.iter_mut().for_each(|o| *o = 0);
        self.lanes = 1;
        Ok(())
    }

    /// The reduction of every point of a tile, jammed: one set of reduction loops, the
    /// accumulators in variables.
    fn reduce_tile(
        &mut self,
        nest: &Nest<'_>,
        f: ReduceFn,
        points: &[(usize, usize)],
        accs: &mut Vec<(Value, DType)>,
    ) -> Result<()> {
        let r = self.k.out_shape.len();
        self.live = self.axes.len();
        let d = self.dtype_of(nest.body)?;
        let ty = self.ty(d)?;
        let init = self.identity(f, d)?;
        let (init, ty) = if d == DType::F32 && self.lanes > 1 {
            (self.splat(init), types::F32X4)
        } else {
            (init, ty)
        };
        if self.extents[r..].contains(&0) {
            accs.extend(points.iter().map(|_| (init, d)));
            return Ok(());
        }
        let vars: Vec<Variable> = points
            .iter()
            .map(|_| {
                let v = self.b.declare_var(ty);
                self.b.def_var(v, init);
                v
            })
            .collect();
        let mut headers = Vec::new();
        for a in r..self.axes.len() {
            let zero = self.b.ins().iconst(types::I64, 0);
            headers.push(self.open_loop(a, zero));
        }
        self.cache.clear();
        let fma = match nest.body {
            Expr::Binary(BinaryFn::Mul, x, y)
                if self.fma && f == ReduceFn::Sum && d == DType::F32 =>
            {
                Some((&**x, &**y))
            }
            _ => None,
        };
        for (&(i, j), &var) in points.iter().zip(&vars) {
            self.at(nest, i, j);
            let next = match fma {
                Some((x, y)) => {
                    let (x, _) = self.expr(x)?;
                    let (y, _) = self.expr(y)?;
                    let a = self.b.use_var(var);
                    self.used_fma = true;
                    self.b.ins().fma(x, y, a)
                }
                None => {
                    let (v, _) = self.expr(nest.body)?;
                    let a = self.b.use_var(var);
                    self.combine(f, d, a, v)?
                }
            };
            self.b.def_var(var, next);
        }
        self.cache.clear();
        for (i, a) in (r..self.axes.len()).enumerate().rev() {
            let stop = self.b.ins().iconst(types::I64, self.extents[a]);
            self.close_loop(a, headers[i], 1, stop);
        }
        for var in vars {
            accs.push((self.b.use_var(var), d));
        }
        Ok(())
    }
}
