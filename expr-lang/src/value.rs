//! The value domain: every `istio.policy.v1beta1.ValueType` and a runtime [`Value`] for it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::bag::StringMap;
use crate::golib;
use crate::golib::time::Timestamp;

/// The attribute value types, numbered as in `policy/v1beta1/value_type.proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ValueType {
    /// Generic ("any type") in function signatures; never the type of a value.
    Unspecified = 0,
    String = 1,
    Int64 = 2,
    Double = 3,
    Bool = 4,
    Timestamp = 5,
    IpAddress = 6,
    EmailAddress = 7,
    Uri = 8,
    DnsName = 9,
    Duration = 10,
    StringMap = 11,
}

impl ValueType {
    /// Every concrete type, in enum order.
    pub const ALL: [ValueType; 11] = [
        ValueType::String,
        ValueType::Int64,
        ValueType::Double,
        ValueType::Bool,
        ValueType::Timestamp,
        ValueType::IpAddress,
        ValueType::EmailAddress,
        ValueType::Uri,
        ValueType::DnsName,
        ValueType::Duration,
        ValueType::StringMap,
    ];

    /// The proto enum name, e.g. `STRING_MAP`.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Unspecified => "VALUE_TYPE_UNSPECIFIED",
            ValueType::String => "STRING",
            ValueType::Int64 => "INT64",
            ValueType::Double => "DOUBLE",
            ValueType::Bool => "BOOL",
            ValueType::Timestamp => "TIMESTAMP",
            ValueType::IpAddress => "IP_ADDRESS",
            ValueType::EmailAddress => "EMAIL_ADDRESS",
            ValueType::Uri => "URI",
            ValueType::DnsName => "DNS_NAME",
            ValueType::Duration => "DURATION",
            ValueType::StringMap => "STRING_MAP",
        }
    }

    /// Parses a proto enum name (case-insensitive, as Istio manifests are written by hand).
    pub fn from_name(name: &str) -> Option<ValueType> {
        let upper = name.trim().to_ascii_uppercase();
        let ty = match upper.as_str() {
            "VALUE_TYPE_UNSPECIFIED" => ValueType::Unspecified,
            "STRING" => ValueType::String,
            "INT64" => ValueType::Int64,
            "DOUBLE" => ValueType::Double,
            "BOOL" => ValueType::Bool,
            "TIMESTAMP" => ValueType::Timestamp,
            "IP_ADDRESS" => ValueType::IpAddress,
            "EMAIL_ADDRESS" => ValueType::EmailAddress,
            "URI" => ValueType::Uri,
            "DNS_NAME" => ValueType::DnsName,
            "DURATION" => ValueType::Duration,
            "STRING_MAP" => ValueType::StringMap,
            _ => return None,
        };
        Some(ty)
    }

    /// Whether values of this type are strings at run time (they differ only in `==`).
    pub fn is_string_like(self) -> bool {
        matches!(
            self,
            ValueType::String | ValueType::DnsName | ValueType::EmailAddress | ValueType::Uri
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string map value: borrowed from a bag, or owned (results kept past the bag's life).
#[derive(Clone)]
pub enum StringMapRef<'a> {
    Borrowed(&'a dyn StringMap),
    Owned(Arc<BTreeMap<String, String>>),
}

impl StringMapRef<'_> {
    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        match self {
            StringMapRef::Borrowed(m) => m.get(key),
            StringMapRef::Owned(m) => m.get(key).map(String::as_str),
        }
    }

    /// A sorted copy of the entries.
    pub fn to_btree(&self) -> BTreeMap<String, String> {
        match self {
            StringMapRef::Borrowed(m) => {
                let mut out = BTreeMap::new();
                m.for_each_entry(&mut |k, v| {
                    out.insert(k.to_owned(), v.to_owned());
                });
                out
            }
            StringMapRef::Owned(m) => (**m).clone(),
        }
    }
}

/// The empty map `emptyStringMap()` returns.
pub(crate) static EMPTY_MAP: BTreeMap<String, String> = BTreeMap::new();

/// A runtime value. Strings and bytes borrow from the bag or the program where they can,
/// so evaluating to a scalar or to an attribute's own text allocates nothing.
///
/// `repr(C, u8)` puts every payload at offset 8: with the default layout small payloads
/// (a `bool` at offset 1) were copied with overlapping partial moves that stalled store
/// forwarding, doubling the cost of evaluating a constant.
#[derive(Clone)]
#[repr(C, u8)]
pub enum Value<'a> {
    String(Cow<'a, str>),
    Int64(i64),
    Double(f64),
    Bool(bool),
    Timestamp(Timestamp),
    /// Nanoseconds, as Go's `time.Duration`.
    Duration(i64),
    /// 4- or 16-byte address, as Mixer kept it.
    IpAddress(Cow<'a, [u8]>),
    EmailAddress(Cow<'a, str>),
    Uri(Cow<'a, str>),
    DnsName(Cow<'a, str>),
    StringMap(StringMapRef<'a>),
}

impl<'a> Value<'a> {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::String(_) => ValueType::String,
            Value::Int64(_) => ValueType::Int64,
            Value::Double(_) => ValueType::Double,
            Value::Bool(_) => ValueType::Bool,
            Value::Timestamp(_) => ValueType::Timestamp,
            Value::Duration(_) => ValueType::Duration,
            Value::IpAddress(_) => ValueType::IpAddress,
            Value::EmailAddress(_) => ValueType::EmailAddress,
            Value::Uri(_) => ValueType::Uri,
            Value::DnsName(_) => ValueType::DnsName,
            Value::StringMap(_) => ValueType::StringMap,
        }
    }

    /// A string value (`Value::String(Cow::Borrowed(s))`).
    pub fn str(s: &'a str) -> Value<'a> {
        Value::String(Cow::Borrowed(s))
    }

    /// The text of a string-like value (STRING, DNS_NAME, EMAIL_ADDRESS, URI).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
                Some(s)
            }
            _ => None,
        }
    }

    /// Detaches the value from the bag and program it borrows from.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::String(s) => Value::String(Cow::Owned(s.into_owned())),
            Value::Int64(v) => Value::Int64(v),
            Value::Double(v) => Value::Double(v),
            Value::Bool(v) => Value::Bool(v),
            Value::Timestamp(v) => Value::Timestamp(v),
            Value::Duration(v) => Value::Duration(v),
            Value::IpAddress(b) => Value::IpAddress(Cow::Owned(b.into_owned())),
            Value::EmailAddress(s) => Value::EmailAddress(Cow::Owned(s.into_owned())),
            Value::Uri(s) => Value::Uri(Cow::Owned(s.into_owned())),
            Value::DnsName(s) => Value::DnsName(Cow::Owned(s.into_owned())),
            Value::StringMap(m) => Value::StringMap(match m {
                StringMapRef::Owned(m) => StringMapRef::Owned(m),
                b @ StringMapRef::Borrowed(_) => StringMapRef::Owned(Arc::new(b.to_btree())),
            }),
        }
    }

    /// A copy borrowing what `self` borrows: as `clone`, with the common cases (borrowed
    /// text, scalars) inline.
    #[inline]
    pub fn share(&self) -> Value<'a> {
        match self {
            Value::String(Cow::Borrowed(s)) => Value::String(Cow::Borrowed(s)),
            Value::Int64(v) => Value::Int64(*v),
            Value::Bool(v) => Value::Bool(*v),
            Value::Timestamp(v) => Value::Timestamp(*v),
            Value::Duration(v) => Value::Duration(*v),
            Value::IpAddress(Cow::Borrowed(b)) => Value::IpAddress(Cow::Borrowed(b)),
            other => other.clone(),
        }
    }

    /// Re-borrows the value for a shorter lifetime without copying owned data when possible.
    pub fn borrowed(&self) -> Value<'_> {
        match self {
            Value::String(s) => Value::String(Cow::Borrowed(s)),
            Value::EmailAddress(s) => Value::EmailAddress(Cow::Borrowed(s)),
            Value::Uri(s) => Value::Uri(Cow::Borrowed(s)),
            Value::DnsName(s) => Value::DnsName(Cow::Borrowed(s)),
            Value::IpAddress(b) => Value::IpAddress(Cow::Borrowed(b)),
            Value::StringMap(m) => Value::StringMap(match m {
                StringMapRef::Borrowed(m) => StringMapRef::Borrowed(*m),
                StringMapRef::Owned(m) => StringMapRef::Borrowed(&**m),
            }),
            Value::Int64(v) => Value::Int64(*v),
            Value::Double(v) => Value::Double(*v),
            Value::Bool(v) => Value::Bool(*v),
            Value::Timestamp(v) => Value::Timestamp(*v),
            Value::Duration(v) => Value::Duration(*v),
        }
    }
}

impl PartialEq for Value<'_> {
    /// Structural equality, for tests and caches: IP addresses compare as Go's `IP.Equal`,
    /// timestamps by instant, maps by entries, doubles by value. This is not the
    /// expression language's `==`, which is defined per type in the evaluator.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::String(a), Value::String(b))
            | (Value::EmailAddress(a), Value::EmailAddress(b))
            | (Value::Uri(a), Value::Uri(b))
            | (Value::DnsName(a), Value::DnsName(b)) => a == b,
            (Value::Int64(a), Value::Int64(b)) => a == b,
            (Value::Double(a), Value::Double(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a.same_instant(b),
            (Value::Duration(a), Value::Duration(b)) => a == b,
            (Value::IpAddress(a), Value::IpAddress(b)) => golib::net::ip_equal(a, b),
            (Value::StringMap(a), Value::StringMap(b)) => a.to_btree() == b.to_btree(),
            _ => false,
        }
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write!(f, "String({s:?})"),
            Value::Int64(v) => write!(f, "Int64({v})"),
            Value::Double(v) => write!(f, "Double({v:?})"),
            Value::Bool(v) => write!(f, "Bool({v})"),
            Value::Timestamp(t) => {
                write!(f, "Timestamp({})", golib::time::format_rfc3339_nano(t))
            }
            Value::Duration(d) => write!(f, "Duration({})", golib::duration::format_duration(*d)),
            Value::IpAddress(b) => write!(f, "IpAddress({})", golib::net::format_ip(b)),
            Value::EmailAddress(s) => write!(f, "EmailAddress({s:?})"),
            Value::Uri(s) => write!(f, "Uri({s:?})"),
            Value::DnsName(s) => write!(f, "DnsName({s:?})"),
            Value::StringMap(m) => write!(f, "StringMap({:?})", m.to_btree()),
        }
    }
}

impl fmt::Display for Value<'_> {
    /// The value as a person reads it (Go's `%v` for the scalar types).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
                f.write_str(s)
            }
            Value::Int64(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Timestamp(t) => f.write_str(&golib::time::format_rfc3339_nano(t)),
            Value::Duration(d) => f.write_str(&golib::duration::format_duration(*d)),
            Value::IpAddress(b) => f.write_str(&golib::net::format_ip(b)),
            Value::StringMap(m) => {
                let entries = m.to_btree();
                f.write_str("map[")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{k}:{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}
