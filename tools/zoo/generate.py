#!/usr/bin/env python3
"""Build the atomc test zoo: small, deterministic ONNX models (opset 17, ir_version 8).

Usage:
    python3 tools/zoo/generate.py OUTDIR            # all zoo models
    python3 tools/zoo/generate.py --example DIR     # only DIR/mlp.onnx (the checked-in example)

Models: mlp, resnet_style, mobilenetv2_style, transformer_encoder. Weights are float32
initializers drawn from a fixed numpy RandomState per model (He/Xavier scales so activations
stay O(1)); BatchNormalization nodes are kept unfused. Every model passes onnx.checker.
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


class Graph:
    """Tiny graph builder: unique names, initializers and nodes."""

    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)
        self.nodes, self.inits, self.count = [], [], {}

    def name(self, prefix):
        self.count[prefix] = self.count.get(prefix, 0) + 1
        return f"{prefix}_{self.count[prefix]}"

    def const(self, prefix, array):
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def op(self, op_type, inputs, out=None, **attrs):
        base = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out or base], name=base, **attrs))
        return out or base

    def normal(self, shape, std):
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    # --- layers -----------------------------------------------------------------------------
    def conv(self, x, cin, cout, k, stride=1, group=1):  # no bias: a BatchNormalization follows
        fan_in = (cin // group) * k * k
        w = self.const("conv_w", self.normal((cout, cin // group, k, k), np.sqrt(2.0 / fan_in)))
        return self.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride],
                       pads=[k // 2] * 4, group=group)

    def bn(self, x, c):
        r = self.rng
        params = [r.uniform(0.5, 1.5, c), r.normal(0, 0.1, c), r.normal(0, 0.1, c),
                  r.uniform(0.5, 1.5, c)]  # scale, bias, running mean, running var (> 0)
        names = [self.const(p, a.astype(np.float32))
                 for p, a in zip(["bn_scale", "bn_bias", "bn_mean", "bn_var"], params)]
        return self.op("BatchNormalization", [x] + names, epsilon=1e-5)

    def dense(self, x, k, n, std=None, gemm=False, out=None):
        std = np.sqrt(2.0 / k) if std is None else std
        w = self.const("w", self.normal((k, n), std))
        b = self.const("b", self.normal((n,), 0.05))
        if gemm:
            return self.op("Gemm", [x, w, b], out)
        return self.op("Add", [self.op("MatMul", [x, w]), b], out)

    def layernorm(self, x, c, out=None):
        g = self.const("ln_gamma", (1 + self.rng.normal(0, 0.1, c)).astype(np.float32))
        b = self.const("ln_beta", self.rng.normal(0, 0.1, c).astype(np.float32))
        return self.op("LayerNormalization", [x, g, b], out, axis=-1, epsilon=1e-5)

    def model(self, name, inputs, outputs):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="atomc-zoo")
        onnx.checker.check_model(m, full_check=True)
        return m


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mlp():
    g = Graph(seed=1)
    h = g.op("Relu", [g.dense("x", 64, 128, gemm=True)])
    h = g.op("Relu", [g.dense(h, 128, 64)])
    g.op("Gemm", [h, g.const("w", g.normal((10, 64), np.sqrt(1 / 64))),
                  g.const("b", g.normal((10,), 0.05))], "y", transB=1)
    return g.model("mlp", [f32("x", ["batch", 64])], [f32("y", ["batch", 10])])


def resnet_style():
    g = Graph(seed=2)
    x = g.op("Relu", [g.bn(g.conv("image", 3, 16, 7, stride=2), 16)])          # 16x32x32
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 16x16x16

    def block(x, cin, cout, stride):
        h = g.op("Relu", [g.bn(g.conv(x, cin, cout, 3, stride), cout)])
        h = g.bn(g.conv(h, cout, cout, 3), cout)
        skip = x if (cin, stride) == (cout, 1) else g.bn(g.conv(x, cin, cout, 1, stride), cout)
        return g.op("Relu", [g.op("Add", [h, skip])])

    x = block(x, 16, 16, 1)
    x = block(x, 16, 32, 2)                                                     # 32x8x8
    x = block(x, 32, 32, 1)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    g.op("Gemm", [x, g.const("fc_w", g.normal((10, 32), np.sqrt(1 / 32))),
                  g.const("fc_b", g.normal((10,), 0.05))], "logits", transB=1)
    return g.model("resnet_style", [f32("image", [1, 3, 64, 64])], [f32("logits", [1, 10])])


def mobilenetv2_style():
    g = Graph(seed=3)
    lo, hi = g.const("clip_min", np.float32(0)), g.const("clip_max", np.float32(6))

    def relu6(x):
        return g.op("Clip", [x, lo, hi])

    x = relu6(g.bn(g.conv("input", 3, 16, 3, stride=2), 16))                   # 16x32x32

    def inverted_residual(x, cin, cout, stride, expand):
        c = cin * expand
        h = relu6(g.bn(g.conv(x, cin, c, 1), c))
        h = relu6(g.bn(g.conv(h, c, c, 3, stride, group=c), c))
        h = g.bn(g.conv(h, c, cout, 1), cout)
        return g.op("Add", [x, h]) if (cin, stride) == (cout, 1) else h

    x = inverted_residual(x, 16, 24, 2, 4)                                      # 24x16x16
    x = inverted_residual(x, 24, 24, 1, 4)
    x = inverted_residual(x, 24, 32, 2, 4)                                      # 32x8x8
    x = g.op("Reshape", [g.op("GlobalAveragePool", [x]),
                         g.const("shape", np.array([1, 32], np.int64))])
    g.dense(x, 32, 10, std=np.sqrt(1 / 32), gemm=True, out="logits")
    return g.model("mobilenetv2_style", [f32("input", [1, 3, 64, 64])],
                   [f32("logits", [1, 10])])


def transformer_encoder(seq=16, d=32, heads=4, ffn=64, vocab=100, layers=2):
    g = Graph(seed=4)
    dh = d // heads
    x = g.op("Gather", [g.const("tok_emb", g.normal((vocab, d), 1.0)), "input_ids"], axis=0)
    x = g.op("Add", [x, g.const("pos_emb", g.normal((seq, d), 0.5))])          # [1,16,32]
    # [batch, seq, heads, dh] computed from the runtime shape (Shape/Gather/Concat)
    bs = g.op("Gather", [g.op("Shape", [x]), g.const("idx", np.array([0, 1], np.int64))], axis=0)
    split_shape = g.op("Concat", [bs, g.const("heads", np.array([heads, dh], np.int64))], axis=0)
    merge_shape = g.const("merge_shape", np.array([1, seq, d], np.int64))
    scale = g.const("sqrt_dh", np.float32(np.sqrt(dh)))
    sqrt2 = g.const("sqrt2", np.float32(np.sqrt(2.0)))
    one, half = g.const("one", np.float32(1.0)), g.const("half", np.float32(0.5))
    xavier = np.sqrt(1.0 / d)

    def heads_of(t, perm):
        return g.op("Transpose", [g.op("Reshape", [t, split_shape])], perm=perm)

    for _ in range(layers):
        h = g.layernorm(x, d)
        q = heads_of(g.dense(h, d, d, xavier), [0, 2, 1, 3])                    # [1,4,16,8]
        k = heads_of(g.dense(h, d, d, xavier), [0, 2, 3, 1])                    # [1,4,8,16]
        v = heads_of(g.dense(h, d, d, xavier), [0, 2, 1, 3])
        att = g.op("Softmax", [g.op("Div", [g.op("MatMul", [q, k]), scale])], axis=-1)
        o = g.op("Transpose", [g.op("MatMul", [att, v])], perm=[0, 2, 1, 3])    # [1,16,4,8]
        o = g.dense(g.op("Reshape", [o, merge_shape]), d, d, xavier)
        x = g.op("Add", [x, o])
        h = g.dense(g.layernorm(x, d), d, ffn)
        erf = g.op("Erf", [g.op("Div", [h, sqrt2])])
        h = g.op("Mul", [g.op("Mul", [h, half]), g.op("Add", [erf, one])])      # GELU
        x = g.op("Add", [x, g.dense(h, ffn, d, xavier)])
    g.layernorm(x, d, out="hidden")
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])
    return g.model("transformer_encoder", [ids], [f32("hidden", [1, seq, d])])


MODELS = {"mlp": mlp, "resnet_style": resnet_style, "mobilenetv2_style": mobilenetv2_style,
          "transformer_encoder": transformer_encoder}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", nargs="?")
    ap.add_argument("--example", metavar="DIR", help="write only DIR/mlp.onnx")
    args = ap.parse_args()
    if bool(args.outdir) == bool(args.example):
        ap.error("give exactly one of OUTDIR or --example DIR")
    outdir = args.example or args.outdir
    names = ["mlp"] if args.example else list(MODELS)
    os.makedirs(outdir, exist_ok=True)
    for name in names:
        path = os.path.join(outdir, f"{name}.onnx")
        onnx.save(MODELS[name](), path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
