//! The semantics of each update, checked before anything is written.
//!
//! [`plan`] turns a requested update into the [`Effect`] that is logged and replayed. The rules mirror
//! [`drakkar_raft::MemStorage`]'s mutators. Effects carry everything replay needs (for instance the term of a
//! compaction point), so replaying them never needs entries that may live in purged segments.
//! A batch is planned against an [`Overlay`] per group: the stored state plus the effects planned so far in
//! the batch, without copying the log.

use bytes::Bytes;
use drakkar_raft::{Entry, HardState, LogIndex, Membership, Snapshot, Term};

use crate::batch::Op;
use crate::codec::MAX_INDEX;
use crate::error::OpError;
use crate::index::GroupState;

/// What an update does, as logged.
#[derive(Clone, Debug)]
pub(crate) enum Effect<'a> {
    /// Replace the log from `entries[0].index` on (every entry is above the base).
    Append(&'a [Entry]),
    HardState(HardState),
    Membership(&'a Membership),
    /// A snapshot from the leader; the log's suffix after it is kept if `keep_suffix`.
    InstallSnapshot {
        snapshot: &'a Snapshot,
        keep_suffix: bool,
    },
    /// A local snapshot at `index` of `term`.
    SetSnapshot {
        index: LogIndex,
        term: Term,
        membership: &'a Membership,
        data: &'a Bytes,
    },
    Compact {
        index: LogIndex,
        term: Term,
    },
    Remove,
}

/// The log shape an update is checked against.
pub(crate) trait Shape {
    fn base(&self) -> (LogIndex, Term);
    fn last(&self) -> LogIndex;
    fn snapshot_index(&self) -> LogIndex;
    /// The term of `i` for `base < i <= last`.
    fn term_at(&self, i: LogIndex) -> Option<Term>;

    /// `Storage::term` semantics.
    fn term(&self, i: LogIndex) -> Result<Term, OpError> {
        let (base, base_term) = self.base();
        if i == base {
            return Ok(base_term);
        }
        if i < base {
            return Err(OpError::Compacted(i.0));
        }
        if i > self.last() {
            return Err(OpError::Unavailable(i.0));
        }
        self.term_at(i).ok_or(OpError::Unavailable(i.0))
    }
}

impl Shape for GroupState {
    fn base(&self) -> (LogIndex, Term) {
        self.base
    }
    fn last(&self) -> LogIndex {
        GroupState::last(self)
    }
    fn snapshot_index(&self) -> LogIndex {
        self.snapshot.meta.index
    }
    fn term_at(&self, i: LogIndex) -> Option<Term> {
        GroupState::term_at(self, i)
    }
}

fn check_index(i: LogIndex) -> Result<LogIndex, OpError> {
    if i.0 > MAX_INDEX { Err(OpError::IndexTooLarge(i.0)) } else { Ok(i) }
}

/// Checks `op` against `shape` and returns its effect (`None` when it changes nothing).
pub(crate) fn plan<'a>(shape: &impl Shape, op: &'a Op) -> Result<Option<Effect<'a>>, OpError> {
    Ok(Some(match op {
        Op::Append(entries) => {
            let Some(first_new) = entries.first() else { return Ok(None) };
            for w in entries.windows(2) {
                if w[0].index.0.checked_add(1) != Some(w[1].index.0) {
                    return Err(OpError::NotConsecutive(w[1].index.0, w[0].index.0));
                }
            }
            if let Some(e) = entries.last() {
                check_index(e.index)?;
            }
            let (base, _) = shape.base();
            let last = shape.last();
            if first_new.index > last.next() {
                return Err(OpError::Gap { first: first_new.index.0, last: last.0 });
            }
            let skip = (base.0 + 1).saturating_sub(first_new.index.0);
            match usize::try_from(skip).ok().and_then(|s| entries.get(s..)) {
                Some(rest) if !rest.is_empty() => Effect::Append(rest),
                _ => return Ok(None),
            }
        }
        Op::HardState(hs) => Effect::HardState(*hs),
        Op::Membership(m) => Effect::Membership(m),
        Op::ApplySnapshot(snap) => {
            let i = check_index(snap.meta.index)?;
            if i <= shape.snapshot_index() {
                return Err(OpError::StaleSnapshot(i.0, shape.snapshot_index().0));
            }
            let keep_suffix = shape.term(i).ok() == Some(snap.meta.term);
            Effect::InstallSnapshot { snapshot: snap, keep_suffix }
        }
        Op::CreateSnapshot { index, membership, data } => {
            check_index(*index)?;
            if *index <= shape.snapshot_index() {
                return Err(OpError::StaleSnapshot(index.0, shape.snapshot_index().0));
            }
            let term = shape.term(*index)?;
            Effect::SetSnapshot { index: *index, term, membership, data }
        }
        Op::Compact(index) => {
            if *index <= shape.base().0 {
                return Err(OpError::Compacted(index.0));
            }
            if *index > shape.snapshot_index() {
                return Err(OpError::NotSnapshotted(index.0, shape.snapshot_index().0));
            }
            let term = shape.term(*index)?;
            Effect::Compact { index: *index, term }
        }
        Op::Remove => Effect::Remove,
    }))
}

/// A group's stored state with a batch's planned effects laid over it.
///
/// Invariant: entries in `(base, real_upto]` are the stored ones; `chunks` hold the entries after
/// `real_upto`, consecutive.
#[derive(Clone)]
pub(crate) struct Overlay<'s, 'b> {
    real: Option<&'s GroupState>,
    base: (LogIndex, Term),
    snapshot_index: LogIndex,
    real_upto: LogIndex,
    chunks: Vec<&'b [Entry]>,
}

impl<'s, 'b> Overlay<'s, 'b> {
    /// The overlay of a stored group (`None`: a group with no state).
    pub fn new(real: Option<&'s GroupState>) -> Self {
        match real {
            Some(g) => Overlay {
                real,
                base: g.base,
                snapshot_index: g.snapshot.meta.index,
                real_upto: g.last(),
                chunks: Vec::new(),
            },
            None => Overlay {
                real: None,
                base: (LogIndex(0), Term(0)),
                snapshot_index: LogIndex(0),
                real_upto: LogIndex(0),
                chunks: Vec::new(),
            },
        }
    }

    /// Lays a planned effect over the state.
    pub fn update(&mut self, effect: &Effect<'b>) {
        match effect {
            Effect::Append(entries) => {
                let Some(first) = entries.first().map(|e| e.index) else { return };
                if first.0 - 1 < self.real_upto.0 {
                    self.real_upto = first.prev();
                    self.chunks.clear();
                } else {
                    let mut keep = (first.0 - 1 - self.real_upto.0) as usize;
                    let mut n = 0;
                    while n < self.chunks.len() && keep > 0 {
                        let c = self.chunks[n];
                        let take = c.len().min(keep);
                        self.chunks[n] = &c[..take];
                        keep -= take;
                        n += 1;
                    }
                    self.chunks.truncate(n);
                }
                self.chunks.push(entries);
            }
            Effect::InstallSnapshot { snapshot, keep_suffix } => {
                let i = snapshot.meta.index;
                self.base = (i, snapshot.meta.term);
                self.snapshot_index = i;
                if !keep_suffix {
                    self.real_upto = i;
                    self.chunks.clear();
                }
            }
            Effect::SetSnapshot { index, .. } => self.snapshot_index = *index,
            Effect::Compact { index, term } => self.base = (*index, *term),
            Effect::Remove => *self = Overlay::new(None),
            Effect::HardState(_) | Effect::Membership(_) => {}
        }
    }
}

impl Shape for Overlay<'_, '_> {
    fn base(&self) -> (LogIndex, Term) {
        self.base
    }

    fn last(&self) -> LogIndex {
        LogIndex(self.real_upto.0 + self.chunks.iter().map(|c| c.len() as u64).sum::<u64>())
    }

    fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    fn term_at(&self, i: LogIndex) -> Option<Term> {
        if i <= self.base.0 {
            return None;
        }
        if i <= self.real_upto {
            return self.real.and_then(|g| g.term_at(i));
        }
        let mut start = self.real_upto.0 + 1;
        for c in &self.chunks {
            if i.0 < start + c.len() as u64 {
                return c.get((i.0 - start) as usize).map(|e| e.term);
            }
            start += c.len() as u64;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use drakkar_raft::{MemStorage, Storage, StorageError};

    use super::*;
    use crate::index::Loc;

    fn ents(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
        (lo..=hi).map(|i| Entry { term: Term(term), index: LogIndex(i), ..Default::default() }).collect()
    }

    fn same_error(ours: OpError, theirs: StorageError) {
        let ours = StorageError::from(ours);
        match (&ours, &theirs) {
            (StorageError::Other(_), StorageError::Other(_)) => {}
            _ => assert_eq!(ours, theirs),
        }
    }

    /// The overlay answers like the log it models, across appends that truncate into stored entries.
    #[test]
    fn overlay_tracks_terms_through_truncations() {
        let mut g = GroupState::default();
        let locs = |lo: u64, hi: u64, t: u64| {
            (lo..=hi).map(move |_| Loc { term: t, seg: 1, off: 0, len: 0, crc: 0 })
        };
        g.append(LogIndex(1), locs(1, 6, 1)).unwrap();
        let mut mem = MemStorage::default();
        mem.append(&ents(1, 6, 1)).unwrap();
        let ops = [
            Op::Append(ents(5, 8, 2)),
            Op::Append(ents(8, 9, 3)),
            Op::Append(ents(3, 3, 4)),
            Op::Append(ents(4, 10, 5)),
            Op::CreateSnapshot { index: LogIndex(5), membership: Membership::default(), data: Bytes::new() },
            Op::Compact(LogIndex(4)),
            Op::Compact(LogIndex(4)),
            Op::Compact(LogIndex(6)),
            Op::Append(ents(12, 12, 5)),
        ];
        let mut ov = Overlay::new(Some(&g));
        for op in &ops {
            let ours = plan(&ov, op);
            let theirs = match op {
                Op::Append(e) => mem.append(e),
                Op::CreateSnapshot { index, membership, data } => {
                    mem.create_snapshot(*index, membership.clone(), data.clone())
                }
                Op::Compact(i) => mem.compact(*i),
                _ => unreachable!(),
            };
            match (ours, theirs) {
                (Ok(Some(e)), Ok(())) => ov.update(&e),
                (Ok(None), Ok(())) => {}
                (Err(a), Err(b)) => same_error(a, b),
                (a, b) => panic!("{op:?}: {a:?} vs {b:?}"),
            }
            assert_eq!(ov.last(), mem.last_index().unwrap());
            assert_eq!(ov.base().0, mem.first_index().unwrap().prev());
            for i in 0..12 {
                assert_eq!(ov.term(LogIndex(i)).ok(), mem.term(LogIndex(i)).ok(), "term {i} after {op:?}");
            }
        }
    }

    #[test]
    fn non_consecutive_entries_are_rejected() {
        let g = GroupState::default();
        let mut e = ents(1, 3, 1);
        e[2].index = LogIndex(4);
        assert_eq!(plan(&g, &Op::Append(e)).unwrap_err(), OpError::NotConsecutive(4, 2));
    }
}
