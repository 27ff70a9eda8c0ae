//! What a host or an operator asks of a replica: elections, proposals, membership changes, leader
//! transfer, reads, transport reports, and the passage of time.

use std::fmt::Write as _;

use bytes::Bytes;
use drakkar_raft::{ConfChange, ConfChangeKind, LogIndex, ProposalError, ReplicaId};

use super::datadriven::TestCase;
use super::{Env, fail};

fn proposal(out: &mut String, id: u64, what: &str, r: Result<Option<LogIndex>, ProposalError>) {
    match r {
        Ok(Some(i)) => writeln!(out, "{id}: {what} appended at index {}", i.0),
        Ok(None) => writeln!(out, "{id}: {what} forwarded to the leader"),
        Err(e) => writeln!(out, "{id}: {what} refused: {e} ({e:?})"),
    }
    .unwrap();
}

impl Env {
    pub(super) fn campaign(&mut self, tc: &TestCase, out: &mut String) {
        for id in tc.ids() {
            if let Some(raw) = self.running(id, out) {
                raw.campaign();
            }
        }
    }

    /// `propose ID DATA [count=N]` (N proposals DATA1..DATAN) or `propose ID size=N [count=N]` (N bytes each).
    pub(super) fn propose(&mut self, tc: &TestCase, out: &mut String) {
        let words = tc.positional();
        let id: u64 = words.first().and_then(|w| w.parse().ok()).unwrap_or_else(|| tc.one_id());
        let size: Option<usize> = tc.get("size");
        let base = match (words.get(1), size) {
            (Some(d), _) => d.to_string(),
            (None, Some(n)) => "x".repeat(n),
            (None, None) => tc.get("data").unwrap_or_else(|| fail(tc, "data")),
        };
        let count: Option<usize> = tc.get("count");
        let Some(raw) = self.running(id, out) else { return };
        for i in 1..=count.unwrap_or(1) {
            let data = if count.is_some() && size.is_none() { format!("{base}{i}") } else { base.clone() };
            let shown = if data.len() > 24 { format!("{} bytes", data.len()) } else { format!("{data:?}") };
            let r = raw.propose(Bytes::from(data));
            proposal(out, id, &format!("propose {shown}"), r);
        }
    }

    pub(super) fn propose_conf_change(&mut self, tc: &TestCase, out: &mut String) {
        let id = tc.one_id();
        let kinds = [
            ("add-voter", ConfChangeKind::AddVoter),
            ("add-non-voter", ConfChangeKind::AddNonVoter),
            ("add-witness", ConfChangeKind::AddWitness),
            ("promote", ConfChangeKind::Promote),
            ("remove", ConfChangeKind::Remove),
        ];
        let Some((kind, replica)) = kinds.iter().find_map(|(k, kind)| Some((*kind, tc.get::<u64>(k)?)))
        else {
            fail(tc, "which change?")
        };
        let cc = ConfChange { kind, replica: ReplicaId(replica), context: Bytes::new() };
        let Some(raw) = self.running(id, out) else { return };
        let r = raw.propose_conf_change(&cc);
        proposal(out, id, &format!("propose {cc}"), r);
    }

    pub(super) fn transfer_leader(&mut self, tc: &TestCase, out: &mut String) {
        let from = tc.get("from").unwrap_or_else(|| fail(tc, "from"));
        let to: u64 = tc.get("to").unwrap_or_else(|| fail(tc, "to"));
        let Some(raw) = self.running(from, out) else { return };
        match raw.transfer_leader(ReplicaId(to)) {
            Ok(()) => writeln!(out, "{from}: transfer to {to} accepted"),
            Err(e) => writeln!(out, "{from}: transfer to {to} refused: {e} ({e:?})"),
        }
        .unwrap();
    }

    pub(super) fn read_index(&mut self, tc: &TestCase, out: &mut String) {
        let id = tc.one_id();
        let ctx: String = tc.get("ctx").unwrap_or_else(|| fail(tc, "ctx"));
        let Some(raw) = self.running(id, out) else { return };
        if let Err(e) = raw.read_index(Bytes::from(ctx.clone())) {
            writeln!(out, "{id}: read-index {ctx} refused: {e} ({e:?})").unwrap();
        }
    }

    pub(super) fn report_unreachable(&mut self, tc: &TestCase, out: &mut String) {
        let peer = tc.get("peer").unwrap_or_else(|| fail(tc, "peer"));
        if let Some(raw) = self.running(tc.one_id(), out) {
            raw.report_unreachable(ReplicaId(peer));
        }
    }

    pub(super) fn report_snapshot(&mut self, tc: &TestCase, out: &mut String) {
        let peer = tc.get("peer").unwrap_or_else(|| fail(tc, "peer"));
        let ok = tc.get("ok").unwrap_or_else(|| fail(tc, "ok=true|false"));
        if let Some(raw) = self.running(tc.one_id(), out) {
            raw.report_snapshot(ReplicaId(peer), ok);
        }
    }

    pub(super) fn wake(&mut self, tc: &TestCase, out: &mut String) {
        for id in tc.ids() {
            if let Some(raw) = self.running(id, out) {
                raw.wake();
            }
        }
    }

    /// Ticks nodes in id order, one round at a time: `n` rounds, or an election / heartbeat timeout's worth
    /// (each node's own configuration). Prints the ticks on which a node changed role or term, or quiesced.
    pub(super) fn tick(&mut self, tc: &TestCase, out: &mut String) {
        let ids = self.ids_or_all(tc);
        let rounds = |env: &Env, id: u64| {
            let cfg = &env.nodes[&id].cfg;
            match tc.cmd.as_str() {
                "tick-election" => cfg.election_tick,
                "tick-heartbeat" => cfg.heartbeat_tick,
                _ => tc.get("n").unwrap_or(1),
            }
        };
        let max = ids.iter().map(|&id| rounds(self, id)).max().unwrap_or(0);
        for round in 1..=max {
            for &id in &ids {
                if round <= rounds(self, id)
                    && let Some(n) = self.nodes.get_mut(&id)
                    && let Some(raw) = n.raw.as_mut()
                {
                    let before = raw.status();
                    raw.tick();
                    let after = raw.status();
                    let (r0, r1) = (before.soft_state.role, after.soft_state.role);
                    if r0 != r1
                        || before.hard_state.term != after.hard_state.term
                        || before.quiesced != after.quiesced
                    {
                        let q = if after.quiesced { " (quiesced)" } else { "" };
                        writeln!(
                            out,
                            "{id}: tick {round}: {r0:?} -> {r1:?} term={}{q}",
                            after.hard_state.term.0
                        )
                        .unwrap();
                    }
                }
            }
        }
    }
}
