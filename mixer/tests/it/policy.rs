//! Policy end to end, through the real gRPC server on loopback: list checks (an IP
//! whitelist, a label blacklist), denier direct responses, quotas requested in
//! `CheckRequest.quotas` (memquota in process; redisquota shared by two `mixer server`
//! processes over a `redis-server` each test starts), and the configurations in
//! `samples/policy/` answering as their README says.
//!
//! The redisquota tests need the `redis-server` binary on PATH; without it they fail and
//! say so (`apt-get install -y redis-server` on Debian/Ubuntu). Every wait is a bounded
//! poll; quota windows are an hour long, so no window rolls during a test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use expr_lang::Value;
use mixer::api::mixer::decode_referenced;
use mixer::runtime::Condition;
use mixer::runtime::PolicyErrorMode;
use mixer::wire::pb::istio::mixer::v1::CheckResponse;
use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use test_support::envoy::ip;
use test_support::redis::RedisServer;
use tonic::transport::Channel;

use crate::common::*;

const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const RESOURCE_EXHAUSTED: i32 = 8;
const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// Requests and answers.

/// `request.headers` holding only `x-user: <user>`.
fn user(name: &str) -> (&'static str, Value<'static>) {
    ("request.headers", map(&[("x-user", name)]))
}

/// A deduplication id no other request of this test binary uses, so that no quota
/// answer is a replay of an earlier one.
fn fresh_dedup_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "policy-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Check asking for `quotas` (name, amount, best effort), under a fresh dedup id.
async fn check_quotas(
    c: &mut MixerClient<Channel>,
    attrs: &[(&str, Value<'static>)],
    quotas: &[(&str, i64, bool)],
) -> CheckResponse {
    let mut req = check_request(attrs, quotas);
    req.deduplication_id = fresh_dedup_id();
    c.check(req)
        .await
        .expect("the Check call succeeds")
        .into_inner()
}

/// One quota's answer, in comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quota {
    granted: i64,
    valid: Duration,
    code: i32,
    message: String,
}

impl Quota {
    /// Status OK, `granted` units valid for `valid`.
    fn ok(granted: i64, valid: Duration) -> Quota {
        Quota {
            granted,
            valid,
            code: OK,
            message: String::new(),
        }
    }

    /// Nothing granted, with a failing status.
    fn refused(code: i32, message: &str) -> Quota {
        Quota {
            granted: 0,
            valid: Duration::ZERO,
            code,
            message: message.to_owned(),
        }
    }
}

fn duration(d: Option<&prost_types::Duration>) -> Duration {
    d.map_or(Duration::ZERO, |d| {
        Duration::new(
            u64::try_from(d.seconds).expect("a non-negative duration"),
            u32::try_from(d.nanos).expect("non-negative nanos"),
        )
    })
}

/// The answer for quota `name`; panics when the response has none.
fn quota(r: &CheckResponse, name: &str) -> Quota {
    let q = r
        .quotas
        .get(name)
        .unwrap_or_else(|| panic!("no answer for quota {name:?} in {r:?}"));
    let status = q.status.clone().unwrap_or_default();
    Quota {
        granted: q.granted_amount,
        valid: duration(q.valid_duration.as_ref()),
        code: status.code,
        message: status.message,
    }
}

/// The precondition's (valid_duration, valid_use_count).
fn validity(r: &CheckResponse) -> (Duration, i32) {
    let pre = r.precondition.as_ref().expect("a precondition");
    (duration(pre.valid_duration.as_ref()), pre.valid_use_count)
}

/// The precondition's referenced attributes as (name, map key, condition).
fn referenced(r: &CheckResponse) -> Vec<(String, Option<String>, Condition)> {
    let pre = r.precondition.as_ref().expect("a precondition");
    decode_referenced(
        pre.referenced_attributes
            .as_ref()
            .expect("referenced attributes"),
    )
    .expect("decodable referenced attributes")
    .iter()
    .map(|r| (r.name.clone(), r.map_key.clone(), r.condition))
    .collect()
}

/// Asks `name`=1 (all or nothing) as `user` until it is refused or `limit` requests were
/// made; returns how many were granted (each must grant exactly 1, valid for `valid`).
async fn grants_until_refused(
    c: &mut MixerClient<Channel>,
    attrs: &[(&str, Value<'static>)],
    name: &str,
    valid: Duration,
    limit: usize,
) -> usize {
    for granted in 0..limit {
        let r = check_quotas(c, attrs, &[(name, 1, false)]).await;
        let q = quota(&r, name);
        if q.granted == 0 {
            return granted;
        }
        assert_eq!(q, Quota::ok(1, valid), "request {granted}");
    }
    limit
}

// ---------------------------------------------------------------------------------
// List checks and denials.

const IP_WHITELIST: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: whitelistip, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params:
    overrides: ["10.57.0.0/16", "192.168.10.7", "fd00:57::/32"]
    blacklist: false
    entryType: IP_ADDRESSES
    cachingInterval: 42s
    cachingUseCount: 17
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: sourceip, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: source.ip | ip("0.0.0.0")
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: checkip, namespace: istio-system}
spec:
  actions:
  - handler: whitelistip
    instances: [sourceip]
"#;

#[tokio::test]
async fn whitelist_by_source_ip_cidr() {
    let dir = config_dir(&[("whitelist.yaml", IP_WHITELIST)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;

    // Inside the ranges (each address once: the answers are fresh, not cached ones).
    for inside in [
        "10.57.0.1",
        "10.57.255.254",
        "192.168.10.7",
        "fd00:57::1",
        "fd00:57:ffff::9",
    ] {
        let r = check(&mut c, &[("source.ip", ip(inside))]).await.unwrap();
        assert_eq!(status_of(&r), (OK, String::new()), "{inside}");
        // The listchecker's caching params are the validity of every answer.
        assert_eq!(validity(&r), (Duration::from_secs(42), 17), "{inside}");
    }

    // Outside: denied, with the handler's name before the adapter's message.
    for outside in ["10.58.0.1", "10.56.255.255", "192.168.10.8", "fd00:58::1"] {
        let r = check(&mut c, &[("source.ip", ip(outside))]).await.unwrap();
        assert_eq!(
            status_of(&r),
            (
                PERMISSION_DENIED,
                format!("whitelistip.istio-system:{outside} is not whitelisted")
            )
        );
        assert_eq!(validity(&r), (Duration::from_secs(42), 17), "{outside}");
        assert!(
            r.precondition.unwrap().route_directive.is_none(),
            "a plain denial has no direct response"
        );
    }

    // The decision depends on source.ip, and says so for the proxy's cache.
    let r = check(&mut c, &[("source.ip", ip("10.57.1.1"))])
        .await
        .unwrap();
    assert!(
        referenced(&r).contains(&("source.ip".to_owned(), None, Condition::Exact)),
        "{:?}",
        referenced(&r)
    );

    // No source.ip: the instance's default, 0.0.0.0, which is not on the list.
    let r = check(&mut c, &[]).await.unwrap();
    assert_eq!(
        status_of(&r),
        (
            PERMISSION_DENIED,
            "whitelistip.istio-system:0.0.0.0 is not whitelisted".to_owned()
        )
    );
    assert!(referenced(&r).contains(&("source.ip".to_owned(), None, Condition::Absence)));
    server.shutdown().await.unwrap();
}

const LABEL_BLACKLIST: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denylabels, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params:
    overrides: [untrusted, legacy-batch]
    blacklist: true
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: sourceapp, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: source.labels["app"] | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: denyblacklisted, namespace: istio-system}
spec:
  actions:
  - handler: denylabels
    instances: [sourceapp]
"#;

#[tokio::test]
async fn blacklist_by_source_label() {
    let dir = config_dir(&[("blacklist.yaml", LABEL_BLACKLIST)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;

    for app in ["untrusted", "legacy-batch"] {
        let r = check(
            &mut c,
            &[("source.labels", map(&[("app", app), ("version", "v1")]))],
        )
        .await
        .unwrap();
        assert_eq!(
            status_of(&r),
            (
                PERMISSION_DENIED,
                format!("denylabels.istio-system:{app} is blacklisted")
            )
        );
        // The listchecker defaults: 5 minutes, 10000 uses.
        assert_eq!(validity(&r), (Duration::from_secs(300), 10_000));
        let refs = referenced(&r);
        assert!(
            refs.contains(&(
                "source.labels".to_owned(),
                Some("app".to_owned()),
                Condition::Exact
            )),
            "{refs:?}"
        );
        assert!(
            !refs
                .iter()
                .any(|(_, key, _)| key.as_deref() == Some("version")),
            "only the app label was read: {refs:?}"
        );
    }

    // Anything else is allowed: other apps, another case (STRINGS compares exactly), no
    // app label, no labels at all.
    let allowed: [&[(&str, Value<'static>)]; 4] = [
        &[("source.labels", map(&[("app", "reviews")]))],
        &[("source.labels", map(&[("app", "Untrusted")]))],
        &[("source.labels", map(&[("version", "v1")]))],
        &[],
    ];
    for attrs in allowed {
        let r = check(&mut c, attrs).await.unwrap();
        assert_eq!(status_of(&r), (OK, String::new()), "{attrs:?}");
        // Five minutes and 10000 uses, or what is left of them: without labels the app
        // label is as absent as without the app label, so the server's check cache may
        // answer the last request with the previous one's decision.
        let (valid, uses) = validity(&r);
        assert!(
            valid <= Duration::from_secs(300) && valid > Duration::from_secs(240),
            "{valid:?}"
        );
        assert!((9_990..=10_000).contains(&uses), "{uses}");
    }
    server.shutdown().await.unwrap();
}

const DIRECT_RESPONSES: &str = r#"
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
    validDuration: 7s
    validUseCount: 3
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
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: throttle-batch, namespace: istio-system}
spec:
  match: request.path == "/batch"
  actions:
  - handler: slowdown
    instances: [nothing]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: members, namespace: istio-system}
spec:
  match: request.path.startsWith("/members/")
  actions:
  - handler: membersonly
    instances: [nothing]
"#;

/// The response header operations as sorted (name, value, operation) triples
/// (0 REPLACE, 1 REMOVE, 2 APPEND).
fn response_headers(r: &CheckResponse) -> Vec<(String, String, i32)> {
    let rd = r
        .precondition
        .as_ref()
        .and_then(|p| p.route_directive.as_ref())
        .expect("a route directive");
    let mut ops: Vec<_> = rd
        .response_header_operations
        .iter()
        .map(|o| (o.name.clone(), o.value.clone(), o.operation))
        .collect();
    ops.sort();
    ops
}

#[tokio::test]
async fn denier_with_direct_http_response() {
    let dir = config_dir(&[("direct.yaml", DIRECT_RESPONSES)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;

    // An explicit HTTP code, a body and headers (Set-Cookie split into APPENDs).
    let r = check(&mut c, &[("request.path", s("/batch"))])
        .await
        .unwrap();
    assert_eq!(
        status_of(&r),
        (
            RESOURCE_EXHAUSTED,
            "slowdown.istio-system:slow down".to_owned()
        )
    );
    assert_eq!(validity(&r), (Duration::from_secs(7), 3));
    let rd = r
        .precondition
        .as_ref()
        .unwrap()
        .route_directive
        .clone()
        .unwrap();
    assert_eq!(rd.direct_response_code, 429);
    assert_eq!(rd.direct_response_body, "come back in 30 seconds");
    assert!(rd.request_header_operations.is_empty());
    let set_cookie = |v: &str| ("Set-Cookie".to_owned(), v.to_owned(), 2);
    assert_eq!(
        response_headers(&r),
        vec![
            set_cookie("seen=1"),
            set_cookie("tries=3"),
            ("retry-after".to_owned(), "30".to_owned(), 0),
        ]
    );

    // No HTTP code: the one of the status code (PERMISSION_DENIED is 403); the denier's
    // default validity.
    let r = check(&mut c, &[("request.path", s("/members/lounge"))])
        .await
        .unwrap();
    assert_eq!(
        status_of(&r),
        (
            PERMISSION_DENIED,
            "membersonly.istio-system:members only".to_owned()
        )
    );
    assert_eq!(validity(&r), (Duration::from_secs(5), 1000));
    let rd = r
        .precondition
        .as_ref()
        .unwrap()
        .route_directive
        .clone()
        .unwrap();
    assert_eq!(rd.direct_response_code, 403);
    assert_eq!(rd.direct_response_body, "<h1>members only</h1>");
    assert_eq!(
        response_headers(&r),
        vec![("content-type".to_owned(), "text/html".to_owned(), 0)]
    );

    // Neither rule matches: allowed, no directive.
    let r = check(&mut c, &[("request.path", s("/public"))])
        .await
        .unwrap();
    assert_eq!(status_of(&r), (OK, String::new()));
    assert!(r.precondition.unwrap().route_directive.is_none());
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// Quotas with memquota.

/// Per-user quota: 5 per hour, 8 for the user `vip`; results remembered per
/// deduplication id for an hour, so a replay is recognised however slow the machine.
const USER_QUOTA: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: userquota, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      user: request.headers["x-user"] | "anonymous"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quotahandler, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    minDeduplicationDuration: 1h
    quotas:
    - name: userquota.instance.istio-system
      maxAmount: 5
      validDuration: 1h
      overrides:
      - dimensions: {user: vip}
        maxAmount: 8
        validDuration: 1h
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: charge-users, namespace: istio-system}
spec:
  actions:
  - handler: quotahandler
    instances: [userquota]
"#;

#[tokio::test]
async fn quota_all_or_nothing_and_best_effort() {
    let dir = config_dir(&[("quota.yaml", USER_QUOTA)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let q = "userquota";

    // max 5: five grants of 1, then 0 (memquota's status stays OK; the denial is the
    // amount, without a validity).
    let alice = [user("alice")];
    for i in 0..5 {
        let r = check_quotas(&mut c, &alice, &[(q, 1, false)]).await;
        assert_eq!(status_of(&r).0, OK);
        assert_eq!(quota(&r, q), Quota::ok(1, HOUR), "grant {i}");
    }
    let r = check_quotas(&mut c, &alice, &[(q, 1, false)]).await;
    assert_eq!(quota(&r, q), Quota::ok(0, Duration::ZERO));
    // Best effort with nothing left is granted 0 too, but, as in Mixer, it counts as a
    // successful allocation from the window and carries the window's validity.
    let r = check_quotas(&mut c, &alice, &[(q, 1, true)]).await;
    assert_eq!(quota(&r, q), Quota::ok(0, HOUR));

    // Another user has a counter of their own. 3 of 5 taken, 2 remain:
    let bob = [user("bob")];
    let r = check_quotas(&mut c, &bob, &[(q, 3, false)]).await;
    assert_eq!(quota(&r, q), Quota::ok(3, HOUR));
    // all or nothing asking 3 gets nothing (and takes nothing),
    let r = check_quotas(&mut c, &bob, &[(q, 3, false)]).await;
    assert_eq!(quota(&r, q), Quota::ok(0, Duration::ZERO));
    // best effort asking 3 gets the 2 left,
    let r = check_quotas(&mut c, &bob, &[(q, 3, true)]).await;
    assert_eq!(quota(&r, q), Quota::ok(2, HOUR));
    // and then nothing is left, whichever way one asks.
    let r = check_quotas(&mut c, &bob, &[(q, 1, true)]).await;
    assert_eq!(quota(&r, q).granted, 0);
    let r = check_quotas(&mut c, &bob, &[(q, 1, false)]).await;
    assert_eq!(quota(&r, q), Quota::ok(0, Duration::ZERO));

    // The override's limit for `vip`.
    let vip = [user("vip")];
    let r = check_quotas(&mut c, &vip, &[(q, 10, true)]).await;
    assert_eq!(quota(&r, q), Quota::ok(8, HOUR));

    // Without x-user the dimension is `anonymous`: the quota's own limit.
    assert_eq!(grants_until_refused(&mut c, &[], q, HOUR, 20).await, 5);

    // A retried request (same deduplication id) gets the first answer again and is not
    // charged twice.
    let carol = [user("carol")];
    let mut req = check_request(&carol, &[(q, 2, false)]);
    req.deduplication_id = fresh_dedup_id();
    for attempt in 0..3 {
        let r = c.check(req.clone()).await.unwrap().into_inner();
        let answer = quota(&r, q);
        assert_eq!(answer.granted, 2, "attempt {attempt}");
        assert!(answer.valid > Duration::ZERO && answer.valid <= HOUR);
    }
    let r = check_quotas(&mut c, &carol, &[(q, 5, true)]).await;
    assert_eq!(
        quota(&r, q),
        Quota::ok(3, HOUR),
        "only the first try was charged"
    );
    server.shutdown().await.unwrap();
}

const TWO_QUOTAS: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: userquota, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      user: request.headers["x-user"] | "anonymous"
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: pathquota, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      path: request.path | "/"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quotahandler, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - name: userquota.instance.istio-system
      maxAmount: 2
      validDuration: 1h
    - name: pathquota.instance.istio-system
      maxAmount: 3
      validDuration: 1h
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: charge, namespace: istio-system}
spec:
  actions:
  - handler: quotahandler
    instances: [userquota, pathquota]
"#;

#[tokio::test]
async fn several_quotas_in_one_request_are_answered_independently() {
    let dir = config_dir(&[("quota.yaml", TWO_QUOTAS)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let attrs = [user("dave"), ("request.path", s("/reports"))];
    let asks = [
        ("userquota", 1, false),
        ("pathquota", 1, false),
        ("nosuchquota", 7, false),
    ];

    // userquota runs out after 2, pathquota after 3; the unknown one never does.
    let expected = [(1, 1), (1, 1), (0, 1), (0, 0)];
    for (i, (user_grant, path_grant)) in expected.into_iter().enumerate() {
        let r = check_quotas(&mut c, &attrs, &asks).await;
        assert_eq!(r.quotas.len(), 3, "{r:?}");
        let valid = |g| if g > 0 { HOUR } else { Duration::ZERO };
        assert_eq!(
            quota(&r, "userquota"),
            Quota::ok(user_grant, valid(user_grant)),
            "request {i}"
        );
        assert_eq!(
            quota(&r, "pathquota"),
            Quota::ok(path_grant, valid(path_grant)),
            "request {i}"
        );
        assert_eq!(
            quota(&r, "nosuchquota"),
            Quota::ok(7, MINUTE),
            "request {i}"
        );
    }

    // Another path still has its pathquota, and dave still has no userquota.
    let r = check_quotas(
        &mut c,
        &[user("dave"), ("request.path", s("/other"))],
        &asks[..2],
    )
    .await;
    assert_eq!(quota(&r, "userquota"), Quota::ok(0, Duration::ZERO));
    assert_eq!(quota(&r, "pathquota"), Quota::ok(1, HOUR));

    // Quota names match instance names case-insensitively: this is the same counter
    // (charged by memquota, exhausted), not an unknown quota granted for a minute.
    let r = check_quotas(&mut c, &attrs, &[("UserQuota", 1, false)]).await;
    assert_eq!(quota(&r, "UserQuota"), Quota::ok(0, Duration::ZERO));
    let r = check_quotas(&mut c, &[user("erin")], &[("USERQUOTA", 1, false)]).await;
    assert_eq!(quota(&r, "USERQUOTA"), Quota::ok(1, HOUR));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_quota_name_is_granted_for_a_minute() {
    let dir = config_dir(&[("quota.yaml", USER_QUOTA)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    // Granted whatever the amount and however often: no counter stands behind it.
    for (amount, best_effort) in [(3, false), (3, true), (1_000_000, false), (1, false)] {
        let r = check_quotas(
            &mut c,
            &[user("frank")],
            &[("requestcount", amount, best_effort)],
        )
        .await;
        assert_eq!(status_of(&r).0, OK);
        assert_eq!(
            quota(&r, "requestcount"),
            Quota::ok(amount, MINUTE),
            "{amount}"
        );
    }
    server.shutdown().await.unwrap();

    // Also with no quota configured at all.
    let dir = config_dir(&[]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let r = check_quotas(&mut c, &[], &[("requestcount", 5, false)]).await;
    assert_eq!(quota(&r, "requestcount"), Quota::ok(5, MINUTE));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn quota_is_charged_only_when_its_rule_matches() {
    let config = USER_QUOTA.replace(
        "metadata: {name: charge-users, namespace: istio-system}\nspec:\n",
        "metadata: {name: charge-users, namespace: istio-system}\nspec:\n  match: (request.path | \"/\") != \"/healthz\"\n",
    );
    assert!(config.contains("match:"), "the rule got its match");
    let dir = config_dir(&[("quota.yaml", &config)]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let health = [user("grace"), ("request.path", s("/healthz"))];
    let api = [user("grace"), ("request.path", s("/api"))];

    // Not matching: granted by the server itself (a minute's validity, where memquota
    // would give its hour), more times than the limit.
    for i in 0..8 {
        let r = check_quotas(&mut c, &health, &[("userquota", 1, false)]).await;
        assert_eq!(quota(&r, "userquota"), Quota::ok(1, MINUTE), "health {i}");
    }
    // None of that was charged: grace's counter still holds exactly 5.
    assert_eq!(
        grants_until_refused(&mut c, &api, "userquota", HOUR, 20).await,
        5
    );
    // An exhausted counter does not concern requests the rule does not match.
    let r = check_quotas(&mut c, &health, &[("userquota", 2, false)]).await;
    assert_eq!(quota(&r, "userquota"), Quota::ok(2, MINUTE));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn quotas_are_not_allocated_when_the_precondition_is_denied() {
    let dir = config_dir(&[
        ("blacklist.yaml", LABEL_BLACKLIST),
        ("quota.yaml", USER_QUOTA),
    ]);
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let denied = [
        user("heidi"),
        ("source.labels", map(&[("app", "untrusted")])),
    ];
    for _ in 0..8 {
        let r = check_quotas(
            &mut c,
            &denied,
            &[("userquota", 1, false), ("other", 1, false)],
        )
        .await;
        assert_eq!(
            status_of(&r),
            (
                PERMISSION_DENIED,
                "denylabels.istio-system:untrusted is blacklisted".to_owned()
            )
        );
        assert!(r.quotas.is_empty(), "no quota answers: {:?}", r.quotas);
    }
    // Heidi's counter (the quota's dimension is the user only) was never charged.
    let allowed = [user("heidi"), ("source.labels", map(&[("app", "reviews")]))];
    assert_eq!(
        grants_until_refused(&mut c, &allowed, "userquota", HOUR, 20).await,
        5
    );
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// mixer server processes over one redis-server.

/// A tonic client of a server process.
async fn process_client(server: &ServerProcess) -> MixerClient<Channel> {
    MixerClient::connect(server.api_url())
        .await
        .expect("connects to the mixer process")
}

/// The monitoring `/metrics` scrape of a server process.
fn process_metrics(server: &ServerProcess) -> String {
    server
        .monitoring_get("/metrics", Duration::from_secs(10))
        .expect("the scrape finishes")
        .text()
}

/// Two handlers on one Redis: `redisclosed` (failure mode CLOSED) limits every user to
/// `SHARED_MAX` per hour twice over (`rollingquota` with ROLLING_WINDOW, `fixedquota`
/// with FIXED_WINDOW); `redisopen` (failure mode OPEN) has a limit never reached.
const SHARED_MAX: i64 = 40;

fn redis_config(redis: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: rollingquota, namespace: istio-system}}
spec:
  compiledTemplate: quota
  params:
    dimensions: {{user: 'request.headers["x-user"] | "anonymous"'}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: fixedquota, namespace: istio-system}}
spec:
  compiledTemplate: quota
  params:
    dimensions: {{user: 'request.headers["x-user"] | "anonymous"'}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: openquota, namespace: istio-system}}
spec:
  compiledTemplate: quota
  params:
    dimensions: {{user: 'request.headers["x-user"] | "anonymous"'}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: redisclosed, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redisServerUrl: "{redis}"
    failureMode: CLOSED
    quotas:
    - name: rollingquota.instance.istio-system
      maxAmount: {SHARED_MAX}
      validDuration: 1h
      bucketDuration: 1s
      rateLimitAlgorithm: ROLLING_WINDOW
    - name: fixedquota.instance.istio-system
      maxAmount: {SHARED_MAX}
      validDuration: 1h
      rateLimitAlgorithm: FIXED_WINDOW
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: redisopen, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redisServerUrl: "{redis}"
    failureMode: OPEN
    quotas:
    - name: openquota.instance.istio-system
      maxAmount: 1000000
      validDuration: 1h
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: charge, namespace: istio-system}}
spec:
  actions:
  - handler: redisclosed
    instances: [rollingquota, fixedquota]
  - handler: redisopen
    instances: [openquota]
"#
    )
}

const ALL_THREE: [(&str, i64, bool); 3] = [
    ("rollingquota", 1, false),
    ("fixedquota", 1, false),
    ("openquota", 1, false),
];

const EXHAUSTED: &str = "redisclosed.istio-system:redisquota: Resource exhausted";
const UNAVAILABLE: &str = "redisclosed.istio-system:redisquota: Redis is unavailable";

/// Whether `q` is a grant of 1 from a Redis counter: OK with a validity (the failure
/// modes grant nothing, or grant without validity). ROLLING_WINDOW grants are valid for
/// the window's length; FIXED_WINDOW ones until the window's end, measured from the
/// request's own clock reading, which can be a little more than the window's length
/// when a concurrent request taken later started the window first.
fn granted_by_redis(q: &Quota) -> bool {
    q.code == OK
        && q.granted == 1
        && q.valid > Duration::ZERO
        && q.valid <= HOUR + Duration::from_secs(10)
}

/// Whether all three quotas were answered by Redis itself.
fn answered_by_redis(r: &CheckResponse) -> bool {
    ALL_THREE
        .iter()
        .all(|(name, ..)| granted_by_redis(&quota(r, name)))
}

/// Calls `probe` every 20 ms until it returns `Ok`, for at most `timeout`; panics with
/// `what` and the last failure's description.
async fn poll<F, Fut>(what: &str, timeout: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(()) => return,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls through `c` (as a fresh user each time, so that no counter fills up) until
/// Redis answers all three quotas, for at most `timeout`.
async fn until_redis_answers(c: &MixerClient<Channel>, what: &str, timeout: Duration) {
    static N: AtomicU64 = AtomicU64::new(0);
    poll(what, timeout, || {
        let mut c = c.clone();
        async move {
            let who = format!("probe-{}", N.fetch_add(1, Ordering::Relaxed));
            let r = check_quotas(&mut c, &[user(&who)], &ALL_THREE).await;
            if answered_by_redis(&r) {
                Ok(())
            } else {
                Err(format!("Redis did not answer: {:?}", r.quotas))
            }
        }
    })
    .await;
}

/// What a group of requests got.
#[derive(Default, Debug)]
struct Tally {
    rolling: i64,
    fixed: i64,
    open: i64,
    exhausted: usize,
    /// Failure-mode answers: a call that took Redis more than the handler's timeout
    /// (1s) on an overloaded machine.
    failed_over: usize,
    unexpected: Vec<String>,
}

impl Tally {
    fn add(&mut self, r: &CheckResponse) {
        for (name, total) in [
            ("rollingquota", &mut self.rolling),
            ("fixedquota", &mut self.fixed),
        ] {
            let q = quota(r, name);
            if granted_by_redis(&q) {
                *total += 1;
            } else if q == Quota::refused(RESOURCE_EXHAUSTED, EXHAUSTED) {
                self.exhausted += 1;
            } else if q == Quota::refused(RESOURCE_EXHAUSTED, UNAVAILABLE) {
                self.failed_over += 1;
            } else {
                self.unexpected.push(format!("{name}: {q:?}"));
            }
        }
        let q = quota(r, "openquota");
        if granted_by_redis(&q) {
            self.open += 1;
        } else if q == Quota::ok(1, Duration::ZERO) {
            self.failed_over += 1;
        } else {
            self.unexpected.push(format!("openquota: {q:?}"));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.rolling += other.rolling;
        self.fixed += other.fixed;
        self.open += other.open;
        self.exhausted += other.exhausted;
        self.failed_over += other.failed_over;
        self.unexpected.extend(other.unexpected);
    }

    /// After `asks` requests for one user with Redis up: the servers granted exactly
    /// the limit together, never more (fewer only when a call timed out: Redis may
    /// have charged it without the answer arriving).
    fn assert_shared_limit(&self, asks: usize) {
        assert!(self.unexpected.is_empty(), "{self:?}");
        assert!(
            self.rolling <= SHARED_MAX && self.fixed <= SHARED_MAX,
            "more than the limit granted: {self:?}"
        );
        if self.failed_over == 0 {
            assert_eq!(
                (self.rolling, self.fixed),
                (SHARED_MAX, SHARED_MAX),
                "{self:?}"
            );
            assert_eq!(self.open, asks as i64, "{self:?}");
            assert_eq!(self.exhausted, 2 * (asks - SHARED_MAX as usize), "{self:?}");
        } else {
            eprintln!(
                "note: {} calls timed out into the failure mode (an overloaded machine); \
                 only the upper bound was checked: {self:?}",
                self.failed_over
            );
        }
    }
}

/// `tasks` concurrent callers per server, each making `each` calls as `who`.
async fn hammer(clients: &[MixerClient<Channel>], who: &str, tasks: usize, each: usize) -> Tally {
    let mut handles = Vec::new();
    for c in clients {
        for _ in 0..tasks {
            let mut c = c.clone();
            let who = who.to_owned();
            handles.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                for _ in 0..each {
                    let r = check_quotas(&mut c, &[user(&who)], &ALL_THREE).await;
                    tally.add(&r);
                }
                tally
            }));
        }
    }
    let mut total = Tally::default();
    for h in handles {
        let t = tokio::time::timeout(Duration::from_secs(120), h)
            .await
            .expect("the callers finish")
            .expect("a caller panicked");
        total.merge(t);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redisquota_shared_by_two_server_processes_and_redis_outage() {
    let mut redis = RedisServer::start();
    let dir = config_dir(&[("redis.yaml", &redis_config(&redis.address()))]);
    let (a, b) = tokio::task::block_in_place(|| {
        (
            ServerProcess::start(MIXER, dir.path(), &[]),
            ServerProcess::start(MIXER, dir.path(), &[]),
        )
    });
    let clients = [process_client(&a).await, process_client(&b).await];
    // The handlers connect in the background: wait until both servers reach Redis.
    for (c, name) in clients.iter().zip(["server a", "server b"]) {
        until_redis_answers(c, name, Duration::from_secs(30)).await;
    }

    // 2 servers × 8 callers × 15 calls = 240 asks of each quota for one user: together
    // the servers grant exactly the limit, never more, with either window algorithm.
    let tally = hammer(&clients, "hammered", 8, 15).await;
    tally.assert_shared_limit(2 * 8 * 15);

    // Redis goes away: OPEN grants (without validity: no counter stands behind it),
    // CLOSED refuses, saying why, on both servers.
    tokio::task::block_in_place(|| redis.kill());
    for (c, name) in clients.iter().zip(["server a", "server b"]) {
        poll(name, Duration::from_secs(30), || {
            let mut c = c.clone();
            async move {
                let r = check_quotas(&mut c, &[user("during-outage")], &ALL_THREE).await;
                let unavailable = Quota::refused(RESOURCE_EXHAUSTED, UNAVAILABLE);
                if quota(&r, "openquota") == Quota::ok(1, Duration::ZERO)
                    && quota(&r, "rollingquota") == unavailable
                    && quota(&r, "fixedquota") == unavailable
                {
                    Ok(())
                } else {
                    Err(format!("no failure-mode answers: {:?}", r.quotas))
                }
            }
        })
        .await;
        // The precondition is not affected by quota answers.
        let r = check_quotas(&mut c.clone(), &[], &ALL_THREE).await;
        assert_eq!(status_of(&r), (OK, String::new()));
    }
    // Counted per handler and failure mode.
    let scrape = process_metrics(&a);
    for (handler, mode) in [("redisclosed", "closed"), ("redisopen", "open")] {
        let handler = format!("handler=\"{handler}.istio-system\"");
        let mode = format!("failure_mode=\"{mode}\"");
        let n = metric_value(
            &scrape,
            "mixer_adapter_redisquota_unavailable_total",
            &[&handler, &mode],
        );
        assert!(
            n.is_some_and(|n| n >= 1.0),
            "{handler} {mode}: {n:?}\n{scrape}"
        );
    }

    // Redis is back on the same port (empty): both servers reconnect by themselves...
    tokio::task::block_in_place(|| redis.restart());
    for (c, name) in clients.iter().zip(["server a", "server b"]) {
        until_redis_answers(c, name, Duration::from_secs(60)).await;
    }
    // ...and enforce the shared limit again.
    let tally = hammer(&clients, "after-restart", 3, 10).await;
    tally.assert_shared_limit(2 * 3 * 10);
    // The hammered user's counters were in the Redis that was killed: a fresh start.
    let mut c = clients[1].clone();
    let r = check_quotas(&mut c, &[user("hammered")], &ALL_THREE).await;
    assert!(answered_by_redis(&r), "{:?}", r.quotas);
}

// ---------------------------------------------------------------------------------
// The samples in samples/policy/ answer as their README says.

fn sample_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../samples/policy")
        .join(name)
}

/// The sample's files in a temporary directory, with every `(from, to)` replacement
/// made in the text (each `from` must occur, so that the test notices a changed sample).
fn sample_copy(name: &str, edits: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut applied = vec![false; edits.len()];
    for entry in std::fs::read_dir(sample_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (i, (from, to)) in edits.iter().enumerate() {
            if text.contains(from) {
                text = text.replace(from, to);
                applied[i] = true;
            }
        }
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    for ((from, _), applied) in edits.iter().zip(applied) {
        assert!(applied, "samples/policy/{name} no longer contains {from:?}");
    }
    dir
}

#[test]
fn policy_samples_validate_without_warnings() {
    for name in [
        "ip-whitelist",
        "label-blacklist",
        "memquota-ratelimit",
        "redisquota-ratelimit",
    ] {
        let out = mixer_command()
            .args(["validate", "--strict"])
            .arg(sample_dir(name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.starts_with("valid:"), "{name}: {text}");
        assert!(text.contains("0 errors, 0 warnings"), "{name}: {text}");
    }
    // envoy/ leans on samples/default's attribute manifest.
    let out = mixer_command()
        .args(["validate", "--strict"])
        .arg(sample_dir("../default"))
        .arg(sample_dir("envoy"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "envoy: {text}");
    assert!(text.contains("0 errors, 0 warnings"), "envoy: {text}");
}

#[tokio::test]
async fn policy_samples_list_checks_answer_as_documented() {
    let server = start_server(&sample_dir("ip-whitelist"), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let productpage = || ("destination.labels", map(&[("app", "productpage")]));
    let r = check(&mut c, &[productpage(), ("source.ip", ip("10.57.3.4"))])
        .await
        .unwrap();
    assert_eq!(status_of(&r), (OK, String::new()));
    assert_eq!(validity(&r), (Duration::from_secs(30), 1000));
    let r = check(&mut c, &[productpage(), ("source.ip", ip("10.58.0.1"))])
        .await
        .unwrap();
    assert_eq!(
        status_of(&r),
        (
            PERMISSION_DENIED,
            "whitelistip.istio-system:10.58.0.1 is not whitelisted".to_owned()
        )
    );
    let r = check(&mut c, &[productpage(), ("source.ip", ip("fd00:57::1"))])
        .await
        .unwrap();
    assert_eq!(status_of(&r).0, OK);
    let r = check(&mut c, &[productpage()]).await.unwrap();
    assert_eq!(
        status_of(&r),
        (
            PERMISSION_DENIED,
            "whitelistip.istio-system:0.0.0.0 is not whitelisted".to_owned()
        )
    );
    // Other services are not checked.
    let r = check(
        &mut c,
        &[
            ("destination.labels", map(&[("app", "details")])),
            ("source.ip", ip("10.58.0.1")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status_of(&r), (OK, String::new()));
    assert_eq!(validity(&r), (MINUTE, 10_000));
    server.shutdown().await.unwrap();

    let server = start_server(&sample_dir("label-blacklist"), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let labels = |app| ("source.labels", map(&[("app", app), ("version", "v1")]));
    let r = check(&mut c, &[labels("legacy-batch")]).await.unwrap();
    assert_eq!(
        status_of(&r),
        (
            PERMISSION_DENIED,
            "denylabels.istio-system:legacy-batch is blacklisted".to_owned()
        )
    );
    assert_eq!(validity(&r), (Duration::from_secs(300), 10_000));
    for attrs in [
        vec![labels("reviews")],
        vec![labels("Legacy-Batch")],
        vec![],
    ] {
        let r = check(&mut c, &attrs).await.unwrap();
        assert_eq!(status_of(&r), (OK, String::new()), "{attrs:?}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn policy_sample_memquota_ratelimit_as_documented() {
    // The sample's 10s windows made an hour long, so that none rolls during the test.
    let dir = sample_copy(
        "memquota-ratelimit",
        &[("validDuration: 10s", "validDuration: 1h")],
    );
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let path = || ("request.path", s("/reviews"));
    let q = "userquota";
    assert_eq!(
        grants_until_refused(&mut c, &[user("alice"), path()], q, HOUR, 60).await,
        5
    );
    assert_eq!(
        grants_until_refused(&mut c, &[path()], q, HOUR, 60).await,
        2
    );
    assert_eq!(
        grants_until_refused(&mut c, &[user("ci-bot"), path()], q, HOUR, 60).await,
        50
    );
    // Health checks are never charged, even for an exhausted user.
    let r = check_quotas(
        &mut c,
        &[user("alice"), ("request.path", s("/healthz"))],
        &[(q, 1, false)],
    )
    .await;
    assert_eq!(quota(&r, q), Quota::ok(1, MINUTE));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_sample_redisquota_ratelimit_as_documented() {
    let mut redis = RedisServer::start();
    let url = format!("redisServerUrl: {}", redis.address());
    let dir = sample_copy(
        "redisquota-ratelimit",
        &[
            ("redisServerUrl: localhost:6379", &url),
            ("validDuration: 10s", "validDuration: 1h"),
        ],
    );
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;
    let mut c = client(&server).await;
    let q = "userquota";
    let path = || ("request.path", s("/reviews"));

    // Connected once a request is answered with the window's validity (the OPEN failure
    // mode grants without one).
    static N: AtomicU64 = AtomicU64::new(0);
    let connected = eventually(Duration::from_secs(30), || {
        let mut c = c.clone();
        async move {
            let who = format!("probe-{}", N.fetch_add(1, Ordering::Relaxed));
            let r = check_quotas(&mut c, &[user(&who), path()], &[(q, 1, false)]).await;
            quota(&r, q) == Quota::ok(1, HOUR)
        }
    })
    .await;
    assert!(connected, "the sample's handler did not reach Redis");

    let exhausted = Quota::refused(
        RESOURCE_EXHAUSTED,
        "ratelimit.istio-system:redisquota: Resource exhausted",
    );
    for (attrs, limit) in [
        (vec![user("alice"), path()], 5),
        (vec![path()], 2),
        (vec![user("ci-bot"), path()], 50),
    ] {
        for i in 0..limit {
            let r = check_quotas(&mut c, &attrs, &[(q, 1, false)]).await;
            assert_eq!(quota(&r, q), Quota::ok(1, HOUR), "{attrs:?} {i}");
        }
        let r = check_quotas(&mut c, &attrs, &[(q, 1, false)]).await;
        assert_eq!(quota(&r, q), exhausted, "{attrs:?}");
    }
    let r = check_quotas(
        &mut c,
        &[user("alice"), ("request.path", s("/healthz"))],
        &[(q, 1, false)],
    )
    .await;
    assert_eq!(quota(&r, q), Quota::ok(1, MINUTE));

    // failureMode OPEN: without Redis, requests are granted (even an exhausted user's).
    tokio::task::block_in_place(|| redis.kill());
    let open = eventually(Duration::from_secs(30), || {
        let mut c = c.clone();
        async move {
            let r = check_quotas(&mut c, &[user("alice"), path()], &[(q, 1, false)]).await;
            quota(&r, q) == Quota::ok(1, Duration::ZERO)
        }
    })
    .await;
    assert!(open, "failureMode OPEN did not grant while Redis was down");
    server.shutdown().await.unwrap();
}
