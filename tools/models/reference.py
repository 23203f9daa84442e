#!/usr/bin/env python3
"""Make seeded inputs for an ONNX model and record onnxruntime's reference outputs.

Usage:
    python3 tools/models/reference.py MODEL.onnx OUTDIR [--shape NAME=1x3x224x224 ...]
                                      [--seed N] [--int-high N] [--float-low X]

Every graph input (initializers excluded) gets a seeded random tensor: floats uniform in
[float-low, 1), integers uniform in [0, int-high). Symbolic or unknown dims must be fixed with
--shape. Runs onnxruntime on CPU with all graph optimizations disabled and one intra-op thread.
Writes OUTDIR/inputs/<name>.npy, OUTDIR/outputs/<name>.npy (names sanitized: every character
outside [A-Za-z0-9._-] becomes '_') and OUTDIR/manifest.json describing both.
"""
import argparse
import json
import os
import re

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper


def sanitize(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def parse_shape(text):
    name, _, dims = text.rpartition("=")
    if not name or not dims:
        raise argparse.ArgumentTypeError(f"expected NAME=1x3x224x224, got {text!r}")
    return name, [int(d) for d in dims.lower().split("x")]


def graph_inputs(model):
    """(name, numpy dtype, dims) for each real input; dims hold int, str (symbolic) or None."""
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0  # -1: unknown
                else (d.dim_param or None) for d in tt.shape.dim]
        yield vi.name, helper.tensor_dtype_to_np_dtype(tt.elem_type), dims


def make_inputs(model, shapes, seed, int_high, float_low):
    rng = np.random.RandomState(seed)
    feeds = {}
    for name, dtype, dims in graph_inputs(model):
        if name in shapes:
            shape = shapes[name]
            if len(shape) != len(dims) or any(isinstance(d, int) and d != s
                                               for d, s in zip(dims, shape)):
                raise SystemExit(f"--shape {name}={shape} does not fit declared dims {dims}")
        elif all(isinstance(d, int) for d in dims):
            shape = dims
        else:
            raise SystemExit(f"input {name!r} has unresolved dims {dims}; pass --shape {name}=...")
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.uniform(float_low, 1.0, shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[name] = rng.randint(0, int_high, shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = rng.randint(0, 2, shape).astype(np.bool_)
        else:
            raise SystemExit(f"input {name!r}: unsupported dtype {dtype}")
    return feeds


def save(outdir, sub, name, array):
    rel = f"{sub}/{sanitize(name)}.npy"
    np.save(os.path.join(outdir, rel), array)
    return {"name": name, "file": rel, "shape": list(array.shape), "dtype": str(array.dtype)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("outdir")
    ap.add_argument("--shape", action="append", type=parse_shape, default=[],
                    metavar="NAME=DxDxD", help="concrete shape of an input (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--int-high", type=int, default=100, help="integer inputs lie in [0, N)")
    ap.add_argument("--float-low", type=float, default=-1.0, help="float inputs lie in [X, 1)")
    args = ap.parse_args()

    model = onnx.load(args.model, load_external_data=False)
    feeds = make_inputs(model, dict(args.shape), args.seed, args.int_high, args.float_low)

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    results = sess.run(names, feeds)

    for sub in ("inputs", "outputs"):
        os.makedirs(os.path.join(args.outdir, sub), exist_ok=True)
    files = [sanitize(n) for n in feeds] + [sanitize(n) for n in names]
    if len(set(files)) != len(files):
        raise SystemExit(f"sanitized tensor names collide: {files}")
    manifest = {
        "model": os.path.abspath(args.model),
        "inputs": [save(args.outdir, "inputs", n, a) for n, a in feeds.items()],
        "outputs": [save(args.outdir, "outputs", n, np.asarray(a)) for n, a in zip(names, results)],
    }
    with open(os.path.join(args.outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
