//! Nemeses: faults injected into a local cluster while the workload runs.
//!
//! | nemesis | fault | healed by |
//! |---|---|---|
//! | `kill` | SIGKILL of a random founding node | restarting it on the same data directory |
//! | `pause` | SIGSTOP of a random founding node (it stays connected but silent) | SIGCONT |
//! | `partition` | every proxied link to and from a random founding node cut | healing the links |
//! | `membership` | a replica of a random group added on the spare node (as non-voter, then promoted) | removing it again (its id is never reused) |
//! | `disk-full` | a random founding node's disk (its own tmpfs; needs root) filled until writes fail: the node must stop acknowledging, and exits | freeing the space and restarting the node if it exited |
//!
//! Faults take turns: a quiet period, then one fault held for a while, then healing, and so on until the
//! run ends; every fault is recorded with its times for the report and the plot. From each heal every
//! founding node is probed until it serves linearizable reads again ([`crate::availability`]), while
//! the schedule goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use drakkar_client::{Client, pb};
use tokio::sync::Mutex;

use crate::availability::{self, ProbeOptions, Recovery};
use crate::cluster::LocalCluster;

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
    /// Every fault above, in turn.
    All,
}

impl Nemesis {
    /// The concrete fault kinds `list` stands for (`all` expanded, `none` dropped, no duplicates).
    pub fn expand(list: &[Nemesis]) -> Vec<Nemesis> {
        let mut out: Vec<Nemesis> = Vec::new();
        for n in list {
            let add: &[Nemesis] = match n {
                Nemesis::None => &[],
                Nemesis::All => &[Nemesis::Kill, Nemesis::Pause, Nemesis::Partition, Nemesis::Membership],
                one => std::slice::from_ref(one),
            };
            for a in add {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
        }
        out
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
            Nemesis::All => "all",
        }
    }
}

/// One fault, as it happened.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Fault {
    /// `kill`, `pause`, `partition` or `membership`.
    pub kind: &'static str,
    /// What it hit (`node-2`, `group 3 replica 101 on node-4`).
    pub target: String,
    /// The founding node it hit, if it hit one (not for `membership`).
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
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
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
    let mut rng = Rng(seed | 1);
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
                cluster.lock().await.isolate(node);
                tokio::time::sleep(opts.hold).await;
                cluster.lock().await.heal();
                format!("{node_name} isolated")
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
            node: (kind != Nemesis::Membership).then_some(node_name),
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
            Nemesis::expand(&[Nemesis::Kill, Nemesis::All, Nemesis::None]),
            vec![Nemesis::Kill, Nemesis::Pause, Nemesis::Partition, Nemesis::Membership]
        );
        assert!(Nemesis::expand(&[Nemesis::None]).is_empty());
    }
}
