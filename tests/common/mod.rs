//! Helpers shared by the integration tests (each test file that needs them declares
//! `mod common;`).

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
