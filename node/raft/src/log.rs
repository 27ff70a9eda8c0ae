//! The replicated log as the core sees it: durable storage plus the unstable tail.

use crate::storage::{Storage, StorageError};
use crate::types::{Entry, LogIndex, Snapshot, Term};
use crate::unstable::Unstable;

/// Truncates `ents` so their total size stays within `max` bytes, always keeping the first entry.
pub fn limit_size(mut ents: Vec<Entry>, max: u64) -> Vec<Entry> {
    let mut size = 0;
    let mut keep = 0;
    for e in &ents {
        size += e.size();
        if keep > 0 && size > max {
            break;
        }
        keep += 1;
    }
    ents.truncate(keep);
    ents
}

/// The log of one replica.
///
/// Invariants: `applied <= handed_out <= committed <= last_index()`; `persisted <= last_index()`;
/// entries at or below `committed` never change.
pub struct RaftLog<S> {
    pub(crate) storage: S,
    pub(crate) unstable: Unstable,
    /// Highest index known committed.
    pub(crate) committed: LogIndex,
    /// Highest index the caller reported durable (entries at or below it are in `storage`).
    pub(crate) persisted: LogIndex,
    /// Highest index handed out in `committed_entries` (being applied).
    pub(crate) handed_out: LogIndex,
    /// Highest index the caller reported applied.
    pub(crate) applied: LogIndex,
}

impl<S: Storage> RaftLog<S> {
    /// A log over `storage`, with everything in storage considered durable.
    pub fn new(storage: S) -> Result<Self, StorageError> {
        let first = storage.first_index()?;
        let last = storage.last_index()?;
        Ok(RaftLog {
            storage,
            unstable: Unstable::new(last.next()),
            committed: first.prev(),
            persisted: last,
            handed_out: first.prev(),
            applied: first.prev(),
        })
    }

    /// The first index still available (after the latest snapshot).
    pub fn first_index(&self) -> LogIndex {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self.storage.first_index().unwrap_or_default(),
        }
    }

    /// The last index in the log.
    pub fn last_index(&self) -> LogIndex {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self.storage.last_index().unwrap_or_default(),
        }
    }

    /// The term of the entry at `i`; `first_index - 1` (the snapshot) is answered too.
    pub fn term(&self, i: LogIndex) -> Result<Term, StorageError> {
        let dummy = self.first_index().prev();
        if i < dummy {
            return Err(StorageError::Compacted);
        }
        if i > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        if let Some(t) = self.unstable.maybe_term(i) {
            return Ok(t);
        }
        self.storage.term(i)
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or_default()
    }

    /// True if the entry at `i` has term `t`.
    pub fn match_term(&self, i: LogIndex, t: Term) -> bool {
        self.term(i).is_ok_and(|x| x == t)
    }

    /// True if a log ending at (`last_index`, `last_term`) is at least as up to date as this one.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends `ents` after a successful consistency check at (`index`, `log_term`) and advances the
    /// commit index to min(`committed`, last new index). Returns the last new index, `Ok(None)` if the check
    /// fails, and an error if the append would rewrite committed entries (a broken leader).
    pub fn maybe_append(
        &mut self,
        index: LogIndex,
        log_term: Term,
        committed: LogIndex,
        ents: &[Entry],
    ) -> Result<Option<LogIndex>, LogError> {
        if !self.match_term(index, log_term) {
            return Ok(None);
        }
        let last_new = LogIndex(index.0 + ents.len() as u64);
        if let Some(ci) = self.find_conflict(ents) {
            if ci <= self.committed {
                return Err(LogError::ConflictWithCommitted(ci));
            }
            let start = (ci.0 - index.0 - 1) as usize;
            self.append(&ents[start..]);
        }
        self.commit_to(committed.min(last_new))?;
        Ok(Some(last_new))
    }

    /// Appends entries to the tail (truncating a conflicting suffix). Returns the new last index.
    pub fn append(&mut self, ents: &[Entry]) -> LogIndex {
        if let Some(first) = ents.first() {
            if first.index <= self.persisted {
                self.persisted = first.index.prev();
            }
            self.unstable.truncate_and_append(ents);
        }
        self.last_index()
    }

    /// The first entry of `ents` that is new or conflicts with the log, if any.
    fn find_conflict(&self, ents: &[Entry]) -> Option<LogIndex> {
        ents.iter().find(|e| !self.match_term(e.index, e.term)).map(|e| e.index)
    }

    /// The largest index at or below `index` whose term is at most `term` (fast rejection hints).
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term && i.0 > 0 => i = i.prev(),
                Ok(t) => return (i, t),
                Err(_) => return (i, Term(0)),
            }
        }
    }

    /// Raises the commit index to `to`. Errors if `to` is past the last entry (a broken peer).
    pub fn commit_to(&mut self, to: LogIndex) -> Result<(), LogError> {
        if to > self.committed {
            if to > self.last_index() {
                return Err(LogError::CommitBeyondLast { commit: to, last: self.last_index() });
            }
            self.committed = to;
        }
        Ok(())
    }

    /// Commits up to `max` if the entry there is of `term` (the leader only counts entries of its term).
    pub fn maybe_commit(&mut self, max: LogIndex, term: Term) -> bool {
        if max > self.committed && self.term(max).is_ok_and(|t| t == term) {
            self.committed = max;
            return true;
        }
        false
    }

    /// Entries in `[lo, last]`, at most `max_size` bytes (at least one).
    pub fn entries(&self, lo: LogIndex, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        if lo > self.last_index() {
            return Ok(Vec::new());
        }
        self.slice(lo, self.last_index().next(), max_size)
    }

    /// Entries in `[lo, hi)`, at most `max_size` bytes (at least one).
    pub fn slice(&self, lo: LogIndex, hi: LogIndex, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index().next() {
            return Err(StorageError::Unavailable);
        }
        if lo >= hi {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let uoff = self.unstable.offset;
        if lo < uoff {
            let stored = self.storage.entries(lo, hi.min(uoff), max_size)?;
            let expected = hi.min(uoff).0 - lo.0;
            let short = (stored.len() as u64) < expected;
            out = stored;
            if short {
                return Ok(out);
            }
        }
        if hi > uoff {
            out.extend_from_slice(self.unstable.slice(lo.max(uoff), hi));
        }
        Ok(limit_size(out, max_size))
    }

    /// Committed entries not yet handed out, limited to what is durable locally and to `max_size`.
    pub fn next_committed_entries(&self, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        let lo = self.handed_out.max(self.first_index().prev()).next();
        let hi = self.committed.min(self.persisted).next();
        if lo >= hi {
            return Ok(Vec::new());
        }
        self.slice(lo, hi, max_size)
    }

    /// True if `next_committed_entries` would return something.
    pub fn has_next_committed_entries(&self) -> bool {
        let lo = self.handed_out.max(self.first_index().prev()).next();
        lo <= self.committed.min(self.persisted)
    }

    /// Entries up to (`i`, `t`) are durable.
    pub fn stable_to(&mut self, i: LogIndex, t: Term) {
        if i > self.persisted && self.match_term(i, t) {
            self.persisted = i;
        }
        self.unstable.stable_to(i, t);
    }

    /// The snapshot at `i` is durable.
    pub fn stable_snap_to(&mut self, i: LogIndex) {
        self.unstable.stable_snap_to(i);
    }

    /// Installs an incoming snapshot: the log restarts after it.
    pub fn restore(&mut self, snap: Snapshot) {
        let i = snap.meta.index;
        self.committed = i;
        self.persisted = i;
        self.handed_out = i;
        self.applied = i;
        self.unstable.restore(snap);
    }

    /// The latest snapshot: a pending incoming one, or storage's.
    pub fn snapshot(&self) -> Result<Snapshot, StorageError> {
        match &self.unstable.snapshot {
            Some(s) => Ok(s.clone()),
            None => self.storage.snapshot(),
        }
    }
}

/// A log operation a correct peer would never ask for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An append conflicts with an entry already committed.
    #[error("append conflicts with committed entry at {0}")]
    ConflictWithCommitted(LogIndex),
    /// A commit index past the end of the log.
    #[error("commit index {commit} is beyond the last index {last}")]
    CommitBeyondLast {
        /// The requested commit index.
        commit: LogIndex,
        /// The last index in the log.
        last: LogIndex,
    },
}
