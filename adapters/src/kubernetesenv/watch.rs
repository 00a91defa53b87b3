//! Keeping the cache current: kube-runtime watchers over pods (full objects: their spec
//! and status matter) and replicasets and deployments (metadata only: their owners), each
//! re-listed every `cacheRefreshDuration`. One cache serves every handler built with the
//! same cluster, namespace, refresh period and limits; it stops watching when the last
//! handler using it is dropped.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::{NamespaceResourceScope, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::de::DeserializeOwned;

use super::cache::{Kind, Limits, OwnerRef, PodRecord, Refused, Tables};

/// How a cache reaches the API server.
#[derive(Clone)]
pub enum Cluster {
    /// A kubeconfig, already read (so a bad file fails the handler's build), with a
    /// description of where it came from for logs.
    Kubeconfig {
        config: Box<kube::config::Kubeconfig>,
        from: String,
    },
    /// The pod's service account.
    InCluster,
}

impl Cluster {
    fn describe(&self) -> String {
        match self {
            Cluster::Kubeconfig { from, .. } => from.clone(),
            Cluster::InCluster => "in-cluster service account".to_owned(),
        }
    }

    async fn client(&self) -> Result<Client, String> {
        let config = match self {
            Cluster::Kubeconfig { config, from } => kube::Config::from_custom_kubeconfig(
                (**config).clone(),
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| format!("{from}: {e}"))?,
            Cluster::InCluster => kube::Config::incluster().map_err(|e| e.to_string())?,
        };
        Client::try_from(config).map_err(|e| e.to_string())
    }
}

/// What a cache watches, and how much it keeps.
#[derive(Clone)]
pub struct WatchOptions {
    pub cluster: Cluster,
    /// Watch only this namespace; `None`: all.
    pub namespace: Option<String>,
    /// Re-list period; zero: only when a watch has to restart.
    pub refresh: Duration,
    pub limits: Limits,
}

/// The cache, and the task keeping it current.
pub struct SharedCache {
    pub tables: RwLock<Tables>,
    task: OnceLock<tokio::task::AbortHandle>,
    metrics: &'static CacheMetrics,
}

impl SharedCache {
    fn new() -> SharedCache {
        SharedCache {
            tables: RwLock::new(Tables::default()),
            task: OnceLock::new(),
            metrics: metrics(),
        }
    }
}

impl Drop for SharedCache {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
        if let Ok(tables) = self.tables.get_mut() {
            for kind in Kind::ALL {
                self.metrics
                    .cached
                    .with_label_values(&[kind.plural()])
                    .sub(tables.len(kind) as i64);
            }
        }
    }
}

/// Caches by what they watch; a handler rebuilt with the same params gets the same one.
static CACHES: Mutex<Vec<(String, Weak<SharedCache>)>> = Mutex::new(Vec::new());

/// The cache for `options`: the running one, or a new one watching on `runtime`.
pub fn shared_cache(
    options: &WatchOptions,
    identity: String,
    runtime: &tokio::runtime::Handle,
    registry: &Registry,
) -> Arc<SharedCache> {
    register_metrics(registry);
    let mut caches = CACHES.lock().unwrap_or_else(|e| e.into_inner());
    caches.retain(|(_, w)| w.strong_count() > 0);
    if let Some(cache) = caches
        .iter()
        .find(|(k, _)| *k == identity)
        .and_then(|(_, w)| w.upgrade())
    {
        return cache;
    }
    let cache = Arc::new(SharedCache::new());
    let task = runtime.spawn(follow_all(options.clone(), Arc::downgrade(&cache)));
    let _ = cache.task.set(task.abort_handle());
    caches.push((identity, Arc::downgrade(&cache)));
    cache
}

/// The cache's self-metrics, shared by every cache of the process.
struct CacheMetrics {
    cached: IntGaugeVec,
    synced: IntGaugeVec,
    refused: IntCounterVec,
}

fn metrics() -> &'static CacheMetrics {
    static METRICS: OnceLock<CacheMetrics> = OnceLock::new();
    METRICS.get_or_init(|| CacheMetrics {
        cached: IntGaugeVec::new(
            Opts::new(
                "mixer_adapter_kubernetesenv_cached_objects",
                "Objects the kubernetesenv caches hold, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric"),
        synced: IntGaugeVec::new(
            Opts::new(
                "mixer_adapter_kubernetesenv_synced",
                "1 once a kubernetesenv cache has listed every object of the kind.",
            ),
            &["kind"],
        )
        .expect("valid metric"),
        refused: IntCounterVec::new(
            Opts::new(
                "mixer_adapter_kubernetesenv_refused_objects_total",
                "Objects a kubernetesenv cache did not keep: over --kubernetesenv-max-pods (full) or the per-pod size limit (too_large).",
            ),
            &["kind", "reason"],
        )
        .expect("valid metric"),
    })
}

/// Registers the metrics into `registry`; "already registered" is the expected case.
fn register_metrics(registry: &Registry) {
    let m = metrics();
    let _ = registry.register(Box::new(m.cached.clone()));
    let _ = registry.register(Box::new(m.synced.clone()));
    let _ = registry.register(Box::new(m.refused.clone()));
}

/// Connects, then follows the three kinds until the cache is dropped.
async fn follow_all(options: WatchOptions, cache: Weak<SharedCache>) {
    let client = loop {
        match options.cluster.client().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(cluster = %options.cluster.describe(), error = %e, "kubernetesenv cannot reach the Kubernetes API; retrying in 30s.");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    };
    tracing::info!(cluster = %options.cluster.describe(), namespace = options.namespace.as_deref().unwrap_or("(all)"), "kubernetesenv is watching pods, replicasets and deployments.");
    let pods = follow::<Pod>(&client, &options, cache.clone(), Kind::Pod);
    // Metadata only: a replicaset's or deployment's owner is all the cache needs.
    let replicasets =
        follow::<PartialObjectMeta<ReplicaSet>>(&client, &options, cache.clone(), Kind::ReplicaSet);
    let deployments =
        follow::<PartialObjectMeta<Deployment>>(&client, &options, cache, Kind::Deployment);
    futures::join!(pods, replicasets, deployments);
}

/// One object as the cache receives it.
trait Cached: Send {
    fn put(self, kind: Kind, tables: &mut Tables, limits: Limits) -> Result<(), Refused>;
    fn remove(&self, kind: Kind, tables: &mut Tables);
}

impl Cached for Pod {
    fn put(self, _: Kind, tables: &mut Tables, limits: Limits) -> Result<(), Refused> {
        match pod_record(self) {
            Some(record) => tables.put_pod(record, limits),
            None => Ok(()),
        }
    }
    fn remove(&self, _: Kind, tables: &mut Tables) {
        if let (Some(ns), Some(name)) = (&self.metadata.namespace, &self.metadata.name) {
            tables.remove_pod(ns, name);
        }
    }
}

impl<K: Send> Cached for PartialObjectMeta<K> {
    fn put(self, kind: Kind, tables: &mut Tables, limits: Limits) -> Result<(), Refused> {
        let meta = &self.metadata;
        let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) else {
            return Ok(());
        };
        tables.put_owner(kind, ns, name, controller(meta), limits)
    }
    fn remove(&self, kind: Kind, tables: &mut Tables) {
        let meta = &self.metadata;
        if let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) {
            tables.remove_owner(kind, ns, name);
        }
    }
}

/// The controlling owner of an object.
fn controller(meta: &ObjectMeta) -> Option<OwnerRef> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| OwnerRef {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            name: o.name.clone(),
        })
}

/// What the cache keeps of a pod; `None` without a name or namespace.
pub fn pod_record(pod: Pod) -> Option<PodRecord> {
    let controller = controller(&pod.metadata);
    let meta = pod.metadata;
    let spec = pod.spec.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    let ip = |s: Option<String>| s.and_then(|s| s.parse::<IpAddr>().ok());
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| {
            c.ports
                .iter()
                .flatten()
                .map(|p| (p.container_port, c.name.clone()))
        })
        .collect();
    Some(PodRecord {
        name: meta.name?,
        namespace: meta.namespace?,
        labels: Arc::new(meta.labels.unwrap_or_default()),
        service_account: spec.service_account_name.unwrap_or_default(),
        pod_ip: ip(status.pod_ip),
        host_ip: ip(status.host_ip),
        host_network: spec.host_network == Some(true),
        terminated: matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")),
        ports,
        controller,
    })
}

/// Follows one kind: a fresh list (every `refresh`, and whenever the watch must restart)
/// replaces the kind's table whole; events in between update it.
async fn follow<K>(client: &Client, options: &WatchOptions, cache: Weak<SharedCache>, kind: Kind)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Cached
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api = match &options.namespace {
        Some(ns) => Api::<K>::namespaced(client.clone(), ns),
        None => Api::<K>::all(client.clone()),
    };
    let mut warned: Option<Instant> = None;
    loop {
        let events = watcher::watcher(api.clone(), watcher::Config::default()).default_backoff();
        futures::pin_mut!(events);
        let until =
            (!options.refresh.is_zero()).then(|| tokio::time::Instant::now() + options.refresh);
        let mut pending: Option<Tables> = None;
        loop {
            let next = match until {
                Some(t) => match tokio::time::timeout_at(t, events.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                },
                None => events.next().await,
            };
            let Some(next) = next else { break };
            match next {
                Ok(event) => {
                    // Held only while the event is applied: dropping the last handler
                    // drops the cache, and its drop stops this task.
                    let Some(cache) = cache.upgrade() else { return };
                    apply(
                        &cache,
                        kind,
                        options.limits,
                        event,
                        &mut pending,
                        &mut warned,
                    );
                }
                Err(e) => {
                    tracing::warn!(kind = kind.plural(), error = %e, "kubernetesenv watch failed; retrying with back-off.")
                }
            }
        }
        tracing::debug!(
            kind = kind.plural(),
            "kubernetesenv re-lists (cacheRefreshDuration)."
        );
    }
}

/// Applies one watch event.
fn apply(
    cache: &SharedCache,
    kind: Kind,
    limits: Limits,
    event: Event<impl Cached>,
    pending: &mut Option<Tables>,
    warned: &mut Option<Instant>,
) {
    let refused = match event {
        Event::Init => {
            *pending = Some(Tables::default());
            None
        }
        Event::InitApply(obj) => match pending {
            Some(p) => obj.put(kind, p, limits).err(),
            None => None,
        },
        Event::InitDone => {
            if let Some(fresh) = pending.take() {
                update(cache, kind, |t| t.replace(kind, fresh));
            }
            cache
                .metrics
                .synced
                .with_label_values(&[kind.plural()])
                .set(1);
            None
        }
        Event::Apply(obj) => update(cache, kind, |t| obj.put(kind, t, limits).err()),
        Event::Delete(obj) => {
            update(cache, kind, |t| obj.remove(kind, t));
            None
        }
    };
    if let Some(reason) = refused {
        refuse(cache, kind, limits, reason, warned);
    }
}

/// Changes the tables, keeping the size gauge in step.
fn update<T>(cache: &SharedCache, kind: Kind, change: impl FnOnce(&mut Tables) -> T) -> T {
    let mut tables = cache.tables.write().unwrap_or_else(|e| e.into_inner());
    let before = tables.len(kind);
    let out = change(&mut tables);
    let after = tables.len(kind);
    cache
        .metrics
        .cached
        .with_label_values(&[kind.plural()])
        .add(after as i64 - before as i64);
    out
}

/// Counts a refused object, warning at most once a minute per kind.
fn refuse(
    cache: &SharedCache,
    kind: Kind,
    limits: Limits,
    reason: Refused,
    warned: &mut Option<Instant>,
) {
    let label = match reason {
        Refused::Full => "full",
        Refused::TooLarge => "too_large",
    };
    cache
        .metrics
        .refused
        .with_label_values(&[kind.plural(), label])
        .inc();
    if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(60)) {
        *warned = Some(Instant::now());
        match reason {
            Refused::Full => tracing::warn!(
                kind = kind.plural(),
                limit = limits.max_objects,
                "kubernetesenv cache is full (--kubernetesenv-max-pods); objects over the limit are not cached, and requests from or to their pods get the bindings' defaults."
            ),
            Refused::TooLarge => tracing::warn!(
                kind = kind.plural(),
                limit_bytes = limits.max_pod_bytes,
                "kubernetesenv did not cache a pod whose labels, names and ports are over the per-pod limit; requests from or to it get the bindings' defaults."
            ),
        }
    }
}

/// How many caches are alive (tests: a cache must stop with its last handler).
pub fn live_caches() -> usize {
    CACHES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, w)| w.strong_count() > 0)
        .count()
}
