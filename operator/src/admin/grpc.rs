//! [`GrpcMembership`]: observes a cluster through the nodes' Admin API with `drakkar-client`.
//!
//! Members and roles come from group 1's membership (`Admin.GetMembership`, answered by its leader or
//! forwarded to it); the leader of every group from each node's `Admin.Status`, the highest term winning
//! when nodes disagree. Calls are bounded by a short timeout: an unreachable cluster costs one timeout
//! per reconcile, not a stuck reconciler.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drakkar_client::pb;
use drakkar_client::{Client, ClientConfig};
use futures::future::{BoxFuture, join_all};

use super::{AdminError, Membership, Observation, Target};
use crate::crd::{GroupLeader, MemberRole};

/// Observes through the Admin API.
#[derive(Clone, Debug)]
pub struct GrpcMembership {
    /// Deadline of each call (and of the retries of the membership call).
    pub timeout: Duration,
}

impl Default for GrpcMembership {
    fn default() -> Self {
        GrpcMembership { timeout: Duration::from_secs(2) }
    }
}

/// The role of `m` in a group whose leader is `leader`.
fn role_of(m: &pb::Member, leader: u64) -> MemberRole {
    match pb::Role::try_from(m.role) {
        Ok(pb::Role::Voter) if m.replica == leader => MemberRole::Leader,
        Ok(pb::Role::Voter) => MemberRole::Follower,
        Ok(pb::Role::NonVoter) => MemberRole::NonVoting,
        Ok(pb::Role::Witness) => MemberRole::Witness,
        Err(_) => MemberRole::Unknown,
    }
}

impl GrpcMembership {
    fn client(&self, target: &Target) -> Result<Client, AdminError> {
        let mut cfg = ClientConfig::new(target.endpoints.clone());
        cfg.request_timeout = self.timeout;
        cfg.retry_for = self.timeout;
        cfg.connect_timeout = self.timeout;
        cfg.exactly_once = false;
        if let Some(tls) = &target.tls {
            let c = drakkar_client::tls::client_config(
                tls.ca.as_bytes(),
                Some((tls.cert.as_bytes(), tls.key.as_bytes())),
            )
            .map_err(|e| AdminError::Unreachable(format!("TLS configuration: {e}")))?;
            cfg = cfg.with_tls(Arc::new(Arc::new(c)));
        }
        Client::new(cfg).map_err(|e| AdminError::Unreachable(e.to_string()))
    }

    async fn observe_with(&self, client: &Client, target: &Target) -> Result<Observation, AdminError> {
        let membership = client
            .membership(1)
            .await
            .map_err(|e| AdminError::Unreachable(format!("group 1 membership: {e}")))?;
        let members = membership.members.iter().map(|m| (m.replica, role_of(m, membership.leader))).collect();
        // group -> (term, leader): the highest term any node reports.
        let mut leaders: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let statuses = join_all(target.endpoints.iter().map(|e| client.status(e))).await;
        for status in statuses.into_iter().flatten() {
            for g in status.groups.iter().filter(|g| g.leader != 0) {
                let entry = leaders.entry(g.group).or_insert((g.term, g.leader));
                if g.term > entry.0 {
                    *entry = (g.term, g.leader);
                }
            }
        }
        let leaders = leaders
            .into_iter()
            .map(|(group, (_, replica_id))| GroupLeader { group, replica_id, pod: None })
            .collect();
        Ok(Observation { members, leaders })
    }
}

impl Membership for GrpcMembership {
    fn observe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Option<Observation>, AdminError>> {
        Box::pin(async move {
            if target.endpoints.is_empty() {
                return Ok(None);
            }
            let client = self.client(target)?;
            let result = self.observe_with(&client, target).await;
            client.close().await;
            result.map(Some)
        })
    }
}
