//! Compiled lists: entries turned once into a structure that answers "is this value on
//! the list?" without scanning the entries, whatever the list size.

use std::borrow::Cow;
use std::collections::HashSet;

use regex::{RegexBuilder, RegexSetBuilder};
use serde::Deserialize;

use super::config::{IpNet, ListEntryType, parse_ip_entry};

/// The compile budget of a REGEX list: the most memory its compiled program may take.
/// Compilation stops as soon as the program outgrows it, so the budget also bounds the
/// time spent (about 0.2 s per 16 MiB built, optimized). The `regex` default (10 MiB)
/// is too small for 10,000 host-name patterns, which fit in 16 MiB; one `\w{100}` alone
/// is about 1 MiB, as `\w` is a large Unicode class.
pub const REGEX_COMPILE_BUDGET_BYTES: usize = 16 << 20;

/// The lazy DFA's cache per search thread (the `regex` default, stated so that the
/// memory a list can take is all written here). When full it is cleared and matching
/// continues, slower, so it bounds memory, not correctness.
const REGEX_DFA_CACHE_BYTES: usize = 2 << 20;

/// Why a list (overrides or a provider body) could not be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("list body is not UTF-8 text: {0}")]
    NotText(String),
    #[error("list body is not a YAML document of the form `whitelist: [...]`: {0}")]
    NotYaml(String),
    #[error("{at}: {reason}")]
    Entry { at: String, reason: String },
    #[error("the list's regular expressions could not be compiled together: {0}")]
    RegexSet(String),
    #[error(
        "the list's regular expressions exceed the compile budget: their compiled program \
         would take more than {limit_bytes} bytes"
    )]
    RegexTooBig { limit_bytes: usize },
}

/// A value prepared for lookup in one kind of list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe<'a> {
    /// For STRINGS and REGEX lists: the value as is. For CASE_INSENSITIVE_STRINGS lists:
    /// the value already folded with [`fold_case`].
    Text(Cow<'a, str>),
    /// For IP_ADDRESSES lists: the address in 128-bit form (IPv4 mapped into IPv6).
    Ip(u128),
}

/// A compiled list.
#[derive(Debug)]
pub enum Matcher {
    /// Exact equality: one hash lookup.
    Strings(HashSet<Box<str>>),
    /// Entries stored case-folded, so a lookup is one fold and one hash lookup.
    CaseInsensitive(HashSet<Box<str>>),
    /// Every pattern in one set, compiled once, searched unanchored in one pass.
    Regex(regex::RegexSet),
    /// Networks as merged address ranges: one binary search.
    Ip(IpRanges),
}

impl Matcher {
    /// Compiles textual entries (overrides, or the lines of a provider body). `at` names
    /// entry `i` in error messages (`overrides[3]`, `line 12`).
    pub fn from_entries<S: AsRef<str>>(
        entry_type: ListEntryType,
        entries: &[S],
        at: impl Fn(usize) -> String,
    ) -> Result<Matcher, ListError> {
        let texts = entries.iter().map(AsRef::as_ref);
        Ok(match entry_type {
            ListEntryType::Strings => Matcher::Strings(texts.map(Box::from).collect()),
            ListEntryType::CaseInsensitiveStrings => {
                Matcher::CaseInsensitive(texts.map(|e| Box::from(fold_case(e))).collect())
            }
            ListEntryType::Regex => Matcher::Regex(compile_regex_set(entries, &at)?),
            ListEntryType::IpAddresses => {
                let mut nets = Vec::with_capacity(entries.len());
                for (i, e) in texts.enumerate() {
                    let net = parse_ip_entry(e)
                        .map_err(|reason| ListError::Entry { at: at(i), reason })?;
                    nets.push(net);
                }
                Matcher::Ip(IpRanges::new(&nets))
            }
        })
    }

    /// Compiles a provider's response body. IP lists are a YAML document
    /// `whitelist: [...]` (the key is `whitelist` in blacklist mode too, as in Mixer);
    /// other lists are one entry per line, empty lines skipped and nothing trimmed.
    pub fn from_body(entry_type: ListEntryType, body: &[u8]) -> Result<Matcher, ListError> {
        if entry_type == ListEntryType::IpAddresses {
            let entries = parse_ip_document(body)?;
            return Matcher::from_entries(entry_type, &entries, |i| format!("whitelist[{i}]"));
        }
        let text = std::str::from_utf8(body).map_err(|e| ListError::NotText(e.to_string()))?;
        // Keep each entry's line number for error messages.
        let (lines, numbers): (Vec<&str>, Vec<usize>) = text
            .split('\n')
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(n, l)| (l, n + 1))
            .unzip();
        Matcher::from_entries(entry_type, &lines, |i| format!("line {}", numbers[i]))
    }

    /// Whether the probe is on the list. A probe of the wrong kind for this list (which
    /// the handler never builds) is not on it.
    pub fn contains(&self, probe: &Probe<'_>) -> bool {
        match (self, probe) {
            (Matcher::Strings(set) | Matcher::CaseInsensitive(set), Probe::Text(t)) => {
                set.contains(&**t)
            }
            (Matcher::Regex(set), Probe::Text(t)) => set.is_match(t),
            (Matcher::Ip(ranges), Probe::Ip(ip)) => ranges.contains(*ip),
            _ => false,
        }
    }

    /// How many distinct entries (or, for IP lists, merged ranges) the list holds.
    pub fn len(&self) -> usize {
        match self {
            Matcher::Strings(s) | Matcher::CaseInsensitive(s) => s.len(),
            Matcher::Regex(r) => r.len(),
            Matcher::Ip(r) => r.ranges.len(),
        }
    }
}

/// The YAML shape of an IP list body.
#[derive(Deserialize)]
struct IpDocument {
    #[serde(default)]
    whitelist: Option<Vec<String>>,
}

fn parse_ip_document(body: &[u8]) -> Result<Vec<String>, ListError> {
    // An empty document is an empty list (YAML decodes it as null, which would not fit
    // the mapping shape).
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let doc: IpDocument =
        serde_yaml_ng::from_slice(body).map_err(|e| ListError::NotYaml(e.to_string()))?;
    Ok(doc.whitelist.unwrap_or_default())
}

/// Compiles every pattern into one set, within [`REGEX_COMPILE_BUDGET_BYTES`]. When a
/// pattern does not parse, the bad entry is named; finding it costs a parse per pattern,
/// never a compilation.
fn compile_regex_set<S: AsRef<str>>(
    entries: &[S],
    at: &impl Fn(usize) -> String,
) -> Result<regex::RegexSet, ListError> {
    let patterns = entries.iter().map(AsRef::as_ref);
    RegexSetBuilder::new(patterns.clone())
        .size_limit(REGEX_COMPILE_BUDGET_BYTES)
        .dfa_size_limit(REGEX_DFA_CACHE_BYTES)
        .build()
        .map_err(|set_err| match set_err {
            regex::Error::CompiledTooBig(limit_bytes) => ListError::RegexTooBig { limit_bytes },
            set_err => patterns
                .enumerate()
                .find_map(|(i, p)| {
                    let e = syntax_error(p)?;
                    Some(ListError::Entry {
                        at: at(i),
                        reason: format!("error parsing regexp: {}: `{p}`", regex_reason(&e)),
                    })
                })
                .unwrap_or_else(|| ListError::RegexSet(regex_reason(&set_err))),
        })
}

/// The syntax error of `pattern`, if any. A zero size limit makes the build stop right
/// after parsing: a pattern that parses fails as too big (or, if it needs no program,
/// succeeds) at no compilation cost.
fn syntax_error(pattern: &str) -> Option<regex::Error> {
    match RegexBuilder::new(pattern).size_limit(0).build() {
        Err(e @ regex::Error::Syntax(_)) => Some(e),
        _ => None,
    }
}

/// The one-line reason of a regex error (the crate's syntax errors span several lines,
/// with the reason on the line starting `error:`).
fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => s
            .lines()
            .find_map(|l| l.strip_prefix("error:"))
            .map_or_else(|| s.clone(), |l| l.trim().to_owned()),
        other => other.to_string(),
    }
}

/// Case folding for CASE_INSENSITIVE_STRINGS: upper case, as Mixer compared
/// (`strings.ToUpper`). Go maps each character to one character (simple case mapping),
/// so a character whose full upper case is several characters (`ß` → `SS`) is kept as
/// is rather than expanded. Borrows when nothing changes (the common all-caps or
/// caseless value).
pub fn fold_case(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_lowercase()) {
            return Cow::Owned(s.to_ascii_uppercase());
        }
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let mut upper = c.to_uppercase();
        match (upper.next(), upper.next()) {
            (Some(u), None) => out.push(u),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// An IP address (4 raw bytes or 16) in the 128-bit form list networks use. `None` for
/// any other length.
pub fn ip_bits(ip: &[u8]) -> Option<u128> {
    match ip.len() {
        4 => {
            let v4 = u32::from_be_bytes(ip.try_into().ok()?);
            // ::ffff:a.b.c.d
            Some((0xffff_u128 << 32) | u128::from(v4))
        }
        16 => Some(u128::from_be_bytes(ip.try_into().ok()?)),
        _ => None,
    }
}

/// A set of networks as sorted, disjoint, non-adjacent inclusive address ranges, so
/// membership is a binary search however many CIDRs the list has, and overlapping
/// entries (a /16 and a /24 inside it) cost nothing.
#[derive(Debug, Default)]
pub struct IpRanges {
    ranges: Vec<(u128, u128)>,
}

impl IpRanges {
    pub fn new(nets: &[IpNet]) -> IpRanges {
        let mut spans: Vec<(u128, u128)> = nets
            .iter()
            .map(|n| {
                let addr = u128::from_be_bytes(n.addr);
                let prefix = u32::from(n.prefix_len.min(128));
                // A shift by 128 would overflow, hence /0 apart.
                let net_mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                (addr & net_mask, addr | !net_mask)
            })
            .collect();
        spans.sort_unstable();
        let mut ranges: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match ranges.last_mut() {
                // Overlapping or directly adjacent: extend the previous range.
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => ranges.push((start, end)),
            }
        }
        ranges.shrink_to_fit();
        IpRanges { ranges }
    }

    pub fn contains(&self, ip: u128) -> bool {
        // The last range starting at or before `ip` is the only one that can hold it.
        let after = self.ranges.partition_point(|&(start, _)| start <= ip);
        after > 0 && ip <= self.ranges[after - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u128 {
        u128::from_be_bytes(expr_lang::golib::net::parse_ip(s).expect(s))
    }

    fn ip_list(entries: &[&str]) -> Matcher {
        Matcher::from_entries(ListEntryType::IpAddresses, entries, |i| format!("[{i}]")).unwrap()
    }

    fn text(s: &str) -> Probe<'_> {
        Probe::Text(Cow::Borrowed(s))
    }

    #[test]
    fn ip_ranges_merge_and_search() {
        let l = ip_list(&[
            "10.0.0.0/16",
            "10.0.3.0/24", // inside the /16: merged away
            "10.1.0.0/16", // adjacent to the first: merged into one range
            "192.168.1.7",
            "2001:db8::/32",
            "::1",
        ]);
        assert_eq!(l.len(), 4);
        for yes in [
            "10.0.0.0",
            "10.0.255.255",
            "10.1.200.1",
            "192.168.1.7",
            "2001:db8:ffff::1",
            "::1",
        ] {
            assert!(l.contains(&Probe::Ip(ip(yes))), "{yes}");
        }
        for no in [
            "9.255.255.255",
            "10.2.0.0",
            "192.168.1.6",
            "192.168.1.8",
            "2001:db9::",
            "::2",
            "::",
        ] {
            assert!(!l.contains(&Probe::Ip(ip(no))), "{no}");
        }
    }

    #[test]
    fn whole_address_spaces() {
        let all = ip_list(&["0.0.0.0/0"]);
        assert!(all.contains(&Probe::Ip(ip("8.8.8.8"))));
        // The IPv4 /0 is the IPv4-mapped block only, as for Go's IPv4 networks.
        assert!(!all.contains(&Probe::Ip(ip("2001:db8::1"))));
        let everything = ip_list(&["::/0"]);
        assert!(everything.contains(&Probe::Ip(u128::MAX)));
        assert!(everything.contains(&Probe::Ip(0)));
        assert!(everything.contains(&Probe::Ip(ip("8.8.8.8"))));
        let top = ip_list(&["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]);
        assert!(top.contains(&Probe::Ip(u128::MAX)));
        assert!(!top.contains(&Probe::Ip(u128::MAX - 1)));
    }

    #[test]
    fn ten_thousand_cidrs_agree_with_linear_scan() {
        // 10,000 networks of mixed sizes over IPv4 and IPv6, deterministic.
        let mut entries = Vec::new();
        let mut x: u32 = 12345;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for i in 0..10_000 {
            let r = next();
            if i % 5 == 0 {
                let len = 32 + r % 97;
                entries.push(format!("2001:db8:{:x}:{:x}::/{len}", r >> 16, r & 0xffff));
            } else {
                let len = 8 + r % 25;
                let [a, b, c, d] = next().to_be_bytes();
                entries.push(format!("{a}.{b}.{c}.{d}/{len}"));
            }
        }
        let nets: Vec<IpNet> = entries.iter().map(|e| parse_ip_entry(e).unwrap()).collect();
        let list = ip_list(&entries.iter().map(String::as_str).collect::<Vec<_>>());
        let mut hits = 0;
        for _ in 0..4_000 {
            let probe: Vec<u8> = if next() % 4 == 0 {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                b[4..8].copy_from_slice(&next().to_be_bytes());
                b[8..12].copy_from_slice(&next().to_be_bytes());
                b.to_vec()
            } else {
                next().to_be_bytes().to_vec()
            };
            let expected = nets.iter().any(|n| n.contains(&probe));
            hits += usize::from(expected);
            assert_eq!(
                list.contains(&Probe::Ip(ip_bits(&probe).unwrap())),
                expected,
                "{probe:?}"
            );
        }
        // Both outcomes were exercised.
        assert!(hits > 20 && hits < 3_980, "{hits}");
    }

    #[test]
    fn ip_bits_forms_agree() {
        assert_eq!(ip_bits(&[10, 57, 1, 2]), Some(ip("10.57.1.2")));
        assert_eq!(ip_bits(&ip("fe80::1").to_be_bytes()), Some(ip("fe80::1")));
        assert_eq!(ip_bits(&[1, 2, 3]), None);
    }

    #[test]
    fn strings_exact() {
        let l = Matcher::from_entries(ListEntryType::Strings, &["v1", "V2", ""], |i| i.to_string())
            .unwrap();
        assert!(l.contains(&text("v1")) && l.contains(&text("V2")) && l.contains(&text("")));
        assert!(!l.contains(&text("v2")) && !l.contains(&text("v1 ")));
    }

    #[test]
    fn case_insensitive() {
        let l = Matcher::from_entries(
            ListEntryType::CaseInsensitiveStrings,
            &["Abc", "straße"],
            |i| i.to_string(),
        )
        .unwrap();
        assert!(l.contains(&Probe::Text(fold_case("aBC"))));
        assert!(l.contains(&Probe::Text(fold_case("STRAßE"))));
        assert!(!l.contains(&Probe::Text(fold_case("abcd"))));
        assert_eq!(fold_case("ABC"), Cow::Borrowed("ABC"));
        assert_eq!(fold_case("éa"), "ÉA");
    }

    #[test]
    fn regex_unanchored_set() {
        let l = Matcher::from_entries(ListEntryType::Regex, &["v1", "^prod-[0-9]+$"], |i| {
            i.to_string()
        })
        .unwrap();
        assert!(l.contains(&text("xv12")));
        assert!(l.contains(&text("prod-42")));
        assert!(!l.contains(&text("prod-42x")));
        assert!(!l.contains(&text("v2")));
        let e = Matcher::from_entries(ListEntryType::Regex, &["ok", "(bad"], |i| {
            format!("line {i}")
        })
        .unwrap_err();
        assert!(
            matches!(&e, ListError::Entry { at, reason } if at == "line 1" && reason.starts_with("error parsing regexp:") && reason.ends_with("`(bad`")),
            "{e}"
        );
    }

    #[test]
    fn regex_compile_budget() {
        // 50 copies of a pattern of about 1 MiB compiled: over the budget, said so, and
        // fast (no per-pattern compilation to find a culprit).
        let hostile = vec!["\\w{100}x"; 50];
        let started = std::time::Instant::now();
        let e =
            Matcher::from_entries(ListEntryType::Regex, &hostile, |i| i.to_string()).unwrap_err();
        assert_eq!(
            e,
            ListError::RegexTooBig {
                limit_bytes: REGEX_COMPILE_BUDGET_BYTES
            }
        );
        assert!(e.to_string().contains("compile budget"), "{e}");
        // Generous: unoptimized builds take about 1 s.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        // 10,000 ordinary patterns fit.
        let many: Vec<String> = (0..10_000)
            .map(|i| format!("^svc-{i}-[a-z0-9]+\\.(prod|staging)\\.example\\.com$"))
            .collect();
        let l = Matcher::from_entries(ListEntryType::Regex, &many, |i| i.to_string()).unwrap();
        assert!(l.contains(&text("svc-9999-ab1.prod.example.com")));
        assert!(!l.contains(&text("svc-10000-ab1.prod.example.com")));
    }

    #[test]
    fn syntax_errors_are_found_without_compiling() {
        assert!(syntax_error("\\w{100}x").is_none());
        assert!(syntax_error("abc").is_none());
        assert!(syntax_error("(bad").is_some());
        // A syntax error after patterns that are costly to compile names the bad line.
        let mut entries = vec!["\\w{100}x"; 49];
        entries.push("[z-a]");
        let e = Matcher::from_entries(ListEntryType::Regex, &entries, |i| {
            format!("line {}", i + 1)
        })
        .unwrap_err();
        assert!(
            matches!(&e, ListError::Entry { at, .. } if at == "line 50"),
            "{e}"
        );
    }

    #[test]
    fn text_body_lines() {
        let l = Matcher::from_body(ListEntryType::Strings, b"a\n\nb \n c\r\n\n").unwrap();
        assert_eq!(l.len(), 3);
        // No trimming: the entries are exactly the lines.
        assert!(l.contains(&text("a")) && l.contains(&text("b ")) && l.contains(&text(" c\r")));
        assert!(!l.contains(&text("b")) && !l.contains(&text("c")));
        let e = Matcher::from_body(ListEntryType::Regex, b"ok\n\n[z-a]\n").unwrap_err();
        assert!(
            matches!(&e, ListError::Entry { at, .. } if at == "line 3"),
            "{e}"
        );
        let e = Matcher::from_body(ListEntryType::Strings, b"\xff\xfe").unwrap_err();
        assert!(matches!(e, ListError::NotText(_)));
    }

    #[test]
    fn ip_body_yaml() {
        let l = Matcher::from_body(
            ListEntryType::IpAddresses,
            b"whitelist: [\"10.57.0.0/16\", 192.168.0.1]\nother: ignored\n",
        )
        .unwrap();
        assert!(l.contains(&Probe::Ip(ip("10.57.9.9"))));
        assert!(l.contains(&Probe::Ip(ip("192.168.0.1"))));
        let block = Matcher::from_body(
            ListEntryType::IpAddresses,
            b"whitelist:\n  - 2001:db8::/32\n  - 10.0.0.1\n",
        )
        .unwrap();
        assert!(block.contains(&Probe::Ip(ip("2001:db8::5"))));
        assert!(
            Matcher::from_body(ListEntryType::IpAddresses, b"  \n")
                .unwrap()
                .len()
                == 0
        );
        assert!(
            Matcher::from_body(ListEntryType::IpAddresses, b"whitelist:\n")
                .unwrap()
                .len()
                == 0
        );
        let e = Matcher::from_body(ListEntryType::IpAddresses, b"whitelist: [10.0.0.0/8, nope]")
            .unwrap_err();
        assert!(
            matches!(&e, ListError::Entry { at, reason } if at == "whitelist[1]" && reason.contains("not an IP address")),
            "{e}"
        );
        let e = Matcher::from_body(ListEntryType::IpAddresses, b"10.0.0.0/8\n10.1.0.0/16\n")
            .unwrap_err();
        assert!(matches!(e, ListError::NotYaml(_)), "{e}");
    }
}
