//! Handler behaviour end to end: real Istio instances compiled against the Istio
//! vocabulary, evaluated on a bag, written to a file and read back.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use expr_lang::golib::time::parse_rfc3339;
use expr_lang::{FunctionTable, Manifest, MapBag, NoRecording, StringMapRef, Value};
use serde_json::{Map, Value as Json, json};
use templates::{Handler, InstanceBuilder, TemplateKind};

use super::writer::testing::CaptureSink;
use super::*;

// === Istio 1.4.10 demo chart instances (install/kubernetes/helm/istio/charts/mixer/
// templates/config.yaml rendered with the demo values), params copied verbatim ===

const ACCESSLOG_VARIABLES: &[(&str, &str)] = &[
    ("sourceIp", "source.ip | ip(\"0.0.0.0\")"),
    ("sourceApp", "source.labels[\"app\"] | \"\""),
    ("sourcePrincipal", "source.principal | \"\""),
    ("sourceName", "source.name | \"\""),
    ("sourceWorkload", "source.workload.name | \"\""),
    ("sourceNamespace", "source.namespace | \"\""),
    ("sourceOwner", "source.owner | \"\""),
    ("destinationApp", "destination.labels[\"app\"] | \"\""),
    ("destinationIp", "destination.ip | ip(\"0.0.0.0\")"),
    (
        "destinationServiceHost",
        "destination.service.host | request.host | \"\"",
    ),
    ("destinationWorkload", "destination.workload.name | \"\""),
    ("destinationName", "destination.name | \"\""),
    ("destinationNamespace", "destination.namespace | \"\""),
    ("destinationOwner", "destination.owner | \"\""),
    ("destinationPrincipal", "destination.principal | \"\""),
    ("apiClaims", "request.auth.raw_claims | \"\""),
    (
        "apiKey",
        "request.api_key | request.headers[\"x-api-key\"] | \"\"",
    ),
    ("protocol", "request.scheme | context.protocol | \"http\""),
    ("method", "request.method | \"\""),
    ("url", "request.path | \"\""),
    ("responseCode", "response.code | 0"),
    ("responseFlags", "context.proxy_error_code | \"\""),
    ("responseSize", "response.size | 0"),
    (
        "permissiveResponseCode",
        "rbac.permissive.response_code | \"none\"",
    ),
    (
        "permissiveResponsePolicyID",
        "rbac.permissive.effective_policy_id | \"none\"",
    ),
    ("requestSize", "request.size | 0"),
    ("requestId", "request.headers[\"x-request-id\"] | \"\""),
    (
        "clientTraceId",
        "request.headers[\"x-client-trace-id\"] | \"\"",
    ),
    ("latency", "response.duration | \"0ms\""),
    (
        "connection_security_policy",
        "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"unknown\", conditional(connection.mtls | false, \"mutual_tls\", \"none\"))",
    ),
    (
        "requestedServerName",
        "connection.requested_server_name | \"\"",
    ),
    ("userAgent", "request.useragent | \"\""),
    ("responseTimestamp", "response.time"),
    ("receivedBytes", "request.total_size | 0"),
    ("sentBytes", "response.total_size | 0"),
    ("referer", "request.referer | \"\""),
    (
        "httpAuthority",
        "request.headers[\":authority\"] | request.host | \"\"",
    ),
    (
        "xForwardedFor",
        "request.headers[\"x-forwarded-for\"] | \"0.0.0.0\"",
    ),
    (
        "reporter",
        "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"source\", \"destination\")",
    ),
    ("grpcStatus", "response.grpc_status | \"\""),
    ("grpcMessage", "response.grpc_message | \"\""),
];

fn accesslog_params() -> Json {
    json!({
        "severity": "\"Info\"",
        "timestamp": "request.time",
        "variables": vars(ACCESSLOG_VARIABLES),
        "monitored_resource_type": "\"global\""
    })
}

const TCPACCESSLOG_VARIABLES: &[(&str, &str)] = &[
    ("connectionEvent", "connection.event | \"\""),
    ("sourceIp", "source.ip | ip(\"0.0.0.0\")"),
    ("sourceApp", "source.labels[\"app\"] | \"\""),
    ("sourcePrincipal", "source.principal | \"\""),
    ("sourceName", "source.name | \"\""),
    ("sourceWorkload", "source.workload.name | \"\""),
    ("sourceNamespace", "source.namespace | \"\""),
    ("sourceOwner", "source.owner | \"\""),
    ("destinationApp", "destination.labels[\"app\"] | \"\""),
    ("destinationIp", "destination.ip | ip(\"0.0.0.0\")"),
    ("destinationServiceHost", "destination.service.host | \"\""),
    ("destinationWorkload", "destination.workload.name | \"\""),
    ("destinationName", "destination.name | \"\""),
    ("destinationNamespace", "destination.namespace | \"\""),
    ("destinationOwner", "destination.owner | \"\""),
    ("destinationPrincipal", "destination.principal | \"\""),
    ("protocol", "context.protocol | \"tcp\""),
    ("connectionDuration", "connection.duration | \"0ms\""),
    (
        "connection_security_policy",
        "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"unknown\", conditional(connection.mtls | false, \"mutual_tls\", \"none\"))",
    ),
    (
        "requestedServerName",
        "connection.requested_server_name | \"\"",
    ),
    ("receivedBytes", "connection.received.bytes | 0"),
    ("sentBytes", "connection.sent.bytes | 0"),
    ("totalReceivedBytes", "connection.received.bytes_total | 0"),
    ("totalSentBytes", "connection.sent.bytes_total | 0"),
    (
        "reporter",
        "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"source\", \"destination\")",
    ),
    ("responseFlags", "context.proxy_error_code | \"\""),
];

fn tcpaccesslog_params() -> Json {
    json!({
        "severity": "\"Info\"",
        "timestamp": "context.time | timestamp(\"2017-01-01T00:00:00Z\")",
        "variables": vars(TCPACCESSLOG_VARIABLES),
        "monitored_resource_type": "\"global\""
    })
}

// === helpers ===

/// A `variables` map from `(name, expression)` pairs, in the given order.
fn vars(pairs: &[(&str, &str)]) -> Json {
    Json::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect(),
    )
}

fn compile(name: &str, kind: TemplateKind, params: &Json) -> InstanceBuilder {
    InstanceBuilder::compile(
        name,
        kind,
        params,
        None,
        &Manifest::istio_vocabulary(),
        &FunctionTable::standard(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e:#?}"))
}

fn accesslog() -> InstanceBuilder {
    compile(
        "accesslog.instance.istio-system",
        TemplateKind::LogEntry,
        &accesslog_params(),
    )
}

fn build(params: Json, instances: &[&InstanceBuilder], env: &Env) -> Arc<dyn Handler> {
    let validated = ADAPTER
        .validate(&ValidateInput {
            handler: &env.handler,
            params: &params,
            instances,
        })
        .config
        .unwrap_or_else(|e| panic!("{e:#?}"));
    ADAPTER
        .build(validated, env)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A handler writing to `<tempdir>/out.log` with `params` plus the file settings.
fn file_handler(mut params: Json, instances: &[&InstanceBuilder]) -> (Arc<dyn Handler>, TempOut) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.log");
    params["logStream"] = json!("FILE");
    params["outputPath"] = json!(path.to_str().unwrap());
    let h = build(params, instances, &Env::standalone("stdio.istio-system"));
    (h, TempOut { _dir: dir, path })
}

struct TempOut {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn object(text: &str) -> Map<String, Json> {
    match serde_json::from_str(text) {
        Ok(Json::Object(m)) => m,
        other => panic!("not a JSON object: {text:?}: {other:?}"),
    }
}

fn ts(s: &str) -> Value<'static> {
    Value::Timestamp(parse_rfc3339(s).unwrap())
}

fn string_map(entries: &[(&str, &str)]) -> Value<'static> {
    let m: BTreeMap<String, String> = entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Value::StringMap(StringMapRef::Owned(Arc::new(m)))
}

fn ipv4_mapped(a: [u8; 4]) -> Value<'static> {
    let mut b = vec![0u8; 10];
    b.extend([0xff, 0xff]);
    b.extend(a);
    Value::IpAddress(Cow::Owned(b))
}

/// An inbound HTTP request as the proxy would report it.
fn request_bag() -> MapBag {
    MapBag::new()
        .with("request.time", ts("2020-05-01T10:20:30.123456789Z"))
        .with("response.time", ts("2020-05-01T12:20:30.137056999+02:00"))
        .with("response.duration", Value::Duration(13_600_000))
        .with("source.ip", Value::IpAddress(Cow::Owned(vec![10, 1, 2, 3])))
        .with("destination.ip", ipv4_mapped([10, 4, 5, 6]))
        .with("source.labels", string_map(&[("app", "productpage")]))
        .with("destination.labels", string_map(&[("app", "reviews")]))
        .with(
            "source.principal",
            Value::str("cluster.local/ns/default/sa/bookinfo-productpage"),
        )
        .with("source.workload.name", Value::str("productpage-v1"))
        .with("source.namespace", Value::str("default"))
        .with(
            "destination.service.host",
            Value::str("reviews.default.svc.cluster.local"),
        )
        .with("destination.workload.name", Value::str("reviews-v2"))
        .with("destination.namespace", Value::str("default"))
        .with(
            "request.headers",
            string_map(&[
                ("x-request-id", "abc-123"),
                (":authority", "reviews:9080"),
                ("x-forwarded-for", "10.0.0.9"),
            ]),
        )
        .with("request.scheme", Value::str("http"))
        .with("request.method", Value::str("GET"))
        .with("request.path", Value::str("/reviews/0?a=<b>&c=d"))
        .with("response.code", Value::Int64(200))
        .with("response.size", Value::Int64(295))
        .with("request.size", Value::Int64(0))
        .with("request.total_size", Value::Int64(1024))
        .with("response.total_size", Value::Int64(512))
        .with("request.useragent", Value::str("curl/7.58 \"q\"\ttab"))
        .with("context.reporter.kind", Value::str("inbound"))
        .with("connection.mtls", Value::Bool(true))
        .with("context.protocol", Value::str("http"))
}

/// What `request_bag` makes of the accesslog variables.
fn expected_accesslog_variables() -> Map<String, Json> {
    let m = json!({
        "apiClaims": "",
        "apiKey": "",
        "clientTraceId": "",
        "connection_security_policy": "mutual_tls",
        "destinationApp": "reviews",
        "destinationIp": "10.4.5.6",
        "destinationName": "",
        "destinationNamespace": "default",
        "destinationOwner": "",
        "destinationPrincipal": "",
        "destinationServiceHost": "reviews.default.svc.cluster.local",
        "destinationWorkload": "reviews-v2",
        "grpcMessage": "",
        "grpcStatus": "",
        "httpAuthority": "reviews:9080",
        "latency": "13.6ms",
        "method": "GET",
        "permissiveResponseCode": "none",
        "permissiveResponsePolicyID": "none",
        "protocol": "http",
        "receivedBytes": 1024,
        "referer": "",
        "reporter": "destination",
        "requestId": "abc-123",
        "requestSize": 0,
        "requestedServerName": "",
        "responseCode": 200,
        "responseFlags": "",
        "responseSize": 295,
        "responseTimestamp": "2020-05-01T10:20:30.137056Z",
        "sentBytes": 512,
        "sourceApp": "productpage",
        "sourceIp": "10.1.2.3",
        "sourceName": "",
        "sourceNamespace": "default",
        "sourceOwner": "",
        "sourcePrincipal": "cluster.local/ns/default/sa/bookinfo-productpage",
        "sourceWorkload": "productpage-v1",
        "url": "/reviews/0?a=<b>&c=d",
        "userAgent": "curl/7.58 \"q\"\ttab",
        "xForwardedFor": "10.0.0.9"
    });
    m.as_object().cloned().unwrap_or_default()
}

/// Keys sorted by byte value, as Go's `sort.Strings`.
fn byte_sorted<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = keys.cloned().collect();
    v.sort();
    v
}

fn log_one(h: &dyn Handler, b: &InstanceBuilder, bag: &MapBag) {
    let inst = b.logentry(bag, &mut NoRecording).unwrap();
    h.log_entry().unwrap().handle_log_entry(&[inst]).unwrap();
}

// === line formats ===

#[test]
fn accesslog_json_line() {
    let b = accesslog();
    let (h, out) = file_handler(json!({"outputAsJson": true}), &[&b]);
    log_one(&*h, &b, &request_bag());
    h.close();

    let lines = read_lines(&out.path);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    let got = object(line);
    let keys: Vec<&String> = got.keys().collect();
    assert_eq!(keys[..3], ["level", "time", "instance"]);
    assert_eq!(got["level"], "info", "\"Info\" is not in the default map");
    assert_eq!(got["time"], "2020-05-01T10:20:30.123456Z");
    assert_eq!(got["instance"], "accesslog.instance.istio-system");

    let expected = expected_accesslog_variables();
    let var_keys: Vec<String> = keys[3..].iter().map(|k| (*k).clone()).collect();
    assert_eq!(var_keys, byte_sorted(expected.keys()));
    for (k, want) in &expected {
        assert_eq!(&got[k], want, "variable {k}");
    }
    // zap's escaping, as text: quotes and tabs backslashed, no HTML escaping.
    assert!(
        line.contains(r#""url":"/reviews/0?a=<b>&c=d","userAgent":"curl/7.58 \"q\"\ttab""#),
        "{line}"
    );
    assert!(line.starts_with(
        r#"{"level":"info","time":"2020-05-01T10:20:30.123456Z","instance":"accesslog.instance.istio-system","apiClaims":"","apiKey":"","#
    ));
    assert!(line.ends_with(r#""xForwardedFor":"10.0.0.9"}"#), "{line}");
}

#[test]
fn accesslog_console_line() {
    let b = accesslog();
    let (h, out) = file_handler(json!({"outputAsJson": false}), &[&b]);
    log_one(&*h, &b, &request_bag());
    h.close();

    let lines = read_lines(&out.path);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let parts: Vec<&str> = lines[0].splitn(4, '\t').collect();
    assert_eq!(
        parts[..3],
        [
            "2020-05-01T10:20:30.123456Z",
            "info",
            "accesslog.instance.istio-system"
        ]
    );
    let fields = parts[3];
    assert!(
        fields.starts_with(r#"{"apiClaims": "", "apiKey": "", "clientTraceId": "", "connection_security_policy": "mutual_tls", "#),
        "{fields}"
    );
    assert!(
        fields.contains(r#""latency": "13.6ms", "method": "GET""#),
        "{fields}"
    );
    assert!(
        fields.ends_with(r#""userAgent": "curl/7.58 \"q\"\ttab", "xForwardedFor": "10.0.0.9"}"#),
        "{fields}"
    );
    // The field object is JSON with spaced separators: same keys, order and values.
    let got = object(fields);
    let expected = expected_accesslog_variables();
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        byte_sorted(expected.keys())
    );
    assert_eq!(got, expected);
}

#[test]
fn tcpaccesslog_defaults() {
    let b = compile(
        "tcpaccesslog.instance.istio-system",
        TemplateKind::LogEntry,
        &tcpaccesslog_params(),
    );
    let (h, out) = file_handler(json!({}), &[&b]);
    let bag = MapBag::new()
        .with("context.protocol", Value::str("tcp"))
        .with("context.reporter.kind", Value::str("outbound"))
        .with("connection.duration", Value::Duration(1_500_000_000))
        .with("connection.received.bytes", Value::Int64(191))
        .with("connection.event", Value::str("close"));
    log_one(&*h, &b, &bag);
    h.close();

    let lines = read_lines(&out.path);
    assert_eq!(lines.len(), 1);
    let got = object(&lines[0]);
    // Defaults to JSON; the timestamp falls back to the literal in the instance.
    assert_eq!(got["time"], "2017-01-01T00:00:00.000000Z");
    assert_eq!(got["instance"], "tcpaccesslog.instance.istio-system");
    assert_eq!(got["connectionDuration"], "1.5s");
    assert_eq!(got["connectionEvent"], "close");
    assert_eq!(got["connection_security_policy"], "unknown");
    assert_eq!(got["reporter"], "source");
    assert_eq!(got["protocol"], "tcp");
    // ip("0.0.0.0") is the 16-byte form; printed as the IPv4 text.
    assert_eq!(got["sourceIp"], "0.0.0.0");
    assert_eq!(got["receivedBytes"], 191);
    assert_eq!(got["totalSentBytes"], 0);
    assert_eq!(got.len(), 3 + 26);
}

#[test]
fn variables_sort_by_byte_value_and_unset_timestamp_is_zero_time() {
    let b = compile(
        "vars.instance.ns",
        TemplateKind::LogEntry,
        &json!({
            "severity": "\"warning\"",
            "variables": {
                "b": "1", "B": "2", "a_": "3", "_a": "4", "A": "5", "a": "6",
                "headers": "request.headers",
                "rate": "0.25",
                "when": "timestamp(\"2017-08-21T10:04:00Z\")",
                "ok": "true",
                "mail": "email(\"a@b.c\")"
            }
        }),
    );
    let (h, out) = file_handler(json!({}), &[&b]);
    let bag = MapBag::new().with(
        "request.headers",
        string_map(&[("x", "1"), ("accept", "*/*")]),
    );
    log_one(&*h, &b, &bag);
    h.close();
    let lines = read_lines(&out.path);
    assert_eq!(
        lines,
        [concat!(
            r#"{"level":"warn","time":"0001-01-01T00:00:00.000000Z","instance":"vars.instance.ns","#,
            r#""A":5,"B":2,"_a":4,"a":6,"a_":3,"b":1,"headers":"stringmap[accept:*/* x:1]","#,
            r#""mail":"a@b.c","ok":true,"rate":0.25,"when":"2017-08-21T10:04:00.000000Z"}"#
        )]
    );
}

// === levels ===

/// One logentry instance per severity text, named after it.
fn severity_instances(severities: &[&str]) -> Vec<InstanceBuilder> {
    severities
        .iter()
        .map(|s| {
            compile(
                &format!("{s}.instance.ns"),
                TemplateKind::LogEntry,
                &json!({"severity": format!("\"{s}\""), "variables": {"n": "1"}}),
            )
        })
        .collect()
}

/// `(instance, level)` of every line written.
fn levels(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            let o = object(l);
            (
                o["instance"]
                    .as_str()
                    .unwrap()
                    .trim_end_matches(".instance.ns")
                    .to_owned(),
                o["level"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn log_all(h: &dyn Handler, builders: &[InstanceBuilder]) {
    let bag = MapBag::new();
    let instances: Vec<_> = builders
        .iter()
        .map(|b| b.logentry(&bag, &mut NoRecording).unwrap())
        .collect();
    h.log_entry().unwrap().handle_log_entry(&instances).unwrap();
}

#[test]
fn severity_mapping_and_output_level() {
    let sev = [
        "Info",
        "INFORMATIONAL",
        "warning",
        "WARN",
        "ERR",
        "fatal",
        "bogus",
        "Error",
    ];
    let builders = severity_instances(&sev);
    let refs: Vec<&InstanceBuilder> = builders.iter().collect();

    // Default map, everything written.
    let (h, out) = file_handler(json!({}), &refs);
    log_all(&*h, &builders);
    h.close();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    assert_eq!(
        levels(&read_lines(&out.path)),
        pairs(&[
            ("Info", "info"),
            ("INFORMATIONAL", "info"),
            ("warning", "warn"),
            ("WARN", "warn"),
            ("ERR", "error"),
            ("fatal", "error"),
            ("bogus", "info"),
            // The lookup is case-sensitive.
            ("Error", "info"),
        ])
    );

    // Lines below WARNING are not written.
    let (h, out) = file_handler(json!({"outputLevel": "WARNING"}), &refs);
    log_all(&*h, &builders);
    h.close();
    assert_eq!(
        levels(&read_lines(&out.path)),
        pairs(&[
            ("warning", "warn"),
            ("WARN", "warn"),
            ("ERR", "error"),
            ("fatal", "error")
        ])
    );

    // A given map replaces the default one entirely.
    let (h, out) = file_handler(
        json!({"severityLevels": {"bogus": "ERROR", "Info": "WARNING"}, "outputLevel": "ERROR"}),
        &refs,
    );
    log_all(&*h, &builders);
    h.close();
    assert_eq!(levels(&read_lines(&out.path)), pairs(&[("bogus", "error")]));
}

fn requestcount() -> InstanceBuilder {
    compile(
        "requestcount.instance.istio-system",
        TemplateKind::Metric,
        &json!({
            "value": "1",
            "dimensions": {
                "reporter": "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"source\", \"destination\")",
                "source_ip": "source.ip | ip(\"0.0.0.0\")",
                "response_code": "response.code | 200",
                "latency": "response.duration | \"0ms\"",
                "Upper": "\"U\""
            },
            "monitored_resource_type": "\"UNSPECIFIED\""
        }),
    )
}

fn parse_time(o: &Map<String, Json>) -> i128 {
    parse_rfc3339(o["time"].as_str().unwrap())
        .unwrap()
        .to_unix_nanos()
}

#[test]
fn metrics_are_written_at_metric_level_with_the_current_time() {
    let count = requestcount();
    let unset = compile(
        "novalue.instance.ns",
        TemplateKind::Metric,
        &json!({"dimensions": {"d": "2.5"}}),
    );
    let (h, out) = file_handler(
        json!({"metricLevel": "WARNING", "outputLevel": "WARNING"}),
        &[&count, &unset],
    );
    let bag = request_bag();
    let before = now().to_unix_nanos() / 1000 * 1000;
    let instances = [
        count.metric(&bag, &mut NoRecording).unwrap(),
        unset.metric(&bag, &mut NoRecording).unwrap(),
    ];
    h.metric().unwrap().handle_metric(&instances).unwrap();
    let after = now().to_unix_nanos();
    h.close();

    let lines = read_lines(&out.path);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let m = object(&lines[0]);
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        [
            "level",
            "time",
            "instance",
            "value",
            "Upper",
            "latency",
            "reporter",
            "response_code",
            "source_ip"
        ]
    );
    assert_eq!(m["level"], "warn");
    assert_eq!(m["instance"], "requestcount.instance.istio-system");
    assert_eq!(m["value"], 1);
    assert_eq!(m["Upper"], "U");
    assert_eq!(m["latency"], "13.6ms");
    assert_eq!(m["reporter"], "destination");
    assert_eq!(m["response_code"], 200);
    // Mixer wrote metric IPs as the raw bytes, base64 encoded.
    assert_eq!(m["source_ip"], "CgECAw==");
    // The wall clock when handled (not the request's time), in Mixer's format.
    let t = parse_time(&m);
    assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
    let text = m["time"].as_str().unwrap();
    assert_eq!((text.len(), &text[19..20], &text[26..]), (27, ".", "Z"));

    assert_eq!(
        lines[1],
        format!(
            r#"{{"level":"warn","time":"{}","instance":"novalue.instance.ns","value":null,"d":2.5}}"#,
            object(&lines[1])["time"].as_str().unwrap()
        )
    );
}

#[test]
fn metrics_below_output_level_are_not_written() {
    let count = requestcount();
    let log = severity_instances(&["ERROR"]);
    let (h, out) = file_handler(
        json!({"metricLevel": "INFO", "outputLevel": "WARNING", "outputAsJson": false}),
        &[&count, &log[0]],
    );
    let bag = request_bag();
    let inst = count.metric(&bag, &mut NoRecording).unwrap();
    h.metric().unwrap().handle_metric(&[inst]).unwrap();
    log_all(&*h, &log);
    h.close();
    let lines = read_lines(&out.path);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(
        lines[0],
        "0001-01-01T00:00:00.000000Z\terror\tERROR.instance.ns\t{\"n\": 1}"
    );
}

// === queueing ===

fn dropped_in(env: &Env) -> Option<u64> {
    env.resources
        .metrics
        .gather()
        .iter()
        .filter(|f| f.name() == DROPPED_METRIC)
        .flat_map(|f| f.get_metric())
        .find(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "handler" && l.value() == env.handler)
        })
        .map(|m| m.get_counter().value() as u64)
}

#[test]
fn full_queue_drops_counts_and_never_blocks() {
    let b = severity_instances(&["info"]);
    let env = Env::standalone("stdio-drop-test.istio-system");
    let config = config::validate(&ValidateInput {
        handler: &env.handler,
        params: &json!({}),
        instances: &[],
    })
    .unwrap();

    // The writer takes the first line and then stalls inside the sink; the queue holds 2.
    let (entered_tx, entered_rx) = mpsc::channel();
    let (open_tx, open_rx) = mpsc::channel();
    let sink = CaptureSink::gated(entered_tx, open_rx);
    let lines = sink.lines.clone();
    let h =
        StdioHandler::with_sink(config, &env.handler, Box::new(sink), 2, dropped(&env)).unwrap();
    log_all(&h, &b);
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("writer reached the sink");

    // Five more entries in one batch: two fit, three are dropped, and the call returns
    // while the writer is still stalled.
    let many: Vec<InstanceBuilder> = (0..5).flat_map(|_| severity_instances(&["info"])).collect();
    log_all(&h, &many);
    assert_eq!(dropped_in(&env), Some(3));

    open_tx.send(()).unwrap();
    h.close();
    let written = lines.lock().unwrap_or_else(PoisonError::into_inner).len();
    assert_eq!(written, 3);

    // After close, lines are refused and counted too.
    log_all(&h, &b);
    assert_eq!(dropped_in(&env), Some(4));
}

#[test]
fn a_file_on_a_full_disk_counts_every_lost_line() {
    let env = Env::standalone("stdio-full-disk.istio-system");
    let h = build(
        json!({"logStream": "FILE", "outputPath": "/dev/full", "outputAsJson": true}),
        &[],
        &env,
    );
    let many: Vec<InstanceBuilder> = (0..500)
        .flat_map(|_| severity_instances(&["info"]))
        .collect();
    log_all(&*h, &many);
    // Counted without closing: the periodic flush fails too (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    while dropped_in(&env) != Some(500) {
        assert!(Instant::now() < deadline, "{:?} counted", dropped_in(&env));
        std::thread::sleep(Duration::from_millis(10));
    }
    // The writer is still there: later lines are taken and counted as they fail.
    log_all(&*h, &many[..10]);
    h.close();
    assert_eq!(dropped_in(&env), Some(510));
}

#[test]
fn drop_counter_survives_rebuilds() {
    let env = Env::standalone("stdio-reload.istio-system");
    let dir = tempfile::tempdir().unwrap();
    let params =
        json!({"logStream": "FILE", "outputPath": dir.path().join("x.log").to_str().unwrap()});
    let first = build(params.clone(), &[], &env);
    first.close();
    // A rebuilt handler registers the same counter again without error.
    let second = build(params, &[], &env);
    let b = severity_instances(&["info"]);
    second.close();
    log_all(&*first, &b);
    log_all(&*second, &b);
    assert_eq!(dropped_in(&env), Some(2));
    let families = env.resources.metrics.gather();
    assert_eq!(
        families
            .iter()
            .filter(|f| f.name() == DROPPED_METRIC)
            .count(),
        1
    );
}

#[test]
fn close_flushes_everything() {
    let b = accesslog();
    let (h, out) = file_handler(json!({}), &[&b]);
    let base = request_bag();
    for i in 0..2000 {
        let bag = base.clone().with("request.size", Value::Int64(i));
        log_one(&*h, &b, &bag);
    }
    h.close();
    let lines = read_lines(&out.path);
    assert_eq!(lines.len(), 2000);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(object(l)["requestSize"], i, "line {i}");
    }
    // Closing again is harmless.
    h.close();
}

#[test]
fn lines_reach_the_file_without_close() {
    let b = accesslog();
    let (h, out) = file_handler(json!({}), &[&b]);
    log_one(&*h, &b, &request_bag());
    // Bounded wait for the periodic flush; how quickly it comes is not asserted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&out.path).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "nothing flushed within 10s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(read_lines(&out.path).len(), 1);
    h.close();
}

// === rotation ===

#[test]
fn rotated_file_by_size_keeps_max_rotated_files() {
    let b = accesslog();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/access.log");
    let h = build(
        json!({
            "logStream": "ROTATED_FILE",
            "outputPath": path.to_str().unwrap(),
            "maxMegabytesBeforeRotation": 1,
            "maxRotatedFiles": 2
        }),
        &[&b],
        &Env::standalone("stdio.istio-system"),
    );
    // About 1 KB a line: more than three files' worth.
    let total = 3500;
    let base = request_bag();
    for i in 0..total {
        let bag = base.clone().with("request.size", Value::Int64(i));
        log_one(&*h, &b, &bag);
    }
    h.close();

    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    assert!(numbered(1).exists() && numbered(2).exists());
    assert!(!numbered(3).exists(), "only two rotated files are kept");
    // Oldest first: every line whole, numbers consecutive up to the last one written.
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    for p in [numbered(2), numbered(1), path.clone()] {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len <= 1024 * 1024, "{} has {len} bytes", p.display());
        sizes.push(len);
        for l in read_lines(&p) {
            seen.push(object(&l)["requestSize"].as_i64().unwrap());
        }
    }
    assert!(sizes[0] > 900 * 1024 && sizes[1] > 900 * 1024, "{sizes:?}");
    assert!(seen.len() < total as usize, "the oldest file was deleted");
    let first = seen[0];
    assert!(first > 0);
    assert_eq!(seen, (first..total).collect::<Vec<_>>());
}

// === adapter ===

#[test]
fn adapter_is_in_the_inventory() {
    let a = crate::find("stdio").expect("stdio adapter listed");
    assert_eq!(
        a.templates(),
        [TemplateKind::LogEntry, TemplateKind::Metric]
    );
    assert_eq!(a.unavailable(), None);
}

#[test]
fn streams_build_and_bad_files_fail() {
    let env = Env::standalone("stdio.istio-system");
    for params in [json!({}), json!({"logStream": "STDERR"})] {
        let h = build(params, &[], &env);
        h.close();
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/out.log");
    let validated = ADAPTER
        .validate(&ValidateInput {
            handler: "stdio.istio-system",
            params: &json!({"logStream": "FILE", "outputPath": missing.to_str().unwrap()}),
            instances: &[],
        })
        .config
        .unwrap();
    let e = match ADAPTER.build(validated, &env) {
        Ok(_) => panic!("a file in a missing directory cannot be opened"),
        Err(e) => e,
    };
    assert!(matches!(e, BuildError::Io { .. }), "{e}");
    let message = e.to_string();
    assert!(
        message.starts_with("stdio: cannot open ") && message.contains("out.log"),
        "{e}"
    );
    // Invalid params are reported by validation, with the field path.
    let errs = match ADAPTER
        .validate(&ValidateInput {
            handler: "stdio.istio-system",
            params: &json!({"logStream": "FILE"}),
            instances: &[],
        })
        .config
    {
        Ok(_) => panic!("FILE without a path is invalid"),
        Err(e) => e,
    };
    assert_eq!(errs[0].field, "params.outputPath");
}
