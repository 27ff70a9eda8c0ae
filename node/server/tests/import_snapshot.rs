//! Snapshot imports given hostile input (the "Hostile input" issue, findings 1 and 3): a file that does not
//! decode is refused before anything of the replica's is touched, and the replica restarts with its old
//! data; an import stream that stops sending, grows past the limit or crowds the node is ended by the
//! server, and leaves no file behind.

use drakkar_sim::harness as common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, T, fast_group};
use drakkar::statemachine::{ConcurrentStateMachine, SmError};
use drakkar::transport::InProcessNetwork;
use drakkar::{NodeError, NodeHost, NodeHostConfig, StartMode, StateMachineBox};
use drakkar_client::{Client, ClientConfig, pb};
use drakkar_kv::{Command, MemKv, Query, QueryResult};
use drakkar_raft::{GroupId, ReplicaId};
use drakkar_server::{KvKind, ServerConfig, ServerState};
use tokio_util::sync::CancellationToken;
use tonic::Code;

const G: GroupId = GroupId(1);
const R1: ReplicaId = ReplicaId(1);

fn mem() -> StateMachineBox {
    StateMachineBox::concurrent(Arc::new(MemKv::new()))
}

/// Verifies a snapshot's state machine data as the group's kind (MemKv) would recover it.
fn mem_verifier(r: &mut dyn Read) -> Result<(), SmError> {
    ConcurrentStateMachine::recover_from_snapshot(&MemKv::new(), r, &drakkar::statemachine::Stop::default())
}

fn put(k: &str, v: &str) -> Bytes {
    Command::Put { key: Bytes::from(k.to_string()), value: Bytes::from(v.to_string()) }.encode().unwrap()
}

fn get(k: &str) -> Bytes {
    Query::Get { key: Bytes::from(k.to_string()) }.encode().unwrap()
}

async fn read(h: &NodeHost, k: &str) -> Option<String> {
    match QueryResult::decode(&h.read(G, get(k), T).await.unwrap()).unwrap() {
        QueryResult::Get(kv) => kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
        other => panic!("unexpected {other:?}"),
    }
}

/// Every file under `dir` (relative path, size), sorted; directories show as themselves.
fn tree(dir: &Path) -> Vec<(String, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.push((format!("{rel}/"), 0));
                walk(root, &p, out);
            } else {
                out.push((rel, e.metadata().unwrap().len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A snapshot file's prefix (magic, header length, header) and its compressed body.
fn split(file: &[u8]) -> (&[u8], &[u8]) {
    let hlen = u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
    (&file[..12 + hlen], &file[12 + hlen..file.len() - 4])
}

/// `prefix` and `body` with a valid checksum.
fn assemble(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = [prefix, body].concat();
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Files with a valid checksum (or none) whose body does not decode, built from the valid `whole`.
fn corrupt_variants(whole: &[u8], zeros: usize) -> Vec<(String, Vec<u8>)> {
    let (prefix, body) = split(whole);
    let mut cases = vec![
        ("a zero-filled body".to_string(), assemble(prefix, &vec![0; zeros])),
        ("an empty body".to_string(), assemble(prefix, &[])),
        ("a truncated file".to_string(), whole[..whole.len() / 2].to_vec()),
    ];
    for at in [5, body.len() / 4, body.len() / 2, body.len() * 3 / 4, body.len() - 5] {
        let mut flipped = body.to_vec();
        flipped[at] ^= 0x10;
        cases.push((format!("a bit flipped at {at} of {}", body.len()), assemble(prefix, &flipped)));
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_import_leaves_the_replica_as_it_was() {
    let c = Cluster::new(1);
    let h = &c.hosts[&1];
    let members = Cluster::members([1]);
    h.start_replica(G, R1, StartMode::Founding(members.clone()), mem(), fast_group()).unwrap();
    c.leader(1).await;
    for n in 0..30 {
        h.propose(G, put(&format!("k{n}"), &format!("v{n}")), T).await.unwrap();
    }
    let export = c.dirs[&1].join("export.snap");
    h.request_snapshot(G, Some(&export), T).await.unwrap();
    h.propose(G, put("late", "yes"), T).await.unwrap();
    h.stop_replica(G).await.unwrap();
    let snaps = c.dirs[&1].join("snapshots");
    let before = tree(&snaps);
    assert!(before.iter().any(|(n, _)| n.ends_with(".snap")), "{before:?}");

    let whole = std::fs::read(&export).unwrap();
    let mut cases = corrupt_variants(&whole, 1 << 20);
    // A body that decompresses, with a valid session table, whose state machine data is not a KV stream.
    let header = drakkar::snapshot::verify_snapshot(&export).unwrap();
    let sm_corrupt = c.dirs[&1].join("sm-corrupt.snap");
    drakkar::snapshot::write_snapshot(&sm_corrupt, &header, |w: &mut dyn Write| {
        drakkar::session::Sessions::default().save(w)?;
        w.write_all(b"DKVS this is not a KV snapshot stream")
    })
    .unwrap();
    cases.push(("corrupt state machine data".into(), std::fs::read(&sm_corrupt).unwrap()));

    let bad = c.dirs[&1].join("bad.snap");
    for (what, bytes) in cases {
        std::fs::write(&bad, &bytes).unwrap();
        let e = h.import_snapshot(G, R1, &bad, members.clone(), mem_verifier).unwrap_err();
        assert!(matches!(e, NodeError::InvalidArgument(_)), "{what}: {e:?}");
        assert_eq!(tree(&snaps), before, "{what}: the snapshot directory changed");
        // The replica starts and serves its old data, including what followed the snapshot.
        h.start_replica(G, R1, StartMode::Joining, mem(), fast_group()).unwrap();
        assert_eq!(read(h, "k29").await.as_deref(), Some("v29"), "{what}");
        assert_eq!(read(h, "late").await.as_deref(), Some("yes"), "{what}");
        h.stop_replica(G).await.unwrap();
    }
    // Without a verifier, whatever does not decompress or lacks its session table is refused too.
    for (what, bytes) in corrupt_variants(&whole, 1 << 20).into_iter().take(3) {
        std::fs::write(&bad, &bytes).unwrap();
        let e = h.import_snapshot(G, R1, &bad, members.clone(), drakkar::snapshot::read_through).unwrap_err();
        assert!(matches!(e, NodeError::InvalidArgument(_)), "{what}: {e:?}");
        assert_eq!(tree(&snaps), before, "{what}: the snapshot directory changed");
    }

    // A valid import still works: it replaces the state, and only its file stays.
    let index = h.import_snapshot(G, R1, &export, members.clone(), mem_verifier).unwrap();
    let after = tree(&snaps);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0].0, "1/");
    // The snapshot's own name, or a new one when a file of the replica had it (as here: the same index).
    let prefix = format!("1/snapshot-{:020}.", index.0);
    assert!(after[1].0.starts_with(&prefix) && after[1].0.ends_with(".snap"), "{after:?}");
    h.start_replica(G, R1, StartMode::Joining, mem(), fast_group()).unwrap();
    assert_eq!(read(h, "k29").await.as_deref(), Some("v29"));
    assert_eq!(read(h, "late").await, None, "the imported state is the snapshot's");
}

/// One node serving gRPC on 127.0.0.1, running KV group 1 (in memory) with replica 1.
struct Node {
    addr: String,
    dir: tempfile::TempDir,
    stop: CancellationToken,
    host: NodeHost,
    _net: InProcessNetwork,
}

impl Node {
    async fn start(cfg: ServerConfig) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let net = InProcessNetwork::new();
        let mut hcfg = NodeHostConfig::new(dir.path(), addr.clone());
        hcfg.tick_interval = Duration::from_millis(5);
        let host = NodeHost::new(hcfg, net.transport()).unwrap();
        net.register(&addr, host.sink());
        let cfg = ServerConfig { group: fast_group(), ..cfg };
        let state = ServerState::new(host.clone(), dir.path().to_path_buf(), cfg, None);
        let stop = CancellationToken::new();
        tokio::spawn(drakkar_server::serve(state.clone(), listener, stop.clone()));
        let members = BTreeMap::from([(R1, addr.clone())]);
        state.start_kv_group(G, R1, StartMode::Founding(members), KvKind::Memory).unwrap();
        Node { addr, dir, stop, host, _net: net }
    }

    fn client(&self) -> Client {
        Client::new(ClientConfig { exactly_once: false, ..ClientConfig::new([self.addr.clone()]) }).unwrap()
    }

    fn admin(&self) -> pb::admin_client::AdminClient<tonic::transport::Channel> {
        pb::admin_client::AdminClient::new(self.client().channel(&self.addr).unwrap())
    }

    fn imports(&self) -> Vec<(String, u64)> {
        tree(&self.dir.path().join("imports"))
    }

    fn target(&self) -> pb::ImportSnapshotTarget {
        let me = pb::Member { replica: 1, address: self.addr.clone(), role: pb::Role::Voter as i32 };
        pb::ImportSnapshotTarget { group: 1, replica: 1, members: vec![me] }
    }

    fn start_request() -> pb::StartGroupRequest {
        pb::StartGroupRequest { group: 1, replica: 1, initial_members: vec![], join: true, kind: 0 }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
        self.host.close();
    }
}

/// Opens an import stream that sends `first` (if any) and then nothing, keeping the stream open: returns
/// the call's outcome and how long it took.
async fn stalled_import(
    node: &Node,
    first: Option<pb::ImportSnapshotChunk>,
) -> (Result<pb::ImportSnapshotResponse, tonic::Status>, Duration) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    if let Some(f) = first {
        tx.send(f).await.unwrap();
    }
    let start = Instant::now();
    let mut admin = node.admin();
    let call = admin.import_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
    let r = tokio::time::timeout(Duration::from_secs(20), call).await.expect("the server never ended it");
    drop(tx);
    (r.map(tonic::Response::into_inner), start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_stream_that_stops_sending_is_ended_and_leaves_no_file() {
    let cfg = ServerConfig { default_timeout: Duration::from_secs(1), ..ServerConfig::default() };
    let node = Node::start(cfg).await;
    node.client().stop_group(&node.addr, 1, false).await.unwrap();
    // Stalls after a first piece of the file.
    let first = pb::ImportSnapshotChunk { target: Some(node.target()), data: vec![7u8; 4096].into() };
    let (r, took) = stalled_import(&node, Some(first)).await;
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(took < Duration::from_secs(5), "ended after {took:?}");
    assert_eq!(node.imports(), vec![], "the partial file stays");
    // Stalls before its first message.
    let (r, took) = stalled_import(&node, None).await;
    assert_eq!(r.unwrap_err().code(), Code::DeadlineExceeded);
    assert!(took < Duration::from_secs(5), "ended after {took:?}");
    // The total deadline: a stream that keeps sending slowly ends at its grpc-timeout.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let target = Some(node.target());
    tx.send(pb::ImportSnapshotChunk { target, data: vec![1u8; 100].into() }).await.unwrap();
    let trickle = tokio::spawn(async move {
        while tx.send(pb::ImportSnapshotChunk { target: None, data: vec![1u8; 100].into() }).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.set_timeout(Duration::from_secs(2));
    let start = Instant::now();
    let mut admin = node.admin();
    let r = tokio::time::timeout(Duration::from_secs(20), admin.import_snapshot(req)).await.unwrap();
    assert_eq!(r.unwrap_err().code(), Code::DeadlineExceeded);
    assert!(start.elapsed() < Duration::from_secs(5), "ended after {:?}", start.elapsed());
    trickle.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(node.imports(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_import_is_refused_and_leaves_no_file() {
    let cfg = ServerConfig { max_snapshot_bytes: 256 << 10, ..ServerConfig::default() };
    let node = Node::start(cfg).await;
    node.client().stop_group(&node.addr, 1, false).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let target = Some(node.target());
    let feeder = tokio::spawn(async move {
        let mut first = target;
        // 4 MiB, then the stream stays open: the server must refuse it on its own.
        for _ in 0..64 {
            let chunk = pb::ImportSnapshotChunk { target: first.take(), data: vec![0u8; 64 << 10].into() };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    let mut admin = node.admin();
    let call = admin.import_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
    let r = tokio::time::timeout(Duration::from_secs(8), call).await.expect("the server never ended it");
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("limit"), "{e:?}");
    feeder.abort();
    assert_eq!(node.imports(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_imports_do_not_take_the_request_slots() {
    let cfg =
        ServerConfig { max_in_flight: 4, default_timeout: Duration::from_secs(3), ..ServerConfig::default() };
    let node = Arc::new(Node::start(cfg).await);
    let c = node.client();
    c.put(1, "before", "1").await.unwrap();
    let mut calls = Vec::new();
    for _ in 0..8 {
        let node = node.clone();
        calls.push(tokio::spawn(async move { stalled_import(&node, None).await }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The imports wait for data; requests still find slots.
    for i in 0..4 {
        c.put(1, format!("during-{i}"), "1").await.unwrap();
    }
    let mut codes = Vec::new();
    for call in calls {
        let (r, took) = call.await.unwrap();
        let code = r.unwrap_err().code();
        if code == Code::ResourceExhausted {
            assert!(took < Duration::from_secs(1), "refused after {took:?}");
        }
        codes.push(code);
    }
    let refused = codes.iter().filter(|c| **c == Code::ResourceExhausted).count();
    assert!(refused >= 6, "{codes:?}");
    assert!(codes.iter().all(|c| matches!(c, Code::ResourceExhausted | Code::DeadlineExceeded)), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_import_over_grpc_leaves_the_replica_as_it_was() {
    let node = Node::start(ServerConfig::default()).await;
    let c = node.client();
    for n in 0..30 {
        c.put(1, format!("k{n:02}"), format!("v{n}")).await.unwrap();
    }
    let export: PathBuf = node.dir.path().join("export.snap");
    let mut f = tokio::fs::File::create(&export).await.unwrap();
    c.export_snapshot(1, &mut f).await.unwrap();
    drop(f);
    c.put(1, "late", "yes").await.unwrap();
    c.stop_group(&node.addr, 1, false).await.unwrap();
    let whole = std::fs::read(&export).unwrap();
    // The client sends 1 MiB per message, the server's message limit: a smaller zero-filled body.
    for (what, bytes) in corrupt_variants(&whole, 512 << 10) {
        let r = c.import_snapshot(&node.addr, node.target(), std::io::Cursor::new(bytes), |_| {}).await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), Some(Code::InvalidArgument), "{what}: {e}");
        assert_eq!(node.imports(), vec![], "{what}");
        c.start_group(&node.addr, Node::start_request()).await.unwrap();
        let got = c.get(1, "late", pb::Consistency::Linearizable).await.unwrap();
        assert_eq!(got.map(|kv| kv.value), Some(Bytes::from_static(b"yes")), "{what}");
        c.stop_group(&node.addr, 1, false).await.unwrap();
    }
    let file = tokio::fs::File::open(&export).await.unwrap();
    let r = c.import_snapshot(&node.addr, node.target(), file, |_| {}).await.unwrap();
    assert_eq!(r.bytes, whole.len() as u64);
    assert_eq!(node.imports(), vec![]);
    c.start_group(&node.addr, Node::start_request()).await.unwrap();
    let got = c.get(1, "k29", pb::Consistency::Linearizable).await.unwrap();
    assert_eq!(got.map(|kv| kv.value), Some(Bytes::from_static(b"v29")));
    let got = c.get(1, "late", pb::Consistency::Linearizable).await.unwrap();
    assert_eq!(got, None, "the imported state is the snapshot's");
}
