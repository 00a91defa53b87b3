//! `mixer expr ...`: the expression language at a shell, and its conformance case files.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use expr_lang::cases::{self, Tally, Verdict};
use expr_lang::golib;
use expr_lang::{Manifest, MapBag, Program, ReferencedSet, StringMapRef, Value, ValueType};
use serde_json::Value as Json;

#[derive(Subcommand)]
pub enum ExprCommand {
    /// Run a case file (JSON Lines) and print one JSON outcome per case, in input order.
    Run {
        /// The case file.
        #[arg(long)]
        cases: PathBuf,
    },
    /// Run case files and compare outcomes with their expectations.
    Test {
        /// Case files (JSON Lines).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Evaluate one expression against attributes given on the command line.
    Eval {
        /// The expression, e.g. 'source.labels["app"] | "unknown"'.
        expr: String,
        /// An attribute: `name=value` (type from Istio's vocabulary) or
        /// `name:TYPE=value`; STRING_MAP values are written `k1:v1;k2:v2`.
        #[arg(short = 'a', long = "attr", value_name = "NAME[:TYPE]=VALUE")]
        attrs: Vec<String>,
    },
}

pub fn run(cmd: ExprCommand) -> Result<ExitCode> {
    match cmd {
        ExprCommand::Run { cases } => run_cases(&cases),
        ExprCommand::Test { files } => test_cases(&files),
        ExprCommand::Eval { expr, attrs } => eval(&expr, &attrs),
    }
}

/// Each non-blank line of a case file, parsed, with its 1-based line number.
fn read_cases(path: &Path) -> Result<Vec<(usize, Result<Json, String>)>> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading case file {}", path.display()))?;
    Ok(cases::case_lines(&text)
        .map(|(line, case)| (line, case.map_err(|e| e.to_string())))
        .collect())
}

fn run_cases(path: &Path) -> Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut bad_lines = 0;
    for (line, case) in read_cases(path)? {
        let run = case.and_then(|c| cases::run_case(&c).map_err(|e| e.to_string()));
        match run {
            Ok(run) => {
                if let Err(e) = writeln!(out, "{}", run.to_json()) {
                    // A reader that stopped early (`| head`) is not an error.
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(ExitCode::SUCCESS);
                    }
                    return Err(e.into());
                }
            }
            Err(e) => {
                bad_lines += 1;
                eprintln!("{}:{line}: not a valid case: {e}", path.display());
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        other => other?,
    }
    Ok(if bad_lines > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn test_cases(files: &[PathBuf]) -> Result<ExitCode> {
    let mut tally = Tally::default();
    for path in files {
        for (line, case) in read_cases(path)? {
            let where_ = format!("{}:{line}", path.display());
            let case = match case {
                Ok(c) => c,
                Err(e) => {
                    tally.failed += 1;
                    println!("FAIL {where_}: not valid JSON: {e}");
                    continue;
                }
            };
            let name = cases::case_name(&case);
            let verdict = cases::judge(&case);
            tally.record(&verdict);
            match verdict {
                Verdict::Pass => {}
                Verdict::Note => {
                    println!("SKIP {name} ({where_}): no \"expr\" (a note, not a runnable case)");
                }
                Verdict::KnownDifference(problems) => println!(
                    "SKIP {name} ({where_}): Mixer quirk, deliberate difference (expr-lang/DIFFERENCES.md): {}",
                    problems.join("; ")
                ),
                Verdict::Fail(problems) => {
                    let expr = case.get("expr").and_then(Json::as_str).unwrap_or("");
                    println!("FAIL {name} ({where_})\n  expr: {expr}");
                    for p in problems {
                        println!("  {p}");
                    }
                }
            }
        }
    }
    if tally.skipped > 0 {
        println!(
            "{} passed, {} failed, {} skipped",
            tally.passed, tally.failed, tally.skipped
        );
    } else {
        println!("{} passed, {} failed", tally.passed, tally.failed);
    }
    Ok(if tally.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Parses `name[:TYPE]=value`.
pub fn parse_attr(
    spec: &str,
    vocabulary: &Manifest,
) -> Result<(String, ValueType, Value<'static>)> {
    let Some((lhs, raw)) = spec.split_once('=') else {
        bail!("attribute {spec:?}: expected NAME[:TYPE]=VALUE");
    };
    let (name, ty) = match lhs.split_once(':') {
        Some((name, ty)) => {
            let ty = ValueType::from_name(ty).filter(|t| *t != ValueType::Unspecified);
            let Some(ty) = ty else {
                bail!(
                    "attribute {name:?}: unknown type {:?}; expected one of {}",
                    &lhs[name.len() + 1..],
                    ValueType::ALL.map(ValueType::name).join(", ")
                );
            };
            (name.to_owned(), ty)
        }
        None => match vocabulary.value_type(lhs) {
            Some(ty) => (lhs.to_owned(), ty),
            None => bail!(
                "attribute {lhs:?} is not in Istio's vocabulary: give its type as {lhs}:TYPE=value"
            ),
        },
    };
    let value = parse_typed_value(raw, ty).with_context(|| format!("attribute {name:?}"))?;
    Ok((name, ty, value))
}

/// A value written at a shell, for a given type.
pub fn parse_typed_value(raw: &str, ty: ValueType) -> Result<Value<'static>> {
    let owned = || Cow::Owned(raw.to_owned());
    Ok(match ty {
        ValueType::String => Value::String(owned()),
        ValueType::DnsName => Value::DnsName(owned()),
        ValueType::EmailAddress => Value::EmailAddress(owned()),
        ValueType::Uri => Value::Uri(owned()),
        ValueType::Int64 => Value::Int64(
            raw.parse()
                .with_context(|| format!("{raw:?} is not an INT64"))?,
        ),
        ValueType::Double => Value::Double(
            raw.parse()
                .with_context(|| format!("{raw:?} is not a DOUBLE"))?,
        ),
        ValueType::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => bail!("{raw:?} is not a BOOL (true or false)"),
        },
        ValueType::Duration => match golib::duration::parse_duration(raw) {
            Some(d) => Value::Duration(d),
            None => bail!("{raw:?} is not a DURATION (e.g. 10ms, 1h30m)"),
        },
        ValueType::Timestamp => match golib::time::parse_rfc3339(raw) {
            Some(t) => Value::Timestamp(t),
            None => bail!("{raw:?} is not a TIMESTAMP (RFC 3339, e.g. 2020-01-02T15:04:05Z)"),
        },
        ValueType::IpAddress => match golib::net::parse_ip(raw) {
            Some(b) => Value::IpAddress(Cow::Owned(b.to_vec())),
            None => bail!("{raw:?} is not an IP_ADDRESS"),
        },
        ValueType::StringMap => {
            let mut m = BTreeMap::new();
            for entry in raw.split(';').filter(|e| !e.is_empty()) {
                let Some((k, v)) = entry.split_once(':') else {
                    bail!("STRING_MAP entry {entry:?}: expected key:value");
                };
                m.insert(k.to_owned(), v.to_owned());
            }
            Value::StringMap(StringMapRef::Owned(Arc::new(m)))
        }
        ValueType::Unspecified => bail!("an attribute needs a concrete type"),
    })
}

fn eval(expr: &str, attr_specs: &[String]) -> Result<ExitCode> {
    let mut manifest = Manifest::istio_vocabulary();
    let vocabulary = manifest.clone();
    let mut bag = MapBag::new();
    for spec in attr_specs {
        let (name, ty, value) = parse_attr(spec, &vocabulary)?;
        manifest.declare(name.clone(), ty);
        bag.insert(name, value);
    }
    let program = match Program::compile(expr, &manifest) {
        Ok(p) => p,
        Err(e) => {
            let stage = if e.kind.is_parse() { "parse" } else { "check" };
            eprintln!("{stage} error: {}", e.render());
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut refs = ReferencedSet::new();
    match program.evaluate_recorded(&bag, &mut refs) {
        Ok(v) => {
            println!("value: {}", display_value(&v));
            println!("type: {}", program.result_type());
            println!("referenced: {}", refs.encoded().join(" "));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("evaluation error: {e}");
            eprintln!("referenced: {}", refs.encoded().join(" "));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn display_value(v: &Value<'_>) -> String {
    match v {
        Value::String(_) | Value::DnsName(_) | Value::EmailAddress(_) | Value::Uri(_) => {
            serde_json::to_string(v.as_str().unwrap_or_default()).unwrap_or_default()
        }
        Value::StringMap(m) => serde_json::to_string(&m.to_btree()).unwrap_or_default(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_specs() {
        let vocab = Manifest::istio_vocabulary();
        let (n, t, v) = parse_attr("request.size=12", &vocab).unwrap();
        assert_eq!((n.as_str(), t), ("request.size", ValueType::Int64));
        assert_eq!(v, Value::Int64(12));
        let (_, t, v) = parse_attr("x:STRING_MAP=a:1;b:2", &vocab).unwrap();
        assert_eq!(t, ValueType::StringMap);
        let Value::StringMap(m) = v else {
            panic!("map")
        };
        assert_eq!(m.get("b"), Some("2"));
        assert!(
            parse_attr("nope=1", &vocab)
                .unwrap_err()
                .to_string()
                .contains("nope:TYPE")
        );
        assert!(parse_attr("x:WAT=1", &vocab).is_err());
        assert!(parse_attr("request.size=abc", &vocab).is_err());
    }
}
