//! Helpers for NodeHost tests: a small deterministic state machine and a cluster of NodeHosts on real files
//! in a temporary directory, on the plain in-process network or, for tests with faults, on a real-time
//! [`SimNetwork`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drakkar::statemachine::{SmEntry, SmError, SmResult, StateMachine, Stop};
use drakkar::transport::{InProcessNetwork, MessageSink, Transport};
use drakkar::{GroupConfig, NodeHost, NodeHostConfig, StartMode, StateMachineBox};
use drakkar_raft::{GroupId, ReplicaId};

use crate::SimNetwork;

/// "key=value" sets a key; a query is a key ("#updates": how many updates were applied). The result of an
/// update is the number of updates so far.
#[derive(Default)]
pub struct TestKv {
    /// The keys and their values.
    pub map: BTreeMap<String, String>,
    /// Updates applied so far.
    pub updates: u64,
}

impl StateMachine for TestKv {
    fn update(&mut self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        for e in entries {
            let s = String::from_utf8_lossy(&e.cmd).into_owned();
            if let Some((k, v)) = s.split_once('=') {
                self.map.insert(k.to_string(), v.to_string());
            }
            self.updates += 1;
            e.result = SmResult { value: self.updates, data: Bytes::new() };
        }
        Ok(())
    }

    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError> {
        if query == b"#updates" {
            return Ok(Bytes::from(self.updates.to_string()));
        }
        let k = String::from_utf8_lossy(query);
        Ok(self.map.get(k.as_ref()).map(|v| Bytes::from(v.clone())).unwrap_or_default())
    }

    fn save_snapshot(&self, w: &mut dyn Write, _stop: &Stop) -> Result<(), SmError> {
        let mut s = format!("{}\n", self.updates);
        for (k, v) in &self.map {
            s.push_str(&format!("{k}={v}\n"));
        }
        w.write_all(s.as_bytes())?;
        Ok(())
    }

    fn recover_from_snapshot(&mut self, r: &mut dyn Read, _stop: &Stop) -> Result<(), SmError> {
        let mut s = String::new();
        r.read_to_string(&mut s)?;
        let mut lines = s.lines();
        self.updates =
            lines.next().and_then(|l| l.parse().ok()).ok_or_else(|| SmError::Other("bad snapshot".into()))?;
        self.map =
            lines.filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Ok(())
    }
}

/// A new, empty [`TestKv`].
pub fn sm() -> StateMachineBox {
    StateMachineBox::regular(TestKv::default())
}

/// How long a test waits for an answer.
pub const T: Duration = Duration::from_secs(5);

/// A group that elects and compacts quickly (10-tick elections, heartbeat every tick, no periodic
/// snapshots, compaction 5 entries behind).
pub fn fast_group() -> GroupConfig {
    GroupConfig {
        election_ticks: 10,
        heartbeat_ticks: 1,
        snapshot_entries: 0,
        compaction_overhead: 5,
        ..GroupConfig::default()
    }
}

/// A network the NodeHosts of a [`Cluster`] join.
pub trait Network {
    /// Makes `sink` reachable at `address`.
    fn register(&self, address: &str, sink: Weak<dyn MessageSink>);
    /// A transport for a NodeHost of this network.
    fn transport(&self) -> Arc<dyn Transport>;
}

impl Network for InProcessNetwork {
    fn register(&self, address: &str, sink: Weak<dyn MessageSink>) {
        InProcessNetwork::register(self, address, sink);
    }
    fn transport(&self) -> Arc<dyn Transport> {
        InProcessNetwork::transport(self)
    }
}

impl Network for SimNetwork {
    fn register(&self, address: &str, sink: Weak<dyn MessageSink>) {
        SimNetwork::register(self, address, sink);
    }
    fn transport(&self) -> Arc<dyn Transport> {
        SimNetwork::transport(self)
    }
}

/// NodeHosts numbered from 1 on one network (by default the fault-free [`InProcessNetwork`]), each with its
/// own data directory under one temporary directory; they are closed when the cluster is dropped.
pub struct Cluster<N: Network = InProcessNetwork> {
    /// The network between them.
    pub net: N,
    /// The running hosts by number.
    pub hosts: BTreeMap<u64, NodeHost>,
    /// Each host's data directory (kept after a host is closed, for restarts).
    pub dirs: BTreeMap<u64, PathBuf>,
    /// The directory holding them all.
    pub _tmp: tempfile::TempDir,
}

/// The address of host `i`.
pub fn addr(i: u64) -> String {
    format!("node-{i}:7000")
}

impl Cluster {
    /// Hosts 1 to `n` on an [`InProcessNetwork`], started.
    pub fn new(n: u64) -> Cluster {
        Cluster::on(InProcessNetwork::new(), n)
    }

    /// The membership of replicas `ids`, replica i on host i.
    pub fn members(ids: impl IntoIterator<Item = u64>) -> BTreeMap<ReplicaId, String> {
        ids.into_iter().map(|i| (ReplicaId(i), addr(i))).collect()
    }
}

impl<N: Network> Cluster<N> {
    /// Hosts 1 to `n` on `net`, started.
    pub fn on(net: N, n: u64) -> Cluster<N> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = Cluster { net, hosts: BTreeMap::new(), dirs: BTreeMap::new(), _tmp: tmp };
        for i in 1..=n {
            c.start_host(i);
        }
        c
    }

    /// Starts (or restarts, on its data directory) host `i` and registers it on the network.
    pub fn start_host(&mut self, i: u64) -> NodeHost {
        let dir = self._tmp.path().join(format!("n{i}"));
        let mut cfg = NodeHostConfig::new(&dir, addr(i));
        cfg.tick_interval = Duration::from_millis(5);
        cfg.workers = 2;
        cfg.apply_workers = 2;
        let h = NodeHost::new(cfg, self.net.transport()).expect("nodehost");
        self.net.register(&addr(i), h.sink());
        self.hosts.insert(i, h.clone());
        self.dirs.insert(i, dir);
        h
    }

    /// Starts group `g` with replica i on host i for every host in `ids`.
    pub fn start_group(&self, g: u64, ids: &[u64], cfg: GroupConfig) {
        let members = Cluster::members(ids.iter().copied());
        for &i in ids {
            self.hosts[&i]
                .start_replica(
                    GroupId(g),
                    ReplicaId(i),
                    StartMode::Founding(members.clone()),
                    sm(),
                    cfg.clone(),
                )
                .expect("start replica");
        }
    }

    /// Waits until some host sees a leader for `g`; returns its replica id.
    pub async fn leader(&self, g: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            for h in self.hosts.values() {
                if let Ok(Some((l, _))) = h.leader(GroupId(g))
                    && self.hosts.get(&l.0).and_then(|lh| lh.leader(GroupId(g)).ok().flatten()).map(|x| x.0)
                        == Some(l)
                {
                    return l.0;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader for group {g} within 10s");
    }
}

impl<N: Network> Drop for Cluster<N> {
    fn drop(&mut self) {
        for h in self.hosts.values() {
            h.close();
        }
    }
}
