//! The conv op family: Conv, ConvTranspose, ConvInteger, QLinearConv, DeformConv and Col2Im.
//!
//! Every op is a sliding [`Window`] between an *image* (the conv input; the ConvTranspose
//! and Col2Im output) and a *grid* of window positions (the conv output; the ConvTranspose
//! input; Col2Im's blocks). For each kernel tap and each grid row (a grid position without
//! its last coordinate) the window reads a strided [`Span`] of one image row, so im2col,
//! col2im and the depthwise direct loop all work on contiguous rows without per-element
//! index math. Conv runs im2col (in chunks of grid rows, into a reused buffer) + the blocked
//! GEMM of the linalg family; 1x1 convs skip im2col; one-output-channel-per-group convs
//! (depthwise) accumulate taps directly into output rows. ConvTranspose is GEMM + col2im.

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, demote, promote};
use crate::ops::linalg::{MatRef, Scalar, gemm, requantize};
use crate::shape::{fmt_shape, strides};
use crate::tensor::Tensor;
use crate::{bail_model, with_float, with_numeric};
use std::ops::Range;

crate::op_family! {
    /// Ops of the conv family.
    pub enum ConvOp {
        Conv,
        ConvTranspose,
        ConvInteger,
        QLinearConv,
        DeformConv,
        Col2Im,
    }
}

impl ConvOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        match self {
            ConvOp::Conv => {
                let dtype = float_operands(cx, "Conv", &[0, 1, 2])?;
                Ok(vec![shaped(dtype, conv_shape(cx, "Conv", 0, 1, Some(2))?)])
            }
            ConvOp::ConvTranspose => {
                let dtype = float_operands(cx, "ConvTranspose", &[0, 1, 2])?;
                let shape = match (cx.shape(0)?, cx.shape(1)?) {
                    (Some(x), Some(w)) => {
                        let g = conv_transpose_geom(cx.attrs, x, w)?;
                        check_bias(cx, "ConvTranspose", 2, g.c_out)?;
                        Some(g.transpose_out_shape())
                    }
                    _ => None,
                };
                Ok(vec![shaped(dtype, shape)])
            }
            ConvOp::ConvInteger => {
                quantized_operand(cx, "ConvInteger", 0, Some(2))?;
                quantized_operand(cx, "ConvInteger", 1, Some(3))?;
                Ok(vec![shaped(DType::I32, conv_shape(cx, "ConvInteger", 0, 1, None)?)])
            }
            ConvOp::QLinearConv => {
                quantized_operand(cx, "QLinearConv", 0, Some(2))?;
                quantized_operand(cx, "QLinearConv", 3, Some(5))?;
                for i in [1, 4, 6] {
                    let d = cx.dtype(i)?;
                    if !d.is_float() {
                        bail_model!("QLinearConv scale input {i} must be a float tensor, got {d}");
                    }
                }
                let out = cx.dtype(7)?;
                if !matches!(out, DType::I8 | DType::U8) {
                    bail_model!("QLinearConv y_zero_point must be int8 or uint8, got {out}");
                }
                if let Some(b) = cx.opt(8)
                    && b.ty.dtype != DType::I32
                {
                    bail_model!("QLinearConv bias must be int32, got {}", b.ty.dtype);
                }
                Ok(vec![shaped(out, conv_shape(cx, "QLinearConv", 0, 3, Some(8))?)])
            }
            ConvOp::DeformConv => {
                let dtype = float_operands(cx, "DeformConv", &[0, 1, 2, 3, 4])?;
                let shape = match (cx.shape(0)?, cx.shape(1)?, cx.shape(2)?) {
                    (Some(x), Some(w), Some(off)) => {
                        let g = deform_geom(cx.attrs, x, w, off, cx.opt(4).and_then(|m| m.ty.shape.as_deref()))?;
                        check_bias(cx, "DeformConv", 3, g.conv.c_out)?;
                        Some(g.conv.out_shape())
                    }
                    _ => None,
                };
                Ok(vec![shaped(dtype, shape)])
            }
            ConvOp::Col2Im => {
                let dtype = cx.dtype(0)?;
                if dtype == DType::Bool {
                    return Err(bad_dtype("Col2Im", dtype));
                }
                for i in [1, 2] {
                    if cx.dtype(i)? != DType::I64 {
                        bail_model!("Col2Im input {i} must be int64, got {}", cx.dtype(i)?);
                    }
                }
                let shape = match (cx.shape(0)?, cx.value(1)?, cx.value(2)?) {
                    (Some(x), Some(image), Some(block)) => {
                        let g = col2im_geom(cx.attrs, x, &image.to_i64_vec(), &block.to_i64_vec())?;
                        Some(g.out_shape())
                    }
                    _ => None,
                };
                Ok(vec![shaped(dtype, shape)])
            }
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        let out = match self {
            ConvOp::Conv => conv_eval(cx)?,
            ConvOp::ConvTranspose => conv_transpose_eval(cx)?,
            ConvOp::ConvInteger => {
                let (x, w) = (cx.input(0)?, cx.input(1)?);
                let g = conv_geom(cx.attrs, x.shape(), w.shape(), "ConvInteger")?;
                let xv = minus_scalar_zero_point(x, cx.opt(2), "x_zero_point")?;
                let wv = minus_channel_zero_point(w, cx.opt(3), "w_zero_point")?;
                let mut out = vec![0i32; g.out_numel()];
                conv_forward(&xv, &wv, None, &g, &mut out);
                Tensor::from_vec(g.out_shape(), out)?
            }
            ConvOp::QLinearConv => qlinear_conv_eval(cx)?,
            ConvOp::DeformConv => deform_conv_eval(cx)?,
            ConvOp::Col2Im => col2im_eval(cx)?,
        };
        Ok(vec![out])
    }
}

fn shaped(dtype: DType, shape: Option<Vec<usize>>) -> ValueType {
    ValueType { dtype, shape }
}

/// The common float dtype of the listed (present) inputs.
fn float_operands(cx: &InferCx, op: &str, inputs: &[usize]) -> Result<DType> {
    let dtype = cx.dtype(inputs[0])?;
    if !dtype.is_float() {
        return Err(bad_dtype(op, dtype));
    }
    for &i in &inputs[1..] {
        if let Some(f) = cx.opt(i)
            && f.ty.dtype != dtype
        {
            bail_model!("{op} input {i} is {} but input {} is {dtype}", f.ty.dtype, inputs[0]);
        }
    }
    Ok(dtype)
}

/// Checks that input `i` is int8/uint8 and its optional zero point has the same type.
fn quantized_operand(cx: &InferCx, op: &str, i: usize, zp: Option<usize>) -> Result<()> {
    let d = cx.dtype(i)?;
    if !matches!(d, DType::I8 | DType::U8) {
        bail_model!("{op} input {i} must be int8 or uint8, got {d}");
    }
    if let Some((z, f)) = zp.and_then(|z| cx.opt(z).map(|f| (z, f)))
        && f.ty.dtype != d
    {
        bail_model!("{op} zero point input {z} is {} but its operand is {d}", f.ty.dtype);
    }
    Ok(())
}

/// Checks that the optional bias input `i`, when its shape is known, is `[c_out]`.
fn check_bias(cx: &InferCx, op: &str, i: usize, c_out: usize) -> Result<()> {
    if let Some(s) = cx.opt(i).and_then(|f| f.ty.shape.as_deref())
        && s != [c_out]
    {
        bail_model!(
            "{op} bias has shape {} but the output has {c_out} channels",
            fmt_shape(s)
        );
    }
    Ok(())
}

/// The output shape of a Conv-like op with data input `x`, weights `w` and bias `b`.
fn conv_shape(cx: &InferCx, op: &str, x: usize, w: usize, b: Option<usize>) -> Result<Option<Vec<usize>>> {
    match (cx.shape(x)?, cx.shape(w)?) {
        (Some(xs), Some(ws)) => {
            let g = conv_geom(cx.attrs, xs, ws, op)?;
            if let Some(b) = b {
                check_bias(cx, op, b, g.c_out)?;
            }
            Ok(Some(g.out_shape()))
        }
        _ => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------
// Attributes and geometry.

#[derive(Clone, Copy, PartialEq, Debug)]
enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

fn auto_pad(attrs: &Attrs) -> Result<AutoPad> {
    match attrs.string_or("auto_pad", "NOTSET")? {
        "NOTSET" | "" => Ok(AutoPad::NotSet),
        "SAME_UPPER" => Ok(AutoPad::SameUpper),
        "SAME_LOWER" => Ok(AutoPad::SameLower),
        "VALID" => Ok(AutoPad::Valid),
        other => bail_model!("attribute 'auto_pad' has an unknown value '{other}'"),
    }
}

/// A per-spatial-dim attribute (`strides`, `dilations`), each value >= 1, default 1.
fn spatial_attr(attrs: &Attrs, name: &str, nsp: usize) -> Result<Vec<usize>> {
    let Some(v) = attrs.ints(name)? else {
        return Ok(vec![1; nsp]);
    };
    if v.len() != nsp {
        bail_model!(
            "attribute '{name}' has {} values but the input has {nsp} spatial dims",
            v.len()
        );
    }
    v.iter()
        .map(|&x| {
            usize::try_from(x)
                .ok()
                .filter(|&x| x >= 1)
                .ok_or_else(|| Error::InvalidModel(format!("attribute '{name}' has a value {x} < 1")))
        })
        .collect()
}

/// The `pads` attribute as (begin, end) per spatial dim, each >= 0; zeros when absent.
fn pads_attr(attrs: &Attrs, nsp: usize) -> Result<(Vec<i64>, Vec<i64>)> {
    let Some(p) = attrs.ints("pads")? else {
        return Ok((vec![0; nsp], vec![0; nsp]));
    };
    if p.len() != 2 * nsp {
        bail_model!(
            "attribute 'pads' has {} values but needs {} (begin and end for {nsp} spatial dims)",
            p.len(),
            2 * nsp
        );
    }
    if let Some(x) = p.iter().find(|&&x| x < 0) {
        bail_model!("attribute 'pads' has a negative value {x}");
    }
    Ok((p[..nsp].to_vec(), p[nsp..].to_vec()))
}

/// The group attribute, >= 1.
fn group_attr(attrs: &Attrs) -> Result<usize> {
    let g = attrs.int_or("group", 1)?;
    usize::try_from(g)
        .ok()
        .filter(|&g| g >= 1)
        .ok_or_else(|| Error::InvalidModel(format!("attribute 'group' must be >= 1, got {g}")))
}

/// The kernel shape from the weights, checked against the `kernel_shape` attribute.
fn kernel_from_weights(attrs: &Attrs, w: &[usize]) -> Result<Vec<usize>> {
    let kernel = w[2..].to_vec();
    if let Some(k) = attrs.ints("kernel_shape")? {
        let same = k.len() == kernel.len() && k.iter().zip(&kernel).all(|(&a, &b)| a == b as i64);
        if !same {
            bail_model!(
                "attribute 'kernel_shape' {k:?} does not match the weight shape {}",
                fmt_shape(w)
            );
        }
    }
    Ok(kernel)
}

/// A sliding window between an image and the grid of window positions; see the module doc.
/// Grid position `o` at kernel tap `k` reads image element `o*stride + k*dilation - pad`
/// (per spatial dim).
#[derive(Clone, Debug)]
pub struct Window {
    /// The spatial dims of the image.
    pub image: Vec<usize>,
    /// The spatial dims of the grid of window positions.
    pub grid: Vec<usize>,
    /// The spatial dims of the kernel.
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Padding before each image dim (may be negative for ConvTranspose's `output_shape`).
    pub pad_begin: Vec<i64>,
}

/// The grid positions `lo..hi` of one grid row that read the image at one kernel tap, and
/// where: position `lo + i` reads image element `start + i * step` (within one channel).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Span {
    lo: usize,
    hi: usize,
    start: usize,
    step: usize,
}

impl Window {
    /// The number of kernel taps.
    pub fn kernel_size(&self) -> usize {
        self.kernel.iter().product()
    }

    /// The number of image elements (of one channel).
    pub fn image_size(&self) -> usize {
        self.image.iter().product()
    }

    /// The number of window positions.
    pub fn grid_size(&self) -> usize {
        self.grid.iter().product()
    }

    /// The length of a grid row (the last grid dim).
    fn row_len(&self) -> usize {
        self.grid.last().copied().unwrap_or(1)
    }

    /// The number of grid rows (the product of all grid dims but the last).
    fn rows(&self) -> usize {
        self.grid[..self.grid.len().saturating_sub(1)].iter().product()
    }

    /// Whether every window is a single image element at the same position (1x1 kernel,
    /// unit strides, no padding): the grid is the image itself.
    fn is_identity(&self) -> bool {
        self.kernel.iter().all(|&k| k == 1)
            && self.strides.iter().all(|&s| s == 1)
            && self.pad_begin.iter().all(|&p| p == 0)
            && self.grid == self.image
    }

    /// The span of every (tap, grid row), indexed `tap * rows + row`.
    fn spans(&self) -> Vec<Span> {
        let nsp = self.grid.len();
        let image_strides = strides(&self.image);
        let kernel_strides = strides(&self.kernel);
        let rows = self.rows();
        let mut out = Vec::with_capacity(self.kernel_size() * rows);
        let mut offsets = vec![0i64; nsp];
        for tap in 0..self.kernel_size() {
            for d in 0..nsp {
                let k = (tap / kernel_strides[d]) % self.kernel[d];
                offsets[d] = (k * self.dilations[d]) as i64 - self.pad_begin[d];
            }
            for row in 0..rows {
                out.push(self.span(&offsets, row, &image_strides));
            }
        }
        out
    }

    /// The span of grid row `row` for a tap whose image offsets (`k * dilation - pad`) are
    /// `offsets`.
    fn span(&self, offsets: &[i64], row: usize, image_strides: &[usize]) -> Span {
        let empty = Span {
            lo: 0,
            hi: 0,
            start: 0,
            step: 1,
        };
        let last = self.grid.len() - 1;
        let mut rem = row;
        let mut base = 0usize;
        for d in (0..last).rev() {
            let g = rem % self.grid[d];
            rem /= self.grid[d];
            let i = (g * self.strides[d]) as i64 + offsets[d];
            if i < 0 || i >= self.image[d] as i64 {
                return empty;
            }
            base += i as usize * image_strides[d];
        }
        let (s, o) = (self.strides[last] as i64, offsets[last]);
        let (width, len) = (self.image[last] as i64, self.grid[last] as i64);
        let lo = if o < 0 { (-o + s - 1) / s } else { 0 };
        let hi = if width - 1 - o < 0 {
            0
        } else {
            ((width - 1 - o) / s + 1).min(len)
        };
        if lo >= hi {
            return empty;
        }
        Span {
            lo: lo as usize,
            hi: hi as usize,
            start: base + (lo * s + o) as usize,
            step: s as usize,
        }
    }

    /// How many grid rows one chunk of an im2col buffer of about `budget` elements holds
    /// when each grid position takes `depth` elements.
    fn rows_per_chunk(&self, depth: usize, budget: usize) -> usize {
        (budget / (depth * self.row_len()).max(1)).clamp(1, self.rows().max(1))
    }
}

/// Elements of one im2col chunk (the buffer is reused across chunks).
const COL_CHUNK: usize = 1 << 20;

/// The shape of a Conv (also ConvInteger, QLinearConv, DeformConv) or of a ConvTranspose
/// (whose window's image is the output and grid the input).
#[derive(Clone, Debug)]
pub struct ConvGeom {
    /// The batch size.
    pub n: usize,
    /// The input channels (`x` dim 1).
    pub c_in: usize,
    /// The output channels.
    pub c_out: usize,
    pub group: usize,
    pub window: Window,
}

impl ConvGeom {
    /// The output shape of a conv: `N x c_out x grid..`.
    pub fn out_shape(&self) -> Vec<usize> {
        [self.n, self.c_out]
            .into_iter()
            .chain(self.window.grid.iter().copied())
            .collect()
    }

    /// The output shape of a ConvTranspose: `N x c_out x image..`.
    pub fn transpose_out_shape(&self) -> Vec<usize> {
        [self.n, self.c_out]
            .into_iter()
            .chain(self.window.image.iter().copied())
            .collect()
    }

    fn out_numel(&self) -> usize {
        self.n * self.c_out * self.window.grid_size()
    }

    /// The number of spatial dims.
    pub fn nsp(&self) -> usize {
        self.window.grid.len()
    }

    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c_in / self.group
    }

    /// Output channels per group.
    pub fn mg(&self) -> usize {
        self.c_out / self.group
    }
}

/// Checks the data and weight shapes of a conv (`x`: N x C x D1.., `w`: M x C/group x k1..).
fn conv_channels(op: &str, x: &[usize], w: &[usize], group: usize) -> Result<()> {
    if x.len() < 3 {
        bail_model!(
            "{op} input X must have rank >= 3 (N, C, spatial...), got {}",
            fmt_shape(x)
        );
    }
    if w.len() != x.len() {
        bail_model!(
            "{op} weight W {} must have the rank of X {}",
            fmt_shape(w),
            fmt_shape(x)
        );
    }
    if w[1] * group != x[1] {
        bail_model!(
            "{op} input X {} has {} channels but weight W {} expects {} x group {group} = {}",
            fmt_shape(x),
            x[1],
            fmt_shape(w),
            w[1],
            w[1] * group
        );
    }
    if !w[0].is_multiple_of(group) {
        bail_model!(
            "{op} weight W {} has {} output channels, not a multiple of group {group}",
            fmt_shape(w),
            w[0]
        );
    }
    Ok(())
}

/// The geometry of a conv `op` (Conv, ConvInteger, QLinearConv, DeformConv) of data `x`
/// (N x C x D1..) and weights `w` (M x C/group x k1..): its attributes (`group`,
/// `kernel_shape`, `strides`, `dilations`, `pads`, `auto_pad`) checked against the shapes.
pub fn conv_geom(attrs: &Attrs, x: &[usize], w: &[usize], op: &str) -> Result<ConvGeom> {
    let group = group_attr(attrs)?;
    conv_channels(op, x, w, group)?;
    let nsp = x.len() - 2;
    let kernel = kernel_from_weights(attrs, w)?;
    let strides = spatial_attr(attrs, "strides", nsp)?;
    let dilations = spatial_attr(attrs, "dilations", nsp)?;
    let (mut pad_begin, mut pad_end) = pads_attr(attrs, nsp)?;
    let mode = auto_pad(attrs)?;
    let image = x[2..].to_vec();
    let mut grid = vec![0; nsp];
    for d in 0..nsp {
        let extent = ((kernel[d].max(1) - 1) * dilations[d] + 1) as i64;
        let size = image[d] as i64;
        let s = strides[d] as i64;
        match mode {
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = (size + s - 1) / s;
                let total = ((out - 1) * s + extent - size).max(0);
                let small = total / 2;
                (pad_begin[d], pad_end[d]) = if mode == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
            AutoPad::Valid => (pad_begin[d], pad_end[d]) = (0, 0),
            AutoPad::NotSet => {}
        }
        let padded = size + pad_begin[d] + pad_end[d];
        if kernel[d] == 0 || padded < extent {
            bail_model!(
                "{op} kernel {} (dilated extent {extent}) does not fit spatial dim {d} of size {size} padded to {padded}",
                fmt_shape(&kernel),
            );
        }
        grid[d] = ((padded - extent) / s + 1) as usize;
    }
    let window = Window {
        image,
        grid,
        kernel,
        strides,
        dilations,
        pad_begin,
    };
    Ok(ConvGeom {
        n: x[0],
        c_in: x[1],
        c_out: w[0],
        group,
        window,
    })
}

// ---------------------------------------------------------------------------------------
// Kernels.

/// `dst[i] = src[start + i * step]`.
#[inline]
fn gather<T: Copy>(dst: &mut [T], src: &[T], start: usize, step: usize) {
    if step == 1 {
        dst.copy_from_slice(&src[start..start + dst.len()]);
    } else {
        for (o, &v) in dst.iter_mut().zip(src[start..].iter().step_by(step)) {
            *o = v;
        }
    }
}

/// `dst[i] += a * src[start + i * step]`.
#[inline]
fn axpy<T: Scalar>(dst: &mut [T], a: T, src: &[T], start: usize, step: usize) {
    if step == 1 {
        let len = dst.len();
        for (o, &v) in dst.iter_mut().zip(&src[start..start + len]) {
            *o = o.add(a.mul(v));
        }
    } else {
        for (o, &v) in dst.iter_mut().zip(src[start..].iter().step_by(step)) {
            *o = o.add(a.mul(v));
        }
    }
}

/// `dst[start + i * step] += src[i]`.
#[inline]
fn scatter_add<T: Scalar>(dst: &mut [T], src: &[T], start: usize, step: usize) {
    if step == 1 {
        for (o, &v) in dst[start..start + src.len()].iter_mut().zip(src) {
            *o = o.add(v);
        }
    } else {
        for (o, &v) in dst[start..].iter_mut().step_by(step).zip(src) {
            *o = o.add(v);
        }
    }
}

/// The im2col matrix of grid rows `rows` into `col`: row `c * taps + tap`, column
/// `(row - rows.start) * row_len + j` holds the image element that grid position reads at
/// that tap of channel `c` (zero in the padding).
fn im2col<T: Scalar>(image: &[T], win: &Window, spans: &[Span], rows: Range<usize>, col: &mut [T]) {
    let (isz, taps, row_len, nrows) = (win.image_size(), win.kernel_size(), win.row_len(), win.rows());
    let ncols = rows.len() * row_len;
    if ncols == 0 || isz == 0 {
        col.fill(T::default());
        return;
    }
    for (krow, dst) in col.chunks_exact_mut(ncols).enumerate() {
        let (c, tap) = (krow / taps, krow % taps);
        let plane = &image[c * isz..(c + 1) * isz];
        for (row, seg) in rows.clone().zip(dst.chunks_exact_mut(row_len)) {
            let sp = spans[tap * nrows + row];
            seg[..sp.lo].fill(T::default());
            seg[sp.hi..].fill(T::default());
            gather(&mut seg[sp.lo..sp.hi], plane, sp.start, sp.step);
        }
    }
}

/// The inverse scatter of [`im2col`]: adds each column entry into the image element it
/// stands for (entries in the padding are dropped).
fn col2im<T: Scalar>(col: &[T], win: &Window, spans: &[Span], rows: Range<usize>, image: &mut [T]) {
    let (isz, taps, row_len, nrows) = (win.image_size(), win.kernel_size(), win.row_len(), win.rows());
    let ncols = rows.len() * row_len;
    if ncols == 0 || isz == 0 {
        return;
    }
    for (krow, src) in col.chunks_exact(ncols).enumerate() {
        let (c, tap) = (krow / taps, krow % taps);
        let plane = &mut image[c * isz..(c + 1) * isz];
        for (row, seg) in rows.clone().zip(src.chunks_exact(row_len)) {
            let sp = spans[tap * nrows + row];
            scatter_add(plane, &seg[sp.lo..sp.hi], sp.start, sp.step);
        }
    }
}

/// Fills each `plane`-sized block of `out` (N x C planes) with its channel's bias.
fn fill_bias<T: Copy>(out: &mut [T], plane: usize, bias: Option<&[T]>) {
    if let (Some(bias), true) = (bias, plane > 0) {
        for (dst, &b) in out.chunks_exact_mut(plane).zip(bias.iter().cycle()) {
            dst.fill(b);
        }
    }
}

/// The convolution `out = bias + conv(x, w)` (cross-correlation, as ONNX Conv).
fn conv_forward<T: Scalar>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom, out: &mut [T]) {
    let win = &g.window;
    let (isz, psz, taps) = (win.image_size(), win.grid_size(), win.kernel_size());
    let (cg, mg) = (g.cg(), g.mg());
    let kc = cg * taps;
    let (row_len, rows) = (win.row_len(), win.rows());
    fill_bias(out, psz, bias);
    if psz == 0 || isz == 0 || kc == 0 {
        return;
    }
    let spans = win.spans();
    let pointwise = win.is_identity();
    let depthwise = mg == 1 && !pointwise;
    let chunk_rows = win.rows_per_chunk(kc, COL_CHUNK);
    let mut col = if pointwise || depthwise {
        vec![]
    } else {
        vec![T::default(); kc * chunk_rows * row_len]
    };
    for b in 0..g.n {
        for gi in 0..g.group {
            let xg = &x[(b * g.c_in + gi * cg) * isz..][..cg * isz];
            let wg = &w[gi * mg * kc..][..mg * kc];
            let og = &mut out[(b * g.c_out + gi * mg) * psz..][..mg * psz];
            if pointwise {
                gemm(mg, psz, cg, MatRef::rows(wg, cg), MatRef::rows(xg, psz), og, psz);
            } else if depthwise {
                for (c, plane) in xg.chunks_exact(isz).enumerate() {
                    for tap in 0..taps {
                        let wv = wg[c * taps + tap];
                        for (row, orow) in og.chunks_exact_mut(row_len).enumerate() {
                            let sp = spans[tap * rows + row];
                            axpy(&mut orow[sp.lo..sp.hi], wv, plane, sp.start, sp.step);
                        }
                    }
                }
            } else {
                for r0 in (0..rows).step_by(chunk_rows) {
                    let r1 = (r0 + chunk_rows).min(rows);
                    let ncols = (r1 - r0) * row_len;
                    let colc = &mut col[..kc * ncols];
                    im2col(xg, win, &spans, r0..r1, colc);
                    gemm(
                        mg,
                        ncols,
                        kc,
                        MatRef::rows(wg, kc),
                        MatRef::rows(colc, ncols),
                        &mut og[r0 * row_len..],
                        psz,
                    );
                }
            }
        }
    }
}

fn conv_eval(cx: &EvalCx) -> Result<Tensor> {
    let (x, w) = (promote(cx.input(0)?), promote(cx.input(1)?));
    let bias = cx.opt(2).map(promote);
    let g = conv_geom(cx.attrs, x.shape(), w.shape(), "Conv")?;
    let t = with_float!(x.dtype(), "Conv", T => {
        let b = match &bias { Some(b) => Some(b.slice::<T>()?), None => None };
        let mut out = vec![T::default(); g.out_numel()];
        conv_forward(x.slice::<T>()?, w.slice::<T>()?, b, &g, &mut out);
        Tensor::from_vec(g.out_shape(), out)?
    });
    Ok(demote(t, cx.out_dtype(0)?))
}

// ---------------------------------------------------------------------------------------
// ConvTranspose.

/// The geometry of a ConvTranspose of `x` (N x C x D1..) and weights `w` (C x M/group x
/// k1..) as its adjoint conv: the window's image is the output, its grid the input (so the
/// output shape is [`ConvGeom::transpose_out_shape`]).
pub fn conv_transpose_geom(attrs: &Attrs, x: &[usize], w: &[usize]) -> Result<ConvGeom> {
    let op = "ConvTranspose";
    let group = group_attr(attrs)?;
    if x.len() < 3 {
        bail_model!(
            "{op} input X must have rank >= 3 (N, C, spatial...), got {}",
            fmt_shape(x)
        );
    }
    if w.len() != x.len() {
        bail_model!(
            "{op} weight W {} must have the rank of X {}",
            fmt_shape(w),
            fmt_shape(x)
        );
    }
    if w[0] != x[1] || !x[1].is_multiple_of(group) {
        bail_model!(
            "{op} input X {} has {} channels but weight W {} has {} input channels (group {group})",
            fmt_shape(x),
            x[1],
            fmt_shape(w),
            w[0]
        );
    }
    let nsp = x.len() - 2;
    let kernel = kernel_from_weights(attrs, w)?;
    let strides = spatial_attr(attrs, "strides", nsp)?;
    let dilations = spatial_attr(attrs, "dilations", nsp)?;
    let (mut pad_begin, pad_end) = pads_attr(attrs, nsp)?;
    let mode = auto_pad(attrs)?;
    let output_padding = match attrs.ints("output_padding")? {
        None => vec![0; nsp],
        Some(p) if p.len() == nsp && p.iter().all(|&v| v >= 0) => p.to_vec(),
        Some(p) => bail_model!("attribute 'output_padding' {p:?} must have {nsp} non-negative values"),
    };
    let output_shape = match attrs.ints("output_shape")? {
        None => None,
        Some(s) if s.len() == nsp || s.len() == nsp + 2 => Some(s[s.len() - nsp..].to_vec()),
        Some(s) => bail_model!("attribute 'output_shape' {s:?} must have {nsp} values"),
    };
    let grid = x[2..].to_vec();
    let mut image = vec![0; nsp];
    for d in 0..nsp {
        let (input, s) = (grid[d] as i64, strides[d] as i64);
        let natural = s * (input - 1) + output_padding[d] + ((kernel[d] as i64 - 1) * dilations[d] as i64 + 1);
        let target = match (&output_shape, mode) {
            (Some(shape), _) => Some(shape[d]),
            (None, AutoPad::SameUpper | AutoPad::SameLower) => Some(input * s),
            _ => None,
        };
        let size = match target {
            Some(size) => {
                let total = natural - size;
                let small = total.div_euclid(2);
                pad_begin[d] = if mode == AutoPad::SameUpper {
                    small
                } else {
                    total - small
                };
                size
            }
            None if mode == AutoPad::Valid => {
                pad_begin[d] = 0;
                natural
            }
            None => natural - pad_begin[d] - pad_end[d],
        };
        if size < 0 {
            bail_model!(
                "{op} output spatial dim {d} would be {size} (input {input}, pads {}+{})",
                pad_begin[d],
                pad_end[d]
            );
        }
        image[d] = size as usize;
    }
    let window = Window {
        image,
        grid,
        kernel,
        strides,
        dilations,
        pad_begin,
    };
    Ok(ConvGeom {
        n: x[0],
        c_in: x[1],
        c_out: w[1] * group,
        group,
        window,
    })
}

/// `out = bias + conv_transpose(x, w)`: per group, `col = W_g^T X_g` then col2im.
fn conv_transpose_forward<T: Scalar>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom, out: &mut [T]) {
    let win = &g.window;
    let (osz, psz, taps) = (win.image_size(), win.grid_size(), win.kernel_size());
    let (cg, mg) = (g.cg(), g.mg());
    let kc = mg * taps;
    let (row_len, rows) = (win.row_len(), win.rows());
    fill_bias(out, osz, bias);
    if psz == 0 || osz == 0 || kc == 0 {
        return;
    }
    let spans = win.spans();
    let chunk_rows = win.rows_per_chunk(kc, COL_CHUNK);
    let mut col = vec![T::default(); kc * chunk_rows * row_len];
    for b in 0..g.n {
        for gi in 0..g.group {
            let xg = &x[(b * g.c_in + gi * cg) * psz..][..cg * psz];
            let wg = &w[gi * cg * kc..][..cg * kc];
            let og = &mut out[(b * g.c_out + gi * mg) * osz..][..mg * osz];
            for r0 in (0..rows).step_by(chunk_rows) {
                let r1 = (r0 + chunk_rows).min(rows);
                let ncols = (r1 - r0) * row_len;
                let colc = &mut col[..kc * ncols];
                colc.fill(T::default());
                let wt = MatRef {
                    data: wg,
                    rs: 1,
                    cs: kc,
                };
                let xm = MatRef {
                    data: &xg[r0 * row_len..],
                    rs: psz,
                    cs: 1,
                };
                gemm(kc, ncols, cg, wt, xm, colc, ncols);
                col2im(colc, win, &spans, r0..r1, og);
            }
        }
    }
}

fn conv_transpose_eval(cx: &EvalCx) -> Result<Tensor> {
    let (x, w) = (promote(cx.input(0)?), promote(cx.input(1)?));
    let bias = cx.opt(2).map(promote);
    let g = conv_transpose_geom(cx.attrs, x.shape(), w.shape())?;
    let shape = g.transpose_out_shape();
    let t = with_float!(x.dtype(), "ConvTranspose", T => {
        let b = match &bias { Some(b) => Some(b.slice::<T>()?), None => None };
        let mut out = vec![T::default(); shape.iter().product()];
        conv_transpose_forward(x.slice::<T>()?, w.slice::<T>()?, b, &g, &mut out);
        Tensor::from_vec(shape, out)?
    });
    Ok(demote(t, cx.out_dtype(0)?))
}

// ---------------------------------------------------------------------------------------
// Quantized convs.

/// `x - zero_point` as i32 for a per-tensor zero point.
fn minus_scalar_zero_point(x: &Tensor, zp: Option<&Tensor>, what: &str) -> Result<Vec<i32>> {
    let z = match zp {
        None => 0,
        Some(z) if z.numel() == 1 => z.scalar_i64()? as i32,
        Some(z) => bail_model!(
            "{what} must be a single value (per tensor), got shape {}",
            fmt_shape(z.shape())
        ),
    };
    Ok(x.to_i64_vec().into_iter().map(|v| (v as i32).wrapping_sub(z)).collect())
}

/// `w - zero_point` as i32 for a zero point per tensor or per output channel (dim 0).
fn minus_channel_zero_point(w: &Tensor, zp: Option<&Tensor>, what: &str) -> Result<Vec<i32>> {
    let values = w.to_i64_vec();
    let channels = w.shape().first().copied().unwrap_or(1);
    let zs: Vec<i64> = match zp {
        None => vec![0],
        Some(z) if z.numel() == 1 => z.to_i64_vec(),
        Some(z) if z.rank() == 1 && z.numel() == channels => z.to_i64_vec(),
        Some(z) => bail_model!(
            "{what} of shape {} must be a single value or one per output channel ({channels})",
            fmt_shape(z.shape())
        ),
    };
    let per = values.len() / channels.max(1);
    Ok(values
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as i32).wrapping_sub(zs[if zs.len() == 1 { 0 } else { i / per.max(1) }] as i32))
        .collect())
}

fn qlinear_conv_eval(cx: &EvalCx) -> Result<Tensor> {
    let (x, w) = (cx.input(0)?, cx.input(3)?);
    let g = conv_geom(cx.attrs, x.shape(), w.shape(), "QLinearConv")?;
    let xv = minus_scalar_zero_point(x, cx.opt(2), "x_zero_point")?;
    let wv = minus_channel_zero_point(w, cx.opt(5), "w_zero_point")?;
    let bias = match cx.opt(8) {
        Some(b) => Some(b.slice::<i32>()?),
        None => None,
    };
    let mut acc = vec![0i32; g.out_numel()];
    conv_forward(&xv, &wv, bias, &g, &mut acc);
    let single = |i: usize, what: &str| -> Result<f64> {
        let t = cx.input(i)?;
        if t.numel() != 1 {
            bail_model!(
                "QLinearConv {what} must be a single value, got shape {}",
                fmt_shape(t.shape())
            );
        }
        t.scalar_f64()
    };
    let x_scale = single(1, "x_scale")? as f32;
    let y_scale = single(6, "y_scale")? as f32;
    let y_zp = cx.input(7)?;
    if y_zp.numel() != 1 {
        bail_model!(
            "QLinearConv y_zero_point must be a single value, got shape {}",
            fmt_shape(y_zp.shape())
        );
    }
    let y_zp = y_zp.scalar_i64()?;
    let w_scale: Vec<f32> = cx.input(4)?.to_f64_vec().into_iter().map(|v| v as f32).collect();
    if w_scale.len() != 1 && w_scale.len() != g.c_out {
        bail_model!(
            "QLinearConv w_scale has {} values but the output has {} channels",
            w_scale.len(),
            g.c_out
        );
    }
    let out_dtype = cx.out_dtype(0)?;
    let plane = g.window.grid_size().max(1);
    let values: Vec<f64> = acc
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let m = if w_scale.len() == 1 { 0 } else { (i / plane) % g.c_out };
            requantize(a, x_scale * w_scale[m] / y_scale, y_zp, out_dtype)
        })
        .collect();
    Tensor::from_fn_f64(out_dtype, g.out_shape(), |i| values[i])
}

// ---------------------------------------------------------------------------------------
// DeformConv.

/// The shape of a DeformConv: a conv plus offset groups.
pub struct DeformGeom {
    pub conv: ConvGeom,
    pub offset_group: usize,
}

/// The geometry of a DeformConv of data `x`, weights `w`, `offset` and optional `mask`
/// shapes (the offset and mask shapes checked against the conv's).
pub fn deform_geom(
    attrs: &Attrs,
    x: &[usize],
    w: &[usize],
    offset: &[usize],
    mask: Option<&[usize]>,
) -> Result<DeformGeom> {
    let op = "DeformConv";
    let conv = conv_geom(attrs, x, w, op)?;
    let og = attrs.int_or("offset_group", 1)?;
    let offset_group = usize::try_from(og)
        .ok()
        .filter(|&g| g >= 1 && conv.c_in % g == 0)
        .ok_or_else(|| {
            Error::InvalidModel(format!(
                "{op} offset_group {og} must be >= 1 and divide the {} input channels",
                conv.c_in
            ))
        })?;
    let nsp = conv.window.grid.len();
    let taps = conv.window.kernel_size();
    let want: Vec<usize> = [conv.n, offset_group * taps * nsp]
        .into_iter()
        .chain(conv.window.grid.iter().copied())
        .collect();
    if offset != want.as_slice() {
        bail_model!(
            "{op} offset has shape {} but should be {}",
            fmt_shape(offset),
            fmt_shape(&want)
        );
    }
    if let Some(mask) = mask {
        let want: Vec<usize> = [conv.n, offset_group * taps]
            .into_iter()
            .chain(conv.window.grid.iter().copied())
            .collect();
        if mask != want.as_slice() {
            bail_model!(
                "{op} mask has shape {} but should be {}",
                fmt_shape(mask),
                fmt_shape(&want)
            );
        }
    }
    Ok(DeformGeom { conv, offset_group })
}

/// Multilinear sample of an image with dims `dims` at the real coordinates `pos`; corners
/// outside the image count as zero.
fn multilinear<T: num_traits::Float>(plane: &[T], dims: &[usize], image_strides: &[usize], pos: &[T]) -> T {
    let mut total = T::zero();
    'corner: for corner in 0..(1usize << dims.len()) {
        let mut weight = T::one();
        let mut index = 0usize;
        for (d, &p) in pos.iter().enumerate() {
            let floor = p.floor();
            let upper = (corner >> d) & 1 == 1;
            let coord = if upper { floor + T::one() } else { floor };
            let Some(c) = coord.to_i64().filter(|&c| c >= 0 && c < dims[d] as i64) else {
                continue 'corner;
            };
            let frac = p - floor;
            weight = weight * if upper { frac } else { T::one() - frac };
            index += c as usize * image_strides[d];
        }
        total = total + weight * plane[index];
    }
    total
}

/// The image coordinate `index - pad` as a float.
fn position<T: num_traits::Float>(index: usize, pad: i64) -> T {
    <T as num_traits::NumCast>::from(index as f64 - pad as f64).unwrap_or_else(T::zero)
}

/// DeformConv: im2col where each tap samples the image at its offset position (scaled by
/// the mask), then the grouped GEMM of Conv.
fn deform_conv_eval(cx: &EvalCx) -> Result<Tensor> {
    let (x, w, off) = (promote(cx.input(0)?), promote(cx.input(1)?), promote(cx.input(2)?));
    let bias = cx.opt(3).map(promote);
    let mask = cx.opt(4).map(promote);
    let geom = deform_geom(
        cx.attrs,
        x.shape(),
        w.shape(),
        off.shape(),
        mask.as_ref().map(|m| m.shape()),
    )?;
    let g = &geom.conv;
    let win = &g.window;
    let nsp = win.grid.len();
    let (image_strides, grid_strides, kernel_strides) = (strides(&win.image), strides(&win.grid), strides(&win.kernel));
    let t = with_float!(x.dtype(), "DeformConv", T => {
        let (xv, wv, offv) = (x.slice::<T>()?, w.slice::<T>()?, off.slice::<T>()?);
        let maskv = match &mask { Some(m) => Some(m.slice::<T>()?), None => None };
        let b = match &bias { Some(b) => Some(b.slice::<T>()?), None => None };
        let (isz, psz, taps) = (win.image_size(), win.grid_size(), win.kernel_size());
        let (cg, mg) = (g.cg(), g.mg());
        let ch_per_og = g.c_in / geom.offset_group;
        let kc = cg * taps;
        let mut out = vec![T::default(); g.out_numel()];
        fill_bias(&mut out, psz, b);
        let mut col = vec![T::default(); kc * psz];
        let mut pos = vec![T::default(); nsp];
        let mut kidx = vec![0usize; nsp];
        for n in 0..g.n {
            for gi in 0..g.group {
                for (krow, dst) in col.chunks_exact_mut(psz.max(1)).enumerate() {
                    let (c, tap) = (gi * cg + krow / taps, krow % taps);
                    let og = c / ch_per_og;
                    let plane = &xv[(n * g.c_in + c) * isz..][..isz];
                    for d in 0..nsp {
                        kidx[d] = (tap / kernel_strides[d]) % win.kernel[d];
                    }
                    let off_base = ((n * geom.offset_group + og) * taps + tap) * nsp;
                    let mask_row = maskv.map(|m| &m[((n * geom.offset_group + og) * taps + tap) * psz..][..psz]);
                    for (p, v) in dst.iter_mut().enumerate() {
                        for d in 0..nsp {
                            let gd = (p / grid_strides[d]) % win.grid[d];
                            let base = gd * win.strides[d] + kidx[d] * win.dilations[d];
                            pos[d] = position::<T>(base, win.pad_begin[d]) + offv[(off_base + d) * psz + p];
                        }
                        let sample = multilinear(plane, &win.image, &image_strides, &pos);
                        *v = match mask_row { Some(m) => sample * m[p], None => sample };
                    }
                }
                let wg = &wv[gi * mg * kc..][..mg * kc];
                let og = &mut out[(n * g.c_out + gi * mg) * psz..][..mg * psz];
                gemm(mg, psz, kc, MatRef::rows(wg, kc), MatRef::rows(&col, psz), og, psz);
            }
        }
        Tensor::from_vec(g.out_shape(), out)?
    });
    Ok(demote(t, cx.out_dtype(0)?))
}

// ---------------------------------------------------------------------------------------
// Col2Im.

/// The shape of a Col2Im: input `N x (C * taps) x L`, output `N x C x image`.
pub struct Col2ImGeom {
    pub n: usize,
    /// C.
    pub channels: usize,
    /// The window: the kernel is the block, the grid the blocks.
    pub window: Window,
}

impl Col2ImGeom {
    /// `N x C x image..`.
    pub fn out_shape(&self) -> Vec<usize> {
        [self.n, self.channels]
            .into_iter()
            .chain(self.window.image.iter().copied())
            .collect()
    }
}

/// The geometry of a Col2Im of input shape `x` with the values of its `image_shape` and
/// `block_shape` inputs.
pub fn col2im_geom(attrs: &Attrs, x: &[usize], image: &[i64], block: &[i64]) -> Result<Col2ImGeom> {
    let op = "Col2Im";
    let nsp = image.len();
    if block.len() != nsp || nsp == 0 {
        bail_model!("{op} image_shape {image:?} and block_shape {block:?} must have the same non-zero length");
    }
    let to_dims = |v: &[i64], what: &str| -> Result<Vec<usize>> {
        v.iter()
            .map(|&d| usize::try_from(d).ok().filter(|&d| d >= 1))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| Error::InvalidModel(format!("{op} {what} {v:?} must be positive")))
    };
    let (image, kernel) = (to_dims(image, "image_shape")?, to_dims(block, "block_shape")?);
    let strides = spatial_attr(attrs, "strides", nsp)?;
    let dilations = spatial_attr(attrs, "dilations", nsp)?;
    let (pad_begin, pad_end) = pads_attr(attrs, nsp)?;
    let &[n, depth, blocks] = x else {
        bail_model!(
            "{op} input must have rank 3 (N, C * prod(block_shape), L), got {}",
            fmt_shape(x)
        );
    };
    let taps: usize = kernel.iter().product();
    if depth % taps != 0 {
        bail_model!("{op} input dim 1 ({depth}) is not a multiple of prod(block_shape) = {taps}");
    }
    let mut grid = vec![0; nsp];
    for d in 0..nsp {
        let extent = ((kernel[d] - 1) * dilations[d] + 1) as i64;
        let padded = image[d] as i64 + pad_begin[d] + pad_end[d];
        if padded < extent {
            bail_model!(
                "{op} block {} does not fit image dim {d} padded to {padded}",
                fmt_shape(&kernel)
            );
        }
        grid[d] = ((padded - extent) / strides[d] as i64 + 1) as usize;
    }
    let want: usize = grid.iter().product();
    if want != blocks {
        bail_model!(
            "{op} input has {blocks} blocks but image, block, pads and strides give {want} ({})",
            fmt_shape(&grid)
        );
    }
    let window = Window {
        image,
        grid,
        kernel,
        strides,
        dilations,
        pad_begin,
    };
    Ok(Col2ImGeom {
        n,
        channels: depth / taps,
        window,
    })
}

fn col2im_eval(cx: &EvalCx) -> Result<Tensor> {
    let x = promote(cx.input(0)?);
    let image = cx.input(1)?.to_i64_vec();
    let block = cx.input(2)?.to_i64_vec();
    let g = col2im_geom(cx.attrs, x.shape(), &image, &block)?;
    let win = &g.window;
    let shape = g.out_shape();
    let t = with_numeric!(x.dtype(), "Col2Im", T => {
        let xv = x.slice::<T>()?;
        let mut out = vec![T::default(); shape.iter().product()];
        let spans = win.spans();
        let (isz, rows) = (win.image_size(), win.rows());
        let per_n_in = g.channels * win.kernel_size() * win.grid_size();
        if per_n_in > 0 && isz > 0 {
            for (src, dst) in xv.chunks_exact(per_n_in).zip(out.chunks_exact_mut(g.channels * isz)) {
                col2im(src, win, &spans, 0..rows, dst);
            }
        }
        Tensor::from_vec(shape, out)?
    });
    Ok(demote(t, cx.out_dtype(0)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;

    /// A deterministic pseudo-random sequence in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The textbook 2-D conv loop.
    fn naive_conv2d(x: &[f32], w: &[f32], bias: &[f32], g: &ConvGeom) -> Vec<f32> {
        let win = &g.window;
        let (ih, iw, oh, ow) = (win.image[0], win.image[1], win.grid[0], win.grid[1]);
        let (kh, kw) = (win.kernel[0], win.kernel[1]);
        let (cg, mg) = (g.cg(), g.mg());
        let mut out = vec![0.0; g.out_numel()];
        for n in 0..g.n {
            for m in 0..g.c_out {
                let gi = m / mg;
                for r in 0..oh {
                    for q in 0..ow {
                        let mut acc = bias[m];
                        for c in 0..cg {
                            for a in 0..kh {
                                for bb in 0..kw {
                                    let y = (r * win.strides[0] + a * win.dilations[0]) as i64 - win.pad_begin[0];
                                    let xx = (q * win.strides[1] + bb * win.dilations[1]) as i64 - win.pad_begin[1];
                                    if y < 0 || xx < 0 || y >= ih as i64 || xx >= iw as i64 {
                                        continue;
                                    }
                                    let xi = ((n * g.c_in + gi * cg + c) * ih + y as usize) * iw + xx as usize;
                                    let wi = ((m * cg + c) * kh + a) * kw + bb;
                                    acc += x[xi] * w[wi];
                                }
                            }
                        }
                        out[((n * g.c_out + m) * oh + r) * ow + q] = acc;
                    }
                }
            }
        }
        out
    }

    fn attrs(list: &[(&str, Attr)]) -> Attrs {
        let mut a = Attrs::new();
        for (k, v) in list {
            a.set(k, v.clone());
        }
        a
    }

    fn check_against_naive(x_shape: [usize; 4], w_shape: [usize; 4], a: &Attrs) -> Result<()> {
        let g = conv_geom(a, &x_shape, &w_shape, "Conv")?;
        let x = noise(x_shape.iter().product(), 1);
        let w = noise(w_shape.iter().product(), 2);
        let bias = noise(w_shape[0], 3);
        let mut fast = vec![0.0; g.out_numel()];
        conv_forward(&x, &w, Some(&bias), &g, &mut fast);
        let want = naive_conv2d(&x, &w, &bias, &g);
        assert_eq!(fast.len(), want.len());
        for (i, (a, b)) in fast.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "element {i}: {a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn fast_conv_matches_naive_with_pads_strides_dilations_groups() -> Result<()> {
        let a = attrs(&[
            ("pads", Attr::Ints(vec![1, 2, 2, 0])),
            ("strides", Attr::Ints(vec![2, 1])),
            ("dilations", Attr::Ints(vec![1, 2])),
            ("group", Attr::Int(2)),
        ]);
        check_against_naive([2, 6, 11, 13], [8, 3, 3, 3], &a)
    }

    #[test]
    fn depthwise_and_pointwise_paths_match_naive() -> Result<()> {
        let dw = attrs(&[
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("group", Attr::Int(5)),
        ]);
        check_against_naive([1, 5, 9, 8], [5, 1, 3, 3], &dw)?;
        check_against_naive([1, 7, 6, 5], [4, 7, 1, 1], &Attrs::new())
    }

    #[test]
    fn same_lower_puts_the_extra_pad_first() -> Result<()> {
        let a = attrs(&[
            ("auto_pad", Attr::String("SAME_LOWER".into())),
            ("strides", Attr::Ints(vec![2, 2])),
        ]);
        let g = conv_geom(&a, &[1, 1, 6, 6], &[1, 1, 2, 2], "Conv")?;
        assert_eq!(g.window.grid, vec![3, 3]);
        assert_eq!(g.window.pad_begin, vec![0, 0]);
        let g = conv_geom(&a, &[1, 1, 5, 5], &[1, 1, 2, 2], "Conv")?;
        assert_eq!(g.window.pad_begin, vec![1, 1]);
        Ok(())
    }

    #[test]
    fn bad_shapes_and_attributes_are_errors() {
        let msg = conv_geom(&Attrs::new(), &[1, 4, 5, 5], &[2, 3, 3, 3], "Conv")
            .err()
            .map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("4 channels") && m.contains("expects 3")));
        assert!(conv_geom(&Attrs::new(), &[1, 1, 2, 2], &[1, 1, 3, 3], "Conv").is_err());
        let bad_pads = attrs(&[("pads", Attr::Ints(vec![1, 1]))]);
        assert!(conv_geom(&bad_pads, &[1, 1, 5, 5], &[1, 1, 3, 3], "Conv").is_err());
    }

    fn run(kind: ConvOp, attrs: &Attrs, inputs: &[&Tensor]) -> Result<Tensor> {
        let op = crate::op::Op {
            kind: crate::op::OpKind::Conv(kind),
            attrs: attrs.clone(),
            version: 22,
        };
        let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|&t| Some(t)).collect();
        let mut out = op.eval(&inputs, 1)?;
        out.pop().ok_or_else(|| Error::Internal("no output".into()))
    }

    #[test]
    fn deform_conv_with_zero_offsets_is_conv() -> Result<()> {
        // 1-D and 3-D exercise the N-d sampling; a zero offset samples the grid points exactly.
        for (x_shape, w_shape, grid) in [
            (vec![1, 2, 9], vec![3, 2, 3], vec![5]),
            (vec![1, 2, 4, 5, 4], vec![2, 2, 2, 3, 2], vec![3, 3, 3]),
        ] {
            let a = attrs(&[
                ("strides", Attr::Ints(vec![2; grid.len()])),
                ("pads", Attr::Ints(vec![1; 2 * grid.len()])),
            ]);
            let x = Tensor::from_vec(x_shape.clone(), noise(x_shape.iter().product(), 7))?;
            let w = Tensor::from_vec(w_shape.clone(), noise(w_shape.iter().product(), 8))?;
            let taps: usize = w_shape[2..].iter().product();
            let off_shape: Vec<usize> = [1, taps * grid.len()].into_iter().chain(grid.iter().copied()).collect();
            let offset = Tensor::zeros(DType::F32, off_shape)?;
            let want = run(ConvOp::Conv, &a, &[&x, &w])?;
            let got = run(ConvOp::DeformConv, &a, &[&x, &w, &offset])?;
            assert_eq!(got.shape(), want.shape());
            for (g, w) in got.slice::<f32>()?.iter().zip(want.slice::<f32>()?) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
        }
        Ok(())
    }

    #[test]
    fn conv_transpose_is_the_adjoint_of_conv() -> Result<()> {
        // <conv(x), y> == <x, conv_transpose(y)> with the same weights and window.
        let a = attrs(&[
            ("pads", Attr::Ints(vec![1, 0, 0, 1])),
            ("strides", Attr::Ints(vec![2, 3])),
        ]);
        let g = conv_geom(&a, &[1, 3, 7, 8], &[2, 3, 3, 2], "Conv")?;
        let x = noise(3 * 7 * 8, 4);
        let w = noise(2 * 3 * 3 * 2, 5);
        let y = noise(g.out_numel(), 6);
        let mut cx = vec![0.0f32; g.out_numel()];
        conv_forward(&x, &w, None, &g, &mut cx);
        let t = ConvGeom {
            n: 1,
            c_in: 2,
            c_out: 3,
            group: 1,
            window: g.window.clone(),
        };
        let mut ty = vec![0.0f32; x.len()];
        conv_transpose_forward(&y, &w, None, &t, &mut ty);
        let lhs: f32 = cx.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&ty).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs}");
        Ok(())
    }
}
