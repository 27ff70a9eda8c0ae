//! `drakkar-operator`: runs the DrakkarCluster controller.
//!
//! Health and metrics on `--http-listen` (`/healthz`, `/readyz`, `/metrics`), JSON logs by default, and
//! a Lease so that of several replicas only one reconciles. SIGTERM stops the controller, waits for
//! running reconciles, and releases the Lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{ArgAction, Parser, ValueEnum};
use drakkar_operator::admin::GrpcMembership;
use drakkar_operator::http::{self, HttpState};
use drakkar_operator::leader::{LeaderElector, LeaseConfig};
use drakkar_operator::metrics::Metrics;
use drakkar_operator::reconcile::{self, Context};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// The Drakkar Kubernetes operator.
#[derive(Parser, Debug)]
#[command(name = "drakkar-operator", version, about)]
struct Args {
    /// Watch DrakkarClusters in this namespace only (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// DNS domain of the Kubernetes cluster (pod and Service names end with it).
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Address of the health and metrics endpoints.
    #[arg(long, env = "HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,
    /// Elect a leader through a Lease before reconciling (needed when more than one replica runs).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "drakkar-operator")]
    lease_name: String,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease and in Events (its pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Ask the ready nodes, through their Admin API, for roles and leaders (shown in the status).
    #[arg(long, env = "OBSERVE_MEMBERS", default_value_t = true, action = ArgAction::Set)]
    observe_members: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.init(),
    }
}

fn identity(args: &Args) -> String {
    args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        if host.is_empty() { format!("drakkar-operator-{}", std::process::id()) } else { host }
    })
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
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
}

#[tokio::main]
async fn main() -> Result<()> {
    // Only ring is compiled in; installing it explicitly keeps rustls from guessing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    init_logs(args.log_format);
    let me = identity(&args);

    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(HttpState { metrics: metrics.clone(), ..HttpState::default() });
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("binding {}", args.http_listen))?;
    let http_task = tokio::spawn(http::serve(listener, state.clone(), stop.clone()));

    let mut config = kube::Config::infer().await.context("finding the Kubernetes API")?;
    drakkar_operator::identify(&mut config);
    let client = Client::try_from(config).context("connecting to the Kubernetes API")?;
    let capabilities = drakkar_operator::discovery::discover(&client).await;
    tracing::info!(identity = %me, ?capabilities, namespace = ?args.namespace, "starting");
    let mut ctx = Context::new(client.clone(), Some(me.clone()), &args.cluster_domain, capabilities)
        .with_metrics(metrics.clone());
    if args.observe_members {
        ctx = ctx.with_membership(Arc::new(GrpcMembership::default()));
    }
    let ctx = Arc::new(ctx);
    state.ready.store(true, Ordering::Relaxed);

    let elector = args.leader_election.then(|| {
        LeaderElector::new(
            Api::namespaced(client.clone(), &args.lease_namespace),
            LeaseConfig {
                name: args.lease_name.clone(),
                identity: me.clone(),
                duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
            },
        )
    });
    if let Some(e) = &elector {
        tracing::info!(lease = %args.lease_name, "waiting for the leader Lease");
        tokio::select! {
            _ = e.acquire() => {}
            _ = terminated() => {
                stop.cancel();
                let _ = http_task.await;
                return Ok(());
            }
        }
        tracing::info!("leading");
    }
    metrics.set_leader(true);

    // The controller stops on SIGTERM, or when leadership is lost.
    let lost = CancellationToken::new();
    let keeper = elector.clone().map(|e| {
        let lost = lost.clone();
        tokio::spawn(async move {
            e.keep().await;
            lost.cancel();
        })
    });
    let shutdown = {
        let lost = lost.clone();
        async move {
            tokio::select! {
                _ = terminated() => {}
                _ = lost.cancelled() => {}
            }
        }
    };
    reconcile::controller(ctx, args.namespace.as_deref(), shutdown).await;
    metrics.set_leader(false);
    if let Some(k) = keeper {
        k.abort();
    }
    stop.cancel();
    let _ = http_task.await;
    if lost.is_cancelled() {
        anyhow::bail!("lost the leader Lease; exiting so a fresh replica can take over");
    }
    if let Some(e) = &elector {
        e.release().await.context("releasing the leader Lease")?;
    }
    tracing::info!("stopped");
    Ok(())
}
