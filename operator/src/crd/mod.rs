//! The `DrakkarCluster` custom resource (`drakkar.io/v1alpha1`).
//!
//! The schema the API server enforces is derived from these types: ranges, enums and required fields are
//! attributes here, so `kubectl apply` rejects what the schema can express. Rules the schema cannot express
//! (cross-field rules, names, immutable fields) are checked by [`crate::validate`].

mod status;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Container, ResourceRequirements, Toleration, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use status::{
    ConditionStatus, ConditionType, DrakkarClusterStatus, GroupLeader, MemberRole, MemberStatus, Phase,
};

/// API group of the custom resources.
pub const GROUP: &str = "drakkar.io";
/// API version of `DrakkarCluster`.
pub const VERSION: &str = "v1alpha1";

/// A Drakkar cluster: a StatefulSet of `drakkar serve` nodes running `groups` Raft groups of the built-in
/// KV state machine, with its Services, PodDisruptionBudget, ConfigMap and TLS material.
// The printcolumn(...) arguments repeat keys by design; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "drakkar.io",
    version = "v1alpha1",
    kind = "DrakkarCluster",
    namespaced,
    shortname = "dk",
    category = "drakkar",
    status = "DrakkarClusterStatus",
    derive = "PartialEq",
    doc = "A Drakkar multi-group Raft cluster managed by the drakkar operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Replicas whose node is ready"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired replicas"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Summary state"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DrakkarClusterSpec {
    /// Number of nodes (pods). Odd, 1 to 9: a Raft group needs a majority, and an even count adds no fault
    /// tolerance. The first `replicas` at creation are the founding members of every group.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9), extend("enum" = [1, 3, 5, 7, 9]))]
    pub replicas: i32,
    /// Container image of the node; it must have the `drakkar` binary on its PATH.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// When the kubelet pulls the image.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// CPU and memory requests and limits of the node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The persistent volume of each node (Raft log, snapshots, on-disk state). Immutable.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Number of KV Raft groups (shards) founded at creation, numbered 1 to `groups`. Immutable: clients
    /// shard keys over this count.
    #[serde(default = "default_groups")]
    #[schemars(range(min = 1, max = 1024))]
    pub groups: u32,
    /// State machine of the KV groups. Immutable.
    #[serde(default)]
    pub state_machine: StateMachine,
    /// Transport security: who issues the nodes' and clients' certificates.
    #[serde(default)]
    pub tls: TlsSpec,
    /// Additions to the node pods: labels, annotations, scheduling, sidecar containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,
    /// Reserved for scheduled backups (a later release): validated, not acted on yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
}

fn default_replicas() -> i32 {
    3
}

fn default_groups() -> u32 {
    1
}

/// `imagePullPolicy` of the node container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the image is missing on the node.
    #[default]
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The state machine of the KV groups (`drakkar serve --state-machine`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StateMachine {
    /// In memory, rebuilt from the latest snapshot and the log at restart.
    #[default]
    Memory,
    /// On disk (redb), survives restarts by itself; for state larger than memory.
    Disk,
}

impl StateMachine {
    /// The value of the node's `--state-machine` flag.
    pub fn as_str(self) -> &'static str {
        match self {
            StateMachine::Memory => "memory",
            StateMachine::Disk => "disk",
        }
    }
}

/// The volume claim of each node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of each node's volume, a Kubernetes quantity such as `10Gi`. Immutable.
    #[serde(default = "default_storage_size")]
    #[schemars(schema_with = "size_schema")]
    pub size: Quantity,
    /// StorageClass of the volumes; unset uses the cluster's default class. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to the volumes when the DrakkarCluster is deleted.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
            reclaim_policy: ReclaimPolicy::default(),
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity("1Gi".into())
}

/// A positive storage quantity as a string (the generic Quantity schema also admits numbers and
/// negative values, which the operator would refuse later with a less direct message).
fn size_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Requested size of each node's volume, a Kubernetes quantity such as `10Gi`. Immutable.",
        "type": "string",
        "pattern": SIZE_PATTERN,
        "default": "1Gi",
    })
}

/// The storage sizes the schema accepts: a decimal number with an optional binary or decimal SI suffix.
pub const SIZE_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

/// Fate of the node volumes when the cluster is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// The operator deletes the PersistentVolumeClaims (the data is gone).
    #[default]
    Delete,
    /// The claims stay; a new cluster with the same name and namespace reuses them.
    Retain,
}

/// Who issues certificates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TlsMode {
    /// The operator runs a CA per cluster and issues and renews every certificate itself.
    #[default]
    Operator,
    /// cert-manager issues them from `issuerRef`; the operator creates the Certificate objects.
    CertManager,
    /// No TLS: plaintext gRPC (`drakkar serve --insecure`). For development only.
    Disabled,
}

/// Transport security of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// `operator` (default), `certManager` or `disabled`.
    #[serde(default)]
    pub mode: TlsMode,
    /// The cert-manager issuer; required when `mode` is `certManager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// Nodes refuse clients without a certificate signed by the cluster CA (mutual TLS). When false,
    /// callers without a certificate are let in with the client role only (data, no Admin changes).
    #[serde(default = "default_true")]
    pub require_client_cert: bool,
}

impl Default for TlsSpec {
    fn default() -> Self {
        TlsSpec { mode: TlsMode::default(), issuer_ref: None, require_client_cert: true }
    }
}

fn default_true() -> bool {
    true
}

/// A cert-manager `Issuer` or `ClusterIssuer`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the issuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (same namespace) or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// API group of the issuer.
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

/// Kind of a cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IssuerKind {
    /// A namespaced `Issuer`, in the cluster's namespace.
    #[default]
    Issuer,
    /// A cluster-wide `ClusterIssuer`.
    ClusterIssuer,
}

impl IssuerKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Issuer => "Issuer",
            IssuerKind::ClusterIssuer => "ClusterIssuer",
        }
    }
}

/// Additions merged into the node pod template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra pod labels (the operator's own `app.kubernetes.io/*` labels cannot be overridden).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Pod affinity and anti-affinity. Unset: a preferred anti-affinity spreads nodes across hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations of the node pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node selector of the node pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Extra containers in every node pod (the sidecar pattern: an application beside its node, reaching it
    /// on localhost). The name `drakkar` is reserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    /// Extra volumes for the extra containers (for example the client Secret `<name>-tls-client`). The
    /// names `data`, `tls` and `tmp` are the node's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
}

/// Reserved for scheduled backups; the operator validates it and reports that it is not implemented.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Cron schedule of backups (five fields), e.g. `0 3 * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: Option<String>,
    /// Number of backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: Option<u32>,
}
