//! The operator's PKI: what it issues verifies with rustls (the stack the nodes use), and what is current
//! is left alone.

use std::sync::Arc;

use drakkar_operator::build::server_names;
use drakkar_operator::names::Names;
use drakkar_operator::tls::{IssueReason, Issued, Role, needs_issue, plan};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "drakkar.io/v1alpha1".into(),
        kind: "DrakkarCluster".into(),
        name: "demo".into(),
        uid: "u1".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn now() -> Timestamp {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

fn names() -> Names {
    Names::new("demo", "apps", "cluster.local")
}

fn field(s: &Secret, k: &str) -> Vec<u8> {
    s.data.as_ref().unwrap()[k].0.clone()
}

fn secrets(issued: &[Issued]) -> Vec<Secret> {
    issued.iter().map(|i| i.secret.clone()).collect()
}

fn roles(issued: &[Issued]) -> Vec<(Role, IssueReason)> {
    issued.iter().map(|i| (i.role, i.reason)).collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &[u8]) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem).unwrap()).unwrap();
    Arc::new(roots)
}

fn at(t: Timestamp) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.as_second() as u64))
}

#[test]
fn issues_a_ca_and_three_certificates_that_verify() {
    let names = names();
    let sans = server_names(&names, 3);
    let issued = plan(&names, &sans, &[], &owner(), now()).unwrap();
    assert_eq!(
        roles(&issued),
        [Role::Ca, Role::Server, Role::Operator, Role::Client].map(|r| (r, IssueReason::Missing))
    );
    let ca = &issued[0].secret;
    assert_eq!(ca.metadata.name.as_deref(), Some("demo-tls-ca"));
    assert_eq!(ca.type_.as_deref(), Some("Opaque"));
    let ca_pem = field(ca, "ca.crt");

    let server = &issued[1].secret;
    assert_eq!(server.metadata.name.as_deref(), Some("demo-tls-server"));
    assert_eq!(server.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(server.metadata.labels.as_ref().unwrap()["drakkar.io/tls"], "server");
    assert_eq!(server.metadata.owner_references.as_ref().unwrap()[0], owner());
    assert_eq!(field(server, "ca.crt"), ca_pem);
    let server_cert = CertificateDer::from_pem_slice(&field(server, "tls.crt")).unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(&ca_pem), provider()).build().unwrap();
    for name in [
        "demo-0.demo-peer.apps.svc.cluster.local",
        "demo-2.demo-peer.apps.svc.cluster.local",
        "demo.apps.svc",
        "demo",
        "localhost",
        "127.0.0.1",
    ] {
        let sn = ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(&server_cert, &[], &sn, &[], at(now()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let absent = ServerName::try_from("demo-3.demo-peer.apps.svc.cluster.local").unwrap();
    assert!(verifier.verify_server_cert(&server_cert, &[], &absent, &[], at(now())).is_err());
    let expired = now() + SignedDuration::from_hours(24 * 91);
    let sn = ServerName::try_from("demo").unwrap();
    assert!(verifier.verify_server_cert(&server_cert, &[], &sn, &[], at(expired)).is_err());

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots(&ca_pem), provider()).build().unwrap();
    for i in [&issued[1], &issued[2], &issued[3]] {
        let cert = CertificateDer::from_pem_slice(&field(&i.secret, "tls.crt")).unwrap();
        client_verifier
            .verify_client_cert(&cert, &[], at(now()))
            .unwrap_or_else(|e| panic!("{:?}: {e}", i.role));
    }
    // Client certificates cannot serve (they carry no names and no server usage).
    let client = CertificateDer::from_pem_slice(&field(&issued[3].secret, "tls.crt")).unwrap();
    assert!(verifier.verify_server_cert(&client, &[], &sn, &[], at(now())).is_err());
}

#[test]
fn current_certificates_are_left_alone_and_renewed_before_expiry() {
    let names = names();
    let sans = server_names(&names, 3);
    let all = secrets(&plan(&names, &sans, &[], &owner(), now()).unwrap());
    assert!(plan(&names, &sans, &all, &owner(), now()).unwrap().is_empty());
    let day59 = now() + SignedDuration::from_hours(24 * 59);
    assert!(plan(&names, &sans, &all, &owner(), day59).unwrap().is_empty(), "31 days left");
    let day61 = now() + SignedDuration::from_hours(24 * 61);
    let renewed = plan(&names, &sans, &all, &owner(), day61).unwrap();
    assert_eq!(
        roles(&renewed),
        [Role::Server, Role::Operator, Role::Client].map(|r| (r, IssueReason::Expiring)),
        "the CA is kept"
    );
    // Renewed certificates are signed by the same CA.
    assert_eq!(field(&renewed[0].secret, "ca.crt"), field(&all[0], "ca.crt"));
}

#[test]
fn scale_up_reissues_only_the_server_certificate() {
    let names = names();
    let all = secrets(&plan(&names, &server_names(&names, 3), &[], &owner(), now()).unwrap());
    let more = server_names(&names, 5);
    let issued = plan(&names, &more, &all, &owner(), now()).unwrap();
    assert_eq!(roles(&issued), [(Role::Server, IssueReason::NamesChanged)]);
    let ca_pem = field(&all[0], "ca.crt");
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(&ca_pem), provider()).build().unwrap();
    let cert = CertificateDer::from_pem_slice(&field(&issued[0].secret, "tls.crt")).unwrap();
    let sn = ServerName::try_from("demo-4.demo-peer.apps.svc.cluster.local").unwrap();
    verifier.verify_server_cert(&cert, &[], &sn, &[], at(now())).unwrap();
}

#[test]
fn a_lost_ca_reissues_everything() {
    let names = names();
    let sans = server_names(&names, 3);
    let mut all = secrets(&plan(&names, &sans, &[], &owner(), now()).unwrap());
    all.remove(0);
    let issued = plan(&names, &sans, &all, &owner(), now()).unwrap();
    assert_eq!(
        roles(&issued),
        [
            (Role::Ca, IssueReason::Missing),
            (Role::Server, IssueReason::CaChanged),
            (Role::Operator, IssueReason::CaChanged),
            (Role::Client, IssueReason::CaChanged)
        ]
    );
}

#[test]
fn damaged_secrets_are_reissued() {
    let names = names();
    let sans = server_names(&names, 3);
    let all = secrets(&plan(&names, &sans, &[], &owner(), now()).unwrap());
    let mut server = all[1].clone();
    server.data.as_mut().unwrap().remove("tls.key");
    assert_eq!(needs_issue(Some(&server), "x", None, "drakkar:peer", now()), Some(IssueReason::Missing));
    let mut server = all[1].clone();
    server.metadata.annotations.as_mut().unwrap().insert("drakkar.io/not-after".into(), "garbage".into());
    assert_eq!(needs_issue(Some(&server), "x", None, "drakkar:peer", now()), Some(IssueReason::Expiring));
    assert_eq!(needs_issue(None, "x", None, "drakkar:peer", now()), Some(IssueReason::Missing));
}

/// The subject Organizations of the certificate in a leaf Secret.
fn organizations(s: &Secret) -> Vec<String> {
    let pem = CertificateDer::from_pem_slice(&field(s, "tls.crt")).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&pem).unwrap();
    cert.subject().iter_organization().map(|o| o.as_str().unwrap().to_string()).collect()
}

#[test]
fn each_certificate_carries_its_role_and_one_without_is_issued_again() {
    let names = names();
    let sans = server_names(&names, 3);
    let issued = plan(&names, &sans, &[], &owner(), now()).unwrap();
    let by_role = |r: Role| issued.iter().find(|i| i.role == r).unwrap().secret.clone();
    assert_eq!(organizations(&by_role(Role::Server)), ["drakkar:peer"]);
    assert_eq!(organizations(&by_role(Role::Operator)), ["drakkar:admin"]);
    assert_eq!(organizations(&by_role(Role::Client)), ["drakkar:client"]);
    // A Secret of a version that issued no roles: issued again, the others left alone.
    let mut existing = secrets(&issued);
    existing[3].metadata.annotations.as_mut().unwrap().remove("drakkar.io/role");
    let again = plan(&names, &sans, &existing, &owner(), now()).unwrap();
    assert_eq!(roles(&again), [(Role::Client, IssueReason::RoleChanged)]);
    assert_eq!(organizations(&again[0].secret), ["drakkar:client"]);
}
