//! KV state machine behaviour on both kinds: metadata, logical failures, scans, refused snapshots,
//! reopening, concurrency.

mod kv_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use drakkar::statemachine::{
    ConcurrentStateMachine, OnDiskStateMachine, SmEntry, SmError, StateMachine, Stop,
};
use drakkar_kv::{
    CasExpect, CasNew, Command, CommandResult, Compare, CompareOp, CompareTarget, DiskKv, KeyMeta, KeyRange,
    MemKv, Op, OpResult, Query, QueryResult, Status, Txn,
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
        ConcurrentStateMachine::recover_from_snapshot(self, &mut b, &Stop::default())
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
        OnDiskStateMachine::recover_from_snapshot(self, &mut b, &Stop::default())
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
    KeyMeta { version, mod_index, create_index }
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
            &[Command::put("k", "a"), Command::put("k", "b"), Command::delete("k"), Command::put("k", "c")],
        );
        assert_eq!(result(&r[0]), CommandResult::Put { prev: None, new: meta(1, 1, 1) });
        assert_eq!(result(&r[1]), CommandResult::Put { prev: Some(meta(1, 1, 1)), new: meta(2, 2, 1) });
        assert_eq!(result(&r[2]), CommandResult::Delete { prev: Some(meta(2, 2, 1)) });
        assert_eq!(result(&r[3]), CommandResult::Put { prev: None, new: meta(1, 4, 4) });
        assert_eq!(get(kv, "k"), Some((Bytes::from("c"), meta(1, 4, 4))));
        assert_eq!(kv.applied(), LogIndex(4));
    });
}

#[test]
fn logical_failures_are_results_not_errors() {
    on_both(|kv| {
        kv.apply(1, &[Command::put("k", "v")]);
        let before = kv.snapshot();
        let cas = Command::CompareAndSwap {
            key: Bytes::from("k"),
            expected: CasExpect::Value(Bytes::from("other")),
            new: CasNew::Delete,
        };
        // A failed CAS, bytes that do not decode, an unknown version, and an empty (no-op) entry.
        let raw = [
            cas.encode().unwrap(),
            Bytes::from_static(b"\x01\x63garbage"),
            Bytes::from_static(b"\x07"),
            Bytes::new(),
        ];
        let r = kv.apply_raw(2, &raw);
        assert_eq!(r[0].result.value, Status::CompareFailed.code());
        let CommandResult::CompareAndSwap { succeeded: false, prev: Some(cur) } = result(&r[0]) else {
            panic!("{:?}", result(&r[0]));
        };
        assert_eq!(cur.value, Bytes::from("v"));
        for e in &r[1..3] {
            assert_eq!(e.result.value, Status::Rejected.code());
            assert!(matches!(result(e), CommandResult::Rejected { .. }));
        }
        assert_eq!(r[3].result, Default::default());
        assert_eq!(kv.applied(), LogIndex(5));
        // Only the applied index (and so the checksum) moved: the records are the same.
        let after = kv.snapshot();
        let records = |b: &[u8]| b[13..b.len() - 4].to_vec();
        assert_eq!(records(&before), records(&after));
        assert_ne!(before[5..13], after[5..13]);
        assert_eq!(get(kv, "k").map(|(v, _)| v), Some(Bytes::from("v")));
        // A malformed query is an error for that reader only.
        assert!(matches!(kv.raw_lookup(b"\x01\x09"), Err(SmError::InvalidRequest(_))));
        assert!(kv.raw_lookup(b"").is_err());
    });
}

#[test]
fn compare_and_swap_on_version_and_absence() {
    on_both(|kv| {
        let cas = |expected, new| Command::CompareAndSwap { key: Bytes::from("k"), expected, new };
        let r = kv.apply(
            1,
            &[
                cas(CasExpect::Absent, CasNew::Put(Bytes::from("1"))),
                cas(CasExpect::Absent, CasNew::Put(Bytes::from("x"))),
                cas(CasExpect::Version(1), CasNew::Put(Bytes::from("2"))),
                cas(CasExpect::Value(Bytes::from("2")), CasNew::Delete),
            ],
        );
        let ok: Vec<u64> = r.iter().map(|e| e.result.value).collect();
        assert_eq!(ok, [0, 1, 0, 0]);
        assert_eq!(get(kv, "k"), None);
        let CommandResult::CompareAndSwap { prev: Some(p), .. } = result(&r[3]) else { panic!() };
        assert_eq!(p.meta, meta(2, 3, 1));
    });
}

#[test]
fn txn_picks_a_branch_and_reads_its_own_writes() {
    on_both(|kv| {
        kv.apply(1, &[Command::put("a", "1"), Command::put("b", "1")]);
        let cmp = |key: &str, op, target| Compare { key: Bytes::from(key.to_owned()), op, target };
        let txn = |compares| {
            Command::Txn(Txn {
                compares,
                success: vec![
                    Op::Put { key: Bytes::from("a"), value: Bytes::from("2") },
                    Op::Put { key: Bytes::from("a"), value: Bytes::from("3") },
                    Op::Get { key: Bytes::from("a") },
                ],
                failure: vec![Op::DeleteRange { range: KeyRange::prefix("") }],
            })
        };
        let r = kv.apply(
            3,
            &[txn(vec![
                cmp("a", CompareOp::Eq, CompareTarget::Version(1)),
                cmp("b", CompareOp::Lt, CompareTarget::ModIndex(3)),
                cmp("zz", CompareOp::Eq, CompareTarget::Exists(false)),
                cmp("a", CompareOp::Gt, CompareTarget::Value(Bytes::from("0"))),
            ])],
        );
        let CommandResult::Txn { succeeded: true, results } = result(&r[0]) else {
            panic!("{:?}", result(&r[0]));
        };
        assert_eq!(results.len(), 3);
        let OpResult::Get(Some(a)) = &results[2] else { panic!("{results:?}") };
        // Two writes in one entry: version +2, both at index 3.
        assert_eq!((a.value.clone(), a.meta), (Bytes::from("3"), meta(3, 3, 1)));

        // A compare on an absent key's value is false: the failure branch runs.
        let r = kv.apply(4, &[txn(vec![cmp("zz", CompareOp::Ne, CompareTarget::Value(Bytes::new()))])]);
        assert_eq!(r[0].result.value, Status::CompareFailed.code());
        assert_eq!(
            result(&r[0]),
            CommandResult::Txn { succeeded: false, results: vec![OpResult::DeleteRange { deleted: 2 }] }
        );
    });
}

#[test]
fn scans_by_prefix_and_span_with_limits() {
    on_both(|kv| {
        let keys = ["a", "ab", "abc", "b", "\u{ff}"];
        let cmds: Vec<Command> = keys.iter().map(|k| Command::put(*k, *k)).collect();
        kv.apply(1, &cmds);
        let scan = |range, limit, keys_only| match kv.query(&Query::Scan { range, limit, keys_only }) {
            QueryResult::Scan { items, more } => (
                items
                    .iter()
                    .map(|i| (String::from_utf8_lossy(&i.key).into_owned(), i.value.len()))
                    .collect::<Vec<_>>(),
                more,
            ),
            other => panic!("{other:?}"),
        };
        let own = |v: &[(&str, usize)]| -> Vec<(String, usize)> {
            v.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
        };
        assert_eq!(scan(KeyRange::prefix("a"), 0, false), (own(&[("a", 1), ("ab", 2), ("abc", 3)]), false));
        assert_eq!(scan(KeyRange::prefix("a"), 2, true), (own(&[("a", 0), ("ab", 0)]), true));
        assert_eq!(scan(KeyRange::span("ab", "b"), 0, false), (own(&[("ab", 2), ("abc", 3)]), false));
        assert_eq!(scan(KeyRange::span("b", "a"), 0, false), (own(&[]), false));
        assert_eq!(
            scan(KeyRange::Span { start: Bytes::from("b"), end: None }, 0, false),
            (own(&[("b", 1), ("\u{ff}", 2)]), false)
        );
        let r = kv.apply(6, &[Command::DeleteRange { range: KeyRange::prefix("ab") }]);
        assert_eq!(result(&r[0]), CommandResult::DeleteRange { deleted: 2 });
    });
}

#[test]
fn scan_stops_at_the_byte_budget_but_returns_one_item() {
    on_both(|kv| {
        let big = Bytes::from(vec![7u8; 1536 * 1024]);
        let cmds: Vec<Command> = (0..4).map(|i| Command::put(format!("k{i}"), big.clone())).collect();
        kv.apply(1, &cmds);
        let QueryResult::Scan { items, more } =
            kv.query(&Query::Scan { range: KeyRange::prefix("k"), limit: 0, keys_only: false })
        else {
            panic!()
        };
        assert_eq!((items.len(), more), (2, true));
        let QueryResult::Scan { items, more } =
            kv.query(&Query::Scan { range: KeyRange::prefix("k"), limit: 0, keys_only: true })
        else {
            panic!()
        };
        assert_eq!((items.len(), more), (4, false));
    });
}

#[test]
fn corrupt_or_truncated_snapshots_are_refused_and_the_state_kept() {
    let source = MemKv::new();
    source.apply(1, &[Command::put("x", "1"), Command::put("y", "2")]);
    let good = source.snapshot();
    let mut flipped = good.clone();
    flipped[20] ^= 0x40;
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    let bad: [&[u8]; 5] =
        [&good[..good.len() - 1], &good[..good.len() / 2], &flipped, &bad_crc, b"not a snapshot"];
    on_both(|kv| {
        kv.apply(1, &[Command::put("old", "state")]);
        let before = kv.snapshot();
        for b in bad {
            assert!(kv.recover(b).is_err());
            assert_eq!(kv.snapshot(), before);
            assert_eq!(kv.applied(), LogIndex(1));
        }
        kv.recover(&good).unwrap();
        assert_eq!(kv.snapshot(), good);
        assert_eq!(kv.applied(), LogIndex(2));
        assert_eq!(get(kv, "old"), None);
    });
}

#[test]
fn disk_kv_reopens_at_its_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let mem = MemKv::new();
    {
        let disk = DiskKv::new(&path);
        assert_eq!(disk.open(&Stop::default()).unwrap(), LogIndex(0));
        assert_eq!(disk.open(&Stop::default()).unwrap(), LogIndex(0), "open is idempotent");
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            let cmds = [Command::put(k, "v"), Command::put("n", k)];
            disk.apply(1 + 2 * i as u64, &cmds);
            mem.apply(1 + 2 * i as u64, &cmds);
        }
        disk.sync().unwrap();
        disk.sync().unwrap();
    }
    let disk = DiskKv::new(&path);
    assert!(disk.raw_lookup(&everything()).is_err(), "lookup before open");
    assert_eq!(disk.open(&Stop::default()).unwrap(), LogIndex(6));
    assert_eq!(disk.snapshot(), mem.snapshot());
    // Batches after the reopen carry on with the same metadata.
    let r = disk.apply(7, &[Command::put("n", "d")]);
    assert_eq!(result(&r[0]), CommandResult::Put { prev: Some(meta(3, 6, 2)), new: meta(4, 7, 2) });
}

#[test]
fn disk_kv_refuses_an_unknown_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta: redb::Table<&str, u64> =
                txn.open_table(redb::TableDefinition::new("meta")).unwrap();
            meta.insert("format", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = DiskKv::new(&path).open(&Stop::default()).unwrap_err().to_string();
    assert!(err.contains("format 99"), "{err}");
}

#[test]
fn mem_kv_works_as_a_plain_state_machine() {
    let mut kv = MemKv::new();
    let mut batch = entries(1, &[Command::put("k", "v").encode().unwrap()]);
    StateMachine::update(&mut kv, &mut batch).unwrap();
    let mut snap = Vec::new();
    StateMachine::save_snapshot(&kv, &mut snap, &Stop::default()).unwrap();
    let mut other = MemKv::new();
    StateMachine::recover_from_snapshot(&mut other, &mut &snap[..], &Stop::default()).unwrap();
    let q = Query::get("k").encode().unwrap();
    assert_eq!(StateMachine::lookup(&other, &q).unwrap(), StateMachine::lookup(&kv, &q).unwrap());
    assert_eq!(other.applied_index(), LogIndex(1));
}

/// A set [`Stop`] makes saving and recovering a snapshot give up with `Stopped` (after at most 1,024
/// records), in both stores; an unset one changes nothing.
#[test]
fn a_stop_ends_snapshot_saves_and_recoveries() {
    let puts: Vec<Bytes> =
        (0..3000).map(|i| Command::put(format!("k{i:05}"), "v").encode().unwrap()).collect();
    let mem = MemKv::new();
    mem.apply_raw(1, &puts);
    let dir = tempfile::tempdir().unwrap();
    let disk = open_disk(&dir, "kv.redb");
    disk.apply_raw(1, &puts);
    let stop = Stop::new();
    stop.set();
    let full = mem_snapshot(&mem);
    let e =
        ConcurrentStateMachine::save_snapshot(&mem, mem.prepare_snapshot().unwrap(), &mut Vec::new(), &stop);
    assert!(matches!(e, Err(SmError::Stopped)), "{e:?}");
    let e =
        OnDiskStateMachine::save_snapshot(&disk, disk.prepare_snapshot().unwrap(), &mut Vec::new(), &stop);
    assert!(matches!(e, Err(SmError::Stopped)), "{e:?}");
    let fresh = MemKv::new();
    let e = ConcurrentStateMachine::recover_from_snapshot(&fresh, &mut &full[..], &stop);
    assert!(matches!(e, Err(SmError::Stopped)), "{e:?}");
    assert_eq!(fresh.applied_index(), LogIndex(0), "a recovery that gave up left the state as it was");
    let disk2 = open_disk(&dir, "b.redb");
    let e = OnDiskStateMachine::recover_from_snapshot(&disk2, &mut &full[..], &stop);
    assert!(matches!(e, Err(SmError::Stopped)), "{e:?}");
    assert_eq!(
        disk2.applied_index().unwrap(),
        LogIndex(0),
        "a recovery that gave up left the state as it was"
    );
    // Not set: the whole state.
    ConcurrentStateMachine::recover_from_snapshot(&fresh, &mut &full[..], &Stop::new()).unwrap();
    assert_eq!(fresh.applied_index(), LogIndex(3000));
}

/// Readers running during updates only ever see whole batches: each batch writes `x` and `y` to the
/// same value in two entries, so a reader must never see them differ.
fn readers_see_whole_batches(kv: Arc<dyn Kv + Send + Sync>) {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (kv, stop) = (kv.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                let QueryResult::Scan { items, .. } =
                    kv.query(&Query::Scan { range: KeyRange::span("x", "z"), limit: 0, keys_only: false })
                else {
                    panic!()
                };
                if let [x, y] = &items[..] {
                    assert_eq!(x.value, y.value, "saw half a batch");
                    assert_eq!(x.meta.mod_index + 1, y.meta.mod_index);
                }
                reads += 1;
            }
            reads
        })
    };
    for n in 0..200u64 {
        let v = n.to_string();
        kv.apply(1 + 2 * n, &[Command::put("x", v.clone()), Command::put("y", v)]);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn lookups_run_concurrently_with_updates() {
    readers_see_whole_batches(Arc::new(MemKv::new()));
    let dir = tempfile::tempdir().unwrap();
    readers_see_whole_batches(Arc::new(open_disk(&dir, "kv.redb")));
}

#[test]
fn disk_kv_recovered_state_survives_a_reopen() {
    let source = MemKv::new();
    source.apply(1, &[Command::put("a", "1"), Command::put("b", "2")]);
    let snap = source.snapshot();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let mut options = drakkar_kv::DiskKvOptions::default();
    options.durable_batches = true;
    {
        let disk = DiskKv::with_options(&path, options.clone());
        disk.open(&Stop::default()).unwrap();
        disk.apply(1, &[Command::put("gone", "x")]);
        disk.recover(&snap).unwrap();
        disk.apply(3, &[Command::put("c", "3")]);
    }
    let disk = DiskKv::with_options(&path, options);
    assert_eq!(disk.open(&Stop::default()).unwrap(), LogIndex(3));
    source.apply(3, &[Command::put("c", "3")]);
    assert_eq!(disk.snapshot(), source.snapshot());
}
