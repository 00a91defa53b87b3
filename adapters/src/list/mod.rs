//! `listchecker`: checks whether a value is on a list (whitelist or blacklist). The
//! directory is `list`, as in Istio; the adapter name is `listchecker`.
//!
//! The list is the `overrides` plus, when `providerUrl` is set, the entries fetched from
//! it in the background every `refreshInterval`.
//!
//! **The provider is an untrusted peer.** Its response body is read up to
//! `maxProviderBodyBytes` (default 8 MiB, at most 1 GiB) and no further; a longer body
//! fails the refresh with an error naming that param. The list is compiled on a
//! blocking thread, never on the async workers that answer Checks and `/healthz`, within
//! a budget: a REGEX list's compiled program may take at most 16 MiB
//! (`REGEX_COMPILE_BUDGET_BYTES`) and any list at most 10 s (`COMPILE_TIME_BUDGET`) to
//! compile; a list over budget is rejected (`... exceed the compile budget ...`). A
//! rejected body served again is rejected without compiling it again. Whatever fails, the last good list keeps answering until
//! its `ttl`. Credentials in `providerUrl` (`user:password@`, the query) are sent to the
//! provider but shown nowhere: messages, logs and `Debug` output carry the URL as
//! [`crate::redact::redact_url`] renders it (`http://user:xxxxx@host/list?xxxxx`).
//!
//! Results (adapter message; the runtime prefixes `<handler>:`):
//!
//! | situation | code | message | validity |
//! |---|---|---|---|
//! | whitelist, on the list | OK | — | caching params |
//! | whitelist, not on it | PERMISSION_DENIED | `<value> is not whitelisted` | caching params |
//! | blacklist, on the list | PERMISSION_DENIED | `<value> is blacklisted` | caching params |
//! | blacklist, not on it | OK | — | caching params |
//! | IP list, value not an IP | INVALID_ARGUMENT | `<value> is not a valid IP address` | caching params |
//! | value neither string nor IP | INVALID_ARGUMENT | `<value> is not a valid string or IP address` | caching params |
//! | provider list unusable (below) | UNAVAILABLE | see [`Unavailable`] | 0, 0 |
//!
//! "Caching params" is `valid_duration = cachingInterval`, `valid_use_count =
//! cachingUseCount`, as Mixer returned on every result including OK.
//!
//! **The provider list unusable: fail closed.** Mixer returned a Go error there (the
//! whole Check RPC failed with INTERNAL, leaving the decision to the proxy's fail-open
//! setting), or, before the first fetch finished, no result at all (the check was
//! skipped: allowed). Here a value that the overrides decide is still decided by them
//! (they are on the list whatever the provider says: a whitelisted override is allowed,
//! a blacklisted one denied); any other value gets UNAVAILABLE, before the first
//! successful fetch (`... is not available yet` / `... no fetch has succeeded`) and once
//! the last good list is older than `ttl` (`list from <url> is stale: last successful
//! fetch <n>s ago, ttl <ttl>s`). UNAVAILABLE rather than a denial because the value was
//! not judged; rather than INTERNAL because it is an answer, not a server fault. It
//! carries a zero validity so that no cache keeps the failure after the next fetch
//! succeeds. The first fetch starts when the handler is built, so the "not available
//! yet" window is one HTTP round trip.

pub mod config;
mod matcher;
mod provider;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use expr_lang::Value;
use expr_lang::golib::net::{format_ip, parse_ip};
use templates::handler::{CheckReply, ListEntryHandler};
use templates::instances::listentry;
use templates::{CheckResult, Handler, Reply, Status, TemplateKind, code};
use tokio::task::JoinHandle;

use crate::{Adapter, BuildError, Env, ValidateInput, Validation};
use config::{Config, ListEntryType};
use matcher::{IpRanges, Matcher, Probe, fold_case, ip_bits};
use provider::Provider;
pub use provider::{Clock, SystemClock, Unavailable};

/// The `listchecker` adapter.
pub struct ListAdapter;

/// The adapter, as listed by [`crate::inventory`].
pub static ADAPTER: ListAdapter = ListAdapter;

impl Adapter for ListAdapter {
    type Config = Config;

    fn name(&self) -> &'static str {
        "listchecker"
    }

    fn description(&self) -> &'static str {
        "Checks whether a value is on a list (whitelist or blacklist)"
    }

    fn templates(&self) -> &'static [TemplateKind] {
        &[TemplateKind::ListEntry]
    }

    fn validate(&self, input: &ValidateInput<'_>) -> Validation<Config> {
        config::validate(input).into()
    }

    fn build(&self, config: Config, env: &Env) -> Result<Arc<dyn Handler>, BuildError> {
        let handler = ListHandler::new(config, env, Arc::new(SystemClock))?;
        if handler.provider.is_some() {
            // Outside a server (tools, tests) the caller's runtime, if any, is used.
            let runtime = env
                .resources
                .runtime
                .clone()
                .or_else(|| tokio::runtime::Handle::try_current().ok())
                .ok_or(BuildError::NoRuntime(
                    "listchecker: a handler with providerUrl needs an async runtime to fetch its \
                     list",
                ))?;
            handler.start(&runtime);
        }
        Ok(Arc::new(handler))
    }
}

/// A configured listchecker.
pub struct ListHandler {
    name: String,
    entry_type: ListEntryType,
    blacklist: bool,
    valid_duration: Duration,
    valid_use_count: i32,
    /// The overrides, compiled once: they never change for the handler's life.
    overrides: Matcher,
    provider: Option<Arc<Provider>>,
    /// The refresh task; aborted by `close()` (or when the handler is dropped).
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ListHandler {
    /// Builds the handler without starting the refresh task (see [`ListHandler::start`]).
    pub fn new(config: Config, env: &Env, clock: Arc<dyn Clock>) -> Result<Self, BuildError> {
        let overrides = if config.entry_type == ListEntryType::IpAddresses {
            // Validation already parsed them.
            Matcher::Ip(IpRanges::new(&config.override_networks))
        } else {
            Matcher::from_entries(config.entry_type, &config.overrides, |i| {
                format!("overrides[{i}]")
            })
            .map_err(|e| BuildError::InvalidConfig {
                adapter: "listchecker",
                reason: e.to_string(),
            })?
        };
        let provider = match config.provider {
            None => None,
            Some(p) => Some(Arc::new(
                Provider::new(
                    &env.handler,
                    p,
                    config.entry_type,
                    clock,
                    &env.resources.metrics,
                )
                .map_err(|reason| BuildError::Internal {
                    adapter: "listchecker",
                    reason,
                })?,
            )),
        };
        Ok(ListHandler {
            name: env.handler.clone(),
            entry_type: config.entry_type,
            blacklist: config.blacklist,
            valid_duration: config.caching_interval,
            valid_use_count: config.caching_use_count,
            overrides,
            provider,
            task: Mutex::new(None),
        })
    }

    /// Starts fetching the provider list on `runtime`: now, then every
    /// `refreshInterval`. Does nothing without a provider or when already started.
    pub fn start(&self, runtime: &tokio::runtime::Handle) {
        let Some(provider) = &self.provider else {
            return;
        };
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.is_none() {
            tracing::debug!(handler = %self.name, url = provider.url(), "Starting the listchecker refresh task.");
            *task = Some(runtime.spawn(provider.clone().run()));
        }
    }

    /// Decides one value.
    pub fn check(&self, value: Option<&Value<'_>>) -> CheckResult {
        let key = match value {
            Some(Value::IpAddress(b)) => Key::Ip(b),
            Some(v) => match v.as_str() {
                Some(s) => Key::Text(s),
                None => {
                    return self.answer(
                        code::INVALID_ARGUMENT,
                        format!("{v} is not a valid string or IP address"),
                    );
                }
            },
            // Go's `%v` of a nil value.
            None => {
                return self.answer(
                    code::INVALID_ARGUMENT,
                    "<nil> is not a valid string or IP address".to_owned(),
                );
            }
        };
        let Some(probe) = self.probe(&key) else {
            return self.answer(
                code::INVALID_ARGUMENT,
                format!("{} is not a valid IP address", key.text()),
            );
        };
        let found = self.overrides.contains(&probe)
            || match &self.provider {
                None => false,
                Some(p) => match p.list() {
                    Ok(list) => list.contains(&probe),
                    Err(why) => {
                        return CheckResult {
                            status: Status::new(code::UNAVAILABLE, why.to_string()),
                            valid_duration: Duration::ZERO,
                            valid_use_count: 0,
                        };
                    }
                },
            };
        match (self.blacklist, found) {
            (false, true) | (true, false) => self.answer(code::OK, String::new()),
            (false, false) => self.answer(
                code::PERMISSION_DENIED,
                format!("{} is not whitelisted", key.text()),
            ),
            (true, true) => self.answer(
                code::PERMISSION_DENIED,
                format!("{} is blacklisted", key.text()),
            ),
        }
    }

    /// The key in the form this list compares; `None` when an IP list gets something that
    /// is not an IP address.
    fn probe<'a>(&self, key: &Key<'a>) -> Option<Probe<'a>> {
        Some(match (self.entry_type, *key) {
            (ListEntryType::IpAddresses, Key::Ip(b)) => Probe::Ip(ip_bits(b)?),
            (ListEntryType::IpAddresses, Key::Text(s)) => {
                Probe::Ip(u128::from_be_bytes(parse_ip(s)?))
            }
            // Mixer compared IP values with string lists in their textual form.
            (ListEntryType::CaseInsensitiveStrings, Key::Ip(b)) => {
                Probe::Text(Cow::Owned(fold_case(&format_ip(b)).into_owned()))
            }
            (ListEntryType::CaseInsensitiveStrings, Key::Text(s)) => Probe::Text(fold_case(s)),
            (ListEntryType::Strings | ListEntryType::Regex, Key::Ip(b)) => {
                Probe::Text(Cow::Owned(format_ip(b)))
            }
            (ListEntryType::Strings | ListEntryType::Regex, Key::Text(s)) => {
                Probe::Text(Cow::Borrowed(s))
            }
        })
    }

    fn answer(&self, code: i32, message: String) -> CheckResult {
        CheckResult {
            status: Status::new(code, message),
            valid_duration: self.valid_duration,
            valid_use_count: self.valid_use_count,
        }
    }

    fn stop(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            task.abort();
        }
    }
}

/// The looked-up value: text, or IP bytes (4 or 16, as attributes carry them).
#[derive(Clone, Copy)]
enum Key<'a> {
    Text(&'a str),
    Ip(&'a [u8]),
}

impl Key<'_> {
    /// The value as messages show it (IP bytes in Go's textual form).
    fn text(&self) -> Cow<'_, str> {
        match self {
            Key::Text(s) => Cow::Borrowed(s),
            Key::Ip(b) => Cow::Owned(format_ip(b)),
        }
    }
}

impl ListEntryHandler for ListHandler {
    fn handle_list_entry(&self, instance: &listentry::Instance<'_>) -> CheckReply<'_> {
        Reply::Ready(Ok(self.check(instance.value.as_ref())))
    }
}

impl Handler for ListHandler {
    fn list_entry(&self) -> Option<&dyn ListEntryHandler> {
        Some(self)
    }

    fn close(&self) {
        self.stop();
    }
}

impl Drop for ListHandler {
    /// A handler dropped without `close()` must not leave its task fetching forever.
    fn drop(&mut self) {
        self.stop();
    }
}
