//! `drakkar dev`: a working cluster on loopback in one process: 3 nodes on free ports of 127.0.0.1, TLS
//! from a generated CA, several KV groups. Ctrl-C stops it cleanly. With `--dir` the data, certificates
//! and ports are kept and reused by the next run; without it everything lives in a temporary directory
//! removed at exit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use drakkar_client::{Client, ClientConfig, tls};
use drakkar_server::KvKind;
use drakkar_server::tls::{ClientAuth, TlsFiles};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::node::{self, NodeOptions};
use super::{SmArg, cancel_on_signal, cert};

/// `drakkar dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Keep data, certificates and ports here (default: a temporary directory, removed at exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Nodes (replicas of every group).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// KV groups.
    #[arg(long, default_value_t = 4)]
    groups: u64,
    /// State machine of the KV groups.
    #[arg(long, value_enum, default_value = "memory")]
    state_machine: SmArg,
    /// Plaintext instead of TLS.
    #[arg(long)]
    insecure: bool,
}

/// Binds the ports of an earlier run (so the members' addresses stay valid) or free ones.
async fn listeners(dir: &std::path::Path, n: usize) -> Result<Vec<TcpListener>> {
    let path = dir.join("ports");
    let old: Vec<u16> = std::fs::read_to_string(&path)
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for i in 0..n {
        let port = old.get(i).copied().unwrap_or(0);
        let l = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port} (used by this cluster before)"))?;
        out.push(l);
    }
    let ports: Vec<String> =
        out.iter().map(|l| l.local_addr().map(|a| a.port().to_string())).collect::<Result<_, _>>()?;
    std::fs::write(&path, ports.join(" ")).context("writing the ports file")?;
    Ok(out)
}

/// The options of node `i` (0-based) of a loopback dev cluster under `dir` listening at `addrs`: every
/// node a founding member of `groups` KV groups, TLS from `certs` (None: `--insecure`), fast ticks.
pub fn node_options(
    dir: &Path,
    certs: Option<&Path>,
    addrs: &[String],
    i: usize,
    groups: u64,
    kind: KvKind,
) -> NodeOptions {
    let name = format!("node-{}", i + 1);
    let tls = certs.map(|certs| TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{name}.pem")),
        key: certs.join(format!("{name}-key.pem")),
        client_auth: ClientAuth::Required,
    });
    NodeOptions {
        data_dir: dir.join(&name),
        advertise: addrs[i].clone(),
        peers: addrs.to_vec(),
        kv_groups: groups,
        kind,
        tls,
        tick: Duration::from_millis(20),
        election_ticks: 10,
        max_request_bytes: 40 << 20,
        drain_timeout: Duration::from_secs(5),
        snapshot_entries: 10_000,
        compaction_overhead: 1_000,
    }
}

pub async fn run(a: DevArgs) -> Result<()> {
    if a.nodes == 0 || a.groups == 0 {
        bail!("a cluster needs at least one node and one group");
    }
    let (dir, temporary) = match a.dir {
        Some(d) => (d, false),
        None => {
            (std::env::temp_dir().join(format!("drakkar-dev-{:016x}", drakkar_server::health::nonce())), true)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let certs = dir.join("certs");
    if !a.insecure && !certs.join("ca.pem").exists() {
        cert::dev_pki(&certs, a.nodes)?;
    } else if !a.insecure && !certs.join("admin.pem").exists() {
        // Certificates of a version without roles: issue them again with the same CA.
        cert::dev_leaves(&certs, a.nodes)?;
    }
    let ls = listeners(&dir, a.nodes).await?;
    let addrs: Vec<String> =
        ls.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<_, _>>()?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut handles = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let tls_dir = (!a.insecure).then_some(certs.as_path());
        let opts = node_options(&dir, tls_dir, &addrs, i, a.groups, a.state_machine.into());
        handles.push(tracker.spawn(node::run(opts, l, None, shutdown.clone())));
    }
    tracker.close();
    cancel_on_signal(shutdown.clone());
    let waited = wait_until_ready(&addrs, &certs, a.insecure, a.groups, &shutdown).await;
    if let Err(e) = &waited {
        tracing::error!(error = %e, "the cluster did not come up");
        shutdown.cancel();
    } else {
        print_banner(&dir, &certs, &addrs, a.insecure, a.groups, temporary);
    }
    let mut failed = None;
    for h in handles {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(e) => failed = Some(e.into()),
        }
        // One node failing takes the others down.
        shutdown.cancel();
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    waited?;
    match failed {
        Some(e) => Err(e),
        None => {
            out!("drakkar dev: stopped cleanly");
            Ok(())
        }
    }
}

async fn wait_until_ready(
    addrs: &[String],
    certs: &std::path::Path,
    insecure: bool,
    groups: u64,
    stop: &CancellationToken,
) -> Result<()> {
    let mut cfg = ClientConfig::new(addrs.to_vec());
    if !insecure {
        let identity = (certs.join("client.pem"), certs.join("client-key.pem"));
        let c = tls::client_config_from_files(&certs.join("ca.pem"), Some((&identity.0, &identity.1)))?;
        cfg = cfg.with_tls(std::sync::Arc::new(std::sync::Arc::new(c)));
    }
    cfg.request_timeout = Duration::from_secs(2);
    let client = Client::new(cfg)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if stop.is_cancelled() {
            bail!("stopped before the cluster came up");
        }
        let (mut led, mut ready) = (0, 0);
        for a in addrs {
            if let Ok(s) = client.status(a).await {
                led += s.groups.iter().filter(|g| g.leader != 0).count();
                ready += usize::from(s.node.is_some_and(|n| n.ready));
            }
        }
        if led as u64 >= groups * addrs.len() as u64 && ready == addrs.len() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the cluster was not ready (a leader for every group, every replica caught up) after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_banner(
    dir: &std::path::Path,
    certs: &std::path::Path,
    addrs: &[String],
    insecure: bool,
    groups: u64,
    temporary: bool,
) {
    let mut env = format!("DRAKKAR_ENDPOINTS={}\n", addrs.join(","));
    if insecure {
        env.push_str("DRAKKAR_INSECURE=true\n");
    } else {
        env.push_str(&format!(
            "DRAKKAR_CA={}\nDRAKKAR_CERT={}\nDRAKKAR_KEY={}\n",
            certs.join("ca.pem").display(),
            certs.join("admin.pem").display(),
            certs.join("admin-key.pem").display()
        ));
    }
    let _ = std::fs::write(dir.join("env"), &env);
    out!(
        "drakkar dev: {} nodes, {groups} KV groups, data in {}{}",
        addrs.len(),
        dir.display(),
        if temporary { " (removed at exit)" } else { "" }
    );
    out!(
        "drakkar dev: TLS {}",
        if insecure {
            "off (--insecure)"
        } else {
            "on; the certs directory holds the CA, an admin certificate (below) and client.pem, a certificate \
             with the client role for applications"
        }
    );
    out!("drakkar dev: connect with these environment variables (also in {}):", dir.join("env").display());
    for line in env.lines() {
        out!("  export {line}");
    }
    out!("drakkar dev: then try");
    out!("  drakkar kv put greeting hello");
    out!("  drakkar kv get greeting");
    out!("  drakkar admin status");
    out!("drakkar dev: ready (Ctrl-C stops)");
}
