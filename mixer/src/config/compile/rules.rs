//! Phase 5: rules: the match predicate and header operations compiled, actions resolved
//! to handler declarations and compiled instances.

use std::collections::BTreeSet;
use std::sync::Arc;

use expr_lang::{FunctionTable, Manifest, Program, ValueType};
use templates::InstanceBuilder;

use super::handlers::{Declarations, HandlerDecl};
use super::instances::Instances;
use super::resources::{Resources, resolve_reference};
use crate::config::diagnostics::{Diags, Res};
use crate::config::snapshot::{HeaderOperation, HeaderOperationKind};
use crate::config::spec::{ActionSpec, HeaderOperationSpec, RuleSpec, decode_spec};

/// A resolved action: its handler (not built yet) and instances.
pub(super) struct PendingAction {
    pub handler_fqn: String,
    pub instances: Vec<Arc<InstanceBuilder>>,
}

/// A valid rule whose handlers are not built yet.
pub(super) struct PendingRule<'d> {
    pub res: &'d Res<'d>,
    pub predicate: Option<Program>,
    pub actions: Vec<PendingAction>,
    pub request_ops: Vec<HeaderOperation>,
    pub response_ops: Vec<HeaderOperation>,
}

/// What compiling one rule needs to look at.
pub(super) struct Scope<'a, 'd> {
    pub manifest: &'a Manifest,
    pub functions: &'a FunctionTable,
    pub instances: &'a Instances,
    pub handlers: &'a Declarations<'d>,
}

/// Every valid rule; an invalid rule is reported and left out whole.
pub(super) fn compile_all<'d>(
    resources: &'d Resources<'d>,
    scope: &Scope<'_, '_>,
    diags: &mut Diags,
) -> Vec<PendingRule<'d>> {
    resources
        .values()
        .filter(|r| r.doc.kind == "rule")
        .filter_map(|res| compile(res, scope, diags))
        .collect()
}

fn compile<'d>(
    res: &'d Res<'d>,
    scope: &Scope<'_, '_>,
    diags: &mut Diags,
) -> Option<PendingRule<'d>> {
    let spec = decode_spec::<RuleSpec>(&res.doc.spec)
        .map_err(|(field, msg)| diags.error(res, Some(&field), msg))
        .ok()?;
    let errors_before = error_count(diags);
    let predicate = predicate(res, &spec.predicate, scope, diags);
    if spec.sampling.is_some() {
        diags.warning(
            res,
            Some("sampling"),
            "sampling is not implemented (as in Mixer 1.1-1.6) and is ignored",
        );
    }
    let request_ops = header_operations(
        res,
        spec.request_header_operations,
        "requestHeaderOperations",
        scope,
        diags,
    );
    let response_ops = header_operations(
        res,
        spec.response_header_operations,
        "responseHeaderOperations",
        scope,
        diags,
    );
    let actions: Vec<PendingAction> = spec
        .actions
        .iter()
        .enumerate()
        .filter_map(|(i, action)| resolve_action(res, i, action, scope, diags))
        .collect();
    if error_count(diags) > errors_before {
        return None;
    }
    if actions.is_empty() && request_ops.is_empty() && response_ops.is_empty() {
        diags.warning(
            res,
            None,
            "the rule has no valid actions and no header operations; it does nothing",
        );
    }
    Some(PendingRule {
        res,
        predicate,
        actions,
        request_ops,
        response_ops,
    })
}

fn error_count(diags: &Diags) -> usize {
    diags
        .list
        .iter()
        .filter(|d| d.severity == crate::config::Severity::Error)
        .count()
}

/// The compiled `match`; `None` for an empty or `true` match (and for an invalid one,
/// reported).
fn predicate(
    res: &Res<'_>,
    text: &str,
    scope: &Scope<'_, '_>,
    diags: &mut Diags,
) -> Option<Program> {
    let text = text.trim();
    if text.is_empty() || text == "true" {
        return None;
    }
    match Program::compile_with(text, scope.manifest, scope.functions) {
        Ok(p) if p.result_type() == ValueType::Bool => Some(p),
        Ok(p) => {
            diags.error(
                res,
                Some("match"),
                format!(
                    "the match expression has type {}, but must be BOOL (in expression '{text}')",
                    p.result_type()
                ),
            );
            None
        }
        Err(e) => {
            diags.expression_error(res, "match", text, &e);
            None
        }
    }
}

fn header_operations(
    res: &Res<'_>,
    list: Vec<HeaderOperationSpec>,
    field: &str,
    scope: &Scope<'_, '_>,
    diags: &mut Diags,
) -> Vec<HeaderOperation> {
    let mut out = Vec::new();
    for (i, op) in list.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        let Some(operation) = operation_kind(res, &op, &f, diags) else {
            continue;
        };
        let values = op
            .values
            .iter()
            .enumerate()
            .filter_map(|(j, v)| header_value(res, &format!("{f}.values[{j}]"), v, scope, diags))
            .collect();
        out.push(HeaderOperation {
            name: op.name.to_ascii_lowercase(),
            values,
            operation,
        });
    }
    out
}

fn operation_kind(
    res: &Res<'_>,
    op: &HeaderOperationSpec,
    field: &str,
    diags: &mut Diags,
) -> Option<HeaderOperationKind> {
    let Some(v) = &op.operation else {
        return Some(HeaderOperationKind::Replace);
    };
    match adapters::params::enum_by_name(v, &["REPLACE", "REMOVE", "APPEND"]) {
        Ok(0) => Some(HeaderOperationKind::Replace),
        Ok(1) => Some(HeaderOperationKind::Remove),
        Ok(_) => Some(HeaderOperationKind::Append),
        Err(m) => {
            diags.error(res, Some(&format!("{field}.operation")), m);
            None
        }
    }
}

fn header_value(
    res: &Res<'_>,
    field: &str,
    text: &str,
    scope: &Scope<'_, '_>,
    diags: &mut Diags,
) -> Option<Program> {
    match Program::compile_with(text, scope.manifest, scope.functions) {
        Ok(p) if p.result_type() == ValueType::String => Some(p),
        Ok(p) => {
            diags.error(
                res,
                Some(field),
                format!(
                    "header values must be STRING expressions; '{text}' has type {}",
                    p.result_type()
                ),
            );
            None
        }
        Err(e) => {
            diags.expression_error(res, field, text, &e);
            None
        }
    }
}

/// Resolves action `index`; `None` when it is skipped (a missing handler or no valid
/// instance: warnings) or invalid (errors).
fn resolve_action(
    res: &Res<'_>,
    index: usize,
    action: &ActionSpec,
    scope: &Scope<'_, '_>,
    diags: &mut Diags,
) -> Option<PendingAction> {
    let field = format!("actions[{index}]");
    let Some(handler_fqn) = resolve_reference(&action.handler, "handler", &res.namespace, |c| {
        scope.handlers.contains_key(c)
    }) else {
        diags.warning(
            res,
            Some(&format!("{field}.handler")),
            format!(
                "handler '{}' is not defined (looked up from namespace '{}'); this action is skipped",
                action.handler, res.namespace
            ),
        );
        return None;
    };
    let decl = &scope.handlers[&handler_fqn];
    let mut seen = BTreeSet::new();
    let mut instances = Vec::new();
    for (j, reference) in action.instances.iter().enumerate() {
        let f = format!("{field}.instances[{j}]");
        if let Some(i) = resolve_instance(res, &f, reference, decl, &mut seen, scope, diags) {
            instances.push(i);
        }
    }
    if instances.is_empty() {
        diags.warning(
            res,
            Some(&field),
            "this action has no valid instances and is skipped",
        );
        return None;
    }
    Some(PendingAction {
        handler_fqn,
        instances,
    })
}

fn resolve_instance(
    res: &Res<'_>,
    field: &str,
    reference: &str,
    decl: &HandlerDecl<'_>,
    seen: &mut BTreeSet<String>,
    scope: &Scope<'_, '_>,
    diags: &mut Diags,
) -> Option<Arc<InstanceBuilder>> {
    let Some(fqn) = resolve_reference(reference, "instance", &res.namespace, |c| {
        scope.instances.contains_key(c)
    }) else {
        diags.warning(
            res,
            Some(field),
            format!("instance '{reference}' is not defined (or is invalid); it is skipped"),
        );
        return None;
    };
    if !seen.insert(fqn.clone()) {
        diags.error(
            res,
            Some(field),
            format!("instance '{fqn}' is listed twice in this action"),
        );
        return None;
    }
    let builder = &scope.instances[&fqn];
    let supported = decl.adapter.templates();
    if !supported.contains(&builder.kind()) {
        diags.error(
            res,
            Some(field),
            format!(
                "handler '{}' (adapter '{}') cannot take instance '{fqn}' of template '{}'; the adapter supports: {}",
                decl.name,
                decl.adapter.name(),
                builder.kind(),
                supported.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
            ),
        );
        return None;
    }
    Some(builder.clone())
}
