//! `prometheus`: publishes metric instances for Prometheus to scrape.
//!
//! Every prometheus handler of the process publishes into the one [`Exporter`] of the
//! server's resources, which the server serves on its `--prometheus-address`. See
//! `README.md` next to this file for where this adapter deliberately differs from Mixer's.

pub mod config;
pub mod exporter;
mod family;
mod handler;
pub mod pbjson;
mod text;

use std::collections::HashMap;
use std::sync::Arc;

use templates::{Handler, ParamError, TemplateKind};

pub use exporter::{
    Clock, DEFAULT_MAX_EXPOSITION_BYTES, DEFAULT_MAX_LABEL_VALUE_BYTES,
    EXPOSITIONS_TRUNCATED_METRIC, Exporter, ExpositionChunks, ExpositionLimits,
    LABELS_TRUNCATED_METRIC, ManualClock, SERIES_DROPPED_METRIC, SystemClock,
};
pub use handler::{InstanceError, PrometheusHandler};

use crate::{Adapter, BuildError, Env, ValidateInput, Validated};

/// The prometheus adapter.
pub struct PrometheusAdapter;

/// The adapter, as listed in [`crate::inventory`].
pub static ADAPTER: PrometheusAdapter = PrometheusAdapter;

/// What validation hands to `build`.
struct ValidatedParams {
    config: config::Config,
    /// Dimension names (in each instance's order) of the metric instances routed to the
    /// handler, by instance name: the handler maps them to labels once, at build.
    dimensions: HashMap<String, Vec<Arc<str>>>,
}

impl Adapter for PrometheusAdapter {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn description(&self) -> &'static str {
        "Publishes metrics for Prometheus to scrape"
    }

    fn templates(&self) -> &'static [TemplateKind] {
        &[TemplateKind::Metric]
    }

    fn validate(&self, input: &ValidateInput<'_>) -> Result<Validated, Vec<ParamError>> {
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
        Ok(Box::new(ValidatedParams { config, dimensions }))
    }

    fn build(&self, validated: Validated, env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        let v = validated.downcast::<ValidatedParams>().map_err(|_| {
            BuildError("prometheus: the params were not validated by this adapter".to_owned())
        })?;
        let handler = PrometheusHandler::build(&v.config, &v.dimensions, env)?;
        Ok(Arc::new(handler))
    }
}

#[cfg(test)]
mod testdata;
#[cfg(test)]
mod tests;
