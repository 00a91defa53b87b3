//! The server-side Check result cache, keyed the way Mixer's was: by the values of exactly
//! the attributes (and map keys) the decision referenced, present or absent.
//!
//! A decision's referenced attributes form its *shape*. The cache keeps the distinct shapes
//! it has seen; a lookup computes, for each shape, a digest of the request's values of
//! those attributes and probes for it. Entries honour `valid_duration` (as a time to live)
//! and `valid_use_count`, carry the snapshot generation they were computed with (so a
//! config change never serves an old answer), and the cache is bounded in entries.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use expr_lang::{AttrKey, Bag, Value};
use moka::Expiry;
use moka::notification::RemovalCause;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::check::Precondition;
use super::referenced::{Condition, Referenced};
use crate::config::Snapshot;

/// Most distinct shapes remembered; each lookup probes every shape, so this bounds the
/// cost of a miss.
const MAX_SHAPES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    generation: u64,
    shape: usize,
    digest: (u64, u64),
}

/// A cached decision.
struct Entry {
    precondition: Precondition,
    referenced: Arc<Referenced>,
    expires: Instant,
    uses_left: AtomicI64,
    ttl: Duration,
}

struct TtlFromEntry;

impl Expiry<Key, Arc<Entry>> for TtlFromEntry {
    fn expire_after_create(&self, _: &Key, value: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Hits, misses and evictions, exported as self-metrics.
#[derive(Clone)]
pub struct CacheMetrics {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub evictions: IntCounterVec,
}

impl CacheMetrics {
    pub fn register(registry: &Registry) -> CacheMetrics {
        let hits = IntCounter::new(
            "mixer_check_cache_hits_total",
            "Check calls answered from the server-side check cache.",
        )
        .expect("valid metric");
        let misses = IntCounter::new(
            "mixer_check_cache_misses_total",
            "Check calls the server-side check cache could not answer.",
        )
        .expect("valid metric");
        let evictions = IntCounterVec::new(
            Opts::new(
                "mixer_check_cache_evictions_total",
                "Check cache entries removed, by cause (expired, size, invalidated: used up or config changed, replaced).",
            ),
            &["cause"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(hits.clone()));
        let _ = registry.register(Box::new(misses.clone()));
        let _ = registry.register(Box::new(evictions.clone()));
        CacheMetrics {
            hits,
            misses,
            evictions,
        }
    }
}

/// The cache.
pub struct CheckCache {
    entries: moka::sync::Cache<Key, Arc<Entry>>,
    /// Swapped whole on a change, so a lookup takes a handle rather than a copy.
    shapes: RwLock<Arc<Vec<Arc<Referenced>>>>,
    hasher: std::collections::hash_map::RandomState,
    hasher2: std::collections::hash_map::RandomState,
    metrics: CacheMetrics,
}

impl CheckCache {
    /// A cache of at most `capacity` decisions.
    pub fn new(capacity: u64, metrics: CacheMetrics) -> CheckCache {
        let evictions = metrics.evictions.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .expire_after(TtlFromEntry)
            .eviction_listener(move |_, _, cause| {
                let label = match cause {
                    RemovalCause::Expired => "expired",
                    RemovalCause::Size => "size",
                    RemovalCause::Explicit => "invalidated",
                    RemovalCause::Replaced => "replaced",
                };
                evictions.with_label_values(&[label]).inc();
            })
            .build();
        CheckCache {
            entries,
            shapes: RwLock::new(Arc::new(Vec::new())),
            hasher: Default::default(),
            hasher2: Default::default(),
            metrics,
        }
    }

    /// Digest of the request's values of the attributes of `shape` (a decision's
    /// referenced attributes), or `None` when the request
    /// does not fit the shape (a referenced attribute's presence differs).
    fn digest<B: Bag + ?Sized>(
        &self,
        snap: &Snapshot,
        bag: &B,
        shape: &Referenced,
    ) -> Option<(u64, u64)> {
        let mut h1 = self.hasher.build_hasher();
        let mut h2 = self.hasher2.build_hasher();
        for r in shape {
            let id = snap.manifest.get(r.name).map_or(AttrKey::NO_ID, |i| i.id);
            let v = bag.get(AttrKey { name: r.name, id });
            let present = match (r.map_key, v) {
                (None, None) => false,
                (None, Some(v)) => {
                    hash_value(&v, &mut h1);
                    hash_value(&v, &mut h2);
                    true
                }
                (Some(_), None) => false,
                (Some(k), Some(Value::StringMap(m))) => match m.get(k) {
                    Some(s) => {
                        s.hash(&mut h1);
                        s.hash(&mut h2);
                        true
                    }
                    None => false,
                },
                (Some(_), Some(_)) => return None,
            };
            if present != (r.condition == Condition::Exact) {
                return None;
            }
        }
        Some((h1.finish(), h2.finish()))
    }

    /// The cached decision for this request, if any. Counts a hit or a miss.
    pub fn lookup<B: Bag + ?Sized>(
        &self,
        snap: &Snapshot,
        bag: &B,
    ) -> Option<(Precondition, Arc<Referenced>)> {
        let shapes: Arc<Vec<Arc<Referenced>>> =
            self.shapes.read().map(|s| s.clone()).unwrap_or_default();
        let now = Instant::now();
        for (i, shape) in shapes.iter().enumerate() {
            let Some(digest) = self.digest(snap, bag, shape) else {
                continue;
            };
            let key = Key {
                generation: snap.generation,
                shape: i,
                digest,
            };
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if entry.expires <= now {
                continue;
            }
            // Each answer hands out the uses that remain after it; an answer with none
            // left would be useless to the caller, so the entry goes first.
            let left = entry.uses_left.fetch_sub(1, Ordering::AcqRel);
            if left <= 1 {
                self.entries.invalidate(&key);
                continue;
            }
            if left == 2 {
                self.entries.invalidate(&key);
            }
            let mut precondition = entry.precondition.clone();
            precondition.valid_duration = entry.expires - now;
            precondition.valid_use_count = i32::try_from(left - 1).unwrap_or(i32::MAX);
            self.metrics.hits.inc();
            return Some((precondition, entry.referenced.clone()));
        }
        self.metrics.misses.inc();
        None
    }

    /// Remembers a decision computed for this request.
    pub fn insert<B: Bag + ?Sized>(
        &self,
        snap: &Snapshot,
        bag: &B,
        precondition: &Precondition,
        referenced: &Arc<Referenced>,
    ) {
        if precondition.valid_duration.is_zero() || precondition.valid_use_count <= 0 {
            return;
        }
        let shape = referenced.clone();
        let index = {
            let Ok(mut shapes) = self.shapes.write() else {
                return;
            };
            match shapes.iter().position(|s| **s == *shape) {
                Some(i) => i,
                None if shapes.len() < MAX_SHAPES => {
                    Arc::make_mut(&mut *shapes).push(shape.clone());
                    shapes.len() - 1
                }
                None => return,
            }
        };
        let Some(digest) = self.digest(snap, bag, &shape) else {
            return;
        };
        let now = Instant::now();
        self.entries.insert(
            Key {
                generation: snap.generation,
                shape: index,
                digest,
            },
            Arc::new(Entry {
                precondition: precondition.clone(),
                referenced: shape,
                expires: now + precondition.valid_duration,
                uses_left: AtomicI64::new(i64::from(precondition.valid_use_count)),
                ttl: precondition.valid_duration,
            }),
        );
    }

    /// Forgets everything (a new configuration is serving).
    pub fn clear(&self) {
        self.entries.invalidate_all();
        if let Ok(mut shapes) = self.shapes.write() {
            *shapes = Arc::default();
        }
    }

    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Feeds a value's type and content into a hasher.
fn hash_value<H: Hasher>(v: &Value<'_>, h: &mut H) {
    std::mem::discriminant(v).hash(h);
    match v {
        Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => s.hash(h),
        Value::Int64(i) | Value::Duration(i) => i.hash(h),
        Value::Double(d) => d.to_bits().hash(h),
        Value::Bool(b) => b.hash(h),
        Value::Timestamp(t) => t.hash(h),
        Value::IpAddress(b) => b.hash(h),
        // A whole map is never a reference (only its keys are).
        Value::StringMap(_) => {}
    }
}
