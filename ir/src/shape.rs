//! Shape arithmetic shared by shape inference and the interpreter: broadcasting, strides,
//! axis normalization, and walking multi-dimensional indices.

use crate::error::{Error, Result};

/// `[1,3,224,224]`.
pub fn fmt_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(","))
}

/// Row-major strides in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy-style multidirectional broadcast of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::InvalidModel(format!(
                "shapes {} and {} cannot be broadcast together",
                fmt_shape(a),
                fmt_shape(b)
            )));
        };
    }
    Ok(out)
}

/// Broadcast of any number of shapes.
pub fn broadcast_all<'a>(shapes: impl IntoIterator<Item = &'a [usize]>) -> Result<Vec<usize>> {
    let mut out: Vec<usize> = vec![];
    for s in shapes {
        out = broadcast(&out, s)?;
    }
    Ok(out)
}

/// Strides to read a tensor of shape `from` as if broadcast to `to` (0 on broadcast axes).
/// `from` must broadcast to `to`.
pub fn broadcast_strides(from: &[usize], to: &[usize]) -> Vec<usize> {
    let st = strides(from);
    let off = to.len() - from.len();
    (0..to.len())
        .map(|i| if i < off || from[i - off] == 1 { 0 } else { st[i - off] })
        .collect()
}

/// A possibly negative axis in `[-rank, rank)`, as an index in `[0, rank)`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(Error::InvalidModel(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

/// Normalizes a list of axes and rejects duplicates.
pub fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(a, rank)?;
        if out.contains(&n) {
            return Err(Error::InvalidModel(format!("axis {a} is repeated")));
        }
        out.push(n);
    }
    Ok(out)
}

/// Calls `f(out_index, in_offsets)` for each element of `out_shape`, in row-major order,
/// with the linear offsets into each input given its strides (from [`broadcast_strides`]).
pub fn for_each_index<const N: usize>(
    out_shape: &[usize],
    in_strides: [&[usize]; N],
    mut f: impl FnMut(usize, [usize; N]),
) {
    let n: usize = out_shape.iter().product();
    if n == 0 {
        return;
    }
    let rank = out_shape.len();
    let mut idx = vec![0usize; rank];
    let mut offs = [0usize; N];
    for lin in 0..n {
        f(lin, offs);
        // increment
        let mut d = rank;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            for k in 0..N {
                offs[k] += in_strides[k][d];
            }
            if idx[d] < out_shape[d] {
                break;
            }
            for k in 0..N {
                offs[k] -= in_strides[k][d] * out_shape[d];
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_numpy_rules() {
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]).ok(), Some(vec![2, 3, 4]));
        assert_eq!(broadcast(&[], &[5]).ok(), Some(vec![5]));
        assert!(broadcast(&[2], &[3]).is_err());
    }

    #[test]
    fn index_walk_follows_broadcast_strides() {
        let out = [2, 3];
        let a = broadcast_strides(&[2, 1], &out);
        let b = broadcast_strides(&[3], &out);
        let mut seen = vec![];
        for_each_index(&out, [&a, &b], |i, [oa, ob]| seen.push((i, oa, ob)));
        assert_eq!(seen, vec![(0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 1, 0), (4, 1, 1), (5, 1, 2)]);
    }
}
