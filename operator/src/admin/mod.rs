//! The seam between the reconciler and the nodes' Admin API.
//!
//! The reconciler asks a [`Membership`] what the nodes report (members and their roles, the leader of
//! each group) and folds it into the status, then asks it to [`converge`](Membership::converge) every
//! group's membership one step towards the pods the spec wants as voters: scaled-up pods join as
//! non-voters and are promoted once caught up, pods scaled away are removed (leadership handed over
//! first). The steps are planned by the pure [`plan::next_step`]. [`GrpcMembership`] does both through
//! the nodes' Admin API (the operator binary uses it); [`Unobserved`] observes and changes nothing.

mod grpc;
pub mod plan;

pub use grpc::GrpcMembership;
pub use plan::Step;

use futures::future::BoxFuture;

use crate::crd::{GroupLeader, MemberRole, StateMachine};

/// Where and how to reach a cluster's nodes.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port` of every node pod (their advertised addresses).
    pub endpoints: Vec<String>,
    /// Number of KV groups.
    pub groups: u32,
    /// The operator's client identity and the CA, PEM (None: the cluster runs without TLS).
    pub tls: Option<ClientTls>,
}

/// A client certificate and the CA that signs the nodes, PEM.
#[derive(Clone)]
pub struct ClientTls {
    /// CA certificate(s).
    pub ca: String,
    /// Client certificate.
    pub cert: String,
    /// Client private key.
    pub key: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// One member of group 1 as the nodes report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedMember {
    /// Replica id.
    pub replica_id: u64,
    /// The node's advertised address (how the operator finds its pod).
    pub address: String,
    /// Role.
    pub role: MemberRole,
}

/// What the nodes report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Members of group 1.
    pub members: Vec<ObservedMember>,
    /// The leader of each group that has one.
    pub leaders: Vec<GroupLeader>,
}

/// Errors talking to the nodes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No node answered.
    #[error("no node answered: {0}")]
    Unreachable(String),
}

/// What the operator wants of the groups' membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPlan {
    /// Advertised addresses of the pods that should be voters (ordinals `0..replicas`), in ordinal order.
    pub voters: Vec<String>,
    /// The state machine of a replica started on a new member.
    pub state_machine: StateMachine,
}

/// A membership change the operator made in one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberChange {
    /// The group.
    pub group: u64,
    /// What was done.
    pub step: Step,
}

impl std::fmt::Display for MemberChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.group;
        match &self.step {
            Step::TransferLeader { to } => write!(f, "group {g}: leadership handed to replica {to}"),
            Step::Remove { replica, address } => {
                write!(f, "group {g}: removed replica {replica} ({address})")
            }
            Step::RemoveLost { replica, address } => write!(
                f,
                "group {g}: removed replica {replica} ({address}), which lost its data; the node joins again under a new id"
            ),
            Step::Clear { address, replica } => {
                write!(f, "group {g}: deleted the data of removed replica {replica} on {address}")
            }
            Step::Start { replica, address } => {
                write!(f, "group {g}: started replica {replica} on {address}")
            }
            Step::Add { replica, address } => {
                write!(f, "group {g}: added {address} as non-voting replica {replica}")
            }
            Step::Promote { replica, address } => {
                write!(f, "group {g}: promoted replica {replica} ({address}) to voter")
            }
        }
    }
}

/// The outcome of one convergence pass over every group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Convergence {
    /// Changes made.
    pub changes: Vec<MemberChange>,
    /// Groups whose membership is not what the plan wants yet (waiting, changed or failed).
    pub pending: Vec<u64>,
    /// Changes that failed, as text (tried again at the next reconcile).
    pub errors: Vec<String>,
}

/// Observes and changes the membership of a cluster's groups through the Admin API.
pub trait Membership: Send + Sync {
    /// Whether [`Membership::observe`] can report anything (the reconciler skips reading the operator's
    /// certificate otherwise).
    fn observes(&self) -> bool {
        true
    }

    /// What the nodes of `target` report; `Ok(None)` when this implementation does not observe.
    fn observe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Option<Observation>, AdminError>>;

    /// Moves every group of `target` at most one step towards `plan` (see [`plan::next_step`]).
    fn converge<'a>(
        &'a self,
        target: &'a Target,
        plan: &'a MemberPlan,
    ) -> BoxFuture<'a, Result<Convergence, AdminError>>;
}

/// Observes nothing (roles stay `Unknown`, leaders are not reported) and changes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unobserved;

impl Membership for Unobserved {
    fn observes(&self) -> bool {
        false
    }

    fn observe<'a>(&'a self, _target: &'a Target) -> BoxFuture<'a, Result<Option<Observation>, AdminError>> {
        Box::pin(async { Ok(None) })
    }

    fn converge<'a>(
        &'a self,
        _target: &'a Target,
        _plan: &'a MemberPlan,
    ) -> BoxFuture<'a, Result<Convergence, AdminError>> {
        Box::pin(async { Ok(Convergence::default()) })
    }
}
