//! A stable fingerprint (FNV-1a, 64 bits) for annotations: stable across Rust releases and processes,
//! unlike `std`'s hasher. Not a security boundary: it only detects changes.

/// 16 hex digits identifying `bytes`.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_values() {
        // Reference values of FNV-1a 64.
        assert_eq!(super::fingerprint(b""), "cbf29ce484222325");
        assert_eq!(super::fingerprint(b"a"), "af63dc4c8601ec8c");
    }
}
