//! # drakkar-examples
//!
//! Drakkar as a library: small programs that run a user's own state machines on NodeHosts, in the shape
//! of Dragonboat's example set. `docs/getting-started.md` (in Chinese `docs/zh/getting-started.md`)
//! quotes them; a test checks that every Rust block of the two guides is a region of these files.
//!
//! Each example is a folder of this crate (`helloworld/`, `ondisk/`, `concurrent/`, `multigroup/`,
//! `worked/`) holding its program and a README in English and Chinese; its state machine and its
//! scenario are a module here, so the tests run them. Every program runs all three replicas in one
//! process by default (what CI does), or one replica per process with `--replica-id 1|2|3`.
//!
//! - [`kv`]: a Redis-like store on the in-memory kind, restarted: rebuilt from snapshot plus log.
//! - [`ondisk`]: a store on redb (the on-disk kind), reopened after a restart; a new replica catches up
//!   by a streamed snapshot; a replica is removed.
//! - [`concurrent`]: the concurrent kind, reads served while a batch is applied.
//! - [`multigroup`]: sixteen groups in one process, keys spread over them.
//! - [`worked`]: three replicas applying the same proposals in the same order, printing as they go.

pub mod common;
pub mod concurrent;
pub mod kv;
pub mod multigroup;
pub mod ondisk;
pub mod worked;

/// The directory of the one-process mode under `data_dir`, emptied first (each run starts afresh).
pub fn fresh_dir(data_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = data_dir.join("one-process");
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
