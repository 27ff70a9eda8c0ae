//! Data-driven interaction scenarios for drakkar-raft, in the style of etcd-raft's interaction tests.
//!
//! Every `tests/testdata/*.txt` file is a scenario, run as its own test (named like the file) against a
//! fresh [`interaction::Env`]; the commands are documented in `tests/interaction/mod.rs`. Run one with
//! `cargo test -p drakkar-raft --test scenarios <name>`; rewrite the expected outputs in place with
//! `REWRITE=1` (then read the diff: the expected outputs are the specification).

mod interaction;

use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata")
}

/// Runs `tests/testdata/<name>.txt`.
fn run(name: &str) {
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| v == "1");
    let file = testdata().join(format!("{name}.txt"));
    let mut env = interaction::Env::default();
    let failures = interaction::datadriven::run_file(&file, rewrite, |tc| env.handle(tc));
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// One test per scenario file; `every_scenario_file_is_a_test` keeps the list and the folder equal.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const NAMES: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*
    };
}

scenarios! {
    add_non_voter_then_promote,
    async_persistence_follower,
    async_persistence_leader,
    async_snapshot,
    campaign_blocked_by_unapplied_conf_change,
    candidate_stale_log_loses,
    commit_previous_term_entries,
    committed_entries_paging,
    conf_change_invalid,
    conf_change_pending,
    config_validation,
    crash_loses_unpersisted,
    crash_restart,
    disruptive_rejoin_without_prevote,
    duplicate_and_reordered_messages,
    election_basic,
    fast_conflict_resolution,
    figure_8,
    heartbeat_unblocks_full_window,
    inflight_window,
    joining_replica_via_snapshot,
    malformed_messages,
    malformed_proposals,
    max_msg_size,
    non_voter_never_campaigns,
    partitioned_leader,
    prevote_checkquorum,
    prevote_stale_log,
    probe_and_replicate,
    quiesce_and_wake,
    quiesce_lost_commit,
    rate_limit,
    read_index_deferred,
    read_index_follower,
    read_index_lease,
    read_index_safe,
    remove_follower,
    remove_leader,
    removed_replica_cannot_disrupt,
    restart_rebuilds_membership,
    single_node,
    slow_follower_after_compaction,
    snapshot_send_failure,
    snapshot_stale,
    split_vote,
    stale_term_messages,
    transfer_leader_invalid_target,
    transfer_leader_lagging,
    transfer_leader_refuses_proposals,
    transfer_leader_timeout,
    transfer_leader_up_to_date,
    witness_never_leads,
    witness_quorum,
    witness_snapshot,
}

#[test]
fn every_scenario_file_is_a_test() {
    let mut files: Vec<String> = std::fs::read_dir(testdata())
        .expect("tests/testdata")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    files.sort();
    assert_eq!(files, NAMES, "tests/testdata and the scenarios! list differ");
}
