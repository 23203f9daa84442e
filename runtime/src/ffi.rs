//! The only unsafe code of the runtime: calling compiled kernels on raw buffer pointers,
//! copying bytes between buffers and tensors, and lending a borrowed closure to the pool's
//! worker threads. Each function states what its callers in this crate guarantee.
#![allow(unsafe_code)]

use codegen::NativeKernel;
use ir::{DType, Tensor};

/// The buffer pointers of one kernel call: its inputs' base addresses, then its output's,
/// then its prepared data or null (the kernel ABI's `buffers` argument), with the byte
/// length each buffer must be valid for.
///
/// Built and patched only by `exec` and `standalone`, which set every slot to the start of a region of at
/// least `lens[i]` bytes that lives as long as the run: an arena slice (the arena is owned
/// by the executable and never reallocated), a weight (an `Arc<Tensor>` held by its graph),
/// or a caller's input or output tensor (borrowed for the whole `run_into`); `standalone`
/// points every slot at a buffer it owns, set again before each run. The memory
/// plan never places a step's output over one of its inputs.
#[derive(Debug)]
pub(crate) struct Ptrs {
    /// One per buffer, then the prepared slot.
    pub ptrs: Vec<*mut u8>,
    /// One per buffer.
    pub lens: Vec<usize>,
    /// What the prepared slot points at: [`NativeKernel::prepare`]'s data for the constant
    /// inputs the buffer slots hold, owned here so that it lives as long as the table.
    pub prepared: Option<Box<[f32]>>,
}

impl Ptrs {
    /// A table of `lens.len()` null buffer slots and a null prepared slot.
    pub fn new(lens: Vec<usize>) -> Ptrs {
        Ptrs { ptrs: vec![std::ptr::null_mut(); lens.len() + 1], lens, prepared: None }
    }

    /// Sets the prepared slot to `data` (null for `None`).
    pub fn set_prepared(&mut self, data: Option<Box<[f32]>>) {
        self.prepared = data;
        let at = self.lens.len();
        if let Some(slot) = self.ptrs.get_mut(at) {
            *slot = self.prepared.as_mut().map_or(std::ptr::null_mut(), |d| d.as_mut_ptr().cast::<u8>());
        }
    }
}

// SAFETY: the pointers are plain addresses; every access through them happens in `call`,
// whose callers give threads disjoint shares of the output and only read the inputs.
unsafe impl Send for Ptrs {}
// SAFETY: as for `Send`: `&Ptrs` only reads the addresses.
unsafe impl Sync for Ptrs {}

// SAFETY: an `Executable` owns its arena and compiled kernels; its raw pointers are
// addresses into memory it owns (the arena, its graph's weights) or that a caller lends for
// one `run_into` (and rewrites at its start), so moving it to another thread moves nothing
// that another thread could still reach.
unsafe impl Send for crate::exec::Executable {}

/// Runs the share `begin..end` of `kernel` on the buffers of `table`.
///
/// Checks that the table has one slot per buffer and that each slot is at least the
/// buffer's byte length; the validity of the addresses is `Ptrs`' invariant. Calls running
/// at once on one table must have disjoint shares (the pool's static split).
pub(crate) fn call(kernel: &dyn NativeKernel, table: &Ptrs, begin: usize, end: usize) -> Result<(), codegen::Error> {
    let bad = |msg: String| codegen::Error::Internal { kernel: kernel.name().to_string(), msg };
    let buffers = kernel.inputs().iter().chain([kernel.output()]);
    if table.lens.len() != kernel.inputs().len() + 1 || table.ptrs.len() != table.lens.len() + 1 {
        return Err(bad(format!("{} pointers for {} buffers and the prepared slot", table.ptrs.len(), kernel.inputs().len() + 1)));
    }
    for (b, &len) in buffers.zip(&table.lens) {
        if b.numel.checked_mul(b.dtype.size()).is_none_or(|need| need > len) {
            return Err(bad(format!("buffer '{}' needs {} x {}, the runtime gave {len} bytes", b.name, b.numel, b.dtype)));
        }
    }
    // SAFETY: one pointer per buffer, each valid for the buffer's byte length for the
    // duration of the call (`Ptrs`' invariant, lengths checked above), then null or the
    // kernel's prepared data for the constants those slots hold (set only by
    // `set_prepared`, from them); the output does not overlap an input (memory plan);
    // concurrent calls have disjoint shares (the pool).
    unsafe { kernel.run_raw(table.ptrs.as_ptr(), begin, end) }
}

/// A tensor of `dtype` and `shape` holding a copy of the `len` bytes at `src`.
///
/// `src` must be valid for reading `len` bytes: an arena slice or a caller's buffer, as in
/// [`Ptrs`]. `len` must be the tensor's byte length (checked). Bools are read as bytes and
/// compared with 0, so no byte pattern is invalid.
pub(crate) fn read(src: *const u8, len: usize, dtype: DType, shape: Vec<usize>) -> ir::Result<Tensor> {
    let as_bytes = if dtype == DType::Bool { DType::U8 } else { dtype };
    let mut t = Tensor::zeros(as_bytes, shape)?;
    if t.byte_len() != len {
        return Err(ir::Error::Internal(format!("reading {len} bytes into a {dtype} tensor of {} bytes", t.byte_len())));
    }
    // SAFETY: `src` is valid for `len` bytes (caller), `t` owns exactly `len` bytes of
    // plain data of its dtype (any bit pattern is valid: bools were read as u8), and the
    // two do not overlap (`t` was just allocated).
    unsafe { std::ptr::copy_nonoverlapping(src, t.byte_ptr_mut(), len) };
    Ok(if dtype == DType::Bool { t.cast(DType::Bool) } else { t })
}

/// Copies the bytes of `t` to `dst`, which holds `len` bytes (checked against `t`).
///
/// `dst` must be valid for writing `len` bytes, not overlap `t`, and not be read or
/// written by anything else during the call: an arena slice or a caller's output, as in
/// [`Ptrs`].
pub(crate) fn write(t: &Tensor, dst: *mut u8, len: usize) -> ir::Result<()> {
    if t.byte_len() != len {
        return Err(ir::Error::Internal(format!("writing a {} tensor of {} bytes into {len} bytes", t.dtype(), t.byte_len())));
    }
    // SAFETY: `t` holds `len` readable bytes, `dst` is valid for `len` bytes (caller) and
    // distinct from `t`'s own allocation.
    unsafe { std::ptr::copy_nonoverlapping(t.byte_ptr(), dst, len) };
    Ok(())
}

/// A borrowed share runner `share index -> ()`, lent to the pool's workers with its
/// lifetime erased.
#[derive(Clone, Copy)]
pub(crate) struct Job(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the closure is `Sync`, so calling it from another thread through a shared
// pointer is allowed; the pointer's validity is the pool's obligation (see `Job::new`).
unsafe impl Send for Job {}

impl Job {
    /// Erases the lifetime of `f`. The pool that creates a job does not return (nor unwind)
    /// from its `run` before every worker that got the job has finished calling it, and
    /// workers drop the job when they are done; so no call outlives `f`.
    pub(crate) fn new(f: &(dyn Fn(usize) + Sync)) -> Job {
        let p: *const (dyn Fn(usize) + Sync + '_) = f;
        // SAFETY: only the lifetime changes (same fat-pointer layout); see above for why
        // the pointer is never used after `f` ends.
        Job(unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync + 'static)>(p) })
    }

    /// Runs share `i`.
    pub(crate) fn call(&self, i: usize) {
        // SAFETY: the closure is alive for as long as the job is dispatched (`Job::new`).
        unsafe { (*self.0)(i) }
    }
}
