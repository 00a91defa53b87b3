//! Batched export off the request path.
//!
//! Report threads push converted spans into a bounded in-memory queue and return; a
//! background task on the server's runtime takes batches off it (when a full batch is
//! queued, or `scheduledDelay` after the previous one) and exports them. When the queue
//! is full — the collector is slow or unreachable — new spans are dropped and counted,
//! so tracing never slows down or fails a Report call.
//!
//! A batch is one `ExportTraceServiceRequest`: OTLP carries the service name (and
//! address) on the Resource, so the batch's spans are grouped by both, one
//! `ResourceSpans` per group, and sent in one call over the handler's gRPC channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::client::{ExportError, Exporter};
use super::config::BatchConfig;
use super::span::{self, Converted, HostIp};
use super::wire;

/// The adapters' self-metrics for trace export, shared by every trace handler of the
/// process: handlers are rebuilt on config reloads, and their counters must continue
/// (and must not be registered twice).
struct Families {
    dropped: IntCounterVec,
    exported: IntCounterVec,
    failed: IntCounterVec,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let family = |name: &str, help: &str| {
            // The definitions are constants; they cannot fail to build.
            IntCounterVec::new(Opts::new(name, help), &["handler"]).expect("valid metric")
        };
        Families {
            dropped: family(
                "mixer_adapter_trace_spans_dropped_total",
                "Trace spans dropped before export: the export queue was full, the handler \
                 was closed, or its final flush ran out of time.",
            ),
            exported: family(
                "mixer_adapter_trace_spans_exported_total",
                "Trace spans the collector accepted.",
            ),
            failed: family(
                "mixer_adapter_trace_spans_failed_total",
                "Trace spans in exports that failed or timed out.",
            ),
        }
    })
}

/// One handler's counters.
#[derive(Clone)]
pub struct Metrics {
    pub dropped: IntCounter,
    pub exported: IntCounter,
    pub failed: IntCounter,
}

impl Metrics {
    /// The counters of `handler`, registering the families in `registry` if they are not
    /// there yet.
    pub fn new(handler: &str, registry: &Registry) -> Metrics {
        let f = families();
        for family in [&f.dropped, &f.exported, &f.failed] {
            match registry.register(Box::new(family.clone())) {
                // Registered by an earlier handler or an earlier configuration.
                Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot register the trace adapters' self-metrics.")
                }
            }
        }
        Metrics {
            dropped: f.dropped.with_label_values(&[handler]),
            exported: f.exported.with_label_values(&[handler]),
            failed: f.failed.with_label_values(&[handler]),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The queue stays consistent even if a holder panicked (every operation on it is a
    // single push or drain), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Queued {
    spans: VecDeque<Converted>,
    /// Set once the worker stops taking spans; later spans are dropped.
    closed: bool,
}

/// The bounded queue between Report threads and the export task.
pub struct Queue {
    inner: Mutex<Queued>,
    /// Wakes the worker when the queue stops being empty or holds a full batch.
    wake: Notify,
    capacity: usize,
    batch_size: usize,
    metrics: Metrics,
    /// Whether the first drop was logged: drops are counted, and a warning per dropped
    /// span would flood the log exactly when the collector is in trouble.
    warned: AtomicBool,
    handler: String,
}

impl Queue {
    pub fn new(handler: &str, batch: &BatchConfig, metrics: Metrics) -> Queue {
        Queue {
            inner: Mutex::new(Queued {
                spans: VecDeque::new(),
                closed: false,
            }),
            wake: Notify::new(),
            capacity: batch.max_queue_size as usize,
            batch_size: batch.max_export_batch_size as usize,
            metrics,
            warned: AtomicBool::new(false),
            handler: handler.to_owned(),
        }
    }

    /// Spans the queue has room for now (none once closed). Report threads check it
    /// before building spans, so that spans bound to be dropped are only counted; the
    /// room may shrink before they push, and [`Queue::push`] drops what no longer fits.
    pub fn room(&self) -> usize {
        let q = lock(&self.inner);
        if q.closed {
            0
        } else {
            self.capacity.saturating_sub(q.spans.len())
        }
    }

    /// Counts `n` spans dropped for lack of room without being queued.
    pub fn count_dropped(&self, n: u64) {
        if n > 0 {
            self.dropped(n);
        }
    }

    /// Enqueues `spans` without waiting; what does not fit is dropped and counted.
    pub fn push(&self, spans: impl IntoIterator<Item = Converted>) {
        let mut dropped = 0u64;
        let wake = {
            let mut q = lock(&self.inner);
            let was_empty = q.spans.is_empty();
            for s in spans {
                if q.closed || q.spans.len() >= self.capacity {
                    dropped += 1;
                } else {
                    q.spans.push_back(s);
                }
            }
            (was_empty && !q.spans.is_empty()) || q.spans.len() >= self.batch_size
        };
        if wake {
            self.wake.notify_one();
        }
        if dropped > 0 {
            self.dropped(dropped);
        }
    }

    fn dropped(&self, dropped: u64) {
        self.metrics.dropped.inc_by(dropped);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                handler = %self.handler,
                dropped,
                capacity = self.capacity,
                "Trace span export queue is full or closed; spans are dropped (counted in \
                 mixer_adapter_trace_spans_dropped_total, further drops are not logged)."
            );
        }
    }

    /// Takes up to one batch.
    fn take_batch(&self) -> Vec<Converted> {
        let mut q = lock(&self.inner);
        let n = q.spans.len().min(self.batch_size);
        q.spans.drain(..n).collect()
    }

    fn full(&self) -> bool {
        lock(&self.inner).spans.len() >= self.batch_size
    }

    fn is_empty(&self) -> bool {
        lock(&self.inner).spans.is_empty()
    }

    /// Refuses further spans and discards the queued ones, counting them as dropped.
    pub fn close_and_discard(&self) -> u64 {
        let n = {
            let mut q = lock(&self.inner);
            q.closed = true;
            let n = q.spans.len() as u64;
            q.spans.clear();
            n
        };
        self.metrics.dropped.inc_by(n);
        n
    }

    fn close(&self) {
        lock(&self.inner).closed = true;
    }
}

/// The export task's state.
pub struct Worker {
    pub queue: Arc<Queue>,
    pub exporter: Exporter,
    pub scheduled_delay: Duration,
    /// Bound of one export call.
    pub timeout: Duration,
    pub metrics: Metrics,
    pub handler: String,
    /// Whether the last export succeeded: failures are logged when they start and
    /// recoveries when they end, not once per batch.
    pub healthy: bool,
}

impl Worker {
    /// Exports batches until `shutdown` fires (with the flush deadline) or its sender is
    /// dropped, then flushes the queue.
    pub async fn run(mut self, mut shutdown: oneshot::Receiver<Instant>) {
        let flush_deadline = loop {
            // Idle until a span is queued; then until a full batch is queued or the
            // scheduled delay has passed since that first span.
            let mut wake_at = None;
            let stop = loop {
                if self.queue.full() {
                    break None;
                }
                if wake_at.is_none() && !self.queue.is_empty() {
                    wake_at = Some(Instant::now() + self.scheduled_delay);
                }
                let delay = async {
                    match wake_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    r = &mut shutdown => {
                        // A dropped handler never called close(): flush within the usual
                        // export bound.
                        break Some(r.unwrap_or_else(|_| Instant::now() + self.timeout));
                    }
                    _ = self.queue.wake.notified() => {}
                    _ = delay => break None,
                }
            };
            if let Some(deadline) = stop {
                break deadline;
            }
            let batch = self.queue.take_batch();
            if !batch.is_empty() {
                self.export(batch, Instant::now() + self.timeout).await;
            }
        };

        // Flush: no new spans, then everything queued, batch by batch, until the deadline.
        self.queue.close();
        loop {
            let batch = self.queue.take_batch();
            if batch.is_empty() {
                break;
            }
            if Instant::now() >= flush_deadline {
                self.metrics.dropped.inc_by(batch.len() as u64);
                let lost = batch.len() as u64 + self.queue.close_and_discard();
                tracing::warn!(
                    handler = %self.handler,
                    lost,
                    "Trace spans could not be flushed before the close timeout; they are dropped."
                );
                break;
            }
            self.export(batch, flush_deadline).await;
        }
    }

    /// Exports `batch` in one request, bounded by the export timeout and by `deadline`.
    async fn export(&mut self, batch: Vec<Converted>, deadline: Instant) {
        let n = batch.len() as u64;
        let request = encode_request(batch);
        let bound = deadline.min(Instant::now() + self.timeout);
        match self.exporter.export(request, bound).await {
            Ok(rejected) => {
                let rejected = rejected.min(n);
                self.metrics.exported.inc_by(n - rejected);
                self.metrics.failed.inc_by(rejected);
                if rejected > 0 {
                    tracing::debug!(
                        handler = %self.handler,
                        rejected,
                        "The collector rejected some trace spans of an export."
                    );
                }
                if !self.healthy {
                    tracing::info!(handler = %self.handler, "Trace span export recovered.");
                    self.healthy = true;
                }
            }
            Err(error) => self.failed(n, &error),
        }
    }

    fn failed(&mut self, spans: u64, error: &ExportError) {
        self.metrics.failed.inc_by(spans);
        if self.healthy {
            tracing::warn!(
                handler = %self.handler,
                spans,
                %error,
                "Trace span export failed; spans are lost (counted in \
                 mixer_adapter_trace_spans_failed_total, further failures are logged at \
                 debug level until an export succeeds)."
            );
            self.healthy = false;
        } else {
            tracing::debug!(handler = %self.handler, spans, %error, "Trace span export failed.");
        }
    }
}

/// The `ExportTraceServiceRequest` of `batch`: one `ResourceSpans` per service and
/// address, each with one `ScopeSpans`, holding that group's spans in queue order.
/// Every length is computed before its message is written, so each span's bytes are
/// copied once.
pub fn encode_request(batch: Vec<Converted>) -> Vec<u8> {
    let groups = Groups::of(&batch);
    let scope_len =
        wire::field_len(span::SCOPE_NAME.len()) + wire::field_len(span::SCOPE_VERSION.len());
    let span_bytes: usize = batch.iter().map(|c| wire::field_len(c.span().len())).sum();
    let mut out = Vec::with_capacity(span_bytes + groups.heads.len() * 160);
    let (mut resource, mut ip_text) = (Vec::new(), String::new());
    for &head in &groups.heads {
        let first = &batch[head];
        resource.clear();
        write_resource(&mut resource, first.service(), first.ip, &mut ip_text);
        let spans = || groups.members(head).map(|i| batch[i].span());
        let scope_spans_len =
            wire::field_len(scope_len) + spans().map(|s| wire::field_len(s.len())).sum::<usize>();
        let resource_spans_len = resource.len() + wire::field_len(scope_spans_len);
        wire::header(&mut out, wire::REQUEST_RESOURCE_SPANS, resource_spans_len);
        out.extend_from_slice(&resource);
        wire::header(&mut out, wire::RESOURCE_SPANS_SCOPE_SPANS, scope_spans_len);
        wire::header(&mut out, wire::SCOPE_SPANS_SCOPE, scope_len);
        wire::bytes(&mut out, wire::SCOPE_NAME, span::SCOPE_NAME.as_bytes());
        wire::bytes(
            &mut out,
            wire::SCOPE_VERSION,
            span::SCOPE_VERSION.as_bytes(),
        );
        for s in spans() {
            wire::bytes(&mut out, wire::SCOPE_SPANS_SPANS, s);
        }
    }
    out
}

/// A batch's spans grouped by service and address, in order of first appearance, each
/// group in queue order (a list threaded through the batch: no allocation per group).
struct Groups {
    /// The first span of each group.
    heads: Vec<usize>,
    /// The next span of the same group, or `usize::MAX`.
    next: Vec<usize>,
}

impl Groups {
    fn of(batch: &[Converted]) -> Groups {
        let mut tails: foldhash::HashMap<(&[u8], Option<HostIp>), usize> =
            foldhash::HashMap::with_capacity_and_hasher(batch.len(), Default::default());
        let mut heads = Vec::new();
        let mut next = vec![usize::MAX; batch.len()];
        for (i, c) in batch.iter().enumerate() {
            match tails.entry((c.service(), c.ip)) {
                std::collections::hash_map::Entry::Occupied(mut tail) => {
                    next[*tail.get()] = i;
                    tail.insert(i);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                    heads.push(i);
                }
            }
        }
        Groups { heads, next }
    }

    /// The spans of the group starting at `head`.
    fn members(&self, head: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(head), |&i| {
            Some(self.next[i]).filter(|&n| n != usize::MAX)
        })
    }
}

/// Writes the `resource` field of one service's `ResourceSpans`: `service.name`, and
/// `host.ip` when the workload address is known (Zipkin showed both as the span's
/// local endpoint).
fn write_resource(rs: &mut Vec<u8>, service: &[u8], ip: Option<HostIp>, text: &mut String) {
    wire::nested(rs, wire::RESOURCE_SPANS_RESOURCE, |r| {
        wire::key_value(r, wire::RESOURCE_ATTRIBUTES, "service.name", |v| {
            wire::bytes(v, wire::ANY_STRING, service)
        });
        if let Some(ip) = ip {
            text.clear();
            ip.write_text(text);
            // An array of one string, as the SDK's Resource carried it.
            wire::key_value(r, wire::RESOURCE_ATTRIBUTES, "host.ip", |v| {
                wire::nested(v, wire::ANY_ARRAY, |array| {
                    wire::nested(array, wire::ARRAY_VALUES, |one| wire::any_string(one, text))
                })
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    fn span(id: u8, name_len: usize) -> Vec<u8> {
        Span {
            span_id: vec![id; 8],
            name: "n".repeat(name_len),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn text(v: &Option<AnyValue>) -> String {
        match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            Some(any_value::Value::ArrayValue(a)) => text(&Some(a.values[0].clone())),
            other => panic!("{other:?}"),
        }
    }

    /// Groups of every size (lengths of one to three varint bytes), IPv4 and IPv6
    /// addresses and none: what prost decodes is what was queued.
    #[test]
    fn requests_decode_into_their_groups() {
        let v6 = HostIp::new(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let v4 = HostIp::new(&[10, 1, 2, 3]);
        let mut batch = Vec::new();
        for i in 0..40u8 {
            batch.push(Converted::from_parts(&span(i, 2_000), "big", v4));
            if i % 10 == 0 {
                batch.push(Converted::from_parts(&span(i, 3), "small", v6));
                batch.push(Converted::from_parts(&span(i, 0), "", None));
            }
        }
        let request = ExportTraceServiceRequest::decode(&encode_request(batch)[..]).unwrap();
        let groups: Vec<(String, Option<String>, Vec<u8>)> = request
            .resource_spans
            .iter()
            .map(|rs| {
                let attrs = &rs.resource.as_ref().unwrap().attributes;
                assert_eq!(rs.scope_spans.len(), 1);
                let scope = rs.scope_spans[0].scope.as_ref().unwrap();
                assert_eq!(
                    (scope.name.as_str(), scope.version.as_str()),
                    (span::SCOPE_NAME, span::SCOPE_VERSION)
                );
                let ids = rs.scope_spans[0].spans.iter().map(|s| s.span_id[0]);
                (
                    text(&attrs[0].value),
                    attrs.get(1).map(|kv| text(&kv.value)),
                    ids.collect(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                ("big".into(), Some("10.1.2.3".into()), (0..40).collect()),
                (
                    "small".into(),
                    Some("2001:db8::1".into()),
                    vec![0, 10, 20, 30]
                ),
                (String::new(), None, vec![0, 10, 20, 30]),
            ]
        );
        assert_eq!(
            request.resource_spans[0].scope_spans[0].spans[39]
                .name
                .len(),
            2_000
        );
        assert!(encode_request(Vec::new()).is_empty());
    }
}
