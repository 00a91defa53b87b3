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
    /// ext_authz Check calls by outcome: `ok`, `denied`, `error`.
    pub envoy_authz_requests: IntCounterVec,
    pub envoy_authz_duration: HistogramVec,
    /// Attribute-named values in ext_authz requests that did not convert, by attribute.
    pub envoy_authz_conversion_failures: IntCounterVec,
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
