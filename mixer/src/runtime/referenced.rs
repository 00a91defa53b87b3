//! The attributes and map keys a Check decision consulted, present or absent: what the
//! answer depends on. One type serves as the recorder during evaluation, the server-side
//! cache's key shape, and what front ends encode for the client's cache.

use std::ops::Range;

use expr_lang::{Recorder, ValueType};

/// How a referenced attribute (or map key) was matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    /// The decision depends on the attribute (or key) being absent.
    Absence,
    /// The decision depends on the exact value.
    Exact,
}

impl Condition {
    fn of(present: bool) -> Condition {
        if present {
            Condition::Exact
        } else {
            Condition::Absence
        }
    }
}

/// One referenced attribute, or one key of a referenced string map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    pub name: String,
    pub map_key: Option<String>,
    pub condition: Condition,
}

impl Reference {
    pub fn new(name: &str, map_key: Option<&str>, condition: Condition) -> Reference {
        Reference {
            name: name.to_owned(),
            map_key: map_key.map(str::to_owned),
            condition,
        }
    }
}

/// A reference as [`Referenced`] hands it out, borrowing its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReferenceView<'a> {
    pub name: &'a str,
    pub map_key: Option<&'a str>,
    pub condition: Condition,
}

impl ReferenceView<'_> {
    pub fn to_reference(&self) -> Reference {
        Reference::new(self.name, self.map_key, self.condition)
    }
}

/// Where one reference's text is in [`Referenced::text`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Slot {
    name: Range<usize>,
    map_key: Option<Range<usize>>,
    condition: Condition,
}

/// References a decision usually records without growing its buffers.
const EXPECTED_REFS: usize = 16;
const EXPECTED_TEXT: usize = 16 * 24;

/// The references of one decision, unique by (name, map key), in the order first read.
///
/// The names and keys are kept back to back in one string, so recording a decision's
/// references costs two allocations however many there are.
///
/// As a [`Recorder`], a present STRING_MAP read by itself is not recorded (only its key
/// lookups), as Mixer's production bag did: keying a cache on a whole header map would
/// make it useless.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Referenced {
    text: String,
    refs: Vec<Slot>,
}

/// Recycled buffers kept per thread, and the largest kept (a decision that read far more
/// than usual frees its buffers instead).
const POOLED: usize = 8;
const POOLED_TEXT: usize = 64 * EXPECTED_TEXT;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Referenced>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Referenced {
    /// Empty, in the buffers of one [recycled](Referenced::recycle) on this thread when
    /// there is one.
    pub fn new() -> Referenced {
        POOL.try_with(|pool| pool.try_borrow_mut().ok()?.pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Empties this and keeps its buffers for the next [`Referenced::new`] on this thread.
    pub fn recycle(mut self) {
        if self.refs.capacity() == 0 || self.text.capacity() > POOLED_TEXT {
            return;
        }
        self.refs.clear();
        self.text.clear();
        let _ = POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut()
                && pool.len() < POOLED
            {
                pool.push(self);
            }
        });
    }

    /// Records a reference; a later read of the same (name, key) overwrites the condition.
    pub fn set(&mut self, name: &str, map_key: Option<&str>, condition: Condition) {
        let text = &self.text;
        if let Some(r) = self.refs.iter_mut().find(|r| {
            text[r.name.clone()] == *name && r.map_key.clone().map(|k| &text[k]) == map_key
        }) {
            r.condition = condition;
            return;
        }
        if self.refs.capacity() == 0 {
            self.refs.reserve(EXPECTED_REFS);
            self.text.reserve(EXPECTED_TEXT);
        }
        let name = self.push_text(name);
        let map_key = map_key.map(|k| self.push_text(k));
        self.refs.push(Slot {
            name,
            map_key,
            condition,
        });
    }

    fn push_text(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    fn view(&self, r: &Slot) -> ReferenceView<'_> {
        ReferenceView {
            name: &self.text[r.name.clone()],
            map_key: r.map_key.clone().map(|k| &self.text[k]),
            condition: r.condition,
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter {
            referenced: self,
            slots: self.refs.iter(),
        }
    }

    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    pub fn contains(&self, reference: &Reference) -> bool {
        self.iter().any(|r| {
            r.name == reference.name
                && r.map_key == reference.map_key.as_deref()
                && r.condition == reference.condition
        })
    }
}

/// The references of a [`Referenced`], in order.
pub struct Iter<'a> {
    referenced: &'a Referenced,
    slots: std::slice::Iter<'a, Slot>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = ReferenceView<'a>;

    fn next(&mut self) -> Option<ReferenceView<'a>> {
        self.slots.next().map(|r| self.referenced.view(r))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.slots.size_hint()
    }
}

impl FromIterator<Reference> for Referenced {
    fn from_iter<I: IntoIterator<Item = Reference>>(iter: I) -> Referenced {
        let mut referenced = Referenced::new();
        for r in iter {
            referenced.set(&r.name, r.map_key.as_deref(), r.condition);
        }
        referenced
    }
}

impl<'a> IntoIterator for &'a Referenced {
    type Item = ReferenceView<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Recorder for Referenced {
    fn attribute(&mut self, name: &str, value_type: ValueType, present: bool) {
        if present && value_type == ValueType::StringMap {
            return;
        }
        self.set(name, None, Condition::of(present));
    }

    fn map_key(&mut self, map: &str, key: &str, present: bool) {
        self.set(map, Some(key), Condition::of(present));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_like_mixer() {
        let mut r = Referenced::new();
        r.attribute("request.headers", ValueType::StringMap, true);
        r.map_key("request.headers", ":path", true);
        r.attribute("source.ip", ValueType::IpAddress, false);
        r.attribute("source.ip", ValueType::IpAddress, true);
        r.attribute("request.headers", ValueType::StringMap, false);
        let got: Vec<_> = r.iter().map(|r| r.to_reference()).collect();
        assert_eq!(
            got,
            [
                Reference::new("request.headers", Some(":path"), Condition::Exact),
                Reference::new("source.ip", None, Condition::Exact),
                Reference::new("request.headers", None, Condition::Absence),
            ]
        );
    }
}
