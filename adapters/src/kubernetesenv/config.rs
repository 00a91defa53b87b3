//! Params of the `kubernetesenv` adapter (`adapter.kubernetesenv.config.Params`,
//! Istio 1.4) and their validation into a [`Config`] a handler can be built from.
//! Validation is pure: the kubeconfig file and environment are only read at build.

use std::time::Duration;

use serde::Deserialize;
use templates::ParamError;

use crate::ValidateInput;
use crate::params::{self, opt_duration};
use crate::prometheus::pbjson::{decode_object, nullable};

/// Default of [`Params::cache_refresh_duration`].
pub const DEFAULT_CACHE_REFRESH_DURATION: Duration = Duration::from_secs(5 * 60);

/// The handler params, as written under a `kubernetesenv` handler's `params:`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Path of a kubeconfig file for reaching the Kubernetes API server. Leave unset
    /// when running in the cluster. The `KUBECONFIG` environment variable, when set,
    /// takes precedence.
    #[serde(
        rename = "kubeconfigPath",
        alias = "kubeconfig_path",
        default,
        deserialize_with = "nullable"
    )]
    pub kubeconfig_path: String,

    /// How often the pod cache is completely resynchronised (it also follows watch
    /// events in between). Default 5m; 0 disables the periodic resync.
    #[serde(
        rename = "cacheRefreshDuration",
        alias = "cache_refresh_duration",
        default,
        deserialize_with = "opt_duration"
    )]
    pub cache_refresh_duration: Option<Duration>,

    /// Namespace holding the secrets that register remote clusters (multicluster).
    /// Default: the `POD_NAMESPACE` environment variable, else `istio-system`.
    #[serde(
        rename = "clusterRegistriesNamespace",
        alias = "cluster_registries_namespace",
        default,
        deserialize_with = "nullable"
    )]
    pub cluster_registries_namespace: String,
}

/// Validated params: what a kubernetesenv handler is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The configured kubeconfig path; `None`: in-cluster. In Mixer the `KUBECONFIG`
    /// environment variable wins whenever it is set (even empty, meaning in-cluster).
    pub kubeconfig_path: Option<String>,
    /// Full resync period; zero: no periodic resync.
    pub cache_refresh_duration: Duration,
    /// The configured namespace; `None`: the `POD_NAMESPACE` environment variable, else
    /// `istio-system`.
    pub cluster_registries_namespace: Option<String>,
}

/// Whether `s` is a Kubernetes namespace name (an RFC 1123 label: at most 63
/// lower-case letters, digits and `-`, starting and ending with a letter or digit).
pub fn is_namespace_name(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| edge(c) || *c == b'-')
}

/// Validates params into a [`Config`], reporting every problem with its field path.
pub fn validate(input: &ValidateInput<'_>) -> Result<Config, Vec<ParamError>> {
    let p: Params = decode_object(input.params)?;
    let mut errors = Vec::new();

    if p.kubeconfig_path.contains('\0') {
        errors.push(params::error(
            "params.kubeconfigPath",
            "a path cannot contain a NUL character",
        ));
    }
    if !p.cluster_registries_namespace.is_empty()
        && !is_namespace_name(&p.cluster_registries_namespace)
    {
        errors.push(params::error(
            "params.clusterRegistriesNamespace",
            format!(
                "{:?} is not a valid namespace name (at most 63 lower-case letters, digits and \
                 '-', starting and ending with a letter or digit)",
                p.cluster_registries_namespace
            ),
        ));
    }

    if errors.is_empty() {
        Ok(Config {
            kubeconfig_path: Some(p.kubeconfig_path).filter(|p| !p.is_empty()),
            cache_refresh_duration: p
                .cache_refresh_duration
                .unwrap_or(DEFAULT_CACHE_REFRESH_DURATION),
            cluster_registries_namespace: Some(p.cluster_registries_namespace)
                .filter(|n| !n.is_empty()),
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value as Json, json};

    fn run(params: Json) -> Result<Config, Vec<ParamError>> {
        validate(&ValidateInput {
            handler: "kubernetesenv.istio-system",
            params: &params,
            instances: &[],
        })
    }

    fn ok(params: Json) -> Config {
        run(params).unwrap_or_else(|e| panic!("{e:#?}"))
    }

    fn has(errors: &[ParamError], field: &str, text: &str) {
        assert!(
            errors
                .iter()
                .any(|e| e.field == field && e.message.contains(text)),
            "no error at {field} containing {text:?} in {errors:#?}"
        );
    }

    #[test]
    fn real_istio_configs_validate() {
        // 1.1.17 and 1.4.10 default charts and testdata kubernetesenv.yaml: no params
        // at all (`params:` absent / null); 1.6.14: `params: {}`.
        for params in [Json::Null, json!({})] {
            let c = ok(params);
            assert_eq!(
                c,
                Config {
                    kubeconfig_path: None,
                    cache_refresh_duration: Duration::from_secs(300),
                    cluster_registries_namespace: None,
                }
            );
        }
    }

    #[test]
    fn camel_and_snake_case() {
        let camel = ok(json!({
            "kubeconfigPath": "/etc/kube/config", "cacheRefreshDuration": "1m",
            "clusterRegistriesNamespace": "mesh-system"
        }));
        let snake = ok(json!({
            "kubeconfig_path": "/etc/kube/config", "cache_refresh_duration": "60s",
            "cluster_registries_namespace": "mesh-system"
        }));
        assert_eq!(camel, snake);
        assert_eq!(camel.kubeconfig_path.as_deref(), Some("/etc/kube/config"));
        assert_eq!(camel.cache_refresh_duration, Duration::from_secs(60));
        assert_eq!(
            camel.cluster_registries_namespace.as_deref(),
            Some("mesh-system")
        );
        let d = ok(json!({"cacheRefreshDuration": "0s"}));
        assert_eq!(d.cache_refresh_duration, Duration::ZERO);
    }

    #[test]
    fn bad_values() {
        let e =
            run(json!({"clusterRegistriesNamespace": "Istio_System", "kubeconfigPath": "a\u{0}b"}))
                .unwrap_err();
        has(
            &e,
            "params.clusterRegistriesNamespace",
            "not a valid namespace name",
        );
        has(&e, "params.kubeconfigPath", "NUL");
        assert_eq!(e.len(), 2);
        let e = run(json!({"cacheRefreshDuration": "5 minutes"})).unwrap_err();
        has(&e, "params.cacheRefreshDuration", "invalid duration");
        assert!(is_namespace_name("istio-system") && is_namespace_name("a1"));
        assert!(!is_namespace_name("-a") && !is_namespace_name(&"a".repeat(64)));
    }

    #[test]
    fn unknown_fields_rejected() {
        // Fields Istio removed (reserved 3-6 in 1.4) are unknown now.
        let e = run(json!({"pod_label_for_service": "app"})).unwrap_err();
        has(&e, "params.pod_label_for_service", "unknown field");
    }
}
