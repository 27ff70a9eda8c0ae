//! The desired objects of a cluster, built from its spec (pure: same input, same output).
//!
//! [`build`] returns everything the reconciler applies besides the operator-issued TLS Secrets (see
//! [`crate::tls`], which needs randomness): the StatefulSet, the two Services, the ConfigMap, the
//! PodDisruptionBudget and, in `certManager` mode, the cert-manager Certificates. Every object carries the
//! cluster's labels and a controller owner reference to the DrakkarCluster, so deleting the cluster
//! garbage-collects them.

mod certmanager;
mod services;
mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::DynamicObject;

pub use certmanager::{certificate_resource, certificates};
pub use services::{client_service, config_map, node_service_account, pdb, peer_service};
pub use statefulset::{DATA_DIR, TLS_DIR, node_args, statefulset};

use crate::crd::{DrakkarCluster, TlsMode};
use crate::names::Names;
use crate::validate::Founding;

/// What the server offers, discovered at start: builders leave out what it cannot take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `policy/v1` PodDisruptionBudget is served (Kubernetes 1.21+).
    pub pdb_v1: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities { pdb_v1: true }
    }
}

/// Inputs of [`build`].
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The cluster (validated).
    pub cluster: &'a DrakkarCluster,
    /// Its object names.
    pub names: &'a Names,
    /// The settings it was founded with (for a new cluster: [`Founding::from_spec`]).
    pub founding: &'a Founding,
    /// What the API server offers.
    pub capabilities: &'a Capabilities,
}

/// The objects of one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The nodes' ServiceAccount.
    pub service_account: ServiceAccount,
    /// The connection settings for applications.
    pub config_map: ConfigMap,
    /// The headless Service giving pods stable DNS names.
    pub peer_service: Service,
    /// The Service applications connect to.
    pub client_service: Service,
    /// Keeps a majority of the founding members up during voluntary disruptions (None: not served).
    pub pdb: Option<PodDisruptionBudget>,
    /// The cert-manager Certificates (`certManager` mode only).
    pub certificates: Vec<DynamicObject>,
    /// The nodes.
    pub statefulset: StatefulSet,
}

/// Errors building the objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The cluster has no uid yet (it was never stored), so nothing can be owned by it.
    #[error("the DrakkarCluster has no uid or name")]
    NoOwner,
    /// The founding annotation could not be written.
    #[error("encoding the founding settings: {0}")]
    Json(#[from] serde_json::Error),
}

/// Builds every desired object of `input.cluster`.
pub fn build(input: &Input<'_>) -> Result<Desired, BuildError> {
    let owner = owner_ref(input.cluster)?;
    let certificates = if input.cluster.spec.tls.mode == TlsMode::CertManager {
        certificates(input, &owner)
    } else {
        Vec::new()
    };
    Ok(Desired {
        service_account: node_service_account(input, &owner),
        config_map: config_map(input, &owner),
        peer_service: peer_service(input, &owner),
        client_service: client_service(input, &owner),
        pdb: input.capabilities.pdb_v1.then(|| pdb(input, &owner)),
        certificates,
        statefulset: statefulset(input, &owner)?,
    })
}

/// The controller owner reference pointing at `dk`.
pub fn owner_ref(dk: &DrakkarCluster) -> Result<OwnerReference, BuildError> {
    let mut r = dk.controller_owner_ref(&()).ok_or(BuildError::NoOwner)?;
    if r.uid.is_empty() || r.name.is_empty() {
        return Err(BuildError::NoOwner);
    }
    // Deleting the cluster in the foreground waits for its objects.
    r.block_owner_deletion = Some(true);
    Ok(r)
}

/// Metadata of an owned object named `name`.
pub(crate) fn meta(input: &Input<'_>, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(input.names.namespace.clone()),
        labels: Some(input.names.labels()),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The DNS names (and loopback addresses) the nodes' server certificate must cover: every pod of the
/// current spec through the peer Service, the client Service, and localhost for sidecars.
pub fn server_names(names: &Names, replicas: i32) -> Vec<String> {
    let mut v: Vec<String> = (0..replicas).map(|i| names.pod_dns(i)).collect();
    v.extend(names.client_dns());
    v.push("localhost".into());
    v.push("127.0.0.1".into());
    v
}
