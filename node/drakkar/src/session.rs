//! Client sessions: exactly-once application of retried proposals (Dragonboat's sessions).
//!
//! A client registers a session (a random client id) through the log, then numbers its proposals with
//! consecutive series ids and tells the group, with each proposal, up to which series id it has received
//! answers. Every replica keeps, per session, the results of proposals not yet acknowledged: a proposal
//! whose series id is already recorded is not applied again; its recorded result is returned instead.
//! The table is part of every snapshot, so it survives restarts and reaches new replicas.
//!
//! Every decision here is a function of the table and the entry being applied (its log index), never of
//! a clock or of a replica's configuration, so every replica decides alike:
//! - **Eviction floor.** A session keeps at most [`MAX_PENDING_PER_SESSION`] unacknowledged results; past
//!   it the oldest is evicted and the session's floor rises to its series id. A proposal at or below the
//!   floor (or at or below `responded_to`) whose result is not kept is never applied: it gets
//!   [`SessionCheck::Expired`].
//! - **Result memory per group.** The kept results of all sessions cost at most [`MAX_RESULT_BYTES`]
//!   ([`RESULT_OVERHEAD`] plus the data of each). Recording past it evicts results of the least recently
//!   used sessions, oldest first, raising each one's floor as above.
//! - **Expiry in log time.** Each session carries the time-to-live (in log entries) its registration
//!   entry named. A session not used for that many entries is dropped at the next session entry applied.
//! - **Least recently used at the cap.** Registering beyond [`MAX_SESSIONS`] drops the session used least
//!   recently (lowest last-use index, then lowest id) instead of refusing.
//! - **Idempotent registration.** Registering an id that exists answers OK and changes nothing (ids are
//!   random 64-bit numbers: a second registration of one is a retry of the first).
//! - **Plain proposals applied once.** A plain (session-less) proposal carries a [`ProposalId`]: its
//!   replica's origin (new at every start of the replica) and a sequence number. Per origin the table
//!   keeps which of the last [`PLAIN_WINDOW`] sequence numbers were applied: a copy of an applied
//!   proposal (a forwarded proposal delivered twice) is skipped; one older than the window is refused,
//!   as it may be a copy. Origins expire after [`ORIGIN_TTL`] entries without use, and at most
//!   [`MAX_ORIGINS`] are kept (the least recently used goes first). This dedupes deliveries, not
//!   client retries: a client that sends a plain write twice makes two proposals.
//!
//! Invariants: `lru` holds exactly one `(last_used, client)` and `expiry` one `(last_used + ttl, client)`
//! pair per session. A recorded result may sit at or below `responded_to` or `floor` (a write applied
//! in the same batch as the one that acknowledged it, or applied after later series); it is found first,
//! so its retry still gets it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use bytes::Bytes;

use crate::payload::{ProposalId, SessionRef};
use crate::statemachine::SmResult;

/// At most this many sessions exist at once; registering more drops the least recently used one.
pub const MAX_SESSIONS: usize = 65_536;
/// At most this many unacknowledged results are kept per session; older ones are evicted (and retries of
/// them refused, see the module docs).
pub const MAX_PENDING_PER_SESSION: usize = 4_096;
/// At most this many bytes of kept results per group (each counted as its data plus
/// [`RESULT_OVERHEAD`]); recording past it evicts the oldest results of the least recently used sessions.
pub const MAX_RESULT_BYTES: u64 = 64 << 20;
/// What one kept result costs beyond its data (its series id, value and map entry).
pub const RESULT_OVERHEAD: u64 = 64;
/// The most result bytes [`Sessions::load`] accepts: a table saved by a node holds at most
/// [`MAX_RESULT_BYTES`] plus one result's overhead (one result over the limit is kept alone); twice that
/// refuses a hostile or corrupt table before it takes more memory than a real one could.
const MAX_LOADED_RESULT_BYTES: u64 = 2 * MAX_RESULT_BYTES;

fn cost(r: &SmResult) -> u64 {
    r.data.len() as u64 + RESULT_OVERHEAD
}

/// The time-to-live of a session whose registration named none (entries written before sessions
/// expired): never.
pub const NO_EXPIRY: u64 = u64::MAX;

/// Sequence numbers of plain proposals remembered per origin.
pub const PLAIN_WINDOW: u64 = 1_024;
/// Log entries without a plain proposal from an origin after which it is forgotten.
pub const ORIGIN_TTL: u64 = 1_000_000;
/// At most this many origins are remembered per group.
pub const MAX_ORIGINS: usize = 4_096;

/// The first word of a session table in format 2 (format 1 started with the session count, at most
/// [`MAX_SESSIONS`]). Format 3 adds the plain proposal windows.
const FORMAT_2: u64 = 0xD5E5_5102_0000_0002;
const FORMAT_3: u64 = 0xD5E5_5102_0000_0003;
/// Words of a window's bitmap.
const WINDOW_WORDS: usize = (PLAIN_WINDOW / 64) as usize;

/// Which of an origin's last [`PLAIN_WINDOW`] sequence numbers were applied.
///
/// Invariant: bit `seq % PLAIN_WINDOW` is set iff `seq` in `(hi - PLAIN_WINDOW, hi]` was applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Window {
    hi: u64,
    last_used: u64,
    bits: [u64; WINDOW_WORDS],
}

impl Window {
    fn bit(seq: u64) -> (usize, u64) {
        let b = seq % PLAIN_WINDOW;
        ((b / 64) as usize, 1u64 << (b % 64))
    }

    /// Records `seq`; answers what to do with it.
    fn admit(&mut self, seq: u64) -> PlainCheck {
        if seq > self.hi {
            // Clear the slots of the sequence numbers leaving the window.
            if seq - self.hi >= PLAIN_WINDOW {
                self.bits = [0; WINDOW_WORDS];
            } else {
                for s in self.hi + 1..=seq {
                    let (w, m) = Self::bit(s);
                    self.bits[w] &= !m;
                }
            }
            self.hi = seq;
        } else if self.hi - seq >= PLAIN_WINDOW {
            return PlainCheck::TooOld;
        }
        let (w, m) = Self::bit(seq);
        if self.bits[w] & m != 0 {
            return PlainCheck::Duplicate;
        }
        self.bits[w] |= m;
        PlainCheck::Apply
    }
}

/// What to do with a plain proposal.
#[derive(Debug, PartialEq, Eq)]
pub enum PlainCheck {
    /// Apply it (it is now recorded as applied).
    Apply,
    /// A copy of an applied proposal: skip it.
    Duplicate,
    /// Older than the window: it may be a copy of an applied one. Not applied.
    TooOld,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Session {
    responded_to: u64,
    /// The highest series id whose result was evicted unacknowledged (0: none).
    floor: u64,
    /// Log index of the last entry that used the session (registration included).
    last_used: u64,
    /// Entries without use after which the session expires.
    ttl: u64,
    results: BTreeMap<u64, SmResult>,
}

impl Session {
    /// The last log index at which the session is still alive.
    fn expires_at(&self) -> u64 {
        self.last_used.saturating_add(self.ttl)
    }
}

/// What to do with a session proposal.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// Apply it, then record its result with [`Sessions::record`].
    Apply,
    /// Already applied: here is the recorded result.
    Duplicate(SmResult),
    /// Its result is no longer kept (acknowledged by the client, or evicted past the per-session limit):
    /// it may have been applied once; it is not applied again.
    Expired,
    /// The session does not exist (never registered, closed, expired or dropped). Not applied.
    UnknownSession,
}

/// The session table of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    sessions: BTreeMap<u64, Session>,
    /// `(last_used, client)` of every session: the least recently used first.
    lru: BTreeSet<(u64, u64)>,
    /// `(last_used + ttl, client)` of every session: the first to expire first.
    expiry: BTreeSet<(u64, u64)>,
    /// Plain proposal windows by origin.
    origins: BTreeMap<u64, Window>,
    /// `(last_used, origin)` of every window: the least recently used first (also the first to expire).
    origins_lru: BTreeSet<(u64, u64)>,
    /// What the kept results cost (see [`cost`]): the sum over every session's `results`.
    result_bytes: u64,
}

/// Result codes in `SmResult::value` for session bookkeeping entries.
pub mod codes {
    /// Registered (or already registered: a retry) or unregistered.
    pub const OK: u64 = 0;
    /// The session does not exist (unregister).
    pub const UNKNOWN_OR_EXISTS: u64 = 1;
    /// Too many sessions (no longer answered: the least recently used session is dropped instead).
    pub const FULL: u64 = 2;
}

impl Sessions {
    /// Opens session `client` by the entry at `index`, expiring after `ttl` entries without use. Returns
    /// the result code.
    pub fn register(&mut self, client: u64, index: u64, ttl: u64) -> u64 {
        self.expire(index);
        if let Some(s) = self.sessions.get(&client) {
            // A retried registration: the session stays as it is (its results included).
            let last = s.last_used;
            self.touch(client, last, index);
            return codes::OK;
        }
        while self.sessions.len() >= MAX_SESSIONS {
            let Some(&(_, oldest)) = self.lru.iter().next() else { break };
            self.remove(oldest);
        }
        let s = Session { last_used: index, ttl: ttl.max(1), ..Session::default() };
        self.lru.insert((index, client));
        self.expiry.insert((s.expires_at(), client));
        self.sessions.insert(client, s);
        codes::OK
    }

    /// Closes a session by the entry at `index`. Returns the result code.
    pub fn unregister(&mut self, client: u64, index: u64) -> u64 {
        self.expire(index);
        if self.remove(client) { codes::OK } else { codes::UNKNOWN_OR_EXISTS }
    }

    fn remove(&mut self, client: u64) -> bool {
        match self.sessions.remove(&client) {
            Some(s) => {
                self.result_bytes -= s.results.values().map(cost).sum::<u64>();
                self.lru.remove(&(s.last_used, client));
                self.expiry.remove(&(s.expires_at(), client));
                true
            }
            None => false,
        }
    }

    fn touch(&mut self, client: u64, last: u64, index: u64) {
        if let Some(s) = self.sessions.get_mut(&client)
            && index > last
        {
            self.lru.remove(&(last, client));
            self.expiry.remove(&(s.expires_at(), client));
            s.last_used = index;
            self.lru.insert((index, client));
            self.expiry.insert((s.expires_at(), client));
        }
    }

    /// Drops every session unused for longer than its time-to-live, as of the entry at `index`.
    fn expire(&mut self, index: u64) {
        while let Some(&(at, client)) = self.expiry.first()
            && at < index
        {
            self.remove(client);
        }
    }

    /// Decides whether the session proposal at log `index` is applied, and forgets results the client
    /// has acknowledged.
    pub fn check(&mut self, s: &SessionRef, index: u64) -> SessionCheck {
        self.expire(index);
        let Some(sess) = self.sessions.get_mut(&s.client) else { return SessionCheck::UnknownSession };
        if s.responded_to > sess.responded_to {
            sess.responded_to = s.responded_to;
            // Keep the results of the series above `responded_to` (none when it is the largest id).
            let kept = match s.responded_to.checked_add(1) {
                Some(first_kept) => sess.results.split_off(&first_kept),
                None => BTreeMap::new(),
            };
            let acknowledged = std::mem::replace(&mut sess.results, kept);
            self.result_bytes -= acknowledged.values().map(cost).sum::<u64>();
        }
        let found = sess.results.get(&s.series).cloned();
        let below = s.series <= sess.responded_to || s.series <= sess.floor;
        let last = sess.last_used;
        self.touch(s.client, last, index);
        match found {
            Some(r) => SessionCheck::Duplicate(r),
            None if below => SessionCheck::Expired,
            None => SessionCheck::Apply,
        }
    }

    /// Records the result of an applied session proposal.
    pub fn record(&mut self, s: &SessionRef, result: SmResult) {
        if !self.sessions.contains_key(&s.client) {
            return;
        }
        self.make_room(cost(&result));
        if let Some(sess) = self.sessions.get_mut(&s.client) {
            if sess.results.len() >= MAX_PENDING_PER_SESSION
                && let Some((oldest, r)) = sess.results.pop_first()
            {
                // A client that never acknowledges must not grow memory without bound; a late retry of
                // the evicted series is refused, never applied again.
                sess.floor = sess.floor.max(oldest);
                self.result_bytes -= cost(&r);
            }
            self.result_bytes += cost(&result);
            if let Some(old) = sess.results.insert(s.series, result) {
                self.result_bytes -= cost(&old);
            }
        }
    }

    /// Evicts kept results, the oldest of the least recently used session first, until `need` more
    /// bytes fit within [`MAX_RESULT_BYTES`] (or nothing is left to evict). An evicted series raises its
    /// session's floor: a late retry of it is refused, never applied again.
    fn make_room(&mut self, need: u64) {
        while self.result_bytes.saturating_add(need) > MAX_RESULT_BYTES {
            let holder = self
                .lru
                .iter()
                .map(|&(_, c)| c)
                .find(|c| self.sessions.get(c).is_some_and(|s| !s.results.is_empty()));
            let Some(sess) = holder.and_then(|c| self.sessions.get_mut(&c)) else { return };
            if let Some((series, r)) = sess.results.pop_first() {
                sess.floor = sess.floor.max(series);
                self.result_bytes -= cost(&r);
            }
        }
    }

    /// What the kept results cost, in bytes (at most [`MAX_RESULT_BYTES`] once a result is recorded).
    pub fn result_bytes(&self) -> u64 {
        self.result_bytes
    }

    /// Decides whether the plain proposal `id`, at log `index`, is applied (and records it).
    pub fn check_plain(&mut self, id: ProposalId, index: u64) -> PlainCheck {
        while let Some(&(last, origin)) = self.origins_lru.first()
            && (last.saturating_add(ORIGIN_TTL) < index
                || (self.origins.len() >= MAX_ORIGINS && !self.origins.contains_key(&id.origin)))
        {
            self.origins_lru.remove(&(last, origin));
            self.origins.remove(&origin);
        }
        let w = self.origins.entry(id.origin).or_default();
        let last = w.last_used;
        let answer = w.admit(id.seq);
        if index > last {
            w.last_used = index;
            self.origins_lru.remove(&(last, id.origin));
            self.origins_lru.insert((index, id.origin));
        }
        answer
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Checks the invariants of the module docs: `lru` and `expiry` index exactly the sessions,
    /// `origins_lru` exactly the windows, and the caps hold. For the fuzz targets and tests.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let lru: BTreeSet<_> = self.sessions.iter().map(|(c, s)| (s.last_used, *c)).collect();
        let expiry: BTreeSet<_> = self.sessions.iter().map(|(c, s)| (s.expires_at(), *c)).collect();
        let origins: BTreeSet<_> = self.origins.iter().map(|(o, w)| (w.last_used, *o)).collect();
        if lru != self.lru || expiry != self.expiry || origins != self.origins_lru {
            return Err(format!("indexes out of step: {self:?}"));
        }
        let pending = self.sessions.values().map(|s| s.results.len()).max().unwrap_or(0);
        if self.sessions.len() > MAX_SESSIONS
            || self.origins.len() > MAX_ORIGINS
            || pending > MAX_PENDING_PER_SESSION
        {
            return Err("over a cap".into());
        }
        let kept: u64 = self.sessions.values().flat_map(|s| s.results.values()).map(cost).sum();
        if kept != self.result_bytes {
            return Err(format!("result bytes counted {} but kept {kept}", self.result_bytes));
        }
        Ok(())
    }

    /// Writes the table (part of a snapshot), in format 2.
    pub fn save(&self, w: &mut dyn Write) -> io::Result<()> {
        w.write_all(&FORMAT_3.to_le_bytes())?;
        w.write_all(&(self.sessions.len() as u64).to_le_bytes())?;
        for (client, s) in &self.sessions {
            for word in [*client, s.responded_to, s.floor, s.last_used, s.ttl, s.results.len() as u64] {
                w.write_all(&word.to_le_bytes())?;
            }
            for (series, r) in &s.results {
                w.write_all(&series.to_le_bytes())?;
                w.write_all(&r.value.to_le_bytes())?;
                w.write_all(&(r.data.len() as u64).to_le_bytes())?;
                w.write_all(&r.data)?;
            }
        }
        w.write_all(&(self.origins.len() as u64).to_le_bytes())?;
        for (origin, win) in &self.origins {
            for word in [*origin, win.hi, win.last_used].iter().chain(&win.bits) {
                w.write_all(&word.to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// Reads a table written by [`Sessions::save`] (format 3) or by earlier versions (format 2: no plain
    /// proposal windows; format 1: no floor, no last use, no expiry either).
    pub fn load(r: &mut dyn Read) -> io::Result<Sessions> {
        fn u64_of(r: &mut dyn Read) -> io::Result<u64> {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("session table: {what}"));
        let first = u64_of(r)?;
        let v3 = first == FORMAT_3;
        let v2 = v3 || first == FORMAT_2;
        let n = if v2 { u64_of(r)? } else { first };
        if n > MAX_SESSIONS as u64 {
            return Err(bad("too many sessions"));
        }
        let mut t = Sessions::default();
        let mut loaded = 0u64;
        for _ in 0..n {
            let client = u64_of(r)?;
            let responded_to = u64_of(r)?;
            let (floor, last_used, ttl) =
                if v2 { (u64_of(r)?, u64_of(r)?, u64_of(r)?) } else { (0, 0, NO_EXPIRY) };
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
                loaded = loaded.saturating_add(len + RESULT_OVERHEAD);
                if loaded > MAX_LOADED_RESULT_BYTES {
                    return Err(bad("kept results over the limit"));
                }
                // Memory follows the bytes that really arrive, not the length a stream claims.
                let mut data = Vec::with_capacity(len.min(1 << 20) as usize);
                r.take(len).read_to_end(&mut data)?;
                if data.len() as u64 != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "session table: a result cut short",
                    ));
                }
                results.insert(series, SmResult { value, data: Bytes::from(data) });
            }
            t.result_bytes += results.values().map(cost).sum::<u64>();
            if t.sessions.insert(client, Session { responded_to, floor, last_used, ttl, results }).is_some() {
                return Err(bad("a session listed twice"));
            }
            t.lru.insert((last_used, client));
            t.expiry.insert((last_used.saturating_add(ttl), client));
        }
        if v3 {
            let n = u64_of(r)?;
            if n > MAX_ORIGINS as u64 {
                return Err(bad("too many origins"));
            }
            for _ in 0..n {
                let (origin, hi, last_used) = (u64_of(r)?, u64_of(r)?, u64_of(r)?);
                let mut bits = [0u64; WINDOW_WORDS];
                for b in &mut bits {
                    *b = u64_of(r)?;
                }
                if t.origins.insert(origin, Window { hi, last_used, bits }).is_some() {
                    return Err(bad("an origin listed twice"));
                }
                t.origins_lru.insert((last_used, origin));
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format-3 table of one session claiming `results` results of `len` bytes each, of which `supplied`
    /// bytes each really follow (zeros produced as read: the reader holds nothing in memory).
    fn claimed_table(results: u64, len: u64, supplied: u64) -> impl Read {
        let words = |ws: &[u64]| -> Box<dyn Read> {
            Box::new(io::Cursor::new(ws.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>()))
        };
        let mut parts = vec![words(&[FORMAT_3, 1, 7, 0, 0, 0, NO_EXPIRY, results])];
        for i in 0..results {
            parts.push(words(&[i + 1, 0, len]));
            parts.push(Box::new(io::repeat(0).take(len.min(supplied))));
        }
        // No plain-proposal windows.
        parts.push(words(&[0]));
        parts.into_iter().fold(Box::new(io::empty()) as Box<dyn Read>, |a, b| Box::new(a.chain(b)))
    }

    #[test]
    fn a_table_claiming_more_results_than_a_node_keeps_is_refused_as_it_is_read() {
        // Three results of 64 MiB: a node never keeps more than 64 MiB (plus one result's overhead).
        let Err(e) = Sessions::load(&mut claimed_table(3, 64 << 20, u64::MAX)) else { panic!("loaded") };
        assert!(e.to_string().contains("over the limit"), "{e}");
        // A result cut short: an error, not a result of zeros.
        let Err(e) = Sessions::load(&mut claimed_table(1, 64 << 20, 10)) else { panic!("loaded") };
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        // A real one of the largest size loads.
        let t = Sessions::load(&mut claimed_table(1, 64 << 20, u64::MAX)).expect("loads");
        assert_eq!(t.result_bytes(), (64 << 20) + RESULT_OVERHEAD);
    }

    fn at(series: u64, responded_to: u64) -> SessionRef {
        SessionRef { client: 9, series, responded_to }
    }

    fn roundtrip(t: &Sessions) {
        let mut buf = Vec::new();
        t.save(&mut buf).unwrap();
        assert_eq!(&Sessions::load(&mut buf.as_slice()).unwrap(), t);
        assert!(Sessions::load(&mut &buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn kept_results_are_bounded_in_bytes_and_evicted_ones_never_apply_again() {
        let big = |n: u8| SmResult { value: u64::from(n), data: Bytes::from(vec![n; 4 << 20]) };
        let mut t = Sessions::default();
        for client in [1u64, 2, 3] {
            assert_eq!(t.register(client, client, NO_EXPIRY), codes::OK);
        }
        let mut index = 10;
        // 3 sessions x 8 results of 4 MiB, never acknowledged: 96 MiB asked, 64 MiB kept at most.
        for series in 1..=8u64 {
            for client in [1u64, 2, 3] {
                index += 1;
                let r = SessionRef { client, series, responded_to: 0 };
                assert_eq!(t.check(&r, index), SessionCheck::Apply);
                t.record(&r, big(series as u8));
                assert!(t.result_bytes() <= MAX_RESULT_BYTES, "{} bytes kept", t.result_bytes());
            }
        }
        let kept: u64 = t.sessions.values().flat_map(|s| s.results.values()).map(cost).sum();
        assert_eq!(kept, t.result_bytes(), "the running count matches the table");
        // The oldest results went first: series 1 of every session is gone, and its retry is refused.
        for client in [1u64, 2, 3] {
            index += 1;
            let retry = SessionRef { client, series: 1, responded_to: 0 };
            assert_eq!(t.check(&retry, index), SessionCheck::Expired, "client {client}");
        }
        // The newest result of each session is kept.
        index += 1;
        let last = SessionRef { client: 3, series: 8, responded_to: 0 };
        assert_eq!(t.check(&last, index), SessionCheck::Duplicate(big(8)));
        // Acknowledging and closing give the bytes back; the table survives a snapshot unchanged.
        roundtrip(&t);
        index += 1;
        assert_eq!(
            t.check(&SessionRef { client: 1, series: 9, responded_to: 8 }, index),
            SessionCheck::Apply
        );
        assert_eq!(t.unregister(2, index + 1), codes::OK);
        let kept: u64 = t.sessions.values().flat_map(|s| s.results.values()).map(cost).sum();
        assert_eq!(kept, t.result_bytes());
        let mut buf = Vec::new();
        t.save(&mut buf).unwrap();
        assert_eq!(Sessions::load(&mut buf.as_slice()).unwrap().result_bytes(), t.result_bytes());
    }

    #[test]
    fn retried_proposal_applies_once() {
        let mut t = Sessions::default();
        assert_eq!(t.check(&at(1, 0), 1), SessionCheck::UnknownSession);
        assert_eq!(t.register(9, 2, NO_EXPIRY), codes::OK);
        assert_eq!(t.check(&at(1, 0), 3), SessionCheck::Apply);
        let r = SmResult { value: 5, data: Bytes::from_static(b"first") };
        t.record(&at(1, 0), r.clone());
        // A retried registration changes nothing.
        assert_eq!(t.register(9, 4, NO_EXPIRY), codes::OK);
        assert_eq!(t.check(&at(1, 0), 5), SessionCheck::Duplicate(r));
        // The client acknowledges 1 with its next proposal: 1's result is forgotten.
        assert_eq!(t.check(&at(2, 1), 6), SessionCheck::Apply);
        t.record(&at(2, 1), SmResult::default());
        assert_eq!(t.check(&at(1, 1), 7), SessionCheck::Expired);
        roundtrip(&t);
        assert_eq!(t.unregister(9, 8), codes::OK);
        assert_eq!(t.unregister(9, 9), codes::UNKNOWN_OR_EXISTS);
        assert_eq!(t.check(&at(3, 2), 10), SessionCheck::UnknownSession);
    }

    /// A client may acknowledge any series id (`SessionRef` comes from its request): acknowledging the
    /// largest one forgets every result instead of overflowing `responded_to + 1` in the apply worker.
    #[test]
    fn acknowledging_the_largest_series_id_forgets_every_result() {
        let mut t = Sessions::default();
        t.register(9, 1, NO_EXPIRY);
        assert_eq!(t.check(&at(1, 0), 2), SessionCheck::Apply);
        t.record(&at(1, 0), SmResult::default());
        assert_eq!(t.check(&at(u64::MAX, u64::MAX), 3), SessionCheck::Expired);
        assert_eq!(t.check(&at(1, 0), 4), SessionCheck::Expired);
        t.check_invariants().unwrap();
        roundtrip(&t);
    }

    #[test]
    fn an_evicted_result_is_never_applied_again() {
        let mut t = Sessions::default();
        t.register(9, 1, NO_EXPIRY);
        // Series 1 is slow; 2 ..= 4097 are applied, none acknowledged (1 is still in flight).
        for series in 1..=(MAX_PENDING_PER_SESSION as u64 + 1) {
            assert_eq!(t.check(&at(series, 0), series + 1), SessionCheck::Apply);
            t.record(&at(series, 0), SmResult { value: series, data: Bytes::new() });
        }
        // Series 1's result was evicted: its retry is refused, not applied a second time.
        assert_eq!(t.check(&at(1, 0), 5_000), SessionCheck::Expired);
        assert_eq!(
            t.check(&at(2, 0), 5_001),
            SessionCheck::Duplicate(SmResult { value: 2, data: Bytes::new() })
        );
        roundtrip(&t);
    }

    #[test]
    fn unused_sessions_expire_in_log_time() {
        let mut t = Sessions::default();
        t.register(1, 10, 100);
        t.register(2, 20, 100);
        t.register(3, 30, NO_EXPIRY);
        let s2 = SessionRef { client: 2, series: 1, responded_to: 0 };
        assert_eq!(t.check(&s2, 110), SessionCheck::Apply);
        // At 111 session 1 is 101 entries old: gone. Session 2 was used at 110.
        assert_eq!(
            t.check(&SessionRef { client: 1, series: 1, responded_to: 0 }, 111),
            SessionCheck::UnknownSession
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.unregister(2, 210), codes::OK, "alive through last use + ttl");
        assert_eq!(t.register(4, 1_000_000, 100), codes::OK);
        assert_eq!(t.len(), 2, "session 3 never expires");
        roundtrip(&t);
    }

    #[test]
    fn a_full_table_drops_the_least_recently_used_session() {
        let mut t = Sessions::default();
        for c in 0..MAX_SESSIONS as u64 {
            assert_eq!(t.register(c + 1, c + 1, NO_EXPIRY), codes::OK);
        }
        // Session 1 is used again: session 2 is now the least recently used.
        let idx = MAX_SESSIONS as u64 + 1;
        assert_eq!(t.check(&SessionRef { client: 1, series: 1, responded_to: 0 }, idx), SessionCheck::Apply);
        assert_eq!(t.register(u64::MAX, idx + 1, NO_EXPIRY), codes::OK);
        assert_eq!(t.len(), MAX_SESSIONS);
        assert_eq!(
            t.check(&SessionRef { client: 2, series: 1, responded_to: 0 }, idx + 2),
            SessionCheck::UnknownSession
        );
        assert_eq!(
            t.check(&SessionRef { client: 1, series: 2, responded_to: 1 }, idx + 3),
            SessionCheck::Apply
        );
    }

    #[test]
    fn a_plain_proposal_delivered_twice_is_applied_once() {
        let mut t = Sessions::default();
        let id = |origin, seq| ProposalId { origin, seq };
        assert_eq!(t.check_plain(id(1, 1), 10), PlainCheck::Apply);
        assert_eq!(t.check_plain(id(1, 3), 11), PlainCheck::Apply);
        assert_eq!(t.check_plain(id(1, 1), 12), PlainCheck::Duplicate);
        // Out of order within the window: applied once.
        assert_eq!(t.check_plain(id(1, 2), 13), PlainCheck::Apply);
        assert_eq!(t.check_plain(id(1, 2), 14), PlainCheck::Duplicate);
        // Another origin has its own window.
        assert_eq!(t.check_plain(id(2, 1), 15), PlainCheck::Apply);
        roundtrip(&t);
        // The window moves: 3 + PLAIN_WINDOW pushes 3 out; a copy of 3 is then too old, not applied.
        assert_eq!(t.check_plain(id(1, 3 + PLAIN_WINDOW), 16), PlainCheck::Apply);
        assert_eq!(t.check_plain(id(1, 3), 17), PlainCheck::TooOld);
        assert_eq!(t.check_plain(id(1, 4), 18), PlainCheck::Apply, "4 is still in the window");
        assert_eq!(t.check_plain(id(1, 4), 19), PlainCheck::Duplicate);
        // A jump past the whole window forgets everything before it.
        assert_eq!(t.check_plain(id(1, 10 * PLAIN_WINDOW), 20), PlainCheck::Apply);
        assert_eq!(t.check_plain(id(1, 10 * PLAIN_WINDOW - 1), 21), PlainCheck::Apply);
        roundtrip(&t);
        // Origin 2 unused for longer than its ttl: forgotten (its next proposal starts afresh).
        assert_eq!(t.check_plain(id(3, 1), 15 + ORIGIN_TTL + 1), PlainCheck::Apply);
        assert!(!t.origins.contains_key(&2));
    }

    #[test]
    fn format_1_tables_still_load() {
        // client 9, responded_to 1, one result (series 2, value 7, data "ab").
        let mut v1 = Vec::new();
        for w in [1u64, 9, 1, 1, 2, 7, 2] {
            v1.extend_from_slice(&w.to_le_bytes());
        }
        v1.extend_from_slice(b"ab");
        let mut t = Sessions::load(&mut v1.as_slice()).unwrap();
        assert_eq!(
            t.check(&at(2, 1), 50),
            SessionCheck::Duplicate(SmResult { value: 7, data: Bytes::from_static(b"ab") })
        );
        assert_eq!(t.check(&at(1, 1), 51), SessionCheck::Expired);
        roundtrip(&t);
    }
}
