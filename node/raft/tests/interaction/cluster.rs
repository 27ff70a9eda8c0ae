//! Creating replicas, crashing and restarting them, and the host's snapshot / compaction duties.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;
use drakkar_raft::{Config, LogIndex, MemStorage, Membership, RawNode, ReadOnlyOption, ReplicaId, Storage};

use super::datadriven::TestCase;
use super::{Env, Node, fail};

fn config(tc: &TestCase, id: u64) -> Config {
    let mut c = Config::new(ReplicaId(id));
    c.pre_vote = tc.flag("pre-vote");
    c.check_quorum = tc.flag("check-quorum");
    c.read_only_option = match tc.vals("read-only").map(|v| v[0].as_str()) {
        None | Some("safe") => ReadOnlyOption::Safe,
        Some("lease") => ReadOnlyOption::LeaseBased,
        Some(_) => fail(tc, "read-only is safe or lease"),
    };
    c.max_inflight_msgs = tc.get("max-inflight").unwrap_or(c.max_inflight_msgs);
    c.max_size_per_msg = tc.get("max-size-per-msg").unwrap_or(c.max_size_per_msg);
    c.max_committed_size_per_ready =
        tc.get("max-committed-size-per-ready").unwrap_or(c.max_committed_size_per_ready);
    c.quiesce_ticks = tc.get("quiesce-ticks").unwrap_or(0);
    c.max_in_mem_log_size = tc.get("max-in-mem-log-size").unwrap_or(0);
    c.election_tick = tc.get("election-tick").unwrap_or(c.election_tick);
    c.heartbeat_tick = tc.get("heartbeat-tick").unwrap_or(c.heartbeat_tick);
    c.seed = tc.get("seed").unwrap_or(c.seed);
    c
}

impl Env {
    pub(super) fn add_nodes(&mut self, tc: &TestCase, out: &mut String) {
        let count: Option<usize> = tc.positional().first().and_then(|w| w.parse().ok());
        let next = self.nodes.keys().last().copied().unwrap_or(0) + 1;
        let fresh = |n: usize| (next..next + n as u64).collect::<Vec<_>>();
        let set =
            |key| tc.id_list(key).unwrap_or_default().into_iter().map(ReplicaId).collect::<BTreeSet<_>>();
        let (ids, membership) = if tc.flag("joining") {
            (fresh(count.unwrap_or(1)), None)
        } else {
            let mut m =
                Membership { voters: set("voters"), non_voters: set("non-voters"), ..Default::default() };
            m.witnesses = set("witnesses");
            if m.is_empty() {
                m.voters = fresh(count.unwrap_or_else(|| fail(tc, "count or member lists")))
                    .into_iter()
                    .map(ReplicaId)
                    .collect();
            }
            let ids: Vec<u64> = m.members().map(|r| r.0).collect();
            if count.is_some_and(|c| c != ids.len()) {
                fail(tc, "count does not match the member lists");
            }
            (ids, Some(m))
        };
        for id in ids {
            if self.nodes.contains_key(&id) {
                fail(tc, &format!("node {id} exists"));
            }
            let mut cfg = config(tc, id);
            let storage = match &membership {
                Some(m) => MemStorage::bootstrap(m.clone()),
                None => MemStorage::new_joining(),
            };
            // A founding member's state machine starts from the bootstrap membership: those entries are applied.
            cfg.applied = storage.hard_state().commit;
            match RawNode::new(cfg.clone(), storage) {
                Ok(raw) => {
                    writeln!(out, "{}", super::inspect::summary(&raw)).unwrap();
                    self.nodes.insert(id, Node { raw: Some(raw), disk: None, cfg, pending: VecDeque::new() });
                }
                Err(e) => writeln!(out, "{id}: error: {e}").unwrap(),
            }
        }
    }

    /// The process dies: everything not yet persisted (unstable entries, batches not yet written, messages
    /// waiting for persistence, the state machine) is lost. Messages already sent stay in flight.
    pub(super) fn crash(&mut self, tc: &TestCase, out: &mut String) {
        for id in tc.ids() {
            let Some(node) = self.nodes.get_mut(&id) else { fail(tc, "no such node") };
            let Some(raw) = node.raw.take() else { fail(tc, "node is already down") };
            node.pending.clear();
            let disk = raw.storage().clone();
            let durable = disk.last_index().unwrap_or_default().0;
            let lost = raw.status().last_index.0.saturating_sub(durable);
            writeln!(out, "{id} crashed: durable log ends at {durable}, {lost} unpersisted entries lost")
                .unwrap();
            node.disk = Some(disk);
        }
    }

    /// Starts a crashed replica from its storage; its state machine restarts from the latest snapshot.
    pub(super) fn restart(&mut self, tc: &TestCase, out: &mut String) {
        for id in tc.ids() {
            let Some(node) = self.nodes.get_mut(&id) else { fail(tc, "no such node") };
            let Some(disk) = node.disk.take() else { fail(tc, "node is not down") };
            node.cfg.applied = disk.snapshot().map(|s| s.meta.index).unwrap_or_default();
            match RawNode::new(node.cfg.clone(), disk.clone()) {
                Ok(raw) => {
                    writeln!(out, "{}", super::inspect::summary(&raw)).unwrap();
                    node.raw = Some(raw);
                }
                Err(e) => {
                    writeln!(out, "{id}: error: {e}").unwrap();
                    node.disk = Some(disk);
                }
            }
        }
    }

    /// The host snapshots its state machine at the applied index (the log is not compacted).
    pub(super) fn snapshot(&mut self, tc: &TestCase, out: &mut String) {
        for id in tc.ids() {
            let Some(raw) = self.running(id, out) else { continue };
            let st = raw.status();
            let data = Bytes::from(format!("snap@{}", st.applied.0));
            match raw.storage_mut().create_snapshot(st.applied, st.membership.clone(), data) {
                Ok(()) => writeln!(out, "{id}: snapshot at {} {}", st.applied.0, st.membership).unwrap(),
                Err(e) => writeln!(out, "{id}: error: {e}").unwrap(),
            }
        }
    }

    /// The host drops log entries up to INDEX (only entries covered by its snapshot may go).
    pub(super) fn compact(&mut self, tc: &TestCase, out: &mut String) {
        let (id, index) = match tc.positional().as_slice() {
            [id, index] => (
                id.parse().unwrap_or_else(|_| fail(tc, "id")),
                index.parse().unwrap_or_else(|_| fail(tc, "index")),
            ),
            _ => (tc.one_id(), tc.get("index").unwrap_or_else(|| fail(tc, "index"))),
        };
        let Some(raw) = self.running(id, out) else { return };
        match raw.storage_mut().compact(LogIndex(index)) {
            Ok(()) => {
                let first = raw.storage().first_index().unwrap_or_default();
                writeln!(out, "{id}: compacted, log now starts at {}", first.0).unwrap();
            }
            Err(e) => writeln!(out, "{id}: error: {e}").unwrap(),
        }
    }
}
