//! Prometheus metrics of a NodeHost (prometheus-client). Rendered by [`crate::NodeHost::metrics_text`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The NodeHost's metrics.
pub struct Metrics {
    /// Proposals handed to Raft.
    pub proposals: Counter,
    /// Entries committed (handed to apply workers).
    pub commits: Counter,
    /// Raft messages sent.
    pub messages_sent: Counter,
    /// Times this node became leader of a group.
    pub leader_changes: Counter,
    /// Log store batch write + fsync latency.
    pub fsync_seconds: Histogram,
    /// Groups persisted per batch.
    pub batch_groups: Histogram,
    /// Groups running here.
    pub groups: Gauge,
    /// Entries applied to state machines.
    pub applies: Counter,
    /// Per group: the current term.
    pub group_term: Family<Labels, Gauge>,
    /// Per group: the leader's replica id (0: none known).
    pub group_leader: Family<Labels, Gauge>,
    /// Per step worker: inputs waiting in its queue.
    pub queue_depth: Family<Labels, Gauge>,
    /// Raft traffic from peers refused, by `reason` (see `identity::Refusal`).
    pub raft_refused: Family<Labels, Counter>,
    registry: Registry,
}

/// Label pairs of a metric family.
pub type Labels = Vec<(String, String)>;

/// The labels of one group's series.
pub fn group_labels(group: u64) -> Labels {
    vec![("group".to_string(), group.to_string())]
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let m = Metrics {
            proposals: Counter::default(),
            commits: Counter::default(),
            messages_sent: Counter::default(),
            leader_changes: Counter::default(),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            batch_groups: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            groups: Gauge::default(),
            applies: Counter::default(),
            group_term: Family::default(),
            group_leader: Family::default(),
            queue_depth: Family::default(),
            raft_refused: Family::default(),
            registry: Registry::with_prefix("drakkar"),
        };
        let mut reg = Registry::with_prefix("drakkar");
        reg.register("proposals", "Proposals handed to Raft", m.proposals.clone());
        reg.register("commits", "Entries committed", m.commits.clone());
        reg.register("messages_sent", "Raft messages sent", m.messages_sent.clone());
        reg.register("leader_changes", "Times this node became a group's leader", m.leader_changes.clone());
        reg.register(
            "logdb_save_seconds",
            "Log store batch write and fsync latency",
            m.fsync_seconds.clone(),
        );
        reg.register("logdb_batch_groups", "Groups persisted per log store batch", m.batch_groups.clone());
        reg.register("groups", "Groups running on this node", m.groups.clone());
        reg.register("applies", "Entries applied to state machines", m.applies.clone());
        reg.register("group_term", "Current term of each group", m.group_term.clone());
        reg.register(
            "group_leader",
            "Leader replica id of each group (0: none known)",
            m.group_leader.clone(),
        );
        reg.register("step_queue_depth", "Inputs waiting in each step worker's queue", m.queue_depth.clone());
        reg.register(
            "raft_refused",
            "Raft messages, snapshots and notices refused from peers, by reason",
            m.raft_refused.clone(),
        );
        Metrics { registry: reg, ..m }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}
