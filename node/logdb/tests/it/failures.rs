//! Failed writes and fsyncs poison the store; one batch is one write and one fdatasync.

use bytes::Bytes;
use drakkar_logdb::fs::MemFs;
use drakkar_logdb::{Error, Options, WriteBatch};
use drakkar_raft::{Entry, GroupId, HardState, LogIndex, Storage, Term};

use crate::common::*;

fn entries(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..=hi)
        .map(|i| Entry {
            term: Term(term),
            index: LogIndex(i),
            data: Bytes::from(vec![i as u8; 10]),
            ..Default::default()
        })
        .collect()
}

fn batch(groups: u64, lo: u64, hi: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for g in 1..=groups {
        b.append(GroupId(g), entries(lo, hi, 1));
        b.set_hard_state(GroupId(g), HardState { term: Term(1), vote: None, commit: LogIndex(lo) });
    }
    b
}

#[test]
fn a_batch_of_many_groups_is_one_write_and_one_sync() {
    let fs = MemFs::new();
    let db = open(&fs, &Options::default()).unwrap();
    let before = fs.stats();
    db.save(&batch(100, 1, 10)).unwrap();
    let after = fs.stats();
    assert_eq!(after.appends - before.appends, 1);
    assert_eq!(after.syncs - before.syncs, 1);
    assert_eq!(after.dir_syncs, before.dir_syncs);
    assert_eq!(db.groups().len(), 100);
}

#[test]
fn a_rolled_batch_is_one_write_one_sync_and_one_directory_sync() {
    let fs = MemFs::new();
    let db = open(&fs, &Options { segment_size: 4096, ..Options::default() }).unwrap();
    db.save(&batch(10, 1, 10)).unwrap();
    let before = fs.stats();
    db.save(&batch(10, 11, 30)).unwrap();
    let after = fs.stats();
    assert_eq!(db.stats().segments.len(), 2);
    assert_eq!((after.appends - before.appends, after.syncs - before.syncs), (1, 1));
    assert_eq!((after.creates - before.creates, after.dir_syncs - before.dir_syncs), (1, 1));
}

fn check_poisoned(fs: &MemFs, arm: impl Fn(&MemFs), opts: Options) {
    let db = open(fs, &opts).unwrap();
    db.save(&batch(3, 1, 5)).unwrap();
    arm(fs);
    let err = db.save(&batch(3, 6, 200)).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    fs.clear_faults();
    // Retrying is refused: after a failed fsync the kernel may have dropped the dirty pages and a second
    // fsync would report success for bytes that never reached the disk.
    assert!(matches!(db.save(&batch(3, 6, 7)), Err(Error::Poisoned(_))));
    assert!(matches!(db.compact(GroupId(1), LogIndex(1)), Err(Error::Poisoned(_))));
    assert!(matches!(db.remove_group(GroupId(1)), Err(Error::Poisoned(_))));
    assert!(matches!(db.purge(), Err(Error::Poisoned(_))));
    assert!(db.poisoned().is_some());
    // Reads still answer from the last good state.
    assert_eq!(db.group(GroupId(2)).last_index(), Ok(LogIndex(5)));
    drop(db);
    // Reopened by a process that did not crash (the page cache still holds whatever was written), then
    // after a crash: the failed batch is invisible both times.
    for crash in [false, true] {
        if crash {
            fs.crash_clean();
        }
        let db = open(fs, &opts).unwrap();
        for g in 1..=3 {
            assert_eq!(db.group(GroupId(g)).last_index(), Ok(LogIndex(5)), "crash {crash}");
        }
    }
    let db = open(fs, &opts).unwrap();
    for g in 1..=3 {
        let s = db.group(GroupId(g));
        assert_eq!(s.last_index(), Ok(LogIndex(5)), "the failed batch is not visible");
        assert_eq!(s.entries(LogIndex(1), LogIndex(6), u64::MAX).unwrap(), entries(1, 5, 1));
    }
    db.save(&batch(3, 6, 7)).unwrap();
}

#[test]
fn a_failed_fsync_poisons_the_store() {
    check_poisoned(&MemFs::new(), |fs| fs.fail_syncs_after(0), Options::default());
}

#[test]
fn a_failed_write_poisons_the_store() {
    check_poisoned(&MemFs::new(), |fs| fs.fail_appends_after(0, 100), Options::default());
}

#[test]
fn a_failed_directory_sync_on_roll_poisons_the_store() {
    check_poisoned(
        &MemFs::new(),
        |fs| fs.fail_dir_syncs_after(0),
        Options { segment_size: 4096, ..Default::default() },
    );
}

#[test]
fn a_rejected_batch_writes_nothing_and_does_not_poison() {
    let fs = MemFs::new();
    let db = open(&fs, &Options::default()).unwrap();
    db.save(&batch(2, 1, 5)).unwrap();
    let before = fs.stats();
    let mut b = batch(2, 6, 8);
    b.append(GroupId(1), entries(20, 21, 1)); // a gap: rejects the whole batch
    match db.save(&b) {
        Err(Error::Rejected { group, .. }) => assert_eq!(group, GroupId(1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs.stats(), before);
    assert_eq!(db.group(GroupId(2)).last_index(), Ok(LogIndex(5)), "no update of the batch applied");
    db.save(&batch(2, 6, 8)).unwrap();
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let fs = MemFs::new();
    let db = open(&fs, &Options::default()).unwrap();
    assert!(matches!(open(&fs, &Options::default()), Err(Error::Locked(_))));
    drop(db);
    open(&fs, &Options::default()).unwrap();
}
