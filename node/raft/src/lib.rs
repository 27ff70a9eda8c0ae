//! # drakkar-raft
//!
//! The Raft consensus algorithm for one group, as a pure, deterministic state machine in the style of
//! etcd-io/raft. It has no clock, no threads, no I/O and no global randomness: time is [`RawNode::tick`],
//! randomness comes from [`Config::seed`], messages go in through [`RawNode::step`] and come out in
//! [`Ready`]. Persisting, sending and applying are the caller's job; the same state and inputs always give
//! the same outputs, which is what makes the core testable under every interleaving.

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
    ConfChange, ConfChangeError, ConfChangeKind, Entry, EntryKind, GroupId, HardState, LogIndex,
    MemberRole, Membership, ReplicaId, Snapshot, SnapshotMeta, Term,
};
