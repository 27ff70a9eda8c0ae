//! The embedded target: NodeHosts in this process connected by the in-process transport, with requests
//! made from inside the process (Dragonboat's benchmark method). Every replica writes its own log store
//! with fsync, so durability is the same as a networked node's; only the network and gRPC are left out.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drakkar_raft::{GroupId, ReplicaId};

use super::{BenchError, Consistency, Op, Target};
use drakkar::statemachine::{SmEntry, SmError, SmResult, StateMachine, Stop};
use drakkar::transport::InProcessNetwork;
use drakkar::{GroupConfig, NodeHost, NodeHostConfig, StartMode, StateMachineBox};
use drakkar_kv::{Command, MemKv, Query};

/// Counts updates: the cheapest state machine, so a benchmark measures the engine alone.
#[derive(Default)]
pub struct Counter(u64);

impl StateMachine for Counter {
    fn update(&mut self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        for e in entries {
            self.0 += 1;
            e.result = SmResult { value: self.0, data: Bytes::new() };
        }
        Ok(())
    }
    fn lookup(&self, _: &[u8]) -> Result<Bytes, SmError> {
        Ok(Bytes::copy_from_slice(&self.0.to_le_bytes()))
    }
    fn save_snapshot(&self, w: &mut dyn Write, _stop: &Stop) -> Result<(), SmError> {
        w.write_all(&self.0.to_le_bytes())?;
        Ok(())
    }
    fn recover_from_snapshot(&mut self, r: &mut dyn Read, _stop: &Stop) -> Result<(), SmError> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        self.0 = u64::from_le_bytes(b);
        Ok(())
    }
}

/// The state machine of the benchmark groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmbeddedSm {
    /// [`Counter`]: proposals are counted, not decoded (the engine alone).
    Counter,
    /// The built-in in-memory KV store ([`MemKv`]): puts and gets are real KV commands and queries.
    Kv,
}

/// How to build the embedded cluster.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Directory under which a fresh temporary directory holds the data (removed afterwards).
    pub dir: PathBuf,
    /// Replicas of every group (one NodeHost each).
    pub replicas: u64,
    /// Groups started (workloads may use fewer).
    pub groups: u64,
    /// The state machine.
    pub sm: EmbeddedSm,
    /// Raft tick.
    pub tick: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            dir: std::env::temp_dir(),
            replicas: 3,
            groups: 48,
            sm: EmbeddedSm::Counter,
            tick: Duration::from_millis(10),
        }
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Running NodeHosts with leadership spread over them: group `g` is led by host `g % replicas`.
pub struct Embedded {
    hosts: Vec<NodeHost>,
    sm: EmbeddedSm,
    replicas: u64,
    _dir: TempDir,
}

fn address(i: u64) -> String {
    format!("bench-node-{i}:7000")
}

impl Embedded {
    /// Starts the cluster and waits until every group has its leader where it should be (at most 60 s).
    pub async fn start(o: &EmbeddedOptions) -> Result<Embedded, BenchError> {
        if o.replicas == 0 || o.groups == 0 {
            return Err(BenchError::Setup("at least one replica and one group".into()));
        }
        let dir = o.dir.join(format!("drakkar-bench-{:016x}", drakkar_server::health::nonce()));
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::Setup(format!("{}: {e}", dir.display())))?;
        let dir = TempDir(dir);
        let net = InProcessNetwork::new();
        let mut hosts = Vec::new();
        for i in 1..=o.replicas {
            let mut cfg = NodeHostConfig::new(dir.0.join(format!("n{i}")), address(i));
            cfg.tick_interval = o.tick;
            let h = NodeHost::new(cfg, net.transport()).map_err(|e| BenchError::Setup(e.to_string()))?;
            net.register(&address(i), h.sink());
            hosts.push(h);
        }
        let members: BTreeMap<ReplicaId, String> =
            (1..=o.replicas).map(|i| (ReplicaId(i), address(i))).collect();
        let cfg =
            GroupConfig { snapshot_entries: 100_000, compaction_overhead: 10_000, ..GroupConfig::default() };
        for g in 1..=o.groups {
            for (i, h) in hosts.iter().enumerate() {
                let sm = match o.sm {
                    EmbeddedSm::Counter => StateMachineBox::regular(Counter::default()),
                    EmbeddedSm::Kv => StateMachineBox::concurrent(Arc::new(MemKv::new())),
                };
                h.start_replica(
                    GroupId(g),
                    ReplicaId(i as u64 + 1),
                    StartMode::Founding(members.clone()),
                    sm,
                    cfg.clone(),
                )
                .map_err(|e| BenchError::Setup(format!("starting group {g}: {e}")))?;
            }
        }
        let e = Embedded { hosts, sm: o.sm, replicas: o.replicas, _dir: dir };
        e.spread_leaders(o.groups).await?;
        Ok(e)
    }

    fn home(&self, g: u64) -> usize {
        (g % self.replicas) as usize
    }

    async fn spread_leaders(&self, groups: u64) -> Result<(), BenchError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for g in 1..=groups {
            let want = ReplicaId(self.home(g) as u64 + 1);
            loop {
                let l = self.hosts[0].leader(GroupId(g)).ok().flatten().map(|x| x.0);
                if l == Some(want) {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(BenchError::Setup(format!(
                        "group {g} has no leader on replica {want} after 60 s"
                    )));
                }
                if let Some(l) = l {
                    let _ = self.hosts[(l.0 - 1) as usize].transfer_leader(GroupId(g), want).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// The NodeHosts (host `i` runs replica `i + 1` of every group).
    pub fn hosts(&self) -> &[NodeHost] {
        &self.hosts
    }

    /// Closes the NodeHosts (blocking: call off the async workers) and removes the data.
    pub fn close(self) {
        for h in &self.hosts {
            h.close();
        }
    }
}

impl Target for Embedded {
    async fn call(&self, _slot: usize, op: Op, timeout: Duration) -> Result<(), BenchError> {
        let req = |e: drakkar::NodeError| BenchError::Request(e.to_string());
        match op {
            Op::Put { group, key, value } => {
                let h = &self.hosts[self.home(group)];
                let cmd = match self.sm {
                    EmbeddedSm::Counter => value,
                    EmbeddedSm::Kv => Command::Put { key, value }
                        .encode()
                        .map_err(|e| BenchError::Request(e.to_string()))?,
                };
                h.propose(GroupId(group), cmd, timeout).await.map_err(req)?;
            }
            Op::Get { group, key, consistency } => {
                let h = &self.hosts[self.home(group)];
                let q = match self.sm {
                    EmbeddedSm::Counter => Bytes::new(),
                    EmbeddedSm::Kv => {
                        Query::Get { key }.encode().map_err(|e| BenchError::Request(e.to_string()))?
                    }
                };
                match consistency {
                    Consistency::Linearizable => h.read(GroupId(group), q, timeout).await.map_err(req)?,
                    Consistency::Stale => h.stale_read(GroupId(group), &q).map_err(req)?,
                };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Mix, Workload, run};
    use drakkar_kv::QueryResult;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_on_the_kv_store_counts_operations() {
        let tmp = tempfile::tempdir().unwrap();
        let o = EmbeddedOptions {
            dir: tmp.path().into(),
            groups: 2,
            sm: EmbeddedSm::Kv,
            ..EmbeddedOptions::default()
        };
        let cluster = Arc::new(Embedded::start(&o).await.unwrap());
        let w = Workload {
            mix: Mix::Mixed { read_percent: 50 },
            consistency: Consistency::Linearizable,
            keys: 50,
            value_size: 16,
            in_flight: 8,
            groups: 2,
            duration: Duration::from_millis(800),
            warmup: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
        };
        let r = run(cluster.clone(), "embedded", &w, &[]).await.unwrap();
        assert!(r.ops > 0, "{r:?}");
        assert_eq!(r.errors, 0, "{r:?}");
        assert!(r.p50_us > 0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us, "{r:?}");
        // The populated keys were written through Raft: a stale read on a follower finds one.
        let q = Query::Get { key: crate::bench::key(1) }.encode().unwrap();
        let got = cluster.hosts()[0].read(GroupId(2), q, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(QueryResult::decode(&got), Ok(QueryResult::Get(Some(_)))));
        let c = Arc::into_inner(cluster).unwrap();
        tokio::task::spawn_blocking(move || c.close()).await.unwrap();
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the data directory is removed");
    }
}
