//! Lowering expressions to LLVM IR (text form, parsed by LLVM): loads (guarded, gathered,
//! on vectors of the schedule's lanes, masked at the borders and at the partial vector
//! that ends the vector axis), the
//! elementwise functions, casts and the reduction combine. The loop nest that a schedule
//! shapes is in [`super::nest`]. Loop counters and accumulators live in `alloca`s that
//! LLVM's `mem2reg`/SROA turn into registers; loads whose index range over the iteration
//! box is inside the buffer are unchecked, the others (padded windows, gathers) are checked
//! at run time. This mirrors `cranelift/lower.rs` operation by operation, so both backends
//! compute the same values (exactly, but for FMA contraction and the polynomials' shared
//! few-ulp error).

use super::{dmath, vmath};
use crate::Error;
use crate::cranelift::RuntimeError;
use crate::cranelift::libcalls;
use ir::atom::{BinaryFn, ReduceFn, UnaryFn};
use ir::dtype::DType;
use ir::kernel::{Affine, Expr, KGuard, Kernel};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

pub(super) type Result<T> = std::result::Result<T, Error>;

/// A load's cache key: the expression node, the lane count, and the tile offsets of the
/// axes its index or guards depend on.
type LoadKey = (usize, i64, Vec<i64>);

/// An SSA value or a constant literal (the value part of an LLVM operand) and its dtype;
/// its lane count is the lowering's current one.
pub(super) type Val = (String, DType);

/// The function being built.
pub(super) struct Lower<'a> {
    pub(super) k: &'a Kernel,
    /// The instructions after the entry block's allocas.
    code: String,
    /// `alloca`s, emitted at the top of the entry block.
    allocas: String,
    /// Declarations the function needs (intrinsics, helpers).
    pub(super) decls: BTreeSet<String>,
    next: usize,
    /// Base addresses: the inputs, then the output.
    pub(super) bases: Vec<String>,
    /// The loop counters (allocas of i64): output axes, then reduction axes.
    pub(super) axes: Vec<String>,
    pub(super) extents: Vec<i64>,
    /// Per axis, a constant added to its counter: the point's place in the micro-tile.
    pub(super) offsets: Vec<i64>,
    /// How many axes (from 0) are live where the expression being lowered is evaluated.
    pub(super) live: usize,
    /// The reduced value, while lowering the epilogue.
    pub(super) acc: Option<Val>,
    pub(super) err_blocks: Vec<(RuntimeError, String)>,
    /// 1, or the schedule's lanes while lowering the vector loop (then every value is a
    /// vector of that many lanes).
    pub(super) lanes: i64,
    /// The lanes of the vector loop (the schedule's `Vectorize`).
    pub(super) vector_lanes: i64,
    /// Of the current `lanes`, how many are points of the output: fewer in the partial
    /// vector at the end of the vector axis, whose other lanes are neither read nor stored
    /// (they hold zeros).
    pub(super) valid: i64,
    /// The vectorized output axis, when the kernel runs on vectors.
    pub(super) vec_axis: Option<usize>,
    /// Whether a vector loop was emitted.
    pub(super) vectorized: bool,
    /// Whether the target has FMA (then a Sum of products accumulates with `llvm.fma`).
    pub(super) fma: bool,
    /// Whether an `fma` was emitted.
    pub(super) used_fma: bool,
    /// Loads already emitted for the current straight-line stretch (one reduction step or
    /// one epilogue of a tile): a load shared by several points of the tile is read once.
    pub(super) cache: HashMap<LoadKey, Val>,
    pub(super) cache_on: bool,
    /// Whether the code runs on a GPU: no host helpers, so the math without a polynomial
    /// here is computed by [`super::dmath`] (scalars only).
    pub(super) device: bool,
    /// The packed operand of a `Pack` schedule, while the nest has one.
    pub(super) packed: Option<Packed>,
    /// The columns `[start, stop)` (i64 values) of the current cache block of the vector
    /// axis (`Tile`).
    pub(super) block_columns: Option<(String, String)>,
}

/// A load whose values each cache block of the vector axis copies into a scratch first
/// (`Pack`), in micro-panels that a micro-tile reads with unit stride.
pub(super) struct Packed {
    /// The load node (its address): the body's only read of the packed input.
    pub(super) node: usize,
    /// The scratch (a `ptr` alloca of the block's floats).
    pub(super) scratch: String,
    /// Row-major strides of the reduction axes (their flat index is the panel row).
    pub(super) red_strides: Vec<i64>,
    /// Columns of a micro-panel: the micro-tile's lanes x unroll.
    pub(super) width: i64,
    /// The current micro-panel's address at reduction point 0 and the tile's first
    /// column while a micro-tile reads the scratch; `None` while the block is packed.
    pub(super) panel: Option<String>,
}

/// The largest stride along the vector axis that a vector load reads as one wide load and
/// a shuffle (beyond it, one scalar load per lane).
const MAX_SHUFFLED_STRIDE: i64 = 4;

/// The LLVM scalar type of a dtype in registers (bool is `i1`).
fn scalar(d: DType) -> Option<&'static str> {
    match d {
        DType::F32 => Some("float"),
        DType::F64 => Some("double"),
        DType::I64 => Some("i64"),
        DType::I32 => Some("i32"),
        DType::Bool => Some("i1"),
        _ => None,
    }
}

/// The LLVM type of a dtype in memory (bool is one byte).
pub(super) fn memory_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "float",
        DType::F64 => "double",
        DType::I64 => "i64",
        DType::I32 => "i32",
        _ => "i8",
    }
}

/// An f32 constant as LLVM writes it (the f64 bits of the exactly widened value).
pub(super) fn float_literal(v: f32) -> String {
    format!("0x{:016X}", f64::from(v).to_bits())
}

/// An f64 constant as LLVM writes it (its bits).
pub(super) fn double_literal(v: f64) -> String {
    format!("0x{:016X}", v.to_bits())
}

fn is_int(d: DType) -> bool {
    matches!(d, DType::I64 | DType::I32)
}

impl<'a> Lower<'a> {
    pub(super) fn new(k: &'a Kernel, vector_lanes: i64, fma: bool) -> Lower<'a> {
        Lower {
            k,
            code: String::new(),
            allocas: String::new(),
            decls: BTreeSet::new(),
            next: 0,
            bases: Vec::new(),
            axes: Vec::new(),
            extents: Vec::new(),
            offsets: Vec::new(),
            live: 0,
            acc: None,
            err_blocks: Vec::new(),
            lanes: 1,
            vector_lanes,
            valid: 1,
            vec_axis: None,
            vectorized: false,
            fma,
            used_fma: false,
            cache: HashMap::new(),
            cache_on: true,
            device: false,
            packed: None,
            block_columns: None,
        }
    }

    /// The function body: the entry block's allocas, then the code.
    pub(super) fn finish(self) -> (String, BTreeSet<String>) {
        (format!("entry:\n{}{}", self.allocas, self.code), self.decls)
    }

    pub(super) fn unsupported(&self, msg: impl Into<String>) -> Error {
        Error::Unsupported { kernel: self.k.name.clone(), msg: msg.into() }
    }

    pub(super) fn invalid(&self, msg: impl Into<String>) -> Error {
        Error::InvalidKernel { kernel: self.k.name.clone(), msg: msg.into() }
    }

    /// The scalar LLVM type of `d`, or an unsupported-dtype error.
    pub(super) fn scalar_ty(&self, d: DType) -> Result<&'static str> {
        scalar(d).ok_or_else(|| self.unsupported(format!("dtype {d} is not supported by the LLVM backend yet")))
    }

    /// The LLVM type of `d` at the current lanes.
    pub(super) fn ty(&self, d: DType) -> Result<String> {
        let s = self.scalar_ty(d)?;
        Ok(self.shaped(s))
    }

    /// `s` (a scalar type) at the current lanes.
    pub(super) fn shaped(&self, s: &str) -> String {
        if self.lanes == 1 { s.to_string() } else { format!("<{} x {s}>", self.lanes) }
    }

    /// A fresh SSA name.
    pub(super) fn fresh(&mut self, stem: &str) -> String {
        self.next += 1;
        format!("%{stem}{}", self.next)
    }

    /// A fresh block label (without the `%`).
    pub(super) fn block(&mut self, stem: &str) -> String {
        self.next += 1;
        format!("{stem}{}", self.next)
    }

    /// Emits `%t = rhs` and returns `%t`.
    pub(super) fn ins(&mut self, rhs: impl AsRef<str>) -> String {
        let t = self.fresh("t");
        let _ = writeln!(self.code, "  {t} = {}", rhs.as_ref());
        t
    }

    /// Emits an instruction without a result.
    pub(super) fn emit(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.code, "  {}", line.as_ref());
    }

    /// Starts block `label`.
    pub(super) fn start(&mut self, label: &str) {
        let _ = writeln!(self.code, "{label}:");
    }

    pub(super) fn jump(&mut self, label: &str) {
        self.emit(format!("br label %{label}"));
    }

    pub(super) fn branch(&mut self, cond: &str, yes: &str, no: &str) {
        self.emit(format!("br i1 {cond}, label %{yes}, label %{no}"));
    }

    /// A stack slot of type `ty` (promoted to a register by LLVM).
    pub(super) fn slot(&mut self, ty: &str) -> String {
        let s = self.fresh("slot");
        let _ = writeln!(self.allocas, "  {s} = alloca {ty}, align 64");
        s
    }

    pub(super) fn read(&mut self, ty: &str, slot: &str) -> String {
        self.ins(format!("load {ty}, ptr {slot}"))
    }

    pub(super) fn write(&mut self, ty: &str, v: &str, slot: &str) {
        self.emit(format!("store {ty} {v}, ptr {slot}"));
    }

    /// Calls intrinsic `llvm.<name>` on operands of type `ty` (its mangling suffix `suffix`).
    pub(super) fn intrinsic(&mut self, name: &str, ty: &str, args: &[&str]) -> String {
        let suffix = mangle(ty);
        let params = vec![ty; args.len()].join(", ");
        self.decls.insert(format!("declare {ty} @llvm.{name}.{suffix}({params})"));
        let list: Vec<String> = args.iter().map(|a| format!("{ty} {a}")).collect();
        self.ins(format!("call {ty} @llvm.{name}.{suffix}({})", list.join(", ")))
    }

    /// A scalar constant of `d` as a literal.
    pub(super) fn constant(&self, v: f64, d: DType) -> Result<String> {
        self.scalar_ty(d)?;
        Ok(match d {
            DType::F32 => float_literal(v as f32),
            DType::F64 => double_literal(v),
            DType::I64 => (v as i64).to_string(),
            DType::I32 => (v as i32).to_string(),
            _ => if v != 0.0 { "true" } else { "false" }.to_string(),
        })
    }

    /// Scalar `x` of dtype `d` at the current lanes (a vector literal for a literal).
    pub(super) fn splat(&mut self, x: &str, d: DType) -> Result<String> {
        if self.lanes == 1 {
            return Ok(x.to_string());
        }
        let s = self.scalar_ty(d)?;
        Ok(self.splat_scalar(x, s))
    }

    /// Scalar `x` of LLVM type `s` broadcast to the current lanes.
    pub(super) fn splat_scalar(&mut self, x: &str, s: &str) -> String {
        if self.lanes == 1 {
            return x.to_string();
        }
        let n = self.lanes;
        if !x.starts_with('%') {
            let items: Vec<String> = (0..n).map(|_| format!("{s} {x}")).collect();
            return format!("<{}>", items.join(", "));
        }
        let one = self.ins(format!("insertelement <{n} x {s}> poison, {s} {x}, i64 0"));
        self.ins(format!("shufflevector <{n} x {s}> {one}, <{n} x {s}> poison, <{n} x i32> zeroinitializer"))
    }

    /// `cond ? a : b` at the current lanes (`cond` a bool of the same lanes).
    pub(super) fn pick(&mut self, cond: &str, a: &str, b: &str, d: DType) -> Result<String> {
        let ty = self.ty(d)?;
        let cty = self.shaped("i1");
        Ok(self.ins(format!("select {cty} {cond}, {ty} {a}, {ty} {b}")))
    }

    /// Whether the point computation can run on vectors along output axis `axis`: every
    /// value is f32, the functions have vector forms, and the output is contiguous along
    /// it. Loads may be guarded or strided along it (the border lanes are masked).
    pub(super) fn vectorizable(&self, axis: usize, reduce: Option<&ReduceFn>, body: &Expr, epilogue: &Expr) -> bool {
        if self.k.output.dtype != DType::F32 || self.k.store.coefs.get(axis).is_none_or(|&c| c == 0) {
            return false;
        }
        if !matches!(reduce, None | Some(ReduceFn::Sum | ReduceFn::Max | ReduceFn::Min)) {
            return false;
        }
        fn ok(l: &Lower<'_>, e: &Expr) -> bool {
            match e {
                Expr::Load { buf, .. } => l.k.inputs.get(*buf).is_some_and(|b| b.dtype == DType::F32 && b.numel > 0),
                Expr::Const { dtype, .. } => *dtype == DType::F32,
                Expr::Acc => true,
                Expr::Unary(f, x) => {
                    (matches!(
                        f,
                        UnaryFn::Neg | UnaryFn::Abs | UnaryFn::Sqrt | UnaryFn::Recip | UnaryFn::Floor | UnaryFn::Ceil
                    ) || vmath::has(*f))
                        && ok(l, x)
                }
                Expr::Select(c, a, b) => {
                    matches!(&**c, Expr::Binary(f, x, y) if f.is_comparison() && ok(l, x) && ok(l, y))
                        && ok(l, a)
                        && ok(l, b)
                }
                Expr::Binary(f, a, b) => {
                    matches!(
                        f,
                        BinaryFn::Add | BinaryFn::Sub | BinaryFn::Mul | BinaryFn::Div | BinaryFn::Max | BinaryFn::Min
                    ) && ok(l, a)
                        && ok(l, b)
                }
                _ => false,
            }
        }
        ok(self, body) && ok(self, epilogue)
    }

    /// Opens a do-while loop over `axis` from `start`; the body must run at least once.
    pub(super) fn open_loop(&mut self, axis: usize, start: &str) -> String {
        let slot = self.axes[axis].clone();
        self.write("i64", start, &slot);
        let header = self.block("loop");
        self.jump(&header);
        self.start(&header);
        header
    }

    pub(super) fn close_loop(&mut self, axis: usize, header: &str, step: i64, end: i64) {
        let slot = self.axes[axis].clone();
        let i = self.read("i64", &slot);
        let next = self.ins(format!("add i64 {i}, {step}"));
        self.write("i64", &next, &slot);
        let more = self.ins(format!("icmp slt i64 {next}, {end}"));
        let exit = self.block("exit");
        self.branch(&more, header, &exit);
        self.start(&exit);
    }

    /// Branches to an error return when `bad` (an i1) is true.
    pub(super) fn check(&mut self, bad: &str, e: RuntimeError) {
        let err = match self.err_blocks.iter().find(|(x, _)| *x == e) {
            Some((_, b)) => b.clone(),
            None => {
                let b = self.block("error");
                self.err_blocks.push((e, b.clone()));
                b
            }
        };
        let cont = self.block("ok");
        self.emit(format!("br i1 {bad}, label %{err}, label %{cont}, !prof !0"));
        self.start(&cont);
    }

    /// The identity of reduction `f` over `d` (a scalar literal).
    pub(super) fn identity(&self, f: ReduceFn, d: DType) -> Result<String> {
        let v = match (f, d) {
            (ReduceFn::Sum, DType::F32 | DType::F64 | DType::I64 | DType::I32) => 0.0,
            (ReduceFn::Prod, DType::F32 | DType::F64 | DType::I64 | DType::I32) => 1.0,
            (ReduceFn::Max, DType::F32 | DType::F64) => f64::NEG_INFINITY,
            (ReduceFn::Min, DType::F32 | DType::F64) => f64::INFINITY,
            (ReduceFn::Max, DType::I64) => return Ok(i64::MIN.to_string()),
            (ReduceFn::Min, DType::I64) => return Ok(i64::MAX.to_string()),
            (ReduceFn::Max, DType::I32) => return Ok(i32::MIN.to_string()),
            (ReduceFn::Min, DType::I32) => return Ok(i32::MAX.to_string()),
            (ReduceFn::Max, DType::Bool) => 0.0,
            (ReduceFn::Min, DType::Bool) => 1.0,
            _ => {
                return Err(self.unsupported(format!("Reduce {} of {d} is not supported by the LLVM backend yet", f.name())));
            }
        };
        self.constant(v, d)
    }

    /// One step of reduction `f`: the accumulator `a` combined with the value `v`.
    pub(super) fn combine(&mut self, f: ReduceFn, d: DType, a: &str, v: &str) -> Result<String> {
        let ty = self.ty(d)?;
        Ok(match (f, d) {
            (ReduceFn::Sum, DType::F32 | DType::F64) => self.ins(format!("fadd {ty} {a}, {v}")),
            (ReduceFn::Prod, DType::F32 | DType::F64) => self.ins(format!("fmul {ty} {a}, {v}")),
            (ReduceFn::Sum, DType::I64 | DType::I32) => self.ins(format!("add {ty} {a}, {v}")),
            (ReduceFn::Prod, DType::I64 | DType::I32) => self.ins(format!("mul {ty} {a}, {v}")),
            // `if v > a || v.is_nan() { v } else { a }`, as the reference.
            (ReduceFn::Max | ReduceFn::Min, DType::F32 | DType::F64) => {
                let cc = if f == ReduceFn::Max { "ogt" } else { "olt" };
                let better = self.ins(format!("fcmp {cc} {ty} {v}, {a}"));
                let nan = self.ins(format!("fcmp uno {ty} {v}, {v}"));
                let cty = self.shaped("i1");
                let take = self.ins(format!("or {cty} {better}, {nan}"));
                self.pick(&take, v, a, d)?
            }
            (ReduceFn::Max, DType::Bool) => self.ins(format!("or {ty} {a}, {v}")),
            (ReduceFn::Min, DType::Bool) => self.ins(format!("and {ty} {a}, {v}")),
            (ReduceFn::Max, DType::I64 | DType::I32) => self.intrinsic("smax", &ty, &[a, v]),
            (ReduceFn::Min, DType::I64 | DType::I32) => self.intrinsic("smin", &ty, &[a, v]),
            _ => return Err(self.unsupported(format!("Reduce {} of {d} in the LLVM backend", f.name()))),
        })
    }

    /// ArgMax/ArgMin over the one reduction axis: the first index of the extremum, a NaN
    /// winning over every number (the reference's total order).
    pub(super) fn arg_reduce(&mut self, f: ReduceFn, body: &Expr) -> Result<Val> {
        let r = self.k.out_shape.len();
        if self.k.red_shape.len() != 1 {
            return Err(self.invalid(format!("{} over {} reduction axes", f.name(), self.k.red_shape.len())));
        }
        self.live = self.axes.len();
        let d = self.dtype_of(body)?;
        let ty = self.scalar_ty(d)?;
        let max = f == ReduceFn::ArgMax;
        let init = match d {
            DType::F32 => float_literal(if max { f32::NEG_INFINITY } else { f32::INFINITY }),
            DType::F64 => double_literal(if max { f64::NEG_INFINITY } else { f64::INFINITY }),
            DType::I64 => if max { i64::MIN } else { i64::MAX }.to_string(),
            DType::I32 => if max { i32::MIN } else { i32::MAX }.to_string(),
            _ => {
                return Err(self.unsupported(format!("Reduce {} of {d} is not supported by the LLVM backend yet", f.name())));
            }
        };
        if self.extents[r] == 0 {
            return Ok(("0".into(), DType::I64));
        }
        let best = self.slot(ty);
        let idx = self.slot("i64");
        self.write(ty, &init, &best);
        self.write("i64", "0", &idx);
        let h = self.open_loop(r, "0");
        let (v, _) = self.expr(body)?;
        let cur = self.read(ty, &best);
        let better = if d.is_float() {
            let cc = if max { "ogt" } else { "olt" };
            let ord = self.ins(format!("fcmp {cc} {ty} {v}, {cur}"));
            let v_nan = self.ins(format!("fcmp uno {ty} {v}, {v}"));
            let cur_num = self.ins(format!("fcmp ord {ty} {cur}, {cur}"));
            let t = self.ins(format!("or i1 {ord}, {v_nan}"));
            self.ins(format!("and i1 {t}, {cur_num}"))
        } else {
            let cc = if max { "sgt" } else { "slt" };
            self.ins(format!("icmp {cc} {ty} {v}, {cur}"))
        };
        let nb = self.ins(format!("select i1 {better}, {ty} {v}, {ty} {cur}"));
        self.write(ty, &nb, &best);
        let axis = self.axes[r].clone();
        let i = self.read("i64", &axis);
        let ci = self.read("i64", &idx);
        let ni = self.ins(format!("select i1 {better}, i64 {i}, i64 {ci}"));
        self.write("i64", &ni, &idx);
        self.close_loop(r, &h, 1, self.extents[r]);
        Ok((self.read("i64", &idx), DType::I64))
    }

    /// The dtype of `e` (`ir`'s, as the verifier checked it).
    pub(super) fn dtype_of(&self, e: &Expr) -> Result<DType> {
        e.dtype(self.k, self.acc.as_ref().map(|a| a.1)).map_err(|err| self.invalid(err.to_string()))
    }

    /// Every nonzero coefficient must be on a live axis.
    pub(super) fn check_coefs(&self, a: &Affine) -> Result<()> {
        if let Some(ax) = a.coefs.iter().enumerate().skip(self.live).find(|(_, c)| **c != 0).map(|(i, _)| i) {
            return Err(self.invalid(format!("an index uses axis {ax} where only {} axes are live", self.live)));
        }
        Ok(())
    }

    /// The smallest and largest value of `a` over the live iteration box (exact, in i128).
    pub(super) fn range(&self, a: &Affine) -> Option<(i128, i128)> {
        a.range(&self.extents[..self.live])
    }

    /// The value of `a` at the current point (an i64).
    pub(super) fn affine(&mut self, a: &Affine) -> Result<String> {
        self.check_coefs(a)?;
        let shift: i64 = a.coefs.iter().zip(&self.offsets).take(self.live).map(|(c, o)| c * o).sum();
        let mut acc = (a.offset + shift).to_string();
        for (ax, &c) in a.coefs.iter().enumerate().take(self.live) {
            if c == 0 {
                continue;
            }
            let slot = self.axes[ax].clone();
            let i = self.read("i64", &slot);
            let t = if c == 1 { i } else { self.ins(format!("mul i64 {i}, {c}")) };
            acc = self.ins(format!("add i64 {acc}, {t}"));
        }
        Ok(acc)
    }

    /// The address of element `idx` of buffer `buf` (elements of `d`).
    pub(super) fn address(&mut self, buf: usize, idx: &str, d: DType) -> String {
        let base = self.bases[buf].clone();
        self.ins(format!("getelementptr inbounds {}, ptr {base}, i64 {idx}", memory_type(d)))
    }

    /// Loads element `idx` of input `buf` (a scalar), checking `0 <= idx < numel` at run
    /// time unless `range` (the index range) proves it.
    pub(super) fn load(&mut self, buf: usize, idx: &str, range: Option<(i128, i128)>) -> Result<String> {
        let b = &self.k.inputs[buf];
        let (d, numel) = (b.dtype, b.numel as i128);
        self.scalar_ty(d)?;
        if !matches!(range, Some((lo, hi)) if lo >= 0 && hi < numel) {
            let bad = self.ins(format!("icmp uge i64 {idx}, {numel}"));
            self.check(&bad, RuntimeError::LoadOutOfBounds);
        }
        let addr = self.address(buf, idx, d);
        let mt = memory_type(d);
        let v = self.ins(format!("load {mt}, ptr {addr}, align {}", d.size()));
        Ok(if d == DType::Bool { self.ins(format!("icmp ne i8 {v}, 0")) } else { v })
    }

    /// The conjunction of the guards (an i1), or `None` when they provably all hold.
    pub(super) fn guards(&mut self, guards: &[KGuard]) -> Result<Option<String>> {
        let mut cond: Option<String> = None;
        for g in guards {
            self.check_coefs(&g.expr)?;
            let c = match self.range(&g.expr) {
                Some((lo, hi)) if lo >= 0 && hi < i128::from(g.bound) => continue,
                Some((lo, hi)) if g.bound <= 0 || hi < 0 || lo >= i128::from(g.bound) => "false".to_string(),
                _ => {
                    let v = self.affine(&g.expr)?;
                    self.ins(format!("icmp ult i64 {v}, {}", g.bound))
                }
            };
            cond = Some(match cond {
                None => c,
                Some(p) => self.ins(format!("and i1 {p}, {c}")),
            });
        }
        Ok(cond)
    }

    /// sin, cos and tan by polynomial are accurate for `|x| <= 1e4`; beyond (and for
    /// infinities and NaN) a cold path computes the lanes with the reference's function.
    /// `poly` is the polynomial result for `x`.
    fn large_argument_fallback(&mut self, f: UnaryFn, x: &str, poly: &str) -> Result<String> {
        let name = libcalls::unary(f).ok_or_else(|| Error::Internal {
            kernel: self.k.name.clone(),
            msg: format!("no helper for {}", f.name()),
        })?;
        let ty = self.shaped("float");
        let ax = self.intrinsic("fabs", &ty, &[x]);
        let limit = self.splat_scalar(&float_literal(1e4), "float");
        // `!(|x| <= limit)`: also true for NaN.
        let big = self.ins(format!("fcmp ugt {ty} {ax}, {limit}"));
        let any = if self.lanes == 1 {
            big.clone()
        } else {
            let n = self.lanes;
            self.decls.insert(format!("declare i1 @llvm.vector.reduce.or.v{n}i1(<{n} x i1>)"));
            self.ins(format!("call i1 @llvm.vector.reduce.or.v{n}i1(<{n} x i1> {big})"))
        };
        let (cold, done) = (self.block("cold"), self.block("done"));
        let from = self.block("hot");
        self.jump(&from);
        self.start(&from);
        self.emit(format!("br i1 {any}, label %{cold}, label %{done}, !prof !0"));
        self.start(&cold);
        let exact = if self.lanes == 1 {
            self.call(name, &[x])
        } else {
            let mut v = poly.to_string();
            for lane in 0..self.lanes {
                let xi = self.ins(format!("extractelement {ty} {x}, i64 {lane}"));
                let r = self.call(name, &[&xi]);
                v = self.ins(format!("insertelement {ty} {v}, float {r}, i64 {lane}"));
            }
            self.pick(&big, &v, poly, DType::F32)?
        };
        let cold_end = self.block("coldend");
        self.jump(&cold_end);
        self.start(&cold_end);
        self.jump(&done);
        self.start(&done);
        Ok(self.ins(format!("phi {ty} [ {poly}, %{from} ], [ {exact}, %{cold_end} ]")))
    }

    /// Calls the f32 helper `name` (a Rust function of the reference, mapped into the JIT).
    pub(super) fn call(&mut self, name: &str, args: &[&str]) -> String {
        self.call_typed(name, "float", args)
    }

    /// Calls the helper `name` on scalars of LLVM type `ty` (`float`, `double`).
    pub(super) fn call_typed(&mut self, name: &str, ty: &str, args: &[&str]) -> String {
        let params = vec![ty; args.len()].join(", ");
        self.decls.insert(format!("declare {ty} @{name}({params})"));
        let list: Vec<String> = args.iter().map(|a| format!("{ty} {a}")).collect();
        self.ins(format!("call {ty} @{name}({})", list.join(", ")))
    }

    /// Scalar float constant `v` of dtype `d` (f32 or f64) at the current lanes.
    fn fconst(&mut self, v: f64, d: DType) -> String {
        if d == DType::F64 {
            self.splat_scalar(&double_literal(v), "double")
        } else {
            self.splat_scalar(&float_literal(v as f32), "float")
        }
    }

    /// A unary function without an inline form on the CPU: the reference's, via a helper.
    fn unary_helper(&mut self, f: UnaryFn, x: &str, d: DType) -> Option<String> {
        let (name, ty) = match d {
            DType::F64 => (super::helpers64::unary(f)?, "double"),
            _ => (libcalls::unary(f)?, "float"),
        };
        (self.lanes == 1).then(|| self.call_typed(name, ty, &[x]))
    }

    /// The key under which a load is cached: its node, the lanes, and the tile offsets of
    /// the axes it depends on.
    fn load_key(&self, e: &Expr, index: &Affine, guards: &[KGuard]) -> LoadKey {
        let uses = |a: usize| {
            index.coefs.get(a).is_some_and(|&c| c != 0) || guards.iter().any(|g| g.expr.coefs.get(a).is_some_and(|&c| c != 0))
        };
        let offs = self.offsets.iter().enumerate().map(|(a, &o)| if uses(a) { o } else { 0 }).collect();
        (std::ptr::from_ref(e) as usize, self.lanes, offs)
    }

    /// A load (`e` is an [`Expr::Load`]) at the current lanes.
    fn load_expr(&mut self, e: &Expr) -> Result<Val> {
        let Expr::Load { buf, index, guards, pad } = e else {
            return Err(self.invalid("load_expr of a non-load"));
        };
        if self.lanes > 1 {
            return Ok((self.vector_load(e, *buf, index, guards)?, DType::F32));
        }
        let d = self.dtype_of(e)?;
        let ty = self.scalar_ty(d)?;
        let numel = self.k.inputs[*buf].numel;
        self.check_coefs(index)?;
        let cond = self.guards(guards)?;
        let padv = self.constant(*pad, d)?;
        if numel == 0 {
            // Nothing can be read: every point must be padding.
            let Some(c) = cond else {
                return Err(self.invalid(format!("a load from empty buffer {buf}")));
            };
            let bad = self.ins(format!("xor i1 {c}, true"));
            self.check(&bad, RuntimeError::LoadOutOfBounds);
            return Ok((padv, d));
        }
        let idx = self.affine(index)?;
        let (idx, range) = match &cond {
            None => (idx, self.range(index)),
            // Where the guards fail the index is 0; where they hold, within their interval.
            Some(c) => {
                let range = ir::kernel::guarded_in_bounds(self.k, index, guards, numel).then_some((0, numel as i128 - 1));
                (self.ins(format!("select i1 {c}, i64 {idx}, i64 0")), range)
            }
        };
        let v = self.load(*buf, &idx, range)?;
        Ok(match cond {
            None => (v, d),
            Some(c) => (self.ins(format!("select i1 {c}, {ty} {v}, {ty} {padv}")), d),
        })
    }

    /// The constant mask of the valid lanes of a partial vector (`None` for a full one).
    pub(super) fn valid_mask(&self) -> Option<String> {
        (self.valid < self.lanes).then(|| {
            let items: Vec<&str> = (0..self.lanes).map(|l| if l < self.valid { "i1 true" } else { "i1 false" }).collect();
            format!("<{}>", items.join(", "))
        })
    }

    /// `<lanes x ty>` of `x + lane * step` for every lane (`x` a `ty`, an integer type).
    fn lane_affine(&mut self, x: &str, step: i64, ty: &str) -> String {
        let n = self.lanes;
        let base = self.splat_scalar(x, ty);
        if step == 0 {
            return base;
        }
        let items: Vec<String> = (0..n).map(|l| format!("{ty} {}", l * step)).collect();
        self.ins(format!("add <{n} x {ty}> {base}, <{}>", items.join(", ")))
    }

    /// `a and b` of two optional masks of the current lanes (`None`: every lane).
    fn and_mask(&mut self, a: Option<String>, b: Option<String>) -> Option<String> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let ty = self.shaped("i1");
                Some(self.ins(format!("and {ty} {a}, {b}")))
            }
            (a, b) => a.or(b),
        }
    }

    /// The lanes (a `<lanes x i1>`, `None` when all) whose guards hold, from the current
    /// point (lane 0) along the vector axis `v`.
    fn guard_mask(&mut self, guards: &[KGuard], v: usize) -> Result<Option<String>> {
        let mut mask = None;
        for g in guards {
            self.check_coefs(&g.expr)?;
            let c = match self.range(&g.expr) {
                Some((lo, hi)) if lo >= 0 && hi < i128::from(g.bound) => continue,
                Some((lo, hi)) if g.bound <= 0 || hi < 0 || lo >= i128::from(g.bound) => "zeroinitializer".to_string(),
                range => {
                    let x = self.affine(&g.expr)?;
                    let step = g.expr.coefs.get(v).copied().unwrap_or(0);
                    let n = self.lanes;
                    // In i32 lanes (twice as many per register) where the guard's values
                    // fit: |x| < 2^30 and lanes·|step| < 2^26, so no lane wraps.
                    let narrow = matches!(range, Some((lo, hi)) if lo > -(1 << 30) && hi < (1 << 30))
                        && step.abs() < (1 << 20)
                        && g.bound < (1 << 30);
                    let ty = if narrow { "i32" } else { "i64" };
                    let x = if narrow { self.ins(format!("trunc i64 {x} to i32")) } else { x };
                    let xs = self.lane_affine(&x, step, ty);
                    let bound = self.splat_scalar(&g.bound.to_string(), ty);
                    self.ins(format!("icmp ult <{n} x {ty}> {xs}, {bound}"))
                }
            };
            mask = self.and_mask(mask, Some(c));
        }
        Ok(mask)
    }

    /// A vector load along the vector axis. A load constant along it (index and guards) is
    /// one scalar load, broadcast. Otherwise guards and index are affine in the lane, so
    /// the first and last valid lanes decide whether every lane is in bounds: then one
    /// vector load (index coefficient 1), one wide load and a shuffle (a small stride) or
    /// one scalar load per lane (a larger or negative stride); else one
    /// masked load (or gather) of the lanes whose guards hold, the others the pad, once
    /// every such lane's index is checked inside the buffer. Lanes past `valid` are neither
    /// read nor checked.
    fn vector_load(&mut self, e: &Expr, buf: usize, index: &Affine, guards: &[KGuard]) -> Result<String> {
        let lanes = self.lanes;
        let v = self.vec_axis.ok_or_else(|| self.invalid("a vector load without a vector axis"))?;
        let coef = |a: &Affine| a.coefs.get(v).copied().unwrap_or(0);
        let cv = coef(index);
        if cv == 0 && guards.iter().all(|g| coef(&g.expr) == 0) {
            self.lanes = 1;
            let scalar = self.expr(e);
            self.lanes = lanes;
            let (x, _) = scalar?;
            return Ok(self.splat_scalar(&x, "float"));
        }
        let pad = match e {
            Expr::Load { pad, .. } => *pad,
            _ => 0.0,
        };
        let numel = self.k.inputs[buf].numel;
        let in_bounds = matches!(self.range(index), Some((lo, hi)) if lo >= 0 && hi < numel as i128)
            || ir::kernel::guarded_in_bounds(self.k, index, guards, numel);
        let mut ok: Option<String> = None;
        let origin = self.offsets[v];
        for lane in [0, self.valid - 1] {
            self.offsets[v] = origin + lane;
            let mut conds = Vec::new();
            if let Some(c) = self.guards(guards)? {
                conds.push(c);
            }
            if !in_bounds {
                let idx = self.affine(index)?;
                conds.push(self.ins(format!("icmp ult i64 {idx}, {numel}")));
            }
            for c in conds {
                ok = Some(match ok {
                    None => c,
                    Some(p) => self.ins(format!("and i1 {p}, {c}")),
                });
            }
        }
        self.offsets[v] = origin;
        let vty = self.shaped("float");
        let n = lanes;
        let valid = self.valid_mask();
        let (fast_block, merge) = (self.block("fast"), self.block("merge"));
        let mut incoming = Vec::new();
        if let Some(ok) = ok {
            let slow_block = self.block("slow");
            self.branch(&ok, &fast_block, &slow_block);
            self.start(&slow_block);
            let guard = self.guard_mask(guards, v)?;
            let mask = self.and_mask(guard, valid.clone());
            let mask = mask.unwrap_or_else(|| format!("<{}>", vec!["i1 true"; n as usize].join(", ")));
            let idx = self.affine(index)?;
            let idxs = self.lane_affine(&idx, cv, "i64");
            if !in_bounds {
                let limit = self.splat_scalar(&numel.to_string(), "i64");
                let out = self.ins(format!("icmp uge <{n} x i64> {idxs}, {limit}"));
                let bad = self.ins(format!("and <{n} x i1> {out}, {mask}"));
                self.decls.insert(format!("declare i1 @llvm.vector.reduce.or.v{n}i1(<{n} x i1>)"));
                let any = self.ins(format!("call i1 @llvm.vector.reduce.or.v{n}i1(<{n} x i1> {bad})"));
                self.check(&any, RuntimeError::LoadOutOfBounds);
            }
            let padv = self.splat_scalar(&float_literal(pad as f32), "float");
            let base = self.bases[buf].clone();
            let masked = if cv == 1 {
                let addr = self.ins(format!("getelementptr float, ptr {base}, i64 {idx}"));
                self.decls.insert(format!("declare {vty} @llvm.masked.load.v{n}f32.p0(ptr, i32 immarg, <{n} x i1>, {vty})"));
                self.ins(format!("call {vty} @llvm.masked.load.v{n}f32.p0(ptr {addr}, i32 4, <{n} x i1> {mask}, {vty} {padv})"))
            } else if (2..=MAX_SHUFFLED_STRIDE).contains(&cv) {
                // As the fast path's wide load, each lane's mask bit at its element.
                let wide = n * cv;
                let wty = format!("<{wide} x float>");
                let spread: Vec<String> = (0..wide).map(|e| format!("i32 {}", if e % cv == 0 { e / cv } else { n })).collect();
                let wmask = self.ins(format!("shufflevector <{n} x i1> {mask}, <{n} x i1> zeroinitializer, <{wide} x i32> <{}>", spread.join(", ")));
                let addr = self.ins(format!("getelementptr float, ptr {base}, i64 {idx}"));
                let wpad = format!("<{}>", vec![format!("float {}", float_literal(pad as f32)); wide as usize].join(", "));
                self.decls.insert(format!("declare {wty} @llvm.masked.load.v{wide}f32.p0(ptr, i32 immarg, <{wide} x i1>, {wty})"));
                let all = self.ins(format!("call {wty} @llvm.masked.load.v{wide}f32.p0(ptr {addr}, i32 4, <{wide} x i1> {wmask}, {wty} {wpad})"));
                let picks: Vec<String> = (0..n).map(|l| format!("i32 {}", l * cv)).collect();
                self.ins(format!("shufflevector {wty} {all}, {wty} poison, <{n} x i32> <{}>", picks.join(", ")))
            } else {
                let ptrs = self.ins(format!("getelementptr float, ptr {base}, <{n} x i64> {idxs}"));
                self.decls.insert(format!("declare {vty} @llvm.masked.gather.v{n}f32.v{n}p0(<{n} x ptr>, i32 immarg, <{n} x i1>, {vty})"));
                self.ins(format!("call {vty} @llvm.masked.gather.v{n}f32.v{n}p0(<{n} x ptr> {ptrs}, i32 4, <{n} x i1> {mask}, {vty} {padv})"))
            };
            let slow_end = self.block("slowend");
            self.jump(&slow_end);
            self.start(&slow_end);
            self.jump(&merge);
            incoming.push((masked, slow_end));
        } else {
            self.jump(&fast_block);
        }
        self.start(&fast_block);
        let idx = self.affine(index)?;
        let fast = match (cv, &valid) {
            (1, None) => {
                let addr = self.address(buf, &idx, DType::F32);
                self.ins(format!("load {vty}, ptr {addr}, align 4"))
            }
            (1, Some(mask)) => {
                let addr = self.address(buf, &idx, DType::F32);
                self.decls.insert(format!("declare {vty} @llvm.masked.load.v{n}f32.p0(ptr, i32 immarg, <{n} x i1>, {vty})"));
                self.ins(format!("call {vty} @llvm.masked.load.v{n}f32.p0(ptr {addr}, i32 4, <{n} x i1> {mask}, {vty} zeroinitializer)"))
            }
            (2..=MAX_SHUFFLED_STRIDE, _) => {
                // `lanes x cv` consecutive floats from the first lane's, those past the last
                // valid lane's masked off (they may lie past the buffer), then every cv-th.
                let wide = n * cv;
                let wty = format!("<{wide} x float>");
                let addr = self.address(buf, &idx, DType::F32);
                let reach = (self.valid - 1) * cv;
                let mask: Vec<&str> = (0..wide).map(|e| if e <= reach { "i1 true" } else { "i1 false" }).collect();
                self.decls.insert(format!("declare {wty} @llvm.masked.load.v{wide}f32.p0(ptr, i32 immarg, <{wide} x i1>, {wty})"));
                let all = self.ins(format!(
                    "call {wty} @llvm.masked.load.v{wide}f32.p0(ptr {addr}, i32 4, <{wide} x i1> <{}>, {wty} zeroinitializer)",
                    mask.join(", ")
                ));
                let picks: Vec<String> = (0..n).map(|l| format!("i32 {}", l * cv)).collect();
                self.ins(format!("shufflevector {wty} {all}, {wty} poison, <{n} x i32> <{}>", picks.join(", ")))
            }
            _ => {
                let mut vec = "zeroinitializer".to_string();
                for lane in 0..self.valid {
                    let i = self.ins(format!("add i64 {idx}, {}", lane * cv));
                    let addr = self.address(buf, &i, DType::F32);
                    let s = self.ins(format!("load float, ptr {addr}, align 4"));
                    vec = self.ins(format!("insertelement {vty} {vec}, float {s}, i64 {lane}"));
                }
                vec
            }
        };
        let fast_end = self.block("fastend");
        self.jump(&fast_end);
        self.start(&fast_end);
        self.jump(&merge);
        incoming.push((fast, fast_end));
        self.start(&merge);
        let arms: Vec<String> = incoming.iter().map(|(v, b)| format!("[ {v}, %{b} ]")).collect();
        Ok(self.ins(format!("phi {vty} {}", arms.join(", "))))
    }

    pub(super) fn expr(&mut self, e: &Expr) -> Result<Val> {
        match e {
            Expr::Load { index, guards, .. } => {
                let key = self.load_key(e, index, guards);
                if self.cache_on
                    && let Some(v) = self.cache.get(&key)
                {
                    return Ok(v.clone());
                }
                let v = match &self.packed {
                    Some(p) if p.node == std::ptr::from_ref(e) as usize && p.panel.is_some() => self.packed_load()?,
                    _ => self.load_expr(e)?,
                };
                if self.cache_on {
                    self.cache.insert(key, v.clone());
                }
                Ok(v)
            }
            Expr::Gather { buf, index, stride, extent, pos } => {
                let d = self.dtype_of(e)?;
                let (p, pd) = self.expr(pos)?;
                let p = match pd {
                    DType::I64 => p,
                    DType::I32 => self.ins(format!("sext i32 {p} to i64")),
                    _ => return Err(self.invalid(format!("a Gather position of dtype {pd}"))),
                };
                let bad = if *extent <= 0 { "true".to_string() } else { self.ins(format!("icmp uge i64 {p}, {extent}")) };
                self.check(&bad, RuntimeError::GatherOutOfRange);
                let base = self.affine(index)?;
                let off = self.ins(format!("mul i64 {p}, {stride}"));
                let idx = self.ins(format!("add i64 {base}, {off}"));
                let range = self.range(index).map(|(lo, hi)| {
                    let span = i128::from(*stride) * i128::from(extent.saturating_sub(1).max(0));
                    if span < 0 { (lo + span, hi) } else { (lo, hi + span) }
                });
                if self.k.inputs[*buf].numel == 0 {
                    return Err(self.invalid(format!("a Gather from empty buffer {buf}")));
                }
                Ok((self.load(*buf, &idx, range)?, d))
            }
            Expr::Const { value, dtype } => {
                let c = self.constant(*value, *dtype)?;
                Ok((self.splat(&c, *dtype)?, *dtype))
            }
            Expr::Axis(a) => {
                if *a >= self.live {
                    return Err(self.invalid(format!("Axis({a}) where only {} axes are live", self.live)));
                }
                let slot = self.axes[*a].clone();
                let i = self.read("i64", &slot);
                Ok(match self.offsets[*a] {
                    0 => (i, DType::I64),
                    o => (self.ins(format!("add i64 {i}, {o}")), DType::I64),
                })
            }
            Expr::Acc => self.acc.clone().ok_or_else(|| self.invalid("Acc outside an epilogue")),
            Expr::Unary(f, x) => {
                let (x, d) = self.expr(x)?;
                self.unary(*f, &x, d)
            }
            Expr::Binary(f, a, b) => {
                let (a, da) = self.expr(a)?;
                let (b, db) = self.expr(b)?;
                if da != db {
                    return Err(self.invalid(format!("Binary {} of {da} and {db}", f.name())));
                }
                self.binary(*f, &a, &b, da)
            }
            Expr::Select(c, a, b) => {
                let (c, dc) = self.expr(c)?;
                let (a, da) = self.expr(a)?;
                let (b, db) = self.expr(b)?;
                if dc != DType::Bool || da != db {
                    return Err(self.invalid(format!("Select on {dc} of {da} and {db}")));
                }
                Ok((self.pick(&c, &a, &b, da)?, da))
            }
            Expr::Cast(to, x) => {
                let (x, from) = self.expr(x)?;
                Ok((self.cast(&x, from, *to)?, *to))
            }
        }
    }

    pub(super) fn unary(&mut self, f: UnaryFn, x: &str, d: DType) -> Result<Val> {
        let unsupported =
            |s: &Self| s.unsupported(format!("Unary {} on {d} is not supported by the LLVM backend yet", f.name()));
        let ty = self.ty(d)?;
        let v = match d {
            DType::F32 | DType::F64 => match f {
                UnaryFn::Neg => self.ins(format!("fneg {ty} {x}")),
                UnaryFn::Abs => self.intrinsic("fabs", &ty, &[x]),
                UnaryFn::Sqrt => self.intrinsic("sqrt", &ty, &[x]),
                UnaryFn::Recip => {
                    let one = self.fconst(1.0, d);
                    self.ins(format!("fdiv {ty} {one}, {x}"))
                }
                UnaryFn::Floor => self.intrinsic("floor", &ty, &[x]),
                UnaryFn::Ceil => self.intrinsic("ceil", &ty, &[x]),
                UnaryFn::Round => self.intrinsic("roundeven", &ty, &[x]),
                UnaryFn::IsNaN => return Ok((self.ins(format!("fcmp uno {ty} {x}, {x}")), DType::Bool)),
                UnaryFn::Sign => {
                    // `v > 0 ? 1 : v < 0 ? -1 : v` (keeps -0 and NaN).
                    let zero = self.fconst(0.0, d);
                    let one = self.fconst(1.0, d);
                    let minus = self.fconst(-1.0, d);
                    let gt = self.ins(format!("fcmp ogt {ty} {x}, {zero}"));
                    let lt = self.ins(format!("fcmp olt {ty} {x}, {zero}"));
                    let inner = self.pick(&lt, &minus, x, d)?;
                    self.pick(&gt, &one, &inner, d)?
                }
                _ if d == DType::F64 => {
                    let v = if self.device { dmath::unary64(self, f, x) } else { self.unary_helper(f, x, d) };
                    v.ok_or_else(|| unsupported(self))?
                }
                _ => match vmath::emit(self, f, x) {
                    // On the GPU the polynomial reduces large arguments itself.
                    Some(v) if matches!(f, UnaryFn::Sin | UnaryFn::Cos | UnaryFn::Tan) && !self.device => {
                        self.large_argument_fallback(f, x, &v)?
                    }
                    Some(v) => v,
                    None => {
                        let v = if self.device { dmath::unary32(self, f, x) } else { self.unary_helper(f, x, d) };
                        v.ok_or_else(|| unsupported(self))?
                    }
                },
            },
            DType::I64 | DType::I32 => match f {
                UnaryFn::Neg => self.ins(format!("sub {ty} 0, {x}")),
                UnaryFn::Abs => {
                    let s = self.scalar_ty(d)?;
                    self.decls.insert(format!("declare {s} @llvm.abs.{s}({s}, i1)"));
                    self.ins(format!("call {s} @llvm.abs.{s}({s} {x}, i1 false)"))
                }
                UnaryFn::BitNot => self.ins(format!("xor {ty} {x}, -1")),
                UnaryFn::Sign => {
                    let gt = self.ins(format!("icmp sgt {ty} {x}, 0"));
                    let lt = self.ins(format!("icmp slt {ty} {x}, 0"));
                    let inner = self.pick(&lt, "-1", "0", d)?;
                    self.pick(&gt, "1", &inner, d)?
                }
                _ => return Err(unsupported(self)),
            },
            DType::Bool => match f {
                UnaryFn::Not => self.ins(format!("xor {ty} {x}, true")),
                _ => return Err(unsupported(self)),
            },
            _ => return Err(unsupported(self)),
        };
        Ok((v, d))
    }

    pub(super) fn binary(&mut self, f: BinaryFn, a: &str, b: &str, d: DType) -> Result<Val> {
        let unsupported =
            |s: &Self| s.unsupported(format!("Binary {} on {d} is not supported by the LLVM backend yet", f.name()));
        let ty = self.ty(d)?;
        if f.is_comparison() {
            let v = if matches!(d, DType::F32 | DType::F64) {
                let cc = match f {
                    BinaryFn::Eq => "oeq",
                    BinaryFn::Lt => "olt",
                    BinaryFn::Le => "ole",
                    BinaryFn::Gt => "ogt",
                    _ => "oge",
                };
                self.ins(format!("fcmp {cc} {ty} {a}, {b}"))
            } else if is_int(d) || (d == DType::Bool && f == BinaryFn::Eq) {
                let cc = match f {
                    BinaryFn::Eq => "eq",
                    BinaryFn::Lt => "slt",
                    BinaryFn::Le => "sle",
                    BinaryFn::Gt => "sgt",
                    _ => "sge",
                };
                self.ins(format!("icmp {cc} {ty} {a}, {b}"))
            } else {
                return Err(unsupported(self));
            };
            return Ok((v, DType::Bool));
        }
        let v = match d {
            DType::F32 | DType::F64 => match f {
                BinaryFn::Add => self.ins(format!("fadd {ty} {a}, {b}")),
                BinaryFn::Sub => self.ins(format!("fsub {ty} {a}, {b}")),
                BinaryFn::Mul => self.ins(format!("fmul {ty} {a}, {b}")),
                BinaryFn::Div => self.ins(format!("fdiv {ty} {a}, {b}")),
                // NaN-propagating, first operand on ties: the reference's
                // `if a.is_nan() || (!b.is_nan() && a >= b) { a } else { b }`.
                BinaryFn::Max | BinaryFn::Min => {
                    let cc = if f == BinaryFn::Max { "oge" } else { "ole" };
                    let nan = self.ins(format!("fcmp uno {ty} {a}, {a}"));
                    let ord = self.ins(format!("fcmp {cc} {ty} {a}, {b}"));
                    let cty = self.shaped("i1");
                    let take = self.ins(format!("or {cty} {nan}, {ord}"));
                    self.pick(&take, a, b, d)?
                }
                _ if self.device => dmath::binary(self, f, a, b, d).ok_or_else(|| unsupported(self))?,
                _ => {
                    let helper = if d == DType::F64 { super::helpers64::binary(f) } else { libcalls::binary(f) };
                    match helper {
                        Some(name) if self.lanes == 1 => self.call_typed(name, &ty, &[a, b]),
                        _ => return Err(unsupported(self)),
                    }
                }
            },
            DType::I64 | DType::I32 => match f {
                BinaryFn::Add => self.ins(format!("add {ty} {a}, {b}")),
                BinaryFn::Sub => self.ins(format!("sub {ty} {a}, {b}")),
                BinaryFn::Mul => self.ins(format!("mul {ty} {a}, {b}")),
                BinaryFn::Max => self.intrinsic("smax", &ty, &[a, b]),
                BinaryFn::Min => self.intrinsic("smin", &ty, &[a, b]),
                BinaryFn::BitAnd => self.ins(format!("and {ty} {a}, {b}")),
                BinaryFn::BitOr => self.ins(format!("or {ty} {a}, {b}")),
                BinaryFn::BitXor => self.ins(format!("xor {ty} {a}, {b}")),
                BinaryFn::Div | BinaryFn::Mod | BinaryFn::Fmod => self.int_div(f, a, b, &ty)?,
                _ => return Err(unsupported(self)),
            },
            DType::Bool => match f {
                BinaryFn::And => self.ins(format!("and {ty} {a}, {b}")),
                BinaryFn::Or => self.ins(format!("or {ty} {a}, {b}")),
                BinaryFn::Xor => self.ins(format!("xor {ty} {a}, {b}")),
                _ => return Err(unsupported(self)),
            },
            _ => return Err(unsupported(self)),
        };
        Ok((v, d))
    }

    /// Integer Div (truncating), Fmod (sign of the dividend) and Mod (sign of the divisor),
    /// wrapping like the reference (`MIN / -1 = MIN`); a zero divisor is a run-time error.
    fn int_div(&mut self, f: BinaryFn, a: &str, b: &str, ty: &str) -> Result<String> {
        let is_zero = self.ins(format!("icmp eq {ty} {b}, 0"));
        self.check(&is_zero, RuntimeError::DivisionByZero);
        let is_minus = self.ins(format!("icmp eq {ty} {b}, -1"));
        // Divide by 1 instead of -1 (MIN / -1 overflows), then fix up.
        let safe = self.ins(format!("select i1 {is_minus}, {ty} 1, {ty} {b}"));
        Ok(match f {
            BinaryFn::Div => {
                let q = self.ins(format!("sdiv {ty} {a}, {safe}"));
                let neg = self.ins(format!("sub {ty} 0, {a}"));
                self.ins(format!("select i1 {is_minus}, {ty} {neg}, {ty} {q}"))
            }
            BinaryFn::Fmod => self.ins(format!("srem {ty} {a}, {safe}")),
            _ => {
                let r = self.ins(format!("srem {ty} {a}, {safe}"));
                let r_nz = self.ins(format!("icmp ne {ty} {r}, 0"));
                let r_neg = self.ins(format!("icmp slt {ty} {r}, 0"));
                let b_neg = self.ins(format!("icmp slt {ty} {b}, 0"));
                let signs = self.ins(format!("xor i1 {r_neg}, {b_neg}"));
                let fix = self.ins(format!("and i1 {r_nz}, {signs}"));
                let fixed = self.ins(format!("add {ty} {r}, {b}"));
                self.ins(format!("select i1 {fix}, {ty} {fixed}, {ty} {r}"))
            }
        })
    }

    /// Casts with the reference's semantics: float to int truncates and saturates (NaN to
    /// 0), int to int wraps, anything to bool is `!= 0` (NaN is true).
    pub(super) fn cast(&mut self, x: &str, from: DType, to: DType) -> Result<String> {
        let tt = self.ty(to)?;
        let ft = self.ty(from)?;
        Ok(match (from, to) {
            _ if from == to => x.to_string(),
            (DType::F32 | DType::F64, DType::I64 | DType::I32) => {
                let s = self.scalar_ty(to)?;
                let (fs, fm) = if from == DType::F64 { ("double", "f64") } else { ("float", "f32") };
                self.decls.insert(format!("declare {s} @llvm.fptosi.sat.{s}.{fm}({fs})"));
                self.ins(format!("call {s} @llvm.fptosi.sat.{s}.{fm}({fs} {x})"))
            }
            (DType::F32, DType::Bool) => self.ins(format!("fcmp une {ft} {x}, {}", float_literal(0.0))),
            (DType::F64, DType::Bool) => self.ins(format!("fcmp une {ft} {x}, {}", double_literal(0.0))),
            (DType::F32, DType::F64) => self.ins(format!("fpext {ft} {x} to {tt}")),
            (DType::F64, DType::F32) => self.ins(format!("fptrunc {ft} {x} to {tt}")),
            (DType::I64 | DType::I32, DType::F32 | DType::F64) => self.ins(format!("sitofp {ft} {x} to {tt}")),
            (DType::I64, DType::I32) => self.ins(format!("trunc {ft} {x} to {tt}")),
            (DType::I32, DType::I64) => self.ins(format!("sext {ft} {x} to {tt}")),
            (DType::I64 | DType::I32, DType::Bool) => self.ins(format!("icmp ne {ft} {x}, 0")),
            (DType::Bool, DType::F32 | DType::F64) => self.ins(format!("uitofp {ft} {x} to {tt}")),
            (DType::Bool, _) => self.ins(format!("zext {ft} {x} to {tt}")),
            _ => return Err(self.unsupported(format!("Cast {from} to {to} is not supported by the LLVM backend yet"))),
        })
    }
}

/// The overloaded-intrinsic suffix of an LLVM type: `float` -> `f32`, `<16 x float>` ->
/// `v16f32`, `i64` -> `i64`.
fn mangle(ty: &str) -> String {
    let elem = |s: &str| match s {
        "float" => "f32".to_string(),
        "double" => "f64".to_string(),
        _ => s.to_string(),
    };
    match ty.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
        Some(inner) => {
            let (n, s) = inner.split_once(" x ").unwrap_or(("1", inner));
            format!("v{n}{}", elem(s))
        }
        None => elem(ty),
    }
}
