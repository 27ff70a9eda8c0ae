//! Histories of operations on registers (keys), as clients saw them.
//!
//! A history is a list of [`Op`]s, each one an operation on one key: when a client invoked it, when (and
//! whether) it returned, and what it returned. Keys are independent registers that start absent; values
//! are bytes, and a workload should write each value at most once per key (unique values make histories
//! cheap to check and every read attributable to one write).
//!
//! Outcomes follow Jepsen's convention:
//!
//! - [`Outcome::Ok`]: the operation took effect once, somewhere between `invoke` and `complete`, and
//!   returned the [`Reply`].
//! - [`Outcome::Fail`]: the operation certainly did not take effect (a definite refusal such as
//!   `no-leader`: it never entered the log). The checker ignores it.
//! - [`Outcome::Unknown`]: it may or may not have taken effect, at any time after `invoke` (a timeout,
//!   a lost connection). Its `complete` time, if any, is ignored.
//!
//! Times are any monotonic clock in nanoseconds (e.g. since the start of the run); only their order matters.
//!
//! **Versions.** A reply may also report the key's *version* (writes since the key was created, as
//! Drakkar's `KeyMeta.version` counts them; 0 while absent): the `*Versioned` replies. Keys are never
//! deleted by the workload, so every write that takes effect adds exactly one to the version. That makes a
//! write applied twice visible even when its value is unique and nothing overwrote it in between (the
//! version jumps by two), which the checker then rejects as not linearizable.

use std::fmt;

/// A key (register name).
pub type Key = Vec<u8>;

/// A value written to or read from a key.
pub type Value = Vec<u8>;

/// What an operation asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// Read the key's value (absent or a value).
    Read,
    /// Set the key to `value`.
    Write {
        /// The new value.
        value: Value,
    },
    /// Set the key to `new` if its value is `expected` (`None`: if the key is absent).
    Cas {
        /// The value compared with (`None`: absent).
        expected: Option<Value>,
        /// The value written when the compare holds.
        new: Value,
    },
    /// A transaction (Drakkar's `Kv.Txn`): if the key's value is `expected` (`None`: absent), put `new`
    /// and then get the key; otherwise only get the key. The same register semantics as [`OpKind::Cas`],
    /// but its reply also reports what the `get` saw.
    Txn {
        /// The value compared with (`None`: absent).
        expected: Option<Value>,
        /// The value put when the compare holds.
        new: Value,
    },
}

/// What an operation that completed returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reply {
    /// A read's result: `None` when the key was absent.
    Read(Option<Value>),
    /// A write was applied.
    Written,
    /// A compare-and-swap or a transaction: whether the compare held (and the new value was written).
    Cas(bool),
    /// A read that also reported the key's version (0: absent).
    ReadVersioned {
        /// The value read (`None`: absent).
        value: Option<Value>,
        /// The key's version.
        version: u64,
    },
    /// A write that reported the version it created.
    WrittenVersioned {
        /// The key's version after the write.
        version: u64,
    },
    /// A compare-and-swap or a transaction that reported the key as it was after the operation: the
    /// new value and its version when the compare held, else the value and version that failed it.
    SwapVersioned {
        /// Whether the compare held.
        succeeded: bool,
        /// The key's value after the operation (`None`: absent).
        value: Option<Value>,
        /// The key's version after the operation.
        version: u64,
    },
}

impl Reply {
    /// The version the reply reported, if any.
    pub fn version(&self) -> Option<u64> {
        match self {
            Reply::ReadVersioned { version, .. }
            | Reply::WrittenVersioned { version }
            | Reply::SwapVersioned { version, .. } => Some(*version),
            _ => None,
        }
    }

    /// A read's value, for both read replies.
    pub fn read_value(&self) -> Option<&Option<Value>> {
        match self {
            Reply::Read(v) | Reply::ReadVersioned { value: v, .. } => Some(v),
            _ => None,
        }
    }

    /// Whether a compare held, for both compare replies.
    pub fn swapped(&self) -> Option<bool> {
        match self {
            Reply::Cas(b) | Reply::SwapVersioned { succeeded: b, .. } => Some(*b),
            _ => None,
        }
    }
}

/// How an operation ended, from the client's point of view.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// It took effect once and returned this.
    Ok(Reply),
    /// It certainly did not take effect.
    Fail,
    /// It may or may not have taken effect (at any time after its invocation).
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    /// The client (process) that ran it. A process runs one operation at a time; the checker does not
    /// rely on it, it is kept for reports.
    pub process: u64,
    /// The key it acts on.
    pub key: Key,
    /// What it asked for.
    pub kind: OpKind,
    /// When it was invoked.
    pub invoke: u64,
    /// When it returned (`None` for an operation that never returned, which must be `Unknown`).
    pub complete: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Op {
    /// A read of `key` by `process` that ran from `invoke` to `complete` and saw `seen`.
    pub fn read(process: u64, key: impl Into<Key>, invoke: u64, complete: u64, seen: Option<Value>) -> Op {
        Op {
            process,
            key: key.into(),
            kind: OpKind::Read,
            invoke,
            complete: Some(complete),
            outcome: Outcome::Ok(Reply::Read(seen)),
        }
    }

    /// An acknowledged write of `value` to `key`.
    pub fn write(
        process: u64,
        key: impl Into<Key>,
        value: impl Into<Value>,
        invoke: u64,
        complete: u64,
    ) -> Op {
        Op {
            process,
            key: key.into(),
            kind: OpKind::Write { value: value.into() },
            invoke,
            complete: Some(complete),
            outcome: Outcome::Ok(Reply::Written),
        }
    }

    /// A compare-and-swap of `key` from `expected` to `new` that returned `succeeded`.
    pub fn cas(
        process: u64,
        key: impl Into<Key>,
        expected: Option<Value>,
        new: impl Into<Value>,
        invoke: u64,
        complete: u64,
        succeeded: bool,
    ) -> Op {
        Op {
            process,
            key: key.into(),
            kind: OpKind::Cas { expected, new: new.into() },
            invoke,
            complete: Some(complete),
            outcome: Outcome::Ok(Reply::Cas(succeeded)),
        }
    }

    /// A transaction on `key` from `expected` to `new` that returned `succeeded`.
    pub fn txn(
        process: u64,
        key: impl Into<Key>,
        expected: Option<Value>,
        new: impl Into<Value>,
        invoke: u64,
        complete: u64,
        succeeded: bool,
    ) -> Op {
        Op {
            process,
            key: key.into(),
            kind: OpKind::Txn { expected, new: new.into() },
            invoke,
            complete: Some(complete),
            outcome: Outcome::Ok(Reply::Cas(succeeded)),
        }
    }

    /// The same operation with another outcome (e.g. `Unknown` or `Fail`).
    #[must_use]
    pub fn with_outcome(mut self, outcome: Outcome) -> Op {
        self.outcome = outcome;
        self
    }

    /// The value this operation writes when it takes effect and changes the key, if any.
    pub fn written_value(&self) -> Option<&Value> {
        match &self.kind {
            OpKind::Read => None,
            OpKind::Write { value } => Some(value),
            OpKind::Cas { new, .. } | OpKind::Txn { new, .. } => Some(new),
        }
    }

    /// Whether the operation was acknowledged as having changed the key (an ok write, a succeeded CAS).
    pub fn acknowledged_write(&self) -> bool {
        match (&self.kind, &self.outcome) {
            (OpKind::Write { .. }, Outcome::Ok(_)) => true,
            (OpKind::Cas { .. } | OpKind::Txn { .. }, Outcome::Ok(r)) => r.swapped() == Some(true),
            _ => false,
        }
    }

    /// Checks that the reply matches the kind and the times are ordered.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let reply_fits = matches!(
            (&self.kind, &self.outcome),
            (_, Outcome::Fail | Outcome::Unknown)
                | (OpKind::Read, Outcome::Ok(Reply::Read(_) | Reply::ReadVersioned { .. }))
                | (OpKind::Write { .. }, Outcome::Ok(Reply::Written | Reply::WrittenVersioned { .. }))
                | (
                    OpKind::Cas { .. } | OpKind::Txn { .. },
                    Outcome::Ok(Reply::Cas(_) | Reply::SwapVersioned { .. })
                )
        );
        if !reply_fits {
            return Err(HistoryError::ReplyMismatch(Box::new(self.clone())));
        }
        match (self.complete, &self.outcome) {
            (None, Outcome::Ok(_) | Outcome::Fail) => {
                Err(HistoryError::NeverCompleted(Box::new(self.clone())))
            }
            (Some(c), _) if c < self.invoke => {
                Err(HistoryError::CompletedBeforeInvoked(Box::new(self.clone())))
            }
            _ => Ok(()),
        }
    }
}

/// A malformed history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The reply is not of the operation's kind (e.g. a read answered `Written`).
    #[error("reply does not match the operation: {0}")]
    ReplyMismatch(Box<Op>),
    /// An `Ok` or `Fail` operation without a completion time.
    #[error("ok or failed operation without a completion time: {0}")]
    NeverCompleted(Box<Op>),
    /// `complete < invoke`.
    #[error("operation completed before it was invoked: {0}")]
    CompletedBeforeInvoked(Box<Op>),
}

/// Printable bytes: UTF-8 text as is, anything else as hex.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => write!(f, "{s}"),
            _ => {
                write!(f, "0x")?;
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

fn opt(v: &Option<Value>) -> String {
    match v {
        Some(v) => Printable(v).to_string(),
        None => "absent".to_string(),
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            OpKind::Read => "read".to_string(),
            OpKind::Write { value } => format!("write {}", Printable(value)),
            OpKind::Cas { expected, new } => format!("cas {} -> {}", opt(expected), Printable(new)),
            OpKind::Txn { expected, new } => format!("txn {} -> {}", opt(expected), Printable(new)),
        };
        let result = match &self.outcome {
            Outcome::Ok(Reply::Read(v)) => format!("ok {}", opt(v)),
            Outcome::Ok(Reply::ReadVersioned { value, version }) => format!("ok {} (v{version})", opt(value)),
            Outcome::Ok(Reply::Written) => "ok".to_string(),
            Outcome::Ok(Reply::WrittenVersioned { version }) => format!("ok (v{version})"),
            Outcome::Ok(Reply::Cas(true)) => "ok (swapped)".to_string(),
            Outcome::Ok(Reply::Cas(false)) => "ok (compare failed)".to_string(),
            Outcome::Ok(Reply::SwapVersioned { succeeded: true, version, .. }) => {
                format!("ok (swapped, v{version})")
            }
            Outcome::Ok(Reply::SwapVersioned { succeeded: false, value, version }) => {
                format!("ok (compare failed on {} v{version})", opt(value))
            }
            Outcome::Fail => "fail".to_string(),
            Outcome::Unknown => "unknown".to_string(),
        };
        let end = match self.complete {
            Some(c) => format!("{:.3}", c as f64 / 1e6),
            None => "-".to_string(),
        };
        write!(
            f,
            "[{:.3} ms .. {end} ms] p{} {} {}: {result}",
            self.invoke as f64 / 1e6,
            self.process,
            Printable(&self.key),
            what
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_mismatched_replies_and_times() {
        let ok = Op::read(1, "k", 1, 2, None);
        assert_eq!(ok.validate(), Ok(()));
        let bad = Op { outcome: Outcome::Ok(Reply::Written), ..ok.clone() };
        assert!(matches!(bad.validate(), Err(HistoryError::ReplyMismatch(_))));
        let never = Op { complete: None, ..ok.clone() };
        assert!(matches!(never.validate(), Err(HistoryError::NeverCompleted(_))));
        let backwards = Op { invoke: 3, ..ok.clone() };
        assert!(matches!(backwards.validate(), Err(HistoryError::CompletedBeforeInvoked(_))));
        let unknown = Op { complete: None, ..ok.with_outcome(Outcome::Unknown) };
        assert_eq!(unknown.validate(), Ok(()));
    }

    #[test]
    fn display_is_readable() {
        let op = Op::cas(3, "k1", None, "v1", 1_000_000, 2_500_000, true);
        assert_eq!(op.to_string(), "[1.000 ms .. 2.500 ms] p3 k1 cas absent -> v1: ok (swapped)");
        assert_eq!(Printable(&[0, 1]).to_string(), "0x0001");
    }
}
