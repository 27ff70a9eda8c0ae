//! The deterministic NodeHost simulator (`drakkar_node::sim`) in CI: a budget of seeds, each a whole run
//! of 3 or 5 deterministic NodeHosts under crashes that lose unsynced data, restarts, partitions, message
//! loss, duplication and reordering, snapshots, membership changes and session retries; every history is
//! checked linearizable per key, acknowledged writes are never lost, retried session proposals apply
//! exactly once. A failure prints its seed and how to replay it:
//!
//! ```text
//! HOST_SIM_SEED=<seed> cargo test -p drakkar-node --profile ci --test host_simulation replay
//! ```
//! `HOST_SIM_SEEDS=<n>` runs n seeds instead of the CI budget (first seed: `HOST_SIM_FIRST`, default a
//! time-based one, printed). Long soaks: `cargo run -p drakkar-node --profile ci --example host_simulate`.

#[path = "host_simulation/check.rs"]
mod check;

use drakkar_node::sim::SimConfig;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Seeds every CI run covers (1..=100), then 20 new ones each run (time-based, printed): about 10 s of
/// one core.
#[test]
fn schedules() {
    let fixed = 1u64..=100;
    let first = env("HOST_SIM_FIRST").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_secs())
    });
    let fresh = env("HOST_SIM_SEEDS").unwrap_or(20);
    let seeds: Vec<u64> = if env("HOST_SIM_SEEDS").is_some() {
        (first..first + fresh).collect()
    } else {
        fixed.chain(first..first + fresh).collect()
    };
    let started = std::time::Instant::now();
    let n = seeds.len();
    for seed in seeds {
        match check::run_seed(seed) {
            Ok(summary) => eprintln!("{summary}"),
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("{n} schedules passed in {:.1} s (fresh seeds from {first})", started.elapsed().as_secs_f64());
}

/// Replays `HOST_SIM_SEED` (default: seed 1) with its configuration, printing what it did.
#[test]
fn replay() {
    let seed = env("HOST_SIM_SEED").unwrap_or(1);
    match check::run_seed(seed) {
        Ok(summary) => eprintln!("{summary}"),
        Err(e) => panic!("{e}"),
    }
}

/// A seed is a replay: two runs of one seed record the same history and end in the same state (the
/// runs are in one process, so hash maps iterate in different orders: the engine must not depend on it).
#[test]
fn same_seed_same_run() {
    for seed in [42, 43, 44] {
        let config = SimConfig::for_seed(seed);
        let a = check::run_with(seed, &config).unwrap_or_else(|e| panic!("{e}"));
        let b = check::run_with(seed, &config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.history.len(), b.history.len(), "seed {seed}: two runs differ in length");
        assert_eq!(a.history, b.history, "seed {seed}: two runs of one seed recorded different histories");
        assert_eq!(a.fingerprint(), b.fingerprint(), "seed {seed}: two runs of one seed differ");
        assert!(
            a.stats.ok > 100,
            "seed {seed}: too few operations acknowledged ({}) to mean anything",
            a.stats.ok
        );
        assert!(a.stats.crashes > 0, "seed {seed}: no crash: the schedule tests too little");
    }
}
