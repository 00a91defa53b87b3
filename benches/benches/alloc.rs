//! Heap allocations per Report bag and per Check, counted by a global allocator that wraps
//! the system allocator (averaged over many calls after a warm-up).
//!
//! Run: `cargo bench -p benches --bench alloc`
//!
//! The workspace forbids `unsafe` code, and implementing `GlobalAlloc` needs it, so the
//! counting wrapper is `stats_alloc`'s `StatsAlloc<System>` (atomic counters around
//! `std::alloc::System`). Its counts are process-wide: allocations by the stdio adapter's
//! writer thread count too (it only frees the lines it is handed, though). No tracing
//! handler is configured here, so no export task runs.

mod common;

use std::alloc::System;
use std::hint::black_box;

use benches::Traffic;
use expr_lang::NoRecording;
use futures::executor::block_on;
use mixer::config::Snapshot;
use mixer::metrics::Metrics;
use mixer::runtime::check::{self, CheckContext};
use mixer::runtime::quota::{self, QuotaRequest};
use mixer::runtime::{PolicyErrorMode, Referenced, report};
use mixer::wire::pb::istio::mixer::v1::{CheckRequest, ReportRequest};
use mixer::wire::service::mixer_server::Mixer;
use mixer::wire::view::{CheckView, ReportView};
use prost::Message;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use templates::{QuotaArgs, Reply};
use tonic::Request;

use common::{BATCH, Loaded, QUOTA_NAME};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Distinct requests cycled through (each seen in the warm-up, so Prometheus series and
/// quota counters exist by then, as in a server that has been running).
const RING: usize = 64;
const REPORT_RING: usize = 8;
const WARMUP_CALLS: usize = 200;
const CHECK_CALLS: usize = 20_000;
const REPORT_CALLS: usize = 400;

/// Allocation counts per unit of work.
struct Counts {
    allocations: f64,
    reallocations: f64,
    bytes: f64,
}

/// Runs `f` `WARMUP_CALLS` times, then `calls` times counting, and divides the counts
/// by `calls * per_call` (units of work per call).
fn measure(calls: usize, per_call: usize, mut f: impl FnMut(usize)) -> Counts {
    for i in 0..WARMUP_CALLS {
        f(i);
    }
    let before = GLOBAL.stats();
    for i in 0..calls {
        f(WARMUP_CALLS + i);
    }
    let after = GLOBAL.stats();
    let units = (calls * per_call) as f64;
    Counts {
        allocations: (after.allocations - before.allocations) as f64 / units,
        reallocations: (after.reallocations - before.reallocations) as f64 / units,
        bytes: (after.bytes_allocated - before.bytes_allocated) as f64 / units,
    }
}

fn print(what: &str, c: &Counts) {
    println!(
        "{what}: {:.1}   ({:.1} reallocations, {:.0} bytes allocated)",
        c.allocations, c.reallocations, c.bytes
    );
}

fn report(tel: &Loaded, rt: &tokio::runtime::Handle) {
    let snap = &tel.snapshot;
    let metrics = &tel.metrics;
    let reports = common::report_requests(&mut Traffic::new(3), REPORT_RING);
    let bytes = common::encode_all(&reports);
    let batches: Vec<_> = reports
        .iter()
        .map(|r| common::report_bags(r, snap))
        .collect();

    println!(
        "Report, samples/default (prometheus + stdio access log to a file), {BATCH}-bag batches:"
    );
    let full = measure(REPORT_CALLS, BATCH, |i| {
        if i % 100 == 0 {
            tel.truncate_log();
        }
        let req = ReportRequest::decode(&bytes[i % bytes.len()][..]).expect("decodes");
        let bags = common::report_bags(&req, snap);
        let errors = report::dispatch(snap, &bags, metrics);
        assert!(errors.is_empty(), "{errors:?}");
    });
    print("allocations per report bag (full pipeline)", &full);
    let prost = measure(REPORT_CALLS, BATCH, |i| {
        black_box(ReportRequest::decode(&bytes[i % bytes.len()][..]).expect("decodes"));
    });
    print("  of which protobuf decode", &prost);
    let decode = measure(REPORT_CALLS, BATCH, |i| {
        black_box(common::report_bags(&reports[i % reports.len()], snap));
    });
    print("  of which bag decode", &decode);
    let dispatch = measure(REPORT_CALLS, BATCH, |i| {
        if i % 100 == 0 {
            tel.truncate_log();
        }
        black_box(report::dispatch(snap, &batches[i % batches.len()], metrics));
    });
    print("  of which report::dispatch", &dispatch);

    let service = common::service(tel.config.dir.path(), rt, 0);
    let svc = measure(REPORT_CALLS, BATCH, |i| {
        if i % 100 == 0 {
            tel.truncate_log();
        }
        let req = ReportView::decode(bytes::Bytes::copy_from_slice(&bytes[i % bytes.len()]))
            .expect("decodes");
        block_on(service.report(Request::new(req))).expect("report ok");
    });
    print(
        "allocations per report bag (gRPC service method, incl. protobuf decode)",
        &svc,
    );
}

/// Runs `check` over the policy's snapshot: the view read from the request bytes, its
/// bag, the rules evaluated recording references.
fn view_check(view: &CheckView, snap: &Snapshot, metrics: &Metrics) {
    let bag = common::view_bag(view, snap);
    let mut refs = Referenced::new();
    let outcome = block_on(check::evaluate(
        &CheckContext {
            snapshot: snap,
            mode: PolicyErrorMode::Mixer,
            metrics,
        },
        &bag,
        &mut refs,
    ))
    .expect("check dispatches");
    assert!(outcome.status.is_ok());
    bag.recycle();
    black_box(refs);
}

fn check(pol: &Loaded, rt: &tokio::runtime::Handle) {
    let snap = &pol.snapshot;
    let metrics = &pol.metrics;
    let mode = PolicyErrorMode::Mixer;
    let checks = common::check_requests(&mut Traffic::new(4), RING);
    let bytes = common::encode_all(&checks);
    let views = common::check_views(&checks);
    let bags: Vec<_> = views.iter().map(|v| common::view_bag(v, snap)).collect();
    let mut dedup = 0u64;
    let decode_view = |i: usize| {
        CheckView::decode(bytes::Bytes::copy_from_slice(&bytes[i % bytes.len()])).expect("decodes")
    };

    println!(
        "Check, 10-rule policy ({} check rules, {} quota rule); each row copies the request bytes once (1 allocation), as a server receives them:",
        snap.check.len(),
        snap.quota.len()
    );
    let full = measure(CHECK_CALLS, 1, |i| {
        view_check(&decode_view(i), snap, metrics)
    });
    print("allocations per check (10-rule policy)", &full);
    {
        let other = Loaded::new(common::mixer_load_policy_config(), rt);
        let counts = measure(CHECK_CALLS, 1, |i| {
            view_check(&decode_view(i), &other.snapshot, metrics)
        });
        print(
            "  (same, over mixer-load's benches/configs/policy-10-rules)",
            &counts,
        );
    }
    let view = measure(CHECK_CALLS, 1, |i| {
        black_box(decode_view(i));
    });
    print("  of which CheckView decode (with the copy)", &view);
    let prost = measure(CHECK_CALLS, 1, |i| {
        black_box(CheckRequest::decode(&bytes[i % bytes.len()][..]).expect("decodes"));
    });
    print("  (prost's decode instead, for comparison)", &prost);
    let decode = measure(CHECK_CALLS, 1, |i| {
        common::view_bag(&views[i % views.len()], snap).recycle();
    });
    print("  of which bag decode (recycled)", &decode);
    let unrecycled = measure(CHECK_CALLS, 1, |i| {
        black_box(common::check_bag(&checks[i % checks.len()], snap));
    });
    print(
        "  (bag decode from prost's message, not recycled)",
        &unrecycled,
    );
    let plain = measure(CHECK_CALLS, 1, |i| {
        black_box(
            block_on(check::evaluate(
                &CheckContext {
                    snapshot: snap,
                    mode,
                    metrics,
                },
                &bags[i % bags.len()],
                &mut NoRecording,
            ))
            .expect("check"),
        );
    });
    print("  of which check::evaluate, no recording", &plain);
    let recorded = measure(CHECK_CALLS, 1, |i| {
        let mut refs = Referenced::new();
        black_box(
            block_on(check::evaluate(
                &CheckContext {
                    snapshot: snap,
                    mode,
                    metrics,
                },
                &bags[i % bags.len()],
                &mut refs,
            ))
            .expect("check"),
        );
        black_box(refs);
    });
    print(
        "  of which check::evaluate, recording (the server's Referenced)",
        &recorded,
    );
    let quota = measure(CHECK_CALLS, 1, |i| {
        dedup += 1;
        let id = format!("{dedup:016x}{QUOTA_NAME}");
        let args = QuotaArgs {
            deduplication_id: &id,
            amount: 1,
            best_effort: false,
        };
        let mut refs = Referenced::new();
        let q = block_on(quota::allocate(
            snap,
            &bags[i % bags.len()],
            &mut refs,
            QuotaRequest {
                name: QUOTA_NAME,
                amount: args.amount,
                best_effort: args.best_effort,
            },
            args.deduplication_id,
            metrics,
        ));
        assert_eq!(q.granted_amount, 1);
        black_box(refs);
    });
    print(
        "allocations per quota (quota::allocate incl. dedup id, memquota)",
        &quota,
    );

    let uncached = common::service(pol.config.dir.path(), rt, 0);
    let cached = common::service(pol.config.dir.path(), rt, 10_000);
    for (what, service, quota) in [
        (
            "allocations per check (gRPC service method, no check cache, incl. decode)",
            &uncached,
            false,
        ),
        (
            "allocations per check (gRPC service method, check cache hit, incl. decode)",
            &cached,
            false,
        ),
        (
            "allocations per check with 1 quota (gRPC service method, incl. decode)",
            &uncached,
            true,
        ),
    ] {
        // Every call's bytes, with a fresh deduplication id, made before counting: a
        // server receives them in a buffer of its transport.
        let encoded = common::CheckBytes::new(&checks, quota);
        let mut requests: Vec<bytes::Bytes> = (0..WARMUP_CALLS + CHECK_CALLS)
            .map(|i| {
                dedup += 1;
                encoded.with_id(i, dedup)
            })
            .collect();
        let svc = measure(CHECK_CALLS, 1, |i| {
            let req = CheckView::decode(std::mem::take(&mut requests[i])).expect("decodes");
            black_box(block_on(service.check(Request::new(req))).expect("check ok"));
        });
        print(what, &svc);
    }
}

fn memquota() {
    let setup = common::memquota();
    let q = setup.handler.quota().expect("a quota handler");
    let instance = setup
        .builder
        .quota(&setup.bag, &mut NoRecording)
        .expect("quota instance builds");
    let mut buf = [0u8; 16];
    let counts = measure(CHECK_CALLS * 5, 1, |i| {
        let args = QuotaArgs {
            deduplication_id: common::hex_id(i as u64, &mut buf),
            amount: 1,
            best_effort: false,
        };
        match q.handle_quota(&instance, args) {
            Reply::Ready(r) => black_box(r.expect("quota ok")),
            Reply::Later(_) => panic!("memquota answers at once"),
        };
    });
    print(
        "allocations per memquota handle_quota (unique dedup ids)",
        &counts,
    );
}

fn main() {
    // A current-thread runtime that is never driven: no handler here needs a task.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rt = runtime.handle();
    let tel = Loaded::new(common::telemetry_config(false), rt);
    let pol = Loaded::new(common::policy_config(), rt);
    report(&tel, rt);
    check(&pol, rt);
    memquota();
    let dropped = tel.adapter_metric_sum("dropped");
    if dropped > 0.0 {
        println!("(the stdio writer dropped {dropped} lines: its queue was full)");
    }
}
