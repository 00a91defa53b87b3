//! The attributes and map keys a Check decision consulted, present or absent: what the
//! answer depends on. One type serves as the recorder during evaluation, the server-side
//! cache's key shape, and what front ends encode for the client's cache.

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

/// The references of one decision, unique by (name, map key), in the order first read.
///
/// As a [`Recorder`], a present STRING_MAP read by itself is not recorded (only its key
/// lookups), as Mixer's production bag did: keying a cache on a whole header map would
/// make it useless.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Referenced {
    refs: Vec<Reference>,
}

impl Referenced {
    pub fn new() -> Referenced {
        Referenced::default()
    }

    /// Records a reference; a later read of the same (name, key) overwrites the condition.
    pub fn set(&mut self, name: &str, map_key: Option<&str>, condition: Condition) {
        if let Some(r) = self
            .refs
            .iter_mut()
            .find(|r| r.name == name && r.map_key.as_deref() == map_key)
        {
            r.condition = condition;
            return;
        }
        self.refs.push(Reference::new(name, map_key, condition));
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Reference> {
        self.refs.iter()
    }

    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    pub fn contains(&self, reference: &Reference) -> bool {
        self.refs.contains(reference)
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
    type Item = &'a Reference;
    type IntoIter = std::slice::Iter<'a, Reference>;
    fn into_iter(self) -> Self::IntoIter {
        self.refs.iter()
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
        let got: Vec<_> = r.iter().cloned().collect();
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
