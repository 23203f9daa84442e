//! `search`: chooses a [`Schedule`] for each kernel. Input: a verified
//! [`ir::kernel::Kernel`] and the [`Target`] it runs on. Output: a schedule that `codegen`
//! applies.
//!
//! - [`records`]: the tuning records database and the [`Planner`] every compile path asks:
//!   the fastest record for the kernel on this target when there is one, else a fallback.
//! - [`default_schedule`]: the hand-written heuristic.
//! - [`space`]: per kernel class, the template that enumerates the legal candidate
//!   schedules of a kernel, and mutation to a legal neighbour.
//! - [`cost`]: the analytic cost model (predicted seconds) and [`best_by_model`], the
//!   model's pick over the space: the fallback when no tuning record exists.
//!
//! Measurement and the tuner live in the root crate (`atomc tune`), which can compile and
//! run kernels.
//!
//! Invariant: `search` depends on `ir` and `targets` only; it knows nothing of Cranelift or
//! LLVM beyond the vector width the target reports.

pub mod records;

pub use records::{Db, Planner, Record, Records, Source};

use ir::atom::{BinaryFn, ReduceFn};
use ir::dtype::DType;
use ir::kernel::{Body, Expr, Kernel};
use ir::schedule::{PACK_LIMIT_BYTES, Schedule, ScheduleStep};
use targets::Target;

pub mod cost;
pub mod space;
#[cfg(test)]
mod test_kernels;

pub use cost::{best_by_model, predict};
pub use space::{KernelClass, Space};

/// Rows of the register-blocked micro-tile.
const MR: usize = 4;
/// The most vectors per row of the micro-tile: MR x NR accumulators plus NR + 1 operands
/// fit 16 vector registers (4 x 3 fits exactly but measured slower than 4 x 2 on GEMM with
/// Cranelift's register allocator).
const NR: usize = 2;
/// Rows and vectors per row of the micro-tile where the backend allocates 32 vector
/// registers (LLVM on AVX-512): 24 accumulators, a row of 4 operand vectors and a
/// broadcast, the BLIS shape for two FMA pipes of 4-cycle latency (6 x 64 f32).
const MR_32: usize = 6;
const NR_32: usize = 4;

/// The register micro-tile (rows, most vectors per row) of a contraction on `t`.
pub fn micro_tile(t: &Target) -> (usize, usize) {
    if masks_tails(t) && t.vector_registers >= 32 { (MR_32, NR_32) } else { (MR, NR) }
}

/// Threads per block of the default GPU mapping: 8 warps, a common occupancy sweet spot.
pub const GPU_BLOCK: usize = 256;

/// The GPU mapping of `k` for an NVPTX target: one thread per output point in blocks of
/// [`GPU_BLOCK`] threads, fewer (whole warps of 32) for a small output. A Scatter kernel,
/// whose points run in order, gets the naive schedule (which the GPU code generator
/// refuses).
pub fn gpu_schedule(k: &Kernel) -> Schedule {
    if matches!(k.body, Body::Scatter { .. }) {
        return Schedule::naive();
    }
    let points = k.out_shape.iter().product::<usize>().max(1);
    let block = points.next_multiple_of(32).min(GPU_BLOCK);
    Schedule { steps: vec![ScheduleStep::GpuThreads { block }] }
}

/// The heuristic schedule until the search lands:
/// - vectorize the innermost output axis with the target's f32 lanes when the kernel is f32
///   and its output contiguous along that axis;
/// - register-block a contraction (a Sum whose body is a product) along the output axis that
///   makes the most loads shared by the rows of a tile (a load shared along the block axis
///   that varies along the vector axis saves a vector load: it counts twice), by the
///   rows and up to the vectors per row of [`micro_tile`];
/// - parallelize the fewest leading output axes (never the innermost) that give every core
///   several shares;
/// - for a contraction with at least [`MIN_PACKED_ROWS`] rows, block the vector axis for
///   the cache and pack the operand the rows share (see [`packed_schedule`]).
pub fn default_schedule(k: &Kernel, t: &Target) -> Schedule {
    if t.triple.starts_with("nvptx") {
        return gpu_schedule(k);
    }
    let Body::Compute { reduce, body, epilogue } = &k.body else {
        return Schedule::naive();
    };
    let r = k.out_shape.len();
    if r == 0 {
        return Schedule::naive();
    }
    let mut steps = Vec::new();
    let last = r - 1;
    let lanes = vector_lanes(t, k.out_shape[last]);
    let f32_only = k.output.dtype == DType::F32
        && k.inputs.iter().all(|b| b.dtype == DType::F32)
        && !matches!(reduce, Some(ReduceFn::ArgMax | ReduceFn::ArgMin))
        && plain_f32(body)
        && plain_f32(epilogue);
    let vec_axis = (lanes > 1 && f32_only && k.store.coefs.get(last) == Some(&1) && vectorizes(t, k.out_shape[last], lanes)).then_some(last);
    if let Some(axis) = vec_axis {
        steps.push(ScheduleStep::Vectorize { axis, lanes });
    }
    let contraction = *reduce == Some(ReduceFn::Sum) && matches!(body, Expr::Binary(BinaryFn::Mul, ..));
    let mut block = None;
    let (mr, nr) = micro_tile(t);
    // A row of one vector (a short vector axis) keeps too few accumulators in flight with
    // 6 rows: take the most rows of the space (measured on a 3x3 conv over 10x10 with
    // AVX-512: 117 GFLOP/s with 6 rows, 139 with 8).
    let mr = match vec_axis {
        Some(a) if (mr, nr) == (MR_32, NR_32) && vectors(t, k.out_shape[a], lanes) == 1 => space::MAX_ROWS,
        _ => mr,
    };
    if contraction && f32_only {
        let mut loads = Vec::new();
        collect_loads(body, &mut loads);
        let score = |a: usize| -> usize {
            loads
                .iter()
                .filter(|(c, g)| !varies_along(c, g, a))
                .map(|(c, g)| if vec_axis.is_some_and(|v| varies_along(c, g, v)) { 2 } else { 1 })
                .sum()
        };
        block = (0..r)
            .filter(|&a| Some(a) != vec_axis && k.out_shape[a] >= 2)
            .map(|a| (score(a), k.out_shape[a].min(mr), a))
            .filter(|&(s, _, _)| s > 0)
            .max_by_key(|&(s, f, a)| (s, f, std::cmp::Reverse(a)))
            .map(|(_, f, a)| (a, f));
        if let Some((axis, factor)) = block {
            steps.push(ScheduleStep::RegisterBlock { axis, factor });
        }
        if let Some(axis) = vec_axis {
            let factor = vectors(t, k.out_shape[axis], lanes).clamp(1, nr);
            if factor > 1 {
                steps.push(ScheduleStep::Unroll { axis, factor });
            }
        }
    }
    // Enough shares for every core to get several (load balance), without the innermost
    // axis or the vectorized one.
    let want = 4 * t.cores.max(1);
    let limit = vec_axis.unwrap_or(last).min(last);
    let (mut p, mut extent) = (0, 1usize);
    while p < limit && extent < want {
        let n = k.out_shape[p];
        extent = extent.saturating_mul(match block {
            Some((b, f)) if b == p => n.div_ceil(f),
            _ => n,
        });
        p += 1;
    }
    if p > 0 {
        steps.insert(0, ScheduleStep::Parallel { axes: p });
    }
    let plain = Schedule { steps };
    if let (Some(v), Some((b, _)), true) = (vec_axis, block, contraction)
        && k.out_shape[b] >= MIN_PACKED_ROWS
        && let Some(packed) = packed_schedule(k, t, &plain, v, body)
        && packed.validate(k).is_ok()
    {
        return packed;
    }
    plain
}

/// Whether the backend that runs on `t` has [`ScheduleStep::Winograd`]: Cranelift on
/// x86-64 (128-bit vectors; LLVM on x86-64 emits the host's AVX width, wider).
pub fn runs_winograd(t: &Target) -> bool {
    t.vector_bits == 128 && t.triple.starts_with("x86_64")
}

/// Whether the backend that runs on `t` runs the partial vector at the end of the vector
/// axis with its missing lanes masked (and the whole axis when it is shorter than a
/// vector): the LLVM backend, the one whose vectors are wider than Cranelift's 128 bits.
/// Cranelift runs those points on scalars.
pub fn masks_tails(t: &Target) -> bool {
    t.vector_bits > 128
}

/// The fewest points of an axis that runs on vectors with masked tails.
const MIN_MASKED_EXTENT: usize = 4;

/// The f32 lanes of the vectors along an output axis of `extent` points on `t`: the
/// target's; with masked tails, halved while half a vector still holds the whole axis (down
/// to 4 lanes), so that a 7-wide axis runs on one vector of 8 lanes rather than on scalars.
pub fn vector_lanes(t: &Target, extent: usize) -> usize {
    let mut lanes = (t.vector_bits / 32).max(1) as usize;
    while masks_tails(t) && lanes > MIN_MASKED_EXTENT && lanes / 2 >= extent {
        lanes /= 2;
    }
    lanes
}

/// Whether an axis of `extent` points may run on vectors of `lanes` on `t`: at least one
/// whole vector, or with masked tails at least [`MIN_MASKED_EXTENT`] points.
pub fn vectorizes(t: &Target, extent: usize, lanes: usize) -> bool {
    extent >= lanes || (masks_tails(t) && extent >= MIN_MASKED_EXTENT)
}

/// Vectors of `lanes` along an axis of `extent` points: whole ones, and with masked tails
/// the partial one too.
pub fn vectors(t: &Target, extent: usize, lanes: usize) -> usize {
    if masks_tails(t) { extent.div_ceil(lanes.max(1)) } else { extent / lanes.max(1) }
}

/// The fewest rows (along the register-blocked axis) that a packed cache block must serve
/// for its copy to pay.
const MIN_PACKED_ROWS: usize = 16;

/// `plain` with cache blocks of the vector axis `v` and the operand of `body` that the rows
/// share packed: the one load that varies along `v` but not along the blocked axis nor a
/// parallel axis. A block holds as many columns (whole micro-panels) as keep the packed
/// panel, every reduction point x the columns, within half the L2 cache and
/// [`PACK_LIMIT_BYTES`]; `None` when no operand qualifies or one micro-panel is too big.
pub(crate) fn packed_schedule(k: &Kernel, t: &Target, plain: &Schedule, v: usize, body: &Expr) -> Option<Schedule> {
    let Expr::Binary(BinaryFn::Mul, x, y) = body else {
        return None;
    };
    let input = [x, y].into_iter().find_map(|e| match &**e {
        Expr::Load { buf, .. } => {
            let candidate = Schedule {
                steps: plain.steps.iter().cloned().chain([ScheduleStep::Tile { axis: v, size: plain.tile_columns() }, ScheduleStep::Pack { input: *buf }]).collect(),
            };
            candidate.validate(k).is_ok().then_some(*buf)
        }
        _ => None,
    })?;
    let cols = plain.tile_columns();
    let depth: usize = k.red_shape.iter().product();
    let budget = PACK_LIMIT_BYTES.min(t.l2_bytes / 2);
    let size = (budget / depth.max(1) / 4 / cols * cols).min(k.out_shape[v].div_ceil(cols) * cols);
    if size == 0 {
        return None;
    }
    let mut steps = plain.steps.clone();
    steps.push(ScheduleStep::Tile { axis: v, size });
    steps.push(ScheduleStep::Pack { input });
    Some(Schedule { steps })
}

/// Whether every value of `e` is f32 (no casts, gathers or axis indices), but for the
/// conditions of selects, which may compare f32 values (a lane mask on vectors).
pub(crate) fn plain_f32(e: &Expr) -> bool {
    match e {
        Expr::Select(c, a, b) => {
            matches!(&**c, Expr::Binary(f, x, y) if f.is_comparison() && plain_f32(x) && plain_f32(y))
                && plain_f32(a)
                && plain_f32(b)
        }
        Expr::Load { .. } | Expr::Acc => true,
        Expr::Const { dtype, .. } => *dtype == DType::F32,
        Expr::Unary(f, x) => !matches!(f, ir::atom::UnaryFn::IsNaN | ir::atom::UnaryFn::Not) && plain_f32(x),
        Expr::Binary(f, a, b) => !f.is_comparison() && plain_f32(a) && plain_f32(b),
        Expr::Gather { .. } | Expr::Axis(_) | Expr::Cast(..) => false,
    }
}

/// Whether a load with index coefficients `coefs` and guard coefficients `guards` (as
/// [`collect_loads`] gives them) varies along axis `a`.
pub(crate) fn varies_along(coefs: &[i64], guards: &[&[i64]], a: usize) -> bool {
    coefs.get(a).is_some_and(|&c| c != 0) || guards.iter().any(|g| g.get(a).is_some_and(|&c| c != 0))
}

/// The index and guard coefficients of every load of `e`.
pub(crate) fn collect_loads<'a>(e: &'a Expr, out: &mut Vec<(&'a [i64], Vec<&'a [i64]>)>) {
    match e {
        Expr::Load { index, guards, .. } => out.push((&index.coefs, guards.iter().map(|g| g.expr.coefs.as_slice()).collect())),
        Expr::Gather { pos, .. } => collect_loads(pos, out),
        Expr::Const { .. } | Expr::Axis(_) | Expr::Acc => {}
        Expr::Unary(_, x) | Expr::Cast(_, x) => collect_loads(x, out),
        Expr::Binary(_, a, b) => {
            collect_loads(a, out);
            collect_loads(b, out);
        }
        Expr::Select(c, a, b) => {
            collect_loads(c, out);
            collect_loads(a, out);
            collect_loads(b, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ir::kernel::{Affine, Buffer, KGuard};

    fn buf(name: &str, numel: usize) -> Buffer {
        Buffer { name: name.into(), dtype: DType::F32, numel }
    }

    fn load(buf: usize, offset: i64, coefs: &[i64], guards: Vec<KGuard>) -> Expr {
        Expr::Load { buf, index: Affine { offset, coefs: coefs.to_vec() }, guards, pad: 0.0 }
    }

    fn target(cores: usize) -> Target {
        Target { cores, l1_bytes: 32 << 10, l2_bytes: 1 << 20, ..Target::host().with_vector_bits(128) }
    }

    #[test]
    fn gpu_targets_get_one_thread_per_point() -> ir::Result<()> {
        let k = crate::test_kernels::gemm(64, 32, 48);
        for name in ["sm_80", "sm_90"] {
            let t = Target::named(name).ok_or_else(|| ir::Error::Internal(format!("no target {name}")))?;
            let s = default_schedule(&k, &t);
            s.validate(&k)?;
            assert_eq!(s.to_string(), "gpu_threads(256)");
            assert_eq!(crate::best_by_model(&k, &t), s);
        }
        let small = crate::test_kernels::elementwise(3, 5);
        assert_eq!(gpu_schedule(&small).gpu_threads(), Some(32));
        assert_eq!(default_schedule(&k, &target(2)).gpu_threads(), None);
        Ok(())
    }

    #[test]
    fn matmul_blocks_rows_and_vectorizes_columns() -> ir::Result<()> {
        let (m, kk, n) = (64, 32, 48);
        let k = Kernel {
            name: "mm".into(),
            inputs: vec![buf("a", m * kk), buf("b", kk * n)],
            output: buf("c", m * n),
            out_shape: vec![m, n],
            red_shape: vec![kk],
            store: Affine { offset: 0, coefs: vec![n as i64, 1] },
            body: Body::Compute {
                reduce: Some(ReduceFn::Sum),
                body: Expr::Binary(BinaryFn::Mul, Box::new(load(0, 0, &[kk as i64, 0, 1], vec![])), Box::new(load(1, 0, &[0, 1, n as i64], vec![]))),
                epilogue: Expr::Acc,
            },
        };
        let s = default_schedule(&k, &target(2));
        s.validate(&k)?;
        assert_eq!(s.to_string(), "parallel(1); vectorize(i1, 4); register_block(i0, 4); unroll(i1, 2); tile(i1, 48); pack(1)");
        assert_eq!(s.parallel_extent(&k), 16);
        Ok(())
    }

    #[test]
    fn conv_blocks_output_channels() -> ir::Result<()> {
        // y[n, co, h, w] = sum_{ci, kh, kw} x[n, ci, h+kh-1, w+kw-1] * w[co, ci, kh, kw], pad 1.
        let (c, h, w) = (32usize, 10usize, 12usize);
        let (c_, h_, w_) = (c as i64, h as i64, w as i64);
        let guards = vec![
            KGuard { expr: Affine { offset: -1, coefs: vec![0, 0, 1, 0, 0, 1, 0] }, bound: h_ },
            KGuard { expr: Affine { offset: -1, coefs: vec![0, 0, 0, 1, 0, 0, 1] }, bound: w_ },
        ];
        let x = load(0, -w_ - 1, &[c_ * h_ * w_, 0, w_, 1, h_ * w_, w_, 1], guards);
        let wt = load(1, 0, &[0, c_ * 9, 0, 0, 9, 3, 1], vec![]);
        let k = Kernel {
            name: "conv".into(),
            inputs: vec![buf("x", c * h * w), buf("w", c * c * 9)],
            output: buf("y", c * h * w),
            out_shape: vec![1, c, h, w],
            red_shape: vec![c, 3, 3],
            store: Affine { offset: 0, coefs: vec![c_ * h_ * w_, h_ * w_, w_, 1] },
            body: Body::Compute { reduce: Some(ReduceFn::Sum), body: Expr::Binary(BinaryFn::Mul, Box::new(x), Box::new(wt)), epilogue: Expr::Acc },
        };
        let s = default_schedule(&k, &target(2));
        s.validate(&k)?;
        assert_eq!(s.to_string(), "parallel(2); vectorize(i3, 4); register_block(i1, 4); unroll(i3, 2); tile(i3, 16); pack(0)");
        Ok(())
    }

    #[test]
    fn integer_and_scatter_kernels_stay_scalar() -> ir::Result<()> {
        let k = Kernel {
            name: "neg".into(),
            inputs: vec![Buffer { name: "x".into(), dtype: DType::I64, numel: 12 }],
            output: Buffer { name: "y".into(), dtype: DType::I64, numel: 12 },
            out_shape: vec![3, 4],
            red_shape: vec![],
            store: Affine { offset: 0, coefs: vec![4, 1] },
            body: Body::Compute { reduce: None, body: load(0, 0, &[4, 1], vec![]), epilogue: Expr::Acc },
        };
        let s = default_schedule(&k, &target(2));
        s.validate(&k)?;
        assert_eq!(s.to_string(), "parallel(1)");
        Ok(())
    }
}
