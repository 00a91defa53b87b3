//! Every case of the vendored conformance files must pass. A case marked `"quirk": true`
//! may differ only if DIFFERENCES.md names it.

use expr_lang::cases;
use serde_json::Value as Json;

fn run_file(file: &str) -> (usize, Vec<String>) {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("case file");
    let differences = include_str!("../DIFFERENCES.md");
    let mut passed = 0;
    let mut failures = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let case: Json = serde_json::from_str(line).expect("valid JSON case");
        if case.get("expr").is_none() {
            // A note about the source tests, not a runnable case.
            continue;
        }
        let name = case["name"].as_str().unwrap_or("?").to_owned();
        let verdict = cases::run_case(&case)
            .map_err(|e| vec![e.to_string()])
            .and_then(|run| cases::compare(&case, &run));
        match verdict {
            Ok(()) => passed += 1,
            Err(_) if cases::is_quirk(&case) && differences.contains(&name) => passed += 1,
            Err(problems) => failures.push(format!(
                "{file}:{} {name}\n  expr: {}\n  {}",
                i + 1,
                case["expr"],
                problems.join("\n  ")
            )),
        }
    }
    (passed, failures)
}

fn assert_all_pass(file: &str, at_least: usize) {
    let (passed, failures) = run_file(file);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        passed + failures.len(),
        failures.join("\n")
    );
    assert!(passed >= at_least, "only {passed} cases ran from {file}");
}

#[test]
fn expr_cases_from_mixer_tables() {
    assert_all_pass("expr-cases.jsonl", 372);
}

#[test]
fn static_parse_and_check_cases() {
    assert_all_pass("expr-static.jsonl", 70);
}
