//! The `drakkar_raft::Storage` contract: the same operations on `MemStorage` and on the log store's group
//! view give the same answers, from the cache, from disk, and after a reopen.

use drakkar_logdb::fs::MemFs;
use drakkar_logdb::{Error, GroupStorage, Options};
use drakkar_raft::{GroupId, LogIndex, MemStorage, Rng, Storage};

use crate::common::*;

/// Every answer of the trait on a grid of arguments, as text.
fn answers(s: &impl Storage, rng: &mut Rng) -> String {
    let mut out = describe(s);
    let first = s.first_index().unwrap().0;
    let last = s.last_index().unwrap().0;
    let sizes = [0, 1, 30, 100, 500, u64::MAX];
    for lo in first.saturating_sub(1)..=last + 2 {
        for hi in [lo.saturating_sub(1), lo, lo + 1, lo + 3, last, last + 1, last + 2] {
            let max = sizes[rng.range(0, sizes.len() as u64) as usize];
            out += &format!("entries({lo},{hi},{max}) {:?}\n", s.entries(LogIndex(lo), LogIndex(hi), max));
        }
    }
    out
}

fn compare(ours: &GroupStorage, theirs: &MemStorage, seed: u64) -> Result<(), String> {
    let a = answers(ours, &mut Rng::new(seed));
    let b = answers(theirs, &mut Rng::new(seed));
    if a == b { Ok(()) } else { Err(format!("--- logdb\n{a}--- MemStorage\n{b}")) }
}

fn run(seed: u64) {
    let _guard = SeedGuard("contract", seed);
    let mut rng = Rng::new(seed);
    let opts = Options {
        segment_size: 4096 * rng.range(1, 3),
        cache_capacity: [0, 500, 1 << 20][rng.range(0, 3) as usize],
        auto_purge: true,
    };
    let fs = MemFs::new();
    let mut db = open(&fs, &opts).unwrap();
    let mut model = Model::default();
    let g = GroupId(1);
    for step in 0..150 {
        let op = random_op(&mut rng, &model, g, 60);
        // Another group's traffic interleaves in the same batches.
        let other = random_op(&mut rng, &model, GroupId(2), 60);
        let ops = vec![(g, op), (GroupId(2), other)];
        let expected = model.apply(&ops);
        match (db.save(&batch_of(&ops)), expected) {
            (Ok(()), Some(m)) => model = m,
            (Err(Error::Rejected { .. }), None) => {}
            (r, m) => panic!("step {step} {ops:?}: logdb {r:?}, MemStorage accepts: {}", m.is_some()),
        }
        if step % 10 == 0 {
            compare(&db.group(g), &model.get(g), seed ^ step).unwrap_or_else(|e| panic!("step {step}: {e}"));
        }
        if step % 40 == 39 {
            drop(db);
            db = open(&fs, &opts).unwrap();
        }
    }
    compare(&db.group(g), &model.get(g), seed).unwrap();
    compare(&db.group(GroupId(2)), &model.get(GroupId(2)), seed).unwrap();
}

#[test]
fn group_storage_answers_like_mem_storage() {
    for seed in seeds(0xC0A7, 12) {
        run(seed);
    }
}

#[test]
fn an_unknown_group_is_an_empty_log() {
    let fs = MemFs::new();
    let db = open(&fs, &Options::default()).unwrap();
    compare(&db.group(GroupId(42)), &MemStorage::default(), 1).unwrap();
}
