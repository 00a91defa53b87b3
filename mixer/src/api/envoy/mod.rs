//! Front ends for today's Envoy: its external-service protocols mapped onto the same
//! rules, instances and handlers as the Mixer API.

pub mod accesslog;
pub mod accesslog_entry;
pub mod attributes;
pub mod authz;
pub mod grpc;
mod log_limited;
pub mod otlp_logs;
pub mod ratelimit;
