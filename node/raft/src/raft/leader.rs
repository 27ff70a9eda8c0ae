//! The leader's duties: replication, commit, heartbeats, ReadIndex, leader transfer, proposals, quiesce.

use bytes::Bytes;

use super::{Raft, Role};
use crate::message::{Message, MessageKind};
use crate::progress::ProgressState;
use crate::quorum;
use crate::read_only::ReadState;
use crate::storage::{Storage, StorageError};
use crate::types::{ConfChange, Entry, EntryKind, LogIndex, ReplicaId};
use crate::{Error, ProposalError, ReadOnlyOption};

impl<S: Storage> Raft<S> {
    pub(super) fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                if !self.quorum_active() {
                    // Lost contact with a quorum: stop acting as leader so clients go elsewhere.
                    let term = self.term;
                    self.become_follower(term, None);
                    return;
                }
                let me = self.id;
                for (id, pr) in self.progress.iter_mut() {
                    pr.recent_active = *id == me;
                }
            }
            // A transfer that did not finish within an election timeout is abandoned.
            self.lead_transferee = None;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            let ctx = self.read_only.last_pending().cloned();
            self.bcast_heartbeat(ctx);
        }
        self.idle_ticks = self.idle_ticks.saturating_add(1);
        if self.cfg.quiesce_ticks > 0 && self.idle_ticks >= self.cfg.quiesce_ticks && self.all_caught_up() {
            self.quiesce();
        }
    }

    /// True if a quorum of voting members was heard from during the last election timeout.
    fn quorum_active(&self) -> bool {
        let active = self
            .voting
            .iter()
            .filter(|id| **id == self.id || self.progress.get(id).is_some_and(|p| p.recent_active))
            .count();
        active >= quorum::majority(self.voting.len())
    }

    fn all_caught_up(&self) -> bool {
        let last = self.log.last_index();
        self.log.committed == last
            && self.lead_transferee.is_none()
            && self.read_only.len() == 0
            && self.progress.iter().all(|(id, p)| *id == self.id || p.matched == last)
    }

    /// Tells every follower to stop its timers; the group then costs nothing until something happens.
    fn quiesce(&mut self) {
        let peers: Vec<ReplicaId> = self.progress.keys().copied().filter(|&id| id != self.id).collect();
        for to in peers {
            let mut m = Message::new(MessageKind::Quiesce, self.id, to, self.term);
            m.commit = self.log.committed;
            self.send(m);
        }
        self.quiesced = true;
    }

    pub(super) fn step_leader(&mut self, m: Message) -> Result<(), Error> {
        match m.kind {
            MessageKind::Propose => {
                if self.propose_entries(m.entries).is_err() {
                    self.dropped += 1;
                }
            }
            MessageKind::ReadIndex => self.leader_read_index(m.context, Some(m.from)),
            MessageKind::TransferLeader => {
                if self.transfer_leader(m.from).is_err() {
                    self.dropped += 1;
                }
            }
            MessageKind::AppendResponse => self.handle_append_response(m)?,
            MessageKind::HeartbeatResponse => self.handle_heartbeat_response(m)?,
            // Another leader in the same term is impossible; a follower's message to a leader is stale.
            _ => self.dropped += 1,
        }
        Ok(())
    }

    /// Validates and appends proposed entries, then replicates them.
    pub(crate) fn propose_entries(&mut self, mut ents: Vec<Entry>) -> Result<LogIndex, ProposalError> {
        self.check_proposal()?;
        if ents.is_empty() {
            return Err(ProposalError::Empty);
        }
        let first = self.log.last_index().next();
        // Validate the whole batch before touching any state: a refused batch must leave no trace.
        let mut pending_conf = None;
        for (i, e) in ents.iter_mut().enumerate() {
            match e.kind {
                EntryKind::ConfChange => {
                    let cc = ConfChange::decode(&e.data).ok_or(ProposalError::MalformedConfChange)?;
                    if self.pending_conf_index > self.log.applied || pending_conf.is_some() {
                        return Err(ProposalError::ConfChangePending);
                    }
                    self.membership.clone().apply(&cc).map_err(ProposalError::InvalidConfChange)?;
                    pending_conf = Some(LogIndex(first.0 + i as u64));
                }
                EntryKind::Metadata => return Err(ProposalError::Empty),
                _ => {}
            }
        }
        if let Some(i) = pending_conf {
            self.pending_conf_index = i;
        }
        let last = self.append_entries(ents);
        self.bcast_append();
        Ok(last)
    }

    /// Sends appends to every follower that can take one.
    pub(crate) fn bcast_append(&mut self) {
        let peers: Vec<ReplicaId> = self.progress.keys().copied().filter(|&id| id != self.id).collect();
        for to in peers {
            self.maybe_send_append(to, true);
        }
    }

    /// Sends heartbeats, carrying `ctx` (a ReadIndex round) if given.
    pub(crate) fn bcast_heartbeat(&mut self, ctx: Option<Bytes>) {
        let peers: Vec<(ReplicaId, LogIndex)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, p)| (*id, p.matched.min(self.log.committed)))
            .collect();
        for (to, commit) in peers {
            let mut m = Message::new(MessageKind::Heartbeat, self.id, to, self.term);
            m.commit = commit;
            m.context = ctx.clone().unwrap_or_default();
            self.send(m);
        }
    }

    /// Sends one append (or a snapshot) to `to` if its progress allows. Returns true if something was sent.
    pub(crate) fn maybe_send_append(&mut self, to: ReplicaId, send_if_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else { return false };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next;
        let prev = next.prev();
        let term = self.log.term(prev);
        let ents = self.log.entries(next, self.cfg.max_size_per_msg);
        let (log_term, ents) = match (term, ents) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(StorageError::Compacted), _) | (_, Err(StorageError::Compacted)) => {
                return self.send_snapshot(to);
            }
            _ => return false,
        };
        if ents.is_empty() && !send_if_empty {
            return false;
        }
        let is_witness = self.membership.witnesses.contains(&to);
        let bytes: u64 = ents.iter().map(Entry::size).sum();
        let last = ents.last().map(|e| e.index);
        let mut m = Message::new(MessageKind::Append, self.id, to, self.term);
        m.index = prev;
        m.log_term = log_term;
        m.commit = self.log.committed;
        m.entries = if is_witness { ents.iter().map(Entry::for_witness).collect() } else { ents };
        let Some(pr) = self.progress.get_mut(&to) else { return false };
        match (pr.state, last) {
            (ProgressState::Replicate, Some(last)) => {
                pr.optimistic_update(last);
                pr.inflights.add(last, bytes);
            }
            (ProgressState::Probe, _) => pr.probe_sent = true,
            _ => {}
        }
        self.send(m);
        true
    }

    /// Sends `to` an append without entries after `next - 1` (the last index sent to it), whatever its
    /// window: accepted, it confirms the follower holds everything sent so far; rejected, it starts a
    /// probe. In `Probe` it counts as the probe in flight; it never takes a window slot.
    fn send_empty_append(&mut self, to: ReplicaId) {
        let Some(pr) = self.progress.get(&to) else { return };
        if matches!(pr.state, ProgressState::Snapshot { .. }) {
            return;
        }
        let prev = pr.next.prev();
        let log_term = match self.log.term(prev) {
            Ok(t) => t,
            Err(StorageError::Compacted) => {
                self.send_snapshot(to);
                return;
            }
            Err(_) => return,
        };
        if let Some(pr) = self.progress.get_mut(&to)
            && pr.state == ProgressState::Probe
        {
            pr.probe_sent = true;
        }
        let mut m = Message::new(MessageKind::Append, self.id, to, self.term);
        m.index = prev;
        m.log_term = log_term;
        m.commit = self.log.committed;
        self.send(m);
    }

    fn send_snapshot(&mut self, to: ReplicaId) -> bool {
        if !self.progress.get(&to).is_some_and(|p| p.recent_active) {
            return false;
        }
        let mut snap = match self.log.snapshot() {
            Ok(s) if !s.is_empty() => s,
            _ => return false,
        };
        if self.membership.witnesses.contains(&to) {
            // Witnesses never hold user data: they get the metadata only.
            snap.data = Bytes::new();
        }
        let index = snap.meta.index;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(index);
        }
        let mut m = Message::new(MessageKind::Snapshot, self.id, to, self.term);
        m.snapshot = Some(snap);
        self.send(m);
        true
    }

    /// Advances the commit index to what a quorum has durably stored. Returns true if it moved.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let me = self.id;
        let persisted = self.log.persisted;
        let progress = &self.progress;
        let mci = quorum::committed_index(&self.voting, |id| {
            if id == me { Some(persisted) } else { progress.get(&id).map(|p| p.matched) }
        });
        if !self.log.maybe_commit(mci, self.term) {
            return false;
        }
        if !self.pending_reads.is_empty() && self.committed_entry_in_current_term() {
            for (ctx, from) in std::mem::take(&mut self.pending_reads) {
                self.leader_read_index(ctx, from);
            }
        }
        true
    }

    pub(crate) fn committed_entry_in_current_term(&self) -> bool {
        self.log.term(self.log.committed).is_ok_and(|t| t == self.term)
    }

    fn handle_append_response(&mut self, m: Message) -> Result<(), Error> {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&m.from) else {
            self.dropped += 1;
            return Ok(());
        };
        pr.recent_active = true;
        if m.reject {
            let mut hint = m.reject_hint;
            if m.log_term.0 > 0 {
                hint = self.log.find_conflict_by_term(m.reject_hint, m.log_term).0;
            }
            let Some(pr) = self.progress.get_mut(&m.from) else { return Ok(()) };
            if pr.maybe_decr_to(m.index, hint) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.maybe_send_append(m.from, true);
            }
            return Ok(());
        }
        if m.index > last_index {
            // Acknowledges entries we never had: a confused or malicious peer.
            self.dropped += 1;
            return Ok(());
        }
        let was_paused = pr.is_paused();
        // An answer to a probe that confirms exactly the known match still proves the logs agree there:
        // start streaming (as etcd does) instead of waiting for the next heartbeat.
        let confirms_probe = pr.state == ProgressState::Probe && pr.matched == m.index;
        if !pr.maybe_update(m.index) && !confirms_probe {
            return Ok(());
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot { pending } => {
                if pr.matched >= pending || pr.matched.next() >= self.log.first_index() {
                    pr.become_probe();
                    pr.become_replicate();
                }
            }
            ProgressState::Replicate => pr.inflights.free_le(m.index),
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else if was_paused {
            self.maybe_send_append(m.from, true);
        }
        // Keep the pipe full.
        while self.maybe_send_append(m.from, false) {}
        if self.lead_transferee == Some(m.from)
            && self.progress.get(&m.from).is_some_and(|p| p.matched == self.log.last_index())
        {
            self.send_timeout_now(m.from);
        }
        Ok(())
    }

    fn handle_heartbeat_response(&mut self, m: Message) -> Result<(), Error> {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&m.from) else {
            self.dropped += 1;
            return Ok(());
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        // The follower is alive. Behind, or being probed, it gets an append, as in etcd-raft v3.6: a probe
        // answered brings it back to streaming, and an append it rejects reveals lost ones (with a full
        // window nothing else would reach it). That append carries NO entries while the follower is probed
        // or its window is full: its entries were sent already, and sending them again at every heartbeat
        // answer (one per tick) would bury a follower slow to answer appends under copies, up to
        // `max_size_per_msg` each, ahead of the heartbeats that keep it from campaigning.
        let resend = match pr.state {
            ProgressState::Probe => Some(false),
            ProgressState::Replicate if pr.matched < last => Some(!pr.inflights.full()),
            _ => None,
        };
        match resend {
            Some(true) => {
                self.maybe_send_append(m.from, true);
            }
            Some(false) => self.send_empty_append(m.from),
            None => {}
        }
        if self.cfg.read_only_option != ReadOnlyOption::Safe || m.context.is_empty() {
            return Ok(());
        }
        let Some(acks) = self.read_only.ack(&m.context, m.from) else { return Ok(()) };
        let votes = acks.iter().filter(|id| self.voting.contains(id)).count();
        if votes < quorum::majority(self.voting.len()) {
            return Ok(());
        }
        for (ctx, pending) in self.read_only.advance(&m.context) {
            self.respond_read(ctx, pending.index, pending.from);
        }
        Ok(())
    }

    fn respond_read(&mut self, context: Bytes, index: LogIndex, from: Option<ReplicaId>) {
        match from {
            Some(to) if to != self.id => {
                let mut m = Message::new(MessageKind::ReadIndexResponse, self.id, to, self.term);
                m.index = index;
                m.context = context;
                self.send(m);
            }
            _ => self.read_states.push(ReadState { index, context }),
        }
    }

    /// Serves a ReadIndex request on the leader; `from` is the follower that forwarded it, if any.
    pub(crate) fn leader_read_index(&mut self, ctx: Bytes, from: Option<ReplicaId>) {
        if self.voting.len() == 1 && self.voting.contains(&self.id) {
            let index = self.log.committed;
            self.respond_read(ctx, index, from);
            return;
        }
        if !self.committed_entry_in_current_term() {
            // The commit index is not known to be current until an entry of this term commits.
            self.pending_reads.push((ctx, from));
            return;
        }
        let index = self.log.committed;
        match self.cfg.read_only_option {
            ReadOnlyOption::Safe => {
                self.read_only.add(ctx.clone(), index, from, self.id);
                self.bcast_heartbeat(Some(ctx));
            }
            _ => self.respond_read(ctx, index, from),
        }
    }

    /// Starts moving leadership to `to`.
    pub(crate) fn transfer_leader(&mut self, to: ReplicaId) -> Result<(), ProposalError> {
        if !self.membership.voters.contains(&to) {
            return Err(ProposalError::InvalidTransferTarget(to));
        }
        if to == self.id || self.lead_transferee == Some(to) {
            return Ok(());
        }
        self.election_elapsed = 0;
        self.lead_transferee = Some(to);
        if self.progress.get(&to).is_some_and(|p| p.matched == self.log.last_index()) {
            self.send_timeout_now(to);
        } else {
            self.maybe_send_append(to, true);
        }
        Ok(())
    }

    fn send_timeout_now(&mut self, to: ReplicaId) {
        self.send(Message::new(MessageKind::TimeoutNow, self.id, to, self.term));
    }

    /// The caller reports that `to` could not be reached: stop streaming to it until it answers.
    pub(crate) fn report_unreachable(&mut self, to: ReplicaId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&to)
            && pr.state == ProgressState::Replicate
        {
            pr.become_probe();
        }
    }

    /// The caller reports whether sending a snapshot to `to` succeeded.
    pub(crate) fn report_snapshot(&mut self, to: ReplicaId, ok: bool) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&to) else { return };
        if let ProgressState::Snapshot { .. } = pr.state {
            if !ok {
                pr.state = ProgressState::Snapshot { pending: LogIndex(0) };
            }
            // Wait for the follower's answer (or a heartbeat) before sending more.
            pr.become_probe();
            pr.probe_sent = true;
        }
    }
}
