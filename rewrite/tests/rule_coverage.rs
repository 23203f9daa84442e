//! Meta-test: every rule in the tables has a property test. A property test names the rule
//! it checks in a `check_rule("family/what", ...)` call (which fails unless that rule
//! fired), so a rule whose name appears in no `tests/prop_*.rs` file has no test.

use std::path::Path;

#[test]
fn every_rule_has_a_property_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut sources = String::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("prop_") && name.ends_with(".rs") {
            sources.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    let missing: Vec<&str> = rewrite::rules::all()
        .iter()
        .map(|r| r.name)
        .filter(|n| !sources.contains(&format!("\"{n}\"")))
        .collect();
    assert!(missing.is_empty(), "rules without a property test: {missing:?}");
}

#[test]
fn every_rule_is_named_by_family_and_documented() {
    let mut seen = std::collections::HashSet::new();
    for r in rewrite::rules::all() {
        assert!(r.name.contains('/'), "rule {} is not named family/what", r.name);
        assert!(!r.identity.is_empty(), "rule {} has no identity line", r.name);
        assert!(seen.insert(r.name), "rule {} is defined twice", r.name);
    }
}

#[test]
fn every_op_the_importer_accepts_has_a_lowering_or_is_a_host_op() {
    let lowered: std::collections::HashSet<&str> = rewrite::rules::all()
        .iter()
        .filter_map(|r| match r.action {
            rewrite::rules::Action::Lower { ops, .. } => Some(ops.iter().copied()),
            rewrite::rules::Action::Algebra { .. } => None,
        })
        .flatten()
        .collect();
    let missing: Vec<&str> = ir::OpKind::all()
        .into_iter()
        .filter(|k| !matches!(k, ir::OpKind::Atom(_)))
        .map(|k| k.name())
        .filter(|n| !lowered.contains(n) && rewrite::host::reason(n).is_none())
        .collect();
    assert!(missing.is_empty(), "ops with neither a lowering rule nor a host-op entry: {missing:?}");
}

#[test]
fn host_ops_are_ops_the_importer_accepts() {
    for (op, why) in rewrite::host::HOST_OPS.iter().chain(rewrite::host::HOST_CASES) {
        assert!(ir::OpKind::from_name(op).is_some(), "host op {op} is not an op atomc imports");
        assert!(!why.is_empty());
    }
}
