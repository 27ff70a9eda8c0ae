//! The public face of the engine: [`NodeHost`].

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use drakkar_logdb::{LogDb, Options, WriteBatch};
use drakkar_raft::{
    ConfChange, ConfChangeKind, Config, Entry, EntryKind, GroupId, HardState, LogIndex, MemberRole,
    Membership, Message, RawNode, ReadOnlyOption, ReplicaId, Storage, Term,
};

use crate::apply::{self, ApplyEvent, ApplyGroup, ApplyTask, GroupMembership, GroupShared, Waiter};
use crate::codec::{Payload, SessionRef};
use crate::config::{GroupConfig, NodeHostConfig};
use crate::engine::{Input, StepGroup, StepWorker, encode_cc_context};
use crate::error::{NodeError, Result};
use crate::events::EventBus;
use crate::identity::PeerIdentities;
use crate::metrics::Metrics;
use crate::rsm::{SmHandle, StateMachineBox};
use crate::session::Sessions;
use crate::snapshot;
use crate::statemachine::SmResult;
use crate::transport::{MessageBatch, MessageSink, Transport};

const IDENTITY_FILE: &str = "NODEHOST.id";

struct Inner {
    cfg: NodeHostConfig,
    incarnation: u128,
    db: Arc<LogDb>,
    workers: Vec<Sender<Input>>,
    appliers: Vec<Sender<ApplyTask>>,
    events: Vec<Sender<(usize, ApplyEvent)>>,
    groups: RwLock<HashMap<GroupId, Arc<GroupShared>>>,
    next_key: AtomicU64,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    bus: EventBus,
}

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
    /// The group.
    pub group: GroupId,
    /// The client id.
    pub client: u64,
    /// The series id the next proposal uses.
    pub series: u64,
    /// Every series id up to this one has been answered.
    pub responded_to: u64,
}

impl Session {
    /// Call after a proposal in this session completed (got any answer): the next proposal is a new one.
    /// Do NOT call after a timeout: retrying the same series id is what makes the retry exactly-once.
    pub fn proposal_completed(&mut self) {
        self.responded_to = self.series;
        self.series += 1;
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

fn random_u64(salt: u64) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one((
        salt,
        std::process::id(),
        std::time::SystemTime::now(),
    ))
}

/// Reads this data directory's incarnation id, creating it on first start.
fn incarnation(dir: &Path) -> Result<u128> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => u128::from_str_radix(s.trim(), 16)
            .map_err(|_| NodeError::Storage(format!("{}: not an incarnation id", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = (u128::from(random_u64(1)) << 64) | u128::from(random_u64(2));
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
        let incarnation = incarnation(&cfg.data_dir)?;
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
        let mut threads = Vec::new();
        let mut appliers = Vec::new();
        for i in 0..cfg.apply_workers.max(1) {
            let (tx, rx) = crossbeam_channel::unbounded();
            appliers.push(tx);
            threads.push(spawn(format!("drakkar-apply-{i}"), move || apply::run(rx))?);
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
            });
        }
        for w in pending {
            let name = format!("drakkar-step-{}", w.index);
            threads.push(spawn(name, move || w.run())?);
        }
        let inner = Arc::new(Inner {
            cfg,
            incarnation,
            db,
            workers,
            appliers,
            events,
            groups: RwLock::new(HashMap::new()),
            next_key: AtomicU64::new(random_u64(3) | 1),
            closed: AtomicBool::new(false),
            threads: Mutex::new(threads),
            metrics,
            bus,
        });
        let ticker = {
            let weak = Arc::downgrade(&inner);
            let tick = inner.cfg.tick_interval;
            spawn("drakkar-ticker".into(), move || {
                while let Some(inner) = weak.upgrade() {
                    if inner.closed.load(Ordering::Acquire) {
                        return;
                    }
                    for w in &inner.workers {
                        // A worker that is behind skips a tick rather than queueing them up.
                        let _ = w.try_send(Input::Tick);
                    }
                    drop(inner);
                    std::thread::sleep(tick);
                }
            })?
        };
        if let Ok(mut t) = inner.threads.lock() {
            t.push(ticker);
        }
        Ok(NodeHost { inner })
    }

    /// The receiving side, to register with a transport.
    pub fn sink(&self) -> std::sync::Weak<dyn MessageSink> {
        let arc: Arc<dyn MessageSink> = self.inner.clone();
        Arc::downgrade(&arc)
    }

    /// This data directory's incarnation id (created at first start; a wiped directory gets a new one).
    pub fn incarnation(&self) -> u128 {
        self.inner.incarnation
    }

    /// This NodeHost's address.
    pub fn address(&self) -> &str {
        &self.inner.cfg.address
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
        let disk_applied = sm.open().map_err(|e| NodeError::StateMachine(e.to_string()))?;
        let shared = Arc::new(GroupShared {
            group,
            replica,
            waiters: Mutex::new(HashMap::new()),
            sm,
            leader: AtomicU64::new(0),
            term: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            info: Mutex::new(GroupMembership::default()),
            stopped: Mutex::new(None),
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
                let (header, s) = apply::recover_from(&shared, &path)?;
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
        rcfg.seed = random_u64(group.0 ^ replica.0);
        rcfg.election_tick = gcfg.election_ticks;
        rcfg.heartbeat_tick = gcfg.heartbeat_ticks;
        rcfg.check_quorum = gcfg.check_quorum;
        rcfg.pre_vote = gcfg.check_quorum;
        rcfg.max_in_mem_log_size = gcfg.max_in_mem_log_size;
        rcfg.quiesce_ticks = gcfg.quiesce_ticks;
        rcfg.read_only_option =
            if gcfg.lease_read { ReadOnlyOption::LeaseBased } else { ReadOnlyOption::Safe };
        let node = RawNode::new(rcfg, storage).map_err(|e| NodeError::Storage(e.to_string()))?;
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

    fn register(&self, shared: &GroupShared, key: u64, w: Waiter) {
        if let Ok(mut m) = shared.waiters.lock() {
            m.insert(key, w);
        }
    }

    fn submit(&self, group: GroupId, input: Input) -> Result<()> {
        match self.worker_of(group).try_send(input) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(NodeError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(NodeError::ShuttingDown),
        }
    }

    async fn wait<T>(
        &self,
        shared: &GroupShared,
        key: u64,
        rx: tokio::sync::oneshot::Receiver<Result<T>>,
        timeout: Duration,
    ) -> Result<T> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(NodeError::Stopped {
                group: shared.group,
                replica: shared.replica,
                reason: "replica stopped".into(),
            }),
            Err(_) => {
                shared.take_waiter(key);
                Err(NodeError::Timeout)
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails with something other than "no leader", or `timeout` passes:
    /// right after a start or an election no leader is known for a moment, and a request refused for that
    /// reason never entered the log, so retrying it is safe.
    async fn retry_no_leader<T, F, Fut>(&self, timeout: Duration, mut attempt: F) -> Result<T>
    where
        F: FnMut(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match attempt(left).await {
                Err(NodeError::NoLeader { .. }) if left > self.inner.cfg.tick_interval * 2 => {
                    tokio::time::sleep(self.inner.cfg.tick_interval * 2).await;
                }
                r => return r,
            }
        }
    }

    async fn propose_payload(
        &self,
        group: GroupId,
        key: u64,
        payload: Payload,
        timeout: Duration,
    ) -> Result<SmResult> {
        let shared = self.shared(group)?;
        let data = payload.encode();
        self.retry_no_leader(timeout, |left| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.register(&shared, key, Waiter::Propose(tx));
            let submitted = self.submit(group, Input::Propose { group, key, data: data.clone() });
            let shared = &shared;
            async move {
                if let Err(e) = submitted {
                    shared.take_waiter(key);
                    return Err(e);
                }
                self.wait(shared, key, rx, left).await
            }
        })
        .await
    }

    /// Proposes a command and waits until it is applied here; returns the state machine's result.
    /// On a timeout the command may or may not be applied later: use a session to retry safely.
    pub async fn propose(&self, group: GroupId, cmd: Bytes, timeout: Duration) -> Result<SmResult> {
        let key = self.key();
        self.propose_payload(group, key, Payload::Plain { key, cmd }, timeout).await
    }

    /// Opens a client session (registered through the log) for exactly-once proposals.
    pub async fn open_session(&self, group: GroupId, timeout: Duration) -> Result<Session> {
        let client = random_u64(self.key()) | 1;
        let key = self.key();
        let r = self.propose_payload(group, key, Payload::Register { key, client }, timeout).await?;
        if r.value != crate::session::codes::OK {
            return Err(NodeError::InvalidArgument(format!(
                "session registration refused (code {})",
                r.value
            )));
        }
        Ok(Session { group, client, series: 1, responded_to: 0 })
    }

    /// Proposes in a session. Retrying after a timeout with the same (unchanged) session applies the command
    /// at most once and returns the first application's result. Call [`Session::proposal_completed`] after
    /// an answer.
    pub async fn propose_in_session(&self, s: &Session, cmd: Bytes, timeout: Duration) -> Result<SmResult> {
        let key = self.key();
        let session = SessionRef { client: s.client, series: s.series, responded_to: s.responded_to };
        self.propose_payload(s.group, key, Payload::Session { key, session, cmd }, timeout).await
    }

    /// Closes a session.
    pub async fn close_session(&self, s: Session, timeout: Duration) -> Result<()> {
        let key = self.key();
        self.propose_payload(s.group, key, Payload::Unregister { key, client: s.client }, timeout)
            .await
            .map(|_| ())
    }

    /// A linearizable read: confirms the read point with the leader (ReadIndex; works on followers), waits
    /// until it is applied here, then runs `query` on the local state machine.
    pub async fn read(&self, group: GroupId, query: Bytes, timeout: Duration) -> Result<Bytes> {
        let shared = self.shared(group)?;
        self.retry_no_leader(timeout, |left| {
            let key = self.key();
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.register(&shared, key, Waiter::Read { query: query.clone(), tx });
            let submitted = self.submit(group, Input::ReadIndex { group, key });
            let shared = &shared;
            async move {
                if let Err(e) = submitted {
                    shared.take_waiter(key);
                    return Err(e);
                }
                self.wait(shared, key, rx, left).await
            }
        })
        .await
    }

    /// A read of the local state machine as it is now: fast, possibly stale.
    pub fn stale_read(&self, group: GroupId, query: &[u8]) -> Result<Bytes> {
        let shared = self.shared(group)?;
        shared.sm.lookup(query).map_err(|e| NodeError::StateMachine(e.to_string()))
    }

    /// Proposes a membership change and waits until it is applied here. `expected_conf_index` (0: any)
    /// refuses the change if another one was applied since the caller read the membership. Changes are
    /// proposed on the leader only: on any other replica this fails with [`NodeError::NoLeader`] and the
    /// caller retries at the leader (see [`NodeHost::leader`]; over gRPC the client follows the hint).
    pub async fn change_membership(
        &self,
        group: GroupId,
        kind: ConfChangeKind,
        replica: ReplicaId,
        address: &str,
        expected_conf_index: u64,
        timeout: Duration,
    ) -> Result<GroupMembership> {
        let shared = self.shared(group)?;
        let key = self.key();
        let cc = ConfChange { kind, replica, context: encode_cc_context(key, expected_conf_index, address) };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.register(&shared, key, Waiter::Propose(tx));
        if let Err(e) = self.submit(group, Input::ProposeConf { group, key, cc }) {
            shared.take_waiter(key);
            return Err(e);
        }
        match self.wait(&shared, key, rx, timeout).await {
            Ok(_) => Ok(self.membership(group)?),
            Err(NodeError::InvalidArgument(msg)) if msg.starts_with("membership changed") => {
                Err(NodeError::StaleConfChange {
                    expected: expected_conf_index,
                    current: self.membership(group)?.conf_index,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Adds a replica (`role`: voter, non-voter or witness) reachable at `address`.
    pub async fn add_replica(
        &self,
        group: GroupId,
        replica: ReplicaId,
        address: &str,
        role: MemberRole,
        expected_conf_index: u64,
        timeout: Duration,
    ) -> Result<GroupMembership> {
        let kind = match role {
            MemberRole::Voter => ConfChangeKind::AddVoter,
            MemberRole::NonVoter => ConfChangeKind::AddNonVoter,
            MemberRole::Witness => ConfChangeKind::AddWitness,
            _ => return Err(NodeError::InvalidArgument("unknown member role".into())),
        };
        self.change_membership(group, kind, replica, address, expected_conf_index, timeout).await
    }

    /// Promotes a non-voter to voter.
    pub async fn promote_replica(
        &self,
        group: GroupId,
        replica: ReplicaId,
        expected_conf_index: u64,
        timeout: Duration,
    ) -> Result<GroupMembership> {
        self.change_membership(group, ConfChangeKind::Promote, replica, "", expected_conf_index, timeout)
            .await
    }

    /// Removes a replica. Its id can never be used again in this group.
    pub async fn remove_replica(
        &self,
        group: GroupId,
        replica: ReplicaId,
        expected_conf_index: u64,
        timeout: Duration,
    ) -> Result<GroupMembership> {
        self.change_membership(group, ConfChangeKind::Remove, replica, "", expected_conf_index, timeout).await
    }

    /// Asks the leader to hand leadership to `to`. Returns once the request is accepted; watch
    /// [`NodeHost::leader`] for the outcome.
    pub async fn transfer_leader(&self, group: GroupId, to: ReplicaId) -> Result<()> {
        self.shared(group)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(group, Input::Transfer { group, to, tx })?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
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

    /// The groups with a replica on this node, in id order.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut g: Vec<GroupId> =
            self.inner.groups.read().map(|m| m.keys().copied().collect()).unwrap_or_default();
        g.sort_unstable();
        g
    }

    /// This node's replica id in `group`.
    pub fn replica_of(&self, group: GroupId) -> Result<ReplicaId> {
        Ok(self.shared(group)?.replica)
    }

    /// The index applied to this replica's state machine.
    pub fn applied_index(&self, group: GroupId) -> Result<LogIndex> {
        Ok(LogIndex(self.shared(group)?.applied.load(Ordering::Acquire)))
    }

    /// Takes a snapshot now; optionally copies it to `export` (a file for backups). Returns its index.
    pub async fn request_snapshot(
        &self,
        group: GroupId,
        export: Option<&Path>,
        timeout: Duration,
    ) -> Result<LogIndex> {
        let shared = self.shared(group)?;
        let key = self.key();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.register(&shared, key, Waiter::Snapshot(tx));
        let ai = (group.0 % self.inner.appliers.len() as u64) as usize;
        self.inner.appliers[ai]
            .send(ApplyTask::Snapshot { group, key })
            .map_err(|_| NodeError::ShuttingDown)?;
        let (index, path) = self.wait(&shared, key, rx, timeout).await?;
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
    pub fn import_snapshot(
        &self,
        group: GroupId,
        replica: ReplicaId,
        exported: &Path,
        members: BTreeMap<ReplicaId, String>,
    ) -> Result<LogIndex> {
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
        // Start from a clean slate: no older snapshot file may shadow the imported one.
        let dir = self.snap_dir(group);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NodeError::Storage(format!("{}: {e}", dir.display()))),
        }
        std::fs::create_dir_all(&dir).map_err(|e| NodeError::Storage(format!("{}: {e}", dir.display())))?;
        let name = apply::snapshot_file_name(old.index);
        snapshot::write_snapshot(&dir.join(&name), &header, |w| std::io::copy(&mut body, w).map(|_| ()))
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let mut batch = WriteBatch::new();
        let snap = drakkar_raft::Snapshot {
            meta: drakkar_raft::SnapshotMeta { index: old.index, term: old.term, membership },
            data: Bytes::from(name),
        };
        let hs = HardState { term: old.term, vote: None, commit: old.index };
        batch.remove_group(group).apply_snapshot(group, snap).set_hard_state(group, hs);
        self.inner.db.save(&batch).map_err(|e| NodeError::Storage(e.to_string()))?;
        Ok(old.index)
    }

    /// Stops every group and the workers.
    pub fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for w in &self.inner.workers {
            let _ = w.send(Input::Shutdown);
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

impl MessageSink for Inner {
    fn deliver(&self, batch: MessageBatch) {
        let n = self.workers.len() as u64;
        let mut reused = batch.reused;
        if !reused.is_empty() && batch.messages.is_empty() {
            // Notices only: every worker must see them (any may host the refused replica).
            for w in &self.workers {
                let input = Input::Messages {
                    from: batch.from.clone(),
                    incarnation: batch.incarnation,
                    messages: Vec::new(),
                    reused: reused.clone(),
                };
                let _ = w.send(input);
            }
            return;
        }
        let mut per: Vec<Vec<(GroupId, Message)>> = vec![Vec::new(); self.workers.len()];
        for (g, m) in batch.messages {
            per[(g.0 % n) as usize].push((g, m));
        }
        for (w, messages) in per.into_iter().enumerate() {
            if !messages.is_empty() {
                // Full queue: drop; Raft retransmits.
                let input = Input::Messages {
                    from: batch.from.clone(),
                    incarnation: batch.incarnation,
                    messages,
                    reused: std::mem::take(&mut reused),
                };
                let _ = self.workers[w].try_send(input);
            }
        }
    }

    fn receive_snapshot(
        &self,
        group: GroupId,
        mut msg: Message,
        data: Bytes,
    ) -> std::result::Result<(), String> {
        let w = &self.workers[(group.0 % self.workers.len() as u64) as usize];
        let Some(snap) = msg.snapshot.as_mut() else {
            return Err("snapshot message without a snapshot".into());
        };
        let mut header = None;
        if !data.is_empty() {
            let dir = self.cfg.data_dir.join("snapshots").join(group.0.to_string());
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let name = apply::snapshot_file_name(snap.meta.index);
            let path = dir.join(&name);
            let tmp = dir.join(format!("{name}.recv"));
            std::fs::write(&tmp, &data).map_err(|e| e.to_string())?;
            let h = snapshot::verify_snapshot(&tmp).map_err(|e| e.to_string())?;
            if h.index != snap.meta.index || h.term != snap.meta.term || h.group != group {
                let _ = std::fs::remove_file(&tmp);
                return Err("snapshot file does not match its message".into());
            }
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
            std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| e.to_string())?;
            snap.data = Bytes::from(name);
            header = Some(Box::new(h));
        }
        w.send(Input::SnapshotArrived { group, msg: Box::new(msg), header }).map_err(|e| e.to_string())
    }
}
