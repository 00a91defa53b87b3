//! Trace export: `tracespan` instances become OpenTelemetry spans, exported over
//! OTLP/gRPC to an OpenTelemetry collector or Jaeger's OTLP receiver.
//!
//! Two adapters share the handler:
//!
//! * [`ADAPTER`] (`otlp`): this server's own, with the params of [`config::Params`].
//! * [`ZIPKIN_ADAPTER`] (`zipkin`): Istio's zipkin handler kind. Its `url` is a Zipkin
//!   v2 HTTP endpoint, and this server does not speak Zipkin's protocol: rather than
//!   guessing an OTLP address from it (Jaeger's Zipkin and OTLP ports differ, and a
//!   collector may not listen for OTLP on the same host at all), zipkin handlers export
//!   to the OTLP endpoint the process is configured with through OpenTelemetry's standard
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) variable,
//!   keeping their `sampleProbability`; the `url` is not used. Without that variable the
//!   adapter is reported unavailable, with the reason, and its handlers are skipped.
//!
//! # Span mapping (Mixer's OpenCensus span builder)
//!
//! | tracespan field | OTLP span |
//! |---|---|
//! | `traceId` | trace id: even-length hex ≤ 32 digits, right-aligned; invalid, empty or zero ⇒ no span |
//! | `spanId` | span id: even-length hex ≤ 16 digits, right-aligned; invalid, empty or zero ⇒ no span. Client span with `rewriteClientSpanId`: `spanId ^ 3f6a2ec3c810c2ab` |
//! | `parentSpanId` | parent span id (invalid/empty ⇒ root). Server span with `rewriteClientSpanId`: `spanId ^ 3f6a2ec3c810c2ab` |
//! | `spanName` | name |
//! | `startTime` / `endTime` | start / end time (unset ⇒ 0, OTLP's unknown) |
//! | `spanTags` | attributes: string, int64, double kept; others as Go's `%v` text |
//! | `httpStatusCode` > 0 | attribute `http.status_code` (int, before the tags, which may replace it) and status: OK for OpenCensus' OK, else ERROR with the canonical code's name (`NOT_FOUND`) |
//! | `clientSpan` | kind CLIENT, else SERVER (a server span's parent is flagged remote) |
//! | `sourceName`+`sourceIp` (client) / `destinationName`+`destinationIp` (server) | Resource `service.name` (empty ⇒ `serviceName` param, default `default`) and `host.ip` (unless absent or `0.0.0.0`) |
//! | `requestTotalSize` / `responseTotalSize` | two `message` events (at start / end) with `message.type` RECEIVED/SENT (server) or SENT/RECEIVED (client) and `message.uncompressed_size` |
//! | `requestSize`, `responseSize`, `apiProtocol` | not used (as by Mixer's trace adapters) |
//!
//! Sampling is OpenCensus' probability sampler on the trace id (`sampleProbability`,
//! default 0: nothing is exported). Export is batched off the request path, one
//! `ExportTraceServiceRequest` per batch with a `ResourceSpans` per service; see the
//! `export` module.

mod client;
pub mod config;
mod export;
mod span;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use templates::handler::TraceSpanHandler;
use templates::instances::tracespan;
use templates::{Handler, HandlerError, TemplateKind};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::{Adapter, BuildError, Env, ValidateInput, Validation};
use client::build_exporter;
use config::{BatchConfig, Config, ZipkinConfig};
use export::{Metrics, Queue, Worker};
use span::{Sampler, Skipped};

/// The standard OpenTelemetry variables naming the OTLP endpoint of zipkin handlers.
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// How much longer than its flush budget `close()` waits for the export task to account
/// for what it could not flush and stop.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The `otlp` adapter.
pub static ADAPTER: OtlpAdapter = OtlpAdapter;

/// Istio's `zipkin` adapter, exporting over OTLP (see the module documentation).
pub static ZIPKIN_ADAPTER: ZipkinAdapter = ZipkinAdapter {
    endpoint: EndpointSource::Environment,
};

/// This server's `otlp` handler kind.
pub struct OtlpAdapter;

impl Adapter for OtlpAdapter {
    type Config = Config;

    fn name(&self) -> &'static str {
        "otlp"
    }

    fn description(&self) -> &'static str {
        "Exports trace spans over OTLP/gRPC (OpenTelemetry collector, Jaeger)"
    }

    fn templates(&self) -> &'static [TemplateKind] {
        &[TemplateKind::TraceSpan]
    }

    fn validate(&self, input: &ValidateInput<'_>) -> Validation<Config> {
        config::validate(input).into()
    }

    fn build(&self, config: Config, env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        Ok(TraceHandler::start(config, env)?)
    }
}

/// Where zipkin handlers export to.
enum EndpointSource {
    /// [`TRACES_ENDPOINT_VAR`], else [`ENDPOINT_VAR`].
    Environment,
    /// A fixed endpoint. Only tests construct it (they cannot set process-wide
    /// environment variables safely), hence the allowance outside tests.
    #[cfg_attr(not(test), allow(dead_code))]
    Fixed(&'static str),
}

/// Istio's `zipkin` handler kind; see the module documentation for where it exports.
pub struct ZipkinAdapter {
    endpoint: EndpointSource,
}

impl ZipkinAdapter {
    /// The OTLP endpoint zipkin handlers export to, or why there is none.
    fn endpoint(&self) -> Result<String, String> {
        let (var, value) = match &self.endpoint {
            EndpointSource::Fixed(e) => ("the configured endpoint", (*e).to_owned()),
            EndpointSource::Environment => [TRACES_ENDPOINT_VAR, ENDPOINT_VAR]
                .into_iter()
                .find_map(|var| {
                    std::env::var(var)
                        .ok()
                        .map(|v| v.trim().to_owned())
                        .filter(|v| !v.is_empty())
                        .map(|v| (var, v))
                })
                .ok_or_else(|| {
                    format!(
                        "zipkin handlers send spans to a Zipkin HTTP endpoint (params.url), and \
                         this server exports spans over OTLP/gRPC only: set {TRACES_ENDPOINT_VAR} \
                         (or {ENDPOINT_VAR}) to an OTLP/gRPC endpoint (Jaeger and OpenTelemetry \
                         collectors listen on port 4317) to export the spans of zipkin handlers \
                         there, or use an otlp handler"
                    )
                })?,
        };
        crate::prometheus::pbjson::check_http_url(&value).map_err(|e| {
            format!(
                "{var} must be the http(s) URL of an OTLP/gRPC endpoint for zipkin handlers: {e}"
            )
        })?;
        Ok(value)
    }
}

/// The `otlp` configuration a zipkin handler runs with: its sampling, the defaults for
/// everything Zipkin's params do not have.
fn zipkin_to_otlp(z: &ZipkinConfig, endpoint: String) -> Config {
    Config {
        endpoint,
        sample_probability: z.sample_probability,
        service_name: config::DEFAULT_SERVICE_NAME.to_owned(),
        headers: Default::default(),
        timeout: config::DEFAULT_TIMEOUT,
        batch: BatchConfig {
            max_queue_size: config::DEFAULT_MAX_QUEUE_SIZE,
            max_export_batch_size: config::DEFAULT_MAX_EXPORT_BATCH_SIZE,
            scheduled_delay: config::DEFAULT_SCHEDULED_DELAY,
        },
    }
}

impl Adapter for ZipkinAdapter {
    type Config = ZipkinConfig;

    fn name(&self) -> &'static str {
        "zipkin"
    }

    fn description(&self) -> &'static str {
        "Exports trace spans (Istio's zipkin handler; sent over OTLP/gRPC)"
    }

    fn templates(&self) -> &'static [TemplateKind] {
        &[TemplateKind::TraceSpan]
    }

    fn unavailable(&self) -> Option<String> {
        self.endpoint().err()
    }

    fn validate(&self, input: &ValidateInput<'_>) -> Validation<ZipkinConfig> {
        config::validate_zipkin(input).into()
    }

    fn build(&self, z: ZipkinConfig, env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        let endpoint = self.endpoint().map_err(BuildError::InvalidEndpoint)?;
        if let Some(url) = &z.url {
            tracing::info!(
                handler = %env.handler,
                url = %crate::redact::redact_url(url),
                endpoint = %crate::redact::redact_url(&endpoint),
                "The zipkin handler exports over OTLP/gRPC to the configured endpoint, not to its Zipkin url."
            );
        }
        Ok(TraceHandler::start(zipkin_to_otlp(&z, endpoint), env)?)
    }
}

/// The export task of a handler, until `close()`.
struct Running {
    /// Carries the flush deadline.
    shutdown: oneshot::Sender<Instant>,
    /// Disconnects (or receives) when the task has ended.
    done: Receiver<()>,
    task: tokio::task::JoinHandle<()>,
}

/// A trace handler: converts and enqueues on the request path; a background task exports.
pub struct TraceHandler {
    handler: String,
    sampler: Sampler,
    default_service: String,
    queue: Arc<Queue>,
    /// Flush budget of `close()`.
    close_timeout: Duration,
    running: Mutex<Option<Running>>,
}

impl TraceHandler {
    /// Creates the exporter and starts the export task on the server's runtime.
    fn start(config: Config, env: &Env) -> Result<Arc<TraceHandler>, BuildError> {
        let runtime = env
            .resources
            .runtime
            .clone()
            .or_else(|| Handle::try_current().ok())
            .ok_or(BuildError::NoRuntime(
                "trace handlers export from a background task and need the server's async \
                 runtime",
            ))?;
        // The gRPC channel connects lazily but needs a runtime to attach its connection
        // task to when it is created.
        let exporter = {
            let _guard = runtime.enter();
            build_exporter(&config)?
        };
        let metrics = Metrics::new(&env.handler, &env.resources.metrics);
        let queue = Arc::new(Queue::new(&env.handler, &config.batch, metrics.clone()));
        let worker = Worker {
            queue: queue.clone(),
            exporter,
            scheduled_delay: config.batch.scheduled_delay,
            timeout: config.timeout,
            metrics,
            handler: env.handler.clone(),
            healthy: true,
        };
        let (shutdown, shutdown_rx) = oneshot::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let task = runtime.spawn(async move {
            worker.run(shutdown_rx).await;
            let _ = done_tx.send(());
        });
        tracing::debug!(
            handler = %env.handler,
            endpoint = %crate::redact::redact_url(&config.endpoint),
            sample_probability = config.sample_probability,
            "Trace handler started."
        );
        Ok(Arc::new(TraceHandler {
            handler: env.handler.clone(),
            sampler: Sampler::new(config.sample_probability),
            default_service: config.service_name,
            queue,
            close_timeout: config.timeout,
            running: Mutex::new(Some(Running {
                shutdown,
                done,
                task,
            })),
        }))
    }
}

impl TraceSpanHandler for TraceHandler {
    fn handle_trace_span(&self, instances: &[tracespan::Instance<'_>]) -> Result<(), HandlerError> {
        if !self.sampler.enabled() {
            return Ok(());
        }
        // Converted before taking the queue's lock, so Report threads contend only for
        // the pushes; and only as many as the queue has room for: the others would be
        // dropped, so they are counted without being built.
        let mut room = self.queue.room();
        let mut spans = Vec::with_capacity(instances.len().min(room));
        let mut no_room = 0u64;
        for inst in instances {
            match span::span_ids(inst, &self.sampler) {
                Ok(ids) if room > 0 => {
                    room -= 1;
                    spans.push(span::build(inst, ids, &self.default_service));
                }
                Ok(_) => no_room += 1,
                Err(Skipped::NotSampled) => {}
                Err(reason) => tracing::debug!(
                    handler = %self.handler,
                    instance = inst.name,
                    %reason,
                    "No span for a tracespan instance."
                ),
            }
        }
        self.queue.count_dropped(no_room);
        if !spans.is_empty() {
            self.queue.push(spans);
        }
        Ok(())
    }
}

/// How waiting for the export task ended.
enum Waited {
    Finished,
    TimedOut,
    /// On a single-threaded runtime, which may be the one the task needs to progress.
    CannotBlock,
}

fn wait_for(done: &Receiver<()>, limit: Duration) -> Waited {
    let recv = || match done.recv_timeout(limit) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => Waited::Finished,
        Err(RecvTimeoutError::Timeout) => Waited::TimedOut,
    };
    match Handle::try_current() {
        Err(_) => recv(),
        // Lets the runtime move this worker's other tasks elsewhere while it waits.
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(recv)
        }
        Ok(_) => Waited::CannotBlock,
    }
}

impl Handler for TraceHandler {
    fn trace_span(&self) -> Option<&dyn TraceSpanHandler> {
        Some(self)
    }

    /// Flushes what is queued, within the export timeout, and stops the export task.
    fn close(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(running) = running else {
            return;
        };
        if running
            .shutdown
            .send(Instant::now() + self.close_timeout)
            .is_err()
        {
            // The task has already ended.
            return;
        }
        match wait_for(&running.done, self.close_timeout + CLOSE_GRACE) {
            Waited::Finished => {
                tracing::debug!(handler = %self.handler, "Trace handler closed.");
            }
            Waited::TimedOut => {
                running.task.abort();
                let lost = self.queue.close_and_discard();
                tracing::warn!(
                    handler = %self.handler,
                    lost,
                    "The trace export task did not stop in time; it was cancelled."
                );
            }
            Waited::CannotBlock => tracing::debug!(
                handler = %self.handler,
                "Trace handler closing; its queue is flushed in the background."
            ),
        }
    }
}
