//! Documents → [`Snapshot`], in named phases: classify resources, union the attribute
//! manifests, compile instances, declare handlers, compile rules, validate and build
//! handlers, route rules by variety, then Istio's QuotaSpecs and their bindings. Every
//! problem becomes a [`Diagnostic`] naming the file, line, resource, field and (for
//! expressions) column.

mod handlers;
mod instances;
mod manifest;
mod quota_specs;
mod resources;
mod routes;
mod rules;

use std::sync::Arc;

use expr_lang::{FunctionTable, PlanBuilder};

use super::diagnostics::{Diagnostic, Diags};
use super::snapshot::{Snapshot, Summary};
use super::store::Document;
use crate::attrs::AttrTable;
pub use resources::accepted_kinds;

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

/// Compiles documents into a snapshot. `previous` lends handlers whose signature did not
/// change, so their state survives the reload.
pub fn compile(docs: &[Document], opts: &CompileOptions, previous: Option<&Snapshot>) -> Compiled {
    let mut diags = Diags::default();
    let functions = FunctionTable::standard();
    let resources = resources::classify(docs, &opts.default_namespace, &mut diags);
    let manifest = manifest::union(&resources, &mut diags);
    let mut plan = PlanBuilder::new();
    let instances =
        instances::compile_all(&resources, &manifest, &functions, &mut plan, &mut diags);
    let declarations = handlers::declare_all(&resources, &mut diags);
    let scope = rules::Scope {
        manifest: &manifest,
        functions: &functions,
        instances: &instances,
        handlers: &declarations,
    };
    let pending = rules::compile_all(&resources, &scope, &mut diags);
    let built = handlers::build_all(&declarations, &pending, opts, previous, &mut diags);
    let routed = routes::route(pending, &built, &opts.default_namespace, &mut plan);
    let quota_bindings = quota_specs::compile_all(&resources, &manifest, &instances, &mut diags);

    let manifest = Arc::new(manifest);
    let summary = Summary {
        attributes: manifest.len(),
        instances: instances.len(),
        handlers: declarations.len(),
        rules: routed.rules.len(),
    };
    Compiled {
        snapshot: Snapshot {
            generation: opts.generation,
            default_namespace: opts.default_namespace.clone(),
            attributes: AttrTable::new(&manifest),
            manifest,
            rules: routed.rules,
            check: routed.check,
            report: routed.report,
            quota: routed.quota,
            generate: routed.generate,
            report_plan: plan.finish(),
            handlers: built.by_name,
            instances,
            quota_bindings,
            summary,
        },
        diagnostics: diags.list,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::store::parse_file;

    const QUOTA: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      source: source.labels["app"] | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: quota, namespace: istio-system}
spec:
  actions:
  - handler: handler
    instances: [requestcount]
"#;

    fn handler(params: &str) -> String {
        format!(
            "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {{name: handler, namespace: istio-system}}\nspec:\n  compiledAdapter: memquota\n  params:\n{params}---\n{QUOTA}"
        )
    }

    fn compile_text(text: &str, previous: Option<&Snapshot>) -> Snapshot {
        let (docs, errors) = parse_file(Path::new("quota.yaml"), text);
        assert!(errors.is_empty(), "{errors:?}");
        let opts = CompileOptions {
            default_namespace: "istio-system".to_owned(),
            build_handlers: true,
            generation: 1,
            resources: Default::default(),
        };
        let compiled = compile(&docs, &opts, previous);
        let errors: Vec<_> = compiled
            .diagnostics
            .iter()
            .filter(|d| d.severity == crate::config::Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        compiled.snapshot
    }

    #[test]
    fn reordered_params_keep_the_handler_and_its_state() {
        let first = compile_text(
            &handler(
                "    quotas:\n    - name: requestcount.instance.istio-system\n      maxAmount: 5\n      validDuration: 1s\n    minDeduplicationDuration: 1s\n",
            ),
            None,
        );
        let reordered = compile_text(
            &handler(
                "    minDeduplicationDuration: 1s\n    quotas:\n    - validDuration: 1s\n      maxAmount: 5\n      name: requestcount.instance.istio-system\n",
            ),
            Some(&first),
        );
        let name = "handler.istio-system";
        assert!(std::sync::Arc::ptr_eq(
            &first.handlers[name],
            &reordered.handlers[name]
        ));
        let changed = compile_text(
            &handler(
                "    minDeduplicationDuration: 1s\n    quotas:\n    - validDuration: 1s\n      maxAmount: 6\n      name: requestcount.instance.istio-system\n",
            ),
            Some(&reordered),
        );
        assert!(!std::sync::Arc::ptr_eq(
            &reordered.handlers[name],
            &changed.handlers[name]
        ));
    }
}
