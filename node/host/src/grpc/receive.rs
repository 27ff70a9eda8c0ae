//! The receiving side of the gRPC transport: the `drakkar.v1.Raft` service, feeding the NodeHost's
//! [`crate::transport::MessageSink`].
//!
//! With TLS, a stream is accepted only from a connection that presented a client certificate (checked
//! against the CA before anything is read), and that certificate must be valid for the host name of the
//! stream's `from` address (see [`super::tls`]). Every batch of a stream must name the same `from`.

use std::sync::{Arc, Weak};

use bytes::BytesMut;
use drakkar_client::pb::{self, raft_server::RaftServer};
use drakkar_raft::GroupId;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::server::ServerState;
use crate::server::incoming::ConnInfo;
use crate::transport::MessageSink;

/// Largest Raft message batch accepted (one entry may hold a 32 MiB value).
pub const MAX_BATCH_BYTES: usize = 64 << 20;

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

    fn verify_from(
        &self,
        certs: &Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
        from: &str,
    ) -> Result<(), Status> {
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
        let header = match stream.message().await? {
            Some(pb::RaftSnapshotChunk { part: Some(Part::Header(h)) }) => h,
            _ => return Err(Status::invalid_argument("a snapshot stream starts with its header")),
        };
        self.verify_from(&certs, &header.from)?;
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
        let mut data = BytesMut::with_capacity(header.size.min(64 << 20) as usize);
        loop {
            let chunk = tokio::select! {
                _ = self.stop.cancelled() => return Err(Status::unavailable("node is shutting down")),
                c = stream.message() => c?,
            };
            match chunk {
                None => break,
                Some(pb::RaftSnapshotChunk { part: Some(Part::Data(d)) }) => {
                    if data.len() as u64 + d.len() as u64 > header.size {
                        return Err(Status::invalid_argument("more snapshot bytes than announced"));
                    }
                    data.extend_from_slice(&d);
                }
                Some(_) => return Err(Status::invalid_argument("a second snapshot header")),
            }
        }
        if data.len() as u64 != header.size {
            return Ok(Response::new(pb::RaftSnapshotAck {
                accepted: false,
                error: format!("snapshot stream ended after {} of {} bytes", data.len(), header.size),
            }));
        }
        let sink = self.sink()?;
        let group = GroupId(header.group);
        let data = data.freeze();
        // Writes and fsyncs the file: not on the async workers.
        let r = tokio::task::spawn_blocking(move || sink.receive_snapshot(group, msg, data))
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
