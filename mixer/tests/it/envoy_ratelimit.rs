//! Envoy's rate-limit filter (`envoy.filters.http.ratelimit`, gRPC v3) in front of an
//! echoing upstream, asking real `mixer server` processes whose memquota and redisquota
//! handlers count: per client address, per header value, one limit shared by two servers
//! over one Redis, what Envoy does when the server is gone, and the server's answers to
//! invalid calls (a tonic client).
//!
//! Needs a real Envoy (see `test_support::envoy_process`) and `redis-server` on PATH.
//! Quota windows are an hour long, so no window rolls during a test; every wait is a
//! bounded poll.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use test_support::envoy_process::EnvoyProcess;
use test_support::free_port;
use test_support::http::Response;
use test_support::redis::RedisServer;
use test_support::upstream::Upstream;

use crate::common::*;

// ---------------------------------------------------------------------------------
// Configurations.

/// memquota: `perclient` allows 3 requests per hour per client address (5 for
/// 10.0.0.2); `perkey` 2 per hour per API key; `roomy` more than any test asks.
const MEMQUOTA: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: perclient, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions: {client: source.ip | ip("0.0.0.0")}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: perkey, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions: {key: request.api_key | "none"}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: roomy, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions: {client: source.ip | ip("0.0.0.0")}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: counts, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - name: perclient.instance.istio-system
      maxAmount: 3
      validDuration: 1h
      overrides:
      - dimensions: {client: 10.0.0.2}
        maxAmount: 5
        validDuration: 1h
    - name: perkey.instance.istio-system
      maxAmount: 2
      validDuration: 1h
    - name: roomy.instance.istio-system
      maxAmount: 100000
      validDuration: 1h
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: charge, namespace: istio-system}
spec:
  actions:
  - handler: counts
    instances: [perclient, perkey, roomy]
"#;

/// The limit two servers share over one Redis.
const SHARED_MAX: usize = 6;

/// redisquota: `shared` allows [`SHARED_MAX`] requests per hour per client address,
/// counted in Redis; while Redis is unreachable it refuses (CLOSED), so a failure never
/// lets a request through.
fn redis_config(redis: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: shared, namespace: istio-system}}
spec:
  compiledTemplate: quota
  params:
    dimensions: {{client: source.ip | ip("0.0.0.0")}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: redis, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redisServerUrl: "{redis}"
    failureMode: CLOSED
    quotas:
    - name: shared.instance.istio-system
      maxAmount: {SHARED_MAX}
      validDuration: 1h
      rateLimitAlgorithm: ROLLING_WINDOW
      bucketDuration: 1s
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: charge, namespace: istio-system}}
spec:
  actions:
  - handler: redis
    instances: [shared]
"#
    )
}

// ---------------------------------------------------------------------------------
// Envoy.

/// Route `rate_limits` actions: the client address.
const BY_ADDRESS: &str = "- remote_address: {}";
/// Route `rate_limits` actions: the `x-api-key` header, under the descriptor key
/// `request.api_key` (an attribute name).
const BY_API_KEY: &str =
    "- request_headers: {header_name: x-api-key, descriptor_key: request.api_key}";

/// One HTTP listener of the Envoy under test.
struct Listener {
    port: u16,
    /// The rate-limit filter's domain: a quota instance's name.
    domain: &'static str,
    /// `failure_mode_deny`: answer 500 instead of forwarding when the call fails.
    deny: bool,
    /// The route's rate-limit actions (YAML list items).
    actions: &'static str,
}

impl Listener {
    fn new(domain: &'static str, deny: bool, actions: &'static str) -> Listener {
        Listener {
            port: free_port(),
            domain,
            deny,
            actions,
        }
    }

    fn yaml(&self, index: usize) -> String {
        let indent = |text: &str, n: usize| {
            text.lines()
                .map(|l| format!("{}{l}", " ".repeat(n)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            r#"
  - name: http{index}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http{index}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route:
                  cluster: upstream
                  rate_limits:
                  - actions:
{actions}
          http_filters:
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: {domain}
              failure_mode_deny: {deny}
              timeout: 5s
              enable_x_ratelimit_headers: DRAFT_VERSION_03
              rate_limit_service:
                transport_api_version: V3
                grpc_service: {{envoy_grpc: {{cluster_name: mixer}}}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
            port = self.port,
            actions = indent(self.actions, 20),
            domain = self.domain,
            deny = self.deny,
        )
    }
}

/// A bootstrap with `listeners` forwarding to `upstream`, asking the rate-limit service
/// at `mixer` (`IP:PORT`) over HTTP/2.
fn bootstrap(mixer: &str, upstream: u16, listeners: &[Listener]) -> String {
    let (mixer_ip, mixer_port) = mixer.rsplit_once(':').expect("IP:PORT");
    let listeners: String = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| l.yaml(i))
        .collect();
    format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:{listeners}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
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
            address: {{socket_address: {{address: {mixer_ip}, port_value: {mixer_port}}}}}
"#
    )
}

/// GET `path` through the listener on `port` with `headers`.
fn get(envoy: &EnvoyProcess, port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    test_support::http::request(
        ("127.0.0.1", port),
        "GET",
        path,
        headers,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("GET {path} through Envoy: {e}\n{}", envoy.log()))
}

/// Whether `r` is Envoy's over-limit answer.
fn limited(r: &Response) -> bool {
    r.status == 429 && r.header("x-envoy-ratelimited") == Some("true")
}

// ---------------------------------------------------------------------------------
// The rate-limit service, called directly.

/// `ShouldRateLimit` on the server at `api` (`IP:PORT`).
fn should_rate_limit(api: &str, req: RateLimitRequest) -> Result<RateLimitResponse, tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut client = RateLimitServiceClient::connect(format!("http://{api}"))
            .await
            .expect("connects to the mixer process");
        client.should_rate_limit(req).await.map(|r| r.into_inner())
    })
}

/// A request of `count` descriptors, each with `entries` entries.
fn request(domain: &str, entries: &[(&str, &str)], count: usize) -> RateLimitRequest {
    let descriptor = RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    };
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: vec![descriptor; count],
        hits_addend: 0,
    }
}

fn metrics(server: &ServerProcess) -> String {
    server
        .monitoring_get("/metrics", Duration::from_secs(10))
        .expect("the scrape finishes")
        .text()
}

// ---------------------------------------------------------------------------------
// Tests.

/// The rate-limit headers Envoy adds (`enable_x_ratelimit_headers`): limit and
/// remaining, from the status with the least remaining.
fn ratelimit_headers(r: &Response) -> (Option<&str>, Option<&str>) {
    (
        r.header("x-ratelimit-limit"),
        r.header("x-ratelimit-remaining"),
    )
}

#[test]
fn envoy_ratelimit_per_client_address_and_per_header_value() {
    let dir = config_dir(&[("quota.yaml", MEMQUOTA)]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let upstream = Upstream::start();
    let by_address = Listener::new("perclient", true, BY_ADDRESS);
    // The fully qualified name works as well as the short one.
    let by_key = Listener::new("perkey.instance.istio-system", true, BY_API_KEY);
    let (address, key) = (by_address.port, by_key.port);
    let envoy = EnvoyProcess::start(&bootstrap(
        &server.api,
        upstream.port(),
        &[by_address, by_key],
    ));

    // (a) Per client address (Envoy's `remote_address`: the X-Forwarded-For address, as
    // `use_remote_address` is off): 3 an hour, then 429; 10.0.0.2 has an override of 5.
    let client = |ip: &'static str| [("x-forwarded-for", ip)];
    for n in 1..=3 {
        let r = get(&envoy, address, &format!("/a/one/{n}"), &client("10.0.0.1"));
        assert_eq!(r.status, 200, "request {n}: {}\n{}", r.head, server.log());
        let left = (3 - n).to_string();
        assert_eq!(
            ratelimit_headers(&r),
            (
                Some("3, 3;w=3600;name=\"perclient.instance.istio-system\""),
                Some(left.as_str())
            ),
            "{}",
            r.head
        );
    }
    let r = get(&envoy, address, "/a/one/4", &client("10.0.0.1"));
    assert!(limited(&r), "{}", r.head);
    assert!(
        upstream.last("/a/one/4").is_none(),
        "a refused request is not forwarded"
    );
    // Another address has its own budget, and the override's limit.
    for n in 1..=5 {
        let r = get(&envoy, address, &format!("/a/two/{n}"), &client("10.0.0.2"));
        assert_eq!(r.status, 200, "request {n}: {}", r.head);
    }
    let r = get(&envoy, address, "/a/two/6", &client("10.0.0.2"));
    assert!(limited(&r), "{}", r.head);
    assert_eq!(ratelimit_headers(&r).1, Some("0"));
    // The first client is still refused.
    assert!(limited(&get(
        &envoy,
        address,
        "/a/one/5",
        &client("10.0.0.1")
    )));

    // (b) Per header value, under a descriptor key named after an attribute
    // (`request.api_key`), which the quota's dimension reads: each key has its own 2.
    let api_key = |k: &'static str| [("x-api-key", k)];
    for round in 1..=2 {
        for k in ["alpha", "beta"] {
            let r = get(&envoy, key, &format!("/b/{k}/{round}"), &api_key(k));
            assert_eq!(r.status, 200, "{k} {round}: {}", r.head);
        }
    }
    for k in ["alpha", "beta"] {
        let r = get(&envoy, key, &format!("/b/{k}/3"), &api_key(k));
        assert!(limited(&r), "{k}: {}", r.head);
    }
    assert_eq!(
        get(&envoy, key, "/b/gamma/1", &api_key("gamma")).status,
        200
    );
    // Without the header Envoy drops the descriptor and makes no call: never limited.
    for n in 1..=4 {
        assert_eq!(get(&envoy, key, &format!("/b/none/{n}"), &[]).status, 200);
    }

    // Self-metrics: 3+1+5+1+1 calls by address, 4+2+1 by key.
    let scrape = metrics(&server);
    let count = |outcome: &str| {
        metric_value(
            &scrape,
            "mixer_envoy_ratelimit_requests_total",
            &[&format!("outcome=\"{outcome}\"")],
        )
    };
    assert_eq!(count("ok"), Some(3.0 + 5.0 + 4.0 + 1.0), "{scrape}");
    assert_eq!(count("over_limit"), Some(5.0), "{scrape}");
    assert_eq!(
        metric_value(
            &scrape,
            "mixer_envoy_ratelimit_descriptors_total",
            &["outcome=\"over_limit\""]
        ),
        Some(5.0)
    );
}

/// Polls the server at `api` with a descriptor of its own until Redis itself answers
/// (a status carrying the limit: the failure mode tells none), for at most 30 s.
fn until_redis_answers(api: &str, probe: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = should_rate_limit(api, request("shared", &[("remote_address", probe)], 1));
        if let Ok(r) = &r
            && r.statuses[0].current_limit.is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Redis never answered {api}: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn envoy_ratelimit_two_servers_share_one_redis_limit() {
    let redis = RedisServer::start();
    let dir = config_dir(&[("quota.yaml", &redis_config(&redis.address()))]);
    let servers = [
        ServerProcess::start(MIXER, dir.path(), &[]),
        ServerProcess::start(MIXER, dir.path(), &[]),
    ];
    for (s, probe) in servers.iter().zip(["192.0.2.1", "192.0.2.2"]) {
        until_redis_answers(&s.api, probe);
    }
    let upstream = Upstream::start();
    let envoys: Vec<(EnvoyProcess, u16)> = servers
        .iter()
        .map(|s| {
            let l = Listener::new("shared", true, BY_ADDRESS);
            let port = l.port;
            (
                EnvoyProcess::start(&bootstrap(&s.api, upstream.port(), &[l])),
                port,
            )
        })
        .collect();

    // One client alternating between the two proxies: together they let exactly the
    // limit through, half each, then refuse on both.
    let mut passed = [0usize; 2];
    let mut refused = [0usize; 2];
    for n in 0..SHARED_MAX * 3 {
        let (envoy, port) = &envoys[n % 2];
        let r = get(
            envoy,
            *port,
            &format!("/c/{n}"),
            &[("x-forwarded-for", "10.9.9.9")],
        );
        match r.status {
            200 => passed[n % 2] += 1,
            _ if limited(&r) => refused[n % 2] += 1,
            _ => panic!("request {n}: {}\n{}", r.head, envoy.log()),
        }
    }
    assert_eq!(passed, [SHARED_MAX / 2, SHARED_MAX / 2], "{refused:?}");
    assert_eq!(passed.iter().sum::<usize>(), SHARED_MAX);
    // Either server now sees the shared counter spent.
    for s in &servers {
        let r = should_rate_limit(
            &s.api,
            request("shared", &[("remote_address", "10.9.9.9")], 1),
        )
        .expect("answers");
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        assert_eq!(r.statuses[0].limit_remaining, 0);
        assert_eq!(
            r.statuses[0]
                .current_limit
                .as_ref()
                .map(|l| l.requests_per_unit),
            Some(SHARED_MAX as u32)
        );
    }
}

#[test]
fn envoy_ratelimit_failure_modes_and_unknown_domain() {
    let dir = config_dir(&[("quota.yaml", MEMQUOTA)]);
    let mut server = ServerProcess::start(MIXER, dir.path(), &[]);
    let upstream = Upstream::start();
    let allow = Listener::new("roomy", false, BY_ADDRESS);
    let deny = Listener::new("roomy", true, BY_ADDRESS);
    let unknown = Listener::new("nosuchquota", true, BY_ADDRESS);
    let (allow, deny, unknown) = (
        (allow.port, allow),
        (deny.port, deny),
        (unknown.port, unknown),
    );
    let envoy = EnvoyProcess::start(&bootstrap(
        &server.api,
        upstream.port(),
        &[allow.1, deny.1, unknown.1],
    ));
    let (allow, deny, unknown) = (allow.0, deny.0, unknown.0);
    assert_eq!(get(&envoy, allow, "/d/up", &[]).status, 200);
    assert_eq!(get(&envoy, deny, "/d/up", &[]).status, 200);
    // A domain naming no quota instance is a gRPC error: with failure_mode_deny, 500.
    assert_eq!(get(&envoy, unknown, "/d/unknown", &[]).status, 500);
    let scrape = metrics(&server);
    assert_eq!(
        metric_value(
            &scrape,
            "mixer_envoy_ratelimit_requests_total",
            &["outcome=\"error\""]
        ),
        Some(1.0),
        "{scrape}"
    );

    // The server is gone: forwarded without failure_mode_deny, 500 with it.
    let _ = server.child.kill();
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let r = get(&envoy, allow, "/d/down", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(upstream.last("/d/down").is_some());
    assert_eq!(get(&envoy, deny, "/d/down-denied", &[]).status, 500);
    assert!(upstream.last("/d/down-denied").is_none());
}

#[test]
fn envoy_ratelimit_invalid_calls_are_refused_with_reasons() {
    let dir = config_dir(&[("quota.yaml", MEMQUOTA)]);
    let server = ServerProcess::start(
        MIXER,
        dir.path(),
        &[
            "--max-ratelimit-descriptors",
            "4",
            "--max-ratelimit-descriptor-entries",
            "2",
        ],
    );
    let one = [("remote_address", "10.0.0.7")];

    // An unknown domain names itself and the quota instances a domain can name.
    let e = should_rate_limit(&server.api, request("requestcount", &one, 1)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "rate limit domain \"requestcount\" names no quota instance; known quota instances: perclient, perkey, roomy"
    );

    // Over the limits: RESOURCE_EXHAUSTED naming the flag; nothing is charged.
    let e = should_rate_limit(&server.api, request("perclient", &one, 5)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "the request has 5 descriptors; at most 4 are accepted (--max-ratelimit-descriptors)"
    );
    let three = [
        ("remote_address", "10.0.0.7"),
        ("generic_key", "a"),
        ("k", "v"),
    ];
    let e = should_rate_limit(&server.api, request("perclient", &three, 1)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "descriptor 0 has 3 entries; at most 2 are accepted (--max-ratelimit-descriptor-entries)"
    );
    // At the limits, the call is served: the client's 3 units are all still there.
    let r = should_rate_limit(&server.api, request("perclient", &one[..], 4)).expect("served");
    let codes: Vec<i32> = r.statuses.iter().map(|s| s.code).collect();
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    assert_eq!(codes, [ok, ok, ok, over]);
    assert_eq!(r.overall_code, over);
    assert_eq!(
        metric_value(
            &metrics(&server),
            "mixer_envoy_ratelimit_requests_total",
            &["outcome=\"error\""]
        ),
        Some(3.0)
    );
}
