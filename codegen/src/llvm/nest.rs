//! The loop nest of one kernel in LLVM IR, shaped by its [`Schedule`] exactly as the
//! Cranelift backend's `nest.rs` shapes it:
//!
//! ```text
//! for f in [begin, end):                      // the parallel range: the first P output
//!     (i0, .., iP-1) = unflatten(f)           // axes (a blocked axis counts its blocks)
//!     for the other output axes (in order, but the blocked and the vector axis):
//!         for rows of the blocked axis, MR at a time, then the rest (< MR) at once:
//!             for columns of the vector axis, NR vectors at a time:
//!                 tile(rows, columns)
//!             tile(rows, the rest: up to NR vectors, the last one partial)
//! ```
//!
//! With a `Tile` of the vector axis (cache blocks of NC columns) the block loop runs
//! outside the parallel range, so that one call over `[begin, end)` runs all the rows of
//! its share against one block of the shared operand, packed once (`Pack`):
//!
//! ```text
//! for the other output axes (in order, but the parallel, blocked and vector ones):
//!     for each block [j0, j1) of NC columns:
//!         pack(j0, j1)                        // with `Pack`: the packed load's values
//!         for f in [begin, end): unflatten(f); rows and columns in [j0, j1) as above
//! ```
//!
//! `Pack` copies what the body's load of the packed input reads for the block (every
//! reduction point x the block's columns, guards, padding and masked tails resolved by the
//! ordinary vector load) into a stack scratch (an `alloca`, 64-byte aligned) in
//! micro-panels of W = lanes x NR columns: element (reduction point r, column j0 + c) lives
//! at `(c / W) * R * W + r * W + c % W` (R reduction points), so a micro-tile reads NR
//! aligned vectors per reduction step from one contiguous stream. NC is a multiple of W
//! (`Schedule::validate`), so only the last block has a partial panel, at a column known
//! at compile time; its vectors are written whole (lanes past the axis hold the masked
//! load's zeros) and the micro-tile's masked store drops them.
//!
//! A tile is unroll-and-jam: its MR x NR accumulators stay in registers through the
//! reduction loops (a BLIS-style register micro-kernel: with AVX-512's 32 registers the
//! search's tiles reach 24 accumulators, e.g. 6 x 64 f32); each reduction step evaluates
//! the body once per point of the tile with loads cached by (node, offsets of the axes
//! they depend on), so the operand shared along the vector axis is one broadcast per row.
//! Vectors have the schedule's lanes (16 f32 with AVX-512); the partial vector at the end
//! of the vector axis (also the whole axis when it is shorter than a vector) runs with its
//! lanes past the end masked (`llvm.masked.load`/`store`), never on scalars. A Sum of
//! products accumulates with `llvm.fma` when the target has FMA.

use super::lower::{Lower, Packed, Result, Val, memory_type};
use ir::atom::{BinaryFn, ReduceFn};
use ir::dtype::DType;
use ir::kernel::{Body, Expr};
use ir::schedule::{PACK_LIMIT_BYTES, Schedule};

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

/// The rows `[lo, hi)` of the blocked axis a share covers (i64 values).
type Rows = Option<(String, String)>;

impl<'a> Lower<'a> {
    /// The kernel's reduction, body and epilogue, after checking that every buffer has an
    /// element type this backend handles and that it is a compute kernel (`on` says where a
    /// Scatter kernel is not supported, e.g. "on the GPU").
    pub(super) fn compute_body(&self, on: &str) -> Result<(&'a Option<ReduceFn>, &'a Expr, &'a Expr)> {
        let k = self.k;
        for b in k.inputs.iter().chain([&k.output]) {
            self.scalar_ty(b.dtype)?;
        }
        let Body::Compute { reduce, body, epilogue } = &k.body else {
            return Err(self.unsupported(format!("Scatter kernels are not supported {on} yet")));
        };
        if reduce.is_none() && !k.red_shape.is_empty() {
            return Err(self.invalid("reduction axes without a reduction"));
        }
        Ok((reduce, body, epilogue))
    }

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
        let (reduce, body, epilogue) = self.compute_body("by the LLVM backend")?;
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
            // Axes the nest sets only inside the parallel range may be read (with extent
            // 1) by a pack that runs before it.
            for a in 0..r {
                let slot = self.axes[a].clone();
                self.write("i64", "0", &slot);
            }
            if let Some(nc) = nest.block_columns {
                self.blocks(&nest, 0, nc)?;
            } else if nest.parallel == 0 {
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
        let mut loops: Vec<usize> = (parallel..r).filter(|&a| Some(a) != self.vec_axis && Some(a) != block.map(|b| b.0)).collect();
        let block_columns = match (s.tile(), self.vec_axis) {
            (Some((_, size)), Some(_)) => Some(i64::try_from(size).map_err(|_| self.invalid("tile too large"))?),
            _ => None,
        };
        let width = self.vector_lanes * unroll as i64;
        if let Some(nc) = block_columns
            && (nc <= 0 || nc % width != 0)
        {
            return Err(self.invalid(format!("cache blocks of {nc} columns, not a multiple of the {width} of a micro-tile")));
        }
        let outer = if block_columns.is_some() { std::mem::take(&mut loops) } else { Vec::new() };
        let packed_load = match (s.pack(), block_columns) {
            (Some(input), Some(_)) => Some(self.pack_scratch(s, input, body, width)?),
            _ => None,
        };
        Ok(Nest { reduce, body, epilogue, parallel, block, unroll, loops, block_columns, outer, packed_load })
    }

    /// The scratch of a `Pack` of `input` (micro-panels `width` columns wide) and the load
    /// of `body` it replaces.
    fn pack_scratch<'e>(&mut self, s: &Schedule, input: usize, body: &'e Expr, width: i64) -> Result<&'e Expr> {
        let node = find_load(body, input).ok_or_else(|| self.invalid(format!("pack({input}): the body does not load it")))?;
        let bytes = s.pack_bytes(self.k);
        if bytes == 0 || bytes > PACK_LIMIT_BYTES {
            return Err(self.unsupported(format!("a pack scratch of {bytes} bytes")));
        }
        let scratch = self.slot(&format!("[{} x float]", bytes / 4));
        let red = &self.k.red_shape;
        let mut red_strides = vec![1i64; red.len()];
        for a in (0..red.len().saturating_sub(1)).rev() {
            red_strides[a] = red_strides[a + 1] * red[a + 1] as i64;
        }
        self.packed = Some(Packed { node: std::ptr::from_ref(node) as usize, scratch, red_strides, width, panel: None });
        Ok(node)
    }

    /// With a `Tile`: the loops over `nest.outer` from `depth` on, then the cache blocks of
    /// `nc` columns, each packed (with `Pack`) and then run over the share `[begin, end)`.
    fn blocks(&mut self, nest: &Nest<'_>, depth: usize, nc: i64) -> Result<()> {
        if let Some(&a) = nest.outer.get(depth) {
            let slot = self.axes[a].clone();
            let n = self.extents[a].to_string();
            return self.for_range(&slot, Some("0"), &n, 1, &mut |l| l.blocks(nest, depth + 1, nc));
        }
        let v = self.vec_axis.ok_or_else(|| self.invalid("cache blocks without a vector axis"))?;
        let n = self.extents[v];
        let j0 = self.slot("i64");
        // Whole blocks: the last one, short, ends at n.
        let stop = ((n + nc - 1) / nc * nc).to_string();
        self.for_range(&j0, Some("0"), &stop, nc, &mut |l| {
            let start = l.read("i64", &j0);
            let top = l.ins(format!("add i64 {start}, {nc}"));
            let stop = l.intrinsic("smin", "i64", &[&top, &n.to_string()]);
            l.block_columns = Some((start.clone(), stop.clone()));
            if let Some(load) = nest.packed_load {
                l.pack(load, &start, &stop)?;
            }
            if nest.parallel == 0 {
                return l.inner(nest, 0, &None);
            }
            let f = l.slot("i64");
            l.for_range(&f, Some("%begin"), "%end", 1, &mut |l| {
                let rows = l.unflatten(nest, &f);
                l.inner(nest, 0, &rows)
            })
        })?;
        self.block_columns = None;
        Ok(())
    }

    /// Copies the values of `load` for the columns `[start, stop)` of the vector axis and
    /// every reduction point into the scratch, in micro-panel order: reduction-major, whole
    /// panels of W columns a vector at a time, then (in the last block) the partial panel.
    fn pack(&mut self, load: &Expr, start: &str, stop: &str) -> Result<()> {
        let r = self.k.out_shape.len();
        let v = self.vec_axis.ok_or_else(|| self.invalid("a pack without a vector axis"))?;
        let (scratch, width, strides) = match &mut self.packed {
            Some(p) => {
                p.panel = None;
                (p.scratch.clone(), p.width, p.red_strides.clone())
            }
            None => return Err(self.invalid("a pack without a scratch")),
        };
        if self.extents[r..].contains(&0) {
            return Ok(());
        }
        let depth: i64 = self.extents[r..].iter().product();
        self.live = self.axes.len();
        let cache_on = std::mem::replace(&mut self.cache_on, false);
        let mut headers = Vec::new();
        for a in r..self.axes.len() {
            headers.push(self.open_loop(a, "0"));
        }
        let row = self.reduction_row(&strides, width);
        let slot = self.axes[v].clone();
        let lanes = self.vector_lanes;
        let rest = self.extents[v] % width;
        let res = (|| {
            // Vectors `0..count` (the last with `last` valid lanes) of the panel at the
            // current column: element (row, c) at (c - start) * depth + row * W + c % W.
            let panel = |l: &mut Self, count: i64, last: i64| -> Result<()> {
                let c = l.read("i64", &slot);
                let rel = l.ins(format!("sub i64 {c}, {start}"));
                let at = l.ins(format!("mul i64 {rel}, {depth}"));
                let at = l.ins(format!("add i64 {at}, {row}"));
                l.lanes = lanes;
                for q in 0..count {
                    l.offsets[v] = q * lanes;
                    l.valid = if q + 1 == count { last } else { lanes };
                    let (x, _) = l.expr(load)?;
                    let to = l.ins(format!("add i64 {at}, {}", q * lanes));
                    let addr = l.ins(format!("getelementptr inbounds float, ptr {scratch}, i64 {to}"));
                    l.emit(format!("store <{lanes} x float> {x}, ptr {addr}, align {}", (lanes * 4).min(64)));
                }
                l.offsets[v] = 0;
                l.lanes = 1;
                l.valid = 1;
                Ok(())
            };
            self.for_range(&slot, Some(start), stop, width, &mut |l| panel(l, width / lanes, lanes))?;
            if rest > 0 {
                // Only the last block ends with the partial panel.
                let vectors = (rest + lanes - 1) / lanes;
                self.if_before(&slot, stop, "packtail", &mut |l| panel(l, vectors, rest - (vectors - 1) * lanes))?;
            }
            Ok(())
        })();
        self.cache_on = cache_on;
        res?;
        for (i, a) in (r..self.axes.len()).enumerate().rev() {
            let end = self.extents[a];
            self.close_loop(a, &headers[i], 1, end);
        }
        self.live = r;
        Ok(())
    }

    /// The flat index of the current reduction point times `scale` (an i64 value).
    fn reduction_row(&mut self, strides: &[i64], scale: i64) -> String {
        let r = self.k.out_shape.len();
        let shift: i64 = strides.iter().enumerate().map(|(i, &st)| self.offsets[r + i] * st * scale).sum();
        let mut acc = shift.to_string();
        for (i, &st) in strides.iter().enumerate() {
            let slot = self.axes[r + i].clone();
            let x = self.read("i64", &slot);
            let t = self.ins(format!("mul i64 {x}, {}", st * scale));
            acc = self.ins(format!("add i64 {acc}, {t}"));
        }
        acc
    }

    /// The packed load at the current point of a micro-tile: `lanes` consecutive floats of
    /// the current panel's row (vectors of the tile are W-aligned in the panel, so aligned
    /// to their size in the 64-byte aligned scratch).
    pub(super) fn packed_load(&mut self) -> Result<Val> {
        let (panel, width, strides) = match &self.packed {
            Some(Packed { panel: Some(p), width, red_strides, .. }) => (p.clone(), *width, red_strides.clone()),
            _ => return Err(self.invalid("a packed load outside a micro-tile")),
        };
        let v = self.vec_axis.ok_or_else(|| self.invalid("a packed load without a vector axis"))?;
        let row = self.reduction_row(&strides, width);
        let at = self.ins(format!("add i64 {row}, {}", self.offsets[v]));
        let addr = self.ins(format!("getelementptr inbounds float, ptr {panel}, i64 {at}"));
        let ty = self.shaped("float");
        let align = (self.lanes * 4).min(64);
        Ok((self.ins(format!("load {ty}, ptr {addr}, align {align}")), DType::F32))
    }

    /// Points the packed loads of the micro-tile that starts at the current column at its
    /// panel (the column is W-aligned in the block).
    fn aim_panel(&mut self) {
        let (Some(p), Some((start, _)), Some(v)) = (&self.packed, &self.block_columns, self.vec_axis) else {
            return;
        };
        let (scratch, start) = (p.scratch.clone(), start.clone());
        let depth: i64 = self.extents[self.k.out_shape.len()..].iter().product();
        let slot = self.axes[v].clone();
        let c = self.read("i64", &slot);
        let rel = self.ins(format!("sub i64 {c}, {start}"));
        let at = self.ins(format!("mul i64 {rel}, {depth}"));
        let addr = self.ins(format!("getelementptr inbounds float, ptr {scratch}, i64 {at}"));
        if let Some(p) = &mut self.packed {
            p.panel = Some(addr);
        }
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
                self.for_range(&slot, None, &hi, mr as i64, &mut |l| l.columns(nest, mr))?;
                // The rows left are those of the axis's last block (a share is whole blocks),
                // n % MR of them: one shorter tile.
                let rest = (self.extents[b] % mr as i64) as usize;
                if rest > 0 {
                    self.if_before(&slot, &hi, "rowtail", &mut |l| l.columns(nest, rest))?;
                }
                Ok(())
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
        let (start, end) = self.block_columns.clone().unwrap_or_else(|| ("0".to_string(), n.to_string()));
        self.write("i64", &start, &slot);
        self.vectorized = true;
        let cols = nest.unroll;
        let width = lanes * cols as i64;
        self.for_range(&slot, None, &end, width, &mut |l| {
            l.aim_panel();
            l.tile(nest, rows, cols, lanes, lanes)
        })?;
        // Blocks hold whole micro-tiles (`Schedule::validate`): the rest is the end of the
        // axis, in the last block only.
        let rest = n % width;
        if rest > 0 {
            let vectors = (rest + lanes - 1) / lanes;
            let last = rest - (vectors - 1) * lanes;
            let mut tail = |l: &mut Self| {
                l.aim_panel();
                l.tile(nest, rows, vectors as usize, lanes, last)
            };
            // Without cache blocks the axis always ends with the rest.
            if self.block_columns.is_some() {
                self.if_before(&slot, &end, "coltail", &mut tail)?;
            } else {
                tail(self)?;
            }
        }
        Ok(())
    }

    /// `if counter < end { body }` on the counter in `slot`: a tail that only the last
    /// cache block (or the last share) has.
    fn if_before(&mut self, slot: &str, end: &str, stem: &str, body: &mut dyn FnMut(&mut Self) -> Result<()>) -> Result<()> {
        let c = self.read("i64", slot);
        let more = self.ins(format!("icmp slt i64 {c}, {end}"));
        let (tail, after) = (self.block(stem), self.block("join"));
        self.branch(&more, &tail, &after);
        self.start(&tail);
        body(self)?;
        self.jump(&after);
        self.start(&after);
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
            let stride = self.vec_axis.and_then(|a| self.k.store.coefs.get(a)).copied().unwrap_or(1);
            if d == DType::Bool {
                let byte = self.ins(format!("zext i1 {v} to i8"));
                self.emit(format!("store i8 {byte}, ptr {addr}, align 1"));
            } else if self.lanes > 1 && stride != 1 {
                // Not contiguous along the vector axis: the valid lanes one by one.
                let (ty, n) = (memory_type(d), self.lanes);
                for lane in 0..self.valid {
                    let x = self.ins(format!("extractelement <{n} x {ty}> {v}, i64 {lane}"));
                    let at = self.ins(format!("getelementptr inbounds {ty}, ptr {addr}, i64 {}", lane * stride));
                    self.emit(format!("store {ty} {x}, ptr {at}, align {}", d.size()));
                }
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

/// The first load of input `input` in `e`.
fn find_load(e: &Expr, input: usize) -> Option<&Expr> {
    match e {
        Expr::Load { buf, .. } => (*buf == input).then_some(e),
        Expr::Const { .. } | Expr::Axis(_) | Expr::Acc => None,
        Expr::Gather { pos, .. } | Expr::Unary(_, pos) | Expr::Cast(_, pos) => find_load(pos, input),
        Expr::Binary(_, a, b) => find_load(a, input).or_else(|| find_load(b, input)),
        Expr::Select(c, a, b) => find_load(c, input).or_else(|| find_load(a, input)).or_else(|| find_load(b, input)),
    }
}
