//! The KV codec: round trips of every message kind, and untrusted bytes never panic the decoders.

mod kv_support;

use bytes::Bytes;
use drakkar_kv::{
    CodecError, Command, CommandResult, KeyMeta, KeyValue, OpResult, Query, QueryResult, limits,
};
use kv_support::{command, query, value};
use proptest::prelude::*;

fn meta() -> impl Strategy<Value = KeyMeta> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(version, mod_index, create_index)| KeyMeta {
        version,
        mod_index,
        create_index,
    })
}

fn kv() -> impl Strategy<Value = KeyValue> {
    (value(), value(), meta()).prop_map(|(key, value, meta)| KeyValue { key, value, meta })
}

fn op_result() -> impl Strategy<Value = OpResult> {
    prop_oneof![
        (prop::option::of(meta()), meta()).prop_map(|(prev, new)| OpResult::Put { prev, new }),
        prop::option::of(meta()).prop_map(|prev| OpResult::Delete { prev }),
        any::<u64>().prop_map(|deleted| OpResult::DeleteRange { deleted }),
        prop::option::of(kv()).prop_map(OpResult::Get),
    ]
}

fn command_result() -> impl Strategy<Value = CommandResult> {
    prop_oneof![
        (prop::option::of(meta()), meta()).prop_map(|(prev, new)| CommandResult::Put { prev, new }),
        prop::option::of(meta()).prop_map(|prev| CommandResult::Delete { prev }),
        any::<u64>().prop_map(|deleted| CommandResult::DeleteRange { deleted }),
        (any::<bool>(), prop::option::of(kv()))
            .prop_map(|(succeeded, prev)| CommandResult::CompareAndSwap { succeeded, prev }),
        (any::<bool>(), prop::collection::vec(op_result(), 0..5))
            .prop_map(|(succeeded, results)| CommandResult::Txn { succeeded, results }),
        ".{0,40}".prop_map(|reason| CommandResult::Rejected { reason }),
    ]
}

fn query_result() -> impl Strategy<Value = QueryResult> {
    prop_oneof![
        prop::option::of(kv()).prop_map(QueryResult::Get),
        (prop::collection::vec(kv(), 0..5), any::<bool>())
            .prop_map(|(items, more)| QueryResult::Scan { items, more }),
    ]
}

/// Runs every decoder on `b`; none may panic (the result does not matter).
fn decode_all(b: &[u8]) {
    let _ = Command::decode(b);
    let _ = Query::decode(b);
    let _ = CommandResult::decode(b);
    let _ = QueryResult::decode(b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn command_round_trips(cmd in command()) {
        let b = cmd.encode().unwrap();
        prop_assert_eq!(Command::decode(&b).unwrap(), cmd.clone());
        prop_assert_eq!(Command::decode_shared(&b).unwrap(), cmd);
    }

    #[test]
    fn query_round_trips(q in query()) {
        prop_assert_eq!(Query::decode(&q.encode().unwrap()).unwrap(), q);
    }

    #[test]
    fn command_result_round_trips(r in command_result()) {
        prop_assert_eq!(CommandResult::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn query_result_round_trips(r in query_result()) {
        prop_assert_eq!(QueryResult::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
        decode_all(&b);
        // Also behind a valid version byte, where the tag and body get parsed.
        let mut v = vec![1u8];
        v.extend_from_slice(&b);
        decode_all(&v);
    }

    #[test]
    fn mutated_encodings_never_panic(
        cmd in command(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = cmd.encode().unwrap().to_vec();
        for (at, x) in flips {
            let i = at.index(b.len());
            b[i] ^= x;
        }
        decode_all(&b);
        decode_all(&b[..cut.index(b.len())]);
    }

    #[test]
    fn every_strict_prefix_is_refused(cmd in command()) {
        let b = cmd.encode().unwrap();
        for cut in 0..b.len() {
            prop_assert!(Command::decode(&b[..cut]).is_err(), "prefix of {} bytes accepted", cut);
        }
    }
}

#[test]
fn huge_declared_lengths_are_refused_without_allocating() {
    // Put with a key length of u32::MAX.
    let mut b = vec![1u8, 1];
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Command::decode(&b), Err(CodecError::TooLong { what: "key", .. })));
    // A scan result claiming u32::MAX items.
    let mut b = vec![1u8, 2];
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(QueryResult::decode(&b).is_err());
    // A txn claiming the maximum of compares, with no bytes for them.
    let mut b = vec![1u8, 5];
    b.extend_from_slice(&(limits::MAX_TXN_COMPARES as u32).to_le_bytes());
    assert!(matches!(Command::decode(&b), Err(CodecError::Truncated { .. })));
}

#[test]
fn unknown_version_and_tag_are_clear_errors() {
    assert_eq!(Command::decode(&[9, 1]), Err(CodecError::UnsupportedVersion(9)));
    assert!(matches!(
        Command::decode(&[1, 200]),
        Err(CodecError::UnknownTag { what: "command", tag: 200, .. })
    ));
    assert_eq!(Query::decode(&[]), Err(CodecError::Empty));
    let err = Command::decode(&[1, 200]).unwrap_err().to_string();
    assert!(err.contains("unknown command tag 200"), "{err}");
}

#[test]
fn oversize_value_is_refused_by_the_encoder() {
    let big = Bytes::from(vec![0u8; limits::MAX_VALUE_LEN + 1]);
    assert!(matches!(Command::put("k", big).encode(), Err(CodecError::TooLong { what: "value", .. })));
}
