//! The built-in key-value state machines: [`MemKv`] (in memory, a [`ConcurrentStateMachine`] and a
//! [`StateMachine`]) and [`DiskKv`] (on disk in redb, an [`OnDiskStateMachine`]). Both execute the same
//! commands with the same code (`semantics.rs`), so for the same log they return the same results,
//! hold the same keys with the same metadata, and write byte-identical snapshots; either kind can recover
//! from the other's snapshot.
//!
//! ```
//! use drakkar_kv::{Command, CommandResult, MemKv, Query, QueryResult, Status};
//! use drakkar::statemachine::{ConcurrentStateMachine, SmEntry};
//! use drakkar_raft::LogIndex;
//!
//! let kv = MemKv::new();
//! let mut batch = vec![SmEntry {
//!     index: LogIndex(1),
//!     cmd: Command::put("greeting", "hello").encode()?,
//!     ..Default::default()
//! }];
//! kv.update(&mut batch)?;
//! assert_eq!(batch[0].result.value, Status::Ok.code());
//! let CommandResult::Put { prev: None, new } = CommandResult::decode(&batch[0].result.data)? else {
//!     panic!("unexpected result");
//! };
//! assert_eq!((new.version, new.mod_index, new.create_index), (1, 1, 1));
//!
//! let answer = kv.lookup(&Query::get("greeting").encode()?)?;
//! let QueryResult::Get(Some(item)) = QueryResult::decode(&answer)? else { panic!("missing") };
//! assert_eq!(&item.value[..], b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Commands, queries, results
//! Commands (proposals): `Put`, `Delete`, `DeleteRange` (a prefix or `[start, end)`), `CompareAndSwap`
//! (expect a value, a version or absence; then put or delete) and `Txn` (compares on value, version,
//! mod_index, create_index or existence with `==`, `!=`, `<`, `>`; then the `success` or the `failure`
//! operations: put, delete, delete-range, get). Queries (lookups): `Get` and `Scan` (a range, a limit,
//! keys only), which returns items in key order and a `more` flag.
//!
//! `update` sets each entry's result: `data` is an encoded [`CommandResult`] and `value` a [`Status`]
//! code (0 applied, 1 compare failed, 2 rejected). A command that fails logically (a compare that does
//! not hold, bytes that do not decode) is a result, never an `Err`, and is deterministic: an `Err` would
//! stop the replica. Only a storage failure of [`DiskKv`] is an `Err`. An empty command is a no-op with
//! an empty result (a new leader's empty entry). A malformed query is `SmError::InvalidRequest` for
//! that reader only.
//!
//! # Key metadata
//! Every key carries [`KeyMeta`]: `version`, the number of writes since the key was created (1 after the
//! first put; a delete removes the key, so a later put starts again at 1); `mod_index`, the log index of
//! the last write; `create_index`, the log index of the put that created it. Every write in one entry
//! (e.g. several puts of one key in a transaction) gets that entry's index and bumps the version once
//! per write. An absent key compares as version, mod_index and create_index 0.
//!
//! # Codec layout (format version 1)
//! Little-endian; `bytes` = `len: u32` + `len` bytes; `list<T>` = `count: u32` + items; `bool` = one byte
//! 0/1; `opt<T>` = `bool` + `T` if true. Every message = `version: u8 (=1)`, `tag: u8`, body; no
//! trailing bytes.
//! ```text
//! range      = 0 prefix:bytes | 1 start:bytes opt<end:bytes>
//! Command    = 1 Put key value | 2 Delete key | 3 DeleteRange range
//!            | 4 CompareAndSwap key expect new | 5 Txn list<compare> list<op> list<op>
//! expect     = 0 Absent | 1 Value value | 2 Version u64
//! new        = 0 Delete | 1 Put value
//! compare    = key op:u8 (0 eq, 1 ne, 2 lt, 3 gt) target
//! target     = 1 Value value | 2 Version u64 | 3 ModIndex u64 | 4 CreateIndex u64 | 5 Exists bool
//! op         = 1 Put key value | 2 Delete key | 3 DeleteRange range | 4 Get key
//! Query      = 1 Get key | 2 Scan range limit:u32 keys_only:bool
//! meta       = version:u64 mod_index:u64 create_index:u64
//! kv         = key:bytes value:bytes meta
//! CommandResult = 1 Put opt<meta> meta | 2 Delete opt<meta> | 3 DeleteRange deleted:u64
//!            | 4 CompareAndSwap succeeded:bool opt<kv> | 5 Txn succeeded:bool list<op_result>
//!            | 6 Rejected reason:bytes (UTF-8)
//! op_result  = 1 Put opt<meta> meta | 2 Delete opt<meta> | 3 DeleteRange u64 | 4 Get opt<kv>
//! QueryResult = 1 Get opt<kv> | 2 Scan list<kv> more:bool
//! ```
//! Limits ([`limits`]): keys 64 KiB, values 32 MiB, 256 compares and 1024 operations per branch in a
//! transaction; a scan returns at most 10 000 items and stops before exceeding 4 MiB of keys and values
//! (it always returns at least one item).
//!
//! # Snapshot layout (version 1)
//! ```text
//! "DKVS"                 4 bytes magic
//! version: u8            = 1
//! applied_index: u64     the log index the state includes
//! records, keys strictly ascending:
//!   1: u8, key_len: u32, key, version: u64, mod_index: u64, create_index: u64, value_len: u32, value
//! 0: u8                  end marker
//! count: u64             number of records
//! crc32c: u32            CRC-32C (Castagnoli) of every byte above, magic to count
//! ```
//! Saved and recovered record by record (never the whole snapshot in one buffer). Recovery checks the
//! magic, version, limits, key order, count and checksum, and replaces the state only after the trailer
//! verifies: a truncated or corrupt stream returns `Err` and leaves the previous state (and applied
//! index) intact. The stream is self-delimiting: bytes after the checksum are not read.
//!
//! [`ConcurrentStateMachine`]: drakkar::statemachine::ConcurrentStateMachine
//! [`StateMachine`]: drakkar::statemachine::StateMachine
//! [`OnDiskStateMachine`]: drakkar::statemachine::OnDiskStateMachine

mod codec;
pub mod command;
mod disk;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod memory;
mod primitives;
mod semantics;
pub mod snapshot;

use bytes::Bytes;

use drakkar::statemachine::SmError;

pub use command::{
    CasExpect, CasNew, Command, CommandResult, Compare, CompareOp, CompareTarget, KeyMeta, KeyRange,
    KeyValue, Op, OpResult, Query, QueryResult, Status, Txn, limits,
};
pub use disk::{DISK_FORMAT, DiskKv, DiskKvOptions, DiskSnapshot};
pub use memory::{MemKv, MemSnapshot};
pub use primitives::CodecError;
pub use snapshot::SnapshotError;

/// A failure of a KV state machine's storage (as opposed to a logical command failure, which is a
/// result).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// redb failed.
    #[error("kv storage: {0}")]
    Storage(#[from] redb::Error),
    /// A [`DiskKv`] was used before `open`.
    #[error("the on-disk KV is not open")]
    NotOpen,
    /// The database was written in a layout this build does not read.
    #[error("unsupported on-disk KV format {found} (this build reads {expected})")]
    Format {
        /// Found in the database.
        found: u64,
        /// What this build reads.
        expected: u64,
    },
    /// A stored record is too short to hold its metadata.
    #[error("corrupt on-disk KV record for key {key:?}")]
    CorruptRecord {
        /// The key.
        key: Bytes,
    },
    /// A snapshot stream was refused.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl From<KvError> for SmError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Snapshot(s) => snapshot_error(s),
            KvError::Storage(redb::Error::Io(io)) => SmError::Io(io),
            other => SmError::Other(other.to_string()),
        }
    }
}

/// Snapshot failures are I/O failures of the stream; corruption keeps its typed cause as the source.
/// Records between two looks at a [`drakkar::statemachine::Stop`] while a snapshot is saved or recovered.
pub(crate) const STOP_EVERY: u64 = 1024;

/// `Err(Stopped)` once `stop` is set, looked at every [`STOP_EVERY`] records (`n` counts them).
pub(crate) fn check_stop(stop: &drakkar::statemachine::Stop, n: u64) -> Result<(), SmError> {
    if n.is_multiple_of(STOP_EVERY) && stop.is_set() { Err(SmError::Stopped) } else { Ok(()) }
}

pub(crate) fn snapshot_error(e: SnapshotError) -> SmError {
    match e {
        SnapshotError::Io(io) => SmError::Io(io),
        other => SmError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, other)),
    }
}
