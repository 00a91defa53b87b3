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

use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::counters::shard_of;

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
    hasher: DefaultHashBuilder,
    shards: Box<[Mutex<Shard>]>,
    /// Handler build time: generation boundaries are counted from it.
    start: i64,
    period: i64,
}

/// One generation's results. The ids are stored back to back in one buffer, and both
/// buffers keep their capacity when the generation is recycled, so remembering a result
/// costs no allocation once the table has reached its working size.
#[derive(Default)]
struct Generation {
    /// `(hash of the id, where the id is in `ids`, the result)`.
    table: HashTable<(u64, Range<usize>, Record)>,
    ids: String,
}

impl Generation {
    fn get(&self, hash: u64, id: &str) -> Option<Record> {
        self.table
            .find(hash, |(h, at, _)| *h == hash && self.ids[at.clone()] == *id)
            .map(|(_, _, r)| *r)
    }

    /// Remembers `record` for `id`, which has no record in this generation.
    fn insert(&mut self, hash: u64, id: &str, record: Record) {
        debug_assert!(self.get(hash, id).is_none(), "{id} is remembered already");
        let at = self.ids.len()..self.ids.len() + id.len();
        self.ids.push_str(id);
        self.table
            .insert_unique(hash, (hash, at, record), |(h, _, _)| *h);
    }

    /// Forgets everything. Capacity well beyond what the last generation used (a burst
    /// long gone) is returned to the allocator.
    fn recycle(&mut self, used: usize, used_bytes: usize) {
        self.table.clear();
        self.ids.clear();
        if self.table.capacity() > 4 * used.max(16) {
            self.table.shrink_to(2 * used, |(h, _, _)| *h);
        }
        if self.ids.capacity() > 4 * used_bytes.max(1024) {
            self.ids.shrink_to(2 * used_bytes);
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }
}

#[derive(Default)]
pub struct Shard {
    generation: i64,
    recent: Generation,
    old: Generation,
}

/// A locked shard, for one id (whose hash it carries).
pub struct Locked<'a> {
    shard: MutexGuard<'a, Shard>,
    hash: u64,
}

impl Locked<'_> {
    /// The result remembered for `id` (the id the shard was locked for).
    pub fn get(&self, id: &str) -> Option<Record> {
        let s = &*self.shard;
        s.recent
            .get(self.hash, id)
            .or_else(|| s.old.get(self.hash, id))
    }

    /// Remembers the result for `id` (the id the shard was locked for), which
    /// [`get`](Self::get) found no result for.
    pub fn insert(&mut self, id: &str, record: Record) {
        self.shard.recent.insert(self.hash, id, record);
    }
}

impl DedupTable {
    /// A table whose generations start at `start` and last `period` ns (> 0).
    pub fn new(start: i64, period: i64) -> DedupTable {
        DedupTable {
            hasher: DefaultHashBuilder::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            start,
            period: period.max(1),
        }
    }

    /// Locks the shard of `id`, rotated to the generation of `now`. The caller keeps the
    /// lock while it allocates, so two concurrent requests with the same id cannot both
    /// miss the table and both be charged.
    pub fn lock(&self, id: &str, now: i64) -> Locked<'_> {
        let hash = self.hasher.hash_one(id);
        let mut shard = self.shards[shard_of(hash)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let generation = now.saturating_sub(self.start).div_euclid(self.period);
        let s = &mut *shard;
        match generation - s.generation {
            // Same generation, or a clock that went back: nothing is dropped early.
            d if d <= 0 => {}
            1 => {
                // The recent generation becomes the old one; the old one's buffers are
                // reused for the new recent one.
                let (used, bytes) = (s.recent.len(), s.recent.ids.len());
                std::mem::swap(&mut s.recent, &mut s.old);
                s.recent.recycle(used, bytes);
                s.generation = generation;
            }
            _ => {
                let (used, bytes) = (s.recent.len(), s.recent.ids.len());
                s.old.recycle(0, 0);
                s.recent.recycle(used, bytes);
                s.generation = generation;
            }
        }
        Locked { shard, hash }
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
