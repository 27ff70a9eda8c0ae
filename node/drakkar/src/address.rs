//! Member addresses: what a group's membership may record as the address of a replica's node.
//!
//! An address is `host:port`, ASCII, without spaces or a scheme: `host` is a DNS name (RFC 1123 labels
//! of 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen, at most 253 bytes in
//! all, the last label not all digits) or an IP literal (IPv4 dotted quad; IPv6 in brackets, without a
//! zone), and `port` is 1 to 65535 without leading zeros. So every accepted address makes a valid URI
//! (`http://host:port`), and each one has a single spelling.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest address accepted: a 253-byte DNS name, `:` and a 5-digit port.
pub const MAX_ADDRESS_LEN: usize = 253 + 1 + 5;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The address is empty.
    #[error("the address is empty")]
    Empty,
    /// Longer than [`MAX_ADDRESS_LEN`].
    #[error("the address is {0} bytes long (at most {MAX_ADDRESS_LEN})")]
    TooLong(usize),
    /// A byte outside printable ASCII (a space, a control or a non-ASCII character).
    #[error("the address holds a character that is not printable ASCII")]
    NotPrintable,
    /// No `:port`.
    #[error("the address has no port (host:port)")]
    NoPort,
    /// The port is not a number in 1..=65535 written without leading zeros.
    #[error("the port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
    /// The host is neither a DNS name nor an IP literal.
    #[error("the host {host:?} is not a valid DNS name or IP address: {why}")]
    BadHost {
        /// The host part.
        host: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// Checks that `addr` is a member address (see the module doc).
pub fn validate(addr: &str) -> Result<(), AddressError> {
    if addr.is_empty() {
        return Err(AddressError::Empty);
    }
    if addr.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong(addr.len()));
    }
    if !addr.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AddressError::NotPrintable);
    }
    let (host, port) = addr.rsplit_once(':').ok_or(AddressError::NoPort)?;
    validate_port(port)?;
    let bad = |why| AddressError::BadHost { host: host.to_string(), why };
    if let Some(inner) = host.strip_prefix('[') {
        let v6 = inner.strip_suffix(']').ok_or_else(|| bad("an unclosed '['"))?;
        return v6.parse::<Ipv6Addr>().map(|_| ()).map_err(|_| bad("not an IPv6 address"));
    }
    if host.contains(':') {
        return Err(bad("an IPv6 address must be written in brackets"));
    }
    validate_dns_or_ipv4(host).map_err(bad)
}

fn validate_port(port: &str) -> Result<(), AddressError> {
    let bad = || AddressError::BadPort(port.to_string());
    if port.is_empty() || port.len() > 5 || port.starts_with('0') || !port.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    match port.parse::<u32>() {
        Ok(1..=65535) => Ok(()),
        _ => Err(bad()),
    }
}

fn validate_dns_or_ipv4(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("empty");
    }
    if host.len() > 253 {
        return Err("longer than 253 bytes");
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        // RFC 1123 2.1: a name never looks like a dotted decimal number; so it must be an IPv4 address.
        return host.parse::<Ipv4Addr>().map(|_| ()).map_err(|_| "not an IPv4 address");
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("an empty label");
        }
        if label.len() > 63 {
            return Err("a label longer than 63 bytes");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("a label with a character other than letters, digits and '-'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starting or ending with '-'");
        }
    }
    Ok(())
}

/// `host:port` from an address written as `host:port`, `http://host:port` or `https://host:port` (peers
/// and tools may name a node with a scheme; a membership records it without one).
pub fn host_port(endpoint: &str) -> &str {
    let e = endpoint.trim();
    let e = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://")).unwrap_or(e);
    e.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let label63 = "a".repeat(63);
        let long = [label63.as_str(), &label63, &label63, &"b".repeat(61)].join(".");
        assert_eq!(long.len(), 253);
        for a in [
            "localhost:7000",
            "node-0.drakkar:7000",
            "node-0.drakkar.default.svc.cluster.local:65535",
            "Node-1.Example.COM:1",
            "127.0.0.1:7000",
            "0.0.0.0:80",
            "[::1]:7000",
            "[2001:db8::8a2e:370:7334]:443",
            "[::ffff:10.0.0.1]:9",
            "h1:7000",
            "1a:7000",
            "x.123abc:7000",
            &format!("{long}:65535"),
        ] {
            assert_eq!(validate(a), Ok(()), "{a}");
        }
    }

    #[test]
    fn refused_forms() {
        let too_long = format!("{}:7000", "a".repeat(64 * 1024));
        let long_label = format!("{}.x:7000", "a".repeat(64));
        let long_name = format!("{}abc:7000", ["abcdefgh"; 28].join("."));
        assert!(long_name.len() <= MAX_ADDRESS_LEN && long_name.len() > 253, "{}", long_name.len());
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("node-1", "no port"),
            ("node-1:", "empty port"),
            ("node-1:0", "port 0"),
            ("node-1:99999", "port over 65535"),
            ("node-1:65536", "port over 65535"),
            ("node-1:07000", "leading zero"),
            ("node-1:+700", "sign"),
            ("node-1:7x", "not digits"),
            (":7000", "no host"),
            ("node 1:7000", "space"),
            (" node-1:7000", "leading space"),
            ("node-1:7000\n", "newline"),
            ("nöde:7000", "non-ASCII"),
            ("node_1:7000", "underscore"),
            ("-node:7000", "leading hyphen"),
            ("node-:7000", "trailing hyphen"),
            ("a..b:7000", "empty label"),
            ("node.:7000", "trailing dot"),
            ("http://node-1:7000", "scheme"),
            ("node-1:7000/x", "path"),
            ("user@node-1:7000", "user info"),
            ("256.1.1.1:7000", "bad IPv4"),
            ("1.2.3:7000", "numeric name"),
            ("01.2.3.4:7000", "IPv4 leading zero"),
            ("::1:7000", "bare IPv6"),
            ("[::1:7000", "unclosed bracket"),
            ("[::g]:7000", "bad IPv6"),
            ("[fe80::1%eth0]:7000", "IPv6 zone"),
            ("[127.0.0.1]:7000", "IPv4 in brackets"),
            (&too_long, "64 KiB"),
            (&long_label, "64-byte label"),
            (&long_name, "254-byte name"),
        ];
        for (a, why) in cases {
            assert!(validate(a).is_err(), "{why}: {a:?} was accepted");
        }
    }

    #[test]
    fn every_accepted_address_makes_a_uri() {
        for a in ["localhost:7000", "[::1]:7000", "10.0.0.1:1", "a-b.c:65535"] {
            validate(a).unwrap();
            let uri: http::Uri = format!("http://{a}").parse().unwrap();
            assert!(uri.host().is_some() && uri.port_u16().is_some(), "{a}");
        }
    }
}
