//! [`DiskKv`]: the on-disk KV state machine, on redb.
//!
//! The database file holds two tables:
//! - `kv`: key -> `version u64 | mod_index u64 | create_index u64 | value bytes` (little-endian);
//! - `meta`: `"format"` -> [`DISK_FORMAT`], `"applied_index"` -> the last applied log index;
//! - `results`: log index -> `value u64 | data bytes`, the result of each of the last
//!   [`DiskKvOptions::results_kept`] entries applied (so a session retry after a restart gets the result
//!   of an entry the engine does not apply again; see [`OnDiskStateMachine::result_of`]). Files written
//!   before this table existed gain it on first use.
//!
//! Invariant: `applied_index` is written in the same write transaction as the effects of the entries up
//! to it, so after any crash the database holds exactly the state at `applied_index`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use drakkar_raft::LogIndex;
use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};

use super::KvError;
use super::command::{Bounds, KeyMeta, KeyValue};
use super::semantics::{self, LookupError, ReadStore, Scan, WriteStore};
use super::snapshot::{SnapshotReader, SnapshotWriter};
use super::{check_stop, snapshot_error};
use drakkar::statemachine::{OnDiskStateMachine, SmEntry, SmError, SmResult, Stop};

/// The on-disk layout version stored under `meta["format"]`.
pub const DISK_FORMAT: u64 = 1;

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("results");
/// Default of [`DiskKvOptions::results_kept`].
pub const RESULTS_KEPT: u64 = 100_000;
const META_FORMAT: &str = "format";
const META_APPLIED: &str = "applied_index";
/// Bytes of metadata before the value in a `kv` record.
const META_LEN: usize = 24;

/// Tuning for a [`DiskKv`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct DiskKvOptions {
    /// Commit every `update` batch durably (fsync per batch) instead of deferring durability to
    /// `sync`. Slower; only useful when nothing calls `sync`.
    pub durable_batches: bool,
    /// redb's page cache size in bytes (None: redb's default).
    pub cache_size: Option<usize>,
    /// Results of this many latest entries are kept (None: [`RESULTS_KEPT`]). After a restart the engine
    /// asks for the results of the entries since its latest snapshot: keep more than the group's
    /// snapshot interval (`GroupConfig::snapshot_entries`).
    pub results_kept: Option<u64>,
}

/// The on-disk KV state machine: the same commands, queries, results and key metadata as
/// [`MemKv`](super::MemKv), stored in a redb database file. Implements [`OnDiskStateMachine`].
///
/// Durability: redb 4 offers `Durability::Immediate` (fsync at commit) and `Durability::None` (visible
/// to readers at once, made durable by the next Immediate commit). Each `update` batch is one write
/// transaction committed with `None` (unless [`DiskKvOptions::durable_batches`]); [`sync`] commits an
/// empty transaction with `Immediate`, which makes every earlier batch durable. After a crash, `open`
/// returns the applied index of the last durable commit and the engine replays the log from there:
/// the engine must keep the log after the last `sync` (Dragonboat's on-disk contract).
/// `recover_from_snapshot` always commits durably, since the log before a snapshot may be gone.
///
/// Concurrency: redb allows one writer and any number of readers, each reader on a consistent
/// committed version: lookups and snapshot saves run concurrently with `update`.
///
/// [`sync`]: OnDiskStateMachine::sync
pub struct DiskKv {
    path: PathBuf,
    options: DiskKvOptions,
    /// Set once by `open`.
    db: OnceLock<Database>,
    /// Serialises `open` calls.
    opening: Mutex<()>,
    /// Whether a non-durable commit may have happened since the last durable one. Set before commits.
    unsynced: AtomicBool,
}

impl std::fmt::Debug for DiskKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskKv").field("path", &self.path).field("open", &self.db.get().is_some()).finish()
    }
}

/// What [`DiskKv`]'s `prepare_snapshot` returns: a read transaction, i.e. a consistent committed version.
pub struct DiskSnapshot(ReadTransaction);

impl DiskKv {
    /// A store at `path` (a file, created by `open` if missing). Nothing is touched before `open`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_options(path, DiskKvOptions::default())
    }

    /// Like [`DiskKv::new`], with options.
    pub fn with_options(path: impl Into<PathBuf>, options: DiskKvOptions) -> Self {
        Self {
            path: path.into(),
            options,
            db: OnceLock::new(),
            opening: Mutex::new(()),
            unsynced: AtomicBool::new(false),
        }
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> Result<&Database, KvError> {
        self.db.get().ok_or(KvError::NotOpen)
    }

    /// Opens (or creates) the database and returns the applied index. Idempotent.
    pub fn open_db(&self) -> Result<LogIndex, KvError> {
        let _opening = self.opening.lock().unwrap_or_else(PoisonError::into_inner);
        if self.db.get().is_none() {
            let mut builder = Database::builder();
            if let Some(bytes) = self.options.cache_size {
                builder.set_cache_size(bytes);
            }
            let db = builder.create(&self.path).map_err(redb::Error::from)?;
            init_tables(&db)?;
            // Under `opening`, and `db` was empty: cannot already be set.
            let _ = self.db.set(db);
        }
        self.applied_index()
    }

    /// The index of the last entry applied (committed, possibly not yet durable).
    pub fn applied_index(&self) -> Result<LogIndex, KvError> {
        let txn = self.db()?.begin_read().map_err(redb::Error::from)?;
        let meta = txn.open_table(META).map_err(redb::Error::from)?;
        Ok(LogIndex(read_u64(&meta, META_APPLIED)?.unwrap_or(0)))
    }

    fn begin_write(&self, durability: Durability) -> Result<WriteTransaction, KvError> {
        let mut txn = self.db()?.begin_write().map_err(redb::Error::from)?;
        txn.set_durability(durability).map_err(redb::Error::from)?;
        Ok(txn)
    }

    fn commit(&self, txn: WriteTransaction, durable: bool) -> Result<(), KvError> {
        if !durable {
            self.unsynced.store(true, Ordering::SeqCst);
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }

    fn batch_durability(&self) -> Durability {
        if self.options.durable_batches { Durability::Immediate } else { Durability::None }
    }

    fn update_batch(&self, entries: &mut [SmEntry]) -> Result<(), KvError> {
        let Some(last) = entries.last().map(|e| e.index.0) else {
            return Ok(());
        };
        let durability = self.batch_durability();
        let txn = self.begin_write(durability)?;
        {
            let mut store = DiskStore(txn.open_table(KV).map_err(redb::Error::from)?);
            let mut results = txn.open_table(RESULTS).map_err(redb::Error::from)?;
            let mut rec = Vec::new();
            for e in entries.iter_mut() {
                e.result = semantics::apply(&mut store, e.index.0, &e.cmd)?;
                rec.clear();
                rec.extend_from_slice(&e.result.value.to_le_bytes());
                rec.extend_from_slice(&e.result.data);
                results.insert(e.index.0, &rec[..]).map_err(redb::Error::from)?;
            }
            let kept = self.options.results_kept.unwrap_or(RESULTS_KEPT).max(1);
            let cutoff = last.saturating_sub(kept - 1);
            // Drains every result below the window (read them all: the iterator removes as it goes).
            for item in results.extract_from_if(..cutoff, |_, _| true).map_err(redb::Error::from)? {
                item.map_err(redb::Error::from)?;
            }
            let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
            meta.insert(META_APPLIED, last).map_err(redb::Error::from)?;
        }
        self.commit(txn, matches!(durability, Durability::Immediate))
    }

    fn recover(&self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError> {
        let txn = self.begin_write(Durability::Immediate)?;
        // On any error `txn` is dropped uncommitted (aborted): the previous state stays.
        {
            txn.delete_table(KV).map_err(kv_err)?;
            // Results of entries before the snapshot are never asked for again.
            txn.delete_table(RESULTS).map_err(kv_err)?;
            txn.open_table(RESULTS).map_err(kv_err)?;
            let mut kv = txn.open_table(KV).map_err(kv_err)?;
            let mut reader = SnapshotReader::new(r).map_err(snapshot_error)?;
            let mut rec = Vec::new();
            let mut n = 0u64;
            while let Some(item) = reader.next_record().map_err(snapshot_error)? {
                n += 1;
                check_stop(stop, n)?;
                encode_record(&mut rec, &item.meta, &item.value);
                kv.insert(&item.key[..], &rec[..]).map_err(kv_err)?;
            }
            let mut meta = txn.open_table(META).map_err(kv_err)?;
            meta.insert(META_APPLIED, reader.applied()).map_err(kv_err)?;
        }
        self.commit(txn, true)?;
        Ok(())
    }

    fn save(&self, txn: &ReadTransaction, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError> {
        let meta = txn.open_table(META).map_err(kv_err)?;
        let applied = read_u64(&meta, META_APPLIED)?.unwrap_or(0);
        let kv = txn.open_table(KV).map_err(kv_err)?;
        let mut out = SnapshotWriter::new(w, applied)?;
        for (n, item) in (1..).zip(kv.iter().map_err(kv_err)?) {
            check_stop(stop, n)?;
            let (k, v) = item.map_err(kv_err)?;
            let (meta, value) = decode_record(k.value(), v.value())?;
            out.record(k.value(), &meta, value)?;
        }
        out.finish()?;
        Ok(())
    }
}

fn kv_err<E: Into<redb::Error>>(e: E) -> SmError {
    SmError::from(KvError::from(e.into()))
}

/// Creates the tables and format marker on a new database; checks the format of an existing one.
fn init_tables(db: &Database) -> Result<(), KvError> {
    let txn = db.begin_write().map_err(redb::Error::from)?;
    {
        let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
        match read_u64(&meta, META_FORMAT)? {
            Some(DISK_FORMAT) => {}
            Some(found) => {
                return Err(KvError::Format { found, expected: DISK_FORMAT });
            }
            None => {
                meta.insert(META_FORMAT, DISK_FORMAT).map_err(redb::Error::from)?;
            }
        }
        txn.open_table(KV).map_err(redb::Error::from)?;
        txn.open_table(RESULTS).map_err(redb::Error::from)?;
    }
    txn.commit().map_err(redb::Error::from)?;
    Ok(())
}

fn read_u64(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<Option<u64>, KvError> {
    Ok(table.get(key).map_err(redb::Error::from)?.map(|g| g.value()))
}

fn encode_record(out: &mut Vec<u8>, meta: &KeyMeta, value: &[u8]) {
    out.clear();
    out.reserve(META_LEN + value.len());
    out.extend_from_slice(&meta.version.to_le_bytes());
    out.extend_from_slice(&meta.mod_index.to_le_bytes());
    out.extend_from_slice(&meta.create_index.to_le_bytes());
    out.extend_from_slice(value);
}

fn decode_meta(key: &[u8], rec: &[u8]) -> Result<KeyMeta, KvError> {
    let field = |i: usize| -> Option<u64> {
        let b = rec.get(i * 8..i * 8 + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    match (field(0), field(1), field(2)) {
        (Some(version), Some(mod_index), Some(create_index)) => {
            Ok(KeyMeta { version, mod_index, create_index })
        }
        _ => Err(KvError::CorruptRecord { key: Bytes::copy_from_slice(key) }),
    }
}

fn decode_record<'a>(key: &[u8], rec: &'a [u8]) -> Result<(KeyMeta, &'a [u8]), KvError> {
    let meta = decode_meta(key, rec)?;
    Ok((meta, &rec[META_LEN..])) // decode_meta checked rec.len() >= META_LEN
}

/// A `kv` table as a store: a write table inside `update`, a read-only one inside `lookup`.
struct DiskStore<T>(T);

impl<T: ReadableTable<&'static [u8], &'static [u8]>> ReadStore for DiskStore<T> {
    type Error = KvError;

    fn get(&self, key: &[u8]) -> Result<Option<(Bytes, KeyMeta)>, KvError> {
        let Some(g) = self.0.get(key).map_err(redb::Error::from)? else {
            return Ok(None);
        };
        let (meta, value) = decode_record(key, g.value())?;
        Ok(Some((Bytes::copy_from_slice(value), meta)))
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<KeyMeta>, KvError> {
        let Some(g) = self.0.get(key).map_err(redb::Error::from)? else {
            return Ok(None);
        };
        Ok(Some(decode_meta(key, g.value())?))
    }

    fn scan(&self, bounds: &Bounds, scan: &mut Scan) -> Result<(), KvError> {
        let range = self.0.range::<&[u8]>(bounds.as_range()).map_err(redb::Error::from)?;
        for item in range {
            let (k, v) = item.map_err(redb::Error::from)?;
            let (key, rec) = (k.value(), v.value());
            let (meta, value) = decode_record(key, rec)?;
            if !scan.admit(key.len(), value.len()) {
                break;
            }
            let value = if scan.keys_only() { Bytes::new() } else { Bytes::copy_from_slice(value) };
            scan.push(KeyValue { key: Bytes::copy_from_slice(key), value, meta });
        }
        Ok(())
    }
}

impl WriteStore for DiskStore<Table<'_, &'static [u8], &'static [u8]>> {
    fn insert(&mut self, key: &Bytes, value: &Bytes, meta: KeyMeta) -> Result<(), KvError> {
        let mut rec = Vec::new();
        encode_record(&mut rec, &meta, value);
        self.0.insert(&key[..], &rec[..]).map_err(redb::Error::from)?;
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<Option<KeyMeta>, KvError> {
        match self.0.remove(key).map_err(redb::Error::from)? {
            Some(g) => Ok(Some(decode_meta(key, g.value())?)),
            None => Ok(None),
        }
    }

    fn remove_range(&mut self, bounds: &Bounds) -> Result<u64, KvError> {
        let mut n = 0u64;
        // Every item read from the iterator is removed; read them all.
        for item in
            self.0.extract_from_if::<&[u8], _>(bounds.as_range(), |_, _| true).map_err(redb::Error::from)?
        {
            item.map_err(redb::Error::from)?;
            n += 1;
        }
        Ok(n)
    }
}

impl OnDiskStateMachine for DiskKv {
    fn open(&self, _stop: &Stop) -> Result<LogIndex, SmError> {
        Ok(self.open_db()?)
    }

    fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        Ok(self.update_batch(entries)?)
    }

    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError> {
        let txn = self.db()?.begin_read().map_err(kv_err)?;
        let store: DiskStore<ReadOnlyTable<&[u8], &[u8]>> = DiskStore(txn.open_table(KV).map_err(kv_err)?);
        match semantics::lookup(&store, query) {
            Ok(b) => Ok(b),
            Err(LookupError::Decode(e)) => Err(SmError::InvalidRequest(e.to_string())),
            Err(LookupError::Store(e)) => Err(e.into()),
        }
    }

    fn sync(&self) -> Result<(), SmError> {
        // Cleared before the durable commit: a batch committed after this point sets it again.
        if !self.unsynced.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let txn = self.begin_write(Durability::Immediate);
        let res = txn.and_then(|txn| self.commit(txn, true));
        if res.is_err() {
            self.unsynced.store(true, Ordering::SeqCst);
        }
        Ok(res?)
    }

    type Snapshot = DiskSnapshot;

    fn prepare_snapshot(&self) -> Result<DiskSnapshot, SmError> {
        let txn = self.db()?.begin_read().map_err(kv_err)?;
        Ok(DiskSnapshot(txn))
    }

    fn save_snapshot(&self, prepared: DiskSnapshot, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError> {
        self.save(&prepared.0, w, stop)
    }

    fn recover_from_snapshot(&self, r: &mut dyn Read, stop: &Stop) -> Result<(), SmError> {
        self.recover(r, stop)
    }

    fn result_of(&self, index: LogIndex) -> Result<Option<SmResult>, SmError> {
        let txn = self.db()?.begin_read().map_err(kv_err)?;
        let results = txn.open_table(RESULTS).map_err(kv_err)?;
        let Some(g) = results.get(index.0).map_err(kv_err)? else { return Ok(None) };
        let rec = g.value();
        let Some((value, data)) = rec.split_first_chunk::<8>() else {
            return Err(SmError::Other(format!("kept result of entry {index}: a truncated record")));
        };
        Ok(Some(SmResult { value: u64::from_le_bytes(*value), data: Bytes::copy_from_slice(data) }))
    }
}
