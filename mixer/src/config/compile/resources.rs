//! Phase 1: which documents are Mixer resources, keyed by kind, namespace and name; and
//! how rules refer to them.

use std::collections::BTreeMap;

use templates::TemplateKind;

use crate::config::diagnostics::{Diags, Res, Severity};
use crate::config::store::Document;

/// Resources by (kind, namespace, name).
pub(super) type Resources<'d> = BTreeMap<(String, String, String), Res<'d>>;

/// Keeps the documents that are Mixer resources. The last duplicate wins, as in Mixer.
pub(super) fn classify<'d>(
    docs: &'d [Document],
    default_namespace: &str,
    diags: &mut Diags,
) -> Resources<'d> {
    let mut resources = Resources::new();
    for doc in docs {
        if is_foreign_kind(&doc.kind) {
            tracing::debug!(kind = %doc.kind, name = %doc.name, origin = %doc.location(), "Skipping a resource that is not Mixer configuration.");
            continue;
        }
        let Some(namespace) = doc.namespace.clone().filter(|n| !n.is_empty()) else {
            diags.push(
                Severity::Error,
                None,
                Some(doc),
                Some("metadata.namespace".to_owned()),
                format!(
                    "{} '{}' has no metadata.namespace (required: e.g. namespace: {default_namespace})",
                    doc.kind, doc.name
                ),
            );
            continue;
        };
        let res = Res { doc, namespace };
        let key = (doc.kind.clone(), res.namespace.clone(), doc.name.clone());
        if let Some(prev) = resources.get(&key) {
            let msg = format!(
                "defined again (first at {}); the later definition is used",
                prev.doc.location()
            );
            diags.warning(&res, None, msg);
        }
        resources.insert(key, res);
    }
    resources
}

/// Every `kind:` read as configuration, in a fixed order: the current kinds, Istio's
/// QuotaSpec and QuotaSpecBinding (not Mixer's, but served to Envoy's ext_authz front
/// end), then the legacy per-template and per-adapter kinds. The Kubernetes source
/// watches exactly these (`crate::config::kubernetes::kinds`).
pub fn accepted_kinds() -> &'static [&'static str] {
    static KINDS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        let mut kinds = vec![
            "rule",
            "handler",
            "instance",
            "attributemanifest",
            "adapter",
            "template",
            super::quota_specs::QUOTA_SPEC,
            super::quota_specs::QUOTA_SPEC_BINDING,
        ];
        kinds.extend(TemplateKind::ALL.iter().map(|t| t.name()));
        kinds.extend(adapters::inventory().iter().map(|a| a.name()));
        kinds.extend(adapters::KNOWN_UNSUPPORTED);
        let mut seen = std::collections::HashSet::new();
        kinds.retain(|k| seen.insert(*k));
        kinds
    });
    &KINDS
}

/// Kinds that are not Mixer's: skipped quietly.
fn is_foreign_kind(kind: &str) -> bool {
    !accepted_kinds().contains(&kind)
}

/// Resolves a reference from a rule in `namespace` to a resource of `kind` (Mixer's
/// rules): `a` → `a.kind.ns`; `a.b` → `a.b.ns` (legacy kind) then `a.kind.b`
/// (namespace); three or more parts are used as they are.
pub(super) fn resolve_reference(
    reference: &str,
    kind: &str,
    namespace: &str,
    exists: impl Fn(&str) -> bool,
) -> Option<String> {
    let parts: Vec<&str> = reference.split('.').collect();
    let candidates = match parts.as_slice() {
        [a] => vec![format!("{a}.{kind}.{namespace}")],
        [a, b] => vec![format!("{a}.{b}.{namespace}"), format!("{a}.{kind}.{b}")],
        _ => vec![reference.to_owned()],
    };
    candidates.into_iter().find(|c| exists(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_like_mixer() {
        let known = [
            "a.handler.ns1",
            "h.prometheus.ns1",
            "p.handler.istio-system",
            "x.y.z",
        ];
        let exists = |c: &str| known.contains(&c);
        assert_eq!(
            resolve_reference("a", "handler", "ns1", exists).as_deref(),
            Some("a.handler.ns1")
        );
        assert_eq!(
            resolve_reference("h.prometheus", "handler", "ns1", exists).as_deref(),
            Some("h.prometheus.ns1")
        );
        assert_eq!(
            resolve_reference("p.istio-system", "handler", "ns1", exists).as_deref(),
            Some("p.handler.istio-system")
        );
        assert_eq!(
            resolve_reference("x.y.z", "handler", "ns1", exists).as_deref(),
            Some("x.y.z")
        );
        assert_eq!(resolve_reference("nope", "handler", "ns1", exists), None);
    }
}
