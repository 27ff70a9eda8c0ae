//! [`GroupStorage`]: one group's view of the store, implementing the core's [`Storage`] trait.
//!
//! Answers come from memory (the index and the tail cache) under a shared lock; entries no longer cached are
//! read from their segments after the lock is released, one positioned read per run of adjacent entries,
//! and each is checked against the CRC-32C recorded when it was written or replayed.

use std::sync::Arc;

use bytes::Bytes;
use drakkar_raft::{
    Entry, GroupId, HardState, InitialState, LogIndex, Snapshot, Storage, StorageError, Term,
};

use crate::codec::ENTRY_HEADER_LEN;
use crate::db::LogDb;
use crate::fs::FsFile;
use crate::index::{GroupState, Loc};

/// Reads of one group. Cheap to create and clone; every call sees the state as of the last completed
/// [`LogDb::save`]. The rules are those of [`drakkar_raft::MemStorage`]: `term(first_index - 1)` is the
/// term of the log's base (the latest compaction point or installed snapshot); `entries` returns at least
/// one entry and stops once the total `Entry::size` passes `max_size`.
///
/// `initial_state` returns the stored hard state and the group's membership: the one recorded last by
/// [`crate::WriteBatch::set_membership`], [`crate::WriteBatch::create_snapshot`] or
/// [`crate::WriteBatch::apply_snapshot`] (the host records the latest applied membership with the first, or
/// relies on snapshots only). A group with no state answers like an empty `MemStorage`.
///
/// A view holds the store open (and its directory lock) while it lives.
#[derive(Clone, Debug)]
pub struct GroupStorage {
    db: LogDb,
    group: GroupId,
}

/// Runs of adjacent entries longer than this are split into several reads.
const MAX_READ: u64 = 8 << 20;

/// Adjacent entries of one segment, read with one positioned read.
struct Run {
    file: Arc<dyn FsFile>,
    seg: u32,
    off: u64,
    len: u64,
    first: LogIndex,
    locs: Vec<Loc>,
}

fn default_group() -> &'static GroupState {
    static EMPTY: std::sync::OnceLock<GroupState> = std::sync::OnceLock::new();
    EMPTY.get_or_init(GroupState::default)
}

impl GroupStorage {
    pub(crate) fn new(db: LogDb, group: GroupId) -> Self {
        GroupStorage { db, group }
    }

    /// The group this view reads.
    pub fn group_id(&self) -> GroupId {
        self.group
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.with(|g| g.hard_state)
    }

    fn with<T>(&self, f: impl FnOnce(&GroupState) -> T) -> T {
        let st = self.db.inner.read_state();
        f(st.groups.get(&self.group).unwrap_or_else(|| default_group()))
    }

    fn read_run(&self, run: &Run, out: &mut Vec<Entry>) -> Result<(), StorageError> {
        let path = self.db.inner.segment_path(u64::from(run.seg));
        let len = usize::try_from(run.len).map_err(|_| StorageError::Other("read too large".into()))?;
        let mut buf = vec![0u8; len];
        run.file.read_at(&mut buf, run.off).map_err(|e| {
            StorageError::Other(format!("reading {} at offset {}: {e}", path.display(), run.off))
        })?;
        let buf = Bytes::from(buf);
        let mut at = 0usize;
        for (k, loc) in run.locs.iter().enumerate() {
            let index = LogIndex(run.first.0 + k as u64);
            let end = at + loc.len as usize;
            let corrupt = |why: &str| {
                StorageError::Other(format!(
                    "corrupt log: {} at offset {}: entry {index} of group {}: {why}",
                    path.display(),
                    run.off + at as u64,
                    self.group
                ))
            };
            let bytes = buf.get(at..end).ok_or_else(|| corrupt("short read"))?;
            if crc32c::crc32c(bytes) != loc.crc {
                return Err(corrupt("checksum mismatch"));
            }
            let Some((term, kind, data_len)) = crate::codec::parse_entry_header(bytes) else {
                return Err(corrupt("bad entry header"));
            };
            if term.0 != loc.term || ENTRY_HEADER_LEN + data_len != bytes.len() {
                return Err(corrupt("entry does not match the index"));
            }
            let data = buf.slice(at + ENTRY_HEADER_LEN..end);
            out.push(Entry { term, index, kind, data });
            at = end;
        }
        Ok(())
    }
}

impl Storage for GroupStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(self.with(|g| InitialState { hard_state: g.hard_state, membership: g.membership.clone() }))
    }

    fn entries(&self, low: LogIndex, high: LogIndex, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        let entry_overhead = Entry::default().size();
        let mut runs: Vec<Run> = Vec::new();
        let mut out = Vec::new();
        {
            let st = self.db.inner.read_state();
            let g = st.groups.get(&self.group).unwrap_or_else(|| default_group());
            if low <= g.base.0 {
                return Err(StorageError::Compacted);
            }
            if high > g.last().next() || low > high {
                return Err(StorageError::Unavailable);
            }
            // How many entries fit in max_size (at least one).
            let mut size = 0u64;
            let mut end = low;
            while end < high {
                let loc = g.loc(end).ok_or_else(|| StorageError::Other(format!("entry {end} is missing")))?;
                size += entry_overhead + u64::from(loc.len) - ENTRY_HEADER_LEN as u64;
                if end > low && size > max_size {
                    break;
                }
                end = end.next();
            }
            let cached_from = st.cache.first_cached(self.group).map_or(end, |c| c.clamp(low, end));
            let mut i = low;
            while i < cached_from {
                let Some(loc) = g.loc(i).copied() else { break };
                let extend = runs.last_mut().filter(|r| {
                    r.seg == loc.seg
                        && r.off + r.len == u64::from(loc.off)
                        && r.len + u64::from(loc.len) <= MAX_READ
                });
                match extend {
                    Some(r) => {
                        r.len += u64::from(loc.len);
                        r.locs.push(loc);
                    }
                    None => {
                        let Some(file) = st.segments.get(&u64::from(loc.seg)) else {
                            return Err(StorageError::Other(format!(
                                "segment {} of entry {i} is gone",
                                loc.seg
                            )));
                        };
                        runs.push(Run {
                            file: file.clone(),
                            seg: loc.seg,
                            off: u64::from(loc.off),
                            len: u64::from(loc.len),
                            first: i,
                            locs: vec![loc],
                        });
                    }
                }
                i = i.next();
            }
            st.cache.get(self.group, cached_from, end, &mut out);
        }
        if runs.is_empty() {
            return Ok(out);
        }
        let mut from_disk = Vec::with_capacity(out.len() + runs.iter().map(|r| r.locs.len()).sum::<usize>());
        for run in &runs {
            self.read_run(run, &mut from_disk)?;
        }
        from_disk.append(&mut out);
        Ok(from_disk)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.with(|g| {
            let (base, base_term) = g.base;
            if index == base {
                return Ok(base_term);
            }
            if index < base {
                return Err(StorageError::Compacted);
            }
            if index > g.last() {
                return Err(StorageError::Unavailable);
            }
            g.term_at(index).ok_or_else(|| StorageError::Other(format!("entry {index} is missing")))
        })
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.with(|g| g.base.0.next()))
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.with(GroupState::last))
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.with(|g| g.snapshot.clone()))
    }
}
