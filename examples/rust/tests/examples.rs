//! Every example runs to completion (all three replicas in this process, as CI runs them), bounded in
//! time, and proves what its README says it shows.

use std::future::Future;
use std::time::Duration;

use drakkar_examples::{concurrent, kv, multigroup, ondisk, worked};

/// Runs `f` on a fresh runtime, failing after two minutes (a run takes about a second or two).
fn run<T>(f: impl Future<Output = anyhow::Result<T>>) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(120), f).await {
            Ok(r) => r.unwrap(),
            Err(_) => panic!("the example did not finish within two minutes"),
        }
    })
}

#[test]
fn helloworld_keeps_every_acknowledged_key_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(kv::run(dir.path()));
    assert_eq!(r.acknowledged, 130);
    assert!(r.missing.is_empty(), "lost after the restart: {:?}", r.missing);
    // Incremented once, retried in the same session (applied once), incremented again.
    assert_eq!(r.visits, "2");
    assert!(
        r.snapshot_index > 120,
        "the snapshot was taken after the first 120 writes: {}",
        r.snapshot_index
    );
    // The log's start was dropped before the restart: the state was rebuilt from a snapshot plus the log.
    assert!(r.compacted_to > 50, "the log was compacted up to {}", r.compacted_to);
    // The three rebuilt replicas hold the same state: the 130 keys and the counter.
    assert_eq!(r.states.len(), 3);
    assert!(r.states.iter().all(|s| *s == r.states[0]));
    assert_eq!(r.states[0].lines().count(), 131);
}

#[test]
fn ondisk_reopens_without_replaying_and_a_new_replica_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(ondisk::run(dir.path()));
    assert_eq!(r.opened_at, r.applied_before, "open returned the index applied before the restart");
    assert!(r.opened_at.iter().all(|&i| i >= 100));
    assert_eq!(r.replayed, 0, "a reopened store was handed entries it had applied");
    assert!(r.joined_by_snapshot, "replica 4 caught up by a streamed snapshot");
    assert_eq!(r.states.len(), 4);
    assert!(r.states.iter().all(|s| *s == r.states[0]), "replica 4's state differs: {:?}", r.states);
    assert_eq!(r.states[0].lines().count(), 120);
    assert!(!r.voters.contains(&r.removed) && r.voters.contains(&drakkar::ReplicaId(4)));
    assert_eq!(r.voters.len(), 3);
}

#[test]
fn concurrent_serves_reads_while_a_batch_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(concurrent::run(dir.path()));
    assert!(r.reads_during_apply > 0);
    assert!(r.states.iter().all(|s| *s == r.states[0]));
    assert_eq!(r.states[0].lines().count(), 40);
}

#[test]
fn multigroup_spreads_keys_over_sixteen_groups() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(multigroup::run(dir.path()));
    assert_eq!(r.keys_per_group.len(), 16);
    assert!(r.keys_per_group.iter().all(|&n| n > 0), "a group got no key: {:?}", r.keys_per_group);
    assert_eq!(r.keys_per_group.iter().sum::<usize>(), 320);
    assert!(r.missing.is_empty() && r.diverged.is_empty());
}

#[test]
fn worked_replicas_apply_the_same_log_in_the_same_order() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(worked::run(dir.path()));
    assert!(r.states.iter().all(|s| *s == r.states[0]), "{:#?}", r.states);
    // A balance line, then one line per proposal.
    assert_eq!(r.states[0].lines().count(), 1 + r.proposals);
    // Each replica printed each of the 12 entries once, with the same outcome.
    for replica in 1..=3 {
        let tag = format!("[replica {replica}]");
        let mine: Vec<&str> =
            r.printed.iter().filter(|l| l.starts_with(&tag)).map(|l| &l[tag.len()..]).collect();
        assert_eq!(mine.len(), r.proposals);
        let first: Vec<&str> = r
            .printed
            .iter()
            .filter(|l| l.starts_with("[replica 1]"))
            .map(|l| &l["[replica 1]".len()..])
            .collect();
        assert_eq!(mine, first);
    }
}
