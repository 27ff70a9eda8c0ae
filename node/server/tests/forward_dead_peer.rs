//! Forwarding skips a node whose connection went silent within the peer keepalive (about 1.5 s), and
//! tries the next candidate within the request's deadline, well before the client's own keepalive
//! (20 s) would notice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drakkar::transport::InProcessNetwork;
use drakkar::{NodeHost, NodeHostConfig};
use drakkar_client::connect::Connector;
use drakkar_raft::GroupId;
use drakkar_server::forward::Forwarder;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_candidate_is_skipped_within_the_keepalive() {
    // A node that accepts connections and then says nothing (frozen, or behind a partition that let the
    // handshake through).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    // A node that answers.
    let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good_addr = good.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(good)),
    );

    let dir = tempfile::tempdir().unwrap();
    let host =
        NodeHost::new(NodeHostConfig::new(dir.path(), "127.0.0.1:1"), Arc::new(InProcessNetwork::new()))
            .unwrap();
    // The silent node first: forwarding tries it before the good one.
    let fwd = Forwarder::new(
        Connector::new(None, Duration::from_secs(3)),
        vec![silent_addr.to_string(), good_addr.to_string()],
    );
    let start = Instant::now();
    let r = fwd
        .forward(&host, GroupId(1), |ch| async move {
            HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await
        })
        .await;
    let took = start.elapsed();
    eprintln!("answered after {took:?}: {r:?}");
    assert!(r.is_ok(), "the good node was not reached: {r:?}");
    // Expected: about 1.5 s (a PING after 500 ms of silence, unanswered for 1 s).
    assert!(took < Duration::from_secs(6), "the silent node held the request for {took:?}");
    let _ = tokio::task::spawn_blocking(move || host.close()).await;
}

/// When the only candidates cannot be reached, the group may well run there (a cluster restarting):
/// the answer is UNAVAILABLE, which clients retry, not NOT_FOUND `group-not-found`, which says the group
/// exists nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_candidates_make_the_answer_unavailable_not_not_found() {
    // Ports nothing listens on: connections are refused.
    let refused: Vec<String> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let host =
        NodeHost::new(NodeHostConfig::new(dir.path(), "127.0.0.1:1"), Arc::new(InProcessNetwork::new()))
            .unwrap();
    let fwd = Forwarder::new(Connector::new(None, Duration::from_secs(3)), refused);
    let r = fwd
        .forward(&host, GroupId(1), |ch| async move {
            HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await
        })
        .await;
    let status = r.expect_err("nothing answers");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(!status.metadata().contains_key("drakkar-reason"), "{status:?}");
    let _ = tokio::task::spawn_blocking(move || host.close()).await;
}
