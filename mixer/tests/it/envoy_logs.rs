//! The access-log (`envoy.service.accesslog.v3`) and OTLP logs front ends against a real
//! `mixer server` serving Istio 1.4's default telemetry (`samples/default`, unchanged):
//! a real Envoy's gRPC and OpenTelemetry access loggers feed `istio_requests_total` and
//! the stdio access log; streams that break limits end alone; an idle stream outlives
//! the read timeout.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::{Metadata, Node};
use envoy_types::pb::envoy::data::accesslog::v3::{
    AccessLogCommon, HttpAccessLogEntry, HttpRequestProperties, HttpResponseProperties,
};
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_client::AccessLogServiceClient;
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::{
    HttpAccessLogEntries, Identifier, LogEntries,
};
use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse,
};
use envoy_types::pb::google::protobuf as epb;
use mixer::api::envoy::accesslog::STREAM_PATH;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use test_support::config::default_samples;
use test_support::envoy_process::EnvoyProcess;
use test_support::process::wait_for_ready_file;
use test_support::upstream::Upstream;
use test_support::{free_port, http};
use tonic::transport::Channel;

use crate::common::{MIXER, ServerProcess, metric_value, mixer_command};

/// How long anything asynchronous (a flush, a scrape, a reconnect) may take.
const WAIT: Duration = Duration::from_secs(30);
const HOST: &str = "reviews.default.svc.cluster.local";

/// Polls `f` until it gives a value; panics naming `what` after [`WAIT`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scrape(addr: &str) -> String {
    http::get(addr, "/metrics", Duration::from_secs(5))
        .map(|r| r.text())
        .unwrap_or_default()
}

/// Waits until the Prometheus exposition at `addr` has `name` with `labels` at `at_least`.
fn wait_metric(addr: &str, name: &str, labels: &[&str], at_least: f64) -> String {
    wait_for(&format!("{name} {labels:?} >= {at_least}"), || {
        let text = scrape(addr);
        metric_value(&text, name, labels)
            .filter(|v| *v >= at_least)
            .map(|_| text)
    })
}

/// A `mixer server` with `samples/default` whose stdout (the stdio access log) is kept.
struct Telemetry {
    server: ServerProcess,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Telemetry {
    fn start(extra: &[&str]) -> Telemetry {
        let mut server =
            ServerProcess::start_with(MIXER, &default_samples(), extra, Stdio::piped());
        let out = server.child.stdout.take().expect("stdout is piped");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Telemetry { server, stdout }
    }

    fn port(&self) -> u16 {
        port_of(&self.server.api)
    }

    /// The first access-log line that contains `needle`, parsed.
    fn wait_log_line(&self, needle: &str) -> serde_json::Value {
        let line = wait_for(&format!("an access-log line with {needle}"), || {
            self.stdout
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The workload this Envoy fronts, as an Istio sidecar's bootstrap names it.
const NODE: &str = r#"
node:
  id: sidecar~127.0.0.1~reviews-v1-abc.default~default.svc.cluster.local
  cluster: reviews.default
  metadata:
    NAME: reviews-v1-abc
    NAMESPACE: default
    WORKLOAD_NAME: reviews-v1
    SERVICE_ACCOUNT: bookinfo-reviews
    labels: {app: reviews, version: v1}
"#;

/// The gRPC access logger of an HTTP connection manager, sending to cluster `mixer`,
/// with the route's `istio.mixer` metadata as the `destination.service.host` tag.
const HTTP_GRPC_LOG: &str = r#"
          access_log:
          - name: envoy.access_loggers.http_grpc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig
              common_config:
                log_name: mixer
                transport_api_version: V3
                buffer_flush_interval: 0.05s
                grpc_service: {envoy_grpc: {cluster_name: mixer}}
                custom_tags:
                - tag: destination.service.host
                  metadata:
                    kind: {route: {}}
                    metadata_key: {key: istio.mixer, path: [{key: destination.service.host}]}
              additional_request_headers_to_log: [x-request-id, content-type]
"#;

/// The OpenTelemetry access logger with attributes named after Istio's attributes.
const OTLP_LOG: &str = r#"
          access_log:
          - name: envoy.access_loggers.open_telemetry
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig
              log_name: otel
              grpc_service: {envoy_grpc: {cluster_name: mixer}}
              buffer_flush_interval: 0.05s
              resource_attributes:
                values:
                - {key: destination.workload.namespace, value: {string_value: default}}
                - {key: destination.workload.name, value: {string_value: overwritten}}
              attributes:
                values:
                - {key: context.protocol, value: {string_value: http}}
                - {key: context.reporter.kind, value: {string_value: inbound}}
                - {key: destination.workload.name, value: {string_value: ratings-v1}}
                - {key: destination.service.host, value: {string_value: "%METADATA(ROUTE:istio.mixer:destination.service.host)%"}}
                - {key: request.method, value: {string_value: "%REQ(:METHOD)%"}}
                - {key: request.path, value: {string_value: "%REQ(:PATH)%"}}
                - {key: response.code, value: {string_value: "%RESPONSE_CODE%"}}
                - {key: response.duration, value: {string_value: "%DURATION%"}}
                - {key: response.grpc_status, value: {string_value: "%GRPC_STATUS(NUMBER)%"}}
                - {key: source.ip, value: {string_value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}
"#;

/// An HTTP listener on `port` routing everything to cluster `upstream`, the route
/// carrying `host` as `istio.mixer` metadata; `log` is its `access_log` block; `tls` its
/// transport socket block (or empty).
fn http_listener(name: &str, port: u16, host: &str, log: &str, tls: &str) -> String {
    format!(
        r#"
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - {tls}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
{log}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
                metadata:
                  filter_metadata:
                    istio.mixer: {{destination.service.host: {host}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

/// A bootstrap with the node identity, `listeners`, the upstream and the mixer cluster.
fn bootstrap(listeners: &str, upstream: u16, mixer: u16) -> String {
    format!(
        r#"{NODE}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
{listeners}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}
  - name: "inbound|9080|tcp|reviews.default.svc.cluster.local"
    type: STATIC
    load_assignment:
      cluster_name: "inbound|9080|tcp|reviews.default.svc.cluster.local"
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}
  - name: mixer
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: mixer
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {mixer}}}}}
"#
    )
}

fn get(port: u16, path: &str, request_id: &str) -> u16 {
    http::request(
        ("127.0.0.1", port),
        "GET",
        path,
        &[("x-request-id", request_id)],
        Duration::from_secs(10),
    )
    .expect("Envoy answers")
    .status
}

/// Labels every series of a request through the test's Envoy carries.
const DESTINATION: [&str; 5] = [
    "reporter=\"destination\"",
    "destination_workload=\"reviews-v1\"",
    "destination_workload_namespace=\"default\"",
    "destination_app=\"reviews\"",
    "destination_version=\"v1\"",
];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    DESTINATION.iter().chain(extra).copied().collect()
}

#[test]
fn envoy_access_log_feeds_istio_metrics_and_the_access_log() {
    let telemetry = Telemetry::start(&[]);
    let upstream = Upstream::start();
    let listener = free_port();
    let envoy = EnvoyProcess::start(&bootstrap(
        &http_listener("http", listener, HOST, HTTP_GRPC_LOG, ""),
        upstream.port(),
        telemetry.port(),
    ));
    for i in 0..3 {
        assert_eq!(
            get(listener, "/reviews/1?u=2", &format!("req-logs-{i}")),
            200
        );
    }
    let labels = with(&[
        "destination_service=\"reviews.default.svc.cluster.local\"",
        "response_code=\"200\"",
        "request_protocol=\"http\"",
        "connection_security_policy=\"none\"",
        "response_flags=\"-\"",
    ]);
    let prom = &telemetry.server.prometheus;
    let text = wait_metric(prom, "istio_requests_total", &labels, 3.0);
    assert_eq!(
        metric_value(&text, "istio_requests_total", &labels),
        Some(3.0),
        "{}",
        envoy.log()
    );
    wait_metric(prom, "istio_request_duration_seconds_count", &labels, 3.0);
    let line = telemetry.wait_log_line("req-logs-1");
    assert_eq!(line["url"], "/reviews/1?u=2", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["responseCode"], 200, "{line}");
    assert_eq!(line["destinationWorkload"], "reviews-v1", "{line}");
    assert_eq!(line["destinationServiceHost"], HOST, "{line}");
    let monitoring = scrape(&telemetry.server.monitoring);
    assert_eq!(
        metric_value(&monitoring, "mixer_envoy_accesslog_streams_open", &[]),
        Some(1.0),
        "one worker, one logger: one stream"
    );
    assert!(
        metric_value(
            &monitoring,
            "mixer_envoy_accesslog_entries_total",
            &["protocol=\"http\""]
        )
        .is_some_and(|n| n >= 3.0)
    );
}

/// Writes a CA and two leaf certificates with SPIFFE URI SANs into `dir` (`openssl` CLI).
fn spiffe_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=test-mesh-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca);
    for (name, sa) in [
        ("server", "bookinfo-reviews"),
        ("client", "bookinfo-productpage"),
    ] {
        let ext =
            format!("subjectAltName=URI:spiffe://cluster.local/ns/default/sa/{sa},IP:127.0.0.1\n");
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let mut req = vec!["req", "-subj", "/CN=workload"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(&req);
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ]);
    }
}

#[test]
fn mutual_tls_shows_in_the_connection_security_policy_and_principals() {
    let certs = tempfile::tempdir().unwrap();
    spiffe_certificates(certs.path());
    let file = |n: &str| certs.path().join(n).display().to_string();
    let tls = format!(
        r#"transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{filename: "{}"}}
              private_key: {{filename: "{}"}}
            validation_context:
              trusted_ca: {{filename: "{}"}}"#,
        file("server.pem"),
        file("server.key"),
        file("ca.pem")
    );
    let telemetry = Telemetry::start(&[]);
    let upstream = Upstream::start();
    let listener = free_port();
    let envoy = EnvoyProcess::start(&bootstrap(
        &http_listener("mtls", listener, HOST, HTTP_GRPC_LOG, &tls),
        upstream.port(),
        telemetry.port(),
    ));
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--cacert", &file("ca.pem")])
        .args(["--cert", &file("client.pem"), "--key", &file("client.key")])
        .args(["-H", "x-request-id: req-mtls"])
        .arg(format!("https://127.0.0.1:{listener}/details/0"))
        .output()
        .expect("curl runs (apt-get install curl)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{out:?}\n{}",
        envoy.log()
    );
    let labels = with(&[
        "connection_security_policy=\"mutual_tls\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-reviews\"",
        "destination_service=\"reviews.default.svc.cluster.local\"",
        "response_code=\"200\"",
    ]);
    wait_metric(
        &telemetry.server.prometheus,
        "istio_requests_total",
        &labels,
        1.0,
    );
    let line = telemetry.wait_log_line("req-mtls");
    assert_eq!(line["connection_security_policy"], "mutual_tls", "{line}");
    assert_eq!(
        line["sourcePrincipal"], "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "{line}"
    );
}

/// One HTTP request on a new connection, the response's head, then the connection closed.
fn exchange_and_close(port: u16) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.write_all(b"GET /ratings/0 HTTP/1.1\r\nHost: ratings\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut byte).expect("a response");
        assert_eq!(n, 1, "the connection closed early: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn tcp_entries_feed_istios_tcp_metrics() {
    let telemetry = Telemetry::start(&[]);
    let upstream = Upstream::start();
    let listener = free_port();
    let tcp = format!(
        r#"
  - name: tcp
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listener}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: "inbound|9080|tcp|reviews.default.svc.cluster.local"
          access_log_options: {{flush_access_log_on_connected: true}}
          access_log:
          - name: envoy.access_loggers.tcp_grpc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig
              common_config:
                log_name: mixer-tcp
                transport_api_version: V3
                buffer_flush_interval: 0.05s
                grpc_service: {{envoy_grpc: {{cluster_name: mixer}}}}
"#
    );
    let envoy = EnvoyProcess::start(&bootstrap(&tcp, upstream.port(), telemetry.port()));
    // HTTP through the TCP proxy: one connection, closed after the response (the
    // upstream would keep it open).
    assert!(exchange_and_close(listener).starts_with("HTTP/1.1 200"));
    let labels = with(&["destination_service=\"reviews.default.svc.cluster.local\""]);
    let prom = &telemetry.server.prometheus;
    wait_metric(prom, "istio_tcp_connections_opened_total", &labels, 1.0);
    let text = wait_metric(prom, "istio_tcp_connections_closed_total", &labels, 1.0);
    // The open and close entries' byte counts add up to the connection's totals.
    let received = envoy.stat("tcp.tcp.downstream_cx_rx_bytes_total");
    let sent = envoy.stat("tcp.tcp.downstream_cx_tx_bytes_total");
    assert!(received.is_some_and(|n| n > 0), "{}", envoy.log());
    assert_eq!(
        metric_value(&text, "istio_tcp_received_bytes_total", &labels),
        received.map(|n| n as f64)
    );
    assert_eq!(
        metric_value(&text, "istio_tcp_sent_bytes_total", &labels),
        sent.map(|n| n as f64)
    );
    let monitoring = scrape(&telemetry.server.monitoring);
    assert_eq!(
        metric_value(
            &monitoring,
            "mixer_envoy_accesslog_entries_total",
            &["protocol=\"tcp\""]
        ),
        Some(2.0),
        "one entry when connected, one at the close"
    );
}

#[test]
fn envoy_opentelemetry_logs_feed_the_same_metrics() {
    let telemetry = Telemetry::start(&[]);
    let upstream = Upstream::start();
    let listener = free_port();
    let host = "ratings.default.svc.cluster.local";
    let envoy = EnvoyProcess::start(&bootstrap(
        &http_listener("otel", listener, host, OTLP_LOG, ""),
        upstream.port(),
        telemetry.port(),
    ));
    for i in 0..2 {
        assert_eq!(get(listener, "/ratings/7", &format!("req-otel-{i}")), 200);
    }
    let labels = [
        "reporter=\"destination\"",
        "destination_workload=\"ratings-v1\"",
        "destination_workload_namespace=\"default\"",
        "destination_service=\"ratings.default.svc.cluster.local\"",
        "response_code=\"200\"",
        "request_protocol=\"http\"",
    ];
    let prom = &telemetry.server.prometheus;
    let text = wait_metric(prom, "istio_requests_total", &labels, 2.0);
    assert_eq!(
        metric_value(&text, "istio_requests_total", &labels),
        Some(2.0),
        "{}",
        envoy.log()
    );
    wait_metric(prom, "istio_request_duration_seconds_count", &labels, 2.0);
    let monitoring = scrape(&telemetry.server.monitoring);
    assert_eq!(
        metric_value(
            &monitoring,
            "mixer_envoy_otlp_logs_records_total",
            &["outcome=\"reported\""]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &monitoring,
            "mixer_envoy_logs_attribute_conversion_failures_total",
            &[]
        ),
        None,
        "`-` (no gRPC status) is absent, not a failed conversion"
    );
}

/// A `mixer server` on a given port (a restarted server keeps its address).
struct FixedServer {
    child: Child,
    prometheus: String,
    monitoring: String,
    _dir: tempfile::TempDir,
}

impl FixedServer {
    fn start(port: u16) -> FixedServer {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready.json");
        let mut child = mixer_command()
            .args(["server", "--address", &format!("127.0.0.1:{port}")])
            .args(["--monitoring-address", "127.0.0.1:0"])
            .args(["--prometheus-address", "127.0.0.1:0"])
            .arg("--config-dir")
            .arg(default_samples())
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mixer server starts");
        let ready = wait_for_ready_file(&ready, &mut child, WAIT).expect("the server is ready");
        FixedServer {
            child,
            prometheus: ready.prometheus,
            monitoring: ready.monitoring,
            _dir: dir,
        }
    }
}

impl Drop for FixedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_restarted_server_gets_a_new_stream_with_the_node_identity() {
    let port = free_port();
    let first = FixedServer::start(port);
    let upstream = Upstream::start();
    let listener = free_port();
    let _envoy = EnvoyProcess::start(&bootstrap(
        &http_listener("http", listener, HOST, HTTP_GRPC_LOG, ""),
        upstream.port(),
        port,
    ));
    let labels = with(&["response_code=\"200\""]);
    assert_eq!(get(listener, "/before", "req-before"), 200);
    wait_metric(&first.prometheus, "istio_requests_total", &labels, 1.0);
    drop(first);
    let second = FixedServer::start(port);
    // Entries logged while the stream was broken are dropped by Envoy, so requests go
    // on until one reaches the new server, on a new stream that names the node again.
    wait_for("an entry reported to the restarted server", || {
        assert_eq!(get(listener, "/after", "req-after"), 200);
        std::thread::sleep(Duration::from_millis(200));
        metric_value(&scrape(&second.prometheus), "istio_requests_total", &labels)
    });
    let monitoring = scrape(&second.monitoring);
    assert_eq!(
        metric_value(&monitoring, "mixer_envoy_accesslog_streams_open", &[]),
        Some(1.0)
    );
}

fn text(s: &str) -> epb::Value {
    epb::Value {
        kind: Some(epb::value::Kind::StringValue(s.into())),
    }
}

/// A stream's first message: the node of workload `workload`, and `entries` entries.
fn first_message(workload: &str, entries: usize) -> StreamAccessLogsMessage {
    let mut metadata = epb::Struct::default();
    for (k, v) in [
        ("NAME", "pod-1"),
        ("NAMESPACE", "default"),
        ("WORKLOAD_NAME", workload),
    ] {
        metadata.fields.insert(k.into(), text(v));
    }
    StreamAccessLogsMessage {
        identifier: Some(Identifier {
            node: Some(Node {
                id: "test".into(),
                metadata: Some(metadata),
                ..Default::default()
            }),
            log_name: "test".into(),
        }),
        ..entries_message(entries, "/")
    }
}

/// A message of `n` HTTP entries for `path`, answered 200.
fn entries_message(n: usize, path: &str) -> StreamAccessLogsMessage {
    let entry = HttpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            metadata: Some(Metadata::default()),
            ..Default::default()
        }),
        request: Some(HttpRequestProperties {
            path: path.into(),
            ..Default::default()
        }),
        response: Some(HttpResponseProperties {
            response_code: Some(epb::UInt32Value { value: 200 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    StreamAccessLogsMessage {
        identifier: None,
        log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
            log_entry: vec![entry; n],
        })),
    }
}

async fn channel(server: &ServerProcess) -> Channel {
    Channel::from_shared(server.api_url())
        .unwrap()
        .connect()
        .await
        .expect("connects")
}

/// A client stream fed from a channel, for a test that sends as it goes.
fn open_stream(
    mut client: AccessLogServiceClient<Channel>,
) -> (
    tokio::sync::mpsc::Sender<StreamAccessLogsMessage>,
    tokio::task::JoinHandle<Result<tonic::Response<StreamAccessLogsResponse>, tonic::Status>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let messages =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let call = tokio::spawn(async move { client.stream_access_logs(messages).await });
    (tx, call)
}

/// Sends bytes as they are, for messages no encoder would write.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct ResponseDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = StreamAccessLogsResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = StreamAccessLogsResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<StreamAccessLogsResponse>, tonic::Status> {
        use prost::Message;
        StreamAccessLogsResponse::decode(buf)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

async fn send_raw(channel: Channel, message: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let request = tonic::Request::new(futures::stream::iter(vec![message]));
    let path = ::http::uri::PathAndQuery::from_static(STREAM_PATH);
    grpc.client_streaming(request, path, RawCodec)
        .await
        .expect_err("a malformed message ends the stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_streams_end_alone_while_another_keeps_reporting() {
    let server = ServerProcess::start(
        MIXER,
        &default_samples(),
        &[
            "--max-message-size",
            "65536",
            "--max-access-log-entries",
            "50",
            "--max-access-log-identifier-bytes",
            "1024",
            "--max-access-log-streams",
            "2",
        ],
    );
    let channel = channel(&server).await;
    let client = AccessLogServiceClient::new(channel.clone());
    let (good, good_call) = open_stream(client.clone());
    good.send(first_message("good-v1", 1)).await.unwrap();
    let labels = ["destination_workload=\"good-v1\"", "response_code=\"200\""];
    let prom = server.prometheus.clone();
    let waited = prom.clone();
    tokio::task::spawn_blocking(move || wait_metric(&waited, "istio_requests_total", &labels, 1.0))
        .await
        .unwrap();

    let refused = |result: Result<_, tonic::Status>| result.expect_err("the stream is refused");
    let too_many = refused(
        client
            .clone()
            .stream_access_logs(futures::stream::iter(vec![first_message("bad-v1", 51)]))
            .await,
    );
    assert_eq!(
        too_many.code(),
        tonic::Code::ResourceExhausted,
        "{too_many:?}"
    );
    assert!(
        too_many.message().contains("--max-access-log-entries")
            && too_many.message().contains("message 1"),
        "{too_many:?}"
    );
    let huge = entries_message(1, &"/x".repeat(40_000));
    let oversized = refused(
        client
            .clone()
            .stream_access_logs(futures::stream::iter(vec![huge]))
            .await,
    );
    assert_eq!(
        oversized.code(),
        tonic::Code::ResourceExhausted,
        "{oversized:?}"
    );
    assert!(
        oversized.message().contains("--max-message-size"),
        "{oversized:?}"
    );
    let mut named = first_message("bad-v1", 1);
    named.identifier.as_mut().unwrap().log_name = "n".repeat(2000);
    let big_identifier = refused(
        client
            .clone()
            .stream_access_logs(futures::stream::iter(vec![named]))
            .await,
    );
    assert_eq!(big_identifier.code(), tonic::Code::ResourceExhausted);
    assert!(
        big_identifier
            .message()
            .contains("--max-access-log-identifier-bytes"),
        "{big_identifier:?}"
    );
    // With the good stream and this one open, a third is one too many.
    let (held, held_call) = open_stream(client.clone());
    held.send(first_message("held-v1", 1)).await.unwrap();
    let waited = prom.clone();
    tokio::task::spawn_blocking(move || {
        wait_metric(
            &waited,
            "istio_requests_total",
            &["destination_workload=\"held-v1\""],
            1.0,
        )
    })
    .await
    .unwrap();
    let third = refused(
        client
            .clone()
            .stream_access_logs(futures::stream::iter(vec![first_message("bad-v1", 1)]))
            .await,
    );
    assert_eq!(third.code(), tonic::Code::ResourceExhausted);
    assert!(
        third.message().contains("--max-access-log-streams"),
        "{third:?}"
    );
    drop(held);
    held_call.await.unwrap().expect("the held stream ends well");
    // http_logs (field 2) declared 5 bytes long, 2 present.
    let malformed = send_raw(channel.clone(), vec![0x12, 0x05, 0x0a, 0x03]).await;
    assert_eq!(
        malformed.code(),
        tonic::Code::InvalidArgument,
        "{malformed:?}"
    );
    assert!(
        malformed.message().contains("malformed access-log message"),
        "{malformed:?}"
    );

    good.send(entries_message(1, "/")).await.unwrap();
    drop(good);
    good_call.await.unwrap().expect("the good stream ends well");
    let text = tokio::task::spawn_blocking(move || {
        wait_metric(&prom, "istio_requests_total", &labels, 2.0)
    })
    .await
    .unwrap();
    assert_eq!(
        metric_value(&text, "istio_requests_total", &labels),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "istio_requests_total",
            &["destination_workload=\"bad-v1\""]
        ),
        None,
        "nothing of a refused message is reported"
    );
    let monitoring = scrape(&server.monitoring);
    for reason in [
        "entries",
        "message_size",
        "malformed",
        "identifier_size",
        "streams",
    ] {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            metric_value(
                &monitoring,
                "mixer_envoy_accesslog_rejected_total",
                &[&label]
            ),
            Some(1.0),
            "{reason}"
        );
    }
    assert_eq!(
        metric_value(
            &monitoring,
            "mixer_envoy_accesslog_streams_total",
            &["outcome=\"ok\""]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(&monitoring, "mixer_envoy_accesslog_streams_open", &[]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_outlives_the_read_timeout_and_its_buffer_budget() {
    let server = ServerProcess::start(
        MIXER,
        &default_samples(),
        &[
            "--request-read-timeout",
            "1s",
            "--max-connection-buffered-bytes",
            "65536",
        ],
    );
    let channel = channel(&server).await;
    let client = AccessLogServiceClient::new(channel);
    let (tx, call) = open_stream(client.clone());
    tx.send(first_message("idle-v1", 1)).await.unwrap();
    // Idle for more than the read timeout between two messages.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Then more bytes over the stream's life than the connection may buffer at once.
    for _ in 0..20 {
        tx.send(entries_message(1, &"/y".repeat(5000)))
            .await
            .unwrap();
    }
    drop(tx);
    call.await.unwrap().expect("the stream ends well");
    let monitoring = scrape(&server.monitoring);
    assert_eq!(
        metric_value(
            &monitoring,
            "mixer_envoy_accesslog_entries_total",
            &["protocol=\"http\""]
        ),
        Some(21.0)
    );
    // A stream that never sends its first message is still held to the read timeout.
    let silent = client
        .clone()
        .stream_access_logs(futures::stream::pending::<StreamAccessLogsMessage>())
        .await
        .expect_err("a silent stream is ended");
    assert_eq!(silent.code(), tonic::Code::DeadlineExceeded, "{silent:?}");
    assert!(
        silent.message().contains("--request-read-timeout"),
        "{silent:?}"
    );
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn otlp_request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv("destination.workload.name", "otlp-v1")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_answers_partial_success_and_bounds_records() {
    let server = ServerProcess::start(
        MIXER,
        &default_samples(),
        &[
            "--max-attributes-per-set",
            "6",
            "--max-otlp-log-records",
            "10",
        ],
    );
    let mut client = LogsServiceClient::new(channel(&server).await);
    let record = |extra: usize| LogRecord {
        attributes: [
            kv("context.protocol", "http"),
            kv("response.code", "201"),
            kv("response.size", "not a number"),
        ]
        .into_iter()
        .chain((0..extra).map(|i| kv(&format!("x-{i}"), "y")))
        .collect(),
        ..Default::default()
    };
    let answer = client
        .export(otlp_request(vec![record(0), record(3), record(0)]))
        .await
        .expect("the export is answered")
        .into_inner();
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_log_records, 1, "{partial:?}");
    assert!(
        partial.error_message.contains("log_records[1]")
            && partial.error_message.contains("--max-attributes-per-set"),
        "{partial:?}"
    );
    let labels = ["destination_workload=\"otlp-v1\"", "response_code=\"201\""];
    let prom = server.prometheus.clone();
    let text = tokio::task::spawn_blocking(move || {
        wait_metric(&prom, "istio_requests_total", &labels, 2.0)
    })
    .await
    .unwrap();
    assert_eq!(
        metric_value(&text, "istio_requests_total", &labels),
        Some(2.0)
    );
    let too_many = client
        .export(otlp_request(vec![record(0); 11]))
        .await
        .expect_err("over the record limit");
    assert_eq!(too_many.code(), tonic::Code::ResourceExhausted);
    assert!(
        too_many.message().contains("--max-otlp-log-records"),
        "{too_many:?}"
    );
    let monitoring = scrape(&server.monitoring);
    assert_eq!(
        metric_value(
            &monitoring,
            "mixer_envoy_logs_attribute_conversion_failures_total",
            &["api=\"otlp_logs\""]
        ),
        Some(2.0),
        "response.size did not convert, in each reported record"
    );
    assert_eq!(
        metric_value(
            &monitoring,
            "mixer_envoy_otlp_logs_requests_total",
            &["outcome=\"partial\""]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_log_messages_and_exports() {
    // A burst of 5 entries, then 1 per second: a second batch of 5 right after the
    // first cannot pass for seconds.
    let server = ServerProcess::start(
        MIXER,
        &default_samples(),
        &[
            "--load-shedding-mode",
            "enforce",
            "--max-requests-per-second",
            "1",
            "--burst-size",
            "5",
        ],
    );
    let channel = channel(&server).await;
    let shed = AccessLogServiceClient::new(channel.clone())
        .stream_access_logs(futures::stream::iter(vec![
            first_message("shed-v1", 5),
            entries_message(5, "/"),
        ]))
        .await
        .expect_err("the second message is shed");
    assert_eq!(shed.code(), tonic::Code::Unavailable, "{shed:?}");
    assert!(
        shed.message()
            .contains("message 2: Server is currently overloaded"),
        "{shed:?}"
    );
    let export = LogsServiceClient::new(channel)
        .export(otlp_request(vec![LogRecord::default(); 5]))
        .await
        .expect_err("shed");
    assert_eq!(export.code(), tonic::Code::Unavailable, "{export:?}");
    let monitoring = scrape(&server.monitoring);
    let value = |name, labels: &[&str]| metric_value(&monitoring, name, labels);
    assert_eq!(
        value(
            "mixer_envoy_accesslog_entries_total",
            &["protocol=\"http\""]
        ),
        Some(5.0),
        "the first message was reported"
    );
    assert_eq!(
        value(
            "mixer_envoy_accesslog_rejected_total",
            &["reason=\"overloaded\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        value("mixer_loadshedding_requests_total", &["api=\"accesslog\""]),
        Some(5.0)
    );
    assert_eq!(
        value("mixer_loadshedding_requests_total", &["api=\"otlp_logs\""]),
        Some(5.0)
    );
    assert_eq!(
        value(
            "mixer_envoy_otlp_logs_requests_total",
            &["outcome=\"error\""]
        ),
        Some(1.0)
    );
}
