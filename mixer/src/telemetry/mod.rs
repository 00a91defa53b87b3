//! Self-metrics and health.

pub mod http;
pub mod metrics;
