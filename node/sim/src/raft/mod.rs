//! A deterministic, randomised simulator of one group, for testing the core under faults.
//!
//! One seed fully determines a schedule: which replica ticks, which message is delivered (out of order),
//! dropped or duplicated, when a replica persists (asynchronously, in order), crashes (losing everything
//! not yet persisted and its in-memory state machine), restarts from its durable storage, when the network
//! partitions and heals, and which proposals, ReadIndex reads, membership changes, snapshots and leader
//! transfers are attempted. After every step the [`check`] module verifies the safety properties; a
//! failure names the seed, so `simulate(seed, ...)` replays it exactly.
//!
//! Run many schedules with `cargo run --release -p drakkar-sim --example raft_simulate -- --schedules N`.

mod check;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;

pub use check::Violation;
use check::{Checker, OpId};
use drakkar_raft::{
    ConfChange, ConfChangeKind, Config, Entry, EntryKind, HardState, LogIndex, MemStorage, Membership,
    Message, MessageKind, RawNode, ReplicaId, Rng, Role, Snapshot, Storage,
};

/// Knobs of a simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Founding voters (3 or 5 are the interesting sizes).
    pub voters: u64,
    /// Extra replica ids available to membership changes (each id is used at most once).
    pub spare_ids: u64,
    /// Steps per schedule.
    pub steps: usize,
    /// Percent chance that a sent message is lost.
    pub drop_pct: u64,
    /// Percent chance that a sent message is duplicated.
    pub dup_pct: u64,
    /// Maximum delivery delay, in steps.
    pub max_delay: u64,
    /// Allow crashes and restarts.
    pub crashes: bool,
    /// Allow partitions.
    pub partitions: bool,
    /// Allow membership changes.
    pub conf_changes: bool,
    /// Use PreVote and CheckQuorum.
    pub pre_vote: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            voters: 3,
            spare_ids: 3,
            steps: 1500,
            drop_pct: 5,
            dup_pct: 2,
            max_delay: 8,
            crashes: true,
            partitions: true,
            conf_changes: true,
            pre_vote: true,
        }
    }
}

/// What a run did, for reports and sanity checks (a schedule that never commits anything tests little).
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Writes acknowledged to their client.
    pub writes_acked: u64,
    /// Reads completed (and checked).
    pub reads_done: u64,
    /// Highest commit index reached.
    pub max_commit: u64,
    /// Leaders elected.
    pub elections: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Membership changes applied (on the first replica to apply each).
    pub conf_changes: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
}

/// A safety violation found by the simulator, with the seed that replays it.
#[derive(Debug)]
pub struct SimFailure {
    /// The schedule's seed.
    pub seed: u64,
    /// The step at which the check failed.
    pub step: usize,
    /// What went wrong.
    pub violation: Violation,
    /// The last events before the failure.
    pub trace: String,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulation seed {} failed at step {}: {}\nreplay: SIM_SEED={} cargo test -p drakkar-raft --test \
             simulation replay\nlast events:\n{}",
            self.seed, self.step, self.violation, self.seed, self.trace
        )
    }
}

/// A write to storage handed out in a `Ready` and not yet durable.
struct PendingWrite {
    number: u64,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    after: Vec<Message>,
}

/// The simulated application: an append-only sequence summarised by (count, hash).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AppState {
    applied: LogIndex,
    count: u64,
    hash: u64,
}

impl AppState {
    fn apply(&mut self, data: &[u8]) {
        self.count += 1;
        for &b in data {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.hash = self.hash.rotate_left(7) ^ self.count;
    }

    fn encode(&self) -> Bytes {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.count.to_le_bytes());
        v.extend_from_slice(&self.hash.to_le_bytes());
        Bytes::from(v)
    }

    fn decode(index: LogIndex, b: &[u8]) -> AppState {
        let word = |r: std::ops::Range<usize>| {
            b.get(r).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
        };
        AppState { applied: index, count: word(0..8), hash: word(8..16) }
    }
}

struct Replica {
    id: ReplicaId,
    node: Option<RawNode<MemStorage>>,
    /// Durable state of a crashed replica.
    disk: MemStorage,
    pending: VecDeque<PendingWrite>,
    app: AppState,
    /// Outstanding writes proposed here, by payload.
    writes: BTreeMap<Bytes, OpId>,
    /// Outstanding reads issued here, by context, then waiting for `index` to be applied.
    reads: BTreeMap<Bytes, OpId>,
    ready_reads: Vec<(LogIndex, OpId)>,
    incarnation: u64,
}

/// The simulated group.
pub struct Sim {
    cfg: SimConfig,
    seed: u64,
    rng: Rng,
    step: usize,
    replicas: BTreeMap<ReplicaId, Replica>,
    /// (deliver at step, message)
    net: Vec<(usize, Message)>,
    /// Replicas on the minority side of a partition, if any.
    cut: Option<BTreeSet<ReplicaId>>,
    next_id: u64,
    next_op: u64,
    checker: Checker,
    report: SimReport,
    trace: VecDeque<String>,
    settling: bool,
    /// Indices of membership changes some replica has applied.
    conf_applied: BTreeSet<LogIndex>,
    /// Replicas that must take a snapshot as soon as their writes drain (theirs predates a new member).
    snapshot_wanted: BTreeSet<ReplicaId>,
}

impl Sim {
    /// A fresh group for `seed`.
    pub fn new(seed: u64, cfg: SimConfig) -> Sim {
        let founding = Membership::with_voters((1..=cfg.voters).map(ReplicaId));
        let mut s = Sim {
            rng: Rng::new(seed),
            seed,
            step: 0,
            replicas: BTreeMap::new(),
            net: Vec::new(),
            cut: None,
            next_id: cfg.voters + 1,
            next_op: 0,
            checker: Checker::default(),
            report: SimReport::default(),
            trace: VecDeque::new(),
            settling: false,
            conf_applied: BTreeSet::new(),
            snapshot_wanted: BTreeSet::new(),
            cfg,
        };
        for id in 1..=s.cfg.voters {
            s.add_replica(ReplicaId(id), MemStorage::bootstrap(founding.clone()));
        }
        s
    }

    fn node_config(&self, id: ReplicaId, applied: LogIndex, incarnation: u64) -> Config {
        let mut c = Config::new(id);
        c.seed = self.seed ^ id.0.wrapping_mul(0x9E37_79B9) ^ incarnation.wrapping_mul(0x51_7CC1);
        c.applied = applied;
        c.election_tick = 6;
        c.heartbeat_tick = 1;
        c.pre_vote = self.cfg.pre_vote;
        c.check_quorum = self.cfg.pre_vote;
        c.max_inflight_msgs = 4;
        c.max_size_per_msg = 256;
        c
    }

    fn add_replica(&mut self, id: ReplicaId, disk: MemStorage) {
        let mut r = Replica {
            id,
            node: None,
            disk,
            pending: VecDeque::new(),
            app: AppState::default(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            incarnation: 0,
        };
        self.start(&mut r);
        self.replicas.insert(id, r);
    }

    /// Starts (or restarts) a replica from its durable storage and its latest snapshot.
    fn start(&mut self, r: &mut Replica) {
        let snap = r.disk.snapshot().unwrap_or_default();
        r.app = AppState::decode(snap.meta.index, &snap.data);
        let cfg = self.node_config(r.id, snap.meta.index, r.incarnation);
        r.incarnation += 1;
        match RawNode::new(cfg, r.disk.clone()) {
            Ok(n) => r.node = Some(n),
            Err(e) => self.fail_later(Violation::Restart(r.id, e.to_string())),
        }
    }

    fn fail_later(&mut self, v: Violation) {
        self.checker.record(v);
    }

    fn log(&mut self, event: impl FnOnce() -> String) {
        if self.trace.len() >= 60 {
            self.trace.pop_front();
        }
        let line = format!("{:>5} {}", self.step, event());
        self.trace.push_back(line);
    }

    /// Runs the whole schedule, checking after every step.
    pub fn run(mut self) -> Result<SimReport, Box<SimFailure>> {
        let steps = self.cfg.steps;
        self.run_steps(steps)?;
        self.settle()
    }

    /// Heals everything and lets the group settle, checking the final state too.
    pub fn settle(&mut self) -> Result<SimReport, Box<SimFailure>> {
        self.cut = None;
        self.settling = true;
        // 200 rounds, then (while not caught up) up to 2,000 more: elections among pre-candidates with
        // divergent logs can take a while.
        let mut round = 0;
        while round < 200 || (round < 2_200 && (round % 50 != 0 || self.caught_up().is_some())) {
            round += 1;
            let ids: Vec<ReplicaId> = self.replicas.keys().copied().collect();
            for id in ids {
                if self.replicas.get(&id).is_some_and(|r| r.node.is_none()) {
                    self.restart(id);
                }
                self.process_ready(id);
                self.persist(id);
                if self.step.is_multiple_of(3) {
                    self.tick(id);
                }
            }
            while !self.net.is_empty() {
                self.deliver(0);
            }
            self.check()?;
            self.step += 1;
        }
        self.check_caught_up()?;
        Ok(self.report.clone())
    }

    /// Liveness after healing: one leader, and every member's commit index equal to the leader's. Only
    /// with PreVote (and CheckQuorum): without them a replica removed before it learnt of its removal
    /// keeps campaigning with ever higher terms and can keep the group leaderless (Raft thesis, 4.2.3);
    /// the NodeHost always enables both.
    fn check_caught_up(&mut self) -> Result<(), Box<SimFailure>> {
        if !self.cfg.pre_vote {
            return Ok(());
        }
        match self.caught_up() {
            None => Ok(()),
            Some(p) => Err(Box::new(SimFailure {
                seed: self.seed,
                step: self.step,
                violation: Violation::NotCaughtUp(p),
                trace: self.describe(),
            })),
        }
    }

    /// What keeps the group from being caught up (None: one leader, every member at its commit index).
    fn caught_up(&self) -> Option<String> {
        let statuses: Vec<(ReplicaId, drakkar_raft::Status)> =
            self.replicas.values().filter_map(|r| r.node.as_ref().map(|n| (r.id, n.status()))).collect();
        let leaders: Vec<&(ReplicaId, drakkar_raft::Status)> =
            statuses.iter().filter(|(_, s)| s.soft_state.role == drakkar_raft::Role::Leader).collect();
        match leaders.as_slice() {
            [] => Some("no leader after settling".to_string()),
            [(leader, ls)] => {
                let members: BTreeSet<ReplicaId> = ls.membership.members().collect();
                let behind: Vec<String> = statuses
                    .iter()
                    .filter(|(id, s)| members.contains(id) && s.hard_state.commit < ls.hard_state.commit)
                    .map(|(id, s)| format!("{id} at {}", s.hard_state.commit))
                    .collect();
                (!behind.is_empty()).then(|| {
                    format!(
                        "leader {leader} committed {}; behind: {}",
                        ls.hard_state.commit,
                        behind.join(", ")
                    )
                })
            }
            _ => Some(format!("{} leaders after settling", leaders.len())),
        }
    }

    /// The last events and every replica's status, for debugging a schedule.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for l in &self.trace {
            let _ = writeln!(s, "{l}");
        }
        for r in self.replicas.values() {
            match &r.node {
                Some(n) => {
                    let st = n.status();
                    let _ = writeln!(
                        s,
                        "replica {}: {:?} term {} leader {:?} commit {} applied {} last {} persisted {} {} pending {}",
                        r.id,
                        st.soft_state.role,
                        st.hard_state.term,
                        st.soft_state.leader,
                        st.hard_state.commit,
                        st.applied,
                        st.last_index,
                        st.persisted,
                        st.membership,
                        r.pending.len()
                    );
                    for (id, pr) in &st.progress {
                        let _ = writeln!(
                            s,
                            "  progress {id}: {:?} match {} next {} inflight {} probe_sent {} active {}",
                            pr.state,
                            pr.matched,
                            pr.next,
                            pr.inflights.count(),
                            pr.probe_sent,
                            pr.recent_active
                        );
                    }
                }
                None => {
                    let _ = writeln!(s, "replica {}: down", r.id);
                }
            }
        }
        s
    }

    /// Runs `n` steps without the final settling phase (debugging).
    pub fn run_steps(&mut self, n: usize) -> Result<(), Box<SimFailure>> {
        for _ in 0..n {
            self.random_action();
            self.check()?;
            self.step += 1;
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), Box<SimFailure>> {
        let nodes: Vec<(ReplicaId, &RawNode<MemStorage>)> =
            self.replicas.values().filter_map(|r| r.node.as_ref().map(|n| (r.id, n))).collect();
        if let Err(violation) = self.checker.check_nodes(&nodes, &mut self.report) {
            return Err(Box::new(SimFailure {
                seed: self.seed,
                step: self.step,
                violation,
                trace: self.trace.iter().fold(String::new(), |mut s, l| {
                    let _ = writeln!(s, "{l}");
                    s
                }),
            }));
        }
        Ok(())
    }

    fn random_ids(&mut self) -> Vec<ReplicaId> {
        self.replicas.keys().copied().collect()
    }

    fn pick(&mut self) -> ReplicaId {
        let ids = self.random_ids();
        ids[self.rng.range(0, ids.len() as u64) as usize]
    }

    fn random_action(&mut self) {
        // Logical time advances for everyone together (clocks run at the same rate; scheduling and
        // delivery are what vary).
        if self.step.is_multiple_of(4 * self.replicas.len()) {
            for id in self.random_ids() {
                self.tick(id);
            }
        }
        let id = self.pick();
        let roll = self.rng.range(0, 1000);
        match roll {
            0..=379 => {
                for _ in 0..self.rng.range(1, 4) {
                    if !self.net.is_empty() {
                        let i = self.rng.range(0, self.net.len() as u64) as usize;
                        self.deliver(i);
                    }
                }
            }
            380..=579 => self.process_ready(id),
            580..=749 => self.persist(id),
            750..=849 => self.propose(id),
            850..=919 => self.read(id),
            920..=939 => self.snapshot(id),
            940..=954 if self.cfg.conf_changes => self.conf_change(id),
            955..=959 => self.transfer(id),
            960..=962 if self.cfg.crashes => self.crash(id),
            963..=989 if self.cfg.crashes => self.restart(id),
            990..=999 if self.cfg.partitions => self.partition(),
            _ => self.tick(id),
        }
    }

    fn node(&mut self, id: ReplicaId) -> Option<&mut RawNode<MemStorage>> {
        self.replicas.get_mut(&id).and_then(|r| r.node.as_mut())
    }

    fn tick(&mut self, id: ReplicaId) {
        if let Some(n) = self.node(id) {
            n.tick();
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            if m.kind == MessageKind::Snapshot
                && m.snapshot.as_ref().is_some_and(|s| s.meta.membership.role(m.to).is_none())
            {
                // As the NodeHost does: the latest snapshot predates the receiver's addition and Raft would
                // refuse it; take a new one (it includes the receiver) and let the leader retry.
                self.log(|| format!("snapshot for {} predates it: a new one is wanted", m.to));
                self.snapshot_wanted.insert(m.from);
                self.snapshot(m.from);
                self.report_snapshot(m.from, m.to, false);
                continue;
            }
            if self.rng.chance(self.cfg.drop_pct, 100) {
                // As the NodeHost's transport does, a snapshot's fate is reported to its sender.
                if m.kind == MessageKind::Snapshot {
                    self.report_snapshot(m.from, m.to, false);
                }
                continue;
            }
            let copies = if self.rng.chance(self.cfg.dup_pct, 100) { 2 } else { 1 };
            for _ in 0..copies {
                let at = self.step + self.rng.range(0, self.cfg.max_delay + 1) as usize;
                self.net.push((at, m.clone()));
            }
        }
    }

    fn deliver(&mut self, i: usize) {
        if i >= self.net.len() {
            return;
        }
        // Messages not yet due are skipped over (delay); a due one may overtake older ones (reordering).
        if self.net[i].0 > self.step && !self.settling {
            return;
        }
        let (_, m) = self.net.swap_remove(i);
        let snapshot = (m.kind == MessageKind::Snapshot).then_some((m.from, m.to));
        if let Some(cut) = &self.cut
            && cut.contains(&m.from) != cut.contains(&m.to)
        {
            if let Some((from, to)) = snapshot {
                self.report_snapshot(from, to, false);
            }
            return;
        }
        let line = m.to_string();
        self.log(|| format!("deliver {line}"));
        let to = m.to;
        let delivered = match self.node(to) {
            Some(n) => {
                if let Err(e) = n.step(m) {
                    self.fail_later(Violation::Step(to, e.to_string()));
                }
                true
            }
            None => false,
        };
        if let Some((from, to)) = snapshot {
            self.report_snapshot(from, to, delivered);
        }
    }

    /// Tells the sender of a snapshot whether it reached `to` (the transport's duty).
    fn report_snapshot(&mut self, from: ReplicaId, to: ReplicaId, ok: bool) {
        self.log(|| format!("report snapshot {from}->{to} {}", if ok { "delivered" } else { "failed" }));
        if let Some(n) = self.node(from) {
            n.report_snapshot(to, ok);
        }
    }

    /// Takes a `Ready`: sends what may go now, applies committed entries, queues the write.
    fn process_ready(&mut self, id: ReplicaId) {
        let Some(r) = self.replicas.get_mut(&id) else { return };
        let Some(node) = r.node.as_mut() else { return };
        if !node.has_ready() {
            return;
        }
        let rd = match node.ready() {
            Ok(rd) => rd,
            Err(e) => return self.fail_later(Violation::Step(id, e.to_string())),
        };
        if let Some(ss) = rd.soft_state
            && ss.role == Role::Leader
        {
            self.report.elections += 1;
        }
        if let Some(s) = &rd.snapshot {
            // The state machine restores from the snapshot before applying anything after it.
            r.app = AppState::decode(s.meta.index, &s.data);
            self.report.snapshots_installed += 1;
        }
        let mut acked = Vec::new();
        for e in &rd.committed_entries {
            match e.kind {
                EntryKind::Normal if !e.data.is_empty() => {
                    r.app.apply(&e.data);
                    if let Some(op) = r.writes.remove(&e.data) {
                        acked.push((op, r.app.count));
                    }
                }
                EntryKind::ConfChange => {
                    if let Some(cc) = ConfChange::decode(&e.data)
                        && node.apply_conf_change(&cc).is_ok()
                        && self.conf_applied.insert(e.index)
                        && e.index.0 > self.cfg.voters
                    {
                        self.report.conf_changes += 1;
                    }
                }
                _ => {}
            }
            r.app.applied = e.index;
            self.checker.applied(id, e, r.app.count, r.app.hash);
        }
        if let Some(last) = rd.committed_entries.last() {
            node.advance_apply_to(last.index);
        }
        for rs in &rd.read_states {
            if let Some(op) = r.reads.remove(&rs.context) {
                r.ready_reads.push((rs.index, op));
            }
        }
        let app = r.app;
        let mut done_reads = Vec::new();
        r.ready_reads.retain(|&(index, op)| {
            if app.applied >= index {
                done_reads.push(op);
                false
            } else {
                true
            }
        });
        r.pending.push_back(PendingWrite {
            number: rd.number(),
            snapshot: rd.snapshot.clone(),
            entries: rd.entries.clone(),
            hard_state: rd.hard_state,
            after: rd.persisted_messages.clone(),
        });
        let msgs = rd.messages.clone();
        let step = self.step;
        for (op, pos) in acked {
            self.checker.write_acked(op, pos, step);
            self.report.writes_acked += 1;
        }
        for op in done_reads {
            self.checker.read_done(op, app.count, step);
            self.report.reads_done += 1;
        }
        let n = msgs.len();
        self.log(|| format!("ready {id}: {n} msgs, committed up to {}", app.applied));
        self.send(msgs);
    }

    /// Makes the oldest handed-out write durable.
    fn persist(&mut self, id: ReplicaId) {
        let Some(r) = self.replicas.get_mut(&id) else { return };
        let Some(node) = r.node.as_mut() else { return };
        let Some(w) = r.pending.pop_front() else { return };
        let store = node.storage_mut();
        let mut res = Ok(());
        if let Some(s) = w.snapshot {
            res = store.apply_snapshot(s);
        }
        if res.is_ok() {
            res = store.append(&w.entries);
        }
        if let Some(hs) = w.hard_state {
            store.set_hard_state(hs);
        }
        if let Err(e) = res {
            return self.fail_later(Violation::Step(id, format!("persist: {e}")));
        }
        node.on_persisted(w.number);
        let drained = r.pending.is_empty();
        self.log(|| format!("persist {id} #{}", w.number));
        self.send(w.after);
        if drained && self.snapshot_wanted.contains(&id) {
            self.snapshot(id);
        }
    }

    fn propose(&mut self, id: ReplicaId) {
        let op = self.next_op;
        self.next_op += 1;
        let data = Bytes::from(format!("w{op}"));
        let step = self.step;
        let Some(r) = self.replicas.get_mut(&id) else { return };
        let Some(node) = r.node.as_mut() else { return };
        if node.propose(data.clone()).is_ok() {
            r.writes.insert(data, OpId(op));
            self.checker.write_invoked(OpId(op), step);
        }
    }

    fn read(&mut self, id: ReplicaId) {
        if self.checker.is_witness(id) {
            // A witness has no data to read.
            return;
        }
        let op = self.next_op;
        self.next_op += 1;
        let ctx = Bytes::from(format!("r{op}"));
        let step = self.step;
        let Some(r) = self.replicas.get_mut(&id) else { return };
        let Some(node) = r.node.as_mut() else { return };
        if node.read_index(ctx.clone()).is_ok() {
            r.reads.insert(ctx, OpId(op));
            self.checker.read_invoked(OpId(op), step);
        }
    }

    fn snapshot(&mut self, id: ReplicaId) {
        let Some(r) = self.replicas.get_mut(&id) else { return };
        let Some(node) = r.node.as_mut() else { return };
        if !r.pending.is_empty() {
            // The applied state may come from a snapshot not yet durable; a host snapshots only state whose
            // inputs are durable (here: once its writes have drained).
            return;
        }
        let applied = r.app.applied;
        let membership = node.status().membership;
        let data = r.app.encode();
        // Snapshots cover only durable, applied entries; keep a few entries for slow followers.
        let store = node.storage_mut();
        if store.create_snapshot(applied, membership, data).is_ok() {
            self.snapshot_wanted.remove(&id);
            let keep = LogIndex(applied.0.saturating_sub(3));
            let _ = store.compact(keep);
            self.log(|| format!("snapshot {id} at {applied}"));
        }
    }

    fn conf_change(&mut self, id: ReplicaId) {
        let members: Vec<(ReplicaId, drakkar_raft::MemberRole)> = {
            let Some(node) = self.node(id) else { return };
            let m = node.status().membership;
            m.members().filter_map(|r| m.role(r).map(|role| (r, role))).collect()
        };
        let roll = self.rng.range(0, 4);
        let cc = match roll {
            0 | 1 if self.next_id <= self.cfg.voters + self.cfg.spare_ids => {
                let new = ReplicaId(self.next_id);
                let kind = match self.rng.range(0, 4) {
                    0 => ConfChangeKind::AddVoter,
                    1 => ConfChangeKind::AddWitness,
                    _ => ConfChangeKind::AddNonVoter,
                };
                ConfChange { kind, replica: new, context: Bytes::new() }
            }
            2 => {
                let Some(&(r, _)) =
                    members.iter().find(|(_, role)| *role == drakkar_raft::MemberRole::NonVoter)
                else {
                    return;
                };
                ConfChange { kind: ConfChangeKind::Promote, replica: r, context: Bytes::new() }
            }
            _ => {
                if members.len() <= 3 {
                    return;
                }
                let (r, _) = members[self.rng.range(0, members.len() as u64) as usize];
                ConfChange { kind: ConfChangeKind::Remove, replica: r, context: Bytes::new() }
            }
        };
        let Some(node) = self.node(id) else { return };
        if node.propose_conf_change(&cc).is_ok_and(|i| i.is_some()) {
            self.log(|| format!("propose conf change {cc} on {id}"));
            if matches!(
                cc.kind,
                ConfChangeKind::AddVoter | ConfChangeKind::AddNonVoter | ConfChangeKind::AddWitness
            ) && cc.replica.0 == self.next_id
            {
                self.next_id += 1;
                if cc.kind == ConfChangeKind::AddWitness {
                    self.checker.mark_witness(cc.replica);
                }
                self.add_replica(cc.replica, MemStorage::new_joining());
            }
        }
    }

    fn transfer(&mut self, id: ReplicaId) {
        let target = self.pick();
        if let Some(n) = self.node(id) {
            let _ = n.transfer_leader(target);
        }
    }

    fn crash(&mut self, id: ReplicaId) {
        let alive = self.replicas.values().filter(|r| r.node.is_some()).count();
        let Some(r) = self.replicas.get_mut(&id) else { return };
        if alive <= 1 {
            return;
        }
        let Some(node) = r.node.take() else { return };
        r.disk = node.storage().clone();
        r.pending.clear();
        r.writes.clear();
        r.reads.clear();
        r.ready_reads.clear();
        self.report.crashes += 1;
        self.log(|| format!("crash {id}"));
    }

    fn restart(&mut self, id: ReplicaId) {
        let Some(mut r) = self.replicas.remove(&id) else { return };
        if r.node.is_none() {
            self.start(&mut r);
            self.log(|| format!("restart {id}"));
        }
        self.replicas.insert(id, r);
    }

    fn partition(&mut self) {
        if self.cut.is_some() {
            self.cut = None;
            self.log(|| "heal".into());
            return;
        }
        let ids = self.random_ids();
        let k = self.rng.range(1, (ids.len() as u64).div_ceil(2));
        let mut cut = BTreeSet::new();
        while (cut.len() as u64) < k {
            cut.insert(ids[self.rng.range(0, ids.len() as u64) as usize]);
        }
        let s = format!("{cut:?}");
        self.log(|| format!("partition {s}"));
        self.cut = Some(cut);
    }
}

/// Runs one schedule.
pub fn simulate(seed: u64, cfg: SimConfig) -> Result<SimReport, Box<SimFailure>> {
    Sim::new(seed, cfg).run()
}
