//! Shared by the kv_* integration tests: proptest strategies for KV commands and queries, and helpers to
//! drive the state machines.
#![allow(dead_code)] // each test binary uses a different part

use bytes::Bytes;
use drakkar::statemachine::{ConcurrentStateMachine, OnDiskStateMachine, SmEntry, SmResult, Stop};
use drakkar_kv::{
    CasExpect, CasNew, Command, Compare, CompareOp, CompareTarget, DiskKv, KeyRange, MemKv, Op, Query, Txn,
};
use drakkar_raft::LogIndex;
use proptest::prelude::*;

/// Few, overlapping keys, so commands collide and prefixes/ranges matter.
pub fn key() -> impl Strategy<Value = Bytes> {
    prop::sample::select(vec![&b""[..], b"a", b"ab", b"abc", b"b", b"ba", b"c", b"\xff", b"\xff\xff"])
        .prop_map(Bytes::from_static)
}

pub fn value() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..6).prop_map(Bytes::from)
}

/// Small values that repeat, so value compares sometimes hold.
pub fn small_value() -> impl Strategy<Value = Bytes> {
    prop::sample::select(vec![&b""[..], b"x", b"y", b"xy"]).prop_map(Bytes::from_static)
}

pub fn range() -> impl Strategy<Value = KeyRange> {
    prop_oneof![
        key().prop_map(KeyRange::Prefix),
        (key(), prop::option::of(key())).prop_map(|(start, end)| KeyRange::Span { start, end }),
    ]
}

pub fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![Just(CompareOp::Eq), Just(CompareOp::Ne), Just(CompareOp::Lt), Just(CompareOp::Gt)]
}

pub fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        small_value().prop_map(CompareTarget::Value),
        (0u64..4).prop_map(CompareTarget::Version),
        (0u64..40).prop_map(CompareTarget::ModIndex),
        (0u64..40).prop_map(CompareTarget::CreateIndex),
        any::<bool>().prop_map(CompareTarget::Exists),
    ];
    (key(), compare_op(), target).prop_map(|(key, op, target)| Compare { key, op, target })
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), small_value()).prop_map(|(key, value)| Op::Put { key, value }),
        key().prop_map(|key| Op::Delete { key }),
        range().prop_map(|range| Op::DeleteRange { range }),
        key().prop_map(|key| Op::Get { key }),
    ]
}

pub fn txn() -> impl Strategy<Value = Txn> {
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op(), 0..4),
        prop::collection::vec(op(), 0..4),
    )
        .prop_map(|(compares, success, failure)| Txn { compares, success, failure })
}

pub fn command() -> impl Strategy<Value = Command> {
    let cas = (
        key(),
        prop_oneof![
            small_value().prop_map(CasExpect::Value),
            (0u64..4).prop_map(CasExpect::Version),
            Just(CasExpect::Absent),
        ],
        prop_oneof![small_value().prop_map(CasNew::Put), Just(CasNew::Delete)],
    )
        .prop_map(|(key, expected, new)| Command::CompareAndSwap { key, expected, new });
    prop_oneof![
        4 => (key(), value()).prop_map(|(key, value)| Command::Put { key, value }),
        2 => key().prop_map(|key| Command::Delete { key }),
        1 => range().prop_map(|range| Command::DeleteRange { range }),
        2 => cas,
        2 => txn().prop_map(Command::Txn),
    ]
}

/// Encoded commands, with the odd garbage or empty entry a buggy client (or a no-op) produces.
pub fn raw_command() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        20 => command().prop_map(|c| c.encode().expect("generated commands are within limits")),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from),
        1 => Just(Bytes::new()),
    ]
}

pub fn query() -> impl Strategy<Value = Query> {
    prop_oneof![
        key().prop_map(|key| Query::Get { key }),
        (range(), 0u32..5, any::<bool>()).prop_map(|(range, limit, keys_only)| Query::Scan {
            range,
            limit,
            keys_only,
        }),
    ]
}

/// Entries for `cmds`, indexed from `first`.
pub fn entries(first: u64, cmds: &[Bytes]) -> Vec<SmEntry> {
    cmds.iter()
        .zip(first..)
        .map(|(cmd, i)| SmEntry { index: LogIndex(i), cmd: cmd.clone(), result: SmResult::default() })
        .collect()
}

/// Every key, in order, with values (a scan of everything).
pub fn everything() -> Bytes {
    Query::Scan { range: KeyRange::prefix(""), limit: 0, keys_only: false }.encode().expect("within limits")
}

pub fn mem_snapshot(kv: &MemKv) -> Vec<u8> {
    let mut out = Vec::new();
    let prepared = kv.prepare_snapshot().expect("prepare");
    ConcurrentStateMachine::save_snapshot(kv, prepared, &mut out, &Stop::default()).expect("save");
    out
}

pub fn disk_snapshot(kv: &DiskKv) -> Vec<u8> {
    let mut out = Vec::new();
    let prepared = kv.prepare_snapshot().expect("prepare");
    OnDiskStateMachine::save_snapshot(kv, prepared, &mut out, &Stop::default()).expect("save");
    out
}

/// A fresh, opened DiskKv in `dir`.
pub fn open_disk(dir: &tempfile::TempDir, name: &str) -> DiskKv {
    let kv = DiskKv::new(dir.path().join(name));
    assert_eq!(kv.open(&Stop::default()).expect("open"), LogIndex(0));
    kv
}
