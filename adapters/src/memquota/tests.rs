//! memquota behaviour tests. Time is a [`ManualClock`]; nothing sleeps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use expr_lang::Value;
use serde_json::json;
use templates::instances::{Dims, quota};
use templates::{QuotaArgs, QuotaBudget, QuotaResult, Reply, Status};

use super::clock::ManualClock;
use super::config::{Config, OverrideLimit, QuotaLimit};
use super::window::{MEMQUOTA_TICK_NANOS as TICK, RollingWindow, WindowSpec};
use super::*;

const Q: &str = "requestcountquota.instance.istio-system";
const SECOND: i64 = 1_000_000_000;
/// A Unix time on a whole second, so tick arithmetic in tests is easy to read.
const T0: i64 = 1_700_000_000 * SECOND;

fn limit(max: i64, valid: Duration) -> QuotaLimit {
    QuotaLimit {
        name: Q.to_owned(),
        max_amount: max,
        valid_duration: valid,
        overrides: vec![],
    }
}

fn config(quotas: Vec<QuotaLimit>) -> Config {
    Config {
        quotas,
        min_deduplication_duration: Duration::from_secs(1),
    }
}

fn handler(quotas: Vec<QuotaLimit>, clock: &ManualClock) -> MemQuota {
    MemQuota::new(config(quotas), Arc::new(clock.clone()))
}

/// Dimension names and values of one instance.
struct Dimensions {
    names: Vec<Arc<str>>,
    values: Vec<Value<'static>>,
}

impl Dimensions {
    fn new(pairs: &[(&str, Value<'static>)]) -> Dimensions {
        Dimensions {
            names: pairs.iter().map(|(n, _)| Arc::from(*n)).collect(),
            values: pairs.iter().map(|(_, v)| v.clone()).collect(),
        }
    }

    fn strings(pairs: &[(&str, &'static str)]) -> Dimensions {
        let owned: Vec<(&str, Value<'static>)> =
            pairs.iter().map(|(n, v)| (*n, Value::str(v))).collect();
        Dimensions::new(&owned)
    }

    fn instance(&self) -> quota::Instance<'_> {
        quota::Instance {
            name: Q,
            dimensions: Dims {
                names: &self.names,
                values: self.values.clone(),
            },
        }
    }
}

fn args(id: &str, amount: i64, best_effort: bool) -> QuotaArgs<'_> {
    QuotaArgs {
        deduplication_id: id,
        amount,
        best_effort,
    }
}

/// Unique deduplication ids, as the proxy sends them.
fn fresh_id() -> String {
    static NEXT: AtomicI64 = AtomicI64::new(0);
    format!("id-{}{Q}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn ask(h: &MemQuota, d: &Dimensions, amount: i64, best_effort: bool) -> QuotaResult {
    decision(h.allocate(&d.instance(), args(&fresh_id(), amount, best_effort)))
}

/// A result without its budget: the tests of decisions compare only those
/// (`quota_allocations_tell_the_limit_and_what_is_left` checks budgets).
fn decision(r: QuotaResult) -> QuotaResult {
    QuotaResult { budget: None, ..r }
}

fn granted(h: &MemQuota, d: &Dimensions, amount: i64) -> i64 {
    let r = ask(h, d, amount, false);
    assert_eq!(r.status, Status::OK, "memquota always answers OK");
    r.granted_amount
}

fn ok(granted_amount: i64, valid: Duration) -> QuotaResult {
    QuotaResult {
        status: Status::OK,
        valid_duration: valid,
        granted_amount,
        budget: None,
    }
}

#[test]
fn quota_concurrent_checks_never_exceed_max_per_window() {
    let clock = ManualClock::new(T0);
    let h = Arc::new(handler(vec![limit(100, Duration::from_secs(1))], &clock));
    let d = Arc::new(Dimensions::strings(&[("destination", "ratings")]));
    // Hammers the one counter from 8 threads; returns the total granted.
    let hammer = |best_effort: bool| -> i64 {
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|w| {
                    let (h, d) = (h.clone(), d.clone());
                    s.spawn(move || {
                        (0..400)
                            .map(|i| {
                                // Amounts 1..=3; all-or-nothing requests of 2 or 3 may
                                // leave a unit or two that only a request of 1 can take.
                                let amount = 1 + (w + i) % 3;
                                let r = ask(&h, &d, amount, best_effort);
                                assert!(r.granted_amount <= amount);
                                r.granted_amount
                            })
                            .sum::<i64>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        })
    };
    assert_eq!(hammer(false), 100);
    assert_eq!(hammer(true), 0);
    // Nine ticks later the grants of tick 0 still count.
    clock.set(T0 + 9 * TICK + TICK - 1);
    assert_eq!(hammer(true), 0);
    // At tick 10 they are returned, exactly.
    clock.set(T0 + 10 * TICK);
    assert_eq!(hammer(true), 100);
    assert_eq!(hammer(false), 0);
}

#[test]
fn quota_concurrent_checks_follow_the_sequential_window() {
    // Phases at pseudo-random times; in each, 4 threads exhaust what is available. The
    // total granted per phase must equal what a sequential rolling window has available
    // at that time, so nothing is ever granted beyond the limit in any window.
    let clock = ManualClock::new(T0);
    let valid = Duration::from_millis(1500); // rounded up to a 2s window
    let h = Arc::new(handler(vec![limit(50, valid)], &clock));
    let d = Arc::new(Dimensions::strings(&[("destination", "ratings")]));
    let spec = WindowSpec::memquota(nanos(valid));
    let mut model = RollingWindow::new(spec.indexes(T0).0);
    let mut now = T0;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..60 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        now += ((seed >> 33) % (8 * TICK as u64)) as i64;
        clock.set(now);
        let (cur, dead) = spec.indexes(now);
        model.advance(cur, dead);
        let available = 50 - model.used();
        model.alloc(50, available, false);
        let total: i64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let (h, d) = (h.clone(), d.clone());
                    s.spawn(move || (0..30).map(|_| granted(&h, &d, 1)).sum::<i64>())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(total, available, "at {}ns", now - T0);
    }
}

#[test]
fn quota_window_rollover_frees_capacity_at_the_exact_tick() {
    let clock = ManualClock::new(T0 + 3 * TICK + 95_000_000); // tick 3, late in it
    let h = handler(vec![limit(5, Duration::from_secs(1))], &clock);
    let d = Dimensions::strings(&[("destination", "ratings")]);
    assert_eq!(
        ask(&h, &d, 5, false),
        ok(5, Duration::from_secs(1)),
        "a grant is valid for validDuration"
    );
    // Denied: granted 0, no validity, status still OK.
    assert_eq!(ask(&h, &d, 1, false), ok(0, Duration::ZERO));
    // Tick 3 counts through tick 12 (ten 100ms slots) ...
    clock.set(T0 + 13 * TICK - 1);
    assert_eq!(granted(&h, &d, 1), 0);
    // ... and its units are back at the first nanosecond of tick 13.
    clock.set(T0 + 13 * TICK);
    assert_eq!(granted(&h, &d, 5), 5);
    assert_eq!(granted(&h, &d, 1), 0);
}

#[test]
fn quota_window_rounds_up_to_whole_seconds() {
    let clock = ManualClock::new(T0);
    let h = handler(vec![limit(2, Duration::from_millis(1200))], &clock);
    let d = Dimensions::strings(&[]);
    // The result carries the configured validity ...
    assert_eq!(ask(&h, &d, 2, false), ok(2, Duration::from_millis(1200)));
    // ... but the window is 2s (Mixer rounds up to whole seconds).
    clock.set(T0 + 2 * SECOND - 1);
    assert_eq!(granted(&h, &d, 1), 0);
    clock.set(T0 + 2 * SECOND);
    assert_eq!(granted(&h, &d, 2), 2);
}

#[test]
fn quota_pool_never_expires_and_releases_return_units() {
    let clock = ManualClock::new(T0);
    let h = handler(vec![limit(10, Duration::ZERO)], &clock);
    let d = Dimensions::strings(&[("destination", "ratings")]);
    // Pool grants carry no validity.
    assert_eq!(ask(&h, &d, 7, false), ok(7, Duration::ZERO));
    assert_eq!(granted(&h, &d, 4), 0);
    // Time does not free a pool.
    clock.set(T0 + 3600 * SECOND);
    assert_eq!(granted(&h, &d, 4), 0);
    // A negative amount releases: the result is the number released.
    assert_eq!(ask(&h, &d, -3, false), ok(3, Duration::ZERO));
    assert_eq!(granted(&h, &d, 6), 6);
    assert_eq!(granted(&h, &d, 1), 0);
    // Releasing more than is in use releases what is in use.
    assert_eq!(ask(&h, &d, -100, false), ok(10, Duration::ZERO));
    assert_eq!(ask(&h, &d, -1, false), ok(0, Duration::ZERO));
    assert_eq!(ask(&h, &d, i64::MIN, false), ok(0, Duration::ZERO));
    assert_eq!(granted(&h, &d, 10), 10);
}

#[test]
fn quota_release_in_a_window_returns_the_newest_units() {
    let clock = ManualClock::new(T0);
    let h = handler(vec![limit(10, Duration::from_secs(1))], &clock);
    let d = Dimensions::strings(&[]);
    assert_eq!(granted(&h, &d, 6), 6);
    clock.set(T0 + 5 * TICK);
    assert_eq!(granted(&h, &d, 4), 4);
    // Releasing 5 returns the 4 units of tick 5 and one of tick 0.
    assert_eq!(ask(&h, &d, -5, false).granted_amount, 5);
    assert_eq!(granted(&h, &d, 6), 0);
    assert_eq!(granted(&h, &d, 5), 5);
    // At tick 10 the 5 remaining units of tick 0 expire; tick 5's new 5 stay.
    clock.set(T0 + 10 * TICK);
    assert_eq!(granted(&h, &d, 6), 0);
    assert_eq!(granted(&h, &d, 5), 5);
}

#[test]
fn quota_best_effort_grants_what_is_left() {
    let clock = ManualClock::new(T0);
    let h = handler(vec![limit(10, Duration::from_secs(2))], &clock);
    let d = Dimensions::strings(&[]);
    assert_eq!(granted(&h, &d, 7), 7);
    // Without best effort: all or nothing.
    assert_eq!(ask(&h, &d, 7, false), ok(0, Duration::ZERO));
    // With best effort: the 3 left, valid for the window.
    assert_eq!(ask(&h, &d, 7, true), ok(3, Duration::from_secs(2)));
    // Nothing left: best effort still answers, with 0 (as Mixer).
    assert_eq!(ask(&h, &d, 1, true), ok(0, Duration::from_secs(2)));
    // A pool behaves the same way, without validity.
    let h = handler(vec![limit(4, Duration::ZERO)], &clock);
    assert_eq!(ask(&h, &d, 3, true), ok(3, Duration::ZERO));
    assert_eq!(ask(&h, &d, 3, true), ok(1, Duration::ZERO));
    assert_eq!(ask(&h, &d, 3, true), ok(0, Duration::ZERO));
}

#[test]
fn quota_zero_amounts_and_unknown_instances_get_empty_results() {
    let clock = ManualClock::new(T0);
    let h = handler(vec![limit(1, Duration::from_secs(1))], &clock);
    let d = Dimensions::strings(&[]);
    assert_eq!(ask(&h, &d, 0, false), ok(0, Duration::ZERO));
    let other = quota::Instance {
        name: "other.instance.istio-system",
        dimensions: Dims::default(),
    };
    assert_eq!(
        h.allocate(&other, args("x", 1, false)),
        ok(0, Duration::ZERO)
    );
    // Neither charged anything.
    assert_eq!(granted(&h, &d, 1), 1);
}

#[test]
fn quota_dedup_replays_without_charging_again() {
    let clock = ManualClock::new(T0);
    let h = handler(vec![limit(5, Duration::from_secs(1))], &clock);
    let d = Dimensions::strings(&[("destination", "ratings")]);
    let inst = d.instance();
    let first = decision(h.allocate(&inst, args("req-1", 3, false)));
    assert_eq!(first, ok(3, Duration::from_secs(1)));
    clock.set(T0 + 2 * TICK);
    // The same id: the stored amount and the remaining validity; nothing charged.
    assert_eq!(
        h.allocate(&inst, args("req-1", 3, false)),
        ok(3, Duration::from_millis(800))
    );
    // 3 units are in use and 2 are left.
    assert_eq!(granted(&h, &d, 3), 0);
    assert_eq!(granted(&h, &d, 2), 2);
    // Denials are remembered too: a retry of a denied request is denied again even
    // after the window has rolled, as long as the entry lives.
    assert_eq!(
        decision(h.allocate(&inst, args("req-2", 1, false))),
        ok(0, Duration::ZERO)
    );
    clock.set(T0 + 10 * TICK);
    assert_eq!(
        h.allocate(&inst, args("req-2", 1, false)),
        ok(0, Duration::ZERO)
    );
    assert_eq!(h.allocate(&inst, args("req-3", 1, false)).granted_amount, 1);
    // Releases are remembered: a retried release does not release twice.
    assert_eq!(
        h.allocate(&inst, args("rel-1", -1, false)).granted_amount,
        1
    );
    assert_eq!(
        h.allocate(&inst, args("rel-1", -1, false)).granted_amount,
        1
    );
    // Tick 2 holds 2 units, tick 10 none: 3 are left, not 4.
    assert_eq!(granted(&h, &d, 4), 0);
    assert_eq!(granted(&h, &d, 3), 3);
}

#[test]
fn quota_dedup_entries_expire_after_one_to_two_periods() {
    // Generations start at build time (T0) and last minDeduplicationDuration (1s).
    let clock = ManualClock::new(T0);
    let h = handler(vec![limit(10, Duration::ZERO)], &clock);
    let d = Dimensions::strings(&[]);
    let inst = d.instance();
    clock.set(T0 + 900_000_000);
    assert_eq!(h.allocate(&inst, args("a", 2, false)).granted_amount, 2);
    // Remembered through the next generation (until T0 + 2s) ...
    clock.set(T0 + 2 * SECOND - 1);
    assert_eq!(h.allocate(&inst, args("a", 2, false)).granted_amount, 2);
    // ... and forgotten then: the same id is charged again.
    clock.set(T0 + 2 * SECOND);
    assert_eq!(h.allocate(&inst, args("a", 2, false)).granted_amount, 2);
    assert_eq!(granted(&h, &d, 7), 0);
    assert_eq!(granted(&h, &d, 6), 6);
    // An entry made at the start of a generation lives almost two periods.
    clock.set(T0 + 3 * SECOND);
    assert_eq!(h.allocate(&inst, args("b", -4, false)).granted_amount, 4);
    clock.set(T0 + 5 * SECOND - 1);
    assert_eq!(h.allocate(&inst, args("b", -4, false)).granted_amount, 4);
    assert_eq!(ask(&h, &d, 5, true).granted_amount, 4, "released once only");
}

#[test]
fn quota_empty_request_ids_dedup_everything_as_in_mixer() {
    // The runtime passes the request's id + the quota name: with no id, every request
    // within the dedup period carries just the name and gets the first answer.
    let clock = ManualClock::new(T0);
    let h = handler(vec![limit(10, Duration::from_secs(60))], &clock);
    let d = Dimensions::strings(&[]);
    let inst = d.instance();
    let id = "requestcountquota";
    assert_eq!(h.allocate(&inst, args(id, 1, false)).granted_amount, 1);
    for _ in 0..20 {
        assert_eq!(h.allocate(&inst, args(id, 1, false)).granted_amount, 1);
    }
    assert_eq!(granted(&h, &d, 9), 9, "only the first was charged");
}

#[test]
fn quota_concurrent_duplicates_are_charged_once() {
    let clock = ManualClock::new(T0);
    let h = Arc::new(handler(vec![limit(1000, Duration::from_secs(60))], &clock));
    let d = Arc::new(Dimensions::strings(&[]));
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (h, d) = (h.clone(), d.clone());
            s.spawn(move || {
                for i in 0..50 {
                    let id = format!("dup-{i}");
                    let r = h.allocate(&d.instance(), args(&id, 7, false));
                    assert_eq!(r.granted_amount, 7);
                }
            });
        }
    });
    // 50 distinct ids of 7 units: 350 charged, whatever the number of retries.
    assert_eq!(granted(&h, &d, 651), 0);
    assert_eq!(granted(&h, &d, 650), 650);
}

#[test]
fn quota_overrides_select_limits_by_dimensions() {
    let clock = ManualClock::new(T0);
    let dims = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let q = QuotaLimit {
        overrides: vec![
            OverrideLimit {
                dimensions: dims(&[("destination", "ratings"), ("source", "reviews")]),
                max_amount: 1,
                valid_duration: Duration::from_secs(1),
            },
            // No validDuration: a pool, even though the quota has a window.
            OverrideLimit {
                dimensions: dims(&[("destination", "ratings")]),
                max_amount: 3,
                valid_duration: Duration::ZERO,
            },
            OverrideLimit {
                dimensions: dims(&[("code", "404")]),
                max_amount: 2,
                valid_duration: Duration::from_secs(5),
            },
        ],
        ..limit(100, Duration::from_secs(1))
    };
    let h = handler(vec![q], &clock);
    let reviews = Dimensions::strings(&[("destination", "ratings"), ("source", "reviews")]);
    let product = Dimensions::strings(&[("destination", "ratings"), ("source", "productpage")]);
    let details = Dimensions::strings(&[("destination", "details"), ("source", "reviews")]);
    let not_found = Dimensions::new(&[("code", Value::Int64(404))]);
    // First match wins.
    assert_eq!(ask(&h, &reviews, 1, false), ok(1, Duration::from_secs(1)));
    assert_eq!(granted(&h, &reviews, 1), 0);
    // The pool override: no validity, never expires.
    assert_eq!(ask(&h, &product, 3, false), ok(3, Duration::ZERO));
    assert_eq!(granted(&h, &product, 1), 0);
    // No override: the quota's limit.
    assert_eq!(granted(&h, &details, 100), 100);
    // The text is parsed into the dimension's type: "404" matches int64 404.
    assert_eq!(ask(&h, &not_found, 3, true), ok(2, Duration::from_secs(5)));
    clock.set(T0 + 10 * SECOND);
    assert_eq!(granted(&h, &reviews, 1), 1);
    assert_eq!(granted(&h, &details, 100), 100);
    assert_eq!(granted(&h, &product, 1), 0, "the pool is still full");
}

#[test]
fn quota_allocations_tell_the_limit_and_what_is_left() {
    let clock = ManualClock::new(T0);
    let q = QuotaLimit {
        overrides: vec![OverrideLimit {
            dimensions: [("source".to_owned(), "vip".to_owned())].into(),
            max_amount: 4,
            valid_duration: Duration::ZERO,
        }],
        ..limit(3, Duration::from_secs(60))
    };
    let h = handler(vec![q], &clock);
    let plain = Dimensions::strings(&[("source", "a")]);
    let vip = Dimensions::strings(&[("source", "vip")]);
    let budget = |d: &Dimensions, id: &str, amount| {
        h.allocate(&d.instance(), args(id, amount, false)).budget
    };
    let window = |remaining| {
        Some(QuotaBudget {
            max_amount: 3,
            window: Duration::from_secs(60),
            remaining,
        })
    };
    assert_eq!(budget(&plain, "a1", 2), window(1));
    assert_eq!(budget(&plain, "a2", 1), window(0));
    // A refusal tells what is left (nothing), so the client knows why.
    assert_eq!(budget(&plain, "a3", 1), window(0));
    // The override's limit and its pool (no window).
    assert_eq!(
        budget(&vip, "v1", 1),
        Some(QuotaBudget {
            max_amount: 4,
            window: Duration::ZERO,
            remaining: 3,
        })
    );
    // A repeat of a request and a release tell nothing.
    assert_eq!(budget(&plain, "a1", 2), None);
    assert_eq!(budget(&vip, "v2", -1), None);
    // The window rolls: everything is available again.
    clock.set(T0 + 60 * SECOND);
    assert_eq!(budget(&plain, "a4", 1), window(2));
}

#[test]
fn quota_distinct_dimension_tuples_are_independent_counters() {
    let clock = ManualClock::new(T0);
    let h = handler(vec![limit(2, Duration::from_secs(1))], &clock);
    let a = Dimensions::strings(&[("destination", "ratings"), ("source", "a")]);
    let b = Dimensions::strings(&[("destination", "ratings"), ("source", "b")]);
    // An int64 dimension (rendered in hex, as Mixer: `source=ff`). A dimension's type is
    // fixed by its expression, so values of one instance never mix types.
    let n = Dimensions::new(&[
        ("destination", Value::str("ratings")),
        ("source", Value::Int64(255)),
    ]);
    let s = Dimensions::strings(&[("destination", "ratings"), ("source", "a")]);
    assert_eq!(granted(&h, &a, 2), 2);
    assert_eq!(granted(&h, &s, 1), 0, "the same tuple shares the counter");
    assert_eq!(granted(&h, &b, 2), 2);
    assert_eq!(granted(&h, &n, 2), 2);
    assert_eq!(h.counter_count(), 3);
    // Values crafted to collide in Mixer's key text do not share a counter.
    let x = Dimensions::strings(&[("a", "x;b=y"), ("b", "z")]);
    let y = Dimensions::strings(&[("a", "x"), ("b", "y;b=z")]);
    assert_eq!(granted(&h, &x, 2), 2);
    assert_eq!(granted(&h, &y, 2), 2);
}

#[test]
fn quota_adapter_validates_and_builds() {
    let adapter = crate::find("memquota").expect("memquota is in the inventory");
    assert!(adapter.unavailable().is_none());
    let params = json!({
        "quotas": [{"name": Q, "maxAmount": 2, "validDuration": "1s",
                    "overrides": [{"dimensions": {"destination": "ratings"}, "maxAmount": 1}]}]
    });
    let validated = adapter
        .validate(&ValidateInput {
            handler: "quotahandler.istio-system",
            params: &params,
            instances: &[],
        })
        .config
        .unwrap();
    let handler = adapter
        .build(validated, &Env::standalone("quotahandler.istio-system"))
        .unwrap();
    let q = handler.quota().expect("a quota handler");
    let d = Dimensions::strings(&[("destination", "reviews")]);
    let inst = d.instance();
    let Reply::Ready(Ok(r)) = q.handle_quota(&inst, args("r1", 5, true)) else {
        panic!("memquota answers immediately");
    };
    assert_eq!(decision(r), ok(2, Duration::from_secs(1)));
    let d = Dimensions::strings(&[("destination", "ratings")]);
    let inst = d.instance();
    let Reply::Ready(Ok(r)) = q.handle_quota(&inst, args("r2", 1, false)) else {
        panic!("memquota answers immediately");
    };
    // The override has no validDuration: a pool.
    assert_eq!(decision(r), ok(1, Duration::ZERO));
}
