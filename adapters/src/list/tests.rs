//! Handler behaviour: results for every entry type and mode, and provider lists served
//! by a real HTTP server, with refreshes driven explicitly and time from a manual clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use expr_lang::Value;
use expr_lang::golib::net::parse_ip;
use serde_json::{Value as Json, json};
use templates::instances::listentry;
use templates::{CheckResult, Reply, Status, code};

use super::provider::FetchError;
use super::*;

const CACHE: Duration = Duration::from_secs(300);
const USES: i32 = 10_000;

fn config(params: Json) -> Config {
    config::validate(&ValidateInput {
        handler: "whitelist.default",
        params: &params,
        instances: &[],
    })
    .unwrap_or_else(|e| panic!("{e:#?}"))
}

fn handler(params: Json) -> ListHandler {
    ListHandler::new(
        config(params),
        &Env::standalone("whitelist.default"),
        Arc::new(SystemClock),
    )
    .unwrap()
}

fn check(h: &ListHandler, v: Value<'_>) -> CheckResult {
    let reply = h.handle_list_entry(&listentry::Instance {
        name: "appversion.instance.default",
        value: Some(v),
    });
    match reply {
        Reply::Ready(r) => r.unwrap(),
        Reply::Later(_) => panic!("a list check must answer at once"),
    }
}

fn s(v: &str) -> Value<'_> {
    Value::str(v)
}

fn ip4(a: u8, b: u8, c: u8, d: u8) -> Value<'static> {
    Value::IpAddress(vec![a, b, c, d].into())
}

fn ip16(text: &str) -> Value<'static> {
    Value::IpAddress(parse_ip(text).expect(text).to_vec().into())
}

fn ok() -> CheckResult {
    CheckResult::ok(CACHE, USES)
}

fn result(code: i32, message: &str) -> CheckResult {
    CheckResult {
        status: Status::new(code, message),
        valid_duration: CACHE,
        valid_use_count: USES,
    }
}

#[test]
fn strings_whitelist_and_blacklist() {
    // bookinfo mixer-rule-deny-whitelist.yaml
    let wl = handler(json!({"overrides": ["v1", "v2"], "blacklist": false}));
    assert_eq!(check(&wl, s("v1")), ok());
    assert_eq!(check(&wl, s("v2")), ok());
    assert_eq!(
        check(&wl, s("v3")),
        result(code::PERMISSION_DENIED, "v3 is not whitelisted")
    );
    assert_eq!(
        check(&wl, s("V1")),
        result(code::PERMISSION_DENIED, "V1 is not whitelisted")
    );
    // An absent attribute defaulted to "" gives Mixer's odd message.
    assert_eq!(
        check(&wl, s("")),
        result(code::PERMISSION_DENIED, " is not whitelisted")
    );

    // list_integration_test.go h1BlacklistOverrideSrc1Src2
    let bl = handler(json!({"overrides": ["src1", "src2"], "blacklist": true}));
    assert_eq!(
        check(&bl, s("src1")),
        result(code::PERMISSION_DENIED, "src1 is blacklisted")
    );
    assert_eq!(check(&bl, s("src3")), ok());

    // String-like attribute types compare as their text.
    assert_eq!(
        check(&bl, Value::DnsName("src2".into())),
        result(code::PERMISSION_DENIED, "src2 is blacklisted")
    );
}

#[test]
fn validity_comes_from_caching_params() {
    let h = handler(json!({"overrides": ["a"], "cachingInterval": "7s", "cachingUseCount": 3}));
    let want = |code, msg: &str| CheckResult {
        status: Status::new(code, msg),
        valid_duration: Duration::from_secs(7),
        valid_use_count: 3,
    };
    assert_eq!(check(&h, s("a")), want(code::OK, ""));
    assert_eq!(
        check(&h, s("b")),
        want(code::PERMISSION_DENIED, "b is not whitelisted")
    );
    assert_eq!(
        check(&h, Value::Bool(true)),
        want(
            code::INVALID_ARGUMENT,
            "true is not a valid string or IP address"
        )
    );
}

#[test]
fn case_insensitive_strings() {
    let h = handler(json!({"overrides": ["Prod", "dev"], "entryType": "CASE_INSENSITIVE_STRINGS"}));
    assert_eq!(check(&h, s("PROD")), ok());
    assert_eq!(check(&h, s("prod")), ok());
    assert_eq!(check(&h, s("Dev")), ok());
    // The message shows the value as given, not folded.
    assert_eq!(
        check(&h, s("Staging")),
        result(code::PERMISSION_DENIED, "Staging is not whitelisted")
    );
    let bl = handler(json!({"overrides": ["Bad"], "entryType": 1, "blacklist": true}));
    assert_eq!(
        check(&bl, s("bAD")),
        result(code::PERMISSION_DENIED, "bAD is blacklisted")
    );
}

#[test]
fn regex_is_unanchored() {
    let h = handler(json!({"overrides": ["v1", "^canary-[0-9]+$"], "entryType": "REGEX"}));
    assert_eq!(check(&h, s("xv12")), ok());
    assert_eq!(check(&h, s("canary-7")), ok());
    assert_eq!(
        check(&h, s("canary-7b")),
        result(code::PERMISSION_DENIED, "canary-7b is not whitelisted")
    );
    let bl =
        handler(json!({"overrides": ["\\.internal$"], "entryType": "REGEX", "blacklist": true}));
    assert_eq!(
        check(&bl, s("db.internal")),
        result(code::PERMISSION_DENIED, "db.internal is blacklisted")
    );
    assert_eq!(check(&bl, s("db.internal.example.com")), ok());
    // IP values are matched in their textual form.
    let ips = handler(json!({"overrides": ["^10\\.57\\."], "entryType": "REGEX"}));
    assert_eq!(check(&ips, ip4(10, 57, 0, 1)), ok());
}

#[test]
fn ip_addresses_ipv4_and_ipv6() {
    // list_integration_test.go h1OverrideIP / bookinfo mixer-rule-deny-ip.yaml
    let h = handler(json!({
        "overrides": ["10.57.0.0/16", "192.168.1.1", "2001:db8::/32", "fe80::1"],
        "blacklist": false,
        "entryType": "IP_ADDRESSES"
    }));
    // 4-byte attribute form, IPv4-mapped 16-byte form, and text all compare as addresses.
    assert_eq!(check(&h, ip4(10, 57, 3, 4)), ok());
    assert_eq!(check(&h, ip16("10.57.255.255")), ok());
    assert_eq!(check(&h, ip16("::ffff:192.168.1.1")), ok());
    assert_eq!(check(&h, s("10.57.0.1")), ok());
    assert_eq!(check(&h, ip16("2001:db8:1::42")), ok());
    assert_eq!(check(&h, s("2001:DB8::")), ok());
    assert_eq!(check(&h, s("fe80::1")), ok());
    assert_eq!(
        check(&h, ip4(10, 56, 0, 1)),
        result(code::PERMISSION_DENIED, "10.56.0.1 is not whitelisted")
    );
    assert_eq!(
        check(&h, ip16("::ffff:192.168.1.2")),
        result(code::PERMISSION_DENIED, "192.168.1.2 is not whitelisted")
    );
    assert_eq!(
        check(&h, ip16("fe80::2")),
        result(code::PERMISSION_DENIED, "fe80::2 is not whitelisted")
    );
    assert_eq!(
        check(&h, s("2001:db9::1")),
        result(code::PERMISSION_DENIED, "2001:db9::1 is not whitelisted")
    );
    // Not an address.
    assert_eq!(
        check(&h, s("example.com")),
        result(
            code::INVALID_ARGUMENT,
            "example.com is not a valid IP address"
        )
    );
    assert_eq!(
        check(&h, s(" 10.57.0.1")),
        result(
            code::INVALID_ARGUMENT,
            " 10.57.0.1 is not a valid IP address"
        )
    );
    assert_eq!(
        check(&h, Value::IpAddress(vec![1, 2, 3].into())),
        result(code::INVALID_ARGUMENT, "?010203 is not a valid IP address")
    );

    let bl = handler(
        json!({"overrides": ["10.0.0.0/8"], "entryType": "IP_ADDRESSES", "blacklist": true}),
    );
    assert_eq!(
        check(&bl, ip4(10, 1, 2, 3)),
        result(code::PERMISSION_DENIED, "10.1.2.3 is blacklisted")
    );
    assert_eq!(check(&bl, ip4(11, 1, 2, 3)), ok());
}

#[test]
fn string_lists_compare_ip_values_as_text() {
    let h = handler(json!({"overrides": ["10.0.0.1", "fe80::1"]}));
    assert_eq!(check(&h, ip4(10, 0, 0, 1)), ok());
    assert_eq!(check(&h, ip16("::ffff:10.0.0.1")), ok());
    assert_eq!(check(&h, ip16("fe80::1")), ok());
    assert_eq!(
        check(&h, ip4(10, 0, 0, 2)),
        result(code::PERMISSION_DENIED, "10.0.0.2 is not whitelisted")
    );
}

#[test]
fn values_that_are_neither_strings_nor_ips() {
    let h = handler(json!({"overrides": ["42"]}));
    assert_eq!(
        check(&h, Value::Int64(42)),
        result(
            code::INVALID_ARGUMENT,
            "42 is not a valid string or IP address"
        )
    );
    let r = h.handle_list_entry(&listentry::Instance {
        name: "i",
        value: None,
    });
    let Reply::Ready(Ok(r)) = r else {
        panic!("not ready")
    };
    assert_eq!(
        r,
        result(
            code::INVALID_ARGUMENT,
            "<nil> is not a valid string or IP address"
        )
    );
}

#[test]
fn ten_thousand_cidr_overrides() {
    // 10.0.0.0/24, 10.0.2.0/24, ... : every even /24 of 10.0.0.0/9 and more, plus IPv6.
    let mut overrides: Vec<String> = (0..9_000u32)
        .map(|i| {
            let n = i * 2;
            format!("10.{}.{}.0/24", n >> 8, n & 0xff)
        })
        .collect();
    overrides.extend((0..1_000u32).map(|i| format!("2001:db8:{i:x}::/48")));
    let h = handler(json!({"overrides": overrides, "entryType": "IP_ADDRESSES"}));
    for n in [0u32, 2, 254, 256, 4000, 17_998] {
        let [_, _, b, c] = n.to_be_bytes();
        assert_eq!(check(&h, ip4(10, b, c, 77)), ok(), "10.{b}.{c}.77");
        let [_, _, b, c] = (n + 1).to_be_bytes();
        assert_eq!(
            check(&h, ip4(10, b, c, 77)).status.code,
            code::PERMISSION_DENIED,
            "10.{b}.{c}.77"
        );
    }
    assert_eq!(
        check(&h, ip4(10, 71, 0, 1)).status.code,
        code::PERMISSION_DENIED
    );
    assert_eq!(check(&h, s("2001:db8:3e7:ffff::1")), ok());
    assert_eq!(
        check(&h, s("2001:db8:3e8::1")).status.code,
        code::PERMISSION_DENIED
    );
}

#[test]
fn adapter_builds_handlers_from_real_configs() {
    let adapter = crate::find("listchecker").expect("listed in the inventory");
    assert_eq!(adapter.templates(), &[TemplateKind::ListEntry]);
    assert!(adapter.unavailable().is_none());
    let params =
        json!({"overrides": ["10.57.0.0/16"], "blacklist": false, "entryType": "IP_ADDRESSES"});
    let validated = adapter
        .validate(&ValidateInput {
            handler: "ipoveride.listchecker.istio-system",
            params: &params,
            instances: &[],
        })
        .config
        .unwrap();
    let h = adapter
        .build(
            validated,
            &Env::standalone("ipoveride.listchecker.istio-system"),
        )
        .unwrap();
    let list = h.list_entry().expect("implements listentry");
    let answer = |v| match list.handle_list_entry(&listentry::Instance {
        name: "i",
        value: Some(v),
    }) {
        Reply::Ready(r) => r.unwrap(),
        Reply::Later(_) => panic!("not ready"),
    };
    assert_eq!(answer(ip4(10, 57, 0, 9)), ok());
    assert_eq!(
        answer(s("10.56.0.1")),
        result(code::PERMISSION_DENIED, "10.56.0.1 is not whitelisted")
    );
    h.close();
}

#[test]
fn provider_needs_a_runtime() {
    let validated = ADAPTER
        .validate(&ValidateInput {
            handler: "h",
            params: &json!({"providerUrl": "http://127.0.0.1:9/list"}),
            instances: &[],
        })
        .config
        .unwrap();
    let err = ADAPTER
        .build(validated, &Env::standalone("h"))
        .err()
        .unwrap();
    assert!(matches!(err, BuildError::NoRuntime(_)), "{err}");
    assert!(err.to_string().contains("needs an async runtime"), "{err}");
}

// ----- provider lists -----------------------------------------------------------------

/// Time that moves only when told to.
struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap()
    }
}

/// The test server's answer, changeable while it runs.
type Answer = Arc<Mutex<(StatusCode, String)>>;

/// An HTTP list provider on a local port.
#[derive(Clone)]
struct ListServer {
    answer: Answer,
    requests: Arc<AtomicUsize>,
    url: String,
}

impl ListServer {
    async fn start(body: &str) -> ListServer {
        let answer = Arc::new(Mutex::new((StatusCode::OK, body.to_owned())));
        let requests = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            // A body without end and without a declared length.
            .route(
                "/endless",
                get(|| async {
                    let line = axum::body::Bytes::from_static(b"endless-entry\n");
                    axum::body::Body::from_stream(futures::stream::repeat_with(move || {
                        Ok::<_, std::convert::Infallible>(line.clone())
                    }))
                }),
            )
            .route(
                "/list",
                get(
                    |State((answer, requests)): State<(Answer, Arc<AtomicUsize>)>| async move {
                        requests.fetch_add(1, Ordering::SeqCst);
                        answer.lock().unwrap().clone()
                    },
                ),
            )
            .with_state((answer.clone(), requests.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/list", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ListServer {
            answer,
            requests,
            url,
        }
    }

    fn set(&self, status: StatusCode, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }
}

fn provider_handler(name: &str, params: Json, clock: Arc<dyn Clock>, env: &Env) -> ListHandler {
    let mut env = env.clone();
    env.handler = name.to_owned();
    ListHandler::new(config(params), &env, clock).unwrap()
}

fn provider(h: &ListHandler) -> &Provider {
    h.provider.as_deref().expect("has a provider")
}

/// The fetch counter of `handler` for `result`, as the registry exposes it.
fn fetches(env: &Env, handler: &str, result: &str) -> u64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&env.resources.metrics.gather())
        .unwrap();
    let series = format!(
        "mixer_adapter_listchecker_fetches_total{{handler=\"{handler}\",result=\"{result}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.parse().unwrap())
}

fn unavailable(message: &str) -> CheckResult {
    CheckResult {
        status: Status::new(code::UNAVAILABLE, message),
        valid_duration: Duration::ZERO,
        valid_use_count: 0,
    }
}

#[tokio::test]
async fn provider_list_refresh_failure_and_ttl() {
    let server = ListServer::start("alpha\nbeta\n").await;
    let clock = ManualClock::new();
    let env = Env::standalone("unused");
    let name = "providerlist.default";
    let h = provider_handler(
        name,
        json!({"providerUrl": server.url, "refreshInterval": "1s", "ttl": "10s", "overrides": ["always"]}),
        clock.clone(),
        &env,
    );
    let url = &server.url;

    // Before the first fetch: overrides still decide, anything else is unavailable.
    assert_eq!(check(&h, s("always")), ok());
    assert_eq!(
        check(&h, s("alpha")),
        unavailable(&format!(
            "list from {url} is not available yet: the first fetch has not completed"
        ))
    );

    provider(&h).refresh().await.unwrap();
    assert_eq!(check(&h, s("alpha")), ok());
    assert_eq!(check(&h, s("beta")), ok());
    assert_eq!(check(&h, s("always")), ok());
    assert_eq!(
        check(&h, s("gamma")),
        result(code::PERMISSION_DENIED, "gamma is not whitelisted")
    );

    // A refresh picks up changes.
    server.set(StatusCode::OK, "gamma\n");
    provider(&h).refresh().await.unwrap();
    assert_eq!(check(&h, s("gamma")), ok());
    assert_eq!(
        check(&h, s("alpha")),
        result(code::PERMISSION_DENIED, "alpha is not whitelisted")
    );
    assert_eq!(fetches(&env, name, "success"), 2);

    // The provider fails: the last good list stays in use until the ttl.
    server.set(StatusCode::INTERNAL_SERVER_ERROR, "boom");
    let err = provider(&h).refresh().await.unwrap_err();
    assert_eq!(err.to_string(), format!("{url} answered HTTP 500"));
    assert_eq!(fetches(&env, name, "failure"), 1);
    clock.advance(Duration::from_secs(10));
    assert_eq!(check(&h, s("gamma")), ok());

    // Past the ttl: fail closed, except for what the overrides decide.
    clock.advance(Duration::from_secs(1));
    let stale = unavailable(&format!(
        "list from {url} is stale: last successful fetch 11s ago, ttl 10s; last error: {url} \
         answered HTTP 500"
    ));
    assert_eq!(check(&h, s("gamma")), stale);
    assert_eq!(check(&h, s("delta")), stale);
    assert_eq!(check(&h, s("always")), ok());

    // The provider recovers.
    server.set(StatusCode::OK, "gamma\ndelta\n");
    provider(&h).refresh().await.unwrap();
    assert_eq!(check(&h, s("delta")), ok());
    assert_eq!(fetches(&env, name, "success"), 3);
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn unchanged_body_renews_the_ttl_and_bad_bodies_keep_the_list() {
    let server = ListServer::start("^svc-[a-z]+$\n").await;
    let clock = ManualClock::new();
    let env = Env::standalone("unused");
    let h = provider_handler(
        "regexprovider.default",
        json!({"providerUrl": server.url, "refreshInterval": "5s", "ttl": "10s",
               "entryType": "REGEX", "blacklist": true}),
        clock.clone(),
        &env,
    );
    provider(&h).refresh().await.unwrap();
    let first = provider(&h).list().unwrap();
    assert_eq!(
        check(&h, s("svc-db")),
        result(code::PERMISSION_DENIED, "svc-db is blacklisted")
    );
    clock.advance(Duration::from_secs(8));
    provider(&h).refresh().await.unwrap();
    // Same body: the compiled list is reused, only its age is reset.
    assert!(Arc::ptr_eq(&first, &provider(&h).list().unwrap()));
    clock.advance(Duration::from_secs(8));
    assert_eq!(check(&h, s("svc-x1")), ok());

    // A body that does not compile is a failed refresh; the good list stays.
    server.set(StatusCode::OK, "^svc-[a-z]+$\n(unclosed\n");
    let err = provider(&h).refresh().await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Invalid { source: matcher::ListError::Entry { at, .. }, .. } if at == "line 2"),
        "{err}"
    );
    assert_eq!(
        check(&h, s("svc-db")),
        result(code::PERMISSION_DENIED, "svc-db is blacklisted")
    );
    clock.advance(Duration::from_secs(3));
    let status = check(&h, s("svc-db")).status;
    assert_eq!(status.code, code::UNAVAILABLE);
    assert!(
        status.message.starts_with(&format!(
            "list from {} is stale: last successful fetch 11s ago, ttl 10s; last error: list \
             from {} is invalid: line 2: error parsing regexp:",
            server.url, server.url
        )),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn first_fetch_failures_fail_closed() {
    let server = ListServer::start("").await;
    server.set(StatusCode::NOT_FOUND, "");
    let env = Env::standalone("unused");
    let h = provider_handler(
        "missinglist.default",
        json!({"providerUrl": server.url}),
        Arc::new(SystemClock),
        &env,
    );
    assert!(provider(&h).refresh().await.is_err());
    assert_eq!(
        check(&h, s("x")),
        unavailable(&format!(
            "list from {0} is not available: no fetch has succeeded; last error: {0} answered \
             HTTP 404",
            server.url
        ))
    );

    // Nothing listening at all.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/list", closed.local_addr().unwrap());
    drop(closed);
    let h = provider_handler(
        "nolistener.default",
        json!({"providerUrl": url, "blacklist": true}),
        Arc::new(SystemClock),
        &env,
    );
    let err = provider(&h).refresh().await.unwrap_err();
    assert!(matches!(err, FetchError::Transport { .. }), "{err}");
    let status = check(&h, s("x")).status;
    assert_eq!(status.code, code::UNAVAILABLE);
    assert!(
        status.message.starts_with(&format!(
            "list from {url} is not available: no fetch has succeeded; last error: fetching {url} failed: "
        )),
        "{}",
        status.message
    );
    assert_eq!(fetches(&env, "nolistener.default", "failure"), 1);
}

#[tokio::test]
async fn ip_provider_yaml_and_overrides_union() {
    let server = ListServer::start("whitelist:\n  - 10.57.0.0/16\n  - 2001:db8::/32\n").await;
    let env = Env::standalone("unused");
    let h = provider_handler(
        "ipblacklist.default",
        json!({"providerUrl": server.url, "entryType": "IP_ADDRESSES", "blacklist": true,
               "overrides": ["192.168.0.0/24"]}),
        Arc::new(SystemClock),
        &env,
    );
    provider(&h).refresh().await.unwrap();
    assert_eq!(
        check(&h, ip4(10, 57, 1, 1)),
        result(code::PERMISSION_DENIED, "10.57.1.1 is blacklisted")
    );
    assert_eq!(
        check(&h, s("2001:db8::7")),
        result(code::PERMISSION_DENIED, "2001:db8::7 is blacklisted")
    );
    assert_eq!(
        check(&h, ip16("::ffff:192.168.0.9")),
        result(code::PERMISSION_DENIED, "192.168.0.9 is blacklisted")
    );
    assert_eq!(check(&h, ip4(10, 58, 0, 1)), ok());
    assert_eq!(
        check(&h, s("nope")),
        result(code::INVALID_ARGUMENT, "nope is not a valid IP address")
    );

    // A plain-lines body is not the IP list format.
    server.set(StatusCode::OK, "10.0.0.0/8\n11.0.0.0/8\n");
    let err = provider(&h).refresh().await.unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Invalid {
                source: matcher::ListError::NotYaml(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(check(&h, ip4(10, 58, 0, 1)), ok());
}

#[tokio::test]
async fn metrics_survive_rebuilds() {
    let server = ListServer::start("a\n").await;
    let env = Env::standalone("unused");
    let params = json!({"providerUrl": server.url});
    let first = provider_handler(
        "rebuilt.default",
        params.clone(),
        Arc::new(SystemClock),
        &env,
    );
    provider(&first).refresh().await.unwrap();
    // A reload builds the handler again in the same registry.
    let second = provider_handler("rebuilt.default", params, Arc::new(SystemClock), &env);
    provider(&second).refresh().await.unwrap();
    assert_eq!(fetches(&env, "rebuilt.default", "success"), 2);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&env.resources.metrics.gather())
        .unwrap();
    assert_eq!(
        text.matches("# TYPE mixer_adapter_listchecker_fetches_total counter")
            .count(),
        1
    );
}

/// Waits (bounded) until the provider has finished `n` refreshes in total.
async fn refreshed(rx: &mut tokio::sync::watch::Receiver<u64>, n: u64) {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= n))
        .await
        .expect("the refresh task keeps fetching")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refresh_and_close() {
    let server = ListServer::start("one\n").await;
    let env = Env::standalone("unused");
    let mut cfg = config(json!({"providerUrl": server.url}));
    // Shorter than validation allows, to see several refreshes quickly.
    cfg.provider.as_mut().unwrap().refresh_interval = Duration::from_millis(20);
    let mut henv = env.clone();
    henv.handler = "background.default".to_owned();
    let h = ListHandler::new(cfg, &henv, Arc::new(SystemClock)).unwrap();
    let mut rx = provider(&h).refreshes();
    h.start(&tokio::runtime::Handle::current());

    refreshed(&mut rx, 1).await;
    assert_eq!(check(&h, s("one")), ok());

    // A refresh already running may have fetched the old body; the one after it cannot.
    server.set(StatusCode::OK, "two\n");
    let seen = *rx.borrow();
    refreshed(&mut rx, seen + 2).await;
    assert_eq!(check(&h, s("two")), ok());
    assert_eq!(
        check(&h, s("one")),
        result(code::PERMISSION_DENIED, "one is not whitelisted")
    );

    h.close();
    let task = h.task.lock().unwrap().take().expect("started");
    let ended = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the task ends after close");
    assert!(ended.unwrap_err().is_cancelled());
    // The task's hold on the provider is gone with it: nothing can fetch any more.
    assert_eq!(Arc::strong_count(h.provider.as_ref().unwrap()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_build_starts_fetching_on_the_env_runtime() {
    let server = ListServer::start("v1\n").await;
    let mut env = Env::standalone("fetched.default");
    Arc::get_mut(&mut env.resources).unwrap().runtime = Some(tokio::runtime::Handle::current());
    let validated = ADAPTER
        .validate(&ValidateInput {
            handler: "fetched.default",
            params: &json!({"providerUrl": server.url}),
            instances: &[],
        })
        .config
        .unwrap();
    let h = ADAPTER.build(validated, &env).unwrap();
    let list = h.list_entry().unwrap();
    let answer = || match list.handle_list_entry(&listentry::Instance {
        name: "i",
        value: Some(s("v1")),
    }) {
        Reply::Ready(r) => r.unwrap(),
        Reply::Later(_) => panic!("not ready"),
    };
    // The first fetch starts at build; poll (bounded) until it has landed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while answer().status.code == code::UNAVAILABLE {
        assert!(Instant::now() < deadline, "first fetch never completed");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(answer(), ok());
    assert_eq!(fetches(&env, "fetched.default", "success"), 1);
    h.close();
}

// ----- an untrusted provider ----------------------------------------------------------

#[tokio::test]
async fn provider_body_is_cut_at_max_provider_body_bytes() {
    let server = ListServer::start("alpha\nbeta\n").await;
    let env = Env::standalone("unused");
    let h = provider_handler(
        "capped.default",
        json!({"providerUrl": server.url, "maxProviderBodyBytes": 64}),
        Arc::new(SystemClock),
        &env,
    );
    provider(&h).refresh().await.unwrap();

    // A declared length over the limit: refused before reading.
    server.set(StatusCode::OK, &"x".repeat(65));
    let err = provider(&h).refresh().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} declares a body of 65 bytes, more than maxProviderBodyBytes (64 bytes); it was \
             not read",
            server.url
        )
    );
    assert_eq!(check(&h, s("alpha")), ok());

    // Exactly the limit is accepted.
    server.set(StatusCode::OK, &format!("{}\n", "y".repeat(63)));
    provider(&h).refresh().await.unwrap();
    assert_eq!(check(&h, s(&"y".repeat(63))), ok());

    // No declared length and no end: reading stops at the limit.
    let endless = provider_handler(
        "endless.default",
        json!({"providerUrl": server.url.replace("/list", "/endless"),
               "maxProviderBodyBytes": 4096, "overrides": ["kept"]}),
        Arc::new(SystemClock),
        &env,
    );
    let err = tokio::time::timeout(Duration::from_secs(30), provider(&endless).refresh())
        .await
        .expect("the refresh ends")
        .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::TooLarge {
                limit_bytes: 4096,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("exceeds maxProviderBodyBytes (4096 bytes)"),
        "{err}"
    );
    assert_eq!(check(&endless, s("kept")), ok());
}

#[tokio::test]
async fn provider_url_credentials_are_never_shown() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let raw = format!("http://user:password@127.0.0.1:{port}/list?token=secret");
    let shown = format!("http://user:xxxxx@127.0.0.1:{port}/list?xxxxx");
    let env = Env::standalone("unused");
    let h = provider_handler(
        "secret.default",
        json!({"providerUrl": raw}),
        Arc::new(SystemClock),
        &env,
    );
    assert_eq!(provider(&h).url(), shown);
    let pending = check(&h, s("x")).status.message;
    let err = provider(&h).refresh().await.unwrap_err();
    let failed = check(&h, s("x")).status.message;
    for text in [pending, err.to_string(), format!("{err:?}"), failed.clone()] {
        assert!(text.contains(&shown), "{text}");
        assert!(
            !text.contains("password") && !text.contains("secret"),
            "{text}"
        );
    }
    assert!(failed.contains("Connection refused"), "{failed}");

    // Served: the credentials are still sent.
    let server = ListServer::start("alpha\n").await;
    let with_credentials = server.url.replace("http://", "http://user:password@") + "?token=secret";
    let h = provider_handler(
        "secretserved.default",
        json!({"providerUrl": with_credentials, "ttl": "60s"}),
        Arc::new(SystemClock),
        &env,
    );
    provider(&h).refresh().await.unwrap();
    assert_eq!(check(&h, s("alpha")), ok());
    server.set(StatusCode::FORBIDDEN, "");
    let err = provider(&h).refresh().await.unwrap_err().to_string();
    assert!(err.ends_with("/list?xxxxx answered HTTP 403"), "{err}");
    assert!(
        !err.contains("password") && !err.contains("secret"),
        "{err}"
    );
}

/// 50 × `\w{100}x`: about 1 MiB of compiled program each.
fn hostile_regex_body() -> String {
    "\\w{100}x\n".repeat(50)
}

#[tokio::test]
async fn regex_list_over_the_compile_budget_is_rejected_once() {
    let server = ListServer::start("^alpha$\n").await;
    let env = Env::standalone("unused");
    let h = provider_handler(
        "regexbudget.default",
        json!({"providerUrl": server.url, "entryType": "REGEX"}),
        Arc::new(SystemClock),
        &env,
    );
    provider(&h).refresh().await.unwrap();
    assert_eq!(provider(&h).compilations(), 1);

    server.set(StatusCode::OK, &hostile_regex_body());
    let err = provider(&h).refresh().await.unwrap_err();
    assert_eq!(
        err,
        FetchError::Invalid {
            url: server.url.clone(),
            source: matcher::ListError::RegexTooBig {
                limit_bytes: matcher::REGEX_COMPILE_BUDGET_BYTES
            }
        }
    );
    assert!(
        err.to_string().contains("exceed the compile budget"),
        "{err}"
    );
    assert_eq!(provider(&h).compilations(), 2);
    assert_eq!(check(&h, s("alpha")), ok());

    // The same body again: the same verdict, without compiling it again.
    assert_eq!(provider(&h).refresh().await.unwrap_err(), err);
    assert_eq!(provider(&h).compilations(), 2);

    // A changed body is compiled.
    server.set(StatusCode::OK, "^beta$\n");
    provider(&h).refresh().await.unwrap();
    assert_eq!(provider(&h).compilations(), 3);
    assert_eq!(check(&h, s("beta")), ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compilation_over_the_time_budget_is_rejected_and_not_doubled() {
    let server = ListServer::start("alpha\n").await;
    let env = Env::standalone("unused");
    let h = provider_handler(
        "slowcompile.default",
        json!({"providerUrl": server.url, "entryType": "REGEX"}),
        Arc::new(SystemClock),
        &env,
    );
    provider(&h).refresh().await.unwrap();

    // Thousands of patterns take far longer than a millisecond to compile.
    let many: String = (0..10_000)
        .map(|i| format!("^svc-{i}-[a-z0-9]+\\.(prod|staging)\\.example\\.com$\n"))
        .collect();
    server.set(StatusCode::OK, &many);
    provider(&h).set_compile_budget(Duration::from_millis(1));
    let err = provider(&h).refresh().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "list from {} was rejected: compiling it took longer than the compile budget of \
             0.001s",
            server.url
        )
    );
    assert_eq!(check(&h, s("alpha")), ok());

    // While that compilation runs on, no other starts; then the next body is compiled.
    provider(&h).set_compile_budget(provider::COMPILE_TIME_BUDGET);
    server.set(StatusCode::OK, "omega\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match provider(&h).refresh().await {
            Ok(()) => break,
            Err(FetchError::CompileBusy { .. }) => {
                assert_eq!(check(&h, s("alpha")), ok());
                assert!(
                    Instant::now() < deadline,
                    "the slow compilation never ended"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(check(&h, s("omega")), ok());
}
