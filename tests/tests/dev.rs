//! `drakkar dev` starts a TLS cluster, serves put/get through the CLI, and stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use drakkar_e2e::{drakkar, drakkar_bin, wait_for_line};

#[test]
fn dev_cluster_serves_the_cli_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let mut child = Command::new(drakkar_bin())
        .args(["dev", "--dir", data.to_str().unwrap(), "--groups", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed by PID if anything below fails.
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = child.stdout.take().unwrap();
    let mut guard = Guard(child);
    let lines = wait_for_line(out, "drakkar dev: ready", Duration::from_secs(60))
        .unwrap_or_else(|lines| panic!("dev never became ready: {lines:#?}"));
    assert!(lines.iter().any(|l| l.contains("DRAKKAR_ENDPOINTS=")), "{lines:#?}");

    let env_file = std::fs::read_to_string(data.join("env")).unwrap();
    let envs: Vec<(&str, String)> =
        env_file.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k, v.to_string())).collect();
    assert!(envs.iter().any(|(k, _)| *k == "DRAKKAR_CA"), "TLS is on by default: {env_file}");
    let (ok, stdout, stderr) = drakkar(&["kv", "put", "greeting", "hello"], &envs);
    assert!(ok, "put failed: {stdout} {stderr}");
    let (ok, stdout, stderr) = drakkar(&["kv", "get", "greeting"], &envs);
    assert!(ok, "get failed: {stderr}");
    assert_eq!(stdout.trim(), "hello");
    let (ok, _, _) = drakkar(&["kv", "get", "missing"], &envs);
    assert!(!ok, "a missing key exits non-zero");
    let (ok, stdout, stderr) = drakkar(&["admin", "status"], &envs);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.matches("ready true").count(), 3, "{stdout}");

    // A reader that goes away early (`drakkar kv get big | head -c 1`): the CLI ends as a program killed
    // by SIGPIPE would (status 141), without a panic. The value is larger than a pipe's buffer, so the
    // write fails whenever the reader closes.
    let big = "x".repeat(100_000);
    let (ok, _, stderr) = drakkar(&["kv", "put", "big", &big], &envs);
    assert!(ok, "{stderr}");
    let mut get = Command::new(drakkar_bin())
        .args(["kv", "get", "big"])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(get.stdout.take());
    let output = get.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let pid = guard.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "drakkar dev did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "drakkar dev exited with {status}");
}
