//! `noop`: accepts every template and does nothing; checks pass.

use std::sync::Arc;
use std::time::Duration;

use templates::handler::{
    AuthorizationHandler, CheckNothingHandler, CheckReply, ListEntryHandler, LogEntryHandler,
    MetricHandler, QuotaHandler, QuotaReply, ReportNothingHandler, TraceSpanHandler,
};
use templates::instances::{
    authorization, checknothing, listentry, logentry, metric, quota, reportnothing, tracespan,
};
use templates::{
    CheckResult, Handler, HandlerError, QuotaArgs, QuotaResult, Reply, Status, TemplateKind,
};

use crate::{Adapter, BuildError, Env, ValidateInput, Validation};

/// How long a noop check result may be cached: effectively forever, as Mixer's noop.
const VALIDITY: Duration = Duration::from_secs(1_000_000_000);

/// The noop adapter.
pub struct Noop;

impl Adapter for Noop {
    type Config = ();

    fn name(&self) -> &'static str {
        "noop"
    }

    fn description(&self) -> &'static str {
        "Does nothing (useful for testing)"
    }

    fn templates(&self) -> &'static [TemplateKind] {
        &[
            TemplateKind::Authorization,
            TemplateKind::CheckNothing,
            TemplateKind::ReportNothing,
            TemplateKind::ListEntry,
            TemplateKind::LogEntry,
            TemplateKind::Metric,
            TemplateKind::Quota,
            TemplateKind::TraceSpan,
        ]
    }

    fn validate(&self, input: &ValidateInput<'_>) -> Validation<()> {
        let config = match input.params {
            serde_json::Value::Null => Ok(()),
            serde_json::Value::Object(m) if m.is_empty() => Ok(()),
            other => Err(vec![crate::params::error(
                "params",
                format!("noop takes no params, found {other}"),
            )]),
        };
        config.into()
    }

    fn build(&self, (): (), _env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        Ok(Arc::new(NoopHandler))
    }
}

struct NoopHandler;

fn pass<'a>() -> CheckReply<'a> {
    Reply::Ready(Ok(CheckResult::ok(VALIDITY, 1_000_000_000)))
}

impl MetricHandler for NoopHandler {
    fn handle_metric(&self, _: &[metric::Instance<'_>]) -> Result<(), HandlerError> {
        Ok(())
    }
}
impl LogEntryHandler for NoopHandler {
    fn handle_log_entry(&self, _: &[logentry::Instance<'_>]) -> Result<(), HandlerError> {
        Ok(())
    }
}
impl TraceSpanHandler for NoopHandler {
    fn handle_trace_span(&self, _: &[tracespan::Instance<'_>]) -> Result<(), HandlerError> {
        Ok(())
    }
}
impl ReportNothingHandler for NoopHandler {
    fn handle_report_nothing(&self, _: &[reportnothing::Instance<'_>]) -> Result<(), HandlerError> {
        Ok(())
    }
}
impl CheckNothingHandler for NoopHandler {
    fn handle_check_nothing(&self, _: &checknothing::Instance<'_>) -> CheckReply<'_> {
        pass()
    }
}
impl ListEntryHandler for NoopHandler {
    fn handle_list_entry(&self, _: &listentry::Instance<'_>) -> CheckReply<'_> {
        pass()
    }
}
impl AuthorizationHandler for NoopHandler {
    fn handle_authorization(&self, _: &authorization::Instance<'_>) -> CheckReply<'_> {
        pass()
    }
}
impl QuotaHandler for NoopHandler {
    fn handle_quota(&self, _: &quota::Instance<'_>, args: QuotaArgs<'_>) -> QuotaReply<'_> {
        Reply::Ready(Ok(QuotaResult {
            status: Status::OK,
            valid_duration: VALIDITY,
            granted_amount: args.amount,
            budget: None,
        }))
    }
}

impl Handler for NoopHandler {
    fn metric(&self) -> Option<&dyn MetricHandler> {
        Some(self)
    }
    fn log_entry(&self) -> Option<&dyn LogEntryHandler> {
        Some(self)
    }
    fn trace_span(&self) -> Option<&dyn TraceSpanHandler> {
        Some(self)
    }
    fn report_nothing(&self) -> Option<&dyn ReportNothingHandler> {
        Some(self)
    }
    fn check_nothing(&self) -> Option<&dyn CheckNothingHandler> {
        Some(self)
    }
    fn list_entry(&self) -> Option<&dyn ListEntryHandler> {
        Some(self)
    }
    fn authorization(&self) -> Option<&dyn AuthorizationHandler> {
        Some(self)
    }
    fn quota(&self) -> Option<&dyn QuotaHandler> {
        Some(self)
    }
}
