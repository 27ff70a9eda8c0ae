//! Every RPC a node serves (the `rpc` lines of node/client/proto/drakkar/v1 and node/server/proto, plus `grpc.health.v1` and
//! server reflection), each with valid seed requests to mutate and what the suite must never send it.
//!
//! Group 1 is the playground of hostile writes; group 2 holds the acknowledged writes the suite verifies.
//! A hostile body is not sent when it *decodes* to a request that is allowed to change group 2 or the
//! membership of a running group (a valid admin command is a matter of authorization, not of hostile
//! input): such bodies are counted as skipped.

use bytes::Bytes;
use drakkar_client::pb;
use drakkar_server::peer::pb as peer;
use prost::Message;

/// The group of hostile writes.
pub const PLAYGROUND: u64 = 1;
/// The group of the acknowledged writes.
pub const PROTECTED: u64 = 2;
/// A Raft sender address no member has (a node certificate for 127.0.0.1 is valid for it).
pub const STRANGER: &str = "127.0.0.1:1";

/// How an RPC carries its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One request, one answer.
    Unary,
    /// One request, a stream of answers.
    ServerStream,
    /// A stream of requests, one answer.
    ClientStream,
    /// Streams both ways.
    Bidi,
}

/// One RPC.
pub struct Method {
    /// The HTTP/2 path, `/package.Service/Method`.
    pub path: &'static str,
    pub shape: Shape,
    /// Valid request messages (for a client stream: the first message; `follow` are the next ones). A
    /// never-ending client stream sends the first seed, then nothing.
    pub seeds: Vec<Vec<u8>>,
    /// Valid messages after the first of a client stream.
    pub follow: Vec<Vec<u8>>,
    /// Fields holding bytes or strings (at any depth of the seed: the top-level numbers).
    pub bytes_fields: &'static [u32],
    /// Repeated fields: (number, count limit, varints).
    pub repeated: &'static [(u32, usize, bool)],
    /// Whether a body that decodes as this request may be sent (see the module doc).
    pub may_send: fn(&[u8]) -> bool,
    /// A `drakkar.v1` service (the Raft service included): its status codes are the documented ones
    /// (docs/api.md).
    pub documented: bool,
    /// A stream open by design for as long as its client wants (no server deadline to check).
    pub long_lived: bool,
    /// Needs a node certificate (the Raft service).
    pub raft: bool,
}

fn enc<M: Message>(m: M) -> Vec<u8> {
    m.encode_to_vec()
}

fn any(_: &[u8]) -> bool {
    true
}

/// A body that does not decode as `M` is always sent; one that does, when `ok` says so. Decoded as the
/// node decodes it (bounded: a million empty elements would cost this client hundreds of MB and seconds
/// of CPU, stalling its connections past the node's 1 s keepalive).
fn decoded<M: Message + Default + 'static>(b: &[u8], ok: impl Fn(&M) -> bool) -> bool {
    drakkar_client::codec::decode::<M>(b).map_or(true, |m| ok(&m))
}

fn not_protected(group: u64) -> bool {
    group != PROTECTED
}

fn not_running(group: u64) -> bool {
    group != PLAYGROUND && group != PROTECTED
}

fn member(replica: u64, address: &str) -> pb::Member {
    pb::Member { replica, address: address.into(), role: pb::Role::Voter as i32 }
}

fn raft_message(group: u64) -> peer::GroupMessage {
    peer::GroupMessage {
        group,
        message: Some(peer::RaftMessage {
            kind: peer::MessageKind::Append as i32,
            from: 1,
            to: 2,
            term: 1_000_000,
            log_term: 7,
            index: 3,
            entries: vec![peer::RaftEntry { term: 1_000_000, index: 4, kind: 0, data: Bytes::from("x") }; 3],
            commit: 4,
            ..Default::default()
        }),
    }
}

fn snapshot_header(group: u64, size: u64) -> peer::RaftSnapshotChunk {
    let membership = peer::RaftMembership { voters: vec![1, 2, 3], ..Default::default() };
    let snap = peer::RaftSnapshot { index: 100, term: 9, membership: Some(membership), data: Bytes::new() };
    let msg = peer::RaftMessage {
        kind: peer::MessageKind::Snapshot as i32,
        from: 1,
        to: 2,
        term: 9,
        snapshot: Some(snap),
        ..Default::default()
    };
    peer::RaftSnapshotChunk {
        part: Some(peer::raft_snapshot_chunk::Part::Header(peer::RaftSnapshotHeader {
            from: STRANGER.into(),
            group,
            message: Some(msg),
            size,
            ..Default::default()
        })),
    }
}

/// A unary `drakkar.v1` method (the other kinds are built from it).
fn unary(
    path: &'static str,
    seeds: Vec<Vec<u8>>,
    bytes_fields: &'static [u32],
    may_send: fn(&[u8]) -> bool,
) -> Method {
    Method {
        path,
        shape: Shape::Unary,
        seeds,
        follow: Vec::new(),
        bytes_fields,
        repeated: &[],
        may_send,
        documented: true,
        long_lived: false,
        raft: false,
    }
}

/// Every RPC of every service.
pub fn all() -> Vec<Method> {
    use pb::Consistency::{Linearizable, Stale};
    let key = |k: &str| Bytes::from(k.to_string());
    let range = pb::KeyRange { kind: Some(pb::key_range::Kind::Prefix(key("hostile/"))) };
    let session = Some(pb::SessionRef { client_id: 77, series: 1, responded_to: 0 });
    let put = |g, k: &str| pb::PutRequest { group: g, key: key(k), value: key("v"), session: None };
    let txn = pb::TxnRequest {
        group: PLAYGROUND,
        compares: vec![pb::Compare {
            key: key("hostile/t"),
            op: 0,
            target: Some(pb::compare::Target::Version(0)),
        }],
        success: vec![pb::TxnOp {
            op: Some(pb::txn_op::Op::Put(pb::PutOp { key: key("hostile/t"), value: key("1") })),
        }],
        failure: vec![pb::TxnOp { op: Some(pb::txn_op::Op::Get(key("hostile/t"))) }],
        session: None,
    };
    let import_target = |group, members| pb::ImportSnapshotChunk {
        target: Some(pb::ImportSnapshotTarget { group, replica: 1, members }),
        data: Bytes::from(vec![0x5a; 64]),
    };
    vec![
        Method {
            repeated: &[],
            ..unary(
                "/drakkar.v1.Kv/Put",
                vec![
                    enc(put(PLAYGROUND, "hostile/p")),
                    enc(pb::PutRequest { session, ..put(1, "hostile/s") }),
                ],
                &[2, 3],
                |b| decoded(b, |m: &pb::PutRequest| not_protected(m.group)),
            )
        },
        unary(
            "/drakkar.v1.Kv/Get",
            vec![
                enc(pb::GetRequest {
                    group: PLAYGROUND,
                    key: key("hostile/p"),
                    consistency: Linearizable as i32,
                }),
                enc(pb::GetRequest { group: PROTECTED, key: key("ack/1"), consistency: Stale as i32 }),
            ],
            &[2],
            any,
        ),
        unary(
            "/drakkar.v1.Kv/Delete",
            vec![enc(pb::DeleteRequest { group: PLAYGROUND, key: key("hostile/p"), session: None })],
            &[2],
            |b| decoded(b, |m: &pb::DeleteRequest| not_protected(m.group)),
        ),
        unary(
            "/drakkar.v1.Kv/DeleteRange",
            vec![enc(pb::DeleteRangeRequest {
                group: PLAYGROUND,
                range: Some(range.clone()),
                session: None,
            })],
            &[2],
            |b| decoded(b, |m: &pb::DeleteRangeRequest| not_protected(m.group)),
        ),
        unary(
            "/drakkar.v1.Kv/Scan",
            vec![
                enc(pb::ScanRequest {
                    group: PLAYGROUND,
                    range: Some(range.clone()),
                    limit: 10,
                    keys_only: false,
                    consistency: 0,
                }),
                enc(pb::ScanRequest {
                    group: PROTECTED,
                    range: Some(range),
                    limit: 0,
                    keys_only: true,
                    consistency: 1,
                }),
            ],
            &[2],
            any,
        ),
        unary(
            "/drakkar.v1.Kv/CompareAndSwap",
            vec![enc(pb::CompareAndSwapRequest {
                group: PLAYGROUND,
                key: key("hostile/c"),
                expected: Some(pb::compare_and_swap_request::Expected::ExpectedAbsent(true)),
                new: Some(pb::compare_and_swap_request::New::PutValue(key("c"))),
                session: None,
            })],
            &[2, 3, 6],
            |b| decoded(b, |m: &pb::CompareAndSwapRequest| not_protected(m.group)),
        ),
        Method {
            repeated: &[(2, 256, false), (3, 1024, false), (4, 1024, false)],
            ..unary("/drakkar.v1.Kv/Txn", vec![enc(txn)], &[], |b| {
                decoded(b, |m: &pb::TxnRequest| not_protected(m.group))
            })
        },
        unary(
            "/drakkar.v1.StateMachine/Propose",
            vec![enc(pb::ProposeRequest {
                group: PLAYGROUND,
                command: key("\x01garbage command"),
                session: None,
            })],
            &[2],
            |b| decoded(b, |m: &pb::ProposeRequest| not_protected(m.group)),
        ),
        unary(
            "/drakkar.v1.StateMachine/Read",
            vec![enc(pb::ReadRequest { group: PLAYGROUND, query: key("\x02garbage query"), consistency: 0 })],
            &[2],
            any,
        ),
        unary(
            "/drakkar.v1.Session/OpenSession",
            vec![enc(pb::OpenSessionRequest { group: PLAYGROUND, client_id: 0 })],
            &[],
            |b| decoded(b, |m: &pb::OpenSessionRequest| not_protected(m.group)),
        ),
        unary(
            "/drakkar.v1.Session/CloseSession",
            vec![enc(pb::CloseSessionRequest { group: PLAYGROUND, client_id: 12345 })],
            &[],
            |b| decoded(b, |m: &pb::CloseSessionRequest| not_protected(m.group)),
        ),
        unary(
            "/drakkar.v1.Session/ProposeInSession",
            vec![enc(pb::ProposeInSessionRequest {
                group: PLAYGROUND,
                session: Some(pb::SessionRef { client_id: 12345, series: 1, responded_to: 0 }),
                command: key("command"),
            })],
            &[3],
            |b| decoded(b, |m: &pb::ProposeInSessionRequest| not_protected(m.group)),
        ),
        unary(
            "/drakkar.v1.Admin/AddReplica",
            vec![enc(pb::AddReplicaRequest {
                group: 500,
                replica: 9,
                address: "127.0.0.1:7009".into(),
                role: pb::Role::NonVoter as i32,
                expected_conf_index: 0,
            })],
            &[3],
            |b| decoded(b, |m: &pb::AddReplicaRequest| not_running(m.group)),
        ),
        unary(
            "/drakkar.v1.Admin/PromoteReplica",
            vec![enc(pb::PromoteReplicaRequest { group: 500, replica: 9, expected_conf_index: 0 })],
            &[],
            |b| decoded(b, |m: &pb::PromoteReplicaRequest| not_running(m.group)),
        ),
        unary(
            "/drakkar.v1.Admin/RemoveReplica",
            vec![enc(pb::RemoveReplicaRequest { group: 500, replica: 9, expected_conf_index: 0 })],
            &[],
            |b| decoded(b, |m: &pb::RemoveReplicaRequest| not_running(m.group)),
        ),
        unary(
            "/drakkar.v1.Admin/TransferLeader",
            vec![enc(pb::TransferLeaderRequest { group: 500, to: 2 })],
            &[],
            |b| decoded(b, |m: &pb::TransferLeaderRequest| not_running(m.group)),
        ),
        unary(
            "/drakkar.v1.Admin/GetMembership",
            vec![enc(pb::GetMembershipRequest { group: PLAYGROUND })],
            &[],
            any,
        ),
        unary("/drakkar.v1.Admin/Status", vec![enc(pb::StatusRequest {})], &[], any),
        Method {
            shape: Shape::ServerStream,
            ..unary(
                "/drakkar.v1.Admin/ExportSnapshot",
                vec![enc(pb::ExportSnapshotRequest { group: PLAYGROUND })],
                &[],
                any,
            )
        },
        Method {
            shape: Shape::ClientStream,
            follow: vec![enc(pb::ImportSnapshotChunk { target: None, data: Bytes::from(vec![0xa5; 4096]) })],
            repeated: &[],
            ..unary(
                "/drakkar.v1.Admin/ImportSnapshot",
                // The first: a valid target (a stream that stops after it waits for its data).
                vec![
                    enc(import_target(500, vec![member(1, "127.0.0.1:7001")])),
                    enc(import_target(
                        PLAYGROUND,
                        vec![member(1, "127.0.0.1:7001"), member(2, "no address")],
                    )),
                ],
                &[2],
                |b| {
                    decoded(b, |m: &pb::ImportSnapshotChunk| {
                        m.target.as_ref().is_none_or(|t| t.group != PROTECTED)
                    })
                },
            )
        },
        Method {
            repeated: &[(3, 1024, false)],
            ..unary(
                "/drakkar.v1.Admin/StartGroup",
                vec![enc(pb::StartGroupRequest {
                    group: 500,
                    replica: 1,
                    initial_members: vec![member(1, "127.0.0.1:7001"), member(2, "not an address")],
                    join: false,
                    kind: 0,
                })],
                &[],
                |b| decoded(b, |m: &pb::StartGroupRequest| not_running(m.group)),
            )
        },
        unary(
            "/drakkar.v1.Admin/StopGroup",
            vec![enc(pb::StopGroupRequest { group: 500, remove_data: true })],
            &[],
            |b| decoded(b, |m: &pb::StopGroupRequest| not_running(m.group)),
        ),
        unary("/drakkar.v1.Admin/NodeInfo", vec![enc(pb::NodeInfoRequest {})], &[], any),
        Method {
            shape: Shape::ClientStream,
            follow: vec![enc(peer::RaftBatch {
                from: STRANGER.into(),
                messages: vec![raft_message(PROTECTED)],
                ..Default::default()
            })],
            repeated: &[(4, usize::MAX, false), (5, usize::MAX, false)],
            long_lived: true,
            raft: true,
            ..unary(
                "/drakkar.v1.Raft/SendMessages",
                vec![enc(peer::RaftBatch {
                    from: STRANGER.into(),
                    incarnation_hi: 1,
                    incarnation_lo: 2,
                    messages: vec![raft_message(PLAYGROUND), raft_message(PROTECTED), raft_message(u64::MAX)],
                    reused: vec![peer::GroupReplica { group: PROTECTED, replica: 1 }],
                })],
                &[1],
                any,
            )
        },
        Method {
            shape: Shape::ClientStream,
            follow: vec![enc(peer::RaftSnapshotChunk {
                part: Some(peer::raft_snapshot_chunk::Part::Data(Bytes::from(vec![7u8; 1000]))),
            })],
            raft: true,
            ..unary(
                "/drakkar.v1.Raft/SendSnapshot",
                vec![enc(snapshot_header(PROTECTED, 2000)), enc(snapshot_header(3, 0))],
                &[2],
                any,
            )
        },
        Method {
            documented: false,
            ..unary(
                "/grpc.health.v1.Health/Check",
                vec![
                    enc(tonic_health::pb::HealthCheckRequest { service: String::new() }),
                    enc(tonic_health::pb::HealthCheckRequest { service: "drakkar.v1.Kv".into() }),
                ],
                &[1],
                any,
            )
        },
        Method {
            shape: Shape::ServerStream,
            documented: false,
            long_lived: true,
            ..unary(
                "/grpc.health.v1.Health/Watch",
                vec![enc(tonic_health::pb::HealthCheckRequest { service: "drakkar.v1.Kv".into() })],
                &[1],
                any,
            )
        },
        Method {
            shape: Shape::Bidi,
            documented: false,
            long_lived: true,
            ..unary(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                vec![reflection_list(), reflection_symbol("drakkar.v1.Kv")],
                &[1, 4],
                any,
            )
        },
    ]
}

/// `ServerReflectionRequest { list_services: "" }` (field 7).
fn reflection_list() -> Vec<u8> {
    vec![0x3a, 0x00]
}

/// `ServerReflectionRequest { file_containing_symbol: symbol }` (field 4).
fn reflection_symbol(symbol: &str) -> Vec<u8> {
    let mut b = Vec::new();
    super::mutate::ld(4, symbol.as_bytes(), &mut b);
    b
}
