//! One exported metric family: its definition, its series, and how they are updated,
//! expired and rendered.
//!
//! Series live in a few independently locked shards, each a map from a hash of the label
//! values to the series with that hash. An update hashes the dimension values' text as it
//! is produced (no label strings are built, see `labels.rs`), takes a shard's read lock
//! and updates the series in place with atomics; only a label set never seen before takes
//! a write lock, and only one the series cap admits allocates its label strings.
//! Concurrent reports therefore contend only on a shard's reader count, never on one
//! global lock.
//!
//! Label values longer than the family's limit are cut (at a character boundary) before
//! they are hashed, compared or stored, so a hostile value costs at most the limit, and
//! values that differ only beyond it share one series.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ::prometheus::IntCounter;
use expr_lang::Value;

use super::config::{ExpirationPolicy, Metric, MetricKind};
use super::labels::{LabelHash, LabelHasher};
use super::text;

/// Number of independently locked parts of a family's series map (a power of two).
const SHARDS: usize = 16;

/// What makes two metric entries the same family: if a reloaded handler defines a metric
/// exactly like the running one, the series carry over; any difference starts afresh.
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    /// The full exported name (`istio_requests_total`).
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    /// Label names, sorted: the exposition order, and the order in which series keep
    /// their label values (so a reordered `label_names` is still the same family).
    pub labels: Vec<String>,
}

impl Definition {
    pub fn of(metric: &Metric) -> Definition {
        let mut labels = metric.label_names.clone();
        labels.sort();
        Definition {
            name: metric.full_name.clone(),
            help: metric.help.clone(),
            kind: metric.kind.clone(),
            labels,
        }
    }
}

/// Where a family stands in the exposition (see the exporter for the transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Built by a handler that has not recorded anything yet, while an older family of the
    /// same name is still exposed.
    Pending = 0,
    /// The family exposed under its name.
    Visible = 1,
    /// Superseded by a newer family of the same name (or released): never exposed again.
    Retired = 2,
}

/// What an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Updated,
    Created,
    /// The label set was new and the family already had `max_series` series.
    Dropped,
}

/// A hasher for keys that already are hashes (the shards' map keys).
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else in so the hasher stays total.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Label-value hash → the series with that hash (more than one only on a collision).
type Shard = HashMap<u64, Vec<Arc<Series>>, BuildHasherDefault<PreHashed>>;

/// The self-metric children a family counts into (absent when they could not be
/// registered).
#[derive(Clone, Default)]
pub struct FamilyCounters {
    /// Updates dropped by the series cap.
    pub series_dropped: Option<IntCounter>,
    /// Label values cut to the maximum length.
    pub labels_truncated: Option<IntCounter>,
}

/// One metric family, shared by every handler that defines it identically.
pub struct Family {
    pub def: Definition,
    /// Creation order: when two families of the same name compete for the exposition,
    /// the newer one wins.
    pub seq: u64,
    state: AtomicU8,
    /// Randomly seeded, so that label values chosen to collide cannot be precomputed.
    hasher: LabelHasher,
    shards: Box<[RwLock<Shard>]>,
    /// Number of series, for `max_series`.
    len: AtomicUsize,
    /// Idle time (ns) after which a series is removed; 0: never.
    expiry: AtomicU64,
    /// Period of the expiry check (ns).
    interval: AtomicU64,
    /// Clock time (ns) of the next scheduled expiry check; `u64::MAX`: none.
    next_sweep: AtomicU64,
    counters: FamilyCounters,
    /// Label values are cut to this many bytes (fixed for the family's life, so that a
    /// series' stored text always agrees with how updates are hashed and matched).
    max_label_bytes: usize,
    /// Whether the cap has been reported in the log (once per family, not per update).
    warned: AtomicBool,
    /// Whether a cut label value has been reported in the log (once per family).
    truncation_warned: AtomicBool,
    /// Label sets whose strings were built (tests of the series cap).
    #[cfg(test)]
    labels_built: AtomicUsize,
}

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.def.name)
            .field("seq", &self.seq)
            .field("state", &self.state())
            .field("series", &self.len())
            .finish_non_exhaustive()
    }
}

impl Family {
    /// A family whose label values are cut to `max_label_bytes` (0: never cut) and hashed
    /// by `hasher`.
    pub fn new(
        def: Definition,
        seq: u64,
        state: State,
        counters: FamilyCounters,
        max_label_bytes: usize,
        hasher: LabelHasher,
    ) -> Family {
        Family {
            def,
            seq,
            state: AtomicU8::new(state as u8),
            hasher,
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            len: AtomicUsize::new(0),
            expiry: AtomicU64::new(0),
            interval: AtomicU64::new(0),
            next_sweep: AtomicU64::new(u64::MAX),
            counters,
            max_label_bytes: match max_label_bytes {
                0 => usize::MAX,
                n => n,
            },
            warned: AtomicBool::new(false),
            truncation_warned: AtomicBool::new(false),
            #[cfg(test)]
            labels_built: AtomicUsize::new(0),
        }
    }

    /// The length label values are cut to (`usize::MAX`: never cut). Families of one
    /// exporter with the same limit hash a label set alike.
    pub fn max_label_bytes(&self) -> usize {
        self.max_label_bytes
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Pending,
            1 => State::Visible,
            _ => State::Retired,
        }
    }

    pub fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_counter(&self) -> bool {
        self.def.kind == MetricKind::Counter
    }

    /// Applies an expiration policy. An unchanged policy keeps its schedule; a changed one
    /// schedules its first check one interval from `now`.
    pub fn set_policy(&self, policy: Option<ExpirationPolicy>, now: u64) {
        let (expiry, interval) = match policy {
            Some(p) => (nanos(p.expiry).max(1), nanos(p.check_interval).max(1)),
            None => (0, 0),
        };
        if self.expiry.load(Ordering::Acquire) == expiry
            && self.interval.load(Ordering::Acquire) == interval
        {
            return;
        }
        self.expiry.store(expiry, Ordering::Release);
        self.interval.store(interval, Ordering::Release);
        let next = if expiry == 0 {
            u64::MAX
        } else {
            now.saturating_add(interval)
        };
        self.next_sweep.store(next, Ordering::Release);
    }

    /// Runs the expiry check if one is due at `now`.
    ///
    /// Instead of a background task, the check runs on the first update or scrape after
    /// its scheduled time, and removes what a periodic sweeper would have removed at the
    /// last scheduled time (`tick`), not at `now`. Since every update runs a due check
    /// before it applies, a series that a sweeper would have deleted restarts from zero
    /// exactly as with a sweeper, and nothing needs stopping when a handler closes.
    pub fn sweep_if_due(&self, now: u64) {
        let next = self.next_sweep.load(Ordering::Acquire);
        if now < next {
            return;
        }
        let expiry = self.expiry.load(Ordering::Acquire);
        let interval = self.interval.load(Ordering::Acquire).max(1);
        if expiry == 0 {
            return;
        }
        let tick = next + (now - next) / interval * interval;
        // Whoever moves the schedule on does the check; concurrent callers skip it.
        if self
            .next_sweep
            .compare_exchange(
                next,
                tick.saturating_add(interval),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        // A series is idle at `tick` if it was last updated at least `expiry` before.
        if let Some(cutoff) = tick.checked_sub(expiry) {
            self.remove_idle(cutoff);
        }
    }

    /// Removes the series last updated at or before `cutoff`.
    fn remove_idle(&self, cutoff: u64) {
        let idle = |s: &Arc<Series>| s.touched.load(Ordering::Acquire) <= cutoff;
        let mut removed = 0;
        for shard in &self.shards[..] {
            // Look first under the read lock, so that a check finding nothing to remove
            // does not stall updates.
            if !read(shard).values().flatten().any(idle) {
                continue;
            }
            let mut map = write(shard);
            map.retain(|_, list| {
                let before = list.len();
                list.retain(|s| !idle(s));
                removed += before - list.len();
                !list.is_empty()
            });
        }
        if removed > 0 {
            self.len.fetch_sub(removed, Ordering::AcqRel);
            tracing::debug!(metric = %self.def.name, removed, "Expired idle Prometheus series.");
        }
    }

    /// The hash of the label values `values[order[0]]`, `values[order[1]]`, ... (in
    /// [`Definition::labels`] order), as [`Family::record`] takes it.
    pub fn label_hash(&self, values: &[Value<'_>], order: &[usize]) -> LabelHash {
        self.hasher.hash(values, order, self.max_label_bytes)
    }

    /// Records `value` into the series whose label values are `values[order[0]]`,
    /// `values[order[1]]`, ... (in [`Definition::labels`] order), creating it unless that
    /// would exceed `max_series`. `hash` is their [`Family::label_hash`] (or that of a
    /// family of the same exporter and label limit); `now` is the clock time of the
    /// update.
    pub fn record(
        &self,
        values: &[Value<'_>],
        order: &[usize],
        hash: LabelHash,
        value: f64,
        now: u64,
        max_series: Option<u64>,
    ) -> Recorded {
        if hash.cut > 0 {
            self.count_truncated(hash.cut);
        }
        let LabelHash { hash, .. } = hash;
        // The shard comes from middle bits: the map itself uses the low bits for the
        // bucket and the top bits for its control bytes.
        let shard = &self.shards[(hash >> 32) as usize & (SHARDS - 1)];
        if let Some(series) = self.find(&read(shard), hash, values, order) {
            series.update(value, now, &self.def.kind);
            return Recorded::Updated;
        }
        let mut map = write(shard);
        // Another update may have created it since the read lock was released.
        if let Some(series) = self.find(&map, hash, values, order) {
            series.update(value, now, &self.def.kind);
            return Recorded::Updated;
        }
        // A new label set: its strings are built only once the cap has admitted it.
        if !self.reserve(max_series) {
            drop(map);
            self.count_drop(max_series.unwrap_or_default());
            return Recorded::Dropped;
        }
        let series = Series::new(self.label_strings(values, order), &self.def.kind);
        series.update(value, now, &self.def.kind);
        map.entry(hash).or_default().push(Arc::new(series));
        Recorded::Created
    }

    /// The series of `map` with label hash `hash` and the label values given.
    fn find<'m>(
        &self,
        map: &'m Shard,
        hash: u64,
        values: &[Value<'_>],
        order: &[usize],
    ) -> Option<&'m Arc<Series>> {
        map.get(&hash)?
            .iter()
            .find(|s| s.matches(values, order, self.max_label_bytes))
    }

    /// The label text of a new series, in label order.
    fn label_strings(&self, values: &[Value<'_>], order: &[usize]) -> Box<[Box<str>]> {
        #[cfg(test)]
        self.labels_built.fetch_add(1, Ordering::AcqRel);
        order
            .iter()
            .map(|&j| {
                text::label_text_capped(&values[j], self.max_label_bytes)
                    .0
                    .into_boxed_str()
            })
            .collect()
    }

    /// Takes a place for a new series, unless the family is full.
    fn reserve(&self, max_series: Option<u64>) -> bool {
        match max_series {
            None => {
                self.len.fetch_add(1, Ordering::AcqRel);
                true
            }
            Some(max) => self
                .len
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    ((n as u64) < max).then_some(n + 1)
                })
                .is_ok(),
        }
    }

    fn count_drop(&self, max_series: u64) {
        if let Some(c) = &self.counters.series_dropped {
            c.inc();
        }
        if !self.warned.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                metric = %self.def.name,
                max_series,
                "Prometheus metric has reached maxSeries: updates creating new series are \
                 dropped (counted in mixer_adapter_prometheus_series_dropped_total; logged once)."
            );
        }
    }

    fn count_truncated(&self, cut: u64) {
        if let Some(c) = &self.counters.labels_truncated {
            c.inc_by(cut);
        }
        if !self.truncation_warned.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                metric = %self.def.name,
                max_label_bytes = self.max_label_bytes,
                "Prometheus label values longer than the limit are cut to it (counted in \
                 mixer_adapter_prometheus_label_values_truncated_total; logged once)."
            );
        }
    }

    /// The series as they are now, in exposition order: the Go client orders a family's
    /// metrics by label values, labels in name order. Only the `Arc`s are copied, each
    /// shard's lock held just long enough for that.
    pub fn sorted_series(&self) -> Vec<Arc<Series>> {
        let mut series: Vec<Arc<Series>> = Vec::with_capacity(self.len());
        for shard in &self.shards[..] {
            series.extend(read(shard).values().flatten().cloned());
        }
        series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        series
    }

    /// Appends the `# HELP` and `# TYPE` lines.
    pub fn render_header(&self, out: &mut String) {
        let name = &self.def.name;
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        text::push_help(out, &self.def.help);
        out.push_str("\n# TYPE ");
        out.push_str(name);
        out.push_str(match self.def.kind {
            MetricKind::Counter => " counter\n",
            MetricKind::Gauge => " gauge\n",
            MetricKind::Distribution { .. } => " histogram\n",
        });
    }

    /// Appends the sample lines of `series`; `labels` is scratch space.
    pub fn render_series(&self, series: &Series, labels: &mut String, out: &mut String) {
        labels.clear();
        for (i, (n, v)) in self.def.labels.iter().zip(series.labels.iter()).enumerate() {
            if i > 0 {
                labels.push(',');
            }
            labels.push_str(n);
            labels.push_str("=\"");
            text::push_label_value(labels, v);
            labels.push('"');
        }
        series.render(&self.def.name, labels, &self.def.kind, out);
    }
}

/// One series: a label-value set and its data.
pub struct Series {
    /// Label values in [`Definition::labels`] order.
    labels: Box<[Box<str>]>,
    /// Clock time (ns) of the last update.
    touched: AtomicU64,
    cell: Cell,
}

enum Cell {
    /// `f64` bits.
    Counter(AtomicU64),
    /// `f64` bits.
    Gauge(AtomicU64),
    /// Locked as a whole so that a scrape never sees a count that disagrees with the
    /// buckets.
    Histogram(Mutex<Histogram>),
}

struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: Box<[u64]>,
    sum: f64,
}

impl Series {
    fn new(labels: Box<[Box<str>]>, kind: &MetricKind) -> Series {
        let cell = match kind {
            MetricKind::Counter => Cell::Counter(AtomicU64::new(0f64.to_bits())),
            MetricKind::Gauge => Cell::Gauge(AtomicU64::new(0f64.to_bits())),
            MetricKind::Distribution { buckets } => Cell::Histogram(Mutex::new(Histogram {
                counts: vec![0; buckets.len() + 1].into_boxed_slice(),
                sum: 0.0,
            })),
        };
        Series {
            labels,
            touched: AtomicU64::new(0),
            cell,
        }
    }

    fn matches(&self, values: &[Value<'_>], order: &[usize], max_label_bytes: usize) -> bool {
        self.labels
            .iter()
            .zip(order)
            .all(|(text, &j)| text::label_eq_capped(&values[j], text, max_label_bytes))
    }

    fn update(&self, value: f64, now: u64, kind: &MetricKind) {
        self.touched.fetch_max(now, Ordering::AcqRel);
        match (&self.cell, kind) {
            (Cell::Counter(bits), _) => {
                // `fetch_update` cannot fail with a closure that always returns `Some`.
                let _ = bits.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    Some((f64::from_bits(b) + value).to_bits())
                });
            }
            (Cell::Gauge(bits), _) => bits.store(value.to_bits(), Ordering::Release),
            (Cell::Histogram(h), MetricKind::Distribution { buckets }) => {
                // The first bucket whose bound is >= value (NaN lands in +Inf, as in Go).
                let i = buckets.partition_point(|b| *b < value || value.is_nan());
                let mut h = h.lock().unwrap_or_else(PoisonError::into_inner);
                h.counts[i] += 1;
                h.sum += value;
            }
            // A histogram cell is only ever created for a distribution definition.
            (Cell::Histogram(_), _) => {}
        }
    }

    fn render(&self, name: &str, labels: &str, kind: &MetricKind, out: &mut String) {
        match (&self.cell, kind) {
            (Cell::Counter(bits) | Cell::Gauge(bits), _) => {
                sample(
                    out,
                    name,
                    "",
                    labels,
                    None,
                    f64::from_bits(bits.load(Ordering::Acquire)),
                );
            }
            (Cell::Histogram(h), MetricKind::Distribution { buckets }) => {
                let (counts, sum) = {
                    let h = h.lock().unwrap_or_else(PoisonError::into_inner);
                    (h.counts.clone(), h.sum)
                };
                let mut cumulative = 0u64;
                let mut bound = String::new();
                for (i, c) in counts.iter().enumerate() {
                    cumulative += c;
                    bound.clear();
                    match buckets.get(i) {
                        Some(b) => text::push_go_float(&mut bound, *b),
                        None => bound.push_str("+Inf"),
                    }
                    sample(
                        out,
                        name,
                        "_bucket",
                        labels,
                        Some(&bound),
                        cumulative as f64,
                    );
                }
                sample(out, name, "_sum", labels, None, sum);
                sample(out, name, "_count", labels, None, cumulative as f64);
            }
            (Cell::Histogram(_), _) => {}
        }
    }
}

/// Appends one sample line: `name{labels,le="bound"} value`.
fn sample(out: &mut String, name: &str, suffix: &str, labels: &str, le: Option<&str>, v: f64) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        out.push_str(labels);
        if let Some(le) = le {
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(le);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    text::push_go_float(out, v);
    out.push('\n');
}

/// A duration in clock nanoseconds (saturating: centuries are "never").
pub fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// A panic while a lock is held cannot leave a shard half-updated in a way that matters
// (every mutation is a single insert, push or retain), so poisoning is ignored rather
// than turned into a panic on every later report.
fn read(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn counter_family(hasher: LabelHasher, dropped: &IntCounter) -> Family {
        let def = Definition {
            name: "istio_m".to_owned(),
            help: String::new(),
            kind: MetricKind::Counter,
            labels: vec!["a".to_owned(), "b".to_owned()],
        };
        let counters = FamilyCounters {
            series_dropped: Some(dropped.clone()),
            labels_truncated: None,
        };
        Family::new(def, 1, State::Visible, counters, 0, hasher)
    }

    fn record(family: &Family, a: &str, b: i64, max_series: Option<u64>) -> Recorded {
        let values = [Value::String(Cow::Borrowed(a)), Value::Int64(b)];
        let order = [0, 1];
        let hash = family.label_hash(&values, &order);
        family.record(&values, &order, hash, 1.0, 0, max_series)
    }

    fn rendered(family: &Family) -> String {
        let mut out = String::new();
        let mut labels = String::new();
        for s in family.sorted_series() {
            family.render_series(&s, &mut labels, &mut out);
        }
        out
    }

    #[test]
    fn label_sets_whose_hashes_collide_stay_distinct_series() {
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let family = counter_family(LabelHasher::constant(), &dropped);
        let hash = |a: &str| family.label_hash(&[Value::String(Cow::Borrowed(a))], &[0]);
        assert_eq!(hash("x"), hash("y"));
        assert_eq!(record(&family, "x", 1, None), Recorded::Created);
        assert_eq!(record(&family, "y", 1, None), Recorded::Created);
        assert_eq!(record(&family, "x", 2, None), Recorded::Created);
        assert_eq!(record(&family, "y", 1, None), Recorded::Updated);
        assert_eq!(record(&family, "x", 1, None), Recorded::Updated);
        assert_eq!(family.len(), 3);
        assert_eq!(
            rendered(&family),
            "istio_m{a=\"x\",b=\"1\"} 2\nistio_m{a=\"x\",b=\"2\"} 1\nistio_m{a=\"y\",b=\"1\"} 2\n"
        );
    }

    #[test]
    fn the_series_cap_refuses_without_building_labels_and_counts() {
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        for hasher in [LabelHasher::default(), LabelHasher::constant()] {
            let family = counter_family(hasher, &dropped);
            let before = dropped.get();
            assert_eq!(record(&family, "x", 1, Some(1)), Recorded::Created);
            assert_eq!(family.labels_built.load(Ordering::Acquire), 1);
            assert_eq!(record(&family, "y", 1, Some(1)), Recorded::Dropped);
            assert_eq!(record(&family, "x", 2, Some(1)), Recorded::Dropped);
            assert_eq!(record(&family, "x", 1, Some(1)), Recorded::Updated);
            assert_eq!(family.labels_built.load(Ordering::Acquire), 1);
            assert_eq!(dropped.get() - before, 2);
            assert_eq!(family.len(), 1);
            assert_eq!(rendered(&family), "istio_m{a=\"x\",b=\"1\"} 2\n");
        }
    }
}
