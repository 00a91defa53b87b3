//! Counter identity and override selection, shared by `memquota` and `redisquota`.
//!
//! A quota counter is identified by the instance's fully qualified name and *every*
//! dimension of the instance, so each distinct dimension tuple has its own counter.
//! The text follows Mixer's `makeKey`: the name, then for each dimension in name order
//! `;name=value`, with int64 values in hex, doubles in Go's `'b'` format, booleans as
//! `true`/`false`, IP addresses as their raw bytes and durations as Go duration text.
//!
//! Mixer's text was ambiguous: a value containing `;k=` could make two different tuples
//! share a counter. Here `\` and `;` inside names and values are escaped with `\`, which
//! leaves every ordinary key byte-for-byte as Mixer wrote it and makes the mapping from
//! tuples to keys injective (the dimension names of one instance are fixed, so the
//! segments can always be split back apart).

use std::collections::BTreeMap;

use expr_lang::Value;
use expr_lang::golib::{duration, net, time};
use templates::instances::Dims;

/// Builds the counter key of quota instance `name` with `dims`.
///
/// `guard_suffix`: redisquota appends `-<hash>` to the key when an override applies. A
/// key whose last value itself ends in `-<digits>` could then equal another tuple's
/// overridden key, so with `guard_suffix` such a trailing `-` is escaped too.
pub fn counter_key(name: &str, dims: &Dims<'_>, guard_suffix: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 16 * dims.len());
    counter_key_into(&mut out, name, dims, guard_suffix);
    out
}

/// Dimensions sorted without a heap allocation up to this many (instances have a few).
const SORTED_ON_STACK: usize = 16;

/// [`counter_key`] written into `out` (cleared first), so a caller can reuse one buffer.
pub fn counter_key_into(out: &mut Vec<u8>, name: &str, dims: &Dims<'_>, guard_suffix: bool) {
    out.clear();
    out.extend_from_slice(name.as_bytes());
    let n = dims.len();
    let mut on_stack = [0usize; SORTED_ON_STACK];
    let mut on_heap = Vec::new();
    let order: &mut [usize] = if n <= SORTED_ON_STACK {
        &mut on_stack[..n]
    } else {
        on_heap.resize(n, 0);
        &mut on_heap
    };
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i;
    }
    // Stable, as before: the key must not depend on the sort algorithm. An instance's
    // dimensions usually come in name order already.
    if !order.is_sorted_by(|a, b| dims.names[*a] <= dims.names[*b]) {
        order.sort_by(|a, b| dims.names[*a].cmp(&dims.names[*b]));
    }
    let body = out.len();
    // Almost no name or value needs escaping: everything is written as is and checked
    // once, and only a key that needed it is written again escaped part by part.
    let last = write_raw(out, dims, order);
    if needs_escape(&out[body..], n) {
        out.truncate(body);
        write_escaped(out, dims, order, guard_suffix);
    } else if guard_suffix && n > 0 {
        guard_trailing_number(out, last);
    }
}

/// Appends `;name=value` for each dimension in `order`, unescaped; returns where the last
/// value starts.
fn write_raw(out: &mut Vec<u8>, dims: &Dims<'_>, order: &[usize]) -> usize {
    let mut last = out.len();
    for &i in order {
        out.push(b';');
        out.extend_from_slice(dims.names[i].as_bytes());
        out.push(b'=');
        last = out.len();
        match &dims.values[i] {
            // Strings, the usual dimension, are copied straight into the key.
            Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
                out.extend_from_slice(s.as_bytes())
            }
            other => render_value(out, other),
        }
    }
    last
}

/// Appends `;name=value` for each dimension in `order`, names and values escaped.
fn write_escaped(out: &mut Vec<u8>, dims: &Dims<'_>, order: &[usize], guard_suffix: bool) {
    let mut value = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        out.push(b';');
        escape_into(out, dims.names[i].as_bytes());
        out.push(b'=');
        let start = out.len();
        value.clear();
        render_value(&mut value, &dims.values[i]);
        escape_into(out, &value);
        if guard_suffix && pos + 1 == order.len() {
            guard_trailing_number(out, start);
        }
    }
}

/// Whether `raw`, the unescaped `;name=value` parts of `parts` dimensions, has a `\` or a
/// `;` besides the parts' own separators: whether it has more than `parts` of them.
fn needs_escape(raw: &[u8], parts: usize) -> bool {
    special_bytes(raw) != parts
}

/// The number of `\` and `;` bytes in `bytes`, counted eight at a time.
fn special_bytes(bytes: &[u8]) -> usize {
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    // The high bit of each byte of `x` that is zero, exactly (no carries between bytes).
    let zero_bytes = |x: u64| !(((x & LOW7).wrapping_add(LOW7)) | x) & !LOW7;
    let mut chunks = bytes.chunks_exact(8);
    let mut count = 0;
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
        let found = zero_bytes(word ^ (ONES * u64::from(b'\\')))
            | zero_bytes(word ^ (ONES * u64::from(b';')));
        // One bit per found byte, at the bottom of its byte: their sum is the top byte
        // of the product.
        count += ((found >> 7).wrapping_mul(ONES) >> 56) as usize;
    }
    count
        + chunks
            .remainder()
            .iter()
            .filter(|&&b| b == b'\\' || b == b';')
            .count()
}

/// Appends `bytes` with `\` and `;` escaped by a backslash.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == b'\\' || b == b';' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// If `out[start..]` ends with `-` followed by digits, escapes that `-`.
fn guard_trailing_number(out: &mut Vec<u8>, start: usize) {
    let digits = out[start..]
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let dash = out.len() - digits;
    if digits > 0 && dash > start && out[dash - 1] == b'-' {
        out.insert(dash - 1, b'\\');
    }
}

/// The value's text in a counter key (Mixer's `makeKey` rendering).
fn render_value(out: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
            out.extend_from_slice(s.as_bytes())
        }
        Value::Int64(n) => {
            // Go's strconv.AppendInt(n, 16): lowercase hex with a leading minus sign.
            if *n < 0 {
                out.push(b'-');
            }
            out.extend_from_slice(format!("{:x}", n.unsigned_abs()).as_bytes());
        }
        Value::Double(f) => out.extend_from_slice(go_float_b(*f).as_bytes()),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::IpAddress(b) => out.extend_from_slice(b),
        Value::Duration(d) => out.extend_from_slice(duration::format_duration(*d).as_bytes()),
        // Mixer printed Go's `time.Time.String()`, which depends on the zone name; UTC
        // RFC 3339 text names the same instant unambiguously.
        Value::Timestamp(t) => out.extend_from_slice(time::format_rfc3339_nano_utc(t).as_bytes()),
        Value::StringMap(m) => {
            // Mixer concatenated keys and values, so {"ab":"c"} and {"a":"bc"} shared a
            // counter; here entries are `k=v` joined by `&`, with `\`, `=` and `&`
            // escaped.
            for (i, (k, v)) in m.to_btree().iter().enumerate() {
                if i > 0 {
                    out.push(b'&');
                }
                escape_map_part(out, k);
                out.push(b'=');
                escape_map_part(out, v);
            }
        }
    }
}

fn escape_map_part(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if matches!(b, b'\\' | b'=' | b'&') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Go's `strconv.FormatFloat(f, 'b', -1, 64)`: `<decimal mantissa>p<exponent>`.
pub fn go_float_b(f: f64) -> String {
    let bits = f.to_bits();
    let neg = bits >> 63 != 0;
    let mut exp = ((bits >> 52) & 0x7ff) as i64;
    let mut mant = bits & ((1u64 << 52) - 1);
    if exp == 0x7ff {
        return if mant != 0 {
            "NaN".to_owned()
        } else if neg {
            "-Inf".to_owned()
        } else {
            "+Inf".to_owned()
        };
    }
    if exp == 0 {
        // Subnormal: no implicit leading bit, and the exponent of the smallest normal.
        exp += 1;
    } else {
        mant |= 1u64 << 52;
    }
    let exp = exp - 1023 - 52;
    format!(
        "{}{mant}p{}{exp}",
        if neg { "-" } else { "" },
        if exp >= 0 { "+" } else { "" }
    )
}

/// Mixer's `adapter.StringEquals`: whether an instance dimension equals the text of an
/// override. The text is parsed into the dimension's type and compared (int64 decimal,
/// double, Go `ParseBool`, RFC 3339 instant, Go duration); strings compare exactly;
/// IP addresses and string maps compare by their printed form. `None` is a dimension
/// the instance does not have.
pub fn string_equals(value: Option<&Value<'_>>, text: &str) -> bool {
    let Some(value) = value else {
        return text.is_empty();
    };
    match value {
        Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => s == text,
        Value::Int64(n) => text.parse::<i64>().is_ok_and(|t| t == *n),
        Value::Double(f) => text.parse::<f64>().is_ok_and(|t| t == *f),
        Value::Bool(b) => go_parse_bool(text) == Some(*b),
        Value::Timestamp(t) => time::parse_rfc3339(text).is_some_and(|p| p.same_instant(t)),
        Value::Duration(d) => duration::parse_duration(text) == Some(*d),
        Value::IpAddress(b) => net::format_ip(b) == text,
        Value::StringMap(_) => value.to_string() == text,
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether every configured override dimension equals the instance's dimension.
/// `absent_matches_empty`: memquota treats a dimension the instance lacks as `""`;
/// redisquota never matches it (both as in Mixer).
pub fn dimensions_match(
    config: &BTreeMap<String, String>,
    dims: &Dims<'_>,
    absent_matches_empty: bool,
) -> bool {
    config.iter().all(|(k, text)| match dims.get(k) {
        Some(v) => string_equals(Some(v), text),
        None => absent_matches_empty && string_equals(None, text),
    })
}

/// Mixer's override hash for redisquota keys: FNV-1a (32 bit) over the override's
/// dimensions in name order, each written as `name\tvalue\n`, printed in decimal.
pub fn override_hash(dimensions: &BTreeMap<String, String>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for (k, v) in dimensions {
        for part in [k.as_bytes(), b"\t", v.as_bytes(), b"\n"] {
            for &b in part {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
        }
    }
    h.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::sync::Arc;

    fn dims<'a>(names: &'a [Arc<str>], values: Vec<Value<'a>>) -> Dims<'a> {
        Dims { names, values }
    }

    fn text(k: Vec<u8>) -> String {
        String::from_utf8(k).unwrap()
    }

    #[test]
    fn quota_key_rendering_follows_mixer() {
        let names: Vec<Arc<str>> = ["source", "destination", "code", "ratio", "ok", "d"]
            .into_iter()
            .map(Arc::from)
            .collect();
        let d = dims(
            &names,
            vec![
                Value::str("reviews"),
                Value::str("ratings"),
                Value::Int64(-255),
                Value::Double(1.0),
                Value::Bool(true),
                Value::Duration(1_500_000_000),
            ],
        );
        assert_eq!(
            text(counter_key("q.instance.ns", &d, false)),
            "q.instance.ns;code=-ff;d=1.5s;destination=ratings;ok=true;\
             ratio=4503599627370496p-52;source=reviews"
        );
        // No dimensions: the name alone.
        assert_eq!(text(counter_key("q", &Dims::default(), false)), "q");
        // IP addresses are their raw bytes.
        let n: Vec<Arc<str>> = vec![Arc::from("ip")];
        let ip = dims(&n, vec![Value::IpAddress(Cow::Borrowed(&[10, 0, 0, 1]))]);
        assert_eq!(
            counter_key("q", &ip, false),
            b"q;ip=\x0a\x00\x00\x01".to_vec()
        );
    }

    #[test]
    fn quota_escape_scan_finds_every_special_byte() {
        for len in 0..40 {
            assert!(!needs_escape(&vec![b'a'; len], 0));
            for at in 0..len {
                for special in [b'\\', b';'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert!(needs_escape(&bytes, 0), "{len} {at}");
                }
            }
        }
        // Bytes next to the special ones in value do not count.
        assert!(!needs_escape(
            b"[]:<=>?@AZaz{|}~\x00\xff\x5b\x5d\x3a\x3c",
            0
        ));
        // Counted exactly, neighbours and all.
        for len in 0..40usize {
            let bytes: Vec<u8> = (0..len)
                .map(|i| [b';', b'\\', b'a', b':', 0, 0xff, b'[', b';'][(i * 7 + len) % 8])
                .collect();
            let naive = bytes.iter().filter(|&&b| b == b';' || b == b'\\').count();
            assert_eq!(special_bytes(&bytes), naive, "{bytes:?}");
        }
        // The parts' own separators do not count; one more does.
        assert!(!needs_escape(b";a=b;c=d", 2));
        assert!(needs_escape(b";a=b;c=d;", 2));
        assert!(needs_escape(b";a=b;c=\\d", 2));
    }

    #[test]
    fn quota_go_float_b_format() {
        assert_eq!(go_float_b(1.5), "6755399441055744p-52");
        assert_eq!(go_float_b(-2.0), "-4503599627370496p-51");
        assert_eq!(go_float_b(0.0), "0p-1074");
        assert_eq!(
            go_float_b(f64::MIN_POSITIVE / 2.0),
            "2251799813685248p-1074"
        );
        assert_eq!(go_float_b(2f64.powi(60)), "4503599627370496p+8");
        assert_eq!(go_float_b(f64::INFINITY), "+Inf");
        assert_eq!(go_float_b(f64::NEG_INFINITY), "-Inf");
        assert_eq!(go_float_b(f64::NAN), "NaN");
    }

    #[test]
    fn quota_keys_of_distinct_tuples_differ() {
        let names: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b")];
        // In Mixer both rendered as `q;a=x;b=y;b=z`.
        let k1 = counter_key(
            "q",
            &dims(&names, vec![Value::str("x;b=y"), Value::str("z")]),
            false,
        );
        let k2 = counter_key(
            "q",
            &dims(&names, vec![Value::str("x"), Value::str("y;b=z")]),
            false,
        );
        assert_ne!(k1, k2);
        assert_eq!(text(k1), "q;a=x\\;b=y;b=z");
        // Ordinary values are untouched.
        let plain = counter_key(
            "q",
            &dims(
                &names,
                vec![Value::str("istio-ingressgateway"), Value::str("v-1")],
            ),
            false,
        );
        assert_eq!(text(plain), "q;a=istio-ingressgateway;b=v-1");
        // With the redisquota suffix guard, a value ending in `-<digits>` cannot look like
        // an overridden key.
        let guarded = counter_key(
            "q",
            &dims(
                &names,
                vec![Value::str("istio-ingressgateway"), Value::str("v-12")],
            ),
            true,
        );
        assert_eq!(text(guarded), "q;a=istio-ingressgateway;b=v\\-12");
        let n1: Vec<Arc<str>> = vec![Arc::from("m")];
        let map = |pairs: &[(&str, &str)]| {
            Value::StringMap(expr_lang::StringMapRef::Owned(Arc::new(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )))
        };
        let m1 = counter_key("q", &dims(&n1, vec![map(&[("ab", "c")])]), false);
        let m2 = counter_key("q", &dims(&n1, vec![map(&[("a", "bc")])]), false);
        assert_ne!(m1, m2);
    }

    /// Keys written raw and checked once are the keys written escaped part by part,
    /// whatever the names' order and the values' special bytes.
    #[test]
    fn quota_keys_written_raw_equal_keys_written_escaped() {
        let names: Vec<Arc<str>> = ["z;", "a\\", "m", "b"].into_iter().map(Arc::from).collect();
        let values = [
            "plain",
            "x;y",
            "back\\slash",
            "v-12",
            "",
            ";",
            "-1",
            "a-b-3",
        ];
        for first in values {
            for last in values {
                for guard in [false, true] {
                    for n in 1..=names.len() {
                        let mut vals = vec![Value::str(first); n];
                        vals[n - 1] = Value::str(last);
                        let d = dims(&names[..n], vals);
                        let mut order: Vec<usize> = (0..n).collect();
                        order.sort_by(|a, b| d.names[*a].cmp(&d.names[*b]));
                        let mut expected = b"q".to_vec();
                        write_escaped(&mut expected, &d, &order, guard);
                        assert_eq!(
                            text(counter_key("q", &d, guard)),
                            text(expected),
                            "{first:?} {last:?} {guard} {n}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn quota_string_equals_parses_into_the_dimension_type() {
        assert!(string_equals(Some(&Value::str("ratings")), "ratings"));
        assert!(!string_equals(Some(&Value::str("ratings")), "Ratings"));
        assert!(string_equals(Some(&Value::Int64(42)), "42"));
        assert!(string_equals(Some(&Value::Int64(42)), "+042"));
        assert!(!string_equals(Some(&Value::Int64(42)), "0x2a"));
        assert!(string_equals(Some(&Value::Double(0.5)), "0.50"));
        assert!(string_equals(Some(&Value::Bool(true)), "T"));
        assert!(!string_equals(Some(&Value::Bool(true)), "yes"));
        assert!(string_equals(
            Some(&Value::Duration(1_000_000_000)),
            "1000ms"
        ));
        let t = time::parse_rfc3339("2020-01-01T01:00:00+01:00").unwrap();
        assert!(string_equals(
            Some(&Value::Timestamp(t)),
            "2020-01-01T00:00:00Z"
        ));
        let ip = Value::IpAddress(Cow::Owned(vec![10, 28, 11, 20]));
        assert!(string_equals(Some(&ip), "10.28.11.20"));
        // An absent dimension equals only the empty text.
        assert!(string_equals(None, ""));
        assert!(!string_equals(None, "x"));
    }

    #[test]
    fn quota_override_matching_and_hash() {
        let names: Vec<Arc<str>> = vec![Arc::from("destination"), Arc::from("source")];
        let d = dims(&names, vec![Value::str("ratings"), Value::str("reviews")]);
        let cfg = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(dimensions_match(
            &cfg(&[("destination", "ratings")]),
            &d,
            true
        ));
        assert!(!dimensions_match(
            &cfg(&[("destination", "ratings"), ("source", "x")]),
            &d,
            true
        ));
        // A dimension the instance lacks: "" matches for memquota only.
        assert!(dimensions_match(&cfg(&[("user", "")]), &d, true));
        assert!(!dimensions_match(&cfg(&[("user", "")]), &d, false));
        // The reference FNV-1a, checked against published test vectors first.
        fn fnv1a(bytes: &[u8]) -> u32 {
            bytes.iter().fold(2_166_136_261u32, |h, b| {
                (h ^ u32::from(*b)).wrapping_mul(16_777_619)
            })
        }
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
        assert_eq!(
            override_hash(&cfg(&[("source", "reviews"), ("destination", "ratings")])),
            fnv1a(b"destination\tratings\nsource\treviews\n").to_string()
        );
        // Nothing hashed: the FNV-1a offset basis.
        assert_eq!(override_hash(&BTreeMap::new()), "2166136261");
    }
}
