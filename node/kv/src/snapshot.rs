//! The KV snapshot stream, shared by [`MemKv`](super::MemKv) and [`DiskKv`](super::DiskKv).
//!
//! Written and read record by record: neither side holds the whole snapshot in a buffer. The layout is in
//! the [`kv`](super) module documentation. The reader checks the magic, the version, the limits, that
//! keys strictly ascend, the record count and the CRC-32C; callers apply nothing until
//! the reader has returned `Ok(None)` (trailer verified).

use std::io::{self, BufReader, BufWriter, Read, Write};

use bytes::Bytes;

use super::command::limits::{MAX_KEY_LEN, MAX_VALUE_LEN};
use super::command::{KeyMeta, KeyValue};

/// The first bytes of a KV snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"DKVS";
/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_VERSION: u8 = 1;

const TAG_END: u8 = 0;
const TAG_RECORD: u8 = 1;

/// Why a snapshot stream was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing the stream failed.
    #[error("snapshot I/O: {0}")]
    Io(#[from] io::Error),
    /// The stream ended before its trailer.
    #[error("snapshot truncated")]
    Truncated,
    /// The stream does not start with [`SNAPSHOT_MAGIC`].
    #[error("not a KV snapshot (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported KV snapshot version {0}")]
    UnsupportedVersion(u8),
    /// A record tag that is neither a record nor the end.
    #[error("unknown snapshot record tag {0}")]
    UnknownTag(u8),
    /// A key or value over its limit.
    #[error("snapshot {what} length {len} exceeds the limit {max}")]
    TooLong {
        /// "key" or "value".
        what: &'static str,
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Keys are not in strictly ascending order.
    #[error("snapshot keys out of order")]
    KeyOrder,
    /// The trailer's record count differs from the records read.
    #[error("snapshot holds {actual} records but its trailer says {expected}")]
    CountMismatch {
        /// From the trailer.
        expected: u64,
        /// Records read.
        actual: u64,
    },
    /// The CRC-32C does not match.
    #[error("snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// From the trailer.
        stored: u32,
        /// Over the bytes read.
        computed: u32,
    },
}

/// Streams a snapshot: header, records in ascending key order, trailer.
pub(crate) struct SnapshotWriter<W: Write> {
    w: BufWriter<W>,
    crc: u32,
    count: u64,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the header for a state that has applied the log up to `applied`.
    pub(crate) fn new(w: W, applied: u64) -> io::Result<Self> {
        let mut s = Self { w: BufWriter::with_capacity(64 * 1024, w), crc: 0, count: 0 };
        s.put(&SNAPSHOT_MAGIC)?;
        s.put(&[SNAPSHOT_VERSION])?;
        s.put(&applied.to_le_bytes())?;
        Ok(s)
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.w.write_all(b)
    }

    /// Writes one key. Callers pass keys in strictly ascending order, within the limits.
    pub(crate) fn record(&mut self, key: &[u8], meta: &KeyMeta, value: &[u8]) -> io::Result<()> {
        self.put(&[TAG_RECORD])?;
        self.put(&len_u32(key.len())?.to_le_bytes())?;
        self.put(key)?;
        self.put(&meta.version.to_le_bytes())?;
        self.put(&meta.mod_index.to_le_bytes())?;
        self.put(&meta.create_index.to_le_bytes())?;
        self.put(&len_u32(value.len())?.to_le_bytes())?;
        self.put(value)?;
        self.count += 1;
        Ok(())
    }

    /// Writes the trailer and flushes.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.put(&[TAG_END])?;
        let count = self.count;
        self.put(&count.to_le_bytes())?;
        let crc = self.crc;
        self.w.write_all(&crc.to_le_bytes())?;
        self.w.flush()
    }
}

fn len_u32(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length over 4 GiB"))
}

/// Reads a snapshot record by record, verifying it as it goes.
pub(crate) struct SnapshotReader<R: Read> {
    r: BufReader<R>,
    crc: u32,
    count: u64,
    applied: u64,
    last_key: Option<Bytes>,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header.
    pub(crate) fn new(r: R) -> Result<Self, SnapshotError> {
        let mut s =
            Self { r: BufReader::with_capacity(64 * 1024, r), crc: 0, count: 0, applied: 0, last_key: None };
        if s.array::<4>()? != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let [version] = s.array::<1>()?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        s.applied = u64::from_le_bytes(s.array()?);
        Ok(s)
    }

    /// The log index the snapshot's state has applied.
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
            _ => SnapshotError::Io(e),
        })?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length-prefixed string; the length is checked before allocating.
    fn bytes(&mut self, what: &'static str, max: usize) -> Result<Bytes, SnapshotError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        if len > max {
            return Err(SnapshotError::TooLong { what, len, max });
        }
        let mut v = vec![0u8; len];
        self.fill(&mut v)?;
        Ok(Bytes::from(v))
    }

    /// The next record, or `None` once the trailer has been read and verified. After an error the
    /// stream is unusable and nothing read from it may be applied.
    pub(crate) fn next_record(&mut self) -> Result<Option<KeyValue>, SnapshotError> {
        match self.array::<1>()? {
            [TAG_RECORD] => {}
            [TAG_END] => {
                let expected = self.u64()?;
                let computed = self.crc;
                let mut stored = [0u8; 4];
                self.r.read_exact(&mut stored).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
                    _ => SnapshotError::Io(e),
                })?;
                let stored = u32::from_le_bytes(stored);
                if stored != computed {
                    return Err(SnapshotError::Checksum { stored, computed });
                }
                if expected != self.count {
                    return Err(SnapshotError::CountMismatch { expected, actual: self.count });
                }
                return Ok(None);
            }
            [tag] => return Err(SnapshotError::UnknownTag(tag)),
        }
        let key = self.bytes("key", MAX_KEY_LEN)?;
        if self.last_key.as_ref().is_some_and(|last| key <= *last) {
            return Err(SnapshotError::KeyOrder);
        }
        let meta = KeyMeta { version: self.u64()?, mod_index: self.u64()?, create_index: self.u64()? };
        let value = self.bytes("value", MAX_VALUE_LEN)?;
        self.count += 1;
        self.last_key = Some(key.clone());
        Ok(Some(KeyValue { key, value, meta }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = SnapshotWriter::new(&mut out, 7).unwrap();
        let m = KeyMeta { version: 1, mod_index: 2, create_index: 2 };
        w.record(b"a", &m, b"1").unwrap();
        w.record(b"b", &m, b"22").unwrap();
        w.finish().unwrap();
        out
    }

    fn read_all(b: &[u8]) -> Result<(u64, Vec<KeyValue>), SnapshotError> {
        let mut r = SnapshotReader::new(b)?;
        let mut items = Vec::new();
        while let Some(kv) = r.next_record()? {
            items.push(kv);
        }
        Ok((r.applied(), items))
    }

    #[test]
    fn round_trip() {
        let (applied, items) = read_all(&sample()).unwrap();
        assert_eq!(applied, 7);
        assert_eq!(items.len(), 2);
        assert_eq!(&items[1].value[..], b"22");
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused() {
        let good = sample();
        for cut in 0..good.len() {
            assert!(read_all(&good[..cut]).is_err(), "cut at {cut} accepted");
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert!(read_all(&bad).is_err(), "flip {i}:{bit} accepted");
            }
        }
    }

    #[test]
    fn unordered_keys_are_refused() {
        let mut out = Vec::new();
        let mut w = SnapshotWriter::new(&mut out, 1).unwrap();
        w.record(b"b", &KeyMeta::default(), b"").unwrap();
        w.record(b"a", &KeyMeta::default(), b"").unwrap();
        w.finish().unwrap();
        assert!(matches!(read_all(&out), Err(SnapshotError::KeyOrder)));
    }

    #[test]
    fn overlong_key_is_refused_before_allocating() {
        let mut b = Vec::from(SNAPSHOT_MAGIC);
        b.push(SNAPSHOT_VERSION);
        b.extend_from_slice(&0u64.to_le_bytes());
        b.push(TAG_RECORD);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_all(&b), Err(SnapshotError::TooLong { what: "key", .. })));
    }
}
