//! Trace export: this server's `otlp` adapter and the params of Istio's `zipkin`
//! adapter, which share their validation rules.

pub mod config;
