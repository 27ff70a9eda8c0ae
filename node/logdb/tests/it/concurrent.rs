//! Concurrent writers: group commit shares writes and fsyncs, each batch stays atomic and is rejected alone.

use std::time::Duration;

use bytes::Bytes;
use drakkar_logdb::fs::MemFs;
use drakkar_logdb::{Error, LogDb, Options, WriteBatch};
use drakkar_raft::{Entry, GroupId, LogIndex, Rng, Storage, Term};

use crate::common::*;

const PER_BATCH: u64 = 5;

fn entries(lo: u64) -> Vec<Entry> {
    (lo..lo + PER_BATCH)
        .map(|i| Entry {
            term: Term(1),
            index: LogIndex(i),
            data: Bytes::from(i.to_le_bytes().to_vec()),
            ..Default::default()
        })
        .collect()
}

/// Each of `threads` writers appends batches of 5 entries to its own group until `rounds` or an error.
/// Returns the last index each one had acknowledged.
fn writers(db: &LogDb, threads: u64, rounds: u64, invalid_every: u64) -> Vec<u64> {
    let handles: Vec<_> = (1..=threads)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut acked = 0;
                for r in 0..rounds {
                    let mut b = WriteBatch::new();
                    b.append(GroupId(t), entries(acked + 1));
                    if invalid_every > 0 && r % invalid_every == invalid_every - 1 {
                        let mut bad = WriteBatch::new();
                        bad.append(GroupId(t), entries(acked + 3)); // a gap
                        assert!(matches!(db.save(&bad), Err(Error::Rejected { .. })), "thread {t}");
                    }
                    match db.save(&b) {
                        Ok(()) => acked += PER_BATCH,
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn concurrent_saves_share_fsyncs() {
    let fs = MemFs::new();
    fs.set_sync_latency(Duration::from_millis(1));
    let db = open(&fs, &Options { segment_size: 16 << 10, ..Options::default() }).unwrap();
    let before = fs.stats();
    let acked = writers(&db, 4, 40, 7);
    let syncs = fs.stats().syncs - before.syncs;
    assert_eq!(acked, vec![200; 4]);
    assert!(syncs < 160, "160 saves took {syncs} fsyncs: no group commit");
    for t in 1..=4 {
        let s = db.group(GroupId(t));
        let got = s.entries(LogIndex(1), LogIndex(201), u64::MAX).unwrap();
        assert_eq!(got.len(), 200);
        assert!(
            got.iter()
                .enumerate()
                .all(|(k, e)| e.index.0 == k as u64 + 1 && e.data[..] == e.index.0.to_le_bytes())
        );
    }
    drop(db);
    fs.crash_clean();
    let db = open(&fs, &Options::default()).unwrap();
    assert!((1..=4).all(|t| db.group(GroupId(t)).last_index() == Ok(LogIndex(200))));
}

#[test]
fn concurrent_saves_survive_crashes_batch_by_batch() {
    for seed in seeds(0xC0C0, 8) {
        let _guard = SeedGuard("concurrent crash", seed);
        let mut rng = Rng::new(seed);
        let fs = MemFs::new();
        fs.set_sync_latency(Duration::from_micros(300));
        let opts = Options { segment_size: 4096 * rng.range(1, 4), cache_capacity: 2048, auto_purge: true };
        let db = open(&fs, &opts).unwrap();
        fs.die_after(rng.range(5, 120));
        let acked = writers(&db, 3, 100, 0);
        drop(db);
        for _ in 0..8 {
            let f = fs.fork();
            f.crash(rng.chance(1, 2), |_, n| rng.range(0, n + 1));
            let db = open(&f, &opts).unwrap();
            for (t, &acked) in (1..=3).zip(&acked) {
                let s = db.group(GroupId(t));
                let last = s.last_index().unwrap().0;
                assert!(last >= acked, "group {t}: acknowledged {acked}, found {last}");
                assert_eq!(last % PER_BATCH, 0, "group {t}: half a batch visible ({last})");
                let got = s.entries(LogIndex(1), LogIndex(last + 1), u64::MAX).unwrap();
                assert!(got.iter().all(|e| e.data[..] == e.index.0.to_le_bytes()));
            }
        }
    }
}
