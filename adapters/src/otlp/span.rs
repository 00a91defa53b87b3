//! Turning a `tracespan` instance into an OTLP span, following the span builder Mixer's
//! trace adapters shared (OpenCensus-based), with OTLP in place of the OpenCensus data
//! model where the two differ.
//!
//! The span is encoded as an OTLP `Span` message on the Report path (see the `wire`
//! module), into one buffer that also holds its service name: one allocation per span.

use std::fmt::Write as _;

use expr_lang::Value;
use expr_lang::golib;
use expr_lang::golib::time::Timestamp;
use templates::code;
use templates::instances::tracespan;

use super::wire;

/// What a client span id is XORed with when `rewriteClientSpanId` is set, so that the
/// client and server halves of one proxied request get distinct span ids (the constant
/// Mixer's span builder used, taken from Stackdriver's convention).
pub const CLIENT_SPAN_ID_XOR: u64 = 0x3f6a_2ec3_c810_c2ab;

/// Attribute carrying the HTTP status code (OpenCensus' `http.status_code`).
pub const HTTP_STATUS_CODE: &str = "http.status_code";

/// Instrumentation scope of every exported span: these spans are not produced by
/// instrumented code but by this server on the proxies' behalf.
pub const SCOPE_NAME: &str = "mixer.adapter.tracespan";
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A workload address, kept as bytes so that a span carries no formatted copy of it:
/// the text is written once per exported Resource. IPv4-mapped IPv6 addresses are stored
/// as IPv4, so that two keys are equal exactly when their texts are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostIp {
    bytes: [u8; 16],
    /// 4 or 16.
    len: u8,
}

impl HostIp {
    /// The address of `ip`, unless it has no address length or is unspecified (the
    /// Istio config defaults it to `ip("0.0.0.0")`, which says nothing of the workload).
    pub fn new(ip: &[u8]) -> Option<HostIp> {
        if (ip.len() != 4 && ip.len() != 16) || ip.iter().all(|b| *b == 0) {
            return None;
        }
        let ip = match ip.split_at_checked(12) {
            Some((prefix, v4)) if prefix == V4_IN_V6_PREFIX => v4,
            _ => ip,
        };
        let mut bytes = [0u8; 16];
        bytes[..ip.len()].copy_from_slice(ip);
        // 4 or 16.
        let len = ip.len() as u8;
        Some(HostIp { bytes, len })
    }

    /// Go's text of the address (`10.0.0.1`, `2001:db8::1`).
    #[cfg(test)]
    pub fn text(&self) -> String {
        golib::net::format_ip(&self.bytes[..usize::from(self.len)])
    }

    /// Appends Go's text of the address to `out`.
    pub fn write_text(&self, out: &mut String) {
        golib::net::write_ip(out, &self.bytes[..usize::from(self.len)]);
    }
}

/// The first 12 bytes of an IPv4-mapped IPv6 address.
const V4_IN_V6_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// A span ready for export: its encoded OTLP `Span` message, followed by the name of
/// the service it is reported for, in one buffer. OTLP carries the service name (and
/// the address) on the Resource, so the export task groups spans by both.
#[derive(Clone, Debug)]
pub struct Converted {
    buf: Vec<u8>,
    span_len: usize,
    /// The workload's IP; `None` when absent or unspecified (`0.0.0.0`).
    pub ip: Option<HostIp>,
}

impl Converted {
    /// The encoded `Span` message.
    pub fn span(&self) -> &[u8] {
        &self.buf[..self.span_len]
    }

    /// The service name (UTF-8: it was copied from a string).
    pub fn service(&self) -> &[u8] {
        &self.buf[self.span_len..]
    }

    /// A queued span made of an encoded `Span` and its service.
    #[cfg(test)]
    pub fn from_parts(span: &[u8], service: &str, ip: Option<HostIp>) -> Converted {
        let mut buf = span.to_vec();
        buf.extend_from_slice(service.as_bytes());
        Converted {
            buf,
            span_len: span.len(),
            ip,
        }
    }
}

/// OpenCensus' probability sampler: the decision depends on the trace id only, so every
/// span of a trace (and every Mixer replica) decides the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampler {
    /// A trace is sampled when the upper 63 bits of its first 8 bytes are below this.
    upper_bound: u64,
}

impl Sampler {
    /// `probability` is validated to be in `[0, 1]`; anything else is clamped.
    pub fn new(probability: f64) -> Sampler {
        // 2^63 as a float: probability 1 gives a bound no 63-bit value reaches, so every
        // trace is sampled, as OpenCensus' AlwaysSample; 0 (and NaN) gives 0: none is.
        let p = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        Sampler {
            upper_bound: (p * 9_223_372_036_854_775_808.0) as u64,
        }
    }

    /// Whether any trace can be sampled (Mixer skipped everything without a sampler).
    pub fn enabled(&self) -> bool {
        self.upper_bound > 0
    }

    /// Note: 64-bit B3 trace ids are right-aligned, so their first 8 bytes are zero and
    /// they are always sampled when the probability is above 0 — as under Mixer.
    pub fn sampled(&self, trace_id: &[u8; 16]) -> bool {
        let mut head = [0u8; 8];
        head.copy_from_slice(&trace_id[..8]);
        (u64::from_be_bytes(head) >> 1) < self.upper_bound
    }
}

/// Why an instance produced no span (logged at debug level only: Mixer skipped these
/// silently, and a proxy without tracing headers sends them on every request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    #[error("the trace id is empty, not even-length hex of at most 32 digits, or zero")]
    InvalidTraceId,
    #[error("the span id is empty, not even-length hex of at most 16 digits, or zero")]
    InvalidSpanId,
    #[error("the trace is not sampled")]
    NotSampled,
}

/// Decodes a B3 id: hex (either case) with an even number of digits, at most `2 * N`,
/// right-aligned in `N` bytes (a 64-bit trace id fills the low half). `None` when
/// empty or malformed.
pub fn parse_b3<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.is_empty() || !digits.len().is_multiple_of(2) || digits.len() > 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let offset = N - digits.len() / 2;
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        // Both digits are below 16, so the byte fits.
        out[offset + i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// OpenCensus' mapping of an HTTP status code (> 0) to a canonical code.
pub fn http_to_canonical(http: i64) -> i32 {
    match http {
        200..=399 => code::OK,
        400 => code::INVALID_ARGUMENT,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::NOT_FOUND,
        429 => code::RESOURCE_EXHAUSTED,
        499 => code::CANCELLED,
        501 => code::UNIMPLEMENTED,
        503 => code::UNAVAILABLE,
        504 => code::DEADLINE_EXCEEDED,
        _ => code::UNKNOWN,
    }
}

/// Writes the `Status` for an HTTP code: OTLP has only OK and ERROR, so a non-OK
/// canonical code becomes an error described by the code's name (what Zipkin showed
/// as `error`).
fn write_status(buf: &mut Vec<u8>, http: i64) {
    match http_to_canonical(http) {
        code::OK => wire::varint(buf, wire::STATUS_CODE, wire::STATUS_OK),
        c => {
            wire::bytes(buf, wire::STATUS_MESSAGE, code::name(c).as_bytes());
            wire::varint(buf, wire::STATUS_CODE, wire::STATUS_ERROR);
        }
    }
}

/// A timestamp in nanoseconds since the Unix epoch. Missing and pre-1970 times become
/// 0, OTLP's "unknown time"; times past 2554 wrap, as they did through the SDK.
fn unix_nanos(t: Option<Timestamp>) -> u64 {
    match t {
        Some(t) if t.secs >= 0 => {
            let nanos = u128::from(t.secs.unsigned_abs()) * 1_000_000_000 + u128::from(t.nanos);
            nanos as u64
        }
        _ => 0,
    }
}

/// Go's `time.Time.String()` (what `%v` printed for timestamps in span tags), e.g.
/// `2017-01-01 00:00:00.5 +0000 UTC`. Zones other than UTC have no name here, which Go
/// prints as the numeric offset twice (`+0100 +0100`).
fn go_time_string(t: &Timestamp) -> String {
    let rfc = golib::time::format_rfc3339_nano(t);
    let Some((date, rest)) = rfc.split_once('T') else {
        return rfc;
    };
    if let Some(clock) = rest.strip_suffix('Z') {
        return format!("{date} {clock} +0000 UTC");
    }
    // The zone is the trailing `±hh:mm`.
    let split = rest.len().saturating_sub(6);
    let (clock, zone) = rest.split_at(split);
    let zone = zone.replace(':', "");
    format!("{date} {clock} {zone} {zone}")
}

/// Writes a span tag value as `AnyValue` contents: strings, integers and doubles keep
/// their type; everything else is rendered as Go's `%v` rendered Mixer's values
/// (booleans `true`, IP addresses as the decimal byte list `[10 0 0 1]`, maps
/// `map[k:v]`).
pub fn write_tag_value(buf: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
            wire::any_string(buf, s)
        }
        Value::Int64(i) => wire::any_int(buf, *i),
        Value::Double(d) => wire::any_double(buf, *d),
        Value::Bool(b) => wire::any_string(buf, if *b { "true" } else { "false" }),
        Value::Timestamp(t) => wire::any_string(buf, &go_time_string(t)),
        Value::IpAddress(bytes) => wire::nested(buf, wire::ANY_STRING, |out| {
            out.push(b'[');
            for (i, b) in bytes.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                push_decimal(out, *b);
            }
            out.push(b']');
        }),
        other @ (Value::Duration(_) | Value::StringMap(_)) => {
            let mut text = String::new();
            // Writing into a String cannot fail.
            let _ = write!(text, "{other}");
            wire::any_string(buf, &text)
        }
    }
}

fn push_decimal(out: &mut Vec<u8>, b: u8) {
    if b >= 100 {
        out.push(b'0' + b / 100);
    }
    if b >= 10 {
        out.push(b'0' + (b / 10) % 10);
    }
    out.push(b'0' + b % 10);
}

/// Writes a message event (OpenTelemetry's RPC message event convention), standing in
/// for OpenCensus' message events, which Zipkin showed as `Received N bytes` / `Sent N
/// bytes`.
fn write_message_event(buf: &mut Vec<u8>, at: u64, received: bool, bytes: i64) {
    wire::nested(buf, wire::SPAN_EVENTS, |e| {
        if at != 0 {
            wire::fixed64(e, wire::EVENT_TIME, at);
        }
        wire::bytes(e, wire::EVENT_NAME, b"message");
        wire::key_value(e, wire::EVENT_ATTRIBUTES, "message.type", |v| {
            wire::any_string(v, if received { "RECEIVED" } else { "SENT" })
        });
        wire::key_value(
            e,
            wire::EVENT_ATTRIBUTES,
            "message.uncompressed_size",
            |v| wire::any_int(v, bytes),
        );
    });
}

/// Builds the span of one instance, or says why there is none. The handler calls its
/// two halves itself, checking the queue's room between them.
#[cfg(test)]
pub fn convert(
    inst: &tracespan::Instance<'_>,
    sampler: &Sampler,
    default_service: &str,
) -> Result<Converted, Skipped> {
    Ok(build(inst, span_ids(inst, sampler)?, default_service))
}

/// The ids of an instance's span, once it is known to have one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanIds {
    trace_id: [u8; 16],
    span_id: u64,
    parent: Option<u64>,
}

/// The cheap half of [`convert`]: parses the ids and decides sampling, so that a span
/// the export queue has no room for is counted without being built.
pub fn span_ids(inst: &tracespan::Instance<'_>, sampler: &Sampler) -> Result<SpanIds, Skipped> {
    let trace_id = parse_b3::<16>(&inst.trace_id)
        .filter(|id| *id != [0; 16])
        .ok_or(Skipped::InvalidTraceId)?;
    let parent = parse_b3::<8>(&inst.parent_span_id).map(u64::from_be_bytes);
    let span_id = parse_b3::<8>(&inst.span_id)
        .map(u64::from_be_bytes)
        .filter(|id| *id != 0)
        .ok_or(Skipped::InvalidSpanId)?;
    if !sampler.sampled(&trace_id) {
        return Err(Skipped::NotSampled);
    }
    Ok(SpanIds {
        trace_id,
        span_id,
        parent,
    })
}

/// The expensive half of [`convert`]: the span of an instance with the ids `ids`.
pub fn build(inst: &tracespan::Instance<'_>, ids: SpanIds, default_service: &str) -> Converted {
    let SpanIds {
        trace_id,
        span_id,
        parent,
    } = ids;
    // The proxy reports one request twice (outbound by the client's proxy, inbound by the
    // server's) with the same B3 span id; the rewrite gives the client half its own id
    // and makes it the parent of the server half.
    let (span_id, parent) = match (inst.rewrite_client_span_id, inst.client_span) {
        (true, true) => (span_id ^ CLIENT_SPAN_ID_XOR, parent),
        (true, false) => (span_id, Some(span_id ^ CLIENT_SPAN_ID_XOR)),
        (false, _) => (span_id, parent),
    };
    let parent = parent.filter(|p| *p != 0);
    // Server spans receive the request and send the response; client spans the reverse.
    let server = !inst.client_span;

    let (name, ip) = if inst.client_span {
        (&inst.source_name, inst.source_ip.as_deref())
    } else {
        (&inst.destination_name, inst.destination_ip.as_deref())
    };
    let service: &str = if name.is_empty() {
        default_service
    } else {
        name
    };

    let mut buf = Vec::with_capacity(size_hint(inst) + service.len());
    wire::bytes(&mut buf, wire::SPAN_TRACE_ID, &trace_id);
    wire::bytes(&mut buf, wire::SPAN_SPAN_ID, &span_id.to_be_bytes());
    if let Some(parent) = parent {
        wire::bytes(&mut buf, wire::SPAN_PARENT_SPAN_ID, &parent.to_be_bytes());
    }
    if !inst.span_name.is_empty() {
        wire::bytes(&mut buf, wire::SPAN_NAME, inst.span_name.as_bytes());
    }
    let kind = if server {
        wire::KIND_SERVER
    } else {
        wire::KIND_CLIENT
    };
    wire::varint(&mut buf, wire::SPAN_KIND, kind);
    let (start, end) = (unix_nanos(inst.start_time), unix_nanos(inst.end_time));
    if start != 0 {
        wire::fixed64(&mut buf, wire::SPAN_START_TIME, start);
    }
    if end != 0 {
        wire::fixed64(&mut buf, wire::SPAN_END_TIME, end);
    }
    write_attributes(&mut buf, inst);
    write_message_event(&mut buf, start, server, inst.request_total_size);
    write_message_event(&mut buf, end, !server, inst.response_total_size);
    // Status is always present (UNSET is an empty message), as the SDK sent it.
    wire::nested(&mut buf, wire::SPAN_STATUS, |st| {
        if inst.http_status_code > 0 {
            write_status(st, inst.http_status_code);
        }
    });
    // Sampled; and the parent of a server span is the caller's, in another process.
    let mut flags = wire::FLAG_SAMPLED | wire::FLAG_HAS_IS_REMOTE;
    if server && parent.is_some() {
        flags |= wire::FLAG_IS_REMOTE;
    }
    wire::fixed32(&mut buf, wire::SPAN_FLAGS, flags);

    let span_len = buf.len();
    buf.extend_from_slice(service.as_bytes());
    Converted {
        buf,
        span_len,
        ip: ip.and_then(HostIp::new),
    }
}

/// The span's attributes: `http.status_code` (when above 0) first, then the tags in
/// the configuration's order. A tag of that name wins over the status code and takes
/// its place, as in Mixer.
fn write_attributes(buf: &mut Vec<u8>, inst: &tracespan::Instance<'_>) {
    let tags = &inst.span_tags;
    let status_tag = if inst.http_status_code > 0 {
        let tag = tags.names.iter().position(|n| &**n == HTTP_STATUS_CODE);
        let code = inst.http_status_code;
        wire::key_value(
            buf,
            wire::SPAN_ATTRIBUTES,
            HTTP_STATUS_CODE,
            |v| match tag {
                Some(i) => write_tag_value(v, &tags.values[i]),
                None => wire::any_int(v, code),
            },
        );
        tag
    } else {
        None
    };
    for (i, (name, value)) in tags.names.iter().zip(&tags.values).enumerate() {
        if Some(i) != status_tag {
            wire::key_value(buf, wire::SPAN_ATTRIBUTES, name, |v| {
                write_tag_value(v, value)
            });
        }
    }
}

/// Enough bytes for most spans of `inst` (one allocation, no growing): the fixed
/// fields, status code attribute and events take under 320, each attribute its key
/// and value and up to 10 more.
fn size_hint(inst: &tracespan::Instance<'_>) -> usize {
    let tags = &inst.span_tags;
    let tag_bytes: usize = tags
        .names
        .iter()
        .zip(&tags.values)
        .map(|(name, value)| {
            let value = match value {
                Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
                    s.len()
                }
                _ => 24,
            };
            name.len() + value + 10
        })
        .sum();
    320 + inst.span_name.len() + tag_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};
    use prost::Message;
    use std::borrow::Cow;
    use std::sync::Arc;
    use templates::Dims;

    /// The decoded span of `c`, with its service name.
    fn decoded(c: &Converted) -> (Span, &str) {
        let span = Span::decode(c.span()).unwrap();
        (span, std::str::from_utf8(c.service()).unwrap())
    }

    fn str_value(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        })
    }

    fn int_value(v: i64) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        })
    }

    fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value,
            key_strindex: 0,
        }
    }

    fn instance<'a>(names: &'a [Arc<str>], values: Vec<Value<'a>>) -> tracespan::Instance<'a> {
        tracespan::Instance {
            name: "default.instance.istio-system",
            trace_id: "463ac35c9f6413ad48485a3953bb6124".into(),
            span_id: "a2fb4a1d1a96d312".into(),
            parent_span_id: "0020000000000001".into(),
            span_name: "/index".into(),
            start_time: Some(Timestamp::from_unix(1_500_000_000, 5)),
            end_time: Some(Timestamp::from_unix(1_500_000_001, 0)),
            span_tags: Dims { names, values },
            http_status_code: 200,
            client_span: false,
            rewrite_client_span_id: false,
            source_name: "src".into(),
            source_ip: Some(Cow::Owned(vec![10, 0, 0, 1])),
            destination_name: "dst".into(),
            destination_ip: Some(Cow::Owned(vec![0, 0, 0, 0])),
            request_size: 1,
            request_total_size: 128,
            response_size: 2,
            response_total_size: 512,
            api_protocol: "http".into(),
        }
    }

    fn attr(span: &Span, key: &str) -> Option<AnyValue> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
    }

    #[test]
    fn b3_ids_are_right_aligned_even_length_hex() {
        assert_eq!(
            parse_b3::<8>("a2fb4a1d1a96d312"),
            Some(0xa2fb4a1d1a96d312u64.to_be_bytes())
        );
        assert_eq!(parse_b3::<8>("A2FB"), Some(0xa2fbu64.to_be_bytes()));
        let t = parse_b3::<16>("48485a3953bb6124").unwrap();
        assert_eq!(t[..8], [0; 8]);
        assert_eq!(t[8..], 0x48485a3953bb6124u64.to_be_bytes());
        for bad in ["", "abc", "zz", "a2fb4a1d1a96d31200", " a2f"] {
            assert_eq!(parse_b3::<8>(bad), None, "{bad:?}");
        }
        assert_eq!(parse_b3::<16>(&"1".repeat(34)), None);
    }

    #[test]
    fn sampler_is_opencensus_probability_sampler() {
        let low = [0u8; 16];
        let mut high = [0xffu8; 16];
        assert!(!Sampler::new(0.0).enabled());
        assert!(!Sampler::new(0.0).sampled(&low));
        assert!(!Sampler::new(f64::NAN).enabled());
        assert!(Sampler::new(1.0).sampled(&high));
        let half = Sampler::new(0.5);
        assert!(half.sampled(&low));
        assert!(!half.sampled(&high));
        // Upper 63 bits just below / at 2^62 (0.5 * 2^63).
        high[..8].copy_from_slice(&((1u64 << 63) - 2).to_be_bytes());
        assert!(half.sampled(&high));
        high[..8].copy_from_slice(&(1u64 << 63).to_be_bytes());
        assert!(!half.sampled(&high));
    }

    #[test]
    fn http_codes_map_as_opencensus() {
        for (http, c) in [
            (200, code::OK),
            (302, code::OK),
            (100, code::UNKNOWN),
            (400, code::INVALID_ARGUMENT),
            (401, code::UNAUTHENTICATED),
            (403, code::PERMISSION_DENIED),
            (404, code::NOT_FOUND),
            (418, code::UNKNOWN),
            (429, code::RESOURCE_EXHAUSTED),
            (499, code::CANCELLED),
            (500, code::UNKNOWN),
            (501, code::UNIMPLEMENTED),
            (503, code::UNAVAILABLE),
            (504, code::DEADLINE_EXCEEDED),
        ] {
            assert_eq!(http_to_canonical(http), c, "{http}");
        }
        let status_of = |http| {
            let mut buf = Vec::new();
            write_status(&mut buf, http);
            Status::decode(&buf[..]).unwrap()
        };
        assert_eq!(
            status_of(404),
            Status {
                message: "NOT_FOUND".into(),
                code: status::StatusCode::Error as i32
            }
        );
        assert_eq!(
            status_of(204),
            Status {
                message: String::new(),
                code: status::StatusCode::Ok as i32
            }
        );
    }

    #[test]
    fn tags_keep_scalars_and_render_the_rest_as_go_does() {
        let names: Vec<Arc<str>> = ["s", "i", "d", "b", "ip", "t", "dur", "http.status_code"]
            .into_iter()
            .map(Arc::from)
            .collect();
        let values = vec![
            Value::str("x"),
            Value::Int64(7),
            Value::Double(0.5),
            Value::Bool(true),
            Value::IpAddress(Cow::Owned(vec![10, 0, 200, 1])),
            Value::Timestamp(Timestamp::from_unix(1_483_228_800, 500_000_000)),
            Value::Duration(1_500_000_000),
            Value::str("overridden"),
        ];
        let c = convert(&instance(&names, values), &Sampler::new(1.0), "default").unwrap();
        let (s, _) = decoded(&c);
        assert_eq!(attr(&s, "s"), str_value("x"));
        assert_eq!(attr(&s, "i"), int_value(7));
        assert_eq!(
            attr(&s, "d"),
            Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(0.5))
            })
        );
        assert_eq!(attr(&s, "b"), str_value("true"));
        assert_eq!(attr(&s, "ip"), str_value("[10 0 200 1]"));
        assert_eq!(attr(&s, "t"), str_value("2017-01-01 00:00:00.5 +0000 UTC"));
        assert_eq!(attr(&s, "dur"), str_value("1.5s"));
        // The tag replaced the status code attribute, in its place, rather than
        // duplicating it.
        assert_eq!(
            s.attributes[0],
            kv(HTTP_STATUS_CODE, str_value("overridden"))
        );
        assert_eq!(s.attributes.len(), 8);
        let t = Timestamp {
            secs: 1_483_228_800,
            nanos: 0,
            offset_secs: 3600,
        };
        assert_eq!(go_time_string(&t), "2017-01-01 01:00:00 +0100 +0100");
    }

    #[test]
    fn server_span_shape() {
        let c = convert(&instance(&[], vec![]), &Sampler::new(1.0), "default").unwrap();
        let (s, service) = decoded(&c);
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(
            s.trace_id,
            0x463ac35c9f6413ad48485a3953bb6124u128.to_be_bytes()
        );
        assert_eq!(s.span_id, 0xa2fb4a1d1a96d312u64.to_be_bytes());
        assert_eq!(s.parent_span_id, 0x0020000000000001u64.to_be_bytes());
        // Sampled, with a remote parent.
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.name, "/index");
        assert_eq!(s.attributes, vec![kv(HTTP_STATUS_CODE, int_value(200))]);
        assert_eq!(s.status.unwrap().code, status::StatusCode::Ok as i32);
        assert_eq!(s.start_time_unix_nano, 1_500_000_000_000_000_005);
        assert_eq!(s.end_time_unix_nano, 1_500_000_001_000_000_000);
        // Destination name; its 0.0.0.0 address says nothing and is left out.
        assert_eq!(service, "dst");
        assert_eq!(c.ip, None);
        assert_eq!(s.events.len(), 2);
        assert_eq!(s.events[0].time_unix_nano, s.start_time_unix_nano);
        assert_eq!(s.events[0].name, "message");
        assert_eq!(
            s.events[0].attributes,
            vec![
                kv("message.type", str_value("RECEIVED")),
                kv("message.uncompressed_size", int_value(128))
            ]
        );
        assert_eq!(s.events[1].time_unix_nano, s.end_time_unix_nano);
        assert_eq!(
            s.events[1].attributes[0],
            kv("message.type", str_value("SENT"))
        );
    }

    #[test]
    fn client_span_and_rewrite() {
        let mut i = instance(&[], vec![]);
        i.client_span = true;
        i.http_status_code = 0;
        i.source_name = "".into();
        let c = convert(&i, &Sampler::new(1.0), "mesh").unwrap();
        let (s, service) = decoded(&c);
        assert_eq!(s.kind, span::SpanKind::Client as i32);
        assert_eq!(s.flags, 0x101);
        // UNSET: an empty status, present.
        assert_eq!(s.status, Some(Status::default()));
        assert!(s.attributes.is_empty());
        assert_eq!(service, "mesh");
        assert_eq!(c.ip, HostIp::new(&[10, 0, 0, 1]));
        assert_eq!(
            s.events[0].attributes[0],
            kv("message.type", str_value("SENT"))
        );

        i.rewrite_client_span_id = true;
        let (s, _) = decoded(&convert(&i, &Sampler::new(1.0), "mesh").unwrap());
        assert_eq!(
            s.span_id,
            (0xa2fb4a1d1a96d312 ^ CLIENT_SPAN_ID_XOR).to_be_bytes()
        );
        assert_eq!(s.parent_span_id, 0x0020000000000001u64.to_be_bytes());

        i.client_span = false;
        let (s, _) = decoded(&convert(&i, &Sampler::new(1.0), "mesh").unwrap());
        assert_eq!(s.span_id, 0xa2fb4a1d1a96d312u64.to_be_bytes());
        assert_eq!(
            s.parent_span_id,
            (0xa2fb4a1d1a96d312 ^ CLIENT_SPAN_ID_XOR).to_be_bytes()
        );
    }

    #[test]
    fn invalid_ids_and_unsampled_traces_are_skipped() {
        let s = Sampler::new(1.0);
        let mut i = instance(&[], vec![]);
        i.parent_span_id = "xyz".into();
        let (span, _) = decoded(&convert(&i, &s, "default").unwrap());
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.flags, 0x101);
        i.trace_id = "".into();
        assert_eq!(convert(&i, &s, "d").unwrap_err(), Skipped::InvalidTraceId);
        i.trace_id = "0000".into();
        assert_eq!(convert(&i, &s, "d").unwrap_err(), Skipped::InvalidTraceId);
        i.trace_id = "ffffffffffffffff0000000000000001".into();
        i.span_id = "123".into();
        assert_eq!(convert(&i, &s, "d").unwrap_err(), Skipped::InvalidSpanId);
        i.span_id = "12".into();
        assert_eq!(
            convert(&i, &Sampler::new(0.5), "d").unwrap_err(),
            Skipped::NotSampled
        );
        assert!(convert(&i, &s, "d").is_ok());
        i.start_time = None;
        i.end_time = Some(Timestamp::from_unix(-5, 0));
        let (span, _) = decoded(&convert(&i, &s, "d").unwrap());
        assert_eq!(span.start_time_unix_nano, 0);
        assert_eq!(span.end_time_unix_nano, 0);
        assert_eq!(span.events[0].time_unix_nano, 0);
    }

    #[test]
    fn host_ips_are_equal_exactly_when_their_texts_are() {
        let v4 = HostIp::new(&[10, 0, 0, 1]).unwrap();
        let mut mapped = [0u8; 16];
        mapped[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
        let mapped = HostIp::new(&mapped).unwrap();
        assert_eq!(v4, mapped);
        assert_eq!(mapped.text(), "10.0.0.1");
        let mut v6 = [0u8; 16];
        v6[..2].copy_from_slice(&[0x20, 0x01]);
        v6[15] = 1;
        let v6 = HostIp::new(&v6).unwrap();
        assert_eq!(v6.text(), "2001::1");
        assert_ne!(v6, v4);
        assert_eq!(HostIp::new(&[0; 4]), None);
        assert_eq!(HostIp::new(&[0; 16]), None);
        assert_eq!(HostIp::new(&[1, 2, 3]), None);
        assert_eq!(HostIp::new(&[]), None);
    }

    #[test]
    fn span_ids_then_build_is_convert() {
        let names: Vec<Arc<str>> = ["a"].into_iter().map(Arc::from).collect();
        let inst = instance(&names, vec![Value::str("x")]);
        let sampler = Sampler::new(1.0);
        let ids = span_ids(&inst, &sampler).unwrap();
        let built = build(&inst, ids, "default");
        let converted = convert(&inst, &sampler, "default").unwrap();
        assert_eq!(built.buf, converted.buf);
        assert_eq!(built.ip, converted.ip);
        assert_eq!(attr(&decoded(&built).0, "a"), str_value("x"));
        assert_eq!(
            span_ids(&inst, &Sampler::new(0.0)),
            Err(Skipped::NotSampled)
        );
    }

    #[test]
    fn the_size_hint_covers_a_typical_span() {
        let names: Vec<Arc<str>> = ["http.host", "http.method", "principal"]
            .into_iter()
            .map(Arc::from)
            .collect();
        let values = vec![
            Value::str("reviews:9080"),
            Value::str("GET"),
            Value::Int64(1),
        ];
        let inst = instance(&names, values);
        let c = convert(&inst, &Sampler::new(1.0), "default").unwrap();
        assert!(c.buf.len() <= size_hint(&inst) + c.service().len());
        // And not much more.
        assert!(size_hint(&inst) < c.buf.len() + 128, "{}", c.buf.len());
    }
}
