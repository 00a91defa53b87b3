//! A prometheus handler: routes each metric instance to its family and records its value.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use templates::handler::MetricHandler;
use templates::instances::metric;
use templates::{Handler, HandlerError};

use super::config::Config;
use super::exporter::Exporter;
use super::family::{Family, State};
use super::text::{self, ValueError};
use crate::{BuildError, Env};

/// Why one instance of a batch was not recorded (the rest of the batch still is).
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("instance '{instance}' has no metrics[] entry in this handler")]
    NoMetric { instance: String },
    #[error("instance '{instance}' (metric '{metric}'): {source}")]
    Value {
        instance: String,
        metric: String,
        source: ValueError,
    },
    #[error("instance '{instance}' (metric '{metric}'): a counter cannot decrease, value {value}")]
    CounterDecrease {
        instance: String,
        metric: String,
        value: f64,
    },
    #[error(
        "instance '{instance}' (metric '{metric}'): dimensions [{dimensions}] do not match \
         the labels [{labels}]"
    )]
    LabelMismatch {
        instance: String,
        metric: String,
        dimensions: String,
        labels: String,
    },
}

/// How one instance's dimensions become one family's labels.
struct Route {
    family: Arc<Family>,
    /// The instance's dimension names as validated, in its order; `None` when validation
    /// did not see the instance.
    dims: Option<Box<[Arc<str>]>>,
    /// For each label (in the family's label order), the index of its dimension in `dims`.
    order: Box<[usize]>,
}

impl Route {
    /// Whether instance dimensions named `names` are laid out as validated, so that
    /// `order` applies. Names are usually the very same `Arc`s, making this a pointer
    /// comparison per dimension.
    fn fits(&self, names: &[Arc<str>], values: usize) -> bool {
        let Some(dims) = &self.dims else {
            return false;
        };
        dims.len() == names.len()
            && values == names.len()
            && dims
                .iter()
                .zip(names)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
    }
}

/// For each of `labels`, the index of the dimension of that name.
fn order_for(labels: &[String], names: &[Arc<str>]) -> Option<Vec<usize>> {
    if labels.len() != names.len() {
        return None;
    }
    labels
        .iter()
        .map(|l| names.iter().position(|n| **n == **l))
        .collect()
}

/// A configured prometheus adapter.
pub struct PrometheusHandler {
    name: String,
    exporter: Arc<Exporter>,
    /// This handler's id in the exporter.
    id: u64,
    /// Instance name → route.
    routes: HashMap<Box<str>, Route>,
    families: Vec<Arc<Family>>,
    max_series: Option<u64>,
    released: AtomicBool,
}

impl PrometheusHandler {
    /// Builds a handler for `config`. `dimensions` holds the dimension names (in the
    /// instance's order) of the instances validation saw, by instance name.
    pub fn build(
        config: &Config,
        dimensions: &HashMap<String, Vec<Arc<str>>>,
        env: &Env,
    ) -> Result<PrometheusHandler, BuildError> {
        let exporter = env.resources.prometheus.clone();
        let attached = exporter.attach(
            &env.handler,
            &config.metrics,
            config.expiration,
            &env.resources.metrics,
        )?;
        let mut routes = HashMap::with_capacity(config.metrics.len());
        for (metric, family) in config.metrics.iter().zip(&attached.families) {
            let validated = dimensions
                .get(&metric.instance_name)
                .and_then(|names| order_for(&family.def.labels, names).map(|order| (names, order)));
            let (dims, order) = match validated {
                Some((names, order)) => (Some(names.clone().into_boxed_slice()), order),
                None => (None, Vec::new()),
            };
            routes.insert(
                metric.instance_name.clone().into_boxed_str(),
                Route {
                    family: family.clone(),
                    dims,
                    order: order.into_boxed_slice(),
                },
            );
        }
        tracing::debug!(
            handler = %env.handler,
            metrics = config.metrics.len(),
            "Prometheus handler built."
        );
        Ok(PrometheusHandler {
            name: env.handler.clone(),
            exporter,
            id: attached.id,
            routes,
            families: attached.families,
            max_series: config.max_series,
            released: AtomicBool::new(false),
        })
    }

    fn record(&self, inst: &metric::Instance<'_>, now: u64) -> Result<(), InstanceError> {
        let Some(route) = self.routes.get(inst.name) else {
            return Err(InstanceError::NoMetric {
                instance: inst.name.to_owned(),
            });
        };
        let family = &route.family;
        let value =
            text::metric_value(inst.value.as_ref()).map_err(|source| InstanceError::Value {
                instance: inst.name.to_owned(),
                metric: family.def.name.clone(),
                source,
            })?;
        // Mixer's client panicked here (failing the whole batch); NaN is refused too, as
        // it would turn the counter into NaN for good.
        if family.is_counter() && (value < 0.0 || value.is_nan()) {
            return Err(InstanceError::CounterDecrease {
                instance: inst.name.to_owned(),
                metric: family.def.name.clone(),
                value,
            });
        }
        let dims = &inst.dimensions;
        let computed;
        let order: &[usize] = if route.fits(dims.names, dims.values.len()) {
            &route.order
        } else {
            // Instances other than the validated ones (not expected from the runtime):
            // match dimensions to labels by name.
            computed = order_for(&family.def.labels, dims.names)
                .filter(|_| dims.values.len() == dims.names.len())
                .ok_or_else(|| InstanceError::LabelMismatch {
                    instance: inst.name.to_owned(),
                    metric: family.def.name.clone(),
                    dimensions: dims
                        .names
                        .iter()
                        .map(|n| &**n)
                        .collect::<Vec<_>>()
                        .join(", "),
                    labels: family.def.labels.join(", "),
                })?;
            &computed
        };
        if family.state() == State::Pending {
            self.exporter.activate(family);
        }
        family.sweep_if_due(now);
        family.record(&dims.values, order, value, now, self.max_series);
        Ok(())
    }

    /// Gives the handler's families back to the exporter (once).
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.exporter.release(self.id, &self.families);
        }
    }
}

impl MetricHandler for PrometheusHandler {
    fn handle_metric(&self, instances: &[metric::Instance<'_>]) -> Result<(), HandlerError> {
        let now = self.exporter.now();
        let mut failed: Vec<InstanceError> = Vec::new();
        for inst in instances {
            if let Err(e) = self.record(inst, now) {
                failed.push(e);
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            handler = %self.name,
            failed = failed.len(),
            total = instances.len(),
            "Metric instances not recorded."
        );
        Err(HandlerError::Rejected(format!(
            "{} of {} metric instances not recorded: {}",
            failed.len(),
            instances.len(),
            failed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )))
    }
}

impl Handler for PrometheusHandler {
    fn metric(&self) -> Option<&dyn MetricHandler> {
        Some(self)
    }

    fn close(&self) {
        self.release();
        tracing::debug!(handler = %self.name, "Prometheus handler closed.");
    }
}

impl Drop for PrometheusHandler {
    /// A handler can be dropped without being closed (its configuration was built and
    /// then rejected): its families must not stay in the exposition.
    fn drop(&mut self) {
        self.release();
    }
}
