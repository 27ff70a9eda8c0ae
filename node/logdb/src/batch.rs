//! [`WriteBatch`]: updates of many groups, stored atomically by one write and one fdatasync.

use bytes::Bytes;
use drakkar_raft::{Entry, GroupId, HardState, LogIndex, Membership, Snapshot};

/// One update of one group. The rules are those of [`drakkar_raft::MemStorage`]'s mutators of the same name.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Append(Vec<Entry>),
    HardState(HardState),
    Membership(Membership),
    ApplySnapshot(Snapshot),
    CreateSnapshot { index: LogIndex, membership: Membership, data: Bytes },
    Compact(LogIndex),
    Remove,
}

/// Updates of any number of groups, applied in the order they were added and stored all or nothing by
/// [`crate::LogDb::save`]: after a crash either every update of the batch is visible or none is.
///
/// A batch is validated as a whole before anything is written: if one update is invalid for its group's
/// state at that point of the batch, [`crate::LogDb::save`] rejects the batch and stores nothing.
/// Reuse a batch with [`WriteBatch::clear`] to keep its allocation.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub(crate) ops: Vec<(GroupId, Op)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Appends entries to a group's log, truncating any conflicting suffix first (entries at or below the
    /// log's base are ignored). The entries must have consecutive indexes and must not leave a gap after the
    /// last stored index.
    pub fn append(&mut self, group: GroupId, entries: impl Into<Vec<Entry>>) -> &mut Self {
        let entries = entries.into();
        if !entries.is_empty() {
            self.ops.push((group, Op::Append(entries)));
        }
        self
    }

    /// Replaces a group's hard state.
    pub fn set_hard_state(&mut self, group: GroupId, hs: HardState) -> &mut Self {
        self.ops.push((group, Op::HardState(hs)));
        self
    }

    /// Replaces the membership reported by [`drakkar_raft::Storage::initial_state`] (the host records the
    /// latest applied membership here; a new group records its initial one).
    pub fn set_membership(&mut self, group: GroupId, membership: Membership) -> &mut Self {
        self.ops.push((group, Op::Membership(membership)));
        self
    }

    /// Installs a snapshot received from the leader, as [`drakkar_raft::MemStorage::apply_snapshot`]: the
    /// log restarts after it (a matching suffix is kept), its membership becomes the group's, and the hard
    /// state's term and commit are raised to it. Must be newer than the stored snapshot.
    pub fn apply_snapshot(&mut self, group: GroupId, snapshot: Snapshot) -> &mut Self {
        self.ops.push((group, Op::ApplySnapshot(snapshot)));
        self
    }

    /// Records a snapshot of the state machine taken at `index`, as
    /// [`drakkar_raft::MemStorage::create_snapshot`]: the term is the log's at `index`, the membership
    /// becomes the group's. The log is not compacted (see [`WriteBatch::compact`]).
    pub fn create_snapshot(
        &mut self,
        group: GroupId,
        index: LogIndex,
        membership: Membership,
        data: Bytes,
    ) -> &mut Self {
        self.ops.push((group, Op::CreateSnapshot { index, membership, data }));
        self
    }

    /// Drops a group's entries up to and including `index`, which must be covered by its latest snapshot.
    pub fn compact(&mut self, group: GroupId, index: LogIndex) -> &mut Self {
        self.ops.push((group, Op::Compact(index)));
        self
    }

    /// Drops every piece of state of a group. Later updates in the batch start a new, empty group.
    pub fn remove_group(&mut self, group: GroupId) -> &mut Self {
        self.ops.push((group, Op::Remove));
        self
    }

    /// True if the batch holds no update.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of updates.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Removes every update, keeping the allocation.
    pub fn clear(&mut self) {
        self.ops.clear();
    }
}
