//! End-to-end test harness: real `drakkar` processes on 127.0.0.1 with free ports.
//!
//! Every spawned process is owned by a [`Proc`] (around `drakkar_check::process::NodeProcess`, the
//! project's one node launcher) that kills it (by PID) when dropped, so a failing test never leaves
//! processes behind; node logs go to files in the cluster's temporary directory and their tails are
//! printed when a test panics.
//!
//! The `drakkar` binary is the one cargo built next to this test binary (`cargo test --workspace` builds
//! it because `drakkar-cli`, the binary's package, has integration tests).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drakkar_check::process::{Launch, NodeProcess};
use drakkar_client::{Client, ClientConfig, tls};

/// The `drakkar` binary of this build profile.
pub fn drakkar_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join(format!("drakkar{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with the same profile (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A port free on 127.0.0.1 that no other call in this process returned. Ports come from 20,000 to
/// 32,767, below the kernel's usual range for outgoing connections (32,768 and up), so no client or peer
/// connection takes one between this check and the node binding it; a port bound to port 0 and released
/// could be handed out again (two nodes of one cluster were given the same one). The start depends on the
/// process id, so that test processes running at once rarely try the same ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Runs `drakkar <args>` to completion (for `cert` and CLI commands), killing it after 60 s; returns
/// (success, stdout, stderr).
pub fn drakkar(args: &[&str], envs: &[(&str, String)]) -> (bool, String, String) {
    let mut cmd = Command::new(drakkar_bin());
    cmd.args(args).env_remove("DRAKKAR_INSECURE").stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("running drakkar");
    let (mut out, mut err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for drakkar") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = err_reader.join().unwrap_or_default();
    let stdout = reader.join().unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("drakkar {args:?} did not finish within 60 s: {stderr}"));
    (status.success(), stdout, stderr)
}

/// The log filter of spawned nodes unless `DRAKKAR_E2E_LOG` gives one: debug for the engine and server
/// crates.
pub const DEFAULT_LOG_FILTER: &str =
    "info,drakkar=debug,drakkar_raft=info,drakkar_logdb=info,drakkar_client=info";

/// A `drakkar` process ([`NodeProcess`]), killed by PID when dropped; its log's tail is printed when it is
/// dropped by a panicking test. Its helpers panic where the launcher returns errors.
pub struct Proc {
    process: NodeProcess,
}

impl Proc {
    /// Spawns `drakkar <args>`, stdout and stderr into `log` (truncated), logging at `DRAKKAR_E2E_LOG` (a
    /// `DRAKKAR_LOG` filter; [`DEFAULT_LOG_FILTER`] by default), with no other `DRAKKAR_*` variable.
    pub fn spawn(name: &str, args: &[String], log: PathBuf) -> Proc {
        let filter = std::env::var("DRAKKAR_E2E_LOG").unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
        let launch = Launch::new(name, drakkar_bin(), log).args(args).log_filter(filter);
        Proc { process: launch.spawn().expect("spawning drakkar") }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `signal` (a name `kill` knows: STOP, CONT, ...) to the process.
    pub fn signal(&self, signal: &str) {
        if let Err(e) = self.process.signal(signal) {
            panic!("{e}");
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        self.process.kill9();
    }

    /// SIGTERM, then wait up to `within` for a clean exit; returns whether it exited successfully.
    pub fn terminate(mut self, within: Duration) -> bool {
        self.process.terminate(within)
    }

    /// Whether the process is still running (not exited, not killed).
    pub fn running(&mut self) -> bool {
        self.process.running()
    }

    /// A field of the process's `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`); None once it is gone.
    pub fn memory(&self, field: &str) -> Option<u64> {
        self.process.memory(field)
    }

    /// Resets the process's peak resident set size (`VmHWM`) to its current one.
    pub fn reset_peak_memory(&self) -> std::io::Result<()> {
        self.process.reset_peak_memory()
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "---- last lines of {} ({}) ----",
                self.process.name(),
                self.process.log_path().display()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// One node's fixed settings.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// 1-based index (= its replica id in the founding groups).
    pub index: usize,
    /// The advertised `host:port` (`127.0.0.1:port` unless [`Cluster::use_host_name`]).
    pub addr: String,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Port of `/metrics`, `/livez`, `/readyz`.
    pub http_port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
}

/// A cluster of `drakkar serve` processes.
pub struct Cluster {
    /// Node settings; index `i` is node `i + 1`.
    pub nodes: Vec<NodeSpec>,
    /// Running processes. Dropped (killed, their logs printed if the test panics) before `dir`.
    pub procs: Vec<Option<Proc>>,
    /// Founding members (the first `founders` nodes).
    pub founders: usize,
    /// KV groups.
    pub groups: u64,
    /// TLS on.
    pub tls: bool,
    /// Extra `serve` flags.
    pub extra: Vec<String>,
    /// Temporary directory of data, certificates and logs. Last: fields drop in order, and the logs must
    /// still be there when a panicking test's processes print them.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Prepares `nodes` nodes (the first `founders` found `groups` KV groups) without starting them.
    pub fn new(nodes: usize, founders: usize, groups: u64, tls: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        if tls {
            let out = dir.path().join("certs");
            let (ok, _, err) = drakkar(
                &["cert", "dev", "--out", out.to_str().expect("utf8"), "--nodes", &nodes.to_string()],
                &[],
            );
            assert!(ok, "drakkar cert dev failed: {err}");
        }
        let nodes = (1..=nodes)
            .map(|i| {
                let port = free_port();
                NodeSpec {
                    index: i,
                    addr: format!("127.0.0.1:{port}"),
                    port,
                    http_port: free_port(),
                    data_dir: dir.path().join(format!("node-{i}")),
                }
            })
            .collect::<Vec<_>>();
        let procs = nodes.iter().map(|_| None).collect();
        Cluster { dir, nodes, procs, founders, groups, tls, extra: Vec::new() }
    }

    /// Advertises the nodes as `host:port` (a DNS name resolved at every connect; certificates are valid
    /// for `localhost`) while they listen on 127.0.0.1. Call before starting them.
    pub fn use_host_name(&mut self, host: &str) {
        for n in &mut self.nodes {
            n.addr = format!("{host}:{}", n.port);
        }
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for i in 1..=self.nodes.len() {
            self.start(i);
        }
    }

    /// The certificate directory.
    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The `serve` arguments of node `i`.
    pub fn serve_args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i - 1];
        let peers: Vec<String> = self.nodes[..self.founders].iter().map(|n| n.addr.clone()).collect();
        let mut a: Vec<String> = [
            "serve",
            "--data-dir",
            n.data_dir.to_str().expect("utf8"),
            "--listen",
            &format!("127.0.0.1:{}", n.port),
            "--advertise",
            &n.addr,
            "--peers",
            &peers.join(","),
            "--kv-groups",
            &self.groups.to_string(),
            "--tick-ms",
            "20",
            "--metrics-listen",
            &format!("127.0.0.1:{}", n.http_port),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.tls {
            let c = self.certs();
            for (flag, file) in [
                ("--tls-ca", "ca.pem".to_string()),
                ("--tls-cert", format!("node-{i}.pem")),
                ("--tls-key", format!("node-{i}-key.pem")),
            ] {
                a.push(flag.into());
                a.push(c.join(file).to_str().expect("utf8").into());
            }
        } else {
            a.push("--insecure".into());
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Starts (or restarts) node `i`.
    pub fn start(&mut self, i: usize) {
        let args = self.serve_args(i);
        let log = self.dir.path().join(format!("node-{i}.log"));
        // Keep earlier logs of a restarted node.
        if log.exists() {
            let _ = std::fs::rename(&log, self.dir.path().join(format!("node-{i}.{}.log", free_port())));
        }
        self.procs[i - 1] = Some(Proc::spawn(&format!("node-{i}"), &args, log));
    }

    /// kill -9 of node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(p) = self.procs[i - 1].take() {
            p.kill9();
        }
    }

    /// Sends `signal` (STOP, CONT, ...) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        self.procs[i - 1].as_ref().expect("node is running").signal(signal);
    }

    /// SIGTERM of node `i`; whether it exited cleanly in time.
    pub fn terminate(&mut self, i: usize, within: Duration) -> bool {
        self.procs[i - 1].take().is_some_and(|p| p.terminate(within))
    }

    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> String {
        self.nodes[i - 1].addr.clone()
    }

    /// A client configuration for `endpoints`, trusting the cluster CA and presenting the admin certificate
    /// (the harness plays the operator); plaintext without TLS.
    pub fn client_config(&self, endpoints: Vec<String>) -> ClientConfig {
        self.client_config_as(endpoints, Some("admin"))
    }

    /// A client configuration for `endpoints` presenting the certificate `cert` of the certs directory
    /// (`admin`, `client`, `node-1` ...; None: no certificate).
    pub fn client_config_as(&self, endpoints: Vec<String>, cert: Option<&str>) -> ClientConfig {
        let mut cfg = ClientConfig::new(endpoints);
        cfg.request_timeout = Duration::from_secs(3);
        cfg.retry_for = Duration::from_secs(20);
        if self.tls {
            let certs = self.certs();
            let files = cert.map(|n| (certs.join(format!("{n}.pem")), certs.join(format!("{n}-key.pem"))));
            let identity = files.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            let c = tls::client_config_from_files(&certs.join("ca.pem"), identity).expect("client tls");
            cfg = cfg.with_tls(Arc::new(Arc::new(c)));
        }
        cfg
    }

    /// A client of every running node.
    pub fn client(&self) -> Client {
        let eps =
            (1..=self.nodes.len()).filter(|i| self.procs[i - 1].is_some()).map(|i| self.addr(i)).collect();
        Client::new(self.client_config(eps)).expect("client")
    }

    /// A client of node `i` only.
    pub fn client_of(&self, i: usize) -> Client {
        Client::new(self.client_config(vec![self.addr(i)])).expect("client")
    }

    /// Waits until every founding node reports a leader for every group.
    pub async fn wait_for_leaders(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let c = self.client();
        loop {
            let mut ok = true;
            let mut seen = Vec::new();
            for i in 1..=self.founders {
                if self.procs[i - 1].is_none() {
                    continue;
                }
                match c.status(&self.addr(i)).await {
                    Ok(s) => {
                        ok &= s.groups.len() as u64 >= self.groups && s.groups.iter().all(|g| g.leader != 0);
                        let leaders: Vec<(u64, u64)> = s.groups.iter().map(|g| (g.group, g.leader)).collect();
                        seen.push(format!("node {i}: (group, leader) {leaders:?}"));
                    }
                    Err(e) => {
                        ok = false;
                        seen.push(format!("node {i}: {e}"));
                    }
                }
            }
            if ok {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader for every group within {within:?}: {}",
                seen.join("; ")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader of `group` (node index), as a running node reports it.
    pub async fn leader(&self, group: u64, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            for i in 1..=self.nodes.len() {
                if self.procs[i - 1].is_none() {
                    continue;
                }
                if let Ok(s) = self.client_of(i).status(&self.addr(i)).await
                    && let Some(g) = s.groups.iter().find(|g| g.group == group && g.leader != 0)
                    && let Some(n) = self.nodes.iter().find(|n| n.addr == g.leader_address)
                    && self.procs[n.index - 1].is_some()
                {
                    return n.index;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no live leader for group {group} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` on node `i`'s HTTP port: (status line, body).
    pub fn http_get(&self, i: usize, path: &str) -> Option<(String, String)> {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.nodes[i - 1].http_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
        let mut out = String::new();
        BufReader::new(s).read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_string(), body.to_string()))
    }
}

/// Reads lines of `r` until one contains `needle` or `within` passes; returns the lines read.
pub fn wait_for_line(
    r: impl Read + Send + 'static,
    needle: &str,
    within: Duration,
) -> Result<Vec<String>, Vec<String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + within;
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(needle);
                lines.push(l);
                if hit {
                    return Ok(lines);
                }
            }
            Err(_) => break,
        }
    }
    Err(lines)
}
