//! `prometheus`: publishes metric instances for Prometheus to scrape.
//!
//! Every prometheus handler of the process publishes into the one [`Exporter`] of the
//! server's resources, which the server serves on its `--prometheus-address`. See
//! `README.md` next to this file for where this adapter deliberately differs from Mixer's.

pub mod config;
pub mod exporter;
mod family;
mod handler;
mod labels;
pub mod pbjson;
mod text;

use std::collections::HashMap;
use std::sync::Arc;

use templates::{Handler, ParamError, TemplateKind};

pub use exporter::{
    DEFAULT_MAX_EXPOSITION_BYTES, DEFAULT_MAX_LABEL_VALUE_BYTES, Exporter, ExpositionLimits,
};
use handler::PrometheusHandler;

use crate::{Adapter, BuildError, Env, ValidateInput, Validation};

/// The prometheus adapter.
pub struct PrometheusAdapter;

/// The adapter, as listed in [`crate::inventory`].
pub static ADAPTER: PrometheusAdapter = PrometheusAdapter;

/// What validation hands to `build`.
pub struct ValidatedParams {
    config: config::Config,
    /// Dimension names (in each instance's order) of the metric instances routed to the
    /// handler, by instance name: the handler maps them to labels once, at build.
    dimensions: HashMap<String, Vec<Arc<str>>>,
}

impl Adapter for PrometheusAdapter {
    type Config = ValidatedParams;

    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn description(&self) -> &'static str {
        "Publishes metrics for Prometheus to scrape"
    }

    fn templates(&self) -> &'static [TemplateKind] {
        &[TemplateKind::Metric]
    }

    fn validate(&self, input: &ValidateInput<'_>) -> Validation<ValidatedParams> {
        validate(input).into()
    }

    fn build(&self, v: ValidatedParams, env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        let handler = PrometheusHandler::build(&v.config, &v.dimensions, env)?;
        Ok(Arc::new(handler))
    }
}

/// Validates the params and records the dimensions of the metric instances routed to the
/// handler.
fn validate(input: &ValidateInput<'_>) -> Result<ValidatedParams, Vec<ParamError>> {
    let config = config::validate(input)?;
    let dimensions = input
        .instances
        .iter()
        .filter(|i| i.kind() == TemplateKind::Metric)
        .map(|i| {
            let names = i
                .map_field_types("dimensions")
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            (i.name().to_owned(), names)
        })
        .collect();
    Ok(ValidatedParams { config, dimensions })
}

#[cfg(test)]
mod testdata;
#[cfg(test)]
mod tests;
