//! The API port describes itself: gRPC health checking for every front end, and server
//! reflection (v1 and v1alpha) that a `grpcurl`-style client can use to list the services
//! and build a complete descriptor pool for any of them, following imports file by file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use prost::Message;
use prost_reflect::DescriptorPool;
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use test_support::config::read_sample;
use tonic::Streaming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use crate::common::*;

/// Every service the API port serves, each with one method and its request and response
/// types as the reflection descriptors must give them.
const SERVICES: &[(&str, &str, &str, &str)] = &[
    (
        "istio.mixer.v1.Mixer",
        "Check",
        "istio.mixer.v1.CheckRequest",
        "istio.mixer.v1.CheckResponse",
    ),
    (
        "envoy.service.auth.v3.Authorization",
        "Check",
        "envoy.service.auth.v3.CheckRequest",
        "envoy.service.auth.v3.CheckResponse",
    ),
    (
        "envoy.service.ratelimit.v3.RateLimitService",
        "ShouldRateLimit",
        "envoy.service.ratelimit.v3.RateLimitRequest",
        "envoy.service.ratelimit.v3.RateLimitResponse",
    ),
    (
        "envoy.service.accesslog.v3.AccessLogService",
        "StreamAccessLogs",
        "envoy.service.accesslog.v3.StreamAccessLogsMessage",
        "envoy.service.accesslog.v3.StreamAccessLogsResponse",
    ),
    (
        "opentelemetry.proto.collector.logs.v1.LogsService",
        "Export",
        "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest",
        "opentelemetry.proto.collector.logs.v1.ExportLogsServiceResponse",
    ),
    (
        "grpc.health.v1.Health",
        "Check",
        "grpc.health.v1.HealthCheckRequest",
        "grpc.health.v1.HealthCheckResponse",
    ),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        "grpc.reflection.v1.ServerReflectionRequest",
        "grpc.reflection.v1.ServerReflectionResponse",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflectionRequest",
        "grpc.reflection.v1alpha.ServerReflectionResponse",
    ),
];

/// One open `ServerReflectionInfo` stream: questions go out one at a time, each answered
/// before the next, as `grpcurl` asks them.
struct ReflectionStream {
    questions: mpsc::Sender<ServerReflectionRequest>,
    answers: Streaming<ServerReflectionResponse>,
}

impl ReflectionStream {
    async fn open(url: String) -> ReflectionStream {
        let mut client = ServerReflectionClient::new(channel(url).await);
        let (questions, rx) = mpsc::channel(1);
        let answers = client
            .server_reflection_info(rx)
            .await
            .expect("stream opens")
            .into_inner();
        ReflectionStream { questions, answers }
    }

    async fn ask(&mut self, question: MessageRequest) -> MessageResponse {
        let answer = self
            .answer(question)
            .await
            .expect("an answer, not an error");
        answer.message_response.expect("a message response")
    }

    async fn answer(
        &mut self,
        question: MessageRequest,
    ) -> Result<ServerReflectionResponse, tonic::Status> {
        self.questions
            .send(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(question),
            })
            .await
            .expect("stream open");
        tokio::time::timeout(Duration::from_secs(10), self.answers.next())
            .await
            .expect("answered")
            .expect("stream open")
    }

    async fn services(&mut self) -> BTreeSet<String> {
        match self.ask(MessageRequest::ListServices(String::new())).await {
            MessageResponse::ListServicesResponse(list) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("list_services answered {other:?}"),
        }
    }

    async fn files(&mut self, question: MessageRequest) -> Vec<FileDescriptorProto> {
        match self.ask(question.clone()).await {
            MessageResponse::FileDescriptorResponse(files) => files
                .file_descriptor_proto
                .iter()
                .map(|raw| FileDescriptorProto::decode(raw.as_slice()).expect("a descriptor"))
                .collect(),
            other => panic!("{question:?} answered {other:?}"),
        }
    }

    /// What `grpcurl describe SYMBOL` does: the file defining `symbol`, then every file it
    /// imports, transitively, by name; all of them resolved into one descriptor pool.
    async fn pool_for(&mut self, symbol: &str) -> DescriptorPool {
        let mut fetched = BTreeMap::new();
        let mut wanted = self
            .files(MessageRequest::FileContainingSymbol(symbol.to_owned()))
            .await;
        while let Some(file) = wanted.pop() {
            let name = file.name().to_owned();
            if fetched.contains_key(&name) {
                continue;
            }
            for dependency in &file.dependency {
                if !fetched.contains_key(dependency) {
                    let by_name = MessageRequest::FileByFilename(dependency.clone());
                    wanted.extend(self.files(by_name).await);
                }
            }
            fetched.insert(name, file);
        }
        DescriptorPool::from_file_descriptor_set(FileDescriptorSet {
            file: in_import_order(fetched),
        })
        .unwrap_or_else(|e| panic!("{symbol}: the served descriptors do not resolve: {e}"))
    }
}

/// `files` ordered so that each comes after everything it imports.
fn in_import_order(mut files: BTreeMap<String, FileDescriptorProto>) -> Vec<FileDescriptorProto> {
    fn visit(
        name: &str,
        files: &mut BTreeMap<String, FileDescriptorProto>,
        out: &mut Vec<FileDescriptorProto>,
    ) {
        let Some(file) = files.remove(name) else {
            return;
        };
        for dependency in &file.dependency {
            visit(dependency, files, out);
        }
        out.push(file);
    }
    let mut out = Vec::new();
    while let Some(name) = files.keys().next().cloned() {
        visit(&name, &mut files, &mut out);
    }
    out
}

async fn channel(url: String) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .expect("connects")
}

fn expected_services() -> BTreeSet<String> {
    SERVICES.iter().map(|(name, ..)| name.to_string()).collect()
}

/// Reflection lists exactly the served services; each one's descriptors, fetched the way
/// `grpcurl` fetches them, form a complete pool with the right method signatures; an
/// unknown symbol is NOT_FOUND.
#[tokio::test]
async fn reflection_describes_every_served_service() {
    let dir = config_dir(&[("policy.yaml", &read_sample("policy.yaml"))]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut stream = ReflectionStream::open(server.api_url()).await;
    assert_eq!(stream.services().await, expected_services());
    for (service, method, input, output) in SERVICES {
        let pool = stream.pool_for(service).await;
        let described = pool
            .get_service_by_name(service)
            .unwrap_or_else(|| panic!("{service} is not in its own descriptors"));
        let method = described
            .methods()
            .find(|m| m.name() == *method)
            .unwrap_or_else(|| panic!("{service} has no method {method}"));
        assert_eq!(method.input().full_name(), *input, "{service}");
        assert_eq!(method.output().full_name(), *output, "{service}");
    }
    // Deep inside the Envoy closure: a message only reachable through imports.
    let pool = stream
        .pool_for("envoy.service.auth.v3.AttributeContext")
        .await;
    let peer = pool
        .get_message_by_name("envoy.service.auth.v3.AttributeContext.Peer")
        .expect("nested message");
    assert!(peer.get_field_by_name("principal").is_some());

    // tonic's reflection ends the stream with NOT_FOUND (grpcurl reports that as "not
    // found"); a new stream answers again.
    let unknown = MessageRequest::FileContainingSymbol("no.such.Service".into());
    assert_eq!(
        stream.answer(unknown).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let mut stream = ReflectionStream::open(server.api_url()).await;
    assert_eq!(stream.services().await, expected_services());
}

/// A reflection client keeps its stream open while it works through its questions; the
/// request read deadline, which bounds a unary body, must not cut that stream off.
#[tokio::test]
async fn reflection_stream_outlives_the_request_read_timeout() {
    let dir = config_dir(&[("policy.yaml", &read_sample("policy.yaml"))]);
    let server = ServerProcess::start(MIXER, dir.path(), &["--request-read-timeout", "300ms"]);
    let mut stream = ReflectionStream::open(server.api_url()).await;
    assert_eq!(stream.services().await, expected_services());
    tokio::time::sleep(Duration::from_millis(900)).await;
    let files = stream
        .files(MessageRequest::FileByFilename(
            "istio/mixer/v1/mixer.proto".into(),
        ))
        .await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].package(), "istio.mixer.v1");
}

/// The older `grpc.reflection.v1alpha` protocol answers the same.
#[tokio::test]
async fn reflection_v1alpha_lists_the_same_services() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let dir = config_dir(&[("policy.yaml", &read_sample("policy.yaml"))]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut client = ServerReflectionClient::new(channel(server.api_url()).await);
    let questions = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("envoy.service.ratelimit.v3.RateLimitService".into()),
    ]
    .map(|q| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(q),
    });
    let mut answers = client
        .server_reflection_info(futures::stream::iter(questions))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list")
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_eq!(names, expected_services());
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no descriptor")
    };
    let file = FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.name(), "envoy/service/ratelimit/v3/rls.proto");
}

/// `grpc.health.v1`: SERVING for the server and for each front end by its service name;
/// NOT_FOUND for a service the port does not serve.
#[tokio::test]
async fn health_names_every_front_end() {
    let dir = config_dir(&[("policy.yaml", &read_sample("policy.yaml"))]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut health = HealthClient::new(channel(server.api_url()).await);
    let front_ends = SERVICES
        .iter()
        .map(|(name, ..)| *name)
        .filter(|name| !name.starts_with("grpc."));
    for service in std::iter::once("").chain(front_ends) {
        let r = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {e}"))
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "envoy.service.trace.v3.TraceService".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}
