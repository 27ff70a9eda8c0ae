//! The KV commands, queries and results, as typed values. Their versioned binary codec (the `encode` /
//! `decode` methods) is in the `encoding` module:
//!
//! Every message starts with [`FORMAT_VERSION`], then a tag byte selecting the variant; integers are
//! little-endian; byte strings are a `u32` length followed by the bytes; lists are a `u32` count followed
//! by the items; booleans are one byte, 0 or 1. Decoding checks every length against the limits in
//! [`limits`] and against the bytes left, refuses trailing bytes, and never panics. The full byte layout
//! is in the [`kv`](super) module documentation.

use std::ops::Bound;

use bytes::Bytes;

/// The codec version written as the first byte of every command, query and result.
pub const FORMAT_VERSION: u8 = 1;

/// Size limits, checked when encoding and when decoding untrusted bytes.
pub mod limits {
    /// Longest key, in bytes.
    pub const MAX_KEY_LEN: usize = 64 * 1024;
    /// Longest value, in bytes.
    pub const MAX_VALUE_LEN: usize = 32 * 1024 * 1024;
    /// Most compares in one transaction (also the gRPC protocol's limit, which its codec enforces before
    /// a request is decoded: `drakkar-server` checks at compile time that the two agree).
    pub const MAX_TXN_COMPARES: usize = 256;
    /// Most operations in each branch of a transaction (also the protocol's limit, as above).
    pub const MAX_TXN_OPS: usize = 1024;
    /// Most items one scan returns (a `limit` of 0 or above this means this).
    pub const MAX_SCAN_ITEMS: usize = 10_000;
    /// Byte budget of one scan's keys and values: the scan stops (with `more` set) before an item that
    /// would exceed it, but always returns at least one item.
    pub const MAX_SCAN_BYTES: usize = 4 * 1024 * 1024;
    /// Longest rejection reason, in bytes.
    pub const MAX_REASON_LEN: usize = 1024;
    /// Most items a decoded result list may hold.
    pub const MAX_RESULT_ITEMS: usize = 1 << 20;
}

/// The metadata every key carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyMeta {
    /// Writes since the key was created: 1 after its first put; a delete resets it (the key is gone).
    pub version: u64,
    /// Log index of the key's last write.
    pub mod_index: u64,
    /// Log index of the write that created the key (since its last delete).
    pub create_index: u64,
}

impl KeyMeta {
    /// The metadata after a write at `index` over `prev` (None: the key is created).
    #[must_use]
    pub fn next(prev: Option<KeyMeta>, index: u64) -> KeyMeta {
        match prev {
            Some(p) => KeyMeta {
                version: p.version.saturating_add(1),
                mod_index: index,
                create_index: p.create_index,
            },
            None => KeyMeta { version: 1, mod_index: index, create_index: index },
        }
    }
}

/// A key with its value and metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// The value (empty in a keys-only scan).
    pub value: Bytes,
    /// The key's metadata.
    pub meta: KeyMeta,
}

/// A set of keys in byte order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRange {
    /// Every key starting with these bytes (all keys when empty).
    Prefix(Bytes),
    /// Keys in `[start, end)`; no `end` means unbounded. Empty when `end <= start`.
    Span {
        /// First key included.
        start: Bytes,
        /// First key excluded.
        end: Option<Bytes>,
    },
}

/// A range resolved to `[start, end)` bounds; `end: None` is unbounded. Invariant: `start < end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) start: Bytes,
    pub(crate) end: Option<Bytes>,
}

impl Bounds {
    /// As range bounds for ordered maps (never inverted, so map range calls cannot panic).
    pub(crate) fn as_range(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        let end = match &self.end {
            Some(e) => Bound::Excluded(&e[..]),
            None => Bound::Unbounded,
        };
        (Bound::Included(&self.start[..]), end)
    }
}

impl KeyRange {
    /// The keys starting with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        Self::Prefix(prefix.into())
    }

    /// The keys in `[start, end)`.
    pub fn span(start: impl Into<Bytes>, end: impl Into<Bytes>) -> Self {
        Self::Span { start: start.into(), end: Some(end.into()) }
    }

    /// Whether `key` is in the range.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            Self::Prefix(p) => key.starts_with(p),
            Self::Span { start, end } => key >= &start[..] && end.as_ref().is_none_or(|e| key < &e[..]),
        }
    }

    /// The `[start, end)` bounds, or None when the range is empty.
    pub(crate) fn bounds(&self) -> Option<Bounds> {
        match self {
            Self::Prefix(p) => Some(Bounds { start: p.clone(), end: prefix_end(p) }),
            Self::Span { start, end } => match end {
                Some(e) if e <= start => None,
                _ => Some(Bounds { start: start.clone(), end: end.clone() }),
            },
        }
    }
}

/// The first key after every key starting with `p`: drop trailing 0xff bytes, increment the last byte.
/// None (unbounded) when `p` is empty or all 0xff.
fn prefix_end(p: &[u8]) -> Option<Bytes> {
    let last = p.iter().rposition(|&b| b != 0xff)?;
    let mut end = p[..=last].to_vec();
    end[last] += 1; // end[last] != 0xff: no overflow
    Some(Bytes::from(end))
}

/// The expected state of the key in a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CasExpect {
    /// The key exists with exactly this value.
    Value(Bytes),
    /// The key exists with this version.
    Version(u64),
    /// The key does not exist.
    Absent,
}

/// What a successful compare-and-swap writes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CasNew {
    /// Put this value.
    Put(Bytes),
    /// Delete the key.
    Delete,
}

/// What a transaction compare looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompareTarget {
    /// The value (bytewise order). Any compare of an absent key's value is false.
    Value(Bytes),
    /// The version (0 when absent).
    Version(u64),
    /// The last write's index (0 when absent).
    ModIndex(u64),
    /// The creation index (0 when absent).
    CreateIndex(u64),
    /// Whether the key exists (`false < true`).
    Exists(bool),
}

/// A comparison operator: `actual OP operand`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompareOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Greater than.
    Gt,
}

impl CompareOp {
    /// Whether `actual OP operand` holds.
    #[must_use]
    pub fn holds<T: Ord + ?Sized>(self, actual: &T, operand: &T) -> bool {
        match self {
            Self::Eq => actual == operand,
            Self::Ne => actual != operand,
            Self::Lt => actual < operand,
            Self::Gt => actual > operand,
        }
    }
}

/// One condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key examined.
    pub key: Bytes,
    /// The operator.
    pub op: CompareOp,
    /// The field and operand.
    pub target: CompareTarget,
}

/// One operation of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Write a key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Delete every key in a range.
    DeleteRange {
        /// The range.
        range: KeyRange,
    },
    /// Read a key (sees the writes of earlier operations in the branch).
    Get {
        /// The key.
        key: Bytes,
    },
}

/// A transaction: if every compare holds, apply `success`, otherwise `failure`, atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// The conditions (all must hold; none means success).
    pub compares: Vec<Compare>,
    /// Operations applied when the conditions hold.
    pub success: Vec<Op>,
    /// Operations applied otherwise.
    pub failure: Vec<Op>,
}

/// A command: a proposal to the KV state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Write a key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Delete every key in a range.
    DeleteRange {
        /// The range.
        range: KeyRange,
    },
    /// Write or delete a key if it is in the expected state.
    CompareAndSwap {
        /// The key.
        key: Bytes,
        /// The state required.
        expected: CasExpect,
        /// What to write when it holds.
        new: CasNew,
    },
    /// A multi-key transaction.
    Txn(Txn),
}

/// A read-only query, answered by `lookup`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Query {
    /// Read a key.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Read keys in order.
    Scan {
        /// The keys.
        range: KeyRange,
        /// Most items to return (0: [`limits::MAX_SCAN_ITEMS`]).
        limit: u32,
        /// Return keys and metadata only (empty values).
        keys_only: bool,
    },
}

/// The outcome of one transaction operation (exhaustive: the gRPC server maps each kind to the protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// A put: the previous metadata (None: created) and the new one.
    Put {
        /// Before the write.
        prev: Option<KeyMeta>,
        /// After the write.
        new: KeyMeta,
    },
    /// A delete: the deleted key's metadata (None: it did not exist).
    Delete {
        /// Before the delete.
        prev: Option<KeyMeta>,
    },
    /// A range delete: how many keys were deleted.
    DeleteRange {
        /// Keys deleted.
        deleted: u64,
    },
    /// A read.
    Get(Option<KeyValue>),
}

/// The outcome of a command, in the entry's result `data`; its `value` is a [`Status`] code.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandResult {
    /// A put: the previous metadata (None: created) and the new one.
    Put {
        /// Before the write.
        prev: Option<KeyMeta>,
        /// After the write.
        new: KeyMeta,
    },
    /// A delete: the deleted key's metadata (None: it did not exist).
    Delete {
        /// Before the delete.
        prev: Option<KeyMeta>,
    },
    /// A range delete.
    DeleteRange {
        /// Keys deleted.
        deleted: u64,
    },
    /// A compare-and-swap.
    CompareAndSwap {
        /// Whether the expectation held and the write was applied.
        succeeded: bool,
        /// The key as it was before the command (the current value when it failed).
        prev: Option<KeyValue>,
    },
    /// A transaction.
    Txn {
        /// Whether the compares held (`success` ran) or not (`failure` ran).
        succeeded: bool,
        /// One result per operation of the branch that ran.
        results: Vec<OpResult>,
    },
    /// The command could not be decoded; nothing was changed.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryResult {
    /// The key, if present.
    Get(Option<KeyValue>),
    /// Keys in order.
    Scan {
        /// The items.
        items: Vec<KeyValue>,
        /// Whether more keys in the range follow the last item.
        more: bool,
    },
}

/// The status code a KV state machine puts in `SmResult::value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Applied (a compare-and-swap or transaction whose conditions held, or an unconditional write).
    Ok,
    /// A compare-and-swap did not match, or a transaction ran its `failure` branch.
    CompareFailed,
    /// The command was malformed and was not applied.
    Rejected,
}

impl Status {
    /// The numeric code: 0, 1, 2.
    #[must_use]
    pub fn code(self) -> u64 {
        match self {
            Self::Ok => 0,
            Self::CompareFailed => 1,
            Self::Rejected => 2,
        }
    }

    /// The status for a code, if known.
    #[must_use]
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            0 => Some(Self::Ok),
            1 => Some(Self::CompareFailed),
            2 => Some(Self::Rejected),
            _ => None,
        }
    }
}

impl CommandResult {
    /// The status code that goes with this result.
    #[must_use]
    pub fn status(&self) -> Status {
        match self {
            Self::CompareAndSwap { succeeded: false, .. } | Self::Txn { succeeded: false, .. } => {
                Status::CompareFailed
            }
            Self::Rejected { .. } => Status::Rejected,
            _ => Status::Ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds_skip_trailing_ff() {
        assert_eq!(prefix_end(b"ab"), Some(Bytes::from_static(b"ac")));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(Bytes::from_static(b"b")));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
        let r = KeyRange::prefix("a\u{ff}");
        assert!(r.contains("a\u{ff}z".as_bytes()));
    }

    #[test]
    fn inverted_span_is_empty() {
        assert_eq!(KeyRange::span("b", "a").bounds(), None);
        assert_eq!(KeyRange::span("a", "a").bounds(), None);
        assert!(KeyRange::span("a", "b").bounds().is_some());
    }
}
