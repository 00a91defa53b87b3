//! Referenced-attribute tracking: which attributes and map keys an evaluation read, present
//! or absent. Check-result caching keys on exactly this set.
//!
//! Evaluation is generic over the [`Recorder`]; with [`NoRecording`] every call is an
//! empty inline function, so recording costs nothing when it is off.

use crate::value::ValueType;

/// Receives each attribute lookup an evaluation makes.
pub trait Recorder {
    /// An attribute was looked up. `value_type` is its declared type: a present
    /// STRING_MAP is reported too, and a server may choose to key only on its keys.
    fn attribute(&mut self, name: &str, value_type: ValueType, present: bool);
    /// A key was looked up in the string map held by attribute `map`.
    fn map_key(&mut self, map: &str, key: &str, present: bool);
}

/// Records nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRecording;

impl Recorder for NoRecording {
    #[inline(always)]
    fn attribute(&mut self, _: &str, _: ValueType, _: bool) {}
    #[inline(always)]
    fn map_key(&mut self, _: &str, _: &str, _: bool) {}
}

impl<R: Recorder + ?Sized> Recorder for &mut R {
    fn attribute(&mut self, name: &str, value_type: ValueType, present: bool) {
        (**self).attribute(name, value_type, present);
    }
    fn map_key(&mut self, map: &str, key: &str, present: bool) {
        (**self).map_key(map, key, present);
    }
}

/// One recorded lookup.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Reference {
    Attribute {
        name: String,
        present: bool,
    },
    MapKey {
        map: String,
        key: String,
        present: bool,
    },
}

impl Reference {
    /// The conformance encoding: `name`, `-name`, `map[key]`, `-map[key]`.
    fn encode(&self) -> String {
        match self {
            Reference::Attribute { name, present } => {
                format!("{}{name}", if *present { "" } else { "-" })
            }
            Reference::MapKey { map, key, present } => {
                format!("{}{map}[{key}]", if *present { "" } else { "-" })
            }
        }
    }
}

/// A recorder that keeps the set of distinct lookups. A lookup already recorded costs a
/// comparison, not an allocation, so a set reused across evaluations stops allocating.
#[derive(Clone, Debug, Default)]
pub struct ReferencedSet {
    refs: Vec<Reference>,
}

impl ReferencedSet {
    pub fn new() -> ReferencedSet {
        ReferencedSet::default()
    }

    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// The encoded references sorted by byte value, as the case files list them.
    pub fn encoded(&self) -> Vec<String> {
        let mut v: Vec<String> = self.refs.iter().map(Reference::encode).collect();
        v.sort();
        v.dedup();
        v
    }
}

impl Recorder for ReferencedSet {
    fn attribute(&mut self, name: &str, _: ValueType, present: bool) {
        let seen = self.refs.iter().any(|r| {
            matches!(r, Reference::Attribute { name: n, present: p } if n == name && *p == present)
        });
        if !seen {
            self.refs.push(Reference::Attribute {
                name: name.to_owned(),
                present,
            });
        }
    }
    fn map_key(&mut self, map: &str, key: &str, present: bool) {
        let seen = self.refs.iter().any(|r| {
            matches!(r, Reference::MapKey { map: m, key: k, present: p }
                if m == map && k == key && *p == present)
        });
        if !seen {
            self.refs.push(Reference::MapKey {
                map: map.to_owned(),
                key: key.to_owned(),
                present,
            });
        }
    }
}
