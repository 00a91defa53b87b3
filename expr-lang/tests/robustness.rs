//! Property tests: the parser and checker never panic on any text, and evaluation never
//! panics on any bag, including bags whose values contradict the manifest.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use expr_lang::{Manifest, MapBag, Program, ReferencedSet, StringMapRef, Value, ValueType};
use proptest::prelude::*;

fn manifest() -> Manifest {
    Manifest::from_pairs([
        ("a", ValueType::Int64),
        ("b", ValueType::Bool),
        ("s", ValueType::String),
        ("d", ValueType::Double),
        ("m", ValueType::StringMap),
        ("t", ValueType::Timestamp),
        ("ip", ValueType::IpAddress),
        ("du", ValueType::Duration),
        ("dns", ValueType::DnsName),
        ("mail", ValueType::EmailAddress),
        ("u", ValueType::Uri),
        ("x.y", ValueType::String),
    ])
}

/// Text built from the language's own tokens, so that much of it gets past the parser.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("a"),
        Just("b"),
        Just("s"),
        Just("m"),
        Just("x.y"),
        Just("t"),
        Just("du"),
        Just("dns"),
        Just("mail"),
        Just("u"),
        Just("ip"),
        Just("nope"),
        Just("1"),
        Just("0x1"),
        Just("1.5"),
        Just("\"str\""),
        Just("\"10ms\""),
        Just("`raw`"),
        Just("'c'"),
        Just("true"),
        Just("("),
        Just(")"),
        Just("["),
        Just("]"),
        Just("{"),
        Just("}"),
        Just(","),
        Just("."),
        Just(":"),
        Just("|"),
        Just("||"),
        Just("&&"),
        Just("=="),
        Just("!="),
        Just("<"),
        Just("<="),
        Just("+"),
        Just("-"),
        Just("*"),
        Just("!"),
        Just("\n"),
        Just("match("),
        Just("ip("),
        Just("timestamp("),
        Just("dnsName("),
        Just("email("),
        Just("uri("),
        Just("conditional("),
        Just("size("),
        Just("toLower("),
        Just(".matches("),
        Just(".startsWith("),
        Just("emptyStringMap()"),
        Just("INDEX("),
    ];
    prop::collection::vec(token, 0..24).prop_map(|t| t.join(" "))
}

fn any_value() -> impl Strategy<Value = Value<'static>> {
    prop_oneof![
        ".{0,12}".prop_map(|s| Value::String(Cow::Owned(s))),
        any::<i64>().prop_map(Value::Int64),
        any::<f64>().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Duration),
        prop::collection::vec(any::<u8>(), 0..17).prop_map(|b| Value::IpAddress(Cow::Owned(b))),
        prop::collection::btree_map(".{0,4}", ".{0,6}", 0..4).prop_map(
            |m: BTreeMap<String, String>| Value::StringMap(StringMapRef::Owned(Arc::new(m)))
        ),
    ]
}

fn any_bag() -> impl Strategy<Value = MapBag> {
    let names = [
        "a", "b", "s", "d", "m", "t", "ip", "du", "dns", "mail", "u", "x.y",
    ];
    prop::collection::vec(prop::option::of(any_value()), names.len()).prop_map(move |vals| {
        let mut bag = MapBag::new();
        for (name, v) in names.iter().zip(vals) {
            if let Some(v) = v {
                bag.insert(*name, v);
            }
        }
        bag
    })
}

const PROGRAMS: &[&str] = &[
    r#"a == 2 || m["k"] == "v""#,
    r#"s | x.y | "default""#,
    r#"m["k"] | m[s] | "none""#,
    r#"(m | emptyStringMap())["k"]"#,
    r#"conditional(b, s, x.y)"#,
    r#"match(s | "-", "kube*") && s.startsWith("a")"#,
    r#"s.matches(x.y)"#,
    r#"ip(s) == ip | ip("1.2.3.4")"#,
    r#"timestamp(s) < t"#,
    r#"dnsName(s) == dns"#,
    r#"email(s) == mail"#,
    r#"uri(s) == u"#,
    r#"size(s) + a > 3"#,
    r#"du | "0ms""#,
    r#"d + 1.5 >= d"#,
    r#"toLower(s) + x.y"#,
    r#"conditionalString(b, s, "x")"#,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parser_and_checker_never_panic_on_text(src in ".{0,64}") {
        let _ = Program::compile(&src, &manifest());
    }

    #[test]
    fn parser_and_checker_never_panic_on_token_soup(src in token_soup()) {
        let _ = Program::compile(&src, &manifest());
    }

    #[test]
    fn evaluation_never_panics_on_any_bag(bag in any_bag(), which in 0..PROGRAMS.len()) {
        let program = Program::compile(PROGRAMS[which], &manifest()).expect("program compiles");
        let _ = program.evaluate(&bag);
        let mut refs = ReferencedSet::new();
        let _ = program.evaluate_recorded(&bag, &mut refs);
    }

    #[test]
    fn compiled_token_soup_evaluates_without_panic(src in token_soup(), bag in any_bag()) {
        if let Ok(program) = Program::compile(&src, &manifest()) {
            let _ = program.evaluate(&bag);
        }
    }
}
