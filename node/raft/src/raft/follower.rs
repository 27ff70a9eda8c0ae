//! Followers and candidates: accepting the leader's log, elections in progress, forwarding.

use super::{Raft, Role};
use crate::Error;
use crate::message::{Message, MessageKind};
use crate::quorum::VoteResult;
use crate::read_only::ReadState;
use crate::storage::Storage;
use crate::types::Snapshot;

impl<S: Storage> Raft<S> {
    pub(super) fn step_follower(&mut self, m: Message) -> Result<(), Error> {
        match m.kind {
            MessageKind::Propose => match self.leader {
                Some(l) => self.forward(m, l),
                None => self.dropped += 1,
            },
            MessageKind::ReadIndex | MessageKind::TransferLeader => match self.leader {
                Some(l) => self.forward(m, l),
                None => self.dropped += 1,
            },
            MessageKind::Append => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_append(m);
            }
            MessageKind::Heartbeat => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_heartbeat(m);
            }
            MessageKind::Snapshot => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_snapshot(m);
            }
            MessageKind::TimeoutNow => self.hup(true),
            MessageKind::ReadIndexResponse => {
                self.read_states.push(ReadState { index: m.index, context: m.context });
            }
            MessageKind::Quiesce => {
                if self.leader == Some(m.from) && m.commit <= self.log.last_index() {
                    // The leader quiesces only once every follower matches its whole log, so its commit
                    // index is safe to adopt; without it a follower that missed the last commit update
                    // would sit on committed, unapplied entries for as long as the group stays idle.
                    let _ = self.log.commit_to(m.commit);
                    self.quiesced = true;
                } else {
                    self.dropped += 1;
                }
            }
            _ => self.dropped += 1,
        }
        Ok(())
    }

    /// Passes a term-less request on to the leader.
    fn forward(&mut self, mut m: Message, leader: crate::ReplicaId) {
        // A forwarded transfer keeps its target in `from`; everything else is stamped with our id.
        let from = if m.kind == MessageKind::TransferLeader { m.from } else { self.id };
        m.to = leader;
        m.term = crate::Term(0);
        m.from = from;
        self.msgs.push(m);
    }

    pub(super) fn step_candidate(&mut self, m: Message) -> Result<(), Error> {
        let my_resp = if self.role == Role::PreCandidate {
            MessageKind::RequestPreVoteResponse
        } else {
            MessageKind::RequestVoteResponse
        };
        match m.kind {
            MessageKind::Append => {
                let term = self.term;
                self.become_follower(term, Some(m.from));
                self.handle_append(m);
            }
            MessageKind::Heartbeat => {
                let term = self.term;
                self.become_follower(term, Some(m.from));
                self.handle_heartbeat(m);
            }
            MessageKind::Snapshot => {
                let term = self.term;
                self.become_follower(term, Some(m.from));
                self.handle_snapshot(m);
            }
            k if k == my_resp => match self.poll(m.from, !m.reject) {
                VoteResult::Won => {
                    if self.role == Role::PreCandidate {
                        self.campaign(false, false);
                    } else {
                        self.become_leader();
                    }
                }
                VoteResult::Lost => {
                    let term = self.term;
                    self.become_follower(term, None);
                }
                VoteResult::Pending => {}
            },
            _ => self.dropped += 1,
        }
        Ok(())
    }

    fn valid_entries(m: &Message) -> bool {
        let mut expect = m.index;
        m.entries.iter().all(|e| {
            expect = expect.next();
            e.index == expect && e.term <= m.term && e.term >= m.log_term
        })
    }

    fn handle_append(&mut self, m: Message) {
        if !Self::valid_entries(&m) {
            self.dropped += 1;
            return;
        }
        let mut resp = Message::new(MessageKind::AppendResponse, self.id, m.from, self.term);
        if m.index < self.log.committed {
            resp.index = self.log.committed;
            self.send(resp);
            return;
        }
        let appended = self.log.maybe_append(m.index, m.log_term, m.commit, &m.entries);
        match appended {
            Ok(Some(last)) => {
                resp.index = last;
                self.send(resp);
            }
            Ok(None) => {
                let hint_index = m.index.min(self.log.last_index());
                let (hint, hint_term) = self.log.find_conflict_by_term(hint_index, m.log_term);
                resp.index = m.index;
                resp.reject = true;
                resp.reject_hint = hint;
                resp.log_term = hint_term;
                self.send(resp);
            }
            Err(_) => self.dropped += 1,
        }
    }

    fn handle_heartbeat(&mut self, m: Message) {
        if m.commit > self.log.last_index() || self.log.commit_to(m.commit).is_err() {
            self.dropped += 1;
            return;
        }
        let mut resp = Message::new(MessageKind::HeartbeatResponse, self.id, m.from, self.term);
        resp.context = m.context;
        self.send(resp);
    }

    fn handle_snapshot(&mut self, m: Message) {
        let Some(snap) = m.snapshot else {
            self.dropped += 1;
            return;
        };
        let mut resp = Message::new(MessageKind::AppendResponse, self.id, m.from, self.term);
        if self.restore(snap) {
            resp.index = self.log.last_index();
        } else {
            resp.index = self.log.committed;
        }
        self.send(resp);
    }

    /// Installs a snapshot from the leader. Returns false if it is stale (already covered by the commit
    /// index) or matches the log (then the commit index just moves forward).
    fn restore(&mut self, snap: Snapshot) -> bool {
        let meta = &snap.meta;
        if meta.index <= self.log.committed || self.role != Role::Follower {
            return false;
        }
        if meta.membership.role(self.id).is_none() {
            // A snapshot whose membership does not include us cannot be ours to install.
            self.dropped += 1;
            return false;
        }
        if self.log.match_term(meta.index, meta.term) {
            let _ = self.log.commit_to(meta.index);
            return false;
        }
        let membership = meta.membership.clone();
        self.in_mem.clear();
        self.in_mem_bytes = 0;
        self.log.restore(snap);
        self.set_membership(membership);
        true
    }
}
