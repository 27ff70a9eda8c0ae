//! `certManager` mode: the cert-manager Certificates whose Secrets the nodes and clients mount.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::{Input, meta, server_names};
use crate::names::TLS_ROLE_LABEL;
use crate::tls::{LEAF_DAYS, RENEW_DAYS, Role};

/// `cert-manager.io/v1` `Certificate`.
pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// Three Certificates: `server` (every node: server and client usages, all the nodes' names, the peer
/// role), `operator` (the admin role) and `client` (the client role), the last two with the client usage
/// only; each role in the subject's Organization. Their Secrets have the names and labels of the operator-issued ones,
/// so the StatefulSet and applications do not depend on the mode.
pub fn certificates(input: &Input<'_>, owner: &OwnerReference) -> Vec<DynamicObject> {
    let names = input.names;
    let spec = &input.cluster.spec;
    let Some(issuer) = spec.tls.issuer_ref.as_ref() else {
        // Validation refuses certManager mode without an issuer before anything is built.
        return Vec::new();
    };
    let (dns, ips): (Vec<String>, Vec<String>) =
        server_names(names, spec.replicas).into_iter().partition(|n| n.parse::<std::net::IpAddr>().is_err());
    let roles = [
        (Role::Server, format!("{}.{}", names.cluster, names.namespace)),
        (Role::Operator, "drakkar-operator".to_string()),
        (Role::Client, format!("{}-client", names.cluster)),
    ];
    roles
        .into_iter()
        .map(|(r, common_name)| {
            let (role, server) = (r.as_str(), r == Role::Server);
            let mut labels = names.labels();
            labels.insert(TLS_ROLE_LABEL.into(), role.into());
            let mut spec = json!({
                "secretName": names.tls_secret(role),
                "secretTemplate": { "labels": labels },
                "commonName": common_name,
                "duration": format!("{}h", LEAF_DAYS * 24),
                "renewBefore": format!("{}h", RENEW_DAYS * 24),
                "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
                "issuerRef": { "name": issuer.name, "kind": issuer.kind.as_str(), "group": issuer.group },
            });
            // The role the nodes grant the holder (docs/api.md, "Roles").
            spec["subject"] = json!({ "organizations": [r.organization()] });
            if server {
                spec["dnsNames"] = json!(dns);
                spec["ipAddresses"] = json!(ips);
                spec["usages"] =
                    json!(["digital signature", "key encipherment", "server auth", "client auth"]);
            } else {
                spec["usages"] = json!(["digital signature", "key encipherment", "client auth"]);
            }
            let mut obj = DynamicObject::new(&names.tls_secret(role), &certificate_resource())
                .within(&names.namespace)
                .data(json!({ "spec": spec }));
            obj.metadata = meta(input, names.tls_secret(role), owner);
            obj
        })
        .collect()
}
