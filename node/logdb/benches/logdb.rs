//! The log store's write path without the disk: `LogDb::save` of a batch of 48 groups on the in-memory
//! file system (`MemFs`, its fsync is free), so the time is the encoding, checksums, index and cache
//! updates and the copy into the file. `cargo bench -p drakkar-logdb --bench logdb`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drakkar_logdb::fs::MemFs;
use drakkar_logdb::{LogDb, Options, WriteBatch};
use drakkar_raft::{Entry, GroupId, HardState, LogIndex, Term};

const GROUPS: u64 = 48;

fn open() -> LogDb {
    LogDb::open_with_fs(Arc::new(MemFs::new()), Path::new("/bench"), Options::default()).expect("open")
}

/// A batch appending `per_group` entries of `size` bytes after `next` to every group, with hard states.
fn batch(next: u64, per_group: u64, payload: &Bytes) -> WriteBatch {
    let mut b = WriteBatch::new();
    for g in 1..=GROUPS {
        let entries: Vec<Entry> = (0..per_group)
            .map(|i| Entry {
                term: Term(1),
                index: LogIndex(next + i),
                data: payload.clone(),
                ..Default::default()
            })
            .collect();
        b.append(GroupId(g), entries);
        let commit = LogIndex(next + per_group - 1);
        b.set_hard_state(GroupId(g), HardState { term: Term(1), vote: None, commit });
    }
    b
}

fn save(c: &mut Criterion) {
    let mut group = c.benchmark_group("logdb");
    for (per_group, size) in [(1u64, 16usize), (100, 16), (16, 1024)] {
        let payload = Bytes::from(vec![7u8; size]);
        group.throughput(Throughput::Elements(GROUPS * per_group));
        group.bench_function(format!("save_48_groups_x{per_group}x{size}B"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut db = open();
                let mut next = 1;
                for i in 0..iters {
                    // A fresh store every 256 batches keeps the in-memory files small; not timed.
                    if i % 256 == 255 {
                        db = open();
                        next = 1;
                    }
                    let wb = batch(next, per_group, &payload);
                    let t = Instant::now();
                    db.save(&wb).expect("save");
                    spent += t.elapsed();
                    next += per_group;
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group!(benches, save);
criterion_main!(benches);
