//! multigroup: many Raft groups in one process. Each NodeHost runs a replica of every group; keys are
//! spread over the groups by a hash, so the groups share the load (each has its own leader, log and
//! state machine; the NodeHost batches their disk writes and messages together).

use std::path::Path;

use anyhow::{Result, ensure};
use bytes::Bytes;
use drakkar::transport::InProcessNetwork;
use drakkar::{GroupConfig, GroupId, ReplicaId, StartMode, StateMachineBox};

use crate::common::{self, Command, TIMEOUT};
use crate::kv::KvStore;

/// The groups: 1 to 16.
pub const GROUPS: u64 = 16;

// ANCHOR: route
/// The group that holds `key`: a hash of the key (FNV-1a: the same on every machine and every run)
/// modulo the number of groups.
pub fn group_of(key: &str) -> GroupId {
    let hash =
        key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    GroupId(1 + hash % GROUPS)
}
// ANCHOR_END: route

/// What the one-process run proved.
#[derive(Debug)]
pub struct Report {
    /// Keys written to each group, by group.
    pub keys_per_group: Vec<usize>,
    /// Distinct leaders among the groups' leaders (the load of leading is spread too).
    pub leaders: usize,
    /// Keys a linearizable read did not find in their group (must be none).
    pub missing: Vec<String>,
    /// Groups whose three replicas' states differ (must be none).
    pub diverged: Vec<GroupId>,
}

/// Three NodeHosts, 16 groups of three replicas, 320 keys spread over them.
pub async fn run(dir: &Path) -> Result<Report> {
    let net = InProcessNetwork::new();
    let mut hosts = Vec::new();
    for id in 1..=3 {
        let host = common::start_local_host(&net, dir, id)?;
        // ANCHOR: start_groups
        for g in 1..=GROUPS {
            let founding = StartMode::Founding(common::members(common::local_address));
            let sm = StateMachineBox::regular(KvStore::default());
            host.start_replica(GroupId(g), ReplicaId(id), founding, sm, GroupConfig::default())?;
        }
        // ANCHOR_END: start_groups
        hosts.push(host);
    }
    let mut keys_per_group = vec![0; GROUPS as usize];
    let mut writes = Vec::new();
    for i in 0..320 {
        let key = format!("key-{i}");
        let group = group_of(&key);
        keys_per_group[(group.0 - 1) as usize] += 1;
        let host = hosts[i % 3].clone();
        let cmd = Command::Set(key, format!("value-{i}")).encode();
        writes.push(tokio::spawn(async move { host.propose(group, cmd, TIMEOUT).await }));
    }
    for w in writes {
        w.await??;
    }
    let mut missing = Vec::new();
    for i in 0..320 {
        let key = format!("key-{i}");
        let v = hosts[i % 3].read(group_of(&key), Bytes::from(key.clone()), TIMEOUT).await?;
        if v != format!("value-{i}").as_bytes() {
            missing.push(key);
        }
    }
    let mut leaders = std::collections::BTreeSet::new();
    let mut diverged = Vec::new();
    for g in (1..=GROUPS).map(GroupId) {
        leaders.insert(common::wait_for_leader(&hosts[0], g).await?);
        common::wait_all_applied(&hosts, g).await?;
        let states: Vec<Bytes> = hosts.iter().map(|h| h.stale_read(g, b"*")).collect::<Result<_, _>>()?;
        if states.iter().any(|s| *s != states[0]) {
            diverged.push(g);
        }
    }
    println!(
        "320 keys over {GROUPS} groups: {keys_per_group:?} per group; {} distinct leaders",
        leaders.len()
    );
    for h in &hosts {
        h.close();
    }
    ensure!(missing.is_empty() && diverged.is_empty(), "missing {missing:?}, diverged {diverged:?}");
    Ok(Report { keys_per_group, leaders: leaders.len(), missing, diverged })
}
