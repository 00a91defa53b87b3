//! memquota's counters: one per distinct (quota, dimension tuple), each behind its own
//! mutex, found through a sharded map. A request locks one map shard for reading (or
//! writing, the first time a tuple is seen) just long enough to clone the counter's
//! handle, then only that counter: requests on different counters never wait for each
//! other, and requests on one counter are serialised, which is what makes its limit
//! exact under any concurrency.
//!
//! Mixer never forgot a rolling window, so every dimension tuple ever seen (e.g. one per
//! client address) stayed in memory. Here a shard that has doubled in size since its
//! last sweep drops counters that hold nothing (a window whose units have all expired, a
//! pool with nothing in use) and that no request is using; a later request for such a
//! tuple starts from the same empty state, so no answer changes.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::Limit;
use super::window::{Pool, RollingWindow, WindowSpec};

/// A counter with its limit.
#[derive(Debug)]
pub enum Counter {
    Pool {
        max: i64,
        pool: Pool,
    },
    Window {
        max: i64,
        spec: WindowSpec,
        window: RollingWindow,
    },
}

impl Counter {
    /// An empty counter for a limit: a rolling window when `spec` is given, else a pool.
    pub fn new(max: i64, spec: Option<WindowSpec>, now: i64) -> Counter {
        match spec {
            None => Counter::Pool {
                max,
                pool: Pool::default(),
            },
            Some(spec) => Counter::Window {
                max,
                spec,
                window: RollingWindow::new(spec.indexes(now).0),
            },
        }
    }

    /// Allocates `requested` (> 0) units at `now`: `None` when denied.
    pub fn alloc(&mut self, now: i64, requested: i64, best_effort: bool) -> Option<i64> {
        match self {
            Counter::Pool { max, pool } => pool.alloc(*max, requested, best_effort),
            Counter::Window { max, spec, window } => {
                let (cur, dead) = spec.indexes(now);
                window.advance(cur, dead);
                window.alloc(*max, requested, best_effort)
            }
        }
    }

    /// Releases up to `amount` (> 0) units; returns how many were released.
    pub fn release(&mut self, now: i64, amount: i64) -> i64 {
        match self {
            Counter::Pool { pool, .. } => pool.release(amount),
            Counter::Window { spec, window, .. } => {
                let (cur, dead) = spec.indexes(now);
                window.advance(cur, dead);
                window.release(amount)
            }
        }
    }

    /// Units still available as of the last operation (never negative: a limit lowered
    /// by a config change can leave more in use than it allows).
    pub fn remaining(&self) -> i64 {
        let (max, used) = match self {
            Counter::Pool { max, pool } => (*max, pool.in_use()),
            Counter::Window { max, window, .. } => (*max, window.used()),
        };
        max.saturating_sub(used).max(0)
    }

    /// Whether the counter holds nothing at `now` (so forgetting it changes nothing).
    fn idle(&mut self, now: i64) -> bool {
        match self {
            Counter::Pool { pool, .. } => pool.in_use() == 0,
            Counter::Window { spec, window, .. } => {
                let (cur, dead) = spec.indexes(now);
                window.advance(cur, dead);
                window.used() == 0
            }
        }
    }
}

/// A counter and the limit it was made for. The limit depends only on the key (the
/// quota's name and the dimension tuple), so it is selected once, when the counter is
/// created, rather than on every request.
#[derive(Debug)]
pub struct Slot {
    pub limit: Limit,
    pub counter: Mutex<Counter>,
}

impl Slot {
    /// An empty counter for `limit`, at `now`.
    pub fn new(limit: Limit, now: i64) -> Slot {
        Slot {
            limit,
            counter: Mutex::new(limit.counter(now)),
        }
    }

    /// Locks the counter (see [`lock`]).
    pub fn lock(&self) -> MutexGuard<'_, Counter> {
        lock(&self.counter)
    }
}

const SHARDS: usize = 64;
/// Shards smaller than this are never swept.
const MIN_SWEEP: usize = 64;

type Entry = Arc<Slot>;

struct Shard {
    /// Keys with their handles, found by the key's hash (computed once per request).
    table: HashTable<(Box<[u8]>, Entry)>,
    /// Size at which the next sweep runs.
    sweep_at: usize,
}

pub struct Counters {
    hasher: DefaultHashBuilder,
    shards: Box<[RwLock<Shard>]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            hasher: DefaultHashBuilder::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        table: HashTable::new(),
                        sweep_at: MIN_SWEEP,
                    })
                })
                .collect(),
        }
    }
}

/// Locks a counter, ignoring poisoning: counter operations do not panic half-way, and a
/// panic elsewhere must not take the quota down with it.
pub fn lock(counter: &Mutex<Counter>) -> MutexGuard<'_, Counter> {
    counter.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shard of a hash: bits the tables themselves do not use for buckets or tags.
pub(crate) fn shard_of(hash: u64) -> usize {
    ((hash >> 32) % SHARDS as u64) as usize
}

impl Counters {
    /// The counter for `key`, created by `make` if there is none.
    pub fn get_or_create(&self, key: &[u8], now: i64, make: impl FnOnce() -> Slot) -> Entry {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[shard_of(hash)];
        let eq = |(k, _): &(Box<[u8]>, Entry)| **k == *key;
        if let Some((_, c)) = shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .table
            .find(hash, eq)
        {
            return c.clone();
        }
        let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = shard.table.find(hash, eq) {
            return c.clone();
        }
        if shard.table.len() >= shard.sweep_at {
            // Holding the write lock, nobody can take a new handle; a counter whose only
            // handle is the map's is not in use. `try_lock` cannot block: the lock order
            // elsewhere is map shard, then counter.
            shard.table.retain(|(_, c)| {
                Arc::strong_count(c) > 1
                    || !c
                        .counter
                        .try_lock()
                        .map(|mut g| g.idle(now))
                        .unwrap_or(false)
            });
            shard.sweep_at = (shard.table.len() * 2).max(MIN_SWEEP);
        }
        let c = Arc::new(make());
        let hasher = &self.hasher;
        shard
            .table
            .insert_unique(hash, (key.into(), c.clone()), |(k, _)| {
                hasher.hash_one(&**k)
            });
        c
    }

    /// Number of counters kept.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).table.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(max: i64, spec: Option<WindowSpec>, now: i64) -> Slot {
        Slot {
            limit: Limit {
                max_amount: max,
                valid_nanos: 0,
            },
            counter: Mutex::new(Counter::new(max, spec, now)),
        }
    }

    #[test]
    fn quota_idle_counters_are_swept() {
        let counters = Counters::default();
        let spec = WindowSpec::memquota(1_000_000_000);
        // Fill well past the sweep size with windows that each hold one unit at t=0.
        for i in 0..10_000u32 {
            let c = counters.get_or_create(&i.to_be_bytes(), 0, || slot(5, Some(spec), 0));
            assert_eq!(c.lock().alloc(0, 1, false), Some(1));
        }
        assert_eq!(counters.count(), 10_000);
        // A held handle keeps its counter even when idle; a pool in use is kept too.
        let held = counters.get_or_create(b"held", 0, || slot(5, Some(spec), 0));
        let pool = counters.get_or_create(b"pool", 0, || slot(5, None, 0));
        assert_eq!(pool.lock().alloc(0, 2, false), Some(2));
        drop(pool);
        // One window later every window is empty: new keys trigger sweeps.
        let later = 1_000_000_000;
        for i in 10_000..20_000u32 {
            counters.get_or_create(&i.to_be_bytes(), later, || slot(5, Some(spec), later));
        }
        assert!(counters.count() < 15_000, "{}", counters.count());
        let again = counters.get_or_create(b"held", later, || unreachable!("kept"));
        assert!(Arc::ptr_eq(&held, &again));
        let pool = counters.get_or_create(b"pool", later, || unreachable!("kept"));
        assert_eq!(pool.lock().release(later, 10), 2);
    }
}
