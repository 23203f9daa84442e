//! Property tests of the layout family's lowering rules: random shapes, attributes (in
//! their attribute and input forms across opsets) and values, compared with the reference
//! interpreter. Every layout rule only moves, selects or generates elements (or, for Range
//! and BitCast, repeats the reference's own arithmetic exactly), so every tolerance is 0.0.
//!
//! Graphs are built without constant folding (`one_op_nofold`) so that ops over constant
//! parameters (Range, ConstantOfShape, Shape, ...) reach the rules instead of being folded
//! by `specialize`.
mod common;

use common::*;
use ir::{Attr, DType, Tensor};
use proptest::prelude::*;

/// Exact: every layout rule is exact.
const EXACT: f64 = 0.0;

fn i64s(v: Vec<i64>) -> Tensor {
    Tensor::from_i64s(v)
}

/// A random tensor of `shape` and `dtype` (f32 values in [-10, 10] cast).
fn tensor_of(shape: Vec<usize>, dtype: DType) -> impl Strategy<Value = Tensor> {
    f32_tensor(shape, 10.0).prop_map(move |t| if dtype == DType::Bool { t.cast(DType::I64).cast(DType::Bool) } else { t.cast(dtype) })
}

fn any_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::I64), Just(DType::Bool), Just(DType::F16), Just(DType::I32)]
}

/// A shape of rank 1..=max_rank with dims 1..=max_dim.
fn shape_r(min_rank: usize, max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    (min_rank..=max_rank).prop_flat_map(move |r| shape(r, max_dim))
}

proptest! {
    #![proptest_config(config(64))]

    /// Reshape to the reversed dims, with a -1 and a copied 0: exact.
    #[test]
    fn reshape(x in shape_r(0, 4, 4).prop_flat_map(|s| f32_tensor(s, 10.0)), p in 0usize..6, z in 0usize..6) {
        let s = x.shape().to_vec();
        let mut target: Vec<i64> = s.iter().rev().map(|&d| d as i64).collect();
        if z < target.len() && target[z] == s[z] as i64 {
            target[z] = 0;
        }
        if p < target.len() && target[p] != 0 {
            target[p] = -1;
        }
        let (g, feeds) = one_op_unfolded("Reshape", 14, vec![], &[Arg::Input(x), Arg::Const(i64s(target))], 1);
        check_rule("layout/reshape", &g, feeds, EXACT)?;
    }

    /// Flatten at any axis in [-r, r]: exact.
    #[test]
    fn flatten(x in shape_r(1, 4, 3).prop_flat_map(|s| f32_tensor(s, 10.0)), a in 0usize..9) {
        let r = x.rank() as i64;
        let axis = a as i64 % (2 * r + 1) - r;
        let (g, feeds) = one_op_unfolded("Flatten", 13, vec![("axis", Attr::Int(axis))], &[Arg::Input(x)], 1);
        check_rule("layout/reshape", &g, feeds, EXACT)?;
    }

    /// Squeeze of some unit axes (negative too), by attribute (opset 11), by input
    /// (opset 13) or all of them: exact.
    #[test]
    fn squeeze(s in proptest::collection::vec(1usize..3, 1..5), pick in proptest::collection::vec(any::<bool>(), 5), form in 0usize..3) {
        let x = Tensor::from_vec(s.clone(), (0..s.iter().product::<usize>()).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
        let r = s.len() as i64;
        let axes: Vec<i64> = (0..s.len()).filter(|&d| s[d] == 1 && pick[d]).map(|d| if d % 2 == 0 { d as i64 } else { d as i64 - r }).collect();
        let (g, feeds) = match form {
            0 => one_op_unfolded("Squeeze", 11, vec![("axes", ints(&axes))], &[Arg::Input(x)], 1),
            1 if !axes.is_empty() => one_op_unfolded("Squeeze", 13, vec![], &[Arg::Input(x), Arg::Const(i64s(axes))], 1),
            _ => one_op_unfolded("Squeeze", 13, vec![], &[Arg::Input(x)], 1),
        };
        check_rule("layout/reshape", &g, feeds, EXACT)?;
    }

    /// Unsqueeze at random new axes (negative too), by attribute or input: exact.
    #[test]
    fn unsqueeze(x in shape_r(0, 3, 3).prop_flat_map(|s| f32_tensor(s, 10.0)), k in 1usize..3, seed in any::<u64>(), v13 in any::<bool>()) {
        let rank = x.rank() + k;
        let mut axes: Vec<i64> = Vec::new();
        let mut h = seed;
        while axes.len() < k {
            let a = (h % rank as u64) as i64;
            h = h / 7 + 3;
            let a = if h % 2 == 0 { a } else { a - rank as i64 };
            let norm = if a < 0 { a + rank as i64 } else { a };
            if !axes.iter().any(|&b| (if b < 0 { b + rank as i64 } else { b }) == norm) {
                axes.push(a);
            } else {
                h = h.wrapping_mul(31).wrapping_add(17);
            }
        }
        let (g, feeds) = if v13 {
            one_op_unfolded("Unsqueeze", 13, vec![], &[Arg::Input(x), Arg::Const(i64s(axes))], 1)
        } else {
            one_op_unfolded("Unsqueeze", 11, vec![("axes", ints(&axes))], &[Arg::Input(x)], 1)
        };
        check_rule("layout/reshape", &g, feeds, EXACT)?;
    }

    /// Transpose by a random permutation or the default reversal: exact.
    #[test]
    fn transpose(
        (x, perm) in shape_r(1, 4, 4).prop_flat_map(|s| {
            let r = s.len();
            (f32_tensor(s, 10.0), Just((0..r as i64).collect::<Vec<_>>()).prop_shuffle())
        }),
        default in any::<bool>(),
    ) {
        let attrs = if default { vec![] } else { vec![("perm", ints(&perm))] };
        let (g, feeds) = one_op_unfolded("Transpose", 13, attrs, &[Arg::Input(x)], 1);
        check_rule("layout/transpose", &g, feeds, EXACT)?;
    }

    /// Expand to a broadcast-compatible shape (of higher rank, with 1s either side): exact.
    #[test]
    fn expand(out in shape_r(0, 4, 3), keep in proptest::collection::vec(any::<bool>(), 4), drop in 0usize..3, ones in proptest::collection::vec(any::<bool>(), 4)) {
        let lead = drop.min(out.len());
        let xs: Vec<usize> = out[lead..].iter().zip(&keep).map(|(&d, &k)| if k { d } else { 1 }).collect();
        let target: Vec<i64> = out.iter().enumerate().map(|(i, &d)| {
            let in_dim = if i >= lead { xs[i - lead] } else { 1 };
            if ones[i] && in_dim == d { 1 } else { d as i64 }
        }).collect();
        let x = Tensor::from_vec(xs.clone(), (0..xs.iter().product::<usize>()).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
        let (g, feeds) = one_op_unfolded("Expand", 13, vec![], &[Arg::Input(x), Arg::Const(i64s(target))], 1);
        check_rule("layout/expand", &g, feeds, EXACT)?;
    }

    /// Concat of 1-4 inputs (empty ones too) of several dtypes along any axis: exact.
    #[test]
    fn concat(
        (xs, axis) in (shape_r(1, 3, 3), 1usize..5, any_dtype()).prop_flat_map(|(s, k, d)| {
            let r = s.len();
            (0..r).prop_flat_map(move |axis| {
                let s = s.clone();
                let parts: Vec<_> = (0..k).map(|_| {
                    let s = s.clone();
                    (0usize..4).prop_flat_map(move |e| {
                        let mut s = s.clone();
                        s[axis] = e;
                        tensor_of(s, d)
                    })
                }).collect();
                (parts, Just(axis))
            })
        }),
        neg in any::<bool>(),
    ) {
        let r = xs[0].rank() as i64;
        let a = if neg { axis as i64 - r } else { axis as i64 };
        let args: Vec<Arg> = xs.into_iter().map(Arg::Input).collect();
        let (g, feeds) = one_op_unfolded("Concat", 13, vec![("axis", Attr::Int(a))], &args, 1);
        check_rule("layout/concat", &g, feeds, EXACT)?;
    }

    /// Split by sizes (attribute at opset 11, input at 13, zero sizes too), by
    /// num_outputs (opset 18, uneven last part) or into equal parts: exact.
    #[test]
    fn split(
        (x, axis, sizes) in shape_r(1, 3, 3).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r, proptest::collection::vec(0usize..3, 1..4))
        }).prop_flat_map(|(mut s, axis, sizes)| {
            s[axis] = sizes.iter().sum();
            (f32_tensor(s, 10.0), Just(axis), Just(sizes))
        }),
        form in 0usize..4,
    ) {
        let k = sizes.len();
        let split: Vec<i64> = sizes.iter().map(|&n| n as i64).collect();
        let dim = x.shape()[axis];
        let ax = ("axis", Attr::Int(axis as i64));
        let (g, feeds) = match form {
            0 => one_op_unfolded("Split", 11, vec![ax, ("split", ints(&split))], &[Arg::Input(x)], k),
            1 => one_op_unfolded("Split", 13, vec![ax], &[Arg::Input(x), Arg::Const(i64s(split))], k),
            2 if dim >= k && dim.div_ceil(k) * (k - 1) < dim => {
                one_op_unfolded("Split", 18, vec![ax, ("num_outputs", Attr::Int(k as i64))], &[Arg::Input(x)], k)
            }
            _ if dim % k == 0 => one_op_unfolded("Split", 13, vec![ax], &[Arg::Input(x)], k),
            _ => one_op_unfolded("Split", 13, vec![ax], &[Arg::Input(x), Arg::Const(i64s(split))], k),
        };
        check_rule("layout/split", &g, feeds, EXACT)?;
    }

    /// Slice with clamped, negative and extreme starts/ends, negative steps, axes in any
    /// order (negative too), as inputs (opset 13) or attributes (opset 9): exact.
    #[test]
    fn slice(
        (x, specs) in shape_r(1, 3, 5).prop_flat_map(|s| {
            let r = s.len();
            let spec = (
                prop_oneof![4 => -7i64..7, 1 => Just(i64::MAX), 1 => Just(i64::MIN)],
                prop_oneof![4 => -7i64..7, 1 => Just(i64::MAX), 1 => Just(i64::MIN)],
                prop_oneof![Just(1i64), Just(2), Just(3), Just(-1), Just(-2)],
            );
            (f32_tensor(s, 10.0), proptest::collection::vec(spec, r))
        }),
        order in any::<u64>(),
        n_axes in 1usize..4,
        form in 0usize..3,
    ) {
        let r = x.rank();
        let n = n_axes.min(r);
        let mut axes: Vec<i64> = (0..r as i64).collect();
        axes.rotate_left((order % r as u64) as usize);
        axes.truncate(n);
        let axes: Vec<i64> = axes.iter().enumerate().map(|(i, &a)| if (order >> i) & 1 == 1 { a - r as i64 } else { a }).collect();
        let starts: Vec<i64> = specs[..n].iter().map(|s| s.0).collect();
        let ends: Vec<i64> = specs[..n].iter().map(|s| s.1).collect();
        let steps: Vec<i64> = specs[..n].iter().map(|s| s.2).collect();
        let (g, feeds) = match form {
            0 => one_op_unfolded("Slice", 9, vec![("starts", ints(&starts)), ("ends", ints(&ends)), ("axes", ints(&axes))], &[Arg::Input(x)], 1),
            1 => one_op_unfolded(
                "Slice", 13, vec![],
                &[Arg::Input(x), Arg::Const(i64s(starts)), Arg::Const(i64s(ends)), Arg::Const(i64s(axes)), Arg::Const(i64s(steps))], 1),
            _ => one_op_unfolded("Slice", 13, vec![], &[Arg::Input(x), Arg::Const(i64s(starts)), Arg::Const(i64s(ends))], 1),
        };
        check_rule("layout/slice", &g, feeds, EXACT)?;
    }

    /// Constant Pad (crops too): value as attribute (opset 2), constant input, runtime
    /// input, omitted, or an f64 value an f32 cannot hold; axes input at opset 18: exact.
    #[test]
    fn pad_constant(
        (x, pads) in shape_r(1, 3, 4).prop_flat_map(|s| {
            let r = s.len();
            (f32_tensor(s, 10.0), proptest::collection::vec((-2i64..3, -2i64..3), r))
        }),
        v in -5f32..5.0,
        form in 0usize..6,
    ) {
        let s = x.shape().to_vec();
        // Keep at least nothing negative: crop no more than the axis holds.
        let pads: Vec<(i64, i64)> = pads.iter().zip(&s).map(|(&(b, e), &n)| {
            let n = n as i64;
            let b = b.max(-n);
            (b, e.max(-(n + b.min(0))))
        }).collect();
        let mut flat: Vec<i64> = pads.iter().map(|p| p.0).collect();
        flat.extend(pads.iter().map(|p| p.1));
        let (g, feeds) = match form {
            0 => one_op_unfolded("Pad", 2, vec![("pads", ints(&flat)), ("value", Attr::Float(v))], &[Arg::Input(x)], 1),
            1 => one_op_unfolded("Pad", 13, vec![], &[Arg::Input(x), Arg::Const(i64s(flat)), Arg::Const(Tensor::scalar(v))], 1),
            2 => one_op_unfolded("Pad", 13, vec![], &[Arg::Input(x), Arg::Const(i64s(flat)), Arg::Input(Tensor::scalar(v))], 1),
            3 => one_op_unfolded("Pad", 13, vec![], &[Arg::Input(x), Arg::Const(i64s(flat))], 1),
            4 => {
                let x = x.cast(DType::F64);
                let value = Tensor::scalar(v as f64 + 0.1);
                one_op_unfolded("Pad", 13, vec![], &[Arg::Input(x), Arg::Const(i64s(flat)), Arg::Const(value)], 1)
            }
            _ => {
                // Only the last axis, named negatively.
                let last = pads[pads.len() - 1];
                one_op_unfolded("Pad", 18, vec![], &[
                    Arg::Input(x), Arg::Const(i64s(vec![last.0, last.1])), Arg::Const(Tensor::scalar(v)), Arg::Const(i64s(vec![-1])),
                ], 1)
            }
        };
        check_rule("layout/pad-constant", &g, feeds, EXACT)?;
    }

    /// Reflect/edge/wrap Pad with pads up to twice the extent (and crops): exact.
    #[test]
    fn pad_mirror(
        (x, pads) in shape_r(1, 3, 4).prop_flat_map(|s| {
            let r = s.len();
            (f32_tensor(s, 10.0), proptest::collection::vec((-1i64..5, -1i64..5), r))
        }),
        mode in prop_oneof![Just("reflect"), Just("edge"), Just("wrap")],
        v18 in any::<bool>(),
    ) {
        let s = x.shape().to_vec();
        let pads: Vec<(i64, i64)> = pads.iter().zip(&s).map(|(&(b, e), &n)| {
            let n = n as i64;
            let b = b.max(-(n - 1));
            (b, e.max(-(n - 1 + b.min(0))))
        }).collect();
        let mut flat: Vec<i64> = pads.iter().map(|p| p.0).collect();
        flat.extend(pads.iter().map(|p| p.1));
        let mode = ("mode", Attr::String(mode.into()));
        let (g, feeds) = if v18 {
            one_op_unfolded("Pad", 18, vec![mode], &[Arg::Input(x), Arg::Const(i64s(flat))], 1)
        } else {
            one_op_unfolded("Pad", 2, vec![mode, ("pads", ints(&flat))], &[Arg::Input(x)], 1)
        };
        check_rule("layout/pad-mirror", &g, feeds, EXACT)?;
    }

    /// Tile with repeats 0..3: exact.
    #[test]
    fn tile((x, reps) in shape_r(1, 3, 3).prop_flat_map(|s| { let r = s.len(); (f32_tensor(s, 10.0), proptest::collection::vec(0i64..4, r)) })) {
        let (g, feeds) = one_op_unfolded("Tile", 13, vec![], &[Arg::Input(x), Arg::Const(i64s(reps))], 1);
        check_rule("layout/tile", &g, feeds, EXACT)?;
    }

    /// Shape with start/end (negative, out of range, crossing), and Size: exact.
    #[test]
    fn shape_and_size(x in shape_r(0, 4, 3).prop_flat_map(|s| f32_tensor(s, 10.0)), start in -6i64..6, end in -6i64..6, form in 0usize..4) {
        let (g, feeds) = match form {
            0 => one_op_unfolded("Shape", 15, vec![("start", Attr::Int(start)), ("end", Attr::Int(end))], &[Arg::Input(x)], 1),
            1 => one_op_unfolded("Shape", 15, vec![("start", Attr::Int(start))], &[Arg::Input(x)], 1),
            2 => one_op_unfolded("Shape", 13, vec![], &[Arg::Input(x)], 1),
            _ => one_op_unfolded("Size", 13, vec![], &[Arg::Input(x)], 1),
        };
        check_rule("layout/shape", &g, feeds, EXACT)?;
    }

    /// ConstantOfShape of a shape (empty dims too) with an f32, i64, bool or default value: exact.
    #[test]
    fn constant_of_shape(dims in proptest::collection::vec(0i64..4, 0..4), v in -100i64..100, kind in 0usize..4) {
        let attrs = match kind {
            0 => vec![],
            1 => vec![("value", Attr::Tensor(Tensor::from_vec(vec![1], vec![v as f32 / 3.0]).unwrap()))],
            2 => vec![("value", Attr::Tensor(Tensor::from_vec(vec![1], vec![v * 1_000_000_007]).unwrap()))],
            _ => vec![("value", Attr::Tensor(Tensor::from_vec(vec![1], vec![v > 0]).unwrap()))],
        };
        let (g, feeds) = one_op_unfolded("ConstantOfShape", 20, attrs, &[Arg::Const(i64s(dims))], 1);
        check_rule("layout/constant-of-shape", &g, feeds, EXACT)?;
    }

    /// Range over i32/i64/f32/f64/f16 (f16 also with stash_type 1) with either sign of
    /// delta: exact (the same arithmetic as the reference).
    #[test]
    fn range(start in -20i32..20, len in -2i32..12, delta in prop_oneof![-3i32..0, 1i32..4], frac in 0u8..4, kind in 0usize..6) {
        let limit = start + len * delta;
        let f = |v: i32| v as f64 + frac as f64 * 0.37;
        let t = |v: f64, d: DType| Tensor::scalar(v).cast(d);
        let (dtype, version, attrs) = match kind {
            0 => (DType::I32, 11, vec![]),
            1 => (DType::I64, 11, vec![]),
            2 => (DType::F32, 11, vec![]),
            3 => (DType::F64, 11, vec![]),
            4 => (DType::F16, 11, vec![]),
            _ => (DType::F16, 11, vec![("stash_type", Attr::Int(1))]),
        };
        let (s, l, d) = if dtype.is_float() { (f(start), f(limit), delta as f64 * (1.0 + frac as f64 * 0.1)) } else { (start as f64, limit as f64, delta as f64) };
        let args = [Arg::Const(t(s, dtype)), Arg::Const(t(l, dtype)), Arg::Const(t(d, dtype))];
        let (g, feeds) = one_op_unfolded("Range", version, attrs, &args, 1);
        check_rule("layout/range", &g, feeds, EXACT)?;
    }

    /// EyeLike with offset k and an optional dtype: exact.
    #[test]
    fn eye_like(s in shape(2, 5), k in -5i64..6, dtype in prop_oneof![Just(None), Just(Some(1i64)), Just(Some(7)), Just(Some(9)), Just(Some(11))]) {
        let x = Tensor::from_vec(s.clone(), vec![1i32; s.iter().product()]).unwrap();
        let mut attrs = vec![("k", Attr::Int(k))];
        if let Some(d) = dtype {
            attrs.push(("dtype", Attr::Int(d)));
        }
        let (g, feeds) = one_op_unfolded("EyeLike", 9, attrs, &[Arg::Input(x)], 1);
        check_rule("layout/eye-like", &g, feeds, EXACT)?;
    }

    /// Trilu upper/lower with k omitted, constant or a runtime input, f32 or i64: exact.
    #[test]
    fn trilu(x in shape_r(2, 4, 5).prop_flat_map(|s| f32_tensor(s, 10.0)), k in -6i64..7, upper in 0i64..2, form in 0usize..3, int in any::<bool>()) {
        let x = if int { x.cast(DType::I64) } else { x };
        let attrs = vec![("upper", Attr::Int(upper))];
        let (g, feeds) = match form {
            0 => one_op_unfolded("Trilu", 14, attrs, &[Arg::Input(x)], 1),
            1 => one_op_unfolded("Trilu", 14, attrs, &[Arg::Input(x), Arg::Const(Tensor::scalar(k))], 1),
            _ => one_op_unfolded("Trilu", 14, attrs, &[Arg::Input(x), Arg::Input(Tensor::scalar(k))], 1),
        };
        check_rule("layout/trilu", &g, feeds, EXACT)?;
    }

    /// DepthToSpace in DCR and CRD modes: exact.
    #[test]
    fn depth_to_space((n, cb, h, w) in (1usize..3, 1usize..3, 1usize..3, 1usize..3), b in 1usize..4, crd in any::<bool>()) {
        let s = vec![n, cb * b * b, h, w];
        let x = Tensor::from_vec(s.clone(), (0..s.iter().product::<usize>()).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
        let mut attrs = vec![("blocksize", Attr::Int(b as i64))];
        if crd {
            attrs.push(("mode", Attr::String("CRD".into())));
        }
        let (g, feeds) = one_op_unfolded("DepthToSpace", 13, attrs, &[Arg::Input(x)], 1);
        check_rule("layout/depth-to-space", &g, feeds, EXACT)?;
    }

    /// SpaceToDepth: exact.
    #[test]
    fn space_to_depth((n, c, h, w) in (1usize..3, 1usize..3, 1usize..3, 1usize..3), b in 1usize..4) {
        let s = vec![n, c, h * b, w * b];
        let x = Tensor::from_vec(s.clone(), (0..s.iter().product::<usize>()).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
        let (g, feeds) = one_op_unfolded("SpaceToDepth", 13, vec![("blocksize", Attr::Int(b as i64))], &[Arg::Input(x)], 1);
        check_rule("layout/space-to-depth", &g, feeds, EXACT)?;
    }

    /// CenterCropPad to smaller and larger extents, on all axes or some (negative): exact.
    #[test]
    fn center_crop_pad((x, target) in shape_r(1, 3, 5).prop_flat_map(|s| { let r = s.len(); (f32_tensor(s, 10.0), proptest::collection::vec(1i64..8, r)) }), some in any::<bool>()) {
        let r = x.rank();
        let (g, feeds) = if some && r > 1 {
            one_op_unfolded("CenterCropPad", 18, vec![("axes", ints(&[-1, 0]))], &[Arg::Input(x), Arg::Const(i64s(vec![target[r - 1], target[0]]))], 1)
        } else {
            one_op_unfolded("CenterCropPad", 18, vec![], &[Arg::Input(x), Arg::Const(i64s(target))], 1)
        };
        check_rule("layout/center-crop-pad", &g, feeds, EXACT)?;
    }

    /// ReverseSequence with batch/time axes either way, lengths constant or runtime: exact.
    #[test]
    fn reverse_sequence(
        (x, lens) in shape_r(2, 4, 4).prop_flat_map(|s| {
            let (t, b) = (s[0], s[1]);
            (f32_tensor(s, 10.0), proptest::collection::vec(0..=t as i64, b))
        }),
        batch_first in any::<bool>(),
        runtime in any::<bool>(),
    ) {
        // lens index the axis called batch; with batch_axis 0 the dims swap roles.
        let s = x.shape().to_vec();
        let (x, lens) = if batch_first {
            let lens: Vec<i64> = (0..s[0]).map(|i| (i as i64 * 7 + lens.len() as i64) % (s[1] as i64 + 1)).collect();
            (x, lens)
        } else {
            (x, lens)
        };
        let attrs = if batch_first { vec![("batch_axis", Attr::Int(0)), ("time_axis", Attr::Int(1))] } else { vec![] };
        let l = i64s(lens);
        let (g, feeds) = one_op_unfolded("ReverseSequence", 10, attrs, &[Arg::Input(x), if runtime { Arg::Input(l) } else { Arg::Const(l) }], 1);
        check_rule("layout/reverse-sequence", &g, feeds, EXACT)?;
    }

    /// OneHot of int or float indices (negative and out of range too) at any axis, with
    /// f32 or i64 values: exact.
    #[test]
    fn one_hot(
        (idx, depth) in (shape_r(0, 3, 3), 1i64..5).prop_flat_map(|(s, d)| (i64_tensor(s, -d - 1, d + 1), Just(d))),
        a in 0usize..5,
        float_idx in any::<bool>(),
        int_values in any::<bool>(),
    ) {
        let r = idx.rank() as i64;
        let axis = a as i64 % (2 * r + 2) - (r + 1);
        let idx = if float_idx { idx.cast(DType::F32) } else { idx };
        let values = if int_values { i64s(vec![3, -7]) } else { Tensor::from_vec(vec![2], vec![0.5f32, 2.0]).unwrap() };
        let (g, feeds) = one_op_unfolded("OneHot", 11, vec![("axis", Attr::Int(axis))], &[Arg::Input(idx), Arg::Const(Tensor::scalar(depth)), Arg::Input(values)], 1);
        check_rule("layout/one-hot", &g, feeds, EXACT)?;
    }

    /// BitCast between ints of one width, bool and u8, and floats (f32, f64, f16, bf16,
    /// subnormals, zeros of both signs and infinities included) and their bit patterns;
    /// NaN inputs to float->int are excluded (payloads are not reproduced): exact.
    #[test]
    fn bitcast(bits in proptest::collection::vec(any::<u64>(), 1..24), kind in 0usize..10) {
        let n = bits.len();
        // Zeros of both signs, subnormals, infinities and random patterns (`w` bits wide).
        let pick = |i: usize, b: u64, w: u32| {
            let sign = 1u64 << (w - 1);
            let inf = if w == 32 { 0x7f80_0000 } else { 0x7ff0_0000_0000_0000 };
            match i % 7 { 0 => (b & 1) * sign, 1 => b & 0xff, 2 => (b & sign) | inf, 3 => (b & 0xffff) | sign, _ => b & (sign | (sign - 1)) }
        };
        let (x, to) = match kind {
            0 => (Tensor::from_vec(vec![n], bits.iter().map(|&b| b as i32).collect::<Vec<_>>()).unwrap(), 1i64),
            1 => {
                let v: Vec<f32> = bits.iter().enumerate().map(|(i, &b)| f32::from_bits(pick(i, b, 32) as u32)).map(|f| if f.is_nan() { 1.5 } else { f }).collect();
                (Tensor::from_vec(vec![n], v).unwrap(), 6)
            }
            2 => (Tensor::from_vec(vec![n], bits.iter().map(|&b| b as i64).collect::<Vec<_>>()).unwrap(), 11),
            3 => {
                let v: Vec<f64> = bits.iter().enumerate().map(|(i, &b)| f64::from_bits(pick(i, b, 64))).map(|f| if f.is_nan() { -2.5 } else { f }).collect();
                (Tensor::from_vec(vec![n], v).unwrap(), 7)
            }
            4 => (Tensor::from_vec(vec![n], bits.iter().map(|&b| b as u32).collect::<Vec<_>>()).unwrap(), 1),
            5 => (Tensor::from_vec(vec![n], bits.iter().map(|&b| b as u16).collect::<Vec<_>>()).unwrap(), 10),
            6 => (Tensor::from_vec(vec![n], bits.iter().map(|&b| b as i16).collect::<Vec<_>>()).unwrap(), 16),
            7 => {
                // f16 values of every magnitude (subnormals, infinities) from f32 bit patterns.
                let v: Vec<f32> = bits
                    .iter()
                    .map(|&b| {
                        let sign = if b >> 63 == 1 { -1.0 } else { 1.0 };
                        sign * (1.0 + ((b >> 8) & 0xffff) as f32 / 65536.0) * 2f32.powi((b % 50) as i32 - 30)
                    })
                    .collect();
                (Tensor::from_vec(vec![n], v).unwrap().cast(DType::F16), 4)
            }
            8 => (Tensor::from_vec(vec![n], bits.iter().map(|&b| b & 1 == 1).collect::<Vec<_>>()).unwrap(), 2),
            _ => (Tensor::from_vec(vec![n], bits.iter().map(|&b| b as i8).collect::<Vec<_>>()).unwrap(), 2),
        };
        let (g, feeds) = one_op_unfolded("BitCast", 26, vec![("to", Attr::Int(to))], &[Arg::Input(x)], 1);
        check_rule("layout/bitcast", &g, feeds, EXACT)?;
    }
}
