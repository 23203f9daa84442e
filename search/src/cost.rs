//! The analytic cost model: predicted seconds of a kernel under a schedule on a target.
//!
//! ```text
//! time = compute / (threads sharing the range, with the imbalance of the static split)
//!      + bytes moved / bandwidth of the cache level that holds the working set
//!      + overheads (thread fork/join, flattened parallel index, loop and tile bookkeeping)
//! ```
//!
//! Compute is counted in cycles per micro-tile: a tile of `rows x cols` vectors of `lanes`
//! points costs, per reduction step, the larger of its arithmetic (vector instructions over
//! the target's FMA units) and its loads (two load ports; a load invariant along the
//! blocked axis is read once per tile, one invariant along the vector axis is a broadcast;
//! guarded loads check, strided vector loads gather lane by lane but with masked tails
//! (LLVM) a stride of 2 to 4 is a wide load and a shuffle, and a packed load reads its
//! contiguous scratch), and at least the FMA
//! latency (one accumulator chain per tile element); accumulators beyond the vector
//! registers spill. The output is covered by full tiles and the row, vector and scalar
//! tails the code generator emits (LLVM: the rows past the last whole tile are one shorter
//! tile). The working set (every buffer's bytes, plus the re-reads
//! of a large operand once per row block that does not index it) moves at the bandwidth of
//! the smallest cache level holding it; DRAM's is the target's `bandwidth_gbs`. A `Pack`
//! costs its copy (once per cache block) and saves those re-reads.
//! Calibration: the target's peak FLOP/s (calibrated when measured), FMA units, vector
//! width and registers, cache sizes and DRAM bandwidth; the cache bandwidths below are
//! those of a current x86-64 or Arm server core.
//!
//! [`best_by_model`] is the schedule the model predicts fastest over the kernel's
//! [`Space`]; [`spearman`] measures how well predicted and measured times rank alike.

use crate::space::{KernelClass, Space, VECTOR_REGISTERS, is_plain_f32};
use crate::default_schedule;
use ir::atom::{BinaryFn, UnaryFn};
use ir::kernel::{Body, Expr, Kernel};
use ir::schedule::{Schedule, TOP_TESTED_MIN};
use targets::Target;

/// The least work (output points times reduction points) one thread's share of a kernel
/// gets; smaller kernels run whole on the calling thread (the runtime splits this way).
pub const MIN_SHARE_WORK: usize = 1 << 14;
/// Cache capacities in bytes when the target does not give them, and bandwidths in bytes
/// per cycle.
const L1_BYTES: f64 = 32e3;
const L2_BYTES: f64 = 1e6;
const L3_BYTES: f64 = 16e6;
const L2_BYTES_PER_CYCLE: f64 = 32.0;
const L3_BYTES_PER_CYCLE: f64 = 12.0;
/// Latency of a fused multiply-add (or add) in cycles: one accumulator chain's step.
const FMA_LATENCY: f64 = 4.0;
/// Loads per cycle.
const LOAD_PORTS: f64 = 2.0;
/// Waking the pool's workers and joining them, in seconds.
const FORK_JOIN_S: f64 = 3e-6;
/// Calling a kernel, in seconds.
const CALL_S: f64 = 1e-7;
/// Turning the flat parallel index into axis indices, per parallel unit and axis (a
/// division), in cycles.
const UNFLATTEN_CYCLES: f64 = 25.0;
/// Vector registers a tile can keep live without spills under Cranelift's register
/// allocator (of [`VECTOR_REGISTERS`]: a 4 x 3 tile, 16 live vectors, measured slower than
/// 4 x 2).
const ALLOCATABLE_REGISTERS: f64 = VECTOR_REGISTERS as f64 - 3.0;
/// A load whose step along the innermost reduction axis is a multiple of this many bytes
/// maps every step to one L1 set.
const SET_CONFLICT_STRIDE_BYTES: i64 = 4096;
/// Extra load-port cycles of such a load (it reads from L2).
const SET_CONFLICT_CYCLES: f64 = 4.0;
/// Issue cycles of a register copy (a Cranelift FMA's shared operand).
const COPY_CYCLES: f64 = 0.25;
/// Issue cycles of the bound checks of one guarded vector load with masked tails.
const GUARD_CYCLES: f64 = 1.5;
/// Bookkeeping of one tile (loop counters, stores' addresses), in cycles.
const TILE_CYCLES: f64 = 4.0;
/// One trip of a Cranelift reduction loop (counter, branch, loads' address arithmetic), in
/// cycles.
const LOOP_TRIP_CYCLES: f64 = 4.0;

/// The grain the runtime gives `pool.run` for a kernel whose parallel range has `extent`
/// units: enough units for [`MIN_SHARE_WORK`] points of work.
pub fn share_grain(k: &Kernel, extent: usize) -> usize {
    let red: usize = k.red_shape.iter().product();
    let per_item = (k.output.numel / extent.max(1)).max(1).saturating_mul(red.max(1));
    MIN_SHARE_WORK.div_ceil(per_item).max(1)
}

/// The threads that run `k`'s parallel range of `extent` units on `threads` threads.
pub fn shares(k: &Kernel, extent: usize, threads: usize) -> usize {
    threads.max(1).min(extent / share_grain(k, extent)).max(1)
}

/// Cost in cycles of one scalar or vector instruction's worth of `f` (polynomials and
/// library calls cost more; a library call runs lane by lane).
fn unary_cycles(f: UnaryFn, lanes: f64) -> f64 {
    use UnaryFn::*;
    match f {
        Neg | Abs | Sign | Floor | Ceil | Round | Not | BitNot | IsNaN => 1.0,
        Sqrt | Recip => 4.0,
        Exp | Log | Tanh | Erf | Sin | Cos | Tan | Atan | Sinh | Cosh => 12.0,
        Asin | Acos | Asinh | Acosh | Atanh => 30.0 * lanes,
    }
}

fn binary_cycles(f: BinaryFn, lanes: f64) -> f64 {
    use BinaryFn::*;
    match f {
        Div => 4.0,
        Pow | Mod | Fmod => 30.0 * lanes,
        Add | Sub | Mul | Max | Min | Eq | Lt | Le | Gt | Ge | And | Or | Xor | BitAnd | BitOr | BitXor | Shl | Shr => 1.0,
    }
}

/// Arithmetic cycles of `e` per point (or per vector of `lanes` points), loads excluded.
fn arith_cycles(e: &Expr, lanes: f64) -> f64 {
    match e {
        Expr::Load { .. } | Expr::Const { .. } | Expr::Acc => 0.0,
        Expr::Axis(_) => 1.0,
        Expr::Gather { pos, .. } => 4.0 * lanes + arith_cycles(pos, lanes),
        Expr::Unary(f, x) => unary_cycles(*f, lanes) + arith_cycles(x, lanes),
        Expr::Cast(_, x) => 1.0 + arith_cycles(x, lanes),
        Expr::Binary(f, a, b) => binary_cycles(*f, lanes) + arith_cycles(a, lanes) + arith_cycles(b, lanes),
        Expr::Select(c, a, b) => 1.0 + arith_cycles(c, lanes) + arith_cycles(a, lanes) + arith_cycles(b, lanes),
    }
}

/// One load of the body as the tile sees it.
struct LoadUse {
    /// Varies along the blocked axis: read once per row of the tile.
    per_row: bool,
    /// Varies along the vectorized axis: one vector per column; else a broadcast.
    per_col: bool,
    /// A vector load that is not contiguous (stride other than 1): lane by lane, or with
    /// masked tails (LLVM) one wide load and a shuffle for a stride of 2 to 4.
    strided: bool,
    /// The stride along the vectorized axis.
    stride: i64,
    guarded: bool,
    /// The input it reads (`None`: a gather).
    buf: Option<usize>,
    /// Bytes of the buffer it reads.
    bytes: f64,
    /// Its stride along the innermost reduction axis is a multiple of 4 KiB: the steps'
    /// lines share one L1 set and evict each other (a B[k, n] broadcast of a GEMM
    /// reordered to vectorize rows), so each step reads from L2.
    set_conflict: bool,
}

/// The predicted seconds of `k` under `s` on `t`, with `t.cores` threads.
pub fn predict(k: &Kernel, s: &Schedule, t: &Target) -> f64 {
    // The clock at which the target's (calibrated) peak FLOP/s is reached.
    let t_lanes = (t.vector_bits / 32).max(1) as f64;
    let hz = (t.peak_flops() / (t.fma_units.max(1) as f64 * t_lanes * 2.0)).max(1e8);
    let cache = |bytes: usize, default: f64| if bytes > 0 { bytes as f64 } else { default };
    let (l1_bytes, l2_bytes, l3_bytes) = (cache(t.l1_bytes, L1_BYTES), cache(t.l2_bytes, L2_BYTES), cache(t.l3_bytes, L3_BYTES));
    // Cranelift allocates 16 vector registers whatever the target has; LLVM every one.
    let allocatable = if crate::masks_tails(t) && t.vector_registers > 0 { t.vector_registers as f64 - 3.0 } else { ALLOCATABLE_REGISTERS };
    if s.winograd() {
        return predict_winograd(k, t, hz);
    }
    if !matches!(k.body, Body::Compute { .. }) {
        let points: usize = k.out_shape.iter().product();
        return CALL_S + points as f64 * 10.0 / hz + k.output.numel as f64 * 4.0 / (L2_BYTES_PER_CYCLE * hz);
    }
    // The kernel as the other steps see it (a `Reorder` permutes its output axes, the
    // loads' index maps with them).
    let Ok(shaped) = s.shaped(k) else {
        return f64::INFINITY;
    };
    // The schedule's parallel extent is that of the kernel as given (it applies the order).
    let extent_units = s.parallel_extent(k).max(1);
    let k = &*shaped;
    let Body::Compute { reduce, body, epilogue } = &k.body else {
        return f64::INFINITY;
    };
    let class = crate::space::classify(k);
    let r = k.out_shape.len();
    let vec = s.vectorize().filter(|&(a, _)| a < r && is_plain_f32(k) && k.store.coefs.get(a).is_some_and(|&c| c != 0));
    let lanes = vec.map_or(1, |v| v.1.max(1));
    let vec_axis = vec.map(|v| v.0);
    let block = s.register_block().filter(|&(a, f)| a < r && f > 0 && Some(a) != vec_axis);
    let cols = match (vec_axis, s.unroll()) {
        (Some(_), Some((_, f))) => f.max(1),
        _ => 1,
    };
    let red: f64 = k.red_shape.iter().product::<usize>() as f64;
    // The innermost reduction loop as the Cranelift nest runs it: the reduction axes as one
    // flat loop where every load but the packed one reads them flat, else the last axis.
    let packed = |e: &Expr| matches!(e, Expr::Load { buf, .. } if Some(*buf) == s.pack());
    let inner_red = if k.reads_reduction_flat(body, &packed) {
        k.red_shape.iter().product::<usize>()
    } else {
        k.red_shape.last().copied().unwrap_or(0)
    };
    let has_reduce = reduce.is_some();
    // A vector the output is not contiguous along is stored lane by lane (an extract and a
    // store per lane).
    let lane_stores = vec_axis.is_some_and(|a| k.store.coefs.get(a) != Some(&1));

    // Loads of the body per reduction step, and of the epilogue per point.
    let mut loads = Vec::new();
    collect_load_uses(body, k, block.map(|b| b.0), vec_axis, &mut loads);
    let mut epi_loads = Vec::new();
    collect_load_uses(epilogue, k, block.map(|b| b.0), vec_axis, &mut epi_loads);
    let contraction = class == KernelClass::Contraction;
    let masked = crate::masks_tails(t);

    // Cycles of one tile of `rows` x `cols` vectors of `lanes` points, whole reduction.
    let tile = |rows: f64, cols: f64, lanes: usize| -> f64 {
        let vector = lanes > 1;
        let l = lanes as f64;
        // Cranelift's FMA writes its broadcast operand's register: with several columns each
        // FMA but the row's last copies it first; with one column over a long (or packed,
        // flat) reduction each FMA broadcasts afresh from memory, one load.
        let cranelift_fma = !masked && vector && contraction;
        let fresh_broadcasts = cranelift_fma && cols == 1.0 && inner_red >= TOP_TESTED_MIN;
        // Each trip of a Cranelift reduction loop pays its counter, branch and the address
        // arithmetic of its loads (a window row of 3 steps: measured 1.2x slower than the
        // channels' loop of 16).
        let trips = if !masked && has_reduce && inner_red > 0 { red / inner_red as f64 } else { 0.0 };
        let copies = if cranelift_fma { rows * (cols - 1.0).max(0.0) * COPY_CYCLES } else { 0.0 };
        let load_cost = |u: &LoadUse| -> f64 {
            let n = (if u.per_row { rows } else { 1.0 }) * (if u.per_col { cols } else { 1.0 });
            // The packed load reads the scratch: contiguous, guards resolved by the pack.
            if vector && u.buf.is_some() && u.buf == s.pack() {
                return n;
            }
            let each = if !vector {
                1.0
            } else if u.per_col && u.strided && masked && (2..=4).contains(&u.stride) {
                u.stride as f64 + 1.0
            } else if u.per_col && u.strided {
                l + 1.0
            } else if u.per_col || (fresh_broadcasts && !u.guarded) {
                1.0
            } else {
                1.5
            };
            let conflict = if u.set_conflict { SET_CONFLICT_CYCLES } else { 0.0 };
            n * (each + conflict + if u.guarded { if vector { 3.0 } else { 2.0 } } else { 0.0 })
        };
        let load_cycles: f64 = loads.iter().map(load_cost).sum::<f64>() / LOAD_PORTS;
        // With masked tails (LLVM) a guarded vector load's checks (index arithmetic on
        // both end lanes, a branch) issue beside the FMAs rather than hiding under them.
        let guard_cycles: f64 = if masked && vector {
            loads
                .iter()
                .filter(|u| u.guarded && !(u.buf.is_some() && u.buf == s.pack()))
                .map(|u| (if u.per_row { rows } else { 1.0 }) * (if u.per_col { cols } else { 1.0 }) * GUARD_CYCLES)
                .sum()
        } else {
            0.0
        };
        let elems = rows * cols;
        let per_elem_arith = if contraction {
            1.0
        } else {
            arith_cycles(body, l) + if has_reduce { 1.0 } else { 0.0 }
        };
        let arith = elems * per_elem_arith / t.fma_units.max(1) as f64;
        let latency = if has_reduce { FMA_LATENCY } else { 0.0 };
        // A Cranelift FMA loop tested at the bottom over at least two trips holds two steps'
        // vector operands, and each broadcast shared by several columns a copy (measured: a
        // 7x7 conv stem's 4 x 2 tile over a 7-step window row spills, 1.2x slower than its
        // 3 x 2 tile; over a 3-step row, one trip, the 4 x 2 tile is the fastest).
        let bottom_tested = cranelift_fma && has_reduce && (4..TOP_TESTED_MIN).contains(&inner_red);
        let regs = if bottom_tested { elems + 2.0 * cols + if cols > 1.0 { 2.0 } else { 1.0 } } else { elems + cols + 1.0 };
        let spill = (regs - allocatable).max(0.0) * 3.0;
        let step = arith.max(load_cycles).max(latency) + guard_cycles + spill + copies + 1.0;
        let store = if vector && lane_stores { l } else { 1.0 };
        let epi: f64 = elems * (arith_cycles(epilogue, l) + store) + epi_loads.iter().map(load_cost).sum::<f64>();
        red * step + trips * LOOP_TRIP_CYCLES + epi + TILE_CYCLES
    };

    // Cover the output with tiles and tails.
    let extent = |a: Option<usize>| a.map_or(1, |a| k.out_shape[a]);
    let (rows, n_block) = block.map_or((1, 1), |(a, f)| (f, extent(Some(a))));
    // The rows past the last whole tile: one shorter tile (LLVM), or one at a time.
    let row_groups = if masked {
        [(n_block / rows, rows as f64), (usize::from(n_block % rows > 0), (n_block % rows) as f64)]
    } else {
        [(n_block / rows, rows as f64), (n_block % rows, 1.0)]
    };
    let n_vec = extent(vec_axis);
    let width = cols * lanes;
    let col_groups: Vec<(usize, f64, usize)> = if vec_axis.is_some() {
        if masked {
            let rest = n_vec % width;
            vec![(n_vec / width, cols as f64, lanes), (usize::from(rest > 0), rest.div_ceil(lanes) as f64, lanes)]
        } else {
            vec![(n_vec / width, cols as f64, lanes), ((n_vec % width) / lanes, 1.0, lanes), (n_vec % lanes, 1.0, 1)]
        }
    } else {
        vec![(1, 1.0, 1)]
    };
    let mut per_outer = 0.0;
    for &(nr, rr) in &row_groups {
        for &(nc, cc, ll) in &col_groups {
            if nr > 0 && nc > 0 {
                per_outer += (nr * nc) as f64 * tile(rr, cc, ll);
            }
        }
    }
    let outer: f64 = (0..r)
        .filter(|&a| Some(a) != vec_axis && Some(a) != block.map(|b| b.0))
        .map(|a| k.out_shape[a] as f64)
        .product();
    // A `Pack` copies the shared operand's values once per cache block: every reduction
    // point x every column, about 16 bytes per cycle (a vector load, a store; lane by
    // lane for a strided load). Each share packs its own copy, once per point of the
    // output axes looped outside the blocks (neither parallel, blocked nor vectorized).
    let pack_strided = loads.iter().any(|u| u.buf.is_some() && u.buf == s.pack() && u.strided);
    let pack_cycles = if s.pack().is_some() { red * n_vec as f64 * 4.0 / if pack_strided { 4.0 } else { 16.0 } } else { 0.0 };
    let packs: f64 = (s.parallel_axes()..r)
        .filter(|&a| Some(a) != vec_axis && Some(a) != block.map(|b| b.0))
        .map(|a| k.out_shape[a] as f64)
        .product();
    let compute_cycles = outer * (per_outer + 2.0);

    // Parallel split.
    let n_shares = if s.parallel_axes() == 0 { 1 } else { shares(k, extent_units, t.cores) };
    let per_share = extent_units.div_ceil(n_shares) as f64;
    let imbalance = per_share * n_shares as f64 / extent_units as f64;
    let unflatten = per_share * UNFLATTEN_CYCLES * s.parallel_axes() as f64;
    let compute_s = (compute_cycles / n_shares as f64 * imbalance + packs * pack_cycles + unflatten) / hz;

    // Memory: every buffer once, plus a large operand re-read per row block (but for a
    // packed one, which the row blocks re-read from its cache-sized scratch).
    let mut bytes: f64 = k.inputs.iter().chain([&k.output]).map(|b| (b.numel * b.dtype.size()) as f64).sum();
    let blocks = if block.is_some() { (n_block as f64 / rows as f64).ceil() } else { n_block.max(1) as f64 };
    for u in &loads {
        if !u.per_row && u.bytes > l2_bytes && s.pack().is_none() {
            bytes += u.bytes * (blocks - 1.0).max(0.0) / (if block.is_some() { 1.0 } else { 4.0 });
        }
    }
    let sharing = n_shares as f64;
    let bandwidth = if bytes <= l1_bytes * sharing {
        f64::INFINITY
    } else if bytes <= l2_bytes * sharing {
        L2_BYTES_PER_CYCLE * hz * sharing
    } else if bytes <= l3_bytes {
        L3_BYTES_PER_CYCLE * hz * sharing
    } else {
        t.bandwidth_bytes_per_s().max(1e9)
    };
    let memory_s = bytes / bandwidth;
    let fork = if n_shares > 1 { FORK_JOIN_S } else { 0.0 };
    compute_s + memory_s + fork + CALL_S
}

/// Issue cycles per f32x4 FMA of the Winograd products' 8 x 1 micro-tile: each FMA comes
/// with a broadcast and a share of the loop's back-edge copies, about 2.6 instructions, and
/// the loop is bound by issuing them.
const WINOGRAD_FMA_CYCLES: f64 = 0.45;
/// Instructions per cycle of the transforms (loads, shuffles, adds, stores).
const WINOGRAD_IPC: f64 = 3.0;

/// The predicted seconds of `k` under a Winograd schedule on `t` (see
/// `codegen/src/cranelift/winograd.rs`), at `hz`: per block of tiles, the input transform
/// (about 72 instructions per vector of 4 tiles and channel), the 16 products (an FMA per 4
/// tiles, channel pair and point) and the output transform with the epilogue (about 50
/// plus 4 epilogues per vector of 4 tiles and output channel). The filters are taken as
/// prepared once (constant weights, the runtime's case), not transformed per call.
/// Measured on ResNet-style's 3x3 convs and a thin 2 -> 8 one: within 15%.
fn predict_winograd(k: &Kernel, t: &Target, hz: f64) -> f64 {
    let (Ok(w), Body::Compute { epilogue, .. }) = (ir::winograd::WinogradConv::of(k), &k.body) else {
        return f64::INFINITY;
    };
    let (kk, c) = (w.k as f64, w.c as f64);
    let tile_vectors = (w.oh / 2 * w.ow / 2) as f64 / 4.0;
    let input = c * tile_vectors * 72.0 / WINOGRAD_IPC;
    let products = POINTS_F * kk * c * tile_vectors * WINOGRAD_FMA_CYCLES;
    let output = kk * tile_vectors * (50.0 + 4.0 * (arith_cycles(epilogue, 4.0) + 2.0)) / WINOGRAD_IPC;
    let blocks = w.blocks();
    let n_shares = shares(k, blocks, t.cores);
    let imbalance = blocks.div_ceil(n_shares) as f64 * n_shares as f64 / blocks as f64;
    let fork = if n_shares > 1 { FORK_JOIN_S } else { 0.0 };
    (input + products + output) / n_shares as f64 * imbalance / hz + fork + CALL_S
}

/// [`ir::winograd::POINTS`] as a float.
const POINTS_F: f64 = ir::winograd::POINTS as f64;

fn collect_load_uses(e: &Expr, k: &Kernel, block: Option<usize>, vec_axis: Option<usize>, out: &mut Vec<LoadUse>) {
    let nonzero = |c: &[i64], a: Option<usize>| a.is_some_and(|a| c.get(a).is_some_and(|&x| x != 0));
    match e {
        Expr::Load { buf, index, guards, .. } => {
            let per_row = nonzero(&index.coefs, block) || guards.iter().any(|g| nonzero(&g.expr.coefs, block));
            let per_col = nonzero(&index.coefs, vec_axis) || guards.iter().any(|g| nonzero(&g.expr.coefs, vec_axis));
            let stride = vec_axis.and_then(|a| index.coefs.get(a).copied()).unwrap_or(0);
            let strided = stride != 0 && stride != 1;
            let input = k.inputs.get(*buf);
            let bytes = input.map_or(0.0, |b| (b.numel * b.dtype.size()) as f64);
            let size = input.map_or(4, |b| b.dtype.size()) as i64;
            let inner = k.red_shape.len().checked_sub(1).map(|i| k.out_shape.len() + i);
            let step_bytes = inner.and_then(|a| index.coefs.get(a)).map_or(0, |&c| (c * size).abs());
            let set_conflict = step_bytes != 0 && step_bytes % SET_CONFLICT_STRIDE_BYTES == 0 && bytes > L1_BYTES;
            out.push(LoadUse { per_row, per_col, strided, stride, guarded: !guards.is_empty(), buf: Some(*buf), bytes, set_conflict });
        }
        Expr::Gather { buf, index, pos, .. } => {
            let per_row = nonzero(&index.coefs, block);
            let bytes = k.inputs.get(*buf).map_or(0.0, |b| (b.numel * b.dtype.size()) as f64);
            out.push(LoadUse { per_row, per_col: vec_axis.is_some(), strided: true, stride: 0, guarded: true, buf: None, bytes, set_conflict: false });
            collect_load_uses(pos, k, block, vec_axis, out);
        }
        Expr::Const { .. } | Expr::Axis(_) | Expr::Acc => {}
        Expr::Unary(_, x) | Expr::Cast(_, x) => collect_load_uses(x, k, block, vec_axis, out),
        Expr::Binary(_, a, b) => {
            collect_load_uses(a, k, block, vec_axis, out);
            collect_load_uses(b, k, block, vec_axis, out);
        }
        Expr::Select(c, a, b) => {
            collect_load_uses(c, k, block, vec_axis, out);
            collect_load_uses(a, k, block, vec_axis, out);
            collect_load_uses(b, k, block, vec_axis, out);
        }
    }
}

/// Floating-point operations of one run of `k`: its body's arithmetic per iteration point
/// (at least one) plus a reduction's accumulate, and the epilogue's per output point.
pub fn flops(k: &Kernel) -> f64 {
    let out: f64 = k.out_shape.iter().product::<usize>() as f64;
    let Body::Compute { reduce, body, epilogue } = &k.body else {
        return out;
    };
    let red: f64 = k.red_shape.iter().product::<usize>() as f64;
    let per_point = count_ops(body) as f64 + if reduce.is_some() { 1.0 } else { 0.0 };
    out * red * per_point.max(1.0) + out * count_ops(epilogue) as f64
}

/// Arithmetic nodes of `e`.
fn count_ops(e: &Expr) -> usize {
    match e {
        Expr::Load { .. } | Expr::Const { .. } | Expr::Acc | Expr::Axis(_) => 0,
        Expr::Gather { pos, .. } => count_ops(pos),
        Expr::Unary(_, x) | Expr::Cast(_, x) => 1 + count_ops(x),
        Expr::Binary(_, a, b) => 1 + count_ops(a) + count_ops(b),
        Expr::Select(c, a, b) => 1 + count_ops(c) + count_ops(a) + count_ops(b),
    }
}

/// The schedule the cost model predicts fastest for `k` on `t` (with `t.cores` threads) over
/// the kernel's [`Space`]. The heuristic [`default_schedule`] competes too and is kept unless
/// a candidate is predicted at least [`SWITCH_GAIN`] faster (the model's error margin).
pub fn best_by_model(k: &Kernel, t: &Target) -> Schedule {
    if t.triple.starts_with("nvptx") {
        // The space and the model describe CPU loop nests; a GPU has one mapping so far.
        return crate::gpu_schedule(k);
    }
    let fallback = default_schedule(k, t);
    let baseline = predict(k, &fallback, t);
    // The fastest predicted candidate in the kernel's own axis order, and reordered.
    let mut plain: Option<(f64, Schedule)> = None;
    let mut reordered: Option<(f64, Schedule)> = None;
    for s in Space::of(k, t).candidates() {
        let time = predict(k, &s, t);
        let slot = if s.reorder().is_some() { &mut reordered } else { &mut plain };
        if slot.as_ref().is_none_or(|b| time.total_cmp(&b.0).is_lt()) {
            *slot = Some((time, s));
        }
    }
    let pick = match plain {
        Some((time, s)) if time * SWITCH_GAIN < baseline => (time, s),
        _ => (baseline, fallback),
    };
    match reordered {
        Some((time, s)) if time * REORDER_GAIN < pick.0 => s,
        _ => pick.1,
    }
}

/// How much faster (a ratio) the model must predict a candidate than the heuristic for
/// [`best_by_model`] to pick it.
pub const SWITCH_GAIN: f64 = 1.15;

/// How much faster (a ratio) the model must predict a reordered (channel-vector)
/// candidate than the pick in the kernel's own axis order. It was 2 while conv windows
/// kept their padding guards: guarded broadcasts were the model's least accurate part
/// (ResNet-style's 3x3 convs over 8x8 maps: the model's favourite reordered schedule ran
/// 1.5x slower than the plain one). Since `ir::padding` materializes the padding, the
/// broadcasts are plain loads and the model's reordered picks hold: at 1, untuned
/// ResNet-style with LLVM went from 0.075 to 0.062 ms, the other models unchanged.
pub const REORDER_GAIN: f64 = 1.0;

/// The candidates of `k`'s space ranked by predicted time, fastest first, with their
/// predictions.
pub fn ranked(k: &Kernel, t: &Target) -> Vec<(f64, Schedule)> {
    let mut all: Vec<(f64, Schedule)> = Space::of(k, t).candidates().into_iter().map(|s| (predict(k, &s, t), s)).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all
}

/// Spearman's rank correlation of two samples of equal length (ties get their mean rank);
/// `None` for fewer than two pairs, unequal lengths or a constant sample.
pub fn spearman(xs: &[f64], ys: &[f64]) -> Option<f64> {
    if xs.len() != ys.len() || xs.len() < 2 {
        return None;
    }
    let (rx, ry) = (ranks(xs), ranks(ys));
    let mean = (xs.len() as f64 + 1.0) / 2.0;
    let (mut cov, mut vx, mut vy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        cov += (a - mean) * (b - mean);
        vx += (a - mean) * (a - mean);
        vy += (b - mean) * (b - mean);
    }
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

/// 1-based ranks, ties sharing their mean rank.
fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut out = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            out[o] = rank;
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kernels::*;
    use ir::schedule::ScheduleStep::*;

    fn target(cores: usize) -> Target {
        Target { cores, ..Target::host().with_vector_bits(128) }
    }

    fn s(steps: Vec<ir::schedule::ScheduleStep>) -> Schedule {
        Schedule { steps }
    }

    #[test]
    fn spearman_of_known_samples() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(spearman(&x, &[10.0, 20.0, 30.0, 40.0, 50.0]), Some(1.0));
        assert_eq!(spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]), Some(-1.0));
        // Monotone but not linear: still 1.
        assert_eq!(spearman(&x, &[1.0, 8.0, 27.0, 64.0, 1000.0]), Some(1.0));
        // 1 - 6 * sum d^2 / (n (n^2 - 1)) with d = (0, 0, 1, -1, 0): 1 - 12 / 120 = 0.9.
        let rho = spearman(&x, &[1.0, 2.0, 4.0, 3.0, 5.0]).unwrap_or(0.0);
        assert!((rho - 0.9).abs() < 1e-12, "{rho}");
        // Ties share their mean rank.
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert_eq!(spearman(&x, &[1.0; 5]), None);
        assert_eq!(spearman(&x[..1], &[1.0]), None);
        assert_eq!(spearman(&x, &[1.0, 2.0]), None);
    }

    #[test]
    fn obvious_orderings() {
        let t1 = target(1);
        let k = gemm(256, 256, 256);
        let scalar = predict(&k, &Schedule::naive(), &t1);
        let vector = predict(&k, &s(vec![Vectorize { axis: 1, lanes: 4 }]), &t1);
        let blocked = predict(&k, &s(vec![Vectorize { axis: 1, lanes: 4 }, RegisterBlock { axis: 0, factor: 4 }, Unroll { axis: 1, factor: 2 }]), &t1);
        assert!(vector < scalar / 2.0, "vector {vector} scalar {scalar}");
        assert!(blocked < vector / 2.0, "blocked {blocked} vector {vector}");
        // Spilling: a tile wider than the registers is slower than one that fits.
        let spill = predict(&k, &s(vec![Vectorize { axis: 1, lanes: 4 }, RegisterBlock { axis: 0, factor: 8 }, Unroll { axis: 1, factor: 4 }]), &t1);
        assert!(spill > blocked, "spill {spill} blocked {blocked}");
        // Parallel on 4 cores beats one.
        let t4 = target(4);
        let par = s(vec![Parallel { axes: 1 }, Vectorize { axis: 1, lanes: 4 }, RegisterBlock { axis: 0, factor: 4 }, Unroll { axis: 1, factor: 2 }]);
        assert!(predict(&k, &par, &t4) < blocked / 2.0);
        // A tiny kernel does not pay for threads it cannot use.
        let tiny = elementwise(2, 8);
        let one = predict(&tiny, &s(vec![Vectorize { axis: 1, lanes: 4 }]), &t4);
        let split = predict(&tiny, &s(vec![Parallel { axes: 1 }, Vectorize { axis: 1, lanes: 4 }]), &t4);
        assert!(one <= split);
        // Elementwise: vectors beat scalars.
        let e = elementwise(64, 1024);
        assert!(predict(&e, &s(vec![Vectorize { axis: 1, lanes: 4 }]), &t1) < predict(&e, &Schedule::naive(), &t1));
        // Every prediction is positive and finite.
        for k in [gemm(3, 5, 7), conv3x3(8, 5, 6), depthwise(4, 9, 9), softmax_sum(7, 33), integer(3, 3)] {
            for c in Space::of(&k, &t4).candidates() {
                let p = predict(&k, &c, &t4);
                assert!(p.is_finite() && p > 0.0, "{c}: {p}");
            }
        }
    }

    #[test]
    fn a_reordered_schedule_is_priced_on_the_reordered_kernel() {
        // Every reordered candidate costs what the rest of its steps cost on the kernel
        // with its output axes in that order: the loads are read in the new order too (a
        // conv's weights become the vectors, its input pixel the broadcast).
        let t = target(1);
        let k = conv3x3(16, 12, 12);
        let reordered: Vec<Schedule> = Space::of(&k, &t).candidates().into_iter().filter(|c| c.reorder().is_some()).collect();
        assert!(!reordered.is_empty());
        for c in reordered {
            let order = c.reorder().map(<[usize]>::to_vec).unwrap_or_default();
            let rest = s(c.steps.iter().filter(|st| !matches!(st, Reorder { .. })).cloned().collect());
            let (whole, parts) = (predict(&k, &c, &t), predict(&k.reorder_out_axes(&order), &rest, &t));
            assert!((whole - parts).abs() <= 1e-12 * whole, "{c}: {whole} vs {parts}");
        }
    }

    #[test]
    fn a_bottom_tested_fma_loop_holds_two_steps_of_operands() {
        // Cranelift runs a window row of 7 as a loop tested at the bottom, two steps per
        // trip: a conv stem's 4 x 2 channel-vectorized tile then spills (measured 1.2x
        // slower than 3 x 2); over a flat loop of 147 the same tile fits.
        let t = target(1);
        let k = stem7x7(16, 32, 32);
        let tile = |rows: usize| {
            let steps = vec![
                Reorder { order: vec![0, 2, 3, 1] },
                Vectorize { axis: 3, lanes: 4 },
                RegisterBlock { axis: 2, factor: rows },
                Unroll { axis: 3, factor: 2 },
                Tile { axis: 3, size: 16 },
                Pack { input: 0 },
            ];
            predict(&k, &s(steps), &t)
        };
        assert!(tile(4) > tile(3), "4x2 {} 3x2 {}", tile(4), tile(3));
        // Packed, the input's window reads flat: one loop of 147, tested at the top.
        let packed = |rows: usize| {
            predict(&k, &s(vec![Vectorize { axis: 3, lanes: 4 }, RegisterBlock { axis: 1, factor: rows }, Unroll { axis: 3, factor: 2 }, Tile { axis: 3, size: 32 }, Pack { input: 1 }]), &t)
        };
        assert!(packed(4) < packed(2), "4x2 {} 2x2 {}", packed(4), packed(2));
    }

    #[test]
    fn winograd_is_the_pick_for_3x3_convs() {
        // Measured (`cost_model_quality`, one thread, Cranelift): Winograd 13.7 us against
        // 26.6 us for the fastest direct schedule sampled on a 16 -> 16 conv over 16x16,
        // 12.2 against 28 on 32 -> 32 over 8x8, 1.8 against 1.9 on a thin 2 -> 8 one.
        let t = target(1);
        for k in [padded_conv3x3(16, 16, 16, 16), padded_conv3x3(8, 2, 16, 16)] {
            let s = best_by_model(&k, &t);
            assert!(s.winograd(), "{s}");
        }
    }

    #[test]
    fn best_by_model_is_a_legal_candidate() -> ir::Result<()> {
        let t = target(2);
        for k in [gemm(64, 64, 64), conv3x3(16, 14, 14), depthwise(32, 28, 28), softmax_sum(64, 128), elementwise(32, 256), integer(4, 4)] {
            let s = best_by_model(&k, &t);
            s.validate(&k)?;
            assert!(predict(&k, &s, &t) <= predict(&k, &default_schedule(&k, &t), &t));
        }
        Ok(())
    }
}
