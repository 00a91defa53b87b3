//! The Check variety: the rules whose `match` holds, their check instances built from the
//! bag, handlers called (those that do I/O concurrently), answers combined as Mixer did.

use std::time::Duration;

use expr_lang::{Bag, Recorder};
use futures::stream::{FuturesUnordered, StreamExt};
use templates::handler::{BoxFuture, CheckReply};
use templates::{
    BuildError, CheckResult, HandlerError, InstanceBuilder, Reply, Status, TemplateKind, code,
};

use super::PolicyErrorMode;
use super::failures::{Stage, policy_error};
use super::matching::{count_dispatch, identity_namespace, rule_matches};
use super::routes::{RouteDirective, directive};
use crate::config::snapshot::{Destination, HandlerEntry, RoutedRule, Snapshot};
use crate::metrics::Metrics;

/// The validity of an answer no handler limited.
pub const DEFAULT_VALID_DURATION: Duration = Duration::from_secs(60);
pub const DEFAULT_VALID_USE_COUNT: i32 = 10_000;

/// The precondition part of a Check answer: may the request go ahead, for how long may
/// the answer be reused, and what the proxy should change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Precondition {
    pub status: Status,
    pub valid_duration: Duration,
    pub valid_use_count: i32,
    pub route: RouteDirective,
    /// The rule whose handler's denial decided (the first to fail), `name.rule.namespace`;
    /// `None` when the request may go ahead.
    pub denied_by: Option<String>,
}

/// A Check that could not be decided: Mixer answers it with an RPC error, leaving the
/// decision to the proxy's fail policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("performing check operation failed: {0}")]
    Instance(BuildError),
    #[error("performing check operation failed: handler '{handler}': {error}")]
    Handler {
        handler: String,
        error: HandlerError,
    },
    #[error(
        "performing check operation failed: handler '{handler}' does not implement template '{template}'"
    )]
    Unsupported {
        handler: String,
        template: TemplateKind,
    },
}

/// Combines check results in completion order.
struct Combiner {
    result: Option<CheckResult>,
    failures: Vec<String>,
    first_failure: Option<Status>,
    first_failed_rule: Option<String>,
}

impl Combiner {
    fn new() -> Combiner {
        Combiner {
            result: None,
            failures: Vec::new(),
            first_failure: None,
            first_failed_rule: None,
        }
    }

    fn add(&mut self, handler: &str, rule: &str, r: CheckResult) {
        if !r.status.is_ok() {
            self.failures
                .push(format!("{handler}:{}", r.status.message));
            if self.first_failure.is_none() {
                self.first_failure = Some(r.status.clone());
                self.first_failed_rule = Some(rule.to_owned());
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

    /// The combined status, validity, and the rule of the first denial.
    fn finish(self) -> (Status, Duration, i32, Option<String>) {
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
                self.first_failed_rule,
            ),
            None => (Status::OK, duration, count, None),
        }
    }
}

/// A check handler's answer that arrives later, with who gave it and for which rule.
struct Completion<'h> {
    handler: &'h HandlerEntry,
    template: TemplateKind,
    rule: &'h str,
    result: Result<CheckResult, HandlerError>,
}

/// Calls a check handler with an instance built from the bag; `None` when the handler
/// does not implement the template.
fn call<'h, 'b, B: Bag + ?Sized, R: Recorder>(
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

fn deny(rule: &str, message: String) -> Precondition {
    Precondition {
        status: Status::new(code::PERMISSION_DENIED, message),
        valid_duration: Duration::ZERO,
        valid_use_count: 0,
        route: RouteDirective::default(),
        denied_by: Some(rule.to_owned()),
    }
}

/// What one Check needs besides the bag.
pub struct CheckContext<'a> {
    pub snapshot: &'a Snapshot,
    pub mode: PolicyErrorMode,
    pub metrics: &'a Metrics,
}

/// Runs the Check variety for one bag, recording every attribute read into `rec`.
pub async fn evaluate<B: Bag + ?Sized + Sync, R: Recorder + Send>(
    cx: &CheckContext<'_>,
    bag: &B,
    rec: &mut R,
) -> Result<Precondition, CheckError> {
    let snap = cx.snapshot;
    let namespace = identity_namespace(snap, bag, rec);
    let mut combiner = Combiner::new();
    // Created only when a handler answers later: most policy handlers answer at once.
    let mut pending: Option<FuturesUnordered<BoxFuture<'_, Completion<'_>>>> = None;
    let mut matched: Vec<&RoutedRule> = Vec::new();

    for routed in snap.check.for_namespace(&namespace) {
        let rule = &routed.rule;
        match rule_matches(rule, bag, rec, cx.metrics, "check") {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => match cx.mode {
                PolicyErrorMode::Mixer => {
                    tracing::debug!(rule = %rule.name, error = %e, "Rule match could not be evaluated; the rule does not apply.");
                    continue;
                }
                PolicyErrorMode::Closed => {
                    return Ok(deny(
                        &rule.name,
                        format!("rule '{}': match could not be evaluated: {e}", rule.name),
                    ));
                }
            },
        }
        matched.push(routed);
        for Destination { handler, instances } in &routed.destinations {
            for builder in instances {
                let template = builder.kind();
                let reply = match call(builder, handler, bag, rec) {
                    Ok(Some(reply)) => reply,
                    Ok(None) => {
                        count_dispatch(cx.metrics, template, handler, true);
                        return Err(CheckError::Unsupported {
                            handler: handler.name.clone(),
                            template,
                        });
                    }
                    Err(e) => return instance_failure(cx, &rule.name, e),
                };
                match reply {
                    Reply::Ready(Ok(r)) => {
                        count_dispatch(cx.metrics, template, handler, false);
                        combiner.add(&handler.name, &rule.name, r);
                    }
                    Reply::Ready(Err(e)) => {
                        count_dispatch(cx.metrics, template, handler, true);
                        return handler_failure(cx, &rule.name, handler, e);
                    }
                    Reply::Later(fut) => {
                        let handler: &HandlerEntry = handler;
                        let rule: &str = &rule.name;
                        let pending = pending.get_or_insert_with(FuturesUnordered::new);
                        pending.push(Box::pin(async move {
                            Completion {
                                handler,
                                template,
                                rule,
                                result: fut.await,
                            }
                        }));
                    }
                }
            }
        }
    }
    while let Some(done) = next_answer(&mut pending).await {
        match done.result {
            Ok(r) => {
                count_dispatch(cx.metrics, done.template, done.handler, false);
                combiner.add(&done.handler.name, done.rule, r);
            }
            Err(e) => {
                count_dispatch(cx.metrics, done.template, done.handler, true);
                return handler_failure(cx, done.rule, done.handler, e);
            }
        }
    }

    let (status, valid_duration, valid_use_count, denied_by) = combiner.finish();
    let route = directive(&status, &matched, bag, rec);
    Ok(Precondition {
        status,
        valid_duration,
        valid_use_count,
        route,
        denied_by,
    })
}

/// The next answer of a handler that answered later; `None` when there are no more (or
/// there never were any).
pub(crate) async fn next_answer<F: Future>(
    pending: &mut Option<FuturesUnordered<F>>,
) -> Option<F::Output> {
    match pending {
        Some(p) => p.next().await,
        None => None,
    }
}

fn instance_failure(
    cx: &CheckContext<'_>,
    rule: &str,
    e: BuildError,
) -> Result<Precondition, CheckError> {
    policy_error(cx.metrics, rule, Stage::Instance, "check", &e);
    match cx.mode {
        PolicyErrorMode::Mixer => Err(CheckError::Instance(e)),
        PolicyErrorMode::Closed => Ok(deny(
            rule,
            format!(
                "rule '{rule}': instance '{}' could not be built: {}",
                e.instance, e.error
            ),
        )),
    }
}

fn handler_failure(
    cx: &CheckContext<'_>,
    rule: &str,
    handler: &HandlerEntry,
    e: HandlerError,
) -> Result<Precondition, CheckError> {
    policy_error(cx.metrics, rule, Stage::Handler, "check", &e);
    match cx.mode {
        PolicyErrorMode::Mixer => Err(CheckError::Handler {
            handler: handler.name.clone(),
            error: e,
        }),
        PolicyErrorMode::Closed => Ok(deny(
            rule,
            format!("rule '{rule}': handler '{}' failed: {e}", handler.name),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combining_follows_mixer() {
        let mut c = Combiner::new();
        c.add("a", "ra", CheckResult::ok(Duration::from_secs(5), 100));
        c.add(
            "b",
            "rb",
            CheckResult {
                status: Status::new(code::PERMISSION_DENIED, "no"),
                valid_duration: Duration::from_secs(2),
                valid_use_count: 1000,
            },
        );
        c.add(
            "c",
            "rc",
            CheckResult {
                status: Status::new(code::NOT_FOUND, "gone"),
                valid_duration: Duration::from_secs(9),
                valid_use_count: 7,
            },
        );
        let (s, d, n, rule) = c.finish();
        assert_eq!(s.code, code::PERMISSION_DENIED);
        assert_eq!(s.message, "b:no, c:gone");
        assert_eq!((d, n), (Duration::from_secs(2), 7));
        assert_eq!(rule.as_deref(), Some("rb"), "the first denial decides");
        let (s, d, n, rule) = Combiner::new().finish();
        assert!(s.is_ok());
        assert_eq!(rule, None);
        assert_eq!((d, n), (DEFAULT_VALID_DURATION, DEFAULT_VALID_USE_COUNT));
    }
}
