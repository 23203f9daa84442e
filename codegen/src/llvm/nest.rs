//! The loop nest of one kernel in LLVM IR, shaped by its [`Schedule`] exactly as the
//! Cranelift backend's `nest.rs` shapes it:
//!
//! ```text
//! for f in [begin, end):                      // the parallel range: the first P output
//!     (i0, .., iP-1) = unflatten(f)           // axes (a blocked axis counts its blocks)
//!     for the other output axes (in order, but the blocked and the vector axis):
//!         for rows of the blocked axis, MR at a time, then one at a time:
//!             for columns of the vector axis, NR vectors at a time:
//!                 tile(rows, columns)
//!             tile(rows, the rest: up to NR vectors, the last one partial)
//! ```
//!
//! A tile is unroll-and-jam: its MR x NR accumulators stay in registers through the
//! reduction loops; each reduction step evaluates the body once per point of the tile with
//! loads cached by (node, offsets of the axes they depend on). Vectors have the schedule's
//! lanes (16 f32 with AVX-512); the partial vector at the end of the vector axis (also the
//! whole axis when it is shorter than a vector) runs with its lanes past the end masked
//! (`llvm.masked.load`/`store`), never on scalars. A Sum of products accumulates with `llvm.fma` when the
//! target has FMA.

use super::lower::{Lower, Result, Val, memory_type};
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

/// The rows `[lo, hi)` of the blocked axis a share covers (i64 values).
type Rows = Option<(String, String)>;

impl Lower<'_> {
    /// A counter slot per output and reduction axis with its extent (tile offsets 0), the
    /// output axes live, the store's coefficients checked; returns the number of output
    /// axes. The entry of both the CPU nest and the GPU thread function.
    pub(super) fn declare_axes(&mut self) -> Result<usize> {
        let k = self.k;
        for &n in k.out_shape.iter().chain(&k.red_shape) {
            let n = i64::try_from(n).map_err(|_| self.invalid("extent too large"))?;
            self.extents.push(n);
            let slot = self.slot("i64");
            self.axes.push(slot);
            self.offsets.push(0);
        }
        let r = k.out_shape.len();
        self.live = r;
        self.check_coefs(&k.store)?;
        Ok(r)
    }

    /// The whole function body: entry, the nest over the share `[begin, end)` (function
    /// arguments `%begin`, `%end`, buffers `%buffers`), error exits.
    pub(super) fn kernel(&mut self, s: &Schedule) -> Result<()> {
        let k = self.k;
        for b in k.inputs.iter().chain([&k.output]) {
            self.scalar_ty(b.dtype)?;
        }
        let Body::Compute { reduce, body, epilogue } = &k.body else {
            return Err(self.unsupported("Scatter kernels are not supported by the LLVM backend yet"));
        };
        if reduce.is_none() && !k.red_shape.is_empty() {
            return Err(self.invalid("reduction axes without a reduction"));
        }
        for i in 0..=k.inputs.len() {
            let p = self.ins(format!("getelementptr inbounds ptr, ptr %buffers, i64 {i}"));
            let base = self.ins(format!("load ptr, ptr {p}, align 8"));
            self.bases.push(base);
        }
        let r = self.declare_axes()?;
        let done = self.block("done");
        if !self.extents[..r].contains(&0) {
            if r > 0 {
                match self.range(&k.store) {
                    Some((lo, hi)) if lo >= 0 && hi < k.output.numel as i128 => {}
                    _ => return Err(self.invalid("the store index leaves the output buffer")),
                }
            }
            let nest = self.nest(s, *reduce, body, epilogue)?;
            let any = self.ins("icmp slt i64 %begin, %end");
            let go = self.block("go");
            self.branch(&any, &go, &done);
            self.start(&go);
            if nest.parallel == 0 {
                self.inner(&nest, 0, &None)?;
            } else {
                let f = self.slot("i64");
                self.for_range(&f, Some("%begin"), "%end", 1, &mut |l| {
                    let rows = l.unflatten(&nest, &f);
                    l.inner(&nest, 0, &rows)
                })?;
            }
        }
        self.jump(&done);
        self.start(&done);
        self.emit("ret i32 0");
        for (e, blk) in std::mem::take(&mut self.err_blocks) {
            self.start(&blk);
            self.emit(format!("ret i32 {}", e as i32));
        }
        Ok(())
    }

    /// The schedule's steps as this backend applies them (a Vectorize of a kernel whose
    /// values have no vector form here runs scalar).
    fn nest<'e>(&mut self, s: &Schedule, reduce: Option<ReduceFn>, body: &'e Expr, epilogue: &'e Expr) -> Result<Nest<'e>> {
        let r = self.k.out_shape.len();
        if let Some((_, lanes)) = s.vectorize() {
            if !(1..=64).contains(&lanes) {
                return Err(self.unsupported(format!("vectors of {lanes} f32 lanes (the LLVM backend takes 1 to 64)")));
            }
            self.vector_lanes = lanes as i64;
        }
        self.vec_axis = s
            .vectorize()
            .filter(|&(_, lanes)| lanes > 1)
            .map(|(a, _)| a)
            .filter(|&a| self.vectorizable(a, reduce.as_ref(), body, epilogue));
        let block = s.register_block();
        let unroll = match (s.unroll(), self.vec_axis) {
            (Some((_, f)), Some(_)) => f,
            _ => 1,
        };
        let parallel = s.parallel_axes();
        let loops = (parallel..r).filter(|&a| Some(a) != self.vec_axis && Some(a) != block.map(|b| b.0)).collect();
        Ok(Nest { reduce, body, epilogue, parallel, block, unroll, loops })
    }

    /// Sets the parallel axes from the flat index in slot `f`; for a blocked parallel axis,
    /// returns the rows `[lo, hi)` of its block.
    fn unflatten(&mut self, nest: &Nest<'_>, f: &str) -> Rows {
        let mut rem = self.read("i64", f);
        let mut rows = None;
        for a in (0..nest.parallel).rev() {
            let n = self.extents[a];
            let blocked = nest.block.filter(|&(b, _)| b == a).map(|(_, mr)| mr as i64);
            let units = blocked.map_or(n, |mr| (n as u64).div_ceil(mr as u64) as i64);
            let idx = if a == 0 {
                rem.clone()
            } else {
                let idx = self.ins(format!("urem i64 {rem}, {units}"));
                rem = self.ins(format!("udiv i64 {rem}, {units}"));
                idx
            };
            match blocked {
                None => {
                    let slot = self.axes[a].clone();
                    self.write("i64", &idx, &slot);
                }
                Some(mr) => {
                    let lo = self.ins(format!("mul i64 {idx}, {mr}"));
                    let top = self.ins(format!("add i64 {lo}, {mr}"));
                    let hi = self.intrinsic("smin", "i64", &[&top, &n.to_string()]);
                    rows = Some((lo, hi));
                }
            }
        }
        rows
    }

    /// The loops inside the parallel range, from `nest.loops[depth]` on.
    fn inner(&mut self, nest: &Nest<'_>, depth: usize, rows: &Rows) -> Result<()> {
        if let Some(&a) = nest.loops.get(depth) {
            let slot = self.axes[a].clone();
            let n = self.extents[a].to_string();
            return self.for_range(&slot, Some("0"), &n, 1, &mut |l| l.inner(nest, depth + 1, rows));
        }
        match nest.block {
            None => self.columns(nest, 1),
            Some((b, mr)) => {
                let (lo, hi) = match rows {
                    Some((lo, hi)) => (lo.clone(), hi.clone()),
                    None => ("0".to_string(), self.extents[b].to_string()),
                };
                let slot = self.axes[b].clone();
                self.write("i64", &lo, &slot);
                if mr > 1 {
                    self.for_range(&slot, None, &hi, mr as i64, &mut |l| l.columns(nest, mr))?;
                }
                self.for_range(&slot, None, &hi, 1, &mut |l| l.columns(nest, 1))
            }
        }
    }

    /// The vector axis in tiles of `rows` rows: `unroll` vectors at a time, then one tile
    /// of the rest (at most `unroll` vectors, the last one partial, its lanes masked);
    /// without a vector axis, one tile.
    fn columns(&mut self, nest: &Nest<'_>, rows: usize) -> Result<()> {
        let Some(v) = self.vec_axis else {
            return self.tile(nest, rows, 1, 1, 1);
        };
        let slot = self.axes[v].clone();
        let n = self.extents[v];
        let lanes = self.vector_lanes;
        self.write("i64", "0", &slot);
        self.vectorized = true;
        let cols = nest.unroll;
        let width = lanes * cols as i64;
        self.for_range(&slot, None, &n.to_string(), width, &mut |l| l.tile(nest, rows, cols, lanes, lanes))?;
        let rest = n % width;
        if rest > 0 {
            let vectors = (rest + lanes - 1) / lanes;
            let last = rest - (vectors - 1) * lanes;
            self.tile(nest, rows, vectors as usize, lanes, last)?;
        }
        Ok(())
    }

    /// `while var + step <= end { body; var += step }` on the counter in `slot`, from
    /// `start` or from where it stands.
    fn for_range(
        &mut self,
        slot: &str,
        start: Option<&str>,
        end: &str,
        step: i64,
        body: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        if let Some(s) = start {
            self.write("i64", s, slot);
        }
        let (header, inside, exit) = (self.block("head"), self.block("body"), self.block("exit"));
        self.jump(&header);
        self.start(&header);
        let i = self.read("i64", slot);
        let last = self.ins(format!("add i64 {i}, {step}"));
        let go = self.ins(format!("icmp sle i64 {last}, {end}"));
        self.branch(&go, &inside, &exit);
        self.start(&inside);
        body(self)?;
        let i = self.read("i64", slot);
        let next = self.ins(format!("add i64 {i}, {step}"));
        self.write("i64", &next, slot);
        self.jump(&header);
        self.start(&exit);
        Ok(())
    }

    /// Sets the tile offsets of point (`row`, `col`) of a tile of `cols` columns whose last
    /// one has `last` valid lanes.
    fn at(&mut self, nest: &Nest<'_>, (row, col): (usize, usize), cols: usize, last: i64) {
        if let Some((b, _)) = nest.block {
            self.offsets[b] = row as i64;
        }
        if let Some(v) = self.vec_axis {
            self.offsets[v] = col as i64 * self.lanes;
        }
        self.valid = if col + 1 == cols { last } else { self.lanes };
    }

    /// One micro-tile: `rows` rows (along the blocked axis) by `cols` columns of `lanes`
    /// points (along the vector axis) from the current loop counters, the last column
    /// with only its first `last` lanes (the end of the vector axis).
    fn tile(&mut self, nest: &Nest<'_>, rows: usize, cols: usize, lanes: i64, last: i64) -> Result<()> {
        let r = self.k.out_shape.len();
        self.lanes = lanes;
        let points: Vec<(usize, usize)> = (0..rows).flat_map(|i| (0..cols).map(move |j| (i, j))).collect();
        let mut accs: Vec<Val> = Vec::with_capacity(points.len());
        match nest.reduce {
            None => {
                self.live = r;
                self.cache.clear();
                for &(i, j) in &points {
                    self.at(nest, (i, j), cols, last);
                    accs.push(self.expr(nest.body)?);
                }
            }
            Some(f @ (ReduceFn::ArgMax | ReduceFn::ArgMin)) => {
                for &(i, j) in &points {
                    self.at(nest, (i, j), cols, last);
                    self.cache.clear();
                    accs.push(self.arg_reduce(f, nest.body)?);
                }
            }
            Some(f) => self.reduce_tile(nest, f, &points, (cols, last), &mut accs)?,
        }
        self.live = r;
        self.cache.clear();
        let out = self.k.inputs.len();
        for (&(i, j), acc) in points.iter().zip(accs) {
            self.at(nest, (i, j), cols, last);
            self.acc = Some(acc);
            let (v, d) = self.expr(nest.epilogue)?;
            self.acc = None;
            if d != self.k.output.dtype {
                return Err(self.invalid(format!("the epilogue gives {d}, the output is {}", self.k.output.dtype)));
            }
            let idx = self.affine(&self.k.store)?;
            let addr = self.address(out, &idx, d);
            if d == DType::Bool {
                let byte = self.ins(format!("zext i1 {v} to i8"));
                self.emit(format!("store i8 {byte}, ptr {addr}, align 1"));
            } else if let Some(mask) = self.valid_mask() {
                let (ty, n) = (self.shaped(memory_type(d)), self.lanes);
                self.decls.insert(format!("declare void @llvm.masked.store.v{n}f32.p0({ty}, ptr, i32 immarg, <{n} x i1>)"));
                self.emit(format!("call void @llvm.masked.store.v{n}f32.p0({ty} {v}, ptr {addr}, i32 4, <{n} x i1> {mask})"));
            } else {
                let ty = self.shaped(memory_type(d));
                self.emit(format!("store {ty} {v}, ptr {addr}, align {}", d.size()));
            }
        }
        self.cache.clear();
        self.offsets.iter_mut().for_each(|o| *o = 0);
        self.lanes = 1;
        self.valid = 1;
        Ok(())
    }

    /// The reduction of every point of a tile, jammed: one set of reduction loops, the
    /// accumulators in slots (registers after `mem2reg`).
    fn reduce_tile(&mut self, nest: &Nest<'_>, f: ReduceFn, points: &[(usize, usize)], (cols, last): (usize, i64), accs: &mut Vec<Val>) -> Result<()> {
        let r = self.k.out_shape.len();
        self.live = self.axes.len();
        let d = self.dtype_of(nest.body)?;
        let ty = self.ty(d)?;
        let init = self.identity(f, d)?;
        let init = self.splat(&init, d)?;
        if self.extents[r..].contains(&0) {
            accs.extend(points.iter().map(|_| (init.clone(), d)));
            return Ok(());
        }
        let slots: Vec<String> = points
            .iter()
            .map(|_| {
                let s = self.slot(&ty);
                self.write(&ty, &init, &s);
                s
            })
            .collect();
        let mut headers = Vec::new();
        for a in r..self.axes.len() {
            headers.push(self.open_loop(a, "0"));
        }
        self.cache.clear();
        let fma = match nest.body {
            Expr::Binary(BinaryFn::Mul, x, y) if self.fma && f == ReduceFn::Sum && d == DType::F32 => Some((&**x, &**y)),
            _ => None,
        };
        for (&(i, j), slot) in points.iter().zip(&slots) {
            self.at(nest, (i, j), cols, last);
            let next = match fma {
                Some((x, y)) => {
                    let (x, _) = self.expr(x)?;
                    let (y, _) = self.expr(y)?;
                    let a = self.read(&ty, slot);
                    self.used_fma = true;
                    self.intrinsic("fma", &ty, &[&x, &y, &a])
                }
                None => {
                    let (v, _) = self.expr(nest.body)?;
                    let a = self.read(&ty, slot);
                    self.combine(f, d, &a, &v)?
                }
            };
            self.write(&ty, &next, slot);
        }
        self.cache.clear();
        for (i, a) in (r..self.axes.len()).enumerate().rev() {
            let end = self.extents[a];
            self.close_loop(a, &headers[i], 1, end);
        }
        for slot in slots {
            accs.push((self.read(&ty, &slot), d));
        }
        Ok(())
    }
}
