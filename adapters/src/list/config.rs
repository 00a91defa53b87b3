//! Params of the `listchecker` adapter (`adapter.list.config.Params`, Istio 1.4) and
//! their validation into a [`Config`] a handler can be built from.

use std::time::Duration;

use expr_lang::{Manifest, MapBag, Program};
use serde::Deserialize;
use templates::ParamError;

use crate::ValidateInput;
use crate::params::{self, opt_duration};
use crate::prometheus::pbjson::{decode_object, nullable, opt_int, pb_enum};
use crate::redact::SecretUrl;

/// Default of [`Params::refresh_interval`].
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Default of [`Params::ttl`].
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default of [`Params::caching_interval`].
pub const DEFAULT_CACHING_INTERVAL: Duration = Duration::from_secs(300);
/// Default of [`Params::caching_use_count`].
pub const DEFAULT_CACHING_USE_COUNT: i32 = 10_000;
/// Smallest accepted [`Params::refresh_interval`] when a provider is used.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Default of [`Params::max_provider_body_bytes`]: 8 MiB, room for hundreds of thousands
/// of entries.
pub const DEFAULT_MAX_PROVIDER_BODY_BYTES: u64 = 8 << 20;
/// Largest accepted [`Params::max_provider_body_bytes`]: 1 GiB. The body is held in
/// memory while it is compiled, so larger lists are better split.
pub const MAX_PROVIDER_BODY_BYTES: u64 = 1 << 30;

pb_enum! {
    /// How list entries are compared with the checked value.
    pub enum ListEntryType {
        /// Exact string equality (the default).
        Strings = "STRINGS",
        /// String equality ignoring case.
        CaseInsensitiveStrings = "CASE_INSENSITIVE_STRINGS",
        /// Entries are IP addresses or CIDR ranges; the value must be an IP address.
        IpAddresses = "IP_ADDRESSES",
        /// Entries are RE2 regular expressions, matched unanchored.
        Regex = "REGEX",
    }
}

/// The handler params, as written under a `listchecker` handler's `params:`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Where to fetch the list from (http or https). Empty: the list is `overrides`
    /// only. Credentials in it (`user:password@`, a query) are sent to the provider but
    /// never shown: messages and logs carry the redacted form (see [`SecretUrl`]).
    #[serde(
        rename = "providerUrl",
        alias = "provider_url",
        default,
        deserialize_with = "nullable"
    )]
    pub provider_url: SecretUrl,

    /// The largest provider response body accepted, in bytes. Default 8 MiB; between 1
    /// and 1 GiB. A longer body is not read past this size: the refresh fails and the
    /// last good list stays in use.
    #[serde(
        rename = "maxProviderBodyBytes",
        alias = "max_provider_body_bytes",
        default,
        deserialize_with = "opt_int"
    )]
    pub max_provider_body_bytes: Option<i64>,

    /// How often the list is fetched from `providerUrl`. Default 60s; at least 1s.
    #[serde(
        rename = "refreshInterval",
        alias = "refresh_interval",
        default,
        deserialize_with = "opt_duration"
    )]
    pub refresh_interval: Option<Duration>,

    /// How long a fetched list stays usable when it cannot be refreshed. Default 300s;
    /// at least `refreshInterval`.
    #[serde(default, deserialize_with = "opt_duration")]
    pub ttl: Option<Duration>,

    /// How long callers may cache a check result (its `validDuration`). Default 300s.
    #[serde(
        rename = "cachingInterval",
        alias = "caching_interval",
        default,
        deserialize_with = "opt_duration"
    )]
    pub caching_interval: Option<Duration>,

    /// How many times callers may use a cached check result (its `validUseCount`).
    /// Default 10000.
    #[serde(
        rename = "cachingUseCount",
        alias = "caching_use_count",
        default,
        deserialize_with = "opt_int"
    )]
    pub caching_use_count: Option<i32>,

    /// Entries that are always in the list, in addition to the fetched ones.
    #[serde(default, deserialize_with = "nullable")]
    pub overrides: Vec<String>,

    /// How entries are compared: `STRINGS` (default), `CASE_INSENSITIVE_STRINGS`,
    /// `IP_ADDRESSES` or `REGEX`.
    #[serde(rename = "entryType", alias = "entry_type", default)]
    pub entry_type: ListEntryType,

    /// `true`: a value on the list is denied (blacklist); `false` (default): a value
    /// not on the list is denied (whitelist).
    #[serde(default, deserialize_with = "nullable")]
    pub blacklist: bool,
}

/// Validated params: what a listchecker handler is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The remote list; `None` when the list is `overrides` only.
    pub provider: Option<Provider>,
    /// `validDuration` of every check result.
    pub caching_interval: Duration,
    /// `validUseCount` of every check result.
    pub caching_use_count: i32,
    /// The override entries as written.
    pub overrides: Vec<String>,
    /// For `IP_ADDRESSES`: the overrides, parsed (same order). Empty otherwise.
    pub override_networks: Vec<IpNet>,
    pub entry_type: ListEntryType,
    pub blacklist: bool,
}

/// Where and how often the list is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// An http or https URL (`Debug` shows it redacted).
    pub url: SecretUrl,
    /// The largest response body read (`maxProviderBodyBytes`).
    pub max_body_bytes: u64,
    /// Fetch period (≥ 1s).
    pub refresh_interval: Duration,
    /// The fetched list is dropped when not refreshed within this (≥ refresh_interval).
    pub ttl: Duration,
}

/// An IP network: an IPv4 or IPv6 address and a prefix length. IPv4 networks are held
/// in IPv4-mapped IPv6 form, so one representation covers both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    /// The address as written (not masked), 16 bytes.
    pub addr: [u8; 16],
    /// Prefix length within the 128-bit form (96 + n for an IPv4 `/n`).
    pub prefix_len: u8,
}

impl IpNet {
    /// Whether `ip` (4 or 16 bytes, as IP attributes arrive) is in this network: the
    /// plain definition the matcher's tests check it against.
    #[cfg(test)]
    pub fn contains(&self, ip: &[u8]) -> bool {
        let ip: [u8; 16] = match ip.len() {
            4 => {
                let mut out = [0u8; 16];
                out[10] = 0xff;
                out[11] = 0xff;
                out[12..].copy_from_slice(ip);
                out
            }
            16 => ip.try_into().expect("16 bytes"),
            _ => return false,
        };
        let a = u128::from_be_bytes(self.addr);
        let b = u128::from_be_bytes(ip);
        let mask = match self.prefix_len {
            0 => 0,
            n => u128::MAX << (128 - u32::from(n.min(128))),
        };
        a & mask == b & mask
    }
}

/// Parses a list entry of an `IP_ADDRESSES` list: an address (`10.1.2.3`, `fe80::1`) or
/// a CIDR range (`10.57.0.0/16`), with Go's address syntax. An address without a
/// prefix is a single host (`/32` for IPv4, `/128` for IPv6; Mixer appended `/32` to
/// IPv6 addresses too, which made them match a whole /32 range).
pub fn parse_ip_entry(entry: &str) -> Result<IpNet, String> {
    let bad = || format!("could not parse {entry:?}: not an IP address or CIDR range");
    let (ip, prefix) = match entry.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (entry, None),
    };
    let addr = expr_lang::golib::net::parse_ip(ip).ok_or_else(bad)?;
    let v4 = !ip.contains(':');
    let bits: u8 = if v4 { 32 } else { 128 };
    let n = match prefix {
        None => bits,
        Some(p) => {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: u8 = p.parse().map_err(|_| bad())?;
            if n > bits {
                return Err(format!(
                    "could not parse {entry:?}: prefix length {n} exceeds {bits}"
                ));
            }
            n
        }
    };
    Ok(IpNet {
        addr,
        prefix_len: if v4 { 96 + n } else { n },
    })
}

/// Checks that `pattern` is a valid RE2 regular expression, as a `REGEX` list entry
/// must be. The pattern is compiled by the expression language's own regex support
/// (the `matches` function), so list entries and expressions accept the same syntax.
pub fn check_regex(pattern: &str) -> Result<(), String> {
    let mut literal = String::with_capacity(pattern.len() + 2);
    literal.push('"');
    for c in pattern.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '"' => literal.push_str("\\\""),
            '\n' => literal.push_str("\\n"),
            c => literal.push(c),
        }
    }
    literal.push('"');
    let program = Program::compile(&format!("{literal}.matches(\"\")"), &Manifest::new())
        .map_err(|e| format!("could not check regular expression {pattern:?}: {e}"))?;
    program
        .evaluate_bool(&MapBag::new())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks that `url` is an http(s) URL with a host. Messages show the URL redacted: the
/// URL parser's own messages quote its whole input, so a URL that does not parse is
/// explained by parsing its redacted form.
pub fn check_provider_url(url: &SecretUrl) -> Result<(), String> {
    let shown = url.shown();
    if expr_lang::golib::url::parse(url.expose()).is_err() {
        return Err(match expr_lang::golib::url::parse(shown) {
            Err(e) => format!("invalid URL: {e}"),
            // Only the hidden parts are malformed; the parser's message would show them.
            Ok(_) => format!(
                "invalid URL {shown:?}: its user information or fragment (not shown) is malformed"
            ),
        });
    }
    crate::prometheus::pbjson::check_http_url(shown)
}

/// `maxProviderBodyBytes`, if set, within 1 byte ..= [`MAX_PROVIDER_BODY_BYTES`].
fn check_max_body_bytes(value: Option<i64>) -> Result<Option<u64>, String> {
    match value.map(u64::try_from) {
        None => Ok(None),
        Some(Ok(n @ 1..=MAX_PROVIDER_BODY_BYTES)) => Ok(Some(n)),
        Some(_) => Err(format!(
            "the provider body limit must be between 1 and {MAX_PROVIDER_BODY_BYTES} bytes, it \
             is {}",
            value.unwrap_or_default()
        )),
    }
}

/// Validates params into a [`Config`], reporting every problem with its field path.
pub fn validate(input: &ValidateInput<'_>) -> Result<Config, Vec<ParamError>> {
    let p: Params = decode_object(input.params)?;
    let mut errors = Vec::new();

    let max_body_bytes = check_max_body_bytes(p.max_provider_body_bytes)
        .map_err(|e| errors.push(params::error("params.maxProviderBodyBytes", e)))
        .ok()
        .flatten();
    let refresh_interval = p.refresh_interval.unwrap_or(DEFAULT_REFRESH_INTERVAL);
    let ttl = p.ttl.unwrap_or(DEFAULT_TTL);
    let provider = if p.provider_url.is_empty() {
        None
    } else {
        if let Err(e) = check_provider_url(&p.provider_url) {
            errors.push(params::error("params.providerUrl", e));
        }
        if refresh_interval < MIN_REFRESH_INTERVAL {
            errors.push(params::error(
                "params.refreshInterval",
                format!("refresh interval must be at least 1 second, it is {refresh_interval:?}"),
            ));
        }
        if ttl < refresh_interval {
            errors.push(params::error(
                "params.ttl",
                format!(
                    "ttl must be at least refreshInterval; ttl is {ttl:?} and refreshInterval is \
                     {refresh_interval:?}"
                ),
            ));
        }
        Some(Provider {
            url: p.provider_url,
            max_body_bytes: max_body_bytes.unwrap_or(DEFAULT_MAX_PROVIDER_BODY_BYTES),
            refresh_interval,
            ttl,
        })
    };

    let caching_use_count = p.caching_use_count.unwrap_or(DEFAULT_CACHING_USE_COUNT);
    if caching_use_count < 0 {
        errors.push(params::error(
            "params.cachingUseCount",
            format!("caching use count must be >= 0, it is {caching_use_count}"),
        ));
    }

    let mut override_networks = Vec::new();
    for (i, entry) in p.overrides.iter().enumerate() {
        let field = format!("params.overrides[{i}]");
        match p.entry_type {
            ListEntryType::IpAddresses => match parse_ip_entry(entry) {
                Ok(net) => override_networks.push(net),
                Err(e) => errors.push(params::error(field, e)),
            },
            ListEntryType::Regex => {
                if let Err(e) = check_regex(entry) {
                    errors.push(params::error(field, e));
                }
            }
            ListEntryType::Strings | ListEntryType::CaseInsensitiveStrings => {}
        }
    }

    if errors.is_empty() {
        Ok(Config {
            provider,
            caching_interval: p.caching_interval.unwrap_or(DEFAULT_CACHING_INTERVAL),
            caching_use_count,
            overrides: p.overrides,
            override_networks,
            entry_type: p.entry_type,
            blacklist: p.blacklist,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value as Json, json};

    fn run(params: Json) -> Result<Config, Vec<ParamError>> {
        validate(&ValidateInput {
            handler: "whitelist.default",
            params: &params,
            instances: &[],
        })
    }

    fn ok(params: Json) -> Config {
        run(params).unwrap_or_else(|e| panic!("{e:#?}"))
    }

    fn has(errors: &[ParamError], field: &str, text: &str) {
        assert!(
            errors
                .iter()
                .any(|e| e.field == field && e.message.contains(text)),
            "no error at {field} containing {text:?} in {errors:#?}"
        );
    }

    /// Every distinct listchecker handler's params in the real Istio configs.
    fn real_configs() -> Vec<(&'static str, Json)> {
        vec![
            // from-go-tests list_integration_test.go h1BlacklistOverrideSrc1Src2
            (
                "blacklist src1 src2",
                json!({"overrides": ["src1", "src2"], "blacklist": true}),
            ),
            // list_integration_test.go h1OverrideIP; bookinfo mixer-rule-deny-ip(-crd).yaml
            (
                "whitelist ip",
                json!({"overrides": ["10.57.0.0/16"], "blacklist": false, "entryType": "IP_ADDRESSES"}),
            ),
            // list_integration_test.go h1OverrideSrc1Src2
            (
                "whitelist src1 src2",
                json!({"overrides": ["src1", "src2"], "blacklist": false}),
            ),
            // testdata listcheck.yaml; bookinfo mixer-rule-deny-whitelist(-crd).yaml
            (
                "whitelist v1 v2",
                json!({"overrides": ["v1", "v2"], "blacklist": false}),
            ),
        ]
    }

    #[test]
    fn real_istio_configs_validate() {
        for (source, params) in real_configs() {
            run(params).unwrap_or_else(|e| panic!("{source}: {e:#?}"));
        }
        let c = ok(real_configs()[1].1.clone());
        assert_eq!(c.entry_type, ListEntryType::IpAddresses);
        assert!(c.override_networks[0].contains(&[10, 57, 3, 4]));
        assert!(!c.override_networks[0].contains(&[10, 58, 0, 1]));
        let c = ok(real_configs()[0].1.clone());
        assert!(c.blacklist);
        assert_eq!(c.provider, None);
    }

    #[test]
    fn defaults() {
        let c = ok(Json::Null);
        assert_eq!(c.caching_interval, Duration::from_secs(300));
        assert_eq!(c.caching_use_count, 10_000);
        assert_eq!(c.entry_type, ListEntryType::Strings);
        assert!(!c.blacklist && c.overrides.is_empty() && c.provider.is_none());
        let c = ok(json!({"providerUrl": "http://lists.example.com/versions.txt"}));
        assert_eq!(
            c.provider,
            Some(Provider {
                url: "http://lists.example.com/versions.txt".into(),
                max_body_bytes: 8 << 20,
                refresh_interval: Duration::from_secs(60),
                ttl: Duration::from_secs(300),
            })
        );
    }

    #[test]
    fn camel_and_snake_case() {
        let camel = ok(json!({
            "providerUrl": "https://example.com/list", "refreshInterval": "10s", "ttl": "30s",
            "cachingInterval": "1m", "cachingUseCount": 5, "overrides": ["a", "B"],
            "entryType": "CASE_INSENSITIVE_STRINGS", "blacklist": true
        }));
        let snake = ok(json!({
            "provider_url": "https://example.com/list", "refresh_interval": "10s", "ttl": "30s",
            "caching_interval": "60s", "caching_use_count": "5", "overrides": ["a", "B"],
            "entry_type": 1, "blacklist": true
        }));
        assert_eq!(camel, snake);
        assert_eq!(camel.caching_interval, Duration::from_secs(60));
        assert_eq!(camel.provider.unwrap().ttl, Duration::from_secs(30));
    }

    #[test]
    fn provider_rules() {
        let e = run(
            json!({"providerUrl": "lists.example.com", "refreshInterval": "500ms", "ttl": "100ms"}),
        )
        .unwrap_err();
        has(&e, "params.providerUrl", "scheme");
        has(&e, "params.refreshInterval", "at least 1 second");
        has(&e, "params.ttl", "ttl must be at least refreshInterval");
        assert_eq!(e.len(), 3, "{e:#?}");
        let e = run(json!({"providerUrl": "ftp://x/list"})).unwrap_err();
        has(&e, "params.providerUrl", "\"ftp\"");
        let e = run(json!({"providerUrl": "http://h:x/list"})).unwrap_err();
        has(&e, "params.providerUrl", "invalid URL");
        let e = run(json!({"providerUrl": "http://h/list", "ttl": "30s"})).unwrap_err();
        has(&e, "params.ttl", "ttl is 30s and refreshInterval is 60s");
        // ttl equal to the refresh interval is accepted, as in Mixer.
        assert!(run(json!({"providerUrl": "http://h/list", "ttl": "60s"})).is_ok());
        // Without a provider the intervals are not used, hence not checked.
        assert!(run(json!({"refreshInterval": "1ms", "ttl": "0s"})).is_ok());
        let e = run(json!({"cachingUseCount": -1, "cachingInterval": "-1s"})).unwrap_err();
        has(&e, "params.cachingInterval", "negative");
    }

    #[test]
    fn max_provider_body_bytes() {
        let limit = |params: Json| ok(params).provider.unwrap().max_body_bytes;
        assert_eq!(limit(json!({"providerUrl": "http://h/l"})), 8 << 20);
        assert_eq!(
            limit(json!({"providerUrl": "http://h/l", "maxProviderBodyBytes": 1})),
            1
        );
        assert_eq!(
            limit(json!({"providerUrl": "http://h/l", "max_provider_body_bytes": "1073741824"})),
            1 << 30
        );
        for bad in [json!(0), json!(-1), json!(1_073_741_825_i64)] {
            let e =
                run(json!({"providerUrl": "http://h/l", "maxProviderBodyBytes": bad})).unwrap_err();
            has(
                &e,
                "params.maxProviderBodyBytes",
                &format!("between 1 and 1073741824 bytes, it is {bad}"),
            );
        }
        let e = run(json!({"maxProviderBodyBytes": "lots"})).unwrap_err();
        has(&e, "params.maxProviderBodyBytes", "lots");
    }

    #[test]
    fn provider_url_credentials_are_not_shown() {
        let secret = "http://user:password@lists.example.com/l?token=secret";
        let c = ok(json!({ "providerUrl": secret }));
        let provider = c.provider.clone().unwrap();
        assert_eq!(provider.url.expose(), secret);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("password") && !debug.contains("secret"),
            "{debug}"
        );
        for bad in [
            "ftp://user:password@h/l?token=secret",
            "http://user:password@h:notaport/l?token=secret",
            "http://user:password@/l?token=secret",
            "http://user:pass%zzword@h/l?token=secret",
            "user:password@h/l?token=secret",
        ] {
            let e = run(json!({ "providerUrl": bad })).unwrap_err();
            has(&e, "params.providerUrl", "invalid URL");
            let text = format!("{e:?}");
            assert!(
                !text.contains("password") && !text.contains("secret"),
                "{bad}: {text}"
            );
        }
        let e = run(json!({"providerUrl": "http://user:pass%zzword@h/l"})).unwrap_err();
        has(
            &e,
            "params.providerUrl",
            "user information or fragment (not shown)",
        );
        let e = run(json!({"providerUrl": "http://user:password@h:x/l"})).unwrap_err();
        has(&e, "params.providerUrl", "invalid port \":x\" after host");
    }

    #[test]
    fn ip_overrides() {
        let e = run(json!({"entryType": "IP_ADDRESSES", "overrides": [
            "10.0.0.1", "10.0.0.0/8", "::1", "fe80::/10", "10.0.0.0/33", "300.1.1.1", "example.com", "1.2.3.4/", "::/129"
        ]}))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "params.overrides[4]",
                "params.overrides[5]",
                "params.overrides[6]",
                "params.overrides[7]",
                "params.overrides[8]"
            ],
            "{e:#?}"
        );
        has(&e, "params.overrides[4]", "prefix length 33 exceeds 32");
        has(&e, "params.overrides[6]", "not an IP address or CIDR range");
        let host = parse_ip_entry("10.1.2.3").unwrap();
        assert!(host.contains(&[10, 1, 2, 3]) && !host.contains(&[10, 1, 2, 4]));
        let v6 = parse_ip_entry("fe80::/10").unwrap();
        let mut ip = [0u8; 16];
        ip[0] = 0xfe;
        ip[1] = 0x81;
        assert!(v6.contains(&ip));
        assert!(!v6.contains(&[10, 1, 2, 3]));
        let one = parse_ip_entry("::1").unwrap();
        assert_eq!(one.prefix_len, 128);
        assert!(parse_ip_entry("0.0.0.0/0").unwrap().contains(&[8, 8, 8, 8]));
        // Strings lists take anything.
        assert!(run(json!({"overrides": ["300.1.1.1", "(("]})).is_ok());
    }

    #[test]
    fn regex_overrides() {
        let c = ok(json!({"entryType": "REGEX", "overrides": ["v1", "^ab+c$", "a\"b\\d", "`x`"]}));
        assert_eq!(c.overrides.len(), 4);
        let e = run(json!({"entryType": "REGEX", "overrides": ["ok", "(unclosed", "[z-a]"]}))
            .unwrap_err();
        has(&e, "params.overrides[1]", "error parsing regexp");
        has(&e, "params.overrides[2]", "error parsing regexp");
        assert_eq!(e.len(), 2);
        assert!(check_regex("a\nb").is_ok());
    }

    #[test]
    fn bad_values_and_unknown_fields() {
        let e = run(json!({"entryType": "IPS"})).unwrap_err();
        has(&e, "params.entryType", "unknown value \"IPS\"");
        let e = run(json!({"overrides": "v1"})).unwrap_err();
        has(&e, "params.overrides", "invalid type");
        let e = run(json!({"whitelist": true})).unwrap_err();
        has(&e, "params.whitelist", "unknown field `whitelist`");
        assert!(
            ok(json!({"overrides": null, "blacklist": null}))
                .overrides
                .is_empty()
        );
    }
}
