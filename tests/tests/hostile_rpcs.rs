//! Hostile input against every RPC of a real 3-node TLS cluster of `drakkar serve` processes (the
//! "Hostile input" issue): an independent raw gRPC client sends every method of every service (the
//! `drakkar.v1` services of node/client/proto, the Raft service with a node certificate claiming a
//! non-member address, `grpc.health.v1`, server reflection) random and mutated bodies: bit flips,
//! truncations, oversized fields, wrong wire types, huge repeated counts, deep nesting, broken gRPC
//! framing, abandoned calls; and holds a never-ending request stream open on every method.
//!
//! Meanwhile a well-behaved client writes to group 2 (hostile writes go to group 1, see
//! `hostile/methods.rs`). Afterwards: every node still runs, no log has a panic, every acknowledged write
//! reads back, each node's resident memory stayed within [`MEMORY_BOUND`] of its level before the
//! barrage, the well-behaved writer succeeded at least [`MIN_WRITE_SUCCESS`] of the time, no call hung,
//! every `drakkar.v1` answer has a documented code (never INTERNAL, UNKNOWN, CANCELLED) and every
//! never-ending request on a method with a deadline was ended by the node, with DEADLINE_EXCEEDED, at its
//! deadline.
//!
//! Size: `DRAKKAR_HOSTILE_REQUESTS` requests (default 560, 20 per method: the form run by `cargo test`);
//! the long form is documented in docs/development.md. `DRAKKAR_HOSTILE_SEED` replays a run.

mod hostile;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drakkar_client::{Client, connect, pb, tls};
use drakkar_e2e::Cluster;
use hostile::methods::{self, Method, PROTECTED, Shape};
use hostile::mutate::Rng;
use hostile::{CLASSES, Outcome, Variant};
use tonic::Code;
use tonic::transport::Channel;

/// Most a node's resident memory may grow over its level before the barrage (sampled every 100 ms, and
/// its peak `VmHWM`).
const MEMORY_BOUND: u64 = 256 << 20;
/// The same in the long form, whose oversized fields include 40 MiB ones: the Raft service takes
/// messages of up to 64 MiB (a batch), held whole and then copied by the decoder, from any node
/// certificate before its sender is checked; a few at once cost several hundred MiB.
const LONG_MEMORY_BOUND: u64 = 512 << 20;
/// Least share of the well-behaved writer's writes that must succeed (each within 2 s, retried for 1 s).
const MIN_WRITE_SUCCESS: f64 = 0.95;
/// Most calls (a share of those sent) that may lose their connection before an answer.
const MAX_LOST: f64 = 0.02;
/// The `grpc-timeout` of the barrage's requests: the node answers at 98 % of it at the latest, 400 ms
/// before tonic's client ends the call by itself (CANCELLED "Timeout expired", counted as a violation).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// A call unanswered this long hung.
const HANG: Duration = Duration::from_secs(30);
/// Requests in flight at once.
const CONCURRENCY: usize = 12;
/// The deadline a node gives a request without `grpc-timeout` (docs/api.md).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// The `grpc-timeout` of half of the never-ending requests (the node answers at 98 % of it, 400 ms before
/// the client gives up by itself).
const SHORT_DEADLINE: Duration = Duration::from_secs(20);

fn tls_client(c: &Cluster, cert: &str, endpoints: Vec<String>) -> Client {
    let certs = c.certs();
    let key = format!("{cert}-key.pem");
    let cfg = tls::client_config_from_files(
        &certs.join("ca.pem"),
        Some((&certs.join(format!("{cert}.pem")), &certs.join(key))),
    )
    .expect("client TLS");
    let mut cc = c.client_config(endpoints);
    cc.tls = Some(Arc::new(Arc::new(cfg)));
    Client::new(cc).expect("client")
}

/// A fresh connection to node `i` (1-based) as `cert` (`admin`, or a node's certificate for Raft). It
/// takes header lists of up to 16 MiB (hyper's default, 16 KiB, ends the whole connection past it), so
/// that an oversized status message reaches the check below instead of failing every call in flight.
fn channel(c: &Cluster, cert: &str, i: usize) -> Channel {
    let client = tls_client(c, cert, vec![c.addr(i)]);
    let connector = connect::Connector::new(client.config().tls.clone(), Duration::from_secs(10));
    connect::endpoint(&c.addr(i), connect::KeepAlive::CLIENT)
        .expect("endpoint")
        .http2_max_header_list_size(16 << 20)
        .connect_with_connector_lazy(connector)
}

/// The longest status message a node sends (docs/api.md).
const MAX_STATUS_MESSAGE: usize = 1024;

/// What the barrage saw, per method.
#[derive(Default)]
struct Tally {
    sent: u64,
    skipped: u64,
    abandoned: u64,
    codes: BTreeMap<String, u64>,
    /// Calls whose connection broke (or whose client timer ran out) before the node answered.
    lost: Vec<String>,
    /// Answers that break docs/api.md, or calls that hung: (class, what).
    violations: Vec<(String, String)>,
}

fn hex(b: &[u8]) -> String {
    b.iter().take(48).map(|x| format!("{x:02x}")).collect()
}

/// The chain of errors behind a status the client made up (a broken connection), as `: cause: cause`.
fn causes(s: &tonic::Status) -> String {
    let mut out = String::new();
    let mut e = std::error::Error::source(s);
    while let Some(c) = e {
        out.push_str(&format!(": {c}"));
        e = c.source();
    }
    out
}

/// Codes a `drakkar.v1` service never answers to a request, whatever it holds.
fn undocumented(code: Code) -> bool {
    matches!(code, Code::Internal | Code::Unknown | Code::Cancelled | Code::DataLoss | Code::Unimplemented)
}

/// One barrage request: variant `k` of method `mi`, to node `node`.
async fn one(
    ch: Channel,
    raft_ch: Channel,
    m: &Method,
    mut rng: Rng,
    k: usize,
    long: bool,
    tally: &Mutex<Tally>,
) {
    // Making a body (up to a million elements, in a debug build) is CPU work: off the async workers,
    // which must keep answering the node's keepalive PINGs within 1 s on every connection.
    let made = tokio::task::block_in_place(|| {
        let (class, v) = hostile::variant(&mut rng, m, k, long);
        let send = v.messages().iter().all(|b| (m.may_send)(b));
        (class, v, send)
    });
    let (class, v, send) = made;
    if !send {
        tally.lock().unwrap().skipped += 1;
        return;
    }
    let ch = if m.raft { raft_ch } else { ch };
    let first = hex(v.messages().first().copied().unwrap_or_default());
    let max_read = match m.shape {
        Shape::Unary | Shape::ClientStream => 2,
        _ if m.long_lived => 1,
        _ => 64,
    };
    let call = async {
        match v {
            Variant::Messages(msgs) => {
                hostile::call(ch, m.path, msgs, false, Some(CALL_TIMEOUT), max_read).await
            }
            Variant::Framing(body) => {
                let stop = m.long_lived && m.shape != Shape::ClientStream;
                hostile::raw_http(ch, m.path, body, CALL_TIMEOUT, stop).await
            }
            Variant::Abandon(msg) => {
                let c = hostile::call(ch, m.path, vec![msg], true, Some(CALL_TIMEOUT), max_read);
                match tokio::time::timeout(Duration::from_millis(100 + rng.below(200) as u64), c).await {
                    Ok(o) => o,
                    Err(_) => Outcome::Abandoned,
                }
            }
        }
    };
    let outcome = tokio::time::timeout(HANG, call).await;
    let mut t = tally.lock().unwrap();
    t.sent += 1;
    match outcome {
        Err(_) => t.violations.push((class.into(), format!("no answer within {HANG:?}; body {first}"))),
        Ok(Outcome::Abandoned) => t.abandoned += 1,
        // A status the client made up (it has a cause): the connection broke, or the client's own timer
        // ran out. Counted apart (bounded below), unless the client refused what the node sent.
        Ok(Outcome::Status(s)) if std::error::Error::source(&s).is_some() => {
            let why = causes(&s);
            if why.contains("header_list") {
                t.violations.push((class.into(), format!("the node sent headers no client takes{why}")));
            }
            t.lost.push(format!("{class}: {:?}{why}", s.code()));
        }
        Ok(Outcome::Status(s)) => {
            *t.codes.entry(format!("{:?}", s.code())).or_default() += 1;
            if s.message().len() > MAX_STATUS_MESSAGE {
                let what =
                    format!("{:?}: a status message of {} bytes; body {first}", s.code(), s.message().len());
                t.violations.push((class.into(), what));
            }
            if m.documented && undocumented(s.code()) {
                let what = format!("{:?} {:?}{}; body {first}", s.code(), s.message(), causes(&s));
                t.violations.push((class.into(), what));
            }
        }
    }
}

/// A never-ending request: its method, its `grpc-timeout`, and how it ended (how long it took, how).
struct Endless {
    path: &'static str,
    long_lived: bool,
    timeout: Option<Duration>,
    started: Instant,
    result: tokio::task::JoinHandle<(Duration, Outcome)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_survives_hostile_bodies_and_streams() {
    let total: usize =
        std::env::var("DRAKKAR_HOSTILE_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(560);
    let seed: u64 =
        std::env::var("DRAKKAR_HOSTILE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let long = total > 10_000;
    println!("hostile barrage: {total} requests, DRAKKAR_HOSTILE_SEED={seed}");
    let methods = Arc::new(methods::all());
    let per_method = total.div_ceil(methods.len());

    let mut c = Cluster::new(3, 3, 2, true);
    c.start_all();
    c.wait_for_leaders(Duration::from_secs(60)).await;
    let started = Instant::now();

    // The well-behaved writer, and the writes acknowledged before the barrage.
    let mut wcfg = c.client_config((1..=3).map(|i| c.addr(i)).collect());
    wcfg.exactly_once = false;
    wcfg.request_timeout = Duration::from_secs(2);
    wcfg.retry_for = Duration::from_secs(1);
    let writer = Client::new(wcfg).expect("writer");
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let setup = c.client();
    for i in 0..100 {
        let (k, v) = (format!("ack/{i}"), format!("before-{i}"));
        setup.put(PROTECTED, k.clone(), v.clone()).await.expect("a write before the barrage");
        acked.lock().unwrap().insert(k, v);
    }

    // Memory before, then sampled throughout.
    let pids: Vec<u32> = c.procs.iter().map(|p| p.as_ref().expect("running").pid()).collect();
    let rss = |pid: u32, field: &str| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1));
        kib.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024
    };
    // The peak (VmHWM) counts from here when the kernel lets this process reset it; the 100 ms samples
    // are checked in any case.
    let peak_reset = c.procs.iter().flatten().all(|p| p.reset_peak_memory().is_ok());
    let before: Vec<u64> = pids.iter().map(|&p| rss(p, "VmRSS:")).collect();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (pids, done) = (pids.clone(), done.clone());
        tokio::spawn(async move {
            let mut max = vec![0u64; pids.len()];
            while !done.load(Ordering::Relaxed) {
                for (m, &p) in max.iter_mut().zip(&pids) {
                    *m = (*m).max(rss(p, "VmRSS:"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max
        })
    };

    // Never-ending requests on every method: one with a short grpc-timeout, one without (the default
    // deadline), each on a connection of its own per node.
    let mut endless = Vec::new();
    for (mi, m) in methods.iter().enumerate() {
        for (j, timeout) in [Some(SHORT_DEADLINE), None].into_iter().enumerate() {
            let node = 1 + (mi + j) % 3;
            let ch = channel(&c, if m.raft { "node-3" } else { "admin" }, node);
            // Connected before the clock starts (tonic's client also ends the call at its grpc-timeout).
            let mut admin = pb::admin_client::AdminClient::new(ch.clone());
            admin.node_info(pb::NodeInfoRequest {}).await.expect("a connection for a never-ending request");
            // Silence; or, for a client stream with a deadline, its first seed (a valid import target),
            // then silence. A Raft snapshot header from a non-member is refused at once, so its streams
            // stay silent.
            let msgs = match m.shape {
                Shape::ClientStream | Shape::Bidi if timeout.is_some() && !m.raft => vec![m.seeds[0].clone()],
                _ => Vec::new(),
            };
            let path = m.path;
            let result = tokio::spawn(async move {
                let t0 = Instant::now();
                let o = hostile::call(ch, path, msgs, true, timeout, 1);
                let o = tokio::time::timeout(Duration::from_secs(60), o).await.unwrap_or(Outcome::Abandoned);
                (t0.elapsed(), o)
            });
            endless.push(Endless {
                path,
                long_lived: m.long_lived,
                timeout,
                started: Instant::now(),
                result,
            });
        }
    }

    // The well-behaved writer, throughout the barrage.
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let slowest = Arc::new(AtomicU64::new(0));
    let writer_task = {
        let (acked, done, ok, failed, slowest) =
            (acked.clone(), done.clone(), ok.clone(), failed.clone(), slowest.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) {
                let (k, v) = (format!("ack/during-{i}"), format!("during-{i}"));
                let t0 = Instant::now();
                match writer.put(PROTECTED, k.clone(), v.clone()).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        acked.lock().unwrap().insert(k, v);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                slowest.fetch_max(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                i += 1;
            }
        })
    };

    // The barrage: every method `per_method` times, interleaved, spread over the three nodes.
    let chans: Vec<Channel> = (1..=3).map(|i| channel(&c, "admin", i)).collect();
    let raft_chans: Vec<Channel> = (1..=3).map(|i| channel(&c, "node-3", i)).collect();
    let tallies: Arc<Vec<Mutex<Tally>>> = Arc::new(methods.iter().map(|_| Mutex::default()).collect());
    let mut order: Vec<(usize, usize)> =
        (0..per_method).flat_map(|k| (0..methods.len()).map(move |mi| (mi, k))).collect();
    let mut shuffle = Rng::new(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, shuffle.below(i + 1));
    }
    let barrage_started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, (mi, k)) in order.into_iter().enumerate() {
        let permit = slots.clone().acquire_owned().await.expect("semaphore");
        let (ch, raft_ch) = (chans[n % 3].clone(), raft_chans[n % 3].clone());
        let (methods, tallies) = (methods.clone(), tallies.clone());
        let rng = Rng::new(seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        tasks.spawn(async move {
            one(ch, raft_ch, &methods[mi], rng, k, long, &tallies[mi]).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let barrage = barrage_started.elapsed();

    // The never-ending requests with a deadline must end by the node's deadline (with a margin for a
    // loaded machine); the long-lived streams are then dropped.
    let mut endless_report = Vec::new();
    let mut endless_violations = Vec::new();
    for e in endless {
        if e.long_lived {
            e.result.abort();
            endless_report.push(format!("{} (open by design): held {:?}", e.path, e.started.elapsed()));
            continue;
        }
        let deadline = e.timeout.unwrap_or(DEFAULT_DEADLINE);
        let wait = (deadline + Duration::from_secs(3)).saturating_sub(e.started.elapsed());
        let r = match tokio::time::timeout(wait, e.result).await {
            Ok(r) => r.expect("endless task"),
            Err(_) => {
                endless_violations.push(format!(
                    "{} (grpc-timeout {:?}): still open after {:?}",
                    e.path,
                    e.timeout,
                    e.started.elapsed()
                ));
                continue;
            }
        };
        let (took, outcome) = r;
        endless_report.push(format!(
            "{} (grpc-timeout {:?}): {:?} after {took:?}",
            e.path,
            e.timeout,
            outcome.code()
        ));
        // tonic's client also ends a call at its grpc-timeout (2 % after the node): on a starved machine
        // it may come first, which is no fault of the node. Without grpc-timeout only the node ends it.
        let client_first = e.timeout.is_some()
            && took >= deadline
            && matches!(&outcome, Outcome::Status(s) if std::error::Error::source(s).is_some()
                && s.message() == "Timeout expired");
        let by_node =
            outcome.code() == Some(Code::DeadlineExceeded) && took <= deadline + Duration::from_secs(3);
        if !by_node && !client_first {
            endless_violations
                .push(format!("{} (grpc-timeout {:?}): {outcome:?} after {took:?}", e.path, e.timeout));
        }
    }

    done.store(true, Ordering::Relaxed);
    writer_task.await.expect("writer");
    let max_rss = sampler.await.expect("sampler");
    let peaks: Vec<u64> = pids.iter().map(|&p| if peak_reset { rss(p, "VmHWM:") } else { 0 }).collect();

    // Report.
    let mut sent = 0;
    let mut skipped = 0;
    let mut violations = Vec::new();
    let mut lost = Vec::new();
    println!("{:<58} {:>5} {:>5} {:>5}  codes", "method", "sent", "skip", "aband");
    for (m, t) in methods.iter().zip(tallies.iter()) {
        let t = t.lock().unwrap();
        sent += t.sent;
        skipped += t.skipped;
        println!("{:<58} {:>5} {:>5} {:>5}  {:?}", m.path, t.sent, t.skipped, t.abandoned, t.codes);
        lost.extend(t.lost.iter().map(|l| format!("{} [{l}]", m.path)));
        for (class, what) in &t.violations {
            violations.push(format!("{} [{class}]: {what}", m.path));
        }
    }
    println!("{} calls lost their connection before an answer", lost.len());
    for l in lost.iter().take(10) {
        println!("  lost: {l}");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let rate = ok as f64 / (ok + failed).max(1) as f64;
    println!(
        "sent {sent} requests (+{} never-ending, {skipped} skipped as valid commands on protected groups) \
         in {barrage:?}: {:.0}/s; classes {CLASSES:?}",
        endless_report.len(),
        sent as f64 / barrage.as_secs_f64()
    );
    for line in &endless_report {
        println!("  never-ending {line}");
    }
    println!(
        "well-behaved writer: {ok} ok, {failed} failed ({:.2}% ok), slowest {} ms",
        rate * 100.0,
        slowest.load(Ordering::Relaxed)
    );
    for i in 0..3 {
        println!(
            "node {}: RSS before {} MiB, max sampled {} MiB, peak (VmHWM) {} MiB",
            i + 1,
            before[i] >> 20,
            max_rss[i] >> 20,
            peaks[i] >> 20
        );
    }

    // Every node runs and serves, without a panic in its log.
    for (i, p) in c.procs.iter_mut().enumerate() {
        let p = p.as_mut().expect("started");
        assert!(p.running(), "node {} died", i + 1);
        let log = p.log();
        assert!(
            !log.contains("panicked"),
            "node {} panicked: {}",
            i + 1,
            log.lines().find(|l| l.contains("panicked")).unwrap_or_default()
        );
    }
    c.wait_for_leaders(Duration::from_secs(30)).await;

    // Every acknowledged write reads back.
    let reader = c.client();
    let acked = acked.lock().unwrap().clone();
    for (k, v) in &acked {
        let got = reader.get(PROTECTED, k.clone(), pb::Consistency::Linearizable).await.expect("read back");
        assert_eq!(got.map(|kv| kv.value), Some(v.clone().into()), "acknowledged write {k} lost");
    }
    println!("{} acknowledged writes intact; whole run {:?}", acked.len(), started.elapsed());

    if !violations.is_empty() || !endless_violations.is_empty() {
        // The node logs outlive the cluster's directory.
        let keep = std::env::temp_dir().join(format!("drakkar-hostile-{seed}"));
        std::fs::create_dir_all(&keep).expect("log directory");
        for (i, p) in c.procs.iter().enumerate() {
            let p = p.as_ref().expect("started");
            let _ = std::fs::copy(p.log_path(), keep.join(format!("node-{}.log", i + 1)));
        }
        println!("node logs kept in {}", keep.display());
    }
    assert!(
        violations.is_empty(),
        "{} answers break docs/api.md:\n{}",
        violations.len(),
        violations.join("\n")
    );
    // A node closes a connection whose client does not answer its keepalive PING within 1 s: on a
    // starved machine (a debug build, 2 cores, 20 runnable processes) a few connections break so.
    assert!(
        lost.len() as f64 <= MAX_LOST * sent as f64,
        "{} of {sent} calls lost their connection:\n{}",
        lost.len(),
        lost.join("\n")
    );
    assert!(endless_violations.is_empty(), "never-ending requests:\n{}", endless_violations.join("\n"));
    for i in 0..3 {
        let grew = max_rss[i].max(peaks[i]).saturating_sub(before[i]);
        let bound = if long { LONG_MEMORY_BOUND } else { MEMORY_BOUND };
        assert!(grew <= bound, "node {} grew by {} MiB (bound {} MiB)", i + 1, grew >> 20, bound >> 20);
    }
    assert!(rate >= MIN_WRITE_SUCCESS, "the well-behaved writer succeeded {:.2}% of the time", rate * 100.0);
    assert!(ok >= 10, "the well-behaved writer made only {ok} writes");
}
