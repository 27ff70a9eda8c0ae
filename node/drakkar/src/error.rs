//! Errors of the NodeHost API.

use drakkar_raft::{GroupId, ReplicaId};

/// Why a NodeHost request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// This NodeHost does not run a replica of the group.
    #[error("group {0} is not running on this node")]
    GroupNotFound(GroupId),
    /// The group already runs here.
    #[error("group {0} is already running on this node")]
    GroupExists(GroupId),
    /// No leader is known right now; retry.
    #[error("group {group} has no leader right now")]
    NoLeader {
        /// The group.
        group: GroupId,
    },
    /// The request did not complete in time. A write may or may not have been applied (use sessions).
    #[error("request timed out")]
    Timeout,
    /// Queues are full: back off and retry.
    #[error("node busy: queues are full")]
    Busy,
    /// Too many unapplied bytes in the group's log: retry after it catches up.
    #[error("rate limited")]
    RateLimited,
    /// The proposal was refused by Raft (transfer in progress, pending membership change, ...).
    #[error("proposal refused: {0}")]
    Refused(#[from] drakkar_raft::ProposalError),
    /// A membership change named an unexpected configuration index (optimistic lock).
    #[error("membership changed: expected config change index {expected}, current is {current}")]
    StaleConfChange {
        /// What the caller expected.
        expected: u64,
        /// The current one.
        current: u64,
    },
    /// The request is invalid.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A session proposal named a session that does not exist (never opened, or closed).
    #[error("unknown or closed session")]
    SessionUnknown,
    /// A retried session proposal whose result the group no longer keeps: the client acknowledged it, or
    /// it was evicted past the per-session limit of unacknowledged results. It may have been applied once;
    /// it is not applied again.
    #[error("this session proposal's result is no longer kept (acknowledged, or evicted past the limit)")]
    SessionResultForgotten,
    /// The log refused a membership change (adding a member twice, removing a non-member, reusing a
    /// removed id): decided identically on every replica when the entry was applied.
    #[error("membership change refused: {0}")]
    ConfChangeRefused(String),
    /// A query the state machine does not understand ([`crate::statemachine::SmError::InvalidRequest`]).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The state machine refused a lookup.
    #[error("state machine: {0}")]
    StateMachine(String),
    /// A plain proposal that reached the log later than [`crate::session::PLAIN_WINDOW`] newer proposals of
    /// its node: it may be a copy of one already applied, so it was not applied. Rare (it needs a
    /// delivery delayed past a thousand others); the write was not applied and may be sent again.
    #[error("proposal refused: it arrived too late to tell it from a duplicate")]
    PossibleDuplicate,
    /// The replica was stopped (shut down, removed, or failed).
    #[error("replica {replica} of group {group} stopped: {reason}")]
    Stopped {
        /// The group.
        group: GroupId,
        /// The replica.
        replica: ReplicaId,
        /// Why.
        reason: String,
    },
    /// A replica id was reused on a node whose data was lost: it must be replaced, not restarted.
    #[error("replica {replica} of group {group} lost its data and must be replaced under a new id")]
    ReplicaIdReused {
        /// The group.
        group: GroupId,
        /// The replica.
        replica: ReplicaId,
    },
    /// This node's replica of the group is a witness: it holds no state machine data, so it serves no
    /// reads, writes or sessions. Send the request to a node with a data replica.
    #[error("replica {replica} of group {group} is a witness and holds no data")]
    Witness {
        /// The group.
        group: GroupId,
        /// The witness replica.
        replica: ReplicaId,
    },
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The NodeHost is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Result alias.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;

impl NodeError {
    /// A lookup's failure: a query the state machine does not understand is the caller's error
    /// ([`NodeError::InvalidQuery`]), anything else the state machine's ([`NodeError::StateMachine`]).
    pub fn from_lookup(e: crate::statemachine::SmError) -> NodeError {
        match e {
            crate::statemachine::SmError::InvalidRequest(m) => NodeError::InvalidQuery(m),
            other => NodeError::StateMachine(other.to_string()),
        }
    }
}
