//! The Drakkar Kubernetes operator.
//!
//! A `DrakkarCluster` ([`crd::DrakkarCluster`]) declares a cluster; the reconciler turns it into a
//! StatefulSet of `drakkar serve` nodes with their Services, PodDisruptionBudget, ConfigMap and TLS
//! material, and reports what it observes in the status. Each reconcile is a pipeline:
//!
//! ```text
//! read (the cluster, its StatefulSet, its TLS Secrets)
//!   -> validate   (pure: crate::validate)
//!   -> build      (pure: crate::build, crate::tls for the certificates)
//!   -> apply      (server-side apply, owner references)
//!   -> status     (server-side apply of the status subresource, conditions)
//! ```
//!
//! Only the two ends talk to the API server, so validate and build are unit-tested from YAML fixtures and
//! the whole pipeline is tested against a mock API server that asserts the exact requests.
//!
//! Binaries: `crdgen` writes `crds/drakkarcluster.yaml`; `drakkar-operator` runs the controller with
//! Lease leader election, health endpoints, Prometheus metrics and JSON logs. See `docs/operator.md`.

pub mod admin;
pub mod build;
pub mod crd;
pub mod crdgen;
pub mod discovery;
pub mod hash;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod quantity;
pub mod reconcile;
pub mod status;
pub mod tls;
pub mod validate;

pub use crd::{DrakkarCluster, DrakkarClusterSpec, DrakkarClusterStatus};

/// Names every request of a client built from `config` after the operator: User-Agent
/// `drakkar-operator/<version>`. The API server records a write that carries no field manager (kube's
/// finalizer patches) under the agent's name, so everything the operator writes is managed by
/// [`names::FIELD_MANAGER`] instead of `unknown`.
pub fn identify(config: &mut kube::Config) {
    let agent = format!("{}/{}", names::FIELD_MANAGER, env!("CARGO_PKG_VERSION"));
    if let Ok(v) = ::http::HeaderValue::from_str(&agent) {
        config.headers.push((::http::header::USER_AGENT, v));
    }
}
