//! One access-log entry (HTTP or TCP) as a bag, per the mapping in `ENVOY.md` ("Access
//! log"): values derived from Envoy's fields, then the node identity of the stream, then
//! attribute-named keys of the entry's `istio.mixer` filter metadata and `custom_tags`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{
    Address, RequestMethod, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::data::accesslog::v3::{
    AccessLogCommon, AccessLogType, HttpAccessLogEntry, ResponseFlags, TcpAccessLogEntry,
    TlsProperties, response_flags::unauthorized::Reason, tls_properties::CertificateProperties,
    tls_properties::certificate_properties::subject_alt_name::San,
};
use envoy_types::pb::google::protobuf as epb;
use expr_lang::golib::time::Timestamp;
use expr_lang::{Manifest, SlotBag, Value};

use super::attributes::{BagBuilder, ConvertError, Side};

/// The filter-metadata namespace whose keys name attributes.
pub const MIXER_NAMESPACE: &str = "istio.mixer";

/// What an entry's bag is built with besides the entry.
pub struct EntryContext<'a> {
    pub manifest: &'a Manifest,
    /// The stream's node metadata (from its identifier), if any.
    pub node: Option<&'a prost_types::Struct>,
    /// The server clock, for `context.time`.
    pub now: Timestamp,
}

/// Byte counts of a TCP connection at its previous entry on this stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpTotals {
    pub received: u64,
    pub sent: u64,
}

/// The bag of an HTTP entry and the attribute-named values that did not convert.
pub fn http_bag(
    ctx: &EntryContext<'_>,
    entry: &HttpAccessLogEntry,
) -> (SlotBag, Vec<ConvertError>) {
    let default = AccessLogCommon::default();
    let common = entry.common_properties.as_ref().unwrap_or(&default);
    let mut b = BagBuilder::new(ctx.manifest);
    common_attributes(&mut b, common, ctx.now);
    set_request_timing(&mut b, common);
    if let Some(request) = &entry.request {
        request_attributes(&mut b, request);
    }
    if let Some(response) = &entry.response {
        response_attributes(&mut b, response);
    }
    let grpc = entry
        .request
        .as_ref()
        .and_then(|r| header(&r.request_headers, "content-type"))
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    b.set_str("context.protocol", if grpc { "grpc" } else { "http" });
    identity_and_keys(&mut b, ctx, common);
    b.finish()
}

/// The bag of a TCP entry. `previous` is what the stream saw of this connection before
/// (for the byte counts since then); the totals now are returned for the next entry.
pub fn tcp_bag(
    ctx: &EntryContext<'_>,
    entry: &TcpAccessLogEntry,
    previous: TcpTotals,
) -> (SlotBag, Vec<ConvertError>, TcpTotals) {
    let default = AccessLogCommon::default();
    let common = entry.common_properties.as_ref().unwrap_or(&default);
    let mut b = BagBuilder::new(ctx.manifest);
    common_attributes(&mut b, common, ctx.now);
    b.set_str("context.protocol", "tcp");
    b.set_str("connection.event", connection_event(common));
    b.set_nonempty("connection.id", &common.stream_id);
    let props = entry.connection_properties.unwrap_or_default();
    let totals = TcpTotals {
        received: props.received_bytes,
        sent: props.sent_bytes,
    };
    b.set("connection.received.bytes_total", int(totals.received));
    b.set("connection.sent.bytes_total", int(totals.sent));
    b.set(
        "connection.received.bytes",
        int(totals.received.saturating_sub(previous.received)),
    );
    b.set(
        "connection.sent.bytes",
        int(totals.sent.saturating_sub(previous.sent)),
    );
    if let Some(d) = &common.duration {
        b.set("connection.duration", Value::Duration(nanos(d)));
    }
    identity_and_keys(&mut b, ctx, common);
    let (bag, rejected) = b.finish();
    (bag, rejected, totals)
}

/// Whether this TCP entry is the connection's last (its byte counts can be forgotten).
pub fn is_connection_end(entry: &TcpAccessLogEntry) -> bool {
    let default = AccessLogCommon::default();
    let common = entry.common_properties.as_ref().unwrap_or(&default);
    connection_event(common) == "close"
}

/// Istio's `connection.event`: `open` when Envoy logs the connection's start, `continue`
/// for periodic (intermediate) entries, `close` for the final one (the only entry unless
/// the TCP proxy's `access_log_options` ask for more).
fn connection_event(common: &AccessLogCommon) -> &'static str {
    match AccessLogType::try_from(common.access_log_type) {
        Ok(AccessLogType::TcpUpstreamConnected | AccessLogType::TcpConnectionStart) => "open",
        Ok(AccessLogType::TcpPeriodic) => "continue",
        _ => "close",
    }
}

/// Fields every entry has: addresses, TLS, response flags, the reporter's default kind,
/// the destination service of an Istio-style cluster name, and the server clock.
fn common_attributes(b: &mut BagBuilder<'_>, common: &AccessLogCommon, now: Timestamp) {
    if let Some((ip, _)) = socket(common.downstream_direct_remote_address.as_ref()) {
        b.set_ip("source.ip", ip);
    }
    if let Some((ip, port)) = socket(common.downstream_local_address.as_ref()) {
        b.set_ip("destination.ip", ip);
        if let Some(port) = port {
            b.set("destination.port", Value::Int64(i64::from(port)));
        }
    }
    if let Some(tls) = &common.tls_properties {
        tls_attributes(b, tls);
    }
    if let Some(t) = &common.start_time {
        b.set("request.time", timestamp(t));
    }
    b.set_str(
        "context.proxy_error_code",
        &response_flags(common.response_flags.as_ref()),
    );
    b.set_str("context.reporter.kind", "inbound");
    if let Some(service) = istio_cluster_service(&common.upstream_cluster) {
        b.set_str("destination.service.host", service.host);
        b.set_str("destination.service.name", service.name);
        b.set_str("destination.service.namespace", service.namespace);
    }
    b.set("context.time", Value::Timestamp(now));
}

fn tls_attributes(b: &mut BagBuilder<'_>, tls: &TlsProperties) {
    if let Some(peer) = &tls.peer_certificate_properties {
        b.set("connection.mtls", Value::Bool(true));
        if let Some(uri) = uri_san(peer) {
            b.set_str("source.principal", uri);
        }
    }
    if let Some(uri) = tls.local_certificate_properties.as_ref().and_then(uri_san) {
        b.set_str("destination.principal", uri);
    }
    b.set_nonempty("connection.requested_server_name", &tls.tls_sni_hostname);
}

/// `response.time` (start + time to the last byte sent downstream) and
/// `response.duration` (`duration`, else that same time).
fn set_request_timing(b: &mut BagBuilder<'_>, common: &AccessLogCommon) {
    let last_tx = common.time_to_last_downstream_tx_byte.as_ref().map(nanos);
    if let (Some(start), Some(last_tx)) = (&common.start_time, last_tx) {
        let start_ns = i128::from(start.seconds) * 1_000_000_000 + i128::from(start.nanos);
        let at = start_ns + i128::from(last_tx);
        let secs = i64::try_from(at.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
        let sub = u32::try_from(at.rem_euclid(1_000_000_000)).unwrap_or(0);
        b.set(
            "response.time",
            Value::Timestamp(Timestamp::from_unix(secs, sub)),
        );
    }
    if let Some(d) = common.duration.as_ref().map(nanos).or(last_tx) {
        b.set("response.duration", Value::Duration(d));
    }
}

fn request_attributes(
    b: &mut BagBuilder<'_>,
    r: &envoy_types::pb::envoy::data::accesslog::v3::HttpRequestProperties,
) {
    b.set_nonempty("request.host", &r.authority);
    if let Ok(method) = RequestMethod::try_from(r.request_method)
        && method != RequestMethod::MethodUnspecified
    {
        b.set_str("request.method", method.as_str_name());
    }
    b.set_nonempty("request.scheme", &r.scheme);
    b.set_path(&r.path);
    if !r.request_headers.is_empty() {
        b.set_map("request.headers", lower_map(&r.request_headers));
    }
    b.set_nonempty("request.useragent", &r.user_agent);
    b.set_nonempty("request.referer", &r.referer);
    b.set_nonempty("request.id", &r.request_id);
    b.set("request.size", int(r.request_body_bytes));
    b.set(
        "request.total_size",
        int(r.request_headers_bytes.saturating_add(r.request_body_bytes)),
    );
}

fn response_attributes(
    b: &mut BagBuilder<'_>,
    r: &envoy_types::pb::envoy::data::accesslog::v3::HttpResponseProperties,
) {
    if let Some(code) = r.response_code {
        b.set("response.code", Value::Int64(i64::from(code.value)));
    }
    b.set("response.size", int(r.response_body_bytes));
    b.set(
        "response.total_size",
        int(r
            .response_headers_bytes
            .saturating_add(r.response_body_bytes)),
    );
    if !r.response_headers.is_empty() {
        b.set_map("response.headers", lower_map(&r.response_headers));
    }
    // gRPC puts its status in trailers, or in headers for a trailers-only response.
    if let Some(status) =
        header(&r.response_trailers, "grpc-status").or(header(&r.response_headers, "grpc-status"))
    {
        b.set_str("response.grpc_status", status);
    }
}

/// Sources 2 and 3 of the mapping: the node identity, on the side the entry's reporter
/// kind gives (which an attribute-named key may set), then the attribute-named keys.
fn identity_and_keys(b: &mut BagBuilder<'_>, ctx: &EntryContext<'_>, common: &AccessLogCommon) {
    let mixer_keys = common
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get(MIXER_NAMESPACE))
        .map(struct_from_envoy);
    if let Some(node) = ctx.node {
        let kind = reporter_kind(mixer_keys.as_ref(), &common.custom_tags);
        b.node_identity(node, Side::of_reporter(kind.as_deref()));
    }
    if let Some(keys) = &mixer_keys {
        b.keyed_struct(keys);
    }
    // Sorted, so that the outcome never depends on the map's order.
    let tags: BTreeMap<_, _> = common.custom_tags.iter().collect();
    for (key, value) in tags {
        b.keyed_text(key, value);
    }
}

/// `context.reporter.kind` as the attribute-named keys will leave it.
fn reporter_kind(
    mixer_keys: Option<&prost_types::Struct>,
    custom_tags: &HashMap<String, String>,
) -> Option<String> {
    const KEY: &str = "context.reporter.kind";
    let from_tags = custom_tags.get(KEY).filter(|v| v.as_str() != "-").cloned();
    let from_metadata = || match mixer_keys?.fields.get(KEY)?.kind.as_ref()? {
        prost_types::value::Kind::StringValue(s) if s != "-" => Some(s.clone()),
        _ => None,
    };
    from_tags.or_else(from_metadata)
}

/// Envoy's short response-flag codes (`%RESPONSE_FLAGS%`), comma-separated in Envoy's
/// order; `-` when none is set.
pub fn response_flags(flags: Option<&ResponseFlags>) -> String {
    let Some(f) = flags else {
        return "-".to_owned();
    };
    let uaex = f
        .unauthorized_details
        .as_ref()
        .is_some_and(|u| u.reason == Reason::ExternalService as i32);
    let codes: [(bool, &str); 28] = [
        (f.failed_local_healthcheck, "LH"),
        (f.no_healthy_upstream, "UH"),
        (f.upstream_request_timeout, "UT"),
        (f.local_reset, "LR"),
        (f.upstream_remote_reset, "UR"),
        (f.upstream_connection_failure, "UF"),
        (f.upstream_connection_termination, "UC"),
        (f.upstream_overflow, "UO"),
        (f.no_route_found, "NR"),
        (f.delay_injected, "DI"),
        (f.fault_injected, "FI"),
        (f.rate_limited, "RL"),
        (uaex, "UAEX"),
        (f.rate_limit_service_error, "RLSE"),
        (f.downstream_connection_termination, "DC"),
        (f.upstream_retry_limit_exceeded, "URX"),
        (f.stream_idle_timeout, "SI"),
        (f.invalid_envoy_request_headers, "IH"),
        (f.downstream_protocol_error, "DPE"),
        (f.upstream_max_stream_duration_reached, "UMSDR"),
        (f.response_from_cache_filter, "RFCF"),
        (f.no_filter_config_found, "NFCF"),
        (f.duration_timeout, "DT"),
        (f.upstream_protocol_error, "UPE"),
        (f.no_cluster_found, "NC"),
        (f.overload_manager, "OM"),
        (f.dns_resolution_failure, "DF"),
        (f.downstream_remote_reset, "DR"),
    ];
    let set: Vec<&str> = codes
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, c)| *c)
        .collect();
    if set.is_empty() {
        "-".to_owned()
    } else {
        set.join(",")
    }
}

/// The destination service of an Istio cluster name
/// (`outbound|9080|v1|reviews.default.svc.cluster.local`, `inbound|9080|http|…`).
#[derive(Debug, PartialEq, Eq)]
pub struct ClusterService<'a> {
    pub host: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
}

pub fn istio_cluster_service(cluster: &str) -> Option<ClusterService<'_>> {
    let mut parts = cluster.split('|');
    let direction = parts.next()?;
    let (_port, _subset, host) = (parts.next()?, parts.next()?, parts.next()?);
    if !matches!(direction, "outbound" | "inbound") || parts.next().is_some() {
        return None;
    }
    let mut labels = host.split('.');
    let (name, namespace) = (labels.next()?, labels.next()?);
    if name.is_empty() || namespace.is_empty() {
        return None;
    }
    Some(ClusterService {
        host,
        name,
        namespace,
    })
}

/// The IP and port of a socket address (pipes and internal addresses have none).
fn socket(address: Option<&Address>) -> Option<(IpAddr, Option<u32>)> {
    let Some(address::Address::SocketAddress(s)) = address?.address.as_ref() else {
        return None;
    };
    let ip: IpAddr = s.address.parse().ok()?;
    let port = match s.port_specifier {
        Some(PortSpecifier::PortValue(p)) => Some(p),
        _ => None,
    };
    Some((ip, port))
}

fn uri_san(cert: &CertificateProperties) -> Option<&str> {
    cert.subject_alt_name.iter().find_map(|san| match &san.san {
        Some(San::Uri(uri)) if !uri.is_empty() => Some(uri.as_str()),
        _ => None,
    })
}

fn header<'m>(headers: &'m HashMap<String, String>, name: &str) -> Option<&'m str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn lower_map(headers: &HashMap<String, String>) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn int(n: u64) -> Value<'static> {
    Value::Int64(i64::try_from(n).unwrap_or(i64::MAX))
}

fn nanos(d: &epb::Duration) -> i64 {
    d.seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(d.nanos))
}

fn timestamp(t: &epb::Timestamp) -> Value<'static> {
    Value::Timestamp(Timestamp::from_unix(
        t.seconds,
        u32::try_from(t.nanos).unwrap_or(0),
    ))
}

/// Envoy's copy of `google.protobuf.Struct` as prost's, which the bag builder reads.
/// Decoded messages nest no deeper than prost's recursion limit, which bounds this
/// recursion too.
pub fn struct_from_envoy(s: &epb::Struct) -> prost_types::Struct {
    prost_types::Struct {
        fields: s
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), value_from_envoy(v)))
            .collect(),
    }
}

fn value_from_envoy(v: &epb::Value) -> prost_types::Value {
    use epb::value::Kind as E;
    use prost_types::value::Kind as P;
    let kind = v.kind.as_ref().map(|k| match k {
        E::NullValue(n) => P::NullValue(*n),
        E::NumberValue(n) => P::NumberValue(*n),
        E::StringValue(s) => P::StringValue(s.clone()),
        E::BoolValue(b) => P::BoolValue(*b),
        E::StructValue(s) => P::StructValue(struct_from_envoy(s)),
        E::ListValue(l) => P::ListValue(prost_types::ListValue {
            values: l.values.iter().map(value_from_envoy).collect(),
        }),
    });
    prost_types::Value { kind }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::SocketAddress;
    use envoy_types::pb::envoy::data::accesslog::v3::{
        ConnectionProperties, HttpRequestProperties, HttpResponseProperties, response_flags,
        tls_properties::certificate_properties::SubjectAltName,
    };
    use expr_lang::{AttrKey, Bag};

    use super::*;

    fn get<'b>(m: &Manifest, bag: &'b SlotBag, name: &str) -> Option<Value<'b>> {
        let id = m.get(name).unwrap().id;
        bag.get(AttrKey { name, id })
    }

    fn text(m: &Manifest, bag: &SlotBag, name: &str) -> Option<String> {
        get(m, bag, name).and_then(|v| v.as_str().map(str::to_owned))
    }

    fn addr(ip: &str, port: u32) -> Option<Address> {
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        })
    }

    fn uri(u: &str) -> CertificateProperties {
        CertificateProperties {
            subject_alt_name: vec![SubjectAltName {
                san: Some(San::Uri(u.into())),
            }],
            ..Default::default()
        }
    }

    fn pduration(ms: i64) -> Option<epb::Duration> {
        Some(epb::Duration {
            seconds: ms / 1000,
            nanos: ((ms % 1000) * 1_000_000) as i32,
        })
    }

    fn node() -> prost_types::Struct {
        let s = |v: &str| prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(v.into())),
        };
        let mut n = prost_types::Struct::default();
        n.fields.insert("NAME".into(), s("reviews-v1-abc"));
        n.fields.insert("NAMESPACE".into(), s("default"));
        n.fields.insert("WORKLOAD_NAME".into(), s("reviews-v1"));
        n
    }

    fn http_entry() -> HttpAccessLogEntry {
        HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                downstream_direct_remote_address: addr("10.1.2.3", 55000),
                downstream_remote_address: addr("192.0.2.9", 0),
                downstream_local_address: addr("10.9.8.7", 9080),
                start_time: Some(epb::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 900_000_000,
                }),
                time_to_last_downstream_tx_byte: pduration(250),
                upstream_cluster: "outbound|9080|v1|reviews.default.svc.cluster.local".into(),
                tls_properties: Some(TlsProperties {
                    tls_sni_hostname: "reviews.example".into(),
                    peer_certificate_properties: Some(uri(
                        "spiffe://cluster.local/ns/default/sa/productpage",
                    )),
                    local_certificate_properties: Some(uri(
                        "spiffe://cluster.local/ns/default/sa/reviews",
                    )),
                    ..Default::default()
                }),
                response_flags: Some(ResponseFlags {
                    upstream_connection_failure: true,
                    rate_limited: true,
                    unauthorized_details: Some(response_flags::Unauthorized {
                        reason: Reason::ExternalService as i32,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            protocol_version: 2,
            request: Some(HttpRequestProperties {
                request_method: RequestMethod::Post as i32,
                scheme: "http".into(),
                authority: "reviews:9080".into(),
                path: "/reviews/1?x=2".into(),
                user_agent: "curl/8".into(),
                request_id: "req-1".into(),
                request_headers_bytes: 100,
                request_body_bytes: 20,
                request_headers: [(
                    "content-type".to_owned(),
                    "application/grpc+proto".to_owned(),
                )]
                .into(),
                ..Default::default()
            }),
            response: Some(HttpResponseProperties {
                response_code: Some(epb::UInt32Value { value: 503 }),
                response_headers_bytes: 50,
                response_body_bytes: 7,
                response_headers: [("grpc-status".to_owned(), "2".to_owned())].into(),
                response_trailers: [("grpc-status".to_owned(), "14".to_owned())].into(),
                ..Default::default()
            }),
        }
    }

    fn ctx<'a>(m: &'a Manifest, node: Option<&'a prost_types::Struct>) -> EntryContext<'a> {
        EntryContext {
            manifest: m,
            node,
            now: Timestamp::from_unix(1_800_000_000, 0),
        }
    }

    #[test]
    fn an_http_entry_maps_per_the_table() {
        let m = Manifest::istio_vocabulary();
        let n = node();
        let (bag, rejected) = http_bag(&ctx(&m, Some(&n)), &http_entry());
        assert!(rejected.is_empty());
        let t = |name| text(&m, &bag, name);
        assert_eq!(
            get(&m, &bag, "source.ip"),
            Some(Value::IpAddress(vec![10, 1, 2, 3].into())),
            "the TCP peer, not the forwarded address"
        );
        assert_eq!(
            get(&m, &bag, "destination.ip"),
            Some(Value::IpAddress(vec![10, 9, 8, 7].into()))
        );
        assert_eq!(get(&m, &bag, "destination.port"), Some(Value::Int64(9080)));
        assert_eq!(
            t("source.principal").as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/productpage")
        );
        assert_eq!(
            t("destination.principal").as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/reviews")
        );
        assert_eq!(get(&m, &bag, "connection.mtls"), Some(Value::Bool(true)));
        assert_eq!(
            t("connection.requested_server_name").as_deref(),
            Some("reviews.example")
        );
        assert_eq!(t("request.method").as_deref(), Some("POST"));
        assert_eq!(t("request.host").as_deref(), Some("reviews:9080"));
        assert_eq!(t("request.url_path").as_deref(), Some("/reviews/1"));
        assert_eq!(t("request.id").as_deref(), Some("req-1"));
        assert_eq!(t("request.useragent").as_deref(), Some("curl/8"));
        assert_eq!(get(&m, &bag, "request.size"), Some(Value::Int64(20)));
        assert_eq!(get(&m, &bag, "request.total_size"), Some(Value::Int64(120)));
        assert_eq!(get(&m, &bag, "response.code"), Some(Value::Int64(503)));
        assert_eq!(get(&m, &bag, "response.size"), Some(Value::Int64(7)));
        assert_eq!(get(&m, &bag, "response.total_size"), Some(Value::Int64(57)));
        assert_eq!(
            t("response.grpc_status").as_deref(),
            Some("14"),
            "trailers first"
        );
        assert_eq!(t("context.protocol").as_deref(), Some("grpc"));
        assert_eq!(t("context.proxy_error_code").as_deref(), Some("UF,RL,UAEX"));
        assert_eq!(t("context.reporter.kind").as_deref(), Some("inbound"));
        assert_eq!(
            get(&m, &bag, "response.duration"),
            Some(Value::Duration(250_000_000)),
            "no duration: the time to the last byte sent"
        );
        assert_eq!(
            get(&m, &bag, "response.time"),
            Some(Value::Timestamp(Timestamp::from_unix(
                1_700_000_001,
                150_000_000
            ))),
            "start + time to the last byte, across a second boundary"
        );
        assert_eq!(
            t("destination.service.host").as_deref(),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(t("destination.service.name").as_deref(), Some("reviews"));
        assert_eq!(
            t("destination.service.namespace").as_deref(),
            Some("default")
        );
        assert_eq!(
            t("destination.workload.name").as_deref(),
            Some("reviews-v1")
        );
        assert_eq!(
            get(&m, &bag, "context.time"),
            Some(Value::Timestamp(Timestamp::from_unix(1_800_000_000, 0)))
        );
    }

    #[test]
    fn keys_overwrite_and_an_outbound_reporter_moves_the_identity_to_the_source() {
        let m = Manifest::istio_vocabulary();
        let n = node();
        let mut entry = http_entry();
        let common = entry.common_properties.as_mut().unwrap();
        common.duration = pduration(300);
        let mut mixer = epb::Struct::default();
        mixer.fields.insert(
            "destination.service.host".into(),
            epb::Value {
                kind: Some(epb::value::Kind::StringValue(
                    "ratings.prod.svc.cluster.local".into(),
                )),
            },
        );
        mixer.fields.insert(
            "response.code".into(),
            epb::Value {
                kind: Some(epb::value::Kind::NumberValue(201.0)),
            },
        );
        common.metadata = Some(envoy_types::pb::envoy::config::core::v3::Metadata {
            filter_metadata: [(MIXER_NAMESPACE.to_owned(), mixer)].into(),
            ..Default::default()
        });
        common.custom_tags = [
            ("context.reporter.kind".to_owned(), "outbound".to_owned()),
            ("response.code".to_owned(), "202".to_owned()),
            ("request.size".to_owned(), "lots".to_owned()),
            ("response.grpc_status".to_owned(), "-".to_owned()),
            ("not.an.attribute".to_owned(), "x".to_owned()),
        ]
        .into();
        let (bag, rejected) = http_bag(&ctx(&m, Some(&n)), &entry);
        let t = |name| text(&m, &bag, name);
        assert_eq!(t("context.reporter.kind").as_deref(), Some("outbound"));
        assert_eq!(t("source.workload.name").as_deref(), Some("reviews-v1"));
        assert_eq!(t("destination.workload.name"), None);
        assert_eq!(
            t("destination.service.host").as_deref(),
            Some("ratings.prod.svc.cluster.local")
        );
        assert_eq!(
            get(&m, &bag, "response.code"),
            Some(Value::Int64(202)),
            "custom_tags come after metadata"
        );
        assert_eq!(
            get(&m, &bag, "response.grpc_status"),
            Some(Value::str("14")),
            "`-` leaves the derived value"
        );
        assert_eq!(
            get(&m, &bag, "response.duration"),
            Some(Value::Duration(300_000_000))
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].attribute, "request.size");
    }

    #[test]
    fn a_tcp_entry_reports_bytes_since_its_previous_entry() {
        let m = Manifest::istio_vocabulary();
        let entry = TcpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                stream_id: "conn-1".into(),
                access_log_type: AccessLogType::TcpPeriodic as i32,
                downstream_local_address: addr("10.9.8.7", 27017),
                duration: pduration(1500),
                ..Default::default()
            }),
            connection_properties: Some(ConnectionProperties {
                received_bytes: 1000,
                sent_bytes: 300,
            }),
        };
        let previous = TcpTotals {
            received: 400,
            sent: 100,
        };
        let (bag, _, totals) = tcp_bag(&ctx(&m, None), &entry, previous);
        assert_eq!(
            totals,
            TcpTotals {
                received: 1000,
                sent: 300
            }
        );
        let i = |name| get(&m, &bag, name);
        assert_eq!(i("connection.received.bytes"), Some(Value::Int64(600)));
        assert_eq!(i("connection.sent.bytes"), Some(Value::Int64(200)));
        assert_eq!(
            i("connection.received.bytes_total"),
            Some(Value::Int64(1000))
        );
        assert_eq!(i("connection.sent.bytes_total"), Some(Value::Int64(300)));
        assert_eq!(
            i("connection.duration"),
            Some(Value::Duration(1_500_000_000))
        );
        assert_eq!(i("connection.event"), Some(Value::str("continue")));
        assert_eq!(i("connection.id"), Some(Value::str("conn-1")));
        assert_eq!(i("context.protocol"), Some(Value::str("tcp")));
        assert_eq!(i("destination.port"), Some(Value::Int64(27017)));
        assert!(!is_connection_end(&entry));
        let mut last = entry.clone();
        last.common_properties.as_mut().unwrap().access_log_type =
            AccessLogType::TcpConnectionEnd as i32;
        assert!(is_connection_end(&last));
    }

    #[test]
    fn response_flags_use_envoys_short_codes() {
        assert_eq!(response_flags(None), "-");
        assert_eq!(response_flags(Some(&ResponseFlags::default())), "-");
        let all = ResponseFlags {
            failed_local_healthcheck: true,
            no_healthy_upstream: true,
            upstream_request_timeout: true,
            local_reset: true,
            upstream_remote_reset: true,
            upstream_connection_failure: true,
            upstream_connection_termination: true,
            upstream_overflow: true,
            no_route_found: true,
            delay_injected: true,
            fault_injected: true,
            rate_limited: true,
            unauthorized_details: Some(response_flags::Unauthorized {
                reason: Reason::ExternalService as i32,
            }),
            rate_limit_service_error: true,
            downstream_connection_termination: true,
            upstream_retry_limit_exceeded: true,
            stream_idle_timeout: true,
            invalid_envoy_request_headers: true,
            downstream_protocol_error: true,
            upstream_max_stream_duration_reached: true,
            response_from_cache_filter: true,
            no_filter_config_found: true,
            duration_timeout: true,
            upstream_protocol_error: true,
            no_cluster_found: true,
            overload_manager: true,
            dns_resolution_failure: true,
            downstream_remote_reset: true,
        };
        assert_eq!(
            response_flags(Some(&all)),
            "LH,UH,UT,LR,UR,UF,UC,UO,NR,DI,FI,RL,UAEX,RLSE,DC,URX,SI,IH,DPE,UMSDR,RFCF,NFCF,DT,UPE,NC,OM,DF,DR"
        );
        let unspecified = ResponseFlags {
            unauthorized_details: Some(response_flags::Unauthorized { reason: 0 }),
            ..Default::default()
        };
        assert_eq!(response_flags(Some(&unspecified)), "-");
    }

    #[test]
    fn istio_cluster_names_give_the_destination_service() {
        assert_eq!(
            istio_cluster_service("outbound|9080|v1|reviews.default.svc.cluster.local"),
            Some(ClusterService {
                host: "reviews.default.svc.cluster.local",
                name: "reviews",
                namespace: "default",
            })
        );
        assert!(
            istio_cluster_service("inbound|9080|http|ratings.prod.svc.cluster.local").is_some()
        );
        for other in [
            "upstream",
            "outbound|9080|v1",
            "outbound|1|2|host",
            "x|1|2|a.b",
            "outbound|1|2|a.b|c",
        ] {
            assert_eq!(istio_cluster_service(other), None, "{other}");
        }
    }
}
