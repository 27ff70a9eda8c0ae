//! The host's framing of a Raft entry's payload: who proposed it (so the proposer can be answered) and,
//! for session proposals, the client session's ids (so a retried proposal is applied once).
//!
//! Layout (little-endian): `kind: u8`, then by kind:
//! - `PLAIN` (1): `key: u64`, command bytes (written before plain proposals carried an id; never
//!   deduplicated).
//! - `PLAIN_ID` (5): `key: u64`, `origin: u64`, `seq: u64`, command bytes: a plain proposal with its
//!   [`ProposalId`], so a copy delivered twice is applied once (see [`crate::session`]).
//! - `SESSION` (2): `key: u64`, `client: u64`, `series: u64`, `responded_to: u64`, command bytes.
//! - `REGISTER` (3): `key: u64`, `client: u64`, then `ttl: u64` (the session's time-to-live in log
//!   entries; absent in entries written before sessions expired: never expires).
//! - `UNREGISTER` (4): `key: u64`, `client: u64`.
//!
//! An empty payload is the no-op a new leader appends. Anything else that does not decode is applied as
//! a no-op on every replica alike (never a crash).

use bytes::{BufMut, Bytes, BytesMut};

const PLAIN: u8 = 1;
const SESSION: u8 = 2;
const REGISTER: u8 = 3;
const UNREGISTER: u8 = 4;
const PLAIN_ID: u8 = 5;

/// The identity of a plain (session-less) proposal: the proposing replica's origin (random, new at every
/// start of the replica) and a sequence number per origin, from 1. Two entries with one id are one
/// proposal delivered twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposalId {
    /// The proposing replica's origin (one per start of a replica).
    pub origin: u64,
    /// Consecutive per origin.
    pub seq: u64,
}

/// A client session's identity and the position of one proposal in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRef {
    /// The session (client) id, chosen at random by the client when it registers.
    pub client: u64,
    /// This proposal's series id: consecutive per session, starting at 1.
    pub series: u64,
    /// Every series id up to this one has been answered to the client: their results may be forgotten.
    pub responded_to: u64,
}

/// A decoded entry payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A command outside any session (at-least-once if retried).
    Plain {
        /// Proposal key (0: nobody waits for it).
        key: u64,
        /// Its identity (None in entries written before plain proposals carried one).
        id: Option<ProposalId>,
        /// The command.
        cmd: Bytes,
    },
    /// A command in a client session (exactly-once).
    Session {
        /// Proposal key.
        key: u64,
        /// Session position.
        session: SessionRef,
        /// The command.
        cmd: Bytes,
    },
    /// Opens a session.
    Register {
        /// Proposal key.
        key: u64,
        /// The client id.
        client: u64,
        /// Log entries without use after which the session expires
        /// ([`crate::session::NO_EXPIRY`]: never).
        ttl: u64,
    },
    /// Closes a session.
    Unregister {
        /// Proposal key.
        key: u64,
        /// The client id.
        client: u64,
    },
    /// The empty entry of a new leader, or an undecodable payload.
    Noop,
}

impl Payload {
    /// The proposal key, if someone may be waiting for this entry.
    pub fn key(&self) -> u64 {
        match self {
            Payload::Plain { key, .. }
            | Payload::Session { key, .. }
            | Payload::Register { key, .. }
            | Payload::Unregister { key, .. } => *key,
            Payload::Noop => 0,
        }
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(41 + self.cmd_len());
        match self {
            Payload::Plain { key, id: None, cmd } => {
                b.put_u8(PLAIN);
                b.put_u64_le(*key);
                b.put_slice(cmd);
            }
            Payload::Plain { key, id: Some(id), cmd } => {
                b.put_u8(PLAIN_ID);
                b.put_u64_le(*key);
                b.put_u64_le(id.origin);
                b.put_u64_le(id.seq);
                b.put_slice(cmd);
            }
            Payload::Session { key, session, cmd } => {
                b.put_u8(SESSION);
                b.put_u64_le(*key);
                b.put_u64_le(session.client);
                b.put_u64_le(session.series);
                b.put_u64_le(session.responded_to);
                b.put_slice(cmd);
            }
            Payload::Register { key, client, ttl } => {
                b.put_u8(REGISTER);
                b.put_u64_le(*key);
                b.put_u64_le(*client);
                b.put_u64_le(*ttl);
            }
            Payload::Unregister { key, client } => {
                b.put_u8(UNREGISTER);
                b.put_u64_le(*key);
                b.put_u64_le(*client);
            }
            Payload::Noop => {}
        }
        b.freeze()
    }

    fn cmd_len(&self) -> usize {
        match self {
            Payload::Plain { cmd, .. } | Payload::Session { cmd, .. } => cmd.len(),
            _ => 0,
        }
    }

    /// Decodes a payload; anything malformed is a [`Payload::Noop`].
    pub fn decode(data: &Bytes) -> Payload {
        let word = |i: usize| -> Option<u64> {
            data.get(1 + 8 * i..9 + 8 * i).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes)
        };
        let parsed = match data.first() {
            Some(&PLAIN) => word(0).map(|key| Payload::Plain { key, id: None, cmd: data.slice(9..) }),
            Some(&PLAIN_ID) => match (word(0), word(1), word(2)) {
                (Some(key), Some(origin), Some(seq)) => {
                    Some(Payload::Plain { key, id: Some(ProposalId { origin, seq }), cmd: data.slice(25..) })
                }
                _ => None,
            },
            Some(&SESSION) => match (word(0), word(1), word(2), word(3)) {
                (Some(key), Some(client), Some(series), Some(responded_to)) => Some(Payload::Session {
                    key,
                    session: SessionRef { client, series, responded_to },
                    cmd: data.slice(33..),
                }),
                _ => None,
            },
            Some(&REGISTER) => word(0).zip(word(1)).map(|(key, client)| Payload::Register {
                key,
                client,
                ttl: word(2).unwrap_or(crate::session::NO_EXPIRY),
            }),
            Some(&UNREGISTER) => {
                word(0).zip(word(1)).map(|(key, client)| Payload::Unregister { key, client })
            }
            _ => None,
        };
        parsed.unwrap_or(Payload::Noop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip() {
        let cases = [
            Payload::Plain { key: 7, id: None, cmd: Bytes::from_static(b"put") },
            Payload::Plain {
                key: 7,
                id: Some(ProposalId { origin: 3, seq: 9 }),
                cmd: Bytes::from_static(b"put"),
            },
            Payload::Session {
                key: 9,
                session: SessionRef { client: 1, series: 2, responded_to: 1 },
                cmd: Bytes::from_static(b"x"),
            },
            Payload::Register { key: 3, client: 44, ttl: 1_000 },
            Payload::Unregister { key: 4, client: 44 },
        ];
        for p in cases {
            assert_eq!(Payload::decode(&p.encode()), p);
        }
        assert_eq!(Payload::decode(&Bytes::new()), Payload::Noop);
        // A registration written before sessions expired has no ttl: it never expires.
        let mut old = vec![REGISTER];
        old.extend_from_slice(&3u64.to_le_bytes());
        old.extend_from_slice(&44u64.to_le_bytes());
        assert_eq!(
            Payload::decode(&Bytes::from(old)),
            Payload::Register { key: 3, client: 44, ttl: crate::session::NO_EXPIRY }
        );
    }

    proptest! {
        #[test]
        fn garbage_is_noop_or_valid(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let p = Payload::decode(&Bytes::from(data));
            if p != Payload::Noop {
                prop_assert_eq!(Payload::decode(&p.encode()), p);
            }
        }
    }
}
