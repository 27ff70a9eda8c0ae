//! `RawNode`: the single-threaded driver of one replica, and the `Ready` batches it hands out.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::message::{Message, MessageKind};
use crate::progress::Progress;
use crate::raft::{Raft, Role, SoftState};
use crate::read_only::ReadState;
use crate::storage::Storage;
use crate::types::{
    ConfChange, Entry, EntryKind, HardState, LogIndex, Membership, ReplicaId, Snapshot, Term,
};
use crate::{Error, ProposalError};

/// Everything the replica needs the caller to do, in one batch.
///
/// The contract, per batch:
/// 1. `messages` may be sent at once, even before anything below is durable.
/// 2. Persist `snapshot`, then `entries` (which replace any stored entries from the first new index on),
///    then `hard_state`, durably (one atomic write is best).
/// 3. Only then send `persisted_messages` (votes and acknowledgements speak for durable state), and call
///    [`RawNode::on_persisted`] with `number` (or [`RawNode::advance`] to also mark the batch applied).
/// 4. Apply `snapshot` then `committed_entries` to the state machine, in order, and report the applied
///    index ([`RawNode::advance_apply_to`], or [`RawNode::advance`]).
///
/// Batches must be persisted in the order they were handed out; steps 3 and 4 of different batches may
/// overlap (asynchronous storage writes).
#[derive(Debug, Default)]
pub struct Ready {
    number: u64,
    applied_hint: LogIndex,
    /// Leader or role change since the last batch.
    pub soft_state: Option<SoftState>,
    /// Hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Confirmed reads: serve each once the state machine has applied `index`.
    pub read_states: Vec<ReadState>,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// A snapshot from the leader, to persist and to restore the state machine from.
    pub snapshot: Option<Snapshot>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Messages to send once this batch is durable.
    pub persisted_messages: Vec<Message>,
}

impl Ready {
    /// The batch's sequence number, for [`RawNode::on_persisted`].
    pub fn number(&self) -> u64 {
        self.number
    }
}

/// What a handed-out batch asked to persist, to acknowledge when the caller says it is durable.
struct ReadyRecord {
    number: u64,
    last_entry: Option<(LogIndex, Term)>,
    snapshot: Option<LogIndex>,
}

/// A snapshot of a replica's state for observers and tests.
#[derive(Clone, Debug)]
pub struct Status {
    /// This replica.
    pub id: ReplicaId,
    /// Term, vote, commit.
    pub hard_state: HardState,
    /// Role and leader.
    pub soft_state: SoftState,
    /// Index the state machine reported applied.
    pub applied: LogIndex,
    /// Last index of the log.
    pub last_index: LogIndex,
    /// Highest index known durable locally.
    pub persisted: LogIndex,
    /// Applied membership.
    pub membership: Membership,
    /// Followers' progress (leader only).
    pub progress: BTreeMap<ReplicaId, Progress>,
    /// Pending leader transfer target.
    pub lead_transferee: Option<ReplicaId>,
    /// Whether the replica is quiesced.
    pub quiesced: bool,
    /// Messages dropped as malformed, stale or impossible.
    pub dropped_messages: u64,
    /// Bytes of unapplied entries counted by the rate limiter (leader).
    pub in_mem_log_bytes: u64,
}

/// One replica of one group: the Raft core plus the bookkeeping of handed-out batches.
pub struct RawNode<S> {
    raft: Raft<S>,
    /// Committed entries handed out and not yet reported applied: (last index of a batch, its bytes).
    /// Invariant: `applying_bytes` is the sum of the sizes.
    applying: VecDeque<(LogIndex, u64)>,
    applying_bytes: u64,
    prev_ss: SoftState,
    prev_hs: HardState,
    next_number: u64,
    records: VecDeque<ReadyRecord>,
}

impl<S: Storage> RawNode<S> {
    /// Starts a replica from the durable state in `storage`.
    pub fn new(cfg: Config, storage: S) -> Result<Self, Error> {
        let raft = Raft::new(cfg, storage)?;
        let prev_ss = raft.soft_state();
        let prev_hs = raft.hard_state();
        Ok(RawNode {
            raft,
            applying: VecDeque::new(),
            applying_bytes: 0,
            prev_ss,
            prev_hs,
            next_number: 1,
            records: VecDeque::new(),
        })
    }

    /// Advances logical time by one tick (elections, heartbeats).
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now (tests and operators; normally ticks do this).
    pub fn campaign(&mut self) {
        self.raft.wake();
        self.raft.hup(false);
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        if matches!(m.kind, MessageKind::Propose) && m.entries.is_empty() {
            self.raft.dropped += 1;
            return Ok(());
        }
        self.raft.step(m)
    }

    /// Proposes application data. On a follower it is forwarded to the leader (and may be lost: the caller
    /// retries on timeout). Returns the index on the leader, `None` when forwarded.
    pub fn propose(&mut self, data: Bytes) -> Result<Option<LogIndex>, ProposalError> {
        self.propose_entries(vec![Entry { data, ..Default::default() }])
    }

    /// Proposes several entries at once (one append for all).
    pub fn propose_batch(&mut self, data: Vec<Bytes>) -> Result<Option<LogIndex>, ProposalError> {
        self.propose_entries(data.into_iter().map(|data| Entry { data, ..Default::default() }).collect())
    }

    /// Proposes one membership change. At most one may be pending (appended but not applied).
    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<Option<LogIndex>, ProposalError> {
        let e = Entry { kind: EntryKind::ConfChange, data: cc.encode(), ..Default::default() };
        self.propose_entries(vec![e])
    }

    fn propose_entries(&mut self, ents: Vec<Entry>) -> Result<Option<LogIndex>, ProposalError> {
        self.raft.wake();
        match self.raft.role {
            Role::Leader => self.raft.propose_entries(ents).map(Some),
            Role::Follower => {
                let Some(leader) = self.raft.leader else { return Err(ProposalError::NoLeader) };
                if ents.is_empty() {
                    return Err(ProposalError::Empty);
                }
                let mut m = Message::new(MessageKind::Propose, self.raft.id, leader, Term(0));
                m.entries = ents;
                self.raft.msgs.push(m);
                Ok(None)
            }
            _ => Err(ProposalError::NoLeader),
        }
    }

    /// Asks for a linearizable read point. The answer arrives as a [`ReadState`] carrying `ctx` (which must
    /// be unique among pending reads); it may never arrive if leadership changes, so callers time out.
    pub fn read_index(&mut self, ctx: Bytes) -> Result<(), ProposalError> {
        self.raft.wake();
        match self.raft.role {
            Role::Leader => {
                self.raft.leader_read_index(ctx, None);
                Ok(())
            }
            Role::Follower => {
                let Some(leader) = self.raft.leader else { return Err(ProposalError::NoLeader) };
                let mut m = Message::new(MessageKind::ReadIndex, self.raft.id, leader, Term(0));
                m.context = ctx;
                self.raft.msgs.push(m);
                Ok(())
            }
            _ => Err(ProposalError::NoLeader),
        }
    }

    /// Moves leadership to `to` (a voter): the leader catches it up, then tells it to campaign at once.
    /// Proposals are refused until the transfer completes or times out (an election timeout).
    pub fn transfer_leader(&mut self, to: ReplicaId) -> Result<(), ProposalError> {
        self.raft.wake();
        match self.raft.role {
            Role::Leader => self.raft.transfer_leader(to),
            Role::Follower => {
                let Some(leader) = self.raft.leader else { return Err(ProposalError::NoLeader) };
                if leader == to {
                    return Ok(());
                }
                // The forwarded request names the target in `from`.
                self.raft.msgs.push(Message::new(MessageKind::TransferLeader, to, leader, Term(0)));
                Ok(())
            }
            _ => Err(ProposalError::NoLeader),
        }
    }

    /// Applies a committed membership change (call when applying its entry). Returns the new membership,
    /// or why the change is invalid (then the caller treats the entry as a no-op on every replica alike).
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<Membership, crate::ConfChangeError> {
        let mut m = self.raft.membership.clone();
        m.apply(cc)?;
        self.raft.set_membership(m.clone());
        Ok(m)
    }

    /// The transport could not reach `to`.
    pub fn report_unreachable(&mut self, to: ReplicaId) {
        self.raft.report_unreachable(to);
    }

    /// Sending a snapshot to `to` finished, successfully or not.
    pub fn report_snapshot(&mut self, to: ReplicaId, ok: bool) {
        self.raft.report_snapshot(to, ok);
    }

    /// True while the replica is quiesced: ticks do nothing until a message or request wakes it, so a host
    /// can skip it entirely on ticks.
    pub fn is_quiesced(&self) -> bool {
        self.raft.quiesced
    }

    /// Wakes a quiesced replica (e.g. the host noticed a peer went away).
    pub fn wake(&mut self) {
        self.raft.wake();
    }

    /// True if [`RawNode::ready`] has something to hand out.
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        !r.msgs.is_empty()
            || !r.msgs_after_persist.is_empty()
            || !r.read_states.is_empty()
            || !r.log.unstable.next_entries().is_empty()
            || r.log.unstable.next_snapshot().is_some()
            || (self.may_hand_out_committed() && r.log.has_next_committed_entries())
            || r.soft_state() != self.prev_ss
            || r.hard_state() != self.prev_hs
    }

    /// Hands out the next batch of work. Everything in it is handed out once.
    pub fn ready(&mut self) -> Result<Ready, Error> {
        let r = &mut self.raft;
        let number = self.next_number;
        self.next_number += 1;
        let mut rd = Ready { number, ..Default::default() };
        let ss = r.soft_state();
        if ss != self.prev_ss {
            rd.soft_state = Some(ss);
            self.prev_ss = ss;
        }
        let hs = r.hard_state();
        if hs != self.prev_hs {
            rd.hard_state = Some(hs);
            self.prev_hs = hs;
        }
        rd.entries = r.log.unstable.next_entries().to_vec();
        rd.snapshot = r.log.unstable.next_snapshot().cloned();
        r.log.unstable.accept_in_progress();
        if self.may_hand_out_committed() {
            let r = &mut self.raft;
            let mut budget = r.cfg.max_committed_size_per_ready;
            if r.cfg.max_applying_bytes > 0 {
                budget = budget.min(r.cfg.max_applying_bytes - self.applying_bytes);
            }
            rd.committed_entries = r.log.next_committed_entries(budget)?;
            if let Some(last) = rd.committed_entries.last() {
                r.log.handed_out = last.index;
                let bytes: u64 = rd.committed_entries.iter().map(Entry::size).sum();
                self.applying.push_back((last.index, bytes));
                self.applying_bytes += bytes;
            }
        }
        let r = &mut self.raft;
        rd.applied_hint = match (&rd.committed_entries.last(), &rd.snapshot) {
            (Some(e), _) => e.index,
            (None, Some(s)) => s.meta.index,
            (None, None) => LogIndex(0),
        };
        rd.messages = std::mem::take(&mut r.msgs);
        rd.persisted_messages = std::mem::take(&mut r.msgs_after_persist);
        rd.read_states = std::mem::take(&mut r.read_states);
        self.records.push_back(ReadyRecord {
            number,
            last_entry: rd.entries.last().map(|e| (e.index, e.term)),
            snapshot: rd.snapshot.as_ref().map(|s| s.meta.index),
        });
        Ok(rd)
    }

    /// Every batch up to `number` is durable.
    pub fn on_persisted(&mut self, number: u64) {
        while self.records.front().is_some_and(|r| r.number <= number) {
            let Some(rec) = self.records.pop_front() else { break };
            if let Some(i) = rec.snapshot {
                self.raft.log.stable_snap_to(i);
            }
            if let Some((i, t)) = rec.last_entry {
                self.raft.log.stable_to(i, t);
            }
        }
        let r = &mut self.raft;
        if r.role == Role::Leader {
            let persisted = r.log.persisted;
            if let Some(pr) = r.progress.get_mut(&r.id) {
                pr.matched = persisted;
            }
            if r.maybe_commit() {
                r.bcast_append();
            }
        }
    }

    /// The state machine has applied everything up to `index`.
    pub fn advance_apply_to(&mut self, index: LogIndex) {
        self.raft.applied_to(index);
        while let Some(&(last, bytes)) = self.applying.front() {
            if last > index {
                break;
            }
            self.applying_bytes -= bytes;
            self.applying.pop_front();
        }
    }

    /// False while too many committed bytes are out for applying (see `Config::max_applying_bytes`).
    fn may_hand_out_committed(&self) -> bool {
        let limit = self.raft.cfg.max_applying_bytes;
        limit == 0 || self.applying_bytes < limit
    }

    /// The synchronous contract: the batch is durable and its committed entries are applied.
    pub fn advance(&mut self, rd: Ready) {
        self.on_persisted(rd.number);
        if rd.applied_hint.0 > 0 {
            self.advance_apply_to(rd.applied_hint);
        }
    }

    /// A read-only view of the replica's state.
    pub fn status(&self) -> Status {
        let r = &self.raft;
        Status {
            id: r.id,
            hard_state: r.hard_state(),
            soft_state: r.soft_state(),
            applied: r.log.applied,
            last_index: r.log.last_index(),
            persisted: r.log.persisted,
            membership: r.membership.clone(),
            progress: if r.role == Role::Leader { r.progress.clone() } else { BTreeMap::new() },
            lead_transferee: r.lead_transferee,
            quiesced: r.quiesced,
            dropped_messages: r.dropped,
            in_mem_log_bytes: r.in_mem_bytes,
        }
    }

    /// The storage the core reads from.
    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    /// Mutable access to the storage, for the caller's writes (appending entries, installing snapshots,
    /// compaction). The core only reads it.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.storage
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.raft.id
    }

    /// The term of the log entry at `index` (durable or not), for observers and checkers.
    pub fn log_term(&self, index: LogIndex) -> Result<Term, crate::StorageError> {
        self.raft.log.term(index)
    }

    /// Log entries in `[lo, hi)` (durable or not), for observers and checkers.
    pub fn log_entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<Entry>, crate::StorageError> {
        self.raft.log.slice(lo, hi, u64::MAX)
    }

    /// The first index still in the log (after the latest snapshot).
    pub fn first_index(&self) -> LogIndex {
        self.raft.log.first_index()
    }
}
