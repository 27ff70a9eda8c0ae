//! `drakkar bench`: load generator over the targets of [`crate::bench`]: `grpc` (Drakkar nodes,
//! or with `--dev` a loopback TLS cluster started in this process), `embedded` (NodeHosts in this
//! process), `etcd` (an etcd v3 cluster), and `idle` (what idle groups cost). Prints a table; `--json`
//! writes one JSON object per run.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::bench::embedded::{Embedded, EmbeddedOptions, EmbeddedSm};
use crate::bench::etcd::{EtcdOptions, EtcdTarget};
use crate::bench::grpc::{GrpcOptions, GrpcTarget};
use crate::bench::{self, Consistency, Mix, Report, Target, Workload};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use drakkar_client::tls::{self, ClientTls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::node;
use super::{ClientArgs, SmArg, cert};

/// `drakkar bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Subcommand, Debug)]
enum BenchTarget {
    /// Drakkar nodes over (TLS) gRPC; each group's requests go to its leader.
    Grpc(GrpcArgs),
    /// NodeHosts in this process on the in-process transport (fsync on): the engine without the network.
    Embedded(EmbeddedArgs),
    /// An etcd v3 cluster; requests go to its leader.
    Etcd(EtcdArgs),
    /// Many idle single-replica groups on one NodeHost: resident memory and CPU.
    Idle(IdleArgs),
}

/// Request kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WorkloadArg {
    /// Writes.
    Put,
    /// Reads.
    Get,
    /// Reads and writes (`--read-percent`).
    Mixed,
}

/// Read consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ConsistencyArg {
    /// Confirmed by the leader.
    Linearizable,
    /// Local replica (etcd: serializable).
    Stale,
}

/// The workload; list options run every combination, one table row each.
#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Request kinds, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "put")]
    workload: Vec<WorkloadArg>,
    /// Share of reads of the mixed workload, in %.
    #[arg(long, default_value_t = 90)]
    read_percent: u8,
    /// Read consistency.
    #[arg(long, value_enum, default_value = "linearizable")]
    consistency: ConsistencyArg,
    /// Distinct keys (drawn uniformly).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// Requests in flight, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,256")]
    in_flight: Vec<usize>,
    /// HTTP/2 connections per node (gRPC, etcd).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Groups the keys are spread over, comma separated (etcd has one).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    groups: Vec<u64>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Unmeasured seconds of load before each run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Deadline of one request, in milliseconds (counted as an error when it passes).
    #[arg(long, default_value_t = 5000)]
    deadline_ms: u64,
    /// Append one JSON object per run to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Name of the target in the reports (default: the driver's name).
    #[arg(long)]
    label: Option<String>,
    /// Also report the CPU these processes (the servers) use during each run.
    #[arg(long, value_delimiter = ',')]
    watch_pid: Vec<u32>,
}

impl LoadArgs {
    fn workloads(&self) -> Result<Vec<Workload>> {
        if !(self.secs > 0.0 && self.warmup >= 0.0) {
            bail!("--secs must be positive and --warmup not negative");
        }
        let consistency = match self.consistency {
            ConsistencyArg::Linearizable => Consistency::Linearizable,
            ConsistencyArg::Stale => Consistency::Stale,
        };
        let mut out = Vec::new();
        for w in &self.workload {
            let mix = match w {
                WorkloadArg::Put => Mix::Put,
                WorkloadArg::Get => Mix::Get,
                WorkloadArg::Mixed => Mix::Mixed { read_percent: self.read_percent.min(100) },
            };
            for &groups in &self.groups {
                for &in_flight in &self.in_flight {
                    out.push(Workload {
                        mix,
                        consistency,
                        keys: self.keys,
                        value_size: self.value_size,
                        in_flight,
                        groups,
                        duration: Duration::from_secs_f64(self.secs),
                        warmup: Duration::from_secs_f64(self.warmup),
                        timeout: Duration::from_millis(self.deadline_ms),
                    });
                }
            }
        }
        Ok(out)
    }

    fn max_groups(&self) -> u64 {
        self.groups.iter().copied().max().unwrap_or(1).max(1)
    }
}

/// `drakkar bench grpc`.
#[derive(Args, Debug)]
struct GrpcArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Start a loopback TLS cluster in this process (like `drakkar dev`) and benchmark it.
    #[arg(long)]
    dev: bool,
    /// Nodes of the `--dev` cluster.
    #[arg(long, default_value_t = 3)]
    dev_nodes: usize,
    /// Move leaders so that group g is led by endpoint (g-1) % endpoints (always with --dev).
    #[arg(long)]
    spread_leaders: bool,
    #[command(flatten)]
    load: LoadArgs,
}

/// `drakkar bench embedded`.
#[derive(Args, Debug)]
struct EmbeddedArgs {
    /// Replicas of every group (one NodeHost each).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// State machine: `counter` (the engine alone) or `kv` (the built-in in-memory KV store).
    #[arg(long, value_enum, default_value = "counter")]
    sm: SmChoice,
    /// A temporary data directory is made (and removed) under this one: put it on the disk to measure.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Raft tick, in milliseconds.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    #[command(flatten)]
    load: LoadArgs,
}

/// The embedded state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SmChoice {
    /// Counts proposals.
    Counter,
    /// The in-memory KV store.
    Kv,
}

/// `drakkar bench etcd`.
#[derive(Args, Debug)]
struct EtcdArgs {
    /// Member client addresses (host:port), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// CA bundle to verify the members with (TLS).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Client key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Plaintext.
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    load: LoadArgs,
}

/// `drakkar bench idle`.
#[derive(Args, Debug)]
struct IdleArgs {
    /// Idle groups.
    #[arg(long, default_value_t = 10_000)]
    groups: u64,
    /// Seconds to let them elect and quiesce before measuring.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// A temporary data directory is made (and removed) under this one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Append the result as a JSON object to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn client_tls(
    insecure: bool,
    ca: Option<&PathBuf>,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> Result<Option<Arc<dyn ClientTls>>> {
    if insecure {
        return Ok(None);
    }
    let Some(ca) = ca else { bail!("--ca is required unless --insecure") };
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => None,
        _ => bail!("--cert and --key go together"),
    };
    let c = tls::client_config_from_files(ca, identity)?;
    Ok(Some(Arc::new(Arc::new(c))))
}

/// Where reports go.
struct Output {
    json: Option<PathBuf>,
    reports: Vec<Report>,
}

impl Output {
    fn new(json: Option<PathBuf>) -> Self {
        out!("{}", bench::table_header());
        Output { json, reports: Vec::new() }
    }

    fn json_line(path: Option<&PathBuf>, line: &str) -> Result<()> {
        match path {
            None => Ok(()),
            Some(p) if p.as_os_str() == "-" => {
                out!("{line}");
                Ok(())
            }
            Some(p) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening {}", p.display()))?;
                writeln!(f, "{line}").with_context(|| format!("writing {}", p.display()))
            }
        }
    }

    fn push(&mut self, r: Report) -> Result<()> {
        out!("{}", bench::table_row(&r));
        if let Some(e) = &r.first_error {
            eprintln!("drakkar bench: {} errors, the first: {e}", r.errors);
        }
        Self::json_line(self.json.as_ref(), &r.to_json())?;
        self.reports.push(r);
        Ok(())
    }
}

async fn run_all<T: Target>(target: Arc<T>, driver: &str, load: &LoadArgs) -> Result<Vec<Report>> {
    let driver = load.label.clone().unwrap_or_else(|| driver.to_string());
    let mut out = Output::new(load.json.clone());
    for w in load.workloads()? {
        let r = bench::run(target.clone(), &driver, &w, &load.watch_pid).await?;
        out.push(r)?;
    }
    Ok(out.reports)
}

/// Runs `drakkar bench`; returns the reports (idle: none).
pub async fn run(a: BenchArgs) -> Result<Vec<Report>> {
    match a.target {
        BenchTarget::Grpc(g) => grpc(g).await,
        BenchTarget::Embedded(e) => {
            let o = EmbeddedOptions {
                dir: e.dir.clone().unwrap_or_else(std::env::temp_dir),
                replicas: e.replicas,
                groups: e.load.max_groups(),
                sm: match e.sm {
                    SmChoice::Counter => EmbeddedSm::Counter,
                    SmChoice::Kv => EmbeddedSm::Kv,
                },
                tick: Duration::from_millis(e.tick_ms.max(1)),
            };
            let cluster = Arc::new(Embedded::start(&o).await?);
            let r = run_all(cluster.clone(), "embedded", &e.load).await;
            if let Some(c) = Arc::into_inner(cluster) {
                tokio::task::spawn_blocking(move || c.close()).await?;
            }
            r
        }
        BenchTarget::Etcd(e) => {
            let tls = client_tls(e.insecure, e.ca.as_ref(), e.cert.as_ref(), e.key.as_ref())?;
            let o = EtcdOptions { endpoints: e.endpoints.clone(), tls, connections: e.load.connections };
            let target = Arc::new(EtcdTarget::connect(&o).await?);
            eprintln!("drakkar bench: etcd leader {}", target.leader);
            run_all(target, "etcd", &e.load).await
        }
        BenchTarget::Idle(i) => {
            if !(i.settle >= 0.0 && i.secs > 0.0) {
                bail!("--secs must be positive and --settle not negative");
            }
            let base = i.dir.clone().unwrap_or_else(std::env::temp_dir);
            let dir = base.join(format!("drakkar-bench-idle-{:016x}", drakkar_server::health::nonce()));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let r = bench::idle::measure(
                &dir,
                i.groups,
                Duration::from_secs_f64(i.settle),
                Duration::from_secs_f64(i.secs),
            )
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            let r = r?;
            out!("{r}");
            Output::json_line(i.json.as_ref(), &r.to_json())?;
            Ok(Vec::new())
        }
    }
}

async fn grpc(g: GrpcArgs) -> Result<Vec<Report>> {
    if !g.dev {
        let c = &g.client;
        let tls = client_tls(c.insecure, c.ca.as_ref(), c.cert.as_ref(), c.key.as_ref())?;
        let o = GrpcOptions {
            endpoints: c.endpoints.clone(),
            tls,
            connections: g.load.connections,
            groups: g.load.max_groups(),
            spread_leaders: g.spread_leaders,
        };
        let target = Arc::new(GrpcTarget::connect(&o).await?);
        return run_all(target, "grpc", &g.load).await;
    }
    let dev = DevCluster::start(g.dev_nodes, g.load.max_groups()).await?;
    // The admin role: spreading the leaders transfers leaderships.
    let (cert, key) = (dev.certs.join("admin.pem"), dev.certs.join("admin-key.pem"));
    let tls = client_tls(false, Some(&dev.certs.join("ca.pem")), Some(&cert), Some(&key))?;
    let o = GrpcOptions {
        endpoints: dev.addrs.clone(),
        tls,
        connections: g.load.connections,
        groups: g.load.max_groups(),
        spread_leaders: true,
    };
    let r = async { run_all(Arc::new(GrpcTarget::connect(&o).await?), "grpc", &g.load).await }.await;
    dev.stop().await;
    r
}

/// A loopback TLS cluster in this process (`drakkar dev`'s setup, in a temporary directory).
struct DevCluster {
    dir: PathBuf,
    certs: PathBuf,
    addrs: Vec<String>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl DevCluster {
    async fn start(nodes: usize, groups: u64) -> Result<DevCluster> {
        if nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        let dir =
            std::env::temp_dir().join(format!("drakkar-bench-dev-{:016x}", drakkar_server::health::nonce()));
        let certs = dir.join("certs");
        cert::dev_pki(&certs, nodes)?;
        let mut ls = Vec::new();
        for _ in 0..nodes {
            ls.push(TcpListener::bind("127.0.0.1:0").await.context("binding 127.0.0.1:0")?);
        }
        let addrs: Vec<String> =
            ls.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<_, _>>()?;
        let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
        for (i, l) in ls.into_iter().enumerate() {
            let opts = super::dev::node_options(&dir, Some(&certs), &addrs, i, groups, SmArg::Memory.into());
            let stop = shutdown.clone();
            tracker.spawn(async move {
                if let Err(e) = node::run(opts, l, None, stop.clone()).await {
                    tracing::error!(error = %format!("{e:#}"), "a bench node failed");
                    stop.cancel();
                }
            });
        }
        tracker.close();
        Ok(DevCluster { dir, certs, addrs, shutdown, tracker })
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.wait().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(s: &str) -> BenchArgs {
        Cli::try_parse_from(s.split_whitespace()).unwrap().bench
    }

    /// `drakkar bench embedded` and `drakkar bench grpc --dev` run end to end and measure something.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_and_grpc_dev_runs_report_operations() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let json = tempfile::NamedTempFile::new().unwrap();
        let common = format!(
            "--in-flight 1,16 --groups 2 --keys 100 --secs 0.7 --warmup 0.3 --json {}",
            json.path().display()
        );
        let r = run(args(&format!("x embedded --sm kv --workload put,mixed {common}"))).await.unwrap();
        assert_eq!(r.len(), 4);
        let r2 = run(args(&format!("x grpc --dev --workload put,get {common}"))).await.unwrap();
        assert_eq!(r2.len(), 4);
        for r in r.iter().chain(&r2) {
            assert!(r.ops > 0 && r.errors == 0, "{r:?}");
        }
        let lines = std::fs::read_to_string(json.path()).unwrap();
        let parsed: Vec<serde_json::Value> =
            lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(parsed.len(), 8);
        assert_eq!(parsed[4]["driver"], "grpc");
        assert_eq!(parsed[6]["workload"], "get-linearizable");
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn workloads_are_the_product_of_the_lists() {
        let a = args("x embedded --workload put,get --groups 1,4 --in-flight 1,8,64 --consistency stale");
        let BenchTarget::Embedded(e) = a.target else { panic!("embedded") };
        let w = e.load.workloads().unwrap();
        assert_eq!(w.len(), 12);
        assert_eq!(e.load.max_groups(), 4);
        assert_eq!(w[11].name(), "get-stale");
        assert_eq!((w[11].groups, w[11].in_flight), (4, 64));
        let bad = args("x embedded --secs 0");
        let BenchTarget::Embedded(e) = bad.target else { panic!("embedded") };
        assert!(e.load.workloads().is_err());
    }
}
