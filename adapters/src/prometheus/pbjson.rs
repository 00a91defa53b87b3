//! Protobuf-JSON decoding helpers shared by the params types of the adapters in this
//! crate (prometheus, stdio, listchecker, memquota, redisquota, kubernetesenv,
//! otlp/zipkin). They complement [`crate::params`] (field paths, Go durations, enum
//! names) with what protobuf-JSON also allows and what collecting *every* error needs:
//!
//! * `null` for any field means "not set" ([`nullable`], [`int`], [`float`], enums made
//!   with `pb_enum!`);
//! * 64/32-bit integers and doubles may be written as JSON strings (`"5000"`,
//!   `"Infinity"`), as protobuf-JSON permits;
//! * repeated fields and maps are decoded element by element ([`Items`], [`Entries`]),
//!   so that a bad element does not hide the problems of the others.
//!
//! (This module lives here only because `crate::params` is edited elsewhere; it belongs
//! next to it.)

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde_json::Value as Json;
use templates::ParamError;

use crate::params;

/// An element that failed to decode: its path relative to the element (`"."` for the
/// element itself), the message, and the element as written.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ElementError {
    path: String,
    message: String,
    raw: Json,
}

fn decode_element<T: DeserializeOwned>(v: Json) -> Result<T, ElementError> {
    serde_path_to_error::deserialize(&v).map_err(|e| ElementError {
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
        raw: v.clone(),
    })
}

/// Joins `field` (e.g. `params.metrics[2]`) and a path relative to it (`kind`, `.`).
fn join(field: &str, relative: &str) -> String {
    match relative {
        "." | "" => field.to_owned(),
        r if r.starts_with('[') => format!("{field}{r}"),
        r => format!("{field}.{r}"),
    }
}

/// A repeated field decoded element by element: every element that fails to decode is
/// kept as an error (with its path) instead of aborting the whole decode.
/// `null` or an absent field is an empty list.
#[derive(Clone, Debug)]
pub struct Items<T> {
    items: Vec<Result<T, ElementError>>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Items { items: Vec::new() }
    }
}

impl<T> From<Vec<T>> for Items<T> {
    fn from(v: Vec<T>) -> Self {
        Items {
            items: v.into_iter().map(Ok).collect(),
        }
    }
}

impl<T> Items<T> {
    /// Whether no element was written, decoded or not.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The elements that failed to decode, as written (e.g. to find out which names
    /// they meant to configure, so that no follow-on error is reported about them).
    pub fn failed(&self) -> impl Iterator<Item = &Json> {
        self.items
            .iter()
            .filter_map(|i| i.as_ref().err().map(|e| &e.raw))
    }

    /// The elements that decoded, each with its index in the list. Every element that
    /// did not decode is appended to `errors` under `field` (`params.metrics` gives
    /// `params.metrics[2].kind`).
    pub fn into_decoded(self, field: &str, errors: &mut Vec<ParamError>) -> Vec<(usize, T)> {
        let mut out = Vec::with_capacity(self.items.len());
        for (i, item) in self.items.into_iter().enumerate() {
            match item {
                Ok(v) => out.push((i, v)),
                Err(e) => errors.push(params::error(
                    join(&format!("{field}[{i}]"), &e.path),
                    e.message,
                )),
            }
        }
        out
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Items<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Option::<Vec<Json>>::deserialize(d)?.unwrap_or_default();
        Ok(Items {
            items: raw.into_iter().map(decode_element).collect(),
        })
    }
}

/// A map field decoded entry by entry (see [`Items`]). `null` or absent is empty.
#[derive(Clone, Debug)]
pub struct Entries<V> {
    entries: Vec<(String, Result<V, ElementError>)>,
}

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries {
            entries: Vec::new(),
        }
    }
}

impl<V> Entries<V> {
    /// The entries that decoded; every other one is appended to `errors` under `field`
    /// (`params.severityLevels` gives `params.severityLevels.warning`).
    pub fn into_decoded(self, field: &str, errors: &mut Vec<ParamError>) -> BTreeMap<String, V> {
        let mut out = BTreeMap::new();
        for (k, v) in self.entries {
            match v {
                Ok(v) => {
                    out.insert(k, v);
                }
                Err(e) => errors.push(params::error(
                    join(&format!("{field}.{k}"), &e.path),
                    e.message,
                )),
            }
        }
        out
    }
}

impl<'de, V: DeserializeOwned> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Option::<serde_json::Map<String, Json>>::deserialize(d)?.unwrap_or_default();
        Ok(Entries {
            entries: raw
                .into_iter()
                .map(|(k, v)| (k, decode_element(v)))
                .collect(),
        })
    }
}

/// [`params::decode`], but only from a mapping (or `null`, meaning no params): serde
/// would otherwise also build a struct from a JSON array.
pub fn decode_object<T: DeserializeOwned>(params: &Json) -> Result<T, Vec<ParamError>> {
    match params {
        Json::Null | Json::Object(_) => params::decode(params),
        other => Err(vec![params::error(
            "params",
            format!("expected a mapping of params, found {other}"),
        )]),
    }
}

/// serde adapter: `null` decodes as the type's default (protobuf-JSON "not set").
pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An integer as protobuf-JSON writes it: a JSON integer or a decimal string.
/// `Ok(None)` for `null`.
pub fn int_value<T: TryFrom<i64>>(v: &Json) -> Result<Option<T>, String> {
    let n = match v {
        Json::Null => return Ok(None),
        Json::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("expected an integer, found {n}"))?,
        Json::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("expected an integer, found {s:?}"))?,
        other => return Err(format!("expected an integer, found {other}")),
    };
    T::try_from(n)
        .map(Some)
        .map_err(|_| format!("{n} is out of range"))
}

/// A double as protobuf-JSON writes it: a JSON number, a numeric string, or one of
/// `"NaN"`, `"Infinity"`, `"-Infinity"`. `Ok(None)` for `null`.
pub fn float_value(v: &Json) -> Result<Option<f64>, String> {
    match v {
        Json::Null => Ok(None),
        Json::Number(n) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("expected a number, found {n}")),
        Json::String(s) => match s.trim() {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            t => t
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(|| format!("expected a number, found {s:?}")),
        },
        other => Err(format!("expected a number, found {other}")),
    }
}

/// serde adapter for integer fields (`null` ⇒ 0).
pub fn int<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + Default,
{
    let v = Json::deserialize(d)?;
    int_value(&v)
        .map(Option::unwrap_or_default)
        .map_err(de::Error::custom)
}

/// serde adapter for optional integer fields (`null` ⇒ `None`).
pub fn opt_int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let v = Json::deserialize(d)?;
    int_value(&v).map_err(de::Error::custom)
}

/// serde adapter for double fields (`null` ⇒ 0).
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Json::deserialize(d)?;
    float_value(&v)
        .map(Option::unwrap_or_default)
        .map_err(de::Error::custom)
}

/// serde adapter for optional double fields (`null` ⇒ `None`).
pub fn opt_float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Json::deserialize(d)?;
    float_value(&v).map_err(de::Error::custom)
}

/// serde adapter for repeated double fields (`null` ⇒ empty); the failing element is
/// named in the message.
pub fn floats<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let raw = Option::<Vec<Json>>::deserialize(d)?.unwrap_or_default();
    raw.iter()
        .enumerate()
        .map(|(i, v)| match float_value(v) {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(de::Error::custom(format!(
                "element {i}: expected a number, found null"
            ))),
            Err(e) => Err(de::Error::custom(format!("element {i}: {e}"))),
        })
        .collect()
}

/// Decodes an enum value written by name (case-insensitive) or number; `null` is the
/// first (zero) value.
pub fn enum_value(v: &Json, names: &[&str]) -> Result<usize, String> {
    if v.is_null() {
        return Ok(0);
    }
    params::enum_by_name(v, names)
}

/// Defines a protobuf enum: variants in numeric order (0, 1, ...), each with its proto
/// name. The type decodes from its name (case-insensitive) or number, `null` meaning
/// the zero value, and displays as its name.
macro_rules! pb_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The proto names, indexed by numeric value.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The proto name of this value.
            pub fn name(self) -> &'static str {
                Self::NAMES[self as usize]
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::ALL[0]
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = <::serde_json::Value as ::serde::Deserialize>::deserialize(d)?;
                $crate::prometheus::pbjson::enum_value(&v, Self::NAMES)
                    .map(|i| Self::ALL[i])
                    .map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
    };
}
pub(crate) use pb_enum;

/// Parses an `http://` or `https://` URL with a host, the way Go's `url.Parse` reads it.
pub fn check_http_url(s: &str) -> Result<(), String> {
    // Messages show the URL without its credentials, query or fragment.
    let shown = crate::redact::redact_url(s);
    let u = expr_lang::golib::url::parse(s)
        .map_err(|e| format!("invalid URL: {}", e.to_string().replace(s, &shown)))?;
    if u.scheme != "http" && u.scheme != "https" {
        return Err(if u.scheme.is_empty() {
            format!("invalid URL {shown:?}: a scheme (http:// or https://) is required")
        } else {
            format!(
                "invalid URL {shown:?}: scheme {:?} is not supported; use http or https",
                u.scheme
            )
        });
    }
    if u.hostname().is_empty() {
        return Err(format!("invalid URL {shown:?}: the host is empty"));
    }
    Ok(())
}

/// Renders names as `[a, b]` for messages.
pub fn list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pb_enum! {
        /// Test enum.
        enum Color { Unspecified = "UNSPECIFIED", Red = "RED", DarkBlue = "DARK_BLUE" }
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        items: Items<Inner>,
        #[serde(default)]
        map: Entries<Color>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        color: Color,
        #[serde(default, deserialize_with = "int")]
        count: i32,
        #[serde(default, deserialize_with = "nullable")]
        name: String,
        #[serde(default, deserialize_with = "floats")]
        bounds: Vec<f64>,
    }

    #[test]
    fn every_bad_element_is_reported() {
        let p: Outer = params::decode(&json!({
            "items": [
                {"color": "red", "count": "7", "name": null},
                {"color": "BLUE"},
                {"count": 1.5},
                {"bogus": 1},
                "x",
                {"bounds": [1, "Infinity", "x"]},
            ],
            "map": {"a": 1, "b": "nope", "c": null},
        }))
        .unwrap();
        let mut errors = Vec::new();
        assert_eq!(p.items.failed().count(), 5);
        assert_eq!(p.items.failed().next(), Some(&json!({"color": "BLUE"})));
        let ok = p.items.into_decoded("params.items", &mut errors);
        let map = p.map.into_decoded("params.map", &mut errors);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].0, 0);
        assert_eq!(ok[0].1.color, Color::Red);
        assert_eq!(ok[0].1.count, 7);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "params.items[1].color",
                "params.items[2].count",
                "params.items[3].bogus",
                "params.items[4]",
                "params.items[5].bounds",
                "params.map.b",
            ],
            "{errors:#?}"
        );
        assert!(
            errors[0].message.contains("DARK_BLUE"),
            "{}",
            errors[0].message
        );
        assert!(errors[2].message.contains("unknown field `bogus`"));
        assert!(
            errors[4].message.contains("element 2"),
            "{}",
            errors[4].message
        );
        assert_eq!(map.get("a"), Some(&Color::Red));
        assert_eq!(map.get("c"), Some(&Color::Unspecified));
        assert_eq!(Color::DarkBlue.to_string(), "DARK_BLUE");
    }

    #[test]
    fn numbers() {
        assert_eq!(int_value::<i32>(&json!("12")), Ok(Some(12)));
        assert!(int_value::<i32>(&json!(5_000_000_000_i64)).is_err());
        assert_eq!(
            float_value(&json!("-Infinity")),
            Ok(Some(f64::NEG_INFINITY))
        );
        assert_eq!(float_value(&json!(2)), Ok(Some(2.0)));
        assert!(float_value(&json!(true)).is_err());
    }

    #[test]
    fn urls() {
        assert!(check_http_url("http://zipkin.istio-system:9411/api/v2/spans").is_ok());
        assert!(check_http_url("https://example.com").is_ok());
        assert!(
            check_http_url("localhost:4317")
                .unwrap_err()
                .contains("scheme")
        );
        assert!(check_http_url("ftp://x").unwrap_err().contains("\"ftp\""));
        assert!(check_http_url("http://").unwrap_err().contains("host"));
        assert!(check_http_url("http://a b").is_err());
    }
}
