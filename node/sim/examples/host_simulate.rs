//! Long soaks of the NodeHost simulator (`drakkar_sim`): many seeds, each a whole deterministic run
//! of 3 or 5 NodeHosts under crashes, partitions, message loss, snapshots, membership changes and session
//! retries, checked for per-key linearizability, lost acknowledged writes and exactly-once sessions.
//!
//! ```text
//! cargo run -p drakkar-sim --profile ci --example host_simulate -- --seeds 200 [--first 1000] [--minutes 10]
//! cargo run -p drakkar-sim --profile ci --example host_simulate -- --seed 1234   # replay one, verbose
//! ```
//! A failure prints the seed and exits with status 1 (`--keep-going`: after running every seed).

#[path = "../tests/host_simulation/check.rs"]
mod check;

use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<u64> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(seed) = arg(&args, "--seed") {
        match check::run_seed(seed) {
            Ok(summary) => println!("{summary}"),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let seeds = arg(&args, "--seeds").unwrap_or(100);
    let first = arg(&args, "--first").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    let budget = arg(&args, "--minutes").map(|m| Duration::from_secs(m * 60));
    let start = Instant::now();
    let keep_going = args.iter().any(|a| a == "--keep-going");
    let mut ran = 0;
    let mut failed = Vec::new();
    for seed in first..first + seeds {
        if budget.is_some_and(|b| start.elapsed() > b) {
            break;
        }
        let t = Instant::now();
        match check::run_seed(seed) {
            Ok(summary) => println!("{summary} ({:.1} s)", t.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!("{e}");
                failed.push(seed);
                if !keep_going {
                    std::process::exit(1);
                }
            }
        }
        ran += 1;
    }
    if !failed.is_empty() {
        eprintln!("{} of {ran} schedules failed: seeds {failed:?}", failed.len());
        std::process::exit(1);
    }
    println!(
        "{ran} schedules passed (seeds {first}..{}) in {:.0} s",
        first + ran,
        start.elapsed().as_secs_f64()
    );
}
