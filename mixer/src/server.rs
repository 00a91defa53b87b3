//! The server process: gRPC API, monitoring HTTP, config watcher, graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::pb::istio::mixer::v1::mixer_server::MixerServer;
use crate::api::service::MixerService;
use crate::config::watch::spawn_watcher;
use crate::runtime::{PolicyErrorMode, Runtime, RuntimeOptions};
use crate::telemetry::http;
use crate::telemetry::metrics::Metrics;

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
}

impl ServerOptions {
    /// Defaults as Mixer's (`0.0.0.0:9091`, monitoring on `15014`).
    pub fn new(config_dirs: Vec<PathBuf>) -> ServerOptions {
        ServerOptions {
            config_dirs,
            address: SocketAddr::from(([0, 0, 0, 0], 9091)),
            monitoring_address: SocketAddr::from(([0, 0, 0, 0], 15014)),
            prometheus_address: SocketAddr::from(([0, 0, 0, 0], 42422)),
            default_namespace: "istio-system".to_owned(),
            max_message_size: 1024 * 1024,
            policy_errors: PolicyErrorMode::Mixer,
            reload_poll: Duration::from_millis(500),
            reload_debounce: Duration::from_secs(1),
            check_cache_size: 10_000,
            shedding: crate::api::shed::SheddingOptions {
                latency_halflife: Duration::from_secs(1),
                burst_size: 1,
                ..Default::default()
            },
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
}

impl RunningServer {
    /// Stops accepting calls, lets in-flight ones finish, flushes adapters.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = self.api.await;
        for t in &self.tasks {
            t.abort();
        }
        self.runtime.close_all();
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

/// Loads the configuration, binds both listeners and starts serving.
pub async fn start(options: ServerOptions) -> Result<RunningServer, ServerError> {
    let resources = Arc::new(adapters::Resources {
        runtime: Some(tokio::runtime::Handle::current()),
        ..Default::default()
    });
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

    let monitoring = bind(options.monitoring_address).await?;
    let monitoring_address = monitoring
        .local_addr()
        .map_err(|source| ServerError::Bind {
            address: options.monitoring_address,
            source,
        })?;
    let router = http::router(runtime.clone());
    let mut tasks = vec![tokio::spawn(async move {
        if let Err(e) = axum::serve(monitoring, router).await {
            tracing::error!(error = %e, "Monitoring server failed.");
        }
    })];
    tracing::info!(address = %monitoring_address, "Monitoring endpoints listening (/metrics, /healthz, /readyz, /version, /debug/config).");

    let exposition = bind(options.prometheus_address).await?;
    let prometheus_address = exposition
        .local_addr()
        .map_err(|source| ServerError::Bind {
            address: options.prometheus_address,
            source,
        })?;
    let exporter = resources.prometheus.clone();
    let scrape = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let exporter = exporter.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    exporter.render(),
                )
            }
        }),
    );
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(exposition, scrape).await {
            tracing::error!(error = %e, "Prometheus exposition server failed.");
        }
    }));
    tracing::info!(address = %prometheus_address, "Prometheus exposition listening (/metrics).");

    // The first load happens before the API accepts calls.
    let rt = runtime.clone();
    let _ = tokio::task::spawn_blocking(move || rt.reload()).await;

    let rt = runtime.clone();
    tasks.push(spawn_watcher(
        options.config_dirs.clone(),
        options.reload_poll,
        options.reload_debounce,
        move || {
            rt.reload();
        },
    ));

    let api = bind(options.address).await?;
    let api_address = api.local_addr().map_err(|source| ServerError::Bind {
        address: options.address,
        source,
    })?;
    let shedder =
        crate::api::shed::LoadShedder::new(options.shedding.clone(), runtime.metrics.shed.clone());
    let service = MixerServer::new(MixerService::new(runtime.clone(), shedder))
        .max_decoding_message_size(options.max_message_size)
        .max_encoding_message_size(options.max_message_size);
    let (tx, rx) = oneshot::channel::<()>();
    let incoming = tokio_stream_from(api);
    let api = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(1024))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(address = %api_address, "gRPC API listening (istio.mixer.v1.Mixer).");
    Ok(RunningServer {
        api_address,
        monitoring_address,
        prometheus_address,
        runtime,
        shutdown: Some(tx),
        tasks,
        api,
    })
}

/// Accepted connections of a listener as the stream tonic serves.
fn tokio_stream_from(
    listener: TcpListener,
) -> impl futures::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> {
    futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((conn, listener))
    })
}
