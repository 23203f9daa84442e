//! Rules of the conv family. A conv reads its input through one *window view* (guards give
//! the zero padding, strides and dilations are view strides: im2col without a copy), so
//! every algorithm is views plus a few atoms:
//!
//! - `conv/im2col-matmul`: weights `[G, M/G, C/G·K]` (first MatMul operand) times the
//!   window view reshaped `[G, C/G·K, N·P]`; the output is a view of the product. General.
//! - `conv/pointwise-matmul`: 1x1 kernels without padding, the input itself as the columns.
//! - `conv/depthwise-reduce`: one input channel per group: window view times broadcast
//!   weights, Reduce Sum over the kernel axes.
//! - `conv/winograd-f2x3`: F(2x2, 3x3) for 3x3 stride-1 dilation-1 single-group 2-D convs.
//! - ConvTranspose as zero insertion (a guarded view) then conv with flipped weights, or as
//!   MatMul then col2im (a guarded view over zero-inserted columns and Reduce Sum);
//!   ConvInteger/QLinearConv as i32 convs; DeformConv with multilinear sampling (Gather);
//!   Col2Im as the col2im view.
//! - `conv/fold-scale-into-weights`: `Mul(conv, s)` with `s` constant per output channel
//!   scales the constant weight operand of the conv's MatMul (BatchNorm folding).

use crate::rules::err;
use crate::egraph::HlNode;
use crate::lang::Term;
use crate::lx::Lx;
use crate::rules::linalg::{promote, requantize};
use crate::rules::{Action, Rule, arg};
use egg::Id;
use ir::atom::{Atom, AtomKind, BinaryFn, Guard, ReduceFn, UnaryFn, ViewMap, row_major};
use ir::ops::conv::{ConvGeom, Window, col2im_geom, conv_geom, conv_transpose_geom, deform_geom};
use ir::{DType, Result, Tensor};

pub const RULES: &[Rule] = &[
    Rule {
        name: "conv/im2col-matmul",
        identity: "Conv(x, w) = view(W[G,M/G,C/G*K] @ window(x)[G,C/G*K,N*P]) (+ bias)",
        action: Action::Lower { ops: &["Conv"], apply: conv_im2col },
    },
    Rule {
        name: "conv/pointwise-matmul",
        identity: "Conv 1x1 without padding = view(W[G,M/G,C/G] @ x[G,C/G,N*P]) (+ bias)",
        action: Action::Lower { ops: &["Conv"], apply: conv_pointwise },
    },
    Rule {
        name: "conv/depthwise-reduce",
        identity: "Conv with C/G = 1 = ReduceSum_k(window(x) * broadcast(w)) (+ bias)",
        action: Action::Lower { ops: &["Conv"], apply: conv_depthwise },
    },
    Rule {
        name: "conv/winograd-f2x3",
        identity: "Conv 3x3 s1 d1 g1 2-D = crop(A^T [(G g G^T) (.) (B^T d B)] A) over 4x4 tiles d (+ bias)",
        action: Action::Lower { ops: &["Conv"], apply: conv_winograd },
    },
    Rule {
        name: "conv/transpose-zero-insert",
        identity: "ConvTranspose(x, w) = Conv(zero_insert(x, s), flip(w)^T, pad = (K-1)d - p) (+ bias)",
        action: Action::Lower { ops: &["ConvTranspose"], apply: conv_transpose_zero_insert },
    },
    Rule {
        name: "conv/transpose-col2im",
        identity: "ConvTranspose(x, w) = col2im(W^T @ x) (+ bias)",
        action: Action::Lower { ops: &["ConvTranspose"], apply: conv_transpose_col2im },
    },
    Rule {
        name: "conv/integer",
        identity: "ConvInteger(x, w, zx, zw) = Conv_i32(i32(x) - zx, i32(w) - zw)",
        action: Action::Lower { ops: &["ConvInteger"], apply: conv_integer },
    },
    Rule {
        name: "conv/qlinear",
        identity: "QLinearConv = saturate(round_even((ConvInteger + b) * (sx*sw/sy) + zy))",
        action: Action::Lower { ops: &["QLinearConv"], apply: qlinear_conv },
    },
    Rule {
        name: "conv/deform",
        identity: "DeformConv = W @ (mask * multilinear samples of x at window + offset) (+ bias)",
        action: Action::Lower { ops: &["DeformConv"], apply: deform_conv },
    },
    Rule {
        name: "conv/col2im",
        identity: "Col2Im(x) = ReduceSum_k(view of zero_insert(x) at (p + pad - k*d))",
        action: Action::Lower { ops: &["Col2Im"], apply: col2im },
    },
    Rule {
        name: "conv/fold-scale-into-weights",
        identity: "view(W @ X) * s = view((W * s_row) @ X) for s constant per output channel",
        action: Action::Algebra { atoms: &[AtomKind::Binary], apply: fold_scale },
    },
];


fn prod(v: &[usize]) -> usize {
    v.iter().product()
}

// ---- geometry --------------------------------------------------------------------------

// ---- views -----------------------------------------------------------------------------

/// The axes of a window view of a conv input.
#[derive(Clone, Copy)]
enum Ax {
    /// Batch.
    N,
    /// Group.
    G,
    /// Channel within the group.
    Cg,
    /// A broadcast axis (stride 0) of this extent.
    Rep(usize),
    /// Kernel tap along spatial dim d.
    K(usize),
    /// Window position along spatial dim d.
    O(usize),
}

/// The window view of `x` (N x C x image) with the given axes: element
/// `x[n, g*C/G + c, o*stride + k*dilation - pad]`, zero outside the image.
fn window(lx: &mut Lx, x: Id, w: &ConvGeom, axes: &[Ax]) -> Result<Id> {
    let xs = lx.shape(x)?;
    let st = row_major(&xs);
    let nsp = w.nsp();
    let cg = w.cg();
    let r = axes.len();
    let mut shape = Vec::with_capacity(r);
    let mut strides = Vec::with_capacity(r);
    let mut gcoef = vec![vec![0i64; r]; nsp];
    for (i, a) in axes.iter().enumerate() {
        let (n, s) = match *a {
            Ax::N => (w.n, st[0]),
            Ax::G => (w.group, cg as i64 * st[1]),
            Ax::Cg => (cg, st[1]),
            Ax::Rep(n) => (n, 0),
            Ax::K(d) => {
                gcoef[d][i] = w.window.dilations[d] as i64;
                (w.window.kernel[d], w.window.dilations[d] as i64 * st[2 + d])
            }
            Ax::O(d) => {
                gcoef[d][i] = w.window.strides[d] as i64;
                (w.window.grid[d], w.window.strides[d] as i64 * st[2 + d])
            }
        };
        shape.push(n);
        strides.push(if n == 1 { 0 } else { s });
    }
    let mut offset = 0i64;
    let mut guards = Vec::new();
    for d in 0..nsp {
        offset -= w.window.pad_begin[d] * st[2 + d];
        let lo = -w.window.pad_begin[d];
        let hi = lo
            + (w.window.kernel[d] as i64 - 1).max(0) * w.window.dilations[d] as i64
            + (w.window.grid[d] as i64 - 1).max(0) * w.window.strides[d] as i64;
        if lo < 0 || hi >= w.window.image[d] as i64 {
            guards.push(Guard { coefs: gcoef[d].clone(), offset: lo, bound: w.window.image[d] as i64 });
        }
    }
    if shape.contains(&0) {
        let d = lx.dtype(x)?;
        return lx.full(d, &shape, 0.0);
    }
    lx.view(x, ViewMap { shape, strides, offset, guards, pad: 0.0 })
}

/// The same view with adjacent axes merged where the flat element order allows it
/// (`stride[a] = stride[a+1] * n[a+1]`, likewise for every guard, or an extent-1 axis), so
/// that a reshape of it composes into one view more often.
fn merge_contiguous(v: ViewMap) -> ViewMap {
    if v.shape.contains(&0) {
        return v;
    }
    // Built back to front: (extent, stride, guard coefs).
    let mut axes: Vec<(usize, i64, Vec<i64>)> = Vec::new();
    for a in (0..v.shape.len()).rev() {
        let (n, st) = (v.shape[a], v.strides[a]);
        let coefs: Vec<i64> = v.guards.iter().map(|g| g.coefs[a]).collect();
        if let Some(last) = axes.last_mut() {
            let (m, sm) = (last.0 as i64, last.1);
            let fits = st == sm * m && coefs.iter().zip(&last.2).all(|(&c, &cm)| c == cm * m);
            if n == 1 {
                continue;
            }
            if last.0 == 1 {
                *last = (n, st, coefs);
                continue;
            }
            if fits {
                last.0 *= n;
                continue;
            }
        }
        axes.push((n, st, coefs));
    }
    axes.reverse();
    if axes.is_empty() {
        axes.push((1, 0, vec![0; v.guards.len()]));
    }
    let guards = v
        .guards
        .iter()
        .enumerate()
        .map(|(i, g)| Guard { coefs: axes.iter().map(|a| a.2[i]).collect(), offset: g.offset, bound: g.bound })
        .collect();
    ViewMap { shape: axes.iter().map(|a| a.0).collect(), strides: axes.iter().map(|a| a.1).collect(), offset: v.offset, guards, pad: v.pad }
}

/// A window view reshaped to `to` (its axes merged first where they are contiguous).
fn window_as(lx: &mut Lx, x: Id, w: &ConvGeom, axes: &[Ax], to: &[usize]) -> Result<Id> {
    let v = window(lx, x, w, axes)?;
    let merged = match lx.atoms_in(v).into_iter().find_map(|(a, ch)| match a {
        Atom::View(m) if ch[0] == x => Some(merge_contiguous(m)),
        _ => None,
    }) {
        Some(m) => lx.view(x, m)?,
        None => v,
    };
    lx.reshape(merged, to)
}

/// `x` (A.. x G1..Gk, the last k axes spatial) with `s_d - 1` zeros inserted after every
/// element of spatial axis d: `[A.., G1*s1, ..]`, `x[.., g]` at `g*s`.
fn zero_insert(lx: &mut Lx, x: Id, steps: &[usize]) -> Result<Id> {
    if steps.iter().all(|&s| s == 1) {
        return Ok(x);
    }
    let xs = lx.shape(x)?;
    let st = row_major(&xs);
    let lead = xs.len() - steps.len();
    let mut shape: Vec<usize> = xs[..lead].to_vec();
    let mut strides: Vec<i64> = st[..lead].to_vec();
    let mut guard_axes = Vec::new();
    for (d, &s) in steps.iter().enumerate() {
        shape.push(xs[lead + d]);
        strides.push(st[lead + d]);
        shape.push(s);
        strides.push(0);
        if s > 1 {
            guard_axes.push(shape.len() - 1);
        }
    }
    let r = shape.len();
    let guards = guard_axes
        .into_iter()
        .map(|a| {
            let mut coefs = vec![0i64; r];
            coefs[a] = 1;
            Guard { coefs, offset: 0, bound: 1 }
        })
        .collect();
    let out: Vec<usize> = xs[..lead].iter().copied().chain(steps.iter().enumerate().map(|(d, &s)| xs[lead + d] * s)).collect();
    if shape.contains(&0) {
        let d = lx.dtype(x)?;
        return lx.full(d, &out, 0.0);
    }
    let v = lx.view(x, ViewMap { shape, strides, offset: 0, guards, pad: 0.0 })?;
    lx.reshape(v, &out)
}

/// The product `mm` ([G, M/G, N*P]) as the conv output [N, M, grid..].
fn output_view(lx: &mut Lx, mm: Id, w: &ConvGeom) -> Result<Id> {
    let p = w.window.grid_size();
    let mut strides = vec![p as i64, (w.n * p) as i64];
    strides.extend(row_major(&w.window.grid));
    let shape = w.out_shape();
    if shape.contains(&0) {
        let d = lx.dtype(mm)?;
        return lx.full(d, &shape, 0.0);
    }
    lx.view(mm, ViewMap { shape, strides, offset: 0, guards: vec![], pad: 0.0 })
}

/// `y + bias` with the bias ([M]) along axis 1.
fn add_bias(lx: &mut Lx, y: Id, b: Option<Id>) -> Result<Id> {
    let Some(b) = b else { return Ok(y) };
    let r = lx.rank(y)?;
    let m = lx.numel(b)?;
    let mut s = vec![1usize; r];
    s[1] = m;
    let b = lx.reshape(b, &s)?;
    lx.add(y, b)
}

/// The im2col conv of `x` [N, C, image..] with weights `wm` [G, M/G, C/G * K] (no bias):
/// one MatMul with the weights first.
fn im2col_conv(lx: &mut Lx, x: Id, wm: Id, w: &ConvGeom) -> Result<Id> {
    let mut axes = vec![Ax::G, Ax::Cg];
    axes.extend((0..w.nsp()).map(Ax::K));
    axes.push(Ax::N);
    axes.extend((0..w.nsp()).map(Ax::O));
    let cols = window_as(lx, x, w, &axes, &[w.group, w.cg() * w.window.kernel_size(), w.n * w.window.grid_size()])?;
    let mm = lx.atom(Atom::MatMul, &[wm, cols])?;
    output_view(lx, mm, w)
}

/// Conv inputs in the compute dtype, the geometry and the bias.
struct ConvArgs {
    x: Id,
    w: Id,
    b: Option<Id>,
    win: ConvGeom,
    out: DType,
}

fn conv_args(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<ConvArgs> {
    let x = promote(lx, arg(args, 0)?)?;
    let w = promote(lx, arg(args, 1)?)?;
    let b = match args.get(2).copied().flatten() {
        Some(b) => Some(promote(lx, b)?),
        None => None,
    };
    let win = conv_geom(&n.op.attrs, &lx.shape(x)?, &lx.shape(w)?, "Conv")?;
    Ok(ConvArgs { x, w, b, win, out: n.ty.dtype })
}

fn finish(lx: &mut Lx, y: Id, a: &ConvArgs) -> Result<Option<Id>> {
    let y = add_bias(lx, y, a.b)?;
    lx.cast(y, a.out).map(Some)
}

// ---- Conv ------------------------------------------------------------------------------

fn conv_im2col(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let a = conv_args(lx, n, args)?;
    let win = &a.win;
    let wm = lx.reshape(a.w, &[win.group, win.mg(), win.cg() * win.window.kernel_size()])?;
    let y = im2col_conv(lx, a.x, wm, win)?;
    finish(lx, y, &a)
}

fn conv_pointwise(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let a = conv_args(lx, n, args)?;
    let win = &a.win;
    if win.window.kernel.iter().any(|&k| k != 1) || win.window.pad_begin.iter().any(|&p| p != 0) || win.window.strides.iter().any(|&s| s != 1) {
        return Ok(None);
    }
    let wm = lx.reshape(a.w, &[win.group, win.mg(), win.cg()])?;
    let mut axes = vec![Ax::G, Ax::Cg, Ax::N];
    axes.extend((0..win.nsp()).map(Ax::O));
    let cols = window_as(lx, a.x, win, &axes, &[win.group, win.cg(), win.n * win.window.grid_size()])?;
    let mm = lx.atom(Atom::MatMul, &[wm, cols])?;
    let y = output_view(lx, mm, win)?;
    finish(lx, y, &a)
}

fn conv_depthwise(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let a = conv_args(lx, n, args)?;
    let win = &a.win;
    if win.cg() != 1 {
        return Ok(None);
    }
    let nsp = win.nsp();
    let mg = win.mg();
    let mut axes = vec![Ax::N, Ax::G, Ax::Rep(mg)];
    axes.extend((0..nsp).map(Ax::K));
    axes.extend((0..nsp).map(Ax::O));
    let v = window(lx, a.x, win, &axes)?;
    let mut ws = vec![1, win.group, mg];
    ws.extend(&win.window.kernel);
    ws.extend(std::iter::repeat_n(1, nsp));
    let wv = lx.reshape(a.w, &ws)?;
    let prod_v = lx.mul(v, wv)?;
    let axes: Vec<usize> = (3..3 + nsp).collect();
    let s = lx.reduce(ReduceFn::Sum, prod_v, &axes, false)?;
    let y = lx.reshape(s, &win.out_shape())?;
    finish(lx, y, &a)
}

/// Winograd F(2x2, 3x3) matrices.
const BT: [[f64; 4]; 4] = [[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]];
const GM: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

/// The Kronecker product `m ⊗ m` as a row-major `[r*r, c*c]` matrix: entry
/// `((i,j), (a,b)) = m[i][a] * m[j][b]`, so `kron @ vec(d) = vec(m d m^T)`.
fn kron<const C: usize>(m: &[[f64; C]]) -> (Vec<usize>, Vec<f64>) {
    let r = m.len();
    let mut v = Vec::with_capacity(r * r * C * C);
    for i in 0..r {
        for j in 0..r {
            for a in 0..C {
                for b in 0..C {
                    v.push(m[i][a] * m[j][b]);
                }
            }
        }
    }
    (vec![r * r, C * C], v)
}

fn konst_matrix(lx: &mut Lx, (shape, v): (Vec<usize>, Vec<f64>), d: DType) -> Result<Id> {
    Ok(lx.konst(Tensor::from_vec(shape, v)?.cast(d)))
}

fn conv_winograd(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let a = conv_args(lx, n, args)?;
    let win = &a.win;
    if win.nsp() != 2 || win.window.kernel != [3, 3] || win.window.strides != [1, 1] || win.window.dilations != [1, 1] || win.group != 1 {
        return Ok(None);
    }
    let d = lx.dtype(a.x)?;
    let (nn, c, m) = (win.n, win.c_in, win.c_out);
    let (oh, ow) = (win.window.grid[0], win.window.grid[1]);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let t = nn * th * tw;
    if t == 0 || c == 0 || m == 0 {
        return Ok(None);
    }
    // Input tiles d[i, j, c, n, th, tw] = x[n, c, 2th + i - pad, 2tw + j - pad]: a window of
    // 4x4 taps at stride 2.
    let window = Window { kernel: vec![4, 4], strides: vec![2, 2], grid: vec![th, tw], ..win.window.clone() };
    let tiles = ConvGeom { window, ..win.clone() };
    let v = window_as(lx, a.x, &tiles, &[Ax::K(0), Ax::K(1), Ax::Cg, Ax::N, Ax::O(0), Ax::O(1)], &[16, c * t])?;
    let kb = konst_matrix(lx, kron(&BT), d)?;
    let vt = lx.atom(Atom::MatMul, &[kb, v])?;
    let vt = lx.reshape(vt, &[16, c, t])?;
    // Weights U[(i,j), m, c] = (G g G^T)[i, j]: folded here when the weights are constant.
    let u = match lx.value(a.w) {
        Some(wt) => {
            let g = wt.to_f64_vec();
            let mut u = vec![0.0; 16 * m * c];
            for mc in 0..m * c {
                let gg = &g[mc * 9..mc * 9 + 9];
                for i in 0..4 {
                    for j in 0..4 {
                        let mut s = 0.0;
                        for p in 0..3 {
                            for q in 0..3 {
                                s += GM[i][p] * GM[j][q] * gg[p * 3 + q];
                            }
                        }
                        u[(i * 4 + j) * m * c + mc] = s;
                    }
                }
            }
            lx.konst(Tensor::from_vec(vec![16, m, c], u)?.cast(d))
        }
        None => {
            let kg = konst_matrix(lx, kron(&GM), d)?;
            let gt = lx.transpose(a.w, &[2, 3, 0, 1])?;
            let gt = lx.reshape(gt, &[9, m * c])?;
            let u = lx.atom(Atom::MatMul, &[kg, gt])?;
            lx.reshape(u, &[16, m, c])?
        }
    };
    // The elementwise products summed over channels: one batched MatMul.
    let prod_mm = lx.atom(Atom::MatMul, &[u, vt])?;
    let prod_mm = lx.reshape(prod_mm, &[16, m * t])?;
    let ka = konst_matrix(lx, kron(&AT), d)?;
    let y = lx.atom(Atom::MatMul, &[ka, prod_mm])?;
    // y[(a, b), m, n, th, tw] -> out[n, m, 2th + a, 2tw + b], cropped.
    let tt = (th * tw) as i64;
    let y = lx.view(
        y,
        ViewMap {
            shape: vec![nn, m, th, 2, tw, 2],
            strides: vec![tt, (nn as i64) * tt, tw as i64, 2 * (m * t) as i64, 1, (m * t) as i64],
            offset: 0,
            guards: vec![],
            pad: 0.0,
        },
    )?;
    let y = lx.reshape(y, &[nn, m, 2 * th, 2 * tw])?;
    let y = lx.strided(y, &[(0, nn, 1), (0, m, 1), (0, oh, 1), (0, ow, 1)])?;
    finish(lx, y, &a)
}

// ---- ConvTranspose ---------------------------------------------------------------------

struct TransposeArgs {
    x: Id,
    w: Id,
    b: Option<Id>,
    win: ConvGeom,
    out: DType,
}

fn transpose_args(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<TransposeArgs> {
    let x = promote(lx, arg(args, 0)?)?;
    let w = promote(lx, arg(args, 1)?)?;
    let b = match args.get(2).copied().flatten() {
        Some(b) => Some(promote(lx, b)?),
        None => None,
    };
    let win = conv_transpose_geom(&n.op.attrs, &lx.shape(x)?, &lx.shape(w)?)?;
    Ok(TransposeArgs { x, w, b, win, out: n.ty.dtype })
}

fn conv_transpose_zero_insert(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let a = transpose_args(lx, n, args)?;
    let t = &a.win;
    let nsp = t.nsp();
    let (g, cg, mg) = (t.group, t.cg(), t.mg());
    let taps = t.window.kernel_size();
    // The input with zeros between elements, read by a stride-1 conv whose window starts
    // (K-1)*dilation - pad before it.
    let xz = zero_insert(lx, a.x, &t.window.strides)?;
    let zimage: Vec<usize> = t.window.grid.iter().zip(&t.window.strides).map(|(&i, &s)| i * s).collect();
    let window = Window {
        image: zimage,
        grid: t.window.image.clone(),
        kernel: t.window.kernel.clone(),
        strides: vec![1; nsp],
        dilations: t.window.dilations.clone(),
        pad_begin: (0..nsp).map(|d| (t.window.kernel[d] as i64 - 1) * t.window.dilations[d] as i64 - t.window.pad_begin[d]).collect(),
    };
    let conv = ConvGeom { window, ..t.clone() };
    // Weights [G*cg, mg, K..] as [G, mg, cg, K..] with the kernel flipped.
    let kst = row_major(&t.window.kernel);
    let mut shape = vec![g, mg, cg];
    shape.extend(&t.window.kernel);
    let mut strides = vec![(cg * mg * taps) as i64, taps as i64, (mg * taps) as i64];
    let mut offset = 0i64;
    for (&k, &st) in t.window.kernel.iter().zip(&kst) {
        strides.push(-st);
        offset += (k as i64 - 1) * st;
    }
    let wf = if shape.contains(&0) {
        let d = lx.dtype(a.w)?;
        lx.full(d, &shape, 0.0)?
    } else {
        lx.view(a.w, ViewMap { shape, strides, offset, guards: vec![], pad: 0.0 })?
    };
    let wm = lx.reshape(wf, &[g, mg, cg * taps])?;
    let y = im2col_conv(lx, xz, wm, &conv)?;
    let y = add_bias(lx, y, a.b)?;
    lx.cast(y, a.out).map(Some)
}

/// Col2im of `cols` [N, C, K.., grid..] into [N, C, image..]: every image element sums
/// the column entries whose window position and tap land on it (a guarded view of the
/// zero-inserted columns, then Reduce Sum over the taps).
fn col2im_sum(lx: &mut Lx, cols: Id, n: usize, w: &Window, channels: usize) -> Result<Id> {
    let nsp = w.grid.len();
    let xz = zero_insert(lx, cols, &w.strides)?;
    let zs = lx.shape(xz)?;
    let st = row_major(&zs);
    // View [N, C, K.., image..]: element (k, p) reads xz at q = p + pad - k*dilation.
    let mut shape = vec![n, channels];
    shape.extend(&w.kernel);
    shape.extend(&w.image);
    let r = shape.len();
    let mut strides = vec![st[0], st[1]];
    let mut offset = 0i64;
    let mut guards = Vec::new();
    let mut kstr = Vec::new();
    let mut pstr = Vec::new();
    for d in 0..nsp {
        let q = st[2 + nsp + d];
        kstr.push(st[2 + d] - w.dilations[d] as i64 * q);
        pstr.push(q);
        offset += w.pad_begin[d] * q;
        let mut coefs = vec![0i64; r];
        coefs[2 + d] = -(w.dilations[d] as i64);
        coefs[2 + nsp + d] = 1;
        guards.push(Guard { coefs, offset: w.pad_begin[d], bound: zs[2 + nsp + d] as i64 });
    }
    strides.extend(kstr);
    strides.extend(pstr);
    let out: Vec<usize> = [n, channels].into_iter().chain(w.image.iter().copied()).collect();
    let d = lx.dtype(cols)?;
    if shape.contains(&0) || zs.contains(&0) {
        return lx.full(d, &out, 0.0);
    }
    let strides: Vec<i64> = strides.iter().zip(&shape).map(|(&s, &n)| if n == 1 { 0 } else { s }).collect();
    let v = lx.view(xz, ViewMap { shape, strides, offset, guards, pad: 0.0 })?;
    let axes: Vec<usize> = (2..2 + nsp).collect();
    let s = lx.reduce(ReduceFn::Sum, v, &axes, false)?;
    lx.reshape(s, &out)
}

fn conv_transpose_col2im(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let a = transpose_args(lx, n, args)?;
    let t = &a.win;
    let (g, cg, mg) = (t.group, t.cg(), t.mg());
    let (taps, p) = (t.window.kernel_size(), t.window.grid_size());
    if t.n == 0 || g * cg * mg * taps * p == 0 {
        return Ok(None);
    }
    // cols[n, g, (o, k), p] = sum_c w[g*cg + c, o, k] x[n, g*cg + c, p].
    let wt = lx.reshape(a.w, &[g, cg, mg * taps])?;
    let wt = lx.transpose(wt, &[0, 2, 1])?;
    let wt = lx.broadcast_to(wt, &[t.n, g, mg * taps, cg])?;
    let xm = lx.reshape(a.x, &[t.n, g, cg, p])?;
    let cols = lx.atom(Atom::MatMul, &[wt, xm])?;
    let mut cshape = vec![t.n, t.c_out];
    cshape.extend(&t.window.kernel);
    cshape.extend(&t.window.grid);
    let cols = lx.reshape(cols, &cshape)?;
    let y = col2im_sum(lx, cols, t.n, &t.window, t.c_out)?;
    let y = add_bias(lx, y, a.b)?;
    lx.cast(y, a.out).map(Some)
}

// ---- integer convs ---------------------------------------------------------------------

/// `i32(x) - zp` for a per-tensor zero point.
fn minus_scalar_zp(lx: &mut Lx, x: Id, zp: Option<Id>) -> Result<Id> {
    let x32 = lx.cast(x, DType::I32)?;
    let Some(z) = zp else { return Ok(x32) };
    if lx.numel(z)? != 1 {
        return Err(err("x zero point must be a single value"));
    }
    let z = lx.cast(z, DType::I32)?;
    let z = lx.reshape(z, &[])?;
    lx.sub(x32, z)
}

/// `i32(w) - zp` for a zero point per tensor or per output channel (dim 0).
fn minus_channel_zp(lx: &mut Lx, w: Id, zp: Option<Id>) -> Result<Id> {
    let w32 = lx.cast(w, DType::I32)?;
    let Some(z) = zp else { return Ok(w32) };
    let ws = lx.shape(w)?;
    let zn = lx.numel(z)?;
    let mut s = vec![1usize; ws.len()];
    if zn != 1 {
        if lx.rank(z)? != 1 || zn != ws[0] {
            return Err(err("w zero point must be a single value or one per output channel"));
        }
        s[0] = zn;
    }
    let z = lx.cast(z, DType::I32)?;
    let z = lx.reshape(z, &s)?;
    lx.sub(w32, z)
}

/// The i32 conv of zero-point-shifted operands, [N, M, grid..].
fn integer_conv(lx: &mut Lx, n: &HlNode, x: Id, w: Id, zx: Option<Id>, zw: Option<Id>) -> Result<(Id, ConvGeom)> {
    let win = conv_geom(&n.op.attrs, &lx.shape(x)?, &lx.shape(w)?, n.op.kind.name())?;
    let x = minus_scalar_zp(lx, x, zx)?;
    let w = minus_channel_zp(lx, w, zw)?;
    let wm = lx.reshape(w, &[win.group, win.mg(), win.cg() * win.window.kernel_size()])?;
    let y = im2col_conv(lx, x, wm, &win)?;
    Ok((y, win))
}

fn conv_integer(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, w) = (arg(args, 0)?, arg(args, 1)?);
    let zx = args.get(2).copied().flatten();
    let zw = args.get(3).copied().flatten();
    integer_conv(lx, n, x, w, zx, zw).map(|(y, _)| Some(y))
}

fn qlinear_conv(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let (x, sx, w, sw, sy, zy) = (arg(args, 0)?, arg(args, 1)?, arg(args, 3)?, arg(args, 4)?, arg(args, 6)?, arg(args, 7)?);
    let zx = args.get(2).copied().flatten();
    let zw = args.get(5).copied().flatten();
    let (acc, win) = integer_conv(lx, n, x, w, zx, zw)?;
    let acc = add_bias(lx, acc, args.get(8).copied().flatten())?;
    for (v, what) in [(sx, "x_scale"), (sy, "y_scale"), (zy, "y_zero_point")] {
        if lx.numel(v)? != 1 {
            return Err(err(format!("QLinearConv {what} must be a single value")));
        }
    }
    let r = lx.rank(acc)?;
    let swn = lx.numel(sw)?;
    if swn != 1 && swn != win.c_out {
        return Err(err("QLinearConv w_scale must be one value or one per output channel"));
    }
    let mut s = vec![1usize; r];
    s[1] = swn;
    let sx = lx.cast(sx, DType::F32)?;
    let sx = lx.reshape(sx, &[])?;
    let sw = lx.cast(sw, DType::F32)?;
    let sw = lx.reshape(sw, &s)?;
    let sy = lx.cast(sy, DType::F32)?;
    let sy = lx.reshape(sy, &[])?;
    let p = lx.mul(sx, sw)?;
    let mult = lx.div(p, sy)?;
    let zy = lx.reshape(zy, &[])?;
    requantize(lx, acc, mult, zy, n.ty.dtype).map(Some)
}

// ---- DeformConv ------------------------------------------------------------------------

fn deform_conv(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = promote(lx, arg(args, 0)?)?;
    let w = promote(lx, arg(args, 1)?)?;
    let off = promote(lx, arg(args, 2)?)?;
    let b = match args.get(3).copied().flatten() {
        Some(b) => Some(promote(lx, b)?),
        None => None,
    };
    let mask = match args.get(4).copied().flatten() {
        Some(m) => Some(promote(lx, m)?),
        None => None,
    };
    let d = lx.dtype(x)?;
    let mask_shape = match mask {
        Some(m) => Some(lx.shape(m)?),
        None => None,
    };
    let geom = deform_geom(&n.op.attrs, &lx.shape(x)?, &lx.shape(w)?, &lx.shape(off)?, mask_shape.as_deref())?;
    let (win, og) = (geom.conv, geom.offset_group);
    let nsp = win.nsp();
    let (taps, p, isz) = (win.window.kernel_size(), win.window.grid_size(), win.window.image_size());
    let (nn, c, cpg) = (win.n, win.c_in, win.c_in / og);
    if nn * c * taps * p * isz == 0 {
        return Ok(None);
    }
    let off = lx.reshape(off, &[nn, og, taps, nsp, p])?;
    let kst = row_major(&win.window.kernel);
    let gst = row_major(&win.window.grid);
    let ist = row_major(&win.window.image);
    // Per spatial dim: floor and fraction of the sample position.
    let mut floors = Vec::new();
    let mut fracs = Vec::new();
    for dd in 0..nsp {
        let mut base = Vec::with_capacity(taps * p);
        for tap in 0..taps {
            let k = (tap / kst[dd] as usize) % win.window.kernel[dd];
            for q in 0..p {
                let gpos = (q / gst[dd] as usize) % win.window.grid[dd];
                let idx = gpos * win.window.strides[dd] + k * win.window.dilations[dd];
                base.push(idx as f64 - win.window.pad_begin[dd] as f64);
            }
        }
        let base = lx.konst(Tensor::from_vec(vec![1, 1, taps, p], base)?.cast(d));
        let od = lx.strided(off, &[(0, nn, 1), (0, og, 1), (0, taps, 1), (dd as i64, 1, 1), (0, p, 1)])?;
        let od = lx.reshape(od, &[nn, og, taps, p])?;
        let pos = lx.add(base, od)?;
        let fl = lx.unary(UnaryFn::Floor, pos)?;
        let fr = lx.sub(pos, fl)?;
        floors.push(fl);
        fracs.push(fr);
    }
    let data = lx.reshape(x, &[nn, og, cpg, isz])?;
    let mut total: Option<Id> = None;
    for corner in 0..(1usize << nsp) {
        let mut weight: Option<Id> = None;
        let mut valid: Option<Id> = None;
        let mut index: Option<Id> = None;
        for dd in 0..nsp {
            let upper = (corner >> dd) & 1 == 1;
            let coord = if upper { lx.binary_scalar(BinaryFn::Add, floors[dd], 1.0)? } else { floors[dd] };
            let lo = lx.binary_scalar(BinaryFn::Ge, coord, 0.0)?;
            let hi = lx.binary_scalar(BinaryFn::Le, coord, win.window.image[dd] as f64 - 1.0)?;
            let ok = lx.binary(BinaryFn::And, lo, hi)?;
            let wd = if upper {
                fracs[dd]
            } else {
                let one = lx.scalar(d, 1.0)?;
                lx.sub(one, fracs[dd])?
            };
            weight = Some(match weight {
                None => wd,
                Some(w0) => lx.mul(w0, wd)?,
            });
            valid = Some(match valid {
                None => ok,
                Some(v) => lx.binary(BinaryFn::And, v, ok)?,
            });
            let cl = lx.binary_scalar(BinaryFn::Max, coord, 0.0)?;
            let cl = lx.binary_scalar(BinaryFn::Min, cl, win.window.image[dd] as f64 - 1.0)?;
            let ci = lx.cast(cl, DType::I64)?;
            let ci = if ist[dd] == 1 { ci } else { lx.binary_scalar(BinaryFn::Mul, ci, ist[dd] as f64)? };
            index = Some(match index {
                None => ci,
                Some(i) => lx.add(i, ci)?,
            });
        }
        let (Some(weight), Some(valid), Some(index)) = (weight, valid, index) else {
            return Err(err("DeformConv has no spatial dims"));
        };
        let zero = lx.scalar(d, 0.0)?;
        let weight = lx.select(valid, weight, zero)?;
        let index = lx.reshape(index, &[nn, og, 1, taps * p])?;
        let index = lx.broadcast_to(index, &[nn, og, cpg, taps * p])?;
        let sample = lx.atom(Atom::Gather { axis: 3 }, &[data, index])?;
        let weight = lx.reshape(weight, &[nn, og, 1, taps * p])?;
        let term = lx.mul(weight, sample)?;
        total = Some(match total {
            None => term,
            Some(t) => lx.add(t, term)?,
        });
    }
    let mut col = total.ok_or_else(|| err("DeformConv has no spatial dims"))?;
    if let Some(m) = mask {
        let m = lx.reshape(m, &[nn, og, 1, taps * p])?;
        col = lx.mul(col, m)?;
    }
    // col [N, C, taps, P] per group as [N, G, cg*taps, P]; weights [G, mg, cg*taps].
    let (g, cg, mg) = (win.group, win.cg(), win.mg());
    let col = lx.reshape(col, &[nn, g, cg * taps, p])?;
    let wm = lx.reshape(w, &[1, g, mg, cg * taps])?;
    let wm = lx.broadcast_to(wm, &[nn, g, mg, cg * taps])?;
    let y = lx.atom(Atom::MatMul, &[wm, col])?;
    let y = lx.reshape(y, &win.out_shape())?;
    let y = add_bias(lx, y, b)?;
    lx.cast(y, n.ty.dtype).map(Some)
}

// ---- Col2Im ----------------------------------------------------------------------------

fn col2im(lx: &mut Lx, n: &HlNode, args: &[Option<Id>]) -> Result<Option<Id>> {
    let x = arg(args, 0)?;
    let image = lx.const_i64s(arg(args, 1)?, "Col2Im image_shape")?;
    let block = lx.const_i64s(arg(args, 2)?, "Col2Im block_shape")?;
    let g = col2im_geom(&n.op.attrs, &lx.shape(x)?, &image, &block)?;
    let mut cshape = vec![g.n, g.channels];
    cshape.extend(&g.window.kernel);
    cshape.extend(&g.window.grid);
    let cols = lx.reshape(x, &cshape)?;
    col2im_sum(lx, cols, g.n, &g.window, g.channels).map(Some)
}

// ---- BatchNorm folding ----------------------------------------------------------------

/// The values of `s` per index of axis 1 when `s` (of a rank >= 2 float shape) is a
/// constant, or a broadcast view of one, that varies along axis 1 only.
fn channel_values(lx: &Lx, s: Id) -> Option<Vec<f64>> {
    let shape = lx.shape(s).ok()?;
    if shape.len() < 2 || !lx.dtype(s).ok()?.is_float() {
        return None;
    }
    let m = shape[1];
    if let Some(t) = lx.value(s) {
        if t.numel() > 1 << 16 {
            return None;
        }
        let inner: usize = prod(&shape[2..]);
        let v = t.to_f64_vec();
        let mut out = vec![f64::NAN; m];
        let mut seen = vec![false; m];
        for (i, &x) in v.iter().enumerate() {
            let c = (i / inner.max(1)) % m;
            if !seen[c] {
                out[c] = x;
                seen[c] = true;
            } else if out[c].to_bits() != x.to_bits() {
                return None;
            }
        }
        return seen.iter().all(|&b| b).then_some(out);
    }
    for (atom, ch) in lx.atoms_in(s) {
        let Atom::View(v) = atom else { continue };
        let Some(t) = lx.value(ch[0]) else { continue };
        if !v.guards.is_empty() || v.shape.iter().zip(&v.strides).enumerate().any(|(d, (&n, &st))| d != 1 && n > 1 && st != 0) {
            continue;
        }
        let vals = t.to_f64_vec();
        let out: Option<Vec<f64>> =
            (0..m as i64).map(|c| usize::try_from(v.offset + v.strides[1] * c).ok().and_then(|i| vals.get(i).copied())).collect();
        if out.is_some() {
            return out;
        }
    }
    None
}

/// `view(W @ X) * s` as `view(W' @ X)` when `y` (class) holds such a view with a constant
/// `W` and the view maps each output channel to its own rows of the product.
fn fold_view(lx: &mut Lx, y: Id, s: &[f64]) -> Result<Option<Id>> {
    // Candidates: views of a product, and the class itself as the identity view (a view
    // that was the identity vanished).
    let mut cands: Vec<(ViewMap, Id)> =
        lx.atoms_in(y).into_iter().filter_map(|(a, ch)| if let Atom::View(v) = a { Some((v, ch[0])) } else { None }).collect();
    cands.push((ViewMap::identity(&lx.shape(y)?), y));
    for (v, src) in cands {
        if !v.guards.is_empty() || v.shape.len() < 2 || v.shape.contains(&0) || v.shape[1] != s.len() {
            continue;
        }
        for (mm_atom, mch) in lx.atoms_in(src) {
            if mm_atom != Atom::MatMul {
                continue;
            }
            let Some(wt) = lx.value(mch[0]) else { continue };
            let Some(&cn) = lx.shape(src)?.last() else { continue };
            let ws = wt.shape().to_vec();
            if !wt.dtype().is_float() || ws.len() < 2 || cn == 0 {
                continue;
            }
            let cn = cn as i64;
            // flat = q*cn + r0 + s1*i1 + (others): rows depend on i1 only when the others
            // stay within one row.
            let s1 = v.strides[1];
            if s1 % cn != 0 || (s1 == 0 && s.len() > 1) {
                continue;
            }
            let (q, r0) = (v.offset.div_euclid(cn), v.offset.rem_euclid(cn));
            let (mut lo, mut hi) = (r0, r0);
            for (d, (&n, &st)) in v.shape.iter().zip(&v.strides).enumerate() {
                if d == 1 {
                    continue;
                }
                let span = st * (n as i64 - 1);
                if span < 0 {
                    lo += span;
                } else {
                    hi += span;
                }
            }
            if lo < 0 || hi >= cn {
                continue;
            }
            let k = ws[ws.len() - 1];
            let rows = (wt.numel() / k.max(1)) as i64;
            let mut vals = wt.to_f64_vec();
            let mut ok = true;
            for (c, &sc) in s.iter().enumerate() {
                let row = q + (s1 / cn) * c as i64;
                if row < 0 || row >= rows {
                    ok = false;
                    break;
                }
                let row = row as usize;
                for e in &mut vals[row * k..(row + 1) * k] {
                    *e *= sc;
                }
            }
            if !ok {
                continue;
            }
            // Round each product once, as an f32 (or the weight dtype) Mul would.
            let scaled = Tensor::from_fn_f64(DType::F64, ws.clone(), |i| vals[i])?.cast(wt.dtype());
            let w2 = lx.konst(scaled);
            let mm = lx.atom(Atom::MatMul, &[w2, mch[1]])?;
            return lx.view(mm, v.clone()).map(Some);
        }
    }
    Ok(None)
}

/// Whether `class` already holds a folded form of `view(W @ X)` over the same columns `X`
/// with another constant weight (the rule ran on this Mul before).
fn already_folded(lx: &Lx, class: Id, y: Id) -> bool {
    let cols_of = |c: Id| -> Vec<(Id, Id)> {
        let mut srcs: Vec<Id> =
            lx.atoms_in(c).into_iter().filter_map(|(a, ch)| matches!(a, Atom::View(_)).then_some(ch[0])).collect();
        srcs.push(c);
        let mut out = Vec::new();
        for src in srcs {
            for (m, mch) in lx.atoms_in(src) {
                if m == Atom::MatMul {
                    out.push((lx.eg.find(mch[0]), lx.eg.find(mch[1])));
                }
            }
        }
        out
    };
    let mine = cols_of(y);
    cols_of(class).iter().any(|(w, x)| mine.iter().any(|(w0, x0)| x0 == x && w0 != w))
}

fn fold_scale(lx: &mut Lx, atom: &Atom, args: &[Id]) -> Result<Option<Id>> {
    if *atom != Atom::Binary(BinaryFn::Mul) || args.len() != 2 {
        return Ok(None);
    }
    let class = {
        let i = lx.eg.analysis.intern_atom(atom.clone());
        lx.eg.lookup(Term::Atom(i, args.to_vec()))
    };
    for (y, s) in [(args[0], args[1]), (args[1], args[0])] {
        let Some(sv) = channel_values(lx, s) else { continue };
        if let Some(c) = class
            && already_folded(lx, c, y)
        {
            return Ok(None);
        }
        if let Some(r) = fold_view(lx, y, &sv)? {
            return Ok(Some(r));
        }
        // With a bias: (view(W @ X) + b) * s = view(W' @ X) + b * s.
        for (a, ch) in lx.atoms_in(y) {
            if a != Atom::Binary(BinaryFn::Add) {
                continue;
            }
            for (p, q) in [(ch[0], ch[1]), (ch[1], ch[0])] {
                let Some(bv) = channel_values(lx, q) else { continue };
                if bv.len() != sv.len() {
                    continue;
                }
                let Some(c) = class else { continue };
                if already_folded_add(lx, c, p) {
                    return Ok(None);
                }
                let Some(folded) = fold_view(lx, p, &sv)? else { continue };
                let shape = lx.shape(y)?;
                let dt = lx.dtype(y)?;
                let mut bs = vec![1usize; shape.len()];
                bs[1] = sv.len();
                let bias: Vec<f64> = bv.iter().zip(&sv).map(|(b, s)| b * s).collect();
                let b = lx.konst(Tensor::from_fn_f64(DType::F64, bs, |i| bias[i])?.cast(dt));
                return lx.add(folded, b).map(Some);
            }
        }
    }
    Ok(None)
}

/// Whether `class` already holds `view(W' @ X) + b'` for the `view(W @ X)` in `p`.
fn already_folded_add(lx: &Lx, class: Id, p: Id) -> bool {
    lx.atoms_in(class).iter().any(|(a, ch)| *a == Atom::Binary(BinaryFn::Add) && already_folded(lx, ch[0], p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kron_applies_both_sides() {
        // (m ⊗ m) vec(d) = vec(m d m^T) for a 2x2 m.
        let m = [[1.0, 2.0], [3.0, 4.0]];
        let (shape, k) = kron(&m);
        assert_eq!(shape, vec![4, 4]);
        let d = [1.0, -1.0, 0.5, 2.0];
        let got: Vec<f64> = (0..4).map(|r| (0..4).map(|c| k[r * 4 + c] * d[c]).sum()).collect();
        let mut want = vec![0.0; 4];
        for i in 0..2 {
            for j in 0..2 {
                for a in 0..2 {
                    for b in 0..2 {
                        want[i * 2 + j] += m[i][a] * d[a * 2 + b] * m[j][b];
                    }
                }
            }
        }
        assert_eq!(got, want);
    }
}
