//! The byte layout of segments and record frames (see `docs/formats.md`). Little-endian everywhere.
//!
//! ```text
//! segment := header(32) frame*
//! frame   := header_crc u32 | len u32 | type u8 | 0 u8 ×3 | seq u64 | payload[len] | payload_crc u32 | END u32
//! ```
//! `header_crc` covers bytes 4..20 of the frame; `payload_crc` covers the payload. Both are CRC-32C seeded
//! with the segment's salt, so a frame copied from another segment (or embedded in user data) never
//! validates. `END` is a non-zero constant: a frame whose last bytes are zero was never completely written.

use std::ops::Range;

/// Magic bytes that open every segment.
pub const MAGIC: [u8; 8] = *b"DRKLOGDB";
/// The format version this code writes.
pub const VERSION: u32 = 1;
/// Size of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Size of a frame's header.
pub const FRAME_HEADER_LEN: usize = 20;
/// Size of a frame's footer.
pub const FRAME_FOOTER_LEN: usize = 8;
/// Header plus footer.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + FRAME_FOOTER_LEN;
/// The last four bytes of every frame.
pub const END_MARK: u32 = 0x4B52_4445; // "EDRK" little-endian
/// Largest payload of one frame. Keeps every file offset of a segment below 4 GiB.
pub const MAX_PAYLOAD: usize = 1 << 30;
/// Largest segment size limit accepted by the options.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// Record types.
pub mod record_type {
    /// A batch of per-group updates.
    pub const BATCH: u8 = 1;
    /// The metadata of every group, first record of each segment.
    pub const CHECKPOINT: u8 = 2;
}

/// The CRC-32C of `data`, seeded with `salt`.
pub fn crc(salt: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(salt, data)
}

/// Reads a little-endian `u32` at `at` (caller checked the bounds).
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Reads a little-endian `u64` at `at` (caller checked the bounds).
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The file name of segment `number`.
pub fn segment_name(number: u64) -> String {
    format!("{number:020}.log")
}

/// The number of a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version of the records that follow.
    pub version: u32,
    /// The segment's number (also in its file name).
    pub number: u64,
    /// Seed of every checksum in the segment.
    pub salt: u32,
}

/// Why a segment header cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header, or all zero: the file was created but its header never became durable.
    Incomplete,
    /// Damaged.
    Corrupt(&'static str),
    /// A version this code does not read.
    Version(u32),
}

impl SegmentHeader {
    /// Appends the encoded header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        out.extend_from_slice(&self.number.to_le_bytes());
        out.extend_from_slice(&self.salt.to_le_bytes());
        let c = crc(0, &out[start..]);
        out.extend_from_slice(&c.to_le_bytes());
    }

    /// Decodes the header at the start of `b`.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let Some(h) = b.get(..SEGMENT_HEADER_LEN) else { return Err(HeaderError::Incomplete) };
        if h.iter().all(|&x| x == 0) {
            return Err(HeaderError::Incomplete);
        }
        if h[..8] != MAGIC {
            return Err(HeaderError::Corrupt("bad magic"));
        }
        if crc(0, &h[..28]) != u32_at(h, 28) {
            return Err(HeaderError::Corrupt("bad header checksum"));
        }
        let version = u32_at(h, 8);
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        if u32_at(h, 12) as usize != SEGMENT_HEADER_LEN {
            return Err(HeaderError::Corrupt("bad header length"));
        }
        Ok(SegmentHeader { version, number: u64_at(h, 16), salt: u32_at(h, 24) })
    }
}

/// Starts a frame in `out`: reserves its header. Returns the frame's start, for [`finish_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + FRAME_HEADER_LEN, 0);
    start
}

/// Closes the frame begun at `start`: the payload is everything after its header. Fails if the payload is
/// too large.
pub fn finish_frame(out: &mut Vec<u8>, start: usize, kind: u8, seq: u64, salt: u32) -> Result<(), usize> {
    let payload_len = out.len() - start - FRAME_HEADER_LEN;
    if payload_len > MAX_PAYLOAD {
        return Err(payload_len);
    }
    let pc = crc(salt, &out[start + FRAME_HEADER_LEN..]);
    out.extend_from_slice(&pc.to_le_bytes());
    out.extend_from_slice(&END_MARK.to_le_bytes());
    let h = &mut out[start..start + FRAME_HEADER_LEN];
    h[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    h[8] = kind;
    h[9..12].fill(0);
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    let hc = crc(salt, &h[4..20]);
    h[0..4].copy_from_slice(&hc.to_le_bytes());
    Ok(())
}

/// Rewrites the sequence number and checksums of the finished frame at `start` for another salt (a frame
/// planned for one segment and written to the next).
pub fn reseal_frame(out: &mut [u8], start: usize, seq: u64, salt: u32) {
    let len = u32_at(out, start + 4) as usize;
    let payload = start + FRAME_HEADER_LEN..start + FRAME_HEADER_LEN + len;
    let pc = crc(salt, &out[payload.clone()]);
    out[payload.end..payload.end + 4].copy_from_slice(&pc.to_le_bytes());
    out[start + 12..start + 20].copy_from_slice(&seq.to_le_bytes());
    let hc = crc(salt, &out[start + 4..start + 20]);
    out[start..start + 4].copy_from_slice(&hc.to_le_bytes());
}

/// A frame that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Record type.
    pub kind: u8,
    /// Sequence number.
    pub seq: u64,
    /// Where the payload lies in the scanned buffer.
    pub payload: Range<usize>,
    /// Offset just past the frame.
    pub end: usize,
}

/// Why the bytes at some offset are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame runs past the end of the data: an interrupted append.
    Incomplete,
    /// The header is all zero: never written (a file system that extends a file before writing its data).
    ZeroHeader,
    /// A complete frame whose footer is all zero: its end was never written.
    ZeroFooter,
    /// Anything else: damage.
    Corrupt(&'static str),
}

impl FrameError {
    /// True if the failure looks like a write that never completed, rather than damage to written bytes.
    pub fn looks_torn(self) -> bool {
        !matches!(self, FrameError::Corrupt(_))
    }
}

/// Parses and verifies the frame at `at` of `b`.
pub fn parse_frame(b: &[u8], at: usize, salt: u32) -> Result<Frame, FrameError> {
    let rest = b.get(at..).unwrap_or(&[]);
    if rest.len() < FRAME_HEADER_LEN {
        return if rest.iter().all(|&x| x == 0) && !rest.is_empty() {
            Err(FrameError::ZeroHeader)
        } else {
            Err(FrameError::Incomplete)
        };
    }
    let h = &rest[..FRAME_HEADER_LEN];
    if h.iter().all(|&x| x == 0) {
        return Err(FrameError::ZeroHeader);
    }
    if crc(salt, &h[4..20]) != u32_at(h, 0) {
        return Err(FrameError::Corrupt("bad frame header checksum"));
    }
    let len = u32_at(h, 4) as usize;
    let kind = h[8];
    if len > MAX_PAYLOAD || h[9..12] != [0, 0, 0] {
        return Err(FrameError::Corrupt("bad frame header"));
    }
    if kind != record_type::BATCH && kind != record_type::CHECKPOINT {
        return Err(FrameError::Corrupt("unknown record type"));
    }
    let total = FRAME_OVERHEAD + len;
    if rest.len() < total {
        return Err(FrameError::Incomplete);
    }
    let payload = at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + len;
    let footer = &rest[FRAME_HEADER_LEN + len..total];
    if footer.iter().all(|&x| x == 0) {
        return Err(FrameError::ZeroFooter);
    }
    if u32_at(footer, 4) != END_MARK {
        return Err(FrameError::Corrupt("bad frame end mark"));
    }
    if crc(salt, &b[payload.clone()]) != u32_at(footer, 0) {
        return Err(FrameError::Corrupt("bad payload checksum"));
    }
    Ok(Frame { kind, seq: u64_at(h, 12), payload, end: at + total })
}

/// The first offset after `from` where a valid frame with a sequence number above `after_seq` starts, if
/// any. Used to tell a torn tail (nothing valid follows) from damage in the middle of the log.
pub fn find_later_frame(b: &[u8], from: usize, salt: u32, after_seq: u64) -> Option<usize> {
    let last_start = b.len().checked_sub(FRAME_OVERHEAD)?;
    (from..=last_start).find(|&at| {
        // Cheap filter first: a plausible sequence number.
        let seq = u64_at(b, at + 12);
        seq > after_seq
            && seq - after_seq < (1 << 32)
            && crc(salt, &b[at + 4..at + 20]) == u32_at(b, at)
            && parse_frame(b, at, salt).is_ok()
    })
}

/// A segment holding `records` (type, payload) as valid frames with sequence numbers from 1 (tests and
/// fuzzing: lets random payloads reach replay).
#[cfg(any(test, feature = "fuzzing"))]
pub fn build_segment(number: u64, salt: u32, records: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    SegmentHeader { version: VERSION, number, salt }.encode(&mut out);
    for (k, (kind, payload)) in records.iter().enumerate() {
        let start = begin_frame(&mut out);
        out.extend_from_slice(payload);
        if finish_frame(&mut out, start, *kind, k as u64 + 1, salt).is_err() {
            out.truncate(start);
        }
    }
    out
}

/// The (type, payload) of every valid frame of a segment, in order (tests).
#[cfg(test)]
pub fn records(segment: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let Ok(h) = SegmentHeader::decode(segment) else { return Vec::new() };
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while let Ok(f) = parse_frame(segment, pos, h.salt) {
        out.push((f.kind, segment[f.payload.clone()].to_vec()));
        pos = f.end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8], seq: u64, salt: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let s = begin_frame(&mut out);
        out.extend_from_slice(payload);
        finish_frame(&mut out, s, record_type::BATCH, seq, salt).unwrap();
        out
    }

    #[test]
    fn header_roundtrip_and_damage() {
        let h = SegmentHeader { version: VERSION, number: 42, salt: 7 };
        let mut b = Vec::new();
        h.encode(&mut b);
        assert_eq!(b.len(), SEGMENT_HEADER_LEN);
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(HeaderError::Incomplete));
        assert_eq!(SegmentHeader::decode(&[0; 32]), Err(HeaderError::Incomplete));
        for i in 0..b.len() * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert!(SegmentHeader::decode(&c).is_err(), "bit {i}");
        }
    }

    #[test]
    fn frame_roundtrip_and_every_bit_flip_is_caught() {
        let b = frame(b"some payload", 9, 1234);
        let f = parse_frame(&b, 0, 1234).unwrap();
        assert_eq!((f.kind, f.seq, &b[f.payload.clone()], f.end), (1, 9, &b"some payload"[..], b.len()));
        assert!(parse_frame(&b, 0, 1235).is_err(), "another salt never validates");
        for i in 0..b.len() * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            let e = parse_frame(&c, 0, 1234).unwrap_err();
            // A flip in a complete frame is damage, except one that shortens the length (still damage,
            // caught by the header checksum).
            assert!(matches!(e, FrameError::Corrupt(_)), "bit {i}: {e:?}");
        }
        for cut in 0..b.len() {
            assert!(parse_frame(&b[..cut], 0, 1234).unwrap_err().looks_torn(), "cut {cut}");
        }
    }

    #[test]
    fn resealed_frames_validate_with_the_new_salt() {
        let mut b = frame(b"payload", 3, 1);
        reseal_frame(&mut b, 0, 4, 2);
        let f = parse_frame(&b, 0, 2).unwrap();
        assert_eq!((f.seq, &b[f.payload]), (4, &b"payload"[..]));
        assert!(parse_frame(&b, 0, 1).is_err());
    }

    #[test]
    fn later_frames_are_found() {
        let mut b = frame(b"a", 1, 5);
        let second = b.len();
        b.extend(frame(b"bb", 2, 5));
        b[3] ^= 1;
        assert_eq!(find_later_frame(&b, 1, 5, 1), Some(second));
        assert_eq!(find_later_frame(&b, 1, 5, 2), None);
        assert_eq!(find_later_frame(&b[..second + 5], 1, 5, 1), None);
    }

    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_name(&segment_name(17)), Some(17));
        assert_eq!(parse_segment_name("LOCK"), None);
        assert_eq!(parse_segment_name("0001.log"), None);
    }
}
