//! The Mixer server. Layers, each depending only on those above it:
//!
//! * [`wire`]: generated protos, the strict codec, status mappings (a leaf);
//! * [`metrics`]: the server's self-metrics (a leaf);
//! * [`attrs`]: decoding the Mixer wire format into attribute bags;
//! * [`config`]: the store, compiling resources into an immutable [`config::Snapshot`];
//! * [`runtime`]: Check, quota and Report on bags, against the serving snapshot;
//! * [`api`]: one thin front end per protocol (wire ↔ domain);
//! * [`net`], [`monitoring`], [`server`]: listeners, health and the assembled server.

pub mod api;
pub mod attrs;
pub mod config;
pub mod metrics;
pub mod monitoring;
pub mod net;
pub mod runtime;
pub mod server;
pub mod wire;
