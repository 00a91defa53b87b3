//! Go's `strconv.Quote` / `strconv.QuoteRune` (what `%q` prints).
//!
//! Several Go error texts embed the offending input with `%q`, so we need the
//! same quoting to reproduce them.

use std::fmt::Write as _;

/// Quotes `s` the way Go's `strconv.Quote` does: double quotes, with `"` and
/// `\` escaped and non-printable characters written as escapes.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"');
    }
    out.push('"');
    out
}

/// Quotes a byte string like Go's `strconv.Quote`: bytes that are not valid
/// UTF-8 are written as `\xNN`.
pub(crate) fn quote_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() + 2);
    out.push('"');
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c, '"');
        }
        for byte in chunk.invalid() {
            // Writing into a String cannot fail.
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    out
}

/// Quotes a single character the way Go's `strconv.QuoteRune` does
/// (single quotes).
pub(crate) fn quote_rune(c: char) -> String {
    let mut out = String::with_capacity(4);
    out.push('\'');
    push_escaped(&mut out, c, '\'');
    out.push('\'');
    out
}

/// Appends `c`, escaped as Go would inside a literal delimited by `delim`.
fn push_escaped(out: &mut String, c: char, delim: char) {
    if c == delim || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if is_print(c) {
        out.push(c);
        return;
    }
    match c {
        '\u{07}' => out.push_str("\\a"),
        '\u{08}' => out.push_str("\\b"),
        '\u{0C}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{0B}' => out.push_str("\\v"),
        // Writing into a String cannot fail.
        c if (c as u32) < 0x20 || c == '\u{7F}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// Approximates Go's `strconv.IsPrint`.
///
/// Go uses full Unicode category tables (letters, marks, numbers,
/// punctuation, symbols and U+0020). We have no such table here, so we treat
/// every character as printable except controls, non-ASCII white space and
/// the common invisible format / private-use characters. Go also escapes
/// code points unassigned in its Unicode tables, which we do not. This only
/// affects how exotic characters are shown inside error messages.
fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format_like = matches!(
        u,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x206F
            | 0xD800..=0xF8FF
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xE0000..=0x10FFFF
    );
    let noncharacter = (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE;
    !format_like && !noncharacter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(quote(""), r#""""#);
        assert_eq!(quote("a b"), r#""a b""#);
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("a\nb\t\u{0}\u{7f}"), r#""a\nb\t\x00\x7f""#);
        assert_eq!(quote("bücher"), "\"bücher\"");
        assert_eq!(quote("\u{200B}\u{FEFF}"), r#""\u200b\ufeff""#);
        assert_eq!(quote("\u{E0001}"), r#""\U000e0001""#);
    }

    #[test]
    fn quotes_bytes_like_go() {
        assert_eq!(quote_bytes(b"a\"b"), r#""a\"b""#);
        assert_eq!(quote_bytes(b"%a\xc3"), r#""%a\xc3""#);
        assert_eq!(quote_bytes("é\n".as_bytes()), "\"é\\n\"");
    }

    #[test]
    fn quotes_runes_like_go() {
        assert_eq!(quote_rune('a'), "'a'");
        assert_eq!(quote_rune('\''), r"'\''");
        assert_eq!(quote_rune('"'), "'\"'");
        assert_eq!(quote_rune('\u{1}'), r"'\x01'");
    }
}
