"""Derives the polynomial coefficients of codegen/src/cranelift/vmath.rs.

Each fit is a weighted minimax polynomial (Lawson's iteratively reweighted least squares
on a dense Chebyshev-distributed grid, in float64), printed rounded to f32 with its
maximum weighted error before and after that rounding. Run with any Python that has numpy:
    python codegen/tools/vmath_coefs.py
"""
import math
import numpy as np

def lawson(xs, target, basis, weight, iters=400):
    """Coefficients c minimizing max |weight * (sum c_k basis_k(xs) - target)|."""
    A = np.stack([b(xs) for b in basis], axis=1) * weight[:, None]
    t = target * weight
    w = np.ones_like(xs) / len(xs)
    c = None
    for _ in range(iters):
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(A * sw[:, None], t * sw, rcond=None)
        e = np.abs(A @ c - t)
        w = w * e
        s = w.sum()
        if s == 0:
            break
        w = w / s
    return c

def grid(lo, hi, n=20000):
    k = np.arange(n)
    return (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / n)

def report(name, c, xs, target, basis, weight):
    A = np.stack([b(xs) for b in basis], axis=1)
    e64 = np.max(np.abs((A @ c - target) * weight))
    c32 = np.array(c, dtype=np.float32).astype(np.float64)
    e32 = np.max(np.abs((A @ c32 - target) * weight))
    print(f"{name}: max weighted error {e64:.3e} (f32 coefficients {e32:.3e})")
    for v in np.array(c, dtype=np.float32):
        print(f"    {float(v)!r}_f32,  // {v.view(np.uint32):#010x}")

def powers(var, ks):
    return [lambda x, k=k: var(x) ** k for k in ks]

# exp(r) = 1 + r + r^2 P(r), |r| <= ln2/2 (a little wider for the rounding of k): relative.
xs = grid(-0.3470, 0.3470)
tgt = (np.exp(xs) - 1 - xs) / xs**2
# error of r^2 P relative to exp(r): weight r^2 / exp(r)
w = xs**2 / np.exp(xs)
basis = powers(lambda x: x, range(5))
c = lawson(xs, tgt, basis, w)
report("exp P(r), degree 4", c, xs, tgt, basis, w)

# log: 2 atanh(s) = 2 s + s R(z), z = s^2, R(z) = z Q(z), |s| <= 0.1716: weight s z / (2 atanh s).
s = grid(1e-6, 0.1716)
z = s * s
tgt = (2 * np.arctanh(s) / s - 2) / z
w = z * s / (2 * np.arctanh(s))
basis = powers(lambda x: x, range(4))
c = lawson(z, tgt, basis, w)
report("log Q(z), degree 3", c, z, tgt, basis, w)

# tanh(x) = x + x^3 P(x^2), |x| <= 0.625: relative.
for cut, deg in [(0.625, 5)]:
    x = grid(1e-4, cut)
    z = x * x
    tgt = (np.tanh(x) - x) / (x**3)
    w = x**3 / np.tanh(x)
    basis = powers(lambda v: v, range(deg + 1))
    c = lawson(z, tgt, basis, w)
    report(f"tanh P(x^2) on [0, {cut}], degree {deg}", c, z, tgt, basis, w)

# erf(x) = x + x P(x^2), |x| <= 0.875: relative. (P(0) = 2/sqrt(pi) - 1 keeps the f32
# rounding of the leading coefficient small.)
erf = np.vectorize(math.erf)
erfc = np.vectorize(math.erfc)
for cut, deg in [(0.875, 6)]:
    x = grid(1e-4, cut)
    z = x * x
    tgt = erf(x) / x - 1
    w = x / erf(x)
    basis = powers(lambda v: v, range(deg + 1))
    c = lawson(z, tgt, basis, w)
    report(f"erf P(x^2) on [0, {cut}], degree {deg}", c, z, tgt, basis, w)

# erf(x) = 1 - exp(-x^2 + G(x)), 0.875 <= x <= 4: the error of G is the relative error of
# erfc; weight it by erfc / erf for the relative error of erf.
for deg in [9]:
    x = grid(0.875, 4.0)
    tgt = np.log(erfc(x)) + x * x
    w = erfc(x) / erf(x)
    basis = powers(lambda v: v - 2.4375, range(deg + 1))
    c = lawson(x, tgt, basis, w)
    report(f"erfc G(x - 2.4375), degree {deg}", c, x, tgt, basis, w)

# sin(r) = r + r^3 S(r^2), cos(r) = 1 - r^2/2 + r^4 C(r^2), |r| <= 0.7875: relative.
r = grid(1e-5, 0.7875)
z = r * r
tgt = (np.sin(r) - r) / r**3
w = r**3 / np.sin(r)
basis = powers(lambda v: v, range(4))
c = lawson(z, tgt, basis, w)
report("sin S(r^2), degree 3", c, z, tgt, basis, w)
tgt = (np.cos(r) - 1 + z / 2) / z**2
w = z**2 / np.cos(r)
basis = powers(lambda v: v, range(4))
c = lawson(z, tgt, basis, w)
report("cos C(r^2), degree 3", c, z, tgt, basis, w)

# sinh(x) = x + x^3 P(x^2), |x| <= 1: relative.
x = grid(1e-4, 1.0)
z = x * x
tgt = (np.sinh(x) - x) / x**3
w = x**3 / np.sinh(x)
basis = powers(lambda v: v, range(4))
c = lawson(z, tgt, basis, w)
report("sinh P(x^2) on [0, 1], degree 3", c, z, tgt, basis, w)

# atan(t) = t + t^3 P(t^2), |t| <= tan(pi/8) = 0.41422: relative.
t = grid(1e-4, 0.41422)
z = t * t
tgt = (np.arctan(t) - t) / t**3
w = t**3 / np.arctan(t)
for deg in [4, 5]:
    basis = powers(lambda v: v, range(deg + 1))
    c = lawson(z, tgt, basis, w)
    report(f"atan P(t^2) on [0, tan(pi/8)], degree {deg}", c, z, tgt, basis, w)
