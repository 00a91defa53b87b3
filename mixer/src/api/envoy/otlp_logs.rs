//! The OTLP logs front end (`opentelemetry.proto.collector.logs.v1.LogsService/Export`):
//! each log record is reported as a bag made of the attribute-named keys of its
//! resource's attributes, then of its own (which overwrite), and `context.time` from the
//! server clock. Envoy's OpenTelemetry access logger is one such exporter; any OTLP logs
//! exporter whose attributes are named after attributes can feed the same rules.
//!
//! Answers follow OTLP: records that could not be taken are counted in
//! `partial_success.rejected_log_records` with a message saying why; the others were
//! reported.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use expr_lang::golib::time::Timestamp;
use expr_lang::{SlotBag, Value};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use tokio::sync::Semaphore;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::attributes::BagBuilder;
use super::grpc::{PrescanCodec, count_nested};
use crate::api::shed::LoadShedder;
use crate::config::snapshot::Snapshot;
use crate::runtime::Runtime;

/// The gRPC service name.
pub const SERVICE: &str = "opentelemetry.proto.collector.logs.v1.LogsService";
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// Requests with at least this many records are mapped and dispatched on the blocking
/// pool (see `api/mixer.rs`).
const BLOCKING_RECORDS: usize = 256;
/// Records mapped and dispatched together.
const CHUNK: usize = 256;
/// Reasons spelled out in a partial success message.
const REASONS_SHOWN: usize = 4;

/// What the OTLP logs front end accepts.
#[derive(Clone, Debug)]
pub struct OtlpLogsLimits {
    /// Log records in one Export (`--max-otlp-log-records`).
    pub max_records: usize,
    /// Attributes of one record, its resource's included (`--max-attributes-per-set`).
    pub max_attributes: usize,
}

impl Default for OtlpLogsLimits {
    /// OpenTelemetry SDKs export batches of at most 512 records by default; Envoy's
    /// logger flushes every 16 KiB.
    fn default() -> OtlpLogsLimits {
        OtlpLogsLimits {
            max_records: 2048,
            max_attributes: crate::attrs::DecodeLimits::default().max_attributes_per_set,
        }
    }
}

/// The front end.
pub struct OtlpLogsService {
    runtime: Arc<Runtime>,
    limits: OtlpLogsLimits,
    /// Load shedding: an Export of N records costs N.
    shedder: Arc<LoadShedder>,
    /// Large requests in progress on the blocking pool: one per core but one.
    heavy: Arc<Semaphore>,
}

impl OtlpLogsService {
    pub fn new(
        runtime: Arc<Runtime>,
        limits: OtlpLogsLimits,
        shedder: Arc<LoadShedder>,
    ) -> OtlpLogsService {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        OtlpLogsService {
            runtime,
            shedder,
            limits,
            heavy: Arc::new(Semaphore::new(cores.saturating_sub(1).max(1))),
        }
    }

    async fn export(
        self: Arc<Self>,
        request: ExportLogsServiceRequest,
    ) -> Result<ExportLogsServiceResponse, Status> {
        let metrics = self.runtime.metrics.envoy_logs.clone();
        let records: usize = request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.shedder
            .admit("otlp_logs", u32::try_from(records).unwrap_or(u32::MAX))?;
        let started = std::time::Instant::now();
        let outcome = if records < BLOCKING_RECORDS {
            report_records(&self.runtime, &self.limits, &request)
        } else {
            self.export_off_workers(request).await?
        };
        self.shedder.observe(started.elapsed());
        // Failed calls are counted where their answer is known (see OtlpLogsServer).
        let label = if outcome.rejected > 0 {
            "partial"
        } else {
            "ok"
        };
        metrics.otlp_requests.with_label_values(&[label]).inc();
        metrics
            .otlp_records
            .with_label_values(&["reported"])
            .inc_by((records - outcome.rejected) as u64);
        metrics
            .otlp_records
            .with_label_values(&["rejected"])
            .inc_by(outcome.rejected as u64);
        Ok(outcome.response())
    }

    async fn export_off_workers(
        &self,
        request: ExportLogsServiceRequest,
    ) -> Result<Outcome, Status> {
        let permit = self
            .heavy
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let runtime = self.runtime.clone();
        let limits = self.limits.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            report_records(&runtime, &limits, &request)
        })
        .await
        .map_err(|e| Status::internal(format!("OTLP logs processing failed: {e}")))
    }

    /// Refuses a request over the record limit before it is decoded.
    fn prescan(limits: &OtlpLogsLimits, bytes: &[u8]) -> Result<(), Status> {
        let max = limits.max_records;
        // resource_logs (1) → scope_logs (2) → log_records (2).
        if count_nested(bytes, &[1, 2, 2], max.saturating_add(1)) > max {
            return Err(Status::resource_exhausted(format!(
                "the request carries more than {max} log records (--max-otlp-log-records)"
            )));
        }
        Ok(())
    }
}

/// What became of one Export's records.
#[derive(Default)]
struct Outcome {
    rejected: usize,
    reasons: Vec<String>,
    /// Rules or handlers that failed for reported records.
    dispatch_errors: usize,
    first_dispatch_error: Option<String>,
}

impl Outcome {
    fn reject(&mut self, reason: String) {
        self.rejected += 1;
        if self.reasons.len() < REASONS_SHOWN {
            self.reasons.push(reason);
        }
    }

    /// OTLP's answer: `partial_success` when records were rejected (or, as a warning
    /// with none rejected, when rules or handlers failed); empty when all went well.
    fn response(self) -> ExportLogsServiceResponse {
        let mut message = String::new();
        if self.rejected > 0 {
            message = format!(
                "{} log records rejected: {}",
                self.rejected,
                self.reasons.join("; ")
            );
            if self.rejected > self.reasons.len() {
                message.push_str(&format!(
                    " (and {} more)",
                    self.rejected - self.reasons.len()
                ));
            }
        }
        if let Some(first) = &self.first_dispatch_error {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&format!(
                "records were reported, but {} rule or handler failures occurred, the first: {first}",
                self.dispatch_errors
            ));
        }
        ExportLogsServiceResponse {
            partial_success: (!message.is_empty()).then(|| ExportLogsPartialSuccess {
                rejected_log_records: i64::try_from(self.rejected).unwrap_or(i64::MAX),
                error_message: message,
            }),
        }
    }
}

/// Maps the records to bags and reports them, a chunk at a time.
fn report_records(
    runtime: &Runtime,
    limits: &OtlpLogsLimits,
    request: &ExportLogsServiceRequest,
) -> Outcome {
    let snap = runtime.snapshot();
    let now = super::attributes::now();
    let mut outcome = Outcome::default();
    let mut chunk: Vec<SlotBag> = Vec::new();
    let mut conversion_failures = 0;
    for (r, resource_logs) in request.resource_logs.iter().enumerate() {
        let resource = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |res| &res.attributes[..]);
        for (s, scope) in resource_logs.scope_logs.iter().enumerate() {
            for (i, record) in scope.log_records.iter().enumerate() {
                let attributes = resource.len() + record.attributes.len();
                if attributes > limits.max_attributes {
                    outcome.reject(format!(
                        "resource_logs[{r}].scope_logs[{s}].log_records[{i}] has {attributes} attributes with its resource's, over the limit of {} (--max-attributes-per-set)",
                        limits.max_attributes
                    ));
                    continue;
                }
                let (bag, failures) = record_bag(&snap, resource, &record.attributes, now);
                conversion_failures += failures;
                chunk.push(bag);
                if chunk.len() == CHUNK {
                    dispatch(runtime, &snap, &mut chunk, &mut outcome);
                }
            }
        }
    }
    dispatch(runtime, &snap, &mut chunk, &mut outcome);
    if conversion_failures > 0 {
        runtime
            .metrics
            .envoy_logs
            .conversion_failures
            .with_label_values(&["otlp_logs"])
            .inc_by(conversion_failures as u64);
    }
    outcome
}

fn dispatch(runtime: &Runtime, snap: &Snapshot, chunk: &mut Vec<SlotBag>, outcome: &mut Outcome) {
    if chunk.is_empty() {
        return;
    }
    let errors = runtime.report(snap, chunk);
    chunk.clear();
    if let Some(first) = errors.first() {
        super::log_limited::report_failed("otlp_logs", errors.len(), first);
        outcome.dispatch_errors += errors.len();
        outcome
            .first_dispatch_error
            .get_or_insert_with(|| first.to_string());
    }
}

/// One record's bag: resource attributes, then the record's, then `context.time`. Also
/// returns how many attribute-named values did not convert.
fn record_bag(
    snap: &Snapshot,
    resource: &[KeyValue],
    attributes: &[KeyValue],
    now: Timestamp,
) -> (SlotBag, usize) {
    let mut b = BagBuilder::new(&snap.manifest);
    for kv in resource.iter().chain(attributes) {
        keyed_any(&mut b, kv);
    }
    b.set("context.time", Value::Timestamp(now));
    let (bag, rejected) = b.finish();
    (bag, rejected.len())
}

/// An attribute-named key with an OTLP value: strings as text (`-` = absent), integers,
/// doubles and booleans converted to the attribute's type, a key-value list as a string
/// map; arrays and bytes convert to nothing (counted).
fn keyed_any(b: &mut BagBuilder<'_>, kv: &KeyValue) {
    use prost_types::value::Kind;
    let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
    let kind = match value {
        Some(any_value::Value::StringValue(s)) => return b.keyed_text(&kv.key, s),
        // Integers go through text so that they convert exactly (a double would not).
        Some(any_value::Value::IntValue(i)) => return b.keyed_text(&kv.key, &i.to_string()),
        Some(any_value::Value::BoolValue(v)) => return b.keyed_text(&kv.key, &v.to_string()),
        Some(any_value::Value::DoubleValue(d)) => Some(Kind::NumberValue(*d)),
        Some(any_value::Value::KvlistValue(list)) => {
            Some(Kind::StructValue(kvlist_struct(&list.values)))
        }
        _ => None,
    };
    b.keyed_value(&kv.key, &prost_types::Value { kind });
}

/// A key-value list's scalar values as a `Struct` of strings (for STRING_MAP attributes).
fn kvlist_struct(values: &[KeyValue]) -> prost_types::Struct {
    let fields = values
        .iter()
        .filter_map(|kv| {
            let text = match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => s.clone(),
                any_value::Value::IntValue(i) => i.to_string(),
                any_value::Value::DoubleValue(d) => d.to_string(),
                any_value::Value::BoolValue(b) => b.to_string(),
                _ => return None,
            };
            let value = prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(text)),
            };
            Some((kv.key.clone(), value))
        })
        .collect();
    prost_types::Struct { fields }
}

/// The tonic service: `Export` through a codec that checks the record limit first.
#[derive(Clone)]
pub struct OtlpLogsServer {
    inner: Arc<OtlpLogsService>,
    max_message_size: usize,
}

impl OtlpLogsServer {
    pub fn new(service: OtlpLogsService, max_message_size: usize) -> OtlpLogsServer {
        OtlpLogsServer {
            inner: Arc::new(service),
            max_message_size,
        }
    }
}

impl NamedService for OtlpLogsServer {
    const NAME: &'static str = SERVICE;
}

impl<B> tower_service::Service<http::Request<B>> for OtlpLogsServer
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
        if req.uri().path() != EXPORT_PATH {
            let status =
                Status::unimplemented(format!("{} is not a method of {SERVICE}", req.uri().path()));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let inner = self.inner.clone();
        let max = self.max_message_size;
        Box::pin(async move {
            let limits = inner.limits.clone();
            let codec = PrescanCodec::<ExportLogsServiceResponse, ExportLogsServiceRequest>::new(
                Arc::new(move |bytes| OtlpLogsService::prescan(&limits, bytes)),
                "OTLP logs request",
            );
            let mut grpc =
                tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(max), Some(max));
            let metrics = inner.runtime.metrics.envoy_logs.clone();
            let response = grpc.unary(ExportHandler(inner), req).await;
            // An error status travels in the headers, whether the request could not be
            // read (limits, malformed) or the call failed.
            if response
                .headers()
                .get("grpc-status")
                .is_some_and(|code| code != "0")
            {
                metrics.otlp_requests.with_label_values(&["error"]).inc();
            }
            Ok(response)
        })
    }
}

/// One call of `Export`.
struct ExportHandler(Arc<OtlpLogsService>);

impl tower_service::Service<Request<ExportLogsServiceRequest>> for ExportHandler {
    type Response = Response<ExportLogsServiceResponse>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ExportLogsServiceRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.export(req.into_inner()).await.map(Response::new) })
    }
}

#[cfg(test)]
mod tests {
    use expr_lang::{AttrKey, Bag, Manifest};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValueList};

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn string(key: &str, v: &str) -> KeyValue {
        kv(key, any_value::Value::StringValue(v.into()))
    }

    #[test]
    fn record_attributes_overwrite_the_resource_and_convert_to_their_types() {
        let m = Manifest::istio_vocabulary();
        let resource = [
            string("destination.workload.name", "reviews-v1"),
            string("context.protocol", "tcp"),
        ];
        let record = [
            string("context.protocol", "http"),
            kv("response.code", any_value::Value::IntValue(503)),
            kv("response.duration", any_value::Value::DoubleValue(12.5)),
            kv("connection.mtls", any_value::Value::BoolValue(true)),
            string("request.size", "-"),
            string("response.size", "big"),
            kv(
                "request.headers",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![string("x-a", "1")],
                }),
            ),
            kv("request.id", any_value::Value::BytesValue(vec![1])),
            string("log_name", "ignored"),
        ];
        let mut b = BagBuilder::new(&m);
        for a in resource.iter().chain(&record) {
            keyed_any(&mut b, a);
        }
        let (bag, rejected) = b.finish();
        let get = |name: &'static str| {
            bag.get(AttrKey {
                name,
                id: m.get(name).unwrap().id,
            })
        };
        assert_eq!(get("context.protocol"), Some(Value::str("http")));
        assert_eq!(
            get("destination.workload.name"),
            Some(Value::str("reviews-v1"))
        );
        assert_eq!(get("response.code"), Some(Value::Int64(503)));
        assert_eq!(get("response.duration"), Some(Value::Duration(12_500_000)));
        assert_eq!(get("connection.mtls"), Some(Value::Bool(true)));
        assert_eq!(get("request.size"), None);
        let Some(Value::StringMap(h)) = get("request.headers") else {
            panic!("headers");
        };
        assert_eq!(h.get("x-a"), Some("1"));
        let failed: Vec<_> = rejected.iter().map(|e| e.attribute.as_str()).collect();
        assert_eq!(failed, ["response.size", "request.id"]);
    }

    #[test]
    fn prescan_counts_records_across_resources_and_scopes() {
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use prost::Message;
        let scope = |n| ScopeLogs {
            log_records: vec![LogRecord::default(); n],
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs {
                    scope_logs: vec![scope(2), scope(1)],
                    ..Default::default()
                },
                ResourceLogs {
                    scope_logs: vec![scope(2)],
                    ..Default::default()
                },
            ],
        };
        let bytes = request.encode_to_vec();
        let limits = |max_records| OtlpLogsLimits {
            max_records,
            max_attributes: 10,
        };
        assert!(OtlpLogsService::prescan(&limits(5), &bytes).is_ok());
        let err = OtlpLogsService::prescan(&limits(4), &bytes).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("--max-otlp-log-records"));
    }

    #[test]
    fn rejections_and_failures_make_a_partial_success() {
        assert_eq!(Outcome::default().response().partial_success, None);
        let mut o = Outcome::default();
        for i in 0..6 {
            o.reject(format!("r{i}"));
        }
        let p = o.response().partial_success.unwrap();
        assert_eq!(p.rejected_log_records, 6);
        assert_eq!(
            p.error_message,
            "6 log records rejected: r0; r1; r2; r3 (and 2 more)"
        );
        let warning = Outcome {
            dispatch_errors: 2,
            first_dispatch_error: Some("h: down".into()),
            ..Default::default()
        };
        let p = warning.response().partial_success.unwrap();
        assert_eq!(p.rejected_log_records, 0);
        assert!(p.error_message.contains("h: down"), "{}", p.error_message);
    }
}
