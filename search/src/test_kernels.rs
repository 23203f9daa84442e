//! Kernels the search tests share: a GEMM, a padded 3x3 convolution (guarded, or over an
//! input padded beforehand), a ResNet-like 7x7
//! stride-2 stem over a pre-padded input, a depthwise convolution, a softmax-like reduction, an elementwise kernel and an integer one.

use ir::atom::{BinaryFn, ReduceFn, UnaryFn};
use ir::dtype::DType;
use ir::kernel::{Affine, Body, Buffer, Expr, KGuard, Kernel};

pub fn buf(name: &str, numel: usize) -> Buffer {
    Buffer { name: name.into(), dtype: DType::F32, numel }
}

pub fn load(buf: usize, offset: i64, coefs: &[i64], guards: Vec<KGuard>) -> Expr {
    Expr::Load { buf, index: Affine { offset, coefs: coefs.to_vec() }, guards, pad: 0.0 }
}

fn mul(a: Expr, b: Expr) -> Expr {
    Expr::Binary(BinaryFn::Mul, Box::new(a), Box::new(b))
}

pub fn gemm(m: usize, kk: usize, n: usize) -> Kernel {
    Kernel {
        name: "gemm".into(),
        inputs: vec![buf("a", m * kk), buf("b", kk * n)],
        output: buf("c", m * n),
        out_shape: vec![m, n],
        red_shape: vec![kk],
        store: Affine { offset: 0, coefs: vec![n as i64, 1] },
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: mul(load(0, 0, &[kk as i64, 0, 1], vec![]), load(1, 0, &[0, 1, n as i64], vec![])),
            epilogue: Expr::Acc,
        },
    }
}

pub fn conv3x3(c: usize, h: usize, w: usize) -> Kernel {
    let (c_, h_, w_) = (c as i64, h as i64, w as i64);
    let guards = vec![
        KGuard { expr: Affine { offset: -1, coefs: vec![0, 0, 1, 0, 0, 1, 0] }, bound: h_ },
        KGuard { expr: Affine { offset: -1, coefs: vec![0, 0, 0, 1, 0, 0, 1] }, bound: w_ },
    ];
    Kernel {
        name: "conv".into(),
        inputs: vec![buf("x", c * h * w), buf("w", c * c * 9)],
        output: buf("y", c * h * w),
        out_shape: vec![1, c, h, w],
        red_shape: vec![c, 3, 3],
        store: Affine { offset: 0, coefs: vec![c_ * h_ * w_, h_ * w_, w_, 1] },
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: mul(load(0, -w_ - 1, &[0, 0, w_, 1, h_ * w_, w_, 1], guards), load(1, 0, &[0, c_ * 9, 0, 0, 9, 3, 1], vec![])),
            epilogue: Expr::Acc,
        },
    }
}

/// A 3x3 stride-1 conv of `c` channels into `k`, `h` x `w` outputs, reading an input padded
/// beforehand (`h + 2` x `w + 2`, no guards): what a Winograd schedule runs.
pub fn padded_conv3x3(k: usize, c: usize, h: usize, w: usize) -> Kernel {
    let (k_, c_, h_, w_) = (k as i64, c as i64, h as i64, w as i64);
    let (ph, pw) = (h_ + 2, w_ + 2);
    Kernel {
        name: "padded_conv".into(),
        inputs: vec![buf("x", (c_ * ph * pw) as usize), buf("w", k * c * 9)],
        output: buf("y", k * h * w),
        out_shape: vec![1, k, h, w],
        red_shape: vec![c, 3, 3],
        store: Affine { offset: 0, coefs: vec![k_ * h_ * w_, h_ * w_, w_, 1] },
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: mul(load(0, 0, &[0, 0, pw, 1, ph * pw, pw, 1], vec![]), load(1, 0, &[0, c_ * 9, 0, 0, 9, 3, 1], vec![])),
            epilogue: Expr::Acc,
        },
    }
}

/// A 7x7 stride-2 conv of 3 channels into `k`, `h` x `w` outputs, reading an input padded
/// beforehand (`2h + 5` x `2w + 5`, no guards), as ResNet's stem runs.
pub fn stem7x7(k: usize, h: usize, w: usize) -> Kernel {
    let (k_, h_, w_) = (k as i64, h as i64, w as i64);
    let (ph, pw) = (2 * h_ + 5, 2 * w_ + 5);
    Kernel {
        name: "stem".into(),
        inputs: vec![buf("w", k * 147), buf("x", (3 * ph * pw) as usize)],
        output: buf("y", k * h * w),
        out_shape: vec![1, k, h, w],
        red_shape: vec![3, 7, 7],
        store: Affine { offset: 0, coefs: vec![k_ * h_ * w_, h_ * w_, w_, 1] },
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: mul(load(0, 0, &[0, 147, 0, 0, 49, 7, 1], vec![]), load(1, 0, &[0, 0, 2 * pw, 2, ph * pw, pw, 1], vec![])),
            epilogue: Expr::Acc,
        },
    }
}

pub fn depthwise(c: usize, h: usize, w: usize) -> Kernel {
    let (h_, w_) = (h as i64, w as i64);
    let guards = vec![
        KGuard { expr: Affine { offset: -1, coefs: vec![0, 1, 0, 1, 0] }, bound: h_ },
        KGuard { expr: Affine { offset: -1, coefs: vec![0, 0, 1, 0, 1] }, bound: w_ },
    ];
    Kernel {
        name: "depthwise".into(),
        inputs: vec![buf("x", c * h * w), buf("w", c * 9)],
        output: buf("y", c * h * w),
        out_shape: vec![c, h, w],
        red_shape: vec![3, 3],
        store: Affine { offset: 0, coefs: vec![h_ * w_, w_, 1] },
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: mul(load(0, -w_ - 1, &[h_ * w_, w_, 1, w_, 1], guards), load(1, 0, &[9, 0, 0, 3, 1], vec![])),
            epilogue: Expr::Acc,
        },
    }
}

pub fn softmax_sum(rows: usize, cols: usize) -> Kernel {
    let body = Expr::Unary(
        UnaryFn::Exp,
        Box::new(Expr::Binary(BinaryFn::Sub, Box::new(load(0, 0, &[cols as i64, 0, 1], vec![])), Box::new(load(1, 0, &[1, 0, 0], vec![])))),
    );
    Kernel {
        name: "softmax_sum".into(),
        inputs: vec![buf("x", rows * cols), buf("m", rows)],
        output: buf("s", rows),
        out_shape: vec![rows, 1],
        red_shape: vec![cols],
        store: Affine { offset: 0, coefs: vec![1, 1] },
        body: Body::Compute { reduce: Some(ReduceFn::Sum), body, epilogue: Expr::Acc },
    }
}

pub fn elementwise(a: usize, b: usize) -> Kernel {
    let body = Expr::Binary(
        BinaryFn::Add,
        Box::new(mul(Expr::Unary(UnaryFn::Tanh, Box::new(load(0, 0, &[b as i64, 1], vec![]))), load(1, 0, &[0, 1], vec![]))),
        Box::new(load(2, 0, &[b as i64, 1], vec![])),
    );
    Kernel {
        name: "elementwise".into(),
        inputs: vec![buf("x", a * b), buf("g", b), buf("r", a * b)],
        output: buf("y", a * b),
        out_shape: vec![a, b],
        red_shape: vec![],
        store: Affine { offset: 0, coefs: vec![b as i64, 1] },
        body: Body::Compute { reduce: None, body, epilogue: Expr::Acc },
    }
}

pub fn integer(a: usize, b: usize) -> Kernel {
    let int = |name: &str| Buffer { name: name.into(), dtype: DType::I64, numel: a * b };
    Kernel {
        name: "neg".into(),
        inputs: vec![int("x")],
        output: int("y"),
        out_shape: vec![a, b],
        red_shape: vec![],
        store: Affine { offset: 0, coefs: vec![b as i64, 1] },
        body: Body::Compute { reduce: None, body: Expr::Unary(UnaryFn::Neg, Box::new(load(0, 0, &[b as i64, 1], vec![]))), epilogue: Expr::Acc },
    }
}
