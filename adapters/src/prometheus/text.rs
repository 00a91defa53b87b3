//! Conversions between instance values and Prometheus text: the number a metric value
//! stands for, the label text of a dimension value (Mixer's `adapter.Stringify`), and the
//! number formatting and escaping of the text exposition format (prometheus/common 0.6).

use std::fmt::{self, Write};

use expr_lang::golib;
use expr_lang::golib::time::Timestamp;
use expr_lang::{Value, ValueType};

/// Why an instance's `value` is not a number a metric can record.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("the instance has no value")]
    Missing,
    #[error("value {0:?} is not a number")]
    NotNumeric(String),
    #[error("a {0} value is not a number")]
    WrongType(ValueType),
}

/// The number a metric instance's `value` reports: doubles as they are, integers as
/// doubles, durations in seconds, strings parsed as numbers; other types are errors.
pub fn metric_value(value: Option<&Value<'_>>) -> Result<f64, ValueError> {
    match value {
        None => Err(ValueError::Missing),
        Some(Value::Double(v)) => Ok(*v),
        Some(Value::Int64(v)) => Ok(*v as f64),
        Some(Value::Duration(nanos)) => Ok(go_seconds(*nanos)),
        Some(
            v @ (Value::String(_) | Value::EmailAddress(_) | Value::Uri(_) | Value::DnsName(_)),
        ) => {
            let s = v.as_str().unwrap_or_default();
            s.parse::<f64>()
                .map_err(|_| ValueError::NotNumeric(s.to_owned()))
        }
        Some(other) => Err(ValueError::WrongType(other.value_type())),
    }
}

/// Go's `time.Duration.Seconds()`: whole seconds and the remainder are converted
/// separately, which keeps long durations exact to the nanosecond where a single division
/// of the nanosecond count would round.
fn go_seconds(nanos: i64) -> f64 {
    let secs = nanos / 1_000_000_000;
    let rest = nanos % 1_000_000_000;
    secs as f64 + rest as f64 / 1e9
}

/// Writes the label text of a dimension value: strings as they are, integers in decimal,
/// doubles as plain decimals (never an exponent), booleans as `true`/`false`, addresses
/// as dotted or IPv6 text, timestamps in UTC with exactly six fractional digits,
/// durations as Go prints them (`1.5s`), string maps as `stringmap[k1:v1 k2:v2]`.
pub fn write_label<W: Write + ?Sized>(value: &Value<'_>, w: &mut W) -> fmt::Result {
    match value {
        Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
            w.write_str(s)
        }
        Value::Int64(v) => w.write_str(int_text(*v, &mut [0; 20])),
        Value::Double(v) => write_plain_float(*v, w),
        Value::Bool(v) => w.write_str(if *v { "true" } else { "false" }),
        Value::Timestamp(t) => write_timestamp(t, w),
        Value::Duration(d) => w.write_str(&golib::duration::format_duration(*d)),
        Value::IpAddress(b) => w.write_str(&golib::net::format_ip(b)),
        Value::StringMap(m) => {
            w.write_str("stringmap[")?;
            for (i, (k, v)) in m.to_btree().iter().enumerate() {
                if i > 0 {
                    w.write_char(' ')?;
                }
                write!(w, "{k}:{v}")?;
            }
            w.write_char(']')
        }
    }
}

/// The decimal text of `v`, as `{v}` writes it, in `buf`: integer labels (response
/// codes) are matched and hashed on every update, where the formatting machinery costs
/// several times more.
pub fn int_text(v: i64, buf: &mut [u8; 20]) -> &str {
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    // Only ASCII digits and a sign were written.
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

/// `s` cut to at most `limit` bytes, at a character boundary.
pub fn cap_str(s: &str, limit: usize) -> &str {
    &s[..s.floor_char_boundary(limit)]
}

/// Writes the label text of `value` (see [`write_label`]) cut to at most `limit` bytes at
/// a character boundary, stopping as soon as the limit is reached (a huge string map is
/// never formatted whole). Returns whether the text was cut.
pub fn write_label_capped<W: Write + ?Sized>(
    value: &Value<'_>,
    limit: usize,
    w: &mut W,
) -> Result<bool, fmt::Error> {
    let mut capped = Capped {
        inner: w,
        left: limit,
        cut: false,
    };
    match write_label(value, &mut capped) {
        Ok(()) => Ok(false),
        // The writer stops the formatting with an error once the limit is reached.
        Err(_) if capped.cut => Ok(true),
        Err(e) => Err(e),
    }
}

/// The label text of a dimension value (see [`write_label`]) cut to at most `limit`
/// bytes, and whether it was cut.
pub fn label_text_capped(value: &Value<'_>, limit: usize) -> (String, bool) {
    if let Some(s) = value.as_str() {
        let kept = cap_str(s, limit);
        return (kept.to_owned(), kept.len() < s.len());
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let cut = write_label_capped(value, limit, &mut out).unwrap_or(false);
    (out, cut)
}

/// Whether `text` is the label text of `value` cut to `limit` bytes, decided without
/// building that text.
pub fn label_eq_capped(value: &Value<'_>, text: &str, limit: usize) -> bool {
    if let Some(s) = value.as_str() {
        return cap_str(s, limit) == text;
    }
    if let Value::Int64(v) = value {
        return cap_str(int_text(*v, &mut [0; 20]), limit) == text;
    }
    let mut cmp = Compare { rest: text };
    write_label_capped(value, limit, &mut cmp).is_ok() && cmp.rest.is_empty()
}

/// Passes at most `left` bytes on to `inner`, cut at a character boundary; once it has
/// cut, it fails every write so that formatting stops.
struct Capped<'a, W: ?Sized> {
    inner: &'a mut W,
    left: usize,
    cut: bool,
}

impl<W: Write + ?Sized> Write for Capped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Err(fmt::Error);
        }
        if s.len() <= self.left {
            self.inner.write_str(s)?;
            self.left -= s.len();
            return Ok(());
        }
        self.inner.write_str(cap_str(s, self.left))?;
        self.left = 0;
        self.cut = true;
        Err(fmt::Error)
    }
}

/// A writer that checks what is written against an expected text, stopping at the first
/// difference.
struct Compare<'a> {
    rest: &'a str,
}

impl Write for Compare<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.rest.strip_prefix(s) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            None => Err(fmt::Error),
        }
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`: the shortest decimal that reads back as
/// `v`, never in exponent form. Rust's `Display` for `f64` is exactly that, except for
/// the infinities, which Go spells `+Inf` and `-Inf`.
fn write_plain_float<W: Write + ?Sized>(v: f64, w: &mut W) -> fmt::Result {
    if v.is_infinite() {
        w.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
    } else {
        write!(w, "{v}")
    }
}

/// A timestamp as Mixer rendered it for labels: UTC, `YYYY-MM-DDTHH:MM:SS.ffffffZ`,
/// always six fractional digits (truncated, as Go's formatting does).
fn write_timestamp<W: Write + ?Sized>(t: &Timestamp, w: &mut W) -> fmt::Result {
    let full = golib::time::format_rfc3339_nano_utc(t);
    // The RFC 3339 text has an optional fraction and ends with `Z` (UTC): keep the date
    // and time of day, then write the fraction in the fixed width.
    let seconds = match full.find('.') {
        Some(dot) => &full[..dot],
        None => full.strip_suffix('Z').unwrap_or(&full),
    };
    w.write_str(seconds)?;
    write!(w, ".{:06}Z", t.nanos / 1_000)
}

/// Appends a sample value or bucket bound as Go's `strconv.FormatFloat(v, 'g', -1, 64)`
/// writes it (what the Prometheus text encoder Istio used produces): the shortest
/// round-tripping digits, in exponent form (`1e+06`, `1e-05`) when the decimal exponent
/// is below -4 or at least 6, with `+Inf`, `-Inf` and `NaN` spelled out.
pub fn push_go_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    // The Go encoder writes every zero, negative zero included, as `0`.
    if v == 0.0 {
        out.push('0');
        return;
    }
    // `{:e}` gives the shortest round-tripping digits as `d[.ddd]e<exp>`.
    let sci = format!("{v:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        let _ = write!(out, "{v}");
        return;
    };
    let Ok(exp) = exp.parse::<i32>() else {
        let _ = write!(out, "{v}");
        return;
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if negative {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", exp.unsigned_abs());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    }
}

/// Appends a label value escaped for the text format (`\\`, `\"`, `\n`).
pub fn push_label_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `# HELP` text escaped for the text format (`\\`, `\n`).
pub fn push_help(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use expr_lang::StringMapRef;

    use super::*;

    fn g(v: f64) -> String {
        let mut s = String::new();
        push_go_float(&mut s, v);
        s
    }

    #[test]
    fn go_g_formatting() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (0.005, "0.005"),
            (0.012, "0.012"),
            (2.5, "2.5"),
            (295.0, "295"),
            (100000.0, "100000"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1e8, "1e+08"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.000123, "-0.000123"),
            (-2.5e-7, "-2.5e-07"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(g(v), want, "{v:e}");
        }
    }

    #[test]
    fn metric_values() {
        assert_eq!(metric_value(Some(&Value::Double(0.25))), Ok(0.25));
        assert_eq!(metric_value(Some(&Value::Int64(-3))), Ok(-3.0));
        assert_eq!(metric_value(Some(&Value::Duration(12_000_000))), Ok(0.012));
        assert_eq!(metric_value(Some(&Value::Duration(1_500_000_000))), Ok(1.5));
        assert_eq!(metric_value(Some(&Value::str("2.5e3"))), Ok(2500.0));
        assert_eq!(
            metric_value(Some(&Value::DnsName(Cow::Borrowed("7")))),
            Ok(7.0)
        );
        assert_eq!(
            metric_value(Some(&Value::str("12ms"))),
            Err(ValueError::NotNumeric("12ms".into()))
        );
        assert_eq!(metric_value(None), Err(ValueError::Missing));
        assert_eq!(
            metric_value(Some(&Value::Bool(true))),
            Err(ValueError::WrongType(ValueType::Bool))
        );
        assert_eq!(
            metric_value(Some(&Value::IpAddress(Cow::Owned(vec![10, 0, 0, 1])))),
            Err(ValueError::WrongType(ValueType::IpAddress))
        );
        assert_eq!(
            metric_value(Some(&Value::Timestamp(Timestamp::from_unix(0, 0)))),
            Err(ValueError::WrongType(ValueType::Timestamp))
        );
    }

    #[test]
    fn integer_text_is_as_displayed() {
        for v in [0, 7, -7, 10, 200, -1000, 1234567890123, i64::MAX, i64::MIN] {
            assert_eq!(int_text(v, &mut [0; 20]), v.to_string());
        }
    }

    #[test]
    fn label_texts() {
        let map: BTreeMap<String, String> = [("b", "2"), ("a", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let cases: Vec<(Value<'static>, &str)> = vec![
            (Value::str("reviews"), "reviews"),
            (Value::Int64(200), "200"),
            (Value::Int64(-7), "-7"),
            (Value::Double(0.5), "0.5"),
            (Value::Double(1e21), "1000000000000000000000"),
            (Value::Double(2.0), "2"),
            (Value::Double(f64::INFINITY), "+Inf"),
            (Value::Bool(true), "true"),
            (Value::Bool(false), "false"),
            (Value::IpAddress(Cow::Owned(vec![10, 0, 0, 1])), "10.0.0.1"),
            (
                Value::IpAddress(Cow::Owned(vec![
                    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                ])),
                "2001:db8::1",
            ),
            (
                Value::Timestamp(Timestamp::from_unix(1_503_309_840, 0)),
                "2017-08-21T10:04:00.000000Z",
            ),
            (
                Value::Timestamp(Timestamp {
                    secs: 1_503_309_840,
                    nanos: 123_456_789,
                    offset_secs: 3600,
                }),
                "2017-08-21T10:04:00.123456Z",
            ),
            (Value::Duration(1_500_000_000), "1.5s"),
            (Value::Duration(0), "0s"),
            (
                Value::StringMap(StringMapRef::Owned(Arc::new(map))),
                "stringmap[a:1 b:2]",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(
                label_text_capped(&v, usize::MAX),
                (want.into(), false),
                "{v:?}"
            );
            assert!(label_eq_capped(&v, want, usize::MAX), "{v:?}");
            assert!(
                !label_eq_capped(&v, &format!("{want}x"), usize::MAX),
                "{v:?}"
            );
            assert!(
                !label_eq_capped(&v, &want[..want.len() - 1], usize::MAX),
                "{v:?}"
            );
            // Cut one byte short, every kind of value agrees with its own cut text.
            let limit = want.len() - 1;
            let (cut, was_cut) = label_text_capped(&v, limit);
            assert!(was_cut && want.starts_with(&cut), "{v:?}: {cut}");
            assert!(label_eq_capped(&v, &cut, limit), "{v:?}");
            assert!(!label_eq_capped(&v, want, limit), "{v:?}");
        }
    }

    #[test]
    fn capped_label_text_cuts_at_a_character_boundary() {
        // "é" is two bytes: a limit inside it keeps the character out.
        let v = Value::str("abé€z");
        assert_eq!(label_text_capped(&v, 3), ("ab".to_owned(), true));
        assert_eq!(label_text_capped(&v, 4), ("abé".to_owned(), true));
        assert_eq!(label_text_capped(&v, 9), ("abé€z".to_owned(), false));
        assert!(label_eq_capped(&v, "ab", 3));
        assert_eq!(label_text_capped(&v, 0), (String::new(), true));

        // A large map stops being formatted at the limit.
        let big: BTreeMap<String, String> = (0..10_000)
            .map(|i| (format!("k{i:05}"), "é".repeat(100)))
            .collect();
        let m = Value::StringMap(StringMapRef::Owned(Arc::new(big)));
        let (text, cut) = label_text_capped(&m, 1001);
        assert!(cut);
        assert!(text.len() <= 1001 && text.len() >= 1000, "{}", text.len());
        assert!(text.starts_with("stringmap[k00000:éé"));
        assert!(label_eq_capped(&m, &text, 1001));
        let mut hashed = String::new();
        assert_eq!(write_label_capped(&m, 1001, &mut hashed), Ok(true));
        assert_eq!(hashed, text);
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        push_label_value(&mut s, "a\"b\\c\nd");
        assert_eq!(s, r#"a\"b\\c\nd"#);
        let mut s = String::new();
        push_help(&mut s, "say \"hi\"\\\n");
        assert_eq!(s, r#"say "hi"\\\n"#);
    }
}
