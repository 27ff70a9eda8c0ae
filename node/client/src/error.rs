//! Client errors, and the metadata keys the server uses to explain them.

use tonic::Code;

/// Response metadata: the group leader's address (`host:port`), when the node knows it.
pub const LEADER_HEADER: &str = "drakkar-leader";
/// Response metadata: the group leader's replica id, when the node knows it.
pub const LEADER_REPLICA_HEADER: &str = "drakkar-leader-replica";
/// Response metadata: a machine-readable reason (see [`reason`]).
pub const REASON_HEADER: &str = "drakkar-reason";
/// Request metadata set by a node forwarding a request to another node: the receiver never forwards it
/// again.
pub const FORWARDED_HEADER: &str = "drakkar-forwarded";

/// Values of [`REASON_HEADER`].
pub mod reason {
    /// No leader is known (UNAVAILABLE): the request never entered the log; retrying is safe.
    pub const NO_LEADER: &str = "no-leader";
    /// The node's replica is not the leader, and the request (a membership change or a leader transfer)
    /// runs on the leader only (UNAVAILABLE, with the leader hint): it never entered the log; retry it
    /// at the leader.
    pub const NOT_LEADER: &str = "not-leader";
    /// Queues are full (RESOURCE_EXHAUSTED): the request never entered the log.
    pub const BUSY: &str = "busy";
    /// Too many unapplied bytes (RESOURCE_EXHAUSTED): the request never entered the log.
    pub const RATE_LIMITED: &str = "rate-limited";
    /// The session is unknown or closed (FAILED_PRECONDITION): open a new one.
    pub const SESSION_UNKNOWN: &str = "session-unknown";
    /// The expected configuration index is stale (FAILED_PRECONDITION).
    pub const STALE_CONF_CHANGE: &str = "stale-conf-change";
    /// No node hosts the group (NOT_FOUND).
    pub const GROUP_NOT_FOUND: &str = "group-not-found";
    /// The node is shutting down (UNAVAILABLE).
    pub const SHUTTING_DOWN: &str = "shutting-down";
    /// A leader transfer is in progress (UNAVAILABLE): the request never entered the log.
    pub const LEADER_TRANSFER: &str = "leader-transfer";
    /// Another membership change is not applied yet (UNAVAILABLE): the request never entered the log.
    pub const CONF_CHANGE_PENDING: &str = "conf-change-pending";
    /// The replica stopped (UNAVAILABLE).
    pub const STOPPED: &str = "stopped";
    /// Bad input (INVALID_ARGUMENT).
    pub const INVALID: &str = "invalid";
    /// The group does not run the built-in KV state machine (FAILED_PRECONDITION).
    pub const NOT_KV: &str = "not-kv";
    /// The replica's id was reused after its node lost its data (FAILED_PRECONDITION).
    pub const REPLICA_ID_REUSED: &str = "replica-id-reused";
    /// The node's replica of the group is a witness and holds no data (FAILED_PRECONDITION, with the
    /// leader hint): ask another node. Nodes route around their witnesses; only a NodeHost caller sees it.
    pub const WITNESS: &str = "witness";
    /// A retried session write whose result the group no longer keeps (FAILED_PRECONDITION): it was
    /// acknowledged, or evicted past the per-session limit; it may have been applied once and is not
    /// applied again.
    pub const SESSION_RESULT_FORGOTTEN: &str = "session-result-forgotten";
    /// A plain (session-less) write that reached the group's log too late to tell it from a duplicate
    /// delivery (ABORTED): it was not applied; sending it again is as safe as any plain write.
    pub const POSSIBLE_DUPLICATE: &str = "possible-duplicate";
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server (or the connection) answered with a gRPC status.
    #[error("{endpoint}: {code:?}: {message}")]
    Status {
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
        /// [`REASON_HEADER`], if set.
        reason: Option<String>,
        /// [`LEADER_HEADER`], if set.
        leader: Option<String>,
        /// The endpoint that answered.
        endpoint: String,
    },
    /// An endpoint could not be parsed.
    #[error("invalid endpoint {endpoint}: {message}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// No endpoint was configured.
    #[error("no endpoints configured")]
    NoEndpoints,
    /// A request could not be built (e.g. a key or value too large).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The server's answer was not what the protocol promises.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Local I/O failed (e.g. writing an exported snapshot).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A session write's outcome is unknown: it may or may not have been applied. An attempt of it failed
    /// after it may have reached the group (`earlier`: a timeout, a lost connection), then the last attempt
    /// found its session gone (`last`, `session-unknown`: it can be neither retried in that session nor
    /// run again in a new one without risking a second apply) or was refused before entering the log
    /// (`last`, such as `no-leader`: that proves nothing of the earlier one). Read the state to learn what
    /// happened.
    #[error("outcome unknown (the write may have been applied): {earlier}; then {last}")]
    OutcomeUnknown {
        /// The first failed attempt that may have been applied.
        earlier: Box<ClientError>,
        /// The answer that ended the retries.
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// A status received from `endpoint`.
    pub fn from_status(status: &tonic::Status, endpoint: &str) -> Self {
        let get = |k: &str| status.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        ClientError::Status {
            code: status.code(),
            message: status.message().to_string(),
            reason: get(REASON_HEADER),
            leader: get(LEADER_HEADER).filter(|l| !l.is_empty()),
            endpoint: endpoint.to_string(),
        }
    }

    /// The gRPC code, for a status error.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The machine-readable reason, if the server gave one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Status { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// The leader's address, if the server named it.
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            ClientError::Status { leader, .. } => leader.as_deref(),
            _ => None,
        }
    }

    /// Whether retrying (elsewhere, later) may succeed. `idempotent`: a retry cannot apply the request
    /// twice (a read, or a write in a session); otherwise only answers that prove the request never
    /// entered the log are retryable.
    pub fn retryable(&self, idempotent: bool) -> bool {
        let ClientError::Status { code, .. } = self else { return false };
        match code {
            Code::Unavailable | Code::ResourceExhausted => idempotent || self.never_entered(),
            Code::DeadlineExceeded | Code::Unknown | Code::Cancelled | Code::Aborted => idempotent,
            _ => false,
        }
    }

    /// Whether the node's answer proves the request never entered the group's log (so it was not, and
    /// will not be, applied): a refusal given before proposing.
    pub(crate) fn never_entered(&self) -> bool {
        matches!(
            self.reason(),
            Some(
                reason::NO_LEADER
                    | reason::BUSY
                    | reason::RATE_LIMITED
                    | reason::LEADER_TRANSFER
                    | reason::CONF_CHANGE_PENDING
                    | reason::NOT_LEADER
            )
        )
    }
}
