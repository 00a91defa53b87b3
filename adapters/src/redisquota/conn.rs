//! The handler's Redis connection: established in the background, never at build time,
//! and re-established by itself.
//!
//! A handler must be buildable while Redis is down (a config load must not fail because
//! of an outage), so the first connection is made by a background task that retries with
//! exponential backoff. Once connected, a [`ConnectionManager`] (one multiplexed,
//! pipelined connection) reconnects on the next command after the connection breaks.
//! Requests never wait for more than the call timeout: while the first attempt is in
//! progress they wait for it (within the timeout); when Redis is known to be down they
//! fail at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::scripts::Scripts;

/// Delay before the second connection attempt; doubled up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a request could not use Redis.
#[derive(Clone, Debug, Error)]
pub enum Unavailable {
    #[error("not connected to Redis: {0}")]
    NotConnected(String),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis error: {0}")]
    Redis(String),
    #[error("no async runtime to connect to Redis from")]
    NoRuntime,
}

#[derive(Clone)]
enum State {
    /// The first attempt is under way.
    Connecting,
    /// The last attempt failed; the background task retries.
    Down(String),
    Up(ConnectionManager),
}

pub struct Connection {
    client: redis::Client,
    timeout: Duration,
    state: watch::Sender<State>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Whether the task was started (read on every request, without locking).
    started: AtomicBool,
    scripts: Arc<Scripts>,
    closed: AtomicBool,
}

impl Connection {
    pub fn new(client: redis::Client, timeout: Duration, scripts: Arc<Scripts>) -> Connection {
        Connection {
            client,
            timeout,
            state: watch::Sender::new(State::Connecting),
            task: Mutex::new(None),
            started: AtomicBool::new(false),
            scripts,
            closed: AtomicBool::new(false),
        }
    }

    /// Starts the background connection task on `runtime` (once).
    pub fn start(&self, runtime: &tokio::runtime::Handle, handler: &str) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Acquire) || self.started.load(Ordering::Acquire) {
            return;
        }
        let config = ConnectionManagerConfig::new()
            // One attempt per reconnection: a request that finds the connection broken
            // triggers the next attempt, so retrying inside would only delay answers.
            .set_number_of_retries(0)
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        *task = Some(runtime.spawn(connect(
            self.client.clone(),
            config,
            self.timeout,
            self.state.clone(),
            self.scripts.clone(),
            handler.to_owned(),
        )));
        self.started.store(true, Ordering::Release);
    }

    /// A connection to use, or why there is none. Waits only for the first connection
    /// attempt; the caller bounds the wait with its timeout.
    pub async fn get(&self, handler: &str) -> Result<ConnectionManager, Unavailable> {
        if !self.started.load(Ordering::Acquire) {
            // Built outside a runtime: start from the runtime serving the request.
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| Unavailable::NoRuntime)?;
            self.start(&runtime, handler);
        }
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| !matches!(s, State::Connecting))
            .await
            .map(|s| (*s).clone())
            .map_err(|_| Unavailable::NotConnected("the connection task ended".into()))?;
        match state {
            State::Up(c) => Ok(c),
            State::Down(e) => Err(Unavailable::NotConnected(e)),
            State::Connecting => Err(Unavailable::NotConnected("connecting".into())),
        }
    }

    /// Waits until the first connection attempt has finished; whether it succeeded.
    #[cfg(test)]
    pub async fn wait_first_attempt(&self) -> bool {
        let mut rx = self.state.subscribe();
        matches!(
            rx.wait_for(|s| !matches!(s, State::Connecting))
                .await
                .map(|s| (*s).clone()),
            Ok(State::Up(_))
        )
    }

    /// Stops the background task and lets go of the connection (it closes once calls
    /// still in flight are done with it).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        self.state
            .send_replace(State::Down("the handler is closed".to_owned()));
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// Connects, retrying with backoff until it succeeds; then loads the scripts.
async fn connect(
    client: redis::Client,
    config: ConnectionManagerConfig,
    timeout: Duration,
    state: watch::Sender<State>,
    scripts: Arc<Scripts>,
    handler: String,
) {
    let mut backoff = INITIAL_BACKOFF;
    let mut failures = 0u64;
    loop {
        let attempt = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client.clone(), config.clone()),
        )
        .await;
        match attempt {
            Ok(Ok(mut manager)) => {
                // Loading now saves the first requests a NOSCRIPT round trip; a failure
                // here is harmless, `EVALSHA` falls back to loading.
                for script in [&scripts.fixed, &scripts.rolling] {
                    let error = match tokio::time::timeout(timeout, script.load_async(&mut manager))
                        .await
                    {
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("timed out after {timeout:?}"),
                    };
                    tracing::debug!(handler = %handler, error = %error, "redisquota: script not preloaded");
                }
                if failures > 0 {
                    tracing::info!(handler = %handler, attempts = failures + 1, "redisquota: connected to Redis");
                }
                state.send_replace(State::Up(manager));
                return;
            }
            Ok(Err(e)) => fail(&state, &handler, &mut failures, e.to_string()),
            Err(_) => fail(
                &state,
                &handler,
                &mut failures,
                format!("connection attempt timed out after {timeout:?}"),
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn fail(state: &watch::Sender<State>, handler: &str, failures: &mut u64, error: String) {
    // The first failure and then every 10th, so a long outage does not flood the log.
    if failures.is_multiple_of(10) {
        tracing::warn!(handler = %handler, error = %error, attempts = *failures + 1,
            "redisquota: cannot connect to Redis; retrying in the background");
    }
    *failures += 1;
    state.send_replace(State::Down(error));
}

/// Lets through one log line per interval and counts the rest.
pub struct LogLimiter {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last line)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}
