//! Shared by the hostile-input tests: nodes serving gRPC on 127.0.0.1 (Raft over the in-process network)
//! running KV group 1, raw gRPC calls whose bodies the test writes byte by byte, and the process's memory.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use drakkar::transport::InProcessNetwork;
use drakkar::{GroupConfig, NodeHost, NodeHostConfig, StartMode};
use drakkar_client::codec::RawCodec;
use drakkar_client::{Client, ClientConfig};
use drakkar_raft::{GroupId, ReplicaId};
use drakkar_server::{KvKind, ServerConfig, ServerState};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codegen::{Service, http};
use tonic::transport::Channel;

/// The KV group every node runs.
pub const G: GroupId = GroupId(1);

pub fn fast_group() -> GroupConfig {
    GroupConfig { election_ticks: 10, heartbeat_ticks: 1, snapshot_entries: 0, ..GroupConfig::default() }
}

/// One node: a NodeHost and its gRPC server.
pub struct Node {
    pub addr: String,
    pub host: NodeHost,
    pub state: Arc<ServerState>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Node {
    /// A client of this node only.
    pub fn client(&self) -> Client {
        Client::new(ClientConfig { exactly_once: false, ..ClientConfig::new([self.addr.clone()]) })
            .expect("client")
    }

    pub fn channel(&self) -> Channel {
        self.client().channel(&self.addr).expect("channel")
    }

    /// This node's replica id in group 1.
    pub fn replica(&self) -> ReplicaId {
        self.host.replica_info(G).map(|i| i.replica).expect("replica")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
        self.host.close();
    }
}

/// `n` nodes running KV group 1 (replica i + 1 on node i).
pub struct Nodes {
    pub nodes: Vec<Node>,
    _net: InProcessNetwork,
}

impl Nodes {
    pub async fn start(n: usize, cfg: ServerConfig) -> Nodes {
        let net = InProcessNetwork::new();
        let mut listeners = Vec::new();
        for _ in 0..n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let a = l.local_addr().expect("address").to_string();
            listeners.push((l, a));
        }
        let members: BTreeMap<ReplicaId, String> =
            listeners.iter().enumerate().map(|(i, (_, a))| (ReplicaId(i as u64 + 1), a.clone())).collect();
        let mut nodes = Vec::new();
        for (i, (listener, addr)) in listeners.into_iter().enumerate() {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut hcfg = NodeHostConfig::new(dir.path(), addr.clone());
            hcfg.tick_interval = Duration::from_millis(5);
            let host = NodeHost::new(hcfg, net.transport()).expect("NodeHost");
            net.register(&addr, host.sink());
            let cfg = ServerConfig { group: fast_group(), ..cfg.clone() };
            let state = ServerState::new(host.clone(), dir.path().to_path_buf(), cfg, None);
            let stop = CancellationToken::new();
            tokio::spawn(drakkar_server::serve(state.clone(), listener, stop.clone()));
            let mode = StartMode::Founding(members.clone());
            state.start_kv_group(G, ReplicaId(i as u64 + 1), mode, KvKind::Memory).expect("start group");
            nodes.push(Node { addr, host, state, stop, _dir: dir });
        }
        Nodes { nodes, _net: net }
    }

    /// The index of the node whose replica leads group 1, once every node agrees on it.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen: Vec<Option<ReplicaId>> =
                self.nodes.iter().map(|n| n.host.leader(G).ok().flatten().map(|l| l.0)).collect();
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|s| *s == Some(*l))
            {
                return self.nodes.iter().position(|n| n.replica() == *l).expect("leader node");
            }
            assert!(Instant::now() < deadline, "no agreed leader within 10 s: {seen:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A unary call of `path` with `body` as the message's bytes.
pub async fn raw_unary(ch: Channel, path: &'static str, body: Bytes) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(tonic::Response::into_inner)
}

/// A POST of `path` whose HTTP body is exactly `body` (gRPC framing included, or not): the gRPC status.
pub async fn raw_http(ch: Channel, path: &str, body: Vec<u8>) -> Status {
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(tonic::service::AxumBody::from(body)))
        .expect("request");
    let mut ch = ch;
    std::future::poll_fn(|cx| ch.poll_ready(cx)).await.expect("ready");
    let resp = ch.call(req).await.expect("an HTTP answer");
    if let Some(s) = Status::from_header_map(resp.headers()) {
        return s;
    }
    let mut body = resp.into_body();
    loop {
        let frame =
            std::future::poll_fn(|cx| tonic::codegen::Body::poll_frame(Pin::new(&mut body), cx)).await;
        match frame {
            Some(Ok(f)) => {
                if let Ok(trailers) = f.into_trailers() {
                    return Status::from_header_map(&trailers).expect("a grpc-status trailer");
                }
            }
            Some(Err(e)) => return e,
            None => panic!("no grpc-status"),
        }
    }
}

/// A gRPC frame (uncompressed) holding `msg`.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// The protobuf encoding of a varint.
pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A field of `/proc/self/status` in bytes (`VmHWM`, `VmRSS`).
pub fn proc_status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = s.lines().find(|l| l.starts_with(field)).expect("field");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number");
    kb * 1024
}

/// Resets the peak resident set size (`VmHWM`) to the current one.
pub fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
}

pub const MB: u64 = 1 << 20;
