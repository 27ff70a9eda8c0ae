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
        meets_the_restricted_pod_security_level(&dk, &path);
        n += 1;
    }
    assert!(n >= 5, "examples/ holds the cluster examples");
}

/// What the `restricted` pod security level asks of a pod (the checks that depend on the pod spec the
/// operator builds from a cluster): non-root, the RuntimeDefault seccomp profile, and in every container
/// no privilege escalation and every capability dropped.
fn meets_the_restricted_pod_security_level(dk: &drakkar_operator::DrakkarCluster, path: &std::path::Path) {
    use drakkar_operator::build::{Capabilities, Input, build};
    use drakkar_operator::names::Names;
    let mut dk = dk.clone();
    dk.metadata.uid = Some("u1".into());
    let names = Names::new(dk.metadata.name.as_deref().unwrap(), "default", "cluster.local");
    let founding = Founding::from_spec(&dk);
    let caps = Capabilities::default();
    let d = build(&Input { cluster: &dk, names: &names, founding: &founding, capabilities: &caps }).unwrap();
    let pod = d.statefulset.spec.unwrap().template.spec.unwrap();
    let ctx = pod.security_context.unwrap_or_default();
    let at = path.display();
    assert_eq!(ctx.run_as_non_root, Some(true), "{at}: runAsNonRoot");
    let seccomp = ctx.seccomp_profile.map(|p| p.type_);
    assert_eq!(seccomp.as_deref(), Some("RuntimeDefault"), "{at}: seccompProfile");
    for c in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
        let sc = c.security_context.clone().unwrap_or_default();
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{at}: container {} allowPrivilegeEscalation",
            c.name
        );
        let dropped = sc.capabilities.and_then(|c| c.drop).unwrap_or_default();
        assert!(dropped.iter().any(|d| d == "ALL"), "{at}: container {} drops {dropped:?}, not ALL", c.name);
        assert_ne!(sc.privileged, Some(true), "{at}: container {} is privileged", c.name);
    }
}
