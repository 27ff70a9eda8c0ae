//! One small request never costs gigabytes (the "Hostile input" issue, finding 2): a `Kv/Txn` of millions
//! of empty operations or compares, sent over a real gRPC connection, is refused with INVALID_ARGUMENT
//! before prost materialises its elements, and the process's peak memory stays near the request's size.
//! Then the largest legitimate requests are measured (the figures docs/api.md quotes).
//!
//! One test in its own binary: the peak (`VmHWM`) is the whole process's.

mod hostile_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use drakkar_client::pb;
use drakkar_server::ServerConfig;
use hostile_support::{MB, Nodes, proc_status, raw_unary, reset_peak};
use tonic::Code;

/// A TxnRequest for group 1 whose field `field` holds `n` empty elements (2 bytes each on the wire).
fn empty_elements(field: u8, n: usize) -> Bytes {
    let mut b = vec![0x08, 1];
    b.reserve(2 * n);
    for _ in 0..n {
        b.extend_from_slice(&[field << 3 | 2, 0]);
    }
    Bytes::from(b)
}

/// Runs `f`, returns its output and how far the process's peak memory rose above its memory before.
async fn peak_growth<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    reset_peak();
    let before = proc_status("VmRSS:");
    let out = f.await;
    (out, proc_status("VmHWM:").saturating_sub(before))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_counts_of_empty_elements_are_refused_before_decoding() {
    let nodes = Nodes::start(1, ServerConfig::default()).await;
    nodes.leader().await;
    let n = &nodes.nodes[0];
    let client = n.client();
    client.put(1, "warm", "up").await.expect("put");
    let ch = n.channel();
    let txn = "/drakkar.v1.Kv/Txn";

    // 5,000,000 empty success operations (10 MB on the wire), then 5,000,000 empty compares.
    for (what, field) in [("operations", 3u8), ("compares", 2u8)] {
        let body = empty_elements(field, 5_000_000);
        let wire = body.len() as u64;
        let started = Instant::now();
        let (r, growth) = peak_growth(raw_unary(ch.clone(), txn, body)).await;
        let e = r.expect_err("refused");
        println!(
            "5,000,000 empty {what} ({} MB): {:?} in {:?}, peak memory +{} MB",
            wire / MB,
            e.code(),
            started.elapsed(),
            growth / MB
        );
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(growth < 200 * MB, "the process's peak memory rose by {} MB", growth / MB);
    }

    // Three at once (the finding: 3.7 GB and 2 s latency for other clients).
    let (results, growth) = peak_growth(async {
        let calls: Vec<_> =
            (0..3).map(|_| tokio::spawn(raw_unary(ch.clone(), txn, empty_elements(3, 10_000_000)))).collect();
        let started = Instant::now();
        let got = client.get(1, "warm", pb::Consistency::Linearizable).await;
        let latency = started.elapsed();
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.expect("task"));
        }
        (out, got, latency)
    })
    .await;
    let (refused, got, latency) = results;
    println!(
        "3 x 10,000,000 empty operations at once: peak memory +{} MB; a read meanwhile took {latency:?}",
        growth / MB
    );
    for r in refused {
        assert_eq!(r.expect_err("refused").code(), Code::InvalidArgument);
    }
    assert_eq!(got.expect("get").map(|kv| kv.value), Some(Bytes::from("up")));
    assert!(growth < 300 * MB, "the process's peak memory rose by {} MB", growth / MB);
    assert!(latency < Duration::from_secs(1), "a read waited {latency:?}");

    // The largest legitimate requests, measured: a 32 MiB value, and a transaction of 1,024 puts filling
    // the 40 MiB message limit. The figures include this test's client, which encodes the request in the
    // same process (about one more copy of it).
    let big = Bytes::from(vec![7u8; 32 << 20]);
    let (r, growth) = peak_growth(client.put(1, "big", big)).await;
    r.expect("32 MiB put");
    println!("a 32 MiB put: peak memory +{} MB", growth / MB);
    let value = vec![9u8; (39 << 20) / 1024];
    let success = (0..1024)
        .map(|i| pb::TxnOp {
            op: Some(pb::txn_op::Op::Put(pb::PutOp {
                key: format!("t{i:04}").into(),
                value: value.clone().into(),
            })),
        })
        .collect();
    let req = pb::TxnRequest { group: 1, success, ..Default::default() };
    let mut kv = pb::kv_client::KvClient::new(ch.clone()).max_decoding_message_size(64 << 20);
    let (r, growth) = peak_growth(kv.txn(req)).await;
    assert!(r.expect("39 MiB transaction").into_inner().succeeded);
    println!("a 39 MiB transaction of 1,024 puts: peak memory +{} MB", growth / MB);
    // Data stays in the in-memory state machine and the log: a few times the wire size, never more.
    assert!(growth < 400 * MB, "the process's peak memory rose by {} MB", growth / MB);

    client.put(1, "after", "ok").await.expect("the node still serves");
}
