//! Counting and logging rules and handlers that fail. A rule or handler that fails usually
//! fails on every request, and a log line per request would cost more than the answers (and
//! fill the disk): lines are rate limited, each saying how many went unlogged before it.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::metrics::Metrics;

/// Failure log lines allowed at once, then one per [`FAILURE_LOG_PERIOD`].
const FAILURE_LOG_BURST: u32 = 5;
const FAILURE_LOG_PERIOD: Duration = Duration::from_secs(1);

/// A rate limit on one kind of failure log line. Process-wide, so the log's cost is bounded
/// however many rules or handlers fail; checking it is one atomic compare-and-swap.
struct FailureLog {
    limiter: governor::DefaultDirectRateLimiter,
    unlogged: AtomicU64,
}

impl FailureLog {
    fn new() -> FailureLog {
        let quota = governor::Quota::with_period(FAILURE_LOG_PERIOD)
            .expect("non-zero period")
            .allow_burst(std::num::NonZeroU32::new(FAILURE_LOG_BURST).expect("non-zero burst"));
        FailureLog {
            limiter: governor::RateLimiter::direct(quota),
            unlogged: AtomicU64::new(0),
        }
    }

    /// `Some(failures not logged since the last line)` when a line may be written now.
    fn admit(&self) -> Option<u64> {
        if self.limiter.check().is_err() {
            self.unlogged.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.unlogged.swap(0, Relaxed))
    }
}

static POLICY_ERROR_LOG: LazyLock<FailureLog> = LazyLock::new(FailureLog::new);
static QUOTA_HANDLER_ERROR_LOG: LazyLock<FailureLog> = LazyLock::new(FailureLog::new);

/// Where in a rule a failure happened, as `mixer_policy_errors_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Match,
    Instance,
    Handler,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Match => "match",
            Stage::Instance => "instance",
            Stage::Handler => "handler",
        }
    }
}

/// Counts a rule that failed at `stage` of variety `api` (`check`, `quota`, `report`) and
/// logs it, rate limited, whatever `--policy-errors` then does with the request.
pub(crate) fn policy_error(
    metrics: &Metrics,
    rule: &str,
    stage: Stage,
    api: &str,
    error: &dyn std::fmt::Display,
) {
    metrics
        .policy_errors
        .with_label_values(&[rule, stage.label(), api])
        .inc();
    let Some(unlogged) = POLICY_ERROR_LOG.admit() else {
        return;
    };
    tracing::warn!(
        rule = %rule,
        stage = %stage.label(),
        api = %api,
        error = %error,
        unlogged_before = unlogged,
        "Rule failed; counted in mixer_policy_errors_total, handled per --policy-errors."
    );
}

/// Logs a failed quota handler call, rate limited (an unreachable Redis fails every call).
pub(crate) fn quota_handler_failed(handler: &str, error: &dyn std::fmt::Display) {
    if let Some(unlogged) = QUOTA_HANDLER_ERROR_LOG.admit() {
        tracing::warn!(handler = %handler, error = %error, unlogged_before = unlogged, "Quota handler failed.");
    }
}
