//! Entry points for the fuzz targets under `/fuzz` (feature `fuzzing`), also run by a deterministic test.
//! Not a stable API. Each function returns normally whatever its input (no panic, no abort, no
//! allocation the input does not pay for), or panics when an invariant it checks fails: the fuzzer
//! reports both the same way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use drakkar_raft::{ConfChange, GroupId, ReplicaId};

use crate::engine::{decode_cc_context, encode_cc_context};
use crate::identity::{PeerIdentities, Verdict};
use crate::payload::{ProposalId, SessionRef};
use crate::session::{SessionCheck, Sessions};
use crate::snapshot::{self, SnapshotHeader};
use crate::statemachine::SmResult;

/// A fresh directory of its own under the system's temporary directory, removed on drop (tests run
/// these entry points on several threads at once).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("drakkar-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens the snapshot file at `path` as a replica recovering from it does (verify, open, session
/// table, then the state machine's stream read to its end). Returns whether it verified. Invariant: a
/// file that verifies opens, with the same header.
fn open_as_recovery(path: &Path) -> bool {
    let Ok(verified) = snapshot::verify_snapshot(path) else { return false };
    let (header, mut body) = match snapshot::open_snapshot(path) {
        Ok(opened) => opened,
        Err(e) => panic!("verified, then refused: {e}"),
    };
    assert_eq!(header, verified, "verify and open read different headers");
    if Sessions::load(&mut body).is_ok() {
        let _ = snapshot::read_through(&mut body);
    }
    true
}

/// Writes `data` as a snapshot file, then `data` followed by its checksum (so that the header and the
/// body are reached), and opens each as a recovering replica does. Returns whether the second verified.
pub fn snapshot_file(data: &[u8]) -> bool {
    let dir = Scratch::new();
    let raw = dir.0.join("raw.snap");
    std::fs::write(&raw, data).expect("writing the scratch file");
    open_as_recovery(&raw);
    let sealed = dir.0.join("sealed.snap");
    let mut with_crc = data.to_vec();
    with_crc.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    std::fs::write(&sealed, &with_crc).expect("writing the scratch file");
    open_as_recovery(&sealed)
}

/// Reads `data` as a session table ([`Sessions::load`]); if it loads, checks that it saves and loads
/// back the same, then applies the rest of `data` to it as operations (27 bytes each: a kind, three
/// words, a log index step) and checks the table's invariants after each. Operations come at increasing
/// log indexes from 1, as committed entries do. Returns whether it loaded.
pub fn session_table(data: &[u8]) -> bool {
    let mut rest = data;
    let Ok(mut t) = Sessions::load(&mut rest) else { return false };
    let mut saved = Vec::new();
    t.save(&mut saved).expect("saving to memory");
    assert_eq!(
        Sessions::load(&mut saved.as_slice()).ok().as_ref(),
        Some(&t),
        "the table does not round-trip"
    );
    t.check_invariants().unwrap_or_else(|e| panic!("loaded: {e}"));
    let mut index = 0u64; // The first operation is at index 1 at least: log index 0 holds no entry.
    for op in rest.chunks_exact(27) {
        let word = |i: usize| u64::from_le_bytes(op[1 + 8 * i..9 + 8 * i].try_into().expect("8 bytes"));
        let (a, b, c) = (word(0), word(1), word(2));
        index = index.saturating_add(1 + u64::from(u16::from_le_bytes([op[25], op[26]])));
        match op[0] % 4 {
            0 => drop(t.register(a, index, c)),
            1 => drop(t.unregister(a, index)),
            2 => {
                let s = SessionRef { client: a, series: b, responded_to: c };
                if t.check(&s, index) == SessionCheck::Apply {
                    t.record(&s, SmResult { value: index, data: Bytes::new() });
                }
            }
            _ => drop(t.check_plain(ProposalId { origin: a, seq: b }, index)),
        }
        t.check_invariants().unwrap_or_else(|e| panic!("after {op:?}: {e}"));
    }
    true
}

/// Decodes `data` as a membership change ([`ConfChange::decode`]), its context as the engine does, and
/// as a snapshot header (a membership with addresses, [`SnapshotHeader::decode`]). Invariants: a change
/// re-encodes to `data` exactly; a context of 16 bytes or more re-encodes to one that decodes the same;
/// a header re-encodes to one that decodes the same.
pub fn membership(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    if let Some(cc) = ConfChange::decode(&bytes) {
        assert_eq!(cc.encode(), bytes, "a change that does not re-encode to its bytes");
        let (key, expected, address) = decode_cc_context(&cc.context);
        if cc.context.len() >= 16 {
            let again = encode_cc_context(key, expected, &address);
            assert_eq!(
                decode_cc_context(&again),
                (key, expected, address),
                "a context that does not round-trip"
            );
        }
    }
    if let Some(h) = SnapshotHeader::decode(data) {
        assert_eq!(
            SnapshotHeader::decode(&h.encode()).as_ref(),
            Some(&h),
            "a header that does not round-trip"
        );
    }
}

/// Writes `data` as a data directory's identity files (`NODEHOST.id` and `peers`) and reads them as a
/// starting NodeHost does. Invariants: an incarnation id that reads back is what `NODEHOST.id` says in
/// hexadecimal; an unreadable file is an error naming it. Returns whether both files were accepted.
pub fn identity_files(data: &[u8]) -> bool {
    let dir = Scratch::new();
    std::fs::write(dir.0.join(crate::nodehost::IDENTITY_FILE), data).expect("writing the scratch file");
    std::fs::write(dir.0.join("peers"), data).expect("writing the scratch file");
    let inc = crate::nodehost::incarnation(&dir.0, None);
    match &inc {
        Ok(id) => {
            let text = std::str::from_utf8(data).expect("accepted, so UTF-8").trim();
            assert_eq!(u128::from_str_radix(text, 16).ok(), Some(*id), "an incarnation id read wrong");
        }
        Err(e) => {
            assert!(e.to_string().contains(crate::nodehost::IDENTITY_FILE), "an error naming no file: {e}")
        }
    }
    let peers = PeerIdentities::open(&dir.0);
    match &peers {
        Ok(p) => {
            // Whatever the file said, an unknown replica is taken and a known one keeps its incarnation.
            assert_eq!(p.check_known(GroupId(u64::MAX), ReplicaId(u64::MAX), 7), Verdict::Accept);
        }
        Err(e) => assert!(e.to_string().contains("peers"), "an error naming no file: {e}"),
    }
    inc.is_ok() && peers.is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use drakkar_raft::{ConfChangeKind, LogIndex, Membership, Rng, Term};

    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            group: GroupId(3),
            index: LogIndex(42),
            term: Term(5),
            membership: Membership::with_voters([1, 2, 3].map(ReplicaId)),
            addresses: BTreeMap::from([(ReplicaId(1), "a:1".to_string()), (ReplicaId(2), "b:2".to_string())]),
            conf_index: 3,
            flags: 0,
        }
    }

    /// A session table with a session, a recorded result and a plain proposal window.
    fn table() -> Vec<u8> {
        let mut t = Sessions::default();
        t.register(9, 1, 100);
        let s = SessionRef { client: 9, series: 1, responded_to: 0 };
        assert_eq!(t.check(&s, 2), SessionCheck::Apply);
        t.record(&s, SmResult { value: 4, data: Bytes::from_static(b"ok") });
        t.check_plain(ProposalId { origin: 5, seq: 3 }, 3);
        let mut out = Vec::new();
        t.save(&mut out).unwrap();
        out
    }

    /// A real snapshot file, without its trailing checksum.
    fn snapshot_bytes() -> Vec<u8> {
        let dir = Scratch::new();
        let path = dir.0.join("1.snap");
        snapshot::write_snapshot(&path, &header(), |w| {
            w.write_all(&table())?;
            w.write_all(b"state machine data")
        })
        .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 4);
        bytes
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

    /// Valid inputs from the real encoders are accepted; mutations and garbage never panic.
    #[test]
    fn entry_points_take_valid_and_mutated_input() {
        let snap = snapshot_bytes();
        assert!(snapshot_file(&snap));
        let mut ops = table();
        assert!(session_table(&ops));
        // Register a session, use it (acknowledging a series beyond any), and a plain proposal.
        for (kind, a, b, c) in [(0u8, 11u64, 0u64, 50u64), (2, 11, 1, u64::MAX), (3, 5, 4, 0), (1, 9, 0, 0)] {
            ops.push(kind);
            for w in [a, b, c] {
                ops.extend_from_slice(&w.to_le_bytes());
            }
            ops.extend_from_slice(&3u16.to_le_bytes());
        }
        assert!(session_table(&ops));
        let cc = ConfChange {
            kind: ConfChangeKind::AddVoter,
            replica: ReplicaId(4),
            context: encode_cc_context(7, 2, "node-4:7000"),
        };
        membership(&cc.encode());
        membership(&header().encode());
        let incarnation = b"0123456789abcdef0123456789abcdef\n";
        let peers = b"4 1 0123456789abcdef0123456789abcdef\n4 2 fedcba98765432100123456789abcdef\n";
        assert!(identity_files(incarnation));
        assert!(!identity_files(peers), "a peers file is no incarnation id");
        write_seeds("snapshot_file", &[&snap]);
        write_seeds("session_table", &[&table(), &ops]);
        write_seeds("membership", &[&cc.encode(), &header().encode()]);
        write_seeds("identity_files", &[incarnation, peers]);
        assert!(!identity_files(b"\xff\xfe"));
        let mut rng = Rng::new(0xF0_2217);
        for _ in 0..300 {
            for base in [&snap, &table(), &header().encode()] {
                let mut m = base.clone();
                for _ in 0..rng.range(1, 4) {
                    let i = rng.range(0, m.len() as u64) as usize;
                    m[i] = rng.next_u64() as u8;
                }
                m.truncate(rng.range(0, m.len() as u64 + 1) as usize);
                snapshot_file(&m);
                session_table(&m);
                membership(&m);
            }
        }
        for _ in 0..100 {
            let raw: Vec<u8> = (0..rng.range(0, 60)).map(|_| rng.next_u64() as u8).collect();
            identity_files(&raw);
        }
    }
}
