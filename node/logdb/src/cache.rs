//! A bounded cache of the recent tail of every group's log, so that the entries a leader is about to send
//! (or a replica is about to apply) are served without I/O.
//!
//! Per group the cache holds a suffix of the log: entries `first_cached..=last`. The byte budget is global;
//! when it is exceeded the entries written longest ago (by batch sequence number), across all groups, go
//! first. Entries are shared with the caller's batches (`Bytes` are reference counted), never copied.

use std::collections::{BTreeSet, HashMap, VecDeque};

use drakkar_raft::{Entry, GroupId, LogIndex};

struct Cached {
    entry: Entry,
    /// The sequence number of the batch that wrote it.
    seq: u64,
}

/// The tail cache.
///
/// Invariants: `bytes` is the sum of `Entry::size` over every cached entry; `order` holds exactly one key
/// `(seq of the front entry, group)` per non-empty group deque; each deque has consecutive indexes.
pub(crate) struct Cache {
    capacity: u64,
    bytes: u64,
    groups: HashMap<GroupId, VecDeque<Cached>>,
    order: BTreeSet<(u64, GroupId)>,
}

impl Cache {
    /// An empty cache holding at most `capacity` bytes (as counted by [`Entry::size`]).
    pub fn new(capacity: u64) -> Self {
        Cache { capacity, bytes: 0, groups: HashMap::new(), order: BTreeSet::new() }
    }

    /// Bytes cached.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn front_seq(&self, g: GroupId) -> Option<u64> {
        self.groups.get(&g).and_then(|d| d.front()).map(|c| c.seq)
    }

    /// Runs `f` on the deque of `g`, keeping `order` and `bytes` right.
    fn with_group(&mut self, g: GroupId, f: impl FnOnce(&mut VecDeque<Cached>, &mut u64)) {
        if let Some(old) = self.front_seq(g) {
            self.order.remove(&(old, g));
        }
        let dq = self.groups.entry(g).or_default();
        f(dq, &mut self.bytes);
        match dq.front().map(|c| c.seq) {
            Some(seq) => {
                self.order.insert((seq, g));
            }
            None => {
                self.groups.remove(&g);
            }
        }
    }

    fn drop_front(dq: &mut VecDeque<Cached>, bytes: &mut u64, n: usize) {
        for c in dq.drain(..n.min(dq.len())) {
            *bytes -= c.entry.size();
        }
    }

    fn drop_back(dq: &mut VecDeque<Cached>, bytes: &mut u64, keep: usize) {
        while dq.len() > keep {
            if let Some(c) = dq.pop_back() {
                *bytes -= c.entry.size();
            }
        }
    }

    /// Records entries just written by batch `seq` (consecutive; they replace the log from their first
    /// index on), then evicts down to the budget.
    pub fn append(&mut self, g: GroupId, entries: &[Entry], seq: u64) {
        let Some(first) = entries.first().map(|e| e.index) else { return };
        if self.capacity == 0 {
            return self.truncate_from(g, first);
        }
        self.with_group(g, |dq, bytes| {
            let keep = match (dq.front(), dq.back()) {
                (Some(f), Some(b)) if first > f.entry.index && first <= b.entry.index.next() => {
                    (first.0 - f.entry.index.0) as usize
                }
                _ => 0,
            };
            Self::drop_back(dq, bytes, keep);
            for e in entries {
                *bytes += e.size();
                dq.push_back(Cached { entry: e.clone(), seq });
            }
        });
        self.evict();
    }

    /// Forgets cached entries from `index` on.
    fn truncate_from(&mut self, g: GroupId, index: LogIndex) {
        if !self.groups.contains_key(&g) {
            return;
        }
        self.with_group(g, |dq, bytes| {
            let keep = dq.front().map_or(0, |f| index.0.saturating_sub(f.entry.index.0) as usize);
            Self::drop_back(dq, bytes, keep);
        });
    }

    /// Forgets entries up to and including `index`.
    pub fn compact(&mut self, g: GroupId, index: LogIndex) {
        if !self.groups.contains_key(&g) {
            return;
        }
        self.with_group(g, |dq, bytes| {
            let n = dq.front().map_or(0, |f| (index.0 + 1).saturating_sub(f.entry.index.0) as usize);
            Self::drop_front(dq, bytes, n);
        });
    }

    /// Forgets a group.
    pub fn remove(&mut self, g: GroupId) {
        if self.groups.contains_key(&g) {
            self.with_group(g, |dq, bytes| Self::drop_front(dq, bytes, usize::MAX));
        }
    }

    fn evict(&mut self) {
        while self.bytes > self.capacity {
            let Some(&(seq, g)) = self.order.first() else { return };
            let capacity = self.capacity;
            self.with_group(g, |dq, bytes| {
                while *bytes > capacity && dq.front().is_some_and(|c| c.seq == seq) {
                    Self::drop_front(dq, bytes, 1);
                }
            });
        }
    }

    /// The first cached index of `g`: every entry from there to the end of its log is cached.
    pub fn first_cached(&self, g: GroupId) -> Option<LogIndex> {
        self.groups.get(&g).and_then(|d| d.front()).map(|c| c.entry.index)
    }

    /// Clones of the cached entries of `g` in `[lo, hi)` (`lo` at or after [`Cache::first_cached`]).
    pub fn get(&self, g: GroupId, lo: LogIndex, hi: LogIndex, out: &mut Vec<Entry>) {
        let Some(dq) = self.groups.get(&g) else { return };
        let Some(f) = dq.front().map(|c| c.entry.index) else { return };
        let start = lo.0.saturating_sub(f.0) as usize;
        let n = hi.0.saturating_sub(lo.0.max(f.0)) as usize;
        out.extend(dq.iter().skip(start).take(n).map(|c| c.entry.clone()));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use drakkar_raft::Term;

    use super::*;

    fn ents(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
        (lo..=hi)
            .map(|i| Entry {
                term: Term(term),
                index: LogIndex(i),
                data: Bytes::from_static(&[0; 8]),
                ..Default::default()
            })
            .collect()
    }

    fn got(c: &Cache, g: u64, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        c.get(GroupId(g), LogIndex(lo), LogIndex(hi), &mut out);
        out.iter().map(|e| (e.index.0, e.term.0)).collect()
    }

    #[test]
    fn suffix_replacement_and_compaction() {
        let mut c = Cache::new(1 << 20);
        c.append(GroupId(1), &ents(1, 5, 1), 1);
        c.append(GroupId(1), &ents(4, 6, 2), 2);
        assert_eq!(got(&c, 1, 3, 7), vec![(3, 1), (4, 2), (5, 2), (6, 2)]);
        c.compact(GroupId(1), LogIndex(4));
        assert_eq!(c.first_cached(GroupId(1)), Some(LogIndex(5)));
        c.append(GroupId(1), &ents(2, 2, 3), 3);
        assert_eq!(got(&c, 1, 1, 9), vec![(2, 3)]);
        assert_eq!(c.bytes(), 32);
        c.remove(GroupId(1));
        assert_eq!((c.bytes(), c.first_cached(GroupId(1))), (0, None));
    }

    #[test]
    fn evicts_oldest_batches_first_across_groups() {
        let mut c = Cache::new(32 * 6);
        c.append(GroupId(1), &ents(1, 3, 1), 1);
        c.append(GroupId(2), &ents(1, 3, 1), 2);
        c.append(GroupId(3), &ents(1, 2, 1), 3);
        assert_eq!(c.first_cached(GroupId(1)), Some(LogIndex(3)), "two of group 1 evicted");
        assert_eq!(c.first_cached(GroupId(2)), Some(LogIndex(1)));
        assert_eq!(c.bytes(), 32 * 6);
        c.append(GroupId(2), &ents(4, 4, 1), 4);
        assert_eq!(c.first_cached(GroupId(1)), None);
        assert!(c.bytes() <= 32 * 6);
    }

    #[test]
    fn disabled_cache_forgets_overwritten_entries() {
        let mut c = Cache::new(0);
        c.append(GroupId(1), &ents(1, 5, 1), 1);
        assert_eq!(c.first_cached(GroupId(1)), None);
        assert_eq!(c.bytes(), 0);
    }
}
