//! The Raft state machine of one replica: roles, terms, elections. Replication and the leader's duties
//! live in `leader.rs`; followers' and candidates' message handling in `follower.rs`.

mod follower;
mod leader;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::log::RaftLog;
use crate::message::{Message, MessageKind};
use crate::progress::{Progress, ProgressMap};
use crate::quorum::{self, VoteResult};
use crate::read_only::{ReadOnly, ReadState};
use crate::rng::Rng;
use crate::storage::Storage;
use crate::types::{Entry, EntryKind, LogIndex, Membership, ReplicaId, Term};
use crate::{Error, ProposalError};

/// The context of a vote request sent because of a leader transfer: it overrides followers' leases.
pub(crate) const CAMPAIGN_TRANSFER: &[u8] = b"transfer";

/// No real log or term gets anywhere near this (2^62 entries at ten million a second take 14,000 years);
/// a peer's value above it is garbage, and refusing it keeps every index and term computation far from
/// overflow.
const MAX_PLAUSIBLE: u64 = 1 << 62;

/// False for a message carrying an index or term no correct peer can produce.
fn plausible(m: &Message) -> bool {
    let ok = |v: u64| v < MAX_PLAUSIBLE;
    ok(m.term.0)
        && ok(m.log_term.0)
        && ok(m.index.0)
        && ok(m.commit.0)
        && ok(m.reject_hint.0)
        && m.entries.iter().all(|e| ok(e.index.0) && ok(e.term.0))
        && m.snapshot.as_ref().is_none_or(|s| ok(s.meta.index.0) && ok(s.meta.term.0))
}

/// The role a replica currently plays in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Runs a pre-election: asks whether it could win before disturbing anyone's term.
    PreCandidate,
    /// Runs an election.
    Candidate,
    /// Leads the group.
    Leader,
}

/// Volatile state that the caller may want to observe (leader changes, role changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The known leader of the current term.
    pub leader: Option<ReplicaId>,
    /// This replica's role.
    pub role: Role,
}

/// The Raft algorithm for one replica. Driven through [`crate::RawNode`].
pub struct Raft<S> {
    pub(crate) id: ReplicaId,
    pub(crate) term: Term,
    pub(crate) vote: Option<ReplicaId>,
    pub(crate) log: RaftLog<S>,
    pub(crate) role: Role,
    pub(crate) leader: Option<ReplicaId>,
    /// The applied membership. Invariant: `voting` is `voters ∪ witnesses` of it.
    pub(crate) membership: Membership,
    pub(crate) voting: BTreeSet<ReplicaId>,
    /// Progress of every member; meaningful only on the leader.
    pub(crate) progress: ProgressMap,
    pub(crate) votes: BTreeMap<ReplicaId, bool>,
    /// Messages that may be sent at once.
    pub(crate) msgs: Vec<Message>,
    /// Messages that may only be sent once the state handed out so far is durable.
    pub(crate) msgs_after_persist: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) read_only: ReadOnly,
    /// ReadIndex requests received before the leader committed an entry of its term.
    pub(crate) pending_reads: Vec<(Bytes, Option<ReplicaId>)>,
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_election_timeout: u32,
    pub(crate) lead_transferee: Option<ReplicaId>,
    /// Index of the latest conf change the leader appended; no other may be proposed until it is applied.
    pub(crate) pending_conf_index: LogIndex,
    pub(crate) quiesced: bool,
    pub(crate) idle_ticks: u32,
    /// (index, size) of log entries not yet applied; `in_mem_bytes` is their total.
    pub(crate) in_mem: VecDeque<(LogIndex, u64)>,
    pub(crate) in_mem_bytes: u64,
    pub(crate) rng: Rng,
    pub(crate) cfg: Config,
    /// Messages dropped because they were malformed, stale or impossible.
    pub(crate) dropped: u64,
}

impl<S: Storage> Raft<S> {
    /// Builds a replica from its durable state.
    pub fn new(cfg: Config, storage: S) -> Result<Self, Error> {
        cfg.validate()?;
        let init = storage.initial_state()?;
        let mut log = RaftLog::new(storage)?;
        let hs = init.hard_state;
        if hs.commit > log.last_index() {
            return Err(Error::CorruptState(format!(
                "hard state commit {} is beyond the last log index {}",
                hs.commit,
                log.last_index()
            )));
        }
        log.committed = log.committed.max(hs.commit);
        if cfg.applied > log.committed {
            if cfg.applied > log.last_index() {
                return Err(Error::CorruptState(format!(
                    "applied index {} is beyond the last log index {}",
                    cfg.applied,
                    log.last_index()
                )));
            }
            // The state machine applied these, so they were committed.
            log.committed = cfg.applied;
        }
        if cfg.applied > log.handed_out {
            log.handed_out = cfg.applied;
            log.applied = cfg.applied;
        }
        let mut r = Raft {
            id: cfg.id,
            term: hs.term,
            vote: hs.vote,
            log,
            role: Role::Follower,
            leader: None,
            membership: Membership::default(),
            voting: BTreeSet::new(),
            progress: ProgressMap::new(),
            votes: BTreeMap::new(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            read_only: ReadOnly::default(),
            pending_reads: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: cfg.election_tick,
            lead_transferee: None,
            pending_conf_index: LogIndex(0),
            quiesced: false,
            idle_ticks: 0,
            in_mem: VecDeque::new(),
            in_mem_bytes: 0,
            rng: Rng::new(cfg.seed ^ cfg.id.0.rotate_left(32)),
            cfg,
            dropped: 0,
        };
        r.set_membership(init.membership);
        r.become_follower(r.term, None);
        Ok(r)
    }

    /// The state the caller must persist.
    pub(crate) fn hard_state(&self) -> crate::HardState {
        crate::HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState { leader: self.leader, role: self.role }
    }

    /// True if this replica may campaign: it is a voter (witnesses and non-voters never lead).
    pub(crate) fn promotable(&self) -> bool {
        self.membership.voters.contains(&self.id)
    }

    /// Queues a message, holding back those that speak for state not yet durable.
    pub(crate) fn send(&mut self, mut m: Message) {
        m.from = self.id;
        if m.kind.needs_persisted_state() || m.kind == MessageKind::RequestVote {
            self.msgs_after_persist.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    fn reset_randomized_election_timeout(&mut self) {
        let e = u64::from(self.cfg.election_tick);
        self.randomized_election_timeout = self.rng.range(e, 2 * e) as u32;
    }

    /// Resets per-term volatile state on a role change into `term`.
    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = None;
        self.votes.clear();
        let next = self.log.last_index().next();
        let max_inflight = self.cfg.max_inflight_msgs;
        for (id, pr) in self.progress.iter_mut() {
            *pr = Progress::new(next, max_inflight);
            if *id == self.id {
                pr.matched = self.log.persisted;
            }
        }
        self.pending_conf_index = LogIndex(0);
        self.read_only.clear();
        self.pending_reads.clear();
        self.quiesced = false;
        self.idle_ticks = 0;
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<ReplicaId>) {
        self.reset(term);
        self.leader = leader;
        self.role = Role::Follower;
    }

    fn become_pre_candidate(&mut self) {
        // A pre-election changes neither the term nor the vote.
        self.votes.clear();
        self.leader = None;
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        self.reset(Term(self.term.0.saturating_add(1)));
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        self.reset(self.term);
        self.leader = Some(self.id);
        self.role = Role::Leader;
        // Conservatively treat any conf change in the uncommitted tail as pending.
        self.pending_conf_index = self.log.last_index();
        self.rebuild_in_mem();
        let empty = Entry { term: self.term, index: self.log.last_index().next(), ..Default::default() };
        self.append_entries(vec![empty]);
        self.bcast_append();
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        if self.quiesced {
            return;
        }
        if self.role == Role::Leader {
            self.tick_heartbeat();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    /// Starts an election (a pre-election first if configured), unless this replica cannot lead.
    pub(crate) fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.has_unapplied_conf_change() {
            // Campaigning with a config change committed but not applied could use the wrong quorum.
            return;
        }
        if self.cfg.pre_vote && !transfer {
            self.campaign(true, false);
        } else {
            self.campaign(false, transfer);
        }
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let lo = self.log.applied.next();
        let hi = self.log.committed.next();
        if lo >= hi {
            return false;
        }
        // Only changes that would alter the membership count: the bootstrap entries, for one, restate it.
        let Ok(ents) = self.log.slice(lo, hi, u64::MAX) else { return true };
        let mut m = self.membership.clone();
        for e in ents.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            if let Some(cc) = crate::ConfChange::decode(&e.data) {
                let _ = m.apply(&cc);
            }
        }
        m != self.membership
    }

    fn campaign(&mut self, pre: bool, transfer: bool) {
        let (kind, vote_term) = if pre {
            self.become_pre_candidate();
            (MessageKind::RequestPreVote, Term(self.term.0.saturating_add(1)))
        } else {
            self.become_candidate();
            (MessageKind::RequestVote, self.term)
        };
        if self.poll(self.id, true) == VoteResult::Won {
            // A group of one wins at once.
            if pre {
                self.campaign(false, transfer);
            } else {
                self.become_leader();
            }
            return;
        }
        let (index, log_term) = (self.log.last_index(), self.log.last_term());
        let context = if transfer { Bytes::from_static(CAMPAIGN_TRANSFER) } else { Bytes::new() };
        let peers: Vec<ReplicaId> = self.voting.iter().copied().filter(|&id| id != self.id).collect();
        for to in peers {
            let mut m = Message::new(kind, self.id, to, vote_term);
            m.index = index;
            m.log_term = log_term;
            m.context = context.clone();
            self.send(m);
        }
    }

    /// Records a vote and tallies the election.
    fn poll(&mut self, from: ReplicaId, granted: bool) -> VoteResult {
        self.votes.entry(from).or_insert(granted);
        quorum::vote_result(&self.voting, &self.votes)
    }

    /// Wakes a quiesced replica: timers restart from zero.
    pub(crate) fn wake(&mut self) {
        if self.quiesced {
            self.quiesced = false;
            self.election_elapsed = 0;
            self.heartbeat_elapsed = 0;
            for pr in self.progress.values_mut() {
                pr.recent_active = true;
            }
        }
        self.idle_ticks = 0;
    }

    /// Handles one message from a peer. Malformed or impossible messages are dropped and counted.
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        if m.from.0 == 0 || m.to != self.id || m.from == self.id || !plausible(&m) {
            self.dropped += 1;
            return Ok(());
        }
        if !matches!(
            m.kind,
            MessageKind::Quiesce | MessageKind::HeartbeatResponse | MessageKind::AppendResponse
        ) {
            self.wake();
        }
        if m.term.0 == 0 {
            // Term-less forwards between replicas of the same group.
            if !matches!(m.kind, MessageKind::Propose | MessageKind::ReadIndex | MessageKind::TransferLeader)
            {
                self.dropped += 1;
                return Ok(());
            }
        } else if m.term > self.term {
            if matches!(m.kind, MessageKind::RequestVote | MessageKind::RequestPreVote) {
                let force = m.context.as_ref() == CAMPAIGN_TRANSFER;
                let in_lease = self.cfg.check_quorum
                    && self.leader.is_some()
                    && self.election_elapsed < self.cfg.election_tick;
                if !force && in_lease {
                    // CheckQuorum: a live leader exists; this candidate must not disrupt it.
                    return Ok(());
                }
            }
            match m.kind {
                MessageKind::RequestPreVote => {}
                MessageKind::RequestPreVoteResponse if !m.reject => {}
                MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            if (self.cfg.check_quorum || self.cfg.pre_vote)
                && matches!(m.kind, MessageKind::Append | MessageKind::Heartbeat)
            {
                // Tell a stale leader about the newer term so it steps down (it may be partitioned and
                // otherwise never learn of it while its followers ignore it).
                self.send(Message::new(MessageKind::AppendResponse, self.id, m.from, self.term));
            } else if m.kind == MessageKind::RequestPreVote {
                let mut r = Message::new(MessageKind::RequestPreVoteResponse, self.id, m.from, self.term);
                r.reject = true;
                self.send(r);
            }
            return Ok(());
        }

        match m.kind {
            MessageKind::RequestVote | MessageKind::RequestPreVote => {
                self.handle_vote_request(m);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    fn handle_vote_request(&mut self, m: Message) {
        let pre = m.kind == MessageKind::RequestPreVote;
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && m.term > self.term);
        let resp_kind =
            if pre { MessageKind::RequestPreVoteResponse } else { MessageKind::RequestVoteResponse };
        if can_vote && self.log.is_up_to_date(m.index, m.log_term) {
            // A granted pre-vote answers in the candidate's future term so it can count it.
            self.send(Message::new(resp_kind, self.id, m.from, m.term));
            if !pre {
                self.election_elapsed = 0;
                self.vote = Some(m.from);
            }
        } else {
            let mut r = Message::new(resp_kind, self.id, m.from, self.term);
            r.reject = true;
            self.send(r);
        }
    }

    /// Appends entries proposed locally by the leader (assigning term and index). Returns the last index.
    pub(crate) fn append_entries(&mut self, mut ents: Vec<Entry>) -> LogIndex {
        let mut index = self.log.last_index();
        for e in &mut ents {
            index = index.next();
            e.term = self.term;
            e.index = index;
        }
        self.track_in_mem(&ents);
        self.log.append(&ents)
    }

    /// Accounts entries the leader appends, for the in-memory rate limit (only the leader limits).
    pub(crate) fn track_in_mem(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        while let Some(&(i, size)) = self.in_mem.back() {
            if i < first.index {
                break;
            }
            self.in_mem_bytes -= size;
            self.in_mem.pop_back();
        }
        for e in ents {
            self.in_mem.push_back((e.index, e.size()));
            self.in_mem_bytes += e.size();
        }
    }

    /// Recounts the unapplied tail for the rate limit (a new leader inherits entries it did not propose).
    fn rebuild_in_mem(&mut self) {
        self.in_mem.clear();
        self.in_mem_bytes = 0;
        if self.cfg.max_in_mem_log_size == 0 {
            return;
        }
        let lo = self.log.applied.next();
        let hi = self.log.last_index().next();
        if let Ok(ents) = self.log.slice(lo, hi, u64::MAX) {
            self.track_in_mem(&ents);
        }
    }

    /// The state machine applied everything up to `index`.
    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        let index = index.min(self.log.handed_out);
        if index > self.log.applied {
            self.log.applied = index;
        }
        while let Some(&(i, size)) = self.in_mem.front() {
            if i > self.log.applied {
                break;
            }
            self.in_mem_bytes -= size;
            self.in_mem.pop_front();
        }
    }

    /// Replaces the membership (applied conf change, restored snapshot, startup).
    pub(crate) fn set_membership(&mut self, m: Membership) {
        self.voting = m.voters.union(&m.witnesses).copied().collect();
        self.membership = m;
        let members: BTreeSet<ReplicaId> = self.membership.members().collect();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index().next();
        for id in members {
            self.progress.entry(id).or_insert_with(|| Progress::new(next, self.cfg.max_inflight_msgs));
        }
        if let Some(pr) = self.progress.get_mut(&self.id) {
            pr.matched = self.log.persisted;
        }
        if self.role == Role::Leader {
            if !self.membership.voters.contains(&self.id) {
                // Removed (or never a voter): let followers learn the commit index, then step down.
                self.bcast_heartbeat(None);
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
            if self.lead_transferee.is_some_and(|t| !self.membership.voters.contains(&t)) {
                self.lead_transferee = None;
            }
            if self.maybe_commit() {
                self.bcast_append();
            }
        }
    }

    /// Why a proposal cannot be taken now, if it cannot.
    pub(crate) fn check_proposal(&self) -> Result<(), ProposalError> {
        if self.lead_transferee.is_some() {
            return Err(ProposalError::TransferInProgress);
        }
        if self.cfg.max_in_mem_log_size > 0 && self.in_mem_bytes >= self.cfg.max_in_mem_log_size {
            return Err(ProposalError::RateLimited);
        }
        Ok(())
    }
}
