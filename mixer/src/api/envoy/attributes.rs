//! Building a bag from an Envoy message: the attribute sources of the mapping contract
//! (`ENVOY.md`), in increasing precedence — values derived from Envoy's fields,
//! the node identity, then attribute-named keys — each overwriting the one before.
//!
//! Only attributes the serving manifest declares are set: no expression can read any
//! other. Text from attribute-named keys is converted to the declared type; a value that
//! does not convert is skipped and counted, never a failed request.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use adapters::kubernetesenv::cache::{pod_uid, workload_uid};
use expr_lang::golib::time::{Timestamp, parse_rfc3339};
use expr_lang::{Manifest, SlotBag, StringMapRef, Value, ValueType};
use prost_types::value::Kind;

/// A value from an attribute-named key that could not become its attribute.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("attribute '{attribute}': {value:?} is not a {expected}")]
pub struct ConvertError {
    pub attribute: String,
    pub value: String,
    pub expected: ValueType,
}

/// Which side of the connection this Envoy's own workload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

/// The workload attributes of one side, spelled out once: a node identity is written for
/// every access-log entry, and formatting the names each time cost more than the values.
struct IdentityNames {
    name: &'static str,
    namespace: &'static str,
    workload_namespace: &'static str,
    workload_name: &'static str,
    owner: &'static str,
    service_account: &'static str,
    uid: &'static str,
    workload_uid: &'static str,
    labels: &'static str,
}

const SOURCE_IDENTITY: IdentityNames = IdentityNames {
    name: "source.name",
    namespace: "source.namespace",
    workload_namespace: "source.workload.namespace",
    workload_name: "source.workload.name",
    owner: "source.owner",
    service_account: "source.serviceAccount",
    uid: "source.uid",
    workload_uid: "source.workload.uid",
    labels: "source.labels",
};

const DESTINATION_IDENTITY: IdentityNames = IdentityNames {
    name: "destination.name",
    namespace: "destination.namespace",
    workload_namespace: "destination.workload.namespace",
    workload_name: "destination.workload.name",
    owner: "destination.owner",
    service_account: "destination.serviceAccount",
    uid: "destination.uid",
    workload_uid: "destination.workload.uid",
    labels: "destination.labels",
};

impl Side {
    fn identity_names(self) -> &'static IdentityNames {
        match self {
            Side::Source => &SOURCE_IDENTITY,
            Side::Destination => &DESTINATION_IDENTITY,
        }
    }

    /// `destination` for inbound reporters (the default), `source` for outbound ones.
    pub fn of_reporter(kind: Option<&str>) -> Side {
        match kind {
            Some("outbound") => Side::Source,
            _ => Side::Destination,
        }
    }
}

/// A bag under construction against one manifest.
pub struct BagBuilder<'m> {
    manifest: &'m Manifest,
    bag: SlotBag,
    /// Values from attribute-named keys that did not convert.
    rejected: Vec<ConvertError>,
}

impl<'m> BagBuilder<'m> {
    pub fn new(manifest: &'m Manifest) -> BagBuilder<'m> {
        BagBuilder {
            manifest,
            bag: SlotBag::with_len(manifest.len()),
            rejected: Vec::new(),
        }
    }

    /// Sets `name` when the manifest declares it with the value's type (or a type the
    /// value converts to losslessly: any string-like type from a string).
    pub fn set(&mut self, name: &str, value: Value<'static>) {
        let Some(info) = self.manifest.get(name) else {
            return;
        };
        let value = match (value, info.value_type) {
            (v, t) if v.value_type() == t => v,
            (Value::String(s), t) => match convert(&s, t) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
        self.bag.set(info.id, value);
    }

    pub fn set_str(&mut self, name: &str, value: &str) {
        self.set(name, Value::String(value.to_owned().into()));
    }

    /// Sets a string attribute unless `value` is empty (Envoy's "not set").
    pub fn set_nonempty(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.set_str(name, value);
        }
    }

    pub fn set_map(&mut self, name: &str, map: BTreeMap<String, String>) {
        self.set(name, Value::StringMap(StringMapRef::Owned(Arc::new(map))));
    }

    pub fn set_ip(&mut self, name: &str, ip: IpAddr) {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        self.set(name, Value::IpAddress(bytes.into()));
    }

    pub fn set_timestamp(&mut self, name: &str, t: &prost_types::Timestamp) {
        let nanos = u32::try_from(t.nanos).unwrap_or(0);
        self.set(
            name,
            Value::Timestamp(Timestamp::from_unix(t.seconds, nanos)),
        );
    }

    /// `request.path` as sent (query included), and `request.url_path` and
    /// `request.query_params` split from it.
    pub fn set_path(&mut self, path: &str) {
        if path.is_empty() {
            return;
        }
        self.set_str("request.path", path);
        let (url_path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let url_path = url_path.split('#').next().unwrap_or(url_path);
        self.set_str("request.url_path", url_path);
        if let Some(query) = query {
            let query = query.split('#').next().unwrap_or(query);
            self.set_map("request.query_params", query_params(query));
        }
    }

    /// The node identity (Istio's sidecar bootstrap `node.metadata`) as the attributes of
    /// this Envoy's own workload, as Istio's `kubernetesenv` wrote them.
    pub fn node_identity(&mut self, metadata: &prost_types::Struct, side: Side) {
        let text = |key: &str| match metadata.fields.get(key).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        };
        let n = side.identity_names();
        let name = text("NAME");
        let namespace = text("NAMESPACE");
        let workload = text("WORKLOAD_NAME");
        if let Some(name) = name {
            self.set_str(n.name, name);
        }
        if let Some(ns) = namespace {
            self.set_str(n.namespace, ns);
            self.set_str(n.workload_namespace, ns);
        }
        if let Some(w) = workload {
            self.set_str(n.workload_name, w);
        }
        if let Some(owner) = text("OWNER") {
            self.set_str(n.owner, owner);
        }
        if let Some(sa) = text("SERVICE_ACCOUNT") {
            self.set_str(n.service_account, sa);
        }
        if let (Some(name), Some(ns)) = (name, namespace) {
            self.set(n.uid, Value::String(pod_uid(name, ns).into()));
        }
        if let (Some(ns), Some(w)) = (namespace, workload) {
            self.set(n.workload_uid, Value::String(workload_uid(ns, w).into()));
        }
        if let Some(Kind::StructValue(labels)) =
            metadata.fields.get("labels").and_then(|v| v.kind.as_ref())
        {
            self.set_map(n.labels, struct_to_map(labels));
        }
    }

    /// An attribute-named key with a text value (`-` means absent). Keys that are not
    /// attribute names are ignored.
    pub fn keyed_text(&mut self, key: &str, text: &str) {
        let Some(info) = self.manifest.get(key) else {
            return;
        };
        if text == "-" {
            return;
        }
        match convert(text, info.value_type) {
            Some(v) => self.bag.set(info.id, v),
            None => self.rejected.push(ConvertError {
                attribute: key.to_owned(),
                value: text.chars().take(64).collect(),
                expected: info.value_type,
            }),
        }
    }

    /// An attribute-named key with a protobuf `Value` (filter metadata): strings as text,
    /// numbers and booleans directly, a struct as a STRING_MAP.
    pub fn keyed_value(&mut self, key: &str, value: &prost_types::Value) {
        let Some(info) = self.manifest.get(key) else {
            return;
        };
        let converted = match (value.kind.as_ref(), info.value_type) {
            (Some(Kind::StringValue(s)), _) => return self.keyed_text(key, s),
            (Some(Kind::NumberValue(n)), t) => number(*n, t),
            (Some(Kind::BoolValue(b)), ValueType::Bool) => Some(Value::Bool(*b)),
            (Some(Kind::StructValue(s)), ValueType::StringMap) => Some(Value::StringMap(
                StringMapRef::Owned(Arc::new(struct_to_map(s))),
            )),
            _ => None,
        };
        match converted {
            Some(v) => self.bag.set(info.id, v),
            None => self.rejected.push(ConvertError {
                attribute: key.to_owned(),
                value: format!("{value:?}").chars().take(64).collect(),
                expected: info.value_type,
            }),
        }
    }

    /// Every attribute-named key of a protobuf `Struct`.
    pub fn keyed_struct(&mut self, fields: &prost_types::Struct) {
        for (k, v) in &fields.fields {
            self.keyed_value(k, v);
        }
    }

    /// Whether `name` is set so far.
    pub fn has(&self, name: &str) -> bool {
        use expr_lang::{AttrKey, Bag};
        self.manifest
            .get(name)
            .is_some_and(|info| self.bag.get(AttrKey { name, id: info.id }).is_some())
    }

    /// The string value of `name` so far, if set and string-like.
    pub fn get_str(&self, name: &str) -> Option<String> {
        use expr_lang::{AttrKey, Bag};
        let info = self.manifest.get(name)?;
        self.bag
            .get(AttrKey { name, id: info.id })
            .and_then(|v| v.as_str().map(str::to_owned))
    }

    /// The values that did not convert.
    pub fn rejected(&self) -> &[ConvertError] {
        &self.rejected
    }

    pub fn finish(self) -> (SlotBag, Vec<ConvertError>) {
        (self.bag, self.rejected)
    }
}

/// The server clock as a timestamp (`context.time`).
pub fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_unix(
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        since.subsec_nanos(),
    )
}

/// Text as a value of type `t`, per the mapping contract; `None` when it does not convert.
pub fn convert(text: &str, t: ValueType) -> Option<Value<'static>> {
    let owned = || text.to_owned().into();
    Some(match t {
        ValueType::String | ValueType::Unspecified => Value::String(owned()),
        ValueType::DnsName => Value::DnsName(owned()),
        ValueType::Uri => Value::Uri(owned()),
        ValueType::EmailAddress => Value::EmailAddress(owned()),
        ValueType::Int64 => Value::Int64(text.trim().parse().ok()?),
        ValueType::Double => Value::Double(text.trim().parse().ok()?),
        ValueType::Bool => Value::Bool(text.trim().parse().ok()?),
        ValueType::Duration => Value::Duration(duration_nanos(text.trim())?),
        ValueType::Timestamp => Value::Timestamp(parse_rfc3339(text.trim())?),
        ValueType::IpAddress => {
            let ip: IpAddr = text.trim().parse().ok()?;
            return Some(match ip {
                IpAddr::V4(v4) => Value::IpAddress(v4.octets().to_vec().into()),
                IpAddr::V6(v6) => Value::IpAddress(v6.octets().to_vec().into()),
            });
        }
        ValueType::StringMap => Value::StringMap(StringMapRef::Owned(Arc::new(text_map(text)?))),
    })
}

/// A JSON number as a value of type `t` (DURATION: milliseconds).
fn number(n: f64, t: ValueType) -> Option<Value<'static>> {
    match t {
        ValueType::Double => Some(Value::Double(n)),
        ValueType::Int64 if n.fract() == 0.0 && n.abs() < 9.0e15 => Some(Value::Int64(n as i64)),
        ValueType::Duration if n.is_finite() && n.abs() < 9.0e9 => {
            Some(Value::Duration((n * 1e6).round() as i64))
        }
        ValueType::String => Some(Value::String(n.to_string().into())),
        _ => None,
    }
}

/// `7ms`, `1.5s` (Go durations) or a bare number of milliseconds, in nanoseconds.
fn duration_nanos(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<f64>() {
        return (ms.is_finite() && ms.abs() < 9.0e9).then(|| (ms * 1e6).round() as i64);
    }
    expr_lang::golib::duration::parse_duration(text)
}

/// `k1:v1;k2:v2`.
fn text_map(text: &str) -> Option<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once(':')?;
        map.insert(k.to_owned(), v.to_owned());
    }
    Some(map)
}

/// A `Struct` of strings as a string map (other values in their text form).
pub fn struct_to_map(s: &prost_types::Struct) -> BTreeMap<String, String> {
    s.fields
        .iter()
        .filter_map(|(k, v)| {
            let text = match v.kind.as_ref()? {
                Kind::StringValue(s) => s.clone(),
                Kind::NumberValue(n) => n.to_string(),
                Kind::BoolValue(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), text))
        })
        .collect()
}

/// Query parameters, percent-decoded where valid; a repeated key keeps its first value.
fn query_params(query: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(percent_decode(k))
            .or_insert_with(|| percent_decode(v));
    }
    map
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use expr_lang::{AttrKey, Bag};

    use super::*;

    fn manifest() -> Manifest {
        Manifest::istio_vocabulary()
    }

    fn get<'b>(m: &Manifest, bag: &'b SlotBag, name: &str) -> Option<Value<'b>> {
        let id = m.get(name).unwrap().id;
        bag.get(AttrKey { name, id })
    }

    #[test]
    fn text_converts_to_the_declared_type() {
        assert_eq!(convert("42", ValueType::Int64), Some(Value::Int64(42)));
        assert_eq!(
            convert("7ms", ValueType::Duration),
            Some(Value::Duration(7_000_000))
        );
        assert_eq!(
            convert("1.5s", ValueType::Duration),
            Some(Value::Duration(1_500_000_000))
        );
        assert_eq!(
            convert("12", ValueType::Duration),
            Some(Value::Duration(12_000_000))
        );
        assert_eq!(convert("true", ValueType::Bool), Some(Value::Bool(true)));
        assert_eq!(
            convert("10.1.2.3", ValueType::IpAddress),
            Some(Value::IpAddress(vec![10, 1, 2, 3].into()))
        );
        assert!(convert("2026-12-04T10:00:00Z", ValueType::Timestamp).is_some());
        assert!(convert("nope", ValueType::Int64).is_none());
        assert!(convert("a:b;c", ValueType::StringMap).is_none());
        let Some(Value::StringMap(m)) = convert("a:1;b:2", ValueType::StringMap) else {
            panic!("a map");
        };
        assert_eq!((m.get("a"), m.get("b")), (Some("1"), Some("2")));
    }

    #[test]
    fn path_splits_into_url_path_and_query_params() {
        let m = manifest();
        let mut b = BagBuilder::new(&m);
        b.set_path("/a/b?x=1&y=%2Fz+w&x=2");
        let (bag, _) = b.finish();
        assert_eq!(
            get(&m, &bag, "request.path"),
            Some(Value::str("/a/b?x=1&y=%2Fz+w&x=2"))
        );
        assert_eq!(get(&m, &bag, "request.url_path"), Some(Value::str("/a/b")));
        let Some(Value::StringMap(q)) = get(&m, &bag, "request.query_params") else {
            panic!("query params");
        };
        assert_eq!((q.get("x"), q.get("y")), (Some("1"), Some("/z w")));
    }

    #[test]
    fn keyed_values_overwrite_skip_dashes_and_count_failures() {
        let m = manifest();
        let mut b = BagBuilder::new(&m);
        b.set_str("context.reporter.kind", "inbound");
        b.keyed_text("context.reporter.kind", "outbound");
        b.keyed_text("response.code", "-");
        b.keyed_text("response.size", "many");
        b.keyed_text("not.an.attribute", "x");
        let (bag, rejected) = b.finish();
        assert_eq!(
            get(&m, &bag, "context.reporter.kind"),
            Some(Value::str("outbound"))
        );
        assert_eq!(get(&m, &bag, "response.code"), None);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].attribute, "response.size");
    }

    #[test]
    fn node_identity_fills_the_workload_as_kubernetesenv_did() {
        let m = manifest();
        let text = |s: &str| prost_types::Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        };
        let mut labels = prost_types::Struct::default();
        labels.fields.insert("app".into(), text("reviews"));
        let mut meta = prost_types::Struct::default();
        for (k, v) in [
            ("NAME", "reviews-v1-abc"),
            ("NAMESPACE", "default"),
            ("WORKLOAD_NAME", "reviews-v1"),
            ("SERVICE_ACCOUNT", "bookinfo-reviews"),
        ] {
            meta.fields.insert(k.into(), text(v));
        }
        meta.fields.insert(
            "labels".into(),
            prost_types::Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
        let mut b = BagBuilder::new(&m);
        b.node_identity(&meta, Side::Destination);
        let (bag, _) = b.finish();
        let s = |n| get(&m, &bag, n).and_then(|v| v.as_str().map(str::to_owned));
        assert_eq!(
            s("destination.workload.name").as_deref(),
            Some("reviews-v1")
        );
        assert_eq!(
            s("destination.uid").as_deref(),
            Some("kubernetes://reviews-v1-abc.default")
        );
        assert_eq!(
            s("destination.workload.uid").as_deref(),
            Some("istio://default/workloads/reviews-v1")
        );
        let Some(Value::StringMap(l)) = get(&m, &bag, "destination.labels") else {
            panic!("labels");
        };
        assert_eq!(l.get("app"), Some("reviews"));
    }
}
