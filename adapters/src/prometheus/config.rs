//! Params of the `prometheus` adapter (`adapter.prometheus.config.Params`, Istio 1.4) and
//! their validation into a [`Config`] a handler can be built from.
//!
//! Validation is stricter than Mixer's in one deliberate way: Mixer only found out at
//! request time (as a panic in the Prometheus client, failing the whole Report batch)
//! that an instance's dimensions did not match the metric's `label_names`; here every
//! instance routed to the handler is checked at config load.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use templates::{ParamError, TemplateKind};

use super::pbjson::{Items, decode_object, float, floats, int, list, nullable, opt_int, pb_enum};
use crate::ValidateInput;
use crate::params::{self, opt_duration};

/// Namespace used when a metric gives none.
pub const DEFAULT_NAMESPACE: &str = "istio";

/// Buckets of a DISTRIBUTION metric that defines none (the Prometheus client defaults).
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Default of [`Params::max_series`].
pub const DEFAULT_MAX_SERIES: u64 = 10_000;

/// Upper limit on the number of finite buckets of a linear or exponential definition
/// (so that a typo cannot make validation allocate gigabytes).
pub const MAX_FINITE_BUCKETS: i32 = 10_000;

/// The handler params, as written under a `prometheus` handler's `params:`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The metrics to export, one entry per metric instance. An instance routed to this
    /// handler must have an entry here (matched by `instanceName`).
    #[serde(default)]
    pub metrics: Items<MetricInfo>,

    /// When set, a series (a metric with one set of label values) that has not been
    /// updated for `metricsExpiryDuration` is removed from the exposition. Without it,
    /// series never expire.
    #[serde(
        rename = "metricsExpirationPolicy",
        alias = "metrics_expiration_policy",
        default
    )]
    pub metrics_expiration_policy: Option<MetricsExpirationPolicy>,

    /// Extension (not in Istio): the maximum number of series (distinct label-value sets)
    /// kept per metric; updates that would create more are dropped and counted. Protects
    /// the server from label-cardinality explosions. Default 10000; 0 means unlimited.
    #[serde(
        rename = "maxSeries",
        alias = "max_series",
        default,
        deserialize_with = "opt_int"
    )]
    pub max_series: Option<i64>,
}

/// How one metric instance is exported to Prometheus.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricInfo {
    /// Prefix of the exported name (`<namespace>_<name>`). Default `istio`.
    #[serde(default, deserialize_with = "nullable")]
    pub namespace: String,

    /// The metric name without the namespace, e.g. `requests_total`. It must be unique
    /// across all Prometheus metrics. Default: the instance name, sanitised.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,

    /// Required. The fully qualified name of the metric instance this entry exports,
    /// e.g. `requestcount.instance.istio-system` (`requestcount.metric.istio-system` for
    /// a legacy `kind: metric` instance).
    #[serde(
        rename = "instanceName",
        alias = "instance_name",
        default,
        deserialize_with = "nullable"
    )]
    pub instance_name: String,

    /// Text of the `# HELP` line. Default: the name as written (unsanitised).
    #[serde(default, deserialize_with = "nullable")]
    pub description: String,

    /// What kind of metric this is: `GAUGE` (the value is set), `COUNTER` (the value is
    /// added) or `DISTRIBUTION` (a histogram of the values). Required.
    #[serde(default)]
    pub kind: Kind,

    /// Bucket boundaries of a `DISTRIBUTION` metric; at most one of the three
    /// definitions. Default: 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10.
    /// Not allowed for other kinds.
    #[serde(default)]
    pub buckets: Option<BucketsDefinition>,

    /// The label names. They must be exactly the dimension names of the instance
    /// (after sanitising: a leading `/` is dropped, `/`, `.` and spaces become `_`,
    /// `-` is removed).
    #[serde(
        rename = "labelNames",
        alias = "label_names",
        default,
        deserialize_with = "nullable"
    )]
    pub label_names: Vec<String>,
}

pb_enum! {
    /// `MetricInfo.Kind`.
    pub enum Kind {
        /// Not set: an error.
        Unspecified = "UNSPECIFIED",
        /// The latest value is exported.
        Gauge = "GAUGE",
        /// Values are added up.
        Counter = "COUNTER",
        /// Values are observed into a histogram.
        Distribution = "DISTRIBUTION",
    }
}

/// Bucket boundaries of a DISTRIBUTION metric: one of three definitions.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct BucketsDefinition {
    /// `num_finite_buckets + 1` upper bounds `offset + width * i`.
    #[serde(rename = "linearBuckets", alias = "linear_buckets", default)]
    pub linear_buckets: Option<Linear>,
    /// `num_finite_buckets + 1` upper bounds `scale * growth_factor ^ i`.
    #[serde(rename = "exponentialBuckets", alias = "exponential_buckets", default)]
    pub exponential_buckets: Option<Exponential>,
    /// Upper bounds given one by one.
    #[serde(rename = "explicitBuckets", alias = "explicit_buckets", default)]
    pub explicit_buckets: Option<Explicit>,
}

/// Equal-width buckets.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// Number of finite buckets; must be greater than 0.
    #[serde(
        rename = "numFiniteBuckets",
        alias = "num_finite_buckets",
        default,
        deserialize_with = "int"
    )]
    pub num_finite_buckets: i32,
    /// Width of each bucket; must be greater than 0.
    #[serde(default, deserialize_with = "float")]
    pub width: f64,
    /// Upper bound of the first bucket.
    #[serde(default, deserialize_with = "float")]
    pub offset: f64,
}

/// Buckets whose width grows geometrically.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Exponential {
    /// Number of finite buckets; must be greater than 0.
    #[serde(
        rename = "numFiniteBuckets",
        alias = "num_finite_buckets",
        default,
        deserialize_with = "int"
    )]
    pub num_finite_buckets: i32,
    /// Ratio between consecutive bounds; must be greater than 1.
    #[serde(
        rename = "growthFactor",
        alias = "growth_factor",
        default,
        deserialize_with = "float"
    )]
    pub growth_factor: f64,
    /// The first upper bound; must be greater than 0.
    #[serde(default, deserialize_with = "float")]
    pub scale: f64,
}

/// Buckets with arbitrary bounds.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Explicit {
    /// The upper bounds, strictly increasing, at least one.
    #[serde(default, deserialize_with = "floats")]
    pub bounds: Vec<f64>,
}

/// When idle series are removed.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricsExpirationPolicy {
    /// A series not updated for this long is removed (Go duration, e.g. `10m`).
    /// Must be greater than 0.
    #[serde(
        rename = "metricsExpiryDuration",
        alias = "metrics_expiry_duration",
        default,
        deserialize_with = "opt_duration"
    )]
    pub metrics_expiry_duration: Option<Duration>,
    /// How often expired series are looked for. Default: half of
    /// `metricsExpiryDuration`.
    #[serde(
        rename = "expiryCheckIntervalDuration",
        alias = "expiry_check_interval_duration",
        default,
        deserialize_with = "opt_duration"
    )]
    pub expiry_check_interval_duration: Option<Duration>,
}

/// Validated params: what a prometheus handler is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The exported metrics, in the order configured.
    pub metrics: Vec<Metric>,
    /// Removal of idle series; `None`: series never expire.
    pub expiration: Option<ExpirationPolicy>,
    /// Maximum number of series per metric; `None`: unlimited.
    pub max_series: Option<u64>,
}

/// One exported metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// FQN of the instance whose values feed it.
    pub instance_name: String,
    /// Full exported name, `<namespace>_<name>`, sanitised (e.g. `istio_requests_total`).
    pub full_name: String,
    /// `# HELP` text.
    pub help: String,
    /// Gauge, counter or histogram (with its bucket bounds).
    pub kind: MetricKind,
    /// Sanitised label names, in the order configured. Instance dimensions are matched
    /// to them by exact (unsanitised) key.
    pub label_names: Vec<String>,
}

/// What a metric does with its values.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricKind {
    /// Each value replaces the previous one.
    Gauge,
    /// Values are added (a negative value is an error at request time).
    Counter,
    /// A histogram with these finite upper bounds (strictly increasing; `+Inf` is
    /// implicit).
    Distribution { buckets: Vec<f64> },
}

/// Validated [`MetricsExpirationPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpirationPolicy {
    /// Idle time after which a series is removed (> 0).
    pub expiry: Duration,
    /// Period of the sweep (> 0).
    pub check_interval: Duration,
}

/// Sanitises a metric namespace, name or label name the way Mixer did: one leading `/`
/// is dropped, then `/`, `.` and space become `_` and `-` is removed.
pub fn sanitize(s: &str) -> String {
    let s = s.strip_prefix('/').unwrap_or(s);
    s.chars()
        .filter(|c| *c != '-')
        .map(|c| match c {
            '/' | '.' | ' ' => '_',
            c => c,
        })
        .collect()
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Validates params (and the instances routed to the handler) into a [`Config`],
/// reporting every problem with its field path.
pub fn validate(input: &ValidateInput<'_>) -> Result<Config, Vec<ParamError>> {
    let p: Params = decode_object(input.params)?;
    let mut errors = Vec::new();

    let max_series = match p.max_series {
        None => Some(DEFAULT_MAX_SERIES),
        Some(0) => None,
        Some(n) if n > 0 => Some(n as u64),
        Some(n) => {
            errors.push(params::error(
                "params.maxSeries",
                format!("must not be negative (0 means unlimited), found {n}"),
            ));
            None
        }
    };

    let expiration = p
        .metrics_expiration_policy
        .and_then(|policy| expiration_policy(policy, &mut errors));

    // Instances named by some entry, valid or not (an invalid entry has its own errors).
    let mut configured: BTreeSet<String> = p
        .metrics
        .failed()
        .filter_map(|raw| {
            raw.get("instanceName")
                .or_else(|| raw.get("instance_name"))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .collect();
    let entries = p.metrics.into_decoded("params.metrics", &mut errors);
    configured.extend(entries.iter().map(|(_, m)| m.instance_name.clone()));
    let mut metrics: Vec<(usize, Metric)> = Vec::new();
    // instance name / full name ⇒ index of the first entry that used it.
    let mut by_instance: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for (i, info) in entries {
        let field = format!("params.metrics[{i}]");
        let Some(metric) = metric(&field, info, &mut errors) else {
            continue;
        };
        if let Some(first) = by_instance.get(&metric.instance_name) {
            errors.push(params::error(
                format!("{field}.instanceName"),
                format!(
                    "instance '{}' is already exported by metrics[{first}]",
                    metric.instance_name
                ),
            ));
            continue;
        }
        if let Some(first) = by_name.get(&metric.full_name) {
            errors.push(params::error(
                format!("{field}.name"),
                format!(
                    "metric name '{}' is already used by metrics[{first}]",
                    metric.full_name
                ),
            ));
            continue;
        }
        by_instance.insert(metric.instance_name.clone(), i);
        by_name.insert(metric.full_name.clone(), i);
        metrics.push((i, metric));
    }

    check_instances(input, &metrics, &configured, &mut errors);

    if errors.is_empty() {
        Ok(Config {
            metrics: metrics.into_iter().map(|(_, m)| m).collect(),
            expiration,
            max_series,
        })
    } else {
        Err(errors)
    }
}

fn expiration_policy(
    policy: MetricsExpirationPolicy,
    errors: &mut Vec<ParamError>,
) -> Option<ExpirationPolicy> {
    const FIELD: &str = "params.metricsExpirationPolicy";
    let expiry = match policy.metrics_expiry_duration {
        Some(d) if !d.is_zero() => d,
        _ => {
            errors.push(params::error(
                format!("{FIELD}.metricsExpiryDuration"),
                "must be greater than 0 when metricsExpirationPolicy is given (e.g. \"10m\")",
            ));
            return None;
        }
    };
    let check_interval = match policy.expiry_check_interval_duration {
        Some(d) if !d.is_zero() => d,
        _ => Some(expiry / 2).filter(|d| !d.is_zero()).unwrap_or(expiry),
    };
    Some(ExpirationPolicy {
        expiry,
        check_interval,
    })
}

fn metric(field: &str, info: MetricInfo, errors: &mut Vec<ParamError>) -> Option<Metric> {
    let before = errors.len();
    if info.instance_name.is_empty() {
        errors.push(params::error(
            format!("{field}.instanceName"),
            "required: the fully qualified name of the metric instance to export \
             (e.g. requestcount.instance.istio-system)",
        ));
    }

    let namespace = if info.namespace.is_empty() {
        DEFAULT_NAMESPACE.to_owned()
    } else {
        sanitize(&info.namespace)
    };
    let written_name = if info.name.is_empty() {
        &info.instance_name
    } else {
        &info.name
    };
    let full_name = format!("{namespace}_{}", sanitize(written_name));
    if !info.instance_name.is_empty() && !valid_metric_name(&full_name) {
        let which = if !info.name.is_empty() {
            "name"
        } else {
            "namespace"
        };
        errors.push(params::error(
            format!("{field}.{which}"),
            format!(
                "'{full_name}' is not a valid Prometheus metric name \
                 (letters, digits, '_' and ':', not starting with a digit)"
            ),
        ));
    }
    let help = if info.description.is_empty() {
        written_name.clone()
    } else {
        info.description.clone()
    };

    let kind = match info.kind {
        Kind::Unspecified => {
            errors.push(params::error(
                format!("{field}.kind"),
                "required: one of GAUGE, COUNTER, DISTRIBUTION (UNSPECIFIED is not allowed)",
            ));
            None
        }
        Kind::Gauge => Some(MetricKind::Gauge),
        Kind::Counter => Some(MetricKind::Counter),
        Kind::Distribution => buckets(&format!("{field}.buckets"), info.buckets.as_ref(), errors)
            .map(|buckets| MetricKind::Distribution { buckets }),
    };
    if info.buckets.is_some() && matches!(info.kind, Kind::Gauge | Kind::Counter) {
        errors.push(params::error(
            format!("{field}.buckets"),
            format!(
                "buckets are only allowed for DISTRIBUTION metrics; this metric is {}",
                info.kind
            ),
        ));
    }

    let mut label_names = Vec::with_capacity(info.label_names.len());
    let mut seen = BTreeMap::new();
    for (j, raw) in info.label_names.iter().enumerate() {
        let label = sanitize(raw);
        let lf = format!("{field}.labelNames[{j}]");
        if !valid_label_name(&label) {
            errors.push(params::error(
                lf,
                format!(
                    "'{label}' (from {raw:?}) is not a valid Prometheus label name \
                     (letters, digits and '_', not starting with a digit)"
                ),
            ));
        } else if label.starts_with("__") {
            errors.push(params::error(
                lf,
                format!("label names starting with '__' are reserved by Prometheus: '{label}'"),
            ));
        } else if label == "le" && info.kind == Kind::Distribution {
            errors.push(params::error(
                lf,
                "'le' is reserved for the bucket bound of DISTRIBUTION metrics",
            ));
        } else if let Some(first) = seen.insert(label.clone(), j) {
            errors.push(params::error(
                lf,
                format!(
                    "duplicate label '{label}' (labelNames[{first}] is the same after sanitising)"
                ),
            ));
        } else {
            label_names.push(label);
        }
    }

    if errors.len() != before {
        return None;
    }
    Some(Metric {
        instance_name: info.instance_name,
        full_name,
        help,
        kind: kind?,
        label_names,
    })
}

fn buckets(
    field: &str,
    def: Option<&BucketsDefinition>,
    errors: &mut Vec<ParamError>,
) -> Option<Vec<f64>> {
    let Some(def) = def else {
        return Some(DEFAULT_BUCKETS.to_vec());
    };
    let set: Vec<&str> = [
        def.linear_buckets.is_some().then_some("linearBuckets"),
        def.exponential_buckets
            .is_some()
            .then_some("exponentialBuckets"),
        def.explicit_buckets.is_some().then_some("explicitBuckets"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if set.len() > 1 {
        errors.push(params::error(
            field,
            format!(
                "at most one of linearBuckets, exponentialBuckets, explicitBuckets may be set; found {}",
                set.join(", ")
            ),
        ));
        return None;
    }
    let before = errors.len();
    let bounds = if let Some(l) = &def.linear_buckets {
        let f = format!("{field}.linearBuckets");
        count_ok(&f, l.num_finite_buckets, errors);
        if !(l.width > 0.0 && l.width.is_finite()) {
            errors.push(params::error(
                format!("{f}.width"),
                format!("must be greater than 0, found {}", l.width),
            ));
        }
        if !l.offset.is_finite() {
            errors.push(params::error(
                format!("{f}.offset"),
                format!("must be a finite number, found {}", l.offset),
            ));
        }
        if errors.len() != before {
            return None;
        }
        (0..=l.num_finite_buckets)
            .map(|i| l.offset + l.width * f64::from(i))
            .collect()
    } else if let Some(e) = &def.exponential_buckets {
        let f = format!("{field}.exponentialBuckets");
        count_ok(&f, e.num_finite_buckets, errors);
        if !(e.growth_factor > 1.0 && e.growth_factor.is_finite()) {
            errors.push(params::error(
                format!("{f}.growthFactor"),
                format!("must be greater than 1, found {}", e.growth_factor),
            ));
        }
        if !(e.scale > 0.0 && e.scale.is_finite()) {
            errors.push(params::error(
                format!("{f}.scale"),
                format!("must be greater than 0, found {}", e.scale),
            ));
        }
        if errors.len() != before {
            return None;
        }
        (0..=e.num_finite_buckets)
            .map(|i| e.scale * e.growth_factor.powi(i))
            .collect()
    } else if let Some(x) = &def.explicit_buckets {
        let f = format!("{field}.explicitBuckets.bounds");
        if x.bounds.is_empty() {
            errors.push(params::error(f, "at least one bound is required"));
            return None;
        }
        for (j, b) in x.bounds.iter().enumerate() {
            if !b.is_finite() {
                errors.push(params::error(
                    format!("{f}[{j}]"),
                    format!("bounds must be finite numbers, found {b}"),
                ));
            } else if j > 0 && *b <= x.bounds[j - 1] {
                errors.push(params::error(
                    format!("{f}[{j}]"),
                    format!(
                        "bounds must be strictly increasing: {b} follows {}",
                        x.bounds[j - 1]
                    ),
                ));
            }
        }
        if errors.len() != before {
            return None;
        }
        x.bounds.clone()
    } else {
        // `buckets: {}`: nothing chosen, the defaults apply.
        DEFAULT_BUCKETS.to_vec()
    };
    if let Some(j) = bounds.iter().position(|b: &f64| !b.is_finite()) {
        errors.push(params::error(
            field,
            format!("bucket bound {j} overflows to {}", bounds[j]),
        ));
        return None;
    }
    Some(bounds)
}

fn count_ok(field: &str, n: i32, errors: &mut Vec<ParamError>) {
    if n <= 0 {
        errors.push(params::error(
            format!("{field}.numFiniteBuckets"),
            format!("must be greater than 0, found {n}"),
        ));
    } else if n > MAX_FINITE_BUCKETS {
        errors.push(params::error(
            format!("{field}.numFiniteBuckets"),
            format!("must be at most {MAX_FINITE_BUCKETS}, found {n}"),
        ));
    }
}

/// Every metric instance routed to the handler must have a `metrics[]` entry whose
/// labels are exactly its dimension names.
fn check_instances(
    input: &ValidateInput<'_>,
    metrics: &[(usize, Metric)],
    configured: &BTreeSet<String>,
    errors: &mut Vec<ParamError>,
) {
    for inst in input.instances {
        if inst.kind() != TemplateKind::Metric {
            continue;
        }
        let Some((i, metric)) = metrics.iter().find(|(_, m)| m.instance_name == inst.name()) else {
            if configured.contains(inst.name()) {
                continue;
            }
            errors.push(params::error(
                "params.metrics",
                format!(
                    "instance '{}' is routed to handler '{}' but no metrics[] entry has \
                     instanceName '{}'",
                    inst.name(),
                    input.handler,
                    inst.name()
                ),
            ));
            continue;
        };
        let dims: BTreeSet<String> = inst
            .map_field_types("dimensions")
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        let labels: BTreeSet<String> = metric.label_names.iter().cloned().collect();
        if dims == labels {
            continue;
        }
        let missing: Vec<&String> = labels.difference(&dims).collect();
        let extra: Vec<&String> = dims.difference(&labels).collect();
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("labels with no such dimension: {}", list(missing)));
        }
        if !extra.is_empty() {
            problems.push(format!("dimensions with no such label: {}", list(extra)));
        }
        errors.push(params::error(
            format!("params.metrics[{i}].labelNames"),
            format!(
                "metric '{}' does not match the dimensions of instance '{}': {}",
                metric.full_name,
                inst.name(),
                problems.join("; ")
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata;
    use super::*;
    use expr_lang::{FunctionTable, Manifest};
    use serde_json::{Value as Json, json};
    use templates::InstanceBuilder;

    fn run(params: &Json, instances: &[&InstanceBuilder]) -> Result<Config, Vec<ParamError>> {
        validate(&ValidateInput {
            handler: "prometheus.istio-system",
            params,
            instances,
        })
    }

    fn ok(params: Json) -> Config {
        run(&params, &[]).unwrap_or_else(|e| panic!("{e:#?}"))
    }

    /// The metric exporting instance `instance_name`.
    fn metric_for<'c>(c: &'c Config, instance_name: &str) -> Option<&'c Metric> {
        c.metrics.iter().find(|m| m.instance_name == instance_name)
    }

    fn errs(params: Json) -> Vec<ParamError> {
        run(&params, &[]).unwrap_err()
    }

    /// A metric instance with constant expressions for `dims`.
    fn instance(name: &str, dims: &[&str]) -> InstanceBuilder {
        let dimensions: serde_json::Map<String, Json> = dims
            .iter()
            .map(|d| ((*d).to_owned(), json!("\"x\"")))
            .collect();
        InstanceBuilder::compile(
            name,
            TemplateKind::Metric,
            &json!({"value": "1", "dimensions": dimensions}),
            None,
            &Manifest::new(),
            &FunctionTable::standard(),
        )
        .unwrap()
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
        for (source, params) in testdata::prometheus_params() {
            let c = run(&params, &[]).unwrap_or_else(|e| panic!("{source}: {e:#?}"));
            assert!(!c.metrics.is_empty(), "{source}");
        }
    }

    #[test]
    fn default_config_against_its_instances() {
        for (version, dims) in [
            ("1.1", testdata::DIMS_V1_1),
            ("1.4", testdata::DIMS_V1_4),
            ("1.6", testdata::DIMS_V1_6),
        ] {
            let params = testdata::prometheus_params()
                .into_iter()
                .find(|(s, _)| s.starts_with(version) && s.contains("config-rendered"))
                .unwrap()
                .1;
            let built: Vec<InstanceBuilder> = dims.iter().map(|(n, d)| instance(n, d)).collect();
            let refs: Vec<&InstanceBuilder> = built.iter().collect();
            let c = run(&params, &refs).unwrap_or_else(|e| panic!("{version}: {e:#?}"));
            assert_eq!(c.metrics.len(), 8);
            assert_eq!(
                c.expiration,
                Some(ExpirationPolicy {
                    expiry: Duration::from_secs(600),
                    check_interval: Duration::from_secs(300)
                })
            );
        }
    }

    #[test]
    fn default_1_4_config_shape() {
        let params = testdata::prometheus_params()
            .into_iter()
            .find(|(s, _)| s.starts_with("1.4.10/install") && s.contains("config-rendered"))
            .unwrap()
            .1;
        let c = ok(params);
        let names: Vec<&str> = c.metrics.iter().map(|m| m.full_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "istio_requests_total",
                "istio_request_duration_seconds",
                "istio_request_bytes",
                "istio_response_bytes",
                "istio_tcp_sent_bytes_total",
                "istio_tcp_received_bytes_total",
                "istio_tcp_connections_opened_total",
                "istio_tcp_connections_closed_total",
            ]
        );
        let m = metric_for(&c, "requestsize.instance.istio-system").unwrap();
        assert_eq!(m.help, "request_bytes");
        assert_eq!(
            m.kind,
            MetricKind::Distribution {
                buckets: vec![1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8]
            }
        );
        assert_eq!(m.label_names.len(), 20);
        assert_eq!(
            metric_for(&c, "requestduration.instance.istio-system")
                .unwrap()
                .kind,
            MetricKind::Distribution {
                buckets: DEFAULT_BUCKETS.to_vec()
            }
        );
        assert_eq!(c.metrics[0].kind, MetricKind::Counter);
        assert_eq!(c.max_series, Some(DEFAULT_MAX_SERIES));
    }

    #[test]
    fn camel_and_snake_case() {
        let camel = ok(json!({
            "metrics": [{
                "instanceName": "a.instance.ns", "kind": "DISTRIBUTION", "labelNames": ["x"],
                "buckets": {"linearBuckets": {"numFiniteBuckets": 2, "width": 5, "offset": 1}}
            }],
            "metricsExpirationPolicy": {"metricsExpiryDuration": "1m", "expiryCheckIntervalDuration": "5s"},
            "maxSeries": 0
        }));
        let snake = ok(json!({
            "metrics": [{
                "instance_name": "a.instance.ns", "kind": 3, "label_names": ["x"],
                "buckets": {"linear_buckets": {"num_finite_buckets": 2, "width": 5, "offset": 1}}
            }],
            "metrics_expiration_policy": {"metrics_expiry_duration": "1m", "expiry_check_interval_duration": "5s"},
            "max_series": 0
        }));
        assert_eq!(camel, snake);
        assert_eq!(
            camel.metrics[0].kind,
            MetricKind::Distribution {
                buckets: vec![1.0, 6.0, 11.0]
            }
        );
        assert_eq!(camel.metrics[0].full_name, "istio_a_instance_ns");
        assert_eq!(camel.metrics[0].help, "a.instance.ns");
        assert_eq!(camel.max_series, None);
        assert_eq!(
            camel.expiration.unwrap().check_interval,
            Duration::from_secs(5)
        );
        let e = ok(json!({"metrics": [{
            "instance_name": "a", "kind": "distribution",
            "buckets": {"exponential_buckets": {"num_finite_buckets": 3, "growth_factor": 2, "scale": 0.5}}
        }]}));
        assert_eq!(
            e.metrics[0].kind,
            MetricKind::Distribution {
                buckets: vec![0.5, 1.0, 2.0, 4.0]
            }
        );
    }

    #[test]
    fn unknown_fields_rejected() {
        let e = errs(json!({"metrics": [], "bogus": 1}));
        has(&e, "params.bogus", "unknown field `bogus`");
        let e = errs(json!({"metrics": [
            {"instance_name": "a", "kind": "COUNTER"},
            {"instance_name": "b", "kind": "COUNTER", "labels": []}
        ]}));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].field.starts_with("params.metrics[1]"), "{e:#?}");
        assert!(e[0].message.contains("unknown field `labels`"));
        let e = errs(json!({"metricsExpirationPolicy": {"expiry": "1m"}}));
        assert!(
            e[0].field.starts_with("params.metricsExpirationPolicy"),
            "{e:#?}"
        );
    }

    #[test]
    fn every_error_is_reported() {
        let e = errs(json!({"metrics": [
            {"instance_name": "ok", "kind": "COUNTER"},
            {"instance_name": "a", "kind": "BOGUS"},
            {"instance_name": "b"},
            {"instance_name": "c", "kind": "UNSPECIFIED"},
            {"kind": "GAUGE"},
        ], "maxSeries": -1}));
        has(&e, "params.maxSeries", "must not be negative");
        has(&e, "params.metrics[1].kind", "unknown value \"BOGUS\"");
        has(&e, "params.metrics[2].kind", "UNSPECIFIED is not allowed");
        has(&e, "params.metrics[3].kind", "UNSPECIFIED is not allowed");
        has(&e, "params.metrics[4].instanceName", "required");
        assert_eq!(e.len(), 5, "{e:#?}");
    }

    #[test]
    fn bucket_rules() {
        let e = errs(json!({"metrics": [
            {"instance_name": "a", "kind": "COUNTER", "buckets": {"explicitBuckets": {"bounds": [1]}}},
            {"instance_name": "b", "kind": "DISTRIBUTION", "buckets": {
                "explicitBuckets": {"bounds": [1]}, "linearBuckets": {"numFiniteBuckets": 1, "width": 1}}},
            {"instance_name": "c", "kind": "DISTRIBUTION", "buckets": {"explicitBuckets": {"bounds": [1, 5, 5, 2]}}},
            {"instance_name": "d", "kind": "DISTRIBUTION", "buckets": {"explicitBuckets": {"bounds": []}}},
            {"instance_name": "e", "kind": "DISTRIBUTION", "buckets": {"linearBuckets": {"numFiniteBuckets": 0, "width": 0}}},
            {"instance_name": "f", "kind": "DISTRIBUTION", "buckets": {"exponentialBuckets": {"numFiniteBuckets": -1, "growthFactor": 1, "scale": 0}}},
            {"instance_name": "g", "kind": "DISTRIBUTION", "buckets": {"explicitBuckets": {"bounds": [1, "Infinity"]}}},
        ]}));
        has(
            &e,
            "params.metrics[0].buckets",
            "only allowed for DISTRIBUTION metrics; this metric is COUNTER",
        );
        has(&e, "params.metrics[1].buckets", "at most one of");
        has(
            &e,
            "params.metrics[2].buckets.explicitBuckets.bounds[2]",
            "strictly increasing: 5 follows 5",
        );
        has(
            &e,
            "params.metrics[2].buckets.explicitBuckets.bounds[3]",
            "strictly increasing: 2 follows 5",
        );
        has(
            &e,
            "params.metrics[3].buckets.explicitBuckets.bounds",
            "at least one bound",
        );
        has(
            &e,
            "params.metrics[4].buckets.linearBuckets.numFiniteBuckets",
            "greater than 0",
        );
        has(
            &e,
            "params.metrics[4].buckets.linearBuckets.width",
            "greater than 0",
        );
        has(
            &e,
            "params.metrics[5].buckets.exponentialBuckets.numFiniteBuckets",
            "greater than 0",
        );
        has(
            &e,
            "params.metrics[5].buckets.exponentialBuckets.growthFactor",
            "greater than 1",
        );
        has(
            &e,
            "params.metrics[5].buckets.exponentialBuckets.scale",
            "greater than 0",
        );
        has(
            &e,
            "params.metrics[6].buckets.explicitBuckets.bounds[1]",
            "finite",
        );
        assert_eq!(e.len(), 11, "{e:#?}");
        // `buckets: {}` on a distribution: default buckets.
        let c =
            ok(json!({"metrics": [{"instance_name": "a", "kind": "DISTRIBUTION", "buckets": {}}]}));
        assert_eq!(
            c.metrics[0].kind,
            MetricKind::Distribution {
                buckets: DEFAULT_BUCKETS.to_vec()
            }
        );
    }

    #[test]
    fn names_and_labels() {
        assert_eq!(sanitize("/a/b.c d-e"), "a_b_c_de");
        assert_eq!(sanitize("//x"), "_x");
        let c = ok(json!({"metrics": [{
            "namespace": "my-ns", "name": "/req.count", "instance_name": "a.instance.default",
            "kind": "GAUGE", "label_names": ["source.app", "dest-app", "/x y"], "description": "Requests"
        }]}));
        let m = &c.metrics[0];
        assert_eq!(m.full_name, "myns_req_count");
        assert_eq!(m.help, "Requests");
        assert_eq!(m.label_names, ["source_app", "destapp", "x_y"]);

        let e = errs(json!({"metrics": [
            {"name": "x!y", "instance_name": "a", "kind": "GAUGE"},
            {"name": "ok", "instance_name": "b", "kind": "GAUGE", "label_names": ["a", "a", "9z", "__x", "b:c"]},
            {"name": "h", "instance_name": "c", "kind": "DISTRIBUTION", "label_names": ["le"]},
            {"name": "ok", "instance_name": "d", "kind": "COUNTER"},
            {"name": "other", "instance_name": "a", "kind": "COUNTER"},
            {"namespace": "istio", "name": "o-k", "instance_name": "e", "kind": "COUNTER"},
        ]}));
        has(
            &e,
            "params.metrics[0].name",
            "'istio_x!y' is not a valid Prometheus metric name",
        );
        has(&e, "params.metrics[1].labelNames[1]", "duplicate label 'a'");
        has(
            &e,
            "params.metrics[1].labelNames[2]",
            "not a valid Prometheus label name",
        );
        has(&e, "params.metrics[1].labelNames[3]", "reserved");
        has(
            &e,
            "params.metrics[1].labelNames[4]",
            "not a valid Prometheus label name",
        );
        has(&e, "params.metrics[2].labelNames[0]", "'le' is reserved");
        has(
            &e,
            "params.metrics[5].name",
            "'istio_ok' is already used by metrics[3]",
        );
        // metrics[0] was invalid, so the later entry for instance `a` is not a duplicate.
        assert_eq!(e.len(), 7, "{e:#?}");
        let e = errs(json!({"metrics": [
            {"name": "x", "instance_name": "a", "kind": "COUNTER"},
            {"name": "y", "instance_name": "a", "kind": "COUNTER"},
        ]}));
        has(
            &e,
            "params.metrics[1].instanceName",
            "already exported by metrics[0]",
        );
    }

    #[test]
    fn expiration_policy_rules() {
        let e = errs(json!({"metricsExpirationPolicy": {}}));
        has(
            &e,
            "params.metricsExpirationPolicy.metricsExpiryDuration",
            "greater than 0",
        );
        let e = errs(json!({"metricsExpirationPolicy": {"metricsExpiryDuration": "0s"}}));
        has(
            &e,
            "params.metricsExpirationPolicy.metricsExpiryDuration",
            "greater than 0",
        );
        let e = errs(json!({"metricsExpirationPolicy": {"metricsExpiryDuration": "-1m"}}));
        has(
            &e,
            "params.metricsExpirationPolicy.metricsExpiryDuration",
            "negative",
        );
        let c = ok(json!({"metrics_expiration_policy": {"metrics_expiry_duration": "1ns"}}));
        assert_eq!(
            c.expiration.unwrap().check_interval,
            Duration::from_nanos(1)
        );
        assert_eq!(ok(json!({})).expiration, None);
        assert_eq!(ok(Json::Null).metrics, []);
    }

    #[test]
    fn routed_instances_must_match_labels() {
        let params = json!({"metrics": [
            {"name": "requests_total", "instance_name": "rc.instance.istio-system", "kind": "COUNTER",
             "label_names": ["source_app", "destination-app", "reporter"]},
            {"name": "other", "instance_name": "other.instance.istio-system", "kind": "COUNTER"},
        ]});
        // Label names are sanitised; dimension keys are not.
        let good = instance(
            "rc.instance.istio-system",
            &["reporter", "destinationapp", "source_app"],
        );
        let other = instance("other.instance.istio-system", &[]);
        assert!(run(&params, &[&good, &other]).is_ok());

        let bad = instance(
            "rc.instance.istio-system",
            &["reporter", "destination-app", "extra"],
        );
        let stray = instance("stray.instance.istio-system", &["a"]);
        let e = run(&params, &[&bad, &other, &stray]).unwrap_err();
        has(
            &e,
            "params.metrics[0].labelNames",
            "metric 'istio_requests_total' does not match the dimensions of instance \
             'rc.instance.istio-system': labels with no such dimension: [destinationapp, source_app]; \
             dimensions with no such label: [destination-app, extra]",
        );
        has(
            &e,
            "params.metrics",
            "instance 'stray.instance.istio-system' is routed to handler 'prometheus.istio-system' \
             but no metrics[] entry",
        );
        assert_eq!(e.len(), 2, "{e:#?}");

        // An invalid entry for a routed instance reports its own problem only.
        let params = json!({"metrics": [{"instance_name": "rc.instance.istio-system"}]});
        let e = run(&params, &[&good]).unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
        has(&e, "params.metrics[0].kind", "required");
        let params =
            json!({"metrics": [{"instanceName": "rc.instance.istio-system", "kind": "X"}]});
        let e = run(&params, &[&good]).unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
        has(&e, "params.metrics[0].kind", "unknown value");
    }

    #[test]
    fn null_fields_mean_unset() {
        let c = ok(json!({"metrics": [{
            "instance_name": "a", "kind": "COUNTER", "label_names": null, "name": null, "buckets": null
        }], "metricsExpirationPolicy": null, "maxSeries": null}));
        assert_eq!(c.metrics[0].full_name, "istio_a");
        assert_eq!(c.max_series, Some(DEFAULT_MAX_SERIES));
        assert!(
            validate(&ValidateInput {
                handler: "h",
                params: &json!([]),
                instances: &[],
            })
            .is_err()
        );
    }
}
