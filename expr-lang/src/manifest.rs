//! The attribute manifest: which attribute names exist and their types.

use std::collections::HashMap;

use crate::value::ValueType;

/// One declared attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeInfo {
    pub value_type: ValueType,
    /// Dense id, in declaration order; bags may index by it.
    pub id: u32,
}

/// A map from attribute name to [`ValueType`], the union of a config's attribute manifests.
///
/// Front ends look names up for every attribute of every request, so the map uses a fast,
/// randomly seeded hasher; its keys are the config's names, never a request's.
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    attrs: HashMap<String, AttributeInfo, foldhash::fast::RandomState>,
    names: Vec<String>,
}

impl Manifest {
    pub fn new() -> Manifest {
        Manifest::default()
    }

    /// A manifest from `(name, type)` pairs; later duplicates replace the type.
    pub fn from_pairs<N: Into<String>>(
        pairs: impl IntoIterator<Item = (N, ValueType)>,
    ) -> Manifest {
        let mut m = Manifest::new();
        for (name, ty) in pairs {
            m.declare(name, ty);
        }
        m
    }

    /// Declares (or re-types) an attribute and returns its id.
    pub fn declare(&mut self, name: impl Into<String>, value_type: ValueType) -> u32 {
        let name = name.into();
        if let Some(info) = self.attrs.get_mut(&name) {
            info.value_type = value_type;
            return info.id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 attributes");
        self.names.push(name.clone());
        self.attrs.insert(name, AttributeInfo { value_type, id });
        id
    }

    pub fn get(&self, name: &str) -> Option<&AttributeInfo> {
        self.attrs.get(name)
    }

    pub fn value_type(&self, name: &str) -> Option<ValueType> {
        self.attrs.get(name).map(|a| a.value_type)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Declared attributes in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AttributeInfo)> {
        self.names.iter().map(|n| (n.as_str(), &self.attrs[n]))
    }
}

/// Istio's standard attribute vocabulary (name, type, description), as shipped by Istio's
/// default `attributemanifest`s.
const ISTIO_VOCABULARY_TSV: &str = include_str!("../data/istio-attributes.tsv");

/// Attributes of older Istio releases that the global dictionary still carries.
const ISTIO_LEGACY_TSV: &str = include_str!("../data/istio-legacy-attributes.tsv");

impl Manifest {
    /// A manifest of Istio's standard attributes: what a proxy sends and Istio's default
    /// configuration declares, plus the legacy names of older releases.
    pub fn istio_vocabulary() -> Manifest {
        let mut m = Manifest::new();
        let lines = ISTIO_VOCABULARY_TSV
            .lines()
            .skip(1)
            .chain(ISTIO_LEGACY_TSV.lines().skip(1));
        for line in lines {
            if line.starts_with('#') {
                continue;
            }
            let mut cols = line.split('\t');
            if let (Some(name), Some(ty)) = (cols.next(), cols.next())
                && let Some(ty) = ValueType::from_name(ty)
            {
                m.declare(name, ty);
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_has_the_usual_attributes() {
        let m = Manifest::istio_vocabulary();
        assert!(m.len() > 80);
        assert_eq!(m.value_type("request.headers"), Some(ValueType::StringMap));
        assert_eq!(m.value_type("response.duration"), Some(ValueType::Duration));
        assert_eq!(m.value_type("source.ip"), Some(ValueType::IpAddress));
    }
}
