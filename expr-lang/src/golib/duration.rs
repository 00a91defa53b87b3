//! Go `time.ParseDuration` and `time.Duration.String()`.
//!
//! Mixer turns every string literal that Go can parse as a duration into a
//! DURATION constant, so acceptance must match Go exactly. Attribute values of
//! type DURATION are printed in Go's format by the conformance data
//! (`"20ms"`, `"1h30m0s"`).

/// Nanoseconds per unit, keyed by the unit spellings Go accepts.
///
/// Both the micro sign U+00B5 and the Greek small letter mu U+03BC are
/// accepted for microseconds, as in Go.
const UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{00B5}s", 1_000),
    ("\u{03BC}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Magnitude bound while accumulating: Go accumulates into a `uint64` and
/// allows exactly 2^63 so that `-9223372036854775808ns` is representable.
const LIMIT: u64 = 1 << 63;

/// Parses a Go duration string into nanoseconds, or `None` if Go's
/// `time.ParseDuration` would fail (syntax error or overflow).
///
/// Grammar: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, where each number needs at
/// least one digit on either side of the dot (`1.s` and `.5s` are fine, `.s`
/// is not), plus the special case `0` (optionally signed).
pub fn parse_duration(s: &str) -> Option<i64> {
    let mut rest = s;
    let mut neg = false;
    if let Some(c) = rest.chars().next()
        && (c == '-' || c == '+')
    {
        neg = c == '-';
        rest = &rest[1..];
    }
    // Go special-cases a lone zero: it is the only unit-less duration.
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let b = rest.as_bytes();
        // The next character must be [0-9.].
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return None;
        }
        let (int_part, after_int) = leading_int(rest)?;
        let has_int = after_int.len() != rest.len();
        rest = after_int;

        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut has_frac = false;
        if let Some(after_dot) = rest.strip_prefix('.') {
            let (f, sc, after_frac) = leading_fraction(after_dot);
            has_frac = after_frac.len() != after_dot.len();
            frac = f;
            scale = sc;
            rest = after_frac;
        }
        if !has_int && !has_frac {
            // A bare "." has no digits at all.
            return None;
        }

        // The unit runs up to the next digit or dot. Both are ASCII, so the
        // split is always on a character boundary.
        let unit_len = rest
            .bytes()
            .position(|c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return None;
        }
        let unit_name = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit = UNITS
            .iter()
            .find(|(name, _)| *name == unit_name)
            .map(|(_, n)| *n)?;

        if int_part > LIMIT / unit {
            return None;
        }
        let mut value = int_part * unit;
        if frac > 0 {
            // Go computes the fractional contribution in float64 and
            // truncates; doing the same keeps rounding identical.
            value += (frac as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return None;
            }
        }
        total = total.checked_add(value)?;
        if total > LIMIT {
            return None;
        }
    }
    if neg {
        // total <= 2^63, so the negation always fits (2^63 -> i64::MIN).
        Some((total as i64).wrapping_neg())
    } else if total > i64::MAX as u64 {
        None
    } else {
        Some(total as i64)
    }
}

/// Consumes leading ASCII digits; `None` on overflow past 2^63 (Go reports
/// an error there rather than saturating).
fn leading_int(s: &str) -> Option<(u64, &str)> {
    let mut x: u64 = 0;
    let mut i = 0;
    for c in s.bytes() {
        if !c.is_ascii_digit() {
            break;
        }
        if x > LIMIT / 10 {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
        if x > LIMIT {
            return None;
        }
        i += 1;
    }
    Some((x, &s[i..]))
}

/// Consumes the digits after a decimal point, returning the value, the power
/// of ten it is scaled by, and the rest. Digits beyond what fits are consumed
/// but ignored, as Go does (they cannot change the result meaningfully).
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let mut x: u64 = 0;
    let mut scale = 1.0f64;
    let mut overflow = false;
    let mut i = 0;
    for c in s.bytes() {
        if !c.is_ascii_digit() {
            break;
        }
        i += 1;
        if overflow {
            continue;
        }
        if x > (LIMIT - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[i..])
}

/// Formats nanoseconds the way Go's `time.Duration.String()` does:
/// `0s`, `1.5µs`, `20ms`, `1h30m0s`, `-5s`.
///
/// Durations under a second use the largest of ns/µs/ms that keeps the
/// integer part non-zero; longer ones are `[h]h[m]m<s>[.frac]s`.
pub fn format_duration(nanos: i64) -> String {
    let mut out = String::new();
    write_duration(&mut out, nanos);
    out
}

/// Appends [`format_duration`]'s text to `out`, without intermediate `String`s.
pub fn write_duration(out: &mut String, nanos: i64) {
    if nanos < 0 {
        out.push('-');
    }
    // unsigned_abs handles i64::MIN without overflow.
    let u = nanos.unsigned_abs();
    if u < 1_000_000_000 {
        let (prec, unit) = match u {
            0 => return out.push_str("0s"),
            1..=999 => (0, "ns"),
            1_000..=999_999 => (3, "\u{00B5}s"),
            _ => (6, "ms"),
        };
        let pow = 10u64.pow(prec);
        super::push_padded(out, u / pow, 1);
        push_frac(out, u % pow, prec);
        out.push_str(unit);
        return;
    }
    let secs = u / 1_000_000_000;
    let s = secs % 60;
    let mins = secs / 60;
    if mins > 0 {
        let h = mins / 60;
        if h > 0 {
            super::push_padded(out, h, 1);
            out.push('h');
        }
        super::push_padded(out, mins % 60, 1);
        out.push('m');
    }
    super::push_padded(out, s, 1);
    push_frac(out, u % 1_000_000_000, 9);
    out.push('s');
}

/// Appends the fraction `frac / 10^prec` as Go's `fmtFrac` does: `.123` with trailing
/// zeros removed, nothing when it is zero.
fn push_frac(out: &mut String, mut frac: u64, mut prec: u32) {
    if frac == 0 {
        return;
    }
    while frac.is_multiple_of(10) {
        frac /= 10;
        prec -= 1;
    }
    out.push('.');
    // prec is at most 9.
    super::push_padded(out, frac, prec as usize);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    #[test]
    fn parses_spec_examples() {
        assert_eq!(parse_duration("10ms"), Some(10 * MS));
        assert_eq!(parse_duration("1h30m"), Some(H + 30 * M));
        assert_eq!(parse_duration("-5s"), Some(-5 * S));
        assert_eq!(parse_duration("+5s"), Some(5 * S));
        assert_eq!(parse_duration("1.5h"), Some(H + 30 * M));
        assert_eq!(parse_duration(".5s"), Some(S / 2));
        assert_eq!(parse_duration("5us"), Some(5 * US));
        assert_eq!(parse_duration("5\u{00B5}s"), Some(5 * US));
        assert_eq!(parse_duration("5\u{03BC}s"), Some(5 * US));
        assert_eq!(parse_duration("0s"), Some(0));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("+0"), Some(0));
        assert_eq!(parse_duration("-0"), Some(0));
        assert_eq!(parse_duration("0ms"), Some(0));
        assert_eq!(parse_duration("19ms"), Some(19 * MS));
        assert_eq!(parse_duration("20ms"), Some(20 * MS));
    }

    #[test]
    fn rejects_non_durations() {
        for s in [
            "", "1", "00", "5 s", "1d", "-", "+", ".", ".s", "-.s", "s", "1.5", "1h 30m", " 1s",
            "1s ", "1S", "1H", "1sec", "0x10s", "--1s", "+-1s", "1e3s", "abc", "1.2.3s", "1ns1",
        ] {
            assert_eq!(parse_duration(s), None, "{s:?} must not parse");
        }
    }

    #[test]
    fn parses_like_go() {
        // Examples from Go's own ParseDuration tests.
        assert_eq!(parse_duration("5s"), Some(5 * S));
        assert_eq!(parse_duration("30s"), Some(30 * S));
        assert_eq!(parse_duration("1478s"), Some(1478 * S));
        assert_eq!(parse_duration("-0"), Some(0));
        assert_eq!(parse_duration("1.0s"), Some(S));
        assert_eq!(parse_duration("1.s"), Some(S));
        assert_eq!(parse_duration("1.004s"), Some(S + 4 * MS));
        assert_eq!(parse_duration("100.00100s"), Some(100 * S + MS));
        assert_eq!(parse_duration("10ns"), Some(10 * NS));
        assert_eq!(parse_duration("11us"), Some(11 * US));
        assert_eq!(parse_duration("13ms"), Some(13 * MS));
        assert_eq!(parse_duration("14s"), Some(14 * S));
        assert_eq!(parse_duration("15m"), Some(15 * M));
        assert_eq!(parse_duration("16h"), Some(16 * H));
        assert_eq!(parse_duration("3h30m"), Some(3 * H + 30 * M));
        assert_eq!(parse_duration("10.5s4m"), Some(4 * M + 10 * S + S / 2));
        assert_eq!(parse_duration("-2m3.4s"), Some(-(2 * M + 3 * S + 400 * MS)));
        assert_eq!(
            parse_duration("1h2m3s4ms5us6ns"),
            Some(H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS)
        );
        assert_eq!(
            parse_duration("39h9m14.425s"),
            Some(39 * H + 9 * M + 14 * S + 425 * MS)
        );
        assert_eq!(parse_duration("52763797000ns"), Some(52763797000 * NS));
        assert_eq!(parse_duration("0.3333333333333333333h"), Some(20 * M));
        assert_eq!(parse_duration("9007199254740993ns"), Some((1 << 53) + 1));
        assert_eq!(parse_duration("9223372036854775807ns"), Some(i64::MAX));
        assert_eq!(parse_duration("9223372036854775.807us"), Some(i64::MAX));
        assert_eq!(parse_duration("9223372036s854ms775us807ns"), Some(i64::MAX));
        assert_eq!(parse_duration("-9223372036854775808ns"), Some(i64::MIN));
        assert_eq!(parse_duration("-9223372036854775.808us"), Some(i64::MIN));
        assert_eq!(
            parse_duration("-9223372036s854ms775us808ns"),
            Some(i64::MIN)
        );
        assert_eq!(parse_duration("-2562047h47m16.854775808s"), Some(i64::MIN));
        assert_eq!(parse_duration("0.100000000000000000000h"), Some(6 * M));
        assert_eq!(
            parse_duration("0.830103483285477580700h"),
            Some(49 * M + 48 * S + 372539827 * NS)
        );
    }

    #[test]
    fn rejects_overflow() {
        assert_eq!(parse_duration("9223372036854775808ns"), None);
        assert_eq!(parse_duration("9223372036854775.808us"), None);
        assert_eq!(parse_duration("-9223372036854775809ns"), None);
        assert_eq!(parse_duration("9223372036854775810ns"), None);
        assert_eq!(parse_duration("3000000h"), None);
        assert_eq!(parse_duration("2562048h"), None);
        assert_eq!(parse_duration("2562047h47m16.854775808s"), None);
        assert_eq!(parse_duration("99999999999999999999s"), None);
        assert_eq!(parse_duration("1h9223372036854775807ns"), None);
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(1), "1ns");
        assert_eq!(format_duration(1100), "1.1\u{00B5}s");
        assert_eq!(format_duration(5 * US), "5\u{00B5}s");
        assert_eq!(format_duration(2200 * US), "2.2ms");
        assert_eq!(format_duration(20 * MS), "20ms");
        assert_eq!(format_duration(3300 * MS), "3.3s");
        assert_eq!(format_duration(S + S / 2), "1.5s");
        assert_eq!(format_duration(-5 * S), "-5s");
        assert_eq!(format_duration(4 * M + 5 * S), "4m5s");
        assert_eq!(format_duration(4 * M + 5001 * MS), "4m5.001s");
        assert_eq!(format_duration(H + 30 * M), "1h30m0s");
        assert_eq!(format_duration(5 * H + 6 * M + 7001 * MS), "5h6m7.001s");
        assert_eq!(format_duration(8 * M + 1), "8m0.000000001s");
        assert_eq!(format_duration(i64::MAX), "2562047h47m16.854775807s");
        assert_eq!(format_duration(i64::MIN), "-2562047h47m16.854775808s");
    }

    #[test]
    fn round_trips() {
        for d in [
            0,
            1,
            999,
            1_000,
            123_456_789,
            20 * MS,
            H + 30 * M,
            -(7 * H + 1),
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Some(d), "{d}");
        }
    }
}
