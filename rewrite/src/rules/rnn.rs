//! Rules of the rnn family: `RNN`, `GRU` and `LSTM` with a static sequence length are
//! unrolled into atoms. The input projection of every step is one MatMul (`X·Wᵀ` over all
//! steps at once), each step adds one `H·Rᵀ` MatMul, gate blocks are Views, activations
//! (with `clip`, `activation_alpha`/`beta`) are short atom expressions. `sequence_lens`
//! masks with Select: a step past a batch entry's length leaves the state unchanged and
//! writes zeros to Y; an entry of length 0 gets zero final states (as the reference
//! does). Reverse directions walk the steps backwards, so a shorter entry starts from its
//! initial state at its own last step. `layout = 1` is a transpose at the edges; f16/bf16
//! compute in f32.

use crate::rules::err;
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::compute_dtype;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{BinaryFn, UnaryFn};
use ir::ops::rnn::{Act, Params, RnnOp};
use ir::{DType, Result};

pub const RULES: &[Rule] = &[
    Rule {
        name: "rnn/unroll-rnn",
        identity: "RNN: H_t = f(clip(X_t·Wᵀ + H_{t-1}·Rᵀ + Wb + Rb)), unrolled over the static sequence",
        action: Action::Lower { ops: &["RNN"], apply: rnn },
    },
    Rule {
        name: "rnn/unroll-gru",
        identity: "GRU: z,r = f(..), h~ = g(X·Whᵀ + (r⊙H)·Rhᵀ + b) (or r⊙(H·Rhᵀ + Rbh)), H_t = (1-z)⊙h~ + z⊙H_{t-1}, unrolled",
        action: Action::Lower { ops: &["GRU"], apply: gru },
    },
    Rule {
        name: "rnn/unroll-lstm",
        identity: "LSTM: i,f,o = f(..+P⊙C), C_t = f⊙C_{t-1} + i⊙g(..), H_t = o⊙h(C_t), unrolled",
        action: Action::Lower { ops: &["LSTM"], apply: lstm },
    },
];


/// The activation `act` as atoms.
fn act_atoms(act: Act, lx: &mut Lx, x: Id) -> Result<Id> {
    let c = |v: f32| f64::from(v);
    match act {
        Act::Relu => lx.binary_scalar(BinaryFn::Max, x, 0.0),
        Act::Tanh => lx.unary(UnaryFn::Tanh, x),
        Act::Sigmoid => sigmoid(lx, x),
        Act::Affine(a, b) => {
            let m = lx.binary_scalar(BinaryFn::Mul, x, c(a))?;
            lx.binary_scalar(BinaryFn::Add, m, c(b))
        }
        Act::LeakyRelu(a) => {
            let z = lx.scalar(lx.dtype(x)?, 0.0)?;
            let pos = lx.binary(BinaryFn::Ge, x, z)?;
            let m = lx.binary_scalar(BinaryFn::Mul, x, c(a))?;
            lx.select(pos, x, m)
        }
        Act::ThresholdedRelu(a) => {
            let t = lx.scalar(lx.dtype(x)?, c(a))?;
            let above = lx.binary(BinaryFn::Gt, x, t)?;
            let z = lx.scalar(lx.dtype(x)?, 0.0)?;
            lx.select(above, x, z)
        }
        Act::ScaledTanh(a, b) => {
            let m = lx.binary_scalar(BinaryFn::Mul, x, c(b))?;
            let t = lx.unary(UnaryFn::Tanh, m)?;
            lx.binary_scalar(BinaryFn::Mul, t, c(a))
        }
        Act::HardSigmoid(a, b) => {
            let m = lx.binary_scalar(BinaryFn::Mul, x, c(a))?;
            let s = lx.binary_scalar(BinaryFn::Add, m, c(b))?;
            let lo = lx.binary_scalar(BinaryFn::Max, s, 0.0)?;
            lx.binary_scalar(BinaryFn::Min, lo, 1.0)
        }
        Act::Elu(a) => {
            let z = lx.scalar(lx.dtype(x)?, 0.0)?;
            let pos = lx.binary(BinaryFn::Ge, x, z)?;
            let e = lx.unary(UnaryFn::Exp, x)?;
            let em1 = lx.binary_scalar(BinaryFn::Sub, e, 1.0)?;
            let neg = lx.binary_scalar(BinaryFn::Mul, em1, c(a))?;
            lx.select(pos, x, neg)
        }
        Act::Softsign => {
            let ab = lx.unary(UnaryFn::Abs, x)?;
            let d = lx.binary_scalar(BinaryFn::Add, ab, 1.0)?;
            lx.div(x, d)
        }
        Act::Softplus => {
            // max(x, 0) + log(1 + exp(-|x|)): stable for large |x|.
            let ab = lx.unary(UnaryFn::Abs, x)?;
            let na = lx.unary(UnaryFn::Neg, ab)?;
            let e = lx.unary(UnaryFn::Exp, na)?;
            let p = lx.binary_scalar(BinaryFn::Add, e, 1.0)?;
            let l = lx.unary(UnaryFn::Log, p)?;
            let m = lx.binary_scalar(BinaryFn::Max, x, 0.0)?;
            lx.add(m, l)
        }
    }
}

/// `1 / (1 + exp(-x))`.
pub(crate) fn sigmoid(lx: &mut Lx, x: Id) -> Result<Id> {
    let n = lx.unary(UnaryFn::Neg, x)?;
    let e = lx.unary(UnaryFn::Exp, n)?;
    let d = lx.binary_scalar(BinaryFn::Add, e, 1.0)?;
    lx.unary(UnaryFn::Recip, d)
}

fn rnn(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    unroll(lx, n, args, RnnOp::RNN)
}

fn gru(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    unroll(lx, n, args, RnnOp::GRU)
}

fn lstm(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    unroll(lx, n, args, RnnOp::LSTM)
}

/// Columns `[start, start + len)` of a 2-D tensor.
fn cols(lx: &mut Lx, x: Id, start: usize, len: usize) -> Result<Id> {
    let s = lx.shape(x)?;
    if s[1] == len && start == 0 {
        return Ok(x);
    }
    lx.strided(x, &[(0, s[0], 1), (start as i64, len, 1)])
}

/// Entry `i` of axis 0, with the axis dropped.
fn row(lx: &mut Lx, x: Id, i: usize) -> Result<Id> {
    let s = lx.shape(x)?;
    let mut ax: Vec<(i64, usize, i64)> = s.iter().map(|&d| (0, d, 1)).collect();
    ax[0] = (i as i64, 1, 1);
    let r = lx.strided(x, &ax)?;
    lx.reshape(r, &s[1..])
}

/// Concatenation as a balanced tree of pairwise concats: each level touches the output
/// once, so `n` steps cost `O(n log n)` element operations instead of the `O(n²)` of one
/// n-way pad-and-add concat.
fn concat_tree(lx: &mut Lx, parts: &[Id], axis: usize) -> Result<Id> {
    if parts.len() <= 2 {
        return lx.concat(parts, axis);
    }
    let mid = parts.len() / 2;
    let a = concat_tree(lx, &parts[..mid], axis)?;
    let b = concat_tree(lx, &parts[mid..], axis)?;
    lx.concat(&[a, b], axis)
}

/// One direction's weights and functions, as atoms in the compute dtype.
struct Cell<'p> {
    p: &'p Params,
    hidden: usize,
    /// `Rᵀ`: `[hidden, gates * hidden]`.
    rt: Id,
    /// GRU: the hidden gate's `Rᵀ` block `[hidden, hidden]` and recurrent bias `[hidden]`.
    gru_h: Option<(Id, Id)>,
    /// LSTM peepholes i, o, f: `[hidden]` each.
    peep: Option<[Id; 3]>,
    acts: &'p [Act],
}

impl Cell<'_> {
    fn clip(&self, lx: &mut Lx, x: Id) -> Result<Id> {
        match self.p.clip {
            Some(c) => {
                let lo = lx.binary_scalar(BinaryFn::Max, x, -f64::from(c))?;
                lx.binary_scalar(BinaryFn::Min, lo, f64::from(c))
            }
            None => Ok(x),
        }
    }

    fn act(&self, lx: &mut Lx, k: usize, x: Id) -> Result<Id> {
        let c = self.clip(lx, x)?;
        act_atoms(self.acts[k], lx, c)
    }

    /// One step from `xt = X_t·Wᵀ + biases` (`[batch, gates * hidden]`; for GRU the hidden
    /// gate's recurrent bias is left out).
    fn step(&self, lx: &mut Lx, xt: Id, h: Id, c: Id) -> Result<(Id, Id)> {
        let hs = self.hidden;
        match self.p.op {
            RnnOp::RNN => {
                let r = lx.matmul(h, self.rt)?;
                let pre = lx.add(xt, r)?;
                Ok((self.act(lx, 0, pre)?, c))
            }
            RnnOp::GRU => {
                let (rt_h, rb_h) = self.gru_h.ok_or_else(|| err("GRU cell without its hidden gate"))?;
                let rt_zr = cols(lx, self.rt, 0, 2 * hs)?;
                let hr = lx.matmul(h, rt_zr)?;
                let x_zr = cols(lx, xt, 0, 2 * hs)?;
                let pzr = lx.add(x_zr, hr)?;
                let zr = self.act(lx, 0, pzr)?;
                let z = cols(lx, zr, 0, hs)?;
                let r = cols(lx, zr, hs, hs)?;
                let xh = cols(lx, xt, 2 * hs, hs)?;
                let pre = if self.p.linear_before_reset {
                    let m = lx.matmul(h, rt_h)?;
                    let m = lx.add(m, rb_h)?;
                    let m = lx.mul(r, m)?;
                    lx.add(xh, m)?
                } else {
                    let rh = lx.mul(r, h)?;
                    let m = lx.matmul(rh, rt_h)?;
                    let m = lx.add(m, rb_h)?;
                    lx.add(xh, m)?
                };
                let hh = self.act(lx, 1, pre)?;
                // (1 - z) * hh + z * h
                let one = lx.scalar(lx.dtype(z)?, 1.0)?;
                let omz = lx.sub(one, z)?;
                let a = lx.mul(omz, hh)?;
                let b = lx.mul(z, h)?;
                Ok((lx.add(a, b)?, c))
            }
            RnnOp::LSTM => {
                let r = lx.matmul(h, self.rt)?;
                let all = lx.add(xt, r)?;
                let mut pre = Vec::with_capacity(4);
                for g in 0..4 {
                    pre.push(cols(lx, all, g * hs, hs)?);
                }
                let with_peep = |lx: &mut Lx, x: Id, k: usize, state: Id| -> Result<Id> {
                    match self.peep {
                        Some(p) => {
                            let m = lx.mul(p[k], state)?;
                            lx.add(x, m)
                        }
                        None => Ok(x),
                    }
                };
                let pi = with_peep(lx, pre[0], 0, c)?;
                let i = self.act(lx, 0, pi)?;
                let f = if self.p.input_forget {
                    let one = lx.scalar(lx.dtype(i)?, 1.0)?;
                    lx.sub(one, i)?
                } else {
                    let pf = with_peep(lx, pre[2], 2, c)?;
                    self.act(lx, 0, pf)?
                };
                let g = self.act(lx, 1, pre[3])?;
                let fc = lx.mul(f, c)?;
                let ig = lx.mul(i, g)?;
                let cell = lx.add(fc, ig)?;
                let po = with_peep(lx, pre[1], 1, cell)?;
                let o = self.act(lx, 0, po)?;
                // The cell state reaches h unclipped.
                let hc = act_atoms(self.acts[2], lx, cell)?;
                Ok((lx.mul(o, hc)?, cell))
            }
        }
    }
}

fn unroll(lx: &mut Lx, n: &HlNode, args: &[Option<Id>], kind: RnnOp) -> Result<Option<Id>> {
    let p = Params::parse(kind, &n.op.attrs, n.op.version)?;
    let x = arg(args, 0)?;
    let (w, r) = (arg(args, 1)?, arg(args, 2)?);
    let opt = |i: usize| args.get(i).copied().flatten();
    let (bias, lens, init_h) = (opt(3), opt(4), opt(5));
    let (init_c, peep) = if kind == RnnOp::LSTM { (opt(6), opt(7)) } else { (None, None) };
    let dt = lx.dtype(x)?;
    let cdt = compute_dtype(dt);
    let nd = p.reverse.len();
    let gates = kind.num_gates();

    // Layout 0 in the compute dtype: X [seq, batch, input], states [dirs, batch, hidden].
    let x = lx.cast(x, cdt)?;
    let x = if p.layout == 1 { lx.transpose(x, &[1, 0, 2])? } else { x };
    let xs = lx.shape(x)?;
    let (seq, batch, input) = (xs[0], xs[1], xs[2]);
    let rs = lx.shape(r)?;
    let hidden = *rs.get(2).ok_or_else(|| err("R must be 3-D"))?;
    let gh = gates * hidden;
    if lx.shape(w)? != [nd, gh, input] || rs != [nd, gh, hidden] {
        return Err(err("W or R does not fit the direction count, gates and sizes"));
    }
    let w = lx.cast(w, cdt)?;
    let r = lx.cast(r, cdt)?;
    let bias = match bias {
        Some(b) => Some(lx.cast(b, cdt)?),
        None => None,
    };
    let state = |lx: &mut Lx, s: Option<Id>| -> Result<Option<Id>> {
        match s {
            None => Ok(None),
            Some(s) => {
                let s = lx.cast(s, cdt)?;
                Ok(Some(if p.layout == 1 { lx.transpose(s, &[1, 0, 2])? } else { s }))
            }
        }
    };
    let init_h = state(lx, init_h)?;
    let init_c = state(lx, init_c)?;
    let peep = match peep {
        Some(pp) => Some(lx.cast(pp, cdt)?),
        None => None,
    };

    // sequence_lens: a constant of full lengths needs no masking.
    let lens = match lens {
        Some(l) => match lx.value(l) {
            Some(v) if v.to_i64_vec().iter().all(|&e| e == seq as i64) => None,
            _ => Some(lx.cast(l, DType::I64)?),
        },
        None => None,
    };
    let lens_col = match lens {
        Some(l) => Some(lx.reshape(l, &[batch, 1])?),
        None => None,
    };
    // valid[t]: [batch, 1] bool, t < len.
    let mut valid = Vec::new();
    if let Some(l) = lens_col {
        for t in 0..seq {
            let tt = lx.scalar(DType::I64, t as f64)?;
            valid.push(lx.binary(BinaryFn::Lt, tt, l)?);
        }
    }
    let nonempty = match lens_col {
        Some(l) => {
            let z = lx.scalar(DType::I64, 0.0)?;
            Some(lx.binary(BinaryFn::Gt, l, z)?)
        }
        None => None,
    };

    let zeros = lx.full(cdt, &[batch, hidden], 0.0)?;
    let x2 = lx.reshape(x, &[seq * batch, input])?;
    let mut y_dirs = Vec::with_capacity(nd);
    let mut yh_dirs = Vec::with_capacity(nd);
    let mut yc_dirs = Vec::with_capacity(nd);
    let per = kind.acts_per_dir();
    for dir in 0..nd {
        let wd = row(lx, w, dir)?; // [gh, input]
        let wt = lx.transpose(wd, &[1, 0])?; // [input, gh]
        let rd = row(lx, r, dir)?; // [gh, hidden]
        let rt = lx.transpose(rd, &[1, 0])?; // [hidden, gh]
        let bd = match bias {
            Some(b) => Some(row(lx, b, dir)?), // [2 gh]
            None => None,
        };
        // X·Wᵀ + Wb + Rb over all steps: [seq*batch, gh] (GRU: without the hidden gate's Rb,
        // which the reset gate scales or follows).
        let mut xw = lx.matmul(x2, wt)?;
        let mut gru_h = None;
        if kind == RnnOp::GRU {
            let rt_h = cols(lx, rt, 2 * hidden, hidden)?;
            let rb_h = match bd {
                Some(b) => lx.strided(b, &[((gh + 2 * hidden) as i64, hidden, 1)])?,
                None => lx.full(cdt, &[hidden], 0.0)?,
            };
            gru_h = Some((rt_h, rb_h));
        }
        if let Some(b) = bd {
            let wb = lx.strided(b, &[(0, gh, 1)])?;
            let rb = if kind == RnnOp::GRU {
                let zr = lx.strided(b, &[(gh as i64, 2 * hidden, 1)])?;
                lx.pad(zr, &[0], &[hidden as i64], 0.0)?
            } else {
                lx.strided(b, &[(gh as i64, gh, 1)])?
            };
            let bsum = lx.add(wb, rb)?;
            xw = lx.add(xw, bsum)?;
        }
        let peep_d = match peep {
            Some(pp) => {
                let pd = row(lx, pp, dir)?;
                let mut v = [pd; 3];
                for (k, slot) in v.iter_mut().enumerate() {
                    *slot = lx.strided(pd, &[((k * hidden) as i64, hidden, 1)])?;
                }
                Some(v)
            }
            None => None,
        };
        let cell = Cell { p: &p, hidden, rt, gru_h, peep: peep_d, acts: &p.acts[dir * per..(dir + 1) * per] };
        let mut h = match init_h {
            Some(s) => row(lx, s, dir)?,
            None => zeros,
        };
        let mut c = match init_c {
            Some(s) => row(lx, s, dir)?,
            None => zeros,
        };
        let mut ys: Vec<Option<Id>> = vec![None; seq];
        let order: Vec<usize> = if p.reverse[dir] { (0..seq).rev().collect() } else { (0..seq).collect() };
        for t in order {
            let xt = lx.strided(xw, &[((t * batch) as i64, batch, 1), (0, gh, 1)])?;
            let (hn, cn) = cell.step(lx, xt, h, c)?;
            match valid.get(t) {
                Some(&v) => {
                    h = lx.select(v, hn, h)?;
                    if kind == RnnOp::LSTM {
                        c = lx.select(v, cn, c)?;
                    }
                    ys[t] = Some(lx.select(v, hn, zeros)?);
                }
                None => {
                    h = hn;
                    c = cn;
                    ys[t] = Some(hn);
                }
            }
        }
        if let Some(ne) = nonempty {
            h = lx.select(ne, h, zeros)?;
            c = lx.select(ne, c, zeros)?;
        }
        let ys: Vec<Id> = ys.into_iter().flatten().collect();
        let mut parts = Vec::with_capacity(ys.len());
        for y in ys {
            parts.push(lx.reshape(y, &[1, 1, batch, hidden])?);
        }
        let y = if parts.is_empty() { lx.full(cdt, &[0, 1, batch, hidden], 0.0)? } else { concat_tree(lx, &parts, 0)? };
        y_dirs.push(y);
        yh_dirs.push(lx.reshape(h, &[1, batch, hidden])?);
        yc_dirs.push(lx.reshape(c, &[1, batch, hidden])?);
    }
    let out = match n.output {
        0 => {
            let y = lx.concat(&y_dirs, 1)?;
            if p.layout == 1 { lx.transpose(y, &[2, 0, 1, 3])? } else { y }
        }
        1 | 2 => {
            let parts = if n.output == 1 { &yh_dirs } else { &yc_dirs };
            if n.output == 2 && kind != RnnOp::LSTM {
                return Ok(None);
            }
            let s = lx.concat(parts, 0)?;
            if p.layout == 1 { lx.transpose(s, &[1, 0, 2])? } else { s }
        }
        _ => return Ok(None),
    };
    lx.cast(out, dt).map(Some)
}
