//! Load generation for `drakkar bench`: one closed-loop generator, several targets.
//!
//! [`run`] keeps [`Workload::in_flight`] requests outstanding against a [`Target`] for a warm-up and then
//! a measured window, and returns a [`Report`] (ops/s, latency percentiles from an HDR histogram, errors,
//! CPU). The targets:
//!
//! - [`grpc::GrpcTarget`]: Drakkar nodes over (TLS) gRPC, each group's requests sent to its leader.
//! - [`embedded::Embedded`]: NodeHosts in this process on the in-process transport; requests are
//!   proposals made from inside the process (Dragonboat's benchmark method).
//! - [`etcd::EtcdTarget`]: an etcd v3 cluster, requests sent to its leader.
//!
//! [`idle::measure`] measures what idle groups cost (RSS, CPU).
//!
//! A request is counted when it starts inside the measured window and completes before the window ends;
//! its latency is recorded in microseconds. Requests that fail or time out count as errors, not as
//! operations.

pub mod embedded;
pub mod etcd;
pub mod grpc;
pub mod idle;
pub mod proc;
mod report;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drakkar_raft::Rng;
use hdrhistogram::Histogram;
use tokio::time::Instant;

pub use report::{Report, print_table, table_header, table_row};

/// Why a benchmark could not run or a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Setting up the target failed (connecting, starting, finding leaders).
    #[error("setting up the target: {0}")]
    Setup(String),
    /// One request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// One request took longer than the workload's timeout.
    #[error("request timed out")]
    Timeout,
    /// The workload makes no sense (zero requests in flight, no keys, ...).
    #[error("invalid workload: {0}")]
    InvalidWorkload(String),
}

/// The kind of requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mix {
    /// Writes only.
    Put,
    /// Reads only.
    Get,
    /// Reads and writes; `read_percent` % of the requests are reads.
    Mixed {
        /// Share of reads, 0..=100.
        read_percent: u8,
    },
}

/// How reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Through the leader (ReadIndex in Drakkar; a quorum read in etcd).
    Linearizable,
    /// From the local replica without coordination (etcd: `serializable`).
    Stale,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Request kinds.
    pub mix: Mix,
    /// How reads are served.
    pub consistency: Consistency,
    /// Keys are drawn uniformly from this many.
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Requests outstanding at any time (closed loop: each completes before its slot issues the next).
    pub in_flight: usize,
    /// Groups the keys are spread over (key `i` in group `i % groups + 1`); etcd ignores it.
    pub groups: u64,
    /// Measured window.
    pub duration: Duration,
    /// Load before the window, not measured.
    pub warmup: Duration,
    /// Deadline of one request.
    pub timeout: Duration,
}

impl Workload {
    /// A short name: `put`, `get-linearizable`, `mixed-90r-stale`.
    pub fn name(&self) -> String {
        let c = match self.consistency {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
        };
        match self.mix {
            Mix::Put => "put".into(),
            Mix::Get => format!("get-{c}"),
            Mix::Mixed { read_percent } => format!("mixed-{read_percent}r-{c}"),
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::InvalidWorkload(m.into()));
        if self.in_flight == 0 {
            return bad("at least one request in flight");
        }
        if self.keys == 0 || self.groups == 0 {
            return bad("at least one key and one group");
        }
        if let Mix::Mixed { read_percent } = self.mix
            && read_percent > 100
        {
            return bad("the read share is a percentage");
        }
        if self.duration.is_zero() {
            return bad("a measured window longer than zero");
        }
        Ok(())
    }

    fn reads(&self) -> bool {
        !matches!(self.mix, Mix::Put)
    }
}

/// One request.
#[derive(Clone, Debug)]
pub enum Op {
    /// Write `value` at `key`.
    Put {
        /// Group of the key (1-based).
        group: u64,
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Read `key`.
    Get {
        /// Group of the key (1-based).
        group: u64,
        /// The key.
        key: Bytes,
        /// How.
        consistency: Consistency,
    },
}

/// Something requests can be sent to.
pub trait Target: Send + Sync + 'static {
    /// Sends `op` on connection slot `slot` (a target with `k` connections uses `slot % k`) and waits for
    /// the answer, at most about `timeout` (a target without deadlines of its own wraps the call in
    /// [`bounded`]).
    fn call(
        &self,
        slot: usize,
        op: Op,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), BenchError>> + Send;
}

/// The key with index `i`: 16 bytes, `key-` and 12 digits (the index modulo 10^12), in a buffer of its
/// own (as a request decoded by a server would be).
pub fn key(i: u64) -> Bytes {
    let mut k = *b"key-000000000000";
    let mut n = i;
    for d in k[4..].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    Bytes::copy_from_slice(&k)
}

/// The next request of a slot. Key and value get buffers of their own, as in a request a server
/// decoded: sharing one buffer between all requests would make every clone in the engine contend on one
/// reference count.
fn op_for(w: &Workload, value: &[u8], rng: &mut Rng) -> Op {
    let i = rng.range(0, w.keys);
    let group = i % w.groups + 1;
    let key = key(i);
    let read = match w.mix {
        Mix::Put => false,
        Mix::Get => true,
        Mix::Mixed { read_percent } => rng.range(0, 100) < u64::from(read_percent),
    };
    if read {
        Op::Get { group, key, consistency: w.consistency }
    } else {
        Op::Put { group, key, value: Bytes::copy_from_slice(value) }
    }
}

/// Writes every key once (before a workload with reads, so reads find values).
async fn populate<T: Target>(target: &Arc<T>, w: &Workload) -> Result<(), BenchError> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..w.in_flight.min(usize::try_from(w.keys).unwrap_or(usize::MAX)) {
        let (target, next, w) = (target.clone(), next.clone(), w.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= w.keys {
                    return Ok(());
                }
                let value = Bytes::from(vec![b'v'; w.value_size]);
                let op = Op::Put { group: i % w.groups + 1, key: key(i), value };
                target.call(slot, op, w.timeout).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| BenchError::Setup(format!("populating: {e}")))??;
    }
    Ok(())
}

/// Bounds `f` by `timeout`, for targets whose calls have no deadline of their own.
pub async fn bounded<F: Future<Output = Result<(), BenchError>>>(
    timeout: Duration,
    f: F,
) -> Result<(), BenchError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::Timeout),
    }
}

/// What one slot measured. Latencies are kept as a plain list and put in one histogram at the end: a
/// histogram per slot is ~200 KiB, and recording into thousands of them missed the cache on every
/// request (6 % of the embedded run's profile).
struct SlotResult {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    // 1 us .. 100 s at 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Runs `w` against `target` and measures it. `driver` names the target in the report; `watch` are
/// process ids whose CPU use during the window is reported (the servers, when they run elsewhere).
pub async fn run<T: Target>(
    target: Arc<T>,
    driver: &str,
    w: &Workload,
    watch: &[u32],
) -> Result<Report, BenchError> {
    w.validate()?;
    if w.reads() {
        populate(&target, w).await?;
    }
    let start = Instant::now();
    let measure_from = start + w.warmup;
    let end = measure_from + w.duration;
    let value = vec![b'v'; w.value_size];
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..w.in_flight {
        let (target, value, w) = (target.clone(), value.clone(), w.clone());
        tasks.spawn(async move {
            let mut rng = Rng::new(slot as u64 + 1);
            let mut out = SlotResult { latencies_us: Vec::new(), errors: 0, first_error: None };
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    return out;
                }
                let op = op_for(&w, &value, &mut rng);
                let r = target.call(slot, op, w.timeout).await;
                let t1 = Instant::now();
                if t0 < measure_from || t1 > end {
                    continue;
                }
                match r {
                    Ok(()) => out.latencies_us.push(u32::try_from((t1 - t0).as_micros()).unwrap_or(u32::MAX)),
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        });
    }
    // CPU is sampled at the window's edges.
    tokio::time::sleep_until(measure_from).await;
    let cpu0 = proc::cpu_seconds(None);
    let watched0: Vec<f64> = watch.iter().map(|p| proc::cpu_seconds(Some(*p))).collect();
    tokio::time::sleep_until(end).await;
    let cpu1 = proc::cpu_seconds(None);
    let watched1: Vec<f64> = watch.iter().map(|p| proc::cpu_seconds(Some(*p))).collect();
    let mut hist = histogram();
    let (mut errors, mut first_error) = (0, None);
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| BenchError::Setup(format!("a load task failed: {e}")))?;
        for us in r.latencies_us {
            hist.saturating_record(u64::from(us.max(1)));
        }
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let secs = w.duration.as_secs_f64();
    let server_cpu = (!watch.is_empty())
        .then(|| watched1.iter().zip(&watched0).map(|(b, a)| b - a).sum::<f64>() / secs * 100.0);
    Ok(Report::new(driver, w, &hist, errors, first_error, (cpu1 - cpu0) / secs * 100.0, server_cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_validation() {
        let mut w = Workload {
            mix: Mix::Mixed { read_percent: 90 },
            consistency: Consistency::Stale,
            keys: 10,
            value_size: 16,
            in_flight: 1,
            groups: 2,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(w.name(), "mixed-90r-stale");
        assert!(w.validate().is_ok());
        w.in_flight = 0;
        assert!(matches!(w.validate(), Err(BenchError::InvalidWorkload(_))));
        w.in_flight = 1;
        w.mix = Mix::Mixed { read_percent: 101 };
        assert!(w.validate().is_err());
    }

    #[test]
    fn ops_follow_the_mix_and_stay_in_range() {
        let w = Workload {
            mix: Mix::Mixed { read_percent: 25 },
            consistency: Consistency::Linearizable,
            keys: 100,
            value_size: 16,
            in_flight: 1,
            groups: 3,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(1),
        };
        let mut rng = Rng::new(7);
        let mut reads = 0;
        assert_eq!(&key(42)[..], b"key-000000000042");
        for _ in 0..10_000 {
            match op_for(&w, b"v", &mut rng) {
                Op::Get { group, key, .. } => {
                    reads += 1;
                    assert!((1..=3).contains(&group));
                    assert_eq!(key.len(), 16);
                }
                Op::Put { group, .. } => assert!((1..=3).contains(&group)),
            }
        }
        assert!((2_000..3_000).contains(&reads), "{reads} reads of 10,000 at 25 %");
    }
}
