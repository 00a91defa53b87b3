//! The conformance case-file format (JSON Lines, one case per line): running a case,
//! encoding its outcome, and judging the outcome against the case's expectations.
//!
//! Shared by the crate's tests (tests/conformance.rs) and the `mixer expr run|test`
//! commands: [`judge`] is the one definition of whether a case passes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value as Json, json};

use crate::ast::Literal;
use crate::bag::MapBag;
use crate::error::EvalError;
use crate::functions::{CustomFn, FunctionTable};
use crate::golib;
use crate::manifest::Manifest;
use crate::parse::{extract_eq_matches, parse};
use crate::program::Program;
use crate::referenced::ReferencedSet;
use crate::value::{StringMapRef, Value, ValueType};

/// How a case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Result,
    EvalError,
    CheckError,
    ParseError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Result => "result",
            Outcome::EvalError => "eval_error",
            Outcome::CheckError => "check_error",
            Outcome::ParseError => "parse_error",
        }
    }
}

/// What running one case produced.
#[derive(Clone, Debug)]
pub struct CaseRun {
    pub name: String,
    pub outcome: Outcome,
    /// The value, encoded like the case files (only for an evaluated result).
    pub value: Option<Json>,
    /// The checked type (when the check succeeded).
    pub value_type: Option<ValueType>,
    pub message: Option<String>,
    /// Sorted references (when evaluation ran).
    pub referenced: Option<Vec<String>>,
    /// Mixer's printed tree (when parsing succeeded).
    pub postfix: Option<String>,
    /// For `extract_eq_matches` cases.
    pub eq_matches: Option<Json>,
}

impl CaseRun {
    /// The JSON line `mixer expr run` prints.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("outcome".into(), json!(self.outcome.as_str()));
        if let Some(v) = &self.value {
            m.insert("value".into(), v.clone());
        }
        if let Some(t) = self.value_type {
            m.insert("type".into(), json!(t.name()));
        }
        if let Some(msg) = &self.message {
            m.insert("message".into(), json!(msg));
        }
        if let Some(r) = &self.referenced {
            m.insert("referenced".into(), json!(r));
        }
        if let Some(p) = &self.postfix {
            m.insert("postfix".into(), json!(p));
        }
        if let Some(eq) = &self.eq_matches {
            m.insert("eq_matches".into(), eq.clone());
        }
        Json::Object(m)
    }
}

/// Problems with the case itself (not with the expression under test).
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("case is not a JSON object")]
    NotAnObject,
    #[error("case has no \"expr\" string")]
    NoExpr,
    #[error("unknown value type {0:?} in \"types\"")]
    UnknownType(String),
    #[error("attribute {name:?}: {problem}")]
    BadAttribute { name: String, problem: String },
}

/// The case's `"name"`, or `<unnamed>`.
pub fn case_name(case: &Json) -> &str {
    case.get("name")
        .and_then(Json::as_str)
        .unwrap_or("<unnamed>")
}

/// Each non-blank line of a case file, with its 1-based line number, parsed as JSON.
pub fn case_lines(text: &str) -> impl Iterator<Item = (usize, serde_json::Result<Json>)> + '_ {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, serde_json::from_str(l)))
}

/// Runs one case: parse, check against its manifest, evaluate against its bag.
pub fn run_case(case: &Json) -> Result<CaseRun, CaseError> {
    let obj = case.as_object().ok_or(CaseError::NotAnObject)?;
    let src = obj
        .get("expr")
        .and_then(Json::as_str)
        .ok_or(CaseError::NoExpr)?;
    let kind = obj.get("kind").and_then(Json::as_str).unwrap_or("eval");
    let mut run = CaseRun {
        name: case_name(case).to_owned(),
        outcome: Outcome::Result,
        value: None,
        value_type: None,
        message: None,
        referenced: None,
        postfix: None,
        eq_matches: None,
    };
    let expr = match parse(src) {
        Ok(e) => e,
        Err(e) => {
            run.outcome = Outcome::ParseError;
            run.message = Some(e.message);
            return Ok(run);
        }
    };
    run.postfix = Some(expr.to_string());
    match kind {
        "parse_shape" => return Ok(run),
        "extract_eq_matches" => {
            let m: Map<String, Json> = extract_eq_matches(&expr)
                .into_iter()
                .map(|(k, v)| (k, literal_json(&v)))
                .collect();
            run.eq_matches = Some(Json::Object(m));
            return Ok(run);
        }
        _ => {}
    }

    let manifest = case_manifest(obj.get("types"))?;
    let functions = case_functions(obj);
    let program = match Program::from_expr(&expr, src, &manifest, &functions) {
        Ok(p) => p,
        Err(e) => {
            run.outcome = if e.kind.is_parse() {
                Outcome::ParseError
            } else {
                Outcome::CheckError
            };
            run.message = Some(e.message);
            return Ok(run);
        }
    };
    run.value_type = Some(program.result_type());
    if kind == "type_check" && obj.get("attrs").is_none() {
        return Ok(run);
    }

    let bag = case_bag(obj.get("attrs"), &manifest)?;
    let mut refs = ReferencedSet::new();
    match program.evaluate_recorded(&bag, &mut refs) {
        Ok(v) => run.value = Some(encode_value(&v)),
        Err(e) => {
            run.outcome = Outcome::EvalError;
            run.message = Some(e.to_string());
        }
    }
    run.referenced = Some(refs.encoded());
    Ok(run)
}

fn case_manifest(types: Option<&Json>) -> Result<Manifest, CaseError> {
    let mut m = Manifest::new();
    if let Some(Json::Object(types)) = types {
        for (name, ty) in types {
            let ty_name = ty.as_str().unwrap_or_default();
            let ty = ValueType::from_name(ty_name)
                .ok_or_else(|| CaseError::UnknownType(ty_name.to_owned()))?;
            m.declare(name.clone(), ty);
        }
    }
    Ok(m)
}

/// The function table for a case: standard, or intrinsics only, plus its custom functions.
/// Custom functions whose meaning is known (`reverse`) get an implementation; others are
/// registered for type checking only.
fn case_functions(obj: &Map<String, Json>) -> FunctionTable {
    let only_intrinsics = obj
        .get("only_intrinsics_plus_custom")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let mut table = if only_intrinsics {
        FunctionTable::intrinsics()
    } else {
        FunctionTable::standard()
    };
    let Some(Json::Array(customs)) = obj.get("custom_functions") else {
        return table;
    };
    for f in customs {
        let name = f.get("name").and_then(Json::as_str).unwrap_or_default();
        let ty = |key: &str| {
            f.get(key)
                .and_then(Json::as_str)
                .and_then(ValueType::from_name)
                .unwrap_or(ValueType::Unspecified)
        };
        let args = f
            .get("arg_types")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .map(|t| {
                        t.as_str()
                            .and_then(ValueType::from_name)
                            .unwrap_or(ValueType::Unspecified)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let instance = f.get("instance").and_then(Json::as_bool).unwrap_or(false);
        let implementation: Option<CustomFn> = match name {
            "reverse" => Some(Arc::new(|vals: &[Value<'_>]| {
                let s = vals
                    .first()
                    .and_then(Value::as_str)
                    .ok_or_else(|| EvalError::Function("reverse: expected a string".to_owned()))?;
                Ok(Value::String(Cow::Owned(s.chars().rev().collect())))
            })),
            _ => None,
        };
        table.register(
            name,
            instance,
            ty("target_type"),
            args,
            ty("return_type"),
            implementation,
        );
    }
    table
}

/// Builds the case's bag. Values keep the JSON's own type even when it contradicts the
/// manifest (`ill_typed_attrs`): reading such a value is the evaluator's conversion error.
fn case_bag(attrs: Option<&Json>, manifest: &Manifest) -> Result<MapBag, CaseError> {
    let mut bag = MapBag::new();
    if let Some(Json::Object(attrs)) = attrs {
        for (name, v) in attrs {
            let declared = manifest.value_type(name);
            let value = decode_value(v, declared).map_err(|problem| CaseError::BadAttribute {
                name: name.clone(),
                problem,
            })?;
            bag.insert(name.clone(), value);
        }
    }
    Ok(bag)
}

/// Decodes the case-file value encoding. `declared` picks the string flavour.
fn decode_value(v: &Json, declared: Option<ValueType>) -> Result<Value<'static>, String> {
    Ok(match v {
        Json::String(s) => {
            let s = Cow::Owned(s.clone());
            match declared {
                Some(ValueType::DnsName) => Value::DnsName(s),
                Some(ValueType::EmailAddress) => Value::EmailAddress(s),
                Some(ValueType::Uri) => Value::Uri(s),
                _ => Value::String(s),
            }
        }
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64().filter(|_| !n.is_f64()) {
                Value::Int64(i)
            } else {
                Value::Double(n.as_f64().ok_or("number out of range")?)
            }
        }
        Json::Object(o) if o.len() == 1 => {
            let (k, inner) = o.iter().next().expect("one entry");
            let text = || {
                inner
                    .as_str()
                    .ok_or_else(|| format!("{k} must be a string"))
            };
            match k.as_str() {
                "duration" => Value::Duration(
                    golib::duration::parse_duration(text()?)
                        .ok_or_else(|| format!("bad duration {inner}"))?,
                ),
                "timestamp" => Value::Timestamp(
                    golib::time::parse_rfc3339(text()?)
                        .ok_or_else(|| format!("bad timestamp {inner}"))?,
                ),
                "bytes_hex" => Value::IpAddress(Cow::Owned(
                    decode_hex(text()?).ok_or_else(|| format!("bad hex {inner}"))?,
                )),
                "ip" => Value::IpAddress(Cow::Owned(
                    golib::net::parse_ip(text()?)
                        .ok_or_else(|| format!("bad ip {inner}"))?
                        .to_vec(),
                )),
                "string_map" => {
                    let entries = inner.as_object().ok_or("string_map must be an object")?;
                    let mut m = BTreeMap::new();
                    for (mk, mv) in entries {
                        let mv = mv.as_str().ok_or("string_map values must be strings")?;
                        m.insert(mk.clone(), mv.to_owned());
                    }
                    Value::StringMap(StringMapRef::Owned(Arc::new(m)))
                }
                other => return Err(format!("unknown value encoding {other:?}")),
            }
        }
        other => return Err(format!("cannot decode {other}")),
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Encodes a value like the case files do.
fn encode_value(v: &Value<'_>) -> Json {
    match v {
        Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => {
            json!(s)
        }
        Value::Int64(i) => json!(i),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or_else(|| json!(d.to_string())),
        Value::Bool(b) => json!(b),
        Value::Duration(d) => json!({ "duration": golib::duration::format_duration(*d) }),
        Value::Timestamp(t) => json!({ "timestamp": golib::time::format_rfc3339_nano_utc(t) }),
        Value::IpAddress(b) if b.len() == 16 => json!({ "ip": golib::net::format_ip(b) }),
        Value::IpAddress(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            json!({ "bytes_hex": hex })
        }
        Value::StringMap(m) => json!({ "string_map": m.to_btree() }),
    }
}

fn literal_json(l: &Literal) -> Json {
    match l {
        Literal::String(s) => json!(s),
        Literal::Int64(i) => json!(i),
        Literal::Double(d) => json!(d),
        Literal::Bool(b) => json!(b),
        Literal::Duration(d) => json!({ "duration": golib::duration::format_duration(*d) }),
    }
}

/// The case's expected outcome, from whichever outcome field it carries.
fn expected_outcome(case: &Json) -> Option<Outcome> {
    [
        ("result", Outcome::Result),
        ("eval_error", Outcome::EvalError),
        ("check_error", Outcome::CheckError),
        ("parse_error", Outcome::ParseError),
    ]
    .into_iter()
    .find(|(k, _)| case.get(k).is_some())
    .map(|(_, o)| o)
    .or_else(|| {
        // Static cases: success is implied by `postfix`/`result_type`/`eq_matches`.
        ["postfix", "result_type", "eq_matches"]
            .iter()
            .any(|k| case.get(k).is_some())
            .then_some(Outcome::Result)
    })
}

/// The verdict on one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The line has no `"expr"`: a note about the source tests, not a runnable case.
    Note,
    /// The outcome meets every expectation.
    Pass,
    /// A case marked `"quirk": true` that DIFFERENCES.md names: it exercises a Mixer quirk
    /// this crate deliberately does not reproduce, so it may differ. The mismatches.
    KnownDifference(Vec<String>),
    /// The mismatches, each as "what: expected X, got Y".
    Fail(Vec<String>),
}

/// The document naming every quirk case that may differ.
const DIFFERENCES: &str = include_str!("../DIFFERENCES.md");

/// Runs `case` and judges its outcome: the one definition of "passes".
pub fn judge(case: &Json) -> Verdict {
    if case.get("expr").is_none() {
        return Verdict::Note;
    }
    let mut problems = match run_case(case) {
        Ok(run) => match compare(case, &run) {
            Ok(()) => return Verdict::Pass,
            Err(problems) => problems,
        },
        Err(e) => vec![format!("case unreadable: {e}")],
    };
    if !is_quirk(case) {
        return Verdict::Fail(problems);
    }
    match case.get("name").and_then(Json::as_str) {
        Some(name) if DIFFERENCES.contains(name) => Verdict::KnownDifference(problems),
        _ => {
            problems.push(
                "marked as a quirk, but expr-lang/DIFFERENCES.md does not name it".to_owned(),
            );
            Verdict::Fail(problems)
        }
    }
}

/// Whether the case is marked as exercising a Mixer quirk.
fn is_quirk(case: &Json) -> bool {
    case.get("quirk").and_then(Json::as_bool).unwrap_or(false)
}

/// Compares a run with the case's expectations. `Err` lists each mismatch as
/// "what: expected X, got Y".
fn compare(case: &Json, run: &CaseRun) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let expected = expected_outcome(case);
    if let Some(exp) = expected
        && exp != run.outcome
    {
        problems.push(format!(
            "outcome: expected {}, got {} ({})",
            exp.as_str(),
            run.outcome.as_str(),
            run.message
                .as_deref()
                .or(run.value.as_ref().map(|_| "a value"))
                .unwrap_or("-")
        ));
        return Err(problems);
    }
    for key in ["eval_error", "check_error", "parse_error"] {
        if let Some(want) = case.get(key).and_then(Json::as_str) {
            let got = run.message.as_deref().unwrap_or("");
            if !got.contains(want) {
                problems.push(format!(
                    "message: expected to contain {want:?}, got {got:?}"
                ));
            }
        }
    }
    if let Some(want) = case.get("result_type").and_then(Json::as_str)
        && let Some(got) = run.value_type
        && got.name() != want
    {
        problems.push(format!("type: expected {want}, got {}", got.name()));
    }
    if let Some(want) = case.get("result") {
        let declared = case
            .get("result_type")
            .and_then(Json::as_str)
            .and_then(ValueType::from_name)
            .or(run.value_type);
        match (decode_value(want, declared), &run.value) {
            (Ok(want_v), Some(got)) => {
                let same = decode_value(got, declared).is_ok_and(|got_v| got_v == want_v);
                if !same {
                    problems.push(format!("value: expected {want}, got {got}"));
                }
            }
            (Err(e), _) => problems.push(format!("value: case's expected result unreadable: {e}")),
            (_, None) => problems.push(format!("value: expected {want}, got none")),
        }
    }
    if let Some(want) = case.get("postfix").and_then(Json::as_str)
        && let Some(got) = &run.postfix
        && got != want
    {
        problems.push(format!("postfix: expected {want:?}, got {got:?}"));
    }
    if let Some(want) = case.get("eq_matches") {
        let got = run.eq_matches.clone().unwrap_or(Json::Null);
        if !json_numbers_equal(want, &got) {
            problems.push(format!("eq_matches: expected {want}, got {got}"));
        }
    }
    let want_refs = case
        .get("observed_referenced")
        .or_else(|| case.get("referenced"));
    if let (Some(Json::Array(want)), Some(got)) = (want_refs, &run.referenced) {
        let want: Vec<&str> = want.iter().filter_map(Json::as_str).collect();
        if want != got.iter().map(String::as_str).collect::<Vec<_>>() {
            problems.push(format!("referenced: expected {want:?}, got {got:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// JSON equality where `3.14` and `3.14` compare as numbers whatever their textual form.
fn json_numbers_equal(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_numbers_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Summary of a run over many cases.
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    /// Notes, and quirk cases that differ on purpose (documented in DIFFERENCES.md).
    pub skipped: usize,
}

impl Tally {
    /// Counts one verdict.
    pub fn record(&mut self, verdict: &Verdict) {
        match verdict {
            Verdict::Pass => self.passed += 1,
            Verdict::Note | Verdict::KnownDifference(_) => self.skipped += 1,
            Verdict::Fail(_) => self.failed += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quirks_may_differ_only_when_differences_md_names_them() {
        let case = |name: &str, quirk: bool| json!({"name": name, "expr": "1 == 2", "result": true, "quirk": quirk});
        assert_eq!(judge(&json!({"name": "a note"})), Verdict::Note);
        assert_eq!(
            judge(&json!({"name": "x", "expr": "1 == 1", "result": true})),
            Verdict::Pass
        );
        assert!(matches!(judge(&case("x", false)), Verdict::Fail(_)));
        let Verdict::Fail(problems) = judge(&case("not-a-documented-quirk", true)) else {
            panic!("an undocumented quirk fails");
        };
        assert!(problems.last().unwrap().contains("does not name it"));
        // Any name DIFFERENCES.md contains stands in for a documented quirk case.
        assert!(matches!(
            judge(&case("stack underflow", true)),
            Verdict::KnownDifference(_)
        ));
        let mut tally = Tally::default();
        for v in [Verdict::Pass, Verdict::Note, Verdict::Fail(vec![])] {
            tally.record(&v);
        }
        assert_eq!((tally.passed, tally.failed, tally.skipped), (1, 1, 1));
    }
}
