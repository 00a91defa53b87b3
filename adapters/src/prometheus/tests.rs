//! Tests of the prometheus adapter: handlers built from params (Istio's real ones where it
//! matters), fed instances, and judged by the exposition text.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ::prometheus::{Encoder, Registry, TextEncoder};
use expr_lang::{FunctionTable, Manifest, MapBag, NoRecording, StringMapRef, Value};
use serde_json::{Value as Json, json};
use templates::instances::{Dims, metric};
use templates::{Handler, InstanceBuilder, TemplateKind};

use super::exporter::{
    EXPOSITIONS_TRUNCATED_METRIC, LABELS_TRUNCATED_METRIC, ManualClock, SERIES_DROPPED_METRIC,
};
use super::testdata;
use super::*;
use crate::{Resources, ValidateInput};

const HANDLER: &str = "prometheus.istio-system";

/// An environment whose exporter runs on `clock`, with its own self-metrics registry.
fn env_with(clock: Arc<ManualClock>, handler: &str) -> Env {
    Env {
        handler: handler.to_owned(),
        resources: Arc::new(Resources {
            prometheus: Arc::new(Exporter::with_clock(clock)),
            metrics: Registry::new(),
            runtime: None,
            kubernetesenv: Default::default(),
        }),
    }
}

fn env() -> (Env, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (env_with(clock.clone(), HANDLER), clock)
}

/// The same resources under another handler name.
fn renamed(env: &Env, handler: &str) -> Env {
    Env {
        handler: handler.to_owned(),
        resources: env.resources.clone(),
    }
}

/// Validates and builds through the adapter interface, as the runtime does.
fn try_build(
    env: &Env,
    params: &Json,
    instances: &[&InstanceBuilder],
) -> Result<Arc<dyn Handler>, BuildError> {
    let validated = ADAPTER
        .validate(&ValidateInput {
            handler: &env.handler,
            params,
            instances,
        })
        .config
        .unwrap_or_else(|e| panic!("{e:#?}"));
    ADAPTER.build(validated, env)
}

fn build(env: &Env, params: &Json, instances: &[&InstanceBuilder]) -> Arc<dyn Handler> {
    try_build(env, params, instances).unwrap_or_else(|e| panic!("{e}"))
}

fn report(h: &Arc<dyn Handler>, instances: &[metric::Instance<'_>]) -> Result<(), String> {
    h.metric()
        .expect("a metric handler")
        .handle_metric(instances)
        .map_err(|e| match e {
            templates::HandlerError::Rejected(message) => message,
            other => panic!("prometheus rejects instances, it does not fail with {other:?}"),
        })
}

fn render(env: &Env) -> String {
    env.resources.prometheus.render()
}

/// The sample lines of `family` (its name followed by a suffix, `{` or a space).
fn samples(text: &str, family: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            !l.starts_with('#')
                && l.strip_prefix(family).is_some_and(|rest| {
                    rest.starts_with(['{', ' '])
                        || rest.starts_with("_bucket")
                        || rest.starts_with("_sum")
                        || rest.starts_with("_count")
                })
        })
        .map(str::to_owned)
        .collect()
}

fn names(list: &[&str]) -> Vec<Arc<str>> {
    list.iter().map(|n| Arc::from(*n)).collect()
}

/// A metric instance built by hand.
fn inst<'a>(
    name: &'a str,
    value: Option<Value<'a>>,
    names: &'a [Arc<str>],
    values: Vec<Value<'a>>,
) -> metric::Instance<'a> {
    metric::Instance {
        name,
        value,
        dimensions: Dims { names, values },
        monitored_resource_type: Cow::Borrowed(""),
        monitored_resource_dimensions: Dims::default(),
    }
}

fn dropped_total(env: &Env, metric: &str) -> Option<String> {
    self_metric(
        env,
        &format!("{SERIES_DROPPED_METRIC}{{metric=\"{metric}\"}}"),
    )
}

/// The value of the self-metric sample `series` (name and labels as written).
fn self_metric(env: &Env, series: &str) -> Option<String> {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&env.resources.metrics.gather(), &mut buf)
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

// ---------------------------------------------------------------------------------------
// Istio 1.4's default configuration.

/// The dimensions of the 1.4 HTTP metric instances, verbatim from the Helm chart.
fn http_dimensions() -> Json {
    json!({
        "reporter": "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"source\", \"destination\")",
        "source_workload": "source.workload.name | \"unknown\"",
        "source_workload_namespace": "source.workload.namespace | \"unknown\"",
        "source_principal": "source.principal | \"unknown\"",
        "source_app": "source.labels[\"app\"] | \"unknown\"",
        "source_version": "source.labels[\"version\"] | \"unknown\"",
        "destination_workload": "destination.workload.name | \"unknown\"",
        "destination_workload_namespace": "destination.workload.namespace | \"unknown\"",
        "destination_principal": "destination.principal | \"unknown\"",
        "destination_app": "destination.labels[\"app\"] | \"unknown\"",
        "destination_version": "destination.labels[\"version\"] | \"unknown\"",
        "destination_service": "destination.service.host | conditional((destination.service.name | \"unknown\") == \"unknown\", \"unknown\", request.host)",
        "destination_service_name": "destination.service.name | \"unknown\"",
        "destination_service_namespace": "destination.service.namespace | \"unknown\"",
        "request_protocol": "api.protocol | context.protocol | \"unknown\"",
        "response_code": "response.code | 200",
        "response_flags": "context.proxy_error_code | \"-\"",
        "permissive_response_code": "rbac.permissive.response_code | \"none\"",
        "permissive_response_policyid": "rbac.permissive.effective_policy_id | \"none\"",
        "connection_security_policy": "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"unknown\", conditional(connection.mtls | false, \"mutual_tls\", \"none\"))"
    })
}

/// The dimensions of the 1.4 TCP byte-counter instances.
fn tcp_dimensions() -> Json {
    json!({
        "reporter": "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"source\", \"destination\")",
        "source_workload": "source.workload.name | \"unknown\"",
        "source_workload_namespace": "source.workload.namespace | \"unknown\"",
        "source_principal": "source.principal | \"unknown\"",
        "source_app": "source.labels[\"app\"] | \"unknown\"",
        "source_version": "source.labels[\"version\"] | \"unknown\"",
        "destination_workload": "destination.workload.name | \"unknown\"",
        "destination_workload_namespace": "destination.workload.namespace | \"unknown\"",
        "destination_principal": "destination.principal | \"unknown\"",
        "destination_app": "destination.labels[\"app\"] | \"unknown\"",
        "destination_version": "destination.labels[\"version\"] | \"unknown\"",
        "destination_service": "destination.service.host | \"unknown\"",
        "destination_service_name": "destination.service.name | \"unknown\"",
        "destination_service_namespace": "destination.service.namespace | \"unknown\"",
        "connection_security_policy": "conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"unknown\", conditional(connection.mtls | false, \"mutual_tls\", \"none\"))",
        "response_flags": "context.proxy_error_code | \"-\""
    })
}

fn compile(name: &str, value: &str, dimensions: Json) -> InstanceBuilder {
    InstanceBuilder::compile(
        name,
        TemplateKind::Metric,
        &json!({
            "value": value,
            "dimensions": dimensions,
            "monitored_resource_type": "\"UNSPECIFIED\""
        }),
        None,
        &Manifest::istio_vocabulary(),
        &FunctionTable::standard(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e:#?}"))
}

/// requestcount, requestduration, requestsize, responsesize and tcpbytesent of 1.4.
fn istio_instances() -> Vec<InstanceBuilder> {
    vec![
        compile("requestcount.instance.istio-system", "1", http_dimensions()),
        compile(
            "requestduration.instance.istio-system",
            "response.duration | \"0ms\"",
            http_dimensions(),
        ),
        compile(
            "requestsize.instance.istio-system",
            "request.size | 0",
            http_dimensions(),
        ),
        compile(
            "responsesize.instance.istio-system",
            "response.size | 0",
            http_dimensions(),
        ),
        compile(
            "tcpbytesent.instance.istio-system",
            "connection.sent.bytes | 0",
            tcp_dimensions(),
        ),
    ]
}

fn istio_params() -> Json {
    testdata::prometheus_params()
        .into_iter()
        .find(|(s, _)| s.starts_with("1.4.10/install") && s.contains("config-rendered"))
        .expect("the 1.4.10 default prometheus handler")
        .1
}

fn string_map(entries: &[(&str, &str)]) -> Value<'static> {
    let map: BTreeMap<String, String> = entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Value::StringMap(StringMapRef::Owned(Arc::new(map)))
}

fn s(v: &str) -> Value<'static> {
    Value::String(Cow::Owned(v.to_owned()))
}

/// Istio's documented example scrape: one inbound HTTP request, productpage-v1 →
/// reviews-v1.
fn bookinfo_bag() -> MapBag {
    MapBag::new()
        .with("context.reporter.kind", s("inbound"))
        .with("context.protocol", s("http"))
        .with("connection.mtls", Value::Bool(true))
        .with("response.code", Value::Int64(200))
        .with("response.duration", Value::Duration(12_000_000))
        .with("request.size", Value::Int64(0))
        .with("response.size", Value::Int64(295))
        .with("source.workload.name", s("productpage-v1"))
        .with("source.workload.namespace", s("default"))
        .with(
            "source.principal",
            s("cluster.local/ns/default/sa/bookinfo-productpage"),
        )
        .with(
            "source.labels",
            string_map(&[("app", "productpage"), ("version", "v1")]),
        )
        .with("destination.workload.name", s("reviews-v1"))
        .with("destination.workload.namespace", s("default"))
        .with(
            "destination.principal",
            s("cluster.local/ns/default/sa/bookinfo-reviews"),
        )
        .with(
            "destination.labels",
            string_map(&[("app", "reviews"), ("version", "v1")]),
        )
        .with(
            "destination.service.host",
            s("reviews.default.svc.cluster.local"),
        )
        .with("destination.service.name", s("reviews"))
        .with("destination.service.namespace", s("default"))
}

/// The label set of the example, in exposition order.
const BOOKINFO_LABELS: &str = "connection_security_policy=\"mutual_tls\",\
destination_app=\"reviews\",\
destination_principal=\"cluster.local/ns/default/sa/bookinfo-reviews\",\
destination_service=\"reviews.default.svc.cluster.local\",\
destination_service_name=\"reviews\",\
destination_service_namespace=\"default\",\
destination_version=\"v1\",\
destination_workload=\"reviews-v1\",\
destination_workload_namespace=\"default\",\
permissive_response_code=\"none\",\
permissive_response_policyid=\"none\",\
reporter=\"destination\",\
request_protocol=\"http\",\
response_code=\"200\",\
response_flags=\"-\",\
source_app=\"productpage\",\
source_principal=\"cluster.local/ns/default/sa/bookinfo-productpage\",\
source_version=\"v1\",\
source_workload=\"productpage-v1\",\
source_workload_namespace=\"default\"";

/// The text of one histogram series.
fn histogram(name: &str, labels: &str, buckets: &[(&str, u64)], count: u64, sum: &str) -> String {
    let mut out = String::new();
    for (le, n) in buckets {
        out.push_str(&format!("{name}_bucket{{{labels},le=\"{le}\"}} {n}\n"));
    }
    out.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {count}\n"));
    out.push_str(&format!("{name}_sum{{{labels}}} {sum}\n"));
    out.push_str(&format!("{name}_count{{{labels}}} {count}\n"));
    out
}

#[test]
fn istio_default_config_renders_the_expected_exposition() {
    let (env, _) = env();
    let builders = istio_instances();
    let refs: Vec<&InstanceBuilder> = builders.iter().collect();
    let h = build(&env, &istio_params(), &refs);
    assert_eq!(
        render(&env),
        "",
        "nothing is exposed before the first report"
    );

    let bag = bookinfo_bag();
    let http: Vec<metric::Instance<'_>> = builders[..4]
        .iter()
        .map(|b| b.metric(&bag, &mut NoRecording).unwrap())
        .collect();
    report(&h, &http).unwrap();

    let l = BOOKINFO_LABELS;
    let mut want = String::new();
    want.push_str(
        "# HELP istio_request_bytes request_bytes\n# TYPE istio_request_bytes histogram\n",
    );
    want.push_str(&histogram(
        "istio_request_bytes",
        l,
        &[
            ("1", 1),
            ("10", 1),
            ("100", 1),
            ("1000", 1),
            ("10000", 1),
            ("100000", 1),
            ("1e+06", 1),
            ("1e+07", 1),
            ("1e+08", 1),
        ],
        1,
        "0",
    ));
    want.push_str(
        "# HELP istio_request_duration_seconds request_duration_seconds\n\
         # TYPE istio_request_duration_seconds histogram\n",
    );
    want.push_str(&histogram(
        "istio_request_duration_seconds",
        l,
        &[
            ("0.005", 0),
            ("0.01", 0),
            ("0.025", 1),
            ("0.05", 1),
            ("0.1", 1),
            ("0.25", 1),
            ("0.5", 1),
            ("1", 1),
            ("2.5", 1),
            ("5", 1),
            ("10", 1),
        ],
        1,
        "0.012",
    ));
    want.push_str(
        "# HELP istio_requests_total requests_total\n# TYPE istio_requests_total counter\n",
    );
    want.push_str(&format!("istio_requests_total{{{l}}} 1\n"));
    want.push_str(
        "# HELP istio_response_bytes response_bytes\n# TYPE istio_response_bytes histogram\n",
    );
    want.push_str(&histogram(
        "istio_response_bytes",
        l,
        &[
            ("1", 0),
            ("10", 0),
            ("100", 0),
            ("1000", 1),
            ("10000", 1),
            ("100000", 1),
            ("1e+06", 1),
            ("1e+07", 1),
            ("1e+08", 1),
        ],
        1,
        "295",
    ));
    assert_eq!(render(&env), want);

    // The same request again: the counter adds, the histograms observe.
    report(&h, &http).unwrap();
    let text = render(&env);
    assert_eq!(
        samples(&text, "istio_requests_total"),
        [format!("istio_requests_total{{{l}}} 2")]
    );
    assert!(text.contains(&format!(
        "istio_request_duration_seconds_sum{{{l}}} 0.024\n"
    )));
    assert!(text.contains(&format!("istio_response_bytes_count{{{l}}} 2\n")));

    // An outbound report of the same request is another series of the same family.
    let outbound = bookinfo_bag().with("context.reporter.kind", s("outbound"));
    let count = builders[0].metric(&outbound, &mut NoRecording).unwrap();
    report(&h, &[count]).unwrap();
    let source_labels = l
        .replace(
            "connection_security_policy=\"mutual_tls\"",
            "connection_security_policy=\"unknown\"",
        )
        .replace("reporter=\"destination\"", "reporter=\"source\"");
    assert_eq!(
        samples(&render(&env), "istio_requests_total"),
        [
            format!("istio_requests_total{{{l}}} 2"),
            format!("istio_requests_total{{{source_labels}}} 1"),
        ],
        "series in label-value order (mutual_tls < unknown)"
    );

    // A TCP report: 16 labels, bytes added up.
    let tcp = bookinfo_bag()
        .with("context.protocol", s("tcp"))
        .with("connection.sent.bytes", Value::Int64(100));
    let sent = builders[4].metric(&tcp, &mut NoRecording).unwrap();
    report(&h, std::slice::from_ref(&sent)).unwrap();
    let tcp2 = tcp.clone().with("connection.sent.bytes", Value::Int64(50));
    let sent2 = builders[4].metric(&tcp2, &mut NoRecording).unwrap();
    report(&h, &[sent2]).unwrap();
    let tcp_labels = "connection_security_policy=\"mutual_tls\",destination_app=\"reviews\",\
destination_principal=\"cluster.local/ns/default/sa/bookinfo-reviews\",\
destination_service=\"reviews.default.svc.cluster.local\",destination_service_name=\"reviews\",\
destination_service_namespace=\"default\",destination_version=\"v1\",\
destination_workload=\"reviews-v1\",destination_workload_namespace=\"default\",\
reporter=\"destination\",response_flags=\"-\",source_app=\"productpage\",\
source_principal=\"cluster.local/ns/default/sa/bookinfo-productpage\",source_version=\"v1\",\
source_workload=\"productpage-v1\",source_workload_namespace=\"default\"";
    let text = render(&env);
    assert!(
        text.ends_with(&format!(
            "# HELP istio_tcp_sent_bytes_total tcp_sent_bytes_total\n\
             # TYPE istio_tcp_sent_bytes_total counter\n\
             istio_tcp_sent_bytes_total{{{tcp_labels}}} 150\n"
        )),
        "{text}"
    );
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    assert_eq!(
        families,
        [
            "istio_request_bytes histogram",
            "istio_request_duration_seconds histogram",
            "istio_requests_total counter",
            "istio_response_bytes histogram",
            "istio_tcp_sent_bytes_total counter",
        ]
    );
    h.close();
    assert_eq!(render(&env), "", "a closed handler's families are gone");
}

#[test]
fn adapter_is_in_the_inventory() {
    let a = crate::find("prometheus").expect("prometheus is listed");
    assert_eq!(a.templates(), [TemplateKind::Metric]);
    assert_eq!(a.unavailable(), None);
    // Validation still reports param errors with their paths.
    let e = a
        .validate(&ValidateInput {
            handler: HANDLER,
            params: &json!({"metrics": [{"instance_name": "a"}]}),
            instances: &[],
        })
        .config
        .err()
        .unwrap();
    assert_eq!(e[0].field, "params.metrics[0].kind");
    // A build from something else's validation fails cleanly.
    let (env, _) = env();
    let noop = crate::find("noop").unwrap().validate(&ValidateInput {
        handler: HANDLER,
        params: &Json::Null,
        instances: &[],
    });
    let e = a.build(noop.config.unwrap(), &env).err().unwrap();
    assert_eq!(e.to_string(), "prometheus: params of another adapter");
}

// ---------------------------------------------------------------------------------------
// Values and labels.

fn one_metric(kind: &str, labels: &[&str], extra: Json) -> Json {
    let mut m = json!({
        "name": "m", "instance_name": "m.instance.ns", "kind": kind, "label_names": labels
    });
    if let (Json::Object(m), Json::Object(extra)) = (&mut m, extra) {
        m.extend(extra);
    }
    json!({ "metrics": [m] })
}

#[test]
fn values_convert_per_type_and_kind() {
    let (env, _) = env();
    let params = json!({"metrics": [
        {"name": "c", "instance_name": "c.instance.ns", "kind": "COUNTER"},
        {"name": "g", "instance_name": "g.instance.ns", "kind": "GAUGE"},
        {"name": "d", "instance_name": "d.instance.ns", "kind": "DISTRIBUTION",
         "buckets": {"explicitBuckets": {"bounds": [0.5, 1, 2]}}},
    ]});
    let h = build(&env, &params, &[]);
    let none: [Arc<str>; 0] = [];
    let batch = [
        inst("c.instance.ns", Some(Value::Int64(2)), &none, vec![]),
        inst("c.instance.ns", Some(Value::Double(0.25)), &none, vec![]),
        inst("c.instance.ns", Some(s("1.5")), &none, vec![]),
        inst(
            "c.instance.ns",
            Some(Value::Duration(250_000_000)),
            &none,
            vec![],
        ),
        inst("g.instance.ns", Some(Value::Int64(7)), &none, vec![]),
        inst("g.instance.ns", Some(Value::Double(-3.5)), &none, vec![]),
        inst(
            "d.instance.ns",
            Some(Value::Duration(1_500_000_000)),
            &none,
            vec![],
        ),
        inst("d.instance.ns", Some(Value::Int64(1)), &none, vec![]),
        inst("d.instance.ns", Some(s("0.25")), &none, vec![]),
        inst("d.instance.ns", Some(Value::Double(9.0)), &none, vec![]),
    ];
    report(&h, &batch).unwrap();
    assert_eq!(
        render(&env),
        "# HELP istio_c c\n# TYPE istio_c counter\nistio_c 4\n\
         # HELP istio_d d\n# TYPE istio_d histogram\n\
         istio_d_bucket{le=\"0.5\"} 1\nistio_d_bucket{le=\"1\"} 2\n\
         istio_d_bucket{le=\"2\"} 3\nistio_d_bucket{le=\"+Inf\"} 4\n\
         istio_d_sum 11.75\nistio_d_count 4\n\
         # HELP istio_g g\n# TYPE istio_g gauge\nistio_g -3.5\n"
    );
}

#[test]
fn label_values_are_text() {
    let (env, _) = env();
    let h = build(
        &env,
        &one_metric(
            "COUNTER",
            &["code", "ip", "at", "took", "ok", "ratio", "hdrs"],
            json!({}),
        ),
        &[],
    );
    let n = names(&["took", "ok", "ip", "hdrs", "code", "at", "ratio"]);
    let when = expr_lang::golib::time::Timestamp {
        secs: 1_503_309_840,
        nanos: 5_000,
        offset_secs: -7200,
    };
    let typed = vec![
        Value::Duration(1_500_000_000),
        Value::Bool(true),
        Value::IpAddress(Cow::Owned(vec![10, 1, 2, 3])),
        string_map(&[("b", "2"), ("a", "1")]),
        Value::Int64(404),
        Value::Timestamp(when),
        Value::Double(0.25),
    ];
    report(
        &h,
        &[inst("m.instance.ns", Some(Value::Int64(1)), &n, typed)],
    )
    .unwrap();
    let labels = "at=\"2017-08-21T10:04:00.000005Z\",code=\"404\",hdrs=\"stringmap[a:1 b:2]\",\
                  ip=\"10.1.2.3\",ok=\"true\",ratio=\"0.25\",took=\"1.5s\"";
    assert_eq!(
        samples(&render(&env), "istio_m"),
        [format!("istio_m{{{labels}}} 1")]
    );

    // The same texts given as strings are the same series.
    let texts = vec![
        s("1.5s"),
        s("true"),
        s("10.1.2.3"),
        s("stringmap[a:1 b:2]"),
        s("404"),
        s("2017-08-21T10:04:00.000005Z"),
        s("0.25"),
    ];
    report(
        &h,
        &[inst("m.instance.ns", Some(Value::Int64(2)), &n, texts)],
    )
    .unwrap();
    assert_eq!(
        samples(&render(&env), "istio_m"),
        [format!("istio_m{{{labels}}} 3")]
    );
}

#[test]
fn label_values_are_escaped() {
    let (env, _) = env();
    let h = build(
        &env,
        &one_metric(
            "GAUGE",
            &["a"],
            json!({"description": "line one\nback\\slash"}),
        ),
        &[],
    );
    let n = names(&["a"]);
    report(
        &h,
        &[inst(
            "m.instance.ns",
            Some(Value::Int64(1)),
            &n,
            vec![s("say \"hi\"\\\n")],
        )],
    )
    .unwrap();
    assert_eq!(
        render(&env),
        "# HELP istio_m line one\\nback\\\\slash\n# TYPE istio_m gauge\n\
         istio_m{a=\"say \\\"hi\\\"\\\\\\n\"} 1\n"
    );
}

#[test]
fn dimension_order_does_not_matter() {
    let (env, _) = env();
    let b = compile("m.instance.ns", "1", json!({"b": "\"x\"", "a": "\"y\""}));
    let h = build(&env, &one_metric("COUNTER", &["a", "b"], json!({})), &[&b]);
    let bag = MapBag::new();
    // Validated layout (fast path), then the same labels in another order and with other
    // name allocations (matched by name).
    report(&h, &[b.metric(&bag, &mut NoRecording).unwrap()]).unwrap();
    let reordered = names(&["a", "b"]);
    report(
        &h,
        &[inst(
            "m.instance.ns",
            Some(Value::Int64(1)),
            &reordered,
            vec![s("y"), s("x")],
        )],
    )
    .unwrap();
    let copied = names(&["b", "a"]);
    report(
        &h,
        &[inst(
            "m.instance.ns",
            Some(Value::Int64(1)),
            &copied,
            vec![s("x"), s("y")],
        )],
    )
    .unwrap();
    assert_eq!(
        samples(&render(&env), "istio_m"),
        ["istio_m{a=\"y\",b=\"x\"} 3"]
    );
}

#[test]
fn bad_instances_fail_alone() {
    let (env, _) = env();
    let params = json!({"metrics": [
        {"name": "c", "instance_name": "c.instance.ns", "kind": "COUNTER", "label_names": ["a"]},
        {"name": "d", "instance_name": "d.instance.ns", "kind": "DISTRIBUTION", "label_names": ["a"]},
    ]});
    let h = build(&env, &params, &[]);
    let a = names(&["a"]);
    let wrong = names(&["b"]);
    let batch = [
        inst("c.instance.ns", Some(Value::Int64(1)), &a, vec![s("ok")]),
        inst(
            "c.instance.ns",
            Some(Value::Bool(true)),
            &a,
            vec![s("bool")],
        ),
        inst("c.instance.ns", Some(s("12ms")), &a, vec![s("text")]),
        inst(
            "c.instance.ns",
            Some(Value::Int64(-1)),
            &a,
            vec![s("negative")],
        ),
        inst("c.instance.ns", None, &a, vec![s("none")]),
        inst(
            "c.instance.ns",
            Some(Value::Int64(1)),
            &wrong,
            vec![s("mismatch")],
        ),
        inst(
            "x.instance.ns",
            Some(Value::Int64(1)),
            &a,
            vec![s("unknown")],
        ),
        inst("d.instance.ns", Some(Value::Double(0.3)), &a, vec![s("ok")]),
        inst("c.instance.ns", Some(Value::Int64(1)), &a, vec![s("ok")]),
    ];
    let err = report(&h, &batch).unwrap_err();
    assert!(
        err.starts_with("6 of 9 metric instances not recorded: "),
        "{err}"
    );
    for part in [
        "instance 'c.instance.ns' (metric 'istio_c'): a BOOL value is not a number",
        "instance 'c.instance.ns' (metric 'istio_c'): value \"12ms\" is not a number",
        "instance 'c.instance.ns' (metric 'istio_c'): a counter cannot decrease, value -1",
        "instance 'c.instance.ns' (metric 'istio_c'): the instance has no value",
        "instance 'c.instance.ns' (metric 'istio_c'): dimensions [b] do not match the labels [a]",
        "instance 'x.instance.ns' has no metrics[] entry in this handler",
    ] {
        assert!(err.contains(part), "{part:?} missing from {err}");
    }
    let text = render(&env);
    assert_eq!(samples(&text, "istio_c"), ["istio_c{a=\"ok\"} 2"]);
    assert!(text.contains("istio_d_count{a=\"ok\"} 1\n"), "{text}");
}

#[test]
fn metrics_of_a_bag_with_the_same_dimensions_share_its_label_hash_only_when_equal() {
    let (env, _) = env();
    let params = json!({"metrics": [
        {"name": "c", "instance_name": "c.instance.ns", "kind": "COUNTER", "label_names": ["a", "b"]},
        {"name": "d", "instance_name": "d.instance.ns", "kind": "COUNTER", "label_names": ["b", "a"]},
    ]});
    let dims = || json!({"a": "request.host | \"none\"", "b": "response.code | 200"});
    let c = compile("c.instance.ns", "1", dims());
    let d = compile("d.instance.ns", "1", dims());
    let h = build(&env, &params, &[&c, &d]);
    let bag = |host: &str, code: i64| {
        MapBag::new()
            .with("request.host", s(host))
            .with("response.code", Value::Int64(code))
    };
    let bags = [bag("h1", 200), bag("h2", 200), bag("h2", 404)];
    fn of<'a>(b: &'a InstanceBuilder, bag: &'a MapBag) -> metric::Instance<'a> {
        b.metric(bag, &mut NoRecording).unwrap()
    }
    // Consecutive instances of one bag, of the next bag (one value differs, then
    // another), and out of the config's order.
    let batch = [
        of(&c, &bags[0]),
        of(&d, &bags[0]),
        of(&c, &bags[1]),
        of(&d, &bags[1]),
        of(&d, &bags[2]),
        of(&c, &bags[2]),
    ];
    report(&h, &batch).unwrap();
    // Alone, each instance finds the series the batch created (a wrongly shared hash
    // would have filed it where these cannot find it).
    for bag in &bags {
        report(&h, &[of(&c, bag)]).unwrap();
        report(&h, &[of(&d, bag)]).unwrap();
    }
    let text = render(&env);
    for family in ["istio_c", "istio_d"] {
        assert_eq!(
            samples(&text, family),
            [
                format!("{family}{{a=\"h1\",b=\"200\"}} 2"),
                format!("{family}{{a=\"h2\",b=\"200\"}} 2"),
                format!("{family}{{a=\"h2\",b=\"404\"}} 2"),
            ]
        );
    }
}

// ---------------------------------------------------------------------------------------
// Series cap and expiry.

#[test]
fn series_cap_drops_new_label_sets_and_counts_them() {
    let (env, _) = env();
    let h = build(&env, &one_metric("COUNTER", &["a"], json!({})), &[]);
    // Params of another handler: maxSeries 2.
    let capped = renamed(&env, "capped.ns");
    let params = json!({"maxSeries": 2, "metrics": [
        {"name": "capped", "instance_name": "m.instance.ns", "kind": "COUNTER", "label_names": ["a"]}
    ]});
    let hc = build(&capped, &params, &[]);
    let n = names(&["a"]);
    let one = |v: &'static str| inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![s(v)]);
    report(&hc, &[one("x"), one("y"), one("z"), one("x"), one("w")]).unwrap();
    report(&hc, &[one("y"), one("z")]).unwrap();
    assert_eq!(
        samples(&render(&env), "istio_capped"),
        ["istio_capped{a=\"x\"} 2", "istio_capped{a=\"y\"} 2"]
    );
    assert_eq!(dropped_total(&env, "istio_capped").as_deref(), Some("3"));

    // The default cap (10000) leaves a handful of series alone.
    let many: Vec<String> = (0..50).map(|i| format!("v{i}")).collect();
    let batch: Vec<metric::Instance<'_>> = many
        .iter()
        .map(|v| inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![s(v)]))
        .collect();
    report(&h, &batch).unwrap();
    assert_eq!(samples(&render(&env), "istio_m").len(), 50);
    assert_eq!(dropped_total(&env, "istio_m").as_deref(), Some("0"));

    // maxSeries 0: unlimited.
    let unlimited = renamed(&env, "unlimited.ns");
    let params = json!({"maxSeries": 0, "metrics": [
        {"name": "free", "instance_name": "m.instance.ns", "kind": "COUNTER", "label_names": ["a"]}
    ]});
    let hu = build(&unlimited, &params, &[]);
    report(&hu, &batch).unwrap();
    assert_eq!(samples(&render(&env), "istio_free").len(), 50);
}

// ---------------------------------------------------------------------------------------
// Exposition limits.

#[test]
fn long_label_values_are_cut_before_they_are_stored_and_counted() {
    let (env, _) = env();
    env.resources.prometheus.set_limits(ExpositionLimits {
        max_label_value_bytes: 8,
        ..ExpositionLimits::default()
    });
    let h = build(&env, &one_metric("COUNTER", &["a", "b"], json!({})), &[]);
    let n = names(&["a", "b"]);
    let one = |a: Value<'static>, b: &'static str| {
        inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![a, s(b)])
    };
    let huge = "x".repeat(1_000_000);
    report(
        &h,
        &[
            // Exactly at the limit: kept whole, not counted.
            one(s("12345678"), "short"),
            // Values that differ only past the limit share the cut series.
            one(s("abcdefgh-1"), "short"),
            one(s(&format!("abcdefgh{huge}")), "short"),
            // Cut at a character boundary: "é" (2 bytes) would straddle byte 8.
            one(s("abcdefgé"), "short"),
            // Two long values in one update count twice.
            one(s("abcdefgh-2"), "longer-than-8"),
            // Text of other types is cut the same way.
            one(string_map(&[("key", "value")]), "short"),
        ],
    )
    .unwrap();
    // The same long values again find their series (nothing new is created).
    report(&h, &[one(s("abcdefgh-3"), "short")]).unwrap();
    let text = render(&env);
    assert_eq!(
        samples(&text, "istio_m"),
        [
            "istio_m{a=\"12345678\",b=\"short\"} 1",
            "istio_m{a=\"abcdefg\",b=\"short\"} 1",
            "istio_m{a=\"abcdefgh\",b=\"longer-t\"} 1",
            "istio_m{a=\"abcdefgh\",b=\"short\"} 3",
            "istio_m{a=\"stringma\",b=\"short\"} 1",
        ]
    );
    let truncated = format!("{LABELS_TRUNCATED_METRIC}{{metric=\"istio_m\"}}");
    assert_eq!(self_metric(&env, &truncated).as_deref(), Some("7"));
}

#[test]
fn label_values_are_cut_to_1_kib_by_default() {
    let (env, _) = env();
    assert_eq!(
        env.resources.prometheus.limits(),
        ExpositionLimits {
            max_label_value_bytes: 1024,
            max_exposition_bytes: 64 * 1024 * 1024,
        }
    );
    let h = build(&env, &one_metric("COUNTER", &["a"], json!({})), &[]);
    let n = names(&["a"]);
    let long = "h".repeat(900 * 1024);
    report(
        &h,
        &[inst(
            "m.instance.ns",
            Some(Value::Int64(1)),
            &n,
            vec![s(&long)],
        )],
    )
    .unwrap();
    let text = render(&env);
    assert!(text.len() < 2048, "{} bytes", text.len());
    assert!(text.contains(&format!("istio_m{{a=\"{}\"}} 1\n", &long[..1024])));

    // 0 lifts the limit (for families created afterwards).
    env.resources.prometheus.set_limits(ExpositionLimits {
        max_label_value_bytes: 0,
        max_exposition_bytes: 0,
    });
    let free = renamed(&env, "free.ns");
    let params = json!({"metrics": [
        {"name": "free", "instance_name": "m.instance.ns", "kind": "COUNTER", "label_names": ["a"]}
    ]});
    let hf = build(&free, &params, &[]);
    report(
        &hf,
        &[inst(
            "m.instance.ns",
            Some(Value::Int64(1)),
            &n,
            vec![s(&long)],
        )],
    )
    .unwrap();
    assert!(render(&env).contains(&format!("istio_free{{a=\"{long}\"}} 1\n")));
}

/// A distribution `m` with label `a` and `series` series.
fn many_series(env: &Env, series: usize) -> Arc<dyn Handler> {
    let params = one_metric(
        "DISTRIBUTION",
        &["a"],
        json!({"buckets": {"explicitBuckets": {"bounds": [0.5, 1, 2]}}}),
    );
    let h = build(env, &params, &[]);
    let n = names(&["a"]);
    let values: Vec<String> = (0..series).map(|i| format!("value-{i:06}")).collect();
    let batch: Vec<metric::Instance<'_>> = values
        .iter()
        .map(|v| inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![s(v)]))
        .collect();
    report(&h, &batch).unwrap();
    h
}

#[test]
fn the_exposition_is_rendered_in_bounded_chunks() {
    let (env, _) = env();
    let _h = many_series(&env, 5000);
    let chunks: Vec<String> = env.resources.prometheus.render_chunks().collect();
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    // A chunk ends where a series ends, and is never much more than 64 KiB.
    for c in &chunks {
        assert!(c.len() <= 64 * 1024 + 1024, "{}", c.len());
        assert!(c.ends_with('\n'));
    }
    let whole = chunks.concat();
    assert_eq!(whole, render(&env));
    assert_eq!(samples(&whole, "istio_m").len(), 5000 * 6);
    assert!(!whole.contains("truncated"));
    assert_eq!(
        self_metric(&env, EXPOSITIONS_TRUNCATED_METRIC).as_deref(),
        Some("0")
    );
}

#[test]
fn the_exposition_stops_at_its_size_limit_and_says_so() {
    let (env, _) = env();
    let _h = many_series(&env, 5000);
    let full = render(&env).len();
    let limit = 100_000;
    env.resources.prometheus.set_limits(ExpositionLimits {
        max_exposition_bytes: limit,
        ..ExpositionLimits::default()
    });
    let text = render(&env);
    let (body, comment) = text.trim_end().rsplit_once('\n').unwrap();
    assert!(
        comment.starts_with("# Exposition truncated") && comment.contains("100000 bytes"),
        "{comment}"
    );
    assert!(
        body.len() < limit && body.len() > limit - 1024,
        "{}",
        body.len()
    );
    assert!(full > 10 * limit);
    // It stops between series: each one it has is whole.
    let kept = samples(body, "istio_m");
    assert_eq!(kept.len() % 6, 0, "{:?}", &kept[kept.len() - 6..]);
    assert_eq!(
        self_metric(&env, EXPOSITIONS_TRUNCATED_METRIC).as_deref(),
        Some("1")
    );
    render(&env);
    assert_eq!(
        self_metric(&env, EXPOSITIONS_TRUNCATED_METRIC).as_deref(),
        Some("2")
    );
}

#[test]
fn idle_series_expire_on_the_check_schedule() {
    let (env, clock) = env();
    let params = json!({
        "metricsExpirationPolicy": {"metricsExpiryDuration": "10m", "expiryCheckIntervalDuration": "5m"},
        "metrics": [{"name": "m", "instance_name": "m.instance.ns", "kind": "COUNTER", "label_names": ["a"]}]
    });
    let h = build(&env, &params, &[]);
    let n = names(&["a"]);
    let one = |v: &'static str| inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![s(v)]);
    let min = |m: u64| Duration::from_secs(60 * m);
    let series = |env: &Env| -> Vec<String> { samples(&render(env), "istio_m") };

    report(&h, &[one("a")]).unwrap(); // t = 0
    clock.set(min(4));
    report(&h, &[one("b")]).unwrap();
    clock.set(min(9));
    report(&h, &[one("c")]).unwrap();
    clock.set(min(10) - Duration::from_nanos(1));
    assert_eq!(series(&env).len(), 3);
    // The check at 10m removes what has been idle for 10m: a.
    clock.set(min(10));
    assert_eq!(series(&env), ["istio_m{a=\"b\"} 1", "istio_m{a=\"c\"} 1"]);
    // b has been idle for 10m since 14m, but it goes only at the check at 15m.
    clock.set(min(14) + Duration::from_secs(59));
    assert_eq!(series(&env).len(), 2);
    clock.set(min(15));
    assert_eq!(series(&env), ["istio_m{a=\"c\"} 1"]);
    // c (idle since 9m) is due at 19m; no check runs between 15m and 20m.
    clock.set(min(19) + Duration::from_secs(30));
    assert_eq!(series(&env), ["istio_m{a=\"c\"} 1"]);
    // Checks missed while nothing happened catch up on the next update: at 31m, the
    // check of 30m has removed c, so c restarts from zero.
    clock.set(min(31));
    report(&h, &[one("c")]).unwrap();
    assert_eq!(series(&env), ["istio_m{a=\"c\"} 1"]);
    // Updates keep a series alive.
    for m in [35, 40, 45, 50] {
        clock.set(min(m));
        report(&h, &[one("c")]).unwrap();
    }
    clock.set(min(59));
    assert_eq!(series(&env), ["istio_m{a=\"c\"} 5"]);
    clock.set(min(60));
    assert_eq!(series(&env), Vec::<String>::new());
    assert_eq!(render(&env), "", "a family without series is not rendered");
}

#[test]
fn without_a_policy_series_never_expire() {
    let (env, clock) = env();
    let h = build(&env, &one_metric("GAUGE", &["a"], json!({})), &[]);
    let n = names(&["a"]);
    report(
        &h,
        &[inst(
            "m.instance.ns",
            Some(Value::Int64(3)),
            &n,
            vec![s("x")],
        )],
    )
    .unwrap();
    clock.advance(Duration::from_secs(365 * 24 * 3600));
    assert_eq!(samples(&render(&env), "istio_m"), ["istio_m{a=\"x\"} 3"]);
}

#[test]
fn expired_series_free_room_under_the_cap() {
    let (env, clock) = env();
    let params = json!({
        "maxSeries": 1,
        "metricsExpirationPolicy": {"metricsExpiryDuration": "1m"},
        "metrics": [{"name": "m", "instance_name": "m.instance.ns", "kind": "COUNTER", "label_names": ["a"]}]
    });
    let h = build(&env, &params, &[]);
    let n = names(&["a"]);
    let one = |v: &'static str| inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![s(v)]);
    report(&h, &[one("a"), one("b")]).unwrap();
    assert_eq!(samples(&render(&env), "istio_m"), ["istio_m{a=\"a\"} 1"]);
    // The check runs every 30s (half the expiry): at 60s a has been idle for 60s.
    clock.set(Duration::from_secs(60));
    report(&h, &[one("b")]).unwrap();
    assert_eq!(samples(&render(&env), "istio_m"), ["istio_m{a=\"b\"} 1"]);
    assert_eq!(dropped_total(&env, "istio_m").as_deref(), Some("1"));
}

// ---------------------------------------------------------------------------------------
// Reloads.

fn counter_params(description: &str) -> Json {
    json!({"metrics": [
        {"name": "m", "instance_name": "m.instance.ns", "kind": "COUNTER", "label_names": ["a"],
         "description": description},
        {"name": "other", "instance_name": "o.instance.ns", "kind": "GAUGE"},
    ]})
}

#[test]
fn reload_with_the_same_definition_keeps_series() {
    let (env, _) = env();
    let old = build(&env, &counter_params("help"), &[]);
    let n = names(&["a"]);
    let one = || inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![s("x")]);
    report(&old, &[one(), one()]).unwrap();
    // The new version of the handler, with another expiry policy: still the same family.
    let mut params = counter_params("help");
    params["metricsExpirationPolicy"] = json!({"metricsExpiryDuration": "1h"});
    let new = build(&env, &params, &[]);
    assert_eq!(samples(&render(&env), "istio_m"), ["istio_m{a=\"x\"} 2"]);
    old.close();
    assert_eq!(samples(&render(&env), "istio_m"), ["istio_m{a=\"x\"} 2"]);
    report(&new, &[one()]).unwrap();
    assert_eq!(samples(&render(&env), "istio_m"), ["istio_m{a=\"x\"} 3"]);
    new.close();
    assert_eq!(render(&env), "");
}

#[test]
fn reordered_label_names_are_the_same_definition() {
    let (env, _) = env();
    let n = names(&["b", "a"]);
    let one = || {
        inst(
            "m.instance.ns",
            Some(Value::Int64(1)),
            &n,
            vec![s("x"), s("y")],
        )
    };
    let old = build(&env, &one_metric("COUNTER", &["a", "b"], json!({})), &[]);
    report(&old, &[one()]).unwrap();
    let new = build(&env, &one_metric("COUNTER", &["b", "a"], json!({})), &[]);
    old.close();
    report(&new, &[one()]).unwrap();
    assert_eq!(
        samples(&render(&env), "istio_m"),
        ["istio_m{a=\"y\",b=\"x\"} 2"]
    );
}

#[test]
fn reload_with_a_changed_definition_resets_the_family() {
    let (env, _) = env();
    let old = build(&env, &counter_params("old help"), &[]);
    let n = names(&["a"]);
    let one = || inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![s("x")]);
    report(&old, &[one(), one()]).unwrap();

    let new = build(&env, &counter_params("new help"), &[]);
    // Building alone changes nothing visible: the old family serves until the new handler
    // records.
    let text = render(&env);
    assert!(text.contains("# HELP istio_m old help\n"), "{text}");
    assert_eq!(samples(&text, "istio_m"), ["istio_m{a=\"x\"} 2"]);
    report(&new, &[one()]).unwrap();
    let text = render(&env);
    assert!(text.contains("# HELP istio_m new help\n"), "{text}");
    assert_eq!(samples(&text, "istio_m"), ["istio_m{a=\"x\"} 1"]);
    // Requests still running on the old handler do not bring the old family back.
    report(&old, &[one()]).unwrap();
    assert_eq!(samples(&render(&env), "istio_m"), ["istio_m{a=\"x\"} 1"]);
    old.close();
    report(&new, &[one()]).unwrap();
    assert_eq!(samples(&render(&env), "istio_m"), ["istio_m{a=\"x\"} 2"]);

    // Changed buckets are a changed definition too.
    let d = |bounds: Json| {
        json!({"metrics": [{"name": "d", "instance_name": "d.instance.ns", "kind": "DISTRIBUTION",
                            "buckets": {"explicitBuckets": {"bounds": bounds}}}]})
    };
    let none: [Arc<str>; 0] = [];
    let v = || inst("d.instance.ns", Some(Value::Int64(3)), &none, vec![]);
    let h1 = build(&renamed(&env, "d.ns"), &d(json!([1, 5])), &[]);
    report(&h1, &[v()]).unwrap();
    let h2 = build(&renamed(&env, "d.ns"), &d(json!([2, 5])), &[]);
    report(&h2, &[v()]).unwrap();
    let text = render(&env);
    assert!(text.contains("istio_d_bucket{le=\"2\"} 0\n"), "{text}");
    assert!(!text.contains("le=\"1\""), "{text}");
    assert!(text.contains("istio_d_count 1\n"), "{text}");
}

#[test]
fn an_unused_new_definition_takes_over_when_the_old_handler_closes() {
    let (env, _) = env();
    let old = build(&env, &counter_params("old help"), &[]);
    let n = names(&["a"]);
    report(
        &old,
        &[inst(
            "m.instance.ns",
            Some(Value::Int64(1)),
            &n,
            vec![s("x")],
        )],
    )
    .unwrap();
    let new = build(&env, &counter_params("new help"), &[]);
    old.close();
    // The new (still empty) family is the one exposed now.
    assert_eq!(render(&env), "");
    report(
        &new,
        &[inst(
            "m.instance.ns",
            Some(Value::Int64(5)),
            &n,
            vec![s("y")],
        )],
    )
    .unwrap();
    let text = render(&env);
    assert!(text.contains("# HELP istio_m new help\n"), "{text}");
    assert_eq!(samples(&text, "istio_m"), ["istio_m{a=\"y\"} 5"]);
}

#[test]
fn a_handler_dropped_without_closing_leaves_the_exposition_alone() {
    // A configuration built and then rejected: its handlers are dropped, never closed.
    let (env, _) = env();
    let live = build(&env, &counter_params("help"), &[]);
    let n = names(&["a"]);
    let one = || inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![s("x")]);
    report(&live, &[one()]).unwrap();
    let mut changed = counter_params("changed");
    changed["metrics"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "extra", "instance_name": "e.instance.ns", "kind": "GAUGE"}));
    drop(build(&env, &changed, &[]));
    drop(build(&env, &counter_params("help"), &[]));
    report(&live, &[one()]).unwrap();
    let text = render(&env);
    assert!(text.contains("# HELP istio_m help\n"), "{text}");
    assert_eq!(samples(&text, "istio_m"), ["istio_m{a=\"x\"} 2"]);
    // The rejected handler's extra family is gone with it.
    let e = build(&env, &changed, &[]);
    let none: [Arc<str>; 0] = [];
    report(
        &e,
        &[inst("e.instance.ns", Some(Value::Int64(1)), &none, vec![])],
    )
    .unwrap();
    assert!(render(&env).contains("istio_extra 1\n"));
    drop(e);
    assert!(!render(&env).contains("istio_extra"));
}

#[test]
fn closing_removes_only_families_nobody_uses() {
    let (env, _) = env();
    let old = build(&env, &counter_params("help"), &[]);
    let none: [Arc<str>; 0] = [];
    let n = names(&["a"]);
    report(
        &old,
        &[
            inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![s("x")]),
            inst("o.instance.ns", Some(Value::Int64(4)), &none, vec![]),
        ],
    )
    .unwrap();
    // The new version no longer exports `other`.
    let new = build(
        &env,
        &json!({"metrics": [{"name": "m", "instance_name": "m.instance.ns", "kind": "COUNTER",
                             "label_names": ["a"], "description": "help"}]}),
        &[],
    );
    assert!(render(&env).contains("istio_other 4\n"));
    old.close();
    old.close(); // closing twice is harmless
    let text = render(&env);
    assert!(!text.contains("istio_other"), "{text}");
    assert_eq!(samples(&text, "istio_m"), ["istio_m{a=\"x\"} 1"]);
    drop(new);
    assert_eq!(render(&env), "");
}

#[test]
fn handlers_of_other_names_share_identical_metrics_and_conflict_on_different_ones() {
    let (env, _) = env();
    let a = build(
        &renamed(&env, "a.ns"),
        &one_metric("COUNTER", &["a"], json!({})),
        &[],
    );
    let b = build(
        &renamed(&env, "b.ns"),
        &one_metric("COUNTER", &["a"], json!({})),
        &[],
    );
    let n = names(&["a"]);
    let one = || inst("m.instance.ns", Some(Value::Int64(1)), &n, vec![s("x")]);
    report(&a, &[one()]).unwrap();
    report(&b, &[one()]).unwrap();
    assert_eq!(samples(&render(&env), "istio_m"), ["istio_m{a=\"x\"} 2"]);

    let e = try_build(
        &renamed(&env, "c.ns"),
        &one_metric("GAUGE", &["a"], json!({})),
        &[],
    )
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "metric 'istio_m' is already exported with a different definition by handler 'a.ns', 'b.ns'"
    );
    a.close();
    assert_eq!(samples(&render(&env), "istio_m"), ["istio_m{a=\"x\"} 2"]);
    b.close();
    // Nobody exports it any more: another definition is welcome.
    let c = build(
        &renamed(&env, "c.ns"),
        &one_metric("GAUGE", &["a"], json!({})),
        &[],
    );
    report(&c, &[one()]).unwrap();
    assert!(render(&env).contains("# TYPE istio_m gauge\n"));
}

#[test]
fn concurrent_reports_add_up() {
    let (env, _) = env();
    let params = json!({"metrics": [
        {"name": "c", "instance_name": "c.instance.ns", "kind": "COUNTER", "label_names": ["a"]},
        {"name": "d", "instance_name": "d.instance.ns", "kind": "DISTRIBUTION", "label_names": ["a"]},
    ]});
    let h = build(&env, &params, &[]);
    let n = names(&["a"]);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let h = &h;
            let n = &n;
            scope.spawn(move || {
                for i in 0..500 {
                    let label = format!("s{}", (i + t) % 8);
                    report(
                        h,
                        &[
                            inst("c.instance.ns", Some(Value::Int64(1)), n, vec![s(&label)]),
                            inst(
                                "d.instance.ns",
                                Some(Value::Double(0.1)),
                                n,
                                vec![s(&label)],
                            ),
                        ],
                    )
                    .unwrap();
                }
            });
        }
    });
    let text = render(&env);
    let counts: Vec<f64> = samples(&text, "istio_c")
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 8);
    assert_eq!(counts.iter().sum::<f64>(), 2000.0);
    let observed: u64 = samples(&text, "istio_d_count")
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(observed, 2000);
}
