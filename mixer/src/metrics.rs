//! The server's own metrics, served on the monitoring port's `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Self-metrics. Cheap to clone (every field is a handle).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Check calls by result: `ok`, `denied`, `error`.
    pub check_requests: IntCounterVec,
    pub check_duration: HistogramVec,
    /// Report calls by result: `ok`, `error`.
    pub report_requests: IntCounterVec,
    pub report_duration: HistogramVec,
    /// Attribute sets received in Report calls.
    pub report_bags: IntCounter,
    /// Requests rejected because their attributes could not be decoded, by API.
    pub decode_errors: IntCounterVec,
    /// Handler calls, with Mixer's labels.
    pub dispatches: IntCounterVec,
    /// Rule matches or instance builds that failed, by rule, stage and API.
    pub policy_errors: IntCounterVec,
    /// Config loads by result: `applied`, `rejected`.
    pub config_loads: IntCounterVec,
    /// Errors in the last config load (0 when it applied cleanly).
    pub config_errors: IntGauge,
    /// Warnings in the last config load.
    pub config_warnings: IntGauge,
    /// Generation of the snapshot serving requests.
    pub config_generation: IntGauge,
    pub config_rules: IntGauge,
    pub config_instances: IntGauge,
    pub config_handlers: IntGauge,
    pub config_attributes: IntGauge,
    /// Requests shed under overload.
    pub shed: IntCounterVec,
    pub dispatch_duration: Histogram,
    /// The Envoy rate-limit service (`api/envoy/ratelimit.rs`).
    pub envoy_ratelimit: EnvoyRateLimitMetrics,
    /// The Envoy access-log and OTLP logs front ends.
    pub envoy_logs: EnvoyLogMetrics,
    /// ext_authz Check calls by outcome: `ok`, `denied`, `error`.
    pub envoy_authz_requests: IntCounterVec,
    pub envoy_authz_duration: HistogramVec,
    /// Attribute-named values in ext_authz requests that did not convert, by attribute.
    pub envoy_authz_conversion_failures: IntCounterVec,
}

/// The Envoy rate-limit service's metrics.
#[derive(Clone)]
pub struct EnvoyRateLimitMetrics {
    /// `ShouldRateLimit` calls by outcome: `ok`, `over_limit`, `error`.
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    /// Descriptors decided, by outcome: `ok`, `over_limit`.
    pub descriptors: IntCounterVec,
    /// Descriptor entries naming an attribute whose value did not convert to its type
    /// (skipped).
    pub unconverted_values: IntCounter,
}

impl EnvoyRateLimitMetrics {
    fn register(registry: &Registry) -> EnvoyRateLimitMetrics {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "mixer_envoy_ratelimit_duration_seconds",
                "Time to answer Envoy rate-limit calls, by outcome.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique metric");
        let unconverted_values = IntCounter::new(
            "mixer_envoy_ratelimit_unconverted_values_total",
            "Rate-limit descriptor entries named after an attribute whose value did not convert to the attribute's type (skipped).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(unconverted_values.clone()))
            .expect("unique metric");
        EnvoyRateLimitMetrics {
            requests: counter_vec(
                registry,
                "mixer_envoy_ratelimit_requests_total",
                "Envoy rate-limit calls (envoy.service.ratelimit.v3 ShouldRateLimit), by outcome (ok, over_limit, error).",
                &["outcome"],
            ),
            duration,
            descriptors: counter_vec(
                registry,
                "mixer_envoy_ratelimit_descriptors_total",
                "Rate-limit descriptors (one quota allocation each) decided, by outcome (ok, over_limit).",
                &["outcome"],
            ),
            unconverted_values,
        }
    }
}

/// Self-metrics of the access-log (`envoy.service.accesslog.v3`) and OTLP logs front ends.
#[derive(Clone)]
pub struct EnvoyLogMetrics {
    /// Access-log streams open now.
    pub accesslog_streams_open: IntGauge,
    /// Access-log streams ended, by outcome: `ok` (the peer closed it), `error`.
    pub accesslog_streams: IntCounterVec,
    /// Access-log entries reported, by protocol: `http`, `tcp`.
    pub accesslog_entries: IntCounterVec,
    /// Access-log messages or streams refused (each ends its stream), by reason.
    pub accesslog_rejected: IntCounterVec,
    /// Values of attribute-named keys that did not convert to their attribute's type, by
    /// API: `accesslog`, `otlp_logs`.
    pub conversion_failures: IntCounterVec,
    /// OTLP logs Export calls, by outcome: `ok`, `partial`, `error`.
    pub otlp_requests: IntCounterVec,
    /// OTLP log records, by outcome: `reported`, `rejected`.
    pub otlp_records: IntCounterVec,
}

impl EnvoyLogMetrics {
    fn new(registry: &Registry) -> EnvoyLogMetrics {
        EnvoyLogMetrics {
            accesslog_streams_open: gauge(
                registry,
                "mixer_envoy_accesslog_streams_open",
                "Envoy access-log streams (StreamAccessLogs) open now.",
            ),
            accesslog_streams: counter_vec(
                registry,
                "mixer_envoy_accesslog_streams_total",
                "Envoy access-log streams ended, by outcome (ok: closed by the peer, error).",
                &["outcome"],
            ),
            accesslog_entries: counter_vec(
                registry,
                "mixer_envoy_accesslog_entries_total",
                "Envoy access-log entries reported, by protocol (http, tcp).",
                &["protocol"],
            ),
            accesslog_rejected: counter_vec(
                registry,
                "mixer_envoy_accesslog_rejected_total",
                "Envoy access-log messages or streams refused, each ending its stream, by reason.",
                &["reason"],
            ),
            conversion_failures: counter_vec(
                registry,
                "mixer_envoy_logs_attribute_conversion_failures_total",
                "Values of attribute-named keys in access-log entries or OTLP log records that did not convert to the attribute's type (skipped), by API.",
                &["api"],
            ),
            otlp_requests: counter_vec(
                registry,
                "mixer_envoy_otlp_logs_requests_total",
                "OTLP logs Export calls, by outcome (ok, partial, error).",
                &["outcome"],
            ),
            otlp_records: counter_vec(
                registry,
                "mixer_envoy_otlp_logs_records_total",
                "OTLP log records, by outcome (reported, rejected).",
                &["outcome"],
            ),
        }
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let hist = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let check_duration = hist(
            "mixer_api_check_duration_seconds",
            "Time to answer Check calls, by result.",
            &["result"],
        );
        let report_duration = hist(
            "mixer_api_report_duration_seconds",
            "Time to answer Report calls, by result.",
            &["result"],
        );
        let dispatch_duration = Histogram::with_opts(
            HistogramOpts::new(
                "mixer_runtime_dispatch_duration_seconds",
                "Time spent in handler calls.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(dispatch_duration.clone()))
            .expect("unique metric");
        let envoy_authz_duration = hist(
            "mixer_envoy_authz_duration_seconds",
            "Time to answer Envoy ext_authz Check calls, by outcome.",
            &["outcome"],
        );
        Metrics {
            check_requests: counter_vec(
                &registry,
                "mixer_api_check_requests_total",
                "Check calls, by result (ok, denied, error).",
                &["result"],
            ),
            check_duration,
            report_requests: counter_vec(
                &registry,
                "mixer_api_report_requests_total",
                "Report calls, by result (ok, error).",
                &["result"],
            ),
            report_duration,
            report_bags: {
                let c = IntCounter::new(
                    "mixer_api_report_attribute_sets_total",
                    "Attribute sets (one per proxied request) received in Report calls.",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(c.clone()))
                    .expect("unique metric");
                c
            },
            decode_errors: counter_vec(
                &registry,
                "mixer_api_decode_errors_total",
                "Requests rejected because their attributes could not be decoded, by API.",
                &["api"],
            ),
            dispatches: counter_vec(
                &registry,
                "mixer_runtime_dispatches_total",
                "Handler calls, by template, handler, adapter and whether they failed.",
                &["meshFunction", "handler", "adapter", "error"],
            ),
            policy_errors: counter_vec(
                &registry,
                "mixer_policy_errors_total",
                "Rules whose match could not be evaluated, or whose instances could not be built, by rule, stage (match, instance, handler) and API.",
                &["rule", "stage", "api"],
            ),
            config_loads: counter_vec(
                &registry,
                "mixer_config_loads_total",
                "Configuration loads, by result (applied, rejected).",
                &["result"],
            ),
            config_errors: gauge(
                &registry,
                "mixer_config_errors",
                "Errors found by the last configuration load.",
            ),
            config_warnings: gauge(
                &registry,
                "mixer_config_warnings",
                "Warnings from the last configuration load.",
            ),
            config_generation: gauge(
                &registry,
                "mixer_config_generation",
                "Generation of the configuration snapshot serving requests.",
            ),
            config_rules: gauge(
                &registry,
                "mixer_config_rule_configs_total",
                "Rules in the serving snapshot.",
            ),
            config_instances: gauge(
                &registry,
                "mixer_config_instance_configs_total",
                "Instances in the serving snapshot.",
            ),
            config_handlers: gauge(
                &registry,
                "mixer_config_handler_configs_total",
                "Handlers in the serving snapshot.",
            ),
            config_attributes: gauge(
                &registry,
                "mixer_config_attributes_total",
                "Attributes in the serving snapshot's manifest.",
            ),
            shed: counter_vec(
                &registry,
                "mixer_loadshedding_requests_total",
                "Requests (Report attribute sets count one each) shed under overload, by API.",
                &["api"],
            ),
            dispatch_duration,
            envoy_ratelimit: EnvoyRateLimitMetrics::register(&registry),
            envoy_logs: EnvoyLogMetrics::new(&registry),
            envoy_authz_requests: counter_vec(
                &registry,
                "mixer_envoy_authz_requests_total",
                "Envoy ext_authz Check calls, by outcome (ok, denied, error).",
                &["outcome"],
            ),
            envoy_authz_duration,
            envoy_authz_conversion_failures: counter_vec(
                &registry,
                "mixer_envoy_authz_attribute_conversion_failures_total",
                "Attribute-named values of ext_authz requests (context extensions, metadata) that did not convert to their attribute's type and were skipped, by attribute.",
                &["attribute"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every self-metric.
    pub fn render(&self) -> String {
        self.render_with(&Registry::new())
    }

    /// Self-metrics plus those in `extra` (adapters' own metrics).
    pub fn render_with(&self, extra: &Registry) -> String {
        let mut families = self.registry.gather();
        families.extend(extra.gather());
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
