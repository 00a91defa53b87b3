//! Benchmark support: Envoy-shaped traffic generated from a seed, shared by the criterion
//! benches and the `mixer-load` load generator.

pub mod callgrind;

use std::collections::BTreeMap;
use std::sync::Arc;

use expr_lang::golib::time::Timestamp;
use expr_lang::{StringMapRef, Value};
use mixer::attrs::{AttributeEncoder, GLOBAL_WORD_COUNT, encode_report};
use mixer::wire::pb::istio::mixer::v1::{CheckRequest, ReportRequest, check_request};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// One attribute set, as (name, value) pairs.
pub type Attributes = Vec<(String, Value<'static>)>;

const APPS: &[&str] = &[
    "productpage",
    "reviews",
    "ratings",
    "details",
    "frontend",
    "cart",
    "checkout",
    "payments",
    "shipping",
    "currency",
    "catalog",
    "search",
];
const NAMESPACES: &[&str] = &["default", "shop", "bookinfo", "prod"];
const VERSIONS: &[&str] = &["v1", "v2", "v3"];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const CODES: &[i64] = &[200, 200, 200, 200, 200, 200, 201, 204, 302, 404, 500, 503];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64)",
    "curl/7.64.1",
    "Go-http-client/1.1",
    "okhttp/4.9.0",
    "kube-probe/1.18",
];

/// Generates realistic, varied attribute sets from a seed, so label sets and cache keys
/// vary as in a mesh rather than repeating one request.
pub struct Traffic {
    rng: SmallRng,
    request_id: u64,
}

fn s(v: &str) -> Value<'static> {
    Value::String(v.to_owned().into())
}

fn string_map(entries: &[(&str, String)]) -> Value<'static> {
    let m: BTreeMap<String, String> = entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Value::StringMap(StringMapRef::Owned(Arc::new(m)))
}

impl Traffic {
    pub fn new(seed: u64) -> Traffic {
        Traffic {
            rng: SmallRng::seed_from_u64(seed),
            request_id: seed.wrapping_mul(1_000_003),
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn ip(&mut self) -> Value<'static> {
        let b: [u8; 4] = [10, self.rng.random(), self.rng.random(), self.rng.random()];
        Value::IpAddress(b.to_vec().into())
    }

    /// An HTTP request as a sidecar reports it: about 30 attributes.
    pub fn http(&mut self) -> Attributes {
        self.request_id += 1;
        let src = *self.pick(APPS);
        let dst = *self.pick(APPS);
        let src_ns = *self.pick(NAMESPACES);
        let dst_ns = *self.pick(NAMESPACES);
        let src_v = *self.pick(VERSIONS);
        let dst_v = *self.pick(VERSIONS);
        let method = *self.pick(METHODS);
        let code = *self.pick(CODES);
        let agent = *self.pick(AGENTS);
        let path = format!("/api/{dst}/{}", self.rng.random_range(0..50));
        let host = format!("{dst}.{dst_ns}.svc.cluster.local");
        let inbound = self.rng.random_bool(0.5);
        let start = 1_600_000_000 + (self.request_id % 100_000) as i64;
        let latency_ns = self.rng.random_range(200_000..80_000_000);
        let headers = string_map(&[
            (":authority", format!("{dst}:9080")),
            (":path", path.clone()),
            (":method", method.to_owned()),
            ("user-agent", agent.to_owned()),
            ("x-request-id", format!("{:016x}", self.request_id)),
            ("x-b3-traceid", format!("{:032x}", self.request_id)),
            ("x-b3-spanid", format!("{:016x}", self.request_id)),
            ("accept", "application/json".to_owned()),
        ]);
        vec![
            (
                "context.reporter.kind".to_owned(),
                s(if inbound { "inbound" } else { "outbound" }),
            ),
            ("context.protocol".to_owned(), s("http")),
            (
                "context.reporter.uid".to_owned(),
                s(&format!("kubernetes://{src}-{src_v}-7d9f.{src_ns}")),
            ),
            (
                "source.uid".to_owned(),
                s(&format!("kubernetes://{src}-{src_v}-7d9f.{src_ns}")),
            ),
            ("source.ip".to_owned(), self.ip()),
            (
                "source.workload.name".to_owned(),
                s(&format!("{src}-{src_v}")),
            ),
            ("source.workload.namespace".to_owned(), s(src_ns)),
            ("source.namespace".to_owned(), s(src_ns)),
            (
                "source.principal".to_owned(),
                s(&format!("cluster.local/ns/{src_ns}/sa/{src}")),
            ),
            (
                "source.labels".to_owned(),
                string_map(&[("app", src.to_owned()), ("version", src_v.to_owned())]),
            ),
            (
                "destination.uid".to_owned(),
                s(&format!("kubernetes://{dst}-{dst_v}-5c4b.{dst_ns}")),
            ),
            ("destination.ip".to_owned(), self.ip()),
            ("destination.port".to_owned(), Value::Int64(9080)),
            (
                "destination.workload.name".to_owned(),
                s(&format!("{dst}-{dst_v}")),
            ),
            ("destination.workload.namespace".to_owned(), s(dst_ns)),
            ("destination.namespace".to_owned(), s(dst_ns)),
            (
                "destination.principal".to_owned(),
                s(&format!("cluster.local/ns/{dst_ns}/sa/{dst}")),
            ),
            (
                "destination.labels".to_owned(),
                string_map(&[("app", dst.to_owned()), ("version", dst_v.to_owned())]),
            ),
            ("destination.service.host".to_owned(), s(&host)),
            ("destination.service.name".to_owned(), s(dst)),
            ("destination.service.namespace".to_owned(), s(dst_ns)),
            ("request.headers".to_owned(), headers),
            ("request.path".to_owned(), s(&path)),
            ("request.host".to_owned(), s(&format!("{dst}:9080"))),
            ("request.method".to_owned(), s(method)),
            ("request.scheme".to_owned(), s("http")),
            ("request.useragent".to_owned(), s(agent)),
            (
                "request.size".to_owned(),
                Value::Int64(self.rng.random_range(0..2048)),
            ),
            (
                "request.total_size".to_owned(),
                Value::Int64(self.rng.random_range(200..4096)),
            ),
            (
                "request.time".to_owned(),
                Value::Timestamp(Timestamp::from_unix(start, 0)),
            ),
            (
                "response.time".to_owned(),
                Value::Timestamp(Timestamp::from_unix(start, latency_ns as u32)),
            ),
            ("response.duration".to_owned(), Value::Duration(latency_ns)),
            ("response.code".to_owned(), Value::Int64(code)),
            (
                "response.size".to_owned(),
                Value::Int64(self.rng.random_range(0..65536)),
            ),
            (
                "response.total_size".to_owned(),
                Value::Int64(self.rng.random_range(200..70000)),
            ),
            (
                "connection.mtls".to_owned(),
                Value::Bool(self.rng.random_bool(0.8)),
            ),
        ]
    }

    /// A Check request for one HTTP request, encoded as Envoy does.
    pub fn check_request(&mut self) -> CheckRequest {
        let attrs = self.http();
        let mut enc = AttributeEncoder::new(GLOBAL_WORD_COUNT as u32);
        let mut compressed = enc.encode(&attrs);
        compressed.words = enc.into_words();
        CheckRequest {
            attributes: Some(compressed),
            global_word_count: GLOBAL_WORD_COUNT as u32,
            deduplication_id: format!("{:016x}", self.request_id),
            quotas: Default::default(),
        }
    }

    /// A Check request asking for a quota too.
    pub fn check_request_with_quota(&mut self, quota: &str) -> CheckRequest {
        let mut r = self.check_request();
        r.quotas.insert(
            quota.to_owned(),
            check_request::QuotaParams {
                amount: 1,
                best_effort: false,
            },
        );
        r
    }

    /// A Report batch of `n` attribute sets: INDEPENDENT_ENCODING with shared
    /// `default_words`, exactly as Envoy batches.
    pub fn report_request(&mut self, n: usize) -> ReportRequest {
        let bags: Vec<Attributes> = (0..n).map(|_| self.http()).collect();
        encode_report(GLOBAL_WORD_COUNT as u32, &bags)
    }
}

/// Envoy-shaped messages for the Envoy front ends (`mixer-load --mode authz|ratelimit|accesslog`),
/// as Envoy 1.40 fills them (see ENVOY.md).
pub mod envoy {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::{
        Address, Node, SocketAddress, address, socket_address,
    };
    use envoy_types::pb::envoy::data::accesslog::v3::{
        AccessLogCommon, HttpAccessLogEntry, HttpRequestProperties, HttpResponseProperties,
        http_access_log_entry::HttpVersion,
    };
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::envoy::service::accesslog::v3::StreamAccessLogsMessage;
    use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::{
        HttpAccessLogEntries, Identifier, LogEntries,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
    use envoy_types::pb::google::protobuf as pb;
    use pb::value::Kind;
    use rand::Rng;

    use super::{APPS, METHODS, NAMESPACES, Traffic, VERSIONS};

    fn socket(ip: String, port: u32) -> Option<Address> {
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip,
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        })
    }

    fn text(s: &str) -> pb::Value {
        pb::Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        }
    }

    fn now() -> pb::Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        pb::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }
    }

    impl Traffic {
        fn client_ip(&mut self) -> String {
            format!(
                "10.{}.{}.{}",
                self.rng.random_range(0..4),
                self.rng.random_range(0..256),
                self.rng.random_range(1..255)
            )
        }

        fn path(&mut self) -> String {
            let app = *self.pick(APPS);
            format!(
                "/api/v1/{app}/{}?page={}",
                self.rng.random_range(0..1000),
                self.rng.random_range(0..5)
            )
        }

        /// An ext_authz CheckRequest from an inbound sidecar.
        pub fn authz_request(&mut self) -> CheckRequest {
            self.request_id += 1;
            let method = (*self.pick(METHODS)).to_owned();
            let app = *self.pick(APPS);
            let headers: HashMap<String, String> = [
                (":authority", format!("{app}:9080")),
                (":method", method.clone()),
                (":path", self.path()),
                ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)".to_owned()),
                ("x-request-id", format!("{:016x}", self.request_id)),
                ("accept", "*/*".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let path = headers[":path"].clone();
            CheckRequest {
                attributes: Some(AttributeContext {
                    source: Some(Peer {
                        address: socket(self.client_ip(), self.rng.random_range(30000..60000)),
                        ..Default::default()
                    }),
                    destination: Some(Peer {
                        address: socket("10.44.0.7".to_owned(), 9080),
                        ..Default::default()
                    }),
                    request: Some(Request {
                        time: Some(now()),
                        http: Some(HttpRequest {
                            id: self.request_id.to_string(),
                            method,
                            path,
                            host: format!("{app}:9080"),
                            scheme: "http".to_owned(),
                            protocol: "HTTP/1.1".to_owned(),
                            headers,
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }),
            }
        }

        /// A rate-limit request for `domain`: one descriptor with the client's address.
        pub fn ratelimit_request(&mut self, domain: &str) -> RateLimitRequest {
            RateLimitRequest {
                domain: domain.to_owned(),
                descriptors: vec![RateLimitDescriptor {
                    entries: vec![Entry {
                        key: "remote_address".to_owned(),
                        value: self.client_ip(),
                    }],
                    ..Default::default()
                }],
                hits_addend: 1,
            }
        }

        /// A stream's first access-log message (with the node identity) carrying `n`
        /// HTTP entries.
        pub fn access_log_message(&mut self, n: usize) -> StreamAccessLogsMessage {
            let app = *self.pick(APPS);
            let namespace = *self.pick(NAMESPACES);
            let version = *self.pick(VERSIONS);
            let mut metadata = pb::Struct::default();
            for (k, v) in [
                ("NAME", format!("{app}-{version}-7d4b9c")),
                ("NAMESPACE", namespace.to_owned()),
                ("WORKLOAD_NAME", format!("{app}-{version}")),
                ("SERVICE_ACCOUNT", format!("bookinfo-{app}")),
            ] {
                metadata.fields.insert(k.to_owned(), text(&v));
            }
            let mut labels = pb::Struct::default();
            labels.fields.insert("app".to_owned(), text(app));
            labels.fields.insert("version".to_owned(), text(version));
            metadata.fields.insert(
                "labels".to_owned(),
                pb::Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            );
            let entries = (0..n)
                .map(|_| self.access_log_entry(app, namespace))
                .collect();
            StreamAccessLogsMessage {
                identifier: Some(Identifier {
                    node: Some(Node {
                        id: format!("sidecar~10.44.0.7~{app}.{namespace}"),
                        cluster: format!("{app}.{namespace}"),
                        metadata: Some(metadata),
                        ..Default::default()
                    }),
                    log_name: "inbound".to_owned(),
                }),
                log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
                    log_entry: entries,
                })),
            }
        }

        fn access_log_entry(&mut self, app: &str, namespace: &str) -> HttpAccessLogEntry {
            self.request_id += 1;
            let code = super::CODES[self.rng.random_range(0..super::CODES.len())] as u32;
            let millis = self.rng.random_range(1..200u64);
            let duration = pb::Duration {
                seconds: 0,
                nanos: (millis * 1_000_000) as i32,
            };
            HttpAccessLogEntry {
                common_properties: Some(AccessLogCommon {
                    downstream_remote_address: socket(self.client_ip(), 40000),
                    downstream_local_address: socket("10.44.0.7".to_owned(), 9080),
                    start_time: Some(now()),
                    time_to_last_downstream_tx_byte: Some(duration),
                    duration: Some(duration),
                    upstream_cluster: format!(
                        "inbound|9080|http|{app}.{namespace}.svc.cluster.local"
                    ),
                    ..Default::default()
                }),
                protocol_version: HttpVersion::Http11 as i32,
                request: Some(HttpRequestProperties {
                    request_method: 1, // GET
                    scheme: "http".to_owned(),
                    authority: format!("{app}:9080"),
                    path: self.path(),
                    user_agent: "Mozilla/5.0 (X11; Linux x86_64)".to_owned(),
                    request_id: format!("{:016x}", self.request_id),
                    request_headers_bytes: 320,
                    ..Default::default()
                }),
                response: Some(HttpResponseProperties {
                    response_code: Some(pb::UInt32Value { value: code }),
                    response_headers_bytes: 180,
                    response_body_bytes: self.rng.random_range(0..20_000),
                    ..Default::default()
                }),
            }
        }
    }
}
