//! [`ProtoBag`]: the attribute bag of one request, decoded from `CompressedAttributes`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use expr_lang::golib::time::Timestamp;
use expr_lang::{AttrKey, Bag, StringMap, StringMapRef, Value};

use super::dictionary::GLOBAL_WORDS;
use super::error::{DecodeError, DecodeErrorKind, IndexSite, Limit, MapKind, Unresolved};
use super::limits::DecodeLimits;
use super::table::AttrTable;
use crate::wire::pb::istio::mixer::v1::CompressedAttributes;
use crate::wire::view::{AttrSet, WireValue, WordList};

/// 0001-01-01T00:00:00Z, the smallest timestamp Go's proto conversion accepts.
const MIN_TIMESTAMP_SECS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, the largest.
const MAX_TIMESTAMP_SECS: i64 = 253_402_300_799;
const NANOS_PER_SEC: i32 = 1_000_000_000;
/// String maps up to this size are searched linearly.
const LINEAR_SCAN_MAX: usize = 16;
/// What one attribute costs in [`ProtoBag::decoded_bytes`] besides its string bytes.
const ATTRIBUTE_OVERHEAD: usize = 16;

/// One decoded attribute value. Strings and bytes borrow from the request (or are global
/// words); a string map is an index into the bag's map storage.
#[derive(Clone, Copy, Debug)]
enum Slot<'r> {
    Str(&'r str),
    Int64(i64),
    Double(f64),
    Bool(bool),
    Timestamp(Timestamp),
    Duration(i64),
    Bytes(&'r [u8]),
    Map(u32),
}

impl Slot<'_> {
    fn kind(&self) -> MapKind {
        match self {
            Slot::Str(_) => MapKind::Strings,
            Slot::Int64(_) => MapKind::Int64s,
            Slot::Double(_) => MapKind::Doubles,
            Slot::Bool(_) => MapKind::Bools,
            Slot::Timestamp(_) => MapKind::Timestamps,
            Slot::Duration(_) => MapKind::Durations,
            Slot::Bytes(_) => MapKind::Bytes,
            Slot::Map(_) => MapKind::StringMaps,
        }
    }
}

/// A decoded STRING_MAP value: entries sorted by key, keys unique, strings borrowed from the
/// request.
#[derive(Clone, Debug, Default)]
pub struct ProtoStringMap<'r> {
    entries: Vec<(&'r str, &'r str)>,
    /// Key and value bytes of all entries, for [`ProtoBag::decoded_bytes`].
    bytes: usize,
}

impl<'r> ProtoStringMap<'r> {
    /// The entries, sorted by key.
    pub fn entries(&self) -> &[(&'r str, &'r str)] {
        &self.entries
    }

    /// Sorts the entries and drops repeated keys. Two different indexes can name the same
    /// string (a global word and an equal message word); the smallest value is kept so the
    /// result does not depend on the wire map's order.
    fn normalize(&mut self) {
        self.entries
            .sort_unstable_by(|a, b| a.0.cmp(b.0).then_with(|| a.1.cmp(b.1)));
        self.entries.dedup_by(|later, earlier| later.0 == earlier.0);
    }
}

impl StringMap for ProtoStringMap<'_> {
    #[inline]
    fn get(&self, key: &str) -> Option<&str> {
        // Equality checks the length first, so a scan of a small map (typical headers and
        // labels) beats the branchy string ordering of a binary search.
        if self.entries.len() <= LINEAR_SCAN_MAX {
            return self
                .entries
                .iter()
                .find(|(k, _)| *k == key)
                .map(|&(_, v)| v);
        }
        let i = self.entries.binary_search_by(|(k, _)| (*k).cmp(key)).ok()?;
        self.entries.get(i).map(|&(_, v)| v)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        for &(k, v) in &self.entries {
            f(k, v);
        }
    }
}

/// A string map's place in a bag: its own, or shared with other bags (the bags of
/// DELTA_ENCODING sets share the maps they inherit instead of copying them).
#[derive(Clone, Debug)]
enum MapCell<'r> {
    Own(ProtoStringMap<'r>),
    Shared(Arc<ProtoStringMap<'r>>),
}

impl Default for MapCell<'_> {
    fn default() -> Self {
        MapCell::Own(ProtoStringMap::default())
    }
}

impl<'r> MapCell<'r> {
    #[inline]
    fn map(&self) -> &ProtoStringMap<'r> {
        match self {
            MapCell::Own(map) => map,
            MapCell::Shared(map) => map,
        }
    }
}

/// The attributes of one request (or one Report element), decoded from
/// `CompressedAttributes` and indexed by manifest id.
///
/// * Declared attributes live in a slot vector indexed by the [`AttrTable`]'s manifest ids,
///   so [`Bag::get`] with an id is an array index.
/// * Attributes the manifest does not declare live in a side list sorted by name.
/// * Strings borrow from the request (message words) or are `'static` global words; only
///   the slot vector, the bookkeeping lists and one vector per STRING_MAP are allocated.
///   [`ProtoBag::decode_into`] reuses all of them.
///
/// Decoding is strict: every dictionary index must resolve and every attribute name may
/// occur once; any violation is a [`DecodeError`] naming the index or attribute.
#[derive(Clone, Default)]
pub struct ProtoBag<'r> {
    /// By manifest id.
    slots: Vec<Option<Slot<'r>>>,
    /// Ids of the filled slots, with the attribute name, in decode order.
    present: Vec<(u32, &'r str)>,
    /// Undeclared attributes, sorted by name, names unique.
    extras: Vec<(&'r str, Slot<'r>)>,
    /// String map storage; `maps[..maps_used]` are live, the rest are kept for reuse.
    maps: Vec<MapCell<'r>>,
    maps_used: usize,
    /// Indexes below `maps_used` whose map a DELTA set replaced with a value of another
    /// type: reused before `maps_used` grows, so alternating types cannot grow the storage.
    free_maps: Vec<u32>,
    /// The size of the attributes present, see [`ProtoBag::decoded_bytes`].
    bytes: usize,
    /// The limits decoding enforces.
    limits: DecodeLimits,
}

impl<'r> ProtoBag<'r> {
    /// An empty bag with a slot for every id of `table`, in the storage of a bag
    /// [recycled](ProtoBag::recycle) earlier on this thread when there is one.
    pub fn new(table: &AttrTable) -> ProtoBag<'r> {
        let mut bag = BagStorage::pooled().map_or_else(ProtoBag::default, BagStorage::into_bag);
        bag.slots.resize(table.len(), None);
        bag
    }

    /// Hands this bag's storage to this thread's pool, for the next [`ProtoBag::new`]:
    /// a server calls it once a request is answered, so that decoding the next one
    /// allocates nothing. Storage grown large by a big request is freed instead.
    pub fn recycle(self) {
        if let Some(storage) = BagStorage::of(self) {
            storage.keep();
        }
    }

    /// Makes every live string map shareable, so that clones of this bag share them
    /// instead of copying them (the DELTA_ENCODING accumulator, before each set is handed
    /// out).
    pub fn share_maps(&mut self) {
        let live = self.maps_used.min(self.maps.len());
        for cell in &mut self.maps[..live] {
            if let MapCell::Own(map) = cell {
                *cell = MapCell::Shared(Arc::new(std::mem::take(map)));
            }
        }
    }

    /// An empty bag that enforces `limits` when decoding.
    pub fn with_limits(table: &AttrTable, limits: DecodeLimits) -> ProtoBag<'r> {
        ProtoBag {
            limits,
            ..ProtoBag::new(table)
        }
    }

    /// Decodes `attrs`, resolving negative indexes against `message_words` (the element's
    /// own `words`, or for a Report element with empty `words`, `ReportRequest.default_words`).
    pub fn decode<W: AsRef<[u8]>>(
        attrs: &'r CompressedAttributes,
        message_words: &'r [W],
        table: &AttrTable,
    ) -> Result<ProtoBag<'r>, DecodeError> {
        ProtoBag::decode_limited(attrs, message_words, table, DecodeLimits::default())
    }

    /// As [`ProtoBag::decode`], with explicit limits.
    pub fn decode_limited<W: AsRef<[u8]>>(
        attrs: &'r CompressedAttributes,
        message_words: &'r [W],
        table: &AttrTable,
        limits: DecodeLimits,
    ) -> Result<ProtoBag<'r>, DecodeError> {
        let mut bag = ProtoBag::with_limits(table, limits);
        bag.fill(message_attrs(attrs), message_words, table)?;
        Ok(bag)
    }

    /// Decodes an attribute set read from the request bytes, resolving negative indexes
    /// against `message_words` (the set's own words, or the Report's `default_words`).
    pub fn decode_wire(
        set: AttrSet<'r>,
        message_words: WordList<'r>,
        table: &AttrTable,
        limits: DecodeLimits,
    ) -> Result<ProtoBag<'r>, DecodeError> {
        let mut bag = ProtoBag::with_limits(table, limits);
        bag.fill(wire_attrs(set), message_words, table)?;
        Ok(bag)
    }

    /// As [`ProtoBag::decode`], reusing this bag's allocations: the previous contents are
    /// cleared (only the slots that were set are touched). On error the bag is left empty.
    pub fn decode_into<W: AsRef<[u8]>>(
        &mut self,
        attrs: &'r CompressedAttributes,
        message_words: &'r [W],
        table: &AttrTable,
    ) -> Result<(), DecodeError> {
        self.clear();
        if self.slots.len() != table.len() {
            self.slots.resize(table.len(), None);
        }
        let result = self.fill(message_attrs(attrs), message_words, table);
        if result.is_err() {
            self.clear();
        }
        result
    }

    /// DELTA_ENCODING: the attributes of `attrs` are added to the bag, replacing values of
    /// attributes already present; nothing is removed. `attrs` is decoded completely before
    /// the bag is touched, so on a decoding error the bag is unchanged. When the result has
    /// more attributes than the limit allows it is kept (it only grows, so every later set
    /// of the Report is over the limit too) and the error says so.
    pub fn apply_delta<W: AsRef<[u8]>>(
        &mut self,
        attrs: &'r CompressedAttributes,
        message_words: &'r [W],
        table: &AttrTable,
    ) -> Result<(), DecodeError> {
        let delta = ProtoBag::decode_limited(attrs, message_words, table, self.limits)?;
        self.merge_checked(delta)
    }

    /// As [`ProtoBag::apply_delta`], for a set read from the request bytes.
    pub fn apply_wire_delta(
        &mut self,
        set: AttrSet<'r>,
        message_words: WordList<'r>,
        table: &AttrTable,
    ) -> Result<(), DecodeError> {
        let delta = ProtoBag::decode_wire(set, message_words, table, self.limits)?;
        self.merge_checked(delta)
    }

    /// Merges a decoded delta, then checks the attribute count.
    fn merge_checked(&mut self, delta: ProtoBag<'r>) -> Result<(), DecodeError> {
        self.merge(delta);
        let max = self.limits.max_attributes_per_set;
        if self.len() > max {
            return Err(DecodeError::new(DecodeErrorKind::OverLimit {
                limit: Limit::AttributesPerSet,
                max,
            }));
        }
        Ok(())
    }

    /// Removes every attribute, keeping the allocations.
    pub fn clear(&mut self) {
        for &(id, _) in &self.present {
            if let Some(cell) = self.slots.get_mut(id as usize) {
                *cell = None;
            }
        }
        self.present.clear();
        self.extras.clear();
        self.maps_used = 0;
        self.free_maps.clear();
        self.bytes = 0;
    }

    /// The size of the attributes present: string, byte and map entry bytes plus a fixed
    /// cost per attribute. The Report path sums it over a request's sets to bound the work
    /// one request can ask for.
    pub fn decoded_bytes(&self) -> usize {
        self.bytes
    }

    /// Number of attributes present.
    pub fn len(&self) -> usize {
        self.present.len() + self.extras.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of attribute `name`, whatever its id (a linear scan for declared attributes;
    /// prefer [`Bag::get`] with the manifest id).
    pub fn get_by_name(&self, name: &str) -> Option<Value<'_>> {
        if let Ok(i) = self.extras.binary_search_by(|(n, _)| (*n).cmp(name)) {
            return self.extras.get(i).and_then(|(_, slot)| self.value_of(slot));
        }
        let &(id, _) = self.present.iter().find(|(_, n)| *n == name)?;
        self.slots
            .get(id as usize)?
            .as_ref()
            .and_then(|slot| self.value_of(slot))
    }

    /// Every present attribute: declared ones in decode order, then undeclared ones by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Value<'_>)> {
        let declared = self.present.iter().filter_map(move |&(id, name)| {
            let slot = self.slots.get(id as usize)?.as_ref()?;
            Some((name, self.value_of(slot)?))
        });
        let undeclared = self
            .extras
            .iter()
            .filter_map(move |(name, slot)| Some((*name, self.value_of(slot)?)));
        declared.chain(undeclared)
    }

    #[inline]
    fn value_of(&self, slot: &Slot<'r>) -> Option<Value<'_>> {
        Some(match *slot {
            Slot::Str(s) => Value::String(Cow::Borrowed(s)),
            Slot::Int64(v) => Value::Int64(v),
            Slot::Double(v) => Value::Double(v),
            Slot::Bool(v) => Value::Bool(v),
            Slot::Timestamp(t) => Value::Timestamp(t),
            Slot::Duration(d) => Value::Duration(d),
            Slot::Bytes(b) => Value::IpAddress(Cow::Borrowed(b)),
            Slot::Map(i) => {
                let map = self.maps.get(..self.maps_used)?.get(i as usize)?;
                Value::StringMap(StringMapRef::Borrowed(map.map()))
            }
        })
    }

    /// Stores an attribute found while decoding one message.
    /// What `slot` adds to [`ProtoBag::decoded_bytes`].
    fn slot_bytes(&self, slot: &Slot<'r>) -> usize {
        ATTRIBUTE_OVERHEAD
            + match slot {
                Slot::Str(s) => s.len(),
                Slot::Bytes(b) => b.len(),
                Slot::Map(i) => self.maps.get(*i as usize).map_or(0, |m| m.map().bytes),
                _ => 0,
            }
    }

    #[inline]
    fn put(&mut self, name: &'r str, id: u32, slot: Slot<'r>) -> Result<(), DecodeError> {
        self.bytes += self.slot_bytes(&slot);
        if id != AttrKey::NO_ID
            && let Some(cell) = self.slots.get_mut(id as usize)
        {
            if let Some(prev) = cell {
                return Err(duplicate(name, prev.kind(), slot.kind()));
            }
            *cell = Some(slot);
            self.present.push((id, name));
            return Ok(());
        }
        self.extras.push((name, slot));
        Ok(())
    }

    /// A cleared map from the reuse pool.
    fn alloc_map(&mut self) -> (u32, &mut ProtoStringMap<'r>) {
        let i = self.maps_used;
        if i == self.maps.len() {
            self.maps.push(MapCell::default());
        }
        self.maps_used += 1;
        let cell = &mut self.maps[i];
        // A shared map is left to the bags that share it; this bag takes a fresh one.
        if let MapCell::Shared(_) = cell {
            *cell = MapCell::default();
        }
        let MapCell::Own(map) = cell else {
            unreachable!("made its own above")
        };
        map.entries.clear();
        map.bytes = 0;
        (i as u32, map)
    }

    fn fill<M: ExactSizeIterator<Item = (i32, i32)>>(
        &mut self,
        (count, attrs): (usize, impl Iterator<Item = (i32, Raw<'r, M>)>),
        words: impl Words<'r>,
        table: &AttrTable,
    ) -> Result<(), DecodeError> {
        self.limits.check(Limit::AttributesPerSet, count)?;
        self.present.reserve(count);
        // Value map by value map, each by key: the order the Go server's eager decoder
        // walks them in, which decides which error a bad set reports.
        for (k, raw) in attrs {
            let (name, id) = resolve_name(k, words, table)?;
            let slot = match raw {
                Raw::Str(v) => Slot::Str(resolve_word(v, words).map_err(|reason| {
                    index_error(
                        IndexSite::Value {
                            attribute: name.to_owned(),
                        },
                        v,
                        reason,
                    )
                })?),
                Raw::Int64(v) => Slot::Int64(v),
                Raw::Double(v) => Slot::Double(v),
                Raw::Bool(v) => Slot::Bool(v),
                Raw::Timestamp(seconds, nanos) => Slot::Timestamp(timestamp(name, seconds, nanos)?),
                Raw::Duration(seconds, nanos) => {
                    let nanos_total = duration_nanos(seconds, nanos).map_err(|reason| {
                        DecodeError::new(DecodeErrorKind::InvalidDuration {
                            attribute: name.to_owned(),
                            seconds,
                            nanos,
                            reason,
                        })
                    })?;
                    Slot::Duration(nanos_total)
                }
                Raw::Bytes(v) => Slot::Bytes(v),
                Raw::Map(entries) => self.fill_map(name, entries, words)?,
            };
            self.put(name, id, slot)?;
        }
        self.finish_extras()
    }

    /// Decodes a STRING_MAP value into the map storage.
    fn fill_map(
        &mut self,
        name: &'r str,
        entries: impl ExactSizeIterator<Item = (i32, i32)>,
        words: impl Words<'r>,
    ) -> Result<Slot<'r>, DecodeError> {
        self.limits.check(Limit::StringMapEntries, entries.len())?;
        let (index, map) = self.alloc_map();
        map.entries.reserve(entries.len());
        for (mk, mv) in entries {
            let key = resolve_word(mk, words).map_err(|reason| {
                index_error(
                    IndexSite::MapKey {
                        attribute: name.to_owned(),
                    },
                    mk,
                    reason,
                )
            })?;
            let value = resolve_word(mv, words).map_err(|reason| {
                index_error(
                    IndexSite::MapValue {
                        attribute: name.to_owned(),
                        key: key.to_owned(),
                    },
                    mv,
                    reason,
                )
            })?;
            map.bytes += key.len() + value.len();
            map.entries.push((key, value));
        }
        map.normalize();
        Ok(Slot::Map(index))
    }

    /// Sorts the undeclared attributes by name and rejects repeated names.
    fn finish_extras(&mut self) -> Result<(), DecodeError> {
        if self.extras.len() > 1 {
            // Stable, so a repeated name reports its maps in decode order.
            self.extras.sort_by(|a, b| a.0.cmp(b.0));
            if let Some(pair) = self.extras.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(duplicate(pair[0].0, pair[0].1.kind(), pair[1].1.kind()));
            }
        }
        Ok(())
    }

    /// Moves the attributes of `delta` (a freshly decoded bag) into this one, replacing
    /// values of the same name.
    fn merge(&mut self, mut delta: ProtoBag<'r>) {
        if self.slots.len() < delta.slots.len() {
            self.slots.resize(delta.slots.len(), None);
        }
        for &(id, name) in &delta.present {
            let Some(Some(slot)) = delta.slots.get(id as usize).copied() else {
                continue;
            };
            let prev = self.slots.get(id as usize).copied().flatten();
            self.forget_bytes(prev.as_ref());
            let slot = self.adopt(slot, prev, &mut delta.maps);
            self.bytes += self.slot_bytes(&slot);
            if let Some(cell) = self.slots.get_mut(id as usize) {
                if cell.is_none() {
                    self.present.push((id, name));
                }
                *cell = Some(slot);
            }
        }
        if delta.extras.is_empty() {
            return;
        }
        let old = std::mem::take(&mut self.extras);
        let mut merged = Vec::with_capacity(old.len() + delta.extras.len());
        let mut a = old.into_iter().peekable();
        let mut b = delta.extras.into_iter().peekable();
        loop {
            let order = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.0.cmp(y.0),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            match order {
                Ordering::Less => merged.extend(a.next()),
                Ordering::Greater => {
                    if let Some((name, slot)) = b.next() {
                        let slot = self.adopt(slot, None, &mut delta.maps);
                        self.bytes += self.slot_bytes(&slot);
                        merged.push((name, slot));
                    }
                }
                Ordering::Equal => {
                    if let (Some((_, prev)), Some((name, slot))) = (a.next(), b.next()) {
                        self.forget_bytes(Some(&prev));
                        let slot = self.adopt(slot, Some(prev), &mut delta.maps);
                        self.bytes += self.slot_bytes(&slot);
                        merged.push((name, slot));
                    }
                }
            }
        }
        self.extras = merged;
    }

    /// Takes a replaced value out of [`ProtoBag::decoded_bytes`].
    fn forget_bytes(&mut self, prev: Option<&Slot<'r>>) {
        if let Some(prev) = prev {
            self.bytes = self.bytes.saturating_sub(self.slot_bytes(prev));
        }
    }

    /// Rehomes a slot of another bag: a string map moves into this bag's storage (into the
    /// replaced map's place when the previous value was a map too).
    fn adopt(
        &mut self,
        slot: Slot<'r>,
        prev: Option<Slot<'r>>,
        their_maps: &mut [MapCell<'r>],
    ) -> Slot<'r> {
        let Slot::Map(i) = slot else {
            if let Some(Slot::Map(j)) = prev
                && let Some(cell) = self.maps.get_mut(j as usize)
            {
                // The replaced map's memory goes now; its index is reused.
                *cell = MapCell::default();
                self.free_maps.push(j);
            }
            return slot;
        };
        let map = their_maps
            .get_mut(i as usize)
            .map(std::mem::take)
            .unwrap_or_default();
        if let Some(Slot::Map(j)) = prev
            && let Some(target) = self
                .maps
                .get_mut(..self.maps_used)
                .and_then(|live| live.get_mut(j as usize))
        {
            *target = map;
            return Slot::Map(j);
        }
        if let Some(j) = self.free_maps.pop()
            && let Some(cell) = self.maps.get_mut(j as usize)
        {
            *cell = map;
            return Slot::Map(j);
        }
        let j = self.maps_used;
        match self.maps.get_mut(j) {
            Some(cell) => *cell = map,
            None => self.maps.push(map),
        }
        self.maps_used += 1;
        Slot::Map(j as u32)
    }
}

/// The storage of a recycled bag: its vectors, emptied, with no borrowed text left in
/// them (hence `'static`).
struct BagStorage {
    slots: Vec<Option<Slot<'static>>>,
    present: Vec<(u32, &'static str)>,
    extras: Vec<(&'static str, Slot<'static>)>,
    maps: Vec<MapCell<'static>>,
    free_maps: Vec<u32>,
}

/// Bags kept per thread: about the Checks a thread has in flight at once.
const POOLED_BAGS: usize = 8;
/// A bag whose vectors hold more entries than this (slots included) is freed, not kept.
const POOLED_BAG_ENTRIES: usize = 16 * 1024;

thread_local! {
    static BAG_POOL: std::cell::RefCell<Vec<BagStorage>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

impl BagStorage {
    /// The storage of `bag`, unless it is too large to keep.
    fn of(bag: ProtoBag<'_>) -> Option<BagStorage> {
        let map_entries: usize = bag
            .maps
            .iter()
            .map(|m| match m {
                MapCell::Own(m) => m.entries.capacity(),
                MapCell::Shared(_) => 0,
            })
            .sum();
        let entries = bag.slots.capacity()
            + bag.present.capacity()
            + bag.extras.capacity()
            + bag.maps.capacity()
            + map_entries;
        if entries > POOLED_BAG_ENTRIES {
            return None;
        }
        let maps = bag.maps.into_iter().map(|cell| match cell {
            MapCell::Own(map) => MapCell::Own(ProtoStringMap {
                entries: relabel(map.entries),
                bytes: 0,
            }),
            MapCell::Shared(_) => MapCell::default(),
        });
        Some(BagStorage {
            slots: relabel(bag.slots),
            present: relabel(bag.present),
            extras: relabel(bag.extras),
            maps: maps.collect(),
            free_maps: relabel(bag.free_maps),
        })
    }

    /// Into this thread's pool, when it has room.
    fn keep(self) {
        let _ = BAG_POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut()
                && pool.len() < POOLED_BAGS
            {
                pool.push(self);
            }
        });
    }

    fn pooled() -> Option<BagStorage> {
        BAG_POOL
            .try_with(|pool| pool.try_borrow_mut().ok()?.pop())
            .ok()
            .flatten()
    }

    fn into_bag<'r>(self) -> ProtoBag<'r> {
        let maps = self.maps.into_iter().map(|cell| match cell {
            MapCell::Own(map) => MapCell::Own(ProtoStringMap {
                entries: relabel(map.entries),
                bytes: 0,
            }),
            MapCell::Shared(_) => MapCell::default(),
        });
        ProtoBag {
            slots: relabel(self.slots),
            present: relabel(self.present),
            extras: relabel(self.extras),
            maps: maps.collect(),
            maps_used: 0,
            free_maps: relabel(self.free_maps),
            bytes: 0,
            limits: DecodeLimits::default(),
        }
    }
}

/// Empties `items` and gives its buffer an item type of the same layout (here: the same
/// type with another lifetime). Collecting a vector's own iterator into a vector of a
/// same-sized type reuses its buffer, so this allocates nothing.
fn relabel<T, U>(mut items: Vec<T>) -> Vec<U> {
    items.clear();
    items
        .into_iter()
        .map(|_| unreachable!("the vector was emptied"))
        .collect()
}

impl Bag for ProtoBag<'_> {
    #[inline]
    fn get(&self, key: AttrKey<'_>) -> Option<Value<'_>> {
        if key.id != AttrKey::NO_ID
            && let Some(cell) = self.slots.get(key.id as usize)
        {
            return cell.as_ref().and_then(|slot| self.value_of(slot));
        }
        self.get_by_name(key.name)
    }
}

impl fmt::Debug for ProtoBag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A message dictionary: a message's `words` (or a Report's `default_words`).
pub(crate) trait Words<'r>: Copy {
    fn len(self) -> usize;
    fn word(self, index: usize) -> Option<&'r [u8]>;
}

impl<'r, W: AsRef<[u8]>> Words<'r> for &'r [W] {
    #[inline]
    fn len(self) -> usize {
        <[W]>::len(self)
    }

    #[inline]
    fn word(self, index: usize) -> Option<&'r [u8]> {
        self.get(index).map(AsRef::as_ref)
    }
}

impl<'r> Words<'r> for WordList<'r> {
    #[inline]
    fn len(self) -> usize {
        WordList::len(&self)
    }

    #[inline]
    fn word(self, index: usize) -> Option<&'r [u8]> {
        self.get(index)
    }
}

/// One attribute value of a `CompressedAttributes`, before its indexes are resolved.
enum Raw<'r, M> {
    Str(i32),
    Int64(i64),
    Double(f64),
    Bool(bool),
    Timestamp(i64, i32),
    Duration(i64, i32),
    Bytes(&'r [u8]),
    /// (key index, value index) entries by key index.
    Map(M),
}

type MessageMap<'r> =
    std::iter::Map<std::collections::btree_map::Iter<'r, i32, i32>, fn((&i32, &i32)) -> (i32, i32)>;

/// The attributes of a prost message, with their count, in decoding order.
fn message_attrs(
    a: &CompressedAttributes,
) -> (usize, impl Iterator<Item = (i32, Raw<'_, MessageMap<'_>>)>) {
    let count = a.strings.len()
        + a.int64s.len()
        + a.doubles.len()
        + a.bools.len()
        + a.timestamps.len()
        + a.durations.len()
        + a.bytes.len()
        + a.string_maps.len();
    let pair: fn((&i32, &i32)) -> (i32, i32) = |(&k, &v)| (k, v);
    let attrs = (a.strings.iter().map(|(&k, &v)| (k, Raw::Str(v))))
        .chain(a.int64s.iter().map(|(&k, &v)| (k, Raw::Int64(v))))
        .chain(a.doubles.iter().map(|(&k, &v)| (k, Raw::Double(v))))
        .chain(a.bools.iter().map(|(&k, &v)| (k, Raw::Bool(v))))
        .chain(
            a.timestamps
                .iter()
                .map(|(&k, t)| (k, Raw::Timestamp(t.seconds, t.nanos))),
        )
        .chain(
            a.durations
                .iter()
                .map(|(&k, d)| (k, Raw::Duration(d.seconds, d.nanos))),
        )
        .chain(a.bytes.iter().map(|(&k, v)| (k, Raw::Bytes(&v[..]))))
        .chain(
            a.string_maps
                .iter()
                .map(move |(&k, m)| (k, Raw::Map(m.entries.iter().map(pair)))),
        );
    (count, attrs)
}

type WireMap<'r> = std::iter::Copied<std::slice::Iter<'r, (i32, i32)>>;

/// The attributes of a set read from the wire (already in decoding order), with their count.
fn wire_attrs(set: AttrSet<'_>) -> (usize, impl Iterator<Item = (i32, Raw<'_, WireMap<'_>>)>) {
    let attrs = set.attrs().iter().map(move |&(k, v)| {
        let raw = match v {
            WireValue::Str(i) => Raw::Str(i),
            WireValue::Int64(v) => Raw::Int64(v),
            WireValue::Double(v) => Raw::Double(v),
            WireValue::Bool(v) => Raw::Bool(v),
            WireValue::Timestamp { seconds, nanos } => Raw::Timestamp(seconds, nanos),
            WireValue::Duration { seconds, nanos } => Raw::Duration(seconds, nanos),
            WireValue::Bytes(span) => Raw::Bytes(set.bytes(span)),
            WireValue::StringMap(span) => Raw::Map(set.map_entries(span).iter().copied()),
        };
        (k, raw)
    });
    (set.attrs().len(), attrs)
}

/// A `google.protobuf.Timestamp`, with the range checks of Go's proto conversion.
fn timestamp(name: &str, seconds: i64, nanos: i32) -> Result<Timestamp, DecodeError> {
    if !(MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS).contains(&seconds)
        || !(0..NANOS_PER_SEC).contains(&nanos)
    {
        return Err(DecodeError::new(DecodeErrorKind::InvalidTimestamp {
            attribute: name.to_owned(),
            seconds,
            nanos,
        }));
    }
    Ok(Timestamp::from_unix(seconds, nanos.unsigned_abs()))
}

/// Resolves a dictionary index: `i >= 0` is global word `i`, `i < 0` is `words[-i - 1]`.
#[inline]
pub(crate) fn resolve_word<'r>(index: i32, words: impl Words<'r>) -> Result<&'r str, Unresolved> {
    if index >= 0 {
        GLOBAL_WORDS
            .get(index as usize)
            .copied()
            .ok_or(Unresolved::Global)
    } else {
        // `!index` is `-index - 1`, non-negative here and free of overflow.
        let word = words
            .word((!index) as usize)
            .ok_or(Unresolved::Message { words: words.len() })?;
        message_word(word)
    }
}

/// A message word as text. Words arrive as bytes so that one bad word fails only the
/// attribute set that uses it; each use is checked here.
#[inline]
fn message_word(word: &[u8]) -> Result<&str, Unresolved> {
    std::str::from_utf8(word).map_err(|e| Unresolved::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// Resolves an attribute name index to the name and its manifest id (or `NO_ID`).
#[inline]
fn resolve_name<'r>(
    index: i32,
    words: impl Words<'r>,
    table: &AttrTable,
) -> Result<(&'r str, u32), DecodeError> {
    if index >= 0 {
        let i = index as usize;
        match GLOBAL_WORDS.get(i) {
            Some(word) => Ok((word, table.global_id(i))),
            None => Err(index_error(
                IndexSite::AttributeName,
                index,
                Unresolved::Global,
            )),
        }
    } else {
        match words.word((!index) as usize) {
            Some(word) => {
                let word = message_word(word)
                    .map_err(|reason| index_error(IndexSite::AttributeName, index, reason))?;
                Ok((word, table.id_of(word).unwrap_or(AttrKey::NO_ID)))
            }
            None => Err(index_error(
                IndexSite::AttributeName,
                index,
                Unresolved::Message { words: words.len() },
            )),
        }
    }
}

#[cold]
pub(crate) fn index_error(site: IndexSite, index: i32, reason: Unresolved) -> DecodeError {
    DecodeError::new(DecodeErrorKind::Index {
        site,
        index,
        reason,
    })
}

#[cold]
fn duplicate(name: &str, first: MapKind, second: MapKind) -> DecodeError {
    DecodeError::new(DecodeErrorKind::DuplicateAttribute {
        name: name.to_owned(),
        first,
        second,
    })
}

/// A `google.protobuf.Duration` as Go's `time.Duration` (nanoseconds), with the checks of
/// Go's proto conversion.
fn duration_nanos(seconds: i64, nanos: i32) -> Result<i64, &'static str> {
    if nanos <= -NANOS_PER_SEC || nanos >= NANOS_PER_SEC {
        return Err("nanos must lie in -999999999..=999999999");
    }
    if (seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0) {
        return Err("seconds and nanos have different signs");
    }
    seconds
        .checked_mul(i64::from(NANOS_PER_SEC))
        .and_then(|s| s.checked_add(i64::from(nanos)))
        .ok_or("it does not fit in a 64-bit count of nanoseconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_sets_alternating_map_and_string_reuse_map_storage() {
        use crate::wire::pb::istio::mixer::v1::StringMap;
        let table = AttrTable::empty();
        let words = vec![b"x.m".to_vec(), b"k".to_vec(), b"v".to_vec()];
        let as_map = {
            let mut a = CompressedAttributes::default();
            let entries = [(-2, -3)].into_iter().collect();
            a.string_maps.insert(-1, StringMap { entries });
            a
        };
        let as_string = {
            let mut a = CompressedAttributes::default();
            a.strings.insert(-1, -3);
            a
        };
        let mut bag = ProtoBag::decode(&as_map, &words, &table).unwrap();
        for _ in 0..100 {
            bag.apply_delta(&as_string, &words, &table).unwrap();
            assert_eq!(bag.get_by_name("x.m"), Some(Value::str("v")));
            bag.apply_delta(&as_map, &words, &table).unwrap();
            assert!(matches!(bag.get_by_name("x.m"), Some(Value::StringMap(_))));
        }
        assert_eq!(bag.maps_used, 1, "a replaced map's storage is reused");
        assert_eq!(bag.len(), 1);
    }

    #[test]
    fn slots_are_small() {
        assert_eq!(std::mem::size_of::<Option<Slot<'static>>>(), 24);
    }
}
