//! Rate-limited log lines for the log front ends: a rule or handler that fails usually
//! fails for every entry, and a streamed access log has no answer to carry the error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// At most one line per this period, for all front ends together.
const PERIOD: Duration = Duration::from_secs(1);

static LAST_LINE_MS: AtomicU64 = AtomicU64::new(0);
static UNLOGGED: AtomicU64 = AtomicU64::new(0);

/// Logs that reporting `failures` parts of a batch failed (the first one named), unless
/// a line was written within the last period; the next line says how many were not.
pub fn report_failed(api: &str, failures: usize, first: &dyn std::fmt::Display) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let last = LAST_LINE_MS.load(Ordering::Relaxed);
    let due = now >= last.saturating_add(PERIOD.as_millis() as u64);
    if !due
        || LAST_LINE_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        UNLOGGED.fetch_add(failures as u64, Ordering::Relaxed);
        return;
    }
    let unlogged = UNLOGGED.swap(0, Ordering::Relaxed);
    tracing::warn!(
        api,
        failures,
        first = %first,
        unlogged_before = unlogged,
        "Reporting log entries failed in some rules or handlers (counted in mixer_runtime_dispatches_total and mixer_policy_errors_total)."
    );
}
