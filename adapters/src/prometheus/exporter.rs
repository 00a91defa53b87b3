//! The state every prometheus handler publishes into, served on one HTTP listener.
//!
//! The exporter keeps metric families by full name, each used by one or more handlers.
//! A handler built with a definition identical to a live family joins it, so a reload
//! that does not change a metric keeps its series. A changed definition gets a new family
//! that is *pending*: it replaces the exposed one when its handler records its first
//! value (the new configuration is then serving), or when the last user of the old
//! family is released. Building therefore changes nothing visible by itself, which
//! matters because a configuration that is built and then rejected is dropped without
//! ever serving. A family no handler uses any more is removed.
//!
//! What the exporter keeps and serves is bounded by [`ExpositionLimits`]: label values are
//! cut to a maximum length before they are stored, and a scrape is rendered lazily, a few
//! dozen kilobytes at a time ([`Exporter::render_chunks`]), and stops at a maximum size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use ::prometheus::core::Collector;
use ::prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::config::{ExpirationPolicy, Metric};
use super::family::{Definition, Family, FamilyCounters, Series, State, nanos};
use super::labels::LabelHasher;
use crate::BuildError;

/// Name of the self-metric counting updates dropped by a metric's `maxSeries`.
pub const SERIES_DROPPED_METRIC: &str = "mixer_adapter_prometheus_series_dropped_total";
/// Name of the self-metric counting label values cut to the maximum length, by metric.
pub const LABELS_TRUNCATED_METRIC: &str = "mixer_adapter_prometheus_label_values_truncated_total";
/// Name of the self-metric counting scrapes cut at the maximum exposition size.
pub const EXPOSITIONS_TRUNCATED_METRIC: &str =
    "mixer_adapter_prometheus_expositions_truncated_total";

/// Default of [`ExpositionLimits::max_label_value_bytes`]. The longest legitimate Istio
/// label values (DNS names of at most 253 bytes, SPIFFE principals, workload and
/// namespace names) fit with room to spare, while a value a client controls (a `Host`
/// header, say) costs at most 1 KiB per label of each series it creates.
pub const DEFAULT_MAX_LABEL_VALUE_BYTES: usize = 1024;
/// Default of [`ExpositionLimits::max_exposition_bytes`]: far above what a healthy mesh
/// exposes (the default 10000 series per metric of short labels), far below what would
/// make a scrape take minutes.
pub const DEFAULT_MAX_EXPOSITION_BYTES: usize = 64 * 1024 * 1024;

/// A scrape is rendered in chunks of about this size.
const CHUNK_BYTES: usize = 64 * 1024;

/// Bounds on what the exporter keeps and serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpositionLimits {
    /// Label values longer than this many bytes are cut to it (at a character boundary)
    /// before a series stores them, and counted in [`LABELS_TRUNCATED_METRIC`]. Values
    /// that differ only beyond the limit therefore share a series. 0: no limit.
    pub max_label_value_bytes: usize,
    /// A scrape stops before the series that would take it past this many bytes, ends
    /// with a comment saying so, and is counted in [`EXPOSITIONS_TRUNCATED_METRIC`].
    /// 0: no limit.
    pub max_exposition_bytes: usize,
}

impl Default for ExpositionLimits {
    fn default() -> Self {
        ExpositionLimits {
            max_label_value_bytes: DEFAULT_MAX_LABEL_VALUE_BYTES,
            max_exposition_bytes: DEFAULT_MAX_EXPOSITION_BYTES,
        }
    }
}

/// The time source of series expiry: a monotonic time since an arbitrary origin.
/// Injectable so that tests can move time on without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Duration;
}

/// [`Clock`] on the system's monotonic clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A [`Clock`] that moves only when told to (tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

#[cfg(test)]
impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.nanos.fetch_add(nanos(d), Ordering::AcqRel);
    }

    /// Sets the clock to `t` after its origin.
    pub fn set(&self, t: Duration) {
        self.nanos.store(nanos(t), Ordering::Release);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

/// Metric families of all prometheus handlers, rendered for a scrape.
pub struct Exporter {
    clock: Arc<dyn Clock>,
    /// Full name → the families of that name (at most one visible), with their users.
    names: Mutex<BTreeMap<String, Vec<Slot>>>,
    /// Handler ids and family sequence numbers.
    next_seq: AtomicU64,
    /// [`ExpositionLimits::max_label_value_bytes`], taken by families as they are created.
    max_label_value_bytes: AtomicUsize,
    /// [`ExpositionLimits::max_exposition_bytes`].
    max_exposition_bytes: AtomicUsize,
    /// The adapter's self-metrics, registered once (on the first handler build).
    self_metrics: OnceLock<SelfMetrics>,
    /// Whether a cut scrape has been reported in the log (once per process).
    cut_warned: Arc<AtomicBool>,
    /// The label hasher of every family (one seed, so that a handler can hash a bag's
    /// label values once for all its families with the same labels).
    hasher: LabelHasher,
}

/// The adapter's self-metrics (each absent if it could not be created).
struct SelfMetrics {
    series_dropped: Option<IntCounterVec>,
    labels_truncated: Option<IntCounterVec>,
    expositions_truncated: Option<IntCounter>,
}

/// A family and the handlers using it.
struct Slot {
    family: Arc<Family>,
    users: Vec<User>,
}

/// A handler using a family, with its expiration policy (the newest user's applies).
struct User {
    id: u64,
    handler: String,
    expiration: Option<ExpirationPolicy>,
}

impl Slot {
    fn apply_policy(&self, now: u64) {
        if let Some(newest) = self.users.iter().max_by_key(|u| u.id) {
            self.family.set_policy(newest.expiration, now);
        }
    }
}

impl Default for Exporter {
    fn default() -> Self {
        Exporter::with_clock(Arc::new(SystemClock::default()))
    }
}

/// What [`Exporter::attach`] gives a handler.
pub(super) struct Attached {
    /// Identifies the handler to [`Exporter::release`].
    pub id: u64,
    /// The family of each metric, in the order given.
    pub families: Vec<Arc<Family>>,
}

impl Exporter {
    /// An exporter whose series expiry follows `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Exporter {
        Exporter {
            clock,
            names: Mutex::default(),
            next_seq: AtomicU64::new(1),
            max_label_value_bytes: AtomicUsize::new(DEFAULT_MAX_LABEL_VALUE_BYTES),
            max_exposition_bytes: AtomicUsize::new(DEFAULT_MAX_EXPOSITION_BYTES),
            self_metrics: OnceLock::new(),
            cut_warned: Arc::default(),
            hasher: LabelHasher::default(),
        }
    }

    /// Sets the limits (the server does, at startup). The label-value limit applies to
    /// families created afterwards: a family keeps the limit it was created with, so that
    /// its stored series always agree with how updates are matched to them.
    pub fn set_limits(&self, limits: ExpositionLimits) {
        self.max_label_value_bytes
            .store(limits.max_label_value_bytes, Ordering::Release);
        self.max_exposition_bytes
            .store(limits.max_exposition_bytes, Ordering::Release);
    }

    /// The limits in force.
    pub fn limits(&self) -> ExpositionLimits {
        ExpositionLimits {
            max_label_value_bytes: self.max_label_value_bytes.load(Ordering::Acquire),
            max_exposition_bytes: self.max_exposition_bytes.load(Ordering::Acquire),
        }
    }

    /// The clock time in nanoseconds.
    pub fn now(&self) -> u64 {
        nanos(self.clock.now())
    }

    fn names(&self) -> MutexGuard<'_, BTreeMap<String, Vec<Slot>>> {
        // Every change under this lock is completed before anything can panic.
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The self-metrics, created and registered in `registry` by the first call. A
    /// registry that already has a collector of a name keeps it (and ours goes
    /// unexported), which happens only if two exporters share one registry.
    fn self_metrics(&self, registry: &Registry) -> &SelfMetrics {
        self.self_metrics.get_or_init(|| SelfMetrics {
            series_dropped: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        SERIES_DROPPED_METRIC,
                        "Updates of prometheus adapter metrics dropped because they would \
                         have created more series than the metric's maxSeries.",
                    ),
                    &["metric"],
                ),
            ),
            labels_truncated: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        LABELS_TRUNCATED_METRIC,
                        "Label values of prometheus adapter metrics cut to the maximum \
                         label value length.",
                    ),
                    &["metric"],
                ),
            ),
            expositions_truncated: register(
                registry,
                IntCounter::new(
                    EXPOSITIONS_TRUNCATED_METRIC,
                    "Prometheus scrapes cut short at the maximum exposition size.",
                ),
            ),
        })
    }

    /// Gives handler `handler` a family for each of `metrics`: an existing family with the
    /// same definition, or a new one. Fails, changing nothing, if a metric's name is
    /// already exported with another definition by a handler of another name (a handler
    /// of the same name is this handler's previous version, which it replaces).
    pub(super) fn attach(
        &self,
        handler: &str,
        metrics: &[Metric],
        expiration: Option<ExpirationPolicy>,
        registry: &Registry,
    ) -> Result<Attached, BuildError> {
        let self_metrics = self.self_metrics(registry);
        let max_label_bytes = self.max_label_value_bytes.load(Ordering::Acquire);
        let id = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let now = self.now();
        let defs: Vec<Definition> = metrics.iter().map(Definition::of).collect();
        let mut names = self.names();

        let mut conflicts = Vec::new();
        for def in &defs {
            let Some(slots) = names.get(&def.name) else {
                continue;
            };
            if joinable(slots, def).is_some() {
                continue;
            }
            let mut others: Vec<&str> = slots
                .iter()
                .flat_map(|s| &s.users)
                .map(|u| u.handler.as_str())
                .filter(|h| *h != handler)
                .collect();
            others.sort_unstable();
            others.dedup();
            if !others.is_empty() {
                conflicts.push(format!(
                    "metric '{}' is already exported with a different definition by handler {}",
                    def.name,
                    others
                        .iter()
                        .map(|h| format!("'{h}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if !conflicts.is_empty() {
            return Err(BuildError::Conflict(conflicts));
        }

        let mut families = Vec::with_capacity(defs.len());
        for def in defs {
            let slots = names.entry(def.name.clone()).or_default();
            let user = User {
                id,
                handler: handler.to_owned(),
                expiration,
            };
            let i = match joinable(slots, &def) {
                Some(i) => {
                    slots[i].users.push(user);
                    i
                }
                None => {
                    let exposed = slots.iter().any(|s| s.family.state() == State::Visible);
                    let state = if exposed {
                        tracing::info!(
                            metric = %def.name,
                            handler,
                            "Prometheus metric definition changed: its series restart when the \
                             new handler records its first value."
                        );
                        State::Pending
                    } else {
                        State::Visible
                    };
                    let metric = [def.name.as_str()];
                    let counters = FamilyCounters {
                        series_dropped: (self_metrics.series_dropped.as_ref())
                            .map(|v| v.with_label_values(&metric)),
                        labels_truncated: (self_metrics.labels_truncated.as_ref())
                            .map(|v| v.with_label_values(&metric)),
                    };
                    let family = Family::new(
                        def,
                        id,
                        state,
                        counters,
                        max_label_bytes,
                        self.hasher.clone(),
                    );
                    slots.push(Slot {
                        family: Arc::new(family),
                        users: vec![user],
                    });
                    slots.len() - 1
                }
            };
            slots[i].apply_policy(now);
            families.push(slots[i].family.clone());
        }
        Ok(Attached { id, families })
    }

    /// Exposes a pending family in place of the older family of its name (called when its
    /// handler records into it). A family older than the exposed one is retired instead.
    pub(super) fn activate(&self, family: &Arc<Family>) {
        let names = self.names();
        if family.state() != State::Pending {
            return;
        }
        let Some(slots) = names.get(&family.def.name) else {
            family.set_state(State::Retired);
            return;
        };
        if !slots.iter().any(|s| Arc::ptr_eq(&s.family, family)) {
            family.set_state(State::Retired);
            return;
        }
        match slots.iter().find(|s| s.family.state() == State::Visible) {
            Some(v) if v.family.seq > family.seq => family.set_state(State::Retired),
            Some(v) => {
                v.family.set_state(State::Retired);
                family.set_state(State::Visible);
            }
            None => family.set_state(State::Visible),
        }
    }

    /// Handler `id` no longer uses `families`. A family without users is removed; if it
    /// was the exposed one, the newest pending family of its name takes its place.
    pub(super) fn release(&self, id: u64, families: &[Arc<Family>]) {
        let now = self.now();
        let mut names = self.names();
        for family in families {
            let name = &family.def.name;
            let Some(slots) = names.get_mut(name) else {
                continue;
            };
            let Some(i) = slots.iter().position(|s| Arc::ptr_eq(&s.family, family)) else {
                continue;
            };
            slots[i].users.retain(|u| u.id != id);
            if slots[i].users.is_empty() {
                let gone = slots.remove(i);
                let was_visible = gone.family.state() == State::Visible;
                gone.family.set_state(State::Retired);
                if was_visible
                    && let Some(next) = slots
                        .iter()
                        .filter(|s| s.family.state() == State::Pending)
                        .max_by_key(|s| s.family.seq)
                {
                    next.family.set_state(State::Visible);
                }
                tracing::debug!(metric = %name, "Prometheus metric family released.");
            } else {
                slots[i].apply_policy(now);
            }
            if slots.is_empty() {
                names.remove(name);
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of everything published, whole (see
    /// [`Exporter::render_chunks`]).
    pub fn render(&self) -> String {
        self.render_chunks().collect()
    }

    /// The Prometheus text exposition (format 0.0.4) of everything published, rendered
    /// lazily in chunks of about 64 KiB: families in name order, each with `# HELP` and
    /// `# TYPE`, series in label-value order. The chunks hold only `Arc`s of the families
    /// and, for the family being rendered, of its series: no lock is held between
    /// chunks, and no scrape is ever one string. Past
    /// [`ExpositionLimits::max_exposition_bytes`] the rendering stops, between series,
    /// with a comment line saying so.
    pub fn render_chunks(&self) -> ExpositionChunks {
        let now = self.now();
        let visible: Vec<Arc<Family>> = self
            .names()
            .values()
            .filter_map(|slots| {
                slots
                    .iter()
                    .find(|s| s.family.state() == State::Visible)
                    .map(|s| s.family.clone())
            })
            .collect();
        let max_bytes = match self.max_exposition_bytes.load(Ordering::Acquire) {
            0 => usize::MAX,
            n => n,
        };
        ExpositionChunks {
            families: visible.into_iter(),
            current: None,
            now,
            written: 0,
            max_bytes,
            done: false,
            truncated: (self.self_metrics.get()).and_then(|m| m.expositions_truncated.clone()),
            warned: self.cut_warned.clone(),
            labels: String::new(),
        }
    }
}

/// Registers `collector` in `registry`; the collector, unless it could not be created.
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: ::prometheus::Result<C>,
) -> Option<C> {
    let collector = collector
        .map_err(|e| tracing::warn!(error = %e, "Cannot create a prometheus adapter self-metric."))
        .ok()?;
    match registry.register(Box::new(collector.clone())) {
        Ok(()) => {}
        Err(::prometheus::Error::AlreadyReg) => tracing::debug!(
            "A prometheus adapter self-metric is already registered; this exporter's counts \
             are not exported."
        ),
        Err(e) => tracing::warn!(error = %e, "Cannot register a prometheus adapter self-metric."),
    }
    Some(collector)
}

/// A scrape being rendered: see [`Exporter::render_chunks`].
pub struct ExpositionChunks {
    /// Families not yet started.
    families: std::vec::IntoIter<Arc<Family>>,
    /// The family being rendered, and its series not yet rendered.
    current: Option<(Arc<Family>, std::vec::IntoIter<Arc<Series>>)>,
    /// Clock time of the scrape (for expiry).
    now: u64,
    /// Bytes rendered so far.
    written: usize,
    max_bytes: usize,
    done: bool,
    truncated: Option<IntCounter>,
    warned: Arc<AtomicBool>,
    /// Scratch space for one series' label text.
    labels: String,
}

impl ExpositionChunks {
    /// Appends the next family's header, or the current family's next series, to
    /// `chunk`. False when there is nothing left.
    fn render_next(&mut self, chunk: &mut String) -> bool {
        loop {
            if let Some((family, series)) = &mut self.current {
                if let Some(s) = series.next() {
                    family.render_series(&s, &mut self.labels, chunk);
                    return true;
                }
                self.current = None;
            }
            let Some(family) = self.families.next() else {
                return false;
            };
            family.sweep_if_due(self.now);
            let series = family.sorted_series();
            // As the Go client, families without series are left out.
            if series.is_empty() {
                continue;
            }
            family.render_header(chunk);
            self.current = Some((family, series.into_iter()));
            return true;
        }
    }

    /// Ends the scrape with a comment saying it was cut, and counts it.
    fn cut(&mut self, chunk: &mut String) {
        chunk.push_str(&format!(
            "# Exposition truncated: the remaining series would take it past {} bytes \
             (prometheus-max-exposition-bytes).\n",
            self.max_bytes
        ));
        if let Some(c) = &self.truncated {
            c.inc();
        }
        if !self.warned.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                max_bytes = self.max_bytes,
                "A Prometheus scrape reached the maximum exposition size and was cut short \
                 (counted in {EXPOSITIONS_TRUNCATED_METRIC}; logged once)."
            );
        }
    }
}

impl Iterator for ExpositionChunks {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        let mut chunk = String::with_capacity(CHUNK_BYTES);
        while chunk.len() < CHUNK_BYTES {
            let mark = chunk.len();
            if !self.render_next(&mut chunk) {
                self.done = true;
                break;
            }
            let piece = chunk.len() - mark;
            if self.written.saturating_add(piece) > self.max_bytes {
                chunk.truncate(mark);
                self.cut(&mut chunk);
                self.done = true;
                break;
            }
            self.written += piece;
        }
        (!chunk.is_empty()).then_some(chunk)
    }
}

/// The live (not retired) family among `slots` with definition `def`.
fn joinable(slots: &[Slot], def: &Definition) -> Option<usize> {
    slots
        .iter()
        .position(|s| s.family.def == *def && s.family.state() != State::Retired)
}
