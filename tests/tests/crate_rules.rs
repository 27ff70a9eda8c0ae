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
const DEV_ONLY: &[&str] = &["drakkar-sim", "drakkar-check", "drakkar-e2e", "proptest", "tempfile"];

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
