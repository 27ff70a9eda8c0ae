//! Throughput of durable multi-group batches, next to the raw fdatasync rate of the same disk, and the time
//! to reopen a large log.
//!
//! ```text
//! cargo run --release -p drakkar-logdb --example logdb_bench -- \
//!     --groups 48 --entries 1,16,100,1000 --size 16,1024 --secs 5 --reopen-mib 1024 [--dir /tmp]
//! ```
//! Every batch holds `groups` x `entries` entries of `size` bytes plus a hard state per group, and is saved
//! with one write and one fdatasync. Every 16 batches each group snapshots and compacts all but its last
//! 10,000 entries, so old segments are purged as they would be in a node.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drakkar_logdb::{LogDb, Options, WriteBatch};
use drakkar_raft::{Entry, GroupId, HardState, LogIndex, Membership, Term};

struct Args {
    groups: u64,
    entries: Vec<u64>,
    sizes: Vec<usize>,
    secs: f64,
    reopen_mib: u64,
    dir: PathBuf,
}

fn parse_list<T: std::str::FromStr>(v: &str) -> Result<Vec<T>, String> {
    v.split(',').map(|x| x.trim().parse().map_err(|_| format!("bad value {x:?}"))).collect()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        groups: 48,
        entries: vec![1, 16, 100, 1000],
        sizes: vec![16, 1024],
        secs: 5.0,
        reopen_mib: 1024,
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--groups" => a.groups = value()?.parse().map_err(|_| "bad --groups")?,
            "--entries" => a.entries = parse_list(&value()?)?,
            "--size" => a.sizes = parse_list(&value()?)?,
            "--secs" => a.secs = value()?.parse().map_err(|_| "bad --secs")?,
            "--reopen-mib" => a.reopen_mib = value()?.parse().map_err(|_| "bad --reopen-mib")?,
            "--dir" => a.dir = PathBuf::from(value()?),
            "-h" | "--help" => {
                return Err(
                    "usage: logdb_bench [--groups N] [--entries N,N..] [--size BYTES,..] [--secs S] \
                            [--reopen-mib MIB (0: skip)] [--dir PARENT]"
                        .into(),
                );
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// A loop of 4 KiB appends, each followed by fdatasync, on a file in `dir`.
fn raw_fdatasync(dir: &Path, secs: f64) -> std::io::Result<(f64, f64)> {
    let path = dir.join("raw-fdatasync");
    let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
    let block = vec![0x5a; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let el = start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok((n as f64 / el, n as f64 * 4096.0 / el / 1e6))
}

/// Entries `first..first+n` of `data`.
fn entries(first: u64, n: u64, data: &Bytes) -> Vec<Entry> {
    (first..first + n)
        .map(|i| Entry { term: Term(1), index: LogIndex(i), data: data.clone(), ..Default::default() })
        .collect()
}

struct Run {
    entries: u64,
    batches: u64,
    elapsed: Duration,
    worst: Duration,
}

fn run(dir: &Path, groups: u64, per_group: u64, size: usize, secs: f64) -> drakkar_logdb::Result<Run> {
    let db = LogDb::open(dir, Options::default())?;
    let data = Bytes::from(vec![0xab; size]);
    let mut next = vec![1u64; groups as usize];
    let mut batch = WriteBatch::new();
    let (mut total, mut batches, mut worst) = (0u64, 0u64, Duration::ZERO);
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        batch.clear();
        for g in 0..groups {
            let id = GroupId(g + 1);
            let first = next[g as usize];
            batch.append(id, entries(first, per_group, &data));
            let last = first + per_group - 1;
            batch.set_hard_state(id, HardState { term: Term(1), vote: None, commit: LogIndex(last) });
            if batches % 16 == 15 && last > 10_000 {
                let i = LogIndex(last - 10_000);
                batch.create_snapshot(id, i, Membership::default(), Bytes::new());
                batch.compact(id, i);
            }
            next[g as usize] = last + 1;
        }
        let t = Instant::now();
        db.save(&batch)?;
        worst = worst.max(t.elapsed());
        total += groups * per_group;
        batches += 1;
    }
    Ok(Run { entries: total, batches, elapsed: start.elapsed(), worst })
}

fn reopen(dir: &Path, groups: u64, mib: u64) -> drakkar_logdb::Result<(u64, Duration, Duration, u64)> {
    let db = LogDb::open(dir, Options::default())?;
    let data = Bytes::from(vec![0xcd; 1024]);
    let per_group = 100;
    let mut batch = WriteBatch::new();
    let mut written = 0u64;
    let mut first = 1;
    let fill = Instant::now();
    while written < mib << 20 {
        batch.clear();
        for g in 1..=groups {
            batch.append(GroupId(g), entries(first, per_group, &data));
        }
        db.save(&batch)?;
        first += per_group;
        written += groups * per_group * (1024 + 13);
    }
    let fill = fill.elapsed();
    drop(db);
    let start = Instant::now();
    let db = LogDb::open(dir, Options::default())?;
    let took = start.elapsed();
    Ok((written, fill, took, db.stats().entries))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let root = tempfile::Builder::new().prefix("logdb-bench-").tempdir_in(&args.dir)?;
    println!(
        "log store benchmark in {} ({} cpus)",
        root.path().display(),
        std::thread::available_parallelism()?
    );
    let (syncs, sync_mb) = raw_fdatasync(root.path(), args.secs.min(3.0))?;
    println!("raw 4 KiB append + fdatasync: {syncs:.0} syncs/s ({sync_mb:.1} MB/s)");
    println!("(the disk is shared and noisy: each row is preceded by 1 s of raw 4 KiB append + fdatasync)");
    println!(
        "{:>6} {:>8} {:>6} {:>12} {:>9} {:>10} {:>10} {:>10} {:>12}",
        "groups", "entries", "size", "entries/s", "MB/s", "batches/s", "avg ms", "worst ms", "raw syncs/s"
    );
    for &size in &args.sizes {
        for &per_group in &args.entries {
            let (raw, _) = raw_fdatasync(root.path(), 1.0)?;
            let dir = root.path().join(format!("run-{per_group}-{size}"));
            let r = run(&dir, args.groups, per_group, size, args.secs)?;
            let el = r.elapsed.as_secs_f64();
            println!(
                "{:>6} {:>8} {:>6} {:>12.0} {:>9.1} {:>10.1} {:>10.2} {:>10.2} {:>12.0}",
                args.groups,
                per_group,
                size,
                r.entries as f64 / el,
                (r.entries * size as u64) as f64 / el / 1e6,
                r.batches as f64 / el,
                el * 1e3 / r.batches as f64,
                r.worst.as_secs_f64() * 1e3,
                raw,
            );
            std::fs::remove_dir_all(&dir)?;
        }
    }
    if args.reopen_mib > 0 {
        let dir = root.path().join("reopen");
        let (bytes, fill, took, n) = reopen(&dir, args.groups, args.reopen_mib)?;
        println!(
            "reopen: {:.0} MiB log ({n} entries of 1 KiB, written in {:.1} s): opened in {:.2} s ({:.0} MB/s)",
            bytes as f64 / (1 << 20) as f64,
            fill.as_secs_f64(),
            took.as_secs_f64(),
            bytes as f64 / took.as_secs_f64() / 1e6
        );
    }
    Ok(())
}
