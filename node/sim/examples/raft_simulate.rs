//! Runs the randomised simulator over many schedules (the overnight soak).
//!
//! ```text
//! cargo run --release -p drakkar-sim --example raft_simulate -- --schedules 1000000 [--voters 5] [--steps 1500]
//!     [--seed 42] [--debug]
//! ```
//! `--seed` with `--schedules 1` replays one schedule; `--debug` prints the last events and every replica's
//! state at the end. A failure prints its seed and exits non-zero.

use std::process::ExitCode;
use std::time::Instant;

use drakkar_sim::raft::{Sim, SimConfig};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> ExitCode {
    let num = |name: &str, default: u64| arg(name).and_then(|s| s.parse().ok()).unwrap_or(default);
    let schedules = num("--schedules", 1000);
    let first_seed = num("--seed", 1);
    let debug = std::env::args().any(|a| a == "--debug");
    let cfg = SimConfig {
        voters: num("--voters", 3),
        steps: num("--steps", SimConfig::default().steps as u64) as usize,
        drop_pct: num("--drop-pct", SimConfig::default().drop_pct),
        ..SimConfig::default()
    };
    let start = Instant::now();
    let (mut writes, mut reads) = (0, 0);
    for seed in first_seed..first_seed + schedules {
        let mut sim = Sim::new(seed, cfg.clone());
        let res = sim.run_steps(cfg.steps);
        if debug {
            println!("{}", sim.describe());
        }
        let res = res.and_then(|()| sim.settle());
        match res {
            Ok(r) => {
                writes += r.writes_acked;
                reads += r.reads_done;
            }
            Err(f) => {
                eprintln!("{f}");
                return ExitCode::FAILURE;
            }
        }
        let done = seed - first_seed + 1;
        if done % 10_000 == 0 {
            eprintln!("{done} schedules ok ({:.0?})", start.elapsed());
        }
    }
    println!(
        "{schedules} schedules x {} steps, {} voters: all safe; {writes} writes acknowledged, {reads} reads checked, {:.1?}",
        cfg.steps,
        cfg.voters,
        start.elapsed()
    );
    ExitCode::SUCCESS
}
