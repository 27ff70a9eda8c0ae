//! # drakkar-check
//!
//! Jepsen-style verification of a Drakkar cluster.
//!
//! - [`history`]: operations on keys as clients saw them (invoke, ok / fail / unknown, times).
//! - [`checker`]: a per-key linearizability checker for registers with read, write and
//!   compare-and-swap (Wing and Gong's search with memoization, bounded in time and memory, with
//!   minimal counterexamples).
//!
//! These two modules need only `std` and `thiserror`: use the crate with `default-features = false` to
//! check histories recorded elsewhere (a simulator, another test).
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
