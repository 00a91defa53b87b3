//! What adapters implement: one trait per template, grouped by variety, and the results
//! they return. A handler exposes the traits it supports through [`Handler`]; the config
//! check rejects routing an instance to a handler whose adapter does not list its template.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::instances::{
    apikey, authorization, checknothing, edge, kubernetes, listentry, logentry, metric, quota,
    reportnothing, tracespan,
};
use crate::outputs::KubernetesOutput;

/// `google.rpc.Code` values used by handlers and the runtime.
pub mod code {
    pub const OK: i32 = 0;
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const DATA_LOSS: i32 = 15;
    pub const UNAUTHENTICATED: i32 = 16;

    /// The code's name, as in `google/rpc/code.proto`.
    pub fn name(code: i32) -> &'static str {
        match code {
            OK => "OK",
            CANCELLED => "CANCELLED",
            UNKNOWN => "UNKNOWN",
            INVALID_ARGUMENT => "INVALID_ARGUMENT",
            DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
            NOT_FOUND => "NOT_FOUND",
            ALREADY_EXISTS => "ALREADY_EXISTS",
            PERMISSION_DENIED => "PERMISSION_DENIED",
            RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
            FAILED_PRECONDITION => "FAILED_PRECONDITION",
            ABORTED => "ABORTED",
            OUT_OF_RANGE => "OUT_OF_RANGE",
            UNIMPLEMENTED => "UNIMPLEMENTED",
            INTERNAL => "INTERNAL",
            UNAVAILABLE => "UNAVAILABLE",
            DATA_LOSS => "DATA_LOSS",
            UNAUTHENTICATED => "UNAUTHENTICATED",
            _ => "UNKNOWN",
        }
    }

    /// Parses a code by name (case-insensitive) or number.
    pub fn parse(s: &str) -> Option<i32> {
        if let Ok(n) = s.trim().parse::<i32>() {
            return Some(n);
        }
        (0..=16).find(|c| name(*c).eq_ignore_ascii_case(s.trim()))
    }
}

/// An HTTP response the proxy should send instead of forwarding a denied request
/// (`istio.policy.v1beta1.DirectHttpResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectHttpResponse {
    /// 0 means "derive from the status code".
    pub code: u32,
    pub body: String,
    pub headers: BTreeMap<String, String>,
}

/// A `google.rpc.Status` as handlers produce it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub code: i32,
    pub message: String,
    pub direct_response: Option<DirectHttpResponse>,
}

impl Status {
    pub const OK: Status = Status {
        code: code::OK,
        message: String::new(),
        direct_response: None,
    };

    pub fn new(code: i32, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            direct_response: None,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.code == code::OK
    }
}

/// A check handler's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub status: Status,
    /// How long the caller may cache this answer.
    pub valid_duration: Duration,
    /// How many times the caller may reuse it.
    pub valid_use_count: i32,
}

impl CheckResult {
    /// OK, cacheable for `valid_duration` and `valid_use_count` uses.
    pub fn ok(valid_duration: Duration, valid_use_count: i32) -> CheckResult {
        CheckResult {
            status: Status::OK,
            valid_duration,
            valid_use_count,
        }
    }
}

/// The call arguments of a quota allocation.
#[derive(Clone, Copy, Debug)]
pub struct QuotaArgs<'a> {
    /// The request's deduplication id with the quota name appended.
    pub deduplication_id: &'a str,
    /// Units requested (negative releases units of a pool quota).
    pub amount: i64,
    /// Whether a partial grant is acceptable.
    pub best_effort: bool,
}

/// A quota handler's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaResult {
    pub status: Status,
    pub valid_duration: Duration,
    pub granted_amount: i64,
    /// The counter's limit and what it has left after this allocation, when the handler
    /// knows them (Envoy's rate-limit answer tells its client); `None` otherwise.
    pub budget: Option<QuotaBudget>,
}

/// The limit a quota allocation was counted against, and what is left of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaBudget {
    /// The limit that applied: the quota's, or the matching override's.
    pub max_amount: i64,
    /// What the limit counts over; zero for a pool, which refills only by releases.
    pub window: Duration,
    /// Units still available after this allocation (never negative).
    pub remaining: i64,
}

/// A handler failed (as opposed to answering "no"): the runtime turns this into an RPC
/// error or a counted event, never into a silent allow. It displays as its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The backend could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The backend did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The backend (or the sink) refused what it was given, or answered something
    /// invalid.
    #[error("{0}")]
    Rejected(String),
    /// The handler itself failed.
    #[error("{0}")]
    Internal(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An answer that is either ready now (in-memory handlers: no allocation, no await) or
/// arrives later (handlers that do I/O).
pub enum Reply<'a, T> {
    Ready(T),
    Later(BoxFuture<'a, T>),
}

pub type CheckReply<'a> = Reply<'a, Result<CheckResult, HandlerError>>;
pub type QuotaReply<'a> = Reply<'a, Result<QuotaResult, HandlerError>>;

/// REPORT handlers receive every instance of one Report call in one batch. They must not
/// block: slow sinks buffer and count what they drop.
pub trait MetricHandler: Send + Sync {
    fn handle_metric(&self, instances: &[metric::Instance<'_>]) -> Result<(), HandlerError>;
}
pub trait LogEntryHandler: Send + Sync {
    fn handle_log_entry(&self, instances: &[logentry::Instance<'_>]) -> Result<(), HandlerError>;
}
pub trait TraceSpanHandler: Send + Sync {
    fn handle_trace_span(&self, instances: &[tracespan::Instance<'_>]) -> Result<(), HandlerError>;
}
pub trait ReportNothingHandler: Send + Sync {
    fn handle_report_nothing(
        &self,
        instances: &[reportnothing::Instance<'_>],
    ) -> Result<(), HandlerError>;
}
pub trait EdgeHandler: Send + Sync {
    fn handle_edge(&self, instances: &[edge::Instance<'_>]) -> Result<(), HandlerError>;
}

/// CHECK handlers answer one instance at a time.
pub trait CheckNothingHandler: Send + Sync {
    fn handle_check_nothing(&self, instance: &checknothing::Instance<'_>) -> CheckReply<'_>;
}
pub trait ListEntryHandler: Send + Sync {
    fn handle_list_entry(&self, instance: &listentry::Instance<'_>) -> CheckReply<'_>;
}
pub trait AuthorizationHandler: Send + Sync {
    fn handle_authorization(&self, instance: &authorization::Instance<'_>) -> CheckReply<'_>;
}
pub trait ApiKeyHandler: Send + Sync {
    fn handle_api_key(&self, instance: &apikey::Instance<'_>) -> CheckReply<'_>;
}

/// QUOTA handlers allocate.
pub trait QuotaHandler: Send + Sync {
    fn handle_quota(&self, instance: &quota::Instance<'_>, args: QuotaArgs<'_>) -> QuotaReply<'_>;
}

/// ATTRIBUTE_GENERATOR handlers answer at once, from memory: they run before every
/// Check and every Report record. An error means "nothing found": the bindings'
/// defaults apply.
pub trait KubernetesHandler: Send + Sync {
    fn generate_kubernetes(
        &self,
        instance: &kubernetes::Instance<'_>,
    ) -> Result<KubernetesOutput, HandlerError>;
}

/// A configured adapter. It exposes the template traits it implements; the defaults say
/// "not supported".
pub trait Handler: Send + Sync + 'static {
    fn metric(&self) -> Option<&dyn MetricHandler> {
        None
    }
    fn log_entry(&self) -> Option<&dyn LogEntryHandler> {
        None
    }
    fn trace_span(&self) -> Option<&dyn TraceSpanHandler> {
        None
    }
    fn report_nothing(&self) -> Option<&dyn ReportNothingHandler> {
        None
    }
    fn edge(&self) -> Option<&dyn EdgeHandler> {
        None
    }
    fn check_nothing(&self) -> Option<&dyn CheckNothingHandler> {
        None
    }
    fn list_entry(&self) -> Option<&dyn ListEntryHandler> {
        None
    }
    fn authorization(&self) -> Option<&dyn AuthorizationHandler> {
        None
    }
    fn api_key(&self) -> Option<&dyn ApiKeyHandler> {
        None
    }
    fn quota(&self) -> Option<&dyn QuotaHandler> {
        None
    }
    fn kubernetes(&self) -> Option<&dyn KubernetesHandler> {
        None
    }
    /// Stops background work and flushes buffered output. Called once, after the last
    /// request that can reach this handler has finished.
    fn close(&self) {}
}
