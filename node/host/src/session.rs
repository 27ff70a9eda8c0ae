//! Client sessions: exactly-once application of retried proposals (Dragonboat's sessions).
//!
//! A client registers a session (a random client id) through the log, then numbers its proposals with
//! consecutive series ids and tells the group, with each proposal, up to which series id it has received
//! answers. Every replica keeps, per session, the results of proposals not yet acknowledged: a proposal
//! whose series id is already recorded is not applied again; its recorded result is returned instead.
//! The table is part of every snapshot, so it survives restarts and reaches new replicas.
//!
//! Invariant: for each session, every recorded series id is greater than `responded_to`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use bytes::Bytes;

use crate::codec::SessionRef;
use crate::statemachine::SmResult;

/// At most this many sessions exist at once; registering more evicts nothing and fails (deterministically).
pub const MAX_SESSIONS: usize = 65_536;
/// At most this many unacknowledged results are kept per session.
pub const MAX_PENDING_PER_SESSION: usize = 4_096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Session {
    responded_to: u64,
    results: BTreeMap<u64, SmResult>,
}

/// What to do with a session proposal.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// Apply it, then record its result with [`Sessions::record`].
    Apply,
    /// Already applied: here is the recorded result.
    Duplicate(SmResult),
    /// Its result was already acknowledged and forgotten: the client is retrying something it has had an
    /// answer for. Not applied.
    Expired,
    /// The session does not exist (never registered, closed, or evicted). Not applied.
    UnknownSession,
}

/// The session table of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    sessions: BTreeMap<u64, Session>,
}

/// Result codes in `SmResult::value` for session bookkeeping entries.
pub mod codes {
    /// Registered or unregistered.
    pub const OK: u64 = 0;
    /// The session already exists (register) or does not (unregister, proposal).
    pub const UNKNOWN_OR_EXISTS: u64 = 1;
    /// Too many sessions.
    pub const FULL: u64 = 2;
}

impl Sessions {
    /// Opens a session. Returns the result code.
    pub fn register(&mut self, client: u64) -> u64 {
        if self.sessions.contains_key(&client) {
            return codes::UNKNOWN_OR_EXISTS;
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return codes::FULL;
        }
        self.sessions.insert(client, Session::default());
        codes::OK
    }

    /// Closes a session. Returns the result code.
    pub fn unregister(&mut self, client: u64) -> u64 {
        if self.sessions.remove(&client).is_some() { codes::OK } else { codes::UNKNOWN_OR_EXISTS }
    }

    /// Decides whether a session proposal is applied, and forgets results the client has acknowledged.
    pub fn check(&mut self, s: &SessionRef) -> SessionCheck {
        let Some(sess) = self.sessions.get_mut(&s.client) else { return SessionCheck::UnknownSession };
        if s.responded_to > sess.responded_to {
            sess.responded_to = s.responded_to;
            let keep = sess.results.split_off(&(s.responded_to + 1));
            sess.results = keep;
        }
        if let Some(r) = sess.results.get(&s.series) {
            return SessionCheck::Duplicate(r.clone());
        }
        if s.series <= sess.responded_to {
            return SessionCheck::Expired;
        }
        SessionCheck::Apply
    }

    /// Records the result of an applied session proposal.
    pub fn record(&mut self, s: &SessionRef, result: SmResult) {
        if let Some(sess) = self.sessions.get_mut(&s.client) {
            if sess.results.len() >= MAX_PENDING_PER_SESSION
                && let Some((&oldest, _)) = sess.results.iter().next()
            {
                // A client that never acknowledges must not grow memory without bound.
                sess.results.remove(&oldest);
            }
            sess.results.insert(s.series, result);
        }
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Writes the table (part of a snapshot).
    pub fn save(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&(self.sessions.len() as u64).to_le_bytes())?;
        for (client, s) in &self.sessions {
            w.write_all(&client.to_le_bytes())?;
            w.write_all(&s.responded_to.to_le_bytes())?;
            w.write_all(&(s.results.len() as u64).to_le_bytes())?;
            for (series, r) in &s.results {
                w.write_all(&series.to_le_bytes())?;
                w.write_all(&r.value.to_le_bytes())?;
                w.write_all(&(r.data.len() as u64).to_le_bytes())?;
                w.write_all(&r.data)?;
            }
        }
        Ok(())
    }

    /// Reads a table written by [`Sessions::save`].
    pub fn load(r: &mut dyn Read) -> io::Result<Sessions> {
        fn u64_of(r: &mut dyn Read) -> io::Result<u64> {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("session table: {what}"));
        let n = u64_of(r)?;
        if n > MAX_SESSIONS as u64 {
            return Err(bad("too many sessions"));
        }
        let mut sessions = BTreeMap::new();
        for _ in 0..n {
            let client = u64_of(r)?;
            let responded_to = u64_of(r)?;
            let m = u64_of(r)?;
            if m > MAX_PENDING_PER_SESSION as u64 {
                return Err(bad("too many results"));
            }
            let mut results = BTreeMap::new();
            for _ in 0..m {
                let series = u64_of(r)?;
                let value = u64_of(r)?;
                let len = u64_of(r)?;
                if len > 64 << 20 {
                    return Err(bad("result too large"));
                }
                let mut data = vec![0u8; len as usize];
                r.read_exact(&mut data)?;
                results.insert(series, SmResult { value, data: Bytes::from(data) });
            }
            sessions.insert(client, Session { responded_to, results });
        }
        Ok(Sessions { sessions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(series: u64, responded_to: u64) -> SessionRef {
        SessionRef { client: 9, series, responded_to }
    }

    #[test]
    fn retried_proposal_applies_once() {
        let mut t = Sessions::default();
        assert_eq!(t.check(&at(1, 0)), SessionCheck::UnknownSession);
        assert_eq!(t.register(9), codes::OK);
        assert_eq!(t.register(9), codes::UNKNOWN_OR_EXISTS);
        assert_eq!(t.check(&at(1, 0)), SessionCheck::Apply);
        let r = SmResult { value: 5, data: Bytes::from_static(b"first") };
        t.record(&at(1, 0), r.clone());
        assert_eq!(t.check(&at(1, 0)), SessionCheck::Duplicate(r));
        // The client acknowledges 1 with its next proposal: 1's result is forgotten.
        assert_eq!(t.check(&at(2, 1)), SessionCheck::Apply);
        t.record(&at(2, 1), SmResult::default());
        assert_eq!(t.check(&at(1, 1)), SessionCheck::Expired);
        let mut buf = Vec::new();
        t.save(&mut buf).unwrap();
        assert_eq!(Sessions::load(&mut buf.as_slice()).unwrap(), t);
        assert!(Sessions::load(&mut &buf[..buf.len() - 1]).is_err());
        assert_eq!(t.unregister(9), codes::OK);
        assert_eq!(t.check(&at(3, 2)), SessionCheck::UnknownSession);
    }
}
