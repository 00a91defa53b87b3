//! The attribute source an expression is evaluated against.

use std::collections::{BTreeMap, HashMap};

use crate::value::Value;

/// How a compiled program names an attribute when it asks a bag for it: by name, and by the
/// dense id the [`Manifest`](crate::Manifest) gave it (so a bag indexed by id needs no hashing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrKey<'k> {
    pub name: &'k str,
    /// The manifest's id for the attribute; [`AttrKey::NO_ID`] when it has none.
    pub id: u32,
}

impl AttrKey<'_> {
    pub const NO_ID: u32 = u32::MAX;
}

/// An attribute bag: the attributes of one request, each present with a value or absent.
///
/// A value whose variant does not match the manifest's type for the attribute is tolerated
/// here and reported by the evaluator as a conversion error when it is read.
pub trait Bag {
    /// The attribute's value, or `None` when it is absent.
    fn get(&self, key: AttrKey<'_>) -> Option<Value<'_>>;
}

impl<B: Bag + ?Sized> Bag for &B {
    fn get(&self, key: AttrKey<'_>) -> Option<Value<'_>> {
        (**self).get(key)
    }
}

/// A string→string map as a bag exposes it (request headers, workload labels). `Sync`, so
/// that values (and compiled programs holding constant maps) can cross threads.
pub trait StringMap: Sync {
    fn get(&self, key: &str) -> Option<&str>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Visits every entry (order unspecified).
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str));
}

impl StringMap for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
    fn len(&self) -> usize {
        BTreeMap::len(self)
    }
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self {
            f(k, v);
        }
    }
}

impl<S: std::hash::BuildHasher + Sync> StringMap for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
    fn len(&self) -> usize {
        HashMap::len(self)
    }
    fn for_each_entry(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in self {
            f(k, v);
        }
    }
}

/// A bag keyed by attribute name, holding owned values: for tests, the CLI and the
/// conformance harness. The server decodes requests into its own bag.
#[derive(Clone, Debug, Default)]
pub struct MapBag {
    values: HashMap<String, Value<'static>>,
}

impl MapBag {
    pub fn new() -> MapBag {
        MapBag::default()
    }

    /// Sets (or replaces) an attribute.
    pub fn insert(&mut self, name: impl Into<String>, value: Value<'static>) {
        self.values.insert(name.into(), value);
    }

    /// Builder form of [`MapBag::insert`].
    pub fn with(mut self, name: impl Into<String>, value: Value<'static>) -> MapBag {
        self.insert(name, value);
        self
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl Bag for MapBag {
    fn get(&self, key: AttrKey<'_>) -> Option<Value<'_>> {
        self.values.get(key.name).map(Value::borrowed)
    }
}

/// A bag indexed by the manifest's attribute ids: one slot per declared attribute. Lookups
/// are an array index, which is what a request-scoped bag in the server aims for.
#[derive(Clone, Debug, Default)]
pub struct SlotBag {
    slots: Vec<Option<Value<'static>>>,
}

impl SlotBag {
    /// A bag with room for `len` attribute ids, all absent.
    pub fn with_len(len: usize) -> SlotBag {
        SlotBag {
            slots: vec![None; len],
        }
    }

    /// Sets the attribute with manifest id `id`.
    pub fn set(&mut self, id: u32, value: Value<'static>) {
        let idx = id as usize;
        if idx >= self.slots.len() {
            self.slots.resize(idx + 1, None);
        }
        self.slots[idx] = Some(value);
    }
}

impl Bag for SlotBag {
    #[inline]
    fn get(&self, key: AttrKey<'_>) -> Option<Value<'_>> {
        self.slots
            .get(key.id as usize)
            .and_then(Option::as_ref)
            .map(Value::borrowed)
    }
}
