//! concurrent: the concurrent kind of state machine ([`ConcurrentStateMachine`]): reads (and snapshot
//! saves) run while a batch of updates is applied, on a persistent map whose clones are cheap.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Result, ensure};
use bytes::Bytes;
use drakkar::statemachine::{ConcurrentStateMachine, SmEntry, SmError, SmResult, Stop};
use drakkar::transport::InProcessNetwork;
use drakkar::{GroupConfig, GroupId, ReplicaId, StartMode, StateMachineBox};
use imbl::OrdMap;

use crate::common::{self, Command, TIMEOUT, read_pair, write_field};

/// The group the example runs.
pub const GROUP: GroupId = GroupId(1);

// ANCHOR: state_machine
/// A key-value store whose readers never wait for a batch being applied: `update` applies the batch to
/// a copy of the map (a persistent map: the copy shares everything unchanged) and publishes it at the
/// end; lookups read the published map.
pub struct Board {
    map: RwLock<OrdMap<String, String>>,
    /// Set while `update` runs (for the example's report only).
    applying: AtomicBool,
    /// Pretends each entry takes this long to apply (a stand-in for real work).
    work: Duration,
}

impl Board {
    /// An empty board whose entries take `work` each to apply.
    pub fn new(work: Duration) -> Self {
        Board { map: RwLock::new(OrdMap::new()), applying: AtomicBool::new(false), work }
    }

    fn published(&self) -> OrdMap<String, String> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn publish(&self, map: OrdMap<String, String>) {
        *self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner) = map;
    }
}

impl ConcurrentStateMachine for Board {
    fn update(&self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        self.applying.store(true, Ordering::Release);
        let mut next = self.published();
        for e in entries.iter_mut() {
            std::thread::sleep(self.work);
            e.result = match Command::parse(&e.cmd) {
                Some(Command::Set(k, v)) => {
                    next.insert(k, v);
                    SmResult { value: e.index.0, data: Bytes::new() }
                }
                Some(Command::Del(k)) => {
                    SmResult { value: u64::from(next.remove(&k).is_some()), data: Bytes::new() }
                }
                Some(Command::Incr(k)) => {
                    let n = next.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
                    next.insert(k, n.to_string());
                    SmResult { value: n, data: Bytes::new() }
                }
                None => SmResult { value: 0, data: Bytes::from_static(b"ERR unknown command") },
            };
        }
        self.publish(next);
        self.applying.store(false, Ordering::Release);
        Ok(())
    }

    fn lookup(&self, query: &[u8]) -> Result<Bytes, SmError> {
        let map = self.published();
        if query == b"*" {
            return Ok(Bytes::from(map.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>()));
        }
        let key = std::str::from_utf8(query).map_err(|_| SmError::InvalidRequest("not UTF-8".into()))?;
        Ok(map.get(key).map(|v| Bytes::from(v.clone())).unwrap_or_default())
    }

    type Snapshot = OrdMap<String, String>;

    fn prepare_snapshot(&self) -> Result<Self::Snapshot, SmError> {
        // Called between updates: the published map is the state at the snapshot's index.
        Ok(self.published())
    }

    fn save_snapshot(&self, map: Self::Snapshot, w: &mut dyn Write, _stop: &Stop) -> Result<(), SmError> {
        for (k, v) in &map {
            write_field(w, k.as_bytes())?;
            write_field(w, v.as_bytes())?;
        }
        Ok(())
    }

    fn recover_from_snapshot(&self, r: &mut dyn Read, _stop: &Stop) -> Result<(), SmError> {
        let mut map = OrdMap::new();
        while let Some((k, v)) = read_pair(r)? {
            map.insert(k, v);
        }
        self.publish(map);
        Ok(())
    }
}
// ANCHOR_END: state_machine

/// What the one-process run proved.
#[derive(Debug)]
pub struct Report {
    /// Stale reads on replica 1 answered while its state machine was applying a batch (more than 0).
    pub reads_during_apply: u64,
    /// Each replica's whole state at the end (all equal, 40 keys).
    pub states: Vec<String>,
}

/// Three replicas whose entries take 5 ms each to apply; 40 writes in flight at once while a reader
/// polls replica 1.
pub async fn run(dir: &Path) -> Result<Report> {
    let net = InProcessNetwork::new();
    let mut hosts = Vec::new();
    let mut boards = Vec::new();
    for id in 1..=3 {
        let host = common::start_local_host(&net, dir, id)?;
        let board = Arc::new(Board::new(Duration::from_millis(5)));
        let founding = StartMode::Founding(common::members(common::local_address));
        host.start_replica(
            GROUP,
            ReplicaId(id),
            founding,
            StateMachineBox::concurrent(board.clone()),
            GroupConfig::default(),
        )?;
        hosts.push(host);
        boards.push(board);
    }
    common::wait_for_leader(&hosts[0], GROUP).await?;
    // The reader: a thread of its own, reading replica 1 as fast as it can until the writes are done.
    let done = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicU64::new(0));
    let reader = {
        let (host, board, done, during) = (hosts[0].clone(), boards[0].clone(), done.clone(), during.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                let applying = board.applying.load(Ordering::Acquire);
                if host.stale_read(GROUP, b"key-0").is_ok()
                    && applying
                    && board.applying.load(Ordering::Acquire)
                {
                    during.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    let mut writes = Vec::new();
    for i in 0..40 {
        let host = hosts[i % 3].clone();
        let cmd = Command::Set(format!("key-{i}"), format!("value-{i}")).encode();
        writes.push(tokio::spawn(async move { host.propose(GROUP, cmd, TIMEOUT).await }));
    }
    for w in writes {
        w.await??;
    }
    done.store(true, Ordering::Release);
    let _ = reader.join();
    let reads_during_apply = during.load(Ordering::Relaxed);
    println!("40 writes applied; {reads_during_apply} reads were answered while a batch was being applied");
    common::wait_all_applied(&hosts, GROUP).await?;
    let mut states = Vec::new();
    for h in &hosts {
        states.push(common::text(&h.stale_read(GROUP, b"*")?));
        h.close();
    }
    ensure!(reads_during_apply > 0, "no read was served during an update");
    Ok(Report { reads_during_apply, states })
}
