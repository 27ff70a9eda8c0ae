//! Hostile Raft traffic over mutual TLS: a certificate from the cluster's CA is not enough to speak Raft
//! to a group. A node whose certificate is valid for an address that is no member of the group (a
//! decommissioned node, another cluster sharing the CA) gets nothing applied, grows no durable file,
//! creates no directory and stops no replica. Also: a snapshot stream cut by its deadline leaves no
//! partial file, and half-open connections do not lock a proper TLS client out.
//!
//! Every node here runs on 127.0.0.1 with a real gRPC transport and TLS; certificates come from a test
//! CA (rcgen), the intruder's for `intruder.test` (it never needs to resolve). One test runs on the
//! in-process network: refusing non-members must not strand a member that missed its leader's addition.

use drakkar_sim::harness as common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use drakkar::transport::MessageBatch;
use drakkar::{GroupConfig, MembershipChange, NodeHost, NodeHostConfig, StartMode};
use drakkar_client::connect::{self, Connector};
use drakkar_client::tls::{ClientTls, client_config};
use drakkar_kv::Command;
use drakkar_raft::{
    Entry, GroupId, LogIndex, MemberRole, Membership, Message, MessageKind, ReplicaId, Snapshot,
    SnapshotMeta, Term,
};
use drakkar_server::authz::Role;
use drakkar_server::peer::convert::{batch_to_pb, message_to_pb};
use drakkar_server::peer::pb::{self, raft_client::RaftClient};
use drakkar_server::peer::{GrpcTransport, TransportConfig};
use drakkar_server::tls::{ClientAuth, NodeTls, TlsFiles};
use drakkar_server::{self, KvKind, ServerConfig, ServerState};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const G: GroupId = GroupId(1);
const T: Duration = Duration::from_secs(10);
/// The address the intruder claims, and its certificate is valid for.
const INTRUDER: &str = "intruder.test:7000";

/// A test CA that issues node certificates (server and client usages) into a directory.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "admission test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = ca.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki { dir, issuer: Issuer::new(ca, key) }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues `name.pem` / `name-key.pem`, valid for `sans`: a node certificate (the peer role).
    fn issue(&self, name: &str, sans: &[&str]) -> TlsFiles {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.distinguished_name.push(DnType::OrganizationName, Role::Peer.organization());
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let (c, k) =
            (self.dir.path().join(format!("{name}.pem")), self.dir.path().join(format!("{name}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        TlsFiles { ca: self.ca(), cert: c, key: k, client_auth: ClientAuth::AllowAnonymous }
    }

    /// A client configuration trusting the CA, presenting `identity` if given.
    fn client(&self, identity: Option<&TlsFiles>) -> Arc<dyn ClientTls> {
        let ca = std::fs::read(self.ca()).unwrap();
        let id = identity.map(|f| (std::fs::read(&f.cert).unwrap(), std::fs::read(&f.key).unwrap()));
        let cfg = client_config(&ca, id.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()))).unwrap();
        Arc::new(Arc::new(cfg))
    }

    /// A channel to `addr` presenting `identity`.
    fn channel(&self, addr: &str, identity: Option<&TlsFiles>) -> Channel {
        connect::channel(addr, Connector::new(Some(self.client(identity)), Duration::from_secs(2))).unwrap()
    }
}

fn fast_group() -> GroupConfig {
    GroupConfig { election_ticks: 10, heartbeat_ticks: 1, snapshot_entries: 0, ..GroupConfig::default() }
}

/// A node serving gRPC with TLS on 127.0.0.1, with the gRPC transport.
struct Node {
    addr: String,
    dir: tempfile::TempDir,
    stop: CancellationToken,
    host: NodeHost,
    state: Arc<ServerState>,
}

impl Node {
    async fn start(pki: &Pki, name: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let tls = NodeTls::load(pki.issue(name, &["127.0.0.1", "localhost"])).unwrap();
        let stop = CancellationToken::new();
        let client_tls: Arc<dyn ClientTls> = tls.clone();
        let transport = GrpcTransport::new(
            tokio::runtime::Handle::current(),
            Some(client_tls),
            TransportConfig::default(),
            stop.clone(),
        );
        let mut hcfg = NodeHostConfig::new(dir.path(), addr.clone());
        hcfg.tick_interval = Duration::from_millis(10);
        let host = NodeHost::new(hcfg, Arc::new(transport.clone())).unwrap();
        transport.set_local(host.sink());
        let cfg = ServerConfig { group: fast_group(), ..ServerConfig::default() };
        let state = ServerState::new(host.clone(), dir.path().to_path_buf(), cfg, Some(tls));
        tokio::spawn(drakkar_server::serve(state.clone(), listener, stop.clone()));
        Node { addr, dir, stop, host, state }
    }

    /// A node running group 1 alone (replica 1, its leader).
    async fn alone(pki: &Pki) -> Node {
        let n = Node::start(pki, "node").await;
        let members = BTreeMap::from([(ReplicaId(1), n.addr.clone())]);
        n.state.start_kv_group(G, ReplicaId(1), StartMode::Founding(members), KvKind::Memory).unwrap();
        n.wait_leader().await;
        n
    }

    async fn wait_leader(&self) {
        let deadline = Instant::now() + T;
        while !matches!(self.host.leader(G), Ok(Some(_))) {
            assert!(Instant::now() < deadline, "no leader for group 1");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn peers_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("peers")).map_or(0, |s| s.lines().count())
    }

    fn snapshot_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The node's count of refused Raft traffic for `reason`.
    fn refused(&self, reason: &str) -> u64 {
        let key = format!("drakkar_raft_refused_total{{reason=\"{reason}\"}} ");
        let text = self.host.metrics_text();
        text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    /// Waits until at least `n` refusals for `reason` were counted.
    async fn wait_refused(&self, reason: &str, n: u64) {
        let deadline = Instant::now() + T;
        while self.refused(reason) < n {
            assert!(
                Instant::now() < deadline,
                "{reason}: {} refusals counted, {n} expected",
                self.refused(reason)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
        self.host.close();
    }
}

/// The intruder: a valid node certificate of the CA, for an address that is no member of any group.
struct Intruder {
    raft: RaftClient<Channel>,
}

impl Intruder {
    fn new(pki: &Pki, node: &Node) -> Intruder {
        let id = pki.issue("intruder", &["intruder.test"]);
        Intruder { raft: RaftClient::new(pki.channel(&node.addr, Some(&id))) }
    }

    /// Sends `batches` on one stream; the node must take the stream (the certificate is valid for
    /// [`INTRUDER`]), whatever it then does with the messages.
    async fn send(&mut self, batches: Vec<MessageBatch>) {
        let stream = tokio_stream::iter(batches.iter().map(batch_to_pb).collect::<Vec<_>>());
        let ack = self.raft.send_messages(stream).await.expect("the stream is taken");
        assert_eq!(ack.into_inner().batches, batches.len() as u64);
    }

    /// Sends a snapshot of `size` bytes for `group`; returns how the node answered.
    async fn snapshot(&mut self, group: GroupId, size: u64) -> Result<pb::RaftSnapshotAck, tonic::Status> {
        let header = snapshot_header(INTRUDER, group, ReplicaId(9), size);
        let chunks =
            vec![header, pb::RaftSnapshotChunk { part: Some(Part::Data(vec![0; size as usize].into())) }];
        self.raft.send_snapshot(tokio_stream::iter(chunks)).await.map(|r| r.into_inner())
    }
}

use pb::raft_snapshot_chunk::Part;

fn put(k: &str, v: &str) -> Bytes {
    Command::Put { key: Bytes::from(k.to_string()), value: Bytes::from(v.to_string()) }.encode().unwrap()
}

fn batch(messages: Vec<(GroupId, Message)>, reused: Vec<(GroupId, ReplicaId)>) -> MessageBatch {
    MessageBatch { from: INTRUDER.to_string(), incarnation: 0xbad, messages, reused }
}

fn heartbeat(group: GroupId, from: u64) -> (GroupId, Message) {
    (group, Message::new(MessageKind::Heartbeat, ReplicaId(from), ReplicaId(1), Term(1)))
}

/// The header of a snapshot stream from `from` (replica `replica`) for `group`, announcing `size` bytes.
fn snapshot_header(from: &str, group: GroupId, replica: ReplicaId, size: u64) -> pb::RaftSnapshotChunk {
    let mut m = Message::new(MessageKind::Snapshot, replica, ReplicaId(1), Term(50));
    m.snapshot = Some(Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(1000),
            term: Term(50),
            membership: Membership::with_voters([ReplicaId(1), replica]),
        },
        data: Bytes::from_static(b"snapshot"),
    });
    pb::RaftSnapshotChunk {
        part: Some(Part::Header(pb::RaftSnapshotHeader {
            from: from.to_string(),
            incarnation_hi: 0,
            incarnation_lo: 0xbad,
            group: group.0,
            message: message_to_pb(&m),
            size,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certified_non_member_cannot_propose() {
    let pki = Pki::new();
    let node = Node::alone(&pki).await;
    let before = node.host.replica_info(G).map(|i| i.applied).unwrap();
    let mut propose = Message::new(MessageKind::Propose, ReplicaId(2), ReplicaId(1), Term(0));
    propose.entries =
        (0..5).map(|_| Entry { data: Bytes::from_static(b"intruder"), ..Default::default() }).collect();
    let mut intruder = Intruder::new(&pki, &node);
    intruder.send(vec![batch(vec![(G, propose)], Vec::new())]).await;

    node.wait_refused("not_member", 1).await;
    // Had it been taken, the lone leader would have committed and applied it within milliseconds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        node.host.replica_info(G).map(|i| i.applied).unwrap(),
        before,
        "the intruder's entries were applied"
    );
    assert_eq!(node.peers_lines(), 0, "the intruder was recorded as a peer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_replica_ids_do_not_grow_the_peers_file() {
    let pki = Pki::new();
    let node = Node::alone(&pki).await;
    let lines = node.peers_lines();
    let mut intruder = Intruder::new(&pki, &node);
    let ids: Vec<u64> = (100..2100).collect();
    let batches = ids.chunks(100).map(|c| batch(c.iter().map(|&r| heartbeat(G, r)).collect(), Vec::new()));
    intruder.send(batches.collect()).await;

    node.wait_refused("not_member", ids.len() as u64).await;
    assert_eq!(node.peers_lines(), lines, "one fsynced line per invented replica id");
    assert!(matches!(node.host.leader(G), Ok(Some(_))), "the replica stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_for_groups_not_run_here_creates_nothing() {
    let pki = Pki::new();
    let node = Node::alone(&pki).await;
    let dirs = node.snapshot_dirs();
    assert_eq!(dirs, ["1"]);
    let mut intruder = Intruder::new(&pki, &node);
    let strange = [GroupId(0), GroupId(3), GroupId(u64::MAX)];
    intruder.send(vec![batch(strange.iter().map(|&g| heartbeat(g, 2)).collect(), Vec::new())]).await;
    for g in strange {
        let r = intruder.snapshot(g, 64).await;
        assert!(!matches!(&r, Ok(a) if a.accepted), "group {g:?}: snapshot accepted: {r:?}");
    }

    node.wait_refused("unknown_group", 6).await;
    assert_eq!(node.snapshot_dirs(), dirs, "a snapshot directory was created");
    assert_eq!(node.peers_lines(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_notice_from_a_non_member_stops_nothing() {
    let pki = Pki::new();
    let node = Node::alone(&pki).await;
    let mut intruder = Intruder::new(&pki, &node);
    // About the node's own replica of group 1, and about groups it does not run.
    let reused = vec![(G, ReplicaId(1)), (GroupId(0), ReplicaId(1)), (GroupId(u64::MAX), ReplicaId(1))];
    intruder.send(vec![batch(Vec::new(), reused)]).await;

    node.wait_refused("notice", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(node.host.replica_state(G).is_ok(), "the replica was stopped");
    assert!(matches!(node.host.leader(G), Ok(Some(_))), "the replica was stopped");
    let stored = node.host.propose(G, put("k", "v"), T).await;
    assert!(stored.is_ok(), "the group no longer takes proposals: {stored:?}");
}

/// The control: members still replicate over TLS, a joining replica included (it knows no membership
/// until its leader's log or snapshot tells it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_a_joining_replica_still_replicate() {
    let pki = Pki::new();
    let a = Node::alone(&pki).await;
    let b = Node::start(&pki, "node-b").await;
    add_replica(&a.host, ReplicaId(2), &b.addr, MemberRole::NonVoter).await;
    b.state.start_kv_group(G, ReplicaId(2), StartMode::Joining, KvKind::Memory).unwrap();
    for i in 0..3 {
        a.host.propose(G, put(&format!("k{i}"), "v"), T).await.unwrap();
    }
    let target = a.host.replica_info(G).map(|i| i.applied).unwrap();
    let deadline = Instant::now() + T;
    while b.host.replica_info(G).map(|i| i.applied).unwrap() < target {
        assert!(Instant::now() < deadline, "the joining replica did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.host.membership(G).unwrap().membership.role(ReplicaId(1)), Some(MemberRole::Voter));
    assert_eq!(a.refused("not_member") + a.refused("wrong_address"), 0);
    // Each recorded the other's incarnation: a line per member, nothing else.
    assert_eq!((a.peers_lines(), b.peers_lines()), (1, 1));
}

/// The `*.recv` landing files in `dir`.
fn landing_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".recv"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_stream_cut_by_its_deadline_leaves_no_partial_file() {
    let pki = Pki::new();
    let node = Node::alone(&pki).await;
    // A member that sends snapshots: non-voter 2 at peer.test (never reached; it only sends here).
    let peer = "peer.test:7000";
    add_replica(&node.host, ReplicaId(2), peer, MemberRole::NonVoter).await;
    let id = pki.issue("peer", &["peer.test"]);
    let mut raft = RaftClient::new(pki.channel(&node.addr, Some(&id)));

    // The header and 64 KiB of an announced 1 MiB, then nothing: the call ends by its deadline.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(snapshot_header(peer, G, ReplicaId(2), 1 << 20)).await.unwrap();
    tx.send(pb::RaftSnapshotChunk { part: Some(Part::Data(vec![7; 64 << 10].into())) }).await.unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.set_timeout(Duration::from_millis(800));
    let call = tokio::spawn(async move { raft.send_snapshot(req).await });

    let dir = node.dir.path().join("snapshots").join("1");
    let mut landed = false;
    while !call.is_finished() {
        landed |= !landing_files(&dir).is_empty();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = call.await.unwrap();
    assert!(r.is_err(), "the stalled stream completed: {r:?}");
    assert!(landed, "the snapshot never started landing: the test proves nothing");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !landing_files(&dir).is_empty() {
        assert!(Instant::now() < deadline, "partial snapshot files left: {:?}", landing_files(&dir));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_do_not_lock_a_tls_client_out() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let node = Node::start(&pki, "node").await;
    // 300 connections from 127.0.0.1 that never start their handshake.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(&node.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A proper client, from the same address, is served within a couple of seconds.
    let start = Instant::now();
    let mut health = tonic_health::pb::health_client::HealthClient::new(pki.channel(&node.addr, None));
    let served = loop {
        let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
        match tokio::time::timeout(Duration::from_millis(500), health.check(req)).await {
            Ok(Ok(_)) => break true,
            _ if start.elapsed() > Duration::from_secs(2) => break false,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(served, "the TLS client was locked out for {:?}", start.elapsed());

    // Only the source's share of handshakes stays open; the others were closed at once.
    let mut closed = 0;
    for c in &mut idle {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(5), c.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert!(closed >= 300 - 32, "only {closed} of 300 half-open connections were closed");
}

/// A member that was down while its group added a replica that then became leader does not know that
/// leader and refuses it: it must still catch up (it asks a voter it knows to campaign; once that one
/// leads, it learns the change from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_its_leaders_addition_catches_up() {
    use common::{Cluster, addr};
    let mut c = Cluster::new(4);
    c.start_group(1, &[1, 2, 3], common::fast_group());
    let mut l = c.leader(1).await;
    while l == 3 {
        let _ = c.hosts[&3].transfer_leader(G, ReplicaId(1)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        l = c.leader(1).await;
    }
    // Host 3 goes down; replica 4 joins on host 4 and takes the lead.
    c.hosts[&3].close();
    c.hosts.remove(&3);
    let leader = c.hosts[&l].clone();
    c.hosts[&4]
        .start_replica(G, ReplicaId(4), StartMode::Joining, common::sm(), common::fast_group())
        .unwrap();
    add_replica(&leader, ReplicaId(4), &addr(4), MemberRole::Voter).await;
    let deadline = Instant::now() + T;
    while c.leader(1).await != 4 {
        assert!(Instant::now() < deadline, "replica 4 never took the lead");
        let _ = c.hosts[&c.leader(1).await].transfer_leader(G, ReplicaId(4)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.hosts[&4].propose(G, Bytes::from_static(b"k=after"), T).await.unwrap();

    // Host 3 is back: it knows replicas 1 to 3 only.
    let h3 = c.start_host(3);
    h3.start_replica(G, ReplicaId(3), StartMode::Joining, common::sm(), common::fast_group()).unwrap();
    let deadline = Instant::now() + T;
    loop {
        let target = c.hosts[&4].replica_info(G).map(|i| i.applied).unwrap();
        if h3.membership(G).unwrap().membership.role(ReplicaId(4)).is_some()
            && h3.replica_info(G).map(|i| i.applied).unwrap() >= target
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 3 is stranded: applied {:?} of {target:?}, membership {:?}",
            h3.replica_info(G).map(|i| i.applied),
            h3.membership(G).map(|m| m.membership)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h3.stale_read(G, b"k").unwrap(), Bytes::from_static(b"after"));
}

/// Adds `replica` at `address` to group `G` through `host` (its leader) and waits until it is applied.
async fn add_replica(host: &NodeHost, replica: ReplicaId, address: &str, role: MemberRole) {
    let add = MembershipChange::Add { replica, address: address.to_string(), role };
    host.change_membership(G, add, 0).expect("proposed").wait(T).await.expect("applied");
}
