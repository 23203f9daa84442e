//! Zoo and real models run through `atomc run` and compared with ONNX Runtime (an
//! unoptimized session, by `tools/models/reference.py`). The metric is the max absolute
//! error divided by the max absolute reference value, per output, bound 1e-4.
//!
//! The references live in `$ATOMC_MODELS/refs/<model>/` (default `target/cache/models`),
//! made by `scripts/test.sh`. Without them a test says so and passes, unless
//! `ATOMC_REQUIRE_DATA=1`.

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const MAX_REL_ERROR: f64 = 1e-4;

fn models_dir() -> PathBuf {
    std::env::var_os("ATOMC_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cache/models"))
}

/// Max |got - want| / max |want|.
fn rel_error(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    let err = got.iter().zip(want).fold(0.0f64, |m, (a, b)| if a.is_nan() != b.is_nan() { f64::INFINITY } else { m.max((a - b).abs()) });
    err / scale
}

fn check_model(stem: &str, backend: &str) {
    let refs = models_dir().join("refs").join(stem);
    let manifest_path = refs.join("manifest.json");
    let Ok(text) = std::fs::read_to_string(&manifest_path) else {
        let require = std::env::var("ATOMC_REQUIRE_DATA").is_ok_and(|v| v == "1");
        assert!(!require, "missing {} (run scripts/test.sh)", manifest_path.display());
        eprintln!("skipped: no reference data at {} (run scripts/test.sh)", manifest_path.display());
        return;
    };
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    let model = Path::new(manifest["model"].as_str().expect("manifest names the model"));
    // References made in another checkout name its cache: take the same `zoo/` or `real/`
    // file under this cache then.
    let relocated = model.parent().and_then(Path::file_name).zip(model.file_name()).map(|(dir, file)| models_dir().join(dir).join(file));
    let model = match relocated {
        Some(m) if !model.exists() && m.exists() => m,
        _ => model.to_path_buf(),
    };
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("models").join(format!("{stem}-{backend}"));
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atomc"));
    cmd.arg("run").arg(&model).args(["--backend", backend, "--output-dir"]).arg(&out_dir);
    for input in manifest["inputs"].as_array().expect("inputs") {
        let name = input["name"].as_str().expect("input name");
        let file = refs.join(input["file"].as_str().expect("input file"));
        cmd.arg("--input").arg(format!("{name}={}", file.display()));
    }
    let out = cmd.output().expect("atomc runs");
    assert!(out.status.success(), "atomc run failed: {}", String::from_utf8_lossy(&out.stderr));
    for output in manifest["outputs"].as_array().expect("outputs") {
        let name = output["name"].as_str().expect("output name");
        let want = atomc::npy::read(&refs.join(output["file"].as_str().expect("file"))).expect("reference npy");
        let got = atomc::npy::read(&out_dir.join(format!("{}.npy", atomc::npy::sanitize(name)))).expect("atomc output");
        assert_eq!(got.shape(), want.shape(), "{stem}: output '{name}' shape");
        assert_eq!(got.dtype(), want.dtype(), "{stem}: output '{name}' dtype");
        let err = rel_error(&got.to_f64_vec(), &want.to_f64_vec());
        eprintln!("{stem} ({backend}): output '{name}' max relative error {err:.3e}");
        assert!(err <= MAX_REL_ERROR, "{stem} ({backend}): output '{name}' differs from ONNX Runtime: rel error {err:.3e}");
    }
}

/// One test module per model, with a test per backend.
macro_rules! model_tests {
    ($($test:ident => $stem:literal),* $(,)?) => {
        $(mod $test {
            #[test] fn interp() { super::check_model($stem, "interp"); }
            #[test] fn interp_atoms() { super::check_model($stem, "interp-atoms"); }
            #[test] fn cranelift() { super::check_model($stem, "cranelift"); }
            #[test] fn interp_kernels() { super::check_model($stem, "interp-kernels"); }
            #[cfg(feature = "llvm")]
            #[test] fn llvm() { super::check_model($stem, "llvm"); }
        })*
    };
}

model_tests! {
    zoo_mlp => "mlp",
    zoo_resnet_style => "resnet_style",
    zoo_mobilenetv2_style => "mobilenetv2_style",
    zoo_transformer_encoder => "transformer_encoder",
    real_yolov8n_320 => "yolov8n_320",
    real_ppocrv4_det => "ppocrv4_det",
    real_ppocrv4_rec => "ppocrv4_rec",
    real_ppocr_cls => "ppocr_cls",
}
