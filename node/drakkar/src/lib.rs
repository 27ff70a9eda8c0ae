//! # drakkar
//!
//! The Drakkar engine: one process hosting many Raft groups, their state machines, client sessions and
//! snapshots (Dragonboat's NodeHost, in Rust). It has no network server and no CLI: `drakkar-server`
//! puts it on the network, `drakkar-kv` holds the built-in KV state machines.
//!
//! - [`NodeHost`] is the API: start replicas, propose, read (linearizable or stale), sessions, membership,
//!   leader transfer, snapshots.
//! - Step workers (`engine`) drive a partition of the groups each: one log store write and one fsync per
//!   round covers every group of the worker.
//! - Apply workers (`apply`) own the state machines and apply committed entries in batches.
//! - [`statemachine`] defines the three kinds of state machine.
//! - [`transport`] defines how NodeHosts talk; [`transport::InProcessNetwork`] connects NodeHosts in one
//!   process (several NodeHosts in one program, benchmarks, tests; it injects no fault);
//!   `drakkar_server::peer::GrpcTransport` connects them over the network.
//! - [`address`] is the form of a member's address.
//!
//! The getting-started guide (`docs/getting-started.md`, in Chinese `docs/zh/getting-started.md`) explains
//! replicated state machines and walks through every call; the programs it quotes are the crate
//! `drakkar-examples` (`examples/rust/`).
//!
//! ## Quick start
//!
//! Implement a [`statemachine`] trait, start a [`NodeHost`], start a replica of a group on it, then
//! propose and read (this is `examples/quickstart.rs`: `cargo run -p drakkar --example quickstart`):
//!
#![doc = concat!("```rust\n", include_str!("../examples/quickstart.rs"), "```")]
#![deny(missing_docs)]

pub mod address;
mod apply;
pub mod config;
mod driver;
mod engine;
pub mod error;
pub mod events;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod identity;
mod info;
pub mod metrics;
mod nodehost;
pub mod payload;
mod rsm;
pub mod session;
pub mod snapshot;
pub mod statemachine;
pub mod transport;

pub use apply::{GroupMembership, ReplicaState};
pub use config::{GroupConfig, NodeHostConfig};
pub use driver::Driver;
pub use error::{NodeError, Result};
pub use events::Event;
pub use info::{MembershipChange, NodeHostInfo, ReplicaInfo};
pub use nodehost::{NodeHost, Pending, Session, StartMode};
pub use rsm::StateMachineBox;

// The Raft types of the API, so that a user needs no other crate.
pub use drakkar_raft::{GroupId, LogIndex, MemberRole, Membership, ReplicaId, Term};
