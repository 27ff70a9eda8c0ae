//! The deterministic NodeHost simulator (`drakkar_sim`) in CI: a budget of seeds, each a whole run
//! of 3 or 5 deterministic NodeHosts under crashes that lose unsynced data, restarts, partitions, message
//! loss, duplication and reordering, snapshots, membership changes and session retries; every history is
//! checked linearizable per key, acknowledged writes are never lost, retried session proposals apply
//! exactly once. A failure prints its seed and how to replay it:
//!
//! ```text
//! HOST_SIM_SEED=<seed> cargo test -p drakkar-sim --profile ci --test host_simulation replay
//! ```
//! `HOST_SIM_SEEDS=<n>` runs n seeds instead of the CI budget (first seed: `HOST_SIM_FIRST`, default a
//! time-based one, printed). Long soaks: `cargo run -p drakkar-sim --profile ci --example host_simulate`.

#[path = "host_simulation/check.rs"]
mod check;

use drakkar_sim::SimConfig;

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

/// A deterministic NodeHost runs no thread: nothing happens until its caller ticks it and runs it; a
/// request answers through its handle once the driver ran; `close` drives the shutdown. A threaded
/// NodeHost refuses to be driven.
#[test]
fn a_deterministic_nodehost_does_nothing_until_driven() {
    use std::sync::Arc;

    use drakkar::{Driver, GroupConfig, NodeError, NodeHost, NodeHostConfig, StartMode, StateMachineBox};
    use drakkar_kv::{Command, MemKv, Query, QueryResult, Status};
    use drakkar_logdb::fs::MemFs;
    use drakkar_raft::{GroupId, ReplicaId};
    use drakkar_sim::SimNetwork;

    let dir = tempfile::tempdir().unwrap();
    let net = SimNetwork::new(1);
    let mut cfg = NodeHostConfig::new(dir.path().join("d"), "h1");
    cfg.deterministic = Some(7);
    cfg.log_fs = Some(Arc::new(MemFs::new()));
    let h = NodeHost::new(cfg, net.transport()).unwrap();
    let driver = Driver::new(&h).unwrap();
    net.register("h1", h.sink());
    let g = GroupId(1);
    let members = [(ReplicaId(1), "h1".to_string())].into();
    let sm = StateMachineBox::concurrent(Arc::new(MemKv::new()));
    h.start_replica(g, ReplicaId(1), StartMode::Founding(members), sm, GroupConfig::default()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(h.leader(g).unwrap(), None, "no thread may elect a leader behind the driver's back");
    let mut ticks = 0;
    while h.leader(g).unwrap().is_none() {
        driver.tick();
        driver.run_until_idle().unwrap();
        ticks += 1;
        assert!(ticks < 100, "no leader after {ticks} ticks");
    }
    let mut put = driver.propose(g, Command::put("k", "v").encode().unwrap()).unwrap();
    assert!(put.try_result().is_none(), "answered before the driver ran");
    driver.run_until_idle().unwrap();
    assert_eq!(put.try_result().unwrap().unwrap().value, Status::Ok.code());
    assert!(put.try_result().is_none(), "an answer is taken once");
    let mut read = driver.read(g, Query::get("k").encode().unwrap()).unwrap();
    driver.run_until_idle().unwrap();
    let got = QueryResult::decode(&read.try_result().unwrap().unwrap()).unwrap();
    assert!(matches!(got, QueryResult::Get(Some(kv)) if &kv.value[..] == b"v"));
    h.close();
    assert!(driver.propose(g, Command::put("k", "w").encode().unwrap()).is_err());

    let threaded = NodeHost::new(
        NodeHostConfig::new(dir.path().join("t"), "t1"),
        drakkar::transport::InProcessNetwork::default().transport(),
    )
    .unwrap();
    assert!(matches!(Driver::new(&threaded), Err(NodeError::InvalidArgument(_))));
    threaded.close();
}
