//! # drakkar-sim
//!
//! A deterministic simulator of whole NodeHosts (dev only: for tests and soaks).
//!
//! Three (sometimes five) deterministic NodeHosts ([`drakkar::NodeHostConfig::deterministic`]) plus a spare
//! one run several groups of the in-memory KV on in-memory log stores (`drakkar_logdb::fs::MemFs`, which
//! models fsync) and a simulated network ([`SimNetwork`]), all on one thread, against a virtual clock.
//! One seed decides everything: message latency (so reordering), loss, duplication and partitions; crashes
//! (a NodeHost is dropped and its log store loses or tears every unsynced byte) and restarts; on-demand
//! snapshots besides the periodic ones (every few entries, so lagging and new replicas catch up by
//! snapshot); membership changes (a replica on the spare host added as a voter, later removed and its
//! data deleted, while the group stays available); leadership transfers; and the clients' operations: puts of unique values,
//! linearizable reads, compare-and-swaps on a few contended keys, puts to write-once keys, and session
//! proposals retried under the same series id until answered, on any host.
//!
//! The run records a per-key history of the contended and write-once keys (invocation and completion on
//! the virtual clock; `NoLeader`/`Busy` answers as failed, timeouts and crashes as unknown) for a
//! linearizability checker, and itself checks, after healing every fault and letting the groups settle:
//! every group elects a leader within 30 virtual seconds (after a power loss of every host that takes an
//! election or two, so the wait is bounded rather than fixed); every acknowledged write-once key is on every replica with its value; every session's key was written
//! exactly once per answered series, and each answer carried the first application's result; every replica
//! of a group holds the same state. A seed replays the same run exactly (`run(seed, ..)` twice gives the
//! same [`SimReport::fingerprint`]).
//!
//! [`SimNetwork`] is also the fault network of tests whose NodeHosts run on threads in real time
//! ([`SimNetwork::realtime`]; [`harness::Cluster::on`] starts a cluster on it): the engine's own
//! `InProcessNetwork` injects no fault.

mod cluster;
pub mod harness;
mod net;
pub mod raft;
mod workload;

use std::fmt;
use std::path::Path;

pub use net::{NetFaults, NetStats, SimNetwork};

/// Knobs of one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Founding NodeHosts (3 or 5); one more, the spare, hosts replicas added by membership changes.
    pub hosts: u64,
    /// Groups, each with a replica on every founding host.
    pub groups: u64,
    /// Virtual milliseconds of workload and faults (then the faults heal and the run settles).
    pub duration_ms: u64,
    /// Concurrent clients, each running one operation at a time.
    pub clients: u64,
    /// Contended keys per group (put, CAS and read).
    pub keys: u64,
    /// Periodic snapshot interval, in applied entries.
    pub snapshot_entries: u64,
    /// Faults: crashes, partitions, message loss and duplication.
    pub faults: bool,
    /// Membership changes on the spare host.
    pub membership: bool,
}

impl SimConfig {
    /// The configuration a seed runs with: mostly 3 hosts, one seed in four 5.
    pub fn for_seed(seed: u64) -> Self {
        let mut r = drakkar_raft::Rng::new(seed ^ 0x5eed);
        SimConfig {
            hosts: if r.chance(1, 4) { 5 } else { 3 },
            groups: r.range(2, 4),
            duration_ms: 6_000,
            clients: 6,
            keys: 3,
            snapshot_entries: r.range(8, 40),
            faults: true,
            membership: true,
        }
    }
}

/// What an operation asked for (the shape of `drakkar_check::history::OpKind`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistKind {
    /// A linearizable read.
    Read,
    /// An unconditional write of a unique value.
    Write(Vec<u8>),
    /// A compare-and-swap: `expected` (`None`: absent) to `new`.
    Cas(Option<Vec<u8>>, Vec<u8>),
}

/// How an operation ended (the shape of `drakkar_check::history::Outcome`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistOutcome {
    /// A read returned this value (`None`: absent).
    Read(Option<Vec<u8>>),
    /// A write was applied.
    Written,
    /// A compare-and-swap answered: swapped or not.
    Cas(bool),
    /// Certainly not applied (refused before entering the log).
    Fail,
    /// May or may not be applied, at any time after the invocation.
    Unknown,
}

/// One operation of the recorded history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistOp {
    /// The client.
    pub process: u64,
    /// The key, prefixed with its group (`g<group>/<key>`): keys of different groups are different
    /// registers.
    pub key: Vec<u8>,
    /// What it asked for.
    pub kind: HistKind,
    /// Invocation, in virtual nanoseconds.
    pub invoke: u64,
    /// Completion (`None` for unknown outcomes).
    pub complete: Option<u64>,
    /// How it ended.
    pub outcome: HistOutcome,
}

/// One key of a group's final state: key, value, version.
pub type FinalKey = (Vec<u8>, Vec<u8>, u64);

/// Counts of what a run did.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    /// Operations acknowledged.
    pub ok: u64,
    /// Operations refused (never entered the log).
    pub failed: u64,
    /// Operations with an unknown outcome (timeout, crash).
    pub unknown: u64,
    /// Session proposals answered.
    pub session_series: u64,
    /// Session proposal attempts beyond the first of their series.
    pub session_retries: u64,
    /// NodeHost crashes.
    pub crashes: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Snapshots requested on demand and taken.
    pub snapshots: u64,
    /// Membership changes applied (additions and removals of spare replicas).
    pub membership_changes: u64,
    /// Leadership transfers requested (and accepted by the leader).
    pub transfers: u64,
    /// Virtual milliseconds simulated (workload and settling).
    pub virtual_ms: u64,
    /// What the network did.
    pub net: NetStats,
}

/// A completed run: its history (to check for linearizability) and counters.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// The configuration.
    pub config: SimConfig,
    /// Every operation on the contended and write-once keys, in invocation order.
    pub history: Vec<HistOp>,
    /// What happened.
    pub stats: SimStats,
    /// The final state of every group (identical on every replica), for [`SimReport::fingerprint`].
    pub final_state: Vec<(u64, Vec<FinalKey>)>,
}

impl SimReport {
    /// A digest of the history and the final state: the same seed must give the same fingerprint.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // DefaultHasher::new() uses fixed keys: stable within one build.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for op in &self.history {
            (op.process, &op.key, op.invoke, op.complete, format!("{:?}{:?}", op.kind, op.outcome))
                .hash(&mut h);
        }
        self.final_state.hash(&mut h);
        h.finish()
    }
}

/// A run that broke an invariant (or could not run).
#[derive(Clone, Debug)]
pub struct SimFailure {
    /// The seed that replays it.
    pub seed: u64,
    /// Virtual time of the failure, in milliseconds.
    pub at_ms: u64,
    /// What went wrong.
    pub message: String,
    /// The history up to the failure.
    pub history: Vec<HistOp>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {} at {} ms (virtual): {}", self.seed, self.at_ms, self.message)
    }
}

impl std::error::Error for SimFailure {}

/// Runs the schedule of `seed` with `config`, keeping the NodeHosts' snapshots and identity files under
/// `dir` (an empty directory; the log stores are in memory).
pub fn run(seed: u64, config: &SimConfig, dir: &Path) -> Result<SimReport, SimFailure> {
    let mut w = workload::Sim::new(seed, config.clone(), dir)?;
    w.run()
}
