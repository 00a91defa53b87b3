//! Go `net.ParseIP`, `net.IP.Equal` and `net.IP.String`.
//!
//! Mixer's `ip()` stores whatever `net.ParseIP` returns (always 16 bytes),
//! while IP attributes arriving from a proxy are often 4 raw bytes; equality
//! must therefore treat the two IPv4 encodings as the same address.

use std::fmt::Write as _;

/// The 12-byte prefix of an IPv4-mapped IPv6 address (`::ffff:0:0/96`).
const V4_IN_V6_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// Parses an IP address like Go 1.19's `net.ParseIP`.
///
/// Dotted IPv4 (`1.2.3.4`) yields the IPv4-mapped 16-byte form
/// `::ffff:1.2.3.4`, as Go does. IPv6 text may use `::` compression and an
/// embedded IPv4 tail; a group may have any number of hex digits as long as
/// its value fits 16 bits (`0fe80::1` is accepted, as in Go before its
/// `netip`-based parser of 1.22). Rejected: IPv4 octets with leading zeros
/// (`1.2.3.04`; Go 1.17 and later), zones (`fe80::1%eth0`), surrounding
/// spaces, short forms such as `10.1.12`, and anything else Go rejects.
pub fn parse_ip(s: &str) -> Option<[u8; 16]> {
    // Like Go, the first '.' or ':' decides which syntax is being parsed; a
    // '%' before either means a zone without an address.
    for c in s.bytes() {
        match c {
            b'.' => {
                let v4 = parse_ipv4(s.as_bytes())?;
                let mut out = [0u8; 16];
                out[..12].copy_from_slice(&V4_IN_V6_PREFIX);
                out[12..].copy_from_slice(&v4);
                return Some(out);
            }
            b':' => return parse_ipv6(s),
            b'%' => return None,
            _ => {}
        }
    }
    None
}

/// Parses exactly four dot-separated decimal octets (no leading zeros, each
/// at most 255).
fn parse_ipv4(s: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut field = 0usize;
    let mut val: u32 = 0;
    let mut digits = 0usize;
    for (i, &c) in s.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                // A zero followed by another digit is a leading zero, which
                // older Go read as decimal but Go >= 1.17 rejects as
                // ambiguous (other parsers read it as octal).
                if digits == 1 && val == 0 {
                    return None;
                }
                val = val * 10 + u32::from(c - b'0');
                digits += 1;
                if val > 255 {
                    return None;
                }
            }
            b'.' => {
                if i == 0 || i == s.len() - 1 || s[i - 1] == b'.' || field == 3 {
                    return None;
                }
                out[field] = val as u8;
                field += 1;
                val = 0;
                digits = 0;
            }
            _ => return None,
        }
    }
    if field < 3 || digits == 0 {
        return None;
    }
    out[3] = val as u8;
    Some(out)
}

/// Parses IPv6 text: up to eight groups of hex digits, at most one `::`
/// that must stand for at least one zero group, and an optional IPv4 tail
/// occupying the last four bytes. Zones are not allowed (`net.ParseIP`
/// rejects them).
fn parse_ipv6(s: &str) -> Option<[u8; 16]> {
    if s.contains('%') {
        return None;
    }
    let mut rest = s.as_bytes();
    let mut ip = [0u8; 16];
    let mut ellipsis: Option<usize> = None;

    if rest.starts_with(b"::") {
        ellipsis = Some(0);
        rest = &rest[2..];
        if rest.is_empty() {
            return Some(ip);
        }
    }

    let mut i = 0usize;
    while i < 16 {
        // One group of hex digits.
        let mut off = 0usize;
        let mut acc: u32 = 0;
        while off < rest.len() {
            let d = match rest[off] {
                c @ b'0'..=b'9' => c - b'0',
                c @ b'a'..=b'f' => c - b'a' + 10,
                c @ b'A'..=b'F' => c - b'A' + 10,
                _ => break,
            };
            // Saturate rather than overflow on absurdly long groups; any
            // value above 0xFFFF is rejected below.
            acc = acc.saturating_mul(16).saturating_add(u32::from(d));
            off += 1;
        }
        if off == 0 || acc > 0xFFFF {
            return None;
        }

        // A dot means this "group" was really the start of an IPv4 tail.
        if rest.get(off) == Some(&b'.') {
            if (ellipsis.is_none() && i != 12) || i + 4 > 16 {
                return None;
            }
            let v4 = parse_ipv4(rest)?;
            ip[i..i + 4].copy_from_slice(&v4);
            i += 4;
            rest = &[];
            break;
        }

        ip[i] = (acc >> 8) as u8;
        ip[i + 1] = acc as u8;
        i += 2;

        rest = &rest[off..];
        if rest.is_empty() {
            break;
        }
        if rest[0] != b':' || rest.len() == 1 {
            return None;
        }
        rest = &rest[1..];
        if rest[0] == b':' {
            if ellipsis.is_some() {
                return None;
            }
            ellipsis = Some(i);
            rest = &rest[1..];
            if rest.is_empty() {
                break;
            }
        }
    }
    if !rest.is_empty() {
        return None;
    }

    match ellipsis {
        Some(e) if i < 16 => {
            // Shift the groups after the "::" to the end and zero the gap.
            let n = 16 - i;
            ip.copy_within(e..i, e + n);
            ip[e..e + n].fill(0);
        }
        // "::" must expand to at least one zero group.
        Some(_) => return None,
        None if i < 16 => return None,
        None => {}
    }
    Some(ip)
}

/// Go's `net.IP.Equal`: byte-identical, or one is the 4-byte form and the
/// other the IPv4-mapped 16-byte form of the same address.
pub fn ip_equal(a: &[u8], b: &[u8]) -> bool {
    match (a.len(), b.len()) {
        (x, y) if x == y => a == b,
        (4, 16) => b[..12] == V4_IN_V6_PREFIX && a == &b[12..],
        (16, 4) => a[..12] == V4_IN_V6_PREFIX && &a[12..] == b,
        _ => false,
    }
}

/// Go's `net.IP.String()`.
///
/// 4-byte and IPv4-mapped 16-byte addresses print as a dotted quad, other
/// 16-byte addresses in RFC 5952 form (lowercase, longest run of two or more
/// zero groups compressed, leftmost on ties). An empty slice prints `<nil>`
/// and any other length prints `?` followed by the bytes in hex, as Go does.
pub fn format_ip(b: &[u8]) -> String {
    let mut out = String::with_capacity(15);
    write_ip(&mut out, b);
    out
}

/// Appends [`format_ip`]'s text to `out`; IPv4 addresses (the common case) without
/// any intermediate `String`.
pub fn write_ip(out: &mut String, b: &[u8]) {
    match b.len() {
        0 => out.push_str("<nil>"),
        4 => write_dotted_quad(out, b),
        16 if b[..12] == V4_IN_V6_PREFIX => write_dotted_quad(out, &b[12..]),
        16 => out.push_str(&format_ipv6(b)),
        _ => {
            out.push('?');
            for byte in b {
                // Writing into a String cannot fail.
                let _ = write!(out, "{byte:02x}");
            }
        }
    }
}

/// The four bytes of `quad` in decimal, dot-separated.
fn write_dotted_quad(out: &mut String, quad: &[u8]) {
    for (i, &byte) in quad.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        super::push_padded(out, u64::from(byte), 1);
    }
}

/// RFC 5952 text of a 16-byte address.
fn format_ipv6(b: &[u8]) -> String {
    let groups: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    // Find the longest run of zero groups (length >= 2); strict '>' keeps
    // the leftmost of equally long runs.
    let (mut best_start, mut best_len) = (usize::MAX, 0usize);
    let mut i = 0;
    while i < 8 {
        let mut j = i;
        while j < 8 && groups[j] == 0 {
            j += 1;
        }
        if j - i >= 2 && j - i > best_len {
            best_start = i;
            best_len = j - i;
        }
        i = j.max(i + 1);
    }
    let mut out = String::with_capacity(39);
    let mut i = 0;
    while i < 8 {
        if i == best_start {
            out.push_str("::");
            i += best_len;
            continue;
        }
        if i > 0 && !out.ends_with(':') {
            out.push(':');
        }
        // Writing into a String cannot fail.
        let _ = write!(out, "{:x}", groups[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[10] = 0xff;
        out[11] = 0xff;
        out[12..].copy_from_slice(&[a, b, c, d]);
        out
    }

    fn v6(groups: [u16; 8]) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, g) in groups.iter().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&g.to_be_bytes());
        }
        out
    }

    #[test]
    fn parses_conformance_values() {
        assert_eq!(parse_ip("1.2.3.4"), Some(v4(1, 2, 3, 4)));
        assert_eq!(parse_ip("10.1.12.3"), Some(v4(10, 1, 12, 3)));
        assert_eq!(parse_ip("0.0.0.0"), Some(v4(0, 0, 0, 0)));
        assert_eq!(parse_ip("5.6.7.8"), Some(v4(5, 6, 7, 8)));
        assert_eq!(parse_ip("10.1.12"), None);
        assert_eq!(parse_ip("A.A.A.A"), None);
        assert_ne!(parse_ip("1.2.3.4"), parse_ip("1.2.3.5"));
    }

    #[test]
    fn parses_ipv4_like_go() {
        assert_eq!(parse_ip("255.255.255.255"), Some(v4(255, 255, 255, 255)));
        assert_eq!(parse_ip("127.0.0.1"), Some(v4(127, 0, 0, 1)));
        for s in [
            "",
            "1",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.04",
            "01.2.3.4",
            "1.2.3.00",
            "256.1.1.1",
            "1.2.3.256",
            "1..3.4",
            ".1.2.3",
            "1.2.3.",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.-4",
            "1.2.3.4:80",
            "1.2.3.4%eth0",
            "1.2.3.0x4",
            "1.2.3.4/8",
            "１.2.3.4",
            "%1.2.3.4",
        ] {
            assert_eq!(parse_ip(s), None, "{s:?} must not parse");
        }
    }

    #[test]
    fn parses_ipv6_like_go() {
        assert_eq!(parse_ip("::"), Some([0; 16]));
        assert_eq!(parse_ip("::1"), Some(v6([0, 0, 0, 0, 0, 0, 0, 1])));
        assert_eq!(parse_ip("1::"), Some(v6([1, 0, 0, 0, 0, 0, 0, 0])));
        assert_eq!(parse_ip("fe80::1"), Some(v6([0xfe80, 0, 0, 0, 0, 0, 0, 1])));
        assert_eq!(
            parse_ip("2001:DB8:0:0:8:800:200C:417A"),
            Some(v6([0x2001, 0xdb8, 0, 0, 8, 0x800, 0x200c, 0x417a]))
        );
        assert_eq!(
            parse_ip("2001:db8::8:800:200c:417a"),
            parse_ip("2001:DB8:0:0:8:800:200C:417A")
        );
        assert_eq!(
            parse_ip("0001:0002:0003:0004:0005:0006:0007:0008"),
            Some(v6([1, 2, 3, 4, 5, 6, 7, 8]))
        );
        assert_eq!(parse_ip("::ffff:1.2.3.4"), Some(v4(1, 2, 3, 4)));
        // Go 1.19 limits a group by value, not by digit count.
        assert_eq!(parse_ip("0fe80::000000001"), parse_ip("fe80::1"));
        assert_eq!(parse_ip("::ffff:102:304"), Some(v4(1, 2, 3, 4)));
        assert_eq!(
            parse_ip("::1.2.3.4"),
            Some(v6([0, 0, 0, 0, 0, 0, 0x102, 0x304]))
        );
        assert_eq!(
            parse_ip("1:2:3:4:5:6:1.2.3.4"),
            Some(v6([1, 2, 3, 4, 5, 6, 0x102, 0x304]))
        );
        assert_eq!(
            parse_ip("1::5:6:1.2.3.4"),
            Some(v6([1, 0, 0, 0, 5, 6, 0x102, 0x304]))
        );
        for s in [
            ":",
            ":::",
            "1:2",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7::8",
            "1:2:3:4::5:6:7:8",
            "::1::",
            "1::2::3",
            "12345::",
            "10000::",
            "fe80::1%eth0",
            "fe80::1%",
            "fe80::1%25en0",
            ":1::",
            "1:",
            "1::2:",
            "g::",
            "1:2:3:4:5:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "::1.2.3",
            "::1.2.3.04",
            "::1.2.3.4:1",
            " ::1",
            "::1 ",
            "[::1]",
        ] {
            assert_eq!(parse_ip(s), None, "{s:?} must not parse");
        }
    }

    #[test]
    fn equality_like_go() {
        let mapped = parse_ip("1.2.3.4").unwrap();
        assert!(ip_equal(&[1, 2, 3, 4], &mapped));
        assert!(ip_equal(&mapped, &[1, 2, 3, 4]));
        assert!(ip_equal(&[1, 2, 3, 4], &[1, 2, 3, 4]));
        assert!(!ip_equal(&[1, 2, 3, 5], &mapped));
        assert!(!ip_equal(&[5, 6, 7, 8], &[1, 2, 3, 4]));
        // The IPv4-compatible (not mapped) form is a different address.
        let compat = parse_ip("::1.2.3.4").unwrap();
        assert!(!ip_equal(&[1, 2, 3, 4], &compat));
        // Other lengths are only equal to identical bytes.
        assert!(ip_equal(&[1, 2], &[1, 2]));
        assert!(!ip_equal(&[1, 2], &[1, 2, 3, 4]));
        assert!(ip_equal(&[], &[]));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_ip(&[1, 2, 3, 4]), "1.2.3.4");
        assert_eq!(format_ip(&parse_ip("10.1.12.3").unwrap()), "10.1.12.3");
        assert_eq!(format_ip(&parse_ip("::ffff:1.2.3.4").unwrap()), "1.2.3.4");
        assert_eq!(format_ip(&[0; 16]), "::");
        assert_eq!(format_ip(&parse_ip("::1").unwrap()), "::1");
        assert_eq!(format_ip(&parse_ip("1::").unwrap()), "1::");
        assert_eq!(format_ip(&parse_ip("::1.2.3.4").unwrap()), "::102:304");
        assert_eq!(
            format_ip(&parse_ip("2001:DB8:0:0:8:800:200C:417A").unwrap()),
            "2001:db8::8:800:200c:417a"
        );
        // A single zero group is not compressed.
        assert_eq!(
            format_ip(&parse_ip("2001:db8:0:1:1:1:1:1").unwrap()),
            "2001:db8:0:1:1:1:1:1"
        );
        // Longest run wins; the leftmost wins a tie.
        assert_eq!(
            format_ip(&parse_ip("1:0:0:2:0:0:0:3").unwrap()),
            "1:0:0:2::3"
        );
        assert_eq!(
            format_ip(&parse_ip("1:0:0:2:0:0:3:4").unwrap()),
            "1::2:0:0:3:4"
        );
        assert_eq!(
            format_ip(&parse_ip("fe80:0:0:0:1::").unwrap()),
            "fe80::1:0:0:0"
        );
        assert_eq!(format_ip(&[]), "<nil>");
        assert_eq!(format_ip(&[1, 2, 0xab]), "?0102ab");
    }

    #[test]
    fn round_trips_through_text() {
        for s in [
            "1.2.3.4",
            "::",
            "::1",
            "fe80::1",
            "2001:db8::8:800:200c:417a",
            "1:2:3:4:5:6:7:8",
            "1::",
            "0:1::",
        ] {
            assert_eq!(format_ip(&parse_ip(s).unwrap()), s);
        }
    }
}
