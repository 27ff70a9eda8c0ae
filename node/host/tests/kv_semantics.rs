//! KV state machine behaviour on both kinds: metadata, logical failures, scans, refused snapshots,
//! reopening, concurrency.

mod kv_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use drakkar_node::kv::{
    CasExpect, CasNew, Command, CommandResult, Compare, CompareOp, CompareTarget, DiskKv, KeyMeta,
    KeyRange, MemKv, Op, OpResult, Query, QueryResult, Status, Txn,
};
use drakkar_node::statemachine::{
    ConcurrentStateMachine, OnDiskStateMachine, SmEntry, SmError, StateMachine,
};
use drakkar_raft::LogIndex;
use kv_support::*;

/// Both kinds behind one interface, so every test runs on each.
trait Kv {
    /// `update` with raw commands; an `Err` fails the test (it would stop the replica).
    fn apply_raw(&self, first: u64, raw: &[Bytes]) -> Vec<SmEntry>;
    fn raw_lookup(&self, q: &[u8]) -> Result<Bytes, SmError>;
    fn snapshot(&self) -> Vec<u8>;
    fn recover(&self, b: &[u8]) -> Result<(), SmError>;
    fn applied(&self) -> LogIndex;

    fn apply(&self, first: u64, cmds: &[Command]) -> Vec<SmEntry> {
        let raw: Vec<Bytes> = cmds.iter().map(|c| c.encode().unwrap()).collect();
        self.apply_raw(first, &raw)
    }
    fn query(&self, q: &Query) -> QueryResult {
        QueryResult::decode(&self.raw_lookup(&q.encode().unwrap()).unwrap()).unwrap()
    }
}

impl Kv for MemKv {
    fn apply_raw(&self, first: u64, raw: &[Bytes]) -> Vec<SmEntry> {
        let mut batch = entries(first, raw);
        ConcurrentStateMachine::update(self, &mut batch).unwrap();
        batch
    }
    fn raw_lookup(&self, q: &[u8]) -> Result<Bytes, SmError> {
        ConcurrentStateMachine::lookup(self, q)
    }
    fn snapshot(&self) -> Vec<u8> {
        mem_snapshot(self)
    }
    fn recover(&self, mut b: &[u8]) -> Result<(), SmError> {
        ConcurrentStateMachine::recover_from_snapshot(self, &mut b)
    }
    fn applied(&self) -> LogIndex {
        self.applied_index()
    }
}

impl Kv for DiskKv {
    fn apply_raw(&self, first: u64, raw: &[Bytes]) -> Vec<SmEntry> {
        let mut batch = entries(first, raw);
        OnDiskStateMachine::update(self, &mut batch).unwrap();
        batch
    }
    fn raw_lookup(&self, q: &[u8]) -> Result<Bytes, SmError> {
        OnDiskStateMachine::lookup(self, q)
    }
    fn snapshot(&self) -> Vec<u8> {
        disk_snapshot(self)
    }
    fn recover(&self, mut b: &[u8]) -> Result<(), SmError> {
        OnDiskStateMachine::recover_from_snapshot(self, &mut b)
    }
    fn applied(&self) -> LogIndex {
        self.applied_index().unwrap()
    }
}

/// Runs `test` on a MemKv and on a DiskKv.
fn on_both(test: impl Fn(&dyn Kv)) {
    test(&MemKv::new());
    let dir = tempfile::tempdir().unwrap();
    test(&open_disk(&dir, "kv.redb"));
}

fn result(e: &SmEntry) -> CommandResult {
    CommandResult::decode(&e.result.data).unwrap()
}

fn meta(version: u64, mod_index: u64, create_index: u64) -> KeyMeta {
    KeyMeta {
        version,
        mod_index,
        create_index,
    }
}

fn get(kv: &dyn Kv, key: &str) -> Option<(Bytes, KeyMeta)> {
    match kv.query(&Query::get(key.to_owned())) {
        QueryResult::Get(item) => item.map(|i| (i.value, i.meta)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn metadata_counts_writes_and_resets_on_delete() {
    on_both(|kv| {
        let r = kv.apply(
            1,
            &[
                Command::put("k", "a"),
                Command::put("k", "b"),
                Command::delete("k"),
                Command::put("k", "c"),
            ],
        );
        assert_eq!(
            result(&r[0]),
            CommandResult::Put {
                prev: None,
                new: meta(1, 1, 1)
            }
        );
        assert_eq!(
            result(&r[1]),
            CommandResult::Put {
                prev: Some(meta(1, 1, 1)),
                new: meta(2, 2, 1)
            }
        );
        assert_eq!(
            result(&r[2]),
            CommandResult::Delete {
                prev: Some(meta(2, 2, 1))
            }
        );
        assert_eq!(
            result(&r[3]),
            CommandResult::Put {
                prev: None,
                new: meta(1, 4, 4)
            }
        );
        assert_eq!(get(kv, "k"), Some((Bytes::from("c"), meta(1, 4, 4))));
        assert_eq!(kv.applied(), LogIndex(4));
    });
}

