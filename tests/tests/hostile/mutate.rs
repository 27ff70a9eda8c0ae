//! Hostile bodies: a deterministic random source and the mutations the suite applies to valid requests
//! (bit flips, truncation, oversized and wrong-type fields, huge repeated counts, deep nesting, broken
//! gRPC framing). Every mutation is a pure function of the generator's state, so a seed replays a run.

pub use drakkar_raft::Rng;

/// Draws from the project's generator ([`drakkar_raft::Rng`]) what the mutations need.
pub trait Draw {
    /// `n` random bytes.
    fn bytes(&mut self, n: usize) -> Vec<u8>;
    /// One of `items` (not empty).
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T;
}

impl Draw for Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Appends the protobuf varint `v`.
pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends the key of field `field` with wire type `wire`.
pub fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(u64::from(field) << 3 | u64::from(wire), out);
}

/// Appends the key and length of field `field`, length-delimited, holding `len` bytes.
fn ld_head(field: u32, len: usize, out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(len as u64, out);
}

/// Appends field `field` as a length-delimited `payload`.
pub fn ld(field: u32, payload: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// A gRPC frame (5-byte prefix: compressed flag, big-endian length) around `msg`.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// `seed` with 1 to 8 random bits flipped (a random body when `seed` is empty).
pub fn flip_bits(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    if seed.is_empty() {
        let n = 1 + rng.below(16);
        return rng.bytes(n);
    }
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let bit = rng.below(b.len() * 8);
        b[bit / 8] ^= 1 << (bit % 8);
    }
    b
}

/// `seed` cut short (possibly to nothing), sometimes with random bytes appended.
pub fn truncate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed[..rng.below(seed.len() + 1)].to_vec();
    if rng.below(3) == 0 {
        let n = 1 + rng.below(8);
        b.extend(rng.bytes(n));
    }
    b
}

/// `seed` followed by field `field` holding `size` bytes (a later occurrence replaces the seed's value).
pub fn oversized(rng: &mut Rng, seed: &[u8], field: u32, size: usize) -> Vec<u8> {
    let mut b = seed.to_vec();
    let fill = if rng.below(2) == 0 { b'a' } else { 0xff };
    ld(field, &vec![fill; size], &mut b);
    b
}

/// `seed` followed by field `field` with a wire type chosen at random (mostly a wrong one for it): a
/// varint, a fixed64, a fixed32, a length-delimited garbage payload, a group, or the reserved types 6/7.
pub fn wrong_type(rng: &mut Rng, seed: &[u8], field: u32) -> Vec<u8> {
    let mut b = seed.to_vec();
    match rng.below(7) {
        0 => {
            key(field, 0, &mut b);
            varint(rng.next_u64(), &mut b);
        }
        1 => {
            key(field, 1, &mut b);
            b.extend(rng.bytes(8));
        }
        2 => {
            key(field, 5, &mut b);
            b.extend(rng.bytes(4));
        }
        3 => {
            let n = rng.below(64);
            let garbage = rng.bytes(n);
            ld(field, &garbage, &mut b);
        }
        4 => {
            key(field, 3, &mut b);
            key(field, 4, &mut b);
        }
        5 => key(field, 6, &mut b),
        _ => key(field, 7, &mut b),
    }
    b
}

/// `seed` followed by `n` occurrences of field `field`: empty length-delimited elements (for a repeated
/// message field), or, with `varints`, varints (for a repeated or a singular number).
pub fn repeated(seed: &[u8], field: u32, n: usize, varints: bool) -> Vec<u8> {
    let mut b = seed.to_vec();
    let mut one = Vec::new();
    if varints {
        key(field, 0, &mut one);
        one.push(1);
    } else {
        ld(field, &[], &mut one);
    }
    b.reserve(one.len() * n);
    for _ in 0..n {
        b.extend_from_slice(&one);
    }
    b
}

/// `seed` followed by an unknown field (15) nested `depth` deep: as groups (balanced or left open), or as
/// length-delimited messages each holding the next.
pub fn nested(rng: &mut Rng, seed: &[u8], depth: usize) -> Vec<u8> {
    let mut b = seed.to_vec();
    match rng.below(3) {
        0 => {
            for _ in 0..depth {
                key(15, 3, &mut b);
            }
            for _ in 0..depth {
                key(15, 4, &mut b);
            }
        }
        1 => {
            for _ in 0..depth {
                key(15, 3, &mut b);
            }
        }
        _ => {
            // Length-delimited, built outside-in in linear time: the lengths first, innermost last.
            let core = [0x08u8, 0x01];
            let mut lens = Vec::with_capacity(depth);
            let mut len = core.len();
            for _ in 0..depth {
                lens.push(len);
                let mut head = Vec::new();
                ld_head(15, len, &mut head);
                len += head.len();
            }
            for &l in lens.iter().rev() {
                ld_head(15, l, &mut b);
            }
            b.extend_from_slice(&core);
        }
    }
    b
}

/// A request body whose gRPC framing is wrong: the compressed flag without a negotiated encoding, a length
/// past the body, a 4 GiB length, a unary call with two messages, trailing bytes after a frame, a frame
/// cut inside its prefix.
pub fn bad_framing(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let whole = frame(seed);
    match rng.below(6) {
        0 => {
            let mut b = whole;
            b[0] = 1;
            b
        }
        1 => {
            let mut b = whole;
            let claimed = seed.len() as u32 + 1 + rng.below(1000) as u32;
            b[1..5].copy_from_slice(&claimed.to_be_bytes());
            b
        }
        2 => {
            let mut b = whole;
            b[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
            b
        }
        3 => [whole.clone(), whole].concat(),
        4 => {
            let mut b = whole;
            let n = 1 + rng.below(4);
            b.extend(rng.bytes(n));
            b
        }
        _ => whole[..rng.below(5)].to_vec(),
    }
}
