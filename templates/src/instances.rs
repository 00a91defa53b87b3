//! Typed instances: what a handler receives for each template. Instances borrow from the
//! request (attribute values) and from the config snapshot (names), so building one
//! allocates only the vectors that hold map fields.
//!
//! Each template is declared once, by `template!`: one list of fields gives the
//! instance struct, the field table params compile against (`TemplateKind::fields`),
//! `Instance::build` (through any [`expr_lang::Evaluator`], e.g. a per-bag table that
//! evaluates shared expressions once) and the `InstanceBuilder` method that builds the
//! instance directly from a bag. The builder reads the fields in the order the list
//! gives them, which is the table's order by construction.

use std::sync::Arc;

use expr_lang::Value;

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

/// The Rust type of a field of shape `$shape`; the shape is also the name of the
/// `FieldReader` method that reads it (`templates/src/builder.rs`).
macro_rules! field_type {
    (any) => { Option<expr_lang::Value<'a>> };
    (dims) => { $crate::instances::Dims<'a> };
    (string) => { std::borrow::Cow<'a, str> };
    (int) => { i64 };
    (boolean) => { bool };
    (timestamp) => { Option<expr_lang::golib::time::Timestamp> };
    (ip) => { Option<std::borrow::Cow<'a, [u8]>> };
}

/// What params may hold for a field of shape `$shape`.
macro_rules! field_kind {
    (any) => {
        $crate::kinds::FieldKind::Value
    };
    (dims) => {
        $crate::kinds::FieldKind::ValueMap
    };
    (string) => {
        $crate::kinds::FieldKind::Typed(expr_lang::ValueType::String)
    };
    (int) => {
        $crate::kinds::FieldKind::Typed(expr_lang::ValueType::Int64)
    };
    (boolean) => {
        $crate::kinds::FieldKind::Typed(expr_lang::ValueType::Bool)
    };
    (timestamp) => {
        $crate::kinds::FieldKind::Typed(expr_lang::ValueType::Timestamp)
    };
    (ip) => {
        $crate::kinds::FieldKind::Typed(expr_lang::ValueType::IpAddress)
    };
}

/// Declares a template in a module of its name: the `Instance` struct, its field table
/// `FIELDS` and the `InstanceBuilder` method of the same name. Each field is written
/// `rust_name: shape = "proto_name" / "jsonName"`. A template whose fields are grouped
/// (authorization's `subject` and `action`) lists `group: GroupStruct { fields }`
/// instead; its proto names carry the group (`subject.user`).
macro_rules! template {
    // No fields: the builder needs no attributes.
    ($(#[$doc:meta])* $kind:ident {}) => {
        pub mod $kind {
            $(#[$doc])*
            #[derive(Clone, Debug)]
            pub struct Instance<'a> {
                /// The instance's fully qualified name.
                pub name: &'a str,
            }

            pub(crate) static FIELDS: &[$crate::kinds::FieldSpec] = &[];

            impl $crate::builder::InstanceBuilder {
                #[doc = concat!("Builds a `", stringify!($kind), "` instance.")]
                pub fn $kind(&self) -> Instance<'_> {
                    Instance { name: self.name() }
                }
            }
        }
    };
    // Grouped fields.
    (
        $(#[$doc:meta])* $kind:ident {
            $(
                $group:ident : $Group:ident {
                    $( $(#[$fdoc:meta])* $field:ident : $shape:ident = $proto:literal / $json:literal ),+ $(,)?
                }
            ),+ $(,)?
        }
    ) => {
        pub mod $kind {
            $(
                #[derive(Clone, Debug)]
                pub struct $Group<'a> {
                    $( $(#[$fdoc])* pub $field: field_type!($shape), )+
                }
            )+

            $(#[$doc])*
            #[derive(Clone, Debug)]
            pub struct Instance<'a> {
                /// The instance's fully qualified name.
                pub name: &'a str,
                $( pub $group: $Group<'a>, )+
            }

            pub(crate) static FIELDS: &[$crate::kinds::FieldSpec] = &[
                $($( $crate::kinds::FieldSpec {
                    name: $proto,
                    json: $json,
                    kind: field_kind!($shape),
                }, )+)+
            ];

            impl<'a> Instance<'a> {
                /// Builds `builder`'s instance, evaluating its fields through `eval`.
                pub fn build<E: expr_lang::Evaluator<'a>>(
                    builder: &'a $crate::builder::InstanceBuilder,
                    eval: &mut E,
                ) -> Result<Instance<'a>, $crate::builder::BuildError> {
                    let mut read = builder.reader(eval);
                    $(
                        let $group = $Group {
                            $( $field: read.$shape()?, )+
                        };
                    )+
                    Ok(Instance { name: builder.name(), $( $group, )+ })
                }
            }

            impl $crate::builder::InstanceBuilder {
                #[doc = concat!("Builds an `", stringify!($kind), "` instance.")]
                pub fn $kind<'a, B: expr_lang::Bag + ?Sized, R: expr_lang::Recorder>(
                    &'a self,
                    bag: &'a B,
                    rec: &mut R,
                ) -> Result<Instance<'a>, $crate::builder::BuildError> {
                    Instance::build(self, &mut $crate::builder::direct(bag, rec))
                }
            }
        }
    };
    // Plain fields.
    (
        $(#[$doc:meta])* $kind:ident {
            $( $(#[$fdoc:meta])* $field:ident : $shape:ident = $proto:literal / $json:literal ),+ $(,)?
        }
    ) => {
        pub mod $kind {
            $(#[$doc])*
            #[derive(Clone, Debug)]
            pub struct Instance<'a> {
                /// The instance's fully qualified name (`requestcount.instance.istio-system`).
                pub name: &'a str,
                $( $(#[$fdoc])* pub $field: field_type!($shape), )+
            }

            pub(crate) static FIELDS: &[$crate::kinds::FieldSpec] = &[
                $( $crate::kinds::FieldSpec {
                    name: $proto,
                    json: $json,
                    kind: field_kind!($shape),
                }, )+
            ];

            impl<'a> Instance<'a> {
                /// Builds `builder`'s instance, evaluating its fields through `eval`.
                pub fn build<E: expr_lang::Evaluator<'a>>(
                    builder: &'a $crate::builder::InstanceBuilder,
                    eval: &mut E,
                ) -> Result<Instance<'a>, $crate::builder::BuildError> {
                    let mut read = builder.reader(eval);
                    // Struct expression fields are evaluated in the order written, the
                    // order of `FIELDS`.
                    Ok(Instance {
                        name: builder.name(),
                        $( $field: read.$shape()?, )+
                    })
                }
            }

            impl $crate::builder::InstanceBuilder {
                #[doc = concat!("Builds a `", stringify!($kind), "` instance.")]
                pub fn $kind<'a, B: expr_lang::Bag + ?Sized, R: expr_lang::Recorder>(
                    &'a self,
                    bag: &'a B,
                    rec: &mut R,
                ) -> Result<Instance<'a>, $crate::builder::BuildError> {
                    Instance::build(self, &mut $crate::builder::direct(bag, rec))
                }
            }
        }
    };
}

template! {
    /// `metric` (REPORT).
    metric {
        /// The number reported; `None` when the instance does not set it.
        value: any = "value" / "value",
        dimensions: dims = "dimensions" / "dimensions",
        monitored_resource_type: string = "monitored_resource_type" / "monitoredResourceType",
        monitored_resource_dimensions: dims =
            "monitored_resource_dimensions" / "monitoredResourceDimensions",
    }
}

template! {
    /// `logentry` (REPORT).
    logentry {
        variables: dims = "variables" / "variables",
        /// `None` when unset (Mixer's zero time, `0001-01-01T00:00:00Z`).
        timestamp: timestamp = "timestamp" / "timestamp",
        severity: string = "severity" / "severity",
        monitored_resource_type: string = "monitored_resource_type" / "monitoredResourceType",
        monitored_resource_dimensions: dims =
            "monitored_resource_dimensions" / "monitoredResourceDimensions",
    }
}

template! {
    /// `tracespan` (REPORT).
    tracespan {
        trace_id: string = "trace_id" / "traceId",
        span_id: string = "span_id" / "spanId",
        parent_span_id: string = "parent_span_id" / "parentSpanId",
        span_name: string = "span_name" / "spanName",
        start_time: timestamp = "start_time" / "startTime",
        end_time: timestamp = "end_time" / "endTime",
        span_tags: dims = "span_tags" / "spanTags",
        // The proto field itself is camelCase.
        http_status_code: int = "httpStatusCode" / "httpStatusCode",
        client_span: boolean = "client_span" / "clientSpan",
        rewrite_client_span_id: boolean = "rewrite_client_span_id" / "rewriteClientSpanId",
        source_name: string = "source_name" / "sourceName",
        source_ip: ip = "source_ip" / "sourceIp",
        destination_name: string = "destination_name" / "destinationName",
        destination_ip: ip = "destination_ip" / "destinationIp",
        request_size: int = "request_size" / "requestSize",
        request_total_size: int = "request_total_size" / "requestTotalSize",
        response_size: int = "response_size" / "responseSize",
        response_total_size: int = "response_total_size" / "responseTotalSize",
        api_protocol: string = "api_protocol" / "apiProtocol",
    }
}

template! {
    /// `quota` (QUOTA): the dimensions identify the counter.
    quota {
        dimensions: dims = "dimensions" / "dimensions",
    }
}

template! {
    /// `listentry` (CHECK): the value to look up in a list.
    listentry {
        value: any = "value" / "value",
    }
}

template! {
    /// `checknothing` (CHECK): no fields; a rule match alone triggers the handler.
    checknothing {}
}

template! {
    /// `reportnothing` (REPORT): no fields.
    reportnothing {}
}

template! {
    /// `authorization` (CHECK).
    authorization {
        subject: Subject {
            user: string = "subject.user" / "subject.user",
            groups: string = "subject.groups" / "subject.groups",
            properties: dims = "subject.properties" / "subject.properties",
        },
        action: Action {
            namespace: string = "action.namespace" / "action.namespace",
            service: string = "action.service" / "action.service",
            method: string = "action.method" / "action.method",
            path: string = "action.path" / "action.path",
            properties: dims = "action.properties" / "action.properties",
        },
    }
}

template! {
    /// `apikey` (CHECK).
    apikey {
        api: string = "api" / "api",
        api_version: string = "api_version" / "apiVersion",
        api_operation: string = "api_operation" / "apiOperation",
        api_key: string = "api_key" / "apiKey",
        timestamp: timestamp = "timestamp" / "timestamp",
    }
}

template! {
    /// `edge` (REPORT): one service-graph edge.
    edge {
        timestamp: timestamp = "timestamp" / "timestamp",
        source_workload_namespace: string =
            "source_workload_namespace" / "sourceWorkloadNamespace",
        source_workload_name: string = "source_workload_name" / "sourceWorkloadName",
        source_owner: string = "source_owner" / "sourceOwner",
        source_uid: string = "source_uid" / "sourceUid",
        destination_workload_namespace: string =
            "destination_workload_namespace" / "destinationWorkloadNamespace",
        destination_workload_name: string =
            "destination_workload_name" / "destinationWorkloadName",
        destination_owner: string = "destination_owner" / "destinationOwner",
        destination_uid: string = "destination_uid" / "destinationUid",
        destination_service_namespace: string =
            "destination_service_namespace" / "destinationServiceNamespace",
        destination_service_name: string =
            "destination_service_name" / "destinationServiceName",
        context_protocol: string = "context_protocol" / "contextProtocol",
        api_protocol: string = "api_protocol" / "apiProtocol",
    }
}

template! {
    /// `kubernetes` (ATTRIBUTE_GENERATOR) input.
    kubernetes {
        source_uid: string = "source_uid" / "sourceUid",
        source_ip: ip = "source_ip" / "sourceIp",
        destination_uid: string = "destination_uid" / "destinationUid",
        destination_ip: ip = "destination_ip" / "destinationIp",
        destination_port: int = "destination_port" / "destinationPort",
    }
}
