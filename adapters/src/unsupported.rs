//! Adapters whose params this server understands and validates, but whose handlers are not
//! running yet. A handler of one of them is reported at load and skipped.

use std::sync::Arc;

use templates::{Handler, ParamError, TemplateKind};

use crate::{Adapter, BuildError, Env, ValidateInput, Validation};

/// An adapter known by name and params only; `C` is its validated params.
pub struct ParamsOnly<C> {
    name: &'static str,
    description: &'static str,
    templates: &'static [TemplateKind],
    /// Validates the params into the adapter's config.
    validate: fn(&ValidateInput<'_>) -> Result<C, Vec<ParamError>>,
    /// Why handlers cannot run; `None` means "not implemented in this server yet".
    reason: Option<&'static str>,
}

impl<C: Send + Sync + 'static> Adapter for ParamsOnly<C> {
    type Config = C;

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
    fn validate(&self, input: &ValidateInput<'_>) -> Validation<C> {
        (self.validate)(input).into()
    }
    fn build(&self, _: C, _: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        Err(BuildError::NotImplemented(self.name))
    }
}
