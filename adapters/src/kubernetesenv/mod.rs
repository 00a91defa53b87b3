//! `kubernetesenv`: generates workload attributes (labels, workload name and owner,
//! service account …) of a request's source and destination pods from a cache of the
//! Kubernetes API's pods, replicasets and deployments. See `README.md` beside this file.

pub mod cache;
pub mod config;
pub mod watch;

use std::net::IpAddr;
use std::sync::Arc;

use templates::handler::KubernetesHandler;
use templates::instances::kubernetes;
use templates::{Handler, HandlerError, KubernetesOutput, TemplateKind};

use crate::{Adapter, BuildError, Env, ValidateInput, Validation};
use cache::{Limits, PodRecord, Tables, container_for_port};
use config::Config;
use watch::{Cluster, SharedCache, WatchOptions, shared_cache};

/// Default of [`Options::max_pods`]: Kubernetes' documented largest cluster.
pub const DEFAULT_MAX_PODS: usize = 150_000;
/// Default of [`Options::max_pod_bytes`].
pub const DEFAULT_MAX_POD_BYTES: usize = 64 * 1024;

/// Server-wide settings of every kubernetesenv cache (`mixer server` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Watch only this namespace (`--kubernetesenv-namespace`); `None`: all.
    pub namespace: Option<String>,
    /// Most pods a cache holds (`--kubernetesenv-max-pods`); replicasets and
    /// deployments are each held up to the same number.
    pub max_pods: usize,
    /// Most bytes of labels, names and ports one pod may hold to be cached.
    pub max_pod_bytes: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            namespace: None,
            max_pods: DEFAULT_MAX_PODS,
            max_pod_bytes: DEFAULT_MAX_POD_BYTES,
        }
    }
}

/// The kubernetesenv adapter.
pub struct KubernetesEnv;

pub static ADAPTER: KubernetesEnv = KubernetesEnv;

/// Why a handler is inactive when no cluster is configured.
pub const INACTIVE: &str = "no Kubernetes cluster is configured (no KUBECONFIG, no params.kubeconfigPath, and not running in a pod with a service account): the kubernetesenv handler generates no attributes, and the attributes the proxy sends are used as they are";

/// Where the service account's token is mounted in a pod.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

impl Adapter for KubernetesEnv {
    type Config = Config;

    fn name(&self) -> &'static str {
        "kubernetesenv"
    }
    fn description(&self) -> &'static str {
        "Generates workload attributes from the Kubernetes API"
    }
    fn templates(&self) -> &'static [TemplateKind] {
        &[TemplateKind::Kubernetes]
    }
    fn validate(&self, input: &ValidateInput<'_>) -> Validation<Config> {
        config::validate(input).into()
    }
    fn build(&self, config: Config, env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        let Some(cluster) = cluster(&config)? else {
            return Err(BuildError::Inactive(INACTIVE.to_owned()));
        };
        let runtime = env.resources.runtime.as_ref().ok_or(BuildError::NoRuntime(
            "kubernetesenv needs an async runtime to watch the Kubernetes API",
        ))?;
        let opts = &env.resources.kubernetesenv;
        let options = WatchOptions {
            cluster,
            namespace: opts.namespace.clone(),
            refresh: config.cache_refresh_duration,
            limits: Limits {
                max_objects: opts.max_pods,
                max_pod_bytes: opts.max_pod_bytes,
            },
        };
        let identity = identity(&options);
        let cache = shared_cache(&options, identity, runtime, &env.resources.metrics);
        Ok(Arc::new(KubernetesEnvHandler { cache }))
    }
}

/// How to reach the cluster, as Mixer chose: a non-empty `KUBECONFIG` wins, then the
/// params' `kubeconfigPath`, then the pod's service account; `None` when there is none.
fn cluster(config: &Config) -> Result<Option<Cluster>, BuildError> {
    let invalid = |reason: String| BuildError::InvalidConfig {
        adapter: "kubernetesenv",
        reason,
    };
    match std::env::var_os("KUBECONFIG") {
        Some(v) if !v.is_empty() => {
            let from = format!("KUBECONFIG={}", v.to_string_lossy());
            match kube::config::Kubeconfig::from_env() {
                Ok(Some(config)) => Ok(Some(Cluster::Kubeconfig {
                    config: Box::new(config),
                    from,
                })),
                Ok(None) => Ok(in_cluster()),
                Err(e) => Err(invalid(format!("{from}: {e}"))),
            }
        }
        // Set but empty: in-cluster, as in Mixer.
        Some(_) => Ok(in_cluster()),
        None => match &config.kubeconfig_path {
            Some(path) => kube::config::Kubeconfig::read_from(path)
                .map(|config| {
                    Some(Cluster::Kubeconfig {
                        config: Box::new(config),
                        from: format!("params.kubeconfigPath {path}"),
                    })
                })
                .map_err(|e| invalid(format!("params.kubeconfigPath {path:?}: {e}"))),
            None => Ok(in_cluster()),
        },
    }
}

fn in_cluster() -> Option<Cluster> {
    let host = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty());
    (host && std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists()).then_some(Cluster::InCluster)
}

/// What makes two handlers' caches the same: the cluster (by a digest of its
/// kubeconfig, so a changed file gets a new cache), namespace, refresh and limits.
fn identity(options: &WatchOptions) -> String {
    use std::hash::{Hash, Hasher};
    let cluster = match &options.cluster {
        Cluster::Kubeconfig { config, from } => {
            let mut h = std::hash::DefaultHasher::new();
            serde_yaml_ng::to_string(config)
                .unwrap_or_default()
                .hash(&mut h);
            format!("{from}#{:x}", h.finish())
        }
        Cluster::InCluster => "in-cluster".to_owned(),
    };
    format!(
        "{cluster}|{:?}|{:?}|{:?}",
        options.namespace, options.refresh, options.limits
    )
}

/// A running kubernetesenv handler: lookups in its (possibly shared) cache.
pub struct KubernetesEnvHandler {
    cache: Arc<SharedCache>,
}

impl Handler for KubernetesEnvHandler {
    fn kubernetes(&self) -> Option<&dyn KubernetesHandler> {
        Some(self)
    }
}

impl KubernetesHandler for KubernetesEnvHandler {
    fn generate_kubernetes(
        &self,
        instance: &kubernetes::Instance<'_>,
    ) -> Result<KubernetesOutput, HandlerError> {
        let tables = self
            .cache
            .tables
            .read()
            .map_err(|_| HandlerError::Internal("kubernetesenv cache lock poisoned".into()))?;
        Ok(generate(&tables, instance))
    }
}

/// The output for `instance`: each side's pod looked up by its uid, or by its IP when the
/// uid is empty and the IP is specified; nothing for a pod not found.
pub fn generate(tables: &Tables, instance: &kubernetes::Instance<'_>) -> KubernetesOutput {
    let mut out = KubernetesOutput::default();
    if let Some(pod) = find(
        tables,
        &instance.destination_uid,
        instance.destination_ip.as_deref(),
    ) {
        out.destination = Some(tables.attributes(pod));
        out.destination_container_name = container_for_port(pod, instance.destination_port);
    }
    if let Some(pod) = find(tables, &instance.source_uid, instance.source_ip.as_deref()) {
        out.source = Some(tables.attributes(pod));
    }
    out
}

fn find<'t>(tables: &'t Tables, uid: &str, ip: Option<&[u8]>) -> Option<&'t PodRecord> {
    if !uid.is_empty() {
        return tables.pod_by_uid(uid).map(|p| &**p);
    }
    let ip = match ip? {
        b if b.len() == 4 => IpAddr::from(<[u8; 4]>::try_from(b).ok()?),
        b if b.len() == 16 => IpAddr::from(<[u8; 16]>::try_from(b).ok()?),
        _ => return None,
    };
    let ip = match ip {
        // Envoy may send an IPv4 address mapped into IPv6.
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ip.is_unspecified() {
        return None;
    }
    tables.pod_by_ip(ip).map(|p| &**p)
}

#[cfg(test)]
mod tests;
