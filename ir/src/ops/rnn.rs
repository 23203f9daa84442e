//! The recurrent op family: one-layer RNN, GRU and LSTM, run forward, reverse or
//! bidirectionally, with the spec's activation set (`activations`, `activation_alpha`,
//! `activation_beta`), `clip`, `layout`, per-batch `sequence_lens`, initial states, GRU's
//! `linear_before_reset` and LSTM's peepholes and `input_forget`.
//!
//! Inputs: X, W, R, B, sequence_lens, initial_h (then initial_c and P for LSTM).
//! Outputs: Y, Y_h (and Y_c for LSTM). As in ONNX Runtime, `clip` bounds the gates'
//! pre-activations (LSTM's cell state reaches `h` unclipped), and a batch entry whose
//! sequence length is 0 gets all-zero outputs. Internally everything runs in layout 0
//! (`X: [seq, batch, input]`); layout 1 inputs and outputs are transposed at the edges.

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, compute_dtype, demote, promote, transpose};
use crate::shape::fmt_shape;
use crate::tensor::{Elem, Tensor};
use num_traits::Float;

crate::op_family! {
    /// Ops of the rnn family.
    pub enum RnnOp { RNN, GRU, LSTM }
}

impl RnnOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        let p = Params::parse(self, cx.attrs, cx.version)?;
        let dtype = cx.dtype(X)?;
        if !dtype.is_float() {
            return Err(bad_dtype(self.name(), dtype));
        }
        for (i, name) in self.input_names().iter().enumerate().skip(1) {
            if let Some(f) = cx.opt(i) {
                let want = if i == SEQUENCE_LENS { DType::I32 } else { dtype };
                if f.ty.dtype != want {
                    return Err(Error::InvalidModel(format!(
                        "{} input '{name}' must be {want}, got {}",
                        self.name(),
                        f.ty.dtype
                    )));
                }
            }
        }
        for (i, _) in cx.inputs.iter().enumerate().skip(self.input_names().len()) {
            if cx.opt(i).is_some() {
                return Err(Error::InvalidModel(format!(
                    "{} takes at most {} inputs, got {}",
                    self.name(),
                    self.input_names().len(),
                    cx.num_inputs()
                )));
            }
        }
        let dims = p.dims(cx)?;
        let out = |shape: Option<Vec<usize>>| ValueType { dtype, shape };
        let y = dims.map(|d| match p.layout {
            0 => vec![d.seq, p.num_dirs(), d.batch, d.hidden],
            _ => vec![d.batch, d.seq, p.num_dirs(), d.hidden],
        });
        let state = dims.map(|d| match p.layout {
            0 => vec![p.num_dirs(), d.batch, d.hidden],
            _ => vec![d.batch, p.num_dirs(), d.hidden],
        });
        let mut types = vec![out(y), out(state.clone())];
        if self == RnnOp::LSTM {
            types.push(out(state));
        }
        Ok(types)
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        let p = Params::parse(self, cx.attrs, cx.version)?;
        let dtype = cx.input(X)?.dtype();
        let outs = crate::with_float!(compute_dtype(dtype), self.name(), T => run::<T>(&p, cx)?);
        Ok(outs.into_iter().map(|t| demote(t, dtype)).collect())
    }

    fn input_names(self) -> &'static [&'static str] {
        match self {
            RnnOp::RNN | RnnOp::GRU => &["X", "W", "R", "B", "sequence_lens", "initial_h"],
            RnnOp::LSTM => &["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
        }
    }

    /// Gates per hidden unit: the row blocks of W and R.
    pub fn num_gates(self) -> usize {
        match self {
            RnnOp::RNN => 1,
            RnnOp::GRU => 3,
            RnnOp::LSTM => 4,
        }
    }

    /// Activation functions per direction (f; f, g; f, g, h).
    pub fn acts_per_dir(self) -> usize {
        match self {
            RnnOp::RNN => 1,
            RnnOp::GRU => 2,
            RnnOp::LSTM => 3,
        }
    }

    fn default_acts(self) -> &'static [&'static str] {
        match self {
            RnnOp::RNN => &["Tanh"],
            RnnOp::GRU => &["Sigmoid", "Tanh"],
            RnnOp::LSTM => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

const X: usize = 0;
const W: usize = 1;
const R: usize = 2;
const B: usize = 3;
const SEQUENCE_LENS: usize = 4;
const INITIAL_H: usize = 5;
const INITIAL_C: usize = 6;
const P: usize = 7;

/// An activation function of the spec's set, with its alpha and beta resolved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f32, f32),
    LeakyRelu(f32),
    ThresholdedRelu(f32),
    ScaledTanh(f32, f32),
    HardSigmoid(f32, f32),
    Elu(f32),
    Softsign,
    Softplus,
}

impl Act {
    /// Parses one activation name (case-insensitively, as ONNX Runtime does), taking its
    /// alpha and beta from the front of the remaining lists when it uses them, else the
    /// defaults of the ONNX op of the same name.
    fn parse(
        name: &str,
        alphas: &mut impl Iterator<Item = f32>,
        betas: &mut impl Iterator<Item = f32>,
    ) -> Result<Act> {
        let mut alpha = |default: f32| alphas.next().unwrap_or(default);
        Ok(match name.to_ascii_lowercase().as_str() {
            "relu" => Act::Relu,
            "tanh" => Act::Tanh,
            "sigmoid" => Act::Sigmoid,
            "affine" => Act::Affine(alpha(1.0), betas.next().unwrap_or(0.0)),
            "leakyrelu" => Act::LeakyRelu(alpha(0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(alpha(1.0)),
            "scaledtanh" => Act::ScaledTanh(alpha(1.0), betas.next().unwrap_or(1.0)),
            "hardsigmoid" => Act::HardSigmoid(alpha(0.2), betas.next().unwrap_or(0.5)),
            "elu" => Act::Elu(alpha(1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            _ => {
                return Err(Error::InvalidModel(format!(
                    "attribute 'activations': unknown activation function '{name}'"
                )));
            }
        })
    }

    #[inline]
    fn apply<T: Float>(self, x: T) -> T {
        let one = T::one();
        match self {
            Act::Relu => x.max(T::zero()),
            Act::Tanh => x.tanh(),
            Act::Sigmoid => {
                if x >= T::zero() {
                    one / (one + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (one + e)
                }
            }
            Act::Affine(a, b) => cst::<T>(a) * x + cst::<T>(b),
            Act::LeakyRelu(a) => {
                if x >= T::zero() {
                    x
                } else {
                    cst::<T>(a) * x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x > cst::<T>(a) {
                    x
                } else {
                    T::zero()
                }
            }
            Act::ScaledTanh(a, b) => cst::<T>(a) * (cst::<T>(b) * x).tanh(),
            Act::HardSigmoid(a, b) => (cst::<T>(a) * x + cst::<T>(b)).max(T::zero()).min(one),
            Act::Elu(a) => {
                if x >= T::zero() {
                    x
                } else {
                    cst::<T>(a) * x.exp_m1()
                }
            }
            Act::Softsign => x / (one + x.abs()),
            Act::Softplus => {
                if x > T::zero() {
                    x + (-x).exp().ln_1p()
                } else {
                    x.exp().ln_1p()
                }
            }
        }
    }
}

fn cst<T: Float>(v: f32) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

/// The attributes of one RNN/GRU/LSTM node.
pub struct Params {
    pub op: RnnOp,
    /// Per direction, whether it runs from the last step to the first.
    pub reverse: Vec<bool>,
    pub hidden_size: Option<usize>,
    /// 0: `X` is `[seq, batch, input]`; 1: `[batch, seq, input]`.
    pub layout: usize,
    /// The bound of the gates' pre-activations.
    pub clip: Option<f32>,
    /// `acts_per_dir` functions for each direction in turn.
    pub acts: Vec<Act>,
    /// GRU only.
    pub linear_before_reset: bool,
    /// LSTM only.
    pub input_forget: bool,
}

/// The problem sizes, known once X and the hidden size are.
#[derive(Clone, Copy, Debug)]
struct Dims {
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
}

impl Params {
    /// Parses the attributes of an `op` node of opset `version`.
    pub fn parse(op: RnnOp, attrs: &Attrs, version: u32) -> Result<Params> {
        let reverse = match attrs.string_or("direction", "forward")? {
            "forward" => vec![false],
            "reverse" => vec![true],
            "bidirectional" => vec![false, true],
            other => {
                return Err(Error::InvalidModel(format!(
                    "attribute 'direction' must be forward, reverse or bidirectional, got '{other}'"
                )));
            }
        };
        let hidden_size = match attrs.int("hidden_size")? {
            None => None,
            Some(h) if h > 0 => Some(h as usize),
            Some(h) => {
                return Err(Error::InvalidModel(format!("attribute 'hidden_size' must be positive, got {h}")));
            }
        };
        let layout = match attrs.int_or("layout", 0)? {
            0 => 0,
            1 if version >= 14 => 1,
            1 => {
                return Err(Error::InvalidModel(format!(
                    "attribute 'layout' exists from opset 14, the model is opset {version}"
                )));
            }
            l => return Err(Error::InvalidModel(format!("attribute 'layout' must be 0 or 1, got {l}"))),
        };
        let clip = match attrs.float("clip")? {
            Some(c) if c.is_nan() || c <= 0.0 => {
                return Err(Error::InvalidModel(format!("attribute 'clip' must be positive, got {c}")));
            }
            c => c,
        };
        let per_dir = op.acts_per_dir();
        let names: Vec<String> = match attrs.strings("activations")? {
            Some(names) => names.to_vec(),
            None => op.default_acts().iter().map(|s| s.to_string()).collect(),
        };
        let names: Vec<String> = if names.len() == per_dir * reverse.len() {
            names
        } else if names.len() == per_dir {
            // One direction's list given for a bidirectional node: both use it.
            names.iter().cycle().take(per_dir * reverse.len()).cloned().collect()
        } else {
            return Err(Error::InvalidModel(format!(
                "attribute 'activations' must list {} functions for {} {}, got {}",
                per_dir * reverse.len(),
                reverse.len(),
                if reverse.len() == 1 { "direction" } else { "directions" },
                names.len()
            )));
        };
        let mut alphas = attrs.floats("activation_alpha")?.unwrap_or(&[]).iter().copied();
        let mut betas = attrs.floats("activation_beta")?.unwrap_or(&[]).iter().copied();
        let acts = names.iter().map(|n| Act::parse(n, &mut alphas, &mut betas)).collect::<Result<Vec<_>>>()?;
        let linear_before_reset = match op {
            RnnOp::GRU => attrs.int_or("linear_before_reset", 0)? != 0,
            RnnOp::RNN | RnnOp::LSTM => false,
        };
        let input_forget = match op {
            RnnOp::LSTM => attrs.int_or("input_forget", 0)? != 0,
            RnnOp::RNN | RnnOp::GRU => false,
        };
        Ok(Params { op, reverse, hidden_size, layout, clip, acts, linear_before_reset, input_forget })
    }

    fn num_dirs(&self) -> usize {
        self.reverse.len()
    }

    /// Checks every known input shape against each other and the attributes; returns the
    /// sizes when X's shape and the hidden size are known.
    fn dims(&self, cx: &InferCx) -> Result<Option<Dims>> {
        let names = self.op.input_names();
        let shape = |i: usize, rank: usize| -> Result<Option<&[usize]>> {
            let s = match cx.opt(i) {
                Some(f) => f.ty.shape.as_deref(),
                None => None,
            };
            if let Some(s) = s
                && s.len() != rank
            {
                return Err(Error::InvalidModel(format!(
                    "{} input '{}' must have rank {rank}, got shape {}",
                    self.op.name(),
                    names[i],
                    fmt_shape(s)
                )));
            }
            Ok(s)
        };
        let x = shape(X, 3)?;
        let w = shape(W, 3)?;
        let r = shape(R, 3)?;
        let gates = self.op.num_gates();
        let hidden = self.hidden_size.or(r.map(|r| r[2])).or(w.map(|w| w[1] / gates));
        let (seq, batch, input) = match x {
            Some(x) if self.layout == 0 => (Some(x[0]), Some(x[1]), Some(x[2])),
            Some(x) => (Some(x[1]), Some(x[0]), Some(x[2])),
            None => (None, None, None),
        };
        let nd = Some(self.num_dirs());
        let gh = hidden.map(|h| gates * h);
        let state = |b: Option<usize>| match self.layout {
            0 => [nd, b, hidden],
            _ => [b, nd, hidden],
        };
        let mut expected: Vec<(usize, Vec<Option<usize>>)> = vec![
            (W, vec![nd, gh, input]),
            (R, vec![nd, gh, hidden]),
            (B, vec![nd, gh.map(|g| 2 * g)]),
            (SEQUENCE_LENS, vec![batch]),
            (INITIAL_H, state(batch).to_vec()),
        ];
        if self.op == RnnOp::LSTM {
            expected.push((INITIAL_C, state(batch).to_vec()));
            expected.push((P, vec![nd, hidden.map(|h| 3 * h)]));
        }
        for (i, want) in expected {
            if let Some(s) = shape(i, want.len())?
                && s.iter().zip(&want).any(|(&d, w)| w.is_some_and(|w| w != d))
            {
                let want: Vec<String> = want.iter().map(|w| w.map_or("?".into(), |w| w.to_string())).collect();
                return Err(Error::InvalidModel(format!(
                    "{} input '{}' has shape {}, expected [{}]",
                    self.op.name(),
                    names[i],
                    fmt_shape(s),
                    want.join(",")
                )));
            }
        }
        Ok(match (seq, batch, input, hidden) {
            (Some(seq), Some(batch), Some(input), Some(hidden)) => Some(Dims { seq, batch, input, hidden }),
            _ => None,
        })
    }
}

/// Input `i` promoted to `T` (f16/bf16 to f32), in layout 0 when it is X or a state.
fn input_vec<T: Elem>(cx: &EvalCx, i: usize, layout: usize) -> Result<Option<Vec<T>>> {
    let Some(t) = cx.opt(i) else { return Ok(None) };
    let t = promote(t);
    let v = if layout == 1 && matches!(i, X | INITIAL_H | INITIAL_C) {
        transpose(&t, &[1, 0, 2])?.slice::<T>()?.to_vec()
    } else {
        t.slice::<T>()?.to_vec()
    };
    Ok(Some(v))
}

/// The reference evaluation, in `T` (f32 or f64).
fn run<T: Float + Elem>(p: &Params, cx: &EvalCx) -> Result<Vec<Tensor>> {
    let x_shape = cx.input(X)?.shape();
    let r_shape = cx.input(R)?.shape();
    let (seq, batch) = if p.layout == 0 { (x_shape[0], x_shape[1]) } else { (x_shape[1], x_shape[0]) };
    let d = Dims { seq, batch, input: x_shape[2], hidden: r_shape[2] };
    let nd = p.num_dirs();
    let gh = p.op.num_gates() * d.hidden;
    let x = input_vec::<T>(cx, X, p.layout)?.unwrap_or_default();
    let w = input_vec::<T>(cx, W, p.layout)?.unwrap_or_default();
    let r = input_vec::<T>(cx, R, p.layout)?.unwrap_or_default();
    let bias = input_vec::<T>(cx, B, p.layout)?.unwrap_or_else(|| vec![T::zero(); nd * 2 * gh]);
    let state0 = vec![T::zero(); nd * d.batch * d.hidden];
    let init_h = input_vec::<T>(cx, INITIAL_H, p.layout)?.unwrap_or_else(|| state0.clone());
    let init_c = match p.op {
        RnnOp::LSTM => input_vec::<T>(cx, INITIAL_C, p.layout)?.unwrap_or_else(|| state0.clone()),
        RnnOp::RNN | RnnOp::GRU => state0.clone(),
    };
    let peep = match p.op {
        RnnOp::LSTM => input_vec::<T>(cx, P, p.layout)?,
        RnnOp::RNN | RnnOp::GRU => None,
    };
    let lens: Vec<usize> = match cx.opt(SEQUENCE_LENS) {
        None => vec![d.seq; d.batch],
        Some(t) => t
            .to_i64_vec()
            .into_iter()
            .map(|l| {
                usize::try_from(l).ok().filter(|&l| l <= d.seq).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "{} sequence_lens value {l} is outside [0, {}] (the sequence length)",
                        p.op.name(),
                        d.seq
                    ))
                })
            })
            .collect::<Result<_>>()?,
    };

    let hs = d.hidden;
    let mut y = vec![T::zero(); d.seq * nd * d.batch * hs];
    let mut y_h = vec![T::zero(); nd * d.batch * hs];
    let mut y_c = vec![T::zero(); nd * d.batch * hs];
    let mut h = vec![T::zero(); hs];
    let mut c = vec![T::zero(); hs];
    let mut scratch = Scratch { gates: vec![T::zero(); gh], reset_h: vec![T::zero(); hs] };
    let per_dir = p.op.acts_per_dir();
    for dir in 0..nd {
        let cell = Cell {
            op: p.op,
            input: d.input,
            hidden: hs,
            w: &w[dir * gh * d.input..(dir + 1) * gh * d.input],
            r: &r[dir * gh * hs..(dir + 1) * gh * hs],
            wb: &bias[dir * 2 * gh..dir * 2 * gh + gh],
            rb: &bias[dir * 2 * gh + gh..(dir + 1) * 2 * gh],
            peep: peep.as_deref().map(|v| &v[dir * 3 * hs..(dir + 1) * 3 * hs]),
            acts: &p.acts[dir * per_dir..(dir + 1) * per_dir],
            clip: p.clip.map(cst::<T>),
            linear_before_reset: p.linear_before_reset,
            input_forget: p.input_forget,
        };
        for (b, &len) in lens.iter().enumerate() {
            let state = (dir * d.batch + b) * hs..(dir * d.batch + b + 1) * hs;
            h.copy_from_slice(&init_h[state.clone()]);
            c.copy_from_slice(&init_c[state.clone()]);
            for step in 0..len {
                let t = if p.reverse[dir] { len - 1 - step } else { step };
                let xt = &x[(t * d.batch + b) * d.input..(t * d.batch + b + 1) * d.input];
                cell.step(xt, &mut h, &mut c, &mut scratch);
                let at = ((t * nd + dir) * d.batch + b) * hs;
                y[at..at + hs].copy_from_slice(&h);
            }
            if len > 0 {
                y_h[state.clone()].copy_from_slice(&h);
                y_c[state].copy_from_slice(&c);
            }
        }
    }

    let mut y = Tensor::from_vec(vec![d.seq, nd, d.batch, hs], y)?;
    let mut y_h = Tensor::from_vec(vec![nd, d.batch, hs], y_h)?;
    let mut y_c = Tensor::from_vec(vec![nd, d.batch, hs], y_c)?;
    if p.layout == 1 {
        y = transpose(&y, &[2, 0, 1, 3])?;
        y_h = transpose(&y_h, &[1, 0, 2])?;
        y_c = transpose(&y_c, &[1, 0, 2])?;
    }
    let mut outs = vec![y, y_h];
    if p.op == RnnOp::LSTM {
        outs.push(y_c);
    }
    Ok(outs)
}

/// Buffers reused across steps.
struct Scratch<T> {
    /// Pre-activations (then activations) of every gate: `num_gates * hidden`.
    gates: Vec<T>,
    /// GRU: `r (.) H_{t-1}`.
    reset_h: Vec<T>,
}

/// One direction's weights and functions.
struct Cell<'a, T> {
    op: RnnOp,
    input: usize,
    hidden: usize,
    /// `[num_gates * hidden, input]`.
    w: &'a [T],
    /// `[num_gates * hidden, hidden]`.
    r: &'a [T],
    wb: &'a [T],
    rb: &'a [T],
    /// LSTM peepholes `[3 * hidden]` (i, o, f).
    peep: Option<&'a [T]>,
    acts: &'a [Act],
    clip: Option<T>,
    linear_before_reset: bool,
    input_forget: bool,
}

#[inline]
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
}

impl<T: Float> Cell<'_, T> {
    #[inline]
    fn clip(&self, x: T) -> T {
        match self.clip {
            Some(c) => x.max(-c).min(c),
            None => x,
        }
    }

    /// Activation `k` of this direction applied to the clipped `x`.
    #[inline]
    fn act(&self, k: usize, x: T) -> T {
        self.acts[k].apply(self.clip(x))
    }

    fn w_row(&self, g: usize) -> &[T] {
        &self.w[g * self.input..(g + 1) * self.input]
    }

    fn r_row(&self, g: usize) -> &[T] {
        &self.r[g * self.hidden..(g + 1) * self.hidden]
    }

    /// `Xt*(W^T) + Ht-1*(R^T) + Wb + Rb` for gate rows `rows`, into `gates`.
    fn linear(&self, xt: &[T], h: &[T], rows: std::ops::Range<usize>, gates: &mut [T]) {
        for g in rows {
            gates[g] = dot(xt, self.w_row(g)) + dot(h, self.r_row(g)) + self.wb[g] + self.rb[g];
        }
    }

    /// Advances the state `h` (and `c` for LSTM) by the input `xt`.
    fn step(&self, xt: &[T], h: &mut [T], c: &mut [T], s: &mut Scratch<T>) {
        let hs = self.hidden;
        let one = T::one();
        match self.op {
            RnnOp::RNN => {
                self.linear(xt, h, 0..hs, &mut s.gates);
                for (hj, &g) in h.iter_mut().zip(&s.gates) {
                    *hj = self.act(0, g);
                }
            }
            RnnOp::GRU => {
                // Gate blocks: z, r, h.
                self.linear(xt, h, 0..2 * hs, &mut s.gates);
                for g in &mut s.gates[..2 * hs] {
                    *g = self.act(0, *g);
                }
                for j in 0..hs {
                    let g = 2 * hs + j;
                    let reset = s.gates[hs + j];
                    let pre = if self.linear_before_reset {
                        dot(xt, self.w_row(g)) + reset * (dot(h, self.r_row(g)) + self.rb[g]) + self.wb[g]
                    } else {
                        for (rh, (&r, &hk)) in s.reset_h.iter_mut().zip(s.gates[hs..2 * hs].iter().zip(h.iter())) {
                            *rh = r * hk;
                        }
                        dot(xt, self.w_row(g)) + dot(&s.reset_h, self.r_row(g)) + self.rb[g] + self.wb[g]
                    };
                    s.gates[g] = self.act(1, pre);
                }
                for (j, hj) in h.iter_mut().enumerate() {
                    let z = s.gates[j];
                    *hj = (one - z) * s.gates[2 * hs + j] + z * *hj;
                }
            }
            RnnOp::LSTM => {
                // Gate blocks: i, o, f, c; peepholes: i, o, f.
                self.linear(xt, h, 0..4 * hs, &mut s.gates);
                let peep = |k: usize, j: usize| self.peep.map_or(T::zero(), |p| p[k * hs + j]);
                for j in 0..hs {
                    let (gi, go, gf, gc) = (s.gates[j], s.gates[hs + j], s.gates[2 * hs + j], s.gates[3 * hs + j]);
                    let i = self.act(0, gi + peep(0, j) * c[j]);
                    let f = if self.input_forget { one - i } else { self.act(0, gf + peep(2, j) * c[j]) };
                    let cell = f * c[j] + i * self.act(1, gc);
                    let o = self.act(0, go + peep(1, j) * cell);
                    c[j] = cell;
                    // The cell state feeds h unclipped, as in ONNX Runtime: clip bounds the
                    // gates' pre-activations only.
                    h[j] = o * self.acts[2].apply(cell);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::{Op, OpKind};

    fn node(op: RnnOp, attrs: &[(&str, Attr)]) -> Op {
        let mut a = Attrs::new();
        for (k, v) in attrs {
            a.set(k, v.clone());
        }
        Op { kind: OpKind::Rnn(op), attrs: a, version: 22 }
    }

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn close(got: &Tensor, want: &[f32]) {
        let g = got.to_f64_vec();
        assert_eq!(g.len(), want.len(), "{got:?}");
        for (a, &b) in g.iter().zip(want) {
            assert!((a - b as f64).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    /// Scalar RNN (hidden 1, input 1) with Relu, reverse direction and sequence_lens:
    /// h = relu(x*w + h*r + wb + rb), walked backwards over the first `len` steps.
    #[test]
    fn rnn_reverse_with_sequence_lens() {
        let op = node(
            RnnOp::RNN,
            &[("direction", Attr::String("reverse".into())), ("activations", Attr::Strings(vec!["Relu".into()]))],
        );
        // seq 3, batch 2, input 1.
        let x = t(&[3, 2, 1], &[1.0, 10.0, 2.0, 20.0, 3.0, 30.0]);
        let w = t(&[1, 1, 1], &[1.0]);
        let r = t(&[1, 1, 1], &[0.5]);
        let b = t(&[1, 2], &[0.1, -0.1]);
        let lens = Tensor::from_vec(vec![2], vec![3i32, 2]).unwrap_or_else(|e| panic!("{e}"));
        let out = op.eval(&[Some(&x), Some(&w), Some(&r), Some(&b), Some(&lens)], 2).unwrap_or_else(|e| panic!("{e}"));
        // batch 0: t=2: 3; t=1: 2+1.5=3.5; t=0: 1+1.75=2.75.
        // batch 1 (len 2): t=1: 20; t=0: 10+10=20; t=2 stays zero.
        close(&out[0], &[2.75, 20.0, 3.5, 20.0, 3.0, 0.0]);
        close(&out[1], &[2.75, 20.0]);
    }

    /// GRU with hidden 1, all weights 1 and zero input: with linear_before_reset the reset
    /// gate scales (h*r_h + rb_h), without it scales h only.
    #[test]
    fn gru_linear_before_reset_differs() {
        let x = t(&[1, 1, 1], &[0.0]);
        let w = t(&[1, 3, 1], &[1.0, 1.0, 1.0]);
        let r = t(&[1, 3, 1], &[1.0, 1.0, 1.0]);
        // Rb for the hidden gate is 1; everything else 0.
        let b = t(&[1, 6], &[0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        let h0 = t(&[1, 1, 1], &[1.0]);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (z, rg) = (sig(1.0), sig(1.0));
        for (lbr, pre) in [(0, rg * 1.0 + 1.0), (1, rg * (1.0 + 1.0))] {
            let op = node(RnnOp::GRU, &[("linear_before_reset", Attr::Int(lbr))]);
            let out = op
                .eval(&[Some(&x), Some(&w), Some(&r), Some(&b), None, Some(&h0)], 2)
                .unwrap_or_else(|e| panic!("{e}"));
            let want = (1.0 - z) * pre.tanh() + z * 1.0;
            close(&out[1], &[want as f32]);
        }
    }

    /// LSTM with hidden 1: peepholes feed C_{t-1} into i and f and C_t into o;
    /// input_forget replaces f by 1 - i.
    #[test]
    fn lstm_peepholes_and_input_forget() {
        let x = t(&[1, 1, 1], &[1.0]);
        let w = t(&[1, 4, 1], &[0.5, 0.25, -0.5, 1.0]);
        let r = t(&[1, 4, 1], &[0.0; 4]);
        let c0 = t(&[1, 1, 1], &[2.0]);
        let p = t(&[1, 3], &[0.1, 0.2, 0.3]);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        for input_forget in [0, 1] {
            let op = node(RnnOp::LSTM, &[("input_forget", Attr::Int(input_forget))]);
            let inputs = [Some(&x), Some(&w), Some(&r), None, None, None, Some(&c0), Some(&p)];
            let out = op.eval(&inputs, 3).unwrap_or_else(|e| panic!("{e}"));
            let i = sig(0.5 + 0.1 * 2.0);
            let f = if input_forget == 1 { 1.0 - i } else { sig(-0.5 + 0.3 * 2.0) };
            let c = f * 2.0 + i * 1.0f64.tanh();
            let o = sig(0.25 + 0.2 * c);
            close(&out[0], &[(o * c.tanh()) as f32]);
            close(&out[2], &[c as f32]);
        }
    }

    /// Bidirectional with layout 1: the output axes are [batch, seq, dirs, hidden] and the
    /// backward direction's Y_h is its state after the first step.
    #[test]
    fn bidirectional_layout1_affine_with_clip() {
        let op = node(
            RnnOp::RNN,
            &[
                ("direction", Attr::String("bidirectional".into())),
                ("layout", Attr::Int(1)),
                ("activations", Attr::Strings(vec!["Affine".into(), "Relu".into()])),
                ("activation_alpha", Attr::Floats(vec![2.0])),
                ("activation_beta", Attr::Floats(vec![1.0])),
                ("clip", Attr::Float(2.5)),
            ],
        );
        // batch 1, seq 2, input 1.
        let x = t(&[1, 2, 1], &[1.0, 2.0]);
        let w = t(&[2, 1, 1], &[1.0, 1.0]);
        let r = t(&[2, 1, 1], &[1.0, 1.0]);
        let out = op.eval(&[Some(&x), Some(&w), Some(&r)], 2).unwrap_or_else(|e| panic!("{e}"));
        // forward: t0: 2*1+1 = 3; t1: 2*clip(2+3)+1 = 6. backward (Relu): t1: 2; t0: clip(1+2) = 2.5.
        assert_eq!(out[0].shape(), &[1, 2, 2, 1]);
        close(&out[0], &[3.0, 2.5, 6.0, 2.0]);
        close(&out[1], &[6.0, 2.5]);
    }

    /// clip bounds gate pre-activations but not the cell state fed to h: with C0 = 3 and
    /// clip 1, h = o * tanh(C1) where C1 = f*3 + i*tanh(1) is above 1.
    #[test]
    fn lstm_clip_leaves_cell_unclipped() {
        let op = node(RnnOp::LSTM, &[("clip", Attr::Float(1.0))]);
        let x = t(&[1, 1, 1], &[5.0]);
        let w = t(&[1, 4, 1], &[1.0; 4]);
        let r = t(&[1, 4, 1], &[0.0; 4]);
        let c0 = t(&[1, 1, 1], &[3.0]);
        let out = op.eval(&[Some(&x), Some(&w), Some(&r), None, None, None, Some(&c0)], 3).unwrap_or_else(|e| panic!("{e}"));
        let g = 1.0 / (1.0 + (-1.0f64).exp());
        let c = g * 3.0 + g * 1.0f64.tanh();
        close(&out[2], &[c as f32]);
        close(&out[1], &[(g * c.tanh()) as f32]);
    }

    #[test]
    fn rejects_bad_attributes_and_shapes() {
        let x = t(&[1, 1, 2], &[0.0, 0.0]);
        let w = t(&[1, 3, 2], &[0.0; 6]);
        let r = t(&[1, 3, 3], &[0.0; 9]);
        let bad = |op: Op| op.eval(&[Some(&x), Some(&w), Some(&r)], 2).is_err();
        assert!(bad(node(RnnOp::RNN, &[("activations", Attr::Strings(vec!["Gelu".into()]))])));
        assert!(bad(node(RnnOp::RNN, &[("direction", Attr::String("sideways".into()))])));
        // R is [1,3,3] but a GRU with hidden 3 needs [1,9,3].
        assert!(bad(node(RnnOp::GRU, &[])));
        assert!(!bad(node(RnnOp::RNN, &[("hidden_size", Attr::Int(3))])));
        assert!(bad(node(RnnOp::RNN, &[("hidden_size", Attr::Int(2))])));
    }
}
