//! The read-only view of durable state the core needs, and an in-memory implementation.
//!
//! The core never writes storage. Its caller persists what [`crate::Ready`] hands out (entries, hard state,
//! snapshots) and compacts the log; the core reads back through this trait.

use crate::types::{Entry, HardState, LogIndex, Membership, Snapshot, SnapshotMeta, Term};

/// Why storage could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The requested index is below the first available index: it was compacted into a snapshot.
    #[error("log compacted: requested index is below the first available index")]
    Compacted,
    /// The requested index is beyond the last stored index.
    #[error("requested index is beyond the last stored entry")]
    Unavailable,
    /// No snapshot can be produced right now; the core retries later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// Any other failure (I/O, corruption). The core refuses to make progress on it.
    #[error("storage failure: {0}")]
    Other(String),
}

/// The state a replica restarts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The membership as of the latest persisted snapshot or applied configuration.
    pub membership: Membership,
}

/// Durable log state of one replica, read by the core.
///
/// Invariants the implementation keeps: entries are contiguous from `first_index` to `last_index`;
/// `term(first_index - 1)` answers the snapshot's term (the entry just before the log is the snapshot).
pub trait Storage {
    /// Hard state and membership at startup.
    fn initial_state(&self) -> Result<InitialState, StorageError>;
    /// Entries in `[low, high)`, stopping early (but always returning at least one entry) once their total
    /// size passes `max_size`.
    fn entries(&self, low: LogIndex, high: LogIndex, max_size: u64) -> Result<Vec<Entry>, StorageError>;
    /// The term of the entry at `index`, for `first_index - 1 ..= last_index`.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;
    /// The first index still in the log (snapshot index + 1).
    fn first_index(&self) -> Result<LogIndex, StorageError>;
    /// The last index in the log (the snapshot index when the log is empty).
    fn last_index(&self) -> Result<LogIndex, StorageError>;
    /// The latest snapshot, to send to a follower that needs entries no longer in the log.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// An in-memory [`Storage`], for tests and examples. The caller mutates it as a real store would.
///
/// Invariants: `entries[i].index == base.0 + 1 + i`, where `base` is the (index, term) of the entry just
/// before the log; `base.0 <= snapshot.meta.index` (the log is only compacted up to a snapshot, so every
/// compacted entry is covered by one).
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    membership: Membership,
    base: (LogIndex, Term),
    entries: Vec<Entry>,
}

impl MemStorage {
    /// Storage of a founding member of a new group: the bootstrap entries (see
    /// [`crate::bootstrap_entries`]) are stored and committed.
    pub fn bootstrap(membership: Membership) -> Self {
        let entries = crate::types::bootstrap_entries(&membership);
        let commit = LogIndex(entries.len() as u64);
        let term = if entries.is_empty() { Term(0) } else { Term(1) };
        MemStorage {
            hard_state: HardState { term, vote: None, commit },
            membership,
            entries,
            ..Default::default()
        }
    }

    /// Empty storage for a replica that joins an existing group: it learns everything from the leader.
    pub fn new_joining() -> Self {
        MemStorage::default()
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Replaces the hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Appends entries, truncating any conflicting suffix. Entries at or below the base are ignored.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first_new) = entries.first() else { return Ok(()) };
        let first = self.base.0.0 + 1;
        let next = first + self.entries.len() as u64;
        if first_new.index.0 > next {
            return Err(StorageError::Other(format!(
                "append at {} leaves a gap after last index {}",
                first_new.index.0,
                next - 1
            )));
        }
        let skip = first.saturating_sub(first_new.index.0) as usize;
        let entries = entries.get(skip..).unwrap_or(&[]);
        let Some(e0) = entries.first() else { return Ok(()) };
        self.entries.truncate((e0.index.0 - first) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Installs a snapshot received from the leader: the log restarts after it (a matching suffix is kept).
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<(), StorageError> {
        if snap.meta.index <= self.snapshot.meta.index {
            return Err(StorageError::Other("snapshot is older than the current one".into()));
        }
        let i = snap.meta.index;
        if self.term(i).ok() == Some(snap.meta.term) {
            let drop = (i.0 - self.base.0.0) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
        } else {
            self.entries.clear();
        }
        self.base = (i, snap.meta.term);
        self.membership = snap.meta.membership.clone();
        if self.hard_state.commit < i {
            self.hard_state.commit = i;
        }
        if self.hard_state.term < snap.meta.term {
            self.hard_state.term = snap.meta.term;
        }
        self.snapshot = snap;
        Ok(())
    }

    /// Records a snapshot of the state machine taken at applied index `index` (the log is not compacted:
    /// call [`MemStorage::compact`] for that).
    pub fn create_snapshot(
        &mut self,
        index: LogIndex,
        membership: Membership,
        data: bytes::Bytes,
    ) -> Result<(), StorageError> {
        if index <= self.snapshot.meta.index {
            return Err(StorageError::Other("snapshot is not newer than the current one".into()));
        }
        let term = self.term(index)?;
        // A restart resumes from the snapshot: its membership is the one as of the snapshot index.
        self.membership = membership.clone();
        self.snapshot = Snapshot { meta: SnapshotMeta { index, term, membership }, data };
        Ok(())
    }

    /// Drops entries up to and including `index`, which must be covered by the latest snapshot.
    pub fn compact(&mut self, index: LogIndex) -> Result<(), StorageError> {
        if index <= self.base.0 {
            return Err(StorageError::Compacted);
        }
        if index > self.snapshot.meta.index {
            return Err(StorageError::Other(format!(
                "cannot compact to {index}: the latest snapshot is at {}",
                self.snapshot.meta.index
            )));
        }
        let term = self.term(index)?;
        let drop = (index.0 - self.base.0.0) as usize;
        self.entries.drain(..drop);
        self.base = (index, term);
        Ok(())
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState { hard_state: self.hard_state, membership: self.membership.clone() })
    }

    fn entries(&self, low: LogIndex, high: LogIndex, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        let base = self.base.0.0;
        if low.0 <= base {
            return Err(StorageError::Compacted);
        }
        if high.0 > base + 1 + self.entries.len() as u64 || low > high {
            return Err(StorageError::Unavailable);
        }
        let slice = &self.entries[(low.0 - base - 1) as usize..(high.0 - base - 1) as usize];
        Ok(crate::log::limit_size(slice.to_vec(), max_size))
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let (base, base_term) = self.base;
        if index == base {
            return Ok(base_term);
        }
        if index < base {
            return Err(StorageError::Compacted);
        }
        self.entries.get((index.0 - base.0 - 1) as usize).map(|e| e.term).ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.base.0.next())
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(LogIndex(self.base.0.0 + self.entries.len() as u64))
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}
