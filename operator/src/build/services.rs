//! The Services, the ConfigMap and the PodDisruptionBudget.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Input, meta};
use crate::crd::TlsMode;
use crate::names::{GRPC_PORT, HTTP_PORT};

/// Where applications are expected to mount the client Secret (`<cluster>-tls-client`) when they use the
/// ConfigMap as their environment.
pub const CLIENT_TLS_DIR: &str = "/etc/drakkar/client";

// Ports carry an explicit protocol: server-side apply of a Service port without one fails on older API
// servers (the protocol is part of the list's merge key).
fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The headless Service behind the pods' stable DNS names. It publishes pods before they are ready:
/// nodes must reach each other to elect leaders, which is what makes them ready.
pub fn peer_service(input: &Input<'_>, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(input, input.names.peer_service(), owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(input.names.selector_labels()),
            ports: Some(vec![port("grpc", GRPC_PORT), port("http", HTTP_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The Service applications connect to: ready nodes only; any node forwards to the group's leader.
pub fn client_service(input: &Input<'_>, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(input, input.names.client_service(), owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(input.names.selector_labels()),
            ports: Some(vec![port("grpc", GRPC_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Connection settings for applications, as the environment variables the `drakkar` CLI and client read
/// (`envFrom: [{configMapRef: {name: <cluster>-config}}]`, with the client Secret mounted at
/// [`CLIENT_TLS_DIR`]).
pub fn config_map(input: &Input<'_>, owner: &OwnerReference) -> ConfigMap {
    let names = input.names;
    let spec = &input.cluster.spec;
    let fqdn = names.client_dns().pop().unwrap_or_else(|| names.client_service());
    let mut data = BTreeMap::from([
        ("DRAKKAR_ENDPOINTS".to_string(), format!("{fqdn}:{GRPC_PORT}")),
        ("DRAKKAR_KV_GROUPS".to_string(), input.founding.groups.to_string()),
    ]);
    match spec.tls.mode {
        TlsMode::Disabled => {
            data.insert("DRAKKAR_INSECURE".into(), "true".into());
        }
        TlsMode::Operator | TlsMode::CertManager => {
            data.insert("DRAKKAR_CA".into(), format!("{CLIENT_TLS_DIR}/ca.crt"));
            data.insert("DRAKKAR_CERT".into(), format!("{CLIENT_TLS_DIR}/tls.crt"));
            data.insert("DRAKKAR_KEY".into(), format!("{CLIENT_TLS_DIR}/tls.key"));
            data.insert("DRAKKAR_CLIENT_SECRET".into(), names.tls_secret("client"));
        }
    }
    ConfigMap { metadata: meta(input, names.config_map(), owner), data: Some(data), ..ConfigMap::default() }
}

/// The nodes' own ServiceAccount: bound to no role, its token never mounted (a node calls no Kubernetes
/// API), so the namespace's `default` ServiceAccount and whatever it was granted stay out of node pods.
pub fn node_service_account(input: &Input<'_>, owner: &OwnerReference) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(input, input.names.node_service_account(), owner),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// At most a minority of the founding members may be evicted at once, so every group keeps a majority
/// through node drains. One replica has no majority to keep: its budget allows the eviction (a
/// budget of zero would block node drains forever).
pub fn pdb(input: &Input<'_>, owner: &OwnerReference) -> PodDisruptionBudget {
    let members = input.founding.replicas;
    let max_unavailable = if members <= 1 { 1 } else { (members - 1) / 2 };
    PodDisruptionBudget {
        metadata: meta(input, input.names.pdb(), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(input.names.selector_labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
