//! Adapters whose params this server understands and validates, but whose handlers are not
//! running yet. A handler of one of them is reported at load and skipped.

use std::sync::Arc;

use templates::{Handler, ParamError, TemplateKind};

use crate::{Adapter, BuildError, Env, ValidateInput, Validated};

/// An adapter known by name and params only.
pub struct ParamsOnly {
    pub name: &'static str,
    pub description: &'static str,
    pub templates: &'static [TemplateKind],
    /// Validates the params (decoding them into the adapter's params type).
    pub check: fn(&ValidateInput<'_>) -> Result<(), Vec<ParamError>>,
}

impl Adapter for ParamsOnly {
    fn name(&self) -> &'static str {
        self.name
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn templates(&self) -> &'static [TemplateKind] {
        self.templates
    }
    fn implemented(&self) -> bool {
        false
    }
    fn validate(&self, input: &ValidateInput<'_>) -> Result<Validated, Vec<ParamError>> {
        (self.check)(input).map(|()| Box::new(()) as Validated)
    }
    fn build(&self, _: Validated, _: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        Err(BuildError(format!(
            "adapter '{}' is not implemented in this server yet",
            self.name
        )))
    }
}

/// Accepts any mapping (used until an adapter's params type is written).
fn any_mapping(input: &ValidateInput<'_>) -> Result<(), Vec<ParamError>> {
    match input.params {
        serde_json::Value::Null | serde_json::Value::Object(_) => Ok(()),
        other => Err(vec![crate::params::error(
            "params",
            format!("expected a mapping, found {other}"),
        )]),
    }
}

pub static PROMETHEUS: ParamsOnly = ParamsOnly {
    name: "prometheus",
    description: "Publishes metrics for Prometheus to scrape",
    templates: &[TemplateKind::Metric],
    check: any_mapping,
};

pub static STDIO: ParamsOnly = ParamsOnly {
    name: "stdio",
    description: "Writes log entries and metrics to standard output or files",
    templates: &[TemplateKind::LogEntry, TemplateKind::Metric],
    check: any_mapping,
};

pub static LISTCHECKER: ParamsOnly = ParamsOnly {
    name: "listchecker",
    description: "Checks whether a value is on a list (whitelist or blacklist)",
    templates: &[TemplateKind::ListEntry],
    check: any_mapping,
};

pub static MEMQUOTA: ParamsOnly = ParamsOnly {
    name: "memquota",
    description: "In-memory quota counters for a single server",
    templates: &[TemplateKind::Quota],
    check: any_mapping,
};

pub static REDISQUOTA: ParamsOnly = ParamsOnly {
    name: "redisquota",
    description: "Quota counters shared across servers in Redis",
    templates: &[TemplateKind::Quota],
    check: any_mapping,
};

pub static KUBERNETESENV: ParamsOnly = ParamsOnly {
    name: "kubernetesenv",
    description: "Generates workload attributes from the Kubernetes API",
    templates: &[TemplateKind::Kubernetes],
    check: any_mapping,
};

pub static ZIPKIN: ParamsOnly = ParamsOnly {
    name: "zipkin",
    description: "Exports trace spans",
    templates: &[TemplateKind::TraceSpan],
    check: any_mapping,
};
