//! The binary codec of the KV messages (layout in the [`kv`](super) module documentation): the
//! `encode` / `decode` methods of [`Command`], [`Query`], [`CommandResult`] and [`QueryResult`].

use bytes::Bytes;

use super::command::limits::*;
use super::command::{
    CasExpect, CasNew, Command, CommandResult, Compare, CompareOp, CompareTarget, FORMAT_VERSION, KeyMeta,
    KeyRange, KeyValue, Op, OpResult, Query, QueryResult, Txn,
};
use super::primitives::{CodecError, Reader, Writer, check_len};

// Tags. Invariant: a tag value is never reused for another meaning within one FORMAT_VERSION.
const T_PUT: u8 = 1;
const T_DELETE: u8 = 2;
const T_DELETE_RANGE: u8 = 3;
const T_CAS: u8 = 4;
const T_TXN: u8 = 5;
const T_REJECTED: u8 = 6;
const T_OP_GET: u8 = 4;
const T_Q_GET: u8 = 1;
const T_Q_SCAN: u8 = 2;
const T_RANGE_PREFIX: u8 = 0;
const T_RANGE_SPAN: u8 = 1;

/// Smallest encodings, used to bound forged counts: a byte string is at least its 4-byte length.
const MIN_COMPARE: usize = 4 + 1 + 1 + 1;
const MIN_OP: usize = 1 + 4;
const MIN_OP_RESULT: usize = 1 + 1;
const MIN_KV: usize = 4 + 4 + 24;

fn put_key(w: &mut Writer, key: &[u8]) -> Result<(), CodecError> {
    check_len("key", key.len(), MAX_KEY_LEN)?;
    w.bytes(key);
    Ok(())
}

fn put_value(w: &mut Writer, value: &[u8]) -> Result<(), CodecError> {
    check_len("value", value.len(), MAX_VALUE_LEN)?;
    w.bytes(value);
    Ok(())
}

fn get_key(r: &mut Reader) -> Result<Bytes, CodecError> {
    r.bytes("key", MAX_KEY_LEN)
}

fn get_value(r: &mut Reader) -> Result<Bytes, CodecError> {
    r.bytes("value", MAX_VALUE_LEN)
}

fn put_range(w: &mut Writer, range: &KeyRange) -> Result<(), CodecError> {
    match range {
        KeyRange::Prefix(p) => {
            w.u8(T_RANGE_PREFIX);
            put_key(w, p)
        }
        KeyRange::Span { start, end } => {
            w.u8(T_RANGE_SPAN);
            put_key(w, start)?;
            w.bool(end.is_some());
            match end {
                Some(e) => put_key(w, e),
                None => Ok(()),
            }
        }
    }
}

fn get_range(r: &mut Reader) -> Result<KeyRange, CodecError> {
    match r.tag()? {
        (T_RANGE_PREFIX, _) => Ok(KeyRange::Prefix(get_key(r)?)),
        (T_RANGE_SPAN, _) => {
            let start = get_key(r)?;
            let end = if r.bool()? { Some(get_key(r)?) } else { None };
            Ok(KeyRange::Span { start, end })
        }
        (tag, offset) => Err(CodecError::UnknownTag { what: "range", tag, offset }),
    }
}

fn put_op(w: &mut Writer, op: &Op) -> Result<(), CodecError> {
    match op {
        Op::Put { key, value } => {
            w.u8(T_PUT);
            put_key(w, key)?;
            put_value(w, value)
        }
        Op::Delete { key } => {
            w.u8(T_DELETE);
            put_key(w, key)
        }
        Op::DeleteRange { range } => {
            w.u8(T_DELETE_RANGE);
            put_range(w, range)
        }
        Op::Get { key } => {
            w.u8(T_OP_GET);
            put_key(w, key)
        }
    }
}

fn get_op(r: &mut Reader) -> Result<Op, CodecError> {
    Ok(match r.tag()? {
        (T_PUT, _) => Op::Put { key: get_key(r)?, value: get_value(r)? },
        (T_DELETE, _) => Op::Delete { key: get_key(r)? },
        (T_DELETE_RANGE, _) => Op::DeleteRange { range: get_range(r)? },
        (T_OP_GET, _) => Op::Get { key: get_key(r)? },
        (tag, offset) => {
            return Err(CodecError::UnknownTag { what: "txn op", tag, offset });
        }
    })
}

fn put_ops(w: &mut Writer, ops: &[Op]) -> Result<(), CodecError> {
    check_len("txn branch", ops.len(), MAX_TXN_OPS)?;
    w.count(ops.len());
    ops.iter().try_for_each(|op| put_op(w, op))
}

fn get_ops(r: &mut Reader) -> Result<Vec<Op>, CodecError> {
    let n = r.count("txn branch", MAX_TXN_OPS, MIN_OP)?;
    (0..n).map(|_| get_op(r)).collect()
}

fn put_compare(w: &mut Writer, c: &Compare) -> Result<(), CodecError> {
    put_key(w, &c.key)?;
    w.u8(match c.op {
        CompareOp::Eq => 0,
        CompareOp::Ne => 1,
        CompareOp::Lt => 2,
        CompareOp::Gt => 3,
    });
    match &c.target {
        CompareTarget::Value(v) => {
            w.u8(1);
            put_value(w, v)?;
        }
        CompareTarget::Version(n) => {
            w.u8(2);
            w.u64(*n);
        }
        CompareTarget::ModIndex(n) => {
            w.u8(3);
            w.u64(*n);
        }
        CompareTarget::CreateIndex(n) => {
            w.u8(4);
            w.u64(*n);
        }
        CompareTarget::Exists(b) => {
            w.u8(5);
            w.bool(*b);
        }
    }
    Ok(())
}

fn get_compare(r: &mut Reader) -> Result<Compare, CodecError> {
    let key = get_key(r)?;
    let op = match r.tag()? {
        (0, _) => CompareOp::Eq,
        (1, _) => CompareOp::Ne,
        (2, _) => CompareOp::Lt,
        (3, _) => CompareOp::Gt,
        (tag, offset) => {
            return Err(CodecError::UnknownTag { what: "compare op", tag, offset });
        }
    };
    let target = match r.tag()? {
        (1, _) => CompareTarget::Value(get_value(r)?),
        (2, _) => CompareTarget::Version(r.u64()?),
        (3, _) => CompareTarget::ModIndex(r.u64()?),
        (4, _) => CompareTarget::CreateIndex(r.u64()?),
        (5, _) => CompareTarget::Exists(r.bool()?),
        (tag, offset) => {
            return Err(CodecError::UnknownTag { what: "compare target", tag, offset });
        }
    };
    Ok(Compare { key, op, target })
}

impl Command {
    /// A put.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self::Put { key: key.into(), value: value.into() }
    }

    /// A delete.
    pub fn delete(key: impl Into<Bytes>) -> Self {
        Self::Delete { key: key.into() }
    }

    /// Encodes the command; fails when a length is over its limit.
    pub fn encode(&self) -> Result<Bytes, CodecError> {
        let mut w = Writer::new(FORMAT_VERSION);
        match self {
            Self::Put { key, value } => {
                w.u8(T_PUT);
                put_key(&mut w, key)?;
                put_value(&mut w, value)?;
            }
            Self::Delete { key } => {
                w.u8(T_DELETE);
                put_key(&mut w, key)?;
            }
            Self::DeleteRange { range } => {
                w.u8(T_DELETE_RANGE);
                put_range(&mut w, range)?;
            }
            Self::CompareAndSwap { key, expected, new } => {
                w.u8(T_CAS);
                put_key(&mut w, key)?;
                match expected {
                    CasExpect::Absent => w.u8(0),
                    CasExpect::Value(v) => {
                        w.u8(1);
                        put_value(&mut w, v)?;
                    }
                    CasExpect::Version(n) => {
                        w.u8(2);
                        w.u64(*n);
                    }
                }
                match new {
                    CasNew::Delete => w.u8(0),
                    CasNew::Put(v) => {
                        w.u8(1);
                        put_value(&mut w, v)?;
                    }
                }
            }
            Self::Txn(txn) => {
                w.u8(T_TXN);
                check_len("txn compares", txn.compares.len(), MAX_TXN_COMPARES)?;
                w.count(txn.compares.len());
                for c in &txn.compares {
                    put_compare(&mut w, c)?;
                }
                put_ops(&mut w, &txn.success)?;
                put_ops(&mut w, &txn.failure)?;
            }
        }
        Ok(w.finish())
    }

    /// Decodes a command (copies `buf`; see [`Command::decode_shared`] to slice instead).
    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        Self::decode_shared(&Bytes::copy_from_slice(buf))
    }

    /// Decodes a command; keys and values are zero-copy slices of `buf`.
    pub fn decode_shared(buf: &Bytes) -> Result<Self, CodecError> {
        let mut r = Reader::new(buf.clone(), FORMAT_VERSION)?;
        let cmd = match r.tag()? {
            (T_PUT, _) => Self::Put { key: get_key(&mut r)?, value: get_value(&mut r)? },
            (T_DELETE, _) => Self::Delete { key: get_key(&mut r)? },
            (T_DELETE_RANGE, _) => Self::DeleteRange { range: get_range(&mut r)? },
            (T_CAS, _) => {
                let key = get_key(&mut r)?;
                let expected = match r.tag()? {
                    (0, _) => CasExpect::Absent,
                    (1, _) => CasExpect::Value(get_value(&mut r)?),
                    (2, _) => CasExpect::Version(r.u64()?),
                    (tag, offset) => {
                        return Err(CodecError::UnknownTag { what: "cas expectation", tag, offset });
                    }
                };
                let new = match r.tag()? {
                    (0, _) => CasNew::Delete,
                    (1, _) => CasNew::Put(get_value(&mut r)?),
                    (tag, offset) => {
                        return Err(CodecError::UnknownTag { what: "cas write", tag, offset });
                    }
                };
                Self::CompareAndSwap { key, expected, new }
            }
            (T_TXN, _) => {
                let n = r.count("txn compares", MAX_TXN_COMPARES, MIN_COMPARE)?;
                let compares = (0..n).map(|_| get_compare(&mut r)).collect::<Result<_, _>>()?;
                let success = get_ops(&mut r)?;
                let failure = get_ops(&mut r)?;
                Self::Txn(Txn { compares, success, failure })
            }
            (tag, offset) => {
                return Err(CodecError::UnknownTag { what: "command", tag, offset });
            }
        };
        r.finish()?;
        Ok(cmd)
    }
}

impl Query {
    /// A read of one key.
    pub fn get(key: impl Into<Bytes>) -> Self {
        Self::Get { key: key.into() }
    }

    /// Encodes the query; fails when a length is over its limit.
    pub fn encode(&self) -> Result<Bytes, CodecError> {
        let mut w = Writer::new(FORMAT_VERSION);
        match self {
            Self::Get { key } => {
                w.u8(T_Q_GET);
                put_key(&mut w, key)?;
            }
            Self::Scan { range, limit, keys_only } => {
                w.u8(T_Q_SCAN);
                put_range(&mut w, range)?;
                w.u32(*limit);
                w.bool(*keys_only);
            }
        }
        Ok(w.finish())
    }

    /// Decodes a query.
    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(Bytes::copy_from_slice(buf), FORMAT_VERSION)?;
        let q = match r.tag()? {
            (T_Q_GET, _) => Self::Get { key: get_key(&mut r)? },
            (T_Q_SCAN, _) => Self::Scan { range: get_range(&mut r)?, limit: r.u32()?, keys_only: r.bool()? },
            (tag, offset) => {
                return Err(CodecError::UnknownTag { what: "query", tag, offset });
            }
        };
        r.finish()?;
        Ok(q)
    }
}

fn put_meta(w: &mut Writer, m: &KeyMeta) {
    w.u64(m.version);
    w.u64(m.mod_index);
    w.u64(m.create_index);
}

fn get_meta(r: &mut Reader) -> Result<KeyMeta, CodecError> {
    Ok(KeyMeta { version: r.u64()?, mod_index: r.u64()?, create_index: r.u64()? })
}

fn put_opt_meta(w: &mut Writer, m: &Option<KeyMeta>) {
    w.bool(m.is_some());
    if let Some(m) = m {
        put_meta(w, m);
    }
}

fn get_opt_meta(r: &mut Reader) -> Result<Option<KeyMeta>, CodecError> {
    Ok(if r.bool()? { Some(get_meta(r)?) } else { None })
}

// Results hold keys and values that passed the limits on their way in, so encoding them cannot fail.
fn put_kv(w: &mut Writer, kv: &KeyValue) {
    w.bytes(&kv.key);
    w.bytes(&kv.value);
    put_meta(w, &kv.meta);
}

fn get_kv(r: &mut Reader) -> Result<KeyValue, CodecError> {
    Ok(KeyValue { key: get_key(r)?, value: get_value(r)?, meta: get_meta(r)? })
}

fn put_opt_kv(w: &mut Writer, kv: &Option<KeyValue>) {
    w.bool(kv.is_some());
    if let Some(kv) = kv {
        put_kv(w, kv);
    }
}

fn get_opt_kv(r: &mut Reader) -> Result<Option<KeyValue>, CodecError> {
    Ok(if r.bool()? { Some(get_kv(r)?) } else { None })
}

fn put_op_result(w: &mut Writer, res: &OpResult) {
    match res {
        OpResult::Put { prev, new } => {
            w.u8(T_PUT);
            put_opt_meta(w, prev);
            put_meta(w, new);
        }
        OpResult::Delete { prev } => {
            w.u8(T_DELETE);
            put_opt_meta(w, prev);
        }
        OpResult::DeleteRange { deleted } => {
            w.u8(T_DELETE_RANGE);
            w.u64(*deleted);
        }
        OpResult::Get(kv) => {
            w.u8(T_OP_GET);
            put_opt_kv(w, kv);
        }
    }
}

fn get_op_result(r: &mut Reader) -> Result<OpResult, CodecError> {
    Ok(match r.tag()? {
        (T_PUT, _) => OpResult::Put { prev: get_opt_meta(r)?, new: get_meta(r)? },
        (T_DELETE, _) => OpResult::Delete { prev: get_opt_meta(r)? },
        (T_DELETE_RANGE, _) => OpResult::DeleteRange { deleted: r.u64()? },
        (T_OP_GET, _) => OpResult::Get(get_opt_kv(r)?),
        (tag, offset) => {
            return Err(CodecError::UnknownTag { what: "op result", tag, offset });
        }
    })
}

impl CommandResult {
    /// Encodes the result.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new(FORMAT_VERSION);
        match self {
            Self::Put { prev, new } => put_op_result(&mut w, &OpResult::Put { prev: *prev, new: *new }),
            Self::Delete { prev } => put_op_result(&mut w, &OpResult::Delete { prev: *prev }),
            Self::DeleteRange { deleted } => {
                put_op_result(&mut w, &OpResult::DeleteRange { deleted: *deleted });
            }
            Self::CompareAndSwap { succeeded, prev } => {
                w.u8(T_CAS);
                w.bool(*succeeded);
                put_opt_kv(&mut w, prev);
            }
            Self::Txn { succeeded, results } => {
                w.u8(T_TXN);
                w.bool(*succeeded);
                w.count(results.len());
                for res in results {
                    put_op_result(&mut w, res);
                }
            }
            Self::Rejected { reason } => {
                w.u8(T_REJECTED);
                w.bytes(truncate_utf8(reason, MAX_REASON_LEN).as_bytes());
            }
        }
        w.finish()
    }

    /// Decodes a result.
    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(Bytes::copy_from_slice(buf), FORMAT_VERSION)?;
        let res = match r.tag()? {
            (T_PUT, _) => Self::Put { prev: get_opt_meta(&mut r)?, new: get_meta(&mut r)? },
            (T_DELETE, _) => Self::Delete { prev: get_opt_meta(&mut r)? },
            (T_DELETE_RANGE, _) => Self::DeleteRange { deleted: r.u64()? },
            (T_CAS, _) => Self::CompareAndSwap { succeeded: r.bool()?, prev: get_opt_kv(&mut r)? },
            (T_TXN, _) => {
                let succeeded = r.bool()?;
                let n = r.count("txn results", MAX_RESULT_ITEMS, MIN_OP_RESULT)?;
                let results = (0..n).map(|_| get_op_result(&mut r)).collect::<Result<_, _>>()?;
                Self::Txn { succeeded, results }
            }
            (T_REJECTED, _) => {
                // Each byte that is no UTF-8 becomes U+FFFD (3 bytes): cut back to the limit the encoder
                // keeps, or the value would not survive its own re-encoding.
                let reason = String::from_utf8_lossy(&r.bytes("reason", MAX_REASON_LEN)?).into_owned();
                Self::Rejected { reason: truncate_utf8(&reason, MAX_REASON_LEN).to_owned() }
            }
            (tag, offset) => {
                return Err(CodecError::UnknownTag { what: "command result", tag, offset });
            }
        };
        r.finish()?;
        Ok(res)
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1; // 0 is a boundary: terminates
    }
    &s[..end]
}

impl QueryResult {
    /// Encodes the result.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new(FORMAT_VERSION);
        match self {
            Self::Get(kv) => {
                w.u8(T_Q_GET);
                put_opt_kv(&mut w, kv);
            }
            Self::Scan { items, more } => {
                w.u8(T_Q_SCAN);
                w.count(items.len());
                for kv in items {
                    put_kv(&mut w, kv);
                }
                w.bool(*more);
            }
        }
        w.finish()
    }

    /// Decodes a result.
    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(Bytes::copy_from_slice(buf), FORMAT_VERSION)?;
        let res = match r.tag()? {
            (T_Q_GET, _) => Self::Get(get_opt_kv(&mut r)?),
            (T_Q_SCAN, _) => {
                let n = r.count("scan items", MAX_RESULT_ITEMS, MIN_KV)?;
                let items = (0..n).map(|_| get_kv(&mut r)).collect::<Result<_, _>>()?;
                Self::Scan { items, more: r.bool()? }
            }
            (tag, offset) => {
                return Err(CodecError::UnknownTag { what: "query result", tag, offset });
            }
        };
        r.finish()?;
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::limits::{MAX_KEY_LEN, MAX_REASON_LEN};

    #[test]
    fn put_layout_is_stable() {
        let b = Command::put("k", "vv").encode().unwrap();
        assert_eq!(&b[..], b"\x01\x01\x01\x00\x00\x00k\x02\x00\x00\x00vv");
    }

    #[test]
    fn encode_refuses_overlong_key() {
        let key = vec![0u8; MAX_KEY_LEN + 1];
        assert!(matches!(Command::delete(key).encode(), Err(CodecError::TooLong { what: "key", .. })));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut b = Query::get("k").encode().unwrap().to_vec();
        b.push(0);
        assert_eq!(Query::decode(&b), Err(CodecError::TrailingBytes(1)));
    }

    /// A reason of bytes that are no UTF-8 decodes (lossily) within the limit, so that it re-encodes to
    /// what decodes the same (found by the `kv_codec` fuzz target's round trip).
    #[test]
    fn a_reason_that_is_no_utf8_survives_the_round_trip() {
        let mut buf = vec![FORMAT_VERSION, T_REJECTED];
        buf.extend_from_slice(&(MAX_REASON_LEN as u32).to_le_bytes());
        buf.extend(std::iter::repeat_n(0xFF, MAX_REASON_LEN));
        let decoded = CommandResult::decode(&buf).unwrap();
        let CommandResult::Rejected { reason } = &decoded else { panic!("{decoded:?}") };
        assert!(reason.len() <= MAX_REASON_LEN && reason.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
        assert_eq!(CommandResult::decode(&decoded.encode()).unwrap(), decoded);
    }

    #[test]
    fn rejection_reason_is_truncated_on_a_char_boundary() {
        let reason = "é".repeat(MAX_REASON_LEN);
        let res = CommandResult::Rejected { reason };
        let back = CommandResult::decode(&res.encode()).unwrap();
        let CommandResult::Rejected { reason } = back else {
            panic!("not a rejection: {back:?}");
        };
        assert_eq!(reason.len(), MAX_REASON_LEN);
    }
}
