//! `drakkar check --local`: a short run of each nemesis against a cluster of real `drakkar serve`
//! processes must be linearizable, with no acknowledged write lost, and must measure every node's
//! recovery after every fault. Longer runs and measured recovery times: docs/reliability.md.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drakkar_e2e::drakkar_bin;

/// Runs `drakkar check --local --nemesis <nemesis> --time <time> <extra>` (faults held 2 s after 1 s
/// of calm, 5 clients: one per workload of the default `mix`) and returns its report.
fn check(nemesis: &str, time: &str, extra: &[&str], out: &Path) -> serde_json::Value {
    let mut args = vec![
        "check",
        "--local",
        "--nemesis",
        nemesis,
        "--time",
        time,
        "--fault-quiet",
        "1s",
        "--fault-hold",
        "2s",
        "--recovery-wait",
        "5s",
        // One client per workload of the default `mix`.
        "--concurrency",
        "5",
        "--rate",
        "150",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(drakkar_bin())
        .args(args)
        .env("DRAKKAR_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running drakkar check");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Bounded: SIGTERM (the command then kills its cluster), then SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(75);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    let status =
        status.unwrap_or_else(|| panic!("drakkar check --nemesis {nemesis} did not finish: {stderr}"));
    let report = std::fs::read_to_string(out.join("report.json"))
        .unwrap_or_else(|e| panic!("no report ({e}); exit {status}\n{stdout}\n{stderr}"));
    let report: serde_json::Value = serde_json::from_str(&report).expect("report.json is JSON");
    println!("--nemesis {nemesis}:\n{stdout}");
    assert_eq!(report["verdict"], "linearizable", "{stdout}\n{stderr}");
    assert_eq!(report["lost_acknowledged_writes"], 0, "{stdout}\n{stderr}");
    assert_eq!(report["passed"], true, "{stdout}");
    assert!(status.success(), "a passing check exits 0: {status}\n{stderr}");
    // The workload really ran, and the faults really happened.
    assert!(report["operations"]["ok"].as_u64().unwrap() > 100, "{stdout}");
    assert!(out.join("latency.svg").exists());
    assert!(std::fs::read_to_string(out.join("latency.svg")).unwrap().starts_with("<svg"));
    assert_recovery_measured(&report);
    report
}

/// Every fault has every node's recovery (time from the heal to its first linearizable read in every
/// group, or null when it did not answer within the probe limit), and the failure windows are reported.
fn assert_recovery_measured(report: &serde_json::Value) {
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{report}");
    for f in report["faults"].as_array().unwrap() {
        let recovery = f["recovery"].as_array().unwrap_or_else(|| panic!("no recovery in {f}"));
        assert_eq!(recovery.len(), nodes.len(), "one recovery per node: {f}");
        for (r, node) in recovery.iter().zip(nodes) {
            assert_eq!(&r["node"], node, "{f}");
            assert!(r["recovered_ms"].is_f64() || r["recovered_ms"].is_null(), "{f}");
            assert!(r["attempts"].as_u64().unwrap() >= 1, "{f}");
            assert_eq!(r["groups"].as_array().unwrap().len(), report["groups"].as_array().unwrap().len());
        }
    }
    assert!(report["failure_windows"].is_array(), "{report}");
}

fn faults_of(report: &serde_json::Value, kind: &str) -> usize {
    report["faults"].as_array().unwrap().iter().filter(|f| f["kind"] == kind).count()
}

/// The `--max-recovery` bound of the CI run: the documented goal, 1 s. On the 2-core development
/// machine, with runs two and three at a time (load average up to 9), 156 killed or isolated nodes
/// served again 27 to 630 ms after the heal; with namespaces and four busy loops beside (load average
/// 10 to 15), every kill, pause and partition 77 to 625 ms (docs/reliability.md, "Availability").
const MAX_RECOVERY: &str = "1s";

/// Kills and partitions in turn (two of each); every node must serve linearizable reads again within
/// `MAX_RECOVERY` of every heal, or `drakkar check` fails the run.
#[test]
fn kill_and_partition_recover_within_bound() {
    let dir = tempfile::tempdir().unwrap();
    let r = check("kill,partition", "14s", &["--max-recovery", MAX_RECOVERY], dir.path());
    assert_eq!(faults_of(&r, "kill"), 2, "{r}");
    assert_eq!(faults_of(&r, "partition"), 2, "{r}");
    assert_eq!(r["max_recovery_ms"], 1000.0, "{r}");
    assert!(r["recovery_failures"].as_array().unwrap().is_empty(), "{r}");
    for f in r["faults"].as_array().unwrap() {
        for n in f["recovery"].as_array().unwrap() {
            let ms = n["recovered_ms"].as_f64().unwrap_or_else(|| panic!("not recovered: {f}"));
            assert!(ms <= 1000.0, "{f}");
        }
    }
}

/// Every founding node killed at once, then all restarted on their data (issue #23's "kill -9 of all
/// three"): the cluster comes back with nothing acknowledged lost, every node serving linearizable reads
/// within `MAX_RECOVERY` of the restarts.
#[test]
fn kill_all_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    // More keys per group: with the whole cluster down, every operation of the hold fails or is
    // unknown, and few keys would leave the checker too many orders to try (as for `double`).
    let r = check("kill-all", "8s", &["--max-recovery", MAX_RECOVERY, "--keys-per-group", "12"], dir.path());
    assert_eq!(faults_of(&r, "kill-all"), 2, "{r}");
    assert!(r["recovery_failures"].as_array().unwrap().is_empty(), "{r}");
    for f in r["faults"].as_array().unwrap() {
        assert_eq!(f["node"].as_str().unwrap().split('+').count(), 3, "every founding node: {f}");
        assert!(f["errors"].as_array().unwrap().is_empty(), "{f}");
    }
}

#[test]
fn pause_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let r = check("pause", "8s", &["--max-recovery", MAX_RECOVERY], dir.path());
    assert!(faults_of(&r, "pause") >= 1, "{r}");
}

#[test]
fn membership_changes() {
    let dir = tempfile::tempdir().unwrap();
    let r = check("membership", "8s", &[], dir.path());
    assert!(faults_of(&r, "membership") >= 1, "{r}");
    // At least one replica was added, promoted and removed without errors.
    let clean =
        r["faults"].as_array().unwrap().iter().filter(|f| f["errors"].as_array().unwrap().is_empty()).count();
    assert!(clean >= 1, "{r}");
}

/// Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN), which the disk-full nemesis needs.
fn can_mount_tmpfs() -> bool {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "drakkar-probe"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let _ = Command::new("umount").arg(dir.path()).status();
    }
    mounted
}

#[test]
fn disk_full() {
    if !can_mount_tmpfs() {
        // The nemesis itself refuses clearly in that case (see docs/reliability.md).
        eprintln!(
            "SKIPPED: the disk-full nemesis needs root to mount a tmpfs per node, and mount failed here"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = check("disk-full", "8s", &[], dir.path());
    let faults = r["faults"].as_array().unwrap();
    assert!(faults_of(&r, "disk-full") >= 1, "{r}");
    // Under writes, a full disk fails a log write: the node stops (exits) rather than acknowledge, and the
    // nemesis restarts it once there is room again.
    assert!(
        faults.iter().any(|f| f["target"].as_str().unwrap().contains("it stopped")),
        "no node stopped on a full disk: {r}"
    );
    assert!(faults.iter().all(|f| f["errors"].as_array().unwrap().is_empty()), "{r}");
}

/// The default `mix` of workloads, under kills and pauses: every workload ran and was answered, the
/// `retries` client shared its session, plain writes and transactions were made, the replica node held
/// a non-voter and a witness and answered reads and writes for both groups, and every reply carried the
/// key's version (so a double apply would have been rejected).
#[test]
fn every_workload_under_kills_and_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let r = check("kill,pause", "10s", &["--workload", "mix"], dir.path());
    assert!(faults_of(&r, "kill") >= 1 && faults_of(&r, "pause") >= 1, "{r}");
    let workloads = r["workloads"].as_array().unwrap();
    let names: Vec<&str> = workloads.iter().map(|w| w["workload"].as_str().unwrap()).collect();
    assert_eq!(names, ["register", "retries", "plain", "txn", "replicas"], "{r}");
    for w in workloads {
        let ops = &w["operations"];
        assert!(ops["ok"].as_u64().unwrap() >= 20, "too few answered operations: {w}");
        assert!(ops["reads"].as_u64().unwrap() >= 5, "{w}");
    }
    let of = |name: &str| &workloads.iter().find(|w| w["workload"] == name).unwrap()["operations"];
    assert!(of("txn")["txn"].as_u64().unwrap() >= 10, "{r}");
    assert!(of("retries")["txn"].as_u64().unwrap() >= 1, "{r}");
    assert!(of("plain")["writes"].as_u64().unwrap() >= 5, "{r}");
    let replica_node = r["replica_node"].as_str().expect("a replica node");
    assert!(replica_node.contains("NonVoter") && replica_node.contains("Witness"), "{replica_node}");

    // The history: the replica node answered reads and writes in both groups (the non-voter's and the
    // witness's), and every answer reported the key's version.
    let history = std::fs::read_to_string(dir.path().join("history.jsonl")).unwrap();
    let ops: Vec<serde_json::Value> = history.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let replica_name = replica_node.split(' ').next().unwrap();
    for group in ["g1/", "g2/"] {
        for kind in ["read", "write"] {
            let answered = ops.iter().any(|o| {
                o["node"] == replica_name
                    && o["outcome"] == "ok"
                    && o["kind"] == kind
                    && o["key"].as_str().unwrap().starts_with(group)
            });
            assert!(answered, "no {kind} of {group} answered through {replica_name}");
        }
    }
    let ok: Vec<&serde_json::Value> = ops.iter().filter(|o| o["outcome"] == "ok").collect();
    assert!(ok.iter().all(|o| o["version"].is_u64()), "an answer without a version");
    assert!(ops.iter().any(|o| o["workload"] == "retries" && o["node"] == "any"));
}

/// Whether the network-namespace nemeses can run here: they need root (CI runs as root).
fn netns_possible() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|u| u.split_whitespace().nth(1)) == Some("0")
    });
    if !root {
        eprintln!("SKIPPED: --netns needs root to create network namespaces and iptables rules");
    }
    root
}

/// `drakkar check --local --netns --nemesis <nemesis> --time <time>` (`faults` faults of 2 s each) with
/// the recovery bound `max_recovery` (e.g. "3s"): linearizable, every fault applied and healed without
/// errors, every node serving again within the bound after every heal.
fn check_netns(nemesis: &str, time: &str, faults: usize, max_recovery: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let r = check(nemesis, time, &["--netns", "--max-recovery", max_recovery], dir.path());
    assert_eq!(faults_of(&r, nemesis), faults, "{r}");
    let max_ms = drakkar_check_duration_ms(max_recovery);
    assert_eq!(r["max_recovery_ms"].as_f64(), Some(max_ms), "{r}");
    for f in r["faults"].as_array().unwrap() {
        assert!(f["errors"].as_array().unwrap().is_empty(), "{f}");
        for n in f["recovery"].as_array().unwrap() {
            let ms = n["recovered_ms"].as_f64().unwrap_or_else(|| panic!("not recovered: {f}"));
            assert!(ms <= max_ms, "{f}");
        }
    }
    assert!(r["recovery_failures"].as_array().unwrap().is_empty(), "{r}");
    r
}

/// Milliseconds of a whole number of seconds, `3s`.
fn drakkar_check_duration_ms(d: &str) -> f64 {
    let secs: f64 = d.strip_suffix('s').and_then(|s| s.parse().ok()).expect("a duration in seconds");
    secs * 1e3
}

/// Every packet between a node and its peers dropped (no resets); clients still reach it.
#[test]
fn netns_silent_partition() {
    if netns_possible() {
        check_netns("silent-partition", "8s", 2, MAX_RECOVERY);
    }
}

/// Every packet to and from a node dropped, the clients' too.
#[test]
fn netns_isolate() {
    if netns_possible() {
        check_netns("isolate", "8s", 2, MAX_RECOVERY);
    }
}

/// The peers' packets to a node dropped.
#[test]
fn netns_one_way_in() {
    if netns_possible() {
        check_netns("one-way-in", "8s", 2, MAX_RECOVERY);
    }
}

/// A node's packets to its peers dropped.
#[test]
fn netns_one_way_out() {
    if netns_possible() {
        check_netns("one-way-out", "8s", 2, MAX_RECOVERY);
    }
}

/// A kill or a pause on one node and a network fault on another, at once: the third node alone has no
/// quorum until both are healed. Three faults (11 s) so that enough operations succeed between them.
/// Every group must elect a leader again after the heal, within `MAX_RECOVERY` like the single faults
/// (before the fix of docs/reliability.md, "A rejoining follower flapped", a rejoining follower could
/// flap for seconds and this bound was 10 s).
#[test]
fn netns_double() {
    if !netns_possible() {
        return;
    }
    let r = check_netns("double", "11s", 3, MAX_RECOVERY);
    for f in r["faults"].as_array().unwrap() {
        let (target, node) = (f["target"].as_str().unwrap(), f["node"].as_str().unwrap());
        assert!(target.contains(" + ") && node.contains('+'), "two nodes hit: {f}");
        let nodes: Vec<&str> = node.split('+').collect();
        assert_ne!(nodes[0], nodes[1], "{f}");
    }
}

/// The packet-filter nemeses refuse to run without namespaces, before starting anything.
#[test]
fn network_nemeses_need_netns() {
    let out = Command::new(drakkar_bin())
        .args(["check", "--local", "--nemesis", "one-way-in", "--time", "1s"])
        .output()
        .expect("running drakkar check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("add --netns"), "{err}");
}

/// Whether the disk nemeses can run here: they mount a FUSE filesystem per node, which needs root and
/// `/dev/fuse` (CI has both).
fn fuse_possible() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|u| u.split_whitespace().nth(1)) == Some("0")
    });
    let possible = root && Path::new("/dev/fuse").exists();
    if !possible {
        eprintln!("SKIPPED: the slow-disk and power-loss nemeses need root and /dev/fuse to mount FUSE");
    }
    possible
}

/// Every fsync of one node delayed by 200 ms to 1 s while held: the cluster keeps serving, the history
/// stays linearizable, and every node serves again within the bound once the disk is fast again.
#[test]
fn slow_disk() {
    if !fuse_possible() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = check("slow-disk", "8s", &["--max-recovery", MAX_RECOVERY], dir.path());
    assert!(faults_of(&r, "slow-disk") >= 1, "{r}");
    for f in r["faults"].as_array().unwrap() {
        assert!(f["errors"].as_array().unwrap().is_empty(), "{f}");
        let ms: u64 = f["target"]
            .as_str()
            .and_then(|t| t.split(" fsyncs +").nth(1))
            .and_then(|t| t.strip_suffix(" ms"))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no fsync delay in {f}"));
        assert!((200..=1000).contains(&ms), "{f}");
    }
    assert!(r["recovery_failures"].as_array().unwrap().is_empty(), "{r}");
}

/// A node killed and its unsynced writes discarded (what a power loss does), then restarted on what it
/// had fsynced: no acknowledged write is lost and the history stays linearizable (`check` asserts
/// both). That the filesystem really discards unsynced data is tested in node/lazyfs/tests/mount.rs.
#[test]
fn power_loss() {
    if !fuse_possible() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = check("power-loss", "8s", &["--max-recovery", MAX_RECOVERY], dir.path());
    assert!(faults_of(&r, "power-loss") >= 1, "{r}");
    for f in r["faults"].as_array().unwrap() {
        assert!(f["errors"].as_array().unwrap().is_empty(), "{f}");
        assert!(f["target"].as_str().unwrap().contains(" power loss ("), "{f}");
    }
    assert!(r["recovery_failures"].as_array().unwrap().is_empty(), "{r}");
}
