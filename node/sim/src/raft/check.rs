//! The simulator's safety checks.
//!
//! - Election safety: at most one leader per term.
//! - Log matching and stability: every replica's log agrees with every entry ever seen committed (same
//!   term, same payload), so a committed entry never changes.
//! - Leader completeness: a new leader's log holds every entry committed before it was seen leading, so a
//!   committed (and acknowledged) entry never disappears.
//! - State machine safety: every replica applies the same entry at each index and reaches the same state.
//! - Linearizable reads, for the application's model (an append-only sequence whose state is its length):
//!   a read returns at least the position of every write acknowledged before the read began, and at least
//!   the result of every read that completed before it began.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::SimReport;
use drakkar_raft::{Entry, LogIndex, MemStorage, RawNode, ReplicaId, Role, Term};

/// A client operation (write or read) in the simulator's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct OpId(pub(crate) u64);

/// A safety property that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// Two replicas led in the same term.
    TwoLeaders {
        /// The term.
        term: Term,
        /// The leaders.
        leaders: (ReplicaId, ReplicaId),
    },
    /// A replica's committed entry differs from one seen committed before.
    CommittedEntryChanged {
        /// The replica.
        replica: ReplicaId,
        /// The index.
        index: LogIndex,
        /// What was committed before, and what the replica has now.
        detail: String,
    },
    /// A leader lacks an entry committed before its election.
    LeaderMissingCommitted {
        /// The leader.
        leader: ReplicaId,
        /// The missing index.
        index: LogIndex,
    },
    /// Replicas applied different entries or reached different states at an index.
    DivergentApply {
        /// The replica that disagrees with the first one to apply the index.
        replica: ReplicaId,
        /// The index.
        index: LogIndex,
    },
    /// A read missed a write or read that completed before it began.
    StaleRead {
        /// The read.
        op: u64,
        /// The state it returned (sequence length).
        got: u64,
        /// The least state it had to return.
        required: u64,
    },
    /// The core returned an error while stepping or persisting.
    Step(ReplicaId, String),
    /// A replica could not restart from its durable state.
    Restart(ReplicaId, String),
    /// After every fault was healed and the group ran fault-free for a while, it has no leader, or a
    /// member did not catch up with the leader's commit index.
    NotCaughtUp(String),
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

#[derive(Default)]
pub(crate) struct Checker {
    leaders: BTreeMap<Term, ReplicaId>,
    committed: BTreeMap<LogIndex, (Term, Bytes)>,
    max_committed: LogIndex,
    checked: BTreeMap<ReplicaId, LogIndex>,
    states: BTreeMap<LogIndex, (Term, Bytes, u64, u64)>,
    witnesses: std::collections::BTreeSet<ReplicaId>,
    max_acked: u64,
    max_read: u64,
    reads: BTreeMap<OpId, u64>,
    recorded: Option<Violation>,
}

impl Checker {
    /// Remembers a violation found outside the regular check (reported at the next check).
    pub(crate) fn record(&mut self, v: Violation) {
        self.recorded.get_or_insert(v);
    }

    pub(crate) fn mark_witness(&mut self, id: ReplicaId) {
        self.witnesses.insert(id);
    }

    pub(crate) fn is_witness(&self, id: ReplicaId) -> bool {
        self.witnesses.contains(&id)
    }

    pub(crate) fn check_nodes(
        &mut self,
        nodes: &[(ReplicaId, &RawNode<MemStorage>)],
        report: &mut SimReport,
    ) -> Result<(), Violation> {
        if let Some(v) = self.recorded.take() {
            return Err(v);
        }
        for &(id, node) in nodes {
            let st = node.status();
            let commit = st.hard_state.commit;
            report.max_commit = report.max_commit.max(commit.0);
            // Log matching against everything seen committed.
            let from = self.checked.get(&id).copied().unwrap_or_default().max(node.first_index().prev());
            if commit > from {
                let ents = node.log_entries(from.next(), commit.next()).map_err(|e| {
                    Violation::Step(id, format!("reading committed entries {from}..={commit}: {e}"))
                })?;
                for e in ents {
                    self.check_committed(id, &e)?;
                }
                self.checked.insert(id, commit);
            }
            if st.soft_state.role == Role::Leader {
                let term = st.hard_state.term;
                match self.leaders.get(&term) {
                    Some(&other) if other != id => {
                        return Err(Violation::TwoLeaders { term, leaders: (other, id) });
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(term, id);
                        self.check_leader_complete(id, node)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn check_committed(&mut self, id: ReplicaId, e: &Entry) -> Result<(), Violation> {
        if self.witnesses.contains(&id) && e.kind == drakkar_raft::EntryKind::Metadata {
            // A witness stores the entry without its payload: only the term must match.
            if let Some((t, _)) = self.committed.get(&e.index)
                && *t != e.term
            {
                return Err(Violation::CommittedEntryChanged {
                    replica: id,
                    index: e.index,
                    detail: format!("witness has term {} where {} was committed", e.term, t),
                });
            }
            return Ok(());
        }
        match self.committed.get(&e.index) {
            Some((t, d)) if *t != e.term || *d != e.data => Err(Violation::CommittedEntryChanged {
                replica: id,
                index: e.index,
                detail: format!("committed {t}/{d:?}, replica has {}/{:?}", e.term, e.data),
            }),
            Some(_) => Ok(()),
            None => {
                self.committed.insert(e.index, (e.term, e.data.clone()));
                self.max_committed = self.max_committed.max(e.index);
                Ok(())
            }
        }
    }

    fn check_leader_complete(&self, id: ReplicaId, node: &RawNode<MemStorage>) -> Result<(), Violation> {
        let first = node.first_index();
        if node.first_index().prev() < self.max_committed && node.status().last_index < self.max_committed {
            return Err(Violation::LeaderMissingCommitted { leader: id, index: self.max_committed });
        }
        for (&index, (term, _)) in self.committed.range(first..) {
            if node.log_term(index).ok() != Some(*term) {
                return Err(Violation::LeaderMissingCommitted { leader: id, index });
            }
        }
        Ok(())
    }

    /// A replica applied `e` and reached state (`count`, `hash`).
    pub(crate) fn applied(&mut self, id: ReplicaId, e: &Entry, count: u64, hash: u64) {
        if self.witnesses.contains(&id) {
            return;
        }
        if let Some((t, d, c, h)) = self.states.get(&e.index) {
            if *t != e.term || *d != e.data || *c != count || *h != hash {
                self.record(Violation::DivergentApply { replica: id, index: e.index });
            }
        } else {
            self.states.insert(e.index, (e.term, e.data.clone(), count, hash));
        }
    }

    pub(crate) fn write_invoked(&mut self, _op: OpId, _step: usize) {}

    /// The write's proposer applied it; the sequence then had length `pos`.
    pub(crate) fn write_acked(&mut self, _op: OpId, pos: u64, _step: usize) {
        self.max_acked = self.max_acked.max(pos);
    }

    pub(crate) fn read_invoked(&mut self, op: OpId, _step: usize) {
        self.reads.insert(op, self.max_acked.max(self.max_read));
    }

    /// The read returned a state of length `got`.
    pub(crate) fn read_done(&mut self, op: OpId, got: u64, _step: usize) {
        let Some(required) = self.reads.remove(&op) else { return };
        if got < required {
            self.record(Violation::StaleRead { op: op.0, got, required });
        }
        self.max_read = self.max_read.max(got);
    }
}
