//! The leader's view of each follower's log: how far it matches and how to send it more.

use std::collections::BTreeMap;

use crate::inflights::Inflights;
use crate::types::{LogIndex, ReplicaId};

/// How the leader is replicating to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding where the logs match: one append at a time, then wait for its answer.
    Probe,
    /// Logs match: stream appends optimistically, bounded by the inflight window.
    Replicate,
    /// The follower needs a snapshot (`pending` is its index); nothing else is sent until it is reported.
    Snapshot {
        /// Index of the snapshot being sent.
        pending: LogIndex,
    },
}

/// Replication progress of one follower.
///
/// Invariants: `matched < next`; in `Replicate`, `next - 1` is the last index sent.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to be durably stored by the follower.
    pub matched: LogIndex,
    /// The next index to send.
    pub next: LogIndex,
    /// Replication mode.
    pub state: ProgressState,
    /// In `Probe`: an append was sent and its answer (or a heartbeat answer) is awaited.
    pub probe_sent: bool,
    /// Heard from the follower since the last CheckQuorum round.
    pub recent_active: bool,
    /// Appends in flight.
    pub inflights: Inflights,
}

impl Progress {
    /// A follower about to be probed from `next`.
    pub fn new(next: LogIndex, max_inflight: usize) -> Self {
        Progress {
            matched: LogIndex(0),
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: true,
            inflights: Inflights::new(max_inflight, 0),
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.state = state;
        self.inflights.reset();
    }

    /// Switch to probing from just after `matched` (or after a snapshot that was sent).
    pub fn become_probe(&mut self) {
        if let ProgressState::Snapshot { pending } = self.state {
            self.reset_state(ProgressState::Probe);
            self.next = LogIndex(self.matched.0.max(pending.0) + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched.next();
        }
    }

    /// Switch to streaming from just after `matched`.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched.next();
    }

    /// Switch to waiting for snapshot `index` to be installed.
    pub fn become_snapshot(&mut self, index: LogIndex) {
        self.reset_state(ProgressState::Snapshot { pending: index });
    }

    /// Records an acknowledgement up to `n`. Returns false if it tells nothing new (stale or duplicate).
    pub fn maybe_update(&mut self, n: LogIndex) -> bool {
        let updated = self.matched < n;
        if updated {
            self.matched = n;
            self.probe_sent = false;
        }
        if self.next <= n {
            self.next = n.next();
        }
        updated
    }

    /// Records that entries up to `last` were sent (replicate state).
    pub fn optimistic_update(&mut self, last: LogIndex) {
        self.next = last.next();
    }

    /// Handles a rejection of the append after `rejected`; `hint` is where the follower's log may match.
    /// Returns false if the rejection is stale (answers an append we no longer care about).
    pub fn maybe_decr_to(&mut self, rejected: LogIndex, hint: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched.next();
            return true;
        }
        if self.next.prev() != rejected {
            return false;
        }
        self.next = LogIndex(rejected.0.min(hint.0.saturating_add(1)).max(self.matched.0 + 1).max(1));
        self.probe_sent = false;
        true
    }

    /// True when the leader must not send more appends right now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot { .. } => true,
        }
    }
}

/// Progress of every member (including the leader itself), keyed by replica id.
pub type ProgressMap = BTreeMap<ReplicaId, Progress>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_backs_off_with_hint() {
        let mut p = Progress::new(LogIndex(11), 4);
        assert!(!p.maybe_decr_to(LogIndex(5), LogIndex(3)), "stale rejection is ignored");
        assert!(p.maybe_decr_to(LogIndex(10), LogIndex(3)));
        assert_eq!(p.next, LogIndex(4));
        p.maybe_update(LogIndex(6));
        p.become_replicate();
        assert_eq!(p.next, LogIndex(7));
        p.optimistic_update(LogIndex(20));
        assert!(!p.maybe_decr_to(LogIndex(6), LogIndex(0)));
        assert!(p.maybe_decr_to(LogIndex(15), LogIndex(0)));
        assert_eq!(p.next, LogIndex(7));
    }

    #[test]
    fn snapshot_then_probe() {
        let mut p = Progress::new(LogIndex(2), 4);
        p.become_snapshot(LogIndex(50));
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next, LogIndex(51));
    }
}
