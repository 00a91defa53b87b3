//! The Report variety over a batch of bags: instances are buffered per handler and
//! template, and each handler is called once with all of its instances. Expressions are
//! evaluated through the snapshot's plan: each distinct one once per bag, however many
//! instances and rules share it.

use std::time::Instant;

use expr_lang::{Bag, BagEval, EvalTable, NoRecording};
use templates::instances::{edge, logentry, metric, reportnothing, tracespan};
use templates::{BuildError, HandlerError, InstanceBuilder, TemplateKind};

use super::failures::{Stage, policy_error};
use super::matching::{count_dispatch, identity_namespace, rule_matches_planned};
use crate::config::snapshot::{HandlerEntry, Snapshot};
use crate::metrics::Metrics;

/// A part of a Report that failed; the rest was dispatched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// An instance could not be built from one bag.
    #[error("{0}")]
    Instance(BuildError),
    /// A handler failed with a batch.
    #[error("{handler}: {error}")]
    Handler {
        handler: String,
        error: HandlerError,
    },
    /// A handler was routed instances of a template it does not implement.
    #[error("{handler}: handler does not implement template '{template}'")]
    Unsupported {
        handler: String,
        template: TemplateKind,
    },
}

/// Report instances buffered for one handler and template.
enum Batch<'a> {
    Metric(Vec<metric::Instance<'a>>),
    LogEntry(Vec<logentry::Instance<'a>>),
    TraceSpan(Vec<tracespan::Instance<'a>>),
    ReportNothing(Vec<reportnothing::Instance<'a>>),
    Edge(Vec<edge::Instance<'a>>),
}

/// The most instances a batch reserves room for up front; larger batches grow.
const RESERVED_INSTANCES: usize = 256;

impl<'a> Batch<'a> {
    /// An empty batch for a report template with room for `bags` instances (one per bag,
    /// the common case, so the vector is allocated once); `None` for other varieties.
    fn new(kind: TemplateKind, bags: usize) -> Option<Batch<'a>> {
        let n = bags.min(RESERVED_INSTANCES);
        Some(match kind {
            TemplateKind::Metric => Batch::Metric(Vec::with_capacity(n)),
            TemplateKind::LogEntry => Batch::LogEntry(Vec::with_capacity(n)),
            TemplateKind::TraceSpan => Batch::TraceSpan(Vec::with_capacity(n)),
            TemplateKind::ReportNothing => Batch::ReportNothing(Vec::new()),
            TemplateKind::Edge => Batch::Edge(Vec::with_capacity(n)),
            _ => return None,
        })
    }

    /// Builds `builder`'s instance from the bag `eval` serves into the batch.
    fn push<B: Bag>(
        &mut self,
        builder: &'a InstanceBuilder,
        eval: &mut BagEval<'_, 'a, B>,
    ) -> Result<(), BuildError> {
        match self {
            Batch::Metric(v) => metric::Instance::build(builder, eval).map(|i| v.push(i)),
            Batch::LogEntry(v) => logentry::Instance::build(builder, eval).map(|i| v.push(i)),
            Batch::TraceSpan(v) => tracespan::Instance::build(builder, eval).map(|i| v.push(i)),
            Batch::ReportNothing(v) => {
                v.push(builder.reportnothing());
                Ok(())
            }
            Batch::Edge(v) => edge::Instance::build(builder, eval).map(|i| v.push(i)),
        }
    }
}

struct Buffer<'a> {
    handler: &'a HandlerEntry,
    kind: TemplateKind,
    batch: Batch<'a>,
}

/// Runs the Report variety over `bags`. Returns every instance-build and handler error;
/// everything else was dispatched.
pub fn dispatch<'a, B: Bag + Sync>(
    snap: &'a Snapshot,
    bags: &'a [B],
    metrics: &Metrics,
) -> Vec<ReportError> {
    let mut errors = Vec::new();
    let mut buffers: Vec<Buffer<'a>> = Vec::new();
    let mut table = EvalTable::new(&snap.report_plan);
    for bag in bags {
        let mut eval = table.for_bag(bag);
        buffer_instances(
            snap,
            &mut eval,
            bags.len(),
            &mut buffers,
            &mut errors,
            metrics,
        );
    }
    for buffer in &buffers {
        if let Err(e) = call(buffer, metrics) {
            errors.push(e);
        }
    }
    errors
}

/// Builds the instances of every matching rule for the bag `eval` serves into the
/// buffers (created with room for `bags` instances).
fn buffer_instances<'a, B: Bag + Sync>(
    snap: &'a Snapshot,
    eval: &mut BagEval<'_, 'a, B>,
    bags: usize,
    buffers: &mut Vec<Buffer<'a>>,
    errors: &mut Vec<ReportError>,
    metrics: &Metrics,
) {
    let namespace = identity_namespace(snap, eval.bag(), &mut NoRecording);
    for routed in snap.report.for_namespace(&namespace) {
        let rule = &routed.rule;
        if !rule_matches_planned(rule, eval, metrics, "report").unwrap_or(false) {
            continue;
        }
        for dest in &routed.destinations {
            for builder in &dest.instances {
                let Some(buffer) = buffer_for(buffers, &dest.handler, builder.kind(), bags) else {
                    continue;
                };
                if let Err(e) = buffer.batch.push(builder, eval) {
                    policy_error(metrics, &rule.name, Stage::Instance, "report", &e);
                    errors.push(ReportError::Instance(e));
                }
            }
        }
    }
}

/// The buffer of `handler` and template `kind`, created on first use.
fn buffer_for<'a, 'b>(
    buffers: &'b mut Vec<Buffer<'a>>,
    handler: &'a HandlerEntry,
    kind: TemplateKind,
    bags: usize,
) -> Option<&'b mut Buffer<'a>> {
    let index = match buffers
        .iter()
        .position(|b| b.kind == kind && std::ptr::eq(b.handler, handler))
    {
        Some(i) => i,
        None => {
            buffers.push(Buffer {
                handler,
                kind,
                batch: Batch::new(kind, bags)?,
            });
            buffers.len() - 1
        }
    };
    buffers.get_mut(index)
}

/// Hands a buffer to its handler, counting the call.
fn call(buffer: &Buffer<'_>, metrics: &Metrics) -> Result<(), ReportError> {
    let h = &*buffer.handler.handler;
    let started = Instant::now();
    let result = match &buffer.batch {
        Batch::Metric(v) if !v.is_empty() => h.metric().map(|m| m.handle_metric(v)),
        Batch::LogEntry(v) if !v.is_empty() => h.log_entry().map(|m| m.handle_log_entry(v)),
        Batch::TraceSpan(v) if !v.is_empty() => h.trace_span().map(|m| m.handle_trace_span(v)),
        Batch::ReportNothing(v) if !v.is_empty() => {
            h.report_nothing().map(|m| m.handle_report_nothing(v))
        }
        Batch::Edge(v) if !v.is_empty() => h.edge().map(|m| m.handle_edge(v)),
        _ => return Ok(()),
    };
    metrics
        .dispatch_duration
        .observe(started.elapsed().as_secs_f64());
    let failed = !matches!(result, Some(Ok(())));
    count_dispatch(metrics, buffer.kind, buffer.handler, failed);
    match result {
        Some(Ok(())) => Ok(()),
        Some(Err(error)) => Err(ReportError::Handler {
            handler: buffer.handler.name.clone(),
            error,
        }),
        None => Err(ReportError::Unsupported {
            handler: buffer.handler.name.clone(),
            template: buffer.kind,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use expr_lang::{AttrKey, MapBag, Value};

    use super::*;
    use crate::config::compile::{CompileOptions, compile};
    use crate::config::store::parse_file;

    /// Two metrics sharing their dimensions and a log entry sharing one of them; two rules
    /// sharing their `match`.
    const CONFIG: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: noop, namespace: istio-system}
spec: {compiledAdapter: noop}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: count, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions:
      app: source.labels["app"] | "unknown"
      code: response.code | 200
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: size, namespace: istio-system}
spec:
  compiledTemplate: metric
  params:
    value: request.size
    dimensions:
      app: source.labels["app"] | "unknown"
      code: response.code | 200
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: log, namespace: istio-system}
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    variables:
      size: request.size
      code: response.code | 200
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: metrics, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions:
  - {handler: noop, instances: [count, size]}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: logs, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions:
  - {handler: noop, instances: [log]}
"#;

    fn snapshot() -> Snapshot {
        let (docs, errors) = parse_file(Path::new("report.yaml"), CONFIG);
        assert!(errors.is_empty(), "{errors:?}");
        let opts = CompileOptions {
            default_namespace: "istio-system".to_owned(),
            build_handlers: true,
            generation: 1,
            resources: Default::default(),
        };
        compile(&docs, &opts, None).snapshot
    }

    /// Remembers every attribute looked up in the bag it wraps.
    struct Counting {
        bag: MapBag,
        lookups: Mutex<Vec<String>>,
    }

    impl Counting {
        fn new(bag: MapBag) -> Counting {
            Counting {
                bag,
                lookups: Mutex::default(),
            }
        }

        /// How many times each attribute was looked up, by name.
        fn lookups(&self) -> Vec<(String, usize)> {
            let mut names = self.lookups.lock().unwrap().clone();
            names.sort();
            let mut counts: Vec<(String, usize)> = Vec::new();
            for n in names {
                match counts.last_mut() {
                    Some((last, c)) if *last == n => *c += 1,
                    _ => counts.push((n, 1)),
                }
            }
            counts
        }
    }

    impl Bag for Counting {
        fn get(&self, key: AttrKey<'_>) -> Option<Value<'_>> {
            self.lookups.lock().unwrap().push(key.name.to_owned());
            self.bag.get(key)
        }
    }

    fn http(size: Option<i64>) -> Counting {
        let bag = MapBag::new()
            .with("context.protocol", Value::str("http"))
            .with("response.code", Value::Int64(404));
        Counting::new(match size {
            Some(s) => bag.with("request.size", Value::Int64(s)),
            None => bag,
        })
    }

    #[test]
    fn the_plan_holds_each_distinct_expression_once() {
        // `1`, the two dimensions, `request.size`, `"Info"` and the shared match.
        assert_eq!(snapshot().report_plan.len(), 6);
    }

    #[test]
    fn each_shared_expression_is_evaluated_once_per_bag() {
        let snap = snapshot();
        let bags = [http(Some(7)), http(Some(9))];
        let errors = dispatch(&snap, &bags, &Metrics::new());
        assert_eq!(errors, []);
        for bag in &bags {
            let once = |name: &str| (name.to_owned(), 1);
            assert_eq!(
                bag.lookups(),
                [
                    once("context.protocol"),
                    // The identity namespace's reads, outside the plan.
                    once("context.reporter.kind"),
                    once("destination.namespace"),
                    once("request.size"),
                    once("response.code"),
                    once("source.labels"),
                ]
            );
        }
    }

    #[test]
    fn a_shared_failure_fails_every_instance_that_uses_it() {
        let snap = snapshot();
        let bags = [http(None)];
        let errors = dispatch(&snap, &bags, &Metrics::new());
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "instance 'log.instance.istio-system': field 'variables.size': lookup failed: 'request.size'",
                "instance 'size.instance.istio-system': field 'value': lookup failed: 'request.size'",
            ]
        );
        let request_size = bags[0]
            .lookups()
            .into_iter()
            .find(|(n, _)| n == "request.size");
        assert_eq!(request_size, Some(("request.size".to_owned(), 1)));
    }
}
