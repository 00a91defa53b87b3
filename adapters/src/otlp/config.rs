//! Params of the trace adapters (template `tracespan`) and their validation:
//!
//! * [`Params`]: this server's `otlp` adapter, exporting spans to an OpenTelemetry
//!   collector over OTLP/gRPC;
//! * [`ZipkinParams`]: Istio's `zipkin` adapter (`adapter.zipkin.config.Params`),
//!   validated with the same rules, so that existing Istio configs keep working.
//!
//! Both share the sampling rule of Mixer's trace adapters: a span is exported with
//! probability `sampleProbability` (0 = never, the default; 1 = always), decided
//! deterministically from its trace id.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use templates::ParamError;

use crate::ValidateInput;
use crate::params::{self, opt_duration};
use crate::prometheus::pbjson::{
    check_http_url, decode_object, float, nullable, opt_float, opt_int,
};

/// Default of [`Params::endpoint`].
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
/// Default of [`Params::service_name`] (Mixer's name for spans without one).
pub const DEFAULT_SERVICE_NAME: &str = "default";
/// Default of [`Params::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Params::max_queue_size`].
pub const DEFAULT_MAX_QUEUE_SIZE: u32 = 2048;
/// Default of [`Params::max_export_batch_size`].
pub const DEFAULT_MAX_EXPORT_BATCH_SIZE: u32 = 512;
/// Default of [`Params::scheduled_delay`].
pub const DEFAULT_SCHEDULED_DELAY: Duration = Duration::from_secs(5);

/// The `otlp` handler params.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// OTLP/gRPC endpoint of the collector, an http or https URL. Default
    /// `http://localhost:4317`.
    #[serde(default)]
    pub endpoint: Option<String>,

    /// Probability (0 to 1) that a trace is exported. Default 0: nothing is exported,
    /// as with Istio's trace adapters.
    #[serde(
        rename = "sampleProbability",
        alias = "sample_probability",
        default,
        deserialize_with = "opt_float"
    )]
    pub sample_probability: Option<f64>,

    /// Service name of spans whose own is empty (`sourceName` for client spans,
    /// `destinationName` for server spans). Default `default`.
    #[serde(rename = "serviceName", alias = "service_name", default)]
    pub service_name: Option<String>,

    /// Extra gRPC metadata sent with every export (e.g. an authorization header).
    #[serde(default, deserialize_with = "nullable")]
    pub headers: BTreeMap<String, String>,

    /// How long one export may take. Default 10s.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,

    /// Spans buffered while waiting for export; further spans are dropped (and
    /// counted). Default 2048.
    #[serde(
        rename = "maxQueueSize",
        alias = "max_queue_size",
        default,
        deserialize_with = "opt_int"
    )]
    pub max_queue_size: Option<i64>,

    /// Most spans sent in one export; at most `maxQueueSize`. Default 512.
    #[serde(
        rename = "maxExportBatchSize",
        alias = "max_export_batch_size",
        default,
        deserialize_with = "opt_int"
    )]
    pub max_export_batch_size: Option<i64>,

    /// Longest time a span waits in the queue before its batch is sent. Default 5s.
    #[serde(
        rename = "scheduledDelay",
        alias = "scheduled_delay",
        default,
        deserialize_with = "opt_duration"
    )]
    pub scheduled_delay: Option<Duration>,
}

/// Istio's `zipkin` handler params.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ZipkinParams {
    /// Zipkin v2 HTTP endpoint, e.g. `http://zipkin.istio-system:9411/api/v2/spans`.
    /// Required for spans to be exported (Mixer accepted a config without it).
    #[serde(default, deserialize_with = "nullable")]
    pub url: String,

    /// Probability (0 to 1) that a trace is exported. Default 0: nothing is exported.
    #[serde(
        rename = "sampleProbability",
        alias = "sample_probability",
        default,
        deserialize_with = "float"
    )]
    pub sample_probability: f64,
}

/// Validated `otlp` params.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// http(s) URL of the OTLP/gRPC endpoint.
    pub endpoint: String,
    /// In `[0, 1]`.
    pub sample_probability: f64,
    pub service_name: String,
    /// Metadata names are lower-case.
    pub headers: BTreeMap<String, String>,
    /// > 0.
    pub timeout: Duration,
    pub batch: BatchConfig,
}

/// Batching of exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// > 0.
    pub max_queue_size: u32,
    /// In `1..=max_queue_size`.
    pub max_export_batch_size: u32,
    /// > 0.
    pub scheduled_delay: Duration,
}

/// Validated `zipkin` params.
#[derive(Clone, Debug, PartialEq)]
pub struct ZipkinConfig {
    /// The Zipkin endpoint; `None` when not configured (spans cannot be exported).
    pub url: Option<String>,
    /// In `[0, 1]`.
    pub sample_probability: f64,
}

/// The sampling rule shared by the trace adapters.
fn check_probability(field: &str, p: f64, errors: &mut Vec<ParamError>) {
    if !(0.0..=1.0).contains(&p) {
        errors.push(params::error(
            field,
            format!("must be between 0 and 1 inclusive, found {p}"),
        ));
    }
}

fn check_url(field: &str, url: &str, errors: &mut Vec<ParamError>) {
    if let Err(e) = check_http_url(url) {
        errors.push(params::error(field, e));
    }
}

fn positive(field: &str, v: Option<i64>, default: u32, errors: &mut Vec<ParamError>) -> u32 {
    match v {
        None => default,
        Some(n) => match u32::try_from(n) {
            Ok(n) if n > 0 => n,
            _ => {
                errors.push(params::error(
                    field,
                    format!("must be greater than 0, found {n}"),
                ));
                default
            }
        },
    }
}

fn nonzero(
    field: &str,
    v: Option<Duration>,
    default: Duration,
    errors: &mut Vec<ParamError>,
) -> Duration {
    match v {
        None => default,
        Some(d) if d.is_zero() => {
            errors.push(params::error(field, "must be greater than 0"));
            default
        }
        Some(d) => d,
    }
}

/// Whether `name` can be sent as gRPC metadata: a non-empty HTTP token that does not
/// end in `-bin` (binary metadata is not supported here).
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && !name.ends_with("-bin")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Validates `otlp` params into a [`Config`], reporting every problem with its path.
pub fn validate(input: &ValidateInput<'_>) -> Result<Config, Vec<ParamError>> {
    let p: Params = decode_object(input.params)?;
    let mut errors = Vec::new();

    let endpoint = p.endpoint.unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    check_url("params.endpoint", &endpoint, &mut errors);
    let sample_probability = p.sample_probability.unwrap_or(0.0);
    check_probability("params.sampleProbability", sample_probability, &mut errors);
    let service_name = p
        .service_name
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    if service_name.is_empty() {
        errors.push(params::error(
            "params.serviceName",
            "must not be empty (leave it unset for the default)",
        ));
    }
    let mut headers = BTreeMap::new();
    for (k, v) in p.headers {
        if !valid_header_name(&k) {
            errors.push(params::error(
                format!("params.headers.{k}"),
                "not a valid metadata name (letters, digits and !#$%&'*+-.^_`|~, \
                 not ending in -bin)",
            ));
        } else if v
            .bytes()
            .any(|b| !(b == b'\t' || (0x20..0x7f).contains(&b)))
        {
            errors.push(params::error(
                format!("params.headers.{k}"),
                "metadata values must be printable ASCII",
            ));
        } else {
            headers.insert(k.to_ascii_lowercase(), v);
        }
    }
    let timeout = nonzero("params.timeout", p.timeout, DEFAULT_TIMEOUT, &mut errors);
    let max_queue_size = positive(
        "params.maxQueueSize",
        p.max_queue_size,
        DEFAULT_MAX_QUEUE_SIZE,
        &mut errors,
    );
    let max_export_batch_size = positive(
        "params.maxExportBatchSize",
        p.max_export_batch_size,
        DEFAULT_MAX_EXPORT_BATCH_SIZE.min(max_queue_size),
        &mut errors,
    );
    if max_export_batch_size > max_queue_size {
        errors.push(params::error(
            "params.maxExportBatchSize",
            format!(
                "must not exceed maxQueueSize ({max_queue_size}), found {max_export_batch_size}"
            ),
        ));
    }
    let scheduled_delay = nonzero(
        "params.scheduledDelay",
        p.scheduled_delay,
        DEFAULT_SCHEDULED_DELAY,
        &mut errors,
    );

    if errors.is_empty() {
        Ok(Config {
            endpoint,
            sample_probability,
            service_name,
            headers,
            timeout,
            batch: BatchConfig {
                max_queue_size,
                max_export_batch_size,
                scheduled_delay,
            },
        })
    } else {
        Err(errors)
    }
}

/// Validates Istio `zipkin` params into a [`ZipkinConfig`].
pub fn validate_zipkin(input: &ValidateInput<'_>) -> Result<ZipkinConfig, Vec<ParamError>> {
    let p: ZipkinParams = decode_object(input.params)?;
    let mut errors = Vec::new();
    check_probability(
        "params.sampleProbability",
        p.sample_probability,
        &mut errors,
    );
    if !p.url.is_empty() {
        check_url("params.url", &p.url, &mut errors);
    }
    if errors.is_empty() {
        Ok(ZipkinConfig {
            url: Some(p.url).filter(|u| !u.is_empty()),
            sample_probability: p.sample_probability,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value as Json, json};

    fn input(params: &Json) -> ValidateInput<'_> {
        ValidateInput {
            handler: "handler.istio-system",
            params,
            instances: &[],
        }
    }

    fn otlp(params: Json) -> Result<Config, Vec<ParamError>> {
        validate(&input(&params))
    }

    fn zipkin(params: Json) -> Result<ZipkinConfig, Vec<ParamError>> {
        validate_zipkin(&input(&params))
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
    fn real_istio_zipkin_config_validates() {
        // from-go-tests zipkin_integration_test.go traceSpanConfig (handler.istio-system).
        let c = zipkin(json!({"sampleProbability": 1.0})).unwrap();
        assert_eq!(
            c,
            ZipkinConfig {
                url: None,
                sample_probability: 1.0
            }
        );
    }

    #[test]
    fn zipkin_params() {
        let c = zipkin(json!({"url": "http://zipkin.istio-system:9411/api/v2/spans", "sample_probability": "0.25"}))
            .unwrap();
        assert_eq!(
            c.url.as_deref(),
            Some("http://zipkin.istio-system:9411/api/v2/spans")
        );
        assert_eq!(c.sample_probability, 0.25);
        assert_eq!(zipkin(Json::Null).unwrap().sample_probability, 0.0);
        let camel = zipkin(json!({"url": "https://z/api", "sampleProbability": 0.5})).unwrap();
        let snake = zipkin(json!({"url": "https://z/api", "sample_probability": 0.5})).unwrap();
        assert_eq!(camel, snake);
        let e = zipkin(json!({"url": "zipkin:9411", "sampleProbability": 1.5})).unwrap_err();
        has(
            &e,
            "params.sampleProbability",
            "must be between 0 and 1 inclusive, found 1.5",
        );
        has(&e, "params.url", "invalid URL");
        assert_eq!(e.len(), 2);
        let e = zipkin(json!({"sampleProbability": -0.1})).unwrap_err();
        has(&e, "params.sampleProbability", "between 0 and 1");
        let e = zipkin(json!({"sampleProbability": "NaN"})).unwrap_err();
        has(&e, "params.sampleProbability", "between 0 and 1");
        let e = zipkin(json!({"endpoint": "http://x"})).unwrap_err();
        has(&e, "params.endpoint", "unknown field `endpoint`");
    }

    #[test]
    fn otlp_defaults() {
        let c = otlp(Json::Null).unwrap();
        assert_eq!(
            c,
            Config {
                endpoint: "http://localhost:4317".into(),
                sample_probability: 0.0,
                service_name: "default".into(),
                headers: BTreeMap::new(),
                timeout: Duration::from_secs(10),
                batch: BatchConfig {
                    max_queue_size: 2048,
                    max_export_batch_size: 512,
                    scheduled_delay: Duration::from_secs(5),
                },
            }
        );
        // A small queue lowers the default batch size with it.
        let c = otlp(json!({"maxQueueSize": 100})).unwrap();
        assert_eq!(c.batch.max_export_batch_size, 100);
    }

    #[test]
    fn otlp_camel_and_snake_case() {
        let camel = otlp(json!({
            "endpoint": "https://otel-collector.observability:4317", "sampleProbability": 1,
            "serviceName": "mesh", "headers": {"Authorization": "Bearer x"}, "timeout": "3s",
            "maxQueueSize": 10, "maxExportBatchSize": 5, "scheduledDelay": "250ms"
        }))
        .unwrap();
        let snake = otlp(json!({
            "endpoint": "https://otel-collector.observability:4317", "sample_probability": 1,
            "service_name": "mesh", "headers": {"Authorization": "Bearer x"}, "timeout": "3s",
            "max_queue_size": "10", "max_export_batch_size": 5, "scheduled_delay": "250ms"
        }))
        .unwrap();
        assert_eq!(camel, snake);
        assert_eq!(camel.headers["authorization"], "Bearer x");
        assert_eq!(camel.batch.scheduled_delay, Duration::from_millis(250));
    }

    #[test]
    fn otlp_every_error_is_reported() {
        let e = otlp(json!({
            "endpoint": "localhost:4317", "sampleProbability": 2, "serviceName": "",
            "headers": {"bad name": "x", "x-bin": "y", "ok": "new\nline"}, "timeout": "0s",
            "maxQueueSize": 0, "maxExportBatchSize": -1, "scheduledDelay": "0s"
        }))
        .unwrap_err();
        has(&e, "params.endpoint", "scheme");
        has(&e, "params.sampleProbability", "between 0 and 1");
        has(&e, "params.serviceName", "must not be empty");
        has(&e, "params.headers.bad name", "not a valid metadata name");
        has(&e, "params.headers.x-bin", "not a valid metadata name");
        has(&e, "params.headers.ok", "printable ASCII");
        has(&e, "params.timeout", "greater than 0");
        has(&e, "params.maxQueueSize", "greater than 0, found 0");
        has(&e, "params.maxExportBatchSize", "greater than 0, found -1");
        has(&e, "params.scheduledDelay", "greater than 0");
        assert_eq!(e.len(), 10, "{e:#?}");
        let e = otlp(json!({"maxQueueSize": 10, "maxExportBatchSize": 11})).unwrap_err();
        has(
            &e,
            "params.maxExportBatchSize",
            "must not exceed maxQueueSize (10), found 11",
        );
        let e = otlp(json!({"url": "http://x"})).unwrap_err();
        has(&e, "params.url", "unknown field `url`");
    }
}
