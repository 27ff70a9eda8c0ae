//! Configuration of one replica's Raft core.

use crate::types::{LogIndex, ReplicaId};

/// How read-only queries are confirmed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadOnlyOption {
    /// ReadIndex: the leader confirms it is still leader with a heartbeat round before answering. Safe under
    /// any clock behaviour.
    #[default]
    Safe,
    /// Lease-based: the leader answers from its lease (it heard from a quorum within the election timeout)
    /// without a heartbeat round. Faster, but only correct if clocks drift by less than the lease margin.
    /// Requires `check_quorum`.
    LeaseBased,
}

/// The configuration of one replica.
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica's id (non-zero).
    pub id: ReplicaId,
    /// Ticks without hearing from a leader before a follower campaigns. The actual timeout is drawn
    /// uniformly from `[election_tick, 2 * election_tick)`.
    pub election_tick: u32,
    /// Ticks between leader heartbeats. Must be less than `election_tick`.
    pub heartbeat_tick: u32,
    /// Seed of the replica's deterministic random source (election timeouts).
    pub seed: u64,
    /// The index the state machine has applied (restart point). Committed entries above it are handed out.
    pub applied: LogIndex,
    /// Maximum bytes of entries in one append message (at least one entry is always sent).
    pub max_size_per_msg: u64,
    /// Maximum bytes of committed entries handed out by one `ready()`.
    pub max_committed_size_per_ready: u64,
    /// No more committed entries are handed out while this many bytes of them are handed out but not yet
    /// reported applied: a slow state machine holds the log back instead of the caller's apply queue
    /// growing without bound. 0 disables the limit.
    pub max_applying_bytes: u64,
    /// Maximum number of append messages in flight to one follower in replicate state.
    pub max_inflight_msgs: usize,
    /// A leader steps down when it has not heard from a quorum for an election timeout; followers that
    /// heard from a leader recently ignore vote requests.
    pub check_quorum: bool,
    /// Run a pre-election before incrementing the term, so a partitioned replica cannot disrupt the group.
    pub pre_vote: bool,
    /// How reads are confirmed.
    pub read_only_option: ReadOnlyOption,
    /// Proposals are refused with `ProposalError::RateLimited` while the bytes of entries in the log that
    /// are not yet applied exceed this. 0 disables the limit.
    pub max_in_mem_log_size: u64,
    /// A leader whose group saw no proposals, reads or membership changes for this many ticks tells its
    /// followers to quiesce: no heartbeats, no elections, until any message or proposal arrives. 0 disables.
    pub quiesce_ticks: u32,
}

impl Config {
    /// A configuration with the defaults used by Drakkar nodes.
    pub fn new(id: ReplicaId) -> Self {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            seed: id.0,
            applied: LogIndex(0),
            max_size_per_msg: 1 << 20,
            max_committed_size_per_ready: 8 << 20,
            max_applying_bytes: 64 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            max_in_mem_log_size: 0,
            quiesce_ticks: 0,
        }
    }

    /// Checks the configuration for values the core cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.0 == 0 {
            return Err(ConfigError("replica id must be non-zero".into()));
        }
        if self.heartbeat_tick == 0 {
            return Err(ConfigError("heartbeat_tick must be at least 1".into()));
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(ConfigError("election_tick must be greater than heartbeat_tick".into()));
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError("max_inflight_msgs must be at least 1".into()));
        }
        if self.read_only_option == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return Err(ConfigError("lease-based reads require check_quorum".into()));
        }
        if self.quiesce_ticks != 0 && self.quiesce_ticks <= self.election_tick {
            return Err(ConfigError("quiesce_ticks must exceed election_tick".into()));
        }
        Ok(())
    }
}

/// An invalid [`Config`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft config: {0}")]
pub struct ConfigError(pub String);
