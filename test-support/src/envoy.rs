//! Attribute sets and values as Envoy's Mixer client sends them, for Report batches and
//! Checks. Encoding them is mixer's job (`mixer::attrs::AttributeEncoder`), so these are
//! plain `(name, value)` lists.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use expr_lang::golib::time::Timestamp;
use expr_lang::{StringMapRef, Value};

/// A STRING value.
pub fn s(v: &str) -> Value<'static> {
    Value::String(v.to_owned().into())
}

/// A STRING_MAP value (headers, labels).
pub fn map(entries: &[(&str, &str)]) -> Value<'static> {
    let m: std::collections::BTreeMap<String, String> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Value::StringMap(StringMapRef::Owned(Arc::new(m)))
}

/// An IP_ADDRESS attribute: 4 bytes for IPv4, 16 for IPv6, as Envoy sends them.
pub fn ip(text: &str) -> Value<'static> {
    let bytes = match text.parse::<IpAddr>().expect("an IP address") {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    Value::IpAddress(Cow::Owned(bytes))
}

/// productpage-v1 → reviews-v1 over HTTP, reported by `reporter` (`inbound` is the
/// server side): the request behind Istio's documented example scrape.
pub fn bookinfo_http_request(reporter: &str) -> Vec<(String, Value<'static>)> {
    let mut v = vec![
        ("context.reporter.kind", s(reporter)),
        ("context.protocol", s("http")),
        ("connection.mtls", Value::Bool(true)),
        ("response.code", Value::Int64(200)),
        ("response.duration", Value::Duration(12_000_000)),
        ("request.size", Value::Int64(0)),
        ("response.size", Value::Int64(295)),
        ("request.path", s("/reviews/0")),
        ("request.method", s("GET")),
        ("request.host", s("reviews:9080")),
        ("request.useragent", s("curl/7.64")),
        (
            "request.headers",
            map(&[(":path", "/reviews/0"), ("x-request-id", "abc")]),
        ),
        ("source.workload.name", s("productpage-v1")),
        ("source.workload.namespace", s("default")),
        (
            "source.principal",
            s("cluster.local/ns/default/sa/bookinfo-productpage"),
        ),
        (
            "source.labels",
            map(&[("app", "productpage"), ("version", "v1")]),
        ),
        ("destination.workload.name", s("reviews-v1")),
        ("destination.workload.namespace", s("default")),
        (
            "destination.principal",
            s("cluster.local/ns/default/sa/bookinfo-reviews"),
        ),
        (
            "destination.labels",
            map(&[("app", "reviews"), ("version", "v1")]),
        ),
        (
            "destination.service.host",
            s("reviews.default.svc.cluster.local"),
        ),
        ("destination.service.name", s("reviews")),
        ("destination.service.namespace", s("default")),
    ];
    v.push((
        "request.time",
        Value::Timestamp(Timestamp::from_unix(1_600_000_000, 0)),
    ));
    v.push((
        "response.time",
        Value::Timestamp(Timestamp::from_unix(1_600_000_000, 12_000_000)),
    ));
    v.into_iter().map(|(n, v)| (n.to_owned(), v)).collect()
}

/// A TCP connection event (`open`, `continue`, `close`) from ratings-v1 to mongodb-v1,
/// with the bytes sent and received since the last event.
pub fn bookinfo_tcp_event(event: &str, sent: i64, received: i64) -> Vec<(String, Value<'static>)> {
    vec![
        ("context.reporter.kind", s("inbound")),
        ("context.protocol", s("tcp")),
        ("connection.event", s(event)),
        ("connection.mtls", Value::Bool(false)),
        ("connection.sent.bytes", Value::Int64(sent)),
        ("connection.received.bytes", Value::Int64(received)),
        ("source.workload.name", s("ratings-v1")),
        ("source.workload.namespace", s("default")),
        (
            "source.labels",
            map(&[("app", "ratings"), ("version", "v1")]),
        ),
        ("destination.workload.name", s("mongodb-v1")),
        ("destination.workload.namespace", s("default")),
        (
            "destination.labels",
            map(&[("app", "mongodb"), ("version", "v1")]),
        ),
        (
            "destination.service.host",
            s("mongodb.default.svc.cluster.local"),
        ),
        ("destination.service.name", s("mongodb")),
        ("destination.service.namespace", s("default")),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect()
}

/// An inbound HTTP request from productpage-v1 to reviews-v1, with
/// `destination.service.host` set to `host` (a test may make it huge or unique).
pub fn inbound_http_request(host: &str) -> Vec<(String, Value<'static>)> {
    [
        ("context.reporter.kind", s("inbound")),
        ("context.protocol", s("http")),
        ("response.code", Value::Int64(200)),
        ("response.duration", Value::Duration(12_000_000)),
        ("request.size", Value::Int64(10)),
        ("response.size", Value::Int64(295)),
        ("request.path", s("/reviews/0")),
        ("request.method", s("GET")),
        ("request.useragent", s("curl/7.64")),
        ("source.workload.name", s("productpage-v1")),
        ("source.workload.namespace", s("default")),
        ("destination.workload.name", s("reviews-v1")),
        ("destination.workload.namespace", s("default")),
        ("destination.labels", map(&[("app", "reviews")])),
        ("destination.service.host", s(host)),
        ("destination.service.name", s("reviews")),
        ("destination.service.namespace", s("default")),
        (
            "request.time",
            Value::Timestamp(Timestamp::from_unix(1_600_000_000, 0)),
        ),
        (
            "response.time",
            Value::Timestamp(Timestamp::from_unix(1_600_000_000, 12_000_000)),
        ),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect()
}

/// A Report batch of three sets: an inbound HTTP request to reviews, and the opening and
/// closing of a TCP connection to db.
pub fn http_and_tcp_batch() -> Vec<Vec<(String, Value<'static>)>> {
    let http: Vec<(&str, Value<'static>)> = vec![
        ("context.reporter.kind", s("inbound")),
        ("context.protocol", s("http")),
        ("response.code", Value::Int64(200)),
        ("response.duration", Value::Duration(5_000_000)),
        ("request.size", Value::Int64(10)),
        ("response.size", Value::Int64(20)),
        ("request.host", s("reviews:9080")),
        ("request.path", s("/x")),
        ("source.workload.name", s("productpage-v1")),
        ("destination.workload.name", s("reviews-v1")),
        (
            "destination.service.host",
            s("reviews.default.svc.cluster.local"),
        ),
        ("destination.service.name", s("reviews")),
        (
            "request.time",
            Value::Timestamp(Timestamp::from_unix(1_600_000_000, 0)),
        ),
        (
            "response.time",
            Value::Timestamp(Timestamp::from_unix(1_600_000_000, 5_000_000)),
        ),
    ];
    let tcp = |event: &str| -> Vec<(String, Value<'static>)> {
        vec![
            ("context.reporter.kind".to_owned(), s("inbound")),
            ("context.protocol".to_owned(), s("tcp")),
            ("connection.event".to_owned(), s(event)),
            ("connection.sent.bytes".to_owned(), Value::Int64(10)),
            ("connection.received.bytes".to_owned(), Value::Int64(20)),
            (
                "destination.service.host".to_owned(),
                s("db.default.svc.cluster.local"),
            ),
            ("destination.service.name".to_owned(), s("db")),
        ]
    };
    vec![
        http.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
        tcp("open"),
        tcp("close"),
    ]
}
