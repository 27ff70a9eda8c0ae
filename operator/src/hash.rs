//! A stable fingerprint (FNV-1a, 64 bits) for annotations: stable across Rust releases and processes,
//! unlike `std`'s hasher. Not a security boundary: it only detects changes.

/// 16 hex digits identifying `bytes` (the client's FNV-1a, which also places keys on groups).
pub fn fingerprint(bytes: &[u8]) -> String {
    format!("{:016x}", drakkar_client::fnv1a64(bytes))
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
