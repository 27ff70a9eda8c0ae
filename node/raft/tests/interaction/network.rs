//! The network: messages in flight, delivery (possibly filtered, dropped, duplicated or reordered),
//! partitions, and hand-made messages.

use std::fmt::Write as _;

use bytes::Bytes;
use drakkar_raft::{
    ConfChange, ConfChangeKind, Entry, EntryKind, LogIndex, Membership, Message, MessageKind, ReplicaId,
    Snapshot, SnapshotMeta, Term,
};

use super::datadriven::TestCase;
use super::{Env, Rule, fail};

const KINDS: [MessageKind; 15] = MessageKind::ALL;

fn kind(tc: &TestCase, name: &str) -> MessageKind {
    KINDS.into_iter().find(|k| format!("{k:?}") == name).unwrap_or_else(|| fail(tc, "unknown message type"))
}

fn bad_entry(tc: &TestCase) -> ! {
    fail(tc, "entries are term/index[/meta|/change:id]")
}

/// An entry of `inject-msg`: `term/index` (normal data), `term/index/meta`, or `term/index/CHANGE:ID` with
/// CHANGE one of add-voter, add-non-voter, add-witness, promote, remove.
fn entry(tc: &TestCase, spec: &str) -> Entry {
    let mut parts = spec.split('/');
    let mut num = || parts.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| bad_entry(tc));
    let (term, index) = (Term(num()), LogIndex(num()));
    let mut e = Entry { term, index, data: Bytes::from(format!("x{}", index.0)), ..Default::default() };
    match spec.splitn(3, '/').nth(2) {
        None => {}
        Some("meta") => (e.kind, e.data) = (EntryKind::Metadata, Bytes::new()),
        Some(cc) => {
            let (kind, id) = cc.split_once(':').unwrap_or_else(|| bad_entry(tc));
            let kind = match kind {
                "add-voter" => ConfChangeKind::AddVoter,
                "add-non-voter" => ConfChangeKind::AddNonVoter,
                "add-witness" => ConfChangeKind::AddWitness,
                "promote" => ConfChangeKind::Promote,
                "remove" => ConfChangeKind::Remove,
                _ => bad_entry(tc),
            };
            let replica = ReplicaId(id.parse().unwrap_or_else(|_| bad_entry(tc)));
            e.kind = EntryKind::ConfChange;
            e.data = ConfChange { kind, replica, context: Bytes::new() }.encode();
        }
    }
    e
}

/// The message filter of `deliver-msgs` / `dup-msgs`: recipients, senders, kind.
fn selector(tc: &TestCase) -> impl Fn(&Message) -> bool + use<> {
    let to = tc.ids();
    let from = tc.id_list("from").unwrap_or_default();
    let k = tc.vals("type").map(|v| kind(tc, &v[0]));
    move |m: &Message| {
        (to.is_empty() || to.contains(&m.to.0))
            && (from.is_empty() || from.contains(&m.from.0))
            && k.is_none_or(|k| k == m.kind)
    }
}

impl Env {
    fn blocked(&self, m: &Message) -> bool {
        self.rules.iter().any(|r| r.from.is_none_or(|f| f == m.from.0) && r.to.is_none_or(|t| t == m.to.0))
    }

    /// Takes the selected messages out of flight and delivers (or drops) them, grouped by recipient in id
    /// order, at most `limit` per recipient (the rest stay in flight). Returns how many were taken.
    pub(super) fn deliver(
        &mut self,
        pick: impl Fn(&Message) -> bool,
        drop: bool,
        reverse: bool,
        limit: usize,
        out: &mut String,
    ) -> usize {
        let (mut taken, rest): (Vec<Message>, Vec<Message>) =
            std::mem::take(&mut self.inflight).into_iter().partition(&pick);
        self.inflight = rest;
        if reverse {
            taken.reverse();
        }
        taken.sort_by_key(|m| m.to);
        let (mut n, mut kept) = (0, Vec::new());
        let mut current = None;
        let mut per_to = 0;
        for m in taken {
            per_to = if current == Some(m.to) { per_to + 1 } else { 1 };
            if per_to > limit {
                kept.push(m);
                continue;
            }
            n += 1;
            if current != Some(m.to) {
                current = Some(m.to);
                writeln!(out, "> {} receiving messages", m.to.0).unwrap();
            }
            if drop {
                writeln!(out, "  dropped: {m}").unwrap();
            } else if self.blocked(&m) {
                writeln!(out, "  dropped (partition): {m}").unwrap();
            } else if let Some(raw) = self.nodes.get_mut(&m.to.0).and_then(|n| n.raw.as_mut()) {
                writeln!(out, "  {m}").unwrap();
                if let Err(e) = raw.step(m) {
                    writeln!(out, "  error: {e}").unwrap();
                }
            } else {
                writeln!(out, "  dropped (down): {m}").unwrap();
            }
        }
        self.inflight.splice(0..0, kept);
        n
    }

    pub(super) fn deliver_cmd(&mut self, tc: &TestCase, out: &mut String) {
        let limit = tc.get("count").unwrap_or(usize::MAX);
        if self.deliver(selector(tc), tc.flag("drop"), tc.flag("reverse"), limit, out) == 0 {
            writeln!(out, "no messages").unwrap();
        }
    }

    pub(super) fn dup_msgs(&mut self, tc: &TestCase, out: &mut String) {
        let pick = selector(tc);
        let dups: Vec<Message> = self.inflight.iter().filter(|m| pick(m)).cloned().collect();
        for m in &dups {
            writeln!(out, "duplicated {m}").unwrap();
        }
        self.inflight.extend(dups);
    }

    pub(super) fn list_msgs(&mut self, tc: &TestCase, out: &mut String) {
        let pick = selector(tc);
        for m in self.inflight.iter().filter(|m| pick(m)) {
            writeln!(out, "{m}").unwrap();
        }
    }

    /// Steps a hand-made message into its recipient (or into replica `at=`, to misdeliver it) and reports
    /// whether the core dropped it.
    pub(super) fn inject_msg(&mut self, tc: &TestCase, out: &mut String) {
        let num = |k: &str| tc.get::<u64>(k).unwrap_or(0);
        let mut m = Message::new(
            kind(tc, &tc.vals("type").unwrap_or_else(|| fail(tc, "type"))[0]),
            ReplicaId(num("from")),
            ReplicaId(num("to")),
            Term(num("term")),
        );
        m.log_term = Term(num("log-term"));
        m.index = LogIndex(num("index"));
        m.commit = LogIndex(num("commit"));
        m.reject = tc.flag("reject");
        m.reject_hint = LogIndex(num("hint"));
        m.context = Bytes::from(tc.get::<String>("ctx").unwrap_or_default());
        for e in tc.vals("entries").unwrap_or_default() {
            m.entries.push(entry(tc, e));
        }
        if let Some(snap) = tc.vals("snapshot") {
            let (t, i) = snap[0].split_once('/').unwrap_or_else(|| fail(tc, "snapshot is term/index"));
            let num = |s: &str| s.parse().unwrap_or_else(|_| fail(tc, "snapshot is term/index"));
            let voters = tc.id_list("voters").unwrap_or_default().into_iter().map(ReplicaId);
            let meta = SnapshotMeta {
                term: Term(num(t)),
                index: LogIndex(num(i)),
                membership: Membership::with_voters(voters),
            };
            m.snapshot = Some(Snapshot { meta, data: Bytes::from_static(b"injected") });
        }
        writeln!(out, "inject {m}").unwrap();
        let id = tc.get("at").unwrap_or(m.to.0);
        let Some(raw) = self.running(id, out) else { return };
        let before = raw.status().dropped_messages;
        if let Err(e) = raw.step(m) {
            writeln!(out, "error: {e}").unwrap();
        }
        let after = raw.status().dropped_messages;
        writeln!(out, "{id}: dropped messages {before} -> {after}").unwrap();
    }

    pub(super) fn drop_rule(&mut self, tc: &TestCase, out: &mut String) {
        let from = tc.id_list("from").map(|v| v.into_iter().map(Some).collect()).unwrap_or(vec![None]);
        let to = tc.id_list("to").map(|v| v.into_iter().map(Some).collect()).unwrap_or(vec![None]);
        for &f in &from {
            for &t in &to {
                self.rules.push(Rule { from: f, to: t });
                writeln!(
                    out,
                    "drop {} -> {}",
                    f.map_or("*".into(), |f| f.to_string()),
                    t.map_or("*".into(), |t| t.to_string())
                )
                .unwrap();
            }
        }
    }

    /// Cuts the named nodes off from all others, both ways.
    pub(super) fn partition(&mut self, tc: &TestCase, out: &mut String) {
        let side = tc.ids();
        let others: Vec<u64> = self.nodes.keys().copied().filter(|id| !side.contains(id)).collect();
        for &a in &side {
            for &b in &others {
                self.rules.push(Rule { from: Some(a), to: Some(b) });
                self.rules.push(Rule { from: Some(b), to: Some(a) });
            }
        }
        writeln!(out, "partitioned {side:?} from {others:?}").unwrap();
    }

    pub(super) fn heal(&mut self, _tc: &TestCase, out: &mut String) {
        self.rules.clear();
        writeln!(out, "network healed").unwrap();
    }
}
