//! The `istio.mixer.v1.Mixer` front end: decodes requests into bags, asks the runtime,
//! and encodes its answers (statuses, referenced attributes, route directives).

use std::sync::Arc;
use std::time::Instant;

use templates::code;
use tonic::{Request, Response, Status};

use super::check_response;
use super::shed::LoadShedder;
use crate::attrs::{
    DecodeError, DecodeLimits, GLOBAL_WORD_COUNT, ProtoBag, ReportSets, SetError,
    decode_referenced as decode_matches, encode_referenced,
};
use crate::runtime::{
    CheckAnswer, Condition, QuotaRequest, Reference, Referenced, ReportError, Runtime,
};
use crate::wire::codec::Encoded;
use crate::wire::pb::istio::mixer::v1::referenced_attributes::Condition as PbCondition;
use crate::wire::pb::istio::mixer::v1::{ReferencedAttributes, ReportResponse};
use crate::wire::service::mixer_server::Mixer;
use crate::wire::view::{CheckView, ReportView};

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
    shedder: Arc<LoadShedder>,
    limits: DecodeLimits,
    /// Heavy Reports in progress on the blocking pool: one per core but one.
    heavy_reports: Arc<tokio::sync::Semaphore>,
}

impl MixerService {
    pub fn new(
        runtime: Arc<Runtime>,
        shedder: Arc<LoadShedder>,
        limits: DecodeLimits,
    ) -> MixerService {
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

/// `ReferencedAttributes` for the client's cache.
pub fn encode_referenced_attributes(
    referenced: &Referenced,
    global_word_count: u32,
) -> ReferencedAttributes {
    encode_referenced(
        referenced.iter().map(|r| {
            let condition = match r.condition {
                Condition::Absence => PbCondition::Absence,
                Condition::Exact => PbCondition::Exact,
            };
            (r.name, r.map_key, condition)
        }),
        global_word_count,
    )
}

/// The referenced attributes of an answer, as a client reads them: unique by (name, map
/// key), in order.
pub fn decode_referenced(r: &ReferencedAttributes) -> Result<Vec<Reference>, DecodeError> {
    let unique: Referenced = decode_matches(r)?
        .into_iter()
        .map(|(name, map_key, condition)| Reference {
            name,
            map_key,
            condition: match condition {
                PbCondition::Absence => Condition::Absence,
                _ => Condition::Exact,
            },
        })
        .collect();
    Ok(unique.iter().map(|r| r.to_reference()).collect())
}

fn check_word_count(count: u32) -> Result<(), Status> {
    if count as usize > GLOBAL_WORD_COUNT {
        return Err(Status::invalid_argument(format!(
            "{INVALID_REQUEST_PREFIX} global_word_count: the request uses {count} words of the global dictionary, but this server knows {GLOBAL_WORD_COUNT}"
        )));
    }
    Ok(())
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

/// The requested quotas. The API has no release, so a negative amount (which would hand
/// units back) is refused.
fn quota_requests(req: &CheckView) -> Result<Vec<QuotaRequest<'_>>, Status> {
    req.quotas()
        .map(|params| {
            let name = params.name;
            if params.amount < 0 {
                return Err(Status::invalid_argument(format!(
                    "quota {name:?}: amount {} is negative; quotas are allocated with amounts of 0 or more",
                    params.amount
                )));
            }
            Ok(QuotaRequest {
                name,
                amount: params.amount,
                best_effort: params.best_effort,
            })
        })
        .collect()
}

/// Hands an encoded answer's reference buffers back for the next Check on this thread
/// (those the Check cache shares stay with it).
fn recycle(answer: CheckAnswer) {
    if let Ok(referenced) = Arc::try_unwrap(answer.referenced) {
        referenced.recycle();
    }
    for quota in answer.quotas {
        quota.referenced.recycle();
    }
}

#[tonic::async_trait]
impl Mixer for MixerService {
    async fn check(&self, request: Request<CheckView>) -> Result<Response<Encoded>, Status> {
        let started = Instant::now();
        let metrics = &self.runtime.metrics;
        self.shedder.admit("check", 1)?;
        let result = self.check_inner(request.into_inner()).await;
        self.shedder.observe(started.elapsed());
        let label = match &result {
            Ok((_, status)) if *status != code::OK => "denied",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        metrics.check_requests.with_label_values(&[label]).inc();
        metrics
            .check_duration
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        result.map(|(response, _)| Response::new(response))
    }

    async fn report(
        &self,
        request: Request<ReportView>,
    ) -> Result<Response<ReportResponse>, Status> {
        let started = Instant::now();
        let metrics = &self.runtime.metrics;
        let request = request.into_inner();
        let cost = u32::try_from(request.len()).unwrap_or(u32::MAX);
        self.shedder.admit("report", cost)?;
        let result = if request.len() >= BLOCKING_REPORT_SETS {
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
    /// The encoded `CheckResponse`, with the precondition's status code.
    async fn check_inner(&self, req: CheckView) -> Result<(Encoded, i32), Status> {
        check_word_count(req.global_word_count())?;
        let snap = self.runtime.snapshot();
        let attrs = req.attributes();
        let quotas = quota_requests(&req)?;
        let bag = ProtoBag::decode_wire(attrs, attrs.words(), &snap.attributes, self.limits)
            .map_err(|e| decode_error(&self.runtime, "check", &e))?;
        let answer = self
            .runtime
            .check(&snap, &bag, req.deduplication_id(), &quotas)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // The next Check on this thread decodes into this bag's storage.
        bag.recycle();
        let response = check_response::encode(&answer, &quotas, req.global_word_count());
        let status = answer.precondition.status.code;
        recycle(answer);
        Ok((Encoded(response), status))
    }

    /// Runs a heavy Report on the blocking pool, a bounded number at a time.
    async fn report_off_workers(&self, request: ReportView) -> Result<ReportResponse, Status> {
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
    req: &ReportView,
) -> Result<ReportResponse, Status> {
    check_word_count(req.global_word_count())?;
    let metrics = &runtime.metrics;
    metrics.report_bags.inc_by(req.len() as u64);
    if req.is_empty() {
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
            dispatch_errors.extend(runtime.report(&snap, &chunk));
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        dispatch_errors.extend(runtime.report(&snap, &chunk));
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

    fn extend(&mut self, errors: Vec<ReportError>) {
        for e in errors {
            self.add(e.to_string());
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
