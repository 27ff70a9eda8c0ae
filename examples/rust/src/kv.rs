//! helloworld: a Redis-like key-value store on the in-memory kind of state machine ([`StateMachine`]),
//! replicated three times; restarted to show its state rebuilt from the latest snapshot plus the log,
//! with nothing lost.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Result, ensure};
use bytes::Bytes;
use drakkar::statemachine::{SmEntry, SmError, SmResult, StateMachine, Stop};
use drakkar::transport::InProcessNetwork;
use drakkar::{Event, GroupConfig, GroupId, NodeHost, ReplicaId, StartMode, StateMachineBox};

use crate::common::{self, Command, TIMEOUT, read_pair, write_field};

/// The group the example runs.
pub const GROUP: GroupId = GroupId(1);

// ANCHOR: state_machine
/// A Redis-like key-value store, all in memory. Commands: `set k v`, `del k`, `incr k`. Queries: a
/// key (its value, empty when absent) or `*` (every `k=v`, one a line).
#[derive(Default)]
pub struct KvStore {
    map: BTreeMap<String, String>,
}

impl StateMachine for KvStore {
    fn update(&mut self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        for e in entries.iter_mut() {
            e.result = match Command::parse(&e.cmd) {
                Some(Command::Set(k, v)) => {
                    self.map.insert(k, v);
                    SmResult { value: e.index.0, data: Bytes::new() }
                }
                Some(Command::Del(k)) => {
                    let existed = self.map.remove(&k).is_some();
                    SmResult { value: u64::from(existed), data: Bytes::new() }
                }
                Some(Command::Incr(k)) => {
                    let n = self.map.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
                    self.map.insert(k, n.to_string());
                    SmResult { value: n, data: Bytes::new() }
                }
                // Bad input is answered, never fatal: the same answer on every replica.
                None => SmResult { value: 0, data: Bytes::from_static(b"ERR unknown command") },
            };
        }
        Ok(())
    }

    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError> {
        if query == b"*" {
            let all: String = self.map.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            return Ok(Bytes::from(all));
        }
        let key = std::str::from_utf8(query).map_err(|_| SmError::InvalidRequest("not UTF-8".into()))?;
        Ok(self.map.get(key).map(|v| Bytes::from(v.clone())).unwrap_or_default())
    }

    fn save_snapshot(&self, w: &mut dyn Write, _stop: &Stop) -> Result<(), SmError> {
        for (k, v) in &self.map {
            write_field(w, k.as_bytes())?;
            write_field(w, v.as_bytes())?;
        }
        Ok(())
    }

    fn recover_from_snapshot(&mut self, r: &mut dyn Read, _stop: &Stop) -> Result<(), SmError> {
        self.map.clear();
        while let Some((k, v)) = read_pair(r)? {
            self.map.insert(k, v);
        }
        Ok(())
    }
}
// ANCHOR_END: state_machine

/// What the one-process run proved.
#[derive(Debug)]
pub struct Report {
    /// Keys whose `set` was acknowledged before the restart.
    pub acknowledged: usize,
    /// Acknowledged keys a linearizable read did not find after the restart (must be none).
    pub missing: Vec<String>,
    /// The counter incremented once, then its increment retried in the same session, then once more
    /// (2: the retry was not applied twice).
    pub visits: String,
    /// The index of the snapshot taken on request.
    pub snapshot_index: u64,
    /// How far replica 1's log was compacted before the restart (past 0: its start was gone, so the
    /// restart had to begin from a snapshot).
    pub compacted_to: u64,
    /// Each replica's whole state after the restart (all equal).
    pub states: Vec<String>,
}

/// The group's configuration: a snapshot every 50 entries, keeping 10 entries behind it, so the restart
/// really rebuilds from a snapshot plus the log after it.
pub fn group_config() -> GroupConfig {
    GroupConfig { snapshot_entries: 50, compaction_overhead: 10, ..GroupConfig::default() }
}

/// Starts replica `id` of [`GROUP`] on `host`, with an empty store.
// ANCHOR: start_replica
pub fn start_replica(host: &NodeHost, id: u64) -> Result<()> {
    let members = common::members(common::local_address);
    let sm = StateMachineBox::regular(KvStore::default());
    host.start_replica(GROUP, ReplicaId(id), StartMode::Founding(members), sm, group_config())?;
    Ok(())
}
// ANCHOR_END: start_replica

/// Three replicas in this process: writes, both reads, a session, a snapshot, a restart of all three,
/// then every acknowledged key read back.
pub async fn run(dir: &Path) -> Result<Report> {
    // ANCHOR: three_hosts
    let net = InProcessNetwork::new();
    let mut hosts = Vec::new();
    for id in 1..=3 {
        let host = common::start_local_host(&net, dir, id)?;
        start_replica(&host, id)?;
        hosts.push(host);
    }
    // ANCHOR_END: three_hosts
    let mut events = hosts[0].events();
    let leader = common::wait_for_leader(&hosts[0], GROUP).await?;
    println!("group {GROUP} elected replica {leader} as its leader");

    // ANCHOR: propose
    let mut acknowledged = Vec::new();
    for i in 0..120 {
        let cmd = Command::Set(format!("key-{i}"), format!("value-{i}"));
        // Any replica takes a proposal: it is passed to the leader. It returns once committed and
        // applied on this replica, with the state machine's result.
        let r = hosts[i % 3].propose(GROUP, cmd.encode(), TIMEOUT).await?;
        acknowledged.push((format!("key-{i}"), format!("value-{i}"), r.value));
    }
    // ANCHOR_END: propose
    println!("{} writes acknowledged; the last at log index {}", acknowledged.len(), acknowledged[119].2);

    // ANCHOR: reads
    // Linearizable: sees every write acknowledged before the read began, whichever replica serves it.
    let v = hosts[2].read(GROUP, Bytes::from_static(b"key-0"), TIMEOUT).await?;
    assert_eq!(v, "value-0");
    // Stale: this replica's state as it is now, without asking the leader (fast, maybe behind).
    let stale = hosts[1].stale_read(GROUP, b"key-119")?;
    println!("stale read of key-119 on replica 2: {:?}", common::text(&stale));
    // ANCHOR_END: reads

    // ANCHOR: session
    let mut session = hosts[0].open_session(GROUP, None, TIMEOUT).await?;
    let incr = Command::Incr("visits".into()).encode();
    let first = hosts[0].propose_in_session(&session, incr.clone(), TIMEOUT).await?;
    // The answer was lost, say: the client retries the same proposal in the same session (it has not
    // called `proposal_completed`). The group applies it once and answers the first result again.
    let retry = hosts[0].propose_in_session(&session, incr.clone(), TIMEOUT).await?;
    assert_eq!(first, retry);
    session.proposal_completed();
    let second = hosts[0].propose_in_session(&session, incr, TIMEOUT).await?;
    session.proposal_completed();
    hosts[0].close_session(session, TIMEOUT).await?;
    // ANCHOR_END: session
    println!("visits incremented to {} then (after a retried increment) to {}", first.value, second.value);

    // ANCHOR: snapshot
    let snapshot_index = hosts[0].request_snapshot(GROUP, None, TIMEOUT).await?;
    // ANCHOR_END: snapshot
    println!("snapshot taken at index {}", snapshot_index.0);
    for i in 120..130 {
        let r =
            hosts[0].propose(GROUP, Command::Set(format!("key-{i}"), format!("value-{i}")).encode(), TIMEOUT);
        acknowledged.push((format!("key-{i}"), format!("value-{i}"), r.await?.value));
    }

    let mut compacted_to = 0;
    while let Ok(e) = events.try_recv() {
        if let Event::LogCompacted { group: GROUP, index } = e {
            compacted_to = compacted_to.max(index.0);
        }
    }
    println!("replica 1's log compacted up to index {compacted_to}");
    // ANCHOR: restart
    for h in &hosts {
        h.close();
    }
    // The log store is released when the last handle of a NodeHost is dropped.
    drop(hosts);
    // Same data directories, new empty state machines: each replica recovers its latest snapshot,
    // then applies the log entries after it.
    let mut hosts = Vec::new();
    for id in 1..=3 {
        let host = common::start_local_host(&net, dir, id)?;
        start_replica(&host, id)?;
        hosts.push(host);
    }
    // ANCHOR_END: restart
    common::wait_for_leader(&hosts[0], GROUP).await?;
    let mut missing = Vec::new();
    for (i, (k, v, _)) in acknowledged.iter().enumerate() {
        if hosts[i % 3].read(GROUP, Bytes::from(k.clone()), TIMEOUT).await? != v.as_bytes() {
            missing.push(k.clone());
        }
    }
    println!(
        "after the restart: {} of {} acknowledged keys read back",
        acknowledged.len() - missing.len(),
        acknowledged.len()
    );
    let visits = common::text(&hosts[0].read(GROUP, Bytes::from_static(b"visits"), TIMEOUT).await?);
    common::wait_all_applied(&hosts, GROUP).await?;
    let mut states = Vec::new();
    for h in &hosts {
        states.push(common::text(&h.stale_read(GROUP, b"*")?));
    }
    for h in &hosts {
        h.close();
    }
    ensure!(missing.is_empty(), "acknowledged keys lost: {missing:?}");
    Ok(Report {
        acknowledged: acknowledged.len(),
        missing,
        visits,
        snapshot_index: snapshot_index.0,
        compacted_to,
        states,
    })
}
