//! Tuning records through the compile paths: a `Session` given `--db` compiles the kernels
//! that have a matching record with the record's schedule (and computes the same outputs),
//! ignores records of another target, and the AOT build takes records at 1 thread.

use atomc::session::{Backend, Options, Session, decompose_strict, random_inputs};
use ir::Tensor;
use ir::infer::InputShapes;
use ir::partition::Step;
use ir::schedule::Schedule;
use search::records::{Db, Record};
use std::path::{Path, PathBuf};
use targets::Target;

const MODEL: &str = "examples/mlp.onnx";

fn shapes() -> InputShapes {
    [("x".to_string(), vec![3, 64])].into_iter().collect()
}

/// The kernels the JIT compiles for the example MLP.
fn kernels() -> anyhow::Result<Vec<ir::kernel::Kernel>> {
    let model = ir::onnx::import_file(Path::new(MODEL))?;
    let g = decompose_strict(&ir::infer::specialize(&model.graph, &shapes())?)?;
    let plan = ir::partition::partition(&g)?;
    Ok(plan.steps.into_iter().filter_map(|s| if let Step::Kernel { kernel, .. } = s { Some(kernel) } else { None }).collect())
}

/// A records file with a naive-schedule record for every kernel on `target` at `threads`.
fn write_records(path: &Path, target: &Target, threads: u32) -> anyhow::Result<usize> {
    let _ = std::fs::remove_file(path);
    let db = Db::open(path);
    let ks = kernels()?;
    for k in &ks {
        db.append(&Record::new(k, target, Schedule::naive(), 1000.0, 5, "test", threads))?;
    }
    Ok(ks.len())
}

fn run(db: &Path) -> anyhow::Result<(Vec<Tensor>, usize)> {
    let options = Options { backend: Backend::Cranelift, threads: Some(1), db: Some(db.to_path_buf()), ..Options::default() };
    let mut session = Session::load(MODEL, options)?;
    let inputs = random_inputs(session.model(), &shapes(), 3)?;
    let outputs = session.run(inputs)?.into_iter().map(|(_, t)| t).collect();
    Ok((outputs, session.tuned_kernels()))
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("atomc-records-e2e-{}-{name}.jsonl", std::process::id()))
}

#[test]
fn a_session_uses_matching_records_only() -> anyhow::Result<()> {
    let cranelift = Target::host().with_vector_bits(128);
    let (matching, foreign, missing) = (scratch("matching"), scratch("foreign"), scratch("missing"));
    let n = write_records(&matching, &cranelift, 1)?;
    assert!(n >= 2, "the MLP has {n} kernels");
    write_records(&foreign, &Target::host().with_vector_bits(256), 1)?;
    let _ = std::fs::remove_file(&missing);

    let (tuned, tuned_count) = run(&matching)?;
    let (other, other_count) = run(&foreign)?;
    let (none, none_count) = run(&missing)?;
    for p in [&matching, &foreign] {
        let _ = std::fs::remove_file(p);
    }
    assert_eq!(tuned_count, n, "every kernel takes its record");
    assert_eq!(other_count, 0, "records of another target are not used");
    assert_eq!(none_count, 0);
    // The naive schedule computes what the heuristic's does (up to FMA rounding).
    assert_eq!(tuned.len(), none.len());
    for ((a, b), c) in tuned.iter().zip(&none).zip(&other) {
        let (a, b, c) = (a.as_slice::<f32>(), b.as_slice::<f32>(), c.as_slice::<f32>());
        assert_eq!(b, c);
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        assert!(!a.is_empty() && a.len() == b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
    Ok(())
}

#[test]
fn the_aot_build_takes_records_at_one_thread() -> anyhow::Result<()> {
    let model = ir::onnx::import_file(Path::new(MODEL))?;
    let cranelift = Target::host().with_vector_bits(128);
    let (one, four) = (scratch("aot1"), scratch("aot4"));
    let n = write_records(&one, &cranelift, 1)?;
    write_records(&four, &cranelift, 4)?;
    let tuned = |p: &Path| -> anyhow::Result<usize> {
        let planner = atomc::tuning::planner(Some(p), 1)?;
        Ok(atomc::aot::build_planned(&model.graph, "mlp", &shapes(), &planner)?.tuned_kernels)
    };
    let (at_one, at_four) = (tuned(&one), tuned(&four));
    for p in [&one, &four] {
        let _ = std::fs::remove_file(p);
    }
    assert_eq!(at_one?, n);
    assert_eq!(at_four?, 0);
    Ok(())
}
