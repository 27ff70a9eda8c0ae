//! Encoding and decoding of record payloads: batches of effects, and checkpoints (see `docs/formats.md`).
//!
//! Decoding never panics and never allocates more than the input justifies: every count is checked against
//! the bytes left before anything is reserved.

use std::collections::BTreeSet;

use bytes::Bytes;
use drakkar_raft::{
    EntryKind, GroupId, HardState, LogIndex, Membership, ReplicaId, Snapshot, SnapshotMeta, Term,
};

use crate::error::OpError;
use crate::format::MAX_PAYLOAD;
use crate::index::GroupState;
use crate::plan::Effect;

/// Effect tags inside a batch payload.
mod tag {
    pub const APPEND: u8 = 1;
    pub const HARD_STATE: u8 = 2;
    pub const MEMBERSHIP: u8 = 3;
    pub const INSTALL_SNAPSHOT: u8 = 4;
    pub const SET_SNAPSHOT: u8 = 5;
    pub const COMPACT: u8 = 6;
    pub const REMOVE: u8 = 7;
}

/// The largest log index the store accepts (far beyond any real log): index arithmetic never overflows.
pub(crate) const MAX_INDEX: u64 = u64::MAX / 4;

/// Bytes before an entry's data: term u64, kind u8, data length u32.
pub(crate) const ENTRY_HEADER_LEN: usize = 13;

/// Where an encoded entry lies, relative to the start of its frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryPos {
    pub rel: u32,
    pub len: u32,
    pub crc: u32,
}

fn kind_code(k: EntryKind) -> Result<u8, OpError> {
    match k {
        EntryKind::Normal => Ok(0),
        EntryKind::ConfChange => Ok(1),
        EntryKind::Metadata => Ok(2),
        other => Err(OpError::UnsupportedKind(format!("{other:?}"))),
    }
}

fn kind_from(code: u8) -> Option<EntryKind> {
    match code {
        0 => Some(EntryKind::Normal),
        1 => Some(EntryKind::ConfChange),
        2 => Some(EntryKind::Metadata),
        _ => None,
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn len_u32(n: usize) -> Result<u32, OpError> {
    u32::try_from(n).ok().filter(|&n| n as usize <= MAX_PAYLOAD).ok_or(OpError::TooLarge(n as u64))
}

// The encoders destructure the core's types: a field added there fails to compile here instead of being
// silently dropped from the log.

fn put_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    let HardState { term, vote, commit } = hs;
    put_u64(out, term.0);
    out.push(u8::from(vote.is_some()));
    put_u64(out, vote.map_or(0, |v| v.0));
    put_u64(out, commit.0);
}

fn put_membership(out: &mut Vec<u8>, m: &Membership) -> Result<(), OpError> {
    let Membership { voters, non_voters, witnesses, removed } = m;
    for set in [voters, non_voters, witnesses, removed] {
        put_u32(out, len_u32(set.len())?);
        for id in set {
            put_u64(out, id.0);
        }
    }
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), OpError> {
    put_u32(out, len_u32(b.len())?);
    out.extend_from_slice(b);
    Ok(())
}

fn put_snapshot(out: &mut Vec<u8>, s: &Snapshot) -> Result<(), OpError> {
    let Snapshot { meta: SnapshotMeta { index, term, membership }, data } = s;
    put_u64(out, index.0);
    put_u64(out, term.0);
    put_membership(out, membership)?;
    put_bytes(out, data)
}

/// Appends one effect of `group` to the batch payload in `out` (whose frame starts at `frame_start`),
/// recording where each appended entry lies.
pub(crate) fn encode_effect(
    out: &mut Vec<u8>,
    frame_start: usize,
    group: GroupId,
    effect: &Effect<'_>,
    positions: &mut Vec<EntryPos>,
) -> Result<(), OpError> {
    let tag = match effect {
        Effect::Append(_) => tag::APPEND,
        Effect::HardState(_) => tag::HARD_STATE,
        Effect::Membership(_) => tag::MEMBERSHIP,
        Effect::InstallSnapshot { .. } => tag::INSTALL_SNAPSHOT,
        Effect::SetSnapshot { .. } => tag::SET_SNAPSHOT,
        Effect::Compact { .. } => tag::COMPACT,
        Effect::Remove => tag::REMOVE,
    };
    out.push(tag);
    put_u64(out, group.0);
    match effect {
        Effect::Append(entries) => {
            put_u64(out, entries.first().map_or(0, |e| e.index.0));
            put_u32(out, len_u32(entries.len())?);
            for e in entries.iter() {
                let drakkar_raft::Entry { term, index: _, kind, data } = e;
                let at = out.len();
                put_u64(out, term.0);
                out.push(kind_code(*kind)?);
                put_u32(out, len_u32(data.len())?);
                out.extend_from_slice(data);
                let len = out.len() - at;
                positions.push(EntryPos {
                    rel: len_u32(at - frame_start)?,
                    len: len_u32(len)?,
                    crc: crc32c::crc32c(&out[at..]),
                });
            }
        }
        Effect::HardState(hs) => put_hard_state(out, hs),
        Effect::Membership(m) => put_membership(out, m)?,
        Effect::InstallSnapshot { snapshot, keep_suffix } => {
            out.push(u8::from(*keep_suffix));
            put_snapshot(out, snapshot)?;
        }
        Effect::SetSnapshot { index, term, membership, data } => {
            put_u64(out, index.0);
            put_u64(out, term.0);
            put_membership(out, membership)?;
            put_bytes(out, data)?;
        }
        Effect::Compact { index, term } => {
            put_u64(out, index.0);
            put_u64(out, term.0);
        }
        Effect::Remove => {}
    }
    len_u32(out.len() - frame_start).map(|_| ())
}

/// Appends a checkpoint payload: the metadata of every group (`last` is the last index of its log).
pub(crate) fn encode_checkpoint<'a>(
    out: &mut Vec<u8>,
    groups: impl ExactSizeIterator<Item = (GroupId, &'a GroupState)>,
) -> Result<(), OpError> {
    put_u32(out, len_u32(groups.len())?);
    for (id, g) in groups {
        put_u64(out, id.0);
        put_hard_state(out, &g.hard_state);
        put_membership(out, &g.membership)?;
        put_snapshot(out, &g.snapshot)?;
        put_u64(out, g.base.0.0);
        put_u64(out, g.base.1.0);
        put_u64(out, g.last().0);
    }
    Ok(())
}

/// A payload that cannot be decoded: the offset in the payload and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DecodeError {
    pub at: usize,
    pub what: String,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err<T>(&self, what: &str) -> Result<T, DecodeError> {
        Err(DecodeError { at: self.pos, what: what.to_owned() })
    }

    fn left(&self) -> usize {
        self.b.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.pos.checked_add(n).and_then(|end| self.b.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => self.err("truncated payload"),
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn hard_state(&mut self) -> Result<HardState, DecodeError> {
        let term = Term(self.u64()?);
        let has_vote = self.u8()?;
        let vote = self.u64()?;
        let commit = LogIndex(self.u64()?);
        let vote = match has_vote {
            0 if vote == 0 => None,
            1 => Some(ReplicaId(vote)),
            _ => return self.err("bad vote"),
        };
        Ok(HardState { term, vote, commit })
    }

    fn ids(&mut self) -> Result<BTreeSet<ReplicaId>, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.left() / 8 {
            return self.err("member count exceeds the payload");
        }
        (0..n).map(|_| self.u64().map(ReplicaId)).collect()
    }

    fn membership(&mut self) -> Result<Membership, DecodeError> {
        Ok(Membership {
            voters: self.ids()?,
            non_voters: self.ids()?,
            witnesses: self.ids()?,
            removed: self.ids()?,
        })
    }

    fn data(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.bytes(n)?))
    }

    fn index(&mut self) -> Result<LogIndex, DecodeError> {
        match self.u64()? {
            i if i <= MAX_INDEX => Ok(LogIndex(i)),
            _ => self.err("index out of range"),
        }
    }

    fn snapshot(&mut self) -> Result<Snapshot, DecodeError> {
        let index = self.index()?;
        let term = Term(self.u64()?);
        let membership = self.membership()?;
        let data = self.data()?;
        Ok(Snapshot { meta: SnapshotMeta { index, term, membership }, data })
    }
}

/// One encoded entry, as found in a payload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawEntry<'a> {
    pub term: Term,
    /// Offset of the entry's first byte in the payload.
    pub at: usize,
    /// Encoded bytes (header and data).
    pub bytes: &'a [u8],
}

/// Parses the header of the encoded entry at the start of `b`: term, kind, data length.
pub(crate) fn parse_entry_header(b: &[u8]) -> Option<(Term, EntryKind, usize)> {
    let h = b.get(..ENTRY_HEADER_LEN)?;
    let mut t = [0u8; 8];
    t.copy_from_slice(&h[..8]);
    let kind = kind_from(h[8])?;
    let mut l = [0u8; 4];
    l.copy_from_slice(&h[9..13]);
    Some((Term(u64::from_le_bytes(t)), kind, u32::from_le_bytes(l) as usize))
}

/// Parses the encoded entry at the start of `b`; returns it and its encoded length.
fn parse_entry(b: &[u8]) -> Option<(Term, EntryKind, &[u8], usize)> {
    let (term, kind, len) = parse_entry_header(b)?;
    let data = b.get(ENTRY_HEADER_LEN..ENTRY_HEADER_LEN.checked_add(len)?)?;
    Some((term, kind, data, ENTRY_HEADER_LEN + len))
}

/// Decodes one entry read back from disk (exactly its encoded bytes) as the entry at `index`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode_entry(b: &[u8], index: LogIndex) -> Option<drakkar_raft::Entry> {
    let (term, kind, data, len) = parse_entry(b)?;
    (len == b.len()).then(|| drakkar_raft::Entry { term, index, kind, data: Bytes::copy_from_slice(data) })
}

/// The entries of one append, already checked to be well formed.
#[derive(Clone, Debug)]
pub(crate) struct RawEntries<'a> {
    payload: &'a [u8],
    pos: usize,
    left: u32,
}

impl<'a> Iterator for RawEntries<'a> {
    type Item = RawEntry<'a>;

    fn next(&mut self) -> Option<RawEntry<'a>> {
        if self.left == 0 {
            return None;
        }
        let (term, _, _, len) = parse_entry(self.payload.get(self.pos..)?)?;
        let e = RawEntry { term, at: self.pos, bytes: self.payload.get(self.pos..self.pos + len)? };
        self.pos += len;
        self.left -= 1;
        Some(e)
    }
}

/// One decoded effect of a batch.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    Append { group: GroupId, first: LogIndex, entries: RawEntries<'a> },
    HardState { group: GroupId, hard_state: HardState },
    Membership { group: GroupId, membership: Membership },
    InstallSnapshot { group: GroupId, snapshot: Snapshot, keep_suffix: bool },
    SetSnapshot { group: GroupId, snapshot: Snapshot },
    Compact { group: GroupId, index: LogIndex, term: Term },
    Remove { group: GroupId },
}

/// Decodes a batch payload, handing each effect to `apply` in order. `apply` may refuse an effect (the log
/// contradicts itself); its reason is returned with the effect's offset.
pub(crate) fn decode_batch<'a>(
    payload: &'a [u8],
    mut apply: impl FnMut(Decoded<'a>) -> Result<(), String>,
) -> Result<(), DecodeError> {
    let mut r = Reader { b: payload, pos: 0 };
    if payload.is_empty() {
        return r.err("empty batch");
    }
    while r.left() > 0 {
        let at = r.pos;
        let t = r.u8()?;
        let group = GroupId(r.u64()?);
        let d = match t {
            tag::APPEND => {
                let first = r.index()?;
                let count = r.u32()?;
                if first.0 == 0 || count == 0 || first.0 + u64::from(count) > MAX_INDEX {
                    return r.err("bad append");
                }
                let start = r.pos;
                for _ in 0..count {
                    match r.b.get(r.pos..).and_then(parse_entry) {
                        Some((_, _, _, len)) => r.pos += len,
                        None => return r.err("bad entry"),
                    }
                }
                Decoded::Append { group, first, entries: RawEntries { payload, pos: start, left: count } }
            }
            tag::HARD_STATE => Decoded::HardState { group, hard_state: r.hard_state()? },
            tag::MEMBERSHIP => Decoded::Membership { group, membership: r.membership()? },
            tag::INSTALL_SNAPSHOT => {
                let keep_suffix = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return r.err("bad flag"),
                };
                Decoded::InstallSnapshot { group, keep_suffix, snapshot: r.snapshot()? }
            }
            tag::SET_SNAPSHOT => Decoded::SetSnapshot { group, snapshot: r.snapshot()? },
            tag::COMPACT => Decoded::Compact { group, index: r.index()?, term: Term(r.u64()?) },
            tag::REMOVE => Decoded::Remove { group },
            _ => return Err(DecodeError { at, what: format!("unknown effect tag {t}") }),
        };
        apply(d).map_err(|what| DecodeError { at, what })?;
    }
    Ok(())
}

/// One group of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CheckpointGroup {
    pub group: GroupId,
    pub hard_state: HardState,
    pub membership: Membership,
    pub snapshot: Snapshot,
    pub base: (LogIndex, Term),
    pub last: LogIndex,
}

/// Decodes a checkpoint payload.
pub(crate) fn decode_checkpoint(payload: &[u8]) -> Result<Vec<CheckpointGroup>, DecodeError> {
    let mut r = Reader { b: payload, pos: 0 };
    let n = r.u32()? as usize;
    // Each group takes more than 64 bytes.
    if n > r.left() / 64 {
        return r.err("group count exceeds the payload");
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.pos;
        let group = GroupId(r.u64()?);
        let hard_state = r.hard_state()?;
        let membership = r.membership()?;
        let snapshot = r.snapshot()?;
        let base = (r.index()?, Term(r.u64()?));
        let last = r.index()?;
        if last < base.0 || base.0 > snapshot.meta.index {
            return Err(DecodeError { at, what: "inconsistent group".into() });
        }
        out.push(CheckpointGroup { group, hard_state, membership, snapshot, base, last });
    }
    if r.left() != 0 {
        return r.err("trailing bytes");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drakkar_raft::{Entry, Rng};

    fn sample_effects() -> (Vec<Entry>, HardState, Membership, Snapshot, Bytes) {
        let entries: Vec<Entry> = (5..9)
            .map(|i| Entry {
                term: Term(3),
                index: LogIndex(i),
                kind: if i == 6 { EntryKind::ConfChange } else { EntryKind::Normal },
                data: Bytes::from(vec![i as u8; i as usize]),
            })
            .collect();
        let hs = HardState { term: Term(4), vote: Some(ReplicaId(2)), commit: LogIndex(7) };
        let mut m = Membership::with_voters([ReplicaId(1), ReplicaId(2)]);
        m.removed.insert(ReplicaId(9));
        let snap = Snapshot {
            meta: SnapshotMeta { index: LogIndex(4), term: Term(2), membership: m.clone() },
            data: Bytes::from_static(b"ref"),
        };
        (entries, hs, m, snap, Bytes::from_static(b"local"))
    }

    fn encode_all(out: &mut Vec<u8>) -> Vec<EntryPos> {
        let (entries, hs, m, snap, data) = sample_effects();
        let effects = [
            Effect::Append(&entries),
            Effect::HardState(hs),
            Effect::Membership(&m),
            Effect::InstallSnapshot { snapshot: &snap, keep_suffix: true },
            Effect::SetSnapshot { index: LogIndex(6), term: Term(3), membership: &m, data: &data },
            Effect::Compact { index: LogIndex(5), term: Term(3) },
            Effect::Remove,
        ];
        let mut pos = Vec::new();
        for (i, e) in effects.iter().enumerate() {
            encode_effect(out, 0, GroupId(i as u64 + 1), e, &mut pos).unwrap();
        }
        pos
    }

    #[test]
    fn batch_roundtrip() {
        let (entries, hs, m, snap, data) = sample_effects();
        let mut out = Vec::new();
        let pos = encode_all(&mut out);
        assert_eq!(pos.len(), entries.len());
        for (p, e) in pos.iter().zip(&entries) {
            let b = &out[p.rel as usize..(p.rel + p.len) as usize];
            assert_eq!(crc32c::crc32c(b), p.crc);
            assert_eq!(decode_entry(b, e.index).as_ref(), Some(e));
        }
        let mut seen = Vec::new();
        decode_batch(&out, |d| {
            seen.push(match d {
                Decoded::Append { group, first, entries: raw } => {
                    let got: Vec<Entry> = raw
                        .enumerate()
                        .map(|(i, r)| decode_entry(r.bytes, LogIndex(first.0 + i as u64)).unwrap())
                        .collect();
                    assert_eq!(got, entries);
                    group.0
                }
                Decoded::HardState { group, hard_state } => {
                    assert_eq!(hard_state, hs);
                    group.0
                }
                Decoded::Membership { group, membership } => {
                    assert_eq!(membership, m);
                    group.0
                }
                Decoded::InstallSnapshot { group, snapshot, keep_suffix } => {
                    assert!(keep_suffix);
                    assert_eq!(snapshot, snap);
                    group.0
                }
                Decoded::SetSnapshot { group, snapshot } => {
                    assert_eq!((snapshot.meta.index, &snapshot.data), (LogIndex(6), &data));
                    group.0
                }
                Decoded::Compact { group, index, term } => {
                    assert_eq!((index, term), (LogIndex(5), Term(3)));
                    group.0
                }
                Decoded::Remove { group } => group.0,
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn checkpoint_roundtrip() {
        let (_, hs, m, snap, _) = sample_effects();
        let g = GroupState {
            hard_state: hs,
            membership: m.clone(),
            snapshot: snap.clone(),
            base: (LogIndex(4), Term(2)),
            hole_end: LogIndex(9),
            ..Default::default()
        };
        let mut out = Vec::new();
        encode_checkpoint(&mut out, [(GroupId(3), &g), (GroupId(8), &GroupState::default())].into_iter())
            .unwrap();
        let got = decode_checkpoint(&out).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            CheckpointGroup {
                group: GroupId(3),
                hard_state: hs,
                membership: m,
                snapshot: snap,
                base: (LogIndex(4), Term(2)),
                last: LogIndex(9)
            }
        );
        assert_eq!(got[1].last, LogIndex(0));
    }

    /// Random bytes, truncations and mutations of valid payloads never panic the decoders.
    #[test]
    fn decoders_survive_garbage() {
        let mut valid = Vec::new();
        encode_all(&mut valid);
        let mut cp = Vec::new();
        let g = GroupState::default();
        encode_checkpoint(&mut cp, [(GroupId(1), &g)].into_iter()).unwrap();
        let mut rng = Rng::new(0x5eed);
        for round in 0..20_000u64 {
            let base = if round % 2 == 0 { &valid } else { &cp };
            let mut b = match round % 5 {
                0 => (0..rng.range(0, 200)).map(|_| rng.next_u64() as u8).collect(),
                1 => base[..rng.range(0, base.len() as u64 + 1) as usize].to_vec(),
                _ => {
                    let mut b = base.clone();
                    for _ in 0..rng.range(1, 4) {
                        let i = rng.range(0, b.len() as u64) as usize;
                        b[i] = rng.next_u64() as u8;
                    }
                    b
                }
            };
            if round % 7 == 0 {
                b.extend((0..rng.range(0, 16)).map(|_| 0xff));
            }
            let _ = decode_batch(&b, |d| {
                if let Decoded::Append { entries, .. } = d {
                    entries.for_each(drop);
                }
                Ok(())
            });
            let _ = decode_checkpoint(&b);
            let _ = decode_entry(&b, LogIndex(1));
        }
    }
}
