//! `drakkar cert`: a development CA and certificates for each role (rcgen).
//!
//! Files: `ca.pem` + `ca-key.pem`; `<name>.pem` + `<name>-key.pem` per certificate. Each certificate
//! carries its role in its subject's Organization (`O=drakkar:peer|admin|client`, see
//! [`drakkar_server::authz`]). Node certificates carry the server and client extended key usages, the
//! node's DNS names and IPs and the peer role (they serve, and authenticate the node to its peers); admin
//! and client certificates carry the client usage only and no names, so they can call the API but never
//! speak Raft. The CA is re-created for signing from its key and its certificate's subject (a common
//! name alone: `drakkar cert ca`'s, or an operator cluster CA's from its `<cluster>-tls-ca` Secret). Keys
//! are written with mode 0600.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use drakkar_server::authz::Role;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

const CA_NAME: &str = "Drakkar development CA";

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CertKind {
    /// A node (the peer role): server and client usages, the given DNS names and IPs.
    Node,
    /// An administrator or the operator (the admin role): membership, groups, snapshots, and data.
    Admin,
    /// An application (the client role): data only.
    Client,
}

impl CertKind {
    /// The role the certificate carries.
    pub fn role(self) -> Role {
        match self {
            CertKind::Node => Role::Peer,
            CertKind::Admin => Role::Admin,
            CertKind::Client => Role::Client,
        }
    }
}

fn ca_params(common_name: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

fn write_key(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(pem.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The subject of the CA certificate `ca_dir/ca.pem`, which must be a common name alone (as `drakkar
/// cert ca` and the operator make them): the CA is rebuilt for signing from its key and that name, so
/// that what it issues names it as its issuer exactly.
fn ca_common_name(ca_dir: &Path) -> Result<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = ca_dir.join("ca.pem");
    let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let der = CertificateDer::from_pem_slice(&pem)
        .with_context(|| format!("{}: no certificate", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("{}: not a certificate: {e}", path.display()))?;
    let subject = cert.subject();
    let names: Vec<&str> = subject.iter_common_name().filter_map(|a| a.as_str().ok()).collect();
    match (names.as_slice(), subject.iter_attributes().count()) {
        ([name], 1) => Ok((*name).to_string()),
        _ => anyhow::bail!(
            "{}: the CA's subject ({subject}) is not a common name alone; issue with the tool that made it",
            path.display()
        ),
    }
}

/// Creates `dir/ca.pem` and `dir/ca-key.pem`.
pub fn create_ca(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = KeyPair::generate()?;
    let cert = ca_params(CA_NAME)?.self_signed(&key)?;
    std::fs::write(dir.join("ca.pem"), cert.pem()).context("writing ca.pem")?;
    write_key(&dir.join("ca-key.pem"), &key.serialize_pem())
}

/// Issues `out/<name>.pem` and `out/<name>-key.pem`, signed by the CA in `ca_dir`. Returns the two paths.
pub fn issue(
    ca_dir: &Path,
    name: &str,
    sans: &[String],
    kind: CertKind,
    out: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let ca_key_pem = std::fs::read_to_string(ca_dir.join("ca-key.pem"))
        .with_context(|| format!("reading {}", ca_dir.join("ca-key.pem").display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parsing the CA key")?;
    let issuer = Issuer::new(ca_params(&ca_common_name(ca_dir)?)?, ca_key);
    let names = match kind {
        CertKind::Node => sans.to_vec(),
        CertKind::Admin | CertKind::Client => Vec::new(),
    };
    let mut p = CertificateParams::new(names).context("a name is not a valid DNS name or IP")?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name.push(DnType::OrganizationName, kind.role().organization());
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = match kind {
        CertKind::Node => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        CertKind::Admin | CertKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (c, k) = (out.join(format!("{name}.pem")), out.join(format!("{name}-key.pem")));
    std::fs::write(&c, cert.pem()).with_context(|| format!("writing {}", c.display()))?;
    write_key(&k, &key.serialize_pem())?;
    Ok((c, k))
}

/// The names every development node certificate carries (loopback).
pub fn loopback_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// A development PKI in `dir`: a CA, `node-1` ... `node-<nodes>` for loopback, `admin` and `client`.
pub fn dev_pki(dir: &Path, nodes: usize) -> Result<()> {
    create_ca(dir)?;
    dev_leaves(dir, nodes)
}

/// The certificates of [`dev_pki`], signed by the CA already in `dir`.
pub fn dev_leaves(dir: &Path, nodes: usize) -> Result<()> {
    for i in 1..=nodes {
        issue(dir, &format!("node-{i}"), &loopback_names(), CertKind::Node, dir)?;
    }
    issue(dir, "admin", &[], CertKind::Admin, dir)?;
    issue(dir, "client", &[], CertKind::Client, dir)?;
    Ok(())
}
