//! The compiled, immutable configuration that serves requests. A reload builds a new one
//! off to the side and swaps it in; requests hold an `Arc` to the one they started with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use expr_lang::{EvalPlan, ExprId, Manifest, Program};
use templates::{Handler, InstanceBuilder, TemplateKind, Variety};

use crate::attrs::AttrTable;

/// A running handler and what it was built from.
pub struct HandlerEntry {
    /// The name Mixer shows in statuses and metrics (`denyall.istio-system` for
    /// `kind: handler`, `handler.prometheus.istio-system` for legacy kinds).
    pub name: String,
    pub adapter: &'static str,
    pub handler: Arc<dyn Handler>,
    /// Adapter + params + routed instances: equal signatures may share the handler
    /// across reloads, keeping its state (counters, series).
    pub signature: String,
    /// `mixer_runtime_dispatches_total` children for this handler, by template and
    /// outcome, looked up once instead of hashing the label values on every call.
    pub dispatch_counters: DispatchCounters,
}

/// Cached counter handles, indexed by `template as usize * 2 + failed as usize`.
pub struct DispatchCounters([std::sync::OnceLock<prometheus::IntCounter>; 22]);

impl Default for DispatchCounters {
    fn default() -> Self {
        DispatchCounters(std::array::from_fn(|_| std::sync::OnceLock::new()))
    }
}

impl DispatchCounters {
    /// The counter for `template` and outcome, created from `make` the first time.
    pub fn get(
        &self,
        template: TemplateKind,
        failed: bool,
        make: impl FnOnce() -> prometheus::IntCounter,
    ) -> &prometheus::IntCounter {
        self.0[template as usize * 2 + usize::from(failed)].get_or_init(make)
    }
}

/// How a header operation changes a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderOperationKind {
    Replace,
    Remove,
    Append,
}

/// A rule's request or response header operation template.
pub struct HeaderOperation {
    pub name: String,
    /// STRING expressions, one operation per value.
    pub values: Vec<Program>,
    pub operation: HeaderOperationKind,
}

/// One action: a handler and the instances sent to it.
pub struct Action {
    pub handler: Arc<HandlerEntry>,
    pub instances: Vec<Arc<InstanceBuilder>>,
}

/// A compiled rule.
pub struct Rule {
    /// `name.rule.namespace`.
    pub name: String,
    pub namespace: String,
    /// `None` means always.
    pub predicate: Option<Program>,
    /// The predicate's id in the snapshot's Report plan ([`ExprId::NONE`] when the rule
    /// has no Report instances).
    pub predicate_id: ExprId,
    pub actions: Vec<Action>,
    pub request_header_operations: Vec<HeaderOperation>,
    pub response_header_operations: Vec<HeaderOperation>,
}

/// A handler and the instances of one variety a rule sends it.
pub struct Destination {
    pub handler: Arc<HandlerEntry>,
    pub instances: Vec<Arc<InstanceBuilder>>,
}

/// A rule as seen by one variety: only its destinations of that variety.
pub struct RoutedRule {
    pub rule: Arc<Rule>,
    pub destinations: Vec<Destination>,
}

/// Rules of one variety, by the namespace they apply to.
#[derive(Default)]
pub struct Routes {
    /// Rules of the default config namespace: they apply to every request.
    pub default: Vec<RoutedRule>,
    pub by_namespace: HashMap<String, Vec<RoutedRule>>,
}

impl Routes {
    /// The rules for a request whose identity namespace is `namespace`: the default
    /// namespace's first, then the namespace's own.
    pub fn for_namespace<'s>(&'s self, namespace: &str) -> impl Iterator<Item = &'s RoutedRule> {
        let own = self
            .by_namespace
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default();
        self.default.iter().chain(own.iter())
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_empty() && self.by_namespace.is_empty()
    }

    pub fn len(&self) -> usize {
        self.default.len() + self.by_namespace.values().map(Vec::len).sum::<usize>()
    }
}

/// How a QuotaSpec clause compares an attribute's text.
#[derive(Clone, Debug)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    /// Anchored at both ends: the whole value must match, as the Envoy filter's
    /// `std::regex_match` did.
    Regex(regex::Regex),
    /// No comparison given: the attribute only has to be present.
    Present,
}

/// One `match` entry of a QuotaSpec rule: every clause must hold.
#[derive(Clone, Debug, Default)]
pub struct AttributeMatch {
    /// (attribute name, comparison), in name order.
    pub clauses: Vec<(String, StringMatch)>,
}

/// A quota a QuotaSpec rule charges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaCharge {
    /// The quota instance's short name, as a Check asks for it.
    pub quota: String,
    pub charge: i64,
}

/// One rule of a QuotaSpec: its quotas apply when any `match` holds (always, without
/// one).
#[derive(Clone, Debug, Default)]
pub struct QuotaRule {
    pub matches: Vec<AttributeMatch>,
    pub quotas: Vec<QuotaCharge>,
}

/// A compiled `kind: QuotaSpec`.
#[derive(Clone, Debug)]
pub struct QuotaSpec {
    /// `QuotaSpec/namespace/name`.
    pub name: String,
    pub rules: Vec<QuotaRule>,
}

/// Which destination services a QuotaSpecBinding selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceSelector {
    /// `service: "*"`: every service.
    Any,
    /// `service: "*.NAMESPACE.*"`: every service of a namespace.
    Namespace(String),
    /// `service: HOST`: one fully qualified host.
    Host(String),
    /// `name` (+ `namespace`, defaulting to the binding's, and an optional `domain`).
    Named {
        name: String,
        namespace: String,
        domain: Option<String>,
    },
}

impl std::fmt::Display for ServiceSelector {
    /// `*`, `*.NAMESPACE.*`, the host, or `NAME.NAMESPACE[.DOMAIN]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceSelector::Any => f.write_str("*"),
            ServiceSelector::Namespace(ns) => write!(f, "*.{ns}.*"),
            ServiceSelector::Host(h) => f.write_str(h),
            ServiceSelector::Named {
                name,
                namespace,
                domain,
            } => {
                write!(f, "{name}.{namespace}")?;
                match domain {
                    Some(d) => write!(f, ".{d}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A compiled `kind: QuotaSpecBinding`: the specs that apply to requests for its
/// services.
#[derive(Clone, Debug)]
pub struct QuotaSpecBinding {
    /// `QuotaSpecBinding/namespace/name`.
    pub name: String,
    pub services: Vec<ServiceSelector>,
    /// The bound specs that exist, in the order written.
    pub specs: Vec<Arc<QuotaSpec>>,
}

/// Counts of what a snapshot holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub attributes: usize,
    pub instances: usize,
    pub handlers: usize,
    pub rules: usize,
}

/// The compiled configuration.
pub struct Snapshot {
    /// Increases with every snapshot built by this process.
    pub generation: u64,
    pub default_namespace: String,
    pub manifest: Arc<Manifest>,
    pub attributes: AttrTable,
    pub rules: Vec<Arc<Rule>>,
    pub check: Routes,
    pub report: Routes,
    pub quota: Routes,
    /// Attribute generators (`kubernetes` instances): run before Check and before each
    /// Report record; empty in most configurations, and then they cost nothing.
    pub generate: Routes,
    /// The distinct expressions of Report instances and of their rules' `match`: a
    /// Report evaluates each once per bag.
    pub report_plan: EvalPlan,
    /// Built handlers by their internal name.
    pub handlers: BTreeMap<String, Arc<HandlerEntry>>,
    pub instances: BTreeMap<String, Arc<InstanceBuilder>>,
    /// QuotaSpecBindings with their specs: the quotas a front end without quota requests
    /// of its own (Envoy's ext_authz) asks for.
    pub quota_bindings: Vec<QuotaSpecBinding>,
    pub summary: Summary,
}

impl Snapshot {
    /// A snapshot with no rules, serving before any configuration has loaded.
    pub fn empty(default_namespace: &str) -> Snapshot {
        let manifest = Arc::new(Manifest::istio_vocabulary());
        Snapshot {
            generation: 0,
            default_namespace: default_namespace.to_owned(),
            attributes: AttrTable::new(&manifest),
            manifest,
            rules: Vec::new(),
            check: Routes::default(),
            report: Routes::default(),
            quota: Routes::default(),
            generate: Routes::default(),
            report_plan: EvalPlan::default(),
            handlers: BTreeMap::new(),
            instances: BTreeMap::new(),
            quota_bindings: Vec::new(),
            summary: Summary::default(),
        }
    }

    /// The routes of a variety.
    pub fn routes(&self, variety: Variety) -> Option<&Routes> {
        match variety {
            Variety::Check => Some(&self.check),
            Variety::Report => Some(&self.report),
            Variety::Quota => Some(&self.quota),
            Variety::AttributeGenerator => Some(&self.generate),
        }
    }
}
