//! The command and query semantics, written once over a small storage trait so that [`MemKv`] and
//! [`DiskKv`] cannot drift apart: same commands, same results, same key metadata.
//!
//! [`MemKv`]: super::MemKv
//! [`DiskKv`]: super::DiskKv

use bytes::Bytes;

use super::command::limits::{MAX_SCAN_BYTES, MAX_SCAN_ITEMS};
use super::command::{
    Bounds, CasExpect, CasNew, Command, CommandResult, Compare, CompareTarget, KeyMeta, KeyValue, Op,
    OpResult, Query, QueryResult, Txn,
};
use super::primitives::CodecError;
use drakkar::statemachine::SmResult;

/// Read access to a KV view.
pub(crate) trait ReadStore {
    /// A storage failure (fatal in `update`, returned to the reader in `lookup`).
    type Error;
    /// The value and metadata of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<(Bytes, KeyMeta)>, Self::Error>;
    /// The metadata of `key` (without copying the value where the store can avoid it).
    fn get_meta(&self, key: &[u8]) -> Result<Option<KeyMeta>, Self::Error> {
        Ok(self.get(key)?.map(|(_, m)| m))
    }
    /// Offers the keys in `bounds`, in order, to `scan` until it declines one.
    fn scan(&self, bounds: &Bounds, scan: &mut Scan) -> Result<(), Self::Error>;
}

/// Write access, used only from `update` and snapshot recovery.
pub(crate) trait WriteStore: ReadStore {
    /// Sets `key` (overwrites).
    fn insert(&mut self, key: &Bytes, value: &Bytes, meta: KeyMeta) -> Result<(), Self::Error>;
    /// Writes `key` at log `index` ([`KeyMeta::next`] of its metadata), returning its metadata before
    /// and after. A store overrides it when it can find and update the key in one step. Takes the
    /// command's key and value by value, so a store that keeps them needs no reference-count traffic.
    fn put(
        &mut self,
        key: Bytes,
        value: Bytes,
        index: u64,
    ) -> Result<(Option<KeyMeta>, KeyMeta), Self::Error> {
        let prev = self.get_meta(&key)?;
        let new = KeyMeta::next(prev, index);
        self.insert(&key, &value, new)?;
        Ok((prev, new))
    }
    /// Removes `key`, returning its metadata if it existed.
    fn remove(&mut self, key: &[u8]) -> Result<Option<KeyMeta>, Self::Error>;
    /// Removes every key in `bounds`, returning how many.
    fn remove_range(&mut self, bounds: &Bounds) -> Result<u64, Self::Error>;
}

/// A scan in progress: applies the item limit and the byte budget identically for every store.
pub(crate) struct Scan {
    limit: usize,
    keys_only: bool,
    bytes: usize,
    items: Vec<KeyValue>,
    more: bool,
}

impl Scan {
    fn new(limit: u32, keys_only: bool) -> Self {
        let limit = match limit as usize {
            0 => MAX_SCAN_ITEMS,
            n => n.min(MAX_SCAN_ITEMS),
        };
        Self { limit, keys_only, bytes: 0, items: Vec::new(), more: false }
    }

    /// Whether to take the next key (sizes given); `false` ends the scan with `more` set.
    /// Invariant: at least one item is taken when the range is non-empty.
    pub(crate) fn admit(&mut self, key_len: usize, value_len: usize) -> bool {
        let size = key_len + if self.keys_only { 0 } else { value_len };
        let full = self.items.len() >= self.limit
            || (!self.items.is_empty() && self.bytes.saturating_add(size) > MAX_SCAN_BYTES);
        if full {
            self.more = true;
            return false;
        }
        self.bytes += size;
        true
    }

    /// Whether values are left out.
    pub(crate) fn keys_only(&self) -> bool {
        self.keys_only
    }

    /// Adds an item admitted by [`Scan::admit`].
    pub(crate) fn push(&mut self, kv: KeyValue) {
        self.items.push(kv);
    }
}

/// Applies one committed command at log `index`. Logical failures (a malformed command, a failed
/// compare) are results, never errors: only a storage failure is an `Err`.
pub(crate) fn apply<S: WriteStore>(s: &mut S, index: u64, cmd: &Bytes) -> Result<SmResult, S::Error> {
    // An empty entry (e.g. a new leader's no-op) changes nothing and has an empty result.
    if cmd.is_empty() {
        return Ok(SmResult::default());
    }
    let res = match Command::decode_shared(cmd) {
        Ok(cmd) => execute(s, index, cmd)?,
        Err(e) => CommandResult::Rejected { reason: e.to_string() },
    };
    Ok(SmResult { value: res.status().code(), data: res.encode() })
}

fn execute<S: WriteStore>(s: &mut S, index: u64, cmd: Command) -> Result<CommandResult, S::Error> {
    Ok(match cmd {
        Command::Put { key, value } => {
            let (prev, new) = s.put(key, value, index)?;
            CommandResult::Put { prev, new }
        }
        Command::Delete { key } => CommandResult::Delete { prev: s.remove(&key)? },
        Command::DeleteRange { range } => CommandResult::DeleteRange {
            deleted: match range.bounds() {
                Some(b) => s.remove_range(&b)?,
                None => 0,
            },
        },
        Command::CompareAndSwap { key, expected, new } => {
            let prev = s.get(&key)?;
            let succeeded = match (&expected, &prev) {
                (CasExpect::Value(v), Some((cur, _))) => cur == v,
                (CasExpect::Version(n), Some((_, m))) => m.version == *n,
                (CasExpect::Absent, None) => true,
                _ => false,
            };
            if succeeded {
                match new {
                    CasNew::Put(v) => {
                        let meta = KeyMeta::next(prev.as_ref().map(|(_, m)| *m), index);
                        s.insert(&key, &v, meta)?;
                    }
                    CasNew::Delete => {
                        s.remove(&key)?;
                    }
                }
            }
            CommandResult::CompareAndSwap {
                succeeded,
                prev: prev.map(|(value, meta)| KeyValue { key, value, meta }),
            }
        }
        Command::Txn(txn) => txn_execute(s, index, txn)?,
    })
}

fn txn_execute<S: WriteStore>(s: &mut S, index: u64, txn: Txn) -> Result<CommandResult, S::Error> {
    let mut succeeded = true;
    for c in &txn.compares {
        if !compare_holds(s, c)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded { txn.success } else { txn.failure };
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            Op::Put { key, value } => {
                let (prev, new) = s.put(key, value, index)?;
                OpResult::Put { prev, new }
            }
            Op::Delete { key } => OpResult::Delete { prev: s.remove(&key)? },
            Op::DeleteRange { range } => OpResult::DeleteRange {
                deleted: match range.bounds() {
                    Some(b) => s.remove_range(&b)?,
                    None => 0,
                },
            },
            Op::Get { key } => OpResult::Get(s.get(&key)?.map(|(value, meta)| KeyValue { key, value, meta })),
        });
    }
    Ok(CommandResult::Txn { succeeded, results })
}

/// Evaluates one compare. An absent key has version, mod_index and create_index 0; any compare of an
/// absent key's value is false.
fn compare_holds<S: ReadStore>(s: &S, c: &Compare) -> Result<bool, S::Error> {
    Ok(match &c.target {
        CompareTarget::Value(v) => s.get(&c.key)?.is_some_and(|(cur, _)| c.op.holds(&cur[..], &v[..])),
        CompareTarget::Version(n) => c.op.holds(&s.get_meta(&c.key)?.map_or(0, |m| m.version), n),
        CompareTarget::ModIndex(n) => c.op.holds(&s.get_meta(&c.key)?.map_or(0, |m| m.mod_index), n),
        CompareTarget::CreateIndex(n) => c.op.holds(&s.get_meta(&c.key)?.map_or(0, |m| m.create_index), n),
        CompareTarget::Exists(b) => c.op.holds(&s.get_meta(&c.key)?.is_some(), b),
    })
}

/// A lookup failure: a malformed query or a storage failure.
pub(crate) enum LookupError<E> {
    /// The query could not be decoded.
    Decode(CodecError),
    /// The store failed.
    Store(E),
}

/// Answers an encoded query.
pub(crate) fn lookup<S: ReadStore>(s: &S, query: &[u8]) -> Result<Bytes, LookupError<S::Error>> {
    let q = Query::decode(query).map_err(LookupError::Decode)?;
    let res = match q {
        Query::Get { key } => {
            QueryResult::Get(s.get(&key).map_err(LookupError::Store)?.map(|(value, meta)| KeyValue {
                key,
                value,
                meta,
            }))
        }
        Query::Scan { range, limit, keys_only } => {
            let mut scan = Scan::new(limit, keys_only);
            if let Some(b) = range.bounds() {
                s.scan(&b, &mut scan).map_err(LookupError::Store)?;
            }
            QueryResult::Scan { items: scan.items, more: scan.more }
        }
    };
    Ok(res.encode())
}
