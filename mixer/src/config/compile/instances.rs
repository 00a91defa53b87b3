//! Phase 3: instances (`kind: instance` and the legacy per-template kinds), each field's
//! expression compiled against the manifest.

use std::collections::BTreeMap;
use std::sync::Arc;

use expr_lang::{FunctionTable, Manifest, PlanBuilder};
use serde_json::Value as Json;
use templates::{InstanceBuilder, TemplateKind, Variety};

use super::resources::Resources;
use crate::config::diagnostics::{Diags, Res};
use crate::config::spec::{InstanceSpec, decode_spec};

/// Compiled instances by `name.kind.namespace`.
pub(super) type Instances = BTreeMap<String, Arc<InstanceBuilder>>;

/// What an instance resource declares, before its expressions are compiled.
struct Declared {
    template: TemplateKind,
    params: Json,
    bindings: Json,
    /// The prefix of field paths in diagnostics (`params` for `kind: instance`).
    prefix: &'static str,
}

/// Compiles every instance; the expressions of Report instances join `plan`, so that a
/// Report evaluates each distinct one once per bag.
pub(super) fn compile_all(
    resources: &Resources<'_>,
    manifest: &Manifest,
    functions: &FunctionTable,
    plan: &mut PlanBuilder,
    diags: &mut Diags,
) -> Instances {
    let mut instances = Instances::new();
    for res in resources.values() {
        let Some(declared) = declare(res, diags) else {
            continue;
        };
        let fqn = res.fqn();
        match InstanceBuilder::compile(
            &fqn,
            declared.template,
            &declared.params,
            Some(&declared.bindings),
            manifest,
            functions,
        ) {
            Ok(mut b) => {
                if b.kind().variety() == Variety::Report {
                    b.plan(plan);
                }
                instances.insert(fqn, Arc::new(b));
            }
            Err(errors) => diags.param_errors(res, declared.prefix, errors),
        }
    }
    instances
}

/// The template and params of `res`, or `None` when it is not an instance (or is invalid,
/// with the problem reported).
fn declare(res: &Res<'_>, diags: &mut Diags) -> Option<Declared> {
    let kind = res.doc.kind.as_str();
    if kind == "instance" {
        return declare_instance(res, diags);
    }
    let template = TemplateKind::from_name(kind)?;
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
    Some(Declared {
        template,
        params,
        bindings,
        prefix: "",
    })
}

fn declare_instance(res: &Res<'_>, diags: &mut Diags) -> Option<Declared> {
    let spec = decode_spec::<InstanceSpec>(&res.doc.spec)
        .map_err(|(field, msg)| diags.error(res, Some(&field), msg))
        .ok()?;
    let name = match (spec.compiled_template, spec.template) {
        (Some(t), _) => t,
        (None, Some(t)) => {
            diags.warning(
                res,
                Some("template"),
                format!("instance of the out-of-process template '{t}' is not supported; skipped"),
            );
            return None;
        }
        (None, None) => {
            diags.error(
                res,
                Some("compiledTemplate"),
                "an instance needs compiledTemplate (e.g. metric, logentry, checknothing)",
            );
            return None;
        }
    };
    let Some(template) = TemplateKind::from_name(&name) else {
        diags.error(
            res,
            Some("compiledTemplate"),
            format!(
                "unknown template '{name}'; known templates: {}",
                TemplateKind::ALL.map(TemplateKind::name).join(", ")
            ),
        );
        return None;
    };
    Some(Declared {
        template,
        params: spec.params,
        bindings: spec.attribute_bindings,
        prefix: "params",
    })
}
