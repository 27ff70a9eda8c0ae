//! The store on the real file system: reopen, locking, reads from disk, concurrent readers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use drakkar_logdb::{Error, LogDb, Options, WriteBatch};
use drakkar_raft::{Entry, GroupId, HardState, LogIndex, Storage, Term};

fn entry(i: u64, n: usize) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(i),
        data: Bytes::from(vec![(i % 251) as u8; n]),
        ..Default::default()
    }
}

#[test]
fn reopen_lock_and_disk_reads() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { segment_size: 64 << 10, cache_capacity: 4 << 10, auto_purge: true };
    let db = LogDb::open(dir.path(), opts.clone()).unwrap();
    assert!(matches!(LogDb::open(dir.path(), opts.clone()), Err(Error::Locked(_))));
    for round in 0..50u64 {
        let mut b = WriteBatch::new();
        for g in 1..=8 {
            b.append(GroupId(g), (1..=10).map(|k| entry(round * 10 + k, 100)).collect::<Vec<_>>());
            b.set_hard_state(
                GroupId(g),
                HardState { term: Term(1), vote: None, commit: LogIndex(round * 10) },
            );
        }
        db.save(&b).unwrap();
    }
    assert!(db.stats().segments.len() > 3);
    // Old entries come from disk (the cache holds 4 KiB), recent ones from the cache.
    let s = db.group(GroupId(3));
    let all = s.entries(LogIndex(1), LogIndex(501), u64::MAX).unwrap();
    assert_eq!(all, (1..=500).map(|i| entry(i, 100)).collect::<Vec<_>>());
    // 124 bytes each (Entry::size): the third passes the limit.
    assert_eq!(s.entries(LogIndex(10), LogIndex(501), 300).unwrap().len(), 2, "size limit");
    assert_eq!(s.entries(LogIndex(10), LogIndex(501), 0).unwrap().len(), 1, "at least one");
    drop((db, s));
    let db = LogDb::open(dir.path(), opts).unwrap();
    let s = db.group(GroupId(8));
    assert_eq!(s.entries(LogIndex(1), LogIndex(501), u64::MAX).unwrap().len(), 500);
    assert_eq!(s.initial_state().unwrap().hard_state.commit, LogIndex(490));
}

#[test]
fn readers_run_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { segment_size: 32 << 10, cache_capacity: 8 << 10, auto_purge: true };
    let db = LogDb::open(dir.path(), opts).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (1..=2)
        .map(|g| {
            let s = db.group(GroupId(g));
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
                    if last >= first {
                        // Compaction may race the read; any answer must be a prefix of the right entries.
                        if let Ok(es) = s.entries(first, last.next(), u64::MAX) {
                            for (k, e) in es.iter().enumerate() {
                                assert_eq!(e.index, LogIndex(first.0 + k as u64));
                                assert_eq!(*e, entry(e.index.0, 50));
                            }
                        }
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for round in 0..200u64 {
        let mut b = WriteBatch::new();
        for g in 1..=2 {
            b.append(GroupId(g), (1..=5).map(|k| entry(round * 5 + k, 50)).collect::<Vec<_>>());
            if round % 20 == 19 {
                let i = LogIndex(round * 5);
                b.create_snapshot(GroupId(g), i, Default::default(), Bytes::new());
                b.compact(GroupId(g), i);
            }
        }
        db.save(&b).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}
