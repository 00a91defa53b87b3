//! `mixer server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use mixer::api::envoy::accesslog::AccessLogLimits;
use mixer::api::envoy::authz::DeduplicationId;
use mixer::api::envoy::otlp_logs::OtlpLogsLimits;
use mixer::api::envoy::ratelimit::RateLimitLimits;
use mixer::api::shed::{SheddingMode, SheddingOptions};
use mixer::attrs::DecodeLimits;
use mixer::config::kubernetes::KubernetesOptions;
use mixer::net::ConnectionLimits;
use mixer::runtime::PolicyErrorMode;
use mixer::server::{ServerOptions, start};

/// The server's defaults: every flag's default comes from here.
fn defaults() -> ServerOptions {
    ServerOptions::default()
}

/// `--policy-errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PolicyErrors {
    /// As Go Mixer: the rule does not apply / the Check RPC fails.
    Mixer,
    /// Deny.
    Closed,
}

impl From<PolicyErrorMode> for PolicyErrors {
    fn from(mode: PolicyErrorMode) -> PolicyErrors {
        match mode {
            PolicyErrorMode::Mixer => PolicyErrors::Mixer,
            PolicyErrorMode::Closed => PolicyErrors::Closed,
        }
    }
}

impl From<PolicyErrors> for PolicyErrorMode {
    fn from(flag: PolicyErrors) -> PolicyErrorMode {
        match flag {
            PolicyErrors::Mixer => PolicyErrorMode::Mixer,
            PolicyErrors::Closed => PolicyErrorMode::Closed,
        }
    }
}

/// `--load-shedding-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Shedding {
    /// Never shed.
    Disabled,
    /// Count and log what would be shed, but serve it.
    Logonly,
    /// Shed.
    Enforce,
}

impl From<SheddingMode> for Shedding {
    fn from(mode: SheddingMode) -> Shedding {
        match mode {
            SheddingMode::Disabled => Shedding::Disabled,
            SheddingMode::Logonly => Shedding::Logonly,
            SheddingMode::Enforce => Shedding::Enforce,
        }
    }
}

impl From<Shedding> for SheddingMode {
    fn from(flag: Shedding) -> SheddingMode {
        match flag {
            Shedding::Disabled => SheddingMode::Disabled,
            Shedding::Logonly => SheddingMode::Logonly,
            Shedding::Enforce => SheddingMode::Enforce,
        }
    }
}

/// `--ext-authz-deduplication-id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DedupFlag {
    /// The request's `x-request-id` header when present, else Envoy's stream id.
    RequestId,
    /// Envoy's stream id only.
    StreamId,
}

impl From<DeduplicationId> for DedupFlag {
    fn from(id: DeduplicationId) -> DedupFlag {
        match id {
            DeduplicationId::RequestId => DedupFlag::RequestId,
            DeduplicationId::StreamId => DedupFlag::StreamId,
        }
    }
}

impl From<DedupFlag> for DeduplicationId {
    fn from(flag: DedupFlag) -> DeduplicationId {
        match flag {
            DedupFlag::RequestId => DeduplicationId::RequestId,
            DedupFlag::StreamId => DeduplicationId::StreamId,
        }
    }
}

/// A duration flag, written as Go writes durations (`500ms`, `1m30s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GoDuration(Duration);

impl std::str::FromStr for GoDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<GoDuration, String> {
        parse_duration(s).map(GoDuration)
    }
}

impl std::fmt::Display for GoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nanos = i64::try_from(self.0.as_nanos()).unwrap_or(i64::MAX);
        f.write_str(&expr_lang::golib::duration::format_duration(nanos))
    }
}

/// On SIGTERM, how long shutdown may take.
const SHUTDOWN_TIMEOUT: GoDuration = GoDuration(Duration::from_secs(10));

#[derive(Args)]
pub struct ServerArgs {
    /// A directory of configuration YAML (read recursively; repeatable).
    #[arg(long = "config-dir", value_name = "DIR")]
    config_dirs: Vec<PathBuf>,
    /// A config store: `fs:///path/to/dir` (as --config-dir) or `k8s://` (the Kubernetes
    /// API; `k8s:///path/to/kubeconfig` names a kubeconfig). Repeatable; Istio's
    /// --configStoreURL is the same flag.
    #[arg(
        long = "config-store-url",
        alias = "configStoreURL",
        value_name = "URL"
    )]
    config_store_url: Vec<String>,
    /// With k8s://: the kubeconfig to use (else $KUBECONFIG or ~/.kube/config, else the
    /// in-cluster service account).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// With k8s://: watch configuration in this namespace only (default: all namespaces).
    #[arg(long = "config-namespace", value_name = "NS")]
    config_namespace: Option<String>,
    /// With k8s://: how long the start waits for the initial list of every kind before
    /// serving what it has (/readyz stays unready until the list completes).
    #[arg(long = "config-wait-timeout", alias = "configWaitTimeout", default_value_t = GoDuration(defaults().config_wait_timeout))]
    config_wait_timeout: GoDuration,
    /// With k8s://: the largest `spec` of one Kubernetes object, in bytes of JSON (a larger
    /// object is a configuration error naming it; the last good configuration keeps serving).
    #[arg(long = "config-max-object-bytes", default_value_t = KubernetesOptions::default().max_object_bytes)]
    config_max_object_bytes: usize,
    /// Address of the gRPC API (port 0 picks a free port).
    #[arg(long, default_value_t = defaults().address.to_string())]
    address: String,
    /// Address of the monitoring endpoints (/metrics, /healthz, /readyz, /version, /debug/config).
    #[arg(long = "monitoring-address", default_value_t = defaults().monitoring_address.to_string())]
    monitoring_address: String,
    /// Address where metrics published by prometheus handlers are served (/metrics).
    #[arg(long = "prometheus-address", default_value_t = defaults().prometheus_address.to_string())]
    prometheus_address: String,
    /// Rules in this namespace apply to every request.
    #[arg(
        long = "default-namespace",
        alias = "configDefaultNamespace",
        default_value_t = defaults().default_namespace
    )]
    default_namespace: String,
    /// Largest gRPC message accepted, in bytes (over it: RESOURCE_EXHAUSTED as soon as the
    /// message's length prefix arrives).
    #[arg(long = "max-message-size", alias = "maxMessageSize", default_value_t = defaults().max_message_size)]
    max_message_size: usize,
    /// What a rule whose match fails to evaluate, or a Check instance that fails to build,
    /// does: `mixer` (as Go Mixer: the rule does not apply / the Check RPC fails) or
    /// `closed` (deny).
    #[arg(long = "policy-errors", value_enum, default_value_t = defaults().policy_errors.into())]
    policy_errors: PolicyErrors,
    /// How often config directories are checked for changes, e.g. 500ms.
    #[arg(long = "reload-poll-interval", default_value_t = GoDuration(defaults().reload_poll))]
    reload_poll: GoDuration,
    /// How long config files must rest unchanged before they are applied (twice as long
    /// for a change that removes every rule), e.g. 1s.
    #[arg(long = "reload-debounce", default_value_t = GoDuration(defaults().reload_debounce))]
    reload_debounce: GoDuration,
    /// Decisions the server-side Check cache may hold (0 disables it).
    #[arg(long = "check-cache-size", default_value_t = defaults().check_cache_size)]
    check_cache_size: u64,
    /// Load shedding: disabled, logonly (count what would be shed) or enforce.
    #[arg(
        long = "load-shedding-mode",
        alias = "loadsheddingMode",
        value_enum,
        default_value_t = defaults().shedding.mode.into()
    )]
    load_shedding_mode: Shedding,
    /// Load shedding: calls per second admitted (a Report counts one per attribute set); 0 = no limit.
    #[arg(
        long = "max-requests-per-second",
        alias = "maxRequestsPerSecond",
        default_value_t = defaults().shedding.max_requests_per_second
    )]
    max_requests_per_second: f64,
    /// Load shedding: how many calls may arrive at once above the rate (0: one second's worth).
    #[arg(long = "burst-size", alias = "burstSize", default_value_t = defaults().shedding.burst_size)]
    burst_size: u32,
    /// Load shedding: shed while the average call latency is above this (e.g. 100ms); 0 = off.
    #[arg(long = "average-latency-threshold", alias = "averageLatencyThreshold", default_value_t = GoDuration(defaults().shedding.average_latency_threshold))]
    average_latency_threshold: GoDuration,
    /// Load shedding: half-life of the latency average.
    #[arg(long = "latency-sample-halflife", alias = "latencySampleHalflife", default_value_t = GoDuration(defaults().shedding.latency_halflife))]
    latency_halflife: GoDuration,
    /// Limit: attributes in one attribute set (for Report DELTA_ENCODING, after the set's
    /// changes apply). Over it: RESOURCE_EXHAUSTED for a Check, the set for a Report.
    #[arg(long = "max-attributes-per-set", default_value_t = defaults().decode_limits.max_attributes_per_set)]
    max_attributes_per_set: usize,
    /// Limit: entries in one string map attribute (request headers, labels; for ext_authz
    /// also query parameters and context extensions).
    #[arg(long = "max-string-map-entries", default_value_t = defaults().decode_limits.max_string_map_entries)]
    max_string_map_entries: usize,
    /// What Envoy ext_authz quota charges are deduplicated on: `stream-id` (Envoy's stream
    /// id only, which no client can choose) or `request-id` (the `x-request-id` header,
    /// else Envoy's stream id; a client whose own x-request-id Envoy keeps can repeat one
    /// within the quota's deduplication window).
    #[arg(long = "ext-authz-deduplication-id", value_enum, default_value_t = defaults().ext_authz_deduplication_id.into())]
    ext_authz_deduplication_id: DedupFlag,
    /// Limit: attribute sets in one Report (checked before it is decoded).
    #[arg(long = "max-report-attribute-sets", default_value_t = defaults().decode_limits.max_report_sets)]
    max_report_sets: usize,
    /// Limit: decoded attribute bytes of one Report, summed over its sets (a DELTA_ENCODING
    /// set counts everything it inherits).
    #[arg(long = "max-report-decoded-bytes", default_value_t = defaults().decode_limits.max_report_decoded_bytes)]
    max_report_decoded_bytes: usize,
    /// Limit: descriptors in one Envoy rate-limit call (each is one quota allocation).
    #[arg(long = "max-ratelimit-descriptors", default_value_t = defaults().ratelimit.max_descriptors)]
    max_ratelimit_descriptors: usize,
    /// Limit: entries in one descriptor of an Envoy rate-limit call.
    #[arg(long = "max-ratelimit-descriptor-entries", default_value_t = defaults().ratelimit.max_entries)]
    max_ratelimit_descriptor_entries: usize,
    /// Limit: Envoy access-log streams (StreamAccessLogs) open at once; over it a new
    /// stream gets RESOURCE_EXHAUSTED.
    #[arg(long = "max-access-log-streams", default_value_t = defaults().access_log.max_streams)]
    max_access_log_streams: usize,
    /// Limit: entries in one access-log message (checked before it is decoded); over it
    /// the stream ends with RESOURCE_EXHAUSTED.
    #[arg(long = "max-access-log-entries", default_value_t = defaults().access_log.max_entries)]
    max_access_log_entries: usize,
    /// Limit: encoded bytes of an access-log stream's identifier (Envoy's node).
    #[arg(long = "max-access-log-identifier-bytes", default_value_t = defaults().access_log.max_identifier_bytes)]
    max_access_log_identifier_bytes: usize,
    /// Limit: log records in one OTLP logs Export (checked before it is decoded).
    #[arg(long = "max-otlp-log-records", default_value_t = defaults().otlp_logs.max_records)]
    max_otlp_log_records: usize,
    /// Limit: connections open at once, per listener (gRPC, monitoring, Prometheus); more
    /// wait in the kernel's backlog.
    #[arg(long = "max-connections", default_value_t = defaults().connections.max_connections)]
    max_connections: usize,
    /// Limit: a connection whose peer sent nothing for this long is closed, e.g. 5m.
    #[arg(long = "connection-idle-timeout", default_value_t = GoDuration(defaults().connections.idle_timeout))]
    connection_idle_timeout: GoDuration,
    /// Limit: HTTP request headers, and a gRPC request's message, must arrive within this
    /// (for a client stream such as the access log: each message, from its first byte).
    #[arg(long = "request-read-timeout", default_value_t = GoDuration(defaults().connections.request_read_timeout))]
    request_read_timeout: GoDuration,
    /// Limit: bytes of unfinished gRPC requests one connection may have buffered.
    #[arg(long = "max-connection-buffered-bytes", default_value_t = defaults().connections.max_buffered_bytes)]
    max_connection_buffered_bytes: usize,
    /// Limit: gRPC calls in progress at once on one connection (HTTP/2 streams).
    #[arg(long = "max-concurrent-streams", default_value_t = defaults().connections.max_concurrent_streams)]
    max_concurrent_streams: u32,
    /// HTTP/2 keepalive: ping a connection this often ...
    #[arg(long = "http2-keepalive-interval", default_value_t = GoDuration(defaults().connections.keepalive_interval))]
    http2_keepalive_interval: GoDuration,
    /// ... and close it when the ping is not answered within this.
    #[arg(long = "http2-keepalive-timeout", default_value_t = GoDuration(defaults().connections.keepalive_timeout))]
    http2_keepalive_timeout: GoDuration,
    /// Limit: label values of metrics published by prometheus handlers longer than this
    /// are cut (at a character boundary) and counted; 0 = no limit.
    #[arg(long = "prometheus-max-label-value-length", default_value_t = defaults().exposition.max_label_value_bytes)]
    prometheus_max_label_value_length: usize,
    /// Limit: a Prometheus scrape stops (between series, with a comment saying so) before
    /// it exceeds this many bytes; 0 = no limit.
    #[arg(long = "prometheus-max-exposition-bytes", default_value_t = defaults().exposition.max_exposition_bytes)]
    prometheus_max_exposition_bytes: usize,
    /// kubernetesenv handlers watch pods, replicasets and deployments of this namespace
    /// only (default: every namespace).
    #[arg(long = "kubernetesenv-namespace", value_name = "NAMESPACE")]
    kubernetesenv_namespace: Option<String>,
    /// Limit: the most pods a kubernetesenv cache holds (and, each, the most replicasets
    /// and deployments); objects over it are not cached, counted and warned about.
    #[arg(long = "kubernetesenv-max-pods", default_value_t = defaults().kubernetesenv.max_pods)]
    kubernetesenv_max_pods: usize,
    /// On SIGTERM: how long to finish in-flight calls and flush adapters before exiting
    /// with status 1 and a log line saying what did not finish.
    #[arg(long = "shutdown-timeout", default_value_t = SHUTDOWN_TIMEOUT)]
    shutdown_timeout: GoDuration,
    /// Once every listener is bound and the first configuration load is done, write the
    /// bound addresses and the process id here as JSON:
    /// `{"api": "127.0.0.1:9091", "monitoring": ..., "prometheus": ..., "pid": N}`.
    #[arg(long = "ready-file", value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Log filter (`info`, `debug`, `mixer=debug,warn`, ...); RUST_LOG also works.
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    expr_lang::golib::duration::parse_duration(s)
        .and_then(|n| u64::try_from(n).ok())
        .map(Duration::from_nanos)
        .ok_or_else(|| format!("{s:?} is not a duration such as 500ms or 2s"))
}

/// A config store named by URL.
#[derive(Debug, PartialEq, Eq)]
enum Store {
    Dir(PathBuf),
    /// `k8s://`, with the kubeconfig path of `k8s:///path` if given.
    Kubernetes(Option<PathBuf>),
}

/// `fs:///abs/dir` or `fs:/abs/dir` → a directory; `k8s://[/kubeconfig]` → Kubernetes.
fn parse_store_url(url: &str) -> Result<Store> {
    if let Some(rest) = url.strip_prefix("k8s://") {
        return Ok(Store::Kubernetes(
            (!rest.is_empty()).then(|| PathBuf::from(rest)),
        ));
    }
    store_url_path(url).map(Store::Dir)
}

/// `fs:///abs/dir` or `fs:/abs/dir` → `/abs/dir`.
fn store_url_path(url: &str) -> Result<PathBuf> {
    let Some(rest) = url.strip_prefix("fs:") else {
        bail!(
            "--config-store-url {url:?}: only fs:// and k8s:// stores are supported (e.g. fs:///etc/mixer/config)"
        );
    };
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if !path.starts_with('/') {
        bail!("--config-store-url {url:?}: use an absolute path, e.g. fs:///etc/mixer/config");
    }
    Ok(PathBuf::from(path))
}

fn parse_address(flag: &str, s: &str) -> Result<SocketAddr> {
    let s = s.strip_prefix("tcp://").unwrap_or(s);
    let s = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    s.parse()
        .with_context(|| format!("{flag} {s:?}: expected host:port, e.g. 0.0.0.0:9091"))
}

pub fn run(args: ServerArgs) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .context("--log-level")?;
    // Colours only for a person at a terminal, not in files and log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();

    let mut dirs = args.config_dirs;
    let mut kubernetes = None;
    for url in &args.config_store_url {
        match parse_store_url(url)? {
            Store::Dir(dir) => dirs.push(dir),
            Store::Kubernetes(kubeconfig) => {
                kubernetes = Some(KubernetesOptions {
                    kubeconfig: args.kubeconfig.clone().or(kubeconfig),
                    namespace: args.config_namespace.clone(),
                    max_object_bytes: args.config_max_object_bytes,
                });
            }
        }
    }
    if dirs.is_empty() && kubernetes.is_none() {
        bail!(
            "no configuration: give --config-dir DIR (or --config-store-url fs:///DIR, or --config-store-url k8s://)"
        );
    }
    let mut options = ServerOptions::new(dirs);
    options.kubernetes = kubernetes;
    options.config_wait_timeout = args.config_wait_timeout.0;
    options.address = parse_address("--address", &args.address)?;
    options.monitoring_address = parse_address("--monitoring-address", &args.monitoring_address)?;
    options.prometheus_address = parse_address("--prometheus-address", &args.prometheus_address)?;
    options.default_namespace = args.default_namespace;
    options.max_message_size = args.max_message_size;
    options.policy_errors = args.policy_errors.into();
    options.reload_poll = args.reload_poll.0;
    options.reload_debounce = args.reload_debounce.0;
    options.check_cache_size = args.check_cache_size;
    options.decode_limits = DecodeLimits {
        max_attributes_per_set: args.max_attributes_per_set,
        max_string_map_entries: args.max_string_map_entries,
        max_report_sets: args.max_report_sets,
        max_report_decoded_bytes: args.max_report_decoded_bytes,
    };
    options.ratelimit = RateLimitLimits {
        max_descriptors: args.max_ratelimit_descriptors,
        max_entries: args.max_ratelimit_descriptor_entries,
    };
    options.access_log = AccessLogLimits {
        max_streams: args.max_access_log_streams,
        max_entries: args.max_access_log_entries,
        max_identifier_bytes: args.max_access_log_identifier_bytes,
    };
    options.otlp_logs = OtlpLogsLimits {
        max_records: args.max_otlp_log_records,
        max_attributes: args.max_attributes_per_set,
    };
    options.ext_authz_deduplication_id = args.ext_authz_deduplication_id.into();
    options.connections = ConnectionLimits {
        max_connections: args.max_connections,
        idle_timeout: args.connection_idle_timeout.0,
        request_read_timeout: args.request_read_timeout.0,
        max_buffered_bytes: args.max_connection_buffered_bytes,
        keepalive_interval: args.http2_keepalive_interval.0,
        keepalive_timeout: args.http2_keepalive_timeout.0,
        max_concurrent_streams: args.max_concurrent_streams,
    };
    options.exposition = adapters::prometheus::ExpositionLimits {
        max_label_value_bytes: args.prometheus_max_label_value_length,
        max_exposition_bytes: args.prometheus_max_exposition_bytes,
    };
    options.kubernetesenv =
        kubernetesenv_options(args.kubernetesenv_namespace, args.kubernetesenv_max_pods)?;
    options.ready_file = args.ready_file;
    let shutdown_timeout = args.shutdown_timeout.0;
    options.shedding = SheddingOptions {
        mode: args.load_shedding_mode.into(),
        max_requests_per_second: args.max_requests_per_second,
        burst_size: args.burst_size,
        average_latency_threshold: args.average_latency_threshold.0,
        latency_halflife: args.latency_halflife.0,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let server = start(options).await?;
        wait_for_signal().await;
        tracing::info!("Shutting down: finishing in-flight calls and flushing adapters.");
        let phase = server.shutdown_phase();
        match tokio::time::timeout(shutdown_timeout, server.shutdown()).await {
            Ok(done) => {
                done?;
                tracing::info!("Stopped.");
                Ok(ExitCode::SUCCESS)
            }
            Err(_) => {
                let unfinished = phase.lock().map(|p| p.clone()).unwrap_or_default();
                tracing::error!(
                    timeout = ?shutdown_timeout,
                    unfinished = %unfinished,
                    "Shutdown did not finish within --shutdown-timeout; exiting with status 1."
                );
                // Not through the runtime's drop: it would wait for the stuck work.
                std::process::exit(1)
            }
        }
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The kubernetesenv flags, the namespace checked as a Kubernetes name.
fn kubernetesenv_options(
    namespace: Option<String>,
    max_pods: usize,
) -> Result<adapters::kubernetesenv::Options> {
    if let Some(ns) = &namespace
        && !adapters::kubernetesenv::config::is_namespace_name(ns)
    {
        bail!("--kubernetesenv-namespace {ns:?} is not a valid namespace name");
    }
    Ok(adapters::kubernetesenv::Options {
        namespace,
        max_pods,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_and_addresses() {
        assert_eq!(
            store_url_path("fs:///etc/x").unwrap(),
            PathBuf::from("/etc/x")
        );
        assert_eq!(
            store_url_path("fs:/etc/x").unwrap(),
            PathBuf::from("/etc/x")
        );
        assert!(store_url_path("k8s://").is_err());
        assert_eq!(parse_store_url("k8s://").unwrap(), Store::Kubernetes(None));
        assert_eq!(
            parse_store_url("k8s:///etc/kubeconfig").unwrap(),
            Store::Kubernetes(Some(PathBuf::from("/etc/kubeconfig")))
        );
        assert_eq!(
            parse_store_url("fs:///etc/x").unwrap(),
            Store::Dir(PathBuf::from("/etc/x"))
        );
        assert!(parse_store_url("mcp://galley:9901").is_err());
        assert!(store_url_path("fs://relative/x").is_err());
        assert_eq!(parse_address("--address", ":9091").unwrap().port(), 9091);
        assert_eq!(
            parse_address("--address", "tcp://127.0.0.1:0")
                .unwrap()
                .port(),
            0
        );
        assert!(parse_address("--address", "nope").is_err());
    }

    #[test]
    fn ratelimit_flags_are_the_ones_its_errors_name() {
        use clap::Args;
        use mixer::api::envoy::ratelimit::{MAX_DESCRIPTORS_FLAG, MAX_ENTRIES_FLAG};
        let cmd = ServerArgs::augment_args(clap::Command::new("server"));
        for flag in [MAX_DESCRIPTORS_FLAG, MAX_ENTRIES_FLAG] {
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_long() == flag.strip_prefix("--")),
                "{flag}"
            );
        }
    }

    #[test]
    fn duration_flags_show_and_read_go_durations() {
        for text in ["500ms", "1s", "5m0s", "0s"] {
            let d: GoDuration = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
        assert!("5 minutes".parse::<GoDuration>().is_err());
    }
}
