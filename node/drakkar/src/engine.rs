//! Step workers: each owns a partition of the groups. A round steps every group that has input, hands out
//! their `Ready`s, sends what may go at once, saves every group's entries and hard state in ONE log store
//! batch with one fsync, then sends the acknowledgements and hands committed entries to the apply workers.
//!
//! Messages from peers are admitted here, against the membership the worker knows (see
//! [`crate::identity`]): only members, at their recorded address, reach Raft and the `peers` file. A
//! joining replica (no membership yet) takes any authenticated sender but records nothing durable about
//! it: the sender's address is kept in memory only ([`Round`]'s `learned`), to answer it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender, select};
use drakkar_logdb::{GroupStorage, LogDb, WriteBatch};
use drakkar_raft::{
    ConfChange, ConfChangeKind, EntryKind, GroupId, LogIndex, Message, MessageKind, ProposalError, RawNode,
    ReplicaId, Role, Storage, Term,
};

use crate::apply::{ApplyEvent, ApplyItem, ApplyTask, GroupMembership, GroupShared, StopReason, Waiter};
use crate::error::NodeError;
use crate::events::{Event, EventBus};
use crate::identity::{self, Admission, PeerIdentities, Refusal, Verdict};
use crate::payload::Payload;
use crate::snapshot::SnapshotHeader;
use crate::transport::{MessageBatch, SnapshotRequest, Transport};

/// Encodes a membership change's context: proposal key, expected conf index (0: any), address.
pub(crate) fn encode_cc_context(key: u64, expected: u64, address: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(16 + address.len());
    b.put_u64_le(key);
    b.put_u64_le(expected);
    b.put_slice(address.as_bytes());
    b.freeze()
}

/// Decodes what [`encode_cc_context`] wrote; a context too short is `(0, 0, "")`, an address that is no
/// UTF-8 is decoded lossily.
pub(crate) fn decode_cc_context(ctx: &Bytes) -> (u64, u64, String) {
    if ctx.len() < 16 {
        return (0, 0, String::new());
    }
    let mut b = ctx.clone();
    let key = b.get_u64_le();
    let expected = b.get_u64_le();
    (key, expected, String::from_utf8_lossy(&b).into_owned())
}

/// Input to a step worker.
pub(crate) enum Input {
    Messages {
        from: String,
        incarnation: u128,
        messages: Vec<(GroupId, Message)>,
        /// Our replicas the sender refuses (their ids were reused after data loss).
        reused: Vec<(GroupId, ReplicaId)>,
    },
    Propose {
        group: GroupId,
        key: u64,
        data: Bytes,
    },
    ProposeConf {
        group: GroupId,
        key: u64,
        cc: ConfChange,
    },
    ReadIndex {
        group: GroupId,
        key: u64,
    },
    Transfer {
        group: GroupId,
        to: ReplicaId,
        tx: tokio::sync::oneshot::Sender<Result<(), NodeError>>,
    },
    Tick,
    Start(Box<StepGroup>),
    Stop {
        group: GroupId,
        tx: tokio::sync::oneshot::Sender<()>,
    },
    ReportSnapshot {
        group: GroupId,
        to: ReplicaId,
        ok: bool,
    },
    /// The transport could not reach these replicas of this worker's groups.
    Unreachable(Vec<(GroupId, ReplicaId)>),
    /// A snapshot file arrived from the leader and was verified; step the message that refers to it.
    SnapshotArrived {
        group: GroupId,
        msg: Box<Message>,
        header: Option<Box<SnapshotHeader>>,
    },
    Shutdown,
}

/// The step side of one group.
pub(crate) struct StepGroup {
    pub(crate) shared: Arc<GroupShared>,
    pub(crate) node: RawNode<GroupStorage>,
    pub(crate) apply: Sender<ApplyTask>,
    pub(crate) membership: GroupMembership,
    pub(crate) compaction_overhead: u64,
    pub(crate) snap_dir: PathBuf,
}

/// Everything a step worker needs.
pub(crate) struct StepWorker {
    pub(crate) index: usize,
    pub(crate) db: Arc<LogDb>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) address: String,
    pub(crate) incarnation: u128,
    pub(crate) inbox: Receiver<Input>,
    pub(crate) events: Receiver<(usize, ApplyEvent)>,
    pub(crate) self_tx: Sender<Input>,
    pub(crate) tick: Duration,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) identities: Arc<PeerIdentities>,
    pub(crate) bus: EventBus,
    /// Deterministic mode: stream snapshots from the calling thread (the simulated transport only queues
    /// them) instead of a thread per transfer.
    pub(crate) inline_snapshots: bool,
    /// The first fatal error of any worker (see [`crate::NodeHostInfo::failure`]).
    pub(crate) failure: Arc<std::sync::OnceLock<String>>,
}

/// A step worker's state between rounds: its groups and the work a round left for the next.
#[derive(Default)]
pub(crate) struct Round {
    groups: HashMap<GroupId, StepGroup>,
    dirty: Vec<GroupId>,
    proposals: BTreeMap<GroupId, Vec<(u64, Bytes)>>,
    /// Ordered by address, so a deterministic run sends in a deterministic order.
    outbox: BTreeMap<String, Vec<(GroupId, Message)>>,
    /// Inputs taken from the inbox, handled by the next round.
    inputs: Vec<Input>,
    /// For groups that know no membership yet (joining replicas): the addresses their senders proved,
    /// by replica id; at most [`MAX_LEARNED`] per group. In memory only, never in the membership or a
    /// snapshot: used to answer until the membership arrives.
    learned: HashMap<GroupId, BTreeMap<ReplicaId, String>>,
    /// Ticks this worker has handled: the clock of [`Stranded`] replicas.
    ticks: u64,
    /// Replicas that refuse a would-be leader they do not know (see [`Stranded`]). Ordered: a
    /// deterministic run sends its rescues in a deterministic order.
    stranded: BTreeMap<GroupId, Stranded>,
}

/// A replica that hears leader traffic only from a replica it does not know: a member that missed the
/// change adding its group's leader (it was down meanwhile, and its log was compacted past it) refuses
/// that leader, so it can never learn the change from it. After [`STRANDED_TICKS`] without a leader it
/// asks a voter it knows to campaign (`TimeoutNow`, as a leader transfer does), every [`RESCUE_TICKS`],
/// each time another voter: once one it knows leads, it catches up and learns the new members. Refused
/// traffic cannot trigger this while the replica hears from a leader it knows.
#[derive(Clone, Copy, Debug)]
struct Stranded {
    since: u64,
    last_rescue: Option<u64>,
    attempts: u64,
}

/// Ticks without a leader, while refusing an unknown one, before a stranded replica asks for an
/// election (three election timeouts at the default 10 ticks).
const STRANDED_TICKS: u64 = 30;
/// Ticks between two elections a stranded replica asks for.
const RESCUE_TICKS: u64 = 50;

/// Most sender addresses a joining replica remembers (its leader is one; an intruder's inventions must
/// not grow memory).
const MAX_LEARNED: usize = 8;

/// Remembers that `replica` of joining group `gid` spoke from `from` (the latest word wins: a real leader
/// whose id an intruder claimed is restored by its next heartbeat).
fn learn(
    learned: &mut HashMap<GroupId, BTreeMap<ReplicaId, String>>,
    gid: GroupId,
    replica: ReplicaId,
    from: &str,
) {
    let l = learned.entry(gid).or_default();
    if l.len() >= MAX_LEARNED && !l.contains_key(&replica) {
        l.pop_first();
    }
    l.insert(replica, from.to_string());
}

fn map_proposal_error(group: GroupId, e: ProposalError) -> NodeError {
    match e {
        ProposalError::NoLeader => NodeError::NoLeader { group },
        ProposalError::RateLimited => NodeError::RateLimited,
        e => NodeError::Refused(e),
    }
}

/// Most inputs one round takes from the inbox.
const ROUND_INPUTS: usize = 4096;

impl StepWorker {
    /// The worker thread: waits for input (or an apply event, or a few ticks' time), then runs a round.
    pub(crate) fn run(self) {
        let mut r = Round::default();
        loop {
            let mut shutdown = false;
            select! {
                recv(self.inbox) -> i => match i {
                    Ok(i) => r.inputs.push(i),
                    Err(_) => shutdown = true,
                },
                recv(self.events) -> e => if let Ok((_, e)) = e { self.handle_event(&mut r, e) },
                default(self.tick * 4) => {}
            }
            if self.round(&mut r, shutdown) {
                return;
            }
        }
    }

    /// Whether a round has anything to do: queued input or apply events, or groups left dirty by the last
    /// round. The deterministic driver runs rounds while this holds.
    pub(crate) fn has_work(&self, r: &Round) -> bool {
        !self.inbox.is_empty()
            || !self.events.is_empty()
            || !r.inputs.is_empty()
            || !r.dirty.is_empty()
            || !r.proposals.is_empty()
    }

    /// One round, the same on a worker thread and under the deterministic driver: take queued inputs, apply
    /// progress, handle the inputs, propose, then up to four persist rounds (each ONE log store write and
    /// fsync for every ready group). `shutdown` (or a `Shutdown` input) stops every group. Returns true once
    /// the worker has shut down.
    pub(crate) fn round(&self, r: &mut Round, mut shutdown: bool) -> bool {
        while r.inputs.len() < ROUND_INPUTS {
            match self.inbox.try_recv() {
                Ok(i) => r.inputs.push(i),
                Err(_) => break,
            }
        }
        // Apply progress first: an input may depend on it (a membership change after the previous one
        // was applied).
        while let Ok((_, e)) = self.events.try_recv() {
            self.handle_event(r, e);
        }
        for i in std::mem::take(&mut r.inputs) {
            shutdown |= self.handle(r, i);
        }
        let depth = vec![("worker".to_string(), self.index.to_string())];
        self.metrics.queue_depth.get_or_create(&depth).set(self.inbox.len() as i64);
        self.flush_proposals(r);
        for _ in 0..4 {
            if !self.process_ready(r) {
                break;
            }
        }
        if shutdown {
            for (_, g) in r.groups.drain() {
                stop_group(g, StopReason::Stopped("node shutting down".into()), &self.bus);
            }
        }
        shutdown
    }

    fn mark(r: &mut Round, g: GroupId) {
        r.dirty.push(g);
    }

    /// Handles one input. Returns true on shutdown.
    fn handle(&self, r: &mut Round, input: Input) -> bool {
        match input {
            Input::Messages { from, incarnation, messages, reused } => {
                for (gid, rid) in reused {
                    self.reused_notice(r, &from, gid, rid);
                }
                let mut refused = Vec::new();
                for (gid, m) in messages {
                    if m.kind == MessageKind::Snapshot {
                        // Snapshots come through `MessageSink::receive_snapshot`, which verifies their file;
                        // one in a batch would name any file as its data.
                        identity::refused(&self.metrics, Refusal::Malformed, gid, m.from, &from);
                        continue;
                    }
                    let Some(g) = r.groups.get_mut(&gid) else {
                        // Nothing is created for a group this node does not run.
                        identity::refused(&self.metrics, Refusal::UnknownGroup, gid, m.from, &from);
                        continue;
                    };
                    let verdict = match identity::admit(&g.membership, m.from, &from) {
                        // Only members are recorded: the `peers` file is bounded by the memberships.
                        Admission::Member => self.identities.check(gid, m.from, incarnation),
                        Admission::Joining => {
                            learn(&mut r.learned, gid, m.from, &from);
                            Ok(self.identities.check_known(gid, m.from, incarnation))
                        }
                        Admission::Refused(why) => {
                            identity::refused(&self.metrics, why, gid, m.from, &from);
                            let leads = matches!(
                                m.kind,
                                MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot
                            );
                            if why == Refusal::NotMember
                                && leads
                                && !g.membership.membership.removed.contains(&m.from)
                                && m.term.0 >= g.shared.term.load(Ordering::Acquire)
                            {
                                let since = r.ticks;
                                r.stranded.entry(gid).or_insert(Stranded {
                                    since,
                                    last_rescue: None,
                                    attempts: 0,
                                });
                            }
                            continue;
                        }
                    };
                    if matches!(m.kind, MessageKind::Append | MessageKind::Heartbeat) {
                        // A leader it knows: not stranded.
                        r.stranded.remove(&gid);
                    }
                    match verdict {
                        Ok(Verdict::Accept) => {}
                        Ok(Verdict::Reused) => {
                            // A wiped node speaking under an old replica id: never let it vote or ack.
                            refused.push((gid, m.from));
                            continue;
                        }
                        Err(e) => {
                            self.fatal(r, format!("recording a peer's identity failed: {e}"));
                            return false;
                        }
                    }
                    if let Err(e) = g.node.step(m) {
                        self.fail(r, gid, format!("step failed: {e}"));
                        continue;
                    }
                    Self::mark(r, gid);
                }
                if !refused.is_empty() {
                    refused.sort_unstable();
                    refused.dedup();
                    let batch = MessageBatch {
                        from: self.address.clone(),
                        incarnation: self.incarnation,
                        messages: Vec::new(),
                        reused: refused,
                    };
                    self.transport.send(&from, batch);
                }
            }
            Input::Propose { group, key, data } => {
                if r.groups.contains_key(&group) {
                    r.proposals.entry(group).or_default().push((key, data));
                } else {
                    fail_waiter_on(None, key, NodeError::GroupNotFound(group));
                }
            }
            Input::ProposeConf { group, key, cc } => {
                let Some(g) = r.groups.get_mut(&group) else { return false };
                if g.node.status().soft_state.role != Role::Leader {
                    // Raft would forward it, and a leader that refuses a forwarded change (another one
                    // pending) drops it silently: the caller would only see a timeout. Refuse here instead;
                    // the caller retries at the leader (`NodeHost::leader`, or the gRPC leader hint).
                    fail_waiter_on(Some(&g.shared), key, NodeError::NoLeader { group });
                    return false;
                }
                match g.node.propose_conf_change(&cc) {
                    Ok(_) => Self::mark(r, group),
                    Err(e) => fail_waiter_on(Some(&g.shared), key, map_proposal_error(group, e)),
                }
            }
            Input::ReadIndex { group, key } => {
                let Some(g) = r.groups.get_mut(&group) else { return false };
                match g.node.read_index(Bytes::copy_from_slice(&key.to_le_bytes())) {
                    Ok(()) => Self::mark(r, group),
                    Err(e) => fail_waiter_on(Some(&g.shared), key, map_proposal_error(group, e)),
                }
            }
            Input::Transfer { group, to, tx } => {
                let res = match r.groups.get_mut(&group) {
                    // Only the leader transfers. Raft would forward the request in a message whose `from`
                    // is the target, not this replica, which the receiver's identity check refuses: the
                    // transfer would be dropped silently. The caller retries at the leader instead.
                    Some(g) if g.node.status().soft_state.role != Role::Leader => {
                        Err(NodeError::NoLeader { group })
                    }
                    Some(g) => g.node.transfer_leader(to).map_err(|e| map_proposal_error(group, e)),
                    None => Err(NodeError::GroupNotFound(group)),
                };
                let _ = tx.send(res);
                Self::mark(r, group);
            }
            Input::Tick => {
                for (gid, g) in r.groups.iter_mut() {
                    if g.node.is_quiesced() {
                        // Idle groups cost nothing: no timers run until something wakes them.
                        continue;
                    }
                    g.node.tick();
                    if g.node.has_ready() {
                        r.dirty.push(*gid);
                    }
                }
                r.ticks += 1;
                self.rescue_stranded(r);
            }
            Input::Start(g) => {
                let gid = g.shared.group;
                r.learned.remove(&gid);
                r.stranded.remove(&gid);
                r.groups.insert(gid, *g);
                Self::mark(r, gid);
            }
            Input::Stop { group, tx } => {
                if let Some(g) = r.groups.remove(&group) {
                    stop_group(g, StopReason::Stopped("stopped".into()), &self.bus);
                }
                let _ = tx.send(());
            }
            Input::Unreachable(targets) => {
                for (group, to) in targets {
                    if let Some(g) = r.groups.get_mut(&group) {
                        g.node.report_unreachable(to);
                        Self::mark(r, group);
                    }
                }
            }
            Input::ReportSnapshot { group, to, ok } => {
                if let Some(g) = r.groups.get_mut(&group) {
                    g.node.report_snapshot(to, ok);
                    Self::mark(r, group);
                }
            }
            Input::SnapshotArrived { group, msg, header } => {
                if let Some(g) = r.groups.get_mut(&group) {
                    // The sender's address was checked when its stream began (`MessageSink::admit_snapshot`);
                    // it may have been removed since.
                    let m = &g.membership.membership;
                    if !m.is_empty() && m.role(msg.from).is_none() {
                        identity::refused(&self.metrics, Refusal::NotMember, group, msg.from, "(snapshot)");
                        return false;
                    }
                    if let Some(h) = header {
                        for (id, a) in h.addresses.clone() {
                            g.membership.addresses.entry(id).or_insert(a);
                        }
                    }
                    if let Err(e) = g.node.step(*msg) {
                        self.fail(r, group, format!("step failed: {e}"));
                    } else {
                        Self::mark(r, group);
                    }
                }
            }
            Input::Shutdown => return true,
        }
        false
    }

    /// A peer says it refuses `replica` of `gid` (its id was reused after data loss): stops that replica,
    /// if it runs here and the notice comes from a member of the group (or, while the group knows no
    /// membership, from an address a sender of the group proved). Anything else is ignored.
    fn reused_notice(&self, r: &mut Round, from: &str, gid: GroupId, replica: ReplicaId) {
        let Some(g) = r.groups.get(&gid) else {
            identity::refused(&self.metrics, Refusal::UnknownGroup, gid, replica, from);
            return;
        };
        if g.shared.replica != replica {
            return;
        }
        let trusted = if g.membership.membership.is_empty() {
            r.learned.get(&gid).is_some_and(|l| l.values().any(|a| identity::same_address(a, from)))
        } else {
            identity::is_member_address(&g.membership, from, replica)
        };
        if !trusted {
            identity::refused(&self.metrics, Refusal::Notice, gid, replica, from);
            return;
        }
        if let Some(g) = r.groups.remove(&gid) {
            stop_group(g, StopReason::ReplicaIdReused, &self.bus);
        }
    }

    /// Asks, for each [`Stranded`] replica due, a voter it knows to campaign.
    fn rescue_stranded(&self, r: &mut Round) {
        let now = r.ticks;
        let mut gone = Vec::new();
        for (gid, s) in r.stranded.iter_mut() {
            let Some(g) = r.groups.get(gid) else {
                gone.push(*gid);
                continue;
            };
            let due = now.saturating_sub(s.since) >= STRANDED_TICKS
                && s.last_rescue.is_none_or(|t| now.saturating_sub(t) >= RESCUE_TICKS)
                && g.shared.leader.load(Ordering::Acquire) == 0;
            if !due {
                continue;
            }
            let me = g.shared.replica;
            let voters: Vec<(ReplicaId, &String)> = g
                .membership
                .membership
                .voters
                .iter()
                .filter(|v| **v != me)
                .filter_map(|v| Some((*v, g.membership.addresses.get(v)?)))
                .collect();
            if voters.is_empty() {
                continue;
            }
            let (to, addr) = voters[(s.attempts % voters.len() as u64) as usize];
            s.attempts += 1;
            s.last_rescue = Some(now);
            let term = Term(g.shared.term.load(Ordering::Acquire));
            tracing::info!(
                group = gid.0,
                replica = me.0,
                asked = to.0,
                "refusing a leader this replica does not know: asking a known voter to campaign"
            );
            r.outbox
                .entry(addr.clone())
                .or_default()
                .push((*gid, Message::new(MessageKind::TimeoutNow, me, to, term)));
        }
        for gid in gone {
            r.stranded.remove(&gid);
        }
    }

    fn handle_event(&self, r: &mut Round, e: ApplyEvent) {
        match e {
            ApplyEvent::Applied { group, index } => {
                if let Some(g) = r.groups.get_mut(&group) {
                    g.node.advance_apply_to(index);
                    Self::mark(r, group);
                }
            }
            ApplyEvent::SnapshotTaken { group, index, membership, file } => {
                let Some(g) = r.groups.get_mut(&group) else { return };
                let store = g.node.storage();
                let newer = store.snapshot().is_ok_and(|s| s.meta.index < index);
                if !newer || store.term(index).is_err() {
                    return;
                }
                let mut batch = WriteBatch::new();
                batch.create_snapshot(group, index, membership, Bytes::from(file.clone()));
                let compact_to = LogIndex(index.0.saturating_sub(g.compaction_overhead));
                let compacts = compact_to >= store.first_index().unwrap_or_default();
                if compacts {
                    batch.compact(group, compact_to);
                }
                match self.db.save(&batch) {
                    Ok(()) => {
                        remove_old_snapshots(&g.snap_dir, &file);
                        self.bus.emit(Event::SnapshotCreated { group, index });
                        if compacts {
                            self.bus.emit(Event::LogCompacted { group, index: compact_to });
                        }
                    }
                    Err(e) => self.fatal(r, format!("log store failed recording a snapshot: {e}")),
                }
            }
            ApplyEvent::Failed { group, reason } => self.fail(r, group, reason),
        }
    }

    fn flush_proposals(&self, r: &mut Round) {
        for (gid, props) in std::mem::take(&mut r.proposals) {
            let Some(g) = r.groups.get_mut(&gid) else { continue };
            let (keys, data): (Vec<u64>, Vec<Bytes>) = props.into_iter().unzip();
            self.metrics.proposals.inc_by(keys.len() as u64);
            match g.node.propose_batch(data) {
                Ok(_) => r.dirty.push(gid),
                Err(e) => {
                    let err = map_proposal_error(gid, e);
                    for k in keys {
                        fail_waiter_on(Some(&g.shared), k, clone_err(&err, gid));
                    }
                }
            }
        }
    }

    /// One persist round over the dirty groups. Returns true if another round may have work.
    fn process_ready(&self, r: &mut Round) -> bool {
        let mut dirty = std::mem::take(&mut r.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let mut batch = WriteBatch::new();
        let mut stash = Vec::new();
        for gid in dirty {
            let Some(g) = r.groups.get_mut(&gid) else { continue };
            if !g.node.has_ready() {
                continue;
            }
            let mut rd = match g.node.ready() {
                Ok(rd) => rd,
                Err(e) => {
                    self.fail(r, gid, format!("ready failed: {e}"));
                    continue;
                }
            };
            if let Some(ss) = rd.soft_state {
                let leader = ss.leader.map_or(0, |l| l.0);
                let labels = crate::metrics::group_labels(gid.0);
                self.metrics.group_leader.get_or_create(&labels).set(leader as i64);
                let old = g.shared.leader.swap(leader, Ordering::AcqRel);
                if old != leader {
                    let term = rd.hard_state.map_or(Term(g.shared.term.load(Ordering::Acquire)), |h| h.term);
                    self.bus.emit(Event::LeaderChanged { group: gid, leader: ss.leader, term });
                    tracing::debug!(group = gid.0, leader, old, term = term.0, role = ?ss.role, "leader changed");
                    if old != 0 {
                        fail_reads(&g.shared, gid);
                    }
                }
                if ss.role == Role::Leader {
                    self.metrics.leader_changes.inc();
                }
            }
            if let Some(hs) = rd.hard_state {
                if g.shared.term.swap(hs.term.0, Ordering::AcqRel) != hs.term.0 {
                    let labels = crate::metrics::group_labels(gid.0);
                    self.metrics.group_term.get_or_create(&labels).set(hs.term.0 as i64);
                }
                batch.set_hard_state(gid, hs);
            }
            // The Ready is ours: move its parts instead of cloning entries (hot path).
            for m in std::mem::take(&mut rd.messages) {
                self.route(g, gid, m, r.learned.get(&gid), &mut r.outbox);
            }
            if let Some(s) = &rd.snapshot {
                batch.apply_snapshot(gid, s.clone());
            }
            if !rd.entries.is_empty() {
                batch.append(gid, std::mem::take(&mut rd.entries));
            }
            stash.push((gid, rd));
        }
        self.flush_outbox(&mut r.outbox);
        if !batch.is_empty() {
            let start = std::time::Instant::now();
            if let Err(e) = self.db.save(&batch) {
                // A failed fsync cannot be retried safely: nothing more may be acknowledged.
                self.fatal(r, format!("log store write failed: {e}"));
                return false;
            }
            self.metrics.fsync_seconds.observe(start.elapsed().as_secs_f64());
            self.metrics.batch_groups.observe(stash.len() as f64);
        }
        let mut more = false;
        for (gid, mut rd) in stash {
            let Some(g) = r.groups.get_mut(&gid) else { continue };
            for m in std::mem::take(&mut rd.persisted_messages) {
                self.route(g, gid, m, r.learned.get(&gid), &mut r.outbox);
            }
            g.node.on_persisted(rd.number());
            if let Some(s) = &rd.snapshot {
                let file =
                    (!s.data.is_empty()).then(|| g.snap_dir.join(String::from_utf8_lossy(&s.data).as_ref()));
                let header = SnapshotHeader {
                    group: gid,
                    index: s.meta.index,
                    term: s.meta.term,
                    membership: s.meta.membership.clone(),
                    addresses: g.membership.addresses.clone(),
                    conf_index: g.membership.conf_index,
                    flags: 0,
                };
                g.membership.membership = s.meta.membership.clone();
                let _ = g.apply.send(ApplyTask::Restore { group: gid, header, file });
                self.bus.emit(Event::SnapshotReceived { group: gid, index: s.meta.index });
            }
            if !rd.committed_entries.is_empty() {
                self.metrics.commits.inc_by(rd.committed_entries.len() as u64);
                let items = committed_items(g, &rd.committed_entries, &self.bus);
                let _ = g.apply.send(ApplyTask::Items(gid, items));
            }
            for rs in &rd.read_states {
                let Some(key) = rs.context.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
                else {
                    continue;
                };
                let _ = g.apply.send(ApplyTask::Read { group: gid, key, index: rs.index });
            }
            if g.node.has_ready() {
                r.dirty.push(gid);
                more = true;
            }
        }
        self.flush_outbox(&mut r.outbox);
        more
    }

    /// Queues a message for its destination's address (snapshots go on their own path). `learned`: the
    /// addresses of the group's senders, used only while the group knows no membership (joining).
    fn route(
        &self,
        g: &StepGroup,
        gid: GroupId,
        m: Message,
        learned: Option<&BTreeMap<ReplicaId, String>>,
        outbox: &mut BTreeMap<String, Vec<(GroupId, Message)>>,
    ) {
        let known = g.membership.addresses.get(&m.to);
        let joining = || learned.filter(|_| g.membership.membership.is_empty()).and_then(|l| l.get(&m.to));
        let Some(addr) = known.or_else(joining).cloned() else { return };
        if m.kind == MessageKind::Snapshot {
            let to = m.to;
            if m.snapshot.as_ref().is_some_and(|s| s.meta.membership.role(to).is_none()) {
                // The latest snapshot predates this replica's addition: Raft would refuse it. Take a new one
                // (it will include the replica) and let Raft retry.
                let _ = g.apply.send(ApplyTask::Snapshot { group: gid, key: 0 });
                let _ = self.self_tx.try_send(Input::ReportSnapshot { group: gid, to, ok: false });
                return;
            }
            let file = m
                .snapshot
                .as_ref()
                .filter(|s| !s.data.is_empty())
                .map(|s| g.snap_dir.join(String::from_utf8_lossy(&s.data).as_ref()));
            let tx = self.self_tx.clone();
            let req = SnapshotRequest { from: self.address.clone(), to: addr, group: gid, msg: m, file };
            let done: crate::transport::SnapshotDone = Box::new(move |ok| {
                let _ = tx.send(Input::ReportSnapshot { group: gid, to, ok });
            });
            if self.inline_snapshots {
                self.transport.send_snapshot(req, done);
            } else {
                let transport = self.transport.clone();
                // Streaming a snapshot can take long: never on the step worker's thread.
                std::thread::spawn(move || transport.send_snapshot(req, done));
            }
            return;
        }
        outbox.entry(addr).or_default().push((gid, m));
    }

    fn flush_outbox(&self, outbox: &mut BTreeMap<String, Vec<(GroupId, Message)>>) {
        for (to, messages) in std::mem::take(outbox) {
            if to == self.address {
                continue;
            }
            self.metrics.messages_sent.inc_by(messages.len() as u64);
            self.transport.send(
                &to,
                MessageBatch {
                    from: self.address.clone(),
                    incarnation: self.incarnation,
                    messages,
                    reused: Vec::new(),
                },
            );
        }
    }

    fn fail(&self, r: &mut Round, gid: GroupId, reason: String) {
        if let Some(g) = r.groups.remove(&gid) {
            stop_group(g, StopReason::Stopped(reason.clone()), &self.bus);
        }
    }

    fn fatal(&self, r: &mut Round, reason: String) {
        tracing::error!(worker = self.index, %reason, "fatal: every group of this worker stops");
        let _ = self.failure.set(reason.clone());
        for (_, g) in r.groups.drain() {
            stop_group(g, StopReason::Stopped(reason.clone()), &self.bus);
        }
    }
}

fn clone_err(e: &NodeError, group: GroupId) -> NodeError {
    match e {
        NodeError::RateLimited => NodeError::RateLimited,
        NodeError::NoLeader { .. } => NodeError::NoLeader { group },
        NodeError::Refused(p) => NodeError::Refused(p.clone()),
        other => NodeError::InvalidArgument(other.to_string()),
    }
}

fn fail_waiter_on(shared: Option<&GroupShared>, key: u64, e: NodeError) {
    if let Some(w) = shared.and_then(|s| s.take_waiter(key)) {
        w.fail(e);
    }
}

/// Fails the linearizable reads waiting on this replica with `NoLeader`, after the leader it knew
/// changed: their read-index requests went to (or were held by) that leader, which may never answer (it
/// was killed, or deposed: a deposed leader drops its pending read-index requests). `NoLeader` is
/// retried by [`crate::NodeHost::read`] at the next leader within the read's own deadline. Safe for any
/// read, even one whose read index arrived meanwhile: a read changes nothing, and it is asked again.
fn fail_reads(shared: &GroupShared, group: GroupId) {
    let reads: Vec<Waiter> = match shared.waiters.lock() {
        Ok(mut w) => {
            let keys: Vec<u64> =
                w.iter().filter(|(_, w)| matches!(w, Waiter::Read { .. })).map(|(k, _)| *k).collect();
            keys.into_iter().filter_map(|k| w.remove(&k)).collect()
        }
        Err(_) => return,
    };
    for w in reads {
        w.fail(NodeError::NoLeader { group });
    }
}

/// Stops a group: its waiters fail, its apply side is dropped.
fn stop_group(g: StepGroup, reason: StopReason, bus: &EventBus) {
    let text = match &reason {
        StopReason::Stopped(r) => r.clone(),
        StopReason::ReplicaIdReused => "replica id reused after data loss: replace it under a new id".into(),
    };
    bus.emit(Event::ReplicaStopped { group: g.shared.group, reason: text });
    if let Ok(mut s) = g.shared.stopped.lock() {
        s.get_or_insert(reason);
    }
    g.shared.stop.set();
    let _ = g.apply.send(ApplyTask::Stop(g.shared.group));
    let waiters: Vec<Waiter> =
        g.shared.waiters.lock().map(|mut w| w.drain().map(|(_, w)| w).collect()).unwrap_or_default();
    for w in waiters {
        if let Some(e) = g.shared.stopped_error() {
            w.fail(e);
        }
    }
    g.shared.leader.store(0, Ordering::Release);
}

/// Converts committed entries for the apply worker, applying membership changes to Raft on the way (the
/// outcome is decided here, identically on every replica, from the log alone).
fn committed_items(g: &mut StepGroup, entries: &[drakkar_raft::Entry], bus: &EventBus) -> Vec<ApplyItem> {
    entries
        .iter()
        .map(|e| match e.kind {
            EntryKind::Normal => {
                ApplyItem::Cmd { index: e.index, term: e.term, payload: Payload::decode(&e.data) }
            }
            EntryKind::ConfChange => {
                let Some(cc) = ConfChange::decode(&e.data) else {
                    return ApplyItem::Noop { index: e.index, term: e.term };
                };
                let (key, expected, address) = decode_cc_context(&cc.context);
                let outcome = if expected != 0 && expected != g.membership.conf_index {
                    Err(NodeError::StaleConfChange { expected, current: g.membership.conf_index })
                } else {
                    match g.node.apply_conf_change(&cc) {
                        Ok(m) => {
                            g.membership.membership = m;
                            g.membership.conf_index = e.index.0;
                            match cc.kind {
                                ConfChangeKind::Remove => {}
                                _ if !address.is_empty() => {
                                    g.membership.addresses.insert(cc.replica, address);
                                }
                                _ => {}
                            }
                            bus.emit(Event::MembershipChanged {
                                group: g.shared.group,
                                membership: g.membership.membership.clone(),
                                conf_index: e.index.0,
                            });
                            Ok(g.membership.clone())
                        }
                        Err(err) => Err(NodeError::ConfChangeRefused(err.to_string())),
                    }
                };
                ApplyItem::Conf { index: e.index, term: e.term, key, outcome }
            }
            _ => ApplyItem::Noop { index: e.index, term: e.term },
        })
        .collect()
}

/// Keeps the newest two snapshot files of a group (one may still be streaming to a follower).
fn remove_old_snapshots(dir: &std::path::Path, current: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snapshot-") && n.ends_with(".snap"))
        .collect();
    names.sort();
    let keep_from = names.len().saturating_sub(2);
    for n in &names[..keep_from] {
        if n != current {
            let _ = std::fs::remove_file(dir.join(n));
        }
    }
}
