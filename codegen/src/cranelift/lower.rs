//! Lowering expressions to Cranelift IR: loads (guarded, gathered, on f32x4 lanes with a
//! per-lane fallback at the borders), the elementwise functions, casts and the reduction
//! combine. The loop nest that a schedule shapes is in [`super::nest`]. Loads whose index
//! range over the iteration box is inside the buffer are unchecked; the others (padded
//! windows, gathers) are checked at run time.

use super::{RuntimeError, libcalls, vmath};
use crate::Error;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, Block, Endianness, FuncRef, InstBuilder, InstructionData, MemFlagsData, Opcode, Type, Value, types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module};
use ir::atom::{BinaryFn, ReduceFn, UnaryFn};
use ir::dtype::DType;
use ir::kernel::{Affine, Expr, KGuard, Kernel};
use ir::schedule::Schedule;
use std::collections::HashMap;

pub(super) type Result<T> = std::result::Result<T, Error>;

/// What [`define`] built: the function, and whether it has a vector loop and uses FMA.
pub(crate) struct Defined {
    pub id: FuncId,
    pub vectorized: bool,
    pub fma: bool,
}

/// Whether the module's ISA has a fused multiply-add instruction for f32 and f32x4 (on x64
/// Cranelift needs both `has_avx` and `has_fma`, else every lane calls `fmaf`).
fn isa_has_fma<M: Module>(module: &M) -> bool {
    let isa = module.isa();
    match isa.name() {
        "aarch64" => true,
        "x64" => {
            let flag = |name: &str| {
                isa.isa_flags()
                    .iter()
                    .any(|v| v.name == name && v.as_bool() == Some(true))
            };
            flag("has_avx") && flag("has_fma")
        }
        _ => false,
    }
}

/// Declares and defines the kernel function in `module`, its loop nest shaped by `schedule`
/// (checked first); `name` gives it that exported symbol, else it is anonymous.
pub(crate) fn define<M: Module>(
    module: &mut M,
    k: &Kernel,
    schedule: &Schedule,
    name: Option<&str>,
) -> Result<Defined> {
    let internal = |msg: String| Error::Internal {
        kernel: k.name.clone(),
        msg,
    };
    let invalid = |e: ir::Error| Error::InvalidKernel {
        kernel: k.name.clone(),
        msg: e.to_string(),
    };
    schedule.validate(k).map_err(invalid)?;
    // The kernel as the schedule's other steps see it (its output axes reordered).
    let shaped = schedule.shaped(k).map_err(invalid)?;
    let k = &*shaped;
    let fma = isa_has_fma(module);
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig.returns.push(AbiParam::new(types::I32));
    let id = match name {
        None => module.declare_anonymous_function(&sig),
        Some(name) => module.declare_function(name, Linkage::Local, &sig),
    }
    .map_err(|e| internal(format!("declaring: {e}")))?;
    let mut helpers = HashMap::new();
    for h in libcalls::all() {
        let mut hs = module.make_signature();
        for _ in 0..h.arity {
            hs.params.push(AbiParam::new(types::F32));
        }
        hs.returns.push(AbiParam::new(types::F32));
        let hid = module
            .declare_function(h.name, Linkage::Import, &hs)
            .map_err(|e| internal(format!("declaring {}: {e}", h.name)))?;
        helpers.insert(h.name, hid);
    }
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fctx = FunctionBuilderContext::new();
    let frontend = module.target_config();
    let (vectorized, used_fma);
    {
        let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut l = Lower {
            k,
            b,
            module: &mut *module,
            helpers: &helpers,
            func_refs: HashMap::new(),
            bases: Vec::new(),
            axes: Vec::new(),
            extents: Vec::new(),
            offsets: Vec::new(),
            live: 0,
            acc: None,
            err_blocks: Vec::new(),
            ptr,
            lanes: 1,
            vec_axis: None,
            vectorized: false,
            fma,
            used_fma: false,
            cache: HashMap::new(),
            cache_on: true,
            packed: None,
            block_columns: None,
            spans: Vec::new(),
        };
        l.kernel(schedule)?;
        vectorized = l.vectorized;
        used_fma = l.used_fma;
        l.b.seal_all_blocks();
        l.b.finalize(frontend);
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| internal(format!("compiling: {e:?}")))?;
    module.clear_context(&mut ctx);
    Ok(Defined {
        id,
        vectorized,
        fma: used_fma,
    })
}

/// A load's cache key: the expression node, the lane count, and the tile offsets of the
/// axes its index or guards depend on.
type LoadKey = (usize, i64, Vec<i64>);

pub(super) struct Lower<'a, 'b, M: Module> {
    pub(super) k: &'a Kernel,
    pub(super) b: FunctionBuilder<'b>,
    module: &'a mut M,
    helpers: &'a HashMap<&'static str, FuncId>,
    func_refs: HashMap<&'static str, FuncRef>,
    /// Base addresses: the inputs, then the output.
    pub(super) bases: Vec<Value>,
    /// The loop counters (i64): output axes, then reduction axes.
    pub(super) axes: Vec<Variable>,
    pub(super) extents: Vec<i64>,
    /// Per axis, a constant added to its counter: the point's place in the micro-tile.
    pub(super) offsets: Vec<i64>,
    /// How many axes (from 0) are live where the expression being lowered is evaluated.
    pub(super) live: usize,
    /// The reduced value, while lowering the epilogue.
    pub(super) acc: Option<(Value, DType)>,
    pub(super) err_blocks: Vec<(RuntimeError, Block)>,
    pub(super) ptr: Type,
    /// 1, or [`LANES`] while lowering the vector loop (then every value is f32x4).
    pub(super) lanes: i64,
    /// The vectorized output axis, when the kernel runs on vectors.
    pub(super) vec_axis: Option<usize>,
    /// Whether a vector loop was emitted.
    pub(super) vectorized: bool,
    /// Whether the ISA has FMA (then a Sum of products accumulates with `fma`).
    pub(super) fma: bool,
    /// Whether an `fma` was emitted.
    pub(super) used_fma: bool,
    /// Loads already emitted for the current straight-line stretch (one reduction step or
    /// one epilogue of a tile): a load shared by several points of the tile is read once.
    pub(super) cache: HashMap<LoadKey, (Value, DType)>,
    pub(super) cache_on: bool,
    /// The packed operand of a `Pack` schedule, while the nest has one.
    pub(super) packed: Option<Packed>,
    /// The columns `[start, end)` of the current cache block of the vector axis.
    pub(super) block_columns: Option<(Value, Value)>,
    /// `(axis, lo, hi)`: while the nest runs a segment of an axis's loop, the axis stays in
    /// `[lo, hi)` there, and guards and bounds are proven over that span.
    pub(super) spans: Vec<(usize, i64, i64)>,
}

/// A load whose values a cache block copies into a scratch first (`Pack`).
pub(super) struct Packed {
    /// The load node (its address): the body's only read of the packed input.
    pub(super) node: usize,
    /// The scratch's address.
    pub(super) scratch: Value,
    /// Row-major strides of the reduction axes (their flat index is the panel row).
    pub(super) red_strides: Vec<i64>,
    /// Columns of a micro-panel: the micro-tile's lanes x unroll.
    pub(super) width: i64,
    /// The current micro-panel's address at reduction point 0 and the tile's first
    /// column, while a micro-tile reads the scratch; `None` while the block is packed.
    pub(super) panel: Option<Value>,
}

/// The f32 lanes of a Cranelift vector (x64 SIMD is 128-bit).
pub(super) const LANES: i64 = 4;

fn clif(d: DType) -> Option<Type> {
    match d {
        DType::F32 => Some(types::F32),
        DType::I64 => Some(types::I64),
        DType::I32 => Some(types::I32),
        DType::Bool => Some(types::I8),
        _ => None,
    }
}

fn is_int(d: DType) -> bool {
    matches!(d, DType::I64 | DType::I32)
}

impl<M: Module> Lower<'_, '_, M> {
    pub(super) fn unsupported(&self, msg: impl Into<String>) -> Error {
        Error::Unsupported {
            kernel: self.k.name.clone(),
            msg: msg.into(),
        }
    }

    pub(super) fn invalid(&self, msg: impl Into<String>) -> Error {
        Error::InvalidKernel {
            kernel: self.k.name.clone(),
            msg: msg.into(),
        }
    }

    pub(super) fn ty(&self, d: DType) -> Result<Type> {
        clif(d).ok_or_else(|| {
            self.unsupported(format!(
                "dtype {d} is not supported by the Cranelift backend yet"
            ))
        })
    }

    /// An integer constant of type `ty` (narrow types take the value's low bits).
    pub(super) fn iconst(&mut self, ty: Type, v: i64) -> Value {
        let bits = ty.bits();
        let v = if bits < 64 {
            v & ((1i64 << bits) - 1)
        } else {
            v
        };
        self.b.ins().iconst(ty, v)
    }

    /// Whether the point computation can run on f32x4 along output axis `axis`: every value
    /// is f32, the functions have vector forms, and the output advances along it (where it
    /// is not contiguous, vectors are stored lane by lane).
    /// Loads may be guarded or strided along it (the border lanes fall back to scalars).
    pub(super) fn vectorizable(
        &self,
        axis: usize,
        reduce: Option<&ReduceFn>,
        body: &Expr,
        epilogue: &Expr,
    ) -> bool {
        if self.k.output.dtype != DType::F32 || self.k.store.coefs.get(axis).is_none_or(|&c| c == 0) {
            return false;
        }
        if !matches!(
            reduce,
            None | Some(ReduceFn::Sum | ReduceFn::Max | ReduceFn::Min)
        ) {
            return false;
        }
        fn ok<M: Module>(l: &Lower<'_, '_, M>, e: &Expr) -> bool {
            match e {
                Expr::Load { buf, .. } => {
                    l.k.inputs
                        .get(*buf)
                        .is_some_and(|b| b.dtype == DType::F32 && b.numel > 0)
                }
                Expr::Const { dtype, .. } => *dtype == DType::F32,
                Expr::Acc => true,
                Expr::Unary(f, x) => {
                    (matches!(
                        f,
                        UnaryFn::Neg
                            | UnaryFn::Abs
                            | UnaryFn::Sqrt
                            | UnaryFn::Recip
                            | UnaryFn::Floor
                            | UnaryFn::Ceil
                    ) || vmath::has(*f))
                        && ok(l, x)
                }
                // A comparison of f32 values as the condition: an f32x4 lane mask.
                Expr::Select(c, a, b) => {
                    matches!(&**c, Expr::Binary(f, x, y) if f.is_comparison() && ok(l, x) && ok(l, y))
                        && ok(l, a)
                        && ok(l, b)
                }
                Expr::Binary(f, a, b) => {
                    matches!(
                        f,
                        BinaryFn::Add
                            | BinaryFn::Sub
                            | BinaryFn::Mul
                            | BinaryFn::Div
                            | BinaryFn::Max
                            | BinaryFn::Min
                    ) && ok(l, a)
                        && ok(l, b)
                }
                _ => false,
            }
        }
        ok(self, body) && ok(self, epilogue)
    }

    /// `cond ? a : b` where `cond` is a comparison result of the current lane count.
    pub(super) fn pick(&mut self, cond: Value, a: Value, b: Value) -> Value {
        if self.lanes == 1 {
            self.b.ins().select(cond, a, b)
        } else {
            let flags = MemFlagsData::new().with_endianness(Endianness::Little);
            let mask = self.b.ins().bitcast(types::F32X4, flags, cond);
            self.b.ins().bitselect(mask, a, b)
        }
    }

    /// Whether `v` is an f32 constant other than NaN (or a splat of one).
    fn is_ordered_constant(&self, v: Value) -> bool {
        let dfg = &self.b.func.dfg;
        let Some(inst) = dfg.value_def(v).inst() else { return false };
        match dfg.insts[inst] {
            InstructionData::UnaryIeee32 { opcode: Opcode::F32const, imm } => !f32::from_bits(imm.bits()).is_nan(),
            InstructionData::Unary { opcode: Opcode::Splat, arg } => self.is_ordered_constant(arg),
            _ => false,
        }
    }

    /// `x` broadcast to the current lane count.
    pub(super) fn splat(&mut self, x: Value) -> Value {
        if self.lanes == 1 {
            x
        } else {
            self.b.ins().splat(types::F32X4, x)
        }
    }

    /// Opens a loop over `axis` from `start`; the body must run at least once (`start <
    /// end`): axis 0 is guarded by the caller's range check.
    pub(super) fn open_loop(&mut self, axis: usize, start: Value) -> Block {
        self.b.def_var(self.axes[axis], start);
        let header = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        header
    }

    pub(super) fn close_loop(&mut self, axis: usize, header: Block, step: i64, end: Value) {
        let i = self.b.use_var(self.axes[axis]);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(self.axes[axis], next);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, end);
        let exit = self.b.create_block();
        self.b.ins().brif(more, header, &[], exit, &[]);
        self.b.seal_block(header);
        self.b.seal_block(exit);
        self.b.switch_to_block(exit);
    }

    /// Opens a loop over `axis` from `start` while it is below `end`, tested at the top, so
    /// the values a trip computes leave only through the back edge: the code after the loop
    /// reads the header's parameters. (With the test at the bottom, the last value of each
    /// accumulator would have two uses, and Cranelift sinks no load into an instruction
    /// whose result is used twice, nor into anything that feeds one.) Returns the header
    /// and the exit block, for [`Self::close_while`].
    pub(super) fn open_while(&mut self, axis: usize, start: Value, end: Value) -> (Block, Block) {
        self.b.def_var(self.axes[axis], start);
        let header = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(self.axes[axis]);
        let done = self.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, i, end);
        let (body, exit) = (self.b.create_block(), self.b.create_block());
        // The exit is the branch's first target. Cranelift's optimizer walks the dominator
        // tree visiting a branch's second target first; the header dominates both the body
        // and the exit, and visiting the exit (outside the loop) first drops the loop from
        // its loop stack for good, so nothing in the body would be hoisted out of this loop
        // or any loop around it.
        self.b.ins().brif(done, exit, &[], body, &[]);
        self.b.seal_block(body);
        self.b.seal_block(exit);
        self.b.switch_to_block(body);
        (header, exit)
    }

    /// Ends a loop opened by [`Self::open_while`]: steps `axis` and continues after it.
    pub(super) fn close_while(&mut self, axis: usize, (header, exit): (Block, Block), step: i64) {
        let i = self.b.use_var(self.axes[axis]);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(self.axes[axis], next);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
    }

    /// Branches to an error return when `bad` is nonzero.
    pub(super) fn check(&mut self, bad: Value, e: RuntimeError) {
        let err = match self.err_blocks.iter().find(|(x, _)| *x == e) {
            Some(&(_, b)) => b,
            None => {
                let b = self.b.create_block();
                self.b.set_cold_block(b);
                self.err_blocks.push((e, b));
                b
            }
        };
        let cont = self.b.create_block();
        self.b.ins().brif(bad, err, &[], cont, &[]);
        self.b.seal_block(cont);
        self.b.switch_to_block(cont);
    }

    /// The identity of reduction `f` over `d` (the scalar; the caller broadcasts it).
    pub(super) fn identity(&mut self, f: ReduceFn, d: DType) -> Result<Value> {
        let ty = self.ty(d)?;
        Ok(match (f, d) {
            (ReduceFn::Sum, DType::F32) => self.b.ins().f32const(0.0),
            (ReduceFn::Prod, DType::F32) => self.b.ins().f32const(1.0),
            (ReduceFn::Max, DType::F32) => self.b.ins().f32const(f32::NEG_INFINITY),
            (ReduceFn::Min, DType::F32) => self.b.ins().f32const(f32::INFINITY),
            (ReduceFn::Sum, DType::I64 | DType::I32) => self.iconst(ty, 0),
            (ReduceFn::Prod, DType::I64 | DType::I32) => self.iconst(ty, 1),
            (ReduceFn::Max, DType::I64) => self.iconst(ty, i64::MIN),
            (ReduceFn::Min, DType::I64) => self.iconst(ty, i64::MAX),
            (ReduceFn::Max, DType::I32) => self.iconst(ty, i32::MIN.into()),
            (ReduceFn::Min, DType::I32) => self.iconst(ty, i32::MAX.into()),
            (ReduceFn::Max, DType::Bool) => self.iconst(ty, 0),
            (ReduceFn::Min, DType::Bool) => self.iconst(ty, 1),
            _ => {
                return Err(self.unsupported(format!(
                    "Reduce {} of {d} is not supported by the Cranelift backend yet",
                    f.name()
                )));
            }
        })
    }

    /// One step of reduction `f`: the accumulator `a` combined with the value `v`.
    pub(super) fn combine(&mut self, f: ReduceFn, d: DType, a: Value, v: Value) -> Result<Value> {
        Ok(match (f, d) {
            (ReduceFn::Sum, DType::F32) => self.b.ins().fadd(a, v),
            (ReduceFn::Prod, DType::F32) => self.b.ins().fmul(a, v),
            (ReduceFn::Sum, _) => self.b.ins().iadd(a, v),
            (ReduceFn::Prod, _) => self.b.ins().imul(a, v),
            // `if v > a || v.is_nan() { v } else { a }`, as the reference: on vectors the
            // comparison and pick are one `maxps`/`minps` (which keeps `a` where either is
            // NaN), then a NaN `v` taken.
            (ReduceFn::Max | ReduceFn::Min, DType::F32) if self.lanes > 1 => {
                let (x, y) = if f == ReduceFn::Max { (a, v) } else { (v, a) };
                let better = self.b.ins().fcmp(FloatCC::LessThan, x, y);
                let m = self.pick(better, v, a);
                let nan = self.b.ins().fcmp(FloatCC::Unordered, v, v);
                self.pick(nan, v, m)
            }
            (ReduceFn::Max | ReduceFn::Min, DType::F32) => {
                let cc = if f == ReduceFn::Max {
                    FloatCC::GreaterThan
                } else {
                    FloatCC::LessThan
                };
                let better = self.b.ins().fcmp(cc, v, a);
                let nan = self.b.ins().fcmp(FloatCC::Unordered, v, v);
                let take = self.b.ins().bor(better, nan);
                self.pick(take, v, a)
            }
            (ReduceFn::Max, DType::Bool) => self.b.ins().bor(a, v),
            (ReduceFn::Min, DType::Bool) => self.b.ins().band(a, v),
            (ReduceFn::Max, _) => self.b.ins().smax(a, v),
            (ReduceFn::Min, _) => self.b.ins().smin(a, v),
            _ => return Err(self.unsupported(format!("Reduce {}", f.name()))),
        })
    }

    /// ArgMax/ArgMin over the one reduction axis: the first index of the extremum, a NaN
    /// winning over every number (the reference's total order). Starting from the identity
    /// (-inf or the minimum for ArgMax) with index 0 gives the same index as starting from
    /// the first element.
    pub(super) fn arg_reduce(&mut self, f: ReduceFn, body: &Expr) -> Result<(Value, DType)> {
        let r = self.k.out_shape.len();
        if self.k.red_shape.len() != 1 {
            return Err(self.invalid(format!(
                "{} over {} reduction axes",
                f.name(),
                self.k.red_shape.len()
            )));
        }
        self.live = self.axes.len();
        let d = self.dtype_of(body)?;
        let ty = self.ty(d)?;
        let max = f == ReduceFn::ArgMax;
        let init = match d {
            DType::F32 => self.b.ins().f32const(if max {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            }),
            DType::I64 => self.iconst(ty, if max { i64::MIN } else { i64::MAX }),
            DType::I32 => self.iconst(
                ty,
                if max {
                    i32::MIN.into()
                } else {
                    i32::MAX.into()
                },
            ),
            _ => {
                return Err(self.unsupported(format!(
                    "Reduce {} of {d} is not supported by the Cranelift backend yet",
                    f.name()
                )));
            }
        };
        let zero = self.b.ins().iconst(types::I64, 0);
        if self.extents[r] == 0 {
            return Ok((zero, DType::I64));
        }
        let (best, idx) = (self.b.declare_var(ty), self.b.declare_var(types::I64));
        self.b.def_var(best, init);
        self.b.def_var(idx, zero);
        let zero = self.b.ins().iconst(types::I64, 0);
        let h = self.open_loop(r, zero);
        let (v, _) = self.expr(body)?;
        let cur = self.b.use_var(best);
        let better = if d == DType::F32 {
            let cc = if max {
                FloatCC::GreaterThan
            } else {
                FloatCC::LessThan
            };
            let ord = self.b.ins().fcmp(cc, v, cur);
            let v_nan = self.b.ins().fcmp(FloatCC::Unordered, v, v);
            let cur_num = self.b.ins().fcmp(FloatCC::Ordered, cur, cur);
            let t = self.b.ins().bor(ord, v_nan);
            self.b.ins().band(t, cur_num)
        } else {
            let cc = if max {
                IntCC::SignedGreaterThan
            } else {
                IntCC::SignedLessThan
            };
            self.b.ins().icmp(cc, v, cur)
        };
        let nb = self.b.ins().select(better, v, cur);
        self.b.def_var(best, nb);
        let i = self.b.use_var(self.axes[r]);
        let ci = self.b.use_var(idx);
        let ni = self.b.ins().select(better, i, ci);
        self.b.def_var(idx, ni);
        let stop = self.b.ins().iconst(types::I64, self.extents[r]);
        self.close_loop(r, h, 1, stop);
        Ok((self.b.use_var(idx), DType::I64))
    }

    /// The dtype of `e` (`ir`'s, as the verifier checked it).
    pub(super) fn dtype_of(&self, e: &Expr) -> Result<DType> {
        e.dtype(self.k, self.acc.as_ref().map(|a| a.1)).map_err(|err| self.invalid(err.to_string()))
    }

    /// Every nonzero coefficient must be on a live axis.
    pub(super) fn check_coefs(&self, a: &Affine) -> Result<()> {
        if let Some(ax) = a
            .coefs
            .iter()
            .enumerate()
            .skip(self.live)
            .find(|(_, c)| **c != 0)
            .map(|(i, _)| i)
        {
            return Err(self.invalid(format!(
                "an index uses axis {ax} where only {} axes are live",
                self.live
            )));
        }
        Ok(())
    }

    /// The smallest and largest value of `a` over the live iteration box (exact, in i128).
    pub(super) fn range(&self, a: &Affine) -> Option<(i128, i128)> {
        let narrows = |&&(v, _, _): &&(usize, i64, i64)| v < self.live && a.coefs.get(v).is_some_and(|&c| c != 0);
        if !self.spans.iter().any(|s| narrows(&s)) {
            return a.range(&self.extents[..self.live]);
        }
        let mut extents = self.extents[..self.live].to_vec();
        let mut shifted = a.clone();
        for &(v, lo, hi) in self.spans.iter().filter(narrows) {
            extents[v] = hi - lo;
            shifted.offset += a.coefs[v] * lo;
        }
        shifted.range(&extents)
    }

    /// `a` at the current point (the live axes' counters plus their tile offsets). The
    /// constant is added last: Cranelift rematerializes an add of a constant in every block
    /// that uses it, and with the constant first the whole chain of axis terms after it
    /// would be recomputed inside the innermost loop; last, it is one add that usually
    /// folds into an addressing mode.
    pub(super) fn affine(&mut self, a: &Affine) -> Result<Value> {
        self.check_coefs(a)?;
        let constant = a.offset + self.shift(a, 0..self.live);
        let terms = self.terms(a, 0..self.live, 1);
        Ok(match terms {
            None => self.b.ins().iconst(types::I64, constant),
            Some(t) if constant == 0 => t,
            Some(t) => self.b.ins().iadd_imm_s(t, constant),
        })
    }

    /// `sum(coef * offset)` of `a` over `axes`: the tile offsets' part of its value.
    fn shift(&self, a: &Affine, axes: std::ops::Range<usize>) -> i64 {
        a.coefs.iter().zip(&self.offsets).enumerate().filter(|(ax, _)| axes.contains(ax)).map(|(_, (c, o))| c * o).sum()
    }

    /// `scale * sum(coef * counter)` of `a` over `axes` (`None` when no axis of them has a
    /// coefficient).
    fn terms(&mut self, a: &Affine, axes: std::ops::Range<usize>, scale: i64) -> Option<Value> {
        let mut acc: Option<Value> = None;
        for (ax, &c) in a.coefs.iter().enumerate() {
            if c == 0 || !axes.contains(&ax) {
                continue;
            }
            let i = self.b.use_var(self.axes[ax]);
            let t = if c * scale == 1 { i } else { self.b.ins().imul_imm_s(i, c * scale) };
            acc = Some(match acc {
                None => t,
                Some(x) => self.b.ins().iadd(x, t),
            });
        }
        acc
    }

    /// The address of element `index` of input `buf` (of dtype `d`) at the current point,
    /// as `((base + size * outer) + size * inner) + size * constant`: `outer` sums the
    /// counter terms of the output axes, `inner` those of the reduction axes (inside a
    /// reduction), and the constant holds the offset and every tile and unroll offset. The
    /// first part is invariant in the reduction loops (Cranelift hoists it), the inner
    /// terms are shared by the loads of a step that have the same coefficients, and the
    /// constant folds into the x86 addressing mode as a displacement, so a load in a
    /// reduction step is one instruction. For loads whose index is proven in bounds (no
    /// run-time check uses the flat index).
    fn split_address(&mut self, buf: usize, index: &Affine, d: DType) -> Result<Value> {
        self.check_coefs(index)?;
        let r = self.k.out_shape.len().min(self.live);
        let size = d.size() as i64;
        let mut addr = self.bases[buf];
        if let Some(outer) = self.terms(index, 0..r, size) {
            addr = self.b.ins().iadd(addr, outer);
        }
        if let Some(inner) = self.terms(index, r..self.live, size) {
            addr = self.b.ins().iadd(addr, inner);
        }
        let constant = size * (index.offset + self.shift(index, 0..self.live));
        Ok(if constant == 0 { addr } else { self.b.ins().iadd_imm_s(addr, constant) })
    }

    /// Whether `e` is the load node of the packed input (read from its scratch).
    pub(super) fn is_packed(&self, e: &Expr) -> bool {
        matches!(&self.packed, Some(p) if p.node == std::ptr::from_ref(e) as usize)
    }

    /// Whether every value `index` takes over the live axes lies in a buffer of `numel`
    /// elements.
    fn in_buffer(&self, index: &Affine, numel: usize) -> bool {
        matches!(self.range(index), Some((lo, hi)) if lo >= 0 && hi < numel as i128)
    }

    /// Whether `e` is a load that is constant along the vector axis (index and guards): one
    /// scalar, broadcast.
    pub(super) fn is_broadcast(&self, e: &Expr) -> bool {
        let (Expr::Load { index, guards, .. }, Some(v)) = (e, self.vec_axis) else { return false };
        let along = |c: &[i64]| c.get(v).copied().unwrap_or(0) != 0;
        !along(&index.coefs) && !guards.iter().any(|g| along(&g.expr.coefs))
    }

    /// An f32x4 broadcast of an unguarded, in-bounds load that is constant along the vector
    /// axis, loaded afresh for its one use (not through the load cache), so Cranelift folds
    /// the load into `vbroadcastss`, and its x64 FMA, which writes its first multiplicand's
    /// register, overwrites a register nothing else reads (no copy). `None` for any other
    /// expression, and for the packed operand (it is read from its panel).
    pub(super) fn fresh_broadcast(&mut self, e: &Expr) -> Result<Option<Value>> {
        let Expr::Load { buf, index, guards, .. } = e else { return Ok(None) };
        let input = &self.k.inputs[*buf];
        if self.lanes != 4
            || !self.is_broadcast(e)
            || self.is_packed(e)
            || !guards.is_empty()
            || input.dtype != DType::F32
            || !self.in_buffer(index, input.numel)
        {
            return Ok(None);
        }
        let addr = self.split_address(*buf, index, DType::F32)?;
        let x = self.b.ins().load(types::F32, Self::free_load_flags(), addr, 0);
        Ok(Some(self.b.ins().splat(types::F32X4, x)))
    }

    /// Flags of a load of an input that needs no guard and no bounds check: inputs are not
    /// written while a kernel runs (the output overlaps none), so the load may move freely
    /// (Cranelift then treats it as pure: it hoists, merges and folds it into its user).
    pub(super) fn free_load_flags() -> MemFlagsData {
        MemFlagsData::new().with_notrap().with_readonly().with_can_move()
    }

    /// `base[buf] + idx * size(d)`.
    pub(super) fn address(&mut self, buf: usize, idx: Value, d: DType) -> Value {
        let off = self.b.ins().imul_imm_s(idx, d.size() as i64);
        self.b.ins().iadd(self.bases[buf], off)
    }

    /// Loads element `idx` of input `buf`, checking `0 <= idx < numel` at run time unless
    /// `range` (the index range) proves it.
    pub(super) fn load(
        &mut self,
        buf: usize,
        idx: Value,
        range: Option<(i128, i128)>,
    ) -> Result<Value> {
        let b = &self.k.inputs[buf];
        let (d, numel) = (b.dtype, b.numel as i128);
        let ty = self.ty(d)?;
        if !matches!(range, Some((lo, hi)) if lo >= 0 && hi < numel) {
            let bad = self
                .b
                .ins()
                .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, idx, numel as i64);
            self.check(bad, RuntimeError::LoadOutOfBounds);
        }
        let addr = self.address(buf, idx, d);
        let v = self
            .b
            .ins()
            .load(ty, MemFlagsData::new().with_notrap(), addr, 0);
        Ok(if d == DType::Bool {
            self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
        } else {
            v
        })
    }

    /// Whether guard `g` provably fails at every point of the live box.
    fn fails(&self, g: &KGuard) -> bool {
        matches!(self.range(&g.expr), Some((lo, hi)) if g.bound <= 0 || hi < 0 || lo >= i128::from(g.bound))
    }

    /// The conjunction of the guards, or `None` when they provably all hold.
    pub(super) fn guards(&mut self, guards: &[KGuard]) -> Result<Option<Value>> {
        let mut cond = None;
        for g in guards {
            self.check_coefs(&g.expr)?;
            let c = match self.range(&g.expr) {
                Some((lo, hi)) if lo >= 0 && hi < i128::from(g.bound) => continue,
                _ if self.fails(g) => self.iconst(types::I8, 0),
                _ => {
                    let v = self.affine(&g.expr)?;
                    self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, v, g.bound)
                }
            };
            cond = Some(match cond {
                None => c,
                Some(p) => self.b.ins().band(p, c),
            });
        }
        Ok(cond)
    }

    pub(super) fn constant(&mut self, v: f64, d: DType) -> Result<Value> {
        let ty = self.ty(d)?;
        Ok(match d {
            DType::F32 => self.b.ins().f32const(v as f32),
            DType::I64 => self.iconst(ty, v as i64),
            DType::I32 => self.iconst(ty, (v as i32).into()),
            _ => self.iconst(ty, i64::from(v != 0.0)),
        })
    }

    pub(super) fn helper(&mut self, name: &'static str) -> Result<FuncRef> {
        if let Some(&f) = self.func_refs.get(name) {
            return Ok(f);
        }
        let id = *self.helpers.get(name).ok_or_else(|| Error::Internal {
            kernel: self.k.name.clone(),
            msg: format!("helper {name} not declared"),
        })?;
        let f = self.module.declare_func_in_func(id, self.b.func);
        self.func_refs.insert(name, f);
        Ok(f)
    }

    /// sin, cos and tan by polynomial are accurate for `|x| <= 1e4` (`vmath.rs`); beyond
    /// (and for infinities and NaN) a cold path computes the lanes with the reference's
    /// function. `poly` is the polynomial result for `x`.
    fn large_argument_fallback(&mut self, f: UnaryFn, x: Value, poly: Value) -> Result<Value> {
        let name = libcalls::unary(f).ok_or_else(|| Error::Internal {
            kernel: self.k.name.clone(),
            msg: format!("no helper for {}", f.name()),
        })?;
        let ty = self.b.func.dfg.value_type(x);
        let ax = self.b.ins().fabs(x);
        let limit = self.b.ins().f32const(1e4);
        let limit = self.splat(limit);
        // `!(|x| <= limit)`: also true for NaN.
        let big = self.b.ins().fcmp(FloatCC::UnorderedOrGreaterThan, ax, limit);
        let any = if self.lanes == 1 { big } else { self.b.ins().vany_true(big) };
        let cold = self.b.create_block();
        let done = self.b.create_block();
        let result = self.b.append_block_param(done, ty);
        self.b.set_cold_block(cold);
        self.b.ins().brif(any, cold, &[], done, &[poly.into()]);
        self.b.seal_block(cold);
        self.b.switch_to_block(cold);
        let exact = if self.lanes == 1 {
            self.call(name, &[x])?
        } else {
            let mut v = poly;
            for lane in 0..4u8 {
                let xi = self.b.ins().extractlane(x, lane);
                let r = self.call(name, &[xi])?;
                v = self.b.ins().insertlane(v, r, lane);
            }
            self.pick(big, v, poly)
        };
        self.b.ins().jump(done, &[exact.into()]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        Ok(result)
    }

    pub(super) fn call(&mut self, name: &'static str, args: &[Value]) -> Result<Value> {
        let f = self.helper(name)?;
        let call = self.b.ins().call(f, args);
        self.b
            .inst_results(call)
            .first()
            .copied()
            .ok_or_else(|| Error::Internal {
                kernel: self.k.name.clone(),
                msg: format!("helper {name} returns nothing"),
            })
    }

    /// The key under which a load is cached: its node, the lanes, and the tile offsets of
    /// the axes it depends on.
    pub(super) fn load_key(&self, e: &Expr, index: &Affine, guards: &[KGuard]) -> LoadKey {
        let uses = |a: usize| {
            index.coefs.get(a).is_some_and(|&c| c != 0)
                || guards
                    .iter()
                    .any(|g| g.expr.coefs.get(a).is_some_and(|&c| c != 0))
        };
        let offs = self
            .offsets
            .iter()
            .enumerate()
            .map(|(a, &o)| if uses(a) { o } else { 0 })
            .collect();
        (std::ptr::from_ref(e) as usize, self.lanes, offs)
    }

    /// A load (`e` is an [`Expr::Load`]) at the current lanes.
    pub(super) fn load_expr(&mut self, e: &Expr) -> Result<(Value, DType)> {
        let Expr::Load {
            buf,
            index,
            guards,
            pad,
        } = e
        else {
            return Err(self.invalid("load_expr of a non-load"));
        };
        let d = self.dtype_of(e)?;
        if guards.iter().any(|g| self.fails(g)) {
            // The pad wherever the point is (a pad's border columns, in their segment).
            let padv = self.constant(*pad, d)?;
            return Ok((if self.lanes > 1 { self.splat(padv) } else { padv }, d));
        }
        if self.lanes > 1 {
            return Ok((self.vector_load(e, *buf, index, guards)?, DType::F32));
        }
        let numel = self.k.inputs[*buf].numel;
        self.check_coefs(index)?;
        let cond = self.guards(guards)?;
        let padv = self.constant(*pad, d)?;
        if numel == 0 {
            // Nothing can be read: every point must be padding.
            let Some(c) = cond else {
                return Err(self.invalid(format!("a load from empty buffer {buf}")));
            };
            self.check(c, RuntimeError::LoadOutOfBounds);
            return Ok((padv, d));
        }
        if cond.is_none()
            && d != DType::Bool
            && self.in_buffer(index, numel)
        {
            let ty = self.ty(d)?;
            let addr = self.split_address(*buf, index, d)?;
            return Ok((self.b.ins().load(ty, Self::free_load_flags(), addr, 0), d));
        }
        let idx = self.affine(index)?;
        let (idx, range) = match cond {
            None => (idx, self.range(index)),
            Some(c) => {
                // Index 0 (in the buffer: it is not empty) where a guard fails.
                let range = ir::kernel::guarded_in_bounds(self.k, index, guards, numel).then_some((0, numel as i128 - 1));
                let zero = self.b.ins().iconst(types::I64, 0);
                (self.b.ins().select(c, idx, zero), range)
            }
        };
        let v = self.load(*buf, idx, range)?;
        Ok(match cond {
            None => (v, d),
            Some(c) => (self.b.ins().select(c, v, padv), d),
        })
    }

    /// Lanes 0 and 2 of `lo` then lanes 1 and 3 of `hi` (f32x4; `hi` loaded 3 elements
    /// after `lo`, so these are elements 0, 2, 4 and 6): one `shufps` on x86.
    fn stride_two_lanes(&mut self, lo: Value, hi: Value) -> Value {
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let bytes: Vec<u8> = [0u8, 2, 5, 7].iter().flat_map(|&lane| (0..4).map(move |b| lane * 4 + b)).collect();
        let mask = self.b.func.dfg.immediates.push(bytes.as_slice().into());
        let (lo, hi) = (self.b.ins().bitcast(types::I8X16, le, lo), self.b.ins().bitcast(types::I8X16, le, hi));
        let even = self.b.ins().shuffle(lo, hi, mask);
        self.b.ins().bitcast(types::F32X4, le, even)
    }

    /// An f32x4 load along the vector axis. A load constant along it (index and guards) is
    /// one scalar load, broadcast. Otherwise guards and index are affine in the lane, so
    /// lanes 0 and 3 decide whether every lane is in bounds: then one vector load (index
    /// coefficient 1), two vector loads and a shuffle (coefficient 2) or four scalar loads
    /// (other strides), else each lane on its own, guarded,
    /// assembled into a vector.
    pub(super) fn vector_load(
        &mut self,
        e: &Expr,
        buf: usize,
        index: &Affine,
        guards: &[KGuard],
    ) -> Result<Value> {
        let lanes = self.lanes;
        let v = self
            .vec_axis
            .ok_or_else(|| self.invalid("a vector load without a vector axis"))?;
        let cv = index.coefs.get(v).copied().unwrap_or(0);
        if self.is_broadcast(e) {
            self.lanes = 1;
            let scalar = self.expr(e);
            self.lanes = lanes;
            let (x, _) = scalar?;
            return Ok(self.splat(x));
        }
        let numel = self.k.inputs[buf].numel;
        // Where lanes 0 and 3 pass the guards every lane does (both are affine in the lane).
        let in_bounds = self.in_buffer(index, numel)
            || ir::kernel::guarded_in_bounds(self.k, index, guards, numel);
        let flags = MemFlagsData::new().with_notrap();
        let merge = self.b.create_block();
        let x = self.b.append_block_param(merge, types::F32X4);
        // Guards constant along the vector axis hold for all lanes or none: where they fail
        // (a pad's border rows), the vector is the pad value.
        let (uniform, per_lane): (Vec<KGuard>, Vec<KGuard>) =
            guards.iter().cloned().partition(|g| g.expr.coefs.get(v).copied().unwrap_or(0) == 0);
        if let Some(all) = self.guards(&uniform)? {
            let Expr::Load { pad, .. } = e else {
                return Err(self.invalid("a vector load of a non-load"));
            };
            let pad = self.b.ins().f32const(*pad as f32);
            let pad = self.splat(pad);
            let rest = self.b.create_block();
            self.b.ins().brif(all, rest, &[], merge, &[pad.into()]);
            self.b.seal_block(rest);
            self.b.switch_to_block(rest);
        }
        let guards = per_lane.as_slice();
        let mut ok: Option<Value> = None;
        let origin = self.offsets[v];
        // Stride 2: a vector from the first lane's element and one from the last lane's
        // element but 3, lanes 0 and 2 of the one and 1 and 3 of the other shuffled
        // together: it reads nothing past the last lane's element, so the lanes' own checks
        // suffice.
        let wide = cv == 2 && lanes == 4;
        for lane in [0, lanes - 1] {
            self.offsets[v] = origin + lane;
            let mut conds = Vec::new();
            if let Some(c) = self.guards(guards)? {
                conds.push(c);
            }
            if !in_bounds {
                let idx = self.affine(index)?;
                conds.push(
                    self.b
                        .ins()
                        .icmp_imm_s(IntCC::UnsignedLessThan, idx, numel as i64),
                );
            }
            for c in conds {
                ok = Some(match ok {
                    None => c,
                    Some(p) => self.b.ins().band(p, c),
                });
            }
        }
        self.offsets[v] = origin;
        let fast_block = self.b.create_block();
        if let Some(ok) = ok {
            let slow_block = self.b.create_block();
            self.b.ins().brif(ok, fast_block, &[], slow_block, &[]);
            self.b.seal_block(slow_block);
            self.b.switch_to_block(slow_block);
            // Each lane alone, as the scalar code does.
            let cache_on = std::mem::replace(&mut self.cache_on, false);
            self.lanes = 1;
            let mut vec = None;
            let mut res = Ok(());
            for lane in 0..lanes {
                self.offsets[v] = origin + lane;
                match self.expr(e) {
                    Ok((s, _)) => vec = Some(self.put_lane(vec, s, lane)),
                    Err(err) => {
                        res = Err(err);
                        break;
                    }
                }
            }
            self.offsets[v] = origin;
            self.lanes = lanes;
            self.cache_on = cache_on;
            res?;
            let vec = vec.ok_or_else(|| self.invalid("no lanes"))?;
            self.b.ins().jump(merge, &[vec.into()]);
        } else {
            self.b.ins().jump(fast_block, &[]);
        }
        self.b.seal_block(fast_block);
        self.b.switch_to_block(fast_block);
        // A load in the buffer only where the uniform guards hold stays below their branch.
        if cv == 1 && ok.is_none() && self.in_buffer(index, numel) {
            let addr = self.split_address(buf, index, DType::F32)?;
            let fast = self.b.ins().load(types::F32X4, Self::free_load_flags(), addr, 0);
            self.b.ins().jump(merge, &[fast.into()]);
            self.b.seal_block(merge);
            self.b.switch_to_block(merge);
            return Ok(x);
        }
        let idx = self.affine(index)?;
        let fast = if cv == 1 {
            let addr = self.address(buf, idx, DType::F32);
            self.b.ins().load(types::F32X4, flags, addr, 0)
        } else if wide {
            let addr = self.address(buf, idx, DType::F32);
            let lo = self.b.ins().load(types::F32X4, flags, addr, 0);
            let hi = self.b.ins().load(types::F32X4, flags, addr, 12);
            self.stride_two_lanes(lo, hi)
        } else {
            let mut vec = None;
            for lane in 0..lanes {
                let i = self.b.ins().iadd_imm_s(idx, lane * cv);
                let addr = self.address(buf, i, DType::F32);
                let s = self.b.ins().load(types::F32, flags, addr, 0);
                vec = Some(self.put_lane(vec, s, lane));
            }
            vec.ok_or_else(|| self.invalid("no lanes"))?
        };
        self.b.ins().jump(merge, &[fast.into()]);
        self.b.seal_block(merge);
        self.b.switch_to_block(merge);
        Ok(x)
    }

    /// `vec` with lane `lane` set to `s` (lane 0 starts a new vector).
    pub(super) fn put_lane(&mut self, vec: Option<Value>, s: Value, lane: i64) -> Value {
        match vec {
            None => self.b.ins().splat(types::F32X4, s),
            Some(v) => self.b.ins().insertlane(v, s, lane as u8),
        }
    }

    pub(super) fn expr(&mut self, e: &Expr) -> Result<(Value, DType)> {
        match e {
            Expr::Load { index, guards, .. } => {
                let key = self.load_key(e, index, guards);
                if self.cache_on
                    && let Some(&v) = self.cache.get(&key)
                {
                    return Ok(v);
                }
                let reads_panel = self.is_packed(e) && self.packed.as_ref().is_some_and(|p| p.panel.is_some());
                let v = if reads_panel { self.packed_load()? } else { self.load_expr(e)? };
                if self.cache_on {
                    self.cache.insert(key, v);
                }
                Ok(v)
            }
            Expr::Gather {
                buf,
                index,
                stride,
                extent,
                pos,
            } => {
                let d = self.dtype_of(e)?;
                let (p, pd) = self.expr(pos)?;
                let p = match pd {
                    DType::I64 => p,
                    DType::I32 => self.b.ins().sextend(types::I64, p),
                    _ => return Err(self.invalid(format!("a Gather position of dtype {pd}"))),
                };
                let bad = if *extent <= 0 {
                    self.iconst(types::I8, 1)
                } else {
                    self.b
                        .ins()
                        .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, p, *extent)
                };
                self.check(bad, RuntimeError::GatherOutOfRange);
                let base = self.affine(index)?;
                let off = self.b.ins().imul_imm_s(p, *stride);
                let idx = self.b.ins().iadd(base, off);
                let range = self.range(index).map(|(lo, hi)| {
                    let span = i128::from(*stride) * i128::from(extent.saturating_sub(1).max(0));
                    if span < 0 {
                        (lo + span, hi)
                    } else {
                        (lo, hi + span)
                    }
                });
                if self.k.inputs[*buf].numel == 0 {
                    return Err(self.invalid(format!("a Gather from empty buffer {buf}")));
                }
                Ok((self.load(*buf, idx, range)?, d))
            }
            Expr::Const { value, dtype } => {
                let c = self.constant(*value, *dtype)?;
                Ok((self.splat(c), *dtype))
            }
            Expr::Axis(a) => {
                if *a >= self.live {
                    return Err(
                        self.invalid(format!("Axis({a}) where only {} axes are live", self.live))
                    );
                }
                let i = self.b.use_var(self.axes[*a]);
                Ok(match self.offsets[*a] {
                    0 => (i, DType::I64),
                    o => (self.b.ins().iadd_imm_s(i, o), DType::I64),
                })
            }
            Expr::Acc => self
                .acc
                .ok_or_else(|| self.invalid("Acc outside an epilogue")),
            Expr::Unary(f, x) => {
                let (x, d) = self.expr(x)?;
                self.unary(*f, x, d)
            }
            Expr::Binary(f, a, b) => {
                let (a, da) = self.expr(a)?;
                let (b, db) = self.expr(b)?;
                if da != db {
                    return Err(self.invalid(format!("Binary {} of {da} and {db}", f.name())));
                }
                self.binary(*f, a, b, da)
            }
            Expr::Select(c, a, b) => {
                let (c, dc) = self.expr(c)?;
                let (a, da) = self.expr(a)?;
                let (b, db) = self.expr(b)?;
                if dc != DType::Bool || da != db {
                    return Err(self.invalid(format!("Select on {dc} of {da} and {db}")));
                }
                Ok((self.pick(c, a, b), da))
            }
            Expr::Cast(to, x) => {
                let (x, from) = self.expr(x)?;
                Ok((self.cast(x, from, *to)?, *to))
            }
        }
    }

    pub(super) fn unary(&mut self, f: UnaryFn, x: Value, d: DType) -> Result<(Value, DType)> {
        let unsupported = |s: &Self| {
            s.unsupported(format!(
                "Unary {} on {d} is not supported by the Cranelift backend yet",
                f.name()
            ))
        };
        let v = match d {
            DType::F32 => match f {
                UnaryFn::Neg => self.b.ins().fneg(x),
                UnaryFn::Abs => self.b.ins().fabs(x),
                UnaryFn::Sqrt => self.b.ins().sqrt(x),
                UnaryFn::Recip => {
                    let one = self.b.ins().f32const(1.0);
                    let one = self.splat(one);
                    self.b.ins().fdiv(one, x)
                }
                UnaryFn::Floor => self.b.ins().floor(x),
                UnaryFn::Ceil => self.b.ins().ceil(x),
                UnaryFn::Round => self.b.ins().nearest(x),
                UnaryFn::IsNaN => {
                    return Ok((self.b.ins().fcmp(FloatCC::Unordered, x, x), DType::Bool));
                }
                UnaryFn::Sign => {
                    // `v > 0 ? 1 : v < 0 ? -1 : v` (keeps -0 and NaN).
                    let zero = self.b.ins().f32const(0.0);
                    let one = self.b.ins().f32const(1.0);
                    let minus = self.b.ins().f32const(-1.0);
                    let gt = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                    let lt = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                    let inner = self.b.ins().select(lt, minus, x);
                    self.b.ins().select(gt, one, inner)
                }
                _ => match vmath::emit(&mut self.b, f, x, self.fma) {
                    Some(v) if matches!(f, UnaryFn::Sin | UnaryFn::Cos | UnaryFn::Tan) => {
                        self.large_argument_fallback(f, x, v)?
                    }
                    Some(v) => v,
                    None => match libcalls::unary(f) {
                        Some(name) if self.lanes == 1 => self.call(name, &[x])?,
                        _ => return Err(unsupported(self)),
                    },
                },
            },
            DType::I64 | DType::I32 => match f {
                UnaryFn::Neg => self.b.ins().ineg(x),
                UnaryFn::Abs => self.b.ins().iabs(x),
                UnaryFn::BitNot => self.b.ins().bnot(x),
                UnaryFn::Sign => {
                    let ty = self.ty(d)?;
                    let zero = self.iconst(ty, 0);
                    let one = self.iconst(ty, 1);
                    let minus = self.iconst(ty, -1);
                    let gt = self.b.ins().icmp(IntCC::SignedGreaterThan, x, zero);
                    let lt = self.b.ins().icmp(IntCC::SignedLessThan, x, zero);
                    let inner = self.b.ins().select(lt, minus, zero);
                    self.b.ins().select(gt, one, inner)
                }
                _ => return Err(unsupported(self)),
            },
            DType::Bool => match f {
                UnaryFn::Not => self.b.ins().icmp_imm_s(IntCC::Equal, x, 0),
                _ => return Err(unsupported(self)),
            },
            _ => return Err(unsupported(self)),
        };
        Ok((v, d))
    }

    pub(super) fn binary(
        &mut self,
        f: BinaryFn,
        a: Value,
        b: Value,
        d: DType,
    ) -> Result<(Value, DType)> {
        let unsupported = |s: &Self| {
            s.unsupported(format!(
                "Binary {} on {d} is not supported by the Cranelift backend yet",
                f.name()
            ))
        };
        if f.is_comparison() {
            let v = if d == DType::F32 {
                let cc = match f {
                    BinaryFn::Eq => FloatCC::Equal,
                    BinaryFn::Lt => FloatCC::LessThan,
                    BinaryFn::Le => FloatCC::LessThanOrEqual,
                    BinaryFn::Gt => FloatCC::GreaterThan,
                    _ => FloatCC::GreaterThanOrEqual,
                };
                self.b.ins().fcmp(cc, a, b)
            } else if is_int(d) || (d == DType::Bool && f == BinaryFn::Eq) {
                let cc = match f {
                    BinaryFn::Eq => IntCC::Equal,
                    BinaryFn::Lt => IntCC::SignedLessThan,
                    BinaryFn::Le => IntCC::SignedLessThanOrEqual,
                    BinaryFn::Gt => IntCC::SignedGreaterThan,
                    _ => IntCC::SignedGreaterThanOrEqual,
                };
                self.b.ins().icmp(cc, a, b)
            } else {
                return Err(unsupported(self));
            };
            return Ok((v, DType::Bool));
        }
        let v = match d {
            DType::F32 => match f {
                BinaryFn::Add => self.b.ins().fadd(a, b),
                BinaryFn::Sub => self.b.ins().fsub(a, b),
                BinaryFn::Mul => self.b.ins().fmul(a, b),
                BinaryFn::Div => self.b.ins().fdiv(a, b),
                // Against a constant that is not NaN (a ReLU's 0): `b` where `a < b` (Max)
                // or `b < a` (Min), else `a` (also where `a` is NaN, and on ties): one
                // `maxps`/`minps` on x86.
                BinaryFn::Max | BinaryFn::Min if self.lanes > 1 && self.is_ordered_constant(b) => {
                    let (x, y) = if f == BinaryFn::Max { (a, b) } else { (b, a) };
                    let lt = self.b.ins().fcmp(FloatCC::LessThan, x, y);
                    self.pick(lt, b, a)
                }
                // NaN-propagating, first operand on ties (so max(-0, +0) = -0): the reference's
                // `if a.is_nan() || (!b.is_nan() && a >= b) { a } else { b }`.
                BinaryFn::Max | BinaryFn::Min => {
                    let cc = if f == BinaryFn::Max {
                        FloatCC::GreaterThanOrEqual
                    } else {
                        FloatCC::LessThanOrEqual
                    };
                    let nan = self.b.ins().fcmp(FloatCC::Unordered, a, a);
                    let ord = self.b.ins().fcmp(cc, a, b);
                    let take = self.b.ins().bor(nan, ord);
                    self.pick(take, a, b)
                }
                _ => match libcalls::binary(f) {
                    Some(name) => self.call(name, &[a, b])?,
                    None => return Err(unsupported(self)),
                },
            },
            DType::I64 | DType::I32 => match f {
                BinaryFn::Add => self.b.ins().iadd(a, b),
                BinaryFn::Sub => self.b.ins().isub(a, b),
                BinaryFn::Mul => self.b.ins().imul(a, b),
                BinaryFn::Max => self.b.ins().smax(a, b),
                BinaryFn::Min => self.b.ins().smin(a, b),
                BinaryFn::BitAnd => self.b.ins().band(a, b),
                BinaryFn::BitOr => self.b.ins().bor(a, b),
                BinaryFn::BitXor => self.b.ins().bxor(a, b),
                BinaryFn::Div | BinaryFn::Mod | BinaryFn::Fmod => self.int_div(f, a, b, d)?,
                _ => return Err(unsupported(self)),
            },
            DType::Bool => match f {
                BinaryFn::And => self.b.ins().band(a, b),
                BinaryFn::Or => self.b.ins().bor(a, b),
                BinaryFn::Xor => self.b.ins().bxor(a, b),
                _ => return Err(unsupported(self)),
            },
            _ => return Err(unsupported(self)),
        };
        Ok((v, d))
    }

    /// Integer Div (truncating), Fmod (sign of the dividend) and Mod (sign of the divisor),
    /// wrapping like the reference (`MIN / -1 = MIN`); a zero divisor is a run-time error.
    pub(super) fn int_div(&mut self, f: BinaryFn, a: Value, b: Value, d: DType) -> Result<Value> {
        let ty = self.ty(d)?;
        let zero = self.iconst(ty, 0);
        let is_zero = self.b.ins().icmp(IntCC::Equal, b, zero);
        self.check(is_zero, RuntimeError::DivisionByZero);
        let minus = self.iconst(ty, -1);
        let one = self.iconst(ty, 1);
        let is_minus = self.b.ins().icmp(IntCC::Equal, b, minus);
        // Divide by 1 instead of -1 (the hardware traps on MIN / -1), then fix up.
        let safe = self.b.ins().select(is_minus, one, b);
        Ok(match f {
            BinaryFn::Div => {
                let q = self.b.ins().sdiv(a, safe);
                let neg = self.b.ins().ineg(a);
                self.b.ins().select(is_minus, neg, q)
            }
            BinaryFn::Fmod => self.b.ins().srem(a, safe),
            _ => {
                let r = self.b.ins().srem(a, safe);
                let r_nz = self.b.ins().icmp(IntCC::NotEqual, r, zero);
                let r_neg = self.b.ins().icmp(IntCC::SignedLessThan, r, zero);
                let b_neg = self.b.ins().icmp(IntCC::SignedLessThan, b, zero);
                let signs = self.b.ins().bxor(r_neg, b_neg);
                let fix = self.b.ins().band(r_nz, signs);
                let fixed = self.b.ins().iadd(r, b);
                self.b.ins().select(fix, fixed, r)
            }
        })
    }

    /// Casts with the reference's semantics: float to int truncates and saturates (NaN to
    /// 0), int to int wraps, anything to bool is `!= 0` (NaN is true).
    pub(super) fn cast(&mut self, x: Value, from: DType, to: DType) -> Result<Value> {
        let ty = self.ty(to)?;
        self.ty(from)?;
        Ok(match (from, to) {
            _ if from == to => x,
            (DType::F32, DType::I64 | DType::I32) => self.b.ins().fcvt_to_sint_sat(ty, x),
            (DType::F32, DType::Bool) => {
                let zero = self.b.ins().f32const(0.0);
                self.b.ins().fcmp(FloatCC::NotEqual, x, zero)
            }
            (DType::I64 | DType::I32, DType::F32) => self.b.ins().fcvt_from_sint(ty, x),
            (DType::I64, DType::I32) => self.b.ins().ireduce(ty, x),
            (DType::I32, DType::I64) => self.b.ins().sextend(ty, x),
            (DType::I64 | DType::I32, DType::Bool) => {
                self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
            }
            (DType::Bool, DType::F32) => {
                let w = self.b.ins().uextend(types::I32, x);
                self.b.ins().fcvt_from_sint(ty, w)
            }
            (DType::Bool, _) => self.b.ins().uextend(ty, x),
            _ => {
                return Err(self.unsupported(format!(
                    "Cast {from} to {to} is not supported by the Cranelift backend yet"
                )));
            }
        })
    }
}
