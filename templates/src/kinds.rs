//! The template kinds compiled into the server, their varieties and their fields.

use std::fmt;

use expr_lang::ValueType;

/// Which API call a template serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variety {
    /// Check RPC precondition.
    Check,
    /// Report RPC.
    Report,
    /// Quota allocation inside Check.
    Quota,
    /// Pre-processing that produces attributes, before Check and each Report record.
    AttributeGenerator,
}

impl Variety {
    pub fn name(self) -> &'static str {
        match self {
            Variety::Check => "check",
            Variety::Report => "report",
            Variety::Quota => "quota",
            Variety::AttributeGenerator => "attribute_generator",
        }
    }
}

/// A template compiled into the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TemplateKind {
    Metric,
    LogEntry,
    TraceSpan,
    Quota,
    ListEntry,
    CheckNothing,
    ReportNothing,
    Authorization,
    ApiKey,
    Edge,
    Kubernetes,
}

impl TemplateKind {
    pub const ALL: [TemplateKind; 11] = [
        TemplateKind::Metric,
        TemplateKind::LogEntry,
        TemplateKind::TraceSpan,
        TemplateKind::Quota,
        TemplateKind::ListEntry,
        TemplateKind::CheckNothing,
        TemplateKind::ReportNothing,
        TemplateKind::Authorization,
        TemplateKind::ApiKey,
        TemplateKind::Edge,
        TemplateKind::Kubernetes,
    ];

    /// The name used as `compiledTemplate:` and as the legacy resource `kind:`.
    pub fn name(self) -> &'static str {
        match self {
            TemplateKind::Metric => "metric",
            TemplateKind::LogEntry => "logentry",
            TemplateKind::TraceSpan => "tracespan",
            TemplateKind::Quota => "quota",
            TemplateKind::ListEntry => "listentry",
            TemplateKind::CheckNothing => "checknothing",
            TemplateKind::ReportNothing => "reportnothing",
            TemplateKind::Authorization => "authorization",
            TemplateKind::ApiKey => "apikey",
            TemplateKind::Edge => "edge",
            TemplateKind::Kubernetes => "kubernetes",
        }
    }

    pub fn from_name(name: &str) -> Option<TemplateKind> {
        TemplateKind::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn variety(self) -> Variety {
        match self {
            TemplateKind::Metric
            | TemplateKind::LogEntry
            | TemplateKind::TraceSpan
            | TemplateKind::ReportNothing
            | TemplateKind::Edge => Variety::Report,
            TemplateKind::ListEntry
            | TemplateKind::CheckNothing
            | TemplateKind::Authorization
            | TemplateKind::ApiKey => Variety::Check,
            TemplateKind::Quota => Variety::Quota,
            TemplateKind::Kubernetes => Variety::AttributeGenerator,
        }
    }

    /// The template's fields, in declaration order.
    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            TemplateKind::Metric => METRIC,
            TemplateKind::LogEntry => LOGENTRY,
            TemplateKind::TraceSpan => TRACESPAN,
            TemplateKind::Quota => QUOTA,
            TemplateKind::ListEntry => LISTENTRY,
            TemplateKind::CheckNothing | TemplateKind::ReportNothing => &[],
            TemplateKind::Authorization => AUTHORIZATION,
            TemplateKind::ApiKey => APIKEY,
            TemplateKind::Edge => EDGE,
            TemplateKind::Kubernetes => KUBERNETES,
        }
    }

    /// Position of a field given by its proto name or its JSON (lowerCamel) name.
    pub fn field_index(self, name: &str) -> Option<usize> {
        self.fields()
            .iter()
            .position(|f| f.name == name || f.json == name)
    }

    /// For attribute generators: the output fields and their types, visible to
    /// `attributeBindings` as `$out.<name>`.
    pub fn outputs(self) -> &'static [(&'static str, ValueType)] {
        match self {
            TemplateKind::Kubernetes => KUBERNETES_OUTPUTS,
            _ => &[],
        }
    }
}

impl fmt::Display for TemplateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an instance param may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// An expression of any type (`istio.policy.v1beta1.Value`).
    Value,
    /// A map of name → expression of any type.
    ValueMap,
    /// An expression that must have exactly this type.
    Typed(ValueType),
}

/// One template field.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    /// The proto field name (`monitored_resource_type`); nested fields use a dot
    /// (`subject.user`).
    pub name: &'static str,
    /// The JSON name (`monitoredResourceType`).
    pub json: &'static str,
    pub kind: FieldKind,
}

const fn field(name: &'static str, json: &'static str, kind: FieldKind) -> FieldSpec {
    FieldSpec { name, json, kind }
}

use FieldKind::{Typed, Value as AnyValue, ValueMap};

const STRING: FieldKind = Typed(ValueType::String);
const INT64: FieldKind = Typed(ValueType::Int64);
const BOOL: FieldKind = Typed(ValueType::Bool);
const TIMESTAMP: FieldKind = Typed(ValueType::Timestamp);
const IP: FieldKind = Typed(ValueType::IpAddress);

static METRIC: &[FieldSpec] = &[
    field("value", "value", AnyValue),
    field("dimensions", "dimensions", ValueMap),
    field("monitored_resource_type", "monitoredResourceType", STRING),
    field(
        "monitored_resource_dimensions",
        "monitoredResourceDimensions",
        ValueMap,
    ),
];

static LOGENTRY: &[FieldSpec] = &[
    field("variables", "variables", ValueMap),
    field("timestamp", "timestamp", TIMESTAMP),
    field("severity", "severity", STRING),
    field("monitored_resource_type", "monitoredResourceType", STRING),
    field(
        "monitored_resource_dimensions",
        "monitoredResourceDimensions",
        ValueMap,
    ),
];

static TRACESPAN: &[FieldSpec] = &[
    field("trace_id", "traceId", STRING),
    field("span_id", "spanId", STRING),
    field("parent_span_id", "parentSpanId", STRING),
    field("span_name", "spanName", STRING),
    field("start_time", "startTime", TIMESTAMP),
    field("end_time", "endTime", TIMESTAMP),
    field("span_tags", "spanTags", ValueMap),
    // The proto field itself is camelCase.
    field("httpStatusCode", "httpStatusCode", INT64),
    field("client_span", "clientSpan", BOOL),
    field("rewrite_client_span_id", "rewriteClientSpanId", BOOL),
    field("source_name", "sourceName", STRING),
    field("source_ip", "sourceIp", IP),
    field("destination_name", "destinationName", STRING),
    field("destination_ip", "destinationIp", IP),
    field("request_size", "requestSize", INT64),
    field("request_total_size", "requestTotalSize", INT64),
    field("response_size", "responseSize", INT64),
    field("response_total_size", "responseTotalSize", INT64),
    field("api_protocol", "apiProtocol", STRING),
];

static QUOTA: &[FieldSpec] = &[field("dimensions", "dimensions", ValueMap)];

static LISTENTRY: &[FieldSpec] = &[field("value", "value", AnyValue)];

static AUTHORIZATION: &[FieldSpec] = &[
    field("subject.user", "subject.user", STRING),
    field("subject.groups", "subject.groups", STRING),
    field("subject.properties", "subject.properties", ValueMap),
    field("action.namespace", "action.namespace", STRING),
    field("action.service", "action.service", STRING),
    field("action.method", "action.method", STRING),
    field("action.path", "action.path", STRING),
    field("action.properties", "action.properties", ValueMap),
];

static APIKEY: &[FieldSpec] = &[
    field("api", "api", STRING),
    field("api_version", "apiVersion", STRING),
    field("api_operation", "apiOperation", STRING),
    field("api_key", "apiKey", STRING),
    field("timestamp", "timestamp", TIMESTAMP),
];

static EDGE: &[FieldSpec] = &[
    field("timestamp", "timestamp", TIMESTAMP),
    field(
        "source_workload_namespace",
        "sourceWorkloadNamespace",
        STRING,
    ),
    field("source_workload_name", "sourceWorkloadName", STRING),
    field("source_owner", "sourceOwner", STRING),
    field("source_uid", "sourceUid", STRING),
    field(
        "destination_workload_namespace",
        "destinationWorkloadNamespace",
        STRING,
    ),
    field(
        "destination_workload_name",
        "destinationWorkloadName",
        STRING,
    ),
    field("destination_owner", "destinationOwner", STRING),
    field("destination_uid", "destinationUid", STRING),
    field(
        "destination_service_namespace",
        "destinationServiceNamespace",
        STRING,
    ),
    field("destination_service_name", "destinationServiceName", STRING),
    field("context_protocol", "contextProtocol", STRING),
    field("api_protocol", "apiProtocol", STRING),
];

static KUBERNETES: &[FieldSpec] = &[
    field("source_uid", "sourceUid", STRING),
    field("source_ip", "sourceIp", IP),
    field("destination_uid", "destinationUid", STRING),
    field("destination_ip", "destinationIp", IP),
    field("destination_port", "destinationPort", INT64),
];

static KUBERNETES_OUTPUTS: &[(&str, ValueType)] = &[
    ("source_pod_uid", ValueType::String),
    ("source_pod_ip", ValueType::IpAddress),
    ("source_pod_name", ValueType::String),
    ("source_labels", ValueType::StringMap),
    ("source_namespace", ValueType::String),
    ("source_service_account_name", ValueType::String),
    ("source_host_ip", ValueType::IpAddress),
    ("source_workload_uid", ValueType::String),
    ("source_workload_name", ValueType::String),
    ("source_workload_namespace", ValueType::String),
    ("source_owner", ValueType::String),
    ("destination_pod_uid", ValueType::String),
    ("destination_pod_ip", ValueType::IpAddress),
    ("destination_pod_name", ValueType::String),
    ("destination_container_name", ValueType::String),
    ("destination_labels", ValueType::StringMap),
    ("destination_namespace", ValueType::String),
    ("destination_service_account_name", ValueType::String),
    ("destination_host_ip", ValueType::IpAddress),
    ("destination_workload_uid", ValueType::String),
    ("destination_workload_name", ValueType::String),
    ("destination_workload_namespace", ValueType::String),
    ("destination_owner", ValueType::String),
];
