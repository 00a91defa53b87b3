//! The time source of the quota adapters.
//!
//! Quota windows are defined on wall-clock time (Unix nanoseconds), as in Mixer: the
//! 100 ms ticks of memquota are aligned to the Unix epoch, and redisquota passes the
//! time to its scripts so that every server sharing a Redis measures windows on the same
//! scale. Handlers read the time through [`Clock`] so that tests can drive windows by
//! setting a manual clock instead of sleeping.

#[cfg(test)]
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the Unix epoch.
    fn now_unix_nanos(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_nanos(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            // Saturates in the year 2262; quota windows need no later dates.
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            // A clock set before 1970 is treated as the epoch: windows then simply do
            // not move until the clock is fixed, which never over-grants.
            Err(_) => 0,
        }
    }
}

/// A clock that moves only when told to (tests). Clones share the time.
#[cfg(test)]
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

#[cfg(test)]
impl ManualClock {
    /// A clock showing `unix_nanos`.
    pub fn new(unix_nanos: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(unix_nanos)))
    }

    pub fn set(&self, unix_nanos: i64) {
        self.0.store(unix_nanos, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.0.fetch_add(by, Ordering::SeqCst);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now_unix_nanos(&self) -> i64 {
        self.get()
    }
}

/// `d` in nanoseconds, saturating at `i64::MAX` (about 292 years).
pub fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A non-negative nanosecond count as a [`Duration`] (negative counts are zero).
pub fn duration(nanos: i64) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}
