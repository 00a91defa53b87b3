//! mixer's integration tests, in one binary so that the whole stack links once. Each
//! module was a test binary of its own; `cargo test -p mixer --test it MODULE` runs one
//! (e.g. `hardening`, `policy`).
//!
//! No test changes process-wide state that another one reads, so they run in parallel as
//! before: in-process servers (`common::start_server`) each have their own metrics and
//! config directory, and all set the one process-wide limit they touch (the Report set
//! count of `mixer/src/wire/codec.rs`) to the same default; the tests that measure a
//! server's memory or CPU run it as a process of its own
//! (`test_support::process::ServerProcess`).

mod check_wire;
mod common;
mod envoy_authz;
mod envoy_logs;
mod envoy_ratelimit;
mod envoy_samples;
mod hardening;
mod helm_configs;
mod introspection;
mod kubernetes;
mod kubernetes_manifests;
mod kubernetesenv;
mod policy;
mod process;
mod server;
mod telemetry;
mod validate;
