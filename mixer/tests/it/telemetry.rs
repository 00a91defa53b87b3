//! End to end: `mixer server` on `samples/default`, Envoy-style Report batches for HTTP and
//! TCP traffic, the Prometheus exposition scraped over real HTTP and asserted against
//! Istio's documented output, and the access log read from the server's stdout.
//!
//! Set `MIXER_SCRAPE_OUT=<file>` to keep the scrape (CI checks it with `promtool`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mixer::attrs::{GLOBAL_WORD_COUNT, encode_report};
use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use test_support::envoy::{bookinfo_http_request, bookinfo_tcp_event};
use test_support::http;

use crate::common::{MIXER, ServerProcess};

/// The server process and the lines of its stdout (the access log).
struct Server {
    process: ServerProcess,
    stdout: mpsc::Receiver<String>,
}

fn start(config: &Path) -> Server {
    let mut process = ServerProcess::start_with(MIXER, config, &[], Stdio::piped());
    let stdout = process.child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Server {
        process,
        stdout: rx,
    }
}

fn scrape(addr: &str) -> String {
    let response = http::get(addr, "/metrics", Duration::from_secs(30)).unwrap();
    assert!(response.head.starts_with("HTTP/1.1 200"), "{response:?}");
    response.text()
}

const HTTP_LABELS: &str = r#"connection_security_policy="mutual_tls",destination_app="reviews",destination_principal="cluster.local/ns/default/sa/bookinfo-reviews",destination_service="reviews.default.svc.cluster.local",destination_service_name="reviews",destination_service_namespace="default",destination_version="v1",destination_workload="reviews-v1",destination_workload_namespace="default",permissive_response_code="none",permissive_response_policyid="none",reporter="destination",request_protocol="http",response_code="200",response_flags="-",source_app="productpage",source_principal="cluster.local/ns/default/sa/bookinfo-productpage",source_version="v1",source_workload="productpage-v1",source_workload_namespace="default""#;

#[tokio::test]
async fn default_samples_produce_istio_metrics_and_access_log() {
    let samples = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/default"));
    let server = start(samples);
    let mut client = MixerClient::connect(server.process.api_url())
        .await
        .unwrap();

    // One Envoy batch: two inbound HTTP requests, one outbound, and TCP events.
    let batch = vec![
        bookinfo_http_request("inbound"),
        bookinfo_http_request("inbound"),
        bookinfo_http_request("outbound"),
        bookinfo_tcp_event("open", 0, 0),
        bookinfo_tcp_event("continue", 100, 200),
        bookinfo_tcp_event("close", 50, 25),
    ];
    client
        .report(encode_report(GLOBAL_WORD_COUNT as u32, &batch))
        .await
        .expect("report accepted");

    let text = scrape(&server.process.prometheus);
    if let Ok(path) = std::env::var("MIXER_SCRAPE_OUT") {
        std::fs::write(path, &text).unwrap();
    }

    // Families, with HELP before TYPE.
    for (family, kind) in [
        ("istio_request_bytes", "histogram"),
        ("istio_request_duration_seconds", "histogram"),
        ("istio_requests_total", "counter"),
        ("istio_response_bytes", "histogram"),
        ("istio_tcp_connections_closed_total", "counter"),
        ("istio_tcp_connections_opened_total", "counter"),
        ("istio_tcp_received_bytes_total", "counter"),
        ("istio_tcp_sent_bytes_total", "counter"),
    ] {
        let help = format!("# HELP {family} {}", family.trim_start_matches("istio_"));
        let ty = format!("# TYPE {family} {kind}");
        let (h, t) = (text.find(&help), text.find(&ty));
        assert!(h.is_some() && t.is_some() && h < t, "{family}:\n{text}");
    }

    // The exact series of Istio's documented example scrape.
    assert!(
        text.contains(&format!("istio_requests_total{{{HTTP_LABELS}}} 2\n")),
        "{text}"
    );
    let outbound = HTTP_LABELS
        .replace(
            "connection_security_policy=\"mutual_tls\"",
            "connection_security_policy=\"unknown\"",
        )
        .replace("reporter=\"destination\"", "reporter=\"source\"");
    assert!(
        text.contains(&format!("istio_requests_total{{{outbound}}} 1\n")),
        "{text}"
    );
    for (le, n) in [
        ("0.005", 0),
        ("0.01", 0),
        ("0.025", 2),
        ("0.05", 2),
        ("10", 2),
        ("+Inf", 2),
    ] {
        let line =
            format!("istio_request_duration_seconds_bucket{{{HTTP_LABELS},le=\"{le}\"}} {n}\n");
        assert!(text.contains(&line), "missing {line}\n{text}");
    }
    assert!(
        text.contains(&format!(
            "istio_request_duration_seconds_sum{{{HTTP_LABELS}}} 0.024\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "istio_request_duration_seconds_count{{{HTTP_LABELS}}} 2\n"
        )),
        "{text}"
    );
    for (le, n) in [
        ("1", 0),
        ("100", 0),
        ("1000", 2),
        ("1e+06", 2),
        ("1e+08", 2),
    ] {
        let line = format!("istio_response_bytes_bucket{{{HTTP_LABELS},le=\"{le}\"}} {n}\n");
        assert!(text.contains(&line), "missing {line}\n{text}");
    }
    assert!(
        text.contains(&format!("istio_response_bytes_sum{{{HTTP_LABELS}}} 590\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "istio_request_bytes_bucket{{{HTTP_LABELS},le=\"1\"}} 2\n"
        )),
        "{text}"
    );

    // TCP: bytes add up; opens and closes are counted once each.
    let tcp_line = |family: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{family}{{")))
            .unwrap_or_else(|| panic!("no {family} series:\n{text}"))
            .to_owned()
    };
    assert!(tcp_line("istio_tcp_sent_bytes_total").ends_with(" 150"));
    assert!(tcp_line("istio_tcp_received_bytes_total").ends_with(" 225"));
    assert!(tcp_line("istio_tcp_connections_opened_total").ends_with(" 1"));
    assert!(tcp_line("istio_tcp_connections_closed_total").ends_with(" 1"));
    let sent = tcp_line("istio_tcp_sent_bytes_total");
    assert!(
        sent.contains("destination_service=\"mongodb.default.svc.cluster.local\""),
        "{sent}"
    );
    assert!(sent.contains("source_workload=\"ratings-v1\""), "{sent}");
    assert!(
        !sent.contains("request_protocol"),
        "TCP families have 16 labels: {sent}"
    );

    // Access log: one JSON line per HTTP request and per TCP event, on stdout.
    let mut http_lines = Vec::new();
    let mut tcp_lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_lines.len() < 3 || tcp_lines.len() < 3 {
        let line = server
            .stdout
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("access log lines arrive within the flush interval");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match v["instance"].as_str() {
            Some("accesslog.instance.istio-system") => http_lines.push(v),
            Some("tcpaccesslog.instance.istio-system") => tcp_lines.push(v),
            other => panic!("unexpected instance {other:?} in {line}"),
        }
    }
    let first = &http_lines[0];
    assert_eq!(first["level"], "info");
    assert_eq!(first["responseCode"], 200);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["url"], "/reviews/0");
    assert_eq!(first["sourceWorkload"], "productpage-v1");
    assert_eq!(first["destinationWorkload"], "reviews-v1");
    assert_eq!(first["latency"], "12ms");
    assert_eq!(first["responseSize"], 295);
    assert!(
        first["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("2020-09-13T12:26:40")),
        "{first}"
    );
    assert_eq!(tcp_lines[1]["sentBytes"], 100);
    assert_eq!(tcp_lines[2]["connectionEvent"], "close");
}
