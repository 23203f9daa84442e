//! ONNX import details built from prost messages: external data inside the model folder is
//! read (at an offset), paths and symlinks that leave the folder are refused, typed and raw
//! initializer fields decode to the same tensor.

#![allow(clippy::expect_used)]

use ir::onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, ValueInfoProto};
use ir::{DType, Tensor};
use prost::Message;
use std::path::{Path, PathBuf};

/// A fresh folder for test `name` under cargo's scratch space for integration tests (inside
/// `target/`, so runs do not pile folders up in the system temp dir).
fn tmp_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("atomc-import-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A model whose only output is the initializer `w`.
fn model_with(w: TensorProto) -> Vec<u8> {
    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(GraphProto {
            initializer: vec![w],
            output: vec![ValueInfoProto { name: Some("w".into()), r#type: None }],
            ..Default::default()
        }),
        ..Default::default()
    };
    m.encode_to_vec()
}

fn external(location: &str, offset: u64) -> TensorProto {
    let entry = |k: &str, v: String| StringStringEntryProto { key: Some(k.into()), value: Some(v) };
    TensorProto {
        name: Some("w".into()),
        data_type: Some(1),
        dims: vec![2, 2],
        data_location: Some(1),
        external_data: vec![entry("location", location.into()), entry("offset", offset.to_string())],
        ..Default::default()
    }
}

fn load_w(dir: &Path, bytes: &[u8]) -> ir::Result<Tensor> {
    let path = dir.join("model.onnx");
    std::fs::write(&path, bytes).expect("write model");
    let m = ir::onnx::import_file(&path)?;
    let id = m.graph.outputs[0];
    Ok((*m.graph.consts[&id]).clone())
}

#[test]
fn external_data_inside_the_folder_is_read_at_its_offset() -> ir::Result<()> {
    let dir = tmp_dir("ok");
    let mut bytes = vec![0u8; 4];
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::create_dir_all(dir.join("weights")).expect("dir");
    std::fs::write(dir.join("weights/w.bin"), &bytes).expect("write");
    let t = load_w(&dir, &model_with(external("weights/w.bin", 4)))?;
    assert_eq!(t.shape(), &[2, 2]);
    assert_eq!(t.as_slice::<f32>(), Some(&[1.0, 2.0, 3.0, 4.0][..]));
    Ok(())
}

#[cfg(unix)]
#[test]
fn a_symlink_out_of_the_folder_is_refused() {
    let dir = tmp_dir("symlink");
    let outside = tmp_dir("outside");
    std::fs::write(outside.join("secret.bin"), [0u8; 16]).expect("write");
    std::os::unix::fs::symlink(outside.join("secret.bin"), dir.join("w.bin")).expect("symlink");
    let err = load_w(&dir, &model_with(external("w.bin", 0))).expect_err("must be refused");
    assert!(err.to_string().contains("leaves the model's folder"), "{err}");
}

#[test]
fn raw_and_typed_fields_decode_alike() -> ir::Result<()> {
    let values = [1.5f32, -2.0, 0.25, 8.0];
    let typed = TensorProto { name: Some("w".into()), data_type: Some(1), dims: vec![4], float_data: values.to_vec(), ..Default::default() };
    let raw = TensorProto {
        name: Some("w".into()),
        data_type: Some(1),
        dims: vec![4],
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    };
    let a = ir::onnx::tensor_from_proto(&typed, None)?;
    let b = ir::onnx::tensor_from_proto(&raw, None)?;
    assert_eq!(a, b);
    assert_eq!(a.dtype(), DType::F32);
    let f16 = TensorProto { data_type: Some(10), dims: vec![1], int32_data: vec![0x3C00], ..Default::default() };
    assert_eq!(ir::onnx::tensor_from_proto(&f16, None)?.to_f64_vec(), vec![1.0]);
    Ok(())
}

#[test]
fn a_model_given_as_bytes_cannot_use_external_data() {
    let err = ir::onnx::import_bytes(&model_with(external("w.bin", 0)), None).expect_err("no folder");
    assert!(err.to_string().contains("needs the model's folder"), "{err}");
}
