#!/usr/bin/env python3
"""Writes the bad-input corpus: malformed or unsupported ONNX models, one file each, and
`expected.txt` with the text the error for each must contain. Run with a Python that has
`onnx` (the test venv): `python3 tests/bad_models/generate.py tests/bad_models`. The
outputs are committed; the Rust test `tests/bad_input.rs` reads them.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
CASES = []  # (file, expected substring)


def model(nodes, inputs, outputs, inits=(), opset=17, domain_opsets=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in domain_opsets]
    return helper.make_model(g, opset_imports=ops, ir_version=8)


def vi(name, dtype=TensorProto.FLOAT, shape=(2, 3)):
    return helper.make_tensor_value_info(name, dtype, shape)


def save(name, m, expect):
    data = m if isinstance(m, bytes) else m.SerializeToString()
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    CASES.append((name, expect))


def relu_model():
    return model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x")], [vi("y")])


def raw_tensor(name, dtype, dims, float_data=(), raw=None):
    """A TensorProto built field by field, so inconsistent ones can be made."""
    t = TensorProto()
    t.name, t.data_type = name, dtype
    t.dims.extend(dims)
    t.float_data.extend(float_data)
    if raw is not None:
        t.raw_data = raw
    return t


good = relu_model().SerializeToString()

# --- not a model at all
save("truncated.onnx", good[: len(good) // 2], "not a valid ONNX protobuf")
save("not_protobuf.onnx", b"this is a text file, not an ONNX model\n", "not a valid ONNX protobuf")
save("empty_file.onnx", b"", "no opset_import for the default ONNX domain")
# field 7 (graph) sent as a varint instead of a message
save("graph_field_is_varint.onnx", bytes([0x08, 0x08, 0x38, 0x05]), "not a valid ONNX protobuf")
# a 2 GB length prefix on a tiny file
save("huge_length_prefix.onnx", bytes([0x3A, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00]), "not a valid ONNX protobuf")
save("random_garbage.onnx", bytes(np.random.RandomState(0).randint(0, 256, 200).astype(np.uint8)), "not a valid ONNX protobuf")

# --- model-level problems
m = relu_model()
m.ClearField("graph")
save("no_graph.onnx", m, "the model has no graph")
m = relu_model()
del m.opset_import[:]
save("no_default_opset.onnx", m, "no opset_import for the default ONNX domain")
m = relu_model()
m.opset_import[0].version = 99
save("opset_too_new.onnx", m, "opset 99")
m = relu_model()
m.opset_import[0].version = 3
save("opset_too_old.onnx", m, "opset 3")

# --- graph structure
save("graph_cycle.onnx", model(
    [helper.make_node("Add", ["x", "b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second")],
    [vi("x")], [vi("a")]), "cycle through node")
save("dangling_input.onnx", model(
    [helper.make_node("Add", ["x", "nowhere"], ["y"], name="add")], [vi("x")], [vi("y")]),
    "input 'nowhere' is not produced")
save("duplicate_node_output.onnx", model(
    [helper.make_node("Relu", ["x"], ["y"], name="r1"), helper.make_node("Neg", ["x"], ["y"], name="r2")],
    [vi("x")], [vi("y")]), "'y' is defined more than once")
save("duplicate_graph_input.onnx", model(
    [helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x"), vi("x")], [vi("y")]),
    "graph input 'x' is defined more than once")
w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
save("duplicate_initializer.onnx", model(
    [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x")], [vi("y")], inits=[w, w]),
    "initializer 'w' is defined more than once")
save("undefined_graph_output.onnx", model(
    [helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x")], [vi("zzz")]),
    "graph output 'zzz' is not produced")
save("no_graph_outputs.onnx", model(
    [helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x")], []), "the graph has no outputs")
inp = vi("x")
inp.type.ClearField("tensor_type")
save("input_without_type.onnx", model([helper.make_node("Relu", ["x"], ["y"], name="r")], [inp], [vi("y")]),
     "graph input 'x': invalid model: the input has no type")

# --- tensors and dims
t = raw_tensor("w", TensorProto.FLOAT, [2, -3])
save("negative_initializer_dim.onnx", model(
    [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x")], [vi("y")], inits=[t]),
    "initializer 'w': invalid model: negative dimension -3")
save("negative_input_dim.onnx", model(
    [helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", shape=(2, -5))], [vi("y")]),
    "dim 1 is negative (-5)")
t = raw_tensor("w", TensorProto.FLOAT, [1 << 20, 1 << 20])
save("absurd_initializer_dims.onnx", model(
    [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x")], [vi("y")], inits=[t]),
    "more than 2^31 elements")
save("absurd_input_dims.onnx", model(
    [helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", shape=(1 << 14, 1 << 14, 1 << 14))], [vi("y")]),
    "more than 2^31 elements")
shape = numpy_helper.from_array(np.array([1 << 40], np.int64), "shape")
save("absurd_constant_of_shape.onnx", model(
    [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="fill"),
     helper.make_node("Add", ["x", "big"], ["y"], name="add")],
    [vi("x", shape=(1,))], [vi("y", shape=(1 << 40,))], inits=[shape]), "a ConstantOfShape dim would be 1099511627776")
t = raw_tensor("w", TensorProto.FLOAT, [2, 3], raw=b"\x00" * 12)
save("initializer_raw_size_mismatch.onnx", model(
    [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x")], [vi("y")], inits=[t]),
    "raw data holds 12 bytes but f32 of shape [2,3] needs 24")
t = raw_tensor("w", TensorProto.FLOAT, [2, 3], float_data=[1.0, 2.0])
save("initializer_count_mismatch.onnx", model(
    [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x")], [vi("y")], inits=[t]),
    "float_data holds 2 values but shape [2,3] needs 6")
t = raw_tensor("w", TensorProto.COMPLEX64, [1], float_data=[1.0, 0.0])
save("unsupported_initializer_dtype.onnx", model(
    [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x")], [vi("y")], inits=[t]),
    "tensor data type COMPLEX64")
save("unsupported_input_dtype.onnx", model(
    [helper.make_node("Identity", ["x"], ["y"], name="id")], [vi("x", TensorProto.STRING)], [vi("y", TensorProto.STRING)]),
    "element type STRING")


def external(name, location, expect, length=None):
    t = raw_tensor("w", TensorProto.FLOAT, [2, 3])
    t.data_location = TensorProto.EXTERNAL
    for k, v in [("location", location)] + ([("length", str(length))] if length is not None else []):
        e = t.external_data.add()
        e.key, e.value = k, v
    save(name, model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [vi("x")], [vi("y")], inits=[t]), expect)


external("external_data_parent_dir.onnx", "../../etc/passwd", "external data path '../../etc/passwd' leaves the model's folder")
external("external_data_absolute.onnx", "/etc/passwd", "external data path '/etc/passwd' leaves the model's folder")
external("external_data_missing_file.onnx", "no_such_weights.bin", "no_such_weights.bin")
with open(os.path.join(OUT, "short_weights.bin"), "wb") as f:
    f.write(b"\x00" * 8)
external("external_data_too_short.onnx", "short_weights.bin", "too short for 24 bytes")
external("external_data_wrong_length.onnx", "short_weights.bin", "has length 8 but the tensor needs 24 bytes", length=8)

# --- operators
save("unknown_op.onnx", model([helper.make_node("FooBar", ["x"], ["y"], name="mystery")], [vi("x")], [vi("y")]),
     "node 'mystery' (FooBar): unsupported: op 'FooBar' of domain 'ai.onnx'")
save("unknown_domain.onnx", model(
    [helper.make_node("Gelu", ["x"], ["y"], name="g", domain="com.example")], [vi("x")], [vi("y")],
    domain_opsets=[("com.example", 1)]), "node 'g' (Gelu): unsupported: op 'Gelu' of domain 'com.example'")
then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [vi("t")])
cond = vi("c", TensorProto.BOOL, ())
save("control_flow_if.onnx", model(
    [helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=then)], [cond, vi("x")], [vi("y")]),
    "node 'branch' (If): unsupported: op 'If'")
n = helper.make_node("Relu", ["x"], ["y"], name="r")
n.attribute.extend([helper.make_attribute("alpha", 1.0), helper.make_attribute("alpha", 2.0)])
save("attribute_twice.onnx", model([n], [vi("x")], [vi("y")]), "attribute 'alpha' is given twice")
n = helper.make_node("Constant", [], ["c"], name="const")
save("constant_without_value.onnx", model([n, helper.make_node("Add", ["x", "c"], ["y"], name="add")], [vi("x")], [vi("y")]),
     "node 'const' (Constant): invalid model: Constant must have exactly one attribute, has 0")
save("broadcast_mismatch.onnx", model(
    [helper.make_node("Add", ["x", "z"], ["y"], name="add")], [vi("x", shape=(2, 3)), vi("z", shape=(4,))], [vi("y")]),
    "node 'add' (Add): invalid model: shapes [2,3] and [4] cannot be broadcast together")
w = numpy_helper.from_array(np.ones((4, 5), np.float32), "w")
save("matmul_inner_mismatch.onnx", model(
    [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [vi("x", shape=(2, 3))], [vi("y")], inits=[w]),
    "node 'mm' (MatMul): invalid model: matmul inner dimensions differ")
shape = numpy_helper.from_array(np.array([4, 4], np.int64), "shape")
save("reshape_count_mismatch.onnx", model(
    [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")], [vi("x", shape=(2, 3))], [vi("y")], inits=[shape]),
    "node 'reshape' (Reshape): invalid model: cannot reshape [2,3] (6 elements) to [4,4]")
idx = numpy_helper.from_array(np.array([0, 7], np.int64), "idx")
table = numpy_helper.from_array(np.ones((5, 2), np.float32), "table")
save("gather_index_out_of_range.onnx", model(
    [helper.make_node("Gather", ["table", "idx"], ["g"], name="lookup"), helper.make_node("Add", ["x", "g"], ["y"], name="add")],
    [vi("x", shape=(2, 2))], [vi("y")], inits=[table, idx]), "node 'lookup' (Gather): invalid model: index 7 is out of range for axis 0 of size 5")
save("conv_attribute_wrong_type.onnx", model(
    [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", strides="two")],
    [vi("x", shape=(1, 1, 5, 5))], [vi("y")], inits=[numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")]),
    "node 'conv' (Conv): invalid model: attribute 'strides' must be a list of ints, got string")
save("conv_channel_mismatch.onnx", model(
    [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
    [vi("x", shape=(1, 2, 5, 5))], [vi("y")], inits=[numpy_helper.from_array(np.ones((1, 3, 3, 3), np.float32), "w")]),
    "node 'conv' (Conv): invalid model: Conv input X [1,2,5,5] has 2 channels")

with open(os.path.join(OUT, "expected.txt"), "w") as f:
    f.write("# file<TAB>text the error must contain (generated by generate.py)\n")
    for name, expect in CASES:
        f.write(f"{name}\t{expect}\n")
print(f"{len(CASES)} bad models")
