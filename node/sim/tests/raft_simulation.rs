//! Randomised deterministic simulation of whole groups under faults (see `drakkar_sim::raft`).
//!
//! `SIM_SCHEDULES=n` changes how many schedules each configuration runs; `SIM_SEED=s` with the `replay`
//! test reruns one failing schedule.

use drakkar_sim::raft::{SimConfig, SimReport, simulate};

fn schedules(default: u64) -> u64 {
    std::env::var("SIM_SCHEDULES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn run_many(name: &str, base_seed: u64, n: u64, cfg: &SimConfig) -> SimReport {
    let mut total = SimReport::default();
    for i in 0..n {
        let seed = base_seed.wrapping_mul(1_000_003).wrapping_add(i);
        match simulate(seed, cfg.clone()) {
            Ok(r) => {
                total.writes_acked += r.writes_acked;
                total.reads_done += r.reads_done;
                total.elections += r.elections;
                total.crashes += r.crashes;
                total.snapshots_installed += r.snapshots_installed;
                total.conf_changes += r.conf_changes;
                total.max_commit = total.max_commit.max(r.max_commit);
            }
            Err(f) => panic!(
                "[{name}] {f}\nwith this suite's configuration: SIM_SEED={seed} SIM_VOTERS={} SIM_STEPS={} \
                 SIM_PREVOTE={} SIM_DROP_PCT={} SIM_DUP_PCT={} SIM_SPARE_IDS={} cargo test -p drakkar-sim \
                 --test raft_simulation replay",
                cfg.voters,
                cfg.steps,
                u8::from(cfg.pre_vote),
                cfg.drop_pct,
                cfg.dup_pct,
                cfg.spare_ids
            ),
        }
    }
    eprintln!("[{name}] {n} schedules x {} steps: {total:?}", cfg.steps);
    // A simulation that never makes progress checks nothing: demand real work happened.
    assert!(total.writes_acked > n, "[{name}] too few writes acknowledged: {total:?}");
    assert!(total.reads_done > n / 2, "[{name}] too few reads completed: {total:?}");
    total
}

#[test]
fn three_replicas_with_faults() {
    let cfg = SimConfig { voters: 3, ..SimConfig::default() };
    let r = run_many("3 replicas", 3, schedules(700), &cfg);
    assert!(r.crashes > 0 && r.elections > 0);
}

#[test]
fn five_replicas_with_faults() {
    let cfg = SimConfig { voters: 5, ..SimConfig::default() };
    run_many("5 replicas", 5, schedules(700), &cfg);
}

#[test]
fn three_replicas_without_prevote() {
    let cfg = SimConfig { voters: 3, pre_vote: false, ..SimConfig::default() };
    run_many("3 replicas, no prevote", 7, schedules(300), &cfg);
}

#[test]
fn lossy_network_long_schedules() {
    let cfg = SimConfig { voters: 3, steps: 4000, drop_pct: 20, dup_pct: 10, ..SimConfig::default() };
    run_many("lossy", 11, schedules(100), &cfg);
}

#[test]
fn five_replicas_membership_churn() {
    let cfg = SimConfig { voters: 5, spare_ids: 6, steps: 3000, ..SimConfig::default() };
    let r = run_many("churn", 13, schedules(300), &cfg);
    assert!(r.conf_changes > 0 && r.snapshots_installed > 0, "{r:?}");
}

/// Replays one schedule: `SIM_SEED=<seed> [SIM_VOTERS=5] cargo test -p drakkar-sim --test raft_simulation replay`.
#[test]
fn replay() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) else { return };
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let d = SimConfig::default();
    let cfg = SimConfig {
        voters: env("SIM_VOTERS").unwrap_or(3),
        steps: env("SIM_STEPS").map_or(d.steps, |s| s as usize),
        pre_vote: env("SIM_PREVOTE").map_or(d.pre_vote, |p| p != 0),
        drop_pct: env("SIM_DROP_PCT").unwrap_or(d.drop_pct),
        dup_pct: env("SIM_DUP_PCT").unwrap_or(d.dup_pct),
        spare_ids: env("SIM_SPARE_IDS").unwrap_or(d.spare_ids),
        ..d
    };
    if let Err(f) = simulate(seed, cfg) {
        panic!("{f}");
    }
}
