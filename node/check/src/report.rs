//! The report of a run: counts, the checker's verdict, lost acknowledged writes, latencies, faults with
//! each node's recovery, the nodes' failure windows; as JSON (`report.json`), text, and a latency plot
//! (`latency.svg`, plotters' SVG backend) with every fault drawn as a band over the time it lasted and,
//! below it, one lane per node with its failure windows and its recovery after each heal.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::availability::{self, FailureWindow};
use crate::history::{Key, Op, OpKind, Outcome, Printable, Reply, Value};
use crate::nemesis::Fault;
use crate::workload::Sample;

/// Counts of operations.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counts {
    /// All operations.
    pub total: u64,
    /// Answered.
    pub ok: u64,
    /// Certainly not applied.
    pub fail: u64,
    /// Maybe applied.
    pub unknown: u64,
    /// Reads.
    pub reads: u64,
    /// Writes.
    pub writes: u64,
    /// Compare-and-swaps.
    pub cas: u64,
    /// Compare-and-swaps that swapped.
    pub cas_succeeded: u64,
    /// Transactions.
    pub txn: u64,
    /// Transactions whose compare held.
    pub txn_succeeded: u64,
}

impl Counts {
    /// Counts `ops`.
    pub fn of(ops: &[Op]) -> Counts {
        let mut c = Counts::default();
        for op in ops {
            c.total += 1;
            match op.outcome {
                Outcome::Ok(_) => c.ok += 1,
                Outcome::Fail => c.fail += 1,
                _ => c.unknown += 1,
            }
            match op.kind {
                OpKind::Read => c.reads += 1,
                OpKind::Write { .. } => c.writes += 1,
                OpKind::Txn { .. } => c.txn += 1,
                _ => c.cas += 1,
            }
            match op.kind {
                OpKind::Cas { .. } if op.acknowledged_write() => c.cas_succeeded += 1,
                OpKind::Txn { .. } if op.acknowledged_write() => c.txn_succeeded += 1,
                _ => {}
            }
        }
        c
    }
}

/// The operations of one workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkloadCounts {
    /// The workload (`register`, `retries`, ...).
    pub workload: String,
    /// Its operations.
    pub operations: Counts,
}

impl WorkloadCounts {
    /// Per workload in `order`, the counts of the operations `workloads` attributes to it
    /// (`workloads[i]` ran `ops[i]`; operations past its end are not counted).
    pub fn of(ops: &[Op], workloads: &[&str], order: &[&str]) -> Vec<WorkloadCounts> {
        order
            .iter()
            .map(|w| {
                let mine: Vec<Op> =
                    ops.iter().zip(workloads).filter(|(_, x)| *x == w).map(|(o, _)| o.clone()).collect();
                WorkloadCounts { workload: w.to_string(), operations: Counts::of(&mine) }
            })
            .collect()
    }
}

/// Latency percentiles of answered operations, in milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Of the `ok` samples.
    pub fn of(samples: &[Sample]) -> Latency {
        let mut l: Vec<f64> =
            samples.iter().filter(|s| s.outcome == "ok").map(|s| s.latency.as_secs_f64() * 1e3).collect();
        if l.is_empty() {
            return Latency::default();
        }
        l.sort_by(f64::total_cmp);
        let at = |q: f64| l[((l.len() - 1) as f64 * q).round() as usize];
        Latency { p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

/// An acknowledged write missing from the final state.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LostWrite {
    /// The key.
    pub key: String,
    /// The write, as text.
    pub write: String,
    /// What the final read returned.
    pub final_value: String,
}

/// Acknowledged writes that the final state contradicts.
///
/// `final_reads` maps each key to the value a linearizable read returned after the run (all faults
/// healed). An acknowledged write `w` (an ok write or a succeeded compare-and-swap) of key `k` is lost
/// when the final value of `k` is absent, or was written by an operation that completed before `w` was
/// invoked (then `w` took effect after it and was overwritten by nothing: values are unique), or by no
/// operation at all. Keys without a final read are skipped.
pub fn lost_writes(ops: &[Op], final_reads: &HashMap<Key, Option<Value>>) -> Vec<LostWrite> {
    let mut writer: HashMap<(&[u8], &[u8]), &Op> = HashMap::new();
    for op in ops {
        if op.outcome != Outcome::Fail
            && let Some(v) = op.written_value()
        {
            writer.insert((&op.key, v), op);
        }
    }
    let mut lost = Vec::new();
    for w in ops.iter().filter(|o| o.acknowledged_write()) {
        let Some(fin) = final_reads.get(&w.key) else { continue };
        let written = w.written_value().map(Vec::as_slice);
        let is_lost = match fin {
            None => true,
            Some(f) if Some(f.as_slice()) == written => false,
            Some(f) => match writer.get(&(w.key.as_slice(), f.as_slice())) {
                Some(x) => x.complete.is_some_and(|c| c < w.invoke),
                None => true,
            },
        };
        if is_lost {
            lost.push(LostWrite {
                key: Printable(&w.key).to_string(),
                write: w.to_string(),
                final_value: fin.as_ref().map_or_else(|| "absent".into(), |v| Printable(v).to_string()),
            });
        }
    }
    lost
}

/// The whole report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// `linearizable`, `not-linearizable` or `unknown`.
    pub verdict: String,
    /// The checker's explanation (the counterexample, or why it gave up).
    pub verdict_detail: String,
    /// Acknowledged writes missing from the final state (must be 0).
    pub lost_acknowledged_writes: u64,
    /// Up to 20 of them.
    pub lost_examples: Vec<LostWrite>,
    /// Operation counts (final reads included).
    pub operations: Counts,
    /// Operation counts per workload (final reads excluded), in the order the workloads were given.
    pub workloads: Vec<WorkloadCounts>,
    /// The replica node the `replicas` workload used and its replicas (`node-5: group 1 replica 50
    /// NonVoter, ...`), when there was one.
    pub replica_node: Option<String>,
    /// Length of the workload, in seconds.
    pub duration_s: f64,
    /// Answered operations per second.
    pub ok_per_s: f64,
    /// Latency of answered operations.
    pub latency: Latency,
    /// Errors by gRPC code and reason.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Keys (registers) checked.
    pub keys: usize,
    /// KV groups used.
    pub groups: Vec<u64>,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Nemeses enabled.
    pub nemeses: Vec<String>,
    /// The nodes the workload ran on, as the faults, recoveries and failure windows name them.
    pub nodes: Vec<String>,
    /// Faults, in order, each with every node's recovery after its heal.
    pub faults: Vec<Fault>,
    /// Per node, the time covered by workload operations on it that failed or were unknown.
    pub failure_windows: Vec<FailureWindow>,
    /// `--max-recovery`, in milliseconds, if given.
    pub max_recovery_ms: Option<f64>,
    /// The (fault, node) pairs whose recovery exceeded `max_recovery_ms` or did not happen within the
    /// probe limit: one message each, naming the fault, the node and the time.
    pub recovery_failures: Vec<String>,
    /// Time the checker took, in milliseconds.
    pub checker_ms: u64,
    /// Whether the run passed: linearizable, no lost write, and (with `--max-recovery`) no recovery
    /// failure.
    pub passed: bool,
    /// Problems that are not safety violations (e.g. a node that did not catch up after the faults).
    pub warnings: Vec<String>,
    /// The latency plot, next to the report.
    pub plot: String,
    /// The history (one JSON operation per line), next to the report.
    pub history: String,
    /// The command line.
    pub command: String,
    /// The seed of the workload's and nemesis' choices (`--seed` repeats them; timing still varies).
    pub seed: u64,
}

impl Report {
    /// A human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let o = &self.operations;
        s.push_str(&format!(
            "operations: {} ({} ok, {} failed, {} unknown; {} reads, {} writes, {} cas of which {} swapped) in {:.1} s, {:.0} ok/s\n",
            o.total, o.ok, o.fail, o.unknown, o.reads, o.writes, o.cas, o.cas_succeeded, self.duration_s, self.ok_per_s
        ));
        if o.txn > 0 {
            s.push_str(&format!("transactions: {} of which {} swapped\n", o.txn, o.txn_succeeded));
        }
        for w in &self.workloads {
            let c = &w.operations;
            s.push_str(&format!(
                "  {:<9} {:>6} ops ({} ok, {} failed, {} unknown; {} reads, {} writes, {} cas, {} txn)\n",
                w.workload, c.total, c.ok, c.fail, c.unknown, c.reads, c.writes, c.cas, c.txn
            ));
        }
        if let Some(r) = &self.replica_node {
            s.push_str(&format!("replica node: {r}\n"));
        }
        s.push_str(&format!(
            "latency (ok): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            self.latency.p50_ms, self.latency.p99_ms, self.latency.max_ms
        ));
        if !self.errors.is_empty() {
            let e: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k} x{v}")).collect();
            s.push_str(&format!("errors: {}\n", e.join(", ")));
        }
        s.push_str(&format!("faults: {}\n", self.faults.len()));
        for f in &self.faults {
            s.push_str(&format!("  {:>6.1}s - {:>6.1}s  {:<10} {}", f.start_s, f.end_s, f.kind, f.target));
            if !f.errors.is_empty() {
                s.push_str(&format!("  (errors: {})", f.errors.join("; ")));
            }
            s.push('\n');
            if !f.recovery.is_empty() {
                let per_node: Vec<String> = f
                    .recovery
                    .iter()
                    .map(|r| {
                        let why = availability::errors_text(&r.errors).map(|e| format!(" ({e})"));
                        format!(
                            "{} {}{}",
                            r.node,
                            r.time_text(availability::PROBE_LIMIT),
                            why.unwrap_or_default()
                        )
                    })
                    .collect();
                s.push_str(&format!("           serving again after: {}\n", per_node.join(", ")));
            }
        }
        s.push_str(&self.recovery_by_kind());
        s.push_str(&self.windows_text());
        s.push_str(&format!(
            "keys: {} in groups {:?}, {} clients, seed {}\n",
            self.keys, self.groups, self.concurrency, self.seed
        ));
        s.push_str(&format!("checker: {} in {} ms\n", self.verdict, self.checker_ms));
        if self.verdict != "linearizable" {
            s.push_str(&self.verdict_detail);
            s.push('\n');
        }
        s.push_str(&format!("lost acknowledged writes: {}\n", self.lost_acknowledged_writes));
        for l in &self.lost_examples {
            s.push_str(&format!("  {} (final value {})\n", l.write, l.final_value));
        }
        for w in &self.warnings {
            s.push_str(&format!("WARNING: {w}\n"));
        }
        for r in &self.recovery_failures {
            s.push_str(&format!("RECOVERY TOO SLOW: {r}\n"));
        }
        s.push_str(if self.passed { "PASS\n" } else { "FAIL\n" });
        s
    }

    /// Per fault kind, the slowest node's recovery after each fault of that kind, in order:
    /// `recovery (heal to the slowest node's first linearizable read): kill 412 ms, 380 ms; ...`.
    fn recovery_by_kind(&self) -> String {
        let mut kinds: Vec<(&str, Vec<String>)> = Vec::new();
        for f in self.faults.iter().filter(|f| !f.recovery.is_empty()) {
            let slowest = f.recovery.iter().try_fold(0.0f64, |m, r| r.recovered_ms.map(|ms| m.max(ms)));
            let text = slowest.map_or_else(|| "not recovered".to_string(), availability::ms_text);
            match kinds.iter_mut().find(|(k, _)| *k == f.kind) {
                Some((_, v)) => v.push(text),
                None => kinds.push((f.kind, vec![text])),
            }
        }
        if kinds.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = kinds.iter().map(|(k, v)| format!("{k} {}", v.join(", "))).collect();
        format!("recovery (heal to the slowest node's first linearizable read): {}\n", parts.join("; "))
    }

    /// The failure windows, one line per node (at most 8 windows each; all of them are in the JSON).
    fn windows_text(&self) -> String {
        if self.failure_windows.is_empty() {
            return String::new();
        }
        let mut s = String::from("failure windows (when operations on a node failed or were unknown):\n");
        for node in &self.nodes {
            let w: Vec<&FailureWindow> = self.failure_windows.iter().filter(|w| &w.node == node).collect();
            if w.is_empty() {
                continue;
            }
            let mut parts: Vec<String> = w
                .iter()
                .take(8)
                .map(|w| {
                    format!("{:.2}-{:.2}s ({} failed, {} unknown)", w.start_s, w.end_s, w.failed, w.unknown)
                })
                .collect();
            if w.len() > 8 {
                parts.push(format!("... {} more", w.len() - 8));
            }
            s.push_str(&format!("  {node}: {}\n", parts.join(", ")));
        }
        s
    }
}

/// Bytes as a JSON string: the text itself when it is printable UTF-8 not starting with `0x`, else
/// `0x` and hex. [`decode_bytes`] reverses it.
pub fn encode_bytes(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if !s.starts_with("0x") && s.chars().all(|c| !c.is_control()) => s.to_string(),
        _ => format!("0x{}", v.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

/// The bytes of an [`encode_bytes`] string.
pub fn decode_bytes(s: &str) -> Result<Vec<u8>> {
    match s.strip_prefix("0x") {
        Some(hex) => (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .with_context(|| format!("invalid hex bytes {s:?}"))
            })
            .collect(),
        None => Ok(s.as_bytes().to_vec()),
    }
}

/// Writes the history as JSON lines (see [`read_history`]). `nodes[i]` is the node `ops[i]` was sent
/// to, written as its `node` (`null` for the operations past the end of `nodes`, such as the final
/// reads, which go to whichever node answers); `workloads[i]` the workload that ran it, likewise.
pub fn write_history(path: &Path, ops: &[Op], nodes: &[&str], workloads: &[&str]) -> Result<()> {
    use std::io::Write;
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    let text = |v: &[u8]| encode_bytes(v);
    for (i, op) in ops.iter().enumerate() {
        let (kind, value, expected) = match &op.kind {
            OpKind::Read => ("read", None, None),
            OpKind::Write { value } => ("write", Some(text(value)), None),
            OpKind::Cas { expected, new } => ("cas", Some(text(new)), expected.as_deref().map(text)),
            OpKind::Txn { expected, new } => ("txn", Some(text(new)), expected.as_deref().map(text)),
        };
        let null = serde_json::Value::Null;
        let (outcome, reply, version, seen) = match &op.outcome {
            Outcome::Ok(r) => {
                let reply = match (r.read_value(), r.swapped()) {
                    (Some(v), _) => serde_json::json!(v.as_deref().map(text)),
                    (_, Some(b)) => serde_json::json!(b),
                    _ => null.clone(),
                };
                let seen = match r {
                    Reply::SwapVersioned { value, .. } => serde_json::json!(value.as_deref().map(text)),
                    _ => null.clone(),
                };
                ("ok", reply, serde_json::json!(r.version()), seen)
            }
            Outcome::Fail => ("fail", null.clone(), null.clone(), null.clone()),
            _ => ("unknown", null.clone(), null.clone(), null.clone()),
        };
        let line = serde_json::json!({
            "process": op.process, "key": text(&op.key), "kind": kind, "value": value,
            "expected": expected, "invoke_ns": op.invoke, "complete_ns": op.complete,
            "outcome": outcome, "reply": reply, "version": version, "seen": seen,
            "node": nodes.get(i), "workload": workloads.get(i),
        });
        writeln!(w, "{line}")?;
    }
    w.flush()?;
    Ok(())
}

/// Reads a history written by [`write_history`]: one JSON object per line with `process`, `key`,
/// `kind` (`read`, `write`, `cas`, `txn`), `value` (written / new value), `expected` (a compare's value,
/// null: absent), `invoke_ns`, `complete_ns` (null: never returned), `outcome` (`ok`, `fail`, `unknown`)
/// and `reply` (a read's value or null, a compare's boolean); optionally `version`, the key's version
/// the reply reported (a read's, the one a write or a swap created, the one that failed a compare), and
/// with it for `cas` and `txn` `seen`, the key's value after the operation. Keys and values are text,
/// or `0x` + hex. Optional `node` and `workload` fields are not needed to check the history and are
/// ignored.
pub fn read_history(path: &Path) -> Result<Vec<Op>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut ops = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let op = parse_op(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        ops.push(op);
    }
    Ok(ops)
}

fn parse_op(line: &str) -> Result<Op> {
    let j: serde_json::Value = serde_json::from_str(line)?;
    let s = |f: &str| j[f].as_str().with_context(|| format!("missing string {f:?}"));
    let bytes = |f: &str| -> Result<Option<Vec<u8>>> {
        match &j[f] {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(v) => decode_bytes(v).map(Some),
            other => anyhow::bail!("{f:?} must be a string or null, not {other}"),
        }
    };
    let kind = match s("kind")? {
        "read" => OpKind::Read,
        "write" => OpKind::Write { value: bytes("value")?.context("a write needs \"value\"")? },
        "cas" => OpKind::Cas {
            expected: bytes("expected")?,
            new: bytes("value")?.context("a cas needs \"value\"")?,
        },
        "txn" => OpKind::Txn {
            expected: bytes("expected")?,
            new: bytes("value")?.context("a txn needs \"value\"")?,
        },
        other => anyhow::bail!("unknown kind {other:?}"),
    };
    let version = j["version"].as_u64();
    let outcome = match s("outcome")? {
        "ok" => Outcome::Ok(match (&kind, version) {
            (OpKind::Read, None) => Reply::Read(bytes("reply")?),
            (OpKind::Read, Some(version)) => Reply::ReadVersioned { value: bytes("reply")?, version },
            (OpKind::Write { .. }, None) => Reply::Written,
            (OpKind::Write { .. }, Some(version)) => Reply::WrittenVersioned { version },
            (OpKind::Cas { .. } | OpKind::Txn { .. }, version) => {
                let succeeded = j["reply"].as_bool().context("a cas or txn reply is a boolean")?;
                match version {
                    None => Reply::Cas(succeeded),
                    Some(version) => Reply::SwapVersioned { succeeded, value: bytes("seen")?, version },
                }
            }
        }),
        "fail" => Outcome::Fail,
        "unknown" => Outcome::Unknown,
        other => anyhow::bail!("unknown outcome {other:?}"),
    };
    Ok(Op {
        process: j["process"].as_u64().unwrap_or(0),
        key: decode_bytes(s("key")?)?,
        kind,
        invoke: j["invoke_ns"].as_u64().context("missing invoke_ns")?,
        complete: j["complete_ns"].as_u64(),
        outcome,
    })
}

/// What [`plot`] draws besides the operations.
pub struct PlotInput<'a> {
    /// The title.
    pub title: &'a str,
    /// Length of the workload, in seconds.
    pub duration_s: f64,
    /// The faults, with each node's recovery.
    pub faults: &'a [Fault],
    /// The nodes' failure windows.
    pub windows: &'a [FailureWindow],
    /// The nodes, top lane first.
    pub nodes: &'a [String],
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

/// Colour of a fault kind's band and recovery marks.
fn fault_colour(kind: &str) -> RGBColor {
    match kind {
        "kill" | "kill-all" | "power-loss" => RGBColor(230, 80, 80),
        "slow-disk" => RGBColor(150, 150, 150),
        "pause" => RGBColor(240, 170, 60),
        "partition" => RGBColor(120, 100, 220),
        _ => RGBColor(60, 170, 170),
    }
}

/// Draws latency against time: one dot per operation (answered, failed, unknown in different colours,
/// log scale), and a shaded band per fault, labelled with its kind. Below, one lane per node: its
/// failure windows (red bars) and, for each fault, a line from the heal to the node's first
/// linearizable read (a dot; a cross when it did not answer within the probe limit).
pub fn plot(path: &Path, samples: &[Sample], input: &PlotInput<'_>) -> Result<()> {
    let root = SVGBackend::new(path, (1200, 600 + 60 * input.nodes.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (upper, lower) = root.split_vertically(600);
    let limit_s = availability::PROBE_LIMIT.as_secs_f64();
    let recovered_end = |f: &Fault| {
        f.recovery
            .iter()
            .map(|r| f.end_s + r.recovered_ms.map_or(limit_s, |ms| ms / 1e3))
            .fold(f.end_s, f64::max)
    };
    let x_end = [
        input.duration_s,
        input.faults.iter().map(recovered_end).fold(0.0, f64::max),
        input.windows.iter().map(|w| w.end_s).fold(0.0, f64::max),
    ]
    .into_iter()
    .fold(1.0, f64::max)
        * 1.02;
    plot_latency(&upper, samples, input, x_end)?;
    if !input.nodes.is_empty() {
        plot_lanes(&lower, input, x_end)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_latency(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    samples: &[Sample],
    input: &PlotInput<'_>,
    x_end: f64,
) -> Result<()> {
    let max_ms = samples.iter().map(|s| s.latency.as_secs_f64() * 1e3).fold(10.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(input.title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_end, (0.1f64..max_ms).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(plot_err)?;
    for f in input.faults {
        let c = fault_colour(f.kind);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(f.start_s, 0.1), (f.end_s.max(f.start_s + 0.01), max_ms)],
                c.mix(0.18).filled(),
            )))
            .map_err(plot_err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                f.kind.to_string(),
                (f.start_s, max_ms / 1.6),
                ("sans-serif", 13).into_font().color(&c),
            )))
            .map_err(plot_err)?;
    }
    for (outcome, c, label) in [
        ("ok", RGBColor(40, 110, 200), "ok"),
        ("fail", RGBColor(240, 140, 0), "fail (not applied)"),
        ("unknown", RGBColor(200, 0, 0), "unknown (maybe applied)"),
    ] {
        let points = samples
            .iter()
            .filter(|s| s.outcome == outcome)
            .map(|s| (s.at.as_secs_f64(), (s.latency.as_secs_f64() * 1e3).max(0.11)));
        chart
            .draw_series(points.map(|p| Circle::new(p, 1, c.mix(0.6).filled())))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x, y), 4, c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// The availability lanes: node `i` (of `input.nodes`) is the lane from `n - 1 - i` to `n - i`.
fn plot_lanes(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    input: &PlotInput<'_>,
    x_end: f64,
) -> Result<()> {
    let n = input.nodes.len();
    let lane = |node: &str| input.nodes.iter().position(|x| x == node).map(|i| (n - 1 - i) as f64);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "per node: failure windows (red) and heal to first linearizable read (o: served, x: not within the probe limit)",
            ("sans-serif", 13),
        )
        .margin(10)
        .x_label_area_size(20)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_end, 0f64..n as f64)
        .map_err(plot_err)?;
    chart.configure_mesh().y_labels(0).disable_y_mesh().draw().map_err(plot_err)?;
    let font = ("sans-serif", 12).into_font();
    for f in input.faults {
        let c = fault_colour(f.kind);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(f.start_s, 0.0), (f.end_s.max(f.start_s + 0.01), n as f64)],
                c.mix(0.12).filled(),
            )))
            .map_err(plot_err)?;
    }
    for (i, node) in input.nodes.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        chart
            .draw_series(std::iter::once(Text::new(node.clone(), (0.0, y + 0.95), font.clone())))
            .map_err(plot_err)?;
    }
    let red = RGBColor(200, 0, 0);
    for w in input.windows {
        let Some(y) = lane(&w.node) else { continue };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(w.start_s, y + 0.5), (w.end_s.max(w.start_s + 0.02), y + 0.75)],
                red.mix(0.7).filled(),
            )))
            .map_err(plot_err)?;
    }
    let limit_s = availability::PROBE_LIMIT.as_secs_f64();
    for f in input.faults {
        let c = fault_colour(f.kind);
        for r in &f.recovery {
            let Some(y) = lane(&r.node) else { continue };
            let y = y + 0.25;
            let to = f.end_s + r.recovered_ms.map_or(limit_s, |ms| ms / 1e3);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(f.end_s, y), (to, y)],
                    c.stroke_width(3),
                )))
                .map_err(plot_err)?;
            match r.recovered_ms {
                Some(_) => chart.draw_series(std::iter::once(Circle::new((to, y), 4, c.filled()))),
                None => chart.draw_series(std::iter::once(Cross::new((to, y), 5, c.stroke_width(2)))),
            }
            .map_err(plot_err)?;
            // The time, where it matters (past 100 ms, or never).
            if r.recovered_ms.is_none_or(|ms| ms >= 100.0) {
                let text = r.time_text(availability::PROBE_LIMIT);
                chart
                    .draw_series(std::iter::once(Text::new(text, (to, y + 0.2), font.clone().color(&c))))
                    .map_err(plot_err)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<Value> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn a_write_overwritten_by_an_older_value_is_lost() {
        let ops = vec![
            Op::write(1, "k", "a", 0, 10),
            Op::write(2, "k", "b", 20, 30),
            Op::write(3, "j", "x", 0, 10),
            Op::cas(3, "j", v("x"), "y", 20, 30, true),
        ];
        // Final k = a: written before b was invoked, so b is lost. Final j = y: nothing lost.
        let fin = HashMap::from([(b"k".to_vec(), v("a")), (b"j".to_vec(), v("y"))]);
        let lost = lost_writes(&ops, &fin);
        assert_eq!(lost.len(), 1);
        assert!(lost[0].write.contains("write b"));
        // Concurrent writes may end either way.
        let ops = vec![Op::write(1, "k", "a", 0, 10), Op::write(2, "k", "b", 5, 30)];
        assert!(lost_writes(&ops, &HashMap::from([(b"k".to_vec(), v("a"))])).is_empty());
        assert!(lost_writes(&ops, &HashMap::from([(b"k".to_vec(), v("b"))])).is_empty());
        // Absent after an acknowledged write: lost.
        assert_eq!(lost_writes(&ops, &HashMap::from([(b"k".to_vec(), None)])).len(), 2);
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let ops = vec![
            Op::write(1, "k", "a", 0, 10),
            Op::read(2, "k", 5, 15, v("a")),
            Op::read(2, vec![0u8, 1], 5, 15, None),
            Op::cas(3, "k", None, "0xnot-hex", 20, 30, false),
            Op::cas(3, "k", v("a"), vec![0xffu8], 20, 30, true).with_outcome(Outcome::Fail),
            Op { complete: None, ..Op::write(4, "k", "u", 40, 0).with_outcome(Outcome::Unknown) },
            Op::txn(5, "k", None, "t", 50, 60, true),
            Op::read(5, "k", 70, 80, None)
                .with_outcome(Outcome::Ok(Reply::ReadVersioned { value: v("t"), version: 3 })),
            Op::write(5, "k", "w", 90, 95).with_outcome(Outcome::Ok(Reply::WrittenVersioned { version: 4 })),
            Op::txn(6, "k", v("q"), "r", 96, 99, false).with_outcome(Outcome::Ok(Reply::SwapVersioned {
                succeeded: false,
                value: v("w"),
                version: 4,
            })),
            Op::cas(6, "k", v("w"), "s", 100, 110, true).with_outcome(Outcome::Ok(Reply::SwapVersioned {
                succeeded: true,
                value: v("s"),
                version: 5,
            })),
        ];
        write_history(&path, &ops, &["node-1", "node-2"], &["register"]).unwrap();
        assert_eq!(read_history(&path).unwrap(), ops);
        let text = std::fs::read_to_string(&path).unwrap();
        let nodes: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["node"].clone())
            .collect();
        assert_eq!(
            nodes[..3],
            [serde_json::json!("node-1"), serde_json::json!("node-2"), serde_json::Value::Null]
        );
        assert!(decode_bytes("0xzz").is_err());
    }

    #[test]
    fn the_plot_is_an_svg_with_faults_windows_and_recoveries() {
        use crate::availability::Recovery;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let samples: Vec<Sample> = (0..50)
            .map(|i| Sample {
                at: std::time::Duration::from_millis(i * 100),
                latency: std::time::Duration::from_millis(1 + i % 7),
                outcome: if i % 10 == 0 { "unknown" } else { "ok" },
                node: (i % 2) as usize,
            })
            .collect();
        let recovery = |node: &str, ms: Option<f64>| Recovery {
            node: node.into(),
            recovered_ms: ms,
            groups: vec![],
            attempts: 3,
            errors: Default::default(),
        };
        let faults = vec![Fault {
            kind: "kill",
            target: "node-1".into(),
            node: Some("node-1".into()),
            start_s: 1.0,
            end_s: 2.0,
            errors: vec![],
            recovery: vec![recovery("node-1", Some(1234.0)), recovery("node-2", None)],
        }];
        let nodes = vec!["node-1".to_string(), "node-2".to_string()];
        let windows = crate::availability::failure_windows(&samples, &nodes);
        let input =
            PlotInput { title: "test", duration_s: 5.0, faults: &faults, windows: &windows, nodes: &nodes };
        plot(&path, &samples, &input).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("kill"));
        assert!(svg.contains("node-2") && svg.contains("1.23 s") && svg.contains("not within 30 s"), "{svg}");
    }
}
