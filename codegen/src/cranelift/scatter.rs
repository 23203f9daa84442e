//! Scatter kernels (`Body::Scatter`): the output starts as a copy of the data buffer, then
//! every point of the updates, in row-major order, writes (or combines) its value at
//! `index(o) + pos(o) * stride`. The position is checked against `[0, extent)` at run time
//! (a [`RuntimeError::ScatterOutOfRange`] return otherwise); the verifier has proven every
//! target in bounds for positions in that range. Points run one at a time, in order, on
//! one thread: the schedule of a scatter kernel is always naive.

use super::RuntimeError;
use super::lower::{Lower, Result};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_module::Module;
use ir::atom::ScatterMode;
use ir::dtype::DType;
use ir::kernel::{Affine, Expr};

/// What a scatter kernel does, from its body.
pub(super) struct Scatter<'e> {
    pub data: usize,
    pub mode: ScatterMode,
    pub index: &'e Affine,
    pub stride: i64,
    pub extent: i64,
    pub pos: &'e Expr,
    pub value: &'e Expr,
}

impl<M: Module> Lower<'_, '_, M> {
    /// The copy of the data buffer, then the update loop nest.
    pub(super) fn scatter(&mut self, s: &Scatter<'_>) -> Result<()> {
        let k = self.k;
        let out = k.inputs.len();
        let d = k.output.dtype;
        let data = k.inputs.get(s.data).ok_or_else(|| self.invalid("the scatter data buffer is not an input"))?;
        if data.dtype != d || data.numel != k.output.numel {
            return Err(self.invalid("the scatter data buffer differs from the output"));
        }
        let bytes = i64::try_from(k.output.numel * d.size()).map_err(|_| self.invalid("output too large"))?;
        self.copy_bytes(self.bases[s.data], self.bases[out], bytes)?;
        if self.extents.contains(&0) {
            return Ok(());
        }
        self.check_coefs(s.index)?;
        self.live = self.axes.len();
        self.cache_on = false;
        self.updates(s, 0)
    }

    /// The loops over the update axes from `axis` on, then one update.
    fn updates(&mut self, s: &Scatter<'_>, axis: usize) -> Result<()> {
        if axis < self.axes.len() {
            let zero = self.b.ins().iconst(types::I64, 0);
            let n = self.b.ins().iconst(types::I64, self.extents[axis]);
            return self.for_range(self.axes[axis], Some(zero), n, 1, &mut |l| l.updates(s, axis + 1));
        }
        let (p, pd) = self.expr(s.pos)?;
        if pd != DType::I64 {
            return Err(self.invalid(format!("the scatter position is {pd}, it must be i64")));
        }
        let (v, vd) = self.expr(s.value)?;
        let d = self.k.output.dtype;
        if vd != d {
            return Err(self.invalid(format!("scatters {vd} values into a {d} output")));
        }
        let bad = self.b.ins().icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, p, s.extent);
        self.check(bad, RuntimeError::ScatterOutOfRange);
        let base = self.affine(s.index)?;
        let shift = self.b.ins().imul_imm_s(p, s.stride);
        let idx = self.b.ins().iadd(base, shift);
        let addr = self.address(self.k.inputs.len(), idx, d);
        let ty = self.ty(d)?;
        let flags = MemFlagsData::new().with_notrap();
        let new = match s.mode {
            ScatterMode::Replace => v,
            mode => {
                let old = self.b.ins().load(ty, flags, addr, 0);
                self.scatter_combine(mode, d, old, v)?
            }
        };
        self.b.ins().store(flags, new, addr, 0);
        Ok(())
    }

    /// `old (mode) v` as the reference: add, multiply, or `v` when it is greater (smaller)
    /// than `old` (a NaN update keeps `old`).
    fn scatter_combine(&mut self, mode: ScatterMode, d: DType, old: Value, v: Value) -> Result<Value> {
        let float = d == DType::F32;
        Ok(match (mode, float) {
            (ScatterMode::Add, true) => self.b.ins().fadd(old, v),
            (ScatterMode::Mul, true) => self.b.ins().fmul(old, v),
            (ScatterMode::Add, false) => self.b.ins().iadd(old, v),
            (ScatterMode::Mul, false) => self.b.ins().imul(old, v),
            (ScatterMode::Max | ScatterMode::Min, true) => {
                let cc = if mode == ScatterMode::Max { FloatCC::GreaterThan } else { FloatCC::LessThan };
                let take = self.b.ins().fcmp(cc, v, old);
                self.b.ins().select(take, v, old)
            }
            (ScatterMode::Max | ScatterMode::Min, false) => {
                let cc = if mode == ScatterMode::Max { IntCC::SignedGreaterThan } else { IntCC::SignedLessThan };
                let take = self.b.ins().icmp(cc, v, old);
                self.b.ins().select(take, v, old)
            }
            (ScatterMode::Replace, _) => v,
        })
    }

    /// Copies `bytes` bytes from `src` to `dst` (8 at a time, then one at a time).
    fn copy_bytes(&mut self, src: Value, dst: Value, bytes: i64) -> Result<()> {
        let flags = MemFlagsData::new().with_notrap();
        for (width, ty) in [(8i64, types::I64), (1, types::I8)] {
            let start = bytes - bytes % 8;
            let (from, to) = if width == 8 { (0, start) } else { (start, bytes) };
            if from >= to {
                continue;
            }
            let i = self.b.declare_var(types::I64);
            let from = self.b.ins().iconst(types::I64, from);
            let to = self.b.ins().iconst(types::I64, to);
            self.for_range(i, Some(from), to, width, &mut |l| {
                let at = l.b.use_var(i);
                let s = l.b.ins().iadd(src, at);
                let t = l.b.ins().iadd(dst, at);
                let x = l.b.ins().load(ty, flags, s, 0);
                l.b.ins().store(flags, x, t, 0);
                Ok(())
            })?;
        }
        Ok(())
    }
}
