//! [`Kernel::canonical_hash`]: a stable identity for a kernel's structure, the key of tuning
//! records. The kernel is written to a canonical text (buffer dtypes and sizes, shapes,
//! the store, the body with every index map, guard, constant and function) that leaves out
//! every name, then hashed with FNV-1a-64. Floats are written as their IEEE bit patterns
//! and functions and dtypes by their IR names, so the hash depends neither on the Rust
//! version nor on `std`'s hasher; it changes only when the canonical text does (bump
//! [`CANONICAL_FORMAT`] when the kernel IR changes meaning).

use crate::kernel::{Affine, Body, Buffer, Expr, KGuard, Kernel};
use std::fmt::Write;

/// The version of the canonical text, part of it (so a change of format changes every hash).
pub const CANONICAL_FORMAT: u32 = 1;

impl Kernel {
    /// 16 hex digits identifying the kernel's structure: equal for kernels that differ only
    /// in names, different (up to hash collisions) when a shape, dtype, index map,
    /// constant or function differs.
    pub fn canonical_hash(&self) -> String {
        format!("{:016x}", fnv1a64(self.canonical_text().as_bytes()))
    }

    /// The name-free text [`Kernel::canonical_hash`] hashes.
    pub fn canonical_text(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "atomc-kernel/{CANONICAL_FORMAT};in=");
        for b in &self.inputs {
            buffer(&mut s, b);
        }
        s.push_str(";out=");
        buffer(&mut s, &self.output);
        let _ = write!(s, ";o={:?};r={:?};store=", self.out_shape, self.red_shape);
        affine(&mut s, &self.store);
        match &self.body {
            Body::Compute { reduce, body, epilogue } => {
                let _ = write!(s, ";compute {};body=", reduce.map_or("none", |r| r.name()));
                expr(&mut s, body);
                s.push_str(";epilogue=");
                expr(&mut s, epilogue);
            }
            Body::Scatter { data, mode, index, stride, extent, pos, value } => {
                let _ = write!(s, ";scatter {} data={data} stride={stride} extent={extent} index=", mode.name());
                affine(&mut s, index);
                s.push_str(";pos=");
                expr(&mut s, pos);
                s.push_str(";value=");
                expr(&mut s, value);
            }
        }
        s
    }
}

fn buffer(s: &mut String, b: &Buffer) {
    let _ = write!(s, "{}[{}],", b.dtype.name(), b.numel);
}

fn affine(s: &mut String, a: &Affine) {
    let _ = write!(s, "({}{:?})", a.offset, a.coefs);
}

fn guard(s: &mut String, g: &KGuard) {
    affine(s, &g.expr);
    let _ = write!(s, "<{}", g.bound);
}

fn expr(s: &mut String, e: &Expr) {
    match e {
        Expr::Load { buf, index, guards, pad } => {
            let _ = write!(s, "load(b{buf},");
            affine(s, index);
            for g in guards {
                s.push(',');
                guard(s, g);
            }
            let _ = write!(s, ",pad={:016x})", pad.to_bits());
        }
        Expr::Gather { buf, index, stride, extent, pos } => {
            let _ = write!(s, "gather(b{buf},");
            affine(s, index);
            let _ = write!(s, ",{stride},{extent},");
            expr(s, pos);
            s.push(')');
        }
        Expr::Const { value, dtype } => {
            let _ = write!(s, "const({},{:016x})", dtype.name(), value.to_bits());
        }
        Expr::Axis(a) => {
            let _ = write!(s, "axis({a})");
        }
        Expr::Unary(f, x) => {
            let _ = write!(s, "{}(", f.name());
            expr(s, x);
            s.push(')');
        }
        Expr::Binary(f, a, b) => {
            let _ = write!(s, "{}(", f.name());
            expr(s, a);
            s.push(',');
            expr(s, b);
            s.push(')');
        }
        Expr::Select(c, a, b) => {
            s.push_str("select(");
            expr(s, c);
            s.push(',');
            expr(s, a);
            s.push(',');
            expr(s, b);
            s.push(')');
        }
        Expr::Cast(d, x) => {
            let _ = write!(s, "cast({},", d.name());
            expr(s, x);
            s.push(')');
        }
        Expr::Acc => s.push_str("acc"),
    }
}

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atom::{BinaryFn, ReduceFn};
    use crate::dtype::DType;

    fn matmul(names: [&str; 4], m: usize, kk: usize, n: usize, bias: f64) -> Kernel {
        let load = |buf: usize, coefs: Vec<i64>| Expr::Load { buf, index: Affine { offset: 0, coefs }, guards: vec![], pad: 0.0 };
        let buf = |name: &str, numel: usize| Buffer { name: name.into(), dtype: DType::F32, numel };
        Kernel {
            name: names[0].into(),
            inputs: vec![buf(names[1], m * kk), buf(names[2], kk * n)],
            output: buf(names[3], m * n),
            out_shape: vec![m, n],
            red_shape: vec![kk],
            store: Affine { offset: 0, coefs: vec![n as i64, 1] },
            body: Body::Compute {
                reduce: Some(ReduceFn::Sum),
                body: Expr::Binary(BinaryFn::Mul, Box::new(load(0, vec![kk as i64, 0, 1])), Box::new(load(1, vec![0, 1, n as i64]))),
                epilogue: Expr::Binary(BinaryFn::Add, Box::new(Expr::Acc), Box::new(Expr::Const { value: bias, dtype: DType::F32 })),
            },
        }
    }

    #[test]
    fn names_do_not_change_the_hash() {
        let a = matmul(["mm", "a", "b", "c"], 8, 4, 6, 1.0);
        let b = matmul(["matmul_17", "x", "w", "y"], 8, 4, 6, 1.0);
        assert_eq!(a.canonical_hash(), b.canonical_hash());
        assert_eq!(a.canonical_hash().len(), 16);
        assert!(!a.canonical_text().contains("mm"));
    }

    #[test]
    fn shapes_coefficients_and_constants_change_the_hash() {
        let base = matmul(["mm", "a", "b", "c"], 8, 4, 6, 1.0);
        let h = base.canonical_hash();
        assert_ne!(h, matmul(["mm", "a", "b", "c"], 8, 4, 7, 1.0).canonical_hash());
        assert_ne!(h, matmul(["mm", "a", "b", "c"], 8, 4, 6, 2.0).canonical_hash());
        let mut coef = base.clone();
        coef.store.coefs = vec![1, 8];
        assert_ne!(h, coef.canonical_hash());
        let mut dtype = base.clone();
        dtype.output.dtype = DType::F64;
        assert_ne!(h, dtype.canonical_hash());
        let mut reduce = base;
        if let Body::Compute { reduce: r, .. } = &mut reduce.body {
            *r = Some(ReduceFn::Max);
        }
        assert_ne!(h, reduce.canonical_hash());
    }

    #[test]
    fn the_hash_is_pinned() {
        // FNV-1a-64 test vectors, so the hash function cannot drift.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
