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
//! With a `Tile` of the vector axis (cache blocks of NC columns) the block loop runs
//! outside the parallel range, so that one call over `[begin, end)` runs all the rows of
//! its share against one block of the shared operand (and packs it once):
//!
//! ```text
//! for the other output axes (in order, but the parallel, blocked and vector ones):
//!     for each block [j0, j1) of NC columns:
//!         pack(j0, j1)                        // with `Pack`: the packed load's values
//!         for f in [begin, end): unflatten(f); rows and columns in [j0, j1) as above
//! ```
//!
//! `Pack` copies what the body's load of the packed input reads for the block (every
//! reduction point x the block's columns, guards and padding resolved by the ordinary
//! load) into a stack scratch in micro-panels of W = lanes x NR columns: element (reduction
//! point r, column j0 + c) lives at `(c / W) * R * W + r * W + c % W` (R reduction points),
//! so a micro-tile of W columns reads W consecutive floats per reduction step. The last,
//! partial panel keeps the width W; its columns past j1 are never written nor read.
//!
//! An elementwise kernel whose loads are guarded along an axis by that axis alone (a pad's
//! borders) runs that axis's loop (its rows, or the vector axis's columns) in three
//! segments: the span where those guards hold, and the two sides where one fails. Each
//! segment narrows the axis's range, and the range check that drops a guard proven to hold
//! also turns a load whose guard provably fails into the pad value (a span too wide only
//! keeps its tests). A guard constant along the vector axis that is still tested is tested
//! once per vector, whose lanes are then all the pad value or all loaded.
//!
//! A tile is unroll-and-jam: its MR x NR accumulators stay in registers through the
//! reduction loops; each reduction step evaluates the body once per point of the tile with
//! loads cached by (node, offsets of the axes they depend on), so a load invariant along
//! the vector axis is read once per row and broadcast, and one invariant along the blocked
//! axis once per column. A Sum of products accumulates with `fma` when the ISA has it, and
//! its innermost reduction loop runs two steps per trip (then one more for an odd extent),
//! so that the accumulators alternate registers instead of being copied back every trip.

use super::scatter::Scatter;
use super::lower::{LANES, Lower, Packed, Result};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, types};
use cranelift_frontend::Variable;
use cranelift_module::Module;
use ir::atom::{BinaryFn, ReduceFn};
use ir::dtype::DType;
use ir::kernel::{Body, Expr};
use ir::schedule::{PACK_LIMIT_BYTES, Schedule, TOP_TESTED_MIN};

/// The most whole micro-panels a pack copies per trip of its column loop.
const PACK_UNROLL: i64 = 4;

/// A micro-tile's accumulation: the reduction, the accumulators' type, the tile's points
/// and their accumulator variables.
struct Accumulation<'a> {
    f: ReduceFn,
    d: DType,
    points: &'a [(usize, usize)],
    vars: &'a [Variable],
}

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
    /// Columns per cache block of the vector axis (`Tile`), when it applies.
    block_columns: Option<i64>,
    /// Output axes looped over outside the cache blocks (those of `loops` when tiled).
    outer: Vec<usize>,
    /// The load whose values each cache block packs (`Pack`).
    packed_load: Option<&'e Expr>,
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
        self.b.seal_block(entry);
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
        // Axes the nest sets only inside the parallel range may be read (with extent 1)
        // by a pack that runs before it.
        let zero = self.b.ins().iconst(types::I64, 0);
        for a in 0..r {
            self.b.def_var(self.axes[a], zero);
        }
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
            let nest = if s.winograd() { None } else { Some(self.nest(s, *reduce, body, epilogue)?) };
            let any = self.b.ins().icmp(IntCC::SignedLessThan, begin, end);
            let go = self.b.create_block();
            self.b.ins().brif(any, go, &[], done, &[]);
            self.b.seal_block(go);
            self.b.switch_to_block(go);
            let Some(nest) = nest else {
                self.winograd(bufs, begin, end)?;
                self.b.ins().jump(done, &[]);
                return self.finish(done);
            };
            if let Some(nc) = nest.block_columns {
                self.blocks(&nest, 0, nc, begin, end)?;
            } else if nest.parallel == 0 {
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
        self.finish(done)
    }

    /// The function's end: `done` returns 0, each error block its code.
    fn finish(&mut self, done: cranelift_codegen::ir::Block) -> Result<()> {
        self.b.seal_block(done);
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
        let mut loops: Vec<usize> = (parallel..r)
            .filter(|&a| Some(a) != self.vec_axis && Some(a) != block.map(|b| b.0))
            .collect();
        let block_columns = match (s.tile(), self.vec_axis) {
            (Some((_, size)), Some(_)) => {
                Some(i64::try_from(size).map_err(|_| self.invalid("tile too large"))?)
            }
            _ => None,
        };
        let outer = if block_columns.is_some() {
            std::mem::take(&mut loops)
        } else {
            Vec::new()
        };
        let packed_load = match (s.pack(), block_columns) {
            (Some(input), Some(_)) => Some(self.pack_scratch(s, input, body, unroll)?),
            _ => None,
        };
        Ok(Nest {
            reduce,
            body,
            epilogue,
            parallel,
            block,
            unroll,
            loops,
            block_columns,
            outer,
            packed_load,
        })
    }

    /// The stack scratch of a `Pack` of `input` and the load of `body` it replaces.
    fn pack_scratch<'e>(
        &mut self,
        s: &Schedule,
        input: usize,
        body: &'e Expr,
        unroll: usize,
    ) -> Result<&'e Expr> {
        let node = find_load(body, input)
            .ok_or_else(|| self.invalid(format!("pack({input}): the body does not load it")))?;
        let bytes = s.pack_bytes(self.k);
        let size = u32::try_from(bytes)
            .ok()
            .filter(|&b| b as usize <= PACK_LIMIT_BYTES && b > 0)
            .ok_or_else(|| self.unsupported(format!("a pack scratch of {bytes} bytes")))?;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            size,
            6,
        ));
        let scratch = self.b.ins().stack_addr(self.ptr, slot, 0);
        let red = &self.k.red_shape;
        let mut red_strides = vec![1i64; red.len()];
        for a in (0..red.len().saturating_sub(1)).rev() {
            red_strides[a] = red_strides[a + 1] * red[a + 1] as i64;
        }
        self.packed = Some(Packed {
            node: std::ptr::from_ref(node) as usize,
            scratch,
            red_strides,
            width: LANES * unroll as i64,
            panel: None,
        });
        Ok(node)
    }

    /// With a `Tile`: the loops over `nest.outer` from `depth` on, then the cache blocks of
    /// `nc` columns, each packed (with `Pack`) and then run over the share `[begin, end)`.
    fn blocks(
        &mut self,
        nest: &Nest<'_>,
        depth: usize,
        nc: i64,
        begin: Value,
        end: Value,
    ) -> Result<()> {
        if let Some(&a) = nest.outer.get(depth) {
            let zero = self.b.ins().iconst(types::I64, 0);
            let n = self.b.ins().iconst(types::I64, self.extents[a]);
            return self.for_range(self.axes[a], Some(zero), n, 1, &mut |l| {
                l.blocks(nest, depth + 1, nc, begin, end)
            });
        }
        let v = self
            .vec_axis
            .ok_or_else(|| self.invalid("cache blocks without a vector axis"))?;
        let n = self.extents[v];
        let j0 = self.b.declare_var(types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        // Whole blocks: the last one, short, ends at n.
        let stop = self.b.ins().iconst(types::I64, (n + nc - 1) / nc * nc);
        self.for_range(j0, Some(zero), stop, nc, &mut |l| {
            let start = l.b.use_var(j0);
            let top = l.b.ins().iadd_imm_s(start, nc);
            let n = l.b.ins().iconst(types::I64, n);
            let stop = l.b.ins().smin(top, n);
            l.block_columns = Some((start, stop));
            if let Some(load) = nest.packed_load {
                l.pack(load, start, stop, nc)?;
            }
            if nest.parallel == 0 {
                return l.inner(nest, 0, None);
            }
            let f = l.b.declare_var(types::I64);
            l.for_range(f, Some(begin), end, 1, &mut |l| {
                let range = l.unflatten(nest, f);
                l.inner(nest, 0, range)
            })
        })?;
        self.block_columns = None;
        Ok(())
    }

    /// Copies the values of `load` for the columns `[start, stop)` of the vector axis and
    /// every reduction point into the scratch, in micro-panel order: reduction-major, whole
    /// panels of W columns a vector at a time, then the last panel's vectors and points.
    fn pack(&mut self, load: &Expr, start: Value, stop: Value, nc: i64) -> Result<()> {
        let r = self.k.out_shape.len();
        let v = self
            .vec_axis
            .ok_or_else(|| self.invalid("a pack without a vector axis"))?;
        let (scratch, width, strides) = match &self.packed {
            Some(p) => (p.scratch, p.width, p.red_strides.clone()),
            None => return Err(self.invalid("a pack without a scratch")),
        };
        if let Some(p) = &mut self.packed {
            p.panel = None;
        }
        if self.extents[r..].contains(&0) {
            return Ok(());
        }
        let depth: i64 = self.extents[r..].iter().product();
        self.live = self.axes.len();
        let cache_on = std::mem::replace(&mut self.cache_on, false);
        let mut headers = Vec::new();
        for a in r..self.axes.len() {
            let zero = self.b.ins().iconst(types::I64, 0);
            headers.push(self.open_loop(a, zero));
        }
        let row = self.reduction_row(&strides, width);
        let var = self.axes[v];
        let flags = MemFlagsData::new().with_notrap();
        let n = self.extents[v];
        // Every block whole and a few panels each: the block's panels copied straight, no
        // column loop (its trips, tested per reduction point, would cost as much as the
        // copies); else up to PACK_UNROLL panels per trip, then the last, partial panel.
        let straight = n % nc == 0 && nc % width == 0 && nc / width <= 2 * PACK_UNROLL;
        let res = (|| {
            // Whole panels: element (row, c) at (c - start) * depth + row * W + c % W.
            self.b.def_var(var, start);
            if straight {
                return self.pack_panels(load, scratch, row, start, depth, width, nc / width);
            }
            let per_trip = (nc / width).clamp(1, PACK_UNROLL);
            for panels in if per_trip > 1 { vec![per_trip, 1] } else { vec![1] } {
                self.for_range(var, None, stop, width * panels, &mut |l| l.pack_panels(load, scratch, row, start, depth, width, panels))?;
            }
            // The last panel from `tail`: element (row, c) at (tail - start) * depth +
            // row * W + (c - tail).
            let tail = self.b.use_var(var);
            let rel = self.b.ins().isub(tail, start);
            let panel = self.b.ins().imul_imm_s(rel, depth);
            let at = self.b.ins().iadd(panel, row);
            let origin = self.b.ins().isub(at, tail);
            let steps: &[i64] = if width > LANES { &[LANES, 1] } else { &[1] };
            for &step in steps {
                self.for_range(var, None, stop, step, &mut |l| {
                    let c = l.b.use_var(var);
                    let at = l.b.ins().iadd(origin, c);
                    let addr = l.scratch_address(scratch, at);
                    l.lanes = step;
                    let (x, _) = l.expr(load)?;
                    l.lanes = 1;
                    l.b.ins().store(flags, x, addr, 0);
                    Ok(())
                })?;
            }
            Ok(())
        })();
        self.cache_on = cache_on;
        res?;
        for (i, a) in (r..self.axes.len()).enumerate().rev() {
            let end = self.b.ins().iconst(types::I64, self.extents[a]);
            self.close_loop(a, headers[i], 1, end);
        }
        self.live = r;
        Ok(())
    }

    /// `scratch + 4 * at`.
    fn scratch_address(&mut self, scratch: Value, at: Value) -> Value {
        let bytes = self.b.ins().imul_imm_s(at, 4);
        self.b.ins().iadd(scratch, bytes)
    }

    /// The flat index of the current reduction point times `scale`.
    fn reduction_row(&mut self, strides: &[i64], scale: i64) -> Value {
        let r = self.k.out_shape.len();
        let shift: i64 = strides.iter().enumerate().map(|(i, &st)| self.offsets[r + i] * st * scale).sum();
        let mut acc = self.b.ins().iconst(types::I64, shift);
        for (i, &st) in strides.iter().enumerate() {
            let x = self.b.use_var(self.axes[r + i]);
            let t = self.b.ins().imul_imm_s(x, st * scale);
            acc = self.b.ins().iadd(acc, t);
        }
        acc
    }

    /// Copies `panels` whole micro-panels of the packed load from the column the vector
    /// axis stands at, for the reduction point whose panel row is `row`.
    #[allow(clippy::too_many_arguments)]
    fn pack_panels(&mut self, load: &Expr, scratch: Value, row: Value, start: Value, depth: i64, width: i64, panels: i64) -> Result<()> {
        let v = self.vec_axis.ok_or_else(|| self.invalid("a pack without a vector axis"))?;
        let c = self.b.use_var(self.axes[v]);
        let rel = self.b.ins().isub(c, start);
        let panel = self.b.ins().imul_imm_s(rel, depth);
        let at = self.b.ins().iadd(panel, row);
        let addr = self.scratch_address(scratch, at);
        let flags = MemFlagsData::new().with_notrap();
        for p in 0..panels {
            for q in 0..width / LANES {
                self.lanes = LANES;
                self.offsets[v] = p * width + q * LANES;
                let (x, _) = self.expr(load)?;
                let off = i32::try_from((p * width * depth + q * LANES) * 4).map_err(|_| self.invalid("pack panel too large"))?;
                self.b.ins().store(flags, x, addr, off);
            }
        }
        self.offsets[v] = 0;
        self.lanes = 1;
        Ok(())
    }

    /// The packed load at the current point of a micro-tile: `lanes` consecutive floats of
    /// the current panel's row.
    pub(super) fn packed_load(&mut self) -> Result<(Value, DType)> {
        let (panel, width, strides) = match &self.packed {
            Some(Packed { panel: Some(p), width, red_strides, .. }) => (*p, *width, red_strides.clone()),
            _ => return Err(self.invalid("a packed load outside a micro-tile")),
        };
        let v = self
            .vec_axis
            .ok_or_else(|| self.invalid("a packed load without a vector axis"))?;
        let row = self.reduction_row(&strides, width * 4);
        let addr = self.b.ins().iadd(panel, row);
        let off = i32::try_from(self.offsets[v] * 4).map_err(|_| self.invalid("tile too wide"))?;
        let ty = if self.lanes > 1 { types::F32X4 } else { types::F32 };
        let x = self
            .b
            .ins()
            .load(ty, MemFlagsData::new().with_notrap(), addr, off);
        Ok((x, DType::F32))
    }

    /// Points the packed loads of the micro-tile that starts at the current column at its
    /// panel: a whole panel (`tail` None: the column is W-aligned in the block) or the
    /// last one, which starts at column `tail`.
    fn aim_panel(&mut self, tail: Option<Value>) {
        let (Some(p), Some((start, _)), Some(v)) = (&self.packed, self.block_columns, self.vec_axis) else {
            return;
        };
        let scratch = p.scratch;
        let depth: i64 = self.extents[self.k.out_shape.len()..].iter().product();
        let c = self.b.use_var(self.axes[v]);
        let at = match tail {
            None => {
                let rel = self.b.ins().isub(c, start);
                self.b.ins().imul_imm_s(rel, depth)
            }
            Some(t) => {
                let rel = self.b.ins().isub(t, start);
                let panel = self.b.ins().imul_imm_s(rel, depth);
                let within = self.b.ins().isub(c, t);
                self.b.ins().iadd(panel, within)
            }
        };
        let addr = self.scratch_address(scratch, at);
        if let Some(p) = &mut self.packed {
            p.panel = Some(addr);
        }
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
            let var = self.axes[a];
            return self.segments(nest, a, &mut |l, start, end, _| {
                l.for_range(var, Some(start), end, 1, &mut |l| l.inner(nest, depth + 1, rows))
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
        match self.block_columns {
            Some((start, end)) => self.column_loops(nest, rows, start, end, self.extents[v]),
            None => self.segments(nest, v, &mut |l, start, end, n| l.column_loops(nest, rows, start, end, n)),
        }
    }

    /// Runs `body(start, end, length)` over axis `a`'s range in segments: for a pad (see
    /// [`guard_free_span`]) the span where its guards along `a` hold and the sides where one
    /// fails, else the whole range; each with the axis's range narrowed to the segment.
    fn segments(&mut self, nest: &Nest<'_>, a: usize, body: &mut dyn FnMut(&mut Self, Value, Value, i64) -> Result<()>) -> Result<()> {
        let n = self.extents[a];
        let cuts = match guard_free_span(nest, a, n) {
            Some((lo, hi)) => vec![(0, lo), (lo, hi), (hi, n)],
            None => vec![(0, n)],
        };
        for (lo, hi) in cuts.into_iter().filter(|(lo, hi)| lo < hi) {
            self.spans.push((a, lo, hi));
            let start = self.b.ins().iconst(types::I64, lo);
            let end = self.b.ins().iconst(types::I64, hi);
            let res = body(self, start, end, hi - lo);
            self.spans.pop();
            res?;
        }
        Ok(())
    }

    /// The columns `[start, end)` (`n` of them at most) of the vector axis: `unroll`
    /// vectors, then one vector, then one point at a time.
    fn column_loops(&mut self, nest: &Nest<'_>, rows: usize, start: Value, end: Value, n: i64) -> Result<()> {
        let v = self.vec_axis.ok_or_else(|| self.invalid("column loops without a vector axis"))?;
        let var = self.axes[v];
        self.b.def_var(var, start);
        // Where the last (partial) micro-panel starts: after the whole panels of W columns.
        let mut tail = None;
        if n >= LANES {
            self.vectorized = true;
            if nest.unroll > 1 {
                let cols = nest.unroll;
                self.for_range(var, None, end, LANES * cols as i64, &mut |l| {
                    l.aim_panel(None);
                    l.tile(nest, rows, cols, LANES)
                })?;
                tail = Some(self.b.use_var(var));
            }
            self.for_range(var, None, end, LANES, &mut |l| {
                l.aim_panel(tail);
                l.tile(nest, rows, 1, LANES)
            })?;
        }
        let tail = match tail {
            Some(t) => t,
            None => self.b.use_var(var),
        };
        self.for_range(var, None, end, 1, &mut |l| {
            l.aim_panel(Some(tail));
            l.tile(nest, rows, 1, 1)
        })
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
        let stop = self.b.ins().icmp(IntCC::SignedGreaterThan, last, end);
        // The exit is the branch's first target: see `Lower::open_while`.
        self.b.ins().brif(stop, exit, &[], inside, &[]);
        self.b.seal_block(inside);
        self.b.seal_block(exit);
        self.b.switch_to_block(inside);
        body(self)?;
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(header);
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
            self.store_point(v, d)?;
        }
        self.cache.clear();
        self.offsets.iter_mut().for_each(|o| *o = 0);
        self.lanes = 1;
        Ok(())
    }

    /// Stores `v`, of dtype `d` and the current lane count, at the current point.
    pub(super) fn store_point(&mut self, v: Value, d: DType) -> Result<()> {
        if d != self.k.output.dtype {
            return Err(self.invalid(format!("the epilogue gives {d}, the output is {}", self.k.output.dtype)));
        }
        let idx = self.affine(&self.k.store)?;
        let addr = self.address(self.k.inputs.len(), idx, d);
        let flags = MemFlagsData::new().with_notrap();
        let stride = self.vec_axis.and_then(|a| self.k.store.coefs.get(a)).copied().unwrap_or(1);
        if self.lanes > 1 && stride != 1 {
            // Not contiguous along the vector axis: lane by lane.
            for lane in 0..self.lanes {
                let x = self.b.ins().extractlane(v, lane as u8);
                let at = i32::try_from(lane * stride * 4).map_err(|_| self.invalid("output stride too large"))?;
                self.b.ins().store(flags, x, addr, at);
            }
        } else {
            self.b.ins().store(flags, v, addr, 0);
        }
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
        let fma = match nest.body {
            Expr::Binary(BinaryFn::Mul, x, y)
                if self.fma && f == ReduceFn::Sum && d == DType::F32 =>
            {
                Some((&**x, &**y))
            }
            _ => None,
        };
        // Reduction axes that every load reads as one flat axis (a packed conv: the panel is
        // flat, the weights contiguous along (ci, kh, kw)) run as one loop: the innermost
        // axis counts the flat index, the others stay 0.
        let saved = self.extents.clone();
        if self.axes.len() > r + 1 && self.k.reads_reduction_flat(nest.body, &|e| self.is_packed(e)) {
            let last = self.axes.len() - 1;
            self.extents[last] = self.extents[r..].iter().product();
            self.extents[r..last].fill(1);
        }
        let done = self.reduce_loops(nest, &Accumulation { f, d, points, vars: &vars }, fma);
        self.extents = saved;
        done?;
        for var in vars {
            accs.push((self.b.use_var(var), d));
        }
        Ok(())
    }

    /// The reduction loops of [`Self::reduce_tile`] (a reduction axis of extent 1 has no
    /// loop).
    fn reduce_loops(&mut self, nest: &Nest<'_>, acc: &Accumulation<'_>, fma: Option<(&Expr, &Expr)>) -> Result<()> {
        let r = self.k.out_shape.len();
        let mut headers = Vec::new();
        for a in r..self.axes.len().saturating_sub(1) {
            let zero = self.b.ins().iconst(types::I64, 0);
            if self.extents[a] == 1 {
                self.b.def_var(self.axes[a], zero);
                headers.push(None);
            } else {
                headers.push(Some(self.open_loop(a, zero)));
            }
        }
        if self.axes.len() == r {
            // No reduction axes: one step.
            self.reduce_step(nest, acc, fma.map(|m| (m, false)))?;
            return Ok(());
        }
        // The innermost reduction loop of an FMA contraction runs two steps per trip: the
        // accumulators then alternate registers instead of being copied back each trip
        // (Cranelift's x64 FMA writes a multiplicand's register). A long one is tested at
        // the top (see `open_while`), so Cranelift folds the loads of a step into the FMAs
        // and broadcasts using them; the other loops are tested at the bottom, one branch
        // per trip.
        let inner = self.axes.len() - 1;
        let n = self.extents[inner];
        let unroll: i64 = if fma.is_some() && n >= 4 { 2 } else { 1 };
        let zero = self.b.ins().iconst(types::I64, 0);
        let end = self.b.ins().iconst(types::I64, n - n % unroll);
        // Tested at the top only where it runs many trips (a short loop, such as a conv
        // window's row, pays for the extra branch and measured slower).
        let top_tested = n >= TOP_TESTED_MIN as i64;
        let inner_loop = if top_tested { Ok(self.open_while(inner, zero, end)) } else { Err(self.open_loop(inner, zero)) };
        for step in 0..unroll {
            self.offsets[inner] = step;
            self.reduce_step(nest, acc, fma.map(|m| (m, top_tested)))?;
        }
        self.offsets[inner] = 0;
        match inner_loop {
            Ok(l) => self.close_while(inner, l, unroll),
            Err(header) => self.close_loop(inner, header, unroll, end),
        }
        if n % unroll != 0 {
            let last = self.b.ins().iconst(types::I64, n - 1);
            self.b.def_var(self.axes[inner], last);
            self.reduce_step(nest, acc, fma.map(|m| (m, false)))?;
        }
        for (i, a) in (r..inner).enumerate().rev() {
            if let Some(header) = headers[i] {
                let stop = self.b.ins().iconst(types::I64, self.extents[a]);
                self.close_loop(a, header, 1, stop);
            }
        }
        Ok(())
    }

    /// One reduction step of every point of a tile: each accumulator variable combined
    /// with the body at its point (with `fma` for a Sum of products, its operands, and
    /// whether Cranelift can fold their loads: the step's values are used once).
    fn reduce_step(&mut self, nest: &Nest<'_>, acc: &Accumulation<'_>, fma: Option<((&Expr, &Expr), bool)>) -> Result<()> {
        let Accumulation { f, d, points, vars } = *acc;
        self.cache.clear();
        // With one column, a broadcast operand has one use per step: loaded afresh there
        // (`fresh_broadcast`, where the load folds), it costs no register copy. Shared by
        // several columns, it is loaded once and copied (Cranelift's x64 FMA writes a
        // multiplicand's register).
        let one_column = points.iter().all(|p| p.1 == 0);
        for (&(i, j), &var) in points.iter().zip(vars) {
            self.at(nest, i, j);
            let next = match fma {
                Some(((x, y), folds)) => {
                    // The FMA writes its first operand's register: a broadcast, used by the
                    // row's columns, costs fewer copies than a vector, used by every row.
                    let (x, y) = if self.is_broadcast(y) && !self.is_broadcast(x) { (y, x) } else { (x, y) };
                    let fresh = if folds && one_column { self.fresh_broadcast(x)? } else { None };
                    let x = match fresh {
                        Some(x) => x,
                        None => self.expr(x)?.0,
                    };
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
        Ok(())
    }
}

/// The first load of input `input` in `e`.
fn find_load(e: &Expr, input: usize) -> Option<&Expr> {
    match e {
        Expr::Load { buf, .. } => (*buf == input).then_some(e),
        Expr::Const { .. } | Expr::Axis(_) | Expr::Acc => None,
        Expr::Gather { pos, .. } | Expr::Unary(_, pos) | Expr::Cast(_, pos) => find_load(pos, input),
        Expr::Binary(_, a, b) => find_load(a, input).or_else(|| find_load(b, input)),
        Expr::Select(c, a, b) => find_load(c, input)
            .or_else(|| find_load(a, input))
            .or_else(|| find_load(b, input)),
    }
}

/// For an elementwise kernel whose loads are guarded along axis `v` (of extent `n`) by
/// conditions on that axis alone (a pad's border), the points `[lo, hi)` of the axis where
/// every such guard holds, when that span leaves guarded points outside it and holds at
/// least one vector: the nest runs it without those guards.
fn guard_free_span(nest: &Nest<'_>, v: usize, n: i64) -> Option<(i64, i64)> {
    fn visit(e: &Expr, v: usize, span: &mut (i64, i64), guarded: &mut bool) {
        match e {
            Expr::Load { guards, .. } => {
                for g in guards {
                    let c = g.expr.coefs.get(v).copied().unwrap_or(0);
                    let alone = g.expr.coefs.iter().enumerate().all(|(a, &x)| a == v || x == 0);
                    if c == 0 || !alone {
                        continue;
                    }
                    *guarded = true;
                    // 0 <= c*i + off < bound, for integer i.
                    let (off, bound) = (g.expr.offset, g.bound);
                    let (lo, hi) = if c > 0 {
                        (div_ceil(-off, c), div_floor(bound - 1 - off, c) + 1)
                    } else {
                        (div_ceil(bound - 1 - off, c), div_floor(-off, c) + 1)
                    };
                    span.0 = span.0.max(lo);
                    span.1 = span.1.min(hi);
                }
            }
            Expr::Gather { pos, .. } => visit(pos, v, span, guarded),
            Expr::Unary(_, x) | Expr::Cast(_, x) => visit(x, v, span, guarded),
            Expr::Binary(_, x, y) => {
                visit(x, v, span, guarded);
                visit(y, v, span, guarded);
            }
            Expr::Select(c, x, y) => {
                for e in [c, x, y] {
                    visit(e, v, span, guarded);
                }
            }
            Expr::Const { .. } | Expr::Axis(_) | Expr::Acc => {}
        }
    }
    if nest.reduce.is_some() {
        return None;
    }
    let (mut span, mut guarded) = ((0, n), false);
    visit(nest.body, v, &mut span, &mut guarded);
    visit(nest.epilogue, v, &mut span, &mut guarded);
    (guarded && span.1 - span.0 >= LANES && (span.0 > 0 || span.1 < n)).then_some(span)
}

/// `a / b` rounded towards minus infinity (`b != 0`).
fn div_floor(a: i64, b: i64) -> i64 {
    let q = a / b;
    if (a % b != 0) && ((a < 0) != (b < 0)) { q - 1 } else { q }
}

/// `a / b` rounded towards plus infinity (`b != 0`).
fn div_ceil(a: i64, b: i64) -> i64 {
    -div_floor(-a, b)
}
