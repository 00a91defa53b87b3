//! `redisquota`: quota counters shared across servers in Redis.
//!
//! Semantics follow Mixer's `mixer/adapter/redisquota` (Istio 1.4), with the changes
//! noted below:
//!
//! * The counter key is memquota's (quota name and every dimension, [`keys`]), with
//!   `-<FNV-1a of the override's dimensions>` appended when an override applies; an
//!   override matches only dimensions the instance has.
//! * FIXED_WINDOW and ROLLING_WINDOW are Lua scripts run atomically in Redis
//!   ([`scripts`]), so any number of servers sharing one Redis never grant more than the
//!   limit between them. ROLLING_WINDOW is the same algorithm as memquota's rolling
//!   window ([`crate::memquota::window`]); with `validDuration` in whole seconds and a
//!   `bucketDuration` of 100 ms it grants exactly what memquota grants. Unlike Mixer, its
//!   buckets are aligned to the Unix epoch (Mixer started a bucket at the first request
//!   after the previous one ended), so every server cuts time the same way.
//! * The time is the server's, passed to the scripts (as in Mixer), so servers need
//!   synchronised clocks: a server whose clock is behind charges the newest bucket and
//!   frees nothing early; one ahead frees capacity early by its skew.
//! * Results: granted > 0 ⇒ OK, valid until the window's end (fixed) or for
//!   `validDuration` (rolling); nothing granted ⇒ RESOURCE_EXHAUSTED
//!   (`redisquota: Resource exhausted`); an unexpected script reply ⇒ INTERNAL.
//! * A grant or a refusal counted by a script also tells the limit, the window and the
//!   units left (`QuotaResult::budget`, computed inside the same script); replays of a
//!   remembered grant, releases and failure-mode answers do not.
//! * Redis unreachable, failing or slower than the call timeout: `failureMode` OPEN
//!   (default) grants the requested amount, CLOSED grants nothing with
//!   RESOURCE_EXHAUSTED `redisquota: Redis is unavailable` (Mixer answered UNAVAILABLE).
//!   Either way the event is counted in `mixer_adapter_redisquota_unavailable_total`
//!   and logged (at most once per 10 s per handler). The handler connects in the
//!   background and reconnects by itself; building it never waits for Redis.
//! * Requests are deduplicated in Redis (`<dedup id>-<key>.meta`), so a retry that
//!   reaches another server is still not charged twice; a grant is remembered until it
//!   stops being valid, denials are not remembered.
//! * Additions to Mixer: a request of 0 units answers OK without touching Redis (Mixer
//!   answered RESOURCE_EXHAUSTED and started a window); a negative amount releases
//!   units (newest first) and answers OK with the number released, as memquota (Mixer's
//!   scripts subtracted it unchecked and answered RESOURCE_EXHAUSTED).
//! * `connectionPoolSize` is accepted; one multiplexed connection pipelines all
//!   requests, so no pool is needed.

pub mod config;
mod conn;
pub mod scripts;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts};
use templates::handler::{QuotaHandler, QuotaReply};
use templates::instances::quota;
use templates::{Handler, QuotaArgs, QuotaBudget, QuotaResult, Reply, Status, TemplateKind, code};

use self::config::{Algorithm, Config, FailureMode};
use self::conn::{Connection, LogLimiter, Unavailable};
use self::scripts::{Answer, Call, Scripts, Window, parse_answer};
use crate::memquota::clock::{self, Clock, SystemClock, nanos};
use crate::memquota::keys;
use crate::memquota::window::WindowSpec;
use crate::{Adapter, BuildError, Env, ValidateInput, Validation};

/// How long a quota call may wait for Redis before the failure mode answers.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(1);

pub const EXHAUSTED_MESSAGE: &str = "redisquota: Resource exhausted";
pub const UNAVAILABLE_MESSAGE: &str = "redisquota: Redis is unavailable";
pub const INTERNAL_MESSAGE: &str = "redisquota: Internal Error";

/// Quota calls answered by the failure mode, per handler. One process-wide collector:
/// handlers are rebuilt on config changes, and registering it again in the same
/// registry is expected and ignored.
pub static UNAVAILABLE_TOTAL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "mixer_adapter_redisquota_unavailable_total",
            "Quota calls a redisquota handler answered by its failure mode because Redis \
             was unreachable, failing or too slow.",
        ),
        &["handler", "failure_mode"],
    )
    .expect("a valid metric definition")
});

/// The redisquota adapter.
pub struct RedisQuotaAdapter;

/// The adapter as listed in [`crate::inventory`].
pub static ADAPTER: RedisQuotaAdapter = RedisQuotaAdapter;

impl Adapter for RedisQuotaAdapter {
    type Config = Config;

    fn name(&self) -> &'static str {
        "redisquota"
    }
    fn description(&self) -> &'static str {
        "Quota counters shared across servers in Redis"
    }
    fn templates(&self) -> &'static [TemplateKind] {
        &[TemplateKind::Quota]
    }
    fn validate(&self, input: &ValidateInput<'_>) -> Validation<Config> {
        config::validate(input)
    }
    fn build(&self, config: Config, env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        Ok(Arc::new(RedisQuota::new(config, env, Options::default())?))
    }
}

/// Handler settings that are not params.
#[derive(Clone)]
pub struct Options {
    pub clock: Arc<dyn Clock>,
    /// The longest a quota call waits for Redis.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(SystemClock),
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// A redisquota handler.
pub struct RedisQuota {
    inner: Arc<Inner>,
}

struct Inner {
    handler: String,
    config: Config,
    /// `-<hash>` key suffixes, per quota and override.
    suffixes: Vec<Vec<String>>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    scripts: Arc<Scripts>,
    conn: Connection,
    unavailable: IntCounter,
    log: LogLimiter,
    /// Whether the last call failed (to log the recovery once).
    degraded: AtomicBool,
}

/// `redis://` URL of a validated `host:port` (or `host`) address.
fn redis_url(address: &str) -> String {
    if address.contains(':') {
        format!("redis://{address}/")
    } else {
        format!("redis://{address}:6379/")
    }
}

impl RedisQuota {
    /// Builds a handler; connecting happens in the background (on `env`'s runtime, or
    /// the current one, or the one serving the first request).
    pub fn new(config: Config, env: &Env, options: Options) -> Result<RedisQuota, BuildError> {
        let client = redis::Client::open(redis_url(&config.redis_server_url)).map_err(|e| {
            BuildError::InvalidEndpoint(format!(
                "redisquota: invalid Redis address {:?}: {e}",
                config.redis_server_url
            ))
        })?;
        match env
            .resources
            .metrics
            .register(Box::new(UNAVAILABLE_TOTAL.clone()))
        {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(e) => tracing::warn!(error = %e, "redisquota: cannot register its metric"),
        }
        let mode = match config.failure_mode {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        };
        let unavailable = UNAVAILABLE_TOTAL.with_label_values(&[env.handler.as_str(), mode]);
        let suffixes = config
            .quotas
            .iter()
            .map(|q| {
                q.overrides
                    .iter()
                    .map(|o| format!("-{}", keys::override_hash(&o.dimensions)))
                    .collect()
            })
            .collect();
        let scripts = Arc::new(Scripts::default());
        let conn = Connection::new(client, options.timeout, scripts.clone());
        if let Some(runtime) = env
            .resources
            .runtime
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
        {
            conn.start(&runtime, &env.handler);
        }
        Ok(RedisQuota {
            inner: Arc::new(Inner {
                handler: env.handler.clone(),
                config,
                suffixes,
                clock: options.clock,
                timeout: options.timeout,
                scripts,
                conn,
                unavailable,
                log: LogLimiter::new(Duration::from_secs(10)),
                degraded: AtomicBool::new(false),
            }),
        })
    }

    /// Waits for the first connection attempt; whether Redis was reached.
    #[cfg(test)]
    pub async fn wait_first_attempt(&self) -> bool {
        self.inner.conn.wait_first_attempt().await
    }

    /// Allocates (`amount > 0`) or releases (`amount < 0`) quota for `instance`, as
    /// `handle_quota` does, awaiting the answer.
    #[cfg(test)]
    pub async fn allocate(
        &self,
        instance: &quota::Instance<'_>,
        args: QuotaArgs<'_>,
    ) -> QuotaResult {
        match self.inner.prepare(instance, args) {
            Prepared::Answer(result) => result,
            Prepared::Call(call, now) => self.inner.clone().run(call, args.amount, now).await,
        }
    }
}

/// What a request needs.
enum Prepared {
    /// No Redis call: the answer.
    Answer(QuotaResult),
    /// The script call to make, and the request's time.
    Call(Call, i64),
}

impl Inner {
    fn prepare(&self, instance: &quota::Instance<'_>, args: QuotaArgs<'_>) -> Prepared {
        if args.amount == 0 {
            return Prepared::Answer(empty());
        }
        let Some(qi) = self
            .config
            .quotas
            .iter()
            .position(|q| q.name == instance.name)
        else {
            tracing::debug!(
                instance = instance.name,
                "redisquota: no limit for this quota instance"
            );
            return Prepared::Answer(empty());
        };
        let quota = &self.config.quotas[qi];
        let mut key = keys::counter_key(instance.name, &instance.dimensions, true);
        let mut max = quota.max_amount;
        if let Some(oi) = quota
            .overrides
            .iter()
            .position(|o| keys::dimensions_match(&o.dimensions, &instance.dimensions, false))
        {
            max = quota.overrides[oi].max_amount;
            key.extend_from_slice(self.suffixes[qi][oi].as_bytes());
        }
        let length = nanos(quota.valid_duration);
        let window = match quota.algorithm {
            Algorithm::FixedWindow => Window::Fixed { window: length },
            Algorithm::RollingWindow { bucket_duration } => Window::Rolling(WindowSpec {
                window: length,
                bucket: nanos(bucket_duration),
            }),
        };
        let now = self.clock.now_unix_nanos();
        let call = Call::new(
            &key,
            args.deduplication_id,
            window,
            max,
            args.amount,
            args.best_effort,
            now,
        );
        Prepared::Call(call, now)
    }

    async fn run(self: Arc<Self>, call: Call, requested: i64, now: i64) -> QuotaResult {
        let reply = tokio::time::timeout(self.timeout, self.invoke(&call))
            .await
            .unwrap_or(Err(Failure::Unavailable(Unavailable::Timeout(
                self.timeout,
            ))));
        match reply.and_then(|v| parse_answer(&v).map_err(Failure::Internal)) {
            Ok(answer) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(handler = %self.handler, "redisquota: Redis is answering again");
                }
                result(answer, &call, requested, now)
            }
            Err(Failure::Unavailable(e)) => self.fail_over(&e, requested),
            Err(Failure::Internal(e)) => {
                if let Some(suppressed) = self.log.allow() {
                    tracing::error!(handler = %self.handler, error = %e, suppressed,
                        "redisquota: unexpected answer from the quota script");
                }
                QuotaResult {
                    status: Status::new(code::INTERNAL, INTERNAL_MESSAGE),
                    valid_duration: Duration::ZERO,
                    granted_amount: 0,
                    budget: None,
                }
            }
        }
    }

    async fn invoke(&self, call: &Call) -> Result<redis::Value, Failure> {
        let mut conn = self
            .conn
            .get(&self.handler)
            .await
            .map_err(Failure::Unavailable)?;
        let script = if call.rolling {
            &self.scripts.rolling
        } else {
            &self.scripts.fixed
        };
        let mut invocation = script.prepare_invoke();
        for k in &call.keys {
            invocation.key(k.as_slice());
        }
        for a in &call.args {
            invocation.arg(a.as_str());
        }
        invocation
            .invoke_async::<redis::Value>(&mut conn)
            .await
            .map_err(classify)
    }

    /// The failure mode's answer, counted and logged.
    fn fail_over(&self, error: &Unavailable, requested: i64) -> QuotaResult {
        self.unavailable.inc();
        self.degraded.store(true, Ordering::Relaxed);
        let mode = self.config.failure_mode;
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(handler = %self.handler, error = %error, failure_mode = %mode, suppressed,
                "redisquota: Redis is unavailable; answering by the failure mode");
        }
        match mode {
            // Granted without a validity period: no counter stands behind it.
            FailureMode::Open => QuotaResult {
                status: Status::OK,
                valid_duration: Duration::ZERO,
                granted_amount: requested.max(0),
                budget: None,
            },
            FailureMode::Closed => QuotaResult {
                status: Status::new(code::RESOURCE_EXHAUSTED, UNAVAILABLE_MESSAGE),
                valid_duration: Duration::ZERO,
                granted_amount: 0,
                budget: None,
            },
        }
    }
}

enum Failure {
    /// Redis could not serve the call: the failure mode answers.
    Unavailable(Unavailable),
    /// Redis ran the call and the answer makes no sense: INTERNAL.
    Internal(String),
}

/// Redis answered with an error about the request itself (a script or type error) ⇒
/// internal; anything else (I/O, timeouts, loading, read-only replica, out of memory,
/// ...) means Redis cannot serve now ⇒ the failure mode.
fn classify(e: redis::RedisError) -> Failure {
    use redis::ErrorKind;
    let internal = matches!(
        e.kind(),
        ErrorKind::ResponseError | ErrorKind::TypeError | ErrorKind::ExecAbortError
    ) || e.code() == Some("WRONGTYPE");
    if internal && !e.is_io_error() && !e.is_connection_dropped() && !e.is_timeout() {
        Failure::Internal(e.to_string())
    } else {
        Failure::Unavailable(Unavailable::Redis(e.to_string()))
    }
}

fn empty() -> QuotaResult {
    QuotaResult {
        status: Status::OK,
        valid_duration: Duration::ZERO,
        granted_amount: 0,
        budget: None,
    }
}

/// The result of a script answer to `call` for a request of `requested` units at `now`.
fn result(answer: Answer, call: &Call, requested: i64, now: i64) -> QuotaResult {
    let budget = answer.remaining.map(|remaining| QuotaBudget {
        max_amount: call.max,
        window: clock::duration(call.window),
        remaining,
    });
    if answer.amount > 0 {
        QuotaResult {
            status: Status::OK,
            valid_duration: clock::duration(answer.valid_until.saturating_sub(now)),
            granted_amount: answer.amount,
            budget,
        }
    } else if answer.amount < 0 || requested < 0 {
        QuotaResult {
            status: Status::OK,
            valid_duration: Duration::ZERO,
            granted_amount: answer.amount.saturating_neg(),
            budget: None,
        }
    } else {
        QuotaResult {
            status: Status::new(code::RESOURCE_EXHAUSTED, EXHAUSTED_MESSAGE),
            valid_duration: Duration::ZERO,
            granted_amount: 0,
            budget,
        }
    }
}

impl QuotaHandler for RedisQuota {
    fn handle_quota(&self, instance: &quota::Instance<'_>, args: QuotaArgs<'_>) -> QuotaReply<'_> {
        match self.inner.prepare(instance, args) {
            Prepared::Answer(result) => Reply::Ready(Ok(result)),
            Prepared::Call(call, now) => {
                let inner = self.inner.clone();
                let requested = args.amount;
                Reply::Later(Box::pin(async move {
                    Ok(inner.run(call, requested, now).await)
                }))
            }
        }
    }
}

impl Handler for RedisQuota {
    fn quota(&self) -> Option<&dyn QuotaHandler> {
        Some(self)
    }

    fn close(&self) {
        self.inner.conn.close();
    }
}
