//! Rules of the quant family: linear (de)quantization as elementwise atoms over the scale
//! and zero point broadcast to the data (per-tensor, per-axis, or blocked: each block's
//! scale repeated along the axis by views), with the reference's rounding (half to even)
//! and saturation; DynamicQuantizeLinear computes its scale and zero point with reductions.

use crate::rules::err;
use crate::egraph::HlNode;
use crate::lx::Lx;
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{BinaryFn, ReduceFn, UnaryFn};
use ir::{DType, Error, Result};

pub const RULES: &[Rule] = &[
    Rule {
        name: "quant/quantize",
        identity: "QuantizeLinear(x, s, z) = Cast(T, clamp(round_even(x / bcast(s)) + bcast(z), T::MIN, T::MAX))",
        action: Action::Lower { ops: &["QuantizeLinear"], apply: quantize },
    },
    Rule {
        name: "quant/dequantize",
        identity: "DequantizeLinear(x, s, z) = Cast(out, f32(i64(x) - i64(bcast(z))) * f32(bcast(s)))",
        action: Action::Lower { ops: &["DequantizeLinear"], apply: dequantize },
    },
    Rule {
        name: "quant/dynamic",
        identity: "DynamicQuantizeLinear(x) = quantize(x, s, z) with s = (max(x,0) - min(x,0)) / 255, z = round(clamp(-min/s, 0, 255))",
        action: Action::Lower { ops: &["DynamicQuantizeLinear"], apply: dynamic },
    },
];


/// Broadcasts a scale or zero point `s` to the data shape `x` following the layout rules
/// of the reference: per-tensor (one element), per-axis (1-D of the axis length along
/// `axis`) or blocked (`block > 0`: x's shape with the axis divided into blocks).
fn spread(lx: &mut Lx, n: &HlNode, s: Id, x: &[usize]) -> Result<Id> {
    let ss = lx.shape(s)?;
    let block = n.op.attrs.int_or("block_size", 0)?;
    if block < 0 {
        return Err(err(format!("block_size must not be negative, got {block}")));
    }
    if block == 0 && ss.len() <= 1 && ss.iter().product::<usize>() == 1 {
        let s0 = lx.reshape(s, &[])?;
        return lx.broadcast_to(s0, x);
    }
    let axis = ir::shape::normalize_axis(n.op.attrs.int_or("axis", 1)?, x.len())?;
    let len = x[axis];
    if block == 0 {
        if ss != [len] {
            return Err(err(format!("per-axis scale of shape {ss:?} does not match axis {axis} of {x:?}")));
        }
        let mut shape = vec![1usize; x.len()];
        shape[axis] = len;
        let s1 = lx.reshape(s, &shape)?;
        return lx.broadcast_to(s1, x);
    }
    let block = block as usize;
    let blocks = len.div_ceil(block);
    let mut want = x.to_vec();
    want[axis] = blocks;
    if ss != want {
        return Err(err(format!("blocked scale of shape {ss:?} does not match {want:?}")));
    }
    // [.., blocks, ..] -> [.., blocks, 1, ..] -> [.., blocks, block, ..] -> [.., blocks*block, ..]
    // -> the first `len` along the axis.
    let mut split = want.clone();
    split.insert(axis + 1, 1);
    let t = lx.reshape(s, &split)?;
    split[axis + 1] = block;
    let t = lx.broadcast_to(t, &split)?;
    let mut merged = want;
    merged[axis] = blocks * block;
    let t = lx.reshape(t, &merged)?;
    if blocks * block == len {
        return Ok(t);
    }
    let axes: Vec<(i64, usize, i64)> =
        x.iter().enumerate().map(|(d, &e)| (0, if d == axis { len } else { e }, 1)).collect();
    lx.strided(t, &axes)
}

/// The range of a quantized type.
fn range(d: DType) -> Result<(f64, f64)> {
    Ok(match d {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        other => return Err(Error::Unsupported(format!("quantization to {other}"))),
    })
}

/// `Cast(to, clamp(round_even(q) + z, lo, hi))` with q and z in one float dtype.
fn round_saturate(lx: &mut Lx, q: Id, z: Option<Id>, to: DType) -> Result<Id> {
    let (lo, hi) = range(to)?;
    let mut y = lx.unary(UnaryFn::Round, q)?;
    if let Some(z) = z {
        y = lx.add(y, z)?;
    }
    let y = lx.binary_scalar(BinaryFn::Max, y, lo)?;
    let y = lx.binary_scalar(BinaryFn::Min, y, hi)?;
    lx.cast(y, to)
}

fn quantize(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, s) = (arg(args, 0)?, arg(args, 1)?);
    let zp = args.get(2).copied().flatten();
    let shape = lx.shape(x)?;
    let (xd, sd) = (lx.dtype(x)?, lx.dtype(s)?);
    let div = match n.op.attrs.int_or("precision", 0)? {
        0 => sd,
        code => match i32::try_from(code).ok().and_then(DType::from_onnx_code) {
            Some(d @ (DType::F32 | DType::F16 | DType::BF16)) => d,
            _ => return Err(Error::Unsupported(format!("QuantizeLinear precision {code}"))),
        },
    };
    let s = spread(lx, n, s, &shape)?;
    // The quotient in the division type (f16/bf16: operands rounded to it, divided in f32,
    // rounded back, which the Div atom does); exactly in f64 when an i32 is involved.
    // Rounding and saturation then run in f32 (exact for f32-representable quotients: the
    // zero point only matters below 2^24, where the sum is exact) or f64.
    let (q, work) = if xd == DType::I32 || sd == DType::I32 {
        let xf = lx.cast(x, DType::F64)?;
        let sf = lx.cast(s, DType::F64)?;
        (lx.div(xf, sf)?, DType::F64)
    } else {
        let xf = lx.cast(x, div)?;
        let sf = lx.cast(s, div)?;
        (lx.div(xf, sf)?, DType::F32)
    };
    let q = lx.cast(q, work)?;
    let z = match zp {
        Some(z) => {
            let z = spread(lx, n, z, &shape)?;
            Some(lx.cast(z, work)?)
        }
        None => None,
    };
    round_saturate(lx, q, z, n.ty.dtype).map(Some)
}

fn dequantize(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, s) = (arg(args, 0)?, arg(args, 1)?);
    let zp = args.get(2).copied().flatten();
    let shape = lx.shape(x)?;
    let s = spread(lx, n, s, &shape)?;
    let s = lx.cast(s, DType::F32)?;
    // The difference is exact in i64, then rounded once to f32.
    let diff = match zp {
        Some(z) => {
            let z = spread(lx, n, z, &shape)?;
            let z = lx.cast(z, DType::I64)?;
            let xi = lx.cast(x, DType::I64)?;
            lx.binary(BinaryFn::Sub, xi, z)?
        }
        None => x,
    };
    let d = lx.cast(diff, DType::F32)?;
    let y = lx.mul(d, s)?;
    lx.cast(y, n.ty.dtype).map(Some)
}

fn dynamic(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let r = lx.rank(x)?;
    let axes: Vec<usize> = (0..r).collect();
    // The data range extended to include 0, ignoring NaN like the reference's
    // `Float::max`/`min` fold from 0 (a NaN counts as a 0).
    let nan = lx.unary(UnaryFn::IsNaN, x)?;
    let zero = lx.scalar(DType::F32, 0.0)?;
    let xr = lx.select(nan, zero, x)?;
    let (mx, mn) = if r == 0 {
        (xr, xr)
    } else if lx.numel(x)? == 0 {
        (zero, zero)
    } else {
        (lx.reduce(ReduceFn::Max, xr, &axes, false)?, lx.reduce(ReduceFn::Min, xr, &axes, false)?)
    };
    let mx = lx.binary_scalar(BinaryFn::Max, mx, 0.0)?;
    let mn = lx.binary_scalar(BinaryFn::Min, mn, 0.0)?;
    let same = lx.binary(BinaryFn::Eq, mx, mn)?;
    let span = lx.sub(mx, mn)?;
    let span = lx.binary_scalar(BinaryFn::Div, span, 255.0)?;
    let one = lx.scalar(DType::F32, 1.0)?;
    let scale = lx.select(same, one, span)?;
    if n.output == 1 {
        return Ok(Some(scale));
    }
    // zp = round_even(clamp(0 - min / scale, 0, 255)).
    let m = lx.div(mn, scale)?;
    let z = lx.sub(zero, m)?;
    let z = lx.binary_scalar(BinaryFn::Max, z, 0.0)?;
    let z = lx.binary_scalar(BinaryFn::Min, z, 255.0)?;
    let z = lx.unary(UnaryFn::Round, z)?;
    if n.output == 2 {
        return lx.cast(z, DType::U8).map(Some);
    }
    let q = lx.div(x, scale)?;
    round_saturate(lx, q, Some(z), DType::U8).map(Some)
}
