//! Rules of the attention family.
//!
//! `Attention` (opset 23/24) becomes scaled dot-product attention in atoms: Q and K are
//! each scaled by `sqrt(scale)` (as the spec and the reference do), `Q·Kᵀ` is one batched
//! MatMul per KV head group (grouped-query heads share a KV head by folding the group into
//! the query rows), softcap is `tanh(s / c) * c`, the mask (bool via Select, float as is,
//! its short key axis padded with -inf), causality and `nonpad_kv_seqlen` become one
//! additive bias, softmax is `exp(x - max) / sum`, and a second MatMul weighs the values.
//! Present key/value are the past concatenated with the new keys/values (a View/Add
//! concat). f16/bf16 compute in f32 and cast back, like the reference.
//!
//! `RotaryEmbedding` gathers the cos/sin cache rows of the position ids (or takes the
//! caches as they are), slices the rotated pairs with Views (halves, or even/odd lanes when
//! interleaved), rotates them with Mul/Sub/Add and concatenates the pass-through tail.

use crate::rules::{err, compute_dtype};
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{BinaryFn, ReduceFn, UnaryFn};
use ir::{DType, Result, Tensor};

pub const RULES: &[Rule] = &[
    Rule {
        name: "attention/sdpa",
        identity: "Attention(Q,K,V,mask,past) = softmax(cap(sQ·(sK)ᵀ) + bias)·V with s = sqrt(scale), present = concat(past, new)",
        action: Action::Lower { ops: &["Attention"], apply: attention },
    },
    Rule {
        name: "attention/rotary",
        identity: "RotaryEmbedding(x) = [cos·x1 - sin·x2, sin·x1 + cos·x2, x_pass] with cos/sin = cache[position_ids]",
        action: Action::Lower { ops: &["RotaryEmbedding"], apply: rotary },
    },
];



/// Softmax over the last axis: `exp(x - max) / sum` (a row of -inf gives NaN, like the
/// reference).
pub(crate) fn softmax_last(lx: &mut Lx, x: Id) -> Result<Id> {
    let r = lx.rank(x)?;
    let last = r.checked_sub(1).ok_or_else(|| err("softmax of a scalar"))?;
    let m = lx.reduce(ReduceFn::Max, x, &[last], true)?;
    let d = lx.sub(x, m)?;
    let e = lx.unary(UnaryFn::Exp, d)?;
    let s = lx.reduce(ReduceFn::Sum, e, &[last], true)?;
    lx.div(e, s)
}

fn positive(n: &HlNode, name: &str) -> Result<Option<usize>> {
    match n.op.attrs.int(name)? {
        None => Ok(None),
        Some(v) if v > 0 => Ok(Some(v as usize)),
        Some(v) => Err(err(format!("attribute '{name}' must be positive, got {v}"))),
    }
}

/// `x` (3-D packed `[b, s, heads*size]` or 4-D `[b, heads, s, size]`) as `[b, heads, s, size]`.
fn to_bhsd(lx: &mut Lx, x: Id, heads: Option<usize>) -> Result<Id> {
    let s = lx.shape(x)?;
    match s.len() {
        4 => Ok(x),
        3 => {
            let h = heads.ok_or_else(|| err("Attention with 3-D inputs needs the head counts"))?;
            if h == 0 || !s[2].is_multiple_of(h) {
                return Err(err(format!("hidden size {} is not divisible by {h} heads", s[2])));
            }
            let r = lx.reshape(x, &[s[0], s[1], h, s[2] / h])?;
            lx.transpose(r, &[0, 2, 1, 3])
        }
        _ => Err(err("Attention inputs must be 3-D or 4-D")),
    }
}

fn attention(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let a = &n.op.attrs;
    let mode = a.int_or("qk_matmul_output_mode", 0)?;
    if !(0..=3).contains(&mode) {
        return Err(err(format!("qk_matmul_output_mode {mode} is not 0..=3")));
    }
    let softcap = f64::from(a.float_or("softcap", 0.0)?);
    let is_causal = a.int_or("is_causal", 0)? != 0;
    let scale_attr = a.float("scale")?.map(f64::from);
    let (q, k, v) = (arg(args, 0)?, arg(args, 1)?, arg(args, 2)?);
    let mask = args.get(3).copied().flatten();
    let past_k = args.get(4).copied().flatten();
    let past_v = args.get(5).copied().flatten();
    let nonpad = args.get(6).copied().flatten();
    let qs = lx.shape(q)?;
    let packed = qs.len() == 3;
    let qdt = lx.dtype(q)?;
    let cdt = compute_dtype(qdt);
    let (qh, kvh) = (positive(n, "q_num_heads")?, positive(n, "kv_num_heads")?);

    // Everything as [batch, heads, seq, size] in the input dtypes.
    let q4 = to_bhsd(lx, q, qh)?;
    let k4 = to_bhsd(lx, k, kvh)?;
    let v4 = to_bhsd(lx, v, kvh)?;
    let present_k = match past_k {
        Some(p) => lx.concat(&[p, k4], 2)?,
        None => k4,
    };
    let present_v = match past_v {
        Some(p) => lx.concat(&[p, v4], 2)?,
        None => v4,
    };
    match n.output {
        1 => return Ok(Some(present_k)),
        2 => return Ok(Some(present_v)),
        _ => {}
    }
    let [b, hq, sq, hs]: [usize; 4] =
        lx.shape(q4)?.try_into().map_err(|_| err("Q is not 4-D after unpacking"))?;
    let ks = lx.shape(present_k)?;
    let (hkv, total) = (ks[1], ks[2]);
    let vs = lx.shape(present_v)?[3];
    if hkv == 0 || !hq.is_multiple_of(hkv) {
        return Err(err(format!("query heads {hq} are not a multiple of KV heads {hkv}")));
    }
    let group = hq / hkv;
    let past_seq = match past_k {
        Some(p) => lx.shape(p)?.get(2).copied().unwrap_or(0),
        None => 0,
    };

    // Scaled Q and K in the compute dtype.
    let scale = scale_attr.unwrap_or(1.0 / (hs as f64).sqrt());
    let qc = lx.cast(q4, cdt)?;
    let kc = lx.cast(present_k, cdt)?;
    let vc = lx.cast(present_v, cdt)?;
    let qsc = lx.binary_scalar(BinaryFn::Mul, qc, scale.sqrt())?;
    let ksc = lx.binary_scalar(BinaryFn::Mul, kc, scale.sqrt())?;
    // Query heads of one KV head are consecutive: fold the group into the query rows.
    let qg = lx.reshape(qsc, &[b, hkv, group * sq, hs])?;
    let kt = lx.transpose(ksc, &[0, 1, 3, 2])?;
    let sg = lx.matmul(qg, kt)?;
    let scores = lx.reshape(sg, &[b, hq, sq, total])?;
    let out_qk = |lx: &mut Lx, x: Id| -> Result<Option<Id>> { lx.cast(x, qdt).map(Some) };
    if n.output == 3 && mode == 0 {
        return out_qk(lx, scores);
    }
    let capped = if softcap > 0.0 {
        let d = lx.binary_scalar(BinaryFn::Div, scores, softcap)?;
        let t = lx.unary(UnaryFn::Tanh, d)?;
        lx.binary_scalar(BinaryFn::Mul, t, softcap)?
    } else {
        scores
    };
    if n.output == 3 && mode == 1 {
        return out_qk(lx, capped);
    }

    // The additive bias: the mask's values (bool: 0 or -inf), its key axis padded with
    // -inf, then -inf wherever causality or the padding lengths hide a key.
    let ninf = f64::NEG_INFINITY;
    let mut bias: Option<Id> = None;
    if let Some(m) = mask {
        let ms = lx.shape(m)?;
        let key_len = *ms.last().ok_or_else(|| err("attn_mask must have rank >= 1"))?;
        if key_len > total || ms.len() > 4 {
            return Err(err(format!("attn_mask {ms:?} does not fit the scores")));
        }
        let mb = if lx.dtype(m)? == DType::Bool {
            let zero = lx.scalar(cdt, 0.0)?;
            let ni = lx.scalar(cdt, ninf)?;
            lx.select(m, zero, ni)?
        } else {
            lx.cast(m, cdt)?
        };
        let r = ms.len();
        let mut ends = vec![0i64; r];
        ends[r - 1] = (total - key_len) as i64;
        bias = Some(lx.pad(mb, &vec![0; r], &ends, ninf)?);
    }
    let mut keep: Option<Id> = None;
    if is_causal {
        // Key j is visible from query i when j <= i + past_seq.
        let v: Vec<bool> = (0..sq).flat_map(|i| (0..total).map(move |j| j <= i + past_seq)).collect();
        keep = Some(lx.konst(Tensor::from_vec(vec![sq, total], v)?));
    }
    if let Some(np) = nonpad {
        // Key j is visible in batch entry b when j < nonpad_kv_seqlen[b].
        let j = lx.iota(DType::I64, &[1, total], 1)?;
        let np = lx.cast(np, DType::I64)?;
        let np = lx.reshape(np, &[b, 1])?;
        let lt = lx.binary(BinaryFn::Lt, j, np)?;
        let lt = lx.reshape(lt, &[b, 1, 1, total])?;
        keep = Some(match keep {
            Some(c) => lx.binary(BinaryFn::And, c, lt)?,
            None => lt,
        });
    }
    if let Some(kp) = keep {
        let ni = lx.scalar(cdt, ninf)?;
        let base = match bias {
            Some(bi) => bi,
            None => lx.scalar(cdt, 0.0)?,
        };
        bias = Some(lx.select(kp, base, ni)?);
    }
    let masked = match bias {
        Some(bi) => lx.add(capped, bi)?,
        None => capped,
    };
    if lx.shape(masked)? != [b, hq, sq, total] {
        return Err(err("the attention bias does not broadcast to the scores"));
    }
    if n.output == 3 && mode == 2 {
        return out_qk(lx, masked);
    }
    let probs = softmax_last(lx, masked)?;
    if n.output == 3 {
        return out_qk(lx, probs);
    }
    if n.output != 0 {
        return Ok(None);
    }
    let pg = lx.reshape(probs, &[b, hkv, group * sq, total])?;
    let yg = lx.matmul(pg, vc)?;
    let y = lx.reshape(yg, &[b, hq, sq, vs])?;
    let y = if packed {
        let t = lx.transpose(y, &[0, 2, 1, 3])?;
        lx.reshape(t, &[b, sq, hq * vs])?
    } else {
        y
    };
    lx.cast(y, qdt).map(Some)
}

fn rotary(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let (cos, sin) = (arg(args, 1)?, arg(args, 2)?);
    let pos = args.get(3).copied().flatten();
    let interleaved = n.op.attrs.int_or("interleaved", 0)? != 0;
    let xs = lx.shape(x)?;
    let dt = lx.dtype(x)?;
    let cdt = compute_dtype(dt);
    // x as [b, s, h, d] (packed) or [b, h, s, d].
    let (packed, x4) = match xs.len() {
        3 => {
            let h = positive(n, "num_heads")?.ok_or_else(|| err("RotaryEmbedding 3-D input needs num_heads"))?;
            if !xs[2].is_multiple_of(h) {
                return Err(err("hidden size is not divisible by num_heads"));
            }
            (true, lx.reshape(x, &[xs[0], xs[1], h, xs[2] / h])?)
        }
        4 => (false, x),
        _ => return Err(err("RotaryEmbedding input must be 3-D or 4-D")),
    };
    let s4 = lx.shape(x4)?;
    let (batch, seq, hd) = (s4[0], if packed { s4[1] } else { s4[2] }, s4[3]);
    let rot = match n.op.attrs.int_or("rotary_embedding_dim", 0)? {
        0 => hd,
        r if r > 0 && (r as usize) <= hd && r % 2 == 0 => r as usize,
        r => return Err(err(format!("rotary_embedding_dim {r} is invalid for head size {hd}"))),
    };
    if rot % 2 != 0 {
        return Err(err("RotaryEmbedding head size must be even"));
    }
    let half = rot / 2;
    // cos/sin rows per (batch, position): [b, s, half].
    let (cos, sin) = match pos {
        Some(p) => (lx.take(cos, p, 0)?, lx.take(sin, p, 0)?),
        None => (cos, sin),
    };
    if lx.shape(cos)? != [batch, seq, half] {
        return Err(err("RotaryEmbedding caches do not fit the input"));
    }
    let cshape = if packed { [batch, seq, 1, half] } else { [batch, 1, seq, half] };
    let cos = lx.cast(cos, cdt)?;
    let sin = lx.cast(sin, cdt)?;
    let cos = lx.reshape(cos, &cshape)?;
    let sin = lx.reshape(sin, &cshape)?;
    let xc = lx.cast(x4, cdt)?;
    let full: Vec<(i64, usize, i64)> = s4.iter().map(|&d| (0, d, 1)).collect();
    let lane = |lx: &mut Lx, start: usize, step: usize| -> Result<Id> {
        let mut ax = full.clone();
        ax[3] = (start as i64, half, step as i64);
        lx.strided(xc, &ax)
    };
    let (x1, x2) = if interleaved { (lane(lx, 0, 2)?, lane(lx, 1, 2)?) } else { (lane(lx, 0, 1)?, lane(lx, half, 1)?) };
    let a = lx.mul(cos, x1)?;
    let bb = lx.mul(sin, x2)?;
    let o1 = lx.sub(a, bb)?;
    let c = lx.mul(sin, x1)?;
    let d = lx.mul(cos, x2)?;
    let o2 = lx.add(c, d)?;
    let rotated = if interleaved {
        let mut s5 = s4[..3].to_vec();
        s5.extend([half, 1]);
        let o1 = lx.reshape(o1, &s5)?;
        let o2 = lx.reshape(o2, &s5)?;
        let st = lx.concat(&[o1, o2], 4)?;
        let mut s = s4.clone();
        s[3] = rot;
        lx.reshape(st, &s)?
    } else {
        lx.concat(&[o1, o2], 3)?
    };
    let out = if rot < hd {
        let mut ax = full.clone();
        ax[3] = (rot as i64, hd - rot, 1);
        let pass = lx.strided(xc, &ax)?;
        lx.concat(&[rotated, pass], 3)?
    } else {
        rotated
    };
    let out = lx.reshape(out, &xs)?;
    lx.cast(out, dt).map(Some)
}
