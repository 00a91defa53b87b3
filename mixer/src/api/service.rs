//! The `istio.mixer.v1.Mixer` service: the only place that maps errors to gRPC statuses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use expr_lang::{Recorder, ValueType};
use prost::Message;
use templates::{QuotaArgs, Status as HandlerStatus, code};
use tonic::{Request, Response, Status};

use super::pb::google::rpc::Status as RpcStatus;
use super::pb::istio::mixer::v1::{
    CheckRequest, CheckResponse, CompressedAttributes, HeaderOperation, ReferencedAttributes,
    ReportRequest, ReportResponse, RouteDirective, check_response, header_operation,
    mixer_server::Mixer,
};
use super::pb::istio::policy::v1beta1::DirectHttpResponse;
use super::shed::LoadShedder;
use crate::attrs::{
    Condition, DecodeError, DecodeLimits, GLOBAL_WORD_COUNT, ProtoBag, ReportSets, SetError,
    encode_referenced,
};
use crate::runtime::Runtime;
use crate::runtime::check_cache::Reference;
use crate::runtime::dispatch::{self, CheckOutcome, HeaderEdit, QuotaOutcome};
use crate::runtime::snapshot::HeaderOperationKind;

/// The prefix that makes Envoy's client fall back to the base dictionary.
pub const INVALID_REQUEST_PREFIX: &str = "Request could not be processed due to invalid";

/// Reports with at least this many attribute sets are decoded and dispatched on the
/// blocking pool, so a heavy Report never holds an async worker that Checks and health
/// probes need. Envoy's batches (about 100 sets, a few ms) stay inline: the hand-off and
/// the one-per-core bound would halve their throughput.
const BLOCKING_REPORT_SETS: usize = 256;
/// Sets decoded and dispatched together: each handler is called once per chunk (an
/// Envoy batch is one chunk), and memory stays bounded by the chunk, not by the Report.
const REPORT_CHUNK: usize = 256;
/// At most this many per-set errors are spelled out in a Report's error message.
const REPORT_ERRORS_SHOWN: usize = 8;

/// The gRPC service, serving from the runtime's current snapshot.
pub struct MixerService {
    runtime: Arc<Runtime>,
    shedder: LoadShedder,
    limits: DecodeLimits,
    /// Heavy Reports in progress on the blocking pool: one per core but one.
    heavy_reports: Arc<tokio::sync::Semaphore>,
}

impl MixerService {
    pub fn new(runtime: Arc<Runtime>, shedder: LoadShedder, limits: DecodeLimits) -> MixerService {
        // One core is left to Checks and health probes.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let heavy = cores.saturating_sub(1).max(1);
        MixerService {
            runtime,
            shedder,
            limits,
            heavy_reports: Arc::new(tokio::sync::Semaphore::new(heavy)),
        }
    }
}

/// Collects referenced attributes for the response. A present STRING_MAP read by itself is
/// not recorded (only its key lookups), as Mixer's production bag did: keying the client's
/// cache on a whole header map would make it useless.
#[derive(Default)]
struct References {
    entries: Vec<(String, Option<String>, Condition)>,
}

impl References {
    fn set(&mut self, name: &str, key: Option<&str>, condition: Condition) {
        // Keys are unique per (name, key); a later read overwrites the condition.
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|(n, k, _)| n == name && k.as_deref() == key)
        {
            e.2 = condition;
            return;
        }
        self.entries
            .push((name.to_owned(), key.map(str::to_owned), condition));
    }

    fn to_cache(&self) -> Vec<Reference> {
        self.entries
            .iter()
            .map(|(n, k, c)| Reference {
                name: n.clone(),
                map_key: k.clone(),
                condition: *c,
            })
            .collect()
    }

    fn from_cache(refs: Vec<Reference>) -> References {
        References {
            entries: refs
                .into_iter()
                .map(|r| (r.name, r.map_key, r.condition))
                .collect(),
        }
    }

    fn encode(&self, global_word_count: u32) -> ReferencedAttributes {
        encode_referenced(
            self.entries
                .iter()
                .map(|(n, k, c)| (n.as_str(), k.as_deref(), *c)),
            global_word_count,
        )
    }
}

impl Recorder for References {
    fn attribute(&mut self, name: &str, value_type: ValueType, present: bool) {
        if present && value_type == ValueType::StringMap {
            return;
        }
        let condition = if present {
            Condition::Exact
        } else {
            Condition::Absence
        };
        self.set(name, None, condition);
    }

    fn map_key(&mut self, map: &str, key: &str, present: bool) {
        let condition = if present {
            Condition::Exact
        } else {
            Condition::Absence
        };
        self.set(map, Some(key), condition);
    }
}

fn check_word_count(count: u32) -> Result<(), Status> {
    if count as usize > GLOBAL_WORD_COUNT {
        return Err(Status::invalid_argument(format!(
            "{INVALID_REQUEST_PREFIX} global_word_count: the request uses {count} words of the global dictionary, but this server knows {GLOBAL_WORD_COUNT}"
        )));
    }
    Ok(())
}

fn pb_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

fn rpc_status(s: &HandlerStatus) -> RpcStatus {
    let mut details = Vec::new();
    if let Some(d) = &s.direct_response {
        let msg = DirectHttpResponse {
            code: d.code as i32,
            body: d.body.clone(),
            headers: d.headers.clone().into_iter().collect(),
        };
        details.push(prost_types::Any {
            type_url: adapters::denier::DIRECT_HTTP_RESPONSE_TYPE.to_owned(),
            value: msg.encode_to_vec(),
        });
    }
    RpcStatus {
        code: s.code,
        message: s.message.clone(),
        details,
    }
}

fn header_ops(edits: &[HeaderEdit]) -> Vec<HeaderOperation> {
    edits
        .iter()
        .map(|e| HeaderOperation {
            name: e.name.clone(),
            value: e.value.clone(),
            operation: match e.operation {
                HeaderOperationKind::Replace => header_operation::Operation::Replace,
                HeaderOperationKind::Remove => header_operation::Operation::Remove,
                HeaderOperationKind::Append => header_operation::Operation::Append,
            } as i32,
        })
        .collect()
}

fn precondition(
    outcome: &CheckOutcome,
    refs: &References,
    global_word_count: u32,
) -> check_response::PreconditionResult {
    let route = &outcome.route;
    check_response::PreconditionResult {
        status: Some(rpc_status(&outcome.status)),
        valid_duration: Some(pb_duration(outcome.valid_duration)),
        valid_use_count: outcome.valid_use_count,
        referenced_attributes: Some(refs.encode(global_word_count)),
        route_directive: (!route.is_empty()).then(|| RouteDirective {
            request_header_operations: header_ops(&route.request_header_operations),
            response_header_operations: header_ops(&route.response_header_operations),
            direct_response_code: route.direct_response_code,
            direct_response_body: route.direct_response_body.clone(),
        }),
    }
}

fn quota_result(
    q: &QuotaOutcome,
    refs: &References,
    global_word_count: u32,
) -> check_response::QuotaResult {
    check_response::QuotaResult {
        valid_duration: Some(pb_duration(q.valid_duration)),
        granted_amount: q.granted_amount,
        referenced_attributes: Some(refs.encode(global_word_count)),
        status: Some(rpc_status(&q.status)),
    }
}

fn decode_error(runtime: &Runtime, api: &str, e: &DecodeError) -> Status {
    runtime
        .metrics
        .decode_errors
        .with_label_values(&[api])
        .inc();
    if e.is_over_limit() {
        Status::resource_exhausted(format!("attributes: {e}"))
    } else {
        Status::invalid_argument(format!("invalid attributes: {e}"))
    }
}

/// A quota amount the API cannot honour: it has no release, so a negative amount must not
/// hand units back.
fn check_quota_amount(name: &str, amount: i64) -> Result<(), Status> {
    if amount < 0 {
        return Err(Status::invalid_argument(format!(
            "quota {name:?}: amount {amount} is negative; quotas are allocated with amounts of 0 or more"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Mixer for MixerService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let metrics = &self.runtime.metrics;
        self.shedder.admit("check", 1)?;
        let result = self.check_inner(request.into_inner()).await;
        self.shedder.observe(started.elapsed());
        let label = match &result {
            Ok(r)
                if r.precondition
                    .as_ref()
                    .and_then(|p| p.status.as_ref())
                    .is_some_and(|s| s.code != code::OK) =>
            {
                "denied"
            }
            Ok(_) => "ok",
            Err(_) => "error",
        };
        metrics.check_requests.with_label_values(&[label]).inc();
        metrics
            .check_duration
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let started = Instant::now();
        let metrics = &self.runtime.metrics;
        let request = request.into_inner();
        let cost = u32::try_from(request.attributes.len()).unwrap_or(u32::MAX);
        self.shedder.admit("report", cost)?;
        let result = if request.attributes.len() >= BLOCKING_REPORT_SETS {
            self.report_off_workers(request).await
        } else {
            report_sets(&self.runtime, self.limits, &request)
        };
        self.shedder.observe(started.elapsed());
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics.report_requests.with_label_values(&[label]).inc();
        metrics
            .report_duration
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }
}

impl MixerService {
    async fn check_inner(&self, req: CheckRequest) -> Result<CheckResponse, Status> {
        check_word_count(req.global_word_count)?;
        let snap = self.runtime.snapshot();
        let empty = CompressedAttributes::default();
        let attrs = req.attributes.as_ref().unwrap_or(&empty);
        for (name, params) in &req.quotas {
            check_quota_amount(name, params.amount)?;
        }
        let bag = ProtoBag::decode_limited(attrs, &attrs.words, &snap.attributes, self.limits)
            .map_err(|e| decode_error(&self.runtime, "check", &e))?;
        let mode = self.runtime.options.policy_errors;
        let metrics = &self.runtime.metrics;
        let cache = self.runtime.check_cache.as_ref();
        // Quota requests are never answered from the cache: they must be charged.
        if req.quotas.is_empty()
            && let Some((outcome, refs)) = cache.and_then(|c| c.lookup(&snap, &bag))
        {
            let refs = References::from_cache(refs);
            return Ok(CheckResponse {
                precondition: Some(precondition(&outcome, &refs, req.global_word_count)),
                quotas: Default::default(),
            });
        }
        let mut refs = References::default();
        let outcome = dispatch::check(&snap, &bag, &mut refs, mode, metrics)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Some(cache) = cache {
            cache.insert(&snap, &bag, &outcome, refs.to_cache());
        }
        let mut response = CheckResponse {
            precondition: Some(precondition(&outcome, &refs, req.global_word_count)),
            quotas: Default::default(),
        };
        // Quotas are allocated only when the precondition holds.
        if outcome.status.is_ok() {
            for (name, params) in &req.quotas {
                let dedup = format!("{}{name}", req.deduplication_id);
                let args = QuotaArgs {
                    deduplication_id: &dedup,
                    amount: params.amount,
                    best_effort: params.best_effort,
                };
                let mut qrefs = References::default();
                let q = dispatch::quota(&snap, &bag, &mut qrefs, name, args, metrics).await;
                response.quotas.insert(
                    name.clone(),
                    quota_result(&q, &qrefs, req.global_word_count),
                );
            }
        }
        Ok(response)
    }

    /// Runs a heavy Report on the blocking pool, a bounded number at a time.
    async fn report_off_workers(&self, request: ReportRequest) -> Result<ReportResponse, Status> {
        let permit = self
            .heavy_reports
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let runtime = self.runtime.clone();
        let limits = self.limits;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            report_sets(&runtime, limits, &request)
        })
        .await
        .map_err(|e| Status::internal(format!("Report processing failed: {e}")))?
    }
}

/// The Report variety: decodes the sets in chunks and dispatches each chunk, so a Report
/// costs memory for one chunk whatever its size. Sets that fail to decode are skipped and
/// named in the error; the others are dispatched (no lost data).
fn report_sets(
    runtime: &Runtime,
    limits: DecodeLimits,
    req: &ReportRequest,
) -> Result<ReportResponse, Status> {
    check_word_count(req.global_word_count)?;
    let metrics = &runtime.metrics;
    metrics.report_bags.inc_by(req.attributes.len() as u64);
    if req.attributes.is_empty() {
        return Ok(ReportResponse {});
    }
    let snap = runtime.snapshot();
    let sets = ReportSets::new(req, &snap.attributes, limits)
        .map_err(|e| decode_error(runtime, "report", &e))?;
    let mut failures = SetFailures::default();
    let mut dispatch_errors = SetFailures::default();
    let mut chunk: Vec<ProtoBag<'_>> = Vec::with_capacity(REPORT_CHUNK.min(sets.len()));
    for decoded in sets {
        match decoded {
            Ok(bag) => chunk.push(bag),
            Err(e) => failures.add_set(e),
        }
        if chunk.len() == REPORT_CHUNK {
            dispatch_errors.extend(dispatch::report(&snap, &chunk, metrics));
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        dispatch_errors.extend(dispatch::report(&snap, &chunk, metrics));
    }
    drop(chunk);
    if failures.count > 0 {
        metrics
            .decode_errors
            .with_label_values(&["report"])
            .inc_by(failures.count as u64);
        let over_limit = failures.over_limit;
        let message = failures.then(dispatch_errors).message("invalid attributes");
        return Err(if over_limit {
            Status::resource_exhausted(message)
        } else {
            Status::invalid_argument(message)
        });
    }
    if dispatch_errors.count > 0 {
        return Err(Status::unknown(dispatch_errors.message("report failed")));
    }
    Ok(ReportResponse {})
}

/// The errors of a Report: the first few spelled out, all counted.
#[derive(Default)]
struct SetFailures {
    shown: Vec<String>,
    count: usize,
    over_limit: bool,
}

impl SetFailures {
    fn add(&mut self, message: String) {
        self.count += 1;
        if self.shown.len() < REPORT_ERRORS_SHOWN {
            self.shown.push(message);
        }
    }

    fn add_set(&mut self, e: SetError) {
        self.over_limit |= e.error.is_over_limit();
        self.add(e.to_string());
    }

    fn extend(&mut self, messages: Vec<String>) {
        for m in messages {
            self.add(m);
        }
    }

    fn then(mut self, other: SetFailures) -> SetFailures {
        self.over_limit |= other.over_limit;
        let count = self.count + other.count;
        for m in other.shown {
            self.add(m);
        }
        self.count = count;
        self
    }

    fn message(&self, what: &str) -> String {
        let mut out = format!("{what}: {}", self.shown.join("; "));
        if self.count > self.shown.len() {
            out.push_str(&format!(" (and {} more)", self.count - self.shown.len()));
        }
        out
    }
}
