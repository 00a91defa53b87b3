//! The IDNA processing behind Mixer's `dnsName()` and DNS_NAME equality.
//!
//! Mixer uses two `golang.org/x/net/idna` profiles (2019 revision):
//!
//! * `dnsName(s)` runs `ToUnicode` with a *validation-only* profile
//!   (`StrictDomainName`, `ValidateLabels`, `VerifyDNSLength`, `BidiRule`).
//!   That profile has no case mapping: the text is only NFC-normalised, so
//!   `"fOO"` comes back as `"fOO"`, while `xn--` labels are decoded.
//! * DNS_NAME `==` runs both sides through the `idna.Lookup` profile's
//!   `ToASCII`: UTS #46 mapping (lower-casing, NFC, *transitional* handling of
//!   `ß`/`ς`/ZWJ/ZWNJ as in that revision), STD3 character rules, hyphen and
//!   joiner checks and the Bidi rule, then Punycode for non-ASCII labels.
//!
//! This module re-creates that label pipeline. Unicode data (UTS #46 mapping,
//! NFC, bidi classes, joining types, marks) comes from the `idna_adapter` and
//! `icu_normalizer` crates that the `idna` crate itself uses; those carry a
//! newer Unicode version than Go's 2019 tables (Unicode 10/11), so a few
//! characters assigned since then are treated differently.
//!
//! Error texts follow Go: `idna: invalid label "<label>"` (the label as Go
//! reports it: the offending label, the Punycode part of an undecodable
//! `xn--` label, or the whole name for empty-label and Bidi errors) and
//! `idna: disallowed rune U+XXXX`.

use std::borrow::Cow;

use icu_normalizer::ComposingNormalizerBorrowed;
use idna_adapter::{
    Adapter, FIRST_BC_MASK, LAST_LTR_MASK, LAST_RTL_MASK, LEFT_OR_DUAL_JOINING_MASK,
    MIDDLE_LTR_MASK, MIDDLE_RTL_MASK, RIGHT_OR_DUAL_JOINING_MASK, RTL_MASK,
};

use super::goquote::quote;

/// The ASCII-compatible-encoding prefix of a Punycode label. Go matches it
/// case-sensitively, which matters for the unmapped `dnsName` profile.
const ACE_PREFIX: &str = "xn--";

const ZWNJ: char = '\u{200C}';
const ZWJ: char = '\u{200D}';

/// Which of Mixer's two IDNA profiles to emulate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// `dnsName()`: NFC only, empty labels rejected, result in Unicode.
    Validate,
    /// `idna.Lookup.ToASCII`: UTS #46 transitional mapping, STD3 rules,
    /// empty labels allowed, result in ASCII.
    Lookup,
}

/// Converts `s` the way Mixer's `dnsName()` does (x/net/idna `ToUnicode`
/// with strict domain names, label validation, DNS length checks and the Bidi
/// rule).
///
/// On success returns the Unicode form: `xn--` labels are decoded
/// (`"xn--bcher-kva.example"` → `"bücher.example"`), everything else is
/// returned unchanged apart from NFC normalisation (so case is kept:
/// `"fOO"` → `"fOO"`). A single trailing dot is kept (and, by a quirk of
/// Go's label iterator, so is a trailing `..`: see `next_label`).
///
/// Errors, in Go's words (`idna: invalid label "-foo"`): empty input or
/// empty labels (`""`, `"."`, `"b..a"`), a label starting or ending with `-`,
/// `--` in positions 3-4, a leading combining mark, misplaced joiners,
/// undecodable or invalid Punycode, and Bidi-rule violations.
///
/// As in Go, ASCII labels that are not Punycode are *not* checked against the
/// STD3 character rules (`"a_b"` is accepted), and `ToUnicode` does not
/// enforce the 63/253-byte length limits: in x/net/idna those run only on the
/// `ToASCII` path.
pub fn to_unicode(s: &str) -> Result<String, String> {
    process(s, Profile::Validate)
}

/// Normalises `s` for DNS-name comparison like x/net/idna's
/// `idna.Lookup.ToASCII`: UTS #46 mapping (lower-case, NFC, compatibility
/// mappings, `ß`→`ss` and `ς`→`σ` as in transitional processing), STD3
/// character rules (`"a_b"` fails with `idna: disallowed rune U+005F`), the
/// label checks of [`to_unicode`], and Punycode-encoding of non-ASCII labels.
///
/// Unlike `dnsName()`, this profile does not reject empty labels.
pub fn lookup_normalize(s: &str) -> Result<String, String> {
    process(s, Profile::Lookup)
}

/// DNS_NAME equality: both sides go through
/// [`lookup_normalize`]; if exactly one side ends with a dot, that dot is
/// dropped; then the strings are compared. A normalisation failure on either
/// side is an error (`"b" == "b-"` fails with `idna: invalid label "b-"`).
pub fn dns_equal(a: &str, b: &str) -> Result<bool, String> {
    let mut n1 = lookup_normalize(a)?;
    let mut n2 = lookup_normalize(b)?;
    // Same order as Mixer: n1 is trimmed first, and n2 is then checked
    // against the possibly trimmed n1.
    if n1.ends_with('.') && !n2.ends_with('.') {
        n1.pop();
    }
    if n2.ends_with('.') && !n1.ends_with('.') {
        n2.pop();
    }
    Ok(n1 == n2)
}

/// The UTS #46 / Unicode property data shared by all calls.
fn adapter() -> &'static Adapter {
    static ADAPTER: Adapter = Adapter::new();
    &ADAPTER
}

/// Go's `labelError` text.
fn invalid_label(label: &str) -> String {
    format!("idna: invalid label {}", quote(label))
}

/// Go's `runeError` text (`%U` formatting).
fn disallowed_rune(c: char) -> String {
    format!("idna: disallowed rune U+{:04X}", c as u32)
}

/// Emulates x/net/idna's `Profile.process` for the two profiles.
fn process(input: &str, profile: Profile) -> Result<String, String> {
    // Step 1: the profile's mapping function.
    let s: String = match profile {
        Profile::Validate => ComposingNormalizerBorrowed::new_nfc()
            .normalize(input)
            .into_owned(),
        Profile::Lookup => lookup_map(input)?,
    };
    let mut is_bidi = has_rtl(&s);

    // Step 2: empty names. Only the profile with VerifyDNSLength objects.
    let verify_dns_length = profile == Profile::Validate;
    if verify_dns_length && s.is_empty() {
        return Err(invalid_label(&s));
    }

    // Step 3: per-label validation and Punycode decoding.
    let mut labels: Vec<Cow<'_, str>> = s.split('.').map(Cow::Borrowed).collect();
    let mut rewritten = false;
    let mut next = first_label(&s);
    while let Some(i) = next {
        if labels[i].is_empty() {
            if verify_dns_length {
                // Go reports the whole name for an empty label.
                return Err(invalid_label(&s));
            }
        } else if let Some(encoded) = labels[i].strip_prefix(ACE_PREFIX) {
            let decoded = punycode_decode(encoded).ok_or_else(|| invalid_label(encoded))?;
            is_bidi |= has_rtl(&decoded);
            labels[i] = Cow::Owned(decoded);
            rewritten = true;
            validate_from_punycode(&labels[i])?;
            validate_label(&labels[i], verify_dns_length)?;
        } else {
            validate_label(&labels[i], verify_dns_length)?;
        }
        next = next_label(&labels, i, rewritten);
    }

    // Step 4: the Bidi rule applies to every label once any label contains
    // right-to-left text.
    if is_bidi {
        let mut next = first_label(&s);
        while let Some(i) = next {
            if !satisfies_bidi_rule(&labels[i]) {
                return Err(invalid_label(&s));
            }
            next = next_label(&labels, i, rewritten);
        }
    }

    // Step 5: ToASCII encodes the non-ASCII labels. (Empty labels are ASCII,
    // so which ones the iterator would skip does not matter here.)
    if profile == Profile::Lookup {
        for label in &mut labels {
            if !label.is_ascii() {
                let encoded =
                    idna::punycode::encode_str(label).ok_or_else(|| invalid_label(label))?;
                *label = Cow::Owned(format!("{ACE_PREFIX}{encoded}"));
            }
        }
    }
    Ok(labels.join("."))
}

/// Index of the first label x/net/idna's label iterator visits: none for an
/// empty name.
fn first_label(name: &str) -> Option<usize> {
    (!name.is_empty()).then_some(0)
}

/// Index of the label x/net/idna's label iterator visits after `i`.
///
/// A final empty label (after a trailing dot) is never visited. Until some
/// label has been rewritten (`rewritten`, i.e. an `xn--` label was decoded)
/// the iterator walks the original string, and in that mode it also treats
/// a name ending in `..` as ending in a root dot, skipping the empty label
/// in between: Go accepts `dnsName("foo..")` but rejects `"xn--a-.."` and
/// `"b..a"`. We reproduce that quirk rather than the cleaner rule.
fn next_label(labels: &[Cow<'_, str>], i: usize, rewritten: bool) -> Option<usize> {
    let n = labels.len();
    let j = i + 1;
    if j >= n || (j == n - 1 && labels[j].is_empty()) {
        return None;
    }
    if !rewritten && j == n - 2 && labels[j].is_empty() && labels[n - 1].is_empty() {
        return None;
    }
    Some(j)
}

/// The Lookup profile's mapping (x/net/idna `validateAndMap` with
/// transitional processing and STD3 rules).
///
/// The UTS #46 data available to us is non-transitional, so the four
/// deviation characters are pre-mapped the transitional way first. U+1E9E
/// (capital sharp s) also maps to "ss", as it did in the Unicode tables of
/// that x/net revision.
fn lookup_map(input: &str) -> Result<String, String> {
    let mut pre = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '\u{00DF}' | '\u{1E9E}' => pre.push_str("ss"),
            '\u{03C2}' => pre.push('\u{03C3}'),
            ZWNJ | ZWJ => {}
            c if std3_disallowed(c) => return Err(disallowed_rune(c)),
            c if c.is_ascii() => pre.push(c),
            c => {
                // Map this character alone to learn whether it is disallowed
                // (the mapper yields U+FFFD) or maps to an ASCII character
                // that STD3 forbids (e.g. a full-width low line).
                let disallowed = adapter()
                    .map_normalize(std::iter::once(c))
                    .any(|m| m == '\u{FFFD}' || std3_disallowed(m));
                if disallowed {
                    return Err(disallowed_rune(c));
                }
                pre.push(c);
            }
        }
    }
    // Map the whole string at once so normalisation sees character
    // sequences, not single characters.
    Ok(adapter().map_normalize(pre.chars()).collect())
}

/// Checks a decoded Punycode label the way x/net/idna's
/// `validateFromPunycode` does: it must be in NFC and consist only of valid
/// (or deviation) characters under STD3 rules, i.e. mapping must not change
/// it.
fn validate_from_punycode(label: &str) -> Result<(), String> {
    let mut mapped = adapter().normalize_validate(label.chars());
    // Upper-case ASCII is mapped (so it fails the comparison); the other
    // ASCII characters STD3 forbids, and ≠ ≮ ≯, must be rejected by hand.
    let unchanged = label
        .chars()
        .all(|c| mapped.next() == Some(c) && c != '\u{FFFD}' && !std3_disallowed(c))
        && mapped.next().is_none();
    if unchanged {
        Ok(())
    } else {
        Err(invalid_label(label))
    }
}

/// x/net/idna's `validateLabel` with hyphen and joiner checks enabled.
fn validate_label(label: &str, verify_dns_length: bool) -> Result<(), String> {
    if label.is_empty() {
        return if verify_dns_length {
            Err(invalid_label(label))
        } else {
            Ok(())
        };
    }
    let b = label.as_bytes();
    // "--" in positions 3-4 is reserved for ACE prefixes like "xn--". Go
    // only tests it on labels longer than four bytes; a four-byte label with
    // "--" there ends with a hyphen and fails the next check anyway.
    if b.len() > 4 && b[2] == b'-' && b[3] == b'-' {
        return Err(invalid_label(label));
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' {
        return Err(invalid_label(label));
    }
    if label.chars().next().is_some_and(|c| adapter().is_mark(c)) {
        return Err(invalid_label(label));
    }
    if label.contains([ZWJ, ZWNJ]) && !joiners_in_context(label) {
        return Err(invalid_label(label));
    }
    Ok(())
}

/// States of x/net/idna's joiner automaton (see [`joiners_in_context`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum JoinState {
    Start,
    Virama,
    Before,
    BeforeVirama,
    After,
    Fail,
}

/// Input classes of that automaton: a character's joining type (only L, D,
/// T and R matter, anything else is `Other`), the two joiners, and the
/// extra "virama seen" step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JoinClass {
    Other,
    Left,
    Dual,
    Transparent,
    Right,
    Zwj,
    Zwnj,
    Virama,
}

/// One transition; combinations Go's table leaves out go back to `Start`.
fn join_step(state: JoinState, class: JoinClass) -> JoinState {
    use JoinClass as C;
    use JoinState as S;
    match (state, class) {
        (S::Fail, _) => S::Fail,
        (S::Start, C::Left | C::Dual) => S::Before,
        (S::Start, C::Zwnj | C::Zwj) => S::Fail,
        (S::Start, C::Virama) => S::Virama,
        (S::Virama, C::Left | C::Dual) => S::Before,
        (S::Before, C::Left | C::Dual | C::Transparent) => S::Before,
        (S::Before, C::Zwnj) => S::After,
        (S::Before, C::Zwj) => S::Fail,
        (S::Before, C::Virama) => S::BeforeVirama,
        (S::BeforeVirama, C::Left | C::Dual | C::Transparent) => S::Before,
        (S::After, C::Left | C::Zwnj | C::Zwj) => S::Fail,
        (S::After, C::Dual) => S::Before,
        (S::After, C::Transparent | C::Virama) => S::After,
        (S::After, C::Right) => S::Start,
        _ => S::Start,
    }
}

/// The CONTEXTJ check (RFC 5892 Appendix A.1/A.2) as x/net/idna implements
/// it: a small automaton rather than the RFC's regular expressions. A ZWJ
/// must follow a virama; a ZWNJ must follow a virama or a left/dual-joining
/// character (transparent ones in between). Unlike the RFC, Go does not
/// insist on a right-joining character after a ZWNJ: a following
/// non-joining character resets the automaton, so only a following
/// left-joining character, another joiner, or the end of the label fails.
fn joiners_in_context(label: &str) -> bool {
    let a = adapter();
    let mut state = JoinState::Start;
    for c in label.chars() {
        let class = match c {
            ZWJ => JoinClass::Zwj,
            ZWNJ => JoinClass::Zwnj,
            // Go's tables give mapped characters no joining type.
            c if is_mapped(c) => JoinClass::Other,
            c => {
                let jt = a.joining_type(c);
                let mask = jt.to_mask();
                if jt.is_transparent() {
                    JoinClass::Transparent
                } else if mask.intersects(LEFT_OR_DUAL_JOINING_MASK)
                    && mask.intersects(RIGHT_OR_DUAL_JOINING_MASK)
                {
                    JoinClass::Dual
                } else if mask.intersects(LEFT_OR_DUAL_JOINING_MASK) {
                    JoinClass::Left
                } else if mask.intersects(RIGHT_OR_DUAL_JOINING_MASK) {
                    JoinClass::Right
                } else {
                    JoinClass::Other
                }
            }
        };
        state = join_step(state, class);
        if c != ZWJ && c != ZWNJ && a.is_virama(c) {
            state = join_step(state, JoinClass::Virama);
        }
    }
    !matches!(state, JoinState::Fail | JoinState::After)
}

/// Whether UTS #46 maps `c` to other, non-empty text (Go's `isMapped`,
/// which covers mapped and STD3-mapped characters but not ignored ones).
fn is_mapped(c: char) -> bool {
    let mapped: Vec<char> = adapter().map_normalize(std::iter::once(c)).collect();
    !mapped.is_empty() && mapped != [c] && !mapped.contains(&'\u{FFFD}')
}

/// Whether `c` is forbidden under STD3 rules: anything ASCII but letters,
/// digits, `-` and `.`, plus the three non-ASCII characters UTS #46 marks
/// `disallowed_STD3_valid` (≠ ≮ ≯, which decompose to `=` `<` `>`). The
/// UTS #46 mapper treats the latter as valid and leaves STD3 to its caller.
fn std3_disallowed(c: char) -> bool {
    if c.is_ascii() {
        !(c.is_ascii_alphanumeric() || c == '-' || c == '.')
    } else {
        matches!(c, '\u{2260}' | '\u{226E}' | '\u{226F}')
    }
}

/// Whether `s` contains a right-to-left character (bidi class R, AL or AN),
/// which makes the whole name subject to the Bidi rule.
fn has_rtl(s: &str) -> bool {
    !s.is_ascii()
        && s.chars()
            .any(|c| adapter().bidi_class(c).to_mask().intersects(RTL_MASK))
}

/// The Bidi rule of RFC 5893 §2 for one label.
fn satisfies_bidi_rule(label: &str) -> bool {
    let a = adapter();
    let mut chars = label.chars();
    let Some(first) = chars.next() else {
        return true;
    };
    let first_class = a.bidi_class(first);
    // Rule 1: the first character decides the direction (L, or R/AL).
    if !first_class.to_mask().intersects(FIRST_BC_MASK) {
        return false;
    }
    let rtl = first_class.to_mask().intersects(RTL_MASK);
    let (allowed, last_ok) = if rtl {
        (MIDDLE_RTL_MASK, LAST_RTL_MASK)
    } else {
        (MIDDLE_LTR_MASK, LAST_LTR_MASK)
    };
    // Rules 2 and 5: the characters allowed anywhere in the label.
    if !label
        .chars()
        .all(|c| a.bidi_class(c).to_mask().intersects(allowed))
    {
        return false;
    }
    // Rules 3 and 6: the last character that is not a nonspacing mark.
    let last = label
        .chars()
        .rev()
        .find(|&c| !a.bidi_class(c).is_nonspacing_mark());
    if !last.is_some_and(|c| a.bidi_class(c).to_mask().intersects(last_ok)) {
        return false;
    }
    // Rule 4: European and Arabic digits must not be mixed.
    let has_en = label.chars().any(|c| a.bidi_class(c).is_european_number());
    let has_an = label.chars().any(|c| a.bidi_class(c).is_arabic_number());
    !(has_en && has_an)
}

const BASE: i64 = 36;
const TMIN: i64 = 1;
const TMAX: i64 = 26;
const SKEW: i64 = 38;
const DAMP: i64 = 700;
const INITIAL_BIAS: i64 = 72;
const INITIAL_N: i64 = 128;
/// Go refuses to decode labels that would grow past this many characters.
const MAX_DECODED_LEN: usize = 1024;

/// RFC 3492 Punycode decoding of the part after `xn--`, with x/net/idna's
/// edge cases: an empty input decodes to an empty label, a trailing `-`
/// yields just the basic characters, a `-` as the only delimiter at the start
/// is an error, digits are case-insensitive, and 32-bit overflow is an error.
///
/// Written here rather than taken from the `idna` crate so that these edge
/// cases (which decide between success and error) match Go.
fn punycode_decode(encoded: &str) -> Option<String> {
    if encoded.is_empty() {
        return Some(String::new());
    }
    let bytes = encoded.as_bytes();
    let mut pos = encoded.rfind('-').map_or(0, |i| i + 1);
    if pos == 1 {
        return None;
    }
    if pos == bytes.len() {
        return Some(encoded[..pos - 1].to_string());
    }
    let mut output: Vec<char> = if pos > 0 {
        encoded[..pos - 1].chars().collect()
    } else {
        Vec::new()
    };
    let (mut i, mut n, mut bias) = (0i64, INITIAL_N, INITIAL_BIAS);
    while pos < bytes.len() {
        let old_i = i;
        let mut w = 1i64;
        let mut k = BASE;
        loop {
            let digit = decode_digit(*bytes.get(pos)?)?;
            pos += 1;
            i += digit * w;
            if i > i64::from(i32::MAX) {
                return None;
            }
            let t = (k - bias).clamp(TMIN, TMAX);
            if digit < t {
                break;
            }
            w *= BASE - t;
            if w >= i64::from(i32::MAX) / BASE {
                return None;
            }
            k += BASE;
        }
        let x = output.len() as i64 + 1;
        bias = adapt(i - old_i, x, old_i == 0);
        n += i / x;
        i %= x;
        if n > 0x10FFFF || output.len() >= MAX_DECODED_LEN {
            return None;
        }
        // Go turns a surrogate code point into U+FFFD when building the
        // string; validation then rejects the label.
        let c = u32::try_from(n)
            .ok()
            .and_then(char::from_u32)
            .unwrap_or('\u{FFFD}');
        output.insert(i as usize, c);
        i += 1;
    }
    Some(output.into_iter().collect())
}

/// Value of one Punycode digit (`a-z`/`A-Z` = 0-25, `0-9` = 26-35).
fn decode_digit(c: u8) -> Option<i64> {
    match c {
        b'0'..=b'9' => Some(i64::from(c - b'0') + 26),
        b'A'..=b'Z' => Some(i64::from(c - b'A')),
        b'a'..=b'z' => Some(i64::from(c - b'a')),
        _ => None,
    }
}

/// RFC 3492 bias adaptation.
fn adapt(delta: i64, num_points: i64, first_time: bool) -> i64 {
    let mut delta = if first_time { delta / DAMP } else { delta / 2 };
    delta += delta / num_points;
    let mut k = 0;
    while delta > ((BASE - TMIN) * TMAX) / 2 {
        delta /= BASE - TMIN;
        k += BASE;
    }
    k + (BASE - TMIN + 1) * delta / (delta + SKEW)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        to_unicode(s).expect_err(s)
    }

    #[test]
    fn dns_name_accepts_like_mixer() {
        for (input, want) in [
            ("foo.bar.baz", "foo.bar.baz"),
            ("foo.bar", "foo.bar"),
            ("www.istio.io", "www.istio.io"),
            ("foo.bar.com", "foo.bar.com"),
            ("foo.Bar.baz.", "foo.Bar.baz."),
            ("foo.", "foo."),
            ("fOO", "fOO"),
            ("f00", "f00"),
            ("f00.", "f00."),
            ("a_b", "a_b"),
            ("xn--bcher-kva.example", "bücher.example"),
            ("Bücher.example", "Bücher.example"),
            ("a-b.c--d", "a-b.c--d"),
            ("1.2.3.4", "1.2.3.4"),
            // x/net/idna special cases of its Punycode decoder.
            ("xn--abc-", "abc"),
            // Go's label iterator treats a trailing ".." like a root dot
            // while no label has been rewritten.
            ("foo..", "foo.."),
            ("a.b..", "a.b.."),
        ] {
            assert_eq!(to_unicode(input).as_deref(), Ok(want), "{input:?}");
        }
        // Only NFC normalisation is applied.
        assert_eq!(to_unicode("cafe\u{301}.fr").as_deref(), Ok("café.fr"));
        // No length limits on the ToUnicode path (they belong to ToASCII).
        let long = "a".repeat(64);
        assert_eq!(to_unicode(&long).as_deref(), Ok(long.as_str()));
    }

    #[test]
    fn dns_name_errors_like_mixer() {
        assert_eq!(err("-foo.-bar"), r#"idna: invalid label "-foo""#);
        assert_eq!(err(""), r#"idna: invalid label """#);
        assert_eq!(err("."), r#"idna: invalid label ".""#);
        assert_eq!(err("b..a."), r#"idna: invalid label "b..a.""#);
        assert_eq!(err("b..a"), r#"idna: invalid label "b..a""#);
        assert_eq!(err("..a"), r#"idna: invalid label "..a""#);
        assert_eq!(err("foo..."), r#"idna: invalid label "foo...""#);
        assert_eq!(err(".."), r#"idna: invalid label "..""#);
        // Once a label has been decoded, a trailing ".." is an empty label.
        assert_eq!(
            err("xn--bcher-kva.."),
            r#"idna: invalid label "xn--bcher-kva..""#
        );
        assert_eq!(err("-a"), r#"idna: invalid label "-a""#);
        assert_eq!(err("f-"), r#"idna: invalid label "f-""#);
        assert_eq!(err("f-."), r#"idna: invalid label "f-""#);
        assert_eq!(err("f--.boo"), r#"idna: invalid label "f--""#);
        assert_eq!(err("bar-.com"), r#"idna: invalid label "bar-""#);
        assert_eq!(err("ab--c.com"), r#"idna: invalid label "ab--c""#);
        // The prefix is case-sensitive here: "XN--" is just a label with
        // hyphens in positions 3-4.
        assert_eq!(
            err("XN--bcher-kva.example"),
            r#"idna: invalid label "XN--bcher-kva""#
        );
        // Undecodable Punycode reports the encoded part.
        assert_eq!(err("xn--b.com"), r#"idna: invalid label "b""#);
        // "xn--a" decodes (to U+0080), but the result is not a valid label.
        assert_eq!(err("xn--a.com"), r#"idna: invalid label "\u0080""#);
        assert_eq!(err("xn---abc.com"), r#"idna: invalid label "-abc""#);
        assert_eq!(
            err("xn--99999999999.com"),
            r#"idna: invalid label "99999999999""#
        );
        // Decoded labels must be valid, lower-case, NFC text.
        assert_eq!(
            err("xn--Bcher-kva.example"),
            r#"idna: invalid label "Bücher""#
        );
        assert_eq!(err("xn--a_b-.com"), r#"idna: invalid label "a_b""#);
        // "xn--" alone decodes to an empty label.
        assert_eq!(err("xn--.com"), r#"idna: invalid label """#);
        // A label may not start with a combining mark.
        assert_eq!(err("\u{301}a.com"), "idna: invalid label \"\u{301}a\"");
        // "xn--bcher1kva" decodes to text containing ≮, which STD3 forbids.
        assert_eq!(err("xn--bcher1kva"), "idna: invalid label \"≆≮≎≲≈\"");
        // A ZWJ needs a preceding virama.
        assert_eq!(err("a\u{200D}b"), "idna: invalid label \"a\\u200db\"");
    }

    #[test]
    fn bidi_rule() {
        // Hebrew alef-bet: an RTL label is fine on its own...
        assert_eq!(
            to_unicode("\u{5D0}\u{5D1}.com").as_deref(),
            Ok("\u{5D0}\u{5D1}.com")
        );
        // ...but then every label must satisfy the rule, and a label that
        // starts with a digit does not; Go reports the whole name.
        assert_eq!(
            err("\u{5D0}\u{5D1}.1com"),
            "idna: invalid label \"\u{5D0}\u{5D1}.1com\""
        );
        // An RTL label must not end in an LTR character.
        assert!(to_unicode("\u{5D0}a").is_err());
        // Without RTL text the rule does not apply.
        assert!(to_unicode("1com.2org").is_ok());
    }

    #[test]
    fn joiners() {
        // ZWJ after a virama (Devanagari KA + VIRAMA + ZWJ + SSA) is fine.
        assert!(to_unicode("\u{915}\u{94D}\u{200D}\u{937}").is_ok());
        // ZWNJ between two dual-joining Arabic letters is fine; the label is
        // RTL and satisfies the Bidi rule.
        assert!(to_unicode("\u{628}\u{200C}\u{628}").is_ok());
        // ZWNJ after a non-joining Latin letter is not.
        assert!(to_unicode("a\u{200C}b").is_err());
        // Nor is one at the end of a label, or before a left-joining one.
        assert!(to_unicode("\u{628}\u{200C}").is_err());
        assert!(to_unicode("\u{628}\u{200C}\u{200C}\u{628}").is_err());
        // Go's automaton, unlike RFC 5892, accepts a ZWNJ followed by a
        // non-joining character (here a digit, a Hebrew letter, or a
        // transparent mark and a digit).
        assert!(to_unicode("\u{628}\u{200C}0").is_ok());
        assert!(to_unicode("\u{628}\u{200C}\u{5D0}\u{628}").is_ok());
        assert!(to_unicode("\u{628}\u{200C}\u{301}1").is_ok());
        // Ignored characters (soft hyphen, zero-width space) keep their
        // transparent joining type in Go's tables.
        assert!(to_unicode("\u{628}\u{AD}\u{200B}\u{200C}\u{200B}_\u{628}").is_ok());
    }

    #[test]
    fn lookup_mapping() {
        assert_eq!(
            lookup_normalize("fOO.Bar.COM").as_deref(),
            Ok("foo.bar.com")
        );
        assert_eq!(lookup_normalize("foo.").as_deref(), Ok("foo."));
        assert_eq!(
            lookup_normalize("Bücher.example").as_deref(),
            Ok("xn--bcher-kva.example")
        );
        assert_eq!(
            lookup_normalize("XN--BCHER-KVA.example").as_deref(),
            Ok("xn--bcher-kva.example")
        );
        // Transitional processing, as in idna.Lookup of that x/net revision.
        assert_eq!(lookup_normalize("faß.de").as_deref(), Ok("fass.de"));
        assert_eq!(lookup_normalize("FASS.DE").as_deref(), Ok("fass.de"));
        // Full-width letters and the ideographic full stop are mapped.
        assert_eq!(lookup_normalize("ＡＢ\u{3002}com").as_deref(), Ok("ab.com"));
        // This profile does not check for empty labels.
        assert_eq!(lookup_normalize("b..a").as_deref(), Ok("b..a"));
        assert_eq!(lookup_normalize("").as_deref(), Ok(""));
        // STD3 rules and label checks.
        assert_eq!(
            lookup_normalize("a_b").unwrap_err(),
            "idna: disallowed rune U+005F"
        );
        assert_eq!(
            lookup_normalize("a b").unwrap_err(),
            "idna: disallowed rune U+0020"
        );
        assert_eq!(
            lookup_normalize("fe80::1").unwrap_err(),
            "idna: disallowed rune U+003A"
        );
        assert_eq!(
            lookup_normalize("a\u{FF3F}b").unwrap_err(),
            "idna: disallowed rune U+FF3F"
        );
        assert_eq!(
            lookup_normalize("b-").unwrap_err(),
            r#"idna: invalid label "b-""#
        );
        assert_eq!(
            lookup_normalize("-B").unwrap_err(),
            r#"idna: invalid label "-b""#
        );
    }

    #[test]
    fn dns_equality_like_mixer() {
        for (a, b, want) in [
            ("foo.bar.com", "fOO.bar.com", true),
            ("foo.bar.com", "bar.foo.com", false),
            ("foo.bar.com", "foo.bar.com", true),
            ("foo.bar.baz", "foo.Bar.baz.", true),
            ("foo", "foo", true),
            ("foo.", "foo", true),
            ("boo", "boo.", true),
            ("foo.", "foo.", true),
            ("foo.bar", "foo.bar", true),
            ("foo.bar-a.", "foo.bar", false),
            ("bücher.example", "xn--bcher-kva.example", true),
            ("BÜCHER.example", "bücher.example", true),
            ("", "", true),
        ] {
            assert_eq!(dns_equal(a, b), Ok(want), "{a:?} == {b:?}");
            assert_eq!(dns_equal(b, a), Ok(want), "{b:?} == {a:?}");
        }
        assert_eq!(
            dns_equal("b", "b-").unwrap_err(),
            r#"idna: invalid label "b-""#
        );
        assert_eq!(
            dns_equal("a-", "b").unwrap_err(),
            r#"idna: invalid label "a-""#
        );
        assert!(dns_equal("a_b", "a_b").is_err());
    }

    #[test]
    fn punycode_vectors() {
        // RFC 3492 §7.1 samples (lower-cased).
        assert_eq!(punycode_decode("bcher-kva").as_deref(), Some("bücher"));
        assert_eq!(
            punycode_decode("egbpdaj6bu4bxfgehfvwxn").as_deref(),
            Some("ليهمابتكلموشعربي؟")
        );
        assert_eq!(
            punycode_decode("ihqwcrb4cv8a8dqg056pqjye").as_deref(),
            Some("他们为什么不说中文")
        );
        assert_eq!(
            punycode_decode("3B-ww4c5e180e575a65lsy2b").as_deref(),
            Some("3年B組金八先生")
        );
        assert_eq!(punycode_decode("").as_deref(), Some(""));
        assert_eq!(punycode_decode("abc-").as_deref(), Some("abc"));
        assert_eq!(punycode_decode("-abc"), None);
        assert_eq!(punycode_decode("a").as_deref(), Some("\u{80}"));
        assert_eq!(punycode_decode("b"), None);
        assert_eq!(punycode_decode("b!"), None);
        for word in [
            "bücher",
            "ليهمابتكلموشعربي؟",
            "他们为什么不说中文",
            "ab-cdé",
        ] {
            let enc = idna::punycode::encode_str(word).unwrap();
            assert_eq!(punycode_decode(&enc).as_deref(), Some(word));
        }
    }
}
