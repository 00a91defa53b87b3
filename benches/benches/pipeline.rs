//! The server's request pipeline, piece by piece and whole: attribute decoding, instance
//! building for `samples/default`, Report batches through dispatch with the Prometheus and
//! stdio (to a file) handlers really built, Check through a 10-rule policy with and
//! without a quota, and one memquota allocation.
//!
//! Run: `cargo bench -p benches --bench pipeline`

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use benches::Traffic;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use expr_lang::{NoRecording, ReferencedSet};
use futures::executor::block_on;
use mixer::attrs::ProtoBag;
use mixer::config::Snapshot;
use mixer::runtime::check::{self, CheckContext};
use mixer::runtime::quota::{self, QuotaRequest};
use mixer::runtime::{PolicyErrorMode, matching, report};
use mixer::wire::pb::istio::mixer::v1::{CheckRequest, CheckResponse, ReportRequest};
use mixer::wire::service::mixer_server::Mixer;
use mixer::wire::view::{CheckView, ReportView};
use prost::Message;
use templates::{QuotaArgs, Reply, TemplateKind};
use tonic::Request;

use common::{BATCH, Loaded, QUOTA_NAME};

/// Distinct requests cycled through, so branch predictors and caches see varied traffic.
const RING: usize = 64;
/// Distinct Report batches cycled through.
const REPORT_RING: usize = 8;

/// Cycles through `items`.
struct Ring<'a, T> {
    items: &'a [T],
    next: usize,
}

impl<'a, T> Ring<'a, T> {
    fn new(items: &'a [T]) -> Self {
        Ring { items, next: 0 }
    }

    #[inline]
    fn next(&mut self) -> &'a T {
        let item = &self.items[self.next];
        self.next = (self.next + 1) % self.items.len();
        item
    }
}

/// Evaluates every Report rule's match for one bag and builds the instances of those
/// that hold, as `report::dispatch` does before calling handlers. Returns the number of
/// instances built.
fn build_report_instances(snap: &Snapshot, bag: &ProtoBag<'_>) -> usize {
    let mut rec = NoRecording;
    let namespace = matching::identity_namespace(snap, bag, &mut rec);
    let mut built = 0;
    for routed in snap.report.for_namespace(&namespace) {
        if let Some(pred) = &routed.rule.predicate
            && !pred.evaluate_bool(bag).unwrap_or(false)
        {
            continue;
        }
        for dest in &routed.destinations {
            for builder in &dest.instances {
                match builder.kind() {
                    TemplateKind::Metric => {
                        black_box(builder.metric(bag, &mut rec).expect("metric builds"));
                    }
                    TemplateKind::LogEntry => {
                        black_box(builder.logentry(bag, &mut rec).expect("logentry builds"));
                    }
                    TemplateKind::TraceSpan => {
                        black_box(builder.tracespan(bag, &mut rec).expect("tracespan builds"));
                    }
                    other => panic!("unexpected report template {other}"),
                }
                built += 1;
            }
        }
    }
    built
}

/// The server's Report handling after gRPC framing: protobuf decode, bag decode,
/// dispatch.
fn server_report(bytes: &[u8], snap: &Snapshot, metrics: &mixer::metrics::Metrics) {
    let req = ReportRequest::decode(bytes).expect("protobuf decodes");
    let bags = common::report_bags(&req, snap);
    let errors = report::dispatch(snap, &bags, metrics);
    debug_assert!(errors.is_empty(), "{errors:?}");
    black_box(errors);
}

fn bench_decode(c: &mut Criterion, tel: &Loaded) {
    let snap = &tel.snapshot;
    let mut traffic = Traffic::new(1);
    let checks = common::check_requests(&mut traffic, RING);
    let check_bytes = common::encode_all(&checks);
    let reports = common::report_requests(&mut traffic, REPORT_RING);
    let report_bytes = common::encode_all(&reports);
    let attrs_per_bag = common::check_bag(&checks[0], snap).len();
    println!(
        "decode: {attrs_per_bag} attributes per bag, CheckRequest {} bytes, ReportRequest of {BATCH} {} bytes",
        check_bytes[0].len(),
        report_bytes[0].len()
    );

    let mut g = c.benchmark_group("decode");
    g.bench_function("check_bag/proto_bag", |b| {
        let mut ring = Ring::new(&checks);
        b.iter(|| {
            let attrs = ring.next().attributes.as_ref().expect("attributes");
            let bag = ProtoBag::decode(attrs, &attrs.words, &snap.attributes).expect("decodes");
            black_box(bag.len())
        })
    });
    g.bench_function("check_bag/proto_bag_reused", |b| {
        let mut ring = Ring::new(&checks);
        let mut bag = ProtoBag::new(&snap.attributes);
        b.iter(|| {
            let attrs = ring.next().attributes.as_ref().expect("attributes");
            bag.decode_into(attrs, &attrs.words, &snap.attributes)
                .expect("decodes");
            black_box(bag.len())
        })
    });
    g.bench_function("check_request/prost", |b| {
        let mut ring = Ring::new(&check_bytes);
        b.iter(|| black_box(CheckRequest::decode(&ring.next()[..]).expect("decodes")))
    });
    g.bench_function("check_request/prost+proto_bag", |b| {
        let mut ring = Ring::new(&check_bytes);
        b.iter(|| {
            let req = CheckRequest::decode(&ring.next()[..]).expect("decodes");
            black_box(common::check_bag(&req, snap).len())
        })
    });
    // What the server does: the request read from its bytes, the bag recycled after.
    let shared: Vec<bytes::Bytes> = check_bytes
        .iter()
        .map(|b| bytes::Bytes::copy_from_slice(b))
        .collect();
    g.bench_function("check_request/view", |b| {
        let mut ring = Ring::new(&shared);
        b.iter(|| black_box(CheckView::decode(ring.next().clone()).expect("decodes")))
    });
    g.bench_function("check_request/view+proto_bag", |b| {
        let mut ring = Ring::new(&shared);
        b.iter(|| {
            let view = CheckView::decode(ring.next().clone()).expect("decodes");
            let bag = common::view_bag(&view, snap);
            let len = bag.len();
            bag.recycle();
            black_box(len)
        })
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("report_request_100/prost", |b| {
        let mut ring = Ring::new(&report_bytes);
        b.iter(|| black_box(ReportRequest::decode(&ring.next()[..]).expect("decodes")))
    });
    g.bench_function("report_request_100/prost+proto_bags", |b| {
        let mut ring = Ring::new(&report_bytes);
        b.iter(|| {
            let req = ReportRequest::decode(&ring.next()[..]).expect("decodes");
            black_box(common::report_bags(&req, snap).len())
        })
    });
    g.finish();
}

fn bench_instances(c: &mut Criterion, envs: &[(&str, &Loaded)]) {
    let mut g = c.benchmark_group("instances");
    for &(name, env) in envs {
        let snap = &env.snapshot;
        let reports = common::report_requests(&mut Traffic::new(2), 1);
        let bags = common::report_bags(&reports[0], snap);
        println!(
            "instances/{name}: {} report rules, {} instances for the first HTTP bag",
            snap.report.len(),
            build_report_instances(snap, &bags[0])
        );
        g.bench_function(BenchmarkId::new("report_rules_one_http_bag", name), |b| {
            let mut ring = Ring::new(&bags);
            b.iter(|| black_box(build_report_instances(snap, ring.next())))
        });
    }
    g.finish();
}

fn bench_report(c: &mut Criterion, tel: &Loaded, traced: &Loaded, rt: &tokio::runtime::Handle) {
    let reports = common::report_requests(&mut Traffic::new(3), REPORT_RING);
    let report_bytes = common::encode_all(&reports);

    let mut g = c.benchmark_group("report");
    g.throughput(Throughput::Elements(BATCH as u64));

    // Bags decoded once: dispatch alone (rule matches, instances, handlers, self-metrics).
    {
        let snap = &tel.snapshot;
        let batches: Vec<Vec<ProtoBag<'_>>> = reports
            .iter()
            .map(|r| common::report_bags(r, snap))
            .collect();
        let errors = report::dispatch(snap, &batches[0], &tel.metrics);
        assert!(errors.is_empty(), "report errors: {errors:?}");
        g.bench_function("dispatch_100_bags", |b| {
            let mut ring = Ring::new(&batches);
            b.iter_custom(|iters| {
                tel.truncate_log();
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(report::dispatch(snap, ring.next(), &tel.metrics));
                }
                start.elapsed()
            })
        });
    }

    // The server's whole cost after gRPC framing, with and without OTLP tracing.
    for (name, env) in [("server_100_bags", tel), ("server_100_bags+otlp", traced)] {
        g.bench_function(name, |b| {
            let mut ring = Ring::new(&report_bytes);
            b.iter_custom(|iters| {
                env.truncate_log();
                let start = Instant::now();
                for _ in 0..iters {
                    server_report(ring.next(), &env.snapshot, &env.metrics);
                }
                start.elapsed()
            })
        });
    }

    // The gRPC service method itself (its runtime's snapshot, self-metrics, response).
    let service = common::service(tel.config.dir.path(), rt, 0);
    g.bench_function("service_100_bags", |b| {
        let mut ring = Ring::new(&report_bytes);
        b.iter_custom(|iters| {
            tel.truncate_log();
            let start = Instant::now();
            for _ in 0..iters {
                let req = ReportView::decode(bytes::Bytes::copy_from_slice(ring.next()))
                    .expect("decodes");
                black_box(block_on(service.report(Request::new(req))).expect("report ok"));
            }
            start.elapsed()
        })
    });
    g.finish();

    for (name, env) in [("telemetry", tel), ("telemetry+otlp", traced)] {
        println!(
            "report/{name}: adapter drop counters total {} (stdio queue or span queue full)",
            env.adapter_metric_sum("dropped")
        );
    }
}

fn bench_check(c: &mut Criterion, pol: &Loaded, rt: &tokio::runtime::Handle) {
    let snap = &pol.snapshot;
    let metrics = &pol.metrics;
    let mode = PolicyErrorMode::Mixer;
    let checks = common::check_requests(&mut Traffic::new(4), RING);
    let views = common::check_views(&checks);
    let shared: Vec<bytes::Bytes> = common::encode_all(&checks)
        .into_iter()
        .map(bytes::Bytes::from)
        .collect();
    let bags: Vec<ProtoBag<'_>> = views.iter().map(|v| common::view_bag(v, snap)).collect();
    println!(
        "check: {} check rules, {} quota rules",
        snap.check.len(),
        snap.quota.len()
    );
    for bag in &bags {
        let mut refs = ReferencedSet::new();
        let outcome = block_on(check::evaluate(
            &CheckContext {
                snapshot: snap,
                mode,
                metrics,
            },
            bag,
            &mut refs,
        ))
        .expect("check dispatches");
        assert!(outcome.status.is_ok(), "denied: {:?}", outcome.status);
        assert_eq!(outcome.route.request_header_operations.len(), 1);
    }
    {
        let mut refs = ReferencedSet::new();
        block_on(check::evaluate(
            &CheckContext {
                snapshot: snap,
                mode,
                metrics,
            },
            &bags[0],
            &mut refs,
        ))
        .expect("check");
        println!("check: {} referenced attributes recorded", refs.len());
    }

    let mut dedup_counter = 0u64;
    let mut next_dedup_id = move || {
        dedup_counter += 1;
        format!("{dedup_counter:016x}{QUOTA_NAME}")
    };

    let mut g = c.benchmark_group("check");
    g.bench_function("dispatch_10_rules/no_recording", |b| {
        let mut ring = Ring::new(&bags);
        b.iter(|| {
            block_on(check::evaluate(
                &CheckContext {
                    snapshot: snap,
                    mode,
                    metrics,
                },
                ring.next(),
                &mut NoRecording,
            ))
            .expect("check")
        })
    });
    g.bench_function("dispatch_10_rules/referenced_set", |b| {
        let mut ring = Ring::new(&bags);
        b.iter(|| {
            let mut refs = ReferencedSet::new();
            let outcome = block_on(check::evaluate(
                &CheckContext {
                    snapshot: snap,
                    mode,
                    metrics,
                },
                ring.next(),
                &mut refs,
            ))
            .expect("check");
            black_box(refs);
            outcome
        })
    });
    g.bench_function("server_10_rules", |b| {
        let mut ring = Ring::new(&shared);
        b.iter(|| {
            let req = CheckView::decode(ring.next().clone()).expect("decodes");
            let bag = common::view_bag(&req, snap);
            let mut refs = ReferencedSet::new();
            let outcome = block_on(check::evaluate(
                &CheckContext {
                    snapshot: snap,
                    mode,
                    metrics,
                },
                &bag,
                &mut refs,
            ))
            .expect("check");
            black_box(refs);
            outcome
        })
    });
    // The same server-side Check over `mixer-load`'s 10-rule policy.
    {
        let other = Loaded::new(common::mixer_load_policy_config(), rt);
        let snap = &other.snapshot;
        for bag in checks.iter().map(|r| common::check_bag(r, snap)) {
            let outcome = block_on(check::evaluate(
                &CheckContext {
                    snapshot: snap,
                    mode,
                    metrics,
                },
                &bag,
                &mut NoRecording,
            ))
            .expect("check dispatches");
            assert!(outcome.status.is_ok(), "denied: {:?}", outcome.status);
        }
        g.bench_function("server_10_rules/mixer_load_policy", |b| {
            let mut ring = Ring::new(&shared);
            b.iter(|| {
                let req = CheckView::decode(ring.next().clone()).expect("decodes");
                let bag = common::view_bag(&req, snap);
                let mut refs = ReferencedSet::new();
                let outcome = block_on(check::evaluate(
                    &CheckContext {
                        snapshot: snap,
                        mode,
                        metrics,
                    },
                    &bag,
                    &mut refs,
                ))
                .expect("check");
                black_box(refs);
                outcome
            })
        });
    }
    g.bench_function("quota_only", |b| {
        let mut ring = Ring::new(&bags);
        b.iter(|| {
            let dedup = next_dedup_id();
            let args = QuotaArgs {
                deduplication_id: &dedup,
                amount: 1,
                best_effort: false,
            };
            let mut refs = ReferencedSet::new();
            let q = block_on(quota::allocate(
                snap,
                ring.next(),
                &mut refs,
                QuotaRequest {
                    name: QUOTA_NAME,
                    amount: args.amount,
                    best_effort: args.best_effort,
                },
                args.deduplication_id,
                metrics,
            ));
            debug_assert_eq!(q.granted_amount, 1);
            black_box(refs);
            q
        })
    });
    g.bench_function("server_10_rules+1_quota", |b| {
        let mut ring = Ring::new(&shared);
        b.iter(|| {
            let req = CheckView::decode(ring.next().clone()).expect("decodes");
            let bag = common::view_bag(&req, snap);
            let mut refs = ReferencedSet::new();
            let outcome = block_on(check::evaluate(
                &CheckContext {
                    snapshot: snap,
                    mode,
                    metrics,
                },
                &bag,
                &mut refs,
            ))
            .expect("check");
            let dedup = next_dedup_id();
            let args = QuotaArgs {
                deduplication_id: &dedup,
                amount: 1,
                best_effort: false,
            };
            let mut qrefs = ReferencedSet::new();
            let q = block_on(quota::allocate(
                snap,
                &bag,
                &mut qrefs,
                QuotaRequest {
                    name: QUOTA_NAME,
                    amount: args.amount,
                    best_effort: args.best_effort,
                },
                args.deduplication_id,
                metrics,
            ));
            debug_assert_eq!(q.granted_amount, 1);
            black_box((refs, qrefs, q));
            outcome
        })
    });

    // The gRPC service method itself: the server's own referenced-attribute recorder and
    // the response it builds; without the server-side Check cache (every call evaluates
    // the rules), and with it (the server's default; the 64 requests cycled through all
    // hit it after the first lap). Quota requests are never answered from the cache.
    let uncached = common::service(pol.config.dir.path(), rt, 0);
    let cached = common::service(pol.config.dir.path(), rt, 10_000);
    for (name, service, quota) in [
        ("service_10_rules/no_cache", &uncached, false),
        ("service_10_rules/cache_hit", &cached, false),
        ("service_10_rules+1_quota", &uncached, true),
    ] {
        let encoded = common::CheckBytes::new(&checks, quota);
        let mut counter = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                // A fresh id per call, so memquota allocates rather than replaying; the
                // copy of the bytes it takes is part of the figure (about 50 ns).
                counter += 1;
                let bytes = encoded.with_id(counter as usize, counter);
                let req = CheckView::decode(bytes).expect("decodes");
                let response = block_on(service.check(Request::new(req))).expect("check ok");
                debug_assert_eq!(
                    CheckResponse::decode(&response.get_ref().0[..])
                        .expect("a CheckResponse")
                        .quotas
                        .len(),
                    usize::from(quota)
                );
                response
            })
        });
    }
    g.finish();
}

fn bench_memquota(c: &mut Criterion) {
    let setup = common::memquota();
    let quota = setup.handler.quota().expect("a quota handler");
    let instance = setup
        .builder
        .quota(&setup.bag, &mut NoRecording)
        .expect("quota instance builds");
    let mut g = c.benchmark_group("memquota");
    g.bench_function("handle_quota/unique_dedup_id", |b| {
        let mut n = 0u64;
        let mut buf = [0u8; 16];
        b.iter(|| {
            n += 1;
            let args = QuotaArgs {
                deduplication_id: common::hex_id(n, &mut buf),
                amount: 1,
                best_effort: false,
            };
            match quota.handle_quota(&instance, args) {
                Reply::Ready(r) => black_box(r.expect("quota ok").granted_amount),
                Reply::Later(_) => panic!("memquota answers at once"),
            }
        })
    });
    g.bench_function("handle_quota/repeated_dedup_id", |b| {
        b.iter(|| {
            let args = QuotaArgs {
                deduplication_id: "0123456789abcdef",
                amount: 1,
                best_effort: false,
            };
            match quota.handle_quota(&instance, args) {
                Reply::Ready(r) => black_box(r.expect("quota ok").granted_amount),
                Reply::Later(_) => panic!("memquota answers at once"),
            }
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    // One worker: the OTLP export task and the stdio writer thread are background work
    // competing with the benchmark for the machine's cores, as in the server.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rt = runtime.handle();
    let tel = Loaded::new(common::telemetry_config(false), rt);
    let traced = Loaded::new(common::telemetry_config(true), rt);
    let pol = Loaded::new(common::policy_config(), rt);

    bench_decode(c, &tel);
    bench_instances(c, &[("telemetry", &tel), ("telemetry+otlp", &traced)]);
    bench_report(c, &tel, &traced, rt);
    bench_check(c, &pol, rt);
    bench_memquota(c);
    // Handlers are not closed: the process exits right after, and an OTLP handler's
    // final flush to an endpoint nobody serves would only wait out its timeout.
    runtime.shutdown_timeout(Duration::from_millis(100));
}

criterion_group!(benches, bench);
criterion_main!(benches);
