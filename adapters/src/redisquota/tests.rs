//! redisquota tests against a real `redis-server` that each test starts on its own free
//! loopback port (and stops when done). Window time is a [`ManualClock`] passed to the
//! scripts, so no test waits for a window to pass. Only the outage tests wait in real
//! time, for a restarted server to be reconnected, by polling with a deadline.
//!
//! The `redis-server` binary is required: without it these tests fail and say so
//! (`apt-get install -y redis-server` on Debian/Ubuntu).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use expr_lang::Value;
use serde_json::json;
use templates::instances::{Dims, quota};
use templates::{QuotaArgs, QuotaBudget, QuotaResult, Reply, Status, code};
use test_support::free_port;
use test_support::redis::RedisServer;

use super::config::{Algorithm, Config, FailureMode, OverrideLimit, QuotaLimit};
use super::*;
use crate::memquota::MemQuota;
use crate::memquota::clock::ManualClock;

const Q: &str = "requestcountquota.instance.istio-system";
const Q2: &str = "othercountquota.instance.istio-system";
const SECOND: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
/// A time 7s into a 10s decade, so that a 10s window ends in the next decade: the
/// scripts' two-halves time comparison is exercised across its boundary.
const T0: i64 = 1_700_000_007 * SECOND;

// ---------------------------------------------------------------------------------
// A redis-server per test (`test_support::redis::RedisServer`).

/// A direct connection to `server`, to look at keys.
async fn client(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{}/", server.address()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------
// Handlers and requests.

fn fixed(name: &str, max: i64, window: Duration) -> QuotaLimit {
    QuotaLimit {
        name: name.to_owned(),
        max_amount: max,
        valid_duration: window,
        algorithm: Algorithm::FixedWindow,
        overrides: vec![],
    }
}

fn rolling(name: &str, max: i64, window: Duration, bucket: Duration) -> QuotaLimit {
    QuotaLimit {
        algorithm: Algorithm::RollingWindow {
            bucket_duration: bucket,
        },
        ..fixed(name, max, window)
    }
}

/// Unique handler names keep the process-wide metric's series apart between tests.
fn handler_name(test: &str) -> String {
    format!("{test}.redisquota.istio-system")
}

fn build(
    address: &str,
    quotas: Vec<QuotaLimit>,
    mode: FailureMode,
    clock: &ManualClock,
    env: &Env,
) -> RedisQuota {
    let config = Config {
        redis_server_url: address.to_owned(),
        connection_pool_size: 10,
        failure_mode: mode,
        quotas,
    };
    let options = Options {
        clock: Arc::new(clock.clone()),
        timeout: Duration::from_secs(2),
    };
    RedisQuota::new(config, env, options).expect("builds")
}

async fn connected(
    server: &RedisServer,
    quotas: Vec<QuotaLimit>,
    mode: FailureMode,
    clock: &ManualClock,
    name: &str,
) -> RedisQuota {
    let h = build(
        &server.address(),
        quotas,
        mode,
        clock,
        &Env::standalone(&handler_name(name)),
    );
    let up = tokio::time::timeout(Duration::from_secs(10), h.wait_first_attempt()).await;
    assert_eq!(up, Ok(true), "the handler connects to redis-server");
    h
}

struct Dimensions {
    names: Vec<Arc<str>>,
    values: Vec<Value<'static>>,
}

impl Dimensions {
    fn strings(pairs: &[(&str, &'static str)]) -> Dimensions {
        Dimensions {
            names: pairs.iter().map(|(n, _)| Arc::from(*n)).collect(),
            values: pairs.iter().map(|(_, v)| Value::str(v)).collect(),
        }
    }

    fn instance<'a>(&'a self, name: &'a str) -> quota::Instance<'a> {
        quota::Instance {
            name,
            dimensions: Dims {
                names: &self.names,
                values: self.values.clone(),
            },
        }
    }
}

fn fresh_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("req-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn args(id: &str, amount: i64, best_effort: bool) -> QuotaArgs<'_> {
    QuotaArgs {
        deduplication_id: id,
        amount,
        best_effort,
    }
}

async fn ask_id(
    h: &RedisQuota,
    q: &str,
    d: &Dimensions,
    id: &str,
    amount: i64,
    best_effort: bool,
) -> QuotaResult {
    decision(
        h.allocate(&d.instance(q), args(id, amount, best_effort))
            .await,
    )
}

/// A result without its budget: the tests of decisions compare only those
/// (`quota_redis_answers_tell_the_limit_and_what_is_left` checks budgets).
fn decision(r: QuotaResult) -> QuotaResult {
    QuotaResult { budget: None, ..r }
}

async fn ask(
    h: &RedisQuota,
    q: &str,
    d: &Dimensions,
    amount: i64,
    best_effort: bool,
) -> QuotaResult {
    ask_id(h, q, d, &fresh_id(), amount, best_effort).await
}

fn granted(amount: i64, valid: Duration) -> QuotaResult {
    QuotaResult {
        status: Status::OK,
        valid_duration: valid,
        granted_amount: amount,
        budget: None,
    }
}

fn exhausted() -> QuotaResult {
    QuotaResult {
        status: Status::new(code::RESOURCE_EXHAUSTED, EXHAUSTED_MESSAGE),
        valid_duration: Duration::ZERO,
        granted_amount: 0,
        budget: None,
    }
}

fn ns(n: i64) -> Duration {
    Duration::from_nanos(n as u64)
}

// ---------------------------------------------------------------------------------
// Windows.

#[tokio::test]
async fn quota_redis_fixed_window_grants_exactly_max_per_window() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let h = connected(
        &server,
        vec![fixed(Q, 5, Duration::from_secs(10))],
        FailureMode::Open,
        &clock,
        "fixed",
    )
    .await;
    let d = Dimensions::strings(&[("destination", "ratings")]);
    // The window starts with the first request and lasts 10s.
    assert_eq!(ask(&h, Q, &d, 3, false).await, granted(3, ns(10 * SECOND)));
    clock.set(T0 + 4 * SECOND);
    assert_eq!(ask(&h, Q, &d, 3, false).await, exhausted());
    // Best effort: what is left, valid until the window's end.
    assert_eq!(ask(&h, Q, &d, 3, true).await, granted(2, ns(6 * SECOND)));
    assert_eq!(ask(&h, Q, &d, 1, true).await, exhausted());
    // Through the window's last nanosecond ...
    clock.set(T0 + 10 * SECOND - 1);
    assert_eq!(ask(&h, Q, &d, 1, false).await, exhausted());
    // ... and a new window at its end, starting with this request.
    clock.set(T0 + 10 * SECOND);
    assert_eq!(ask(&h, Q, &d, 5, false).await, granted(5, ns(10 * SECOND)));
    assert_eq!(ask(&h, Q, &d, 1, false).await, exhausted());
    clock.set(T0 + 19 * SECOND);
    assert_eq!(ask(&h, Q, &d, 1, true).await, exhausted());
    clock.set(T0 + 20 * SECOND + 7);
    assert_eq!(ask(&h, Q, &d, 6, true).await, granted(5, ns(10 * SECOND)));
    // Releases give back units of the live window.
    assert_eq!(ask(&h, Q, &d, -2, false).await, granted(2, Duration::ZERO));
    assert_eq!(ask(&h, Q, &d, 3, false).await, exhausted());
    assert_eq!(ask(&h, Q, &d, 2, false).await.granted_amount, 2);
}

#[tokio::test]
async fn quota_redis_rolling_window_grants_exactly_max_per_window() {
    let server = RedisServer::start();
    // Buckets are aligned to the epoch: T0 is on a 500ms boundary.
    let clock = ManualClock::new(T0);
    let h = connected(
        &server,
        vec![rolling(
            Q,
            4,
            Duration::from_secs(2),
            Duration::from_millis(500),
        )],
        FailureMode::Open,
        &clock,
        "rolling",
    )
    .await;
    let d = Dimensions::strings(&[("destination", "ratings")]);
    assert_eq!(ask(&h, Q, &d, 3, false).await, granted(3, ns(2 * SECOND)));
    clock.set(T0 + 600 * MS);
    assert_eq!(ask(&h, Q, &d, 2, false).await, exhausted());
    assert_eq!(ask(&h, Q, &d, 2, true).await, granted(1, ns(2 * SECOND)));
    // The bucket [T0, T0+500ms) counts until T0 + 2s ...
    clock.set(T0 + 2 * SECOND - 1);
    assert_eq!(ask(&h, Q, &d, 1, true).await, exhausted());
    // ... then its 3 units are back; the unit of T0+600ms is back at T0 + 2.5s.
    clock.set(T0 + 2 * SECOND);
    assert_eq!(ask(&h, Q, &d, 4, false).await, exhausted());
    assert_eq!(ask(&h, Q, &d, 3, false).await, granted(3, ns(2 * SECOND)));
    clock.set(T0 + 2500 * MS - 1);
    assert_eq!(ask(&h, Q, &d, 1, false).await, exhausted());
    clock.set(T0 + 2500 * MS);
    assert_eq!(ask(&h, Q, &d, 1, false).await.granted_amount, 1);
    // Idle for longer than the window: everything is back.
    clock.set(T0 + 60 * SECOND);
    assert_eq!(ask(&h, Q, &d, 4, false).await.granted_amount, 4);
}

/// memquota and redisquota ROLLING_WINDOW (100ms buckets, whole-second window) make the
/// same decisions for the same requests at the same times.
#[tokio::test]
async fn quota_redis_rolling_window_agrees_with_memquota() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0 + 37 * MS);
    let window = Duration::from_secs(2);
    let h = connected(
        &server,
        vec![rolling(Q, 12, window, Duration::from_millis(100))],
        FailureMode::Closed,
        &clock,
        "agree",
    )
    .await;
    let mem = MemQuota::new(
        crate::memquota::config::Config {
            quotas: vec![crate::memquota::config::QuotaLimit {
                name: Q.to_owned(),
                max_amount: 12,
                valid_duration: window,
                overrides: vec![],
            }],
            min_deduplication_duration: Duration::from_secs(1),
        },
        Arc::new(clock.clone()),
    );
    let tuples = [
        Dimensions::strings(&[("destination", "ratings")]),
        Dimensions::strings(&[("destination", "reviews")]),
    ];
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut grants, mut denials, mut releases) = (0, 0, 0);
    for step in 0..1500 {
        clock.advance(Duration::from_millis(next() % 140));
        let d = &tuples[(next() % 2) as usize];
        let amount = match next() % 10 {
            0 => -((next() % 4) as i64 + 1),
            _ => (next() % 6) as i64 + 1,
        };
        let best_effort = next() % 3 == 0;
        let id = fresh_id();
        let m = mem.allocate(&d.instance(Q), args(&id, amount, best_effort));
        let r = h
            .allocate(&d.instance(Q), args(&id, amount, best_effort))
            .await;
        // Both count the same units, so both have the same left.
        assert_eq!(
            r.budget.map(|b| b.remaining),
            m.budget.map(|b| b.remaining),
            "step {step}: what is left"
        );
        let (r, m) = (decision(r), decision(m));
        assert_eq!(
            r.granted_amount,
            m.granted_amount,
            "step {step}: {amount} (best effort {best_effort}) at +{}ms: redis {r:?}, memquota {m:?}",
            (clock.get() - T0) / MS
        );
        if amount < 0 {
            releases += 1;
            assert_eq!(r, m, "releases answer alike");
        } else if r.granted_amount > 0 {
            grants += 1;
            assert_eq!(r, granted(m.granted_amount, window));
        } else {
            denials += 1;
            assert_eq!(r, exhausted());
        }
    }
    // The walk exercised every path.
    assert!(
        grants > 100 && denials > 100 && releases > 50,
        "{grants} {denials} {releases}"
    );
}

// ---------------------------------------------------------------------------------
// Overrides, keys and deduplication.

#[tokio::test]
async fn quota_redis_overrides_by_dimensions() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let dims = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut q = fixed(Q, 10, Duration::from_secs(30));
    q.overrides = vec![
        OverrideLimit {
            dimensions: dims(&[("destination", "ratings"), ("source", "reviews")]),
            max_amount: 1,
        },
        OverrideLimit {
            dimensions: dims(&[("destination", "reviews")]),
            max_amount: 2,
        },
        // memquota would match a missing dimension to ""; redisquota never does.
        OverrideLimit {
            dimensions: dims(&[("user", "")]),
            max_amount: 3,
        },
    ];
    let h = connected(&server, vec![q], FailureMode::Open, &clock, "overrides").await;
    let ratings = Dimensions::strings(&[("destination", "ratings"), ("source", "reviews")]);
    let reviews = Dimensions::strings(&[("destination", "reviews"), ("source", "productpage")]);
    let details = Dimensions::strings(&[("destination", "details"), ("source", "reviews")]);
    assert_eq!(ask(&h, Q, &ratings, 5, true).await.granted_amount, 1);
    assert_eq!(ask(&h, Q, &reviews, 5, true).await.granted_amount, 2);
    assert_eq!(ask(&h, Q, &details, 50, true).await.granted_amount, 10);
    // Keys: the counter key plus, for overrides, `-<hash of the override>`.
    let mut redis = client(&server).await;
    let meta_key = |base: &str, o: Option<&BTreeMap<String, String>>| match o {
        Some(o) => format!("{base}-{}.meta", keys::override_hash(o)),
        None => format!("{base}.meta"),
    };
    let o0 = dims(&[("destination", "ratings"), ("source", "reviews")]);
    let o1 = dims(&[("destination", "reviews")]);
    for key in [
        meta_key(
            &format!("{Q};destination=ratings;source=reviews"),
            Some(&o0),
        ),
        meta_key(
            &format!("{Q};destination=reviews;source=productpage"),
            Some(&o1),
        ),
        meta_key(&format!("{Q};destination=details;source=reviews"), None),
    ] {
        let used: Option<i64> = redis::cmd("HGET")
            .arg(&key)
            .arg("token")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(used.is_some(), "no counter at {key}");
    }
}

#[tokio::test]
async fn quota_redis_dedup_is_shared_by_servers() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let quotas = vec![
        fixed(Q, 5, Duration::from_secs(10)),
        rolling(Q2, 5, Duration::from_secs(10), Duration::from_secs(1)),
    ];
    let a = connected(
        &server,
        quotas.clone(),
        FailureMode::Open,
        &clock,
        "dedup-a",
    )
    .await;
    let b = connected(&server, quotas, FailureMode::Open, &clock, "dedup-b").await;
    let d = Dimensions::strings(&[("destination", "ratings")]);
    for q in [Q, Q2] {
        clock.set(T0);
        assert_eq!(ask_id(&a, q, &d, "r1", 3, false).await.granted_amount, 3);
        clock.set(T0 + 4 * SECOND);
        // A retry reaching the other server: the same grant, its remaining validity,
        // and nothing charged.
        assert_eq!(
            ask_id(&b, q, &d, "r1", 3, false).await,
            granted(3, ns(6 * SECOND))
        );
        assert_eq!(ask(&b, q, &d, 3, false).await, exhausted());
        assert_eq!(ask(&a, q, &d, 2, false).await.granted_amount, 2);
        // Denials are not remembered: the retry of a denied request is evaluated again.
        assert_eq!(ask_id(&a, q, &d, "r2", 1, false).await, exhausted());
        // Releases are remembered: a retried release does not release twice.
        assert_eq!(ask_id(&a, q, &d, "rel", -1, false).await.granted_amount, 1);
        assert_eq!(ask_id(&b, q, &d, "rel", -1, false).await.granted_amount, 1);
        assert_eq!(ask(&a, q, &d, 2, false).await, exhausted());
        assert_eq!(ask_id(&b, q, &d, "r2", 1, false).await.granted_amount, 1);
        // The grant is remembered until it stops being valid; then the id is new.
        clock.set(T0 + 10 * SECOND);
        assert_eq!(ask_id(&a, q, &d, "r1", 3, false).await.granted_amount, 3);
        assert_eq!(ask(&a, q, &d, 3, false).await, exhausted());
    }
}

#[tokio::test]
async fn quota_redis_answers_tell_the_limit_and_what_is_left() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let quotas = vec![
        fixed(Q, 3, Duration::from_secs(60)),
        rolling(Q2, 3, Duration::from_secs(60), Duration::from_secs(1)),
    ];
    let h = connected(&server, quotas, FailureMode::Open, &clock, "budget").await;
    let d = Dimensions::strings(&[("destination", "ratings")]);
    for q in [Q, Q2] {
        let budget = |id: &'static str, amount| {
            let h = &h;
            let d = &d;
            async move {
                h.allocate(&d.instance(q), args(id, amount, false))
                    .await
                    .budget
            }
        };
        let left = |remaining| {
            Some(QuotaBudget {
                max_amount: 3,
                window: Duration::from_secs(60),
                remaining,
            })
        };
        assert_eq!(budget("b1", 2).await, left(1), "{q}");
        assert_eq!(budget("b2", 1).await, left(0), "{q}");
        // A refusal tells what is left: nothing.
        assert_eq!(budget("b3", 1).await, left(0), "{q}");
        // A replayed grant and a release tell nothing.
        assert_eq!(budget("b1", 2).await, None, "{q}");
        assert_eq!(budget("b4", -1).await, None, "{q}");
        assert_eq!(budget("b5", 1).await, left(0), "{q}");
    }
}

#[tokio::test]
async fn quota_redis_keys_expire() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let h = connected(
        &server,
        vec![
            fixed(Q, 5, Duration::from_secs(10)),
            rolling(Q2, 5, Duration::from_secs(20), Duration::from_secs(1)),
        ],
        FailureMode::Open,
        &clock,
        "ttl",
    )
    .await;
    let d = Dimensions::strings(&[]);
    assert_eq!(ask_id(&h, Q, &d, "x-", 1, false).await.granted_amount, 1);
    assert_eq!(ask_id(&h, Q2, &d, "y-", 1, false).await.granted_amount, 1);
    let mut redis = client(&server).await;
    for (key, window) in [
        (format!("{Q}.meta"), 10_000),
        (format!("x--{Q}.meta"), 10_000),
        (format!("{Q2}.meta"), 20_000),
        (format!("{Q2}.data"), 20_000),
        (format!("y--{Q2}.meta"), 20_000),
    ] {
        if key.ends_with(".data") {
            // The data set holds older buckets only: add one by moving to the next bucket.
            clock.set(T0 + 1500 * MS);
            assert_eq!(ask(&h, Q2, &d, 1, false).await.granted_amount, 1);
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(
            ttl > window - 5_000 && ttl <= window + 1_000,
            "{key}: PTTL {ttl}ms for a {window}ms window"
        );
    }
}

// ---------------------------------------------------------------------------------
// Concurrency: two servers sharing one Redis.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_redis_two_servers_never_grant_more_than_max_together() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let quotas = vec![
        fixed(Q, 100, Duration::from_secs(30)),
        rolling(Q2, 100, Duration::from_secs(30), Duration::from_secs(1)),
    ];
    let servers = [
        Arc::new(
            connected(
                &server,
                quotas.clone(),
                FailureMode::Closed,
                &clock,
                "two-a",
            )
            .await,
        ),
        Arc::new(connected(&server, quotas, FailureMode::Closed, &clock, "two-b").await),
    ];
    for window in 0..3 {
        clock.set(T0 + window * 30 * SECOND);
        for q in [Q, Q2] {
            let mut tasks = Vec::new();
            for (s, h) in servers.iter().enumerate() {
                for t in 0..8 {
                    let h = h.clone();
                    tasks.push(tokio::spawn(async move {
                        let d = Dimensions::strings(&[("destination", "ratings")]);
                        let mut total = 0;
                        for i in 0..40 {
                            let amount = 1 + (s + t + i) % 3;
                            let best_effort = (t + i) % 4 == 0;
                            let r = ask(&h, q, &d, amount as i64, best_effort).await;
                            assert!(
                                r.granted_amount <= amount as i64
                                    && (best_effort
                                        || r.granted_amount == 0
                                        || r.granted_amount == amount as i64),
                                "{r:?}"
                            );
                            total += r.granted_amount;
                        }
                        total
                    }));
                }
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            assert_eq!(total, 100, "{q}, window {window}: granted {total} of 100");
        }
    }
}

// ---------------------------------------------------------------------------------
// Outages.

/// Calls `f` until it returns true, for up to 20s.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn metric_value(handler: &str, mode: &str) -> u64 {
    UNAVAILABLE_TOTAL.with_label_values(&[handler, mode]).get()
}

#[tokio::test]
async fn quota_redis_outage_fails_open_or_closed_and_recovers() {
    let mut server = RedisServer::start();
    let clock = ManualClock::new(T0);
    let quotas = vec![fixed(Q, 3, Duration::from_secs(60))];
    let env = Env::standalone(&handler_name("outage-open"));
    let open = build(
        &server.address(),
        quotas.clone(),
        FailureMode::Open,
        &clock,
        &env,
    );
    // A second handler on the same resources (a config reload): the metric is already
    // registered there, which is fine.
    let closed = build(
        &server.address(),
        quotas,
        FailureMode::Closed,
        &clock,
        &Env {
            handler: handler_name("outage-closed"),
            resources: env.resources.clone(),
        },
    );
    assert!(open.wait_first_attempt().await && closed.wait_first_attempt().await);
    let d = Dimensions::strings(&[("destination", "ratings")]);
    assert_eq!(ask(&open, Q, &d, 3, false).await.granted_amount, 3);
    assert_eq!(ask(&closed, Q, &d, 1, false).await, exhausted());
    let (open_before, closed_before) = (
        metric_value(&handler_name("outage-open"), "open"),
        metric_value(&handler_name("outage-closed"), "closed"),
    );

    server.kill();
    for _ in 0..3 {
        // OPEN: the requested amount, without validity.
        assert_eq!(
            ask(&open, Q, &d, 2, false).await,
            granted(2, Duration::ZERO)
        );
        // CLOSED: nothing, and why.
        assert_eq!(
            ask(&closed, Q, &d, 2, false).await,
            QuotaResult {
                status: Status::new(code::RESOURCE_EXHAUSTED, UNAVAILABLE_MESSAGE),
                valid_duration: Duration::ZERO,
                granted_amount: 0,
                budget: None,
            }
        );
    }
    assert_eq!(
        metric_value(&handler_name("outage-open"), "open"),
        open_before + 3
    );
    assert_eq!(
        metric_value(&handler_name("outage-closed"), "closed"),
        closed_before + 3
    );
    let families = env.resources.metrics.gather();
    assert!(
        families
            .iter()
            .any(|f| f.name() == "mixer_adapter_redisquota_unavailable_total"),
        "the metric is served with the adapters' metrics"
    );

    // Redis comes back on the same port (empty: no persistence): both handlers
    // reconnect by themselves and count again.
    server.restart();
    eventually("the CLOSED handler answers from Redis again", || {
        let (closed, d) = (&closed, &d);
        async move { ask(closed, Q, d, 1, false).await.status.is_ok() }
    })
    .await;
    eventually("the OPEN handler answers from Redis again", || {
        let (open, d) = (&open, &d);
        async move { ask(open, Q, d, 5, false).await == exhausted() }
    })
    .await;
    assert_eq!(ask(&open, Q, &d, 2, false).await.granted_amount, 2);
    assert_eq!(ask(&open, Q, &d, 1, false).await, exhausted());
}

#[tokio::test]
async fn quota_redis_build_while_down_then_connects() {
    // Nothing listens on the port yet: building must still succeed.
    let port = free_port();
    let adapter = crate::find("redisquota").expect("redisquota is in the inventory");
    assert!(adapter.unavailable().is_none());
    let params = json!({
        "redisServerUrl": format!("127.0.0.1:{port}"),
        "failureMode": "CLOSED",
        "quotas": [{"name": Q, "maxAmount": 2, "validDuration": "1h"}]
    });
    let validated = adapter
        .validate(&ValidateInput {
            handler: "down.redisquota.istio-system",
            params: &params,
            instances: &[],
        })
        .config
        .unwrap();
    let handler = adapter
        .build(validated, &Env::standalone("down.redisquota.istio-system"))
        .expect("building does not need Redis");
    let q = handler.quota().expect("a quota handler");
    let d = Dimensions::strings(&[]);
    let call = || {
        let d = &d;
        async move {
            match q.handle_quota(&d.instance(Q), args(&fresh_id(), 1, false)) {
                Reply::Later(f) => f.await.unwrap(),
                Reply::Ready(_) => panic!("a Redis call is asynchronous"),
            }
        }
    };
    let r = call().await;
    assert_eq!(r.status.code, code::RESOURCE_EXHAUSTED);
    assert_eq!(r.status.message, UNAVAILABLE_MESSAGE);
    // Requests that need no Redis answer at once.
    let Reply::Ready(Ok(r)) = q.handle_quota(&d.instance(Q), args("z", 0, false)) else {
        panic!("zero amounts need no Redis");
    };
    assert_eq!(r, granted(0, Duration::ZERO));
    let Reply::Ready(Ok(r)) =
        q.handle_quota(&d.instance("unknown.instance.ns"), args("u", 1, false))
    else {
        panic!("unknown quotas need no Redis");
    };
    assert_eq!(r, granted(0, Duration::ZERO));

    // Redis starts: the background task connects (with backoff) and counting begins.
    let mut server = RedisServer::stopped(port);
    server.restart();
    eventually("the handler connects once Redis is up", || async {
        call().await.status.is_ok()
    })
    .await;
    assert!(call().await.status.is_ok());
    assert_eq!(decision(call().await), exhausted());
    // Closed: the connection is let go; a stray late call fails over at once.
    handler.close();
    assert_eq!(call().await.status.message, UNAVAILABLE_MESSAGE);
}

#[test]
fn quota_redis_built_outside_a_runtime_connects_on_first_use() {
    let server = RedisServer::start();
    let clock = ManualClock::new(T0);
    // No runtime here (as for a tool that builds handlers without serving).
    assert!(tokio::runtime::Handle::try_current().is_err());
    let h = build(
        &server.address(),
        vec![fixed(Q, 1, Duration::from_secs(10))],
        FailureMode::Closed,
        &clock,
        &Env::standalone(&handler_name("no-runtime")),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let d = Dimensions::strings(&[]);
        // The first call starts the connection from the serving runtime and waits for
        // the first attempt.
        assert_eq!(ask(&h, Q, &d, 1, false).await, granted(1, ns(10 * SECOND)));
        assert_eq!(ask(&h, Q, &d, 1, false).await, exhausted());
    });
}

#[tokio::test]
async fn quota_redis_silent_server_times_out_into_the_failure_mode() {
    // Accepts connections and never answers: every call must still return, by the
    // failure mode, within the call timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let clock = ManualClock::new(T0);
    let config = Config {
        redis_server_url: address,
        connection_pool_size: 10,
        failure_mode: FailureMode::Open,
        quotas: vec![fixed(Q, 1, Duration::from_secs(1))],
    };
    let name = handler_name("silent");
    let h = RedisQuota::new(
        config,
        &Env::standalone(&name),
        Options {
            clock: Arc::new(clock),
            timeout: Duration::from_millis(300),
        },
    )
    .unwrap();
    let d = Dimensions::strings(&[]);
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(ask(&h, Q, &d, 4, false).await, granted(4, Duration::ZERO));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(metric_value(&name, "open"), 3);
    drop(listener);
}
