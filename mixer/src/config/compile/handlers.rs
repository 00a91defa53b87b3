//! Phases 4 and 6: handler declarations (`kind: handler` and the legacy per-adapter
//! kinds), then validating each with the instances rules route to it and building the
//! ones in use, reusing a previous snapshot's handler when nothing it was built from
//! changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use adapters::{DynAdapter, ErasedConfig, ValidateInput};
use serde_json::Value as Json;
use templates::{InstanceBuilder, ParamError};

use super::CompileOptions;
use super::resources::Resources;
use super::rules::PendingRule;
use crate::config::diagnostics::{Diags, Res};
use crate::config::snapshot::{HandlerEntry, Snapshot};
use crate::config::spec::{HandlerSpec, decode_spec};

/// A handler declaration, before validation.
pub(super) struct HandlerDecl<'d> {
    pub res: Res<'d>,
    /// Internal name (`name.namespace`, or `name.kind.namespace` for legacy kinds).
    pub name: String,
    pub adapter: &'static dyn DynAdapter,
    pub params: Json,
}

/// Declarations by `name.kind.namespace`.
pub(super) type Declarations<'d> = BTreeMap<String, HandlerDecl<'d>>;

/// Built handlers, by internal name and by `name.kind.namespace`.
#[derive(Default)]
pub(super) struct Built {
    pub by_name: BTreeMap<String, Arc<HandlerEntry>>,
    pub by_fqn: HashMap<String, Arc<HandlerEntry>>,
}

pub(super) fn declare_all<'d>(resources: &Resources<'d>, diags: &mut Diags) -> Declarations<'d> {
    let mut handlers = Declarations::new();
    for res in resources.values() {
        let Some((adapter_name, params, name)) = declare(res, diags) else {
            continue;
        };
        let Some(adapter) = find_adapter(res, &adapter_name, diags) else {
            continue;
        };
        handlers.insert(
            res.fqn(),
            HandlerDecl {
                name,
                adapter,
                params,
                res: Res {
                    doc: res.doc,
                    namespace: res.namespace.clone(),
                },
            },
        );
    }
    handlers
}

/// The adapter name, params and internal name `res` declares, or `None` when it is not a
/// handler (or is invalid, with the problem reported).
fn declare(res: &Res<'_>, diags: &mut Diags) -> Option<(String, Json, String)> {
    let kind = res.doc.kind.as_str();
    if kind != "handler" {
        let legacy = adapters::find(kind).is_some() || adapters::KNOWN_UNSUPPORTED.contains(&kind);
        return legacy.then(|| (kind.to_owned(), res.doc.spec.clone(), res.fqn()));
    }
    let spec = decode_spec::<HandlerSpec>(&res.doc.spec)
        .map_err(|(field, msg)| diags.error(res, Some(&field), msg))
        .ok()?;
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
        return None;
    };
    Some((
        adapter,
        spec.params,
        format!("{}.{}", res.doc.name, res.namespace),
    ))
}

fn find_adapter(res: &Res<'_>, name: &str, diags: &mut Diags) -> Option<&'static dyn DynAdapter> {
    let adapter = adapters::find(name);
    if adapter.is_none() {
        if adapters::KNOWN_UNSUPPORTED.contains(&name) {
            diags.warning(
                res,
                Some("compiledAdapter"),
                format!("adapter '{name}' is not provided by this server; the handler is skipped"),
            );
        } else {
            let known: Vec<&str> = adapters::inventory().iter().map(|a| a.name()).collect();
            diags.error(
                res,
                Some("compiledAdapter"),
                format!(
                    "unknown adapter '{name}'; known adapters: {}",
                    known.join(", ")
                ),
            );
        }
    }
    adapter
}

/// Validates every declared handler with the instances routed to it, and builds (or
/// reuses from `previous`) those that some rule uses.
pub(super) fn build_all(
    declarations: &Declarations<'_>,
    rules: &[PendingRule<'_>],
    opts: &CompileOptions,
    previous: Option<&Snapshot>,
    diags: &mut Diags,
) -> Built {
    let routed = routed_instances(rules);
    let mut built = Built::default();
    for (fqn, decl) in declarations {
        let instances = routed.get(fqn.as_str()).cloned().unwrap_or_default();
        let Some(validated) = validate(decl, &instances, diags) else {
            continue;
        };
        if instances.is_empty() || !opts.build_handlers {
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
        let Some(entry) = build(decl, validated, &instances, opts, previous, diags) else {
            continue;
        };
        built.by_name.insert(decl.name.clone(), entry.clone());
        built.by_fqn.insert(fqn.clone(), entry);
    }
    built
}

/// The distinct instances rules send to each handler, by handler `name.kind.namespace`.
fn routed_instances<'r>(
    rules: &'r [PendingRule<'_>],
) -> HashMap<&'r str, Vec<Arc<InstanceBuilder>>> {
    let mut routed: HashMap<&str, Vec<Arc<InstanceBuilder>>> = HashMap::new();
    for rule in rules {
        for action in &rule.actions {
            let list = routed.entry(action.handler_fqn.as_str()).or_default();
            for i in &action.instances {
                if !list.iter().any(|x| Arc::ptr_eq(x, i)) {
                    list.push(i.clone());
                }
            }
        }
    }
    routed
}

/// Legacy kinds' spec is the params: their field paths drop the `params.` prefix.
fn unprefixed(decl: &HandlerDecl<'_>, mut e: ParamError) -> ParamError {
    if decl.res.doc.kind != "handler"
        && let Some(field) = e.field.strip_prefix("params.")
    {
        e.field = field.to_owned();
    }
    e
}

fn validate(
    decl: &HandlerDecl<'_>,
    instances: &[Arc<InstanceBuilder>],
    diags: &mut Diags,
) -> Option<ErasedConfig> {
    let refs: Vec<&InstanceBuilder> = instances.iter().map(|i| &**i).collect();
    let validation = decl.adapter.validate(&ValidateInput {
        handler: &decl.name,
        params: &decl.params,
        instances: &refs,
    });
    for w in validation.warnings {
        let w = unprefixed(decl, w);
        diags.warning(&decl.res, Some(&w.field), w.message);
    }
    match validation.config {
        Ok(v) => Some(v),
        Err(errors) => {
            let errors = errors.into_iter().map(|e| unprefixed(decl, e)).collect();
            diags.param_errors(&decl.res, "", errors);
            None
        }
    }
}

/// What a handler is built from: equal signatures may share the handler across reloads,
/// keeping its state (counters, series). Params are canonical (object keys sorted), so
/// reordering a YAML mapping keeps the handler.
fn signature(decl: &HandlerDecl<'_>, instances: &[Arc<InstanceBuilder>]) -> String {
    let mut signature = format!(
        "{}|{}|",
        decl.adapter.name(),
        adapters::params::canonical_json(&decl.params)
    );
    let mut sigs: Vec<String> = instances.iter().map(|i| i.signature()).collect();
    sigs.sort();
    signature.push_str(&sigs.join("|"));
    signature
}

fn build(
    decl: &HandlerDecl<'_>,
    validated: ErasedConfig,
    instances: &[Arc<InstanceBuilder>],
    opts: &CompileOptions,
    previous: Option<&Snapshot>,
    diags: &mut Diags,
) -> Option<Arc<HandlerEntry>> {
    let signature = signature(decl, instances);
    let reused = previous
        .and_then(|p| p.handlers.get(&decl.name))
        .filter(|h| h.signature == signature);
    if let Some(entry) = reused {
        return Some(entry.clone());
    }
    let env = adapters::Env {
        handler: decl.name.clone(),
        resources: opts.resources.clone(),
    };
    match decl.adapter.build(validated, &env) {
        Ok(handler) => Some(Arc::new(HandlerEntry {
            name: decl.name.clone(),
            adapter: decl.adapter.name(),
            handler,
            signature,
            dispatch_counters: Default::default(),
        })),
        Err(adapters::BuildError::Inactive(reason)) => {
            diags.warning(
                &decl.res,
                None,
                format!(
                    "{reason}; handler '{}' is skipped, and so are the actions that use it",
                    decl.name
                ),
            );
            None
        }
        Err(e) => {
            diags.error(
                &decl.res,
                None,
                format!("handler '{}' could not be built: {e}", decl.name),
            );
            None
        }
    }
}
