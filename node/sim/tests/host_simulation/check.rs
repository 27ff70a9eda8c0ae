//! One simulated schedule, checked: the simulator's own invariants (acknowledged writes never lost,
//! session proposals applied exactly once, replicas agree) plus per-key linearizability of its history
//! with `drakkar_check`. Shared by `tests/host_simulation.rs` and `examples/host_simulate.rs`.

#![allow(dead_code)]

use drakkar_check::checker::{CheckOptions, Verdict, check};
use drakkar_check::history::{Op, OpKind, Outcome, Reply};
use drakkar_sim::{HistKind, HistOp, HistOutcome, SimConfig, SimReport};

/// How to replay a seed.
pub fn replay_hint(seed: u64) -> String {
    format!(
        "replay: HOST_SIM_SEED={seed} cargo test -p drakkar-sim --profile ci --test host_simulation replay \
         (HOST_SIM_TRACE=1 prints every operation, answer and fault)"
    )
}

fn to_check(op: &HistOp) -> Op {
    let kind = match &op.kind {
        HistKind::Read => OpKind::Read,
        HistKind::Write(v) => OpKind::Write { value: v.clone() },
        HistKind::Cas(expected, new) => OpKind::Cas { expected: expected.clone(), new: new.clone() },
    };
    let outcome = match &op.outcome {
        HistOutcome::Read(v) => Outcome::Ok(Reply::Read(v.clone())),
        HistOutcome::Written => Outcome::Ok(Reply::Written),
        HistOutcome::Cas(ok) => Outcome::Ok(Reply::Cas(*ok)),
        HistOutcome::Fail => Outcome::Fail,
        HistOutcome::Unknown => Outcome::Unknown,
    };
    Op { process: op.process, key: op.key.clone(), kind, invoke: op.invoke, complete: op.complete, outcome }
}

/// Checks a history for per-key linearizability. `Unknown` (a bound hit) counts as a failure: the
/// histories here are small enough to decide.
pub fn linearizable(history: &[HistOp]) -> Result<(), String> {
    let ops: Vec<Op> = history.iter().map(to_check).collect();
    match check(&ops, &CheckOptions::default()) {
        Ok(Verdict::Linearizable) => Ok(()),
        Ok(v) => Err(format!("the history is {}", v)),
        Err(e) => Err(format!("malformed history: {e}")),
    }
}

/// Runs and checks `seed` with its configuration; returns a one-line summary.
pub fn run_seed(seed: u64) -> Result<String, String> {
    run_with(seed, &SimConfig::for_seed(seed)).map(|r| summary(&r))
}

/// Runs and checks `seed` with `config`.
pub fn run_with(seed: u64, config: &SimConfig) -> Result<SimReport, String> {
    // Snapshot and identity files are real files: on tmpfs their fsyncs cost nothing.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
    let dir = dir.map_err(|e| e.to_string())?;
    let report = drakkar_sim::run(seed, config, dir.path())
        .map_err(|f| format!("FAILED {f}\n{}", replay_hint(seed)))?;
    linearizable(&report.history).map_err(|e| format!("FAILED seed {seed}: {e}\n{}", replay_hint(seed)))?;
    Ok(report)
}

/// A one-line summary of a passed run.
pub fn summary(r: &SimReport) -> String {
    let s = &r.stats;
    format!(
        "seed {} ok: {} hosts, {} groups, {} ops ({} ok, {} failed, {} unknown), {} session series ({} retries), \
         {} crashes, {} partitions, {} snapshots on demand, {} membership changes, {} transfers, {} snapshots streamed, \
         {} batches delivered, {} messages dropped, {} duplicated, {} virtual s",
        r.seed,
        r.config.hosts,
        r.config.groups,
        r.history.len(),
        s.ok,
        s.failed,
        s.unknown,
        s.session_series,
        s.session_retries,
        s.crashes,
        s.partitions,
        s.snapshots,
        s.membership_changes,
        s.transfers,
        s.net.snapshots,
        s.net.delivered,
        s.net.dropped,
        s.net.duplicated,
        s.virtual_ms / 1000
    )
}
