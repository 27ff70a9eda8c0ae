//! NodeHost and per-group configuration.

use std::path::PathBuf;
use std::time::Duration;

/// Configuration of one NodeHost (one process, many groups).
#[derive(Clone)]
pub struct NodeHostConfig {
    /// Where the log, snapshots and the identity file live.
    pub data_dir: PathBuf,
    /// This NodeHost's address, as peers reach it (a stable DNS name and port in Kubernetes).
    pub address: String,
    /// Step workers (each owns a partition of the groups). Default: the number of cores.
    pub workers: usize,
    /// Apply workers. Default: the number of cores.
    pub apply_workers: usize,
    /// Length of one Raft tick.
    pub tick_interval: Duration,
    /// Capacity of each worker's input queue; past it, proposals get `Busy` and peer messages are dropped
    /// (Raft retransmits).
    pub queue_capacity: usize,
    /// Bytes of recent log entries the log store keeps in memory.
    pub log_cache_bytes: u64,
    /// Log segment size.
    pub log_segment_bytes: u64,
    /// The filesystem the log store uses (tests inject `drakkar_logdb::fs::MemFs` to simulate crashes that
    /// lose unsynced bytes). `None`: the real one.
    pub log_fs: Option<std::sync::Arc<dyn drakkar_logdb::fs::FileSystem>>,
    /// Deterministic mode, with its seed. The NodeHost then spawns no thread at all (no step, apply, ticker
    /// or snapshot threads): the caller drives it through a [`crate::Driver`] (`tick`, `run_until_idle`),
    /// which runs exactly the workers' code, and every random choice
    /// (incarnation id, proposal keys, Raft election timers, session client ids) derives from the seed.
    /// With the same inputs in the same order, a deterministic NodeHost does the same thing: the simulator
    /// (`drakkar-sim`) relies on it. Give each NodeHost (and each restart) its own seed. `None`: the
    /// threaded engine.
    pub deterministic: Option<u64>,
    /// How long a request waits for a group without a known leader to elect one before it fails with
    /// [`crate::NodeError::NoLeader`] (None: as long as the request's timeout). A server sets it to about
    /// an election timeout so its clients move to another node quickly.
    pub no_leader_wait: Option<Duration>,
}

impl NodeHostConfig {
    /// Defaults for a NodeHost at `address` storing under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, address: impl Into<String>) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        NodeHostConfig {
            data_dir: data_dir.into(),
            address: address.into(),
            workers: cores,
            apply_workers: cores,
            tick_interval: Duration::from_millis(20),
            queue_capacity: 65_536,
            log_cache_bytes: 64 << 20,
            log_segment_bytes: 64 << 20,
            log_fs: None,
            deterministic: None,
            no_leader_wait: None,
        }
    }
}

/// Configuration of one replica of one group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// Ticks before a follower without a leader campaigns (randomised up to twice this).
    pub election_ticks: u32,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: u32,
    /// CheckQuorum: a leader that has not heard from a quorum within an election timeout steps down.
    pub check_quorum: bool,
    /// PreVote: a candidate first asks whether it could win, so a partitioned replica rejoining does not
    /// disrupt the leader with a higher term.
    pub pre_vote: bool,
    /// Take a snapshot every this many applied entries (0: only on request).
    pub snapshot_entries: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers need no snapshot.
    pub compaction_overhead: u64,
    /// Refuse proposals while this many bytes of the log are unapplied (0: no limit).
    pub max_in_mem_log_size: u64,
    /// Quiesce after this many idle ticks (0: never).
    pub quiesce_ticks: u32,
    /// Log entries without use after which a client session registered through this replica expires
    /// (the value travels in the registration entry, so every replica expires it alike).
    pub session_ttl_entries: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            election_ticks: 10,
            heartbeat_ticks: 1,
            check_quorum: true,
            pre_vote: true,
            snapshot_entries: 10_000,
            compaction_overhead: 1_000,
            max_in_mem_log_size: 256 << 20,
            quiesce_ticks: 0,
            session_ttl_entries: 1_000_000,
        }
    }
}
