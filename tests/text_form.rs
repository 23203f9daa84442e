//! The text form round-trips on real graphs: every model the importer accepts (the example,
//! the zoo and real models, the ONNX node tests) prints, parses back, and prints the same,
//! before and after specialization.

use std::path::{Path, PathBuf};

fn round_trip(path: &Path) -> Result<bool, String> {
    let Ok(model) = ir::onnx::import_file(path) else { return Ok(false) };
    let mut graphs = vec![model.graph.clone()];
    let g = &model.graph;
    let shapes = g
        .inputs
        .iter()
        .map(|i| (g.name(i.value).to_string(), i.dims.iter().map(|d| if let ir::Dim::Fixed(n) = d { *n } else { 1 }).collect()))
        .collect();
    if let Ok(spec) = ir::infer::specialize(g, &shapes) {
        graphs.push(spec);
    }
    for graph in graphs {
        let text = ir::text::print(&graph, None);
        let parsed = ir::text::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let again = ir::text::print(&parsed, None);
        if again != text {
            return Err(format!("{}: printed text changed after a parse", path.display()));
        }
    }
    Ok(true)
}

fn models() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = vec![root.join("examples/mlp.onnx")];
    let node = std::env::var_os("ATOMC_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/cache/onnx-1.22.0/onnx/backend/test/data/node"));
    if let Ok(entries) = std::fs::read_dir(node) {
        v.extend(entries.filter_map(|e| e.ok()).map(|e| e.path().join("model.onnx")));
    }
    let zoo = std::env::var_os("ATOMC_MODELS").map(PathBuf::from).unwrap_or_else(|| root.join("target/cache/models"));
    for sub in ["zoo", "real"] {
        if let Ok(entries) = std::fs::read_dir(zoo.join(sub)) {
            v.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "onnx")));
        }
    }
    v.sort();
    v
}

#[test]
fn text_form_round_trips_on_every_importable_model() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for m in models() {
        match round_trip(&m) {
            Ok(true) => checked += 1,
            Ok(false) => {}
            Err(e) => failures.push(e),
        }
    }
    eprintln!("text form round-tripped on {checked} models");
    assert!(checked >= 1, "no model could be imported");
    assert!(failures.is_empty(), "{} models failed:\n{}", failures.len(), failures.join("\n"));
}
