//! The write path: plan the batches of one group commit against the current state, encode each as a frame
//! into one reused buffer, append the buffer with one write, fdatasync once, then publish the new state to
//! readers. Rolling, purging, and the poisoning of the store after a failed write or sync live here too.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::sync::Arc;

use drakkar_raft::GroupId;

use crate::batch::WriteBatch;
use crate::codec::{self, EntryPos};
use crate::db::{Inner, State, oldest_needed};
use crate::error::{Error, OpError, Result};
use crate::format::{self, SegmentHeader, record_type};
use crate::fs::FsFile;
use crate::index::{GroupState, Loc};
use crate::plan::{self, Effect, Overlay};
use crate::recovery::{self, Active};

/// The writer's state, behind the writer mutex.
pub(crate) struct Writer {
    pub active: Active,
    pub next_seq: u64,
    /// Reused for every write.
    pub buf: Vec<u8>,
    /// Reused when a write starts a new segment.
    pub roll_buf: Vec<u8>,
    pub positions: Vec<EntryPos>,
    /// Set by the first failed write or sync: every later write is refused.
    pub poisoned: Option<String>,
}

/// One batch of a group commit, planned and encoded.
struct Planned<'b> {
    /// Its index in the group commit.
    k: usize,
    effects: Vec<(GroupId, Effect<'b>)>,
    /// Where its frame starts in the write buffer.
    frame: usize,
    /// Its entries in `Writer::positions`.
    positions: Range<usize>,
    seq: u64,
}

fn new_salt(number: u64) -> u32 {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(number);
    h.finish() as u32
}

fn too_large(n: usize) -> Error {
    Error::TooLarge(OpError::TooLarge(n as u64).to_string())
}

/// Poisons the writer with `e` and returns it.
pub(crate) fn poison(w: &mut Writer, e: Error) -> Error {
    w.poisoned.get_or_insert_with(|| e.to_string());
    e
}

/// Encodes a segment header and a checkpoint of `groups` (frame `seq`) into `out`; returns the salt.
pub(crate) fn encode_segment_start(
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
    codec::encode_checkpoint(out, sorted.into_iter()).map_err(|e| Error::TooLarge(e.to_string()))?;
    format::finish_frame(out, start, record_type::CHECKPOINT, seq, salt).map_err(too_large).map(|()| salt)
}

impl Inner {
    /// Stores the batches of one group commit with one write and one fdatasync. Returns one result per batch:
    /// a batch is rejected on its own; an I/O failure fails every batch that was to be written.
    pub(crate) fn write_batches(&self, batches: &[&WriteBatch]) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = batches.iter().map(|_| Ok(())).collect();
        let mut guard = match self.writer() {
            Ok(w) => w,
            Err(e) => return batches.iter().map(|_| Err(e.duplicate())).collect(),
        };
        let w = &mut *guard;
        w.buf.clear();
        w.positions.clear();
        let mut planned: Vec<Planned<'_>> = Vec::new();
        {
            let st = self.read_state();
            let mut overlays: HashMap<GroupId, Overlay<'_, '_>> = HashMap::new();
            for (k, batch) in batches.iter().enumerate() {
                let seq = w.next_seq + planned.len() as u64;
                match plan_one(&st, &mut overlays, batch, w, seq) {
                    Ok(Some((effects, frame, positions))) => {
                        planned.push(Planned { k, effects, frame, positions, seq })
                    }
                    Ok(None) => {}
                    Err(e) => results[k] = Err(e),
                }
            }
        }
        if planned.is_empty() {
            return results;
        }
        let fail = |results: &mut Vec<Result<()>>, planned: &[Planned<'_>], e: Error| {
            for p in planned {
                results[p.k] = Err(e.duplicate());
            }
        };
        let total = w.buf.len() as u64;
        let roll = w.active.size > w.active.data_start && w.active.size + total > self.options.segment_size;
        let (file, number, base) = if roll {
            match self.write_rolled(w, &mut planned) {
                Ok(x) => x,
                Err(e) => {
                    fail(&mut results, &planned, e);
                    return results;
                }
            }
        } else {
            let file = w.active.file.clone();
            if let Err(e) = file.append(&w.buf).and_then(|()| file.sync()) {
                // Best effort: cut what may have reached the file, so that a reopen by a process that does
                // not crash first cannot pick up a batch whose pages the kernel may have dropped.
                let _ = file.truncate(w.active.size).and_then(|()| file.sync());
                let e = poison(w, Error::io(self.segment_path(w.active.number), e));
                fail(&mut results, &planned, e);
                return results;
            }
            let base = w.active.size;
            w.active.size += total;
            w.next_seq += planned.len() as u64;
            (file, w.active.number, base)
        };
        let mut st = self.write_state();
        if roll {
            st.segments.insert(number, file);
            st.active = number;
        }
        for p in &planned {
            let positions = &w.positions[p.positions.clone()];
            if let Err(why) =
                apply_effects(&mut st, &p.effects, positions, number, base + p.frame as u64, p.seq)
            {
                drop(st);
                let e = poison(w, Error::Poisoned(format!("in-memory state diverged from the log: {why}")));
                fail(&mut results, &planned, e);
                return results;
            }
        }
        drop(st);
        drop(planned);
        if roll && self.options.auto_purge {
            // The batches are durable whatever happens here. A failed removal is retried at the next roll;
            // a failed directory sync poisons the store, so the next write reports it.
            let _ = self.purge_locked(w);
        }
        results
    }

    /// Starts a new segment holding a header, a checkpoint of every group, and the frames encoded in
    /// `w.buf` (resealed with the new segment's salt and the sequence numbers after the checkpoint's); writes
    /// it with one append and one fdatasync, then syncs the directory. Returns the file, its number, and the
    /// offset of the first frame of `w.buf` in it.
    fn write_rolled(
        &self,
        w: &mut Writer,
        planned: &mut [Planned<'_>],
    ) -> Result<(Arc<dyn FsFile>, u64, u64)> {
        let number = w.active.number + 1;
        let path = self.segment_path(number);
        let cp_seq = w.next_seq;
        w.roll_buf.clear();
        let salt = {
            let st = self.read_state();
            encode_segment_start(&mut w.roll_buf, number, cp_seq, &st.groups)?
        };
        for (i, p) in planned.iter_mut().enumerate() {
            p.seq = cp_seq + 1 + i as u64;
            format::reseal_frame(&mut w.buf, p.frame, p.seq, salt);
        }
        let data_start = w.roll_buf.len() as u64;
        w.roll_buf.extend_from_slice(&w.buf);
        let result = self.fs.create(&path).and_then(|file| {
            file.append(&w.roll_buf)?;
            file.sync()?;
            Ok(file)
        });
        let undo = |w: &mut Writer, e: Error| {
            // Best effort, as above: the new segment must not be picked up by a reopen without a crash.
            let _ = self.fs.remove(&path).and_then(|()| self.fs.sync_dir(&self.dir));
            poison(w, e)
        };
        let file = match result {
            Ok(f) => f,
            Err(e) => return Err(undo(w, Error::io(&path, e))),
        };
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            return Err(undo(w, Error::io(&self.dir, e)));
        }
        let size = w.roll_buf.len() as u64;
        w.active = Active { number, file: file.clone(), size, data_start, salt };
        w.next_seq = cp_seq + 1 + planned.len() as u64;
        Ok((file, number, data_start))
    }

    /// Deletes the segments before the oldest one still needed, oldest first, each deletion made durable
    /// before the next (so the remaining segments always form a contiguous range).
    pub(crate) fn purge_locked(&self, w: &mut Writer) -> Result<usize> {
        let victims: Vec<u64> = {
            let st = self.read_state();
            let keep_from = oldest_needed(&st);
            st.segments.range(..keep_from).map(|(n, _)| *n).collect()
        };
        for number in &victims {
            let path = self.segment_path(*number);
            self.fs.remove(&path).map_err(|e| Error::io(&path, e))?;
            self.write_state().segments.remove(number);
            if let Err(e) = self.fs.sync_dir(&self.dir) {
                return Err(poison(w, Error::io(&self.dir, e)));
            }
        }
        Ok(victims.len())
    }
}

type PlannedParts<'b> = (Vec<(GroupId, Effect<'b>)>, usize, Range<usize>);

/// Plans and encodes one batch as a frame at the end of `w.buf`, against the stored state with the batches
/// planned before it laid over. On rejection, nothing of it stays in the buffer or the overlays.
fn plan_one<'s, 'b>(
    st: &'s State,
    overlays: &mut HashMap<GroupId, Overlay<'s, 'b>>,
    batch: &'b WriteBatch,
    w: &mut Writer,
    seq: u64,
) -> Result<Option<PlannedParts<'b>>> {
    let start = w.buf.len();
    let pos_start = w.positions.len();
    let mut trial: HashMap<GroupId, Overlay<'s, 'b>> = HashMap::new();
    let mut effects = Vec::with_capacity(batch.ops.len());
    let mut attempt = || -> Result<()> {
        let frame = format::begin_frame(&mut w.buf);
        for (g, op) in &batch.ops {
            let ov = trial.entry(*g).or_insert_with(|| {
                overlays.get(g).cloned().unwrap_or_else(|| Overlay::new(st.groups.get(g)))
            });
            let rejected = |source| Error::Rejected { group: *g, source };
            let Some(e) = plan::plan(ov, op).map_err(rejected)? else { continue };
            codec::encode_effect(&mut w.buf, frame, *g, &e, &mut w.positions).map_err(rejected)?;
            ov.update(&e);
            effects.push((*g, e));
        }
        if effects.is_empty() {
            return Ok(());
        }
        format::finish_frame(&mut w.buf, frame, record_type::BATCH, seq, w.active.salt).map_err(too_large)
    };
    let outcome = attempt();
    if outcome.is_err() || effects.is_empty() {
        w.buf.truncate(start);
        w.positions.truncate(pos_start);
        return outcome.map(|()| None);
    }
    overlays.extend(trial);
    Ok(Some((effects, start, pos_start..w.positions.len())))
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
