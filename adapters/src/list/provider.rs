//! The remote half of a list: fetching `providerUrl` on `refreshInterval`, keeping the
//! last good list, and deciding when it is too old (`ttl`) to answer with.
//!
//! Checks never wait for the network: they read the current [`Fetched`] snapshot (an
//! `Arc` behind a lock held only to clone it), and a refresh builds the next snapshot
//! completely before swapping it in.
//!
//! The provider is not trusted: its body is read up to `maxProviderBodyBytes` and no
//! further, and the list is compiled on a blocking thread (never on an async worker)
//! within a time budget, besides the regex size budget of [`super::matcher`]. A body
//! that was rejected is remembered, so the same body served again costs a fetch, not a
//! compilation. Every failure keeps the last good list until its ttl. The URL is shown
//! redacted everywhere ([`crate::redact::SecretUrl`]).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{ListEntryType, Provider as ProviderConfig};
use super::matcher::{ListError, Matcher};

/// A fetch that hangs must not hold the refresh loop forever; a fetch may however take
/// longer than a short refresh interval for a big list. It never takes longer than the
/// ttl, after which its result would be stale anyway.
const MIN_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a list may take to compile. The regex size budget already bounds a
/// compilation to well under a second (optimized); this catches anything else. A
/// compilation cannot be interrupted: one over budget runs on, off the async workers,
/// and refreshes are skipped until it ends, so a handler never compiles twice at once.
pub const COMPILE_TIME_BUDGET: Duration = Duration::from_secs(10);

/// Where time comes from, so that ttl expiry can be tested without waiting.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A refresh failed. The previous list, if any, is kept until its ttl. `url` is always
/// the redacted URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error(
        "{url} declares a body of {declared} bytes, more than maxProviderBodyBytes \
         ({limit_bytes} bytes); it was not read"
    )]
    DeclaredTooLarge {
        url: String,
        declared: u64,
        limit_bytes: u64,
    },
    #[error(
        "the body from {url} exceeds maxProviderBodyBytes ({limit_bytes} bytes); reading \
         stopped there"
    )]
    TooLarge { url: String, limit_bytes: u64 },
    #[error("list from {url} is invalid: {source}")]
    Invalid {
        url: String,
        #[source]
        source: ListError,
    },
    #[error(
        "list from {url} was rejected: compiling it took longer than the compile budget of \
         {}s",
        .budget.as_secs_f64()
    )]
    CompileTooSlow { url: String, budget: Duration },
    #[error(
        "list from {url} was not compiled: the previous one, over the compile budget, is \
         still compiling"
    )]
    CompileBusy { url: String },
    #[error("list from {url} could not be compiled: {reason}")]
    CompileFailed { url: String, reason: String },
}

/// The last good list.
#[derive(Debug)]
pub struct Good {
    pub list: Arc<Matcher>,
    /// The body it was compiled from: an identical body only renews `fetched_at`, so a
    /// large regex list is not recompiled every interval.
    body: Arc<[u8]>,
    /// When the provider last delivered this list (renewed by identical bodies).
    pub fetched_at: Instant,
}

/// What checks read: replaced as a whole on every refresh.
#[derive(Debug, Default)]
pub struct Fetched {
    pub good: Option<Arc<Good>>,
    /// The error of the latest refresh, if it failed.
    pub last_error: Option<FetchError>,
}

/// The provider list could not be used for a check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// No fetch has finished yet (the handler was just built).
    #[error("list from {url} is not available yet: the first fetch has not completed")]
    Pending { url: String },
    /// Every fetch so far failed.
    #[error("list from {url} is not available: no fetch has succeeded; last error: {error}")]
    NeverFetched { url: String, error: FetchError },
    /// The last good list is older than the ttl.
    #[error(
        "list from {url} is stale: last successful fetch {age_secs}s ago, ttl {ttl_secs}s{}",
        last_error_suffix(.last_error)
    )]
    Stale {
        url: String,
        age_secs: u64,
        ttl_secs: u64,
        last_error: Option<FetchError>,
    },
}

/// Fetch outcomes per handler, shared by every handler in the process. Handlers are
/// rebuilt on reload and register again; the counters are created once so the series
/// continue across reloads instead of failing as duplicates.
static FETCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "mixer_adapter_listchecker_fetches_total",
            "List fetches from listchecker providers, by handler and result (success, failure).",
        ),
        &["handler", "result"],
    )
    .expect("valid metric definition")
});

/// Adds the fetch counters to `registry` (once; later calls find them there).
fn register_metrics(registry: &Registry) {
    match registry.register(Box::new(FETCHES.clone())) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
        Err(e) => tracing::warn!(error = %e, "Could not register the listchecker fetch metrics."),
    }
}

/// A body that did not compile: the same body is rejected again without compiling.
struct Rejected {
    fingerprint: u64,
    len: usize,
    error: FetchError,
}

/// A compilation that outlived [`COMPILE_TIME_BUDGET`] and still runs.
type Overrun = JoinHandle<Result<Matcher, ListError>>;

/// Fetches one handler's provider list and holds the result.
pub struct Provider {
    handler: String,
    config: ProviderConfig,
    entry_type: ListEntryType,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    current: RwLock<Arc<Fetched>>,
    /// Fingerprints rejected bodies (randomly keyed: a provider cannot aim at a
    /// collision).
    fingerprints: RandomState,
    rejected: Mutex<Option<Rejected>>,
    overrun: Mutex<Option<Overrun>>,
    /// [`COMPILE_TIME_BUDGET`]; changeable only by tests.
    compile_budget: Mutex<Duration>,
    /// Compilations started (tests check that rejected bodies are not compiled again).
    compilations: AtomicU64,
    /// Serializes refreshes: each builds on the previous snapshot (to reuse an unchanged
    /// list), so two at once could lose an update.
    refreshing: tokio::sync::Mutex<()>,
    /// Counts finished refreshes; lets callers (tests, tools) wait for the next one.
    refreshes: watch::Sender<u64>,
    successes: IntCounter,
    failures: IntCounter,
}

impl Provider {
    pub fn new(
        handler: &str,
        config: ProviderConfig,
        entry_type: ListEntryType,
        clock: Arc<dyn Clock>,
        metrics: &Registry,
    ) -> Result<Provider, String> {
        let timeout = config
            .refresh_interval
            .max(MIN_FETCH_TIMEOUT)
            .min(config.ttl);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("could not create an HTTP client: {e}"))?;
        register_metrics(metrics);
        Ok(Provider {
            handler: handler.to_owned(),
            successes: FETCHES.with_label_values(&[handler, "success"]),
            failures: FETCHES.with_label_values(&[handler, "failure"]),
            config,
            entry_type,
            client,
            clock,
            current: RwLock::new(Arc::new(Fetched::default())),
            fingerprints: RandomState::new(),
            rejected: Mutex::new(None),
            overrun: Mutex::new(None),
            compile_budget: Mutex::new(COMPILE_TIME_BUDGET),
            compilations: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
            refreshes: watch::Sender::new(0),
        })
    }

    /// The URL as it may be shown (redacted).
    pub fn url(&self) -> &str {
        self.config.url.shown()
    }

    /// Changes the compile budget, to test what happens past it.
    #[cfg(test)]
    pub fn set_compile_budget(&self, budget: Duration) {
        *lock(&self.compile_budget) = budget;
    }

    /// How many compilations have started.
    #[cfg(test)]
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// The current snapshot. The lock is held only to clone the `Arc`; a panic elsewhere
    /// cannot leave the snapshot half-written (it is replaced whole), so a poisoned lock
    /// is still safe to read.
    pub fn snapshot(&self) -> Arc<Fetched> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn publish(&self, next: Fetched) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        self.refreshes.send_modify(|n| *n += 1);
    }

    /// The list to answer with now, or why there is none.
    pub fn list(&self) -> Result<Arc<Matcher>, Unavailable> {
        let fetched = self.snapshot();
        let url = || self.url().to_owned();
        let Some(good) = &fetched.good else {
            return Err(match &fetched.last_error {
                None => Unavailable::Pending { url: url() },
                Some(e) => Unavailable::NeverFetched {
                    url: url(),
                    error: e.clone(),
                },
            });
        };
        let age = self.clock.now().saturating_duration_since(good.fetched_at);
        if age > self.config.ttl {
            return Err(Unavailable::Stale {
                url: url(),
                age_secs: age.as_secs(),
                ttl_secs: self.config.ttl.as_secs(),
                last_error: fetched.last_error.clone(),
            });
        }
        Ok(good.list.clone())
    }

    /// Subscribes to the count of finished refreshes (tests wait on it instead of on
    /// time).
    #[cfg(test)]
    pub fn refreshes(&self) -> watch::Receiver<u64> {
        self.refreshes.subscribe()
    }

    /// Fetches the list once and publishes the outcome: a new list, a renewed one (same
    /// body), or an error next to the previous list.
    pub async fn refresh(&self) -> Result<(), FetchError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let previous = self.snapshot();
        let outcome = match self.fetch().await {
            Ok(body) => self.compile(previous.good.as_deref(), body).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(good) => {
                self.successes.inc();
                self.publish(Fetched {
                    good: Some(good),
                    last_error: None,
                });
                Ok(())
            }
            Err(e) => {
                self.failures.inc();
                tracing::warn!(
                    handler = %self.handler,
                    error = %e,
                    "Could not refresh a listchecker list; the previous list, if any, is kept until its ttl."
                );
                self.publish(Fetched {
                    good: previous.good.clone(),
                    last_error: Some(e.clone()),
                });
                Err(e)
            }
        }
    }

    /// GETs the list, reading at most `maxProviderBodyBytes` of the body.
    async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        let url = &self.config.url;
        let limit_bytes = self.config.max_body_bytes;
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: url.to_string(),
            // The source chain holds the useful part (connection refused, timeout). The
            // error's own URL is the raw one: dropped, and any other quote scrubbed.
            reason: url.scrub(&error_chain(&e.without_url())),
        };
        let mut response = self
            .client
            .get(url.expose())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let declared = response.content_length();
        if let Some(declared) = declared.filter(|&n| n > limit_bytes) {
            return Err(FetchError::DeclaredTooLarge {
                url: url.to_string(),
                declared,
                limit_bytes,
            });
        }
        let mut body = Vec::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if (body.len() + chunk.len()) as u64 > limit_bytes {
                // Dropping the response closes the connection: the rest is never read.
                return Err(FetchError::TooLarge {
                    url: url.to_string(),
                    limit_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The list of a fetched body: the previous one renewed when the body is unchanged,
    /// the remembered error when the body was rejected before, else a new compilation.
    async fn compile(
        &self,
        previous: Option<&Good>,
        body: Vec<u8>,
    ) -> Result<Arc<Good>, FetchError> {
        let now = self.clock.now();
        if let Some(prev) = previous.filter(|p| *p.body == *body) {
            return Ok(Arc::new(Good {
                list: prev.list.clone(),
                body: prev.body.clone(),
                fetched_at: now,
            }));
        }
        let fingerprint = self.fingerprints.hash_one(&body);
        if let Some(error) = self.known_rejection(fingerprint, body.len()) {
            return Err(error);
        }
        let body: Arc<[u8]> = body.into();
        let list = match self.compile_off_workers(body.clone()).await {
            Ok(list) => list,
            Err(error) => {
                // Only a verdict on the body itself is worth remembering; a timeout may
                // have been the machine's load.
                if matches!(error, FetchError::Invalid { .. }) {
                    *lock(&self.rejected) = Some(Rejected {
                        fingerprint,
                        len: body.len(),
                        error: error.clone(),
                    });
                }
                return Err(error);
            }
        };
        tracing::info!(
            handler = %self.handler,
            url = %self.config.url,
            entries = list.len(),
            "Fetched a new listchecker list."
        );
        Ok(Arc::new(Good {
            list: Arc::new(list),
            body,
            fetched_at: now,
        }))
    }

    fn known_rejection(&self, fingerprint: u64, len: usize) -> Option<FetchError> {
        lock(&self.rejected)
            .as_ref()
            .filter(|r| r.fingerprint == fingerprint && r.len == len)
            .map(|r| r.error.clone())
    }

    /// Compiles `body` on a blocking thread, waiting at most the compile budget.
    async fn compile_off_workers(&self, body: Arc<[u8]>) -> Result<Matcher, FetchError> {
        let url = || self.url().to_owned();
        {
            let mut overrun = lock(&self.overrun);
            if overrun.as_ref().is_some_and(|job| !job.is_finished()) {
                return Err(FetchError::CompileBusy { url: url() });
            }
            *overrun = None;
        }
        let entry_type = self.entry_type;
        let budget = *lock(&self.compile_budget);
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let mut job = tokio::task::spawn_blocking(move || Matcher::from_body(entry_type, &body));
        match tokio::time::timeout(budget, &mut job).await {
            Ok(Ok(compiled)) => {
                compiled.map_err(|source| FetchError::Invalid { url: url(), source })
            }
            // A panic while compiling: this body is refused, the server goes on.
            Ok(Err(join_error)) => Err(FetchError::CompileFailed {
                url: url(),
                reason: join_error.to_string(),
            }),
            Err(_elapsed) => {
                *lock(&self.overrun) = Some(job);
                Err(FetchError::CompileTooSlow { url: url(), budget })
            }
        }
    }

    /// Refreshes now, then every `refreshInterval`, until the task is aborted. A slow
    /// fetch delays the next one rather than overlapping it.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.config.refresh_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // The outcome is published and logged by `refresh`.
            let _ = self.refresh().await;
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (each is replaced
/// whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn last_error_suffix(e: &Option<FetchError>) -> String {
    e.as_ref()
        .map(|e| format!("; last error: {e}"))
        .unwrap_or_default()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
