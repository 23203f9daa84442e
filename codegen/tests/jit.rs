//! JIT kernels built by hand, compared with hand-computed reference values.

use codegen::{Error, JitKernel};
use ir::atom::{BinaryFn, ReduceFn, UnaryFn};
use ir::dtype::DType;
use ir::kernel::{Affine, Body, Buffer, Expr, KGuard, Kernel};

type R = Result<(), Box<dyn std::error::Error>>;
type F32Fn = fn(f32) -> f32;

fn buf(name: &str, dtype: DType, numel: usize) -> Buffer {
    Buffer {
        name: name.into(),
        dtype,
        numel,
    }
}

fn aff(offset: i64, coefs: &[i64]) -> Affine {
    Affine {
        offset,
        coefs: coefs.to_vec(),
    }
}

fn load(buf: usize, index: Affine) -> Expr {
    Expr::Load {
        buf,
        index,
        guards: vec![],
        pad: 0.0,
    }
}

fn bin(f: BinaryFn, a: Expr, b: Expr) -> Expr {
    Expr::Binary(f, Box::new(a), Box::new(b))
}

fn un(f: UnaryFn, a: Expr) -> Expr {
    Expr::Unary(f, Box::new(a))
}

fn cst(value: f64, dtype: DType) -> Expr {
    Expr::Const { value, dtype }
}

/// An elementwise kernel: `out[row-major o] = e(o)`.
fn elementwise(name: &str, inputs: Vec<Buffer>, out: DType, shape: &[usize], e: Expr) -> Kernel {
    let numel = shape.iter().product();
    Kernel {
        name: name.into(),
        inputs,
        output: buf("out", out, numel),
        out_shape: shape.to_vec(),
        red_shape: vec![],
        store: aff(0, &row_major(shape)),
        body: Body::Compute {
            reduce: None,
            body: e,
            epilogue: Expr::Acc,
        },
    }
}

fn row_major(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![0i64; shape.len()];
    let mut acc = 1i64;
    for (d, &n) in s.iter_mut().zip(shape).rev() {
        *d = acc;
        acc *= n as i64;
    }
    s
}

fn f32b(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}
fn i64b(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}
fn to_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
fn to_i64(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}
fn to_i32(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Compiles `k` with the heuristic schedule for Cranelift on this host.
fn compile(k: &Kernel) -> Result<JitKernel, Error> {
    let t = targets::Target::host().with_vector_bits(128);
    JitKernel::compile(k, &search::default_schedule(k, &t))
}

/// The largest error of the polynomial math (`vmath.rs`: at most 3.42 ulp, tan).
const POLY_ULPS: u32 = 4;

/// Whether `k` computes a function the backend evaluates by polynomial (a few ulp from the
/// reference instead of bit-exact).
fn uses_polynomial(k: &Kernel) -> bool {
    fn walk(e: &Expr) -> bool {
        match e {
            Expr::Unary(f, x) => codegen::cranelift::is_polynomial(*f) || walk(x),
            Expr::Binary(_, a, b) => walk(a) || walk(b),
            Expr::Select(c, a, b) => walk(c) || walk(a) || walk(b),
            Expr::Cast(_, x) => walk(x),
            Expr::Gather { pos, .. } => walk(pos),
            Expr::Load { .. } | Expr::Const { .. } | Expr::Axis(_) | Expr::Acc => false,
        }
    }
    match &k.body {
        Body::Compute { body, epilogue, .. } => walk(body) || walk(epilogue),
        Body::Scatter { pos, value, .. } => walk(pos) || walk(value),
    }
}

/// `a` and `b` are both NaN, equal (infinities, signed zeros), or at most `n` units in the
/// last place apart.
fn within_ulps(a: f32, b: f32, n: u32) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() {
        return false;
    }
    // Map the floats onto a line of integers where adjacent floats differ by 1.
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 { i64::from(i32::MIN) - i64::from(i) } else { i64::from(i) }
    };
    (key(a) - key(b)).unsigned_abs() <= u64::from(n)
}

/// Compiles and runs `k`, and checks the result against the reference `Kernel::eval`: the
/// same bytes (NaNs compare equal), or both fail. A kernel that accumulates with FMA
/// rounds once per step where the reference rounds twice: it is compared within 1e-5
/// relative (of the largest magnitude) instead; one that computes exp, log, tanh, erf,
/// sin, cos, tan, atan, sinh or cosh (polynomials) within [`POLY_ULPS`] per element.
fn run(k: &Kernel, inputs: &[&[u8]]) -> Result<Vec<u8>, Error> {
    let j = compile(k)?;
    let mut out = vec![0u8; k.output.numel * k.output.dtype.size()];
    let got = j.run(inputs, &mut out);
    let tensors: Vec<ir::tensor::Tensor> = k
        .inputs
        .iter()
        .zip(inputs)
        .map(|(b, d)| from_bytes(b.dtype, d))
        .collect();
    let refs: Vec<&ir::tensor::Tensor> = tensors.iter().collect();
    let want = k.eval(&refs);
    match (&got, want) {
        (Ok(()), Ok(t)) => {
            let wb = tensor_bytes(&t).unwrap_or_default();
            if k.output.dtype == DType::F32 && j.uses_fma() {
                let (g, w) = (to_f32(&out), to_f32(&wb));
                let scale = w.iter().fold(1f32, |m, x| m.max(x.abs()));
                assert!(
                    g.iter()
                        .zip(&w)
                        .all(|(a, b)| (a - b).abs() <= 1e-5 * scale || (a.is_nan() && b.is_nan())),
                    "'{}': JIT {g:?} vs eval {w:?}",
                    k.name
                );
            } else if k.output.dtype == DType::F32 && uses_polynomial(k) {
                let (g, w) = (to_f32(&out), to_f32(&wb));
                assert!(
                    g.len() == w.len() && g.iter().zip(&w).all(|(&a, &b)| within_ulps(a, b, POLY_ULPS)),
                    "'{}': JIT {g:?} vs eval {w:?}",
                    k.name
                );
            } else if k.output.dtype == DType::F32 {
                assert!(
                    same_f32(&to_f32(&out), &to_f32(&wb)),
                    "'{}': JIT {:?} vs eval {:?}",
                    k.name,
                    to_f32(&out),
                    to_f32(&wb)
                );
            } else {
                assert_eq!(out, wb, "'{}': JIT vs eval", k.name);
            }
        }
        (Err(_), Err(_)) => {}
        (g, w) => panic!("'{}': JIT {g:?} but eval {w:?}", k.name),
    }
    got.map(|()| out)
}

fn from_bytes(d: DType, b: &[u8]) -> ir::tensor::Tensor {
    let n = b.len() / d.size().max(1);
    let t = match d {
        DType::F32 => ir::tensor::Tensor::from_vec(vec![n], to_f32(b)),
        DType::I64 => ir::tensor::Tensor::from_vec(vec![n], to_i64(b)),
        DType::I32 => ir::tensor::Tensor::from_vec(vec![n], to_i32(b)),
        _ => {
            ir::tensor::Tensor::from_vec(vec![n], b.iter().map(|&x| x != 0).collect::<Vec<bool>>())
        }
    };
    t.unwrap_or_else(|e| panic!("tensor: {e}"))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn add_with_broadcast_load() -> R {
    // out[i, j] = a[i, j] + b[j], a: [2, 3], b: [3].
    let e = bin(
        BinaryFn::Add,
        load(0, aff(0, &[3, 1])),
        load(1, aff(0, &[0, 1])),
    );
    let k = elementwise(
        "add",
        vec![buf("a", DType::F32, 6), buf("b", DType::F32, 3)],
        DType::F32,
        &[2, 3],
        e,
    );
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [10.0, 20.0, 30.0];
    let out = to_f32(&run(&k, &[&f32b(&a), &f32b(&b)])?);
    assert_eq!(out, vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    Ok(())
}

#[test]
fn relu_is_max_with_zero_and_keeps_nan_and_negative_zero() -> R {
    let e = bin(BinaryFn::Max, load(0, aff(0, &[1])), cst(0.0, DType::F32));
    let k = elementwise("relu", vec![buf("x", DType::F32, 5)], DType::F32, &[5], e);
    let x = [-1.5, 2.0, f32::NAN, -0.0, 0.25];
    let out = to_f32(&run(&k, &[&f32b(&x)])?);
    // The reference: `a.is_nan() || (!b.is_nan() && a >= b) ? a : b`.
    let want: Vec<f32> = x
        .iter()
        .map(|&a| if a.is_nan() || a >= 0.0 { a } else { 0.0 })
        .collect();
    assert_eq!(bits(&out), bits(&want));
    Ok(())
}

#[test]
fn padded_window_load_with_two_guards() -> R {
    // x: [2, 2] padded by one on every side to [4, 4] with -1.
    let e = Expr::Load {
        buf: 0,
        index: aff(-3, &[2, 1]),
        guards: vec![
            KGuard {
                expr: aff(-1, &[1, 0]),
                bound: 2,
            },
            KGuard {
                expr: aff(-1, &[0, 1]),
                bound: 2,
            },
        ],
        pad: -1.0,
    };
    let k = elementwise("pad", vec![buf("x", DType::F32, 4)], DType::F32, &[4, 4], e);
    let out = to_f32(&run(&k, &[&f32b(&[1.0, 2.0, 3.0, 4.0])])?);
    #[rustfmt::skip]
    let want = vec![
        -1.0, -1.0, -1.0, -1.0,
        -1.0, 1.0, 2.0, -1.0,
        -1.0, 3.0, 4.0, -1.0,
        -1.0, -1.0, -1.0, -1.0,
    ];
    assert_eq!(out, want);
    Ok(())
}

fn matmul(m: usize, k: usize, n: usize) -> Kernel {
    let body = bin(
        BinaryFn::Mul,
        load(0, aff(0, &[k as i64, 0, 1])),
        load(1, aff(0, &[0, 1, n as i64])),
    );
    Kernel {
        name: "matmul".into(),
        inputs: vec![buf("a", DType::F32, m * k), buf("b", DType::F32, k * n)],
        output: buf("c", DType::F32, m * n),
        out_shape: vec![m, n],
        red_shape: vec![k],
        store: aff(0, &[n as i64, 1]),
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body,
            epilogue: Expr::Acc,
        },
    }
}

#[test]
fn matmul_reduce_sum() -> R {
    let (m, kk, n) = (2, 3, 4);
    let a: Vec<f32> = (0..m * kk).map(|i| i as f32 * 0.5 - 1.0).collect();
    let b: Vec<f32> = (0..kk * n).map(|i| (i as f32).sin()).collect();
    let k = matmul(m, kk, n);
    let fma = compile(&k)?.uses_fma();
    let out = to_f32(&run(&k, &[&f32b(&a), &f32b(&b)])?);
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for p in 0..kk {
                s = if fma {
                    a[i * kk + p].mul_add(b[p * n + j], s)
                } else {
                    s + a[i * kk + p] * b[p * n + j]
                };
            }
            // With FMA, the same fused steps in the same order.
            assert_eq!(out[i * n + j].to_bits(), s.to_bits(), "at {i},{j}");
        }
    }
    Ok(())
}

#[test]
fn reduce_max_min_with_epilogue() -> R {
    // out[i] = max_j x[i, j] + 1 and min, with NaN propagating.
    let mk = |f| Kernel {
        name: "rmax".into(),
        inputs: vec![buf("x", DType::F32, 6)],
        output: buf("y", DType::F32, 2),
        out_shape: vec![2],
        red_shape: vec![3],
        store: aff(0, &[1]),
        body: Body::Compute {
            reduce: Some(f),
            body: load(0, aff(0, &[3, 1])),
            epilogue: bin(BinaryFn::Add, Expr::Acc, cst(1.0, DType::F32)),
        },
    };
    let x = f32b(&[1.0, 5.0, -2.0, 0.0, f32::NAN, 3.0]);
    let out = to_f32(&run(&mk(ReduceFn::Max), &[&x])?);
    assert_eq!(out[0], 6.0);
    assert!(out[1].is_nan());
    let out = to_f32(&run(&mk(ReduceFn::Min), &[&x])?);
    assert_eq!(out[0], -1.0);
    assert!(out[1].is_nan());
    Ok(())
}

#[test]
fn select_with_compare_and_axis() -> R {
    // out[i] = a[i] > b[i] ? a[i] : (i as f32)
    let e = Expr::Select(
        Box::new(bin(
            BinaryFn::Gt,
            load(0, aff(0, &[1])),
            load(1, aff(0, &[1])),
        )),
        Box::new(load(0, aff(0, &[1]))),
        Box::new(Expr::Cast(DType::F32, Box::new(Expr::Axis(0)))),
    );
    let k = elementwise(
        "sel",
        vec![buf("a", DType::F32, 4), buf("b", DType::F32, 4)],
        DType::F32,
        &[4],
        e,
    );
    let out = to_f32(&run(
        &k,
        &[
            &f32b(&[5.0, 1.0, f32::NAN, 9.0]),
            &f32b(&[1.0, 5.0, 0.0, 9.0]),
        ],
    )?);
    assert_eq!(out, vec![5.0, 1.0, 2.0, 3.0]);
    Ok(())
}

#[test]
fn casts_saturate_wrap_and_test_nonzero() -> R {
    let x = f32b(&[-2.7, 3.9, f32::NAN, 1e20, -1e20, 0.0, -0.0]);
    let xs = || load(0, aff(0, &[1]));
    let inputs = vec![buf("x", DType::F32, 7)];
    let to_i64 = elementwise(
        "f2i",
        inputs.clone(),
        DType::I64,
        &[7],
        Expr::Cast(DType::I64, Box::new(xs())),
    );
    assert_eq!(
        to_i64_vec(&run(&to_i64, &[&x])?),
        vec![-2, 3, 0, i64::MAX, i64::MIN, 0, 0]
    );
    let to_bool = elementwise(
        "f2b2f",
        inputs.clone(),
        DType::F32,
        &[7],
        Expr::Cast(
            DType::F32,
            Box::new(Expr::Cast(DType::Bool, Box::new(xs()))),
        ),
    );
    assert_eq!(
        to_f32(&run(&to_bool, &[&x])?),
        vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    );
    let k32 = elementwise(
        "f2i32",
        inputs,
        DType::I32,
        &[7],
        Expr::Cast(DType::I32, Box::new(xs())),
    );
    assert_eq!(
        to_i32(&run(&k32, &[&x])?),
        vec![-2, 3, 0, i32::MAX, i32::MIN, 0, 0]
    );
    // i64 -> i32 wraps, i64 -> f32 rounds once.
    let v = [1i64 << 40 | 5, -1, (1 << 53) + 1, i64::MAX];
    let ys = || load(0, aff(0, &[1]));
    let wrap = elementwise(
        "i2i32",
        vec![buf("v", DType::I64, 4)],
        DType::I32,
        &[4],
        Expr::Cast(DType::I32, Box::new(ys())),
    );
    assert_eq!(
        to_i32(&run(&wrap, &[&i64b(&v)])?),
        v.iter().map(|&x| x as i32).collect::<Vec<_>>()
    );
    let tof = elementwise(
        "i2f",
        vec![buf("v", DType::I64, 4)],
        DType::F32,
        &[4],
        Expr::Cast(DType::F32, Box::new(ys())),
    );
    assert_eq!(
        to_f32(&run(&tof, &[&i64b(&v)])?),
        v.iter().map(|&x| x as f32).collect::<Vec<_>>()
    );
    Ok(())
}

fn to_i64_vec(b: &[u8]) -> Vec<i64> {
    to_i64(b)
}

#[test]
fn integer_arithmetic_wraps_and_divides_like_the_reference() -> R {
    let a = [7i64, -7, 7, -7, i64::MIN, 5];
    let b = [2i64, 2, -2, -2, -1, 3];
    let ins = vec![buf("a", DType::I64, 6), buf("b", DType::I64, 6)];
    let mk = |f| {
        elementwise(
            "int",
            ins.clone(),
            DType::I64,
            &[6],
            bin(f, load(0, aff(0, &[1])), load(1, aff(0, &[1]))),
        )
    };
    let bytes = (i64b(&a), i64b(&b));
    let go = |f| -> Result<Vec<i64>, Error> { Ok(to_i64(&run(&mk(f), &[&bytes.0, &bytes.1])?)) };
    assert_eq!(go(BinaryFn::Div)?, vec![3, -3, -3, 3, i64::MIN, 1]);
    assert_eq!(go(BinaryFn::Fmod)?, vec![1, -1, 1, -1, 0, 2]);
    assert_eq!(go(BinaryFn::Mod)?, vec![1, 1, -1, -1, 0, 2]);
    assert_eq!(
        go(BinaryFn::Mul)?,
        a.iter()
            .zip(&b)
            .map(|(x, y)| x.wrapping_mul(*y))
            .collect::<Vec<_>>()
    );
    assert_eq!(go(BinaryFn::Max)?, vec![7, 2, 7, -2, -1, 5]);
    let neg = elementwise(
        "neg",
        ins[..1].to_vec(),
        DType::I64,
        &[6],
        un(UnaryFn::Neg, load(0, aff(0, &[1]))),
    );
    assert_eq!(
        to_i64(&run(&neg, &[&bytes.0])?),
        a.iter().map(|x| x.wrapping_neg()).collect::<Vec<_>>()
    );
    // A zero divisor is a run-time error naming the kernel.
    let zero = i64b(&[1, 1, 0, 1, 1, 1]);
    let err = compile(&mk(BinaryFn::Div))?.run(&[&bytes.0, &zero], &mut [0u8; 48]);
    match err {
        Err(e @ Error::Runtime { .. }) => assert!(
            e.to_string().contains("'int'") && e.to_string().contains("division by zero"),
            "{e}"
        ),
        other => panic!("expected a run-time error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn unary_math_matches_std() -> R {
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 0.37).collect();
    let cases: [(UnaryFn, F32Fn); 9] = [
        (UnaryFn::Exp, f32::exp),
        (UnaryFn::Log, f32::ln),
        (UnaryFn::Tanh, f32::tanh),
        (UnaryFn::Sqrt, f32::sqrt),
        (UnaryFn::Recip, f32::recip),
        (UnaryFn::Floor, f32::floor),
        (UnaryFn::Ceil, f32::ceil),
        (UnaryFn::Abs, f32::abs),
        (UnaryFn::Erf, libm::erff),
    ];
    for (f, r) in cases {
        let k = elementwise(
            "u",
            vec![buf("x", DType::F32, 64)],
            DType::F32,
            &[64],
            un(f, load(0, aff(0, &[1]))),
        );
        let out = to_f32(&run(&k, &[&f32b(&x)])?);
        let want: Vec<f32> = x.iter().map(|&v| r(v)).collect();
        if uses_polynomial(&k) {
            let close = out.iter().zip(&want).all(|(&a, &b)| within_ulps(a, b, POLY_ULPS));
            assert!(close, "{}: {out:?} vs {want:?}", f.name());
        } else {
            assert_eq!(bits(&out), bits(&want), "{}", f.name());
        }
    }
    // Sigmoid as the decomposition builds it: 1 / (1 + exp(-x)).
    let sig = bin(
        BinaryFn::Div,
        cst(1.0, DType::F32),
        bin(
            BinaryFn::Add,
            cst(1.0, DType::F32),
            un(UnaryFn::Exp, un(UnaryFn::Neg, load(0, aff(0, &[1])))),
        ),
    );
    let k = elementwise(
        "sigmoid",
        vec![buf("x", DType::F32, 64)],
        DType::F32,
        &[64],
        sig,
    );
    let out = to_f32(&run(&k, &[&f32b(&x)])?);
    let want: Vec<f32> = x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
    // exp within POLY_ULPS, then an add and a division that round once each.
    assert!(out.iter().zip(&want).all(|(&a, &b)| within_ulps(a, b, POLY_ULPS + 2)), "{out:?} vs {want:?}");
    Ok(())
}

#[test]
fn gather_checks_positions_at_run_time() -> R {
    // out[i] = data[idx[i]], data: [4], idx: [3] (i64).
    let e = Expr::Gather {
        buf: 0,
        index: aff(0, &[0]),
        stride: 1,
        extent: 4,
        pos: Box::new(load(1, aff(0, &[1]))),
    };
    let k = elementwise(
        "gather",
        vec![buf("data", DType::F32, 4), buf("idx", DType::I64, 3)],
        DType::F32,
        &[3],
        e,
    );
    let data = f32b(&[10.0, 11.0, 12.0, 13.0]);
    assert_eq!(
        to_f32(&run(&k, &[&data, &i64b(&[3, 0, 2])])?),
        vec![13.0, 10.0, 12.0]
    );
    for bad in [4, -1] {
        let e = run(&k, &[&data, &i64b(&[0, bad, 1])])
            .err()
            .ok_or("expected an error")?;
        assert!(
            matches!(e, Error::Runtime { .. }) && e.to_string().contains("'gather'"),
            "{e}"
        );
    }
    Ok(())
}

#[test]
fn buffer_lengths_are_checked() -> R {
    let k = elementwise(
        "copy",
        vec![buf("x", DType::F32, 3)],
        DType::F32,
        &[3],
        load(0, aff(0, &[1])),
    );
    let j = compile(&k)?;
    let mut out = vec![0u8; 12];
    assert!(matches!(
        j.run(&[&[0u8; 8]], &mut out),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        j.run(&[], &mut out),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        j.run(&[&[0u8; 12]], &mut [0u8; 16]),
        Err(Error::InvalidInput { .. })
    ));
    j.run(&[&f32b(&[1.0, 2.0, 3.0])], &mut out)?;
    assert_eq!(to_f32(&out), vec![1.0, 2.0, 3.0]);
    Ok(())
}

#[test]
fn unsupported_and_invalid_kernels_are_errors() {
    let x = || vec![buf("x", DType::F32, 3)];
    let k = elementwise(
        "nope",
        x(),
        DType::F32,
        &[3],
        un(UnaryFn::BitNot, load(0, aff(0, &[1]))),
    );
    let e = compile(&k).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        e,
        "kernel 'nope': Unary BitNot on f32 is not supported by the Cranelift backend yet"
    );
    // Out-of-bounds store, a load from the output buffer, and a dtype mismatch.
    let mut k = elementwise("oob", x(), DType::F32, &[3], load(0, aff(0, &[1])));
    k.store = aff(1, &[1]);
    assert!(matches!(compile(&k), Err(Error::InvalidKernel { .. })));
    let k = elementwise("out", x(), DType::F32, &[3], load(1, aff(0, &[1])));
    assert!(matches!(compile(&k), Err(Error::InvalidKernel { .. })));
    let k = elementwise("ty", x(), DType::I64, &[3], load(0, aff(0, &[1])));
    assert!(matches!(compile(&k), Err(Error::InvalidKernel { .. })));
    let k = elementwise(
        "f16",
        vec![buf("x", DType::F16, 3)],
        DType::F16,
        &[3],
        load(0, aff(0, &[1])),
    );
    assert!(matches!(compile(&k), Err(Error::Unsupported { .. })));
}

#[test]
fn load_out_of_bounds_is_rejected_or_checked() -> R {
    // An unguarded load reading past the end: rejected by the kernel verifier at compile time
    // (the generated code would check it at run time too).
    let k = elementwise(
        "past",
        vec![buf("x", DType::F32, 3)],
        DType::F32,
        &[3],
        load(0, aff(1, &[1])),
    );
    let e = compile(&k).err().ok_or("expected an error")?;
    let msg = e.to_string();
    assert!(
        matches!(e, Error::InvalidKernel { .. })
            && msg.starts_with("kernel 'past': invalid kernel: "),
        "{msg}"
    );
    Ok(())
}

#[test]
fn vector_loop_with_tail_matches_scalar_semantics() -> R {
    // Column max and sum over x[k, n] (n = 7: one f32x4 block and a tail of 3), NaN and -0.
    let (kk, n) = (3usize, 7usize);
    let x: Vec<f32> = vec![
        1.0,
        -0.0,
        f32::NAN,
        4.0,
        5.0,
        -6.0,
        0.0, //
        2.0,
        0.0,
        3.0,
        f32::NAN,
        -5.0,
        -0.0,
        1.0, //
        -1.0,
        -0.0,
        1.0,
        2.0,
        5.5,
        -7.0,
        f32::NAN,
    ];
    for f in [ReduceFn::Max, ReduceFn::Min, ReduceFn::Sum] {
        let k = Kernel {
            name: "cols".into(),
            inputs: vec![buf("x", DType::F32, kk * n)],
            output: buf("y", DType::F32, n),
            out_shape: vec![n],
            red_shape: vec![kk],
            store: aff(0, &[1]),
            body: Body::Compute {
                reduce: Some(f),
                body: load(0, aff(0, &[1, n as i64])),
                epilogue: bin(BinaryFn::Max, Expr::Acc, cst(-0.5, DType::F32)),
            },
        };
        let j = compile(&k)?;
        assert!(j.is_vectorized());
        let mut out = vec![0u8; n * 4];
        j.run(&[&f32b(&x)], &mut out)?;
        let want: Vec<f32> = (0..n)
            .map(|c| {
                let mut a = match f {
                    ReduceFn::Max => f32::NEG_INFINITY,
                    ReduceFn::Min => f32::INFINITY,
                    _ => 0.0,
                };
                for r in 0..kk {
                    let v = x[r * n + c];
                    a = match f {
                        ReduceFn::Max => {
                            if v > a || v.is_nan() {
                                v
                            } else {
                                a
                            }
                        }
                        ReduceFn::Min => {
                            if v < a || v.is_nan() {
                                v
                            } else {
                                a
                            }
                        }
                        _ => a + v,
                    };
                }
                if a.is_nan() || a >= -0.5 { a } else { -0.5 }
            })
            .collect();
        assert_eq!(bits(&to_f32(&out)), bits(&want), "{}", f.name());
    }
    // A strided (transposed) load runs on vectors too, lane by lane.
    let k = elementwise(
        "tr",
        vec![buf("x", DType::F32, 16)],
        DType::F32,
        &[4, 4],
        load(0, aff(0, &[1, 4])),
    );
    assert!(compile(&k)?.is_vectorized());
    let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let out = run(&k, &[&f32b(&x)])?;
    assert_eq!(to_f32(&out)[..4], [0.0, 4.0, 8.0, 12.0]);
    Ok(())
}

#[test]
fn arg_max_and_min_take_the_first_extremum_and_nan_wins() -> R {
    let rows: [[f32; 4]; 4] = [
        [1.0, 3.0, 3.0, 2.0],
        [f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NAN, 5.0],
        [f32::INFINITY, 2.0, 2.0, f32::INFINITY],
        [0.0, f32::NAN, -1.0, f32::NAN],
    ];
    let x: Vec<f32> = rows.iter().flatten().copied().collect();
    let mk = |f| Kernel {
        name: "arg".into(),
        inputs: vec![buf("x", DType::F32, 16)],
        output: buf("y", DType::I64, 4),
        out_shape: vec![4],
        red_shape: vec![4],
        store: aff(0, &[1]),
        body: Body::Compute {
            reduce: Some(f),
            body: load(0, aff(0, &[4, 1])),
            epilogue: Expr::Acc,
        },
    };
    assert_eq!(
        to_i64(&run(&mk(ReduceFn::ArgMax), &[&f32b(&x)])?),
        vec![1, 2, 0, 1]
    );
    assert_eq!(
        to_i64(&run(&mk(ReduceFn::ArgMin), &[&f32b(&x)])?),
        vec![0, 2, 1, 1]
    );
    // The same as the atom's reference evaluation.
    let t = ir::tensor::Tensor::from_vec(vec![4, 4], x.clone())?;
    for f in [ReduceFn::ArgMax, ReduceFn::ArgMin] {
        let want = ir::atom::Atom::Reduce {
            op: f,
            axes: vec![1],
        }
        .eval(&[Some(&t)])?;
        assert_eq!(
            to_i64(&run(&mk(f), &[&f32b(&x)])?),
            want[0].to_i64_vec(),
            "{}",
            f.name()
        );
        // Rows blocked by 3 (one whole block and a tail row): the same positions.
        let blocked = ir::schedule::Schedule {
            steps: vec![ir::schedule::ScheduleStep::RegisterBlock { axis: 0, factor: 3 }],
        };
        let j = JitKernel::compile(&mk(f), &blocked)?;
        let mut out = vec![0u8; 4 * 8];
        j.run(&[&f32b(&x)], &mut out)?;
        assert_eq!(to_i64(&out), want[0].to_i64_vec(), "{} blocked", f.name());
    }
    Ok(())
}

#[test]
fn rank_zero_output_sums_everything() -> R {
    let k = Kernel {
        name: "sum_all".into(),
        inputs: vec![buf("x", DType::I64, 6)],
        output: buf("y", DType::I64, 1),
        out_shape: vec![],
        red_shape: vec![2, 3],
        store: aff(0, &[]),
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: load(0, aff(0, &[3, 1])),
            epilogue: Expr::Acc,
        },
    };
    assert_eq!(
        to_i64(&run(&k, &[&i64b(&[1, 2, 3, 4, 5, i64::MAX])])?),
        vec![15i64.wrapping_add(i64::MAX)]
    );
    Ok(())
}

/// Special and ordinary f32 values (pairs of them cover ties, signed zeros, NaN, infinities).
fn specials() -> Vec<f32> {
    vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        2.5,
        -3.75,
        0.5,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-40,
        7.0,
        -7.0,
        3.0e38,
    ]
}

fn same_f32(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

fn tensor_bytes(t: &ir::tensor::Tensor) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    Ok(match t.dtype() {
        DType::F32 => f32b(t.slice::<f32>()?),
        DType::I64 => i64b(t.slice::<i64>()?),
        DType::I32 => t
            .slice::<i32>()?
            .iter()
            .flat_map(|x| x.to_ne_bytes())
            .collect(),
        DType::Bool => t.slice::<bool>()?.iter().map(|&x| u8::from(x)).collect(),
        d => return Err(format!("dtype {d}").into()),
    })
}

/// Runs `e` (over loads of inputs 0 and 1 at the same index) on every pair of `a` x `b`
/// and compares with the atom's reference evaluation.
fn check_against_atom(
    e: Expr,
    atom: ir::atom::Atom,
    a: &ir::tensor::Tensor,
    b: Option<&ir::tensor::Tensor>,
) -> R {
    let n = a.numel();
    let mut ins = vec![Buffer {
        name: "a".into(),
        dtype: a.dtype(),
        numel: n,
    }];
    let mut args = vec![Some(a)];
    if let Some(b) = b {
        ins.push(Buffer {
            name: "b".into(),
            dtype: b.dtype(),
            numel: n,
        });
        args.push(Some(b));
    }
    let want = atom.eval(&args)?.remove(0);
    let k = elementwise(&format!("{atom:?}"), ins, want.dtype(), &[n], e);
    let bytes: Vec<Vec<u8>> = args
        .iter()
        .flatten()
        .map(|t| tensor_bytes(t))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&[u8]> = bytes.iter().map(|v| v.as_slice()).collect();
    let got = run(&k, &refs)?;
    let wb = tensor_bytes(&want)?;
    if want.dtype() == DType::F32 && uses_polynomial(&k) {
        let (g, w) = (to_f32(&got), to_f32(&wb));
        assert!(g.iter().zip(&w).all(|(&a, &b)| within_ulps(a, b, POLY_ULPS)), "{atom:?}: {g:?} vs {w:?}");
    } else if want.dtype() == DType::F32 {
        assert!(
            same_f32(&to_f32(&got), &to_f32(&wb)),
            "{atom:?}: {:?} vs {:?}",
            to_f32(&got),
            to_f32(&wb)
        );
    } else {
        assert_eq!(got, wb, "{atom:?}");
    }
    Ok(())
}

#[test]
fn elementwise_functions_match_the_atoms() -> R {
    use ir::atom::Atom;
    use ir::tensor::Tensor;
    let s = specials();
    let (xa, xb): (Vec<f32>, Vec<f32>) = s
        .iter()
        .flat_map(|&x| s.iter().map(move |&y| (x, y)))
        .unzip();
    let (fa, fb) = (
        Tensor::from_vec(vec![xa.len()], xa)?,
        Tensor::from_vec(vec![xb.len()], xb)?,
    );
    let l = |i| load(i, aff(0, &[1]));
    use BinaryFn::*;
    for f in [Add, Sub, Mul, Div, Max, Min, Pow, Fmod, Eq, Lt, Le, Gt, Ge] {
        check_against_atom(bin(f, l(0), l(1)), Atom::Binary(f), &fa, Some(&fb))?;
    }
    let ints = [0i64, 1, -1, 7, -7, 3, i64::MAX, i64::MIN];
    let (ia, ib): (Vec<i64>, Vec<i64>) = ints
        .iter()
        .flat_map(|&x| ints.iter().map(move |&y| (x, y)))
        .unzip();
    let (ta, tb) = (
        Tensor::from_vec(vec![ia.len()], ia.clone())?,
        Tensor::from_vec(vec![ib.len()], ib.clone())?,
    );
    for f in [
        Add, Sub, Mul, Max, Min, Eq, Lt, Le, Gt, Ge, BitAnd, BitOr, BitXor,
    ] {
        check_against_atom(bin(f, l(0), l(1)), Atom::Binary(f), &ta, Some(&tb))?;
    }
    let (da, db): (Vec<i64>, Vec<i64>) = ia
        .iter()
        .zip(&ib)
        .filter(|(_, y)| **y != 0)
        .map(|(x, y)| (*x, *y))
        .unzip();
    let (ta, tb) = (
        Tensor::from_vec(vec![da.len()], da)?,
        Tensor::from_vec(vec![db.len()], db)?,
    );
    for f in [Div, Mod, Fmod] {
        check_against_atom(bin(f, l(0), l(1)), Atom::Binary(f), &ta, Some(&tb))?;
    }
    let x = Tensor::from_vec(vec![s.len()], s.clone())?;
    let mut tested = 0;
    for &f in UnaryFn::ALL {
        let k = elementwise(
            "probe",
            vec![buf("x", DType::F32, 1)],
            DType::F32,
            &[1],
            un(f, l(0)),
        );
        if f == UnaryFn::IsNaN || compile(&k).is_ok() {
            check_against_atom(un(f, l(0)), Atom::Unary(f), &x, None)?;
            tested += 1;
        }
    }
    assert!(tested >= 20, "{tested} unary functions");
    let ti = Tensor::from_vec(vec![ints.len()], ints.to_vec())?;
    for f in [UnaryFn::Neg, UnaryFn::Abs, UnaryFn::Sign, UnaryFn::BitNot] {
        check_against_atom(un(f, l(0)), Atom::Unary(f), &ti, None)?;
    }
    let tbool = Tensor::from_vec(vec![2], vec![true, false])?;
    check_against_atom(
        un(UnaryFn::Not, l(0)),
        Atom::Unary(UnaryFn::Not),
        &tbool,
        None,
    )?;
    for (src, tos) in [
        (&x, [DType::I64, DType::I32, DType::Bool]),
        (&ti, [DType::F32, DType::I32, DType::Bool]),
        (&tbool, [DType::F32, DType::I64, DType::I32]),
    ] {
        for to in tos {
            check_against_atom(Expr::Cast(to, Box::new(l(0))), Atom::Cast(to), src, None)?;
        }
    }
    Ok(())
}

/// Running the parallel range in shares (as threads do) writes exactly what one whole run
/// writes; a range outside the parallel extent is an error.
#[test]
#[allow(unsafe_code)]
fn parallel_shares_cover_the_whole_run() -> R {
    let shape = [5usize, 7];
    let k = elementwise(
        "scale",
        vec![buf("x", DType::F32, 35)],
        DType::F32,
        &shape,
        bin(
            BinaryFn::Mul,
            load(0, aff(0, &row_major(&shape))),
            cst(3.0, DType::F32),
        ),
    );
    let j = compile(&k)?;
    assert_eq!(j.parallel_extent(), 5);
    let x: Vec<f32> = (0..35).map(|i| i as f32).collect();
    let xb = f32b(&x);
    let mut whole = vec![0u8; 140];
    j.run(&[&xb], &mut whole)?;
    let mut parts = vec![0u8; 140];
    let bufs = [xb.as_ptr().cast_mut(), parts.as_mut_ptr(), std::ptr::null_mut()];
    for (b, e) in [(0, 2), (2, 2), (2, 5)] {
        // SAFETY: both buffers have the kernel's byte lengths and do not overlap.
        unsafe { j.run_raw(bufs.as_ptr(), b, e)? };
    }
    assert_eq!(whole, parts);
    // SAFETY: as above; the range is rejected before any code runs.
    let bad = unsafe { j.run_raw(bufs.as_ptr(), 3, 6) };
    assert!(matches!(bad, Err(Error::InvalidInput { .. })));
    Ok(())
}

/// Clip as the decomposition builds it (two selects on comparisons) runs on f32x4 lanes
/// with a scalar tail, exactly as the reference (NaN included).
#[test]
fn clip_selects_vectorize_and_match() -> R {
    let x = || load(0, aff(0, &[1]));
    let lo = || cst(0.0, DType::F32);
    let hi = || cst(6.0, DType::F32);
    let low = Expr::Select(Box::new(bin(BinaryFn::Lt, x(), lo())), Box::new(lo()), Box::new(x()));
    let clip = Expr::Select(Box::new(bin(BinaryFn::Gt, low.clone(), hi())), Box::new(hi()), Box::new(low));
    let n = 37;
    let k = elementwise("clip", vec![buf("x", DType::F32, n)], DType::F32, &[n], clip);
    assert!(compile(&k)?.is_vectorized());
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - 12.0) * 0.61).collect();
    v[5] = f32::NAN;
    v[33] = f32::INFINITY;
    let out = to_f32(&run(&k, &[&f32b(&v)])?);
    let want: Vec<f32> = v
        .iter()
        .map(|&x| {
            let l = if x < 0.0 { 0.0 } else { x };
            if l > 6.0 { 6.0 } else { l }
        })
        .collect();
    assert!(same_f32(&out, &want), "{out:?} vs {want:?}");
    Ok(())
}

/// `out[idx[i, j] * 3 + j] (mode)= upd[i, j]` over a copy of `data` [5, 3], for `idx`, `upd`
/// [2, 3] (ScatterElements on axis 0).
fn scatter(mode: ir::atom::ScatterMode, d: DType) -> Kernel {
    Kernel {
        name: format!("scatter_{}_{d}", mode.name()),
        inputs: vec![buf("data", d, 15), buf("idx", DType::I64, 6), buf("upd", d, 6)],
        output: buf("y", d, 15),
        out_shape: vec![2, 3],
        red_shape: vec![],
        store: aff(0, &[]),
        body: Body::Scatter {
            data: 0,
            mode,
            index: aff(0, &[0, 1]),
            stride: 3,
            extent: 5,
            pos: load(1, aff(0, &[3, 1])),
            value: load(2, aff(0, &[3, 1])),
        },
    }
}

#[test]
fn scatter_applies_updates_in_order_and_checks_positions() -> R {
    use ir::atom::ScatterMode;
    let idx = i64b(&[4, 0, 2, 4, 0, 2]);
    for mode in [ScatterMode::Replace, ScatterMode::Add, ScatterMode::Mul, ScatterMode::Max, ScatterMode::Min] {
        let data: Vec<f32> = (0..15).map(|i| i as f32 - 7.0).collect();
        let upd = [100.0, -3.0, f32::NAN, -50.0, 2.5, 9.0];
        let out = to_f32(&run(&scatter(mode, DType::F32), &[&f32b(&data), &idx, &f32b(&upd)])?);
        // Duplicated targets (rows 4, 0, 2 hit twice): the later update wins or combines.
        let want_12 = match mode {
            ScatterMode::Replace => -50.0,
            ScatterMode::Add => 5.0 + 100.0 - 50.0,
            ScatterMode::Mul => 5.0 * 100.0 * -50.0,
            ScatterMode::Max => 100.0,
            ScatterMode::Min => -50.0,
        };
        assert_eq!(out[12], want_12, "{mode:?}");
        assert_eq!(out[3], data[3], "{mode:?}: an untouched element is copied");
        let ints: Vec<i64> = (0..15).map(|i| i * 3 - 20).collect();
        run(&scatter(mode, DType::I64), &[&i64b(&ints), &idx, &i64b(&[7, -8, 9, -10, 11, 12])])?;
        for bad in [5, -1] {
            let e = run(&scatter(mode, DType::F32), &[&f32b(&data), &i64b(&[0, 1, bad, 2, 3, 4]), &f32b(&upd)])
                .err()
                .ok_or("expected an error")?;
            assert!(matches!(e, Error::Runtime { .. }) && e.to_string().contains("Scatter position"), "{e}");
        }
    }
    Ok(())
}
