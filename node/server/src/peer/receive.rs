//! The receiving side of the gRPC transport: the `drakkar.v1.Raft` service, feeding the NodeHost's
//! [`drakkar::transport::MessageSink`].
//!
//! With TLS, a stream is accepted only from a connection that presented a client certificate (checked
//! against the CA before anything is read), and that certificate must be valid for the host name of the
//! stream's `from` address (see [`crate::tls`]). Every batch of a stream must name the same `from`.
//!
//! That authenticated address is then checked, message by message, against the membership of the target
//! group as this node knows it ([`MessageSink`]; see `drakkar::identity`): a certificate from the cluster's
//! CA is not enough, the sender must be a member at that address. A snapshot stream is admitted before
//! anything is written, and its partial file is removed however the stream ends ([`Landing`]): an error,
//! the call's deadline, a cancelled call, shutdown.
//!
//! A stream from a peer is a sign it is up: the node's transport is told ([`super::heard_from`]), which
//! reconnects to it at once if its own connection to that peer is down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use crate::peer::pb::{self, raft_server::RaftServer};
use drakkar_raft::GroupId;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::ServerState;
use crate::incoming::ConnInfo;
use drakkar::transport::MessageSink;

/// Largest Raft message batch accepted (one entry may hold a 32 MiB value).
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// A snapshot file being received, removed when dropped unless handed over ([`Landing::keep`]). tonic
/// drops a handler's future when the call's deadline passes or the client cancels it, so removal in the
/// handler's own code would be skipped then: the guard's `Drop` runs in every case.
struct Landing(Option<PathBuf>);

impl Landing {
    /// Creates the (empty) file at `path`: synchronously, so no task left behind can create it after the
    /// guard is dropped.
    fn create(path: PathBuf) -> Result<(Landing, tokio::fs::File), Status> {
        let file =
            std::fs::File::create(&path).map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
        Ok((Landing(Some(path)), tokio::fs::File::from_std(file)))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// The file, no longer removed by the guard: the caller owns it.
    fn keep(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "removing a partial snapshot file failed");
        }
    }
}

/// The Raft service.
pub struct RaftService {
    state: Arc<ServerState>,
    sink: Weak<dyn MessageSink>,
    stop: CancellationToken,
}

impl RaftService {
    /// The service for the node of `state`; its streams end when `stop` fires.
    pub fn new(state: Arc<ServerState>, stop: CancellationToken) -> Self {
        let sink = state.host().sink();
        RaftService { state, sink, stop }
    }

    /// The tonic server, with the message size limit.
    pub fn into_server(self) -> RaftServer<RaftService> {
        RaftServer::new(self).max_decoding_message_size(MAX_BATCH_BYTES).max_encoding_message_size(1 << 20)
    }

    /// The connection's certificates, required with TLS.
    fn peer_certs<T>(
        &self,
        req: &Request<T>,
    ) -> Result<Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>, Status> {
        if self.state.tls().is_none() {
            return Ok(None);
        }
        let info = req.extensions().get::<ConnInfo>();
        match info.and_then(|i| i.certs.clone()).filter(|c| !c.is_empty()) {
            Some(c) => Ok(Some(c)),
            None => Err(Status::unauthenticated("the Raft service needs a node certificate (mutual TLS)")),
        }
    }

    /// Writes the data chunks of `stream` to `file` (at `landing`), expecting `size` bytes.
    /// `Ok(Some(why))`: the stream ended short (the sender gave up), to be answered as a refusal.
    async fn land(
        &self,
        landing: &Landing,
        file: tokio::fs::File,
        stream: &mut Streaming<pb::RaftSnapshotChunk>,
        size: u64,
    ) -> Result<Option<String>, Status> {
        use pb::raft_snapshot_chunk::Part;
        use tokio::io::AsyncWriteExt;
        let io = |e: std::io::Error| Status::internal(format!("{}: {e}", landing.path().display()));
        let mut file = tokio::io::BufWriter::new(file);
        let mut written = 0u64;
        loop {
            let chunk = tokio::select! {
                _ = self.stop.cancelled() => return Err(Status::unavailable("node is shutting down")),
                c = self.next(stream) => c?,
            };
            match chunk {
                None => break,
                Some(pb::RaftSnapshotChunk { part: Some(Part::Data(d)) }) => {
                    if written + d.len() as u64 > size {
                        return Err(Status::invalid_argument("more snapshot bytes than announced"));
                    }
                    file.write_all(&d).await.map_err(io)?;
                    written += d.len() as u64;
                }
                Some(_) => return Err(Status::invalid_argument("a second snapshot header")),
            }
        }
        file.flush().await.map_err(io)?;
        Ok((written != size).then(|| format!("snapshot stream ended after {written} of {size} bytes")))
    }

    /// The next message of a snapshot stream; DEADLINE_EXCEEDED when none comes within the node's default
    /// request deadline (a sender that stopped sending would otherwise hold the stream, and its landing
    /// file, forever).
    async fn next(
        &self,
        stream: &mut Streaming<pb::RaftSnapshotChunk>,
    ) -> Result<Option<pb::RaftSnapshotChunk>, Status> {
        let idle = self.state.config().default_timeout;
        match tokio::time::timeout(idle, stream.message()).await {
            Ok(next) => next,
            Err(_) => Err(Status::deadline_exceeded(format!("no snapshot data for {idle:?}"))),
        }
    }

    fn verify_from(
        &self,
        certs: &Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
        from: &str,
    ) -> Result<(), Status> {
        // Not an address a member could have (checked first: the messages below quote it, and a status
        // message is an HTTP/2 header: a 2 MiB one broke the client's whole connection).
        drakkar::address::validate(from).map_err(|e| {
            Status::permission_denied(format!("the sender's address is no member address: {e}"))
        })?;
        match (self.state.tls(), certs) {
            (Some(tls), Some(c)) => tls.verify_peer(c, from).map_err(Status::permission_denied),
            _ => Ok(()),
        }
    }

    fn sink(&self) -> Result<Arc<dyn MessageSink>, Status> {
        self.sink.upgrade().ok_or_else(|| Status::unavailable("node is shutting down"))
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn send_messages(
        &self,
        req: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<pb::RaftAck>, Status> {
        let certs = self.peer_certs(&req)?;
        let mut stream = req.into_inner();
        let mut from: Option<String> = None;
        let mut batches = 0u64;
        loop {
            let next = tokio::select! {
                _ = self.stop.cancelled() => break,
                n = stream.message() => n?,
            };
            let Some(b) = next else { break };
            match &from {
                Some(f) if *f == b.from => {}
                Some(_) => {
                    return Err(Status::permission_denied(
                        "every batch of a stream must come from the same node",
                    ));
                }
                None => {
                    self.verify_from(&certs, &b.from)?;
                    // A new stream from a peer: it is up (maybe just restarted), so reconnect to it now.
                    super::heard_from(&self.sink, &b.from);
                    from = Some(b.from.clone());
                }
            }
            batches += 1;
            self.sink()?.deliver(convert::batch_from_pb(b));
        }
        Ok(Response::new(pb::RaftAck { batches }))
    }

    async fn send_snapshot(
        &self,
        req: Request<Streaming<pb::RaftSnapshotChunk>>,
    ) -> Result<Response<pb::RaftSnapshotAck>, Status> {
        use pb::raft_snapshot_chunk::Part;
        let certs = self.peer_certs(&req)?;
        let mut stream = req.into_inner();
        let header = match self.next(&mut stream).await? {
            Some(pb::RaftSnapshotChunk { part: Some(Part::Header(h)) }) => h,
            _ => return Err(Status::invalid_argument("a snapshot stream starts with its header")),
        };
        self.verify_from(&certs, &header.from)?;
        super::heard_from(&self.sink, &header.from);
        let max = self.state.config().max_snapshot_bytes;
        if header.size > max {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {} bytes exceeds the limit {max}",
                header.size
            )));
        }
        let msg = header
            .message
            .and_then(convert::message_from_pb)
            .filter(|m| m.snapshot.is_some())
            .ok_or_else(|| Status::invalid_argument("the header carries no snapshot message"))?;
        let sink = self.sink()?;
        let group = GroupId(header.group);
        // Before anything is written: only a member of a group running here may send it a snapshot.
        sink.admit_snapshot(&header.from, group, &msg).map_err(Status::permission_denied)?;
        // The file goes to disk as it arrives (memory stays bounded); a data-less snapshot has none.
        let file = if header.size == 0 {
            None
        } else {
            let path = sink.snapshot_landing(group).map_err(Status::failed_precondition)?;
            let (landing, file) = Landing::create(path)?;
            // On every early return (and if this future is dropped), `landing` removes the file.
            if let Some(short) = self.land(&landing, file, &mut stream, header.size).await? {
                return Ok(Response::new(pb::RaftSnapshotAck { accepted: false, error: short }));
            }
            landing.keep()
        };
        // Verifies, fsyncs and renames the file: not on the async workers.
        let r = tokio::task::spawn_blocking(move || sink.receive_snapshot(group, msg, file))
            .await
            .map_err(|e| Status::internal(format!("receiving a snapshot: {e}")))?;
        Ok(Response::new(match r {
            Ok(()) => {
                tracing::debug!(group = group.0, from = %header.from, bytes = header.size, "snapshot received");
                pb::RaftSnapshotAck { accepted: true, error: String::new() }
            }
            Err(error) => {
                tracing::warn!(group = group.0, from = %header.from, %error, "snapshot refused");
                pb::RaftSnapshotAck { accepted: false, error }
            }
        }))
    }
}
