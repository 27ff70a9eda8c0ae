//! Replica identity: refuse a replica id reused by a node that lost its data.
//!
//! Every data directory has an incarnation id, created at its first start (a wiped directory gets a new
//! one). Each NodeHost remembers, durably, the incarnation behind every peer replica it has heard from
//! (trust on first use). A message from a known replica id with a different incarnation comes from a
//! replica that lost its log and vote: letting it vote could elect two leaders or lose committed entries,
//! so its messages are dropped and it is told that it must be replaced under a new replica id.
//!
//! File `peers` in the data directory: one line per (group, replica): `group replica incarnation-hex`,
//! appended and fsynced before the first message from that replica is accepted. Only members are
//! recorded (see [`admit`]), so the file grows with the memberships, never with what peers invent.
//!
//! Admission: Raft traffic is taken only from the members of the target group, as this node knows them
//! (the applied membership), and only from the address recorded for that member, which the transport has
//! authenticated (with TLS, the peer's certificate is valid for it). A certificate from the cluster's CA
//! is thus not enough: a decommissioned node, or another cluster sharing the CA, is refused. One
//! exception: a replica that knows no membership yet (it is joining, and learns the membership from its
//! leader's log or snapshot) takes messages from any authenticated sender, but records nothing durable
//! about them apart from its Raft log (see `engine`). A member that missed the addition of its leader
//! refuses it, and asks a voter it knows to campaign instead (`engine::Stranded`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use drakkar_raft::{GroupId, ReplicaId};

use crate::apply::GroupMembership;
use crate::error::NodeError;
use crate::metrics::Metrics;

/// Why Raft traffic from a peer was refused: the `reason` label of `drakkar_raft_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// For a group this node does not run (or whose replica stopped).
    UnknownGroup,
    /// The sender replica is no member of the group.
    NotMember,
    /// The sender replica is a member, but its recorded address is not the one the sender proved.
    WrongAddress,
    /// A `reused` notice from a sender that is no member of the group.
    Notice,
    /// A message no peer sends that way (a snapshot in a batch instead of its own stream).
    Malformed,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::UnknownGroup => "unknown_group",
            Refusal::NotMember => "not_member",
            Refusal::WrongAddress => "wrong_address",
            Refusal::Notice => "notice",
            Refusal::Malformed => "malformed",
        }
    }
}

/// Whether a message from a replica at an address may reach a group (see [`admit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A member, at its recorded address: accepted, and its incarnation recorded.
    Member,
    /// The group knows no membership yet (a joining replica): accepted, nothing recorded.
    Joining,
    /// Refused.
    Refused(Refusal),
}

/// Whether `a` and `b` name the same peer (`host:port`, with or without a scheme; host names compare
/// case-insensitively).
pub(crate) fn same_address(a: &str, b: &str) -> bool {
    let (a, b) = (crate::address::host_port(a), crate::address::host_port(b));
    a.eq_ignore_ascii_case(b)
}

/// Admission of a message from `replica`, sent by the node at `from` (authenticated by the transport),
/// to a group whose membership is `m`.
pub(crate) fn admit(m: &GroupMembership, replica: ReplicaId, from: &str) -> Admission {
    if m.membership.is_empty() {
        return Admission::Joining;
    }
    if m.membership.role(replica).is_none() {
        return Admission::Refused(Refusal::NotMember);
    }
    match m.addresses.get(&replica) {
        Some(a) if same_address(a, from) => Admission::Member,
        _ => Admission::Refused(Refusal::WrongAddress),
    }
}

/// Whether `from` is the recorded address of a member of `m` other than `except` (who may send this
/// node's replica `except` a `reused` notice).
pub(crate) fn is_member_address(m: &GroupMembership, from: &str, except: ReplicaId) -> bool {
    m.membership
        .members()
        .filter(|id| *id != except)
        .any(|id| m.addresses.get(&id).is_some_and(|a| same_address(a, from)))
}

/// Milliseconds since the process's first refusal at which a refusal was last logged.
static LOGGED_AT_MS: AtomicU64 = AtomicU64::new(0);
/// Refusals not logged since the last line.
static UNLOGGED: AtomicU64 = AtomicU64::new(0);
const LOG_EVERY_MS: u64 = 1000;

/// Counts a refusal (metric `drakkar_raft_refused_total`) and logs it at debug, at most one line a second
/// per process (a hostile peer must not flood the log): the line says how many were not logged.
pub(crate) fn refused(metrics: &Metrics, why: Refusal, group: GroupId, replica: ReplicaId, from: &str) {
    metrics.raft_refused.get_or_create(&vec![("reason".to_string(), why.label().to_string())]).inc();
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Offset by one period so the first refusal is logged.
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + LOG_EVERY_MS;
    let last = LOGGED_AT_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) < LOG_EVERY_MS
        || LOGGED_AT_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        UNLOGGED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let unlogged = UNLOGGED.swap(0, Ordering::Relaxed);
    tracing::debug!(
        group = group.0,
        replica = replica.0,
        %from,
        reason = why.label(),
        unlogged,
        "Raft traffic refused from a peer"
    );
}

/// Incarnation by (group, replica), and the append handle of the `peers` file (opened on first write).
type Table = (HashMap<(GroupId, ReplicaId), u128>, Option<File>);

/// The remembered incarnations of peer replicas.
pub(crate) struct PeerIdentities {
    path: PathBuf,
    known: Mutex<Table>,
}

/// What to do with a message from a peer replica.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    /// The replica id was reused by a node that lost its data.
    Reused,
}

impl PeerIdentities {
    pub(crate) fn open(dir: &Path) -> Result<Self, NodeError> {
        let path = dir.join("peers");
        let mut known = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                for line in s.lines() {
                    let mut f = line.split_whitespace();
                    let parsed = (|| {
                        let g = f.next()?.parse().ok()?;
                        let r = f.next()?.parse().ok()?;
                        let inc = u128::from_str_radix(f.next()?, 16).ok()?;
                        Some((GroupId(g), ReplicaId(r), inc))
                    })();
                    // A torn last line (crash while appending) is ignored: that peer is simply re-learned.
                    if let Some((g, r, inc)) = parsed {
                        known.insert((g, r), inc);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NodeError::Storage(format!("{}: {e}", path.display()))),
        }
        Ok(PeerIdentities { path, known: Mutex::new((known, None)) })
    }

    /// Checks (and on first sight records durably) the incarnation behind `(group, replica)`.
    pub(crate) fn check(
        &self,
        group: GroupId,
        replica: ReplicaId,
        incarnation: u128,
    ) -> Result<Verdict, NodeError> {
        let Ok(mut guard) = self.known.lock() else {
            return Err(NodeError::Storage("peer identity table lock poisoned".into()));
        };
        let (known, file) = &mut *guard;
        match known.get(&(group, replica)) {
            Some(&inc) if inc == incarnation => return Ok(Verdict::Accept),
            Some(_) => return Ok(Verdict::Reused),
            None => {}
        }
        let io = |e: std::io::Error| NodeError::Storage(format!("{}: {e}", self.path.display()));
        if file.is_none() {
            *file = Some(OpenOptions::new().create(true).append(true).open(&self.path).map_err(io)?);
        }
        if let Some(f) = file.as_mut() {
            writeln!(f, "{} {} {incarnation:032x}", group.0, replica.0).map_err(io)?;
            f.sync_data().map_err(io)?;
        }
        known.insert((group, replica), incarnation);
        Ok(Verdict::Accept)
    }

    /// Checks the incarnation behind `(group, replica)` against what is recorded, recording nothing:
    /// for senders that are not (yet) known members (see [`Admission::Joining`]).
    pub(crate) fn check_known(&self, group: GroupId, replica: ReplicaId, incarnation: u128) -> Verdict {
        let known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match known.0.get(&(group, replica)) {
            Some(&inc) if inc != incarnation => Verdict::Reused,
            _ => Verdict::Accept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_is_trusted_and_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let p = PeerIdentities::open(dir.path()).unwrap();
        assert_eq!(p.check(GroupId(1), ReplicaId(2), 0xabc).unwrap(), Verdict::Accept);
        assert_eq!(p.check(GroupId(1), ReplicaId(2), 0xabc).unwrap(), Verdict::Accept);
        assert_eq!(p.check(GroupId(1), ReplicaId(2), 0xdef).unwrap(), Verdict::Reused);
        drop(p);
        let p = PeerIdentities::open(dir.path()).unwrap();
        assert_eq!(p.check(GroupId(1), ReplicaId(2), 0xdef).unwrap(), Verdict::Reused);
        assert_eq!(p.check(GroupId(2), ReplicaId(2), 0xdef).unwrap(), Verdict::Accept);
    }

    #[test]
    fn unknown_senders_are_checked_but_never_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let p = PeerIdentities::open(dir.path()).unwrap();
        assert_eq!(p.check(GroupId(1), ReplicaId(2), 0xabc).unwrap(), Verdict::Accept);
        assert_eq!(p.check_known(GroupId(1), ReplicaId(2), 0xabc), Verdict::Accept);
        assert_eq!(p.check_known(GroupId(1), ReplicaId(2), 0xdef), Verdict::Reused);
        for r in 3..100 {
            assert_eq!(p.check_known(GroupId(1), ReplicaId(r), 0xdef), Verdict::Accept);
        }
        let lines = std::fs::read_to_string(dir.path().join("peers")).unwrap().lines().count();
        assert_eq!(lines, 1);
    }

    fn membership() -> GroupMembership {
        let mut m = GroupMembership::default();
        m.membership.voters.extend([ReplicaId(1), ReplicaId(2)]);
        m.membership.witnesses.insert(ReplicaId(3));
        m.membership.removed.insert(ReplicaId(4));
        for (id, a) in [(1, "n1:7000"), (2, "http://N2:7000/"), (3, "n3:7000"), (4, "n4:7000")] {
            m.addresses.insert(ReplicaId(id), a.to_string());
        }
        m
    }

    #[test]
    fn only_members_at_their_recorded_address_are_admitted() {
        let m = membership();
        assert_eq!(admit(&m, ReplicaId(1), "n1:7000"), Admission::Member);
        assert_eq!(admit(&m, ReplicaId(2), "n2:7000"), Admission::Member, "scheme and case do not matter");
        assert_eq!(admit(&m, ReplicaId(3), "https://n3:7000"), Admission::Member, "a witness");
        assert_eq!(admit(&m, ReplicaId(1), "n2:7000"), Admission::Refused(Refusal::WrongAddress));
        assert_eq!(admit(&m, ReplicaId(4), "n4:7000"), Admission::Refused(Refusal::NotMember), "removed");
        assert_eq!(admit(&m, ReplicaId(9), "n1:7000"), Admission::Refused(Refusal::NotMember));
        assert_eq!(admit(&GroupMembership::default(), ReplicaId(9), "x:1"), Admission::Joining);
        assert!(is_member_address(&m, "n2:7000", ReplicaId(1)));
        assert!(!is_member_address(&m, "n1:7000", ReplicaId(1)), "not on its own behalf");
        assert!(!is_member_address(&m, "n4:7000", ReplicaId(1)), "a removed member");
        assert!(!is_member_address(&m, "intruder:7000", ReplicaId(1)));
    }
}
