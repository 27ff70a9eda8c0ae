//! The interaction environment: a handful of `RawNode`s over `MemStorage`, a network the scenario
//! controls message by message, and one handler per command. Nothing happens unless a command says so:
//! ticks, Ready handling, persistence and delivery are all explicit, so each scenario reads as an exact
//! interleaving and its output is deterministic (nodes are visited in id order; election jitter comes from
//! seeded configs).
//!
//! Commands (ids are positional numbers, `id=N` or `ids=(..)`; unless stated, no ids means every node):
//! - `add-nodes N [voters=(..)] [non-voters=(..)] [witnesses=(..)] [joining=true] [options]`: founding
//!   members share bootstrap entries (and start with them applied); `joining=true` adds N replicas with
//!   empty storage. Options: `pre-vote`, `check-quorum`, `read-only=safe|lease`, `max-inflight`,
//!   `max-size-per-msg`, `max-committed-size-per-ready`, `quiesce-ticks`, `max-in-mem-log-size`,
//!   `election-tick`, `heartbeat-tick`, `seed`.
//! - `campaign ID`, `propose ID DATA [count=N] [size=N]`, `propose-conf-change ID add-voter=X|add-non-voter=X|
//!   add-witness=X|promote=X|remove=X`, `transfer-leader from=ID to=ID`, `read-index ID ctx=C`,
//!   `report-unreachable ID peer=P`, `report-snapshot ID peer=P ok=BOOL`, `wake ID`.
//! - `tick [IDS] [n=N]`, `tick-election [IDS]`, `tick-heartbeat [IDS]`: tick each node (id order) N times,
//!   or election-tick / heartbeat-tick times.
//! - `process-ready [IDS] [async=true]`: print and handle each node's Ready. Synchronously: persist, send the
//!   persisted messages, apply, advance. With `async=true` the batch is only sent and applied; its writes and
//!   persisted messages wait for `persist ID [count=N]`.
//! - `stabilize [IDS]`: persist pending batches, then handle Readies (synchronously) and deliver messages
//!   among IDS until nothing is left to do; each step is printed.
//! - `deliver-msgs [IDS] [from=(..)] [type=Kind] [drop=true] [reverse=true] [count=N]`: deliver (or drop)
//!   in-flight messages to IDS, grouped by recipient, at most N per recipient. `dup-msgs [same filters]`
//!   duplicates them in flight; `msgs` lists them.
//! - `inject-msg to=ID from=ID type=Kind [term= log-term= index= commit= reject hint= ctx=
//!   entries=(t/i[/meta|/change:id] ..) snapshot=t/i voters=(..)] [at=ID]`: steps a hand-made message
//!   straight into a node (`to`, or `at` to misdeliver it) and prints the node's dropped-message count.
//! - `drop [from=(..)] [to=(..)]`, `partition IDS` (cut IDS off from the rest), `heal`: network filters
//!   applied at delivery.
//! - `crash ID` (keep only storage), `restart ID` (applied = snapshot index), `snapshot ID` (at the applied
//!   index), `compact ID INDEX`.
//! - `status [IDS]`, `raft-log ID`, `membership [IDS]`.
//! - `log-level none|info`: `none` runs the following commands without printing their output (a file's
//!   setup steps), `info` prints again. Errors still fail the scenario.

pub mod datadriven;

mod cluster;
mod inspect;
mod network;
mod ops;
mod ready;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::str::FromStr;

use drakkar_raft::{Config, HardState, MemStorage, Message, RawNode, Snapshot};

use datadriven::TestCase;

/// A batch handed out by `process-ready async=true` and not yet persisted.
pub(crate) struct Pending {
    number: u64,
    hard_state: Option<HardState>,
    entries: Vec<drakkar_raft::Entry>,
    snapshot: Option<Snapshot>,
    persisted_messages: Vec<Message>,
}

/// One replica: running (`raw`), or crashed with only its durable storage left (`disk`).
pub(crate) struct Node {
    raw: Option<RawNode<MemStorage>>,
    disk: Option<MemStorage>,
    cfg: Config,
    pending: VecDeque<Pending>,
}

/// A network filter: messages matching it are dropped at delivery (`None` matches any replica).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    from: Option<u64>,
    to: Option<u64>,
}

/// The whole simulated group.
#[derive(Default)]
pub struct Env {
    nodes: BTreeMap<u64, Node>,
    /// Messages sent and not yet delivered, in send order.
    inflight: Vec<Message>,
    rules: Vec<Rule>,
    /// `log-level none`: outputs are not printed.
    quiet: bool,
}

impl Env {
    /// Runs one command and returns its output.
    pub fn handle(&mut self, tc: &TestCase) -> String {
        let mut out = String::new();
        let o = &mut out;
        match tc.cmd.as_str() {
            "log-level" => {
                self.quiet = match tc.args.first().map(|a| a.key.as_str()) {
                    Some("none") => true,
                    Some("info") => false,
                    _ => fail(tc, "log-level takes none or info"),
                };
                return "ok\n".into();
            }
            "add-nodes" => self.add_nodes(tc, o),
            "crash" => self.crash(tc, o),
            "restart" => self.restart(tc, o),
            "snapshot" => self.snapshot(tc, o),
            "compact" => self.compact(tc, o),
            "campaign" => self.campaign(tc, o),
            "propose" => self.propose(tc, o),
            "propose-conf-change" => self.propose_conf_change(tc, o),
            "transfer-leader" => self.transfer_leader(tc, o),
            "read-index" => self.read_index(tc, o),
            "report-unreachable" => self.report_unreachable(tc, o),
            "report-snapshot" => self.report_snapshot(tc, o),
            "wake" => self.wake(tc, o),
            "tick" | "tick-election" | "tick-heartbeat" => self.tick(tc, o),
            "process-ready" => self.process_ready_cmd(tc, o),
            "persist" => self.persist_cmd(tc, o),
            "stabilize" => self.stabilize(tc, o),
            "deliver-msgs" => self.deliver_cmd(tc, o),
            "dup-msgs" => self.dup_msgs(tc, o),
            "msgs" => self.list_msgs(tc, o),
            "inject-msg" => self.inject_msg(tc, o),
            "drop" => self.drop_rule(tc, o),
            "partition" => self.partition(tc, o),
            "heal" => self.heal(tc, o),
            "status" => self.status(tc, o),
            "raft-log" => self.raft_log(tc, o),
            "membership" => self.membership(tc, o),
            _ => fail(tc, "unknown command"),
        }
        if self.quiet { String::new() } else { out }
    }

    /// The ids a command names, or every node when it names none.
    fn ids_or_all(&self, tc: &TestCase) -> Vec<u64> {
        let ids = tc.ids();
        if ids.is_empty() { self.nodes.keys().copied().collect() } else { ids }
    }

    /// The running replica `id`, or a line saying why there is none.
    fn running(&mut self, id: u64, out: &mut String) -> Option<&mut RawNode<MemStorage>> {
        match self.nodes.get_mut(&id) {
            Some(Node { raw: Some(raw), .. }) => Some(raw),
            Some(_) => {
                writeln!(out, "{id} is down").unwrap();
                None
            }
            None => {
                writeln!(out, "{id} does not exist").unwrap();
                None
            }
        }
    }
}

/// Stops the scenario: the file itself is wrong (unknown command, bad argument).
pub(crate) fn fail(tc: &TestCase, msg: &str) -> ! {
    panic!("{}: {} {:?}: {msg}", tc.pos, tc.cmd, tc.args)
}

impl TestCase {
    /// The values of `key`, if given.
    pub fn vals(&self, key: &str) -> Option<&[String]> {
        self.args.iter().find(|a| a.key == key && !a.vals.is_empty()).map(|a| a.vals.as_slice())
    }

    /// The single value of `key`, parsed.
    pub fn get<T: FromStr>(&self, key: &str) -> Option<T> {
        let v = self.vals(key)?;
        match v {
            [one] => Some(one.parse().unwrap_or_else(|_| fail(self, &format!("bad value for {key}")))),
            _ => fail(self, &format!("{key} takes one value")),
        }
    }

    /// The values of `key` as ids.
    pub fn id_list(&self, key: &str) -> Option<Vec<u64>> {
        let v = self.vals(key)?;
        Some(
            v.iter().map(|s| s.parse().unwrap_or_else(|_| fail(self, &format!("bad id in {key}")))).collect(),
        )
    }

    /// A boolean option: `key=true`, `key=false`, or the bare word `key`.
    pub fn flag(&self, key: &str) -> bool {
        self.args.iter().any(|a| a.key == key && a.vals.is_empty()) || self.get::<bool>(key).unwrap_or(false)
    }

    /// Bare words of the command line.
    pub fn positional(&self) -> Vec<&str> {
        self.args.iter().filter(|a| a.vals.is_empty()).map(|a| a.key.as_str()).collect()
    }

    /// Ids named as positional numbers, `id=` or `ids=`.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.positional().iter().filter_map(|w| w.parse().ok()).collect();
        ids.extend(self.id_list("id").unwrap_or_default());
        ids.extend(self.id_list("ids").unwrap_or_default());
        ids
    }

    /// The one id a command acts on.
    pub fn one_id(&self) -> u64 {
        match self.ids().as_slice() {
            [id] => *id,
            _ => fail(self, "expected exactly one id"),
        }
    }
}
