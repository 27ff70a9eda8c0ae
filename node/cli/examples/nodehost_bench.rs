//! NodeHost throughput: three NodeHosts in one process on the in-process network, many groups, small
//! proposals from in-process clients (Dragonboat's benchmark method), fsync on. A thin front end of
//! `drakkar_cli::bench` (the same code as `drakkar bench embedded` and `drakkar bench idle`).
//!
//! ```text
//! cargo run --release -p drakkar-cli --example nodehost_bench -- --groups 48 --clients 1024 --secs 10 \
//!     [--size 16] [--dir /path/on/the/disk/to/test] [--idle-groups 10000]
//! ```
//! `--idle-groups N` instead starts N idle single-replica groups on one NodeHost and reports RSS and CPU.

use std::sync::Arc;
use std::time::Duration;

use drakkar_cli::bench::embedded::{Embedded, EmbeddedOptions, EmbeddedSm};
use drakkar_cli::bench::{self, Consistency, Mix, Workload};

fn arg(name: &str, default: u64) -> u64 {
    arg_str(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let groups = arg("--groups", 48);
    let base = arg_str("--dir").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    if let Some(n) = arg_str("--idle-groups").and_then(|s| s.parse().ok()) {
        let dir = tempfile::Builder::new().prefix("drakkar-bench").tempdir_in(base)?;
        let r = bench::idle::measure(dir.path(), n, Duration::from_secs(5), Duration::from_secs(10)).await?;
        println!("{r}");
        return Ok(());
    }
    let o = EmbeddedOptions { dir: base, groups, sm: EmbeddedSm::Counter, ..EmbeddedOptions::default() };
    let cluster = Arc::new(Embedded::start(&o).await?);
    let w = Workload {
        mix: Mix::Put,
        consistency: Consistency::Linearizable,
        keys: 10_000,
        value_size: arg("--size", 16) as usize,
        in_flight: arg("--clients", 1024) as usize,
        groups,
        duration: Duration::from_secs(arg("--secs", 10)),
        warmup: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
    };
    let r = bench::run(cluster.clone(), "embedded", &w, &[]).await;
    if let Some(c) = Arc::into_inner(cluster) {
        tokio::task::spawn_blocking(move || c.close()).await?;
    }
    bench::print_table(&[r?]);
    Ok(())
}
