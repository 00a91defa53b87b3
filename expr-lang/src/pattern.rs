//! Regular expressions for `matches`, under limits that depend on who wrote the pattern.
//!
//! A constant pattern comes from configuration: it is compiled once, when the expression
//! is compiled, and a pattern that cannot compile is a compile error. A pattern computed
//! from request data (`request.path.matches("^/admin")` makes the path the pattern) is
//! compiled while a request waits, so it is held to a small length and program size, and
//! the outcome, success or failure, is kept in one small cache shared by every expression
//! (its memory is bounded whatever the configuration holds).

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock, Mutex};

use regex::{Regex, RegexBuilder};

/// Compiled-program limit for constant patterns: the regex crate's own default (10 MiB),
/// stated here so that "too large" means the same thing in every build.
pub const CONSTANT_PATTERN_SIZE_LIMIT: usize = 10 << 20;
/// Lazy-DFA cache limit for constant patterns (the regex crate's default, 2 MiB).
pub const CONSTANT_PATTERN_DFA_SIZE_LIMIT: usize = 2 << 20;

/// Longest pattern computed at run time that is compiled at all. Parsing costs a few
/// microseconds per byte before any size limit applies (Unicode classes such as `\pL`
/// are expanded while parsing), so length is bounded first.
pub const RUNTIME_PATTERN_MAX_BYTES: usize = 1024;
/// Compiled-program limit for patterns computed at run time. Compile time grows with this
/// limit (a pattern over it costs about 3 ms of CPU to reject in release builds, against
/// 180 ms under the 10 MiB default); 256 KiB fits ordinary patterns such as
/// `^/api/v[0-9]+/.*$` or `(?i)\w+@\w+\.com`, though not more than a handful of Unicode
/// `\w` in sequence.
pub const RUNTIME_PATTERN_SIZE_LIMIT: usize = 256 << 10;
/// Lazy-DFA cache limit, per thread, for patterns computed at run time.
pub const RUNTIME_PATTERN_DFA_SIZE_LIMIT: usize = 256 << 10;
/// Patterns computed at run time whose compile outcome the process keeps. A regex near
/// the size limits occupies about 0.4 MiB once used, so the cache stays under ~25 MiB.
pub const RUNTIME_PATTERN_CACHE_SLOTS: usize = 64;

static RUNTIME_PATTERNS: LazyLock<PatternCache> = LazyLock::new(PatternCache::new);

/// A pattern computed at run time, compiled (or not) under the run-time limits; cached.
/// An over-long pattern is refused before it is hashed or kept.
pub(crate) fn runtime_pattern(pattern: &str) -> Result<Arc<Regex>, Arc<str>> {
    check_runtime_length(pattern)?;
    RUNTIME_PATTERNS.get(pattern)
}

fn check_runtime_length(pattern: &str) -> Result<(), Arc<str>> {
    if pattern.len() <= RUNTIME_PATTERN_MAX_BYTES {
        return Ok(());
    }
    Err(format!(
        "error parsing regexp: pattern computed at run time is {} bytes long, longer than the limit of {RUNTIME_PATTERN_MAX_BYTES}",
        pattern.len()
    )
    .into())
}

/// Compiles a constant pattern. The error is Mixer's `error parsing regexp: ...` message.
pub(crate) fn compile_constant(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(CONSTANT_PATTERN_SIZE_LIMIT)
        .dfa_size_limit(CONSTANT_PATTERN_DFA_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            format!(
                "error parsing regexp: {}: `{pattern}`",
                reason(&e, CONSTANT_PATTERN_SIZE_LIMIT)
            )
        })
}

/// Compiles a pattern computed at run time. The message names the failure and the
/// pattern's length, never the pattern: it is request data (a path with its query
/// string, a header) and ends up in logs and in denial messages.
fn compile_runtime(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(RUNTIME_PATTERN_SIZE_LIMIT)
        .dfa_size_limit(RUNTIME_PATTERN_DFA_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            format!(
                "error parsing regexp: {} (in a {}-byte pattern computed at run time)",
                reason(&e, RUNTIME_PATTERN_SIZE_LIMIT),
                pattern.len()
            )
        })
}

/// The reason part of a regex error. Go words it `error parsing regexp: <reason>:
/// `<fragment>``; the reasons differ between RE2 implementations, the prefix does not.
fn reason(e: &regex::Error, size_limit: usize) -> String {
    match e {
        regex::Error::Syntax(s) => s
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .map_or_else(
                || s.clone(),
                |l| l.trim_start_matches("error:").trim().to_owned(),
            ),
        // Go's wording for the same condition.
        regex::Error::CompiledTooBig(_) => {
            format!("expression too large (its compiled form exceeds {size_limit} bytes)")
        }
        other => other.to_string(),
    }
}

/// One pattern's compile outcome.
struct Compiled {
    pattern: Box<str>,
    outcome: Result<Arc<Regex>, Arc<str>>,
}

/// A direct-mapped cache of compile outcomes for patterns computed at run time. Fixed
/// size (no growth whatever the traffic); each slot has its own lock, held only to compare
/// and clone, never while compiling or matching. A failed compile is cached too, so a
/// hostile pattern repeated costs one compile, not one per request.
struct PatternCache {
    hasher: RandomState,
    slots: Box<[Mutex<Option<Compiled>>]>,
}

impl PatternCache {
    fn new() -> PatternCache {
        PatternCache {
            hasher: RandomState::new(),
            slots: (0..RUNTIME_PATTERN_CACHE_SLOTS)
                .map(|_| Mutex::new(None))
                .collect(),
        }
    }

    /// The compiled pattern, or the error that compiling it gave.
    fn get(&self, pattern: &str) -> Result<Arc<Regex>, Arc<str>> {
        let slot = &self.slots[self.hasher.hash_one(pattern) as usize % self.slots.len()];
        // A poisoned slot holds a complete entry or none: the lock guards no invariant.
        if let Some(hit) = slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|c| &*c.pattern == pattern)
        {
            return hit.outcome.clone();
        }
        let outcome = compile_runtime(pattern).map(Arc::new).map_err(Arc::from);
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Compiled {
            pattern: pattern.into(),
            outcome: outcome.clone(),
        });
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_patterns_get_the_engine_default_limit() {
        assert!(compile_constant(r"^\w{100}$").is_ok());
        let e = compile_constant(r"^\w{1000}$").unwrap_err();
        assert_eq!(
            e,
            "error parsing regexp: expression too large (its compiled form exceeds 10485760 bytes): `^\\w{1000}$`"
        );
        let e = compile_constant("a[b").unwrap_err();
        assert!(
            e.starts_with("error parsing regexp: unclosed character class: `a[b`"),
            "{e}"
        );
    }

    #[test]
    fn runtime_patterns_are_small_and_never_echoed() {
        let cache = PatternCache::new();
        assert!(
            cache
                .get(r"(?i)\w+@\w+\.com")
                .unwrap()
                .is_match("Me@Example.com")
        );
        assert!(
            cache
                .get("^/api/v[0-9]+/.*$")
                .unwrap()
                .is_match("/api/v2/x")
        );
        let e = cache.get(r"secret(\w{100}){100}").unwrap_err();
        assert_eq!(
            &*e,
            "error parsing regexp: expression too large (its compiled form exceeds 262144 bytes) (in a 20-byte pattern computed at run time)"
        );
        let long = "x".repeat(RUNTIME_PATTERN_MAX_BYTES + 1);
        let e = runtime_pattern(&long).unwrap_err();
        assert!(
            e.contains("1025 bytes long, longer than the limit of 1024"),
            "{e}"
        );
        assert!(!e.contains("xx"), "{e}");
        let e = cache.get("secret[").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn outcomes_are_cached_in_a_fixed_number_of_slots() {
        let cache = PatternCache::new();
        let first = cache.get("^a+$").unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get("^a+$").unwrap()));
        let failed = cache.get(r"(\w{100}){100}").unwrap_err();
        assert!(Arc::ptr_eq(
            &failed,
            &cache.get(r"(\w{100}){100}").unwrap_err()
        ));
        for i in 0..1000 {
            assert!(
                cache
                    .get(&format!("^{i}$"))
                    .unwrap()
                    .is_match(&i.to_string())
            );
        }
        let filled = cache
            .slots
            .iter()
            .filter(|s| s.lock().unwrap().is_some())
            .count();
        assert!(filled <= RUNTIME_PATTERN_CACHE_SLOTS);
    }
}
