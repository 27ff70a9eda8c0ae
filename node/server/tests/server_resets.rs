//! A client that cancels many requests on one connection (deadlines hit in bulk) keeps its connection:
//! the server's reset-stream limits are set high on purpose (h2's default of 20 resets of streams not yet
//! picked up made the server answer GOAWAY `too_many_resets` to well-behaved clients).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use drakkar::transport::InProcessNetwork;
use drakkar::{NodeHost, NodeHostConfig};
use drakkar_client::connect::{self, Connector, KeepAlive};
use drakkar_server::{self, ServerConfig, ServerState};
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The node's connector, counting the connections it makes.
#[derive(Clone)]
struct Counting {
    inner: Connector,
    made: Arc<AtomicUsize>,
}

impl Service<Uri> for Counting {
    type Response = <Connector as Service<Uri>>::Response;
    type Error = io::Error;
    type Future = <Connector as Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.made.fetch_add(1, Ordering::SeqCst);
        self.inner.call(uri)
    }
}

/// One channel (one HTTP/2 connection at a time) to `addr`, and the count of connections it made.
fn channel(addr: SocketAddr) -> (Channel, Arc<AtomicUsize>) {
    let made = Arc::new(AtomicUsize::new(0));
    let c = Counting { inner: Connector::new(None, Duration::from_secs(5)), made: made.clone() };
    let ep = connect::endpoint(&addr.to_string(), KeepAlive::CLIENT).expect("endpoint");
    (ep.connect_with_connector_lazy(c), made)
}

async fn check(ch: &Channel) -> Result<(), tonic::Status> {
    let mut c = HealthClient::new(ch.clone());
    c.check(HealthCheckRequest { service: String::new() }).await.map(|_| ())
}

/// Starts `n` health checks at once on `ch` and cancels them all after `after` (most before their
/// answer).
async fn cancel_burst(ch: &Channel, n: usize, after: Duration) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let ch = ch.clone();
            tokio::spawn(async move { check(&ch).await })
        })
        .collect();
    tokio::time::sleep(after).await;
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Cancels 5,000 requests in bursts on one connection, and asserts the connection still serves. (How
/// many cancellations reach the server before it picked their streams up depends on timing: the bursts
/// vary the delay before cancelling, and are many, so that a server with h2's default limit of 20 fails
/// this nearly always.)
async fn survives_cancellations(addr: SocketAddr) -> Result<(), String> {
    let (ch, made) = channel(addr);
    check(&ch).await.map_err(|e| format!("first check: {e}"))?;
    for round in 0..10 {
        cancel_burst(&ch, 500, Duration::from_millis(round % 3)).await;
        check(&ch).await.map_err(|e| format!("check after burst {round}: {e}"))?;
    }
    match made.load(Ordering::SeqCst) {
        1 => Ok(()),
        n => Err(format!("the client had to connect {n} times: the server dropped the connection")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancelling_in_bulk_keeps_its_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let net = InProcessNetwork::new();
    let host = NodeHost::new(NodeHostConfig::new(dir.path(), addr.to_string()), Arc::new(net.clone()))
        .expect("NodeHost");
    net.register(&addr.to_string(), host.sink());
    let state = ServerState::new(host.clone(), dir.path().to_path_buf(), ServerConfig::default(), None);
    let stop = CancellationToken::new();
    let server = tokio::spawn(drakkar_server::serve(state, listener, stop.clone()));

    let r = survives_cancellations(addr).await;
    stop.cancel();
    let _ = server.await;
    let _ = tokio::task::spawn_blocking(move || host.close()).await;
    r.expect("the connection survived");
}
