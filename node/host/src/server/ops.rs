//! What every service does first: admission, deadline, routing; and the NodeHost calls they share.

use std::time::Duration;

use bytes::Bytes;
use drakkar_client::{pb, reason};
use drakkar_raft::GroupId;
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Code, Status};

use super::ServerState;
use super::status::{self, invalid, to_status, with_reason};
use crate::kv::{Command, CommandResult, Query, QueryResult};
use crate::statemachine::SmResult;
use crate::{NodeError, Session};

/// One request's admission slot, deadline, and whether a node forwarded it.
pub(super) struct Call {
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) timeout: Duration,
    pub(super) forwarded: bool,
}

/// Where a request for a group is served.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// A replica runs here.
    Local,
    /// Another node must serve it.
    Forward,
}

impl ServerState {
    pub(super) fn begin<T>(&self, req: &tonic::Request<T>) -> Result<Call, Status> {
        let permit = self.admit()?;
        Ok(Call {
            _permit: permit,
            timeout: status::deadline(req, self.cfg.default_timeout, self.cfg.max_timeout),
            forwarded: status::is_forwarded(req),
        })
    }

    /// Routes a request on `group`; `kv`: it needs the built-in KV state machine. A witness replica holds
    /// no data: a node whose replica is one routes like a node without a replica.
    pub(super) fn route(&self, group: GroupId, kv: bool, call: &Call) -> Result<Route, Status> {
        if matches!(self.host.is_witness(group), Ok(false)) {
            if kv && self.kv_kind(group).is_none() {
                return Err(with_reason(
                    Code::FailedPrecondition,
                    format!("group {group} does not run the built-in KV state machine"),
                    reason::NOT_KV,
                ));
            }
            return Ok(Route::Local);
        }
        if call.forwarded {
            // Only one hop: the forwarding node tries the next candidate.
            return Err(to_status(NodeError::GroupNotFound(group), &self.host, group));
        }
        Ok(Route::Forward)
    }

    /// Proposes `cmd` (in a session if given) and waits for its result.
    pub(super) async fn propose(
        &self,
        group: GroupId,
        cmd: Bytes,
        session: Option<pb::SessionRef>,
        timeout: Duration,
    ) -> Result<SmResult, Status> {
        let r = match session {
            Some(s) => {
                let s =
                    Session { group, client: s.client_id, series: s.series, responded_to: s.responded_to };
                self.host.propose_in_session(&s, cmd, timeout).await
            }
            None => self.host.propose(group, cmd, timeout).await,
        };
        r.map_err(|e| to_status(e, &self.host, group))
    }

    /// Runs a query, linearizable or stale.
    pub(super) async fn query(
        &self,
        group: GroupId,
        query: Bytes,
        consistency: i32,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        let r = match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Linearizable) => self.host.read(group, query, timeout).await,
            Ok(pb::Consistency::Stale) => self.host.stale_read(group, &query),
            Err(_) => return Err(invalid(format!("unknown consistency {consistency}"))),
        };
        r.map_err(|e| to_status(e, &self.host, group))
    }

    /// Proposes a KV command; a command the state machine rejects is INVALID_ARGUMENT.
    pub(super) async fn propose_kv(
        &self,
        group: GroupId,
        cmd: &Command,
        session: Option<pb::SessionRef>,
        timeout: Duration,
    ) -> Result<CommandResult, Status> {
        let bytes = cmd.encode().map_err(|e| invalid(e.to_string()))?;
        let r = self.propose(group, bytes, session, timeout).await?;
        match CommandResult::decode(&r.data) {
            Ok(CommandResult::Rejected { reason }) => Err(invalid(reason)),
            Ok(res) => Ok(res),
            Err(e) => Err(Status::internal(format!("undecodable KV result: {e}"))),
        }
    }

    /// Runs a KV query.
    pub(super) async fn query_kv(
        &self,
        group: GroupId,
        q: &Query,
        consistency: i32,
        timeout: Duration,
    ) -> Result<QueryResult, Status> {
        let bytes = q.encode().map_err(|e| invalid(e.to_string()))?;
        let r = self.query(group, bytes, consistency, timeout).await?;
        QueryResult::decode(&r).map_err(|e| Status::internal(format!("undecodable KV answer: {e}")))
    }
}

/// A KV result of the wrong kind for the command (a bug, never bad input).
pub(super) fn unexpected(what: &str, r: impl std::fmt::Debug) -> Status {
    Status::internal(format!("unexpected KV result for {what}: {r:?}"))
}
