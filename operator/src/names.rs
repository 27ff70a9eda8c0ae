//! Names, labels and DNS names of the objects one cluster owns. Every builder takes its names from here,
//! so a name is spelled once.

use std::collections::BTreeMap;

/// Port of the node's gRPC API (clients and peers): `drakkar serve --listen`.
pub const GRPC_PORT: i32 = 7000;
/// Port of the node's HTTP endpoints (`/readyz`, `/livez`, `/metrics`): `--metrics-listen`.
pub const HTTP_PORT: i32 = 9090;
/// The node container's name.
pub const NODE_CONTAINER: &str = "drakkar";
/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "drakkar-operator";
/// `app.kubernetes.io/managed-by` value of owned objects.
pub const MANAGED_BY: &str = "drakkar-operator";
/// Annotation on the StatefulSet recording the settings a cluster was founded with (JSON).
pub const FOUNDING_ANNOTATION: &str = "drakkar.io/founding";
/// Label marking TLS Secrets with their role (`ca`, `server`, `operator`, `client`).
pub const TLS_ROLE_LABEL: &str = "drakkar.io/tls";

/// Label keys the operator sets and users may not override.
pub const RESERVED_LABELS: &[&str] = &[
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
];

/// The names of one cluster's objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The DrakkarCluster's name.
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
    /// The Kubernetes cluster's DNS domain (`cluster.local` by default).
    pub domain: String,
}

impl Names {
    /// Names for `cluster` in `namespace`, with DNS names under `domain`.
    pub fn new(cluster: &str, namespace: &str, domain: &str) -> Self {
        Names { cluster: cluster.into(), namespace: namespace.into(), domain: domain.into() }
    }

    /// The StatefulSet (and the PodDisruptionBudget).
    pub fn statefulset(&self) -> String {
        self.cluster.clone()
    }

    /// The headless Service giving each pod its stable DNS name.
    pub fn peer_service(&self) -> String {
        format!("{}-peer", self.cluster)
    }

    /// The Service applications connect to.
    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }

    /// The ConfigMap with the connection settings.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.cluster)
    }

    /// The nodes' ServiceAccount (no permissions, no token mounted).
    pub fn node_service_account(&self) -> String {
        format!("{}-node", self.cluster)
    }

    /// The PodDisruptionBudget.
    pub fn pdb(&self) -> String {
        self.cluster.clone()
    }

    /// The Secret of a TLS role (`ca`, `server`, `operator`, `client`).
    pub fn tls_secret(&self, role: &str) -> String {
        format!("{}-tls-{role}", self.cluster)
    }

    /// Pod `ordinal` of the StatefulSet.
    pub fn pod(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.cluster)
    }

    /// The stable DNS name of pod `ordinal` (through the headless peer Service).
    pub fn pod_dns(&self, ordinal: i32) -> String {
        format!("{}.{}.{}.svc.{}", self.pod(ordinal), self.peer_service(), self.namespace, self.domain)
    }

    /// `host:port` a node advertises and peers dial, for a pod whose name is `pod` (may be `$(POD_NAME)`).
    pub fn advertise(&self, pod: &str) -> String {
        format!("{pod}.{}.{}.svc.{}:{GRPC_PORT}", self.peer_service(), self.namespace, self.domain)
    }

    /// DNS names of the client Service, shortest first.
    pub fn client_dns(&self) -> Vec<String> {
        let s = self.client_service();
        vec![
            s.clone(),
            format!("{s}.{}", self.namespace),
            format!("{s}.{}.svc", self.namespace),
            format!("{s}.{}.svc.{}", self.namespace, self.domain),
        ]
    }

    /// The labels on every owned object.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), "drakkar".into()),
            ("app.kubernetes.io/instance".into(), self.cluster.clone()),
            ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        ])
    }

    /// The labels selecting the node pods (a subset of their labels; immutable in a StatefulSet).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), "drakkar".into()),
            ("app.kubernetes.io/instance".into(), self.cluster.clone()),
            ("app.kubernetes.io/component".into(), "node".into()),
        ])
    }

    /// [`Names::selector_labels`] as a label selector string.
    pub fn selector(&self) -> String {
        join_selector(&self.selector_labels())
    }

    /// The selector of every object labelled by [`Names::labels`].
    pub fn owned_selector(&self) -> String {
        format!("app.kubernetes.io/instance={},app.kubernetes.io/managed-by={MANAGED_BY}", self.cluster)
    }
}

/// `k1=v1,k2=v2` in key order.
pub fn join_selector(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Replica id of a founding member: its position in `--peers` plus one, i.e. the pod ordinal plus one.
pub fn founding_replica_id(ordinal: i32) -> u64 {
    u64::try_from(ordinal).map_or(0, |o| o + 1)
}
