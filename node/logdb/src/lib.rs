//! # drakkar-logdb
//!
//! The durable log store of a Drakkar node: the Raft logs, hard states and snapshot metadata of every group
//! the node hosts, in ONE segmented write-ahead log. A [`WriteBatch`] collects the updates of many groups
//! (entries, hard state, snapshots, compaction, removal); [`LogDb::save`] stores it atomically with one
//! write and one fdatasync. [`LogDb::group`] gives a [`GroupStorage`], the read view the Raft core uses
//! through [`drakkar_raft::Storage`].
//!
//! ```
//! use bytes::Bytes;
//! use drakkar_logdb::{LogDb, Options, WriteBatch};
//! use drakkar_raft::{Entry, GroupId, HardState, LogIndex, Storage, Term};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let db = LogDb::open(dir.path(), Options::default())?;
//! let mut batch = WriteBatch::new();
//! for g in 1..=3 {
//!     let e = Entry { term: Term(1), index: LogIndex(1), data: Bytes::from_static(b"x"), ..Default::default() };
//!     batch.append(GroupId(g), vec![e]);
//!     batch.set_hard_state(GroupId(g), HardState { term: Term(1), vote: None, commit: LogIndex(1) });
//! }
//! db.save(&batch)?; // durable: one write, one fdatasync for the three groups
//! drop(db);
//!
//! let db = LogDb::open(dir.path(), Options::default())?;
//! let g2 = db.group(GroupId(2));
//! assert_eq!(g2.last_index()?, LogIndex(1));
//! assert_eq!(g2.initial_state()?.hard_state.commit, LogIndex(1));
//! # Ok(()) }
//! ```
//!
//! Concurrent `save` calls from several threads are grouped: one write and one fdatasync for all of them,
//! each batch still atomic and validated on its own.
//!
//! Durability: a batch is durable when `save` returns `Ok`. After a crash, every batch whose `save`
//! returned `Ok` is intact, and a batch in flight is entirely visible or entirely absent. A failed write or
//! fsync poisons the store (every later write is refused): reopen it. The on-disk format is described in
//! `docs/formats.md`; the file system is reached through [`fs::FileSystem`], with a fault-injecting
//! in-memory implementation ([`fs::MemFs`]) for tests.

mod batch;
mod cache;
mod codec;
mod commit;
mod db;
mod error;
mod format;
pub mod fs;
mod index;
mod plan;
mod recovery;
mod storage;
mod write;

pub use batch::WriteBatch;
pub use db::{LogDb, Options, Stats};
pub use error::{Error, OpError, Result};
pub use storage::GroupStorage;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
