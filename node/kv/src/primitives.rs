//! Bounds-checked little-endian primitives shared by the KV codec and the snapshot format.
//!
//! Invariant: every read checks the remaining length first and every length prefix is checked against a
//! limit before anything is allocated, so no input can panic the decoder or make it allocate more than
//! the input's own size.

use bytes::Bytes;

/// Why bytes could not be decoded (or a message could not be encoded within the limits).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input is empty: not even a format version byte.
    #[error("empty input")]
    Empty,
    /// The leading format version byte is not one this build reads.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// The input ended inside a field.
    #[error("truncated input: {needed} more bytes needed at offset {offset}")]
    Truncated {
        /// Where the field starts.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A tag byte names no known variant.
    #[error("unknown {what} tag {tag} at offset {offset}")]
    UnknownTag {
        /// What the tag selects (e.g. "command").
        what: &'static str,
        /// The tag read.
        tag: u8,
        /// Where the tag is.
        offset: usize,
    },
    /// A length or count is over its limit.
    #[error("{what} length {len} exceeds the limit {max}")]
    TooLong {
        /// What is too long (e.g. "key").
        what: &'static str,
        /// The length found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A boolean byte is neither 0 nor 1.
    #[error("invalid boolean byte {byte} at offset {offset}")]
    InvalidBool {
        /// The byte read.
        byte: u8,
        /// Where it is.
        offset: usize,
    },
    /// Bytes remain after a complete message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Appends fields to a buffer (little-endian, u32 length prefixes).
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(version: u8) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.push(version);
        Self { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A length-prefixed byte string. The caller has checked `b.len()` against the field's limit, which
    /// is far below `u32::MAX`.
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u32(len_u32(b.len()));
        self.buf.extend_from_slice(b);
    }

    /// A count prefix (checked by the caller like `bytes`).
    pub(crate) fn count(&mut self, n: usize) {
        self.u32(len_u32(n));
    }

    /// The message. Converted through a boxed slice: `Bytes::from(Vec)` allocates a second block (its
    /// shared header) whenever the vector has spare capacity, which a 64-byte start buffer nearly always has.
    pub(crate) fn finish(self) -> Bytes {
        Bytes::from(self.buf.into_boxed_slice())
    }
}

/// Lengths written are bounded by the limits (all < 2^32); saturate rather than wrap if one is not.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Checks a length against its limit (used by encoders before writing).
pub(crate) fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), CodecError> {
    if len > max {
        return Err(CodecError::TooLong { what, len: len as u64, max: max as u64 });
    }
    Ok(())
}

/// Reads fields from a message; byte strings are zero-copy slices of the input.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// Checks the leading version byte and positions after it.
    pub(crate) fn new(buf: Bytes, version: u8) -> Result<Self, CodecError> {
        let Some(&v) = buf.first() else {
            return Err(CodecError::Empty);
        };
        if v != version {
            return Err(CodecError::UnsupportedVersion(v));
        }
        Ok(Self { buf, pos: 1 })
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        if self.remaining() < n {
            return Err(CodecError::Truncated { offset: self.pos, needed: n - self.remaining() });
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool, CodecError> {
        let offset = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(CodecError::InvalidBool { byte, offset }),
        }
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A tag byte; `what` names the field in errors.
    pub(crate) fn tag(&mut self) -> Result<(u8, usize), CodecError> {
        let offset = self.pos;
        Ok((self.u8()?, offset))
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes(&mut self, what: &'static str, max: usize) -> Result<Bytes, CodecError> {
        let len = self.u32()? as usize;
        check_len(what, len, max)?;
        let start = self.pos;
        self.take(len)?;
        Ok(self.buf.slice(start..start + len))
    }

    /// A count prefix of at most `max` items, each at least `min_item` bytes long: the count is also
    /// checked against the bytes left, so a forged count cannot trigger a large allocation.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_item: usize,
    ) -> Result<usize, CodecError> {
        let offset = self.pos;
        let n = self.u32()? as usize;
        check_len(what, n, max)?;
        let needed = n.saturating_mul(min_item.max(1));
        if needed > self.remaining() {
            return Err(CodecError::Truncated { offset, needed: needed - self.remaining() });
        }
        Ok(n)
    }

    /// Fails unless the whole input was consumed.
    pub(crate) fn finish(self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(CodecError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_overlong_and_truncated_fields() {
        let mut w = Writer::new(1);
        w.bytes(b"abc");
        let b = w.finish();
        let mut r = Reader::new(b.clone(), 1).unwrap();
        assert!(matches!(r.bytes("key", 2), Err(CodecError::TooLong { len: 3, max: 2, .. })));
        let mut r = Reader::new(b.slice(..b.len() - 1), 1).unwrap();
        assert_eq!(r.bytes("key", 10), Err(CodecError::Truncated { offset: 5, needed: 1 }));
        assert_eq!(Reader::new(b, 2).err(), Some(CodecError::UnsupportedVersion(1)));
        assert_eq!(Reader::new(Bytes::new(), 1).err(), Some(CodecError::Empty));
    }

    #[test]
    fn forged_count_is_checked_against_remaining_bytes() {
        let mut w = Writer::new(1);
        w.u32(1000);
        w.u8(0);
        let mut r = Reader::new(w.finish(), 1).unwrap();
        assert!(matches!(r.count("ops", 5000, 4), Err(CodecError::Truncated { .. })));
    }
}
