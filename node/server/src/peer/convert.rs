//! Raft messages to and from their protocol form (`drakkar.v1.RaftMessage`), field by field.
//!
//! Decoding never panics; a message with an unknown kind or entry kind is refused (`None`) and dropped
//! by the caller: Raft treats it as lost. Semantic checks (plausible indices and terms) are the Raft
//! core's.

use std::collections::BTreeSet;

use crate::peer::pb;
use drakkar_raft::{
    Entry, EntryKind, GroupId, LogIndex, Membership, Message, MessageKind, ReplicaId, Snapshot, SnapshotMeta,
    Term,
};

use drakkar::transport::MessageBatch;

fn kind_to_pb(k: MessageKind) -> Option<pb::MessageKind> {
    use pb::MessageKind as P;
    Some(match k {
        MessageKind::Append => P::Append,
        MessageKind::AppendResponse => P::AppendResponse,
        MessageKind::RequestVote => P::RequestVote,
        MessageKind::RequestVoteResponse => P::RequestVoteResponse,
        MessageKind::RequestPreVote => P::RequestPreVote,
        MessageKind::RequestPreVoteResponse => P::RequestPreVoteResponse,
        MessageKind::Snapshot => P::Snapshot,
        MessageKind::Heartbeat => P::Heartbeat,
        MessageKind::HeartbeatResponse => P::HeartbeatResponse,
        MessageKind::Propose => P::Propose,
        MessageKind::ReadIndex => P::ReadIndex,
        MessageKind::ReadIndexResponse => P::ReadIndexResponse,
        MessageKind::TimeoutNow => P::TimeoutNow,
        MessageKind::TransferLeader => P::TransferLeader,
        MessageKind::Quiesce => P::Quiesce,
        _ => return None,
    })
}

fn kind_from_pb(k: i32) -> Option<MessageKind> {
    use pb::MessageKind as P;
    Some(match P::try_from(k).ok()? {
        P::Append => MessageKind::Append,
        P::AppendResponse => MessageKind::AppendResponse,
        P::RequestVote => MessageKind::RequestVote,
        P::RequestVoteResponse => MessageKind::RequestVoteResponse,
        P::RequestPreVote => MessageKind::RequestPreVote,
        P::RequestPreVoteResponse => MessageKind::RequestPreVoteResponse,
        P::Snapshot => MessageKind::Snapshot,
        P::Heartbeat => MessageKind::Heartbeat,
        P::HeartbeatResponse => MessageKind::HeartbeatResponse,
        P::Propose => MessageKind::Propose,
        P::ReadIndex => MessageKind::ReadIndex,
        P::ReadIndexResponse => MessageKind::ReadIndexResponse,
        P::TimeoutNow => MessageKind::TimeoutNow,
        P::TransferLeader => MessageKind::TransferLeader,
        P::Quiesce => MessageKind::Quiesce,
    })
}

fn entry_to_pb(e: &Entry) -> Option<pb::RaftEntry> {
    let kind = match e.kind {
        EntryKind::Normal => pb::EntryKind::Normal,
        EntryKind::ConfChange => pb::EntryKind::ConfChange,
        EntryKind::Metadata => pb::EntryKind::Metadata,
        _ => return None,
    };
    Some(pb::RaftEntry { term: e.term.0, index: e.index.0, kind: kind as i32, data: e.data.clone() })
}

fn entry_from_pb(e: pb::RaftEntry) -> Option<Entry> {
    let kind = match pb::EntryKind::try_from(e.kind).ok()? {
        pb::EntryKind::Normal => EntryKind::Normal,
        pb::EntryKind::ConfChange => EntryKind::ConfChange,
        pb::EntryKind::Metadata => EntryKind::Metadata,
    };
    Some(Entry { term: Term(e.term), index: LogIndex(e.index), kind, data: e.data })
}

fn ids(s: &BTreeSet<ReplicaId>) -> Vec<u64> {
    s.iter().map(|r| r.0).collect()
}

fn id_set(v: Vec<u64>) -> BTreeSet<ReplicaId> {
    v.into_iter().map(ReplicaId).collect()
}

/// A message in protocol form (`None`: a kind this build cannot send).
pub fn message_to_pb(m: &Message) -> Option<pb::RaftMessage> {
    let snapshot = m.snapshot.as_ref().map(|s| pb::RaftSnapshot {
        index: s.meta.index.0,
        term: s.meta.term.0,
        membership: Some(pb::RaftMembership {
            voters: ids(&s.meta.membership.voters),
            non_voters: ids(&s.meta.membership.non_voters),
            witnesses: ids(&s.meta.membership.witnesses),
            removed: ids(&s.meta.membership.removed),
        }),
        data: s.data.clone(),
    });
    Some(pb::RaftMessage {
        kind: kind_to_pb(m.kind)? as i32,
        from: m.from.0,
        to: m.to.0,
        term: m.term.0,
        log_term: m.log_term.0,
        index: m.index.0,
        entries: m.entries.iter().map(entry_to_pb).collect::<Option<_>>()?,
        commit: m.commit.0,
        snapshot,
        reject: m.reject,
        reject_hint: m.reject_hint.0,
        context: m.context.clone(),
    })
}

/// A message from protocol form (`None`: an unknown kind).
pub fn message_from_pb(m: pb::RaftMessage) -> Option<Message> {
    let snapshot = m.snapshot.map(|s| {
        let ms = s.membership.unwrap_or_default();
        Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(s.index),
                term: Term(s.term),
                membership: Membership {
                    voters: id_set(ms.voters),
                    non_voters: id_set(ms.non_voters),
                    witnesses: id_set(ms.witnesses),
                    removed: id_set(ms.removed),
                },
            },
            data: s.data,
        }
    });
    Some(Message {
        kind: kind_from_pb(m.kind)?,
        from: ReplicaId(m.from),
        to: ReplicaId(m.to),
        term: Term(m.term),
        log_term: Term(m.log_term),
        index: LogIndex(m.index),
        entries: m.entries.into_iter().map(entry_from_pb).collect::<Option<_>>()?,
        commit: LogIndex(m.commit),
        snapshot,
        reject: m.reject,
        reject_hint: LogIndex(m.reject_hint),
        context: m.context,
    })
}

/// Splits an incarnation id into its protocol halves (high, low).
pub fn incarnation_halves(i: u128) -> (u64, u64) {
    ((i >> 64) as u64, i as u64)
}

/// A batch in protocol form; messages of kinds this build cannot send are left out.
pub fn batch_to_pb(b: &MessageBatch) -> pb::RaftBatch {
    let (hi, lo) = incarnation_halves(b.incarnation);
    pb::RaftBatch {
        from: b.from.clone(),
        incarnation_hi: hi,
        incarnation_lo: lo,
        messages: b
            .messages
            .iter()
            .filter_map(|(g, m)| {
                message_to_pb(m).map(|message| pb::GroupMessage { group: g.0, message: Some(message) })
            })
            .collect(),
        reused: b.reused.iter().map(|(g, r)| pb::GroupReplica { group: g.0, replica: r.0 }).collect(),
    }
}

/// A batch from protocol form; undecodable messages are dropped (Raft sees them as lost).
pub fn batch_from_pb(b: pb::RaftBatch) -> MessageBatch {
    MessageBatch {
        from: b.from,
        incarnation: (u128::from(b.incarnation_hi) << 64) | u128::from(b.incarnation_lo),
        messages: b
            .messages
            .into_iter()
            .filter_map(|gm| Some((GroupId(gm.group), message_from_pb(gm.message?)?)))
            .collect(),
        reused: b.reused.into_iter().map(|r| (GroupId(r.group), ReplicaId(r.replica))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn every_field_survives_the_round_trip() {
        let m = Message {
            kind: MessageKind::Snapshot,
            from: ReplicaId(1),
            to: ReplicaId(3),
            term: Term(7),
            log_term: Term(6),
            index: LogIndex(40),
            entries: vec![
                Entry {
                    term: Term(6),
                    index: LogIndex(41),
                    kind: EntryKind::Normal,
                    data: Bytes::from_static(b"x"),
                },
                Entry { term: Term(7), index: LogIndex(42), kind: EntryKind::ConfChange, data: Bytes::new() },
                Entry { term: Term(7), index: LogIndex(43), kind: EntryKind::Metadata, data: Bytes::new() },
            ],
            commit: LogIndex(39),
            snapshot: Some(Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(30),
                    term: Term(5),
                    membership: Membership {
                        voters: id_set(vec![1, 2]),
                        non_voters: id_set(vec![3]),
                        witnesses: id_set(vec![4]),
                        removed: id_set(vec![5]),
                    },
                },
                data: Bytes::from_static(b"snap-30"),
            }),
            reject: true,
            reject_hint: LogIndex(12),
            context: Bytes::from_static(b"ctx"),
        };
        let batch = MessageBatch {
            from: "node-1:7000".into(),
            incarnation: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            messages: vec![(GroupId(9), m.clone())],
            reused: vec![(GroupId(2), ReplicaId(3))],
        };
        let back = batch_from_pb(batch_to_pb(&batch));
        assert_eq!(back.from, batch.from);
        assert_eq!(back.incarnation, batch.incarnation);
        assert_eq!(back.messages, batch.messages);
        assert_eq!(back.reused, batch.reused);
    }

    #[test]
    fn unknown_kinds_are_dropped_not_panicked_on() {
        let mut pbm = message_to_pb(&Message::default()).unwrap();
        pbm.kind = 999;
        assert!(message_from_pb(pbm.clone()).is_none());
        pbm.kind = 0;
        pbm.entries.push(pb::RaftEntry { kind: 42, ..Default::default() });
        assert!(message_from_pb(pbm).is_none());
    }
}
