//! Data-driven interaction scenarios for drakkar-raft, in the style of etcd-raft's interaction tests.
//!
//! Every `tests/testdata/*.txt` file is a scenario run against a fresh [`interaction::Env`]; the commands
//! are documented in `tests/interaction/mod.rs`. Run one file with `SCENARIO=<name>`; rewrite the expected
//! outputs in place with `REWRITE=1` (then read the diff: the expected outputs are the specification).

mod interaction;

use std::path::Path;

#[test]
fn scenarios() {
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| v == "1");
    let only = std::env::var("SCENARIO").ok();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/testdata")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .filter(|p| only.as_ref().is_none_or(|o| p.file_stem().is_some_and(|s| s == o.as_str())))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let mut env = interaction::Env::default();
        failures.extend(interaction::datadriven::run_file(file, rewrite, |tc| env.handle(tc)));
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
