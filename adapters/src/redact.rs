//! Showing a URL without its secrets. A URL (a list provider, an exporter endpoint) may carry credentials
//! (`http://user:password@host/list?token=...`); messages, logs and `Debug` output show
//! it through [`redact_url`] only, and the raw text is read solely to make the request.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer};

/// What replaces a hidden part (Go's `url.URL.Redacted` uses the same mark).
pub const HIDDEN: &str = "xxxxx";

/// `url` with its secrets replaced by [`HIDDEN`]: the password of the user information
/// (or the whole user information when it has no `:`, since a lone user part is often a
/// token), the query and the fragment. Works on the text, so a URL that does not parse
/// is redacted too. Borrows when there is nothing to hide.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let (before_fragment, fragment) = split_off(url, '#');
    let (before_query, query) = split_off(before_fragment, '?');
    let authority_start = match before_query.find("://") {
        Some(i) => i + 3,
        None if before_query.starts_with("//") => 2,
        None => 0,
    };
    // The last `@` before the query ends the user information, even past a `/`: a password
    // may hold an unescaped `/` (base64), and hiding too much beats showing a secret.
    let userinfo_end = before_query[authority_start..]
        .rfind('@')
        .map(|i| authority_start + i);
    let hides_something = userinfo_end.is_some()
        || query.is_some_and(|q| !q.is_empty())
        || fragment.is_some_and(|f| !f.is_empty());
    if !hides_something {
        return Cow::Borrowed(url);
    }
    let mut shown = String::with_capacity(url.len());
    match userinfo_end {
        Some(at) => {
            shown.push_str(&before_query[..authority_start]);
            if let Some((user, _password)) = before_query[authority_start..at].split_once(':') {
                shown.push_str(user);
                shown.push(':');
            }
            shown.push_str(HIDDEN);
            shown.push_str(&before_query[at..]);
        }
        None => shown.push_str(before_query),
    }
    for (mark, part) in [('?', query), ('#', fragment)] {
        if let Some(part) = part {
            shown.push(mark);
            if !part.is_empty() {
                shown.push_str(HIDDEN);
            }
        }
    }
    Cow::Owned(shown)
}

/// `(before, Some(after))` at the first `mark`, else `(text, None)`.
fn split_off(text: &str, mark: char) -> (&str, Option<&str>) {
    match text.split_once(mark) {
        Some((before, after)) => (before, Some(after)),
        None => (text, None),
    }
}

/// A URL that may hold credentials. `Display` and `Debug` show it redacted; the raw text
/// is only available through [`SecretUrl::expose`], for making the request.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretUrl {
    raw: String,
    /// [`redact_url`] of `raw`, computed once.
    shown: String,
}

impl SecretUrl {
    pub fn new(raw: impl Into<String>) -> SecretUrl {
        let raw = raw.into();
        let shown = redact_url(&raw).into_owned();
        SecretUrl { raw, shown }
    }

    /// The URL as configured, credentials included. Never display it.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The URL safe to show.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// `text` with every occurrence of the raw URL replaced by its redacted form, for
    /// messages from libraries that may quote the URL they were given.
    pub fn scrub(&self, text: &str) -> String {
        if self.raw.is_empty() || self.raw == self.shown {
            return text.to_owned();
        }
        text.replace(&self.raw, &self.shown)
    }
}

impl From<&str> for SecretUrl {
    fn from(raw: &str) -> SecretUrl {
        SecretUrl::new(raw)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.shown)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretUrl, D::Error> {
        String::deserialize(d).map(SecretUrl::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden() {
        for (raw, shown) in [
            (
                "http://user:password@host:8080/list?token=secret#frag",
                "http://user:xxxxx@host:8080/list?xxxxx#xxxxx",
            ),
            ("https://ghp_TOKEN@host/list", "https://xxxxx@host/list"),
            ("http://user:@host/list", "http://user:xxxxx@host/list"),
            // The last `@` of the authority ends the user information, as in Go.
            ("http://u:p@ss@host/x", "http://u:xxxxx@host/x"),
            // A password with an unescaped `/` is hidden whole; so, to be safe, is
            // everything before a `@` in the path.
            (
                "http://user:Sup3r/Secret@lists.example.com/l",
                "http://user:xxxxx@lists.example.com/l",
            ),
            ("http://host/a@b/list", "http://xxxxx@b/list"),
            ("http://host/list?", "http://host/list?"),
            ("//user:pw@host/list", "//user:xxxxx@host/list"),
            ("user:pw@host", "user:xxxxx@host"),
            // Malformed URLs are redacted too.
            (
                "http://user:password@h:notaport/list?token=secret",
                "http://user:xxxxx@h:notaport/list?xxxxx",
            ),
            ("http://host/list", "http://host/list"),
            ("", ""),
        ] {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
        assert!(matches!(redact_url("http://h/l"), Cow::Borrowed(_)));
    }

    #[test]
    fn secret_url_shows_only_the_redacted_form() {
        let url = SecretUrl::new("http://user:password@host/list?token=secret");
        assert_eq!(url.expose(), "http://user:password@host/list?token=secret");
        assert_eq!(url.to_string(), "http://user:xxxxx@host/list?xxxxx");
        let debug = format!("{url:?} {:#?}", Some(&url));
        assert!(
            !debug.contains("password") && !debug.contains("secret"),
            "{debug}"
        );
        assert_eq!(
            url.scrub("GET http://user:password@host/list?token=secret failed"),
            "GET http://user:xxxxx@host/list?xxxxx failed"
        );
        let parsed: SecretUrl =
            serde_json::from_value(serde_json::json!("http://u:p@h/?q")).unwrap();
        assert_eq!(parsed.shown(), "http://u:xxxxx@h/?xxxxx");
    }
}
