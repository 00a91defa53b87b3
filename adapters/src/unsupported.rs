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
    /// Why handlers cannot run; `None` means "not implemented in this server yet".
    pub reason: Option<&'static str>,
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
    fn unavailable(&self) -> Option<String> {
        Some(match self.reason {
            Some(r) => r.to_owned(),
            None => format!(
                "adapter '{}' is not implemented in this server yet",
                self.name
            ),
        })
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

pub static KUBERNETESENV: ParamsOnly = ParamsOnly {
    name: "kubernetesenv",
    description: "Generates workload attributes from the Kubernetes API",
    templates: &[TemplateKind::Kubernetes],
    check: crate::kubernetesenv::config::check,
    reason: Some(
        "no Kubernetes cluster is configured (this server does not read the Kubernetes API): the kubernetesenv handler generates no attributes, and the attributes the proxy sends are used as they are",
    ),
};
