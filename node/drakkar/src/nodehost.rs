//! The public face of the engine: [`NodeHost`].

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use drakkar_logdb::{LogDb, Options, WriteBatch};
use drakkar_raft::{
    ConfChange, ConfChangeKind, Config, Entry, EntryKind, GroupId, HardState, LogIndex, MemberRole,
    Membership, Message, RawNode, ReadOnlyOption, ReplicaId, Storage, Term,
};

use crate::apply::{
    self, ApplyEvent, ApplyGroup, ApplyTask, ApplyWorker, GroupMembership, GroupShared, Waiter,
};
use crate::config::{GroupConfig, NodeHostConfig};
use crate::engine::{Input, Round, StepGroup, StepWorker, encode_cc_context};
use crate::error::{NodeError, Result};
use crate::events::EventBus;
use crate::identity::{self, Admission, PeerIdentities, Refusal};
use crate::info::{MembershipChange, NodeHostInfo, ReplicaInfo};
use crate::metrics::Metrics;
use crate::payload::{Payload, ProposalId, SessionRef};
use crate::rsm::{SmHandle, StateMachineBox};
use crate::session::Sessions;
use crate::snapshot;
use crate::statemachine::SmResult;
use crate::transport::{MessageBatch, MessageSink, Transport};

pub(crate) const IDENTITY_FILE: &str = "NODEHOST.id";

struct Inner {
    cfg: NodeHostConfig,
    incarnation: u128,
    db: Arc<LogDb>,
    workers: Vec<Sender<Input>>,
    appliers: Vec<Sender<ApplyTask>>,
    events: Vec<Sender<(usize, ApplyEvent)>>,
    groups: RwLock<HashMap<GroupId, Arc<GroupShared>>>,
    next_key: AtomicU64,
    /// Numbers the landing files of incoming snapshots.
    landing: AtomicU64,
    closed: AtomicBool,
    /// Set by `close`: every replica's [`crate::statemachine::Stop`] is a child of it.
    stop: crate::statemachine::Stop,
    threads: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    bus: EventBus,
    /// Deterministic mode: the workers, run by [`crate::Driver::run_until_idle`] instead of threads.
    driven: Option<Mutex<Driven>>,
    /// The first fatal error of a step worker.
    failure: Arc<std::sync::OnceLock<String>>,
}

/// The workers of a deterministic NodeHost, stepped by the caller's thread.
struct Driven {
    /// Each step worker with its state, and whether it has shut down.
    steps: Vec<(StepWorker, Round, bool)>,
    applies: Vec<(Receiver<ApplyTask>, ApplyWorker, bool)>,
}

/// Rounds [`crate::Driver::run_until_idle`] runs before it reports a livelock.
const MAX_IDLE_ROUNDS: usize = 100_000;

/// One process's host of many Raft groups.
///
/// Cheap to clone (a handle). Dropping the last handle does not stop the threads: call
/// [`NodeHost::close`].
#[derive(Clone)]
pub struct NodeHost {
    inner: Arc<Inner>,
}

/// A client session for exactly-once proposals (see [`NodeHost::open_session`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    group: GroupId,
    client: u64,
    /// The series id the next proposal uses.
    series: u64,
    /// Every series id up to this one has been answered.
    responded_to: u64,
}

impl Session {
    /// A session registered elsewhere, at the position its client keeps: the gRPC server's way, whose
    /// remote clients send their session id, series and acknowledged series with every write.
    pub fn resume(group: GroupId, client_id: u64, series: u64, responded_to: u64) -> Session {
        Session { group, client: client_id, series, responded_to }
    }

    /// The group the session is registered in.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The session's (client) id.
    pub fn client_id(&self) -> u64 {
        self.client
    }

    /// The series id of the next proposal (and of the retries of the current one).
    pub fn series(&self) -> u64 {
        self.series
    }

    /// Every series id up to this one has been answered.
    pub fn responded_to(&self) -> u64 {
        self.responded_to
    }

    /// Call after a proposal in this session completed (got any answer): the next proposal is a new one.
    /// Do NOT call after a timeout: retrying the same series id is what makes the retry exactly-once.
    pub fn proposal_completed(&mut self) {
        self.responded_to = self.series;
        self.series += 1;
    }
}

/// A request in flight, from [`NodeHost::change_membership`] or a [`crate::Driver`]'s requests: poll it with
/// [`Pending::try_result`] (never blocks: what a single-threaded driver uses) or await it with
/// [`Pending::wait`]. Dropping it stops waiting; the request itself may still take effect.
#[must_use = "a dropped handle never learns the outcome"]
pub struct Pending<T> {
    shared: Arc<GroupShared>,
    key: u64,
    rx: tokio::sync::oneshot::Receiver<Result<T>>,
    /// The answer was taken (or the waiter is gone): nothing to unregister.
    done: bool,
}

impl<T> Pending<T> {
    fn stopped(&self) -> NodeError {
        self.shared.stopped_error().unwrap_or_else(|| NodeError::Stopped {
            group: self.shared.group,
            replica: self.shared.replica,
            reason: "replica stopped".into(),
        })
    }

    /// The answer, once there is one (then `None` again on later calls); `None` while it is pending. A
    /// replica that stopped (or a NodeHost that was dropped) answers `Stopped`.
    pub fn try_result(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        match self.rx.try_recv() {
            Ok(r) => {
                self.done = true;
                Some(r)
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                self.done = true;
                Some(Err(self.stopped()))
            }
        }
    }

    /// Waits for the answer, at most `timeout` (then `Timeout`: the request may still take effect).
    pub async fn wait(mut self, timeout: Duration) -> Result<T> {
        match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(r)) => {
                self.done = true;
                r
            }
            Ok(Err(_)) => {
                self.done = true;
                Err(self.stopped())
            }
            Err(_) => Err(NodeError::Timeout),
        }
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.take_waiter(self.key);
        }
    }
}

/// How a replica starts.
#[derive(Clone, Debug)]
pub enum StartMode {
    /// A founding member of a new group, with the initial members' addresses. Ignored when the data
    /// directory already holds the group (a restart).
    Founding(BTreeMap<ReplicaId, String>),
    /// A replica added to an existing group: it learns everything from the leader.
    Joining,
}

/// A deterministic mix of a seed and a salt (deterministic mode's randomness): the first output of the
/// generator started at their combination.
fn mix(seed: u64, salt: u64) -> u64 {
    drakkar_raft::Rng::new(seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64()
}

/// A random number, or in deterministic mode (`seed`) one derived from the seed and `salt`.
fn random(seed: Option<u64>, salt: u64) -> u64 {
    match seed {
        Some(seed) => mix(seed, salt),
        None => random_u64(salt),
    }
}

fn random_u64(salt: u64) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one((
        salt,
        std::process::id(),
        std::time::SystemTime::now(),
    ))
}

/// Reads this data directory's incarnation id, creating it on first start.
pub(crate) fn incarnation(dir: &Path, seed: Option<u64>) -> Result<u128> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => u128::from_str_radix(s.trim(), 16)
            .map_err(|_| NodeError::Storage(format!("{}: not an incarnation id", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = (u128::from(random(seed, 1)) << 64) | u128::from(random(seed, 2));
            let tmp = dir.join("NODEHOST.id.tmp");
            let write = || -> std::io::Result<()> {
                std::fs::write(&tmp, format!("{id:032x}\n"))?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| NodeError::Storage(format!("{}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(NodeError::Storage(format!("{}: {e}", path.display()))),
    }
}

impl NodeHost {
    /// Opens (or creates) the data directory and starts the workers.
    pub fn new(cfg: NodeHostConfig, transport: Arc<dyn Transport>) -> Result<NodeHost> {
        let io = |e: std::io::Error| NodeError::Storage(format!("{}: {e}", cfg.data_dir.display()));
        std::fs::create_dir_all(cfg.data_dir.join("snapshots")).map_err(io)?;
        let incarnation = incarnation(&cfg.data_dir, cfg.deterministic)?;
        let driven = cfg.deterministic.is_some();
        let opts = Options {
            segment_size: cfg.log_segment_bytes,
            cache_capacity: cfg.log_cache_bytes,
            ..Options::default()
        };
        let dir = cfg.data_dir.join("logdb");
        let opened = match &cfg.log_fs {
            Some(fs) => LogDb::open_with_fs(fs.clone(), &dir, opts),
            None => LogDb::open(&dir, opts),
        };
        let db = Arc::new(opened.map_err(|e| NodeError::Storage(e.to_string()))?);
        let metrics = Arc::new(Metrics::new());
        let identities = Arc::new(PeerIdentities::open(&cfg.data_dir)?);
        let bus = EventBus::new();
        let failure = Arc::new(std::sync::OnceLock::new());
        let mut threads = Vec::new();
        let mut appliers = Vec::new();
        let mut apply_loops = Vec::new();
        for i in 0..cfg.apply_workers.max(1) {
            let (tx, rx) = crossbeam_channel::unbounded();
            appliers.push(tx);
            if driven {
                apply_loops.push((rx, ApplyWorker::default(), false));
            } else {
                threads.push(spawn(format!("drakkar-apply-{i}"), move || apply::run(rx))?);
            }
        }
        let mut workers = Vec::new();
        let mut events = Vec::new();
        let mut pending = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let (tx, rx) = crossbeam_channel::bounded(cfg.queue_capacity);
            let (etx, erx) = crossbeam_channel::unbounded();
            workers.push(tx.clone());
            events.push(etx);
            pending.push(StepWorker {
                index: i,
                db: db.clone(),
                transport: transport.clone(),
                address: cfg.address.clone(),
                incarnation,
                inbox: rx,
                events: erx,
                self_tx: tx,
                tick: cfg.tick_interval,
                metrics: metrics.clone(),
                identities: identities.clone(),
                bus: bus.clone(),
                inline_snapshots: driven,
                failure: failure.clone(),
            });
        }
        let driven = if driven {
            let steps = pending.into_iter().map(|w| (w, Round::default(), false)).collect();
            Some(Mutex::new(Driven { steps, applies: apply_loops }))
        } else {
            for w in pending {
                let name = format!("drakkar-step-{}", w.index);
                threads.push(spawn(name, move || w.run())?);
            }
            None
        };
        let first_key = random(cfg.deterministic, 3) | 1;
        let inner = Arc::new(Inner {
            cfg,
            incarnation,
            db,
            workers,
            appliers,
            events,
            groups: RwLock::new(HashMap::new()),
            next_key: AtomicU64::new(first_key),
            landing: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stop: crate::statemachine::Stop::new(),
            threads: Mutex::new(threads),
            metrics,
            bus,
            driven,
            failure,
        });
        if inner.driven.is_none() {
            let weak = Arc::downgrade(&inner);
            let tick = inner.cfg.tick_interval;
            let ticker = spawn("drakkar-ticker".into(), move || {
                while let Some(inner) = weak.upgrade() {
                    if inner.closed.load(Ordering::Acquire) {
                        return;
                    }
                    inner.tick_all();
                    drop(inner);
                    std::thread::sleep(tick);
                }
            })?;
            if let Ok(mut t) = inner.threads.lock() {
                t.push(ticker);
            }
        }
        Ok(NodeHost { inner })
    }

    /// Whether this NodeHost is deterministic (driven by its caller, through a [`crate::Driver`]).
    pub(crate) fn is_driven(&self) -> bool {
        self.inner.driven.is_some()
    }

    /// One tick of every group (a [`crate::Driver`]'s).
    pub(crate) fn tick_all(&self) {
        self.inner.tick_all();
    }

    /// Runs a deterministic NodeHost's workers until idle (see [`crate::Driver::run_until_idle`]).
    pub(crate) fn run_until_idle(&self) -> Result<usize> {
        let Some(driven) = &self.inner.driven else {
            return Err(NodeError::InvalidArgument("run_until_idle needs a deterministic NodeHost".into()));
        };
        let mut d = driven.lock().map_err(|_| NodeError::Storage("driver lock poisoned".into()))?;
        let mut ran = 0;
        loop {
            let mut progress = false;
            for (w, r, down) in d.steps.iter_mut() {
                if !*down && w.has_work(r) {
                    *down = w.round(r, false);
                    progress = true;
                    ran += 1;
                }
            }
            for (rx, a, down) in d.applies.iter_mut() {
                while !*down && let Ok(task) = rx.try_recv() {
                    *down = !a.handle(task);
                    progress = true;
                    ran += 1;
                }
            }
            if !progress {
                return Ok(ran);
            }
            if ran > MAX_IDLE_ROUNDS {
                return Err(NodeError::Storage(format!("still busy after {ran} rounds: a livelock")));
            }
        }
    }

    /// The receiving side, to register with a transport.
    pub fn sink(&self) -> std::sync::Weak<dyn MessageSink> {
        let arc: Arc<dyn MessageSink> = self.inner.clone();
        Arc::downgrade(&arc)
    }

    /// Subscribes to this NodeHost's events (leader and membership changes, snapshots, compactions,
    /// stopped replicas). A subscriber that falls behind by more than 4,096 events misses the oldest.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<crate::events::Event> {
        self.inner.bus.subscribe()
    }

    /// Prometheus metrics in text format.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.render()
    }

    fn worker_of(&self, g: GroupId) -> &Sender<Input> {
        &self.inner.workers[(g.0 % self.inner.workers.len() as u64) as usize]
    }

    fn shared(&self, g: GroupId) -> Result<Arc<GroupShared>> {
        let s = self.any_shared(g)?;
        match s.stopped_error() {
            Some(e) => Err(e),
            None => Ok(s),
        }
    }

    /// The group's shared state, if its replica here holds the state machine's data: requests that read
    /// or change the state never run on a witness (whose state machine holds nothing).
    fn data_shared(&self, g: GroupId) -> Result<Arc<GroupShared>> {
        let s = self.shared(g)?;
        if s.is_witness() {
            return Err(NodeError::Witness { group: g, replica: s.replica });
        }
        Ok(s)
    }

    /// The group's shared state even if the replica stopped.
    fn any_shared(&self, g: GroupId) -> Result<Arc<GroupShared>> {
        self.inner.groups.read().ok().and_then(|m| m.get(&g).cloned()).ok_or(NodeError::GroupNotFound(g))
    }

    fn snap_dir(&self, g: GroupId) -> PathBuf {
        self.inner.cfg.data_dir.join("snapshots").join(g.0.to_string())
    }

    /// Starts a replica of `group` here.
    pub fn start_replica(
        &self,
        group: GroupId,
        replica: ReplicaId,
        mode: StartMode,
        sm: StateMachineBox,
        gcfg: GroupConfig,
    ) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(NodeError::ShuttingDown);
        }
        if replica.0 == 0 {
            return Err(NodeError::InvalidArgument("replica id 0 is reserved".into()));
        }
        if self.any_shared(group).is_ok() {
            return Err(NodeError::GroupExists(group));
        }
        let snap_dir = self.snap_dir(group);
        std::fs::create_dir_all(&snap_dir)
            .map_err(|e| NodeError::Storage(format!("{}: {e}", snap_dir.display())))?;
        let storage = self.inner.db.group(group);
        let st = |e: drakkar_raft::StorageError| NodeError::Storage(e.to_string());
        let fresh = storage.initial_state().map_err(st)?.hard_state.is_empty()
            && storage.last_index().map_err(st)?.0 == 0;
        let mut membership = GroupMembership::default();
        if fresh {
            if let StartMode::Founding(members) = &mode {
                if !members.contains_key(&replica) {
                    return Err(NodeError::InvalidArgument(format!(
                        "replica {replica} is not among the founding members"
                    )));
                }
                let mut batch = WriteBatch::new();
                let entries = bootstrap_entries(members);
                let hs = HardState { term: Term(1), vote: None, commit: LogIndex(entries.len() as u64) };
                batch.append(group, entries).set_hard_state(group, hs);
                self.inner.db.save(&batch).map_err(|e| NodeError::Storage(e.to_string()))?;
            }
        } else if matches!(mode, StartMode::Founding(_) | StartMode::Joining) {
            // A restart: the log decides; the given members are ignored.
        }
        let sm = SmHandle::new(sm);
        let stop = self.inner.stop.child();
        let disk_applied = sm.open(&stop).map_err(|e| NodeError::StateMachine(e.to_string()))?;
        let shared = Arc::new(GroupShared {
            group,
            replica,
            waiters: Mutex::new(HashMap::new()),
            sm,
            leader: AtomicU64::new(0),
            term: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            info: Mutex::new(GroupMembership::default()),
            session_ttl: gcfg.session_ttl_entries,
            // New at every start of the replica (its sequence starts again at 1): never the origin of
            // entries already in the log.
            plain_origin: random(self.inner.cfg.deterministic, self.key()),
            plain_seq: AtomicU64::new(1),
            stopped: Mutex::new(None),
            stop,
            joining: matches!(mode, StartMode::Joining),
        });
        // Recover from the latest snapshot.
        let snap = storage.snapshot().map_err(st)?;
        let mut sessions = Sessions::default();
        let mut applied = LogIndex(0);
        let mut applied_term = Term(0);
        if !snap.is_empty() {
            applied = snap.meta.index;
            applied_term = snap.meta.term;
            membership.membership = snap.meta.membership.clone();
            if !snap.data.is_empty() {
                let path = snap_dir.join(String::from_utf8_lossy(&snap.data).as_ref());
                let (header, s) = apply::recover_from(&shared, &path, disk_applied)?;
                sessions = s;
                membership.addresses = header.addresses;
                membership.conf_index = header.conf_index;
            }
        }
        if let Ok(mut info) = shared.info.lock() {
            *info = membership.clone();
        }
        shared.applied.store(applied.0, Ordering::Release);
        let mut rcfg = Config::new(replica);
        rcfg.applied = applied;
        rcfg.seed = random(self.inner.cfg.deterministic, (group.0 << 20) ^ replica.0);
        rcfg.election_tick = gcfg.election_ticks;
        rcfg.heartbeat_tick = gcfg.heartbeat_ticks;
        rcfg.check_quorum = gcfg.check_quorum;
        rcfg.pre_vote = gcfg.pre_vote;
        rcfg.max_in_mem_log_size = gcfg.max_in_mem_log_size;
        rcfg.quiesce_ticks = gcfg.quiesce_ticks;
        // Lease-based reads are not offered: a deposed leader could answer from its lease after a newer
        // leader accepted writes, whenever clocks drift (the raft core keeps the option, undocumented here).
        rcfg.read_only_option = ReadOnlyOption::Safe;
        let node = RawNode::new(rcfg, storage).map_err(|e| NodeError::Storage(e.to_string()))?;
        // A restarted replica reports its durable term until the next change (not 0).
        let term = node.status().hard_state.term.0;
        shared.term.store(term, Ordering::Release);
        self.inner.metrics.group_term.get_or_create(&crate::metrics::group_labels(group.0)).set(term as i64);
        let wi = (group.0 % self.inner.workers.len() as u64) as usize;
        let ai = (group.0 % self.inner.appliers.len() as u64) as usize;
        let apply_tx = self.inner.appliers[ai].clone();
        let ag = ApplyGroup {
            shared: shared.clone(),
            sessions,
            applied,
            applied_term,
            disk_applied: disk_applied.max(applied),
            membership: membership.clone(),
            snapshot_entries: gcfg.snapshot_entries,
            since_snapshot: 0,
            last_snapshot: applied,
            reads: Vec::new(),
            snap_dir: snap_dir.clone(),
            events: self.inner.events[wi].clone(),
            worker: wi,
            failed: false,
            answers: Vec::new(),
            metrics: self.inner.metrics.clone(),
            inline_snapshots: self.inner.driven.is_some(),
        };
        let _ = apply_tx.send(ApplyTask::Start(Box::new(ag)));
        let sg = StepGroup {
            shared: shared.clone(),
            node,
            apply: apply_tx,
            membership,
            compaction_overhead: gcfg.compaction_overhead,
            snap_dir,
        };
        if let Ok(mut m) = self.inner.groups.write() {
            m.insert(group, shared);
        }
        self.inner.metrics.groups.inc();
        self.inner.workers[wi].send(Input::Start(Box::new(sg))).map_err(|_| NodeError::ShuttingDown)
    }

    /// Stops the replica of `group` on this node (its data stays).
    pub async fn stop_replica(&self, group: GroupId) -> Result<()> {
        let shared = self.any_shared(group)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.worker_of(group).send(Input::Stop { group, tx }).map_err(|_| NodeError::ShuttingDown)?;
        let _ = rx.await;
        if let Ok(mut m) = self.inner.groups.write() {
            m.remove(&shared.group);
        }
        self.inner.metrics.groups.dec();
        Ok(())
    }

    /// Stops the replica (if running) and deletes its log and snapshots. Use once it was removed from the
    /// group: a replica id is never reused.
    pub async fn remove_data(&self, group: GroupId) -> Result<()> {
        if self.any_shared(group).is_ok() {
            self.stop_replica(group).await?;
        }
        let mut batch = WriteBatch::new();
        batch.remove_group(group);
        self.inner.db.save(&batch).map_err(|e| NodeError::Storage(e.to_string()))?;
        let dir = self.snap_dir(group);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NodeError::Storage(format!("{}: {e}", dir.display()))),
        }
    }

    fn key(&self) -> u64 {
        // Never 0 (0 means "nobody waits").
        self.inner.next_key.fetch_add(2, Ordering::Relaxed)
    }

    fn submit(&self, group: GroupId, input: Input) -> Result<()> {
        match self.worker_of(group).try_send(input) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(NodeError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(NodeError::ShuttingDown),
        }
    }

    /// Registers a waiter under `key`, then runs `submit`. The waiter is registered first so that the
    /// answer cannot overtake it; if `submit` fails, dropping the handle unregisters it.
    fn start<T>(
        &self,
        shared: &Arc<GroupShared>,
        key: u64,
        waiter: impl FnOnce(tokio::sync::oneshot::Sender<Result<T>>) -> Waiter,
        submit: impl FnOnce() -> Result<()>,
    ) -> Result<Pending<T>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut m) = shared.waiters.lock() {
            m.insert(key, waiter(tx));
        }
        let pending = Pending { shared: shared.clone(), key, rx, done: false };
        submit()?;
        Ok(pending)
    }

    /// Runs `attempt` until it succeeds, fails with something other than "no leader", or `timeout` (or
    /// [`NodeHostConfig::no_leader_wait`] for "no leader") passes:
    /// right after a start or an election no leader is known for a moment, and a request refused for that
    /// reason never entered the log, so retrying it is safe.
    async fn retry_no_leader<T, F, Fut>(&self, timeout: Duration, mut attempt: F) -> Result<T>
    where
        F: FnMut(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        // Past it, "no leader" is answered instead of waited out (NodeHostConfig::no_leader_wait).
        let leader_deadline = self.inner.cfg.no_leader_wait.map_or(deadline, |w| deadline.min(start + w));
        loop {
            let now = tokio::time::Instant::now();
            let left = deadline.saturating_duration_since(now);
            let leader_left = leader_deadline.saturating_duration_since(now);
            match attempt(left).await {
                Err(NodeError::NoLeader { .. }) if leader_left > self.inner.cfg.tick_interval * 2 => {
                    tokio::time::sleep(self.inner.cfg.tick_interval * 2).await;
                }
                r => return r,
            }
        }
    }

    fn start_payload(&self, shared: &Arc<GroupShared>, key: u64, data: Bytes) -> Result<Pending<SmResult>> {
        let group = shared.group;
        self.start(shared, key, Waiter::Propose, || self.submit(group, Input::Propose { group, key, data }))
    }

    async fn propose_payload(
        &self,
        group: GroupId,
        key: u64,
        payload: Payload,
        timeout: Duration,
    ) -> Result<SmResult> {
        let shared = self.data_shared(group)?;
        let data = payload.encode();
        self.retry_no_leader(timeout, |left| {
            // Every attempt under the same key: an earlier attempt's handle is gone by now.
            let pending = self.start_payload(&shared, key, data.clone());
            async move { pending?.wait(left).await }
        })
        .await
    }

    /// Proposes a command without waiting: the handle yields the state machine's result once the entry is
    /// applied here. A `NoLeader` answer means it never entered the log (retry it); without an answer it
    /// may or may not be applied later.
    pub(crate) fn submit_proposal(&self, group: GroupId, cmd: Bytes) -> Result<Pending<SmResult>> {
        let shared = self.data_shared(group)?;
        let key = self.key();
        let id = self.proposal_id(&shared);
        self.start_payload(&shared, key, Payload::Plain { key, id: Some(id), cmd }.encode())
    }

    /// A new plain proposal's identity: a copy of it delivered twice is applied once.
    fn proposal_id(&self, shared: &GroupShared) -> ProposalId {
        ProposalId { origin: shared.plain_origin, seq: shared.plain_seq.fetch_add(1, Ordering::Relaxed) }
    }

    /// Proposes a command and waits until it is applied here; returns the state machine's result.
    /// On a timeout the command may or may not be applied later: use a session to retry safely.
    pub async fn propose(&self, group: GroupId, cmd: Bytes, timeout: Duration) -> Result<SmResult> {
        let key = self.key();
        let id = self.proposal_id(&*self.data_shared(group)?);
        self.propose_payload(group, key, Payload::Plain { key, id: Some(id), cmd }, timeout).await
    }

    fn new_session(&self, shared: &GroupShared, client: Option<u64>) -> (Session, u64, Payload) {
        let client = client.unwrap_or_else(|| random(self.inner.cfg.deterministic, self.key()) | 1);
        let (group, key, ttl) = (shared.group, self.key(), shared.session_ttl);
        (Session { group, client, series: 1, responded_to: 0 }, key, Payload::Register { key, client, ttl })
    }

    /// Registers a session without waiting: the session is usable once the handle answers with value
    /// [`crate::session::codes::OK`].
    pub(crate) fn submit_open_session(&self, group: GroupId) -> Result<(Session, Pending<SmResult>)> {
        let shared = self.data_shared(group)?;
        let (session, key, payload) = self.new_session(&shared, None);
        Ok((session, self.start_payload(&shared, key, payload.encode())?))
    }

    /// Opens a client session (registered through the log) for exactly-once proposals, under `client`: a
    /// random non-zero id the caller chose, or None for one chosen here. Registering an id that is already
    /// registered succeeds and changes nothing, so a caller that lost the answer retries with the same id
    /// and opens one session, not two.
    pub async fn open_session(
        &self,
        group: GroupId,
        client: Option<u64>,
        timeout: Duration,
    ) -> Result<Session> {
        if client == Some(0) {
            return Err(NodeError::InvalidArgument("session id 0 is reserved".into()));
        }
        let shared = self.data_shared(group)?;
        let (session, key, payload) = self.new_session(&shared, client);
        let r = self.propose_payload(group, key, payload, timeout).await?;
        if r.value != crate::session::codes::OK {
            return Err(NodeError::InvalidArgument(format!(
                "session registration refused (code {})",
                r.value
            )));
        }
        Ok(session)
    }

    fn session_payload(&self, s: &Session, cmd: Bytes) -> (u64, Payload) {
        let key = self.key();
        let session = SessionRef { client: s.client, series: s.series, responded_to: s.responded_to };
        (key, Payload::Session { key, session, cmd })
    }

    /// Proposes in a session without waiting (see [`NodeHost::propose_in_session`]).
    pub(crate) fn submit_session_proposal(&self, s: &Session, cmd: Bytes) -> Result<Pending<SmResult>> {
        let shared = self.data_shared(s.group)?;
        let (key, payload) = self.session_payload(s, cmd);
        self.start_payload(&shared, key, payload.encode())
    }

    /// Proposes in a session. Retrying after a timeout with the same (unchanged) session applies the command
    /// at most once and returns the first application's result. Call [`Session::proposal_completed`] after
    /// an answer.
    pub async fn propose_in_session(&self, s: &Session, cmd: Bytes, timeout: Duration) -> Result<SmResult> {
        let (key, payload) = self.session_payload(s, cmd);
        self.propose_payload(s.group, key, payload, timeout).await
    }

    /// Closes a session. [`NodeError::SessionUnknown`] if it was not open (never opened, closed,
    /// expired or dropped).
    pub async fn close_session(&self, s: Session, timeout: Duration) -> Result<()> {
        let key = self.key();
        let r = self
            .propose_payload(s.group, key, Payload::Unregister { key, client: s.client }, timeout)
            .await?;
        if r.value == crate::session::codes::UNKNOWN_OR_EXISTS {
            return Err(NodeError::SessionUnknown);
        }
        Ok(())
    }

    fn start_read(&self, shared: &Arc<GroupShared>, query: Bytes) -> Result<Pending<Bytes>> {
        let (group, key) = (shared.group, self.key());
        self.start(
            shared,
            key,
            |tx| Waiter::Read { query, tx },
            || self.submit(group, Input::ReadIndex { group, key }),
        )
    }

    /// A linearizable read without waiting (see [`NodeHost::read`]). `NoLeader`: retry it.
    pub(crate) fn submit_read(&self, group: GroupId, query: Bytes) -> Result<Pending<Bytes>> {
        let shared = self.data_shared(group)?;
        self.start_read(&shared, query)
    }

    /// A linearizable read: confirms the read point with the leader (ReadIndex; works on followers), waits
    /// until it is applied here, then runs `query` on the local state machine.
    pub async fn read(&self, group: GroupId, query: Bytes, timeout: Duration) -> Result<Bytes> {
        let shared = self.data_shared(group)?;
        self.retry_no_leader(timeout, |left| {
            let pending = self.start_read(&shared, query.clone());
            async move { pending?.wait(left).await }
        })
        .await
    }

    /// A read of the local state machine as it is now: fast, possibly stale.
    pub fn stale_read(&self, group: GroupId, query: &[u8]) -> Result<Bytes> {
        let shared = self.data_shared(group)?;
        shared.sm.lookup(query).map_err(NodeError::from_lookup)
    }

    /// Proposes a membership change; the answer's value is the change's log index, given once it is
    /// applied here (then [`NodeHost::membership`] shows it). `expected_conf_index` (0: any) refuses the
    /// change with [`NodeError::StaleConfChange`] if another one was applied since the caller read the
    /// membership; a change the log refuses answers [`NodeError::ConfChangeRefused`]. Changes are proposed
    /// on the leader only: on any other replica this fails with [`NodeError::NoLeader`] and the caller
    /// retries at the leader (see [`NodeHost::leader`]; over gRPC the node passes it to the leader). A
    /// replica added needs an `address` of the form [`crate::address`] describes, else
    /// [`NodeError::InvalidArgument`] (nothing is proposed).
    pub fn change_membership(
        &self,
        group: GroupId,
        change: MembershipChange,
        expected_conf_index: u64,
    ) -> Result<Pending<SmResult>> {
        let (kind, replica, address) = match change {
            MembershipChange::Add { replica, address, role } => {
                let kind = match role {
                    MemberRole::Voter => ConfChangeKind::AddVoter,
                    MemberRole::NonVoter => ConfChangeKind::AddNonVoter,
                    MemberRole::Witness => ConfChangeKind::AddWitness,
                    _ => return Err(NodeError::InvalidArgument("unknown member role".into())),
                };
                (kind, replica, address)
            }
            MembershipChange::Promote(replica) => (ConfChangeKind::Promote, replica, String::new()),
            MembershipChange::Remove(replica) => (ConfChangeKind::Remove, replica, String::new()),
        };
        Self::check_added_address(kind, &address)?;
        let shared = self.shared(group)?;
        let key = self.key();
        let cc = ConfChange { kind, replica, context: encode_cc_context(key, expected_conf_index, &address) };
        self.start(&shared, key, Waiter::Propose, || {
            self.submit(group, Input::ProposeConf { group, key, cc })
        })
    }

    /// Asks the leader to hand leadership to `to`. Returns once the request is accepted; watch
    /// [`NodeHost::leader`] for the outcome.
    pub async fn transfer_leader(&self, group: GroupId, to: ReplicaId) -> Result<()> {
        self.shared(group)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(group, Input::Transfer { group, to, tx })?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// The address of a replica that `kind` adds must be a member address (it is recorded in the log and
    /// snapshots, and every node dials it): refused with `InvalidArgument` otherwise.
    fn check_added_address(kind: ConfChangeKind, address: &str) -> Result<()> {
        match kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddNonVoter | ConfChangeKind::AddWitness => {
                crate::address::validate(address)
                    .map_err(|e| NodeError::InvalidArgument(format!("the new replica's address: {e}")))
            }
            _ => Ok(()),
        }
    }

    /// The group's leader and term as this replica knows them.
    pub fn leader(&self, group: GroupId) -> Result<Option<(ReplicaId, Term)>> {
        let s = self.shared(group)?;
        let l = s.leader.load(Ordering::Acquire);
        Ok((l != 0).then(|| (ReplicaId(l), Term(s.term.load(Ordering::Acquire)))))
    }

    /// The membership as of the last applied change, with addresses.
    pub fn membership(&self, group: GroupId) -> Result<GroupMembership> {
        let s = self.shared(group)?;
        s.info
            .lock()
            .map(|m| m.clone())
            .map_err(|_| NodeError::StateMachine("membership lock poisoned".into()))
    }

    /// What this NodeHost is: its address, its data directory's incarnation, and its failure if any
    /// (cheap: no lock is taken, so health probes may ask often).
    pub fn info(&self) -> NodeHostInfo {
        NodeHostInfo {
            address: self.inner.cfg.address.clone(),
            incarnation: self.inner.incarnation,
            failure: self.inner.failure.get().cloned(),
        }
    }

    /// The groups with a replica on this node, in id order.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut g: Vec<GroupId> =
            self.inner.groups.read().map(|m| m.keys().copied().collect()).unwrap_or_default();
        g.sort_unstable();
        g
    }

    /// What this node's replica of `group` is: its id, its role and what it has applied. Fails for a
    /// replica that stopped ([`NodeHost::replica_state`] answers for those).
    pub fn replica_info(&self, group: GroupId) -> Result<ReplicaInfo> {
        let s = self.shared(group)?;
        let (witness, serves_data) = s.roles();
        Ok(ReplicaInfo {
            replica: s.replica,
            witness,
            serves_data,
            applied: LogIndex(s.applied.load(Ordering::Acquire)),
        })
    }

    /// This node's replica id in `group` and whether it runs; unlike the other queries, answers for a
    /// replica that stopped (until [`NodeHost::stop_replica`] or [`NodeHost::remove_data`] forgets it).
    pub fn replica_state(&self, group: GroupId) -> Result<(ReplicaId, crate::ReplicaState)> {
        let s = self.any_shared(group)?;
        Ok((s.replica, s.state()))
    }

    /// Asks for a snapshot now without waiting: the handle yields its index and file.
    pub(crate) fn submit_snapshot(&self, group: GroupId) -> Result<Pending<(LogIndex, PathBuf)>> {
        let shared = self.shared(group)?;
        let key = self.key();
        let ai = (group.0 % self.inner.appliers.len() as u64) as usize;
        self.start(&shared, key, Waiter::Snapshot, || {
            self.inner.appliers[ai]
                .send(ApplyTask::Snapshot { group, key })
                .map_err(|_| NodeError::ShuttingDown)
        })
    }

    /// Takes a snapshot now; optionally copies it to `export` (a file for backups). Returns its index.
    pub async fn request_snapshot(
        &self,
        group: GroupId,
        export: Option<&Path>,
        timeout: Duration,
    ) -> Result<LogIndex> {
        let (index, path) = self.submit_snapshot(group)?.wait(timeout).await?;
        if let Some(dest) = export {
            std::fs::copy(&path, dest)
                .map_err(|e| NodeError::Storage(format!("export to {}: {e}", dest.display())))?;
        }
        Ok(index)
    }

    /// Repairs a group that lost its quorum (Dragonboat's `ImportSnapshot`): installs an exported snapshot
    /// (see [`NodeHost::request_snapshot`]) as this replica's whole state, with a new membership `members`
    /// (all voters, with their addresses). Run it on every replica of the new membership while the group
    /// is not running here, then start the replicas again (any [`StartMode`]: the imported state wins).
    /// Members of the old membership that are not in the new one are recorded as removed, so their ids can
    /// never come back; their data must be destroyed before they could talk to the group again.
    ///
    /// The file is verified whole before anything of the replica's is touched: checksum, header, and a
    /// full decode of the body (the session table, then the state machine's part). `verify` checks that
    /// part: it is handed a reader of it (what follows the session table) and must fail unless it is a
    /// valid state of the group's state machine: recover it into a scratch instance of the group's kind,
    /// then drop that instance ([`crate::snapshot::read_through`] only reads it, for a caller that cannot
    /// check its format). What it leaves unread is still decoded.
    ///
    /// Steps: the snapshot is rewritten with the new membership into a new file of the group's snapshot
    /// directory, decoded and verified as it is written, and fsynced with its directory; only then does
    /// one log store batch switch the replica to it (the atomic step), and the older files of the
    /// directory are removed last. A crash before the switch leaves the old state (and at most an unused
    /// file); after it, the new one.
    ///
    /// Errors: `InvalidArgument` for a file that is not a valid snapshot of `group` (bad checksum, header,
    /// session table or body, or `verify` refused it), for a running group, or for another import of the
    /// group in progress; `Storage` when writing fails, or when `verify` fails with an I/O error other than
    /// `InvalidData`/`UnexpectedEof` (its scratch instance's storage failed). On every error the replica's
    /// files and log are as they were and no new file is left behind.
    pub fn import_snapshot(
        &self,
        group: GroupId,
        replica: ReplicaId,
        exported: &Path,
        members: BTreeMap<ReplicaId, String>,
        verify: impl FnOnce(&mut dyn std::io::Read) -> std::result::Result<(), crate::statemachine::SmError>,
    ) -> Result<LogIndex> {
        /// Paths of the snapshot directories an import is writing into: one import per group at a time.
        static CLAIMED: Mutex<std::collections::BTreeSet<PathBuf>> =
            Mutex::new(std::collections::BTreeSet::new());
        /// Holds a directory of `CLAIMED` until dropped.
        struct Claim(PathBuf);
        impl Drop for Claim {
            fn drop(&mut self) {
                CLAIMED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.0);
            }
        }

        if self.any_shared(group).is_ok() {
            return Err(NodeError::InvalidArgument(format!(
                "stop group {group} before importing a snapshot"
            )));
        }
        if !members.contains_key(&replica) {
            return Err(NodeError::InvalidArgument(format!(
                "replica {replica} is not in the new membership"
            )));
        }
        let corrupt = |e: snapshot::SnapshotError| NodeError::InvalidArgument(e.to_string());
        let (old, mut body) = snapshot::open_snapshot(exported).map_err(corrupt)?;
        if old.group != group {
            return Err(NodeError::InvalidArgument(format!(
                "{} is a snapshot of group {}, not {group}",
                exported.display(),
                old.group
            )));
        }
        let mut membership = Membership::default();
        membership.voters = members.keys().copied().collect();
        membership.removed = old.membership.removed.clone();
        for id in old.membership.members() {
            if !members.contains_key(&id) {
                membership.removed.insert(id);
            }
        }
        if let Some(id) = members.keys().find(|id| membership.removed.contains(id)) {
            return Err(NodeError::InvalidArgument(format!(
                "replica id {id} was removed from this group once"
            )));
        }
        let header = snapshot::SnapshotHeader {
            group,
            index: old.index,
            term: old.term,
            membership: membership.clone(),
            addresses: members,
            conf_index: old.index.0,
            flags: old.flags,
        };
        let dir = self.snap_dir(group);
        let claimed = CLAIMED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(dir.clone());
        if !claimed {
            return Err(NodeError::InvalidArgument(format!(
                "another import of group {group} is in progress"
            )));
        }
        let _claim = Claim(dir.clone());
        let created = Self::import_dir(&dir)?;
        // Undoes what a failed import wrote (its file, a directory it created): the files are as they were.
        let undo = |path: Option<&Path>| {
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
            if created {
                let _ = std::fs::remove_dir(&dir);
            }
        };
        // A new name: the file the log store names now (possibly of the same index) stays as it is until
        // the switch.
        let mut name = apply::snapshot_file_name(old.index);
        if dir.join(&name).exists() {
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            name = format!("snapshot-{:020}.import-{nonce}.snap", old.index.0);
        }
        let path = dir.join(&name);
        if let Err(e) = Self::stage_import(&path, &header, &mut *body, verify) {
            undo(None);
            return Err(e);
        }
        drop(body);
        if self.any_shared(group).is_ok() {
            undo(Some(&path));
            return Err(NodeError::InvalidArgument(format!("group {group} was started during the import")));
        }
        // The switch: one batch replaces the group's log and snapshot record.
        let mut batch = WriteBatch::new();
        let snap = drakkar_raft::Snapshot {
            meta: drakkar_raft::SnapshotMeta { index: old.index, term: old.term, membership },
            data: Bytes::from(name.clone()),
        };
        let hs = HardState { term: old.term, vote: None, commit: old.index };
        batch.remove_group(group).apply_snapshot(group, snap).set_hard_state(group, hs);
        if let Err(e) = self.inner.db.save(&batch) {
            undo(Some(&path));
            return Err(NodeError::Storage(e.to_string()));
        }
        Self::remove_other_files(&dir, &name, exported);
        Ok(old.index)
    }

    /// Creates the snapshot directory `dir` of an import if missing (durably: its parents are fsynced).
    /// Returns whether it created it.
    fn import_dir(dir: &Path) -> Result<bool> {
        let io = |e: std::io::Error| NodeError::Storage(format!("{}: {e}", dir.display()));
        match std::fs::metadata(dir) {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        for parent in dir.ancestors().skip(1).take(2) {
            std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(true)
    }

    /// Writes the imported snapshot at `path` (durably, see [`snapshot::write_snapshot`]) from the
    /// decompressed `body` of the exported one, decoding the body as it passes: the session table, then
    /// `verify` on the state machine's part, then the rest to its end. A body that
    /// does not decode is `InvalidArgument`, a failed write `Storage`; either way no file is left at `path`.
    fn stage_import(
        path: &Path,
        header: &snapshot::SnapshotHeader,
        body: &mut dyn std::io::Read,
        verify: impl FnOnce(&mut dyn std::io::Read) -> std::result::Result<(), crate::statemachine::SmError>,
    ) -> Result<()> {
        use std::io::{ErrorKind, Read};

        /// Copies every byte read from `src` to `dst`. Invariant: `dst` received exactly the bytes read
        /// unless `write_failed` is set.
        struct Tee<'r, 'w> {
            src: &'r mut dyn Read,
            dst: &'w mut dyn std::io::Write,
            /// Reading (decompressing) the exported body failed.
            read_failed: bool,
            /// Writing the new file failed: the first such error.
            write_failed: Option<std::io::Error>,
        }
        impl Read for Tee<'_, '_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.src.read(buf).inspect_err(|e| {
                    self.read_failed |= e.kind() != ErrorKind::Interrupted;
                })?;
                if let Err(e) = self.dst.write_all(&buf[..n]) {
                    let msg = format!("writing the imported snapshot: {e}");
                    self.write_failed.get_or_insert(e);
                    return Err(std::io::Error::other(msg));
                }
                Ok(n)
            }
        }

        let bad = |what: &str, e: &dyn std::fmt::Display| {
            NodeError::InvalidArgument(format!("the snapshot's {what} does not decode: {e}"))
        };
        let mut refused = None;
        let written = snapshot::write_snapshot(path, header, |w| {
            let mut tee = Tee { src: body, dst: w, read_failed: false, write_failed: None };
            let checked = (|| {
                crate::session::Sessions::load(&mut tee).map_err(|e| bad("session table", &e))?;
                if let Err(e) = verify(&mut tee) {
                    let scratch_failed = !tee.read_failed
                        && matches!(&e, crate::statemachine::SmError::Io(io)
                            if !matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof));
                    return Err(if scratch_failed {
                        NodeError::Storage(format!("verifying the snapshot's state machine data: {e}"))
                    } else {
                        bad("state machine data", &e)
                    });
                }
                std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| bad("body", &e))?;
                Ok(())
            })();
            if let Some(e) = tee.write_failed.take() {
                return Err(e);
            }
            checked.map_err(|e| {
                refused = Some(e);
                std::io::Error::other("refused")
            })
        });
        match (written, refused) {
            (Ok(_), _) => Ok(()),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(NodeError::Storage(e.to_string())),
        }
    }

    /// After an import switched to `keep`: removes every other file of the snapshot directory `dir`
    /// (older snapshots, stray landing and temporary files), except `exported` if it lies there. A file
    /// that stays is harmless: the log store names the current one.
    fn remove_other_files(dir: &Path, keep: &str, exported: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name() != keep && path != exported && e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(&path);
            }
        }
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }

    /// Stops every group and the workers.
    pub fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Long state machine calls (snapshots, recoveries) may give up now.
        self.inner.stop.set();
        for w in &self.inner.workers {
            let _ = w.send(Input::Shutdown);
        }
        if self.inner.driven.is_some() {
            // The same order as the threads: step workers stop first, then the apply workers.
            let _ = self.run_until_idle();
            for a in &self.inner.appliers {
                let _ = a.send(ApplyTask::Shutdown);
            }
            let _ = self.run_until_idle();
        }
        let threads: Vec<JoinHandle<()>> =
            self.inner.threads.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
        // Step workers first (they hand work to the apply workers), then the apply workers.
        let (step, rest): (Vec<_>, Vec<_>) = threads
            .into_iter()
            .partition(|t| t.thread().name().is_some_and(|n| n.starts_with("drakkar-step")));
        for t in step {
            let _ = t.join();
        }
        for a in &self.inner.appliers {
            let _ = a.send(ApplyTask::Shutdown);
        }
        for t in rest {
            let _ = t.join();
        }
        if let Ok(mut m) = self.inner.groups.write() {
            m.clear();
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| NodeError::Storage(format!("spawning a thread: {e}")))
}

/// The founding entries of a group: one membership change per member, with its address.
fn bootstrap_entries(members: &BTreeMap<ReplicaId, String>) -> Vec<Entry> {
    members
        .iter()
        .enumerate()
        .map(|(i, (id, addr))| Entry {
            term: Term(1),
            index: LogIndex(i as u64 + 1),
            kind: EntryKind::ConfChange,
            data: ConfChange {
                kind: ConfChangeKind::AddVoter,
                replica: *id,
                context: encode_cc_context(0, 0, addr),
            }
            .encode(),
        })
        .collect()
}

impl Inner {
    /// The shared state of `group` if its replica runs here (not stopped).
    fn running(&self, group: GroupId) -> Option<Arc<GroupShared>> {
        let groups = self.groups.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        groups.get(&group).filter(|s| s.stopped_error().is_none()).cloned()
    }

    /// Queues a tick for every step worker (the ticker thread's body).
    fn tick_all(&self) {
        for w in &self.workers {
            // A worker that is behind skips a tick rather than queueing them up.
            let _ = w.try_send(Input::Tick);
        }
    }
}

impl MessageSink for Inner {
    fn deliver(&self, batch: MessageBatch) {
        // Messages and `reused` notices alike go to the worker of their group (which admits them).
        let n = self.workers.len() as u64;
        type Part = (Vec<(GroupId, Message)>, Vec<(GroupId, ReplicaId)>);
        let mut per: Vec<Part> = vec![(Vec::new(), Vec::new()); self.workers.len()];
        for (g, m) in batch.messages {
            per[(g.0 % n) as usize].0.push((g, m));
        }
        for (g, r) in batch.reused {
            per[(g.0 % n) as usize].1.push((g, r));
        }
        for (w, (messages, reused)) in per.into_iter().enumerate() {
            if messages.is_empty() && reused.is_empty() {
                continue;
            }
            let input = Input::Messages {
                from: batch.from.clone(),
                incarnation: batch.incarnation,
                messages,
                reused,
            };
            // Full queue: drop (never block the transport); Raft retransmits, and a peer that refuses a
            // replica answers each of its messages with a new notice.
            let _ = self.workers[w].try_send(input);
        }
    }

    fn unreachable(&self, targets: Vec<(GroupId, ReplicaId)>) {
        let n = self.workers.len() as u64;
        let mut per: Vec<Vec<(GroupId, ReplicaId)>> = vec![Vec::new(); self.workers.len()];
        for (g, r) in targets {
            per[(g.0 % n) as usize].push((g, r));
        }
        for (w, targets) in per.into_iter().enumerate() {
            if !targets.is_empty() {
                // Full queue: drop; the leader finds out from the missing answers instead.
                let _ = self.workers[w].try_send(Input::Unreachable(targets));
            }
        }
    }

    fn admit_snapshot(&self, from: &str, group: GroupId, msg: &Message) -> std::result::Result<(), String> {
        let Some(shared) = self.running(group) else {
            identity::refused(&self.metrics, Refusal::UnknownGroup, group, msg.from, from);
            return Err(format!("group {group} does not run here"));
        };
        // The applied membership (the step worker checks again, against its own, when the file arrived).
        let admission = {
            let info = shared.info.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            identity::admit(&info, msg.from, from)
        };
        match admission {
            Admission::Member | Admission::Joining => Ok(()),
            Admission::Refused(why) => {
                identity::refused(&self.metrics, why, group, msg.from, from);
                Err(format!("replica {} at {from} is not a member of group {group} here", msg.from))
            }
        }
    }

    fn snapshot_landing(&self, group: GroupId) -> std::result::Result<std::path::PathBuf, String> {
        // Only for a group running here: a peer never makes this node create a directory.
        if self.running(group).is_none() {
            return Err(format!("group {group} does not run here"));
        }
        let dir = self.cfg.data_dir.join("snapshots").join(group.0.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let n = self.landing.fetch_add(1, Ordering::Relaxed);
        Ok(dir.join(format!("incoming-{}-{n}.recv", std::process::id())))
    }

    fn receive_snapshot(
        &self,
        group: GroupId,
        mut msg: Message,
        file: Option<std::path::PathBuf>,
    ) -> std::result::Result<(), String> {
        let w = &self.workers[(group.0 % self.workers.len() as u64) as usize];
        let refuse = |why: String| {
            if let Some(f) = &file {
                let _ = std::fs::remove_file(f);
            }
            Err(why)
        };
        if self.running(group).is_none() {
            return refuse(format!("group {group} does not run here"));
        }
        let Some(snap) = msg.snapshot.as_mut() else {
            return refuse("snapshot message without a snapshot".into());
        };
        let mut header = None;
        // A snapshot's data names its file in this replica's snapshot directory. Only a file that
        // arrived (and is renamed below) may be named: a data-less snapshot names none, whatever the
        // sender wrote there (a path such as `../../x` would be read as the snapshot).
        snap.data = Bytes::new();
        if let Some(tmp) = file {
            let landed = (|| {
                let dir = tmp.parent().ok_or("a landing path without a directory")?.to_path_buf();
                let name = apply::snapshot_file_name(snap.meta.index);
                let h = snapshot::verify_snapshot(&tmp).map_err(|e| e.to_string())?;
                if h.index != snap.meta.index || h.term != snap.meta.term || h.group != group {
                    return Err("snapshot file does not match its message".to_string());
                }
                std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| e.to_string())?;
                std::fs::rename(&tmp, dir.join(&name)).map_err(|e| e.to_string())?;
                std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| e.to_string())?;
                Ok((name, h))
            })();
            match landed {
                Ok((name, h)) => {
                    snap.data = Bytes::from(name);
                    header = Some(Box::new(h));
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
        w.send(Input::SnapshotArrived { group, msg: Box::new(msg), header }).map_err(|e| e.to_string())
    }
}
