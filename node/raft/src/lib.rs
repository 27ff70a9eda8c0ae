//! # drakkar-raft
//!
//! The Raft consensus algorithm for one group, as a pure, deterministic state machine in the style of
//! etcd-io/raft. It has no clock, no threads, no I/O and no global randomness: time is [`RawNode::tick`],
//! randomness comes from [`Config::seed`], messages go in through [`RawNode::step`] and come out in
//! [`Ready`]. Persisting, sending and applying are the caller's job; the same state and inputs always give
//! the same outputs, which is what makes the core testable under every interleaving.
//!
//! # Example: a three-replica group in memory
//!
//! ```
//! use bytes::Bytes;
//! use drakkar_raft::{Config, EntryKind, MemStorage, Membership, RawNode, ReplicaId, Role};
//!
//! let members = Membership::with_voters([1, 2, 3].map(ReplicaId));
//! let mut nodes: Vec<RawNode<MemStorage>> = (1..=3)
//!     .map(|id| RawNode::new(Config::new(ReplicaId(id)), MemStorage::bootstrap(members.clone())).unwrap())
//!     .collect();
//! let mut applied: Vec<Vec<Bytes>> = vec![Vec::new(); 3];
//!
//! // One round of the caller's loop: for every replica, persist and send what `ready()` hands out,
//! // apply committed entries, then deliver the messages. Repeat until nothing moves.
//! let mut settle = |nodes: &mut Vec<RawNode<MemStorage>>| loop {
//!     let mut inflight = Vec::new();
//!     for (i, n) in nodes.iter_mut().enumerate() {
//!         while n.has_ready() {
//!             let rd = n.ready().unwrap();
//!             inflight.extend(rd.messages.iter().cloned()); // may go before the write is durable
//!             n.storage_mut().append(&rd.entries).unwrap();
//!             if let Some(hs) = rd.hard_state {
//!                 n.storage_mut().set_hard_state(hs);
//!             }
//!             inflight.extend(rd.persisted_messages.iter().cloned()); // only after it is durable
//!             for e in &rd.committed_entries {
//!                 if e.kind == EntryKind::Normal && !e.data.is_empty() {
//!                     applied[i].push(e.data.clone());
//!                 }
//!             }
//!             n.advance(rd);
//!         }
//!     }
//!     if inflight.is_empty() {
//!         break;
//!     }
//!     for m in inflight {
//!         nodes[m.to.0 as usize - 1].step(m).unwrap();
//!     }
//! };
//!
//! nodes[0].campaign();
//! settle(&mut nodes);
//! assert_eq!(nodes[0].status().soft_state.role, Role::Leader);
//!
//! nodes[0].propose(Bytes::from_static(b"hello")).unwrap();
//! settle(&mut nodes);
//! assert!(applied.iter().all(|a| a == &vec![Bytes::from_static(b"hello")]));
//! ```

mod config;
mod inflights;
mod log;
mod message;
mod progress;
pub mod quorum;
mod rng;
mod storage;
mod types;
mod unstable;

pub use config::{Config, ConfigError, ReadOnlyOption};
pub use inflights::Inflights;
pub use log::LogError;
pub use message::{Message, MessageKind};
pub use progress::{Progress, ProgressState};
pub use rng::Rng;
pub use storage::{InitialState, MemStorage, Storage, StorageError};
pub use types::{
    ConfChange, ConfChangeError, ConfChangeKind, Entry, EntryKind, GroupId, HardState, LogIndex, MemberRole,
    Membership, ReplicaId, Snapshot, SnapshotMeta, Term, bootstrap_entries,
};

mod raft;
mod raw_node;
mod read_only;

pub use raft::{Role, SoftState};
pub use raw_node::{RawNode, Ready, Status};
pub use read_only::ReadState;

/// A failure that stops the replica from making progress.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Storage could not answer.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The durable state contradicts itself (for example a commit index past the end of the log).
    #[error("inconsistent durable state: {0}")]
    CorruptState(String),
}

/// Why a proposal, read or transfer request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalError {
    /// No leader is known; retry after an election.
    #[error("no leader is known")]
    NoLeader,
    /// Leadership is being transferred; retry shortly.
    #[error("a leader transfer is in progress")]
    TransferInProgress,
    /// Too many unapplied bytes in the log; retry after the state machine catches up.
    #[error("rate limited: too many unapplied log bytes")]
    RateLimited,
    /// Another membership change is not yet applied.
    #[error("another membership change is pending")]
    ConfChangePending,
    /// The membership change is not valid for the current membership.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(ConfChangeError),
    /// A conf change entry that does not decode.
    #[error("malformed membership change")]
    MalformedConfChange,
    /// Nothing to propose, or an entry kind that cannot be proposed.
    #[error("empty or invalid proposal")]
    Empty,
    /// Leadership can only move to a voter.
    #[error("replica {0} is not a voter and cannot lead")]
    InvalidTransferTarget(ReplicaId),
}
