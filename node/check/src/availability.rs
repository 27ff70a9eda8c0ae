//! Availability under faults: how long each node takes to serve a linearizable read again once a fault
//! is healed, and the windows in which the workload's operations on a node failed.
//!
//! - **Recovery** ([`probe`]): from the heal (for `kill` and `power-loss`, the restart) every founding node is probed
//!   directly, by a client of that node only with its retries off: a linearizable read of a probe key in
//!   every group, an attempt every [`ProbeOptions::interval`] per (node, group), each with a short
//!   deadline, attempts overlapping while earlier ones wait. A group has recovered on a node at the
//!   completion of its first successful read; the node has recovered when every group has. Probing
//!   stops at [`ProbeOptions::limit`] (a node that did not answer by then "did not recover"). The probe
//!   key is never written and its reads are not part of the history, so probing does not disturb it.
//! - **Failure windows** ([`failure_windows`]): per node, from the workload's own operations, the time
//!   covered by the operations sent to that node that failed or were unknown.
//! - **The bound** ([`recovery_failures`]): `--max-recovery` turns a slow recovery into a failed run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drakkar_client::pb::Consistency;
use drakkar_client::{Client, ClientConfig};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::nemesis::Fault;
use crate::workload::{Sample, error_label};

/// Deadline of one probe attempt (a read of a healthy node takes a few milliseconds).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Time between the starts of two probe attempts on one (node, group).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// How long probing goes on after a heal before a node is reported as not recovered.
pub const PROBE_LIMIT: Duration = Duration::from_secs(30);
/// Failed operations on a node this close together, with no answer from the node in between, belong to
/// one failure window (clients leave a node after an error, so a failing node is asked in bursts).
pub const WINDOW_GAP: Duration = Duration::from_millis(500);

/// What to probe and how.
#[derive(Clone)]
pub struct ProbeOptions {
    /// The nodes, as `(name, host:port)`.
    pub nodes: Vec<(String, String)>,
    /// TLS and timeouts of the probe clients; endpoints, retries and deadlines are set per node here.
    pub base: ClientConfig,
    /// Every group is read on every node.
    pub groups: Vec<u64>,
    /// The key read (never written: reading it changes nothing the history holds).
    pub key: Vec<u8>,
    /// Deadline of one attempt (and of connecting).
    pub attempt_timeout: Duration,
    /// Time between the starts of two attempts on one (node, group).
    pub interval: Duration,
    /// When to give up.
    pub limit: Duration,
}

impl std::fmt::Debug for ProbeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client configuration (TLS) has no Debug.
        f.debug_struct("ProbeOptions")
            .field("nodes", &self.nodes)
            .field("groups", &self.groups)
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("attempt_timeout", &self.attempt_timeout)
            .field("interval", &self.interval)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl ProbeOptions {
    /// Probes of `nodes` reading `key` in `groups`, with the default timings.
    pub fn new(nodes: Vec<(String, String)>, base: ClientConfig, groups: Vec<u64>, key: Vec<u8>) -> Self {
        ProbeOptions {
            nodes,
            base,
            groups,
            key,
            attempt_timeout: PROBE_TIMEOUT,
            interval: PROBE_INTERVAL,
            limit: PROBE_LIMIT,
        }
    }
}

/// When one group answered on one node after a heal.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GroupRecovery {
    /// The group.
    pub group: u64,
    /// Milliseconds from the heal to the completion of its first successful read (`None`: none
    /// within the probe limit).
    pub recovered_ms: Option<f64>,
}

/// How one node recovered from one fault.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Recovery {
    /// The node (`node-2`).
    pub node: String,
    /// Milliseconds from the heal until the node had served a linearizable read in every group: the
    /// latest of `groups` (`None`: some group did not answer within the probe limit).
    pub recovered_ms: Option<f64>,
    /// Per group.
    pub groups: Vec<GroupRecovery>,
    /// Attempts made, over every group.
    pub attempts: u64,
    /// The errors of the attempts that failed, by gRPC code and reason: why the node did not serve.
    pub errors: BTreeMap<String, u64>,
}

impl Recovery {
    /// `412 ms`, `1.21 s`, or `not within 30 s`.
    pub fn time_text(&self, limit: Duration) -> String {
        match self.recovered_ms {
            Some(ms) => ms_text(ms),
            None => format!("not within {}", secs_text(limit)),
        }
    }
}

/// `412 ms` below a second, `1.21 s` above.
pub fn ms_text(ms: f64) -> String {
    if ms < 1000.0 { format!("{ms:.0} ms") } else { format!("{:.2} s", ms / 1e3) }
}

fn secs_text(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Probes every node of `opts` from `healed` until each serves a linearizable read in every group, or
/// `opts.limit` passes; one [`Recovery`] per node, in the order of `opts.nodes`.
pub async fn probe(opts: Arc<ProbeOptions>, healed: Instant) -> Vec<Recovery> {
    let mut nodes = Vec::new();
    for (name, endpoint) in &opts.nodes {
        let (opts, name, endpoint) = (opts.clone(), name.clone(), endpoint.clone());
        nodes.push(tokio::spawn(async move { probe_node(&opts, name, endpoint, healed).await }));
    }
    let mut out = Vec::new();
    for (n, task) in nodes.into_iter().enumerate() {
        out.push(task.await.unwrap_or_else(|e| Recovery {
            node: opts.nodes[n].0.clone(),
            recovered_ms: None,
            groups: Vec::new(),
            attempts: 0,
            errors: BTreeMap::from([(format!("probe task: {e}"), 1)]),
        }));
    }
    out
}

async fn probe_node(opts: &ProbeOptions, name: String, endpoint: String, healed: Instant) -> Recovery {
    let mut cfg = opts.base.clone();
    cfg.endpoints = vec![endpoint];
    cfg.request_timeout = opts.attempt_timeout;
    cfg.connect_timeout = opts.attempt_timeout;
    cfg.retry_for = Duration::ZERO;
    // Reads only: no session.
    cfg.exactly_once = false;
    let mut recovery =
        Recovery { node: name, recovered_ms: None, groups: Vec::new(), attempts: 0, errors: BTreeMap::new() };
    let client = match Client::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            recovery.errors.insert(error_label(&e), 1);
            return recovery;
        }
    };
    let mut groups = JoinSet::new();
    for (i, &group) in opts.groups.iter().enumerate() {
        let (client, opts) = (client.clone(), opts.clone());
        groups.spawn(async move { (i, probe_group(&client, &opts, group, healed).await) });
    }
    let mut per_group = vec![None; opts.groups.len()];
    while let Some(done) = groups.join_next().await {
        let Ok((i, (recovered, attempts, errors))) = done else { continue };
        per_group[i] = recovered;
        recovery.attempts += attempts;
        for (e, n) in errors {
            *recovery.errors.entry(e).or_default() += n;
        }
    }
    recovery.groups = opts
        .groups
        .iter()
        .zip(&per_group)
        .map(|(&group, r)| GroupRecovery { group, recovered_ms: r.map(as_ms) })
        .collect();
    // Recovered only when every group answered.
    recovery.recovered_ms =
        per_group.iter().try_fold(Duration::ZERO, |latest, r| r.map(|r| latest.max(r))).map(as_ms);
    recovery
}

fn as_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Probes one group on one node: attempts start every `interval` (several may wait at once, at most
/// one deadline's worth), until one succeeds or the limit passes. Returns the time from `healed` to
/// the first success's completion, the attempts made and their errors.
async fn probe_group(
    client: &Client,
    opts: &ProbeOptions,
    group: u64,
    healed: Instant,
) -> (Option<Duration>, u64, BTreeMap<String, u64>) {
    let deadline = healed + opts.limit;
    let max_in_flight =
        (opts.attempt_timeout.as_millis() / opts.interval.as_millis().max(1)).clamp(1, 16) as usize;
    // (`interval` panics on zero.)
    let mut ticker = tokio::time::interval(opts.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight: JoinSet<Result<Instant, String>> = JoinSet::new();
    let (mut attempts, mut errors) = (0u64, BTreeMap::new());
    loop {
        tokio::select! {
            _ = ticker.tick(), if in_flight.len() < max_in_flight => {
                let (client, key) = (client.clone(), bytes::Bytes::from(opts.key.clone()));
                attempts += 1;
                // The deadline is also enforced here: the client only sends it (`grpc-timeout`), and a
                // silent server would hold the attempt until the connection's keepalive gives up.
                let timeout = opts.attempt_timeout;
                in_flight.spawn(async move {
                    match tokio::time::timeout(timeout, client.get(group, key, Consistency::Linearizable)).await {
                        Ok(r) => r.map(|_| Instant::now()).map_err(|e| error_label(&e)),
                        Err(_) => Err("no answer within the attempt's deadline".to_string()),
                    }
                });
            }
            Some(done) = in_flight.join_next() => match done {
                Ok(Ok(at)) => return (Some(at.saturating_duration_since(healed)), attempts, errors),
                Ok(Err(e)) => *errors.entry(e).or_default() += 1,
                Err(e) => *errors.entry(format!("probe attempt: {e}")).or_default() += 1,
            },
            _ = tokio::time::sleep_until(deadline) => return (None, attempts, errors),
        }
    }
}

/// A run of the workload's operations on one node that failed or were unknown.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FailureWindow {
    /// The node.
    pub node: String,
    /// The first operation's invocation, in seconds since the start of the run.
    pub start_s: f64,
    /// The latest end of its operations (an unknown operation ends when its client gave up).
    pub end_s: f64,
    /// Operations in it that certainly did not take effect.
    pub failed: u64,
    /// Operations in it that may have.
    pub unknown: u64,
}

/// Per node, the time covered by operations on it that failed or were unknown: their intervals (from
/// invocation to completion, or until the client gave up), merged when they overlap or are less than
/// [`WINDOW_GAP`] apart with no answer from the node in between. `names[i]` is the name of the node of
/// [`Sample::node`] `i`; the windows come sorted by node, then time.
pub fn failure_windows(samples: &[Sample], names: &[String]) -> Vec<FailureWindow> {
    let mut out = Vec::new();
    for (node, name) in names.iter().enumerate() {
        let on_node = || samples.iter().filter(move |s| s.node == node);
        let mut answered: Vec<Duration> =
            on_node().filter(|s| s.outcome == "ok").map(|s| s.at + s.latency).collect();
        answered.sort_unstable();
        let mut failed: Vec<&Sample> = on_node().filter(|s| s.outcome != "ok").collect();
        failed.sort_by_key(|s| s.at);
        let mut open: Option<(Duration, Duration, u64, u64)> = None;
        for s in failed {
            let (at, end) = (s.at, s.at + s.latency);
            let fail = u64::from(s.outcome == "fail");
            if let Some((_, e, f, u)) = open.as_mut() {
                // The first answer completed after the window's end, if any, splits it when it came
                // before this operation.
                let next_answer = answered.get(answered.partition_point(|&a| a <= *e));
                if at <= *e || (at - *e < WINDOW_GAP && next_answer.is_none_or(|&a| a >= at)) {
                    *e = (*e).max(end);
                    *f += fail;
                    *u += 1 - fail;
                    continue;
                }
            }
            out.extend(open.take().map(|w| window(name, w)));
            open = Some((at, end, fail, 1 - fail));
        }
        out.extend(open.map(|w| window(name, w)));
    }
    out
}

fn window(node: &str, (start, end, failed, unknown): (Duration, Duration, u64, u64)) -> FailureWindow {
    FailureWindow {
        node: node.to_string(),
        start_s: start.as_secs_f64(),
        end_s: end.as_secs_f64(),
        failed,
        unknown,
    }
}

/// What `--max-recovery max` rejects: one message per (fault, node) whose recovery took longer than
/// `max` or did not happen within the probe `limit`, naming the node, the time and the fault. Without
/// `max`, only the nodes that did not recover.
pub fn recovery_failures(faults: &[Fault], max: Option<Duration>, limit: Duration) -> Vec<String> {
    let max_ms = max.map(as_ms);
    let mut out = Vec::new();
    for f in faults {
        for r in &f.recovery {
            let slow = match (r.recovered_ms, max_ms) {
                (None, _) => true,
                (Some(ms), Some(max)) => ms > max,
                (Some(_), None) => false,
            };
            if slow {
                let took = match r.recovered_ms {
                    Some(ms) => format!("took {} to serve a linearizable read", ms_text(ms)),
                    None => format!("served no linearizable read within {}", secs_text(limit)),
                };
                let mut why: Vec<String> =
                    max_ms.map(|m| format!("--max-recovery {}", ms_text(m))).into_iter().collect();
                why.extend(errors_text(&r.errors).map(|e| format!("failed attempts: {e}")));
                out.push(format!(
                    "{} {took} after the heal of {} ({}) at {:.1} s ({})",
                    r.node,
                    f.kind,
                    f.target,
                    f.end_s,
                    why.join("; "),
                ));
            }
        }
    }
    out
}

/// The most frequent errors, `Unavailable/no-leader x12, DeadlineExceeded x3` (at most three).
pub fn errors_text(errors: &BTreeMap<String, u64>) -> Option<String> {
    if errors.is_empty() {
        return None;
    }
    let mut e: Vec<(&String, &u64)> = errors.iter().collect();
    e.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut parts: Vec<String> = e.iter().take(3).map(|(k, v)| format!("{k} x{v}")).collect();
    if e.len() > 3 {
        parts.push("...".into());
    }
    Some(parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(node: usize, at_ms: u64, latency_ms: u64, outcome: &'static str) -> Sample {
        Sample { at: Duration::from_millis(at_ms), latency: Duration::from_millis(latency_ms), outcome, node }
    }

    #[test]
    fn windows_cover_failures_per_node_split_where_the_node_answered() {
        let names = vec!["node-1".to_string(), "node-2".to_string()];
        let samples = vec![
            sample(0, 0, 2, "ok"),
            sample(1, 100, 1500, "unknown"),
            sample(0, 150, 3, "fail"),
            // Overlaps the unknown operation (an answer in another group meanwhile does not split it).
            sample(1, 200, 10, "fail"),
            sample(1, 300, 5, "ok"),
            sample(0, 300, 2, "ok"),
            sample(0, 400, 2, "fail"),
            // node-1 answered at 402-404 ms: a new window.
            sample(0, 402, 2, "ok"),
            sample(0, 500, 2, "fail"),
            // node-2 answered nothing between 1.6 s and 1.7 s: one window.
            sample(1, 1700, 5, "fail"),
            sample(1, 2000, 2, "ok"),
            sample(1, 2100, 5, "fail"),
            // Nor between 2.105 s and 3 s, but that is too long a gap to bridge.
            sample(1, 3000, 5, "fail"),
        ];
        let w = failure_windows(&samples, &names);
        let got: Vec<(&str, u64, u64, u64, u64)> = w
            .iter()
            .map(|w| {
                let ms = |s: f64| (s * 1e3).round() as u64;
                (w.node.as_str(), ms(w.start_s), ms(w.end_s), w.failed, w.unknown)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("node-1", 150, 153, 1, 0),
                ("node-1", 400, 402, 1, 0),
                ("node-1", 500, 502, 1, 0),
                // The unknown operation's end (when its client gave up) bounds the window.
                ("node-2", 100, 1705, 2, 1),
                ("node-2", 2100, 2105, 1, 0),
                // A window still open at the end of the run is kept.
                ("node-2", 3000, 3005, 1, 0),
            ]
        );
        assert!(failure_windows(&[sample(0, 0, 1, "ok")], &names).is_empty());
    }

    fn fault(recovery: Vec<Option<f64>>) -> Fault {
        Fault {
            kind: "kill",
            target: "node-2".into(),
            node: Some("node-2".into()),
            start_s: 1.0,
            end_s: 3.0,
            errors: vec![],
            recovery: recovery
                .into_iter()
                .enumerate()
                .map(|(i, ms)| Recovery {
                    node: format!("node-{}", i + 1),
                    recovered_ms: ms,
                    groups: vec![],
                    attempts: 1,
                    errors: BTreeMap::from([("Unavailable/no-leader".to_string(), 4)]),
                })
                .collect(),
        }
    }

    #[test]
    fn max_recovery_names_the_fault_the_node_and_the_time() {
        let faults = vec![fault(vec![Some(5.0), Some(1420.0), None])];
        let f = recovery_failures(&faults, Some(Duration::from_secs(1)), PROBE_LIMIT);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(
            f[0].starts_with(
                "node-2 took 1.42 s to serve a linearizable read after the heal of kill (node-2)"
            ),
            "{f:?}"
        );
        assert!(f[0].contains("at 3.0 s") && f[0].contains("--max-recovery 1.00 s"), "{f:?}");
        assert!(f[0].contains("Unavailable/no-leader x4"), "{f:?}");
        assert!(
            f[1].starts_with("node-3 served no linearizable read within 30 s after the heal of kill"),
            "{f:?}"
        );
        assert!(recovery_failures(&faults[..0], Some(Duration::ZERO), PROBE_LIMIT).is_empty());
        let in_time = [fault(vec![Some(999.0)])];
        assert!(recovery_failures(&in_time, Some(Duration::from_secs(1)), PROBE_LIMIT).is_empty());
        // Without a bound, only the node that did not recover.
        let never = recovery_failures(&faults, None, PROBE_LIMIT);
        assert_eq!(never.len(), 1, "{never:?}");
        assert!(never[0].starts_with("node-3 served no linearizable read within 30 s"), "{never:?}");
        assert!(!never[0].contains("--max-recovery"), "{never:?}");
    }

    #[tokio::test]
    async fn a_node_that_never_answers_is_reported_after_the_limit() {
        // A port nothing listens on: every attempt is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut opts = ProbeOptions::new(
            vec![("node-1".into(), port.to_string())],
            ClientConfig::new([port.to_string()]),
            vec![1, 2],
            b"probe".to_vec(),
        );
        opts.limit = Duration::from_millis(300);
        let started = Instant::now();
        let r = probe(Arc::new(opts), Instant::now()).await;
        assert!(started.elapsed() < Duration::from_secs(3), "probing is bounded");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].recovered_ms, None);
        assert_eq!(r[0].groups.len(), 2);
        assert!(r[0].attempts >= 2 && !r[0].errors.is_empty(), "{r:?}");
    }
}
