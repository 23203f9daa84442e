//! Text-form file tests of the decomposition: each `tests/decompose/*.txt` holds a
//! high-level graph, a line `---`, and the atom graph it must decompose into (printed in
//! the text form). `ATOMC_BLESS=1` rewrites the expected part. Both graphs also run on the
//! reference interpreter with seeded inputs and must agree.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ir::{DType, Tensor};
use std::path::Path;

fn seeded_input(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Tensor::from_fn_f64(dtype, shape.to_vec(), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
    })
    .unwrap()
}

#[test]
fn decomposition_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/decompose");
    let bless = std::env::var("ATOMC_BLESS").is_ok_and(|v| v == "1");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no decomposition files in {}", dir.display());
    let mut failures = Vec::new();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "txt")) {
        let text = std::fs::read_to_string(path).unwrap();
        let (src, want) = text.split_once("\n---\n").unwrap_or((&text, ""));
        let g = ir::text::parse(src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let shapes = g
            .inputs
            .iter()
            .map(|i| (g.name(i.value).to_string(), i.static_shape().expect("file graphs have static inputs")))
            .collect();
        let g = ir::infer::specialize(&g, &shapes).unwrap();
        let d = rewrite::decompose(&g, &rewrite::Options::default()).unwrap();
        let got = ir::text::print(&d.graph, Some(16));
        // Semantics: both graphs agree on seeded inputs.
        let feeds: Vec<Tensor> = g
            .inputs
            .iter()
            .enumerate()
            .map(|(k, i)| seeded_input(i.dtype, &i.static_shape().unwrap(), k as u64 + 1))
            .collect();
        let a = ir::interp::run(&g, feeds.clone()).unwrap();
        let b = ir::interp::run(&d.graph, feeds).unwrap();
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (x.to_f64_vec(), y.to_f64_vec());
            let scale = x.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let err = x.iter().zip(&y).fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
            assert!(err <= 1e-5 * scale, "{}: atom graph differs by {err}", path.display());
        }
        if bless {
            std::fs::write(path, format!("{}\n---\n{got}", src.trim_end())).unwrap();
        } else if got.trim() != want.trim() {
            failures.push(format!("{}:\n--- expected\n{}\n--- got\n{}", path.display(), want.trim(), got.trim()));
        }
    }
    assert!(failures.is_empty(), "decomposition changed (ATOMC_BLESS=1 to accept):\n{}", failures.join("\n"));
}
