//! # drakkar-check
//!
//! Jepsen-style verification of a Drakkar cluster.
//!
//! - [`history`]: operations on keys as clients saw them (invoke, ok / fail / unknown, times).
//! - [`checker`]: a per-key linearizability checker for registers with read, write,
//!   compare-and-swap and transactions, counting the key's version when replies report it (so a write
//!   applied twice is caught); Wing and Gong's search with memoization, bounded in time and memory,
//!   with minimal counterexamples.
//!
//! - [`process`]: the one launcher of `drakkar` node processes (log file, network namespace, the node's
//!   environment, signals, kill on drop), used by the local cluster here and by the end-to-end tests.
//!
//! These three modules need only `std` and `thiserror`: use the crate with `default-features = false` to
//! check histories recorded elsewhere (a simulator, another test) or to launch nodes.
//!
//! With the default `runner` feature:
//!
//! - [`workload`]: concurrent clients doing reads, writes, compare-and-swaps and transactions on a few
//!   keys per KV group the ways users do (one attempt per operation in sessions, the default client with
//!   retries and a shared session, plain writes without a session, transactions, requests sent to a
//!   node holding a non-voter and a witness replica), recording ok / fail / unknown.
//! - [`nemesis`], [`cluster`], [`proxy`]: a local cluster of `drakkar serve` processes and the faults
//!   injected into it (kill -9, SIGSTOP, partitions through per-link TCP proxies, membership changes).
//! - [`netns`]: with `--netns`, each node in its own network namespace, and network faults as packets
//!   dropped silently (iptables): silent and one-way partitions, a node isolated from everyone.
//!   With `slow-disk` or `power-loss`, each node's data directory on a [`drakkar_lazyfs`] mount: fsyncs
//!   delayed, unsynced writes lost when the node is killed.
//! - [`availability`]: how long each node takes to serve linearizable reads again after each fault is
//!   healed (probed apart from the history), the windows in which operations on a node failed, and
//!   the `--max-recovery` bound.
//! - [`report`]: counts, lost acknowledged writes, JSON and text reports, the latency plot (SVG).
//! - [`run()`] / [`CheckArgs`]: the `drakkar check` command. See `docs/reliability.md`.
//!
//! ```
//! use drakkar_check::checker::{check, CheckOptions, Verdict};
//! use drakkar_check::history::Op;
//!
//! let history = vec![
//!     Op::write(1, "k", "a", 0, 10),           // p1 writes a during [0, 10]
//!     Op::read(2, "k", 5, 15, Some(b"a".to_vec())), // p2's overlapping read sees it
//!     Op::cas(1, "k", Some(b"a".to_vec()), "b", 20, 30, true),
//! ];
//! assert_eq!(check(&history, &CheckOptions::default()).unwrap(), Verdict::Linearizable);
//! ```

pub mod checker;
pub mod history;
pub mod process;

#[cfg(feature = "runner")]
pub mod availability;
#[cfg(feature = "runner")]
pub mod cluster;
#[cfg(feature = "runner")]
pub mod nemesis;
#[cfg(feature = "runner")]
pub mod netns;
#[cfg(feature = "runner")]
pub mod proxy;
#[cfg(feature = "runner")]
pub mod report;
#[cfg(feature = "runner")]
pub mod run;
#[cfg(feature = "runner")]
pub mod workload;

#[cfg(feature = "runner")]
pub use run::{CheckArgs, run};

/// The kinds `list` names, each expanded by `kinds` (a kind that stands for several, such as `all`, to
/// them; `none` to nothing), in order, without duplicates.
#[cfg(feature = "runner")]
pub(crate) fn expand<T: Copy + PartialEq>(list: &[T], kinds: impl Fn(&T) -> &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for k in list.iter().flat_map(kinds) {
        if !out.contains(k) {
            out.push(*k);
        }
    }
    out
}
