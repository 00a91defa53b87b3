//! The quota variety: one requested quota allocated by the handlers of the rules whose
//! `match` holds and that route an instance of that name. A quota no rule charges is
//! granted, as Mixer did.

use std::time::Duration;

use expr_lang::{Bag, Recorder};
use futures::stream::FuturesUnordered;
use templates::handler::BoxFuture;
use templates::{
    HandlerError, InstanceBuilder, QuotaArgs, QuotaResult, Reply, Status, TemplateKind,
};

use super::check::{DEFAULT_VALID_DURATION, next_answer};
use super::failures::{Stage, policy_error, quota_handler_failed};
use super::matching::{count_dispatch, identity_namespace, rule_matches};
use crate::config::snapshot::{Destination, HandlerEntry, RoutedRule, Snapshot};
use crate::metrics::Metrics;

/// One quota a Check asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaRequest<'a> {
    /// The quota instance's short name (`requestcount`, any namespace's), or its fully
    /// qualified name (`requestcount.instance.istio-system`, that instance only).
    pub name: &'a str,
    /// Units requested.
    pub amount: i64,
    /// Whether a partial grant is acceptable.
    pub best_effort: bool,
}

fn granted(amount: i64) -> QuotaResult {
    QuotaResult {
        status: Status::OK,
        valid_duration: DEFAULT_VALID_DURATION,
        granted_amount: amount,
        budget: None,
    }
}

/// Nothing granted: what a failure to allocate answers (never a silent grant).
fn nothing() -> QuotaResult {
    QuotaResult {
        status: Status::OK,
        valid_duration: Duration::ZERO,
        granted_amount: 0,
        budget: None,
    }
}

/// OK, nothing granted, no validity: what a denier answers.
fn is_empty(r: &QuotaResult) -> bool {
    r.status.is_ok() && r.granted_amount == 0 && r.valid_duration.is_zero()
}

/// The handlers' answers combined: the first non-empty answer wins (an empty one is kept
/// only in case no other comes), and any refusal's code and message are reported.
#[derive(Default)]
struct Answers {
    first: Option<QuotaResult>,
    failures: Vec<String>,
    failed_code: Option<i32>,
}

impl Answers {
    fn add(&mut self, handler: &str, r: QuotaResult) {
        if !r.status.is_ok() {
            self.failures
                .push(format!("{handler}:{}", r.status.message));
            self.failed_code.get_or_insert(r.status.code);
        }
        // A later answer replaces only an empty first one.
        let replace = self
            .first
            .as_ref()
            .is_none_or(|prev| is_empty(prev) && !is_empty(&r));
        if replace {
            self.first = Some(r);
        }
    }

    fn finish(self, requested: i64) -> QuotaResult {
        let Some(mut result) = self.first else {
            return granted(requested);
        };
        if let Some(code) = self.failed_code {
            result.status = Status::new(code, self.failures.join(", "));
        }
        result
    }
}

/// The instances of `routed` named `name` (case-insensitive; a short name matches the
/// instances of that short name, a dotted name only the instance of that full name),
/// with their destinations.
fn targets<'s>(routed: &'s RoutedRule, name: &str) -> Vec<(&'s Destination, &'s InstanceBuilder)> {
    let qualified = name.contains('.');
    routed
        .destinations
        .iter()
        .flat_map(|d| d.instances.iter().map(move |i| (d, &**i)))
        .filter(|(_, i)| {
            let candidate = if qualified {
                i.name()
            } else {
                short_name(i.name())
            };
            candidate.eq_ignore_ascii_case(name)
        })
        .collect()
}

/// The short name of an instance (`requestcount` of `requestcount.quota.istio-system`).
fn short_name(fqn: &str) -> &str {
    fqn.split('.').next().unwrap_or(fqn)
}

/// A quota handler's answer that arrives later, with who gave it.
type Later<'h> = BoxFuture<'h, (&'h HandlerEntry, Result<QuotaResult, HandlerError>)>;

/// Allocates one requested quota; `deduplication_id` already names the quota.
pub async fn allocate<B: Bag + ?Sized + Sync, R: Recorder + Send>(
    snap: &Snapshot,
    bag: &B,
    rec: &mut R,
    request: QuotaRequest<'_>,
    deduplication_id: &str,
    metrics: &Metrics,
) -> QuotaResult {
    let args = QuotaArgs {
        deduplication_id,
        amount: request.amount,
        best_effort: request.best_effort,
    };
    let namespace = identity_namespace(snap, bag, rec);
    let mut known = false;
    // Created only when a handler answers later (memquota answers at once).
    let mut pending: Option<FuturesUnordered<Later<'_>>> = None;
    let mut answers = Answers::default();

    for routed in snap.quota.for_namespace(&namespace) {
        let targets = targets(routed, request.name);
        if targets.is_empty() {
            continue;
        }
        known = true;
        let rule = &routed.rule;
        match rule_matches(rule, bag, rec, metrics, "quota") {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::debug!(rule = %rule.name, error = %e, "Quota rule match could not be evaluated; the rule does not apply.");
                continue;
            }
        }
        for (dest, builder) in targets {
            let inst = match builder.quota(bag, rec) {
                Ok(i) => i,
                Err(e) => {
                    policy_error(metrics, &rule.name, Stage::Instance, "quota", &e);
                    return nothing();
                }
            };
            let Some(q) = dest.handler.handler.quota() else {
                continue;
            };
            let entry: &HandlerEntry = &dest.handler;
            match q.handle_quota(&inst, args) {
                Reply::Ready(Ok(r)) => {
                    count_dispatch(metrics, TemplateKind::Quota, entry, false);
                    answers.add(&entry.name, r);
                }
                Reply::Ready(Err(e)) => return failed(metrics, entry, &e),
                Reply::Later(fut) => pending
                    .get_or_insert_with(FuturesUnordered::new)
                    .push(Box::pin(async move { (entry, fut.await) })),
            }
        }
    }
    while let Some((entry, r)) = next_answer(&mut pending).await {
        match r {
            Ok(r) => {
                count_dispatch(metrics, TemplateKind::Quota, entry, false);
                answers.add(&entry.name, r);
            }
            Err(e) => return failed(metrics, entry, &e),
        }
    }
    if !known {
        tracing::debug!(quota = %request.name, "No quota instance has this name; granted.");
    }
    answers.finish(request.amount)
}

fn failed(metrics: &Metrics, entry: &HandlerEntry, e: &HandlerError) -> QuotaResult {
    count_dispatch(metrics, TemplateKind::Quota, entry, true);
    quota_handler_failed(&entry.name, e);
    nothing()
}
