//! Winograd convolutions in the JIT runtime: a 3x3 conv (16 -> 16 channels over 16x16, pads
//! 1, bias, ReLU) whose weights are an initializer runs under a `winograd` schedule with its
//! filters prepared once; with the weights as a graph input (not constant) the runtime
//! compiles the heuristic schedule instead, rather than transform the filters on every
//! call. Both match the interpreter.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use atomc::session::decompose_strict;
use ir::Tensor;
use ir::onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto,
    type_proto,
};
use ir::infer::InputShapes;
use prost::Message;
use runtime::{Executable, ThreadPool};
use std::sync::Arc;

const C: usize = 16;
const H: usize = 16;

fn f32_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension { value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)) })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: Some(1), shape: Some(TensorShapeProto { dim }) })),
        }),
    }
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32).map(|i| ((i * 37 + seed * 11) % 23) as f32 * 0.05 - 0.55).collect()
}

/// `relu(conv(x, w, b))`, `w` an initializer or (`weights_input`) a graph input.
fn model(weights_input: bool) -> Vec<u8> {
    let ints = |name: &str, v: &[i64]| ir::onnx::proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(ir::onnx::proto::attribute_type::INTS),
        ints: v.to_vec(),
        ..Default::default()
    };
    let conv = NodeProto {
        input: vec!["x".into(), "w".into(), "b".into()],
        output: vec!["c".into()],
        name: Some("conv".into()),
        op_type: Some("Conv".into()),
        domain: None,
        attribute: vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
    };
    let relu = NodeProto {
        input: vec!["c".into()],
        output: vec!["y".into()],
        name: Some("relu".into()),
        op_type: Some("Relu".into()),
        domain: None,
        attribute: vec![],
    };
    let tensor = |name: &str, dims: &[usize], values: Vec<f32>| TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(1),
        name: Some(name.into()),
        float_data: values,
        ..Default::default()
    };
    let mut initializer = vec![tensor("b", &[C], data(C, 3))];
    let mut input = vec![f32_info("x", &[1, C, H, H])];
    if weights_input {
        input.push(f32_info("w", &[C, C, 3, 3]));
    } else {
        initializer.push(tensor("w", &[C, C, 3, 3], data(C * C * 9, 2)));
    }
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto {
            node: vec![conv, relu],
            name: Some("conv3x3".into()),
            initializer,
            input,
            output: vec![f32_info("y", &[1, C, H, H])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The schedules of the executable's compiled kernels and its output, checked against the
/// interpreter.
fn schedules_and_check(weights_input: bool) -> Vec<String> {
    let m = ir::onnx::import_bytes(&model(weights_input), None).unwrap();
    let mut shapes = InputShapes::new();
    shapes.insert("x".into(), vec![1, C, H, H]);
    if weights_input {
        shapes.insert("w".into(), vec![C, C, 3, 3]);
    }
    let spec = ir::infer::specialize(&m.graph, &shapes).unwrap();
    let mut inputs = vec![Tensor::from_vec(vec![1, C, H, H], data(C * H * H, 1)).unwrap()];
    if weights_input {
        inputs.push(Tensor::from_vec(vec![C, C, 3, 3], data(C * C * 9, 2)).unwrap());
    }
    let want = ir::interp::run(&spec, inputs.clone()).unwrap();
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let mut exec = Executable::from_graph(decompose_strict(&spec).unwrap(), pool).unwrap();
    exec.set_profiling(true);
    let got = exec.run(inputs).unwrap();
    let (g, w) = (got[0].to_f64_vec(), want[0].to_f64_vec());
    assert_eq!(g.len(), w.len());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "[{i}] {a} vs {b}");
    }
    exec.profile().unwrap().into_iter().filter_map(|s| s.schedule).collect()
}

#[test]
fn constant_weights_run_winograd_and_graph_input_weights_do_not() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let constant = schedules_and_check(false);
    assert!(constant.iter().any(|s| s == "winograd"), "{constant:?}");
    let input = schedules_and_check(true);
    assert!(!input.iter().any(|s| s == "winograd"), "{input:?}");
}
