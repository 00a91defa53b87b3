//! Go `net/url.Parse` and `URL.String()`, plus Mixer's `uri()` check and
//! URI equality built on them.
//!
//! Follows Go 1.19 (the version Mixer's behaviour was verified with): error
//! texts are `parse "<input>": <reason>` (quoted since Go 1.14), and a URL
//! with a scheme and a path but no `//` remembers that it had no authority
//! (`OmitHost`), so `http:/x` and `http:///x` re-serialise differently.

use std::fmt;

use super::dns;
use super::goquote::{quote, quote_bytes};

/// A parsed URL, with Go's `url.URL` fields.
///
/// Go strings are byte strings, so a percent-escape may decode to bytes that
/// are not UTF-8 (`/%ff`). `host`, `path` and `fragment` then show U+FFFD in
/// place of such bytes, while the exact bytes are kept privately and used for
/// re-serialisation, so [`Url`]'s `Display` still matches Go's `String()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Url {
    /// Lower-cased scheme, empty for relative references.
    pub scheme: String,
    /// The rest after `scheme:` when it does not start with `/`
    /// (`urn:foo` has opaque `foo`).
    pub opaque: String,
    /// User information as re-serialised (`user` or `user:password`, each
    /// part percent-encoded the way Go's `Userinfo.String()` does).
    pub user: Option<String>,
    /// `host` or `host:port`, decoded (`[fe80::1%en0]` for a zone written
    /// `%25en0`).
    pub host: String,
    /// The decoded path.
    pub path: String,
    /// The path as written, when that differs from the default encoding of
    /// `path`; otherwise empty.
    pub raw_path: String,
    /// Set for `scheme:/path` (no `//`): the authority is absent rather than
    /// empty.
    pub omit_host: bool,
    /// Set when the URL ends in a lone `?` (an empty query that is kept).
    pub force_query: bool,
    /// The query as written, without `?`; not validated or decoded.
    pub raw_query: String,
    /// The decoded fragment, without `#`.
    pub fragment: String,
    /// The fragment as written, when that differs from the default encoding
    /// of `fragment`; otherwise empty.
    pub raw_fragment: String,
    /// Exact bytes of `host`, `path` and `fragment` when they are not UTF-8.
    host_bytes: Option<Vec<u8>>,
    path_bytes: Option<Vec<u8>>,
    fragment_bytes: Option<Vec<u8>>,
}

/// Splits decoded bytes into display text plus, if they are not UTF-8, the
/// exact bytes.
fn text_and_bytes(bytes: Vec<u8>) -> (String, Option<Vec<u8>>) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => (
            String::from_utf8_lossy(e.as_bytes()).into_owned(),
            Some(e.into_bytes()),
        ),
    }
}

/// Go's `url.Parse`: parses an absolute URL or a relative reference.
///
/// The fragment is split off at the first `#`. A scheme is
/// `[a-zA-Z][a-zA-Z0-9+.-]*:`; a leading `:` is `missing protocol scheme`,
/// and text that does not start like a scheme is a relative reference
/// (whose first path segment may not contain `:`). Errors look like
/// `parse ":a": missing protocol scheme`, `parse "http://a b": invalid
/// character " " in host name`, `parse "http://h:x": invalid port ":x" after
/// host`, `parse "%zz": invalid URL escape "%zz"`.
pub fn parse(s: &str) -> Result<Url, String> {
    let (rest, fragment) = match s.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (s, None),
    };
    // Like Go, errors before the fragment name only the part before '#'.
    let mut url =
        parse_without_fragment(rest).map_err(|e| format!("parse {}: {e}", quote(rest)))?;
    if let Some(frag) = fragment.filter(|f| !f.is_empty()) {
        let decoded =
            unescape(frag, Mode::Fragment).map_err(|e| format!("parse {}: {e}", quote(s)))?;
        url.raw_fragment = if escape(&decoded, Mode::Fragment) == frag {
            String::new()
        } else {
            frag.to_string()
        };
        (url.fragment, url.fragment_bytes) = text_and_bytes(decoded);
    }
    Ok(url)
}

/// Mixer's `uri()` check: the empty string is rejected with `empty string`
/// (the caller formats `error converting string to uri: empty string`),
/// anything else must pass [`parse`] (its Go error text is returned).
pub fn validate_uri(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty string".to_string());
    }
    parse(s).map(|_| ())
}

/// URI equality: both sides must parse; schemes compare
/// case-insensitively; for `http`/`https` the ports must be textually equal
/// (an empty port equals a missing one) and the host names equal under the
/// DNS rule ([`dns::dns_equal`], whose errors are returned); finally the
/// re-serialised URLs must be identical, so paths, queries and opaque parts
/// are case-sensitive and `http://host` differs from `http://host/`.
pub fn uri_equal(a: &str, b: &str) -> Result<bool, String> {
    let mut u1 = parse(a)?;
    let u2 = parse(b)?;
    if !u1.scheme.eq_ignore_ascii_case(&u2.scheme) {
        return Ok(false);
    }
    if u1.scheme == "http" || u1.scheme == "https" {
        if u1.port() != u2.port() {
            return Ok(false);
        }
        if !dns::dns_equal(u1.hostname(), u2.hostname())? {
            return Ok(false);
        }
        // Hosts are equal under the DNS rule; make them textually equal so
        // the final comparison only looks at the other components.
        u1.host.clone_from(&u2.host);
        u1.host_bytes.clone_from(&u2.host_bytes);
    }
    Ok(u1.to_string() == u2.to_string())
}

impl Url {
    /// Go's `URL.Hostname()`: the host without port and without IPv6
    /// brackets.
    pub fn hostname(&self) -> &str {
        split_host_port(&self.host).0
    }

    /// Go's `URL.Port()`: the digits after the last `:`, or `""` if there is
    /// no valid port (including a bare trailing `:`).
    pub fn port(&self) -> &str {
        split_host_port(&self.host).1
    }

    /// Go's `URL.EscapedPath()`: the path as written when that is a valid
    /// encoding of the current path, otherwise the default encoding.
    pub fn escaped_path(&self) -> String {
        let path = self.path_bytes.as_deref().unwrap_or(self.path.as_bytes());
        if let Some(raw) = valid_raw(&self.raw_path, path, Mode::Path) {
            return raw.to_string();
        }
        // Go leaves the path "*" alone (an OPTIONS request target).
        if path == b"*" {
            return "*".to_string();
        }
        escape(path, Mode::Path)
    }

    /// Go's `URL.EscapedFragment()`, analogous to [`Url::escaped_path`].
    pub fn escaped_fragment(&self) -> String {
        let fragment = self
            .fragment_bytes
            .as_deref()
            .unwrap_or(self.fragment.as_bytes());
        if let Some(raw) = valid_raw(&self.raw_fragment, fragment, Mode::Fragment) {
            return raw.to_string();
        }
        escape(fragment, Mode::Fragment)
    }
}

/// `raw` if it is a non-empty, valid encoding of exactly `decoded`.
fn valid_raw<'r>(raw: &'r str, decoded: &[u8], mode: Mode) -> Option<&'r str> {
    let matches = !raw.is_empty()
        && valid_encoded(raw, mode)
        && unescape(raw, mode).is_ok_and(|bytes| bytes == decoded);
    matches.then_some(raw)
}

/// Go's `URL.String()`: the re-serialised URL.
impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        if !self.scheme.is_empty() {
            out.push_str(&self.scheme);
            out.push(':');
        }
        if !self.opaque.is_empty() {
            out.push_str(&self.opaque);
        } else {
            let has_authority_parts = !self.host.is_empty() || self.user.is_some();
            // A user or host always needs the authority. Otherwise a URL with
            // a scheme prints an empty authority ("http:///p") unless it had
            // none at all ("http:/p", OmitHost).
            if has_authority_parts || (!self.scheme.is_empty() && !self.omit_host) {
                if has_authority_parts || !self.path.is_empty() {
                    out.push_str("//");
                }
                if let Some(user) = &self.user {
                    out.push_str(user);
                    out.push('@');
                }
                let host = self.host_bytes.as_deref().unwrap_or(self.host.as_bytes());
                out.push_str(&escape(host, Mode::Host));
            }
            let path = self.escaped_path();
            if !path.is_empty() && !path.starts_with('/') && !self.host.is_empty() {
                out.push('/');
            }
            // A relative path whose first segment has a colon would read as
            // a scheme; RFC 3986 §4.2 says to prefix "./".
            if out.is_empty() && path.split('/').next().is_some_and(|seg| seg.contains(':')) {
                out.push_str("./");
            }
            out.push_str(&path);
        }
        if self.force_query || !self.raw_query.is_empty() {
            out.push('?');
            out.push_str(&self.raw_query);
        }
        if !self.fragment.is_empty() {
            out.push('#');
            out.push_str(&self.escaped_fragment());
        }
        f.write_str(&out)
    }
}

/// Go's `parse(rawURL, viaRequest=false)`: everything but the fragment.
fn parse_without_fragment(raw: &str) -> Result<Url, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7F) {
        return Err("net/url: invalid control character in URL".to_string());
    }
    let mut url = Url::default();
    if raw == "*" {
        url.path = "*".to_string();
        return Ok(url);
    }

    let (scheme, mut rest) = split_scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();

    if rest.ends_with('?') && rest.matches('?').count() == 1 {
        url.force_query = true;
        rest = &rest[..rest.len() - 1];
    } else if let Some((before, query)) = rest.split_once('?') {
        url.raw_query = query.to_string();
        rest = before;
    }

    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            // Rootless paths after a scheme are opaque (RFC 3986).
            url.opaque = rest.to_string();
            return Ok(url);
        }
        // "cache_object:foo" is not a scheme, but a relative reference may
        // not have a colon in its first segment either (RFC 3986 §3.3).
        if rest.split('/').next().is_some_and(|seg| seg.contains(':')) {
            return Err("first path segment in URL cannot contain colon".to_string());
        }
    }

    if (!url.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let after = &rest[2..];
        let (authority, path) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        let (user, host) = parse_authority(authority)?;
        url.user = user;
        (url.host, url.host_bytes) = text_and_bytes(host);
        rest = path;
    } else if !url.scheme.is_empty() && rest.starts_with('/') {
        url.omit_host = true;
    }

    let decoded = unescape(rest, Mode::Path)?;
    url.raw_path = if escape(&decoded, Mode::Path) == rest {
        String::new()
    } else {
        rest.to_string()
    };
    (url.path, url.path_bytes) = text_and_bytes(decoded);
    Ok(url)
}

/// Splits off `scheme:`. Returns an empty scheme when the text does not
/// start with a letter followed by scheme characters and a colon.
fn split_scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".to_string()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

/// Parses `[userinfo@]host[:port]`. The last `@` separates user
/// information, which is validated and re-encoded canonically.
fn parse_authority(authority: &str) -> Result<(Option<String>, Vec<u8>), String> {
    let Some(at) = authority.rfind('@') else {
        return Ok((None, parse_host(authority)?));
    };
    let host = parse_host(&authority[at + 1..])?;
    let userinfo = &authority[..at];
    if !valid_userinfo(userinfo) {
        return Err("net/url: invalid userinfo".to_string());
    }
    let user = match userinfo.split_once(':') {
        None => escape(&unescape(userinfo, Mode::UserPassword)?, Mode::UserPassword),
        Some((name, password)) => format!(
            "{}:{}",
            escape(&unescape(name, Mode::UserPassword)?, Mode::UserPassword),
            escape(&unescape(password, Mode::UserPassword)?, Mode::UserPassword)
        ),
    };
    Ok((Some(user), host))
}

/// Validates and decodes a host (with optional port), including bracketed
/// IPv6 literals whose zone is introduced by `%25` (RFC 6874).
fn parse_host(host: &str) -> Result<Vec<u8>, String> {
    if host.starts_with('[') {
        let Some(close) = host.rfind(']') else {
            return Err("missing ']' in host".to_string());
        };
        let colon_port = &host[close + 1..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {} after host", quote(colon_port)));
        }
        if let Some(zone) = host[..close].find("%25") {
            // The zone may use escapes the host part may not.
            let mut bytes = unescape(&host[..zone], Mode::Host)?;
            bytes.extend(unescape(&host[zone..close], Mode::Zone)?);
            bytes.extend(unescape(&host[close..], Mode::Host)?);
            return Ok(bytes);
        }
    } else if let Some(colon) = host.rfind(':') {
        let colon_port = &host[colon..];
        if !valid_optional_port(colon_port) {
            return Err(format!("invalid port {} after host", quote(colon_port)));
        }
    }
    unescape(host, Mode::Host)
}

/// `""` or `:` followed by digits only.
fn valid_optional_port(port: &str) -> bool {
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Go's `splitHostPort` behind `Hostname()` and `Port()`.
fn split_host_port(host_port: &str) -> (&str, &str) {
    let (mut host, mut port) = (host_port, "");
    if let Some(colon) = host_port.rfind(':')
        && valid_optional_port(&host_port[colon..])
    {
        host = &host_port[..colon];
        port = &host_port[colon + 1..];
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        host = inner;
    }
    (host, port)
}

/// Characters allowed in user information (RFC 3986 `userinfo`, plus `@`
/// which Go tolerates because only the last `@` ends it).
fn valid_userinfo(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '-' | '.'
                    | '_'
                    | ':'
                    | '~'
                    | '!'
                    | '$'
                    | '&'
                    | '\''
                    | '('
                    | ')'
                    | '*'
                    | '+'
                    | ','
                    | ';'
                    | '='
                    | '%'
                    | '@'
            )
    })
}

/// Which URL component is being encoded or decoded; the allowed characters
/// differ per component (Go's `encoding` type).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    Zone,
    UserPassword,
    Fragment,
}

/// Go's `shouldEscape`: whether byte `c` must be percent-encoded in `mode`.
fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if matches!(mode, Mode::Host | Mode::Zone) {
        // Sub-delimiters, ':' for the port, '[' ']' for IPv6 literals, and
        // the few characters Parse would otherwise reject because hosts
        // cannot %-encode ASCII.
        if matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
        ) {
            return false;
        }
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            // The path may hold every reserved character except '?'.
            Mode::Path => c == b'?',
            Mode::UserPassword => matches!(c, b'@' | b'/' | b'?' | b':'),
            Mode::Fragment => false,
            // Host/Zone reach here only for '/', '?' and '@'.
            Mode::Host | Mode::Zone => true,
        },
        // The fragment may keep these sub-delimiters (but not '\'').
        b'!' | b'(' | b')' | b'*' if mode == Mode::Fragment => false,
        _ => true,
    }
}

/// Go's `unescape` without query handling: validates `%XX` escapes (and, for
/// hosts, the characters and the escapes allowed there) and decodes them.
fn unescape(s: &str, mode: Mode) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if i + 2 >= b.len()
                    || !b[i + 1].is_ascii_hexdigit()
                    || !b[i + 2].is_ascii_hexdigit()
                {
                    // Go quotes at most three bytes of the bad escape; they
                    // may end inside a multi-byte character.
                    let end = (i + 3).min(b.len());
                    return Err(format!("invalid URL escape {}", quote_bytes(&b[i..end])));
                }
                let v = hex_value(b[i + 1]) << 4 | hex_value(b[i + 2]);
                let escape_text = &s[i..i + 3];
                // RFC 3986: hosts may only %-encode non-ASCII bytes, except
                // "%25" which introduces an IPv6 zone (RFC 6874).
                if mode == Mode::Host && v < 0x80 && escape_text != "%25" {
                    return Err(format!("invalid URL escape {}", quote(escape_text)));
                }
                // Zones may escape only what could appear literally in a
                // host (and spaces, which Windows uses).
                if mode == Mode::Zone
                    && escape_text != "%25"
                    && v != b' '
                    && should_escape(v, Mode::Host)
                {
                    return Err(format!("invalid URL escape {}", quote(escape_text)));
                }
                out.push(v);
                i += 3;
            }
            c => {
                if matches!(mode, Mode::Host | Mode::Zone) && c < 0x80 && should_escape(c, mode) {
                    return Err(format!(
                        "invalid character {} in host name",
                        quote(&(c as char).to_string())
                    ));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Value of an ASCII hex digit (caller has checked it is one).
fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Go's `escape` for non-query modes: percent-encodes (upper-case hex) every
/// byte that [`should_escape`] selects.
fn escape(bytes: &[u8], mode: Mode) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &c in bytes {
        if should_escape(c, mode) {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 15)]));
        } else {
            out.push(char::from(c));
        }
    }
    out
}

/// Go's `validEncoded`: whether `s` is acceptable as the encoded form (only
/// characters that need no escaping, sub-delimiters, and `%`).
fn valid_encoded(s: &str, mode: Mode) -> bool {
    s.bytes().all(|c| {
        matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'['
                | b']'
                | b'%'
        ) || !should_escape(c, mode)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(s: &str) -> String {
        parse(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .to_string()
    }

    #[test]
    fn accepts_conformance_values() {
        for s in [
            "http://istio.io",
            "urn:foo",
            "urn:foo/bar",
            "urn:foo/bar?q=5#frr",
            "http://foo",
            "http://foo/bar",
            "http://foo/bar/",
            "http://foo/bar/?q=4#fr",
            "https://foo/bar/?q=4#fr",
            "https://kubernetes.io",
            "ftp://ftp.istio.io/releases",
            "fs:foo",
            "fs:/foo",
            "http://[fe80::1%25en0]",
            "foo",
            "foo.bar.com",
            "a",
            "scheme:bar",
        ] {
            assert_eq!(validate_uri(s), Ok(()), "{s:?}");
            assert_eq!(round_trip(s), s);
        }
    }

    #[test]
    fn rejects_conformance_values() {
        assert_eq!(validate_uri("").unwrap_err(), "empty string");
        assert_eq!(
            validate_uri(":/").unwrap_err(),
            r#"parse ":/": missing protocol scheme"#
        );
        assert_eq!(
            validate_uri(":a").unwrap_err(),
            r#"parse ":a": missing protocol scheme"#
        );
        assert_eq!(
            validate_uri("http://[fe80::1%25en0").unwrap_err(),
            r#"parse "http://[fe80::1%25en0": missing ']' in host"#
        );
        assert_eq!(
            validate_uri("http://a b").unwrap_err(),
            r#"parse "http://a b": invalid character " " in host name"#
        );
    }

    #[test]
    fn errors_like_go() {
        for (input, want) in [
            (
                "http://h:x",
                r#"parse "http://h:x": invalid port ":x" after host"#,
            ),
            (
                "http://[::1]:x",
                r#"parse "http://[::1]:x": invalid port ":x" after host"#,
            ),
            (
                "http://[::1]x",
                r#"parse "http://[::1]x": invalid port "x" after host"#,
            ),
            ("%zz", r#"parse "%zz": invalid URL escape "%zz""#),
            (
                "http://x/%4",
                r#"parse "http://x/%4": invalid URL escape "%4""#,
            ),
            (
                "http://x/%",
                r#"parse "http://x/%": invalid URL escape "%""#,
            ),
            ("/%a\u{e9}", r#"parse "/%aé": invalid URL escape "%a\xc3""#),
            (
                "http://%41/",
                r#"parse "http://%41/": invalid URL escape "%41""#,
            ),
            (
                "http://x/#%zz",
                r#"parse "http://x/#%zz": invalid URL escape "%zz""#,
            ),
            (
                "http://a b#frag",
                r#"parse "http://a b": invalid character " " in host name"#,
            ),
            (
                "http://a{b}/",
                r#"parse "http://a{b}/": invalid character "{" in host name"#,
            ),
            (
                "1a:b",
                r#"parse "1a:b": first path segment in URL cannot contain colon"#,
            ),
            (
                "a b:c",
                r#"parse "a b:c": first path segment in URL cannot contain colon"#,
            ),
            (
                "http://x\n",
                "parse \"http://x\\n\": net/url: invalid control character in URL",
            ),
            (
                "http://a^b@host/",
                r#"parse "http://a^b@host/": net/url: invalid userinfo"#,
            ),
            (
                "http://u%zz@host/",
                r#"parse "http://u%zz@host/": invalid URL escape "%zz""#,
            ),
            (
                "http://[fe80::1%25%2F]",
                r#"parse "http://[fe80::1%25%2F]": invalid URL escape "%2F""#,
            ),
        ] {
            assert_eq!(parse(input).unwrap_err(), want, "{input:?}");
        }
    }

    #[test]
    fn splits_components_like_go() {
        let u = parse("HTTP://user:p%40ss@Host.com:8080/a%2Fb/c?x=1&y#frag%20x").unwrap();
        assert_eq!(u.scheme, "http");
        assert_eq!(u.user.as_deref(), Some("user:p%40ss"));
        assert_eq!(u.host, "Host.com:8080");
        assert_eq!(u.hostname(), "Host.com");
        assert_eq!(u.port(), "8080");
        assert_eq!(u.path, "/a/b/c");
        assert_eq!(u.raw_path, "/a%2Fb/c");
        assert_eq!(u.raw_query, "x=1&y");
        assert_eq!(u.fragment, "frag x");
        assert_eq!(
            u.to_string(),
            "http://user:p%40ss@Host.com:8080/a%2Fb/c?x=1&y#frag%20x"
        );

        let u = parse("http://[fe80::1%25en0]:80/").unwrap();
        assert_eq!(u.host, "[fe80::1%en0]:80");
        assert_eq!(u.hostname(), "fe80::1%en0");
        assert_eq!(u.port(), "80");

        let u = parse("urn:foo/bar?q=5#frr").unwrap();
        assert_eq!(
            (u.opaque.as_str(), u.raw_query.as_str(), u.fragment.as_str()),
            ("foo/bar", "q=5", "frr")
        );

        let u = parse("http://HOST.COM:").unwrap();
        assert_eq!((u.hostname(), u.port()), ("HOST.COM", ""));

        let u = parse("http://x/?").unwrap();
        assert!(u.force_query);
        assert_eq!(u.to_string(), "http://x/?");

        let u = parse("mailto:a@b.com").unwrap();
        assert_eq!(u.opaque, "a@b.com");

        assert_eq!(parse("*").unwrap().path, "*");
        assert_eq!(parse("//host/p").unwrap().host, "host");
        assert_eq!(parse("///p").unwrap().path, "///p");
        assert!(parse("http:/p").unwrap().omit_host);
        // A zone may escape characters that could appear literally.
        assert_eq!(parse("http://[fe80::1%25%41]").unwrap().host, "[fe80::1%A]");
    }

    #[test]
    fn reserialises_like_go() {
        for (input, want) in [
            ("http:/p", "http:/p"),
            ("http:///p", "http:///p"),
            ("http://", "http:"),
            ("http://host", "http://host"),
            ("http://host/", "http://host/"),
            ("http://h/a b", "http://h/a%20b"),
            ("http://h/a%20b", "http://h/a%20b"),
            ("http://h/%7e", "http://h/%7e"),
            ("http://h/\u{e9}", "http://h/%C3%A9"),
            ("http://h/%ff", "http://h/%ff"),
            ("%F6d", "%F6d"),
            ("%f6d", "%f6d"),
            ("x#%ff", "x#%ff"),
            ("x#%FF", "x#%FF"),
            ("foo://h%c3%bc/", "foo://h%C3%BC/"),
            ("foo://h%ff/", "foo://h%FF/"),
            ("http://h/a{b", "http://h/a%7Bb"),
            ("http://b\u{fc}cher.de/", "http://b%C3%BCcher.de/"),
            ("./a:b", "./a:b"),
            ("http://h#a b", "http://h#a%20b"),
            ("http://h#a!b", "http://h#a!b"),
            ("http://u@h", "http://u@h"),
            ("http://@h", "http://@h"),
            ("HTTP://h", "http://h"),
        ] {
            assert_eq!(round_trip(input), want, "{input:?}");
        }
    }

    #[test]
    fn equality_like_mixer() {
        for (a, b, want) in [
            ("http://istio.io:80", "http://istio.io:81", false),
            ("http://istio.io:80", "http://istio.io:80", true),
            ("http://foo.bar.com", "http://fOO.bar.com", true),
            ("http://foo.bar.baz", "http://foo.Bar.baz.", true),
            ("https://foo.bar.baz", "https://foo.Bar.baz.", true),
            ("foo.bar.com", "https://foo.Bar.baz.", false),
            ("scheme:bar", "scheme:bar", true),
            ("urn:bar", "URN:bar", true),
            ("http://HOST", "http://host", true),
            ("http://HOST.com", "http://host.COM", true),
            ("http://HOST.COM:", "http://host.COM", true),
            ("HTTP://host.com:", "http://host.com", true),
            ("urn:BAR", "urn:bar", false),
            ("http://host", "http://host/", false),
            ("http://host:80", "http://host:81", false),
            ("http://host.com", "https://host.com", false),
            ("http://host/Path", "http://host/path", false),
            ("http://host/p?q=A", "http://host/p?q=a", false),
            ("ftp://HOST/p", "ftp://host/p", false),
            ("http://h/a%20b", "http://h/a b", true),
            ("http://h/%ff", "http://h/%fe", false),
            ("foo://h%ff/", "foo://h%fe/", false),
            ("foo://h%ff/", "foo://h%FF/", true),
        ] {
            assert_eq!(uri_equal(a, b), Ok(want), "{a:?} == {b:?}");
        }
        assert_eq!(
            uri_equal("a", ":/").unwrap_err(),
            r#"parse ":/": missing protocol scheme"#
        );
        assert_eq!(
            uri_equal("http://b-", "http://b").unwrap_err(),
            r#"idna: invalid label "b-""#
        );
    }
}
