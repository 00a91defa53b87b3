//! Turning a `tracespan` instance into an OpenTelemetry span, following the span builder
//! Mixer's trace adapters shared (OpenCensus-based), with OTLP in place of
//! the OpenCensus data model where the two differ.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use expr_lang::Value;
use expr_lang::golib;
use expr_lang::golib::time::Timestamp;
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value as OtelValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use templates::code;
use templates::instances::tracespan;

/// What a client span id is XORed with when `rewriteClientSpanId` is set, so that the
/// client and server halves of one proxied request get distinct span ids (the constant
/// Mixer's span builder used, taken from Stackdriver's convention).
pub const CLIENT_SPAN_ID_XOR: u64 = 0x3f6a_2ec3_c810_c2ab;

/// Attribute carrying the HTTP status code (OpenCensus' `http.status_code`).
pub const HTTP_STATUS_CODE: &str = "http.status_code";

/// Scope every exported span carries: these spans are not produced by instrumented code
/// but by this server on the proxies' behalf.
static SCOPE: LazyLock<InstrumentationScope> = LazyLock::new(|| {
    InstrumentationScope::builder("mixer.adapter.tracespan")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
});

/// The local endpoint of a span: the service it is reported for and, when known, its
/// address. OTLP carries both on the Resource, so spans are exported per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub name: String,
    /// The workload's IP; `None` when absent or unspecified (`0.0.0.0`).
    pub ip: Option<HostIp>,
}

/// A workload address, kept as bytes so that a span carries no formatted copy of it:
/// the text is made once per exported Resource. IPv4-mapped IPv6 addresses are stored
/// as IPv4, so that two keys are equal exactly when their texts are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    pub fn text(&self) -> String {
        golib::net::format_ip(&self.bytes[..usize::from(self.len)])
    }
}

/// The first 12 bytes of an IPv4-mapped IPv6 address.
const V4_IN_V6_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// A span ready for export, with the service it belongs to.
#[derive(Clone, Debug)]
pub struct Converted {
    pub service: ServiceKey,
    pub span: SpanData,
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

/// The span status for an HTTP code: OTLP has only OK and ERROR, so a non-OK canonical
/// code becomes an error described by the code's name (what Zipkin showed as `error`).
fn status(http: i64) -> Status {
    match http_to_canonical(http) {
        code::OK => Status::Ok,
        c => Status::error(code::name(c)),
    }
}

/// A timestamp as a `SystemTime`. Missing and pre-1970 times become the epoch, which
/// OTLP encodes as 0, its "unknown time".
fn system_time(t: Option<Timestamp>) -> SystemTime {
    match t {
        Some(t) if t.secs >= 0 => UNIX_EPOCH
            .checked_add(Duration::new(t.secs.unsigned_abs(), t.nanos))
            .unwrap_or(UNIX_EPOCH),
        _ => UNIX_EPOCH,
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

/// A span tag value: strings, integers and doubles keep their type; everything else is
/// rendered as Go's `%v` rendered Mixer's values (booleans `true`, IP addresses as the
/// decimal byte list `[10 0 0 1]`, maps `map[k:v]`).
pub fn tag_value(v: &Value<'_>) -> OtelValue {
    match v {
        Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
            OtelValue::from(s.to_string())
        }
        Value::Int64(i) => OtelValue::I64(*i),
        Value::Double(d) => OtelValue::F64(*d),
        Value::Bool(b) => OtelValue::from(b.to_string()),
        Value::Timestamp(t) => OtelValue::from(go_time_string(t)),
        Value::IpAddress(bytes) => {
            let mut out = String::from("[");
            for (i, b) in bytes.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                // Writing into a String cannot fail.
                let _ = write!(out, "{b}");
            }
            out.push(']');
            OtelValue::from(out)
        }
        other @ (Value::Duration(_) | Value::StringMap(_)) => OtelValue::from(other.to_string()),
    }
}

/// A message event (OpenTelemetry's RPC message event convention), standing in for
/// OpenCensus' message events, which Zipkin showed as `Received N bytes` / `Sent N bytes`.
fn message_event(at: SystemTime, received: bool, bytes: i64) -> Event {
    Event::new(
        "message",
        at,
        vec![
            KeyValue::new("message.type", if received { "RECEIVED" } else { "SENT" }),
            KeyValue::new("message.uncompressed_size", bytes),
        ],
        0,
    )
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

    let start = system_time(inst.start_time);
    let end = system_time(inst.end_time);

    let mut attributes: Vec<KeyValue> = Vec::with_capacity(inst.span_tags.len() + 1);
    if inst.http_status_code > 0 {
        attributes.push(KeyValue::new(HTTP_STATUS_CODE, inst.http_status_code));
    }
    let tags = &inst.span_tags;
    for (name, value) in tags.names.iter().zip(&tags.values) {
        let value = tag_value(value);
        // Tags are set after the status code attribute and win over it, as in Mixer.
        match attributes.iter_mut().find(|kv| kv.key.as_str() == &**name) {
            Some(kv) => kv.value = value,
            // The key shares the configuration's name instead of copying it.
            None => attributes.push(KeyValue::new(Key::from(name.clone()), value)),
        }
    }

    // Server spans receive the request and send the response; client spans the reverse.
    let server = !inst.client_span;
    let mut events = SpanEvents::default();
    events.events = vec![
        message_event(start, server, inst.request_total_size),
        message_event(end, !server, inst.response_total_size),
    ];

    let (name, ip) = if inst.client_span {
        (&inst.source_name, inst.source_ip.as_deref())
    } else {
        (&inst.destination_name, inst.destination_ip.as_deref())
    };
    let service = ServiceKey {
        name: if name.is_empty() {
            default_service.to_owned()
        } else {
            name.to_string()
        },
        ip: ip.and_then(HostIp::new),
    };

    let span = SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(trace_id),
            SpanId::from(span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from),
        // The parent of a server span is the caller's span, in another process.
        parent_span_is_remote: server && parent.is_some(),
        span_kind: if inst.client_span {
            SpanKind::Client
        } else {
            SpanKind::Server
        },
        name: Cow::Owned(inst.span_name.to_string()),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events,
        links: SpanLinks::default(),
        status: if inst.http_status_code > 0 {
            status(inst.http_status_code)
        } else {
            Status::Unset
        },
        instrumentation_scope: SCOPE.clone(),
    };
    Converted { service, span }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use templates::Dims;

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

    fn attr<'s>(span: &'s SpanData, key: &str) -> Option<&'s OtelValue> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
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
        assert_eq!(status(404), Status::error("NOT_FOUND"));
        assert_eq!(status(204), Status::Ok);
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
            Value::IpAddress(Cow::Owned(vec![10, 0, 0, 1])),
            Value::Timestamp(Timestamp::from_unix(1_483_228_800, 500_000_000)),
            Value::Duration(1_500_000_000),
            Value::str("overridden"),
        ];
        let c = convert(&instance(&names, values), &Sampler::new(1.0), "default").unwrap();
        let s = &c.span;
        assert_eq!(attr(s, "s"), Some(&OtelValue::from("x")));
        assert_eq!(attr(s, "i"), Some(&OtelValue::I64(7)));
        assert_eq!(attr(s, "d"), Some(&OtelValue::F64(0.5)));
        assert_eq!(attr(s, "b"), Some(&OtelValue::from("true")));
        assert_eq!(attr(s, "ip"), Some(&OtelValue::from("[10 0 0 1]")));
        assert_eq!(
            attr(s, "t"),
            Some(&OtelValue::from("2017-01-01 00:00:00.5 +0000 UTC"))
        );
        assert_eq!(attr(s, "dur"), Some(&OtelValue::from("1.5s")));
        // The tag replaced the status code attribute rather than duplicating it.
        assert_eq!(
            attr(s, HTTP_STATUS_CODE),
            Some(&OtelValue::from("overridden"))
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
        let s = &c.span;
        assert_eq!(s.span_kind, SpanKind::Server);
        assert_eq!(s.span_context.span_id(), SpanId::from(0xa2fb4a1d1a96d312));
        assert_eq!(s.parent_span_id, SpanId::from(0x0020000000000001));
        assert!(s.parent_span_is_remote);
        assert_eq!(s.attributes, vec![KeyValue::new(HTTP_STATUS_CODE, 200i64)]);
        assert_eq!(s.status, Status::Ok);
        assert_eq!(s.start_time, UNIX_EPOCH + Duration::new(1_500_000_000, 5));
        // Destination name; its 0.0.0.0 address says nothing and is left out.
        assert_eq!(
            c.service,
            ServiceKey {
                name: "dst".into(),
                ip: None
            }
        );
        let events: Vec<_> = s.events.iter().collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].timestamp, s.start_time);
        assert_eq!(
            events[0].attributes,
            vec![
                KeyValue::new("message.type", "RECEIVED"),
                KeyValue::new("message.uncompressed_size", 128i64)
            ]
        );
        assert_eq!(events[1].timestamp, s.end_time);
        assert_eq!(
            events[1].attributes[0],
            KeyValue::new("message.type", "SENT")
        );
    }

    #[test]
    fn client_span_and_rewrite() {
        let mut i = instance(&[], vec![]);
        i.client_span = true;
        i.http_status_code = 0;
        i.source_name = "".into();
        let c = convert(&i, &Sampler::new(1.0), "mesh").unwrap();
        assert_eq!(c.span.span_kind, SpanKind::Client);
        assert!(!c.span.parent_span_is_remote);
        assert_eq!(c.span.status, Status::Unset);
        assert!(c.span.attributes.is_empty());
        assert_eq!(
            c.service,
            ServiceKey {
                name: "mesh".into(),
                ip: HostIp::new(&[10, 0, 0, 1])
            }
        );
        assert_eq!(
            c.span.events[0].attributes[0],
            KeyValue::new("message.type", "SENT")
        );

        i.rewrite_client_span_id = true;
        let c = convert(&i, &Sampler::new(1.0), "mesh").unwrap();
        assert_eq!(
            c.span.span_context.span_id(),
            SpanId::from(0xa2fb4a1d1a96d312 ^ CLIENT_SPAN_ID_XOR)
        );
        assert_eq!(c.span.parent_span_id, SpanId::from(0x0020000000000001));

        i.client_span = false;
        let c = convert(&i, &Sampler::new(1.0), "mesh").unwrap();
        assert_eq!(
            c.span.span_context.span_id(),
            SpanId::from(0xa2fb4a1d1a96d312)
        );
        assert_eq!(
            c.span.parent_span_id,
            SpanId::from(0xa2fb4a1d1a96d312 ^ CLIENT_SPAN_ID_XOR)
        );
    }

    #[test]
    fn invalid_ids_and_unsampled_traces_are_skipped() {
        let s = Sampler::new(1.0);
        let mut i = instance(&[], vec![]);
        i.parent_span_id = "xyz".into();
        let c = convert(&i, &s, "default").unwrap();
        assert_eq!(c.span.parent_span_id, SpanId::INVALID);
        assert!(!c.span.parent_span_is_remote);
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
        let c = convert(&i, &s, "d").unwrap();
        assert_eq!(c.span.start_time, UNIX_EPOCH);
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
        assert_eq!(built.service, converted.service);
        assert_eq!(built.span.attributes, converted.span.attributes);
        assert_eq!(built.span.span_context, converted.span.span_context);
        assert_eq!(attr(&built.span, "a"), Some(&OtelValue::from("x")));
        assert_eq!(
            span_ids(&inst, &Sampler::new(0.0)),
            Err(Skipped::NotSampled)
        );
    }
}
