//! Throughput of durable multi-group batches, next to the raw fdatasync rate of the same disk, and the time
//! to reopen a large log.
//!
//! ```text
//! cargo run --release -p drakkar-logdb --example logdb_bench -- \
//!     --groups 48 --entries 1,16,100,1000 --size 16,1024 --secs 5 --reopen-mib 1024 [--dir /tmp]
//! ```
//! With `--threads N`, N threads each own every N-th group and save their own batches concurrently (the
//! store groups concurrent saves into one write and one fdatasync).
//! Every batch holds `groups` x `entries` entries of `size` bytes plus a hard state per group, and is saved
//! with one write and one fdatasync. Every 16 batches each group snapshots and compacts all but its last
//! 10,000 entries, so old segments are purged as they would be in a node.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use drakkar_logdb::fs::{FileSystem, FsFile, FsLock, StdFs};
use drakkar_logdb::{LogDb, Options, WriteBatch};
use drakkar_raft::{Entry, GroupId, HardState, LogIndex, Membership, Term};

/// The real file system, counting file syncs (to show how many saves share one fdatasync).
#[derive(Default)]
struct CountingFs {
    syncs: Arc<AtomicU64>,
}

struct CountingFile {
    inner: Arc<dyn FsFile>,
    syncs: Arc<AtomicU64>,
}

impl FsFile for CountingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn append(&self, data: &[u8]) -> std::io::Result<()> {
        self.inner.append(data)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn truncate(&self, len: u64) -> std::io::Result<()> {
        self.inner.truncate(len)
    }
}

impl CountingFs {
    fn wrap(&self, f: Arc<dyn FsFile>) -> Arc<dyn FsFile> {
        Arc::new(CountingFile { inner: f, syncs: self.syncs.clone() })
    }
}

impl FileSystem for CountingFs {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn open(&self, path: &Path) -> std::io::Result<Arc<dyn FsFile>> {
        StdFs.open(path).map(|f| self.wrap(f))
    }
    fn create(&self, path: &Path) -> std::io::Result<Arc<dyn FsFile>> {
        StdFs.create(path).map(|f| self.wrap(f))
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        StdFs.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        StdFs.rename(from, to)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        StdFs.list(dir)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        StdFs.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn FsLock>> {
        StdFs.lock(path)
    }
}

struct Args {
    groups: u64,
    threads: u64,
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
        threads: 1,
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
            "--threads" => a.threads = value()?.parse().map_err(|_| "bad --threads")?,
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
    syncs: u64,
    batches: u64,
    elapsed: Duration,
    worst: Duration,
}

fn run(dir: &Path, a: &Args, per_group: u64, size: usize) -> drakkar_logdb::Result<Run> {
    let fs = Arc::new(CountingFs::default());
    let db = LogDb::open_with_fs(fs.clone(), dir, Options::default())?;
    let syncs_at_open = fs.syncs.load(Ordering::Relaxed);
    let data = Bytes::from(vec![0xab; size]);
    let start = Instant::now();
    // Each thread owns every `threads`-th group and saves its own batches: concurrent saves are grouped.
    let per_thread: Vec<drakkar_logdb::Result<Run>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.threads)
            .map(|t| {
                let (db, data) = (&db, &data);
                s.spawn(move || {
                    let mine: Vec<u64> = (1..=a.groups).filter(|g| g % a.threads == t).collect();
                    let mut next = vec![1u64; mine.len()];
                    let mut batch = WriteBatch::new();
                    let mut r = Run {
                        entries: 0,
                        syncs: 0,
                        batches: 0,
                        elapsed: Duration::ZERO,
                        worst: Duration::ZERO,
                    };
                    while start.elapsed().as_secs_f64() < a.secs {
                        batch.clear();
                        for (k, &g) in mine.iter().enumerate() {
                            let id = GroupId(g);
                            let first = next[k];
                            batch.append(id, entries(first, per_group, data));
                            let last = first + per_group - 1;
                            let hs = HardState { term: Term(1), vote: None, commit: LogIndex(last) };
                            batch.set_hard_state(id, hs);
                            if r.batches % 16 == 15 && last > 10_000 {
                                let i = LogIndex(last - 10_000);
                                batch.create_snapshot(id, i, Membership::default(), Bytes::new());
                                batch.compact(id, i);
                            }
                            next[k] = last + 1;
                        }
                        let t = Instant::now();
                        db.save(&batch)?;
                        r.worst = r.worst.max(t.elapsed());
                        r.entries += mine.len() as u64 * per_group;
                        r.batches += 1;
                    }
                    Ok(r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(drakkar_logdb::Error::Poisoned("panic".into()))))
            .collect()
    });
    let syncs = fs.syncs.load(Ordering::Relaxed) - syncs_at_open;
    let mut total = Run { entries: 0, syncs, batches: 0, elapsed: start.elapsed(), worst: Duration::ZERO };
    for r in per_thread {
        let r = r?;
        total.entries += r.entries;
        total.batches += r.batches;
        total.worst = total.worst.max(r.worst);
    }
    Ok(total)
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
    if args.threads == 0 || args.groups == 0 {
        return Err("--threads and --groups must be positive".into());
    }
    let root = tempfile::Builder::new().prefix("logdb-bench-").tempdir_in(&args.dir)?;
    println!(
        "log store benchmark in {} ({} cpus)",
        root.path().display(),
        std::thread::available_parallelism()?
    );
    let (syncs, sync_mb) = raw_fdatasync(root.path(), args.secs.min(3.0))?;
    println!("raw 4 KiB append + fdatasync: {syncs:.0} syncs/s ({sync_mb:.1} MB/s)");
    println!("(the disk is shared and noisy: each row is preceded by 1 s of raw 4 KiB append + fdatasync)");
    println!("{} writer thread(s); batches/s counts every thread's saves", args.threads);
    println!(
        "{:>6} {:>8} {:>6} {:>12} {:>9} {:>10} {:>9} {:>10} {:>10} {:>12}",
        "groups",
        "entries",
        "size",
        "entries/s",
        "MB/s",
        "batches/s",
        "syncs/s",
        "avg ms",
        "worst ms",
        "raw syncs/s"
    );
    for &size in &args.sizes {
        for &per_group in &args.entries {
            let (raw, _) = raw_fdatasync(root.path(), 1.0)?;
            let dir = root.path().join(format!("run-{per_group}-{size}"));
            let r = run(&dir, &args, per_group, size)?;
            let el = r.elapsed.as_secs_f64();
            println!(
                "{:>6} {:>8} {:>6} {:>12.0} {:>9.1} {:>10.1} {:>9.1} {:>10.2} {:>10.2} {:>12.0}",
                args.groups,
                per_group,
                size,
                r.entries as f64 / el,
                (r.entries * size as u64) as f64 / el / 1e6,
                r.batches as f64 / el,
                r.syncs as f64 / el,
                el * 1e3 * args.threads as f64 / r.batches as f64,
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
