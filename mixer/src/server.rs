//! The server process: gRPC API, monitoring HTTP, config watcher, graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::envoy::accesslog::{self, AccessLogLimits, AccessLogServer, AccessLogService};
use crate::api::envoy::authz::{AuthzService, DeduplicationId};
use crate::api::envoy::otlp_logs::{OtlpLogsLimits, OtlpLogsServer, OtlpLogsService};
use crate::api::envoy::ratelimit::{RateLimitFrontEnd, RateLimitLimits};
use crate::api::introspection;
use crate::api::mixer::MixerService;
use crate::api::shed::LoadShedder;
use crate::attrs::DecodeLimits;
use crate::config::kubernetes::{self, KubernetesError, KubernetesOptions, KubernetesSource};
use crate::config::watch::{Reaction, spawn_watcher};
use crate::metrics::Metrics;
use crate::monitoring;
use crate::net::{ConnectionLimits, RequestLimitsLayer};
use crate::runtime::{PolicyErrorMode, Runtime, RuntimeOptions};
use crate::wire::service::mixer_server::MixerServer;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;

/// Everything `mixer server` is configured with.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub config_dirs: Vec<PathBuf>,
    pub address: SocketAddr,
    pub monitoring_address: SocketAddr,
    /// Where metrics published by prometheus handlers are served (`/metrics`).
    pub prometheus_address: SocketAddr,
    pub default_namespace: String,
    pub max_message_size: usize,
    pub policy_errors: PolicyErrorMode,
    /// How often the config directories are checked for changes.
    pub reload_poll: Duration,
    /// How long changes must settle before a reload.
    pub reload_debounce: Duration,
    /// Decisions the server-side Check cache may hold; 0 disables it.
    pub check_cache_size: u64,
    /// Load shedding.
    pub shedding: crate::api::shed::SheddingOptions,
    /// What one request may make the server decode.
    pub decode_limits: DecodeLimits,
    /// What one Envoy rate-limit call may ask for.
    pub ratelimit: RateLimitLimits,
    /// What ext_authz quota allocations are deduplicated on.
    pub ext_authz_deduplication_id: DeduplicationId,
    /// Limits of every listener's connections.
    pub connections: ConnectionLimits,
    /// What the Envoy access-log front end accepts (streams, entries, identifier size).
    pub access_log: AccessLogLimits,
    /// What the OTLP logs front end accepts (records per request).
    pub otlp_logs: OtlpLogsLimits,
    /// Bounds of the Prometheus exposition (label value length, scrape size).
    pub exposition: adapters::prometheus::ExpositionLimits,
    /// What kubernetesenv caches watch and hold.
    pub kubernetesenv: adapters::kubernetesenv::Options,
    /// Where to write the bound addresses and the process id as JSON once the server is
    /// ready (see [`start`]), for scripts and tests that bind port 0.
    pub ready_file: Option<PathBuf>,
    /// Read configuration from the Kubernetes API too (`k8s://`).
    pub kubernetes: Option<KubernetesOptions>,
    /// With Kubernetes: how long the start waits for the initial list of every kind
    /// before serving what it has (not ready until the list completes).
    pub config_wait_timeout: Duration,
}

impl Default for ServerOptions {
    /// Mixer's defaults (`0.0.0.0:9091`, monitoring on `15014`); no configuration yet.
    fn default() -> ServerOptions {
        ServerOptions {
            config_dirs: Vec::new(),
            address: SocketAddr::from(([0, 0, 0, 0], 9091)),
            monitoring_address: SocketAddr::from(([0, 0, 0, 0], 15014)),
            prometheus_address: SocketAddr::from(([0, 0, 0, 0], 42422)),
            default_namespace: "istio-system".to_owned(),
            max_message_size: 1024 * 1024,
            policy_errors: PolicyErrorMode::Mixer,
            reload_poll: Duration::from_millis(500),
            reload_debounce: Duration::from_secs(1),
            check_cache_size: 10_000,
            shedding: crate::api::shed::SheddingOptions::default(),
            decode_limits: DecodeLimits::default(),
            ratelimit: RateLimitLimits::default(),
            ext_authz_deduplication_id: DeduplicationId::default(),
            connections: ConnectionLimits::default(),
            exposition: adapters::prometheus::ExpositionLimits::default(),
            access_log: AccessLogLimits::default(),
            otlp_logs: OtlpLogsLimits::default(),
            kubernetesenv: Default::default(),
            ready_file: None,
            kubernetes: None,
            config_wait_timeout: Duration::from_secs(120),
        }
    }
}

impl ServerOptions {
    /// The defaults, serving the configuration in `config_dirs`.
    pub fn new(config_dirs: Vec<PathBuf>) -> ServerOptions {
        ServerOptions {
            config_dirs,
            ..ServerOptions::default()
        }
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(String),
    #[error("cannot build the server reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Kubernetes(#[from] KubernetesError),
    #[error("cannot write the ready file {}: {source}", path.display())]
    ReadyFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A started server.
pub struct RunningServer {
    pub api_address: SocketAddr,
    pub monitoring_address: SocketAddr,
    pub prometheus_address: SocketAddr,
    pub runtime: Arc<Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    api: JoinHandle<Result<(), tonic::transport::Error>>,
    /// What shutdown is doing now, for a report when it does not finish in time.
    shutdown_phase: Arc<Mutex<String>>,
}

impl RunningServer {
    /// Stops accepting calls, lets in-flight ones finish, flushes adapters.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        let phase = self.shutdown_phase.clone();
        let set_phase = move |what: String| {
            if let Ok(mut p) = phase.lock() {
                *p = what;
            }
        };
        set_phase("finishing in-flight gRPC calls".to_owned());
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = self.api.await;
        for t in &self.tasks {
            t.abort();
        }
        // Off the async workers: a handler's flush can block (a full disk, a stdout pipe
        // nobody reads), and the caller's deadline must still fire.
        let runtime = self.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || {
            runtime.close_all_with(|name| set_phase(format!("flushing handler {name}")));
        })
        .await;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServerError::Serve(e.to_string())),
            Err(e) => Err(ServerError::Serve(e.to_string())),
        }
    }
}

async fn bind(address: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind { address, source })
}

impl RunningServer {
    /// What [`RunningServer::shutdown`] is doing now (readable while it runs).
    pub fn shutdown_phase(&self) -> Arc<Mutex<String>> {
        self.shutdown_phase.clone()
    }
}

/// Loads the configuration, binds the listeners and starts serving. With
/// [`ServerOptions::ready_file`], once every listener is bound and the first configuration
/// load is done, writes `{"api", "monitoring", "prometheus", "pid"}` there.
pub async fn start(options: ServerOptions) -> Result<RunningServer, ServerError> {
    let (runtime, resources) = new_runtime(&options);
    // Before any listener: a cluster that cannot be reached by configuration is an error
    // at once.
    let kubernetes = match &options.kubernetes {
        Some(kubernetes) => Some(KubernetesSource::start(kubernetes.clone()).await?),
        None => None,
    };
    let (monitoring_address, monitoring) = serve_listener(
        options.monitoring_address,
        &options,
        "monitoring",
        monitoring::router(runtime.clone()),
    )
    .await?;
    tracing::info!(address = %monitoring_address, "Monitoring endpoints listening (/metrics, /healthz, /readyz, /version, /debug/config).");
    let (prometheus_address, exposition) = serve_listener(
        options.prometheus_address,
        &options,
        "prometheus",
        exposition_router(resources.prometheus.clone()),
    )
    .await?;
    tracing::info!(address = %prometheus_address, "Prometheus exposition listening (/metrics).");
    let mut tasks = vec![monitoring, exposition];
    if let Some((source, watches)) = kubernetes {
        tasks.extend(watches);
        tasks.push(follow_kubernetes(&runtime, source, &options).await);
    }
    tasks.push(load_and_watch(&runtime, &options).await);

    let api = bind(options.address).await?;
    let api_address = api.local_addr().map_err(|source| ServerError::Bind {
        address: options.address,
        source,
    })?;
    // One shedder for every front end: overload is the server's, whichever API brings it.
    let shedder = Arc::new(LoadShedder::new(
        options.shedding.clone(),
        runtime.metrics.shed.clone(),
    ));
    crate::wire::codec::set_max_report_sets(options.decode_limits.max_report_sets);
    let service = MixerServer::new(MixerService::new(
        runtime.clone(),
        shedder.clone(),
        options.decode_limits,
    ))
    .max_decoding_message_size(options.max_message_size)
    .max_encoding_message_size(options.max_message_size);
    let ratelimit =
        RateLimitServiceServer::new(RateLimitFrontEnd::new(runtime.clone(), options.ratelimit))
            .max_decoding_message_size(options.max_message_size)
            .max_encoding_message_size(options.max_message_size);
    // The log front ends apply the same message size limits themselves.
    let access_log = AccessLogServer::new(
        AccessLogService::new(runtime.clone(), options.access_log.clone(), shedder.clone()),
        options.max_message_size,
    );
    let otlp_logs = OtlpLogsServer::new(
        OtlpLogsService::new(runtime.clone(), options.otlp_logs.clone(), shedder.clone()),
        options.max_message_size,
    );
    let authz = AuthorizationServer::new(AuthzService::new(
        runtime.clone(),
        shedder.clone(),
        options.decode_limits,
        options.ext_authz_deduplication_id,
    ))
    .max_decoding_message_size(options.max_message_size)
    .max_encoding_message_size(options.max_message_size);
    let health = introspection::health_service(runtime.is_ready())
        .await
        .max_decoding_message_size(options.max_message_size)
        .max_encoding_message_size(options.max_message_size);
    let reflection_v1 = introspection::reflection_v1()?;
    let reflection_v1alpha = introspection::reflection_v1alpha()?;
    let (tx, rx) = oneshot::channel::<()>();
    let limits = options.connections.clone();
    let incoming = crate::net::incoming(api, limits.clone(), "grpc");
    let request_limits = RequestLimitsLayer::new(options.max_message_size, &limits)
        .streaming(&[accesslog::STREAM_PATH])
        .streaming(&introspection::REFLECTION_STREAM_PATHS);
    let api = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .layer(request_limits)
            .add_service(service)
            .add_service(ratelimit)
            .add_service(access_log)
            .add_service(otlp_logs)
            .add_service(authz)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(
        address = %api_address,
        services = ?introspection::FRONT_ENDS,
        "gRPC API listening, with health checking and server reflection."
    );
    let server = RunningServer {
        api_address,
        monitoring_address,
        prometheus_address,
        runtime,
        shutdown: Some(tx),
        tasks,
        api,
        shutdown_phase: Arc::default(),
    };
    if let Some(path) = &options.ready_file
        && let Err(source) = write_ready_file(path, &server)
    {
        let _ = server.shutdown().await;
        return Err(ServerError::ReadyFile {
            path: path.clone(),
            source,
        });
    }
    Ok(server)
}

/// The runtime, with the resources every handler shares.
fn new_runtime(options: &ServerOptions) -> (Arc<Runtime>, Arc<adapters::Resources>) {
    let resources = Arc::new(adapters::Resources {
        runtime: Some(tokio::runtime::Handle::current()),
        kubernetesenv: options.kubernetesenv.clone(),
        ..Default::default()
    });
    // Before any handler exists: a metric family keeps the limits it was created with.
    resources.prometheus.set_limits(options.exposition);
    let runtime = Arc::new(Runtime::new(
        RuntimeOptions {
            config_dirs: options.config_dirs.clone(),
            resources: resources.clone(),
            default_namespace: options.default_namespace.clone(),
            policy_errors: options.policy_errors,
            check_cache_size: options.check_cache_size,
        },
        Metrics::new(),
    ));
    (runtime, resources)
}

/// Binds `address` and serves `router` there over HTTP/1.1, within the connection limits.
async fn serve_listener(
    address: SocketAddr,
    options: &ServerOptions,
    name: &'static str,
    router: axum::Router,
) -> Result<(SocketAddr, JoinHandle<()>), ServerError> {
    let listener = bind(address).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { address, source })?;
    let task = tokio::spawn(crate::net::serve_http(
        listener,
        options.connections.clone(),
        name,
        router,
    ));
    Ok((bound, task))
}

/// The first configuration load (before the API accepts calls), then the watcher that
/// reloads on changes.
async fn load_and_watch(runtime: &Arc<Runtime>, options: &ServerOptions) -> JoinHandle<()> {
    let rt = runtime.clone();
    let _ = tokio::task::spawn_blocking(move || rt.reload()).await;
    let rt = runtime.clone();
    let debounce = options.reload_debounce;
    spawn_watcher(
        options.config_dirs.clone(),
        options.reload_poll,
        options.reload_debounce,
        move || match rt.reload_settled(debounce) {
            Some(_) => Reaction::Done,
            None => Reaction::Retry,
        },
    )
}

/// Adds the Kubernetes source to the runtime, waits (at most `--config-wait-timeout`) for
/// the initial list of every kind, and reloads on its changes.
async fn follow_kubernetes(
    runtime: &Arc<Runtime>,
    source: Arc<KubernetesSource>,
    options: &ServerOptions,
) -> JoinHandle<()> {
    runtime.set_kubernetes(source.clone());
    if source.wait_synced(options.config_wait_timeout).await {
        tracing::info!("Kubernetes: every configuration kind listed.");
    } else {
        let (done, all) = source.progress();
        tracing::warn!(
            listed = done,
            kinds = all,
            timeout = ?options.config_wait_timeout,
            "Kubernetes: the initial list did not complete within --config-wait-timeout; serving what is loaded, not ready until it completes."
        );
    }
    let rt = runtime.clone();
    let debounce = options.reload_debounce;
    kubernetes::spawn_reloader(source, debounce, move || {
        match rt.reload_settled(debounce) {
            Some(_) => Reaction::Done,
            None => Reaction::Retry,
        }
    })
}

/// Writes the ready file: to a temporary file in the same directory, then renamed over
/// `path`, so a reader polling for it never sees a partial document.
fn write_ready_file(path: &Path, server: &RunningServer) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let doc = serde_json::json!({
        "api": server.api_address.to_string(),
        "monitoring": server.monitoring_address.to_string(),
        "prometheus": server.prometheus_address.to_string(),
        "pid": std::process::id(),
    });
    std::fs::write(&tmp, format!("{doc}\n"))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Scrapes rendered at once: each holds up to [`WHOLE_BELOW`] of exposition plus a chunk,
/// and its rendering CPU, until its response is taken or the connection's write timeout
/// closes it.
const SCRAPES_AT_ONCE: usize = 4;
/// How long a scrape waits for its turn before 503.
const SCRAPE_WAIT: Duration = Duration::from_secs(5);
/// An exposition that ends within this goes out whole, with a Content-Length; a larger
/// one is streamed in chunks.
const WHOLE_BELOW: usize = 1024 * 1024;

/// The Prometheus exposition listener's `/metrics`.
fn exposition_router(exporter: Arc<adapters::prometheus::Exporter>) -> axum::Router {
    let turns = Arc::new(tokio::sync::Semaphore::new(SCRAPES_AT_ONCE));
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || scrape(exporter.clone(), turns.clone())),
    )
}

/// Renders the exposition lazily in chunks (never one string), one of a bounded number
/// of scrapes at a time; the turn is held until the response body is dropped.
async fn scrape(
    exporter: Arc<adapters::prometheus::Exporter>,
    turns: Arc<tokio::sync::Semaphore>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(Ok(turn)) = tokio::time::timeout(SCRAPE_WAIT, turns.acquire_owned()).await else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{SCRAPES_AT_ONCE} scrapes are in progress; try again"),
        )
            .into_response();
    };
    let mut chunks = exporter.render_chunks();
    let mut head = String::new();
    while head.len() < WHOLE_BELOW {
        match chunks.next() {
            Some(chunk) => head.push_str(&chunk),
            None => break,
        }
    }
    let body = if head.len() < WHOLE_BELOW {
        axum::body::Body::from(head)
    } else {
        axum::body::Body::from_stream(futures::stream::iter(
            std::iter::once(head)
                .chain(chunks)
                .map(Ok::<_, std::convert::Infallible>),
        ))
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        axum::body::Body::new(TurnBody { body, _turn: turn }),
    )
        .into_response()
}

/// A response body that holds a scrape's turn until it is dropped.
struct TurnBody {
    body: axum::body::Body,
    _turn: tokio::sync::OwnedSemaphorePermit,
}

impl http_body::Body for TurnBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
