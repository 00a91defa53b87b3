//! Request → rules whose `match` holds → instances built from the bag → handlers →
//! combined result. Check, quota and report, with Mixer's semantics.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use expr_lang::{AttrKey, Bag, Recorder, Value, ValueType};
use futures::stream::{FuturesUnordered, StreamExt};
use templates::handler::{BoxFuture, CheckReply};
use templates::instances::{edge, logentry, metric, reportnothing, tracespan};
use templates::{
    BuildError, CheckResult, HandlerError, InstanceBuilder, QuotaArgs, QuotaResult, Reply, Status,
    TemplateKind, code,
};

use super::snapshot::{Destination, HandlerEntry, HeaderOperationKind, RoutedRule, Snapshot};
use crate::telemetry::metrics::Metrics;

/// What happens when a rule's `match` cannot be evaluated, or a Check instance cannot be
/// built after its rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PolicyErrorMode {
    /// As Go Mixer: the rule does not apply; an instance that fails to build fails the
    /// Check RPC with INTERNAL, leaving the decision to the proxy's fail policy.
    #[default]
    Mixer,
    /// Deny: a PERMISSION_DENIED precondition naming the rule, the instance and the error.
    Closed,
}

/// The default validity when no handler gave one.
pub const DEFAULT_VALID_DURATION: Duration = Duration::from_secs(60);
pub const DEFAULT_VALID_USE_COUNT: i32 = 10_000;

/// One header edit for the route directive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderEdit {
    pub name: String,
    pub value: String,
    pub operation: HeaderOperationKind,
}

/// Header edits and a direct response for the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteDirective {
    pub request_header_operations: Vec<HeaderEdit>,
    pub response_header_operations: Vec<HeaderEdit>,
    pub direct_response_code: u32,
    pub direct_response_body: String,
}

impl RouteDirective {
    pub fn is_empty(&self) -> bool {
        self.request_header_operations.is_empty()
            && self.response_header_operations.is_empty()
            && self.direct_response_code == 0
    }
}

/// The precondition part of a Check answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    pub status: Status,
    pub valid_duration: Duration,
    pub valid_use_count: i32,
    pub route: RouteDirective,
}

/// A failure that Mixer reports as a gRPC error rather than a denial.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("performing check operation failed: {0}")]
pub struct DispatchError(pub String);

/// `google.rpc.Code` → HTTP status, as Mixer's server mapped it.
pub fn http_status_for(code: i32) -> u32 {
    match code {
        code::OK => 200,
        code::CANCELLED => 408,
        code::INVALID_ARGUMENT | code::OUT_OF_RANGE => 400,
        code::DEADLINE_EXCEEDED => 504,
        code::NOT_FOUND => 404,
        code::ALREADY_EXISTS | code::ABORTED => 409,
        code::PERMISSION_DENIED => 403,
        code::RESOURCE_EXHAUSTED => 429,
        code::FAILED_PRECONDITION => 412,
        code::UNIMPLEMENTED => 501,
        code::UNAVAILABLE => 503,
        code::UNAUTHENTICATED => 401,
        _ => 500,
    }
}

fn key<'s>(snap: &'s Snapshot, name: &'s str) -> (AttrKey<'s>, ValueType) {
    match snap.manifest.get(name) {
        Some(info) => (AttrKey { name, id: info.id }, info.value_type),
        None => (
            AttrKey {
                name,
                id: AttrKey::NO_ID,
            },
            ValueType::String,
        ),
    }
}

/// Reads a string attribute, recording the read.
fn read_string<'b, B: Bag + ?Sized, R: Recorder>(
    snap: &Snapshot,
    bag: &'b B,
    rec: &mut R,
    name: &str,
) -> Option<Cow<'b, str>> {
    let (k, ty) = key(snap, name);
    let v = bag.get(k);
    rec.attribute(name, ty, v.is_some());
    match v? {
        Value::String(s) | Value::DnsName(s) | Value::Uri(s) | Value::EmailAddress(s) => Some(s),
        _ => None,
    }
}

/// The namespace whose rules apply, besides the default namespace's:
/// `destination.namespace` for inbound (or unset) reporters, `source.namespace` for
/// outbound ones.
pub fn identity_namespace<'b, B: Bag + ?Sized, R: Recorder>(
    snap: &Snapshot,
    bag: &'b B,
    rec: &mut R,
) -> Cow<'b, str> {
    let kind = read_string(snap, bag, rec, "context.reporter.kind");
    let attr = match kind.as_deref() {
        None | Some("inbound") => "destination.namespace",
        Some("outbound") => "source.namespace",
        Some(_) => return Cow::Borrowed(""),
    };
    read_string(snap, bag, rec, attr).unwrap_or(Cow::Borrowed(""))
}

/// Counts a handler call.
fn count_dispatch(metrics: &Metrics, template: TemplateKind, handler: &HandlerEntry, failed: bool) {
    handler
        .dispatch_counters
        .get(template, failed, || {
            metrics.dispatches.with_label_values(&[
                template.name(),
                handler.name.as_str(),
                handler.adapter,
                if failed { "true" } else { "false" },
            ])
        })
        .inc();
}

/// Failure log lines allowed at once, then one per [`FAILURE_LOG_PERIOD`]: a rule or handler
/// that fails usually fails on every request, and a line per request would cost more than
/// the answers (and fill the disk). Each line says how many failures went unlogged before it.
const FAILURE_LOG_BURST: u32 = 5;
const FAILURE_LOG_PERIOD: Duration = Duration::from_secs(1);

/// A rate limit on one kind of failure log line. Process-wide, so the log's cost is bounded
/// however many rules or handlers fail; checking it is one atomic compare-and-swap.
struct FailureLog {
    limiter: governor::DefaultDirectRateLimiter,
    unlogged: std::sync::atomic::AtomicU64,
}

impl FailureLog {
    fn new() -> FailureLog {
        let quota = governor::Quota::with_period(FAILURE_LOG_PERIOD)
            .expect("non-zero period")
            .allow_burst(std::num::NonZeroU32::new(FAILURE_LOG_BURST).expect("non-zero burst"));
        FailureLog {
            limiter: governor::RateLimiter::direct(quota),
            unlogged: Default::default(),
        }
    }

    /// `Some(failures not logged since the last line)` when a line may be written now.
    fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.limiter.check().is_err() {
            self.unlogged.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.unlogged.swap(0, Relaxed))
    }
}

static POLICY_ERROR_LOG: std::sync::LazyLock<FailureLog> =
    std::sync::LazyLock::new(FailureLog::new);
static QUOTA_HANDLER_ERROR_LOG: std::sync::LazyLock<FailureLog> =
    std::sync::LazyLock::new(FailureLog::new);

/// Logs a failed quota handler call, rate limited (an unreachable Redis fails every call).
fn quota_handler_failed(handler: &str, error: &dyn std::fmt::Display) {
    if let Some(unlogged) = QUOTA_HANDLER_ERROR_LOG.admit() {
        tracing::warn!(handler = %handler, error = %error, unlogged_before = unlogged, "Quota handler failed.");
    }
}

/// Counts a rule that failed at `stage` (`match`, `instance`, `handler`) and logs it, rate
/// limited, whatever `--policy-errors` then does with the request.
fn policy_error(
    metrics: &Metrics,
    rule: &str,
    stage: &str,
    api: &str,
    error: &dyn std::fmt::Display,
) {
    metrics
        .policy_errors
        .with_label_values(&[rule, stage, api])
        .inc();
    let Some(unlogged) = POLICY_ERROR_LOG.admit() else {
        return;
    };
    tracing::warn!(
        rule = %rule,
        stage = %stage,
        api = %api,
        error = %error,
        unlogged_before = unlogged,
        "Rule failed; counted in mixer_policy_errors_total, handled per --policy-errors."
    );
}

/// Combines check results in completion order.
struct Combiner {
    result: Option<CheckResult>,
    failures: Vec<String>,
    first_failure: Option<Status>,
}

impl Combiner {
    fn new() -> Combiner {
        Combiner {
            result: None,
            failures: Vec::new(),
            first_failure: None,
        }
    }

    fn add(&mut self, handler: &str, r: CheckResult) {
        if !r.status.is_ok() {
            self.failures
                .push(format!("{handler}:{}", r.status.message));
            if self.first_failure.is_none() {
                self.first_failure = Some(r.status.clone());
            }
        }
        let is_default = r.status.is_ok()
            && r.valid_duration.is_zero()
            && r.valid_use_count == 0
            && r.status.direct_response.is_none();
        match &mut self.result {
            None if is_default => {}
            None => self.result = Some(r),
            Some(m) => {
                m.valid_duration = m.valid_duration.min(r.valid_duration);
                m.valid_use_count = m.valid_use_count.min(r.valid_use_count);
            }
        }
    }

    fn finish(self) -> (Status, Duration, i32) {
        let (duration, count) = match &self.result {
            Some(r) => (r.valid_duration, r.valid_use_count),
            None => (DEFAULT_VALID_DURATION, DEFAULT_VALID_USE_COUNT),
        };
        match self.first_failure {
            Some(first) => (
                Status {
                    code: first.code,
                    message: self.failures.join(", "),
                    direct_response: first.direct_response,
                },
                duration,
                count,
            ),
            None => (Status::OK, duration, count),
        }
    }
}

/// A check handler's answer that arrived later, with who gave it.
type CheckCompletion<'h> = (
    &'h HandlerEntry,
    TemplateKind,
    Result<CheckResult, HandlerError>,
);

/// Calls a check handler with an instance built from the bag.
fn call_check<'h, 'b, B: Bag + ?Sized, R: Recorder>(
    builder: &'b InstanceBuilder,
    entry: &'h HandlerEntry,
    bag: &'b B,
    rec: &mut R,
) -> Result<Option<CheckReply<'h>>, BuildError> {
    let h = &*entry.handler;
    Ok(match builder.kind() {
        TemplateKind::CheckNothing => h
            .check_nothing()
            .map(|c| c.handle_check_nothing(&builder.checknothing())),
        TemplateKind::ListEntry => {
            let inst = builder.listentry(bag, rec)?;
            h.list_entry().map(|c| c.handle_list_entry(&inst))
        }
        TemplateKind::Authorization => {
            let inst = builder.authorization(bag, rec)?;
            h.authorization().map(|c| c.handle_authorization(&inst))
        }
        TemplateKind::ApiKey => {
            let inst = builder.apikey(bag, rec)?;
            h.api_key().map(|c| c.handle_api_key(&inst))
        }
        _ => None,
    })
}

fn deny(message: String) -> CheckOutcome {
    CheckOutcome {
        status: Status::new(code::PERMISSION_DENIED, message),
        valid_duration: Duration::ZERO,
        valid_use_count: 0,
        route: RouteDirective::default(),
    }
}

/// Runs the Check variety for one request.
pub async fn check<B: Bag + ?Sized + Sync, R: Recorder + Send>(
    snap: &Snapshot,
    bag: &B,
    rec: &mut R,
    mode: PolicyErrorMode,
    metrics: &Metrics,
) -> Result<CheckOutcome, DispatchError> {
    let namespace = identity_namespace(snap, bag, rec);
    let mut combiner = Combiner::new();
    let mut pending: FuturesUnordered<BoxFuture<'_, CheckCompletion<'_>>> = FuturesUnordered::new();
    let mut matched: Vec<&RoutedRule> = Vec::new();

    for routed in snap.check.for_namespace(&namespace) {
        let rule = &routed.rule;
        if let Some(pred) = &rule.predicate {
            match pred.evaluate_bool_recorded(bag, rec) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    policy_error(metrics, &rule.name, "match", "check", &e);
                    match mode {
                        PolicyErrorMode::Mixer => {
                            tracing::debug!(rule = %rule.name, error = %e, "Rule match could not be evaluated; the rule does not apply.");
                            continue;
                        }
                        PolicyErrorMode::Closed => {
                            return Ok(deny(format!(
                                "rule '{}': match could not be evaluated: {e}",
                                rule.name
                            )));
                        }
                    }
                }
            }
        }
        matched.push(routed);
        for Destination { handler, instances } in &routed.destinations {
            for builder in instances {
                let reply = match call_check(builder, handler, bag, rec) {
                    Ok(Some(reply)) => reply,
                    Ok(None) => {
                        count_dispatch(metrics, builder.kind(), handler, true);
                        return Err(DispatchError(format!(
                            "handler '{}' does not implement template '{}'",
                            handler.name,
                            builder.kind()
                        )));
                    }
                    Err(e) => {
                        policy_error(metrics, &rule.name, "instance", "check", &e);
                        return match mode {
                            PolicyErrorMode::Mixer => Err(DispatchError(e.to_string())),
                            PolicyErrorMode::Closed => Ok(deny(format!(
                                "rule '{}': instance '{}' could not be built: {}",
                                rule.name, e.instance, e.error
                            ))),
                        };
                    }
                };
                let kind = builder.kind();
                match reply {
                    Reply::Ready(Ok(r)) => {
                        count_dispatch(metrics, kind, handler, false);
                        combiner.add(&handler.name, r);
                    }
                    Reply::Ready(Err(e)) => {
                        count_dispatch(metrics, kind, handler, true);
                        return handler_failure(mode, metrics, &rule.name, handler, e);
                    }
                    Reply::Later(fut) => {
                        let entry: &HandlerEntry = handler;
                        pending.push(Box::pin(async move { (entry, kind, fut.await) }));
                    }
                }
            }
        }
    }
    while let Some((entry, kind, r)) = pending.next().await {
        match r {
            Ok(r) => {
                count_dispatch(metrics, kind, entry, false);
                combiner.add(&entry.name, r);
            }
            Err(e) => {
                count_dispatch(metrics, kind, entry, true);
                return handler_failure(mode, metrics, "", entry, e);
            }
        }
    }

    let (status, valid_duration, valid_use_count) = combiner.finish();
    let mut route = RouteDirective::default();
    if let Some(direct) = &status.direct_response {
        route.direct_response_code = if direct.code == 0 {
            http_status_for(status.code)
        } else {
            direct.code
        };
        route.direct_response_body = direct.body.clone();
        for (name, value) in &direct.headers {
            if name.eq_ignore_ascii_case("set-cookie") {
                for part in value.split(',') {
                    route.response_header_operations.push(HeaderEdit {
                        name: name.clone(),
                        value: part.to_owned(),
                        operation: HeaderOperationKind::Append,
                    });
                }
            } else {
                route.response_header_operations.push(HeaderEdit {
                    name: name.clone(),
                    value: value.clone(),
                    operation: HeaderOperationKind::Replace,
                });
            }
        }
    }
    if status.is_ok() {
        for routed in matched {
            let rule = &routed.rule;
            for (ops, out) in [
                (
                    &rule.request_header_operations,
                    &mut route.request_header_operations,
                ),
                (
                    &rule.response_header_operations,
                    &mut route.response_header_operations,
                ),
            ] {
                for op in ops {
                    if op.operation == HeaderOperationKind::Remove {
                        out.push(HeaderEdit {
                            name: op.name.clone(),
                            value: String::new(),
                            operation: op.operation,
                        });
                        continue;
                    }
                    for v in &op.values {
                        // An empty or failing value suppresses the operation.
                        if let Ok(value) = v.evaluate_recorded(bag, rec)
                            && let Some(s) = value.as_str()
                            && !s.is_empty()
                        {
                            out.push(HeaderEdit {
                                name: op.name.clone(),
                                value: s.to_owned(),
                                operation: op.operation,
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(CheckOutcome {
        status,
        valid_duration,
        valid_use_count,
        route,
    })
}

fn handler_failure(
    mode: PolicyErrorMode,
    metrics: &Metrics,
    rule: &str,
    handler: &HandlerEntry,
    e: HandlerError,
) -> Result<CheckOutcome, DispatchError> {
    policy_error(metrics, rule, "handler", "check", &e);
    match mode {
        PolicyErrorMode::Mixer => Err(DispatchError(format!("handler '{}': {e}", handler.name))),
        PolicyErrorMode::Closed => Ok(deny(format!(
            "rule '{rule}': handler '{}' failed: {e}",
            handler.name
        ))),
    }
}

/// The answer to one requested quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaOutcome {
    pub status: Status,
    pub valid_duration: Duration,
    pub granted_amount: i64,
}

impl QuotaOutcome {
    fn granted(amount: i64) -> QuotaOutcome {
        QuotaOutcome {
            status: Status::OK,
            valid_duration: DEFAULT_VALID_DURATION,
            granted_amount: amount,
        }
    }

    fn zero() -> QuotaOutcome {
        QuotaOutcome {
            status: Status::OK,
            valid_duration: Duration::ZERO,
            granted_amount: 0,
        }
    }
}

/// The short name of an instance (`requestcount` of `requestcount.quota.istio-system`).
fn short_name(fqn: &str) -> &str {
    fqn.split('.').next().unwrap_or(fqn)
}

/// Allocates one requested quota. Only rules whose match holds charge their
/// handlers; a quota no rule charges is granted, as Mixer did.
pub async fn quota<B: Bag + ?Sized + Sync, R: Recorder + Send>(
    snap: &Snapshot,
    bag: &B,
    rec: &mut R,
    name: &str,
    args: QuotaArgs<'_>,
    metrics: &Metrics,
) -> QuotaOutcome {
    let namespace = identity_namespace(snap, bag, rec);
    let mut known = false;
    let mut pending: FuturesUnordered<
        BoxFuture<'_, (&HandlerEntry, Result<QuotaResult, HandlerError>)>,
    > = FuturesUnordered::new();
    let mut first: Option<QuotaOutcome> = None;
    let mut failures: Vec<String> = Vec::new();
    let mut failed_status: Option<i32> = None;

    let mut record = |entry: &HandlerEntry, r: QuotaResult, first: &mut Option<QuotaOutcome>| {
        if !r.status.is_ok() {
            failures.push(format!("{}:{}", entry.name, r.status.message));
            failed_status.get_or_insert(r.status.code);
        }
        // The first non-empty answer wins: an empty one (OK, nothing granted,
        // no validity, as a denier gives) is kept only in case no other answer comes.
        let empty = r.status.is_ok() && r.granted_amount == 0 && r.valid_duration.is_zero();
        let outcome = QuotaOutcome {
            status: r.status,
            valid_duration: r.valid_duration,
            granted_amount: r.granted_amount,
        };
        match first {
            None => *first = Some(outcome),
            Some(prev)
                if !empty
                    && prev.status.is_ok()
                    && prev.granted_amount == 0
                    && prev.valid_duration.is_zero() =>
            {
                *first = Some(outcome)
            }
            Some(_) => {}
        }
    };

    for routed in snap.quota.for_namespace(&namespace) {
        let targets: Vec<(&Destination, &InstanceBuilder)> = routed
            .destinations
            .iter()
            .flat_map(|d| d.instances.iter().map(move |i| (d, &**i)))
            .filter(|(_, i)| short_name(i.name()).eq_ignore_ascii_case(name))
            .collect();
        if targets.is_empty() {
            continue;
        }
        known = true;
        let rule = &routed.rule;
        if let Some(pred) = &rule.predicate {
            match pred.evaluate_bool_recorded(bag, rec) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    policy_error(metrics, &rule.name, "match", "quota", &e);
                    tracing::debug!(rule = %rule.name, error = %e, "Quota rule match could not be evaluated; the rule does not apply.");
                    continue;
                }
            }
        }
        for (dest, builder) in targets {
            let inst = match builder.quota(bag, rec) {
                Ok(i) => i,
                Err(e) => {
                    policy_error(metrics, &rule.name, "instance", "quota", &e);
                    return QuotaOutcome::zero();
                }
            };
            let Some(q) = dest.handler.handler.quota() else {
                continue;
            };
            let entry: &HandlerEntry = &dest.handler;
            match q.handle_quota(&inst, args) {
                Reply::Ready(Ok(r)) => {
                    count_dispatch(metrics, TemplateKind::Quota, entry, false);
                    record(entry, r, &mut first);
                }
                Reply::Ready(Err(e)) => {
                    count_dispatch(metrics, TemplateKind::Quota, entry, true);
                    quota_handler_failed(&entry.name, &e);
                    return QuotaOutcome::zero();
                }
                Reply::Later(fut) => pending.push(Box::pin(async move { (entry, fut.await) })),
            }
        }
    }
    while let Some((entry, r)) = pending.next().await {
        match r {
            Ok(r) => {
                count_dispatch(metrics, TemplateKind::Quota, entry, false);
                record(entry, r, &mut first);
            }
            Err(e) => {
                count_dispatch(metrics, TemplateKind::Quota, entry, true);
                quota_handler_failed(&entry.name, &e);
                return QuotaOutcome::zero();
            }
        }
    }
    if !known {
        tracing::debug!(quota = %name, "No quota instance has this name; granted.");
    }
    match first {
        None => QuotaOutcome::granted(args.amount),
        Some(mut outcome) => {
            if let Some(code) = failed_status {
                outcome.status = Status::new(code, failures.join(", "));
            }
            outcome
        }
    }
}

/// Report instances buffered for one handler and template.
enum Batch<'a> {
    Metric(Vec<metric::Instance<'a>>),
    LogEntry(Vec<logentry::Instance<'a>>),
    TraceSpan(Vec<tracespan::Instance<'a>>),
    ReportNothing(Vec<reportnothing::Instance<'a>>),
    Edge(Vec<edge::Instance<'a>>),
}

struct Buffer<'a> {
    handler: &'a HandlerEntry,
    kind: TemplateKind,
    batch: Batch<'a>,
}

/// Runs the Report variety over a batch of attribute sets: instances are buffered per
/// handler and template, and each handler is called once with all of its instances.
/// Returns every instance-build and handler error (the caller reports them together).
pub fn report<'a, B: Bag + Sync>(
    snap: &'a Snapshot,
    bags: &'a [B],
    metrics: &Metrics,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut buffers: Vec<Buffer<'a>> = Vec::new();
    let mut rec = expr_lang::NoRecording;
    for bag in bags {
        let namespace = identity_namespace(snap, bag, &mut rec);
        for routed in snap.report.for_namespace(&namespace) {
            let rule = &routed.rule;
            if let Some(pred) = &rule.predicate {
                match pred.evaluate_bool(bag) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        policy_error(metrics, &rule.name, "match", "report", &e);
                        continue;
                    }
                }
            }
            for dest in &routed.destinations {
                for builder in &dest.instances {
                    let kind = builder.kind();
                    let idx = match buffers
                        .iter()
                        .position(|b| b.kind == kind && std::ptr::eq(b.handler, &*dest.handler))
                    {
                        Some(i) => i,
                        None => {
                            let batch = match kind {
                                TemplateKind::Metric => Batch::Metric(Vec::new()),
                                TemplateKind::LogEntry => Batch::LogEntry(Vec::new()),
                                TemplateKind::TraceSpan => Batch::TraceSpan(Vec::new()),
                                TemplateKind::ReportNothing => Batch::ReportNothing(Vec::new()),
                                TemplateKind::Edge => Batch::Edge(Vec::new()),
                                _ => continue,
                            };
                            buffers.push(Buffer {
                                handler: &dest.handler,
                                kind,
                                batch,
                            });
                            buffers.len() - 1
                        }
                    };
                    let built: Result<(), BuildError> = match &mut buffers[idx].batch {
                        Batch::Metric(v) => builder.metric(bag, &mut rec).map(|i| v.push(i)),
                        Batch::LogEntry(v) => builder.logentry(bag, &mut rec).map(|i| v.push(i)),
                        Batch::TraceSpan(v) => builder.tracespan(bag, &mut rec).map(|i| v.push(i)),
                        Batch::ReportNothing(v) => {
                            v.push(builder.reportnothing());
                            Ok(())
                        }
                        Batch::Edge(v) => builder.edge(bag, &mut rec).map(|i| v.push(i)),
                    };
                    if let Err(e) = built {
                        policy_error(metrics, &rule.name, "instance", "report", &e);
                        errors.push(e.to_string());
                    }
                }
            }
        }
    }
    for b in &buffers {
        let h = &*b.handler.handler;
        let started = Instant::now();
        let result = match &b.batch {
            Batch::Metric(v) if !v.is_empty() => h.metric().map(|m| m.handle_metric(v)),
            Batch::LogEntry(v) if !v.is_empty() => h.log_entry().map(|m| m.handle_log_entry(v)),
            Batch::TraceSpan(v) if !v.is_empty() => h.trace_span().map(|m| m.handle_trace_span(v)),
            Batch::ReportNothing(v) if !v.is_empty() => {
                h.report_nothing().map(|m| m.handle_report_nothing(v))
            }
            Batch::Edge(v) if !v.is_empty() => h.edge().map(|m| m.handle_edge(v)),
            _ => continue,
        };
        metrics
            .dispatch_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Some(Ok(())) => count_dispatch(metrics, b.kind, b.handler, false),
            Some(Err(e)) => {
                count_dispatch(metrics, b.kind, b.handler, true);
                errors.push(format!("{}: {e}", b.handler.name));
            }
            None => {
                count_dispatch(metrics, b.kind, b.handler, true);
                errors.push(format!(
                    "{}: handler does not implement template '{}'",
                    b.handler.name, b.kind
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combining_follows_mixer() {
        let mut c = Combiner::new();
        c.add("a", CheckResult::ok(Duration::from_secs(5), 100));
        c.add(
            "b",
            CheckResult {
                status: Status::new(code::PERMISSION_DENIED, "no"),
                valid_duration: Duration::from_secs(2),
                valid_use_count: 1000,
            },
        );
        c.add(
            "c",
            CheckResult {
                status: Status::new(code::NOT_FOUND, "gone"),
                valid_duration: Duration::from_secs(9),
                valid_use_count: 7,
            },
        );
        let (s, d, n) = c.finish();
        assert_eq!(s.code, code::PERMISSION_DENIED);
        assert_eq!(s.message, "b:no, c:gone");
        assert_eq!((d, n), (Duration::from_secs(2), 7));
        let (s, d, n) = Combiner::new().finish();
        assert!(s.is_ok());
        assert_eq!((d, n), (DEFAULT_VALID_DURATION, DEFAULT_VALID_USE_COUNT));
    }

    #[test]
    fn http_mapping() {
        assert_eq!(http_status_for(code::PERMISSION_DENIED), 403);
        assert_eq!(http_status_for(code::FAILED_PRECONDITION), 412);
        assert_eq!(http_status_for(99), 500);
    }
}
