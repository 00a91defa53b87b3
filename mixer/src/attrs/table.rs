//! The per-config-snapshot attribute table: global word index → manifest id, and
//! attribute name → manifest id for names sent as message words.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use expr_lang::{AttrKey, Manifest, ValueType};

use super::dictionary::{GLOBAL_WORD_COUNT, GLOBAL_WORDS};

/// Resolves attribute names to the dense ids of a [`Manifest`], so that decoding a request
/// puts each declared attribute straight into its slot.
///
/// Build it once per config snapshot, from the same manifest the snapshot's programs were
/// compiled against (the ids must agree).
#[derive(Clone, Debug)]
pub struct AttrTable {
    /// Manifest id of each global word, [`AttrKey::NO_ID`] when the word is not declared.
    global_ids: [u32; GLOBAL_WORD_COUNT],
    /// Manifest id by attribute name.
    by_name: HashMap<Box<str>, u32, BuildHasherDefault<NameHasher>>,
    /// Declared type by id.
    types: Vec<ValueType>,
}

impl AttrTable {
    /// Precomputes the lookups for `manifest`.
    pub fn new(manifest: &Manifest) -> AttrTable {
        let mut by_name =
            HashMap::with_capacity_and_hasher(manifest.len(), BuildHasherDefault::default());
        let mut types = Vec::with_capacity(manifest.len());
        for (name, info) in manifest.iter() {
            by_name.insert(Box::from(name), info.id);
            let idx = info.id as usize;
            if types.len() <= idx {
                types.resize(idx + 1, ValueType::Unspecified);
            }
            types[idx] = info.value_type;
        }
        let mut global_ids = [AttrKey::NO_ID; GLOBAL_WORD_COUNT];
        for (slot, word) in global_ids.iter_mut().zip(GLOBAL_WORDS.iter()) {
            if let Some(&id) = by_name.get(*word) {
                *slot = id;
            }
        }
        AttrTable {
            global_ids,
            by_name,
            types,
        }
    }

    /// An empty table: every attribute is undeclared and is found by name.
    pub fn empty() -> AttrTable {
        AttrTable::new(&Manifest::new())
    }

    /// Number of manifest ids (the length of a bag's slot vector).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The manifest id of attribute `name`.
    #[inline]
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The manifest id of global word `index`, or [`AttrKey::NO_ID`].
    #[inline]
    pub fn global_id(&self, index: usize) -> u32 {
        self.global_ids
            .get(index)
            .copied()
            .unwrap_or(AttrKey::NO_ID)
    }

    /// The declared type of attribute `id`.
    pub fn value_type(&self, id: u32) -> Option<ValueType> {
        self.types.get(id as usize).copied()
    }
}

impl Default for AttrTable {
    fn default() -> AttrTable {
        AttrTable::empty()
    }
}

/// A fast multiplicative hash for the name table. Its keys are config (manifest) names, and
/// request-supplied names are only looked up, never inserted, so a keyed hash buys nothing.
#[derive(Clone, Copy, Default)]
pub(crate) struct NameHasher(u64);

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

impl NameHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for NameHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(buf));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown takes its bucket from the low bits and its tag
        // from the top seven.
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(SEED) ^ (h >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_maps_global_words_and_names() {
        let manifest = Manifest::from_pairs([
            ("request.path", ValueType::String),
            ("my.custom", ValueType::Int64),
            ("source.ip", ValueType::IpAddress),
        ]);
        let t = AttrTable::new(&manifest);
        assert_eq!(t.len(), 3);
        assert!(!t.is_empty());
        assert_eq!(t.global_id(0), 2); // source.ip
        assert_eq!(t.global_id(1), AttrKey::NO_ID);
        assert_eq!(t.global_id(10_000), AttrKey::NO_ID);
        assert_eq!(t.id_of("my.custom"), Some(1));
        assert_eq!(t.id_of("request.path"), Some(0));
        assert_eq!(t.id_of("nope"), None);
        assert_eq!(t.value_type(2), Some(ValueType::IpAddress));
        assert!(AttrTable::empty().is_empty());
    }

    #[test]
    fn hasher_distinguishes_lengths() {
        let h = |s: &str| {
            let mut x = NameHasher::default();
            x.write(s.as_bytes());
            x.finish()
        };
        assert_ne!(h("a"), h("a\0"));
        assert_ne!(h("abcdefgh"), h("abcdefgh\0"));
        let vocab = Manifest::istio_vocabulary();
        let t = AttrTable::new(&vocab);
        for (name, info) in vocab.iter() {
            assert_eq!(t.id_of(name), Some(info.id));
        }
    }
}
