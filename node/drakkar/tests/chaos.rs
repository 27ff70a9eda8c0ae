//! Chaos: three NodeHosts under crashes that lose every unsynced byte of the log store (an in-memory
//! filesystem that models fsync), partitions and message loss, with concurrent writers and session
//! writers. Afterwards every acknowledged write must be readable on every replica, and every session
//! proposal must have been applied exactly once.
//!
//! The fault schedule comes from a seed (printed; `CHAOS_SEED=<seed>` reruns it). Thread scheduling is
//! not deterministic, so a rerun repeats the faults, not the exact interleaving. `CHAOS_SECS` sets the
//! length (default 6 seconds).

use drakkar_sim::harness as common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestKv, addr};
use drakkar::{GroupConfig, NodeError, NodeHost, NodeHostConfig, StartMode, StateMachineBox};
use drakkar_logdb::fs::{FileSystem, MemFs};
use drakkar_raft::{GroupId, ReplicaId, Rng};
use drakkar_sim::{NetFaults, SimNetwork};

const GROUPS: u64 = 3;
/// The group that only session writers use (its update count is checked exactly).
const SESSION_GROUP: u64 = GROUPS + 1;

struct Env {
    net: SimNetwork,
    fs: BTreeMap<u64, Arc<MemFs>>,
    dirs: BTreeMap<u64, std::path::PathBuf>,
    hosts: Mutex<BTreeMap<u64, NodeHost>>,
    _tmp: tempfile::TempDir,
}

fn gcfg() -> GroupConfig {
    GroupConfig {
        election_ticks: 10,
        snapshot_entries: 40,
        compaction_overhead: 10,
        ..GroupConfig::default()
    }
}

impl Env {
    fn start(&self, i: u64, founding: bool) -> NodeHost {
        let mut cfg = NodeHostConfig::new(&self.dirs[&i], addr(i));
        cfg.tick_interval = Duration::from_millis(5);
        cfg.workers = 2;
        cfg.apply_workers = 1;
        cfg.log_segment_bytes = 64 << 10;
        let fs: Arc<dyn FileSystem> = self.fs[&i].clone();
        cfg.log_fs = Some(fs);
        let h = NodeHost::new(cfg, self.net.transport()).expect("nodehost");
        self.net.register(&addr(i), h.sink());
        let members: BTreeMap<ReplicaId, String> = (1..=3).map(|r| (ReplicaId(r), addr(r))).collect();
        for g in 1..=SESSION_GROUP {
            let mode = if founding { StartMode::Founding(members.clone()) } else { StartMode::Joining };
            h.start_replica(
                GroupId(g),
                ReplicaId(i),
                mode,
                StateMachineBox::regular(TestKv::default()),
                gcfg(),
            )
            .expect("start replica");
        }
        self.hosts.lock().unwrap().insert(i, h.clone());
        h
    }

    /// Kills the hosts in `ids` at the same instant, the hard way: their filesystems stop accepting writes,
    /// then lose (or tear) every byte not yet synced; then they restart from what is left. Crashing a
    /// majority at once (a power loss) is what exposes an acknowledgement sent before its fsync.
    fn crash_and_restart(&self, ids: &[u64], rng: &mut Rng) {
        let hosts: Vec<(u64, NodeHost)> = {
            let mut all = self.hosts.lock().unwrap();
            ids.iter().filter_map(|i| all.remove(i).map(|h| (*i, h))).collect()
        };
        for (i, _) in &hosts {
            self.fs[i].die_after(0);
        }
        for (i, h) in hosts {
            h.close();
            let fs = &self.fs[&i];
            let mut r = Rng::new(rng.next_u64());
            fs.crash(rng.chance(1, 2), move |_, unsynced| r.range(0, unsynced + 1));
            fs.clear_faults();
        }
        for &i in ids {
            self.start(i, false);
        }
    }

    fn host(&self, i: u64) -> Option<NodeHost> {
        self.hosts.lock().unwrap().get(&i).cloned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_no_acknowledged_write_lost_and_sessions_exactly_once() {
    let seed: u64 = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let secs: u64 = std::env::var("CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    eprintln!("chaos seed {seed} (rerun: CHAOS_SEED={seed} cargo test -p drakkar --test chaos)");
    let tmp = tempfile::tempdir().unwrap();
    let env = Arc::new(Env {
        net: SimNetwork::realtime(seed).expect("network thread"),
        fs: (1..=3).map(|i| (i, Arc::new(MemFs::new()))).collect(),
        dirs: (1..=3).map(|i| (i, tmp.path().join(format!("n{i}")))).collect(),
        hosts: Mutex::new(BTreeMap::new()),
        _tmp: tmp,
    });
    for i in 1..=3 {
        env.start(i, true);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(u64, String, String)>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));

    // Plain writers: unique keys, so every acknowledged write has exactly one value to look for.
    let mut tasks = Vec::new();
    for w in 0..6u64 {
        let (env, stop, acked, next) = (env.clone(), stop.clone(), acked.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = Rng::new(seed ^ w);
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let g = n % GROUPS + 1;
                let Some(h) = env.host(r.range(1, 4)) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let (k, v) = (format!("w{n}"), format!("v{n}"));
                if h.propose(GroupId(g), Bytes::from(format!("{k}={v}")), Duration::from_millis(500))
                    .await
                    .is_ok()
                {
                    acked.lock().unwrap().push((g, k, v));
                }
            }
        }));
    }
    // Readers: linearizable reads of single-write registers. A key whose write was acknowledged, or whose
    // value a completed read returned, before this read began must read back that value; no read may
    // return anything but the one value ever written (or nothing, for a write still in flight).
    let visible: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let reads_checked = Arc::new(AtomicU64::new(0));
    for rd in 0..2u64 {
        let (env, stop, acked, next, visible, reads_checked) =
            (env.clone(), stop.clone(), acked.clone(), next.clone(), visible.clone(), reads_checked.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = Rng::new(seed ^ (1000 + rd));
            while !stop.load(Ordering::Relaxed) {
                let hi = next.load(Ordering::Relaxed);
                if hi == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let n = r.range(hi.saturating_sub(64), hi);
                let (g, k, v) = (n % GROUPS + 1, format!("w{n}"), format!("v{n}"));
                let must_see = visible.lock().unwrap().contains(&k)
                    || acked.lock().unwrap().iter().rev().take(256).any(|(_, ak, _)| *ak == k);
                let Some(h) = env.host(r.range(1, 4)) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                if let Ok(got) = h.read(GroupId(g), Bytes::from(k.clone()), Duration::from_millis(500)).await
                {
                    if got.is_empty() {
                        assert!(
                            !must_see,
                            "seed {seed}: stale read of {k}: the write was visible before the read began"
                        );
                    } else {
                        assert_eq!(
                            got,
                            Bytes::from(v.clone()),
                            "seed {seed}: read of {k} returned a value never written"
                        );
                        visible.lock().unwrap().insert(k);
                    }
                    reads_checked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // A session writer: retries each series until answered; the group's update count must end up equal to
    // the number of series (no duplicate, no loss).
    let series_done = Arc::new(AtomicU64::new(0));
    {
        let (env, stop, series_done) = (env.clone(), stop.clone(), series_done.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = Rng::new(seed ^ 99);
            let mut session = loop {
                if let Some(h) = env.host(r.range(1, 4))
                    && let Ok(s) = h.open_session(GroupId(SESSION_GROUP), None, Duration::from_secs(1)).await
                {
                    break s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            while !stop.load(Ordering::Relaxed) {
                let Some(h) = env.host(r.range(1, 4)) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let cmd = Bytes::from(format!("s{}={}", session.series(), session.series()));
                match h.propose_in_session(&session, cmd, Duration::from_millis(500)).await {
                    Ok(_) => {
                        session.proposal_completed();
                        series_done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e @ (NodeError::SessionUnknown | NodeError::SessionResultForgotten)) => {
                        panic!("session proposal refused: {e}")
                    }
                    Err(_) => {} // timeout, no leader, stopped: retry the same series
                }
            }
            // Finish the series in flight so the count is exact.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "seed {seed}: the session group made no progress for 30 s after the faults stopped"
                );
                let Some(h) = env.host(r.range(1, 4)) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let cmd = Bytes::from(format!("s{}={}", session.series(), session.series()));
                if h.propose_in_session(&session, cmd, Duration::from_secs(1)).await.is_ok() {
                    series_done.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }));
    }

    // The nemesis.
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut crashes = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.range(150, 500))).await;
        match rng.range(0, 4) {
            0 => {
                let ids: Vec<u64> = match rng.range(0, 3) {
                    0 => vec![rng.range(1, 4)],
                    1 => {
                        let spared = rng.range(1, 4);
                        (1..=3).filter(|i| *i != spared).collect()
                    }
                    _ => vec![1, 2, 3],
                };
                let env2 = env.clone();
                let s = rng.next_u64();
                tokio::task::spawn_blocking(move || env2.crash_and_restart(&ids, &mut Rng::new(s)))
                    .await
                    .unwrap();
                crashes += 1;
            }
            1 => {
                // One host cut off from the other two.
                let alone = rng.range(1, 4);
                let rest: BTreeSet<String> = (1..=3).filter(|i| *i != alone).map(addr).collect();
                let partition = vec![[addr(alone)].into(), rest];
                env.net.set_faults(NetFaults { partition, ..NetFaults::default() });
            }
            2 => env.net.set_faults(NetFaults { drop_pct: 10, dup_pct: 5, ..NetFaults::default() }),
            _ => env.net.set_faults(NetFaults::default()),
        }
    }
    env.net.set_faults(NetFaults::default());
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // Every acknowledged write is on every replica.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "too few writes acknowledged ({}) for the test to mean anything", acked.len());
    for i in 1..=3 {
        let h = env.host(i).unwrap();
        for (g, k, v) in &acked {
            let got = h.read(GroupId(*g), Bytes::from(k.clone()), Duration::from_secs(10)).await;
            assert_eq!(
                got.ok(),
                Some(Bytes::from(v.clone())),
                "seed {seed}: host {i} group {g} lost {k}={v}"
            );
        }
        let updates =
            h.read(GroupId(SESSION_GROUP), Bytes::from_static(b"#updates"), Duration::from_secs(10)).await;
        let done = series_done.load(Ordering::Relaxed);
        // One update registers the session; each series is one more.
        assert_eq!(
            updates.ok(),
            Some(Bytes::from((done).to_string())),
            "seed {seed}: host {i}: session proposals not applied exactly once ({done} series acknowledged)"
        );
    }
    let net = env.net.stats();
    eprintln!(
        "chaos seed {seed}: {} writes acknowledged, {} reads checked, {} session proposals, {crashes} crashes, \
         {} batches delivered, {} messages dropped, {} batches duplicated",
        acked.len(),
        reads_checked.load(Ordering::Relaxed),
        series_done.load(Ordering::Relaxed),
        net.delivered,
        net.dropped,
        net.duplicated
    );
    for h in env.hosts.lock().unwrap().values() {
        h.close();
    }
}
