//! Entry points for the fuzz targets under `/fuzz` (feature `fuzzing`), also run by a deterministic test.
//! Not a stable API. Each function returns normally whatever its input, or panics when an invariant it
//! checks fails (the fuzzer reports both the same way).

use std::any::TypeId;
use std::path::Path;

use crate::peer::codec::bounds_of;
use crate::peer::convert::{batch_from_pb, incarnation_halves, message_from_pb, message_to_pb};
use crate::peer::pb;

/// Decodes a message of the node-to-node protocol as the peer service does (its bounded codec).
fn peer_decode<T: prost::Message + Default + 'static>(data: &[u8]) -> Option<T> {
    drakkar_client::codec::decode_with(bounds_of(TypeId::of::<T>()), data).ok()
}

/// Whether [`message_from_pb`] must take `m`: its kind and every entry's kind are known.
fn convertible(m: &pb::RaftMessage) -> bool {
    pb::MessageKind::try_from(m.kind).is_ok()
        && m.entries.iter().all(|e| pb::EntryKind::try_from(e.kind).is_ok())
}

/// `m` as [`message_to_pb`] writes the message it converts to: membership lists sorted without
/// duplicates, an absent snapshot membership empty.
fn canonical(mut m: pb::RaftMessage) -> pb::RaftMessage {
    if let Some(s) = &mut m.snapshot {
        let ms = s.membership.get_or_insert_with(Default::default);
        for l in [&mut ms.voters, &mut ms.non_voters, &mut ms.witnesses, &mut ms.removed] {
            l.sort_unstable();
            l.dedup();
        }
    }
    m
}

/// Converts `m` as the receiving side does. Invariants (convert.rs): a message of a known kind whose
/// entries all have known kinds converts, any other is refused; what converts keeps every field (it
/// converts back to `m`, up to the order and repetition of membership ids).
fn check_message(m: pb::RaftMessage) -> bool {
    let expect = convertible(&m);
    let Some(converted) = message_from_pb(m.clone()) else {
        assert!(!expect, "a valid message refused: {m:?}");
        return false;
    };
    assert!(expect, "a message of an unknown kind converted: {m:?}");
    let back = message_to_pb(&converted).expect("a converted message converts back");
    assert_eq!(back, canonical(m), "a field lost in conversion");
    true
}

/// Decodes `data` as a `RaftBatch` (the peer service's codec), converts it as the service does, and
/// checks each message (see [`check_message`]), that exactly the convertible messages reach Raft, in
/// order and with their groups, and that the sender, its incarnation and the `reused` notices are kept.
/// Returns how many messages converted.
pub fn raft_batch(data: &[u8]) -> usize {
    let Some(b) = peer_decode::<pb::RaftBatch>(data) else { return 0 };
    let expected: Vec<(u64, pb::RaftMessage)> = b
        .messages
        .iter()
        .filter_map(|gm| gm.message.clone().filter(convertible).map(|m| (gm.group, m)))
        .collect();
    for gm in &b.messages {
        if let Some(m) = &gm.message {
            check_message(m.clone());
        }
    }
    let converted = batch_from_pb(b.clone());
    assert_eq!(converted.from, b.from);
    assert_eq!(incarnation_halves(converted.incarnation), (b.incarnation_hi, b.incarnation_lo));
    let groups: Vec<u64> = converted.messages.iter().map(|(g, _)| g.0).collect();
    assert_eq!(groups, expected.iter().map(|(g, _)| *g).collect::<Vec<_>>(), "messages lost or invented");
    for ((_, m), (_, want)) in converted.messages.iter().zip(expected) {
        assert_eq!(message_to_pb(m), Some(canonical(want)), "a field lost in a batch");
    }
    let reused: Vec<(u64, u64)> = converted.reused.iter().map(|(g, r)| (g.0, r.0)).collect();
    assert_eq!(reused, b.reused.iter().map(|r| (r.group, r.replica)).collect::<Vec<_>>());
    converted.messages.len()
}

/// Decodes `data` as a `RaftSnapshotChunk` and, if it is a header, converts its message as the snapshot
/// service does (see [`check_message`]). Returns whether a message converted.
pub fn snapshot_chunk(data: &[u8]) -> bool {
    match peer_decode::<pb::RaftSnapshotChunk>(data) {
        Some(pb::RaftSnapshotChunk { part: Some(pb::raft_snapshot_chunk::Part::Header(h)) }) => {
            h.message.is_some_and(check_message)
        }
        _ => false,
    }
}

/// Reads `data` as the group manifest (as `restore_groups` does, UTF-8 first). Invariants: what parses
/// writes back (as `write_manifest` does) to a manifest that parses the same; a refusal names the file.
/// Returns whether it parsed.
pub fn manifest(data: &[u8]) -> bool {
    let path = Path::new("/data/groups.manifest");
    let Ok(text) = std::str::from_utf8(data) else { return false };
    match crate::parse_manifest(text, path) {
        Ok(kv) => {
            let again =
                crate::parse_manifest(&crate::manifest_text(&kv), path).expect("a written manifest parses");
            assert_eq!(again, kv, "a manifest that does not round-trip");
            true
        }
        Err(e) => {
            assert!(e.to_string().contains("groups.manifest"), "an error naming no file: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use drakkar::transport::MessageBatch;
    use drakkar_raft::{
        Entry, GroupId, LogIndex, Membership, Message, MessageKind, ReplicaId, Rng, Snapshot, SnapshotMeta,
        Term,
    };
    use prost::Message as _;

    use super::*;

    fn message() -> Message {
        Message {
            kind: MessageKind::Snapshot,
            from: ReplicaId(1),
            to: ReplicaId(2),
            term: Term(3),
            entries: vec![Entry {
                term: Term(3),
                index: LogIndex(8),
                data: Bytes::from_static(b"e"),
                ..Default::default()
            }],
            snapshot: Some(Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(7),
                    term: Term(2),
                    membership: Membership::with_voters([1, 2, 3].map(ReplicaId)),
                },
                data: Bytes::new(),
            }),
            ..Default::default()
        }
    }

    fn samples() -> Vec<Vec<u8>> {
        let batch = MessageBatch {
            from: "node-1:7000".into(),
            incarnation: 5 << 64 | 6,
            messages: vec![(GroupId(4), message()), (GroupId(5), Message::default())],
            reused: vec![(GroupId(4), ReplicaId(9))],
        };
        let header = pb::RaftSnapshotHeader {
            from: "node-1:7000".into(),
            group: 4,
            message: message_to_pb(&message()),
            size: 10,
            ..Default::default()
        };
        let chunk = pb::RaftSnapshotChunk { part: Some(pb::raft_snapshot_chunk::Part::Header(header)) };
        vec![
            crate::peer::convert::batch_to_pb(&batch).encode_to_vec(),
            chunk.encode_to_vec(),
            b"# drakkar KV groups: group replica kind\n1 2 kv-memory\n3 4 kv-disk\n".to_vec(),
        ]
    }

    /// With `DRAKKAR_FUZZ_SEEDS` set, writes `samples` as seeds of fuzz target `target`, in
    /// `$DRAKKAR_FUZZ_SEEDS/<target>/` (see docs/development.md, "Fuzzing").
    fn write_seeds(target: &str, samples: &[&[u8]]) {
        let Some(dir) = std::env::var_os("DRAKKAR_FUZZ_SEEDS") else { return };
        let dir = std::path::Path::new(&dir).join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in samples.iter().enumerate() {
            std::fs::write(dir.join(format!("{}-seed-{i}", env!("CARGO_PKG_NAME"))), s).unwrap();
        }
    }

    /// The real encoders' output converts; mutations never panic; a bad manifest is refused by name.
    #[test]
    fn entry_points_take_valid_and_mutated_input() {
        let s = samples();
        assert_eq!(raft_batch(&s[0]), 2);
        assert!(snapshot_chunk(&s[1]));
        assert!(manifest(&s[2]));
        assert!(!manifest(b"1 2 kv-memory\n1 3 kv-disk\n"), "a group listed twice");
        assert!(!manifest(b"1 2\n"));
        write_seeds("peer_convert", &[&s[0], &s[1]]);
        write_seeds("identity_files", &[&s[2]]);
        let mut rng = Rng::new(0x9EE2);
        for _ in 0..2000 {
            let mut m = s[rng.range(0, s.len() as u64) as usize].clone();
            for _ in 0..rng.range(1, 4) {
                let i = rng.range(0, m.len() as u64) as usize;
                m[i] = rng.next_u64() as u8;
            }
            m.truncate(rng.range(0, m.len() as u64 + 1) as usize);
            raft_batch(&m);
            snapshot_chunk(&m);
            manifest(&m);
        }
    }
}
