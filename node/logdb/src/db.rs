//! [`LogDb`]: the store. Concurrent saves are grouped ([`crate::commit`]); each group goes through the one
//! writer ([`crate::write`]): one write, one fdatasync, then the new state is published to readers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use drakkar_raft::{GroupId, LogIndex};

use crate::batch::WriteBatch;
use crate::cache::Cache;
use crate::commit::GroupCommit;
use crate::error::{Error, Result};
use crate::format;
use crate::fs::{FileSystem, FsFile, FsLock, StdFs};
use crate::index::GroupState;
use crate::recovery::{self, Active};
use crate::storage::GroupStorage;
use crate::write::{self, Writer};

/// How a [`LogDb`] behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// A segment is rolled once appending the next batch would take it past this size (a single batch may
    /// exceed it). At least 4 KiB, at most 1 GiB. Default 64 MiB.
    pub segment_size: u64,
    /// Bytes of recent entries kept in memory (counted by `Entry::size`); older entries are read from disk.
    /// Default 64 MiB; 0 disables the cache.
    pub cache_capacity: u64,
    /// Delete segments nobody needs any more each time a segment is rolled. Default true; when false, call
    /// [`LogDb::purge`].
    pub auto_purge: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { segment_size: 64 << 20, cache_capacity: 64 << 20, auto_purge: true }
    }
}

/// A snapshot of the store's bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Segment files on disk, oldest first.
    pub segments: Vec<u64>,
    /// The segment new writes go to.
    pub active_segment: u64,
    /// Groups with state.
    pub groups: usize,
    /// Entries indexed, over all groups.
    pub entries: u64,
    /// Bytes held by the entry cache.
    pub cache_bytes: u64,
}

/// What readers see: the state as of the last successful write.
pub(crate) struct State {
    pub groups: HashMap<GroupId, GroupState>,
    pub cache: Cache,
    pub segments: BTreeMap<u64, Arc<dyn FsFile>>,
    pub active: u64,
}

pub(crate) struct Inner {
    pub fs: Arc<dyn FileSystem>,
    pub dir: PathBuf,
    pub options: Options,
    pub commit: GroupCommit,
    pub writer: Mutex<Writer>,
    state: RwLock<State>,
    _lock: Box<dyn FsLock>,
}

/// The durable log store of one node: the logs, hard states and snapshot metadata of all its groups in one
/// segmented write-ahead log. Cheap to clone (shared); safe to use from many threads: concurrent saves share
/// one write and one fdatasync (group commit).
#[derive(Clone)]
pub struct LogDb {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for LogDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogDb").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

impl Inner {
    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        match &w.poisoned {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(w),
        }
    }

    pub(crate) fn segment_path(&self, number: u64) -> PathBuf {
        self.dir.join(format::segment_name(number))
    }
}

impl LogDb {
    /// Opens (or creates) the log in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<LogDb> {
        LogDb::open_with_fs(Arc::new(StdFs), dir, options)
    }

    /// Opens (or creates) the log in `dir` on `fs`: takes the directory's lock, replays every segment (see
    /// [`Error::Corruption`] for what refuses to open), cuts a torn tail, and starts a new segment if needed.
    pub fn open_with_fs(fs: Arc<dyn FileSystem>, dir: impl AsRef<Path>, options: Options) -> Result<LogDb> {
        let dir = dir.as_ref().to_path_buf();
        if !(4096..=format::MAX_SEGMENT_SIZE).contains(&options.segment_size) {
            return Err(Error::InvalidOptions(format!("segment_size {} out of range", options.segment_size)));
        }
        fs.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent).map_err(|e| Error::io(parent, e))?;
        }
        let lock_path = dir.join("LOCK");
        let lock = fs.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked(dir.clone()),
            _ => Error::io(&lock_path, e),
        })?;
        let rec = recovery::recover(&*fs, &dir)?;
        let mut segments = rec.segments;
        let mut next_seq = rec.next_seq;
        let active = match rec.active {
            Some(a) => a,
            None => {
                let number = rec.next_number;
                let path = dir.join(format::segment_name(number));
                let mut buf = Vec::new();
                let salt = write::encode_segment_start(&mut buf, number, next_seq, &rec.groups)?;
                next_seq += 1;
                let file = fs.create(&path).map_err(|e| Error::io(&path, e))?;
                file.append(&buf).map_err(|e| Error::io(&path, e))?;
                file.sync().map_err(|e| Error::io(&path, e))?;
                fs.sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
                segments.insert(number, file.clone());
                let size = buf.len() as u64;
                Active { number, file, size, data_start: size, salt }
            }
        };
        let state = State {
            groups: rec.groups,
            cache: Cache::new(options.cache_capacity),
            segments,
            active: active.number,
        };
        let writer = Writer {
            active,
            next_seq,
            buf: Vec::new(),
            roll_buf: Vec::new(),
            positions: Vec::new(),
            poisoned: None,
        };
        let inner = Inner {
            fs,
            dir,
            options,
            commit: GroupCommit::default(),
            writer: Mutex::new(writer),
            state: RwLock::new(state),
            _lock: lock,
        };
        Ok(LogDb { inner: Arc::new(inner) })
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A read view of one group, implementing [`drakkar_raft::Storage`]. Cheap; shares this store.
    pub fn group(&self, group: GroupId) -> GroupStorage {
        GroupStorage::new(self.clone(), group)
    }

    /// The groups with state, in id order.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self.inner.read_state().groups.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Stores a batch atomically and durably: one frame, one write, one fdatasync. Returns once the batch
    /// is durable. The whole batch is checked first; an invalid update rejects it ([`Error::Rejected`]) and
    /// nothing is written. After a failed write or sync the store is poisoned: this call and every later
    /// write return an error, and the batch may or may not be visible after a reopen (all or nothing).
    pub fn save(&self, batch: &WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.commit.save(batch, |all| self.inner.write_batches(all))
    }

    /// Drops a group's entries up to and including `index` (covered by its latest snapshot), durably.
    /// Same as saving a batch holding only [`WriteBatch::compact`].
    pub fn compact(&self, group: GroupId, index: LogIndex) -> Result<()> {
        let mut b = WriteBatch::new();
        b.compact(group, index);
        self.save(&b)
    }

    /// Drops every piece of state of a group, durably. Same as saving a batch holding only
    /// [`WriteBatch::remove_group`].
    pub fn remove_group(&self, group: GroupId) -> Result<()> {
        let mut b = WriteBatch::new();
        b.remove_group(group);
        self.save(&b)
    }

    /// Deletes the segments no group needs any more, oldest first (each deletion made durable before the
    /// next). Returns how many were deleted. A segment is needed while it holds a live entry of some group;
    /// the metadata it holds is restated by the checkpoint at the start of every later segment.
    pub fn purge(&self) -> Result<usize> {
        let mut w = self.inner.writer()?;
        self.inner.purge_locked(&mut w)
    }

    /// The groups that keep the oldest segment from being purged, each with the index it must compact
    /// through to release it. Empty when nothing but the active segment is left to purge.
    pub fn purge_blockers(&self) -> Vec<(GroupId, LogIndex)> {
        let st = self.inner.read_state();
        let oldest = oldest_needed(&st);
        if oldest >= st.active {
            return Vec::new();
        }
        let Ok(seg) = u32::try_from(oldest) else { return Vec::new() };
        let mut out: Vec<(GroupId, LogIndex)> = st
            .groups
            .iter()
            .filter(|(_, g)| g.first_segment() == Some(seg))
            .filter_map(|(id, g)| g.last_index_in(seg).map(|i| (*id, i)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Bookkeeping figures.
    pub fn stats(&self) -> Stats {
        let st = self.inner.read_state();
        Stats {
            segments: st.segments.keys().copied().collect(),
            active_segment: st.active,
            groups: st.groups.len(),
            entries: st.groups.values().map(|g| g.locs.len() as u64).sum(),
            cache_bytes: st.cache.bytes(),
        }
    }

    /// The error that poisoned the store, if a write or sync failed.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner).poisoned.clone()
    }
}

/// The oldest segment still needed: the one holding the first live entry of some group, or the active one.
pub(crate) fn oldest_needed(st: &State) -> u64 {
    st.groups.values().filter_map(GroupState::first_segment).map(u64::from).fold(st.active, u64::min)
}
