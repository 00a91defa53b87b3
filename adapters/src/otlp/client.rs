//! The OTLP/gRPC client of a trace handler: one lazily connecting channel per handler,
//! carrying `TraceService/Export` calls whose request bytes the `wire` module wrote.
//!
//! The request is sent as the bytes it already is (a codec that copies them into the
//! gRPC frame); the response is decoded with `opentelemetry-proto`'s message, for the
//! spans a collector says it rejected.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use prost::bytes::BufMut;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::config::Config;
use crate::BuildError;
use crate::redact::redact_url;

/// The gRPC method of OTLP trace export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Retries of an export the collector could not take (`UNAVAILABLE`: not reachable,
/// restarting, overloaded), each after twice the previous pause, within the export's
/// bound: what the OpenTelemetry SDK's exporter did.
const RETRIES: u32 = 3;
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why an export failed, naming the endpoint (its secrets hidden). The collector's
/// message is left out: a server may echo request headers, which can hold tokens.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the export to {endpoint} timed out")]
    TimedOut { endpoint: String },
    #[error("the export to {endpoint} failed with gRPC code {code:?}{detail}")]
    Failed {
        endpoint: String,
        code: Code,
        /// The local transport error (connection refused, TLS), when the call did not
        /// reach the collector; else empty.
        detail: String,
    },
}

/// One handler's connection to its collector.
pub struct Exporter {
    channel: Channel,
    metadata: MetadataMap,
    /// The endpoint as messages show it.
    endpoint: String,
}

/// Creates the exporter for `config`: validates the endpoint and headers, sets up TLS
/// for https, and makes the channel, which connects on first use (so it must be called
/// inside the runtime the export task runs on).
pub fn build_exporter(config: &Config) -> Result<Exporter, BuildError> {
    let shown = redact_url(&config.endpoint).into_owned();
    let mut metadata = MetadataMap::new();
    for (name, value) in &config.headers {
        // Validation accepted only names and values gRPC metadata can carry; a failure
        // here is still reported rather than sending the export without the header.
        let key = MetadataKey::from_bytes(name.as_bytes()).map_err(|e| invalid_header(name, e))?;
        let value = MetadataValue::try_from(value.as_str()).map_err(|e| invalid_header(name, e))?;
        metadata.insert(key, value);
    }
    let invalid = |e: tonic::transport::Error| {
        BuildError::InvalidEndpoint(format!(
            "cannot create the OTLP exporter for {shown}: {}",
            error_chain(&e)
        ))
    };
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(invalid)?
        .timeout(config.timeout)
        .connect_timeout(config.timeout);
    let https = config
        .endpoint
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("https:"));
    if https {
        // Without trust anchors every TLS handshake fails; use the bundled web PKI roots.
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_enabled_roots())
            .map_err(invalid)?;
    }
    Ok(Exporter {
        channel: endpoint.connect_lazy(),
        metadata,
        endpoint: shown,
    })
}

fn invalid_header(name: &str, reason: impl std::fmt::Display) -> BuildError {
    BuildError::InvalidHeader {
        name: name.to_owned(),
        reason: reason.to_string(),
    }
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

impl Exporter {
    /// Sends one encoded `ExportTraceServiceRequest`, retrying while the collector is
    /// unavailable, until `deadline`. Returns the number of spans the collector
    /// rejected.
    pub async fn export(
        &self,
        request: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<u64, ExportError> {
        let request = prost::bytes::Bytes::from(request);
        let mut pause = FIRST_RETRY_PAUSE;
        let mut retries = 0;
        loop {
            let call = tokio::time::timeout_at(deadline, self.call(request.clone())).await;
            let status = match call {
                Ok(Ok(response)) => {
                    return Ok(response
                        .partial_success
                        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0)));
                }
                Ok(Err(status)) => status,
                Err(_) => return Err(self.timed_out()),
            };
            let retry_at = tokio::time::Instant::now() + pause;
            if status.code() != Code::Unavailable || retries == RETRIES || retry_at >= deadline {
                return Err(self.failed(&status));
            }
            tracing::debug!(
                endpoint = %self.endpoint,
                code = ?status.code(),
                "Trace export: the collector is unavailable; retrying."
            );
            tokio::time::sleep_until(retry_at).await;
            retries += 1;
            pause *= 2;
        }
    }

    async fn call(
        &self,
        request: prost::bytes::Bytes,
    ) -> Result<ExportTraceServiceResponse, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| {
            Status::unavailable(format!("the channel is not ready: {}", error_chain(&e)))
        })?;
        let mut request = tonic::Request::new(request);
        *request.metadata_mut() = self.metadata.clone();
        let response = grpc
            .unary(request, PathAndQuery::from_static(EXPORT_PATH), RawRequest)
            .await?;
        Ok(response.into_inner())
    }

    fn timed_out(&self) -> ExportError {
        ExportError::TimedOut {
            endpoint: self.endpoint.clone(),
        }
    }

    fn failed(&self, status: &Status) -> ExportError {
        // A status made locally (connection refused, TLS, DNS) has the transport error
        // as its source, which says what went wrong without anything from the peer.
        let detail = match std::error::Error::source(status) {
            Some(cause) => format!(": {}", error_chain(cause)),
            None => String::new(),
        };
        ExportError::Failed {
            endpoint: self.endpoint.clone(),
            code: status.code(),
            detail,
        }
    }
}

/// The codec of export calls: requests are already-encoded bytes, responses are
/// decoded with prost.
#[derive(Clone, Copy, Default)]
struct RawRequest;

impl Codec for RawRequest {
    type Encode = prost::bytes::Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawRequest;
    type Decoder = RawRequest;

    fn encoder(&mut self) -> Self::Encoder {
        RawRequest
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawRequest
    }
}

impl Encoder for RawRequest {
    type Item = prost::bytes::Bytes;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawRequest {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("invalid ExportTraceServiceResponse: {e}")))
    }
}
