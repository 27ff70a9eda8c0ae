//! [`GrpcMembership`]: observes and changes a cluster's membership through the nodes' Admin API with
//! `drakkar-client`.
//!
//! Members and roles come from group 1's membership (`Admin.GetMembership`, answered by a node running
//! the group, or forwarded to one); the leader of every group from each node's `Admin.Status`, the
//! highest term winning when nodes disagree. Changes: per group, the membership and every reachable
//! node's status go into [`next_step`]; the step is carried out with the configuration index it was
//! planned from. Calls are bounded by a short timeout: an unreachable cluster costs one timeout per
//! reconcile, not a stuck reconciler.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drakkar_client::pb;
use drakkar_client::{Client, ClientConfig};
use futures::future::{BoxFuture, join_all};

use super::plan::{GroupView, Held, MemberView, NodeGroups, Step, ViewRole, next_step};
use super::{
    AdminError, Convergence, MemberChange, MemberPlan, Membership, Observation, ObservedMember, Target,
};
use crate::crd::{GroupLeader, MemberRole, StateMachine};

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
        let statuses: Vec<pb::StatusResponse> =
            join_all(target.endpoints.iter().map(|e| client.status(e))).await.into_iter().flatten().collect();
        // Group 1 replicas their nodes report refused as reused after data loss: (address, replica).
        let lost: std::collections::BTreeSet<(String, u64)> = statuses
            .iter()
            .filter_map(|s| Some((s.node.as_ref()?.address.clone(), &s.groups)))
            .flat_map(|(address, groups)| {
                groups
                    .iter()
                    .filter(|g| g.group == 1 && g.state == pb::ReplicaState::IdReused as i32)
                    .map(move |g| (address.clone(), g.replica))
            })
            .collect();
        let members = membership
            .members
            .iter()
            .map(|m| ObservedMember {
                replica_id: m.replica,
                address: m.address.clone(),
                role: if lost.contains(&(m.address.clone(), m.replica)) {
                    MemberRole::Lost
                } else {
                    role_of(m, membership.leader)
                },
            })
            .collect();
        // group -> (term, leader): the highest term any node reports.
        let mut leaders: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for status in statuses {
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

    /// What every reachable node of `target` runs, by its advertised address.
    async fn nodes(client: &Client, target: &Target) -> BTreeMap<String, NodeGroups> {
        let statuses = join_all(target.endpoints.iter().map(|e| client.status(e))).await;
        statuses
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let address = s.node?.address;
                let held = s.groups.iter().filter_map(|g| {
                    let held = match pb::ReplicaState::try_from(g.state) {
                        Ok(pb::ReplicaState::Running) => Held::running(g.replica, g.applied_index),
                        Ok(pb::ReplicaState::IdReused) => Held::lost(g.replica),
                        // Stopped for another reason: held, never caught up. Its data is deleted once
                        // its id is removed from the group; otherwise restarting it is left to a person.
                        Ok(pb::ReplicaState::Stopped) => Held { replica: g.replica, applied: 0, lost: false },
                        Err(_) => return None,
                    };
                    Some((g.group, held))
                });
                Some((address, held.collect()))
            })
            .collect()
    }

    /// Carries out `step` in group `g`, planned from configuration index `conf_index`.
    async fn execute(
        client: &Client,
        g: u64,
        conf_index: u64,
        step: &Step,
        kind: StateMachine,
    ) -> Result<(), drakkar_client::ClientError> {
        let start = |replica| pb::StartGroupRequest {
            group: g,
            replica,
            initial_members: vec![],
            join: true,
            kind: match kind {
                StateMachine::Memory => pb::StateMachineKind::KvMemory,
                StateMachine::Disk => pb::StateMachineKind::KvDisk,
            } as i32,
        };
        match step {
            Step::TransferLeader { to } => client.transfer_leader(g, *to).await,
            Step::Remove { replica, .. } | Step::RemoveLost { replica, .. } => {
                client.remove_replica(g, *replica, conf_index).await.map(drop)
            }
            Step::Clear { address, .. } => client.stop_group(address, g, true).await,
            Step::Start { replica, address } => client.start_group(address, start(*replica)).await,
            Step::Add { replica, address } => {
                client.add_replica(g, *replica, address, pb::Role::NonVoter, conf_index).await?;
                client.start_group(address, start(*replica)).await
            }
            Step::Promote { replica, .. } => client.promote_replica(g, *replica, conf_index).await.map(drop),
        }
    }

    async fn converge_with(&self, client: &Client, target: &Target, plan: &MemberPlan) -> Convergence {
        let nodes = Self::nodes(client, target).await;
        let mut out = Convergence::default();
        for g in 1..=u64::from(target.groups) {
            let m = match client.membership(g).await {
                Ok(m) => m,
                Err(e) => {
                    out.pending.push(g);
                    out.errors.push(format!("group {g}: reading the membership: {e}"));
                    continue;
                }
            };
            let view = view_of(&m);
            let converged = view.members.len() == plan.voters.len()
                && view.members.iter().all(|x| x.role == ViewRole::Voter && plan.voters.contains(&x.address));
            let Some(step) = next_step(&view, &nodes, &plan.voters) else {
                if !converged {
                    out.pending.push(g);
                }
                continue;
            };
            out.pending.push(g);
            match Self::execute(client, g, view.conf_index, &step, plan.state_machine).await {
                Ok(()) => out.changes.push(MemberChange { group: g, step }),
                // (An Add whose start failed still changed the group: the next pass starts it.)
                Err(e) => out.errors.push(format!("{}: {e}", MemberChange { group: g, step })),
            }
        }
        out
    }
}

/// The planner's view of a membership answer.
fn view_of(m: &pb::MembershipResponse) -> GroupView {
    let members = m
        .members
        .iter()
        .filter_map(|x| {
            let role = match pb::Role::try_from(x.role).ok()? {
                pb::Role::Voter => ViewRole::Voter,
                pb::Role::NonVoter => ViewRole::NonVoter,
                pb::Role::Witness => ViewRole::Witness,
            };
            Some(MemberView { replica: x.replica, address: x.address.clone(), role })
        })
        .collect();
    GroupView {
        group: m.group,
        conf_index: m.conf_index,
        leader: m.leader,
        members,
        removed: m.removed.clone(),
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

    fn converge<'a>(
        &'a self,
        target: &'a Target,
        plan: &'a MemberPlan,
    ) -> BoxFuture<'a, Result<Convergence, AdminError>> {
        Box::pin(async move {
            if target.endpoints.is_empty() {
                return Ok(Convergence::default());
            }
            let client = self.client(target)?;
            let result = self.converge_with(&client, target, plan).await;
            client.close().await;
            Ok(result)
        })
    }
}
