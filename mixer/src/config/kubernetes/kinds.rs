//! The Kubernetes resources behind the configuration kinds: one table, kind → plural
//! resource name, for the watches here and for the CRD manifests shipped in
//! `samples/kubernetes` (a test checks those against [`config_kinds`]).

use std::sync::LazyLock;

use crate::config::compile::accepted_kinds;

/// The API group of every configuration kind.
pub const GROUP: &str = "config.istio.io";
/// The API version of every configuration kind.
pub const VERSION: &str = "v1alpha2";
/// `GROUP/VERSION`.
pub const API_VERSION: &str = "config.istio.io/v1alpha2";

/// One configuration kind as a Kubernetes custom resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfigKind {
    /// `kind:` as written in the YAML (`rule`, `QuotaSpec`, `prometheus`, ...).
    pub kind: &'static str,
    /// The resource's plural name: the URL path segment and the CRD's `spec.names.plural`
    /// (`rules`, `quotaspecs`, `prometheuses`, ...).
    pub plural: String,
    /// Whether objects live in a namespace (every configuration kind does).
    pub namespaced: bool,
}

/// Every kind the config compiler accepts ([`accepted_kinds`]), as a custom resource of
/// [`GROUP`]/[`VERSION`], in the compiler's order.
pub fn config_kinds() -> &'static [ConfigKind] {
    static KINDS: LazyLock<Vec<ConfigKind>> = LazyLock::new(|| {
        accepted_kinds()
            .iter()
            .map(|&kind| ConfigKind {
                kind,
                plural: plural(kind),
                namespaced: true,
            })
            .collect()
    });
    &KINDS
}

/// The plural Istio's CRDs give a kind: lowercased, then English plural endings
/// (`prometheus` → `prometheuses`, `cloudwatch` → `cloudwatches`, `logentry` →
/// `logentries`, `kubernetes` → `kuberneteses`, `signalfx` → `signalfxs`).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with('s') || lower.ends_with("ch") {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_istios() {
        let plural_of = |kind: &str| {
            config_kinds()
                .iter()
                .find(|k| k.kind == kind)
                .unwrap_or_else(|| panic!("{kind} is watched"))
                .plural
                .clone()
        };
        for (kind, expected) in [
            ("rule", "rules"),
            ("attributemanifest", "attributemanifests"),
            ("handler", "handlers"),
            ("instance", "instances"),
            ("QuotaSpec", "quotaspecs"),
            ("QuotaSpecBinding", "quotaspecbindings"),
            ("metric", "metrics"),
            ("logentry", "logentries"),
            ("listentry", "listentries"),
            ("tracespan", "tracespans"),
            ("kubernetes", "kuberneteses"),
            ("prometheus", "prometheuses"),
            ("stdio", "stdios"),
            ("listchecker", "listcheckers"),
            ("memquota", "memquotas"),
            ("redisquota", "redisquotas"),
            ("denier", "deniers"),
            ("kubernetesenv", "kubernetesenvs"),
            ("zipkin", "zipkins"),
            ("bypass", "bypasses"),
            ("cloudwatch", "cloudwatches"),
            ("signalfx", "signalfxs"),
            ("solarwinds", "solarwindses"),
        ] {
            assert_eq!(plural_of(kind), expected, "{kind}");
        }
        let mut plurals: Vec<&str> = config_kinds().iter().map(|k| k.plural.as_str()).collect();
        plurals.sort_unstable();
        plurals.dedup();
        assert_eq!(plurals.len(), config_kinds().len(), "plurals are unique");
    }
}
