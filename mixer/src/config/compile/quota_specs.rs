//! Phase 8: Istio's own quota kinds, `QuotaSpec` (which quotas a request is charged, under
//! which attribute conditions) and `QuotaSpecBinding` (which destination services the
//! specs apply to). Istio's proxy config generator used to read them; here they tell the
//! front ends that have no quota requests of their own (Envoy's ext_authz) what to ask
//! for. Validation follows Istio's (`charge` positive, a spec needs rules and quotas, a
//! service reference names either a `name` or a `service`); a reference that cannot
//! select anything is a warning, as it silently did nothing in Istio.

use std::collections::BTreeMap;
use std::sync::Arc;

use expr_lang::{Manifest, ValueType};
use serde_json::Value as Json;
use templates::TemplateKind;

use super::instances::Instances;
use super::resources::Resources;
use crate::config::diagnostics::{Diags, Res};
use crate::config::snapshot::{
    AttributeMatch, QuotaCharge, QuotaRule, QuotaSpec, QuotaSpecBinding, ServiceSelector,
    StringMatch,
};
use crate::config::spec::{
    IstioServiceSpec, QuotaChargeSpec, QuotaSpecBindingSpec, QuotaSpecReferenceSpec, QuotaSpecSpec,
    StringMatchSpec, decode_spec,
};

pub(super) const QUOTA_SPEC: &str = "QuotaSpec";
pub(super) const QUOTA_SPEC_BINDING: &str = "QuotaSpecBinding";

/// A compiled regex may use at most this much memory (a clause is compiled once per
/// configuration, but a huge automaton would sit in every snapshot).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What checking a spec's quota names and clause attributes needs.
struct Scope<'a> {
    manifest: &'a Manifest,
    instances: &'a Instances,
}

/// Every valid binding with the valid specs it names. An invalid spec or binding is
/// reported and left out whole.
pub(super) fn compile_all(
    resources: &Resources<'_>,
    manifest: &Manifest,
    instances: &Instances,
    diags: &mut Diags,
) -> Vec<QuotaSpecBinding> {
    let scope = Scope {
        manifest,
        instances,
    };
    let specs: BTreeMap<(String, String), Arc<QuotaSpec>> = resources
        .values()
        .filter(|r| r.doc.kind == QUOTA_SPEC)
        .filter_map(|res| {
            let spec = compile_spec(res, &scope, diags)?;
            Some((
                (res.namespace.clone(), res.doc.name.clone()),
                Arc::new(spec),
            ))
        })
        .collect();
    resources
        .values()
        .filter(|r| r.doc.kind == QUOTA_SPEC_BINDING)
        .filter_map(|res| compile_binding(res, &specs, diags))
        .collect()
}

fn compile_spec(res: &Res<'_>, scope: &Scope<'_>, diags: &mut Diags) -> Option<QuotaSpec> {
    let spec = decode_spec::<QuotaSpecSpec>(&res.doc.spec)
        .map_err(|(field, msg)| diags.error(res, Some(&field), msg))
        .ok()?;
    let errors_before = error_count(diags);
    if spec.rules.is_empty() {
        diags.error(res, Some("rules"), "a QuotaSpec needs at least one rule");
    }
    let rules = spec
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let field = format!("rules[{i}]");
            if rule.quotas.is_empty() {
                diags.error(
                    res,
                    Some(&format!("{field}.quotas")),
                    "a rule needs at least one quota",
                );
            }
            QuotaRule {
                matches: rule
                    .matches
                    .into_iter()
                    .enumerate()
                    .map(|(j, m)| {
                        attribute_match(res, &format!("{field}.match[{j}]"), m.clause, scope, diags)
                    })
                    .collect(),
                quotas: rule
                    .quotas
                    .iter()
                    .enumerate()
                    .filter_map(|(k, q)| {
                        quota_charge(res, &format!("{field}.quotas[{k}]"), q, scope, diags)
                    })
                    .collect(),
            }
        })
        .collect();
    (error_count(diags) == errors_before).then(|| QuotaSpec {
        name: res.ident(),
        rules,
    })
}

fn attribute_match(
    res: &Res<'_>,
    field: &str,
    clauses: BTreeMap<String, StringMatchSpec>,
    scope: &Scope<'_>,
    diags: &mut Diags,
) -> AttributeMatch {
    let clauses = clauses
        .into_iter()
        .filter_map(|(attr, m)| {
            let field = format!("{field}.clause[{attr:?}]");
            check_clause_attribute(res, &field, &attr, scope, diags);
            let m = string_match(res, &field, &attr, m, diags)?;
            Some((attr, m))
        })
        .collect();
    AttributeMatch { clauses }
}

/// A clause on an attribute the request can never carry as text never holds: Istio's
/// proxy compared only string attributes. Worth a warning, not a rejection.
fn check_clause_attribute(
    res: &Res<'_>,
    field: &str,
    attr: &str,
    scope: &Scope<'_>,
    diags: &mut Diags,
) {
    if attr.is_empty() {
        diags.error(res, Some(field), "a clause needs an attribute name");
        return;
    }
    match scope.manifest.get(attr).map(|a| a.value_type) {
        None => diags.warning(
            res,
            Some(field),
            format!(
                "attribute '{attr}' is not in the attribute manifest, so this clause never holds"
            ),
        ),
        Some(ValueType::String | ValueType::DnsName | ValueType::Uri | ValueType::EmailAddress) => {
        }
        Some(t) => diags.warning(
            res,
            Some(field),
            format!(
                "attribute '{attr}' is a {t}; clauses compare text only, so this clause never holds"
            ),
        ),
    }
}

fn string_match(
    res: &Res<'_>,
    field: &str,
    attr: &str,
    m: StringMatchSpec,
    diags: &mut Diags,
) -> Option<StringMatch> {
    let set = [&m.exact, &m.prefix, &m.regex]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if set > 1 {
        diags.error(
            res,
            Some(field),
            "exact, prefix and regex are alternatives: set one of them",
        );
        return None;
    }
    let (which, text) = match (m.exact, m.prefix, m.regex) {
        (Some(e), _, _) => ("exact", e),
        (_, Some(p), _) => ("prefix", p),
        (_, _, Some(r)) => ("regex", r),
        _ => return Some(StringMatch::Present),
    };
    let field = format!("{field}.{which}");
    if text.is_empty() {
        diags.error(
            res,
            Some(&field),
            format!("the {which} match for attribute '{attr}' cannot be empty"),
        );
        return None;
    }
    Some(match which {
        "exact" => StringMatch::Exact(text),
        "prefix" => StringMatch::Prefix(text),
        _ => match anchored_regex(&text) {
            Ok(re) => StringMatch::Regex(re),
            Err(e) => {
                diags.error(
                    res,
                    Some(&field),
                    format!("invalid regular expression '{text}': {e}"),
                );
                return None;
            }
        },
    })
}

/// `pattern` matching whole values only. Checked on its own first, so that an error
/// shows the pattern as written.
fn anchored_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

fn quota_charge(
    res: &Res<'_>,
    field: &str,
    q: &QuotaChargeSpec,
    scope: &Scope<'_>,
    diags: &mut Diags,
) -> Option<QuotaCharge> {
    if q.quota.is_empty() {
        diags.error(res, Some(&format!("{field}.quota")), "a quota needs a name");
        return None;
    }
    let charge = match charge(&q.charge) {
        Ok(c) => c,
        Err(m) => {
            diags.error(res, Some(&format!("{field}.charge")), m);
            return None;
        }
    };
    if !names_a_quota_instance(scope.instances, &q.quota) {
        diags.warning(
            res,
            Some(&format!("{field}.quota")),
            format!(
                "no quota instance is named '{}'; requests charged with it are granted, as Mixer granted unknown quotas",
                q.quota
            ),
        );
    }
    Some(QuotaCharge {
        quota: q.quota.clone(),
        charge,
    })
}

/// The charge: a positive int32, as a JSON number or a string of digits (protobuf JSON).
fn charge(v: &Json) -> Result<i64, String> {
    let n = match v {
        Json::Null => None,
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n > 0 && n <= i64::from(i32::MAX) => Ok(n),
        Some(n) => Err(format!(
            "the charge must be positive (and fit an int32), not {n}"
        )),
        None if v.is_null() => Err("a quota needs a positive charge".to_owned()),
        None => Err(format!("the charge must be a positive integer, not {v}")),
    }
}

/// Whether some quota instance has `name` as its short name (the runtime's lookup:
/// case-insensitive, any namespace).
fn names_a_quota_instance(instances: &Instances, name: &str) -> bool {
    instances.values().any(|i| {
        i.kind() == TemplateKind::Quota
            && i.name()
                .split('.')
                .next()
                .is_some_and(|short| short.eq_ignore_ascii_case(name))
    })
}

fn compile_binding(
    res: &Res<'_>,
    specs: &BTreeMap<(String, String), Arc<QuotaSpec>>,
    diags: &mut Diags,
) -> Option<QuotaSpecBinding> {
    let spec = decode_spec::<QuotaSpecBindingSpec>(&res.doc.spec)
        .map_err(|(field, msg)| diags.error(res, Some(&field), msg))
        .ok()?;
    let errors_before = error_count(diags);
    if spec.services.is_empty() {
        diags.error(
            res,
            Some("services"),
            "a QuotaSpecBinding needs at least one service",
        );
    }
    if spec.quota_specs.is_empty() {
        diags.error(
            res,
            Some("quotaSpecs"),
            "a QuotaSpecBinding needs at least one QuotaSpec reference",
        );
    }
    let services: Vec<ServiceSelector> = spec
        .services
        .iter()
        .enumerate()
        .filter_map(|(i, s)| service_selector(res, &format!("services[{i}]"), s, diags))
        .collect();
    let mut bound: Vec<Arc<QuotaSpec>> = Vec::new();
    for (i, r) in spec.quota_specs.iter().enumerate() {
        let Some(spec) = spec_reference(res, &format!("quotaSpecs[{i}]"), r, specs, diags) else {
            continue;
        };
        if !bound.iter().any(|b| Arc::ptr_eq(b, &spec)) {
            bound.push(spec);
        }
    }
    (error_count(diags) == errors_before).then(|| QuotaSpecBinding {
        name: res.ident(),
        services,
        specs: bound,
    })
}

/// The spec a reference names (namespace defaulting to the binding's), if it exists.
fn spec_reference(
    res: &Res<'_>,
    field: &str,
    r: &QuotaSpecReferenceSpec,
    specs: &BTreeMap<(String, String), Arc<QuotaSpec>>,
    diags: &mut Diags,
) -> Option<Arc<QuotaSpec>> {
    if r.name.is_empty() {
        diags.error(
            res,
            Some(&format!("{field}.name")),
            "a QuotaSpec reference needs a name",
        );
        return None;
    }
    if !r.namespace.is_empty() && !is_dns1123_label(&r.namespace) {
        diags.error(
            res,
            Some(&format!("{field}.namespace")),
            format!("namespace '{}' is not a valid DNS-1123 label", r.namespace),
        );
        return None;
    }
    let namespace = if r.namespace.is_empty() {
        res.namespace.clone()
    } else {
        r.namespace.clone()
    };
    let found = specs.get(&(namespace.clone(), r.name.clone())).cloned();
    if found.is_none() {
        diags.warning(
            res,
            Some(field),
            format!(
                "there is no valid QuotaSpec '{}' in namespace '{namespace}'; this reference binds nothing",
                r.name
            ),
        );
    }
    found
}

/// One `services` entry, checked as Istio checked it.
fn service_selector(
    res: &Res<'_>,
    field: &str,
    s: &IstioServiceSpec,
    diags: &mut Diags,
) -> Option<ServiceSelector> {
    let error = |diags: &mut Diags, sub: &str, message: String| {
        let f = if sub.is_empty() {
            field.to_owned()
        } else {
            format!("{field}.{sub}")
        };
        diags.error(res, Some(&f), message);
    };
    if !s.labels.is_empty() {
        diags.warning(
            res,
            Some(&format!("{field}.labels")),
            "labels are ignored: Istio bound quotas to services by name only",
        );
    }
    if !s.namespace.is_empty() && !is_dns1123_label(&s.namespace) {
        let m = format!("namespace '{}' is not a valid DNS-1123 label", s.namespace);
        error(diags, "namespace", m);
        return None;
    }
    match (s.name.is_empty(), s.service.is_empty()) {
        (true, true) => {
            error(
                diags,
                "",
                "a service reference needs a name or a service".to_owned(),
            );
            None
        }
        (false, false) => {
            error(diags, "", "set either name or service, not both".to_owned());
            None
        }
        (true, false) => {
            if !s.namespace.is_empty() || !s.domain.is_empty() {
                let m = "namespace and domain cannot be set with service (a fully qualified host)";
                error(diags, "service", m.to_owned());
                return None;
            }
            match wildcard_service(&s.service) {
                Ok(selector) => Some(selector),
                Err(m) => {
                    error(diags, "service", m);
                    None
                }
            }
        }
        (false, true) => {
            if !is_dns1123_label(&s.name) {
                let m = format!("name '{}' is not a valid DNS-1123 label", s.name);
                error(diags, "name", m);
                return None;
            }
            let namespace = if s.namespace.is_empty() {
                res.namespace.clone()
            } else {
                s.namespace.clone()
            };
            Some(ServiceSelector::Named {
                name: s.name.clone(),
                namespace,
                domain: (!s.domain.is_empty()).then(|| s.domain.clone()),
            })
        }
    }
}

/// `*`, `*.NAMESPACE.*` or a host without wildcards.
fn wildcard_service(service: &str) -> Result<ServiceSelector, String> {
    if service == "*" {
        return Ok(ServiceSelector::Any);
    }
    if !service.contains('*') {
        return Ok(ServiceSelector::Host(service.to_owned()));
    }
    match service
        .strip_prefix("*.")
        .and_then(|s| s.strip_suffix(".*"))
    {
        Some(ns) if is_dns1123_label(ns) => Ok(ServiceSelector::Namespace(ns.to_owned())),
        _ => Err(format!(
            "wildcard service '{service}' is not allowed: only '*' or '*.<namespace>.*'"
        )),
    }
}

fn error_count(diags: &Diags) -> usize {
    diags
        .list
        .iter()
        .filter(|d| d.severity == crate::config::Severity::Error)
        .count()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters (Kubernetes names).
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(inner)
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::compile::{CompileOptions, compile};
    use crate::config::store::parse_file;
    use crate::config::{Diagnostic, Severity};

    fn diagnostics(yaml: &str) -> (Vec<Diagnostic>, usize) {
        let (docs, errors) = parse_file(Path::new("quota.yaml"), yaml);
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
        (
            compiled
                .diagnostics
                .into_iter()
                .filter(|d| d.resource.is_some())
                .collect(),
            compiled.snapshot.quota_bindings.len(),
        )
    }

    /// (severity, line, resource, field, message fragment) of each diagnostic.
    fn assert_diagnostics(found: &[Diagnostic], expected: &[(Severity, usize, &str, &str, &str)]) {
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (d, (sev, line, res, field, msg)) in found.iter().zip(expected) {
            let shown = d.to_string();
            assert_eq!(d.severity, *sev, "{shown}");
            assert_eq!(d.file.as_deref(), Some(Path::new("quota.yaml")), "{shown}");
            assert_eq!(d.line, Some(*line), "{shown}");
            assert_eq!(d.resource.as_deref(), Some(*res), "{shown}");
            assert_eq!(d.field.as_deref(), Some(*field), "{shown}");
            assert!(d.message.contains(msg), "{shown}");
        }
    }

    #[test]
    fn invalid_specs_are_named_precisely_and_left_out() {
        let yaml = r#"apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {name: bad, namespace: istio-system}
spec:
  rules:
  - match:
    - clause:
        request.path: {exact: /a, prefix: /b}
        request.host: {regex: "(unclosed"}
        response.code: {exact: "200"}
        no.such.attribute: {prefix: x}
    quotas:
    - {quota: requestcount, charge: 0}
    - {charge: 1}
  - quotas: []
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {name: typo, namespace: istio-system}
spec:
  rules:
  - quota: [{quota: x, charge: 1}]
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {name: bad, namespace: istio-system}
spec:
  quotaSpecs: [{name: bad}, {name: ""}, {name: missing, namespace: default}]
  services:
  - {name: reviews, service: "*"}
  - {}
  - {service: "reviews.*"}
  - {service: "ratings.default.svc.cluster.local", namespace: default}
  - {name: Reviews_v2}
  - {name: ok, labels: {version: v1}}
"#;
        let (found, bindings) = diagnostics(yaml);
        let spec = "QuotaSpec/istio-system/bad";
        let binding = "QuotaSpecBinding/istio-system/bad";
        let clause = |attr: &str| format!("rules[0].match[0].clause[{attr:?}]");
        let regex = clause("request.host") + ".regex";
        let (host, path, code) = (
            clause("no.such.attribute"),
            clause("request.path"),
            clause("response.code"),
        );
        use Severity::{Error, Warning};
        assert_diagnostics(
            &found,
            &[
                (
                    Warning,
                    1,
                    spec,
                    &host,
                    "is not in the attribute manifest, so this clause never holds",
                ),
                (
                    Error,
                    1,
                    spec,
                    &regex,
                    "invalid regular expression '(unclosed'",
                ),
                (
                    Error,
                    1,
                    spec,
                    &path,
                    "exact, prefix and regex are alternatives",
                ),
                (
                    Warning,
                    1,
                    spec,
                    &code,
                    "is a INT64; clauses compare text only",
                ),
                (
                    Error,
                    1,
                    spec,
                    "rules[0].quotas[0].charge",
                    "must be positive (and fit an int32), not 0",
                ),
                (
                    Error,
                    1,
                    spec,
                    "rules[0].quotas[1].quota",
                    "a quota needs a name",
                ),
                (
                    Error,
                    1,
                    spec,
                    "rules[1].quotas",
                    "a rule needs at least one quota",
                ),
                (
                    Error,
                    17,
                    "QuotaSpec/istio-system/typo",
                    "rules[0].quota",
                    "unknown field `quota`",
                ),
                (
                    Error,
                    24,
                    binding,
                    "services[0]",
                    "set either name or service, not both",
                ),
                (
                    Error,
                    24,
                    binding,
                    "services[1]",
                    "needs a name or a service",
                ),
                (
                    Error,
                    24,
                    binding,
                    "services[2].service",
                    "only '*' or '*.<namespace>.*'",
                ),
                (
                    Error,
                    24,
                    binding,
                    "services[3].service",
                    "namespace and domain cannot be set",
                ),
                (
                    Error,
                    24,
                    binding,
                    "services[4].name",
                    "'Reviews_v2' is not a valid DNS-1123 label",
                ),
                (
                    Warning,
                    24,
                    binding,
                    "services[5].labels",
                    "labels are ignored",
                ),
                (
                    Warning,
                    24,
                    binding,
                    "quotaSpecs[0]",
                    "no valid QuotaSpec 'bad' in namespace 'istio-system'",
                ),
                (Error, 24, binding, "quotaSpecs[1].name", "needs a name"),
                (
                    Warning,
                    24,
                    binding,
                    "quotaSpecs[2]",
                    "no valid QuotaSpec 'missing' in namespace 'default'",
                ),
            ],
        );
        assert_eq!(bindings, 0, "invalid resources are left out whole");
    }

    #[test]
    fn a_valid_binding_is_kept_and_unknown_quota_names_are_warned_about() {
        let yaml = r#"apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {name: rc, namespace: istio-system}
spec:
  rules:
  - quotas: [{quota: requestcount, charge: 1}]
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {name: rc, namespace: istio-system}
spec:
  quotaSpecs: [{name: rc}]
  services: [{service: "*"}]
"#;
        let (found, bindings) = diagnostics(yaml);
        assert_diagnostics(
            &found,
            &[(
                Severity::Warning,
                1,
                "QuotaSpec/istio-system/rc",
                "rules[0].quotas[0].quota",
                "no quota instance is named 'requestcount'; requests charged with it are granted",
            )],
        );
        assert_eq!(bindings, 1);
    }

    #[test]
    fn charges_are_positive_int32s_as_numbers_or_digits() {
        assert_eq!(charge(&serde_json::json!(1)), Ok(1));
        assert_eq!(charge(&serde_json::json!("25")), Ok(25));
        assert!(
            charge(&serde_json::json!(0))
                .unwrap_err()
                .contains("positive")
        );
        assert!(charge(&serde_json::json!(-3)).is_err());
        assert!(charge(&serde_json::json!(4_000_000_000u64)).is_err());
        assert!(charge(&serde_json::json!(1.5)).is_err());
        assert!(charge(&Json::Null).unwrap_err().contains("needs"));
    }

    #[test]
    fn wildcard_services_follow_istio() {
        assert_eq!(wildcard_service("*"), Ok(ServiceSelector::Any));
        assert_eq!(
            wildcard_service("*.default.*"),
            Ok(ServiceSelector::Namespace("default".to_owned()))
        );
        assert_eq!(
            wildcard_service("reviews.default.svc.cluster.local"),
            Ok(ServiceSelector::Host(
                "reviews.default.svc.cluster.local".to_owned()
            ))
        );
        assert!(wildcard_service("*.svc.cluster.local").is_err());
        assert!(wildcard_service("reviews.*").is_err());
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns1123_label("istio-system"));
        assert!(is_dns1123_label("a1"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("A"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }
}
