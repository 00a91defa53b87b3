//! Go `net/mail.ParseAddress`, plus Mixer's `email()` check and
//! EMAIL_ADDRESS equality built on it.
//!
//! Follows Go 1.19, the version Mixer's observed behaviour comes from. Later
//! Go versions added domain literals (`a@[1.2.3.4]`), which 1.19 rejects.
//! RFC 2047 encoded words in display names are not decoded: a display name
//! only matters for being present or not.
//!
//! The parser follows the structure of Go's `addrParser`: it first tries a
//! bare `addr-spec` and, when that fails, re-reads the input as a display
//! name followed by `<addr-spec>` (or a group). That fallback is why Go's
//! error for `foo@` is `mail: no angle-addr`: the text is read as a display
//! name and then a `<` is missing. Reproducing the structure reproduces those
//! messages.

use super::dns;
use super::goquote::{quote, quote_rune};

/// The message `email()` reports for an address with a display name. Mixer
/// appends it *without* quotes (`error converting '<s>' to e-mail: display
/// names are not allowed`), unlike the other messages of
/// [`validate_email`], which it wraps in single quotes.
pub const DISPLAY_NAMES_NOT_ALLOWED: &str = "display names are not allowed";

/// A parsed mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The display name (phrase or trailing comment), empty if none.
    pub name: String,
    /// `local@domain`. The local part is written without quotes when it is a
    /// valid dot-atom (`"istio"@istio.io` gives `istio@istio.io`) and quoted
    /// otherwise (`"john..doe"@bar.com` stays quoted), like Go's
    /// `Address.String()`. Go's own `Address` field holds the local part
    /// unquoted in both cases; quoting keeps the text unambiguous and does
    /// not change any comparison of two parsed addresses.
    pub address: String,
}

/// Parses a single RFC 5322 address like Go's `net/mail.ParseAddress`.
///
/// Accepted forms include `local@domain`, `<local@domain>`,
/// `Display Name <local@domain>`, `local@domain (comment)`, quoted local
/// parts and a group holding exactly one address (`g: a@b.com;`).
/// Surrounding spaces/tabs and trailing comments are allowed.
///
/// Error texts are Go's, e.g. `mail: no address`, `mail: missing '@' or
/// angle-addr`, `mail: no angle-addr`, `mail: unclosed angle-addr`,
/// `mail: expected single address, got "…"`.
pub fn parse_address(s: &str) -> Result<Address, String> {
    let mut p = Parser { s };
    let mut addrs = p.parse_address(true)?;
    if !p.skip_cfws() {
        return Err("mail: misformatted parenthetical comment".to_string());
    }
    if !p.s.is_empty() {
        return Err(format!("mail: expected single address, got {}", quote(p.s)));
    }
    match addrs.len() {
        0 => Err("mail: empty group".to_string()),
        1 => Ok(addrs.remove(0)),
        _ => Err("mail: group with multiple addresses".to_string()),
    }
}

/// Mixer's `email()` check: the text must parse as a single address without
/// a display name, and its domain must be accepted by `dnsName()`.
///
/// Errors: the Go parse message (`mail: no address`), or
/// [`DISPLAY_NAMES_NOT_ALLOWED`], or `error converting '<domain>' to dns
/// name: '<idna message>'`. The caller adds the `error converting '<s>' to
/// e-mail: ` wrapping.
pub fn validate_email(s: &str) -> Result<(), String> {
    let addr = parse_address(s)?;
    if !addr.name.is_empty() {
        return Err(DISPLAY_NAMES_NOT_ALLOWED.to_string());
    }
    let (_, domain) = split_address(&addr.address);
    dns::to_unicode(domain)
        .map(|_| ())
        .map_err(|e| format!("error converting '{domain}' to dns name: '{e}'"))
}

/// EMAIL_ADDRESS equality: both sides must parse (display names
/// are allowed and ignored); domains compare with the DNS rule
/// ([`dns::dns_equal`]) and local parts exactly, case included.
pub fn email_equal(a: &str, b: &str) -> Result<bool, String> {
    let a = parse_address(a)?;
    let b = parse_address(b)?;
    let (local_a, domain_a) = split_address(&a.address);
    let (local_b, domain_b) = split_address(&b.address);
    if !dns::dns_equal(domain_a, domain_b)? {
        return Ok(false);
    }
    Ok(local_a == local_b)
}

/// Splits at the last `@` (Mixer's `getEmailParts`); no `@` means all local.
fn split_address(address: &str) -> (&str, &str) {
    address.rsplit_once('@').unwrap_or((address, ""))
}

/// Recursive-descent state: the unparsed rest of the input.
struct Parser<'a> {
    s: &'a str,
}

impl Parser<'_> {
    /// Parses one `address` (mailbox or, if allowed, group).
    fn parse_address(&mut self, handle_group: bool) -> Result<Vec<Address>, String> {
        self.skip_space();
        if self.s.is_empty() {
            return Err("mail: no address".to_string());
        }

        // An addr-spec is the more restricted form, so try it first.
        if let Ok(spec) = self.consume_addr_spec() {
            let mut name = String::new();
            self.skip_space();
            if self.peek() == Some('(') {
                name = self.consume_display_name_comment()?;
            }
            return Ok(vec![Address {
                name,
                address: spec,
            }]);
        }

        let mut display_name = String::new();
        if self.peek() != Some('<') {
            display_name = self.consume_phrase()?;
        }
        self.skip_space();
        if handle_group && self.consume(':') {
            return self.consume_group_list();
        }
        if !self.consume('<') {
            // Go picks the message by guessing what was meant: text that
            // could be a local part ("foo.bar") probably lacks "@domain",
            // anything else ("Full Name", "foo@") probably lacks "<...>".
            return if display_name.chars().all(|c| is_atext(c, true, false)) {
                Err("mail: missing '@' or angle-addr".to_string())
            } else {
                Err("mail: no angle-addr".to_string())
            };
        }
        let spec = self.consume_addr_spec()?;
        if !self.consume('>') {
            return Err("mail: unclosed angle-addr".to_string());
        }
        Ok(vec![Address {
            name: display_name,
            address: spec,
        }])
    }

    /// Parses the addresses of a group after its `:` up to the `;`.
    fn consume_group_list(&mut self) -> Result<Vec<Address>, String> {
        let mut group = Vec::new();
        self.skip_space();
        if self.consume(';') {
            self.skip_cfws();
            return Ok(group);
        }
        loop {
            self.skip_space();
            // Groups do not nest.
            group.extend(self.parse_address(false)?);
            if !self.skip_cfws() {
                return Err("mail: misformatted parenthetical comment".to_string());
            }
            if self.consume(';') {
                self.skip_cfws();
                return Ok(group);
            }
            if !self.consume(',') {
                return Err("mail: expected comma".to_string());
            }
        }
    }

    /// Parses `local-part "@" domain`. On failure the input is left
    /// untouched so the caller can re-read it as a display name.
    fn consume_addr_spec(&mut self) -> Result<String, String> {
        let orig = self.s;
        let result = self.consume_addr_spec_inner();
        if result.is_err() {
            self.s = orig;
        }
        result
    }

    /// Body of [`Self::consume_addr_spec`], without the rollback.
    fn consume_addr_spec_inner(&mut self) -> Result<String, String> {
        self.skip_space();
        if self.s.is_empty() {
            return Err("mail: no addr-spec".to_string());
        }
        let local = if self.peek() == Some('"') {
            match self.consume_quoted_string() {
                Ok(q) if !q.is_empty() => q,
                // Go reports any failure here as an empty quoted string.
                _ => return Err("mail: empty quoted string in addr-spec".to_string()),
            }
        } else {
            self.consume_atom(true, false)?
        };
        if !self.consume('@') {
            return Err("mail: missing @ in addr-spec".to_string());
        }
        self.skip_space();
        if self.s.is_empty() {
            return Err("mail: no domain in addr-spec".to_string());
        }
        let domain = self.consume_atom(true, false)?;
        Ok(format!("{}@{}", quote_local_part(&local), domain))
    }

    /// Parses a `phrase` (display name): one or more atoms or quoted
    /// strings. Atoms are read permissively (dots and most specials, even
    /// parentheses, are allowed), as Go does, so `Joe (x) Q` is a name of
    /// three words rather than one with a comment.
    fn consume_phrase(&mut self) -> Result<String, String> {
        let mut words: Vec<String> = Vec::new();
        let mut last_err = None;
        loop {
            self.skip_space();
            if self.s.is_empty() {
                break;
            }
            let word = if self.peek() == Some('"') {
                self.consume_quoted_string()
            } else {
                self.consume_atom(true, true)
            };
            match word {
                Ok(w) => words.push(w),
                Err(e) => {
                    last_err = Some(e);
                    break;
                }
            }
        }
        match last_err {
            // An error after at least one word just ends the phrase.
            Some(e) if words.is_empty() => Err(format!("mail: missing word in phrase: {e}")),
            _ => Ok(words.join(" ")),
        }
    }

    /// Parses an atom (or dot-atom when `dot`). Non-permissive atoms may not
    /// start or end with a dot or contain two dots in a row.
    fn consume_atom(&mut self, dot: bool, permissive: bool) -> Result<String, String> {
        let end = self
            .s
            .find(|c: char| !is_atext(c, dot, permissive))
            .unwrap_or(self.s.len());
        if end == 0 {
            return Err("mail: invalid string".to_string());
        }
        let atom = &self.s[..end];
        self.s = &self.s[end..];
        if !permissive {
            if atom.starts_with('.') {
                return Err("mail: leading dot in atom".to_string());
            }
            if atom.contains("..") {
                return Err("mail: double dot in atom".to_string());
            }
            if atom.ends_with('.') {
                return Err("mail: trailing dot in atom".to_string());
            }
        }
        Ok(atom.to_string())
    }

    /// Parses a quoted string (the input starts with `"`), returning its
    /// content with quoted-pairs resolved.
    fn consume_quoted_string(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let mut escaped = false;
        // Skip the opening quote.
        for (i, c) in self.s.char_indices().skip(1) {
            if escaped {
                // quoted-pair = "\" (VCHAR / WSP)
                if !is_vchar(c) && !is_wsp(c) {
                    return Err(format!(
                        "mail: bad character in quoted-string: {}",
                        quote_rune(c)
                    ));
                }
                out.push(c);
                escaped = false;
            } else if is_qtext(c) || is_wsp(c) {
                out.push(c);
            } else if c == '"' {
                self.s = &self.s[i + 1..];
                return Ok(out);
            } else if c == '\\' {
                escaped = true;
            } else {
                return Err(format!(
                    "mail: bad character in quoted-string: {}",
                    quote_rune(c)
                ));
            }
        }
        Err("mail: unclosed quoted-string".to_string())
    }

    /// Parses a comment used as a display name (`addr (Name)`); its words
    /// are joined with single spaces.
    fn consume_display_name_comment(&mut self) -> Result<String, String> {
        if !self.consume('(') {
            return Err("mail: comment does not start with (".to_string());
        }
        let (comment, ok) = self.consume_comment();
        if !ok {
            return Err("mail: misformatted parenthetical comment".to_string());
        }
        Ok(comment
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" "))
    }

    /// Consumes a (possibly nested) comment after its `(`; returns the text
    /// and whether the comment was closed. A backslash escapes the next
    /// character.
    fn consume_comment(&mut self) -> (String, bool) {
        let mut depth = 1;
        let mut comment = String::new();
        let mut chars = self.s.char_indices();
        let mut consumed = self.s.len();
        while let Some((i, c)) = chars.next() {
            let c = if c == '\\' {
                match chars.next() {
                    Some((_, next)) => next,
                    // A trailing backslash is kept as text, as in Go.
                    None => c,
                }
            } else {
                if c == '(' {
                    depth += 1;
                } else if c == ')' {
                    depth -= 1;
                }
                c
            };
            if depth == 0 {
                consumed = i + 1;
                break;
            }
            comment.push(c);
        }
        self.s = &self.s[consumed..];
        (comment, depth == 0)
    }

    /// Skips spaces and tabs (not CR/LF, as in Go).
    fn skip_space(&mut self) {
        self.s = self.s.trim_start_matches([' ', '\t']);
    }

    /// Skips white space and comments; false if a comment is unclosed.
    fn skip_cfws(&mut self) -> bool {
        self.skip_space();
        while self.consume('(') {
            if !self.consume_comment().1 {
                return false;
            }
            self.skip_space();
        }
        true
    }

    /// Consumes `c` if it is next.
    fn consume(&mut self, c: char) -> bool {
        match self.s.strip_prefix(c) {
            Some(rest) => {
                self.s = rest;
                true
            }
            None => false,
        }
    }

    /// The next character, if any.
    fn peek(&self) -> Option<char> {
        self.s.chars().next()
    }
}

/// Writes a local part as Go's `Address.String()` would: bare if it is a
/// dot-atom, otherwise quoted with `"` and `\` escaped.
fn quote_local_part(local: &str) -> String {
    let is_dot_atom = !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| is_atext(c, true, false));
    if is_dot_atom {
        return local.to_string();
    }
    let mut out = String::with_capacity(local.len() + 2);
    out.push('"');
    for c in local.chars() {
        if !(is_qtext(c) || is_wsp(c)) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// RFC 5322 `atext` (plus `.` when `dot`). `permissive` also admits the
/// specials Go tolerates inside display names, except `<`, `>`, `"` and
/// `:`, which delimit the rest of an address.
fn is_atext(c: char, dot: bool, permissive: bool) -> bool {
    match c {
        '.' => dot,
        '(' | ')' | '[' | ']' | ';' | '@' | '\\' | ',' => permissive,
        '<' | '>' | '"' | ':' => false,
        _ => is_vchar(c),
    }
}

/// RFC 5322 `VCHAR`, extended to all non-ASCII characters (RFC 6532).
fn is_vchar(c: char) -> bool {
    ('!'..='~').contains(&c) || !c.is_ascii()
}

/// RFC 5322 `qtext`: visible characters except `"` and `\`.
fn is_qtext(c: char) -> bool {
    c != '"' && c != '\\' && is_vchar(c)
}

/// White space inside a line: space or tab.
fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(name: &str, address: &str) -> Result<Address, String> {
        Ok(Address {
            name: name.to_string(),
            address: address.to_string(),
        })
    }

    #[test]
    fn parses_valid_addresses() {
        assert_eq!(parse_address("istio@istio.io"), addr("", "istio@istio.io"));
        assert_eq!(parse_address("foo@bar"), addr("", "foo@bar"));
        assert_eq!(parse_address("foo+a@bar.com"), addr("", "foo+a@bar.com"));
        assert_eq!(
            parse_address("\"istio\"@istio.io"),
            addr("", "istio@istio.io")
        );
        assert_eq!(
            parse_address("\"john..doe\"@bar.com"),
            addr("", "\"john..doe\"@bar.com")
        );
        assert_eq!(
            parse_address(r#""a\"b c"@x.com"#),
            addr("", r#""a\"b c"@x.com"#)
        );
        assert_eq!(parse_address("<a@b.com>"), addr("", "a@b.com"));
        assert_eq!(parse_address("a@b.com "), addr("", "a@b.com"));
        assert_eq!(parse_address("  a@b.com\t"), addr("", "a@b.com"));
        assert_eq!(
            parse_address("aaaa <johndoe@bar.com>"),
            addr("aaaa", "johndoe@bar.com")
        );
        assert_eq!(
            parse_address("\"Joe Q. Public\" <john.q.public@example.com>"),
            addr("Joe Q. Public", "john.q.public@example.com")
        );
        assert_eq!(
            parse_address("John (middle) Doe <jdoe@machine.example>"),
            addr("John (middle) Doe", "jdoe@machine.example")
        );
        assert_eq!(
            parse_address("jdoe@machine.example (John  Doe)"),
            addr("John Doe", "jdoe@machine.example")
        );
        assert_eq!(parse_address("a@b.com ( )"), addr("", "a@b.com"));
        assert_eq!(parse_address("a@b.com (c) (d)"), addr("c", "a@b.com"));
        assert_eq!(parse_address("g: a@b.com;"), addr("", "a@b.com"));
        assert_eq!(parse_address("g: Al <a@b.com>;"), addr("Al", "a@b.com"));
        assert_eq!(parse_address("ü@bücher.de"), addr("", "ü@bücher.de"));
    }

    #[test]
    fn errors_like_go() {
        for (input, want) in [
            ("", "mail: no address"),
            ("  ", "mail: no address"),
            ("foo", "mail: missing '@' or angle-addr"),
            ("foo.", "mail: missing '@' or angle-addr"),
            ("barfoo", "mail: missing '@' or angle-addr"),
            ("foo@", "mail: no angle-addr"),
            ("foo..baz@bar.com", "mail: no angle-addr"),
            (".foo@bar.com", "mail: no angle-addr"),
            ("foo bar", "mail: no angle-addr"),
            ("a@b.com x", "mail: expected single address, got \"x\""),
            ("a@b.com\n", "mail: expected single address, got \"\\n\""),
            (
                "a@b.com, c@d.com",
                "mail: expected single address, got \", c@d.com\"",
            ),
            ("<a@b.com", "mail: unclosed angle-addr"),
            ("<a@b.com >", "mail: unclosed angle-addr"),
            ("<>", "mail: invalid string"),
            ("<\"\">", "mail: empty quoted string in addr-spec"),
            ("<\"a>", "mail: empty quoted string in addr-spec"),
            ("Name <foo>", "mail: missing @ in addr-spec"),
            ("Name <foo@>", "mail: invalid string"),
            ("<foo@", "mail: no domain in addr-spec"),
            // A bare domain may not end with a dot (non-permissive atom).
            ("foo@bar.com.", "mail: no angle-addr"),
            ("<foo@bar.com.>", "mail: trailing dot in atom"),
            (
                "a@b.com (unclosed",
                "mail: misformatted parenthetical comment",
            ),
            ("g: ;", "mail: empty group"),
            (
                "g: a@b.com, c@d.com;",
                "mail: group with multiple addresses",
            ),
            ("g: a@b.com c@d.com;", "mail: expected comma"),
            (
                "\"unclosed",
                "mail: missing word in phrase: mail: unclosed quoted-string",
            ),
            // Go 1.19 has no domain literals; a failed bare addr-spec is
            // re-read as a display name.
            ("a@[1.2.3.4]", "mail: no angle-addr"),
            ("<a@[1.2.3.4]>", "mail: invalid string"),
            ("[ (, <", "mail: no addr-spec"),
            ("<a@b.com> (x", "mail: misformatted parenthetical comment"),
        ] {
            assert_eq!(parse_address(input), Err(want.to_string()), "{input:?}");
        }
    }

    #[test]
    fn validate_email_like_mixer() {
        for ok in [
            "istio@istio.io",
            "foo@bar.com",
            "\"istio\"@istio.io",
            "foo@bar",
            "foo+a@bar.com",
            "\"john..doe\"@bar.com",
            "<a@b.com>",
            "a@b.com ",
            "pilot@istio.io",
        ] {
            assert_eq!(validate_email(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(validate_email("").unwrap_err(), "mail: no address");
        assert_eq!(
            validate_email("barfoo").unwrap_err(),
            "mail: missing '@' or angle-addr"
        );
        assert_eq!(
            validate_email("foo.").unwrap_err(),
            "mail: missing '@' or angle-addr"
        );
        assert_eq!(validate_email("foo@").unwrap_err(), "mail: no angle-addr");
        assert_eq!(
            validate_email("foo+a@bar-.com").unwrap_err(),
            r#"error converting 'bar-.com' to dns name: 'idna: invalid label "bar-"'"#
        );
        assert_eq!(
            validate_email("aaaa <johndoe@bar.com>").unwrap_err(),
            DISPLAY_NAMES_NOT_ALLOWED
        );
    }

    #[test]
    fn equality_like_mixer() {
        for (a, b, want) in [
            ("istio@istio.io", "istio@istio.io", true),
            ("istio@istio.io", "pilot@istio.io", false),
            ("foo@Bar.com", "foo@bar.com", true),
            ("\"foo\"@bar.com", "foo@bar.com", true),
            ("foo@bar.com", "foo@foo.com", false),
            ("foo@foo.com", "bar@foo.com", false),
            ("Foo@bar.com", "foo@bar.com", false),
            ("Foo <foo@bar.com>", "foo@bar.com", true),
            ("\"john..doe\"@bar.com", "\"john..doe\"@BAR.com", true),
        ] {
            assert_eq!(email_equal(a, b), Ok(want), "{a:?} == {b:?}");
        }
        assert_eq!(
            email_equal("foo@bar.com", "foo..baz@bar.com").unwrap_err(),
            "mail: no angle-addr"
        );
        assert_eq!(
            email_equal("foo", "foo@bar.com").unwrap_err(),
            "mail: missing '@' or angle-addr"
        );
        assert!(email_equal("a@b-", "a@b").is_err());
    }

    #[test]
    fn quotes_local_parts_like_go() {
        assert_eq!(quote_local_part("a.b"), "a.b");
        assert_eq!(quote_local_part("a..b"), "\"a..b\"");
        assert_eq!(quote_local_part(".a"), "\".a\"");
        assert_eq!(quote_local_part("a b"), "\"a b\"");
        assert_eq!(quote_local_part("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote_local_part("a@b"), "\"a@b\"");
    }
}
