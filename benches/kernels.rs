//! Criterion benches of single-operator workloads on the Cranelift backend, named after what
//! they measure: `gemm_f32_1024` (MatMul 1024x1024 by 1024x1024), `conv3x3_64_56` (Conv
//! 64->64, 3x3, pad 1, on 1x64x56x56), `softmax_128x1024` (axis -1) and
//! `layernorm_128x1024` (LayerNormalization over the last axis, with scale and bias).
//!
//! Each workload is a one-node ONNX model built here with the importer's protobuf messages
//! and written to the temp directory (weights are graph inputs, so nothing large is
//! stored); the session is prepared outside the timed loop and every iteration runs it on
//! copies of seeded random inputs. Run with `cargo bench --bench kernels`; a workload
//! the backend cannot compile yet is reported and skipped.

use atomc::session::{random_inputs, Backend, Options, Session};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use ir::infer::InputShapes;
use ir::onnx::proto::{
    attribute_type, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use ir::Tensor;
use prost::Message;
use std::time::{Duration, Instant};

/// ONNX `TensorProto.DataType` FLOAT.
const FLOAT: i32 = 1;

/// A one-node workload: its ONNX node, inputs and output (all f32).
struct Workload {
    name: &'static str,
    op: &'static str,
    attrs: Vec<AttributeProto>,
    inputs: Vec<(&'static str, Vec<usize>)>,
    output: (&'static str, Vec<usize>),
    /// Floating-point operations of one run, when reported as throughput.
    flops: Option<u64>,
}

fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let dim = shape
        .iter()
        .map(|&d| tensor_shape_proto::Dimension { value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)) })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(FLOAT),
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.to_string()), r#type: Some(attribute_type::INTS), ints: v.to_vec(), ..Default::default() }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.to_string()), r#type: Some(attribute_type::INT), i: Some(v), ..Default::default() }
}

impl Workload {
    fn model_bytes(&self) -> Vec<u8> {
        let node = NodeProto {
            input: self.inputs.iter().map(|(n, _)| n.to_string()).collect(),
            output: vec![self.output.0.to_string()],
            name: Some(self.name.to_string()),
            op_type: Some(self.op.to_string()),
            domain: None,
            attribute: self.attrs.clone(),
        };
        let graph = GraphProto {
            node: vec![node],
            name: Some(self.name.to_string()),
            input: self.inputs.iter().map(|(n, s)| value_info(n, s)).collect(),
            output: vec![value_info(self.output.0, &self.output.1)],
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
            producer_name: Some("atomc benches/kernels.rs".to_string()),
            graph: Some(graph),
            ..Default::default()
        };
        model.encode_to_vec()
    }

    /// The prepared session and its inputs, or why not.
    fn prepare(&self) -> anyhow::Result<(Session, Vec<(String, Tensor)>)> {
        let path = std::env::temp_dir().join(format!("atomc-bench-{}-{}.onnx", self.name, std::process::id()));
        std::fs::write(&path, self.model_bytes())?;
        let loaded = Session::load(&path, Options { backend: Backend::Cranelift, threads: Some(1), ..Options::default() });
        std::fs::remove_file(&path)?;
        let mut session = loaded?;
        let shapes: InputShapes = self.inputs.iter().map(|(n, s)| (n.to_string(), s.clone())).collect();
        session.prepare(&shapes)?;
        let inputs = random_inputs(session.model(), &shapes, 0)?;
        Ok((session, inputs))
    }
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "gemm_f32_1024",
            op: "MatMul",
            attrs: vec![],
            inputs: vec![("a", vec![1024, 1024]), ("b", vec![1024, 1024])],
            output: ("y", vec![1024, 1024]),
            flops: Some(2 * 1024 * 1024 * 1024),
        },
        Workload {
            name: "conv3x3_64_56",
            op: "Conv",
            attrs: vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1]), ints("strides", &[1, 1])],
            inputs: vec![("x", vec![1, 64, 56, 56]), ("w", vec![64, 64, 3, 3]), ("bias", vec![64])],
            output: ("y", vec![1, 64, 56, 56]),
            flops: Some(2 * 64 * 56 * 56 * 64 * 9),
        },
        Workload {
            name: "softmax_128x1024",
            op: "Softmax",
            attrs: vec![int("axis", -1)],
            inputs: vec![("x", vec![128, 1024])],
            output: ("y", vec![128, 1024]),
            flops: None,
        },
        Workload {
            name: "layernorm_128x1024",
            op: "LayerNormalization",
            attrs: vec![int("axis", -1)],
            inputs: vec![("x", vec![128, 1024]), ("scale", vec![1024]), ("bias", vec![1024])],
            output: ("y", vec![128, 1024]),
            flops: None,
        },
    ]
}

fn kernels(c: &mut Criterion) {
    for w in workloads() {
        let (mut session, inputs) = match w.prepare() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: skipped, the cranelift backend cannot run it: {e:#}", w.name);
                continue;
            }
        };
        // One untimed run, which also checks that it runs at all.
        let start = Instant::now();
        if let Err(e) = session.run(inputs.clone()) {
            eprintln!("{}: skipped, the run failed: {e}", w.name);
            continue;
        }
        if let Some(flops) = w.flops {
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "{}: first run {:.1} ms = {:.2} GFLOP/s (criterion's elem/s below are FLOP/s)",
                w.name,
                secs * 1e3,
                flops as f64 / secs / 1e9
            );
        }
        let mut group = c.benchmark_group(w.name);
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        if let Some(flops) = w.flops {
            // The heavy workloads: the same iteration count per sample, not 1, 2, ... 10.
            group.throughput(Throughput::Elements(flops)).sampling_mode(SamplingMode::Flat);
        }
        group.bench_function("cranelift", |b| {
            b.iter_batched(
                || inputs.clone(),
                |i| session.run(i).map(std::hint::black_box).is_ok(),
                BatchSize::LargeInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
