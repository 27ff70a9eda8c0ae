//! Nemeses: faults injected into a local cluster while the workload runs.
//!
//! | nemesis | fault | healed by |
//! |---|---|---|
//! | `kill` | SIGKILL of a random founding node | restarting it on the same data directory |
//! | `kill-all` | SIGKILL of every founding node at once: the cluster down | restarting them all on their data |
//! | `pause` | SIGSTOP of a random founding node (it stays connected but silent) | SIGCONT |
//! | `partition` | every link between a random founding node and its peers cut, connections reset (proxies; with `--netns`, TCP resets from iptables) | healing the links |
//! | `membership` | a replica of a random group added on the spare node (as non-voter, then promoted) | removing it again (its id is never reused) |
//! | `disk-full` | a random founding node's disk (its own tmpfs; needs root) filled until writes fail: the node must stop acknowledging, and exits | freeing the space and restarting the node if it exited |
//! | `silent-partition` (`--netns`) | every packet between a random founding node and its peers dropped, both ways, no resets; clients still reach it | removing the filters |
//! | `isolate` (`--netns`) | every packet to and from a random founding node dropped, clients' too | removing the filters |
//! | `one-way-in` (`--netns`) | packets from the peers to a random founding node dropped (its own still arrive) | removing the filters |
//! | `one-way-out` (`--netns`) | packets from a random founding node to its peers dropped (theirs still arrive) | removing the filters |
//! | `slow-disk` | every fsync of a random founding node delayed by 200 ms to 1 s (its data directory is on [`drakkar_lazyfs`]; needs root and `/dev/fuse`): it must stay correct and the cluster keep serving | the delay removed |
//! | `power-loss` | a random founding node's fsyncs held back 200 ms for 0.5 s (so writes are in flight), then the node killed (SIGKILL) and everything it wrote but did not fsync discarded, as on a machine that lost power ([`drakkar_lazyfs`]; needs root and `/dev/fuse`) | restarting it on what was synced |
//! | `double` | two faults at once on two different founding nodes: a process fault (kill or pause) on one, a network fault (with `--netns` one of the four above, else `partition`) on the other | both healed together |
//!
//! Faults take turns: a quiet period, then one fault held for a while, then healing, and so on until the
//! run ends; every fault is recorded with its times for the report and the plot. From each heal every
//! founding node is probed until it serves linearizable reads again ([`crate::availability`]), while
//! the schedule goes on.
//!
//! Two faults at once: Jepsen composes nemesis packages whose schedules run independently, so faults of
//! different kinds overlap by chance. Here faults take turns (each recovery is measured from its own
//! heal), and `double` is the overlap made deliberate: with three nodes, a killed node and a partitioned
//! one leave the third without a quorum, and both must come back once healed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use drakkar_client::{Client, pb};
use tokio::sync::Mutex;

use crate::availability::{self, ProbeOptions, Recovery};
use crate::cluster::LocalCluster;
use crate::netns::NetFault;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
#[non_exhaustive]
pub enum Nemesis {
    /// No faults.
    None,
    /// kill -9 and restart.
    Kill,
    /// SIGSTOP and SIGCONT.
    Pause,
    /// Network partition isolating one node.
    Partition,
    /// Add and remove a replica.
    Membership,
    /// Fill a node's disk (needs root: each node gets a tmpfs). Not part of `all`.
    DiskFull,
    /// Drop every packet between a node and its peers, both ways (needs `--netns`).
    SilentPartition,
    /// Drop every packet to and from a node, clients' too (needs `--netns`).
    Isolate,
    /// Drop the packets from the peers to a node (needs `--netns`).
    OneWayIn,
    /// Drop the packets from a node to its peers (needs `--netns`).
    OneWayOut,
    /// A process fault on one node and a network fault on another, at once.
    Double,
    /// Kill every founding node (SIGKILL) at once, then restart them all: the whole cluster down and
    /// back on its data.
    KillAll,
    /// Delay every fsync of a node by 200 ms to 1 s (needs root and `/dev/fuse`: each node's data
    /// directory is on a FUSE filesystem).
    SlowDisk,
    /// Kill a node and discard what it wrote but did not fsync, then restart it (needs root and
    /// `/dev/fuse`).
    PowerLoss,
    /// Every fault above, in turn (except `disk-full` and `kill-all`; the network faults, `double`, `slow-disk` and
    /// `power-loss` with `--netns`, which needs root like them).
    All,
}

impl Nemesis {
    /// The concrete fault kinds `list` stands for (`all` expanded, `none` dropped, no duplicates); with
    /// `netns`, `all` includes the packet-filter faults and `double`.
    pub fn expand(list: &[Nemesis], netns: bool) -> Vec<Nemesis> {
        const BASIC: [Nemesis; 4] = [Nemesis::Kill, Nemesis::Pause, Nemesis::Partition, Nemesis::Membership];
        const NETNS: [Nemesis; 11] = [
            Nemesis::Kill,
            Nemesis::Pause,
            Nemesis::Partition,
            Nemesis::Membership,
            Nemesis::SilentPartition,
            Nemesis::Isolate,
            Nemesis::OneWayIn,
            Nemesis::OneWayOut,
            Nemesis::Double,
            Nemesis::SlowDisk,
            Nemesis::PowerLoss,
        ];
        crate::expand(list, |n| match n {
            Nemesis::None => &[],
            Nemesis::All if netns => &NETNS,
            Nemesis::All => &BASIC,
            one => std::slice::from_ref(one),
        })
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::None => "none",
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Partition => "partition",
            Nemesis::Membership => "membership",
            Nemesis::DiskFull => "disk-full",
            Nemesis::SilentPartition => "silent-partition",
            Nemesis::Isolate => "isolate",
            Nemesis::OneWayIn => "one-way-in",
            Nemesis::OneWayOut => "one-way-out",
            Nemesis::Double => "double",
            Nemesis::KillAll => "kill-all",
            Nemesis::SlowDisk => "slow-disk",
            Nemesis::PowerLoss => "power-loss",
            Nemesis::All => "all",
        }
    }

    /// The packet filter of a fault that needs network namespaces.
    pub fn net_fault(self) -> Option<NetFault> {
        match self {
            Nemesis::SilentPartition => Some(NetFault::SilentPartition),
            Nemesis::Isolate => Some(NetFault::Isolate),
            Nemesis::OneWayIn => Some(NetFault::InboundCut),
            Nemesis::OneWayOut => Some(NetFault::OutboundCut),
            _ => None,
        }
    }

    /// Whether the nodes' data directories must be on [`drakkar_lazyfs`] for it.
    pub fn needs_lazyfs(self) -> bool {
        matches!(self, Nemesis::SlowDisk | Nemesis::PowerLoss)
    }

    /// Whether the cluster needs cuttable links between nodes for it (proxies, or namespaces).
    pub fn partitions(self) -> bool {
        matches!(self, Nemesis::Partition | Nemesis::Double) || self.net_fault().is_some()
    }
}

/// One fault, as it happened.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Fault {
    /// The nemesis' name ([`Nemesis::name`]).
    pub kind: &'static str,
    /// What it hit (`node-2`, `group 3 replica 101 on node-4`, `node-1 kill + node-3 isolate`).
    pub target: String,
    /// The founding node it hit, if it hit one (not for `membership`; for `double`, both, `node-1+node-3`).
    pub node: Option<String>,
    /// When it started, in seconds since the start of the run.
    pub start_s: f64,
    /// When it was healed (for `kill`: when the node was started again).
    pub end_s: f64,
    /// Errors while injecting or healing it, if any.
    pub errors: Vec<String>,
    /// Per founding node, how long after `end_s` it served linearizable reads again (empty when not
    /// probed).
    pub recovery: Vec<Recovery>,
}

/// Nemesis schedule.
#[derive(Clone, Debug)]
pub struct NemesisOptions {
    /// The fault kinds, taken in turn.
    pub kinds: Vec<Nemesis>,
    /// Quiet time before each fault.
    pub quiet: Duration,
    /// How long each fault is held.
    pub hold: Duration,
    /// The KV groups (membership changes pick one).
    pub groups: Vec<u64>,
    /// The state machine of new replicas.
    pub disk: bool,
    /// Probing of the nodes after each heal (`None`: not measured).
    pub probe: Option<Arc<ProbeOptions>>,
    /// The nodes run in network namespaces (`double` then picks among the packet-filter faults).
    pub netns: bool,
}

/// Injects faults until `end` (the last one is healed by then); returns what it did, with each node's
/// recovery once the probes are done (at most [`ProbeOptions::limit`] after the last heal).
pub async fn run(
    cluster: Arc<Mutex<LocalCluster>>,
    admin: Client,
    opts: NemesisOptions,
    start: Instant,
    end: Instant,
    seed: u64,
) -> Vec<Fault> {
    let mut faults = Vec::new();
    if opts.kinds.is_empty() {
        return faults;
    }
    let mut rng = drakkar_raft::Rng::new(seed);
    let mut next_replica = 100u64;
    let mut turn = 0usize;
    // (index in `faults`, its probe)
    let mut probes = Vec::new();
    loop {
        let now = Instant::now();
        if now + opts.quiet + opts.hold > end {
            break;
        }
        tokio::time::sleep(opts.quiet).await;
        let kind = opts.kinds[turn % opts.kinds.len()];
        turn += 1;
        let founding = cluster.lock().await.founding();
        let node = rng.below(founding);
        let node_name = cluster.lock().await.name(node).to_string();
        let began = start.elapsed().as_secs_f64();
        let mut errors = Vec::new();
        let mut double_node = None;
        let target = match kind {
            Nemesis::Kill => {
                let mut c = cluster.lock().await;
                c.kill(node);
                drop(c);
                tokio::time::sleep(opts.hold).await;
                if let Err(e) = cluster.lock().await.restart(node) {
                    errors.push(format!("restart: {e:#}"));
                }
                node_name.clone()
            }
            Nemesis::KillAll => {
                let mut c = cluster.lock().await;
                for i in 0..founding {
                    c.kill(i);
                }
                drop(c);
                tokio::time::sleep(opts.hold).await;
                let mut c = cluster.lock().await;
                for i in 0..founding {
                    if let Err(e) = c.restart(i) {
                        errors.push(format!("restart of {}: {e:#}", c.name(i)));
                    }
                }
                let names: Vec<String> = (0..founding).map(|i| c.name(i).to_string()).collect();
                double_node = Some(names.join("+"));
                "every founding node".to_string()
            }
            Nemesis::Pause => {
                if let Err(e) = cluster.lock().await.pause(node) {
                    errors.push(format!("pause: {e:#}"));
                }
                tokio::time::sleep(opts.hold).await;
                if let Err(e) = cluster.lock().await.resume(node) {
                    errors.push(format!("resume: {e:#}"));
                }
                node_name.clone()
            }
            Nemesis::Partition => {
                if let Err(e) = cluster.lock().await.isolate(node) {
                    errors.push(format!("partition: {e:#}"));
                }
                tokio::time::sleep(opts.hold).await;
                if let Err(e) = cluster.lock().await.heal() {
                    errors.push(format!("heal: {e:#}"));
                }
                format!("{node_name} isolated")
            }
            Nemesis::SilentPartition | Nemesis::Isolate | Nemesis::OneWayIn | Nemesis::OneWayOut => {
                let fault = kind.net_fault().unwrap_or(NetFault::SilentPartition);
                if let Err(e) = cluster.lock().await.net_fault(node, fault) {
                    errors.push(format!("{}: {e:#}", kind.name()));
                }
                tokio::time::sleep(opts.hold).await;
                if let Err(e) = cluster.lock().await.heal() {
                    errors.push(format!("heal: {e:#}"));
                }
                node_name.clone()
            }
            Nemesis::Double => {
                let other = (node + 1 + rng.below(founding.max(2) - 1)) % founding.max(1);
                let other_name = cluster.lock().await.name(other).to_string();
                let process = if rng.below(2) == 0 { Nemesis::Kill } else { Nemesis::Pause };
                let net =
                    if opts.netns { DOUBLE_NET[rng.below(DOUBLE_NET.len())] } else { Nemesis::Partition };
                double(&cluster, (node, process), (other, net), opts.hold, &mut errors).await;
                double_node = Some(format!("{node_name}+{other_name}"));
                format!("{node_name} {} + {other_name} {}", process.name(), net.name())
            }
            Nemesis::DiskFull => {
                let name = &node_name;
                if let Err(e) = cluster.lock().await.fill_disk(node) {
                    errors.push(format!("filling the disk: {e:#}"));
                }
                tokio::time::sleep(opts.hold).await;
                let mut c = cluster.lock().await;
                if let Err(e) = c.free_disk(node) {
                    errors.push(format!("freeing the disk: {e:#}"));
                }
                match c.exited(node) {
                    Some(status) => {
                        if let Err(e) = c.restart(node) {
                            errors.push(format!("restart: {e:#}"));
                        }
                        format!("{name} disk full (it stopped: {status}; restarted)")
                    }
                    None => format!("{name} disk full"),
                }
            }
            Nemesis::SlowDisk => {
                let delay = SLOW_FSYNC_MIN + (SLOW_FSYNC_MAX - SLOW_FSYNC_MIN) * rng.below(101) as u32 / 100;
                if let Err(e) = cluster.lock().await.slow_disk(node, delay) {
                    errors.push(format!("slowing the disk: {e:#}"));
                }
                tokio::time::sleep(opts.hold).await;
                if let Err(e) = cluster.lock().await.slow_disk(node, Duration::ZERO) {
                    errors.push(format!("healing the disk: {e:#}"));
                }
                format!("{node_name} fsyncs +{} ms", delay.as_millis())
            }
            Nemesis::PowerLoss => {
                // A brownout first: with fsyncs held back, the cut finds writes that are not durable yet
                // (on a fast disk it nearly always falls between one batch's fsync and the next write,
                // and there is nothing to lose).
                if let Err(e) = cluster.lock().await.slow_disk(node, POWER_LOSS_FSYNC_DELAY) {
                    errors.push(format!("slowing the disk: {e:#}"));
                }
                tokio::time::sleep(POWER_LOSS_BROWNOUT).await;
                let lost = cluster.lock().await.power_loss(node);
                if let Err(e) = cluster.lock().await.slow_disk(node, Duration::ZERO) {
                    errors.push(format!("healing the disk: {e:#}"));
                }
                tokio::time::sleep(opts.hold).await;
                if let Err(e) = cluster.lock().await.restart(node) {
                    errors.push(format!("restart: {e:#}"));
                }
                match lost {
                    Ok(l) => format!(
                        "{node_name} power loss ({} unsynced bytes lost in {} files, {} new files lost)",
                        l.bytes_discarded, l.files_rolled_back, l.files_removed
                    ),
                    Err(e) => {
                        errors.push(format!("power loss: {e:#}"));
                        format!("{node_name} power loss")
                    }
                }
            }
            Nemesis::Membership => {
                let group = opts.groups[rng.below(opts.groups.len())];
                let replica = next_replica;
                next_replica += 1;
                let spare = cluster.lock().await.spare();
                match spare {
                    Some(spare) => {
                        if let Err(e) =
                            membership_change(&admin, &spare, group, replica, opts.disk, opts.hold).await
                        {
                            errors.push(format!("{e:#}"));
                        }
                        format!("group {group} replica {replica} on {spare}")
                    }
                    None => {
                        errors.push("no spare node".into());
                        "none".into()
                    }
                }
            }
            Nemesis::None | Nemesis::All => continue,
        };
        // Healed: every arm above returns once its fault is undone.
        let healed = tokio::time::Instant::now();
        let end_s = start.elapsed().as_secs_f64();
        if let Some(p) = &opts.probe {
            probes.push((faults.len(), tokio::spawn(availability::probe(p.clone(), healed))));
        }
        for e in &errors {
            tracing::warn!(nemesis = kind.name(), error = %e, "nemesis step failed");
        }
        faults.push(Fault {
            kind: kind.name(),
            target,
            node: double_node.or_else(|| (kind != Nemesis::Membership).then_some(node_name)),
            start_s: began,
            end_s,
            errors,
            recovery: Vec::new(),
        });
    }
    for (i, p) in probes {
        match p.await {
            Ok(r) => faults[i].recovery = r,
            Err(e) => faults[i].errors.push(format!("probing the recovery: {e}")),
        }
    }
    faults
}

/// `power-loss`: fsyncs on the node are held back this long each ...
const POWER_LOSS_FSYNC_DELAY: Duration = Duration::from_millis(200);
/// ... for this long before the power is cut, so that writes are in flight when it is.
const POWER_LOSS_BROWNOUT: Duration = Duration::from_millis(500);
/// The shortest fsync delay of `slow-disk`.
const SLOW_FSYNC_MIN: Duration = Duration::from_millis(200);
/// The longest fsync delay of `slow-disk`.
const SLOW_FSYNC_MAX: Duration = Duration::from_secs(1);

/// The network faults `double` picks from with `--netns`.
const DOUBLE_NET: [Nemesis; 4] =
    [Nemesis::SilentPartition, Nemesis::Isolate, Nemesis::OneWayIn, Nemesis::OneWayOut];

/// `double`: `process` (kill or pause) on one node and `net` on another, held for `hold`, then healed
/// together (the network first, then the process restarted or resumed). Failures go to `errors`.
async fn double(
    cluster: &Mutex<LocalCluster>,
    (p_node, process): (usize, Nemesis),
    (n_node, net): (usize, Nemesis),
    hold: Duration,
    errors: &mut Vec<String>,
) {
    {
        let mut c = cluster.lock().await;
        let cut = match net.net_fault() {
            Some(f) => c.net_fault(n_node, f),
            None => c.isolate(n_node),
        };
        if let Err(e) = cut {
            errors.push(format!("{}: {e:#}", net.name()));
        }
        if process == Nemesis::Kill {
            c.kill(p_node);
        } else if let Err(e) = c.pause(p_node) {
            errors.push(format!("pause: {e:#}"));
        }
    }
    tokio::time::sleep(hold).await;
    let mut c = cluster.lock().await;
    if let Err(e) = c.heal() {
        errors.push(format!("heal: {e:#}"));
    }
    let back = if process == Nemesis::Kill { c.restart(p_node) } else { c.resume(p_node) };
    if let Err(e) = back {
        errors.push(format!("{}: {e:#}", if process == Nemesis::Kill { "restart" } else { "resume" }));
    }
}

/// Adds replica `replica` of `group` on the spare node as a non-voter, promotes it, holds, removes it.
async fn membership_change(
    admin: &Client,
    spare: &str,
    group: u64,
    replica: u64,
    disk: bool,
    hold: Duration,
) -> Result<()> {
    // No optimistic lock (expected_conf_index 0): the nemesis is the only one changing membership, and
    // a follower's answer to GetMembership may lag the leader's.
    admin.add_replica(group, replica, spare, pb::Role::NonVoter, 0).await.context("adding the replica")?;
    let kind = if disk { pb::StateMachineKind::KvDisk } else { pb::StateMachineKind::KvMemory };
    let req =
        pb::StartGroupRequest { group, replica, initial_members: vec![], join: true, kind: kind as i32 };
    let started = admin.start_group(spare, req).await.context("starting the replica on the spare node");
    let result = async {
        started?;
        tokio::time::sleep(hold / 2).await;
        admin.promote_replica(group, replica, 0).await.context("promoting the replica")?;
        tokio::time::sleep(hold / 2).await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // Always try to take it out again, so the group goes back to its founding members.
    let removed = admin.remove_replica(group, replica, 0).await.context("removing the replica");
    let stopped =
        admin.stop_group(spare, group, true).await.context("stopping the replica on the spare node");
    result.and(removed.map(|_| ())).and(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_to_every_fault_once() {
        assert_eq!(
            Nemesis::expand(&[Nemesis::Kill, Nemesis::All, Nemesis::None], false),
            vec![Nemesis::Kill, Nemesis::Pause, Nemesis::Partition, Nemesis::Membership]
        );
        assert!(Nemesis::expand(&[Nemesis::None], true).is_empty());
        // With namespaces (root), `all` adds the packet-filter faults, `double` and the disk faults,
        // each once.
        let all = Nemesis::expand(&[Nemesis::OneWayIn, Nemesis::All], true);
        assert_eq!(all.len(), 11, "{all:?}");
        assert!(all.contains(&Nemesis::SlowDisk) && all.contains(&Nemesis::PowerLoss));
        assert!(!Nemesis::expand(&[Nemesis::All], false).iter().any(|n| n.needs_lazyfs()));
        assert_eq!(&all[..2], &[Nemesis::OneWayIn, Nemesis::Kill]);
        assert!(all.contains(&Nemesis::Double) && all.contains(&Nemesis::Isolate));
        // Not `kill-all`: with the whole cluster down the checker is often left undecided.
        assert!(!all.contains(&Nemesis::KillAll));
        assert!(!all.contains(&Nemesis::DiskFull));
    }

    #[test]
    fn network_faults_need_cuttable_links() {
        for n in [Nemesis::SilentPartition, Nemesis::Isolate, Nemesis::OneWayIn, Nemesis::OneWayOut] {
            assert!(n.net_fault().is_some() && n.partitions(), "{n:?}");
        }
        assert!(Nemesis::Partition.partitions() && Nemesis::Double.partitions());
        assert!(!Nemesis::Kill.partitions() && Nemesis::Partition.net_fault().is_none());
        // Every double picks a network fault that exists.
        assert!(DOUBLE_NET.iter().all(|n| n.net_fault().is_some()));
    }
}
