//! Validation from YAML fixtures: `fixtures/valid` pass, `fixtures/invalid` and `fixtures/immutable` fail
//! on exactly the fields their `# expect:` lines name.

mod common;

use common::{expectations, fixtures_in, load, load_all};
use drakkar_operator::validate::{Founding, ProblemKind, validate};

#[test]
fn valid_fixtures_pass() {
    for path in fixtures_in("valid") {
        let dk = load(&path);
        assert_eq!(validate(&dk, None), vec![], "{}", path.display());
        let founded = Founding::from_spec(&dk);
        assert_eq!(validate(&dk, Some(&founded)), vec![], "{} against itself", path.display());
    }
}

#[test]
fn invalid_fixtures_fail_on_the_expected_fields() {
    for path in fixtures_in("invalid") {
        let dk = load(&path);
        let problems = validate(&dk, None);
        let mut fields: Vec<String> = problems.iter().map(|p| p.field.clone()).collect();
        fields.sort();
        assert_eq!(fields, expectations(&path), "{}: {problems:?}", path.display());
        assert!(problems.iter().all(|p| p.kind == ProblemKind::Invalid && !p.message.is_empty()));
    }
}

#[test]
fn immutable_changes_are_refused() {
    for path in fixtures_in("immutable") {
        let docs = load_all(&path);
        assert_eq!(docs.len(), 2, "{}", path.display());
        let founded = Founding::from_spec(&docs[0]);
        let problems = validate(&docs[1], Some(&founded));
        let mut fields: Vec<String> = problems.iter().map(|p| p.field.clone()).collect();
        fields.sort();
        assert_eq!(fields, expectations(&path), "{}: {problems:?}", path.display());
        assert!(problems.iter().all(|p| p.kind == ProblemKind::Immutable), "{problems:?}");
        // The same spec on its own (a new cluster) is fine.
        assert_eq!(validate(&docs[1], None), vec![], "{}", path.display());
    }
}

#[test]
fn messages_say_what_changed() {
    let docs = load_all(&common::fixture("immutable/groups-and-state-machine.yaml"));
    let problems = validate(&docs[1], Some(&Founding::from_spec(&docs[0])));
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.contains(&"spec.groups: cannot change from 4 to 8 after the cluster was created".to_string())
    );
    assert!(text.contains(
        &"spec.stateMachine: cannot change from memory to disk after the cluster was created".to_string()
    ));
}

#[test]
fn examples_are_valid_clusters() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut dk = load(&path);
        dk.metadata.namespace = Some("default".into());
        assert_eq!(validate(&dk, None), vec![], "{}", path.display());
        n += 1;
    }
    assert!(n >= 5, "examples/ holds the cluster examples");
}
