//! The deterministic driver of a NodeHost: its caller runs the workers, on its own thread.

use std::path::PathBuf;

use bytes::Bytes;
use drakkar_raft::{GroupId, LogIndex};

use crate::statemachine::SmResult;
use crate::{NodeError, NodeHost, Pending, Result, Session};

/// The driver of a deterministic NodeHost ([`NodeHostConfig::deterministic`](crate::NodeHostConfig)):
/// no thread steps, applies or ticks it; the caller does, on its own thread, so one seed replays a whole
/// run (the simulator's way, as etcd's RawNode is driven by its caller). A separate handle, so the
/// NodeHost's API holds only what every user needs.
#[derive(Clone)]
pub struct Driver {
    host: NodeHost,
}

impl Driver {
    /// The driver of `host`; `InvalidArgument` when `host` runs its own threads.
    pub fn new(host: &NodeHost) -> Result<Driver> {
        if !host.is_driven() {
            return Err(NodeError::InvalidArgument("only a deterministic NodeHost has a driver".into()));
        }
        Ok(Driver { host: host.clone() })
    }

    /// One tick of every group, as the ticker thread of a threaded NodeHost does every `tick_interval`
    /// (run [`Driver::run_until_idle`] after it).
    pub fn tick(&self) {
        self.host.tick_all();
    }

    /// Runs the workers' rounds until nothing is left to do, on the calling thread. Each step worker round
    /// is exactly the threaded worker's (step every ready group, ONE log store batch and fsync, messages
    /// to the transport, committed entries to the apply side); apply tasks are then handled as the apply
    /// threads would, snapshots included. Returns the number of rounds and tasks run.
    ///
    /// Fails with `Storage` if the workers still have work after a bound of rounds (a livelock: a bug).
    pub fn run_until_idle(&self) -> Result<usize> {
        self.host.run_until_idle()
    }

    // The requests below return at once; their handles are polled with `Pending::try_result` between
    // runs of the workers. Unlike the NodeHost's (async) methods they do not wait out a missing leader:
    // `NoLeader` is the caller's to retry.

    /// Proposes `cmd` on `group` (see [`NodeHost::propose`]).
    pub fn propose(&self, group: GroupId, cmd: Bytes) -> Result<Pending<SmResult>> {
        self.host.submit_proposal(group, cmd)
    }

    /// Registers a new session on `group`, usable once the handle answers with value
    /// [`crate::session::codes::OK`] (see [`NodeHost::open_session`]).
    pub fn open_session(&self, group: GroupId) -> Result<(Session, Pending<SmResult>)> {
        self.host.submit_open_session(group)
    }

    /// Proposes `cmd` in session `s` (see [`NodeHost::propose_in_session`]).
    pub fn propose_in_session(&self, s: &Session, cmd: Bytes) -> Result<Pending<SmResult>> {
        self.host.submit_session_proposal(s, cmd)
    }

    /// A linearizable read of `query` on `group` (see [`NodeHost::read`]).
    pub fn read(&self, group: GroupId, query: Bytes) -> Result<Pending<Bytes>> {
        self.host.submit_read(group, query)
    }

    /// Takes a snapshot of `group` now: the handle yields its index and file (see
    /// [`NodeHost::request_snapshot`]).
    pub fn request_snapshot(&self, group: GroupId) -> Result<Pending<(LogIndex, PathBuf)>> {
        self.host.submit_snapshot(group)
    }
}
