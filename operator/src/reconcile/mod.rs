//! The controller: [`reconcile`] runs the pipeline for one DrakkarCluster, [`error_policy`] decides when to
//! retry, [`controller`] wires both to the watches.
//!
//! Errors are classified by cause ([`Error::is_permanent`]): a spec the operator refuses waits for the
//! next change of the object (looking again only every few minutes, for certificate renewal); anything
//! else (the API server, a conflict, a network error) is retried with a per-object exponential backoff
//! that resets after a successful reconcile.

mod pipeline;

pub use pipeline::kept_replicas;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::admin::{Membership, Unobserved};
use crate::build::{BuildError, Capabilities};
use crate::crd::DrakkarCluster;
use crate::metrics::Metrics;
use crate::names::{MANAGED_BY, Names};
use crate::tls::TlsError;

/// The finalizer the operator puts on every DrakkarCluster (removed once cleanup ran).
pub const FINALIZER: &str = "drakkar.io/cleanup";
/// Requeue of a settled cluster: refreshes the status and renews certificates well before expiry.
pub const SETTLED_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue while the cluster moves (creating, rolling out, waiting for certificates).
pub const BUSY_REQUEUE: Duration = Duration::from_secs(15);
/// How long a cluster blocked by something outside its spec (an API it needs is not served) waits
/// before it is looked at again: the API may be installed meanwhile.
pub const BLOCKED_REQUEUE: Duration = Duration::from_secs(60);
/// Requeue while membership changes are under way (a non-voter catching up, the next change).
pub const MEMBERSHIP_REQUEUE: Duration = Duration::from_secs(5);
/// Longest backoff after transient errors.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The source of "now" (a fixed time in tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec was refused (invalid, or an immutable field changed); waits for the next change.
    #[error("spec refused: {0}")]
    InvalidSpec(String),
    /// A call to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The desired objects could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A certificate could not be issued.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The object has no namespace (the CRD is namespaced; only a hand-made object lacks one).
    #[error("the DrakkarCluster has no namespace")]
    NoNamespace,
    /// Adding or removing the finalizer failed, or the step it guards did.
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A permanent error waits for the object to change; others are retried with backoff.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::InvalidSpec(_) | Error::NoNamespace => true,
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.is_permanent()
                }
                finalizer::Error::UnnamedObject => true,
                _ => false,
            },
            _ => false,
        }
    }

    /// Metric label of the error.
    pub fn outcome(&self) -> &'static str {
        if self.is_permanent() { "invalid_spec" } else { "error" }
    }
}

/// Everything a reconcile needs besides the object.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events (deduplicated into series).
    pub recorder: Recorder,
    /// DNS domain of the Kubernetes cluster.
    pub cluster_domain: String,
    /// What the API server offers.
    pub capabilities: Capabilities,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The time source.
    pub clock: Clock,
    /// The Admin API seam.
    pub membership: Arc<dyn Membership>,
    /// Consecutive failures per object (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("cluster_domain", &self.cluster_domain)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context with the real clock and no Admin API observation. `instance` names this operator
    /// replica in Events (its pod name).
    pub fn new(
        client: Client,
        instance: Option<String>,
        cluster_domain: &str,
        capabilities: Capabilities,
    ) -> Self {
        let reporter = Reporter { controller: MANAGED_BY.into(), instance };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            cluster_domain: cluster_domain.into(),
            capabilities,
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(Timestamp::now),
            membership: Arc::new(Unobserved),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the Admin API seam.
    pub fn with_membership(mut self, membership: Arc<dyn Membership>) -> Self {
        self.membership = membership;
        self
    }

    /// Replaces the metrics (to share them with the HTTP server).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The names of `dk`'s objects.
    pub fn names(&self, dk: &DrakkarCluster) -> Result<Names, Error> {
        let ns = dk.namespace().ok_or(Error::NoNamespace)?;
        Ok(Names::new(&dk.name_any(), &ns, &self.cluster_domain))
    }

    fn key(dk: &DrakkarCluster) -> String {
        format!("{}/{}", dk.namespace().unwrap_or_default(), dk.name_any())
    }

    /// Counts a failure of `dk` and returns the delay before the next attempt.
    fn next_backoff(&self, dk: &DrakkarCluster) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(Self::key(dk)).or_insert(0);
        *n = n.saturating_add(1);
        backoff(*n)
    }

    fn succeeded(&self, dk: &DrakkarCluster) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&Self::key(dk));
    }
}

/// Delay after the `failures`-th consecutive failure: 1 s, 2 s, 4 s ... capped at [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64.checked_shl(failures.saturating_sub(1)).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// Reconciles one DrakkarCluster: the finalizer first, then the pipeline (or the cleanup when deleted).
pub async fn reconcile(dk: Arc<DrakkarCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = dk.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<DrakkarCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, dk.clone(), |event| async {
        match event {
            Finalizer::Apply(dk) => pipeline::apply_cluster(&dk, &ctx).await,
            Finalizer::Cleanup(dk) => pipeline::cleanup(&dk, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let outcome = match &result {
        Ok(_) => {
            ctx.succeeded(&dk);
            "ok"
        }
        Err(e) => e.outcome(),
    };
    ctx.metrics.reconciled(outcome, started.elapsed());
    result
}

/// Refused specs wait for a change (revisited only every [`SETTLED_REQUEUE`], to keep the running
/// cluster's certificates renewed and its status fresh); transient errors back off per object.
pub fn error_policy(dk: Arc<DrakkarCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_permanent() {
        tracing::info!(cluster = %Context::key(&dk), %error, "waiting for the spec to change");
        Action::requeue(SETTLED_REQUEUE)
    } else {
        let delay = ctx.next_backoff(&dk);
        tracing::warn!(cluster = %Context::key(&dk), %error, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    }
}

/// Runs the controller until `shutdown` resolves: DrakkarClusters (in `namespace`, or all) and the
/// StatefulSets the operator owns.
pub async fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (clusters, statefulsets): (Api<DrakkarCluster>, Api<StatefulSet>) = match namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let owned = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(statefulsets, owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(cluster = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
}
