//! Self-tests of the checker: known linearizable and non-linearizable histories, and property tests
//! against a brute-force checker and against histories produced by a real register.

use super::*;
use proptest::prelude::*;

fn v(s: &str) -> Option<Value> {
    Some(s.as_bytes().to_vec())
}

fn verdict(h: &[Op]) -> Verdict {
    check(h, &CheckOptions::default()).expect("valid history")
}

fn counterexample(h: &[Op]) -> Counterexample {
    match verdict(h) {
        Verdict::NotLinearizable(c) => *c,
        other => panic!("expected a counterexample, got {other}"),
    }
}

#[test]
fn empty_and_sequential_histories_are_linearizable() {
    assert_eq!(verdict(&[]), Verdict::Linearizable);
    let h = vec![
        Op::read(1, "k", 0, 1, None),
        Op::write(1, "k", "a", 2, 3),
        Op::read(2, "k", 4, 5, v("a")),
        Op::cas(2, "k", v("a"), "b", 6, 7, true),
        Op::cas(1, "k", v("a"), "c", 8, 9, false),
        Op::read(1, "k", 10, 11, v("b")),
        Op::cas(3, "k", None, "d", 12, 13, false),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn a_stale_read_is_caught_and_shrunk() {
    let h = vec![
        Op::write(1, "k", "a", 0, 10),
        Op::read(3, "other", 0, 50, None),
        Op::write(1, "k", "b", 11, 20),
        Op::read(2, "k", 21, 30, v("a")),
        Op::read(2, "k", 31, 40, v("b")),
    ];
    let c = counterexample(&h);
    assert_eq!(c.key, b"k".to_vec());
    assert_eq!(c.original_len, 4);
    // The minimal core: w(a), w(b), then a read of a. (Neither write can go: the read saw a, and
    // without w(b) the read of a is fine.)
    assert_eq!(c.ops.len(), 3, "{c}");
    assert_eq!(c.stuck.as_ref().map(|o| &o.kind), Some(&OpKind::Read));
    assert!(c.to_string().contains("longest linearization"));
}

#[test]
fn concurrent_reads_may_see_either_value() {
    // The write overlaps both reads: one sees the old value, one the new.
    let h = vec![
        Op::write(1, "k", "a", 0, 100),
        Op::read(2, "k", 10, 20, None),
        Op::read(3, "k", 30, 40, v("a")),
        Op::read(2, "k", 50, 60, v("a")),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn new_then_old_is_not_linearizable() {
    // Both reads overlap the write, but the first saw the new value and the later one the old.
    let h = vec![
        Op::write(1, "k", "a", 0, 100),
        Op::read(2, "k", 10, 20, v("a")),
        Op::read(3, "k", 30, 40, None),
    ];
    let c = counterexample(&h);
    assert_eq!(c.ops.len(), 3);
}

#[test]
fn reading_a_value_nobody_wrote_is_caught() {
    let h = vec![Op::write(1, "k", "a", 0, 10), Op::read(2, "k", 20, 30, v("zzz"))];
    let c = counterexample(&h);
    assert_eq!(c.ops.len(), 1, "{c}");
}

#[test]
fn compare_and_swap_must_match_the_value() {
    // Succeeded although the value was a.
    let h = vec![Op::write(1, "k", "a", 0, 10), Op::cas(2, "k", v("x"), "b", 20, 30, true)];
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    // Failed although the value was a.
    let h = vec![Op::write(1, "k", "a", 0, 10), Op::cas(2, "k", v("a"), "b", 20, 30, false)];
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    // Failed because a concurrent write came first.
    let h = vec![
        Op::write(1, "k", "a", 0, 10),
        Op::write(3, "k", "c", 15, 35),
        Op::cas(2, "k", v("a"), "b", 20, 30, false),
        Op::read(2, "k", 40, 50, v("c")),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn unknown_operations_may_or_may_not_take_effect() {
    let unknown = |op: Op| Op { complete: None, ..op.with_outcome(Outcome::Unknown) };
    // Took effect (seen later).
    let h = vec![unknown(Op::write(1, "k", "a", 0, 0)), Op::read(2, "k", 100, 110, v("a"))];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // Did not take effect.
    let h = vec![unknown(Op::write(1, "k", "a", 0, 0)), Op::read(2, "k", 100, 110, None)];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // Seen before it was invoked: impossible.
    let h = vec![Op::read(2, "k", 0, 10, v("a")), unknown(Op::write(1, "k", "a", 20, 0))];
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    // An unseen unknown write explains a failed compare-and-swap.
    let h = vec![
        Op::write(1, "k", "a", 0, 10),
        unknown(Op::write(3, "k", "u", 15, 0)),
        Op::cas(2, "k", v("a"), "b", 20, 30, false),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // An unknown compare-and-swap took effect.
    let h = vec![
        Op::write(1, "k", "a", 0, 10),
        unknown(Op::cas(3, "k", v("a"), "b", 15, 0, false)),
        Op::read(2, "k", 20, 30, v("b")),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn failed_operations_never_take_effect() {
    let h = vec![Op::write(1, "k", "a", 0, 10).with_outcome(Outcome::Fail), Op::read(2, "k", 20, 30, v("a"))];
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    let h = vec![Op::write(1, "k", "a", 0, 10).with_outcome(Outcome::Fail), Op::read(2, "k", 20, 30, None)];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn keys_are_independent() {
    // Each key alone is fine; across keys the order would be odd, which linearizability allows.
    let h = vec![
        Op::write(1, "x", "1", 0, 10),
        Op::write(2, "y", "1", 0, 10),
        Op::read(3, "x", 5, 30, v("1")),
        Op::read(3, "y", 5, 30, None),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    let per_key = check_keys(&h, &CheckOptions::default()).unwrap();
    assert_eq!(per_key.len(), 2);
    assert!(per_key.iter().all(|k| k.ops == 2 && k.verdict == Verdict::Linearizable));
}

#[test]
fn invalid_histories_are_refused() {
    let bad = Op { outcome: Outcome::Ok(Reply::Cas(true)), ..Op::read(1, "k", 0, 1, None) };
    assert!(matches!(check(&[bad], &CheckOptions::default()), Err(HistoryError::ReplyMismatch(_))));
}

#[test]
fn bounds_answer_unknown_instead_of_hanging() {
    let h: Vec<Op> = (0..10).map(|i| Op::write(i, "k", format!("v{i}"), i, i + 1)).collect();
    let opts = CheckOptions { max_ops_per_key: 5, ..CheckOptions::default() };
    assert!(matches!(check(&h, &opts).unwrap(), Verdict::Unknown(_)));

    // Many concurrent writes and reads with a tiny budget: the search cannot finish in time. Reads
    // return values in an order that forces much backtracking.
    let mut h: Vec<Op> = (0..40).map(|i| Op::write(i, "k", format!("v{i}"), 0, 1000)).collect();
    h.extend((0..40).map(|i| Op::read(100 + i, "k", 0, 1000, v(&format!("v{}", 39 - i)))));
    h.push(Op::read(999, "k", 2000, 2001, v("nope")));
    let opts = CheckOptions {
        time_limit: Duration::from_millis(1),
        max_memo_bytes: 1 << 20,
        ..CheckOptions::default()
    };
    let started = Instant::now();
    let r = check(&h, &opts).unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(r, Verdict::Unknown(_) | Verdict::NotLinearizable(_)), "{r}");
}

#[test]
fn a_long_good_history_with_one_bad_read_shrinks_to_a_few_ops() {
    let mut h = Vec::new();
    let mut t = 0;
    for i in 0..300u64 {
        let val = format!("v{i}");
        h.push(Op::write(i % 4, "k", val.clone(), t, t + 5));
        h.push(Op::read((i + 1) % 4, "k", t + 2, t + 8, v(&val)));
        t += 10;
    }
    assert_eq!(verdict(&h), Verdict::Linearizable);
    h.push(Op::read(9, "k", t + 100, t + 110, v("v17")));
    let c = counterexample(&h);
    assert!(c.ops.len() <= 3, "{c}");
    assert!(c.ops.iter().any(|o| o.kind == OpKind::Write { value: b"v17".to_vec() }));
}

// ---- versions, transactions, double applies ----

fn read_at(p: u64, invoke: u64, complete: u64, value: Option<Value>, version: u64) -> Op {
    Op::read(p, "k", invoke, complete, None)
        .with_outcome(Outcome::Ok(Reply::ReadVersioned { value, version }))
}

fn write_at(p: u64, value: &str, invoke: u64, complete: u64, version: u64) -> Op {
    Op::write(p, "k", value, invoke, complete).with_outcome(Outcome::Ok(Reply::WrittenVersioned { version }))
}

/// A retried write applied twice: p1's write of "a" is applied, then its retry is applied again after
/// p2's write of "b". Values alone cannot show it (every read fits "a" being written once, late), but
/// the version counts three writes where only two were made.
#[test]
fn a_write_applied_twice_is_caught_by_its_version() {
    let h = vec![
        write_at(1, "a", 0, 100, 3),
        write_at(2, "b", 10, 20, 2),
        read_at(3, 30, 40, v("b"), 2),
        read_at(3, 110, 120, v("a"), 3),
    ];
    // Without versions the same history is linearizable: a double apply would go unnoticed.
    let plain: Vec<Op> = vec![
        Op::write(1, "k", "a", 0, 100),
        Op::write(2, "k", "b", 10, 20),
        Op::read(3, "k", 30, 40, v("b")),
        Op::read(3, "k", 110, 120, v("a")),
    ];
    assert_eq!(verdict(&plain), Verdict::Linearizable);
    let c = counterexample(&h);
    assert!(c.to_string().contains("v3"), "{c}");

    // Applied twice in a row, nothing in between: only the version shows it.
    let h = vec![write_at(1, "a", 0, 100, 2), read_at(2, 110, 120, v("a"), 2)];
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    // The read alone tells it too, when the write's reply is lost (unknown: at most once).
    let h =
        vec![Op::write(1, "k", "a", 0, 100).with_outcome(Outcome::Unknown), read_at(2, 110, 120, v("a"), 2)];
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    // Once is fine.
    let h =
        vec![Op::write(1, "k", "a", 0, 100).with_outcome(Outcome::Unknown), read_at(2, 110, 120, v("a"), 1)];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

/// Unknown writes nobody read still count: a version can only be explained by them.
#[test]
fn unknown_writes_explain_versions_only_once_each() {
    let unknown = |p, val: &str, t| Op::write(p, "k", val, t, t + 1).with_outcome(Outcome::Unknown);
    let h = vec![
        unknown(1, "x", 0),
        unknown(2, "y", 0),
        write_at(3, "a", 10, 20, 3),
        read_at(4, 30, 40, v("a"), 3),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    let h = vec![unknown(1, "x", 0), write_at(3, "a", 10, 20, 3), read_at(4, 30, 40, v("a"), 3)];
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
}

/// A compare-and-swap applied twice answers "compare failed" (the second application saw its own
/// value): the value it wrote is then read although no acknowledged operation wrote it.
#[test]
fn a_swap_applied_twice_is_caught() {
    let swap = |p, e: Option<Value>, n: &str, t, ok, after: Option<Value>, version| {
        Op::cas(p, "k", e, n, t, t + 10, ok).with_outcome(Outcome::Ok(Reply::SwapVersioned {
            succeeded: ok,
            value: after,
            version,
        }))
    };
    let h = vec![
        write_at(1, "a", 0, 10, 1),
        // Applied (a -> b, version 2), then its retry failed the compare on its own b.
        swap(2, v("a"), "b", 20, false, v("b"), 2),
        read_at(3, 40, 50, v("b"), 2),
    ];
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    let h = vec![
        write_at(1, "a", 0, 10, 1),
        swap(2, v("a"), "b", 20, true, v("b"), 2),
        swap(3, v("a"), "c", 40, false, v("b"), 2),
        read_at(3, 60, 70, v("b"), 2),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

/// Transactions are a compare-and-set register whose reply shows the key after them.
#[test]
fn transactions_are_compare_and_set_registers() {
    let txn = |p, e: Option<Value>, n: &str, t, ok, after: Option<Value>, version| {
        Op::txn(p, "k", e, n, t, t + 10, ok).with_outcome(Outcome::Ok(Reply::SwapVersioned {
            succeeded: ok,
            value: after,
            version,
        }))
    };
    let good = vec![
        txn(1, None, "a", 0, true, v("a"), 1),
        txn(2, None, "b", 20, false, v("a"), 1),
        txn(2, v("a"), "c", 40, true, v("c"), 2),
        read_at(3, 60, 70, v("c"), 2),
    ];
    assert_eq!(verdict(&good), Verdict::Linearizable);
    // The get after the put saw another value: the transaction was not atomic.
    let torn = vec![txn(1, None, "a", 0, true, v("z"), 1)];
    assert!(matches!(verdict(&torn), Verdict::NotLinearizable(_)));
    // A failed compare reporting a value the key did not have then.
    let wrong = vec![txn(1, None, "a", 0, true, v("a"), 1), txn(2, v("x"), "b", 20, false, None, 0)];
    assert!(matches!(verdict(&wrong), Verdict::NotLinearizable(_)));
    // A compare that held although the key had another value.
    let h = vec![Op::write(1, "k", "a", 0, 10), Op::txn(2, "k", v("x"), "b", 20, 30, true)];
    assert!(matches!(verdict(&h), Verdict::NotLinearizable(_)));
    assert!(Op::txn(2, "k", v("x"), "b", 20, 30, true).acknowledged_write());
}

// ---- property tests ----

/// A generated operation before results: kind, process, invoke, linearization point, completion.
#[derive(Clone, Debug)]
struct Planned {
    kind: u8,
    arg: u8,
    invoke: u64,
    lin: u64,
    complete: u64,
    fate: u8,
}

fn planned() -> impl Strategy<Value = Planned> {
    (0u8..4, 0u8..4, 0u64..200, 0u64..40, 0u64..40, 0u8..10).prop_map(|(kind, arg, invoke, d1, d2, fate)| {
        Planned { kind, arg, invoke, lin: invoke + d1, complete: invoke + d1 + d2, fate }
    })
}

/// Runs planned operations against a real register, in the order of their linearization points:
/// the history a correct system produces. fate 0: failed (no effect); 1: unknown and took effect;
/// 2: unknown without effect; else ok. Kind 3 is a transaction. With `versioned`, replies report the
/// key's version as Drakkar's do.
fn real_register(plan: &[Planned], versioned: bool) -> Vec<Op> {
    let mut order: Vec<usize> = (0..plan.len()).collect();
    order.sort_by_key(|&i| (plan[i].lin, i));
    let mut state: Option<Value> = None;
    let mut version = 0u64;
    let mut ops = vec![None; plan.len()];
    for i in order {
        let p = &plan[i];
        let effect = !matches!(p.fate, 0 | 2);
        let (kind, reply) = match p.kind {
            0 if versioned => (OpKind::Read, Reply::ReadVersioned { value: state.clone(), version }),
            0 => (OpKind::Read, Reply::Read(state.clone())),
            1 => {
                let value = format!("w{i}").into_bytes();
                if effect {
                    state = Some(value.clone());
                    version += 1;
                }
                let reply = if versioned { Reply::WrittenVersioned { version } } else { Reply::Written };
                (OpKind::Write { value }, reply)
            }
            k => {
                // Compare with the current value half of the time, with another value otherwise.
                let expected =
                    if p.arg.is_multiple_of(2) { state.clone() } else { v(&format!("w{}", p.arg)) };
                let ok = expected == state;
                let new = format!("c{i}").into_bytes();
                if ok && effect {
                    state = Some(new.clone());
                    version += 1;
                }
                let reply = if versioned {
                    Reply::SwapVersioned { succeeded: ok, value: state.clone(), version }
                } else {
                    Reply::Cas(ok)
                };
                let kind = if k == 2 { OpKind::Cas { expected, new } } else { OpKind::Txn { expected, new } };
                (kind, reply)
            }
        };
        let outcome = match p.fate {
            0 => Outcome::Fail,
            1 | 2 => Outcome::Unknown,
            _ => Outcome::Ok(reply),
        };
        let complete = if matches!(outcome, Outcome::Unknown) { None } else { Some(p.complete) };
        ops[i] =
            Some(Op { process: i as u64, key: b"k".to_vec(), kind, invoke: p.invoke, complete, outcome });
    }
    ops.into_iter().flatten().collect()
}

/// Brute force: is there a subset of the unknown operations and an order of the chosen operations
/// that respects real time and the register's semantics?
fn brute_force(ops: &[Op]) -> bool {
    let ops: Vec<&Op> = ops.iter().filter(|o| o.outcome != Outcome::Fail).collect();
    let unknown: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].outcome == Outcome::Unknown).collect();
    for mask in 0..(1u32 << unknown.len()) {
        let chosen: Vec<usize> = (0..ops.len())
            .filter(|i| match unknown.iter().position(|u| u == i) {
                Some(bit) => mask & (1 << bit) != 0,
                None => true,
            })
            .collect();
        if permutations_fit(&ops, &chosen, &mut Vec::new(), (None, 0)) {
            return true;
        }
    }
    false
}

/// The register's state in the brute force: value and version.
type BruteState = (Option<Value>, u64);

fn permutations_fit(ops: &[&Op], left: &[usize], placed: &mut Vec<usize>, state: BruteState) -> bool {
    if left.is_empty() {
        return true;
    }
    for (pos, &i) in left.iter().enumerate() {
        // i may go next only if no other remaining definite op completed before i was invoked.
        let blocked = left.iter().any(|&j| j != i && ops[j].complete.is_some_and(|c| c < ops[i].invoke));
        if blocked {
            continue;
        }
        if let Some(next) = brute_step(ops[i], &state) {
            let rest: Vec<usize> =
                left.iter().enumerate().filter(|&(p, _)| p != pos).map(|(_, &j)| j).collect();
            placed.push(i);
            if permutations_fit(ops, &rest, placed, next) {
                return true;
            }
            placed.pop();
        }
    }
    false
}

/// The register's semantics, written independently of the checker's: the state after `op`, if its
/// reply is possible in `state`.
fn brute_step(op: &Op, (value, version): &BruteState) -> Option<BruteState> {
    let put = |v: &Value| (Some(v.clone()), version + 1);
    let reply = match &op.outcome {
        Outcome::Ok(r) => Some(r),
        _ => None,
    };
    match &op.kind {
        OpKind::Read => match reply {
            Some(Reply::Read(r)) => (r == value).then(|| (value.clone(), *version)),
            Some(Reply::ReadVersioned { value: r, version: rv }) => {
                (r == value && rv == version).then(|| (value.clone(), *version))
            }
            _ => Some((value.clone(), *version)),
        },
        OpKind::Write { value: w } => match reply {
            Some(Reply::WrittenVersioned { version: rv }) => (*rv == version + 1).then(|| put(w)),
            _ => Some(put(w)),
        },
        OpKind::Cas { expected, new } | OpKind::Txn { expected, new } => {
            let holds = expected == value;
            let after = if holds { put(new) } else { (value.clone(), *version) };
            match reply {
                None => Some(after),
                Some(Reply::Cas(b)) => (*b == holds).then_some(after),
                Some(Reply::SwapVersioned { succeeded, value: rv, version: rver }) => {
                    (*succeeded == holds && (rv, rver) == (&after.0, &after.1)).then_some(after)
                }
                Some(_) => None,
            }
        }
    }
}

/// Random small histories with arbitrary results, mostly wrong; with `versioned`, replies report
/// small arbitrary versions too.
fn arbitrary_op(versioned: bool) -> impl Strategy<Value = Op> {
    (0u8..4, 0u8..3, 0u8..3, any::<bool>(), 0u64..30, 0u64..15, 0u8..8, 0u64..4).prop_map(
        move |(kind, a, b, flag, invoke, len, fate, version)| {
            let val = |x: u8| if x == 0 { None } else { v(&format!("{x}")) };
            let new = format!("{}", b + 1).into_bytes();
            let swap = if versioned {
                // Mostly consistent with the compare's result, so that some histories pass.
                let value = if flag { Some(new.clone()) } else { val(a) };
                Reply::SwapVersioned { succeeded: flag, value, version }
            } else {
                Reply::Cas(flag)
            };
            let (kind, reply) = match kind {
                0 if versioned => (OpKind::Read, Reply::ReadVersioned { value: val(a), version }),
                0 => (OpKind::Read, Reply::Read(val(a))),
                1 if versioned => (OpKind::Write { value: new }, Reply::WrittenVersioned { version }),
                1 => (OpKind::Write { value: new }, Reply::Written),
                2 => (OpKind::Cas { expected: val(a), new }, swap),
                _ => (OpKind::Txn { expected: val(a), new }, swap),
            };
            let outcome = match fate {
                0 => Outcome::Unknown,
                1 => Outcome::Fail,
                _ => Outcome::Ok(reply),
            };
            let complete = if outcome == Outcome::Unknown { None } else { Some(invoke + len) };
            Op { process: 0, key: b"k".to_vec(), kind, invoke, complete, outcome }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// Whatever a real register does, in any interleaving, with failed and unknown operations: linearizable.
    #[test]
    fn histories_of_a_real_register_are_linearizable(plan in prop::collection::vec(planned(), 0..40)) {
        let h = real_register(&plan, false);
        prop_assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    /// The same history with one ok read changed to a value nobody wrote: not linearizable.
    #[test]
    fn a_corrupted_read_is_caught(plan in prop::collection::vec(planned(), 1..20), which in any::<prop::sample::Index>()) {
        let mut h = real_register(&plan, false);
        let reads: Vec<usize> = (0..h.len()).filter(|&i| matches!(h[i].outcome, Outcome::Ok(Reply::Read(_)))).collect();
        prop_assume!(!reads.is_empty());
        let i = reads[which.index(reads.len())];
        h[i].outcome = Outcome::Ok(Reply::Read(v("never-written")));
        let c = counterexample(&h);
        prop_assert_eq!(c.ops.len(), 1, "{}", c);
    }

    /// Small arbitrary histories: the checker agrees with brute force, and a counterexample is itself
    /// not linearizable.
    #[test]
    fn agrees_with_brute_force(h in prop::collection::vec(arbitrary_op(false), 0..7)) {
        agree_with_brute_force(&h)?;
    }

    /// The same with versions, compare-and-swaps and transactions reporting the key after them.
    #[test]
    fn agrees_with_brute_force_on_versions(h in prop::collection::vec(arbitrary_op(true), 0..7)) {
        agree_with_brute_force(&h)?;
    }

    /// A real register whose replies report versions, with transactions: linearizable.
    #[test]
    fn histories_of_a_real_versioned_register_are_linearizable(plan in prop::collection::vec(planned(), 0..40)) {
        let h = real_register(&plan, true);
        prop_assert_eq!(verdict(&h), Verdict::Linearizable);
    }
}

fn agree_with_brute_force(h: &[Op]) -> Result<(), TestCaseError> {
    {
        let expected = brute_force(h);
        match verdict(h) {
            Verdict::Linearizable => prop_assert!(expected, "checker said linearizable"),
            Verdict::NotLinearizable(c) => {
                prop_assert!(!expected, "checker said not linearizable:\n{}", c);
                prop_assert!(!brute_force(&c.ops), "counterexample is linearizable:\n{}", c);
            }
            Verdict::Unknown(why) => prop_assert!(false, "unknown: {}", why),
        }
    }
    Ok(())
}
