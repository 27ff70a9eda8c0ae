//! `drakkar check`: the command line, and a run from start to report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use drakkar_client::pb::Consistency;
use drakkar_client::{Client, ClientConfig, tls};
use tokio::sync::Mutex;

use crate::availability::{self, ProbeOptions};
use crate::checker::{self, CheckOptions, Verdict};
use crate::cluster::{LocalCluster, LocalOptions};
use crate::history::{Op, Outcome, Reply};
use crate::nemesis::{self, Nemesis, NemesisOptions};
use crate::report::{self, Counts, Latency, PlotInput, Report, WorkloadCounts};
use crate::workload::{self, Workload, WorkloadOptions};

/// Size of each node's tmpfs under the disk-full nemesis: far more than a check run writes, and only
/// what is used takes memory.
const DISK_LIMIT: u64 = 512 << 20;

/// `drakkar check`: run a workload against a cluster (with faults, for a local one), check the history
/// for linearizability and write a report.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Check a running cluster at these node addresses (host:port, comma separated).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["local", "history"], required_unless_present_any = ["local", "history"])]
    pub endpoints: Vec<String>,
    /// Start a local cluster of `drakkar serve` processes (TLS, loopback) and check it.
    #[arg(long, conflicts_with = "history")]
    pub local: bool,
    /// Only check a recorded history (a `history.jsonl` of an earlier run, or one written by another
    /// tool in that format) for linearizability.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// What the clients do, comma separated, given to the clients in turn: `register` (one attempt per
    /// operation on one node, in a session), `retries` (the default client with retries and exactly-once
    /// sessions, one client shared), `plain` (writes without a session), `txn` (transactions),
    /// `replicas` (sent to a node holding a non-voter and a witness replica; local clusters only), or
    /// `mix`: all of them (`replicas` only with --local). Also `plain-retries` (not in `mix`): plain
    /// writes the client sends again after any error, which may apply twice and fail the check.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mix")]
    pub workload: Vec<Workload>,
    /// How long the `retries` workload's client (and `plain-retries`) retries one operation (across
    /// nodes) before giving up.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub retry_for: Duration,
    /// Faults to inject (local clusters only), comma separated, taken in turn.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "none")]
    pub nemesis: Vec<Nemesis>,
    /// How long the workload runs (e.g. 60s, 2m, 500ms).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub time: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Keys per KV group.
    #[arg(long, default_value_t = 3)]
    pub keys_per_group: usize,
    /// KV groups to use (default: every KV group of the cluster; a local cluster has `--local-groups`).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<u64>,
    /// Total operations per second (0: unlimited).
    #[arg(long, default_value_t = 300)]
    pub rate: u64,
    /// Deadline of one operation, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub request_timeout_ms: u64,
    /// Quiet time before each fault.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub fault_quiet: Duration,
    /// How long each fault is held.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub fault_hold: Duration,
    /// Fail the run when a node takes longer than this, after a fault is healed (or a killed node
    /// restarted), to serve a linearizable read in every group (e.g. 1s). Recovery is measured and
    /// reported either way.
    #[arg(long, value_parser = parse_duration)]
    pub max_recovery: Option<Duration>,
    /// How long to wait, after the last fault, for every node of a local cluster to catch up before
    /// the final reads (a node still behind then is reported as a warning).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub recovery_wait: Duration,
    /// Consistency of the workload's reads. `stale` reads are served by any replica from its own state:
    /// not linearizable, so under faults the checker should reject the history (a way to see it work).
    #[arg(long, default_value = "linearizable", value_parser = ["linearizable", "stale"])]
    pub read_consistency: String,
    /// Time the checker may take before answering "unknown".
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub check_time_limit: Duration,
    /// Directory for report.json, report.txt, latency.svg and history.jsonl (default: drakkar-check-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the workload's and the nemesis' choices (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// CA bundle to verify the nodes with (--endpoints).
    #[arg(long, env = "DRAKKAR_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (--endpoints, when the nodes require one).
    #[arg(long, env = "DRAKKAR_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key.
    #[arg(long, env = "DRAKKAR_KEY")]
    pub key: Option<PathBuf>,
    /// Connect without TLS (--endpoints of nodes run with --insecure).
    #[arg(long)]
    pub insecure: bool,
    /// Founding nodes of a local cluster.
    #[arg(long, default_value_t = 3)]
    pub local_nodes: usize,
    /// KV groups of a local cluster.
    #[arg(long, default_value_t = 2)]
    pub local_groups: u64,
    /// State machine of a local cluster: memory or disk.
    #[arg(long, default_value = "memory", value_parser = ["memory", "disk"])]
    pub local_state_machine: String,
    /// Raft tick of a local cluster, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub local_tick_ms: u64,
    /// Run each node of a local cluster in its own network namespace (needs root, `ip` and `iptables`):
    /// partitions become packet filters, and the silent and one-way partitions, `isolate` and `double`
    /// become available (and part of `--nemesis all`).
    #[arg(long)]
    pub netns: bool,
    /// Keep a local cluster's data, certificates and logs (in OUT/cluster).
    #[arg(long)]
    pub keep: bool,
}

/// Parses `60s`, `2m`, `500ms`, `1h` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn now_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// Runs `drakkar check`; an error when the cluster fails the check (not linearizable, lost writes, or
/// an undecided verdict) or the run could not be done.
pub async fn run(a: CheckArgs) -> Result<()> {
    if let Some(path) = &a.history {
        let ops = report::read_history(path)?;
        let started = Instant::now();
        let copts = CheckOptions { time_limit: a.check_time_limit, ..CheckOptions::default() };
        let verdict = checker::check(&ops, &copts)?;
        println!("{} operations: {verdict} ({} ms)", ops.len(), started.elapsed().as_millis());
        if verdict != Verdict::Linearizable {
            bail!("the history is {}", verdict.name());
        }
        return Ok(());
    }
    let kinds = Nemesis::expand(&a.nemesis, a.netns);
    if !a.local && (!kinds.is_empty() || a.netns) {
        bail!("--nemesis and --netns need --local: faults are injected into a cluster this command started");
    }
    if let Some(k) = kinds.iter().find(|k| k.net_fault().is_some()).filter(|_| !a.netns) {
        bail!("--nemesis {} drops packets between nodes in network namespaces: add --netns (root)", k.name());
    }
    if a.netns {
        crate::netns::preflight()?;
    }
    if let Some(k) = kinds.iter().find(|k| k.needs_lazyfs()) {
        lazyfs_preflight(k.name())?;
    }
    let seed = a.seed.unwrap_or_else(now_seed);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("drakkar-check-{}", now_seed() / 1_000_000_000)));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let workloads = Workload::expand(&a.workload, a.local);
    if !a.local && workloads.contains(&Workload::Replicas) {
        bail!("--workload replicas needs --local: it adds a non-voter and a witness replica to the cluster");
    }

    // The cluster: started here, or given.
    let (cluster, base_cfg) = if a.local {
        let dir = if a.keep {
            out.join("cluster")
        } else {
            std::env::temp_dir().join(format!("drakkar-check-{seed:016x}"))
        };
        let _ = std::fs::remove_dir_all(&dir);
        let opts = LocalOptions {
            exe: std::env::current_exe().context("finding the drakkar binary")?,
            dir,
            nodes: a.local_nodes,
            groups: a.local_groups,
            state_machine: a.local_state_machine.clone(),
            tick_ms: a.local_tick_ms,
            spare: kinds.contains(&Nemesis::Membership),
            proxies: kinds.iter().any(|k| k.partitions()),
            disk_limit: kinds.contains(&Nemesis::DiskFull).then_some(DISK_LIMIT),
            lazyfs: kinds.iter().any(|k| k.needs_lazyfs()),
            replica_node: workloads.contains(&Workload::Replicas),
            netns: a.netns,
        };
        eprintln!(
            "drakkar check: starting a local cluster of {} nodes in {}",
            opts.nodes,
            opts.dir.display()
        );
        let c = LocalCluster::start(opts).await?;
        let cfg = c.client_config(c.endpoints())?;
        (Some(Arc::new(Mutex::new(c))), cfg)
    } else {
        (None, client_config(&a)?)
    };
    // On Ctrl-C or SIGTERM the run stops and the local cluster's processes are killed (by dropping it).
    let result = tokio::select! {
        r = run_on(&a, &out, seed, kinds, workloads, cluster.clone(), base_cfg) => r,
        s = interrupted() => Err(anyhow::anyhow!("interrupted by {s}")),
    };
    if let Some(c) = cluster {
        let c = c.lock().await;
        if result.is_err() || a.keep {
            eprintln!("drakkar check: node logs: {:?}", c.logs());
        }
        drop(c);
    }
    let report = result?;
    // A failed run keeps the local cluster's data and node logs for a look.
    let tmp = std::env::temp_dir().join(format!("drakkar-check-{seed:016x}"));
    if a.local && !a.keep {
        if report.passed {
            let _ = std::fs::remove_dir_all(tmp);
        } else {
            eprintln!("drakkar check: the local cluster's data and node logs are in {}", tmp.display());
        }
    }
    print!("{}", report.summary());
    println!("report: {}", out.join("report.json").display());
    if !report.passed {
        let mut why = Vec::new();
        if report.verdict != Verdict::Linearizable.name() || report.lost_acknowledged_writes > 0 {
            why.push(format!(
                "{} with {} lost acknowledged writes",
                report.verdict, report.lost_acknowledged_writes
            ));
        }
        why.extend(report.recovery_failures.iter().cloned());
        bail!("the check failed: {}", why.join("; "));
    }
    Ok(())
}

/// The disk nemeses put each node's data directory on a FUSE filesystem: refuses clearly, before
/// anything starts, where that cannot work.
fn lazyfs_preflight(nemesis: &str) -> Result<()> {
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")));
    if !root {
        bail!("--nemesis {nemesis} mounts a FUSE filesystem on each node's data directory: run as root");
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        bail!(
            "--nemesis {nemesis} mounts a FUSE filesystem on each node's data directory: /dev/fuse is missing"
        );
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM; the signal's name.
async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return "SIGINT",
                _ = term.recv() => return "SIGTERM",
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

fn client_config(a: &CheckArgs) -> Result<ClientConfig> {
    let mut cfg = ClientConfig::new(a.endpoints.clone());
    if !a.insecure {
        let Some(ca) = &a.ca else { bail!("--ca (or DRAKKAR_CA) is required unless --insecure") };
        let identity = match (&a.cert, &a.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => bail!("--cert and --key go together"),
        };
        let c = tls::client_config_from_files(ca, identity)?;
        cfg = cfg.with_tls(Arc::new(Arc::new(c)));
    }
    Ok(cfg)
}

async fn run_on(
    a: &CheckArgs,
    out: &std::path::Path,
    seed: u64,
    kinds: Vec<Nemesis>,
    workloads: Vec<Workload>,
    cluster: Option<Arc<Mutex<LocalCluster>>>,
    base: ClientConfig,
) -> Result<Report> {
    let mut admin_cfg = base.clone();
    admin_cfg.request_timeout = Duration::from_secs(3);
    admin_cfg.retry_for = Duration::from_secs(10);
    let admin = Client::new(admin_cfg)?;
    let groups = if !a.groups.is_empty() {
        a.groups.clone()
    } else {
        let ep = base.endpoints.first().context("no endpoints")?;
        let info = admin.node_info(ep).await.with_context(|| format!("asking {ep} for its KV groups"))?;
        let mut g = info.kv_groups;
        g.sort_unstable();
        if g.is_empty() {
            bail!("{ep} runs no KV group: pass --groups");
        }
        g
    };
    let wopts = WorkloadOptions {
        concurrency: a.concurrency.max(1),
        groups: groups.clone(),
        keys_per_group: a.keys_per_group.max(1),
        rate: a.rate,
        duration: a.time,
        key_prefix: format!("drakkar-check/{seed:016x}/"),
        reads: if a.read_consistency == "stale" { Consistency::Stale } else { Consistency::Linearizable },
        workloads: workloads.clone(),
    };
    let replica_node = match &cluster {
        Some(c) if workloads.contains(&Workload::Replicas) => {
            let r = c.lock().await.add_replica_roles(&groups).await.context("adding the replica node")?;
            eprintln!("drakkar check: replica node {} ({}): {:?}", r.name, r.addr, r.replicas);
            Some(r)
        }
        _ => None,
    };
    let replica_endpoints: Vec<String> = replica_node.iter().map(|r| r.addr.clone()).collect();
    let clients = workload::clients(
        &base,
        &replica_endpoints,
        Duration::from_millis(a.request_timeout_ms),
        a.retry_for,
    )?;
    // The workload's node `i` is client `i`: the founding node `i` of a local cluster.
    let nodes: Vec<String> = match &cluster {
        Some(c) => {
            let c = c.lock().await;
            (0..c.founding()).map(|i| c.name(i).to_string()).collect()
        }
        None => base.endpoints.clone(),
    };
    eprintln!(
        "drakkar check: {} clients ({:?}) on {} keys in groups {:?} for {:?}, nemesis {:?}, seed {seed}",
        wopts.concurrency,
        workloads.iter().map(|w| w.name()).collect::<Vec<_>>(),
        wopts.groups.len() * wopts.keys_per_group,
        groups,
        a.time,
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>()
    );
    let start = Instant::now();
    let end = start + a.time;
    let nemesis_task = cluster.clone().map(|c| {
        let nopts = NemesisOptions {
            kinds: kinds.clone(),
            quiet: a.fault_quiet,
            hold: a.fault_hold,
            groups: groups.clone(),
            disk: a.local_state_machine == "disk",
            probe: Some(Arc::new(ProbeOptions::new(
                nodes.iter().cloned().zip(base.endpoints.iter().cloned()).collect(),
                base.clone(),
                groups.clone(),
                format!("drakkar-check/{seed:016x}/recovery-probe").into_bytes(),
            ))),
            netns: a.netns,
        };
        tokio::spawn(nemesis::run(c, admin.clone(), nopts, start, end, seed ^ 0x5eed))
    });
    let mut history = workload::run(clients, &wopts, start, seed).await;
    let faults = match nemesis_task {
        Some(t) => t.await.context("the nemesis task")?,
        None => Vec::new(),
    };
    let duration_s = start.elapsed().as_secs_f64();

    // Healed: every fault ended before `end`. Wait for every node to catch up (a node that does not is
    // a liveness problem, reported but not a safety failure), then read every key once more through
    // whichever nodes answer.
    let mut warnings = Vec::new();
    if let Some(r) = replica_node.as_ref().filter(|r| !r.ready) {
        warnings.push(format!(
            "the replica node {} ({}) never reported itself ready (NodeInfo.ready, /readyz) within 5 s of catching up",
            r.name, r.addr
        ));
    }
    if let Some(c) = &cluster {
        let c = c.lock().await;
        if let Err(e) = c.wait_ready(a.recovery_wait).await {
            eprintln!("drakkar check: WARNING: {e:#}");
            warnings.push(format!("after the faults: {e:#}"));
        }
        let unidentified = c.unidentified_connections();
        if unidentified > 0 {
            warnings.push(format!(
                "the partition proxies could not tell the sender of {unidentified} connections: partitions may have cut less than intended"
            ));
        }
    }
    let mut final_cfg = base.clone();
    final_cfg.request_timeout = Duration::from_secs(3);
    final_cfg.retry_for = Duration::from_secs(30);
    let final_client = Client::new(final_cfg)?;
    let mut final_reads = HashMap::new();
    for (i, k) in workload::keys(&wopts).iter().enumerate() {
        let invoke = start.elapsed();
        let r = final_client.get(k.group, bytes::Bytes::from(k.key.clone()), Consistency::Linearizable).await;
        let done = start.elapsed();
        match r {
            Ok(kv) => {
                let version = kv.as_ref().and_then(|kv| kv.meta).map_or(0, |m| m.version);
                let v = kv.map(|kv| kv.value.to_vec());
                let read = Op::read(
                    1_000_000 + i as u64,
                    k.history_key(),
                    invoke.as_nanos() as u64,
                    done.as_nanos() as u64,
                    None,
                );
                history
                    .ops
                    .push(read.with_outcome(Outcome::Ok(Reply::ReadVersioned { value: v.clone(), version })));
                final_reads.insert(k.history_key(), v);
            }
            Err(e) => bail!("the final read of {:?} failed: {e}", String::from_utf8_lossy(&k.key)),
        }
    }
    final_client.close().await;

    let checked = Instant::now();
    let copts = CheckOptions { time_limit: a.check_time_limit, ..CheckOptions::default() };
    let verdict = checker::check(&history.ops, &copts)?;
    let checker_ms = checked.elapsed().as_millis() as u64;
    let lost = report::lost_writes(&history.ops, &final_reads);
    let counts = Counts::of(&history.ops);
    let failure_windows = availability::failure_windows(&history.samples, &nodes);
    let slow = availability::recovery_failures(&faults, a.max_recovery, availability::PROBE_LIMIT);
    // Without --max-recovery a node that never served again is a liveness problem: a warning.
    let recovery_failures = if a.max_recovery.is_some() {
        slow
    } else {
        warnings.extend(slow.into_iter().map(|w| format!("not recovered: {w}")));
        Vec::new()
    };
    let passed = verdict == Verdict::Linearizable && lost.is_empty() && recovery_failures.is_empty();
    let report = Report {
        verdict: verdict.name().to_string(),
        verdict_detail: match &verdict {
            Verdict::Linearizable => String::new(),
            other => other.to_string(),
        },
        lost_acknowledged_writes: lost.len() as u64,
        lost_examples: lost.into_iter().take(20).collect(),
        workloads: WorkloadCounts::of(
            &history.ops,
            &history.workloads,
            &workloads.iter().map(|w| w.name()).collect::<Vec<_>>(),
        ),
        replica_node: replica_node.as_ref().map(|r| {
            let roles: Vec<String> =
                r.replicas.iter().map(|(g, id, role)| format!("group {g} replica {id} {role:?}")).collect();
            format!("{} ({}): {}", r.name, r.addr, roles.join(", "))
        }),
        ok_per_s: counts.ok as f64 / duration_s.max(1e-9),
        operations: counts,
        duration_s,
        latency: Latency::of(&history.samples),
        errors: history.errors.clone(),
        keys: groups.len() * wopts.keys_per_group,
        groups,
        concurrency: wopts.concurrency,
        nemeses: kinds.iter().map(|k| k.name().to_string()).collect(),
        nodes,
        faults,
        failure_windows,
        max_recovery_ms: a.max_recovery.map(|d| d.as_secs_f64() * 1e3),
        recovery_failures,
        checker_ms,
        passed,
        warnings,
        plot: "latency.svg".into(),
        history: "history.jsonl".into(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        seed,
    };
    let replica_names: Vec<&str> = replica_node.iter().map(|r| r.name.as_str()).collect();
    let op_nodes: Vec<&str> = history
        .samples
        .iter()
        .map(|s| match s.node {
            workload::ANY_NODE => "any",
            n => report
                .nodes
                .get(n)
                .map(String::as_str)
                .or_else(|| replica_names.get(n - report.nodes.len()).copied())
                .unwrap_or("?"),
        })
        .collect();
    report::write_history(&out.join("history.jsonl"), &history.ops, &op_nodes, &history.workloads)?;
    let title = format!(
        "drakkar check: {} ops, nemesis {}, {}",
        report.operations.total,
        if report.nemeses.is_empty() { "none".to_string() } else { report.nemeses.join("+") },
        report.verdict
    );
    let input = PlotInput {
        title: &title,
        duration_s,
        faults: &report.faults,
        windows: &report.failure_windows,
        nodes: &report.nodes,
    };
    report::plot(&out.join("latency.svg"), &history.samples, &input)?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(out.join("report.txt"), report.summary())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("8"), Ok(Duration::from_secs(8)));
        assert!(parse_duration("8 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
