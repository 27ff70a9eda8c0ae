//! The workloads: concurrent clients doing linearizable reads, writes, compare-and-swaps and
//! transactions on a few keys in each KV group, with unique values, recording every operation in a
//! [`History`]. Each client (a "process") runs one operation at a time, in one of the ways users do
//! ([`Workload`]): processes are given the selected workloads in turn.
//!
//! | workload | client | operations |
//! |---|---|---|
//! | `register` | a client of one node, one attempt per operation, writes in a session; after an error the next node | 40% reads, 30% writes, 30% compare-and-swaps |
//! | `retries` | the default Rust client over every node: retries on, exactly-once sessions, **one client (one session per group) shared by every `retries` process** | 30% reads, 30% writes, 20% compare-and-swaps, 20% transactions |
//! | `plain` | a client of one node, one attempt, **no session** (what grpcurl or an app on the generated stubs does) | 40% reads, 30% writes, 30% compare-and-swaps |
//! | `txn` | as `register` | 40% reads, 60% transactions (`Kv.Txn`: compare the value, then put and get, or only get) |
//! | `replicas` | as `register`, but sent to the replica node, whose replicas are a non-voter (first group) and a witness (second group) | 40% reads, 20% writes, 20% compare-and-swaps, 20% transactions |
//! | `plain-retries` | as `plain`, but the process sends an operation again after any error, on the next node (a naive application); not in `mix`: a retried plain write may be applied twice, which the check should then reject | as `plain` |
//!
//! Every reply reports the key's version as well as its value (the history's `*Versioned` replies), so
//! a write applied twice shows as a version that went up by two, which the checker rejects.
//!
//! Outcomes (see `docs/api.md`, error table):
//!
//! - an answer: `ok`;
//! - for a single attempt, a refusal proving the request never entered the log (`no-leader`,
//!   `leader-transfer`, `conf-change-pending`, `busy`, `rate-limited`, `group-not-found`, `invalid`):
//!   `fail`;
//! - anything else for a write (a deadline, a lost connection, `UNAVAILABLE` without a reason, a plain
//!   write's `ABORTED` `possible-duplicate`), and any error of a write made with retries (an earlier
//!   attempt may have been applied): `unknown`, it may or may not have been applied. A read that failed
//!   in any way is `fail` (it changed nothing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use drakkar_client::pb::{self, Consistency};
use drakkar_client::{Client, ClientConfig, ClientError, reason};
use tokio::sync::Mutex;

use crate::history::{Key, Op, OpKind, Outcome, Reply, Value};

/// What a workload's clients do and how they reach the cluster (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
#[non_exhaustive]
pub enum Workload {
    /// One attempt per operation on one node, writes in sessions.
    Register,
    /// The default client with its retries and exactly-once sessions, shared by its processes.
    Retries,
    /// Writes without a session, one attempt.
    Plain,
    /// Transactions (compare, then put and get, or get).
    Txn,
    /// Operations sent to the replica node (a non-voter and a witness replica).
    Replicas,
    /// Writes without a session that the application itself sends again after any error, on the next
    /// node, until one is answered (a naive client). Not part of `mix`: plain writes are at-least-once
    /// when retried, so the check is expected to fail when a retried write had been applied already.
    PlainRetries,
    /// Every workload above (`replicas` only where there is a replica node).
    Mix,
}

impl Workload {
    /// The concrete workloads `list` stands for (`mix` expanded, no duplicates); `replicas` is left out
    /// of `mix` when `with_replicas` is false.
    pub fn expand(list: &[Workload], with_replicas: bool) -> Vec<Workload> {
        crate::expand(list, |w| match w {
            Workload::Mix if with_replicas => {
                &[Workload::Register, Workload::Retries, Workload::Plain, Workload::Txn, Workload::Replicas]
            }
            Workload::Mix => &[Workload::Register, Workload::Retries, Workload::Plain, Workload::Txn],
            one => std::slice::from_ref(one),
        })
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Retries => "retries",
            Workload::Plain => "plain",
            Workload::Txn => "txn",
            Workload::Replicas => "replicas",
            Workload::PlainRetries => "plain-retries",
            Workload::Mix => "mix",
        }
    }

    /// Whether its clients make one attempt per operation (so a refusal proves a write was not
    /// applied).
    fn single_attempt(self) -> bool {
        !matches!(self, Workload::Retries | Workload::PlainRetries)
    }

    /// The kind of the next operation, from a number below 10 (`percent / 10`).
    fn pick(self, r: usize) -> Pick {
        use Pick::*;
        let table: [Pick; 10] = match self {
            Workload::Retries => [Read, Read, Read, Write, Write, Write, Cas, Cas, Txn, Txn],
            Workload::Txn => [Read, Read, Read, Read, Txn, Txn, Txn, Txn, Txn, Txn],
            Workload::Replicas => [Read, Read, Read, Read, Write, Write, Cas, Cas, Txn, Txn],
            _ => [Read, Read, Read, Read, Write, Write, Write, Cas, Cas, Cas],
        };
        table[r % 10]
    }
}

#[derive(Clone, Copy)]
enum Pick {
    Read,
    Write,
    Cas,
    Txn,
}

/// Workload parameters.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Concurrent clients.
    pub concurrency: usize,
    /// KV groups to use.
    pub groups: Vec<u64>,
    /// Keys per group.
    pub keys_per_group: usize,
    /// Total operations per second over all clients (0: as fast as they go).
    pub rate: u64,
    /// How long to run.
    pub duration: Duration,
    /// Prefix of every key (unique per run, so keys start absent).
    pub key_prefix: String,
    /// Consistency of the workload's reads: `Stale` reads are not linearizable, which the checker
    /// should notice under faults (a way to see it fail).
    pub reads: Consistency,
    /// The workloads, given to the processes in turn (process `p` runs `workloads[p % len]`); concrete
    /// ones only (see [`Workload::expand`]).
    pub workloads: Vec<Workload>,
}

/// A key of the workload: its group and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    /// The group.
    pub group: u64,
    /// The key's bytes in the group.
    pub key: Vec<u8>,
}

impl WorkloadKey {
    /// The history's key: `g<group>/<key>` (keys of different groups are different registers).
    pub fn history_key(&self) -> Key {
        let mut k = format!("g{}/", self.group).into_bytes();
        k.extend_from_slice(&self.key);
        k
    }
}

/// The keys of a workload: `keys_per_group` keys in each group, named `<prefix><i>`.
pub fn keys(opts: &WorkloadOptions) -> Vec<WorkloadKey> {
    opts.groups
        .iter()
        .flat_map(|&group| {
            (0..opts.keys_per_group)
                .map(move |i| WorkloadKey { group, key: format!("{}{i}", opts.key_prefix).into_bytes() })
        })
        .collect()
}

/// One completed operation with its latency and node, for the report.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was invoked, since the start of the run.
    pub at: Duration,
    /// How long it took (for an unknown operation: until its client gave up).
    pub latency: Duration,
    /// `ok`, `fail` or `unknown`.
    pub outcome: &'static str,
    /// The node it was sent to: an index into the nodes the workload ran with ([`Clients`]: the
    /// founding nodes, then the replica nodes), or [`ANY_NODE`] for the `retries` workload, whose client
    /// picks the node.
    pub node: usize,
}

/// [`Sample::node`] of an operation whose client chose the node (and may have tried several).
pub const ANY_NODE: usize = usize::MAX;

/// The clients the workloads use.
pub struct Clients {
    /// One per founding node: one attempt per call, writes in sessions.
    pub session: Vec<Client>,
    /// One per founding node: one attempt per call, writes without a session.
    pub plain: Vec<Client>,
    /// The default client over every founding node (retries, sessions), shared.
    pub shared: Client,
    /// How long the `plain-retries` workload sends an operation again.
    pub retry_for: Duration,
    /// One per replica node (one attempt, sessions); their [`Sample::node`] follows the founding nodes'.
    pub replicas: Vec<Client>,
}

/// What a run recorded.
#[derive(Debug, Default)]
pub struct History {
    /// Every operation, by invocation time.
    pub ops: Vec<Op>,
    /// Per operation of the workload, when it was invoked, how long it took and where it went:
    /// `samples[i]` is about `ops[i]` (operations added after the workload, such as the final reads,
    /// have none).
    pub samples: Vec<Sample>,
    /// Error messages by count (`code/reason` -> count), for the report.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// The workload of each operation of `samples` (`workloads[i]` ran `ops[i]`).
    pub workloads: Vec<&'static str>,
}

/// How an error counts: `single_attempt`, the error is the answer to the only attempt made.
pub fn classify(err: &ClientError, read: bool, single_attempt: bool) -> Outcome {
    if read {
        return Outcome::Fail;
    }
    if !single_attempt {
        // The last attempt's refusal says nothing about the earlier ones.
        return Outcome::Unknown;
    }
    let definite = match err {
        ClientError::Status { reason: Some(r), .. } => matches!(
            r.as_str(),
            reason::NO_LEADER
                | reason::LEADER_TRANSFER
                | reason::CONF_CHANGE_PENDING
                | reason::BUSY
                | reason::RATE_LIMITED
                | reason::GROUP_NOT_FOUND
                | reason::INVALID
        ),
        // Refused before anything was sent.
        ClientError::Endpoint { .. } | ClientError::NoEndpoints | ClientError::InvalidRequest(_) => true,
        _ => false,
    };
    if definite { Outcome::Fail } else { Outcome::Unknown }
}

/// An error as the report counts it: `Code/reason` (`Unavailable/no-leader`), the code alone, or the
/// client's message for errors that are not a gRPC status.
pub fn error_label(err: &ClientError) -> String {
    match err {
        ClientError::Status { code, reason, .. } => match reason {
            Some(r) => format!("{code:?}/{r}"),
            None => format!("{code:?}"),
        },
        other => other.to_string(),
    }
}

/// A small deterministic generator (xorshift64*), seeded per client.
/// One client per endpoint, single attempt per call, writes in sessions (`exactly_once`) or plain.
pub fn node_clients(
    base: &ClientConfig,
    request_timeout: Duration,
    exactly_once: bool,
) -> Result<Vec<Client>, ClientError> {
    base.endpoints
        .iter()
        .map(|e| {
            let mut cfg = base.clone();
            cfg.endpoints = vec![e.clone()];
            cfg.request_timeout = request_timeout;
            cfg.retry_for = Duration::ZERO;
            cfg.exactly_once = exactly_once;
            Client::new(cfg)
        })
        .collect()
}

/// The clients of every workload: per-node ones for `base`'s endpoints (the founding nodes) and
/// `replica_endpoints`, and the shared default client, with retries for `retry_for`.
pub fn clients(
    base: &ClientConfig,
    replica_endpoints: &[String],
    request_timeout: Duration,
    retry_for: Duration,
) -> Result<Clients, ClientError> {
    let mut shared = base.clone();
    shared.request_timeout = request_timeout;
    shared.retry_for = retry_for;
    shared.exactly_once = true;
    let mut replica_cfg = base.clone();
    replica_cfg.endpoints = replica_endpoints.to_vec();
    Ok(Clients {
        session: node_clients(base, request_timeout, true)?,
        plain: node_clients(base, request_timeout, false)?,
        shared: Client::new(shared)?,
        retry_for,
        replicas: node_clients(&replica_cfg, request_timeout, true)?,
    })
}

/// Everything one process records.
#[derive(Default)]
struct Recorded {
    ops: Vec<(Op, Sample, &'static str)>,
    errors: std::collections::BTreeMap<String, u64>,
}

/// Runs the workloads until `opts.duration` has passed since `start`; `start` is the time origin of
/// the history.
pub async fn run(clients: Clients, opts: &WorkloadOptions, start: Instant, seed: u64) -> History {
    let keys = Arc::new(keys(opts));
    let clients = Arc::new(clients);
    let recorded: Arc<Mutex<Recorded>> = Arc::default();
    let end = start + opts.duration;
    let per_client_interval =
        (opts.rate > 0).then(|| Duration::from_secs_f64(opts.concurrency as f64 / opts.rate as f64));
    let workloads = if opts.workloads.is_empty() { vec![Workload::Register] } else { opts.workloads.clone() };
    let mut tasks = Vec::new();
    for p in 0..opts.concurrency {
        let workload = workloads[p % workloads.len()];
        let process = Process {
            p,
            workload,
            keys: keys.clone(),
            clients: clients.clone(),
            recorded: recorded.clone(),
            reads: opts.reads,
            start,
            end,
            interval: per_client_interval,
        };
        tasks.push(tokio::spawn(process.run(seed)));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut recorded = std::mem::take(&mut *recorded.lock().await);
    recorded.ops.sort_by_key(|(op, _, _)| op.invoke);
    let mut history = History { errors: recorded.errors, ..History::default() };
    for (op, sample, workload) in recorded.ops {
        history.ops.push(op);
        history.samples.push(sample);
        history.workloads.push(workload);
    }
    history
}

/// One process of a workload.
struct Process {
    p: usize,
    workload: Workload,
    keys: Arc<Vec<WorkloadKey>>,
    clients: Arc<Clients>,
    recorded: Arc<Mutex<Recorded>>,
    reads: Consistency,
    start: Instant,
    end: Instant,
    interval: Option<Duration>,
}

impl Process {
    /// The clients this process rotates over, and the [`Sample::node`] of the first.
    fn nodes(&self) -> (&[Client], usize) {
        match self.workload {
            Workload::Plain | Workload::PlainRetries => (&self.clients.plain, 0),
            Workload::Replicas => (&self.clients.replicas, self.clients.session.len()),
            Workload::Retries => (std::slice::from_ref(&self.clients.shared), ANY_NODE),
            _ => (&self.clients.session, 0),
        }
    }

    async fn run(self, seed: u64) {
        let p = self.p;
        let mut rng = drakkar_raft::Rng::new(seed ^ (p as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (clients, first_node) = self.nodes();
        if clients.is_empty() {
            return;
        }
        let mut node = p % clients.len();
        let mut seq = 0u64;
        // The last value this client saw per key: what its compare-and-swaps expect.
        let mut seen: std::collections::HashMap<usize, Option<Value>> = Default::default();
        let mut next_at = Instant::now();
        while Instant::now() < self.end {
            if let Some(iv) = self.interval {
                let now = Instant::now();
                if next_at > now {
                    tokio::time::sleep(next_at - now).await;
                }
                next_at += iv;
            }
            let ki = rng.below(self.keys.len());
            let k = &self.keys[ki];
            seq += 1;
            let value = format!("{p}-{seq}").into_bytes();
            let expected = seen.get(&ki).cloned().flatten();
            let kind = match self.workload.pick(rng.below(10)) {
                Pick::Read => OpKind::Read,
                Pick::Write => OpKind::Write { value },
                Pick::Cas => OpKind::Cas { expected, new: value },
                Pick::Txn => OpKind::Txn { expected, new: value },
            };
            let invoke = self.start.elapsed();
            let mut result = execute(&clients[node], k, &kind, self.reads).await;
            // Errors of attempts sent again (`plain-retries`), for the report.
            let mut retried = Vec::new();
            if self.workload == Workload::PlainRetries {
                // Again, on the next node, after any error: the first attempt may have been applied.
                let until = Instant::now() + self.clients.retry_for;
                while let Err(e) = &result
                    && Instant::now() < until
                {
                    retried.push(format!("{} (sent again)", error_label(e)));
                    node = (node + 1) % clients.len();
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    result = execute(&clients[node], k, &kind, self.reads).await;
                }
            }
            let done = self.start.elapsed();
            // The node of the last attempt.
            let sent_to = if first_node == ANY_NODE { ANY_NODE } else { first_node + node };
            let (outcome, err) = match result {
                Ok(reply) => {
                    if let Some(v) = reply.read_value() {
                        seen.insert(ki, v.clone());
                    } else if let Reply::SwapVersioned { value, .. } = &reply {
                        seen.insert(ki, value.clone());
                    } else if let OpKind::Write { value } = &kind {
                        seen.insert(ki, Some(value.clone()));
                    }
                    (Outcome::Ok(reply), None)
                }
                Err(e) => {
                    if let ClientError::Status {
                        code: code @ (tonic::Code::Internal | tonic::Code::Unknown),
                        message,
                        ..
                    } = &e
                    {
                        // A node never answers these (docs/api.md); tonic reports a connection that broke
                        // under a call (a killed node, a dropped connection) as UNKNOWN "transport error".
                        if message.starts_with("transport error") {
                            tracing::debug!(?code, error = %e, "a connection broke under a call");
                        } else {
                            tracing::warn!(?code, error = %e, "an answer no node should give");
                        }
                    }
                    node = (node + 1) % clients.len();
                    let read = kind == OpKind::Read;
                    (classify(&e, read, self.workload.single_attempt()), Some(error_label(&e)))
                }
            };
            let label = match outcome {
                Outcome::Ok(_) => "ok",
                Outcome::Fail => "fail",
                _ => "unknown",
            };
            let op = Op {
                process: p as u64,
                key: k.history_key(),
                kind,
                invoke: invoke.as_nanos() as u64,
                complete: (outcome != Outcome::Unknown).then_some(done.as_nanos() as u64),
                outcome,
            };
            let sample = Sample { at: invoke, latency: done - invoke, outcome: label, node: sent_to };
            let mut r = self.recorded.lock().await;
            r.ops.push((op, sample, self.workload.name()));
            for e in err.into_iter().chain(retried) {
                *r.errors.entry(e).or_default() += 1;
            }
        }
    }
}

/// Runs one operation (reads with `reads` consistency); the reply reports the key's version.
pub async fn execute(
    client: &Client,
    k: &WorkloadKey,
    kind: &OpKind,
    reads: Consistency,
) -> Result<Reply, ClientError> {
    let key = bytes::Bytes::from(k.key.clone());
    let version = |kv: &Option<pb::KeyValue>| kv.as_ref().and_then(|kv| kv.meta).map_or(0, |m| m.version);
    match kind {
        OpKind::Read => {
            let kv = client.get(k.group, key, reads).await?;
            Ok(Reply::ReadVersioned { version: version(&kv), value: kv.map(|kv| kv.value.to_vec()) })
        }
        OpKind::Write { value } => {
            let r = client.put(k.group, key, value.clone()).await?;
            let new =
                r.new.ok_or_else(|| ClientError::Protocol("a put answered without its version".into()))?;
            Ok(Reply::WrittenVersioned { version: new.version })
        }
        OpKind::Cas { expected, new } => {
            let expected = Some(match expected {
                Some(v) => pb::compare_and_swap_request::Expected::ExpectedValue(v.clone().into()),
                None => pb::compare_and_swap_request::Expected::ExpectedAbsent(true),
            });
            let req = pb::CompareAndSwapRequest {
                group: k.group,
                key,
                expected,
                new: Some(pb::compare_and_swap_request::New::PutValue(new.clone().into())),
                session: None,
            };
            let r = client.compare_and_swap(req).await?;
            // `prev` is the key before a swap (which adds one to its version), or as it was when the
            // compare failed.
            let before = version(&r.prev);
            Ok(if r.succeeded {
                Reply::SwapVersioned { succeeded: true, value: Some(new.clone()), version: before + 1 }
            } else {
                Reply::SwapVersioned {
                    succeeded: false,
                    value: r.prev.map(|kv| kv.value.to_vec()),
                    version: before,
                }
            })
        }
        OpKind::Txn { expected, new } => {
            let target = match expected {
                Some(v) => pb::compare::Target::Value(v.clone().into()),
                // An absent key compares as version 0 (docs/kv.md).
                None => pb::compare::Target::Version(0),
            };
            let get = pb::TxnOp { op: Some(pb::txn_op::Op::Get(key.clone())) };
            let put = pb::TxnOp {
                op: Some(pb::txn_op::Op::Put(pb::PutOp { key: key.clone(), value: new.clone().into() })),
            };
            let req = pb::TxnRequest {
                group: k.group,
                compares: vec![pb::Compare { key, op: pb::CompareOp::Equal as i32, target: Some(target) }],
                success: vec![put, get.clone()],
                failure: vec![get],
                session: None,
            };
            let r = client.txn(req).await?;
            // The branch's last result is its get: the key after the transaction.
            let kv = match r.results.last().and_then(|res| res.result.as_ref()) {
                Some(pb::txn_op_result::Result::Get(g)) => g.kv.clone(),
                other => return Err(ClientError::Protocol(format!("a txn's get answered {other:?}"))),
            };
            Ok(Reply::SwapVersioned {
                succeeded: r.succeeded,
                version: version(&kv),
                value: kv.map(|kv| kv.value.to_vec()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_fail_and_ambiguous_errors_are_unknown() {
        let status = |code, reason: Option<&str>| ClientError::Status {
            code,
            message: String::new(),
            reason: reason.map(str::to_string),
            leader: None,
            endpoint: "e".into(),
        };
        let once = |e: &ClientError| classify(e, false, true);
        assert_eq!(once(&status(tonic_code::UNAVAILABLE, Some("no-leader"))), Outcome::Fail);
        assert_eq!(once(&status(tonic_code::UNAVAILABLE, None)), Outcome::Unknown);
        assert_eq!(once(&status(tonic_code::DEADLINE, None)), Outcome::Unknown);
        assert_eq!(once(&status(tonic_code::UNAVAILABLE, Some("stopped"))), Outcome::Unknown);
        assert_eq!(classify(&status(tonic_code::DEADLINE, None), true, true), Outcome::Fail);
        // A plain write that reached the log too late to tell from a copy: another copy may have been
        // applied. Indeterminate, not a failure.
        assert_eq!(once(&status(tonic_code::ABORTED, Some("possible-duplicate"))), Outcome::Unknown);
        // After retries, even a refusal is the last attempt's only: an earlier one may have applied.
        assert_eq!(
            classify(&status(tonic_code::UNAVAILABLE, Some("no-leader")), false, false),
            Outcome::Unknown
        );
        assert_eq!(classify(&status(tonic_code::UNAVAILABLE, Some("no-leader")), true, false), Outcome::Fail);
    }

    mod tonic_code {
        pub const UNAVAILABLE: tonic::Code = tonic::Code::Unavailable;
        pub const DEADLINE: tonic::Code = tonic::Code::DeadlineExceeded;
        pub const ABORTED: tonic::Code = tonic::Code::Aborted;
    }

    #[test]
    fn mix_expands_to_every_workload_and_processes_take_turns() {
        let all = Workload::expand(&[Workload::Mix], true);
        assert_eq!(
            all,
            vec![Workload::Register, Workload::Retries, Workload::Plain, Workload::Txn, Workload::Replicas]
        );
        assert!(!Workload::expand(&[Workload::Mix], false).contains(&Workload::Replicas));
        assert_eq!(Workload::expand(&[Workload::Plain, Workload::Plain], false), vec![Workload::Plain]);
        assert!(Workload::Register.single_attempt() && !Workload::Retries.single_attempt());
        // Retrying plain writes is at-least-once: never part of the default, and its errors are unknown.
        assert!(!all.contains(&Workload::PlainRetries) && !Workload::PlainRetries.single_attempt());
        // Every operation kind a workload lists comes up.
        for w in &all {
            let kinds: std::collections::HashSet<u8> = (0..10)
                .map(|r| match w.pick(r) {
                    Pick::Read => 0,
                    Pick::Write => 1,
                    Pick::Cas => 2,
                    Pick::Txn => 3,
                })
                .collect();
            assert!(kinds.contains(&0), "{w:?} reads");
            assert!(kinds.len() >= 2, "{w:?} writes");
        }
    }

    #[test]
    fn keys_are_spread_over_groups_with_the_prefix() {
        let opts = WorkloadOptions {
            concurrency: 1,
            groups: vec![1, 2],
            keys_per_group: 2,
            rate: 0,
            duration: Duration::ZERO,
            key_prefix: "check/x/".into(),
            reads: Consistency::Linearizable,
            workloads: vec![Workload::Register],
        };
        let ks = keys(&opts);
        assert_eq!(ks.len(), 4);
        assert_eq!(ks[0], WorkloadKey { group: 1, key: b"check/x/0".to_vec() });
        assert_eq!(ks[3].history_key(), b"g2/check/x/1".to_vec());
    }
}
