//! Messages exchanged between replicas of one group.

use bytes::Bytes;

use crate::types::{Entry, LogIndex, ReplicaId, Snapshot, Term};

/// The kind of a [`Message`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// Leader to follower: entries after (`index`, `log_term`), and the leader's commit index.
    #[default]
    Append,
    /// Follower to leader: accepted up to `index`, or rejected `index` with a hint (`reject_hint`, `log_term`).
    AppendResponse,
    /// Candidate asks for a vote for `term`; `index`/`log_term` describe its last entry.
    RequestVote,
    /// The answer to a vote request.
    RequestVoteResponse,
    /// A pre-candidate asks whether it could win an election at `term` (which it has not entered).
    RequestPreVote,
    /// The answer to a pre-vote request.
    RequestPreVoteResponse,
    /// Leader to follower: install this snapshot.
    Snapshot,
    /// Leader to follower: I am alive; `commit` is min(leader commit, follower match). `context` carries a
    /// ReadIndex round id.
    Heartbeat,
    /// Follower to leader: heartbeat received (echoes `context`).
    HeartbeatResponse,
    /// Follower to leader: a proposal forwarded to the leader.
    Propose,
    /// Follower to leader: a ReadIndex request forwarded to the leader (`context` is the request id).
    ReadIndex,
    /// Leader to follower: the read index (`index`) for a forwarded ReadIndex request.
    ReadIndexResponse,
    /// Leader to transfer target: start an election now, ignoring leases.
    TimeoutNow,
    /// Any replica to leader: please transfer leadership to `from` (forwarded transfer request).
    TransferLeader,
    /// Leader to followers: the group is idle, stop election timers until something happens.
    Quiesce,
}

impl MessageKind {
    /// Every kind, in declaration order (for tests and tools that enumerate messages).
    pub const ALL: [MessageKind; 15] = [
        MessageKind::Append,
        MessageKind::AppendResponse,
        MessageKind::RequestVote,
        MessageKind::RequestVoteResponse,
        MessageKind::RequestPreVote,
        MessageKind::RequestPreVoteResponse,
        MessageKind::Snapshot,
        MessageKind::Heartbeat,
        MessageKind::HeartbeatResponse,
        MessageKind::Propose,
        MessageKind::ReadIndex,
        MessageKind::ReadIndexResponse,
        MessageKind::TimeoutNow,
        MessageKind::TransferLeader,
        MessageKind::Quiesce,
    ];

    /// True for the replies that must wait until the sender's state is durable (votes, acknowledgements).
    pub fn needs_persisted_state(self) -> bool {
        matches!(
            self,
            MessageKind::AppendResponse
                | MessageKind::RequestVoteResponse
                | MessageKind::RequestPreVoteResponse
        )
    }
}

/// A message between two replicas of one group. Fields unused by a kind are left at their defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// What the message means.
    pub kind: MessageKind,
    /// The sender.
    pub from: ReplicaId,
    /// The receiver.
    pub to: ReplicaId,
    /// The sender's term (0 for term-less local forwards such as `Propose`).
    pub term: Term,
    /// Term of the entry at `index` (appends, votes), or the rejecting follower's term at `reject_hint`.
    pub log_term: Term,
    /// A log index whose meaning depends on the kind.
    pub index: LogIndex,
    /// Entries carried by `Append` and `Propose`.
    pub entries: Vec<Entry>,
    /// The sender's commit index.
    pub commit: LogIndex,
    /// The snapshot carried by `Snapshot`.
    pub snapshot: Option<Snapshot>,
    /// True when an append, vote or pre-vote is refused.
    pub reject: bool,
    /// On a rejected append: the follower's best guess of where the logs may match.
    pub reject_hint: LogIndex,
    /// Opaque request context (ReadIndex ids, campaign reasons).
    pub context: Bytes,
}

impl Message {
    /// A message of `kind` from `from` to `to` at `term`, other fields default.
    pub fn new(kind: MessageKind, from: ReplicaId, to: ReplicaId, term: Term) -> Self {
        Message { kind, from, to, term, ..Default::default() }
    }

    /// Approximate encoded size (used by the max message size limit).
    pub fn size(&self) -> u64 {
        64 + self.entries.iter().map(Entry::size).sum::<u64>()
            + self.snapshot.as_ref().map_or(0, |s| s.data.len() as u64)
            + self.context.len() as u64
    }
}

impl std::fmt::Display for Message {
    /// One line: `1->2 Append term:2 log:1/5 commit:5 entries:[2/6 "x"]`, listing only meaningful fields.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}->{} {:?} term:{}", self.from.0, self.to.0, self.kind, self.term.0)?;
        match self.kind {
            MessageKind::Append => {
                write!(f, " log:{}/{} commit:{}", self.log_term.0, self.index.0, self.commit.0)?;
            }
            MessageKind::AppendResponse if self.reject => {
                write!(f, " rejected:{} hint:{}/{}", self.index.0, self.log_term.0, self.reject_hint.0)?;
            }
            MessageKind::AppendResponse | MessageKind::ReadIndexResponse => {
                write!(f, " index:{}", self.index.0)?;
            }
            MessageKind::RequestVote | MessageKind::RequestPreVote => {
                write!(f, " last:{}/{}", self.log_term.0, self.index.0)?;
            }
            MessageKind::RequestVoteResponse | MessageKind::RequestPreVoteResponse => {
                write!(f, "{}", if self.reject { " rejected" } else { " granted" })?;
            }
            MessageKind::Heartbeat | MessageKind::Quiesce => write!(f, " commit:{}", self.commit.0)?,
            _ => {}
        }
        if let Some(s) = &self.snapshot {
            write!(f, " snapshot:{}/{} {}", s.meta.term.0, s.meta.index.0, s.meta.membership)?;
        }
        if !self.context.is_empty() {
            write!(f, " ctx:{}", String::from_utf8_lossy(&self.context))?;
        }
        if !self.entries.is_empty() {
            let ents: Vec<String> = self.entries.iter().map(ToString::to_string).collect();
            write!(f, " entries:[{}]", ents.join(", "))?;
        }
        Ok(())
    }
}
