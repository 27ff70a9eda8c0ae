//! A linearizability checker for a key-value store whose keys are registers (read, write,
//! compare-and-swap, and transactions modelled as compare-and-set).
//!
//! The register's state is its value and, when the key's replies report versions, its version: every
//! write that takes effect adds one, and a reply's version must match. So a write applied twice (a
//! retried write the cluster failed to deduplicate) makes some later version one too high, and the key
//! is not linearizable even when the values alone look fine. With versions, unknown writes are never
//! dropped from the search (each one may explain one version, at most once).
//!
//! Linearizability is *local*: a history is linearizable exactly when the sub-history of every key is,
//! so the checker splits the history per key (as Knossos and porcupine do) and searches each one
//! independently with Wing and Gong's algorithm, improved by Lowe's memoization: a depth-first search
//! over the order in which pending operations take effect, that never revisits a configuration (the set
//! of operations already linearized, and the register's value) it has seen before.
//!
//! Operations with an [`Outcome::Unknown`] outcome may take effect at any time after their invocation or
//! never (they never force the search to backtrack); [`Outcome::Fail`] operations are left out.
//!
//! The search is exponential in the worst case, so it is bounded by [`CheckOptions`]: past the time,
//! size or memory bound the answer is [`Verdict::Unknown`], never a hang. When a key is not
//! linearizable, its history is shrunk to a minimal non-linearizable sub-history (removing operations
//! while the rest stays non-linearizable, never removing a write whose value a remaining read saw), and
//! the [`Counterexample`] shows it with the longest linearization the search found.
//!
//! ```
//! use drakkar_check::checker::{check, CheckOptions, Verdict};
//! use drakkar_check::history::Op;
//!
//! // p1 writes "a"; after it returned, p2 still reads the key as absent: a stale read.
//! let history = vec![
//!     Op::write(1, "k", "a", 0, 10),
//!     Op::read(2, "k", 20, 30, None),
//! ];
//! let verdict = check(&history, &CheckOptions::default()).unwrap();
//! assert!(matches!(verdict, Verdict::NotLinearizable(_)));
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use crate::history::{HistoryError, Key, Op, OpKind, Outcome, Printable, Reply, Value};

/// Bounds of a check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Wall-clock time for the whole check (all keys, minimization included).
    pub time_limit: Duration,
    /// Keys with more operations than this (after dropping failed ones) are not searched: `Unknown`.
    pub max_ops_per_key: usize,
    /// Memory for the configurations remembered by one key's search, in bytes (approximate).
    pub max_memo_bytes: usize,
    /// Shrink a non-linearizable key's history to a minimal counterexample.
    pub minimize: bool,
}

impl Default for CheckOptions {
    /// 60 s, 20 000 operations per key, 512 MiB of memo, minimization on.
    fn default() -> Self {
        CheckOptions {
            time_limit: Duration::from_secs(60),
            max_ops_per_key: 20_000,
            max_memo_bytes: 512 << 20,
            minimize: true,
        }
    }
}

/// The answer of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// This key's history is not linearizable.
    NotLinearizable(Box<Counterexample>),
    /// The search hit a bound before deciding (no key was found non-linearizable).
    Unknown(String),
}

impl Verdict {
    /// A short name: `linearizable`, `not-linearizable` or `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable(_) => "not-linearizable",
            Verdict::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable(c) => write!(f, "not linearizable\n{c}"),
            Verdict::Unknown(why) => write!(f, "unknown: {why}"),
        }
    }
}

/// A key whose history is not linearizable, shrunk to a minimal sub-history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// The key.
    pub key: Key,
    /// A non-linearizable sub-history of the key, by invocation time. With minimization on, removing any
    /// one operation (other than a write a remaining read saw) makes it linearizable.
    pub ops: Vec<Op>,
    /// The longest linearization of `ops` the search found, in linearization order, with the value of
    /// the key after each operation.
    pub longest_linearization: Vec<(Op, Option<Value>)>,
    /// An operation that returned before it could be placed after `longest_linearization`.
    pub stuck: Option<Op>,
    /// How many operations of the key were checked before shrinking.
    pub original_len: usize,
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {}: {} of its {} operations are not linearizable:",
            Printable(&self.key),
            self.ops.len(),
            self.original_len
        )?;
        // A counterexample with versions keeps every write of the key: show the end of it, where the
        // search got stuck.
        let until = self.stuck.as_ref().and_then(|s| s.complete).unwrap_or(u64::MAX);
        let shown: Vec<&Op> = self.ops.iter().filter(|o| o.invoke <= until).collect();
        let skip = shown.len().saturating_sub(SHOWN);
        if skip > 0 {
            writeln!(f, "  ... {skip} earlier operations")?;
        }
        for op in &shown[skip..] {
            writeln!(f, "  {op}")?;
        }
        if shown.len() < self.ops.len() {
            writeln!(f, "  ... {} later operations", self.ops.len() - shown.len())?;
        }
        writeln!(f, "longest linearization found:")?;
        if self.longest_linearization.is_empty() {
            writeln!(f, "  (none)")?;
        }
        let skip = self.longest_linearization.len().saturating_sub(SHOWN);
        if skip > 0 {
            writeln!(f, "  ... {skip} earlier operations")?;
        }
        for (op, v) in &self.longest_linearization[skip..] {
            let v = v.as_ref().map_or_else(|| "absent".to_string(), |v| Printable(v).to_string());
            writeln!(f, "  {op}   => {v}")?;
        }
        if let Some(op) = &self.stuck {
            writeln!(f, "then no order fits before this operation returned:\n  {op}")?;
        }
        Ok(())
    }
}

/// How many operations of a counterexample, and of its longest linearization, are printed (the last
/// ones before the search got stuck).
const SHOWN: usize = 30;

/// The verdict of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVerdict {
    /// The key.
    pub key: Key,
    /// Operations of the key that were checked (failed operations and unknown reads excluded).
    pub ops: usize,
    /// Its verdict.
    pub verdict: Verdict,
}

/// Checks a whole history: the first non-linearizable key, else `Unknown` if any key hit a bound, else
/// `Linearizable`.
pub fn check(history: &[Op], opts: &CheckOptions) -> Result<Verdict, HistoryError> {
    let per_key = check_keys(history, opts)?;
    let mut unknown = None;
    for k in per_key {
        match k.verdict {
            Verdict::NotLinearizable(_) => return Ok(k.verdict),
            Verdict::Unknown(why) => {
                unknown.get_or_insert(format!("key {}: {why}", Printable(&k.key)));
            }
            Verdict::Linearizable => {}
        }
    }
    Ok(unknown.map_or(Verdict::Linearizable, Verdict::Unknown))
}

/// Checks every key of a history, in key order. Once the time limit passes, the remaining keys are
/// `Unknown`.
pub fn check_keys(history: &[Op], opts: &CheckOptions) -> Result<Vec<KeyVerdict>, HistoryError> {
    let mut by_key: BTreeMap<&[u8], Vec<&Op>> = BTreeMap::new();
    for op in history {
        op.validate()?;
        by_key.entry(&op.key).or_default().push(op);
    }
    let deadline = Instant::now() + opts.time_limit;
    Ok(by_key
        .into_iter()
        .map(|(key, ops)| {
            let model = KeyHistory::new(ops.into_iter().cloned().collect());
            let n = model.ops.len();
            KeyVerdict { key: key.to_vec(), ops: n, verdict: check_key_history(model, opts, deadline) }
        })
        .collect())
}

fn check_key_history(model: KeyHistory, opts: &CheckOptions, deadline: Instant) -> Verdict {
    if model.ops.len() > opts.max_ops_per_key {
        return Verdict::Unknown(format!(
            "{} operations, more than the bound of {}",
            model.ops.len(),
            opts.max_ops_per_key
        ));
    }
    let bounds = Bounds { deadline, max_memo_bytes: opts.max_memo_bytes };
    match search(&model, &bounds) {
        Search::Linearizable => Verdict::Linearizable,
        Search::Bound(why) => Verdict::Unknown(why),
        Search::NotLinearizable { .. } => {
            let original_len = model.ops.len();
            // Versions make writes unremovable, so a counterexample that does not need them is shrunk
            // without them: only a history whose values alone are linearizable (a write applied twice,
            // say) keeps its versions, and then only observations are removed.
            let model = if model.versioned
                && matches!(search(&model.without_versions(), &bounds), Search::NotLinearizable { .. })
            {
                model.without_versions()
            } else {
                model
            };
            let minimal = if opts.minimize { minimize(model, &bounds) } else { model };
            let (longest, stuck) = match search(&minimal, &bounds) {
                Search::NotLinearizable { longest, stuck } => (longest, stuck),
                // Minimization only keeps non-linearizable sub-histories; a bound hit during this
                // last pass leaves the explanation empty.
                _ => (Vec::new(), None),
            };
            let mut state = State::default();
            let longest_linearization = longest
                .iter()
                .map(|&i| {
                    let op = &minimal.ops[i];
                    if let Some(next) = minimal.step(state, i) {
                        state = next;
                    }
                    let value = (state.value != 0).then(|| minimal.values[state.value as usize - 1].clone());
                    (op.clone(), value)
                })
                .collect();
            let mut ops = minimal.ops.clone();
            ops.sort_by_key(|o| (o.invoke, o.process));
            Verdict::NotLinearizable(Box::new(Counterexample {
                key: minimal.ops.first().map(|o| o.key.clone()).unwrap_or_default(),
                ops,
                longest_linearization,
                stuck: stuck.map(|i| minimal.ops[i].clone()),
                original_len,
            }))
        }
    }
}

/// A value as the search sees it: 0 is "absent", `i + 1` is `values[i]`.
type Vid = u32;

/// The register's state in the search: its value and version (writes that took effect; always 0 when
/// the key's history reports no version, so that histories without versions search as before).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct State {
    value: Vid,
    version: u64,
}

#[derive(Clone, Copy, Debug)]
enum In {
    Read,
    Write(Vid),
    /// A compare-and-swap or a transaction: expected, new.
    Cas(Vid, Vid),
}

#[derive(Clone, Copy, Debug)]
enum Out {
    /// The value read, and its version if reported.
    Read(Vid, Option<u64>),
    /// The version created, if reported.
    Written(Option<u64>),
    /// Whether the compare held, and the key's state after the operation if reported.
    Cas(bool, Option<State>),
    /// An unknown outcome: any result is acceptable.
    Any,
}

/// One key's operations, ready for the search.
#[derive(Clone)]
struct KeyHistory {
    /// The operations kept: no failed ones, no unknown reads, no unknown writes that cannot matter.
    ops: Vec<Op>,
    input: Vec<In>,
    output: Vec<Out>,
    /// Interned values.
    values: Vec<Value>,
    /// Some reply reported a version: the search counts versions (every write that takes effect adds
    /// one), and no write may be assumed away.
    versioned: bool,
}

impl KeyHistory {
    fn new(ops: Vec<Op>) -> KeyHistory {
        // Failed operations never took effect; an unknown read has no effect and no result.
        let mut ops: Vec<Op> = ops
            .into_iter()
            .filter(|o| {
                !matches!((&o.outcome, &o.kind), (Outcome::Fail, _) | (Outcome::Unknown, OpKind::Read))
            })
            .collect();
        let versioned = ops.iter().any(|o| matches!(&o.outcome, Outcome::Ok(r) if r.version().is_some()));
        // An unknown write whose value nobody observed changes nothing a read can see, except that it
        // may explain a failed compare-and-swap that completed after it was invoked; otherwise it can be
        // assumed not to have happened (which is always allowed), and dropping it shrinks the search.
        // With versions it changes every later version: it stays.
        let referenced: HashSet<&Value> = ops
            .iter()
            .filter_map(|o| match (&o.kind, &o.outcome) {
                (_, Outcome::Ok(r)) if r.read_value().is_some() => r.read_value().and_then(Option::as_ref),
                // An unknown compare-and-swap may depend on its expected value having been written.
                (OpKind::Cas { expected: Some(e), .. } | OpKind::Txn { expected: Some(e), .. }, outcome)
                    if *outcome == Outcome::Unknown
                        || matches!(outcome, Outcome::Ok(r) if r.swapped() == Some(true)) =>
                {
                    Some(e)
                }
                _ => None,
            })
            .collect();
        let failed_cas_completions: Vec<u64> = ops
            .iter()
            .filter(|o| matches!(&o.outcome, Outcome::Ok(r) if r.swapped() == Some(false)))
            .filter_map(|o| o.complete)
            .collect();
        let keep: Vec<bool> = ops
            .iter()
            .map(|o| {
                if o.outcome != Outcome::Unknown || versioned {
                    return true;
                }
                let observed = o.written_value().is_some_and(|v| referenced.contains(v));
                observed || failed_cas_completions.iter().any(|&c| c >= o.invoke)
            })
            .collect();
        let mut it = keep.into_iter();
        ops.retain(|_| it.next().unwrap_or(true));

        let mut ids: HashMap<Value, Vid> = HashMap::new();
        let mut values = Vec::new();
        let mut intern = |v: Option<&Value>| -> Vid {
            match v {
                None => 0,
                Some(v) => *ids.entry(v.clone()).or_insert_with(|| {
                    values.push(v.clone());
                    values.len() as Vid
                }),
            }
        };
        let mut input = Vec::with_capacity(ops.len());
        let mut output = Vec::with_capacity(ops.len());
        for o in &ops {
            input.push(match &o.kind {
                OpKind::Read => In::Read,
                OpKind::Write { value } => In::Write(intern(Some(value))),
                OpKind::Cas { expected, new } | OpKind::Txn { expected, new } => {
                    In::Cas(intern(expected.as_ref()), intern(Some(new)))
                }
            });
            output.push(match &o.outcome {
                Outcome::Ok(Reply::Read(v)) => Out::Read(intern(v.as_ref()), None),
                Outcome::Ok(Reply::ReadVersioned { value, version }) => {
                    Out::Read(intern(value.as_ref()), Some(*version))
                }
                Outcome::Ok(Reply::Written) => Out::Written(None),
                Outcome::Ok(Reply::WrittenVersioned { version }) => Out::Written(Some(*version)),
                Outcome::Ok(Reply::Cas(b)) => Out::Cas(*b, None),
                Outcome::Ok(Reply::SwapVersioned { succeeded, value, version }) => {
                    Out::Cas(*succeeded, Some(State { value: intern(value.as_ref()), version: *version }))
                }
                Outcome::Fail | Outcome::Unknown => Out::Any,
            });
        }
        KeyHistory { ops, input, output, values, versioned }
    }

    /// The same history with every reported version ignored (and so without version counting).
    fn without_versions(&self) -> KeyHistory {
        let output = self
            .output
            .iter()
            .map(|o| match *o {
                Out::Read(v, _) => Out::Read(v, None),
                Out::Written(_) => Out::Written(None),
                Out::Cas(b, _) => Out::Cas(b, None),
                Out::Any => Out::Any,
            })
            .collect();
        KeyHistory { output, versioned: false, ..self.clone() }
    }

    /// The state after operation `i` takes effect on `s`, or `None` if its result is impossible there.
    fn step(&self, s: State, i: usize) -> Option<State> {
        // What a write of `v` makes of `s`.
        let put = |v: Vid| State { value: v, version: if self.versioned { s.version + 1 } else { 0 } };
        let reported = |after: State, r: Option<State>| r.is_none_or(|r| r == after);
        match (self.input[i], self.output[i]) {
            (In::Read, Out::Read(v, ver)) => {
                (v == s.value && ver.is_none_or(|x| x == s.version)).then_some(s)
            }
            (In::Read, _) => Some(s),
            (In::Write(v), Out::Written(ver)) => {
                let after = put(v);
                ver.is_none_or(|x| x == after.version).then_some(after)
            }
            (In::Write(v), _) => Some(put(v)),
            (In::Cas(e, n), Out::Cas(true, r)) => Some(put(n)).filter(|&a| e == s.value && reported(a, r)),
            (In::Cas(e, _), Out::Cas(false, r)) => (e != s.value && reported(s, r)).then_some(s),
            (In::Cas(e, n), _) => Some(if e == s.value { put(n) } else { s }),
        }
    }

    /// Drops the operations in `remove` (sorted indices).
    fn without(&self, remove: &[usize]) -> KeyHistory {
        let mut r = remove.iter().peekable();
        let mut out = KeyHistory {
            ops: Vec::new(),
            input: Vec::new(),
            output: Vec::new(),
            values: self.values.clone(),
            versioned: self.versioned,
        };
        for i in 0..self.ops.len() {
            if r.peek() == Some(&&i) {
                r.next();
                continue;
            }
            out.ops.push(self.ops[i].clone());
            out.input.push(self.input[i]);
            out.output.push(self.output[i]);
        }
        out
    }

    /// The value operation `i` observed or depends on: a read's result, the expected value of a
    /// succeeded (or unknown) compare-and-swap, the value a failed compare reported.
    fn observed(&self, i: usize) -> Option<Vid> {
        match (self.input[i], self.output[i]) {
            (_, Out::Read(v, _)) if v != 0 => Some(v),
            (In::Cas(e, _), Out::Cas(true, _) | Out::Any) if e != 0 => Some(e),
            (_, Out::Cas(false, Some(r))) if r.value != 0 => Some(r.value),
            _ => None,
        }
    }

    /// The value operation `i` may have written (a failed compare-and-swap writes nothing).
    fn written(&self, i: usize) -> Option<Vid> {
        match (self.input[i], self.output[i]) {
            (In::Read, _) | (In::Cas(..), Out::Cas(false, _)) => None,
            (In::Write(v) | In::Cas(_, v), _) => Some(v),
        }
    }

    /// Whether dropping the operations in `range` keeps a non-linearizable result meaningful: if the
    /// whole history is linearizable, so is the rest. Reads and failed compares only observe, so they
    /// can always go. A write can go only if no remaining operation observed its value and no remaining
    /// failed compare completed after the write was invoked (in a linearization, the ops that see the
    /// write's value are exactly those, so without it they still fit), and versions are not counted
    /// (without the write every later version would be one less).
    fn removable(&self, range: std::ops::Range<usize>) -> bool {
        let writes: Vec<usize> = range.clone().filter(|&i| self.written(i).is_some()).collect();
        if writes.is_empty() {
            return true;
        }
        if self.versioned {
            return false;
        }
        let values: HashSet<Vid> = writes.iter().filter_map(|&i| self.written(i)).collect();
        let first_invoke = writes.iter().map(|&i| self.ops[i].invoke).min().unwrap_or(0);
        (0..self.ops.len()).filter(|i| !range.contains(i)).all(|i| {
            let observes = self.observed(i).is_some_and(|v| values.contains(&v));
            let failed_compare_after = matches!(self.output[i], Out::Cas(false, _))
                && self.ops[i].complete.is_some_and(|c| c >= first_invoke);
            !observes && !failed_compare_after
        })
    }
}

struct Bounds {
    deadline: Instant,
    max_memo_bytes: usize,
}

enum Search {
    Linearizable,
    /// Operation indices of the longest partial linearization, and the operation whose return the
    /// search could not get past there.
    NotLinearizable {
        longest: Vec<usize>,
        stuck: Option<usize>,
    },
    Bound(String),
}

const NIL: usize = usize::MAX;

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    call: bool,
}

/// Wing and Gong's search with memoization over one key's history.
fn search(h: &KeyHistory, bounds: &Bounds) -> Search {
    let n = h.ops.len();
    // Call entries at invocation, return entries at completion (unknown operations have none: they can
    // take effect at any point after their call); at equal times calls come first, so operations that
    // touch in time count as concurrent.
    let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in h.ops.iter().enumerate() {
        order.push((o.invoke, 0, i));
        if !matches!(h.output[i], Out::Any) {
            order.push((o.complete.unwrap_or(u64::MAX), 1, i));
        }
    }
    order.sort_unstable();
    let entries: Vec<Entry> = order.iter().map(|&(_, kind, op)| Entry { op, call: kind == 0 }).collect();
    let m = entries.len();
    let head = m;
    // A doubly linked list over the entries with a head sentinel; removed entries keep their links, so
    // they can be put back in reverse order of removal.
    let mut next: Vec<usize> = (1..=m).map(|i| if i == m { NIL } else { i }).collect();
    next.push(if m == 0 { NIL } else { 0 });
    let mut prev: Vec<usize> = (0..m).map(|i| if i == 0 { head } else { i - 1 }).collect();
    prev.push(NIL);
    let mut ret_of = vec![NIL; n];
    for (idx, e) in entries.iter().enumerate() {
        if !e.call {
            ret_of[e.op] = idx;
        }
    }

    let words = n.div_ceil(64).max(1);
    let entry_bytes = words * 8 + 56;
    let mut linearized = vec![0u64; words];
    let mut memo: HashSet<(Box<[u64]>, State)> = HashSet::new();
    let mut state = State::default();
    // (call entry, state before it)
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut stuck = None;
    let mut steps: u64 = 0;
    let mut cur = next[head];

    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != NIL {
            prev[nx] = e;
        }
    };

    loop {
        steps += 1;
        if steps.is_multiple_of(4096) && Instant::now() > bounds.deadline {
            return Search::Bound(format!("time limit reached after {steps} search steps"));
        }
        if cur == NIL {
            // Only calls of unknown operations are left: they may never take effect.
            return Search::Linearizable;
        }
        let e = entries[cur];
        if e.call {
            if let Some(after) = h.step(state, e.op) {
                linearized[e.op / 64] |= 1 << (e.op % 64);
                if memo.insert((linearized.clone().into_boxed_slice(), after)) {
                    if memo.len().saturating_mul(entry_bytes) > bounds.max_memo_bytes {
                        return Search::Bound(format!(
                            "memo bound reached ({} configurations of {n} operations)",
                            memo.len()
                        ));
                    }
                    stack.push((cur, state));
                    state = after;
                    unlink(&mut next, &mut prev, cur);
                    if ret_of[e.op] != NIL {
                        unlink(&mut next, &mut prev, ret_of[e.op]);
                    }
                    cur = next[head];
                    continue;
                }
                linearized[e.op / 64] &= !(1 << (e.op % 64));
            }
            cur = next[cur];
        } else {
            // This operation returned and was not linearized yet: undo the last choice.
            if stack.len() >= longest.len() {
                longest = stack.iter().map(|&(c, _)| entries[c].op).collect();
                stuck = Some(e.op);
            }
            let Some((call, before)) = stack.pop() else {
                return Search::NotLinearizable { longest, stuck };
            };
            let op = entries[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            if ret_of[op] != NIL {
                relink(&mut next, &mut prev, ret_of[op]);
            }
            relink(&mut next, &mut prev, call);
            cur = next[call];
        }
    }
}

/// Shrinks a non-linearizable history: removes chunks of operations, then single ones, as long as the
/// rest stays non-linearizable and the removal is sound ([`KeyHistory::removable`]: the shrunk history
/// being non-linearizable still proves the original is). Stops at the deadline with what it has.
fn minimize(mut h: KeyHistory, bounds: &Bounds) -> KeyHistory {
    let mut chunk = (h.ops.len() / 2).max(1);
    loop {
        let mut start = 0;
        let mut removed_any = false;
        while start < h.ops.len() {
            if Instant::now() > bounds.deadline {
                return h;
            }
            let end = (start + chunk).min(h.ops.len());
            let remove: Vec<usize> = (start..end).collect();
            if h.removable(start..end) {
                let candidate = h.without(&remove);
                if matches!(search(&candidate, bounds), Search::NotLinearizable { .. }) {
                    h = candidate;
                    removed_any = true;
                    continue;
                }
            }
            start = end;
        }
        // Removing an operation may free a write that it observed: single-operation passes repeat
        // until nothing more can go.
        if chunk == 1 && !removed_any {
            return h;
        }
        chunk = (chunk / 2).max(1);
    }
}

#[cfg(test)]
mod tests;
