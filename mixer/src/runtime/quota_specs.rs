//! The quotas a request is charged by Istio's QuotaSpecs: the bindings select specs by the
//! request's destination service, and each spec rule whose `match` holds adds its quotas,
//! as Istio's Envoy filter built a Check's quota requests.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use expr_lang::{AttrKey, Bag};

use super::quota::QuotaRequest;
use crate::config::snapshot::{
    AttributeMatch, QuotaSpec, QuotaSpecBinding, ServiceSelector, Snapshot, StringMatch,
};

/// The destination service of a request, as far as the bag tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationService<'b> {
    pub name: Option<Cow<'b, str>>,
    pub namespace: Option<Cow<'b, str>>,
    pub host: Option<Cow<'b, str>>,
}

impl<'b> DestinationService<'b> {
    /// `destination.service.name`, `.namespace` and `.host`; a name or namespace the bag
    /// lacks comes from a host of the form `NAME.NAMESPACE.svc…`.
    pub fn of<B: Bag + ?Sized>(snap: &Snapshot, bag: &'b B) -> DestinationService<'b> {
        let host = text(snap, bag, "destination.service.host");
        let (host_name, host_namespace) = host
            .as_deref()
            .and_then(split_service_host)
            .map_or((None, None), |(n, ns)| {
                (Some(n.to_owned()), Some(ns.to_owned()))
            });
        DestinationService {
            name: text(snap, bag, "destination.service.name").or(host_name.map(Cow::Owned)),
            namespace: text(snap, bag, "destination.service.namespace")
                .or(host_namespace.map(Cow::Owned)),
            host,
        }
    }

    /// Whether a binding's service reference selects this service.
    pub fn selected_by(&self, selector: &ServiceSelector) -> bool {
        let name = self.name.as_deref();
        let namespace = self.namespace.as_deref();
        match selector {
            ServiceSelector::Any => true,
            ServiceSelector::Namespace(ns) => namespace == Some(ns),
            ServiceSelector::Host(h) => match self.host.as_deref() {
                Some(host) => host == h,
                None => split_service_host(h)
                    .is_some_and(|(n, ns)| name == Some(n) && namespace == Some(ns)),
            },
            ServiceSelector::Named {
                name: n,
                namespace: ns,
                domain,
            } => {
                let same = name == Some(n.as_str()) && namespace == Some(ns.as_str());
                // A domain given narrows to that host, when the host is known.
                match (domain, self.host.as_deref()) {
                    (Some(d), Some(host)) => same && host == format!("{n}.{ns}.{d}"),
                    _ => same,
                }
            }
        }
    }
}

/// `NAME.NAMESPACE.svc…` → (NAME, NAMESPACE).
fn split_service_host(host: &str) -> Option<(&str, &str)> {
    let mut parts = host.splitn(4, '.');
    let name = parts.next().filter(|s| !s.is_empty())?;
    let namespace = parts.next().filter(|s| !s.is_empty())?;
    (parts.next() == Some("svc")).then_some((name, namespace))
}

/// A string-like attribute's text.
fn text<'b, B: Bag + ?Sized>(snap: &Snapshot, bag: &'b B, name: &str) -> Option<Cow<'b, str>> {
    let info = snap.manifest.get(name)?;
    match bag.get(AttrKey { name, id: info.id })? {
        expr_lang::Value::String(s)
        | expr_lang::Value::DnsName(s)
        | expr_lang::Value::Uri(s)
        | expr_lang::Value::EmailAddress(s) => Some(s),
        _ => None,
    }
}

/// The quotas the snapshot's QuotaSpecs charge a request with: each quota once (the last
/// charge found wins, as a quota map entry did), by name, never best effort.
pub fn requested_quotas<'s, B: Bag + ?Sized>(snap: &'s Snapshot, bag: &B) -> Vec<QuotaRequest<'s>> {
    if snap.quota_bindings.is_empty() {
        return Vec::new();
    }
    let destination = DestinationService::of(snap, bag);
    let mut charges: BTreeMap<&'s str, i64> = BTreeMap::new();
    for spec in bound_specs(&snap.quota_bindings, &destination) {
        for rule in &spec.rules {
            if rule.matches.is_empty() || rule.matches.iter().any(|m| holds(snap, bag, m)) {
                for q in &rule.quotas {
                    charges.insert(&q.quota, q.charge);
                }
            }
        }
    }
    charges
        .into_iter()
        .map(|(name, amount)| QuotaRequest {
            name,
            amount,
            best_effort: false,
        })
        .collect()
}

/// The specs bound to `destination`, each once, in the order first bound.
fn bound_specs<'s>(
    bindings: &'s [QuotaSpecBinding],
    destination: &DestinationService<'_>,
) -> Vec<&'s Arc<QuotaSpec>> {
    let mut specs: Vec<&Arc<QuotaSpec>> = Vec::new();
    for binding in bindings {
        if !binding.services.iter().any(|s| destination.selected_by(s)) {
            continue;
        }
        for spec in &binding.specs {
            if !specs.iter().any(|s| Arc::ptr_eq(s, spec)) {
                specs.push(spec);
            }
        }
    }
    specs
}

/// Whether every clause of `m` holds: the attribute is present as text and compares.
fn holds<B: Bag + ?Sized>(snap: &Snapshot, bag: &B, m: &AttributeMatch) -> bool {
    m.clauses.iter().all(|(attr, cmp)| {
        let Some(value) = text(snap, bag, attr) else {
            return false;
        };
        match cmp {
            StringMatch::Exact(e) => value == e.as_str(),
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
            StringMatch::Regex(re) => re.is_match(&value),
            StringMatch::Present => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use expr_lang::{SlotBag, Value};

    use super::*;
    use crate::config::compile::{CompileOptions, compile};
    use crate::config::store::parse_file;

    const ATTRIBUTES: &str = include_str!("../../../samples/default/attributes.yaml");

    fn snapshot(yaml: &str) -> Snapshot {
        let text = format!("{ATTRIBUTES}\n---\n{yaml}");
        let (docs, errors) = parse_file(Path::new("quota.yaml"), &text);
        assert!(errors.is_empty(), "{errors:?}");
        let compiled = compile(
            &docs,
            &CompileOptions {
                default_namespace: "istio-system".to_owned(),
                build_handlers: false,
                generation: 1,
                resources: Default::default(),
            },
            None,
        );
        let errors: Vec<_> = compiled
            .diagnostics
            .iter()
            .filter(|d| d.severity == crate::config::Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        compiled.snapshot
    }

    fn bag(snap: &Snapshot, attrs: &[(&str, &str)]) -> SlotBag {
        let mut bag = SlotBag::with_len(snap.manifest.len());
        for (name, value) in attrs {
            let id = snap.manifest.get(name).expect("declared").id;
            bag.set(id, Value::String(value.to_string().into()));
        }
        bag
    }

    fn asked(snap: &Snapshot, attrs: &[(&str, &str)]) -> Vec<(String, i64)> {
        requested_quotas(snap, &bag(snap, attrs))
            .into_iter()
            .map(|q| {
                assert!(!q.best_effort);
                (q.name.to_owned(), q.amount)
            })
            .collect()
    }

    const SPECS: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {name: request-count, namespace: istio-system}
spec:
  rules:
  - quotas:
    - {charge: 1, quota: requestcount}
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {name: by-path, namespace: istio-system}
spec:
  rules:
  - match:
    - clause:
        request.url_path: {prefix: /api/}
        request.method: {exact: POST}
    - clause:
        request.url_path: {regex: "/admin/[a-z]+"}
    quotas:
    - {charge: "5", quota: writes}
  - match:
    - clause:
        request.host: {}
    quotas:
    - {charge: 2, quota: requestcount}
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {name: request-count, namespace: istio-system}
spec:
  quotaSpecs:
  - {name: request-count, namespace: istio-system}
  services:
  - {name: productpage, namespace: default}
  - {service: "*.team-a.*"}
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {name: by-path, namespace: default}
spec:
  quotaSpecs:
  - {name: by-path, namespace: istio-system}
  services:
  - name: reviews
  - service: ratings.default.svc.cluster.local
"#;

    #[test]
    fn bindings_select_by_name_and_namespace_or_host() {
        let snap = snapshot(SPECS);
        let productpage = [
            ("destination.service.name", "productpage"),
            ("destination.service.namespace", "default"),
        ];
        assert_eq!(asked(&snap, &productpage), [("requestcount".into(), 1)]);
        // Only the host is known: its NAME.NAMESPACE.svc form supplies both.
        let by_host = [(
            "destination.service.host",
            "productpage.default.svc.cluster.local",
        )];
        assert_eq!(asked(&snap, &by_host), [("requestcount".into(), 1)]);
        // Another namespace, or a host not of that form: nothing.
        let other = [
            ("destination.service.name", "productpage"),
            ("destination.service.namespace", "staging"),
        ];
        assert!(asked(&snap, &other).is_empty());
        assert!(
            asked(
                &snap,
                &[("destination.service.host", "productpage.default")]
            )
            .is_empty()
        );
        // No destination service at all: no binding by name or namespace applies.
        assert!(asked(&snap, &[("request.method", "POST")]).is_empty());
        // `*.team-a.*` selects every service of team-a.
        let team_a = [(
            "destination.service.host",
            "billing.team-a.svc.cluster.local",
        )];
        assert_eq!(asked(&snap, &team_a), [("requestcount".into(), 1)]);
    }

    #[test]
    fn a_binding_without_namespace_means_its_own() {
        let snap = snapshot(SPECS);
        let reviews = |ns: &'static str| {
            [
                ("destination.service.name", "reviews"),
                ("destination.service.namespace", ns),
                ("request.host", "reviews:9080"),
            ]
        };
        assert_eq!(
            asked(&snap, &reviews("default")),
            [("requestcount".into(), 2)]
        );
        assert!(asked(&snap, &reviews("istio-system")).is_empty());
        // A fully qualified `service` compares hosts, or name and namespace without one.
        let ratings = [
            ("destination.service.name", "ratings"),
            ("destination.service.namespace", "default"),
            ("request.host", "ratings"),
        ];
        assert_eq!(asked(&snap, &ratings), [("requestcount".into(), 2)]);
        let other_cluster = [
            (
                "destination.service.host",
                "ratings.default.svc.remote.example",
            ),
            ("request.host", "ratings"),
        ];
        assert!(asked(&snap, &other_cluster).is_empty());
    }

    #[test]
    fn clauses_all_hold_and_any_match_applies() {
        let snap = snapshot(SPECS);
        let reviews = [
            ("destination.service.name", "reviews"),
            ("destination.service.namespace", "default"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut attrs = reviews.to_vec();
            attrs.extend_from_slice(extra);
            asked(&snap, &attrs)
        };
        // No rule matches: the by-path spec asks nothing (its second rule needs request.host).
        assert!(with(&[]).is_empty());
        // Both clauses of the first match.
        assert_eq!(
            with(&[("request.url_path", "/api/v1"), ("request.method", "POST")]),
            [("writes".into(), 5)]
        );
        // One clause of a match is not enough.
        assert!(with(&[("request.url_path", "/api/v1"), ("request.method", "GET")]).is_empty());
        // The second match: the regex must match the whole value.
        assert_eq!(
            with(&[("request.url_path", "/admin/users")]),
            [("writes".into(), 5)]
        );
        assert!(with(&[("request.url_path", "/admin/users/1")]).is_empty());
        // A clause with no comparison needs the attribute only; two rules add up.
        assert_eq!(
            with(&[("request.url_path", "/admin/x"), ("request.host", "h")]),
            [("requestcount".into(), 2), ("writes".into(), 5)]
        );
    }

    #[test]
    fn a_quota_named_twice_is_asked_once_with_the_last_charge() {
        let snap = snapshot(
            r#"
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {name: a, namespace: istio-system}
spec:
  rules:
  - quotas: [{charge: 1, quota: rq}]
  - quotas: [{charge: 3, quota: rq}]
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {name: all, namespace: istio-system}
spec:
  quotaSpecs: [{name: a}, {name: a}]
  services: [{service: "*"}]
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {name: again, namespace: istio-system}
spec:
  quotaSpecs: [{name: a}]
  services: [{service: "*"}]
"#,
        );
        let any = [("destination.service.host", "x.y.svc.cluster.local")];
        assert_eq!(asked(&snap, &any), [("rq".into(), 3)]);
        // `*` binds every request, even one that names no destination service.
        assert_eq!(asked(&snap, &[]), [("rq".into(), 3)]);
    }
}
