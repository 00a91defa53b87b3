//! Rows 1, 2, 3 and 12: Reports that cost far more than their bytes, and one bad word that
//! used to fail a whole batch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mixer::attrs::GLOBAL_WORD_COUNT;
use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use mixer::wire::pb::istio::mixer::v1::report_request::RepeatedAttributesSemantics;
use mixer::wire::pb::istio::mixer::v1::{
    CheckRequest, CompressedAttributes, ReportRequest, StringMap,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{MIXER, ServerProcess};
use crate::common::{config_dir, metric_value};

const MIB: u64 = 1024 * 1024;

fn global(word: &str) -> i32 {
    mixer::attrs::global_word_index(word).expect("a global word") as i32
}

async fn client(server: &ServerProcess) -> MixerClient<Channel> {
    MixerClient::connect(server.api_url())
        .await
        .expect("connects")
        .max_encoding_message_size(64 * 1024 * 1024)
}

/// A DELTA_ENCODING Report: a first set with an `entries`-entry `request.headers` map, then
/// `empty_sets` empty sets that each inherit it.
fn delta_report(entries: usize, empty_sets: usize) -> ReportRequest {
    let mut words = Vec::with_capacity(entries);
    let mut map = BTreeMap::new();
    for i in 0..entries {
        words.push(format!("h{i}").into_bytes());
        let index = -(i as i32) - 1;
        map.insert(index, index);
    }
    let mut first = CompressedAttributes::default();
    first
        .string_maps
        .insert(global("request.headers"), StringMap { entries: map });
    let mut attributes = vec![first];
    attributes.resize(empty_sets + 1, CompressedAttributes::default());
    ReportRequest {
        attributes,
        repeated_attributes_semantics: RepeatedAttributesSemantics::DeltaEncoding as i32,
        default_words: words,
        global_word_count: GLOBAL_WORD_COUNT as u32,
    }
}

fn empty_sets_report(sets: usize) -> ReportRequest {
    ReportRequest {
        attributes: vec![CompressedAttributes::default(); sets],
        repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
        default_words: vec![],
        global_word_count: GLOBAL_WORD_COUNT as u32,
    }
}

fn cpu_used(server: &ServerProcess, since: Duration) -> Duration {
    server.cpu_time().saturating_sub(since)
}

/// Sends the row-1 Report to a server started with `flags`: RESOURCE_EXHAUSTED naming
/// `flag`, within `cpu_secs` of server CPU.
async fn refused_cheaply(config: &std::path::Path, flags: &[&str], flag: &str, cpu_secs: u64) {
    let server = ServerProcess::start(MIXER, config, flags);
    let mut c = client(&server).await;
    let cpu = server.cpu_time();
    let err = c.report(delta_report(20_000, 150_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains(flag), "{}", err.message());
    assert!(cpu_used(&server, cpu) < Duration::from_secs(cpu_secs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row1_delta_report_shares_inherited_state() {
    let dir = config_dir(&[]);
    // Defaults: 150 001 sets are refused before any is decoded.
    refused_cheaply(dir.path(), &[], "--max-report-attribute-sets", 2).await;
    // Set count and map size allowed: the decoded-bytes budget stops it, cheaply, naming
    // its flag.
    let raised = [
        "--max-report-attribute-sets",
        "200000",
        "--max-string-map-entries",
        "50000",
    ];
    refused_cheaply(dir.path(), &raised, "--max-report-decoded-bytes", 5).await;

    // Every limit lifted: all 150 001 sets decode and dispatch, sharing the inherited map
    // instead of copying it per set (which took minutes of CPU and more memory than the
    // machine has).
    let server = ServerProcess::start(
        MIXER,
        dir.path(),
        &[
            "--max-report-attribute-sets",
            "200000",
            "--max-string-map-entries",
            "50000",
            "--max-report-decoded-bytes",
            "1000000000000000",
        ],
    );
    let mut c = client(&server).await;
    let cpu = server.cpu_time();
    c.report(delta_report(20_000, 150_000))
        .await
        .expect("the Report is accepted");
    let used = cpu_used(&server, cpu);
    let peak = server.peak_rss_bytes();
    eprintln!(
        "row 1: 150 001 DELTA sets over a 20 000-entry map: {used:?} CPU, peak RSS {} MiB",
        peak / MIB
    );
    assert!(peak < 400 * MIB, "peak RSS {} MiB", peak / MIB);
    assert!(used < Duration::from_secs(60), "{used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row2_many_empty_sets_are_refused_before_decoding() {
    let dir = config_dir(&[]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let baseline = server.rss_bytes();
    let request = empty_sets_report(520_000);
    assert!(prost::Message::encoded_len(&request) < 1024 * 1024);
    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut c = client(&server).await;
        let request = request.clone();
        calls.push(tokio::spawn(async move { c.report(request).await }));
    }
    let monitoring = server.monitoring.clone();
    let health = tokio::task::spawn_blocking(move || {
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let healthz =
                test_support::http::get(&*monitoring, "/healthz", Duration::from_secs(10))
                    .expect("/healthz answers");
            let (status, took) = (healthz.status, healthz.elapsed);
            assert_eq!(status, 200);
            worst = worst.max(took);
            std::thread::sleep(Duration::from_millis(10));
        }
        worst
    });
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("more than 1000 attribute sets"));
    }
    let worst = health.await.unwrap();
    let peak = server.peak_rss_bytes();
    eprintln!(
        "row 2: 4 × 520 000 empty sets: /healthz worst {worst:?}, peak RSS {} MiB (baseline {} MiB)",
        peak / MIB,
        baseline / MIB
    );
    assert!(peak < baseline + 100 * MIB, "peak RSS {} MiB", peak / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row3_heavy_reports_leave_checks_and_memory_alone() {
    let dir = config_dir(&[]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    // Largest allowed Reports (1000 sets, each a few attributes) and over-limit ones, four
    // senders, while Checks run.
    let heavy = {
        let set = {
            let mut a = CompressedAttributes::default();
            a.strings.insert(global("request.path"), -1);
            a.int64s.insert(global("response.code"), 200);
            a
        };
        ReportRequest {
            attributes: vec![set; 1000],
            repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
            default_words: vec![b"/x".to_vec()],
            global_word_count: GLOBAL_WORD_COUNT as u32,
        }
    };
    let too_many = empty_sets_report(100_000);
    let stop = Instant::now() + Duration::from_secs(4);
    let mut senders = Vec::new();
    for i in 0..4 {
        let mut c = client(&server).await;
        let request = if i % 2 == 0 {
            heavy.clone()
        } else {
            too_many.clone()
        };
        senders.push(tokio::spawn(async move {
            let mut sent = 0;
            while Instant::now() < stop {
                let r = c.report(request.clone()).await;
                if request.attributes.len() > 1000 {
                    assert_eq!(r.unwrap_err().code(), Code::ResourceExhausted);
                } else {
                    r.expect("a Report within the limits is accepted");
                }
                sent += 1;
            }
            sent
        }));
    }
    let mut c = client(&server).await;
    let mut latencies = Vec::new();
    while Instant::now() < stop {
        let started = Instant::now();
        c.check(CheckRequest {
            global_word_count: GLOBAL_WORD_COUNT as u32,
            ..Default::default()
        })
        .await
        .expect("Check answers");
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut reports = 0;
    for s in senders {
        reports += s.await.unwrap();
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = server.rss_bytes();
    eprintln!(
        "row 3: {reports} heavy Reports beside {} Checks: Check p50 {p50:?}, p99 {p99:?}; RSS after {} MiB, peak {} MiB",
        latencies.len(),
        rss / MIB,
        server.peak_rss_bytes() / MIB
    );
    assert!(reports > 4);
    assert!(rss < 150 * MIB, "RSS {} MiB", rss / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row12_a_bad_word_fails_only_its_set() {
    let dir = tempfile::tempdir().unwrap();
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/default");
    for f in ["attributes.yaml", "metrics.yaml"] {
        std::fs::copy(format!("{samples}/{f}"), dir.path().join(f)).unwrap();
    }
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut c = client(&server).await;

    // 100 sets; set 37 alone names word -2, which is not UTF-8.
    let set = |value: i32| {
        let mut a = CompressedAttributes::default();
        a.strings.insert(global("destination.service.host"), value);
        a.strings.insert(global("context.protocol"), global("http"));
        a.int64s.insert(global("response.code"), 200);
        a
    };
    let mut attributes = vec![set(-1); 100];
    attributes[37] = set(-2);
    let err = c
        .report(ReportRequest {
            attributes,
            repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
            default_words: vec![
                b"reviews.default.svc.cluster.local".to_vec(),
                vec![b'x', 0xff],
            ],
            global_word_count: GLOBAL_WORD_COUNT as u32,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let m = err.message();
    assert!(m.contains("attributes[37]"), "{m}");
    assert!(m.contains("destination.service.host"), "{m}");
    assert!(m.contains("not valid UTF-8"), "{m}");
    // The 99 good sets were counted.
    let counted = crate::common::eventually(Duration::from_secs(5), || async {
        let scrape =
            test_support::http::get(&*server.prometheus, "/metrics", Duration::from_secs(5))
                .map(|r| r.text())
                .unwrap_or_default();
        metric_value(&scrape, "istio_requests_total", &[]) == Some(99.0)
    })
    .await;
    assert!(counted, "99 requests counted");

    // A Check with a bad word is refused, naming it.
    let mut attrs = CompressedAttributes {
        words: vec![vec![0xc3, 0x28]],
        ..Default::default()
    };
    attrs.strings.insert(global("request.path"), -1);
    let err = c
        .check(CheckRequest {
            attributes: Some(attrs),
            global_word_count: GLOBAL_WORD_COUNT as u32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("value index -1 of attribute 'request.path'")
            && err.message().contains("not valid UTF-8"),
        "{}",
        err.message()
    );
}
