//! Typed instances: what a handler receives for each template. Instances borrow from the
//! request (attribute values) and from the config snapshot (names), so building one
//! allocates only the vectors that hold map fields.

use std::borrow::Cow;
use std::sync::Arc;

use expr_lang::Value;
use expr_lang::golib::time::Timestamp;

/// A map field (`dimensions`, `variables`, `span_tags`, ...): names from the config,
/// values evaluated per request, in the same order.
#[derive(Clone, Debug, Default)]
pub struct Dims<'a> {
    pub names: &'a [Arc<str>],
    pub values: Vec<Value<'a>>,
}

impl<'a> Dims<'a> {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `(name, value)` pairs in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value<'a>)> {
        self.names.iter().map(|n| &**n).zip(self.values.iter())
    }

    /// The value of the entry `name`.
    pub fn get(&self, name: &str) -> Option<&Value<'a>> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

pub mod metric {
    use super::*;

    /// `metric` (REPORT).
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        /// The instance's fully qualified name (`requestcount.instance.istio-system`).
        pub name: &'a str,
        /// The number reported; `None` when the instance does not set it.
        pub value: Option<Value<'a>>,
        pub dimensions: Dims<'a>,
        pub monitored_resource_type: Cow<'a, str>,
        pub monitored_resource_dimensions: Dims<'a>,
    }
}

pub mod logentry {
    use super::*;

    /// `logentry` (REPORT).
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        pub name: &'a str,
        pub variables: Dims<'a>,
        /// `None` when unset (Mixer's zero time, `0001-01-01T00:00:00Z`).
        pub timestamp: Option<Timestamp>,
        pub severity: Cow<'a, str>,
        pub monitored_resource_type: Cow<'a, str>,
        pub monitored_resource_dimensions: Dims<'a>,
    }
}

pub mod tracespan {
    use super::*;

    /// `tracespan` (REPORT).
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        pub name: &'a str,
        pub trace_id: Cow<'a, str>,
        pub span_id: Cow<'a, str>,
        pub parent_span_id: Cow<'a, str>,
        pub span_name: Cow<'a, str>,
        pub start_time: Option<Timestamp>,
        pub end_time: Option<Timestamp>,
        pub span_tags: Dims<'a>,
        pub http_status_code: i64,
        pub client_span: bool,
        pub rewrite_client_span_id: bool,
        pub source_name: Cow<'a, str>,
        pub source_ip: Option<Cow<'a, [u8]>>,
        pub destination_name: Cow<'a, str>,
        pub destination_ip: Option<Cow<'a, [u8]>>,
        pub request_size: i64,
        pub request_total_size: i64,
        pub response_size: i64,
        pub response_total_size: i64,
        pub api_protocol: Cow<'a, str>,
    }
}

pub mod quota {
    use super::*;

    /// `quota` (QUOTA): the dimensions identify the counter.
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        pub name: &'a str,
        pub dimensions: Dims<'a>,
    }
}

pub mod listentry {
    use super::*;

    /// `listentry` (CHECK): the value to look up in a list.
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        pub name: &'a str,
        pub value: Option<Value<'a>>,
    }
}

pub mod checknothing {
    /// `checknothing` (CHECK): no fields; a rule match alone triggers the handler.
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        pub name: &'a str,
    }
}

pub mod reportnothing {
    /// `reportnothing` (REPORT): no fields.
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        pub name: &'a str,
    }
}

pub mod authorization {
    use super::*;

    #[derive(Clone, Debug)]
    pub struct Subject<'a> {
        pub user: Cow<'a, str>,
        pub groups: Cow<'a, str>,
        pub properties: Dims<'a>,
    }

    #[derive(Clone, Debug)]
    pub struct Action<'a> {
        pub namespace: Cow<'a, str>,
        pub service: Cow<'a, str>,
        pub method: Cow<'a, str>,
        pub path: Cow<'a, str>,
        pub properties: Dims<'a>,
    }

    /// `authorization` (CHECK).
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        pub name: &'a str,
        pub subject: Subject<'a>,
        pub action: Action<'a>,
    }
}

pub mod apikey {
    use super::*;

    /// `apikey` (CHECK).
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        pub name: &'a str,
        pub api: Cow<'a, str>,
        pub api_version: Cow<'a, str>,
        pub api_operation: Cow<'a, str>,
        pub api_key: Cow<'a, str>,
        pub timestamp: Option<Timestamp>,
    }
}

pub mod edge {
    use super::*;

    /// `edge` (REPORT): one service-graph edge.
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        pub name: &'a str,
        pub timestamp: Option<Timestamp>,
        pub source_workload_namespace: Cow<'a, str>,
        pub source_workload_name: Cow<'a, str>,
        pub source_owner: Cow<'a, str>,
        pub source_uid: Cow<'a, str>,
        pub destination_workload_namespace: Cow<'a, str>,
        pub destination_workload_name: Cow<'a, str>,
        pub destination_owner: Cow<'a, str>,
        pub destination_uid: Cow<'a, str>,
        pub destination_service_namespace: Cow<'a, str>,
        pub destination_service_name: Cow<'a, str>,
        pub context_protocol: Cow<'a, str>,
        pub api_protocol: Cow<'a, str>,
    }
}

pub mod kubernetes {
    use super::*;

    /// `kubernetes` (ATTRIBUTE_GENERATOR) input.
    #[derive(Clone, Debug)]
    pub struct Instance<'a> {
        pub name: &'a str,
        pub source_uid: Cow<'a, str>,
        pub source_ip: Option<Cow<'a, [u8]>>,
        pub destination_uid: Cow<'a, str>,
        pub destination_ip: Option<Cow<'a, [u8]>>,
        pub destination_port: i64,
    }

    /// What the generator produced: output field name → value. Fields it did not set
    /// are absent, so `attributeBindings` fall back through `|`.
    #[derive(Clone, Debug, Default)]
    pub struct Output {
        pub values: Vec<(&'static str, Value<'static>)>,
    }
}
