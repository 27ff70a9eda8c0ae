//! How NodeHosts reach each other: the [`Transport`] trait (sending) and the [`MessageSink`] trait
//! (receiving), and [`InProcessNetwork`], a plain transport between NodeHosts in one process (several
//! NodeHosts in one program, benchmarks, tests). It injects no fault: networks that lose, duplicate,
//! reorder and partition traffic are for tests only, in the dev crate `drakkar-sim` (`SimNetwork`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use drakkar_raft::{GroupId, Message, ReplicaId};

/// Messages from one NodeHost to another, batched.
#[derive(Clone, Debug, Default)]
pub struct MessageBatch {
    /// The sender's address.
    pub from: String,
    /// The sender's data-directory incarnation id (see [`crate::NodeHostInfo::incarnation`]).
    pub incarnation: u128,
    /// Messages, each for one group.
    pub messages: Vec<(GroupId, Message)>,
    /// Replicas of the receiver that the sender refuses: their ids were reused by a node that lost its
    /// data (see [`crate::NodeHostInfo::incarnation`]). They must be replaced under new ids.
    pub reused: Vec<(GroupId, drakkar_raft::ReplicaId)>,
}

/// The receiving side: what a transport hands incoming traffic to (a NodeHost).
///
/// `from` addresses are the sender's, as the transport authenticated them (with TLS, the peer's
/// certificate is valid for that host): the receiver admits traffic only from the members of the target
/// group at their recorded address (see [`MessageSink::deliver`] and [`MessageSink::admit_snapshot`]).
pub trait MessageSink: Send + Sync {
    /// Delivers a batch. Never blocks; may drop messages when queues are full. Messages for groups the
    /// receiver does not run, or from replicas that are not members at `batch.from`, are dropped (and
    /// counted); so are `reused` notices from non-members.
    fn deliver(&self, batch: MessageBatch);
    /// Whether a snapshot stream from the node at `from` carrying `msg` for `group` may begin: called
    /// before anything is written. The default refuses every snapshot (a sink that takes none).
    fn admit_snapshot(&self, from: &str, group: GroupId, msg: &Message) -> Result<(), String> {
        let _ = (from, msg);
        Err(format!("group {group}: this receiver takes no snapshots"))
    }
    /// A new, unused path in the receiver's own snapshot directory of `group`, for the transport to write an
    /// incoming snapshot file to (on disk as it arrives: memory stays bounded whatever the size); call it
    /// after [`MessageSink::admit_snapshot`]. Fails for a group the receiver does not run (nothing is
    /// created). The transport removes the file however the transfer ends, unless it hands it over to
    /// [`MessageSink::receive_snapshot`].
    fn snapshot_landing(&self, group: GroupId) -> Result<std::path::PathBuf, String>;
    /// Receives the `Snapshot` message for `group` and the file written at a path from
    /// [`MessageSink::snapshot_landing`] (None: a data-less snapshot, e.g. for a witness). The receiver
    /// verifies the whole file against the message before it keeps it, and removes it when refused.
    fn receive_snapshot(
        &self,
        group: GroupId,
        msg: Message,
        file: Option<std::path::PathBuf>,
    ) -> Result<(), String>;
    /// The transport could not reach these replicas (a failed connection or stream): messages to them
    /// were lost. Their leaders stop streaming entries to them and probe instead until they answer.
    /// Never blocks.
    fn unreachable(&self, targets: Vec<(GroupId, ReplicaId)>);
}

/// The distinct (group, recipient) pairs of `batch`'s messages: what [`MessageSink::unreachable`] takes.
pub fn recipients(batch: &MessageBatch) -> Vec<(GroupId, ReplicaId)> {
    let mut v: Vec<(GroupId, ReplicaId)> = batch.messages.iter().map(|(g, m)| (*g, m.to)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Called when a snapshot transfer ends: `true` if the receiver accepted it.
pub type SnapshotDone = Box<dyn FnOnce(bool) + Send>;

/// The sending side.
pub trait Transport: Send + Sync {
    /// Sends a batch to the NodeHost at `to`. Never blocks; messages may be lost (Raft retries).
    fn send(&self, to: &str, batch: MessageBatch);
    /// Streams the snapshot file at `file` to `to`, then delivers `msg` there; reports the outcome.
    fn send_snapshot(&self, req: SnapshotRequest, done: SnapshotDone);
}

/// A snapshot to stream to a peer.
#[derive(Debug)]
pub struct SnapshotRequest {
    /// Sender's address.
    pub from: String,
    /// Receiver's address.
    pub to: String,
    /// The group.
    pub group: GroupId,
    /// The `Snapshot` message to deliver once the file arrived.
    pub msg: Message,
    /// The snapshot file (none for metadata-only snapshots, e.g. to witnesses).
    pub file: Option<PathBuf>,
}

/// A network of NodeHosts inside one process: each batch is delivered inside [`Transport::send`], on the
/// sender's thread, and each snapshot file is copied inside [`Transport::send_snapshot`]. Nothing is lost,
/// duplicated, delayed or reordered; a batch for an address nobody registered (or whose NodeHost is gone)
/// is dropped, as a connection nobody answers. Clones share the same network.
#[derive(Clone, Default)]
pub struct InProcessNetwork {
    sinks: Arc<Mutex<HashMap<String, Weak<dyn MessageSink>>>>,
}

impl InProcessNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `sink` reachable at `address` (a restarted NodeHost registers again, replacing the old one).
    pub fn register(&self, address: &str, sink: Weak<dyn MessageSink>) {
        if let Ok(mut sinks) = self.sinks.lock() {
            sinks.insert(address.to_string(), sink);
        }
    }

    /// A transport for a NodeHost of this network.
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.clone())
    }

    /// The live NodeHost at `address`. The lock is released before the caller delivers, so a sink may send.
    fn sink(&self, address: &str) -> Option<Arc<dyn MessageSink>> {
        self.sinks.lock().ok()?.get(address).and_then(Weak::upgrade)
    }
}

impl Transport for InProcessNetwork {
    fn send(&self, to: &str, batch: MessageBatch) {
        if let Some(sink) = self.sink(to) {
            sink.deliver(batch);
        }
    }

    fn send_snapshot(&self, req: SnapshotRequest, done: SnapshotDone) {
        let Some(sink) = self.sink(&req.to) else { return done(false) };
        done(land_snapshot(sink.as_ref(), req).is_ok());
    }
}

/// Delivers a snapshot sent within one process (by an in-process network such as [`InProcessNetwork`]):
/// admits it, copies its file to the receiver's landing path and hands it over.
pub fn land_snapshot(sink: &dyn MessageSink, req: SnapshotRequest) -> Result<(), String> {
    sink.admit_snapshot(&req.from, req.group, &req.msg)?;
    let file = match &req.file {
        Some(src) => {
            let dst = sink.snapshot_landing(req.group)?;
            if let Err(e) = std::fs::copy(src, &dst) {
                // The file may have been replaced by a newer snapshot meanwhile: Raft sends again.
                let _ = std::fs::remove_file(&dst);
                return Err(format!("copying {}: {e}", src.display()));
            }
            Some(dst)
        }
        None => None,
    };
    sink.receive_snapshot(req.group, req.msg, file)
}
