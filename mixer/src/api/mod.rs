//! The `istio.mixer.v1.Mixer` gRPC API.
pub mod codec;
pub mod pb;
pub mod service;
pub mod shed;
