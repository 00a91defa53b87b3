//! Load shedding, as Mixer's `--loadsheddingMode`: a request-rate limit (governor's GCRA)
//! and/or an average-latency threshold. A shed call gets UNAVAILABLE
//! `Server is currently overloaded. Please try again.`; a Report of N attribute sets costs N.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus::IntCounterVec;
use tonic::Status;

/// What to do when overloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SheddingMode {
    /// Never shed.
    #[default]
    Disabled,
    /// Count and log what would be shed, but serve it.
    Logonly,
    /// Shed.
    Enforce,
}

/// How shedding is configured.
#[derive(Clone, Debug)]
pub struct SheddingOptions {
    pub mode: SheddingMode,
    /// Calls (Report: attribute sets) per second admitted; 0 means no rate limit.
    pub max_requests_per_second: f64,
    /// How many may arrive at once above the rate; 0 means one second's worth, so the
    /// limiter never sheds a single full Report batch.
    pub burst_size: u32,
    /// Shed while the average latency is above this; zero means no latency limit.
    pub average_latency_threshold: Duration,
    /// Half-life of the latency average.
    pub latency_halflife: Duration,
}

impl Default for SheddingOptions {
    fn default() -> SheddingOptions {
        SheddingOptions {
            mode: SheddingMode::Disabled,
            max_requests_per_second: 0.0,
            burst_size: 0,
            average_latency_threshold: Duration::ZERO,
            latency_halflife: Duration::from_secs(1),
        }
    }
}

pub const OVERLOADED: &str = "Server is currently overloaded. Please try again.";

/// Decides whether to admit a call.
pub struct LoadShedder {
    options: SheddingOptions,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Exponentially weighted average latency in nanoseconds (f64 bits), decayed by
    /// elapsed time so that it recovers even while everything is shed.
    average_ns: AtomicU64,
    last_ns: AtomicU64,
    started: Instant,
    shed: IntCounterVec,
}

impl LoadShedder {
    pub fn new(options: SheddingOptions, shed: IntCounterVec) -> LoadShedder {
        let limiter = (options.mode != SheddingMode::Disabled
            && options.max_requests_per_second > 0.0)
            .then(|| {
                let per_second = options
                    .max_requests_per_second
                    .ceil()
                    .clamp(1.0, u32::MAX as f64) as u32;
                let burst = match options.burst_size {
                    0 => per_second,
                    n => n,
                };
                let quota = Quota::per_second(NonZeroU32::new(per_second).expect("at least 1"))
                    .allow_burst(NonZeroU32::new(burst).expect("at least 1"));
                RateLimiter::direct(quota)
            });
        LoadShedder {
            options,
            limiter,
            average_ns: AtomicU64::new(0f64.to_bits()),
            last_ns: AtomicU64::new(0),
            started: Instant::now(),
            shed,
        }
    }

    fn decayed_average(&self, now_ns: u64) -> f64 {
        let avg = f64::from_bits(self.average_ns.load(Ordering::Relaxed));
        let last = self.last_ns.load(Ordering::Relaxed);
        let halflife = self.options.latency_halflife.as_nanos().max(1) as f64;
        let elapsed = now_ns.saturating_sub(last) as f64;
        avg * 0.5f64.powf(elapsed / halflife)
    }

    /// Admits a call of `cost` units for `api`, or answers why not.
    pub fn admit(&self, api: &str, cost: u32) -> Result<(), Status> {
        if self.options.mode == SheddingMode::Disabled || cost == 0 {
            return Ok(());
        }
        let mut overloaded = false;
        if let Some(limiter) = &self.limiter {
            let n = NonZeroU32::new(cost).expect("cost > 0");
            overloaded = !matches!(limiter.check_n(n), Ok(Ok(())));
        }
        if !overloaded && !self.options.average_latency_threshold.is_zero() {
            let now = self.started.elapsed().as_nanos() as u64;
            overloaded = self.decayed_average(now)
                > self.options.average_latency_threshold.as_nanos() as f64;
        }
        if !overloaded {
            return Ok(());
        }
        self.shed.with_label_values(&[api]).inc_by(u64::from(cost));
        match self.options.mode {
            SheddingMode::Enforce => Err(Status::unavailable(OVERLOADED)),
            _ => {
                tracing::debug!(api, cost, "Overloaded (load shedding is in logonly mode).");
                Ok(())
            }
        }
    }

    /// Feeds the latency of an admitted call into the average.
    pub fn observe(&self, latency: Duration) {
        if self.options.mode == SheddingMode::Disabled
            || self.options.average_latency_threshold.is_zero()
        {
            return;
        }
        let now = self.started.elapsed().as_nanos() as u64;
        let decayed = self.decayed_average(now);
        // Each sample weighs in as much as the time since the last one allows; races
        // between threads only blur the average, which is all it needs to be.
        let sample = latency.as_nanos() as f64;
        let weight = 0.2;
        let avg = decayed * (1.0 - weight) + sample * weight;
        self.average_ns.store(avg.to_bits(), Ordering::Relaxed);
        self.last_ns.store(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn counter() -> IntCounterVec {
        IntCounterVec::new(Opts::new("t", "t"), &["api"]).unwrap()
    }

    #[test]
    fn rate_limit_sheds_and_counts_reports_by_size() {
        let shed = counter();
        let s = LoadShedder::new(
            SheddingOptions {
                mode: SheddingMode::Enforce,
                max_requests_per_second: 10.0,
                burst_size: 100,
                ..Default::default()
            },
            shed.clone(),
        );
        assert!(s.admit("report", 100).is_ok());
        let err = s.admit("report", 100).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(err.message(), OVERLOADED);
        assert_eq!(shed.with_label_values(&["report"]).get(), 100);
        // More than the burst at once can never pass.
        assert!(s.admit("report", 101).is_err());
    }

    #[test]
    fn logonly_counts_but_admits_and_disabled_does_nothing() {
        let shed = counter();
        let s = LoadShedder::new(
            SheddingOptions {
                mode: SheddingMode::Logonly,
                max_requests_per_second: 1.0,
                burst_size: 1,
                ..Default::default()
            },
            shed.clone(),
        );
        assert!(s.admit("check", 1).is_ok());
        assert!(s.admit("check", 1).is_ok());
        assert_eq!(shed.with_label_values(&["check"]).get(), 1);
        let off = LoadShedder::new(SheddingOptions::default(), counter());
        for _ in 0..1000 {
            assert!(off.admit("check", 1).is_ok());
        }
    }

    #[test]
    fn latency_threshold_sheds_until_the_average_decays() {
        let s = LoadShedder::new(
            SheddingOptions {
                mode: SheddingMode::Enforce,
                average_latency_threshold: Duration::from_millis(10),
                latency_halflife: Duration::from_millis(1),
                ..Default::default()
            },
            counter(),
        );
        for _ in 0..20 {
            s.observe(Duration::from_millis(100));
        }
        assert!(s.admit("check", 1).is_err());
        // With a 1 ms half-life, the average decays below the threshold quickly.
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.admit("check", 1).is_err() {
            assert!(Instant::now() < deadline, "the average never decayed");
            std::thread::yield_now();
        }
    }
}
