//! The workload: concurrent clients doing linearizable reads, writes and compare-and-swaps on a few
//! keys in each KV group, with unique values, recording every operation in a [`History`].
//!
//! Each client (a "process") runs one operation at a time through a [`Client`] of one node, making a
//! single attempt per operation (the client's own retries are off, so an answer is about this attempt
//! only); after an error it moves to the next node. Writes go through client sessions, as applications'
//! do. Outcomes (see `docs/api.md`, error table):
//!
//! - an answer: `ok`;
//! - a refusal proving the request never entered the log (`no-leader`, `leader-transfer`,
//!   `conf-change-pending`, `busy`, `rate-limited`, `group-not-found`, `invalid`): `fail`;
//! - anything else for a write (a deadline, a lost connection, `UNAVAILABLE` without a reason): `unknown`,
//!   it may or may not have been applied. A read that failed in any way is `fail` (it changed nothing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use drakkar_client::pb::{self, Consistency};
use drakkar_client::{Client, ClientConfig, ClientError, reason};
use tokio::sync::Mutex;

use crate::history::{Key, Op, OpKind, Outcome, Reply, Value};

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
    /// The node it was sent to: an index into the clients (the endpoints) the workload ran with.
    pub node: usize,
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
}

/// How an error of an attempt counts.
pub fn classify(err: &ClientError, read: bool) -> Outcome {
    if read {
        return Outcome::Fail;
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
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One client per node, single attempt per call, exactly-once writes.
pub fn node_clients(base: &ClientConfig, request_timeout: Duration) -> Result<Vec<Client>, ClientError> {
    base.endpoints
        .iter()
        .map(|e| {
            let mut cfg = base.clone();
            cfg.endpoints = vec![e.clone()];
            cfg.request_timeout = request_timeout;
            cfg.retry_for = Duration::ZERO;
            cfg.exactly_once = true;
            Client::new(cfg)
        })
        .collect()
}

/// Runs the workload until `opts.duration` has passed since `start`; `start` is the time origin of the
/// history.
pub async fn run(clients: Vec<Client>, opts: &WorkloadOptions, start: Instant, seed: u64) -> History {
    let keys = Arc::new(keys(opts));
    let clients = Arc::new(clients);
    // Operations with their samples, kept together until they are sorted.
    let recorded: Arc<Mutex<Vec<(Op, Sample)>>> = Arc::default();
    let errors: Arc<Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
    let end = start + opts.duration;
    let reads = opts.reads;
    let per_client_interval =
        (opts.rate > 0).then(|| Duration::from_secs_f64(opts.concurrency as f64 / opts.rate as f64));
    let mut tasks = Vec::new();
    for p in 0..opts.concurrency {
        let (keys, clients) = (keys.clone(), clients.clone());
        let (recorded, errors) = (recorded.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed ^ (p as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut node = p % clients.len();
            let mut seq = 0u64;
            // The last value this client saw per key: what its compare-and-swaps expect.
            let mut seen: std::collections::HashMap<usize, Option<Value>> = Default::default();
            let mut next_at = Instant::now();
            while Instant::now() < end {
                if let Some(iv) = per_client_interval {
                    let now = Instant::now();
                    if next_at > now {
                        tokio::time::sleep(next_at - now).await;
                    }
                    next_at += iv;
                }
                let ki = rng.below(keys.len());
                let k = &keys[ki];
                seq += 1;
                let value = format!("{p}-{seq}").into_bytes();
                let kind = match rng.below(10) {
                    0..=3 => OpKind::Read,
                    4..=6 => OpKind::Write { value },
                    _ => OpKind::Cas { expected: seen.get(&ki).cloned().flatten(), new: value },
                };
                let sent_to = node;
                let client = &clients[node];
                let invoke = start.elapsed();
                let result = execute(client, k, &kind, reads).await;
                let done = start.elapsed();
                let (outcome, err) = match result {
                    Ok(reply) => {
                        match (&kind, &reply) {
                            (_, Reply::Read(v)) => {
                                seen.insert(ki, v.clone());
                            }
                            (OpKind::Write { value }, _)
                            | (OpKind::Cas { new: value, .. }, Reply::Cas(true)) => {
                                seen.insert(ki, Some(value.clone()));
                            }
                            _ => {}
                        }
                        (Outcome::Ok(reply), None)
                    }
                    Err(e) => {
                        node = (node + 1) % clients.len();
                        (classify(&e, kind == OpKind::Read), Some(error_label(&e)))
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
                recorded.lock().await.push((op, sample));
                if let Some(e) = err {
                    *errors.lock().await.entry(e).or_default() += 1;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut recorded = std::mem::take(&mut *recorded.lock().await);
    recorded.sort_by_key(|(op, _)| op.invoke);
    let (ops, samples) = recorded.into_iter().unzip();
    History { ops, samples, errors: std::mem::take(&mut *errors.lock().await) }
}

/// Runs one operation (reads with `reads` consistency).
pub async fn execute(
    client: &Client,
    k: &WorkloadKey,
    kind: &OpKind,
    reads: Consistency,
) -> Result<Reply, ClientError> {
    let key = bytes::Bytes::from(k.key.clone());
    match kind {
        OpKind::Read => {
            let kv = client.get(k.group, key, reads).await?;
            Ok(Reply::Read(kv.map(|kv| kv.value.to_vec())))
        }
        OpKind::Write { value } => {
            client.put(k.group, key, value.clone()).await?;
            Ok(Reply::Written)
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
            Ok(Reply::Cas(r.succeeded))
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
        assert_eq!(classify(&status(tonic_code::UNAVAILABLE, Some("no-leader")), false), Outcome::Fail);
        assert_eq!(classify(&status(tonic_code::UNAVAILABLE, None), false), Outcome::Unknown);
        assert_eq!(classify(&status(tonic_code::DEADLINE, None), false), Outcome::Unknown);
        assert_eq!(classify(&status(tonic_code::UNAVAILABLE, Some("stopped")), false), Outcome::Unknown);
        assert_eq!(classify(&status(tonic_code::DEADLINE, None), true), Outcome::Fail);
    }

    mod tonic_code {
        pub const UNAVAILABLE: tonic::Code = tonic::Code::Unavailable;
        pub const DEADLINE: tonic::Code = tonic::Code::DeadlineExceeded;
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
        };
        let ks = keys(&opts);
        assert_eq!(ks.len(), 4);
        assert_eq!(ks[0], WorkloadKey { group: 1, key: b"check/x/0".to_vec() });
        assert_eq!(ks[3].history_key(), b"g2/check/x/1".to_vec());
    }
}
