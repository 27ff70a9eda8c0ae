//! The gRPC transport reconnects to a restarted peer quickly: its backoff is capped short, and a stream
//! from the peer (received by the node's Raft service) ends the wait at once.
//!
//! A "peer" here is a tonic server with a Raft service that counts the batches it receives, on its own
//! runtime: dropping the runtime closes its listener and connections, as `kill -9` would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use drakkar::transport::{MessageBatch, Transport};
use drakkar::{NodeHost, NodeHostConfig};
use drakkar_raft::{GroupId, Message, MessageKind, ReplicaId, Term};
use drakkar_server::peer::pb::{self, raft_server::Raft, raft_server::RaftServer};
use drakkar_server::peer::{GrpcTransport, TransportConfig};
use drakkar_server::{self, ServerConfig, ServerState};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Counts the batches it receives.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

#[tonic::async_trait]
impl Raft for Counter {
    async fn send_messages(
        &self,
        req: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let mut stream = req.into_inner();
        let mut batches = 0;
        while stream.message().await?.is_some() {
            batches += 1;
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Response::new(pb::RaftAck { batches }))
    }

    async fn send_snapshot(
        &self,
        _req: Request<Streaming<pb::RaftSnapshotChunk>>,
    ) -> Result<Response<pb::RaftSnapshotAck>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// A peer serving on `addr` until its runtime is dropped; and the count of batches it received.
fn start_peer(addr: SocketAddr) -> (Runtime, Arc<AtomicU64>) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let counter = Counter::default();
    let got = counter.0.clone();
    // tokio's bind sets SO_REUSEADDR: the port of a killed peer can be bound again at once.
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServer::new(counter))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (rt, got)
}

/// A port nothing listens on (yet).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A heartbeat from replica 1 to replica 2 of group 1, sent by `from`.
fn heartbeat(from: &str) -> MessageBatch {
    let m = Message::new(MessageKind::Heartbeat, ReplicaId(1), ReplicaId(2), Term(1));
    MessageBatch {
        from: from.to_string(),
        incarnation: 7,
        messages: vec![(GroupId(1), m)],
        reused: Vec::new(),
    }
}

/// Sends a heartbeat to `to` every 20 ms, as a leader does, until `stop`.
fn keep_sending(rt: &Runtime, t: &GrpcTransport, from: &str, to: SocketAddr, stop: &CancellationToken) {
    let (t, from, to, stop) = (t.clone(), from.to_string(), to.to_string(), stop.clone());
    rt.spawn(async move {
        while !stop.is_cancelled() {
            t.send(&to, heartbeat(&from));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// How long until `got` is positive, if within `limit`.
fn wait_for_batches(got: &AtomicU64, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if got.load(Ordering::SeqCst) > 0 {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// The peer is killed; for 6 s its port accepts connections and closes them at once (a peer that keeps
/// failing): the sender retries at least every 750 ms (its capped backoff; the former 5 s cap left gaps
/// of 1.6 s, then 3.2 s, within those 6 s). Then the peer restarts on the same port, and is reconnected
/// within a backoff pause. The bounds asserted are twice and four times what is expected, so that a
/// loaded machine cannot fail them.
#[test]
fn a_failing_peer_is_retried_within_the_capped_backoff() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = CancellationToken::new();
    let t = GrpcTransport::new(rt.handle().clone(), None, TransportConfig::default(), stop.clone());
    let addr = free_port();
    let (peer, got) = start_peer(addr);
    keep_sending(&rt, &t, "me:1", addr, &stop);
    assert!(wait_for_batches(&got, Duration::from_secs(10)).is_some(), "the peer never received a batch");

    drop(peer);
    let failing = std::net::TcpListener::bind(addr).unwrap();
    failing.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut attempts = vec![start];
    while start.elapsed() < Duration::from_secs(6) {
        match failing.accept() {
            // Dropped at once: the sender's stream breaks.
            Ok(_) => attempts.push(Instant::now()),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    attempts.push(Instant::now());
    drop(failing);
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    eprintln!("{} attempts in 6 s, longest gap {longest:?}", attempts.len() - 2);
    assert!(longest < Duration::from_millis(1500), "a gap of {longest:?} between attempts: {gaps:?}");

    let (_peer, got) = start_peer(addr);
    let took =
        wait_for_batches(&got, Duration::from_secs(20)).expect("never reconnected to the restarted peer");
    eprintln!("reconnected {took:?} after the peer restarted");
    assert!(took < Duration::from_secs(3), "reconnected only {took:?} after the peer restarted");
    stop.cancel();
}

/// A node whose connection to a peer waits out a 60 s backoff reconnects at once when the peer opens a
/// stream to the node's Raft service: the service tells the node's transport.
#[test]
fn a_stream_from_a_peer_ends_the_backoff_toward_it() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let _guard = rt.enter();
    let stop = CancellationToken::new();

    // Node A: a NodeHost with the gRPC transport and the server, as `drakkar serve` runs them.
    let dir = tempfile::tempdir().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let a = listener.local_addr().unwrap().to_string();
    let slow = TransportConfig {
        min_backoff: Duration::from_secs(60),
        max_backoff: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    let ta = GrpcTransport::new(rt.handle().clone(), None, slow, stop.clone());
    let host = NodeHost::new(NodeHostConfig::new(dir.path(), a.clone()), Arc::new(ta.clone())).unwrap();
    ta.set_local(host.sink());
    let state = ServerState::new(host.clone(), dir.path().to_path_buf(), ServerConfig::default(), None);
    rt.spawn(drakkar_server::serve(state, listener, stop.clone()));

    // A sends to peer B, which is down: the first attempt is refused, then A waits 60 s.
    let b = free_port();
    keep_sending(&rt, &ta, &a, b, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let (_peer, got) = start_peer(b);
    assert!(
        wait_for_batches(&got, Duration::from_millis(700)).is_none(),
        "A reconnected during its backoff: the test proves nothing"
    );

    // B opens a stream to A (an empty batch: nothing for A's groups).
    let tb = GrpcTransport::new(rt.handle().clone(), None, TransportConfig::default(), stop.clone());
    tb.send(
        &a,
        MessageBatch { from: b.to_string(), incarnation: 9, messages: Vec::new(), reused: Vec::new() },
    );
    let took = wait_for_batches(&got, Duration::from_secs(10)).expect("A did not reconnect to B");
    eprintln!("A reconnected {took:?} after B's stream");
    stop.cancel();
    host.close();
}
