//! NodeHost errors as gRPC statuses, request deadlines, and the leader hint.
//!
//! | NodeError | gRPC code | `drakkar-reason` |
//! |---|---|---|
//! | GroupNotFound | NOT_FOUND | group-not-found |
//! | GroupExists | ALREADY_EXISTS | |
//! | InvalidArgument, InvalidQuery (malformed input, bad queries) | INVALID_ARGUMENT | invalid |
//! | StaleConfChange | FAILED_PRECONDITION | stale-conf-change |
//! | SessionUnknown | FAILED_PRECONDITION | session-unknown |
//! | SessionResultForgotten | FAILED_PRECONDITION | session-result-forgotten |
//! | ConfChangeRefused, invalid transfer target | FAILED_PRECONDITION | |
//! | ReplicaIdReused | FAILED_PRECONDITION | replica-id-reused |
//! | NoLeader | UNAVAILABLE (+ leader hint when known) | no-leader |
//! | a membership change or transfer on a follower that cannot pass it to the leader | UNAVAILABLE (+ hint) | not-leader |
//! | leader transfer in progress | UNAVAILABLE (+ hint) | leader-transfer |
//! | membership change pending | UNAVAILABLE | conf-change-pending |
//! | Stopped | UNAVAILABLE | stopped |
//! | ShuttingDown | UNAVAILABLE | shutting-down |
//! | Witness (the replica here holds no data) | FAILED_PRECONDITION (+ leader hint) | witness |
//! | PossibleDuplicate (a plain write too late to dedupe; not applied) | ABORTED | possible-duplicate |
//! | Busy | RESOURCE_EXHAUSTED | busy |
//! | RateLimited | RESOURCE_EXHAUSTED | rate-limited |
//! | Timeout | DEADLINE_EXCEEDED | |
//! | Storage, state machine failures | INTERNAL (logged) | |

use std::time::Duration;

use drakkar_client::{LEADER_HEADER, LEADER_REPLICA_HEADER, REASON_HEADER, reason};
use drakkar_raft::{GroupId, ProposalError};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use drakkar::{NodeError, NodeHost};

/// A status with a `drakkar-reason`.
pub fn with_reason(code: Code, message: impl Into<String>, why: &str) -> Status {
    let mut s = Status::new(code, message);
    if let Ok(v) = MetadataValue::try_from(why) {
        s.metadata_mut().insert(REASON_HEADER, v);
    }
    s
}

/// INVALID_ARGUMENT.
pub fn invalid(message: impl Into<String>) -> Status {
    with_reason(Code::InvalidArgument, message, reason::INVALID)
}

/// INTERNAL, logged with its cause: the node failed, not the request.
pub fn internal(message: impl Into<String>) -> Status {
    let message = message.into();
    tracing::error!(error = %message, "request failed: internal error");
    Status::internal(message)
}

/// UNAVAILABLE `not-leader` with the leader hint: this node's replica of `group` is not its leader, and
/// the request runs on the leader only.
pub fn not_leader(host: &NodeHost, group: GroupId, why: &str) -> Status {
    let mut s = with_reason(Code::Unavailable, why, reason::NOT_LEADER);
    add_leader_hint(&mut s, host, group);
    s
}

/// Adds the leader of `group`, as this node knows it, to the status metadata.
pub fn add_leader_hint(s: &mut Status, host: &NodeHost, group: GroupId) {
    let Ok(Some((leader, _))) = host.leader(group) else { return };
    if let Ok(v) = MetadataValue::try_from(leader.0.to_string()) {
        s.metadata_mut().insert(LEADER_REPLICA_HEADER, v);
    }
    let addr = host.membership(group).ok().and_then(|m| m.addresses.get(&leader).cloned());
    if let Some(a) = addr.filter(|a| *a != host.info().address)
        && let Ok(v) = MetadataValue::try_from(a.as_str())
    {
        s.metadata_mut().insert(LEADER_HEADER, v);
    }
}

/// The gRPC status for a NodeHost error on `group` (see the module table).
pub fn to_status(e: NodeError, host: &NodeHost, group: GroupId) -> Status {
    let msg = e.to_string();
    let (code, why, hint) = match &e {
        NodeError::GroupNotFound(_) => (Code::NotFound, Some(reason::GROUP_NOT_FOUND), false),
        NodeError::GroupExists(_) => (Code::AlreadyExists, None, false),
        NodeError::NoLeader { .. } => (Code::Unavailable, Some(reason::NO_LEADER), true),
        NodeError::Timeout => (Code::DeadlineExceeded, None, false),
        NodeError::Busy => (Code::ResourceExhausted, Some(reason::BUSY), false),
        NodeError::RateLimited => (Code::ResourceExhausted, Some(reason::RATE_LIMITED), false),
        NodeError::Refused(p) => match p {
            ProposalError::NoLeader => (Code::Unavailable, Some(reason::NO_LEADER), true),
            ProposalError::RateLimited => (Code::ResourceExhausted, Some(reason::RATE_LIMITED), false),
            ProposalError::TransferInProgress => (Code::Unavailable, Some(reason::LEADER_TRANSFER), true),
            ProposalError::ConfChangePending => (Code::Unavailable, Some(reason::CONF_CHANGE_PENDING), true),
            ProposalError::InvalidConfChange(_) | ProposalError::InvalidTransferTarget(_) => {
                (Code::FailedPrecondition, None, false)
            }
            ProposalError::MalformedConfChange | ProposalError::Empty => {
                (Code::InvalidArgument, Some(reason::INVALID), false)
            }
            _ => (Code::Unavailable, None, true),
        },
        NodeError::StaleConfChange { .. } => {
            (Code::FailedPrecondition, Some(reason::STALE_CONF_CHANGE), false)
        }
        NodeError::SessionUnknown => (Code::FailedPrecondition, Some(reason::SESSION_UNKNOWN), false),
        NodeError::SessionResultForgotten => {
            (Code::FailedPrecondition, Some(reason::SESSION_RESULT_FORGOTTEN), false)
        }
        NodeError::ConfChangeRefused(_) => (Code::FailedPrecondition, None, false),
        NodeError::PossibleDuplicate => (Code::Aborted, Some(reason::POSSIBLE_DUPLICATE), false),
        NodeError::InvalidArgument(_) => (Code::InvalidArgument, Some(reason::INVALID), false),
        // `SmError::InvalidRequest` (a query the state machine does not understand) renders like this.
        NodeError::InvalidQuery(_) => (Code::InvalidArgument, Some(reason::INVALID), false),
        NodeError::Stopped { .. } => (Code::Unavailable, Some(reason::STOPPED), false),
        NodeError::ReplicaIdReused { .. } => {
            (Code::FailedPrecondition, Some(reason::REPLICA_ID_REUSED), false)
        }
        NodeError::ShuttingDown => (Code::Unavailable, Some(reason::SHUTTING_DOWN), false),
        // Routing sends such requests elsewhere; a direct one is for another node: the leader hint helps.
        NodeError::Witness { .. } => (Code::FailedPrecondition, Some(reason::WITNESS), true),
        _ => (Code::Internal, None, false),
    };
    let mut s = match why {
        Some(w) => with_reason(code, msg, w),
        None => Status::new(code, msg),
    };
    if hint {
        add_leader_hint(&mut s, host, group);
    }
    if code == Code::Internal {
        tracing::error!(group = group.0, error = %s.message(), "request failed: internal error");
    }
    s
}

/// The request's deadline (`grpc-timeout`), capped at `max`, or `default`. A little is kept back so the
/// node answers DEADLINE_EXCEEDED itself before the caller gives up.
pub fn deadline<T>(req: &tonic::Request<T>, default: Duration, max: Duration) -> Duration {
    let t = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|t| t.mul_f64(0.95))
        .unwrap_or(default);
    t.min(max)
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether a node forwarded this request (it is never forwarded again).
pub fn is_forwarded<T>(req: &tonic::Request<T>) -> bool {
    req.metadata().contains_key(drakkar_client::FORWARDED_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use drakkar_raft::ReplicaId;

    use drakkar::transport::InProcessNetwork;
    use drakkar::{GroupConfig, NodeHostConfig, StartMode, StateMachineBox};
    use drakkar_kv::MemKv;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn node_errors_map_to_the_documented_codes() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeHostConfig::new(dir.path(), "node-1:7000");
        cfg.tick_interval = Duration::from_millis(5);
        let host = NodeHost::new(cfg, InProcessNetwork::new().transport()).unwrap();
        let g = GroupId(1);
        let members = BTreeMap::from([(ReplicaId(1), "node-1:7000".to_string())]);
        let sm = StateMachineBox::concurrent(Arc::new(MemKv::new()));
        host.start_replica(g, ReplicaId(1), StartMode::Founding(members), sm, GroupConfig::default())
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !matches!(host.leader(g), Ok(Some(_))) {
            assert!(std::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let reason_of = |s: &Status| s.metadata().get(REASON_HEADER).map(|v| v.to_str().unwrap().to_string());
        let cases: Vec<(NodeError, Code, Option<&str>)> = vec![
            (NodeError::GroupNotFound(g), Code::NotFound, Some(reason::GROUP_NOT_FOUND)),
            (NodeError::NoLeader { group: g }, Code::Unavailable, Some(reason::NO_LEADER)),
            (NodeError::Timeout, Code::DeadlineExceeded, None),
            (NodeError::Busy, Code::ResourceExhausted, Some(reason::BUSY)),
            (NodeError::RateLimited, Code::ResourceExhausted, Some(reason::RATE_LIMITED)),
            (
                NodeError::StaleConfChange { expected: 1, current: 2 },
                Code::FailedPrecondition,
                Some(reason::STALE_CONF_CHANGE),
            ),
            (NodeError::InvalidArgument("bad".into()), Code::InvalidArgument, Some(reason::INVALID)),
            (NodeError::SessionUnknown, Code::FailedPrecondition, Some(reason::SESSION_UNKNOWN)),
            (
                NodeError::SessionResultForgotten,
                Code::FailedPrecondition,
                Some(reason::SESSION_RESULT_FORGOTTEN),
            ),
            (
                NodeError::Witness { group: g, replica: ReplicaId(4) },
                Code::FailedPrecondition,
                Some(reason::WITNESS),
            ),
            (NodeError::ConfChangeRefused("twice".into()), Code::FailedPrecondition, None),
            (NodeError::InvalidQuery("x".into()), Code::InvalidArgument, Some(reason::INVALID)),
            (NodeError::StateMachine("disk on fire".into()), Code::Internal, None),
            (NodeError::PossibleDuplicate, Code::Aborted, Some(reason::POSSIBLE_DUPLICATE)),
            (NodeError::ShuttingDown, Code::Unavailable, Some(reason::SHUTTING_DOWN)),
            (
                NodeError::Refused(ProposalError::TransferInProgress),
                Code::Unavailable,
                Some(reason::LEADER_TRANSFER),
            ),
            (NodeError::Refused(ProposalError::Empty), Code::InvalidArgument, Some(reason::INVALID)),
            (NodeError::Storage("x".into()), Code::Internal, None),
        ];
        for (e, code, why) in cases {
            let shown = e.to_string();
            let s = to_status(e, &host, g);
            assert_eq!(s.code(), code, "{shown}");
            assert_eq!(reason_of(&s).as_deref(), why, "{shown}");
        }
        // The hint names the leader (itself here, so no address: the client is already talking to it).
        let s = to_status(NodeError::NoLeader { group: g }, &host, g);
        assert_eq!(s.metadata().get(LEADER_REPLICA_HEADER).unwrap(), "1");
        assert!(s.metadata().get(LEADER_HEADER).is_none());
        host.close();
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("12x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }
}
