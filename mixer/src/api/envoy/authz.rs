//! The `envoy.service.auth.v3.Authorization` front end, for Envoy's ext_authz HTTP filter
//! (gRPC transport): a CheckRequest becomes a bag (`ENVOY.md`, "ext_authz"), the
//! runtime's Check decides it, charging the quotas Istio's QuotaSpecs bind to the
//! destination service, and the decision goes back as Envoy's answer: header edits when
//! the request may go ahead, the denial's HTTP response otherwise. A request that cannot
//! be decided is a gRPC error, so that Envoy's own `failure_mode_allow` decides it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderValue, HeaderValueOption, Metadata, address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    check_response::HttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{
    BoolValue, Struct as PbStruct, Value as PbValue, value::Kind as PbKind,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use expr_lang::golib::time::Timestamp;
use expr_lang::{Manifest, SlotBag, Value};
use prost::Message;
use prost_types::value::Kind;
use templates::{Status as Decision, code};
use tonic::{Request, Response, Status};

use super::attributes::{BagBuilder, ConvertError, Side};
use crate::api::shed::LoadShedder;
use crate::attrs::DecodeLimits;
use crate::config::snapshot::HeaderOperationKind;
use crate::runtime::quota_specs::requested_quotas;
use crate::runtime::routes::HeaderEdit;
use crate::runtime::{CheckAnswer, Precondition, QuotaRequest, Runtime};
use crate::wire::status::envoy_http_status_for;

/// The gRPC service name, as health checks name it.
pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

/// The filter-metadata namespace whose attribute-named keys become attributes, and under
/// which the decision is returned in `dynamic_metadata`.
pub const METADATA_NAMESPACE: &str = "istio.mixer";

/// What identifies a request across retries, for quota deduplication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeduplicationId {
    /// The `x-request-id` header when present, else Envoy's stream id. Retries of one
    /// request through several proxies are charged once; but an Envoy that keeps a
    /// client's own `x-request-id` lets that client reuse one id within the quota
    /// handler's deduplication window.
    RequestId,
    /// Envoy's stream id only (`request.http.id`): a retried ext_authz call is charged
    /// once; nothing a client sends can make two requests look alike. The default: a
    /// quota a client can dodge is no quota.
    #[default]
    StreamId,
}

/// The ext_authz service, serving from the runtime's current snapshot.
pub struct AuthzService {
    runtime: Arc<Runtime>,
    shedder: Arc<LoadShedder>,
    limits: DecodeLimits,
    dedup: DeduplicationId,
}

impl AuthzService {
    pub fn new(
        runtime: Arc<Runtime>,
        shedder: Arc<LoadShedder>,
        limits: DecodeLimits,
        dedup: DeduplicationId,
    ) -> AuthzService {
        AuthzService {
            runtime,
            shedder,
            limits,
            dedup,
        }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let result = match self.shedder.admit("authz", 1) {
            Ok(()) => {
                let r = self.decide(request.into_inner()).await;
                self.shedder.observe(started.elapsed());
                r
            }
            Err(shed) => Err(shed),
        };
        let outcome = match &result {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.code != code::OK) => "denied",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        let m = &self.runtime.metrics;
        m.envoy_authz_requests.with_label_values(&[outcome]).inc();
        m.envoy_authz_duration
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }
}

impl AuthzService {
    /// Decodes, checks and answers one request: the named phases of a Check.
    async fn decide(&self, req: CheckRequest) -> Result<CheckResponse, Status> {
        let ctx = req
            .attributes
            .ok_or_else(|| Status::invalid_argument("CheckRequest.attributes is missing"))?;
        check_limits(&ctx, &self.limits).inspect_err(|_| {
            self.runtime
                .metrics
                .decode_errors
                .with_label_values(&["authz"])
                .inc();
        })?;
        let headers = request_headers(&ctx);
        let snap = self.runtime.snapshot();
        let (bag, rejected) = bag_of(&snap.manifest, &ctx, &headers, SystemTime::now());
        self.count_rejected(&rejected);
        let quotas = requested_quotas(&snap, &bag);
        let dedup = deduplication_id(&ctx, &headers, self.dedup);
        let answer = self
            .runtime
            .check(&snap, &bag, &dedup, &quotas)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(response(&answer, &quotas))
    }

    fn count_rejected(&self, rejected: &[ConvertError]) {
        for e in rejected {
            tracing::debug!(error = %e, "ext_authz: an attribute-named value did not convert; skipped.");
            self.runtime
                .metrics
                .envoy_authz_conversion_failures
                .with_label_values(&[e.attribute.as_str()])
                .inc();
        }
    }
}

/// The request's headers: Envoy's `headers` map, or its `header_map` (sent instead with
/// `encode_raw_headers`), repeated names joined with `,` as Envoy joins them.
pub fn request_headers(ctx: &AttributeContext) -> BTreeMap<String, String> {
    let Some(http) = http_of(ctx) else {
        return BTreeMap::new();
    };
    let mut map: BTreeMap<String, String> = http
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    for h in http.header_map.iter().flat_map(|m| &m.headers) {
        let value = if h.raw_value.is_empty() {
            h.value.clone()
        } else {
            String::from_utf8_lossy(&h.raw_value).into_owned()
        };
        map.entry(h.key.to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    map
}

fn http_of(ctx: &AttributeContext) -> Option<&HttpRequest> {
    ctx.request.as_ref().and_then(|r| r.http.as_ref())
}

/// What a client controls the size of (headers, query parameters) stays within
/// `--max-string-map-entries`, as in the Mixer API; so do the maps from Envoy's config.
/// Counted on the message, before anything is built from it.
fn check_limits(ctx: &AttributeContext, limits: &DecodeLimits) -> Result<(), Status> {
    let max = limits.max_string_map_entries;
    let within = |what: &str, n: usize| {
        if n > max {
            return Err(Status::resource_exhausted(format!(
                "{what}: {n} entries, over the limit of {max} (--max-string-map-entries)"
            )));
        }
        Ok(())
    };
    let raw_headers = http_of(ctx).map_or(0, |h| {
        h.headers.len() + h.header_map.as_ref().map_or(0, |m| m.headers.len())
    });
    within("request.headers", raw_headers)?;
    let query = http_of(ctx)
        .and_then(|h| h.path.split_once('?'))
        .map_or(0, |(_, q)| q.split('&').filter(|p| !p.is_empty()).count());
    within("request.query_params", query)?;
    let labels = ctx.destination.as_ref().map_or(0, |d| d.labels.len());
    within("destination.labels", labels)?;
    within("context_extensions", ctx.context_extensions.len())
}

/// The bag of a request, per the mapping contract: values derived from Envoy's fields,
/// then the node identity (`destination.labels`), then attribute-named keys of
/// `context_extensions` and of the `istio.mixer` namespace of the dynamic and route
/// metadata, each source overwriting the ones before. Also the values that did not
/// convert.
pub fn bag_of(
    manifest: &Manifest,
    ctx: &AttributeContext,
    headers: &BTreeMap<String, String>,
    now: SystemTime,
) -> (SlotBag, Vec<ConvertError>) {
    let mut b = BagBuilder::new(manifest);
    derived(&mut b, ctx, headers, now);
    node_identity(&mut b, ctx);
    attribute_named_keys(&mut b, ctx);
    b.finish()
}

/// Source 1: Envoy's fields.
fn derived(
    b: &mut BagBuilder<'_>,
    ctx: &AttributeContext,
    headers: &BTreeMap<String, String>,
    now: SystemTime,
) {
    connection(b, ctx);
    if let Some(time) = ctx.request.as_ref().and_then(|r| r.time.as_ref()) {
        b.set_timestamp(
            "request.time",
            &prost_types::Timestamp {
                seconds: time.seconds,
                nanos: time.nanos,
            },
        );
    }
    if let Some(http) = http_of(ctx) {
        http_request(b, http, headers);
    }
    let grpc = headers
        .get("content-type")
        .is_some_and(|t| t.starts_with("application/grpc"));
    b.set_str("context.protocol", if grpc { "grpc" } else { "http" });
    b.set_str("context.reporter.kind", "inbound");
    b.set("context.time", Value::Timestamp(timestamp(now)));
}

/// The peers' addresses and identities, and the TLS facts.
fn connection(b: &mut BagBuilder<'_>, ctx: &AttributeContext) {
    let mut mtls = false;
    if let Some(source) = &ctx.source {
        if let Some((ip, _)) = socket(source.address.as_ref()) {
            b.set_ip("source.ip", ip);
        }
        b.set_nonempty("source.principal", &source.principal);
        mtls = !source.principal.is_empty() || !source.certificate.is_empty();
    }
    if let Some(destination) = &ctx.destination {
        if let Some((ip, port)) = socket(destination.address.as_ref()) {
            b.set_ip("destination.ip", ip);
            b.set("destination.port", Value::Int64(i64::from(port)));
        }
        b.set_nonempty("destination.principal", &destination.principal);
    }
    b.set("connection.mtls", Value::Bool(mtls));
    if let Some(tls) = &ctx.tls_session {
        b.set_nonempty("connection.requested_server_name", &tls.sni);
    }
}

fn http_request(b: &mut BagBuilder<'_>, http: &HttpRequest, headers: &BTreeMap<String, String>) {
    b.set_nonempty("request.host", &http.host);
    b.set_nonempty("request.method", &http.method);
    b.set_nonempty("request.scheme", &http.scheme);
    b.set_path(&http.path);
    for (attribute, header) in [
        ("request.useragent", "user-agent"),
        ("request.referer", "referer"),
        ("request.id", "x-request-id"),
    ] {
        if let Some(v) = headers.get(header) {
            b.set_nonempty(attribute, v);
        }
    }
    b.set_map("request.headers", headers.clone());
    // Envoy sends a size only with the body (`with_request_body`).
    if http.size > 0 {
        b.set("request.size", Value::Int64(http.size));
    }
}

/// An Envoy socket address as IP and port.
fn socket(address: Option<&Address>) -> Option<(IpAddr, u32)> {
    match address?.address.as_ref()? {
        address::Address::SocketAddress(s) => {
            let ip = s.address.parse().ok()?;
            let port = match s.port_specifier {
                Some(PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            Some((ip, port))
        }
        _ => None,
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp::from_unix(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// Source 2: this Envoy's workload. ext_authz carries only its labels (bootstrap
/// `node.metadata`, via `bootstrap_metadata_labels_key`), as `destination.labels`; they
/// describe the destination for inbound reporters and the source for outbound ones.
fn node_identity(b: &mut BagBuilder<'_>, ctx: &AttributeContext) {
    let Some(labels) = ctx.destination.as_ref().map(|d| &d.labels) else {
        return;
    };
    if labels.is_empty() {
        return;
    }
    let text = |s: &str| prost_types::Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let labels = prost_types::Struct {
        fields: labels.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
    };
    let metadata = prost_types::Struct {
        fields: [(
            "labels".to_owned(),
            prost_types::Value {
                kind: Some(Kind::StructValue(labels)),
            },
        )]
        .into(),
    };
    b.node_identity(&metadata, Side::of_reporter(reporter_kind(ctx).as_deref()));
}

/// `context.reporter.kind` as the attribute-named keys will leave it (they are applied
/// after the node identity, whose side depends on it).
fn reporter_kind(ctx: &AttributeContext) -> Option<String> {
    const KEY: &str = "context.reporter.kind";
    let mut kind = ctx.context_extensions.get(KEY).cloned();
    for md in [&ctx.metadata_context, &ctx.route_metadata_context] {
        if let Some(PbKind::StringValue(s)) = namespace_of(md.as_ref())
            .and_then(|s| s.fields.get(KEY))
            .and_then(|v| v.kind.as_ref())
        {
            kind = Some(s.clone());
        }
    }
    kind.filter(|k| k != "-")
}

fn namespace_of(md: Option<&Metadata>) -> Option<&PbStruct> {
    md?.filter_metadata.get(METADATA_NAMESPACE)
}

/// Source 3: attribute-named keys.
fn attribute_named_keys(b: &mut BagBuilder<'_>, ctx: &AttributeContext) {
    for (k, v) in &ctx.context_extensions {
        b.keyed_text(k, v);
    }
    for md in [&ctx.metadata_context, &ctx.route_metadata_context] {
        if let Some(s) = namespace_of(md.as_ref()) {
            b.keyed_struct(&prost_struct(s));
        }
    }
}

/// Envoy's `Struct` as prost's (the same message; re-decoding is exact).
fn prost_struct(s: &PbStruct) -> prost_types::Struct {
    prost_types::Struct::decode(s.encode_to_vec().as_slice()).unwrap_or_default()
}

/// The id a request's quota allocations are deduplicated on.
fn deduplication_id(
    ctx: &AttributeContext,
    headers: &BTreeMap<String, String>,
    mode: DeduplicationId,
) -> String {
    let request_id = headers.get("x-request-id").filter(|v| !v.is_empty());
    let stream_id = http_of(ctx).map(|h| &h.id).filter(|v| !v.is_empty());
    match (mode, request_id, stream_id) {
        (DeduplicationId::RequestId, Some(id), _) => id.clone(),
        (_, _, Some(id)) => id.clone(),
        // Never an empty id: every request would look like a retry of the first.
        _ => {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            format!(
                "mixer-authz-{}-{}",
                timestamp(SystemTime::now()).to_unix_nanos(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        }
    }
}

/// Envoy's answer to a decided Check.
pub fn response(answer: &CheckAnswer, quotas: &[QuotaRequest<'_>]) -> CheckResponse {
    let p = &answer.precondition;
    if !p.status.is_ok() {
        return denied(p);
    }
    if let Some(exhausted) = exhausted(answer, quotas) {
        return quota_denied(&exhausted);
    }
    allowed(p)
}

/// The quotas that granted nothing (`a,b`), as the Mixer filter named them; `None` when
/// every one granted something.
fn exhausted(answer: &CheckAnswer, quotas: &[QuotaRequest<'_>]) -> Option<String> {
    let names: Vec<&str> = quotas
        .iter()
        .zip(&answer.quotas)
        .filter(|(q, a)| q.amount > 0 && a.result.granted_amount <= 0)
        .map(|(q, _)| q.name)
        .collect();
    (!names.is_empty()).then(|| names.join(","))
}

fn allowed(p: &Precondition) -> CheckResponse {
    let route = &p.route;
    let ok = OkHttpResponse {
        headers: header_options(&route.request_header_operations),
        headers_to_remove: route
            .request_header_operations
            .iter()
            .filter(|e| e.operation == HeaderOperationKind::Remove)
            .map(|e| e.name.clone())
            .collect(),
        response_headers_to_add: header_options(&route.response_header_operations),
        ..Default::default()
    };
    CheckResponse {
        status: Some(rpc_status(&p.status)),
        dynamic_metadata: Some(decision_metadata(&p.status, None)),
        http_response: Some(HttpResponse::OkResponse(ok)),
    }
}

/// A denial: the rule's direct response when it gave one (its status, body and headers),
/// else the HTTP status of the code and `CODE:message`, as the Mixer filter answered.
fn denied(p: &Precondition) -> CheckResponse {
    let status = &p.status;
    let (http, body) = match &p.route.direct_response {
        Some(d) => (
            match d.code {
                0 => envoy_http_status_for(status.code),
                code => code,
            },
            d.body.clone(),
        ),
        None => (
            envoy_http_status_for(status.code),
            format!("{}:{}", code::name(status.code), status.message),
        ),
    };
    denial(
        status,
        p.denied_by.as_deref(),
        http,
        body,
        local_reply_headers(&p.route.response_header_operations),
    )
}

/// The headers of a denial's response. Envoy drops the headers of a local reply marked
/// `append` and adds every one it is to set, so every value goes unmarked: each of a
/// direct response's `set-cookie` values arrives as a header of its own.
fn local_reply_headers(edits: &[HeaderEdit]) -> Vec<HeaderValueOption> {
    let edits: Vec<HeaderEdit> = edits
        .iter()
        .filter(|e| e.operation != HeaderOperationKind::Remove)
        .map(|e| HeaderEdit {
            operation: HeaderOperationKind::Replace,
            ..e.clone()
        })
        .collect();
    header_options(&edits)
}

fn quota_denied(exhausted: &str) -> CheckResponse {
    let status = Decision::new(
        code::RESOURCE_EXHAUSTED,
        format!("Quota is exhausted for: {exhausted}"),
    );
    let body = format!("{}:{}", code::name(status.code), status.message);
    denial(
        &status,
        None,
        envoy_http_status_for(status.code),
        body,
        Vec::new(),
    )
}

fn denial(
    status: &Decision,
    rule: Option<&str>,
    http: u32,
    body: String,
    headers: Vec<HeaderValueOption>,
) -> CheckResponse {
    CheckResponse {
        status: Some(rpc_status(status)),
        dynamic_metadata: Some(decision_metadata(status, rule)),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::try_from(http).unwrap_or(500),
            }),
            headers,
            body,
        })),
    }
}

fn rpc_status(s: &Decision) -> RpcStatus {
    RpcStatus {
        code: s.code,
        message: s.message.clone(),
        details: Vec::new(),
    }
}

/// `{"istio.mixer": {"status": NAME, "code": N, "message": TEXT, "rule": RULE}}` (message
/// and rule when there are), for the access log; Envoy files it under the ext_authz
/// filter's namespace.
fn decision_metadata(s: &Decision, rule: Option<&str>) -> PbStruct {
    let string = |t: &str| PbValue {
        kind: Some(PbKind::StringValue(t.to_owned())),
    };
    let mut decision = PbStruct::default();
    decision
        .fields
        .insert("status".to_owned(), string(code::name(s.code)));
    decision.fields.insert(
        "code".to_owned(),
        PbValue {
            kind: Some(PbKind::NumberValue(f64::from(s.code))),
        },
    );
    if !s.message.is_empty() {
        decision
            .fields
            .insert("message".to_owned(), string(&s.message));
    }
    if let Some(rule) = rule {
        decision.fields.insert("rule".to_owned(), string(rule));
    }
    let mut md = PbStruct::default();
    md.fields.insert(
        METADATA_NAMESPACE.to_owned(),
        PbValue {
            kind: Some(PbKind::StructValue(decision)),
        },
    );
    md
}

/// REPLACE and APPEND edits as Envoy header options: Envoy overwrites a header unless
/// the deprecated `append` says true (its `append_action` values all overwrite, see
/// `ENVOY.md`). REMOVE edits are not header options.
#[allow(deprecated)]
fn header_options(edits: &[HeaderEdit]) -> Vec<HeaderValueOption> {
    edits
        .iter()
        .filter(|e| e.operation != HeaderOperationKind::Remove)
        .map(|e| HeaderValueOption {
            header: Some(HeaderValue {
                key: e.name.clone(),
                value: e.value.clone(),
                raw_value: Vec::new(),
            }),
            append: Some(BoolValue {
                value: e.operation == HeaderOperationKind::Append,
            }),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, SocketAddress, socket_address};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        Peer, Request as PbRequest, TlsSession,
    };
    use expr_lang::{AttrKey, Bag};
    use templates::{DirectHttpResponse, QuotaResult};

    use super::*;
    use crate::runtime::routes::{DirectResponse, RouteDirective};
    use crate::runtime::{QuotaAnswer, Referenced};

    fn peer(ip: &str, port: u32) -> Peer {
        Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.to_owned(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }
    }

    fn text(s: &str) -> PbValue {
        PbValue {
            kind: Some(PbKind::StringValue(s.to_owned())),
        }
    }

    fn mixer_metadata(fields: &[(&str, PbValue)]) -> Metadata {
        let ns = PbStruct {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        Metadata {
            filter_metadata: HashMap::from([(METADATA_NAMESPACE.to_owned(), ns)]),
            ..Default::default()
        }
    }

    fn request() -> AttributeContext {
        let mut destination = peer("10.0.0.2", 9080);
        destination.principal = "spiffe://cluster.local/ns/default/sa/reviews".to_owned();
        destination.labels = HashMap::from([
            ("app".to_owned(), "reviews".to_owned()),
            ("version".to_owned(), "v2".to_owned()),
        ]);
        let mut source = peer("10.0.0.1", 51000);
        source.principal = "spiffe://cluster.local/ns/default/sa/productpage".to_owned();
        let headers: HashMap<String, String> = [
            (":authority", "reviews:9080"),
            ("content-type", "application/grpc+proto"),
            ("user-agent", "curl/8"),
            ("referer", "https://example.com/"),
            ("x-request-id", "rid-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        AttributeContext {
            source: Some(source),
            destination: Some(destination),
            request: Some(PbRequest {
                time: Some(envoy_types::pb::google::protobuf::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                http: Some(HttpRequest {
                    id: "123456".to_owned(),
                    method: "POST".to_owned(),
                    headers,
                    path: "/reviews/1?verbose=1&lang=en".to_owned(),
                    host: "reviews:9080".to_owned(),
                    scheme: "http".to_owned(),
                    size: 42,
                    ..Default::default()
                }),
            }),
            context_extensions: HashMap::from([
                (
                    "destination.service.host".to_owned(),
                    "reviews.default.svc.cluster.local".to_owned(),
                ),
                ("source.namespace".to_owned(), "from-extensions".to_owned()),
                ("request.total_size".to_owned(), "many".to_owned()),
                ("response.code".to_owned(), "-".to_owned()),
                ("not.an.attribute".to_owned(), "x".to_owned()),
            ]),
            metadata_context: Some(mixer_metadata(&[
                ("source.namespace", text("from-dynamic-metadata")),
                ("destination.service.name", text("reviews")),
            ])),
            route_metadata_context: Some(mixer_metadata(&[
                ("source.namespace", text("from-route")),
                (
                    "destination.port",
                    PbValue {
                        kind: Some(PbKind::NumberValue(9443.0)),
                    },
                ),
            ])),
            tls_session: Some(TlsSession {
                sni: "reviews.default.svc.cluster.local".to_owned(),
            }),
        }
    }

    fn bag_for(ctx: &AttributeContext) -> (Manifest, SlotBag, Vec<ConvertError>) {
        let manifest = Manifest::istio_vocabulary();
        let headers = request_headers(ctx);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (bag, rejected) = bag_of(&manifest, ctx, &headers, now);
        (manifest, bag, rejected)
    }

    fn get<'b>(m: &Manifest, bag: &'b SlotBag, name: &str) -> Option<Value<'b>> {
        let id = m.get(name).expect("declared").id;
        bag.get(AttrKey { name, id })
    }

    fn string(m: &Manifest, bag: &SlotBag, name: &str) -> Option<String> {
        get(m, bag, name).and_then(|v| v.as_str().map(str::to_owned))
    }

    fn map(m: &Manifest, bag: &SlotBag, name: &str) -> BTreeMap<String, String> {
        match get(m, bag, name) {
            Some(Value::StringMap(map)) => map.to_btree(),
            other => panic!("{name} is not a map: {other:?}"),
        }
    }

    #[test]
    fn a_check_request_becomes_the_contracts_bag() {
        let (m, bag, rejected) = bag_for(&request());
        let s = |n| string(&m, &bag, n);
        assert_eq!(
            get(&m, &bag, "source.ip"),
            Some(Value::IpAddress(vec![10, 0, 0, 1].into()))
        );
        assert_eq!(
            get(&m, &bag, "destination.ip"),
            Some(Value::IpAddress(vec![10, 0, 0, 2].into()))
        );
        assert_eq!(
            s("source.principal").as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/productpage")
        );
        assert_eq!(
            s("destination.principal").as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/reviews")
        );
        assert_eq!(get(&m, &bag, "connection.mtls"), Some(Value::Bool(true)));
        assert_eq!(
            s("connection.requested_server_name").as_deref(),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(s("request.host").as_deref(), Some("reviews:9080"));
        assert_eq!(s("request.method").as_deref(), Some("POST"));
        assert_eq!(s("request.scheme").as_deref(), Some("http"));
        assert_eq!(
            s("request.path").as_deref(),
            Some("/reviews/1?verbose=1&lang=en")
        );
        assert_eq!(s("request.url_path").as_deref(), Some("/reviews/1"));
        assert_eq!(
            map(&m, &bag, "request.query_params"),
            BTreeMap::from([
                ("lang".to_owned(), "en".to_owned()),
                ("verbose".to_owned(), "1".to_owned())
            ])
        );
        assert_eq!(
            map(&m, &bag, "request.headers").get("x-request-id"),
            Some(&"rid-1".to_owned())
        );
        assert_eq!(s("request.useragent").as_deref(), Some("curl/8"));
        assert_eq!(
            s("request.referer").as_deref(),
            Some("https://example.com/")
        );
        assert_eq!(s("request.id").as_deref(), Some("rid-1"));
        assert_eq!(
            get(&m, &bag, "request.time"),
            Some(Value::Timestamp(Timestamp::from_unix(1_700_000_000, 5)))
        );
        assert_eq!(get(&m, &bag, "request.size"), Some(Value::Int64(42)));
        assert_eq!(s("context.protocol").as_deref(), Some("grpc"));
        assert_eq!(s("context.reporter.kind").as_deref(), Some("inbound"));
        assert_eq!(
            get(&m, &bag, "context.time"),
            Some(Value::Timestamp(Timestamp::from_unix(1_800_000_000, 0)))
        );
        // Node identity: the bootstrap labels describe the destination (inbound).
        assert_eq!(map(&m, &bag, "destination.labels")["version"], "v2");
        assert_eq!(get(&m, &bag, "source.labels"), None);
        // Attribute-named keys, route metadata last: it wins over dynamic metadata and
        // the context extensions, and overwrites a derived value (the port).
        assert_eq!(s("source.namespace").as_deref(), Some("from-route"));
        assert_eq!(get(&m, &bag, "destination.port"), Some(Value::Int64(9443)));
        assert_eq!(
            s("destination.service.host").as_deref(),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(s("destination.service.name").as_deref(), Some("reviews"));
        assert_eq!(get(&m, &bag, "response.code"), None, "`-` is absent");
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].attribute, "request.total_size");
    }

    #[test]
    fn plain_text_http_with_an_outbound_reporter() {
        let mut ctx = request();
        ctx.source.as_mut().unwrap().principal.clear();
        ctx.tls_session = None;
        ctx.context_extensions =
            HashMap::from([("context.reporter.kind".to_owned(), "outbound".to_owned())]);
        let http = ctx.request.as_mut().unwrap().http.as_mut().unwrap();
        http.headers.clear();
        http.size = 0;
        // Headers in `header_map` (Envoy's `encode_raw_headers`), one repeated.
        http.header_map = Some(HeaderMap {
            headers: [("Accept", "a"), ("accept", "b"), ("x-request-id", "r")]
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.to_string(),
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
        });
        let (m, bag, rejected) = bag_for(&ctx);
        assert!(rejected.is_empty());
        assert_eq!(get(&m, &bag, "connection.mtls"), Some(Value::Bool(false)));
        assert_eq!(get(&m, &bag, "connection.requested_server_name"), None);
        assert_eq!(
            string(&m, &bag, "context.protocol").as_deref(),
            Some("http")
        );
        assert_eq!(get(&m, &bag, "request.size"), None);
        assert_eq!(map(&m, &bag, "request.headers")["accept"], "a,b");
        assert_eq!(string(&m, &bag, "request.id").as_deref(), Some("r"));
        // An outbound reporter's own workload is the source.
        assert_eq!(map(&m, &bag, "source.labels")["app"], "reviews");
        assert_eq!(get(&m, &bag, "destination.labels"), None);
    }

    #[test]
    fn deduplication_ids() {
        let ctx = request();
        let headers = request_headers(&ctx);
        let id = |ctx: &AttributeContext, h: &BTreeMap<String, String>, mode| {
            deduplication_id(ctx, h, mode)
        };
        assert_eq!(id(&ctx, &headers, DeduplicationId::RequestId), "rid-1");
        assert_eq!(id(&ctx, &headers, DeduplicationId::StreamId), "123456");
        assert_eq!(
            id(&ctx, &BTreeMap::new(), DeduplicationId::RequestId),
            "123456"
        );
        // Neither: a fresh id every time, never one shared by all requests.
        let none = AttributeContext::default();
        let (a, b) = (
            id(&none, &BTreeMap::new(), DeduplicationId::RequestId),
            id(&none, &BTreeMap::new(), DeduplicationId::RequestId),
        );
        assert!(a.starts_with("mixer-authz-") && a != b, "{a} {b}");
    }

    #[test]
    fn maps_a_client_controls_are_bounded() {
        let limits = DecodeLimits {
            max_string_map_entries: 3,
            ..DecodeLimits::default()
        };
        let ctx = request();
        let err = check_limits(&ctx, &limits).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            err.message(),
            "request.headers: 5 entries, over the limit of 3 (--max-string-map-entries)"
        );
        let mut ctx = AttributeContext {
            request: Some(PbRequest {
                http: Some(HttpRequest {
                    path: "/?a&b&c&d".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = check_limits(&ctx, &limits).unwrap_err();
        assert!(err.message().starts_with("request.query_params: 4 entries"));
        ctx.request.as_mut().unwrap().http.as_mut().unwrap().path = "/?a&b&&c".to_owned();
        assert!(check_limits(&ctx, &limits).is_ok());
    }

    fn edit(name: &str, value: &str, operation: HeaderOperationKind) -> HeaderEdit {
        HeaderEdit {
            name: name.to_owned(),
            value: value.to_owned(),
            operation,
        }
    }

    fn answer(status: Decision, route: RouteDirective, granted: &[i64]) -> CheckAnswer {
        let denied_by = (!status.is_ok()).then(|| "deny.rule.istio-system".to_owned());
        CheckAnswer {
            precondition: Precondition {
                status,
                valid_duration: Duration::from_secs(5),
                valid_use_count: 10,
                denied_by,
                route,
            },
            referenced: Arc::new(Referenced::new()),
            quotas: granted
                .iter()
                .map(|g| QuotaAnswer {
                    result: QuotaResult {
                        status: Decision::OK,
                        valid_duration: Duration::from_secs(1),
                        granted_amount: *g,
                        budget: None,
                    },
                    referenced: Referenced::new(),
                })
                .collect(),
        }
    }

    /// (name, value, append) of header options.
    #[allow(deprecated)]
    fn options(list: &[HeaderValueOption]) -> Vec<(String, String, bool)> {
        list.iter()
            .map(|o| {
                let h = o.header.as_ref().unwrap();
                (h.key.clone(), h.value.clone(), o.append.unwrap().value)
            })
            .collect()
    }

    fn denied_parts(r: &CheckResponse) -> (i32, i32, String, Vec<(String, String, bool)>) {
        let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
            panic!("a denial: {r:?}");
        };
        (
            r.status.as_ref().unwrap().code,
            d.status.unwrap().code,
            d.body.clone(),
            options(&d.headers),
        )
    }

    #[test]
    fn ok_carries_the_header_operations_and_the_decision() {
        use HeaderOperationKind::{Append, Remove, Replace};
        let route = RouteDirective {
            request_header_operations: vec![
                edit("x-mixer-checked", "true", Replace),
                edit("x-trace", "a", Append),
                edit("authorization", "", Remove),
            ],
            response_header_operations: vec![
                edit("x-served-by", "mixer", Replace),
                edit("set-cookie", "k=v", Append),
                edit("server", "", Remove),
            ],
            direct_response: None,
        };
        let r = response(&answer(Decision::OK, route, &[]), &[]);
        assert_eq!(r.status.as_ref().unwrap().code, code::OK);
        let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
            panic!("ok: {r:?}");
        };
        assert_eq!(
            options(&ok.headers),
            [
                ("x-mixer-checked".into(), "true".into(), false),
                ("x-trace".into(), "a".into(), true)
            ]
        );
        assert_eq!(ok.headers_to_remove, ["authorization"]);
        assert_eq!(
            options(&ok.response_headers_to_add),
            [
                ("x-served-by".into(), "mixer".into(), false),
                ("set-cookie".into(), "k=v".into(), true)
            ]
        );
        let md = &r.dynamic_metadata.as_ref().unwrap().fields[METADATA_NAMESPACE];
        let Some(PbKind::StructValue(decision)) = &md.kind else {
            panic!("{md:?}");
        };
        assert_eq!(decision.fields["status"], text("OK"));
        assert!(!decision.fields.contains_key("message"));
        assert!(!decision.fields.contains_key("rule"));
    }

    #[test]
    fn denials_answer_the_mixer_filters_http_response() {
        let deny = Decision::new(
            code::PERMISSION_DENIED,
            "deny-untrusted.istio-system:requests from untrusted workloads are not allowed",
        );
        let r = response(&answer(deny.clone(), RouteDirective::default(), &[]), &[]);
        assert_eq!(
            denied_parts(&r),
            (
                code::PERMISSION_DENIED,
                403,
                "PERMISSION_DENIED:deny-untrusted.istio-system:requests from untrusted workloads are not allowed".to_owned(),
                vec![]
            )
        );
        let md = &r.dynamic_metadata.as_ref().unwrap().fields[METADATA_NAMESPACE];
        let Some(PbKind::StructValue(decision)) = &md.kind else {
            panic!("{md:?}");
        };
        assert_eq!(decision.fields["status"], text("PERMISSION_DENIED"));
        assert_eq!(decision.fields["message"], text(&deny.message));
        assert_eq!(decision.fields["rule"], text("deny.rule.istio-system"));
        for (c, http) in [
            (code::UNAUTHENTICATED, 401),
            (code::CANCELLED, 499),
            (code::FAILED_PRECONDITION, 400),
            (code::UNAVAILABLE, 503),
        ] {
            let r = response(
                &answer(Decision::new(c, "m"), RouteDirective::default(), &[]),
                &[],
            );
            let (grpc, status, body, _) = denied_parts(&r);
            assert_eq!((grpc, status), (c, http));
            assert_eq!(body, format!("{}:m", code::name(c)));
        }
    }

    #[test]
    fn a_direct_response_wins() {
        use HeaderOperationKind::{Append, Replace};
        let mut status = Decision::new(code::RESOURCE_EXHAUSTED, "slowdown:slow down");
        status.direct_response = Some(DirectHttpResponse::default());
        let route = RouteDirective {
            direct_response: Some(DirectResponse {
                code: 302,
                body: "see elsewhere".to_owned(),
            }),
            response_header_operations: vec![
                edit("location", "https://example.com/", Replace),
                edit("set-cookie", "a=1", Append),
                edit("set-cookie", "b=2", Append),
            ],
            request_header_operations: vec![edit("x-ignored", "1", Replace)],
        };
        let r = response(&answer(status.clone(), route.clone(), &[]), &[]);
        assert_eq!(
            denied_parts(&r),
            (
                code::RESOURCE_EXHAUSTED,
                302,
                "see elsewhere".to_owned(),
                vec![
                    ("location".into(), "https://example.com/".into(), false),
                    ("set-cookie".into(), "a=1".into(), false),
                    ("set-cookie".into(), "b=2".into(), false),
                ]
            )
        );
        // No HTTP status in the direct response: the code's.
        let mut route = route;
        route.direct_response.as_mut().unwrap().code = 0;
        let r = response(&answer(status, route, &[]), &[]);
        assert_eq!(denied_parts(&r).1, 429);
    }

    #[test]
    fn an_exhausted_quota_is_a_429() {
        let quotas = [
            QuotaRequest {
                name: "requestcountquota",
                amount: 1,
                best_effort: false,
            },
            QuotaRequest {
                name: "bytes",
                amount: 2,
                best_effort: false,
            },
        ];
        let granted = response(
            &answer(Decision::OK, RouteDirective::default(), &[1, 2]),
            &quotas,
        );
        assert!(matches!(
            granted.http_response,
            Some(HttpResponse::OkResponse(_))
        ));
        let r = response(
            &answer(Decision::OK, RouteDirective::default(), &[0, 0]),
            &quotas,
        );
        assert_eq!(
            denied_parts(&r),
            (
                code::RESOURCE_EXHAUSTED,
                429,
                "RESOURCE_EXHAUSTED:Quota is exhausted for: requestcountquota,bytes".to_owned(),
                vec![]
            )
        );
    }
}
