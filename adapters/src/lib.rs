//! Adapters: the code behind handlers. Each adapter knows its own params (validated purely,
//! at config load, with every error's field path) and how to build a running handler from
//! them. Adapters know nothing of gRPC or config files.
//!
//! [`inventory`] lists every adapter this server knows, by the name used in
//! `compiledAdapter:` and as the legacy resource `kind:`.

pub mod denier;
pub mod kubernetesenv;
pub mod list;
pub mod memquota;
pub mod noop;
pub mod otlp;
pub mod params;
pub mod prometheus;
pub mod redact;
pub mod redisquota;
pub mod stdio;
pub mod unsupported;

use std::any::Any;
use std::sync::Arc;

use serde_json::Value as Json;
pub use templates::ParamError;
use templates::{Handler, InstanceBuilder, TemplateKind};

/// Params that passed validation, in the adapter's own type.
pub type Validated = Box<dyn Any + Send + Sync>;

/// What validation sees: the params and the instances rules route to this handler (with
/// their checked field types), so that, e.g., Prometheus label names can be checked
/// against metric dimensions at load rather than at request time.
pub struct ValidateInput<'a> {
    /// The handler's internal name (`prometheus.istio-system`), for messages.
    pub handler: &'a str,
    pub params: &'a Json,
    pub instances: &'a [&'a InstanceBuilder],
    /// Problems that do not invalidate the params (Mixer accepted them): reported, and
    /// the handler is used.
    pub warnings: &'a std::cell::RefCell<Vec<ParamError>>,
}

/// What building a handler may use: its name and the server's shared resources.
#[derive(Clone)]
pub struct Env {
    pub handler: String,
    pub resources: Arc<Resources>,
}

impl Env {
    /// An environment for `handler` with fresh resources (tests, tools).
    pub fn standalone(handler: &str) -> Env {
        Env {
            handler: handler.to_owned(),
            resources: Arc::new(Resources::default()),
        }
    }
}

/// What the server shares with every handler it builds, for the whole process life.
#[derive(Default)]
pub struct Resources {
    /// What prometheus handlers publish; the server serves it on `--prometheus-address`.
    pub prometheus: Arc<prometheus::Exporter>,
    /// Adapters' own metrics (drops, failures); served with the server's self-metrics.
    pub metrics: ::prometheus::Registry,
    /// The async runtime background tasks run on; `None` outside one (e.g. `mixer
    /// validate`, which never builds handlers).
    pub runtime: Option<tokio::runtime::Handle>,
}

/// A handler could not be built from validated params.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// An adapter: validate params, then build handlers.
pub trait Adapter: Send + Sync {
    /// The name used by `compiledAdapter:` and legacy `kind:`.
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// Templates whose instances handlers of this adapter accept.
    fn templates(&self) -> &'static [TemplateKind];
    /// Why handlers of this adapter cannot run here (`None`: they can). Such handlers
    /// are validated, then reported at load and skipped, never silently dropped.
    fn unavailable(&self) -> Option<String> {
        None
    }
    /// Pure validation: no I/O, no tasks.
    fn validate(&self, input: &ValidateInput<'_>) -> Result<Validated, Vec<ParamError>>;
    fn build(&self, validated: Validated, env: &Env) -> Result<Arc<dyn Handler>, BuildError>;
}

/// Every adapter, explicitly listed.
pub fn inventory() -> &'static [&'static dyn Adapter] {
    static ALL: &[&dyn Adapter] = &[
        &denier::Denier,
        &noop::Noop,
        &prometheus::ADAPTER,
        &stdio::ADAPTER,
        &list::ADAPTER,
        &memquota::ADAPTER,
        &redisquota::ADAPTER,
        &unsupported::KUBERNETESENV,
        &otlp::ADAPTER,
        &otlp::ZIPKIN_ADAPTER,
    ];
    ALL
}

/// The adapter named `name`.
pub fn find(name: &str) -> Option<&'static dyn Adapter> {
    inventory().iter().copied().find(|a| a.name() == name)
}

/// Names of Istio adapters this server does not provide (out-of-process or vendor
/// backends). Handlers of these are reported as unsupported and skipped.
pub const KNOWN_UNSUPPORTED: &[&str] = &[
    "bypass",
    "circonus",
    "cloudwatch",
    "dogstatsd",
    "fluentd",
    "opa",
    "rbac",
    "signalfx",
    "solarwinds",
    "stackdriver",
    "statsd",
];
