//! The part of the log not yet known to be durable: recently appended entries and an incoming snapshot.

use crate::types::{Entry, LogIndex, Snapshot, Term};

/// Entries and a snapshot that the caller has not yet reported durable.
///
/// Invariants: `entries[i].index == offset + i`; if `snapshot` is set, `offset == snapshot.index + 1`;
/// entries below `offset_in_progress` (and the snapshot, if `snapshot_in_progress`) were handed to the
/// caller for persisting and must not be handed out again.
#[derive(Clone, Debug, Default)]
pub struct Unstable {
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) offset: LogIndex,
    pub(crate) offset_in_progress: LogIndex,
    pub(crate) snapshot_in_progress: bool,
}

impl Unstable {
    /// An empty unstable log whose next entry would be `offset`.
    pub fn new(offset: LogIndex) -> Self {
        Unstable { offset, offset_in_progress: offset, ..Default::default() }
    }

    /// The first index, if a snapshot is pending.
    pub fn maybe_first_index(&self) -> Option<LogIndex> {
        self.snapshot.as_ref().map(|s| s.meta.index.next())
    }

    /// The last index, if there are unstable entries or a snapshot.
    pub fn maybe_last_index(&self) -> Option<LogIndex> {
        match self.entries.last() {
            Some(e) => Some(e.index),
            None => self.snapshot.as_ref().map(|s| s.meta.index),
        }
    }

    /// The term at `i`, if this part of the log knows it.
    pub fn maybe_term(&self, i: LogIndex) -> Option<Term> {
        if i < self.offset {
            return self.snapshot.as_ref().filter(|s| s.meta.index == i).map(|s| s.meta.term);
        }
        self.entries.get((i.0 - self.offset.0) as usize).map(|e| e.term)
    }

    /// Entries not yet handed out for persisting.
    pub fn next_entries(&self) -> &[Entry] {
        let start = (self.offset_in_progress.0 - self.offset.0) as usize;
        self.entries.get(start..).unwrap_or(&[])
    }

    /// The snapshot, if not yet handed out for persisting.
    pub fn next_snapshot(&self) -> Option<&Snapshot> {
        if self.snapshot_in_progress { None } else { self.snapshot.as_ref() }
    }

    /// Marks everything currently here as handed out.
    pub fn accept_in_progress(&mut self) {
        if let Some(last) = self.entries.last() {
            self.offset_in_progress = last.index.next();
        }
        if self.snapshot.is_some() {
            self.snapshot_in_progress = true;
        }
    }

    /// Entries up to `i` (of term `t`) are durable: drop them. Ignored if the entry at `i` changed since.
    pub fn stable_to(&mut self, i: LogIndex, t: Term) {
        if self.maybe_term(i) != Some(t) || i < self.offset {
            return;
        }
        let n = (i.0 + 1 - self.offset.0) as usize;
        self.entries.drain(..n);
        self.offset = i.next();
        self.offset_in_progress = self.offset_in_progress.max(self.offset);
    }

    /// The snapshot at `i` is durable: drop it.
    pub fn stable_snap_to(&mut self, i: LogIndex) {
        if self.snapshot.as_ref().is_some_and(|s| s.meta.index == i) {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
    }

    /// Replaces everything with an incoming snapshot.
    pub fn restore(&mut self, snap: Snapshot) {
        self.offset = snap.meta.index.next();
        self.offset_in_progress = self.offset;
        self.entries.clear();
        self.snapshot = Some(snap);
        self.snapshot_in_progress = false;
    }

    /// Appends `ents`, first dropping any entries at or after the first new index.
    pub fn truncate_and_append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        let from = first.index;
        let end = LogIndex(self.offset.0 + self.entries.len() as u64);
        if from == end {
            // Plain append.
        } else if from <= self.offset {
            // Replaces all unstable entries: everything new must be persisted again.
            self.offset = from;
            self.offset_in_progress = from;
            self.entries.clear();
        } else {
            self.entries.truncate((from.0 - self.offset.0) as usize);
            self.offset_in_progress = self.offset_in_progress.min(from);
        }
        self.entries.extend_from_slice(ents);
    }

    /// Entries in `[lo, hi)`, which must lie within the unstable entries.
    pub fn slice(&self, lo: LogIndex, hi: LogIndex) -> &[Entry] {
        let a = (lo.0 - self.offset.0) as usize;
        let b = (hi.0 - self.offset.0) as usize;
        &self.entries[a..b]
    }
}
