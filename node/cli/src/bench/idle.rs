//! What idle groups cost: many single-replica groups on one NodeHost, quiesced once idle; the resident
//! memory of the process and its CPU use over a quiet window.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use drakkar_raft::{GroupId, ReplicaId};
use serde::Serialize;

use super::BenchError;
use super::embedded::Counter;
use super::proc;
use drakkar::transport::InProcessNetwork;
use drakkar::{GroupConfig, NodeHost, NodeHostConfig, StartMode, StateMachineBox};

/// The measurement.
#[derive(Clone, Debug, Serialize)]
pub struct IdleReport {
    /// Groups started.
    pub groups: u64,
    /// RSS before starting them, in MiB.
    pub rss_before_mib: f64,
    /// RSS at the end of the window, in MiB.
    pub rss_mib: f64,
    /// CPU used during the window, in % of one core.
    pub cpu_percent: f64,
    /// Length of the window, in seconds.
    pub seconds: f64,
}

impl IdleReport {
    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl std::fmt::Display for IdleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} idle groups on one NodeHost: RSS {:.0} MiB ({:.0} MiB before the groups), CPU {:.1} % of one core over {:.0} s",
            self.groups, self.rss_mib, self.rss_before_mib, self.cpu_percent, self.seconds
        )
    }
}

/// Starts `groups` single-replica groups (quiesce after 50 idle ticks of 10 ms) in a NodeHost whose data
/// lives in `dir`, lets them elect and settle for `settle`, then measures over `window`.
pub async fn measure(
    dir: &Path,
    groups: u64,
    settle: Duration,
    window: Duration,
) -> Result<IdleReport, BenchError> {
    let setup = |e: drakkar::NodeError| BenchError::Setup(e.to_string());
    let net = InProcessNetwork::new();
    let mut cfg = NodeHostConfig::new(dir.join("idle"), "idle-node:7000");
    cfg.tick_interval = Duration::from_millis(10);
    let h = NodeHost::new(cfg, net.transport()).map_err(setup)?;
    net.register("idle-node:7000", h.sink());
    let rss0 = proc::rss_bytes();
    let gcfg = GroupConfig { quiesce_ticks: 50, election_ticks: 10, ..GroupConfig::default() };
    let members: BTreeMap<ReplicaId, String> = BTreeMap::from([(ReplicaId(1), "idle-node:7000".to_string())]);
    let started = (1..=groups).try_for_each(|g| {
        h.start_replica(
            GroupId(g),
            ReplicaId(1),
            StartMode::Founding(members.clone()),
            StateMachineBox::regular(Counter::default()),
            gcfg.clone(),
        )
    });
    let result = match started {
        Ok(()) => {
            tokio::time::sleep(settle).await;
            let cpu0 = proc::cpu_seconds(None);
            let t = Instant::now();
            tokio::time::sleep(window).await;
            let secs = t.elapsed().as_secs_f64();
            let cpu = (proc::cpu_seconds(None) - cpu0) / secs * 100.0;
            Ok(IdleReport {
                groups,
                rss_before_mib: rss0 as f64 / 1048576.0,
                rss_mib: proc::rss_bytes() as f64 / 1048576.0,
                cpu_percent: cpu,
                seconds: secs,
            })
        }
        Err(e) => Err(setup(e)),
    };
    let _ = tokio::task::spawn_blocking(move || h.close()).await;
    result
}
