//! The in-memory state of one group: hard state, membership, snapshot, log base, and where each entry of
//! the log lies on disk (term and file position), so that no read ever scans.

use std::collections::VecDeque;

use drakkar_raft::{HardState, LogIndex, Membership, Snapshot, Term};

/// Where one entry is stored: its term (answers `term()` without I/O), the segment and offset of its
/// encoded bytes, their length, and their CRC-32C (checked on every read from disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub term: u64,
    pub seg: u32,
    pub off: u32,
    pub len: u32,
    pub crc: u32,
}

/// One group's durable state as of the last successful write.
///
/// Invariants: `base.0 <= hole_end`; entry `hole_end + 1 + k` is at `locs[k]`; `hole_end == base.0` once
/// recovery is complete (entries in `(base, hole_end]` are only unknown while replaying a log whose oldest
/// segments were purged: a later compaction must cover them, or a segment is missing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupState {
    pub hard_state: HardState,
    pub membership: Membership,
    pub snapshot: Snapshot,
    /// Index and term of the entry just before the log.
    pub base: (LogIndex, Term),
    pub hole_end: LogIndex,
    pub locs: VecDeque<Loc>,
}

/// A state change that contradicts the state it applies to (only possible with a damaged log).
pub(crate) type Inconsistent = String;

impl GroupState {
    /// The last index of the log (the base when it is empty).
    pub fn last(&self) -> LogIndex {
        LogIndex(self.hole_end.0 + self.locs.len() as u64)
    }

    /// The location of entry `i`, if it is in the log and known.
    pub fn loc(&self, i: LogIndex) -> Option<&Loc> {
        let k = i.0.checked_sub(self.hole_end.0 + 1)?;
        self.locs.get(usize::try_from(k).ok()?)
    }

    /// The term of entry `i` for `base < i <= last`, if known.
    pub fn term_at(&self, i: LogIndex) -> Option<Term> {
        self.loc(i).map(|l| Term(l.term))
    }

    /// Appends entries starting at `first`, replacing the suffix from `first` on.
    pub fn append(
        &mut self,
        first: LogIndex,
        locs: impl IntoIterator<Item = Loc>,
    ) -> Result<(), Inconsistent> {
        if first <= self.base.0 || first > self.last().next() {
            return Err(format!(
                "append at {first} outside ({}, {}] of the log",
                self.base.0,
                self.last().next()
            ));
        }
        if first.0 - 1 < self.hole_end.0 {
            self.hole_end = first.prev();
            self.locs.clear();
        } else {
            let keep = (first.0 - 1 - self.hole_end.0) as usize;
            self.locs.truncate(keep);
        }
        self.locs.extend(locs);
        Ok(())
    }

    /// Drops entries up to and including `index`, which becomes the base.
    pub fn compact(&mut self, index: LogIndex, term: Term) -> Result<(), Inconsistent> {
        if index <= self.base.0 || index > self.last() {
            return Err(format!("compaction to {index} outside ({}, {}]", self.base.0, self.last()));
        }
        self.drop_through(index);
        self.base = (index, term);
        Ok(())
    }

    fn drop_through(&mut self, index: LogIndex) {
        if index >= self.hole_end {
            let n = ((index.0 - self.hole_end.0) as usize).min(self.locs.len());
            self.locs.drain(..n);
            self.hole_end = index;
        }
    }

    /// Installs a snapshot from the leader; the log keeps its suffix after the snapshot if `keep_suffix`.
    pub fn install_snapshot(&mut self, snap: Snapshot, keep_suffix: bool) -> Result<(), Inconsistent> {
        let i = snap.meta.index;
        if i <= self.snapshot.meta.index || i <= self.base.0 || (keep_suffix && i > self.last()) {
            return Err(format!("snapshot at {i} does not fit a log with base {}", self.base.0));
        }
        if keep_suffix {
            self.drop_through(i);
        } else {
            self.locs.clear();
            self.hole_end = i;
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

    /// Records a locally taken snapshot; its membership becomes the group's.
    pub fn set_snapshot(&mut self, snap: Snapshot) -> Result<(), Inconsistent> {
        if snap.meta.index <= self.snapshot.meta.index {
            return Err(format!("snapshot at {} is not newer", snap.meta.index));
        }
        self.membership = snap.meta.membership.clone();
        self.snapshot = snap;
        Ok(())
    }

    /// The segment holding the first entry of the log, if the log has entries.
    pub fn first_segment(&self) -> Option<u32> {
        self.locs.front().map(|l| l.seg)
    }

    /// The highest index of this group stored in segment `seg` or an earlier one, if any. Segments are
    /// non-decreasing along the log: an append always replaces the whole suffix after its first index.
    pub fn last_index_in(&self, seg: u32) -> Option<LogIndex> {
        let n = self.locs.partition_point(|l| l.seg <= seg);
        (n > 0).then(|| LogIndex(self.hole_end.0 + n as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(term: u64, seg: u32) -> Loc {
        Loc { term, seg, off: 0, len: 13, crc: 0 }
    }

    #[test]
    fn append_truncates_and_compacts() {
        let mut g = GroupState::default();
        g.append(LogIndex(1), (1..=5).map(|i| loc(1, i))).unwrap();
        assert_eq!(g.last(), LogIndex(5));
        g.append(LogIndex(4), [loc(2, 9)]).unwrap();
        assert_eq!(g.last(), LogIndex(4));
        assert_eq!(g.term_at(LogIndex(4)), Some(Term(2)));
        assert!(g.append(LogIndex(6), [loc(2, 9)]).is_err(), "gap");
        g.compact(LogIndex(2), Term(1)).unwrap();
        assert_eq!(g.term_at(LogIndex(2)), None);
        assert_eq!(g.first_segment(), Some(3));
        assert_eq!(g.last_index_in(3), Some(LogIndex(3)));
        assert_eq!(g.last_index_in(9), Some(LogIndex(4)));
        assert_eq!(g.last_index_in(2), None);
        assert!(g.compact(LogIndex(2), Term(1)).is_err());
        assert!(g.compact(LogIndex(5), Term(1)).is_err());
    }

    #[test]
    fn hole_is_filled_by_append_and_covered_by_compaction() {
        let mut g = GroupState { hole_end: LogIndex(10), ..Default::default() };
        assert_eq!(g.last(), LogIndex(10));
        assert_eq!(g.term_at(LogIndex(5)), None);
        g.append(LogIndex(11), [loc(3, 1)]).unwrap();
        g.compact(LogIndex(8), Term(2)).unwrap();
        assert_eq!(g.hole_end, LogIndex(10), "still a hole in (8, 10]");
        g.compact(LogIndex(11), Term(3)).unwrap();
        assert_eq!((g.hole_end, g.base.0), (LogIndex(11), LogIndex(11)));
    }
}
