//! `ReferencedAttributes` on the wire: names and map keys as dictionary indexes, with the
//! Envoy client's encoder rule. The domain's view is `runtime::referenced`.

use std::collections::HashMap;

use super::bag::{index_error, resolve_word};
use super::dictionary::global_word_index;
use super::error::{DecodeError, DecodeErrorKind, IndexSite};
use crate::wire::pb::istio::mixer::v1::ReferencedAttributes;
use crate::wire::pb::istio::mixer::v1::referenced_attributes::{AttributeMatch, Condition};

/// A message-level dictionary under construction, with the Envoy client's encoder rule: a word
/// gets its global index when it is in the global dictionary below `global_word_count`, and
/// otherwise the next message word (deduplicated, in order of first use).
#[derive(Clone, Debug, Default)]
pub(crate) struct WordEncoder {
    words: Vec<String>,
    slots: HashMap<String, i32>,
    global_word_count: u32,
}

impl WordEncoder {
    pub(crate) fn new(global_word_count: u32) -> WordEncoder {
        WordEncoder {
            global_word_count,
            ..WordEncoder::default()
        }
    }

    /// The index of `word`, adding it to the message words if needed.
    pub(crate) fn index(&mut self, word: &str) -> i32 {
        if let Some(i) = global_word_index(word)
            && i < self.global_word_count
            && let Ok(i) = i32::try_from(i)
        {
            return i;
        }
        self.message_index(word)
    }

    /// The message-word index of `word`, never a global index.
    pub(crate) fn message_index(&mut self, word: &str) -> i32 {
        if let Some(&i) = self.slots.get(word) {
            return i;
        }
        let slot = i32::try_from(self.words.len()).unwrap_or(i32::MAX);
        let index = -slot - 1;
        self.words.push(word.to_owned());
        self.slots.insert(word.to_owned(), index);
        index
    }

    pub(crate) fn words(&self) -> &[String] {
        &self.words
    }

    pub(crate) fn into_words(self) -> Vec<String> {
        self.words
    }
}

/// Encodes referenced attributes for a CheckResponse: one `AttributeMatch` per item, in the
/// given order (the caller supplies unique `(attribute, map key)` pairs).
///
/// Names and non-empty map keys use the dictionary rule limited by the request's
/// `global_word_count`; words that do not qualify go to the message's own `words`. Without a
/// map key (or with an empty one) `map_key` is 0. A map key that is global word 0
/// (`source.ip`) is sent as a message word, since `map_key = 0` reads as "no key".
pub fn encode_referenced<'a>(
    refs: impl IntoIterator<Item = (&'a str, Option<&'a str>, Condition)>,
    global_word_count: u32,
) -> ReferencedAttributes {
    let mut dict = WordEncoder::new(global_word_count);
    let attribute_matches = refs
        .into_iter()
        .map(|(name, key, condition)| {
            let name = dict.index(name);
            let map_key = match key {
                None | Some("") => 0,
                Some(key) => match dict.index(key) {
                    0 => dict.message_index(key),
                    i => i,
                },
            };
            AttributeMatch {
                name,
                condition: condition as i32,
                regex: String::new(),
                map_key,
            }
        })
        .collect();
    ReferencedAttributes {
        words: dict.into_words(),
        attribute_matches,
    }
}

/// Decodes referenced attributes (the client's view): names and keys resolve against the
/// full global dictionary and `r.words`; `map_key = 0` means no key. REGEX and unspecified
/// conditions are errors, as are unresolvable indexes.
pub fn decode_referenced(
    r: &ReferencedAttributes,
) -> Result<Vec<(String, Option<String>, Condition)>, DecodeError> {
    r.attribute_matches
        .iter()
        .map(|m| {
            let name = resolve_word(m.name, r.words.as_slice())
                .map_err(|reason| index_error(IndexSite::ReferencedName, m.name, reason))?;
            let key = if m.map_key == 0 {
                None
            } else {
                let key = resolve_word(m.map_key, r.words.as_slice()).map_err(|reason| {
                    index_error(
                        IndexSite::ReferencedMapKey {
                            attribute: name.to_owned(),
                        },
                        m.map_key,
                        reason,
                    )
                })?;
                Some(key.to_owned())
            };
            let condition = supported_condition(m.condition).ok_or_else(|| {
                DecodeError::new(DecodeErrorKind::UnsupportedCondition {
                    attribute: name.to_owned(),
                    condition: m.condition,
                })
            })?;
            Ok((name.to_owned(), key, condition))
        })
        .collect()
}

/// ABSENCE or EXACT: Mixer never produces REGEX, and UNSPECIFIED means nothing.
fn supported_condition(value: i32) -> Option<Condition> {
    match Condition::try_from(value) {
        Ok(c @ (Condition::Absence | Condition::Exact)) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::dictionary::GLOBAL_WORDS;

    fn sample() -> Vec<(&'static str, Option<&'static str>, Condition)> {
        vec![
            ("request.path", None, Condition::Exact), // global 17
            ("destination.service", None, Condition::Absence), // global
            ("my.attr", None, Condition::Exact),      // never global
            ("request.headers", Some(":authority"), Condition::Exact),
            ("request.headers", Some("x-custom"), Condition::Absence),
            ("request.headers", Some("my.attr"), Condition::Exact), // reuses a message word
            ("context.proxy_version", None, Condition::Exact),      // global 221
        ]
    }

    fn roundtrip(gwc: u32) -> ReferencedAttributes {
        let refs = sample();
        let encoded = encode_referenced(refs.iter().copied(), gwc);
        let decoded = decode_referenced(&encoded).unwrap();
        let want: Vec<_> = refs
            .iter()
            .map(|&(n, k, c)| (n.to_owned(), k.map(str::to_owned), c))
            .collect();
        assert_eq!(decoded, want);
        encoded
    }

    #[test]
    fn global_word_count_zero_uses_message_words_only() {
        let r = roundtrip(0);
        assert!(r.attribute_matches.iter().all(|m| m.name < 0));
        assert_eq!(
            r.words,
            [
                "request.path",
                "destination.service",
                "my.attr",
                "request.headers",
                ":authority",
                "x-custom",
                "context.proxy_version"
            ]
        );
        assert_eq!(r.attribute_matches[0].name, -1);
        assert_eq!(r.attribute_matches[3].map_key, -5);
        assert_eq!(r.attribute_matches[5].map_key, -3);
        assert_eq!(r.attribute_matches[0].map_key, 0);
        assert_eq!(r.attribute_matches[1].condition, Condition::Absence as i32);
    }

    #[test]
    fn full_global_word_count() {
        let r = roundtrip(222);
        let idx = |w: &str| global_word_index(w).unwrap() as i32;
        assert_eq!(r.words, ["my.attr", "x-custom"]);
        assert_eq!(r.attribute_matches[0].name, idx("request.path"));
        assert_eq!(r.attribute_matches[2].name, -1);
        assert_eq!(r.attribute_matches[3].name, idx("request.headers"));
        assert_eq!(r.attribute_matches[3].map_key, idx(":authority"));
        assert_eq!(r.attribute_matches[4].map_key, -2);
        assert_eq!(r.attribute_matches[5].map_key, -1);
        assert_eq!(r.attribute_matches[6].name, 221);
    }

    #[test]
    fn partial_global_word_count() {
        // 0.8's 178 words: context.proxy_version (221) is past the limit.
        let r = roundtrip(178);
        assert_eq!(r.words, ["my.attr", "x-custom", "context.proxy_version"]);
        assert_eq!(r.attribute_matches[6].name, -3);
        assert!(r.attribute_matches[..2].iter().all(|m| m.name >= 0));
    }

    #[test]
    fn map_key_global_zero_is_not_ambiguous() {
        assert_eq!(GLOBAL_WORDS[0], "source.ip");
        let r = encode_referenced(
            [
                ("request.headers", Some("source.ip"), Condition::Exact),
                ("request.headers", Some(""), Condition::Absence),
            ],
            222,
        );
        assert_eq!(r.attribute_matches[0].map_key, -1);
        assert_eq!(r.words, ["source.ip"]);
        assert_eq!(r.attribute_matches[1].map_key, 0);
        let d = decode_referenced(&r).unwrap();
        assert_eq!(d[0].1.as_deref(), Some("source.ip"));
        assert_eq!(d[1].1, None);
    }

    #[test]
    fn decode_errors() {
        let bad = |m: AttributeMatch, words: Vec<String>| {
            decode_referenced(&ReferencedAttributes {
                words,
                attribute_matches: vec![m],
            })
            .unwrap_err()
            .to_string()
        };
        let m = |name, condition, map_key| AttributeMatch {
            name,
            condition,
            regex: String::new(),
            map_key,
        };
        assert_eq!(
            bad(m(-2, 2, 0), vec!["a".into()]),
            "referenced attribute name index -2 is not defined: the message has 1 word"
        );
        assert_eq!(
            bad(m(500, 2, 0), vec![]),
            "referenced attribute name index 500 is not defined in the global dictionary (222 words)"
        );
        assert_eq!(
            bad(m(-1, 2, -9), vec!["a".into()]),
            "map key index -9 of referenced attribute 'a' is not defined: the message has 1 word"
        );
        assert_eq!(
            bad(m(-1, 3, 0), vec!["a".into()]),
            "referenced attribute 'a' has unsupported condition REGEX"
        );
        assert_eq!(
            bad(m(-1, 0, 0), vec!["a".into()]),
            "referenced attribute 'a' has unsupported condition CONDITION_UNSPECIFIED"
        );
        assert_eq!(
            bad(m(i32::MIN, 2, 0), vec![]),
            format!(
                "referenced attribute name index {} is not defined: the message has 0 words",
                i32::MIN
            )
        );
    }
}
