//! Materialized padding: a padded window (a guarded view that reads each element of its
//! input several times, as a conv's or a pool's im2col window after egg composed the pad
//! into it) splits into the padded tensor and an unguarded window over it.
//!
//! The partitioner materializes the padded tensor once (a copy with the guards, one read
//! per element), and the kernel that reads the window, a contraction whose hot loop would
//! otherwise test the guards at every multiply-add, reads it without a guard.
//!
//! The split holds exactly: where every guard of the window holds, both read the same
//! input element; where one fails, the window lands in the padded border, which holds
//! the pad value. [`materialize_padded_windows`] proves this with intervals over the
//! view's box and leaves any view it cannot prove as it is.

use crate::atom::{Atom, Guard, ViewMap, row_major};
use crate::error::Result;
use crate::kernel::Affine;
use crate::graph::{Graph, Node, ValueId, ValueType};

/// Splits every padded window of `g` (see the module doc) and returns how many it split.
/// The padded tensor is a new value named `<window>.padded`, computed by a new View node
/// placed just before the window's.
pub fn materialize_padded_windows(g: &mut Graph) -> Result<usize> {
    let mut split = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let Some((pad, window, input)) = padded_window(g, i)? else {
            i += 1;
            continue;
        };
        let Some(out) = g.nodes[i].outputs.first().copied().flatten() else {
            i += 1;
            continue;
        };
        let Some(dtype) = g.value(input).ty.as_ref().map(|t| t.dtype) else {
            i += 1;
            continue;
        };
        let padded = g.add_value(format!("{}.padded", g.name(out)));
        g.values[padded.index()].ty = Some(ValueType::new(dtype, pad.shape.clone()));
        let node = Node {
            name: format!("{}.pad", g.nodes[i].name),
            op: Atom::View(pad).to_op(),
            inputs: vec![Some(input)],
            outputs: vec![Some(padded)],
        };
        g.nodes[i].op = Atom::View(window).to_op();
        g.nodes[i].inputs = vec![Some(padded)];
        g.nodes.insert(i, node);
        split += 1;
        i += 2;
    }
    Ok(split)
}

/// Node `i` as (padded tensor's view of the input, unguarded window over the padded
/// tensor, the input), where it is a padded window that splits.
fn padded_window(g: &Graph, i: usize) -> Result<Option<(ViewMap, ViewMap, ValueId)>> {
    let node = &g.nodes[i];
    let Some(Atom::View(vm)) = Atom::from_op(&node.op)? else { return Ok(None) };
    if vm.guards.is_empty() {
        return Ok(None);
    }
    let Some(input) = node.inputs.first().copied().flatten() else { return Ok(None) };
    let Some(dims) = g.value(input).ty.as_ref().and_then(|t| t.shape.clone()) else { return Ok(None) };
    Ok(split_padding(&vm, &dims).map(|(p, w)| (p, w, input)))
}

/// `a + k·b`, `None` on overflow.
fn add_scaled(a: &Affine, k: i64, b: &Affine) -> Option<Affine> {
    let coefs: Option<Vec<i64>> = a.coefs.iter().zip(&b.coefs).map(|(x, y)| x.checked_add(k.checked_mul(*y)?)).collect();
    Some(Affine { offset: a.offset.checked_add(k.checked_mul(b.offset)?)?, coefs: coefs? })
}

/// The least and greatest value of `a` over the box `0 <= i[d] < shape[d]`.
fn range(a: &Affine, shape: &[usize]) -> Option<(i64, i64)> {
    let extents: Vec<i64> = shape.iter().map(|&n| i64::try_from(n).ok()).collect::<Option<_>>()?;
    let (lo, hi) = a.range(&extents)?;
    Some((i64::try_from(lo).ok()?, i64::try_from(hi).ok()?))
}

/// Splits padded window `vm` over an input of shape `dims` into (the padded tensor as a
/// guarded view of the input, the window as an unguarded view of the padded tensor).
/// `None` where `vm` is no such window: a guard that is not a coordinate of `dims`, an
/// index that does not decompose into coordinates within range, or a padded tensor no
/// smaller than the window (materializing it would cost what it saves).
pub fn split_padding(vm: &ViewMap, dims: &[usize]) -> Option<(ViewMap, ViewMap)> {
    let m = vm.guards.len();
    if m == 0 || m > dims.len() || m > 4 || dims.contains(&0) || vm.shape.contains(&0) {
        return None;
    }
    let rho = row_major(dims);
    let index = Affine { offset: vm.offset, coefs: vm.strides.clone() };
    let guards: Vec<Affine> = vm.guards.iter().map(|g| Affine { offset: g.offset, coefs: g.coefs.clone() }).collect();
    // Each guard is the coordinate of a distinct input dim whose extent is its bound;
    // try each such assignment (m <= 4 guards, a handful of candidates).
    let mut assignment = vec![0usize; m];
    assign(vm, dims, &rho, &index, &guards, &mut assignment, 0)
}

/// Tries dims for guards `j..` (the ones before are fixed in `assignment`).
fn assign(
    vm: &ViewMap,
    dims: &[usize],
    rho: &[i64],
    index: &Affine,
    guards: &[Affine],
    assignment: &mut Vec<usize>,
    j: usize,
) -> Option<(ViewMap, ViewMap)> {
    if j == guards.len() {
        return split_with(vm, dims, rho, index, guards, assignment);
    }
    for k in 0..dims.len() {
        if dims[k] as i64 == vm.guards[j].bound && !assignment[..j].contains(&k) {
            assignment[j] = k;
            if let Some(s) = assign(vm, dims, rho, index, guards, assignment, j + 1) {
                return Some(s);
            }
        }
    }
    None
}

/// The split where guard `j` is the coordinate of input dim `assignment[j]`.
fn split_with(
    vm: &ViewMap,
    dims: &[usize],
    rho: &[i64],
    index: &Affine,
    guards: &[Affine],
    assignment: &[usize],
) -> Option<(ViewMap, ViewMap)> {
    let rank = dims.len();
    let axes = vm.shape.len();
    // The coordinate of every input dim as a form over the view's axes: the guards give
    // the guarded ones; the rest of the index splits over the others, outermost first.
    let mut coord: Vec<Option<Affine>> = vec![None; rank];
    let mut residual = index.clone();
    for (g, &k) in guards.iter().zip(assignment) {
        residual = add_scaled(&residual, -rho[k], g)?;
        coord[k] = Some(g.clone());
    }
    let zero = Affine { offset: 0, coefs: vec![0; axes] };
    let free: Vec<usize> = (0..rank).filter(|k| coord[*k].is_none()).collect();
    for &k in &free {
        coord[k] = Some(zero.clone());
    }
    for d in 0..axes {
        let c = residual.coefs[d];
        if c == 0 {
            continue;
        }
        // The outermost free dim whose stride divides the coefficient.
        let k = *free.iter().find(|&&k| rho[k] != 0 && c % rho[k] == 0)?;
        coord[k].as_mut()?.coefs[d] = c / rho[k];
    }
    let mut off = residual.offset;
    for &k in &free {
        let q = off.div_euclid(rho[k]);
        coord[k].as_mut()?.offset = q;
        off -= q * rho[k];
    }
    if off != 0 {
        return None;
    }
    let coord: Vec<Affine> = coord.into_iter().collect::<Option<_>>()?;
    // The coordinates must rebuild the index exactly, and the free ones stay in range.
    let mut rebuilt = Affine { offset: 0, coefs: vec![0; axes] };
    for (k, f) in coord.iter().enumerate() {
        rebuilt = add_scaled(&rebuilt, rho[k], f)?;
    }
    if rebuilt != *index {
        return None;
    }
    let mut lo = vec![0i64; rank];
    let mut padded = dims.to_vec();
    for k in 0..rank {
        let (min, max) = range(&coord[k], &vm.shape)?;
        let n = dims[k] as i64;
        if assignment.contains(&k) {
            lo[k] = (-min).max(0);
            let hi = (max - (n - 1)).max(0);
            padded[k] = usize::try_from(n.checked_add(lo[k])?.checked_add(hi)?).ok()?;
        } else if min < 0 || max >= n {
            return None;
        }
    }
    let padded_numel = padded.iter().try_fold(1usize, |a, &n| a.checked_mul(n))?;
    let window_numel = vm.shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n))?;
    if padded_numel >= window_numel {
        return None;
    }
    // The padded tensor: element y is input[y - lo] where every guarded y_k - lo_k is in
    // range, else the pad value.
    let mut pad_offset = 0i64;
    for k in 0..rank {
        pad_offset = pad_offset.checked_sub(rho[k].checked_mul(lo[k])?)?;
    }
    let pad_guards = assignment
        .iter()
        .map(|&k| {
            let mut coefs = vec![0; rank];
            coefs[k] = 1;
            Guard { coefs, offset: -lo[k], bound: dims[k] as i64 }
        })
        .collect();
    let pad = ViewMap { shape: padded.clone(), strides: rho.to_vec(), offset: pad_offset, guards: pad_guards, pad: vm.pad };
    // The window reads padded[coord + lo], unguarded.
    let rho_p = row_major(&padded);
    let mut window = Affine { offset: 0, coefs: vec![0; axes] };
    for k in 0..rank {
        let shifted = Affine { offset: coord[k].offset.checked_add(lo[k])?, coefs: coord[k].coefs.clone() };
        window = add_scaled(&window, rho_p[k], &shifted)?;
    }
    let window = ViewMap { shape: vm.shape.clone(), strides: window.coefs, offset: window.offset, guards: vec![], pad: 0.0 };
    pad.check().ok()?;
    window.check().ok()?;
    Some((pad, window))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    /// A conv's padded im2col window over `[c, h, w]`: `[c, kh, kw, oh, ow]`.
    fn conv_window(c: usize, h: usize, w: usize, k: usize, stride: usize, p: usize) -> ViewMap {
        let (oh, ow) = ((h + 2 * p - k) / stride + 1, (w + 2 * p - k) / stride + 1);
        let (hw, w_, s, p_) = ((h * w) as i64, w as i64, stride as i64, p as i64);
        ViewMap {
            shape: vec![c, k, k, oh, ow],
            strides: vec![hw, w_, 1, s * w_, s],
            offset: -p_ * w_ - p_,
            guards: vec![
                Guard { coefs: vec![0, 1, 0, s, 0], offset: -p_, bound: h as i64 },
                Guard { coefs: vec![0, 0, 1, 0, s], offset: -p_, bound: w as i64 },
            ],
            pad: 0.0,
        }
    }

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape.to_vec(), (0..n).map(|i| i as f32 + 1.0).collect()).unwrap()
    }

    #[test]
    fn split_windows_read_what_the_padded_window_reads() {
        for (c, h, w, k, stride, p) in [(3, 9, 7, 3, 1, 1), (2, 8, 8, 7, 2, 3), (4, 5, 6, 3, 2, 1), (1, 6, 6, 5, 1, 2)] {
            let vm = conv_window(c, h, w, k, stride, p);
            let x = iota(&[c, h, w]);
            let (pad, window) = split_padding(&vm, &[c, h, w]).expect("a conv window splits");
            assert!(window.guards.is_empty());
            // As wide as the window reaches: a strided window may not reach all the padding.
            assert_eq!(pad.shape[0], c);
            assert!(pad.shape[1] > h && pad.shape[1] <= h + 2 * p && pad.shape[2] > w && pad.shape[2] <= w + 2 * p);
            let want = vm.apply(&x).unwrap();
            let got = window.apply(&pad.apply(&x).unwrap()).unwrap();
            assert_eq!(got.slice::<f32>().unwrap(), want.slice::<f32>().unwrap(), "{vm:?}");
        }
    }

    #[test]
    fn views_that_are_not_windows_stay() {
        // A plain pad reads each element once: the padded tensor is the view itself.
        let pad = ViewMap {
            shape: vec![5],
            strides: vec![1],
            offset: -1,
            guards: vec![Guard { coefs: vec![1], offset: -1, bound: 3 }],
            pad: 0.0,
        };
        assert!(split_padding(&pad, &[3]).is_none());
        // A guard that is no coordinate of the input (its bound is no dim's extent).
        let mut vm = conv_window(2, 6, 6, 3, 1, 1);
        vm.guards[0].bound = 5;
        assert!(split_padding(&vm, &[2, 6, 6]).is_none());
    }

    #[test]
    fn a_graph_gains_a_padded_value_and_the_window_loses_its_guards() {
        let vm = conv_window(2, 6, 6, 3, 1, 1);
        let mut g = Graph::default();
        let x = g.add_value("x");
        g.values[x.index()].ty = Some(ValueType::new(crate::DType::F32, vec![2, 6, 6]));
        let y = g.add_value("y");
        g.values[y.index()].ty = Some(ValueType::new(crate::DType::F32, vm.shape.clone()));
        g.nodes.push(Node { name: "win".into(), op: Atom::View(vm.clone()).to_op(), inputs: vec![Some(x)], outputs: vec![Some(y)] });
        assert_eq!(materialize_padded_windows(&mut g).unwrap(), 1);
        assert_eq!(g.nodes.len(), 2);
        let Some(Atom::View(window)) = Atom::from_op(&g.nodes[1].op).unwrap() else { panic!("not a view") };
        assert!(window.guards.is_empty());
        assert_eq!(g.nodes[1].inputs, g.nodes[0].outputs);
        assert_eq!(g.value(g.nodes[0].outputs[0].unwrap()).ty.as_ref().unwrap().shape, Some(vec![2, 8, 8]));
    }
}
