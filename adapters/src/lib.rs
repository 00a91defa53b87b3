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

/// What validation sees: the params and the instances rules route to this handler (with
/// their checked field types), so that, e.g., Prometheus label names can be checked
/// against metric dimensions at load rather than at request time.
pub struct ValidateInput<'a> {
    /// The handler's internal name (`prometheus.istio-system`), for messages.
    pub handler: &'a str,
    pub params: &'a Json,
    pub instances: &'a [&'a InstanceBuilder],
}

/// What validating params found: the adapter's config, or every error that prevents
/// one, and either way the warnings: problems that do not invalidate the params (Mixer
/// accepted them), reported while the handler is used. A params mapping can have both
/// warnings and errors (redisquota), and both are reported.
#[derive(Debug)]
pub struct Validation<C> {
    pub config: Result<C, Vec<ParamError>>,
    pub warnings: Vec<ParamError>,
}

impl<C> From<Result<C, Vec<ParamError>>> for Validation<C> {
    /// A validation without warnings.
    fn from(config: Result<C, Vec<ParamError>>) -> Self {
        Validation {
            config,
            warnings: Vec::new(),
        }
    }
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
    /// What every kubernetesenv cache watches and holds.
    pub kubernetesenv: kubernetesenv::Options,
}

/// Why a handler could not be built from validated params.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The handler works in the background and there is no async runtime to run on.
    #[error("{0}")]
    NoRuntime(&'static str),
    /// An output could not be opened, or a thread writing to it not started.
    #[error("{adapter}: cannot {action}: {error}")]
    Io {
        adapter: &'static str,
        /// What failed: `open out.log`, `start the writer thread`.
        action: String,
        error: std::io::Error,
    },
    /// The endpoint the handler talks to is missing or cannot be used.
    #[error("{0}")]
    InvalidEndpoint(String),
    /// A header the handler sends is not valid gRPC metadata.
    #[error("header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: String },
    /// Params that passed validation still do not make a handler (e.g. a list entry
    /// that does not compile).
    #[error("{adapter}: {reason}")]
    InvalidConfig {
        adapter: &'static str,
        reason: String,
    },
    /// Something the handler needs (an HTTP client) could not be created.
    #[error("{adapter}: {reason}")]
    Internal {
        adapter: &'static str,
        reason: String,
    },
    /// Metrics of the handler are already exported, with other definitions, by other
    /// handlers: one message per metric.
    #[error("{}", .0.join("; "))]
    Conflict(Vec<String>),
    /// The handler cannot run in this environment (e.g. kubernetesenv without a
    /// cluster): it is reported as a warning and skipped, not an error.
    #[error("{0}")]
    Inactive(String),
    /// The adapter validates params but has no running handlers in this server.
    #[error("adapter '{0}' is not implemented in this server yet")]
    NotImplemented(&'static str),
    /// `build` was given params that another adapter validated.
    #[error("{0}: params of another adapter")]
    ForeignConfig(&'static str),
}

/// An adapter: validate params into its own config type, then build handlers from it.
/// The rest of the program uses adapters through [`DynAdapter`].
pub trait Adapter: Send + Sync {
    /// Params that passed validation, as the adapter builds handlers from them.
    type Config: Send + Sync + 'static;
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
    fn validate(&self, input: &ValidateInput<'_>) -> Validation<Self::Config>;
    fn build(&self, config: Self::Config, env: &Env) -> Result<Arc<dyn Handler>, BuildError>;
}

/// Params some adapter validated, with their type hidden: handed back to the adapter's
/// [`DynAdapter::build`].
pub struct ErasedConfig(Box<dyn Any + Send + Sync>);

/// An [`Adapter`] with its config type hidden, so that adapters can be listed and chosen
/// by name; every adapter is one.
pub trait DynAdapter: Send + Sync {
    /// The name used by `compiledAdapter:` and legacy `kind:`.
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// Templates whose instances handlers of this adapter accept.
    fn templates(&self) -> &'static [TemplateKind];
    /// See [`Adapter::unavailable`].
    fn unavailable(&self) -> Option<String>;
    /// See [`Adapter::validate`].
    fn validate(&self, input: &ValidateInput<'_>) -> Validation<ErasedConfig>;
    /// Builds a handler from what [`DynAdapter::validate`] of this adapter returned.
    fn build(&self, config: ErasedConfig, env: &Env) -> Result<Arc<dyn Handler>, BuildError>;
}

impl<A: Adapter> DynAdapter for A {
    fn name(&self) -> &'static str {
        Adapter::name(self)
    }
    fn description(&self) -> &'static str {
        Adapter::description(self)
    }
    fn templates(&self) -> &'static [TemplateKind] {
        Adapter::templates(self)
    }
    fn unavailable(&self) -> Option<String> {
        Adapter::unavailable(self)
    }
    fn validate(&self, input: &ValidateInput<'_>) -> Validation<ErasedConfig> {
        let Validation { config, warnings } = Adapter::validate(self, input);
        Validation {
            config: config.map(|c| ErasedConfig(Box::new(c))),
            warnings,
        }
    }
    fn build(&self, config: ErasedConfig, env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        let config = config
            .0
            .downcast::<A::Config>()
            .map_err(|_| BuildError::ForeignConfig(Adapter::name(self)))?;
        Adapter::build(self, *config, env)
    }
}

/// Every adapter, explicitly listed.
pub fn inventory() -> &'static [&'static dyn DynAdapter] {
    static ALL: &[&dyn DynAdapter] = &[
        &denier::Denier,
        &noop::Noop,
        &prometheus::ADAPTER,
        &stdio::ADAPTER,
        &list::ADAPTER,
        &memquota::ADAPTER,
        &redisquota::ADAPTER,
        &kubernetesenv::ADAPTER,
        &otlp::ADAPTER,
        &otlp::ZIPKIN_ADAPTER,
    ];
    ALL
}

/// The adapter named `name`.
pub fn find(name: &str) -> Option<&'static dyn DynAdapter> {
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
