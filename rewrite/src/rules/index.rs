//! Rules of the index family. Gather is `Lx::take`; GatherElements and ScatterElements
//! (and its old name Scatter) map to the Gather/Scatter atoms after normalizing negative
//! indices; GatherND and ScatterND linearize their index tuples into one flat index over
//! the indexed dims (data viewed as `[batch, selected, slice]`) and use the same atoms;
//! TensorScatter scatters the update along its axis at `write_indices[b] + s` (mod the
//! cache length when circular). Compress, NonZero and Unique are host ops.

use crate::rules::err;
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{Atom, BinaryFn, ScatterMode};
use ir::shape::normalize_axis;
use ir::{DType, Result};

pub const RULES: &[Rule] = &[
    Rule {
        name: "index/gather",
        identity: "Gather(x, i, axis) = GatherElements over x broadcast on the index dims (Lx::take)",
        action: Action::Lower { ops: &["Gather"], apply: gather },
    },
    Rule {
        name: "index/gather-elements",
        identity: "GatherElements(x, i, axis) = Gather_axis(x, i < 0 ? i + n : i)",
        action: Action::Lower { ops: &["GatherElements"], apply: gather_elements },
    },
    Rule {
        name: "index/gather-nd",
        identity: "GatherND(x, i) = reshape(Gather_1(x as [B, N, L], Σ_k i[..,k]·stride_k broadcast to [B, Q, L]))",
        action: Action::Lower { ops: &["GatherND"], apply: gather_nd },
    },
    Rule {
        name: "index/scatter-elements",
        identity: "ScatterElements(x, i, u, axis, reduction) = Scatter_axis,mode(x, i < 0 ? i + n : i, u)",
        action: Action::Lower { ops: &["ScatterElements", "Scatter"], apply: scatter_elements },
    },
    Rule {
        name: "index/scatter-nd",
        identity: "ScatterND(x, i, u) = reshape(Scatter_0,mode(x as [N, L], Σ_k i[..,k]·stride_k as [Q, L], u as [Q, L]))",
        action: Action::Lower { ops: &["ScatterND"], apply: scatter_nd },
    },
    Rule {
        name: "index/tensor-scatter",
        identity: "TensorScatter(c, u, w, axis) = Scatter_axis(c, (w[b] + iota_axis) (mod n if circular), u)",
        action: Action::Lower { ops: &["TensorScatter"], apply: tensor_scatter },
    },
];


fn gather(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let i = arg(args, 1)?;
    let axis = normalize_axis(n.op.attrs.int_or("axis", 0)?, lx.rank(x)?)?;
    lx.take(x, i, axis).map(Some)
}

fn gather_elements(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let s = lx.shape(x)?;
    let axis = normalize_axis(n.op.attrs.int_or("axis", 0)?, s.len())?;
    let i = lx.cast(arg(args, 1)?, DType::I64)?;
    let i = lx.normalize_index(i, s[axis])?;
    lx.atom(Atom::Gather { axis }, &[x, i]).map(Some)
}

/// The scatter mode of a `reduction` attribute.
fn scatter_mode(n: &HlNode) -> Result<ScatterMode> {
    Ok(match n.op.attrs.string_or("reduction", "none")? {
        "none" => ScatterMode::Replace,
        "add" => ScatterMode::Add,
        "mul" => ScatterMode::Mul,
        "max" => ScatterMode::Max,
        "min" => ScatterMode::Min,
        other => return Err(err(format!("reduction '{other}' must be none/add/mul/max/min"))),
    })
}

fn scatter_elements(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let u = arg(args, 2)?;
    let s = lx.shape(x)?;
    let axis = normalize_axis(n.op.attrs.int_or("axis", 0)?, s.len())?;
    let mode = scatter_mode(n)?;
    let i = lx.cast(arg(args, 1)?, DType::I64)?;
    let i = lx.normalize_index(i, s[axis])?;
    lx.atom(Atom::Scatter { axis, mode }, &[x, i, u]).map(Some)
}

/// The flat index of each index tuple (the last axis of `idx`, of length `dims.len()`)
/// over the row-major box `dims`, negative entries counted from the end: shape `idx[..-1]`.
fn linearize(lx: &mut Lx, idx: Id, dims: &[usize]) -> Result<Id> {
    let is = lx.shape(idx)?;
    let q = is.len();
    let m = dims.len();
    if q == 0 || is[q - 1] != m {
        return Err(err(format!("index tuples of shape {is:?} do not fit {m} dims")));
    }
    let idx = lx.cast(idx, DType::I64)?;
    let mut acc: Option<Id> = None;
    let mut stride = 1i64;
    for k in (0..m).rev() {
        let sel: Vec<(i64, usize, i64)> =
            is.iter().enumerate().map(|(d, &n)| if d == q - 1 { (k as i64, 1, 1) } else { (0, n, 1) }).collect();
        let col = lx.strided(idx, &sel)?;
        let col = lx.reshape(col, &is[..q - 1])?;
        let col = lx.normalize_index(col, dims[k])?;
        let term = if stride == 1 { col } else { lx.binary_scalar(BinaryFn::Mul, col, stride as f64)? };
        acc = Some(match acc {
            None => term,
            Some(a) => lx.add(a, term)?,
        });
        stride *= dims[k] as i64;
    }
    acc.ok_or_else(|| err("empty index tuples"))
}

fn gather_nd(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let idx = arg(args, 1)?;
    let ds = lx.shape(x)?;
    let is = lx.shape(idx)?;
    let (r, q) = (ds.len(), is.len());
    let b = usize::try_from(n.op.attrs.int_or("batch_dims", 0)?)
        .ok()
        .filter(|&b| b < r.min(q))
        .ok_or_else(|| err("batch_dims must be in [0, min(rank(data), rank(indices)))"))?;
    let m = is[q - 1];
    if m < 1 || b + m > r {
        return Err(err(format!("index tuples of length {m} do not fit data of rank {r} with {b} batch dims")));
    }
    let batch: usize = ds[..b].iter().product();
    let sel: usize = ds[b..b + m].iter().product();
    let len: usize = ds[b + m..].iter().product();
    let per_batch: usize = is[b..q - 1].iter().product();
    let lin = linearize(lx, idx, &ds[b..b + m])?;
    let lin = lx.reshape(lin, &[batch, per_batch, 1])?;
    let lin = lx.broadcast_to(lin, &[batch, per_batch, len])?;
    let data = lx.reshape(x, &[batch, sel, len])?;
    let g = lx.atom(Atom::Gather { axis: 1 }, &[data, lin])?;
    let out = n.ty.shape.clone().ok_or_else(|| err("output shape is not static"))?;
    lx.reshape(g, &out).map(Some)
}

fn scatter_nd(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let idx = arg(args, 1)?;
    let u = arg(args, 2)?;
    let ds = lx.shape(x)?;
    let is = lx.shape(idx)?;
    let q = is.len();
    let m = is.last().copied().unwrap_or(0);
    if q == 0 || m == 0 || m > ds.len() {
        return Err(err(format!("ScatterND indices of shape {is:?} do not fit data {ds:?}")));
    }
    let mode = scatter_mode(n)?;
    let sel: usize = ds[..m].iter().product();
    let len: usize = ds[m..].iter().product();
    let count: usize = is[..q - 1].iter().product();
    let lin = linearize(lx, idx, &ds[..m])?;
    let lin = lx.reshape(lin, &[count, 1])?;
    let lin = lx.broadcast_to(lin, &[count, len])?;
    let data = lx.reshape(x, &[sel, len])?;
    let upd = lx.reshape(u, &[count, len])?;
    let y = lx.atom(Atom::Scatter { axis: 0, mode }, &[data, lin, upd])?;
    lx.reshape(y, &ds).map(Some)
}

fn tensor_scatter(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let cache = arg(args, 0)?;
    let u = arg(args, 1)?;
    let cs = lx.shape(cache)?;
    let us = lx.shape(u)?;
    let axis = normalize_axis(n.op.attrs.int_or("axis", -2)?, cs.len())?;
    if axis == 0 {
        return Err(err("TensorScatter axis must not be the batch axis 0"));
    }
    let circular = match n.op.attrs.string_or("mode", "linear")? {
        "linear" => false,
        "circular" => true,
        other => return Err(err(format!("TensorScatter mode must be linear or circular, got '{other}'"))),
    };
    let max_len = cs[axis];
    // Write position of update slice s of batch b: w[b] + s.
    let w = match args.get(2).copied().flatten() {
        Some(w) => lx.cast(w, DType::I64)?,
        None => lx.full(DType::I64, &[cs[0]], 0.0)?,
    };
    let mut wshape = vec![1usize; us.len()];
    wshape[0] = cs[0];
    let w = lx.reshape(w, &wshape)?;
    let s = lx.iota(DType::I64, &us, axis)?;
    let pos = lx.add(w, s)?;
    let pos = if circular && max_len > 0 { lx.binary_scalar(BinaryFn::Mod, pos, max_len as f64)? } else { pos };
    lx.atom(Atom::Scatter { axis, mode: ScatterMode::Replace }, &[cache, pos, u]).map(Some)
}
