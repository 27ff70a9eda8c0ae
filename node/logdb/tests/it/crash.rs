//! Crash consistency: random multi-group workloads on the fault-injecting file system, crashed at many
//! points and reopened. Every acknowledged batch must be intact; the batch in flight must be entirely
//! visible or entirely absent (never half); nothing goes backwards.

use std::sync::atomic::{AtomicU64, Ordering};

use drakkar_logdb::fs::MemFs;
use drakkar_logdb::{Error, LogDb, Options, WriteBatch};
use drakkar_raft::{GroupId, HardState, Rng};

use crate::common::*;

/// Reopens after a crash that kept part, but not all, of an unsynced write.
static TORN_REOPENS: AtomicU64 = AtomicU64::new(0);

/// The injected fault of one step.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// The process dies after this many more mutating calls.
    Die(u64),
    FailSync,
    FailAppend(usize),
    FailDirSync,
}

fn arm(fs: &MemFs, f: Fault) {
    match f {
        Fault::None => {}
        Fault::Die(n) => fs.die_after(n),
        Fault::FailSync => fs.fail_syncs_after(0),
        Fault::FailAppend(partial) => fs.fail_appends_after(0, partial),
        Fault::FailDirSync => fs.fail_dir_syncs_after(0),
    }
}

/// The tear lengths to try for `unsynced` bytes: every one for a small write, a sample for a larger one.
fn tears(rng: &mut Rng, unsynced: u64) -> Vec<u64> {
    if unsynced <= 160 {
        return (0..=unsynced).collect();
    }
    let mut t = vec![0, 1, 19, 20, 21, unsynced / 2, unsynced - 8, unsynced - 1, unsynced];
    t.extend((0..12).map(|_| rng.range(0, unsynced + 1)));
    t
}

/// Crashes forks of `fs` with every tear length in turn and checks that each reopened log holds `before`
/// or `after` exactly. Returns one of the reopened logs (and its model) to continue with.
fn crash_and_check(
    fs: &MemFs,
    opts: &Options,
    before: &Model,
    after: &Model,
    rng: &mut Rng,
) -> (MemFs, LogDb, Model) {
    let unsynced = segment_paths(fs).iter().map(|p| fs.unsynced_len(p)).max().unwrap_or(0);
    let mut outcomes = Vec::new();
    for t in tears(rng, unsynced) {
        // Lost or kept directory operations matter only when a segment was being created or removed.
        let dir_modes: &[bool] = if fs.paths() == fs.durable_paths() { &[false] } else { &[false, true] };
        for &keep_dir_ops in dir_modes {
            let f = fs.fork();
            f.crash(keep_dir_ops, |_, n| t.min(n));
            if t > 0 && t < unsynced {
                TORN_REOPENS.fetch_add(1, Ordering::Relaxed);
            }
            let db = open(&f, opts).unwrap_or_else(|e| panic!("reopen after tear {t} of {unsynced}: {e}"));
            let model = match same(&db, after) {
                Ok(()) => after,
                Err(e_after) => match same(&db, before) {
                    Ok(()) => before,
                    Err(e_before) => panic!(
                        "tear {t}/{unsynced} keep_dir_ops {keep_dir_ops}: neither before nor after\n\
                         vs after: {e_after}\nvs before: {e_before}"
                    ),
                },
            };
            // Hard state never goes backwards past the acknowledged one (unless the batch in flight itself
            // lowers it: a group removed and started over).
            let ge = |a: HardState, b: HardState| a.term >= b.term && a.commit >= b.commit;
            for (g, s) in &before.groups {
                let (was, next, now) =
                    (s.hard_state(), after.get(*g).hard_state(), db.group(*g).hard_state());
                if ge(next, was) {
                    assert!(ge(now, was), "tear {t}/{unsynced}: group {g}: {was:?} -> {now:?}");
                }
            }
            outcomes.push((f, db, model.clone()));
        }
    }
    let k = rng.range(0, outcomes.len() as u64) as usize;
    outcomes.swap_remove(k)
}

fn run(seed: u64, steps: u64) {
    let _guard = SeedGuard("crash", seed);
    let mut rng = Rng::new(seed);
    let opts = Options {
        segment_size: 4096 * rng.range(1, 4),
        cache_capacity: [0, 3000, 1 << 20][rng.range(0, 3) as usize],
        auto_purge: rng.chance(1, 2),
    };
    let groups = rng.range(1, 9);
    let mut fs = MemFs::new();
    let mut db = open(&fs, &opts).unwrap();
    let mut model = Model::default();
    for step in 0..steps {
        let small = rng.chance(1, 3);
        let ops =
            random_batch(&mut rng, &model, groups, if small { 1 } else { 6 }, if small { 8 } else { 300 });
        // Mostly process deaths (the bytes written so far stay unsynced, to be torn by the crash), sometimes
        // failing calls (the store then cuts what it wrote, best effort).
        let fault = match rng.range(0, 16) {
            0..=2 => Fault::Die(rng.range(0, 4)),
            3 => Fault::FailSync,
            4 => Fault::FailAppend(rng.range(0, 64) as usize),
            5 => Fault::FailDirSync,
            _ => Fault::None,
        };
        arm(&fs, fault);
        let expected = model.apply(&ops);
        let purge = rng.chance(1, 10);
        let result = if purge { db.purge().map(|_| ()) } else { db.save(&batch_of(&ops)) };
        let after = if purge { Some(model.clone()) } else { expected };
        match (result, after) {
            (Ok(()), Some(m)) => {
                fs.clear_faults();
                model = m;
            }
            (Err(Error::Rejected { .. }), None) => fs.clear_faults(),
            (Err(e), Some(m)) => {
                assert!(!matches!(fault, Fault::None), "step {step}: unexpected failure {e}");
                assert!(!matches!(e, Error::Rejected { .. }), "step {step}: rejected a valid batch: {e}");
                fs.clear_faults();
                let mut b = WriteBatch::new();
                b.set_hard_state(GroupId(1), HardState::default());
                // A purge that failed to remove a file changed nothing and need not poison the store;
                // every other failure does.
                if !purge || db.poisoned().is_some() {
                    assert!(
                        matches!(db.save(&b), Err(Error::Poisoned(_))),
                        "step {step}: a write after a failure ({e}) must be refused"
                    );
                }
                drop(db);
                let (f, reopened, m) = crash_and_check(&fs, &opts, &model, &m, &mut rng);
                fs = f;
                db = reopened;
                model = m;
            }
            (r, m) => panic!("step {step}: logdb said {r:?}, model accepts: {}", m.is_some()),
        }
        if rng.chance(1, 15) {
            // A crash with nothing in flight loses nothing.
            drop(db);
            fs.crash(rng.chance(1, 2), |_, n| rng.range(0, n + 1));
            db = open(&fs, &opts).unwrap();
            same(&db, &model).unwrap_or_else(|e| panic!("step {step}, clean crash: {e}"));
        }
    }
    drop(db);
    fs.crash_clean();
    let db = open(&fs, &opts).unwrap();
    same(&db, &model).unwrap();
}

#[test]
fn random_workloads_survive_crashes() {
    let seeds = seeds(0xC4A5, 40);
    for &seed in &seeds {
        run(seed, 200);
    }
    let torn = TORN_REOPENS.load(Ordering::Relaxed);
    eprintln!("{torn} reopens after torn writes");
    if seeds.len() > 1 {
        assert!(torn > 2000, "the workload must tear many writes, got {torn}");
    }
}

/// One small batch torn at every byte boundary: before or after, never in between.
#[test]
fn small_batch_torn_at_every_byte() {
    let _guard = SeedGuard("torn", 0);
    let fs = MemFs::new();
    let opts = Options::default();
    let db = open(&fs, &opts).unwrap();
    let mut rng = Rng::new(7);
    let mut model = Model::default();
    let ops = random_batch(&mut rng, &model, 3, 4, 16);
    model = model.apply(&ops).unwrap_or(model);
    db.save(&batch_of(&ops)).ok();
    // The next batch: three groups, entries and hard states; the sync fails, then the crash tears it.
    let ops: Vec<_> = (1..=3)
        .flat_map(|g| {
            let g = GroupId(g);
            [(g, random_op(&mut rng, &model, g, 8)), (g, TOp::HardState(HardState::default()))]
        })
        .collect();
    let after = model.apply(&ops).expect("valid batch");
    fs.die_after(1); // the append succeeds, the fdatasync never happens
    assert!(db.save(&batch_of(&ops)).is_err());
    drop(db);
    let unsynced = fs.unsynced_len(&segment_paths(&fs)[0]);
    assert!(unsynced > 28, "the batch is in the page cache only");
    let mut seen_after = false;
    for t in 0..=unsynced {
        let f = fs.fork();
        f.crash(false, |_, n| t.min(n));
        let db = open(&f, &opts).unwrap();
        if t == unsynced {
            same(&db, &after).unwrap();
            seen_after = true;
        } else {
            same(&db, &model).unwrap_or_else(|e| panic!("tear at {t}: {e}"));
        }
    }
    assert!(seen_after);
}
