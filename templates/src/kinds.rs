//! The template kinds compiled into the server, their varieties and their fields.

use std::fmt;

use expr_lang::ValueType;

use crate::instances;

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

    /// The template's fields, in declaration order (declared with the instance struct,
    /// in `templates/src/instances.rs`).
    pub(crate) fn fields(self) -> &'static [FieldSpec] {
        match self {
            TemplateKind::Metric => instances::metric::FIELDS,
            TemplateKind::LogEntry => instances::logentry::FIELDS,
            TemplateKind::TraceSpan => instances::tracespan::FIELDS,
            TemplateKind::Quota => instances::quota::FIELDS,
            TemplateKind::ListEntry => instances::listentry::FIELDS,
            TemplateKind::CheckNothing => instances::checknothing::FIELDS,
            TemplateKind::ReportNothing => instances::reportnothing::FIELDS,
            TemplateKind::Authorization => instances::authorization::FIELDS,
            TemplateKind::ApiKey => instances::apikey::FIELDS,
            TemplateKind::Edge => instances::edge::FIELDS,
            TemplateKind::Kubernetes => instances::kubernetes::FIELDS,
        }
    }

    /// Position of a field given by its proto name or its JSON (lowerCamel) name.
    pub(crate) fn field_index(self, name: &str) -> Option<usize> {
        self.fields()
            .iter()
            .position(|f| f.name == name || f.json == name)
    }

    /// For attribute generators: the output fields and their types, visible to
    /// `attributeBindings` as `$out.<name>`.
    pub(crate) fn outputs(self) -> &'static [(&'static str, ValueType)] {
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
pub(crate) enum FieldKind {
    /// An expression of any type (`istio.policy.v1beta1.Value`).
    Value,
    /// A map of name → expression of any type.
    ValueMap,
    /// An expression that must have exactly this type.
    Typed(ValueType),
}

/// One template field.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldSpec {
    /// The proto field name (`monitored_resource_type`); nested fields use a dot
    /// (`subject.user`).
    pub name: &'static str,
    /// The JSON name (`monitoredResourceType`).
    pub json: &'static str,
    pub kind: FieldKind,
}

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
