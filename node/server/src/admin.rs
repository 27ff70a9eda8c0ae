//! The Admin service: membership, leadership, status, snapshot export and import, groups, node identity.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use drakkar::address;
use drakkar_client::connect::{self, Connector};
use drakkar_client::pb::{self, admin_client::AdminClient};
use drakkar_client::reason;
use drakkar_client::tls::ClientTls;
use drakkar_raft::{GroupId, MemberRole, ReplicaId};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use super::forward::forwarded;
use super::ops::{Call, Route};
use super::status::{self, invalid, to_status, with_reason};
use super::{KvKind, ServerState};
use drakkar::statemachine::OnDiskStateMachine;
use drakkar::{GroupMembership, MembershipChange, NodeError, NodeHost, ReplicaState, StartMode};
use drakkar_kv::DiskKv;

/// The Admin service.
pub(super) struct AdminService(pub(super) Arc<ServerState>);

const CHUNK: usize = 1 << 20;

/// Snapshot imports a node receives at once. They have their own slots, apart from the requests in
/// flight: an import holds its slot for its whole stream.
pub(super) const MAX_IMPORTS: usize = 2;

fn role_of(role: i32) -> Result<MemberRole, Status> {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Voter) => Ok(MemberRole::Voter),
        Ok(pb::Role::NonVoter) => Ok(MemberRole::NonVoter),
        Ok(pb::Role::Witness) => Ok(MemberRole::Witness),
        Err(_) => Err(invalid(format!("unknown role {role}"))),
    }
}

fn replica(id: u64) -> Result<ReplicaId, Status> {
    if id == 0 { Err(invalid("replica id 0 is reserved")) } else { Ok(ReplicaId(id)) }
}

/// A member's address as a membership may record it (see [`drakkar::address`]); `who` names the
/// member in the message (the address itself may be 64 KiB of garbage: never echoed whole).
fn member_address(addr: &str, who: &str) -> Result<(), Status> {
    address::validate(addr).map_err(|e| invalid(format!("{who}: invalid address: {e}")))
}

/// The membership as the protocol shows it, with the leader this replica knows.
fn membership(host: &NodeHost, g: GroupId, m: GroupMembership) -> pb::MembershipResponse {
    let roles = [
        (&m.membership.voters, pb::Role::Voter),
        (&m.membership.non_voters, pb::Role::NonVoter),
        (&m.membership.witnesses, pb::Role::Witness),
    ];
    let mut members = Vec::new();
    for (ids, role) in roles {
        for id in ids {
            let address = m.addresses.get(id).cloned().unwrap_or_default();
            members.push(pb::Member { replica: id.0, address, role: role as i32 });
        }
    }
    members.sort_by_key(|x| x.replica);
    let (leader, term) = host.leader(g).ok().flatten().map_or((0, 0), |(l, t)| (l.0, t.0));
    pb::MembershipResponse {
        group: g.0,
        conf_index: m.conf_index,
        members,
        removed: m.membership.removed.iter().map(|r| r.0).collect(),
        leader,
        term,
    }
}

impl AdminService {
    fn node_info(&self) -> pb::NodeInfoResponse {
        let s = &self.0;
        let info = s.host.info();
        pb::NodeInfoResponse {
            address: info.address,
            incarnation: format!("{:032x}", info.incarnation),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kv_groups: s.kv_groups().into_iter().map(|g| g.0).collect(),
            ready: s.is_ready(),
        }
    }

    async fn change(
        &self,
        g: GroupId,
        r: Result<GroupMembership, crate::NodeError>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let host = &self.0.host;
        r.map(|m| Response::new(membership(host, g, m))).map_err(|e| to_status(e, host, g))
    }

    /// Membership changes and leader transfers run on the group's leader only: after this replica
    /// refused `msg` with `NoLeader`, passes it to the leader when another node runs it, and returns the
    /// leader's answer. Not when a node forwarded `msg` here (one hop at most), nor when the leader cannot
    /// be reached: then UNAVAILABLE `not-leader` with the leader hint. No leader known: `refused`.
    async fn via_leader<M, T, F, Fut>(
        &self,
        g: GroupId,
        call: &Call,
        msg: M,
        refused: NodeError,
        send: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(AdminClient<tonic::transport::Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let s = &self.0;
        let Some((leader, addr)) = leader_elsewhere(&s.host, g) else {
            return Err(to_status(refused, &s.host, g));
        };
        let why =
            format!("this node's replica of group {g} is not its leader (replica {leader} at {addr} is)");
        if call.forwarded {
            return Err(status::not_leader(&s.host, g, &why));
        }
        let tls = s.tls.clone().map(|t| t as Arc<dyn ClientTls>);
        let connector = Connector::new(tls, crate::peer::PEER_CONNECT_TIMEOUT);
        let Ok(ch) = connect::channel_with(&addr, connector, crate::peer::PEER_KEEPALIVE) else {
            return Err(status::not_leader(&s.host, g, &why));
        };
        match send(AdminClient::new(ch), forwarded(msg, call.timeout)).await {
            // Not reachable (no reason given by a node): the client should go there itself, or retry.
            Err(e)
                if e.code() == Code::Unavailable
                    && !e.metadata().contains_key(drakkar_client::REASON_HEADER) =>
            {
                tracing::debug!(group = g.0, %addr, error = %e, "passing a request to the leader failed");
                Err(status::not_leader(&s.host, g, &format!("{why}, and is not reachable from here")))
            }
            r => r,
        }
    }
}

/// The leader of `g` and its address, when it is known and is not this node's replica.
fn leader_elsewhere(host: &NodeHost, g: GroupId) -> Option<(ReplicaId, String)> {
    let me = host.replica_info(g).map(|i| i.replica).ok()?;
    let (leader, _) = host.leader(g).ok()??;
    if leader == me {
        return None;
    }
    let addr = host.membership(g).ok()?.addresses.get(&leader)?.clone();
    (addr != host.info().address).then_some((leader, addr))
}

/// A file under `imports/`, removed when dropped: however an import ends (refused, failed, cancelled
/// by the client, or its handler's future dropped), it leaves no file behind.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How long and how large an import stream may be.
struct ImportLimits {
    /// Longest wait for the next message.
    idle: Duration,
    /// When the whole stream must have arrived.
    deadline: Instant,
    /// The stream's whole time (for messages).
    total: Duration,
    /// Largest file accepted.
    max_bytes: u64,
}

impl ImportLimits {
    /// The next message of `stream`; DEADLINE_EXCEEDED when none comes within `idle` or the deadline.
    async fn next(
        &self,
        stream: &mut tonic::Streaming<pb::ImportSnapshotChunk>,
    ) -> Result<Option<pb::ImportSnapshotChunk>, Status> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(self.idle.min(left), stream.message()).await {
            Ok(next) => next,
            Err(_) if self.idle < left => Err(Status::deadline_exceeded(format!(
                "no snapshot data for {:?}: the import is abandoned",
                self.idle
            ))),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the import did not complete within its deadline of {:?}",
                self.total
            ))),
        }
    }
}

/// Writes `first` and then every chunk of `stream` to a new file at `path`; returns its size. Refuses a
/// stream past `lim` (nothing more is written) or naming the target twice.
async fn receive_file(
    path: &Path,
    first: bytes::Bytes,
    stream: &mut tonic::Streaming<pb::ImportSnapshotChunk>,
    lim: &ImportLimits,
) -> Result<u64, Status> {
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| Status::internal(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut data = first;
    let mut total = 0u64;
    loop {
        total += data.len() as u64;
        if total > lim.max_bytes {
            return Err(invalid(format!(
                "the snapshot is larger than this node's limit of {} bytes",
                lim.max_bytes
            )));
        }
        file.write_all(&data).await.map_err(io)?;
        let Some(chunk) = lim.next(stream).await? else { break };
        if chunk.target.is_some() {
            return Err(invalid("only the first message names the target"));
        }
        data = chunk.data;
    }
    // Every write completed before the file is read through another handle.
    file.flush().await.map_err(io)?;
    Ok(total)
}

/// Verifies and installs the received snapshot `file` as replica `id` of group `g` (blocking). The state
/// machine data is recovered into a scratch [`DiskKv`] at `scratch`, then dropped: both built-in kinds
/// share that stream format, and the scratch keeps memory bounded. Only once the import switched is an
/// on-disk KV file of an earlier life of the replica removed (it would shadow the imported state).
fn install(
    s: &ServerState,
    g: GroupId,
    id: ReplicaId,
    file: &Staged,
    scratch: &Staged,
    members: BTreeMap<ReplicaId, String>,
) -> Result<drakkar_raft::LogIndex, NodeError> {
    let kv = DiskKv::new(&scratch.0);
    kv.open_db().map_err(|e| NodeError::Storage(format!("{}: {e}", scratch.0.display())))?;
    let index = s.host.import_snapshot(g, id, &file.0, members, |body| {
        kv.recover_from_snapshot(body, &drakkar::statemachine::Stop::default())
    })?;
    drop(kv);
    let kv_path = s.kv_path(g);
    match std::fs::remove_file(&kv_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            let e = format!("imported at index {index}, but removing {}: {e}", kv_path.display());
            return Err(NodeError::Storage(e));
        }
    }
    Ok(index)
}

/// Proposes `c` on `g` and waits until it is applied here: the membership after it.
async fn change(
    host: &NodeHost,
    g: GroupId,
    c: MembershipChange,
    expected_conf_index: u64,
    timeout: Duration,
) -> Result<GroupMembership, NodeError> {
    host.change_membership(g, c, expected_conf_index)?.wait(timeout).await?;
    host.membership(g)
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn add_replica(
        &self,
        req: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        member_address(&req.get_ref().address, "the new replica")?;
        let (s, call, r, g) = serve_or_forward!(self, req, false, AdminClient, add_replica);
        let (id, role) = (replica(r.replica)?, role_of(r.role)?);
        match change(
            &s.host,
            g,
            MembershipChange::Add { replica: id, address: r.address.clone(), role },
            r.expected_conf_index,
            call.timeout,
        )
        .await
        {
            Err(e @ NodeError::NoLeader { .. }) => {
                self.via_leader(g, &call, r, e, |mut c, m| async move { c.add_replica(m).await }).await
            }
            res => self.change(g, res).await,
        }
    }

    async fn promote_replica(
        &self,
        req: Request<pb::PromoteReplicaRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, false, AdminClient, promote_replica);
        match change(
            &s.host,
            g,
            MembershipChange::Promote(replica(r.replica)?),
            r.expected_conf_index,
            call.timeout,
        )
        .await
        {
            Err(e @ NodeError::NoLeader { .. }) => {
                self.via_leader(g, &call, r, e, |mut c, m| async move { c.promote_replica(m).await }).await
            }
            res => self.change(g, res).await,
        }
    }

    async fn remove_replica(
        &self,
        req: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, false, AdminClient, remove_replica);
        match change(
            &s.host,
            g,
            MembershipChange::Remove(replica(r.replica)?),
            r.expected_conf_index,
            call.timeout,
        )
        .await
        {
            Err(e @ NodeError::NoLeader { .. }) => {
                self.via_leader(g, &call, r, e, |mut c, m| async move { c.remove_replica(m).await }).await
            }
            res => self.change(g, res).await,
        }
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let (s, call, r, g) = serve_or_forward!(self, req, false, AdminClient, transfer_leader);
        match s.host.transfer_leader(g, replica(r.to)?).await {
            Ok(()) => Ok(Response::new(pb::TransferLeaderResponse {})),
            Err(e @ NodeError::NoLeader { .. }) => {
                self.via_leader(g, &call, r, e, |mut c, m| async move { c.transfer_leader(m).await }).await
            }
            Err(e) => Err(to_status(e, &s.host, g)),
        }
    }

    async fn get_membership(
        &self,
        req: Request<pb::GetMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let (s, _call, _r, g) = serve_or_forward!(self, req, false, AdminClient, get_membership);
        let res = s.host.membership(g);
        self.change(g, res).await
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = &self.0;
        let _call = s.begin(&req)?;
        let mut groups = Vec::new();
        for g in s.host.groups() {
            let Ok((rep, state)) = s.host.replica_state(g) else { continue };
            let kind = s.kv_kind(g).map(|k| k.name().to_string()).unwrap_or_default();
            let (state, stop_reason) = match state {
                ReplicaState::Running => (pb::ReplicaState::Running, String::new()),
                ReplicaState::Stopped(r) => (pb::ReplicaState::Stopped, r),
                ReplicaState::ReplicaIdReused => (
                    pb::ReplicaState::IdReused,
                    "replica id reused after data loss: replace it under a new id".to_string(),
                ),
            };
            if state != pb::ReplicaState::Running {
                groups.push(pb::GroupStatus {
                    group: g.0,
                    replica: rep.0,
                    kind,
                    state: state as i32,
                    stop_reason,
                    ..Default::default()
                });
                continue;
            }
            let (Ok(info), Ok(m)) = (s.host.replica_info(g), s.host.membership(g)) else {
                continue;
            };
            let (rep, applied) = (info.replica, info.applied);
            let (leader, term) = s.host.leader(g).ok().flatten().map_or((0, 0), |(l, t)| (l.0, t.0));
            let leader_address = m.addresses.get(&ReplicaId(leader)).cloned().unwrap_or_default();
            let ms = &m.membership;
            groups.push(pb::GroupStatus {
                group: g.0,
                replica: rep.0,
                leader,
                term,
                applied_index: applied.0,
                conf_index: m.conf_index,
                leader_address,
                kind,
                members: (ms.voters.len() + ms.non_voters.len() + ms.witnesses.len()) as u32,
                state: pb::ReplicaState::Running as i32,
                stop_reason: String::new(),
            });
        }
        Ok(Response::new(pb::StatusResponse { node: Some(self.node_info()), groups }))
    }

    type ExportSnapshotStream = ChunkStream;

    async fn export_snapshot(
        &self,
        req: Request<pb::ExportSnapshotRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let s = &self.0;
        let call = s.begin(&req)?;
        let r = req.into_inner();
        let g = GroupId(r.group);
        if s.route(g, false, &call)? == Route::Forward {
            let t = call.timeout;
            let stream = s
                .forward
                .forward(&s.host, g, |ch| async move {
                    AdminClient::new(ch).export_snapshot(forwarded(r, t)).await
                })
                .await?;
            return Ok(Response::new(Box::pin(stream)));
        }
        let dir = s.data_dir.join("exports");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| status::internal(format!("{}: {e}", dir.display())))?;
        let path = dir.join(format!("group-{}-{:016x}.snap", g.0, crate::health::nonce()));
        let index = s.host.request_snapshot(g, Some(&path), call.timeout).await;
        let index = match index {
            Ok(i) => i,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(to_status(e, &s.host, g));
            }
        };
        let file = tokio::fs::File::open(&path).await;
        // Unlinked at once: the open handle keeps the data until the stream ends, however it ends.
        let _ = tokio::fs::remove_file(&path).await;
        let mut file = file.map_err(|e| status::internal(format!("exported snapshot: {e}")))?;
        let total = file.metadata().await.map_err(|e| status::internal(e.to_string()))?.len();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = match file.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(status::internal(format!("reading the snapshot: {e}")))).await;
                        return;
                    }
                };
                if n == 0 && !first {
                    return;
                }
                buf.truncate(n);
                let (index, total_size) = if first { (index.0, total) } else { (0, 0) };
                first = false;
                let chunk = pb::SnapshotChunk { index, total_size, data: buf.into() };
                if tx.send(Ok(chunk)).await.is_err() || n == 0 {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn import_snapshot(
        &self,
        req: Request<tonic::Streaming<pb::ImportSnapshotChunk>>,
    ) -> Result<Response<pb::ImportSnapshotResponse>, Status> {
        let s = self.0.clone();
        let _slot = s.imports.clone().try_acquire_owned().map_err(|_| {
            let msg = format!("{MAX_IMPORTS} snapshot imports are in progress on this node");
            with_reason(Code::ResourceExhausted, msg, reason::BUSY)
        })?;
        // A stream's length depends on the file's size: without a deadline of its own, the longest honoured.
        let total = status::deadline(&req, s.cfg.max_timeout, s.cfg.max_timeout);
        let lim = ImportLimits {
            idle: s.cfg.default_timeout,
            deadline: Instant::now() + total,
            total,
            max_bytes: s.cfg.max_snapshot_bytes,
        };
        let mut stream = req.into_inner();
        let first = lim.next(&mut stream).await?.ok_or_else(|| invalid("an empty import stream"))?;
        let target = first.target.ok_or_else(|| invalid("the first message must name the target"))?;
        let (g, id) = (GroupId(target.group), replica(target.replica)?);
        let mut members = BTreeMap::new();
        for m in target.members {
            if m.role != pb::Role::Voter as i32 {
                return Err(invalid("the new membership is made of voters"));
            }
            if m.address.trim().is_empty() {
                return Err(invalid(format!("member {} has no address", m.replica)));
            }
            member_address(&m.address, &format!("member {}", m.replica))?;
            if members.insert(replica(m.replica)?, m.address).is_some() {
                return Err(invalid(format!("member {} is listed twice", m.replica)));
            }
        }
        if !members.contains_key(&id) {
            return Err(invalid("the new membership must include this replica"));
        }
        if s.host.replica_info(g).map(|i| i.replica).is_ok() {
            return Err(invalid(format!("stop group {g} on this node before importing a snapshot")));
        }
        // Received into a file first: the import needs the whole, verified file, and memory stays bounded.
        let dir = s.data_dir.join("imports");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
        let stem = format!("group-{}-{:016x}", g.0, crate::health::nonce());
        let file = Staged(dir.join(format!("{stem}.snap")));
        let bytes = receive_file(&file.0, first.data, &mut stream, &lim).await?;
        let scratch = Staged(dir.join(format!("{stem}.verify.redb")));
        let host = s.host.clone();
        // The staged files move into the task: they stay until it ends even if this future is dropped.
        let res = tokio::task::spawn_blocking(move || install(&s, g, id, &file, &scratch, members))
            .await
            .map_err(|e| Status::internal(format!("importing the snapshot: {e}")))?;
        let index = res.map_err(|e| to_status(e, &host, g))?;
        Ok(Response::new(pb::ImportSnapshotResponse { index: index.0, bytes }))
    }

    async fn start_group(
        &self,
        req: Request<pb::StartGroupRequest>,
    ) -> Result<Response<pb::StartGroupResponse>, Status> {
        let s = self.0.clone();
        let _call = s.begin(&req)?;
        let r = req.into_inner();
        let g = GroupId(r.group);
        let id = replica(r.replica)?;
        let kind = match pb::StateMachineKind::try_from(r.kind) {
            Ok(pb::StateMachineKind::KvMemory) => KvKind::Memory,
            Ok(pb::StateMachineKind::KvDisk) => KvKind::Disk,
            Err(_) => return Err(invalid(format!("unknown state machine kind {}", r.kind))),
        };
        let mode = if r.join {
            StartMode::Joining
        } else {
            let mut members = BTreeMap::new();
            for m in r.initial_members {
                if m.role != pb::Role::Voter as i32 {
                    return Err(invalid("founding members are voters"));
                }
                member_address(&m.address, &format!("member {}", m.replica))?;
                members.insert(replica(m.replica)?, m.address);
            }
            if !members.contains_key(&id) {
                return Err(invalid("the founding members must include this replica"));
            }
            StartMode::Founding(members)
        };
        let host = s.host.clone();
        let res = tokio::task::spawn_blocking(move || s.start_kv_group(g, id, mode, kind))
            .await
            .map_err(|e| status::internal(format!("starting the group: {e}")))?;
        res.map_err(|e| to_status(e, &host, g))?;
        Ok(Response::new(pb::StartGroupResponse {}))
    }

    async fn stop_group(
        &self,
        req: Request<pb::StopGroupRequest>,
    ) -> Result<Response<pb::StopGroupResponse>, Status> {
        let s = &self.0;
        let _call = s.begin(&req)?;
        let r = req.into_inner();
        let g = GroupId(r.group);
        s.stop_group(g, r.remove_data).await.map_err(|e| to_status(e, &s.host, g))?;
        Ok(Response::new(pb::StopGroupResponse {}))
    }

    async fn node_info(
        &self,
        req: Request<pb::NodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfoResponse>, Status> {
        let _call = self.0.begin(&req)?;
        Ok(Response::new(self.node_info()))
    }
}
