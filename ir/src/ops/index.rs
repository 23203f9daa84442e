//! The index op family: gathers (`Gather`, `GatherElements`, `GatherND`), scatters
//! (`ScatterElements`, the deprecated `Scatter`, `ScatterND`, `TensorScatter`) and the
//! selections with data-dependent output shapes (`Compress`, `NonZero`, `Unique`).
//!
//! Index values are checked before any memory is touched: an out-of-range index is an error
//! naming the index and the size of the axis it indexes.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::ValueType;
use crate::op::{EvalCx, InferCx};
use crate::ops::common::{demote, promote};
use crate::shape::{fmt_shape, for_each_index, normalize_axis, strides};
use crate::tensor::{Elem, Tensor};
use std::cmp::Ordering;

crate::op_family! {
    /// Ops of the index family.
    pub enum IndexOp {
        Gather,
        GatherElements,
        GatherND,
        ScatterElements,
        Scatter,
        ScatterND,
        Compress,
        NonZero,
        Unique,
        TensorScatter,
    }
}

impl IndexOp {
    pub fn infer(self, cx: &InferCx) -> Result<Vec<ValueType>> {
        use IndexOp::*;
        let dtype = cx.dtype(0)?;
        let data_shape = cx.shape(0)?;
        match self {
            Gather | GatherElements | GatherND => {
                check_index_dtype(self, cx.dtype(1)?, self != GatherND)?;
                let shape = match (data_shape, cx.shape(1)?) {
                    (Some(d), Some(i)) => Some(match self {
                        Gather => GatherParams::new(cx.attrs.int_or("axis", 0)?, d, i)?.out_shape,
                        GatherElements => {
                            check_elementwise_indices(self, cx.attrs.int_or("axis", 0)?, d, i)?;
                            i.to_vec()
                        }
                        _ => NdParams::new(self, cx.attrs.int_or("batch_dims", 0)?, d, i)?.out_shape,
                    }),
                    _ => None,
                };
                Ok(vec![ValueType { dtype, shape }])
            }
            ScatterElements | Scatter | ScatterND => {
                check_index_dtype(self, cx.dtype(1)?, self != ScatterND)?;
                let updates_dtype = cx.dtype(2)?;
                if updates_dtype != dtype {
                    crate::bail_model!("{} updates are {updates_dtype} but data is {dtype}", self.name());
                }
                scatter_reduction(self, cx.attrs.string_or("reduction", "none")?, dtype)?;
                if let (Some(d), Some(i), Some(u)) = (data_shape, cx.shape(1)?, cx.shape(2)?) {
                    if self == ScatterND {
                        check_scatter_nd(d, i, u)?;
                    } else {
                        check_elementwise_indices(self, cx.attrs.int_or("axis", 0)?, d, i)?;
                        if u != i {
                            crate::bail_model!(
                                "{} updates have shape {} but indices have shape {}",
                                self.name(),
                                fmt_shape(u),
                                fmt_shape(i)
                            );
                        }
                    }
                }
                Ok(vec![ValueType { dtype, shape: data_shape.map(<[usize]>::to_vec) }])
            }
            TensorScatter => {
                let updates_dtype = cx.dtype(1)?;
                if updates_dtype != dtype {
                    crate::bail_model!("TensorScatter update is {updates_dtype} but past_cache is {dtype}");
                }
                if let Some(w) = cx.opt(2)
                    && w.ty.dtype != DType::I64
                {
                    crate::bail_model!("TensorScatter write_indices must be int64, got {}", w.ty.dtype);
                }
                tensor_scatter_circular(cx.attrs.string_or("mode", "linear")?)?;
                if let (Some(d), Some(u)) = (data_shape, cx.shape(1)?) {
                    TensorScatterParams::new(cx.attrs.int_or("axis", -2)?, d, u)?;
                }
                Ok(vec![ValueType { dtype, shape: data_shape.map(<[usize]>::to_vec) }])
            }
            Compress => {
                let cond_dtype = cx.dtype(1)?;
                if cond_dtype != DType::Bool {
                    crate::bail_model!("Compress condition must be bool, got {cond_dtype}");
                }
                let shape = match (data_shape, cx.value(1)?) {
                    (Some(d), Some(c)) => Some(compress_selection(cx.attrs.int("axis")?, d, c)?.1),
                    _ => None,
                };
                Ok(vec![ValueType { dtype, shape }])
            }
            NonZero => {
                let shape = cx.value(0)?.map(|x| vec![x.rank(), count_nonzero(x)]);
                Ok(vec![ValueType { dtype: DType::I64, shape }])
            }
            Unique => {
                if dtype == DType::Bool {
                    return Err(crate::ops::common::bad_dtype("Unique", dtype));
                }
                let shapes = match cx.value(0)? {
                    Some(x) => Some(unique(x, cx.attrs.int("axis")?, cx.attrs.int_or("sorted", 1)? != 0)?.shapes(x)),
                    None => None,
                };
                let ty = |i: usize, dtype| ValueType { dtype, shape: shapes.as_ref().map(|s: &[Vec<usize>; 4]| s[i].clone()) };
                Ok(vec![ty(0, dtype), ty(1, DType::I64), ty(2, DType::I64), ty(3, DType::I64)])
            }
        }
    }

    pub fn eval(self, cx: &EvalCx) -> Result<Vec<Tensor>> {
        use IndexOp::*;
        let x = cx.input(0)?;
        let out = match self {
            Gather => {
                let indices = cx.input(1)?;
                let p = GatherParams::new(cx.attrs.int_or("axis", 0)?, x.shape(), indices.shape())?;
                let idx = checked_indices(&indices.to_i64_vec(), p.n, p.axis)?;
                crate::with_data!(x.data(), v => Tensor::from_vec(p.out_shape, gather(v, p.outer, p.n, p.inner, &idx))?)
            }
            GatherElements => {
                let indices = cx.input(1)?;
                let axis = normalize_axis(cx.attrs.int_or("axis", 0)?, x.rank())?;
                let offsets = element_offsets(self, x.shape(), indices, axis)?;
                crate::with_data!(x.data(), v => {
                    Tensor::from_vec(indices.shape().to_vec(), offsets.iter().map(|&o| v[o]).collect())?
                })
            }
            GatherND => {
                let indices = cx.input(1)?;
                let p = NdParams::new(self, cx.attrs.int_or("batch_dims", 0)?, x.shape(), indices.shape())?;
                let starts = nd_offsets(x.shape(), indices, p.batch_dims)?;
                crate::with_data!(x.data(), v => {
                    let mut out = Vec::with_capacity(starts.len() * p.slice_len);
                    for &s in &starts {
                        out.extend_from_slice(&v[s..s + p.slice_len]);
                    }
                    Tensor::from_vec(p.out_shape, out)?
                })
            }
            ScatterElements | Scatter | ScatterND => {
                let indices = cx.input(1)?;
                let updates = cx.input(2)?;
                let reduction = scatter_reduction(self, cx.attrs.string_or("reduction", "none")?, x.dtype())?;
                // Each update element `i` lands at `targets[i]` (ScatterND: a slice per index tuple).
                let (targets, slice_len) = if self == ScatterND {
                    let slice_len = check_scatter_nd(x.shape(), indices.shape(), updates.shape())?;
                    (nd_offsets(x.shape(), indices, 0)?, slice_len)
                } else {
                    let axis = normalize_axis(cx.attrs.int_or("axis", 0)?, x.rank())?;
                    (element_offsets(self, x.shape(), indices, axis)?, 1)
                };
                scatter(x, updates, &targets, slice_len, reduction)?
            }
            TensorScatter => {
                let update = cx.input(1)?;
                let p = TensorScatterParams::new(cx.attrs.int_or("axis", -2)?, x.shape(), update.shape())?;
                let circular = tensor_scatter_circular(cx.attrs.string_or("mode", "linear")?)?;
                let write = match cx.opt(2) {
                    Some(w) => w.to_i64_vec(),
                    None => vec![0; x.shape()[0]],
                };
                let rows = p.write_rows(&write, circular)?;
                crate::with_data!(x.data(), v => {
                    let u = update.slice()?;
                    let mut out = v.clone();
                    for (k, &r) in rows.iter().enumerate() {
                        out[r * p.inner..(r + 1) * p.inner].copy_from_slice(&u[k * p.inner..(k + 1) * p.inner]);
                    }
                    Tensor::from_vec(x.shape().to_vec(), out)?
                })
            }
            Compress => {
                let (lanes, shape) = compress_selection(cx.attrs.int("axis")?, x.shape(), cx.input(1)?)?;
                crate::with_data!(x.data(), v => {
                    let mut out = Vec::with_capacity(shape.iter().product());
                    for o in 0..lanes.outer {
                        for &k in &lanes.selected {
                            let s = (o * lanes.n + k) * lanes.inner;
                            out.extend_from_slice(&v[s..s + lanes.inner]);
                        }
                    }
                    Tensor::from_vec(shape, out)?
                })
            }
            NonZero => nonzero(x, cx.out_shape(0)?)?,
            Unique => {
                let u = unique(x, cx.attrs.int("axis")?, cx.attrs.int_or("sorted", 1)? != 0)?;
                return u.tensors(x);
            }
        };
        Ok(vec![out])
    }
}

fn check_index_dtype(op: IndexOp, dtype: DType, int32_ok: bool) -> Result<()> {
    match dtype {
        DType::I64 => Ok(()),
        DType::I32 if int32_ok => Ok(()),
        _ => Err(Error::InvalidModel(format!(
            "{} indices must be {}, got {dtype}",
            op.name(),
            if int32_ok { "int32 or int64" } else { "int64" }
        ))),
    }
}

/// An index into an axis of `size`, negative values counting from the end.
fn checked_index(i: i64, size: usize, axis: usize) -> Result<usize> {
    let s = size as i64;
    let j = if i < 0 { i + s } else { i };
    if j < 0 || j >= s {
        return Err(Error::InvalidModel(format!(
            "index {i} is out of range for axis {axis} of size {size}"
        )));
    }
    Ok(j as usize)
}

fn checked_indices(indices: &[i64], size: usize, axis: usize) -> Result<Vec<usize>> {
    indices.iter().map(|&i| checked_index(i, size, axis)).collect()
}

/// Gather's view of the data: `outer` blocks of `n` slices of `inner` elements.
struct GatherParams {
    axis: usize,
    outer: usize,
    n: usize,
    inner: usize,
    out_shape: Vec<usize>,
}

impl GatherParams {
    fn new(axis: i64, data: &[usize], indices: &[usize]) -> Result<GatherParams> {
        let axis = normalize_axis(axis, data.len())?;
        let out_shape = [&data[..axis], indices, &data[axis + 1..]].concat();
        Ok(GatherParams {
            axis,
            outer: data[..axis].iter().product(),
            n: data[axis],
            inner: data[axis + 1..].iter().product(),
            out_shape,
        })
    }
}

/// For each outer block, the slices at `idx` in order.
fn gather<T: Copy>(x: &[T], outer: usize, n: usize, inner: usize, idx: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let s = (o * n + i) * inner;
            out.extend_from_slice(&x[s..s + inner]);
        }
    }
    out
}

/// GatherElements/ScatterElements shapes: indices of the data's rank, no larger than the
/// data on the other axes.
fn check_elementwise_indices(op: IndexOp, axis: i64, data: &[usize], indices: &[usize]) -> Result<usize> {
    let axis = normalize_axis(axis, data.len())?;
    let fits = indices.len() == data.len()
        && indices.iter().zip(data).enumerate().all(|(d, (&i, &n))| d == axis || i <= n);
    if !fits {
        crate::bail_model!(
            "{} indices of shape {} do not fit data of shape {} at axis {axis}",
            op.name(),
            fmt_shape(indices),
            fmt_shape(data)
        );
    }
    Ok(axis)
}

/// The data offset of each element of `indices` for GatherElements/ScatterElements: the
/// element's own position with the `axis` coordinate replaced by its index value.
fn element_offsets(op: IndexOp, data: &[usize], indices: &Tensor, axis: usize) -> Result<Vec<usize>> {
    check_elementwise_indices(op, axis as i64, data, indices.shape())?;
    let st = strides(data);
    let mut walk = st.clone();
    walk[axis] = 0;
    let idx = indices.to_i64_vec();
    let mut offsets = Vec::with_capacity(idx.len());
    let mut err = None;
    for_each_index(indices.shape(), [&walk], |lin, [base]| match checked_index(idx[lin], data[axis], axis) {
        Ok(i) => offsets.push(base + i * st[axis]),
        Err(e) => {
            err.get_or_insert(e);
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(offsets),
    }
}

/// GatherND's shapes.
struct NdParams {
    batch_dims: usize,
    slice_len: usize,
    out_shape: Vec<usize>,
}

impl NdParams {
    fn new(op: IndexOp, batch_dims: i64, data: &[usize], indices: &[usize]) -> Result<NdParams> {
        let (r, q) = (data.len(), indices.len());
        let b = usize::try_from(batch_dims)
            .ok()
            .filter(|&b| b < r.min(q))
            .ok_or_else(|| Error::InvalidModel(format!("{} batch_dims {batch_dims} must be in [0, min(rank(data), rank(indices)))", op.name())))?;
        if data[..b] != indices[..b] {
            crate::bail_model!(
                "{} batch dims differ: data {} and indices {} (batch_dims {b})",
                op.name(),
                fmt_shape(data),
                fmt_shape(indices)
            );
        }
        let m = indices[q - 1];
        if m < 1 || m > r - b {
            crate::bail_model!("{} index tuples have length {m}, must be in [1, {}]", op.name(), r - b);
        }
        Ok(NdParams {
            batch_dims: b,
            slice_len: data[b + m..].iter().product(),
            out_shape: [&indices[..q - 1], &data[b + m..]].concat(),
        })
    }
}

/// The data offset of the slice each index tuple of `indices` (last dim) selects, the first
/// `batch_dims` dims being shared batch dims.
fn nd_offsets(data: &[usize], indices: &Tensor, batch_dims: usize) -> Result<Vec<usize>> {
    let ishape = indices.shape();
    let m = ishape.last().copied().unwrap_or(0);
    if ishape.is_empty() || m == 0 || m > data.len() - batch_dims {
        crate::bail_model!("index tuples of shape {} do not fit data {}", fmt_shape(ishape), fmt_shape(data));
    }
    let st = strides(data);
    let batch_count: usize = data[..batch_dims].iter().product();
    let batch_stride: usize = data[batch_dims..].iter().product();
    let idx = indices.to_i64_vec();
    let tuples = idx.len() / m;
    let per_batch = tuples.checked_div(batch_count).unwrap_or(0);
    let mut offsets = Vec::with_capacity(tuples);
    for (t, tuple) in idx.chunks_exact(m).enumerate() {
        let batch = t.checked_div(per_batch).unwrap_or(0);
        let mut off = batch * batch_stride;
        for (k, &i) in tuple.iter().enumerate() {
            let axis = batch_dims + k;
            off += checked_index(i, data[axis], axis)? * st[axis];
        }
        offsets.push(off);
    }
    Ok(offsets)
}

/// ScatterND shapes: `updates` must be `indices.shape[:-1] ++ data.shape[k:]`. Returns the
/// length of one update slice.
fn check_scatter_nd(data: &[usize], indices: &[usize], updates: &[usize]) -> Result<usize> {
    let q = indices.len();
    let k = indices.last().copied().unwrap_or(0);
    if q == 0 || k == 0 || k > data.len() {
        crate::bail_model!("ScatterND indices of shape {} do not fit data {}", fmt_shape(indices), fmt_shape(data));
    }
    let want = [&indices[..q - 1], &data[k..]].concat();
    if updates != want {
        crate::bail_model!("ScatterND updates have shape {}, expected {}", fmt_shape(updates), fmt_shape(&want));
    }
    Ok(data[k..].iter().product())
}

/// How a scatter combines an update with the existing element.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ScatterReduction {
    Replace,
    Add,
    Mul,
    Max,
    Min,
}

fn scatter_reduction(op: IndexOp, name: &str, dtype: DType) -> Result<ScatterReduction> {
    let r = match name {
        "none" => ScatterReduction::Replace,
        "add" => ScatterReduction::Add,
        "mul" => ScatterReduction::Mul,
        "max" => ScatterReduction::Max,
        "min" => ScatterReduction::Min,
        _ => crate::bail_model!("{} attribute 'reduction' must be none/add/mul/max/min, got '{name}'", op.name()),
    };
    if r != ScatterReduction::Replace && dtype == DType::Bool {
        crate::bail_model!("{} reduction '{name}' does not accept bool", op.name());
    }
    Ok(r)
}

/// Element arithmetic of scatter reductions (integers wrap).
trait Arith: Elem {
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
}

macro_rules! impl_arith {
    (float: $($t:ty),*) => {$(
        impl Arith for $t {
            fn add(self, o: Self) -> Self { self + o }
            fn mul(self, o: Self) -> Self { self * o }
        }
    )*};
    (int: $($t:ty),*) => {$(
        impl Arith for $t {
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
        }
    )*};
}
impl_arith!(float: f32, f64);
impl_arith!(int: i8, u8, i16, u16, i32, u32, i64, u64);

/// `data` with update slice `i` (of `slice_len` elements) combined into the slice at
/// `targets[i]`, in order.
fn scatter(data: &Tensor, updates: &Tensor, targets: &[usize], slice_len: usize, r: ScatterReduction) -> Result<Tensor> {
    fn apply<T: Copy>(out: &mut [T], u: &[T], targets: &[usize], len: usize, f: impl Fn(T, T) -> T) {
        for (&t, us) in targets.iter().zip(u.chunks_exact(len.max(1))) {
            for (o, &v) in out[t..t + len].iter_mut().zip(us) {
                *o = f(*o, v);
            }
        }
    }
    if r == ScatterReduction::Replace {
        return crate::with_data!(data.data(), v => {
            let mut out = v.clone();
            apply(&mut out, updates.slice()?, targets, slice_len, |_, u| u);
            Tensor::from_vec(data.shape().to_vec(), out)
        });
    }
    let dtype = data.dtype();
    let (d, u) = (promote(data), promote(updates));
    let y = crate::with_numeric!(d.dtype(), "scatter reduction", T => {
        let mut out = d.slice::<T>()?.to_vec();
        let f: fn(T, T) -> T = match r {
            ScatterReduction::Add | ScatterReduction::Replace => T::add,
            ScatterReduction::Mul => T::mul,
            ScatterReduction::Max => |a, b| if b > a { b } else { a },
            ScatterReduction::Min => |a, b| if b < a { b } else { a },
        };
        apply(&mut out, u.slice()?, targets, slice_len, f);
        Tensor::from_vec(data.shape().to_vec(), out)?
    });
    Ok(demote(y, dtype))
}

fn tensor_scatter_circular(mode: &str) -> Result<bool> {
    match mode {
        "linear" => Ok(false),
        "circular" => Ok(true),
        _ => Err(Error::InvalidModel(format!("TensorScatter attribute 'mode' must be linear or circular, got '{mode}'"))),
    }
}

/// TensorScatter's view of the cache: `prefix` rows (batch first) of `max_len` slices of
/// `inner` elements along `axis`, the update having `seq_len` slices per row.
struct TensorScatterParams {
    axis: usize,
    batch: usize,
    prefix: usize,
    max_len: usize,
    seq_len: usize,
    inner: usize,
}

impl TensorScatterParams {
    fn new(axis: i64, cache: &[usize], update: &[usize]) -> Result<TensorScatterParams> {
        let axis = normalize_axis(axis, cache.len())?;
        if axis == 0 {
            crate::bail_model!("TensorScatter axis must not be the batch axis 0");
        }
        let fits = cache.len() == update.len()
            && cache.iter().zip(update).enumerate().all(|(d, (&c, &u))| if d == axis { u <= c } else { u == c });
        if !fits {
            crate::bail_model!(
                "TensorScatter update of shape {} does not fit past_cache of shape {} at axis {axis}",
                fmt_shape(update),
                fmt_shape(cache)
            );
        }
        Ok(TensorScatterParams {
            axis,
            batch: cache[0],
            prefix: cache[..axis].iter().product(),
            max_len: cache[axis],
            seq_len: update[axis],
            inner: cache[axis + 1..].iter().product(),
        })
    }

    /// The cache row (in units of `inner`) each update row is written to, in update order.
    fn write_rows(&self, write: &[i64], circular: bool) -> Result<Vec<usize>> {
        if write.len() != self.batch {
            crate::bail_model!("TensorScatter write_indices has {} values for batch size {}", write.len(), self.batch);
        }
        let per_batch = self.prefix.checked_div(self.batch).unwrap_or(1).max(1);
        let max = self.max_len as i64;
        let mut rows = Vec::with_capacity(self.prefix * self.seq_len);
        for p in 0..self.prefix {
            let w = write[p / per_batch];
            for s in 0..self.seq_len as i64 {
                let pos = w.checked_add(s).unwrap_or(i64::MAX);
                let pos = if circular && max > 0 { pos.rem_euclid(max) } else { pos };
                if pos < 0 || pos >= max {
                    crate::bail_model!(
                        "TensorScatter write index {w} + {s} is out of range for axis {} of size {max}",
                        self.axis
                    );
                }
                rows.push(p * self.max_len + pos as usize);
            }
        }
        Ok(rows)
    }
}

/// Compress's selection: the selected positions along the axis (all elements flattened when
/// `axis` is absent), and the output shape.
struct Selection {
    outer: usize,
    n: usize,
    inner: usize,
    selected: Vec<usize>,
}

fn compress_selection(axis: Option<i64>, shape: &[usize], condition: &Tensor) -> Result<(Selection, Vec<usize>)> {
    if condition.rank() != 1 {
        crate::bail_model!("Compress condition must be 1-D, got shape {}", fmt_shape(condition.shape()));
    }
    let cond = condition.slice::<bool>()?;
    let numel: usize = shape.iter().product();
    let (axis_n, outer, inner, axis) = match axis {
        Some(a) => {
            let a = normalize_axis(a, shape.len())?;
            (shape[a], shape[..a].iter().product(), shape[a + 1..].iter().product(), Some(a))
        }
        None => (numel, 1, 1, None),
    };
    let mut selected = Vec::new();
    for (k, &c) in cond.iter().enumerate() {
        if c {
            if k >= axis_n {
                crate::bail_model!(
                    "Compress condition selects index {k}, out of range for axis {} of size {axis_n}",
                    axis.map_or("(flattened)".to_string(), |a| a.to_string())
                );
            }
            selected.push(k);
        }
    }
    let out_shape = match axis {
        Some(a) => {
            let mut s = shape.to_vec();
            s[a] = selected.len();
            s
        }
        None => vec![selected.len()],
    };
    Ok((Selection { outer, n: axis_n, inner, selected }, out_shape))
}

fn count_nonzero(x: &Tensor) -> usize {
    crate::with_data!(x.data(), v => v.iter().filter(|&&e| e != Default::default()).count())
}

/// `[rank, nnz]`: the coordinates of each non-zero element, in row-major order.
fn nonzero(x: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let shape = x.shape();
    let rank = shape.len();
    let nnz = out_shape.get(1).copied().unwrap_or(0);
    let positions: Vec<usize> = crate::with_data!(x.data(), v => {
        v.iter().enumerate().filter(|(_, e)| **e != Default::default()).map(|(i, _)| i).collect()
    });
    let st = strides(shape);
    let mut out = vec![0i64; rank * nnz];
    for (j, &p) in positions.iter().enumerate() {
        for d in 0..rank {
            out[d * nnz + j] = ((p / st[d]) % shape[d]) as i64;
        }
    }
    Tensor::from_vec(out_shape.to_vec(), out)
}

/// The result of Unique: for each unique value (slice), in output order, the position of its
/// first occurrence; for each input position, its unique's index; and the counts.
struct UniqueResult {
    axis: Option<usize>,
    first: Vec<usize>,
    inverse: Vec<i64>,
    counts: Vec<i64>,
}

/// The slices of `x` along `axis` (or its elements), numbered along the axis, each as a
/// `Vec` of its elements.
fn unique(x: &Tensor, axis: Option<i64>, sorted: bool) -> Result<UniqueResult> {
    let axis = axis.map(|a| normalize_axis(a, x.rank())).transpose()?;
    let x = promote(x);
    crate::with_numeric!(x.dtype(), "Unique", T => {
        let v = x.slice::<T>()?;
        let (outer, n, inner) = match axis {
            Some(a) => {
                let s = x.shape();
                (s[..a].iter().product::<usize>(), s[a], s[a + 1..].iter().product::<usize>())
            }
            None => (1, v.len(), 1),
        };
        let slice = |k: usize| (0..outer).flat_map(move |o| (0..inner).map(move |i| v[(o * n + k) * inner + i]));
        let cmp = |a: &usize, b: &usize| {
            slice(*a)
                .zip(slice(*b))
                .map(|(p, q)| total_cmp(p, q))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(cmp);
        // Groups of equal slices in sorted order; stable sorting puts each group's first
        // occurrence first.
        let mut groups: Vec<(usize, i64)> = Vec::new();
        let mut group_of = vec![0usize; n];
        for (j, &k) in order.iter().enumerate() {
            match groups.last_mut() {
                Some(g) if j > 0 && cmp(&order[j - 1], &k) == Ordering::Equal => g.1 += 1,
                _ => groups.push((k, 1)),
            }
            group_of[k] = groups.len() - 1;
        }
        let mut rank_of: Vec<usize> = (0..groups.len()).collect();
        if !sorted {
            let mut by_first: Vec<usize> = (0..groups.len()).collect();
            by_first.sort_by_key(|&g| groups[g].0);
            for (r, &g) in by_first.iter().enumerate() {
                rank_of[g] = r;
            }
        }
        let mut first = vec![0usize; groups.len()];
        let mut counts = vec![0i64; groups.len()];
        for (g, &(f, c)) in groups.iter().enumerate() {
            first[rank_of[g]] = f;
            counts[rank_of[g]] = c;
        }
        let inverse = group_of.iter().map(|&g| rank_of[g] as i64).collect();
        Ok(UniqueResult { axis, first, inverse, counts })
    })
}

/// A total order: NaN above everything, NaNs equal (as numpy's unique).
#[allow(clippy::eq_op)]
fn total_cmp<T: PartialOrd>(a: T, b: T) -> Ordering {
    a.partial_cmp(&b).unwrap_or_else(|| (a != a).cmp(&(b != b)))
}

impl UniqueResult {
    fn shapes(&self, x: &Tensor) -> [Vec<usize>; 4] {
        let u = self.first.len();
        let y = match self.axis {
            Some(a) => {
                let mut s = x.shape().to_vec();
                s[a] = u;
                s
            }
            None => vec![u],
        };
        [y, vec![u], vec![self.inverse.len()], vec![u]]
    }

    fn tensors(self, x: &Tensor) -> Result<Vec<Tensor>> {
        let [y_shape, ..] = self.shapes(x);
        let y = match self.axis {
            Some(a) => {
                let s = x.shape();
                let (outer, n, inner) = (s[..a].iter().product(), s[a], s[a + 1..].iter().product());
                crate::with_data!(x.data(), v => Tensor::from_vec(y_shape, gather(v, outer, n, inner, &self.first))?)
            }
            None => crate::with_data!(x.data(), v => {
                Tensor::from_vec(y_shape, self.first.iter().map(|&i| v[i]).collect())?
            }),
        };
        let first = self.first.iter().map(|&i| i as i64).collect();
        Ok(vec![y, Tensor::from_i64s(first), Tensor::from_i64s(self.inverse), Tensor::from_i64s(self.counts)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Attr, Attrs};
    use crate::graph::ValueType;
    use crate::op::{Fact, Op, OpKind};

    fn op(kind: IndexOp, attrs: &[(&str, Attr)], version: u32) -> Op {
        let mut a = Attrs::new();
        for (name, value) in attrs {
            a.set(name, value.clone());
        }
        Op { kind: OpKind::Index(kind), attrs: a, version }
    }

    fn run(kind: IndexOp, attrs: &[(&str, Attr)], inputs: &[Tensor], outputs: usize) -> Result<Vec<Tensor>> {
        let refs: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
        op(kind, attrs, 18).eval(&refs, outputs)
    }

    fn i64s(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn gather_takes_negative_indices_and_names_bad_ones() -> Result<()> {
        let x = i64s(&[3, 2], &[1, 2, 3, 4, 5, 6]);
        let y = run(IndexOp::Gather, &[], &[x.clone(), i64s(&[2], &[-1, 0])], 1)?;
        assert_eq!(y[0].to_i64_vec(), vec![5, 6, 1, 2]);
        let err = run(IndexOp::Gather, &[], &[x, i64s(&[1], &[3])], 1);
        assert!(err.is_err_and(|e| e.to_string().contains("index 3 is out of range for axis 0 of size 3")));
        Ok(())
    }

    #[test]
    fn gather_nd_with_a_batch_dim() -> Result<()> {
        let x = i64s(&[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
        let y = run(IndexOp::GatherND, &[("batch_dims", Attr::Int(1))], &[x, i64s(&[2, 1], &[1, 0])], 1)?;
        assert_eq!(y[0].shape(), &[2, 2]);
        assert_eq!(y[0].to_i64_vec(), vec![2, 3, 4, 5]);
        Ok(())
    }

    #[test]
    fn scatter_elements_add_accumulates_duplicates() -> Result<()> {
        let x = i64s(&[1, 3], &[1, 1, 1]);
        let attrs = [("axis", Attr::Int(1)), ("reduction", Attr::String("add".into()))];
        let y = run(IndexOp::ScatterElements, &attrs, &[x, i64s(&[1, 2], &[1, -2]), i64s(&[1, 2], &[5, 7])], 1)?;
        assert_eq!(y[0].to_i64_vec(), vec![1, 13, 1]);
        Ok(())
    }

    #[test]
    fn scatter_nd_multiplies_slices() -> Result<()> {
        let x = i64s(&[2, 2], &[1, 2, 3, 4]);
        let attrs = [("reduction", Attr::String("mul".into()))];
        let y = run(IndexOp::ScatterND, &attrs, &[x, i64s(&[1, 1], &[1]), i64s(&[1, 2], &[10, 100])], 1)?;
        assert_eq!(y[0].to_i64_vec(), vec![1, 2, 30, 400]);
        Ok(())
    }

    #[test]
    fn unique_in_first_occurrence_order() -> Result<()> {
        let x = i64s(&[6], &[2, 1, 1, 3, 4, 3]);
        let y = run(IndexOp::Unique, &[("sorted", Attr::Int(0))], &[x], 4)?;
        assert_eq!(y[0].to_i64_vec(), vec![2, 1, 3, 4]);
        assert_eq!(y[1].to_i64_vec(), vec![0, 1, 3, 4]);
        assert_eq!(y[2].to_i64_vec(), vec![0, 1, 1, 2, 3, 2]);
        assert_eq!(y[3].to_i64_vec(), vec![1, 2, 2, 1]);
        Ok(())
    }

    #[test]
    fn nonzero_shape_is_unknown_without_the_value() -> Result<()> {
        let ty = ValueType::new(DType::F32, vec![2, 2]);
        let types = op(IndexOp::NonZero, &[], 13).infer(&[Some(Fact { ty: &ty, value: None })], 1)?;
        assert_eq!(types[0], ValueType::unknown(DType::I64));
        let x = Tensor::from_vec(vec![2, 2], vec![1f32, 0., 0., 2.])?;
        let y = run(IndexOp::NonZero, &[], &[x], 1)?;
        assert_eq!(y[0].shape(), &[2, 2]);
        assert_eq!(y[0].to_i64_vec(), vec![0, 1, 0, 1]);
        Ok(())
    }

    #[test]
    fn compress_along_an_axis() -> Result<()> {
        let x = i64s(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let cond = Tensor::from_vec(vec![2], vec![false, true])?;
        let y = run(IndexOp::Compress, &[("axis", Attr::Int(1))], &[x, cond], 1)?;
        assert_eq!(y[0].shape(), &[2, 1]);
        assert_eq!(y[0].to_i64_vec(), vec![2, 5]);
        Ok(())
    }

    #[test]
    fn tensor_scatter_circular_wraps() -> Result<()> {
        let cache = i64s(&[1, 3, 1], &[0, 0, 0]);
        let update = i64s(&[1, 2, 1], &[7, 8]);
        let mode = [("mode", Attr::String("circular".into()))];
        let y = run(IndexOp::TensorScatter, &mode, &[cache.clone(), update.clone(), i64s(&[1], &[2])], 1)?;
        assert_eq!(y[0].to_i64_vec(), vec![8, 0, 7]);
        let err = run(IndexOp::TensorScatter, &[], &[cache, update, i64s(&[1], &[2])], 1);
        assert!(err.is_err());
        Ok(())
    }
}
