//! Hashing a series' label values straight from an instance's dimension values, without
//! building their text as strings.
//!
//! Label values come from requests, so a client could choose values whose hashes
//! collide if the hash were predictable: the hasher is foldhash (fast on the short values
//! labels hold) with a random seed per exporter. Collisions stay correct anyway (a
//! family compares the text of every candidate series), and the per-family series cap
//! bounds how many a client can create.

use std::fmt::{self, Write};
use std::hash::{BuildHasher, Hasher};

use expr_lang::Value;

use super::text;

/// The hash of one label set, and how many of its values were cut to the length limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelHash {
    pub hash: u64,
    pub cut: u64,
}

/// Hashes label sets; every family of an exporter shares one, so that families with the
/// same labels can share the hash of a bag's label values.
#[derive(Clone, Debug, Default)]
pub struct LabelHasher {
    state: foldhash::fast::RandomState,
    /// Tests: every label set hashes to 0, so that every pair collides.
    #[cfg(test)]
    constant: bool,
}

impl LabelHasher {
    /// A hasher under which all label sets collide (tests of the collision path).
    #[cfg(test)]
    pub fn constant() -> LabelHasher {
        LabelHasher {
            constant: true,
            ..LabelHasher::default()
        }
    }

    /// The hash of the label text of `values[order[0]]`, `values[order[1]]`, ..., each
    /// cut to `limit` bytes. A value's text is hashed in one piece (formatted into a
    /// buffer if it is not a string), so a string and a number with the same text agree;
    /// each is followed by a byte that never occurs in UTF-8, so `("ab", "c")` and
    /// `("a", "bc")` differ.
    pub fn hash(&self, values: &[Value<'_>], order: &[usize], limit: usize) -> LabelHash {
        let mut h = self.state.build_hasher();
        let mut cut = 0;
        let mut buf = TextBuf::default();
        for &j in order {
            let v = &values[j];
            let mut digits = [0; 20];
            let plain = match v {
                Value::Int64(n) => Some(text::int_text(*n, &mut digits)),
                _ => v.as_str(),
            };
            match plain {
                Some(s) => {
                    let kept = text::cap_str(s, limit);
                    cut += u64::from(kept.len() < s.len());
                    h.write(kept.as_bytes());
                }
                None => {
                    buf.clear();
                    let capped = text::write_label_capped(v, limit, &mut buf);
                    cut += u64::from(capped == Ok(true));
                    h.write(buf.as_bytes());
                }
            }
            h.write_u8(0xff);
        }
        #[cfg(test)]
        if self.constant {
            return LabelHash { hash: 0, cut };
        }
        LabelHash {
            hash: h.finish(),
            cut,
        }
    }
}

/// Whether the label values `a[order[k]]` and `b[order[k]]` certainly have the same text
/// for every `k`, so that `b` may reuse the hash of `a`. Only strings, integers and
/// booleans are compared (their text is a function of their value; a double's is not:
/// `0.0 == -0.0`); anything else answers false, which only costs a hash.
pub fn same_label_values(a: &[Value<'_>], b: &[Value<'_>], order: &[usize]) -> bool {
    order.iter().all(|&j| match (a.get(j), b.get(j)) {
        (Some(x), Some(y)) => same_text(x, y),
        _ => false,
    })
}

fn same_text(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Int64(x), Value::Int64(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => match (a.as_str(), b.as_str()) {
            // Values evaluated from the same bag often borrow the same bytes.
            (Some(x), Some(y)) => std::ptr::eq(x, y) || x == y,
            _ => false,
        },
    }
}

/// Text formatted into a stack buffer, spilling to the heap only past its size (long
/// string maps, say): label values that are not strings are short.
struct TextBuf {
    inline: [u8; 64],
    len: usize,
    spill: Option<String>,
}

impl Default for TextBuf {
    fn default() -> Self {
        TextBuf {
            inline: [0; 64],
            len: 0,
            spill: None,
        }
    }
}

impl TextBuf {
    fn clear(&mut self) {
        self.len = 0;
        self.spill = None;
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.spill {
            Some(s) => s.as_bytes(),
            None => &self.inline[..self.len],
        }
    }
}

impl Write for TextBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(spill) = &mut self.spill {
            spill.push_str(s);
            return Ok(());
        }
        let end = self.len + s.len();
        if end <= self.inline.len() {
            self.inline[self.len..end].copy_from_slice(s.as_bytes());
            self.len = end;
            return Ok(());
        }
        let mut spill = String::with_capacity(end);
        spill.extend(std::str::from_utf8(&self.inline[..self.len]));
        spill.push_str(s);
        self.spill = Some(spill);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn s(v: &str) -> Value<'_> {
        Value::String(Cow::Borrowed(v))
    }

    #[test]
    fn equal_text_hashes_alike_whatever_the_value_type() {
        let h = LabelHasher::default();
        let as_int = [Value::Int64(200), s("x")];
        let as_text = [s("200"), s("x")];
        let all = usize::MAX;
        assert_eq!(
            h.hash(&as_int, &[0, 1], all),
            h.hash(&as_text, &[0, 1], all)
        );
        assert_eq!(h.hash(&as_int, &[0, 1], all).cut, 0);
    }

    #[test]
    fn values_are_delimited_and_ordered() {
        let h = LabelHasher::default();
        let split = [s("ab"), s("c")];
        let moved = [s("a"), s("bc")];
        assert_ne!(h.hash(&split, &[0, 1], 1024), h.hash(&moved, &[0, 1], 1024));
        assert_ne!(h.hash(&split, &[0, 1], 1024), h.hash(&split, &[1, 0], 1024));
    }

    #[test]
    fn cut_values_hash_as_their_prefix_and_are_counted() {
        let h = LabelHasher::default();
        let long = [s("abcdef"), Value::Int64(123_456)];
        let short = [s("abc"), s("123")];
        let cut = h.hash(&long, &[0, 1], 3);
        assert_eq!(cut.cut, 2);
        assert_eq!(cut.hash, h.hash(&short, &[0, 1], 3).hash);
    }

    #[test]
    fn long_formatted_values_spill_and_hash_like_their_text() {
        let h = LabelHasher::default();
        let entries: Vec<String> = (0..20).map(|i| format!("key{i}")).collect();
        let map: std::collections::BTreeMap<String, String> =
            entries.iter().map(|k| (k.clone(), k.repeat(3))).collect();
        let value = Value::StringMap(expr_lang::StringMapRef::Owned(std::sync::Arc::new(map)));
        let text = text::label_text_capped(&value, usize::MAX).0;
        assert!(text.len() > 64, "{text}");
        assert_eq!(
            h.hash(std::slice::from_ref(&value), &[0], usize::MAX),
            h.hash(&[s(&text)], &[0], usize::MAX)
        );
    }

    #[test]
    fn only_values_of_certainly_equal_text_are_the_same() {
        let order = [0, 1];
        let owned = String::from("x");
        assert!(same_label_values(
            &[s("x"), Value::Int64(1)],
            &[Value::String(Cow::Owned(owned)), Value::Int64(1)],
            &order
        ));
        assert!(!same_label_values(
            &[s("x"), Value::Int64(1)],
            &[s("x"), Value::Int64(2)],
            &order
        ));
        // Same text, different types: not known to be the same without formatting.
        assert!(!same_label_values(
            &[s("1"), s("x")],
            &[Value::Int64(1), s("x")],
            &order
        ));
        assert!(!same_label_values(
            &[Value::Double(0.0), s("x")],
            &[Value::Double(-0.0), s("x")],
            &order
        ));
        // Only the values the order reads are compared.
        assert!(same_label_values(
            &[s("x"), s("a")],
            &[s("x"), s("b")],
            &[0]
        ));
    }
}
