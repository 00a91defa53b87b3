//! The ext_authz front end behind a real Envoy 1.40: a `mixer server` process, Envoy's
//! ext_authz HTTP filter (gRPC transport, V3, `failure_mode_allow: false` unless a test
//! says otherwise) and the echoing upstream. What the client sees and what reaches the
//! upstream are Envoy's doing, on the server's answers.

use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, check_response::HttpResponse,
};
use tempfile::TempDir;
use test_support::envoy_process::EnvoyProcess;
use test_support::http::Response;
use test_support::upstream::Upstream;
use test_support::{config::read_sample, free_port};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::*;

/// Header edits: the client's `x-replaced` is overwritten, `x-appended` gets a second
/// value, `x-remove-me` goes; a value computed from the request; response headers too.
const HEADER_RULE: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: edit-headers, namespace: istio-system}
spec:
  match: request.url_path.startsWith("/headers")
  requestHeaderOperations:
  - name: x-replaced
    values: ['"by-mixer"']
  - name: x-appended
    values: ['"by-mixer"']
    operation: APPEND
  - name: x-remove-me
    operation: REMOVE
  - name: x-user-seen
    values: ['request.headers["x-user"] | "anonymous"']
  responseHeaderOperations:
  - name: x-upstream
    values: ['"overwritten"']
  - name: x-resp-added
    values: ['"by-mixer"']
    operation: APPEND
"#;

/// Denials with an HTTP response of their own, and one that only has a code.
const DENIERS: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: slowdown, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status:
      code: 8
      message: slow down
      details:
      - "@type": type.googleapis.com/istio.policy.v1beta1.DirectHttpResponse
        code: TooManyRequests
        body: come back in 30 seconds
        headers: {retry-after: "30", Set-Cookie: "seen=1,tries=3"}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: membersonly, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status:
      code: 7
      message: members only
      details:
      - "@type": type.googleapis.com/istio.policy.v1beta1.DirectHttpResponse
        body: "<h1>members only</h1>"
        headers: {content-type: text/html}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: login, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 16, message: log in first}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: throttle-batch, namespace: istio-system}
spec:
  match: request.url_path == "/batch"
  actions:
  - handler: slowdown
    instances: [nothing]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: members, namespace: istio-system}
spec:
  match: request.url_path.startsWith("/members/")
  actions:
  - handler: membersonly
    instances: [nothing]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: login, namespace: istio-system}
spec:
  match: request.url_path == "/login"
  actions:
  - handler: login
    instances: [nothing]
"#;

/// Istio 1.4's bookinfo rate limit for productpage, as published (kept unchanged in
/// `tests/data/istio-configs`).
fn bookinfo_ratelimit(crd: bool) -> String {
    let name = if crd {
        "samples__bookinfo__policy__mixer-rule-productpage-ratelimit-crd.yaml"
    } else {
        "samples__bookinfo__policy__mixer-rule-productpage-ratelimit.yaml"
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/istio-configs/1.4.10")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The routes every listener serves: `/untrusted` names its caller in a context
/// extension (`source.labels`); `/productpage` names its destination service in route
/// metadata; everything else goes straight to the upstream.
const ROUTES: &str = r#"
              - match: {prefix: "/untrusted"}
                route: {cluster: upstream}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: {source.labels: "app:untrusted"}
              - match: {prefix: "/productpage"}
                route: {cluster: upstream}
                metadata:
                  filter_metadata:
                    istio.mixer: {destination.service.name: productpage, destination.service.namespace: default}
              - match: {prefix: "/"}
                route: {cluster: upstream}"#;

fn listener(port: u16, failure_mode_allow: bool) -> String {
    r#"
  - name: http-PORT
    address: {socket_address: {address: 127.0.0.1, port_value: PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http-PORT
          # Shows the decision the server filed in the dynamic metadata.
          local_reply_config:
            mappers:
            - filter: {not_health_check_filter: {}}
              headers_to_add:
              - header:
                  key: x-decided-by
                  value: "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:istio.mixer:rule)%"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:ROUTES
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: ALLOW
              failure_mode_allow_header_add: ALLOW
              grpc_service:
                envoy_grpc: {cluster_name: mixer}
                timeout: 1s
              metadata_context_namespaces: [istio.mixer]
              route_metadata_context_namespaces: [istio.mixer]
              bootstrap_metadata_labels_key: labels
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
        .replace("PORT", &port.to_string())
        .replace("ROUTES", ROUTES)
        .replace("ALLOW", &failure_mode_allow.to_string())
}

/// A bootstrap with one listener per failure mode, the upstream, and the server as an
/// HTTP/2 cluster that Envoy health-checks with `grpc.health.v1` (service
/// `envoy.service.auth.v3.Authorization`). The node's labels make it productpage v1.
fn bootstrap(mixer: &str, upstream: u16, listeners: &[(u16, bool)]) -> String {
    let (mixer_host, mixer_port) = mixer.rsplit_once(':').expect("host:port");
    let listeners: String = listeners.iter().map(|(p, a)| listener(*p, *a)).collect();
    r#"
node:
  id: authz-test
  cluster: authz-test
  metadata:
    labels: {app: productpage, version: v1}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:LISTENERS
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: UPSTREAM}}}
  - name: mixer
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    health_checks:
    - timeout: 1s
      interval: 1s
      unhealthy_threshold: 3
      healthy_threshold: 1
      grpc_health_check: {service_name: envoy.service.auth.v3.Authorization}
    load_assignment:
      cluster_name: mixer
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: MIXER_HOST, port_value: MIXER_PORT}}}
"#
    .replace("LISTENERS", &listeners)
    .replace("UPSTREAM", &upstream.to_string())
    .replace("MIXER_HOST", mixer_host)
    .replace("MIXER_PORT", mixer_port)
}

/// A server on a config directory, Envoy in front of the upstream, one listener per
/// failure mode given.
struct Stack {
    server: Option<ServerProcess>,
    envoy: EnvoyProcess,
    upstream: Upstream,
    listeners: Vec<u16>,
    config: TempDir,
}

impl Stack {
    fn start(files: &[(&str, &str)], flags: &[&str], failure_modes: &[bool]) -> Stack {
        let config = config_dir(files);
        let server = ServerProcess::start(MIXER, config.path(), flags);
        let upstream = Upstream::start();
        let listeners: Vec<(u16, bool)> = failure_modes.iter().map(|a| (free_port(), *a)).collect();
        let envoy = EnvoyProcess::start(&bootstrap(&server.api, upstream.port(), &listeners));
        Stack {
            server: Some(server),
            envoy,
            upstream,
            listeners: listeners.iter().map(|(p, _)| *p).collect(),
            config,
        }
    }

    /// The usual stack: policy samples, header rule, deniers, `failure_mode_allow: false`.
    fn policy() -> Stack {
        let policy = read_sample("policy.yaml");
        Stack::start(
            &[
                ("policy.yaml", &policy),
                ("headers.yaml", HEADER_RULE),
                ("deniers.yaml", DENIERS),
            ],
            &[],
            &[false],
        )
    }

    fn server(&self) -> &ServerProcess {
        self.server.as_ref().expect("the server runs")
    }

    /// `GET path` through listener `i`.
    fn get_via(&self, i: usize, path: &str, headers: &[(&str, &str)]) -> Response {
        test_support::http::request(
            ("127.0.0.1", self.listeners[i]),
            "GET",
            path,
            headers,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.envoy.log()))
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.get_via(0, path, headers)
    }

    fn scrape(&self) -> String {
        self.server()
            .monitoring_get("/metrics", Duration::from_secs(10))
            .expect("scrape")
            .text()
    }
}

#[test]
fn allowed_requests_reach_the_upstream_with_the_rules_header_edits() {
    let stack = Stack::policy();
    let r = stack.get(
        "/headers/1?x=1",
        &[
            ("x-replaced", "by-client"),
            ("x-appended", "by-client"),
            ("x-remove-me", "secret"),
            ("x-user", "alice"),
        ],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), stack.envoy.log());
    let seen = stack.upstream.last("/headers/1").expect("forwarded");
    let h = |n: &str| seen.headers.get(n).map(String::as_str);
    assert_eq!(h("x-replaced"), Some("by-mixer"), "REPLACE overwrites");
    assert_eq!(h("x-appended"), Some("by-client,by-mixer"), "APPEND adds");
    assert_eq!(h("x-remove-me"), None, "REMOVE removes");
    assert_eq!(h("x-user-seen"), Some("alice"), "values are expressions");
    // samples/default/policy.yaml's mark-checked rule (context.protocol == "http").
    assert_eq!(h("x-mixer-checked"), Some("true"));
    // Response header operations: the upstream's header overwritten, one added.
    assert_eq!(r.header("x-upstream"), Some("overwritten"), "{}", r.head);
    assert_eq!(r.header("x-resp-added"), Some("by-mixer"), "{}", r.head);
    // A request the header rule does not match is forwarded without its edits.
    let r = stack.get("/other", &[("x-remove-me", "kept")]);
    assert_eq!(r.status, 200);
    let seen = stack.upstream.last("/other").expect("forwarded");
    assert_eq!(
        seen.headers.get("x-remove-me").map(String::as_str),
        Some("kept")
    );
    assert_eq!(r.header("x-upstream"), Some("echo"));
    let scrape = stack.scrape();
    assert!(
        metric_value(
            &scrape,
            "mixer_envoy_authz_requests_total",
            &["outcome=\"ok\""]
        )
        .is_some_and(|n| n >= 2.0),
        "{scrape}"
    );
}

#[test]
fn a_denial_is_the_codes_status_with_code_and_message() {
    let stack = Stack::policy();
    // The route's context extension makes the caller `app: untrusted`.
    let r = stack.get("/untrusted/x", &[]);
    assert_eq!(r.status, 403, "{}", stack.envoy.log());
    assert_eq!(
        r.text(),
        "PERMISSION_DENIED:deny-untrusted.istio-system:requests from untrusted workloads are not allowed"
    );
    assert!(
        stack.upstream.last("/untrusted").is_none(),
        "never forwarded"
    );
    // The deciding rule, from the dynamic metadata of the answer.
    assert_eq!(
        r.header("x-decided-by"),
        Some("deny-untrusted.rule.istio-system"),
        "{}",
        r.head
    );
    let r = stack.get("/login", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "UNAUTHENTICATED:login.istio-system:log in first");
    let scrape = stack.scrape();
    assert_eq!(
        metric_value(
            &scrape,
            "mixer_envoy_authz_requests_total",
            &["outcome=\"denied\""]
        ),
        Some(2.0),
        "{scrape}"
    );
}

#[test]
fn a_direct_http_response_is_sent_as_written() {
    let stack = Stack::policy();
    let r = stack.get("/members/area", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "<h1>members only</h1>");
    assert_eq!(r.header("content-type"), Some("text/html"), "{}", r.head);
    let r = stack.get("/batch", &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), "come back in 30 seconds");
    assert_eq!(r.header("retry-after"), Some("30"), "{}", r.head);
    let cookies: Vec<&str> = r
        .head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.trim())
        .collect();
    assert_eq!(cookies, ["seen=1", "tries=3"], "{}", r.head);
    assert!(stack.upstream.last("/members").is_none());
    assert!(stack.upstream.last("/batch").is_none());
}

/// Istio 1.4's bookinfo sample allows productpage 2 requests per 5 s (its override):
/// the third within the window is 429, as the Mixer filter answered. Other services are
/// not bound to the QuotaSpec and are never limited. Both styles of the sample (handler
/// and instance, and the legacy `memquota` and `quota` kinds) load unchanged.
#[test]
fn the_bookinfo_quota_spec_limits_productpage() {
    for (crd, quota) in [(false, "requestcountquota"), (true, "requestcount")] {
        let sample = bookinfo_ratelimit(crd);
        let stack = Stack::start(&[("ratelimit.yaml", &sample)], &[], &[false]);
        for i in 0..2 {
            let r = stack.get("/productpage", &[]);
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
        }
        let r = stack.get("/productpage", &[]);
        assert_eq!(r.status, 429, "{}", stack.envoy.log());
        assert_eq!(
            r.text(),
            format!("RESOURCE_EXHAUSTED:Quota is exhausted for: {quota}")
        );
        for _ in 0..5 {
            assert_eq!(stack.get("/reviews", &[]).status, 200);
        }
    }
}

/// QuotaSpecBindings reload like every other kind: bound to another service, productpage
/// is no longer charged.
#[test]
fn quota_specs_hot_reload() {
    let sample = bookinfo_ratelimit(false);
    let stack = Stack::start(&[("ratelimit.yaml", &sample)], &[], &[false]);
    let statuses: Vec<u16> = (0..3)
        .map(|_| stack.get("/productpage", &[]).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
    let rebound = sample.replace("  - name: productpage\n", "  - name: details\n");
    assert_ne!(rebound, sample);
    write_file(stack.config.path(), "ratelimit.yaml", &rebound);
    let server = stack.server();
    let reloaded = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        server
            .monitoring_get("/debug/config", Duration::from_secs(5))
            .is_ok_and(|r| r.text().contains("\"details.default\""))
    });
    assert!(reloaded, "{}", server.log());
    for _ in 0..5 {
        assert_eq!(stack.get("/productpage", &[]).status, 200);
    }
}

/// With the server gone, Envoy's failure mode decides: `failure_mode_allow: false` is 403
/// with an empty body, `true` forwards the request, marked.
#[test]
fn without_the_server_envoys_failure_mode_decides() {
    let policy = read_sample("policy.yaml");
    let mut stack = Stack::start(&[("policy.yaml", &policy)], &[], &[false, true]);
    for listener in 0..2 {
        assert_eq!(stack.get_via(listener, "/a", &[]).status, 200);
        assert_eq!(stack.get_via(listener, "/untrusted", &[]).status, 403);
    }
    drop(stack.server.take());
    let closed = stack.get_via(0, "/closed", &[]);
    assert_eq!(closed.status, 403, "{}", stack.envoy.log());
    assert_eq!(closed.text(), "");
    assert!(stack.upstream.last("/closed").is_none());
    let open = stack.get_via(1, "/open", &[]);
    assert_eq!(open.status, 200, "{}", stack.envoy.log());
    let seen = stack.upstream.last("/open").expect("forwarded");
    assert_eq!(
        seen.headers
            .get("x-envoy-auth-failure-mode-allowed")
            .map(String::as_str),
        Some("true")
    );
    // Even a request the policy would deny: nothing decides it any more.
    assert_eq!(stack.get_via(1, "/untrusted", &[]).status, 200);
}

/// `grpc.health.v1` on the API port: SERVING for the server, the Mixer service and the
/// ext_authz service; Envoy's active gRPC health check of its cluster passes.
#[tokio::test]
async fn grpc_health_answers_serving() {
    let stack = tokio::task::spawn_blocking(Stack::policy).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(stack.server().api_url())
        .unwrap()
        .connect()
        .await
        .expect("connects");
    let mut health = HealthClient::new(channel);
    for service in [
        "",
        "istio.mixer.v1.Mixer",
        "envoy.service.auth.v3.Authorization",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {e}"))
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let passed = eventually(Duration::from_secs(20), || async {
        stack
            .envoy
            .stat("cluster.mixer.health_check.success")
            .is_some_and(|n| n >= 1)
    })
    .await;
    assert!(passed, "{}", stack.envoy.log());
    tokio::task::spawn_blocking(move || drop(stack))
        .await
        .unwrap();
}

fn check_request(path: &str, headers: &[(&str, &str)], stream_id: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: stream_id.to_owned(),
                    method: "GET".to_owned(),
                    path: path.to_owned(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [
                ("destination.service.name", "productpage"),
                ("destination.service.namespace", "default"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        }),
    }
}

fn http_status(r: &CheckResponse) -> u32 {
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.map_or(403, |s| s.code as u32),
        other => panic!("{other:?}"),
    }
}

/// A quota over a long window with a long deduplication window: 2 per minute.
const TWO_PER_MINUTE: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requests, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions: {destination: destination.service.name | "unknown"}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: twoperminute, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    minDeduplicationDuration: 60s
    quotas:
    - {name: requests.instance.istio-system, maxAmount: 2, validDuration: 60s}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: count, namespace: istio-system}
spec:
  actions:
  - {handler: twoperminute, instances: [requests]}
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {name: requests, namespace: istio-system}
spec:
  rules:
  - quotas: [{quota: requests, charge: 1}]
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {name: requests, namespace: istio-system}
spec:
  quotaSpecs: [{name: requests}]
  services: [{name: productpage, namespace: default}]
"#;

/// Quota charges are deduplicated on `x-request-id` by default (a retry is charged once),
/// and on Envoy's stream id only with `--ext-authz-deduplication-id stream-id`, so that a
/// client cannot reuse one id to pass a limit.
#[tokio::test]
async fn quota_deduplication_follows_the_flag() {
    let dir = config_dir(&[("quota.yaml", TWO_PER_MINUTE)]);
    for (flag, expected) in [
        ("request-id", [200, 200, 200, 200]),
        ("stream-id", [200, 200, 429, 429]),
    ] {
        let server =
            ServerProcess::start(MIXER, dir.path(), &["--ext-authz-deduplication-id", flag]);
        let mut client = AuthorizationClient::connect(server.api_url())
            .await
            .unwrap();
        let mut statuses = Vec::new();
        for stream in ["1", "2", "3", "4"] {
            let r = client
                .check(check_request("/", &[("x-request-id", "same")], stream))
                .await
                .unwrap()
                .into_inner();
            statuses.push(http_status(&r));
        }
        assert_eq!(statuses, expected, "{flag}");
    }
}

/// What a client controls is bounded: over `--max-string-map-entries` headers or query
/// parameters, or over `--max-message-size`, a request is RESOURCE_EXHAUSTED naming the
/// limit (Envoy then applies its failure mode); a request without attributes is
/// INVALID_ARGUMENT. The server keeps serving.
#[tokio::test]
async fn oversized_requests_are_resource_exhausted() {
    let dir = config_dir(&[("policy.yaml", &read_sample("policy.yaml"))]);
    let server = ServerProcess::start(
        MIXER,
        dir.path(),
        &[
            "--max-string-map-entries",
            "8",
            "--max-message-size",
            "65536",
        ],
    );
    let mut client = AuthorizationClient::connect(server.api_url())
        .await
        .unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let err = client
        .check(check_request("/", &many, "1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        err.message(),
        "request.headers: 20 entries, over the limit of 8 (--max-string-map-entries)"
    );
    let query: String = (0..20).map(|i| format!("p{i}=1&")).collect();
    let err = client
        .check(check_request(&format!("/?{query}"), &[], "2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message()
            .starts_with("request.query_params: 20 entries"),
        "{err}"
    );
    let big = "v".repeat(70_000);
    let err = client
        .check(check_request("/", &[("x-big", &big)], "3"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    let err = client
        .check(CheckRequest { attributes: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let ok = client
        .check(check_request("/", &[("x-h", "v")], "4"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_status(&ok), 200);
    let scrape = server
        .monitoring_get("/metrics", Duration::from_secs(10))
        .unwrap()
        .text();
    assert_eq!(
        metric_value(
            &scrape,
            "mixer_envoy_authz_requests_total",
            &["outcome=\"error\""]
        ),
        Some(3.0),
        "{scrape}"
    );
    assert_eq!(
        metric_value(&scrape, "mixer_api_decode_errors_total", &["api=\"authz\""]),
        Some(2.0),
        "{scrape}"
    );
}
