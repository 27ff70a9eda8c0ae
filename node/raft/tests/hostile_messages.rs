//! Nothing a peer sends may crash a replica: random and malformed messages are stepped into a live group
//! (with overflow checks on in the CI profile) and the replica keeps working afterwards.

use bytes::Bytes;
use drakkar_raft::{
    Config, Entry, EntryKind, LogIndex, MemStorage, Membership, Message, MessageKind, RawNode, ReplicaId,
    Role, Snapshot, SnapshotMeta, Term,
};
use proptest::prelude::*;

const KINDS: [MessageKind; 15] = MessageKind::ALL;

fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..12, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
}

fn entry() -> impl Strategy<Value = Entry> {
    (edge_u64(), edge_u64(), 0u8..3, proptest::collection::vec(any::<u8>(), 0..12)).prop_map(
        |(t, i, k, d)| Entry {
            term: Term(t),
            index: LogIndex(i),
            kind: [EntryKind::Normal, EntryKind::ConfChange, EntryKind::Metadata][k as usize],
            data: Bytes::from(d),
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    (
        (0usize..KINDS.len(), 0u64..5, prop_oneof![Just(1u64), 0u64..5], edge_u64(), edge_u64(), edge_u64()),
        (edge_u64(), proptest::collection::vec(entry(), 0..4), any::<bool>(), edge_u64(), any::<bool>()),
        proptest::collection::vec(any::<u8>(), 0..6),
    )
        .prop_map(
            |((k, from, to, term, log_term, index), (commit, entries, reject, hint, snap), ctx)| Message {
                kind: KINDS[k],
                from: ReplicaId(from),
                to: ReplicaId(to),
                term: Term(term),
                log_term: Term(log_term),
                index: LogIndex(index),
                entries,
                commit: LogIndex(commit),
                snapshot: snap.then(|| Snapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(index),
                        term: Term(log_term),
                        membership: Membership::with_voters([1, 2, 3].map(ReplicaId)),
                    },
                    data: Bytes::new(),
                }),
                reject,
                reject_hint: LogIndex(hint),
                context: Bytes::from(ctx),
            },
        )
}

/// Runs replica 1's ready loop, persisting everything (as a real host would).
fn drain(n: &mut RawNode<MemStorage>) {
    for _ in 0..8 {
        if !n.has_ready() {
            return;
        }
        let rd = n.ready().expect("ready never fails on MemStorage");
        if let Some(s) = &rd.snapshot {
            let _ = n.storage_mut().apply_snapshot(s.clone());
        }
        n.storage_mut().append(&rd.entries).expect("the core hands out a contiguous log");
        if let Some(hs) = rd.hard_state {
            n.storage_mut().set_hard_state(hs);
        }
        n.advance(rd);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_messages_never_panic(as_leader in any::<bool>(), msgs in proptest::collection::vec(message(), 1..40)) {
        let m = Membership::with_voters([1, 2, 3].map(ReplicaId));
        let mut n = RawNode::new(Config::new(ReplicaId(1)), MemStorage::bootstrap(m)).unwrap();
        if as_leader {
            n.campaign();
            drain(&mut n);
            for kind in [MessageKind::RequestPreVoteResponse, MessageKind::RequestVoteResponse] {
                let _ = n.step(Message::new(kind, ReplicaId(2), ReplicaId(1), Term(2)));
                drain(&mut n);
            }
            prop_assert_eq!(n.status().soft_state.role, Role::Leader);
        }
        for msg in msgs {
            prop_assert!(n.step(msg).is_ok());
            drain(&mut n);
            n.tick();
        }
        // Still a working replica: it answers status and can take part in an election.
        let st = n.status();
        prop_assert!(st.hard_state.commit <= st.last_index);
        let _ = n.propose(Bytes::from_static(b"after"));
        drain(&mut n);
        prop_assert!(matches!(n.status().soft_state.role, Role::Follower | Role::Leader | Role::Candidate | Role::PreCandidate));
    }
}

/// Found by the property above: a snapshot at index u64::MAX was installed and overflowed the log's index
/// arithmetic when persisted. Implausible indices and terms are now dropped on arrival.
#[test]
fn snapshot_at_the_end_of_index_space_is_dropped() {
    let m = Membership::with_voters([1, 2, 3].map(ReplicaId));
    let mut n = RawNode::new(Config::new(ReplicaId(1)), MemStorage::bootstrap(m.clone())).unwrap();
    let mut msg = Message::new(MessageKind::Snapshot, ReplicaId(2), ReplicaId(1), Term(3));
    msg.snapshot = Some(Snapshot {
        meta: SnapshotMeta { index: LogIndex(u64::MAX), term: Term(3), membership: m },
        data: Bytes::new(),
    });
    n.step(msg).unwrap();
    drain(&mut n);
    assert_eq!(n.status().dropped_messages, 1);
    assert_eq!(n.status().hard_state.term, Term(1), "a dropped message changes nothing");
}
