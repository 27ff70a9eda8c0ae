//! The seam between the reconciler and the nodes' Admin API.
//!
//! The reconciler asks a [`Membership`] what the nodes report (members and their roles, the leader of
//! each group) and folds it into the status. [`GrpcMembership`] asks the ready nodes through the Admin
//! API (the operator binary uses it); [`Unobserved`] observes nothing (roles stay `Unknown`, no leaders).
//! Membership *changes* (adding scaled-up pods to the groups, removing pods before a scale-down,
//! replacing a pod that lost its volume) are a later step and will extend this trait; docs/operator.md
//! lists what is missing.

mod grpc;

pub use grpc::GrpcMembership;

use futures::future::BoxFuture;

use crate::crd::{GroupLeader, MemberRole};

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

/// What the nodes report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Members of group 1 by replica id, with their role.
    pub members: Vec<(u64, MemberRole)>,
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

/// Observes (and, later, changes) the membership of a cluster's groups through the Admin API.
pub trait Membership: Send + Sync {
    /// Whether [`Membership::observe`] can report anything (the reconciler skips reading the operator's
    /// certificate otherwise).
    fn observes(&self) -> bool {
        true
    }

    /// What the nodes of `target` report; `Ok(None)` when this implementation does not observe.
    fn observe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Option<Observation>, AdminError>>;
}

/// Observes nothing: roles stay `Unknown`, leaders are not reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unobserved;

impl Membership for Unobserved {
    fn observes(&self) -> bool {
        false
    }

    fn observe<'a>(&'a self, _target: &'a Target) -> BoxFuture<'a, Result<Option<Observation>, AdminError>> {
        Box::pin(async { Ok(None) })
    }
}
