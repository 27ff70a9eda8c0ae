//! # drakkar-server
//!
//! A Drakkar node on the network: the `drakkar.v1` gRPC services (Kv, StateMachine, Session, Admin) over
//! a [`drakkar::NodeHost`], the node-to-node Raft transport ([`peer`]), TLS ([`tls`]), `grpc.health.v1`
//! health and server reflection, all on one listener ([`serve`]).
//!
//! Any node accepts any request. A node running a replica of the group serves it: the NodeHost passes
//! proposals, linearizable reads (ReadIndex), membership changes and leader transfers to the leader
//! itself, so leadership never needs the client's attention. A node that does not run the group forwards
//! the request to one that does ([`forward`]); when no leader is known the answer is UNAVAILABLE with
//! the leader hint (`drakkar-leader`) when one is known. Errors map to gRPC codes as listed in
//! [`status`].

/// The prologue of a handler of a request on one group: admits the request (in-flight limit, deadline),
/// then either forwards it to a node that runs the group, returning that node's answer from the handler,
/// or evaluates to `(state, call, request, group)` for serving it here. `$kv`: the request needs the
/// built-in KV state machine.
macro_rules! serve_or_forward {
    ($self:expr, $req:expr, $kv:expr, $client:ident, $method:ident) => {{
        let s = &$self.0;
        let call = s.begin(&$req)?;
        let r = $req.into_inner();
        let g = drakkar_raft::GroupId(r.group);
        if s.route(g, $kv, &call)? == crate::ops::Route::Forward {
            let t = call.timeout;
            return s
                .forward
                .forward(&s.host, g, |ch| {
                    let r = r.clone();
                    async move { $client::new(ch).$method(crate::forward::forwarded(r, t)).await }
                })
                .await
                .map(tonic::Response::new);
        }
        (s, call, r, g)
    }};
}

mod admin;
pub mod authz;
pub mod forward;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod incoming;
mod kv;
mod kv_proto;
pub mod ops;
pub mod peer;
mod sm;
pub mod status;
pub mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use drakkar_client::connect::Connector;
use drakkar_client::pb;
use drakkar_client::reason;
use drakkar_client::tls::ClientTls;
use drakkar_raft::{GroupId, ReplicaId};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::peer::receive::RaftService;
use crate::tls::NodeTls;
use drakkar::{GroupConfig, NodeError, NodeHost, StartMode, StateMachineBox};
use drakkar_kv::{DiskKv, MemKv};

// The KV state machine's transaction limits are the protocol's: a request the codec lets through is one
// the state machine accepts.
const _: () = assert!(drakkar_kv::limits::MAX_TXN_COMPARES == drakkar_client::codec::MAX_TXN_COMPARES);
const _: () = assert!(drakkar_kv::limits::MAX_TXN_OPS == drakkar_client::codec::MAX_TXN_OPS);

/// Limits and defaults of the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request message accepted (a KV value may be 32 MiB).
    pub max_request_bytes: usize,
    /// Requests served at once; past it, RESOURCE_EXHAUSTED (`busy`).
    pub max_in_flight: usize,
    /// Deadline of a request that sends none.
    pub default_timeout: Duration,
    /// Longest deadline honoured.
    pub max_timeout: Duration,
    /// Configuration of the groups started through the server (StartGroup, `drakkar serve`).
    pub group: GroupConfig,
    /// Other nodes, tried when forwarding a request for a group this node does not run.
    pub peers: Vec<String>,
    /// Largest snapshot file accepted from a peer.
    pub max_snapshot_bytes: u64,
    /// Bytes of request messages received at once across every client connection; a message that does
    /// not fit is refused RESOURCE_EXHAUSTED (`busy`) before it is buffered (see [`ops::ByteBudget`]).
    pub max_in_flight_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request_bytes: 40 << 20,
            max_in_flight: 4096,
            default_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(60),
            group: GroupConfig::default(),
            peers: Vec::new(),
            max_snapshot_bytes: 4 << 30,
            max_in_flight_bytes: 1 << 30,
        }
    }
}

/// The built-in KV state machine a group runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvKind {
    /// [`MemKv`].
    Memory,
    /// [`DiskKv`].
    Disk,
}

impl KvKind {
    fn name(self) -> &'static str {
        match self {
            KvKind::Memory => "kv-memory",
            KvKind::Disk => "kv-disk",
        }
    }

    fn parse(s: &str) -> Option<KvKind> {
        match s {
            "kv-memory" => Some(KvKind::Memory),
            "kv-disk" => Some(KvKind::Disk),
            _ => None,
        }
    }
}

/// The group manifest's text: a comment line, then `group replica kind` per group.
fn manifest_text(kv: &BTreeMap<GroupId, (ReplicaId, KvKind)>) -> String {
    let mut s = String::from("# drakkar KV groups: group replica kind\n");
    for (g, (r, k)) in kv {
        s.push_str(&format!("{} {} {}\n", g.0, r.0, k.name()));
    }
    s
}

/// Parses the group manifest read from `path` (named in errors): blank lines and `#` comments are
/// skipped; any other line is `group replica kind`, each group at most once.
fn parse_manifest(text: &str, path: &Path) -> Result<BTreeMap<GroupId, (ReplicaId, KvKind)>, NodeError> {
    let mut kv = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let bad = || NodeError::Storage(format!("{}: bad line {line:?}", path.display()));
        let f: Vec<&str> = line.split_whitespace().collect();
        let [g, r, k] = f[..] else { return Err(bad()) };
        let (g, r) = (g.parse().map_err(|_| bad())?, r.parse().map_err(|_| bad())?);
        let kind = KvKind::parse(k).ok_or_else(bad)?;
        if kv.insert(GroupId(g), (ReplicaId(r), kind)).is_some() {
            return Err(NodeError::Storage(format!("{}: group {g} listed twice", path.display())));
        }
    }
    Ok(kv)
}

/// State shared by every service of one node.
pub struct ServerState {
    host: NodeHost,
    cfg: ServerConfig,
    tls: Option<Arc<NodeTls>>,
    /// Who may call what (checked before every RPC).
    authz: Arc<authz::Authz>,
    /// The connections open, bounded.
    connections: Arc<incoming::Connections>,
    /// The bytes of request messages being received, bounded.
    request_bytes: Arc<ops::ByteBudget>,
    /// The KV groups this node runs (persisted in the group manifest).
    kv: RwLock<BTreeMap<GroupId, (ReplicaId, KvKind)>>,
    inflight: Arc<Semaphore>,
    /// Slots of the snapshot imports in progress ([`admin::MAX_IMPORTS`]), apart from `inflight`.
    imports: Arc<Semaphore>,
    forward: forward::Forwarder,
    ready: AtomicBool,
    /// Milliseconds since `started` of the last sign of a responsive engine.
    live_at_ms: AtomicU64,
    started: Instant,
    manifest: PathBuf,
    data_dir: PathBuf,
}

const MANIFEST: &str = "groups.manifest";

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ServerState {
    /// The services' state for `host`, stored under `data_dir`. `tls` None: plaintext (`--insecure`).
    pub fn new(host: NodeHost, data_dir: PathBuf, cfg: ServerConfig, tls: Option<Arc<NodeTls>>) -> Arc<Self> {
        let client_tls = tls.clone().map(|t| t as Arc<dyn ClientTls>);
        let forward =
            forward::Forwarder::new(Connector::new(client_tls, Duration::from_secs(3)), cfg.peers.clone());
        let anonymous = tls.as_ref().is_some_and(|t| t.allows_anonymous());
        Arc::new(ServerState {
            host,
            authz: Arc::new(authz::Authz::new(anonymous)),
            connections: Arc::default(),
            request_bytes: ops::ByteBudget::new(cfg.max_in_flight_bytes),
            inflight: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            imports: Arc::new(Semaphore::new(admin::MAX_IMPORTS)),
            cfg,
            tls,
            kv: RwLock::new(BTreeMap::new()),
            forward,
            ready: AtomicBool::new(false),
            live_at_ms: AtomicU64::new(0),
            started: Instant::now(),
            manifest: data_dir.join(MANIFEST),
            data_dir,
        })
    }

    /// The NodeHost.
    pub fn host(&self) -> &NodeHost {
        &self.host
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The node's TLS (None: plaintext).
    pub fn tls(&self) -> Option<&Arc<NodeTls>> {
        self.tls.as_ref()
    }

    /// The authorization policy and its counters.
    pub fn authz(&self) -> &authz::Authz {
        &self.authz
    }

    /// The node's open connections.
    pub fn connections(&self) -> &incoming::Connections {
        &self.connections
    }

    /// The node's request byte budget.
    pub fn request_bytes(&self) -> &ops::ByteBudget {
        &self.request_bytes
    }

    /// The KV groups running here.
    pub fn kv_groups(&self) -> Vec<GroupId> {
        lock_read(&self.kv).keys().copied().collect()
    }

    fn kv_kind(&self, g: GroupId) -> Option<KvKind> {
        lock_read(&self.kv).get(&g).map(|e| e.1)
    }

    /// Every hosted group caught up at the last probe (see [`health`]).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The engine answered within `within` and has not failed.
    pub fn is_live(&self, within: Duration) -> bool {
        if self.host.info().failure.is_some() {
            return false;
        }
        let now = self.started.elapsed().as_millis() as u64;
        now.saturating_sub(self.live_at_ms.load(Ordering::Acquire)) <= within.as_millis() as u64
    }

    pub(crate) fn set_health(&self, ready: bool, live: bool) {
        self.ready.store(ready, Ordering::Release);
        if live {
            self.live_at_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Release);
        }
    }

    /// A slot for one request, or RESOURCE_EXHAUSTED when the node is at its limit.
    fn admit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.inflight.clone().try_acquire_owned().map_err(|_| {
            status::with_reason(Code::ResourceExhausted, "too many requests in flight", reason::BUSY)
        })
    }

    fn kv_path(&self, g: GroupId) -> PathBuf {
        self.data_dir.join("kv").join(format!("group-{}.redb", g.0))
    }

    /// Starts (or restarts) this node's replica of KV group `group`, and records it in the manifest so a
    /// restarted node runs it again.
    pub fn start_kv_group(
        &self,
        group: GroupId,
        replica: ReplicaId,
        mode: StartMode,
        kind: KvKind,
    ) -> Result<(), NodeError> {
        let sm = match kind {
            KvKind::Memory => StateMachineBox::concurrent(Arc::new(MemKv::new())),
            KvKind::Disk => {
                let dir = self.data_dir.join("kv");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| NodeError::Storage(format!("{}: {e}", dir.display())))?;
                StateMachineBox::on_disk(Arc::new(DiskKv::new(self.kv_path(group))))
            }
        };
        self.host.start_replica(group, replica, mode, sm, self.cfg.group.clone())?;
        let mut kv = self.kv.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        kv.insert(group, (replica, kind));
        self.write_manifest(&kv)
    }

    /// Restarts every KV group of the manifest. Returns them.
    pub fn restore_groups(&self) -> Result<Vec<GroupId>, NodeError> {
        let text = match std::fs::read_to_string(&self.manifest) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NodeError::Storage(format!("{}: {e}", self.manifest.display()))),
        };
        let mut out = Vec::new();
        for (g, (r, kind)) in parse_manifest(&text, &self.manifest)? {
            self.start_kv_group(g, r, StartMode::Joining, kind)?;
            out.push(g);
        }
        Ok(out)
    }

    /// Whether the manifest lists `group` (it ran here before a restart).
    pub fn in_manifest(&self, group: GroupId) -> bool {
        lock_read(&self.kv).contains_key(&group)
    }

    /// Stops this node's replica of `group`; with `remove_data`, deletes its log, snapshots and KV file.
    pub async fn stop_group(&self, group: GroupId, remove_data: bool) -> Result<(), NodeError> {
        if remove_data {
            self.host.remove_data(group).await?;
            let _ = std::fs::remove_file(self.kv_path(group));
        } else {
            self.host.stop_replica(group).await?;
        }
        let mut kv = self.kv.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        kv.remove(&group);
        self.write_manifest(&kv)
    }

    fn write_manifest(&self, kv: &BTreeMap<GroupId, (ReplicaId, KvKind)>) -> Result<(), NodeError> {
        let s = manifest_text(kv);
        let tmp = self.manifest.with_extension("tmp");
        let io = |e: std::io::Error| NodeError::Storage(format!("{}: {e}", self.manifest.display()));
        std::fs::write(&tmp, s).map_err(io)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &self.manifest).map_err(io)?;
        Ok(())
    }

    /// Hands the leadership of every group this node leads to another voter, and waits (up to `timeout`)
    /// until none is led here: part of a graceful shutdown.
    pub async fn transfer_leadership_away(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut leading = 0;
            for g in self.host.groups() {
                let (Ok(me), Ok(Some((leader, _)))) =
                    (self.host.replica_info(g).map(|i| i.replica), self.host.leader(g))
                else {
                    continue;
                };
                if leader != me {
                    continue;
                }
                leading += 1;
                let target = self
                    .host
                    .membership(g)
                    .ok()
                    .and_then(|m| m.membership.voters.into_iter().find(|v| *v != me));
                if let Some(t) = target
                    && let Err(e) = self.host.transfer_leader(g, t).await
                {
                    tracing::debug!(group = g.0, error = %e, "leader transfer refused");
                }
            }
            if leading == 0 || tokio::time::Instant::now() >= deadline {
                if leading > 0 {
                    tracing::warn!(groups = leading, "shutting down while still leading some groups");
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// tonic failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A client service behind the node's authorization, deadlines and request byte budget.
fn client<S>(svc: S, state: &ServerState) -> ops::Guarded<S> {
    ops::guarded(svc, state.cfg.default_timeout, state.cfg.max_timeout)
        .with_budget(state.request_bytes.clone())
        .with_authz(state.authz.clone())
}

/// Serves every service on `listener` until `stop` fires, then stops accepting and lets in-flight
/// requests finish (the Raft streams end at once).
pub async fn serve(
    state: Arc<ServerState>,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let (reporter, health_svc) = tonic_health::server::health_reporter();
    health::spawn_probe(state.clone(), reporter, stop.clone());
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(drakkar_client::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(peer::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let max = state.cfg.max_request_bytes;
    let (default_timeout, max_timeout) = (state.cfg.default_timeout, state.cfg.max_timeout);
    let raft = RaftService::new(state.clone(), stop.clone());
    let incoming = incoming::incoming(listener, state.tls.clone(), state.connections.clone(), stop.clone());
    // Keepalive: a connection silent for 500 ms gets a PING, and is closed when the answer takes over
    // 1 s, so a peer's Raft stream from behind a partition (or a vanished client) is dropped within 1.5 s
    // (see `grpc::PEER_KEEPALIVE` for why not shorter). Reset limits, per connection: h2's default of 20
    // streams a client cancels before the server picked them up makes it answer GOAWAY `too_many_resets`
    // to a client whose requests hit their deadlines in bulk; 10,000 such streams (about 10 MiB of
    // stream state at most) let any well-behaved client cancel, while still bounding a rapid-reset flood.
    // The same bound applies to streams the server resets for protocol errors (tonic leaves that
    // unbounded), the guard against clients provoking such resets ("MadeYouReset").
    const MAX_RESET_STREAMS: usize = 10_000;
    // Every service: authorization first (before the body is read), then the guard.
    let authz = state.authz.clone();
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(crate::peer::PEER_KEEPALIVE.interval))
        .http2_keepalive_timeout(Some(crate::peer::PEER_KEEPALIVE.timeout))
        .http2_max_pending_accept_reset_streams(Some(MAX_RESET_STREAMS))
        .http2_max_local_error_reset_streams(Some(MAX_RESET_STREAMS))
        // The node's deadlines for a health check too; a watch and a reflection stream stay open.
        .add_service(ops::guarded(health_svc, default_timeout, max_timeout).with_authz(authz.clone()))
        .add_service(ops::guarded_codes(reflection).with_authz(authz.clone()))
        // Per service, the largest request it carries: a KV value (32 MiB) or a raw command; Admin: a
        // snapshot chunk (1 MiB as ExportSnapshot streams them) with its target. `client`: the node's
        // deadlines, its request byte budget, truncated and missing messages answered with the
        // documented codes.
        .add_service(client(
            pb::kv_server::KvServer::new(kv::KvService(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            &state,
        ))
        .add_service(client(
            pb::state_machine_server::StateMachineServer::new(sm::SmService(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            &state,
        ))
        .add_service(client(
            pb::session_server::SessionServer::new(sm::SessionService(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            &state,
        ))
        .add_service(client(
            pb::admin_server::AdminServer::new(admin::AdminService(state.clone()))
                .max_decoding_message_size(2 << 20)
                .max_encoding_message_size(max),
            &state,
        ))
        // Codes only: the Raft streams live as long as their connection.
        .add_service(ops::guarded_codes(raft.into_server()).with_authz(authz))
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await?;
    Ok(())
}

/// Serves only the node-to-node Raft service (`drakkar.v1.Raft`) of `host` on `listener` until `stop`
/// fires: what a program embedding a [`NodeHost`] with its own state machines needs so its peers in other
/// processes reach it (the peers send through a [`peer::GrpcTransport`]). No client API, health or
/// reflection service is served. `tls` None: plaintext, for a trusted network only (anyone who can reach
/// the port can impersonate a peer); with TLS the peers need certificates of the same CA, as for
/// [`serve`].
pub async fn serve_peers(
    host: NodeHost,
    listener: TcpListener,
    tls: Option<Arc<NodeTls>>,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    // The state's data directory holds the KV group manifest, which this server never writes.
    let state = ServerState::new(host, PathBuf::new(), ServerConfig::default(), tls);
    let raft = RaftService::new(state.clone(), stop.clone());
    let incoming = incoming::incoming(listener, state.tls.clone(), state.connections.clone(), stop.clone());
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(crate::peer::PEER_KEEPALIVE.interval))
        .http2_keepalive_timeout(Some(crate::peer::PEER_KEEPALIVE.timeout))
        .add_service(ops::guarded_codes(raft.into_server()).with_authz(state.authz.clone()))
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await?;
    Ok(())
}
