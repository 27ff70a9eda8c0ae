//! Shared helpers: a reference model built on `MemStorage`, random workloads, comparisons.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use drakkar_logdb::fs::MemFs;
use drakkar_logdb::{LogDb, Options, WriteBatch};
use drakkar_raft::{
    Entry, EntryKind, GroupId, HardState, InitialState, LogIndex, MemStorage, Membership, ReplicaId, Rng,
    Snapshot, SnapshotMeta, Storage, StorageError, Term,
};

/// The directory every in-memory test log lives in.
pub fn dir() -> PathBuf {
    PathBuf::from("/logdb")
}

/// Opens the log in [`dir`] on `fs`.
pub fn open(fs: &MemFs, opts: &Options) -> drakkar_logdb::Result<LogDb> {
    LogDb::open_with_fs(Arc::new(fs.clone()), dir(), opts.clone())
}

/// Prints the seed if the test panics while this is alive.
pub struct SeedGuard(pub &'static str, pub u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}: FAILED with seed {} (rerun with LOGDB_SEED={})", self.0, self.1, self.1);
        }
    }
}

/// The seeds to run: `LOGDB_SEED` alone if set, else `n` seeds from `base`.
pub fn seeds(base: u64, n: u64) -> Vec<u64> {
    match std::env::var("LOGDB_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => (0..n).map(|i| base.wrapping_mul(1_000_003).wrapping_add(i)).collect(),
    }
}

/// One update, applied both to a [`WriteBatch`] and to the model.
#[derive(Clone, Debug)]
pub enum TOp {
    Append(Vec<Entry>),
    HardState(HardState),
    ApplySnapshot(Snapshot),
    CreateSnapshot(LogIndex, Membership, Bytes),
    Compact(LogIndex),
    Remove,
}

/// The expected state: one `MemStorage` per group (a missing group is an empty one).
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub groups: BTreeMap<GroupId, MemStorage>,
}

impl Model {
    /// The model after `ops`, or `None` if one of them is rejected (then the whole batch is).
    pub fn apply(&self, ops: &[(GroupId, TOp)]) -> Option<Model> {
        let mut m = self.clone();
        for (g, op) in ops {
            let s = m.groups.entry(*g).or_default();
            let r = match op {
                TOp::Append(e) => s.append(e),
                TOp::HardState(hs) => {
                    s.set_hard_state(*hs);
                    Ok(())
                }
                TOp::ApplySnapshot(snap) => s.apply_snapshot(snap.clone()),
                TOp::CreateSnapshot(i, mem, data) => s.create_snapshot(*i, mem.clone(), data.clone()),
                TOp::Compact(i) => s.compact(*i),
                TOp::Remove => {
                    m.groups.remove(g);
                    Ok(())
                }
            };
            if r.is_err() {
                return None;
            }
        }
        Some(m)
    }

    pub fn get(&self, g: GroupId) -> MemStorage {
        self.groups.get(&g).cloned().unwrap_or_default()
    }
}

/// Builds the batch of `ops`.
pub fn batch_of(ops: &[(GroupId, TOp)]) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (g, op) in ops {
        match op {
            TOp::Append(e) => b.append(*g, e.clone()),
            TOp::HardState(hs) => b.set_hard_state(*g, *hs),
            TOp::ApplySnapshot(s) => b.apply_snapshot(*g, s.clone()),
            TOp::CreateSnapshot(i, m, d) => b.create_snapshot(*g, *i, m.clone(), d.clone()),
            TOp::Compact(i) => b.compact(*g, *i),
            TOp::Remove => b.remove_group(*g),
        };
    }
    b
}

/// Everything a `Storage` answers about its log, for comparisons.
pub fn describe(s: &impl Storage) -> String {
    let first = s.first_index().unwrap();
    let last = s.last_index().unwrap();
    let mut out = format!(
        "init {:?}\nfirst {first} last {last}\nsnapshot {:?}\n",
        s.initial_state(),
        s.snapshot().map(|x| (x.meta, x.data))
    );
    for i in first.0.saturating_sub(2)..=last.0 + 1 {
        out += &format!("term {i} {:?}\n", s.term(LogIndex(i)));
    }
    out += &format!("entries {:?}\n", s.entries(first, last.next(), u64::MAX));
    out
}

type Answer<T> = Result<T, StorageError>;
type Key = (
    Answer<InitialState>,
    LogIndex,
    LogIndex,
    Answer<Snapshot>,
    Answer<Term>,
    Answer<Term>,
    Answer<Vec<Entry>>,
);

/// The answers that define a log, compared without formatting.
fn key(s: &impl Storage) -> Key {
    let first = s.first_index().unwrap();
    let last = s.last_index().unwrap();
    (
        s.initial_state(),
        first,
        last,
        s.snapshot(),
        s.term(first.prev()),
        s.term(last.next()),
        s.entries(first, last.next(), u64::MAX),
    )
}

/// Checks that `db` holds exactly `model`, for every group either knows.
pub fn same(db: &LogDb, model: &Model) -> Result<(), String> {
    let mut ids: Vec<GroupId> = db.groups();
    ids.extend(model.groups.keys().copied());
    ids.sort_unstable();
    ids.dedup();
    for g in ids {
        let ours = db.group(g);
        let theirs = model.get(g);
        if key(&ours) != key(&theirs) {
            let (ours, theirs) = (describe(&ours), describe(&theirs));
            return Err(format!("group {g} differs:\n--- logdb\n{ours}--- model\n{theirs}"));
        }
    }
    Ok(())
}

/// Random bytes of a random length below `max`.
pub fn data(rng: &mut Rng, max: u64) -> Bytes {
    let n = rng.range(0, max);
    Bytes::from((0..n).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>())
}

fn membership(rng: &mut Rng) -> Membership {
    let mut m = Membership::with_voters((1..=rng.range(1, 4)).map(ReplicaId));
    if rng.chance(1, 3) {
        m.non_voters.insert(ReplicaId(7));
    }
    if rng.chance(1, 4) {
        m.removed.insert(ReplicaId(9));
    }
    m
}

/// A random update for `g`, plausible for its state in `model` (sometimes invalid on purpose).
pub fn random_op(rng: &mut Rng, model: &Model, g: GroupId, max_data: u64) -> TOp {
    let s = model.get(g);
    let first = s.first_index().unwrap().0;
    let last = s.last_index().unwrap().0;
    let hs = s.hard_state();
    let snap_index = s.snapshot().unwrap().meta.index.0;
    let last_term = s.term(LogIndex(last)).map_or(0, |t| t.0);
    match rng.range(0, 20) {
        0..=9 => {
            // Mostly at the end, sometimes overwriting a suffix, rarely below the base or past a gap.
            let start = match rng.range(0, 10) {
                0 => first.saturating_sub(2).max(1),
                1 => rng.range(first, last + 2),
                2 if rng.chance(1, 4) => last + 2,
                _ => last + 1,
            };
            let term = last_term.max(hs.term.0) + rng.range(0, 2);
            let n = rng.range(1, 12);
            let entries = (start..start + n)
                .map(|i| Entry {
                    term: Term(term),
                    index: LogIndex(i),
                    kind: if rng.chance(1, 10) { EntryKind::ConfChange } else { EntryKind::Normal },
                    data: data(rng, max_data),
                })
                .collect();
            TOp::Append(entries)
        }
        10..=13 => TOp::HardState(HardState {
            term: Term(hs.term.0 + rng.range(0, 2)),
            vote: if rng.chance(1, 2) { Some(ReplicaId(rng.range(1, 4))) } else { None },
            commit: LogIndex(rng.range(hs.commit.0, last + 1)),
        }),
        14..=15 => {
            let i = rng.range(snap_index.saturating_sub(1), last + 2).max(1);
            TOp::CreateSnapshot(LogIndex(i), membership(rng), data(rng, 16))
        }
        16..=17 => TOp::Compact(LogIndex(rng.range(first.saturating_sub(1), snap_index + 2))),
        18 => {
            let index = LogIndex(snap_index + rng.range(1, 8));
            let term =
                if rng.chance(1, 2) { s.term(index).unwrap_or(Term(last_term)) } else { Term(last_term + 1) };
            TOp::ApplySnapshot(Snapshot {
                meta: SnapshotMeta { index, term, membership: membership(rng) },
                data: data(rng, 16),
            })
        }
        _ if rng.chance(1, 3) => TOp::Remove,
        _ => TOp::HardState(HardState { term: hs.term, vote: hs.vote, commit: hs.commit }),
    }
}

/// A random batch of 1..=max_ops updates over groups `1..=groups`.
pub fn random_batch(
    rng: &mut Rng,
    model: &Model,
    groups: u64,
    max_ops: u64,
    max_data: u64,
) -> Vec<(GroupId, TOp)> {
    let mut ops = Vec::new();
    let mut scratch = model.clone();
    for _ in 0..rng.range(1, max_ops + 1) {
        let g = GroupId(rng.range(1, groups + 1));
        let op = random_op(rng, &scratch, g, max_data);
        // Plan later updates against the state after the earlier ones, when they are valid.
        if let Some(next) = scratch.apply(&[(g, op.clone())]) {
            scratch = next;
        }
        ops.push((g, op));
    }
    ops
}

/// The segment files of the log in `fs`, in order.
pub fn segment_paths(fs: &MemFs) -> Vec<PathBuf> {
    fs.paths().into_iter().filter(|p| p.extension().is_some_and(|e| e == "log")).collect()
}
