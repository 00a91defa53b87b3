//! Documents → [`Snapshot`]: classify resources, resolve references, compile every
//! expression, validate and build handlers. Every problem becomes a [`Diagnostic`] naming
//! the file, line, resource, field and (for expressions) column.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use adapters::{DynAdapter, ValidateInput};
use expr_lang::{FunctionTable, Manifest, Program, ValueType};
use serde::Deserialize;
use serde_json::Value as Json;
use templates::{InstanceBuilder, ParamError, TemplateKind, Variety};

use crate::attrs::AttrTable;
use crate::config::store::Document;
use crate::runtime::snapshot::{
    Action, Destination, HandlerEntry, HeaderOperation, HeaderOperationKind, RoutedRule, Routes,
    Rule, Snapshot, Summary,
};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The configuration is invalid.
    Error,
    /// Something is skipped or ignored, as Mixer would have; the rest works.
    Warning,
}

/// One problem found while compiling configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    /// `kind/namespace/name`.
    pub resource: Option<String>,
    /// Path of the field within the resource's spec.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{sev}: ")?;
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Options for compiling a snapshot.
#[derive(Clone)]
pub struct CompileOptions {
    /// Rules in this namespace apply to every request (`istio-system`).
    pub default_namespace: String,
    /// Build handlers (false for `mixer validate`, which only checks).
    pub build_handlers: bool,
    /// Number of the snapshot being built.
    pub generation: u64,
    /// What handlers share for the life of the process.
    pub resources: Arc<adapters::Resources>,
}

/// The outcome of a compile: a snapshot of everything valid, and every problem found.
pub struct Compiled {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// Kinds that are not Mixer's: skipped quietly.
fn is_foreign_kind(kind: &str) -> bool {
    !(kind == "rule"
        || kind == "handler"
        || kind == "instance"
        || kind == "attributemanifest"
        || kind == "adapter"
        || kind == "template"
        || TemplateKind::from_name(kind).is_some()
        || adapters::find(kind).is_some()
        || adapters::KNOWN_UNSUPPORTED.contains(&kind))
}

struct Res<'d> {
    doc: &'d Document,
    namespace: String,
}

impl Res<'_> {
    fn ident(&self) -> String {
        format!("{}/{}/{}", self.doc.kind, self.namespace, self.doc.name)
    }

    fn fqn(&self) -> String {
        format!("{}.{}.{}", self.doc.name, self.doc.kind, self.namespace)
    }
}

struct Diags {
    list: Vec<Diagnostic>,
}

impl Diags {
    fn push(
        &mut self,
        severity: Severity,
        res: Option<&Res<'_>>,
        doc: Option<&Document>,
        field: Option<String>,
        message: String,
    ) {
        let doc = res.map(|r| r.doc).or(doc);
        self.list.push(Diagnostic {
            severity,
            file: doc.map(|d| d.file.clone()),
            line: doc.map(|d| d.line),
            resource: res.map(Res::ident),
            field,
            message,
        });
    }

    fn error(&mut self, res: &Res<'_>, field: Option<&str>, message: impl Into<String>) {
        self.push(
            Severity::Error,
            Some(res),
            None,
            field.map(str::to_owned),
            message.into(),
        );
    }

    fn warning(&mut self, res: &Res<'_>, field: Option<&str>, message: impl Into<String>) {
        self.push(
            Severity::Warning,
            Some(res),
            None,
            field.map(str::to_owned),
            message.into(),
        );
    }

    fn param_errors(&mut self, res: &Res<'_>, prefix: &str, errors: Vec<ParamError>) {
        for e in errors {
            let field = if prefix.is_empty() {
                e.field.clone()
            } else {
                format!("{prefix}.{}", e.field)
            };
            let mut message = e.message.clone();
            if let Some(expr) = &e.expression {
                message.push_str(&format!(" (in expression '{expr}'"));
                if let Some(col) = e.column {
                    message.push_str(&format!(" at column {col}"));
                }
                message.push(')');
            }
            self.push(Severity::Error, Some(res), None, Some(field), message);
        }
    }
}

/// Decodes a spec into `T`, reporting the failing field path.
fn decode_spec<T: for<'de> Deserialize<'de>>(spec: &Json) -> Result<T, (String, String)> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestSpec {
    #[serde(default)]
    #[allow(dead_code)]
    revision: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, AttributeInfoSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributeInfoSpec {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(rename = "valueType", alias = "value_type", default)]
    value_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceSpec {
    #[serde(rename = "compiledTemplate", alias = "compiled_template", default)]
    compiled_template: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    params: Json,
    #[serde(rename = "attributeBindings", alias = "attribute_bindings", default)]
    attribute_bindings: Json,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlerSpec {
    #[serde(rename = "compiledAdapter", alias = "compiled_adapter", default)]
    compiled_adapter: Option<String>,
    #[serde(default)]
    adapter: Option<String>,
    #[serde(default)]
    params: Json,
    #[serde(default)]
    connection: Option<Json>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    #[serde(rename = "match", default)]
    predicate: String,
    #[serde(default)]
    actions: Vec<ActionSpec>,
    #[serde(
        rename = "requestHeaderOperations",
        alias = "request_header_operations",
        default
    )]
    request_header_operations: Vec<HeaderOperationSpec>,
    #[serde(
        rename = "responseHeaderOperations",
        alias = "response_header_operations",
        default
    )]
    response_header_operations: Vec<HeaderOperationSpec>,
    #[serde(default)]
    sampling: Option<Json>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionSpec {
    handler: String,
    #[serde(default)]
    instances: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderOperationSpec {
    name: String,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    operation: Option<Json>,
}

/// A handler declaration, before validation.
struct HandlerDecl<'d> {
    res: Res<'d>,
    /// Internal name (`name.namespace`, or `name.kind.namespace` for legacy kinds).
    name: String,
    adapter: &'static dyn DynAdapter,
    params: Json,
}

/// Resolves a reference from a rule in `namespace` to a resource of `kind` (Mixer's
/// rules): `a` → `a.kind.ns`; `a.b` → `a.b.ns` (legacy kind) then `a.kind.b`
/// (namespace); three or more parts are used as they are.
fn resolve_reference(
    reference: &str,
    kind: &str,
    namespace: &str,
    exists: impl Fn(&str) -> bool,
) -> Option<String> {
    let parts: Vec<&str> = reference.split('.').collect();
    let candidates = match parts.as_slice() {
        [a] => vec![format!("{a}.{kind}.{namespace}")],
        [a, b] => vec![format!("{a}.{b}.{namespace}"), format!("{a}.{kind}.{b}")],
        _ => vec![reference.to_owned()],
    };
    candidates.into_iter().find(|c| exists(c))
}

/// Compiles documents into a snapshot. `previous` lends handlers whose signature did not
/// change, so their state survives the reload.
pub fn compile(docs: &[Document], opts: &CompileOptions, previous: Option<&Snapshot>) -> Compiled {
    let mut diags = Diags { list: Vec::new() };
    let functions = FunctionTable::standard();

    // 1. Classify, keyed by (kind, namespace, name); the last duplicate wins, as in Mixer.
    let mut resources: BTreeMap<(String, String, String), Res<'_>> = BTreeMap::new();
    for doc in docs {
        if is_foreign_kind(&doc.kind) {
            tracing::debug!(kind = %doc.kind, name = %doc.name, file = %doc.file.display(), "Skipping a resource that is not Mixer configuration.");
            continue;
        }
        let Some(ns) = doc.namespace.clone().filter(|n| !n.is_empty()) else {
            diags.push(
                Severity::Error,
                None,
                Some(doc),
                Some("metadata.namespace".to_owned()),
                format!(
                    "{} '{}' has no metadata.namespace (required: e.g. namespace: {})",
                    doc.kind, doc.name, opts.default_namespace
                ),
            );
            continue;
        };
        let res = Res { doc, namespace: ns };
        let key = (doc.kind.clone(), res.namespace.clone(), doc.name.clone());
        if let Some(prev) = resources.get(&key) {
            let msg = format!(
                "defined again (first at {}:{}); the later definition is used",
                prev.doc.file.display(),
                prev.doc.line
            );
            diags.warning(&res, None, msg);
        }
        resources.insert(key, res);
    }

    // 2. Attribute manifests: their union is the vocabulary.
    let mut manifest = Manifest::new();
    let mut manifests = 0;
    for res in resources
        .values()
        .filter(|r| r.doc.kind == "attributemanifest")
    {
        manifests += 1;
        match decode_spec::<ManifestSpec>(&res.doc.spec) {
            Err((field, msg)) => diags.error(res, Some(&field), msg),
            Ok(spec) => {
                for (name, info) in spec.attributes {
                    let field = format!("attributes.{name}.valueType");
                    match info.value_type.as_deref().map(ValueType::from_name) {
                        Some(Some(t)) if t != ValueType::Unspecified => {
                            if let Some(prev) = manifest.value_type(&name)
                                && prev != t
                            {
                                diags.error(res, Some(&field), format!("attribute '{name}' is declared {t} here but {prev} in another manifest"));
                                continue;
                            }
                            manifest.declare(name, t);
                        }
                        Some(_) => diags.error(
                            res,
                            Some(&field),
                            format!(
                                "unknown value type {:?}; expected one of {}",
                                info.value_type.unwrap_or_default(),
                                ValueType::ALL.map(ValueType::name).join(", ")
                            ),
                        ),
                        None => diags.error(res, Some(&field), "valueType is required"),
                    }
                }
            }
        }
    }
    if manifests == 0 {
        manifest = Manifest::istio_vocabulary();
        diags.list.push(Diagnostic {
            severity: Severity::Warning,
            file: None,
            line: None,
            resource: None,
            field: None,
            message: "the configuration has no attributemanifest: expressions are checked against Istio's standard attribute vocabulary".to_owned(),
        });
    }

    // 3. Instances.
    let mut instances: BTreeMap<String, Arc<InstanceBuilder>> = BTreeMap::new();
    for res in resources.values() {
        let kind = res.doc.kind.as_str();
        let (template, params, bindings, prefix) = if kind == "instance" {
            let spec = match decode_spec::<InstanceSpec>(&res.doc.spec) {
                Ok(s) => s,
                Err((field, msg)) => {
                    diags.error(res, Some(&field), msg);
                    continue;
                }
            };
            let name = match (spec.compiled_template, spec.template) {
                (Some(t), _) => t,
                (None, Some(t)) => {
                    diags.warning(res, Some("template"), format!("instance of the out-of-process template '{t}' is not supported; skipped"));
                    continue;
                }
                (None, None) => {
                    diags.error(
                        res,
                        Some("compiledTemplate"),
                        "an instance needs compiledTemplate (e.g. metric, logentry, checknothing)",
                    );
                    continue;
                }
            };
            let Some(t) = TemplateKind::from_name(&name) else {
                diags.error(
                    res,
                    Some("compiledTemplate"),
                    format!(
                        "unknown template '{name}'; known templates: {}",
                        TemplateKind::ALL.map(TemplateKind::name).join(", ")
                    ),
                );
                continue;
            };
            (t, spec.params, spec.attribute_bindings, "params")
        } else if let Some(t) = TemplateKind::from_name(kind) {
            // Legacy style: the spec is the params; a generator's bindings sit inline.
            let mut params = res.doc.spec.clone();
            let mut bindings = Json::Null;
            if let Json::Object(m) = &mut params {
                for key in ["attribute_bindings", "attributeBindings"] {
                    if let Some(b) = m.remove(key) {
                        bindings = b;
                    }
                }
            }
            (t, params, bindings, "")
        } else {
            continue;
        };
        let fqn = res.fqn();
        match InstanceBuilder::compile(
            &fqn,
            template,
            &params,
            Some(&bindings),
            &manifest,
            &functions,
        ) {
            Ok(b) => {
                instances.insert(fqn, Arc::new(b));
            }
            Err(errors) => diags.param_errors(res, prefix, errors),
        }
    }

    // 4. Handler declarations.
    let mut handlers: BTreeMap<String, HandlerDecl<'_>> = BTreeMap::new();
    for res in resources.values() {
        let kind = res.doc.kind.as_str();
        let (adapter_name, params, internal) = if kind == "handler" {
            let spec = match decode_spec::<HandlerSpec>(&res.doc.spec) {
                Ok(s) => s,
                Err((field, msg)) => {
                    diags.error(res, Some(&field), msg);
                    continue;
                }
            };
            let Some(adapter) = spec.compiled_adapter else {
                if spec.adapter.is_some() || spec.connection.is_some() {
                    diags.warning(res, Some("adapter"), "out-of-process adapters (adapter + connection) are not supported; this handler is skipped");
                } else {
                    diags.error(
                        res,
                        Some("compiledAdapter"),
                        "a handler needs compiledAdapter (e.g. prometheus, denier, memquota)",
                    );
                }
                continue;
            };
            (
                adapter,
                spec.params,
                format!("{}.{}", res.doc.name, res.namespace),
            )
        } else if adapters::find(kind).is_some() || adapters::KNOWN_UNSUPPORTED.contains(&kind) {
            (kind.to_owned(), res.doc.spec.clone(), res.fqn())
        } else {
            continue;
        };
        let Some(adapter) = adapters::find(&adapter_name) else {
            if adapters::KNOWN_UNSUPPORTED.contains(&adapter_name.as_str()) {
                diags.warning(res, Some("compiledAdapter"), format!("adapter '{adapter_name}' is not provided by this server; the handler is skipped"));
            } else {
                let known: Vec<&str> = adapters::inventory().iter().map(|a| a.name()).collect();
                diags.error(
                    res,
                    Some("compiledAdapter"),
                    format!(
                        "unknown adapter '{adapter_name}'; known adapters: {}",
                        known.join(", ")
                    ),
                );
            }
            continue;
        };
        handlers.insert(
            res.fqn(),
            HandlerDecl {
                name: internal,
                adapter,
                params,
                res: Res {
                    doc: res.doc,
                    namespace: res.namespace.clone(),
                },
            },
        );
    }

    // 5. Rules: compile predicates and header operations, resolve actions.
    struct PendingAction {
        handler_fqn: String,
        instances: Vec<Arc<InstanceBuilder>>,
    }
    struct PendingRule<'d> {
        res: &'d Res<'d>,
        predicate: Option<Program>,
        actions: Vec<PendingAction>,
        request_ops: Vec<HeaderOperation>,
        response_ops: Vec<HeaderOperation>,
    }
    let mut pending: Vec<PendingRule<'_>> = Vec::new();
    for res in resources.values().filter(|r| r.doc.kind == "rule") {
        let spec = match decode_spec::<RuleSpec>(&res.doc.spec) {
            Ok(s) => s,
            Err((field, msg)) => {
                diags.error(res, Some(&field), msg);
                continue;
            }
        };
        let mut ok = true;
        let predicate = match spec.predicate.trim() {
            "" | "true" => None,
            text => match Program::compile_with(text, &manifest, &functions) {
                Ok(p) if p.result_type() == ValueType::Bool => Some(p),
                Ok(p) => {
                    diags.error(res, Some("match"), format!("the match expression has type {}, but must be BOOL (in expression '{text}')", p.result_type()));
                    ok = false;
                    None
                }
                Err(e) => {
                    let col = e
                        .column()
                        .map(|c| format!(" at column {c}"))
                        .unwrap_or_default();
                    diags.error(
                        res,
                        Some("match"),
                        format!("{} (in expression '{text}'{col})", e.message),
                    );
                    ok = false;
                    None
                }
            },
        };
        if spec.sampling.is_some() {
            diags.warning(
                res,
                Some("sampling"),
                "sampling is not implemented (as in Mixer 1.1-1.6) and is ignored",
            );
        }
        let mut ops = |list: Vec<HeaderOperationSpec>,
                       field: &str,
                       diags: &mut Diags|
         -> Vec<HeaderOperation> {
            let mut out = Vec::new();
            for (i, op) in list.into_iter().enumerate() {
                let f = format!("{field}[{i}]");
                let operation =
                    match op.operation.as_ref().map(|v| {
                        adapters::params::enum_by_name(v, &["REPLACE", "REMOVE", "APPEND"])
                    }) {
                        None => HeaderOperationKind::Replace,
                        Some(Ok(0)) => HeaderOperationKind::Replace,
                        Some(Ok(1)) => HeaderOperationKind::Remove,
                        Some(Ok(_)) => HeaderOperationKind::Append,
                        Some(Err(m)) => {
                            diags.error(res, Some(&format!("{f}.operation")), m);
                            ok = false;
                            continue;
                        }
                    };
                let mut values = Vec::new();
                for (j, v) in op.values.iter().enumerate() {
                    match Program::compile_with(v, &manifest, &functions) {
                        Ok(p) if p.result_type() == ValueType::String => values.push(p),
                        Ok(p) => {
                            diags.error(
                                res,
                                Some(&format!("{f}.values[{j}]")),
                                format!(
                                    "header values must be STRING expressions; '{v}' has type {}",
                                    p.result_type()
                                ),
                            );
                            ok = false;
                        }
                        Err(e) => {
                            let col = e
                                .column()
                                .map(|c| format!(" at column {c}"))
                                .unwrap_or_default();
                            diags.error(
                                res,
                                Some(&format!("{f}.values[{j}]")),
                                format!("{} (in expression '{v}'{col})", e.message),
                            );
                            ok = false;
                        }
                    }
                }
                out.push(HeaderOperation {
                    name: op.name.to_ascii_lowercase(),
                    values,
                    operation,
                });
            }
            out
        };
        let request_ops = ops(
            spec.request_header_operations,
            "requestHeaderOperations",
            &mut diags,
        );
        let response_ops = ops(
            spec.response_header_operations,
            "responseHeaderOperations",
            &mut diags,
        );

        let mut actions = Vec::new();
        for (i, action) in spec.actions.iter().enumerate() {
            let field = format!("actions[{i}]");
            let Some(handler_fqn) =
                resolve_reference(&action.handler, "handler", &res.namespace, |c| {
                    handlers.contains_key(c)
                })
            else {
                diags.warning(res, Some(&format!("{field}.handler")), format!("handler '{}' is not defined (looked up from namespace '{}'); this action is skipped", action.handler, res.namespace));
                continue;
            };
            let decl = &handlers[&handler_fqn];
            let mut seen = BTreeSet::new();
            let mut inst = Vec::new();
            for (j, reference) in action.instances.iter().enumerate() {
                let f = format!("{field}.instances[{j}]");
                let Some(fqn) = resolve_reference(reference, "instance", &res.namespace, |c| {
                    instances.contains_key(c)
                }) else {
                    diags.warning(
                        res,
                        Some(&f),
                        format!(
                            "instance '{reference}' is not defined (or is invalid); it is skipped"
                        ),
                    );
                    continue;
                };
                if !seen.insert(fqn.clone()) {
                    diags.error(
                        res,
                        Some(&f),
                        format!("instance '{fqn}' is listed twice in this action"),
                    );
                    ok = false;
                    continue;
                }
                let b = &instances[&fqn];
                if !decl.adapter.templates().contains(&b.kind()) {
                    diags.error(res, Some(&f), format!(
                        "handler '{}' (adapter '{}') cannot take instance '{fqn}' of template '{}'; the adapter supports: {}",
                        decl.name,
                        decl.adapter.name(),
                        b.kind(),
                        decl.adapter.templates().iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
                    ));
                    ok = false;
                    continue;
                }
                inst.push(b.clone());
            }
            if inst.is_empty() {
                diags.warning(
                    res,
                    Some(&field),
                    "this action has no valid instances and is skipped",
                );
                continue;
            }
            actions.push(PendingAction {
                handler_fqn,
                instances: inst,
            });
        }
        if !ok {
            continue;
        }
        if actions.is_empty() && request_ops.is_empty() && response_ops.is_empty() {
            diags.warning(
                res,
                None,
                "the rule has no valid actions and no header operations; it does nothing",
            );
        }
        pending.push(PendingRule {
            res,
            predicate,
            actions,
            request_ops,
            response_ops,
        });
    }

    // 6. Validate every handler with the instances routed to it; build referenced ones.
    let mut routed: HashMap<&str, Vec<Arc<InstanceBuilder>>> = HashMap::new();
    for r in &pending {
        for a in &r.actions {
            let list = routed.entry(a.handler_fqn.as_str()).or_default();
            for i in &a.instances {
                if !list.iter().any(|x| Arc::ptr_eq(x, i)) {
                    list.push(i.clone());
                }
            }
        }
    }
    let mut built: BTreeMap<String, Arc<HandlerEntry>> = BTreeMap::new();
    let mut built_by_fqn: HashMap<String, Arc<HandlerEntry>> = HashMap::new();
    for (fqn, decl) in &handlers {
        let insts = routed.get(fqn.as_str()).cloned().unwrap_or_default();
        let refs: Vec<&InstanceBuilder> = insts.iter().map(|i| &**i).collect();
        let validation = decl.adapter.validate(&ValidateInput {
            handler: &decl.name,
            params: &decl.params,
            instances: &refs,
        });
        for w in validation.warnings {
            let field = if decl.res.doc.kind == "handler" {
                w.field.clone()
            } else {
                w.field
                    .strip_prefix("params.")
                    .unwrap_or(&w.field)
                    .to_owned()
            };
            diags.warning(&decl.res, Some(&field), w.message);
        }
        let validated = match validation.config {
            Ok(v) => v,
            Err(errors) => {
                let errors = errors
                    .into_iter()
                    .map(|mut e| {
                        if decl.res.doc.kind != "handler" {
                            // Legacy kinds: the spec is the params.
                            e.field = e
                                .field
                                .strip_prefix("params.")
                                .map(str::to_owned)
                                .unwrap_or(e.field);
                        }
                        e
                    })
                    .collect();
                diags.param_errors(&decl.res, "", errors);
                continue;
            }
        };
        if insts.is_empty() || !opts.build_handlers {
            continue;
        }
        if let Some(reason) = decl.adapter.unavailable() {
            diags.warning(
                &decl.res,
                None,
                format!(
                    "{reason}; handler '{}' is skipped, and so are the actions that use it",
                    decl.name
                ),
            );
            continue;
        }
        let mut signature = format!("{}|{}|", decl.adapter.name(), decl.params);
        let mut sigs: Vec<String> = insts.iter().map(|i| i.signature()).collect();
        sigs.sort();
        signature.push_str(&sigs.join("|"));
        let reused = previous
            .and_then(|p| p.handlers.get(&decl.name))
            .filter(|h| h.signature == signature)
            .cloned();
        let entry = match reused {
            Some(e) => e,
            None => match decl.adapter.build(
                validated,
                &adapters::Env {
                    handler: decl.name.clone(),
                    resources: opts.resources.clone(),
                },
            ) {
                Ok(h) => Arc::new(HandlerEntry {
                    name: decl.name.clone(),
                    adapter: decl.adapter.name(),
                    handler: h,
                    signature,
                    dispatch_counters: Default::default(),
                }),
                Err(e) => {
                    diags.error(
                        &decl.res,
                        None,
                        format!("handler '{}' could not be built: {e}", decl.name),
                    );
                    continue;
                }
            },
        };
        built.insert(decl.name.clone(), entry.clone());
        built_by_fqn.insert(fqn.clone(), entry);
    }

    // 7. Routing tables.
    let mut rules = Vec::new();
    let mut check = Routes::default();
    let mut report = Routes::default();
    let mut quota = Routes::default();
    for p in pending {
        let actions: Vec<Action> = p
            .actions
            .into_iter()
            .filter_map(|a| {
                built_by_fqn.get(&a.handler_fqn).map(|h| Action {
                    handler: h.clone(),
                    instances: a.instances,
                })
            })
            .collect();
        let rule = Arc::new(Rule {
            name: p.res.fqn(),
            namespace: p.res.namespace.clone(),
            predicate: p.predicate,
            actions,
            request_header_operations: p.request_ops,
            response_header_operations: p.response_ops,
        });
        for (variety, routes) in [
            (Variety::Check, &mut check),
            (Variety::Report, &mut report),
            (Variety::Quota, &mut quota),
        ] {
            let destinations: Vec<Destination> = rule
                .actions
                .iter()
                .filter_map(|a| {
                    let insts: Vec<_> = a
                        .instances
                        .iter()
                        .filter(|i| i.kind().variety() == variety)
                        .cloned()
                        .collect();
                    (!insts.is_empty()).then(|| Destination {
                        handler: a.handler.clone(),
                        instances: insts,
                    })
                })
                .collect();
            let has_header_ops = variety == Variety::Check
                && (!rule.request_header_operations.is_empty()
                    || !rule.response_header_operations.is_empty());
            if destinations.is_empty() && !has_header_ops {
                continue;
            }
            let routed = RoutedRule {
                rule: rule.clone(),
                destinations,
            };
            if rule.namespace == opts.default_namespace {
                routes.default.push(routed);
            } else {
                routes
                    .by_namespace
                    .entry(rule.namespace.clone())
                    .or_default()
                    .push(routed);
            }
        }
        rules.push(rule);
    }

    let manifest = Arc::new(manifest);
    let summary = Summary {
        attributes: manifest.len(),
        instances: instances.len(),
        handlers: handlers.len(),
        rules: rules.len(),
    };
    Compiled {
        snapshot: Snapshot {
            generation: opts.generation,
            default_namespace: opts.default_namespace.clone(),
            attributes: AttrTable::new(&manifest),
            manifest,
            rules,
            check,
            report,
            quota,
            handlers: built,
            instances,
            summary,
        },
        diagnostics: diags.list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_like_mixer() {
        let known = [
            "a.handler.ns1",
            "h.prometheus.ns1",
            "p.handler.istio-system",
            "x.y.z",
        ];
        let exists = |c: &str| known.contains(&c);
        assert_eq!(
            resolve_reference("a", "handler", "ns1", exists).as_deref(),
            Some("a.handler.ns1")
        );
        assert_eq!(
            resolve_reference("h.prometheus", "handler", "ns1", exists).as_deref(),
            Some("h.prometheus.ns1")
        );
        assert_eq!(
            resolve_reference("p.istio-system", "handler", "ns1", exists).as_deref(),
            Some("p.handler.istio-system")
        );
        assert_eq!(
            resolve_reference("x.y.z", "handler", "ns1", exists).as_deref(),
            Some("x.y.z")
        );
        assert_eq!(resolve_reference("nope", "handler", "ns1", exists), None);
    }
}
