//! memquota's deduplication table: the result of every allocation or release is
//! remembered under its deduplication id, so that a retried request gets the same answer
//! and is not charged twice.
//!
//! Mixer kept two maps and, on a ticker firing every `minDeduplicationDuration`, dropped
//! the older one and started a new one: a result is remembered for at least one period
//! and less than two. The same generations are kept here per shard, rotated lazily from
//! the handler's clock (generation `g` covers `[start + g·period, start + (g+1)·period)`),
//! which is equivalent to the ticker and lets tests drive it. Sharding by id means
//! requests with different ids do not wait on one lock.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A remembered result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub amount: i64,
    /// When the granted units stop being valid (Unix ns); `None`: no validity (pools,
    /// denials, releases).
    pub expires: Option<i64>,
}

const SHARDS: usize = 64;

pub struct DedupTable {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    /// Handler build time: generation boundaries are counted from it.
    start: i64,
    period: i64,
}

#[derive(Default)]
pub struct Shard {
    generation: i64,
    recent: HashMap<Box<str>, Record>,
    old: HashMap<Box<str>, Record>,
}

impl Shard {
    /// The result remembered for `id`.
    pub fn get(&self, id: &str) -> Option<Record> {
        self.recent.get(id).or_else(|| self.old.get(id)).copied()
    }

    pub fn insert(&mut self, id: &str, record: Record) {
        self.recent.insert(id.into(), record);
    }
}

impl DedupTable {
    /// A table whose generations start at `start` and last `period` ns (> 0).
    pub fn new(start: i64, period: i64) -> DedupTable {
        DedupTable {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            start,
            period: period.max(1),
        }
    }

    /// Locks the shard of `id`, rotated to the generation of `now`. The caller keeps the
    /// lock while it allocates, so two concurrent requests with the same id cannot both
    /// miss the table and both be charged.
    pub fn lock(&self, id: &str, now: i64) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(id) % SHARDS as u64) as usize;
        let mut shard = self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let generation = now.saturating_sub(self.start).div_euclid(self.period);
        match generation - shard.generation {
            // Same generation, or a clock that went back: nothing is dropped early.
            d if d <= 0 => {}
            1 => {
                shard.old = std::mem::take(&mut shard.recent);
                shard.generation = generation;
            }
            _ => {
                shard.old.clear();
                shard.recent.clear();
                shard.generation = generation;
            }
        }
        shard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_dedup_generations() {
        let t = DedupTable::new(1_000, 100);
        let rec = Record {
            amount: 3,
            expires: None,
        };
        t.lock("a", 1_050).insert("a", rec);
        // Same generation, and the next one.
        assert_eq!(t.lock("a", 1_099).get("a"), Some(rec));
        assert_eq!(t.lock("a", 1_199).get("a"), Some(rec));
        // Two generations later it is gone.
        assert_eq!(t.lock("a", 1_200).get("a"), None);
        // Skipping generations drops everything at once.
        t.lock("b", 1_200).insert("b", rec);
        assert_eq!(t.lock("b", 1_500).get("b"), None);
        // A clock that goes back does not rotate.
        t.lock("c", 1_650).insert("c", rec);
        assert_eq!(t.lock("c", 1_000).get("c"), Some(rec));
        assert_eq!(t.lock("c", 1_799).get("c"), Some(rec));
    }
}
