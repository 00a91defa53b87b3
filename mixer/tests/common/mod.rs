//! Shared test support: a real server on loopback, a tonic client, Envoy-style encoding.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use expr_lang::Value;
use mixer::attrs::{AttributeEncoder, GLOBAL_WORD_COUNT};
use mixer::runtime::PolicyErrorMode;
use mixer::server::{RunningServer, ServerOptions, start};
use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use mixer::wire::pb::istio::mixer::v1::{CheckRequest, CheckResponse, check_request};
use tonic::transport::Channel;

pub mod process;

pub const ATTRIBUTES_YAML: &str = include_str!("../../../samples/default/attributes.yaml");

/// Starts a server on loopback (free ports) over `dir`, with quick reloads.
pub async fn start_server(dir: &Path, mode: PolicyErrorMode) -> RunningServer {
    let mut options = ServerOptions::new(vec![dir.to_path_buf()]);
    options.address = "127.0.0.1:0".parse().unwrap();
    options.monitoring_address = "127.0.0.1:0".parse().unwrap();
    options.prometheus_address = "127.0.0.1:0".parse().unwrap();
    options.policy_errors = mode;
    options.reload_poll = Duration::from_millis(25);
    options.reload_debounce = Duration::from_millis(75);
    start(options).await.expect("server starts")
}

pub async fn client(server: &RunningServer) -> MixerClient<Channel> {
    MixerClient::connect(format!("http://{}", server.api_address))
        .await
        .expect("connects")
}

/// A config directory holding Istio's attribute manifests plus `files`.
pub fn config_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("attributes.yaml"), ATTRIBUTES_YAML).unwrap();
    for (name, body) in files {
        write_file(dir.path(), name, body);
    }
    dir
}

pub fn write_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    // Write-then-rename, as editors and ConfigMap updates do, so a poll never sees half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

pub fn s(v: &str) -> Value<'static> {
    Value::String(v.to_owned().into())
}

pub fn map(entries: &[(&str, &str)]) -> Value<'static> {
    let m: std::collections::BTreeMap<String, String> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Value::StringMap(expr_lang::StringMapRef::Owned(std::sync::Arc::new(m)))
}

/// A Check request encoded as Envoy does (global words where known, message words else).
pub fn check_request(
    attrs: &[(&str, Value<'static>)],
    quotas: &[(&str, i64, bool)],
) -> CheckRequest {
    let attrs: Vec<(String, Value<'static>)> = attrs
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let mut enc = AttributeEncoder::new(GLOBAL_WORD_COUNT as u32);
    let mut compressed = enc.encode(&attrs);
    compressed.words = enc.into_words();
    CheckRequest {
        attributes: Some(compressed),
        global_word_count: GLOBAL_WORD_COUNT as u32,
        deduplication_id: "test-dedup-1".to_owned(),
        quotas: quotas
            .iter()
            .map(|(n, a, b)| {
                (
                    n.to_string(),
                    check_request::QuotaParams {
                        amount: *a,
                        best_effort: *b,
                    },
                )
            })
            .collect(),
    }
}

pub async fn check(
    client: &mut MixerClient<Channel>,
    attrs: &[(&str, Value<'static>)],
) -> Result<CheckResponse, tonic::Status> {
    client
        .check(check_request(attrs, &[]))
        .await
        .map(|r| r.into_inner())
}

/// The precondition status (code, message) of a Check response.
pub fn status_of(r: &CheckResponse) -> (i32, String) {
    let s = r
        .precondition
        .as_ref()
        .and_then(|p| p.status.clone())
        .unwrap_or_default();
    (s.code, s.message)
}

/// GETs a monitoring endpoint over real HTTP.
pub async fn http_get(server: &RunningServer, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.monitoring_address)
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The value of a counter line in a Prometheus text scrape whose labels contain all of
/// `labels` (each `name="value"`).
pub fn metric_value(scrape: &str, name: &str, labels: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}
