//! The Mixer server: wire API, attribute decoding, config store, runtime.

pub mod api;
pub mod attrs;
pub mod config;
pub mod net;
pub mod runtime;
pub mod server;
pub mod telemetry;
