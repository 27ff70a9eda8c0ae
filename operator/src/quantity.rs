//! Storage quantities (`10Gi`, `500M`, `1.5Ti`) as the CRD's `storage.size` accepts them.

/// Bytes in `q`, rounded up; `None` when `q` is not a non-negative decimal with an optional binary
/// (`Ki`..`Ei`) or decimal (`k`..`E`) suffix, or does not fit in a u64.
pub fn parse_bytes(q: &str) -> Option<u64> {
    const SUFFIXES: &[(&str, u128)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    let (number, multiplier) =
        SUFFIXES.iter().find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m))).unwrap_or((q, 1));
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (number.contains('.') && frac.is_empty()) {
        return None;
    }
    // Fixed point with up to 18 fractional digits; more are rejected rather than silently truncated.
    if frac.len() > 18 {
        return None;
    }
    let scale = 10u128.pow(frac.len() as u32);
    let mantissa: u128 = format!("{int}{frac}").parse().ok()?;
    let bytes = mantissa.checked_mul(multiplier)?.div_ceil(scale);
    u64::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn quantities() {
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("10G"), Some(10_000_000_000));
        assert_eq!(parse_bytes("1.5Ki"), Some(1536));
        assert_eq!(parse_bytes("0.1"), Some(1));
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("0"), Some(0));
        for bad in ["", "Gi", "1.Gi", "-1Gi", "1 Gi", "1gi", "1.2.3", "99999999999Ei", "1e3"] {
            assert_eq!(parse_bytes(bad), None, "{bad:?}");
        }
    }
}
