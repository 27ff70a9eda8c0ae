//! worked: the example the seed leaves a marker for. Three replicas of a tiny bank account apply the same
//! proposals in the same order, and print their log and state as they go. Proposals race from three
//! clients to three different replicas, and the order decides whether a withdrawal is refused: yet every
//! replica decides the same, because each applies the same log.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Result, ensure};
use bytes::Bytes;
use drakkar::statemachine::{SmEntry, SmError, SmResult, StateMachine, Stop};
use drakkar::transport::InProcessNetwork;
use drakkar::{GroupConfig, GroupId, ReplicaId, StartMode, StateMachineBox};

use crate::common::{self, TIMEOUT, read_field, write_field};

/// The group the example runs.
pub const GROUP: GroupId = GroupId(1);

// ANCHOR: state_machine
/// An account: `deposit N` adds N, `withdraw N` takes N if the balance allows it (else it is refused).
/// Its state is the balance and the log of what it applied, which it prints as it applies.
pub struct Account {
    replica: ReplicaId,
    balance: u64,
    /// Every entry applied: (log index, command, outcome).
    journal: Vec<(u64, String, String)>,
    /// Where the lines it prints also go (the example's report).
    printed: Arc<Mutex<Vec<String>>>,
}

impl Account {
    /// An empty account of replica `replica`.
    pub fn new(replica: ReplicaId, printed: Arc<Mutex<Vec<String>>>) -> Self {
        Account { replica, balance: 0, journal: Vec::new(), printed }
    }

    fn apply(&mut self, cmd: &str) -> (u64, String) {
        let amount = |s: &str| s.parse::<u64>().ok();
        match cmd.split_once(' ') {
            Some(("deposit", n)) if amount(n).is_some() => {
                self.balance += amount(n).unwrap_or(0);
                (self.balance, "ok".into())
            }
            Some(("withdraw", n)) => match amount(n) {
                Some(n) if n <= self.balance => {
                    self.balance -= n;
                    (self.balance, "ok".into())
                }
                Some(_) => (self.balance, "refused: insufficient funds".into()),
                None => (self.balance, "refused: not an amount".into()),
            },
            _ => (self.balance, "refused: unknown command".into()),
        }
    }
}

impl StateMachine for Account {
    fn update(&mut self, entries: &mut [SmEntry]) -> Result<(), SmError> {
        for e in entries.iter_mut() {
            let cmd = String::from_utf8_lossy(&e.cmd).into_owned();
            let (balance, outcome) = self.apply(&cmd);
            let line = format!(
                "[replica {}] log index {:>3}: {cmd:<12} -> {outcome:<28} balance {balance}",
                self.replica, e.index.0
            );
            println!("{line}");
            if let Ok(mut p) = self.printed.lock() {
                p.push(line);
            }
            self.journal.push((e.index.0, cmd, outcome.clone()));
            e.result = SmResult { value: balance, data: Bytes::from(outcome) };
        }
        Ok(())
    }

    fn lookup(&self, _query: &[u8]) -> Result<Bytes, SmError> {
        let mut s = format!("balance {}\n", self.balance);
        for (index, cmd, outcome) in &self.journal {
            s.push_str(&format!("{index} {cmd} {outcome}\n"));
        }
        Ok(Bytes::from(s))
    }

    fn save_snapshot(&self, w: &mut dyn Write, _stop: &Stop) -> Result<(), SmError> {
        write_field(w, &self.balance.to_le_bytes())?;
        for (index, cmd, outcome) in &self.journal {
            write_field(w, &index.to_le_bytes())?;
            write_field(w, cmd.as_bytes())?;
            write_field(w, outcome.as_bytes())?;
        }
        Ok(())
    }

    fn recover_from_snapshot(&mut self, r: &mut dyn Read, _stop: &Stop) -> Result<(), SmError> {
        let bad = || SmError::Other("a damaged account snapshot".into());
        let number = |b: Vec<u8>| <[u8; 8]>::try_from(b).map(u64::from_le_bytes).map_err(|_| bad());
        self.balance = number(read_field(r)?.ok_or_else(bad)?)?;
        self.journal.clear();
        while let Some(index) = read_field(r)? {
            let mut text =
                || read_field(r)?.map(|b| String::from_utf8_lossy(&b).into_owned()).ok_or_else(bad);
            let (cmd, outcome) = (text()?, text()?);
            self.journal.push((number(index)?, cmd, outcome));
        }
        Ok(())
    }
}
// ANCHOR_END: state_machine

/// What the one-process run proved.
#[derive(Debug)]
pub struct Report {
    /// Each replica's state at the end: balance and journal (all equal).
    pub states: Vec<String>,
    /// Proposals acknowledged (all 12 in every journal).
    pub proposals: usize,
    /// Lines the replicas printed, in the order printed (each replica printed the same entries).
    pub printed: Vec<String>,
}

/// Three replicas; three clients each send four proposals to a different replica at the same time.
pub async fn run(dir: &Path) -> Result<Report> {
    let net = InProcessNetwork::new();
    let printed = Arc::new(Mutex::new(Vec::new()));
    let mut hosts = Vec::new();
    for id in 1..=3 {
        let host = common::start_local_host(&net, dir, id)?;
        let sm = StateMachineBox::regular(Account::new(ReplicaId(id), printed.clone()));
        let founding = StartMode::Founding(common::members(common::local_address));
        host.start_replica(GROUP, ReplicaId(id), founding, sm, GroupConfig::default())?;
        hosts.push(host);
    }
    common::wait_for_leader(&hosts[0], GROUP).await?;
    let clients = [
        ["deposit 100", "withdraw 30", "withdraw 50", "deposit 5"],
        ["withdraw 60", "deposit 20", "withdraw 40", "withdraw 10"],
        ["deposit 10", "withdraw 90", "deposit 40", "withdraw 5"],
    ];
    let mut tasks = Vec::new();
    for (c, cmds) in clients.iter().enumerate() {
        let host = hosts[c].clone();
        let cmds: Vec<&'static str> = cmds.to_vec();
        tasks.push(tokio::spawn(async move {
            for cmd in cmds {
                host.propose(GROUP, Bytes::from_static(cmd.as_bytes()), TIMEOUT).await?;
            }
            Ok::<_, drakkar::NodeError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    common::wait_all_applied(&hosts, GROUP).await?;
    let mut states = Vec::new();
    for h in &hosts {
        states.push(common::text(&h.stale_read(GROUP, b"")?));
    }
    for h in &hosts {
        h.close();
    }
    println!("\nevery replica's state:\n{}", states[0]);
    let printed = printed.lock().map(|p| p.clone()).unwrap_or_default();
    ensure!(states.iter().all(|s| *s == states[0]), "the replicas diverged: {states:#?}");
    Ok(Report { states, proposals: 12, printed })
}
