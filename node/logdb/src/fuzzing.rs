//! Entry points for the fuzz targets under `/fuzz` (feature `fuzzing`), also run by a deterministic test.
//! Not a stable API. Each function must return normally whatever its input: no panic, no abort.

use std::path::Path;
use std::sync::Arc;

use drakkar_raft::{LogIndex, Storage};

use crate::fs::MemFs;
use crate::{LogDb, Options, codec, format};

/// Decodes `data` as a batch payload, as a checkpoint payload and as one entry.
pub fn decode_payloads(data: &[u8]) {
    let _ = codec::decode_batch(data, |d| {
        if let codec::Decoded::Append { entries, .. } = d {
            entries.for_each(drop);
        }
        Ok(())
    });
    let _ = codec::decode_checkpoint(data);
    let _ = codec::decode_entry(data, LogIndex(1));
}

/// Opens a log whose only segment holds `segment`, and reads every group of it if it opens. Returns true
/// if it opened.
pub fn recover_bytes(segment: &[u8]) -> bool {
    let fs = MemFs::new();
    fs.write_file(&Path::new("/fuzz").join(format::segment_name(1)), segment);
    let opts = Options { segment_size: 4096, cache_capacity: 1024, auto_purge: true };
    let Ok(db) = LogDb::open_with_fs(Arc::new(fs), "/fuzz", opts) else { return false };
    for g in db.groups() {
        let s = db.group(g);
        let _ = (s.initial_state(), s.snapshot());
        if let (Ok(first), Ok(last)) = (s.first_index(), s.last_index()) {
            let _ = s.entries(first, last.next(), u64::MAX);
            let _ = s.term(first.prev());
        }
    }
    true
}

/// Reads `data` as records (`type u8, length u16 LE, payload`...), wraps them in valid frames (so that the
/// checksums pass and the payloads reach replay), and opens the resulting log.
pub fn recover_records(data: &[u8]) -> bool {
    let mut records = Vec::new();
    let mut rest = data;
    while let [kind, a, b, tail @ ..] = rest {
        let n = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        records.push((*kind, &tail[..n]));
        rest = &tail[n..];
    }
    recover_bytes(&format::build_segment(1, 0, &records))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use drakkar_raft::{Entry, GroupId, HardState, Membership, ReplicaId, Rng, Term};

    use super::*;
    use crate::WriteBatch;

    /// The records of a small real log.
    fn sample_records() -> Vec<(u8, Vec<u8>)> {
        let fs = MemFs::new();
        let db = LogDb::open_with_fs(Arc::new(fs.clone()), "/d", Options::default()).unwrap();
        for round in 0..6u64 {
            let mut b = WriteBatch::new();
            for g in 1..=3 {
                let first = round * 4 + 1;
                let e = (first..first + 4).map(|i| Entry {
                    term: Term(1),
                    index: LogIndex(i),
                    data: Bytes::from(vec![7; 5]),
                    ..Default::default()
                });
                b.append(GroupId(g), e.collect::<Vec<_>>());
                b.set_hard_state(
                    GroupId(g),
                    HardState { term: Term(1), vote: Some(ReplicaId(1)), commit: LogIndex(first) },
                );
            }
            if round == 5 {
                b.create_snapshot(
                    GroupId(1),
                    LogIndex(8),
                    Membership::with_voters([ReplicaId(1)]),
                    Bytes::new(),
                );
                b.compact(GroupId(1), LogIndex(6));
                b.remove_group(GroupId(3));
            }
            db.save(&b).unwrap();
        }
        drop(db);
        let seg = fs.read_file(&Path::new("/d").join(format::segment_name(1))).unwrap();
        format::records(&seg)
    }

    /// Random and mutated payloads, wrapped in valid frames, never panic recovery; neither do raw bytes.
    #[test]
    fn recovery_survives_valid_frames_with_garbage_payloads() {
        let valid = sample_records();
        assert_eq!(valid.len(), 7, "a checkpoint and six batches");
        let refs: Vec<(u8, &[u8])> = valid.iter().map(|(k, p)| (*k, p.as_slice())).collect();
        assert!(recover_bytes(&format::build_segment(1, 0, &refs)));
        let mut rng = Rng::new(0xF022);
        let mut opened = 0;
        for round in 0..3000 {
            let mut recs = valid.clone();
            match round % 4 {
                0 => {
                    for _ in 0..rng.range(1, 4) {
                        let r = rng.range(0, recs.len() as u64) as usize;
                        let p = &mut recs[r].1;
                        if !p.is_empty() {
                            let i = rng.range(0, p.len() as u64) as usize;
                            p[i] = rng.next_u64() as u8;
                        }
                    }
                }
                1 => {
                    let r = rng.range(0, recs.len() as u64) as usize;
                    let cut = rng.range(0, recs[r].1.len() as u64 + 1) as usize;
                    recs[r].1.truncate(cut);
                }
                2 => {
                    let a = rng.range(0, recs.len() as u64) as usize;
                    let b = rng.range(0, recs.len() as u64) as usize;
                    recs.swap(a, b);
                    if rng.chance(1, 2) {
                        let dup = recs[a].clone();
                        recs.insert(b, dup);
                    }
                }
                _ => {
                    let r = rng.range(0, recs.len() as u64) as usize;
                    recs[r].1 = (0..rng.range(0, 80)).map(|_| rng.next_u64() as u8).collect();
                }
            }
            let refs: Vec<(u8, &[u8])> = recs.iter().map(|(k, p)| (*k, p.as_slice())).collect();
            opened += u32::from(recover_bytes(&format::build_segment(1, 0, &refs)));
            let raw: Vec<u8> = (0..rng.range(0, 300)).map(|_| rng.next_u64() as u8).collect();
            recover_records(&raw);
            decode_payloads(&raw);
        }
        assert!(opened > 100 && opened < 2900, "some mutations open, most do not: {opened}");
    }
}
