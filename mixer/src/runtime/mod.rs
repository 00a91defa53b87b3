//! The runtime: Check, quota and Report on bags against the serving snapshot, and
//! reloading that snapshot. It knows no wire: front ends hand it bags and encode its
//! answers.
//!
//! Requests read the current [`Snapshot`] through an `ArcSwap` (no lock). A reload reads
//! the store, compiles a new snapshot off to the side, and swaps it in only if it has no
//! errors; otherwise the last good snapshot keeps serving and the errors are reported.
//! Handlers the new snapshot does not reuse are closed once requests on the old one end.

pub mod check;
pub mod check_cache;
mod failures;
pub mod generate;
pub mod matching;
pub mod quota;
pub mod quota_specs;
pub mod referenced;
pub mod report;
pub mod routes;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use expr_lang::{Bag, NoRecording};
use templates::QuotaResult;

use crate::config::compile::{CompileOptions, compile};
use crate::config::kubernetes::{self, KubernetesSource};
use crate::config::store::{ReadResult, read_dirs, read_dirs_settled};
use crate::config::{Diagnostic, Severity, Snapshot};
use crate::metrics::Metrics;
pub use check::{CheckError, Precondition};
pub use quota::QuotaRequest;
pub use referenced::{Condition, Reference, Referenced};
pub use report::ReportError;

/// What happens when a rule's `match` cannot be evaluated, or a Check instance cannot be
/// built after its rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PolicyErrorMode {
    /// As Go Mixer: the rule does not apply; an instance that fails to build fails the
    /// Check with an error, leaving the decision to the proxy's fail policy.
    #[default]
    Mixer,
    /// Deny: a PERMISSION_DENIED precondition naming the rule, the instance and the error.
    Closed,
}

/// The answer to one Check.
#[derive(Clone, Debug)]
pub struct CheckAnswer {
    pub precondition: Precondition,
    /// What the precondition depended on.
    pub referenced: Arc<Referenced>,
    /// One answer per requested quota, in the order asked; empty when the precondition
    /// failed (quotas are allocated only for requests that may go ahead).
    pub quotas: Vec<QuotaAnswer>,
}

/// The answer to one requested quota.
#[derive(Clone, Debug)]
pub struct QuotaAnswer {
    pub result: QuotaResult,
    /// What the allocation depended on.
    pub referenced: Referenced,
}

/// What the runtime was started with.
#[derive(Clone)]
pub struct RuntimeOptions {
    pub config_dirs: Vec<PathBuf>,
    /// Shared with every handler built.
    pub resources: Arc<adapters::Resources>,
    pub default_namespace: String,
    pub policy_errors: PolicyErrorMode,
    /// Decisions the server-side Check cache may hold; 0 disables it.
    pub check_cache_size: u64,
}

/// The outcome of the last configuration load.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadStatus {
    pub generation: u64,
    pub applied: bool,
    pub files: usize,
    pub diagnostics: Vec<Diagnostic>,
    /// Where each resource read came from (`{"resource": "KIND/NS/NAME", "origin": …}`).
    pub origins: Vec<serde_json::Value>,
    #[serde(skip)]
    pub at: Option<SystemTime>,
    pub at_unix_seconds: u64,
}

/// Holds the serving snapshot and reloads it.
pub struct Runtime {
    current: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// The server-side Check cache, when enabled.
    pub check_cache: Option<check_cache::CheckCache>,
    pub options: RuntimeOptions,
    last_load: Mutex<LoadStatus>,
    reload_lock: Mutex<u64>,
    ready: AtomicBool,
    /// The Kubernetes config source, when configured: its objects join the files'.
    kubernetes: OnceLock<Arc<KubernetesSource>>,
}

impl Runtime {
    pub fn new(options: RuntimeOptions, metrics: Metrics) -> Runtime {
        let check_cache = (options.check_cache_size > 0).then(|| {
            check_cache::CheckCache::new(
                options.check_cache_size,
                check_cache::CacheMetrics::register(&metrics.registry),
            )
        });
        Runtime {
            current: ArcSwap::from_pointee(Snapshot::empty(&options.default_namespace)),
            check_cache,
            metrics,
            last_load: Mutex::new(LoadStatus::default()),
            reload_lock: Mutex::new(0),
            ready: AtomicBool::new(false),
            kubernetes: OnceLock::new(),
            options,
        }
    }

    /// The snapshot serving requests now.
    #[inline]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Whether a configuration snapshot has been loaded and is serving (with a Kubernetes
    /// source: one that holds the initial list of every kind).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Why [`Runtime::is_ready`] is false, for `/readyz`.
    pub fn not_ready_reason(&self) -> String {
        match self.kubernetes.get().map(|k| k.progress()) {
            Some((done, all)) if done < all => format!(
                "waiting for the initial list of the Kubernetes configuration ({done} of {all} kinds listed)"
            ),
            _ => "no configuration loaded yet".to_owned(),
        }
    }

    /// Adds the objects of a Kubernetes config source to every load from now on. Once
    /// only (later calls are ignored).
    pub fn set_kubernetes(&self, source: Arc<KubernetesSource>) {
        let _ = self.kubernetes.set(source);
    }

    /// The Kubernetes config source, when there is one.
    pub fn kubernetes(&self) -> Option<&Arc<KubernetesSource>> {
        self.kubernetes.get()
    }

    /// Adds the Kubernetes objects (when configured) to what the files hold; whether the
    /// result is the whole configuration (every kind listed once).
    fn with_kubernetes(&self, read: &mut ReadResult) -> bool {
        self.kubernetes
            .get()
            .is_none_or(|source| kubernetes::merge_into(read, source))
    }

    pub fn last_load(&self) -> LoadStatus {
        self.last_load.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reads the configuration and swaps in a new snapshot if it is valid. The first load
    /// applies whatever is valid even when some of it is not (there is nothing better to
    /// serve); later loads with errors keep the last good snapshot.
    pub fn reload(&self) -> LoadStatus {
        let mut read = read_dirs(&self.options.config_dirs);
        let complete = self.with_kubernetes(&mut read);
        self.load(read, None, complete)
            .unwrap_or_else(|| self.last_load())
    }

    /// As [`Runtime::reload`], for a change the config watcher saw: only files that have
    /// rested `settle` (the debounce) and did not change while read are applied, and a
    /// configuration that removes every rule only once it has rested twice as long. `None`
    /// when the files were not ready: nothing changed, and the watcher tries again.
    pub fn reload_settled(&self, settle: Duration) -> Option<LoadStatus> {
        match read_dirs_settled(&self.options.config_dirs, settle) {
            Ok(mut read) => {
                let complete = self.with_kubernetes(&mut read);
                self.load(read, Some(settle), complete)
            }
            Err(unsettled) => {
                tracing::info!(
                    reason = %unsettled,
                    "Configuration not reloaded yet: a file is still changing; trying again after the debounce."
                );
                None
            }
        }
    }

    /// One load: compile what was read beside the serving snapshot, then apply it (or,
    /// with errors, keep the last good one) and record the outcome. Only a `complete`
    /// configuration makes the server ready; until then loads apply as the first does.
    fn load(
        &self,
        read: ReadResult,
        settle: Option<Duration>,
        complete: bool,
    ) -> Option<LoadStatus> {
        let mut generation = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let previous = self.snapshot();
        let compiled = compile(
            &read.documents,
            &CompileOptions {
                default_namespace: self.options.default_namespace.clone(),
                build_handlers: true,
                generation: *generation + 1,
                resources: self.options.resources.clone(),
            },
            Some(&previous),
        );
        let mut diagnostics = store_diagnostics(&read);
        diagnostics.extend(compiled.diagnostics);
        let removes_every_rule = previous.summary.rules > 0 && compiled.snapshot.summary.rules == 0;
        if removes_every_rule
            && let Some(settle) = settle
            && !rested_to_remove_every_rule(read.rested, settle)
        {
            tracing::info!(
                empty_files = ?read.empty_files,
                "Configuration not reloaded yet: it removes every rule; applying it once its files have rested twice the debounce."
            );
            return None;
        }
        let (errors, warnings) = log_diagnostics(&diagnostics);
        self.metrics.config_errors.set(errors as i64);
        self.metrics.config_warnings.set(warnings as i64);
        let applied = errors == 0 || !self.is_ready();
        if applied {
            *generation += 1;
            if removes_every_rule {
                tracing::warn!(
                    rules_before = previous.summary.rules,
                    empty_files = ?read.empty_files,
                    "The new configuration removes every rule of the one serving; applying it."
                );
            }
            self.apply(Arc::new(compiled.snapshot), *generation, complete);
            tracing::info!(
                generation = *generation,
                errors,
                warnings,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Configuration applied."
            );
        } else {
            self.metrics
                .config_loads
                .with_label_values(&["rejected"])
                .inc();
            tracing::error!(
                errors,
                "Configuration rejected; the last good configuration keeps serving."
            );
        }
        let origins = kubernetes::origins(&read.documents);
        Some(self.record(*generation, applied, read.files, diagnostics, origins))
    }

    /// Serves `snap` from now on: swaps it in, empties the Check cache, and retires the
    /// handlers it no longer uses.
    fn apply(&self, snap: Arc<Snapshot>, generation: u64, complete: bool) {
        let m = &self.metrics;
        m.config_loads.with_label_values(&["applied"]).inc();
        m.config_generation.set(generation as i64);
        m.config_rules.set(snap.summary.rules as i64);
        m.config_instances.set(snap.summary.instances as i64);
        m.config_handlers.set(snap.summary.handlers as i64);
        m.config_attributes.set(snap.summary.attributes as i64);
        tracing::info!(
            rules = snap.summary.rules,
            instances = snap.summary.instances,
            handlers = snap.summary.handlers,
            "Serving a new configuration snapshot."
        );
        let old = self.current.swap(snap.clone());
        // Entries carry their snapshot's generation, so none can be served across the
        // change; dropping them frees the memory at once.
        if let Some(cache) = &self.check_cache {
            cache.clear();
        }
        close_replaced(old, &snap);
        if complete {
            self.ready.store(true, Ordering::Release);
        }
    }

    /// Remembers the outcome of a load for `/debug/config`.
    fn record(
        &self,
        generation: u64,
        applied: bool,
        files: usize,
        diagnostics: Vec<Diagnostic>,
        origins: Vec<serde_json::Value>,
    ) -> LoadStatus {
        let now = SystemTime::now();
        let status = LoadStatus {
            generation,
            applied,
            files,
            diagnostics,
            origins,
            at: Some(now),
            at_unix_seconds: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        if let Ok(mut last) = self.last_load.lock() {
            *last = status.clone();
        }
        status
    }

    /// Decides one Check on `bag` (decoded against `snapshot`, which must be the snapshot
    /// the bag's attribute ids come from): the precondition, from the server-side cache
    /// when it can, then the requested quotas if the request may go ahead.
    /// `deduplication_id` identifies the request across retries; each quota's allocation
    /// is deduplicated on it with the quota's name appended.
    pub async fn check<B: Bag + ?Sized + Sync>(
        &self,
        snapshot: &Snapshot,
        bag: &B,
        deduplication_id: &str,
        quotas: &[QuotaRequest<'_>],
    ) -> Result<CheckAnswer, CheckError> {
        if !snapshot.generate.is_empty() {
            return self
                .check_generated(snapshot, bag, deduplication_id, quotas)
                .await;
        }
        let (precondition, referenced) =
            self.precondition(snapshot, bag, quotas.is_empty()).await?;
        let mut answer = CheckAnswer {
            precondition,
            referenced,
            quotas: Vec::new(),
        };
        if answer.precondition.status.is_ok() {
            for request in quotas {
                answer.quotas.push(
                    self.allocate(snapshot, bag, deduplication_id, *request)
                        .await,
                );
            }
        }
        Ok(answer)
    }

    /// The precondition, from the cache when `cacheable` (a Check with quotas is never
    /// answered from the cache: the quotas must be charged) and it holds the answer.
    async fn precondition<B: Bag + ?Sized + Sync>(
        &self,
        snapshot: &Snapshot,
        bag: &B,
        cacheable: bool,
    ) -> Result<(Precondition, Arc<Referenced>), CheckError> {
        let cache = self.check_cache.as_ref();
        if cacheable && let Some(hit) = cache.and_then(|c| c.lookup(snapshot, bag)) {
            return Ok(hit);
        }
        let cx = check::CheckContext {
            snapshot,
            mode: self.options.policy_errors,
            metrics: &self.metrics,
        };
        let mut referenced = Referenced::new();
        let precondition = check::evaluate(&cx, bag, &mut referenced).await?;
        let referenced = Arc::new(referenced);
        if let Some(cache) = cache {
            cache.insert(snapshot, bag, &precondition, &referenced);
        }
        Ok((precondition, referenced))
    }

    async fn allocate<B: Bag + ?Sized + Sync>(
        &self,
        snapshot: &Snapshot,
        bag: &B,
        deduplication_id: &str,
        request: QuotaRequest<'_>,
    ) -> QuotaAnswer {
        let dedup = format!("{deduplication_id}{}", request.name);
        let mut referenced = Referenced::new();
        let result = quota::allocate(
            snapshot,
            bag,
            &mut referenced,
            request,
            &dedup,
            &self.metrics,
        )
        .await;
        QuotaAnswer { result, referenced }
    }

    /// Dispatches a batch of Report bags (decoded against `snapshot`). Returns what failed;
    /// everything else was dispatched.
    pub fn report<B: Bag + Sync>(&self, snapshot: &Snapshot, bags: &[B]) -> Vec<ReportError> {
        if snapshot.generate.is_empty() {
            return report::dispatch(snapshot, bags, &self.metrics);
        }
        let generated: Vec<_> = bags
            .iter()
            .map(|b| generate::run(snapshot, b, &mut NoRecording, &self.metrics, "report"))
            .collect();
        report::dispatch(snapshot, &generated, &self.metrics)
    }

    /// Closes every handler of the serving snapshot (at shutdown).
    pub fn close_all(&self) {
        self.close_all_with(|_| {});
    }

    /// As [`Runtime::close_all`], telling `closing` the name of each handler before it is
    /// closed (a flush can block: shutdown reports which one did).
    pub fn close_all_with(&self, mut closing: impl FnMut(&str)) {
        for h in self.snapshot().handlers.values() {
            closing(&h.name);
            h.handler.close();
        }
    }
}

/// The store's problems (unreadable files, YAML errors) as diagnostics.
fn store_diagnostics(read: &ReadResult) -> Vec<Diagnostic> {
    read.errors
        .iter()
        .map(|e| Diagnostic {
            severity: Severity::Error,
            file: Some(e.file.clone()),
            line: e.line,
            resource: None,
            field: None,
            message: e.message.clone(),
            origin: None,
        })
        .chain(read.diagnostics.iter().cloned())
        .collect()
}

/// Logs every diagnostic; returns the numbers of errors and warnings.
fn log_diagnostics(diagnostics: &[Diagnostic]) -> (usize, usize) {
    let mut errors = 0;
    for d in diagnostics {
        match d.severity {
            Severity::Error => {
                errors += 1;
                tracing::error!("Config: {d}");
            }
            Severity::Warning => tracing::warn!("Config: {d}"),
        }
    }
    (errors, diagnostics.len() - errors)
}

/// Whether files that rested `rested` may take every rule away. A file rewritten in place
/// by a writer that stalls is empty or cut short for a while, which looks exactly like a
/// policy emptied on purpose; removing every rule opens everything, so it waits twice the
/// debounce. `None` (nothing was walked) does not hold it back.
fn rested_to_remove_every_rule(rested: Option<Duration>, settle: Duration) -> bool {
    rested.is_none_or(|r| r >= settle.saturating_mul(2))
}

/// Closes the handlers of `old` that `new` does not reuse, once requests still running on
/// `old` have finished (or after 10 s).
fn close_replaced(old: Arc<Snapshot>, new: &Snapshot) {
    let retired: Vec<_> = old
        .handlers
        .values()
        .filter(|h| !new.handlers.values().any(|n| Arc::ptr_eq(n, h)))
        .cloned()
        .collect();
    if retired.is_empty() {
        return;
    }
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(old);
        for h in retired {
            tracing::info!(handler = %h.name, "Closing a handler the new configuration no longer uses.");
            h.handler.close();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_every_rule_waits_for_twice_the_debounce() {
        let debounce = Duration::from_millis(100);
        let rested = |ms| Some(Duration::from_millis(ms));
        assert!(!rested_to_remove_every_rule(rested(150), debounce));
        assert!(rested_to_remove_every_rule(rested(200), debounce));
        assert!(rested_to_remove_every_rule(None, debounce));
    }
}
