//! [`ReportView`]: a Report read straight from its bytes.
//!
//! prost would build a `CompressedAttributes` per set: ordered maps, a `Vec` per word, a
//! `Vec` per IP address, all freed again once the bags are built. The view instead walks
//! the message once and records, in a few flat vectors shared by all sets, where each
//! word and each attribute lies in the bytes; bags borrow their strings from the bytes.
//!
//! The view means what prost's message means: a map key seen twice keeps its last value,
//! a message field seen twice is merged, unknown fields are skipped, and each set's
//! attributes come out ordered by value map and then by key, as prost's ordered maps
//! iterate. Whatever the walk does not accept (malformed input, or groups, which it leaves
//! to prost) is decoded by prost instead: its error is the answer, and a message it does
//! accept is re-encoded in the plain form the walk reads.

use std::ops::Range;

use bytes::Bytes;
use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint};

use super::pb::istio::mixer::v1::ReportRequest;

/// Where a word, or an IP address, lies in the message bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn of(whole: &[u8], part: &[u8]) -> Span {
        // `part` is a subslice of `whole`: its offset is the distance between the starts.
        let start = part.as_ptr() as usize - whole.as_ptr() as usize;
        Span {
            start,
            end: start + part.len(),
        }
    }

    fn range(self) -> Range<usize> {
        self.start..self.end
    }
}

/// One attribute value as the wire carries it; the variant names the value map it came
/// from (in field order, which is the order sets are decoded in).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WireValue {
    /// A dictionary index.
    Str(i32),
    Int64(i64),
    Double(f64),
    Bool(bool),
    Timestamp {
        seconds: i64,
        nanos: i32,
    },
    Duration {
        seconds: i64,
        nanos: i32,
    },
    Bytes(Span),
    /// Entries `start..end` of the view's string map entries.
    StringMap(Span),
}

impl WireValue {
    /// The value map's position among the fields of `CompressedAttributes`.
    fn rank(&self) -> u8 {
        match self {
            WireValue::Str(_) => 0,
            WireValue::Int64(_) => 1,
            WireValue::Double(_) => 2,
            WireValue::Bool(_) => 3,
            WireValue::Timestamp { .. } => 4,
            WireValue::Duration { .. } => 5,
            WireValue::Bytes(_) => 6,
            WireValue::StringMap(_) => 7,
        }
    }
}

/// Where one set's words and attributes lie in the view's vectors.
#[derive(Clone, Debug)]
struct SetSpans {
    words: Range<usize>,
    attrs: Range<usize>,
}

/// A `ReportRequest`, read from its bytes; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct ReportView {
    bytes: Bytes,
    semantics: i32,
    global_word_count: u32,
    default_words: Vec<Span>,
    set_words: Vec<Span>,
    sets: Vec<SetSpans>,
    /// Every set's attributes, by (value map, key), keys unique within a set and map.
    attrs: Vec<(i32, WireValue)>,
    /// Every string map's entries, by key, keys unique within a map.
    map_entries: Vec<(i32, i32)>,
}

/// The input is not something the walk reads: prost decides.
struct Unreadable;

type Read<T> = Result<T, Unreadable>;

impl ReportView {
    /// Reads a `ReportRequest`; the error is prost's for malformed input.
    pub fn decode(bytes: Bytes) -> Result<ReportView, prost::DecodeError> {
        if let Ok(view) = ReportView::read(bytes.clone()) {
            return Ok(view);
        }
        let request = ReportRequest::decode(bytes)?;
        Ok(ReportView::from_request(&request))
    }

    /// The view of a message (for clients, tests and benchmarks that hold one).
    pub fn from_request(request: &ReportRequest) -> ReportView {
        ReportView::read(Bytes::from(request.encode_to_vec()))
            .unwrap_or_else(|_| unreachable!("prost's own encoding is readable"))
    }

    fn read(bytes: Bytes) -> Read<ReportView> {
        let mut view = ReportView {
            bytes,
            ..ReportView::default()
        };
        let whole = view.bytes.clone();
        view.read_request(&whole)?;
        Ok(view)
    }

    /// `repeated_attributes_semantics`, as prost decodes it (any `int32`).
    pub fn repeated_attributes_semantics(&self) -> i32 {
        self.semantics
    }

    pub fn global_word_count(&self) -> u32 {
        self.global_word_count
    }

    /// Number of attribute sets.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// `default_words`.
    pub fn default_words(&self) -> WordList<'_> {
        WordList {
            bytes: &self.bytes,
            spans: &self.default_words,
        }
    }

    /// Attribute set `index` (`attributes[index]`).
    pub fn set(&self, index: usize) -> Option<AttrSet<'_>> {
        let spans = self.sets.get(index)?;
        Some(AttrSet {
            words: WordList {
                bytes: &self.bytes,
                spans: self.set_words.get(spans.words.clone())?,
            },
            attrs: self.attrs.get(spans.attrs.clone())?,
            map_entries: &self.map_entries,
        })
    }

    fn read_request(&mut self, whole: &[u8]) -> Read<()> {
        let mut buf = whole;
        while !buf.is_empty() {
            let (tag, wire_type) = key(&mut buf)?;
            match tag {
                1 => {
                    let set = len_delimited(wire_type, &mut buf)?;
                    self.read_set(whole, set)?;
                }
                2 => {
                    let word = len_delimited(wire_type, &mut buf)?;
                    self.default_words.push(Span::of(whole, word));
                }
                // prost's `uint32` and `int32` (enum) decoding: the varint truncated.
                3 => self.global_word_count = varint(wire_type, &mut buf)? as u32,
                4 => self.semantics = varint(wire_type, &mut buf)? as i32,
                _ => skip(wire_type, &mut buf)?,
            }
        }
        Ok(())
    }

    /// One `CompressedAttributes`.
    fn read_set(&mut self, whole: &[u8], mut buf: &[u8]) -> Read<()> {
        let words = self.set_words.len();
        let attrs = self.attrs.len();
        while !buf.is_empty() {
            let (tag, wire_type) = key(&mut buf)?;
            match tag {
                1 => {
                    let word = len_delimited(wire_type, &mut buf)?;
                    self.set_words.push(Span::of(whole, word));
                }
                2..=9 => {
                    let entry = len_delimited(wire_type, &mut buf)?;
                    let attr = self.read_entry(whole, tag, entry)?;
                    self.attrs.push(attr);
                }
                _ => skip(wire_type, &mut buf)?,
            }
        }
        normalize(&mut self.attrs[attrs..], |(key, value)| {
            (value.rank(), *key)
        });
        let kept = unique_last(&mut self.attrs[attrs..], |(key, value)| {
            (value.rank(), *key)
        });
        self.attrs.truncate(attrs + kept);
        self.sets.push(SetSpans {
            words: words..self.set_words.len(),
            attrs: attrs..self.attrs.len(),
        });
        Ok(())
    }

    /// One entry of value map `field`: its key and value, missing ones at their defaults.
    fn read_entry(&mut self, whole: &[u8], field: u32, mut buf: &[u8]) -> Read<(i32, WireValue)> {
        let map_start = self.map_entries.len();
        let mut key_index = 0;
        let mut value = match field {
            2 => WireValue::Str(0),
            3 => WireValue::Int64(0),
            4 => WireValue::Double(0.0),
            5 => WireValue::Bool(false),
            6 => WireValue::Timestamp {
                seconds: 0,
                nanos: 0,
            },
            7 => WireValue::Duration {
                seconds: 0,
                nanos: 0,
            },
            8 => WireValue::Bytes(Span::default()),
            _ => WireValue::StringMap(Span::default()),
        };
        while !buf.is_empty() {
            let (tag, wire_type) = key(&mut buf)?;
            match tag {
                1 => key_index = sint32(varint(wire_type, &mut buf)?),
                2 => value = self.read_value(whole, value, wire_type, &mut buf)?,
                _ => skip(wire_type, &mut buf)?,
            }
        }
        if let WireValue::StringMap(_) = value {
            let entries = &mut self.map_entries[map_start..];
            normalize(entries, |(k, _)| *k);
            let kept = unique_last(entries, |(k, _)| *k);
            self.map_entries.truncate(map_start + kept);
            value = WireValue::StringMap(Span {
                start: map_start,
                end: self.map_entries.len(),
            });
        }
        Ok((key_index, value))
    }

    /// An entry's value field; a message value seen again merges into `previous`.
    fn read_value(
        &mut self,
        whole: &[u8],
        previous: WireValue,
        wire_type: WireType,
        buf: &mut &[u8],
    ) -> Read<WireValue> {
        Ok(match previous {
            WireValue::Str(_) => WireValue::Str(sint32(varint(wire_type, buf)?)),
            WireValue::Int64(_) => WireValue::Int64(varint(wire_type, buf)? as i64),
            WireValue::Double(_) => WireValue::Double(f64::from_bits(fixed64(wire_type, buf)?)),
            WireValue::Bool(_) => WireValue::Bool(varint(wire_type, buf)? != 0),
            WireValue::Timestamp { seconds, nanos } => {
                let (seconds, nanos) = read_time(len_delimited(wire_type, buf)?, seconds, nanos)?;
                WireValue::Timestamp { seconds, nanos }
            }
            WireValue::Duration { seconds, nanos } => {
                let (seconds, nanos) = read_time(len_delimited(wire_type, buf)?, seconds, nanos)?;
                WireValue::Duration { seconds, nanos }
            }
            WireValue::Bytes(_) => {
                WireValue::Bytes(Span::of(whole, len_delimited(wire_type, buf)?))
            }
            WireValue::StringMap(span) => {
                self.read_string_map(len_delimited(wire_type, buf)?)?;
                WireValue::StringMap(span)
            }
        })
    }

    /// A `StringMap` message: its entries are appended to the map entries.
    fn read_string_map(&mut self, mut buf: &[u8]) -> Read<()> {
        while !buf.is_empty() {
            let (tag, wire_type) = key(&mut buf)?;
            if tag != 1 {
                skip(wire_type, &mut buf)?;
                continue;
            }
            let mut entry = len_delimited(wire_type, &mut buf)?;
            let (mut k, mut v) = (0, 0);
            while !entry.is_empty() {
                let (tag, wire_type) = key(&mut entry)?;
                match tag {
                    1 => k = sint32(varint(wire_type, &mut entry)?),
                    2 => v = sint32(varint(wire_type, &mut entry)?),
                    _ => skip(wire_type, &mut entry)?,
                }
            }
            self.map_entries.push((k, v));
        }
        Ok(())
    }
}

/// One attribute set of a [`ReportView`].
#[derive(Clone, Copy, Debug)]
pub struct AttrSet<'r> {
    words: WordList<'r>,
    attrs: &'r [(i32, WireValue)],
    map_entries: &'r [(i32, i32)],
}

impl<'r> AttrSet<'r> {
    /// The set's own `words` (empty when it uses the Report's `default_words`).
    pub fn words(&self) -> WordList<'r> {
        self.words
    }

    /// The attributes as (name index, value), by value map and then by name index.
    pub fn attrs(&self) -> &'r [(i32, WireValue)] {
        self.attrs
    }

    /// The bytes of a [`WireValue::Bytes`].
    pub fn bytes(&self, span: Span) -> &'r [u8] {
        self.words.bytes.get(span.range()).unwrap_or_default()
    }

    /// The (key index, value index) entries of a [`WireValue::StringMap`], by key.
    pub fn map_entries(&self, span: Span) -> &'r [(i32, i32)] {
        self.map_entries.get(span.range()).unwrap_or_default()
    }
}

/// A message dictionary: words as bytes, in the message.
#[derive(Clone, Copy, Debug)]
pub struct WordList<'r> {
    bytes: &'r [u8],
    spans: &'r [Span],
}

impl<'r> WordList<'r> {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Word `index`.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&'r [u8]> {
        self.bytes.get(self.spans.get(index)?.range())
    }
}

/// Sorts by `key` (stably) unless already in order.
fn normalize<T, K: Ord>(items: &mut [T], key: impl Fn(&T) -> K) {
    if !items.is_sorted_by_key(&key) {
        items.sort_by_key(key);
    }
}

/// Of sorted `items`, keeps the last of each run of equal keys (prost's maps keep the last
/// value of a key) at the front; returns how many are kept.
fn unique_last<T: Copy, K: PartialEq>(items: &mut [T], key: impl Fn(&T) -> K) -> usize {
    let mut kept = 0;
    for i in 0..items.len() {
        if kept > 0 && key(&items[kept - 1]) == key(&items[i]) {
            items[kept - 1] = items[i];
        } else {
            items[kept] = items[i];
            kept += 1;
        }
    }
    kept
}

/// A `google.protobuf.Timestamp` or `Duration` merged into (`seconds`, `nanos`).
fn read_time(mut buf: &[u8], mut seconds: i64, mut nanos: i32) -> Read<(i64, i32)> {
    while !buf.is_empty() {
        let (tag, wire_type) = key(&mut buf)?;
        match tag {
            1 => seconds = varint(wire_type, &mut buf)? as i64,
            2 => nanos = varint(wire_type, &mut buf)? as i32,
            _ => skip(wire_type, &mut buf)?,
        }
    }
    Ok((seconds, nanos))
}

#[inline]
fn key(buf: &mut &[u8]) -> Read<(u32, WireType)> {
    decode_key(buf).map_err(|_| Unreadable)
}

#[inline]
fn varint(wire_type: WireType, buf: &mut &[u8]) -> Read<u64> {
    if wire_type != WireType::Varint {
        return Err(Unreadable);
    }
    decode_varint(buf).map_err(|_| Unreadable)
}

/// prost's `sint32`: the varint truncated to 32 bits, then zig-zag decoded.
#[inline]
fn sint32(value: u64) -> i32 {
    let value = value as u32;
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

fn fixed64(wire_type: WireType, buf: &mut &[u8]) -> Read<u64> {
    if wire_type != WireType::SixtyFourBit {
        return Err(Unreadable);
    }
    let (bytes, rest) = buf.split_first_chunk::<8>().ok_or(Unreadable)?;
    *buf = rest;
    Ok(u64::from_le_bytes(*bytes))
}

#[inline]
fn len_delimited<'a>(wire_type: WireType, buf: &mut &'a [u8]) -> Read<&'a [u8]> {
    if wire_type != WireType::LengthDelimited {
        return Err(Unreadable);
    }
    let len = decode_varint(buf).map_err(|_| Unreadable)?;
    let len = usize::try_from(len).map_err(|_| Unreadable)?;
    if len > buf.len() {
        return Err(Unreadable);
    }
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

/// Skips an unknown field; groups are left to prost.
fn skip(wire_type: WireType, buf: &mut &[u8]) -> Read<()> {
    let len = match wire_type {
        WireType::Varint => return decode_varint(buf).map(|_| ()).map_err(|_| Unreadable),
        WireType::LengthDelimited => return len_delimited(wire_type, buf).map(|_| ()),
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::StartGroup | WireType::EndGroup => return Err(Unreadable),
    };
    *buf = buf.get(len..).ok_or(Unreadable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::wire::pb::istio::mixer::v1::{CompressedAttributes, StringMap};

    /// What a set means, from the view, in the owned message's terms.
    fn view_sets(view: &ReportView) -> Vec<CompressedAttributes> {
        (0..view.len())
            .map(|i| {
                let set = view.set(i).expect("set");
                let mut out = CompressedAttributes {
                    words: (0..set.words().len())
                        .map(|w| set.words().get(w).expect("word").to_vec())
                        .collect(),
                    ..Default::default()
                };
                for &(k, v) in set.attrs() {
                    match v {
                        WireValue::Str(v) => drop(out.strings.insert(k, v)),
                        WireValue::Int64(v) => drop(out.int64s.insert(k, v)),
                        WireValue::Double(v) => drop(out.doubles.insert(k, v)),
                        WireValue::Bool(v) => drop(out.bools.insert(k, v)),
                        WireValue::Timestamp { seconds, nanos } => drop(
                            out.timestamps
                                .insert(k, prost_types::Timestamp { seconds, nanos }),
                        ),
                        WireValue::Duration { seconds, nanos } => drop(
                            out.durations
                                .insert(k, prost_types::Duration { seconds, nanos }),
                        ),
                        WireValue::Bytes(span) => {
                            drop(out.bytes.insert(k, set.bytes(span).to_vec()))
                        }
                        WireValue::StringMap(span) => {
                            let entries = set.map_entries(span).iter().copied().collect();
                            drop(out.string_maps.insert(k, StringMap { entries }));
                        }
                    }
                }
                out
            })
            .collect()
    }

    /// The view reads exactly what prost decodes, or fails where prost fails.
    fn assert_same_as_prost(bytes: &[u8]) {
        let view = ReportView::decode(Bytes::copy_from_slice(bytes));
        match ReportRequest::decode(bytes) {
            Err(e) => assert_eq!(view.unwrap_err().to_string(), e.to_string()),
            Ok(request) => {
                let view = view.expect("prost decodes it, so must the view");
                assert_eq!(view_sets(&view), request.attributes);
                let defaults = view.default_words();
                let words: Vec<Vec<u8>> = (0..defaults.len())
                    .map(|w| defaults.get(w).expect("word").to_vec())
                    .collect();
                assert_eq!(words, request.default_words);
                assert_eq!(view.global_word_count(), request.global_word_count);
                assert_eq!(
                    view.repeated_attributes_semantics(),
                    request.repeated_attributes_semantics
                );
                // Its sets come out in prost's map order, keys unique.
                for i in 0..view.len() {
                    let attrs = view.set(i).expect("set").attrs();
                    assert!(attrs.is_sorted_by(|a, b| (a.1.rank(), a.0) < (b.1.rank(), b.0)));
                }
            }
        }
    }

    fn key(field: u32, wire_type: u8) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(u64::from(field << 3 | u32::from(wire_type)), &mut out);
        out
    }

    fn len_field(field: u32, body: &[u8]) -> Vec<u8> {
        let mut out = key(field, 2);
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    fn varint_field(field: u32, value: u64) -> Vec<u8> {
        let mut out = key(field, 0);
        prost::encoding::encode_varint(value, &mut out);
        out
    }

    /// A field of a `CompressedAttributes` (or an unknown one), as bytes.
    fn set_field() -> impl Strategy<Value = Vec<u8>> {
        let index = prop_oneof![-3i32..3, any::<i32>()].prop_map(|i| ((i << 1) ^ (i >> 31)) as u64);
        let entry = (
            1u32..=9,
            index.clone(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..4),
            any::<bool>(),
        );
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(|w| len_field(1, &w)),
            entry.prop_map(|(field, k, v, raw, twice)| {
                let field = field.max(2);
                let mut body = varint_field(1, k);
                let value = match field {
                    2 | 3 | 5 => varint_field(2, v),
                    4 => {
                        let mut out = key(2, 1);
                        out.extend_from_slice(&v.to_le_bytes());
                        out
                    }
                    6 | 7 => len_field(2, &[varint_field(1, v), varint_field(2, v >> 3)].concat()),
                    8 => len_field(2, &raw),
                    _ => len_field(
                        2,
                        &len_field(1, &[varint_field(1, k ^ 1), varint_field(2, v)].concat()),
                    ),
                };
                body.extend_from_slice(&value);
                if twice {
                    // A repeated value field: scalars keep the last, messages merge.
                    body.extend_from_slice(&value);
                }
                len_field(field, &body)
            }),
            (10u32..20, any::<u64>()).prop_map(|(f, v)| varint_field(f, v)),
        ]
    }

    proptest! {
        /// Sets of fields in any order, keys repeated, values merged, unknown fields:
        /// the view agrees with prost.
        #[test]
        fn arbitrary_field_orders_read_as_prost_decodes(
            sets in proptest::collection::vec(proptest::collection::vec(set_field(), 0..12), 0..4),
            defaults in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3), 0..3),
            semantics in 0u64..3,
        ) {
            let mut bytes = varint_field(4, semantics);
            for (i, set) in sets.iter().enumerate() {
                bytes.extend(len_field(1, &set.concat()));
                if let Some(word) = defaults.get(i) {
                    bytes.extend(len_field(2, word));
                }
            }
            bytes.extend(varint_field(3, 222));
            assert_same_as_prost(&bytes);
            // Truncated, it fails as prost fails (or reads as prost reads).
            for cut in [bytes.len() / 2, bytes.len().saturating_sub(1)] {
                assert_same_as_prost(&bytes[..cut]);
            }
        }

        /// Arbitrary bytes: the view and prost agree, errors included.
        #[test]
        fn arbitrary_bytes_read_as_prost_decodes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            assert_same_as_prost(&bytes);
        }
    }

    #[test]
    fn groups_and_malformed_input_are_left_to_prost() {
        // An unknown group field (field 15) inside a set: prost skips it.
        let set = [
            len_field(1, b"w"),
            key(15, 3),
            varint_field(1, 5),
            key(15, 4),
        ]
        .concat();
        let bytes = len_field(1, &set);
        assert_same_as_prost(&bytes);
        let view = ReportView::decode(Bytes::from(bytes)).unwrap();
        assert_eq!(view.set(0).unwrap().words().get(0), Some(&b"w"[..]));
        // Wrong wire type for a known field, and a field overrunning its set.
        assert_same_as_prost(&len_field(1, &varint_field(2, 1)));
        assert_same_as_prost(&[len_field(1, &[0x12, 0x05, 0x08]), vec![0, 0, 0]].concat());
    }

    #[test]
    fn envoy_batches_read_in_place() {
        let set = CompressedAttributes {
            strings: BTreeMap::from([(-1, -2), (3, 4)]),
            bytes: BTreeMap::from([(5, vec![10, 0, 0, 1])]),
            ..Default::default()
        };
        let request = ReportRequest {
            attributes: vec![set.clone(), set],
            default_words: vec![b"a.b".to_vec(), b"v".to_vec()],
            global_word_count: 222,
            repeated_attributes_semantics: 1,
        };
        let bytes = Bytes::from(request.encode_to_vec());
        let view = ReportView::decode(bytes.clone()).unwrap();
        assert_eq!(view_sets(&view), request.attributes);
        // Words and addresses borrow from the request bytes.
        let word = view.default_words().get(0).unwrap();
        assert!(bytes.as_ptr_range().contains(&word.as_ptr()));
        assert_eq!(view.len(), 2);
        assert!(view.set(2).is_none());
    }
}
