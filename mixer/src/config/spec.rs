//! The specs of Mixer's resource kinds, as written in YAML, decoded strictly: an unknown
//! field is an error naming its path.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value as Json;

/// Decodes a spec into `T`, reporting the failing field path and the problem.
pub(crate) fn decode_spec<T: for<'de> Deserialize<'de>>(
    spec: &Json,
) -> Result<T, (String, String)> {
    let empty = Json::Object(Default::default());
    let spec = if spec.is_null() { &empty } else { spec };
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        (
            if path == "." { "spec".to_owned() } else { path },
            e.into_inner().to_string(),
        )
    })
}

/// `kind: attributemanifest`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestSpec {
    #[serde(default)]
    #[allow(dead_code)]
    pub revision: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub name: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeInfoSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttributeInfoSpec {
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(rename = "valueType", alias = "value_type", default)]
    pub value_type: Option<String>,
}

/// `kind: instance`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstanceSpec {
    #[serde(rename = "compiledTemplate", alias = "compiled_template", default)]
    pub compiled_template: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub params: Json,
    #[serde(rename = "attributeBindings", alias = "attribute_bindings", default)]
    pub attribute_bindings: Json,
    #[serde(default)]
    #[allow(dead_code)]
    pub name: Option<String>,
}

/// `kind: handler`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandlerSpec {
    #[serde(rename = "compiledAdapter", alias = "compiled_adapter", default)]
    pub compiled_adapter: Option<String>,
    #[serde(default)]
    pub adapter: Option<String>,
    #[serde(default)]
    pub params: Json,
    #[serde(default)]
    pub connection: Option<Json>,
    #[serde(default)]
    #[allow(dead_code)]
    pub name: Option<String>,
}

/// `kind: rule`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    #[serde(rename = "match", default)]
    pub predicate: String,
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
    #[serde(
        rename = "requestHeaderOperations",
        alias = "request_header_operations",
        default
    )]
    pub request_header_operations: Vec<HeaderOperationSpec>,
    #[serde(
        rename = "responseHeaderOperations",
        alias = "response_header_operations",
        default
    )]
    pub response_header_operations: Vec<HeaderOperationSpec>,
    #[serde(default)]
    pub sampling: Option<Json>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionSpec {
    pub handler: String,
    #[serde(default)]
    pub instances: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderOperationSpec {
    pub name: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub operation: Option<Json>,
}

/// `kind: QuotaSpec` (Istio's `istio.mixer.v1.config.client.QuotaSpec`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaSpecSpec {
    #[serde(default)]
    pub rules: Vec<QuotaRuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaRuleSpec {
    #[serde(rename = "match", default)]
    pub matches: Vec<AttributeMatchSpec>,
    #[serde(default)]
    pub quotas: Vec<QuotaChargeSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttributeMatchSpec {
    #[serde(default)]
    pub clause: BTreeMap<String, StringMatchSpec>,
}

/// A oneof: at most one of the three is set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StringMatchSpec {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaChargeSpec {
    #[serde(default)]
    pub quota: String,
    /// An int32, written as a number or (protobuf JSON) a string of digits.
    #[serde(default)]
    pub charge: Json,
}

/// `kind: QuotaSpecBinding`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaSpecBindingSpec {
    #[serde(default)]
    pub services: Vec<IstioServiceSpec>,
    #[serde(rename = "quotaSpecs", alias = "quota_specs", default)]
    pub quota_specs: Vec<QuotaSpecReferenceSpec>,
}

/// Istio's `IstioService` reference.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IstioServiceSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaSpecReferenceSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}
