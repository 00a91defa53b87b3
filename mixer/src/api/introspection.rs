//! The API port's self-description: gRPC health checking (`grpc.health.v1.Health`, for
//! Envoy's gRPC health checks and load balancers) and server reflection
//! (`grpc.reflection.v1` and `v1alpha`, for `grpcurl`-style tools), both naming exactly
//! the services the port serves.

use tonic::server::NamedService;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_reflection::server::{Error, v1, v1alpha};

use crate::api::envoy::accesslog::AccessLogServer;
use crate::api::envoy::authz::SERVICE_NAME as AUTHORIZATION;
use crate::api::envoy::otlp_logs::OtlpLogsServer;
use crate::api::envoy::ratelimit::RateLimitFrontEnd;
use crate::api::mixer::MixerService;
use crate::wire::pb::istio::mixer::v1::mixer_server::MixerServer;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;

/// The services whose calls carry policy or telemetry.
pub const FRONT_ENDS: [&str; 5] = [
    MixerServer::<MixerService>::NAME,
    AUTHORIZATION,
    RateLimitServiceServer::<RateLimitFrontEnd>::NAME,
    AccessLogServer::NAME,
    OtlpLogsServer::NAME,
];

const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The reflection streams' paths: a client keeps one open while it asks question after
/// question, so request limits must treat it as a stream (see `net::RequestLimitsLayer`).
pub const REFLECTION_STREAM_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// `grpc.health.v1.Health`: the server (`""`) and every front end are SERVING once a
/// configuration is serving (the first load comes before the API listens, so in practice
/// from the first call on).
pub async fn health_service(ready: bool) -> HealthServer<impl Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    let status = if ready {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    for name in std::iter::once("").chain(FRONT_ENDS) {
        reporter.set_service_status(name, status).await;
    }
    service
}

/// Server reflection v1 over every service on the port, with the descriptors of their
/// messages and of everything those import.
pub fn reflection_v1() -> Result<v1::ServerReflectionServer<impl v1::ServerReflection>, Error> {
    reflection_builder().build_v1()
}

/// The same as [`reflection_v1`] in `v1alpha`, which older clients (and `grpcurl`'s fallback)
/// ask.
pub fn reflection_v1alpha()
-> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, Error> {
    reflection_builder().build_v1alpha()
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(crate::wire::pb::REFLECTION_DESCRIPTORS)
        .register_encoded_file_descriptor_set(opentelemetry_proto::DESCRIPTORS)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in FRONT_ENDS
        .into_iter()
        .chain([HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA])
    {
        builder = builder.with_service_name(name);
    }
    builder
}
