//! [`LogDb`]: the store. Writes go through one writer (a mutex): plan the batch against the current state,
//! encode it as one frame, append it with one write, fdatasync once, then publish the new state to readers.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use drakkar_raft::{GroupId, LogIndex};

use crate::batch::WriteBatch;
use crate::cache::Cache;
use crate::codec::{self, EntryPos};
use crate::error::{Error, Result};
use crate::format::{self, SegmentHeader, record_type};
use crate::fs::{FileSystem, FsFile, FsLock, StdFs};
use crate::index::{GroupState, Loc};
use crate::plan::{self, Effect, Overlay};
use crate::recovery::{self, Active};
use crate::storage::GroupStorage;

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

struct Writer {
    active: Active,
    next_seq: u64,
    /// Reused for every batch.
    buf: Vec<u8>,
    /// Reused when a batch starts a new segment.
    roll_buf: Vec<u8>,
    positions: Vec<EntryPos>,
    /// Set by the first failed write or sync: every later write is refused.
    poisoned: Option<String>,
}

pub(crate) struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    options: Options,
    writer: Mutex<Writer>,
    state: RwLock<State>,
    _lock: Box<dyn FsLock>,
}

/// The durable log store of one node: the logs, hard states and snapshot metadata of all its groups in one
/// segmented write-ahead log. Cheap to clone (shared); safe to use from many threads; writes are serialized.
#[derive(Clone)]
pub struct LogDb {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for LogDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogDb").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

fn new_salt(number: u64) -> u32 {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(number);
    h.finish() as u32
}

impl Inner {
    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        match &w.poisoned {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(w),
        }
    }

    pub(crate) fn segment_path(&self, number: u64) -> PathBuf {
        self.dir.join(format::segment_name(number))
    }

    /// Encodes a segment header and a checkpoint of `groups` into `out`; returns the salt.
    fn encode_segment_start(
        out: &mut Vec<u8>,
        number: u64,
        seq: u64,
        groups: &HashMap<GroupId, GroupState>,
    ) -> Result<u32> {
        let salt = new_salt(number);
        SegmentHeader { version: format::VERSION, number, salt }.encode(out);
        let start = format::begin_frame(out);
        let mut sorted: Vec<(GroupId, &GroupState)> = groups.iter().map(|(k, v)| (*k, v)).collect();
        sorted.sort_unstable_by_key(|(k, _)| *k);
        codec::encode_checkpoint(out, sorted.into_iter())
            .and_then(|()| {
                format::finish_frame(out, start, record_type::CHECKPOINT, seq, salt).map_err(too_large)
            })
            .map_err(|e| Error::TooLarge(e.to_string()))?;
        Ok(salt)
    }
}

fn too_large(n: usize) -> crate::error::OpError {
    crate::error::OpError::TooLarge(n as u64)
}

/// Poisons the writer with `e` and returns it.
fn poison(w: &mut Writer, e: Error) -> Error {
    w.poisoned.get_or_insert_with(|| e.to_string());
    e
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
                let salt = Inner::encode_segment_start(&mut buf, number, next_seq, &rec.groups)?;
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
        let inner =
            Inner { fs, dir, options, writer: Mutex::new(writer), state: RwLock::new(state), _lock: lock };
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
        let mut guard = self.inner.writer()?;
        let w = &mut *guard;
        w.buf.clear();
        w.positions.clear();
        let frame = format::begin_frame(&mut w.buf);
        let effects = {
            let st = self.inner.read_state();
            let mut overlays: HashMap<GroupId, Overlay<'_, '_>> = HashMap::new();
            let mut effects: Vec<(GroupId, Effect<'_>)> = Vec::with_capacity(batch.ops.len());
            for (g, op) in &batch.ops {
                let ov = overlays.entry(*g).or_insert_with(|| Overlay::new(st.groups.get(g)));
                let rejected = |source| Error::Rejected { group: *g, source };
                let Some(e) = plan::plan(ov, op).map_err(rejected)? else { continue };
                codec::encode_effect(&mut w.buf, frame, *g, &e, &mut w.positions).map_err(rejected)?;
                ov.update(&e);
                effects.push((*g, e));
            }
            effects
        };
        if effects.is_empty() {
            return Ok(());
        }
        let frame_len = (w.buf.len() + format::FRAME_FOOTER_LEN) as u64;
        let roll = w.active.size > w.active.data_start
            && w.active.size + frame_len > self.inner.options.segment_size;
        let (file, number, frame_off, seq) = if roll {
            self.write_rolled(w)?
        } else {
            let seq = w.next_seq;
            let salt = w.active.salt;
            format::finish_frame(&mut w.buf, frame, record_type::BATCH, seq, salt)
                .map_err(|n| Error::TooLarge(too_large(n).to_string()))?;
            let path = self.inner.segment_path(w.active.number);
            let file = w.active.file.clone();
            if let Err(e) = file.append(&w.buf).and_then(|()| file.sync()) {
                // Best effort: cut what may have reached the file, so that a reopen by a process that does
                // not crash first cannot pick up a batch whose pages the kernel may have dropped.
                let _ = file.truncate(w.active.size).and_then(|()| file.sync());
                return Err(poison(w, Error::io(path, e)));
            }
            let off = w.active.size;
            w.active.size += w.buf.len() as u64;
            w.next_seq += 1;
            (file, w.active.number, off, seq)
        };
        let mut st = self.inner.write_state();
        if roll {
            st.segments.insert(number, file);
            st.active = number;
        }
        if let Err(why) = apply_effects(&mut st, &effects, &w.positions, number, frame_off, seq) {
            return Err(poison(w, Error::Poisoned(format!("in-memory state diverged from the log: {why}"))));
        }
        drop(st);
        drop(effects);
        if roll && self.inner.options.auto_purge {
            // The batch is durable whatever happens here. A failed removal is retried at the next roll; a
            // failed directory sync poisons the store, so the next write reports it.
            let _ = self.purge_locked(w);
        }
        Ok(())
    }

    /// Starts a new segment holding a header, a checkpoint of every group, and the batch encoded in
    /// `w.buf`; writes it with one append and one fdatasync, then syncs the directory.
    fn write_rolled(&self, w: &mut Writer) -> Result<(Arc<dyn FsFile>, u64, u64, u64)> {
        let number = w.active.number + 1;
        let path = self.inner.segment_path(number);
        let cp_seq = w.next_seq;
        let seq = cp_seq + 1;
        w.roll_buf.clear();
        let salt = {
            let st = self.inner.read_state();
            Inner::encode_segment_start(&mut w.roll_buf, number, cp_seq, &st.groups)?
        };
        let data_start = w.roll_buf.len() as u64;
        format::finish_frame(&mut w.buf, 0, record_type::BATCH, seq, salt)
            .map_err(|n| Error::TooLarge(too_large(n).to_string()))?;
        w.roll_buf.extend_from_slice(&w.buf);
        let result = self.inner.fs.create(&path).and_then(|file| {
            file.append(&w.roll_buf)?;
            file.sync()?;
            Ok(file)
        });
        let undo = |w: &mut Writer, e: Error| {
            // Best effort, as above: the new segment must not be picked up by a reopen without a crash.
            let _ = self.inner.fs.remove(&path).and_then(|()| self.inner.fs.sync_dir(&self.inner.dir));
            poison(w, e)
        };
        let file = match result {
            Ok(f) => f,
            Err(e) => return Err(undo(w, Error::io(&path, e))),
        };
        if let Err(e) = self.inner.fs.sync_dir(&self.inner.dir) {
            return Err(undo(w, Error::io(&self.inner.dir, e)));
        }
        let size = w.roll_buf.len() as u64;
        w.active = Active { number, file: file.clone(), size, data_start, salt };
        w.next_seq = seq + 1;
        Ok((file, number, data_start, seq))
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
        self.purge_locked(&mut w)
    }

    fn purge_locked(&self, w: &mut Writer) -> Result<usize> {
        let victims: Vec<u64> = {
            let st = self.inner.read_state();
            let keep_from = oldest_needed(&st);
            st.segments.range(..keep_from).map(|(n, _)| *n).collect()
        };
        for number in &victims {
            let path = self.inner.segment_path(*number);
            self.inner.fs.remove(&path).map_err(|e| Error::io(&path, e))?;
            self.inner.write_state().segments.remove(number);
            if let Err(e) = self.inner.fs.sync_dir(&self.inner.dir) {
                return Err(poison(w, Error::io(&self.inner.dir, e)));
            }
        }
        Ok(victims.len())
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
fn oldest_needed(st: &State) -> u64 {
    st.groups.values().filter_map(GroupState::first_segment).map(u64::from).fold(st.active, u64::min)
}

/// Publishes the effects of a batch written at `frame_off` of segment `number`.
fn apply_effects(
    st: &mut State,
    effects: &[(GroupId, Effect<'_>)],
    positions: &[EntryPos],
    number: u64,
    frame_off: u64,
    seq: u64,
) -> Result<(), String> {
    let seg = u32::try_from(number).map_err(|_| "segment number too large".to_string())?;
    let end = positions.last().map_or(0, |p| u64::from(p.rel) + u64::from(p.len));
    let off = u32::try_from(frame_off)
        .ok()
        .filter(|off| u32::try_from(u64::from(*off) + end).is_ok())
        .ok_or_else(|| "segment too large".to_string())?;
    let mut pos = positions.iter();
    let State { groups, cache, .. } = st;
    for (g, effect) in effects {
        match effect {
            Effect::Append(entries) => {
                let Some(first) = entries.first().map(|e| e.index) else { continue };
                let locs = entries.iter().zip(pos.by_ref()).map(|(e, p)| Loc {
                    term: e.term.0,
                    seg,
                    off: off + p.rel,
                    len: p.len,
                    crc: p.crc,
                });
                groups.entry(*g).or_default().append(first, locs)?;
                cache.append(*g, entries, seq);
            }
            Effect::HardState(hs) => groups.entry(*g).or_default().hard_state = *hs,
            Effect::Membership(m) => groups.entry(*g).or_default().membership = (*m).clone(),
            Effect::InstallSnapshot { snapshot, keep_suffix } => {
                groups.entry(*g).or_default().install_snapshot((*snapshot).clone(), *keep_suffix)?;
                if *keep_suffix {
                    cache.compact(*g, snapshot.meta.index);
                } else {
                    cache.remove(*g);
                }
            }
            Effect::SetSnapshot { index, term, membership, data } => {
                let snap = recovery::local_snapshot(*index, *term, membership, data);
                groups.entry(*g).or_default().set_snapshot(snap)?;
            }
            Effect::Compact { index, term } => {
                groups.entry(*g).or_default().compact(*index, *term)?;
                cache.compact(*g, *index);
            }
            Effect::Remove => {
                groups.remove(g);
                cache.remove(*g);
            }
        }
    }
    Ok(())
}
