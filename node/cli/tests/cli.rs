//! The `drakkar` binary as a user runs it: certificates from `drakkar cert`, and clear refusals of bad
//! command lines. (Clusters of `drakkar serve` processes are tested by the `drakkar-e2e` package.)

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

fn drakkar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drakkar")).args(args).output().expect("running drakkar")
}

fn ok(args: &[&str]) {
    let out = drakkar(args);
    assert!(out.status.success(), "drakkar {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path).expect("a PEM file").collect::<Result<_, _>>().expect("certificates")
}

/// Verifies the certificate in `cert` as a server certificate for `name`, against the CA in `ca`.
fn verify(ca: &Path, cert: &Path, name: &str) -> Result<(), rustls::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).expect("the CA certificate");
    }
    let verifier = WebPkiServerVerifier::builder(Arc::new(roots)).build().expect("a verifier");
    let leaf = certs(cert).remove(0);
    let name = ServerName::try_from(name.to_string()).expect("a server name");
    verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now()).map(|_| ())
}

#[test]
fn issued_node_certificates_verify_for_their_names_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = dir.path().join("out");
    ok(&["cert", "ca", "--out", ca.to_str().unwrap()]);
    ok(&[
        "cert",
        "issue",
        "--ca-dir",
        ca.to_str().unwrap(),
        "--name",
        "node-0",
        "--san",
        "node-0.demo.svc,10.1.2.3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let cert = out.join("node-0.pem");
    verify(&ca.join("ca.pem"), &cert, "node-0.demo.svc").expect("valid for its DNS name");
    verify(&ca.join("ca.pem"), &cert, "10.1.2.3").expect("valid for its IP");
    assert!(verify(&ca.join("ca.pem"), &cert, "node-1.demo.svc").is_err(), "valid for another name");

    // Another CA does not vouch for it.
    let other = dir.path().join("other");
    ok(&["cert", "ca", "--out", other.to_str().unwrap()]);
    assert!(verify(&other.join("ca.pem"), &cert, "node-0.demo.svc").is_err(), "valid under another CA");

    #[cfg(unix)]
    for key in [ca.join("ca-key.pem"), out.join("node-0-key.pem")] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is readable by others", key.display());
    }
}

#[test]
fn issuing_without_a_ca_fails_clearly_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-ca");
    let out = dir.path().join("out");
    let r = drakkar(&[
        "cert",
        "issue",
        "--ca-dir",
        missing.to_str().unwrap(),
        "--name",
        "n",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("ca-key.pem"), "the error does not name the missing file: {err}");
    assert!(!out.exists(), "an output directory was created for a failed issue");
}

#[test]
fn half_configured_tls_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let r = drakkar(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--advertise",
        "127.0.0.1:1",
        "--tls-ca",
        "ca.pem",
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("--tls-cert"), "the error does not say what is missing: {err}");
    assert!(!data.exists(), "a data directory was created for a refused command line");
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let r = drakkar(&["frobnicate"]);
    assert_eq!(r.status.code(), Some(2), "clap's usage-error exit code");
    assert!(String::from_utf8_lossy(&r.stderr).contains("frobnicate"));
}

#[test]
fn a_client_certificate_issued_with_an_operator_ca_verifies_and_carries_its_role() {
    use rustls::server::WebPkiClientVerifier;
    // A CA as the operator makes one: another common name, its key and certificate in `ca.crt`/`ca.key`.
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, "drakkar CA apps/demo");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca = p.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
    let ca_dir = dir.path().to_str().unwrap();
    ok(&["cert", "issue", "--ca-dir", ca_dir, "--name", "app-2", "--kind", "client"]);

    let mut roots = RootCertStore::empty();
    roots.add(certs(&dir.path().join("ca.pem")).remove(0)).unwrap();
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap();
    let leaf = certs(&dir.path().join("app-2.pem")).remove(0);
    verifier.verify_client_cert(&leaf, &[], UnixTime::now()).expect("the operator's CA vouches for it");
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let orgs: Vec<&str> = parsed.subject().iter_organization().map(|o| o.as_str().unwrap()).collect();
    assert_eq!(orgs, ["drakkar:client"]);

    // A CA whose subject is more than a common name is refused clearly.
    let mut q = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    q.distinguished_name.push(rcgen::DnType::CommonName, "corp CA");
    q.distinguished_name.push(rcgen::DnType::OrganizationName, "Corp");
    q.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(dir.path().join("ca.pem"), q.self_signed(&key).unwrap().pem()).unwrap();
    let r = drakkar(&["cert", "issue", "--ca-dir", ca_dir, "--name", "app-3", "--kind", "client"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("not a common name alone"));
}
