//! Fuzzes the ONNX importer and shape inference: any byte string must give a model or an
//! error, never a panic, a hang or an unbounded allocation.
//! Run: `cargo fuzz run import` (from the repository root; needs cargo-fuzz).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = ir::onnx::import_bytes(data, None) {
        let g = &model.graph;
        let shapes = g
            .inputs
            .iter()
            .map(|i| {
                let s = i.dims.iter().map(|d| if let ir::Dim::Fixed(n) = d { (*n).min(64) } else { 1 }).collect();
                (g.name(i.value).to_string(), s)
            })
            .collect();
        let _ = ir::infer::specialize(g, &shapes);
    }
});
