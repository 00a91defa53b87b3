//! Istio's rendered Helm default configurations (1.1, 1.4, 1.6) load unchanged and produce
//! the same Prometheus families on the same Report.

use std::collections::BTreeSet;
use std::path::Path;

use mixer::attrs::{GLOBAL_WORD_COUNT, encode_report};
use mixer::runtime::PolicyErrorMode;
use test_support::envoy::http_and_tcp_batch;

use crate::common::*;

async fn families_for(file: &str) -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/istio-configs")
        .join(file);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&src, dir.path().join("config.yaml")).unwrap();
    let server = start_server(dir.path(), PolicyErrorMode::Mixer).await;

    let (_, body) = http_get(&server, "/debug/config").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["last_load"]["applied"], true, "{file}: {body}");
    let diags = v["last_load"]["diagnostics"].as_array().unwrap();
    assert!(
        diags.iter().all(|d| d["severity"] != "error"),
        "{file} loads without errors: {body}"
    );
    assert!(
        diags.iter().any(|d| d["message"]
            .as_str()
            .unwrap_or("")
            .contains("no Kubernetes cluster is configured")),
        "{file}: the kubernetesenv handler is reported, not silently dropped: {body}"
    );

    let mut c = client(&server).await;
    c.report(encode_report(
        GLOBAL_WORD_COUNT as u32,
        &http_and_tcp_batch(),
    ))
    .await
    .unwrap_or_else(|e| panic!("{file}: report failed: {e}"));

    let (_, scrape) = http_get_at(server.prometheus_address, "/metrics").await;
    server.shutdown().await.unwrap();
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.to_owned())
        .collect()
}

#[tokio::test]
async fn helm_defaults_of_three_releases_produce_the_same_families() {
    let expected: BTreeSet<String> = [
        "istio_request_bytes histogram",
        "istio_request_duration_seconds histogram",
        "istio_requests_total counter",
        "istio_response_bytes histogram",
        "istio_tcp_connections_closed_total counter",
        "istio_tcp_connections_opened_total counter",
        "istio_tcp_received_bytes_total counter",
        "istio_tcp_sent_bytes_total counter",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for file in [
        "1.1.17/install__kubernetes__helm__istio__charts__mixer__templates__config-rendered.yaml",
        "1.4.10/install__kubernetes__helm__istio__charts__mixer__templates__config-rendered.yaml",
        "1.6.14/manifests__charts__istio-telemetry__mixer-telemetry__templates__config-rendered.yaml",
    ] {
        assert_eq!(families_for(file).await, expected, "{file}");
    }
}
