//! Expression evaluation: this crate's compiled programs against the `cel` crate (cel-rust)
//! evaluating the same expressions written in CEL, in one run.
//!
//! Run: `cargo bench -p benches --bench expr`

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use expr_lang::{Manifest, Program, ReferencedSet, SlotBag, StringMapRef, Value, ValueType};

/// One benchmarked expression: CEXL text, the same meaning in CEL, and the expected result.
struct Case {
    id: &'static str,
    cexl: &'static str,
    cel: &'static str,
    expect: Value<'static>,
}

fn manifest() -> Manifest {
    Manifest::from_pairs([
        ("ai", ValueType::Int64),
        ("ar", ValueType::StringMap),
        ("destination.service", ValueType::String),
        ("source.labels", ValueType::StringMap),
        ("response.duration", ValueType::Duration),
        ("request.useragent", ValueType::String),
    ])
}

fn map(entries: &[(&str, &str)]) -> Value<'static> {
    let m: BTreeMap<String, String> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Value::StringMap(StringMapRef::Owned(Arc::new(m)))
}

/// The bag: `ai` varies per case group; labels without `version`, no duration, no
/// destination.service, a kube-probe user agent.
fn bag(manifest: &Manifest, ai: i64) -> SlotBag {
    let mut bag = SlotBag::with_len(manifest.len());
    let id = |n: &str| manifest.get(n).unwrap().id;
    bag.set(id("ai"), Value::Int64(ai));
    bag.set(id("ar"), map(&[("foo", "bar")]));
    bag.set(id("source.labels"), map(&[("app", "reviews")]));
    bag.set(
        id("request.useragent"),
        Value::String(Cow::Borrowed("kube-probe/1.18")),
    );
    bag
}

fn cel_context(ai: i64) -> cel::Context<'static, 'static> {
    let mut ctx = cel::Context::default();
    ctx.add_variable("ai", ai).unwrap();
    ctx.add_variable(
        "ar",
        HashMap::from([("foo".to_string(), "bar".to_string())]),
    )
    .unwrap();
    let source: HashMap<String, HashMap<String, String>> = HashMap::from([(
        "labels".to_string(),
        HashMap::from([("app".to_string(), "reviews".to_string())]),
    )]);
    ctx.add_variable("source", source).unwrap();
    let request: HashMap<String, String> =
        HashMap::from([("useragent".to_string(), "kube-probe/1.18".to_string())]);
    ctx.add_variable("request", request).unwrap();
    // Present as objects, without the fields the expressions default.
    ctx.add_variable("destination", HashMap::<String, String>::new())
        .unwrap();
    ctx.add_variable("response", HashMap::<String, String>::new())
        .unwrap();
    ctx
}

fn cases() -> Vec<(i64, Case)> {
    vec![
        (
            20,
            Case {
                id: "or_first_true",
                cexl: r#"ai == 20 || ar["foo"] == "bar""#,
                cel: r#"ai == 20 || ar["foo"] == "bar""#,
                expect: Value::Bool(true),
            },
        ),
        (
            2,
            Case {
                id: "or_second_true",
                cexl: r#"ai == 20 || ar["foo"] == "bar""#,
                cel: r#"ai == 20 || ar["foo"] == "bar""#,
                expect: Value::Bool(true),
            },
        ),
        (
            2,
            Case {
                id: "true_and_false",
                cexl: "true && false",
                cel: "true && false",
                expect: Value::Bool(false),
            },
        ),
        (
            2,
            Case {
                id: "attr_or_default",
                cexl: r#"destination.service | "unknown""#,
                cel: r#"has(destination.service) ? destination.service : "unknown""#,
                expect: Value::String(Cow::Borrowed("unknown")),
            },
        ),
        (
            2,
            Case {
                id: "label_or_default",
                cexl: r#"source.labels["version"] | "unknown""#,
                cel: r#""version" in source.labels ? source.labels["version"] : "unknown""#,
                expect: Value::String(Cow::Borrowed("unknown")),
            },
        ),
        (
            2,
            Case {
                id: "duration_or_default",
                cexl: r#"response.duration | "0ms""#,
                cel: r#"has(response.duration) ? response.duration : duration("0ms")"#,
                expect: Value::Duration(0),
            },
        ),
        (
            2,
            Case {
                id: "kube_probe_match",
                cexl: r#"match(request.useragent | "-", "kube-probe*") == false"#,
                cel: r#"(has(request.useragent) ? request.useragent : "-").startsWith("kube-probe") == false"#,
                expect: Value::Bool(false),
            },
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let manifest = manifest();
    let mut group = c.benchmark_group("expr");
    for (ai, case) in cases() {
        let program = Program::compile(case.cexl, &manifest).unwrap();
        let bag = bag(&manifest, ai);
        assert_eq!(program.evaluate(&bag).unwrap(), case.expect, "{}", case.id);
        // A BOOL expression is a rule's `match`, evaluated with `evaluate_bool`; any other
        // type fills an instance field, evaluated to a `Value`.
        let is_bool = program.result_type() == ValueType::Bool;
        group.bench_function(format!("{}/cexl", case.id), |b| {
            if is_bool {
                b.iter(|| black_box(program.evaluate_bool(black_box(&bag)).unwrap()))
            } else {
                b.iter(|| {
                    let v = program.evaluate(black_box(&bag)).unwrap();
                    black_box(v.as_str().map(str::len));
                })
            }
        });
        group.bench_function(format!("{}/cexl_recorded", case.id), |b| {
            let mut refs = ReferencedSet::new();
            if is_bool {
                b.iter(|| {
                    black_box(
                        program
                            .evaluate_bool_recorded(black_box(&bag), &mut refs)
                            .unwrap(),
                    )
                })
            } else {
                b.iter(|| {
                    let v = program
                        .evaluate_recorded(black_box(&bag), &mut refs)
                        .unwrap();
                    black_box(v.as_str().map(str::len));
                })
            }
        });
        let cel_program = cel::Program::compile(case.cel).unwrap();
        let ctx = cel_context(ai);
        let cel_result = cel_program.execute(&ctx).unwrap();
        let expected_cel = match &case.expect {
            Value::Bool(b) => Some(cel::Value::Bool(*b)),
            Value::String(s) => Some(cel::Value::String(Arc::new(s.to_string()))),
            _ => None,
        };
        if let Some(expected) = expected_cel {
            assert_eq!(cel_result, expected, "cel {}", case.id);
        }
        group.bench_function(format!("{}/cel", case.id), |b| {
            b.iter(|| black_box(cel_program.execute(black_box(&ctx)).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
