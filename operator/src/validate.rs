//! Validation of a `DrakkarCluster` (pure): what the CRD schema cannot express.
//!
//! The schema already enforces types, ranges, enums and required fields. Here: name lengths (the pods'
//! names must be DNS labels), cross-field rules (cert-manager needs an issuer), reserved labels and
//! container names, and the immutable settings a running cluster was founded with ([`Founding`], read
//! back from its StatefulSet). A rejected spec is never applied: the running cluster stays as it was.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::crd::{DrakkarCluster, StateMachine, TlsMode};
use crate::names::{GRPC_PORT, HTTP_PORT, NODE_CONTAINER, RESERVED_LABELS};
use crate::quantity;

/// Volume names the node pod uses itself.
const RESERVED_VOLUMES: &[&str] = &["data", "tls", "tmp"];

/// Longest cluster name: the StatefulSet adds `-<hash>` (11 characters) to its name in a label value
/// limited to 63 characters.
pub const MAX_NAME_LEN: usize = 52;

/// The settings a cluster was created with. They cannot change later: the groups, their state machine,
/// the volumes and the trust domain are part of the nodes' on-disk identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Founding {
    /// Replicas at creation: the founding members of every group (`--peers`).
    pub replicas: i32,
    /// KV groups founded.
    pub groups: u32,
    /// Their state machine.
    pub state_machine: StateMachine,
    /// Volume size, as written in the spec.
    pub storage_size: String,
    /// Volume StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Who issues certificates.
    pub tls_mode: TlsMode,
}

impl Founding {
    /// The founding settings of a new cluster with this spec.
    pub fn from_spec(dk: &DrakkarCluster) -> Self {
        let s = &dk.spec;
        Founding {
            replicas: s.replicas,
            groups: s.groups,
            state_machine: s.state_machine,
            storage_size: s.storage.size.0.clone(),
            storage_class_name: s.storage.storage_class_name.clone(),
            tls_mode: s.tls.mode,
        }
    }
}

/// Why a spec was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The spec is invalid on its own.
    Invalid,
    /// The spec changes a setting the cluster was founded with.
    Immutable,
}

/// One reason a spec was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Invalid or an immutable change.
    pub kind: ProblemKind,
    /// The field, as a path (`spec.tls.issuerRef`).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl Problem {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Problem { kind: ProblemKind::Invalid, field: field.into(), message: message.into() }
    }

    fn immutable(field: &str, was: impl std::fmt::Display, now: impl std::fmt::Display) -> Self {
        Problem {
            kind: ProblemKind::Immutable,
            field: field.into(),
            message: format!("cannot change from {was} to {now} after the cluster was created"),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks `dk` on its own and, for an existing cluster, against the settings it was `founded` with.
/// Returns every problem found (empty: accepted).
pub fn validate(dk: &DrakkarCluster, founded: Option<&Founding>) -> Vec<Problem> {
    let mut p = Vec::new();
    let s = &dk.spec;
    let name = dk.metadata.name.as_deref().unwrap_or_default();
    if name.len() > MAX_NAME_LEN || !is_dns_label(name) || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        p.push(Problem::invalid(
            "metadata.name",
            format!(
                "must be a DNS label of at most {MAX_NAME_LEN} characters starting with a letter (it names the pods and Services)"
            ),
        ));
    }
    if !(1..=9).contains(&s.replicas) || s.replicas % 2 == 0 {
        p.push(Problem::invalid("spec.replicas", format!("must be odd, 1 to 9 (got {})", s.replicas)));
    }
    if s.image.trim().is_empty() || s.image.chars().any(char::is_whitespace) {
        p.push(Problem::invalid("spec.image", "must be an image reference without spaces"));
    }
    if !(1..=1024).contains(&s.groups) {
        p.push(Problem::invalid("spec.groups", format!("must be 1 to 1024 (got {})", s.groups)));
    }
    match quantity::parse_bytes(&s.storage.size.0) {
        Some(b) if b > 0 => {}
        _ => p.push(Problem::invalid(
            "spec.storage.size",
            format!("must be a positive quantity such as 10Gi (got {:?})", s.storage.size.0),
        )),
    }
    if let Some(class) = &s.storage.storage_class_name
        && !is_dns_subdomain(class)
    {
        p.push(Problem::invalid("spec.storage.storageClassName", "must be a DNS subdomain"));
    }
    if s.tls.mode == TlsMode::CertManager && s.tls.issuer_ref.is_none() {
        p.push(Problem::invalid("spec.tls.issuerRef", "is required when spec.tls.mode is certManager"));
    }
    if let Some(pt) = &s.pod_template {
        for key in pt.labels.keys().filter(|k| RESERVED_LABELS.contains(&k.as_str())) {
            p.push(Problem::invalid(
                "spec.podTemplate.labels",
                format!("{key} is set by the operator and cannot be overridden"),
            ));
        }
        let mut seen = BTreeSet::new();
        for c in &pt.containers {
            if c.name == NODE_CONTAINER {
                p.push(Problem::invalid(
                    "spec.podTemplate.containers",
                    format!("the name {NODE_CONTAINER:?} is the node container's"),
                ));
            } else if !is_dns_label(&c.name) {
                p.push(Problem::invalid(
                    "spec.podTemplate.containers",
                    format!("{:?} is not a valid container name (a DNS label)", c.name),
                ));
            }
            if !seen.insert(c.name.as_str()) {
                p.push(Problem::invalid(
                    "spec.podTemplate.containers",
                    format!("{:?} appears more than once", c.name),
                ));
            }
            for port in c.ports.iter().flatten() {
                if port.container_port == GRPC_PORT || port.container_port == HTTP_PORT {
                    p.push(Problem::invalid(
                        "spec.podTemplate.containers",
                        format!(
                            "container {:?} uses port {}, which the node listens on",
                            c.name, port.container_port
                        ),
                    ));
                }
            }
        }
        let mut volumes = BTreeSet::new();
        for v in &pt.volumes {
            if RESERVED_VOLUMES.contains(&v.name.as_str()) {
                p.push(Problem::invalid(
                    "spec.podTemplate.volumes",
                    format!("the name {:?} is the node's", v.name),
                ));
            } else if !volumes.insert(v.name.as_str()) {
                p.push(Problem::invalid(
                    "spec.podTemplate.volumes",
                    format!("{:?} appears more than once", v.name),
                ));
            }
        }
    }
    if let Some(schedule) = s.backup.as_ref().and_then(|b| b.schedule.as_deref())
        && schedule.split_whitespace().count() != 5
    {
        p.push(Problem::invalid("spec.backup.schedule", "must be a cron expression of five fields"));
    }
    if let Some(f) = founded {
        immutable_changes(dk, f, &mut p);
    }
    p
}

fn immutable_changes(dk: &DrakkarCluster, f: &Founding, p: &mut Vec<Problem>) {
    let s = &dk.spec;
    if s.groups != f.groups {
        p.push(Problem::immutable("spec.groups", f.groups, s.groups));
    }
    if s.state_machine != f.state_machine {
        p.push(Problem::immutable("spec.stateMachine", f.state_machine.as_str(), s.state_machine.as_str()));
    }
    if s.storage.size.0 != f.storage_size {
        p.push(Problem::immutable("spec.storage.size", &f.storage_size, &s.storage.size.0));
    }
    if s.storage.storage_class_name != f.storage_class_name {
        let show = |c: &Option<String>| c.clone().unwrap_or_else(|| "(default)".into());
        p.push(Problem::immutable(
            "spec.storage.storageClassName",
            show(&f.storage_class_name),
            show(&s.storage.storage_class_name),
        ));
    }
    if s.tls.mode != f.tls_mode {
        p.push(Problem::immutable("spec.tls.mode", tls_mode_str(f.tls_mode), tls_mode_str(s.tls.mode)));
    }
    if s.replicas < f.replicas {
        p.push(Problem {
            kind: ProblemKind::Immutable,
            field: "spec.replicas".into(),
            message: format!(
                "cannot shrink below the {} founding members: removing members from the groups is not \
                 implemented yet",
                f.replicas
            ),
        });
    }
}

fn tls_mode_str(m: TlsMode) -> &'static str {
    match m {
        TlsMode::Operator => "operator",
        TlsMode::CertManager => "certManager",
        TlsMode::Disabled => "disabled",
    }
}

/// RFC 1123 label: 1-63 lowercase alphanumerics or '-', starting and ending with an alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len())
        && s.chars().all(|c| ok(c) || c == '-')
        && s.starts_with(ok)
        && s.ends_with(ok)
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}
