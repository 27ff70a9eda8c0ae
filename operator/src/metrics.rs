//! Prometheus metrics of the operator (`/metrics`), prefixed `drakkar_operator_`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `ok`, `invalid_spec` or `error`.
    outcome: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Outcome, Counter>,
    duration: Histogram,
    leader: Gauge,
    certificates: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("drakkar_operator");
        let reconciles = Family::<Outcome, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let leader = Gauge::default();
        let certificates = Counter::default();
        registry.register("reconciles", "Reconciles of DrakkarClusters, by outcome", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconcile", duration.clone());
        registry.register(
            "leader",
            "Whether this replica holds the leader Lease (1) or waits (0)",
            leader.clone(),
        );
        registry.register("certificates_issued", "TLS certificates issued or renewed", certificates.clone());
        Metrics { registry, reconciles, duration, leader, certificates }
    }

    /// Records one reconcile (`outcome`: `ok`, `invalid_spec` or `error`).
    pub fn reconciled(&self, outcome: &str, took: Duration) {
        self.reconciles.get_or_create(&Outcome { outcome: outcome.into() }).inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Records `n` certificates issued.
    pub fn certificates_issued(&self, n: u64) {
        self.certificates.inc_by(n);
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
