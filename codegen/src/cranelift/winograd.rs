//! A kernel under a `Winograd` schedule: a 3x3 stride-1 convolution run as Winograd
//! F(2x2, 3x3) on f32x4 (the shape and the constants are `ir::winograd`'s).
//!
//! ```text
//! U[p][k][c] = (G g_kc Gᵀ)[p]                 // prepared: `JitKernel::prepare`, given in
//!                                             // the buffer table's slot after the output
//! for each block of 8 (or 4) tiles in [begin, end):
//!     V[p][c][t] = (Bᵀ d_ct B)[p]             // 4 tiles per vector: the 4x4 windows
//!                                             // of 4 tiles along a row are 10 columns,
//!                                             // read as 4 vectors and shuffled
//!     M[p][k][t] = sum_c U[p][k][c] V[p][c][t] // 16 independent products, an 8 x 4
//!                                             // micro-tile (8 channels x 1 tile vector)
//!     out(k, 2ty + i, 2tx + j) = epilogue((Aᵀ M A)[i][j])
//!                                             // the 2x2 outputs of 4 tiles interleaved
//!                                             // into 8 columns, the epilogue on them
//! ```
//!
//! `p` is a point of the transformed 4x4 tile (row-major), `t` a tile of the block. The
//! transforms are additions and subtractions (`G`'s halves are exact), written out below.
//! Every read of the input is a point the convolution itself reads, so the kernel's
//! verified bounds cover it; the filters are read from the prepared data (16 K C floats,
//! `run_raw`'s contract); the epilogue and store run through the common expression
//! lowering with the output axes set to each vector of 4 columns.

use super::RuntimeError;
use super::lower::{LANES, Lower, Result};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, types};
use cranelift_frontend::Variable;
use cranelift_module::Module;
use ir::atom::ReduceFn;
use ir::dtype::DType;
use ir::kernel::Body;
use ir::winograd::{CHANNEL_BLOCK, POINTS, TILE_LANES, WinogradConv};

/// Output channels per micro-tile of the products (a multiple of [`CHANNEL_BLOCK`]; the
/// channels past the last whole tile take tiles of [`CHANNEL_BLOCK`]).
const ROWS: usize = 8;

/// Reduction steps per trip of the products' loop: Cranelift copies every accumulator back
/// to its register at the loop's back edge, and the loop is bound by issuing instructions
/// (a broadcast and an FMA per row and step): 4 steps per trip measured faster than 2.
const STEPS: i64 = 4;

impl<M: Module> Lower<'_, '_, M> {
    /// The whole Winograd computation over the blocks `[begin, end)`; `bufs` is the buffer
    /// table, whose slot after the output holds the prepared filters (null: an error).
    pub(super) fn winograd(&mut self, bufs: Value, begin: Value, end: Value) -> Result<()> {
        let conv = WinogradConv::of(self.k).map_err(|why| self.invalid(format!("winograd: {why}")))?;
        let Body::Compute { body, epilogue, .. } = &self.k.body else {
            return Err(self.invalid("winograd on a scatter kernel"));
        };
        if !self.vectorizable(conv.x_axis, Some(&ReduceFn::Sum), body, epilogue) {
            return Err(self.unsupported("winograd: the epilogue has no f32x4 form"));
        }
        self.vec_axis = Some(conv.x_axis);
        self.vectorized = true;
        let nt = conv.block_tiles();
        let v = self.winograd_scratch(POINTS * conv.c * nt)?;
        let m = self.winograd_scratch(POINTS * conv.k * nt)?;
        let slot = i32::try_from((self.k.inputs.len() + 1) * self.ptr.bytes() as usize)
            .map_err(|_| self.unsupported("too many inputs"))?;
        let u = self.b.ins().load(self.ptr, MemFlagsData::trusted(), bufs, slot);
        let missing = self.b.ins().icmp_imm_s(IntCC::Equal, u, 0);
        self.check(missing, RuntimeError::NotPrepared);
        let block = self.b.declare_var(types::I64);
        self.for_range(block, Some(begin), end, 1, &mut |l| {
            let blk = l.b.use_var(block);
            l.input_transform(&conv, v, blk)?;
            l.products(&conv, u, v, m)?;
            l.output_transform(&conv, m, blk, epilogue)
        })
    }

    /// The address of a 64-byte aligned stack scratch of `floats` f32.
    fn winograd_scratch(&mut self, floats: usize) -> Result<Value> {
        let size = u32::try_from(floats * 4).map_err(|_| self.unsupported("winograd: scratch too large"))?;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, size, 6));
        Ok(self.b.ins().stack_addr(self.ptr, slot, 0))
    }

    /// `var` from 0 while `var + step <= n`, `body` with the counter.
    fn count(&mut self, n: i64, step: i64, body: &mut dyn FnMut(&mut Self, Value) -> Result<()>) -> Result<()> {
        let var = self.b.declare_var(types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        let end = self.b.ins().iconst(types::I64, n);
        self.for_range(var, Some(zero), end, step, &mut |l| {
            let i = l.b.use_var(var);
            body(l, i)
        })
    }

    /// `base + 4 * (index * scale)`, as an address.
    fn float_address(&mut self, base: Value, index: Value, scale: i64) -> Value {
        let bytes = self.b.ins().imul_imm_s(index, 4 * scale);
        self.b.ins().iadd(base, bytes)
    }

    /// The `ty` at `addr + 4 * floats`: an input (`free`: nothing writes it while the kernel
    /// runs) or the scratch.
    fn f32_at(&mut self, ty: types::Type, addr: Value, floats: i64, free: bool) -> Result<Value> {
        let off = i32::try_from(floats * 4).map_err(|_| self.unsupported("winograd: offset too large"))?;
        let flags = if free { Self::free_load_flags() } else { MemFlagsData::trusted() };
        Ok(self.b.ins().load(ty, flags, addr, off))
    }

    /// Stores `x` (f32 or f32x4) at `addr + 4 * floats` of the scratch.
    fn put_f32(&mut self, x: Value, addr: Value, floats: i64) -> Result<()> {
        let off = i32::try_from(floats * 4).map_err(|_| self.unsupported("winograd: offset too large"))?;
        self.b.ins().store(MemFlagsData::trusted(), x, addr, off);
        Ok(())
    }

    /// Lanes `lanes` of the 8 lanes of `lo` then `hi`.
    fn pick_lanes(&mut self, lo: Value, hi: Value, lanes: [u8; 4]) -> Value {
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let bytes: Vec<u8> = lanes.iter().flat_map(|&lane| (0..4).map(move |b| lane * 4 + b)).collect();
        let mask = self.b.func.dfg.immediates.push(bytes.as_slice().into());
        let (lo, hi) = (self.b.ins().bitcast(types::I8X16, le, lo), self.b.ins().bitcast(types::I8X16, le, hi));
        let picked = self.b.ins().shuffle(lo, hi, mask);
        self.b.ins().bitcast(types::F32X4, le, picked)
    }

    /// Per vector of 4 tiles of block `blk`: its first tile's row and column.
    fn tile_vectors(&mut self, conv: &WinogradConv, blk: Value) -> Vec<(Value, Value)> {
        let (nt, tx) = (conv.block_tiles() as i64, (conv.ow / 2) as i64);
        let first = self.b.ins().imul_imm_s(blk, nt);
        let per_row = self.b.ins().iconst(types::I64, tx);
        (0..nt / TILE_LANES as i64)
            .map(|j| {
                let t = self.b.ins().iadd_imm_s(first, j * TILE_LANES as i64);
                let ty = self.b.ins().udiv(t, per_row);
                let row_start = self.b.ins().imul_imm_s(ty, tx);
                (ty, self.b.ins().isub(t, row_start))
            })
            .collect()
    }

    /// `V[p][c][t] = (Bᵀ d B)[p]` for the tiles `t` of block `blk` and every input channel.
    fn input_transform(&mut self, conv: &WinogradConv, v: Value, blk: Value) -> Result<()> {
        let (c, nt) = (conv.c as i64, conv.block_tiles() as i64);
        let rs = conv.input_row_stride;
        // Each tile vector's input index at channel 0: rows from 2 ty, columns from 2 tx.
        let starts: Vec<Value> = self
            .tile_vectors(conv, blk)
            .into_iter()
            .map(|(ty, tx0)| {
                let row = self.b.ins().imul_imm_s(ty, 2 * rs);
                let col = self.b.ins().imul_imm_s(tx0, 2);
                let at = self.b.ins().iadd(row, col);
                self.b.ins().iadd_imm_s(at, conv.input_offset)
            })
            .collect();
        let input = conv.input;
        self.count(c, 1, &mut |l, ci| {
            let chan = l.b.ins().imul_imm_s(ci, conv.input_channel_stride);
            let vrow = l.b.ins().imul_imm_s(ci, nt);
            let dst = l.float_address(v, vrow, 1);
            for (j, &start) in starts.iter().enumerate() {
                let idx = l.b.ins().iadd(chan, start);
                let src = l.float_address(l.bases[input], idx, 1);
                // d[a][b]: the 4 tiles' window points (a, b), columns 2 tx + b.
                let mut d = Vec::with_capacity(16);
                for a in 0..4i64 {
                    let q: Vec<Value> = [0, 4, 2, 6].iter().map(|&o| l.f32_at(types::F32X4, src, a * rs + o, true)).collect::<Result<_>>()?;
                    d.push([
                        l.pick_lanes(q[0], q[1], [0, 2, 4, 6]),
                        l.pick_lanes(q[0], q[1], [1, 3, 5, 7]),
                        l.pick_lanes(q[2], q[3], [0, 2, 4, 6]),
                        l.pick_lanes(q[2], q[3], [1, 3, 5, 7]),
                    ]);
                }
                // Bᵀ x: x0 - x2, x1 + x2, x2 - x1, x1 - x3.
                let bt = |l: &mut Self, x: [Value; 4]| -> [Value; 4] {
                    [l.b.ins().fsub(x[0], x[2]), l.b.ins().fadd(x[1], x[2]), l.b.ins().fsub(x[2], x[1]), l.b.ins().fsub(x[1], x[3])]
                };
                let rows: Vec<[Value; 4]> = (0..4).map(|b| bt(l, [d[0][b], d[1][b], d[2][b], d[3][b]])).collect();
                let by_row: [[Value; 4]; 4] = std::array::from_fn(|xi| [rows[0][xi], rows[1][xi], rows[2][xi], rows[3][xi]]);
                for (xi, x4) in by_row.into_iter().enumerate() {
                    let out = bt(l, x4);
                    for (nu, &x) in out.iter().enumerate() {
                        l.put_f32(x, dst, (xi * 4 + nu) as i64 * c * nt + j as i64 * TILE_LANES as i64)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// `M[p][k][t] = sum_c U[p][k][c] V[p][c][t]`: per point `p`, [`ROWS`] output channels
    /// (then 4 for the rest) by one vector of tiles at a time.
    fn products(&mut self, conv: &WinogradConv, u: Value, v: Value, m: Value) -> Result<()> {
        let (kk, nt) = (conv.k as i64, conv.block_tiles() as i64);
        self.count(POINTS as i64, 1, &mut |l, p| {
            let k_var = l.b.declare_var(types::I64);
            let zero = l.b.ins().iconst(types::I64, 0);
            let end = l.b.ins().iconst(types::I64, kk);
            for rows in [ROWS, CHANNEL_BLOCK] {
                let start = (rows == ROWS).then_some(zero);
                l.for_range(k_var, start, end, rows as i64, &mut |l| {
                    let k0 = l.b.use_var(k_var);
                    l.count(nt, LANES, &mut |l, t0| l.product_tile(conv, rows, [u, v, m], p, k0, t0))
                })?;
            }
            Ok(())
        })
    }

    /// One micro-tile of the products: `rows` output channels from `k0` by the 4 tiles from
    /// `t0`, at point `p`. Each step broadcasts a filter value afresh from memory per row (the
    /// x64 FMA overwrites that multiplicand: a fresh one needs no copy) against one vector of
    /// the transformed input; [`STEPS`] steps per trip, the rest after the loop.
    fn product_tile(&mut self, conv: &WinogradConv, rows: usize, [u, v, m]: [Value; 3], p: Value, k0: Value, t0: Value) -> Result<()> {
        let (kk, c, nt) = (conv.k as i64, conv.c as i64, conv.block_tiles() as i64);
        let pk = self.b.ins().imul_imm_s(p, kk);
        let pk = self.b.ins().iadd(pk, k0);
        let urow = self.b.ins().imul_imm_s(pk, c);
        let ufirst = self.float_address(u, urow, 1);
        let vrow = self.b.ins().imul_imm_s(p, c * nt);
        let vrow = self.b.ins().iadd(vrow, t0);
        let vfirst = self.float_address(v, vrow, 1);
        let zero = self.b.ins().f32const(0.0);
        let zero = self.b.ins().splat(types::F32X4, zero);
        let accs: Vec<Variable> = (0..rows)
            .map(|_| {
                let a = self.b.declare_var(types::F32X4);
                self.b.def_var(a, zero);
                a
            })
            .collect();
        let (pu, pv) = (self.b.declare_var(self.ptr), self.b.declare_var(self.ptr));
        self.b.def_var(pu, ufirst);
        self.b.def_var(pv, vfirst);
        // The scratch loads here are marked movable (pure to Cranelift), so that each
        // broadcast is placed at its FMA and folds into `vbroadcastss`; side-effecting, they
        // would all be issued first and the FMAs after them, 18 live vectors, spilling.
        // Nothing writes the filters or the transformed input while the products run, and
        // every load's address depends on the loop counters of these loops, so no load can
        // be merged with or hoisted above a store that feeds it.
        let step = |l: &mut Self, at: i64| -> Result<()> {
            let (au, av) = (l.b.use_var(pu), l.b.use_var(pv));
            let x = l.f32_at(types::F32X4, av, at * nt, true)?;
            for (i, &var) in accs.iter().enumerate() {
                let s = l.f32_at(types::F32, au, i as i64 * c + at, true)?;
                let s = l.b.ins().splat(types::F32X4, s);
                let a = l.b.use_var(var);
                let a = if l.fma {
                    l.used_fma = true;
                    l.b.ins().fma(s, x, a)
                } else {
                    let prod = l.b.ins().fmul(s, x);
                    l.b.ins().fadd(a, prod)
                };
                l.b.def_var(var, a);
            }
            Ok(())
        };
        let advance = |l: &mut Self, steps: i64| {
            let (au, av) = (l.b.use_var(pu), l.b.use_var(pv));
            let nu = l.b.ins().iadd_imm_s(au, 4 * steps);
            let nv = l.b.ins().iadd_imm_s(av, 4 * nt * steps);
            l.b.def_var(pu, nu);
            l.b.def_var(pv, nv);
        };
        self.count(c, STEPS, &mut |l, _| {
            for at in 0..STEPS {
                step(l, at)?;
            }
            advance(l, STEPS);
            Ok(())
        })?;
        for at in 0..c % STEPS {
            step(self, at)?;
        }
        let mrow = self.b.ins().imul_imm_s(pk, nt);
        let mrow = self.b.ins().iadd(mrow, t0);
        let dst = self.float_address(m, mrow, 1);
        for (i, &var) in accs.iter().enumerate() {
            let a = self.b.use_var(var);
            self.put_f32(a, dst, i as i64 * nt)?;
        }
        Ok(())
    }

    /// `out(k, 2 ty + i, 2 tx + j) = epilogue((Aᵀ M A)[i][j])` for the tiles of block `blk`.
    fn output_transform(&mut self, conv: &WinogradConv, m: Value, blk: Value, epilogue: &ir::kernel::Expr) -> Result<()> {
        let (kk, nt) = (conv.k as i64, conv.block_tiles() as i64);
        // Each tile vector's first output row and column.
        let firsts: Vec<(Value, Value)> = self
            .tile_vectors(conv, blk)
            .into_iter()
            .map(|(ty, tx0)| (self.b.ins().imul_imm_s(ty, 2), self.b.ins().imul_imm_s(tx0, 2)))
            .collect();
        self.live = self.k.out_shape.len();
        self.lanes = LANES;
        self.count(kk, 1, &mut |l, k| {
            l.b.def_var(l.axes[conv.k_axis], k);
            let mrow = l.b.ins().imul_imm_s(k, nt);
            let src = l.float_address(m, mrow, 1);
            for (j, &(y_first, x_first)) in firsts.iter().enumerate() {
                let mv: Vec<Value> = (0..POINTS as i64)
                    .map(|p| l.f32_at(types::F32X4, src, p * kk * nt + j as i64 * TILE_LANES as i64, false))
                    .collect::<Result<_>>()?;
                // Aᵀ x: x0 + x1 + x2, x1 - x2 - x3.
                let a_t = |l: &mut Self, x: [Value; 4]| -> [Value; 2] {
                    let s = l.b.ins().fadd(x[1], x[2]);
                    let d = l.b.ins().fsub(x[1], x[2]);
                    [l.b.ins().fadd(x[0], s), l.b.ins().fsub(d, x[3])]
                };
                let cols: Vec<[Value; 2]> = (0..4).map(|nu| a_t(l, [mv[nu], mv[4 + nu], mv[8 + nu], mv[12 + nu]])).collect();
                let by_row: [[Value; 4]; 2] = std::array::from_fn(|i| [cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
                for (i, x4) in by_row.into_iter().enumerate() {
                    let [y0, y1] = a_t(l, x4);
                    let y = l.b.ins().iadd_imm_s(y_first, i as i64);
                    l.b.def_var(l.axes[conv.y_axis], y);
                    for (half, lanes) in [(0, [0, 4, 1, 5]), (LANES, [2, 6, 3, 7])] {
                        let x = l.b.ins().iadd_imm_s(x_first, half);
                        l.b.def_var(l.axes[conv.x_axis], x);
                        let acc = l.pick_lanes(y0, y1, lanes);
                        l.cache.clear();
                        l.acc = Some((acc, DType::F32));
                        let out = l.expr(epilogue);
                        l.acc = None;
                        let (val, d) = out?;
                        l.store_point(val, d)?;
                    }
                }
                l.cache.clear();
            }
            Ok(())
        })?;
        self.lanes = 1;
        Ok(())
    }
}
