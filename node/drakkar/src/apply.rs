//! Apply workers: each owns the state machines of a partition of the groups and applies their committed
//! entries in batches, answers proposers, serves confirmed reads, and takes snapshots.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use drakkar_raft::{GroupId, LogIndex, Membership, ReplicaId, Term};

use crate::error::NodeError;
use crate::payload::{Payload, SessionRef};
use crate::rsm::SmHandle;
use crate::session::{PlainCheck, SessionCheck, Sessions};
use crate::snapshot::{self, SnapshotHeader};
use crate::statemachine::{SmEntry, SmResult};

/// Someone waiting for an entry to be applied or a read to be served.
pub(crate) enum Waiter {
    Propose(tokio::sync::oneshot::Sender<Result<SmResult, NodeError>>),
    Read { query: Bytes, tx: tokio::sync::oneshot::Sender<Result<Bytes, NodeError>> },
    Snapshot(tokio::sync::oneshot::Sender<Result<(LogIndex, PathBuf), NodeError>>),
}

impl Waiter {
    /// Answers with an error, whatever the waiter waits for.
    pub(crate) fn fail(self, e: NodeError) {
        match self {
            Waiter::Propose(tx) => drop(tx.send(Err(e))),
            Waiter::Read { tx, .. } => drop(tx.send(Err(e))),
            Waiter::Snapshot(tx) => drop(tx.send(Err(e))),
        }
    }
}

/// Membership as the host sees it: Raft's membership plus addresses and the last change's index.
#[derive(Clone, Debug, Default)]
pub struct GroupMembership {
    /// Raft's membership.
    pub membership: Membership,
    /// Member addresses.
    pub addresses: BTreeMap<ReplicaId, String>,
    /// Log index of the last applied membership change (the optimistic-lock token).
    pub conf_index: u64,
}

/// State shared between the API, the step worker and the apply worker of one group.
pub(crate) struct GroupShared {
    pub(crate) group: GroupId,
    pub(crate) replica: ReplicaId,
    pub(crate) waiters: std::sync::Mutex<HashMap<u64, Waiter>>,
    pub(crate) sm: SmHandle,
    pub(crate) leader: AtomicU64,
    pub(crate) term: AtomicU64,
    pub(crate) applied: AtomicU64,
    pub(crate) info: std::sync::Mutex<GroupMembership>,
    /// Time-to-live, in log entries, of the sessions this replica registers.
    pub(crate) session_ttl: u64,
    /// The origin of plain proposals made through this start of the replica (random).
    pub(crate) plain_origin: u64,
    /// The next sequence number of a plain proposal made here (see [`crate::payload::ProposalId`]).
    pub(crate) plain_seq: AtomicU64,
    /// Set once the replica stopped, with the reason.
    pub(crate) stopped: std::sync::Mutex<Option<StopReason>>,
    /// Set when the replica (or its NodeHost) is stopping: the state machine's long calls may give up.
    pub(crate) stop: crate::statemachine::Stop,
    /// Started to join an existing group (`StartMode::Joining`): until it applies a membership that
    /// names it, it does not know its role.
    pub(crate) joining: bool,
}

/// Why a replica stopped.
#[derive(Clone, Debug)]
pub(crate) enum StopReason {
    Stopped(String),
    ReplicaIdReused,
}

/// Whether this node's replica of a group runs, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaState {
    /// It runs.
    Running,
    /// It stopped (asked to, removed from the group, or a fatal error), with the reason.
    Stopped(String),
    /// The group's other members refused it: this node lost the data it had under this replica id (a
    /// wiped data directory). It can never run again under this id; it must be removed from the group
    /// and the node added back under a new id.
    ReplicaIdReused,
}

impl GroupShared {
    /// The replica's state.
    pub(crate) fn state(&self) -> ReplicaState {
        match self.stopped.lock().ok().and_then(|s| s.clone()) {
            None => ReplicaState::Running,
            Some(StopReason::Stopped(r)) => ReplicaState::Stopped(r),
            Some(StopReason::ReplicaIdReused) => ReplicaState::ReplicaIdReused,
        }
    }

    /// The error requests get once the replica stopped.
    pub(crate) fn stopped_error(&self) -> Option<NodeError> {
        let r = self.stopped.lock().ok()?.clone()?;
        Some(match r {
            StopReason::Stopped(reason) => {
                NodeError::Stopped { group: self.group, replica: self.replica, reason }
            }
            StopReason::ReplicaIdReused => {
                NodeError::ReplicaIdReused { group: self.group, replica: self.replica }
            }
        })
    }

    /// Whether this replica holds the state machine's data as far as it knows, so requests may run
    /// on it: a voter or non-voter of its applied membership, or, before anything was applied, a
    /// replica that did not join (a founding one). A witness, a removed replica, and a joining replica
    /// that has not applied its own addition yet (a new witness does not know it is one) do not.
    fn serves_data_in(&self, ms: &Membership) -> bool {
        if ms.voters.contains(&self.replica) || ms.non_voters.contains(&self.replica) {
            return true;
        }
        let unknown = ms.voters.is_empty() && ms.non_voters.is_empty() && ms.witnesses.is_empty();
        unknown && !self.joining
    }

    /// (witness, serves data), read under one lock of the membership.
    pub(crate) fn roles(&self) -> (bool, bool) {
        self.info.lock().map_or((false, false), |m| {
            (m.membership.witnesses.contains(&self.replica), self.serves_data_in(&m.membership))
        })
    }

    /// Whether this replica is a witness in the applied membership.
    pub(crate) fn is_witness(&self) -> bool {
        self.info.lock().is_ok_and(|m| m.membership.witnesses.contains(&self.replica))
    }

    pub(crate) fn take_waiter(&self, key: u64) -> Option<Waiter> {
        if key == 0 {
            return None;
        }
        self.waiters.lock().ok().and_then(|mut w| w.remove(&key))
    }
}

/// One committed entry, as the step worker hands it over.
pub(crate) enum ApplyItem {
    Cmd {
        index: LogIndex,
        term: Term,
        payload: Payload,
    },
    /// A membership change, already decided by the step worker (identically on every replica).
    Conf {
        index: LogIndex,
        term: Term,
        key: u64,
        outcome: Result<GroupMembership, NodeError>,
    },
    Noop {
        index: LogIndex,
        term: Term,
    },
}

impl ApplyItem {
    fn position(&self) -> (LogIndex, Term) {
        match self {
            ApplyItem::Cmd { index, term, .. }
            | ApplyItem::Conf { index, term, .. }
            | ApplyItem::Noop { index, term } => (*index, *term),
        }
    }
}

/// Work for an apply worker.
pub(crate) enum ApplyTask {
    Start(Box<ApplyGroup>),
    Items(GroupId, Vec<ApplyItem>),
    /// Replace the state with a snapshot (file absent: metadata only, e.g. a witness).
    Restore {
        group: GroupId,
        header: SnapshotHeader,
        file: Option<PathBuf>,
    },
    /// Serve the read waiting under `key` once `index` is applied.
    Read {
        group: GroupId,
        key: u64,
        index: LogIndex,
    },
    /// Take a snapshot now; answer the waiter under `key` (0: none).
    Snapshot {
        group: GroupId,
        key: u64,
    },
    Stop(GroupId),
    /// The NodeHost is closing: sync every state machine and exit.
    Shutdown,
}

/// What the apply side tells the step side.
pub(crate) enum ApplyEvent {
    Applied { group: GroupId, index: LogIndex },
    SnapshotTaken { group: GroupId, index: LogIndex, membership: Membership, file: String },
    Failed { group: GroupId, reason: String },
}

/// The apply side of one group.
pub(crate) struct ApplyGroup {
    pub(crate) shared: Arc<GroupShared>,
    pub(crate) sessions: Sessions,
    pub(crate) applied: LogIndex,
    pub(crate) applied_term: Term,
    /// An on-disk state machine already holds every update up to here: entries at or below it only update
    /// the host's bookkeeping (sessions, membership) when replayed.
    pub(crate) disk_applied: LogIndex,
    pub(crate) membership: GroupMembership,
    pub(crate) snapshot_entries: u64,
    pub(crate) since_snapshot: u64,
    /// Index of the last snapshot this worker wrote.
    pub(crate) last_snapshot: LogIndex,
    pub(crate) reads: Vec<(LogIndex, u64)>,
    pub(crate) snap_dir: PathBuf,
    pub(crate) events: Sender<(usize, ApplyEvent)>,
    pub(crate) worker: usize,
    pub(crate) failed: bool,
    /// Answers to proposers, held until the applied index was reported.
    pub(crate) answers: Vec<(u64, Result<SmResult, NodeError>)>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Deterministic mode: write every snapshot on the calling thread (no snapshot threads).
    pub(crate) inline_snapshots: bool,
}

/// The snapshot file name for `index`.
pub(crate) fn snapshot_file_name(index: LogIndex) -> String {
    format!("snapshot-{:020}.snap", index.0)
}

impl ApplyGroup {
    fn emit(&self, e: ApplyEvent) {
        let _ = self.events.send((self.worker, e));
    }

    fn fail(&mut self, reason: String) {
        self.failed = true;
        self.send_answers();
        let g = self.shared.group;
        self.emit(ApplyEvent::Failed { group: g, reason });
    }

    /// Queues an answer to a proposer; answers go out after the step worker was told the new applied index,
    /// so a proposer's next request never finds Raft unaware of what it was just told.
    fn complete(&mut self, key: u64, result: Result<SmResult, NodeError>) {
        if key != 0 {
            self.answers.push((key, result));
        }
    }

    fn send_answers(&mut self) {
        for (key, result) in self.answers.drain(..) {
            if let Some(Waiter::Propose(tx)) = self.shared.take_waiter(key) {
                let _ = tx.send(result);
            }
        }
    }

    /// Applies a batch of committed entries in order.
    fn apply(&mut self, items: Vec<ApplyItem>) {
        if self.failed {
            return;
        }
        let mut batch: Vec<SmEntry> = Vec::new();
        // Per entry of `batch`: its proposal key and session, to answer after the update.
        let mut meta: Vec<(u64, Option<SessionRef>)> = Vec::new();
        let mut in_batch: HashSet<(u64, u64)> = HashSet::new();
        let Some(last) = items.last().map(ApplyItem::position) else { return };
        for item in items {
            let (index, _) = item.position();
            if index <= self.applied {
                continue;
            }
            match item {
                ApplyItem::Cmd { index, payload, .. } => match payload {
                    Payload::Plain { key, id, cmd } => {
                        // Recorded even when replayed below `disk_applied`: the windows must be the same on
                        // every replica.
                        match id.map(|id| self.sessions.check_plain(id, index.0)) {
                            None | Some(PlainCheck::Apply) => {}
                            // The first copy answers its proposer.
                            Some(PlainCheck::Duplicate) => continue,
                            Some(PlainCheck::TooOld) => {
                                self.complete(key, Err(NodeError::PossibleDuplicate));
                                continue;
                            }
                        }
                        if index <= self.disk_applied {
                            continue;
                        }
                        batch.push(SmEntry { index, cmd, result: SmResult::default() });
                        meta.push((key, None));
                    }
                    Payload::Session { key, session, cmd } => {
                        if in_batch.contains(&(session.client, session.series)) {
                            // A retry of a proposal in this very batch: settle the first one first.
                            if !self.flush(&mut batch, &mut meta) {
                                return;
                            }
                            in_batch.clear();
                        }
                        match self.sessions.check(&session, index.0) {
                            SessionCheck::Apply => {
                                in_batch.insert((session.client, session.series));
                                if index <= self.disk_applied {
                                    // Already in the on-disk state: only the bookkeeping is replayed, with
                                    // the result the state machine kept (a retry gets it again).
                                    match self.shared.sm.result_of(index) {
                                        Ok(r) => self.sessions.record(&session, r.unwrap_or_default()),
                                        Err(e) => {
                                            return self.fail(format!("reading a kept result: {e}"));
                                        }
                                    }
                                    continue;
                                }
                                batch.push(SmEntry { index, cmd, result: SmResult::default() });
                                meta.push((key, Some(session)));
                            }
                            SessionCheck::Duplicate(r) => self.complete(key, Ok(r)),
                            SessionCheck::Expired => {
                                self.complete(key, Err(NodeError::SessionResultForgotten))
                            }
                            SessionCheck::UnknownSession => {
                                self.complete(key, Err(NodeError::SessionUnknown))
                            }
                        }
                    }
                    Payload::Register { key, client, ttl } => {
                        if !self.flush(&mut batch, &mut meta) {
                            return;
                        }
                        let code = self.sessions.register(client, index.0, ttl);
                        self.complete(key, Ok(SmResult { value: code, data: Bytes::new() }));
                    }
                    Payload::Unregister { key, client } => {
                        if !self.flush(&mut batch, &mut meta) {
                            return;
                        }
                        let code = self.sessions.unregister(client, index.0);
                        self.complete(key, Ok(SmResult { value: code, data: Bytes::new() }));
                    }
                    Payload::Noop => {}
                },
                ApplyItem::Conf { key, outcome, index, .. } => {
                    let result = match outcome {
                        Ok(m) => {
                            self.membership = m.clone();
                            if let Ok(mut info) = self.shared.info.lock() {
                                *info = m;
                            }
                            Ok(SmResult { value: index.0, data: Bytes::new() })
                        }
                        Err(e) => Err(e),
                    };
                    if !self.flush(&mut batch, &mut meta) {
                        return;
                    }
                    self.complete(key, result);
                }
                ApplyItem::Noop { .. } => {}
            }
        }
        if !self.flush(&mut batch, &mut meta) {
            return;
        }
        let (index, term) = last;
        if index > self.applied {
            self.since_snapshot += index.0 - self.applied.0;
            self.applied = index;
            self.applied_term = term;
        }
        self.shared.applied.store(self.applied.0, Ordering::Release);
        self.serve_reads();
        let g = self.shared.group;
        self.emit(ApplyEvent::Applied { group: g, index: self.applied });
        self.send_answers();
        if self.snapshot_entries > 0 && self.since_snapshot >= self.snapshot_entries {
            self.take_snapshot(0);
        }
    }

    /// Applies the accumulated batch and answers its proposers. False if the state machine failed.
    fn flush(&mut self, batch: &mut Vec<SmEntry>, meta: &mut Vec<(u64, Option<SessionRef>)>) -> bool {
        if batch.is_empty() {
            return true;
        }
        if let Err(e) = self.shared.sm.update(batch) {
            self.fail(format!("state machine update failed: {e}"));
            return false;
        }
        self.metrics.applies.inc_by(batch.len() as u64);
        for (e, (key, session)) in batch.drain(..).zip(meta.drain(..)) {
            if let Some(s) = session {
                self.sessions.record(&s, e.result.clone());
            }
            self.complete(key, Ok(e.result));
        }
        true
    }

    fn serve_reads(&mut self) {
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = self.reads.drain(..).partition(|(i, _)| *i <= applied);
        self.reads = waiting;
        let witness = self.membership.membership.witnesses.contains(&self.shared.replica);
        for (_, key) in ready {
            if let Some(Waiter::Read { query, tx }) = self.shared.take_waiter(key) {
                // A witness's state machine holds nothing: it never answers a read (a read queued before
                // its membership was known lands here).
                let r = if witness {
                    Err(NodeError::Witness { group: self.shared.group, replica: self.shared.replica })
                } else {
                    self.shared.sm.lookup(&query).map_err(NodeError::from_lookup)
                };
                let _ = tx.send(r);
            }
        }
    }

    /// Writes a snapshot of the applied state and tells the step worker to record it.
    fn take_snapshot(&mut self, key: u64) {
        let answer = |s: &Self, r: Result<(LogIndex, PathBuf), NodeError>| {
            if let Some(Waiter::Snapshot(tx)) = s.shared.take_waiter(key) {
                let _ = tx.send(r);
            }
        };
        if self.applied.0 == 0 || self.failed {
            return answer(self, Err(NodeError::InvalidArgument("nothing applied yet".into())));
        }
        if key == 0 && self.applied == self.last_snapshot {
            return;
        }
        if let Err(e) = self.shared.sm.sync() {
            return self.fail(format!("state machine sync failed: {e}"));
        }
        let header = SnapshotHeader {
            group: self.shared.group,
            index: self.applied,
            term: self.applied_term,
            membership: self.membership.membership.clone(),
            addresses: self.membership.addresses.clone(),
            conf_index: self.membership.conf_index,
            flags: 0,
        };
        let name = snapshot_file_name(self.applied);
        let path = self.snap_dir.join(&name);
        let prepared = match self.shared.sm.prepare() {
            Ok(p) => p,
            Err(e) => return answer(self, Err(NodeError::StateMachine(e.to_string()))),
        };
        self.since_snapshot = 0;
        self.last_snapshot = self.applied;
        let job = SnapshotJob {
            shared: self.shared.clone(),
            events: self.events.clone(),
            worker: self.worker,
            sessions: self.sessions.clone(),
            header,
            path,
            name,
            key,
        };
        if prepared.is_some() && !self.inline_snapshots {
            // Concurrent and on-disk state machines save from a captured view: off the apply thread, so
            // updates go on meanwhile.
            let spawned =
                std::thread::Builder::new().name("drakkar-snapshot".into()).spawn(move || job.run(prepared));
            if let Err(e) = spawned {
                answer(self, Err(NodeError::Storage(format!("spawning the snapshot thread: {e}"))));
            }
        } else {
            job.run(prepared);
        }
    }

    /// Replaces the state with a snapshot's.
    fn restore(&mut self, header: SnapshotHeader, file: Option<PathBuf>) {
        if header.index <= self.applied {
            return;
        }
        if let Some(path) = file {
            match snapshot::open_snapshot(&path) {
                Ok((_, mut body)) => {
                    match Sessions::load(&mut body) {
                        Ok(s) => self.sessions = s,
                        Err(e) => return self.fail(format!("snapshot {}: {e}", path.display())),
                    }
                    if let Err(e) = self.shared.sm.recover(&mut body, &self.shared.stop) {
                        return self.fail(format!("state machine recovery failed: {e}"));
                    }
                }
                Err(e) => return self.fail(e.to_string()),
            }
            self.disk_applied = LogIndex(0);
        }
        self.applied = header.index;
        self.applied_term = header.term;
        self.since_snapshot = 0;
        self.membership = GroupMembership {
            membership: header.membership,
            addresses: header.addresses,
            conf_index: header.conf_index,
        };
        if let Ok(mut info) = self.shared.info.lock() {
            *info = self.membership.clone();
        }
        self.shared.applied.store(self.applied.0, Ordering::Release);
        self.serve_reads();
    }
}

/// A snapshot being written, possibly on its own thread.
struct SnapshotJob {
    shared: Arc<GroupShared>,
    events: Sender<(usize, ApplyEvent)>,
    worker: usize,
    sessions: Sessions,
    header: SnapshotHeader,
    path: PathBuf,
    name: String,
    key: u64,
}

impl SnapshotJob {
    fn run(self, prepared: Option<Box<dyn std::any::Any + Send>>) {
        let SnapshotJob { shared, events, worker, sessions, header, path, name, key } = self;
        let sm = &shared.sm;
        let r = snapshot::write_snapshot(&path, &header, |w: &mut dyn Write| {
            sessions.save(w)?;
            sm.save_prepared(prepared, w, &shared.stop).map_err(std::io::Error::other)
        });
        let answer = match r {
            Ok(_) => {
                let _ = events.send((
                    worker,
                    ApplyEvent::SnapshotTaken {
                        group: shared.group,
                        index: header.index,
                        membership: header.membership.clone(),
                        file: name,
                    },
                ));
                Ok((header.index, path))
            }
            Err(e) => Err(NodeError::Storage(e.to_string())),
        };
        if let Some(Waiter::Snapshot(tx)) = shared.take_waiter(key) {
            let _ = tx.send(answer);
        }
    }
}

/// Loads the latest snapshot of a restarting group into its state machine: returns the header.
/// An on-disk state machine already holds its state up to `disk_applied` (what `open` returned): it
/// recovers from the snapshot only when it is behind it (a new or replaced file, e.g. after an import).
pub(crate) fn recover_from(
    shared: &GroupShared,
    path: &Path,
    disk_applied: LogIndex,
) -> Result<(SnapshotHeader, Sessions), NodeError> {
    let (header, mut body) = snapshot::open_snapshot(path).map_err(|e| NodeError::Storage(e.to_string()))?;
    let sessions =
        Sessions::load(&mut body).map_err(|e| NodeError::Storage(format!("{}: {e}", path.display())))?;
    if shared.sm.is_on_disk() && disk_applied >= header.index {
        return Ok((header, sessions));
    }
    shared.sm.recover(&mut body, &shared.stop).map_err(|e| NodeError::StateMachine(e.to_string()))?;
    Ok((header, sessions))
}

/// The state machines of one apply worker's groups, and how a task changes them: the same on an apply
/// thread and under the deterministic driver.
#[derive(Default)]
pub(crate) struct ApplyWorker {
    groups: HashMap<GroupId, ApplyGroup>,
}

impl ApplyWorker {
    /// Handles one task. Returns false once the worker shut down.
    pub(crate) fn handle(&mut self, task: ApplyTask) -> bool {
        let groups = &mut self.groups;
        match task {
            ApplyTask::Start(g) => {
                groups.insert(g.shared.group, *g);
            }
            ApplyTask::Items(group, items) => {
                if let Some(g) = groups.get_mut(&group) {
                    g.apply(items);
                }
            }
            ApplyTask::Restore { group, header, file } => {
                if let Some(g) = groups.get_mut(&group) {
                    g.restore(header, file);
                }
            }
            ApplyTask::Read { group, key, index } => {
                if let Some(g) = groups.get_mut(&group) {
                    g.reads.push((index, key));
                    g.serve_reads();
                }
            }
            ApplyTask::Snapshot { group, key } => {
                if let Some(g) = groups.get_mut(&group) {
                    g.take_snapshot(key);
                }
            }
            ApplyTask::Stop(group) => {
                if let Some(g) = groups.remove(&group) {
                    let _ = g.shared.sm.sync();
                }
            }
            ApplyTask::Shutdown => {
                for g in groups.values() {
                    let _ = g.shared.sm.sync();
                }
                return false;
            }
        }
        true
    }
}

/// The apply worker thread's loop.
pub(crate) fn run(rx: Receiver<ApplyTask>) {
    let mut w = ApplyWorker::default();
    while let Ok(task) = rx.recv() {
        if !w.handle(task) {
            return;
        }
    }
}
