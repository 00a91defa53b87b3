//! Tests of decoding, encoding and delta application.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use expr_lang::golib::time::Timestamp;
use expr_lang::{AttrKey, Bag, Manifest, StringMapRef, Value, ValueType};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::wire::pb::istio::mixer::v1::report_request::RepeatedAttributesSemantics;
use crate::wire::pb::istio::mixer::v1::{
    CheckRequest, CompressedAttributes, ReportRequest, StringMap,
};
use crate::wire::view::CheckView;

fn manifest() -> Manifest {
    Manifest::from_pairs([
        ("request.path", ValueType::String),
        ("request.size", ValueType::Int64),
        ("request.headers", ValueType::StringMap),
        ("request.time", ValueType::Timestamp),
        ("response.duration", ValueType::Duration),
        ("source.ip", ValueType::IpAddress),
        ("connection.mtls", ValueType::Bool),
        ("custom.ratio", ValueType::Double), // declared, not a global word
        ("custom.host", ValueType::DnsName), // declared, not a global word
    ])
}

fn key<'a>(m: &Manifest, name: &'a str) -> AttrKey<'a> {
    AttrKey {
        name,
        id: m.get(name).map_or(AttrKey::NO_ID, |i| i.id),
    }
}

fn owned_map(pairs: &[(&str, &str)]) -> Value<'static> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Value::StringMap(StringMapRef::Owned(Arc::new(map)))
}

fn sample_attrs() -> Vec<(String, Value<'static>)> {
    vec![
        ("request.path".into(), Value::str("/api/v1")),
        ("request.size".into(), Value::Int64(-42)),
        (
            "request.headers".into(),
            owned_map(&[(":authority", "example.com"), ("x-custom", "'200'")]),
        ),
        (
            "request.time".into(),
            Value::Timestamp(Timestamp::from_unix(1_600_000_000, 123_456_789)),
        ),
        ("response.duration".into(), Value::Duration(-1_500_000_000)),
        (
            "source.ip".into(),
            Value::IpAddress(Cow::Owned(vec![10, 0, 0, 1])),
        ),
        ("connection.mtls".into(), Value::Bool(true)),
        ("custom.ratio".into(), Value::Double(0.25)),
        (
            "custom.host".into(),
            Value::DnsName(Cow::Borrowed("svc.local")),
        ),
        (
            "undeclared.uri".into(),
            Value::Uri(Cow::Borrowed("http://x/")),
        ),
        (
            "undeclared.email".into(),
            Value::EmailAddress(Cow::Borrowed("a@b.c")),
        ),
        ("undeclared.int".into(), Value::Int64(7)),
        ("undeclared.map".into(), owned_map(&[("k", "v")])),
        ("undeclared.empty".into(), owned_map(&[])),
        (
            "destination.ip".into(),
            Value::IpAddress(Cow::Owned(vec![0; 16])),
        ),
        ("empty.string".into(), Value::str("")),
    ]
}

/// What the bag should report for an encoded value: string-like values come back as
/// STRING (the evaluator re-types them from the manifest).
fn expected(v: &Value<'_>) -> Value<'static> {
    match v.as_str() {
        Some(s) => Value::String(Cow::Owned(s.to_owned())),
        None => v.clone().into_owned(),
    }
}

fn contents(bag: &ProtoBag<'_>) -> BTreeMap<String, Value<'static>> {
    bag.iter()
        .map(|(n, v)| (n.to_owned(), v.into_owned()))
        .collect()
}

fn assert_bag_has(bag: &ProtoBag<'_>, m: &Manifest, attrs: &[(String, Value<'_>)]) {
    for (name, value) in attrs {
        let want = expected(value);
        assert_eq!(bag.get(key(m, name)).as_ref(), Some(&want), "{name} by key");
        assert_eq!(
            bag.get_by_name(name).as_ref(),
            Some(&want),
            "{name} by name"
        );
        let no_id = AttrKey {
            name,
            id: AttrKey::NO_ID,
        };
        assert_eq!(bag.get(no_id).as_ref(), Some(&want), "{name} by NO_ID");
    }
    assert_eq!(bag.len(), attrs.len());
    assert_eq!(contents(bag).len(), attrs.len());
}

#[test]
fn round_trip_every_value_type() {
    let m = manifest();
    let table = AttrTable::new(&m);
    for gwc in [0, 111, 222] {
        let attrs = sample_attrs();
        let ca = AttributeEncoder::encode_one(gwc, &attrs);
        // Through the wire, to be sure.
        let ca = CompressedAttributes::decode(&ca.encode_to_vec()[..]).unwrap();
        let bag = ProtoBag::decode(&ca, &ca.words, &table).unwrap();
        assert_bag_has(&bag, &m, &attrs);
        assert!(bag.get(key(&m, "request.missing")).is_none());
        assert!(bag.get(key(&m, "connection.mtls")).is_some());
        assert!(bag.get_by_name("nope").is_none());
        if gwc == 0 {
            assert!(ca.strings.keys().all(|&k| k < 0));
        } else {
            // request.path is global word 17.
            assert_eq!(ca.strings.get(&17).copied(), Some(-1));
        }
    }
}

#[test]
fn string_map_values_borrow_and_look_up() {
    let m = manifest();
    let table = AttrTable::new(&m);
    let ca = AttributeEncoder::encode_one(222, &sample_attrs());
    let bag = ProtoBag::decode(&ca, &ca.words, &table).unwrap();
    let Some(Value::StringMap(StringMapRef::Borrowed(h))) = bag.get(key(&m, "request.headers"))
    else {
        panic!("request.headers is not a borrowed map");
    };
    assert_eq!(h.get(":authority"), Some("example.com"));
    assert_eq!(h.get("x-custom"), Some("'200'"));
    assert_eq!(h.get("missing"), None);
    assert_eq!(h.len(), 2);
    // The text of a global word is the dictionary's own static string.
    let Some(Value::String(Cow::Borrowed(s))) = bag.get(key(&m, "request.path")) else {
        panic!("request.path is not borrowed");
    };
    assert_eq!(s, "/api/v1");
}

#[test]
fn index_rule_negative_is_message_positive_is_global() {
    let table = AttrTable::new(&manifest());
    let words: Vec<String> = vec!["/foo".into(), "my.name".into(), "v".into()];
    let ca = CompressedAttributes {
        strings: BTreeMap::from([
            (17, -1),  // request.path = words[0]
            (-2, 94),  // my.name = global 94 = '200'
            (-3, 218), // v = "-" with quotes
        ]),
        int64s: BTreeMap::from([(23, 5)]), // request.size
        ..Default::default()
    };
    let bag = ProtoBag::decode(&ca, &words, &table).unwrap();
    assert_eq!(bag.get_by_name("request.path"), Some(Value::str("/foo")));
    assert_eq!(bag.get_by_name("my.name"), Some(Value::str("'200'")));
    assert_eq!(bag.get_by_name("v"), Some(Value::str("\"-\"")));
    assert_eq!(bag.get_by_name("request.size"), Some(Value::Int64(5)));
}

#[test]
fn report_elements_use_default_words() {
    let m = manifest();
    let table = AttrTable::new(&m);
    let elements = vec![
        vec![
            ("request.path".to_owned(), Value::str("/a")),
            ("custom.host".to_owned(), Value::str("h1")),
        ],
        vec![
            ("request.path".to_owned(), Value::str("/b")),
            ("undeclared.x".to_owned(), Value::str("/a")),
        ],
    ];
    let req = encode_report(222, &elements);
    assert_eq!(
        req.repeated_attributes_semantics,
        RepeatedAttributesSemantics::IndependentEncoding as i32
    );
    assert_eq!(req.global_word_count, 222);
    assert!(req.attributes.iter().all(|a| a.words.is_empty()));
    assert_eq!(
        req.default_words,
        [&b"/a"[..], b"custom.host", b"h1", b"/b", b"undeclared.x"]
    );
    let mut bag = ProtoBag::new(&table);
    for (element, attrs) in req.attributes.iter().zip(&elements) {
        let words = if element.words.is_empty() {
            &req.default_words
        } else {
            &element.words
        };
        bag.decode_into(element, words, &table).unwrap();
        assert_bag_has(&bag, &m, attrs);
    }
    // Reuse cleared the first element's attributes.
    assert!(bag.get(key(&m, "custom.host")).is_none());
    // An element decoded without the default words fails, naming the index.
    let err = bag
        .decode_into(&req.attributes[1], &[] as &[Vec<u8>], &table)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not defined: the message has 0 words"),
        "{err}"
    );
    assert!(bag.is_empty(), "a failed decode_into leaves the bag empty");
}

#[test]
fn decode_into_with_maps_reuses_storage() {
    let m = manifest();
    let table = AttrTable::new(&m);
    let a = AttributeEncoder::encode_one(
        222,
        &[
            (
                "request.headers".into(),
                owned_map(&[("a", "1"), ("b", "2")]),
            ),
            ("other.map".into(), owned_map(&[("c", "3")])),
        ],
    );
    let b =
        AttributeEncoder::encode_one(222, &[("request.headers".into(), owned_map(&[("z", "9")]))]);
    let mut bag = ProtoBag::new(&table);
    bag.decode_into(&a, &a.words, &table).unwrap();
    bag.decode_into(&b, &b.words, &table).unwrap();
    assert_eq!(bag.len(), 1);
    assert_eq!(
        bag.get(key(&m, "request.headers")),
        Some(owned_map(&[("z", "9")]))
    );
    assert!(bag.get_by_name("other.map").is_none());
    // A table of a different size is accepted.
    let small = AttrTable::new(&Manifest::from_pairs([("request.path", ValueType::String)]));
    bag.decode_into(&a, &a.words, &small).unwrap();
    assert_eq!(bag.len(), 2);
    assert_eq!(
        bag.get_by_name("request.headers"),
        Some(owned_map(&[("a", "1"), ("b", "2")]))
    );
}

fn decode_err(ca: &CompressedAttributes, words: &[String]) -> String {
    let table = AttrTable::new(&manifest());
    let err = ProtoBag::decode(ca, words, &table).unwrap_err();
    // The reuse path reports the same error.
    let mut bag = ProtoBag::new(&table);
    let again = bag.decode_into(ca, words, &table).unwrap_err();
    assert_eq!(err, again);
    assert!(bag.is_empty());
    err.to_string()
}

fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i}")).collect()
}

#[test]
fn out_of_range_name_indexes() {
    let three = words(3);
    let cases: Vec<CompressedAttributes> = vec![
        CompressedAttributes {
            strings: BTreeMap::from([(-7, 0)]),
            ..Default::default()
        },
        CompressedAttributes {
            int64s: BTreeMap::from([(-7, 0)]),
            ..Default::default()
        },
        CompressedAttributes {
            doubles: BTreeMap::from([(-7, 0.0)]),
            ..Default::default()
        },
        CompressedAttributes {
            bools: BTreeMap::from([(-7, true)]),
            ..Default::default()
        },
        CompressedAttributes {
            timestamps: BTreeMap::from([(-7, prost_types::Timestamp::default())]),
            ..Default::default()
        },
        CompressedAttributes {
            durations: BTreeMap::from([(-7, prost_types::Duration::default())]),
            ..Default::default()
        },
        CompressedAttributes {
            bytes: BTreeMap::from([(-7, vec![1])]),
            ..Default::default()
        },
        CompressedAttributes {
            string_maps: BTreeMap::from([(-7, StringMap::default())]),
            ..Default::default()
        },
    ];
    for ca in &cases {
        assert_eq!(
            decode_err(ca, &three),
            "attribute name index -7 is not defined: the message has 3 words"
        );
    }
    let ca = CompressedAttributes {
        int64s: BTreeMap::from([(222, 1)]),
        ..Default::default()
    };
    assert_eq!(
        decode_err(&ca, &three),
        "attribute name index 222 is not defined in the global dictionary (222 words)"
    );
    for extreme in [i32::MIN, i32::MAX] {
        let ca = CompressedAttributes {
            bools: BTreeMap::from([(extreme, true)]),
            ..Default::default()
        };
        assert!(decode_err(&ca, &three).contains(&extreme.to_string()));
    }
    // -1 with no words at all.
    let ca = CompressedAttributes {
        bools: BTreeMap::from([(-1, true)]),
        ..Default::default()
    };
    assert_eq!(
        decode_err(&ca, &[]),
        "attribute name index -1 is not defined: the message has 0 words"
    );
}

#[test]
fn out_of_range_value_and_map_indexes() {
    let three = words(3);
    let ca = CompressedAttributes {
        strings: BTreeMap::from([(17, 300)]),
        ..Default::default()
    };
    assert_eq!(
        decode_err(&ca, &three),
        "value index 300 of attribute 'request.path' is not defined in the global dictionary (222 words)"
    );
    let ca = CompressedAttributes {
        strings: BTreeMap::from([(-1, -4)]),
        ..Default::default()
    };
    assert_eq!(
        decode_err(&ca, &three),
        "value index -4 of attribute 'w0' is not defined: the message has 3 words"
    );
    let ca = CompressedAttributes {
        string_maps: BTreeMap::from([(
            15,
            StringMap {
                entries: BTreeMap::from([(-9, 0)]),
            },
        )]),
        ..Default::default()
    };
    assert_eq!(
        decode_err(&ca, &three),
        "map key index -9 of attribute 'request.headers' is not defined: the message has 3 words"
    );
    let ca = CompressedAttributes {
        string_maps: BTreeMap::from([(
            15,
            StringMap {
                entries: BTreeMap::from([(31, 1000)]),
            },
        )]),
        ..Default::default()
    };
    assert_eq!(
        decode_err(&ca, &three),
        "map value index 1000 of key ':authority' in attribute 'request.headers' is not defined in the global dictionary (222 words)"
    );
}

#[test]
fn duplicate_attributes() {
    let ws: Vec<String> = vec!["request.path".into(), "x".into(), "x".into()];
    // Declared attribute, in two maps.
    let ca = CompressedAttributes {
        strings: BTreeMap::from([(17, 0)]),
        int64s: BTreeMap::from([(17, 1)]),
        ..Default::default()
    };
    assert_eq!(
        decode_err(&ca, &ws),
        "duplicate attribute 'request.path' (in strings and int64s)"
    );
    // Declared attribute, once by global index and once by an equal message word.
    let ca = CompressedAttributes {
        strings: BTreeMap::from([(17, 0), (-1, 0)]),
        ..Default::default()
    };
    assert_eq!(
        decode_err(&ca, &ws),
        "duplicate attribute 'request.path' (in strings and strings)"
    );
    // Undeclared attribute, in two maps.
    let ca = CompressedAttributes {
        bools: BTreeMap::from([(-2, true)]),
        string_maps: BTreeMap::from([(-2, StringMap::default())]),
        ..Default::default()
    };
    assert_eq!(
        decode_err(&ca, &ws),
        "duplicate attribute 'x' (in bools and string_maps)"
    );
    // Undeclared attribute, through two message words that are equal.
    let ca = CompressedAttributes {
        doubles: BTreeMap::from([(-2, 1.0), (-3, 2.0)]),
        ..Default::default()
    };
    assert_eq!(
        decode_err(&ca, &ws),
        "duplicate attribute 'x' (in doubles and doubles)"
    );
}

#[test]
fn invalid_timestamps_and_durations() {
    let ts = |seconds, nanos| CompressedAttributes {
        timestamps: BTreeMap::from([(24, prost_types::Timestamp { seconds, nanos })]),
        ..Default::default()
    };
    for (s, n) in [
        (0, -1),
        (0, 1_000_000_000),
        (0, i32::MIN),
        (i64::MAX, 0),
        (i64::MIN, 0),
        (253_402_300_800, 0),
        (-62_135_596_801, 0),
    ] {
        let err = decode_err(&ts(s, n), &[]);
        assert!(
            err.starts_with(&format!(
                "invalid timestamp for attribute 'request.time' (seconds {s}, nanos {n})"
            )),
            "{err}"
        );
    }
    let table = AttrTable::new(&manifest());
    for (s, n) in [(253_402_300_799, 999_999_999), (-62_135_596_800, 0)] {
        let ca = ts(s, n);
        let bag = ProtoBag::decode(&ca, &[] as &[Vec<u8>], &table).unwrap();
        assert_eq!(
            bag.get_by_name("request.time"),
            Some(Value::Timestamp(Timestamp::from_unix(s, n as u32)))
        );
    }

    let dur = |seconds, nanos| CompressedAttributes {
        durations: BTreeMap::from([(29, prost_types::Duration { seconds, nanos })]),
        ..Default::default()
    };
    for (s, n, why) in [
        (i64::MAX, 0, "does not fit"),
        (9_223_372_036, 854_775_808, "does not fit"),
        (-9_223_372_036, -854_775_809, "does not fit"),
        (i64::MIN, 0, "does not fit"),
        (1, -1, "different signs"),
        (-1, 1, "different signs"),
        (0, 1_000_000_000, "nanos must lie"),
        (0, -1_000_000_000, "nanos must lie"),
    ] {
        let err = decode_err(&dur(s, n), &[]);
        assert!(
            err.starts_with(&format!(
                "invalid duration for attribute 'response.duration' (seconds {s}, nanos {n}): "
            )) && err.contains(why),
            "{err}"
        );
    }
    for (s, n, want) in [
        (9_223_372_036, 854_775_807, i64::MAX),
        (-9_223_372_036, -854_775_808, i64::MIN),
        (0, -5, -5),
        (2, 5, 2_000_000_005),
    ] {
        let ca = dur(s, n);
        let bag = ProtoBag::decode(&ca, &[] as &[Vec<u8>], &table).unwrap();
        assert_eq!(
            bag.get_by_name("response.duration"),
            Some(Value::Duration(want))
        );
    }
}

#[test]
fn string_map_with_repeated_key_strings_is_deterministic() {
    let table = AttrTable::new(&manifest());
    // ":authority" is global word 31 and also message word -1.
    let ws: Vec<String> = vec![":authority".into(), "b".into(), "a".into()];
    let ca = CompressedAttributes {
        string_maps: BTreeMap::from([(
            15,
            StringMap {
                entries: BTreeMap::from([(31, -2), (-1, -3)]),
            },
        )]),
        ..Default::default()
    };
    let bag = ProtoBag::decode(&ca, &ws, &table).unwrap();
    assert_eq!(
        bag.get_by_name("request.headers"),
        Some(owned_map(&[(":authority", "a")]))
    );
}

#[test]
fn delta_overrides_adds_and_keeps() {
    let m = manifest();
    let table = AttrTable::new(&m);
    let base = AttributeEncoder::encode_one(
        222,
        &[
            ("request.path".into(), Value::str("/base")),
            ("request.size".into(), Value::Int64(1)),
            ("request.headers".into(), owned_map(&[("a", "1")])),
            ("undeclared.b".into(), Value::str("b0")),
            ("undeclared.d".into(), owned_map(&[("d", "0")])),
        ],
    );
    let delta = AttributeEncoder::encode_one(
        222,
        &[
            ("request.path".into(), Value::str("/delta")),
            ("request.headers".into(), owned_map(&[("b", "2")])),
            ("connection.mtls".into(), Value::Bool(false)),
            ("undeclared.a".into(), Value::Int64(5)),
            ("undeclared.b".into(), Value::Int64(6)),
            ("undeclared.c".into(), owned_map(&[("c", "3")])),
            ("undeclared.d".into(), owned_map(&[("d", "1")])),
        ],
    );
    let mut bag = ProtoBag::decode(&base, &base.words, &table).unwrap();
    bag.apply_delta(&delta, &delta.words, &table).unwrap();
    let got = contents(&bag);
    let want: BTreeMap<String, Value<'static>> = [
        ("request.path", Value::str("/delta").into_owned()),
        ("request.size", Value::Int64(1)),
        ("request.headers", owned_map(&[("b", "2")])),
        ("connection.mtls", Value::Bool(false)),
        ("undeclared.a", Value::Int64(5)),
        ("undeclared.b", Value::Int64(6)),
        ("undeclared.c", owned_map(&[("c", "3")])),
        ("undeclared.d", owned_map(&[("d", "1")])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(got, want);
    assert_eq!(bag.len(), want.len());
    for (name, value) in &want {
        assert_eq!(bag.get(key(&m, name)).as_ref(), Some(value), "{name}");
    }

    // A failing delta (duplicate name, then a bad index) leaves the bag as it was.
    let before = format!("{bag:?}");
    let bad = CompressedAttributes {
        strings: BTreeMap::from([(17, -1)]),
        int64s: BTreeMap::from([(17, 3)]),
        ..Default::default()
    };
    let ws: Vec<String> = vec!["/bad".into()];
    assert!(bag.apply_delta(&bad, &ws, &table).is_err());
    let bad = CompressedAttributes {
        strings: BTreeMap::from([(17, -1)]),
        bools: BTreeMap::from([(-5, true)]),
        ..Default::default()
    };
    let err = bag.apply_delta(&bad, &ws, &table).unwrap_err();
    assert_eq!(
        err.to_string(),
        "attribute name index -5 is not defined: the message has 1 word"
    );
    assert_eq!(format!("{bag:?}"), before);
    assert_eq!(contents(&bag), want);
}

#[test]
fn empty_table_puts_everything_in_the_side_list() {
    let table = AttrTable::empty();
    let attrs = sample_attrs();
    let ca = AttributeEncoder::encode_one(222, &attrs);
    let bag = ProtoBag::decode(&ca, &ca.words, &table).unwrap();
    let m = Manifest::new();
    assert_bag_has(&bag, &m, &attrs);
    // A stale id past the slot vector falls back to the name.
    let k = AttrKey {
        name: "request.path",
        id: 5,
    };
    assert_eq!(bag.get(k), Some(Value::str("/api/v1")));
}

#[test]
fn encoder_last_duplicate_wins_and_shares_words() {
    let mut enc = AttributeEncoder::new(222);
    let a = enc.encode(&[
        ("x.y".into(), Value::str("one")),
        ("x.y".into(), Value::Int64(2)),
    ]);
    let b = enc.encode(&[("x.y".into(), Value::str("one"))]);
    assert!(a.strings.is_empty());
    assert_eq!(a.int64s.get(&-1), Some(&2));
    assert_eq!(b.strings.get(&-1), Some(&-2));
    assert_eq!(enc.words(), ["x.y", "one"]);
    assert_eq!(enc.into_words(), [&b"x.y"[..], b"one"]);
}

// ---------------------------------------------------------------------------------
// Properties: what Envoy's encoding sends decodes to what it encoded, and nothing a peer
// sends panics the decoder.

/// Case counts stay modest so that the suite stays fast.
const CASES: u32 = 256;

/// Attribute names: global words (encoded as global indexes when below the global word
/// count), dotted names, and any text.
fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(&GLOBAL_WORDS[..]).prop_map(str::to_owned),
        "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}",
        any::<String>(),
    ]
}

/// Short text: global words (shared with names) and any text, the empty string included.
fn text_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(&GLOBAL_WORDS[..]).prop_map(str::to_owned),
        ".{0,12}",
    ]
}

/// Every value type Envoy sends. String-like types come back as STRING (see
/// [`expected`]); NaN is left out only because it is not equal to itself.
fn value_strategy() -> impl Strategy<Value = Value<'static>> {
    prop_oneof![
        text_strategy().prop_map(|s| Value::String(Cow::Owned(s))),
        text_strategy().prop_map(|s| Value::DnsName(Cow::Owned(s))),
        text_strategy().prop_map(|s| Value::EmailAddress(Cow::Owned(s))),
        text_strategy().prop_map(|s| Value::Uri(Cow::Owned(s))),
        any::<i64>().prop_map(Value::Int64),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
        // Every instant the wire's Timestamp allows (years 1 to 9999).
        (-62_135_596_800i64..=253_402_300_799, 0u32..1_000_000_000)
            .prop_map(|(secs, nanos)| Value::Timestamp(Timestamp::from_unix(secs, nanos))),
        any::<i64>().prop_map(Value::Duration),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| Value::IpAddress(Cow::Owned(b))),
        proptest::collection::btree_map(text_strategy(), text_strategy(), 0..5)
            .prop_map(|m| Value::StringMap(StringMapRef::Owned(Arc::new(m)))),
    ]
}

/// An attribute set with distinct names (a repeated name is a decoding error).
fn attrs_strategy() -> impl Strategy<Value = Vec<(String, Value<'static>)>> {
    proptest::collection::btree_map(name_strategy(), value_strategy(), 0..12)
        .prop_map(|m| m.into_iter().collect())
}

/// The global word counts clients send: none, an older dictionary, all of it.
fn global_word_count_strategy() -> impl Strategy<Value = u32> {
    proptest::sample::select(vec![0, 111, GLOBAL_WORD_COUNT as u32])
}

/// Indexes near every boundary the decoder checks: global words, message words, the
/// ends of i32.
fn index_strategy() -> impl Strategy<Value = i32> {
    prop_oneof![0..230i32, -6..=-1i32, any::<i32>(), -1..=1i32]
}

/// One attribute of a [`CompressedAttributes`], by value map.
#[derive(Clone, Debug)]
enum Entry {
    Str(i32, i32),
    Int64(i32, i64),
    Double(i32, f64),
    Bool(i32, bool),
    Timestamp(i32, prost_types::Timestamp),
    Duration(i32, prost_types::Duration),
    Bytes(i32, Vec<u8>),
    Map(i32, BTreeMap<i32, i32>),
}

fn entry_strategy() -> impl Strategy<Value = Entry> {
    use proptest::collection::{btree_map, vec};
    let i = index_strategy;
    let timestamp = prop_oneof![
        (any::<i64>(), any::<i32>()),
        (-100_000i64..100_000, -2..1_000_000_001i32),
    ]
    .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos });
    let duration = prop_oneof![
        (any::<i64>(), any::<i32>()),
        (-100i64..100, -1_000_000_001..1_000_000_001i32),
    ]
    .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos });
    prop_oneof![
        (i(), i()).prop_map(|(k, v)| Entry::Str(k, v)),
        (i(), any::<i64>()).prop_map(|(k, v)| Entry::Int64(k, v)),
        (i(), any::<f64>()).prop_map(|(k, v)| Entry::Double(k, v)),
        (i(), any::<bool>()).prop_map(|(k, v)| Entry::Bool(k, v)),
        (i(), timestamp).prop_map(|(k, v)| Entry::Timestamp(k, v)),
        (i(), duration).prop_map(|(k, v)| Entry::Duration(k, v)),
        (i(), vec(any::<u8>(), 0..17)).prop_map(|(k, v)| Entry::Bytes(k, v)),
        (i(), btree_map(i(), i(), 0..4)).prop_map(|(k, v)| Entry::Map(k, v)),
    ]
}

/// Compressed attributes as a confused or hostile peer may send them: indexes in and out
/// of range, names repeated across the value maps, words that are not UTF-8, timestamps
/// and durations out of range. Few attributes, so that many messages decode too.
fn compressed_strategy() -> impl Strategy<Value = CompressedAttributes> {
    use proptest::collection::vec;
    let word = prop_oneof![
        4 => "[a-z.]{0,6}".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..6),
    ];
    (vec(word, 0..5), vec(entry_strategy(), 0..6)).prop_map(|(words, entries)| {
        let mut ca = CompressedAttributes {
            words,
            ..Default::default()
        };
        for entry in entries {
            match entry {
                Entry::Str(k, v) => _ = ca.strings.insert(k, v),
                Entry::Int64(k, v) => _ = ca.int64s.insert(k, v),
                Entry::Double(k, v) => _ = ca.doubles.insert(k, v),
                Entry::Bool(k, v) => _ = ca.bools.insert(k, v),
                Entry::Timestamp(k, v) => _ = ca.timestamps.insert(k, v),
                Entry::Duration(k, v) => _ = ca.durations.insert(k, v),
                Entry::Bytes(k, v) => _ = ca.bytes.insert(k, v),
                Entry::Map(k, entries) => _ = ca.string_maps.insert(k, StringMap { entries }),
            }
        }
        ca
    })
}

/// Decodes `ca` every way the server does (fresh, into a reused bag, as a delta onto an
/// empty bag, within limits) and checks that they agree; errors are fine.
fn decode_every_way(ca: &CompressedAttributes, words: &[Vec<u8>], table: &AttrTable) {
    // A bag that held something before, as a reused bag does.
    let filler = AttributeEncoder::encode_one(0, &sample_attrs());
    let mut reuse = ProtoBag::new(table);
    reuse.decode_into(&filler, &filler.words, table).unwrap();
    let one = ProtoBag::decode(ca, words, table);
    let two = reuse.decode_into(ca, words, table);
    assert_eq!(one.is_ok(), two.is_ok());
    let limited = ProtoBag::decode_limited(ca, words, table, DecodeLimits::default());
    assert_eq!(one.is_ok(), limited.is_ok());
    assert_wire_decodes_alike(ca, words, table, &one);
    match one {
        Ok(bag) => {
            assert_eq!(contents(&bag), contents(&reuse));
            let mut acc = ProtoBag::new(table);
            acc.apply_delta(ca, words, table).unwrap();
            assert_eq!(contents(&acc), contents(&bag));
        }
        Err(_) => assert!(reuse.is_empty()),
    }
}

/// The set, sent in a Report and read from its bytes, decodes to the same bag, or fails
/// with the same error, as the prost message.
fn assert_wire_decodes_alike(
    ca: &CompressedAttributes,
    words: &[Vec<u8>],
    table: &AttrTable,
    expected: &Result<ProtoBag<'_>, DecodeError>,
) {
    let req = ReportRequest {
        attributes: vec![CompressedAttributes {
            words: Vec::new(),
            ..ca.clone()
        }],
        default_words: words.to_vec(),
        ..Default::default()
    };
    let view = crate::wire::view::ReportView::from_request(&req);
    let set = view.set(0).expect("one set");
    let bag = ProtoBag::decode_wire(set, view.default_words(), table, DecodeLimits::default());
    match (expected, &bag) {
        (Ok(a), Ok(b)) => assert_eq!(contents(a), contents(b)),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("prost message: {expected:?}, wire: {bag:?}"),
    }
    if let Ok(bag) = bag {
        let mut acc = ProtoBag::new(table);
        acc.apply_wire_delta(set, view.default_words(), table)
            .unwrap();
        assert_eq!(contents(&acc), contents(&bag));
        bag.recycle();
    }
    // The same set as a Check's, with its own words.
    let check = CheckView::from_request(&CheckRequest {
        attributes: Some(CompressedAttributes {
            words: words.to_vec(),
            ..ca.clone()
        }),
        ..Default::default()
    });
    let attrs = check.attributes();
    let bag = ProtoBag::decode_wire(attrs, attrs.words(), table, DecodeLimits::default());
    match (expected, &bag) {
        (Ok(a), Ok(b)) => assert_eq!(contents(a), contents(b)),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("prost message: {expected:?}, Check view: {bag:?}"),
    }
}

/// A Check read from its bytes is held to the same limits, with the same errors, as the
/// prost message; a bag recycled after a large request decodes the next one cleanly.
#[test]
fn check_views_enforce_the_decode_limits() {
    let table = AttrTable::new(&Manifest::istio_vocabulary());
    let limits = DecodeLimits {
        max_attributes_per_set: 3,
        max_string_map_entries: 2,
        ..DecodeLimits::default()
    };
    let headers = |n: usize| {
        let pairs: Vec<(String, String)> =
            (0..n).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        Value::StringMap(StringMapRef::Owned(Arc::new(map)))
    };
    type Attrs = Vec<(String, Value<'static>)>;
    let cases: [(Attrs, Option<Limit>); 3] = [
        (
            vec![
                ("request.path".into(), Value::str("/a")),
                ("request.headers".into(), headers(2)),
            ],
            None,
        ),
        (
            (0..4)
                .map(|i| (format!("x.attr{i}"), Value::Int64(i)))
                .collect(),
            Some(Limit::AttributesPerSet),
        ),
        (
            vec![("request.headers".into(), headers(3))],
            Some(Limit::StringMapEntries),
        ),
    ];
    for (attrs, over) in cases {
        let ca = AttributeEncoder::encode_one(GLOBAL_WORD_COUNT as u32, &attrs);
        let expected = ProtoBag::decode_limited(&ca, &ca.words, &table, limits);
        let view = CheckView::from_request(&CheckRequest {
            attributes: Some(ca.clone()),
            ..Default::default()
        });
        let set = view.attributes();
        let got = ProtoBag::decode_wire(set, set.words(), &table, limits);
        match (&expected, got) {
            (Ok(a), Ok(b)) => {
                assert!(over.is_none());
                assert_eq!(contents(a), contents(&b));
                b.recycle();
            }
            (Err(a), Err(b)) => {
                assert!(b.is_over_limit(), "{b}");
                assert_eq!(a.to_string(), b.to_string());
                let max = limits.max(over.expect("a limit"));
                assert!(b.to_string().contains(&max.to_string()), "{b}");
            }
            (a, b) => panic!("prost message: {a:?}, Check view: {b:?}"),
        }
    }
}

/// Bags recycled after use hand their storage to the next bag decoded on the thread,
/// which holds nothing of the old contents.
#[test]
fn recycled_bags_start_empty() {
    let m = manifest();
    let table = AttrTable::new(&m);
    let ca = AttributeEncoder::encode_one(0, &sample_attrs());
    let bag = ProtoBag::decode(&ca, &ca.words, &table).unwrap();
    assert!(!bag.is_empty());
    bag.recycle();
    let fresh = ProtoBag::new(&table);
    assert!(fresh.is_empty());
    assert_eq!(fresh.get(key(&m, "request.path")), None);
    assert_eq!(fresh.get_by_name("request.headers"), None);
    assert_eq!(fresh.decoded_bytes(), 0);
    let again = ProtoBag::decode(&ca, &ca.words, &table).unwrap();
    assert_eq!(
        contents(&again),
        contents(&ProtoBag::decode(&ca, &ca.words, &table).unwrap())
    );
}

/// The strategy of [`arbitrary_compressed_attributes_never_panic`] reaches the decoder's
/// success path too, not only its first error.
#[test]
fn arbitrary_compressed_attributes_often_decode() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let table = AttrTable::new(&Manifest::istio_vocabulary());
    let strategy = compressed_strategy();
    let mut runner = TestRunner::deterministic();
    let decoded = (0..1000)
        .filter(|_| {
            let ca = strategy.new_tree(&mut runner).unwrap().current();
            ProtoBag::decode(&ca, &ca.words, &table).is_ok_and(|bag| !bag.is_empty())
        })
        .count();
    assert!(decoded > 50, "only {decoded} of 1000 decoded");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// A Check's attributes, encoded as Envoy does and sent over the wire, decode to the
    /// values encoded.
    #[test]
    fn encoded_attributes_decode_to_the_same_values(
        attrs in attrs_strategy(),
        gwc in global_word_count_strategy(),
    ) {
        let m = Manifest::istio_vocabulary();
        let table = AttrTable::new(&m);
        let ca = AttributeEncoder::encode_one(gwc, &attrs);
        let ca = CompressedAttributes::decode(&ca.encode_to_vec()[..]).unwrap();
        let bag = ProtoBag::decode(&ca, &ca.words, &table).unwrap();
        assert_bag_has(&bag, &m, &attrs);
        decode_every_way(&ca, &ca.words, &table);
    }

    /// A Report batch, encoded as Envoy does (one shared word list in `default_words`),
    /// decodes set by set to the values encoded.
    #[test]
    fn encoded_report_batches_decode_to_the_same_values(
        sets in proptest::collection::vec(attrs_strategy(), 1..4),
        gwc in global_word_count_strategy(),
    ) {
        let m = Manifest::istio_vocabulary();
        let table = AttrTable::new(&m);
        let req = encode_report(gwc, &sets);
        let req = ReportRequest::decode(&req.encode_to_vec()[..]).unwrap();
        prop_assert_eq!(req.attributes.len(), sets.len());
        for (ca, attrs) in req.attributes.iter().zip(&sets) {
            prop_assert!(ca.words.is_empty());
            let bag = ProtoBag::decode(ca, &req.default_words, &table).unwrap();
            assert_bag_has(&bag, &m, attrs);
        }
    }

    /// Arbitrary compressed attributes never panic the decoder, and its ways of decoding
    /// agree.
    #[test]
    fn arbitrary_compressed_attributes_never_panic(ca in compressed_strategy()) {
        let table = AttrTable::new(&Manifest::istio_vocabulary());
        decode_every_way(&ca, &ca.words, &table);
    }

    /// Arbitrary bytes never panic prost and then the decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let table = AttrTable::new(&Manifest::istio_vocabulary());
        if let Ok(ca) = CompressedAttributes::decode(&bytes[..]) {
            decode_every_way(&ca, &ca.words, &table);
        }
        if let Ok(req) = ReportRequest::decode(&bytes[..]) {
            for ca in &req.attributes {
                decode_every_way(ca, &req.default_words, &table);
            }
        }
    }
}
