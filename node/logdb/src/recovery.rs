//! Opening a log: scan every segment in order, verify every checksum, replay every record into the
//! per-group state, and cut a torn tail off the last segment.
//!
//! What is torn and what is damage (see `docs/formats.md`): only the last segment may end with a frame that
//! runs past the end of the file, or whose header or footer is all zero, and only if no valid frame follows
//! it; those bytes were never acknowledged (every save ends with an fdatasync, and the next write starts
//! only after it succeeded), so they are cut. Anything else that fails a check is reported as
//! [`Error::Corruption`] with the file and offset, and the log does not open.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use drakkar_raft::{GroupId, LogIndex, Snapshot, SnapshotMeta};

use crate::codec::{self, CheckpointGroup, Decoded};
use crate::error::{Error, Result};
use crate::format::{self, FrameError, HeaderError, SegmentHeader, record_type};
use crate::fs::{FileSystem, FsFile};
use crate::index::{GroupState, Loc};

/// The segment new writes go to.
pub(crate) struct Active {
    pub number: u64,
    pub file: Arc<dyn FsFile>,
    /// Bytes in the file.
    pub size: u64,
    /// Size right after the header and checkpoint: a segment this small is never rolled.
    pub data_start: u64,
    pub salt: u32,
}

/// What recovery found.
pub(crate) struct Recovered {
    pub groups: HashMap<GroupId, GroupState>,
    /// Every segment kept, by number (the active one included).
    pub segments: BTreeMap<u64, Arc<dyn FsFile>>,
    /// The last segment, if writes can continue in it.
    pub active: Option<Active>,
    pub next_seq: u64,
    pub next_number: u64,
}

/// Replay state.
struct Replay {
    groups: HashMap<GroupId, GroupState>,
    /// True until the first record: the first checkpoint defines the state instead of being checked.
    fresh: bool,
    last_seq: Option<u64>,
}

fn frame_error(e: FrameError) -> &'static str {
    match e {
        FrameError::Incomplete => "record runs past the end of the file",
        FrameError::ZeroHeader => "record header is zero",
        FrameError::ZeroFooter => "record footer is zero",
        FrameError::Corrupt(why) => why,
    }
}

impl Replay {
    fn checkpoint(&mut self, groups: Vec<CheckpointGroup>) -> Result<(), String> {
        if self.fresh {
            for c in groups {
                let g = GroupState {
                    hard_state: c.hard_state,
                    membership: c.membership,
                    snapshot: c.snapshot,
                    base: c.base,
                    // Entries (base, last] were written in segments before this one, which may be purged:
                    // a later compaction must cover them (checked at the end).
                    hole_end: c.last,
                    locs: Default::default(),
                };
                if self.groups.insert(c.group, g).is_some() {
                    return Err(format!("group {} appears twice", c.group));
                }
            }
            return Ok(());
        }
        if groups.len() != self.groups.len() {
            return Err(format!(
                "checkpoint lists {} groups, the log before it has {}",
                groups.len(),
                self.groups.len()
            ));
        }
        for c in groups {
            let Some(g) = self.groups.get(&c.group) else {
                return Err(format!("checkpoint lists unknown group {}", c.group));
            };
            if g.hard_state != c.hard_state
                || g.membership != c.membership
                || g.snapshot != c.snapshot
                || g.base != c.base
                || g.last() != c.last
            {
                return Err(format!("checkpoint disagrees with the log for group {}", c.group));
            }
        }
        Ok(())
    }

    fn batch(&mut self, payload: &[u8], seg: u32, payload_off: u32) -> Result<(), codec::DecodeError> {
        let groups = &mut self.groups;
        codec::decode_batch(payload, |d| match d {
            Decoded::Append { group, first, entries } => {
                let locs = entries.map(|r| Loc {
                    term: r.term.0,
                    seg,
                    off: payload_off + r.at as u32,
                    len: r.bytes.len() as u32,
                    crc: crc32c::crc32c(r.bytes),
                });
                groups.entry(group).or_default().append(first, locs)
            }
            Decoded::HardState { group, hard_state } => {
                groups.entry(group).or_default().hard_state = hard_state;
                Ok(())
            }
            Decoded::Membership { group, membership } => {
                groups.entry(group).or_default().membership = membership;
                Ok(())
            }
            Decoded::InstallSnapshot { group, snapshot, keep_suffix } => {
                groups.entry(group).or_default().install_snapshot(snapshot, keep_suffix)
            }
            Decoded::SetSnapshot { group, snapshot } => {
                groups.entry(group).or_default().set_snapshot(snapshot)
            }
            Decoded::Compact { group, index, term } => groups.entry(group).or_default().compact(index, term),
            Decoded::Remove { group } => {
                groups.remove(&group);
                Ok(())
            }
        })
    }
}

/// Reads the log in `dir`.
pub(crate) fn recover(fs: &dyn FileSystem, dir: &Path) -> Result<Recovered> {
    let mut numbers: Vec<u64> = fs
        .list(dir)
        .map_err(|e| Error::io(dir, e))?
        .iter()
        .filter_map(|n| format::parse_segment_name(n))
        .collect();
    numbers.sort_unstable();
    for w in numbers.windows(2) {
        if w[1] != w[0] + 1 {
            let missing = dir.join(format::segment_name(w[0] + 1));
            return Err(Error::corrupt(missing, 0, "segment missing: the log has a gap"));
        }
    }
    let mut replay = Replay { groups: HashMap::new(), fresh: true, last_seq: None };
    let mut segments = BTreeMap::new();
    let mut active = None;
    let mut next_number = numbers.first().copied().unwrap_or(1);
    for (k, &number) in numbers.iter().enumerate() {
        let is_last = k + 1 == numbers.len();
        let path = dir.join(format::segment_name(number));
        let file = fs.open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.len().map_err(|e| Error::io(&path, e))?;
        let len = usize::try_from(len).map_err(|_| Error::corrupt(&path, 0, "segment too large"))?;
        let mut data = vec![0u8; len];
        file.read_at(&mut data, 0).map_err(|e| Error::io(&path, e))?;
        let header = match SegmentHeader::decode(&data) {
            Ok(h) => h,
            Err(HeaderError::Incomplete) if is_last => {
                // Created, but its first write never became durable: nothing in it was acknowledged.
                drop(file);
                fs.remove(&path).map_err(|e| Error::io(&path, e))?;
                fs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
                next_number = number;
                break;
            }
            Err(HeaderError::Incomplete) => return Err(Error::corrupt(&path, 0, "segment header missing")),
            Err(HeaderError::Corrupt(why)) => return Err(Error::corrupt(&path, 0, why)),
            Err(HeaderError::Version(version)) => return Err(Error::UnsupportedVersion { path, version }),
        };
        if header.number != number {
            return Err(Error::corrupt(&path, 0, format!("header names segment {}", header.number)));
        }
        let seg = u32::try_from(number).map_err(|_| Error::corrupt(&path, 0, "segment number too large"))?;
        let mut pos = format::SEGMENT_HEADER_LEN;
        let mut data_start = None;
        while pos < data.len() {
            let frame = match format::parse_frame(&data, pos, header.salt) {
                Ok(f) => f,
                Err(e) => {
                    if !is_last || !e.looks_torn() {
                        return Err(Error::corrupt(&path, pos as u64, frame_error(e)));
                    }
                    let after = replay.last_seq.unwrap_or(0);
                    if let Some(at) = format::find_later_frame(&data, pos + 1, header.salt, after) {
                        let why = format!("{}, yet a valid record follows at offset {at}", frame_error(e));
                        return Err(Error::corrupt(&path, pos as u64, why));
                    }
                    break; // a torn tail
                }
            };
            if u32::try_from(frame.end).is_err() {
                return Err(Error::corrupt(&path, pos as u64, "record ends past 4 GiB"));
            }
            if let Some(last) = replay.last_seq
                && frame.seq != last.wrapping_add(1)
            {
                let why = format!("record sequence number {} follows {last}", frame.seq);
                return Err(Error::corrupt(&path, pos as u64, why));
            }
            let is_checkpoint = frame.kind == record_type::CHECKPOINT;
            if is_checkpoint != data_start.is_none() {
                let why =
                    if is_checkpoint { "checkpoint after the first record" } else { "no checkpoint first" };
                return Err(Error::corrupt(&path, pos as u64, why));
            }
            let payload = &data[frame.payload.clone()];
            let applied = if is_checkpoint {
                codec::decode_checkpoint(payload)
                    .map_err(|e| format!("{} at payload offset {}", e.what, e.at))
                    .and_then(|groups| replay.checkpoint(groups))
            } else {
                let off = u32::try_from(frame.payload.start)
                    .map_err(|_| Error::corrupt(&path, pos as u64, "offset too large"))?;
                replay.batch(payload, seg, off).map_err(|e| format!("{} at payload offset {}", e.what, e.at))
            };
            applied.map_err(|why| Error::corrupt(&path, pos as u64, why))?;
            replay.fresh = false;
            replay.last_seq = Some(frame.seq);
            pos = frame.end;
            data_start.get_or_insert(pos as u64);
        }
        if !is_last {
            segments.insert(number, file);
            next_number = number + 1;
            continue;
        }
        let Some(data_start) = data_start else {
            // No complete checkpoint: the segment was being created when the process stopped.
            drop(file);
            fs.remove(&path).map_err(|e| Error::io(&path, e))?;
            fs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
            next_number = number;
            break;
        };
        if pos < data.len() {
            file.truncate(pos as u64).map_err(|e| Error::io(&path, e))?;
            file.sync().map_err(|e| Error::io(&path, e))?;
        }
        segments.insert(number, file.clone());
        active = Some(Active { number, file, size: pos as u64, data_start, salt: header.salt });
        next_number = number + 1;
    }
    let first_path = || dir.join(format::segment_name(numbers.first().copied().unwrap_or(0)));
    for (id, g) in &replay.groups {
        if g.hole_end != g.base.0 {
            let why = format!(
                "entries ({}, {}] of group {id} are in no segment (purged too early, or a file is missing)",
                g.base.0, g.hole_end
            );
            return Err(Error::corrupt(first_path(), 0, why));
        }
    }
    Ok(Recovered {
        groups: replay.groups,
        segments,
        active,
        next_seq: replay.last_seq.map_or(1, |s| s + 1),
        next_number,
    })
}

/// A snapshot value from its parts (used by the write path to record a local snapshot).
pub(crate) fn local_snapshot(
    index: LogIndex,
    term: drakkar_raft::Term,
    membership: &drakkar_raft::Membership,
    data: &bytes::Bytes,
) -> Snapshot {
    Snapshot { meta: SnapshotMeta { index, term, membership: membership.clone() }, data: data.clone() }
}
