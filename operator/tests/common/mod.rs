//! Fixture loading shared by the integration tests.
#![allow(dead_code)]

pub mod k8s;

use std::path::{Path, PathBuf};

use drakkar_operator::DrakkarCluster;

/// `operator/tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// The YAML files of a fixture directory, sorted.
pub fn fixtures_in(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixture(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {dir}");
    v
}

/// Every DrakkarCluster document of a file.
pub fn load_all(path: &Path) -> Vec<DrakkarCluster> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The single DrakkarCluster of a file.
pub fn load(path: &Path) -> DrakkarCluster {
    let mut all = load_all(path);
    assert_eq!(all.len(), 1, "{}", path.display());
    all.remove(0)
}

/// The `# expect: <field>` lines of a fixture, sorted.
pub fn expectations(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut v: Vec<String> =
        text.lines().filter_map(|l| l.strip_prefix("# expect: ")).map(|s| s.trim().to_string()).collect();
    v.sort();
    v
}
