//! How NodeHosts reach each other: the [`Transport`] trait, and [`InProcessNetwork`], a transport between
//! NodeHosts in one process (tests and benchmarks) that can drop, duplicate, delay and partition.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use drakkar_raft::{GroupId, Message, ReplicaId, Rng};

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

/// Fault settings of an [`InProcessNetwork`].
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Percent of messages dropped.
    pub drop_pct: u64,
    /// Percent of messages delivered twice.
    pub dup_pct: u64,
    /// Extra delivery delay (each delayed batch waits this long on a timer thread).
    pub delay: Option<Duration>,
    /// Addresses cut off from everyone not in the same set.
    pub partition: Option<BTreeSet<String>>,
}

struct NetState {
    sinks: HashMap<String, Weak<dyn MessageSink>>,
    faults: Faults,
    rng: Rng,
    delayed: Vec<(Instant, String, MessageBatch)>,
}

/// A network of NodeHosts inside one process.
#[derive(Clone)]
pub struct InProcessNetwork {
    state: Arc<Mutex<NetState>>,
}

impl Default for InProcessNetwork {
    fn default() -> Self {
        Self::new(1)
    }
}

impl InProcessNetwork {
    /// An empty network; `seed` drives its fault decisions.
    pub fn new(seed: u64) -> Self {
        let state = NetState {
            sinks: HashMap::new(),
            faults: Faults::default(),
            rng: Rng::new(seed),
            delayed: Vec::new(),
        };
        InProcessNetwork { state: Arc::new(Mutex::new(state)) }
    }

    /// Makes `sink` reachable at `address`.
    pub fn register(&self, address: &str, sink: Weak<dyn MessageSink>) {
        if let Ok(mut s) = self.state.lock() {
            s.sinks.insert(address.to_string(), sink);
        }
    }

    /// Replaces the fault settings.
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut s) = self.state.lock() {
            s.faults = faults;
        }
    }

    /// A transport for the NodeHost at `address`.
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.clone())
    }

    fn cut(faults: &Faults, a: &str, b: &str) -> bool {
        faults.partition.as_ref().is_some_and(|p| p.contains(a) != p.contains(b))
    }

    /// Delivers delayed batches that are due. Called on every send, and by [`InProcessNetwork::flush`].
    fn release_due(&self) {
        type Due = (String, MessageBatch, Option<Arc<dyn MessageSink>>);
        let due: Vec<Due> = {
            let Ok(mut s) = self.state.lock() else { return };
            let now = Instant::now();
            let (ready, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut s.delayed).into_iter().partition(|d| d.0 <= now);
            s.delayed = later;
            ready
                .into_iter()
                .map(|(_, to, b)| {
                    let sink = s.sinks.get(&to).and_then(Weak::upgrade);
                    (to, b, sink)
                })
                .collect()
        };
        for (_, b, sink) in due {
            if let Some(sink) = sink {
                sink.deliver(b);
            }
        }
    }

    /// Delivers every delayed batch now.
    pub fn flush(&self) {
        if let Ok(mut s) = self.state.lock() {
            for d in &mut s.delayed {
                d.0 = Instant::now();
            }
        }
        self.release_due();
    }
}

impl Transport for InProcessNetwork {
    fn send(&self, to: &str, mut batch: MessageBatch) {
        self.release_due();
        let (sink, dup) = {
            let Ok(mut s) = self.state.lock() else { return };
            if Self::cut(&s.faults, &batch.from, to) {
                // As a refused connection: the sender learns its peers there are unreachable.
                let sender = s.sinks.get(&batch.from).and_then(Weak::upgrade);
                drop(s);
                if let Some(sender) = sender {
                    sender.unreachable(recipients(&batch));
                }
                return;
            }
            let (drop_pct, dup_pct) = (s.faults.drop_pct, s.faults.dup_pct);
            if drop_pct > 0 {
                let mut kept = Vec::with_capacity(batch.messages.len());
                for m in batch.messages {
                    if !s.rng.chance(drop_pct, 100) {
                        kept.push(m);
                    }
                }
                batch.messages = kept;
            }
            let dup = dup_pct > 0 && s.rng.chance(dup_pct, 100);
            if let Some(d) = s.faults.delay {
                let at = Instant::now() + d;
                s.delayed.push((at, to.to_string(), batch));
                return;
            }
            (s.sinks.get(to).and_then(Weak::upgrade), dup)
        };
        if let Some(sink) = sink {
            if dup {
                sink.deliver(batch.clone());
            }
            sink.deliver(batch);
        }
    }

    fn send_snapshot(&self, req: SnapshotRequest, done: SnapshotDone) {
        let sink = {
            let Ok(s) = self.state.lock() else { return done(false) };
            if Self::cut(&s.faults, &req.from, &req.to) {
                return done(false);
            }
            s.sinks.get(&req.to).and_then(Weak::upgrade)
        };
        let Some(sink) = sink else { return done(false) };
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
