//! Compaction, purging of old segments, purge blockers, group removal, reopen after purge.

use bytes::Bytes;
use drakkar_logdb::fs::MemFs;
use drakkar_logdb::{LogDb, Options};
use drakkar_raft::{Entry, GroupId, HardState, LogIndex, Membership, ReplicaId, Storage, Term};

use crate::common::*;

fn ents(lo: u64, n: u64, term: u64) -> Vec<Entry> {
    (lo..lo + n)
        .map(|i| Entry {
            term: Term(term),
            index: LogIndex(i),
            data: Bytes::from(vec![i as u8; 32]),
            ..Default::default()
        })
        .collect()
}

fn save(db: &LogDb, model: &mut Model, ops: Vec<(GroupId, TOp)>) {
    *model = model.apply(&ops).expect("valid batch");
    db.save(&batch_of(&ops)).unwrap();
}

/// Snapshot at the last index and compact everything: what a host does after a snapshot.
fn snapshot_and_compact(model: &Model, g: GroupId) -> Vec<(GroupId, TOp)> {
    let last = model.get(g).last_index().unwrap();
    vec![
        (g, TOp::CreateSnapshot(last, Membership::with_voters([ReplicaId(1)]), Bytes::from_static(b"ref"))),
        (g, TOp::Compact(last)),
    ]
}

const OPTS: Options = Options { segment_size: 4096, cache_capacity: 0, auto_purge: false };

#[test]
fn purge_waits_for_every_group_and_keeps_idle_groups_metadata() {
    let fs = MemFs::new();
    let db = open(&fs, &OPTS).unwrap();
    let mut model = Model::default();
    // An idle group: writes once, then never again; its records live only in the first segment.
    let idle = GroupId(99);
    let mut ops = vec![
        (idle, TOp::Append(ents(1, 3, 1))),
        (idle, TOp::HardState(HardState { term: Term(2), vote: Some(ReplicaId(1)), commit: LogIndex(3) })),
    ];
    ops.extend(snapshot_and_compact(&model.apply(&ops).unwrap(), idle));
    save(&db, &mut model, ops);
    let groups: Vec<GroupId> = (1..=50).map(GroupId).collect();
    for round in 0..20 {
        let ops = groups.iter().map(|&g| (g, TOp::Append(ents(1 + round * 5, 5, 1)))).collect();
        save(&db, &mut model, ops);
    }
    let segments = db.stats().segments.len();
    assert!(segments >= 20, "{segments} segments");
    assert_eq!(db.purge().unwrap(), 1, "only the idle group's segment can go");
    let blockers = db.purge_blockers();
    assert_eq!(blockers.len(), 50);
    assert!(blockers.iter().all(|&(_, i)| i == LogIndex(5)), "{blockers:?}");

    // Every group but 7 snapshots and compacts: 7 alone holds the oldest segment back.
    let ops = groups.iter().filter(|g| g.0 != 7).flat_map(|&g| snapshot_and_compact(&model, g)).collect();
    save(&db, &mut model, ops);
    assert_eq!(db.purge().unwrap(), 0);
    assert_eq!(db.purge_blockers(), vec![(GroupId(7), LogIndex(5))]);
    same(&db, &model).unwrap();

    let ops = snapshot_and_compact(&model, GroupId(7));
    save(&db, &mut model, ops);
    assert!(db.purge().unwrap() >= segments - 3);
    assert_eq!(db.purge_blockers(), vec![]);
    assert!(db.stats().segments.len() <= 2, "{:?}", db.stats());
    same(&db, &model).unwrap();

    // The idle group's hard state and snapshot survive the deletion of the only segment that held them.
    drop(db);
    fs.crash_clean();
    let db = open(&fs, &OPTS).unwrap();
    same(&db, &model).unwrap();
    let s = db.group(idle);
    assert_eq!(s.initial_state().unwrap().hard_state.term, Term(2));
    assert_eq!(s.snapshot().unwrap().meta.index, LogIndex(3));
    drop(s); // a view shares the store (and its directory lock)

    // And the log goes on.
    let ops = groups.iter().map(|&g| (g, TOp::Append(ents(101, 2, 2)))).collect();
    save(&db, &mut model, ops);
    drop(db);
    let db = open(&fs, &OPTS).unwrap();
    same(&db, &model).unwrap();
}

#[test]
fn removed_groups_release_segments_and_can_come_back() {
    let fs = MemFs::new();
    let db = open(&fs, &OPTS).unwrap();
    let mut model = Model::default();
    for round in 0..10 {
        let ops = (1..=5).map(|g| (GroupId(g), TOp::Append(ents(1 + round * 20, 20, 1)))).collect();
        save(&db, &mut model, ops);
    }
    let ops = (1..=5).filter(|&g| g != 3).flat_map(|g| snapshot_and_compact(&model, GroupId(g))).collect();
    save(&db, &mut model, ops);
    assert_eq!(db.purge().unwrap(), 0);
    assert_eq!(db.purge_blockers().iter().map(|b| b.0).collect::<Vec<_>>(), vec![GroupId(3)]);
    db.remove_group(GroupId(3)).unwrap();
    model.groups.remove(&GroupId(3));
    assert!(db.purge().unwrap() > 5);
    assert!(!db.groups().contains(&GroupId(3)));
    same(&db, &model).unwrap();
    drop(db);

    let db = open(&fs, &OPTS).unwrap();
    same(&db, &model).unwrap();
    assert_eq!(db.group(GroupId(3)).last_index(), Ok(LogIndex(0)));
    save(&db, &mut model, vec![(GroupId(3), TOp::Append(ents(1, 4, 7)))]);
    drop(db);
    fs.crash_clean();
    let db = open(&fs, &OPTS).unwrap();
    same(&db, &model).unwrap();
    assert_eq!(db.group(GroupId(3)).term(LogIndex(4)), Ok(Term(7)));
}

#[test]
fn automatic_purge_on_roll_keeps_the_log_small() {
    let fs = MemFs::new();
    let opts = Options { auto_purge: true, ..OPTS };
    let db = open(&fs, &opts).unwrap();
    let mut model = Model::default();
    for round in 0..60 {
        let mut ops: Vec<_> =
            (1..=4).map(|g| (GroupId(g), TOp::Append(ents(1 + round * 10, 10, 1)))).collect();
        let next = model.apply(&ops).unwrap();
        if round % 5 == 4 {
            for g in 1..=4 {
                ops.extend(snapshot_and_compact(&next, GroupId(g)));
            }
        }
        save(&db, &mut model, ops);
        assert!(db.stats().segments.len() <= 8, "round {round}: {:?}", db.stats().segments);
    }
    drop(db);
    fs.crash_clean();
    same(&open(&fs, &opts).unwrap(), &model).unwrap();
}
