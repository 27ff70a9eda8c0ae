//! The three-process mode: each example binary started three times with `--replica-id 1|2|3`, talking
//! over gRPC on 127.0.0.1, driven through its console as a person would type into three terminals.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// One example process and its console.
struct Replica {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Replica {
    fn start(bin: &str, id: u64, dir: &std::path::Path, port: u16, extra: &[&str]) -> Replica {
        let mut child = Command::new(bin)
            .args(["--replica-id", &id.to_string(), "--port", &port.to_string(), "--data-dir"])
            .arg(dir)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the example");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut r = Replica { child, stdin, lines };
        assert!(r.next_line().starts_with(&format!("replica {id} listening at 127.0.0.1:")));
        assert!(r.next_line().starts_with("type a command"));
        r
    }

    fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!("no answer within 30 s"),
            Err(RecvTimeoutError::Disconnected) => panic!("the example exited"),
        }
    }

    /// Types `line` into the console and returns the answer.
    fn ask(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.next_line()
    }

    /// Types `quit` and waits for a clean exit.
    fn quit(mut self) {
        writeln!(self.stdin, "quit").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return;
            }
            assert!(Instant::now() < deadline, "did not exit after quit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A base port with it and the next three free on 127.0.0.1 (replicas 1 to 4), below the usual range of
/// ephemeral ports (32768 and up), so no outgoing connection takes one before its replica binds it.
fn free_ports() -> u16 {
    use std::hash::BuildHasher;
    for attempt in 0..1000u64 {
        let r = std::collections::hash_map::RandomState::new().hash_one(attempt);
        let base = 20_000 + u16::try_from(r % 12_000).unwrap();
        let all: Vec<_> = (0..4).map(|i| std::net::TcpListener::bind(("127.0.0.1", base + i))).collect();
        if all.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no four consecutive free ports");
}

#[test]
fn helloworld_in_three_processes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports();
    let bin = env!("CARGO_BIN_EXE_helloworld");
    let mut r: Vec<Replica> = (1..=3).map(|id| Replica::start(bin, id, dir.path(), port, &[])).collect();
    // A write through replica 1, a linearizable read through replica 3, a stale one through replica 2
    // once it applied the write, and a session-less increment answered with the new value.
    assert!(r[0].ask("set greeting hello world").starts_with("ok (result "));
    assert_eq!(r[2].ask("get greeting"), "hello world");
    assert_eq!(r[1].ask("incr visits"), "ok (result 1)");
    assert_eq!(r[1].ask("get visits"), "1");
    assert!(r[0].ask("snapshot").starts_with("snapshot at index "));
    assert_eq!(r[0].ask("bogus command"), "ok (result 0, ERR unknown command)");
    for replica in r.drain(..) {
        replica.quit();
    }
}

#[test]
fn ondisk_in_three_processes_then_a_fourth_joins() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports();
    let bin = env!("CARGO_BIN_EXE_ondisk");
    let mut r: Vec<Replica> = (1..=3).map(|id| Replica::start(bin, id, dir.path(), port, &[])).collect();
    for i in 0..30 {
        assert!(r[i % 3].ask(&format!("set key-{i} value-{i}")).starts_with("ok"));
    }
    // Compact the log on every replica, so the new one needs the state, not the log.
    for replica in &mut r {
        assert!(replica.ask("snapshot").starts_with("snapshot at index "));
    }
    // The membership change runs on the leader: the other consoles say so.
    let mut added = false;
    for replica in &mut r {
        let answer = replica.ask("add 4");
        if answer.starts_with("done at log index ") {
            added = true;
            break;
        }
        assert!(answer.contains("not the leader"), "{answer}");
    }
    assert!(added, "no console added replica 4");
    let mut fourth = Replica::start(bin, 4, dir.path(), port, &["--join"]);
    // A linearizable read on the new replica waits until it caught up.
    assert_eq!(fourth.ask("get key-29"), "value-29");
    assert_eq!(fourth.ask("stale key-0"), "value-0");
    fourth.quit();
    for replica in r.drain(..) {
        replica.quit();
    }
}
