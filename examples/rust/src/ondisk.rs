//! ondisk: a key-value store on the on-disk kind of state machine ([`OnDiskStateMachine`]), kept in a
//! redb database file. Its state survives a restart: `open` returns the index it had applied and the
//! engine applies only what follows, and reads no snapshot back. A new replica gets the whole state
//! streamed from `save_snapshot`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Result, ensure};
use bytes::Bytes;
use drakkar::statemachine::{OnDiskStateMachine, SmEntry, SmError, SmResult, Stop};
use drakkar::transport::InProcessNetwork;
use drakkar::{
    Event, GroupConfig, GroupId, LogIndex, MemberRole, MembershipChange, NodeHost, ReplicaId, StartMode,
    StateMachineBox,
};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use crate::common::{self, Command, TIMEOUT, read_field, read_pair, write_field};

/// The group the example runs.
pub const GROUP: GroupId = GroupId(1);

const KV: TableDefinition<&str, &str> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const APPLIED: &str = "applied";

fn db_err(e: impl std::fmt::Display) -> SmError {
    SmError::Other(format!("redb: {e}"))
}

// ANCHOR: state_machine
/// A key-value store in a redb file. The table `kv` holds the data; `meta["applied"]` the index of the
/// last entry applied, written in the same transaction as the entry's effects (so after a crash the file
/// holds exactly the state at that index).
pub struct DiskStore {
    path: PathBuf,
    db: OnceLock<Database>,
    /// The index `open` returned.
    opened_at: AtomicU64,
    /// Entries `update` received at or below `opened_at` (the engine never sends any).
    replayed: AtomicU64,
}

impl DiskStore {
    /// A store in the file at `path` (created by `open` if absent).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DiskStore {
            path: path.into(),
            db: OnceLock::new(),
            opened_at: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
        }
    }

    fn db(&self) -> Result<&Database, SmError> {
        self.db.get().ok_or_else(|| SmError::Other("not open".into()))
    }

    /// The index of the last entry applied, as the file records it.
    pub fn applied_index(&self) -> Result<u64, SmError> {
        Self::applied(&self.db()?.begin_read().map_err(db_err)?)
    }

    fn applied(txn: &ReadTransaction) -> Result<u64, SmError> {
        let meta = txn.open_table(META).map_err(db_err)?;
        Ok(meta.get(APPLIED).map_err(db_err)?.map(|v| v.value()).unwrap_or(0))
    }
}

impl OnDiskStateMachine for DiskStore {
    fn open(&self, _stop: &Stop) -> Result<LogIndex, SmError> {
        let db = Database::create(&self.path).map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(KV).map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        let applied = Self::applied(&db.begin_read().map_err(db_err)?)?;
        self.opened_at.store(applied, Ordering::Release);
        let _ = self.db.set(db);
        Ok(LogIndex(applied))
    }

    fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        let txn = self.db()?.begin_write().map_err(db_err)?;
        {
            let mut kv = txn.open_table(KV).map_err(db_err)?;
            for e in entries.iter_mut() {
                if e.index.0 <= self.opened_at.load(Ordering::Acquire) {
                    self.replayed.fetch_add(1, Ordering::Relaxed);
                }
                e.result = match Command::parse(&e.cmd) {
                    Some(Command::Set(k, v)) => {
                        kv.insert(k.as_str(), v.as_str()).map_err(db_err)?;
                        SmResult { value: e.index.0, data: Bytes::new() }
                    }
                    Some(Command::Del(k)) => {
                        let existed = kv.remove(k.as_str()).map_err(db_err)?.is_some();
                        SmResult { value: u64::from(existed), data: Bytes::new() }
                    }
                    Some(Command::Incr(k)) => {
                        let old =
                            kv.get(k.as_str()).map_err(db_err)?.and_then(|v| v.value().parse::<u64>().ok());
                        let n = old.unwrap_or(0) + 1;
                        kv.insert(k.as_str(), n.to_string().as_str()).map_err(db_err)?;
                        SmResult { value: n, data: Bytes::new() }
                    }
                    None => SmResult { value: 0, data: Bytes::from_static(b"ERR unknown command") },
                };
            }
            if let Some(last) = entries.last() {
                txn.open_table(META).map_err(db_err)?.insert(APPLIED, last.index.0).map_err(db_err)?;
            }
        }
        // redb's default durability: the commit is on disk when it returns.
        txn.commit().map_err(db_err)
    }

    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let kv = txn.open_table(KV).map_err(db_err)?;
        if query == b"*" {
            let mut all = String::new();
            for row in kv.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                all.push_str(&format!("{}={}\n", k.value(), v.value()));
            }
            return Ok(Bytes::from(all));
        }
        let key = std::str::from_utf8(query).map_err(|_| SmError::InvalidRequest("not UTF-8".into()))?;
        Ok(kv.get(key).map_err(db_err)?.map(|v| Bytes::from(v.value().to_string())).unwrap_or_default())
    }

    fn sync(&self) -> Result<(), SmError> {
        // Every `update` committed durably already.
        Ok(())
    }

    type Snapshot = ReadTransaction;

    fn prepare_snapshot(&self) -> Result<ReadTransaction, SmError> {
        // A read transaction is a consistent view, however many updates commit meanwhile.
        self.db()?.begin_read().map_err(db_err)
    }

    fn save_snapshot(&self, view: ReadTransaction, w: &mut dyn Write, stop: &Stop) -> Result<(), SmError> {
        write_field(w, &Self::applied(&view)?.to_le_bytes())?;
        for row in view.open_table(KV).map_err(db_err)?.iter().map_err(db_err)? {
            if stop.is_set() {
                return Err(SmError::Stopped);
            }
            let (k, v) = row.map_err(db_err)?;
            write_field(w, k.value().as_bytes())?;
            write_field(w, v.value().as_bytes())?;
        }
        Ok(())
    }

    fn recover_from_snapshot(&self, r: &mut dyn Read, _stop: &Stop) -> Result<(), SmError> {
        let index = read_field(r)?.and_then(|b| <[u8; 8]>::try_from(b).ok());
        let index = u64::from_le_bytes(index.ok_or_else(|| SmError::Other("no applied index".into()))?);
        let txn = self.db()?.begin_write().map_err(db_err)?;
        txn.delete_table(KV).map_err(db_err)?;
        {
            let mut kv = txn.open_table(KV).map_err(db_err)?;
            while let Some((k, v)) = read_pair(r)? {
                kv.insert(k.as_str(), v.as_str()).map_err(db_err)?;
            }
            txn.open_table(META).map_err(db_err)?.insert(APPLIED, index).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }
}
// ANCHOR_END: state_machine

/// What the one-process run proved.
#[derive(Debug)]
pub struct Report {
    /// The applied index each founding replica's file recorded when it was closed.
    pub applied_before: Vec<u64>,
    /// The index each one's `open` returned after the restart (the same).
    pub opened_at: Vec<u64>,
    /// Entries handed again to a reopened store at or below its `open` index (must be 0).
    pub replayed: u64,
    /// Replica 4, added after the log was compacted, installed a snapshot streamed from the leader.
    pub joined_by_snapshot: bool,
    /// Every replica's whole state at the end (replica 4's included; all equal).
    pub states: Vec<String>,
    /// The replica removed at the end, and the voters left.
    pub removed: ReplicaId,
    /// The voters after the removal.
    pub voters: Vec<ReplicaId>,
}

/// A snapshot every 20 entries keeping 5 behind it: a replica added later cannot be sent the log from
/// the start, it needs the state.
pub fn group_config() -> GroupConfig {
    GroupConfig { snapshot_entries: 20, compaction_overhead: 5, ..GroupConfig::default() }
}

/// Writes `n` keys starting at `from` through `host`.
async fn write(host: &NodeHost, from: u64, n: u64) -> Result<()> {
    for i in from..from + n {
        host.propose(GROUP, Command::Set(format!("key-{i}"), format!("value-{i}")).encode(), TIMEOUT).await?;
    }
    Ok(())
}

/// Three replicas on redb files: writes, a restart that reopens the files, a fourth replica that catches
/// up by snapshot, then a removal.
pub async fn run(dir: &Path) -> Result<Report> {
    let net = InProcessNetwork::new();
    let store = |id: u64| Arc::new(DiskStore::new(dir.join(format!("store-{id}.redb"))));
    let start = |host: &NodeHost, sm: Arc<DiskStore>, id: u64, mode: StartMode| {
        host.start_replica(GROUP, ReplicaId(id), mode, StateMachineBox::on_disk(sm), group_config())
    };
    let founding = || StartMode::Founding(common::members(common::local_address));
    let (mut hosts, mut stores) = (Vec::new(), Vec::new());
    for id in 1..=3 {
        let host = common::start_local_host(&net, dir, id)?;
        let sm = store(id);
        start(&host, sm.clone(), id, founding())?;
        hosts.push(host);
        stores.push(sm);
    }
    write(&hosts[0], 0, 100).await?;
    common::wait_all_applied(&hosts, GROUP).await?;
    for h in &hosts {
        h.close();
    }
    let applied_before = stores.iter().map(|s| s.applied_index()).collect::<Result<Vec<u64>, _>>()?;
    drop((hosts, stores));
    println!("100 writes applied by all three (applied indexes {applied_before:?}); closed");

    // Reopen: the stores keep their files; each `open` says where it stopped.
    let (mut hosts, mut stores) = (Vec::new(), Vec::new());
    for id in 1..=3 {
        let host = common::start_local_host(&net, dir, id)?;
        let sm = store(id);
        start(&host, sm.clone(), id, founding())?;
        hosts.push(host);
        stores.push(sm);
    }
    common::wait_for_leader(&hosts[0], GROUP).await?;
    write(&hosts[1], 100, 20).await?;
    common::wait_all_applied(&hosts, GROUP).await?;
    let opened_at: Vec<u64> = stores.iter().map(|s| s.opened_at.load(Ordering::Acquire)).collect();
    let replayed = stores.iter().map(|s| s.replayed.load(Ordering::Acquire)).sum();
    println!("reopened at {opened_at:?}; entries applied again: {replayed}");

    // ANCHOR: add_replica
    // A new replica: first the group records it (on the leader), then its NodeHost starts it as joining.
    let host4 = common::start_local_host(&net, dir, 4)?;
    let leader = common::leader_host(&hosts, GROUP).await?;
    let add = MembershipChange::Add {
        replica: ReplicaId(4),
        address: common::local_address(4),
        role: MemberRole::Voter,
    };
    leader.change_membership(GROUP, add, 0)?.wait(TIMEOUT).await?;
    let mut events = host4.events();
    start(&host4, store(4), 4, StartMode::Joining)?;
    // ANCHOR_END: add_replica
    hosts.push(host4);
    common::wait_all_applied(&hosts, GROUP).await?;
    let mut joined_by_snapshot = false;
    while let Ok(e) = events.try_recv() {
        joined_by_snapshot |= matches!(e, Event::SnapshotReceived { group, .. } if group == GROUP);
    }
    println!("replica 4 joined; caught up by a streamed snapshot: {joined_by_snapshot}");
    let mut states = Vec::new();
    for h in &hosts {
        states.push(common::text(&h.stale_read(GROUP, b"*")?));
    }

    // ANCHOR: remove_replica
    let leader = common::wait_for_leader(&hosts[0], GROUP).await?;
    let removed = if leader == ReplicaId(3) { ReplicaId(2) } else { ReplicaId(3) };
    let leader_host = common::leader_host(&hosts, GROUP).await?;
    leader_host.change_membership(GROUP, MembershipChange::Remove(removed), 0)?.wait(TIMEOUT).await?;
    // Its id is never used again in this group; its data may go.
    hosts[usize::try_from(removed.0)? - 1].remove_data(GROUP).await?;
    // ANCHOR_END: remove_replica
    let voters: Vec<ReplicaId> = leader_host.membership(GROUP)?.membership.voters.iter().copied().collect();
    println!("replica {removed} removed; voters now {voters:?}");
    for h in &hosts {
        h.close();
    }
    ensure!(replayed == 0, "a reopened store was handed entries it had applied");
    Ok(Report { applied_before, opened_at, replayed, joined_by_snapshot, states, removed, voters })
}
