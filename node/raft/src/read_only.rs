//! ReadIndex bookkeeping on the leader: pending read requests waiting for a heartbeat round to confirm
//! leadership.

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::Bytes;

use crate::types::{LogIndex, ReplicaId};

/// A read whose index is known: once the state machine has applied `index`, a read issued with `context`
/// may be served locally and is linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index at the time the read was confirmed.
    pub index: LogIndex,
    /// The request's context, as given to `read_index`.
    pub context: Bytes,
}

/// One read waiting for confirmation.
#[derive(Clone, Debug)]
pub(crate) struct PendingRead {
    pub(crate) index: LogIndex,
    /// Who asked: the leader itself (`None`) or a follower that forwarded it.
    pub(crate) from: Option<ReplicaId>,
    pub(crate) acks: BTreeSet<ReplicaId>,
}

/// Pending reads in arrival order.
///
/// Invariant: `queue` and `pending` hold the same contexts.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadOnly {
    pending: HashMap<Bytes, PendingRead>,
    queue: VecDeque<Bytes>,
}

impl ReadOnly {
    /// Queues a read at `index`. A context already pending is ignored (contexts must be unique).
    pub(crate) fn add(&mut self, ctx: Bytes, index: LogIndex, from: Option<ReplicaId>, me: ReplicaId) {
        if self.pending.contains_key(&ctx) {
            return;
        }
        let acks = BTreeSet::from([me]);
        self.pending.insert(ctx.clone(), PendingRead { index, from, acks });
        self.queue.push_back(ctx);
    }

    /// Records that `id` acknowledged the heartbeat round that carried `ctx`; returns the acks so far.
    pub(crate) fn ack(&mut self, ctx: &Bytes, id: ReplicaId) -> Option<&BTreeSet<ReplicaId>> {
        let p = self.pending.get_mut(ctx)?;
        p.acks.insert(id);
        Some(&p.acks)
    }

    /// Removes and returns every read up to and including `ctx`, in order: a later round's confirmation
    /// also confirms every earlier request.
    pub(crate) fn advance(&mut self, ctx: &Bytes) -> Vec<(Bytes, PendingRead)> {
        let Some(pos) = self.queue.iter().position(|c| c == ctx) else { return Vec::new() };
        let mut out = Vec::with_capacity(pos + 1);
        for c in self.queue.drain(..=pos) {
            if let Some(p) = self.pending.remove(&c) {
                out.push((c, p));
            }
        }
        out
    }

    /// The context of the newest pending read, carried by the next heartbeat round.
    pub(crate) fn last_pending(&self) -> Option<&Bytes> {
        self.queue.back()
    }

    /// Drops every pending read (leadership lost).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
        self.queue.clear();
    }

    /// Number of pending reads.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}
