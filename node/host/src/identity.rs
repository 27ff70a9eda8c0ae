//! Replica identity: refuse a replica id reused by a node that lost its data.
//!
//! Every data directory has an incarnation id, created at its first start (a wiped directory gets a new
//! one). Each NodeHost remembers, durably, the incarnation behind every peer replica it has heard from
//! (trust on first use). A message from a known replica id with a different incarnation comes from a
//! replica that lost its log and vote: letting it vote could elect two leaders or lose committed entries,
//! so its messages are dropped and it is told that it must be replaced under a new replica id.
//!
//! File `peers` in the data directory: one line per (group, replica): `group replica incarnation-hex`,
//! appended and fsynced before the first message from that replica is accepted.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use drakkar_raft::{GroupId, ReplicaId};

use crate::error::NodeError;

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
}
