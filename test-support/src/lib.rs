//! Helpers shared by the workspace's tests and benches, at the protocol level only: a
//! `redis-server` fixture, a `mixer server` process launcher (given the binary's path), a
//! small HTTP/1.1 client, configuration directories, attribute sets as Envoy's Mixer
//! client sends them, a real Envoy process and an echoing HTTP upstream for it, and a Kubernetes API server fake (list/watch).
//!
//! This crate must not depend on `mixer`: the adapters' tests use it, and `mixer` depends
//! on `adapters`. Helpers that need mixer's types (its gRPC client, its attribute
//! encoder) live in `mixer/tests/it/common/mod.rs`.

pub mod config;
pub mod envoy;
pub mod envoy_process;
pub mod http;
pub mod kube_api;
pub mod process;
pub mod redis;
pub mod upstream;

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binds a loopback port")
        .port()
}
