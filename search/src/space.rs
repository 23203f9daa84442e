//! The schedule space: for each kernel class a template that enumerates the legal candidate
//! schedules of a kernel, and mutation, which maps a schedule to a legal neighbour (for
//! evolutionary search). Every candidate passes `Schedule::validate`.
//!
//! A candidate is a [`Point`]: one value per knob of the template. The knobs are
//! - `parallel`: how many leading output axes form the parallel range (never the vectorized
//!   axis or the innermost one);
//! - `vectorize`: whether the innermost output axis runs on f32 vectors (f32 kernels whose
//!   output is contiguous along it);
//! - `block`: the register-blocked axis and rows of a contraction's micro-tile (axes along
//!   which a load is shared by the rows), or of a reduction's (independent accumulator
//!   chains);
//! - `unroll`: vectors per row of the micro-tile;
//! - `pack`: cache blocks of the vector axis with the operand the rows share packed;
//! - `reorder`: a contraction whose output is strided along a long axis that its weights
//!   vary along (a conv's output channels) may instead move that axis innermost and
//!   vectorize it ([`ScheduleStep::Reorder`]): the pixels become the rows of the
//!   micro-tile, the input pixel is a broadcast, the weights are packed once (reordered
//!   points always pack), and each
//!   vector of channels is stored lane by lane. The other knobs then apply to the
//!   reordered kernel (its own space, [`Space::reordered`]).
//!
//! Classes ([`KernelClass`]): a contraction (Sum of products) has every knob; a reduction
//! has `parallel`, `vectorize`, `block` and a small `unroll`, an elementwise kernel the same
//! but `block`; a gather
//! has `parallel`; a scatter or a scalar kernel has the naive schedule only. New steps
//! (cache tiles, packing) are new knobs of [`Point`] and new loops in
//! [`Space::points`], each with its range in [`Space::of`].

use crate::{collect_loads, plain_f32, varies_along};
use ir::atom::{BinaryFn, ReduceFn};
use ir::dtype::DType;
use ir::kernel::{Body, Expr, Kernel};
use ir::schedule::{Schedule, ScheduleStep};
use targets::Target;

/// Most rows of a register micro-tile.
pub const MAX_ROWS: usize = 8;
/// Most vectors per row of a contraction's micro-tile.
pub const MAX_COLS: usize = 4;
/// Most vectors per row for kernels without a reduction shared by the rows.
const MAX_COLS_OTHER: usize = 2;
/// Vector registers a micro-tile may use (x86-64: 16 xmm registers): accumulators, one
/// row's vector operands and a broadcast.
pub const VECTOR_REGISTERS: usize = 16;

/// What a kernel computes, as far as its schedule is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelClass {
    /// A Sum over reduction axes of a product (matmul, convolution).
    Contraction,
    /// Any other reduction (max, mean, softmax's sums, a Sum of a non-product).
    Reduction,
    /// No reduction, no gather.
    Elementwise,
    /// Reads with a data-dependent index.
    Gather,
    /// A scatter or a scalar kernel: its points run in order, as written.
    Fixed,
}

impl KernelClass {
    pub fn name(self) -> &'static str {
        match self {
            KernelClass::Contraction => "contraction",
            KernelClass::Reduction => "reduction",
            KernelClass::Elementwise => "elementwise",
            KernelClass::Gather => "gather",
            KernelClass::Fixed => "fixed",
        }
    }
}

/// Whether every value of `k` is f32 (so that codegen can run it on f32 vectors).
pub fn is_plain_f32(k: &Kernel) -> bool {
    let Body::Compute { reduce, body, epilogue } = &k.body else {
        return false;
    };
    k.output.dtype == DType::F32
        && k.inputs.iter().all(|b| b.dtype == DType::F32)
        && !matches!(reduce, Some(ReduceFn::ArgMax | ReduceFn::ArgMin))
        && plain_f32(body)
        && plain_f32(epilogue)
}

/// The class of `k`.
pub fn classify(k: &Kernel) -> KernelClass {
    let Body::Compute { reduce, body, epilogue } = &k.body else {
        return KernelClass::Fixed;
    };
    if k.out_shape.is_empty() {
        return KernelClass::Fixed;
    }
    if has_gather(body) || has_gather(epilogue) {
        return KernelClass::Gather;
    }
    match reduce {
        Some(ReduceFn::Sum) if matches!(body, Expr::Binary(BinaryFn::Mul, ..)) && is_plain_f32(k) => KernelClass::Contraction,
        Some(_) => KernelClass::Reduction,
        None => KernelClass::Elementwise,
    }
}

fn has_gather(e: &Expr) -> bool {
    match e {
        Expr::Gather { .. } => true,
        Expr::Load { .. } | Expr::Const { .. } | Expr::Axis(_) | Expr::Acc => false,
        Expr::Unary(_, x) | Expr::Cast(_, x) => has_gather(x),
        Expr::Binary(_, a, b) => has_gather(a) || has_gather(b),
        Expr::Select(c, a, b) => has_gather(c) || has_gather(a) || has_gather(b),
    }
}

/// One candidate: a value per knob of the template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Point {
    pub parallel: usize,
    pub vectorize: bool,
    /// Register-blocked axis and rows.
    pub block: Option<(usize, usize)>,
    /// Vectors per row (1: no unroll).
    pub unroll: usize,
    /// Cache blocks of the vector axis with the operand the rows share packed (`Tile` +
    /// `Pack`, sized as `default_schedule` sizes them).
    pub pack: bool,
    /// The other knobs apply to the kernel with its output axes reordered
    /// ([`Space::reordered`]).
    pub reorder: bool,
    /// The reduction runs in [`Space`]'s reduction order (its longest axis innermost).
    pub red_order: bool,
    /// Winograd F(2x2, 3x3) ([`ScheduleStep::Winograd`]); the other knobs are unused.
    pub winograd: bool,
}

impl Point {
    /// One point at a time, scalar, whole: every knob off.
    const NAIVE: Point = Point { parallel: 0, vectorize: false, block: None, unroll: 1, pack: false, reorder: false, red_order: false, winograd: false };
    /// Winograd F(2x2, 3x3), the other knobs off.
    const WINOGRAD: Point = Point { winograd: true, ..Point::NAIVE };
}

/// The candidate space of one kernel on one target.
#[derive(Clone, Debug)]
pub struct Space {
    pub class: KernelClass,
    out_shape: Vec<usize>,
    lanes: usize,
    /// The axis `vectorize` refers to, when the kernel can run on vectors.
    vec_axis: Option<usize>,
    /// Axes a contraction or reduction may register-block.
    block_axes: Vec<usize>,
    /// The most leading axes `parallel` may take.
    max_parallel: usize,
    /// Vector registers a micro-tile may use.
    registers: usize,
    /// Whether the backend masks the partial vector ([`crate::masks_tails`]).
    masked: bool,
    /// The kernel and target, for contractions that may pack an operand (`Point::pack`).
    packable: Option<Box<(Kernel, Target)>>,
    /// The order of the output axes that `Point::reorder` applies and the space of the
    /// reordered kernel.
    reordered: Option<Box<(Vec<usize>, Space)>>,
    /// The order of the reduction axes that `Point::red_order` applies: a contraction's
    /// longest reduction axis moved innermost (a conv's input channels: one long loop
    /// instead of a window row of 3 steps, measured 1.2x faster on Cranelift).
    red_order: Option<Vec<usize>>,
    /// Whether the kernel is a convolution a Winograd schedule runs on this target
    /// ([`crate::runs_winograd`]).
    winograd: bool,
}

impl Space {
    /// The template of `k`'s class, instantiated for `k` and `t` (`t.vector_bits` gives the
    /// f32 lanes).
    pub fn of(k: &Kernel, t: &Target) -> Space {
        let mut space = Space::plain(k, t, false);
        if let Some(order) = channel_order(k, t) {
            let alt = Space::plain(&k.reorder_out_axes(&order), t, true);
            if alt.vec_axis.is_some() {
                space.reordered = Some(Box::new((order, alt)));
            }
        }
        space
    }

    /// The order of the output axes and the space that `Point::reorder` selects.
    pub fn reordered(&self) -> Option<(&[usize], &Space)> {
        self.reordered.as_ref().map(|b| (b.0.as_slice(), &b.1))
    }

    /// The template of `k` in its own axis order; with `strided`, the vector axis may be one
    /// the output is not contiguous along.
    fn plain(k: &Kernel, t: &Target, strided: bool) -> Space {
        let class = classify(k);
        let r = k.out_shape.len();
        let lanes = k.out_shape.last().map_or(1, |&n| crate::vector_lanes(t, n));
        let masked = crate::masks_tails(t);
        // Cranelift allocates 16 vector registers; LLVM every one the target has.
        let registers = if masked && t.vector_registers > 0 { t.vector_registers as usize } else { VECTOR_REGISTERS };
        let mut space = Space {
            class,
            out_shape: k.out_shape.clone(),
            lanes,
            vec_axis: None,
            block_axes: Vec::new(),
            max_parallel: 0,
            registers,
            masked,
            packable: None,
            reordered: None,
            red_order: None,
            winograd: crate::runs_winograd(t) && ir::winograd::WinogradConv::of(k).is_ok(),
        };
        if class == KernelClass::Fixed {
            return space;
        }
        let last = r - 1;
        space.vec_axis = (lanes > 1
            && class != KernelClass::Gather
            && is_plain_f32(k)
            && k.store.coefs.get(last).is_some_and(|&c| c == 1 || (strided && c != 0))
            && crate::vectorizes(t, k.out_shape[last], lanes))
            .then_some(last);
        space.max_parallel = space.vec_axis.unwrap_or(last).min(last);
        if class == KernelClass::Contraction
            && let Body::Compute { body, .. } = &k.body
        {
            let mut loads = Vec::new();
            collect_loads(body, &mut loads);
            space.block_axes = (0..r)
                .filter(|&a| Some(a) != space.vec_axis && k.out_shape[a] >= 2)
                .filter(|&a| loads.iter().any(|(c, g)| !varies_along(c, g, a)))
                .collect();
            if space.vec_axis.is_some() && !space.block_axes.is_empty() {
                space.packable = Some(Box::new((k.clone(), t.clone())));
            }
            let n = k.red_shape.len();
            if let Some(longest) = (0..n).rev().max_by_key(|&a| k.red_shape[a])
                && n >= 2
                && longest != n - 1
                && k.red_shape[longest] > k.red_shape[n - 1]
            {
                space.red_order = Some((0..n).filter(|&a| a != longest).chain([longest]).collect());
            }
        } else if class == KernelClass::Reduction {
            // Rows of a reduction share no load, but each row is an accumulator chain of its
            // own: several hide the combine's latency (a max pool over a 10-wide map is one
            // masked vector per row, otherwise one chain: LLVM, 5x5 pool 128x10x10, 36 us
            // unblocked, 15 us with 5 rows). The two innermost axes beside the vector's.
            let mut axes: Vec<usize> = (0..r).filter(|&a| Some(a) != space.vec_axis && k.out_shape[a] >= 2).collect();
            space.block_axes = axes.split_off(axes.len().saturating_sub(2));
        }
        space
    }

    /// Every candidate point, in a fixed order: each point of the kernel's own reduction
    /// order, then (where the space has one) each in [`Space`]'s reduction order.
    pub fn points(&self) -> Vec<Point> {
        let base = self.base_points();
        if self.red_order.is_none() {
            return base;
        }
        let ordered: Vec<Point> = base.iter().filter(|p| !p.winograd).map(|p| Point { red_order: true, ..*p }).collect();
        base.into_iter().chain(ordered).collect()
    }

    /// The points in the kernel's own reduction order.
    fn base_points(&self) -> Vec<Point> {
        let mut out = Vec::new();
        if self.class == KernelClass::Fixed {
            out.push(Point::NAIVE);
            return out;
        }
        let mut blocks = vec![None];
        for &a in &self.block_axes {
            for rows in 2..=MAX_ROWS.min(self.out_shape[a]) {
                blocks.push(Some((a, rows)));
            }
        }
        for parallel in 0..=self.max_parallel {
            for vectorize in [false, true] {
                if vectorize && self.vec_axis.is_none() {
                    continue;
                }
                for &block in &blocks {
                    for unroll in 1..=self.max_unroll(vectorize) {
                        let rows = block.map_or(1, |b| b.1);
                        if vectorize && rows * unroll + unroll + 1 > self.registers {
                            continue;
                        }
                        let plain = Point { parallel, vectorize, block, unroll, pack: false, reorder: false, red_order: false, winograd: false };
                        let packed = Point { pack: true, ..plain };
                        out.push(plain);
                        if vectorize && block.is_some() && self.packs(&packed) {
                            out.push(packed);
                        }
                    }
                }
            }
        }
        if let Some((_, alt)) = self.reordered() {
            // Only packed points: the reorder is for the vector axis, along which the
            // weights are strided (unpacked, every vector of them is a gather).
            // Rows along the axis next to the channels (the pixels of an image row, which
            // the kernel's own order had innermost): measured faster than rows along the
            // image's height (LLVM, 3x3 conv 32->32 over 8x8: 101 against 70 GFLOP/s).
            let row_axis = alt.out_shape.len().checked_sub(2);
            out.extend(
                alt.base_points()
                    .into_iter()
                    .filter(|p| p.vectorize && p.pack && p.block.map(|b| b.0) == row_axis)
                    .map(|p| Point { reorder: true, ..p }),
            );
        }
        if self.winograd {
            out.push(Point::WINOGRAD);
        }
        out
    }

    fn max_unroll(&self, vectorize: bool) -> usize {
        let Some(v) = self.vec_axis.filter(|_| vectorize) else {
            return 1;
        };
        let most = if self.class == KernelClass::Contraction { MAX_COLS } else { MAX_COLS_OTHER };
        let n = self.out_shape[v];
        let vectors = if self.masked { n.div_ceil(self.lanes) } else { n / self.lanes };
        vectors.clamp(1, most)
    }

    /// Every candidate schedule (see [`Space::points`]).
    pub fn candidates(&self) -> Vec<Schedule> {
        self.points().iter().map(|p| self.schedule(p)).collect()
    }

    /// Whether the packed point `p` gives a legal schedule.
    fn packs(&self, p: &Point) -> bool {
        let Some(kt) = &self.packable else { return false };
        let s = self.schedule(p);
        s.pack().is_some() && s.validate(&kt.0).is_ok()
    }

    /// The schedule of a point.
    pub fn schedule(&self, p: &Point) -> Schedule {
        if p.winograd {
            return Schedule { steps: vec![ScheduleStep::Winograd] };
        }
        if p.reorder
            && let Some((order, alt)) = self.reordered()
        {
            let mut s = alt.schedule(&Point { reorder: false, ..*p });
            s.steps.insert(0, ScheduleStep::Reorder { order: order.to_vec() });
            return s;
        }
        let mut steps = Vec::new();
        if p.red_order
            && let Some(order) = &self.red_order
        {
            steps.push(ScheduleStep::ReduceOrder { order: order.clone() });
        }
        if p.parallel > 0 {
            steps.push(ScheduleStep::Parallel { axes: p.parallel });
        }
        let vec_axis = self.vec_axis.filter(|_| p.vectorize);
        if let Some(axis) = vec_axis {
            steps.push(ScheduleStep::Vectorize { axis, lanes: self.lanes });
        }
        if let Some((axis, factor)) = p.block {
            steps.push(ScheduleStep::RegisterBlock { axis, factor });
        }
        if let Some(axis) = vec_axis
            && p.unroll > 1
        {
            steps.push(ScheduleStep::Unroll { axis, factor: p.unroll });
        }
        let plain = Schedule { steps };
        match (&self.packable, vec_axis) {
            (Some(kt), Some(v)) if p.pack && p.block.is_some() => match &kt.0.body {
                Body::Compute { body, .. } => crate::packed_schedule(&kt.0, &kt.1, &plain, v, body).unwrap_or(plain),
                Body::Scatter { .. } => plain,
            },
            _ => plain,
        }
    }

    /// The point of a schedule of this space (`None` when the schedule is not one).
    pub fn point_of(&self, s: &Schedule) -> Option<Point> {
        let p = Point {
            parallel: s.parallel_axes(),
            vectorize: s.vectorize().is_some(),
            block: s.register_block(),
            unroll: s.unroll().map_or(1, |u| u.1),
            pack: s.pack().is_some(),
            reorder: s.reorder().is_some(),
            red_order: s.reduce_order().is_some(),
            winograd: s.winograd(),
        };
        (self.schedule(&p) == *s && self.points().contains(&p)).then_some(p)
    }

    /// The points that differ from `p` in exactly one knob.
    pub fn neighbours(&self, p: &Point) -> Vec<Point> {
        self.points()
            .into_iter()
            .filter(|q| {
                let differ = [
                    q.parallel != p.parallel,
                    q.vectorize != p.vectorize,
                    q.block != p.block,
                    q.unroll != p.unroll,
                    q.pack != p.pack,
                    q.reorder != p.reorder,
                    q.red_order != p.red_order,
                    q.winograd != p.winograd,
                ];
                differ.iter().filter(|&&d| d).count() == 1
            })
            .collect()
    }

    /// A legal neighbour of `s` chosen by `pick` (any number: a random one for evolutionary
    /// search): one knob changed. A schedule outside the space maps to a candidate; a space
    /// of one point maps everything to it.
    pub fn mutate(&self, s: &Schedule, pick: u64) -> Schedule {
        let options = match self.point_of(s) {
            Some(p) => self.neighbours(&p),
            None => self.points(),
        };
        match options.get((pick % options.len().max(1) as u64) as usize) {
            Some(q) => self.schedule(q),
            None => self.candidates().into_iter().next().unwrap_or_default(),
        }
    }
}

/// The output order that makes a contraction's channel axis innermost: the longest
/// output axis but the last along which the output is strided, at least a vector long,
/// that some load of the body varies along (the weights) and some other does not (the
/// input pixel, broadcast across the channels) while varying along the last axis. The
/// other axes keep their order. `None` when no axis qualifies.
fn channel_order(k: &Kernel, t: &Target) -> Option<Vec<usize>> {
    let Body::Compute { body, .. } = &k.body else { return None };
    let r = k.out_shape.len();
    if classify(k) != KernelClass::Contraction || r < 2 {
        return None;
    }
    let mut loads = Vec::new();
    collect_loads(body, &mut loads);
    let last = r - 1;
    let c = (0..last)
        .filter(|&a| k.store.coefs.get(a).is_some_and(|&c| c != 0))
        .filter(|&a| crate::vectorizes(t, k.out_shape[a], crate::vector_lanes(t, k.out_shape[a])))
        .filter(|&a| loads.iter().any(|(c, g)| varies_along(c, g, a)))
        .filter(|&a| loads.iter().any(|(c, g)| !varies_along(c, g, a) && varies_along(c, g, last)))
        .max_by_key(|&a| (k.out_shape[a], std::cmp::Reverse(a)))?;
    Some((0..r).filter(|&a| a != c).chain([c]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kernels::*;
    use proptest::prelude::*;

    fn target(cores: usize) -> Target {
        Target { cores, ..Target::host().with_vector_bits(128) }
    }

    fn kernels(a: usize, b: usize, c: usize) -> Vec<Kernel> {
        let winograd = padded_conv3x3(4 * (1 + a % 3), b, 2 * (1 + c % 4), 8 * (1 + b % 2));
        vec![gemm(a, b, c), conv3x3(a, b, c), depthwise(a, b, c), softmax_sum(a, b), elementwise(a, c), integer(a, b), winograd]
    }

    #[test]
    fn classes_and_gemm_space() -> ir::Result<()> {
        assert_eq!(classify(&gemm(8, 8, 8)), KernelClass::Contraction);
        assert_eq!(classify(&softmax_sum(8, 8)), KernelClass::Reduction);
        assert_eq!(classify(&elementwise(8, 8)), KernelClass::Elementwise);
        assert_eq!(classify(&integer(8, 8)), KernelClass::Elementwise);
        let k = gemm(64, 32, 48);
        let space = Space::of(&k, &target(2));
        let all = space.candidates();
        assert!(all.len() > 50, "{} candidates", all.len());
        // The heuristic's schedule is one of them.
        let default = crate::default_schedule(&k, &target(2));
        assert!(all.contains(&default), "{default}");
        // An integer kernel is never vectorized.
        assert!(Space::of(&integer(8, 8), &target(2)).candidates().iter().all(|s| s.vectorize().is_none()));
        Ok(())
    }

    #[test]
    fn a_reduction_may_block_rows_an_elementwise_kernel_may_not() {
        // Rows of a reduction are independent accumulator chains; an elementwise kernel has
        // no chain to hide.
        let blocked = |k: &Kernel| Space::of(k, &target(1)).candidates().iter().filter(|s| s.register_block().is_some()).count();
        assert!(blocked(&softmax_sum(64, 128)) > 0);
        assert_eq!(blocked(&elementwise(64, 128)), 0);
        for s in Space::of(&softmax_sum(64, 128), &target(1)).candidates() {
            assert!(s.register_block().is_none_or(|(a, f)| a == 0 && (2..=MAX_ROWS).contains(&f)), "{s}");
        }
    }

    #[test]
    fn a_conv_may_vectorize_its_channels() {
        // (n, c, h, w) -> (n, h, w, c): the weights vary along c, the input pixel does not.
        let k = conv3x3(16, 8, 12);
        let space = Space::of(&k, &target(2));
        assert_eq!(space.reordered().map(|(o, _)| o.to_vec()), Some(vec![0, 2, 3, 1]));
        let channels: Vec<Schedule> = space.candidates().into_iter().filter(|s| s.reorder().is_some()).collect();
        assert!(channels.iter().any(|s| s.vectorize() == Some((3, 4)) && s.pack() == Some(1)), "{channels:?}");
        for s in &channels {
            assert_eq!(space.point_of(s).map(|p| p.reorder), Some(true), "{s}");
        }
        // A depthwise conv's input varies along its channels too: nothing to broadcast.
        assert!(Space::of(&depthwise(16, 8, 12), &target(2)).reordered().is_none());
    }

    #[test]
    fn winograd_is_a_candidate_of_a_padded_3x3_conv_on_cranelift_x86() {
        let is_winograd = |s: &Schedule| s.winograd();
        let k = padded_conv3x3(16, 16, 16, 16);
        let space = Space::of(&k, &target(1));
        let picks: Vec<Schedule> = space.candidates().into_iter().filter(is_winograd).collect();
        assert_eq!(picks.len(), 1, "one Winograd point, not one per reduction order");
        assert_eq!(space.point_of(&picks[0]).map(|p| p.winograd), Some(true));
        assert!(space.neighbours(&space.point_of(&picks[0]).unwrap_or(space.points()[0])).iter().all(|q| !q.winograd));
        // Not where the kernel reads its padding through guards, nor for LLVM's wide vectors.
        assert!(!Space::of(&conv3x3(16, 16, 16), &target(1)).candidates().iter().any(is_winograd));
        let wide = Target { cores: 1, ..Target::host().with_vector_bits(512) };
        assert!(!Space::of(&k, &wide).candidates().iter().any(is_winograd));
    }

    #[test]
    fn neighbours_change_one_knob() {
        let k = conv3x3(16, 8, 12);
        let space = Space::of(&k, &target(4));
        let p = space.points()[7];
        let ns = space.neighbours(&p);
        assert!(!ns.is_empty());
        assert!(ns.iter().all(|q| q != &p));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn candidates_validate_and_mutations_stay_legal(a in 1usize..24, b in 1usize..24, c in 1usize..40, cores in 1usize..9, pick in any::<u64>()) {
            for k in kernels(a, b, c) {
                let space = Space::of(&k, &target(cores));
                let all = space.candidates();
                prop_assert!(!all.is_empty());
                for s in &all {
                    prop_assert!(s.validate(&k).is_ok(), "{} on {}: {:?}", s, k.name, s.validate(&k));
                    prop_assert!(space.point_of(s).is_some(), "{} not a point of its space", s);
                }
                let parent = &all[(pick % all.len() as u64) as usize];
                let child = space.mutate(parent, pick.rotate_left(17));
                prop_assert!(child.validate(&k).is_ok());
                prop_assert!(space.point_of(&child).is_some());
                if all.len() > 1 {
                    prop_assert!(&child != parent, "mutation of {} gave itself", parent);
                }
            }
        }
    }
}
