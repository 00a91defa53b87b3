//! One output line, byte for byte as Mixer's stdio adapter wrote it.
//!
//! Mixer handed each instance to a zap core configured with the keys `level`, `time` and
//! `instance`, a lowercase level encoder, a custom time encoder and Go's duration text.
//! The JSON form is zap's JSON encoder; the console form is zap's console encoder, which
//! prints the entry's own fields tab-separated and then the fields as a JSON object with
//! `": "` and `", "` separators. The rules below reproduce those encoders for the values
//! an instance can hold.

use std::fmt::Write as _;
use std::sync::Arc;

use expr_lang::Value;
use expr_lang::golib::duration::write_duration;
use expr_lang::golib::net::write_ip;
use expr_lang::golib::push_padded;
use expr_lang::golib::time::{Timestamp, write_date_time};

use super::config::Level;

/// Go's zero `time.Time` (`0001-01-01T00:00:00Z`): the time of a log entry whose
/// `timestamp` field is not set.
pub const ZERO_TIME: Timestamp = Timestamp {
    secs: -62_135_596_800,
    nanos: 0,
    offset_secs: 0,
};

/// How IP address bytes are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpStyle {
    /// As address text (`10.0.0.1`): Mixer converted IP-typed log entry variables.
    Text,
    /// As base64 of the raw bytes: Mixer did not convert metric values and dimensions,
    /// so zap wrote them as a byte slice.
    Base64,
}

/// A line being written: the entry's own fields first, then one call per field.
pub struct Line {
    buf: String,
    json: bool,
    fields: usize,
}

impl Line {
    /// Starts a line in a buffer of `capacity` bytes: sized by the caller from what it
    /// knows of the fields, so a typical line is written without growing it.
    pub fn start(
        json: bool,
        level: Level,
        time: &Timestamp,
        instance: &str,
        capacity: usize,
    ) -> Line {
        let mut buf = String::with_capacity(capacity);
        if json {
            buf.push_str("{\"level\":\"");
            buf.push_str(level.output_name());
            buf.push_str("\",\"time\":\"");
            push_time(&mut buf, time);
            buf.push('"');
            // zap leaves the name key out when the logger name is empty.
            if !instance.is_empty() {
                buf.push_str(",\"instance\":");
                push_json_str(&mut buf, instance);
            }
        } else {
            // The console encoder prints these elements unquoted and unescaped.
            push_time(&mut buf, time);
            buf.push('\t');
            buf.push_str(level.output_name());
            if !instance.is_empty() {
                buf.push('\t');
                buf.push_str(instance);
            }
        }
        Line {
            buf,
            json,
            fields: 0,
        }
    }

    /// Appends the field `key`. `None` is Go's nil interface, which zap writes as `null`.
    pub fn field(&mut self, key: &str, value: Option<&Value<'_>>, ip: IpStyle) {
        self.separator();
        push_json_str(&mut self.buf, key);
        self.buf.push(':');
        self.value(value, ip);
    }

    /// Appends a field whose key is already written as `"key":` (escaped and quoted,
    /// see [`key_prefix`]), as a [`Layout`] holds it.
    pub fn field_with_prefix(&mut self, prefix: &str, value: Option<&Value<'_>>, ip: IpStyle) {
        self.separator();
        self.buf.push_str(prefix);
        self.value(value, ip);
    }

    fn separator(&mut self) {
        if self.json {
            self.buf.push(',');
        } else if self.fields == 0 {
            self.buf.push_str("\t{");
        } else {
            self.buf.push_str(", ");
        }
    }

    fn value(&mut self, value: Option<&Value<'_>>, ip: IpStyle) {
        if !self.json {
            self.buf.push(' ');
        }
        push_value(&mut self.buf, value, ip);
        self.fields += 1;
    }

    /// The finished line, newline included.
    pub fn finish(mut self) -> String {
        // The JSON object always closes; the console field object exists only if a
        // field was written.
        if self.json || self.fields > 0 {
            self.buf.push('}');
        }
        self.buf.push('\n');
        self.buf
    }
}

/// The fields of one map (an instance's `variables` or `dimensions`) in output order,
/// with their keys already escaped: computed once per map of the configuration rather
/// than sorting and escaping the names on every line.
#[derive(Debug)]
pub struct Layout {
    /// The map's names in configuration order; they identify the map (see [`Layout::fits`]).
    names: Vec<Arc<str>>,
    /// `"key":` of every field, concatenated in output order.
    prefixes: String,
    /// Per field in output order: its index in the map and the end of its prefix.
    fields: Vec<(usize, usize)>,
}

impl Layout {
    /// The layout of the map whose names are `names`: sorted by byte value, as Mixer
    /// sorted them (a stable sort, so equal names keep their configuration order).
    pub fn new(names: &[Arc<str>]) -> Layout {
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| names[a].cmp(&names[b]));
        let mut prefixes = String::with_capacity(names.iter().map(|n| n.len() + 3).sum());
        let fields = order
            .into_iter()
            .map(|i| {
                prefixes.push_str(&key_prefix(&names[i]));
                (i, prefixes.len())
            })
            .collect();
        Layout {
            names: names.to_vec(),
            prefixes,
            fields,
        }
    }

    /// Whether this is the layout of `names`. The names are compared by identity, not
    /// text: the layout holds them, so an equal pointer is the same name of the same
    /// configuration, and the check costs one comparison per name.
    pub fn fits(&self, names: &[Arc<str>]) -> bool {
        self.names.len() == names.len()
            && self.names.iter().zip(names).all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Bytes of all the keys, for sizing a line.
    pub fn keys_len(&self) -> usize {
        self.prefixes.len()
    }

    /// `(prefix, index in the map)` of every field, in output order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, usize)> {
        let mut start = 0;
        self.fields.iter().map(move |&(i, end)| {
            let prefix = &self.prefixes[start..end];
            start = end;
            (prefix, i)
        })
    }
}

/// A key as [`Line::field_with_prefix`] takes it: `"key":`, escaped.
pub fn key_prefix(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 3);
    push_json_str(&mut out, key);
    out.push(':');
    out
}

/// Mixer's time encoder: the instant in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, always six
/// fractional digits, truncated (not rounded) to the microsecond.
pub fn push_time(out: &mut String, t: &Timestamp) {
    // RFC 3339's date and clock; only the fraction differs from RFC3339Nano.
    write_date_time(out, t, 0);
    out.push('.');
    push_padded(out, u64::from(t.nanos / 1000), 6);
    out.push('Z');
}

/// Appends `v` in decimal, as Go's `strconv` writes an int64.
fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_padded(out, v.unsigned_abs(), 1);
}

/// A value as zap's `Any` field wrote it in a JSON object.
fn push_value(out: &mut String, value: Option<&Value<'_>>, ip: IpStyle) {
    let Some(value) = value else {
        out.push_str("null");
        return;
    };
    match value {
        Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
            push_json_str(out, s);
        }
        Value::Int64(v) => push_i64(out, *v),
        Value::Double(v) => push_float(out, *v),
        Value::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
        Value::Timestamp(t) => {
            out.push('"');
            push_time(out, t);
            out.push('"');
        }
        // Go duration text has no characters that need escaping.
        Value::Duration(d) => {
            out.push('"');
            write_duration(out, *d);
            out.push('"');
        }
        Value::IpAddress(b) => {
            out.push('"');
            match ip {
                IpStyle::Text => write_ip(out, b),
                IpStyle::Base64 => push_base64(out, b),
            }
            out.push('"');
        }
        // Mixer's string map type is a fmt.Stringer printing `string` followed by Go's
        // `%v` of the map (`map[k1:v1 k2:v2]`, keys sorted), and zap writes Stringers as
        // that text. `Value`'s Display is exactly that `%v` form.
        Value::StringMap(_) => push_json_str(out, &format!("string{value}")),
    }
}

/// zap's float encoding: shortest decimal that reads back the same, never an exponent
/// (Go's `strconv.AppendFloat(f, 'f', -1, 64)`, which Rust's `Display` matches);
/// non-finite values as the strings `"NaN"`, `"+Inf"`, `"-Inf"`.
fn push_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v == f64::INFINITY {
        out.push_str("\"+Inf\"");
    } else if v == f64::NEG_INFINITY {
        out.push_str("\"-Inf\"");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A JSON string with zap's escaping: `"` and `\` backslashed, `\n` `\r` `\t` by name,
/// other control bytes as `\u00XX` (lowercase hex), everything else (including `<`, `>`,
/// `&`, DEL and non-ASCII) as it is.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    push_escaped(out, s);
    out.push('"');
}

/// The body of [`push_json_str`]: runs of bytes that need no escape are copied at once.
fn push_escaped(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut run = 0;
    while let Some(i) = next_escape(bytes, run) {
        // Escaped bytes are ASCII, so `run..i` always ends on a character boundary.
        out.push_str(&s[run..i]);
        let b = bytes[i];
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
}

/// Whether zap escapes the byte `b`.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Index of the first byte at or after `from` that needs escaping. Eight bytes are
/// checked at a time (the classic "has a zero byte" bit trick, applied to `b < 0x20`,
/// `b ^ '"'` and `b ^ '\\'`): a test that finds none is exact, and a word that may hold
/// one is searched byte by byte.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        if below(x, 0x20) | below(x ^ (ONES * 0x22), 1) | below(x ^ (ONES * 0x5c), 1) != 0 {
            break;
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|p| i + p)
}

/// Standard base64 with padding (Go's `base64.StdEncoding`), as zap wrote byte slices.
fn push_base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        out.push(sextet(n, 18));
        out.push(sextet(n, 12));
        out.push(if chunk.len() > 1 { sextet(n, 6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(n, 0) } else { '=' });
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use expr_lang::StringMapRef;
    use expr_lang::golib::time::parse_rfc3339;

    use super::*;

    fn ts(s: &str) -> Timestamp {
        parse_rfc3339(s).unwrap_or_else(|| panic!("{s:?} should parse"))
    }

    fn time_text(t: &Timestamp) -> String {
        let mut s = String::new();
        push_time(&mut s, t);
        s
    }

    fn value_text(v: Option<&Value<'_>>, ip: IpStyle) -> String {
        let mut s = String::new();
        push_value(&mut s, v, ip);
        s
    }

    #[test]
    fn mixers_own_example_line() {
        // The line the Go adapter's unit test expects, byte for byte.
        let mut line = Line::start(true, Level::Warning, &ZERO_TIME, "Foo", 5);
        line.field("Bool", Some(&Value::Bool(true)), IpStyle::Text);
        line.field(
            "Duration",
            Some(&Value::Duration(1_000_000_000)),
            IpStyle::Text,
        );
        line.field("Int64", Some(&Value::Int64(123)), IpStyle::Text);
        line.field("String", Some(&Value::str("a string")), IpStyle::Text);
        let t = Value::Timestamp(ts("2017-08-21T10:04:00Z"));
        line.field("Time", Some(&t), IpStyle::Text);
        assert_eq!(
            line.finish(),
            "{\"level\":\"warn\",\"time\":\"0001-01-01T00:00:00.000000Z\",\"instance\":\"Foo\",\
             \"Bool\":true,\"Duration\":\"1s\",\"Int64\":123,\"String\":\"a string\",\
             \"Time\":\"2017-08-21T10:04:00.000000Z\"}\n"
        );
    }

    #[test]
    fn console_form() {
        let t = ts("2019-03-04T05:06:07.5Z");
        let mut line = Line::start(false, Level::Error, &t, "accesslog.instance.ns", 2);
        line.field("a", Some(&Value::Int64(1)), IpStyle::Text);
        line.field("b", Some(&Value::str("x y")), IpStyle::Text);
        assert_eq!(
            line.finish(),
            "2019-03-04T05:06:07.500000Z\terror\taccesslog.instance.ns\t{\"a\": 1, \"b\": \"x y\"}\n"
        );
        // Without fields zap writes no trailing separator and no object.
        let bare = Line::start(false, Level::Info, &t, "n", 0).finish();
        assert_eq!(bare, "2019-03-04T05:06:07.500000Z\tinfo\tn\n");
        let bare_json = Line::start(true, Level::Info, &t, "n", 0).finish();
        assert_eq!(
            bare_json,
            "{\"level\":\"info\",\"time\":\"2019-03-04T05:06:07.500000Z\",\"instance\":\"n\"}\n"
        );
        // An empty name leaves the instance key out, as zap did.
        let unnamed = Line::start(true, Level::Info, &t, "", 0).finish();
        assert!(!unnamed.contains("instance"), "{unnamed}");
    }

    #[test]
    fn time_is_utc_with_six_truncated_digits() {
        assert_eq!(time_text(&ZERO_TIME), "0001-01-01T00:00:00.000000Z");
        assert_eq!(
            time_text(&ts("2020-05-01T10:20:30.123456789Z")),
            "2020-05-01T10:20:30.123456Z"
        );
        // Written in another zone: printed in UTC.
        assert_eq!(
            time_text(&ts("2020-05-01T12:20:30.000001+02:00")),
            "2020-05-01T10:20:30.000001Z"
        );
        assert_eq!(
            time_text(&ts("1999-12-31T23:59:59.999999999Z")),
            "1999-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            time_text(&Timestamp::from_unix(0, 0)),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn scalar_values() {
        let t = IpStyle::Text;
        assert_eq!(value_text(None, t), "null");
        assert_eq!(value_text(Some(&Value::Int64(-42)), t), "-42");
        assert_eq!(value_text(Some(&Value::Bool(false)), t), "false");
        assert_eq!(value_text(Some(&Value::Double(0.1)), t), "0.1");
        assert_eq!(value_text(Some(&Value::Double(2.0)), t), "2");
        assert_eq!(value_text(Some(&Value::Double(-0.0)), t), "-0");
        assert_eq!(
            value_text(Some(&Value::Double(1e21)), t),
            "1000000000000000000000"
        );
        assert_eq!(value_text(Some(&Value::Double(1.5e-7)), t), "0.00000015");
        assert_eq!(value_text(Some(&Value::Double(f64::NAN)), t), "\"NaN\"");
        assert_eq!(
            value_text(Some(&Value::Double(f64::INFINITY)), t),
            "\"+Inf\""
        );
        assert_eq!(
            value_text(Some(&Value::Double(f64::NEG_INFINITY)), t),
            "\"-Inf\""
        );
        assert_eq!(
            value_text(Some(&Value::Duration(13_600_000)), t),
            "\"13.6ms\""
        );
        assert_eq!(value_text(Some(&Value::Duration(0)), t), "\"0s\"");
        assert_eq!(value_text(Some(&Value::Duration(1_500)), t), "\"1.5µs\"");
        assert_eq!(
            value_text(Some(&Value::Duration(5_400_000_000_000)), t),
            "\"1h30m0s\""
        );
        assert_eq!(
            value_text(Some(&Value::Uri(Cow::Borrowed("http://a/b"))), t),
            "\"http://a/b\""
        );
    }

    #[test]
    fn ip_addresses_as_text_or_base64() {
        let v4 = Value::IpAddress(Cow::Owned(vec![10, 0, 0, 1]));
        let mut mapped = vec![0u8; 10];
        mapped.extend([0xff, 0xff, 10, 0, 0, 1]);
        let v4_in_v6 = Value::IpAddress(Cow::Owned(mapped));
        let mut v6 = vec![0x20, 0x01, 0x0d, 0xb8];
        v6.extend([0u8; 11]);
        v6.push(1);
        let v6 = Value::IpAddress(Cow::Owned(v6));
        assert_eq!(value_text(Some(&v4), IpStyle::Text), "\"10.0.0.1\"");
        assert_eq!(value_text(Some(&v4_in_v6), IpStyle::Text), "\"10.0.0.1\"");
        assert_eq!(value_text(Some(&v6), IpStyle::Text), "\"2001:db8::1\"");
        assert_eq!(value_text(Some(&v4), IpStyle::Base64), "\"CgAAAQ==\"");
        assert_eq!(
            value_text(Some(&v4_in_v6), IpStyle::Base64),
            "\"AAAAAAAAAAAAAP//CgAAAQ==\""
        );
    }

    #[test]
    fn base64_padding() {
        let b64 = |b: &[u8]| {
            let mut s = String::new();
            push_base64(&mut s, b);
            s
        };
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foob"), "Zm9vYg==");
        assert_eq!(b64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn string_maps_print_as_mixers_stringer() {
        let m: BTreeMap<String, String> = [("b", "2"), ("a", "1"), ("B", "x \"q\"")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let v = Value::StringMap(StringMapRef::Owned(Arc::new(m)));
        assert_eq!(
            value_text(Some(&v), IpStyle::Text),
            "\"stringmap[B:x \\\"q\\\" a:1 b:2]\""
        );
        let empty = Value::StringMap(StringMapRef::Owned(Arc::new(BTreeMap::new())));
        assert_eq!(value_text(Some(&empty), IpStyle::Text), "\"stringmap[]\"");
    }

    #[test]
    fn strings_are_escaped_as_zap_did() {
        let esc = |s: &str| {
            let mut out = String::new();
            push_json_str(&mut out, s);
            out
        };
        assert_eq!(esc("plain"), "\"plain\"");
        assert_eq!(esc("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(esc("l1\nl2\r\t"), "\"l1\\nl2\\r\\t\"");
        assert_eq!(esc("\u{1}\u{1f}"), "\"\\u0001\\u001f\"");
        // No HTML escaping, DEL and non-ASCII as they are.
        assert_eq!(esc("<a&b>\u{7f}é✓"), "\"<a&b>\u{7f}é✓\"");
        // Keys are escaped the same way.
        let mut line = Line::start(true, Level::Info, &ZERO_TIME, "i\"n", 1);
        line.field("k\"", Some(&Value::Int64(1)), IpStyle::Text);
        let text = line.finish();
        assert!(text.contains(r#""instance":"i\"n","k\"":1}"#), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["instance"], "i\"n");
    }

    #[test]
    fn escaping_finds_every_byte_in_long_strings() {
        // Each special byte at every position of a string longer than the 8-byte
        // words the scan checks at once, checked against a plain byte-by-byte escape.
        let reference = |s: &str| {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        };
        for special in [
            "\"", "\\", "\n", "\u{0}", "\u{1f}", "\u{7f}", "é", " ", "!", "#", "[", "]",
        ] {
            for at in 0..20 {
                let mut s = "abcdefghijklmnopqrs".to_owned();
                s.insert_str(at, special);
                s.push_str(special);
                let mut out = String::new();
                push_json_str(&mut out, &s);
                assert_eq!(out, reference(&s), "{s:?}");
            }
        }
    }

    #[test]
    fn integers_and_padding() {
        let int = |v: i64| {
            let mut s = String::new();
            push_i64(&mut s, v);
            s
        };
        for v in [0, 7, -7, 10, 99, 100, i64::MAX, i64::MIN, -1_000_000] {
            assert_eq!(int(v), v.to_string());
        }
        let mut s = String::new();
        push_padded(&mut s, 42, 6);
        assert_eq!(s, "000042");
        // Years past 9999 and before year 1 keep Go's form.
        assert_eq!(
            time_text(&Timestamp::from_unix(253_402_300_800, 1_000)),
            "10000-01-01T00:00:00.000001Z"
        );
        assert_eq!(
            time_text(&Timestamp::from_unix(-62_167_219_200 - 86_400, 0)),
            "-0001-12-31T00:00:00.000000Z"
        );
    }

    #[test]
    fn layouts_sort_names_and_escape_keys_once() {
        let names: Vec<Arc<str>> = ["b", "a\"q", "C", "a"].into_iter().map(Arc::from).collect();
        let layout = Layout::new(&names);
        let fields: Vec<(&str, usize)> = layout.fields().collect();
        assert_eq!(
            fields,
            [
                ("\"C\":", 2),
                ("\"a\":", 3),
                ("\"a\\\"q\":", 1),
                ("\"b\":", 0)
            ]
        );
        assert_eq!(
            layout.keys_len(),
            fields.iter().map(|(p, _)| p.len()).sum::<usize>()
        );
        // Identity, not text: the same names in another allocation are another map.
        assert!(layout.fits(&names));
        let copies: Vec<Arc<str>> = names.iter().map(|n| Arc::from(&**n)).collect();
        assert!(!layout.fits(&copies));
        assert!(!layout.fits(&names[..3]));
        assert!(Layout::new(&[]).fits(&[]));
        // Written through a layout, a line is the line written key by key.
        let values = [
            Value::Int64(1),
            Value::str("x"),
            Value::Bool(true),
            Value::str(""),
        ];
        for json in [true, false] {
            let mut by_key = Line::start(json, Level::Info, &ZERO_TIME, "i", 0);
            let mut sorted: Vec<usize> = (0..names.len()).collect();
            sorted.sort_by(|&a, &b| names[a].cmp(&names[b]));
            for i in sorted {
                by_key.field(&names[i], Some(&values[i]), IpStyle::Text);
            }
            let mut by_layout = Line::start(json, Level::Info, &ZERO_TIME, "i", 0);
            for (prefix, i) in layout.fields() {
                by_layout.field_with_prefix(prefix, Some(&values[i]), IpStyle::Text);
            }
            assert_eq!(by_layout.finish(), by_key.finish());
        }
    }
}
