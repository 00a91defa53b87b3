//! Mixer's global word dictionary (istio/api `mixer/v1/global_dictionary.yaml`, 222 words).
//!
//! The list is vendored as plain lines in `global_words.txt` and split at compile time. The
//! words are used verbatim: `'200'`, `'0'`, `'1'` and `"-"` contain their quote characters,
//! exactly as the Go server and the Envoy client see them. The file is never
//! parsed as YAML.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Number of words in the global dictionary (istio/api 1.3 through 1.7).
pub const GLOBAL_WORD_COUNT: usize = 222;

const GLOBAL_WORDS_TXT: &str = include_str!("global_words.txt");

/// The global dictionary, in index order.
pub static GLOBAL_WORDS: [&str; GLOBAL_WORD_COUNT] = split_words(GLOBAL_WORDS_TXT);

/// The global dictionary as a slice.
#[inline]
pub fn global_words() -> &'static [&'static str] {
    &GLOBAL_WORDS
}

static GLOBAL_INDEX: LazyLock<HashMap<&'static str, u32>> = LazyLock::new(|| {
    let mut map = HashMap::with_capacity(GLOBAL_WORD_COUNT);
    for (i, word) in (0u32..).zip(GLOBAL_WORDS.iter()) {
        // The list has no duplicates; should one appear, the first index is kept.
        map.entry(*word).or_insert(i);
    }
    map
});

/// The global dictionary index of `word`.
#[inline]
pub fn global_word_index(word: &str) -> Option<u32> {
    GLOBAL_INDEX.get(word).copied()
}

/// Splits the vendored list into words at compile time: one word per line, a leading `#`
/// comment line skipped, a trailing `\r` dropped. Any other shape (blank line, wrong count,
/// invalid UTF-8) fails the build.
const fn split_words(text: &'static str) -> [&'static str; GLOBAL_WORD_COUNT] {
    let mut out = [""; GLOBAL_WORD_COUNT];
    let mut rest = text.as_bytes();
    let mut count = 0;
    let mut first_line = true;
    while !rest.is_empty() {
        let mut end = 0;
        while end < rest.len() && rest[end] != b'\n' {
            end += 1;
        }
        let (mut line, tail) = rest.split_at(end);
        rest = if tail.is_empty() {
            tail
        } else {
            tail.split_at(1).1
        };
        if !line.is_empty() && line[line.len() - 1] == b'\r' {
            line = line.split_at(line.len() - 1).0;
        }
        if first_line {
            first_line = false;
            if !line.is_empty() && line[0] == b'#' {
                continue;
            }
        }
        if line.is_empty() {
            panic!("global_words.txt: blank line");
        }
        if count == GLOBAL_WORD_COUNT {
            panic!("global_words.txt: more than 222 words");
        }
        out[count] = match core::str::from_utf8(line) {
            Ok(word) => word,
            Err(_) => panic!("global_words.txt: not UTF-8"),
        };
        count += 1;
    }
    if count != GLOBAL_WORD_COUNT {
        panic!("global_words.txt: fewer than 222 words");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_words_are_verbatim() {
        let words = global_words();
        assert_eq!(words.len(), 222);
        assert_eq!(words[0], "source.ip");
        assert_eq!(words[94], "'200'");
        assert_eq!(words[111], "'0'");
        assert_eq!(words[112], "'1'");
        assert_eq!(words[113], "true");
        assert_eq!(words[114], "false");
        assert_eq!(words[134], "0");
        assert_eq!(words[136], "200");
        assert_eq!(words[218], "\"-\"");
        assert_eq!(words[221], "context.proxy_version");
        assert!(words.iter().all(|w| !w.is_empty() && w.trim() == *w));
    }

    #[test]
    fn index_lookup() {
        for (i, w) in GLOBAL_WORDS.iter().enumerate() {
            assert_eq!(global_word_index(w), Some(i as u32), "{w}");
        }
        assert_eq!(global_word_index("'200'"), Some(94));
        assert_eq!(global_word_index("\"-\""), Some(218));
        assert_eq!(global_word_index("-"), None);
        assert_eq!(global_word_index("no.such.word"), None);
    }
}
