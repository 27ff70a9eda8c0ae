//! [`MemKv`]: the in-memory KV state machine.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::sync::{Mutex, PoisonError, RwLock};

use bytes::Bytes;
use drakkar_raft::LogIndex;
use imbl::OrdMap;

use super::command::{Bounds, KeyMeta, KeyValue};
use super::semantics::{self, LookupError, ReadStore, Scan, WriteStore};
use super::snapshot::{SnapshotReader, SnapshotWriter};
use super::{check_stop, snapshot_error};
use drakkar::statemachine::{ConcurrentStateMachine, SmEntry, SmError, StateMachine, Stop};

/// A stored value with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    value: Bytes,
    meta: KeyMeta,
}

/// One immutable version of the state. Cloning is O(1): the map is persistent (structurally shared).
#[derive(Clone, Default)]
struct State {
    map: OrdMap<Bytes, Stored>,
    /// Index of the last entry applied (0: none).
    applied: u64,
}

/// The in-memory ordered KV state machine. Implements [`ConcurrentStateMachine`] and [`StateMachine`].
///
/// Concurrency design: the state is an immutable, structurally shared ordered map (`imbl`'s `OrdMap`,
/// a persistent B+ tree with nodes of 16 keys) behind a lock held only to clone or replace a pointer.
/// `update` clones the current version in O(1), applies the whole batch to its private copy (copying
/// only the nodes on the touched paths, each at most once per batch: a copied node is private and later
/// writes in the same batch change it in place) and publishes it with one swap, so
///   - lookups and snapshot saves never wait for a batch to be applied and always see a state between
///     batches (never half a batch);
///   - `prepare_snapshot` is an O(1) clone of the current version, however large the state.
///
/// A `RwLock<BTreeMap>` would make lookups wait for whole batches and `prepare_snapshot` copy every key.
/// The B+ tree replaced `rpds`'s red-black tree, whose path copying allocated ~log2(n) nodes per put
/// (docs/performance.md, "MemKv on a B+ tree"); `imbl` is MPL-2.0, used unmodified from crates.io.
pub struct MemKv {
    /// The published state. Invariant: only replaced whole, by `update` or `recover_from_snapshot`.
    current: RwLock<State>,
    /// Serialises writers (the engine never runs two at once; this makes it true regardless).
    writer: Mutex<()>,
}

impl Default for MemKv {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.view();
        f.debug_struct("MemKv").field("keys", &s.map.len()).field("applied", &s.applied).finish()
    }
}

/// What [`MemKv`]'s `prepare_snapshot` returns: a version of the state (a cheap persistent-map clone).
pub struct MemSnapshot(State);

impl MemKv {
    /// An empty store that has applied nothing.
    #[must_use]
    pub fn new() -> Self {
        Self { current: RwLock::new(State::default()), writer: Mutex::new(()) }
    }

    /// The current version (O(1)).
    fn view(&self) -> State {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn publish(&self, next: State) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
    }

    /// The index of the last entry applied (or recovered from a snapshot).
    #[must_use]
    pub fn applied_index(&self) -> LogIndex {
        LogIndex(self.view().applied)
    }

    /// The number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.view().map.len()
    }

    /// Whether there are no keys.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReadStore for State {
    type Error = Infallible;

    fn get(&self, key: &[u8]) -> Result<Option<(Bytes, KeyMeta)>, Infallible> {
        Ok(self.map.get(key).map(|s| (s.value.clone(), s.meta)))
    }

    fn scan(&self, bounds: &Bounds, scan: &mut Scan) -> Result<(), Infallible> {
        for (key, s) in self.map.range::<_, [u8]>(bounds.as_range()) {
            if !scan.admit(key.len(), s.value.len()) {
                break;
            }
            let value = if scan.keys_only() { Bytes::new() } else { s.value.clone() };
            scan.push(KeyValue { key: key.clone(), value, meta: s.meta });
        }
        Ok(())
    }
}

/// A key to store in the map, in its own allocation. A key decoded from a command is a slice of the
/// command's buffer, and the map keeps a key across overwrites of its value ([`WriteStore::put`]
/// updates in place): a slice would pin the first put's whole buffer, value included, for as long as
/// the key exists.
fn own_key(key: &[u8]) -> Bytes {
    Bytes::copy_from_slice(key)
}

impl WriteStore for State {
    fn insert(&mut self, key: &Bytes, value: &Bytes, meta: KeyMeta) -> Result<(), Infallible> {
        let stored = Stored { value: value.clone(), meta };
        self.map.insert(own_key(key), stored);
        Ok(())
    }

    /// One descent for an existing key (the common overwrite): its value and metadata change in place
    /// and the stored key is kept. A new key is stored as its own copy ([`own_key`]).
    fn put(
        &mut self,
        key: Bytes,
        value: Bytes,
        index: u64,
    ) -> Result<(Option<KeyMeta>, KeyMeta), Infallible> {
        if let Some(stored) = self.map.get_mut(&key[..]) {
            let prev = stored.meta;
            let new = KeyMeta::next(Some(prev), index);
            *stored = Stored { value, meta: new };
            return Ok((Some(prev), new));
        }
        let new = KeyMeta::next(None, index);
        self.map.insert(own_key(&key), Stored { value, meta: new });
        Ok((None, new))
    }

    fn remove(&mut self, key: &[u8]) -> Result<Option<KeyMeta>, Infallible> {
        Ok(self.map.remove(key).map(|s| s.meta))
    }

    fn remove_range(&mut self, bounds: &Bounds) -> Result<u64, Infallible> {
        let keys: Vec<Bytes> = self.map.range::<_, [u8]>(bounds.as_range()).map(|(k, _)| k.clone()).collect();
        for k in &keys {
            self.map.remove(&k[..]);
        }
        Ok(keys.len() as u64)
    }
}

fn write_snapshot(s: &State, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError> {
    let mut out = SnapshotWriter::new(w, s.applied)?;
    for (n, (key, stored)) in (1..).zip(s.map.iter()) {
        check_stop(stop, n)?;
        out.record(key, &stored.meta, &stored.value)?;
    }
    out.finish()?;
    Ok(())
}

/// Builds a complete state from a snapshot stream; nothing is published unless the trailer verifies.
fn read_snapshot(r: &mut dyn Read, stop: &Stop) -> Result<State, SmError> {
    let mut reader = SnapshotReader::new(r).map_err(snapshot_error)?;
    let mut map = OrdMap::new();
    let mut n = 0u64;
    while let Some(kv) = reader.next_record().map_err(snapshot_error)? {
        n += 1;
        check_stop(stop, n)?;
        let stored = Stored { value: kv.value, meta: kv.meta };
        map.insert(kv.key, stored);
    }
    Ok(State { map, applied: reader.applied() })
}

impl ConcurrentStateMachine for MemKv {
    fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = self.view();
        for e in entries.iter_mut() {
            let Ok(result) = semantics::apply(&mut next, e.index.0, &e.cmd);
            e.result = result;
            next.applied = e.index.0;
        }
        self.publish(next);
        Ok(())
    }

    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError> {
        match semantics::lookup(&self.view(), query) {
            Ok(b) => Ok(b),
            Err(LookupError::Decode(e)) => Err(SmError::InvalidRequest(e.to_string())),
            Err(LookupError::Store(never)) => match never {},
        }
    }

    type Snapshot = MemSnapshot;

    fn prepare_snapshot(&self) -> Result<MemSnapshot, SmError> {
        Ok(MemSnapshot(self.view()))
    }

    fn save_snapshot(&self, prepared: MemSnapshot, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError> {
        write_snapshot(&prepared.0, w, stop)
    }

    fn recover_from_snapshot(&self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let next = read_snapshot(r, stop)?;
        self.publish(next);
        Ok(())
    }
}

impl StateMachine for MemKv {
    fn update(&mut self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        ConcurrentStateMachine::update(self, entries)
    }

    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError> {
        ConcurrentStateMachine::lookup(self, query)
    }

    fn save_snapshot(&self, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError> {
        write_snapshot(&self.view(), w, stop)
    }

    fn recover_from_snapshot(&mut self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError> {
        ConcurrentStateMachine::recover_from_snapshot(self, r, stop)
    }
}
