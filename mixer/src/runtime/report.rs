//! The Report variety over a batch of bags: instances are buffered per handler and
//! template, and each handler is called once with all of its instances.

use std::time::Instant;

use expr_lang::{Bag, NoRecording};
use templates::instances::{edge, logentry, metric, reportnothing, tracespan};
use templates::{BuildError, HandlerError, InstanceBuilder, TemplateKind};

use super::failures::{Stage, policy_error};
use super::matching::{count_dispatch, identity_namespace, rule_matches};
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

impl<'a> Batch<'a> {
    /// An empty batch for a report template; `None` for other varieties.
    fn new(kind: TemplateKind) -> Option<Batch<'a>> {
        Some(match kind {
            TemplateKind::Metric => Batch::Metric(Vec::new()),
            TemplateKind::LogEntry => Batch::LogEntry(Vec::new()),
            TemplateKind::TraceSpan => Batch::TraceSpan(Vec::new()),
            TemplateKind::ReportNothing => Batch::ReportNothing(Vec::new()),
            TemplateKind::Edge => Batch::Edge(Vec::new()),
            _ => return None,
        })
    }

    /// Builds `builder`'s instance from `bag` into the batch.
    fn push<B: Bag>(&mut self, builder: &'a InstanceBuilder, bag: &'a B) -> Result<(), BuildError> {
        let rec = &mut NoRecording;
        match self {
            Batch::Metric(v) => builder.metric(bag, rec).map(|i| v.push(i)),
            Batch::LogEntry(v) => builder.logentry(bag, rec).map(|i| v.push(i)),
            Batch::TraceSpan(v) => builder.tracespan(bag, rec).map(|i| v.push(i)),
            Batch::ReportNothing(v) => {
                v.push(builder.reportnothing());
                Ok(())
            }
            Batch::Edge(v) => builder.edge(bag, rec).map(|i| v.push(i)),
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
    for bag in bags {
        buffer_instances(snap, bag, &mut buffers, &mut errors, metrics);
    }
    for buffer in &buffers {
        if let Err(e) = call(buffer, metrics) {
            errors.push(e);
        }
    }
    errors
}

/// Builds the bag's instances of every matching rule into the buffers.
fn buffer_instances<'a, B: Bag + Sync>(
    snap: &'a Snapshot,
    bag: &'a B,
    buffers: &mut Vec<Buffer<'a>>,
    errors: &mut Vec<ReportError>,
    metrics: &Metrics,
) {
    let namespace = identity_namespace(snap, bag, &mut NoRecording);
    for routed in snap.report.for_namespace(&namespace) {
        let rule = &routed.rule;
        if !rule_matches(rule, bag, &mut NoRecording, metrics, "report").unwrap_or(false) {
            continue;
        }
        for dest in &routed.destinations {
            for builder in &dest.instances {
                let Some(buffer) = buffer_for(buffers, &dest.handler, builder.kind()) else {
                    continue;
                };
                if let Err(e) = buffer.batch.push(builder, bag) {
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
                batch: Batch::new(kind)?,
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
