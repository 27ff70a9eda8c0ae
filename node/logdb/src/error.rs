//! Errors of the log store.

use std::io;
use std::path::PathBuf;

use drakkar_raft::{GroupId, StorageError};

/// Why an operation of the log store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// Bytes on disk do not match what was written: a bad checksum followed by valid data, a damaged record
    /// in a segment that is not the last, a missing segment, or records that contradict each other.
    #[error("corrupt log: {path} at offset {offset}: {reason}")]
    Corruption {
        /// The damaged file (or the directory when a whole file is missing).
        path: PathBuf,
        /// Byte offset of the damaged record in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment was written by a newer (or unknown) version of the format.
    #[error("{path}: unsupported log format version {version}")]
    UnsupportedVersion {
        /// The segment.
        path: PathBuf,
        /// The version found in its header.
        version: u32,
    },
    /// Another process (or another `LogDb` in this one) has the directory open.
    #[error("log directory {0} is locked by another process")]
    Locked(PathBuf),
    /// An earlier write or fsync failed; the store refuses every later write. Reopen it to recover.
    #[error("the log store refuses writes after an earlier failure: {0}")]
    Poisoned(String),
    /// A batch was rejected before anything was written: one of its updates is not valid for the group's
    /// current state. Nothing of the batch is stored.
    #[error("batch rejected: group {group}: {source}")]
    Rejected {
        /// The group whose update is invalid.
        group: GroupId,
        /// Why.
        #[source]
        source: OpError,
    },
    /// A record would exceed the maximum record size (1 GiB).
    #[error("record too large: {0}")]
    TooLarge(String),
    /// The options cannot be used.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
}

impl Error {
    /// An I/O error about `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A copy of this error, for every batch of a group commit that it failed.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Error::Io { path, source } => {
                Error::Io { path: path.clone(), source: io::Error::new(source.kind(), source.to_string()) }
            }
            Error::Corruption { path, offset, reason } => {
                Error::Corruption { path: path.clone(), offset: *offset, reason: reason.clone() }
            }
            Error::UnsupportedVersion { path, version } => {
                Error::UnsupportedVersion { path: path.clone(), version: *version }
            }
            Error::Locked(p) => Error::Locked(p.clone()),
            Error::Poisoned(s) => Error::Poisoned(s.clone()),
            Error::Rejected { group, source } => Error::Rejected { group: *group, source: source.clone() },
            Error::TooLarge(s) => Error::TooLarge(s.clone()),
            Error::InvalidOptions(s) => Error::InvalidOptions(s.clone()),
        }
    }

    /// A corruption at `offset` of `path`.
    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption { path: path.into(), offset, reason: reason.into() }
    }
}

/// Why one update of a batch cannot be applied to its group. The rules are those of
/// [`drakkar_raft::MemStorage`]'s mutators.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The index is at or below the log's base: already compacted.
    #[error("index {0} is compacted")]
    Compacted(u64),
    /// The index is beyond the last stored entry.
    #[error("index {0} is beyond the last stored entry")]
    Unavailable(u64),
    /// Appended entries would leave a gap after the last stored index.
    #[error("append at {first} leaves a gap after last index {last}")]
    Gap {
        /// First index appended.
        first: u64,
        /// Last stored index.
        last: u64,
    },
    /// The entries of one append do not have consecutive indexes.
    #[error("entries are not consecutive: {0} follows {1}")]
    NotConsecutive(u64, u64),
    /// A snapshot is not newer than the stored one.
    #[error("snapshot at {0} is not newer than the stored one at {1}")]
    StaleSnapshot(u64, u64),
    /// Compaction past the latest snapshot.
    #[error("cannot compact to {0}: the latest snapshot is at {1}")]
    NotSnapshotted(u64, u64),
    /// An entry kind this version of the format cannot store.
    #[error("entry kind {0} cannot be stored")]
    UnsupportedKind(String),
    /// An index beyond `u64::MAX / 4`, which no log reaches.
    #[error("index {0} is out of range")]
    IndexTooLarge(u64),
    /// The encoded batch would exceed the maximum record size.
    #[error("batch of {0} bytes exceeds the maximum record size")]
    TooLarge(u64),
}

impl From<OpError> for StorageError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Compacted(_) => StorageError::Compacted,
            OpError::Unavailable(_) => StorageError::Unavailable,
            other => StorageError::Other(other.to_string()),
        }
    }
}

/// Result of the log store.
pub type Result<T, E = Error> = std::result::Result<T, E>;
