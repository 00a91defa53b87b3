//! Bounded telemetry state (issue table rows 4 and 16): hostile label values cannot grow
//! the Prometheus exporter's memory or its scrape without bound, and access-log lines
//! lost to a failing output file are counted.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use mixer::attrs::{GLOBAL_WORD_COUNT, encode_report};
use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use test_support::envoy::inbound_http_request;
use test_support::http;

use crate::common::{MIXER, ServerProcess, config_dir, metric_value};

const MIB: u64 = 1024 * 1024;

/// Name of the self-metric counting label values cut to the maximum length.
const LABELS_TRUNCATED: &str = "mixer_adapter_prometheus_label_values_truncated_total";
/// Name of the stdio adapter's lost-lines self-metric.
const STDIO_DROPPED: &str = "mixer_adapter_stdio_dropped_lines_total";

/// The server's self-metrics (monitoring `/metrics`).
fn self_metrics(server: &ServerProcess) -> String {
    let response = server
        .monitoring_get("/metrics", Duration::from_secs(10))
        .expect("monitoring /metrics answers");
    let body = response.text();
    assert_eq!(response.status, 200, "{body}");
    body
}

/// Polls the self-metric `name{labels}` until it reaches `at_least` (bounded): its last value.
fn wait_for_metric(server: &ServerProcess, name: &str, labels: &[&str], at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = metric_value(&self_metrics(server), name, labels).unwrap_or(0.0);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Row 4: 200 Reports on `samples/default`, each with its own ~900 KB
/// `destination.service.host`. Before: every value was kept whole in several metric
/// families (RSS 720 MB) and the next scrape built one 7.4 GB string and aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4_huge_label_values_stay_bounded_and_the_scrape_streams() {
    let samples = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/default"));
    let server = ServerProcess::start(MIXER, samples, &["--request-read-timeout", "2s"]);
    let mut client = MixerClient::connect(server.api_url()).await.unwrap();
    let filler = "h".repeat(900 * 1024);
    for i in 0..200 {
        let host = format!("{i:03}.{filler}");
        client
            .report(encode_report(
                GLOBAL_WORD_COUNT as u32,
                &[inbound_http_request(&host)],
            ))
            .await
            .unwrap_or_else(|e| panic!("report {i}: {e}"));
    }
    let truncated = wait_for_metric(&server, LABELS_TRUNCATED, &[], 200.0);
    let rss = server.rss_bytes();
    eprintln!("row4: RSS after 200 reports {} MiB", rss / MIB);
    assert!(rss < 150 * MIB, "RSS {} MiB after 200 reports", rss / MIB);
    assert!(truncated >= 200.0, "label values truncated: {truncated}");

    let started = Instant::now();
    let scrape = http::get_capped(
        &*server.prometheus,
        "/metrics",
        256 * MIB as usize,
        Duration::from_secs(30),
    )
    .expect("the scrape answers");
    let (status, body) = (scrape.status, scrape.body);
    let took = started.elapsed();
    let peak = server.peak_rss_bytes();
    eprintln!(
        "row4: scrape {} KiB in {took:?}; peak RSS {} MiB",
        body.len() / 1024,
        peak / MIB
    );
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("the exposition is UTF-8");
    // Five families of 200 series (four of them histograms), each label at most 1 KiB.
    assert!(
        text.len() < 32 * MIB as usize,
        "scrape of {} bytes",
        text.len()
    );
    assert!(
        metric_value(&text, "istio_requests_total", &[]).unwrap_or(0.0) >= 200.0,
        "{}",
        &text[..text.len().min(4096)]
    );
    assert!(peak < 300 * MIB, "peak RSS {} MiB", peak / MIB);
    assert!(server.rss_bytes() < 150 * MIB);

    // 40 scrapers that never read: a few render at a time, each turn freed when the write
    // timeout closes its connection, so memory stays bounded and scraping recovers.
    let stalled: Vec<std::net::TcpStream> = (0..40)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&server.prometheus).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            c
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recovered = (0..60).any(|_| {
        let answer = http::get_capped(
            &*server.prometheus,
            "/metrics",
            256 * MIB as usize,
            Duration::from_secs(30),
        );
        if answer.is_ok_and(|r| r.status == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
        false
    });
    let peak = server.peak_rss_bytes();
    eprintln!(
        "row4: {} stalled scrapers: a reading scrape answered: {recovered}; peak RSS {} MiB",
        stalled.len(),
        peak / MIB
    );
    assert!(recovered, "a reading scrape is answered again");
    assert!(peak < 300 * MIB, "peak RSS {} MiB", peak / MIB);
    drop(stalled);
}

const FULL_DISK_CONFIG: &str = r#"
apiVersion: "config.istio.io/v1alpha2"
kind: handler
metadata:
  name: fulldisk
  namespace: istio-system
spec:
  compiledAdapter: stdio
  params:
    outputAsJson: true
    logStream: FILE
    outputPath: /dev/full
---
apiVersion: "config.istio.io/v1alpha2"
kind: instance
metadata:
  name: accesslog
  namespace: istio-system
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    timestamp: request.time | timestamp("2020-01-01T00:00:00Z")
    variables:
      host: destination.service.host | ""
      method: request.method | ""
    monitored_resource_type: '"global"'
---
apiVersion: "config.istio.io/v1alpha2"
kind: rule
metadata:
  name: fulldisk
  namespace: istio-system
spec:
  actions:
  - handler: fulldisk
    instances:
    - accesslog
"#;

/// Row 16: a `FILE` access log on a full disk (`/dev/full`: every write fails with
/// ENOSPC). Before: every line was lost and `..._dropped_lines_total` stayed 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row16_lines_lost_to_a_full_disk_are_counted() {
    let dir = config_dir(&[("fulldisk.yaml", FULL_DISK_CONFIG)]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut client = MixerClient::connect(server.api_url()).await.unwrap();
    const REPORTS: usize = 50;
    const PER_REPORT: usize = 10;
    for i in 0..REPORTS {
        let batch: Vec<_> = (0..PER_REPORT)
            .map(|j| inbound_http_request(&format!("svc-{i}-{j}.default.svc.cluster.local")))
            .collect();
        client
            .report(encode_report(GLOBAL_WORD_COUNT as u32, &batch))
            .await
            .unwrap_or_else(|e| panic!("report {i}: {e}"));
    }
    let lines = (REPORTS * PER_REPORT) as f64;
    let handler = r#"handler="fulldisk.istio-system""#;
    let dropped = wait_for_metric(&server, STDIO_DROPPED, &[handler], lines);
    assert_eq!(dropped, lines, "{}", server.log());

    // Still serving, and the failure is in the log once, not once per line.
    let status = server
        .monitoring_get("/healthz", Duration::from_secs(10))
        .expect("healthz answers")
        .status;
    assert_eq!(status, 200);
    client
        .report(encode_report(
            GLOBAL_WORD_COUNT as u32,
            &[inbound_http_request("late")],
        ))
        .await
        .expect("reports are still accepted");
    let dropped = wait_for_metric(&server, STDIO_DROPPED, &[handler], lines + 1.0);
    assert_eq!(dropped, lines + 1.0);
    let log = server.log();
    let warnings = log.lines().filter(|l| l.contains("No space left")).count();
    eprintln!("row16: {dropped} lines counted as dropped, {warnings} warning(s) logged");
    assert!((1..=5).contains(&warnings), "{warnings} warnings:\n{log}");
}
