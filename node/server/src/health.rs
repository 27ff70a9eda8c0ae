//! Health: a probe task behind `grpc.health.v1` and the HTTP endpoints, and the HTTP server for
//! Prometheus metrics.
//!
//! - Liveness (`/livez`, health service `""`): the engine answered within the last 30 s. The probe runs
//!   a linearizable read of a KV group: any answer other than a timeout (including "no leader") shows the
//!   step workers are turning. A node without groups is live.
//! - Readiness (`/readyz`, health service `drakkar.v1.Kv`): every probed group has a leader and a
//!   linearizable read completed, which means this replica has applied everything the leader had
//!   committed when the read started: it is caught up. Up to 16 groups are probed per second, in turn.
//!   Replicas refused as reused after data loss are left out: they need replacing under a new id (by the
//!   operator, which only acts on ready nodes), and their groups' requests are forwarded meanwhile.
//! - `/metrics`: [`crate::NodeHost::metrics_text`].

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::ServerState;
use crate::NodeError;
use drakkar_kv::Query;

const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_GROUPS: usize = 16;
/// How long the engine may stay silent before the node is not live.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(30);

/// A random-enough 64-bit value (file names, not cryptography).
pub fn nonce() -> u64 {
    std::collections::hash_map::RandomState::new()
        .hash_one((std::process::id(), std::time::SystemTime::now()))
}

/// One probe round over `groups` (a window of the hosted groups): (ready, engine answered).
async fn probe(state: &ServerState, round: usize) -> (bool, bool) {
    // A replica refused as reused after data loss serves nothing here (its group's requests are
    // forwarded) and only the operator's replacement brings it back, for which the node must be ready.
    let all: Vec<_> = state
        .host
        .groups()
        .into_iter()
        .filter(|g| !matches!(state.host.replica_state(*g), Ok((_, drakkar::ReplicaState::ReplicaIdReused))))
        .collect();
    if all.is_empty() {
        return (true, true);
    }
    let start = (round * PROBE_GROUPS) % all.len();
    let window: Vec<_> = all.iter().cycle().skip(start).take(PROBE_GROUPS.min(all.len())).copied().collect();
    let (mut ready, mut live) = (true, false);
    let query = Query::get("").encode().unwrap_or_default();
    for g in window {
        if !matches!(state.host.leader(g), Ok(Some(_))) {
            ready = false;
        }
        if state.kv_kind(g).is_none() {
            // Another state machine: its queries are unknown; a known leader is all we check.
            live = true;
            continue;
        }
        match state.host.read(g, query.clone(), Duration::from_secs(2)).await {
            Ok(_) => live = true,
            Err(NodeError::Timeout) => ready = false,
            Err(_) => {
                live = true;
                ready = false;
            }
        }
    }
    (ready, live)
}

/// Runs the probe every second until `stop`, publishing the results in `state` and `reporter`.
pub fn spawn_probe(state: Arc<ServerState>, reporter: HealthReporter, stop: CancellationToken) {
    tokio::spawn(async move {
        reporter.set_service_status("", ServingStatus::Serving).await;
        let mut round = 0usize;
        loop {
            let (ready, live) = tokio::select! {
                _ = stop.cancelled() => break,
                r = probe(&state, round) => r,
            };
            round = round.wrapping_add(1);
            state.set_health(ready, live);
            let live = state.is_live(LIVENESS_WINDOW);
            let status = |ok: bool| if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status("", status(live)).await;
            reporter.set_service_status("drakkar.v1.Kv", status(ready)).await;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
        state.set_health(false, false);
        reporter.set_service_status("", ServingStatus::NotServing).await;
        reporter.set_service_status("drakkar.v1.Kv", ServingStatus::NotServing).await;
    });
}

/// Serves `/metrics`, `/livez` and `/readyz` over plain HTTP/1.1 until `stop`.
pub async fn serve_http(listener: TcpListener, state: Arc<ServerState>, stop: CancellationToken) {
    loop {
        let (mut conn, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    let m = conn.read(&mut buf[n..]).await?;
                    if m == 0 {
                        break;
                    }
                    n += m;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (code, ctype, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    state.host.metrics_text() + &state.authz().metrics_text(),
                ),
                "/livez" | "/healthz" if state.is_live(LIVENESS_WINDOW) => {
                    ("200 OK", "text/plain", "ok\n".into())
                }
                "/livez" | "/healthz" => {
                    ("503 Service Unavailable", "text/plain", "engine not responding\n".into())
                }
                "/readyz" if state.is_ready() => ("200 OK", "text/plain", "ready\n".into()),
                "/readyz" => ("503 Service Unavailable", "text/plain", "not caught up\n".into()),
                _ => ("404 Not Found", "text/plain", "try /metrics, /livez or /readyz\n".into()),
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
