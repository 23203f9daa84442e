//! Winograd F(2x2, 3x3): the shape of a kernel that a [`crate::schedule::ScheduleStep::Winograd`]
//! schedule can run, and the transform constants.
//!
//! A 3x3 stride-1 convolution computes each 2x2 tile of outputs from a 4x4 tile of its input
//! `d` and the 3x3 filter `g` of every (output channel, input channel) pair as
//! `Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`: 16 multiplies per tile and channel pair where the direct
//! form takes 36 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
//! The transforms `Bᵀ d B` and `Aᵀ m A` take only additions and subtractions; `G g Gᵀ`
//! halves, which is exact. Results differ from the direct sum by rounding only (the
//! transforms reassociate the sums).
//!
//! [`WinogradConv::of`] recognizes the kernel IR of such a convolution: a Sum over reduction
//! axes `[C, 3, 3]` (input channel, window row, window column) of the product of two
//! unguarded loads, the input's advancing by the same stride along an output row and a
//! window row and contiguously along an output column and a window column, the weights'
//! along one more output axis (the output channel) and not along the pixels; every other
//! output axis has extent 1. Its epilogue is free (bias, activation, residual).

use crate::atom::{BinaryFn, ReduceFn};
use crate::dtype::DType;
use crate::kernel::{Body, Expr, Kernel};

/// Transformed-domain points per tile: 4 x 4.
pub const POINTS: usize = 16;

/// Output channels per micro-tile row block of the transformed-domain product (the code
/// generator's register tile): the output channels must be a multiple.
pub const CHANNEL_BLOCK: usize = 4;

/// Tiles per vector: the code generator runs 4 tiles (8 output columns) per f32x4.
pub const TILE_LANES: usize = 4;

/// The most bytes of scratch a Winograd kernel may take on the stack of the thread that
/// runs it: one block's transformed input (16 C T floats) and products (16 K T). (The
/// transformed filters, 16 K C floats, are prepared beforehand.)
pub const SCRATCH_LIMIT_BYTES: usize = 256 * 1024;

/// A 3x3 stride-1 convolution as [`WinogradConv::of`] found it in a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WinogradConv {
    /// Output axes: channel, row, column.
    pub k_axis: usize,
    pub y_axis: usize,
    pub x_axis: usize,
    /// Output channels, input channels, output rows and columns.
    pub k: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
    /// The input load: buffer, offset, stride per input channel and per row (its column
    /// stride is 1).
    pub input: usize,
    pub input_offset: i64,
    pub input_channel_stride: i64,
    pub input_row_stride: i64,
    /// The weight load: buffer and its index over (output channel, input channel, window
    /// row, window column).
    pub weights: usize,
    pub weight_offset: i64,
    pub weight_strides: [i64; 4],
}

impl WinogradConv {
    /// The convolution `k` computes, or why it is not one a Winograd schedule runs.
    pub fn of(k: &Kernel) -> Result<WinogradConv, String> {
        let Body::Compute { reduce: Some(ReduceFn::Sum), body: Expr::Binary(BinaryFn::Mul, a, b), .. } = &k.body else {
            return Err("not a sum of products".into());
        };
        if k.output.dtype != DType::F32 || k.inputs.iter().any(|b| b.dtype != DType::F32) {
            return Err("not all f32".into());
        }
        if k.red_shape.len() != 3 || k.red_shape[1] != 3 || k.red_shape[2] != 3 {
            return Err(format!("reduction axes {:?}, not [C, 3, 3]", k.red_shape));
        }
        let r = k.out_shape.len();
        fn plain(e: &Expr, n: usize) -> Option<(usize, &crate::kernel::Affine)> {
            match e {
                Expr::Load { buf, index, guards, .. } if guards.is_empty() && index.coefs.len() == n => Some((*buf, index)),
                _ => None,
            }
        }
        let (Some(la), Some(lb)) = (plain(a, r + 3), plain(b, r + 3)) else {
            return Err("the product is not of two unguarded loads".into());
        };
        // The input is the load that moves contiguously along a window column and an
        // output column.
        let live = |a: usize| k.out_shape[a] > 1;
        let is_input = |l: &crate::kernel::Affine| l.coefs[r + 2] == 1 && (0..r).any(|a| live(a) && l.coefs[a] == 1);
        let ((input, x), (weights, w)) = match (is_input(la.1), is_input(lb.1)) {
            (true, false) => (la, lb),
            (false, true) => (lb, la),
            _ => return Err("not one load advancing contiguously along an output column and a window column".into()),
        };
        let find = |pred: &dyn Fn(usize) -> bool| -> Result<usize, String> {
            let hits: Vec<usize> = (0..r).filter(|&a| live(a) && pred(a)).collect();
            match hits[..] {
                [a] => Ok(a),
                _ => Err(format!("{} candidate axes where one is needed", hits.len())),
            }
        };
        let x_axis = find(&|a| x.coefs[a] == 1)?;
        let row = x.coefs[r + 1];
        if row == 0 {
            return Err("the input does not move along a window row".into());
        }
        let y_axis = find(&|a| a != x_axis && x.coefs[a] == row)?;
        let k_axis = find(&|a| a != x_axis && a != y_axis && w.coefs[a] != 0)?;
        for a in (0..r).filter(|&a| live(a)) {
            let (xin, win) = (x.coefs[a] != 0, w.coefs[a] != 0);
            let want = (a == x_axis || a == y_axis, a == k_axis);
            if (xin, win) != want {
                return Err(format!("output axis i{a} of extent {} is read where a convolution would not", k.out_shape[a]));
            }
        }
        if x.coefs[r] == 0 && k.red_shape[0] > 1 {
            return Err("the input does not move along the input channels".into());
        }
        if k.store.coefs.get(x_axis).is_none_or(|&c| c == 0) {
            return Err("the output does not advance along the columns".into());
        }
        let (kk, c, oh, ow) = (k.out_shape[k_axis], k.red_shape[0], k.out_shape[y_axis], k.out_shape[x_axis]);
        if kk % CHANNEL_BLOCK != 0 {
            return Err(format!("{kk} output channels, not a multiple of {CHANNEL_BLOCK}"));
        }
        if oh % 2 != 0 || ow % (2 * TILE_LANES) != 0 {
            return Err(format!("{oh} x {ow} outputs: rows must be even and columns a multiple of {}", 2 * TILE_LANES));
        }
        let conv = WinogradConv {
            k_axis,
            y_axis,
            x_axis,
            k: kk,
            c,
            oh,
            ow,
            input,
            input_offset: x.offset,
            input_channel_stride: x.coefs[r],
            input_row_stride: row,
            weights,
            weight_offset: w.offset,
            weight_strides: [w.coefs[k_axis], w.coefs[r], w.coefs[r + 1], w.coefs[r + 2]],
        };
        let bytes = conv.scratch_bytes();
        if bytes > SCRATCH_LIMIT_BYTES {
            return Err(format!("{bytes} bytes of scratch, more than {SCRATCH_LIMIT_BYTES}"));
        }
        Ok(conv)
    }

    /// Tiles per block: 2 vectors of [`TILE_LANES`] where the tiles (row-major, rows a
    /// multiple of a vector) split into such blocks, else 1. A vector of tiles lies in one
    /// row; a block may span two.
    pub fn block_tiles(&self) -> usize {
        if self.tiles().is_multiple_of(2 * TILE_LANES) { 2 * TILE_LANES } else { TILE_LANES }
    }

    /// The 2x2 output tiles: `oh / 2` rows of `ow / 2`.
    pub fn tiles(&self) -> usize {
        self.oh / 2 * (self.ow / 2)
    }

    /// Blocks of tiles: the parallel range.
    pub fn blocks(&self) -> usize {
        self.tiles() / self.block_tiles()
    }

    /// Bytes of stack scratch: one block's transformed input and products.
    pub fn scratch_bytes(&self) -> usize {
        POINTS.saturating_mul(self.c.saturating_add(self.k)).saturating_mul(self.block_tiles()).saturating_mul(4)
    }

    /// The filters in the transformed domain, `U[p][k][c] = (G g Gᵀ)[p]` for the 3x3 filter
    /// `g` of output channel `k` and input channel `c` in `weights` (the bytes of the
    /// kernel's weight buffer, native-endian f32), laid out `(p K + k) C + c`: what a
    /// Winograd kernel is prepared with (see `codegen`'s `JitKernel::prepare`). `None` when
    /// `weights` is too short.
    pub fn transform_filters(&self, weights: &[u8]) -> Option<Vec<f32>> {
        let (kk, c) = (self.k, self.c);
        let mut u = vec![0.0f32; POINTS * kk * c];
        // G x for a column x of 3: x0, (x0 + x1 + x2) / 2, (x0 - x1 + x2) / 2, x2 (the
        // generated code's order of operations).
        let g = |x: [f32; 3]| {
            let s = x[0] + x[2];
            [x[0], (s + x[1]) * 0.5, (s - x[1]) * 0.5, x[2]]
        };
        for k in 0..kk {
            for ci in 0..c {
                let mut w = [[0.0f32; 3]; 3];
                for (a, row) in w.iter_mut().enumerate() {
                    for (b, x) in row.iter_mut().enumerate() {
                        let at = usize::try_from(self.weight_index([k as i64, ci as i64, a as i64, b as i64])).ok()?;
                        let bytes = weights.get(at.checked_mul(4)?..)?.first_chunk::<4>()?;
                        *x = f32::from_ne_bytes(*bytes);
                    }
                }
                let cols: Vec<[f32; 4]> = (0..3).map(|b| g([w[0][b], w[1][b], w[2][b]])).collect();
                for xi in 0..4 {
                    for (nu, x) in g([cols[0][xi], cols[1][xi], cols[2][xi]]).into_iter().enumerate() {
                        u[((xi * 4 + nu) * kk + k) * c + ci] = x;
                    }
                }
            }
        }
        Some(u)
    }

    /// The index of the weight of (output channel, input channel, window row, column).
    pub fn weight_index(&self, at: [i64; 4]) -> i64 {
        self.weight_offset + at.iter().zip(&self.weight_strides).map(|(i, s)| i * s).sum::<i64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Affine, Buffer, KGuard};

    fn load(buf: usize, offset: i64, coefs: &[i64], guards: Vec<KGuard>) -> Expr {
        Expr::Load { buf, index: Affine { offset, coefs: coefs.to_vec() }, guards, pad: 0.0 }
    }

    /// A convolution over an input padded beforehand: `k` x `c` channels, `h` x `w` outputs.
    fn conv(k: usize, c: usize, h: usize, w: usize, guards: Vec<KGuard>) -> Kernel {
        let (k_, c_, h_, w_) = (k as i64, c as i64, h as i64, w as i64);
        let (ph, pw) = (h_ + 2, w_ + 2);
        let buf = |name: &str, numel: i64| Buffer { name: name.into(), dtype: DType::F32, numel: numel as usize };
        Kernel {
            name: "conv".into(),
            inputs: vec![buf("x", c_ * ph * pw), buf("w", k_ * c_ * 9)],
            output: buf("y", k_ * h_ * w_),
            out_shape: vec![1, k, h, w],
            red_shape: vec![c, 3, 3],
            store: Affine { offset: 0, coefs: vec![k_ * h_ * w_, h_ * w_, w_, 1] },
            body: Body::Compute {
                reduce: Some(ReduceFn::Sum),
                body: Expr::Binary(
                    BinaryFn::Mul,
                    Box::new(load(0, 0, &[0, 0, pw, 1, ph * pw, pw, 1], guards)),
                    Box::new(load(1, 0, &[0, c_ * 9, 0, 0, 9, 3, 1], vec![])),
                ),
                epilogue: Expr::Acc,
            },
        }
    }

    #[test]
    fn a_padded_3x3_conv_is_recognized() {
        let w = WinogradConv::of(&conv(16, 8, 16, 16, vec![])).unwrap();
        assert_eq!((w.k_axis, w.y_axis, w.x_axis, w.k, w.c, w.oh, w.ow), (1, 2, 3, 16, 8, 16, 16));
        assert_eq!((w.input, w.weights, w.input_row_stride, w.input_channel_stride), (0, 1, 18, 324));
        assert_eq!(w.weight_strides, [72, 9, 3, 1]);
        assert_eq!((w.tiles(), w.block_tiles(), w.blocks()), (64, 8, 8));
        let w = WinogradConv::of(&conv(8, 3, 8, 8, vec![])).unwrap();
        assert_eq!((w.tiles(), w.block_tiles(), w.blocks()), (16, 8, 2));
        let w = WinogradConv::of(&conv(8, 3, 2, 8, vec![])).unwrap();
        assert_eq!((w.tiles(), w.block_tiles(), w.blocks()), (4, 4, 1));
    }

    #[test]
    fn other_kernels_are_refused_with_a_reason() {
        let guard = KGuard { expr: Affine { offset: 0, coefs: vec![0, 0, 1, 0, 0, 1, 0] }, bound: 16 };
        assert!(WinogradConv::of(&conv(16, 8, 16, 16, vec![guard])).unwrap_err().contains("unguarded"));
        assert!(WinogradConv::of(&conv(6, 8, 16, 16, vec![])).unwrap_err().contains("multiple of 4"));
        assert!(WinogradConv::of(&conv(8, 8, 16, 12, vec![])).unwrap_err().contains("columns"));
        assert!(WinogradConv::of(&conv(512, 512, 16, 16, vec![])).unwrap_err().contains("scratch"));
        assert!(WinogradConv::of(&conv(256, 256, 16, 16, vec![])).is_ok());
        let mut strided = conv(8, 8, 8, 8, vec![]);
        if let Body::Compute { body: Expr::Binary(_, x, _), .. } = &mut strided.body
            && let Expr::Load { index, .. } = &mut **x
        {
            index.coefs[3] = 2;
        }
        assert!(WinogradConv::of(&strided).is_err());
    }
}
