//! Rules of the signal family. Every transform is linear with a static length, so `DFT`
//! (forward, inverse, RFFT, IRFFT with Hermitian completion) is one MatMul of the signal,
//! moved to `[rows, points * (re, im)]`, with a constant real matrix of cos/sin
//! coefficients (computed in f64 with exponents reduced mod the length, cast to the compute
//! dtype). `STFT` frames the signal with one sliding-window View, multiplies by the window,
//! and applies the same matrix. The window functions and `MelWeightMatrix` are constants
//! of their static output shape. f16/bf16 compute in f32, like the reference.

use crate::rules::err;
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::compute_dtype;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::ViewMap;
use ir::OpKind;
use ir::ops::signal::{SignalOp, cosine_window, mel_weight_matrix};
use ir::{Result, Tensor};
use std::f64::consts::PI;

pub const RULES: &[Rule] = &[
    Rule {
        name: "signal/dft-matmul",
        identity: "DFT(x) = x·M with M[(j,re|im),(k,re|im)] the cos/sin of 2πjk/n (1/n and conjugate for the inverse)",
        action: Action::Lower { ops: &["DFT"], apply: dft },
    },
    Rule {
        name: "signal/stft-frames",
        identity: "STFT(x) = (frames(x) ⊙ window)·M, frames a sliding-window View",
        action: Action::Lower { ops: &["STFT"], apply: stft },
    },
    Rule {
        name: "signal/window-const",
        identity: "Hann/Hamming/BlackmanWindow(size) = a0 - a1 cos(2πn/N) + a2 cos(4πn/N), a constant",
        action: Action::Lower { ops: &["HannWindow", "HammingWindow", "BlackmanWindow"], apply: window },
    },
    Rule {
        name: "signal/mel-const",
        identity: "MelWeightMatrix(...) = triangular mel filters, a constant of constant inputs",
        action: Action::Lower { ops: &["MelWeightMatrix"], apply: mel },
    },
];


/// A constant scalar input as i64.
fn const_int(lx: &Lx, x: Id, what: &str) -> Result<i64> {
    let v = lx.const_i64s(x, what)?;
    match v.as_slice() {
        [e] => Ok(*e),
        _ => Err(err(format!("{what} must be a scalar"))),
    }
}

/// What the transform does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Inverse,
    /// Inverse of a half spectrum completed by Hermitian symmetry, real output.
    InverseReal,
}

/// The real matrix `[read * cin, out_len * cout]` of a length-`n` transform reading `read`
/// points with `cin` components and writing `out_len` bins with `cout` components.
fn dft_matrix(mode: Mode, n: usize, read: usize, cin: usize, out_len: usize, cout: usize) -> Vec<f64> {
    let mut m = vec![0.0f64; read * cin * out_len * cout];
    let angle = |j: usize, k: usize| 2.0 * PI * ((j * k) % n) as f64 / n as f64;
    let half = n / 2;
    for j in 0..read {
        for k in 0..out_len {
            let th = angle(j, k);
            let (c, s) = (th.cos(), th.sin());
            let at = |ci: usize, co: usize| (j * cin + ci) * out_len * cout + k * cout + co;
            match mode {
                Mode::Forward | Mode::Inverse => {
                    // Complex coefficient a = e^{-iθ} (forward) or e^{iθ}/n (inverse).
                    let (ar, ai) = if mode == Mode::Forward { (c, -s) } else { (c / n as f64, s / n as f64) };
                    m[at(0, 0)] = ar;
                    m[at(0, 1)] = ai;
                    if cin == 2 {
                        m[at(1, 0)] = -ai;
                        m[at(1, 1)] = ar;
                    }
                }
                Mode::InverseReal => {
                    // Point j stands for itself and, when it has one, its mirror n - j.
                    let mirror = j >= 1 && j < n - half;
                    let wr = if mirror { 2.0 } else { 1.0 };
                    let zero_im = j == 0 || (n.is_multiple_of(2) && j == half);
                    let wi = if zero_im { 0.0 } else { wr };
                    m[at(0, 0)] = wr * c / n as f64;
                    if cin == 2 {
                        m[at(1, 0)] = -wi * s / n as f64;
                    }
                }
            }
        }
    }
    m
}

/// Applies the transform along `axis` of `x` (whose last axis holds the components),
/// reading the first `read` points: returns `[.., out_len, .., cout]`.
#[allow(clippy::too_many_arguments)]
fn transform(
    lx: &mut Lx,
    x: Id,
    axis: usize,
    mode: Mode,
    n: usize,
    read: usize,
    out_len: usize,
    cout: usize,
) -> Result<Id> {
    let s = lx.shape(x)?;
    let rank = s.len();
    let cin = s[rank - 1];
    let cdt = lx.dtype(x)?;
    let mut ax: Vec<(i64, usize, i64)> = s.iter().map(|&d| (0, d, 1)).collect();
    ax[axis] = (0, read, 1);
    let x = lx.strided(x, &ax)?;
    // [outer.., inner.., read, cin]
    let mut perm: Vec<usize> = (0..axis).collect();
    perm.extend(axis + 1..rank - 1);
    perm.extend([axis, rank - 1]);
    let xt = lx.transpose(x, &perm)?;
    let rows: usize = s[..axis].iter().product::<usize>() * s[axis + 1..rank - 1].iter().product::<usize>();
    let x2 = lx.reshape(xt, &[rows, read * cin])?;
    let m = dft_matrix(mode, n, read, cin, out_len, cout);
    let m = lx.konst(Tensor::from_vec(vec![read * cin, out_len * cout], m)?.cast(cdt));
    let y = lx.matmul(x2, m)?;
    let mut ys: Vec<usize> = s[..axis].to_vec();
    ys.extend(&s[axis + 1..rank - 1]);
    ys.extend([out_len, cout]);
    let y = lx.reshape(y, &ys)?;
    // Back to [outer.., out_len, inner.., cout].
    let ni = rank - 2 - axis;
    let mut back: Vec<usize> = (0..axis).collect();
    back.push(axis + ni);
    back.extend(axis..axis + ni);
    back.push(axis + ni + 1);
    lx.transpose(y, &back)
}

fn dft(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let a = &n.op.attrs;
    let inverse = a.int_or("inverse", 0)? != 0;
    let onesided = a.int_or("onesided", 0)? != 0;
    let s = lx.shape(x)?;
    let rank = s.len();
    if rank < 2 {
        return Err(err("DFT input needs a signal axis and a component axis"));
    }
    let axis = if n.op.version >= 20 {
        match args.get(2).copied().flatten() {
            None => -2,
            Some(ax) => const_int(lx, ax, "DFT axis")?,
        }
    } else {
        a.int_or("axis", 1)?
    };
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    if axis < 0 || axis as usize >= rank - 1 {
        return Err(err(format!("DFT axis {axis} is out of range")));
    }
    let axis = axis as usize;
    let cin = s[rank - 1];
    if cin != 1 && cin != 2 {
        return Err(err("DFT input must end in an axis of 1 or 2"));
    }
    let n_in = s[axis];
    let len = match args.get(1).copied().flatten() {
        Some(l) => const_int(lx, l, "DFT dft_length")?,
        None if onesided && inverse => 2 * (n_in as i64 - 1),
        None => n_in as i64,
    };
    if len <= 0 {
        return Err(err(format!("DFT length {len} must be positive")));
    }
    let len = len as usize;
    let (mode, out_len, cout, points) = match (inverse, onesided) {
        (false, false) => (Mode::Forward, len, 2, len),
        (false, true) => (Mode::Forward, len / 2 + 1, 2, len),
        (true, false) => (Mode::Inverse, len, 2, len),
        (true, true) => (Mode::InverseReal, len, 1, len / 2 + 1),
    };
    let read = points.min(n_in);
    let out_dt = n.ty.dtype;
    let xc = lx.cast(x, compute_dtype(lx.dtype(x)?))?;
    let y = transform(lx, xc, axis, mode, len, read, out_len, cout)?;
    lx.cast(y, out_dt).map(Some)
}

fn stft(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let onesided = n.op.attrs.int_or("onesided", 1)? != 0;
    let step = const_int(lx, arg(args, 1)?, "STFT frame_step")?;
    let window = args.get(2).copied().flatten();
    let s = lx.shape(x)?;
    let &[batch, signal_len, c] = s.as_slice() else {
        return Err(err("STFT signal must be [batch, length, 1 or 2]"));
    };
    let frame_len = match (args.get(3).copied().flatten(), window) {
        (Some(l), _) => const_int(lx, l, "STFT frame_length")?,
        (None, Some(w)) => *lx.shape(w)?.first().ok_or_else(|| err("STFT window must be 1-D"))? as i64,
        (None, None) => signal_len as i64,
    };
    if frame_len <= 0 || frame_len as usize > signal_len || step <= 0 {
        return Err(err("STFT frame_length/frame_step out of range"));
    }
    let (frame_len, step) = (frame_len as usize, step as usize);
    let frames = 1 + (signal_len - frame_len) / step;
    let cdt = compute_dtype(lx.dtype(x)?);
    let xc = lx.cast(x, cdt)?;
    let f = lx.view(
        xc,
        ViewMap {
            shape: vec![batch, frames, frame_len, c],
            strides: vec![(signal_len * c) as i64, (step * c) as i64, c as i64, 1],
            offset: 0,
            guards: vec![],
            pad: 0.0,
        },
    )?;
    let f = match window {
        Some(w) => {
            let wc = lx.cast(w, cdt)?;
            let wc = lx.reshape(wc, &[1, 1, frame_len, 1])?;
            lx.mul(f, wc)?
        }
        None => f,
    };
    let bins = if onesided { frame_len / 2 + 1 } else { frame_len };
    let y = transform(lx, f, 2, Mode::Forward, frame_len, frame_len, bins, 2)?;
    lx.cast(y, n.ty.dtype).map(Some)
}

fn window(lx: &mut Lx, n: &HlNode, _args: &[Option<Id>]) -> Result<Option<Id>> {
    let OpKind::Signal(op @ (SignalOp::HannWindow | SignalOp::HammingWindow | SignalOp::BlackmanWindow)) = n.op.kind else {
        return Ok(None);
    };
    let shape = n.ty.shape.clone().ok_or_else(|| err("window size is not static"))?;
    let t = cosine_window(op, &n.op.attrs, n.ty.dtype, shape)?;
    Ok(Some(lx.konst(t)))
}

fn mel(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let shape = n.ty.shape.clone().ok_or_else(|| err("MelWeightMatrix shape is not static"))?;
    let dft_length = const_int(lx, arg(args, 1)?, "MelWeightMatrix dft_length")?;
    let rate = const_int(lx, arg(args, 2)?, "MelWeightMatrix sample_rate")?;
    let scalar_f = |lx: &Lx, i: usize, what: &str| -> Result<f64> {
        let v = lx.const_f64s(arg(args, i)?, what)?;
        v.first().copied().ok_or_else(|| err(format!("{what} must be a scalar")))
    };
    let lower = scalar_f(lx, 3, "lower_edge_hertz")?;
    let upper = scalar_f(lx, 4, "upper_edge_hertz")?;
    let t = mel_weight_matrix(n.ty.dtype, shape, dft_length, rate, lower, upper)?;
    Ok(Some(lx.konst(t)))
}
