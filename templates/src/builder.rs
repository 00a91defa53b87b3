//! Instance params → compiled builders → typed instances.
//!
//! Every field of an instance's `params` is an expression string. Compiling an instance
//! checks each expression against the attribute manifest and the field's declared type
//! once, when configuration loads; building an instance per request only evaluates.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use expr_lang::golib::time::Timestamp;
use expr_lang::{Bag, EvalError, FunctionTable, Manifest, Program, Recorder, Value, ValueType};
use serde_json::Value as Json;

use crate::instances::{
    Dims, apikey, authorization, checknothing, edge, kubernetes, listentry, logentry, metric,
    quota, reportnothing, tracespan,
};
use crate::kinds::{FieldKind, TemplateKind};

/// The attribute prefix `$out.` stands for in `attributeBindings`.
pub const OUTPUT_PREFIX: &str = "adapter_template_kubernetes.output.";

/// A problem with one field of an instance's params.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParamError {
    /// Path of the field, e.g. `dimensions.source_app` or `attributeBindings.source.uid`.
    pub field: String,
    pub message: String,
    /// The expression text, for expression errors.
    pub expression: Option<String>,
    /// 1-based column of the error within `expression`.
    pub column: Option<usize>,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field '{}': {}", self.field, self.message)?;
        if let Some(expr) = &self.expression {
            write!(f, " (in expression '{expr}'")?;
            if let Some(col) = self.column {
                write!(f, " at column {col}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A failure to build an instance from a request's attributes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("instance '{instance}': field '{field}': {error}")]
pub struct BuildError {
    pub instance: Arc<str>,
    pub field: String,
    pub error: EvalError,
}

enum Compiled {
    Unset,
    Expr(Program),
    Map {
        names: Box<[Arc<str>]>,
        programs: Box<[Program]>,
    },
}

/// A compiled instance: one program per field.
pub struct InstanceBuilder {
    name: Arc<str>,
    kind: TemplateKind,
    fields: Vec<Compiled>,
    bindings: Vec<(Arc<str>, Program)>,
}

impl fmt::Debug for InstanceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceBuilder")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

/// The text of an expression param: YAML strings as they are; bare numbers and booleans
/// by their text (Mixer rejected `value: 1`; accepting it changes no valid config).
fn expression_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

struct Compiler<'c> {
    manifest: &'c Manifest,
    functions: &'c FunctionTable,
    errors: Vec<ParamError>,
}

impl Compiler<'_> {
    fn expr(&mut self, field: &str, v: &Json, want: Option<ValueType>) -> Option<Program> {
        let Some(text) = expression_text(v) else {
            self.errors.push(ParamError {
                field: field.to_owned(),
                message: format!("expected an expression string, found {}", json_kind(v)),
                expression: None,
                column: None,
            });
            return None;
        };
        if text.trim().is_empty() {
            return None;
        }
        match Program::compile_with(&text, self.manifest, self.functions) {
            Ok(p) => {
                if let Some(want) = want
                    && p.result_type() != want
                {
                    self.errors.push(ParamError {
                        field: field.to_owned(),
                        message: format!(
                            "expression has type {}, but the field needs {want}",
                            p.result_type()
                        ),
                        expression: Some(text),
                        column: None,
                    });
                    return None;
                }
                Some(p)
            }
            Err(e) => {
                let column = e.column();
                self.errors.push(ParamError {
                    field: field.to_owned(),
                    message: e.message,
                    expression: Some(text),
                    column,
                });
                None
            }
        }
    }

    fn map(&mut self, field: &str, v: &Json) -> Compiled {
        let Json::Object(entries) = v else {
            if !v.is_null() {
                self.errors.push(ParamError {
                    field: field.to_owned(),
                    message: format!(
                        "expected a mapping of name to expression, found {}",
                        json_kind(v)
                    ),
                    expression: None,
                    column: None,
                });
            }
            return Compiled::Unset;
        };
        let mut names = Vec::with_capacity(entries.len());
        let mut programs = Vec::with_capacity(entries.len());
        for (k, ev) in entries {
            if let Some(p) = self.expr(&format!("{field}.{k}"), ev, None) {
                names.push(Arc::from(k.as_str()));
                programs.push(p);
            }
        }
        Compiled::Map {
            names: names.into(),
            programs: programs.into(),
        }
    }
}

impl InstanceBuilder {
    /// Compiles an instance of `kind` named `name` (its fully qualified name) from its
    /// params. `bindings` are the `attributeBindings` of an attribute generator. Every
    /// problem is reported, each with its field path.
    pub fn compile(
        name: &str,
        kind: TemplateKind,
        params: &Json,
        bindings: Option<&Json>,
        manifest: &Manifest,
        functions: &FunctionTable,
    ) -> Result<InstanceBuilder, Vec<ParamError>> {
        let mut c = Compiler {
            manifest,
            functions,
            errors: Vec::new(),
        };
        let specs = kind.fields();
        let mut fields: Vec<Compiled> = specs.iter().map(|_| Compiled::Unset).collect();

        let mut flat: Vec<(String, &Json)> = Vec::new();
        match params {
            Json::Null => {}
            Json::Object(m) => {
                for (k, v) in m {
                    // Nested groups (`subject`, `action` of authorization) flatten to
                    // `subject.user`.
                    let nested = specs.iter().any(|s| s.name.starts_with(&format!("{k}.")));
                    match (nested, v) {
                        (true, Json::Object(inner)) => {
                            for (ik, iv) in inner {
                                flat.push((format!("{k}.{ik}"), iv));
                            }
                        }
                        _ => flat.push((k.clone(), v)),
                    }
                }
            }
            other => c.errors.push(ParamError {
                field: "params".to_owned(),
                message: format!("expected a mapping of fields, found {}", json_kind(other)),
                expression: None,
                column: None,
            }),
        }
        for (key, v) in flat {
            let Some(i) = kind.field_index(&key) else {
                let known: Vec<&str> = specs.iter().map(|s| s.json).collect();
                c.errors.push(ParamError {
                    field: key.clone(),
                    message: if known.is_empty() {
                        format!("template '{kind}' has no fields")
                    } else {
                        format!(
                            "template '{kind}' has no field '{key}'; its fields are: {}",
                            known.join(", ")
                        )
                    },
                    expression: None,
                    column: None,
                });
                continue;
            };
            let spec = &specs[i];
            fields[i] = match spec.kind {
                FieldKind::ValueMap => c.map(spec.json, v),
                FieldKind::Value => c
                    .expr(spec.json, v, None)
                    .map_or(Compiled::Unset, Compiled::Expr),
                FieldKind::Typed(t) => c
                    .expr(spec.json, v, Some(t))
                    .map_or(Compiled::Unset, Compiled::Expr),
            };
        }

        let mut compiled_bindings = Vec::new();
        if let Some(b) = bindings.filter(|b| !b.is_null()) {
            compiled_bindings = compile_bindings(kind, b, &mut c);
        }

        if c.errors.is_empty() {
            Ok(InstanceBuilder {
                name: Arc::from(name),
                kind,
                fields,
                bindings: compiled_bindings,
            })
        } else {
            Err(c.errors)
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    pub fn kind(&self) -> TemplateKind {
        self.kind
    }

    /// The checked type of a single-expression field, when it is set.
    pub fn field_type(&self, field: &str) -> Option<ValueType> {
        match &self.fields[self.kind.field_index(field)?] {
            Compiled::Expr(p) => Some(p.result_type()),
            _ => None,
        }
    }

    /// The entries of a map field with their checked types (e.g. a metric's dimensions).
    pub fn map_field_types(&self, field: &str) -> Vec<(Arc<str>, ValueType)> {
        match self.kind.field_index(field).map(|i| &self.fields[i]) {
            Some(Compiled::Map { names, programs }) => names
                .iter()
                .cloned()
                .zip(programs.iter().map(Program::result_type))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Attribute bindings of an attribute generator: target attribute → program over
    /// the generator's outputs (as `adapter_template_kubernetes.output.*`) and attributes.
    pub fn bindings(&self) -> &[(Arc<str>, Program)] {
        &self.bindings
    }

    /// A digest of what this builder was compiled from, for deciding whether a handler
    /// can be reused across config reloads.
    pub fn signature(&self) -> String {
        let mut s = format!("{}:{}", self.name, self.kind);
        for f in &self.fields {
            match f {
                Compiled::Unset => s.push_str("|-"),
                Compiled::Expr(p) => {
                    s.push('|');
                    s.push_str(p.source());
                }
                Compiled::Map { names, programs } => {
                    s.push_str("|{");
                    for (n, p) in names.iter().zip(programs.iter()) {
                        s.push_str(n);
                        s.push('=');
                        s.push_str(p.source());
                        s.push(';');
                    }
                    s.push('}');
                }
            }
        }
        s
    }

    fn err(&self, i: usize, error: EvalError) -> BuildError {
        BuildError {
            instance: self.name.clone(),
            field: self.kind.fields()[i].json.to_owned(),
            error,
        }
    }

    fn value<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        i: usize,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<Option<Value<'a>>, BuildError> {
        match &self.fields[i] {
            Compiled::Expr(p) => p
                .evaluate_recorded(bag, rec)
                .map(Some)
                .map_err(|e| self.err(i, e)),
            _ => Ok(None),
        }
    }

    fn string<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        i: usize,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<Cow<'a, str>, BuildError> {
        Ok(match self.value(i, bag, rec)? {
            Some(Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s)) => {
                s
            }
            Some(other) => Cow::Owned(other.to_string()),
            None => Cow::Borrowed(""),
        })
    }

    fn int<B: Bag + ?Sized, R: Recorder>(
        &self,
        i: usize,
        bag: &B,
        rec: &mut R,
    ) -> Result<i64, BuildError> {
        Ok(match self.value(i, bag, rec)? {
            Some(Value::Int64(v)) => v,
            _ => 0,
        })
    }

    fn boolean<B: Bag + ?Sized, R: Recorder>(
        &self,
        i: usize,
        bag: &B,
        rec: &mut R,
    ) -> Result<bool, BuildError> {
        Ok(matches!(self.value(i, bag, rec)?, Some(Value::Bool(true))))
    }

    fn timestamp<B: Bag + ?Sized, R: Recorder>(
        &self,
        i: usize,
        bag: &B,
        rec: &mut R,
    ) -> Result<Option<Timestamp>, BuildError> {
        Ok(match self.value(i, bag, rec)? {
            Some(Value::Timestamp(t)) => Some(t),
            _ => None,
        })
    }

    fn ip<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        i: usize,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<Option<Cow<'a, [u8]>>, BuildError> {
        Ok(match self.value(i, bag, rec)? {
            Some(Value::IpAddress(b)) => Some(b),
            _ => None,
        })
    }

    fn dims<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        i: usize,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<Dims<'a>, BuildError> {
        match &self.fields[i] {
            Compiled::Map { names, programs } => {
                let mut values = Vec::with_capacity(programs.len());
                for (n, p) in names.iter().zip(programs.iter()) {
                    let v = p.evaluate_recorded(bag, rec).map_err(|e| BuildError {
                        instance: self.name.clone(),
                        field: format!("{}.{n}", self.kind.fields()[i].json),
                        error: e,
                    })?;
                    values.push(v);
                }
                Ok(Dims { names, values })
            }
            _ => Ok(Dims::default()),
        }
    }

    /// Builds a `metric` instance.
    pub fn metric<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<metric::Instance<'a>, BuildError> {
        Ok(metric::Instance {
            name: &self.name,
            value: self.value(0, bag, rec)?,
            dimensions: self.dims(1, bag, rec)?,
            monitored_resource_type: self.string(2, bag, rec)?,
            monitored_resource_dimensions: self.dims(3, bag, rec)?,
        })
    }

    /// Builds a `logentry` instance.
    pub fn logentry<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<logentry::Instance<'a>, BuildError> {
        Ok(logentry::Instance {
            name: &self.name,
            variables: self.dims(0, bag, rec)?,
            timestamp: self.timestamp(1, bag, rec)?,
            severity: self.string(2, bag, rec)?,
            monitored_resource_type: self.string(3, bag, rec)?,
            monitored_resource_dimensions: self.dims(4, bag, rec)?,
        })
    }

    /// Builds a `tracespan` instance.
    pub fn tracespan<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<tracespan::Instance<'a>, BuildError> {
        Ok(tracespan::Instance {
            name: &self.name,
            trace_id: self.string(0, bag, rec)?,
            span_id: self.string(1, bag, rec)?,
            parent_span_id: self.string(2, bag, rec)?,
            span_name: self.string(3, bag, rec)?,
            start_time: self.timestamp(4, bag, rec)?,
            end_time: self.timestamp(5, bag, rec)?,
            span_tags: self.dims(6, bag, rec)?,
            http_status_code: self.int(7, bag, rec)?,
            client_span: self.boolean(8, bag, rec)?,
            rewrite_client_span_id: self.boolean(9, bag, rec)?,
            source_name: self.string(10, bag, rec)?,
            source_ip: self.ip(11, bag, rec)?,
            destination_name: self.string(12, bag, rec)?,
            destination_ip: self.ip(13, bag, rec)?,
            request_size: self.int(14, bag, rec)?,
            request_total_size: self.int(15, bag, rec)?,
            response_size: self.int(16, bag, rec)?,
            response_total_size: self.int(17, bag, rec)?,
            api_protocol: self.string(18, bag, rec)?,
        })
    }

    /// Builds a `quota` instance.
    pub fn quota<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<quota::Instance<'a>, BuildError> {
        Ok(quota::Instance {
            name: &self.name,
            dimensions: self.dims(0, bag, rec)?,
        })
    }

    /// Builds a `listentry` instance.
    pub fn listentry<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<listentry::Instance<'a>, BuildError> {
        Ok(listentry::Instance {
            name: &self.name,
            value: self.value(0, bag, rec)?,
        })
    }

    /// Builds a `checknothing` instance.
    pub fn checknothing(&self) -> checknothing::Instance<'_> {
        checknothing::Instance { name: &self.name }
    }

    /// Builds a `reportnothing` instance.
    pub fn reportnothing(&self) -> reportnothing::Instance<'_> {
        reportnothing::Instance { name: &self.name }
    }

    /// Builds an `authorization` instance.
    pub fn authorization<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<authorization::Instance<'a>, BuildError> {
        Ok(authorization::Instance {
            name: &self.name,
            subject: authorization::Subject {
                user: self.string(0, bag, rec)?,
                groups: self.string(1, bag, rec)?,
                properties: self.dims(2, bag, rec)?,
            },
            action: authorization::Action {
                namespace: self.string(3, bag, rec)?,
                service: self.string(4, bag, rec)?,
                method: self.string(5, bag, rec)?,
                path: self.string(6, bag, rec)?,
                properties: self.dims(7, bag, rec)?,
            },
        })
    }

    /// Builds an `apikey` instance.
    pub fn apikey<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<apikey::Instance<'a>, BuildError> {
        Ok(apikey::Instance {
            name: &self.name,
            api: self.string(0, bag, rec)?,
            api_version: self.string(1, bag, rec)?,
            api_operation: self.string(2, bag, rec)?,
            api_key: self.string(3, bag, rec)?,
            timestamp: self.timestamp(4, bag, rec)?,
        })
    }

    /// Builds an `edge` instance.
    pub fn edge<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<edge::Instance<'a>, BuildError> {
        Ok(edge::Instance {
            name: &self.name,
            timestamp: self.timestamp(0, bag, rec)?,
            source_workload_namespace: self.string(1, bag, rec)?,
            source_workload_name: self.string(2, bag, rec)?,
            source_owner: self.string(3, bag, rec)?,
            source_uid: self.string(4, bag, rec)?,
            destination_workload_namespace: self.string(5, bag, rec)?,
            destination_workload_name: self.string(6, bag, rec)?,
            destination_owner: self.string(7, bag, rec)?,
            destination_uid: self.string(8, bag, rec)?,
            destination_service_namespace: self.string(9, bag, rec)?,
            destination_service_name: self.string(10, bag, rec)?,
            context_protocol: self.string(11, bag, rec)?,
            api_protocol: self.string(12, bag, rec)?,
        })
    }

    /// Builds a `kubernetes` (attribute generator) input instance.
    pub fn kubernetes<'a, B: Bag + ?Sized, R: Recorder>(
        &'a self,
        bag: &'a B,
        rec: &mut R,
    ) -> Result<kubernetes::Instance<'a>, BuildError> {
        Ok(kubernetes::Instance {
            name: &self.name,
            source_uid: self.string(0, bag, rec)?,
            source_ip: self.ip(1, bag, rec)?,
            destination_uid: self.string(2, bag, rec)?,
            destination_ip: self.ip(3, bag, rec)?,
            destination_port: self.int(4, bag, rec)?,
        })
    }
}

/// Compiles `attributeBindings`: `$out.<field>` names an output of the generator.
fn compile_bindings(
    kind: TemplateKind,
    b: &Json,
    c: &mut Compiler<'_>,
) -> Vec<(Arc<str>, Program)> {
    let Json::Object(entries) = b else {
        c.errors.push(ParamError {
            field: "attributeBindings".to_owned(),
            message: format!(
                "expected a mapping of attribute name to expression, found {}",
                json_kind(b)
            ),
            expression: None,
            column: None,
        });
        return Vec::new();
    };
    if kind.outputs().is_empty() {
        c.errors.push(ParamError {
            field: "attributeBindings".to_owned(),
            message: format!("template '{kind}' produces no outputs to bind"),
            expression: None,
            column: None,
        });
        return Vec::new();
    }
    let mut manifest = c.manifest.clone();
    for (out, ty) in kind.outputs() {
        manifest.declare(format!("{OUTPUT_PREFIX}{out}"), *ty);
    }
    let mut out = Vec::new();
    for (attr, v) in entries {
        let field = format!("attributeBindings.{attr}");
        let Some(text) = expression_text(v) else {
            c.errors.push(ParamError {
                field,
                message: format!("expected an expression string, found {}", json_kind(v)),
                expression: None,
                column: None,
            });
            continue;
        };
        let rewritten = text.replace("$out.", OUTPUT_PREFIX);
        match Program::compile_with(&rewritten, &manifest, c.functions) {
            Ok(p) => {
                if let Some(want) = c.manifest.value_type(attr)
                    && want != p.result_type()
                {
                    c.errors.push(ParamError {
                        field,
                        message: format!(
                            "expression has type {}, but attribute '{attr}' is declared {want}",
                            p.result_type()
                        ),
                        expression: Some(text),
                        column: None,
                    });
                    continue;
                }
                out.push((Arc::from(attr.as_str()), p));
            }
            Err(e) => c.errors.push(ParamError {
                field,
                message: e.message.replace(OUTPUT_PREFIX, "$out."),
                expression: Some(text),
                column: None,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use expr_lang::{MapBag, NoRecording};
    use serde_json::json;

    fn manifest() -> Manifest {
        Manifest::from_pairs([
            ("request.size", ValueType::Int64),
            ("source.labels", ValueType::StringMap),
            ("response.duration", ValueType::Duration),
            ("destination.service.host", ValueType::String),
            ("source.ip", ValueType::IpAddress),
            ("source.uid", ValueType::String),
        ])
    }

    fn compile(kind: TemplateKind, params: Json) -> Result<InstanceBuilder, Vec<ParamError>> {
        InstanceBuilder::compile(
            "x.instance.istio-system",
            kind,
            &params,
            None,
            &manifest(),
            &FunctionTable::standard(),
        )
    }

    #[test]
    fn metric_builds_from_the_bag() {
        let b = compile(
            TemplateKind::Metric,
            json!({
                "value": "request.size | 0",
                "dimensions": {
                    "app": "source.labels[\"app\"] | \"unknown\"",
                    "service": "destination.service.host | \"unknown\"",
                },
                "monitored_resource_type": "\"UNSPECIFIED\"",
            }),
        )
        .unwrap();
        let bag = MapBag::new().with("request.size", Value::Int64(12));
        let m = b.metric(&bag, &mut NoRecording).unwrap();
        assert_eq!(m.value, Some(Value::Int64(12)));
        assert_eq!(m.dimensions.get("app"), Some(&Value::str("unknown")));
        assert_eq!(m.monitored_resource_type, "UNSPECIFIED");
        assert_eq!(
            b.map_field_types("dimensions"),
            vec![
                (Arc::from("app"), ValueType::String),
                (Arc::from("service"), ValueType::String)
            ]
        );
    }

    #[test]
    fn errors_name_the_field_and_column() {
        let errs = compile(
            TemplateKind::Metric,
            json!({
                "value": "request.size | ",
                "dimensions": {"bad": "nope == 1"},
                "unknownField": "1",
            }),
        )
        .unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.field == "dimensions.bad"
            && e.message == "unknown attribute nope"
            && e.column == Some(1)));
        assert!(
            errs.iter()
                .any(|e| e.field == "unknownField" && e.message.contains("has no field"))
        );
        let errs =
            compile(TemplateKind::LogEntry, json!({"severity": "request.size"})).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "field 'severity': expression has type INT64, but the field needs STRING (in expression 'request.size')"
        );
    }

    #[test]
    fn absent_attribute_fails_the_build_with_the_field() {
        let b = compile(TemplateKind::Metric, json!({"value": "request.size"})).unwrap();
        let e = b.metric(&MapBag::new(), &mut NoRecording).unwrap_err();
        assert_eq!(
            e.to_string(),
            "instance 'x.instance.istio-system': field 'value': lookup failed: 'request.size'"
        );
    }

    #[test]
    fn nested_authorization_and_bindings() {
        let b = compile(
            TemplateKind::Authorization,
            json!({"subject": {"user": "source.uid | \"\""}, "action": {"path": "\"/x\""}}),
        )
        .unwrap();
        let empty = MapBag::new();
        let a = b.authorization(&empty, &mut NoRecording).unwrap();
        assert_eq!(a.action.path, "/x");
        let k = InstanceBuilder::compile(
            "attributes.kubernetes.istio-system",
            TemplateKind::Kubernetes,
            &json!({"source_uid": "source.uid | \"\""}),
            Some(&json!({"source.uid": "$out.source_pod_uid | \"unknown\""})),
            &manifest(),
            &FunctionTable::standard(),
        )
        .unwrap();
        assert_eq!(k.bindings().len(), 1);
        let bad = InstanceBuilder::compile(
            "attributes.kubernetes.istio-system",
            TemplateKind::Kubernetes,
            &json!({}),
            Some(&json!({"source.uid": "$out.nope"})),
            &manifest(),
            &FunctionTable::standard(),
        )
        .unwrap_err();
        assert!(bad[0].message.contains("$out.nope"), "{bad:?}");
    }
}
