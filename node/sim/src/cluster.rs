//! The simulated machines: deterministic NodeHosts on in-memory log stores, crashed and restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use drakkar_logdb::fs::{FileSystem, MemFs};
use drakkar_raft::{GroupId, ReplicaId, Rng};

use super::net::SimNetwork;
use drakkar::{Driver, GroupConfig, NodeHost, NodeHostConfig, StartMode, StateMachineBox};
use drakkar_kv::MemKv;

/// The address of host `i`.
pub(crate) fn addr(i: u64) -> String {
    format!("h{i}:7000")
}

/// One simulated machine: its disks survive crashes, its NodeHost does not.
pub(crate) struct Machine {
    fs: Arc<MemFs>,
    dir: PathBuf,
    /// The running NodeHost; `None` while crashed.
    pub(crate) node: Option<NodeHost>,
    /// Boots so far (each boot gets its own deterministic seed).
    boots: u64,
    /// The replicas this machine runs: group -> (replica id, founding member?).
    pub(crate) replicas: BTreeMap<GroupId, (ReplicaId, bool)>,
    /// Replicas removed from their group while this machine was down: delete their data at boot.
    pub(crate) to_delete: BTreeSet<GroupId>,
    /// When a crashed machine comes back (virtual ms).
    pub(crate) restart_at: Option<u64>,
    /// A doomed machine: when it crashes, and when it comes back.
    pub(crate) crash_at: Option<(u64, u64)>,
}

/// The machines of one run.
pub(crate) struct Cluster {
    seed: u64,
    pub(crate) net: SimNetwork,
    pub(crate) machines: BTreeMap<u64, Machine>,
    /// Hosts `1..=founding` found every group; host `founding + 1` is the spare.
    pub(crate) founding: u64,
    gcfg: GroupConfig,
    /// Which groups run the serial ([`drakkar::statemachine::StateMachine`]) kind of MemKv; the others run
    /// the concurrent kind (snapshots from a captured view).
    regular: BTreeSet<GroupId>,
}

impl Cluster {
    pub(crate) fn new(
        seed: u64,
        founding: u64,
        groups: u64,
        snapshot_entries: u64,
        dir: &std::path::Path,
    ) -> Result<Self, String> {
        let gcfg = GroupConfig {
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_entries,
            compaction_overhead: 4,
            ..GroupConfig::default()
        };
        let mut c = Cluster {
            seed,
            net: SimNetwork::new(seed ^ 0x6e65_7477),
            machines: BTreeMap::new(),
            founding,
            gcfg,
            regular: (1..=groups).filter(|g| g % 2 == 0).map(GroupId).collect(),
        };
        for i in 1..=founding + 1 {
            let m = Machine {
                fs: Arc::new(MemFs::new()),
                dir: dir.join(addr(i)),
                node: None,
                boots: 0,
                replicas: BTreeMap::new(),
                to_delete: BTreeSet::new(),
                restart_at: None,
                crash_at: None,
            };
            c.machines.insert(i, m);
        }
        for i in 1..=founding {
            let m = c.machines.get_mut(&i).ok_or("no machine")?;
            for g in 1..=groups {
                m.replicas.insert(GroupId(g), (ReplicaId(i), true));
            }
        }
        for i in 1..=founding + 1 {
            c.boot(i)?;
        }
        Ok(c)
    }

    pub(crate) fn spare(&self) -> u64 {
        self.founding + 1
    }

    /// The running NodeHost of machine `i`.
    pub(crate) fn node(&self, i: u64) -> Option<&NodeHost> {
        self.machines.get(&i).and_then(|m| m.node.as_ref())
    }

    /// Machines that are up, in id order.
    pub(crate) fn live(&self) -> Vec<u64> {
        self.machines.iter().filter(|(_, m)| m.node.is_some()).map(|(i, _)| *i).collect()
    }

    /// Starts machine `i`'s NodeHost and its replicas (a restart recovers them from its log store).
    pub(crate) fn boot(&mut self, i: u64) -> Result<(), String> {
        let seed = self.seed;
        let founding = self.founding;
        let gcfg = self.gcfg.clone();
        let regular = self.regular.clone();
        let m = self.machines.get_mut(&i).ok_or("no machine")?;
        m.boots += 1;
        let mut cfg = NodeHostConfig::new(&m.dir, addr(i));
        cfg.workers = 2;
        cfg.apply_workers = 1;
        cfg.tick_interval = Duration::from_millis(super::workload::TICK_MS);
        cfg.queue_capacity = 1 << 14;
        cfg.log_segment_bytes = 32 << 10;
        cfg.log_cache_bytes = 1 << 20;
        let fs: Arc<dyn FileSystem> = m.fs.clone();
        cfg.log_fs = Some(fs);
        cfg.deterministic = Some(Rng::new(seed ^ (i << 40) ^ (m.boots << 20)).next_u64());
        let node = NodeHost::new(cfg, self.net.transport()).map_err(|e| format!("host {i} boot: {e}"))?;
        self.net.register(&addr(i), node.sink());
        let members: BTreeMap<ReplicaId, String> = (1..=founding).map(|r| (ReplicaId(r), addr(r))).collect();
        for (g, (replica, founder)) in m.replicas.clone() {
            let mode = if founder { StartMode::Founding(members.clone()) } else { StartMode::Joining };
            let sm = if regular.contains(&g) {
                StateMachineBox::regular(MemKv::new())
            } else {
                StateMachineBox::concurrent(Arc::new(MemKv::new()))
            };
            node.start_replica(g, replica, mode, sm, gcfg.clone())
                .map_err(|e| format!("host {i} boot: start {g} replica {replica}: {e}"))?;
        }
        for g in std::mem::take(&mut m.to_delete) {
            drive(&node, node.remove_data(g))
                .ok_or("remove_data did not finish")?
                .map_err(|e| e.to_string())?;
        }
        m.node = Some(node);
        m.restart_at = None;
        Ok(())
    }

    /// Dooms machine `i`: its disk dies after `ops` more mutating calls (a power loss in the middle of a
    /// write: the NodeHost sees the write or fsync fail), it crashes at `crash_at` and boots at `restart_at`.
    /// Crashes land inside a round this way, not only between rounds, so an acknowledgement sent before
    /// its fsync completed can be lost.
    pub(crate) fn doom(&mut self, i: u64, ops: u64, crash_at: u64, restart_at: u64) {
        let Some(m) = self.machines.get_mut(&i) else { return };
        if m.node.is_none() || m.crash_at.is_some() {
            return;
        }
        m.fs.die_after(ops);
        m.crash_at = Some((crash_at, restart_at));
    }

    /// Crashes machine `i`: its NodeHost vanishes mid-flight (no shutdown), and its log store loses or
    /// tears every byte not yet synced (directory operations too, half of the time).
    pub(crate) fn crash(&mut self, i: u64, restart_at: u64, rng: &mut Rng) {
        let Some(m) = self.machines.get_mut(&i) else { return };
        m.crash_at = None;
        let Some(node) = m.node.take() else { return };
        drop(node);
        let keep_dir_ops = rng.chance(1, 2);
        let mut tear = Rng::new(rng.next_u64());
        m.fs.crash(keep_dir_ops, move |_, unsynced| tear.range(0, unsynced + 1));
        m.restart_at = Some(restart_at);
    }

    /// Starts a replica of `g` on machine `i` (a joining replica).
    pub(crate) fn start_joining(&mut self, i: u64, g: GroupId, replica: ReplicaId) -> Result<(), String> {
        let m = self.machines.get_mut(&i).ok_or("no machine")?;
        m.replicas.insert(g, (replica, false));
        let Some(node) = &m.node else { return Ok(()) };
        let sm = if self.regular.contains(&g) {
            StateMachineBox::regular(MemKv::new())
        } else {
            StateMachineBox::concurrent(Arc::new(MemKv::new()))
        };
        node.start_replica(g, replica, StartMode::Joining, sm, self.gcfg.clone())
            .map_err(|e| format!("host {i}: start joining {g} replica {replica}: {e}"))
    }

    /// Deletes machine `i`'s replica of `g` (removed from the group), now or at its next boot.
    pub(crate) fn delete_replica(&mut self, i: u64, g: GroupId) -> Result<(), String> {
        let m = self.machines.get_mut(&i).ok_or("no machine")?;
        m.replicas.remove(&g);
        match &m.node {
            Some(node) => drive(node, node.remove_data(g))
                .ok_or("remove_data did not finish")?
                .map_err(|e| format!("host {i}: remove data of {g}: {e}")),
            None => {
                m.to_delete.insert(g);
                Ok(())
            }
        }
    }

    /// One tick of every running NodeHost.
    pub(crate) fn tick(&self) {
        for m in self.machines.values() {
            if let Some(d) = m.node.as_ref().and_then(|n| Driver::new(n).ok()) {
                d.tick();
            }
        }
    }

    /// Runs every NodeHost until idle.
    pub(crate) fn run(&self) -> Result<(), String> {
        for (i, m) in &self.machines {
            if let Some(n) = &m.node {
                Driver::new(n).and_then(|d| d.run_until_idle()).map_err(|e| format!("host {i}: {e}"))?;
            }
        }
        Ok(())
    }

    /// The machine whose replica of `g` leads with the highest term, as the replicas themselves say.
    pub(crate) fn leader_host(&self, g: GroupId) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for (i, m) in &self.machines {
            let Some(n) = &m.node else { continue };
            let Some((me, _)) = m.replicas.get(&g) else { continue };
            if let Ok(Some((leader, term))) = n.leader(g)
                && leader == *me
                && best.is_none_or(|(t, _)| term.0 > t)
            {
                best = Some((term.0, *i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Asks `g`'s leader to hand leadership to another voter (picked by `pick` among them). Returns the
    /// target, if the request was accepted.
    pub(crate) fn transfer_leader(&self, g: GroupId, pick: u64) -> Option<ReplicaId> {
        let node = self.node(self.leader_host(g)?)?;
        let me = node.replica_info(g).map(|i| i.replica).ok()?;
        let voters: Vec<ReplicaId> =
            node.membership(g).ok()?.membership.voters.iter().copied().filter(|r| *r != me).collect();
        let to = *voters.get((pick % voters.len().max(1) as u64) as usize)?;
        drive(node, node.transfer_leader(g, to))?.ok().map(|()| to)
    }

    /// Running machines with a replica of `g`.
    pub(crate) fn hosts_of(&self, g: GroupId) -> Vec<u64> {
        self.machines
            .iter()
            .filter(|(_, m)| m.node.is_some() && m.replicas.contains_key(&g))
            .map(|(i, _)| *i)
            .collect()
    }
}

/// Polls `fut` to completion on a deterministic NodeHost, running its workers between polls: the futures
/// used here wait on the workers only (never on a timer).
fn drive<F: std::future::Future>(node: &NodeHost, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..64 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        Driver::new(node).and_then(|d| d.run_until_idle()).ok()?;
    }
    None
}
