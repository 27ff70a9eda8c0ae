//! The one launcher of `drakkar` node processes, shared by `drakkar check --local` ([`crate::cluster`])
//! and the end-to-end tests (`drakkar-e2e`).
//!
//! A [`Launch`] says what to start: the program and its flags, the log file (created afresh or appended
//! to), an optional network namespace and the log filter. [`Launch::spawn`] starts it as a
//! [`NodeProcess`], which owns the child: it is killed (SIGKILL, by PID) and reaped when dropped, so
//! nothing outlives its owner.
//!
//! A node reads its configuration from flags only: every `DRAKKAR_*` variable of the caller is removed
//! from its environment except `DRAKKAR_LOG`, the log filter, which [`Launch::log_filter`] sets.
//! Needs only `std` (no `runner` feature); signals go through the `kill` program, memory figures come
//! from `/proc` (Linux).
//!
//! ```no_run
//! use drakkar_check::process::Launch;
//! use std::time::Duration;
//!
//! let mut node = Launch::new("node-1", "drakkar", "node-1.log")
//!     .args(["serve", "--data-dir", "node-1", "--insecure"])
//!     .log_filter("info")
//!     .spawn()?;
//! node.signal("STOP")?;
//! node.signal("CONT")?;
//! assert!(node.terminate(Duration::from_secs(10)));
//! # Ok::<(), drakkar_check::process::ProcessError>(())
//! ```

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The environment variable of a node's log filter, the only `DRAKKAR_*` it inherits.
pub const LOG_FILTER_VAR: &str = "DRAKKAR_LOG";

/// What went wrong starting or signalling a process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The log file could not be opened (or its handle duplicated for stderr).
    #[error("opening the log {}: {source}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The process could not be started.
    #[error("starting {name}: {source}")]
    Spawn {
        /// The process's name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// The `kill` program could not be run.
    #[error("running kill -{signal} {pid} ({name}): {source}")]
    Kill {
        /// The process's name.
        name: String,
        /// Its id.
        pid: u32,
        /// The signal's name.
        signal: String,
        /// Why.
        source: std::io::Error,
    },
    /// `kill` ran but failed (no such process, an unknown signal).
    #[error("kill -{signal} {pid} ({name}) failed: {status}")]
    Signal {
        /// The process's name.
        name: String,
        /// Its id.
        pid: u32,
        /// The signal's name.
        signal: String,
        /// How `kill` exited.
        status: ExitStatus,
    },
}

/// How to start a node process; reusable, so a restarted node gets the same flags, environment and log.
#[derive(Clone, Debug)]
pub struct Launch {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    append: bool,
    netns: Option<String>,
    log_filter: Option<String>,
}

impl Launch {
    /// Starts `program` with no arguments, stdout and stderr into `log` (truncated), in the caller's
    /// network namespace, inheriting the caller's `DRAKKAR_LOG` if any. `name` appears in errors.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Launch {
        Launch {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            log: log.into(),
            append: false,
            netns: None,
            log_filter: None,
        }
    }

    /// Adds arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Launch {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends to the log instead of truncating it (a restarted node keeps its earlier lines).
    pub fn append_log(mut self, append: bool) -> Launch {
        self.append = append;
        self
    }

    /// Runs the process in network namespace `ns` through `ip netns exec` (needs root), which executes
    /// the program in place: the child's id is the node's.
    pub fn netns(mut self, ns: impl Into<String>) -> Launch {
        self.netns = Some(ns.into());
        self
    }

    /// Sets the node's `DRAKKAR_LOG` to `filter` instead of inheriting the caller's.
    pub fn log_filter(mut self, filter: impl Into<String>) -> Launch {
        self.log_filter = Some(filter.into());
        self
    }

    /// The name given to [`Launch::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The command this launch runs, without its output redirected.
    fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args).stdin(Stdio::null());
        remove_node_settings(&mut cmd, std::env::vars_os().map(|(k, _)| k));
        if let Some(f) = &self.log_filter {
            cmd.env(LOG_FILTER_VAR, f);
        }
        cmd
    }

    /// Starts the process.
    pub fn spawn(&self) -> Result<NodeProcess, ProcessError> {
        let log_err = |source| ProcessError::Log { path: self.log.clone(), source };
        let log = OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.append)
            .truncate(!self.append)
            .open(&self.log)
            .map_err(log_err)?;
        let stderr: File = log.try_clone().map_err(log_err)?;
        let child = self
            .command()
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|source| ProcessError::Spawn { name: self.name.clone(), source })?;
        Ok(NodeProcess { child, name: self.name.clone(), log: self.log.clone() })
    }
}

/// Removes from `cmd`'s environment each of `vars` that would set a node flag: every `DRAKKAR_*` but
/// [`LOG_FILTER_VAR`].
fn remove_node_settings(cmd: &mut Command, vars: impl Iterator<Item = std::ffi::OsString>) {
    for k in vars {
        if k.to_str().is_some_and(|k| k.starts_with("DRAKKAR_") && k != LOG_FILTER_VAR) {
            cmd.env_remove(k);
        }
    }
}

/// A running (or exited, not yet dropped) node process. Dropping it kills it with SIGKILL (a stopped
/// process too) and reaps it.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    name: String,
    log: PathBuf,
}

impl NodeProcess {
    /// The process id (the node's own, also in a network namespace).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name it was launched with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `signal` (a name `kill` knows: STOP, CONT, TERM, ...).
    pub fn signal(&self, signal: &str) -> Result<(), ProcessError> {
        let (name, pid) = (self.name.clone(), self.pid());
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().map_err(
            |source| ProcessError::Kill { name: name.clone(), pid, signal: signal.into(), source },
        )?;
        match status.success() {
            true => Ok(()),
            false => Err(ProcessError::Signal { name, pid, signal: signal.into(), status }),
        }
    }

    /// SIGKILL, then reap. Does nothing once it was reaped.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `within` for it to exit; whether it exited successfully in time. Still
    /// running after `within`, it is left running (dropping it kills it).
    pub fn terminate(&mut self, within: Duration) -> bool {
        if self.exit_status().is_none() {
            let _ = self.signal("TERM");
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status() {
                return status.success();
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is still running (not exited, not killed).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How it ended, once it has (None while it runs, or when that cannot be told).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// A field of its `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`); None once it is gone.
    pub fn memory(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = s.lines().find(|l| l.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Resets its peak resident set size (`VmHWM`) to its current one.
    pub fn reset_peak_memory(&self) -> std::io::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far (empty if it cannot be read).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str) -> Launch {
        Launch::new("sh", "/bin/sh", dir.join("sh.log")).args(["-c", script])
    }

    fn run(l: Launch) -> NodeProcess {
        let mut p = l.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(p.exit_status().is_some_and(|s| s.success()), "{}", p.log());
        p
    }

    /// Waits until the script wrote `ready` (its traps are set).
    fn ready(l: Launch) -> NodeProcess {
        let p = l.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.log().contains("ready") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }

    #[test]
    fn the_log_is_truncated_or_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        run(sh(dir.path(), "echo one; echo two >&2"));
        assert_eq!(run(sh(dir.path(), "echo three; echo four >&2")).log(), "three\nfour\n");
        assert_eq!(run(sh(dir.path(), "echo five").append_log(true)).log(), "three\nfour\nfive\n");
    }

    #[test]
    fn the_node_gets_the_log_filter_and_no_other_drakkar_variable() {
        let dir = tempfile::tempdir().unwrap();
        let p = run(sh(dir.path(), "echo \"${DRAKKAR_LOG:-unset}\"").log_filter("warn,drakkar=debug"));
        assert_eq!(p.log(), "warn,drakkar=debug\n");
        let mut cmd = Command::new("true");
        let vars = ["DRAKKAR_LOG", "DRAKKAR_INSECURE", "DRAKKAR_PEERS", "HOME", "XDRAKKAR_A"];
        remove_node_settings(&mut cmd, vars.iter().map(Into::into));
        let removed: Vec<_> = cmd.get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
        assert_eq!(removed, ["DRAKKAR_INSECURE", "DRAKKAR_PEERS"]);
    }

    #[test]
    fn signals_reach_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = ready(sh(dir.path(), "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done"));
        assert!(p.running());
        assert!(p.memory("VmRSS").is_some_and(|b| b > 0));
        p.signal("STOP").unwrap();
        p.signal("CONT").unwrap();
        assert!(matches!(p.signal("NOSUCHSIGNAL"), Err(ProcessError::Signal { .. })));
        assert!(p.terminate(Duration::from_secs(10)), "{}", p.log());
        assert!(!p.running());
    }

    #[test]
    fn terminate_gives_up_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = ready(sh(dir.path(), "trap '' TERM; echo ready; sleep 30"));
        assert!(!p.terminate(Duration::from_millis(300)));
        assert!(p.running());
        p.kill9();
        assert!(!p.running());
    }

    #[test]
    fn dropping_kills_a_stopped_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = sh(dir.path(), "sleep 30").spawn().unwrap();
        let pid = p.pid();
        p.signal("STOP").unwrap();
        drop(p);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} outlived its owner");
    }
}
