//! Snapshot files: a header (what the snapshot covers), the compressed state (session table, then the
//! state machine's own stream) and a checksum.
//!
//! Layout (little-endian):
//! ```text
//! "DKSNAP01"                       8 bytes magic + format version
//! header_len: u32, header          group, index, term, membership, member addresses, flags
//! body                             lz4 frame: session table, then the state machine's save_snapshot stream
//! crc32c: u32                      of every byte before it
//! ```
//! Readers verify the checksum over the whole file before recovering anything from it, so a corrupt
//! snapshot is refused without touching the state machine. Files are written under a temporary name,
//! fsynced, renamed into place and the directory fsynced: a crash leaves either no file or a whole one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use drakkar_raft::{GroupId, LogIndex, Membership, ReplicaId, Term};

const MAGIC: &[u8; 8] = b"DKSNAP01";
/// Headers are read from the first `HEAD_CAP` bytes of the file.
const HEAD_CAP: usize = 1 << 20;
const MAX_HEADER: u32 = (HEAD_CAP - 12) as u32;

/// Errors reading or writing snapshot files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// I/O failure.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The file is not a valid snapshot.
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What a snapshot file covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The group.
    pub group: GroupId,
    /// Last log index included.
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
    /// Membership as of `index`.
    pub membership: Membership,
    /// Addresses of the members (and of removed members still reachable), by replica id.
    pub addresses: BTreeMap<ReplicaId, String>,
    /// Log index of the last applied membership change.
    pub conf_index: u64,
    /// Reserved for later formats: 0 (a header with any bit set is refused as corrupt).
    pub flags: u32,
}

fn put_set(out: &mut Vec<u8>, s: &std::collections::BTreeSet<ReplicaId>) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    for id in s {
        out.extend_from_slice(&id.0.to_le_bytes());
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn set(&mut self) -> Option<std::collections::BTreeSet<ReplicaId>> {
        let n = self.u32()?;
        (0..n).map(|_| self.u64().map(ReplicaId)).collect()
    }
}

impl SnapshotHeader {
    /// Encodes the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.group.0.to_le_bytes());
        out.extend_from_slice(&self.index.0.to_le_bytes());
        out.extend_from_slice(&self.term.0.to_le_bytes());
        put_set(&mut out, &self.membership.voters);
        put_set(&mut out, &self.membership.non_voters);
        put_set(&mut out, &self.membership.witnesses);
        put_set(&mut out, &self.membership.removed);
        out.extend_from_slice(&(self.addresses.len() as u32).to_le_bytes());
        for (id, a) in &self.addresses {
            out.extend_from_slice(&id.0.to_le_bytes());
            out.extend_from_slice(&(a.len() as u32).to_le_bytes());
            out.extend_from_slice(a.as_bytes());
        }
        out.extend_from_slice(&self.conf_index.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out
    }

    /// Decodes a header written by [`SnapshotHeader::encode`].
    pub fn decode(b: &[u8]) -> Option<SnapshotHeader> {
        let mut c = Cursor(b);
        let group = GroupId(c.u64()?);
        let index = LogIndex(c.u64()?);
        let term = Term(c.u64()?);
        let membership =
            Membership { voters: c.set()?, non_voters: c.set()?, witnesses: c.set()?, removed: c.set()? };
        let n = c.u32()?;
        let mut addresses = BTreeMap::new();
        for _ in 0..n {
            let id = ReplicaId(c.u64()?);
            let len = c.u32()? as usize;
            let a = String::from_utf8(c.take(len)?.to_vec()).ok()?;
            addresses.insert(id, a);
        }
        let conf_index = c.u64()?;
        let flags = c.u32()?;
        if flags != 0 {
            return None;
        }
        Some(SnapshotHeader { group, index, term, membership, addresses, conf_index, flags })
    }
}

/// A `verify` for [`crate::NodeHost::import_snapshot`] that reads the state machine's part of a snapshot
/// to its end without checking its format (what a caller that cannot check it passes).
pub fn read_through(body: &mut dyn Read) -> Result<(), crate::statemachine::SmError> {
    io::copy(body, &mut io::sink()).map(drop).map_err(crate::statemachine::SmError::Io)
}

/// A writer that checksums what passes through it.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot file at `path`: `body` writes the uncompressed state into the writer it is given.
pub fn write_snapshot(
    path: &Path,
    header: &SnapshotHeader,
    body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<u64, SnapshotError> {
    let io_err = |source| SnapshotError::Io { path: path.to_path_buf(), source };
    // A unique temporary name: two writers of the same snapshot (a closing and a restarted NodeHost) must
    // never interleave in one file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let file = File::create(&tmp).map_err(io_err)?;
    let mut w = CrcWriter { inner: BufWriter::new(file), crc: 0 };
    let h = header.encode();
    let result = (|| -> io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&(h.len() as u32).to_le_bytes())?;
        w.write_all(&h)?;
        let mut enc = lz4_flex::frame::FrameEncoder::new(&mut w);
        body(&mut enc)?;
        enc.finish().map_err(io::Error::other)?;
        let crc = w.crc;
        w.inner.write_all(&crc.to_le_bytes())?;
        let file = w.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    fs::rename(&tmp, path).map_err(io_err)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    }
    fs::metadata(path).map(|m| m.len()).map_err(io_err)
}

/// Checks a snapshot file's checksum and returns its header.
pub fn verify_snapshot(path: &Path) -> Result<SnapshotHeader, SnapshotError> {
    let io_err = |source| SnapshotError::Io { path: path.to_path_buf(), source };
    let corrupt = |reason: &str| SnapshotError::Corrupt { path: path.to_path_buf(), reason: reason.into() };
    let len = fs::metadata(path).map_err(io_err)?.len();
    if len < 16 {
        return Err(corrupt("too short"));
    }
    let mut r = BufReader::new(File::open(path).map_err(io_err)?);
    let mut crc = 0u32;
    let mut left = len - 4;
    let mut buf = vec![0u8; 64 << 10];
    let mut head = Vec::new();
    while left > 0 {
        let n = (left as usize).min(buf.len());
        r.read_exact(&mut buf[..n]).map_err(io_err)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        if head.len() < HEAD_CAP {
            let take = n.min(HEAD_CAP - head.len());
            head.extend_from_slice(&buf[..take]);
        }
        left -= n as u64;
    }
    let mut stored = [0u8; 4];
    r.read_exact(&mut stored).map_err(io_err)?;
    if u32::from_le_bytes(stored) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    read_header(&head).ok_or_else(|| corrupt("bad header"))
}

fn read_header(b: &[u8]) -> Option<SnapshotHeader> {
    if b.get(..8)? != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(b.get(8..12)?.try_into().ok()?);
    if len > MAX_HEADER {
        return None;
    }
    SnapshotHeader::decode(b.get(12..12 + len as usize)?)
}

/// Opens a verified snapshot for reading: returns its header and a reader of the decompressed body.
pub fn open_snapshot(path: &Path) -> Result<(SnapshotHeader, Box<dyn Read + Send>), SnapshotError> {
    let header = verify_snapshot(path)?;
    let io_err = |source| SnapshotError::Io { path: path.to_path_buf(), source };
    let len = fs::metadata(path).map_err(io_err)?.len();
    let mut f = File::open(path).map_err(io_err)?;
    let mut pre = [0u8; 12];
    f.read_exact(&mut pre).map_err(io_err)?;
    let hlen = u64::from(u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]));
    io::copy(&mut (&mut f).take(hlen), &mut io::sink()).map_err(io_err)?;
    let body_len = len - 12 - hlen - 4;
    let body = BufReader::new(f).take(body_len);
    Ok((header, Box::new(lz4_flex::frame::FrameDecoder::new(body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            group: GroupId(3),
            index: LogIndex(42),
            term: Term(5),
            membership: Membership::with_voters([1, 2, 3].map(ReplicaId)),
            addresses: [(ReplicaId(1), "a:1".to_string()), (ReplicaId(2), "b:2".to_string())].into(),
            conf_index: 3,
            flags: 0,
        }
    }

    #[test]
    fn roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("42.snap");
        let payload: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        write_snapshot(&path, &header(), |w| w.write_all(&payload)).unwrap();
        let (h, mut body) = open_snapshot(&path).unwrap();
        assert_eq!(h, header());
        let mut got = Vec::new();
        body.read_to_end(&mut got).unwrap();
        assert_eq!(got, payload);

        // Flip one bit anywhere: refused before anything is read.
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(open_snapshot(&path), Err(SnapshotError::Corrupt { .. })));
        fs::write(&path, &bytes[..10]).unwrap();
        assert!(open_snapshot(&path).is_err());
    }

    /// A header with reserved flag bits set (a later format, or a crafted file) is refused, whole and
    /// with a valid checksum: nothing in this format tells a reader to skip the state machine's data.
    #[test]
    fn reserved_flags_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("42.snap");
        let flagged = SnapshotHeader { flags: 1, ..header() };
        assert_eq!(SnapshotHeader::decode(&header().encode()), Some(header()));
        assert_eq!(SnapshotHeader::decode(&flagged.encode()), None);
        write_snapshot(&path, &flagged, |w| w.write_all(b"data")).unwrap();
        assert!(open_snapshot(&path).is_err());
        assert!(verify_snapshot(&path).is_err());
    }
}
