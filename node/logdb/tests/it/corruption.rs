//! Damage to synced bytes is detected and reported (open fails naming the file and offset, or a read of
//! the entry fails), never served as data. A torn tail is cut silently.

use bytes::Bytes;
use drakkar_logdb::fs::{FileSystem, MemFs};
use drakkar_logdb::{Error, Options};
use drakkar_raft::{Entry, GroupId, LogIndex, Rng, Storage, StorageError, Term};

use crate::common::*;

/// A small log of several segments, all synced, and its model.
fn build(seed: u64) -> (MemFs, Model, Options) {
    let mut rng = Rng::new(seed);
    let opts = Options { segment_size: 4096, cache_capacity: 0, auto_purge: false };
    let fs = MemFs::new();
    let db = open(&fs, &opts).unwrap();
    let mut model = Model::default();
    for _ in 0..40 {
        let ops = random_batch(&mut rng, &model, 4, 4, 120);
        if let Some(m) = model.apply(&ops) {
            db.save(&batch_of(&ops)).unwrap();
            model = m;
        }
    }
    drop(db);
    assert!(segment_paths(&fs).len() >= 3, "several segments");
    (fs, model, opts)
}

#[test]
fn every_flipped_bit_in_synced_records_refuses_to_open() {
    let (fs, model, opts) = build(11);
    same(&open(&fs, &opts).unwrap(), &model).unwrap();
    let mut rng = Rng::new(12);
    let mut checked = 0;
    for path in segment_paths(&fs) {
        let len = fs.read_file(&path).unwrap().len() as u64;
        // Every byte of the first 200 and the last 200, a sample in between.
        let mut offsets: Vec<u64> = (0..len.min(200)).chain(len.saturating_sub(200)..len).collect();
        offsets.extend((0..150).map(|_| rng.range(0, len)));
        for off in offsets {
            let f = fs.fork();
            let bit = rng.range(0, 8) as u8;
            f.flip_bit(&path, off, bit).unwrap();
            match open(&f, &opts) {
                Err(Error::Corruption { path: p, offset, reason }) => {
                    assert_eq!(p, path, "flip at {off} of {}: reported {reason}", path.display());
                    assert!(offset <= off, "flip at {off} reported at {offset}: {reason}");
                }
                other => panic!("flip of bit {bit} at {off} of {}: {other:?}", path.display()),
            }
            checked += 1;
        }
    }
    assert!(checked > 1000);
}

#[test]
fn damage_after_open_fails_the_read() {
    let fs = MemFs::new();
    let opts = Options { cache_capacity: 0, ..Options::default() };
    let db = open(&fs, &opts).unwrap();
    let payload = Bytes::from_static(b"THE-PAYLOAD-TO-DAMAGE");
    let e = |i: u64, data: Bytes| Entry { term: Term(1), index: LogIndex(i), data, ..Default::default() };
    let mut b = drakkar_logdb::WriteBatch::new();
    b.append(
        GroupId(5),
        vec![e(1, Bytes::from_static(b"before")), e(2, payload.clone()), e(3, Bytes::new())],
    );
    db.save(&b).unwrap();
    let path = segment_paths(&fs)[0].clone();
    let bytes = fs.read_file(&path).unwrap();
    let at = bytes.windows(payload.len()).position(|w| w == payload).unwrap();
    fs.flip_bit(&path, at as u64 + 3, 1).unwrap();
    let g = db.group(GroupId(5));
    match g.entries(LogIndex(1), LogIndex(4), u64::MAX) {
        Err(StorageError::Other(msg)) => {
            assert!(msg.contains("corrupt") && msg.contains("entry i2"), "{msg}")
        }
        other => panic!("damaged entry served: {other:?}"),
    }
    // The undamaged entry before it is still readable, and terms come from the index.
    assert_eq!(g.entries(LogIndex(1), LogIndex(2), u64::MAX).unwrap()[0].data, Bytes::from_static(b"before"));
    assert_eq!(g.term(LogIndex(2)), Ok(Term(1)));
    drop((g, db));
    match open(&fs, &opts) {
        Err(Error::Corruption { path: p, .. }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_segment_is_reported() {
    let (fs, _, opts) = build(21);
    let paths = segment_paths(&fs);
    fs.remove(&paths[1]).unwrap();
    match open(&fs, &opts) {
        Err(Error::Corruption { path, reason, .. }) => {
            assert_eq!(path, paths[1], "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_zero_filled_or_torn_tail_is_cut_but_garbage_is_not() {
    let (fs, model, opts) = build(31);
    let last = segment_paths(&fs).pop().unwrap();
    let len = fs.read_file(&last).unwrap().len();

    // A file system that extended the file without writing its data: zeros.
    let f = fs.fork();
    f.open(&last).unwrap().append(&[0u8; 300]).unwrap();
    let db = open(&f, &opts).unwrap();
    same(&db, &model).unwrap();
    drop(db);
    assert_eq!(f.read_file(&last).unwrap().len(), len, "the zeros were cut");

    // Garbage that is not a prefix of a record: reported, not cut.
    let f = fs.fork();
    f.open(&last).unwrap().append(b"this is not a record header").unwrap();
    match open(&f, &opts) {
        Err(Error::Corruption { path, offset, .. }) => assert_eq!((path, offset), (last.clone(), len as u64)),
        other => panic!("{other:?}"),
    }

    // A complete frame copied from the middle of the log to its end: wrong sequence number.
    let f = fs.fork();
    let bytes = f.read_file(&last).unwrap();
    let frame_len = 28 + u32::from_le_bytes(bytes[36..40].try_into().unwrap()) as usize;
    f.open(&last).unwrap().append(&bytes[32..32 + frame_len]).unwrap();
    assert!(matches!(open(&f, &opts), Err(Error::Corruption { .. })));
}

#[test]
fn damage_followed_by_valid_records_in_the_last_segment_is_reported() {
    let fs = MemFs::new();
    let opts = Options::default();
    let db = open(&fs, &opts).unwrap();
    let mut rng = Rng::new(41);
    let mut model = Model::default();
    for _ in 0..10 {
        let ops = random_batch(&mut rng, &model, 2, 2, 40);
        if let Some(m) = model.apply(&ops) {
            db.save(&batch_of(&ops)).unwrap();
            model = m;
        }
    }
    drop(db);
    let path = segment_paths(&fs)[0].clone();
    let bytes = fs.read_file(&path).unwrap();
    // Zero the header of a record in the middle: looks like a torn write, but valid records follow.
    let mid = bytes.len() / 2;
    let f = fs.fork();
    let mut damaged = bytes.clone();
    damaged[mid..mid + 64].fill(0);
    f.write_file(&path, &damaged);
    match open(&f, &opts) {
        Err(Error::Corruption { path: p, offset, .. }) => {
            assert_eq!(p, path);
            assert!(offset <= mid as u64);
        }
        other => panic!("{other:?}"),
    }
}
