//! The gRPC [`Transport`]: how NodeHosts on different machines talk.
//!
//! - One connection (and one long-lived client stream of message batches) per peer, made by a task per
//!   peer. Peers are addressed by `host:port`; the name is resolved at every connect, never cached.
//! - Each peer has a bounded queue of batches: [`Transport::send`] never blocks; when a peer is slow or
//!   down its queue fills and further messages to it are dropped (counted), so memory stays bounded; Raft
//!   retransmits. Queued batches are merged before sending (batching per destination).
//! - A broken stream is re-established with exponential backoff (100 ms to 5 s, with jitter); messages
//!   queued while the peer is down are discarded (they are stale by the time it is back).
//! - When a stream breaks or cannot be opened, the recipients of the batches lost with it are reported to
//!   the local NodeHost ([`GrpcTransport::set_local`]), whose leaders then probe them (Raft's
//!   `report_unreachable`) instead of streaming entries into the void.
//! - Snapshot files go on their own connection, as a stream of 1 MiB chunks ([`peer::send_snapshot`]).
//! - The receiving side is [`receive::RaftService`], served with the client API.

pub mod convert;
mod peer;
pub mod receive;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use drakkar_client::connect::{self, Connector};
use drakkar_client::tls::ClientTls;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::transport::{MessageBatch, MessageSink, SnapshotDone, SnapshotRequest, Transport};

/// Settings of a [`GrpcTransport`].
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Batches queued per peer before messages to it are dropped.
    pub queue_batches: usize,
    /// Deadline of one connection attempt.
    pub connect_timeout: Duration,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            queue_batches: 1024,
            connect_timeout: Duration::from_secs(3),
            max_backoff: Duration::from_secs(5),
        }
    }
}

struct Inner {
    rt: tokio::runtime::Handle,
    connector: Connector,
    cfg: TransportConfig,
    peers: Mutex<HashMap<String, mpsc::Sender<MessageBatch>>>,
    dropped: AtomicU64,
    stop: CancellationToken,
    local: Arc<OnceLock<Weak<dyn MessageSink>>>,
}

/// The gRPC transport. Cheap to clone.
#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<Inner>,
}

impl GrpcTransport {
    /// A transport whose tasks run on `rt`, connecting with `tls` (None: plaintext), until `stop`.
    pub fn new(
        rt: tokio::runtime::Handle,
        tls: Option<Arc<dyn ClientTls>>,
        cfg: TransportConfig,
        stop: CancellationToken,
    ) -> Self {
        let connector = Connector::new(tls, cfg.connect_timeout);
        let inner = Inner {
            rt,
            connector,
            cfg,
            peers: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            stop,
            local: Arc::new(OnceLock::new()),
        };
        GrpcTransport { inner: Arc::new(inner) }
    }

    /// Connects the transport to the local NodeHost (`NodeHost::sink`), which it then tells about peers it
    /// cannot reach. Only the first call counts.
    pub fn set_local(&self, sink: Weak<dyn MessageSink>) {
        let _ = self.inner.local.set(sink);
    }

    /// Messages dropped because a peer's queue was full or its task gone.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn queue(&self, to: &str) -> mpsc::Sender<MessageBatch> {
        let mut peers = self.inner.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(q) = peers.get(to).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(self.inner.cfg.queue_batches.max(1));
        let task = peer::PeerTask {
            address: connect::host_port(to).to_string(),
            queue: rx,
            connector: self.inner.connector.clone(),
            max_backoff: self.inner.cfg.max_backoff,
            stop: self.inner.stop.clone(),
            idle_since: std::time::Instant::now(),
            local: self.inner.local.clone(),
            last: None,
        };
        self.inner.rt.spawn(task.run());
        peers.insert(to.to_string(), tx.clone());
        tx
    }
}

impl Transport for GrpcTransport {
    fn send(&self, to: &str, batch: MessageBatch) {
        if self.inner.stop.is_cancelled() {
            return;
        }
        let n = batch.messages.len().max(1) as u64;
        if self.queue(to).try_send(batch).is_err() {
            let before = self.inner.dropped.fetch_add(n, Ordering::Relaxed);
            // Logged once per 1024 drops: a slow peer must not flood the log either.
            if before / 1024 != (before + n) / 1024 {
                tracing::warn!(peer = to, dropped = before + n, "peer queue full: Raft messages dropped");
            }
        }
    }

    fn send_snapshot(&self, req: SnapshotRequest, done: SnapshotDone) {
        let connector = self.inner.connector.clone();
        let stop = self.inner.stop.clone();
        self.inner.rt.spawn(async move {
            let (to, group) = (req.to.clone(), req.group);
            let r = tokio::select! {
                _ = stop.cancelled() => Err("transport stopped".to_string()),
                r = peer::send_snapshot(connector, req) => r,
            };
            if let Err(e) = &r {
                tracing::warn!(peer = %to, group = group.0, error = %e, "sending a snapshot failed");
            }
            // `done` hands the outcome to a step worker's bounded queue, which may block.
            let ok = r.is_ok();
            let _ = tokio::task::spawn_blocking(move || done(ok)).await;
        });
    }
}
