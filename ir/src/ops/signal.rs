//! The signal-processing op family: DFT (opset 17's `axis` attribute and opset 20's `axis`
//! input; forward, inverse, RFFT and IRFFT), STFT, the Hann, Hamming and Blackman windows,
//! and MelWeightMatrix.
//!
//! Complex tensors are real tensors with a trailing axis of 2 (real, imaginary); real
//! signals have a trailing axis of 1. Transforms run through a mixed-radix FFT (naive DFT
//! on prime factors) in the input's precision, with twiddle factors computed in f64.

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{demote, promote};
use crate::shape::{fmt_shape, normalize_axis};
use crate::tensor::{Elem, Tensor};
use num_traits::Float;

crate::op_family! {
    /// Ops of the signal family.
    pub enum SignalOp { DFT, STFT, HannWindow, HammingWindow, BlackmanWindow, MelWeightMatrix }
}

impl SignalOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        match self {
            SignalOp::DFT => {
                let dtype = float_input(cx, 0, "DFT", "input")?;
                let shape = DftParams::parse(cx)?.map(|p| p.out_shape());
                Ok(vec![ValueType { dtype, shape }])
            }
            SignalOp::STFT => {
                let dtype = float_input(cx, 0, "STFT", "signal")?;
                let shape = StftParams::parse(cx)?.map(|p| p.out_shape());
                Ok(vec![ValueType { dtype, shape }])
            }
            SignalOp::HannWindow | SignalOp::HammingWindow | SignalOp::BlackmanWindow => {
                let dtype = output_datatype(cx.attrs)?;
                let size = int_scalar(cx, 0, self.name(), "size")?;
                let shape = size.map(|s| non_negative(s, self.name(), "size")).transpose()?.map(|s| vec![s]);
                Ok(vec![ValueType { dtype, shape }])
            }
            SignalOp::MelWeightMatrix => {
                let dtype = output_datatype(cx.attrs)?;
                let name = "MelWeightMatrix";
                let bins = int_scalar(cx, 0, name, "num_mel_bins")?;
                let dft_length = int_scalar(cx, 1, name, "dft_length")?;
                int_scalar(cx, 2, name, "sample_rate")?;
                float_input(cx, 3, name, "lower_edge_hertz")?;
                float_input(cx, 4, name, "upper_edge_hertz")?;
                for (i, what) in [(3, "lower_edge_hertz"), (4, "upper_edge_hertz")] {
                    scalar_shape(cx, i, name, what)?;
                }
                let shape = match (bins, dft_length) {
                    (Some(bins), Some(len)) => {
                        let bins = positive(bins, name, "num_mel_bins")?;
                        let len = positive(len, name, "dft_length")?;
                        Some(vec![len / 2 + 1, bins])
                    }
                    _ => None,
                };
                Ok(vec![ValueType { dtype, shape }])
            }
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        let dtype = cx.out_dtype(0)?;
        let shape = cx.out_shape(0)?.to_vec();
        let out = match self {
            SignalOp::DFT => {
                let p = DftParams::from_eval(cx)?;
                let x = promote(cx.input(0)?);
                let y = crate::with_float!(x.dtype(), "DFT", T => eval_dft::<T>(&p, &x, shape)?);
                demote(y, dtype)
            }
            SignalOp::STFT => {
                let p = StftParams::from_eval(cx)?;
                let x = promote(cx.input(0)?);
                let window = cx.opt(2).map(promote);
                let y = crate::with_float!(x.dtype(), "STFT", T => eval_stft::<T>(&p, &x, window.as_deref(), shape)?);
                demote(y, dtype)
            }
            SignalOp::HannWindow | SignalOp::HammingWindow | SignalOp::BlackmanWindow => {
                cosine_window(self, cx.attrs, dtype, shape)?
            }
            SignalOp::MelWeightMatrix => eval_mel(cx, dtype, shape)?,
        };
        Ok(vec![out])
    }
}

/// The output of window op `op` (HannWindow, HammingWindow, BlackmanWindow) of `shape`
/// (`[size]`): the cosine-sum window `a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N)`, with
/// `N` the size (periodic) or the size - 1 (symmetric; a symmetric window of one point is
/// [1]).
pub fn cosine_window(op: SignalOp, attrs: &Attrs, dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
    let (a0, a1, a2) = match op {
        SignalOp::HannWindow => (0.5, 0.5, 0.0),
        SignalOp::HammingWindow => (25.0 / 46.0, 21.0 / 46.0, 0.0),
        SignalOp::BlackmanWindow => (0.42, 0.5, 0.08),
        _ => return Err(Error::Internal(format!("{} is not a window op", op.name()))),
    };
    let periodic = attrs.int_or("periodic", 1)? != 0;
    let size = shape.first().copied().unwrap_or(0);
    let period = if periodic { size } else { size.saturating_sub(1) };
    Tensor::from_fn_f64(dtype, shape, |n| {
        if period == 0 {
            return 1.0;
        }
        let phase = 2.0 * std::f64::consts::PI * n as f64 / period as f64;
        a0 - a1 * phase.cos() + a2 * (2.0 * phase).cos()
    })
}

fn float_input(cx: &InferCx, i: usize, op: &str, what: &str) -> Result<DType> {
    let dtype = cx.dtype(i)?;
    if !dtype.is_float() {
        return Err(Error::InvalidModel(format!("{op} input '{what}' must be a float tensor, got {dtype}")));
    }
    Ok(dtype)
}

fn scalar_shape(cx: &InferCx, i: usize, op: &str, what: &str) -> Result<()> {
    if let Some(s) = cx.shape(i)?
        && s.iter().product::<usize>() != 1
    {
        return Err(Error::InvalidModel(format!("{op} input '{what}' must be a scalar, got shape {}", fmt_shape(s))));
    }
    Ok(())
}

/// A required int32/int64 scalar input: its value when known.
fn int_scalar(cx: &InferCx, i: usize, op: &str, what: &str) -> Result<Option<i64>> {
    let dtype = cx.dtype(i)?;
    if !matches!(dtype, DType::I32 | DType::I64) {
        return Err(Error::InvalidModel(format!("{op} input '{what}' must be int32 or int64, got {dtype}")));
    }
    scalar_shape(cx, i, op, what)?;
    cx.value(i)?.map(|t| t.scalar_i64()).transpose()
}

/// An optional int scalar input: `None` when omitted, `Some(None)` when unknown.
fn opt_int_scalar(cx: &InferCx, i: usize, op: &str, what: &str) -> Result<Option<Option<i64>>> {
    match cx.opt(i) {
        None => Ok(None),
        Some(_) => int_scalar(cx, i, op, what).map(Some),
    }
}

fn non_negative(v: i64, op: &str, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::InvalidModel(format!("{op} '{what}' must not be negative, got {v}")))
}

fn positive(v: i64, op: &str, what: &str) -> Result<usize> {
    match usize::try_from(v) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::InvalidModel(format!("{op} '{what}' must be positive, got {v}"))),
    }
}

/// The `output_datatype` attribute of the window ops and MelWeightMatrix (default float).
fn output_datatype(attrs: &Attrs) -> Result<DType> {
    let code = attrs.int_or("output_datatype", 1)?;
    let code32 = i32::try_from(code).unwrap_or(-1);
    match DType::from_onnx_code(code32) {
        Some(DType::Bool) | None => Err(Error::InvalidModel(format!(
            "attribute 'output_datatype' must be a numeric data type, got {code} ({})",
            DType::onnx_code_name(code32)
        ))),
        Some(d) => Ok(d),
    }
}

// ---------------------------------------------------------------------------------------
// Complex arithmetic and the FFT.

#[derive(Clone, Copy, Debug, PartialEq)]
struct Complex<T> {
    re: T,
    im: T,
}

impl<T: Float> Complex<T> {
    fn zero() -> Self {
        Complex { re: T::zero(), im: T::zero() }
    }

    #[inline]
    fn add(self, o: Self) -> Self {
        Complex { re: self.re + o.re, im: self.im + o.im }
    }

    #[inline]
    fn mul(self, o: Self) -> Self {
        Complex { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }

    fn conj(self) -> Self {
        Complex { re: self.re, im: -self.im }
    }
}

/// A planned forward DFT of one length: `X[k] = sum_n x[n] e^{-2 pi i k n / N}`.
struct Fft<T> {
    len: usize,
    /// `e^{-2 pi i j / len}` for `j < len`.
    twiddles: Vec<Complex<T>>,
    /// Holds one butterfly's inputs (as long as the largest prime factor).
    scratch: Vec<Complex<T>>,
}

fn smallest_factor(n: usize) -> usize {
    let mut p = 2;
    while p * p <= n {
        if n.is_multiple_of(p) {
            return p;
        }
        p += 1;
    }
    n
}

impl<T: Float> Fft<T> {
    fn new(len: usize) -> Fft<T> {
        let twiddles = (0..len)
            .map(|j| {
                let angle = -2.0 * std::f64::consts::PI * j as f64 / len as f64;
                let c = |v: f64| T::from(v).unwrap_or_else(T::nan);
                Complex { re: c(angle.cos()), im: c(angle.sin()) }
            })
            .collect();
        Fft { len, twiddles, scratch: Vec::new() }
    }

    /// `out = DFT(x)`; both have length `len`.
    fn forward(&mut self, x: &[Complex<T>], out: &mut [Complex<T>]) {
        if self.len == 0 {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        self.transform(x, 1, self.len, out, 1, &mut scratch);
        self.scratch = scratch;
    }

    /// `out = x / len` transformed backwards: `x[n] = 1/N sum_k X[k] e^{2 pi i k n / N}`.
    fn inverse(&mut self, x: &mut [Complex<T>], out: &mut [Complex<T>]) {
        for v in x.iter_mut() {
            *v = v.conj();
        }
        self.forward(x, out);
        let scale = T::one() / T::from(self.len).unwrap_or_else(T::nan);
        for v in out.iter_mut() {
            *v = Complex { re: v.re * scale, im: -v.im * scale };
        }
    }

    /// DFT of the `n` points `x[0], x[stride], ...` into `out[..n]`; `tw_step` maps this
    /// length's twiddle exponents onto the full table.
    fn transform(
        &self,
        x: &[Complex<T>],
        stride: usize,
        n: usize,
        out: &mut [Complex<T>],
        tw_step: usize,
        scratch: &mut Vec<Complex<T>>,
    ) {
        if n == 1 {
            out[0] = x[0];
            return;
        }
        let p = smallest_factor(n);
        let m = n / p;
        let tw = |e: usize| self.twiddles[(e % n) * tw_step];
        if m == 1 {
            // Prime length: the direct sum, with the exponent j*k kept reduced mod n.
            for (k, o) in out[..n].iter_mut().enumerate() {
                let mut acc = Complex::zero();
                let mut e = 0;
                for j in 0..n {
                    acc = acc.add(x[j * stride].mul(self.twiddles[e * tw_step]));
                    e = (e + k) % n;
                }
                *o = acc;
            }
            return;
        }
        // Decimation in time: p interleaved sub-transforms of length m, then radix-p
        // butterflies combining out[r*m + q] (r < p) into out[q + s*m] (s < p).
        for r in 0..p {
            self.transform(&x[r * stride..], stride * p, m, &mut out[r * m..(r + 1) * m], tw_step * p, scratch);
        }
        scratch.clear();
        scratch.resize(p, Complex::zero());
        for q in 0..m {
            for r in 0..p {
                scratch[r] = out[r * m + q];
            }
            for s in 0..p {
                let k = q + s * m;
                let mut acc = scratch[0];
                for (r, &y) in scratch.iter().enumerate().skip(1) {
                    acc = acc.add(y.mul(tw(r * k)));
                }
                out[k] = acc;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// DFT

/// A DFT node's settings, resolved against its input shape.
#[derive(Clone, Debug)]
struct DftParams {
    inverse: bool,
    onesided: bool,
    in_shape: Vec<usize>,
    /// The transformed axis, in `[0, rank - 1)`.
    axis: usize,
    /// The transform length.
    len: usize,
}

impl DftParams {
    /// The settings when every needed shape and value is known.
    fn parse(cx: &InferCx) -> Result<Option<DftParams>> {
        let inverse = cx.attrs.int_or("inverse", 0)? != 0;
        let onesided = cx.attrs.int_or("onesided", 0)? != 0;
        let dft_length = opt_int_scalar(cx, 1, "DFT", "dft_length")?;
        let axis = if cx.version >= 20 {
            if cx.attrs.has("axis") {
                return Err(Error::InvalidModel(
                    "DFT takes 'axis' as its third input from opset 20, not as an attribute".into(),
                ));
            }
            match cx.opt(2) {
                None => Some(-2),
                Some(f) if f.ty.dtype != DType::I64 => {
                    return Err(Error::InvalidModel(format!("DFT input 'axis' must be int64, got {}", f.ty.dtype)));
                }
                Some(_) => opt_int_scalar(cx, 2, "DFT", "axis")?.flatten(),
            }
        } else {
            if cx.opt(2).is_some() {
                return Err(Error::InvalidModel(format!(
                    "DFT takes 'axis' as an input from opset 20, the model is opset {}",
                    cx.version
                )));
            }
            Some(cx.attrs.int_or("axis", 1)?)
        };
        let Some(in_shape) = cx.shape(0)? else { return Ok(None) };
        let rank = in_shape.len();
        let complex = match in_shape.last() {
            Some(1) => false,
            Some(2) => true,
            _ => {
                return Err(Error::InvalidModel(format!(
                    "DFT input must end in an axis of 1 (real) or 2 (complex), got shape {}",
                    fmt_shape(in_shape)
                )));
            }
        };
        if rank < 2 {
            return Err(Error::InvalidModel(format!(
                "DFT input needs a signal axis before the complex axis, got shape {}",
                fmt_shape(in_shape)
            )));
        }
        if onesided && !inverse && complex {
            return Err(Error::InvalidModel("DFT with onesided=1 (RFFT) takes a real input [...,1], got complex [...,2]".into()));
        }
        if onesided && inverse && !complex {
            return Err(Error::InvalidModel("DFT with onesided=1 and inverse=1 (IRFFT) takes a complex input [...,2], got real [...,1]".into()));
        }
        let Some(axis) = axis else { return Ok(None) };
        let axis = normalize_axis(axis, rank)?;
        if axis == rank - 1 {
            return Err(Error::InvalidModel(format!(
                "DFT axis {axis} is the complex axis of a rank-{rank} input; it must be in [-{rank}, -2] or [0, {}]",
                rank - 2
            )));
        }
        let len = match dft_length {
            Some(None) => return Ok(None),
            Some(Some(l)) => l,
            None if onesided && inverse => 2 * (in_shape[axis] as i64 - 1),
            None => in_shape[axis] as i64,
        };
        let len = positive(len, "DFT", "dft_length")?;
        Ok(Some(DftParams { inverse, onesided, in_shape: in_shape.to_vec(), axis, len }))
    }

    fn from_eval(cx: &EvalCx) -> Result<DftParams> {
        let types: Vec<Option<ValueType>> = cx.inputs.iter().map(|t| t.map(ValueType::of)).collect();
        let facts: Vec<_> = types
            .iter()
            .zip(cx.inputs)
            .map(|(ty, t)| ty.as_ref().map(|ty| crate::op::Fact { ty, value: *t }))
            .collect();
        let icx = InferCx { attrs: cx.attrs, version: cx.version, inputs: &facts, num_outputs: 1 };
        DftParams::parse(&icx)?.ok_or_else(|| Error::Internal("DFT settings unknown at evaluation".into()))
    }

    /// How many points of the input's axis the transform reads (the half spectrum for IRFFT).
    fn points_read(&self) -> usize {
        if self.onesided && self.inverse { self.len / 2 + 1 } else { self.len }
    }

    fn out_shape(&self) -> Vec<usize> {
        let mut s = self.in_shape.clone();
        s[self.axis] = if self.onesided && !self.inverse { self.len / 2 + 1 } else { self.len };
        let last = s.len() - 1;
        s[last] = if self.onesided && self.inverse { 1 } else { 2 };
        s
    }
}

fn eval_dft<T: Float + Elem>(p: &DftParams, x: &Tensor, out_shape: Vec<usize>) -> Result<Tensor> {
    let xv = x.slice::<T>()?;
    let rank = p.in_shape.len();
    let outer: usize = p.in_shape[..p.axis].iter().product();
    let inner: usize = p.in_shape[p.axis + 1..rank - 1].iter().product();
    let (in_len, in_c) = (p.in_shape[p.axis], p.in_shape[rank - 1]);
    let (out_len, out_c) = (out_shape[p.axis], out_shape[rank - 1]);
    let n = p.len;
    let read = p.points_read().min(in_len);
    let mut out = vec![T::zero(); out_shape.iter().product()];
    let mut fft = Fft::<T>::new(n);
    let mut signal = vec![Complex::zero(); n];
    let mut spectrum = vec![Complex::zero(); n];
    for o in 0..outer {
        for i in 0..inner {
            signal.fill(Complex::zero());
            for (k, s) in signal[..read].iter_mut().enumerate() {
                let at = ((o * in_len + k) * inner + i) * in_c;
                *s = Complex { re: xv[at], im: if in_c == 2 { xv[at + 1] } else { T::zero() } };
            }
            match (p.inverse, p.onesided) {
                (false, _) => fft.forward(&signal, &mut spectrum),
                (true, false) => fft.inverse(&mut signal, &mut spectrum),
                (true, true) => {
                    // IRFFT: complete the half spectrum by Hermitian symmetry (the imaginary
                    // parts at 0 and n/2 cannot contribute to a real signal).
                    let half = n / 2;
                    signal[0].im = T::zero();
                    if n.is_multiple_of(2) {
                        signal[half].im = T::zero();
                    }
                    for k in half + 1..n {
                        signal[k] = signal[n - k].conj();
                    }
                    fft.inverse(&mut signal, &mut spectrum);
                }
            }
            for (k, v) in spectrum[..out_len].iter().enumerate() {
                let at = ((o * out_len + k) * inner + i) * out_c;
                out[at] = v.re;
                if out_c == 2 {
                    out[at + 1] = v.im;
                }
            }
        }
    }
    Tensor::from_vec(out_shape, out)
}

// ---------------------------------------------------------------------------------------
// STFT

/// An STFT node's settings, resolved against its input shapes.
#[derive(Clone, Debug)]
struct StftParams {
    onesided: bool,
    batch: usize,
    signal_len: usize,
    complex: bool,
    step: usize,
    frame_len: usize,
    frames: usize,
}

impl StftParams {
    fn parse(cx: &InferCx) -> Result<Option<StftParams>> {
        let op = "STFT";
        let onesided = cx.attrs.int_or("onesided", 1)? != 0;
        let step = int_scalar(cx, 1, op, "frame_step")?;
        let frame_len = opt_int_scalar(cx, 3, op, "frame_length")?;
        let window_len = match cx.opt(2) {
            None => None,
            Some(w) => {
                if w.ty.dtype != cx.dtype(0)? {
                    return Err(Error::InvalidModel(format!(
                        "STFT input 'window' must be {} like the signal, got {}",
                        cx.dtype(0)?,
                        w.ty.dtype
                    )));
                }
                match w.ty.shape.as_deref() {
                    Some([n]) => Some(Some(*n)),
                    Some(s) => {
                        return Err(Error::InvalidModel(format!("STFT input 'window' must have rank 1, got shape {}", fmt_shape(s))));
                    }
                    None => Some(None),
                }
            }
        };
        let Some(shape) = cx.shape(0)? else { return Ok(None) };
        let &[batch, signal_len, c] = shape else {
            return Err(Error::InvalidModel(format!(
                "STFT input 'signal' must have shape [batch, length, 1 or 2], got {}",
                fmt_shape(shape)
            )));
        };
        let complex = match c {
            1 => false,
            2 => true,
            _ => {
                return Err(Error::InvalidModel(format!(
                    "STFT input 'signal' must end in an axis of 1 (real) or 2 (complex), got shape {}",
                    fmt_shape(shape)
                )));
            }
        };
        if onesided && complex {
            return Err(Error::InvalidModel("STFT with onesided=1 takes a real signal [...,1], got complex [...,2]".into()));
        }
        let frame_len = match (frame_len, window_len) {
            (Some(None), _) | (None, Some(None)) => return Ok(None),
            (Some(Some(l)), Some(Some(w))) if l != w as i64 => {
                return Err(Error::InvalidModel(format!(
                    "STFT frame_length {l} differs from the window length {w}"
                )));
            }
            (Some(Some(l)), _) => l,
            (None, Some(Some(w))) => w as i64,
            (None, None) => signal_len as i64,
        };
        let frame_len = positive(frame_len, op, "frame_length")?;
        if frame_len > signal_len {
            return Err(Error::InvalidModel(format!(
                "STFT frame_length {frame_len} exceeds the signal length {signal_len}"
            )));
        }
        let Some(step) = step else { return Ok(None) };
        let step = positive(step, op, "frame_step")?;
        let frames = 1 + (signal_len - frame_len) / step;
        Ok(Some(StftParams { onesided, batch, signal_len, complex, step, frame_len, frames }))
    }

    fn from_eval(cx: &EvalCx) -> Result<StftParams> {
        let types: Vec<Option<ValueType>> = cx.inputs.iter().map(|t| t.map(ValueType::of)).collect();
        let facts: Vec<_> = types
            .iter()
            .zip(cx.inputs)
            .map(|(ty, t)| ty.as_ref().map(|ty| crate::op::Fact { ty, value: *t }))
            .collect();
        let icx = InferCx { attrs: cx.attrs, version: cx.version, inputs: &facts, num_outputs: 1 };
        StftParams::parse(&icx)?.ok_or_else(|| Error::Internal("STFT settings unknown at evaluation".into()))
    }

    fn bins(&self) -> usize {
        if self.onesided { self.frame_len / 2 + 1 } else { self.frame_len }
    }

    fn out_shape(&self) -> Vec<usize> {
        vec![self.batch, self.frames, self.bins(), 2]
    }
}

fn eval_stft<T: Float + Elem>(p: &StftParams, x: &Tensor, window: Option<&Tensor>, out_shape: Vec<usize>) -> Result<Tensor> {
    let xv = x.slice::<T>()?;
    let window = window.map(|w| w.slice::<T>()).transpose()?;
    let c = if p.complex { 2 } else { 1 };
    let bins = p.bins();
    let mut fft = Fft::<T>::new(p.frame_len);
    let mut frame = vec![Complex::zero(); p.frame_len];
    let mut spectrum = vec![Complex::zero(); p.frame_len];
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for b in 0..p.batch {
        for f in 0..p.frames {
            for (k, s) in frame.iter_mut().enumerate() {
                let at = (b * p.signal_len + f * p.step + k) * c;
                let w = window.map_or(T::one(), |w| w[k]);
                *s = Complex { re: xv[at] * w, im: if p.complex { xv[at + 1] * w } else { T::zero() } };
            }
            fft.forward(&frame, &mut spectrum);
            for v in &spectrum[..bins] {
                out.push(v.re);
                out.push(v.im);
            }
        }
    }
    Tensor::from_vec(out_shape, out)
}

// ---------------------------------------------------------------------------------------
// MelWeightMatrix

/// MelWeightMatrix of its input values.
fn eval_mel(cx: &EvalCx, dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
    let dft_length = cx.input(1)?.scalar_i64()?;
    let rate = cx.input(2)?.scalar_i64()?;
    let lower = cx.input(3)?.scalar_f64()?;
    let upper = cx.input(4)?.scalar_f64()?;
    mel_weight_matrix(dtype, shape, dft_length, rate, lower, upper)
}

/// The MelWeightMatrix of `shape` (`[num_spectrogram_bins, num_mel_bins]`) for the values
/// of its inputs.
///
/// Triangular filters between `num_mel_bins + 2` points evenly spaced on the mel scale
/// (`mel(f) = 2595 log10(1 + f/700)`) from `lower_edge_hertz` up to (not including)
/// `upper_edge_hertz`, each point mapped to the DFT bin `floor((dft_length + 1) f / rate)`.
/// As in ONNX Runtime, `upper_edge_hertz` itself must map to a bin of the spectrogram.
pub fn mel_weight_matrix(
    dtype: DType,
    shape: Vec<usize>,
    dft_length: i64,
    rate: i64,
    lower: f64,
    upper: f64,
) -> Result<Tensor> {
    let &[num_spec_bins, num_mel_bins] = shape.as_slice() else {
        return Err(Error::Internal(format!("MelWeightMatrix output {} is not 2-D", fmt_shape(&shape))));
    };
    if rate <= 0 {
        return Err(Error::InvalidInput(format!("MelWeightMatrix sample_rate must be positive, got {rate}")));
    }
    let bin_of = |hz: f64| (((dft_length + 1) as f64 * hz) / rate as f64).floor();
    if !(0.0 <= lower && lower <= upper) {
        return Err(Error::InvalidInput(format!(
            "MelWeightMatrix needs 0 <= lower_edge_hertz <= upper_edge_hertz, got {lower} and {upper}"
        )));
    }
    if bin_of(upper) >= num_spec_bins as f64 {
        return Err(Error::InvalidInput(format!(
            "MelWeightMatrix upper_edge_hertz {upper} falls on DFT bin {}, past the {num_spec_bins} bins of a \
             {dft_length}-point DFT at sample_rate {rate}",
            bin_of(upper)
        )));
    }
    let mel = |hz: f64| 2595.0 * (1.0 + hz / 700.0).log10();
    let (low_mel, high_mel) = (mel(lower), mel(upper));
    let points = num_mel_bins + 2;
    let step = (high_mel - low_mel) / points as f64;
    let bins: Vec<usize> = (0..points)
        .map(|i| {
            let hz = 700.0 * (10f64.powf((low_mel + i as f64 * step) / 2595.0) - 1.0);
            // In [0, bin_of(upper)], checked above.
            bin_of(hz).max(0.0) as usize
        })
        .collect();
    let mut out = vec![0.0f64; num_spec_bins * num_mel_bins];
    let mut set = |row: usize, col: usize, v: f64| -> Result<()> {
        let cell = out.get_mut(row * num_mel_bins + col).filter(|_| row < num_spec_bins).ok_or_else(|| {
            Error::Internal(format!("MelWeightMatrix bin {row} is past the {num_spec_bins} spectrogram bins"))
        })?;
        *cell = v;
        Ok(())
    };
    for i in 0..num_mel_bins {
        let (left, center, right) = (bins[i], bins[i + 1], bins[i + 2]);
        if center == left {
            set(center, i, 1.0)?;
        } else {
            for j in left..=center {
                set(j, i, (j - left) as f64 / (center - left) as f64)?;
            }
        }
        for j in center..right {
            set(j, i, (right - j) as f64 / (right - center) as f64)?;
        }
    }
    Tensor::from_fn_f64(dtype, shape, |i| out[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::{Op, OpKind};

    fn node(op: SignalOp, version: u32, attrs: &[(&str, Attr)]) -> Op {
        let mut a = Attrs::new();
        for (k, v) in attrs {
            a.set(k, v.clone());
        }
        Op { kind: OpKind::Signal(op), attrs: a, version }
    }

    fn close(got: &Tensor, want: &[f64]) {
        let g = got.to_f64_vec();
        assert_eq!(g.len(), want.len(), "{got:?}");
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{got:?} vs {want:?}");
        }
    }

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every length from 1 to 40 (primes, powers of two, mixed) against the direct sum.
    #[test]
    fn fft_matches_direct_dft() {
        for n in 1..=40usize {
            let x: Vec<Complex<f64>> =
                (0..n).map(|j| Complex { re: (j as f64 * 0.7).sin(), im: (j as f64 * 0.3).cos() }).collect();
            let mut out = vec![Complex::zero(); n];
            Fft::<f64>::new(n).forward(&x, &mut out);
            for (k, o) in out.iter().enumerate() {
                let (mut re, mut im) = (0.0, 0.0);
                for (j, v) in x.iter().enumerate() {
                    let a = -2.0 * std::f64::consts::PI * (j * k) as f64 / n as f64;
                    re += v.re * a.cos() - v.im * a.sin();
                    im += v.re * a.sin() + v.im * a.cos();
                }
                assert!((o.re - re).abs() < 1e-9 && (o.im - im).abs() < 1e-9, "n={n} k={k}");
            }
        }
    }

    /// RFFT of [1, 2, 3, 4] is [10, -2+2i, -2]; IRFFT brings the signal back, and the
    /// opset-17 attribute form agrees with the opset-20 input form.
    #[test]
    fn rfft_and_irfft_round_trip() {
        let x = ok(Tensor::from_vec(vec![1, 4, 1], vec![1.0f32, 2.0, 3.0, 4.0]));
        let rfft = node(SignalOp::DFT, 17, &[("onesided", Attr::Int(1)), ("axis", Attr::Int(1))]);
        let y = ok(rfft.eval(&[Some(&x)], 1)).remove(0);
        assert_eq!(y.shape(), &[1, 3, 2]);
        close(&y, &[10.0, 0.0, -2.0, 2.0, -2.0, 0.0]);
        let axis = Tensor::scalar(1i64);
        let irfft = node(SignalOp::DFT, 20, &[("onesided", Attr::Int(1)), ("inverse", Attr::Int(1))]);
        let back = ok(irfft.eval(&[Some(&y), None, Some(&axis)], 1)).remove(0);
        assert_eq!(back.shape(), &[1, 4, 1]);
        close(&back, &[1.0, 2.0, 3.0, 4.0]);
    }

    /// dft_length pads with zeros: the DFT of [1] padded to 2 is [1, 1]; the inverse of a
    /// complex impulse divides by the length.
    #[test]
    fn dft_length_pads_and_inverse_normalizes() {
        let x = ok(Tensor::from_vec(vec![1, 1], vec![1.0f64]));
        let len = Tensor::scalar(2i64);
        let axis = Tensor::scalar(0i64);
        let y = ok(node(SignalOp::DFT, 20, &[]).eval(&[Some(&x), Some(&len), Some(&axis)], 1)).remove(0);
        close(&y, &[1.0, 0.0, 1.0, 0.0]);
        let spec = ok(Tensor::from_vec(vec![2, 2], vec![2.0f64, 0.0, 0.0, 0.0]));
        let inv = node(SignalOp::DFT, 20, &[("inverse", Attr::Int(1))]);
        let back = ok(inv.eval(&[Some(&spec), None, Some(&axis)], 1)).remove(0);
        close(&back, &[1.0, 0.0, 1.0, 0.0]);
    }

    /// f16 input is transformed in f32 and returned as f16.
    #[test]
    fn dft_half_precision_round_trips_dtype() {
        let x = Tensor::from_vec(vec![2, 1], vec![half::f16::from_f32(1.0), half::f16::from_f32(2.0)]);
        let y = ok(node(SignalOp::DFT, 20, &[]).eval(&[Some(&ok(x)), None, Some(&Tensor::scalar(0i64))], 1)).remove(0);
        assert_eq!(y.dtype(), DType::F16);
        close(&y, &[3.0, 0.0, -1.0, 0.0]);
    }

    #[test]
    fn dft_rejects_complex_axis_and_complex_rfft() {
        let x = ok(Tensor::from_vec(vec![2, 2], vec![1.0f32, 0.0, 1.0, 0.0]));
        let axis = Tensor::scalar(-1i64);
        assert!(node(SignalOp::DFT, 20, &[]).eval(&[Some(&x), None, Some(&axis)], 1).is_err());
        assert!(node(SignalOp::DFT, 17, &[("axis", Attr::Int(0)), ("onesided", Attr::Int(1))]).eval(&[Some(&x)], 1).is_err());
    }

    /// Frames of 4 with step 2 over 6 samples, under a window [0, 1, 1, 0]: each frame's
    /// spectrum is that of its two middle samples.
    #[test]
    fn stft_frames_and_window() {
        let x = ok(Tensor::from_vec(vec![1, 6, 1], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let step = Tensor::scalar(2i64);
        let window = ok(Tensor::from_vec(vec![4], vec![0.0f32, 1.0, 1.0, 0.0]));
        let y = ok(node(SignalOp::STFT, 17, &[]).eval(&[Some(&x), Some(&step), Some(&window)], 1)).remove(0);
        assert_eq!(y.shape(), &[1, 2, 3, 2]);
        // Frame [0,2,3,0]: X0 = 5, X1 = 2(-i) + 3(-1) = -3-2i, X2 = -2+3 = 1.
        // Frame [0,4,5,0]: X0 = 9, X1 = -5-4i, X2 = 1.
        close(&y, &[5.0, 0.0, -3.0, -2.0, 1.0, 0.0, 9.0, 0.0, -5.0, -4.0, 1.0, 0.0]);
    }

    #[test]
    fn windows_periodic_and_symmetric() {
        let size = Tensor::scalar(4i32);
        let hann = ok(node(SignalOp::HannWindow, 17, &[]).eval(&[Some(&size)], 1)).remove(0);
        close(&hann, &[0.0, 0.5, 1.0, 0.5]);
        let sym = ok(node(SignalOp::HannWindow, 17, &[("periodic", Attr::Int(0))]).eval(&[Some(&size)], 1)).remove(0);
        close(&sym, &[0.0, 0.75, 0.75, 0.0]);
        let hamming = ok(node(SignalOp::HammingWindow, 17, &[]).eval(&[Some(&size)], 1)).remove(0);
        close(&hamming, &[4.0 / 46.0, 25.0 / 46.0, 1.0, 25.0 / 46.0]);
        let dbl = [("output_datatype", Attr::Int(11))];
        let blackman = ok(node(SignalOp::BlackmanWindow, 17, &dbl).eval(&[Some(&size)], 1)).remove(0);
        assert_eq!(blackman.dtype(), DType::F64);
        close(&blackman, &[0.0, 0.34, 1.0, 0.34]);
        assert!(node(SignalOp::HannWindow, 17, &[]).eval(&[Some(&Tensor::scalar(-1i64))], 1).is_err());
    }

    /// 1 mel bin over [0, 4000] Hz at 8000 Hz with a 16-point DFT: the three mel points
    /// fall on DFT bins 0, 1 and 3 (floors of 0, 1.3 and 3.8), a triangle peaking at 1.
    #[test]
    fn mel_weight_matrix_triangle() {
        let i = |v: i32| Tensor::scalar(v);
        let f = |v: f32| Tensor::scalar(v);
        let (bins, len, rate, lo, hi) = (i(1), i(16), i(8000), f(0.0), f(4000.0));
        let m = ok(node(SignalOp::MelWeightMatrix, 17, &[])
            .eval(&[Some(&bins), Some(&len), Some(&rate), Some(&lo), Some(&hi)], 1))
        .remove(0);
        assert_eq!(m.shape(), &[9, 1]);
        close(&m, &[0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let too_high = f(5000.0);
        assert!(node(SignalOp::MelWeightMatrix, 17, &[])
            .eval(&[Some(&bins), Some(&len), Some(&rate), Some(&lo), Some(&too_high)], 1)
            .is_err());
    }
}
