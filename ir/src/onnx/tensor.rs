//! `TensorProto` to [`Tensor`]: raw and typed fields, external data kept inside the model
//! folder, every size checked before anything is allocated.

use super::proto::TensorProto;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::fmt_shape;
use crate::tensor::{checked_numel, Data, Tensor};
use half::{bf16, f16};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Decodes a tensor. `base_dir` is the model's folder, for external data (`None`: external
/// data is refused).
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let code = t.data_type.unwrap_or(0);
    let dtype = DType::from_onnx_code(code).ok_or_else(|| {
        Error::Unsupported(format!("tensor data type {} ({code})", DType::onnx_code_name(code)))
    })?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(Error::InvalidModel(format!("negative dimension {d} in dims {:?}", t.dims)));
        }
        shape.push(usize::try_from(d).map_err(|_| Error::InvalidModel(format!("dimension {d} is too large")))?);
    }
    let n = checked_numel(&shape)?;
    if t.segment.is_some() {
        return Err(Error::Unsupported("segmented tensors".into()));
    }
    let nbytes = n * dtype.size();
    if t.data_location == Some(1) {
        let bytes = read_external(t, base_dir, nbytes)?;
        return Tensor::new(shape, from_le_bytes(dtype, &bytes));
    }
    if let Some(raw) = &t.raw_data {
        if raw.len() != nbytes {
            return Err(Error::InvalidModel(format!(
                "raw data holds {} bytes but {} of shape {} needs {nbytes}",
                raw.len(),
                dtype,
                fmt_shape(&shape)
            )));
        }
        return Tensor::new(shape, from_le_bytes(dtype, raw));
    }
    let count = |len: usize, field: &str| -> Result<()> {
        if len != n {
            return Err(Error::InvalidModel(format!(
                "{field} holds {len} values but shape {} needs {n}",
                fmt_shape(&shape)
            )));
        }
        Ok(())
    };
    let i32s = &t.int32_data;
    let data = match dtype {
        DType::F32 => {
            count(t.float_data.len(), "float_data")?;
            Data::F32(t.float_data.clone())
        }
        DType::F64 => {
            count(t.double_data.len(), "double_data")?;
            Data::F64(t.double_data.clone())
        }
        DType::I64 => {
            count(t.int64_data.len(), "int64_data")?;
            Data::I64(t.int64_data.clone())
        }
        DType::U32 | DType::U64 => {
            count(t.uint64_data.len(), "uint64_data")?;
            if dtype == DType::U32 {
                Data::U32(t.uint64_data.iter().map(|&v| v as u32).collect())
            } else {
                Data::U64(t.uint64_data.clone())
            }
        }
        DType::I32 | DType::I16 | DType::I8 | DType::U16 | DType::U8 | DType::Bool | DType::F16 | DType::BF16 => {
            count(i32s.len(), "int32_data")?;
            match dtype {
                DType::I32 => Data::I32(i32s.clone()),
                DType::I16 => Data::I16(i32s.iter().map(|&v| v as i16).collect()),
                DType::I8 => Data::I8(i32s.iter().map(|&v| v as i8).collect()),
                DType::U16 => Data::U16(i32s.iter().map(|&v| v as u16).collect()),
                DType::U8 => Data::U8(i32s.iter().map(|&v| v as u8).collect()),
                DType::Bool => Data::Bool(i32s.iter().map(|&v| v != 0).collect()),
                DType::F16 => Data::F16(i32s.iter().map(|&v| f16::from_bits(v as u16)).collect()),
                _ => Data::BF16(i32s.iter().map(|&v| bf16::from_bits(v as u16)).collect()),
            }
        }
    };
    Tensor::new(shape, data)
}

/// Little-endian bytes (length already checked) to typed data.
fn from_le_bytes(dtype: DType, b: &[u8]) -> Data {
    macro_rules! conv {
        ($t:ty, $n:expr, $variant:ident) => {
            Data::$variant(
                b.chunks_exact($n)
                    .map(|c| {
                        let mut a = [0u8; $n];
                        a.copy_from_slice(c);
                        <$t>::from_le_bytes(a)
                    })
                    .collect(),
            )
        };
    }
    match dtype {
        DType::F32 => conv!(f32, 4, F32),
        DType::F64 => conv!(f64, 8, F64),
        DType::I8 => conv!(i8, 1, I8),
        DType::U8 => conv!(u8, 1, U8),
        DType::I16 => conv!(i16, 2, I16),
        DType::U16 => conv!(u16, 2, U16),
        DType::I32 => conv!(i32, 4, I32),
        DType::U32 => conv!(u32, 4, U32),
        DType::I64 => conv!(i64, 8, I64),
        DType::U64 => conv!(u64, 8, U64),
        DType::Bool => Data::Bool(b.iter().map(|&v| v != 0).collect()),
        DType::F16 => Data::F16(b.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect()),
        DType::BF16 => Data::BF16(b.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect()),
    }
}

/// Reads `nbytes` of external data, refusing paths that leave the model's folder.
fn read_external(t: &TensorProto, base_dir: Option<&Path>, nbytes: usize) -> Result<Vec<u8>> {
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    for e in &t.external_data {
        let value = e.value.clone().unwrap_or_default();
        let parse = |what: &str| {
            value.parse::<u64>().map_err(|_| {
                Error::InvalidModel(format!("external data {what} '{value}' is not a non-negative integer"))
            })
        };
        match e.key.as_deref().unwrap_or("") {
            "location" => location = Some(value.clone()),
            "offset" => offset = parse("offset")?,
            "length" => length = Some(parse("length")?),
            _ => {}
        }
    }
    let location =
        location.ok_or_else(|| Error::InvalidModel("external data without a 'location'".into()))?;
    let base = base_dir.ok_or_else(|| {
        Error::InvalidModel(format!(
            "external data '{location}' needs the model's folder, but the model was given as bytes"
        ))
    })?;
    let rel = Path::new(&location);
    let escapes = rel.is_absolute()
        || rel.components().any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_)));
    if escapes || location.is_empty() {
        return Err(Error::InvalidModel(format!(
            "external data path '{location}' leaves the model's folder"
        )));
    }
    let path: PathBuf = base.join(rel);
    // Symlinks may still point outside: compare canonical paths.
    let io = |cause| Error::Io { path: path.clone(), cause };
    let canon_base = base.canonicalize().map_err(|cause| Error::Io { path: base.to_path_buf(), cause })?;
    let canon = path.canonicalize().map_err(io)?;
    if !canon.starts_with(&canon_base) {
        return Err(Error::InvalidModel(format!(
            "external data path '{location}' leaves the model's folder"
        )));
    }
    if let Some(len) = length
        && len != nbytes as u64 {
            return Err(Error::InvalidModel(format!(
                "external data '{location}' has length {len} but the tensor needs {nbytes} bytes"
            )));
        }
    let mut f = std::fs::File::open(&canon).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    if offset.checked_add(nbytes as u64).is_none_or(|end| end > size) {
        return Err(Error::InvalidModel(format!(
            "external data '{location}' is {size} bytes, too short for {nbytes} bytes at offset {offset}"
        )));
    }
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; nbytes];
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}
