//! One compiled kernel run alone on buffers it owns, filled with seeded data: what the
//! tuner measures and compares. The parallel range is split over a [`ThreadPool`] exactly
//! as [`crate::Executable`] splits it.

use crate::exec::Error;
use crate::ffi::{self, Ptrs};
use crate::pool::ThreadPool;
use codegen::NativeKernel;
use ir::DType;
use ir::kernel::Kernel;

/// One 64-byte aligned line of a buffer.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// The input and output buffers of one kernel.
pub struct KernelBuffers {
    /// Inputs, then the output; each at least its buffer's bytes.
    data: Vec<Vec<Line>>,
    dtypes: Vec<DType>,
    table: Ptrs,
    /// Output points and reduction points, for the split of the parallel range.
    output_bytes: usize,
}

impl std::fmt::Debug for KernelBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelBuffers").field("buffers", &self.data.len()).finish_non_exhaustive()
    }
}

impl KernelBuffers {
    /// Zeroed buffers for `k`'s inputs and output.
    pub fn new(k: &Kernel) -> Result<KernelBuffers, Error> {
        let mut data = Vec::new();
        let mut lens = Vec::new();
        let mut dtypes = Vec::new();
        for b in k.inputs.iter().chain([&k.output]) {
            let bytes = b.numel.checked_mul(b.dtype.size()).ok_or_else(|| {
                ir::Error::InvalidModel(format!("kernel '{}': buffer '{}' is too large", k.name, b.name))
            })?;
            data.push(vec![Line([0; 64]); bytes.div_ceil(64)]);
            lens.push(bytes);
            dtypes.push(b.dtype);
        }
        let output_bytes = lens.last().copied().unwrap_or(0);
        Ok(KernelBuffers { data, dtypes, table: Ptrs::new(lens), output_bytes })
    }

    /// Fills the inputs: floats uniform in [-1, 1) from `seed`, every other dtype zero (a
    /// valid index for any gather).
    pub fn fill(&mut self, seed: u64) {
        self.table.set_prepared(None);
        let mut state = seed;
        let inputs = self.data.len().saturating_sub(1);
        for (buf, &dtype) in self.data.iter_mut().zip(&self.dtypes).take(inputs) {
            for line in buf.iter_mut() {
                for word in line.0.chunks_exact_mut(4) {
                    let v = if dtype == DType::F32 { (2.0 * next_unit(&mut state) - 1.0) as f32 } else { 0.0 };
                    word.copy_from_slice(&v.to_ne_bytes());
                }
            }
        }
    }

    /// A copy of the output's bytes (after a run).
    pub fn output(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.data.last().into_iter().flatten().flat_map(|l| l.0).collect();
        out.truncate(self.output_bytes);
        out
    }

    /// Runs `jit` (compiled from `k` with some schedule) over its whole parallel range on
    /// `pool`, split as the executable splits it, with the data it prepares from the inputs
    /// (as the executable prepares it from constant weights, once).
    pub fn run(&mut self, k: &Kernel, jit: &dyn NativeKernel, pool: &ThreadPool) -> Result<(), Error> {
        for (p, buf) in self.table.ptrs.iter_mut().zip(self.data.iter_mut()) {
            *p = buf.as_mut_ptr().cast::<u8>();
        }
        if self.table.prepared.is_none() {
            let inputs = self.data.len().saturating_sub(1);
            let (data, lens) = (&self.data, &self.table.lens);
            let constant = |i: usize| -> Option<Vec<u8>> {
                let bytes: Vec<u8> = data.get(i).filter(|_| i < inputs)?.iter().flat_map(|l| l.0).take(*lens.get(i)?).collect();
                Some(bytes)
            };
            let prepared = jit.prepare(&constant);
            self.table.set_prepared(prepared);
        }
        let extent = jit.parallel_extent();
        let grain = search::cost::share_grain(k, extent);
        let table = &self.table;
        pool.run(extent, grain, |begin, end| ffi::call(jit, table, begin, end))?;
        Ok(())
    }
}

/// SplitMix64 as a uniform number in [0, 1).
fn next_unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}
