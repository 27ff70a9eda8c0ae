//! The state machine contracts: Dragonboat's three kinds.
//!
//! Common rules for every kind:
//! - `update` must be deterministic: the same entries applied to the same state give the same state and
//!   results on every replica. No clocks, randomness, environment or I/O whose outcome can differ between
//!   replicas may influence it.
//! - `update` receives entries in log order, in batches, never concurrently with another `update`. It sets
//!   each entry's `result`; the proposer receives that result.
//! - Buffers: the engine owns `entries` and their `cmd` bytes; a state machine that keeps a command beyond
//!   the call clones the `Bytes` (cheap, reference counted).
//! - Errors: an `Err` from `update`, `recover_from_snapshot` or `open` is fatal for the replica (it is
//!   stopped: continuing would let replicas diverge). An `Err` from `lookup` is returned to that reader
//!   only. Snapshot save errors fail that snapshot only.
//! - Long calls (`open`, `save_snapshot`, `recover_from_snapshot`) get a [`Stop`]: once it is set the
//!   replica or its NodeHost is stopping, and the call may give up with [`SmError::Stopped`] (Dragonboat's
//!   `stopc`).

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use drakkar_raft::LogIndex;

/// The result of applying one entry, returned to its proposer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmResult {
    /// A small value (Dragonboat's `Result.Value`), e.g. a count or a status code.
    pub value: u64,
    /// Arbitrary result bytes.
    pub data: Bytes,
}

/// One committed command handed to `update`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmEntry {
    /// The log index of the command.
    pub index: LogIndex,
    /// The command, as proposed.
    pub cmd: Bytes,
    /// Set by `update`.
    pub result: SmResult,
}

/// A stop request handed to a state machine's long calls: set when its replica or NodeHost is stopping.
/// [`Stop::default`] is never set (for calls made outside a replica, such as a scratch recovery).
#[derive(Clone, Debug, Default)]
pub struct Stop {
    /// Set by the replica's stop, and by the NodeHost's (either stops the call).
    flags: Vec<Arc<AtomicBool>>,
}

impl Stop {
    /// Whether the call should give up (with [`SmError::Stopped`]).
    pub fn is_set(&self) -> bool {
        self.flags.iter().any(|f| f.load(Ordering::Acquire))
    }

    /// A stop of its own that `self` also sets.
    pub(crate) fn child(&self) -> Stop {
        let mut flags = self.flags.clone();
        flags.push(Arc::new(AtomicBool::new(false)));
        Stop { flags }
    }

    /// Sets this stop's own flag (a child's: not its parent's). The engine sets a replica's when it stops;
    /// tests of a state machine set one to see its long calls give up.
    pub fn set(&self) {
        if let Some(f) = self.flags.last() {
            f.store(true, Ordering::Release);
        }
    }

    /// A stop with a flag of its own, not set.
    pub fn new() -> Stop {
        Stop::default().child()
    }
}

/// A state machine failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmError {
    /// A query or command the state machine does not understand. Returned to the caller of `lookup`.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// An I/O failure (on-disk state machines, snapshot streams).
    #[error("state machine I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The call gave up because its [`Stop`] was set.
    #[error("stopped: the replica is stopping")]
    Stopped,
    /// Any other failure.
    #[error("state machine failure: {0}")]
    Other(String),
}

/// An in-memory state machine (Dragonboat's `IStateMachine`): all state in memory, rebuilt after a restart
/// from the latest snapshot plus the log. Lookups are never concurrent with updates (the engine holds a
/// reader-writer lock around it).
pub trait StateMachine: Send + Sync + 'static {
    /// Applies committed entries in order, setting each result.
    fn update(&mut self, entries: &mut [SmEntry]) -> Result<(), SmError>;
    /// Answers a read-only query.
    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError>;
    /// Writes the complete state.
    fn save_snapshot(&self, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError>;
    /// Replaces the state with one written by `save_snapshot`.
    fn recover_from_snapshot(&mut self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError>;
}

/// An in-memory state machine whose lookups and snapshot saving run concurrently with updates (Dragonboat's
/// `IConcurrentStateMachine`). `update` and `prepare_snapshot` are never called concurrently with each
/// other; `lookup` and `save_snapshot` may run at any time.
pub trait ConcurrentStateMachine: Send + Sync + 'static {
    /// Applies committed entries in order, setting each result.
    fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError>;
    /// Answers a read-only query, concurrently with updates.
    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError>;
    /// A point-in-time view of the state, from `prepare_snapshot` to `save_snapshot`.
    type Snapshot: Send + 'static;
    /// Captures a point-in-time view of the state (cheaply: e.g. a persistent-map clone), between updates.
    fn prepare_snapshot(&self) -> Result<Self::Snapshot, SmError>;
    /// Writes the view captured by `prepare_snapshot`, concurrently with updates.
    fn save_snapshot(&self, prepared: Self::Snapshot, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError>;
    /// Replaces the state with one written by `save_snapshot`.
    fn recover_from_snapshot(&self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError>;
}

/// A state machine that owns its persistence (Dragonboat's `IOnDiskStateMachine`). Its state survives
/// restarts; `open` tells the engine where to resume, and a restart reads no snapshot back unless the
/// snapshot is ahead of that index. A follower that needs the state gets the full stream from
/// `save_snapshot`. Unlike Dragonboat's, the snapshots taken for log compaction are not metadata-only
/// yet: each holds the `save_snapshot` stream too.
pub trait OnDiskStateMachine: Send + Sync + 'static {
    /// Opens the state and returns the index of the last entry applied (0 when new).
    fn open(&self, stop: &Stop) -> Result<LogIndex, SmError>;
    /// Applies committed entries in order, setting each result. Must record the index of the last entry
    /// atomically with its effects.
    fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError>;
    /// Answers a read-only query, concurrently with updates.
    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError>;
    /// Makes every applied update durable.
    fn sync(&self) -> Result<(), SmError>;
    /// A consistent view, from `prepare_snapshot` to `save_snapshot`.
    type Snapshot: Send + 'static;
    /// Captures a consistent view to stream, between updates.
    fn prepare_snapshot(&self) -> Result<Self::Snapshot, SmError>;
    /// Streams the view captured by `prepare_snapshot`, concurrently with updates.
    fn save_snapshot(&self, prepared: Self::Snapshot, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError>;
    /// Replaces the whole state with a stream written by `save_snapshot` (and records its index).
    fn recover_from_snapshot(&self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError>;
    /// The result `update` set for the entry at `index`, if the state machine keeps it durably with the
    /// entry's effects. After a restart the engine does not apply entries at or below the index `open`
    /// returned; for those proposed in a client session it asks here for the result to return to a retry
    /// of the proposal. `None` (the default: nothing kept): the retry is answered with an empty result,
    /// as Dragonboat does. Keeping results of the entries since the latest snapshot is enough.
    fn result_of(&self, index: LogIndex) -> Result<Option<SmResult>, SmError> {
        let _ = index;
        Ok(None)
    }
}
