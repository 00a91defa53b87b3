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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use ::prometheus::{IntCounterVec, Opts, Registry};

use super::config::{ExpirationPolicy, Metric};
use super::family::{Definition, Family, State, nanos};
use crate::BuildError;

/// Name of the self-metric counting updates dropped by a metric's `maxSeries`.
pub const SERIES_DROPPED_METRIC: &str = "mixer_adapter_prometheus_series_dropped_total";

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

/// A [`Clock`] that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

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
    /// The series-dropped self-metric, registered once (on the first handler build).
    dropped: OnceLock<Option<IntCounterVec>>,
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
            dropped: OnceLock::new(),
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

    /// The series-dropped counter, created and registered in `registry` by the first
    /// call. A registry that already has a collector of that name keeps it (and ours goes
    /// unexported), which happens only if two exporters share one registry.
    fn dropped_counter(&self, registry: &Registry) -> Option<&IntCounterVec> {
        self.dropped
            .get_or_init(|| {
                let vec = IntCounterVec::new(
                    Opts::new(
                        SERIES_DROPPED_METRIC,
                        "Updates of prometheus adapter metrics dropped because they would \
                         have created more series than the metric's maxSeries.",
                    ),
                    &["metric"],
                )
                .map_err(|e| tracing::warn!(error = %e, "Cannot create {SERIES_DROPPED_METRIC}."))
                .ok()?;
                match registry.register(Box::new(vec.clone())) {
                    Ok(()) => {}
                    Err(::prometheus::Error::AlreadyReg) => tracing::debug!(
                        "{SERIES_DROPPED_METRIC} is already registered; this exporter's drops \
                         are not exported."
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot register {SERIES_DROPPED_METRIC}.")
                    }
                }
                Some(vec)
            })
            .as_ref()
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
        let dropped = self.dropped_counter(registry);
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
            return Err(BuildError(conflicts.join("; ")));
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
                    let counter = dropped.map(|v| v.with_label_values(&[def.name.as_str()]));
                    let family = Family::new(def, id, state, counter);
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

    /// The Prometheus text exposition (format 0.0.4) of everything published: families
    /// in name order, each with `# HELP` and `# TYPE`, series in label-value order.
    pub fn render(&self) -> String {
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
        let mut out = String::new();
        for family in visible {
            family.sweep_if_due(now);
            family.render(&mut out);
        }
        out
    }
}

/// The live (not retired) family among `slots` with definition `def`.
fn joinable(slots: &[Slot], def: &Definition) -> Option<usize> {
    slots
        .iter()
        .position(|s| s.family.def == *def && s.family.state() != State::Retired)
}
