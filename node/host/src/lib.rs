//! # drakkar-node
//!
//! The NodeHost: one process hosting many Raft groups, their state machines, client sessions and
//! snapshots (Dragonboat's NodeHost, in Rust).
//!
//! - [`NodeHost`] is the API: start replicas, propose, read (linearizable or stale), sessions, membership,
//!   leader transfer, snapshots.
//! - Step workers (`engine`) drive a partition of the groups each: one log store write and one fsync per
//!   round covers every group of the worker.
//! - Apply workers (`apply`) own the state machines and apply committed entries in batches.
//! - [`statemachine`] defines the three kinds of state machine; [`kv`] holds the built-in KV stores.
//! - [`transport`] defines how NodeHosts talk; [`transport::InProcessNetwork`] connects NodeHosts in one
//!   process (tests, benchmarks); [`grpc::GrpcTransport`] connects them over the network.
//! - [`bench`] is the load generator behind `drakkar bench` (gRPC, embedded and etcd targets).
//! - [`server`] is the gRPC API (`drakkar.v1`, see `docs/api.md`); the `drakkar` binary runs it.

mod apply;
pub mod bench;
pub mod codec;
pub mod config;
mod engine;
pub mod error;
pub mod events;
pub mod grpc;
mod identity;
pub mod kv;
pub mod metrics;
mod nodehost;
mod rsm;
pub mod server;
pub mod session;
#[doc(hidden)]
pub mod sim;
pub mod snapshot;
pub mod statemachine;
pub mod transport;

pub use apply::{GroupMembership, ReplicaState};
pub use config::{GroupConfig, NodeHostConfig, SmKind};
pub use error::{NodeError, Result};
pub use events::Event;
pub use nodehost::{NodeHost, Pending, Session, StartMode};
pub use rsm::StateMachineBox;
