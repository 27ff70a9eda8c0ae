//! `operator` TLS mode: a CA per cluster and the certificates it signs, kept in Secrets.
//!
//! Secrets (labelled `drakkar.io/tls=<role>`):
//! - `<cluster>-tls-ca`: `ca.crt`, `ca.key` (ten years; never leaves the operator and this Secret);
//! - `<cluster>-tls-server`: every node (server and client usages; SANs: each pod's DNS name, the client
//!   Service, localhost; the peer role);
//! - `<cluster>-tls-operator`: the operator's client certificate for the Admin API (the admin role);
//! - `<cluster>-tls-client`: a client certificate applications mount (the client role: data only).
//!
//! Roles are the subject's Organization (`O=drakkar:peer|admin|client`, [`drakkar_client::roles`]); a
//! certificate issued without one is issued again.
//!
//! Leaf Secrets hold `ca.crt`, `tls.crt`, `tls.key`, and annotations recording when they expire, which CA
//! signed them and which names they cover; [`needs_issue`] (pure) compares those with what is wanted, so a
//! certificate is re-issued when missing, within [`RENEW_DAYS`] of expiry, signed by another CA, or
//! missing a name after a scale-up. The CA is rebuilt for signing from its key and recorded subject (no
//! certificate parsing), as `drakkar cert` does. Nodes reload their certificate files when they change.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::hash::fingerprint;
use crate::names::{Names, TLS_ROLE_LABEL};

/// Lifetime of the CA.
pub const CA_DAYS: i64 = 3650;
/// Lifetime of node and client certificates.
pub const LEAF_DAYS: i64 = 90;
/// A certificate is re-issued this long before it expires.
pub const RENEW_DAYS: i64 = 30;
/// Annotation: RFC 3339 expiry of the certificate in the Secret.
pub const NOT_AFTER_ANNOTATION: &str = "drakkar.io/not-after";
/// Annotation: fingerprint of the CA certificate that signed it.
pub const CA_ANNOTATION: &str = "drakkar.io/ca-fingerprint";
/// Annotation: fingerprint of the names it covers (server certificate).
pub const NAMES_ANNOTATION: &str = "drakkar.io/names-fingerprint";
/// Annotation: the role (subject Organization) the certificate carries.
pub const ROLE_ANNOTATION: &str = "drakkar.io/role";
/// Annotation on the CA Secret: the CA's subject common name.
pub const CA_SUBJECT_ANNOTATION: &str = "drakkar.io/ca-subject";

/// The certificates of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The cluster CA.
    Ca,
    /// The nodes.
    Server,
    /// The operator, as an Admin API client.
    Operator,
    /// Applications.
    Client,
}

impl Role {
    /// Every role, CA first.
    pub const ALL: [Role; 4] = [Role::Ca, Role::Server, Role::Operator, Role::Client];

    /// The role a node grants the certificate's holder (its subject Organization, see
    /// [`drakkar_client::roles`]); None for the CA.
    pub fn organization(self) -> Option<&'static str> {
        match self {
            Role::Ca => None,
            Role::Server => Some(drakkar_client::roles::PEER),
            Role::Operator => Some(drakkar_client::roles::ADMIN),
            Role::Client => Some(drakkar_client::roles::CLIENT),
        }
    }

    /// The `drakkar.io/tls` label value and Secret name suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ca => "ca",
            Role::Server => "server",
            Role::Operator => "operator",
            Role::Client => "client",
        }
    }
}

/// Why a certificate is (re-)issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// No Secret, or one without a usable certificate.
    Missing,
    /// It expires within [`RENEW_DAYS`].
    Expiring,
    /// Another CA signed it.
    CaChanged,
    /// It lacks names the nodes now need (a scale-up).
    NamesChanged,
    /// It does not carry the role it is for (issued before certificates carried roles).
    RoleChanged,
}

impl IssueReason {
    /// For events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueReason::Missing => "missing",
            IssueReason::Expiring => "expiring",
            IssueReason::CaChanged => "signed by another CA",
            IssueReason::NamesChanged => "names changed",
            IssueReason::RoleChanged => "role missing",
        }
    }
}

/// A Secret to apply, and why.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Which certificate.
    pub role: Role,
    /// Why it was issued.
    pub reason: IssueReason,
    /// The Secret (complete: apply it as is).
    pub secret: Secret,
}

/// Errors of the PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rcgen refused to build or sign a certificate.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A time computation overflowed.
    #[error("certificate validity out of range")]
    Time,
}

/// Whether the leaf Secret `existing` must be (re-)issued, given the current CA's fingerprint, the
/// fingerprint of the names it must cover (server certificates), the role (subject Organization) it must
/// carry, and the time.
pub fn needs_issue(
    existing: Option<&Secret>,
    ca_fingerprint: &str,
    names_fingerprint: Option<&str>,
    role: &str,
    now: Timestamp,
) -> Option<IssueReason> {
    let Some(secret) = existing else { return Some(IssueReason::Missing) };
    let has = |k: &str| secret.data.as_ref().and_then(|d| d.get(k)).is_some_and(|v| !v.0.is_empty());
    if !has("tls.crt") || !has("tls.key") || !has("ca.crt") {
        return Some(IssueReason::Missing);
    }
    let annotation =
        |k: &str| secret.metadata.annotations.as_ref().and_then(|a| a.get(k)).map(String::as_str);
    let not_after = annotation(NOT_AFTER_ANNOTATION).and_then(|t| t.parse::<Timestamp>().ok());
    match not_after {
        Some(t) if now + SignedDuration::from_hours(24 * RENEW_DAYS) < t => {}
        _ => return Some(IssueReason::Expiring),
    }
    if annotation(CA_ANNOTATION) != Some(ca_fingerprint) {
        return Some(IssueReason::CaChanged);
    }
    if names_fingerprint.is_some() && annotation(NAMES_ANNOTATION) != names_fingerprint {
        return Some(IssueReason::NamesChanged);
    }
    if annotation(ROLE_ANNOTATION) != Some(role) {
        return Some(IssueReason::RoleChanged);
    }
    None
}

/// The CA as loaded from (or just written to) its Secret.
struct Ca {
    cert_pem: String,
    key: KeyPair,
    subject: String,
}

fn data(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok().filter(|s| !s.is_empty())
}

fn load_ca(secret: &Secret) -> Option<Ca> {
    let cert_pem = data(secret, "ca.crt")?;
    let key = KeyPair::from_pem(&data(secret, "ca.key")?).ok()?;
    let subject = secret.metadata.annotations.as_ref()?.get(CA_SUBJECT_ANNOTATION)?.clone();
    Some(Ca { cert_pem, key, subject })
}

fn ca_params(subject: &str) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, subject);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

fn validity(p: &mut CertificateParams, now: Timestamp, days: i64) -> Result<Timestamp, TlsError> {
    let not_after = now.checked_add(SignedDuration::from_hours(24 * days)).map_err(|_| TlsError::Time)?;
    let at =
        |t: Timestamp| time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|_| TlsError::Time);
    // An hour of slack for clocks behind the operator's.
    p.not_before = at(now - SignedDuration::from_hours(1))?;
    p.not_after = at(not_after)?;
    Ok(not_after)
}

fn secret(names: &Names, role: Role, owner: &OwnerReference, data: BTreeMap<String, String>) -> Secret {
    let mut labels = names.labels();
    labels.insert(TLS_ROLE_LABEL.into(), role.as_str().into());
    Secret {
        metadata: ObjectMeta {
            name: Some(names.tls_secret(role.as_str())),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some(if role == Role::Ca { "Opaque" } else { "kubernetes.io/tls" }.into()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Secret::default()
    }
}

/// The Secrets to (re-)issue so that `existing` (the cluster's TLS Secrets) holds a valid CA and valid
/// server, operator and client certificates for `server_names`. Empty when everything is current.
pub fn plan(
    names: &Names,
    server_names: &[String],
    existing: &[Secret],
    owner: &OwnerReference,
    now: Timestamp,
) -> Result<Vec<Issued>, TlsError> {
    let find = |role: Role| {
        let name = names.tls_secret(role.as_str());
        existing.iter().find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
    };
    let mut out = Vec::new();
    let ca = match find(Role::Ca).and_then(load_ca) {
        Some(ca) => ca,
        None => {
            let subject = format!("drakkar CA {}/{}", names.namespace, names.cluster);
            let mut params = ca_params(&subject)?;
            let not_after = validity(&mut params, now, CA_DAYS)?;
            let key = KeyPair::generate()?;
            let cert_pem = params.self_signed(&key)?.pem();
            let mut s = secret(
                names,
                Role::Ca,
                owner,
                BTreeMap::from([("ca.crt".into(), cert_pem.clone()), ("ca.key".into(), key.serialize_pem())]),
            );
            s.metadata.annotations = Some(BTreeMap::from([
                (CA_SUBJECT_ANNOTATION.to_string(), subject.clone()),
                (NOT_AFTER_ANNOTATION.to_string(), not_after.to_string()),
            ]));
            out.push(Issued { role: Role::Ca, reason: IssueReason::Missing, secret: s });
            Ca { cert_pem, key, subject }
        }
    };
    let ca_fp = fingerprint(ca.cert_pem.as_bytes());
    let names_fp = fingerprint(server_names.join(",").as_bytes());
    let issuer = Issuer::new(ca_params(&ca.subject)?, &ca.key);
    for role in [Role::Server, Role::Operator, Role::Client] {
        let wanted_names = (role == Role::Server).then_some(names_fp.as_str());
        let org = role.organization().unwrap_or_default();
        let Some(reason) = needs_issue(find(role), &ca_fp, wanted_names, org, now) else { continue };
        let (sans, common_name) = match role {
            Role::Server => (server_names.to_vec(), format!("{}.{}", names.cluster, names.namespace)),
            Role::Operator => (Vec::new(), "drakkar-operator".to_string()),
            _ => (Vec::new(), format!("{}-client", names.cluster)),
        };
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.distinguished_name.push(DnType::OrganizationName, org);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = if role == Role::Server {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        p.use_authority_key_identifier_extension = true;
        let not_after = validity(&mut p, now, LEAF_DAYS)?;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        let mut s = secret(
            names,
            role,
            owner,
            BTreeMap::from([
                ("ca.crt".into(), ca.cert_pem.clone()),
                ("tls.crt".into(), cert.pem()),
                ("tls.key".into(), key.serialize_pem()),
            ]),
        );
        let mut annotations = BTreeMap::from([
            (NOT_AFTER_ANNOTATION.to_string(), not_after.to_string()),
            (CA_ANNOTATION.to_string(), ca_fp.clone()),
            (ROLE_ANNOTATION.to_string(), org.to_string()),
        ]);
        if role == Role::Server {
            annotations.insert(NAMES_ANNOTATION.into(), names_fp.clone());
        }
        s.metadata.annotations = Some(annotations);
        out.push(Issued { role, reason, secret: s });
    }
    Ok(out)
}
