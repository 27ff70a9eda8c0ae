//! MemKv and DiskKv against each other and against a plain reference model: the same random command
//! sequences give the same results, lookups, metadata and snapshot bytes; snapshots cross kinds.

mod kv_support;

use std::collections::BTreeMap;

use bytes::Bytes;
use drakkar::statemachine::{ConcurrentStateMachine, OnDiskStateMachine, SmEntry, Stop};
use drakkar_kv::{
    CasExpect, CasNew, Command, CommandResult, Compare, CompareTarget, DiskKv, KeyMeta, KeyRange, KeyValue,
    MemKv, Op, OpResult, Query, QueryResult, limits,
};
use drakkar_raft::LogIndex;
use kv_support::*;
use proptest::prelude::*;

/// The semantics written the obvious way, independently of `kv::apply`.
#[derive(Default)]
struct Model {
    map: BTreeMap<Bytes, (Bytes, KeyMeta)>,
}

impl Model {
    fn kv(&self, key: &Bytes) -> Option<KeyValue> {
        self.map.get(key).map(|(v, m)| KeyValue { key: key.clone(), value: v.clone(), meta: *m })
    }

    fn put(&mut self, index: u64, key: &Bytes, value: &Bytes) -> (Option<KeyMeta>, KeyMeta) {
        let prev = self.map.get(key).map(|(_, m)| *m);
        let new = match prev {
            Some(p) => KeyMeta { version: p.version + 1, mod_index: index, create_index: p.create_index },
            None => KeyMeta { version: 1, mod_index: index, create_index: index },
        };
        self.map.insert(key.clone(), (value.clone(), new));
        (prev, new)
    }

    fn delete(&mut self, key: &Bytes) -> Option<KeyMeta> {
        self.map.remove(key).map(|(_, m)| m)
    }

    fn delete_range(&mut self, range: &KeyRange) -> u64 {
        let before = self.map.len();
        self.map.retain(|k, _| !range.contains(k));
        (before - self.map.len()) as u64
    }

    fn holds(&self, c: &Compare) -> bool {
        let cur = self.map.get(&c.key);
        let meta = cur.map(|(_, m)| *m).unwrap_or_default();
        match &c.target {
            CompareTarget::Value(v) => cur.is_some_and(|(cv, _)| c.op.holds(cv, v)),
            CompareTarget::Version(n) => c.op.holds(&meta.version, n),
            CompareTarget::ModIndex(n) => c.op.holds(&meta.mod_index, n),
            CompareTarget::CreateIndex(n) => c.op.holds(&meta.create_index, n),
            CompareTarget::Exists(b) => c.op.holds(&cur.is_some(), b),
            other => panic!("model lacks {other:?}"),
        }
    }

    fn apply(&mut self, index: u64, raw: &Bytes) -> Option<CommandResult> {
        if raw.is_empty() {
            return None;
        }
        let cmd = match Command::decode(raw) {
            Ok(c) => c,
            Err(e) => {
                return Some(CommandResult::Rejected { reason: e.to_string() });
            }
        };
        Some(match cmd {
            Command::Put { key, value } => {
                let (prev, new) = self.put(index, &key, &value);
                CommandResult::Put { prev, new }
            }
            Command::Delete { key } => CommandResult::Delete { prev: self.delete(&key) },
            Command::DeleteRange { range } => {
                CommandResult::DeleteRange { deleted: self.delete_range(&range) }
            }
            Command::CompareAndSwap { key, expected, new } => {
                let prev = self.kv(&key);
                let ok = match (&expected, &prev) {
                    (CasExpect::Value(v), Some(p)) => p.value == v,
                    (CasExpect::Version(n), Some(p)) => p.meta.version == *n,
                    (CasExpect::Absent, None) => true,
                    _ => false,
                };
                if ok {
                    match new {
                        CasNew::Put(v) => {
                            self.put(index, &key, &v);
                        }
                        CasNew::Delete => {
                            self.delete(&key);
                        }
                        other => panic!("model lacks {other:?}"),
                    }
                }
                CommandResult::CompareAndSwap { succeeded: ok, prev }
            }
            Command::Txn(txn) => {
                let succeeded = txn.compares.iter().all(|c| self.holds(c));
                let ops = if succeeded { txn.success } else { txn.failure };
                let results = ops
                    .into_iter()
                    .map(|op| match op {
                        Op::Put { key, value } => {
                            let (prev, new) = self.put(index, &key, &value);
                            OpResult::Put { prev, new }
                        }
                        Op::Delete { key } => OpResult::Delete { prev: self.delete(&key) },
                        Op::DeleteRange { range } => {
                            OpResult::DeleteRange { deleted: self.delete_range(&range) }
                        }
                        Op::Get { key } => OpResult::Get(self.kv(&key)),
                        other => panic!("model lacks {other:?}"),
                    })
                    .collect();
                CommandResult::Txn { succeeded, results }
            }
            other => panic!("model lacks {other:?}"),
        })
    }

    fn query(&self, q: &Query) -> QueryResult {
        match q {
            Query::Get { key } => QueryResult::Get(self.kv(key)),
            Query::Scan { range, limit, keys_only } => {
                let limit = match *limit as usize {
                    0 => limits::MAX_SCAN_ITEMS,
                    n => n,
                };
                let mut all = self.map.keys().filter(|k| range.contains(k));
                let items: Vec<KeyValue> = all
                    .by_ref()
                    .take(limit)
                    .filter_map(|k| self.kv(k))
                    .map(|mut kv| {
                        if *keys_only {
                            kv.value = Bytes::new();
                        }
                        kv
                    })
                    .collect();
                QueryResult::Scan { items, more: all.next().is_some() }
            }
            other => panic!("model lacks {other:?}"),
        }
    }
}

fn apply_mem(kv: &MemKv, batch: &mut [SmEntry]) {
    ConcurrentStateMachine::update(kv, batch).expect("MemKv::update never fails");
}

fn apply_disk(kv: &DiskKv, batch: &mut [SmEntry]) {
    OnDiskStateMachine::update(kv, batch).expect("DiskKv::update");
}

/// Splits `cmds` into batches of the given sizes (cycled), indexed from `first`.
fn batches(first: u64, cmds: &[Bytes], sizes: &[usize]) -> Vec<Vec<SmEntry>> {
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < cmds.len() {
        let n = sizes[i % sizes.len()].min(cmds.len() - at);
        out.push(entries(first + at as u64, &cmds[at..at + n]));
        at += n;
        i += 1;
    }
    out
}

fn same_lookups(mem: &MemKv, disk: &DiskKv, queries: &[Query]) -> Result<(), TestCaseError> {
    for q in queries.iter().cloned().chain([Query::get("a")]) {
        let b = q.encode().unwrap();
        let m = ConcurrentStateMachine::lookup(mem, &b).unwrap();
        let d = OnDiskStateMachine::lookup(disk, &b).unwrap();
        prop_assert_eq!(&m, &d, "lookup {:?}", q);
    }
    let all = everything();
    prop_assert_eq!(
        ConcurrentStateMachine::lookup(mem, &all).unwrap(),
        OnDiskStateMachine::lookup(disk, &all).unwrap()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Same log, same everything: per-entry results (also equal to the model's), lookups, metadata,
    /// applied index and snapshot bytes.
    #[test]
    fn mem_disk_and_model_agree(
        cmds in prop::collection::vec(raw_command(), 1..40),
        sizes in prop::collection::vec(1usize..8, 1..4),
        queries in prop::collection::vec(query(), 0..12),
        sync_every in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mem = MemKv::new();
        let disk = open_disk(&dir, "kv.redb");
        let mut model = Model::default();
        for (n, batch) in batches(1, &cmds, &sizes).into_iter().enumerate() {
            let mut mb = batch.clone();
            let mut db = batch;
            apply_mem(&mem, &mut mb);
            apply_disk(&disk, &mut db);
            for (m, d) in mb.iter().zip(&db) {
                prop_assert_eq!(&m.result, &d.result, "entry {}", m.index);
                let expected = model.apply(m.index.0, &m.cmd);
                match expected {
                    None => prop_assert_eq!(m.result.value, 0),
                    Some(r) => {
                        prop_assert_eq!(m.result.value, r.status().code());
                        prop_assert_eq!(CommandResult::decode(&m.result.data).unwrap(), r);
                    }
                }
            }
            if n % sync_every == 0 {
                disk.sync().unwrap();
            }
        }
        let last = LogIndex(cmds.len() as u64);
        prop_assert_eq!(mem.applied_index(), last);
        prop_assert_eq!(disk.applied_index().unwrap(), last);
        same_lookups(&mem, &disk, &queries)?;
        for q in &queries {
            let got = QueryResult::decode(&ConcurrentStateMachine::lookup(&mem, &q.encode().unwrap()).unwrap()).unwrap();
            prop_assert_eq!(got, model.query(q), "model lookup {:?}", q);
        }
        prop_assert_eq!(mem_snapshot(&mem), disk_snapshot(&disk));
    }

    /// A snapshot prepared mid-log (then saved after more updates) captures exactly the state at that
    /// point, and the other kind recovered from it and fed the rest of the log ends up identical.
    #[test]
    fn snapshots_cross_kinds_mid_log(
        cmds in prop::collection::vec(raw_command(), 2..40),
        split in any::<prop::sample::Index>(),
        queries in prop::collection::vec(query(), 0..8),
    ) {
        let split = split.index(cmds.len());
        let (head, tail) = cmds.split_at(split);
        let dir = tempfile::tempdir().unwrap();
        let mem = MemKv::new();
        let disk = open_disk(&dir, "a.redb");
        apply_mem(&mem, &mut entries(1, head));
        apply_disk(&disk, &mut entries(1, head));
        let mem_view = mem.prepare_snapshot().unwrap();
        let disk_view = disk.prepare_snapshot().unwrap();
        apply_mem(&mem, &mut entries(1 + split as u64, tail));
        apply_disk(&disk, &mut entries(1 + split as u64, tail));

        let mut from_mem = Vec::new();
        ConcurrentStateMachine::save_snapshot(&mem, mem_view, &mut from_mem, &Stop::default()).unwrap();
        let mut from_disk = Vec::new();
        OnDiskStateMachine::save_snapshot(&disk, disk_view, &mut from_disk, &Stop::default()).unwrap();
        prop_assert_eq!(&from_mem, &from_disk);

        // Mem snapshot -> new DiskKv; Disk snapshot -> new MemKv; both replay the tail.
        let disk2 = open_disk(&dir, "b.redb");
        OnDiskStateMachine::recover_from_snapshot(&disk2, &mut &from_mem[..], &Stop::default()).unwrap();
        prop_assert_eq!(disk2.applied_index().unwrap(), LogIndex(split as u64));
        let mem2 = MemKv::new();
        ConcurrentStateMachine::recover_from_snapshot(&mem2, &mut &from_disk[..], &Stop::default()).unwrap();
        prop_assert_eq!(mem2.applied_index(), LogIndex(split as u64));
        let mut t1 = entries(1 + split as u64, tail);
        let mut t2 = t1.clone();
        apply_disk(&disk2, &mut t1);
        apply_mem(&mem2, &mut t2);
        for (a, b) in t1.iter().zip(&t2) {
            prop_assert_eq!(&a.result, &b.result);
        }
        same_lookups(&mem2, &disk2, &queries)?;
        same_lookups(&mem, &disk2, &queries)?;
        prop_assert_eq!(mem_snapshot(&mem), disk_snapshot(&disk2));
        prop_assert_eq!(mem_snapshot(&mem2), disk_snapshot(&disk));
    }
}
