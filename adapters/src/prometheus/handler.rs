//! A prometheus handler: routes each metric instance to its family and records its value.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use expr_lang::Value;
use templates::handler::MetricHandler;
use templates::instances::metric;
use templates::{Handler, HandlerError};

use super::config::Config;
use super::exporter::Exporter;
use super::family::{Family, State};
use super::labels::{self, LabelHash};
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
    /// The instance name routed here.
    instance: Box<str>,
    family: Arc<Family>,
    /// The instance's dimension names as validated, in its order; `None` when validation
    /// did not see the instance.
    dims: Option<Box<[Arc<str>]>>,
    /// For each label (in the family's label order), the index of its dimension in `dims`.
    order: Box<[usize]>,
    /// Routes with the same layout (validated, with the same `order` and label limit)
    /// hash equal dimension values alike: the index of the first such route.
    layout: Option<usize>,
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

/// What one batch remembers from instance to instance: where the next route is
/// expected, and the label hash of the last instance with a shareable layout. The
/// runtime hands over a bag's instances one after the other, so the HTTP metrics of one
/// bag (same dimensions, same values) hash their labels once.
#[derive(Default)]
struct Cursor<'b, 'a> {
    next: usize,
    last: Option<(usize, &'b [Value<'a>], LabelHash)>,
}

impl<'b, 'a> Cursor<'b, 'a> {
    /// The label hash of `values` for `family`: the last instance's if it had the same
    /// layout and the same label values, else computed.
    fn hash(
        &mut self,
        family: &Family,
        values: &'b [Value<'a>],
        order: &[usize],
        layout: Option<usize>,
    ) -> LabelHash {
        let hash = match (self.last, layout) {
            (Some((last_layout, last_values, hash)), Some(layout))
                if last_layout == layout
                    && labels::same_label_values(last_values, values, order) =>
            {
                hash
            }
            _ => family.label_hash(values, order),
        };
        self.last = layout.map(|layout| (layout, values, hash));
        hash
    }
}

/// A configured prometheus adapter.
pub struct PrometheusHandler {
    name: String,
    exporter: Arc<Exporter>,
    /// This handler's id in the exporter.
    id: u64,
    /// The routes, in the order of the config's metrics.
    routes: Vec<Route>,
    /// Instance name → index in `routes`, for instances that do not come in route order.
    by_name: foldhash::HashMap<Box<str>, usize>,
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
        let mut routes: Vec<Route> = Vec::with_capacity(config.metrics.len());
        for (metric, family) in config.metrics.iter().zip(&attached.families) {
            let validated = dimensions
                .get(&metric.instance_name)
                .and_then(|names| order_for(&family.def.labels, names).map(|order| (names, order)));
            let (dims, order) = match validated {
                Some((names, order)) => (Some(names.clone().into_boxed_slice()), order),
                None => (None, Vec::new()),
            };
            let layout = dims.as_ref().map(|_| {
                routes
                    .iter()
                    .position(|r| {
                        r.dims.is_some()
                            && *r.order == *order
                            && r.family.max_label_bytes() == family.max_label_bytes()
                    })
                    .unwrap_or(routes.len())
            });
            routes.push(Route {
                instance: metric.instance_name.clone().into_boxed_str(),
                family: family.clone(),
                dims,
                order: order.into_boxed_slice(),
                layout,
            });
        }
        let by_name = (routes.iter().enumerate())
            .map(|(i, route)| (route.instance.clone(), i))
            .collect();
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
            by_name,
            families: attached.families,
            max_series: config.max_series,
            released: AtomicBool::new(false),
        })
    }

    /// The index of the route of instance `name`; `hint` is where it is expected
    /// (instances of a bag usually come in the order of the config's metrics).
    fn route_index(&self, name: &str, hint: usize) -> Option<usize> {
        // Instance names are unique among a handler's metrics (validation refuses
        // duplicates), so a name that matches the hint is its route.
        match self.routes.get(hint) {
            Some(r) if *r.instance == *name => Some(hint),
            _ => self.by_name.get(name).copied(),
        }
    }

    fn record<'b, 'a>(
        &self,
        inst: &'b metric::Instance<'a>,
        now: u64,
        cursor: &mut Cursor<'b, 'a>,
    ) -> Result<(), InstanceError> {
        let Some(index) = self.route_index(inst.name, cursor.next) else {
            return Err(InstanceError::NoMetric {
                instance: inst.name.to_owned(),
            });
        };
        cursor.next = (index + 1) % self.routes.len();
        let route = &self.routes[index];
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
        let (order, layout): (&[usize], _) = if route.fits(dims.names, dims.values.len()) {
            (&route.order, route.layout)
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
            (&computed, None)
        };
        let hash = cursor.hash(family, &dims.values, order, layout);
        if family.state() == State::Pending {
            self.exporter.activate(family);
        }
        family.sweep_if_due(now);
        family.record(&dims.values, order, hash, value, now, self.max_series);
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
        let mut cursor = Cursor::default();
        for inst in instances {
            if let Err(e) = self.record(inst, now, &mut cursor) {
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
