//! The `drakkar` command line: `serve`, `dev`, `kv`, `admin`, `cert`, `bench`.

/// `println!` for the command's output: when the reader went away (`drakkar admin status | head`), the
/// process ends quietly with status 141, as a program killed by SIGPIPE does, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::print_line(format_args!($($arg)*))
    };
}

mod admin;
mod bench;
pub mod cert;
mod dev;
mod kv;
pub mod node;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use drakkar_client::{Client, ClientConfig, tls};
use drakkar_server::KvKind;
use drakkar_server::tls::{ClientAuth, TlsFiles};
use tokio_util::sync::CancellationToken;

/// Drakkar: a multi-group Raft node with a TLS gRPC API.
#[derive(Parser, Debug)]
#[command(name = "drakkar", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Run a 3-replica cluster on loopback in this process, with TLS, until Ctrl-C.
    Dev(dev::DevArgs),
    /// Read and write keys.
    Kv(kv::KvArgs),
    /// Membership, leadership, status, snapshots.
    Admin(admin::AdminArgs),
    /// Create a development CA and certificates.
    Cert(CertArgs),
    /// Verify a cluster: a workload with faults, checked for linearizability (see docs/reliability.md).
    Check(drakkar_check::CheckArgs),
    /// Measure throughput and latency: Drakkar over gRPC, embedded, or etcd; idle groups.
    Bench(bench::BenchArgs),
}

/// The state machine of the KV groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SmArg {
    /// In memory (MemKv): rebuilt from snapshot + log at restart.
    Memory,
    /// On disk (DiskKv, redb).
    Disk,
}

impl From<SmArg> for KvKind {
    fn from(s: SmArg) -> KvKind {
        match s {
            SmArg::Memory => KvKind::Memory,
            SmArg::Disk => KvKind::Disk,
        }
    }
}

/// `drakkar serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Data directory (log, snapshots, KV files, identity).
    #[arg(long, env = "DRAKKAR_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to listen on for clients and peers.
    #[arg(long, env = "DRAKKAR_LISTEN", default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// host:port others reach this node at: a stable DNS name (defaults to --listen).
    #[arg(long, env = "DRAKKAR_ADVERTISE")]
    advertise: Option<String>,
    /// Founding members of the KV groups, comma separated, this node included; replica id = position + 1.
    /// Empty: a single-node cluster. A node not in the list founds nothing (it is added later).
    #[arg(long, env = "DRAKKAR_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// KV groups founded at first start (groups 1..=N).
    #[arg(long, env = "DRAKKAR_KV_GROUPS", default_value_t = 1)]
    kv_groups: u64,
    /// State machine of the KV groups.
    #[arg(long, env = "DRAKKAR_STATE_MACHINE", value_enum, default_value = "memory")]
    state_machine: SmArg,
    /// Serve /metrics, /livez and /readyz over HTTP here.
    #[arg(long, env = "DRAKKAR_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    tls: ServerTlsArgs,
    /// Raft tick, in milliseconds.
    #[arg(long, env = "DRAKKAR_TICK_MS", default_value_t = 50)]
    tick_ms: u64,
    /// Ticks without a leader before an election (randomised up to twice this).
    #[arg(long, env = "DRAKKAR_ELECTION_TICKS", default_value_t = 10)]
    election_ticks: u32,
    /// Largest request accepted, in bytes.
    #[arg(long, env = "DRAKKAR_MAX_REQUEST_BYTES", default_value_t = 40 << 20)]
    max_request_bytes: usize,
    /// Snapshot each group every this many applied entries (0: only on request).
    #[arg(long, env = "DRAKKAR_SNAPSHOT_ENTRIES", default_value_t = 10_000)]
    snapshot_entries: u64,
    /// Log entries kept behind a snapshot, so slightly lagging followers need no snapshot.
    #[arg(long, env = "DRAKKAR_COMPACTION_OVERHEAD", default_value_t = 1_000)]
    compaction_overhead: u64,
}

/// TLS of a node.
#[derive(Args, Debug, Clone)]
pub struct ServerTlsArgs {
    /// CA bundle that signs nodes and clients.
    #[arg(long, env = "DRAKKAR_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (valid for its advertised name, server and client usages).
    #[arg(long, env = "DRAKKAR_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// This node's key.
    #[arg(long, env = "DRAKKAR_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Accept clients without a certificate; they act with the client role only (data, no Admin
    /// changes). By default every caller presents a certificate signed by the CA.
    #[arg(long, env = "DRAKKAR_ALLOW_ANONYMOUS_CLIENTS")]
    allow_anonymous_clients: bool,
    /// Accepted for compatibility: client certificates are always required unless
    /// --allow-anonymous-clients is given.
    #[arg(long, hide = true)]
    require_client_cert: bool,
    /// Run without TLS (plaintext; a warning is logged). Never in production.
    #[arg(long, env = "DRAKKAR_INSECURE")]
    insecure: bool,
}

impl ServerTlsArgs {
    fn files(&self) -> Result<Option<TlsFiles>> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key, self.insecure) {
            (_, _, _, true) => Ok(None),
            (Some(ca), Some(cert), Some(key), false) => Ok(Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                client_auth: if self.allow_anonymous_clients && !self.require_client_cert {
                    ClientAuth::AllowAnonymous
                } else {
                    ClientAuth::Required
                },
            })),
            _ => bail!("TLS needs --tls-ca, --tls-cert and --tls-key (or run with --insecure)"),
        }
    }
}

/// How a command-line client connects.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Node addresses (host:port), comma separated.
    #[arg(long, env = "DRAKKAR_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:7000")]
    endpoints: Vec<String>,
    /// CA bundle to verify the nodes with.
    #[arg(long, env = "DRAKKAR_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (when the nodes require one).
    #[arg(long, env = "DRAKKAR_CERT")]
    cert: Option<PathBuf>,
    /// Client key.
    #[arg(long, env = "DRAKKAR_KEY")]
    key: Option<PathBuf>,
    /// Connect without TLS (nodes run with --insecure).
    #[arg(long, env = "DRAKKAR_INSECURE")]
    insecure: bool,
    /// Deadline of one request, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

impl ClientArgs {
    fn client(&self) -> Result<Client> {
        let mut cfg = ClientConfig::new(self.endpoints.clone());
        cfg.request_timeout = Duration::from_millis(self.timeout_ms);
        if !self.insecure {
            let Some(ca) = &self.ca else { bail!("--ca (or DRAKKAR_CA) is required unless --insecure") };
            let identity = match (&self.cert, &self.key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                (None, None) => None,
                _ => bail!("--cert and --key go together"),
            };
            let c = tls::client_config_from_files(ca, identity)?;
            cfg = cfg.with_tls(Arc::new(Arc::new(c)));
        }
        Ok(Client::new(cfg)?)
    }
}

/// `drakkar cert`.
#[derive(Args, Debug)]
struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// A new CA: DIR/ca.pem and DIR/ca-key.pem.
    Ca {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// A node, admin or client certificate signed by the CA in --ca-dir: OUT/NAME.pem and
    /// OUT/NAME-key.pem. The role (node: peer) is in the subject's Organization.
    Issue {
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long)]
        ca_dir: PathBuf,
        /// Certificate name (common name and file name).
        #[arg(long)]
        name: String,
        /// node (the peer role), admin or client.
        #[arg(long, value_enum, default_value = "node")]
        kind: cert::CertKind,
        /// DNS names and IPs of a node, comma separated (its advertised name first).
        #[arg(long, value_delimiter = ',')]
        san: Vec<String>,
        /// Output directory (defaults to --ca-dir).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A CA, loopback certificates node-1..node-N, an admin and a client certificate, in one directory.
    Dev {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Node certificates.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
}

/// Writes `args` and a newline to stdout (see `out!`).
pub(crate) fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // 128 + SIGPIPE: what the shell reports for a reader that stopped early.
            std::process::exit(141);
        }
        eprintln!("drakkar: writing the output: {e}");
        std::process::exit(1);
    }
}

/// Cancels the token on Ctrl-C or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("signal received");
        token.cancel();
    });
}

async fn serve(a: ServeArgs) -> Result<()> {
    let listener =
        tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("binding {}", a.listen))?;
    let http = match a.metrics_listen {
        Some(m) => Some(tokio::net::TcpListener::bind(m).await.with_context(|| format!("binding {m}"))?),
        None => None,
    };
    let opts = node::NodeOptions {
        data_dir: a.data_dir,
        advertise: a.advertise.unwrap_or_else(|| a.listen.to_string()),
        peers: a.peers.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        kv_groups: a.kv_groups,
        kind: a.state_machine.into(),
        tls: a.tls.files()?,
        tick: Duration::from_millis(a.tick_ms.max(1)),
        election_ticks: a.election_ticks.max(2),
        max_request_bytes: a.max_request_bytes,
        drain_timeout: Duration::from_secs(10),
        snapshot_entries: a.snapshot_entries,
        compaction_overhead: a.compaction_overhead,
    };
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    node::run(opts, listener, http, shutdown).await
}

/// Runs the command line; the process exit code.
pub fn main() -> std::process::ExitCode {
    // rustls panics at the first handshake if two providers are compiled in and none is chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRAKKAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: not in files, kubectl logs or journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drakkar: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match cli.command {
            Command::Serve(a) => serve(a).await,
            Command::Dev(a) => dev::run(a).await,
            Command::Kv(a) => kv::run(a).await,
            Command::Admin(a) => admin::run(a).await,
            Command::Check(a) => drakkar_check::run(a).await,
            Command::Bench(a) => bench::run(a).await.map(|_| ()),
            Command::Cert(a) => match a.command {
                CertCommand::Ca { out } => cert::create_ca(&out),
                CertCommand::Issue { ca_dir, name, kind, san, out } => {
                    let out = out.unwrap_or_else(|| ca_dir.clone());
                    let (c, k) = cert::issue(&ca_dir, &name, &san, kind, &out)?;
                    out!("{}\n{}", c.display(), k.display());
                    Ok(())
                }
                CertCommand::Dev { out, nodes } => cert::dev_pki(&out, nodes),
            },
        }
    });
    // Background tasks (peer streams, probes) must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drakkar: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
