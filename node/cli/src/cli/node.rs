//! Running one node: NodeHost + gRPC transport + gRPC server (+ metrics HTTP), mini-redis style:
//! [`run`] takes its listeners and a shutdown token, so tests and `drakkar dev` bind `127.0.0.1:0`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use drakkar::{GroupConfig, NodeHost, NodeHostConfig, StartMode};
use drakkar_client::tls::ClientTls;
use drakkar_raft::{GroupId, ReplicaId};
use drakkar_server::peer::{GrpcTransport, TransportConfig};
use drakkar_server::tls::{NodeTls, TlsFiles};
use drakkar_server::{self, KvKind, ServerConfig, ServerState};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything a node needs besides its listeners.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// `host:port` peers and clients use to reach this node (a stable DNS name).
    pub advertise: String,
    /// The founding members of the KV groups, in replica id order (replica id = position + 1). Empty: a
    /// one-node cluster when `kv_groups > 0`.
    pub peers: Vec<String>,
    /// KV groups 1..=n founded at first start.
    pub kv_groups: u64,
    /// Their state machine.
    pub kind: KvKind,
    /// TLS files (None: plaintext, `--insecure`).
    pub tls: Option<TlsFiles>,
    /// Raft tick.
    pub tick: Duration,
    /// Ticks before an election.
    pub election_ticks: u32,
    /// Largest request.
    pub max_request_bytes: usize,
    /// Time given to in-flight requests at shutdown.
    pub drain_timeout: Duration,
    /// Snapshot every this many applied entries (0: only on request).
    pub snapshot_entries: u64,
    /// Entries kept behind a snapshot for slightly lagging followers.
    pub compaction_overhead: u64,
}

/// This node's replica id in the founding groups: its position in `peers` + 1.
fn founding_id(opts: &NodeOptions) -> Result<Option<(ReplicaId, BTreeMap<ReplicaId, String>)>> {
    if opts.peers.is_empty() {
        let members = BTreeMap::from([(ReplicaId(1), opts.advertise.clone())]);
        return Ok(Some((ReplicaId(1), members)));
    }
    let members: BTreeMap<ReplicaId, String> =
        opts.peers.iter().enumerate().map(|(i, p)| (ReplicaId(i as u64 + 1), p.clone())).collect();
    match opts.peers.iter().position(|p| *p == opts.advertise) {
        Some(i) => Ok(Some((ReplicaId(i as u64 + 1), members))),
        None => Ok(None),
    }
}

/// Runs a node on `listener` (and `/metrics` etc. on `http`) until `shutdown` fires, then shuts down
/// gracefully: leadership moves away, the server stops accepting and drains, the NodeHost closes.
pub async fn run(
    opts: NodeOptions,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<()> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;
    let background = CancellationToken::new();
    let tls = match &opts.tls {
        Some(files) => {
            let t = NodeTls::load(files.clone()).context("loading the TLS files")?;
            t.spawn_watcher(Duration::from_secs(5), background.clone());
            Some(t)
        }
        None => {
            tracing::warn!(
                "running WITHOUT TLS (--insecure): anyone who can reach {} can read and write data and impersonate a peer",
                opts.advertise
            );
            None
        }
    };
    let transport = GrpcTransport::new(
        tokio::runtime::Handle::current(),
        tls.clone().map(|t| t as Arc<dyn ClientTls>),
        TransportConfig::default(),
        background.clone(),
    );
    let mut hcfg = NodeHostConfig::new(&opts.data_dir, opts.advertise.clone());
    hcfg.tick_interval = opts.tick;
    // A request for a group without a leader fails after an election timeout, so clients move to another
    // node rather than wait out their deadline here.
    hcfg.no_leader_wait = Some(opts.tick * opts.election_ticks.max(1));
    let host = NodeHost::new(hcfg, Arc::new(transport.clone())).context("starting the NodeHost")?;
    transport.set_local(host.sink());
    let group = GroupConfig {
        election_ticks: opts.election_ticks,
        snapshot_entries: opts.snapshot_entries,
        compaction_overhead: opts.compaction_overhead,
        ..GroupConfig::default()
    };
    let scfg = ServerConfig {
        max_request_bytes: opts.max_request_bytes,
        group,
        peers: opts.peers.clone(),
        ..ServerConfig::default()
    };
    let state = ServerState::new(host.clone(), opts.data_dir.clone(), scfg, tls);
    let result = start_groups(&state, &opts).await;
    if let Err(e) = result {
        background.cancel();
        close(host).await;
        return Err(e);
    }
    let tracker = TaskTracker::new();
    let serving = CancellationToken::new();
    let server_task = tracker.spawn(drakkar_server::serve(state.clone(), listener, serving.clone()));
    if let Some(http) = http {
        tracker.spawn(drakkar_server::health::serve_http(http, state.clone(), serving.clone()));
    }
    tracing::info!(address = %opts.advertise, incarnation = %format!("{:032x}", host.info().incarnation), "node started");
    let failed = {
        let host = host.clone();
        async move {
            loop {
                if let Some(reason) = host.info().failure {
                    return reason;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        reason = failed => {
            // As etcd does: after a failed write or fsync nothing more may be acknowledged, and only a
            // new process recovers exactly what is durable. No graceful steps: they would write.
            tracing::error!(%reason, "storage failed: exiting so that a restart recovers from the data on disk");
            serving.cancel();
            background.cancel();
            close(host).await;
            bail!("storage failed: {reason}");
        }
        r = server_task => {
            background.cancel();
            close(host).await;
            return match r {
                Ok(Ok(())) => bail!("the server stopped"),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(e.into()),
            };
        }
    }
    tracing::info!("shutting down: moving leadership away");
    state.transfer_leadership_away(Duration::from_secs(3)).await;
    tracing::info!("shutting down: draining requests");
    serving.cancel();
    tracker.close();
    if tokio::time::timeout(opts.drain_timeout, tracker.wait()).await.is_err() {
        tracing::warn!("requests still in flight after the drain timeout");
    }
    background.cancel();
    close(host).await;
    tracing::info!("stopped");
    Ok(())
}

async fn start_groups(state: &Arc<ServerState>, opts: &NodeOptions) -> Result<()> {
    let st = state.clone();
    let restored =
        tokio::task::spawn_blocking(move || st.restore_groups()).await?.context("restarting groups")?;
    if !restored.is_empty() {
        tracing::info!(groups = restored.len(), "restarted the groups of the manifest");
    }
    if opts.kv_groups == 0 {
        return Ok(());
    }
    let Some((me, members)) = founding_id(opts)? else {
        tracing::info!("not among --peers: starting no founding group (join with `drakkar admin add`)");
        return Ok(());
    };
    for g in 1..=opts.kv_groups {
        let g = GroupId(g);
        if state.in_manifest(g) {
            continue;
        }
        let (st, members, kind) = (state.clone(), members.clone(), opts.kind);
        tokio::task::spawn_blocking(move || st.start_kv_group(g, me, StartMode::Founding(members), kind))
            .await?
            .with_context(|| format!("starting group {g}"))?;
    }
    Ok(())
}

async fn close(host: NodeHost) {
    let _ = tokio::task::spawn_blocking(move || host.close()).await;
}
