//! Errors of attribute decoding.

use std::fmt;

use super::dictionary::GLOBAL_WORD_COUNT;

/// Why a `CompressedAttributes` (or a `ReferencedAttributes`) could not be decoded.
///
/// The server decodes strictly: every index must resolve, and an attribute may appear once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(Box<DecodeErrorKind>);

impl DecodeError {
    pub(crate) fn new(kind: DecodeErrorKind) -> DecodeError {
        DecodeError(Box::new(kind))
    }

    /// What went wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.0
    }
}

impl From<DecodeErrorKind> for DecodeError {
    fn from(kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(kind)
    }
}

/// The value map of `CompressedAttributes` an attribute was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapKind {
    Strings,
    Int64s,
    Doubles,
    Bools,
    Timestamps,
    Durations,
    Bytes,
    StringMaps,
}

impl MapKind {
    /// The proto field name.
    pub fn name(self) -> &'static str {
        match self {
            MapKind::Strings => "strings",
            MapKind::Int64s => "int64s",
            MapKind::Doubles => "doubles",
            MapKind::Bools => "bools",
            MapKind::Timestamps => "timestamps",
            MapKind::Durations => "durations",
            MapKind::Bytes => "bytes",
            MapKind::StringMaps => "string_maps",
        }
    }
}

impl fmt::Display for MapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an unresolvable dictionary index was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexSite {
    /// An attribute name (a key of one of the value maps).
    AttributeName,
    /// The value of a `strings` attribute.
    Value { attribute: String },
    /// A key of a `string_maps` attribute.
    MapKey { attribute: String },
    /// A value of a `string_maps` attribute.
    MapValue { attribute: String, key: String },
    /// `AttributeMatch.name` of a `ReferencedAttributes`.
    ReferencedName,
    /// `AttributeMatch.map_key` of a `ReferencedAttributes`.
    ReferencedMapKey { attribute: String },
}

/// How an index failed to resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// A non-negative index at or past the end of the global dictionary.
    Global,
    /// A negative index past the end of the message dictionary, which has `words` words.
    Message { words: usize },
    /// A negative index naming a message word that is not UTF-8; `valid_up_to` is the
    /// offset of its first bad byte.
    NotUtf8 { valid_up_to: usize },
}

/// The details of a [`DecodeError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// An index that names no word.
    Index {
        site: IndexSite,
        index: i32,
        reason: Unresolved,
    },
    /// The same attribute name appears twice (in two value maps, or twice in one through two
    /// different indexes).
    DuplicateAttribute {
        name: String,
        first: MapKind,
        second: MapKind,
    },
    /// A `google.protobuf.Timestamp` outside Go's valid range (years 1 to 9999, nanoseconds
    /// in `0..1e9`).
    InvalidTimestamp {
        attribute: String,
        seconds: i64,
        nanos: i32,
    },
    /// A `google.protobuf.Duration` that is malformed or does not fit in `i64` nanoseconds.
    InvalidDuration {
        attribute: String,
        seconds: i64,
        nanos: i32,
        reason: &'static str,
    },
    /// An `AttributeMatch.condition` other than ABSENCE or EXACT.
    UnsupportedCondition { attribute: String, condition: i32 },
    /// The input is over one of the server's decoding limits.
    OverLimit { limit: Limit, max: usize },
    /// `ReportRequest.repeated_attributes_semantics` is neither DELTA nor INDEPENDENT.
    UnknownSemantics { value: i32 },
}

/// The decoding limits (see [`super::DecodeLimits`]), each with the flag that sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Attributes in one attribute set (for DELTA_ENCODING, after the set's changes apply).
    AttributesPerSet,
    /// Entries of one STRING_MAP value.
    StringMapEntries,
    /// Attribute sets in one Report.
    ReportSets,
    /// Decoded attribute bytes of one Report, summed over its sets.
    ReportDecodedBytes,
}

impl Limit {
    /// The `mixer server` flag that sets this limit.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::AttributesPerSet => "--max-attributes-per-set",
            Limit::StringMapEntries => "--max-string-map-entries",
            Limit::ReportSets => "--max-report-attribute-sets",
            Limit::ReportDecodedBytes => "--max-report-decoded-bytes",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Limit::AttributesPerSet => "attributes in one attribute set",
            Limit::StringMapEntries => "entries in one string map",
            Limit::ReportSets => "attribute sets in one Report",
            Limit::ReportDecodedBytes => "decoded attribute bytes in one Report",
        }
    }
}

impl DecodeError {
    /// True when the input was well-formed but over a server limit (RESOURCE_EXHAUSTED
    /// rather than INVALID_ARGUMENT).
    pub fn is_over_limit(&self) -> bool {
        matches!(*self.0, DecodeErrorKind::OverLimit { .. })
    }
}

impl fmt::Display for IndexSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the words before "index N"; the rest is written by `DecodeErrorKind`.
        match self {
            IndexSite::AttributeName => f.write_str("attribute name"),
            IndexSite::Value { .. } => f.write_str("value"),
            IndexSite::MapKey { .. } => f.write_str("map key"),
            IndexSite::MapValue { .. } => f.write_str("map value"),
            IndexSite::ReferencedName => f.write_str("referenced attribute name"),
            IndexSite::ReferencedMapKey { .. } => f.write_str("map key"),
        }
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::Index {
                site,
                index,
                reason,
            } => {
                write!(f, "{site} index {index}")?;
                match site {
                    IndexSite::AttributeName | IndexSite::ReferencedName => {}
                    IndexSite::Value { attribute } | IndexSite::MapKey { attribute } => {
                        write!(f, " of attribute '{attribute}'")?;
                    }
                    IndexSite::MapValue { attribute, key } => {
                        write!(f, " of key '{key}' in attribute '{attribute}'")?;
                    }
                    IndexSite::ReferencedMapKey { attribute } => {
                        write!(f, " of referenced attribute '{attribute}'")?;
                    }
                }
                match reason {
                    Unresolved::Global => write!(
                        f,
                        " is not defined in the global dictionary ({GLOBAL_WORD_COUNT} words)"
                    ),
                    Unresolved::Message { words } => write!(
                        f,
                        " is not defined: the message has {words} word{}",
                        if *words == 1 { "" } else { "s" }
                    ),
                    Unresolved::NotUtf8 { valid_up_to } => write!(
                        f,
                        " names message word {}, which is not valid UTF-8 (bad byte at offset {valid_up_to})",
                        -i64::from(*index) - 1
                    ),
                }
            }
            DecodeErrorKind::DuplicateAttribute {
                name,
                first,
                second,
            } => write!(f, "duplicate attribute '{name}' (in {first} and {second})"),
            DecodeErrorKind::InvalidTimestamp {
                attribute,
                seconds,
                nanos,
            } => write!(
                f,
                "invalid timestamp for attribute '{attribute}' (seconds {seconds}, nanos {nanos}): \
                 it must lie in years 1 to 9999 with nanos in 0..1000000000"
            ),
            DecodeErrorKind::InvalidDuration {
                attribute,
                seconds,
                nanos,
                reason,
            } => write!(
                f,
                "invalid duration for attribute '{attribute}' (seconds {seconds}, nanos {nanos}): {reason}"
            ),
            DecodeErrorKind::OverLimit { limit, max } => write!(
                f,
                "more than {max} {} (the limit set by {})",
                limit.what(),
                limit.flag()
            ),
            DecodeErrorKind::UnknownSemantics { value } => write!(
                f,
                "unknown repeated_attributes_semantics {value}: expected 0 (DELTA_ENCODING) or 1 (INDEPENDENT_ENCODING)"
            ),
            DecodeErrorKind::UnsupportedCondition {
                attribute,
                condition,
            } => {
                let name = match condition {
                    0 => "CONDITION_UNSPECIFIED".to_owned(),
                    3 => "REGEX".to_owned(),
                    n => n.to_string(),
                };
                write!(
                    f,
                    "referenced attribute '{attribute}' has unsupported condition {name}"
                )
            }
        }
    }
}
