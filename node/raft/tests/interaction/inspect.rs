//! Read-only views: one-line summaries, full status with progress, the durable log, membership.

use std::fmt::Write as _;

use drakkar_raft::{MemStorage, ProgressState, RawNode, ReplicaId, Storage};

use super::Env;
use super::datadriven::TestCase;

pub(super) fn opt(r: Option<ReplicaId>) -> String {
    r.map_or_else(|| "-".to_string(), |r| r.0.to_string())
}

/// `1: Leader term=2 vote=1 leader=1 commit=5 applied=5 last=5 voters=(1 2 3)`.
pub(super) fn summary(raw: &RawNode<MemStorage>) -> String {
    let st = raw.status();
    format!(
        "{}: {:?} term={} vote={} leader={} commit={} applied={} last={} {}",
        st.id.0,
        st.soft_state.role,
        st.hard_state.term.0,
        opt(st.hard_state.vote),
        opt(st.soft_state.leader),
        st.hard_state.commit.0,
        st.applied.0,
        st.last_index.0,
        st.membership
    )
}

impl Env {
    pub(super) fn status(&mut self, tc: &TestCase, out: &mut String) {
        for id in self.ids_or_all(tc) {
            let rate_limited = self.nodes.get(&id).is_some_and(|n| n.cfg.max_in_mem_log_size > 0);
            let Some(raw) = self.running(id, out) else { continue };
            let st = raw.status();
            writeln!(out, "{}", summary(raw)).unwrap();
            let mut extra = Vec::new();
            if st.persisted != st.last_index {
                extra.push(format!("persisted={}", st.persisted.0));
            }
            if let Some(t) = st.lead_transferee {
                extra.push(format!("transferring-to={}", t.0));
            }
            if st.quiesced {
                extra.push("quiesced".to_string());
            }
            if st.dropped_messages > 0 {
                extra.push(format!("dropped-msgs={}", st.dropped_messages));
            }
            if rate_limited {
                extra.push(format!("in-mem-log-bytes={}", st.in_mem_log_bytes));
            }
            if !extra.is_empty() {
                writeln!(out, "  {}", extra.join(" ")).unwrap();
            }
            for (pid, pr) in st.progress.iter().filter(|(pid, _)| pid.0 != id) {
                let state = match pr.state {
                    ProgressState::Probe => "Probe".to_string(),
                    ProgressState::Replicate => "Replicate".to_string(),
                    ProgressState::Snapshot { pending } => format!("Snapshot(pending={})", pending.0),
                };
                let mut line = format!("  {}: {state} match={} next={}", pid.0, pr.matched.0, pr.next.0);
                if pr.inflights.count() > 0 {
                    write!(line, " inflight={}", pr.inflights.count()).unwrap();
                }
                if pr.probe_sent {
                    line.push_str(" probe-sent");
                }
                if !pr.recent_active {
                    line.push_str(" inactive");
                }
                writeln!(out, "{line}").unwrap();
            }
        }
    }

    /// The durable log of a replica (what survives a crash).
    pub(super) fn raft_log(&mut self, tc: &TestCase, out: &mut String) {
        let id = tc.one_id();
        let Some(node) = self.nodes.get(&id) else { super::fail(tc, "no such node") };
        let Some(s) = node.raw.as_ref().map(RawNode::storage).or(node.disk.as_ref()) else { return };
        let (first, last) = (s.first_index().unwrap_or_default(), s.last_index().unwrap_or_default());
        let hs = s.hard_state();
        writeln!(out, "hard-state: term={} vote={} commit={}", hs.term.0, opt(hs.vote), hs.commit.0).unwrap();
        if let Ok(snap) = s.snapshot()
            && !snap.is_empty()
        {
            let m = &snap.meta;
            writeln!(out, "snapshot: {}/{} {} data={:?}", m.term.0, m.index.0, m.membership, snap.data)
                .unwrap();
        }
        if first.0 > 1 {
            let t = s.term(first.prev()).unwrap_or_default();
            writeln!(out, "compacted up to {}/{}", t.0, first.0 - 1).unwrap();
        }
        if first > last {
            writeln!(out, "log is empty").unwrap();
            return;
        }
        for e in s.entries(first, last.next(), u64::MAX).unwrap_or_default() {
            writeln!(out, "{e}").unwrap();
        }
    }

    pub(super) fn membership(&mut self, tc: &TestCase, out: &mut String) {
        for id in self.ids_or_all(tc) {
            let Some(raw) = self.running(id, out) else { continue };
            writeln!(out, "{id}: {}", raw.status().membership).unwrap();
        }
    }
}
