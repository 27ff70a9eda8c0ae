//! Handling Ready batches: printing, persisting (synchronously or later), applying, and `stabilize`.

use std::fmt::Write as _;

use drakkar_raft::{ConfChange, Entry, EntryKind, LogIndex, MemStorage, RawNode, Ready};

use super::datadriven::TestCase;
use super::inspect::opt;
use super::{Env, Pending};

fn print_ready(out: &mut String, id: u64, rd: &Ready, deferred: bool) {
    let note = if deferred { " (async: persist later)" } else { "" };
    writeln!(out, "> {id} handling Ready #{}{note}", rd.number()).unwrap();
    if let Some(ss) = rd.soft_state {
        writeln!(out, "  soft-state: {:?} leader={}", ss.role, opt(ss.leader)).unwrap();
    }
    if let Some(hs) = rd.hard_state {
        writeln!(out, "  hard-state: term={} vote={} commit={}", hs.term.0, opt(hs.vote), hs.commit.0)
            .unwrap();
    }
    if let Some(s) = &rd.snapshot {
        let m = &s.meta;
        writeln!(out, "  snapshot: {}/{} {} data={:?}", m.term.0, m.index.0, m.membership, s.data).unwrap();
    }
    let section = |out: &mut String, name: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            writeln!(out, "  {name}:").unwrap();
            for l in lines {
                writeln!(out, "    {l}").unwrap();
            }
        }
    };
    let strs = |v: &[Entry]| v.iter().map(ToString::to_string).collect();
    section(out, "entries", strs(&rd.entries));
    section(out, "committed", strs(&rd.committed_entries));
    section(out, "messages", rd.messages.iter().map(ToString::to_string).collect());
    section(out, "persisted-messages", rd.persisted_messages.iter().map(ToString::to_string).collect());
    let reads = rd
        .read_states
        .iter()
        .map(|r| format!("index:{} ctx:{}", r.index.0, String::from_utf8_lossy(&r.context)));
    section(out, "read-states", reads.collect());
}

/// Applies committed entries as a host would: conf changes go to the core (an invalid one is a no-op).
/// Returns the index to report applied.
fn apply(out: &mut String, raw: &mut RawNode<MemStorage>, rd: &Ready) -> Option<LogIndex> {
    for e in rd.committed_entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
        match ConfChange::decode(&e.data) {
            Some(cc) => match raw.apply_conf_change(&cc) {
                Ok(m) => writeln!(out, "  apply {e} -> {m}").unwrap(),
                Err(err) => writeln!(out, "  apply {e} -> no-op: {err}").unwrap(),
            },
            None => writeln!(out, "  apply {e} -> no-op: does not decode").unwrap(),
        }
    }
    rd.committed_entries.last().map(|e| e.index).or(rd.snapshot.as_ref().map(|s| s.meta.index))
}

/// Writes a batch to storage, in the order the Ready contract prescribes.
fn write(out: &mut String, raw: &mut RawNode<MemStorage>, p: &Pending) {
    let s = raw.storage_mut();
    if let Some(snap) = &p.snapshot
        && let Err(e) = s.apply_snapshot(snap.clone())
    {
        writeln!(out, "  error persisting snapshot: {e}").unwrap();
    }
    if let Err(e) = s.append(&p.entries) {
        writeln!(out, "  error persisting entries: {e}").unwrap();
    }
    if let Some(hs) = p.hard_state {
        s.set_hard_state(hs);
    }
}

impl Env {
    pub(super) fn process_ready_cmd(&mut self, tc: &TestCase, out: &mut String) {
        for id in self.ids_or_all(tc) {
            if !self.process_ready(id, tc.flag("async"), out) {
                writeln!(out, "> {id} has no Ready").unwrap();
            }
        }
    }

    /// Handles one Ready of `id` if it has one. Synchronously, earlier deferred batches are persisted first.
    pub(super) fn process_ready(&mut self, id: u64, deferred: bool, out: &mut String) -> bool {
        if !deferred {
            self.persist(id, usize::MAX, out);
        }
        let Some(node) = self.nodes.get_mut(&id) else { return false };
        let Some(raw) = node.raw.as_mut() else { return false };
        if !raw.has_ready() {
            return false;
        }
        let mut rd = raw.ready().expect("ready");
        print_ready(out, id, &rd, deferred);
        self.inflight.append(&mut rd.messages);
        let p = Pending {
            number: rd.number(),
            hard_state: rd.hard_state,
            entries: std::mem::take(&mut rd.entries),
            snapshot: rd.snapshot.clone(),
            persisted_messages: std::mem::take(&mut rd.persisted_messages),
        };
        if deferred {
            node.pending.push_back(p);
        } else {
            write(out, raw, &p);
            self.inflight.extend(p.persisted_messages);
        }
        let applied = apply(out, raw, &rd);
        if deferred {
            if let Some(i) = applied {
                raw.advance_apply_to(i);
            }
        } else {
            raw.advance(rd);
        }
        true
    }

    pub(super) fn persist_cmd(&mut self, tc: &TestCase, out: &mut String) {
        let count = tc.get("count").unwrap_or(usize::MAX);
        for id in self.ids_or_all(tc) {
            if self.persist(id, count, out) == 0 {
                writeln!(out, "> {id} has nothing to persist").unwrap();
            }
        }
    }

    /// Makes up to `count` deferred batches of `id` durable, oldest first, and sends what waited on them.
    fn persist(&mut self, id: u64, count: usize, out: &mut String) -> usize {
        let Some(node) = self.nodes.get_mut(&id) else { return 0 };
        let Some(raw) = node.raw.as_mut() else { return 0 };
        let mut done = 0;
        while done < count
            && let Some(p) = node.pending.pop_front()
        {
            writeln!(out, "> {id} persisted Ready #{}", p.number).unwrap();
            write(out, raw, &p);
            for m in &p.persisted_messages {
                writeln!(out, "  send {m}").unwrap();
            }
            self.inflight.extend(p.persisted_messages);
            raw.on_persisted(p.number);
            done += 1;
        }
        done
    }

    /// Handles Readies and delivers messages among the given nodes until nothing is left to do.
    pub(super) fn stabilize(&mut self, tc: &TestCase, out: &mut String) {
        let ids = self.ids_or_all(tc);
        for _ in 0..1000 {
            let mut busy = false;
            for &id in &ids {
                busy |= self.persist(id, usize::MAX, out) > 0;
                busy |= self.process_ready(id, false, out);
            }
            for &id in &ids {
                busy |= self.deliver(|m| m.to.0 == id, false, false, usize::MAX, out) > 0;
            }
            if !busy {
                return;
            }
        }
        writeln!(out, "error: not stable after 1000 rounds").unwrap();
    }
}
