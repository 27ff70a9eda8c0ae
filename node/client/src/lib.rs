//! # drakkar-client
//!
//! The Drakkar gRPC API (`drakkar.v1`) and a typed async client.
//!
//! - [`pb`]: the protocol: messages, tonic clients and servers generated from `proto/drakkar/v1/*.proto`
//!   (documented in `docs/api.md`).
//! - [`Client`]: several endpoints; a failed call is retried on another node, or on the leader a node
//!   names in its answer; writes go through client sessions, so a write retried after a timeout or a
//!   lost connection is applied once. A write whose session is gone after an attempt that may have been
//!   applied is not run again in a new session: it fails with [`ClientError::OutcomeUnknown`].
//! - [`ShardedKv`]: one keyspace over many KV groups, keys mapped to groups by a stable hash.
//! - [`codec`]: the services' codec, which bounds what decoding a request may cost.
//!
//! ```no_run
//! # async fn demo() -> Result<(), drakkar_client::ClientError> {
//! use std::sync::Arc;
//! use drakkar_client::{Client, ClientConfig, ShardedKv, pb::Consistency, tls};
//!
//! // The cluster's CA, and a certificate with the client role (docs/api.md, "Roles").
//! let identity = ("certs/client.pem".as_ref(), "certs/client-key.pem".as_ref());
//! let tls = tls::client_config_from_files("certs/ca.pem".as_ref(), Some(identity))?;
//! let cfg = ClientConfig::new(["node-0.drakkar:7000", "node-1.drakkar:7000"]).with_tls(Arc::new(Arc::new(tls)));
//! let client = Client::new(cfg)?;
//! client.put(1, "greeting", "hello").await?;
//! let kv = client.get(1, "greeting", Consistency::Linearizable).await?;
//! assert_eq!(kv.map(|kv| kv.value), Some("hello".into()));
//! let sharded = ShardedKv::discover(client.clone()).await?;
//! sharded.put("user/42", "ada").await?;
//! # Ok(()) }
//! ```

mod client;
pub mod codec;
pub mod connect;
mod error;
mod kv;
mod session;
mod sharded;
mod snapshot;
pub mod tls;

/// The roles a certificate carries, as Organization (O) values of its subject: what a node lets each
/// caller do (docs/api.md, "Roles").
pub mod roles {
    /// A node: speaks Raft and forwards requests.
    pub const PEER: &str = "drakkar:peer";
    /// An administrator or the operator: membership, groups, snapshots, and data.
    pub const ADMIN: &str = "drakkar:admin";
    /// An application: data only.
    pub const CLIENT: &str = "drakkar:client";
}

/// The generated protocol: `drakkar.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("drakkar.v1");
}

/// The encoded `FileDescriptorSet` of every `drakkar.v1` file (for gRPC server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("drakkar_descriptor");

pub use client::{Client, ClientConfig, request};
pub use error::{ClientError, FORWARDED_HEADER, LEADER_HEADER, LEADER_REPLICA_HEADER, REASON_HEADER, reason};
pub use kv::{prefix, span};
pub use session::SessionState;
pub use sharded::{ShardedKv, fnv1a64, jump_hash};
