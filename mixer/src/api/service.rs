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
    mixer_server::Mixer, report_request,
};
use super::pb::istio::policy::v1beta1::DirectHttpResponse;
use super::shed::LoadShedder;
use crate::attrs::{Condition, DecodeError, GLOBAL_WORD_COUNT, ProtoBag, encode_referenced};
use crate::runtime::Runtime;
use crate::runtime::check_cache::Reference;
use crate::runtime::dispatch::{self, CheckOutcome, HeaderEdit, QuotaOutcome};
use crate::runtime::snapshot::HeaderOperationKind;

/// The prefix that makes Envoy's client fall back to the base dictionary (spec §4.4).
pub const INVALID_REQUEST_PREFIX: &str = "Request could not be processed due to invalid";

/// The gRPC service, serving from the runtime's current snapshot.
pub struct MixerService {
    runtime: Arc<Runtime>,
    shedder: LoadShedder,
}

impl MixerService {
    pub fn new(runtime: Arc<Runtime>, shedder: LoadShedder) -> MixerService {
        MixerService { runtime, shedder }
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

fn decode_error(runtime: &Runtime, api: &str, what: &str, e: &DecodeError) -> Status {
    runtime
        .metrics
        .decode_errors
        .with_label_values(&[api])
        .inc();
    Status::invalid_argument(format!("invalid attributes{what}: {e}"))
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
        let result = self.report_inner(request);
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
        let bag = ProtoBag::decode(attrs, &attrs.words, &snap.attributes)
            .map_err(|e| decode_error(&self.runtime, "check", "", &e))?;
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

    fn report_inner(&self, req: ReportRequest) -> Result<ReportResponse, Status> {
        check_word_count(req.global_word_count)?;
        let metrics = &self.runtime.metrics;
        metrics.report_bags.inc_by(req.attributes.len() as u64);
        if req.attributes.is_empty() {
            return Ok(ReportResponse {});
        }
        let snap = self.runtime.snapshot();
        let mut bags: Vec<ProtoBag<'_>> = Vec::with_capacity(req.attributes.len());
        let mut decode_errors = Vec::new();
        let semantics = req.repeated_attributes_semantics;
        if semantics == report_request::RepeatedAttributesSemantics::IndependentEncoding as i32 {
            for (i, a) in req.attributes.iter().enumerate() {
                let message_words = if a.words.is_empty() {
                    &req.default_words
                } else {
                    &a.words
                };
                match ProtoBag::decode(a, message_words, &snap.attributes) {
                    Ok(b) => bags.push(b),
                    Err(e) => decode_errors.push(format!("attributes[{i}]: {e}")),
                }
            }
        } else if semantics == report_request::RepeatedAttributesSemantics::DeltaEncoding as i32 {
            let mut acc: Option<ProtoBag<'_>> = None;
            for (i, a) in req.attributes.iter().enumerate() {
                let message_words = if a.words.is_empty() {
                    &req.default_words
                } else {
                    &a.words
                };
                let step = match &mut acc {
                    None => ProtoBag::decode(a, message_words, &snap.attributes).map(|b| {
                        acc = Some(b);
                    }),
                    Some(bag) => bag.apply_delta(a, message_words, &snap.attributes),
                };
                match step {
                    Ok(()) => bags.extend(acc.clone()),
                    Err(e) => decode_errors.push(format!("attributes[{i}]: {e}")),
                }
            }
        } else {
            return Err(Status::invalid_argument(format!(
                "unknown repeated_attributes_semantics {semantics}: expected 0 (DELTA_ENCODING) or 1 (INDEPENDENT_ENCODING)"
            )));
        }
        // Elements that decoded are dispatched even when others did not: no lost data.
        let errors = dispatch::report(&snap, &bags, metrics);
        if !decode_errors.is_empty() {
            metrics
                .decode_errors
                .with_label_values(&["report"])
                .inc_by(decode_errors.len() as u64);
            let mut all = decode_errors;
            all.extend(errors);
            return Err(Status::invalid_argument(format!(
                "invalid attributes: {}",
                all.join("; ")
            )));
        }
        if !errors.is_empty() {
            return Err(Status::unknown(errors.join("; ")));
        }
        Ok(ReportResponse {})
    }
}
