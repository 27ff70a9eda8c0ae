//! The simulation loop: the virtual clock, the clients, the nemesis and the final checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use drakkar_raft::{GroupId, LogIndex, MemberRole, ReplicaId, Rng};

use super::cluster::{Cluster, addr};
use super::net::NetFaults;
use super::{FinalKey, HistKind, HistOp, HistOutcome, SimConfig, SimFailure, SimReport, SimStats};
use drakkar::statemachine::SmResult;
use drakkar::{Driver, MembershipChange, NodeError, NodeHost, Pending, Session};
use drakkar_kv::{CasExpect, CasNew, Command, CommandResult, KeyRange, Query, QueryResult};

/// Virtual milliseconds per Raft tick.
pub(crate) const TICK_MS: u64 = 10;
/// A client gives up waiting after this long (virtual ms): the outcome is unknown.
const OP_TIMEOUT_MS: u64 = 1_000;
/// After the faults heal, in-flight session series must complete within this (virtual ms).
const SETTLE_LIMIT_MS: u64 = 30_000;
const NS: u64 = 1_000_000;

/// A session and its series in flight.
struct Sess {
    session: Session,
    /// The session's own key: series `n` writes it for the `n`th time.
    key: Bytes,
    /// The series in flight: its command and history entry (retried unchanged until answered).
    inflight: Option<(Bytes, usize)>,
}

enum What {
    Put(Pending<SmResult>, Bytes),
    Unique(Pending<SmResult>, GroupId, Bytes, Bytes),
    Cas(Pending<SmResult>, Bytes),
    Read(Pending<Bytes>),
    Open(GroupId, Session, Pending<SmResult>),
    Series(GroupId, Pending<SmResult>),
}

struct InFlight {
    host: u64,
    deadline: u64,
    /// The history entry (and the history key's group and key, for the client's memory of values).
    hist: Option<usize>,
    what: What,
}

struct Client {
    id: u64,
    op: Option<InFlight>,
    idle_until: u64,
    /// The last value this client saw per history key (what its next CAS expects).
    seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    sessions: BTreeMap<GroupId, Sess>,
}

/// The spare host's replica of a group, as the membership driver knows it.
enum Spare {
    Absent,
    Adding(ReplicaId, Pending<SmResult>, u64),
    /// Added, or perhaps added (the answer was lost): remove it before adding another.
    Present(ReplicaId),
    Removing(ReplicaId, Pending<SmResult>, u64),
}

pub(crate) struct Sim {
    seed: u64,
    cfg: SimConfig,
    c: Cluster,
    /// The nemesis' and the clients' random sources (separate, so a change in one does not shift the other).
    rng: Rng,
    crng: Rng,
    now: u64,
    history: Vec<HistOp>,
    stats: SimStats,
    clients: Vec<Client>,
    next_value: u64,
    /// Acknowledged writes of write-once keys: (group, key, value).
    unique_acked: Vec<(GroupId, Bytes, Bytes)>,
    /// Per session key: (group, answered series).
    session_counts: BTreeMap<Bytes, (GroupId, u64)>,
    spares: BTreeMap<GroupId, Spare>,
    next_spare_id: u64,
    snapshots: Vec<(Pending<(LogIndex, PathBuf)>, u64)>,
    next_fault: u64,
    heal_at: Option<u64>,
    /// Print what happens (`HOST_SIM_TRACE=1`).
    trace: bool,
}

fn hist_key(g: GroupId, key: &[u8]) -> Vec<u8> {
    let mut k = format!("g{}/", g.0).into_bytes();
    k.extend_from_slice(key);
    k
}

/// Whether an error means the request certainly never entered the log.
fn definitely_refused(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::NoLeader { .. }
            | NodeError::Busy
            | NodeError::RateLimited
            | NodeError::Refused(_)
            | NodeError::GroupNotFound(_)
    )
}

impl Sim {
    pub(crate) fn new(seed: u64, cfg: SimConfig, dir: &Path) -> Result<Self, SimFailure> {
        let fail = |message: String| SimFailure { seed, at_ms: 0, message, history: Vec::new() };
        let c = Cluster::new(seed, cfg.hosts, cfg.groups, cfg.snapshot_entries, dir).map_err(fail)?;
        let clients = (1..=cfg.clients)
            .map(|id| Client {
                id,
                op: None,
                idle_until: 0,
                seen: BTreeMap::new(),
                sessions: BTreeMap::new(),
            })
            .collect();
        Ok(Sim {
            seed,
            c,
            rng: Rng::new(seed),
            crng: Rng::new(seed ^ 0x00c1_1e47),
            now: 0,
            history: Vec::new(),
            stats: SimStats::default(),
            clients,
            next_value: 0,
            unique_acked: Vec::new(),
            session_counts: BTreeMap::new(),
            spares: (1..=cfg.groups).map(|g| (GroupId(g), Spare::Absent)).collect(),
            next_spare_id: 100,
            snapshots: Vec::new(),
            next_fault: 300,
            heal_at: None,
            trace: std::env::var_os("HOST_SIM_TRACE").is_some(),
            cfg,
        })
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("{:>7} ms  {}", self.now, what());
        }
    }

    fn failure(&self, message: impl Into<String>) -> SimFailure {
        SimFailure {
            seed: self.seed,
            at_ms: self.now,
            message: message.into(),
            history: self.history.clone(),
        }
    }

    pub(crate) fn run(&mut self) -> Result<SimReport, SimFailure> {
        while self.now < self.cfg.duration_ms {
            self.step(true)?;
        }
        self.heal_all()?;
        // Settle: finish every session series in flight, let membership changes end.
        let limit = self.now + SETTLE_LIMIT_MS;
        loop {
            let busy = self
                .clients
                .iter()
                .any(|c| c.op.is_some() || c.sessions.values().any(|s| s.inflight.is_some()))
                || self.spares.values().any(|s| matches!(s, Spare::Adding(..) | Spare::Removing(..)));
            if !busy {
                break;
            }
            if self.now > limit {
                return Err(
                    self.failure("no progress: session series still unanswered 30 s after the faults healed")
                );
            }
            self.step(false)?;
        }
        // Every group elects a leader (after a power loss of every host that takes an election or two).
        let healed = self.now;
        while let Some(g) = (1..=self.cfg.groups).map(GroupId).find(|g| self.c.leader_host(*g).is_none()) {
            if self.now > healed + SETTLE_LIMIT_MS {
                return Err(self.failure(format!("{g} has no leader 30 s after the faults healed")));
            }
            self.step(false)?;
        }
        self.trace(|| format!("every group has a leader, {} ms after settling", self.now - healed));
        for _ in 0..200 {
            self.step(false)?;
        }
        let final_state = self.final_checks()?;
        self.stats.virtual_ms = self.now;
        self.stats.net = self.c.net.stats();
        Ok(SimReport {
            seed: self.seed,
            config: self.cfg.clone(),
            history: self.history.clone(),
            stats: self.stats.clone(),
            final_state,
        })
    }

    /// One virtual millisecond: deliver what is due, tick, faults, clients, run every NodeHost until idle,
    /// then collect answers.
    fn step(&mut self, workload: bool) -> Result<(), SimFailure> {
        self.now += 1;
        self.c.net.deliver_due(self.now);
        if self.now.is_multiple_of(TICK_MS) {
            self.c.tick();
        }
        let due: Vec<u64> = self
            .c
            .machines
            .iter()
            .filter(|(_, m)| m.restart_at.is_some_and(|t| t <= self.now))
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            self.trace(|| format!("host {i} boots"));
            self.c.boot(i).map_err(|e| self.failure(e))?;
        }
        self.crash_due();
        if workload {
            if self.heal_at.is_some_and(|t| t <= self.now) {
                self.heal_at = None;
                self.c.net.set_faults(NetFaults::default());
            }
            if self.now >= self.next_fault {
                self.next_fault = self.now + self.rng.range(100, 600);
                self.nemesis()?;
            }
        }
        for ci in 0..self.clients.len() {
            self.start_op(ci, workload)?;
        }
        self.c.run().map_err(|e| self.failure(e))?;
        for ci in 0..self.clients.len() {
            self.poll_op(ci)?;
        }
        self.poll_membership()?;
        self.snapshots.retain_mut(|(p, deadline)| match p.try_result() {
            Some(r) => {
                self.stats.snapshots += u64::from(r.is_ok());
                false
            }
            None => self.now < *deadline,
        });
        Ok(())
    }

    fn heal_all(&mut self) -> Result<(), SimFailure> {
        self.heal_at = None;
        for m in self.c.machines.values_mut() {
            if let Some((_, back)) = m.crash_at.as_mut() {
                *back = 0;
            }
        }
        while self.c.machines.values().any(|m| m.crash_at.is_some()) {
            self.step(false)?;
        }
        self.c.net.set_faults(NetFaults { max_latency: 5, ..NetFaults::default() });
        let down: Vec<u64> =
            self.c.machines.iter().filter(|(_, m)| m.node.is_none()).map(|(i, _)| *i).collect();
        for i in down {
            self.c.boot(i).map_err(|e| self.failure(e))?;
        }
        Ok(())
    }

    // ---- the nemesis ----

    fn nemesis(&mut self) -> Result<(), SimFailure> {
        let faults = self.cfg.faults;
        match self.rng.range(0, 11) {
            0 | 1 if faults => {
                let live = self.c.live();
                // Every host may be down at once (after a power loss of all of them).
                let Some(&pick) = live.get(self.rng.range(0, live.len() as u64) as usize) else {
                    return Ok(());
                };
                let back = self.now + self.rng.range(50, 800);
                self.crash(&[pick], back);
            }
            2 if faults && self.rng.chance(1, 3) => {
                // A power loss of a majority, or of everything: what exposes an acknowledgement sent
                // before its fsync.
                let founding: Vec<u64> = (1..=self.c.founding).collect();
                let n = if self.rng.chance(1, 2) { founding.len() } else { founding.len() / 2 + 1 };
                let mut ids = founding;
                while ids.len() > n {
                    let i = self.rng.range(0, ids.len() as u64) as usize;
                    ids.remove(i);
                }
                let back = self.now + self.rng.range(50, 500);
                self.crash(&ids, back);
            }
            3 if faults => {
                let hosts: Vec<String> = (1..=self.c.spare()).map(addr).collect();
                let mut side: BTreeSet<String> = BTreeSet::new();
                if self.rng.chance(1, 2) {
                    side.insert(hosts[self.rng.range(0, hosts.len() as u64) as usize].clone());
                } else {
                    for h in &hosts {
                        if self.rng.chance(1, 2) {
                            side.insert(h.clone());
                        }
                    }
                }
                let other: BTreeSet<String> = hosts.into_iter().filter(|h| !side.contains(h)).collect();
                let mut f = self.c.net.faults();
                f.partition = vec![side, other];
                self.c.net.set_faults(f);
                self.heal_at = Some(self.now + self.rng.range(100, 1500));
                self.stats.partitions += 1;
                self.trace(|| format!("partition {:?}", self.c.net.faults().partition));
            }
            4 if faults => {
                let max_latency = self.rng.range(1, 30);
                let f = NetFaults {
                    drop_pct: self.rng.range(0, 20),
                    dup_pct: self.rng.range(0, 10),
                    min_latency: 1,
                    max_latency,
                    partition: self.c.net.faults().partition,
                };
                self.c.net.set_faults(f);
            }
            5 => {
                self.trace(|| "network healed".into());
                self.c.net.set_faults(NetFaults::default());
            }
            6 | 7 => {
                let live = self.c.live();
                let Some(&i) = live.get(self.rng.range(0, live.len() as u64) as usize) else { return Ok(()) };
                let g = GroupId(self.rng.range(1, self.cfg.groups + 1));
                if let Some(n) = self.c.node(i)
                    && let Ok(p) = driver(n).request_snapshot(g)
                {
                    self.snapshots.push((p, self.now + OP_TIMEOUT_MS));
                }
            }
            10 => {
                let g = GroupId(self.rng.range(1, self.cfg.groups + 1));
                let pick = self.rng.next_u64();
                if let Some(to) = self.c.transfer_leader(g, pick) {
                    self.stats.transfers += 1;
                    self.trace(|| format!("{g}: leadership transfer to {to} requested"));
                }
            }
            _ if self.cfg.membership => {
                let g = GroupId(self.rng.range(1, self.cfg.groups + 1));
                self.membership_step(g)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Dooms the machines in `ids` at once (a power loss): each one's disk dies within a few writes, it
    /// crashes a little later and comes back at `back`.
    fn crash(&mut self, ids: &[u64], back: u64) {
        let at = self.now + self.rng.range(0, 20);
        for &i in ids {
            let ops = self.rng.range(0, 12);
            self.trace(|| {
                format!("host {i} doomed: disk dies after {ops} writes, crash at {at}, back at {back}")
            });
            self.c.doom(i, ops, at, back.max(at + 1));
        }
    }

    /// Crashes the doomed machines whose time came.
    fn crash_due(&mut self) {
        let due: Vec<(u64, u64)> = self
            .c
            .machines
            .iter()
            .filter_map(|(i, m)| m.crash_at.filter(|(at, _)| *at <= self.now).map(|(_, back)| (*i, back)))
            .collect();
        for (i, back) in due {
            self.trace(|| format!("host {i} crashes"));
            self.c.crash(i, back, &mut self.rng);
            self.stats.crashes += 1;
            // The clients talking to it never hear back.
            for ci in 0..self.clients.len() {
                if self.clients[ci].op.as_ref().is_some_and(|o| o.host == i) {
                    self.abandon(ci);
                }
            }
        }
    }

    fn membership_step(&mut self, g: GroupId) -> Result<(), SimFailure> {
        let spare = self.c.spare();
        let Some(leader) = self.c.leader_host(g) else { return Ok(()) };
        let Some(node) = self.c.node(leader).cloned() else { return Ok(()) };
        let deadline = self.now + 2 * OP_TIMEOUT_MS;
        match self.spares.get(&g) {
            Some(Spare::Absent) => {
                if self.c.node(spare).is_none() || leader == spare {
                    return Ok(());
                }
                self.next_spare_id += 1;
                let r = ReplicaId(self.next_spare_id);
                self.c.start_joining(spare, g, r).map_err(|e| self.failure(e))?;
                let add = MembershipChange::Add { replica: r, address: addr(spare), role: MemberRole::Voter };
                let state = match node.change_membership(g, add, 0) {
                    Ok(p) => Spare::Adding(r, p, deadline),
                    Err(_) => Spare::Present(r),
                };
                self.spares.insert(g, state);
            }
            Some(Spare::Present(r)) => {
                let r = *r;
                if let Ok(p) = node.change_membership(g, MembershipChange::Remove(r), 0) {
                    self.spares.insert(g, Spare::Removing(r, p, deadline));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn poll_membership(&mut self) -> Result<(), SimFailure> {
        let spare = self.c.spare();
        let groups: Vec<GroupId> = self.spares.keys().copied().collect();
        for g in groups {
            let Some(state) = self.spares.get_mut(&g) else { continue };
            let next = match state {
                Spare::Adding(r, p, deadline) => match p.try_result() {
                    Some(Ok(_)) => {
                        self.stats.membership_changes += 1;
                        Some(Spare::Present(*r))
                    }
                    Some(Err(_)) => Some(Spare::Present(*r)),
                    None if self.now >= *deadline => Some(Spare::Present(*r)),
                    None => None,
                },
                Spare::Removing(r, p, deadline) => {
                    let r = *r;
                    match p.try_result() {
                        Some(Ok(_)) => {
                            self.stats.membership_changes += 1;
                            self.c.delete_replica(spare, g).map_err(|e| self.failure(e))?;
                            Some(Spare::Absent)
                        }
                        Some(Err(NodeError::ConfChangeRefused(_) | NodeError::StaleConfChange { .. })) => {
                            // Refused as decided by the log: delete the replica only if it is not a member.
                            let member = self
                                .c
                                .leader_host(g)
                                .and_then(|l| self.c.node(l)?.membership(g).ok())
                                .is_none_or(|m| m.membership.role(r).is_some());
                            if member {
                                Some(Spare::Present(r))
                            } else {
                                self.c.delete_replica(spare, g).map_err(|e| self.failure(e))?;
                                Some(Spare::Absent)
                            }
                        }
                        Some(Err(_)) => Some(Spare::Present(r)),
                        None if self.now >= *deadline => Some(Spare::Present(r)),
                        None => None,
                    }
                }
                _ => None,
            };
            if let Some(n) = next {
                self.spares.insert(g, n);
            }
        }
        Ok(())
    }

    // ---- the clients ----

    fn value(&mut self, client: u64) -> Bytes {
        self.next_value += 1;
        Bytes::from(format!("c{client}-v{}", self.next_value))
    }

    fn record(&mut self, process: u64, g: GroupId, key: &[u8], kind: HistKind) -> usize {
        self.history.push(HistOp {
            process,
            key: hist_key(g, key),
            kind,
            invoke: self.now * NS,
            complete: None,
            outcome: HistOutcome::Unknown,
        });
        self.history.len() - 1
    }

    fn complete(&mut self, hist: usize, outcome: HistOutcome) {
        self.trace(|| format!("  done #{hist} {:?}", outcome));
        match outcome {
            HistOutcome::Unknown => self.stats.unknown += 1,
            HistOutcome::Fail => self.stats.failed += 1,
            _ => self.stats.ok += 1,
        }
        let h = &mut self.history[hist];
        if outcome != HistOutcome::Unknown {
            h.complete = Some(self.now * NS);
        }
        h.outcome = outcome;
    }

    /// Starts the client's next operation if it is idle (in the settling phase: only session series in
    /// flight are retried).
    fn start_op(&mut self, ci: usize, workload: bool) -> Result<(), SimFailure> {
        if self.clients[ci].op.is_some() || self.clients[ci].idle_until > self.now {
            return Ok(());
        }
        let id = self.clients[ci].id;
        self.clients[ci].idle_until = self.now + self.crng.range(1, 40);
        let g = GroupId(self.crng.range(1, self.cfg.groups + 1));
        let hosts = self.c.hosts_of(g);
        if hosts.is_empty() {
            return Ok(());
        }
        let host = hosts[self.crng.range(0, hosts.len() as u64) as usize];
        let Some(node) = self.c.node(host).cloned() else { return Ok(()) };
        let choice = if workload { self.crng.range(0, 100) } else { 90 };
        let key = Bytes::from(format!("k{}", self.crng.range(0, self.cfg.keys)));
        let (hist, what) = match choice {
            0..30 => {
                let v = self.value(id);
                let Ok(p) = driver(&node).propose(g, encode(&Command::put(key.clone(), v.clone()))) else {
                    return Ok(());
                };
                (Some(self.record(id, g, &key, HistKind::Write(v.to_vec()))), What::Put(p, v))
            }
            30..45 => {
                let hk = hist_key(g, &key);
                let expected = self.clients[ci].seen.get(&hk).cloned().flatten();
                let v = self.value(id);
                let cmd = Command::CompareAndSwap {
                    key: key.clone(),
                    expected: expected
                        .clone()
                        .map_or(CasExpect::Absent, |e| CasExpect::Value(Bytes::from(e))),
                    new: CasNew::Put(v.clone()),
                };
                let Ok(p) = driver(&node).propose(g, encode(&cmd)) else { return Ok(()) };
                (Some(self.record(id, g, &key, HistKind::Cas(expected, v.to_vec()))), What::Cas(p, v))
            }
            45..70 => {
                let Ok(p) = driver(&node).read(g, encode_query(&Query::get(key.clone()))) else {
                    return Ok(());
                };
                (Some(self.record(id, g, &key, HistKind::Read)), What::Read(p))
            }
            70..80 => {
                let v = self.value(id);
                let ukey = Bytes::from(format!("u{}", self.next_value));
                let Ok(p) = driver(&node).propose(g, encode(&Command::put(ukey.clone(), v.clone()))) else {
                    return Ok(());
                };
                let hist = self.record(id, g, &ukey, HistKind::Write(v.to_vec()));
                (Some(hist), What::Unique(p, g, ukey, v))
            }
            _ => return self.start_series(ci, g, workload),
        };
        if let Some(h) = hist {
            self.trace(|| {
                let op = &self.history[h];
                format!("#{h} client {id} -> host {host}: {} {:?}", String::from_utf8_lossy(&op.key), op.kind)
            });
        }
        self.clients[ci].op = Some(InFlight { host, deadline: self.now + OP_TIMEOUT_MS, hist, what });
        Ok(())
    }

    /// A session proposal: retries the series in flight of one of the client's sessions, else starts the
    /// next series (opening a session in the group first).
    fn start_series(&mut self, ci: usize, g: GroupId, workload: bool) -> Result<(), SimFailure> {
        let id = self.clients[ci].id;
        let g = self.clients[ci].sessions.iter().find(|(_, s)| s.inflight.is_some()).map_or(g, |(g, _)| *g);
        let hosts = self.c.hosts_of(g);
        if hosts.is_empty() {
            return Ok(());
        }
        let host = hosts[self.crng.range(0, hosts.len() as u64) as usize];
        let Some(node) = self.c.node(host).cloned() else { return Ok(()) };
        let deadline = self.now + OP_TIMEOUT_MS;
        let Some(sess) = self.clients[ci].sessions.get(&g) else {
            if workload && let Ok((s, p)) = driver(&node).open_session(g) {
                self.clients[ci].op =
                    Some(InFlight { host, deadline, hist: None, what: What::Open(g, s, p) });
            }
            return Ok(());
        };
        let (cmd, hist) = match sess.inflight.clone() {
            Some(inflight) => {
                self.stats.session_retries += 1;
                inflight
            }
            None if workload => {
                let v = Bytes::from(format!("c{id}-s{}", sess.session.series()));
                let key = sess.key.clone();
                let cmd = encode(&Command::put(key.clone(), v.clone()));
                let hist = self.record(id, g, &key, HistKind::Write(v.to_vec()));
                if let Some(sess) = self.clients[ci].sessions.get_mut(&g) {
                    sess.inflight = Some((cmd.clone(), hist));
                }
                (cmd, hist)
            }
            None => return Ok(()),
        };
        let Some(sess) = self.clients[ci].sessions.get(&g) else { return Ok(()) };
        if let Ok(p) = driver(&node).propose_in_session(&sess.session, cmd) {
            self.clients[ci].op =
                Some(InFlight { host, deadline, hist: Some(hist), what: What::Series(g, p) });
        }
        Ok(())
    }

    /// Gives up on the client's operation: a write's outcome becomes unknown; a read simply did not happen.
    fn abandon(&mut self, ci: usize) {
        let Some(op) = self.clients[ci].op.take() else { return };
        match (&op.what, op.hist) {
            (What::Read(_), Some(h)) => self.complete(h, HistOutcome::Fail),
            // A session series stays in flight: it is retried under the same series id.
            (What::Series(..), _) | (What::Open(..), _) => {}
            (_, Some(h)) => self.complete(h, HistOutcome::Unknown),
            (_, None) => {}
        }
    }

    fn poll_op(&mut self, ci: usize) -> Result<(), SimFailure> {
        let Some(mut op) = self.clients[ci].op.take() else { return Ok(()) };
        let answer = match &mut op.what {
            What::Put(p, _)
            | What::Unique(p, ..)
            | What::Cas(p, _)
            | What::Open(_, _, p)
            | What::Series(_, p) => p.try_result().map(|r| r.map(Answer::Sm)),
            What::Read(p) => p.try_result().map(|r| r.map(Answer::Read)),
        };
        let Some(answer) = answer else {
            let expired = self.now >= op.deadline;
            self.clients[ci].op = Some(op);
            if expired {
                self.abandon(ci);
            }
            return Ok(());
        };
        let id = self.clients[ci].id;
        let hk = op.hist.map(|h| self.history[h].key.clone());
        if let (Some(h), Ok(Answer::Sm(r))) = (op.hist, &answer) {
            self.trace(|| {
                format!("  answer #{h} from host {}: {:?}", op.host, CommandResult::decode(&r.data))
            });
        }
        match (op.what, answer) {
            (What::Put(_, v), Ok(Answer::Sm(r))) => {
                self.expect_status(&r)?;
                if let (Some(h), Some(k)) = (op.hist, hk) {
                    self.clients[ci].seen.insert(k, Some(v.to_vec()));
                    self.complete(h, HistOutcome::Written);
                }
            }
            (What::Unique(_, g, k, v), Ok(Answer::Sm(r))) => {
                self.expect_status(&r)?;
                self.unique_acked.push((g, k, v));
                if let Some(h) = op.hist {
                    self.complete(h, HistOutcome::Written);
                }
            }
            (What::Cas(_, new), Ok(Answer::Sm(r))) => {
                let Ok(CommandResult::CompareAndSwap { succeeded, prev }) = CommandResult::decode(&r.data)
                else {
                    return Err(self.failure(format!("a compare-and-swap answered {r:?}")));
                };
                if let (Some(h), Some(k)) = (op.hist, hk) {
                    let seen = if succeeded { Some(new.to_vec()) } else { prev.map(|kv| kv.value.to_vec()) };
                    self.clients[ci].seen.insert(k, seen);
                    self.complete(h, HistOutcome::Cas(succeeded));
                }
            }
            (What::Read(_), Ok(Answer::Read(b))) => {
                let Ok(QueryResult::Get(item)) = QueryResult::decode(&b) else {
                    return Err(self.failure("a read answered something that is not a Get result"));
                };
                let v = item.map(|kv| kv.value.to_vec());
                if let (Some(h), Some(k)) = (op.hist, hk) {
                    self.clients[ci].seen.insert(k, v.clone());
                    self.complete(h, HistOutcome::Read(v));
                }
            }
            (What::Open(g, session, _), Ok(Answer::Sm(r))) => {
                if r.value == drakkar::session::codes::OK {
                    let key = Bytes::from(format!("s{:016x}", session.client_id()));
                    self.session_counts.insert(key.clone(), (g, 0));
                    self.clients[ci].sessions.insert(g, Sess { session, key, inflight: None });
                }
            }
            (What::Series(g, _), Ok(Answer::Sm(r))) => {
                let Some((series, key)) =
                    self.clients[ci].sessions.get(&g).map(|s| (s.session.series(), s.key.clone()))
                else {
                    return Err(self.failure("an answer for a session the client does not have"));
                };
                // Exactly once: series n is the nth write of the session's key, and a retry's answer is the
                // first application's result.
                match CommandResult::decode(&r.data) {
                    Ok(CommandResult::Put { new, .. }) if new.version == series => {}
                    other => {
                        return Err(self.failure(format!(
                            "client {id}: session series {series} on {g} answered {other:?}: expected the put \
                             that made version {series} of {key:?} (applied twice, or a retry got another result)"
                        )));
                    }
                }
                let hist = self.clients[ci].sessions.get_mut(&g).and_then(|sess| {
                    sess.session.proposal_completed();
                    sess.inflight.take().map(|(_, h)| h)
                });
                if let Some(c) = self.session_counts.get_mut(&key) {
                    c.1 += 1;
                }
                self.stats.session_series += 1;
                if let Some(h) = hist {
                    self.complete(h, HistOutcome::Written);
                }
            }
            (
                What::Series(g, _),
                Err(
                    e @ (NodeError::SessionUnknown
                    | NodeError::SessionResultForgotten
                    | NodeError::InvalidArgument(_)),
                ),
            ) => {
                return Err(self.failure(format!("client {id}: a session proposal on {g} was refused: {e}")));
            }
            (What::Series(..), Err(_)) | (What::Open(..), Err(_)) => {}
            (_, Err(e)) => {
                if let Some(h) = op.hist {
                    let read = matches!(self.history[h].kind, HistKind::Read);
                    let outcome =
                        if definitely_refused(&e) || read { HistOutcome::Fail } else { HistOutcome::Unknown };
                    self.complete(h, outcome);
                }
            }
            (_, Ok(a)) => return Err(self.failure(format!("an answer of the wrong kind: {a:?}"))),
        }
        Ok(())
    }

    fn expect_status(&self, r: &SmResult) -> Result<(), SimFailure> {
        if r.value == drakkar_kv::Status::Ok.code() {
            Ok(())
        } else {
            Err(self.failure(format!("a put answered status {}: {r:?}", r.value)))
        }
    }

    // ---- the final checks ----

    /// Reads every group's whole state on every replica (linearizable reads); checks that the replicas
    /// agree, that every acknowledged write-once key is there, and that every session key was written
    /// exactly once per answered series. The contended keys' values join the history as reads.
    fn final_checks(&mut self) -> Result<Vec<(u64, Vec<FinalKey>)>, SimFailure> {
        let mut states = Vec::new();
        for g in (1..=self.cfg.groups).map(GroupId) {
            let members = self
                .c
                .leader_host(g)
                .and_then(|l| self.c.node(l)?.membership(g).ok())
                .ok_or_else(|| self.failure(format!("{g} has no leader after settling")))?;
            let mut first: Option<(u64, Vec<FinalKey>)> = None;
            for host in self.c.hosts_of(g) {
                let Some((me, _)) = self.c.machines[&host].replicas.get(&g).copied() else { continue };
                if members.membership.role(me).is_none() {
                    continue;
                }
                let invoke = self.now;
                let state = self.scan(host, g)?;
                for k in 0..self.cfg.keys {
                    let key = format!("k{k}").into_bytes();
                    let v = state.iter().find(|(kk, _, _)| *kk == key).map(|(_, v, _)| v.clone());
                    self.history.push(HistOp {
                        process: 1000 + host,
                        key: hist_key(g, &key),
                        kind: HistKind::Read,
                        invoke: invoke * NS,
                        complete: Some(self.now * NS),
                        outcome: HistOutcome::Read(v),
                    });
                }
                match &first {
                    None => first = Some((host, state)),
                    Some((h0, s0)) if *s0 != state => {
                        return Err(
                            self.failure(format!("{g}: host {h0} and host {host} hold different states"))
                        );
                    }
                    Some(_) => {}
                }
            }
            let (_, state) = first.ok_or_else(|| self.failure(format!("{g}: no replica to read")))?;
            let map: BTreeMap<&[u8], (&[u8], u64)> =
                state.iter().map(|(k, v, ver)| (k.as_slice(), (v.as_slice(), *ver))).collect();
            for (ug, k, v) in &self.unique_acked {
                if *ug == g && map.get(&k[..]).map(|x| x.0) != Some(&v[..]) {
                    return Err(self.failure(format!("{g}: acknowledged write {k:?}={v:?} was lost")));
                }
            }
            for (k, (sg, n)) in &self.session_counts {
                let version = map.get(&k[..]).map_or(0, |x| x.1);
                if *sg == g && version != *n {
                    return Err(self.failure(format!(
                        "{g}: session key {k:?} was written {version} times for {n} answered series"
                    )));
                }
            }
            states.push((g.0, state));
        }
        Ok(states)
    }

    /// A linearizable scan of the whole group on `host`, retried until it answers.
    fn scan(&mut self, host: u64, g: GroupId) -> Result<Vec<FinalKey>, SimFailure> {
        let q = Query::Scan { range: KeyRange::prefix(Bytes::new()), limit: 0, keys_only: false };
        let deadline = self.now + SETTLE_LIMIT_MS;
        let mut last = String::from("none");
        while self.now < deadline {
            let node = self.c.node(host).cloned().ok_or_else(|| self.failure("host down while checking"))?;
            let mut p = driver(&node).read(g, encode_query(&q)).map_err(|e| self.failure(e.to_string()))?;
            let until = self.now + OP_TIMEOUT_MS;
            while self.now < until {
                self.step(false)?;
                match p.try_result() {
                    None => continue,
                    Some(Ok(b)) => {
                        let Ok(QueryResult::Scan { items, more: false }) = QueryResult::decode(&b) else {
                            return Err(
                                self.failure("a scan answered something else (or more than one page)")
                            );
                        };
                        return Ok(items
                            .into_iter()
                            .map(|kv| (kv.key.to_vec(), kv.value.to_vec(), kv.meta.version))
                            .collect());
                    }
                    Some(Err(e)) => {
                        last = e.to_string();
                        break;
                    }
                }
            }
        }
        let state = self.c.node(host).map(|n| format!("{:?}", n.leader(g)));
        Err(self.failure(format!(
            "host {host}: no linearizable read of {g} for 30 s after settling (last answer: {last}; its view of \
             the leader: {state:?})"
        )))
    }
}

#[derive(Debug)]
enum Answer {
    Sm(SmResult),
    Read(Bytes),
}

fn encode(c: &Command) -> Bytes {
    // Commands built here are always within the codec's limits.
    c.encode().unwrap_or_default()
}

fn encode_query(q: &Query) -> Bytes {
    q.encode().unwrap_or_default()
}

/// The driver of a simulated host (every one is deterministic).
fn driver(node: &NodeHost) -> Driver {
    Driver::new(node).expect("the simulator's NodeHosts are deterministic")
}
