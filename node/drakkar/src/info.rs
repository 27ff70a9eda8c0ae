//! What a NodeHost and its replicas are, and the membership changes it proposes.

use drakkar_raft::{LogIndex, MemberRole, ReplicaId};

/// What a NodeHost is ([`crate::NodeHost::info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeHostInfo {
    /// The address its peers reach it at.
    pub address: String,
    /// The incarnation id of its data directory (created at first start; a wiped directory gets a new
    /// one).
    pub incarnation: u128,
    /// Why this NodeHost can no longer work, if it cannot: the log store failed a write or fsync (it then
    /// refuses every later write: nothing more may be acknowledged) or a worker hit another fatal error.
    /// Its groups have stopped. The way back is a new process: close it, reopen the data directory, and
    /// recovery keeps exactly what was durable. `drakkar serve` exits when this turns `Some`.
    ///
    /// It is what the first fatal error recorded (no lock taken). A failed log store write always reaches
    /// a step worker as a fatal error, since the store then refuses every later write.
    pub failure: Option<String>,
}

/// What this node's replica of a group is ([`crate::NodeHost::replica_info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaInfo {
    /// The replica's id in the group.
    pub replica: ReplicaId,
    /// A witness: it votes and stores log metadata, but holds no state machine data (reads, writes and
    /// sessions must go to another replica).
    pub witness: bool,
    /// Requests may run on it: it holds the data as far as it knows (a voter or non-voter of its applied
    /// membership; a founding replica before anything was applied). A node routes the others (witnesses,
    /// and joining replicas until they applied their own addition) to a replica with data.
    pub serves_data: bool,
    /// The index applied to its state machine.
    pub applied: LogIndex,
}

/// A change to a group's membership ([`crate::NodeHost::change_membership`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipChange {
    /// Adds a replica, reachable at `address` (`host:port`, see [`crate::address`]).
    Add {
        /// The new replica's id (never one the group used before).
        replica: ReplicaId,
        /// Where its node listens.
        address: String,
        /// Voter, non-voter or witness. A new replica is best added as a non-voter, then promoted once it
        /// caught up.
        role: MemberRole,
    },
    /// Promotes a non-voter to voter.
    Promote(ReplicaId),
    /// Removes a replica; its id can never be used again in this group.
    Remove(ReplicaId),
}
