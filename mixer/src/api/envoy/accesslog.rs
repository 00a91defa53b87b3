//! The `envoy.service.accesslog.v3.AccessLogService` front end: Envoy's gRPC access
//! logger streams its entries here, and each entry is reported as a bag (see
//! `accesslog_entry.rs` for the mapping), through the same rules and handlers as Mixer's
//! Report.
//!
//! A stream lives as long as Envoy's worker does and carries the node identity only in
//! its first message, so each stream keeps that identity (and, for TCP entries, the byte
//! counts of the connections it has seen) and nothing else. Streams are independent: an
//! error ends only the stream that caused it, with a status that says what and where.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse, stream_access_logs_message::Identifier,
    stream_access_logs_message::LogEntries,
};
use expr_lang::SlotBag;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status, Streaming};

use super::accesslog_entry::{
    EntryContext, TcpTotals, http_bag, is_connection_end, struct_from_envoy, tcp_bag,
};
use super::grpc::{PrescanCodec, count_nested, len_fields};
use crate::api::shed::LoadShedder;
use crate::config::snapshot::Snapshot;
use crate::runtime::Runtime;

/// The gRPC service name.
pub const SERVICE: &str = "envoy.service.accesslog.v3.AccessLogService";
/// The one method's path: client-streaming, so the request limits apply per message.
pub const STREAM_PATH: &str = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs";

/// Messages with at least this many entries are mapped and dispatched on the blocking
/// pool, as the Mixer front end does with large Reports (`api/mixer.rs`); Envoy's batches
/// (about 30 entries) stay inline.
const BLOCKING_ENTRIES: usize = 256;
/// Entries mapped and dispatched together: memory is that of one chunk of bags.
const CHUNK: usize = 256;
/// TCP connections whose byte counts one stream remembers between entries. Envoy logs
/// a connection on the worker (so the stream) that owns it; past this many at once, a
/// new connection's counts are taken as totals.
const TRACKED_CONNECTIONS: usize = 1024;
/// Longer connection ids are not tracked (Envoy's are 36-character UUIDs).
const MAX_CONNECTION_ID: usize = 128;
/// The keys of the node metadata that the mapping reads; a stream keeps only these.
const NODE_KEYS: [&str; 6] = [
    "NAME",
    "NAMESPACE",
    "WORKLOAD_NAME",
    "OWNER",
    "SERVICE_ACCOUNT",
    "labels",
];

/// What the access-log front end accepts.
#[derive(Clone, Debug)]
pub struct AccessLogLimits {
    /// Streams open at once (`--max-access-log-streams`).
    pub max_streams: usize,
    /// Entries in one message (`--max-access-log-entries`).
    pub max_entries: usize,
    /// Encoded size of a stream's identifier (`--max-access-log-identifier-bytes`).
    pub max_identifier_bytes: usize,
}

impl Default for AccessLogLimits {
    /// Envoy opens one stream per worker thread and logger, sends batches of ~30 entries
    /// (16 KiB) and an identifier of ~61 KB (the node with its extension list).
    fn default() -> AccessLogLimits {
        AccessLogLimits {
            max_streams: 1024,
            max_entries: 1000,
            max_identifier_bytes: 256 * 1024,
        }
    }
}

/// The front end, shared by all its streams.
pub struct AccessLogService {
    runtime: Arc<Runtime>,
    limits: AccessLogLimits,
    /// Load shedding: a message of N entries costs N.
    shedder: Arc<LoadShedder>,
    streams: Arc<Semaphore>,
    /// Large messages in progress on the blocking pool: one per core but one.
    heavy: Arc<Semaphore>,
}

/// What one stream remembers between its messages.
#[derive(Default)]
struct StreamState {
    /// The node metadata of the stream's identifier.
    node: Option<Arc<prost_types::Struct>>,
    tcp: ConnectionCounts,
    messages: u64,
}

/// Byte counts of the TCP connections seen on a stream, by `stream_id`.
#[derive(Default)]
struct ConnectionCounts(HashMap<String, TcpTotals>);

impl ConnectionCounts {
    fn previous(&self, id: &str) -> TcpTotals {
        self.0.get(id).copied().unwrap_or_default()
    }

    fn record(&mut self, id: &str, totals: TcpTotals, ended: bool) {
        if id.is_empty() || id.len() > MAX_CONNECTION_ID {
            return;
        }
        if ended {
            self.0.remove(id);
        } else if let Some(t) = self.0.get_mut(id) {
            *t = totals;
        } else if self.0.len() < TRACKED_CONNECTIONS {
            self.0.insert(id.to_owned(), totals);
        }
    }
}

impl AccessLogService {
    pub fn new(
        runtime: Arc<Runtime>,
        limits: AccessLogLimits,
        shedder: Arc<LoadShedder>,
    ) -> AccessLogService {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        AccessLogService {
            runtime,
            shedder,
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            limits,
            heavy: Arc::new(Semaphore::new(cores.saturating_sub(1).max(1))),
        }
    }

    /// Serves one stream to its end.
    async fn serve(
        self: Arc<Self>,
        mut stream: Streaming<StreamAccessLogsMessage>,
    ) -> Result<StreamAccessLogsResponse, Status> {
        let metrics = self.runtime.metrics.envoy_logs.clone();
        let Ok(_slot) = self.streams.clone().try_acquire_owned() else {
            metrics
                .accesslog_rejected
                .with_label_values(&["streams"])
                .inc();
            return Err(Status::resource_exhausted(format!(
                "{} access-log streams are open, the limit (--max-access-log-streams)",
                self.limits.max_streams
            )));
        };
        metrics.accesslog_streams_open.inc();
        let mut state = StreamState::default();
        let result = loop {
            let next = stream.message().await;
            state.messages += 1;
            match next {
                Ok(Some(message)) => {
                    if let Err(status) = self.on_message(&mut state, message).await {
                        break Err(status);
                    }
                }
                Ok(None) => break Ok(StreamAccessLogsResponse {}),
                Err(status) => break Err(self.stream_error(&status, state.messages)),
            }
        };
        metrics.accesslog_streams_open.dec();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics
            .accesslog_streams
            .with_label_values(&[outcome])
            .inc();
        result
    }

    async fn on_message(
        &self,
        state: &mut StreamState,
        message: StreamAccessLogsMessage,
    ) -> Result<(), Status> {
        if let Some(identifier) = message.identifier {
            state.node = node_metadata(identifier);
        }
        let Some(entries) = message.log_entries else {
            return Ok(());
        };
        let count = entry_count(&entries);
        if let Err(overloaded) = self.shedder.admit("accesslog", cost(count)) {
            self.runtime
                .metrics
                .envoy_logs
                .accesslog_rejected
                .with_label_values(&["overloaded"])
                .inc();
            let message = format!(
                "access-log stream, message {}: {}",
                state.messages,
                overloaded.message()
            );
            return Err(Status::new(overloaded.code(), message));
        }
        let started = std::time::Instant::now();
        let result = self.report(state, entries, count).await;
        self.shedder.observe(started.elapsed());
        result
    }

    /// Reports a message's entries, off the async workers when there are many.
    async fn report(
        &self,
        state: &mut StreamState,
        entries: LogEntries,
        count: usize,
    ) -> Result<(), Status> {
        if count < BLOCKING_ENTRIES {
            report_entries(
                &self.runtime,
                state.node.as_deref(),
                &entries,
                &mut state.tcp,
            );
            return Ok(());
        }
        let permit: OwnedSemaphorePermit = self
            .heavy
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let runtime = self.runtime.clone();
        let node = state.node.clone();
        let mut tcp = std::mem::take(&mut state.tcp);
        state.tcp = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            report_entries(&runtime, node.as_deref(), &entries, &mut tcp);
            tcp
        })
        .await
        .map_err(|e| Status::internal(format!("access-log processing failed: {e}")))?;
        Ok(())
    }

    /// The status that ends a stream whose message `n` could not be read, naming it;
    /// refusals of a limit or of malformed input are counted by reason.
    fn stream_error(&self, status: &Status, n: u64) -> Status {
        if let Some(reason) = rejection_reason(status) {
            self.runtime
                .metrics
                .envoy_logs
                .accesslog_rejected
                .with_label_values(&[reason])
                .inc();
        }
        Status::new(
            status.code(),
            format!("access-log stream, message {n}: {}", status.message()),
        )
    }

    /// Refuses a message over the entry or identifier limits before it is decoded.
    fn prescan(limits: &AccessLogLimits, bytes: &[u8]) -> Result<(), Status> {
        let max = limits.max_entries;
        let mut entries = 0;
        for (field, inner) in len_fields(bytes) {
            match field {
                1 if inner.len() > limits.max_identifier_bytes => {
                    return Err(Status::resource_exhausted(format!(
                        "the stream identifier is {} bytes, over the limit of {} bytes (--max-access-log-identifier-bytes)",
                        inner.len(),
                        limits.max_identifier_bytes
                    )));
                }
                // http_logs and tcp_logs: their field 1 is the repeated entry.
                2 | 3 => entries += count_nested(inner, &[1], max.saturating_add(1) - entries),
                _ => {}
            }
            if entries > max {
                return Err(Status::resource_exhausted(format!(
                    "the message carries more than {max} entries (--max-access-log-entries)"
                )));
            }
        }
        Ok(())
    }
}

/// The reason label of a refusal, `None` for other errors (a peer that went away).
fn rejection_reason(status: &Status) -> Option<&'static str> {
    let message = status.message();
    Some(match status.code() {
        Code::InvalidArgument => "malformed",
        Code::DeadlineExceeded => "read_timeout",
        Code::ResourceExhausted if message.contains("--max-message-size") => "message_size",
        Code::ResourceExhausted if message.contains("--max-access-log-entries") => "entries",
        Code::ResourceExhausted if message.contains("--max-access-log-identifier-bytes") => {
            "identifier_size"
        }
        Code::ResourceExhausted => "connection_buffer",
        _ => return None,
    })
}

/// The workload keys of the node metadata of a stream's identifier: all a stream keeps
/// of it (Istio's metadata has many more).
fn node_metadata(identifier: Identifier) -> Option<Arc<prost_types::Struct>> {
    let mut metadata = identifier.node?.metadata?;
    metadata
        .fields
        .retain(|k, _| NODE_KEYS.contains(&k.as_str()));
    Some(Arc::new(struct_from_envoy(&metadata)))
}

fn cost(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn entry_count(entries: &LogEntries) -> usize {
    match entries {
        LogEntries::HttpLogs(h) => h.log_entry.len(),
        LogEntries::TcpLogs(t) => t.log_entry.len(),
    }
}

/// Maps the entries of one message to bags and reports them, a chunk at a time.
fn report_entries(
    runtime: &Runtime,
    node: Option<&prost_types::Struct>,
    entries: &LogEntries,
    tcp: &mut ConnectionCounts,
) {
    let snap = runtime.snapshot();
    let ctx = EntryContext {
        manifest: &snap.manifest,
        node,
        now: super::attributes::now(),
    };
    let metrics = &runtime.metrics.envoy_logs;
    let mut chunk = Chunk::new(runtime, &snap, entry_count(entries));
    match entries {
        LogEntries::HttpLogs(http) => {
            for entry in &http.log_entry {
                let (bag, rejected) = http_bag(&ctx, entry);
                chunk.push(bag, rejected.len());
            }
            metrics
                .accesslog_entries
                .with_label_values(&["http"])
                .inc_by(http.log_entry.len() as u64);
        }
        LogEntries::TcpLogs(tcp_logs) => {
            for entry in &tcp_logs.log_entry {
                let id = entry
                    .common_properties
                    .as_ref()
                    .map_or("", |c| c.stream_id.as_str());
                let (bag, rejected, totals) = tcp_bag(&ctx, entry, tcp.previous(id));
                tcp.record(id, totals, is_connection_end(entry));
                chunk.push(bag, rejected.len());
            }
            metrics
                .accesslog_entries
                .with_label_values(&["tcp"])
                .inc_by(tcp_logs.log_entry.len() as u64);
        }
    }
    chunk.flush();
}

/// Bags waiting to be reported together.
struct Chunk<'r> {
    runtime: &'r Runtime,
    snap: &'r Snapshot,
    bags: Vec<SlotBag>,
}

impl<'r> Chunk<'r> {
    fn new(runtime: &'r Runtime, snap: &'r Snapshot, entries: usize) -> Chunk<'r> {
        Chunk {
            runtime,
            snap,
            bags: Vec::with_capacity(entries.min(CHUNK)),
        }
    }

    fn push(&mut self, bag: SlotBag, conversion_failures: usize) {
        if conversion_failures > 0 {
            self.runtime
                .metrics
                .envoy_logs
                .conversion_failures
                .with_label_values(&["accesslog"])
                .inc_by(conversion_failures as u64);
        }
        self.bags.push(bag);
        if self.bags.len() == CHUNK {
            self.flush();
        }
    }

    /// Reports the bags. What failed was counted by the runtime (rules and handlers);
    /// it is logged here, rate limited, since a stream has no answer to carry it.
    fn flush(&mut self) {
        if self.bags.is_empty() {
            return;
        }
        let errors = self.runtime.report(self.snap, &self.bags);
        self.bags.clear();
        if let Some(first) = errors.first() {
            super::log_limited::report_failed("accesslog", errors.len(), first);
        }
    }
}

/// The tonic service: routes the one method through a codec that checks the limits
/// before decoding.
#[derive(Clone)]
pub struct AccessLogServer {
    inner: Arc<AccessLogService>,
    max_message_size: usize,
}

impl AccessLogServer {
    pub fn new(service: AccessLogService, max_message_size: usize) -> AccessLogServer {
        AccessLogServer {
            inner: Arc::new(service),
            max_message_size,
        }
    }
}

impl NamedService for AccessLogServer {
    const NAME: &'static str = SERVICE;
}

impl<B> tower_service::Service<http::Request<B>> for AccessLogServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != STREAM_PATH {
            let status =
                Status::unimplemented(format!("{} is not a method of {SERVICE}", req.uri().path()));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let inner = self.inner.clone();
        let max = self.max_message_size;
        Box::pin(async move {
            let limits = inner.limits.clone();
            let codec = PrescanCodec::<StreamAccessLogsResponse, StreamAccessLogsMessage>::new(
                Arc::new(move |bytes| AccessLogService::prescan(&limits, bytes)),
                "access-log message",
            );
            let mut grpc =
                tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.client_streaming(StreamHandler(inner), req).await)
        })
    }
}

/// One call of `StreamAccessLogs`.
struct StreamHandler(Arc<AccessLogService>);

impl tower_service::Service<Request<Streaming<StreamAccessLogsMessage>>> for StreamHandler {
    type Response = Response<StreamAccessLogsResponse>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Streaming<StreamAccessLogsMessage>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.serve(req.into_inner()).await.map(Response::new) })
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::data::accesslog::v3::{HttpAccessLogEntry, TcpAccessLogEntry};
    use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::{
        HttpAccessLogEntries, TcpAccessLogEntries,
    };
    use prost::Message;

    use super::*;

    fn limits() -> AccessLogLimits {
        AccessLogLimits {
            max_streams: 1,
            max_entries: 3,
            max_identifier_bytes: 64,
        }
    }

    #[test]
    fn prescan_counts_entries_and_measures_the_identifier() {
        let http = |n| StreamAccessLogsMessage {
            identifier: None,
            log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
                log_entry: vec![HttpAccessLogEntry::default(); n],
            })),
        };
        let prescan =
            |m: &StreamAccessLogsMessage| AccessLogService::prescan(&limits(), &m.encode_to_vec());
        assert!(prescan(&http(3)).is_ok());
        let err = prescan(&http(4)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(
            err.message().contains("--max-access-log-entries"),
            "{err:?}"
        );
        let tcp = StreamAccessLogsMessage {
            identifier: None,
            log_entries: Some(LogEntries::TcpLogs(TcpAccessLogEntries {
                log_entry: vec![TcpAccessLogEntry::default(); 4],
            })),
        };
        assert!(prescan(&tcp).is_err());
        let big = StreamAccessLogsMessage {
            identifier: Some(Identifier {
                node: None,
                log_name: "x".repeat(100),
            }),
            log_entries: None,
        };
        let err = prescan(&big).unwrap_err();
        assert!(
            err.message().contains("--max-access-log-identifier-bytes"),
            "{err:?}"
        );
    }

    #[test]
    fn a_stream_remembers_a_bounded_number_of_connections() {
        let mut counts = ConnectionCounts::default();
        let t = |n| TcpTotals {
            received: n,
            sent: n,
        };
        counts.record("a", t(5), false);
        assert_eq!(counts.previous("a"), t(5));
        counts.record("a", t(9), true);
        assert_eq!(
            counts.previous("a"),
            TcpTotals::default(),
            "forgotten at close"
        );
        counts.record("", t(1), false);
        counts.record(&"x".repeat(MAX_CONNECTION_ID + 1), t(1), false);
        assert!(
            counts.0.is_empty(),
            "entries without a usable id are not tracked"
        );
        for i in 0..TRACKED_CONNECTIONS + 10 {
            counts.record(&i.to_string(), t(1), false);
        }
        assert_eq!(counts.0.len(), TRACKED_CONNECTIONS);
    }
}
