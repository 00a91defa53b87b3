//! Instance params → compiled builders → typed instances.
//!
//! Every field of an instance's `params` is an expression string. Compiling an instance
//! checks each expression against the attribute manifest and the field's declared type
//! once, when configuration loads; building an instance per request only evaluates.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use expr_lang::golib::time::Timestamp;
use expr_lang::{
    Bag, Direct, EvalError, Evaluator, ExprId, FunctionTable, Manifest, PlanBuilder, Program,
    Recorder, Value, ValueType,
};
use serde_json::Value as Json;

use crate::instances::Dims;
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

/// A field's program and its id in the snapshot's evaluation plan.
struct Expr {
    program: Program,
    id: ExprId,
}

impl Expr {
    fn new(program: Program) -> Expr {
        Expr {
            program,
            id: ExprId::NONE,
        }
    }
}

enum Compiled {
    Unset,
    Expr(Expr),
    Map {
        names: Box<[Arc<str>]>,
        programs: Box<[Expr]>,
    },
}

/// One `attributeBindings` entry of an attribute generator: the attribute it sets and
/// the expression giving the value, where `$out.<field>` reads as the attribute
/// [`OUTPUT_PREFIX`]`<field>`.
pub struct Binding {
    pub attribute: Arc<str>,
    pub program: Program,
}

/// A compiled instance: one program per field.
pub struct InstanceBuilder {
    name: Arc<str>,
    kind: TemplateKind,
    fields: Vec<Compiled>,
    /// Attribute generators only, in the order written.
    bindings: Vec<Binding>,
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
                programs.push(Expr::new(p));
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
    /// params. `bindings` are the `attributeBindings` of an attribute generator: each
    /// must name an output that exists and have the type of the attribute it sets.
    /// Every problem is reported, each with its field path.
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
                    .map_or(Compiled::Unset, |p| Compiled::Expr(Expr::new(p))),
                FieldKind::Typed(t) => c
                    .expr(spec.json, v, Some(t))
                    .map_or(Compiled::Unset, |p| Compiled::Expr(Expr::new(p))),
            };
        }

        let bindings = match bindings.filter(|b| !b.is_null()) {
            Some(b) => compile_bindings(kind, b, &mut c),
            None => Vec::new(),
        };

        if c.errors.is_empty() {
            Ok(InstanceBuilder {
                name: Arc::from(name),
                kind,
                fields,
                bindings,
            })
        } else {
            Err(c.errors)
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> TemplateKind {
        self.kind
    }

    /// An attribute generator's `attributeBindings`, in the order written.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The entries of a map field with their checked types (e.g. a metric's dimensions).
    pub fn map_field_types(&self, field: &str) -> Vec<(Arc<str>, ValueType)> {
        match self.kind.field_index(field).map(|i| &self.fields[i]) {
            Some(Compiled::Map { names, programs }) => names
                .iter()
                .cloned()
                .zip(programs.iter().map(|e| e.program.result_type()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A digest of what this builder was compiled from, for deciding whether a handler
    /// can be reused across config reloads.
    pub fn signature(&self) -> String {
        let mut s = format!("{}:{}", self.name, self.kind);
        for f in &self.fields {
            match f {
                Compiled::Unset => s.push_str("|-"),
                Compiled::Expr(e) => {
                    s.push('|');
                    s.push_str(e.program.source());
                }
                Compiled::Map { names, programs } => {
                    s.push_str("|{");
                    for (n, e) in names.iter().zip(programs.iter()) {
                        s.push_str(n);
                        s.push('=');
                        s.push_str(e.program.source());
                        s.push(';');
                    }
                    s.push('}');
                }
            }
        }
        for b in &self.bindings {
            s.push_str("|>");
            s.push_str(&b.attribute);
            s.push('=');
            s.push_str(b.program.source());
        }
        s
    }

    /// Gives every expression of this builder its id in `plan`, so that instances built
    /// through an [`expr_lang::EvalTable`] share results with other users of the same
    /// expression.
    pub fn plan(&mut self, plan: &mut PlanBuilder) {
        for field in &mut self.fields {
            match field {
                Compiled::Unset => {}
                Compiled::Expr(e) => e.id = plan.intern(&e.program),
                Compiled::Map { programs, .. } => {
                    for e in programs.iter_mut() {
                        e.id = plan.intern(&e.program);
                    }
                }
            }
        }
    }

    /// Reads the fields of this builder's template in table order through `eval`, for
    /// the builder functions `template!` generates (`templates/src/instances.rs`).
    pub(crate) fn reader<'a, 'e, E: Evaluator<'a>>(
        &'a self,
        eval: &'e mut E,
    ) -> FieldReader<'a, 'e, E> {
        FieldReader {
            builder: self,
            eval,
            next: 0,
        }
    }
}

/// The evaluator of the generated `builder.<template>(bag, rec)` methods.
pub(crate) fn direct<'a, 'r, B: Bag + ?Sized, R: Recorder>(
    bag: &'a B,
    rec: &'r mut R,
) -> Direct<'a, 'r, B, R> {
    Direct::new(bag, rec)
}

/// Evaluates an instance's fields one after the other: each call reads the next field of
/// the template's table, so a generated builder that calls one method per declared field
/// reads each field at its own position.
pub(crate) struct FieldReader<'a, 'e, E> {
    builder: &'a InstanceBuilder,
    eval: &'e mut E,
    next: usize,
}

impl<'a, E: Evaluator<'a>> FieldReader<'a, '_, E> {
    /// The next field's position and compiled form.
    fn advance(&mut self) -> (usize, &'a Compiled) {
        let i = self.next;
        self.next += 1;
        (i, &self.builder.fields[i])
    }

    fn err(&self, field: String, error: EvalError) -> BuildError {
        BuildError {
            instance: self.builder.name.clone(),
            field,
            error,
        }
    }

    fn json_name(&self, i: usize) -> &'static str {
        self.builder.kind.fields()[i].json
    }

    /// A single-expression field of any type; `None` when unset.
    pub(crate) fn any(&mut self) -> Result<Option<Value<'a>>, BuildError> {
        match self.advance() {
            (i, Compiled::Expr(e)) => self
                .eval
                .evaluate(e.id, &e.program)
                .map(Some)
                .map_err(|e| self.err(self.json_name(i).to_owned(), *e)),
            _ => Ok(None),
        }
    }

    pub(crate) fn string(&mut self) -> Result<Cow<'a, str>, BuildError> {
        Ok(match self.any()? {
            Some(Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s)) => {
                s
            }
            Some(other) => Cow::Owned(other.to_string()),
            None => Cow::Borrowed(""),
        })
    }

    pub(crate) fn int(&mut self) -> Result<i64, BuildError> {
        Ok(match self.any()? {
            Some(Value::Int64(v)) => v,
            _ => 0,
        })
    }

    pub(crate) fn boolean(&mut self) -> Result<bool, BuildError> {
        Ok(matches!(self.any()?, Some(Value::Bool(true))))
    }

    pub(crate) fn timestamp(&mut self) -> Result<Option<Timestamp>, BuildError> {
        Ok(match self.any()? {
            Some(Value::Timestamp(t)) => Some(t),
            _ => None,
        })
    }

    pub(crate) fn ip(&mut self) -> Result<Option<Cow<'a, [u8]>>, BuildError> {
        Ok(match self.any()? {
            Some(Value::IpAddress(b)) => Some(b),
            _ => None,
        })
    }

    /// A map field; empty when unset.
    pub(crate) fn dims(&mut self) -> Result<Dims<'a>, BuildError> {
        let (i, Compiled::Map { names, programs }) = self.advance() else {
            return Ok(Dims::default());
        };
        let mut values = Vec::with_capacity(programs.len());
        for (n, e) in names.iter().zip(programs.iter()) {
            let v = self
                .eval
                .evaluate(e.id, &e.program)
                .map_err(|e| self.err(format!("{}.{n}", self.json_name(i)), *e))?;
            values.push(v);
        }
        Ok(Dims { names, values })
    }
}

/// Compiles `attributeBindings`: `$out.<field>` names an output of the generator, and
/// each expression must have the type of the attribute it sets.
fn compile_bindings(kind: TemplateKind, b: &Json, c: &mut Compiler<'_>) -> Vec<Binding> {
    let mut out = Vec::new();
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
        return out;
    };
    if kind.outputs().is_empty() {
        c.errors.push(ParamError {
            field: "attributeBindings".to_owned(),
            message: format!("template '{kind}' produces no outputs to bind"),
            expression: None,
            column: None,
        });
        return out;
    }
    let mut manifest = c.manifest.clone();
    for (out, ty) in kind.outputs() {
        manifest.declare(format!("{OUTPUT_PREFIX}{out}"), *ty);
    }
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
                } else {
                    out.push(Binding {
                        attribute: Arc::from(attr.as_str()),
                        program: p,
                    });
                }
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
            ("request.time", ValueType::Timestamp),
            ("destination.port", ValueType::Int64),
            ("connection.mtls", ValueType::Bool),
        ])
    }

    /// A bag with every attribute of [`manifest`] but `response.duration`.
    fn bag() -> MapBag {
        MapBag::new()
            .with("request.size", Value::Int64(12))
            .with("destination.service.host", Value::str("reviews"))
            .with("source.ip", Value::IpAddress(vec![10, 0, 0, 1].into()))
            .with("source.uid", Value::str("kubernetes://a.default"))
            .with("request.time", Value::Timestamp(time()))
            .with("destination.port", Value::Int64(9080))
            .with("connection.mtls", Value::Bool(true))
    }

    fn time() -> Timestamp {
        Timestamp::from_unix(1_500_000_000, 7)
    }

    /// Params setting each string field of `kind` to a literal of its own JSON name, so
    /// that a field read at another field's position shows.
    fn own_names(kind: TemplateKind) -> serde_json::Map<String, Json> {
        kind.fields()
            .iter()
            .filter(|f| f.kind == FieldKind::Typed(ValueType::String))
            .map(|f| (f.json.to_owned(), Json::from(format!("\"{}\"", f.json))))
            .collect()
    }

    /// `own_names` plus `extra`.
    fn params(kind: TemplateKind, extra: Json) -> Json {
        let mut p = own_names(kind);
        p.extend(extra.as_object().cloned().unwrap_or_default());
        Json::Object(p)
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
        assert_eq!(k.kind(), TemplateKind::Kubernetes);
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

    #[test]
    fn every_kind_has_a_consistent_table() {
        for kind in TemplateKind::ALL {
            for (i, f) in kind.fields().iter().enumerate() {
                assert_eq!(kind.field_index(f.name), Some(i), "{kind} {}", f.name);
                assert_eq!(kind.field_index(f.json), Some(i), "{kind} {}", f.json);
            }
        }
    }

    #[test]
    fn metric_builds_every_field() {
        let b = compile(
            TemplateKind::Metric,
            params(
                TemplateKind::Metric,
                json!({
                    "value": "request.size",
                    "dimensions": {"port": "destination.port"},
                    "monitoredResourceDimensions": {"host": "destination.service.host"},
                }),
            ),
        )
        .unwrap();
        let bag = bag();
        let m = b.metric(&bag, &mut NoRecording).unwrap();
        assert_eq!(m.name, "x.instance.istio-system");
        assert_eq!(m.value, Some(Value::Int64(12)));
        assert_eq!(m.dimensions.get("port"), Some(&Value::Int64(9080)));
        assert_eq!(m.monitored_resource_type, "monitoredResourceType");
        assert_eq!(
            m.monitored_resource_dimensions.get("host"),
            Some(&Value::str("reviews"))
        );
    }

    #[test]
    fn logentry_builds_every_field() {
        let b = compile(
            TemplateKind::LogEntry,
            params(
                TemplateKind::LogEntry,
                json!({
                    "variables": {"size": "request.size", "mtls": "connection.mtls"},
                    "timestamp": "request.time",
                    "monitored_resource_dimensions": {"uid": "source.uid"},
                }),
            ),
        )
        .unwrap();
        let bag = bag();
        let l = b.logentry(&bag, &mut NoRecording).unwrap();
        assert_eq!(
            l.variables.iter().collect::<Vec<_>>(),
            [("size", &Value::Int64(12)), ("mtls", &Value::Bool(true))]
        );
        assert_eq!(l.timestamp, Some(time()));
        assert_eq!(l.severity, "severity");
        assert_eq!(l.monitored_resource_type, "monitoredResourceType");
        assert_eq!(
            l.monitored_resource_dimensions.get("uid"),
            Some(&Value::str("kubernetes://a.default"))
        );
    }

    #[test]
    fn tracespan_builds_every_field() {
        let b = compile(
            TemplateKind::TraceSpan,
            params(
                TemplateKind::TraceSpan,
                json!({
                    "startTime": "request.time",
                    "end_time": "timestamp(\"2017-07-14T02:40:00Z\")",
                    "spanTags": {"port": "destination.port"},
                    "httpStatusCode": "200",
                    "clientSpan": "connection.mtls",
                    "rewriteClientSpanId": "false",
                    "sourceIp": "source.ip",
                    "destinationIp": "ip(\"10.0.0.2\")",
                    "requestSize": "request.size",
                    "requestTotalSize": "13",
                    "responseSize": "14",
                    "responseTotalSize": "destination.port",
                }),
            ),
        )
        .unwrap();
        let bag = bag();
        let t = b.tracespan(&bag, &mut NoRecording).unwrap();
        let strings = [
            (&t.trace_id, "traceId"),
            (&t.span_id, "spanId"),
            (&t.parent_span_id, "parentSpanId"),
            (&t.span_name, "spanName"),
            (&t.source_name, "sourceName"),
            (&t.destination_name, "destinationName"),
            (&t.api_protocol, "apiProtocol"),
        ];
        for (got, want) in strings {
            assert_eq!(got, want);
        }
        assert_eq!(t.start_time, Some(time()));
        assert_eq!(
            t.end_time.map(|e| e.to_unix_nanos()),
            Some(1_500_000_000_000_000_000)
        );
        assert_eq!(t.span_tags.get("port"), Some(&Value::Int64(9080)));
        assert_eq!(t.http_status_code, 200);
        assert!(t.client_span);
        assert!(!t.rewrite_client_span_id);
        assert_eq!(t.source_ip.as_deref(), Some(&[10, 0, 0, 1][..]));
        assert_eq!(t.destination_ip.as_deref().map(<[u8]>::len), Some(16));
        assert_eq!(
            (
                t.request_size,
                t.request_total_size,
                t.response_size,
                t.response_total_size
            ),
            (12, 13, 14, 9080)
        );
    }

    #[test]
    fn quota_builds_its_dimensions() {
        let b = compile(
            TemplateKind::Quota,
            json!({"dimensions": {"uid": "source.uid", "size": "request.size"}}),
        )
        .unwrap();
        let bag = bag();
        let q = b.quota(&bag, &mut NoRecording).unwrap();
        assert_eq!(q.name, "x.instance.istio-system");
        assert_eq!(q.dimensions.len(), 2);
        assert_eq!(q.dimensions.get("size"), Some(&Value::Int64(12)));
    }

    #[test]
    fn listentry_builds_its_value() {
        let b = compile(TemplateKind::ListEntry, json!({"value": "source.ip"})).unwrap();
        let bag = bag();
        let l = b.listentry(&bag, &mut NoRecording).unwrap();
        assert_eq!(l.value, Some(Value::IpAddress(vec![10, 0, 0, 1].into())));
        let unset = compile(TemplateKind::ListEntry, json!({})).unwrap();
        assert_eq!(unset.listentry(&bag, &mut NoRecording).unwrap().value, None);
    }

    #[test]
    fn templates_without_fields_build_their_name() {
        let c = compile(TemplateKind::CheckNothing, Json::Null).unwrap();
        assert_eq!(c.checknothing().name, "x.instance.istio-system");
        let r = compile(TemplateKind::ReportNothing, json!({})).unwrap();
        assert_eq!(r.reportnothing().name, "x.instance.istio-system");
        let errs = compile(TemplateKind::CheckNothing, json!({"value": "1"})).unwrap_err();
        assert_eq!(errs[0].message, "template 'checknothing' has no fields");
    }

    #[test]
    fn authorization_builds_every_field() {
        let b = compile(
            TemplateKind::Authorization,
            params(
                TemplateKind::Authorization,
                json!({
                    "subject": {"properties": {"uid": "source.uid"}},
                    "action": {"properties": {"port": "destination.port"}},
                }),
            ),
        )
        .unwrap();
        let bag = bag();
        let a = b.authorization(&bag, &mut NoRecording).unwrap();
        let s = &a.subject;
        assert_eq!((&*s.user, &*s.groups), ("subject.user", "subject.groups"));
        assert_eq!(
            s.properties.get("uid"),
            Some(&Value::str("kubernetes://a.default"))
        );
        let act = &a.action;
        assert_eq!(
            [&*act.namespace, &*act.service, &*act.method, &*act.path],
            [
                "action.namespace",
                "action.service",
                "action.method",
                "action.path"
            ]
        );
        assert_eq!(act.properties.get("port"), Some(&Value::Int64(9080)));
    }

    #[test]
    fn apikey_builds_every_field() {
        let b = compile(
            TemplateKind::ApiKey,
            params(TemplateKind::ApiKey, json!({"timestamp": "request.time"})),
        )
        .unwrap();
        let bag = bag();
        let k = b.apikey(&bag, &mut NoRecording).unwrap();
        assert_eq!(
            [&*k.api, &*k.api_version, &*k.api_operation, &*k.api_key],
            ["api", "apiVersion", "apiOperation", "apiKey"]
        );
        assert_eq!(k.timestamp, Some(time()));
    }

    #[test]
    fn edge_builds_every_field() {
        let b = compile(
            TemplateKind::Edge,
            params(
                TemplateKind::Edge,
                json!({"timestamp": "request.time", "sourceUid": "source.uid"}),
            ),
        )
        .unwrap();
        let bag = bag();
        let e = b.edge(&bag, &mut NoRecording).unwrap();
        assert_eq!(e.timestamp, Some(time()));
        assert_eq!(e.source_uid, "kubernetes://a.default");
        let strings = [
            (&e.source_workload_namespace, "sourceWorkloadNamespace"),
            (&e.source_workload_name, "sourceWorkloadName"),
            (&e.source_owner, "sourceOwner"),
            (
                &e.destination_workload_namespace,
                "destinationWorkloadNamespace",
            ),
            (&e.destination_workload_name, "destinationWorkloadName"),
            (&e.destination_owner, "destinationOwner"),
            (&e.destination_uid, "destinationUid"),
            (
                &e.destination_service_namespace,
                "destinationServiceNamespace",
            ),
            (&e.destination_service_name, "destinationServiceName"),
            (&e.context_protocol, "contextProtocol"),
            (&e.api_protocol, "apiProtocol"),
        ];
        for (got, want) in strings {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn kubernetes_builds_every_field() {
        let b = compile(
            TemplateKind::Kubernetes,
            params(
                TemplateKind::Kubernetes,
                json!({
                    "source_ip": "source.ip",
                    "destination_ip": "ip(\"10.0.0.2\")",
                    "destination_port": "destination.port",
                }),
            ),
        )
        .unwrap();
        let bag = bag();
        let k = b.kubernetes(&bag, &mut NoRecording).unwrap();
        assert_eq!(
            (&*k.source_uid, &*k.destination_uid),
            ("sourceUid", "destinationUid")
        );
        assert_eq!(k.source_ip.as_deref(), Some(&[10, 0, 0, 1][..]));
        assert_eq!(k.destination_ip.as_deref().map(<[u8]>::len), Some(16));
        assert_eq!(k.destination_port, 9080);
    }

    #[test]
    fn a_map_entry_that_fails_names_its_key() {
        let b = compile(
            TemplateKind::Edge,
            json!({"timestamp": "request.time", "sourceUid": "source.uid"}),
        )
        .unwrap();
        let e = b
            .edge(
                &MapBag::new().with("request.time", Value::Timestamp(time())),
                &mut NoRecording,
            )
            .unwrap_err();
        assert_eq!(e.field, "sourceUid");
        let q = compile(
            TemplateKind::Quota,
            json!({"dimensions": {"uid": "source.uid"}}),
        )
        .unwrap()
        .quota(&MapBag::new(), &mut NoRecording)
        .unwrap_err();
        assert_eq!(q.field, "dimensions.uid");
    }
}

#[cfg(test)]
mod plan_tests {
    use std::cell::RefCell;

    use expr_lang::{AttrKey, EvalTable, MapBag, NoRecording};
    use serde_json::json;

    use super::*;
    use crate::instances::{logentry, metric};

    /// Remembers the attributes looked up in the bag it wraps.
    struct Counting {
        bag: MapBag,
        lookups: RefCell<Vec<String>>,
    }

    impl Bag for Counting {
        fn get(&self, key: AttrKey<'_>) -> Option<Value<'_>> {
            self.lookups.borrow_mut().push(key.name.to_owned());
            self.bag.get(key)
        }
    }

    fn compile(name: &str, kind: TemplateKind, params: Json) -> InstanceBuilder {
        let manifest = Manifest::from_pairs([
            ("request.size", ValueType::Int64),
            ("source.name", ValueType::String),
            ("response.code", ValueType::Int64),
        ]);
        InstanceBuilder::compile(
            name,
            kind,
            &params,
            None,
            &manifest,
            &FunctionTable::standard(),
        )
        .unwrap()
    }

    fn builders() -> Vec<InstanceBuilder> {
        let dims = json!({"source": "source.name | \"unknown\"", "code": "response.code | 200"});
        vec![
            compile(
                "count",
                TemplateKind::Metric,
                json!({"value": "1", "dimensions": dims}),
            ),
            compile(
                "size",
                TemplateKind::Metric,
                json!({"value": "request.size", "dimensions": dims}),
            ),
            compile(
                "log",
                TemplateKind::LogEntry,
                json!({"severity": "source.name | \"unknown\"", "variables": {"size": "request.size"}}),
            ),
        ]
    }

    #[test]
    fn shared_expressions_are_evaluated_once_per_bag() {
        let mut builders = builders();
        let mut plan = PlanBuilder::new();
        for b in &mut builders {
            b.plan(&mut plan);
        }
        // `1`, the two dimensions and `request.size`; the severity is typed STRING, like
        // the dimension of the same text, so it shares the dimension's id.
        let plan = plan.finish();
        assert_eq!(plan.len(), 4);
        let bags = [
            Counting {
                bag: MapBag::new()
                    .with("request.size", Value::Int64(7))
                    .with("source.name", Value::str("a")),
                lookups: RefCell::default(),
            },
            Counting {
                bag: MapBag::new().with("request.size", Value::Int64(9)),
                lookups: RefCell::default(),
            },
        ];
        let mut table = EvalTable::new(&plan);
        for bag in &bags {
            let mut eval = table.for_bag(bag);
            let count = metric::Instance::build(&builders[0], &mut eval).unwrap();
            let size = metric::Instance::build(&builders[1], &mut eval).unwrap();
            let log = logentry::Instance::build(&builders[2], &mut eval).unwrap();
            // The same instances as built directly.
            let direct = builders[1].metric(&bag.bag, &mut NoRecording).unwrap();
            assert_eq!(size.value, direct.value);
            assert_eq!(size.dimensions.values, direct.dimensions.values);
            assert_eq!(count.dimensions.values, direct.dimensions.values);
            assert_eq!(log.severity, direct.dimensions.values[0].to_string());
            let mut lookups = bag.lookups.take();
            lookups.sort();
            assert_eq!(
                lookups,
                ["request.size", "response.code", "source.name"],
                "each attribute read once"
            );
        }
        assert_eq!(table.evaluations(), 8);
    }

    #[test]
    fn a_shared_failure_fails_each_instance_with_its_own_field() {
        let mut builders = builders();
        let mut plan = PlanBuilder::new();
        builders.iter_mut().for_each(|b| b.plan(&mut plan));
        let mut table = EvalTable::new(&plan.finish());
        let bag = MapBag::new();
        let mut eval = table.for_bag(&bag);
        let size = metric::Instance::build(&builders[1], &mut eval).unwrap_err();
        let log = logentry::Instance::build(&builders[2], &mut eval).unwrap_err();
        assert_eq!(
            size.to_string(),
            "instance 'size': field 'value': lookup failed: 'request.size'"
        );
        assert_eq!(
            log.to_string(),
            "instance 'log': field 'variables.size': lookup failed: 'request.size'"
        );
        assert_eq!(table.evaluations(), 1);
    }
}
