//! The `istio.mixer.v1.Mixer` gRPC API.
pub mod pb;
pub mod service;
