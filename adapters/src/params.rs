//! Helpers for decoding adapter params the way Istio wrote them: protobuf-JSON field names
//! (lowerCamel, with the proto snake_case names accepted as aliases), Go duration strings,
//! enums by name or number.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde_json::Value as Json;
use templates::ParamError;

/// Decodes params into `T`, reporting the failing field's path. Absent params (`null`)
/// decode as an empty mapping so that defaults apply.
pub fn decode<T: DeserializeOwned>(params: &Json) -> Result<T, Vec<ParamError>> {
    let empty = Json::Object(Default::default());
    let params = if params.is_null() { &empty } else { params };
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        vec![ParamError {
            field: if path == "." {
                "params".to_owned()
            } else {
                format!("params.{path}")
            },
            message: e.into_inner().to_string(),
            expression: None,
            column: None,
        }]
    })
}

/// One validation problem at `field`.
pub fn error(field: impl Into<String>, message: impl Into<String>) -> ParamError {
    ParamError {
        field: field.into(),
        message: message.into(),
        expression: None,
        column: None,
    }
}

/// Parses a duration as Istio's params wrote it: a Go duration string (`"5s"`,
/// `"1h30m"`, `"500ms"`), or protobuf-JSON seconds (`"1.5s"`, which is also a Go
/// duration), or a `{seconds, nanos}` mapping. Negative durations are rejected.
pub fn parse_duration(v: &Json) -> Result<Duration, String> {
    match v {
        Json::String(s) => {
            let nanos = expr_lang::golib::duration::parse_duration(s.trim()).ok_or_else(|| {
                format!("invalid duration {s:?}: expected e.g. \"5s\", \"100ms\", \"1h30m\"")
            })?;
            u64::try_from(nanos)
                .map(Duration::from_nanos)
                .map_err(|_| format!("duration {s:?} must not be negative"))
        }
        Json::Object(m) => {
            let secs = m.get("seconds").and_then(Json::as_u64).unwrap_or(0);
            let nanos = m.get("nanos").and_then(Json::as_u64).unwrap_or(0);
            u32::try_from(nanos)
                .ok()
                .filter(|n| *n < 1_000_000_000)
                .map(|n| Duration::new(secs, n))
                .ok_or_else(|| format!("invalid duration {v}"))
        }
        other => Err(format!(
            "invalid duration {other}: expected a string such as \"5s\""
        )),
    }
}

/// serde adapter for `Option<Duration>` fields.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = Json::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    parse_duration(&v).map(Some).map_err(de::Error::custom)
}

/// serde adapter for an enum written by name (case-insensitive) or number, with the
/// allowed names given by `names` (index = numeric value).
pub fn enum_by_name(v: &Json, names: &[&str]) -> Result<usize, String> {
    match v {
        Json::Number(n) => n
            .as_u64()
            .map(|n| n as usize)
            .filter(|n| *n < names.len())
            .ok_or_else(|| format!("unknown value {n}; expected one of {}", names.join(", "))),
        Json::String(s) => names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown value {s:?}; expected one of {}", names.join(", "))),
        other => Err(format!(
            "expected one of {}, found {other}",
            names.join(", ")
        )),
    }
}

/// `value` as compact JSON text with the keys of every object sorted, at every depth:
/// params that differ only in the order of their keys give the same text. Handler
/// signatures are computed from it, so that reordering the keys of a handler's params
/// does not rebuild the handler (and reset its state, e.g. memquota's counters).
pub fn canonical_json(value: &Json) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Json, out: &mut String) {
    match value {
        Json::Object(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // A string's JSON text: quoted and escaped.
                out.push_str(&Json::from(k.as_str()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(
            rename = "validDuration",
            alias = "valid_duration",
            default,
            deserialize_with = "opt_duration"
        )]
        valid_duration: Option<Duration>,
        #[serde(default)]
        #[allow(dead_code)]
        inner: Option<Inner>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        count: i32,
    }

    #[test]
    fn durations_and_paths() {
        let p: P = decode(&json!({"valid_duration": "1m30s"})).unwrap();
        assert_eq!(p.valid_duration, Some(Duration::from_secs(90)));
        let p: P = decode(&json!({"validDuration": "1.5s"})).unwrap();
        assert_eq!(p.valid_duration, Some(Duration::from_millis(1500)));
        let e = decode::<P>(&json!({"inner": {"count": "x"}})).unwrap_err();
        assert_eq!(e[0].field, "params.inner.count");
        let e = decode::<P>(&json!({"nope": 1})).unwrap_err();
        assert!(e[0].message.contains("unknown field `nope`"), "{e:?}");
        let e = decode::<P>(&json!({"validDuration": "5 s"})).unwrap_err();
        assert!(e[0].message.contains("invalid duration"), "{e:?}");
        assert!(decode::<P>(&Json::Null).is_ok());
    }

    #[test]
    fn enums() {
        let names = ["UNSPECIFIED", "GAUGE", "COUNTER"];
        assert_eq!(enum_by_name(&json!("counter"), &names), Ok(2));
        assert_eq!(enum_by_name(&json!(1), &names), Ok(1));
        assert!(enum_by_name(&json!("HISTO"), &names).is_err());
    }

    #[test]
    fn canonical_json_ignores_key_order() {
        let a: Json = serde_json::from_str(
            r#"{"quotas": [{"name": "q", "maxAmount": 5, "overrides": [{"b": 1, "a": "\"x"}]}],
                "minDeduplicationDuration": "1s", "empty": {}}"#,
        )
        .unwrap();
        let b: Json = serde_json::from_str(
            r#"{"empty": {}, "minDeduplicationDuration": "1s",
                "quotas": [{"overrides": [{"a": "\"x", "b": 1}], "maxAmount": 5, "name": "q"}]}"#,
        )
        .unwrap();
        // The parsed objects keep their order (preserve_order): their texts differ.
        assert_ne!(a.to_string(), b.to_string());
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"empty":{},"minDeduplicationDuration":"1s","quotas":[{"maxAmount":5,"name":"q","overrides":[{"a":"\"x","b":1}]}]}"#
        );
        // Array order is meaningful and kept.
        assert_ne!(
            canonical_json(&json!([1, 2])),
            canonical_json(&json!([2, 1]))
        );
        assert_eq!(canonical_json(&Json::Null), "null");
    }
}
