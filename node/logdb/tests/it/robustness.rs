//! Garbage on disk never panics the store: random files, mutated logs, truncated logs. The store either
//! refuses to open with an error or opens and serves reads (which may report errors), nothing else.

use drakkar_logdb::fs::MemFs;
use drakkar_logdb::{LogDb, Options};
use drakkar_raft::{Rng, Storage};

use crate::common::*;

fn read_everything(db: &LogDb) {
    for g in db.groups() {
        let s = db.group(g);
        let _ = s.initial_state();
        let _ = s.snapshot();
        if let (Ok(first), Ok(last)) = (s.first_index(), s.last_index()) {
            let _ = s.entries(first, last.next(), u64::MAX);
            let _ = s.term(last);
        }
    }
}

#[test]
fn random_and_mutated_segments_never_panic() {
    let _guard = SeedGuard("robustness", 0xB0B);
    let mut rng = Rng::new(0xB0B);
    let opts = Options { segment_size: 4096, cache_capacity: 0, auto_purge: false };
    // A valid log to mutate.
    let base = MemFs::new();
    {
        let db = open(&base, &opts).unwrap();
        let mut model = Model::default();
        for _ in 0..30 {
            let ops = random_batch(&mut rng, &model, 3, 4, 100);
            if let Some(m) = model.apply(&ops) {
                db.save(&batch_of(&ops)).unwrap();
                model = m;
            }
        }
    }
    let paths = segment_paths(&base);
    let mut opened = 0;
    for round in 0..1500u64 {
        let fs = base.fork();
        let path = &paths[rng.range(0, paths.len() as u64) as usize];
        let mut bytes = fs.read_file(path).unwrap();
        match round % 6 {
            0 => {
                // Pure noise, sometimes behind a valid header.
                let keep = if rng.chance(1, 2) { 32 } else { 0 };
                bytes.truncate(keep);
                bytes.extend((0..rng.range(0, 3000)).map(|_| rng.next_u64() as u8));
            }
            1 => bytes.truncate(rng.range(0, bytes.len() as u64 + 1) as usize),
            2 => {
                for _ in 0..rng.range(1, 6) {
                    let i = rng.range(0, bytes.len() as u64) as usize;
                    bytes[i] = rng.next_u64() as u8;
                }
            }
            3 => {
                let i = rng.range(0, bytes.len() as u64) as usize;
                let n = rng.range(0, 200) as usize;
                let end = (i + n).min(bytes.len());
                bytes[i..end].fill(0);
            }
            4 => {
                // A slice of the file repeated somewhere else.
                let a = rng.range(0, bytes.len() as u64) as usize;
                let b = rng.range(a as u64, bytes.len() as u64 + 1) as usize;
                let chunk = bytes[a..b].to_vec();
                let at = rng.range(0, bytes.len() as u64 + 1) as usize;
                bytes.splice(at..at, chunk);
            }
            _ => {
                bytes.extend((0..rng.range(1, 64)).map(|_| rng.next_u64() as u8));
            }
        }
        fs.write_file(path, &bytes);
        if let Ok(db) = open(&fs, &opts) {
            opened += 1;
            read_everything(&db);
        }
    }
    assert!(opened > 0, "some mutations (torn tails) still open");
}
