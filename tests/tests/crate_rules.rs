//! Who may depend on whom (docs/architecture.md, "Crates"): each library crate's normal dependency tree,
//! as `cargo tree` resolves it, holds none of the crates its job does not need. Someone embedding the
//! engine compiles no gRPC, CLI, plotting or allocator crate; an application using the client compiles no
//! engine or server.

use std::collections::BTreeSet;
use std::process::Command;

/// The packages in `package`'s normal dependency tree (what its users link: no dev, build or procedural
/// macro crates), itself included.
fn tree(package: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--edges",
            "normal,no-proc-macro",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--package",
        ])
        .arg(package)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    let names: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(names.contains(package), "cargo tree -p {package} did not list {package} itself: {names:?}");
    names
}

/// Asserts that none of `banned` is in `package`'s tree.
fn assert_free_of(package: &str, banned: &[&str]) {
    let t = tree(package);
    let found: Vec<&&str> = banned.iter().filter(|b| t.contains(**b)).collect();
    assert!(found.is_empty(), "{package} depends on {found:?}, which its job does not need");
}

/// Crates of the front ends and the network, which the engine and the state machines must not pull in.
const FRONT_ENDS: &[&str] =
    &["clap", "anyhow", "plotters", "indicatif", "mimalloc", "hdrhistogram", "serde_json"];
const NETWORK: &[&str] = &["tonic", "prost", "hyper", "h2", "rustls", "drakkar-client", "drakkar-server"];
/// Dev-only crates: simulators, checkers, launchers.
const DEV_ONLY: &[&str] =
    &["drakkar-sim", "drakkar-check", "drakkar-lazyfs", "fuser", "drakkar-e2e", "proptest", "tempfile"];

#[test]
fn the_engine_has_no_network_front_end_or_state_machine_of_its_own() {
    for banned in [FRONT_ENDS, NETWORK, DEV_ONLY, &["drakkar-kv", "redb", "imbl"]] {
        assert_free_of("drakkar", banned);
    }
}

#[test]
fn the_state_machines_need_only_the_engine() {
    for banned in [FRONT_ENDS, NETWORK, DEV_ONLY] {
        assert_free_of("drakkar-kv", banned);
    }
}

#[test]
fn the_client_has_no_engine_server_or_storage() {
    for banned in [FRONT_ENDS, DEV_ONLY] {
        assert_free_of("drakkar-client", banned);
    }
    assert_free_of(
        "drakkar-client",
        &[
            "drakkar",
            "drakkar-kv",
            "drakkar-server",
            "drakkar-raft",
            "drakkar-logdb",
            "redb",
            "crossbeam-channel",
        ],
    );
}

#[test]
fn the_server_has_no_front_end() {
    for banned in [FRONT_ENDS, DEV_ONLY] {
        assert_free_of("drakkar-server", banned);
    }
}

#[test]
fn the_raft_core_and_the_log_store_stand_alone() {
    for package in ["drakkar-raft", "drakkar-logdb"] {
        for banned in [FRONT_ENDS, NETWORK, DEV_ONLY, &["drakkar", "tokio"]] {
            assert_free_of(package, banned);
        }
    }
}

#[test]
fn the_operator_talks_to_nodes_only_through_the_client() {
    for banned in [DEV_ONLY, &["drakkar", "drakkar-kv", "drakkar-server", "drakkar-raft", "drakkar-logdb"]] {
        assert_free_of("drakkar-operator", banned);
    }
}

/// Dependencies as (dependent, dependency) pairs of package names.
type Edges = BTreeSet<(String, String)>;

/// The workspace's own crates and their direct dependencies on each other: (normal, dev) edges.
fn workspace_edges() -> (Edges, Edges) {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--offline", "--no-deps", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let ours: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let (mut normal, mut dev) = (BTreeSet::new(), BTreeSet::new());
    for p in packages {
        let from = p["name"].as_str().expect("a package name");
        for d in p["dependencies"].as_array().expect("dependencies") {
            let to = d["name"].as_str().expect("a dependency name");
            if !ours.contains(to) || to == from {
                continue;
            }
            match d["kind"].as_str() {
                None => normal.insert((from.to_string(), to.to_string())),
                Some("dev") => dev.insert((from.to_string(), to.to_string())),
                Some(_) => false,
            };
        }
    }
    (normal, dev)
}

/// Every crate reachable from each crate along `edges`.
fn closure(edges: &Edges) -> Edges {
    let mut c = edges.clone();
    loop {
        let more: Vec<(String, String)> = c
            .iter()
            .flat_map(|(a, b)| {
                c.iter().filter(move |(x, _)| x == b).map(move |(_, y)| (a.clone(), y.clone()))
            })
            .filter(|e| !c.contains(e))
            .collect();
        if more.is_empty() {
            return c;
        }
        c.extend(more);
    }
}

#[test]
fn the_picture_in_the_docs_is_the_real_graph() {
    let mmd = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/crate-graph.mmd"))
        .expect("docs/crate-graph.mmd");
    // Node ids to crate names (`id[name<br/>...]`), then edges `a --> b` (normal) and `a -.-> b` (tests).
    let mut names = std::collections::BTreeMap::new();
    for token in mmd.split_whitespace() {
        if let Some((id, rest)) = token.split_once('[') {
            let name = rest.split(['<', ']']).next().unwrap_or_default();
            names.insert(id.to_string(), name.to_string());
        }
    }
    let (mut drawn, mut drawn_dev) = (BTreeSet::new(), BTreeSet::new());
    for line in mmd.lines().map(str::trim).filter(|l| !l.starts_with("%%")) {
        let id = |s: &str| s.split('[').next().unwrap_or_default().trim().to_string();
        let name = |s: &str| names.get(&id(s)).cloned().unwrap_or_else(|| panic!("node {s:?} has no name"));
        if let Some((a, b)) = line.split_once(" -.-> ") {
            drawn_dev.insert((name(a), name(b)));
        } else if let Some((a, b)) = line.split_once(" --> ") {
            drawn.insert((name(a), name(b)));
        }
    }
    // docs/architecture.md shows the same picture.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/architecture.md"))
        .expect("docs/architecture.md");
    let graph: Vec<&str> = mmd.lines().filter(|l| !l.starts_with("%%")).collect();
    assert!(
        doc.contains(&format!("```mermaid\n{}\n```", graph.join("\n"))),
        "docs/architecture.md's mermaid block differs from docs/crate-graph.mmd"
    );
    let (normal, dev) = workspace_edges();
    for e in &drawn {
        assert!(normal.contains(e), "the picture shows {} depending on {}, which it does not", e.0, e.1);
    }
    for e in &drawn_dev {
        assert!(dev.contains(e), "the picture shows {}'s tests using {}, which they do not", e.0, e.1);
    }
    // Arrows implied by others may be left out, but what depends on what must be the same.
    let (real, shown) = (closure(&normal), closure(&drawn));
    let missing: Vec<_> = real.difference(&shown).collect();
    assert!(missing.is_empty(), "dependencies the picture does not show: {missing:?}");
}
