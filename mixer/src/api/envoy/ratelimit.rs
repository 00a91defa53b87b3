//! The `envoy.service.ratelimit.v3.RateLimitService` front end (Envoy's
//! `envoy.filters.http.ratelimit` filter): a `ShouldRateLimit` call becomes quota
//! allocations on the same quota instances, rules and handlers as a Mixer Check.
//!
//! - The request's `domain` names one quota instance: its short name in the default
//!   config namespace, or its fully qualified name (`name.instance.namespace`, or
//!   `name.quota.namespace` for the legacy kind). Any other domain is INVALID_ARGUMENT,
//!   listing the names a domain can use.
//! - Each descriptor is one allocation of its hits (`hits_addend` of the descriptor, else
//!   of the request; 0 means 1) on a bag made of its entries: `remote_address` is
//!   `source.ip`, a key that is an attribute name sets that attribute (converted to its
//!   type by [`BagBuilder::keyed_text`]), any other key is ignored.
//! - A descriptor is refused when it is granted less than it asked (or a handler
//!   refused it); the answer is OVER_LIMIT when any is, with one status per descriptor,
//!   carrying the limit and what is left of it when the handler tells them.
//!
//! Nothing is allocated unless the whole request is valid, so a rejected request never
//! costs quota.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit, rate_limit::Unit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use expr_lang::{Manifest, NoRecording, SlotBag};
use templates::{QuotaResult, TemplateKind};
use tonic::{Request, Response, Status};

use super::attributes::BagBuilder;
use crate::config::Snapshot;
use crate::metrics::EnvoyRateLimitMetrics;
use crate::runtime::{QuotaRequest, Runtime, quota};

/// The flag of [`RateLimitLimits::max_descriptors`].
pub const MAX_DESCRIPTORS_FLAG: &str = "--max-ratelimit-descriptors";
/// The flag of [`RateLimitLimits::max_entries`].
pub const MAX_ENTRIES_FLAG: &str = "--max-ratelimit-descriptor-entries";

/// The descriptor key Envoy's `remote_address` action writes the client address under.
const REMOTE_ADDRESS: &str = "remote_address";
/// Quota instance names spelled out in an unknown domain's error.
const NAMES_SHOWN: usize = 32;
/// Characters of a client's domain repeated in an error message.
const DOMAIN_SHOWN: usize = 128;

/// What one call may ask for. Over a limit is RESOURCE_EXHAUSTED naming its flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitLimits {
    /// Descriptors in one request (`--max-ratelimit-descriptors`): each is a quota
    /// allocation, possibly a Redis round trip. A route's `rate_limits` make a handful.
    pub max_descriptors: usize,
    /// Entries in one descriptor (`--max-ratelimit-descriptor-entries`). Envoy writes one
    /// per action of a rate limit, a few in practice.
    pub max_entries: usize,
}

impl Default for RateLimitLimits {
    fn default() -> RateLimitLimits {
        RateLimitLimits {
            max_descriptors: 64,
            max_entries: 64,
        }
    }
}

/// The gRPC service, serving from the runtime's current snapshot.
pub struct RateLimitFrontEnd {
    runtime: Arc<Runtime>,
    limits: RateLimitLimits,
    ids: DedupIds,
    /// Rejected calls logged at once, then one a second (a misconfigured Envoy fails
    /// every call).
    log: governor::DefaultDirectRateLimiter,
}

impl RateLimitFrontEnd {
    pub fn new(runtime: Arc<Runtime>, limits: RateLimitLimits) -> RateLimitFrontEnd {
        let log = governor::Quota::per_second(std::num::NonZeroU32::MIN)
            .allow_burst(std::num::NonZeroU32::new(5).expect("non-zero burst"));
        RateLimitFrontEnd {
            runtime,
            limits,
            ids: DedupIds::new(),
            log: governor::RateLimiter::direct(log),
        }
    }

    fn metrics(&self) -> &EnvoyRateLimitMetrics {
        &self.runtime.metrics.envoy_ratelimit
    }
}

/// Deduplication ids unique to each descriptor of each call, across servers too (a
/// redisquota handler remembers grants by id in the Redis every server shares): a random
/// process nonce, a call counter and the descriptor's index. Envoy never retries a call
/// with the same id, so each allocation must count.
struct DedupIds {
    nonce: u64,
    next: AtomicU64,
}

impl DedupIds {
    fn new() -> DedupIds {
        // RandomState is seeded from the operating system's randomness.
        let nonce = RandomState::new().hash_one((std::process::id(), SystemTime::now()));
        DedupIds {
            nonce,
            next: AtomicU64::new(0),
        }
    }

    /// The id prefix of one call; descriptor `i` appends `-i`.
    fn call(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("envoy-ratelimit-{:016x}-{n:x}", self.nonce)
    }
}

/// One descriptor, ready to allocate.
#[derive(Debug)]
struct Allocation {
    bag: SlotBag,
    amount: i64,
}

#[tonic::async_trait]
impl RateLimitService for RateLimitFrontEnd {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let started = Instant::now();
        let result = self.decide(request.into_inner()).await;
        let outcome = match &result {
            Ok(r) if r.overall_code == Code::OverLimit as i32 => "over_limit",
            Ok(_) => "ok",
            Err(status) => {
                self.log_rejected(status);
                "error"
            }
        };
        let m = self.metrics();
        m.requests.with_label_values(&[outcome]).inc();
        m.duration
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }
}

impl RateLimitFrontEnd {
    async fn decide(&self, req: RateLimitRequest) -> Result<RateLimitResponse, Status> {
        check_limits(&req, self.limits)?;
        let snap = self.runtime.snapshot();
        let quota_name = resolve_domain(&snap, &req.domain)?;
        let allocations = self.allocations(&snap.manifest, &req)?;
        let call = self.ids.call();
        let mut statuses = Vec::with_capacity(allocations.len());
        for (i, a) in allocations.iter().enumerate() {
            let request = QuotaRequest {
                name: &quota_name,
                amount: a.amount,
                best_effort: false,
            };
            let result = quota::allocate(
                &snap,
                &a.bag,
                &mut NoRecording,
                request,
                &format!("{call}-{i}"),
                &self.runtime.metrics,
            )
            .await;
            statuses.push(descriptor_status(&result, a.amount, &quota_name));
        }
        Ok(self.answer(statuses))
    }

    /// Every descriptor's bag and amount; an invalid descriptor fails the whole call
    /// before anything is allocated.
    fn allocations(
        &self,
        manifest: &Manifest,
        req: &RateLimitRequest,
    ) -> Result<Vec<Allocation>, Status> {
        req.descriptors
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let amount = hits(req.hits_addend, d, i)?;
                let (bag, rejected) = descriptor_bag(manifest, d);
                if !rejected.is_empty() {
                    self.metrics()
                        .unconverted_values
                        .inc_by(rejected.len() as u64);
                    tracing::debug!(descriptor = i, rejected = ?rejected, "Rate limit descriptor entries skipped: their values do not convert to their attributes' types.");
                }
                Ok(Allocation { bag, amount })
            })
            .collect()
    }

    fn answer(&self, statuses: Vec<DescriptorStatus>) -> RateLimitResponse {
        let over = statuses
            .iter()
            .filter(|s| s.code == Code::OverLimit as i32)
            .count();
        let m = self.metrics();
        m.descriptors
            .with_label_values(&["over_limit"])
            .inc_by(over as u64);
        m.descriptors
            .with_label_values(&["ok"])
            .inc_by((statuses.len() - over) as u64);
        RateLimitResponse {
            overall_code: if over > 0 { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..RateLimitResponse::default()
        }
    }

    fn log_rejected(&self, status: &Status) {
        if self.log.check().is_ok() {
            tracing::warn!(code = ?status.code(), message = %status.message(), "Rate limit call rejected; counted in mixer_envoy_ratelimit_requests_total{{outcome=\"error\"}}.");
        }
    }
}

/// RESOURCE_EXHAUSTED when the request asks for more than one call may.
fn check_limits(req: &RateLimitRequest, limits: RateLimitLimits) -> Result<(), Status> {
    if req.descriptors.len() > limits.max_descriptors {
        return Err(Status::resource_exhausted(format!(
            "the request has {} descriptors; at most {} are accepted ({MAX_DESCRIPTORS_FLAG})",
            req.descriptors.len(),
            limits.max_descriptors
        )));
    }
    if let Some((i, d)) = req
        .descriptors
        .iter()
        .enumerate()
        .find(|(_, d)| d.entries.len() > limits.max_entries)
    {
        return Err(Status::resource_exhausted(format!(
            "descriptor {i} has {} entries; at most {} are accepted ({MAX_ENTRIES_FLAG})",
            d.entries.len(),
            limits.max_entries
        )));
    }
    if req.descriptors.is_empty() {
        return Err(Status::invalid_argument(
            "the request has no descriptors: nothing to rate limit",
        ));
    }
    Ok(())
}

/// The fully qualified name of the quota instance `domain` names: its fully qualified
/// name, or its short name in the default config namespace.
fn resolve_domain(snap: &Snapshot, domain: &str) -> Result<String, Status> {
    let is_quota = |fqn: &str| {
        snap.instances
            .get(fqn)
            .is_some_and(|i| i.kind() == TemplateKind::Quota)
    };
    if is_quota(domain) {
        return Ok(domain.to_owned());
    }
    let ns = &snap.default_namespace;
    for kind in ["instance", "quota"] {
        let fqn = format!("{domain}.{kind}.{ns}");
        if is_quota(&fqn) {
            return Ok(fqn);
        }
    }
    Err(unknown_domain(snap, domain))
}

/// INVALID_ARGUMENT naming the domain and the names a domain can use.
fn unknown_domain(snap: &Snapshot, domain: &str) -> Status {
    let names = domain_names(snap);
    let shown: String = domain.chars().take(DOMAIN_SHOWN).collect();
    let cut = if shown.len() < domain.len() {
        "…"
    } else {
        ""
    };
    let known = if names.is_empty() {
        "the serving configuration has no quota instances".to_owned()
    } else {
        let mut list = names
            .iter()
            .take(NAMES_SHOWN)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if names.len() > NAMES_SHOWN {
            list.push_str(&format!(" (and {} more)", names.len() - NAMES_SHOWN));
        }
        format!("known quota instances: {list}")
    };
    Status::invalid_argument(format!(
        "rate limit domain {:?} names no quota instance; {known}",
        format!("{shown}{cut}")
    ))
}

/// Each quota instance as a domain names it: the short name in the default namespace,
/// the fully qualified name elsewhere.
fn domain_names(snap: &Snapshot) -> Vec<String> {
    let ns = &snap.default_namespace;
    snap.instances
        .iter()
        .filter(|(_, i)| i.kind() == TemplateKind::Quota)
        .map(|(fqn, _)| {
            ["instance", "quota"]
                .iter()
                .find_map(|kind| fqn.strip_suffix(&format!(".{kind}.{ns}")))
                .unwrap_or(fqn)
                .to_owned()
        })
        .collect()
}

/// The units descriptor `index` asks for: its own `hits_addend`, else the request's; 0
/// means 1. Negative hits (Envoy's refunds) are refused: quota is never handed back.
fn hits(request_hits: u32, d: &RateLimitDescriptor, index: usize) -> Result<i64, Status> {
    if d.is_negative_hits {
        return Err(Status::invalid_argument(format!(
            "descriptor {index}: is_negative_hits asks to hand units back, which this server does not do"
        )));
    }
    let n = d.hits_addend.map_or(u64::from(request_hits), |h| h.value);
    i64::try_from(n.max(1)).map_err(|_| {
        Status::invalid_argument(format!(
            "descriptor {index}: hits_addend {n} is larger than {}",
            i64::MAX
        ))
    })
}

/// The bag of one descriptor, and the entries whose values did not convert.
fn descriptor_bag(
    manifest: &Manifest,
    d: &RateLimitDescriptor,
) -> (SlotBag, Vec<super::attributes::ConvertError>) {
    let mut b = BagBuilder::new(manifest);
    for e in &d.entries {
        let key = if e.key == REMOTE_ADDRESS {
            "source.ip"
        } else {
            e.key.as_str()
        };
        b.keyed_text(key, &e.value);
    }
    b.finish()
}

/// A descriptor's status: OVER_LIMIT when granted less than `asked` or refused by a
/// handler; the limit and what is left of it when the handler told them.
fn descriptor_status(result: &QuotaResult, asked: i64, quota: &str) -> DescriptorStatus {
    let refused = !result.status.is_ok() || result.granted_amount < asked;
    DescriptorStatus {
        code: if refused { Code::OverLimit } else { Code::Ok } as i32,
        current_limit: result.budget.map(|b| RateLimit {
            name: quota.to_owned(),
            requests_per_unit: clamp_u32(b.max_amount),
            unit: unit_of(b.window) as i32,
        }),
        limit_remaining: result.budget.map_or(0, |b| clamp_u32(b.remaining)),
        ..DescriptorStatus::default()
    }
}

fn clamp_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Envoy's unit for a window that is exactly one of them; UNKNOWN otherwise (Envoy
/// then leaves the window out of `x-ratelimit-limit`).
fn unit_of(window: Duration) -> Unit {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    if window.subsec_nanos() != 0 {
        return Unit::Unknown;
    }
    match window.as_secs() {
        1 => Unit::Second,
        MINUTE => Unit::Minute,
        HOUR => Unit::Hour,
        DAY => Unit::Day,
        n if n == 7 * DAY => Unit::Week,
        _ => Unit::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::google::protobuf::UInt64Value;
    use expr_lang::{AttrKey, Bag, Value};
    use templates::{QuotaBudget, Status as HandlerStatus, code};

    use super::*;

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: (*k).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect(),
            ..RateLimitDescriptor::default()
        }
    }

    fn get<'b>(m: &Manifest, bag: &'b SlotBag, name: &str) -> Option<Value<'b>> {
        bag.get(AttrKey {
            name,
            id: m.get(name).expect("declared").id,
        })
    }

    #[test]
    fn ratelimit_entries_become_typed_attributes() {
        let m = Manifest::istio_vocabulary();
        let d = descriptor(&[
            ("remote_address", "10.1.2.3"),
            ("request.api_key", "key-1"),
            ("destination.port", "9080"),
            ("generic_key", "slowpath"),
            ("destination_cluster", "reviews"),
            ("source_cluster", "ingress"),
            ("response.code", "-"),
        ]);
        let (bag, rejected) = descriptor_bag(&m, &d);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(
            get(&m, &bag, "source.ip"),
            Some(Value::IpAddress(vec![10, 1, 2, 3].into()))
        );
        assert_eq!(get(&m, &bag, "request.api_key"), Some(Value::str("key-1")));
        assert_eq!(get(&m, &bag, "destination.port"), Some(Value::Int64(9080)));
        // `-` is absent; built-in keys that are not attribute names set nothing.
        assert_eq!(get(&m, &bag, "response.code"), None);
        let set = m
            .iter()
            .filter(|(name, _)| get(&m, &bag, name).is_some())
            .count();
        assert_eq!(set, 3);
    }

    #[test]
    fn ratelimit_values_that_do_not_convert_are_skipped_and_reported() {
        let m = Manifest::istio_vocabulary();
        let d = descriptor(&[
            ("remote_address", "unknown"),
            ("destination.port", "http"),
            ("source.user", "alice"),
        ]);
        let (bag, rejected) = descriptor_bag(&m, &d);
        let names: Vec<_> = rejected.iter().map(|r| r.attribute.as_str()).collect();
        assert_eq!(names, ["source.ip", "destination.port"]);
        assert_eq!(get(&m, &bag, "source.ip"), None);
        assert_eq!(get(&m, &bag, "source.user"), Some(Value::str("alice")));
    }

    #[test]
    fn ratelimit_hits_come_from_the_descriptor_else_the_request() {
        let plain = descriptor(&[]);
        assert_eq!(hits(0, &plain, 0).unwrap(), 1);
        assert_eq!(hits(3, &plain, 0).unwrap(), 3);
        let own = RateLimitDescriptor {
            hits_addend: Some(UInt64Value { value: 5 }),
            ..plain.clone()
        };
        assert_eq!(hits(3, &own, 0).unwrap(), 5);
        let zero = RateLimitDescriptor {
            hits_addend: Some(UInt64Value { value: 0 }),
            ..plain.clone()
        };
        assert_eq!(hits(3, &zero, 0).unwrap(), 1);
        let huge = RateLimitDescriptor {
            hits_addend: Some(UInt64Value { value: u64::MAX }),
            ..plain.clone()
        };
        let e = hits(0, &huge, 2).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("descriptor 2: hits_addend"), "{e}");
        let refund = RateLimitDescriptor {
            is_negative_hits: true,
            ..plain
        };
        let e = hits(1, &refund, 1).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("is_negative_hits"), "{e}");
    }

    #[test]
    fn ratelimit_limits_name_their_flags() {
        let limits = RateLimitLimits {
            max_descriptors: 2,
            max_entries: 3,
        };
        let req = |n: usize, entries: usize| RateLimitRequest {
            domain: "q".into(),
            descriptors: vec![descriptor(&vec![("k", "v"); entries]); n],
            hits_addend: 0,
        };
        assert!(check_limits(&req(2, 3), limits).is_ok());
        let e = check_limits(&req(3, 1), limits).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            e.message(),
            "the request has 3 descriptors; at most 2 are accepted (--max-ratelimit-descriptors)"
        );
        let e = check_limits(&req(2, 4), limits).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            e.message(),
            "descriptor 0 has 4 entries; at most 3 are accepted (--max-ratelimit-descriptor-entries)"
        );
        let e = check_limits(&req(0, 0), limits).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    fn snapshot(yaml: &str) -> Arc<Snapshot> {
        use crate::config::compile::{CompileOptions, compile};
        let (docs, errors) =
            crate::config::store::parse_file(std::path::Path::new("quota.yaml"), yaml);
        assert!(errors.is_empty(), "{errors:?}");
        let compiled = compile(
            &docs,
            &CompileOptions {
                default_namespace: "istio-system".into(),
                build_handlers: false,
                generation: 1,
                resources: Arc::default(),
            },
            None,
        );
        assert!(
            compiled
                .diagnostics
                .iter()
                .all(|d| d.severity != crate::config::Severity::Error),
            "{:?}",
            compiled.diagnostics
        );
        Arc::new(compiled.snapshot)
    }

    const INSTANCES: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: perclient, namespace: istio-system}
spec:
  compiledTemplate: quota
  params: {dimensions: {ip: source.ip | ip("0.0.0.0")}}
---
apiVersion: config.istio.io/v1alpha2
kind: quota
metadata: {name: legacy, namespace: istio-system}
spec: {dimensions: {ip: source.ip | ip("0.0.0.0")}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: perclient, namespace: bookinfo}
spec:
  compiledTemplate: quota
  params: {dimensions: {ip: source.ip | ip("0.0.0.0")}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: metric
  params: {value: "1"}
"#;

    #[test]
    fn ratelimit_domains_name_quota_instances() {
        let snap = snapshot(INSTANCES);
        let ok = |d: &str| resolve_domain(&snap, d).unwrap();
        assert_eq!(ok("perclient"), "perclient.instance.istio-system");
        assert_eq!(ok("legacy"), "legacy.quota.istio-system");
        assert_eq!(
            ok("perclient.instance.bookinfo"),
            "perclient.instance.bookinfo"
        );
        assert_eq!(
            ok("perclient.instance.istio-system"),
            "perclient.instance.istio-system"
        );
        // A metric instance is not a domain; nor is a short name of another namespace.
        for unknown in [
            "requestcount",
            "requestcount.instance.istio-system",
            "Perclient",
        ] {
            let e = resolve_domain(&snap, unknown).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert_eq!(
                e.message(),
                format!(
                    "rate limit domain {unknown:?} names no quota instance; known quota instances: legacy, perclient.instance.bookinfo, perclient"
                )
            );
        }
        let long = "x".repeat(1000);
        let e = resolve_domain(&snap, &long).unwrap_err();
        assert!(e.message().len() < 300, "{}", e.message());
        let empty = snapshot("");
        assert!(
            resolve_domain(&empty, "perclient")
                .unwrap_err()
                .message()
                .ends_with("the serving configuration has no quota instances")
        );
    }

    fn result(granted: i64, status: HandlerStatus, budget: Option<QuotaBudget>) -> QuotaResult {
        QuotaResult {
            status,
            valid_duration: Duration::ZERO,
            granted_amount: granted,
            budget,
        }
    }

    #[test]
    fn ratelimit_statuses_tell_the_decision_limit_and_remaining() {
        let budget = |max, secs, remaining| {
            Some(QuotaBudget {
                max_amount: max,
                window: Duration::from_secs(secs),
                remaining,
            })
        };
        let s = descriptor_status(
            &result(2, HandlerStatus::OK, budget(10, 60, 8)),
            2,
            "q.i.ns",
        );
        assert_eq!(s.code, Code::Ok as i32);
        assert_eq!(
            s.current_limit,
            Some(RateLimit {
                name: "q.i.ns".into(),
                requests_per_unit: 10,
                unit: Unit::Minute as i32,
            })
        );
        assert_eq!(s.limit_remaining, 8);
        // Granted less than asked.
        let s = descriptor_status(&result(0, HandlerStatus::OK, budget(10, 10, 0)), 1, "q");
        assert_eq!(s.code, Code::OverLimit as i32);
        assert_eq!(s.current_limit.map(|l| l.unit), Some(Unit::Unknown as i32));
        // A handler's refusal (redisquota), and no budget told.
        let exhausted = HandlerStatus::new(code::RESOURCE_EXHAUSTED, "no");
        let s = descriptor_status(&result(1, exhausted, None), 1, "q");
        assert_eq!(s.code, Code::OverLimit as i32);
        assert_eq!((s.current_limit, s.limit_remaining), (None, 0));
        // No rule charges the quota: granted in full, no budget.
        let s = descriptor_status(&result(1, HandlerStatus::OK, None), 1, "q");
        assert_eq!(s.code, Code::Ok as i32);
    }

    #[test]
    fn ratelimit_units_are_exact_windows_only() {
        let secs = Duration::from_secs;
        assert_eq!(unit_of(secs(1)), Unit::Second);
        assert_eq!(unit_of(secs(3600)), Unit::Hour);
        assert_eq!(unit_of(secs(86_400)), Unit::Day);
        assert_eq!(unit_of(secs(604_800)), Unit::Week);
        assert_eq!(unit_of(secs(10)), Unit::Unknown);
        assert_eq!(unit_of(Duration::from_millis(1500)), Unit::Unknown);
        assert_eq!(unit_of(Duration::ZERO), Unit::Unknown);
    }

    #[test]
    fn ratelimit_dedup_ids_are_unique_per_call() {
        let ids = DedupIds::new();
        let (a, b) = (ids.call(), ids.call());
        assert_ne!(a, b);
        assert_ne!(DedupIds::new().nonce, ids.nonce);
    }

    const MEMQUOTA: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: perclient, namespace: istio-system}
spec:
  compiledTemplate: quota
  params: {dimensions: {ip: source.ip | ip("0.0.0.0")}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: counts, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - name: perclient.instance.istio-system
      maxAmount: 2
      validDuration: 1h
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: charge, namespace: istio-system}
spec:
  actions:
  - {handler: counts, instances: [perclient]}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: perclient, namespace: bookinfo}
spec:
  compiledTemplate: quota
  params: {dimensions: {ip: source.ip | ip("0.0.0.0")}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: counts, namespace: bookinfo}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - name: perclient.instance.bookinfo
      maxAmount: 1
      validDuration: 1h
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: charge, namespace: bookinfo}
spec:
  actions:
  - {handler: counts, instances: [perclient]}
"#;

    fn front_end(dir: &std::path::Path) -> RateLimitFrontEnd {
        std::fs::write(dir.join("quota.yaml"), MEMQUOTA).unwrap();
        let runtime = Runtime::new(
            crate::runtime::RuntimeOptions {
                config_dirs: vec![dir.to_owned()],
                resources: Arc::default(),
                default_namespace: "istio-system".into(),
                policy_errors: Default::default(),
                check_cache_size: 0,
            },
            crate::metrics::Metrics::new(),
        );
        let loaded = runtime.reload();
        let errors = loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == crate::config::Severity::Error)
            .count();
        assert!(loaded.applied && errors == 0, "{loaded:?}");
        RateLimitFrontEnd::new(Arc::new(runtime), RateLimitLimits::default())
    }

    fn request(clients: &[&str]) -> RateLimitRequest {
        RateLimitRequest {
            domain: "perclient".into(),
            descriptors: clients
                .iter()
                .map(|ip| descriptor(&[("remote_address", ip)]))
                .collect(),
            hits_addend: 0,
        }
    }

    #[tokio::test]
    async fn ratelimit_a_qualified_domain_charges_that_instance_only() {
        let dir = tempfile::tempdir().unwrap();
        let fe = front_end(dir.path());
        let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
        let bookinfo = |ns: &str| RateLimitRequest {
            domain: "perclient.instance.bookinfo".into(),
            descriptors: vec![descriptor(&[
                ("remote_address", "10.0.0.9"),
                ("destination.namespace", ns),
            ])],
            hits_addend: 0,
        };
        // bookinfo's rules apply to requests whose identity is bookinfo; only its
        // instance (1 an hour) is charged, not istio-system's `perclient` (2 an hour).
        let r = ask(&fe, bookinfo("bookinfo")).await.unwrap();
        assert_eq!(codes(&r), (ok, vec![(ok, 0)]));
        let limit = r.statuses[0].current_limit.clone().unwrap();
        assert_eq!(
            (limit.name.as_str(), limit.requests_per_unit),
            ("perclient.instance.bookinfo", 1)
        );
        let r = ask(&fe, bookinfo("bookinfo")).await.unwrap();
        assert_eq!(codes(&r), (over, vec![(over, 0)]));
        // Another identity: no rule charges the instance, so it is granted, untold.
        let r = ask(&fe, bookinfo("default")).await.unwrap();
        assert_eq!(codes(&r), (ok, vec![(ok, 0)]));
        assert_eq!(r.statuses[0].current_limit, None);
        // istio-system's instance of the same short name was never charged.
        let r = ask(&fe, request(&["10.0.0.9"])).await.unwrap();
        assert_eq!(codes(&r), (ok, vec![(ok, 1)]));
    }

    async fn ask(
        fe: &RateLimitFrontEnd,
        req: RateLimitRequest,
    ) -> Result<RateLimitResponse, Status> {
        fe.should_rate_limit(Request::new(req))
            .await
            .map(Response::into_inner)
    }

    fn codes(r: &RateLimitResponse) -> (i32, Vec<(i32, u32)>) {
        (
            r.overall_code,
            r.statuses
                .iter()
                .map(|s| (s.code, s.limit_remaining))
                .collect(),
        )
    }

    #[tokio::test]
    async fn ratelimit_descriptors_are_allocations_on_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let fe = front_end(dir.path());
        let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
        let r = ask(&fe, request(&["10.0.0.1"])).await.unwrap();
        assert_eq!(codes(&r), (ok, vec![(ok, 1)]));
        let limit = r.statuses[0].current_limit.clone().unwrap();
        assert_eq!(
            (limit.name.as_str(), limit.requests_per_unit, limit.unit),
            ("perclient.instance.istio-system", 2, Unit::Hour as i32)
        );
        // An invalid request charges nothing, not even its valid descriptors.
        let mut invalid = request(&["10.0.0.1", "10.0.0.1"]);
        invalid.descriptors[1].is_negative_hits = true;
        assert!(ask(&fe, invalid).await.is_err());
        // Statuses in order; one refused descriptor makes the call OVER_LIMIT; another
        // client's budget is its own.
        let r = ask(&fe, request(&["10.0.0.1", "10.0.0.2", "10.0.0.1"]))
            .await
            .unwrap();
        assert_eq!(codes(&r), (over, vec![(ok, 0), (ok, 1), (over, 0)]));
        let m = &fe.runtime.metrics.envoy_ratelimit;
        assert_eq!(m.requests.with_label_values(&["ok"]).get(), 1);
        assert_eq!(m.requests.with_label_values(&["over_limit"]).get(), 1);
        assert_eq!(m.requests.with_label_values(&["error"]).get(), 1);
        assert_eq!(m.descriptors.with_label_values(&["over_limit"]).get(), 1);
        assert_eq!(m.descriptors.with_label_values(&["ok"]).get(), 3);
    }
}
