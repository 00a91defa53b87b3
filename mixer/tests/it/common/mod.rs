//! Helpers that need mixer's own types: an in-process server on loopback, a tonic client,
//! Check requests encoded as Envoy encodes them. Protocol-level helpers (server processes,
//! HTTP, config directories, attribute sets) come from the `test-support` crate.

pub mod raw;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use expr_lang::Value;
use mixer::attrs::{AttributeEncoder, GLOBAL_WORD_COUNT};
use mixer::runtime::PolicyErrorMode;
use mixer::server::{RunningServer, ServerOptions, start};
use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use mixer::wire::pb::istio::mixer::v1::{CheckRequest, CheckResponse, check_request};
use tonic::transport::Channel;

pub use test_support::config::{ATTRIBUTES_YAML, config_dir, write_file};
pub use test_support::envoy::{map, s};
pub use test_support::process::ServerProcess;

/// The `mixer` binary of this build, for [`ServerProcess`].
pub const MIXER: &str = env!("CARGO_BIN_EXE_mixer");

/// A command running the `mixer` binary of this build.
pub fn mixer_command() -> Command {
    Command::new(MIXER)
}

/// Loopback options with free ports and quick reloads, serving `dir`.
pub fn loopback_options(dir: &Path, mode: PolicyErrorMode) -> ServerOptions {
    let mut options = ServerOptions::new(vec![dir.to_path_buf()]);
    options.address = "127.0.0.1:0".parse().unwrap();
    options.monitoring_address = "127.0.0.1:0".parse().unwrap();
    options.prometheus_address = "127.0.0.1:0".parse().unwrap();
    options.policy_errors = mode;
    options.reload_poll = Duration::from_millis(25);
    options.reload_debounce = Duration::from_millis(75);
    options
}

/// Starts a server on loopback (free ports) over `dir`, with quick reloads.
pub async fn start_server(dir: &Path, mode: PolicyErrorMode) -> RunningServer {
    start(loopback_options(dir, mode))
        .await
        .expect("server starts")
}

pub async fn client(server: &RunningServer) -> MixerClient<Channel> {
    MixerClient::connect(format!("http://{}", server.api_address))
        .await
        .expect("connects")
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

/// GETs a monitoring endpoint of an in-process server over real HTTP: (status, body).
pub async fn http_get(server: &RunningServer, path: &str) -> (u16, String) {
    http_get_at(server.monitoring_address, path).await
}

/// GETs `path` from `addr` over real HTTP: (status, body). Off the async workers: the
/// client blocks, and the server it asks may run on this test's runtime.
pub async fn http_get_at(addr: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_owned();
    let response = tokio::task::spawn_blocking(move || {
        test_support::http::get(addr, &path, Duration::from_secs(30))
    })
    .await
    .expect("the GET does not panic")
    .unwrap_or_else(|e| panic!("GET {addr}: {e}"));
    (response.status, response.text())
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
