//! Integration tests of drakkar-logdb, in one binary.

mod common;
mod concurrent;
mod contract;
mod corruption;
mod crash;
mod failures;
mod purge;
mod real_fs;
mod robustness;
