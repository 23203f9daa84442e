//! Schedules: how a kernel's loop nest runs, as a list of steps from a closed enum. A
//! schedule changes the order, grouping and width of the work, never what a kernel
//! computes (up to the rounding of a fused multiply-add). It lives next to the kernel IR so
//! that `search` chooses schedules and `codegen` applies them without depending on each
//! other. [`Schedule::validate`] rejects an illegal step with an error, never a panic.
//!
//! Steps: [`ScheduleStep::Reorder`] (the order of the output axes, which every other step
//! names) and [`ScheduleStep::ReduceOrder`] (the order of the reduction loops),
//! [`ScheduleStep::Parallel`], [`ScheduleStep::Vectorize`],
//! [`ScheduleStep::RegisterBlock`] and [`ScheduleStep::Unroll`] shape the micro-tile and
//! the parallel range; [`ScheduleStep::Tile`] (cache blocks of the vector axis, looped
//! outside the rows) and [`ScheduleStep::Pack`] (one operand's cache block copied into a
//! contiguous scratch in micro-panel order) make a contraction read its shared operand
//! from cache with unit stride. Blocking the reduction is not a step yet.
//! [`ScheduleStep::GpuThreads`] maps a kernel onto GPU threads instead (the NVPTX target);
//! it stands alone. [`ScheduleStep::Winograd`] runs a 3x3 convolution as Winograd
//! F(2x2, 3x3) (`winograd.rs`); it stands alone too.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use crate::atom::ReduceFn;
use crate::dtype::DType;
use crate::kernel::{Body, Expr, KGuard, Kernel};
use std::borrow::Cow;
use std::fmt;

/// The version of what a schedule means: bump it when codegen applies an existing step
/// differently, so tuning records measured under the old meaning are no longer used.
/// (Adding a step kind does not need a bump: old records never name it.)
pub const SCHEDULE_FORMAT: u32 = 1;

/// One step of a schedule. Axes are output axes of the kernel (`i0` .. `i{R-1}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScheduleStep {
    /// The output axes in a new order: axis `j` of the reordered kernel is axis `order[j]`
    /// of the kernel. Every other step names axes of the reordered kernel (see
    /// [`Schedule::shaped`]), so e.g. a conv's output channels can become the innermost
    /// axis, vectorized, with the pixels blocked into rows and parallel.
    Reorder { order: Vec<usize> },
    /// The reduction axes in a new order: reduction axis `j` of the shaped kernel is
    /// reduction axis `order[j]` of the kernel (e.g. a conv's input channels innermost,
    /// one long loop, rather than a window's 3-step row). Sums then add in another order.
    ReduceOrder { order: Vec<usize> },
    /// The first `axes` output axes, flattened row-major, form the parallel range that
    /// threads split (a register-blocked axis among them counts its blocks, not its
    /// points). `axes = 0`: the kernel runs whole.
    Parallel { axes: usize },
    /// Run output axis `axis` on vectors of `lanes` consecutive points; the points left
    /// over run one by one. Where the output is not contiguous along `axis`, each vector is
    /// stored lane by lane.
    Vectorize { axis: usize, lanes: usize },
    /// Unroll-and-jam output axis `axis` by `factor`: a micro-tile of `factor` rows keeps its
    /// accumulators in registers through the reduction, and loads that do not depend on the
    /// row are shared by the rows.
    RegisterBlock { axis: usize, factor: usize },
    /// `factor` vectors (or points) per row along `axis`, which must be the vectorized axis:
    /// the columns of the micro-tile.
    Unroll { axis: usize, factor: usize },
    /// Cache blocking of the vectorized axis `axis`: blocks of `size` points (a multiple
    /// of the micro-tile's columns, lanes x unroll) whose loop runs outside the rows of the
    /// register-blocked axis and outside the parallel range, so that every row of a share
    /// reuses one block of the operand it shares. The output axes that are neither
    /// parallel, blocked nor vectorized loop outside the blocks.
    Tile { axis: usize, size: usize },
    /// Before the rows of a cache block run, copy what the body's only load of input
    /// `input` reads for that block (every reduction point x the block's columns, padding
    /// resolved) into a scratch of [`PACK_LIMIT_BYTES`] at most, in micro-panel order
    /// (panels of lanes x unroll columns, reduction-major): the micro-tile reads it with
    /// unit stride. Needs a `Tile`; the load must vary along the vector axis and not
    /// depend on the register-blocked axis nor on a parallel axis longer than 1.
    Pack { input: usize },
    /// GPU mapping (NVPTX): the flattened output space, row-major, runs on a 1-D grid of
    /// blocks of `block` threads (1 to [`GPU_MAX_BLOCK`]); thread
    /// `blockIdx.x * blockDim.x + threadIdx.x` computes that one output point, its
    /// reduction sequentially, and threads past the last point return at once. The only
    /// step of its schedule: the CPU steps shape a host loop nest.
    GpuThreads { block: usize },
    /// Run a 3x3 stride-1 convolution ([`crate::winograd::WinogradConv::of`]) as Winograd
    /// F(2x2, 3x3) on f32x4: with its filters transformed beforehand
    /// ([`crate::winograd::WinogradConv::transform_filters`], given to the kernel beside its
    /// buffers), each block of tiles (the parallel range) has its input transformed,
    /// multiplied by the filters in the transformed domain, and transformed back through
    /// the epilogue.
    /// It stands alone. Sums are reassociated: results differ by rounding.
    Winograd,
}

/// The most threads a [`ScheduleStep::GpuThreads`] block may have (CUDA's limit).
pub const GPU_MAX_BLOCK: usize = 1024;

/// The shortest innermost FMA reduction loop that the Cranelift nest tests at the top (its
/// step's loads then fold into the FMAs); a shorter one is tested at the bottom and runs two
/// steps per trip, both steps' vector operands live at once.
pub const TOP_TESTED_MIN: usize = 8;

/// The most bytes a [`ScheduleStep::Pack`] scratch may take (it lives on the stack of the
/// thread that runs the kernel).
pub const PACK_LIMIT_BYTES: usize = 256 * 1024;

/// A list of steps, at most one of each kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schedule {
    pub steps: Vec<ScheduleStep>,
}

impl Schedule {
    /// The schedule that runs the loop nest as written: scalar, whole, one point at a time.
    pub fn naive() -> Schedule {
        Schedule::default()
    }

    /// The order of the output axes ([`ScheduleStep::Reorder`]).
    pub fn reorder(&self) -> Option<&[usize]> {
        self.steps.iter().find_map(|s| match s {
            ScheduleStep::Reorder { order } => Some(order.as_slice()),
            _ => None,
        })
    }

    /// The order of the reduction axes ([`ScheduleStep::ReduceOrder`]).
    pub fn reduce_order(&self) -> Option<&[usize]> {
        self.steps.iter().find_map(|s| match s {
            ScheduleStep::ReduceOrder { order } => Some(order.as_slice()),
            _ => None,
        })
    }

    /// The kernel the other steps shape: `k` with its output axes reordered by a
    /// [`ScheduleStep::Reorder`] and its reduction axes by a [`ScheduleStep::ReduceOrder`],
    /// or `k` itself without either. Errors when an order is not a permutation of the
    /// axes it orders.
    pub fn shaped<'k>(&self, k: &'k Kernel) -> Result<Cow<'k, Kernel>> {
        let check = |order: &[usize], n: usize, what: &str| {
            let mut seen = vec![false; n];
            if order.len() == n && order.iter().all(|&a| a < n && !std::mem::replace(&mut seen[a], true)) {
                Ok(())
            } else {
                Err(Error::InvalidModel(format!("kernel '{}': schedule '{self}': {order:?} is not an order of its {n} {what} axes", k.name)))
            }
        };
        let mut shaped = Cow::Borrowed(k);
        if let Some(order) = self.reorder() {
            check(order, k.out_shape.len(), "output")?;
            shaped = Cow::Owned(shaped.reorder_out_axes(order));
        }
        if let Some(order) = self.reduce_order() {
            check(order, k.red_shape.len(), "reduction")?;
            shaped = Cow::Owned(shaped.reorder_red_axes(order));
        }
        Ok(shaped)
    }

    /// How many leading output axes form the parallel range (0 without a `Parallel` step).
    pub fn parallel_axes(&self) -> usize {
        self.steps.iter().find_map(|s| match s {
            ScheduleStep::Parallel { axes } => Some(*axes),
            _ => None,
        }).unwrap_or(0)
    }

    /// The vectorized axis and its lanes.
    pub fn vectorize(&self) -> Option<(usize, usize)> {
        self.steps.iter().find_map(|s| match s {
            ScheduleStep::Vectorize { axis, lanes } => Some((*axis, *lanes)),
            _ => None,
        })
    }

    /// The register-blocked axis and its factor (rows of the micro-tile).
    pub fn register_block(&self) -> Option<(usize, usize)> {
        self.steps.iter().find_map(|s| match s {
            ScheduleStep::RegisterBlock { axis, factor } => Some((*axis, *factor)),
            _ => None,
        })
    }

    /// The unrolled axis and its factor (columns of the micro-tile).
    pub fn unroll(&self) -> Option<(usize, usize)> {
        self.steps.iter().find_map(|s| match s {
            ScheduleStep::Unroll { axis, factor } => Some((*axis, *factor)),
            _ => None,
        })
    }

    /// The tiled (cache-blocked) axis and its block size.
    pub fn tile(&self) -> Option<(usize, usize)> {
        self.steps.iter().find_map(|s| match s {
            ScheduleStep::Tile { axis, size } => Some((*axis, *size)),
            _ => None,
        })
    }

    /// The packed input.
    pub fn pack(&self) -> Option<usize> {
        self.steps.iter().find_map(|s| match s {
            ScheduleStep::Pack { input } => Some(*input),
            _ => None,
        })
    }

    /// The threads per block of a [`ScheduleStep::GpuThreads`] mapping.
    pub fn gpu_threads(&self) -> Option<usize> {
        self.steps.iter().find_map(|s| match s {
            ScheduleStep::GpuThreads { block } => Some(*block),
            _ => None,
        })
    }

    /// Whether the schedule is [`ScheduleStep::Winograd`].
    pub fn winograd(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, ScheduleStep::Winograd))
    }

    /// Columns of the micro-tile along the vector axis: lanes x unroll (1 without
    /// vectorizing).
    pub fn tile_columns(&self) -> usize {
        let lanes = self.vectorize().map_or(1, |v| v.1);
        lanes * self.unroll().map_or(1, |u| u.1)
    }

    /// Bytes of the packed scratch for `k`: every reduction point x the block's columns,
    /// 4 bytes each (0 without packing).
    pub fn pack_bytes(&self, k: &Kernel) -> usize {
        match (self.pack(), self.tile()) {
            (Some(_), Some((_, size))) => k.red_shape.iter().product::<usize>().saturating_mul(size).saturating_mul(4),
            _ => 0,
        }
    }

    /// The extent of the parallel range of `k` under this schedule: the product of the
    /// first [`Schedule::parallel_axes`] output extents, a register-blocked axis counting
    /// its blocks (rounded up). 1 when nothing is parallel.
    pub fn parallel_extent(&self, k: &Kernel) -> usize {
        if self.winograd() {
            return crate::winograd::WinogradConv::of(k).map_or(1, |w| w.blocks());
        }
        let block = self.register_block();
        let shape: Vec<usize> = match self.reorder() {
            Some(order) => order.iter().filter_map(|&a| k.out_shape.get(a).copied()).collect(),
            None => k.out_shape.clone(),
        };
        shape
            .iter()
            .take(self.parallel_axes())
            .enumerate()
            .map(|(a, &n)| match block {
                Some((b, f)) if b == a && f > 0 => n.div_ceil(f),
                _ => n,
            })
            .product::<usize>()
    }

    /// Checks every step against `k` (reordered by a [`ScheduleStep::Reorder`], which must
    /// be a permutation): axes are output axes, factors and lanes positive, at
    /// most one step of each kind, a vectorized axis stored (not broadcast) and not parallel,
    /// an unrolled axis vectorized, a blocked axis not the vectorized one; a Scatter kernel
    /// takes no step (its points run in order); a tiled axis vectorized, its size a
    /// multiple of the micro-tile's columns; a packed input as [`ScheduleStep::Pack`] says;
    /// a GPU mapping alone, with 1 to [`GPU_MAX_BLOCK`] threads per block; a Winograd step
    /// alone, on a convolution [`crate::winograd::WinogradConv::of`] accepts.
    pub fn validate(&self, k: &Kernel) -> Result<()> {
        let k = &*self.shaped(k)?;
        let r = k.out_shape.len();
        let err = |msg: String| Error::InvalidModel(format!("kernel '{}': schedule '{self}': {msg}", k.name));
        let mut seen = [false; 10];
        for s in &self.steps {
            let kind = match s {
                ScheduleStep::ReduceOrder { .. } => 8,
                ScheduleStep::Reorder { .. } => 7,
                ScheduleStep::Parallel { .. } => 0,
                ScheduleStep::Vectorize { .. } => 1,
                ScheduleStep::RegisterBlock { .. } => 2,
                ScheduleStep::Unroll { .. } => 3,
                ScheduleStep::Tile { .. } => 4,
                ScheduleStep::Pack { .. } => 5,
                ScheduleStep::GpuThreads { .. } => 6,
                ScheduleStep::Winograd => 9,
            };
            if std::mem::replace(&mut seen[kind], true) {
                return Err(err(format!("{s} is the second step of its kind")));
            }
            if matches!(k.body, Body::Scatter { .. }) {
                return Err(err(format!("{s} on a scatter kernel, whose points run in order")));
            }
            match *s {
                ScheduleStep::Reorder { .. } | ScheduleStep::ReduceOrder { .. } => {}
                ScheduleStep::Parallel { axes } => {
                    if axes > r {
                        return Err(err(format!("{s}: the kernel has {r} output axes")));
                    }
                }
                ScheduleStep::Vectorize { axis, lanes } | ScheduleStep::RegisterBlock { axis, factor: lanes }
                | ScheduleStep::Unroll { axis, factor: lanes }
                | ScheduleStep::Tile { axis, size: lanes } => {
                    if axis >= r {
                        return Err(err(format!("{s}: axis i{axis} is not an output axis (the kernel has {r})")));
                    }
                    if lanes == 0 {
                        return Err(err(format!("{s}: a factor of 0")));
                    }
                }
                ScheduleStep::Pack { input } => {
                    if input >= k.inputs.len() {
                        return Err(err(format!("{s}: the kernel has {} inputs", k.inputs.len())));
                    }
                }
                ScheduleStep::Winograd => {
                    if self.steps.len() > 1 {
                        return Err(err(format!("{s} with other steps: it stands alone")));
                    }
                    crate::winograd::WinogradConv::of(k).map_err(|why| err(format!("{s}: {why}")))?;
                }
                ScheduleStep::GpuThreads { block } => {
                    if !(1..=GPU_MAX_BLOCK).contains(&block) {
                        return Err(err(format!("{s}: blocks take 1 to {GPU_MAX_BLOCK} threads")));
                    }
                    if self.steps.len() > 1 {
                        return Err(err(format!("{s} with other steps: a GPU mapping stands alone")));
                    }
                }
            }
        }
        let p = self.parallel_axes();
        if let Some((axis, lanes)) = self.vectorize() {
            if !lanes.is_power_of_two() {
                return Err(err(format!("{lanes} lanes is not a power of two")));
            }
            if k.store.coefs.get(axis).copied().unwrap_or(0) == 0 {
                return Err(err(format!("vectorizes i{axis}, along which the output does not advance")));
            }
            if axis < p {
                return Err(err(format!("vectorizes i{axis}, which is a parallel axis")));
            }
        }
        if let Some((axis, _)) = self.unroll()
            && self.vectorize().map(|v| v.0) != Some(axis)
        {
            return Err(err(format!("unrolls i{axis}, which is not the vectorized axis")));
        }
        if let Some((axis, _)) = self.register_block()
            && self.vectorize().map(|v| v.0) == Some(axis)
        {
            return Err(err(format!("register-blocks i{axis}, which is the vectorized axis")));
        }
        if let Some((axis, size)) = self.tile() {
            if self.vectorize().map(|v| v.0) != Some(axis) {
                return Err(err(format!("tiles i{axis}, which is not the vectorized axis")));
            }
            let cols = self.tile_columns();
            if size % cols != 0 {
                return Err(err(format!("tiles of {size} are not a multiple of the {cols} columns of the micro-tile")));
            }
        }
        if let Some(input) = self.pack() {
            self.validate_pack(k, input).map_err(err)?;
        }
        Ok(())
    }

    /// The conditions of [`ScheduleStep::Pack`] on `input`.
    fn validate_pack(&self, k: &Kernel, input: usize) -> std::result::Result<(), String> {
        let Some((vec_axis, _)) = self.tile() else {
            return Err(format!("packs input {input} without a tile step"));
        };
        let Body::Compute { reduce: Some(f), body, .. } = &k.body else {
            return Err(format!("packs input {input} of a kernel without a reduction"));
        };
        if matches!(f, ReduceFn::ArgMax | ReduceFn::ArgMin) {
            return Err(format!("packs input {input} of an {} reduction", f.name()));
        }
        if k.inputs[input].dtype != DType::F32 {
            return Err(format!("packs input {input} of dtype {}", k.inputs[input].dtype));
        }
        let mut loads = Vec::new();
        reads_of(body, input, &mut loads);
        let [Some((index, guards))] = loads[..] else {
            return Err(format!("packs input {input}, which the body reads {} times (or gathers)", loads.len()));
        };
        let uses = |a: usize| {
            index.coefs.get(a).is_some_and(|&c| c != 0) || guards.iter().any(|g| g.expr.coefs.get(a).is_some_and(|&c| c != 0))
        };
        if !uses(vec_axis) {
            return Err(format!("packs input {input}, whose load does not vary along i{vec_axis}"));
        }
        if let Some((b, _)) = self.register_block()
            && uses(b)
        {
            return Err(format!("packs input {input}, whose load depends on the register-blocked i{b}"));
        }
        if let Some(a) = (0..self.parallel_axes()).find(|&a| k.out_shape[a] > 1 && uses(a)) {
            return Err(format!("packs input {input}, whose load depends on the parallel axis i{a}"));
        }
        let bytes = self.pack_bytes(k);
        if bytes > PACK_LIMIT_BYTES {
            return Err(format!("packs {bytes} bytes, more than {PACK_LIMIT_BYTES}"));
        }
        Ok(())
    }
}

impl fmt::Display for ScheduleStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleStep::Reorder { order } => {
                write!(f, "reorder(")?;
                for (i, a) in order.iter().enumerate() {
                    write!(f, "{}i{a}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, ")")
            }
            ScheduleStep::ReduceOrder { order } => {
                write!(f, "reduce_order(")?;
                for (i, a) in order.iter().enumerate() {
                    write!(f, "{}r{a}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, ")")
            }
            ScheduleStep::Parallel { axes } => write!(f, "parallel({axes})"),
            ScheduleStep::Vectorize { axis, lanes } => write!(f, "vectorize(i{axis}, {lanes})"),
            ScheduleStep::RegisterBlock { axis, factor } => write!(f, "register_block(i{axis}, {factor})"),
            ScheduleStep::Unroll { axis, factor } => write!(f, "unroll(i{axis}, {factor})"),
            ScheduleStep::Tile { axis, size } => write!(f, "tile(i{axis}, {size})"),
            ScheduleStep::Pack { input } => write!(f, "pack({input})"),
            ScheduleStep::GpuThreads { block } => write!(f, "gpu_threads({block})"),
            ScheduleStep::Winograd => write!(f, "winograd"),
        }
    }
}

/// `parallel(1); vectorize(i1, 4); register_block(i0, 4); unroll(i1, 3)`, or `naive`.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            return write!(f, "naive");
        }
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// The loads of input `buf` in `e` (index and guards), and `None` for each gather of it.
fn reads_of<'e>(e: &'e Expr, buf: usize, out: &mut Vec<Option<(&'e crate::kernel::Affine, &'e [KGuard])>>) {
    match e {
        Expr::Load { buf: b, index, guards, .. } => {
            if *b == buf {
                out.push(Some((index, guards)));
            }
        }
        Expr::Gather { buf: b, pos, .. } => {
            if *b == buf {
                out.push(None);
            }
            reads_of(pos, buf, out);
        }
        Expr::Const { .. } | Expr::Axis(_) | Expr::Acc => {}
        Expr::Unary(_, x) | Expr::Cast(_, x) => reads_of(x, buf, out),
        Expr::Binary(_, a, b) => {
            reads_of(a, buf, out);
            reads_of(b, buf, out);
        }
        Expr::Select(c, a, b) => {
            reads_of(c, buf, out);
            reads_of(a, buf, out);
            reads_of(b, buf, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atom::BinaryFn;
    use crate::kernel::{Affine, Buffer};

    fn matmul(m: usize, kk: usize, n: usize) -> Kernel {
        let load = |buf: usize, coefs: Vec<i64>| Expr::Load { buf, index: Affine { offset: 0, coefs }, guards: vec![], pad: 0.0 };
        let buf = |name: &str, numel: usize| Buffer { name: name.into(), dtype: DType::F32, numel };
        Kernel {
            name: "mm".into(),
            inputs: vec![buf("a", m * kk), buf("b", kk * n)],
            output: buf("c", m * n),
            out_shape: vec![m, n],
            red_shape: vec![kk],
            store: Affine { offset: 0, coefs: vec![n as i64, 1] },
            body: Body::Compute {
                reduce: Some(ReduceFn::Sum),
                body: Expr::Binary(BinaryFn::Mul, Box::new(load(0, vec![kk as i64, 0, 1])), Box::new(load(1, vec![0, 1, n as i64]))),
                epilogue: Expr::Acc,
            },
        }
    }

    fn gemm_schedule() -> Schedule {
        Schedule {
            steps: vec![
                ScheduleStep::Parallel { axes: 1 },
                ScheduleStep::Vectorize { axis: 1, lanes: 4 },
                ScheduleStep::RegisterBlock { axis: 0, factor: 4 },
                ScheduleStep::Unroll { axis: 1, factor: 3 },
            ],
        }
    }

    #[test]
    fn a_gemm_schedule_is_valid_and_prints() -> Result<()> {
        let k = matmul(10, 7, 9);
        let mut s = gemm_schedule();
        s.validate(&k)?;
        s.steps.push(ScheduleStep::Tile { axis: 1, size: 24 });
        s.steps.push(ScheduleStep::Pack { input: 1 });
        s.validate(&k)?;
        assert_eq!(s.tile(), Some((1, 24)));
        assert_eq!(s.pack_bytes(&k), 7 * 24 * 4);
        assert!(s.to_string().ends_with("unroll(i1, 3); tile(i1, 24); pack(1)"));
        s.steps.truncate(4);
        assert_eq!(s.to_string(), "parallel(1); vectorize(i1, 4); register_block(i0, 4); unroll(i1, 3)");
        assert_eq!(s.parallel_extent(&k), 3);
        let t = Schedule { steps: vec![ScheduleStep::Reorder { order: vec![1, 0] }, ScheduleStep::Parallel { axes: 1 }] };
        assert_eq!(t.parallel_extent(&k), 9);
        assert_eq!(t.to_string(), "reorder(i1, i0); parallel(1)");
        assert_eq!(Schedule::naive().to_string(), "naive");
        assert_eq!(Schedule::naive().parallel_extent(&k), 1);
        Schedule::naive().validate(&k)?;
        Ok(())
    }

    #[test]
    fn illegal_steps_are_errors() {
        let k = matmul(10, 7, 9);
        let msg = |steps: Vec<ScheduleStep>| Schedule { steps }.validate(&k).err().map(|e| e.to_string()).unwrap_or_default();
        use ScheduleStep::*;
        assert!(msg(vec![Parallel { axes: 3 }]).contains("2 output axes"));
        assert!(msg(vec![Vectorize { axis: 2, lanes: 4 }]).contains("not an output axis"));
        assert!(msg(vec![Vectorize { axis: 1, lanes: 3 }]).contains("power of two"));
        assert_eq!(msg(vec![Vectorize { axis: 0, lanes: 4 }]), "", "a strided vector axis is stored lane by lane");
        assert_eq!(msg(vec![Reorder { order: vec![1, 0] }, Parallel { axes: 1 }, Vectorize { axis: 1, lanes: 4 }]), "");
        assert!(msg(vec![Reorder { order: vec![1, 1] }]).contains("not an order of its 2 output axes"));
        assert!(msg(vec![Reorder { order: vec![0] }]).contains("not an order"));
        assert_eq!(msg(vec![ReduceOrder { order: vec![0] }]), "");
        assert!(msg(vec![ReduceOrder { order: vec![1] }]).contains("not an order of its 1 reduction axes"));
        assert!(msg(vec![ReduceOrder { order: vec![0] }, ReduceOrder { order: vec![0] }]).contains("second step of its kind"));
        assert_eq!(Schedule { steps: vec![ReduceOrder { order: vec![2, 0, 1] }] }.to_string(), "reduce_order(r2, r0, r1)");
        assert!(msg(vec![Reorder { order: vec![1, 0] }, Vectorize { axis: 1, lanes: 4 }, Tile { axis: 1, size: 4 }, Pack { input: 1 }])
            .contains("does not vary along i1"), "the packed load is checked on the reordered kernel");
        assert!(msg(vec![RegisterBlock { axis: 0, factor: 0 }]).contains("factor of 0"));
        assert!(msg(vec![Unroll { axis: 1, factor: 2 }]).contains("not the vectorized axis"));
        assert!(msg(vec![Vectorize { axis: 1, lanes: 4 }, RegisterBlock { axis: 1, factor: 2 }]).contains("is the vectorized axis"));
        assert!(msg(vec![Parallel { axes: 2 }, Vectorize { axis: 1, lanes: 4 }]).contains("parallel axis"));
        assert!(msg(vec![Parallel { axes: 1 }, Parallel { axes: 1 }]).contains("second step"));
        let tiled = |extra: Vec<ScheduleStep>| {
            let mut v = vec![Parallel { axes: 1 }, Vectorize { axis: 1, lanes: 4 }, RegisterBlock { axis: 0, factor: 4 }, Unroll { axis: 1, factor: 2 }];
            v.extend(extra);
            msg(v)
        };
        assert_eq!(tiled(vec![Tile { axis: 1, size: 16 }, Pack { input: 1 }]), "");
        assert!(tiled(vec![Tile { axis: 0, size: 16 }]).contains("not the vectorized axis"));
        assert!(tiled(vec![Tile { axis: 1, size: 12 }]).contains("multiple of the 8 columns"));
        assert!(tiled(vec![Pack { input: 1 }]).contains("without a tile"));
        assert!(tiled(vec![Tile { axis: 1, size: 8 }, Pack { input: 0 }]).contains("does not vary along i1"));
        assert!(tiled(vec![Tile { axis: 1, size: 8 }, Pack { input: 2 }]).contains("2 inputs"));
        let deep = matmul(4, 9000, 16);
        let e = Schedule { steps: vec![Vectorize { axis: 1, lanes: 4 }, Tile { axis: 1, size: 16 }, Pack { input: 1 }] }.validate(&deep);
        assert!(e.is_err_and(|e| e.to_string().contains("more than 262144")));
        assert_eq!(msg(vec![GpuThreads { block: 256 }]), "");
        assert!(msg(vec![GpuThreads { block: 0 }]).contains("1 to 1024 threads"));
        assert!(msg(vec![GpuThreads { block: 2048 }]).contains("1 to 1024 threads"));
        assert!(msg(vec![GpuThreads { block: 64 }, Parallel { axes: 1 }]).contains("stands alone"));
        assert_eq!(Schedule { steps: vec![GpuThreads { block: 128 }] }.to_string(), "gpu_threads(128)");
        assert!(msg(vec![Winograd]).contains("winograd: reduction axes [7], not [C, 3, 3]"));
        assert_eq!(Schedule { steps: vec![Winograd] }.to_string(), "winograd");
        assert!(msg(vec![Parallel { axes: 3 }]).starts_with("invalid model: kernel 'mm': schedule 'parallel(3)'"));
    }
}
