//! The remote half of a list: fetching `providerUrl` on `refreshInterval`, keeping the
//! last good list, and deciding when it is too old (`ttl`) to answer with.
//!
//! Checks never wait for the network: they read the current [`Fetched`] snapshot (an
//! `Arc` behind a lock held only to clone it), and a refresh builds the next snapshot
//! completely before swapping it in.

use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::sync::watch;

use super::config::{ListEntryType, Provider as ProviderConfig};
use super::matcher::{ListError, Matcher};

/// A fetch that hangs must not hold the refresh loop forever; a fetch may however take
/// longer than a short refresh interval for a big list. It never takes longer than the
/// ttl, after which its result would be stale anyway.
const MIN_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A refresh failed. The previous list, if any, is kept until its ttl.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("list from {url} is invalid: {source}")]
    Invalid {
        url: String,
        #[source]
        source: ListError,
    },
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

/// Fetches one handler's provider list and holds the result.
pub struct Provider {
    handler: String,
    config: ProviderConfig,
    entry_type: ListEntryType,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    current: RwLock<Arc<Fetched>>,
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
            refreshing: tokio::sync::Mutex::new(()),
            refreshes: watch::Sender::new(0),
        })
    }

    pub fn url(&self) -> &str {
        &self.config.url
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
        let url = || self.config.url.clone();
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
            Ok(body) => self.compile(previous.good.as_deref(), body),
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

    async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        let url = &self.config.url;
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: url.clone(),
            // The source chain holds the useful part (connection refused, timeout).
            reason: error_chain(&e),
        };
        let response = self.client.get(url).send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.clone(),
                status: status.as_u16(),
            });
        }
        Ok(response.bytes().await.map_err(transport)?.to_vec())
    }

    fn compile(&self, previous: Option<&Good>, body: Vec<u8>) -> Result<Arc<Good>, FetchError> {
        let now = self.clock.now();
        if let Some(prev) = previous.filter(|p| *p.body == *body) {
            return Ok(Arc::new(Good {
                list: prev.list.clone(),
                body: prev.body.clone(),
                fetched_at: now,
            }));
        }
        let list =
            Matcher::from_body(self.entry_type, &body).map_err(|source| FetchError::Invalid {
                url: self.config.url.clone(),
                source,
            })?;
        tracing::info!(
            handler = %self.handler,
            url = %self.config.url,
            entries = list.len(),
            "Fetched a new listchecker list."
        );
        Ok(Arc::new(Good {
            list: Arc::new(list),
            body: body.into(),
            fetched_at: now,
        }))
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
