//! Params of the `redisquota` adapter (`adapter.redisquota.config.Params`, Istio 1.4)
//! and their validation into a [`Config`] a handler can be built from. Validation is
//! pure: unlike Mixer, it does not ping Redis (the handler connects in the background).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use templates::ParamError;

use crate::memquota::config::check_routed_instances;
use crate::params::{self, opt_duration};
use crate::prometheus::pbjson::{Items, decode_object, int, nullable, opt_int, pb_enum};
use crate::{ValidateInput, Validation};

/// Default of [`Params::redis_server_url`].
pub const DEFAULT_REDIS_SERVER_URL: &str = "localhost:6379";
/// Default of [`Params::connection_pool_size`].
pub const DEFAULT_CONNECTION_POOL_SIZE: u32 = 10;
/// Shortest `bucketDuration`: bucket indexes must stay below 2^53.
pub const MIN_BUCKET_DURATION: Duration = Duration::from_micros(1);

pb_enum! {
    /// `Params.QuotaAlgorithm`: how a quota's window moves.
    pub enum QuotaAlgorithm {
        /// The window starts at the first allocation and lasts `validDuration`; it may
        /// let through up to twice the limit around a window boundary. The default.
        FixedWindow = "FIXED_WINDOW",
        /// A window of `validDuration` sliding in steps of `bucketDuration`; more
        /// precise, at the cost of more Redis work.
        RollingWindow = "ROLLING_WINDOW",
    }
}

pb_enum! {
    /// Extension (not in Istio): what a quota check answers when Redis cannot be used.
    pub enum FailureMode {
        /// Allow: the requested amount is granted (the default).
        Open = "OPEN",
        /// Deny: nothing is granted and the status is RESOURCE_EXHAUSTED with the
        /// message `redisquota: Redis is unavailable` (Mixer answered UNAVAILABLE).
        Closed = "CLOSED",
    }
}

/// The handler params, as written under a `redisquota` handler's `params:`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The limits, one per quota instance; at least one. Every quota instance routed
    /// to this handler needs an entry (matched by `name`).
    #[serde(default)]
    pub quotas: Items<Quota>,

    /// Redis server address, `host:port`. Default `localhost:6379`.
    #[serde(rename = "redisServerUrl", alias = "redis_server_url", default)]
    pub redis_server_url: Option<String>,

    /// Maximum number of connections to Redis. Default 10; 0 also means the default.
    #[serde(
        rename = "connectionPoolSize",
        alias = "connection_pool_size",
        default,
        deserialize_with = "opt_int"
    )]
    pub connection_pool_size: Option<i64>,

    /// Extension (not in Istio): `OPEN` (default) allows requests when Redis cannot be
    /// reached or fails; `CLOSED` denies them (Mixer's behaviour).
    #[serde(rename = "failureMode", alias = "failure_mode", default)]
    pub failure_mode: FailureMode,
}

/// The limit of one quota instance.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Required. The fully qualified name of the quota instance (case-sensitive), e.g.
    /// `requestcountquota.instance.istio-system`.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,

    /// The most that can be allocated per window (per distinct set of dimension
    /// values).
    #[serde(
        rename = "maxAmount",
        alias = "max_amount",
        default,
        deserialize_with = "int"
    )]
    pub max_amount: i64,

    /// Window length; must be greater than 0.
    #[serde(
        rename = "validDuration",
        alias = "valid_duration",
        default,
        deserialize_with = "opt_duration"
    )]
    pub valid_duration: Option<Duration>,

    /// `ROLLING_WINDOW` only: the step of the window; greater than 0 and shorter than
    /// `validDuration`. Ignored for `FIXED_WINDOW`.
    #[serde(
        rename = "bucketDuration",
        alias = "bucket_duration",
        default,
        deserialize_with = "opt_duration"
    )]
    pub bucket_duration: Option<Duration>,

    /// `FIXED_WINDOW` (default) or `ROLLING_WINDOW`, by name or number. An unknown value
    /// is reported as a warning and `FIXED_WINDOW` is used, as Mixer did.
    #[serde(rename = "rateLimitAlgorithm", alias = "rate_limit_algorithm", default)]
    pub rate_limit_algorithm: Option<serde_json::Value>,

    /// Other limits for particular dimension values; the first override whose
    /// dimensions all match applies. Overrides share the quota's window.
    #[serde(default)]
    pub overrides: Items<Override>,
}

/// A limit for particular dimension values.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Dimension name ⇒ value, at least one; every one must equal the instance's
    /// dimension as text (a dimension the instance lacks never matches).
    #[serde(default, deserialize_with = "nullable")]
    pub dimensions: BTreeMap<String, String>,

    /// The most that can be allocated per window when this override applies; greater
    /// than 0.
    #[serde(
        rename = "maxAmount",
        alias = "max_amount",
        default,
        deserialize_with = "int"
    )]
    pub max_amount: i64,
}

/// Validated params: what a redisquota handler is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `host:port`.
    pub redis_server_url: String,
    /// > 0.
    pub connection_pool_size: u32,
    pub failure_mode: FailureMode,
    /// The limits, in the order configured; names are unique; at least one.
    pub quotas: Vec<QuotaLimit>,
}

/// A validated [`Quota`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaLimit {
    pub name: String,
    /// ≥ 0.
    pub max_amount: i64,
    /// > 0.
    pub valid_duration: Duration,
    pub algorithm: Algorithm,
    pub overrides: Vec<OverrideLimit>,
}

/// A validated window algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    FixedWindow,
    /// `0 < bucket_duration < valid_duration`.
    RollingWindow {
        bucket_duration: Duration,
    },
}

/// A validated [`Override`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverrideLimit {
    /// Non-empty.
    pub dimensions: BTreeMap<String, String>,
    /// > 0.
    pub max_amount: i64,
}

/// Checks a Redis address: `host:port` (IPv6 hosts in brackets), port 1–65535.
pub fn check_address(addr: &str) -> Result<(), String> {
    let bad = |why: &str| format!("invalid Redis address {addr:?}: {why}; expected host:port");
    if addr.contains("://") {
        return Err(bad("a URL scheme is not allowed"));
    }
    // Like Redis clients, an address without a port means the default port.
    let (host, port) = if addr.starts_with('[') || addr.matches(':').count() == 1 {
        match addr.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || addr.starts_with('[') => (h, p),
            _ => (addr, "6379"),
        }
    } else {
        (addr, "6379")
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|h| expr_lang::golib::net::parse_ip(h).is_some() && h.contains(':'))
    } else {
        !host.is_empty()
            && !host.contains(':')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if !host_ok {
        return Err(bad("the host is not valid"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(bad("the port is not a number from 1 to 65535")),
    }
}

/// Validates params (and the instances routed to the handler) into a [`Config`],
/// reporting every problem with its field path.
pub fn validate(input: &ValidateInput<'_>) -> Validation<Config> {
    let mut warnings = Vec::new();
    let config = validate_into(input, &mut warnings);
    Validation { config, warnings }
}

/// [`validate`], with the warnings pushed to `warnings` whether or not it succeeds.
fn validate_into(
    input: &ValidateInput<'_>,
    warnings: &mut Vec<ParamError>,
) -> Result<Config, Vec<ParamError>> {
    let p: Params = decode_object(input.params)?;
    let mut errors = Vec::new();

    let redis_server_url = p
        .redis_server_url
        .unwrap_or_else(|| DEFAULT_REDIS_SERVER_URL.to_owned());
    if redis_server_url.is_empty() {
        errors.push(params::error(
            "params.redisServerUrl",
            "redis_server_url should not be empty",
        ));
    } else if let Err(e) = check_address(&redis_server_url) {
        errors.push(params::error("params.redisServerUrl", e));
    }

    let connection_pool_size = match p.connection_pool_size {
        None | Some(0) => DEFAULT_CONNECTION_POOL_SIZE,
        Some(n) => u32::try_from(n).unwrap_or_else(|_| {
            errors.push(params::error(
                "params.connectionPoolSize",
                if n < 0 {
                    format!("connection_pool_size of {n} is invalid, must be > 0")
                } else {
                    format!("connection_pool_size of {n} is too large")
                },
            ));
            DEFAULT_CONNECTION_POOL_SIZE
        }),
    };

    if p.quotas.is_empty() {
        errors.push(params::error(
            "params.quotas",
            "at least one quota is required",
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
        if q.max_amount < 0 {
            errors.push(params::error(
                format!("{field}.maxAmount"),
                format!("must not be negative, found {}", q.max_amount),
            ));
        }
        too_large_for_lua(&format!("{field}.maxAmount"), q.max_amount, &mut errors);
        let valid_duration = q.valid_duration.unwrap_or_default();
        if valid_duration.is_zero() {
            errors.push(params::error(
                format!("{field}.validDuration"),
                "the window length must be > 0",
            ));
        }
        let requested = match &q.rate_limit_algorithm {
            None | Some(serde_json::Value::Null) => QuotaAlgorithm::FixedWindow,
            Some(v) => match params::enum_by_name(v, &["FIXED_WINDOW", "ROLLING_WINDOW"]) {
                Ok(1) => QuotaAlgorithm::RollingWindow,
                Ok(_) => QuotaAlgorithm::FixedWindow,
                Err(msg) => {
                    warnings.push(params::error(
                        format!("{field}.rateLimitAlgorithm"),
                        format!("{msg}; FIXED_WINDOW is used"),
                    ));
                    QuotaAlgorithm::FixedWindow
                }
            },
        };
        let algorithm = match requested {
            QuotaAlgorithm::FixedWindow => Algorithm::FixedWindow,
            QuotaAlgorithm::RollingWindow => {
                let bucket_duration = q.bucket_duration.unwrap_or_default();
                if bucket_duration.is_zero() {
                    errors.push(params::error(
                        format!("{field}.bucketDuration"),
                        "bucket_duration should be > 0 for ROLLING_WINDOW algorithm",
                    ));
                } else if bucket_duration < MIN_BUCKET_DURATION {
                    // Bucket indexes (Unix time / bucket) must stay exact in Lua's doubles.
                    errors.push(params::error(
                        format!("{field}.bucketDuration"),
                        format!(
                            "bucket_duration: {bucket_duration:?} is too short; \
                             it must be at least {MIN_BUCKET_DURATION:?}"
                        ),
                    ));
                } else if !valid_duration.is_zero() && valid_duration <= bucket_duration {
                    errors.push(params::error(
                        format!("{field}.validDuration"),
                        format!(
                            "valid_duration: {valid_duration:?} should be longer than \
                             bucket_duration: {bucket_duration:?} for ROLLING_WINDOW algorithm"
                        ),
                    ));
                }
                Algorithm::RollingWindow { bucket_duration }
            }
        };
        let mut overrides = Vec::new();
        for (j, o) in q
            .overrides
            .into_decoded(&format!("{field}.overrides"), &mut errors)
        {
            let of = format!("{field}.overrides[{j}]");
            if o.max_amount <= 0 {
                errors.push(params::error(
                    format!("{of}.maxAmount"),
                    format!("must be > 0, found {}", o.max_amount),
                ));
            }
            too_large_for_lua(&format!("{of}.maxAmount"), o.max_amount, &mut errors);
            if o.dimensions.is_empty() {
                errors.push(params::error(
                    format!("{of}.dimensions"),
                    "at least one dimension is required",
                ));
            }
            overrides.push(OverrideLimit {
                dimensions: o.dimensions,
                max_amount: o.max_amount,
            });
        }
        if errors.len() == before {
            quotas.push(QuotaLimit {
                name: q.name,
                max_amount: q.max_amount,
                valid_duration,
                algorithm,
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
            redis_server_url,
            connection_pool_size,
            failure_mode: p.failure_mode,
            quotas,
        })
    } else {
        Err(errors)
    }
}

/// Redis scripts count in Lua numbers (doubles), exact up to 2^53 − 1.
fn too_large_for_lua(field: &str, n: i64, errors: &mut Vec<ParamError>) {
    if n > super::scripts::MAX_SAFE_INTEGER {
        errors.push(params::error(
            field,
            format!(
                "must be at most {} (Redis scripts count exactly only up to 2^53 - 1), found {n}",
                super::scripts::MAX_SAFE_INTEGER
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expr_lang::{FunctionTable, Manifest};
    use serde_json::{Value as Json, json};
    use templates::{InstanceBuilder, TemplateKind};

    fn run(params: &Json, instances: &[&InstanceBuilder]) -> Result<Config, Vec<ParamError>> {
        validate(&ValidateInput {
            handler: "redishandler.istio-system",
            params,
            instances,
        })
        .config
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
            &json!({"dimensions": {"destination": "\"productpage\""}}),
            None,
            &Manifest::new(),
            &FunctionTable::standard(),
        )
        .unwrap()
    }

    /// Every distinct redisquota handler's params in the real Istio configs. The Go
    /// integration test's config has placeholders its test substitutes: both
    /// algorithms and a real address are substituted here the same way.
    fn real_configs() -> Vec<(String, Json)> {
        let mut out = Vec::new();
        for algorithm in ["FIXED_WINDOW", "ROLLING_WINDOW"] {
            out.push((
                format!("redisquota_integration_test.go adapterConfig ({algorithm})"),
                json!({
                    "redisServerUrl": "localhost:6379",
                    "connectionPoolSize": 10,
                    "quotas": [{
                        "name": "requestCount.quota.istio-system",
                        "maxAmount": 50,
                        "validDuration": "30s",
                        "bucketDuration": "1s",
                        "rateLimitAlgorithm": algorithm,
                        "overrides": [
                            {"dimensions": {"destination": "ratings", "source": "reviews"}, "maxAmount": 12},
                            {"dimensions": {"destination": "reviews"}, "maxAmount": 5}
                        ]
                    }]
                }),
            ));
        }
        out.push((
            "bookinfo mixer-rule-productpage-redis-quota-fixed-window.yaml".into(),
            json!({
                "redisServerUrl": "redis-release-master:6379",
                "connectionPoolSize": 10,
                "quotas": [{
                    "name": "requestcountquota.instance.istio-system",
                    "maxAmount": 1,
                    "validDuration": "30s",
                    "rateLimitAlgorithm": "FIXED_WINDOW",
                    "overrides": [
                        {"dimensions": {"destination": "productpage", "source": "istio-ingressgateway"}, "maxAmount": 50}
                    ]
                }]
            }),
        ));
        out.push((
            "bookinfo mixer-rule-productpage-redis-quota-rolling-window.yaml".into(),
            json!({
                "redisServerUrl": "redis-release-master:6379",
                "connectionPoolSize": 10,
                "quotas": [{
                    "name": "requestcountquota.instance.istio-system",
                    "maxAmount": 500,
                    "validDuration": "1s",
                    "bucketDuration": "500ms",
                    "rateLimitAlgorithm": "ROLLING_WINDOW",
                    "overrides": [
                        {"dimensions": {"destination": "reviews"}, "maxAmount": 1},
                        {"dimensions": {"destination": "productpage", "source": "10.28.11.20"}, "maxAmount": 500},
                        {"dimensions": {"destination": "productpage"}, "maxAmount": 2}
                    ]
                }]
            }),
        ));
        out.push((
            "bookinfo mixer-rule-ratings-redis-quota-fixed-window.yaml".into(),
            json!({
                "redisServerUrl": "redis-release-master:6379",
                "connectionPoolSize": 10,
                "quotas": [{
                    "name": "requestcountquota.instance.istio-system",
                    "maxAmount": 5000,
                    "validDuration": "30s",
                    "rateLimitAlgorithm": "FIXED_WINDOW",
                    "overrides": [
                        {"dimensions": {"destination": "ratings", "source": "reviews"}, "maxAmount": 50},
                        {"dimensions": {"destination": "ratings"}, "maxAmount": 100}
                    ]
                }]
            }),
        ));
        out.push((
            "bookinfo mixer-rule-ratings-redis-quota-rolling-window.yaml".into(),
            json!({
                "redisServerUrl": "redis-release-master:6379",
                "connectionPoolSize": 10,
                "quotas": [{
                    "name": "requestcountquota.instance.istio-system",
                    "maxAmount": 5000,
                    "validDuration": "30s",
                    "bucketDuration": "9s",
                    "rateLimitAlgorithm": "ROLLING_WINDOW",
                    "overrides": [
                        {"dimensions": {"destination": "ratings", "source": "reviews"}, "maxAmount": 50},
                        {"dimensions": {"destination": "ratings"}, "maxAmount": 100}
                    ]
                }]
            }),
        ));
        out
    }

    #[test]
    fn real_istio_configs_validate() {
        for (source, params) in real_configs() {
            let name = params["quotas"][0]["name"].as_str().unwrap().to_owned();
            let inst = quota_instance(&name);
            run(&params, &[&inst]).unwrap_or_else(|e| panic!("{source}: {e:#?}"));
        }
        let c = ok(real_configs()[3].1.clone());
        assert_eq!(c.redis_server_url, "redis-release-master:6379");
        assert_eq!(c.connection_pool_size, 10);
        assert_eq!(c.failure_mode, FailureMode::Open);
        let q = &c.quotas[0];
        assert_eq!(
            q.algorithm,
            Algorithm::RollingWindow {
                bucket_duration: Duration::from_millis(500)
            }
        );
        assert_eq!(q.overrides[2].max_amount, 2);
        // The fixed-window variant of the integration test keeps its bucketDuration
        // without complaint (Mixer ignored it).
        let c = ok(real_configs()[0].1.clone());
        assert_eq!(c.quotas[0].algorithm, Algorithm::FixedWindow);
    }

    #[test]
    fn defaults() {
        let c = ok(json!({"quotas": [{"name": "q", "maxAmount": 1, "validDuration": "1s"}]}));
        assert_eq!(c.redis_server_url, "localhost:6379");
        assert_eq!(c.connection_pool_size, 10);
        assert_eq!(c.failure_mode, FailureMode::Open);
        assert_eq!(c.quotas[0].algorithm, Algorithm::FixedWindow);
        let c =
            ok(json!({"connectionPoolSize": 0, "quotas": [{"name": "q", "validDuration": "1s"}]}));
        assert_eq!(c.connection_pool_size, 10);
    }

    #[test]
    fn camel_and_snake_case() {
        let camel = ok(json!({
            "redisServerUrl": "redis:6380", "connectionPoolSize": 4, "failureMode": "CLOSED",
            "quotas": [{"name": "q", "maxAmount": 9, "validDuration": "10s", "bucketDuration": "1s",
                        "rateLimitAlgorithm": "ROLLING_WINDOW",
                        "overrides": [{"dimensions": {"a": "b"}, "maxAmount": 3}]}]
        }));
        let snake = ok(json!({
            "redis_server_url": "redis:6380", "connection_pool_size": "4", "failure_mode": 1,
            "quotas": [{"name": "q", "max_amount": 9, "valid_duration": "10s", "bucket_duration": "1s",
                        "rate_limit_algorithm": "rolling_window",
                        "overrides": [{"dimensions": {"a": "b"}, "max_amount": 3}]}]
        }));
        assert_eq!(camel, snake);
        assert_eq!(camel.failure_mode, FailureMode::Closed);
        assert_eq!(camel.connection_pool_size, 4);
    }

    #[test]
    fn every_error_is_reported() {
        let e = errs(json!({
            "redisServerUrl": "",
            "connectionPoolSize": -10,
            "quotas": [
                {"name": "a", "maxAmount": -1, "validDuration": "0s"},
                {"validDuration": "1s"},
                {"name": "r1", "validDuration": "1m", "rateLimitAlgorithm": "ROLLING_WINDOW"},
                {"name": "r2", "validDuration": "1m", "bucketDuration": "2m", "rateLimitAlgorithm": "ROLLING_WINDOW"},
                {"name": "r3", "validDuration": "1m", "bucketDuration": "1m", "rateLimitAlgorithm": "ROLLING_WINDOW"},
                {"name": "o", "validDuration": "1s", "overrides": [
                    {"dimensions": {"a": "b"}, "maxAmount": 0},
                    {"maxAmount": 1},
                    {"dimensions": {"a": "b"}, "maxAmount": 1, "validDuration": "1s"}
                ]},
                {"name": "a", "validDuration": "1s"},
            ]
        }));
        has(&e, "params.redisServerUrl", "should not be empty");
        has(
            &e,
            "params.connectionPoolSize",
            "connection_pool_size of -10 is invalid, must be > 0",
        );
        has(&e, "params.quotas[0].maxAmount", "must not be negative");
        has(&e, "params.quotas[0].validDuration", "must be > 0");
        has(&e, "params.quotas[1].name", "required");
        has(
            &e,
            "params.quotas[2].bucketDuration",
            "should be > 0 for ROLLING_WINDOW",
        );
        has(
            &e,
            "params.quotas[3].validDuration",
            "valid_duration: 60s should be longer than bucket_duration: 120s",
        );
        has(
            &e,
            "params.quotas[4].validDuration",
            "should be longer than bucket_duration",
        );
        has(
            &e,
            "params.quotas[5].overrides[0].maxAmount",
            "must be > 0, found 0",
        );
        has(
            &e,
            "params.quotas[5].overrides[1].dimensions",
            "at least one dimension",
        );
        has(
            &e,
            "params.quotas[5].overrides[2].validDuration",
            "unknown field `validDuration`",
        );
        has(
            &e,
            "params.quotas[6].name",
            "quota 'a' is already defined by quotas[0]",
        );
        assert_eq!(e.len(), 12, "{e:#?}");
        // Limits the scripts cannot count exactly, and buckets too short to index.
        let e = errs(json!({"quotas": [
            {"name": "a", "maxAmount": 9007199254740992i64, "validDuration": "1s",
             "overrides": [{"dimensions": {"a": "b"}, "maxAmount": 9007199254740992i64}]},
            {"name": "b", "validDuration": "1s", "bucketDuration": "999ns",
             "rateLimitAlgorithm": "ROLLING_WINDOW"},
        ]}));
        has(
            &e,
            "params.quotas[0].maxAmount",
            "must be at most 9007199254740991",
        );
        has(
            &e,
            "params.quotas[0].overrides[0].maxAmount",
            "must be at most 9007199254740991",
        );
        has(&e, "params.quotas[1].bucketDuration", "at least 1µs");
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            run(
                &json!({"quotas": [{"name": "a", "maxAmount": 9007199254740991i64, "validDuration": "1s",
                                    "bucketDuration": "1us", "rateLimitAlgorithm": "ROLLING_WINDOW"}]}),
                &[]
            )
            .is_ok()
        );
        let e = errs(json!({}));
        has(&e, "params.quotas", "at least one quota is required");
    }

    #[test]
    fn addresses() {
        for good in [
            "localhost:6379",
            "redis-release-master:6379",
            "10.0.0.1:1",
            "[::1]:6379",
            "a_b.c:65535",
        ] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        // Without a port, Redis's default port is meant.
        assert!(check_address("localhost").is_ok());
        assert!(check_address("__REDIS_SERVER_ADDRESS__").is_ok());
        for bad in [
            "redis://localhost:6379",
            ":6379",
            "h:0",
            "h:70000",
            "h:+1",
            "::1:6379",
            "a b:1",
            "[x]:1",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        let e = errs(
            json!({"redisServerUrl": "redis://r:6379", "quotas": [{"name": "q", "validDuration": "1s"}]}),
        );
        has(&e, "params.redisServerUrl", "a URL scheme is not allowed");
    }

    #[test]
    fn routed_instances_need_a_limit() {
        let params = json!({"quotas": [{"name": "requestcountquota.instance.istio-system", "validDuration": "1s"}]});
        let known = quota_instance("requestcountquota.instance.istio-system");
        let unknown = quota_instance("RequestCountQuota.instance.istio-system");
        assert!(run(&params, &[&known]).is_ok());
        let e = run(&params, &[&unknown]).unwrap_err();
        has(
            &e,
            "params.quotas",
            "did not find limit defined for quota 'RequestCountQuota.instance.istio-system'",
        );
        // An unknown algorithm is a warning, and FIXED_WINDOW is used, as Mixer did.
        let params = json!({"quotas": [{"name": "requestcountquota.instance.istio-system",
                                        "validDuration": "1s", "rateLimitAlgorithm": "__RATE_LIMIT_ALGORITHM__"}]});
        let Validation { config, warnings } = validate(&ValidateInput {
            handler: "h",
            params: &params,
            instances: &[&known],
        });
        assert_eq!(config.unwrap().quotas[0].algorithm, Algorithm::FixedWindow);
        let w = warnings;
        assert_eq!(w.len(), 1, "{w:#?}");
        has(
            &w,
            "params.quotas[0].rateLimitAlgorithm",
            "unknown value \"__RATE_LIMIT_ALGORITHM__\"",
        );
        // The warning is reported with the errors that reject the params.
        let params = json!({"quotas": [{"name": "q", "validDuration": "1s", "maxAmount": -1,
                                        "rateLimitAlgorithm": "SLIDING"}]});
        let v = validate(&ValidateInput {
            handler: "h",
            params: &params,
            instances: &[],
        });
        has(
            &v.config.unwrap_err(),
            "params.quotas[0].maxAmount",
            "negative",
        );
        has(
            &v.warnings,
            "params.quotas[0].rateLimitAlgorithm",
            "FIXED_WINDOW is used",
        );
    }

    #[test]
    fn unknown_fields_rejected() {
        let e =
            errs(json!({"quotas": [{"name": "q", "validDuration": "1s"}], "socketType": "tcp"}));
        has(&e, "params.socketType", "unknown field `socketType`");
        let e = errs(json!({"quotas": [{"name": "q", "validDuration": "1s", "window": "1s"}]}));
        has(&e, "params.quotas[0].window", "unknown field `window`");
    }
}
