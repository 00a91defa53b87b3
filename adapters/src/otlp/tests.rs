//! End-to-end tests: tracespan instances compiled from Istio's own tracespan config,
//! evaluated over attribute bags, exported to a real OTLP/gRPC receiver started here.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use expr_lang::golib::time::Timestamp;
use expr_lang::{FunctionTable, Manifest, MapBag, NoRecording, StringMapRef, Value};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, Status, span, status};
use serde_json::{Value as Json, json};
use templates::{Handler, InstanceBuilder, TemplateKind};
use tokio::sync::{mpsc, oneshot};

use super::span::CLIENT_SPAN_ID_XOR;
use super::*;
use crate::{Adapter, Env, Resources, ValidateInput};

/// Bound of every wait in these tests (generous: the machine may be busy).
const WAIT: Duration = Duration::from_secs(30);

const TRACE_128: &str = "463ac35c9f6413ad48485a3953bb6124";
const TRACE_64: &str = "48485a3953bb6124";
const SPAN: &str = "a2fb4a1d1a96d312";
const PARENT: &str = "0020000000000001";

/// An OTLP/gRPC trace receiver that hands every request to the test.
struct Receiver {
    requests: mpsc::UnboundedSender<ExportTraceServiceRequest>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.requests.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_receiver() -> (String, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver { requests: tx }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (format!("http://{addr}"), rx)
}

/// An endpoint nothing listens on: a port that was just bound and released.
async fn closed_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// The `default.tracespan` instance of Istio 1.4.10's zipkin integration test
/// (`from-go-tests/mixer__adapter__zipkin__zipkin_integration_test.go--traceSpanConfig.yaml`).
fn istio_tracespan_params() -> Json {
    json!({
        "traceId": "request.headers[\"x-b3-traceid\"] | \"\"",
        "spanId": "request.headers[\"x-b3-spanid\"] | \"\"",
        "parentSpanId": "request.headers[\"x-b3-parentspanid\"] | \"\"",
        "spanName": "request.path | \"/\"",
        "startTime": "request.time",
        "endTime": "response.time",
        "httpStatusCode": "response.code | 0",
        "sourceName": "source.workload.name | \"\"",
        "sourceIp": "source.ip | ip(\"0.0.0.0\")",
        "destinationName": "destination.workload.name | \"\"",
        "destinationIp": "destination.ip | ip(\"0.0.0.0\")",
        "requestSize": "request.size | 0",
        "requestTotalSize": "request.total_size | 0",
        "responseSize": "response.size | 0",
        "responseTotalSize": "response.total_size | 0",
        "apiProtocol": "api.protocol | \"\"",
        "spanTags": {
            "http.host": "request.host | \"\"",
            "http.method": "request.method | \"\"",
            "http.path": "request.path | \"\"",
            "http.user_agent": "request.useragent | \"\"",
            "principal": "request.auth.principal | \"unknown\"",
            "source.version": "source.labels[\"version\"] | \"unknown\"",
            "destination.version": "destination.labels[\"version\"] | \"unknown\""
        }
    })
}

/// The same instance as Istio's Stackdriver/SignalFx tracespans set it up for both
/// proxies: client spans from outbound reports, with client span id rewriting.
fn rewriting_tracespan_params() -> Json {
    let mut p = istio_tracespan_params();
    p["clientSpan"] = json!("(context.reporter.kind | \"inbound\") == \"outbound\"");
    p["rewriteClientSpanId"] = json!("true");
    p
}

fn compile(name: &str, params: &Json) -> InstanceBuilder {
    InstanceBuilder::compile(
        name,
        TemplateKind::TraceSpan,
        params,
        None,
        &Manifest::istio_vocabulary(),
        &FunctionTable::standard(),
    )
    .unwrap_or_else(|e| panic!("{e:#?}"))
}

fn string_map(entries: &[(&str, &str)]) -> Value<'static> {
    let m: BTreeMap<String, String> = entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Value::StringMap(StringMapRef::Owned(Arc::new(m)))
}

/// The attributes of one proxied request: 100 ms, 128 bytes in, 512 out.
fn request(trace: &str, span: &str, parent: &str, reporter: &'static str, code: i64) -> MapBag {
    let mut headers = vec![("x-b3-traceid", trace), ("x-b3-spanid", span)];
    if !parent.is_empty() {
        headers.push(("x-b3-parentspanid", parent));
    }
    MapBag::new()
        .with("request.headers", string_map(&headers))
        .with("request.path", Value::str("/reviews/0"))
        .with("request.host", Value::str("reviews:9080"))
        .with("request.method", Value::str("GET"))
        .with(
            "request.time",
            Value::Timestamp(Timestamp::from_unix(1_500_000_000, 100_000_000)),
        )
        .with(
            "response.time",
            Value::Timestamp(Timestamp::from_unix(1_500_000_000, 200_000_000)),
        )
        .with("response.code", Value::Int64(code))
        .with("request.total_size", Value::Int64(128))
        .with("response.total_size", Value::Int64(512))
        .with("source.workload.name", Value::str("productpage-v1"))
        .with("source.ip", Value::IpAddress(Cow::Owned(vec![10, 0, 0, 1])))
        .with("source.labels", string_map(&[("version", "v1")]))
        .with("destination.workload.name", Value::str("reviews-v2"))
        .with(
            "destination.ip",
            Value::IpAddress(Cow::Owned(vec![10, 0, 0, 2])),
        )
        .with("context.reporter.kind", Value::str(reporter))
}

fn resources() -> Arc<Resources> {
    Arc::new(Resources {
        runtime: Some(tokio::runtime::Handle::current()),
        ..Default::default()
    })
}

fn build(
    adapter: &dyn crate::DynAdapter,
    handler: &str,
    params: Json,
    resources: &Arc<Resources>,
) -> Arc<dyn Handler> {
    let validated = adapter
        .validate(&ValidateInput {
            handler,
            params: &params,
            instances: &[],
        })
        .config
        .unwrap_or_else(|e| panic!("{e:#?}"));
    adapter
        .build(
            validated,
            &Env {
                handler: handler.to_owned(),
                resources: resources.clone(),
            },
        )
        .unwrap()
}

/// Sends one instance per bag.
fn send(handler: &dyn Handler, builder: &InstanceBuilder, bags: &[MapBag]) {
    let instances: Vec<_> = bags
        .iter()
        .map(|b| builder.tracespan(b, &mut NoRecording).unwrap())
        .collect();
    handler
        .trace_span()
        .unwrap()
        .handle_trace_span(&instances)
        .unwrap();
}

/// Closes from a plain thread (no runtime context: close() blocks there), without
/// blocking the test's runtime, within [`WAIT`].
async fn close(handler: Arc<dyn Handler>) {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        handler.close();
        let _ = tx.send(());
    });
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("close() returns")
        .unwrap();
}

/// A received span with the service (and address) of its Resource.
struct Received {
    service: String,
    host_ip: Option<String>,
    span: Span,
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            any_value::Value::ArrayValue(a) => match a.values.first()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        }
    })
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    })
}

/// Everything received so far (call after close(): exports have completed by then).
fn drain(rx: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>) -> Vec<Received> {
    let mut out = Vec::new();
    while let Ok(req) = rx.try_recv() {
        for rs in req.resource_spans {
            let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let service = string_attr(&attrs, "service.name").expect("service.name");
            let host_ip = string_attr(&attrs, "host.ip");
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push(Received {
                        service: service.clone(),
                        host_ip: host_ip.clone(),
                        span,
                    });
                }
            }
        }
    }
    out
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn id(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn find<'a>(spans: &'a [Received], span_id: &[u8], kind: span::SpanKind) -> &'a Received {
    spans
        .iter()
        .find(|r| r.span.span_id == span_id && r.span.kind == kind as i32)
        .unwrap_or_else(|| panic!("no {kind:?} span {span_id:02x?}"))
}

/// Value of a counter of `family` for `handler` in the adapters' self-metrics.
fn counter(resources: &Resources, family: &str, handler: &str) -> f64 {
    resources
        .metrics
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "handler" && l.value() == handler)
        })
        .map(|m| m.get_counter().value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_otlp_receiver() {
    let (endpoint, mut rx) = start_receiver().await;
    let handler_name = "otlp-mapping.istio-system";
    let res = resources();
    // A delay far beyond the test and batches bigger than what is sent: the spans can
    // only leave through close()'s flush.
    let handler = build(
        &ADAPTER,
        handler_name,
        json!({
            "endpoint": endpoint, "sampleProbability": 1, "serviceName": "mesh-default",
            "scheduledDelay": "1h", "maxExportBatchSize": 100
        }),
        &res,
    );
    let istio = compile("default.instance.istio-system", &istio_tracespan_params());
    let rewriting = compile(
        "rewriting.instance.istio-system",
        &rewriting_tracespan_params(),
    );

    // Istio's config: every span is a server span with the B3 ids as they are.
    let mut unnamed = request(TRACE_64, "00000000000000a1", "", "inbound", 200);
    unnamed.insert("destination.workload.name", Value::str(""));
    unnamed.insert("destination.ip", Value::IpAddress(Cow::Owned(vec![0; 4])));
    send(
        &*handler,
        &istio,
        &[
            request(TRACE_128, SPAN, PARENT, "inbound", 200),
            unnamed,
            // No span for these: bad trace id, no span id.
            request("xyz", SPAN, PARENT, "inbound", 200),
            request(TRACE_128, "", PARENT, "inbound", 200),
        ],
    );
    // Both halves of one request through the rewriting instance.
    send(
        &*handler,
        &rewriting,
        &[
            request(TRACE_128, "00000000000000b2", PARENT, "outbound", 404),
            request(TRACE_128, "00000000000000b2", PARENT, "inbound", 503),
        ],
    );
    close(handler).await;

    let spans = drain(&mut rx);
    assert_eq!(
        spans.len(),
        4,
        "{:#?}",
        spans.iter().map(|s| &s.span).collect::<Vec<_>>()
    );
    assert_eq!(
        counter(
            &res,
            "mixer_adapter_trace_spans_exported_total",
            handler_name
        ),
        4.0
    );
    assert_eq!(
        counter(
            &res,
            "mixer_adapter_trace_spans_dropped_total",
            handler_name
        ),
        0.0
    );

    // The server span of Istio's config.
    let s = find(&spans, &hex(SPAN), span::SpanKind::Server);
    assert_eq!(s.service, "reviews-v2");
    assert_eq!(s.host_ip.as_deref(), Some("10.0.0.2"));
    let sp = &s.span;
    assert_eq!(sp.trace_id, hex(TRACE_128));
    assert_eq!(sp.parent_span_id, hex(PARENT));
    assert_eq!(sp.name, "/reviews/0");
    assert_eq!(sp.start_time_unix_nano, 1_500_000_000_100_000_000);
    assert_eq!(sp.end_time_unix_nano, 1_500_000_000_200_000_000);
    // Sampled, and "the parent is remote" (with the flag saying the bit is known).
    assert_eq!(sp.flags, 0x01 | 0x100 | 0x200);
    assert_eq!(int_attr(&sp.attributes, "http.status_code"), Some(200));
    for (key, value) in [
        ("http.host", "reviews:9080"),
        ("http.method", "GET"),
        ("http.path", "/reviews/0"),
        ("http.user_agent", ""),
        ("principal", "unknown"),
        ("source.version", "v1"),
        ("destination.version", "unknown"),
    ] {
        assert_eq!(
            string_attr(&sp.attributes, key).as_deref(),
            Some(value),
            "{key}"
        );
    }
    assert_eq!(sp.attributes.len(), 8);
    let st = sp.status.as_ref().unwrap();
    assert_eq!(st.code, status::StatusCode::Ok as i32);
    assert_eq!(sp.events.len(), 2);
    let (req, resp) = (&sp.events[0], &sp.events[1]);
    assert_eq!(req.name, "message");
    assert_eq!(req.time_unix_nano, sp.start_time_unix_nano);
    assert_eq!(
        string_attr(&req.attributes, "message.type").as_deref(),
        Some("RECEIVED")
    );
    assert_eq!(
        int_attr(&req.attributes, "message.uncompressed_size"),
        Some(128)
    );
    assert_eq!(resp.time_unix_nano, sp.end_time_unix_nano);
    assert_eq!(
        string_attr(&resp.attributes, "message.type").as_deref(),
        Some("SENT")
    );
    assert_eq!(
        int_attr(&resp.attributes, "message.uncompressed_size"),
        Some(512)
    );

    // A 64-bit trace id fills the low half; no destination name ⇒ the configured
    // service name; 0.0.0.0 ⇒ no address; no parent ⇒ a root span.
    let s = find(&spans, &id(0xa1), span::SpanKind::Server);
    assert_eq!(s.service, "mesh-default");
    assert_eq!(s.host_ip, None);
    let mut expected_trace = vec![0u8; 8];
    expected_trace.extend(hex(TRACE_64));
    assert_eq!(s.span.trace_id, expected_trace);
    assert!(s.span.parent_span_id.is_empty());
    assert_eq!(s.span.flags, 0x01 | 0x100);

    // The client half: its own span id, the B3 parent, the source's service.
    let c = find(
        &spans,
        &id(0xb2 ^ CLIENT_SPAN_ID_XOR),
        span::SpanKind::Client,
    );
    assert_eq!(c.service, "productpage-v1");
    assert_eq!(c.host_ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(c.span.parent_span_id, hex(PARENT));
    assert_eq!(c.span.flags, 0x01 | 0x100);
    let st = c.span.status.as_ref().unwrap();
    assert_eq!(st.code, status::StatusCode::Error as i32);
    assert_eq!(st.message, "NOT_FOUND");
    assert_eq!(int_attr(&c.span.attributes, "http.status_code"), Some(404));
    assert_eq!(
        string_attr(&c.span.events[0].attributes, "message.type").as_deref(),
        Some("SENT")
    );

    // The server half: the B3 span id, child of the client half.
    let s = find(&spans, &id(0xb2), span::SpanKind::Server);
    assert_eq!(s.service, "reviews-v2");
    assert_eq!(s.span.parent_span_id, id(0xb2 ^ CLIENT_SPAN_ID_XOR));
    assert_eq!(s.span.status.as_ref().unwrap().message, "UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_on_schedule_and_per_service() {
    let (endpoint, mut rx) = start_receiver().await;
    let handler = build(
        &ADAPTER,
        "otlp-batches.istio-system",
        json!({"endpoint": endpoint, "sampleProbability": 1.0, "scheduledDelay": "10ms"}),
        &resources(),
    );
    let istio = compile("default.instance.istio-system", &istio_tracespan_params());
    let mut other = request(TRACE_128, "00000000000000c2", PARENT, "inbound", 200);
    other.insert("destination.workload.name", Value::str("ratings-v1"));
    send(
        &*handler,
        &istio,
        &[
            request(TRACE_128, "00000000000000c1", PARENT, "inbound", 200),
            other,
        ],
    );
    // No close(): the background task exports after the scheduled delay, one
    // Resource per service.
    let mut services = Vec::new();
    while services.len() < 2 {
        let req = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("spans are exported without close()")
            .unwrap();
        for rs in req.resource_spans {
            let attrs = rs.resource.unwrap().attributes;
            let spans: usize = rs.scope_spans.iter().map(|s| s.spans.len()).sum();
            services.push((string_attr(&attrs, "service.name").unwrap(), spans));
        }
    }
    services.sort();
    assert_eq!(
        services,
        vec![("ratings-v1".to_owned(), 1), ("reviews-v2".to_owned(), 1)]
    );
    close(handler).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_handlers_export_over_otlp_with_their_sampling() {
    let (endpoint, mut rx) = start_receiver().await;
    let adapter = ZipkinAdapter {
        endpoint: EndpointSource::Fixed(Box::leak(endpoint.into_boxed_str())),
    };
    assert_eq!(adapter.unavailable(), None);
    let istio = compile("default.tracespan.istio-system", &istio_tracespan_params());
    let res = resources();

    // Istio's zipkin handler (`sampleProbability: 1.0`, no url).
    let h = build(
        &adapter,
        "handler.zipkin.istio-system",
        json!({"sampleProbability": 1.0}),
        &res,
    );
    send(
        &*h,
        &istio,
        &[request(TRACE_128, SPAN, PARENT, "inbound", 200)],
    );
    close(h).await;
    let spans = drain(&mut rx);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].span.span_id, hex(SPAN));
    assert_eq!(spans[0].service, "reviews-v2");

    // Zipkin's default probability, 0: nothing is exported, whatever the url.
    let h = build(
        &adapter,
        "zipkin0.zipkin.istio-system",
        json!({"url": "http://zipkin.istio-system:9411/api/v2/spans"}),
        &res,
    );
    send(
        &*h,
        &istio,
        &[request(TRACE_128, SPAN, PARENT, "inbound", 200)],
    );
    close(h).await;
    assert_eq!(drain(&mut rx).len(), 0);
    assert_eq!(
        counter(
            &res,
            "mixer_adapter_trace_spans_exported_total",
            "zipkin0.zipkin.istio-system"
        ),
        0.0
    );

    // A bad endpoint makes the adapter unavailable, with the reason.
    let bad = ZipkinAdapter {
        endpoint: EndpointSource::Fixed("collector:4317"),
    };
    let reason = bad.unavailable().unwrap();
    assert!(
        reason.contains("OTLP/gRPC endpoint") && reason.contains("scheme"),
        "{reason}"
    );
    // Without the standard variables, the reason says how to enable zipkin handlers.
    if std::env::var_os(TRACES_ENDPOINT_VAR).is_none() && std::env::var_os(ENDPOINT_VAR).is_none() {
        let reason = ZIPKIN_ADAPTER.unavailable().unwrap();
        assert!(reason.contains(TRACES_ENDPOINT_VAR), "{reason}");
        assert!(reason.contains("Zipkin HTTP endpoint"), "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_collector_never_blocks_and_drops_are_counted() {
    let endpoint = closed_endpoint().await;
    let handler_name = "otlp-unreachable.istio-system";
    let res = resources();
    let params = json!({
        "endpoint": endpoint, "sampleProbability": 1, "timeout": "2s",
        "maxQueueSize": 2, "maxExportBatchSize": 1, "scheduledDelay": "1h"
    });
    let istio = Arc::new(compile(
        "default.instance.istio-system",
        &istio_tracespan_params(),
    ));

    for round in 1..=2u32 {
        // The same handler name on the same registry, as after a config reload: the
        // self-metrics are registered again and continue.
        let handler = build(&ADAPTER, handler_name, params.clone(), &res);
        let (h, b) = (handler.clone(), istio.clone());
        let sending = tokio::task::spawn_blocking(move || {
            let bags: Vec<MapBag> = (1..=50u64)
                .map(|i| request(TRACE_128, &format!("{i:016x}"), PARENT, "inbound", 200))
                .collect();
            // One Report with 50 spans: they are pushed under one lock, so exactly the
            // queue's capacity is accepted, however fast the export task is.
            send(&*h, &b, &bags);
        });
        tokio::time::timeout(WAIT, sending)
            .await
            .expect("handle_trace_span does not wait for the collector")
            .unwrap();
        let dropped = counter(
            &res,
            "mixer_adapter_trace_spans_dropped_total",
            handler_name,
        );
        assert_eq!(dropped, f64::from(48 * round));

        // close() tries to flush what is queued; the collector is unreachable, so those
        // spans fail (or, if the flush runs out of time, are dropped): none is unaccounted.
        close(handler).await;
        let dropped = counter(
            &res,
            "mixer_adapter_trace_spans_dropped_total",
            handler_name,
        );
        let failed = counter(&res, "mixer_adapter_trace_spans_failed_total", handler_name);
        let exported = counter(
            &res,
            "mixer_adapter_trace_spans_exported_total",
            handler_name,
        );
        assert_eq!(exported, 0.0);
        assert_eq!(
            dropped + failed,
            f64::from(50 * round),
            "dropped {dropped}, failed {failed}"
        );
    }
    let families: Vec<String> = res
        .metrics
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert_eq!(
        families
            .iter()
            .filter(|n| *n == "mixer_adapter_trace_spans_dropped_total")
            .count(),
        1,
        "{families:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_without_room_are_counted_as_dropped_only_when_they_would_exist() {
    let endpoint = closed_endpoint().await;
    let name = "otlp-no-room.istio-system";
    let res = resources();
    let params = json!({
        "endpoint": endpoint, "sampleProbability": 1, "timeout": "1s",
        "maxQueueSize": 2, "maxExportBatchSize": 2, "scheduledDelay": "1h"
    });
    let handler = build(&ADAPTER, name, params, &res);
    let istio = compile("default.instance.istio-system", &istio_tracespan_params());
    // Past the queue's room: three spans, and instances without a valid trace or span
    // id, which have no span to drop.
    let mut bags: Vec<MapBag> = (1..=5u64)
        .map(|i| request(TRACE_128, &format!("{i:016x}"), PARENT, "inbound", 200))
        .collect();
    bags.insert(3, request("xyz", SPAN, PARENT, "inbound", 200));
    bags.push(request(
        TRACE_128,
        "0000000000000000",
        PARENT,
        "inbound",
        200,
    ));
    send(&*handler, &istio, &bags);
    assert_eq!(
        counter(&res, "mixer_adapter_trace_spans_dropped_total", name),
        3.0
    );
    close(handler).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_handler_drops_and_close_is_idempotent() {
    let (endpoint, mut rx) = start_receiver().await;
    let name = "otlp-closed.istio-system";
    let res = resources();
    let handler = build(
        &ADAPTER,
        name,
        json!({"endpoint": endpoint, "sampleProbability": 1}),
        &res,
    );
    // close() on a runtime worker thread (it waits in place there, bounded by the
    // export timeout), then again from a plain thread: the second call does nothing.
    handler.close();
    close(handler.clone()).await;
    let istio = compile("default.instance.istio-system", &istio_tracespan_params());
    send(
        &*handler,
        &istio,
        &[request(TRACE_128, SPAN, PARENT, "inbound", 200)],
    );
    assert_eq!(
        counter(&res, "mixer_adapter_trace_spans_dropped_total", name),
        1.0
    );
    assert_eq!(drain(&mut rx).len(), 0);
}

#[test]
fn adapters_are_listed_for_tracespan() {
    for (name, adapter) in [
        ("otlp", crate::find("otlp")),
        ("zipkin", crate::find("zipkin")),
    ] {
        let adapter = adapter.unwrap_or_else(|| panic!("{name} is in the inventory"));
        assert_eq!(adapter.templates(), &[TemplateKind::TraceSpan]);
    }
    assert_eq!(ADAPTER.unavailable(), None);
}

#[test]
fn building_needs_a_runtime_and_a_valid_endpoint() {
    let params = json!({"sampleProbability": 1});
    let validated = ADAPTER
        .validate(&ValidateInput {
            handler: "h",
            params: &params,
            instances: &[],
        })
        .config
        .unwrap();
    let err = ADAPTER
        .build(validated, &Env::standalone("h.istio-system"))
        .err()
        .expect("no runtime");
    assert!(matches!(err, BuildError::NoRuntime(_)), "{err}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Config validation admits https; TLS is set up with the bundled roots.
    let config = Config {
        endpoint: "https://collector.example:4317".into(),
        ..zipkin_to_otlp(
            &ZipkinConfig {
                url: None,
                sample_probability: 1.0,
            },
            String::new(),
        )
    };
    let _guard = rt.enter();
    build_exporter(&config).unwrap();
    let mut headers = BTreeMap::new();
    headers.insert("authorization".to_owned(), "Bearer x".to_owned());
    build_exporter(&Config { headers, ..config }).unwrap();
}

/// A string attribute as OTLP carries it.
fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// The message event at `at` with `bytes` (`message.type` RECEIVED when `received`).
fn message_event(at: u64, received: bool, bytes: i64) -> span::Event {
    span::Event {
        time_unix_nano: at,
        name: "message".to_owned(),
        attributes: vec![
            kv_str("message.type", if received { "RECEIVED" } else { "SENT" }),
            kv(
                "message.uncompressed_size",
                any_value::Value::IntValue(bytes),
            ),
        ],
        dropped_attributes_count: 0,
    }
}

/// Every field of the exported messages, written down from what the
/// opentelemetry-SDK exporter sent before export was rewritten: ids, flags, kind,
/// times, attributes in the configuration's order (typed tags included; a tag named
/// like the status code attribute replaces it in place), events, status, the Resource's
/// attributes and the instrumentation scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_span_fields_are_exactly_as_before() {
    let (endpoint, mut rx) = start_receiver().await;
    let handler = build(
        &ADAPTER,
        "otlp-fields.istio-system",
        json!({"endpoint": endpoint, "sampleProbability": 1, "scheduledDelay": "1h"}),
        &resources(),
    );
    let mut params = rewriting_tracespan_params();
    params["spanTags"]["size"] = json!("request.total_size | 0");
    params["spanTags"]["weight"] = json!("0.25");
    params["spanTags"]["took"] = json!("response.duration");
    params["spanTags"]["http.status_code"] = json!("\"overridden\"");
    let typed = compile("typed.instance.istio-system", &params);
    let with_duration = |mut bag: MapBag| {
        bag.insert("response.duration", Value::Duration(1_500_000_000));
        bag
    };
    send(
        &*handler,
        &typed,
        &[
            with_duration(request(
                TRACE_128,
                "00000000000000d1",
                PARENT,
                "inbound",
                200,
            )),
            with_duration(request(TRACE_64, "00000000000000d2", "", "outbound", 404)),
        ],
    );
    close(handler).await;

    let mut requests = Vec::new();
    while let Ok(r) = rx.try_recv() {
        requests.push(r);
    }
    let mut resource_spans: Vec<_> = requests
        .into_iter()
        .flat_map(|r| r.resource_spans)
        .collect();
    resource_spans
        .sort_by_key(|rs| string_attr(&rs.resource.as_ref().unwrap().attributes, "service.name"));
    assert_eq!(resource_spans.len(), 2, "{resource_spans:#?}");

    let tags = |status_code: &str| {
        vec![
            kv_str("http.status_code", status_code),
            kv_str("http.host", "reviews:9080"),
            kv_str("http.method", "GET"),
            kv_str("http.path", "/reviews/0"),
            kv_str("http.user_agent", ""),
            kv_str("principal", "unknown"),
            kv_str("source.version", "v1"),
            kv_str("destination.version", "unknown"),
            kv("size", any_value::Value::IntValue(128)),
            kv("weight", any_value::Value::DoubleValue(0.25)),
            kv_str("took", "1.5s"),
        ]
    };
    let (start, end) = (1_500_000_000_100_000_000, 1_500_000_000_200_000_000);
    let mut trace_64 = vec![0u8; 8];
    trace_64.extend(hex(TRACE_64));
    let client = Span {
        trace_id: trace_64,
        span_id: id(0xd2 ^ CLIENT_SPAN_ID_XOR),
        trace_state: String::new(),
        parent_span_id: Vec::new(),
        flags: 0x01 | 0x100,
        name: "/reviews/0".to_owned(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: tags("overridden"),
        dropped_attributes_count: 0,
        events: vec![
            message_event(start, false, 128),
            message_event(end, true, 512),
        ],
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(Status {
            message: "NOT_FOUND".to_owned(),
            code: status::StatusCode::Error as i32,
        }),
    };
    let server = Span {
        trace_id: hex(TRACE_128),
        span_id: id(0xd1),
        parent_span_id: id(0xd1 ^ CLIENT_SPAN_ID_XOR),
        flags: 0x01 | 0x100 | 0x200,
        kind: span::SpanKind::Server as i32,
        events: vec![
            message_event(start, true, 128),
            message_event(end, false, 512),
        ],
        status: Some(Status {
            message: String::new(),
            code: status::StatusCode::Ok as i32,
        }),
        ..client.clone()
    };
    let scope = InstrumentationScope {
        name: "mixer.adapter.tracespan".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    };
    for (rs, (service, ip, span)) in resource_spans.into_iter().zip([
        ("productpage-v1", "10.0.0.1", client),
        ("reviews-v2", "10.0.0.2", server),
    ]) {
        assert_eq!(rs.schema_url, "");
        let resource = rs.resource.unwrap();
        let mut attributes = resource.attributes;
        attributes.sort_by(|a, b| a.key.cmp(&b.key));
        let ip = ArrayValue {
            values: vec![AnyValue {
                value: Some(any_value::Value::StringValue(ip.to_owned())),
            }],
        };
        assert_eq!(
            attributes,
            vec![
                kv("host.ip", any_value::Value::ArrayValue(ip)),
                kv_str("service.name", service),
            ]
        );
        assert_eq!(resource.dropped_attributes_count, 0);
        assert!(resource.entity_refs.is_empty());
        assert_eq!(
            rs.scope_spans,
            vec![ScopeSpans {
                scope: Some(scope.clone()),
                spans: vec![span],
                schema_url: String::new(),
            }]
        );
    }
}

/// A batch is one `ExportTraceServiceRequest`, with one `ResourceSpans` per service and
/// address, each holding that service's spans in the order they were reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_per_batch_carries_every_service() {
    let (endpoint, mut rx) = start_receiver().await;
    let name = "otlp-one-request.istio-system";
    let res = resources();
    let handler = build(
        &ADAPTER,
        name,
        json!({"endpoint": endpoint, "sampleProbability": 1, "scheduledDelay": "1h"}),
        &res,
    );
    let istio = compile("default.instance.istio-system", &istio_tracespan_params());
    let services = [
        "ratings-v1",
        "reviews-v2",
        "details-v1",
        "reviews-v2",
        "ratings-v1",
    ];
    let bags: Vec<MapBag> = services
        .iter()
        .enumerate()
        .map(|(i, service)| {
            let mut bag = request(
                TRACE_128,
                &format!("{:016x}", i + 1),
                PARENT,
                "inbound",
                200,
            );
            bag.insert("destination.workload.name", Value::str(service));
            bag
        })
        .collect();
    // Another address for one of the services: a Resource of its own.
    let mut moved = request(TRACE_128, "00000000000000ff", PARENT, "inbound", 200);
    moved.insert(
        "destination.ip",
        Value::IpAddress(Cow::Owned(vec![10, 0, 0, 9])),
    );
    send(&*handler, &istio, &bags);
    send(&*handler, &istio, &[moved]);
    close(handler).await;

    let request = rx.try_recv().expect("one export request");
    assert!(rx.try_recv().is_err(), "a second export request");
    let mut groups: Vec<(String, String, Vec<Vec<u8>>)> = request
        .resource_spans
        .into_iter()
        .map(|rs| {
            let attrs = rs.resource.unwrap().attributes;
            assert_eq!(rs.scope_spans.len(), 1);
            let spans = rs.scope_spans[0].spans.iter().map(|s| s.span_id.clone());
            (
                string_attr(&attrs, "service.name").unwrap(),
                string_attr(&attrs, "host.ip").unwrap(),
                spans.collect(),
            )
        })
        .collect();
    groups.sort();
    let group = |service: &str, ip: &str, ids: &[u64]| {
        let ids = ids.iter().map(|i| id(*i)).collect();
        (service.to_owned(), ip.to_owned(), ids)
    };
    assert_eq!(
        groups,
        vec![
            group("details-v1", "10.0.0.2", &[3]),
            group("ratings-v1", "10.0.0.2", &[1, 5]),
            group("reviews-v2", "10.0.0.2", &[2, 4]),
            group("reviews-v2", "10.0.0.9", &[0xff]),
        ]
    );
    assert_eq!(
        counter(&res, "mixer_adapter_trace_spans_exported_total", name),
        6.0
    );
}

/// A failed export names the endpoint and the gRPC code, never the headers' values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_errors_name_the_endpoint_without_secrets() {
    let endpoint = closed_endpoint().await;
    let mut headers = BTreeMap::new();
    headers.insert("authorization".to_owned(), "Bearer s3cret-token".to_owned());
    let config = Config {
        endpoint: endpoint.clone(),
        headers,
        timeout: Duration::from_secs(2),
        ..zipkin_to_otlp(
            &ZipkinConfig {
                url: None,
                sample_probability: 1.0,
            },
            String::new(),
        )
    };
    let exporter = build_exporter(&config).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let error = exporter
        .export(export::encode_request(Vec::new()), deadline)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(&endpoint), "{error}");
    assert!(error.contains("Unavailable"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
}
