//! An Envoy-style attribute encoder, for clients (the CLI, load generators) and tests.

use std::collections::BTreeMap;

use expr_lang::Value;

use super::referenced::WordEncoder;
use crate::wire::pb::istio::mixer::v1::report_request::RepeatedAttributesSemantics;
use crate::wire::pb::istio::mixer::v1::{CompressedAttributes, ReportRequest, StringMap};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Compresses attribute sets the way the Envoy Mixer client does.
///
/// Every string (attribute name, string value, map key, map value) gets its global
/// dictionary index when it is a global word below `global_word_count`, and a message word
/// otherwise. The message word list is shared by everything encoded with one encoder:
/// a Check puts it in `CompressedAttributes.words` ([`AttributeEncoder::encode_one`]); a
/// Report batch sends it once as `ReportRequest.default_words`, with every element's own
/// `words` empty ([`encode_report`]).
#[derive(Clone, Debug, Default)]
pub struct AttributeEncoder {
    dict: WordEncoder,
}

impl AttributeEncoder {
    pub fn new(global_word_count: u32) -> AttributeEncoder {
        AttributeEncoder {
            dict: WordEncoder::new(global_word_count),
        }
    }

    /// Encodes one attribute set; the returned message's `words` is empty (the words are
    /// collected in the encoder, see [`AttributeEncoder::into_words`]).
    ///
    /// The value map follows the value's variant: String, DnsName, EmailAddress and Uri go
    /// to `strings`; Int64 to `int64s`; Double to `doubles`; Bool to `bools`; Timestamp to
    /// `timestamps` (instant only, the zone is dropped); Duration to `durations`; IpAddress
    /// to `bytes`; StringMap to `string_maps`. When a name repeats, the last value wins.
    pub fn encode(&mut self, attrs: &[(String, Value<'_>)]) -> CompressedAttributes {
        let mut out = CompressedAttributes::default();
        for (name, value) in attrs {
            let n = self.dict.index(name);
            remove_everywhere(&mut out, n);
            match value {
                Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => {
                    let v = self.dict.index(s);
                    out.strings.insert(n, v);
                }
                Value::Int64(v) => {
                    out.int64s.insert(n, *v);
                }
                Value::Double(v) => {
                    out.doubles.insert(n, *v);
                }
                Value::Bool(v) => {
                    out.bools.insert(n, *v);
                }
                Value::Timestamp(t) => {
                    let ts = prost_types::Timestamp {
                        seconds: t.secs,
                        nanos: i32::try_from(t.nanos).unwrap_or(0),
                    };
                    out.timestamps.insert(n, ts);
                }
                Value::Duration(d) => {
                    // Truncating division keeps seconds and nanos of the same sign.
                    let pd = prost_types::Duration {
                        seconds: d / NANOS_PER_SEC,
                        nanos: i32::try_from(d % NANOS_PER_SEC).unwrap_or(0),
                    };
                    out.durations.insert(n, pd);
                }
                Value::IpAddress(b) => {
                    out.bytes.insert(n, b.to_vec());
                }
                Value::StringMap(m) => {
                    // Sorted, so the message words come out in a stable order.
                    let entries = m.to_btree();
                    let mut map = StringMap {
                        entries: BTreeMap::new(),
                    };
                    for (k, v) in &entries {
                        let k = self.dict.index(k);
                        let v = self.dict.index(v);
                        map.entries.insert(k, v);
                    }
                    out.string_maps.insert(n, map);
                }
            }
        }
        out
    }

    /// The message words collected so far.
    pub fn words(&self) -> &[String] {
        self.dict.words()
    }

    /// The message words, in order of first use, in their wire form.
    pub fn into_words(self) -> Vec<Vec<u8>> {
        self.dict
            .into_words()
            .into_iter()
            .map(String::into_bytes)
            .collect()
    }

    /// Encodes a standalone attribute set (a Check's `attributes`), words included.
    pub fn encode_one(
        global_word_count: u32,
        attrs: &[(String, Value<'_>)],
    ) -> CompressedAttributes {
        let mut encoder = AttributeEncoder::new(global_word_count);
        let mut out = encoder.encode(attrs);
        out.words = encoder.into_words();
        out
    }
}

/// Encodes a Report batch as Envoy does: INDEPENDENT_ENCODING, one shared message dictionary
/// in `default_words`, every element's `words` empty.
pub fn encode_report(
    global_word_count: u32,
    elements: &[Vec<(String, Value<'_>)>],
) -> ReportRequest {
    let mut encoder = AttributeEncoder::new(global_word_count);
    let attributes = elements.iter().map(|e| encoder.encode(e)).collect();
    ReportRequest {
        attributes,
        repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
        default_words: encoder.into_words(),
        global_word_count,
    }
}

fn remove_everywhere(out: &mut CompressedAttributes, n: i32) {
    out.strings.remove(&n);
    out.int64s.remove(&n);
    out.doubles.remove(&n);
    out.bools.remove(&n);
    out.timestamps.remove(&n);
    out.durations.remove(&n);
    out.bytes.remove(&n);
    out.string_maps.remove(&n);
}
