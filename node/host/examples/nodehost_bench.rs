//! NodeHost throughput: three NodeHosts in one process on the in-process network, many groups, small
//! proposals from in-process clients (Dragonboat's benchmark method), fsync on.
//!
//! ```text
//! cargo run --release -p drakkar-node --example nodehost_bench -- --groups 48 --clients 1024 --secs 10 \
//!     [--size 16] [--dir /path/on/the/disk/to/test] [--idle-groups 10000]
//! ```
//! `--idle-groups N` instead starts N idle single-replica groups on one NodeHost and reports RSS and CPU.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drakkar_node::statemachine::{SmEntry, SmError, SmResult, StateMachine};
use drakkar_node::transport::InProcessNetwork;
use drakkar_node::{GroupConfig, NodeHost, NodeHostConfig, StartMode, StateMachineBox};
use drakkar_raft::{GroupId, ReplicaId};

/// Counts updates; the cheapest possible state machine, so the benchmark measures the engine.
#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    fn update(&mut self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        for e in entries {
            self.0 += 1;
            e.result = SmResult { value: self.0, data: Bytes::new() };
        }
        Ok(())
    }
    fn lookup(&self, _: &[u8]) -> Result<Bytes, SmError> {
        Ok(Bytes::from(self.0.to_le_bytes().to_vec()))
    }
    fn save_snapshot(&self, w: &mut dyn Write) -> Result<(), SmError> {
        w.write_all(&self.0.to_le_bytes())?;
        Ok(())
    }
    fn recover_from_snapshot(&mut self, r: &mut dyn Read) -> Result<(), SmError> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        self.0 = u64::from_le_bytes(b);
        Ok(())
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn proc_stat() -> (u64, u64) {
    // (RSS KiB, CPU ticks user+system) of this process, from /proc.
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    (rss, cpu)
}

fn host(dir: &std::path::Path, i: u64, net: &InProcessNetwork) -> NodeHost {
    let mut cfg = NodeHostConfig::new(dir.join(format!("n{i}")), format!("node-{i}:7000"));
    cfg.tick_interval = Duration::from_millis(10);
    let h = NodeHost::new(cfg, net.transport()).expect("nodehost");
    net.register(&format!("node-{i}:7000"), h.sink());
    h
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn idle(dir: &std::path::Path, n: u64) {
    let net = InProcessNetwork::new(1);
    let h = host(dir, 1, &net);
    let (rss0, _) = proc_stat();
    let cfg = GroupConfig { quiesce_ticks: 50, election_ticks: 10, ..GroupConfig::default() };
    let members =
        [(ReplicaId(1), "node-1:7000".to_string())].into_iter().collect::<std::collections::BTreeMap<_, _>>();
    for g in 1..=n {
        h.start_replica(
            GroupId(g),
            ReplicaId(1),
            StartMode::Founding(members.clone()),
            StateMachineBox::Regular(Box::<Counter>::default()),
            cfg.clone(),
        )
        .expect("start");
    }
    // Let them elect and settle, then measure CPU over a quiet period.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss1, cpu1) = proc_stat();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (rss2, cpu2) = proc_stat();
    let ticks_per_sec = 100.0; // USER_HZ
    let cpu_pct = (cpu2 - cpu1) as f64 / ticks_per_sec / t.elapsed().as_secs_f64() * 100.0;
    println!(
        "{n} idle groups on one NodeHost: RSS {} MiB (before groups {} MiB, after settling {} MiB), CPU {cpu_pct:.1}% of one core",
        rss2 / 1024,
        rss0 / 1024,
        rss1 / 1024
    );
    h.close();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let groups = arg("--groups", 48);
    let clients = arg("--clients", 1024);
    let secs = arg("--secs", 10);
    let size = arg("--size", 16) as usize;
    let base = arg_str("--dir").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new().prefix("drakkar-bench").tempdir_in(base).expect("tempdir");
    if let Some(n) = arg_str("--idle-groups").and_then(|s| s.parse().ok()) {
        return idle(tmp.path(), n).await;
    }
    let net = InProcessNetwork::new(1);
    let hosts: Vec<NodeHost> = (1..=3).map(|i| host(tmp.path(), i, &net)).collect();
    let members: std::collections::BTreeMap<ReplicaId, String> =
        (1..=3).map(|i| (ReplicaId(i), format!("node-{i}:7000"))).collect();
    let cfg =
        GroupConfig { snapshot_entries: 100_000, compaction_overhead: 10_000, ..GroupConfig::default() };
    for g in 1..=groups {
        for (i, h) in hosts.iter().enumerate() {
            h.start_replica(
                GroupId(g),
                ReplicaId(i as u64 + 1),
                StartMode::Founding(members.clone()),
                StateMachineBox::Regular(Box::<Counter>::default()),
                cfg.clone(),
            )
            .expect("start");
        }
    }
    // Spread leadership: group g led by host g % 3.
    for g in 1..=groups {
        let want = ReplicaId(g % 3 + 1);
        loop {
            let l = hosts[0].leader(GroupId(g)).ok().flatten().map(|x| x.0);
            if l == Some(want) {
                break;
            }
            if let Some(l) = l {
                let _ = hosts[(l.0 - 1) as usize].transfer_leader(GroupId(g), want).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Arc::new(AtomicBool::new(true));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let g = c % groups + 1;
        let h = hosts[(g % 3) as usize].clone();
        let (stop, warm, errors) = (stop.clone(), warm.clone(), errors.clone());
        let payload = Bytes::from(vec![b'x'; size]);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match h.propose(GroupId(g), payload.clone(), Duration::from_secs(5)).await {
                    Ok(_) if !warm.load(Ordering::Relaxed) => lat.push(t.elapsed().as_micros() as u64),
                    Ok(_) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    warm.store(false, Ordering::Relaxed);
    let t = Instant::now();
    let (_, cpu0) = proc_stat();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t.elapsed().as_secs_f64();
    let (_, cpu1) = proc_stat();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_unstable();
    println!(
        "3 NodeHosts, {groups} groups, {clients} clients, {size} B proposals, fsync on: {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, errors {}, CPU {:.0}% (of 200%)",
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        errors.load(Ordering::Relaxed),
        (cpu1 - cpu0) as f64 / elapsed
    );
    for h in &hosts {
        h.close();
    }
}
