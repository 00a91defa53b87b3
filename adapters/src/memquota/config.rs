//! Params of the `memquota` adapter (`adapter.memquota.config.Params`, Istio 1.4) and
//! their validation into a [`Config`] a handler can be built from.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use templates::{ParamError, TemplateKind};

use crate::ValidateInput;
use crate::params::{self, opt_duration};
use crate::prometheus::pbjson::{Items, decode_object, int, nullable};

/// Default of [`Params::min_deduplication_duration`].
pub const DEFAULT_MIN_DEDUPLICATION_DURATION: Duration = Duration::from_secs(1);

/// The handler params, as written under a `memquota` handler's `params:`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The limits, one per quota instance. Every quota instance routed to this handler
    /// needs an entry (matched by `name`).
    #[serde(default)]
    pub quotas: Items<Quota>,

    /// How long the result of an allocation is remembered per deduplication id, so that
    /// a retried request is not charged twice. Default 1s; must be greater than 0.
    #[serde(
        rename = "minDeduplicationDuration",
        alias = "min_deduplication_duration",
        default,
        deserialize_with = "opt_duration"
    )]
    pub min_deduplication_duration: Option<Duration>,
}

/// The limit of one quota instance.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Required. The fully qualified name of the quota instance, e.g.
    /// `requestcountquota.instance.istio-system` (`requestcount.quota.istio-system` for a
    /// legacy `kind: quota` instance).
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,

    /// The most that can be allocated (per distinct set of dimension values).
    #[serde(
        rename = "maxAmount",
        alias = "max_amount",
        default,
        deserialize_with = "int"
    )]
    pub max_amount: i64,

    /// Length of the rolling window (rounded up to whole seconds). Unset or 0: a pool
    /// whose allocations never expire and are only returned by releases.
    #[serde(
        rename = "validDuration",
        alias = "valid_duration",
        default,
        deserialize_with = "opt_duration"
    )]
    pub valid_duration: Option<Duration>,

    /// Other limits for particular dimension values; the first override whose
    /// dimensions all match applies.
    #[serde(default)]
    pub overrides: Items<Override>,
}

/// A limit for particular dimension values.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Dimension name ⇒ value; every one must equal the instance's dimension (compared
    /// as text, after parsing the text into the dimension's type).
    #[serde(default, deserialize_with = "nullable")]
    pub dimensions: BTreeMap<String, String>,

    /// The most that can be allocated when this override applies.
    #[serde(
        rename = "maxAmount",
        alias = "max_amount",
        default,
        deserialize_with = "int"
    )]
    pub max_amount: i64,

    /// Window length when this override applies. Not inherited from the quota: unset
    /// or 0 makes the override a non-expiring pool.
    #[serde(
        rename = "validDuration",
        alias = "valid_duration",
        default,
        deserialize_with = "opt_duration"
    )]
    pub valid_duration: Option<Duration>,
}

/// Validated params: what a memquota handler is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The limits, in the order configured; names are unique.
    pub quotas: Vec<QuotaLimit>,
    /// Deduplication window (> 0).
    pub min_deduplication_duration: Duration,
}

impl Config {
    /// The limit of quota instance `name` (its fully qualified name).
    pub fn quota(&self, name: &str) -> Option<&QuotaLimit> {
        self.quotas.iter().find(|q| q.name == name)
    }
}

/// A validated [`Quota`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaLimit {
    pub name: String,
    /// ≥ 0.
    pub max_amount: i64,
    /// Zero: pool semantics (allocations never expire).
    pub valid_duration: Duration,
    pub overrides: Vec<OverrideLimit>,
}

/// A validated [`Override`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverrideLimit {
    pub dimensions: BTreeMap<String, String>,
    /// ≥ 0.
    pub max_amount: i64,
    /// Zero: pool semantics.
    pub valid_duration: Duration,
}

/// Validates params (and the instances routed to the handler) into a [`Config`],
/// reporting every problem with its field path.
pub fn validate(input: &ValidateInput<'_>) -> Result<Config, Vec<ParamError>> {
    let p: Params = decode_object(input.params)?;
    let mut errors = Vec::new();

    let min_deduplication_duration = p
        .min_deduplication_duration
        .unwrap_or(DEFAULT_MIN_DEDUPLICATION_DURATION);
    if min_deduplication_duration.is_zero() {
        errors.push(params::error(
            "params.minDeduplicationDuration",
            "deduplication window of 0s is invalid, must be > 0",
        ));
    }

    let mut quotas = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // Names of entries that did not decode: they have their own errors, so a routed
    // instance of that name is not reported again.
    let undecoded: BTreeSet<String> = p
        .quotas
        .failed()
        .filter_map(|raw| raw.get("name").and_then(|v| v.as_str()).map(str::to_owned))
        .collect();
    for (i, q) in p.quotas.into_decoded("params.quotas", &mut errors) {
        let field = format!("params.quotas[{i}]");
        let before = errors.len();
        if q.name.is_empty() {
            errors.push(params::error(
                format!("{field}.name"),
                "required: the fully qualified name of the quota instance \
                 (e.g. requestcountquota.instance.istio-system)",
            ));
        } else if let Some(first) = seen.insert(q.name.clone(), i) {
            errors.push(params::error(
                format!("{field}.name"),
                format!("quota '{}' is already defined by quotas[{first}]", q.name),
            ));
        }
        non_negative(&format!("{field}.maxAmount"), q.max_amount, &mut errors);
        let mut overrides = Vec::new();
        for (j, o) in q
            .overrides
            .into_decoded(&format!("{field}.overrides"), &mut errors)
        {
            non_negative(
                &format!("{field}.overrides[{j}].maxAmount"),
                o.max_amount,
                &mut errors,
            );
            overrides.push(OverrideLimit {
                dimensions: o.dimensions,
                max_amount: o.max_amount,
                valid_duration: o.valid_duration.unwrap_or_default(),
            });
        }
        if errors.len() == before {
            quotas.push(QuotaLimit {
                name: q.name,
                max_amount: q.max_amount,
                valid_duration: q.valid_duration.unwrap_or_default(),
                overrides,
            });
        }
    }

    check_routed_instances(
        input,
        seen.into_keys().chain(undecoded).collect(),
        &mut errors,
    );

    if errors.is_empty() {
        Ok(Config {
            quotas,
            min_deduplication_duration,
        })
    } else {
        Err(errors)
    }
}

fn non_negative(field: &str, n: i64, errors: &mut Vec<ParamError>) {
    if n < 0 {
        errors.push(params::error(
            field,
            format!("must not be negative, found {n}"),
        ));
    }
}

/// Mixer refused to build a quota handler when a quota instance routed to it had no
/// limit (`did not find limit defined for quota X`). Shared with `redisquota`.
pub(crate) fn check_routed_instances(
    input: &ValidateInput<'_>,
    names: BTreeSet<String>,
    errors: &mut Vec<ParamError>,
) {
    for inst in input.instances {
        if inst.kind() == TemplateKind::Quota && !names.contains(inst.name()) {
            errors.push(params::error(
                "params.quotas",
                format!(
                    "did not find limit defined for quota '{}': the instance is routed to \
                     handler '{}' but no quotas[] entry has that name",
                    inst.name(),
                    input.handler
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expr_lang::{FunctionTable, Manifest};
    use serde_json::{Value as Json, json};
    use templates::InstanceBuilder;

    fn run(params: &Json, instances: &[&InstanceBuilder]) -> Result<Config, Vec<ParamError>> {
        validate(&ValidateInput {
            handler: "quotahandler.istio-system",
            params,
            instances,
        })
    }

    fn ok(params: Json) -> Config {
        run(&params, &[]).unwrap_or_else(|e| panic!("{e:#?}"))
    }

    fn errs(params: Json) -> Vec<ParamError> {
        run(&params, &[]).unwrap_err()
    }

    fn has(errors: &[ParamError], field: &str, text: &str) {
        assert!(
            errors
                .iter()
                .any(|e| e.field == field && e.message.contains(text)),
            "no error at {field} containing {text:?} in {errors:#?}"
        );
    }

    fn quota_instance(name: &str) -> InstanceBuilder {
        InstanceBuilder::compile(
            name,
            TemplateKind::Quota,
            &json!({"dimensions": {"destination": "\"ratings\""}}),
            None,
            &Manifest::new(),
            &FunctionTable::standard(),
        )
        .unwrap()
    }

    /// Every distinct memquota handler's params in the real Istio configs.
    fn real_configs() -> Vec<(&'static str, Json)> {
        vec![
            (
                "1.1.17 + 1.4.10 testdata quota.yaml (memquota); \
                 1.1.17 bookinfo mixer-rule-ratings-ratelimit.yaml (handler)",
                json!({
                    "quotas": [{
                        "name": "requestcount.quota.istio-system",
                        "maxAmount": 5000,
                        "validDuration": "1s",
                        "overrides": [
                            {"dimensions": {"destination": "ratings", "source": "reviews"}, "maxAmount": 1, "validDuration": "1s"},
                            {"dimensions": {"destination": "ratings"}, "maxAmount": 100, "validDuration": "1s"}
                        ]
                    }]
                }),
            ),
            (
                "1.4.10 bookinfo mixer-rule-productpage-ratelimit-crd.yaml (handler)",
                json!({
                    "quotas": [{
                        "name": "requestcount.quota.istio-system",
                        "maxAmount": 500,
                        "validDuration": "1s",
                        "overrides": [
                            {"dimensions": {"destination": "reviews"}, "maxAmount": 1, "validDuration": "5s"},
                            {"dimensions": {"destination": "productpage", "source": "10.28.11.20"}, "maxAmount": 500, "validDuration": "1s"},
                            {"dimensions": {"destination": "productpage"}, "maxAmount": 2, "validDuration": "5s"}
                        ]
                    }]
                }),
            ),
            (
                "1.4.10 bookinfo mixer-rule-productpage-ratelimit.yaml (quotahandler)",
                json!({
                    "quotas": [{
                        "name": "requestcountquota.instance.istio-system",
                        "maxAmount": 500,
                        "validDuration": "1s",
                        "overrides": [
                            {"dimensions": {"destination": "reviews"}, "maxAmount": 1, "validDuration": "5s"},
                            {"dimensions": {"destination": "productpage", "source": "10.28.11.20"}, "maxAmount": 500, "validDuration": "1s"},
                            {"dimensions": {"destination": "productpage"}, "maxAmount": 2, "validDuration": "5s"}
                        ]
                    }]
                }),
            ),
            (
                "1.4.10 bookinfo mixer-rule-ratings-ratelimit.yaml (quotahandler)",
                json!({
                    "quotas": [{
                        "name": "requestcountquota.instance.istio-system",
                        "maxAmount": 5000,
                        "validDuration": "1s",
                        "overrides": [
                            {"dimensions": {"destination": "ratings", "source": "reviews"}, "maxAmount": 1, "validDuration": "1s"},
                            {"dimensions": {"destination": "ratings"}, "maxAmount": 100, "validDuration": "1s"}
                        ]
                    }]
                }),
            ),
        ]
    }

    #[test]
    fn real_istio_configs_validate() {
        for (source, params) in real_configs() {
            let name = params["quotas"][0]["name"].as_str().unwrap().to_owned();
            let inst = quota_instance(&name);
            run(&params, &[&inst]).unwrap_or_else(|e| panic!("{source}: {e:#?}"));
        }
        let c = ok(real_configs()[3].1.clone());
        let q = c.quota("requestcountquota.instance.istio-system").unwrap();
        assert_eq!(
            (q.max_amount, q.valid_duration),
            (5000, Duration::from_secs(1))
        );
        assert_eq!(q.overrides.len(), 2);
        assert_eq!(q.overrides[0].dimensions["source"], "reviews");
        assert_eq!(q.overrides[1].max_amount, 100);
        assert_eq!(c.min_deduplication_duration, Duration::from_secs(1));
    }

    #[test]
    fn camel_and_snake_case() {
        let camel = ok(json!({
            "quotas": [{"name": "q", "maxAmount": 5, "validDuration": "2s",
                        "overrides": [{"dimensions": {"a": "b"}, "maxAmount": 1}]}],
            "minDeduplicationDuration": "3s"
        }));
        let snake = ok(json!({
            "quotas": [{"name": "q", "max_amount": "5", "valid_duration": "2s",
                        "overrides": [{"dimensions": {"a": "b"}, "max_amount": 1, "valid_duration": null}]}],
            "min_deduplication_duration": "3s"
        }));
        assert_eq!(camel, snake);
        // An override without validDuration is a pool: the quota's duration is not inherited.
        assert_eq!(camel.quotas[0].overrides[0].valid_duration, Duration::ZERO);
        assert_eq!(camel.min_deduplication_duration, Duration::from_secs(3));
        // No validDuration on the quota: a pool too.
        assert_eq!(
            ok(json!({"quotas": [{"name": "q"}]})).quotas[0].valid_duration,
            Duration::ZERO
        );
    }

    #[test]
    fn every_error_is_reported() {
        let e = errs(json!({
            "quotas": [
                {"name": "a", "maxAmount": -1, "overrides": [
                    {"dimensions": {"x": "y"}, "maxAmount": -2},
                    {"dimensions": {"x": 1}},
                ]},
                {"maxAmount": 1},
                {"name": "a", "maxAmount": 1},
                {"name": "b", "validDuration": "-1s"},
                {"name": "c", "maxAmount": 1.5},
            ],
            "minDeduplicationDuration": "0s"
        }));
        has(&e, "params.minDeduplicationDuration", "must be > 0");
        has(
            &e,
            "params.quotas[0].maxAmount",
            "must not be negative, found -1",
        );
        has(
            &e,
            "params.quotas[0].overrides[0].maxAmount",
            "must not be negative, found -2",
        );
        has(
            &e,
            "params.quotas[0].overrides[1].dimensions.x",
            "invalid type",
        );
        has(&e, "params.quotas[1].name", "required");
        has(
            &e,
            "params.quotas[2].name",
            "quota 'a' is already defined by quotas[0]",
        );
        has(&e, "params.quotas[3].validDuration", "negative");
        has(&e, "params.quotas[4].maxAmount", "expected an integer");
        assert_eq!(e.len(), 8, "{e:#?}");
    }

    #[test]
    fn routed_instances_need_a_limit() {
        let params = json!({"quotas": [{"name": "requestcountquota.instance.istio-system", "maxAmount": 1}]});
        let known = quota_instance("requestcountquota.instance.istio-system");
        let unknown = quota_instance("other.instance.istio-system");
        assert!(run(&params, &[&known]).is_ok());
        let e = run(&params, &[&known, &unknown]).unwrap_err();
        has(
            &e,
            "params.quotas",
            "did not find limit defined for quota 'other.instance.istio-system'",
        );
        assert_eq!(e.len(), 1);
        // A quota entry that does not decode is not reported a second time as missing.
        let bad = json!({"quotas": [{"name": "other.instance.istio-system", "maxAmount": "lots"}]});
        let e = run(&bad, &[&unknown]).unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
        has(&e, "params.quotas[0].maxAmount", "expected an integer");
        // A limit no routed instance uses is fine (Mixer accepted it).
        assert!(run(&json!({"quotas": [{"name": "unused"}]}), &[]).is_ok());
    }

    #[test]
    fn unknown_fields_rejected() {
        let e = errs(json!({"quotas": [{"name": "a", "bucketDuration": "1s"}]}));
        has(
            &e,
            "params.quotas[0].bucketDuration",
            "unknown field `bucketDuration`",
        );
        let e = errs(json!({"redisServerUrl": "x:1"}));
        has(&e, "params.redisServerUrl", "unknown field");
        let e = errs(json!({"quotas": [{"name": "a", "overrides": [{"dims": {}}]}]}));
        has(&e, "params.quotas[0].overrides[0].dims", "unknown field");
    }
}
