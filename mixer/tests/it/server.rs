//! The real server on loopback, called with a tonic client built from the project's protos.

use std::time::Duration;

use crate::common::*;
use expr_lang::Value;
use mixer::api::mixer::decode_referenced;
use mixer::attrs::{GLOBAL_WORD_COUNT, encode_report};
use mixer::runtime::PolicyErrorMode;
use mixer::runtime::{Condition, Reference};
use mixer::wire::pb::istio::mixer::v1::{CompressedAttributes, ReportRequest, report_request};
use tonic::Code;

const DENY_BY_LABEL: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyall, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: Not allowed}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-untrusted, namespace: istio-system}
spec:
  match: source.labels["app"] == "untrusted"
  actions:
  - handler: denyall
    instances: [denyrequest]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: mark, namespace: istio-system}
spec:
  match: (request.headers["x-mark"] | "") != ""
  requestHeaderOperations:
  - name: x-marked
    values: ['request.headers["x-mark"]', '"always"', '""']
  responseHeaderOperations:
  - name: x-remove-me
    operation: REMOVE
"#;

const NOOP_REPORT: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: sink, namespace: istio-system}
spec:
  compiledAdapter: noop
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestsize, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: request.size
    dimensions:
      path: request.path | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: report-all, namespace: istio-system}
spec:
  actions:
  - handler: sink
    instances: [requestsize]
"#;

#[tokio::test]
async fn denier_rule_by_source_label_with_referenced_attributes() {
    let dir = config_dir(&[("deny.yaml", DENY_BY_LABEL)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;

    let denied = check(
        &mut c,
        &[
            ("source.labels", map(&[("app", "untrusted")])),
            ("destination.namespace", s("default")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        status_of(&denied),
        (7, "denyall.istio-system:Not allowed".to_owned())
    );
    let pre = denied.precondition.unwrap();
    assert_eq!(pre.valid_use_count, 1000);
    assert_eq!(pre.valid_duration.unwrap().seconds, 5);
    let refs: Vec<(String, Option<String>, Condition)> =
        decode_referenced(pre.referenced_attributes.as_ref().unwrap())
            .unwrap()
            .iter()
            .map(|r: &Reference| (r.name.clone(), r.map_key.clone(), r.condition))
            .collect();
    assert!(
        refs.contains(&("source.labels".into(), Some("app".into()), Condition::Exact)),
        "{refs:?}"
    );
    assert!(
        refs.contains(&("context.reporter.kind".into(), None, Condition::Absence)),
        "{refs:?}"
    );
    assert!(
        refs.contains(&("destination.namespace".into(), None, Condition::Exact)),
        "{refs:?}"
    );
    // A present map by itself is not referenced, only its keys.
    assert!(
        !refs
            .iter()
            .any(|(n, k, _)| n == "source.labels" && k.is_none()),
        "{refs:?}"
    );

    let allowed = check(&mut c, &[("source.labels", map(&[("app", "reviews")]))])
        .await
        .unwrap();
    assert_eq!(status_of(&allowed).0, 0);
    let pre = allowed.precondition.unwrap();
    // Nothing answered: Mixer's defaults.
    assert_eq!(pre.valid_duration.unwrap().seconds, 60);
    assert_eq!(pre.valid_use_count, 10000);

    // A missing label map: the match fails to evaluate, the rule does not apply (mixer mode).
    let no_labels = check(&mut c, &[]).await.unwrap();
    assert_eq!(status_of(&no_labels).0, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn policy_errors_closed_mode_denies_and_counts() {
    let dir = config_dir(&[("deny.yaml", DENY_BY_LABEL)]);
    let server = start_server(dir.path(), PolicyErrorMode::Closed).await;
    let mut c = client(&server).await;
    let r = check(&mut c, &[]).await.unwrap();
    let (code, msg) = status_of(&r);
    assert_eq!(code, 7);
    assert!(msg.contains("deny-untrusted.rule.istio-system"), "{msg}");
    assert!(msg.contains("lookup failed: 'source.labels'"), "{msg}");
    let (_, scrape) = http_get(&server, "/metrics").await;
    assert_eq!(
        metric_value(
            &scrape,
            "mixer_policy_errors_total",
            &[
                "rule=\"deny-untrusted.rule.istio-system\"",
                "stage=\"match\""
            ]
        ),
        Some(1.0),
        "{scrape}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn check_instance_build_failure_is_internal_in_mixer_mode() {
    let config = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: allow, namespace: istio-system}
spec:
  compiledAdapter: noop
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: entry, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: source.user
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: lookup, namespace: istio-system}
spec:
  actions:
  - handler: allow
    instances: [entry]
"#;
    let dir = config_dir(&[("list.yaml", config)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let err = check(&mut c, &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.message()
            .starts_with("performing check operation failed:"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("lookup failed: 'source.user'"),
        "{}",
        err.message()
    );
    let ok = check(&mut c, &[("source.user", s("alice"))]).await.unwrap();
    assert_eq!(status_of(&ok).0, 0);
    server.shutdown().await.unwrap();

    let server = start_server(dir.path(), PolicyErrorMode::Closed).await;
    let mut c = client(&server).await;
    let r = check(&mut c, &[]).await.unwrap();
    let (code, msg) = status_of(&r);
    assert_eq!(code, 7);
    assert!(
        msg.contains("lookup.rule.istio-system") && msg.contains("entry.instance.istio-system"),
        "{msg}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn header_operations_only_when_ok() {
    let dir = config_dir(&[("deny.yaml", DENY_BY_LABEL)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let r = check(
        &mut c,
        &[
            ("request.headers", map(&[("x-mark", "blue")])),
            ("source.labels", map(&[("app", "ok")])),
        ],
    )
    .await
    .unwrap();
    let rd = r
        .precondition
        .unwrap()
        .route_directive
        .expect("route directive");
    let req: Vec<_> = rd
        .request_header_operations
        .iter()
        .map(|o| (o.name.as_str(), o.value.as_str(), o.operation))
        .collect();
    // The empty value suppresses its operation.
    assert_eq!(
        req,
        vec![("x-marked", "blue", 0), ("x-marked", "always", 0)]
    );
    assert_eq!(rd.response_header_operations[0].name, "x-remove-me");
    assert_eq!(rd.response_header_operations[0].operation, 1);

    // Denied: no header operations.
    let r = check(
        &mut c,
        &[
            ("request.headers", map(&[("x-mark", "blue")])),
            ("source.labels", map(&[("app", "untrusted")])),
        ],
    )
    .await
    .unwrap();
    assert!(r.precondition.unwrap().route_directive.is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn direct_http_response_from_denier_details() {
    let config = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: redirect, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status:
      code: 16
      message: login first
      details:
      - "@type": type.googleapis.com/istio.policy.v1beta1.DirectHttpResponse
        code: Found
        body: see /login
        headers: {location: /login, Set-Cookie: "a=1,b=2"}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: login, namespace: istio-system}
spec:
  match: request.path == "/private"
  actions:
  - handler: redirect
    instances: [nothing]
"#;
    let dir = config_dir(&[("redirect.yaml", config)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let r = check(&mut c, &[("request.path", s("/private"))])
        .await
        .unwrap();
    assert_eq!(status_of(&r).0, 16);
    let rd = r.precondition.unwrap().route_directive.unwrap();
    assert_eq!(rd.direct_response_code, 302);
    assert_eq!(rd.direct_response_body, "see /login");
    let ops: Vec<_> = rd
        .response_header_operations
        .iter()
        .map(|o| (o.name.as_str(), o.value.as_str(), o.operation))
        .collect();
    assert_eq!(
        ops,
        vec![
            ("Set-Cookie", "a=1", 2),
            ("Set-Cookie", "b=2", 2),
            ("location", "/login", 0)
        ]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dictionary_skew_and_malformed_attributes() {
    let dir = config_dir(&[("deny.yaml", DENY_BY_LABEL)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;

    let mut req = check_request(&[("request.path", s("/x"))], &[]);
    req.global_word_count = GLOBAL_WORD_COUNT as u32 + 1;
    let err = c.check(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("Request could not be processed due to invalid"),
        "{}",
        err.message()
    );
    // A smaller dictionary (Envoy's fallback to 111 words) is fine.
    let mut req = check_request(&[("request.path", s("/x"))], &[]);
    req.global_word_count = 111;
    assert!(c.check(req).await.is_ok());

    // An index past the message words.
    let mut attrs = CompressedAttributes::default();
    attrs.strings.insert(-5, 3);
    let mut req = check_request(&[], &[]);
    req.attributes = Some(attrs);
    let err = c.check(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("-5"), "{}", err.message());

    // A global index past the dictionary, in a report.
    let mut bad = CompressedAttributes::default();
    bad.int64s.insert(9999, 1);
    let err = c
        .report(ReportRequest {
            attributes: vec![bad],
            default_words: vec![],
            global_word_count: 222,
            repeated_attributes_semantics:
                report_request::RepeatedAttributesSemantics::IndependentEncoding as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("9999"), "{}", err.message());

    // The server keeps serving.
    let r = check(&mut c, &[("source.labels", map(&[("app", "untrusted")]))])
        .await
        .unwrap();
    assert_eq!(status_of(&r).0, 7);
    let (_, scrape) = http_get(&server, "/metrics").await;
    assert_eq!(
        metric_value(&scrape, "mixer_api_decode_errors_total", &["api=\"check\""]),
        Some(1.0)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn envoy_report_batches_and_delta_encoding() {
    let dir = config_dir(&[("report.yaml", NOOP_REPORT)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;

    // INDEPENDENT_ENCODING with shared default_words, as Envoy sends it.
    let bags: Vec<Vec<(String, Value<'static>)>> = (0..100)
        .map(|i| {
            vec![
                ("request.size".to_owned(), Value::Int64(i)),
                ("request.path".to_owned(), s(&format!("/items/{i}"))),
                ("source.workload.name".to_owned(), s("productpage-v1")),
            ]
        })
        .collect();
    let req = encode_report(GLOBAL_WORD_COUNT as u32, &bags);
    assert!(req.attributes.iter().all(|a| a.words.is_empty()));
    assert!(!req.default_words.is_empty());
    c.report(req).await.unwrap();
    let (_, scrape) = http_get(&server, "/metrics").await;
    assert_eq!(
        metric_value(&scrape, "mixer_api_report_attribute_sets_total", &[]),
        Some(100.0)
    );
    assert_eq!(
        metric_value(
            &scrape,
            "mixer_runtime_dispatches_total",
            &[
                "meshFunction=\"metric\"",
                "handler=\"sink.istio-system\"",
                "error=\"false\""
            ]
        ),
        Some(1.0),
        "one batched call for 100 instances: {scrape}"
    );

    // DELTA_ENCODING: the second element inherits request.size from the first.
    let two = vec![
        vec![
            ("request.size".to_owned(), Value::Int64(5)),
            ("request.path".to_owned(), s("/a")),
        ],
        vec![("request.path".to_owned(), s("/b"))],
    ];
    let mut req = encode_report(GLOBAL_WORD_COUNT as u32, &two);
    req.repeated_attributes_semantics =
        report_request::RepeatedAttributesSemantics::DeltaEncoding as i32;
    c.report(req).await.unwrap();
    // The same batch independently encoded fails to build the second instance.
    let req = encode_report(GLOBAL_WORD_COUNT as u32, &two);
    let err = c.report(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert!(
        err.message().contains("lookup failed: 'request.size'"),
        "{}",
        err.message()
    );
    server.shutdown().await.unwrap();
}

fn denier_with_message(msg: &str) -> String {
    DENY_BY_LABEL.replace("Not allowed", msg)
}

#[tokio::test]
async fn reload_while_requests_flow_and_broken_file_keeps_last_good() {
    let dir = config_dir(&[("deny.yaml", &denier_with_message("v1"))]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let addr = server.api_address;

    // Requests flow during the reloads; every one must succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flow = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient::connect(
                format!("http://{addr}"),
            )
            .await
            .unwrap();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = check(&mut c, &[("source.labels", map(&[("app", "untrusted")]))]).await;
                let r = r.expect("no request fails during a reload");
                assert_eq!(status_of(&r).0, 7);
                n += 1;
            }
            n
        })
    };

    let mut c = client(&server).await;
    let untrusted = [("source.labels", map(&[("app", "untrusted")]))];
    assert_eq!(
        status_of(&check(&mut c, &untrusted).await.unwrap()).1,
        "denyall.istio-system:v1"
    );

    write_file(dir.path(), "deny.yaml", &denier_with_message("v2"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            let mut c = client(&server).await;
            status_of(&check(&mut c, &untrusted).await.unwrap()).1 == "denyall.istio-system:v2"
        })
        .await,
        "the edit is picked up"
    );

    // A broken file: the last good snapshot keeps serving, the errors are reported.
    write_file(
        dir.path(),
        "broken.yaml",
        "kind: rule\nmetadata: {name: x, namespace: istio-system}\nspec:\n  match: source.labels[\n",
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let (_, body) = http_get(&server, "/debug/config").await;
            body.contains("\"applied\": false")
        })
        .await,
        "the broken config is seen and rejected"
    );
    let (_, body) = http_get(&server, "/debug/config").await;
    assert!(body.contains("broken.yaml"), "{body}");
    assert!(body.contains("unable to parse expression"), "{body}");
    assert_eq!(
        status_of(&check(&mut c, &untrusted).await.unwrap()).1,
        "denyall.istio-system:v2"
    );
    let (_, scrape) = http_get(&server, "/metrics").await;
    assert!(
        metric_value(
            &scrape,
            "mixer_config_loads_total",
            &["result=\"rejected\""]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(metric_value(&scrape, "mixer_config_errors", &[]).unwrap_or(0.0) >= 1.0);

    // Deleting the broken file applies cleanly again.
    std::fs::remove_file(dir.path().join("broken.yaml")).unwrap();
    write_file(dir.path(), "deny.yaml", &denier_with_message("v3"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            let mut c = client(&server).await;
            status_of(&check(&mut c, &untrusted).await.unwrap()).1 == "denyall.istio-system:v3"
        })
        .await
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = flow.await.expect("request flow had no failures");
    assert!(n > 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_readiness_version_and_debug_config() {
    let dir = config_dir(&[("deny.yaml", DENY_BY_LABEL)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    assert_eq!(http_get(&server, "/healthz").await.0, 200);
    assert_eq!(http_get(&server, "/readyz").await.0, 200);
    let (code, body) = http_get(&server, "/version").await;
    assert_eq!(code, 200);
    assert!(body.starts_with("mixer "));
    let (code, body) = http_get(&server, "/debug/config").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["summary"]["rules"], 2);
    assert_eq!(v["handlers"][0]["name"], "denyall.istio-system");
    server.shutdown().await.unwrap();
}

/// Sends raw bytes as a request body.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = mixer::wire::pb::istio::mixer::v1::CheckResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<mixer::wire::pb::istio::mixer::v1::CheckResponse>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        Default::default()
    }
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_and_server_keeps_serving() {
    let dir = config_dir(&[("deny.yaml", DENY_BY_LABEL)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.api_address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for path in [
        "/istio.mixer.v1.Mixer/Check",
        "/istio.mixer.v1.Mixer/Report",
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let err = grpc
            .unary(
                tonic::Request::new(vec![0xff, 0xff, 0xff, 0x01]),
                http::uri::PathAndQuery::from_static(path),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
        assert!(
            err.message().contains("malformed protobuf"),
            "{}",
            err.message()
        );
    }
    let mut c = client(&server).await;
    let r = check(&mut c, &[("source.labels", map(&[("app", "untrusted")]))])
        .await
        .unwrap();
    assert_eq!(status_of(&r).0, 7);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn check_cache_serves_repeated_decisions_and_honours_use_counts() {
    let config = DENY_BY_LABEL.replace(
        "status: {code: 7, message: Not allowed}",
        "status: {code: 7, message: Not allowed}\n    validUseCount: 3\n    validDuration: 30s",
    );
    let dir = config_dir(&[("deny.yaml", &config)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let untrusted = [("source.labels", map(&[("app", "untrusted")]))];

    let first = check(&mut c, &untrusted).await.unwrap();
    assert_eq!(
        first.precondition.as_ref().unwrap().valid_use_count,
        3,
        "{first:?}"
    );
    // Served from the cache: one use fewer, same decision, same referenced attributes.
    let second = check(&mut c, &untrusted).await.unwrap();
    let pre = second.precondition.as_ref().unwrap();
    assert_eq!(status_of(&second), status_of(&first));
    assert_eq!(pre.valid_use_count, 2);
    assert!(pre.valid_duration.unwrap().seconds <= 30);
    assert_eq!(
        decode_referenced(pre.referenced_attributes.as_ref().unwrap()).unwrap(),
        decode_referenced(
            first
                .precondition
                .as_ref()
                .unwrap()
                .referenced_attributes
                .as_ref()
                .unwrap()
        )
        .unwrap()
    );
    let third = check(&mut c, &untrusted).await.unwrap();
    assert_eq!(third.precondition.unwrap().valid_use_count, 1);
    // Used up: computed afresh.
    let fourth = check(&mut c, &untrusted).await.unwrap();
    assert_eq!(fourth.precondition.unwrap().valid_use_count, 3);

    // A different value of a referenced attribute is a different decision.
    let other = check(&mut c, &[("source.labels", map(&[("app", "reviews")]))])
        .await
        .unwrap();
    assert_eq!(status_of(&other).0, 0);
    // An unreferenced attribute does not matter: still a hit.
    let extra = check(
        &mut c,
        &[
            ("source.labels", map(&[("app", "untrusted"), ("x", "y")])),
            ("request.path", s("/z")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status_of(&extra).0, 7);

    // Quota requests are never answered from the cache.
    let (_, before) = http_get(&server, "/metrics").await;
    let hits_before = metric_value(&before, "mixer_check_cache_hits_total", &[]).unwrap_or(0.0);
    let misses_before = metric_value(&before, "mixer_check_cache_misses_total", &[]).unwrap_or(0.0);
    let q = c
        .check(check_request(&untrusted, &[("requestcount", 1, false)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&q).0, 7);
    let (_, after) = http_get(&server, "/metrics").await;
    assert_eq!(
        metric_value(&after, "mixer_check_cache_hits_total", &[]).unwrap_or(0.0),
        hits_before
    );
    assert_eq!(
        metric_value(&after, "mixer_check_cache_misses_total", &[]).unwrap_or(0.0),
        misses_before
    );
    assert!(hits_before >= 3.0, "{after}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn load_shedding_rejects_with_unavailable_and_keeps_health_up() {
    let dir = config_dir(&[("deny.yaml", DENY_BY_LABEL)]);
    let mut options = mixer::server::ServerOptions::new(vec![dir.path().to_path_buf()]);
    options.address = "127.0.0.1:0".parse().unwrap();
    options.monitoring_address = "127.0.0.1:0".parse().unwrap();
    options.prometheus_address = "127.0.0.1:0".parse().unwrap();
    options.shedding = mixer::api::shed::SheddingOptions {
        mode: mixer::api::shed::SheddingMode::Enforce,
        max_requests_per_second: 5.0,
        burst_size: 5,
        latency_halflife: Duration::from_secs(1),
        ..Default::default()
    };
    let server = mixer::server::start(options).await.unwrap();
    let mut c = client(&server).await;
    let (mut ok, mut shed) = (0, 0);
    for _ in 0..50 {
        match check(&mut c, &[("source.labels", map(&[("app", "reviews")]))]).await {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable);
                assert_eq!(
                    e.message(),
                    "Server is currently overloaded. Please try again."
                );
                shed += 1;
            }
        }
    }
    assert!(ok >= 5 && shed >= 25, "ok {ok}, shed {shed}");
    // A Report of N attribute sets costs N: 20 sets exceed the burst at once.
    let bags: Vec<Vec<(String, Value<'static>)>> = (0..20)
        .map(|_| vec![("request.path".to_owned(), s("/x"))])
        .collect();
    let err = c
        .report(encode_report(GLOBAL_WORD_COUNT as u32, &bags))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(http_get(&server, "/healthz").await.0, 200);
    let (_, scrape) = http_get(&server, "/metrics").await;
    assert_eq!(
        metric_value(
            &scrape,
            "mixer_loadshedding_requests_total",
            &["api=\"check\""]
        ),
        Some(shed as f64)
    );
    assert_eq!(
        metric_value(
            &scrape,
            "mixer_loadshedding_requests_total",
            &["api=\"report\""]
        ),
        Some(20.0)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ready_file_holds_the_bound_addresses_and_pid() {
    let dir = config_dir(&[]);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("ready.json");
    let mut options = loopback_options(dir.path(), PolicyErrorMode::Mixer);
    options.ready_file = Some(path.clone());
    let server = mixer::server::start(options).await.unwrap();
    let ready =
        test_support::process::Ready::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        ready,
        test_support::process::Ready {
            api: server.api_address.to_string(),
            monitoring: server.monitoring_address.to_string(),
            prometheus: server.prometheus_address.to_string(),
            pid: std::process::id(),
        }
    );
    assert_ne!(server.api_address.port(), 0);
    server.shutdown().await.unwrap();

    // A ready file that cannot be written fails the start, naming the file.
    let mut options = loopback_options(dir.path(), PolicyErrorMode::Mixer);
    options.ready_file = Some(out.path().join("missing/ready.json"));
    match mixer::server::start(options).await {
        Err(e @ mixer::server::ServerError::ReadyFile { .. }) => {
            assert!(e.to_string().contains("missing/ready.json"), "{e}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("started without its ready file"),
    }
}
