//! The counting algorithms, shared by `memquota` and (as the reference its Lua scripts
//! are tested against) `redisquota`.
//!
//! # Rolling window
//!
//! Time is cut into buckets of `bucket` nanoseconds aligned to the Unix epoch: bucket
//! `i` covers `[i·bucket, (i+1)·bucket)`. Every unit granted at time `t` is charged to
//! the bucket of `t` and counts against the limit until the time
//! `start of its bucket + window`, when it is returned. So, for every time `now`, the
//! units granted in the buckets that have not yet expired at `now` never exceed the
//! limit: `Σ tokens(i) ≤ max` over `i` with `i·bucket + window > now`.
//!
//! memquota uses Mixer's parameters: 100 ms buckets ("ticks") and a window of the
//! configured `validDuration` rounded up to whole seconds, which is exactly Mixer's ring
//! of `ceil(seconds) × 10` slots (a grant in tick `k` is reclaimed when the clock reaches
//! tick `k + slots`). redisquota's ROLLING_WINDOW uses the configured `bucketDuration`
//! and `validDuration`; its Lua script keeps the same state (used total, current bucket,
//! older buckets oldest first) and performs the same steps.
//!
//! Because buckets are quantised, a unit is held for between `window − bucket` and
//! `window` of real time; two grants of the full limit can therefore be a little less
//! than `window` apart when they fall at the far ends of the first and last bucket. This
//! is Mixer's window semantics, kept as it was.
//!
//! If the clock goes backwards (wall-clock adjustment, or another server's clock lagging
//! behind the one that last wrote the window), units are charged to the newest bucket
//! and nothing expires early: a late clock never frees capacity.

use std::collections::VecDeque;

/// What a limit decides for a request of `requested` units when `available` are left:
/// `Some(granted)` or `None` (denied). Without best effort it is all or nothing; with
/// best effort whatever is left is granted, possibly 0 (Mixer's memquota).
pub fn decide(requested: i64, available: i64, best_effort: bool) -> Option<i64> {
    if requested <= available {
        Some(requested)
    } else if best_effort {
        Some(available.max(0))
    } else {
        None
    }
}

/// The geometry of a rolling window, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    /// How long a granted unit counts (> 0, ≥ `bucket`).
    pub window: i64,
    /// The bucket (tick) length (> 0).
    pub bucket: i64,
}

/// Mixer's memquota tick: 100 ms.
pub const MEMQUOTA_TICK_NANOS: i64 = 100_000_000;

impl WindowSpec {
    /// memquota's window for a `validDuration` of `valid_nanos` (> 0): rounded up to whole
    /// seconds, in 100 ms ticks.
    pub fn memquota(valid_nanos: i64) -> WindowSpec {
        const SECOND: i64 = 1_000_000_000;
        let seconds = valid_nanos / SECOND + i64::from(valid_nanos % SECOND != 0);
        WindowSpec {
            window: seconds.saturating_mul(SECOND),
            bucket: MEMQUOTA_TICK_NANOS,
        }
    }

    /// The bucket index of `now`, and the newest bucket index that has expired at `now`
    /// (buckets `≤` it no longer count).
    pub fn indexes(&self, now: i64) -> (i64, i64) {
        (
            now.div_euclid(self.bucket),
            now.saturating_sub(self.window).div_euclid(self.bucket),
        )
    }
}

/// A rolling window's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollingWindow {
    /// Units counted now: the current bucket plus `past`.
    used: i64,
    /// Index of the bucket new grants are charged to (the newest one seen).
    bucket: i64,
    bucket_tokens: i64,
    /// Older buckets with units, oldest first: `(index, units)`.
    past: VecDeque<(i64, i64)>,
}

impl RollingWindow {
    /// An empty window whose current bucket is `bucket`.
    pub fn new(bucket: i64) -> RollingWindow {
        RollingWindow {
            used: 0,
            bucket,
            bucket_tokens: 0,
            past: VecDeque::new(),
        }
    }

    /// Moves the window to bucket `current`, returning the units of every bucket whose
    /// index is `≤ expired`.
    pub fn advance(&mut self, current: i64, expired: i64) {
        if current > self.bucket {
            if self.bucket_tokens > 0 {
                self.past.push_back((self.bucket, self.bucket_tokens));
            }
            self.bucket = current;
            self.bucket_tokens = 0;
        }
        while let Some(&(index, tokens)) = self.past.front() {
            if index > expired {
                break;
            }
            self.used -= tokens;
            self.past.pop_front();
        }
        // `expired < current ≤ bucket` (the window is at least one bucket long), so the
        // current bucket itself never expires here.
        debug_assert!(expired < self.bucket && self.used >= self.bucket_tokens);
    }

    /// Units counted now (call [`advance`](Self::advance) first).
    pub fn used(&self) -> i64 {
        self.used
    }

    /// Charges a decision for `requested` units against `max` to the current bucket.
    pub fn alloc(&mut self, max: i64, requested: i64, best_effort: bool) -> Option<i64> {
        let granted = decide(requested, max - self.used, best_effort)?;
        self.used += granted;
        self.bucket_tokens += granted;
        Some(granted)
    }

    /// Returns up to `amount` units, newest first (Mixer: "from the leading edge of the
    /// window moving back in time"). Returns how many were released.
    pub fn release(&mut self, amount: i64) -> i64 {
        let mut left = amount;
        let take = left.min(self.bucket_tokens);
        self.bucket_tokens -= take;
        left -= take;
        while left > 0 {
            let Some(last) = self.past.back_mut() else {
                break;
            };
            let take = left.min(last.1);
            last.1 -= take;
            left -= take;
            if last.1 == 0 {
                self.past.pop_back();
            }
        }
        let released = amount - left;
        self.used -= released;
        released
    }
}

/// A non-expiring pool (Mixer's "cell"): units stay in use until released.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    in_use: i64,
}

impl Pool {
    pub fn in_use(&self) -> i64 {
        self.in_use
    }

    pub fn alloc(&mut self, max: i64, requested: i64, best_effort: bool) -> Option<i64> {
        let granted = decide(requested, max - self.in_use, best_effort)?;
        self.in_use += granted;
        Some(granted)
    }

    /// Returns up to `amount` units; returns how many were released.
    pub fn release(&mut self, amount: i64) -> i64 {
        let released = amount.min(self.in_use);
        self.in_use -= released;
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: i64 = MEMQUOTA_TICK_NANOS;

    #[test]
    fn quota_memquota_window_rounds_up_to_seconds() {
        assert_eq!(WindowSpec::memquota(1).window, 1_000_000_000);
        assert_eq!(WindowSpec::memquota(1_000_000_000).window, 1_000_000_000);
        assert_eq!(WindowSpec::memquota(1_000_000_001).window, 2_000_000_000);
        assert_eq!(WindowSpec::memquota(1_500_000_000).bucket, TICK);
        // 1s = ten ticks: at tick 17 every tick ≤ 7 has expired.
        let spec = WindowSpec::memquota(1_000_000_000);
        assert_eq!(spec.indexes(17 * TICK + 5), (17, 7));
        // Before the epoch indexes floor, not truncate.
        assert_eq!(spec.indexes(-1), (-1, -11));
    }

    /// Reference: the units counted at tick `now` are those granted in ticks
    /// `now - slots + 1 ..= now`, as in Mixer's slot ring.
    fn in_window(history: &[(i64, i64)], now: i64, slots: i64) -> i64 {
        history
            .iter()
            .filter(|(t, _)| *t > now - slots && *t <= now)
            .map(|(_, n)| n)
            .sum()
    }

    #[test]
    fn quota_rolling_window_matches_the_slot_ring_reference() {
        // A deterministic pseudo-random walk over time, amounts and best effort.
        let spec = WindowSpec::memquota(2_000_000_000);
        let slots = spec.window / spec.bucket;
        let max = 17;
        let mut w = RollingWindow::new(0);
        let mut history = Vec::new();
        let mut tick = 0i64;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            tick += (next() % 4) as i64;
            let requested = (next() % 6) as i64 + 1;
            let best_effort = next() % 3 == 0;
            let now = tick * TICK + (next() % TICK as u64) as i64;
            let (cur, dead) = spec.indexes(now);
            w.advance(cur, dead);
            let counted = in_window(&history, tick, slots);
            assert_eq!(w.used(), counted, "tick {tick}");
            let expected = decide(requested, max - counted, best_effort);
            let got = w.alloc(max, requested, best_effort);
            assert_eq!(got, expected);
            if let Some(n) = got {
                history.push((tick, n));
            }
            assert!(in_window(&history, tick, slots) <= max);
        }
    }

    #[test]
    fn quota_rolling_window_frees_at_the_exact_tick() {
        let spec = WindowSpec::memquota(1_000_000_000);
        let mut w = RollingWindow::new(0);
        let at = |w: &mut RollingWindow, now: i64| {
            let (c, d) = spec.indexes(now);
            w.advance(c, d);
        };
        at(&mut w, 3 * TICK + 99_999_999);
        assert_eq!(w.alloc(5, 5, false), Some(5));
        // Still counted through the last nanosecond of tick 12 ...
        at(&mut w, 13 * TICK - 1);
        assert_eq!(w.alloc(5, 1, false), None);
        assert_eq!(w.alloc(5, 1, true), Some(0));
        // ... and returned at the first nanosecond of tick 13 (3 + 10 slots).
        at(&mut w, 13 * TICK);
        assert_eq!(w.used(), 0);
        assert_eq!(w.alloc(5, 5, false), Some(5));
    }

    #[test]
    fn quota_rolling_window_with_a_late_clock_frees_nothing_early() {
        let spec = WindowSpec::memquota(1_000_000_000);
        let mut w = RollingWindow::new(0);
        let (c, d) = spec.indexes(20 * TICK);
        w.advance(c, d);
        assert_eq!(w.alloc(4, 3, false), Some(3));
        // A clock 5 ticks behind charges the newest bucket (20), not bucket 15 ...
        let (c, d) = spec.indexes(15 * TICK);
        w.advance(c, d);
        assert_eq!(w.alloc(4, 1, false), Some(1));
        // ... so everything is still counted until tick 30, and freed at tick 30.
        let (c, d) = spec.indexes(30 * TICK - 1);
        w.advance(c, d);
        assert_eq!(w.used(), 4);
        let (c, d) = spec.indexes(30 * TICK);
        w.advance(c, d);
        assert_eq!(w.used(), 0);
    }

    #[test]
    fn quota_rolling_window_release_newest_first() {
        let spec = WindowSpec::memquota(1_000_000_000);
        let mut w = RollingWindow::new(0);
        for (tick, n) in [(0, 2), (3, 3), (5, 1)] {
            let (c, d) = spec.indexes(tick * TICK);
            w.advance(c, d);
            assert_eq!(w.alloc(10, n, false), Some(n));
        }
        // Releases 1 from tick 5 and 2 from tick 3.
        assert_eq!(w.release(3), 3);
        assert_eq!(w.used(), 3);
        // Tick 3 keeps 1 unit, tick 0 keeps 2: at tick 10 tick 0 expires.
        let (c, d) = spec.indexes(10 * TICK);
        w.advance(c, d);
        assert_eq!(w.used(), 1);
        // At tick 13 tick 3 expires too.
        let (c, d) = spec.indexes(13 * TICK);
        w.advance(c, d);
        assert_eq!(w.used(), 0);
        // Releasing more than is held releases what is held.
        assert_eq!(w.alloc(10, 2, false), Some(2));
        assert_eq!(w.release(5), 2);
        assert_eq!(w.release(1), 0);
    }

    #[test]
    fn quota_pool_alloc_and_release() {
        let mut p = Pool::default();
        assert_eq!(p.alloc(10, 7, false), Some(7));
        assert_eq!(p.alloc(10, 4, false), None);
        assert_eq!(p.alloc(10, 4, true), Some(3));
        assert_eq!(p.alloc(10, 1, true), Some(0));
        assert_eq!(p.release(4), 4);
        assert_eq!(p.in_use(), 6);
        assert_eq!(p.release(100), 6);
        assert_eq!(p.in_use(), 0);
    }
}
