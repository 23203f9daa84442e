//! Helpers shared by the integration tests (each test file that needs them declares
//! `mod common;`; each uses only some of them).
#![allow(dead_code)]

use ir::{DType, Tensor};
use std::path::{Path, PathBuf};

/// `examples/mlp.onnx` (always present), then the zoo models `names` from
/// `$ATOMC_MODELS/zoo`; without that variable they are skipped with a message, unless
/// `ATOMC_REQUIRE_DATA=1`, which makes their absence a failure.
pub fn mlp_and_zoo_models(names: &[&str]) -> Vec<PathBuf> {
    let mut models = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.onnx")];
    match std::env::var_os("ATOMC_MODELS") {
        Some(dir) => {
            let zoo = PathBuf::from(dir).join("zoo");
            models.extend(names.iter().map(|m| zoo.join(format!("{m}.onnx"))));
        }
        None if std::env::var("ATOMC_REQUIRE_DATA").is_ok_and(|v| v == "1") => {
            panic!("ATOMC_MODELS is not set and ATOMC_REQUIRE_DATA=1")
        }
        None => eprintln!("ATOMC_MODELS is not set: skipped the zoo models ({})", names.join(", ")),
    }
    models
}

/// Compares one output with a node test's reference, element by element (floats within
/// 1e-4 + 1e-3·|want|, NaN and infinities exactly, integers exactly); `Err` says how it
/// differs.
pub fn compare_elementwise(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let exact = !want.dtype().is_float();
    // 64-bit integers do not survive f64: compare them as integers.
    let wide = matches!(want.dtype(), DType::I64 | DType::U64).then(|| (got.to_i64_vec(), want.to_i64_vec()));
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = if exact {
            match &wide {
                Some((gi, wi)) => gi[i] == wi[i],
                None => a == b,
            }
        } else if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if a.is_infinite() || b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= 1e-4 + 1e-3 * b.abs()
        };
        if !ok {
            return Err(format!("element {i}: got {a}, expected {b}"));
        }
    }
    Ok(())
}
