//! The simulated network: a [`Transport`] that only queues. The simulator delivers what is due at each
//! instant of its virtual clock, after a seeded random latency (which reorders), and drops, duplicates and
//! cuts (partitions) traffic with the same seeded RNG. Nothing is delivered from inside `send`, so a
//! NodeHost's round never re-enters another NodeHost.
//!
//! [`SimNetwork::realtime`] runs the same network on the wall clock, for NodeHosts that run in real time
//! (tests with threads): a background thread delivers what is due, and real milliseconds stand for virtual
//! ones. It is the one network with faults for such tests; `drakkar::transport::InProcessNetwork` has none.
//!
//! Every batch may be duplicated, forwarded proposals (`MessageKind::Propose`, a follower handing a
//! client's command to the leader) included: Raft appends a duplicated forward twice, and the apply side
//! must apply it once (plain proposals carry an id, session proposals a series; see `drakkar::session`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use drakkar_raft::Rng;

use drakkar::transport::{MessageBatch, MessageSink, SnapshotDone, SnapshotRequest, Transport};

/// The network's fault settings (all off by default, latency 1 ms).
#[derive(Clone, Debug)]
pub struct NetFaults {
    /// Percent of messages dropped (each message of a batch on its own).
    pub drop_pct: u64,
    /// Percent of batches delivered twice (each copy with its own latency), forwarded proposals included.
    pub dup_pct: u64,
    /// Least latency, in virtual milliseconds (at least 1).
    pub min_latency: u64,
    /// Most latency; batches sent at once arrive in any order within the range.
    pub max_latency: u64,
    /// Groups of addresses that cannot reach each other: traffic between two addresses in different
    /// sets is dropped at delivery. An address in no set reaches everyone.
    pub partition: Vec<BTreeSet<String>>,
}

impl Default for NetFaults {
    fn default() -> Self {
        NetFaults { drop_pct: 0, dup_pct: 0, min_latency: 1, max_latency: 1, partition: Vec::new() }
    }
}

impl NetFaults {
    fn cut(&self, a: &str, b: &str) -> bool {
        let side = |x: &str| self.partition.iter().position(|s| s.contains(x));
        match (side(a), side(b)) {
            (Some(x), Some(y)) => x != y,
            _ => false,
        }
    }
}

enum Cargo {
    Batch(MessageBatch),
    Snapshot(Box<SnapshotRequest>, SnapshotDone),
}

struct Flight {
    from: String,
    to: String,
    cargo: Cargo,
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    /// Batches delivered.
    pub delivered: u64,
    /// Messages dropped (loss or partition).
    pub dropped: u64,
    /// Batches duplicated.
    pub duplicated: u64,
    /// Snapshots streamed successfully.
    pub snapshots: u64,
}

struct State {
    sinks: BTreeMap<String, Weak<dyn MessageSink>>,
    /// In flight, by (due time, send order): delivery order is a function of the seed.
    queue: BTreeMap<(u64, u64), Flight>,
    now: u64,
    /// Real-time mode: the instant of virtual millisecond 0 (sends are stamped with the wall clock, not
    /// with `now`). None: virtual time, moved only by `deliver_due`.
    epoch: Option<Instant>,
    seq: u64,
    rng: Rng,
    faults: NetFaults,
    stats: NetStats,
}

/// A simulated network with faults: of deterministic NodeHosts on a virtual clock ([`SimNetwork::new`]),
/// or of NodeHosts running in real time ([`SimNetwork::realtime`]). Clones share the same network.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<State>>,
}

impl SimNetwork {
    /// An empty network whose random choices come from `seed`.
    pub fn new(seed: u64) -> Self {
        let state = State {
            sinks: BTreeMap::new(),
            queue: BTreeMap::new(),
            now: 0,
            epoch: None,
            seq: 0,
            rng: Rng::new(seed),
            faults: NetFaults::default(),
            stats: NetStats::default(),
        };
        SimNetwork { state: Arc::new(Mutex::new(state)) }
    }

    /// An empty network on the wall clock, whose random choices come from `seed`: latencies are real
    /// milliseconds, and a background thread delivers what is due (about every millisecond) until every
    /// handle of the network is dropped (those of the NodeHosts' transports included). Fails only when the
    /// thread cannot be started.
    pub fn realtime(seed: u64) -> std::io::Result<Self> {
        let net = Self::new(seed);
        let epoch = Instant::now();
        net.lock().epoch = Some(epoch);
        let weak = Arc::downgrade(&net.state);
        std::thread::Builder::new().name("sim-network".into()).spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(1));
                // Only a weak handle between rounds: the thread never keeps the network alive.
                let Some(state) = weak.upgrade() else { break };
                SimNetwork { state }.deliver_due(millis(epoch));
            }
        })?;
        Ok(net)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `sink` reachable at `address` (a restarted NodeHost registers again).
    pub fn register(&self, address: &str, sink: Weak<dyn MessageSink>) {
        self.lock().sinks.insert(address.to_string(), sink);
    }

    /// Replaces the fault settings.
    pub fn set_faults(&self, faults: NetFaults) {
        self.lock().faults = faults;
    }

    /// The current fault settings.
    pub fn faults(&self) -> NetFaults {
        self.lock().faults.clone()
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// A transport handle for a NodeHost.
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.clone())
    }

    fn enqueue(s: &mut State, from: String, to: String, cargo: Cargo) {
        let (lo, hi) = (s.faults.min_latency.max(1), s.faults.max_latency.max(s.faults.min_latency.max(1)));
        let now = s.epoch.map_or(s.now, millis);
        let at = now + s.rng.range(lo, hi + 1);
        s.seq += 1;
        let key = (at, s.seq);
        s.queue.insert(key, Flight { from, to, cargo });
    }

    /// Moves the clock to `now` and delivers everything due by then, in (due time, send order). Returns the
    /// addresses that received something (their NodeHosts have work). In real-time mode the network's
    /// thread calls it.
    pub fn deliver_due(&self, now: u64) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        loop {
            // Take one flight at a time without holding the lock while a sink runs.
            let (flight, sink, cut) = {
                let mut s = self.lock();
                s.now = now;
                let Some(entry) = s.queue.first_entry() else { break };
                if entry.key().0 > now {
                    break;
                }
                let flight = entry.remove();
                let cut = s.faults.cut(&flight.from, &flight.to);
                let sink = s.sinks.get(&flight.to).and_then(Weak::upgrade);
                (flight, sink, cut)
            };
            let to = flight.to.clone();
            match (flight.cargo, sink) {
                (Cargo::Batch(b), Some(sink)) if !cut => {
                    self.lock().stats.delivered += 1;
                    sink.deliver(b);
                    touched.insert(to);
                }
                (Cargo::Batch(b), _) => {
                    // A cut link or a crashed receiver, as a failed connection: the sender hears of it.
                    let sender = {
                        let mut s = self.lock();
                        s.stats.dropped += b.messages.len() as u64;
                        s.sinks.get(&b.from).and_then(Weak::upgrade)
                    };
                    if let Some(sender) = sender {
                        sender.unreachable(drakkar::transport::recipients(&b));
                        touched.insert(b.from.clone());
                    }
                }
                (Cargo::Snapshot(req, done), Some(sink)) if !cut => {
                    // A copy that fails (the file was replaced by a newer snapshot meanwhile) is a
                    // refusal: Raft sends again.
                    let from = req.from.clone();
                    let ok = drakkar::transport::land_snapshot(sink.as_ref(), *req).is_ok();
                    if ok {
                        self.lock().stats.snapshots += 1;
                    }
                    done(ok);
                    touched.insert(to);
                    touched.insert(from);
                }
                (Cargo::Snapshot(req, done), _) => {
                    self.lock().stats.dropped += 1;
                    done(false);
                    touched.insert(req.from);
                }
            }
        }
        touched
    }

    /// Drops everything in flight to or from `address` (its NodeHost crashed: its sockets are gone).
    /// Snapshot senders are told the transfer failed.
    pub fn forget(&self, address: &str) -> BTreeSet<String> {
        let gone: Vec<Flight> = {
            let mut s = self.lock();
            let keys: Vec<(u64, u64)> = s
                .queue
                .iter()
                .filter(|(_, f)| f.from == address || f.to == address)
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter().filter_map(|k| s.queue.remove(&k)).collect()
        };
        let mut touched = BTreeSet::new();
        for f in gone {
            if let Cargo::Snapshot(req, done) = f.cargo {
                done(false);
                touched.insert(req.from);
            }
        }
        touched
    }

    /// Batches and snapshots in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().queue.len()
    }
}

/// Whole milliseconds since `epoch`.
fn millis(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Transport for SimNetwork {
    fn send(&self, to: &str, mut batch: MessageBatch) {
        let mut s = self.lock();
        let drop_pct = s.faults.drop_pct;
        if drop_pct > 0 {
            let before = batch.messages.len();
            let mut kept = Vec::with_capacity(before);
            for m in batch.messages {
                if !s.rng.chance(drop_pct, 100) {
                    kept.push(m);
                }
            }
            batch.messages = kept;
            s.stats.dropped += (before - batch.messages.len()) as u64;
            if batch.messages.is_empty() && batch.reused.is_empty() {
                return;
            }
        }
        let dup_pct = s.faults.dup_pct;
        // Forwarded proposals too: a duplicated plain proposal is appended twice and applied once (seed 283
        // applied one twice before plain proposals carried ids).
        if dup_pct > 0 && s.rng.chance(dup_pct, 100) {
            s.stats.duplicated += 1;
            Self::enqueue(&mut s, batch.from.clone(), to.to_string(), Cargo::Batch(batch.clone()));
        }
        Self::enqueue(&mut s, batch.from.clone(), to.to_string(), Cargo::Batch(batch));
    }

    fn send_snapshot(&self, req: SnapshotRequest, done: SnapshotDone) {
        let mut s = self.lock();
        let (from, to) = (req.from.clone(), req.to.clone());
        Self::enqueue(&mut s, from, to, Cargo::Snapshot(Box::new(req), done));
    }
}
