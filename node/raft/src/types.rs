//! Typed identifiers, log entries, membership and snapshots: the values the core exchanges with its caller.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(
    /// A Raft group (Dragonboat's "cluster" or "shard"). The core never looks at it; the host routes by it.
    GroupId,
    "g"
);
id_type!(
    /// A member of a group. Ids are never reused within a group; `0` is not a valid id.
    ReplicaId,
    ""
);
id_type!(
    /// A Raft term. Terms only grow.
    Term,
    "t"
);
id_type!(
    /// A position in the replicated log. Index 0 is the empty prefix before the first entry.
    LogIndex,
    "i"
);

impl LogIndex {
    /// The index after this one (saturating: indices from peers are untrusted).
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    /// The index before this one (saturating at 0).
    #[must_use]
    pub fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// Application data (possibly empty: a new leader appends an empty entry of its term).
    #[default]
    Normal,
    /// An encoded [`ConfChange`].
    ConfChange,
    /// A normal entry with its payload stripped: what witnesses store. Never applied to a state machine.
    Metadata,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The term in which the entry was proposed.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
    /// What `data` holds.
    pub kind: EntryKind,
    /// The payload; opaque to the core except for `ConfChange` entries.
    pub data: Bytes,
}

impl Entry {
    /// Approximate in-memory and on-wire size, used by the size limits.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + 24
    }

    /// The entry as a witness stores it: normal payloads are replaced by metadata.
    #[must_use]
    pub fn for_witness(&self) -> Entry {
        match self.kind {
            EntryKind::Normal => {
                Entry { term: self.term, index: self.index, kind: EntryKind::Metadata, data: Bytes::new() }
            }
            _ => self.clone(),
        }
    }
}

/// The state every replica must persist before it acts on it (answers a vote, acknowledges an append).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this replica has seen.
    pub term: Term,
    /// Whom it voted for in `term`.
    pub vote: Option<ReplicaId>,
    /// The highest index it knows to be committed.
    pub commit: LogIndex,
}

impl HardState {
    /// True for the state of a replica that has never run.
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}

/// The role of one member in a group's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberRole {
    /// Votes, counts toward quorum, can lead.
    Voter,
    /// Receives the log, does not vote, cannot lead (a learner: used to catch a new replica up).
    NonVoter,
    /// Votes and counts toward quorum, receives only metadata entries, never leads, never applies user data.
    Witness,
}

/// A group's membership at some point in the log.
///
/// Invariant: the three member sets are disjoint, and no member is in `removed`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Voting members that can lead.
    pub voters: BTreeSet<ReplicaId>,
    /// Members that receive the log but do not vote.
    pub non_voters: BTreeSet<ReplicaId>,
    /// Voting members that store only metadata and never lead.
    pub witnesses: BTreeSet<ReplicaId>,
    /// Ids that were members once and may never be reused.
    pub removed: BTreeSet<ReplicaId>,
}

impl Membership {
    /// A membership of voters only.
    pub fn with_voters(ids: impl IntoIterator<Item = ReplicaId>) -> Self {
        Membership { voters: ids.into_iter().collect(), ..Default::default() }
    }

    /// The role of `id`, if it is a member.
    pub fn role(&self, id: ReplicaId) -> Option<MemberRole> {
        if self.voters.contains(&id) {
            Some(MemberRole::Voter)
        } else if self.non_voters.contains(&id) {
            Some(MemberRole::NonVoter)
        } else if self.witnesses.contains(&id) {
            Some(MemberRole::Witness)
        } else {
            None
        }
    }

    /// Every current member, in id order.
    pub fn members(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        let mut all: Vec<ReplicaId> =
            self.voters.iter().chain(&self.non_voters).chain(&self.witnesses).copied().collect();
        all.sort_unstable();
        all.into_iter()
    }

    /// True if `id` votes (voters and witnesses).
    pub fn is_voting(&self, id: ReplicaId) -> bool {
        self.voters.contains(&id) || self.witnesses.contains(&id)
    }

    /// True when there are no members at all.
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty() && self.non_voters.is_empty() && self.witnesses.is_empty()
    }

    /// Applies one change, or says why it cannot be applied. The change is checked against this membership
    /// only; the caller ensures at most one change is pending at a time.
    pub fn apply(&mut self, cc: &ConfChange) -> Result<(), ConfChangeError> {
        let id = cc.replica;
        if id.0 == 0 {
            return Err(ConfChangeError::InvalidId);
        }
        if self.removed.contains(&id) {
            return Err(ConfChangeError::Removed(id));
        }
        let role = self.role(id);
        match cc.kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddNonVoter | ConfChangeKind::AddWitness => {
                if let Some(r) = role {
                    return Err(ConfChangeError::AlreadyMember(id, r));
                }
                let set = match cc.kind {
                    ConfChangeKind::AddVoter => &mut self.voters,
                    ConfChangeKind::AddNonVoter => &mut self.non_voters,
                    _ => &mut self.witnesses,
                };
                set.insert(id);
            }
            ConfChangeKind::Promote => match role {
                Some(MemberRole::NonVoter) => {
                    self.non_voters.remove(&id);
                    self.voters.insert(id);
                }
                Some(r) => return Err(ConfChangeError::NotPromotable(id, r)),
                None => return Err(ConfChangeError::NotMember(id)),
            },
            ConfChangeKind::Remove => {
                if role.is_none() {
                    return Err(ConfChangeError::NotMember(id));
                }
                let voting_left = self.voters.len() + self.witnesses.len() - usize::from(self.is_voting(id));
                if voting_left == 0 || (self.voters.len() == 1 && self.voters.contains(&id)) {
                    return Err(ConfChangeError::LastVoter(id));
                }
                self.voters.remove(&id);
                self.non_voters.remove(&id);
                self.witnesses.remove(&id);
                self.removed.insert(id);
            }
        }
        Ok(())
    }
}

/// Why a [`ConfChange`] cannot be applied to a membership.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfChangeError {
    /// Replica id 0 is reserved.
    #[error("replica id 0 is not valid")]
    InvalidId,
    /// The id was removed from this group once and may never come back.
    #[error("replica {0} was removed from this group and its id cannot be reused")]
    Removed(ReplicaId),
    /// The replica is already a member.
    #[error("replica {0} is already a member ({1:?})")]
    AlreadyMember(ReplicaId, MemberRole),
    /// The replica is not a member.
    #[error("replica {0} is not a member")]
    NotMember(ReplicaId),
    /// Only non-voters can be promoted.
    #[error("replica {0} is a {1:?} and cannot be promoted")]
    NotPromotable(ReplicaId, MemberRole),
    /// Removing it would leave no replica able to lead.
    #[error("replica {0} is the last voter and cannot be removed")]
    LastVoter(ReplicaId),
}

/// The kind of a single membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfChangeKind {
    /// Add a voting replica.
    AddVoter,
    /// Add a non-voting replica (learner).
    AddNonVoter,
    /// Add a witness.
    AddWitness,
    /// Turn a non-voter into a voter.
    Promote,
    /// Remove a member of any kind.
    Remove,
}

/// One membership change: one replica at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChange {
    /// What to do.
    pub kind: ConfChangeKind,
    /// To whom.
    pub replica: ReplicaId,
    /// Opaque to the core (the host puts the replica's address here).
    pub context: Bytes,
}

impl ConfChange {
    /// Encodes the change as the payload of a `ConfChange` entry: kind (1 byte), replica (u64 LE), context.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(9 + self.context.len());
        out.push(match self.kind {
            ConfChangeKind::AddVoter => 1,
            ConfChangeKind::AddNonVoter => 2,
            ConfChangeKind::AddWitness => 3,
            ConfChangeKind::Promote => 4,
            ConfChangeKind::Remove => 5,
        });
        out.extend_from_slice(&self.replica.0.to_le_bytes());
        out.extend_from_slice(&self.context);
        Bytes::from(out)
    }

    /// Decodes a payload written by [`ConfChange::encode`].
    pub fn decode(data: &Bytes) -> Option<ConfChange> {
        if data.len() < 9 {
            return None;
        }
        let kind = match data[0] {
            1 => ConfChangeKind::AddVoter,
            2 => ConfChangeKind::AddNonVoter,
            3 => ConfChangeKind::AddWitness,
            4 => ConfChangeKind::Promote,
            5 => ConfChangeKind::Remove,
            _ => return None,
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&data[1..9]);
        Some(ConfChange { kind, replica: ReplicaId(u64::from_le_bytes(id)), context: data.slice(9..) })
    }
}

/// What a snapshot covers: the log up to `index` (of `term`), and the membership at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The membership as of `index`.
    pub membership: Membership,
}

/// A snapshot as the core sees it: metadata plus an opaque payload (the host decides what the payload is:
/// the state itself, or a reference to a file that is streamed separately).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// Opaque to the core.
    pub data: Bytes,
}

impl Snapshot {
    /// True for the "no snapshot" value.
    pub fn is_empty(&self) -> bool {
        self.meta.index.0 == 0
    }
}

/// The entries that found a new group: one membership change per initial member, at term 1, committed.
/// Every founding replica stores the same entries (so they agree by construction); a replica that joins
/// later receives them from the leader and learns the initial membership by applying them.
pub fn bootstrap_entries(m: &Membership) -> Vec<Entry> {
    let changes = m
        .voters
        .iter()
        .map(|&id| (ConfChangeKind::AddVoter, id))
        .chain(m.non_voters.iter().map(|&id| (ConfChangeKind::AddNonVoter, id)))
        .chain(m.witnesses.iter().map(|&id| (ConfChangeKind::AddWitness, id)));
    changes
        .enumerate()
        .map(|(i, (kind, replica))| Entry {
            term: Term(1),
            index: LogIndex(i as u64 + 1),
            kind: EntryKind::ConfChange,
            data: ConfChange { kind, replica, context: Bytes::new() }.encode(),
        })
        .collect()
}

fn escape(data: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    const MAX: usize = 24;
    for &b in data.iter().take(MAX) {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "\\x{b:02x}")?;
        }
    }
    if data.len() > MAX {
        write!(f, "...({} bytes)", data.len())?;
    }
    Ok(())
}

impl fmt::Display for Entry {
    /// `term/index` then the payload: `1/3 "put x"`, `2/4 conf:add-voter(4)`, `2/5 meta`, `2/6 empty`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ", self.term.0, self.index.0)?;
        match self.kind {
            EntryKind::ConfChange => match ConfChange::decode(&self.data) {
                Some(cc) => write!(f, "conf:{cc}"),
                None => write!(f, "conf:malformed"),
            },
            EntryKind::Metadata => write!(f, "meta"),
            EntryKind::Normal if self.data.is_empty() => write!(f, "empty"),
            EntryKind::Normal => {
                write!(f, "\"")?;
                escape(&self.data, f)?;
                write!(f, "\"")
            }
        }
    }
}

impl fmt::Display for ConfChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = match self.kind {
            ConfChangeKind::AddVoter => "add-voter",
            ConfChangeKind::AddNonVoter => "add-non-voter",
            ConfChangeKind::AddWitness => "add-witness",
            ConfChangeKind::Promote => "promote",
            ConfChangeKind::Remove => "remove",
        };
        write!(f, "{k}({})", self.replica.0)
    }
}

impl fmt::Display for Membership {
    /// `voters=(1 2 3) non-voters=(4) witnesses=(5)`, omitting empty sets other than voters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |s: &BTreeSet<ReplicaId>| s.iter().map(|r| r.0.to_string()).collect::<Vec<_>>().join(" ");
        write!(f, "voters=({})", list(&self.voters))?;
        if !self.non_voters.is_empty() {
            write!(f, " non-voters=({})", list(&self.non_voters))?;
        }
        if !self.witnesses.is_empty() {
            write!(f, " witnesses=({})", list(&self.witnesses))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_change_roundtrip() {
        let cc = ConfChange {
            kind: ConfChangeKind::AddWitness,
            replica: ReplicaId(7),
            context: Bytes::from_static(b"node-7:9000"),
        };
        assert_eq!(ConfChange::decode(&cc.encode()), Some(cc));
        assert_eq!(ConfChange::decode(&Bytes::from_static(b"\x09abcdefgh")), None);
        assert_eq!(ConfChange::decode(&Bytes::from_static(b"\x01")), None);
    }

    #[test]
    fn membership_rules() {
        let mut m = Membership::with_voters([ReplicaId(1)]);
        let add = |kind, id| ConfChange { kind, replica: ReplicaId(id), context: Bytes::new() };
        assert_eq!(m.apply(&add(ConfChangeKind::Remove, 1)), Err(ConfChangeError::LastVoter(ReplicaId(1))));
        m.apply(&add(ConfChangeKind::AddNonVoter, 2)).unwrap();
        assert!(m.apply(&add(ConfChangeKind::AddVoter, 2)).is_err());
        m.apply(&add(ConfChangeKind::Promote, 2)).unwrap();
        assert_eq!(m.role(ReplicaId(2)), Some(MemberRole::Voter));
        m.apply(&add(ConfChangeKind::Remove, 2)).unwrap();
        assert_eq!(m.apply(&add(ConfChangeKind::AddVoter, 2)), Err(ConfChangeError::Removed(ReplicaId(2))));
        assert_eq!(m.apply(&add(ConfChangeKind::AddVoter, 0)), Err(ConfChangeError::InvalidId));
    }
}
