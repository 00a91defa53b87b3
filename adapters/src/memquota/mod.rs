//! `memquota`: in-memory quota counters for a single server.
//!
//! Semantics are Mixer's (`mixer/adapter/memquota`, Istio 1.4):
//!
//! * One counter per quota instance and distinct dimension tuple ([`keys`]). The limit
//!   is the quota's, or that of the first override whose dimensions all match; an
//!   override without `validDuration` is a non-expiring pool (not inherited).
//! * `validDuration > 0`: a rolling window of whole seconds in 100 ms ticks
//!   ([`window`]); `0`: a pool whose units stay in use until released.
//! * Positive amounts allocate: all or nothing, or with `best_effort` whatever is
//!   left (possibly 0). Negative amounts release. Zero asks nothing.
//! * The status is always OK: a denial is `granted_amount` below the request.
//!   A grant from a window is valid for the limit's `validDuration`; pool grants,
//!   denials and releases carry no validity.
//! * An allocation also tells the limit that applied and the units left after it
//!   (`QuotaResult::budget`); a release or a deduplicated repeat does not.
//! * Results are remembered per deduplication id for one to two
//!   `minDeduplicationDuration` periods ([`dedup`]); a repeat gets the stored amount and
//!   the remaining validity without being charged again. The runtime appends the quota
//!   name to the request's id, so requests without an id all share one entry per quota
//!   (Mixer's behaviour, kept).
//!
//! Unlike Mixer, which took one handler-wide lock per request, each counter has its own
//! lock ([`counters`]) and the deduplication table is sharded by id.
//!
//! `governor` is not used: its GCRA limiter spreads a rate evenly (one cell every
//! `period / burst`) instead of counting grants in Mixer's window, and it has no
//! partial (best-effort) grants, no releases and no pools, so it would change the
//! answers this adapter must give.

pub mod clock;
pub mod config;
pub mod counters;
pub mod dedup;
pub mod keys;
pub mod window;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use templates::handler::{QuotaHandler, QuotaReply};
use templates::instances::quota;
use templates::{Handler, QuotaArgs, QuotaBudget, QuotaResult, Reply, Status, TemplateKind};

use self::clock::{Clock, SystemClock, nanos};
use self::config::{Config, QuotaLimit};
use self::counters::{Counter, Counters, Slot};
use self::dedup::{DedupTable, Record};
use self::window::WindowSpec;
use crate::{Adapter, BuildError, Env, ValidateInput, Validation};

/// The memquota adapter.
pub struct MemQuotaAdapter;

/// The adapter as listed in [`crate::inventory`].
pub static ADAPTER: MemQuotaAdapter = MemQuotaAdapter;

impl Adapter for MemQuotaAdapter {
    type Config = Config;

    fn name(&self) -> &'static str {
        "memquota"
    }
    fn description(&self) -> &'static str {
        "In-memory quota counters for a single server"
    }
    fn templates(&self) -> &'static [TemplateKind] {
        &[TemplateKind::Quota]
    }
    fn validate(&self, input: &ValidateInput<'_>) -> Validation<Config> {
        config::validate(input).into()
    }
    fn build(&self, config: Config, env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        tracing::debug!(handler = %env.handler, quotas = config.quotas.len(), "memquota handler built");
        Ok(Arc::new(MemQuota::new(config, Arc::new(SystemClock))))
    }
}

/// The limit that applies to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub max_amount: i64,
    /// The configured validity of a grant, ns; 0 for a pool.
    pub valid_nanos: i64,
}

impl Limit {
    /// The limit of `quota` for `instance`: the first matching override's, else the
    /// quota's own.
    pub fn select(quota: &QuotaLimit, instance: &quota::Instance<'_>) -> Limit {
        for o in &quota.overrides {
            if keys::dimensions_match(&o.dimensions, &instance.dimensions, true) {
                return Limit {
                    max_amount: o.max_amount,
                    valid_nanos: nanos(o.valid_duration),
                };
            }
        }
        Limit {
            max_amount: quota.max_amount,
            valid_nanos: nanos(quota.valid_duration),
        }
    }

    /// What is left of this limit: `remaining` units.
    fn budget(&self, remaining: i64) -> QuotaBudget {
        QuotaBudget {
            max_amount: self.max_amount,
            window: clock::duration(self.valid_nanos),
            remaining,
        }
    }

    fn counter(&self, now: i64) -> Counter {
        let spec = (self.valid_nanos > 0).then(|| WindowSpec::memquota(self.valid_nanos));
        Counter::new(self.max_amount, spec, now)
    }
}

thread_local! {
    /// The counter key of the request being served, built in place: one buffer per
    /// thread instead of an allocation per request.
    static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A memquota handler.
pub struct MemQuota {
    config: Config,
    clock: Arc<dyn Clock>,
    counters: Counters,
    dedup: DedupTable,
}

impl MemQuota {
    /// A handler reading time from `clock`.
    pub fn new(config: Config, clock: Arc<dyn Clock>) -> MemQuota {
        let start = clock.now_unix_nanos();
        let period = nanos(config.min_deduplication_duration);
        MemQuota {
            config,
            clock,
            counters: Counters::default(),
            dedup: DedupTable::new(start, period),
        }
    }

    /// Allocates (`amount > 0`) or releases (`amount < 0`) quota for `instance`.
    pub fn allocate(&self, instance: &quota::Instance<'_>, args: QuotaArgs<'_>) -> QuotaResult {
        if args.amount == 0 {
            return empty();
        }
        let Some(quota) = self.config.quota(instance.name) else {
            // Validation guarantees a limit for every routed instance; Mixer answered an
            // unknown name with an empty result too.
            tracing::debug!(
                instance = instance.name,
                "memquota: no limit for this quota instance"
            );
            return empty();
        };
        let now = self.clock.now_unix_nanos();

        let mut seen = self.dedup.lock(args.deduplication_id, now);
        if let Some(r) = seen.get(args.deduplication_id) {
            tracing::debug!(
                dedup_id = args.deduplication_id,
                amount = r.amount,
                "memquota: quota operation satisfied through deduplication"
            );
            return result(r, now);
        }
        let slot = KEY.with_borrow_mut(|key| {
            keys::counter_key_into(key, instance.name, &instance.dimensions, false);
            self.counters
                .get_or_create(key, now, || Slot::new(Limit::select(quota, instance), now))
        });
        let limit = slot.limit;
        let (record, budget) = {
            let mut c = slot.lock();
            if args.amount > 0 {
                let record = match c.alloc(now, args.amount, args.best_effort) {
                    Some(granted) => Record {
                        amount: granted,
                        expires: (limit.valid_nanos > 0)
                            .then(|| now.saturating_add(limit.valid_nanos)),
                    },
                    None => Record {
                        amount: 0,
                        expires: None,
                    },
                };
                (record, Some(limit.budget(c.remaining())))
            } else {
                // i64::MIN has no positive counterpart; releasing i64::MAX is the same.
                let amount = args.amount.checked_neg().unwrap_or(i64::MAX);
                let record = Record {
                    amount: c.release(now, amount),
                    expires: None,
                };
                (record, None)
            }
        };
        seen.insert(args.deduplication_id, record);
        drop(seen);
        if tracing::enabled!(tracing::Level::TRACE) {
            KEY.with_borrow(|key| {
                tracing::trace!(
                    key = %String::from_utf8_lossy(key),
                    requested = args.amount,
                    amount = record.amount,
                    "memquota"
                );
            });
        }
        QuotaResult {
            budget,
            ..result(record, now)
        }
    }

    /// Number of counters held.
    #[cfg(test)]
    pub fn counter_count(&self) -> usize {
        self.counters.count()
    }
}

fn empty() -> QuotaResult {
    QuotaResult {
        status: Status::OK,
        valid_duration: std::time::Duration::ZERO,
        granted_amount: 0,
        budget: None,
    }
}

fn result(r: Record, now: i64) -> QuotaResult {
    QuotaResult {
        status: Status::OK,
        valid_duration: clock::duration(r.expires.map_or(0, |e| e.saturating_sub(now))),
        granted_amount: r.amount,
        budget: None,
    }
}

impl QuotaHandler for MemQuota {
    fn handle_quota(&self, instance: &quota::Instance<'_>, args: QuotaArgs<'_>) -> QuotaReply<'_> {
        Reply::Ready(Ok(self.allocate(instance, args)))
    }
}

impl Handler for MemQuota {
    fn quota(&self) -> Option<&dyn QuotaHandler> {
        Some(self)
    }
}
