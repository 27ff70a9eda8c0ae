//! Hostile requests get the codes docs/api.md promises (the "Hostile input" issue, findings 5 and 7): a
//! body that does not decode, a truncated or missing message is INVALID_ARGUMENT (never INTERNAL); a
//! request past its deadline is DEADLINE_EXCEEDED (never CANCELLED); an address that is not `host:port`
//! never enters a membership, over gRPC or through the NodeHost. The node keeps serving throughout.

mod hostile_support;

use std::time::Duration;

use bytes::Bytes;
use drakkar::{MembershipChange, NodeError};
use drakkar_client::pb::{self, admin_client::AdminClient, kv_client::KvClient};
use drakkar_client::{REASON_HEADER, reason};
use drakkar_raft::{MemberRole, ReplicaId};
use drakkar_server::ServerConfig;
use hostile_support::{G, Nodes, frame, raw_http, raw_unary};
use prost::Message;
use tonic::Code;

const PUT: &str = "/drakkar.v1.Kv/Put";

fn valid_put() -> Vec<u8> {
    pb::PutRequest { group: 1, key: "key".into(), value: "value-1".into(), session: None }.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_invalid_argument_and_the_node_keeps_serving() {
    let nodes = Nodes::start(1, ServerConfig::default()).await;
    nodes.leader().await;
    let n = &nodes.nodes[0];
    let ch = n.channel();
    let valid = valid_put();
    raw_unary(ch.clone(), PUT, valid.clone().into()).await.expect("the valid body is accepted");

    // Bodies that are not protobuf.
    let mut long_varint = vec![0x08];
    long_varint.extend_from_slice(&[0xff; 10]);
    long_varint.push(0x01);
    let hand_made: Vec<(&str, Vec<u8>)> = vec![
        ("a length past the end", vec![0x08, 1, 0x12, 0x05, b'a']),
        ("wire type 7", vec![0x08, 1, 0x0f]),
        ("an 11-byte varint", long_varint),
        ("an unclosed group", vec![0x08, 1, 0x0b]),
        ("field number 0", vec![0x02, 0x00]),
        ("the key as a varint", vec![0x08, 1, 0x10, 1]),
        ("a truncated value", valid[..valid.len() - 2].to_vec()),
    ];
    for (what, body) in hand_made {
        let e = raw_unary(ch.clone(), PUT, body.into()).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert_eq!(e.metadata().get(REASON_HEADER).map(|v| v.to_str().unwrap()), Some(reason::INVALID));
    }

    // Every truncation and every single-bit flip of a valid body: accepted, or refused as the caller's
    // fault (a flipped group id names a group nobody runs), never INTERNAL or UNKNOWN.
    let mut variants: Vec<(String, Vec<u8>)> =
        (0..valid.len()).map(|n| (format!("the first {n} bytes"), valid[..n].to_vec())).collect();
    for bit in 0..valid.len() * 8 {
        let mut b = valid.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        variants.push((format!("bit {bit} flipped"), b));
    }
    for (what, body) in variants {
        match raw_unary(ch.clone(), PUT, body.into()).await {
            Ok(_) => {}
            Err(e) => assert!(
                matches!(e.code(), Code::InvalidArgument | Code::NotFound),
                "{what}: {:?} {}",
                e.code(),
                e.message()
            ),
        }
    }

    // The gRPC framing: a message cut short, a header alone, no message at all.
    let whole = frame(&valid);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a truncated message", whole[..whole.len() - 4].to_vec()),
        ("a frame header without its message", whole[..5].to_vec()),
        ("half a frame header", whole[..3].to_vec()),
        ("no message", Vec::new()),
    ];
    for (what, body) in cases {
        let s = raw_http(ch.clone(), PUT, body).await;
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
    }
    // The same frame whole is served.
    assert_eq!(raw_http(ch.clone(), PUT, whole).await.code(), Code::Ok);

    let client = n.client();
    client.put(1, "after", "ok").await.expect("the node still serves");
    let got = client.get(1, "after", pb::Consistency::Linearizable).await.expect("get");
    assert_eq!(got.map(|kv| kv.value), Some(Bytes::from("ok")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_deadline_exceeded() {
    // A peer that accepts connections and never answers: forwarding a request to it outlasts the
    // request's deadline (the forwarder's connection keepalive gives up only after 1.5 s).
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hole = blackhole.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = blackhole.accept().await {
            held.push(s);
        }
    });
    let cfg = ServerConfig { peers: vec![hole], ..ServerConfig::default() };
    let nodes = Nodes::start(1, cfg).await;
    nodes.leader().await;
    let mut kv = KvClient::new(nodes.nodes[0].channel());
    for _ in 0..3 {
        let mut req = tonic::Request::new(pb::GetRequest { group: 99, key: "k".into(), consistency: 0 });
        req.set_timeout(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let e = kv.get(req).await.expect_err("no node answers for group 99");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?} after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    }
}

/// Addresses a membership must never record.
fn bad_addresses() -> Vec<(&'static str, String)> {
    vec![
        ("no port", "node-9".into()),
        ("a space", "node 9:7000".into()),
        ("non-ASCII", "nöde-9:7000".into()),
        ("64 KiB", format!("{}:7000", "a".repeat(64 << 10))),
        ("port 99999", "node-9:99999".into()),
        ("port 0", "node-9:0".into()),
        ("a scheme", "http://node-9:7000".into()),
        ("a bare IPv6 address", "::1:7000".into()),
        ("empty", String::new()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_member_addresses_never_enter_the_membership() {
    let nodes = Nodes::start(1, ServerConfig::default()).await;
    nodes.leader().await;
    let n = &nodes.nodes[0];
    let mut admin = AdminClient::new(n.channel());
    n.client().put(1, "k", "v").await.expect("put");
    let before = (
        n.host.replica_info(G).map(|i| i.applied).expect("applied"),
        n.host.membership(G).expect("membership"),
    );

    for (what, address) in bad_addresses() {
        // Over gRPC: AddReplica.
        let req = pb::AddReplicaRequest {
            group: 1,
            replica: 9,
            address: address.clone(),
            role: pb::Role::NonVoter as i32,
            expected_conf_index: 0,
        };
        let e = admin.add_replica(req).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(
            e.message().len() < 1024,
            "{what}: the message echoes the address: {} bytes",
            e.message().len()
        );
        // StartGroup's founding members.
        let members = vec![
            pb::Member { replica: 1, address: n.addr.clone(), role: 0 },
            pb::Member { replica: 2, address: address.clone(), role: 0 },
        ];
        let req =
            pb::StartGroupRequest { group: 2, replica: 1, initial_members: members, join: false, kind: 0 };
        let e = admin.start_group(req).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        // ImportSnapshot's members (refused before any data is read).
        let target = pb::ImportSnapshotTarget {
            group: 3,
            replica: 1,
            members: vec![
                pb::Member { replica: 1, address: n.addr.clone(), role: 0 },
                pb::Member { replica: 2, address: address.clone(), role: 0 },
            ],
        };
        let first = pb::ImportSnapshotChunk { target: Some(target), data: Bytes::new() };
        let e = admin.import_snapshot(tokio_stream::iter(vec![first])).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        // A library caller of the NodeHost.
        let add = MembershipChange::Add {
            replica: ReplicaId(9),
            address: address.clone(),
            role: MemberRole::NonVoter,
        };
        let r = n.host.change_membership(G, add, 0).map(|_| ());
        assert!(matches!(r, Err(NodeError::InvalidArgument(_))), "{what}: {r:?}");
    }

    // Nothing entered the log, no group was started.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = (
        n.host.replica_info(G).map(|i| i.applied).expect("applied"),
        n.host.membership(G).expect("membership"),
    );
    assert_eq!(after.0, before.0, "something entered the log");
    assert_eq!(after.1.conf_index, before.1.conf_index);
    assert_eq!(after.1.addresses, before.1.addresses);
    assert_eq!(n.host.groups(), vec![G]);

    // A group nobody runs is still NOT_FOUND (not INTERNAL "invalid URI" from a stored garbage address).
    let e = KvClient::new(n.channel())
        .get(pb::GetRequest { group: 77, key: "k".into(), consistency: 0 })
        .await
        .expect_err("group 77");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // A good address is accepted: IPv6 literal, DNS name.
    for (id, address) in [(9, "[::1]:7009"), (10, "node-10.drakkar.svc:7000")] {
        let req = pb::AddReplicaRequest {
            group: 1,
            replica: id,
            address: address.into(),
            role: pb::Role::NonVoter as i32,
            expected_conf_index: 0,
        };
        let m = admin.add_replica(req).await.expect(address).into_inner();
        assert!(m.members.iter().any(|x| x.replica == id && x.address == address), "{m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_the_request_byte_budget_is_busy_and_the_node_keeps_serving() {
    let cfg = ServerConfig { max_in_flight_bytes: 1 << 20, ..ServerConfig::default() };
    let nodes = Nodes::start(1, cfg).await;
    nodes.leader().await;
    let n = &nodes.nodes[0];
    let ch = n.channel();
    let big = pb::PutRequest { group: 1, key: "big".into(), value: vec![7u8; 2 << 20].into(), session: None };
    let e = raw_unary(ch.clone(), PUT, big.encode_to_vec().into()).await.expect_err("past the budget");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(e.metadata().get(REASON_HEADER).map(|v| v.to_str().unwrap()), Some(reason::BUSY));
    // Within the budget, and after the refusal, requests are served; the refusal is counted.
    raw_unary(ch.clone(), PUT, valid_put().into()).await.expect("a small put is served");
    let small =
        pb::PutRequest { group: 1, key: "k".into(), value: vec![1u8; 512 << 10].into(), session: None };
    raw_unary(ch, PUT, small.encode_to_vec().into()).await.expect("half the budget is served");
    assert!(n.state.request_bytes().metrics_text().contains("drakkar_request_bytes_refused_total 1"));
    assert_eq!(n.state.request_bytes().available(), 1 << 20, "every share was given back");
}
