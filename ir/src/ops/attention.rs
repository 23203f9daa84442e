//! The attention op family: `Attention` (opset 23/24 scaled dot-product attention with
//! masks, KV cache, grouped-query heads and softcap) and `RotaryEmbedding` (opset 23).

use crate::attr::Attrs;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{bad_dtype, compute_dtype, demote, promote};
use crate::shape::{broadcast_strides, fmt_shape};
use crate::tensor::{Elem, Tensor, checked_numel};
use num_traits::Float;

crate::op_family! {
    /// Ops of the attention family.
    pub enum AttentionOp { Attention, RotaryEmbedding }
}

impl AttentionOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        match self {
            AttentionOp::Attention => attention_infer(cx),
            AttentionOp::RotaryEmbedding => rotary_infer(cx),
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        match self {
            AttentionOp::Attention => attention_eval(cx),
            AttentionOp::RotaryEmbedding => rotary_eval(cx),
        }
    }
}

fn positive_attr(attrs: &Attrs, name: &str) -> Result<Option<usize>> {
    match attrs.int(name)? {
        None => Ok(None),
        Some(v) if v > 0 => Ok(Some(v as usize)),
        Some(v) => Err(Error::InvalidModel(format!("attribute '{name}' must be positive, got {v}"))),
    }
}

fn float_input(op: &str, dtype: DType) -> Result<()> {
    if dtype.is_float() { Ok(()) } else { Err(bad_dtype(op, dtype)) }
}

// ---------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------

/// What `qk_matmul_output` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QkOutput {
    /// `Q·Kᵀ` scaled, before softcap as the spec says (the ONNX reference implementation
    /// returns the softcapped product here; no backend test covers the difference).
    MatMul,
    /// After softcap.
    Softcapped,
    /// After softcap and the mask.
    Masked,
    /// After softmax.
    Softmax,
}

/// The attributes of `Attention`.
struct AttnParams {
    is_causal: bool,
    scale: Option<f64>,
    softcap: f64,
    q_num_heads: Option<usize>,
    kv_num_heads: Option<usize>,
    qk_output: QkOutput,
}

impl AttnParams {
    fn parse(attrs: &Attrs) -> Result<AttnParams> {
        let qk_output = match attrs.int_or("qk_matmul_output_mode", 0)? {
            0 => QkOutput::MatMul,
            1 => QkOutput::Softcapped,
            2 => QkOutput::Masked,
            3 => QkOutput::Softmax,
            v => {
                return Err(Error::InvalidModel(format!(
                    "attribute 'qk_matmul_output_mode' must be 0..=3, got {v}"
                )));
            }
        };
        let softcap = f64::from(attrs.float_or("softcap", 0.0)?);
        if softcap < 0.0 || softcap.is_nan() {
            return Err(Error::InvalidModel(format!("attribute 'softcap' must be >= 0, got {softcap}")));
        }
        Ok(AttnParams {
            is_causal: attrs.int_or("is_causal", 0)? != 0,
            scale: attrs.float("scale")?.map(f64::from),
            softcap,
            q_num_heads: positive_attr(attrs, "q_num_heads")?,
            kv_num_heads: positive_attr(attrs, "kv_num_heads")?,
            qk_output,
        })
    }
}

/// The sizes of one `Attention` call.
#[derive(Clone, Debug, PartialEq)]
struct AttnDims {
    /// Q, K and V are `[batch, seq, heads * head_size]` (else `[batch, heads, seq, head_size]`).
    packed: bool,
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_seq: usize,
    kv_seq: usize,
    past_seq: usize,
    head_size: usize,
    v_head_size: usize,
}

impl AttnDims {
    fn total_seq(&self) -> usize {
        self.past_seq + self.kv_seq
    }

    fn y_shape(&self) -> Vec<usize> {
        if self.packed {
            vec![self.batch, self.q_seq, self.q_heads * self.v_head_size]
        } else {
            vec![self.batch, self.q_heads, self.q_seq, self.v_head_size]
        }
    }

    /// The shape every mask is broadcast to (before padding the key axis).
    fn scores_shape(&self) -> [usize; 4] {
        [self.batch, self.q_heads, self.q_seq, self.total_seq()]
    }
}

fn split_heads(name: &str, hidden: usize, heads: Option<usize>, attr: &str) -> Result<(usize, usize)> {
    let heads = heads.ok_or_else(|| {
        Error::InvalidModel(format!("Attention with 3-D inputs needs the '{attr}' attribute"))
    })?;
    if !hidden.is_multiple_of(heads) {
        return Err(Error::InvalidModel(format!(
            "{name} hidden size {hidden} is not divisible by {attr} = {heads}"
        )));
    }
    Ok((heads, hidden / heads))
}

/// Derives and checks the sizes from the shapes of Q, K, V, past_key and past_value.
fn attn_dims(
    p: &AttnParams,
    q: &[usize],
    k: &[usize],
    v: &[usize],
    past_k: Option<&[usize]>,
    past_v: Option<&[usize]>,
) -> Result<AttnDims> {
    let rank = q.len();
    if !(rank == 3 || rank == 4) || k.len() != rank || v.len() != rank {
        return Err(Error::InvalidModel(format!(
            "Attention needs Q, K and V all 3-D or all 4-D, got {}, {} and {}",
            fmt_shape(q),
            fmt_shape(k),
            fmt_shape(v)
        )));
    }
    let mut d = if rank == 3 {
        let (q_heads, head_size) = split_heads("Q", q[2], p.q_num_heads, "q_num_heads")?;
        let (kv_heads, k_head) = split_heads("K", k[2], p.kv_num_heads, "kv_num_heads")?;
        let (_, v_head_size) = split_heads("V", v[2], p.kv_num_heads, "kv_num_heads")?;
        if k_head != head_size {
            return Err(Error::InvalidModel(format!(
                "Q head size {head_size} differs from K head size {k_head}"
            )));
        }
        AttnDims {
            packed: true,
            batch: q[0],
            q_heads,
            kv_heads,
            q_seq: q[1],
            kv_seq: k[1],
            past_seq: 0,
            head_size,
            v_head_size,
        }
    } else {
        for (attr, given, actual) in
            [("q_num_heads", p.q_num_heads, q[1]), ("kv_num_heads", p.kv_num_heads, k[1])]
        {
            if given.is_some_and(|g| g != actual) {
                return Err(Error::InvalidModel(format!(
                    "attribute '{attr}' = {given:?} does not match the input's {actual} heads"
                )));
            }
        }
        if q[3] != k[3] || k[1] != v[1] {
            return Err(Error::InvalidModel(format!(
                "Attention Q {}, K {} and V {} disagree on head size or KV heads",
                fmt_shape(q),
                fmt_shape(k),
                fmt_shape(v)
            )));
        }
        AttnDims {
            packed: false,
            batch: q[0],
            q_heads: q[1],
            kv_heads: k[1],
            q_seq: q[2],
            kv_seq: k[2],
            past_seq: 0,
            head_size: q[3],
            v_head_size: v[3],
        }
    };
    let kv_seq_v = if d.packed { v[1] } else { v[2] };
    if k[0] != d.batch || v[0] != d.batch || kv_seq_v != d.kv_seq {
        return Err(Error::InvalidModel(format!(
            "Attention K {} and V {} disagree with Q {} on batch or sequence length",
            fmt_shape(k),
            fmt_shape(v),
            fmt_shape(q)
        )));
    }
    if d.kv_heads == 0 || d.q_heads % d.kv_heads != 0 {
        return Err(Error::InvalidModel(format!(
            "Attention query heads ({}) must be a multiple of key/value heads ({})",
            d.q_heads, d.kv_heads
        )));
    }
    match (past_k, past_v) {
        (None, None) => {}
        (Some(pk), Some(pv)) => {
            let want_k = [d.batch, d.kv_heads, pk.get(2).copied().unwrap_or(0), d.head_size];
            let want_v = [d.batch, d.kv_heads, want_k[2], d.v_head_size];
            if pk != want_k || pv != want_v {
                return Err(Error::InvalidModel(format!(
                    "past_key {} / past_value {} must be {} / {}",
                    fmt_shape(pk),
                    fmt_shape(pv),
                    fmt_shape(&want_k),
                    fmt_shape(&want_v)
                )));
            }
            d.past_seq = want_k[2];
        }
        _ => return Err(Error::InvalidModel("past_key and past_value must be given together".into())),
    }
    Ok(d)
}

/// Checks that a mask of shape `m` broadcasts to the scores, its key axis possibly shorter.
fn check_mask(m: &[usize], d: &AttnDims) -> Result<()> {
    let target = d.scores_shape();
    let bad = || {
        Error::InvalidModel(format!(
            "attn_mask {} does not broadcast to the scores {}",
            fmt_shape(m),
            fmt_shape(&target)
        ))
    };
    if m.is_empty() || m.len() > 4 {
        return Err(bad());
    }
    let off = 4 - m.len();
    for (i, &dim) in m.iter().enumerate() {
        let t = target[off + i];
        let ok = if off + i == 3 { dim <= t } else { dim == t || dim == 1 };
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn attention_infer(cx: &InferCx) -> Result<Vec<ValueType>> {
    let p = AttnParams::parse(cx.attrs)?;
    let (qt, kt, vt) = (cx.dtype(0)?, cx.dtype(1)?, cx.dtype(2)?);
    for t in [qt, kt, vt] {
        float_input("Attention", t)?;
    }
    if kt != qt {
        return Err(Error::InvalidModel(format!("Attention K is {kt} but Q is {qt}")));
    }
    if compute_dtype(vt) != compute_dtype(qt) {
        return Err(Error::Unsupported(format!("Attention with Q of {qt} and V of {vt}")));
    }
    if let Some(m) = cx.opt(3) {
        let mt = m.ty.dtype;
        if mt != DType::Bool && mt != qt {
            return Err(Error::InvalidModel(format!(
                "Attention attn_mask must be bool or {qt} like Q, got {mt}"
            )));
        }
    }
    for (i, name, want) in [(4, "past_key", kt), (5, "past_value", vt)] {
        if let Some(f) = cx.opt(i)
            && f.ty.dtype != want
        {
            return Err(Error::InvalidModel(format!(
                "Attention {name} is {} but should be {want}",
                f.ty.dtype
            )));
        }
    }
    if let Some(f) = cx.opt(6)
        && f.ty.dtype != DType::I64
    {
        return Err(Error::InvalidModel(format!(
            "Attention nonpad_kv_seqlen must be int64, got {}",
            f.ty.dtype
        )));
    }
    let shape_of = |i: usize| cx.opt(i).map(|f| f.ty.shape.as_deref());
    let (pk, pv) = (shape_of(4), shape_of(5));
    let (Some(q), Some(k), Some(v)) = (cx.shape(0)?, cx.shape(1)?, cx.shape(2)?) else {
        return Ok([qt, kt, vt, qt].map(ValueType::unknown).to_vec());
    };
    if matches!(pk, Some(None)) || matches!(pv, Some(None)) {
        return Ok([qt, kt, vt, qt].map(ValueType::unknown).to_vec());
    }
    let d = attn_dims(&p, q, k, v, pk.flatten(), pv.flatten())?;
    if let Some(Some(m)) = shape_of(3) {
        check_mask(m, &d)?;
    }
    if let Some(Some(n)) = shape_of(6)
        && n != [d.batch]
    {
        return Err(Error::InvalidModel(format!(
            "Attention nonpad_kv_seqlen {} must be [{}]",
            fmt_shape(n),
            d.batch
        )));
    }
    let total = d.total_seq();
    Ok(vec![
        ValueType::new(qt, d.y_shape()),
        ValueType::new(kt, vec![d.batch, d.kv_heads, total, d.head_size]),
        ValueType::new(vt, vec![d.batch, d.kv_heads, total, d.v_head_size]),
        ValueType::new(qt, d.scores_shape().to_vec()),
    ])
}

/// Reads K or V (3-D packed or 4-D) after an optional past, into `[batch, heads, total, size]`.
fn concat_past<T: Copy>(past: Option<&[T]>, new: &[T], d: &AttnDims, size: usize) -> Vec<T> {
    let total = d.total_seq();
    let mut out = Vec::with_capacity(d.batch * d.kv_heads * total * size);
    for b in 0..d.batch {
        for h in 0..d.kv_heads {
            if let Some(past) = past {
                let start = (b * d.kv_heads + h) * d.past_seq * size;
                out.extend_from_slice(&past[start..start + d.past_seq * size]);
            }
            for s in 0..d.kv_seq {
                let start = if d.packed {
                    ((b * d.kv_seq + s) * d.kv_heads + h) * size
                } else {
                    ((b * d.kv_heads + h) * d.kv_seq + s) * size
                };
                out.extend_from_slice(&new[start..start + size]);
            }
        }
    }
    out
}

/// The additive bias `[batch, q_heads, q_seq, total]` from the mask, causality and padding,
/// or `None` when nothing is masked.
fn attention_bias<T: Elem + Float>(
    mask: Option<&Tensor>,
    nonpad: Option<&[i64]>,
    p: &AttnParams,
    d: &AttnDims,
) -> Result<Option<Vec<T>>> {
    if mask.is_none() && nonpad.is_none() && !p.is_causal {
        return Ok(None);
    }
    let shape = d.scores_shape();
    let total = d.total_seq();
    let mut bias = vec![T::zero(); shape.iter().product()];
    if let Some(m) = mask {
        let values: Vec<T> = match m.as_slice::<bool>() {
            Some(bools) => {
                bools.iter().map(|&keep| if keep { T::zero() } else { T::neg_infinity() }).collect()
            }
            None => promote(m).to_f64_vec().into_iter().map(|x| T::from(x).unwrap_or_else(T::nan)).collect(),
        };
        let key_len = m.shape().last().copied().unwrap_or(1);
        // Broadcast over [batch, heads, q_seq]; the key axis is read as is, then padded.
        let lead: Vec<usize> = m.shape()[..m.rank() - 1].to_vec();
        let strides = broadcast_strides(&lead, &shape[..3]);
        let row_stride =
            |idx: [usize; 3]| idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>() * key_len;
        let mut at = 0;
        for b in 0..shape[0] {
            for h in 0..shape[1] {
                for i in 0..shape[2] {
                    let row = row_stride([b, h, i]);
                    for j in 0..total {
                        bias[at] = if j < key_len { values[row + j] } else { T::neg_infinity() };
                        at += 1;
                    }
                }
            }
        }
    }
    for b in 0..shape[0] {
        let valid = match nonpad {
            Some(n) => {
                let v = n[b];
                if v < 0 {
                    return Err(Error::InvalidInput(format!("nonpad_kv_seqlen[{b}] = {v} is negative")));
                }
                (v as usize).min(total)
            }
            None => total,
        };
        for h in 0..shape[1] {
            for i in 0..shape[2] {
                let row = &mut bias[((b * shape[1] + h) * shape[2] + i) * total..][..total];
                // Upper-left aligned causality, shifted by the cached past.
                let causal_end = if p.is_causal { (i + d.past_seq + 1).min(total) } else { total };
                for x in &mut row[valid.min(causal_end)..] {
                    *x = T::neg_infinity();
                }
            }
        }
    }
    Ok(Some(bias))
}

fn attention_eval(cx: &EvalCx) -> Result<Vec<Tensor>> {
    let p = AttnParams::parse(cx.attrs)?;
    let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let (pk, pv) = (cx.opt(4), cx.opt(5));
    let d = attn_dims(&p, q.shape(), k.shape(), v.shape(), pk.map(Tensor::shape), pv.map(Tensor::shape))?;
    let nonpad = cx.opt(6).map(Tensor::to_i64_vec);
    // The scores are materialized whether or not qk_matmul_output is asked for.
    checked_numel(&d.scores_shape())?;
    let cdt = compute_dtype(q.dtype());
    let (y, present_k, present_v, qk) = crate::with_float!(cdt, "Attention", T => {
        let (qc, kc, vc) = (promote(q), promote(k), promote(v));
        let (pkc, pvc) = (pk.map(promote), pv.map(promote));
        let past_k = match &pkc { Some(t) => Some(t.slice::<T>()?), None => None };
        let past_v = match &pvc { Some(t) => Some(t.slice::<T>()?), None => None };
        let keys = concat_past(past_k, kc.slice::<T>()?, &d, d.head_size);
        let values = concat_past(past_v, vc.slice::<T>()?, &d, d.v_head_size);
        let bias = attention_bias::<T>(cx.opt(3), nonpad.as_deref(), &p, &d)?;
        let (y, qk) = attend(qc.slice::<T>()?, &keys, &values, bias.as_deref(), &p, &d);
        let total = d.total_seq();
        (
            Tensor::from_vec(d.y_shape(), y)?,
            Tensor::from_vec(vec![d.batch, d.kv_heads, total, d.head_size], keys)?,
            Tensor::from_vec(vec![d.batch, d.kv_heads, total, d.v_head_size], values)?,
            Tensor::from_vec(d.scores_shape().to_vec(), qk)?,
        )
    });
    Ok(vec![
        demote(y, q.dtype()),
        demote(present_k, k.dtype()),
        demote(present_v, v.dtype()),
        demote(qk, q.dtype()),
    ])
}

/// The attention itself over present keys/values `[batch, kv_heads, total, size]`:
/// returns Y (in the layout of Q) and the requested `qk_matmul_output`.
fn attend<T: Elem + Float>(
    q: &[T],
    keys: &[T],
    values: &[T],
    bias: Option<&[T]>,
    p: &AttnParams,
    d: &AttnDims,
) -> (Vec<T>, Vec<T>) {
    let total = d.total_seq();
    let (hs, vs) = (d.head_size, d.v_head_size);
    let scale = p.scale.unwrap_or(1.0 / (hs as f64).sqrt());
    // Q and K are each scaled by sqrt(scale), as the spec prescribes against overflow.
    let sqrt_scale = T::from(scale.sqrt()).unwrap_or_else(T::nan);
    let softcap = T::from(p.softcap).unwrap_or_else(T::zero);
    let group = d.q_heads / d.kv_heads;
    let mut y = vec![T::zero(); d.batch * d.q_heads * d.q_seq * vs];
    let mut qk_out = vec![T::zero(); d.batch * d.q_heads * d.q_seq * total];
    let mut scores = vec![T::zero(); total];
    let mut q_scaled = vec![T::zero(); hs];
    let mut k_scaled = vec![T::zero(); total * hs];
    for b in 0..d.batch {
        for kvh in 0..d.kv_heads {
            let kv_base = (b * d.kv_heads + kvh) * total;
            for (dst, &src) in k_scaled.iter_mut().zip(&keys[kv_base * hs..(kv_base + total) * hs]) {
                *dst = src * sqrt_scale;
            }
            for h in kvh * group..(kvh + 1) * group {
                for i in 0..d.q_seq {
                    let q_at = if d.packed {
                        ((b * d.q_seq + i) * d.q_heads + h) * hs
                    } else {
                        ((b * d.q_heads + h) * d.q_seq + i) * hs
                    };
                    for (dst, &src) in q_scaled.iter_mut().zip(&q[q_at..q_at + hs]) {
                        *dst = src * sqrt_scale;
                    }
                    let row = ((b * d.q_heads + h) * d.q_seq + i) * total;
                    let qk_row = &mut qk_out[row..row + total];
                    for (j, s) in scores.iter_mut().enumerate() {
                        let kj = &k_scaled[j * hs..(j + 1) * hs];
                        *s = q_scaled.iter().zip(kj).fold(T::zero(), |acc, (&a, &b)| acc + a * b);
                    }
                    if p.qk_output == QkOutput::MatMul {
                        qk_row.copy_from_slice(&scores);
                    }
                    if softcap > T::zero() {
                        for s in scores.iter_mut() {
                            *s = (*s / softcap).tanh() * softcap;
                        }
                    }
                    if p.qk_output == QkOutput::Softcapped {
                        qk_row.copy_from_slice(&scores);
                    }
                    if let Some(bias) = bias {
                        for (s, &bv) in scores.iter_mut().zip(&bias[row..row + total]) {
                            *s = *s + bv;
                        }
                    }
                    if p.qk_output == QkOutput::Masked {
                        qk_row.copy_from_slice(&scores);
                    }
                    softmax_in_place(&mut scores);
                    if p.qk_output == QkOutput::Softmax {
                        qk_row.copy_from_slice(&scores);
                    }
                    let y_at = if d.packed {
                        ((b * d.q_seq + i) * d.q_heads + h) * vs
                    } else {
                        ((b * d.q_heads + h) * d.q_seq + i) * vs
                    };
                    let y_row = &mut y[y_at..y_at + vs];
                    for (j, &pj) in scores.iter().enumerate() {
                        let vj = &values[(kv_base + j) * vs..(kv_base + j + 1) * vs];
                        for (o, &x) in y_row.iter_mut().zip(vj) {
                            *o = *o + pj * x;
                        }
                    }
                }
            }
        }
    }
    (y, qk_out)
}

/// Softmax of one row (a row of only `-inf` gives NaN, as the ONNX reference does).
fn softmax_in_place<T: Float>(row: &mut [T]) {
    let max = row.iter().fold(T::neg_infinity(), |m, &x| m.max(x));
    let mut sum = T::zero();
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum = sum + *x;
    }
    for x in row.iter_mut() {
        *x = *x / sum;
    }
}

// ---------------------------------------------------------------------------------------
// RotaryEmbedding
// ---------------------------------------------------------------------------------------

/// The sizes of one `RotaryEmbedding` call.
struct RopeDims {
    /// X is `[batch, seq, heads * head_size]` (else `[batch, heads, seq, head_size]`).
    packed: bool,
    batch: usize,
    heads: usize,
    seq: usize,
    head_size: usize,
    rotary_dim: usize,
}

fn rope_dims(attrs: &Attrs, x: &[usize]) -> Result<RopeDims> {
    let num_heads = positive_attr(attrs, "num_heads")?;
    let (packed, batch, heads, seq, head_size) = match *x {
        [b, s, hidden] => {
            let h = num_heads.ok_or_else(|| {
                Error::InvalidModel("RotaryEmbedding with 3-D input needs the 'num_heads' attribute".into())
            })?;
            if hidden % h != 0 {
                return Err(Error::InvalidModel(format!(
                    "RotaryEmbedding hidden size {hidden} is not divisible by num_heads = {h}"
                )));
            }
            (true, b, h, s, hidden / h)
        }
        [b, h, s, hs] => (false, b, h, s, hs),
        _ => {
            return Err(Error::InvalidModel(format!(
                "RotaryEmbedding input must be 3-D or 4-D, got {}",
                fmt_shape(x)
            )));
        }
    };
    let rotary_dim = match attrs.int_or("rotary_embedding_dim", 0)? {
        0 => head_size,
        r if r > 0 && (r as usize) <= head_size && r % 2 == 0 => r as usize,
        r => {
            return Err(Error::InvalidModel(format!(
                "attribute 'rotary_embedding_dim' = {r} must be even and at most the head size {head_size}"
            )));
        }
    };
    if rotary_dim % 2 != 0 {
        return Err(Error::InvalidModel(format!("RotaryEmbedding head size {head_size} must be even")));
    }
    Ok(RopeDims { packed, batch, heads, seq, head_size, rotary_dim })
}

/// Checks the cos/sin caches (and position ids) against the input.
fn check_rope_caches(d: &RopeDims, cache: &[usize], positions: Option<&[usize]>) -> Result<()> {
    let half = d.rotary_dim / 2;
    let ok = match positions {
        Some(pos) => pos == [d.batch, d.seq] && cache.len() == 2 && cache[1] == half,
        None => cache == [d.batch, d.seq, half],
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidModel(format!(
            "RotaryEmbedding caches {} (position_ids {}) do not fit batch {}, sequence {} and rotary dim {}",
            fmt_shape(cache),
            positions.map_or("absent".to_string(), fmt_shape),
            d.batch,
            d.seq,
            d.rotary_dim
        )))
    }
}

fn rotary_infer(cx: &InferCx) -> Result<Vec<ValueType>> {
    let dt = cx.dtype(0)?;
    float_input("RotaryEmbedding", dt)?;
    for i in [1, 2] {
        if cx.dtype(i)? != dt {
            return Err(Error::InvalidModel(format!(
                "RotaryEmbedding caches must be {dt} like the input, got {}",
                cx.dtype(i)?
            )));
        }
    }
    if let Some(f) = cx.opt(3)
        && f.ty.dtype != DType::I64
    {
        return Err(Error::InvalidModel(format!(
            "RotaryEmbedding position_ids must be int64, got {}",
            f.ty.dtype
        )));
    }
    let Some(x) = cx.shape(0)? else { return Ok(vec![ValueType::unknown(dt)]) };
    let d = rope_dims(cx.attrs, x)?;
    let positions = cx.opt(3).map(|f| f.ty.shape.as_deref());
    if let (Some(cos), Some(sin)) = (cx.shape(1)?, cx.shape(2)?) {
        if cos != sin {
            return Err(Error::InvalidModel(format!(
                "RotaryEmbedding cos_cache {} and sin_cache {} differ",
                fmt_shape(cos),
                fmt_shape(sin)
            )));
        }
        match positions {
            Some(None) => {}
            Some(Some(pos)) => check_rope_caches(&d, cos, Some(pos))?,
            None => check_rope_caches(&d, cos, None)?,
        }
    }
    Ok(vec![ValueType::new(dt, x.to_vec())])
}

fn rotary_eval(cx: &EvalCx) -> Result<Vec<Tensor>> {
    let x = cx.input(0)?;
    let d = rope_dims(cx.attrs, x.shape())?;
    let interleaved = cx.attrs.int_or("interleaved", 0)? != 0;
    let cos_t = cx.input(1)?;
    let positions = cx.opt(3).map(Tensor::to_i64_vec);
    let half = d.rotary_dim / 2;
    // The cache row of each (batch, position) pair.
    let rows: Vec<usize> = match &positions {
        Some(pos) => {
            let max_pos = cos_t.shape().first().copied().unwrap_or(0);
            pos.iter()
                .map(|&p| {
                    usize::try_from(p).ok().filter(|&p| p < max_pos).ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "position id {p} is out of range for a cache of {max_pos} rows"
                        ))
                    })
                })
                .collect::<Result<_>>()?
        }
        None => (0..d.batch * d.seq).collect(),
    };
    let out = crate::with_float!(compute_dtype(x.dtype()), "RotaryEmbedding", T => {
        let (xc, cc, sc) = (promote(x), promote(cos_t), promote(cx.input(2)?));
        let (xv, cos, sin) = (xc.slice::<T>()?, cc.slice::<T>()?, sc.slice::<T>()?);
        let mut out = xv.to_vec();
        for b in 0..d.batch {
            for s in 0..d.seq {
                let row = rows[b * d.seq + s] * half;
                let (cos, sin) = (&cos[row..row + half], &sin[row..row + half]);
                for h in 0..d.heads {
                    let at = if d.packed {
                        ((b * d.seq + s) * d.heads + h) * d.head_size
                    } else {
                        ((b * d.heads + h) * d.seq + s) * d.head_size
                    };
                    let src = &xv[at..at + d.rotary_dim];
                    let dst = &mut out[at..at + d.rotary_dim];
                    for k in 0..half {
                        let (i1, i2) = if interleaved { (2 * k, 2 * k + 1) } else { (k, k + half) };
                        let (x1, x2) = (src[i1], src[i2]);
                        dst[i1] = cos[k] * x1 - sin[k] * x2;
                        dst[i2] = sin[k] * x1 + cos[k] * x2;
                    }
                }
            }
        }
        Tensor::from_vec(x.shape().to_vec(), out)?
    });
    Ok(vec![demote(out, x.dtype())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;
    use crate::op::{Op, OpKind};

    fn run(op: AttentionOp, attrs: Attrs, inputs: &[Option<&Tensor>], outs: usize) -> Result<Vec<Tensor>> {
        Op { kind: OpKind::Attention(op), attrs, version: 23 }.eval(inputs, outs)
    }

    /// One query against keys [1,0] and [0,0] with values 1 and 0, scale 1.
    fn one_query() -> Result<(Tensor, Tensor, Tensor)> {
        Ok((
            Tensor::from_vec(vec![1, 1, 1, 2], vec![1.0f64, 0.0])?,
            Tensor::from_vec(vec![1, 1, 2, 2], vec![1.0f64, 0.0, 0.0, 0.0])?,
            Tensor::from_vec(vec![1, 1, 2, 1], vec![1.0f64, 0.0])?,
        ))
    }

    #[test]
    fn attention_softmax_weights_values() -> Result<()> {
        let (q, k, v) = one_query()?;
        let mut attrs = Attrs::new();
        attrs.set("scale", Attr::Float(1.0));
        let out = run(AttentionOp::Attention, attrs.clone(), &[Some(&q), Some(&k), Some(&v)], 4)?;
        let e = std::f64::consts::E;
        assert!((out[0].slice::<f64>()?[0] - e / (e + 1.0)).abs() < 1e-12);
        assert_eq!(out[3].slice::<f64>()?, &[1.0, 0.0]);
        // Causal: the single query sees only the first key.
        attrs.set("is_causal", Attr::Int(1));
        let out = run(AttentionOp::Attention, attrs, &[Some(&q), Some(&k), Some(&v)], 1)?;
        assert_eq!(out[0].slice::<f64>()?, &[1.0]);
        Ok(())
    }

    #[test]
    fn attention_bool_mask_and_grouped_heads() -> Result<()> {
        let (_, k, v) = one_query()?;
        let q = Tensor::from_vec(vec![1, 2, 1, 2], vec![1.0f64, 0.0, 5.0, 5.0])?;
        let mask = Tensor::from_vec(vec![1, 2], vec![false, true])?;
        let out = run(AttentionOp::Attention, Attrs::new(), &[Some(&q), Some(&k), Some(&v), Some(&mask)], 1)?;
        // Both query heads share the single KV head; the mask leaves only the value 0.
        assert_eq!(out[0].shape(), &[1, 2, 1, 1]);
        assert_eq!(out[0].slice::<f64>()?, &[0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn attention_3d_needs_head_counts() -> Result<()> {
        let q = Tensor::from_vec(vec![1, 1, 2], vec![1.0f32, 0.0])?;
        assert!(run(AttentionOp::Attention, Attrs::new(), &[Some(&q), Some(&q), Some(&q)], 1).is_err());
        Ok(())
    }

    #[test]
    fn rotary_rotates_pairs() -> Result<()> {
        // [batch 1, heads 1, seq 1, head 4]: pairs (x0, x2) and (x1, x3) rotate by 90 and 0 degrees.
        let x = Tensor::from_vec(vec![1, 1, 1, 4], vec![1.0f32, 2.0, 3.0, 4.0])?;
        let cos = Tensor::from_vec(vec![1, 1, 2], vec![0.0f32, 1.0])?;
        let sin = Tensor::from_vec(vec![1, 1, 2], vec![1.0f32, 0.0])?;
        let out = run(AttentionOp::RotaryEmbedding, Attrs::new(), &[Some(&x), Some(&cos), Some(&sin)], 1)?;
        assert_eq!(out[0].slice::<f32>()?, &[-3.0, 2.0, 1.0, 4.0]);
        Ok(())
    }
}
