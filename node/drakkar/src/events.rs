//! Events a NodeHost reports about its replicas (Dragonboat's system events), for operators and tests.
//! Subscribe with [`crate::NodeHost::events`]; a slow subscriber misses events (it is told how many)
//! rather than slowing the engine down.

use drakkar_raft::{GroupId, LogIndex, Membership, ReplicaId, Term};

/// Something that happened to a replica on this NodeHost.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The replica learned of a new leader (or of none).
    LeaderChanged {
        /// The group.
        group: GroupId,
        /// The leader, if one is known.
        leader: Option<ReplicaId>,
        /// The term.
        term: Term,
    },
    /// A membership change was applied.
    MembershipChanged {
        /// The group.
        group: GroupId,
        /// The new membership.
        membership: Membership,
        /// The change's log index.
        conf_index: u64,
    },
    /// A snapshot of the local state machine was recorded.
    SnapshotCreated {
        /// The group.
        group: GroupId,
        /// Its index.
        index: LogIndex,
    },
    /// A snapshot from the leader was installed.
    SnapshotReceived {
        /// The group.
        group: GroupId,
        /// Its index.
        index: LogIndex,
    },
    /// The log was compacted up to `index`.
    LogCompacted {
        /// The group.
        group: GroupId,
        /// Entries up to here were dropped.
        index: LogIndex,
    },
    /// The replica stopped (stop request, failure, shutdown, or a reused replica id).
    ReplicaStopped {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
}

/// The sending side, shared by the workers.
#[derive(Clone)]
pub(crate) struct EventBus(tokio::sync::broadcast::Sender<Event>);

impl EventBus {
    pub(crate) fn new() -> Self {
        EventBus(tokio::sync::broadcast::channel(4096).0)
    }

    /// Publishes an event; without subscribers it is dropped.
    pub(crate) fn emit(&self, e: Event) {
        let _ = self.0.send(e);
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
