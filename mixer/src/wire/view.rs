//! [`ReportView`] and [`CheckView`]: a Report or a Check read straight from its bytes.
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

use super::pb::istio::mixer::v1::{CheckRequest, ReportRequest};

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

/// Where one set's words and attributes lie in its [`SetTables`].
#[derive(Clone, Debug, Default)]
struct SetSpans {
    words: Range<usize>,
    attrs: Range<usize>,
}

/// Flat tables that the `CompressedAttributes` of one message are read into: where each
/// word lies in the bytes, each set's attributes, each string map's entries. Shared by
/// [`ReportView`] (all its sets) and [`CheckView`] (its one set).
#[derive(Clone, Debug, Default)]
struct SetTables {
    words: Vec<Span>,
    /// Every set's attributes, by (value map, key), keys unique within a set and map.
    attrs: Vec<(i32, WireValue)>,
    /// Every string map's entries, by key, keys unique within a map.
    map_entries: Vec<(i32, i32)>,
}

/// The storage of one [`SetTables`], kept for reuse.
type TableStorage = (Vec<Span>, Vec<(i32, WireValue)>, Vec<(i32, i32)>);

/// Tables kept per thread: more than the Checks a thread has in flight at once is waste.
const POOLED_TABLES: usize = 8;
/// Tables whose vectors hold more entries than this (a huge request's) are not kept, so
/// the pool's memory stays small whatever a peer sent once.
const POOLED_TABLE_ENTRIES: usize = 4096;

thread_local! {
    static TABLE_POOL: std::cell::RefCell<Vec<TableStorage>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

impl Drop for SetTables {
    /// Hands the storage to this thread's pool (cleared), when it is worth keeping.
    fn drop(&mut self) {
        if !self.worth_keeping() {
            return;
        }
        let mut storage = (
            std::mem::take(&mut self.words),
            std::mem::take(&mut self.attrs),
            std::mem::take(&mut self.map_entries),
        );
        storage.0.clear();
        storage.1.clear();
        storage.2.clear();
        // A full pool, or one being torn down with its thread, drops the storage here.
        let _ = TABLE_POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut()
                && pool.len() < POOLED_TABLES
            {
                pool.push(storage);
            }
        });
    }
}

/// The input is not something the walk reads: prost decides.
struct Unreadable;

type Read<T> = Result<T, Unreadable>;

impl SetTables {
    /// Empty tables, with the storage of tables dropped earlier on this thread when there
    /// are some: a Check then reads its set without allocating.
    fn pooled() -> SetTables {
        let recycled = TABLE_POOL
            .try_with(|pool| pool.try_borrow_mut().ok()?.pop())
            .ok()
            .flatten();
        let Some((words, attrs, map_entries)) = recycled else {
            return SetTables::default();
        };
        SetTables {
            words,
            attrs,
            map_entries,
        }
    }

    /// Whether these tables' storage is small enough to keep for reuse.
    fn worth_keeping(&self) -> bool {
        let capacity = self.words.capacity() + self.attrs.capacity() + self.map_entries.capacity();
        capacity > 0 && capacity <= POOLED_TABLE_ENTRIES
    }

    /// The set at `spans`, its strings in `bytes`.
    fn set<'r>(&'r self, bytes: &'r [u8], spans: &SetSpans) -> Option<AttrSet<'r>> {
        Some(AttrSet {
            words: WordList {
                bytes,
                spans: self.words.get(spans.words.clone())?,
            },
            attrs: self.attrs.get(spans.attrs.clone())?,
            map_entries: &self.map_entries,
        })
    }

    /// One `CompressedAttributes`.
    fn read_set(&mut self, whole: &[u8], mut buf: &[u8]) -> Read<SetSpans> {
        let words = self.words.len();
        let attrs = self.attrs.len();
        while !buf.is_empty() {
            let (tag, wire_type) = key(&mut buf)?;
            match tag {
                1 => {
                    let word = len_delimited(wire_type, &mut buf)?;
                    self.words.push(Span::of(whole, word));
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
        Ok(SetSpans {
            words: words..self.words.len(),
            attrs: attrs..self.attrs.len(),
        })
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

/// A `ReportRequest`, read from its bytes; see the module documentation.
/// What the two request views share: a walk over the message's bytes, with prost behind it
/// for whatever the walk does not read (so malformed input gets prost's error).
trait RequestView: Default {
    type Message: Message + Default;

    /// Reads the message's fields into the view.
    fn walk(&mut self, whole: &[u8]) -> Read<()>;

    /// The tables the walk fills.
    fn tables(&mut self) -> &mut SetTables;

    /// The bytes the view's spans point into.
    fn bytes(&mut self) -> &mut Bytes;
}

fn decode_view<V: RequestView>(bytes: Bytes) -> Result<V, prost::DecodeError> {
    let bytes = match read_view(bytes) {
        Ok(view) => return Ok(view),
        Err(bytes) => bytes,
    };
    let request = V::Message::decode(bytes)?;
    Ok(view_of(&request))
}

fn view_of<V: RequestView>(request: &V::Message) -> V {
    read_view(Bytes::from(request.encode_to_vec()))
        .unwrap_or_else(|_| unreachable!("prost's own encoding is readable"))
}

/// The view, or the bytes back when the walk does not read them.
fn read_view<V: RequestView>(bytes: Bytes) -> Result<V, Bytes> {
    let mut view = V::default();
    *view.tables() = SetTables::pooled();
    if view.walk(&bytes).is_err() {
        return Err(bytes);
    }
    *view.bytes() = bytes;
    Ok(view)
}

#[derive(Clone, Debug, Default)]
pub struct ReportView {
    bytes: Bytes,
    semantics: i32,
    global_word_count: u32,
    default_words: Vec<Span>,
    sets: Vec<SetSpans>,
    tables: SetTables,
}

impl RequestView for ReportView {
    type Message = ReportRequest;

    fn walk(&mut self, whole: &[u8]) -> Read<()> {
        self.read_request(whole)
    }

    fn tables(&mut self) -> &mut SetTables {
        &mut self.tables
    }

    fn bytes(&mut self) -> &mut Bytes {
        &mut self.bytes
    }
}

impl ReportView {
    /// Reads a `ReportRequest`; the error is prost's for malformed input.
    pub fn decode(bytes: Bytes) -> Result<ReportView, prost::DecodeError> {
        decode_view(bytes)
    }

    /// The view of a message (for clients, tests and benchmarks that hold one).
    pub fn from_request(request: &ReportRequest) -> ReportView {
        view_of(request)
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
        self.tables.set(&self.bytes, self.sets.get(index)?)
    }

    fn read_request(&mut self, whole: &[u8]) -> Read<()> {
        let mut buf = whole;
        while !buf.is_empty() {
            let (tag, wire_type) = key(&mut buf)?;
            match tag {
                1 => {
                    let set = len_delimited(wire_type, &mut buf)?;
                    let spans = self.tables.read_set(whole, set)?;
                    self.sets.push(spans);
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
}

/// One requested quota of a [`CheckView`] (`CheckRequest.quotas`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaParams<'r> {
    pub name: &'r str,
    pub amount: i64,
    pub best_effort: bool,
}

/// A quota entry as read: its name's place in the bytes.
#[derive(Clone, Copy, Debug, Default)]
struct QuotaSpan {
    name: Span,
    amount: i64,
    best_effort: bool,
}

/// A `CheckRequest`, read from its bytes as [`ReportView`] reads a Report: its one
/// attribute set into `SetTables`, the deduplication id and quota names as places in
/// the bytes (checked to be UTF-8, as prost checks `string` fields). What the walk does
/// not read (malformed input, groups, `attributes` given twice, which prost merges) is
/// left to prost, whose error is the answer.
#[derive(Clone, Debug, Default)]
pub struct CheckView {
    bytes: Bytes,
    global_word_count: u32,
    deduplication_id: Span,
    /// `None` when the message carries no `attributes` field.
    attributes: Option<SetSpans>,
    tables: SetTables,
    /// By name, names unique (prost's ordered map, the last entry of a name kept).
    quotas: Vec<QuotaSpan>,
}

impl RequestView for CheckView {
    type Message = CheckRequest;

    fn walk(&mut self, whole: &[u8]) -> Read<()> {
        self.read_request(whole)
    }

    fn tables(&mut self) -> &mut SetTables {
        &mut self.tables
    }

    fn bytes(&mut self) -> &mut Bytes {
        &mut self.bytes
    }
}

impl CheckView {
    /// Reads a `CheckRequest`; the error is prost's for malformed input.
    pub fn decode(bytes: Bytes) -> Result<CheckView, prost::DecodeError> {
        decode_view(bytes)
    }

    /// The view of a message (for clients, tests and benchmarks that hold one).
    pub fn from_request(request: &CheckRequest) -> CheckView {
        view_of(request)
    }

    pub fn global_word_count(&self) -> u32 {
        self.global_word_count
    }

    /// `deduplication_id`.
    pub fn deduplication_id(&self) -> &str {
        self.text(self.deduplication_id)
    }

    /// `attributes` (empty when absent), with its own words.
    pub fn attributes(&self) -> AttrSet<'_> {
        let empty = SetSpans::default();
        let spans = self.attributes.as_ref().unwrap_or(&empty);
        self.tables
            .set(&self.bytes, spans)
            .unwrap_or_else(|| unreachable!("the spans are the tables' own"))
    }

    /// The requested quotas, by name.
    pub fn quotas(&self) -> impl ExactSizeIterator<Item = QuotaParams<'_>> + '_ {
        self.quotas.iter().map(|q| QuotaParams {
            name: self.text(q.name),
            amount: q.amount,
            best_effort: q.best_effort,
        })
    }

    /// A string field's text; read only after its bytes were checked to be UTF-8.
    fn text(&self, span: Span) -> &str {
        self.bytes
            .get(span.range())
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    fn read_request(&mut self, whole: &[u8]) -> Read<()> {
        let mut buf = whole;
        while !buf.is_empty() {
            let (tag, wire_type) = key(&mut buf)?;
            match tag {
                1 => {
                    let set = len_delimited(wire_type, &mut buf)?;
                    if self.attributes.is_some() {
                        // prost merges a message field given twice: left to it.
                        return Err(Unreadable);
                    }
                    self.attributes = Some(self.tables.read_set(whole, set)?);
                }
                2 => self.global_word_count = varint(wire_type, &mut buf)? as u32,
                3 => self.deduplication_id = utf8(whole, len_delimited(wire_type, &mut buf)?)?,
                4 => {
                    let entry = read_quota(whole, len_delimited(wire_type, &mut buf)?)?;
                    self.quotas.push(entry);
                }
                _ => skip(wire_type, &mut buf)?,
            }
        }
        let quotas = &mut self.quotas;
        if !quotas.is_sorted_by(|a, b| whole[a.name.range()] < whole[b.name.range()]) {
            quotas.sort_by(|a, b| whole[a.name.range()].cmp(&whole[b.name.range()]));
        }
        let kept = unique_last(quotas, |q| &whole[q.name.range()]);
        quotas.truncate(kept);
        Ok(())
    }
}

/// One entry of `CheckRequest.quotas`: a name and its `QuotaParams`, missing fields at
/// their defaults and a params message given twice merged.
fn read_quota(whole: &[u8], mut buf: &[u8]) -> Read<QuotaSpan> {
    let mut quota = QuotaSpan::default();
    while !buf.is_empty() {
        let (tag, wire_type) = key(&mut buf)?;
        match tag {
            1 => quota.name = utf8(whole, len_delimited(wire_type, &mut buf)?)?,
            2 => {
                let mut params = len_delimited(wire_type, &mut buf)?;
                while !params.is_empty() {
                    let (tag, wire_type) = key(&mut params)?;
                    match tag {
                        1 => quota.amount = varint(wire_type, &mut params)? as i64,
                        2 => quota.best_effort = varint(wire_type, &mut params)? != 0,
                        _ => skip(wire_type, &mut params)?,
                    }
                }
            }
            _ => skip(wire_type, &mut buf)?,
        }
    }
    Ok(quota)
}

/// A `string` field: its place in the bytes, once checked to be UTF-8 (prost's check;
/// its error is the answer otherwise).
fn utf8(whole: &[u8], field: &[u8]) -> Read<Span> {
    std::str::from_utf8(field).map_err(|_| Unreadable)?;
    Ok(Span::of(whole, field))
}

/// One attribute set of a [`ReportView`] or a [`CheckView`].
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
    use crate::wire::pb::istio::mixer::v1::{CompressedAttributes, StringMap, check_request};

    /// What a set means, from the view, in the owned message's terms.
    fn view_sets(view: &ReportView) -> Vec<CompressedAttributes> {
        (0..view.len())
            .map(|i| set_message(view.set(i).expect("set")))
            .collect()
    }

    /// One set of a view as the owned message.
    fn set_message(set: AttrSet<'_>) -> CompressedAttributes {
        {
            {
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
            }
        }
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

    /// The Check view reads exactly what prost decodes, or fails where prost fails, with
    /// prost's error.
    fn assert_check_same_as_prost(bytes: &[u8]) {
        let view = CheckView::decode(Bytes::copy_from_slice(bytes));
        match CheckRequest::decode(bytes) {
            Err(e) => assert_eq!(view.unwrap_err().to_string(), e.to_string()),
            Ok(request) => {
                let view = view.expect("prost decodes it, so must the view");
                assert_eq!(
                    set_message(view.attributes()),
                    request.attributes.clone().unwrap_or_default()
                );
                assert_eq!(view.global_word_count(), request.global_word_count);
                assert_eq!(view.deduplication_id(), request.deduplication_id);
                let quotas: Vec<(String, check_request::QuotaParams)> = view
                    .quotas()
                    .map(|q| {
                        let params = check_request::QuotaParams {
                            amount: q.amount,
                            best_effort: q.best_effort,
                        };
                        (q.name.to_owned(), params)
                    })
                    .collect();
                let expected: Vec<_> = request.quotas.into_iter().collect();
                assert_eq!(quotas, expected);
            }
        }
    }

    /// A field of a `CheckRequest` (or an unknown one), as bytes.
    fn check_field() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![
            3 => "[a-z]{0,3}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 0..4),
        ];
        let params =
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(amount, flag, twice)| {
                let body = [varint_field(1, amount), varint_field(2, flag % 3)].concat();
                let field = len_field(2, &body);
                if twice {
                    [field.clone(), len_field(2, &varint_field(2, flag))].concat()
                } else {
                    field
                }
            });
        prop_oneof![
            proptest::collection::vec(set_field(), 0..8)
                .prop_map(|set| len_field(1, &set.concat())),
            any::<u64>().prop_map(|v| varint_field(2, v)),
            text.clone().prop_map(|id| len_field(3, &id)),
            (text, params).prop_map(|(name, params)| {
                len_field(4, &[len_field(1, &name), params].concat())
            }),
            (10u32..20, any::<u64>()).prop_map(|(f, v)| varint_field(f, v)),
        ]
    }

    proptest! {
        /// Check fields in any order, repeated (the attributes merged, the last quota of a
        /// name kept), unknown fields, words and names that are not UTF-8: the view agrees
        /// with prost, and cut short anywhere it fails as prost fails.
        #[test]
        fn check_requests_read_as_prost_decodes(
            fields in proptest::collection::vec(check_field(), 0..8),
        ) {
            let bytes = fields.concat();
            assert_check_same_as_prost(&bytes);
            for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                assert_check_same_as_prost(&bytes[..cut]);
            }
        }

        /// Arbitrary bytes as a Check: the view and prost agree, errors included.
        #[test]
        fn arbitrary_bytes_read_as_a_check_as_prost_decodes(
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            assert_check_same_as_prost(&bytes);
        }
    }

    #[test]
    fn malformed_checks_fail_with_prosts_errors() {
        let set = len_field(
            1,
            &len_field(2, &[varint_field(1, 2), varint_field(2, 1)].concat()),
        );
        // Truncated: a length past the end, a varint cut short, a fixed64 cut short.
        for bytes in [
            set[..set.len() - 1].to_vec(),
            vec![0x10, 0xff],
            len_field(1, &len_field(4, &[key(2, 1), vec![1, 2, 3]].concat())),
        ] {
            assert_check_same_as_prost(&bytes);
            assert!(CheckView::decode(Bytes::from(bytes)).is_err());
        }
        // Wrong wire types: `global_word_count` length-delimited, a string value fixed64,
        // a quota's amount length-delimited.
        for bytes in [
            len_field(2, b"x"),
            len_field(
                1,
                &len_field(2, &[varint_field(1, 2), key(2, 1), vec![0; 8]].concat()),
            ),
            len_field(
                4,
                &[len_field(1, b"q"), len_field(2, &len_field(1, b"1"))].concat(),
            ),
        ] {
            assert_check_same_as_prost(&bytes);
            let e = CheckView::decode(Bytes::from(bytes)).unwrap_err();
            assert!(e.to_string().contains("invalid wire type"), "{e}");
        }
        // Strings that are not UTF-8: the deduplication id, a quota's name.
        for bytes in [
            len_field(3, &[b'a', 0xff]),
            len_field(4, &len_field(1, &[0xc3, 0x28])),
        ] {
            assert_check_same_as_prost(&bytes);
            let e = CheckView::decode(Bytes::from(bytes)).unwrap_err();
            assert!(e.to_string().contains("UTF-8"), "{e}");
        }
    }

    #[test]
    fn repeated_check_fields_mean_what_prost_makes_of_them() {
        let quota = |name: &[u8], amount: u64| {
            len_field(
                4,
                &[len_field(1, name), len_field(2, &varint_field(1, amount))].concat(),
            )
        };
        let entry =
            |k: u64, v: u64| len_field(2, &[varint_field(1, k), varint_field(2, v)].concat());
        let bytes = [
            quota(b"b", 1),
            quota(b"a", 2),
            quota(b"b", 3),
            len_field(1, &[len_field(1, b"w"), entry(2, 1)].concat()),
            len_field(3, b"id-1"),
            len_field(3, b"id-2"),
            // `attributes` again: prost merges it into the first.
            len_field(1, &[len_field(1, b"v"), entry(2, 3), entry(4, 5)].concat()),
        ]
        .concat();
        assert_check_same_as_prost(&bytes);
        let view = CheckView::decode(Bytes::from(bytes)).unwrap();
        let quotas: Vec<_> = view.quotas().map(|q| (q.name, q.amount)).collect();
        assert_eq!(
            quotas,
            [("a", 2), ("b", 3)],
            "by name, the last of a name kept"
        );
        assert_eq!(view.deduplication_id(), "id-2");
        let attrs = view.attributes();
        assert_eq!(attrs.words().len(), 2);
        assert_eq!(
            attrs.attrs(),
            &[(1, WireValue::Str(-2)), (2, WireValue::Str(-3))]
        );
    }

    #[test]
    fn check_strings_borrow_from_the_request() {
        let request = CheckRequest {
            attributes: Some(CompressedAttributes {
                words: vec![b"w".to_vec()],
                strings: BTreeMap::from([(1, -1)]),
                ..Default::default()
            }),
            global_word_count: 222,
            deduplication_id: "dedup".to_owned(),
            quotas: BTreeMap::from([(
                "requestcount".to_owned(),
                check_request::QuotaParams {
                    amount: 1,
                    best_effort: true,
                },
            )]),
        };
        let bytes = Bytes::from(request.encode_to_vec());
        let view = CheckView::decode(bytes.clone()).unwrap();
        assert!(
            bytes
                .as_ptr_range()
                .contains(&view.deduplication_id().as_ptr())
        );
        let word = view.attributes().words().get(0).unwrap();
        assert!(bytes.as_ptr_range().contains(&word.as_ptr()));
        let quota = view.quotas().next().unwrap();
        assert_eq!(
            (quota.name, quota.amount, quota.best_effort),
            ("requestcount", 1, true)
        );
        // No attributes at all: an empty set.
        let empty = CheckView::decode(Bytes::new()).unwrap();
        assert!(empty.attributes().attrs().is_empty());
        assert_eq!(empty.quotas().len(), 0);
    }
}
