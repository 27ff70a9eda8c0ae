//! The gRPC [`Transport`]: how NodeHosts on different machines talk.
//!
//! - One connection (and one long-lived client stream of message batches) per peer, made by a task per
//!   peer. Peers are addressed by `host:port`; the name is resolved at every connect, never cached.
//! - Each peer has a bounded queue of batches: [`Transport::send`] never blocks; when a peer is slow or
//!   down its queue fills and further messages to it are dropped (counted), so memory stays bounded; Raft
//!   retransmits. Queued batches are merged before sending (batching per destination).
//! - Dead connections are noticed within about 1.5 s: HTTP/2 keepalive PINGs after 500 ms without a frame
//!   from the peer, answered within 1 s or the connection is closed ([`TransportConfig`]); a connection
//!   attempt gives up after 1 s, sending a new SYN every 200 ms while none is answered.
//! - A broken stream is re-established with exponential backoff, 100 ms to 500 ms (plus up to 50 %
//!   jitter), counted between the starts of attempts; messages queued while the peer is down are
//!   discarded (they are stale by the time it is back). A sign of life from the peer (it opened a stream
//!   to this node: [`GrpcTransport::heard_from`], called by [`receive::RaftService`]) ends the wait at
//!   once and resets the backoff to its minimum: a restarted peer is reconnected as soon as it speaks.
//! - When a stream breaks or cannot be opened, the recipients of the batches lost with it are reported to
//!   the local NodeHost ([`GrpcTransport::set_local`]), whose leaders then probe them (Raft's
//!   `report_unreachable`) instead of streaming entries into the void.
//! - Snapshot files go on their own connection, as a stream of 1 MiB chunks (`send::send_snapshot`).
//! - The receiving side is [`receive::RaftService`], served with the client API.

pub mod codec;
pub mod convert;
pub mod receive;
mod send;

/// The generated node-to-node protocol (`proto/drakkar/v1/raft.proto`): the `drakkar.v1.Raft` service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("drakkar.v1");
}

/// The encoded `FileDescriptorSet` of `raft.proto` (for gRPC server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("drakkar_raft_descriptor");

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use drakkar_client::connect::{self, Connector, KeepAlive};
use drakkar_client::tls::ClientTls;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use drakkar::transport::{MessageBatch, MessageSink, SnapshotDone, SnapshotRequest, Transport};

/// HTTP/2 keepalive of connections between nodes (Raft streams, snapshots, forwarded requests): a PING
/// after 500 ms without a frame from the other side, the connection closed if its answer takes over 1 s.
/// A silent connection is thus dropped within 1.5 s. Why not shorter: the answer needs both processes'
/// tokio runtimes to poll the connection, and on a loaded 2-core machine (builds, fsyncs, other nodes)
/// that can take tens of milliseconds, occasionally a few hundred; 1 s leaves a wide margin, so a busy
/// but healthy peer is not disconnected (which would cost it the messages in flight).
pub const PEER_KEEPALIVE: KeepAlive =
    KeepAlive { interval: Duration::from_millis(500), timeout: Duration::from_secs(1) };

/// Deadline of one connection attempt to another node (name resolution, TCP, TLS handshake). Within a
/// cluster a connection takes milliseconds; a longer wait means the SYN was dropped (a partition). Within
/// an attempt a new SYN goes out every [`drakkar_client::connect::SYN_RETRY`] (200 ms) while none was
/// answered, so a healed network is found within about that, not at the kernel's SYN retransmission
/// (1 s) nor at the next attempt.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of a [`GrpcTransport`].
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Batches queued per peer before messages to it are dropped.
    pub queue_batches: usize,
    /// Deadline of one connection attempt.
    pub connect_timeout: Duration,
    /// First pause between reconnection attempts, and the pause after a sign of life from the peer.
    pub min_backoff: Duration,
    /// Longest pause between reconnection attempts (plus up to 50 % jitter).
    pub max_backoff: Duration,
    /// HTTP/2 keepalive of the peer connections.
    pub keepalive: KeepAlive,
}

impl Default for TransportConfig {
    /// The backoff cap is short (500 ms) because the transport only retries peers Raft keeps sending to
    /// (current members: a peer nothing is sent to loses its task after 5 minutes), and an attempt costs
    /// one refused SYN or one connect timeout: a few attempts a second per dead peer are cheap, while a
    /// long cap decided how long a restarted or healed peer stayed without its leader (up to 7.5 s with
    /// the former 5 s cap).
    fn default() -> Self {
        TransportConfig {
            queue_batches: 1024,
            connect_timeout: PEER_CONNECT_TIMEOUT,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            keepalive: PEER_KEEPALIVE,
        }
    }
}

/// One peer's task, as seen from the transport.
struct Peer {
    queue: mpsc::Sender<MessageBatch>,
    /// Bumped at every sign of life from the peer; the task wakes up on it.
    heard: watch::Sender<u64>,
}

struct Inner {
    rt: tokio::runtime::Handle,
    connector: Connector,
    cfg: TransportConfig,
    /// By the address messages are sent to.
    peers: Mutex<HashMap<String, Peer>>,
    dropped: AtomicU64,
    stop: CancellationToken,
    local: Arc<OnceLock<Weak<dyn MessageSink>>>,
}

/// Every transport with the NodeHost it was connected to ([`GrpcTransport::set_local`]). The server
/// builds the Raft service from the NodeHost alone; the service finds the NodeHost's transport here to
/// report the peers it hears from ([`heard_from`]). Entries hold no strong reference: a dropped transport
/// or NodeHost leaves a dead entry, removed at the next registration.
type Links = Vec<(Weak<dyn MessageSink>, Weak<Inner>)>;
static LINKS: Mutex<Links> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The transport of the NodeHost `local` heard from `peer` (see [`GrpcTransport::heard_from`]). Does
/// nothing when `local` has no gRPC transport (the in-process network of tests, say).
pub(crate) fn heard_from(local: &Weak<dyn MessageSink>, peer: &str) {
    let inner = lock(&LINKS).iter().find(|(l, _)| Weak::ptr_eq(l, local)).and_then(|(_, t)| t.upgrade());
    if let Some(inner) = inner {
        GrpcTransport { inner }.heard_from(peer);
    }
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
    /// cannot reach, and whose Raft service then tells it which peers are up. Only the first call counts.
    pub fn set_local(&self, sink: Weak<dyn MessageSink>) {
        if self.inner.local.set(sink.clone()).is_ok() {
            let mut links = lock(&LINKS);
            links.retain(|(l, t)| l.strong_count() > 0 && t.strong_count() > 0);
            links.push((sink, Arc::downgrade(&self.inner)));
        }
    }

    /// `peer` (`host:port`) is up: it opened a stream to this node. If the connection to it is down, the
    /// next attempt starts now, and the backoff is back to its minimum. Cheap; called once per inbound
    /// stream, not per message.
    pub fn heard_from(&self, peer: &str) {
        let peer = connect::host_port(peer);
        for (addr, p) in lock(&self.inner.peers).iter() {
            if connect::host_port(addr) == peer {
                p.heard.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Messages dropped because a peer's queue was full or its task gone.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn queue(&self, to: &str) -> mpsc::Sender<MessageBatch> {
        let mut peers = lock(&self.inner.peers);
        if let Some(p) = peers.get(to).filter(|p| !p.queue.is_closed()) {
            return p.queue.clone();
        }
        let cfg = &self.inner.cfg;
        let (tx, rx) = mpsc::channel(cfg.queue_batches.max(1));
        let (heard, heard_rx) = watch::channel(0);
        let task = send::PeerTask {
            address: connect::host_port(to).to_string(),
            queue: rx,
            connector: self.inner.connector.clone(),
            keepalive: cfg.keepalive,
            backoff: send::Backoff::new(cfg.min_backoff, cfg.max_backoff),
            heard: heard_rx,
            stop: self.inner.stop.clone(),
            idle_since: std::time::Instant::now(),
            local: self.inner.local.clone(),
            last: None,
        };
        self.inner.rt.spawn(task.run());
        peers.insert(to.to_string(), Peer { queue: tx.clone(), heard });
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
        let keepalive = self.inner.cfg.keepalive;
        let stop = self.inner.stop.clone();
        self.inner.rt.spawn(async move {
            let (to, group) = (req.to.clone(), req.group);
            let r = tokio::select! {
                _ = stop.cancelled() => Err("transport stopped".to_string()),
                r = send::send_snapshot(connector, keepalive, req) => r,
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

#[cfg(test)]
mod tests {
    use super::*;
    use drakkar::transport::MessageBatch;

    fn batch() -> MessageBatch {
        MessageBatch { from: "me:1".into(), incarnation: 1, messages: Vec::new(), reused: Vec::new() }
    }

    /// A port nothing listens on (yet).
    fn free_port() -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("local address")
    }

    /// The task of a peer whose connection failed waits out a 60 s backoff, unless the peer is heard
    /// from: then it connects at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_heard_from_is_retried_at_once() {
        let addr = free_port();
        let stop = CancellationToken::new();
        let cfg = TransportConfig {
            min_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            ..TransportConfig::default()
        };
        let t = GrpcTransport::new(tokio::runtime::Handle::current(), None, cfg, stop.clone());
        t.send(&addr.to_string(), batch());
        // The first attempt is refused at once; the task then sleeps for 60 s.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the peer's port");
        let early = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
        assert!(early.is_err(), "connected during the backoff: the test proves nothing");

        t.heard_from(&format!("http://{addr}"));
        let r = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
        assert!(matches!(r, Ok(Ok(_))), "not reconnected after a sign of life: {r:?}");
        stop.cancel();
    }

    #[test]
    fn signs_of_life_reach_the_transport_of_the_right_node() {
        struct Nothing;
        impl MessageSink for Nothing {
            fn deliver(&self, _: MessageBatch) {}
            fn snapshot_landing(&self, _: drakkar_raft::GroupId) -> Result<std::path::PathBuf, String> {
                Err("no".into())
            }
            fn receive_snapshot(
                &self,
                _: drakkar_raft::GroupId,
                _: drakkar_raft::Message,
                _: Option<std::path::PathBuf>,
            ) -> Result<(), String> {
                Err("no".into())
            }
            fn unreachable(&self, _: Vec<(drakkar_raft::GroupId, drakkar_raft::ReplicaId)>) {}
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let stop = CancellationToken::new();
        let (a, b) = (Arc::new(Nothing) as Arc<dyn MessageSink>, Arc::new(Nothing) as Arc<dyn MessageSink>);
        let ta = GrpcTransport::new(rt.handle().clone(), None, TransportConfig::default(), stop.clone());
        let tb = GrpcTransport::new(rt.handle().clone(), None, TransportConfig::default(), stop.clone());
        ta.set_local(Arc::downgrade(&a));
        tb.set_local(Arc::downgrade(&b));
        let _guard = rt.enter();
        ta.send("peer:1", batch());
        tb.send("peer:1", batch());
        let version = |t: &GrpcTransport| *lock(&t.inner.peers)["peer:1"].heard.borrow();

        heard_from(&Arc::downgrade(&b), "peer:1");
        assert_eq!((version(&ta), version(&tb)), (0, 1));
        heard_from(&Arc::downgrade(&a), "http://peer:1/");
        assert_eq!((version(&ta), version(&tb)), (1, 1));
        // A peer without a task, and a NodeHost without a transport: nothing happens.
        heard_from(&Arc::downgrade(&a), "other:1");
        let c = Arc::new(Nothing) as Arc<dyn MessageSink>;
        heard_from(&Arc::downgrade(&c), "peer:1");
        assert_eq!((version(&ta), version(&tb)), (1, 1));
        stop.cancel();
    }
}
