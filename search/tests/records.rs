//! The tuning-records database and the planner: concurrent appends lose nothing, damaged
//! lines are skipped with warnings, and the planner uses only records of this kernel,
//! target, thread count and compiler whose schedule is valid.

use ir::atom::{BinaryFn, ReduceFn};
use ir::dtype::DType;
use ir::kernel::{Affine, Body, Buffer, Expr, Kernel};
use ir::schedule::{Schedule, ScheduleStep};
use search::records::{Db, Planner, Record, Records, Source, compiler_version};
use std::path::PathBuf;
use targets::Target;

fn matmul(name: &str, m: usize, kk: usize, n: usize) -> Kernel {
    let load = |buf: usize, coefs: Vec<i64>| Expr::Load { buf, index: Affine { offset: 0, coefs }, guards: vec![], pad: 0.0 };
    let buf = |name: &str, numel: usize| Buffer { name: name.into(), dtype: DType::F32, numel };
    Kernel {
        name: name.into(),
        inputs: vec![buf("a", m * kk), buf("b", kk * n)],
        output: buf("c", m * n),
        out_shape: vec![m, n],
        red_shape: vec![kk],
        store: Affine { offset: 0, coefs: vec![n as i64, 1] },
        body: Body::Compute {
            reduce: Some(ReduceFn::Sum),
            body: Expr::Binary(BinaryFn::Mul, Box::new(load(0, vec![kk as i64, 0, 1])), Box::new(load(1, vec![0, 1, n as i64]))),
            epilogue: Expr::Acc,
        },
    }
}

/// A schedule the heuristic never picks for [`matmul`], to see a record used.
fn tuned() -> Schedule {
    Schedule {
        steps: vec![
            ScheduleStep::Parallel { axes: 1 },
            ScheduleStep::Vectorize { axis: 1, lanes: 4 },
            ScheduleStep::RegisterBlock { axis: 0, factor: 3 },
        ],
    }
}

fn target() -> Target {
    Target::detect_host().with_vector_bits(128)
}

/// A fresh scratch file path, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("atomc-records-{}-{name}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn two_concurrent_tuners_lose_no_record() -> anyhow::Result<()> {
    let file = Scratch::new("concurrent");
    let k = matmul("mm", 16, 8, 12);
    let t = target();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let tuners: Vec<_> = (0..2u32)
            .map(|tuner| {
                let (db, k, t) = (Db::open(&file.0), &k, &t);
                s.spawn(move || -> Result<(), search::records::Error> {
                    for i in 0..500u32 {
                        // Long method strings make each line several hundred bytes.
                        let method = format!("tuner {tuner} run {i} {}", "x".repeat(300));
                        db.append(&Record::new(k, t, tuned(), f64::from(tuner * 1000 + i), 5, &method, 1))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for tuner in tuners {
            tuner.join().map_err(|_| anyhow::anyhow!("a tuner thread panicked"))??;
        }
        Ok(())
    })?;
    let text = std::fs::read_to_string(&file.0)?;
    assert_eq!(text.lines().count(), 1000);
    for line in text.lines() {
        serde_json::from_str::<Record>(line)?;
    }
    let loaded = Db::open(&file.0).load()?;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.records.len(), 1000);
    let mut times: Vec<u64> = loaded.records.iter().map(|r| r.median_ns as u64).collect();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), 1000, "every record arrives once");
    let best = loaded.best(&k.canonical_hash(), &t.fingerprint(), 1).map(|r| r.median_ns);
    assert_eq!(best, Some(0.0));
    Ok(())
}

#[test]
fn damaged_lines_are_skipped_with_warnings() -> anyhow::Result<()> {
    let file = Scratch::new("damaged");
    let k = matmul("mm", 16, 8, 12);
    let db = Db::open(&file.0);
    db.append(&Record::new(&k, &target(), tuned(), 100.0, 5, "test", 1))?;
    let good = std::fs::read_to_string(&file.0)?;
    // Line 2 garbage, line 3 a valid record, line 4 JSON but not a record, line 5 cut short.
    let cut = &good[..good.len() / 2];
    let wrong_fields = format!("{{\"format\":1,\"compiler\":\"{}\",\"kernel\":7}}", compiler_version());
    std::fs::write(&file.0, format!("{good}garbage {{]\n{good}{wrong_fields}\n{cut}"))?;
    let loaded = db.load()?;
    assert_eq!(loaded.records.len(), 2);
    assert_eq!(loaded.warnings.len(), 3, "{:?}", loaded.warnings);
    let name = file.0.display().to_string();
    for (w, line) in loaded.warnings.iter().zip([2, 4, 5]) {
        assert!(w.starts_with(&format!("{name}:{line}: skipped")), "{w}");
    }
    // An append after the truncated line starts a line of its own.
    db.append(&Record::new(&k, &target(), tuned(), 50.0, 5, "test", 1))?;
    let loaded = db.load()?;
    assert_eq!(loaded.records.len(), 3);
    assert_eq!(loaded.warnings.len(), 3);
    assert_eq!(loaded.best(&k.canonical_hash(), &target().fingerprint(), 1).map(|r| r.median_ns), Some(50.0));
    Ok(())
}

#[test]
fn a_missing_file_has_no_records() -> anyhow::Result<()> {
    let file = Scratch::new("missing");
    let loaded = Db::open(&file.0).load()?;
    assert!(loaded.records.is_empty() && loaded.warnings.is_empty());
    Ok(())
}

fn planner_with(records: Vec<Record>) -> anyhow::Result<Planner> {
    let text: Vec<String> = records.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
    let records = Records::parse(text.join("\n").as_bytes(), "test");
    assert!(records.warnings.is_empty(), "{:?}", records.warnings);
    Ok(Planner::new(target(), 1).with_records(records))
}

#[test]
fn the_planner_uses_only_matching_valid_records() -> anyhow::Result<()> {
    let k = matmul("mm", 16, 8, 12);
    let t = target();
    let heuristic = search::best_by_model(&k, &Target { cores: 1, ..t.clone() });
    assert_ne!(heuristic, tuned());
    let record = |s: Schedule, ns: f64| Record::new(&k, &t, s, ns, 5, "test", 1);

    // Without records, and with an empty database: the heuristic.
    assert_eq!(Planner::new(t.clone(), 1).schedule(&k), (heuristic.clone(), Source::Model));
    assert_eq!(planner_with(vec![])?.schedule(&k), (heuristic.clone(), Source::Model));

    // A matching record is used, and of two the faster.
    let slow = Schedule { steps: vec![ScheduleStep::Vectorize { axis: 1, lanes: 4 }] };
    let p = planner_with(vec![record(slow, 200.0), record(tuned(), 100.0)])?;
    assert_eq!(p.schedule(&k), (tuned(), Source::Record { median_ns: 100.0 }));
    // By structure: a kernel differing only in names uses it too; another shape does not.
    assert!(p.schedule(&matmul("matmul_42", 16, 8, 12)).1.is_record());
    assert_eq!(p.schedule(&matmul("mm", 16, 8, 13)).1, Source::Model);

    // Another target fingerprint, compiler version, format or thread count: not used.
    let mut other_target = record(tuned(), 1.0);
    other_target.target = Target::detect_host().with_vector_bits(256).fingerprint();
    let mut other_compiler = record(tuned(), 1.0);
    other_compiler.compiler = "atomc 0.0.1 schedule/0 kernel/1".into();
    let mut other_format = record(tuned(), 1.0);
    other_format.format += 1;
    let mut other_threads = record(tuned(), 1.0);
    other_threads.threads = 4;
    let p = planner_with(vec![other_target, other_compiler, other_format, other_threads])?;
    assert_eq!(p.records.as_ref().map(|r| (r.records.len(), r.other_versions)), Some((2, 2)));
    assert_eq!(p.schedule(&k), (heuristic.clone(), Source::Model));

    // A record whose schedule does not validate for the kernel is passed over.
    let invalid = Schedule { steps: vec![ScheduleStep::Vectorize { axis: 0, lanes: 3 }] };
    assert!(invalid.validate(&k).is_err());
    let p = planner_with(vec![record(invalid.clone(), 1.0)])?;
    assert_eq!(p.schedule(&k), (heuristic, Source::Model));
    let p = planner_with(vec![record(invalid, 1.0), record(tuned(), 100.0)])?;
    assert_eq!(p.schedule(&k), (tuned(), Source::Record { median_ns: 100.0 }));
    Ok(())
}

#[test]
fn a_record_round_trips_through_json() -> anyhow::Result<()> {
    let k = matmul("mm", 16, 8, 12);
    let mut r = Record::new(&k, &target(), tuned(), 123.5, 25, "median of 25 runs after 3 warm-up, 1 thread", 1);
    r.gflops = Some(3.25);
    let json = serde_json::to_string(&r)?;
    assert!(json.contains(r#""schedule":{"steps":[{"Parallel":{"axes":1}},{"Vectorize":{"axis":1,"lanes":4}}"#), "{json}");
    assert_eq!(serde_json::from_str::<Record>(&json)?, r);
    assert_eq!(r.kernel, k.canonical_hash());
    assert!(r.compiler.starts_with(&format!("atomc {}", env!("CARGO_PKG_VERSION"))));
    Ok(())
}
