//! `.npy` files to and from [`Tensor`]s, through the `npyz` crate.

use ir::{DType, Data, Tensor};
use npyz::WriterBuilder;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

/// Errors reading or writing `.npy` files.
#[derive(Debug, thiserror::Error)]
#[error("npy file '{path}': {msg}")]
pub struct NpyError {
    pub path: String,
    pub msg: String,
}

fn err(path: &Path, msg: impl ToString) -> NpyError {
    NpyError { path: path.display().to_string(), msg: msg.to_string() }
}

/// Reads a C-order `.npy` file of one of the supported element types.
pub fn read(path: &Path) -> Result<Tensor, NpyError> {
    let f = File::open(path).map_err(|e| err(path, e))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(f)).map_err(|e| err(path, e))?;
    if npy.order() == npyz::Order::Fortran {
        return Err(err(path, "Fortran-order arrays are not supported; save it in C order"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let typestr = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => return Err(err(path, format!("structured dtype {other:?} is not supported"))),
    };
    ir::tensor::checked_numel(&shape).map_err(|e| err(path, e))?;
    macro_rules! vec_of {
        ($t:ty, $v:ident) => {
            Data::$v(npy.into_vec::<$t>().map_err(|e| err(path, e))?)
        };
    }
    let data = match &typestr[1..] {
        "f4" => vec_of!(f32, F32),
        "f8" => vec_of!(f64, F64),
        "f2" => vec_of!(half::f16, F16),
        "i1" => vec_of!(i8, I8),
        "u1" => vec_of!(u8, U8),
        "i2" => vec_of!(i16, I16),
        "u2" => vec_of!(u16, U16),
        "i4" => vec_of!(i32, I32),
        "u4" => vec_of!(u32, U32),
        "i8" => vec_of!(i64, I64),
        "u8" => vec_of!(u64, U64),
        "b1" => vec_of!(bool, Bool),
        other => return Err(err(path, format!("element type '{other}' is not supported"))),
    };
    Tensor::new(shape, data).map_err(|e| err(path, e))
}

/// Writes a tensor as a C-order `.npy` file (bf16 is written as f32, which numpy lacks).
pub fn write(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    let t = if t.dtype() == DType::BF16 { t.cast(DType::F32) } else { t.clone() };
    let f = File::create(path).map_err(|e| err(path, e))?;
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    macro_rules! put {
        ($t:ty, $v:expr) => {{
            let mut w = npyz::WriteOptions::<$t>::new()
                .default_dtype()
                .shape(&shape)
                .writer(BufWriter::new(f))
                .begin_nd()
                .map_err(|e| err(path, e))?;
            w.extend($v.iter().copied()).map_err(|e| err(path, e))?;
            w.finish().map_err(|e| err(path, e))?;
        }};
    }
    match t.data() {
        Data::F32(v) => put!(f32, v),
        Data::F64(v) => put!(f64, v),
        Data::F16(v) => put!(half::f16, v),
        Data::BF16(_) => return Err(err(path, "bf16 was not converted")),
        Data::I8(v) => put!(i8, v),
        Data::U8(v) => put!(u8, v),
        Data::I16(v) => put!(i16, v),
        Data::U16(v) => put!(u16, v),
        Data::I32(v) => put!(i32, v),
        Data::U32(v) => put!(u32, v),
        Data::I64(v) => put!(i64, v),
        Data::U64(v) => put!(u64, v),
        Data::Bool(v) => put!(bool, v),
    }
    Ok(())
}

/// A file name for a tensor name: every character outside `[A-Za-z0-9._-]` becomes `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect()
}
