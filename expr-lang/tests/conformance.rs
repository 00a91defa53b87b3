//! Every case of the vendored conformance files must pass. A case marked `"quirk": true`
//! may differ only if DIFFERENCES.md names it; `cases::judge` decides, as it does for
//! `mixer expr test`.

use expr_lang::cases::{self, Verdict};

fn run_file(file: &str) -> (usize, Vec<String>) {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("case file");
    let mut passed = 0;
    let mut failures = Vec::new();
    for (line, case) in cases::case_lines(&text) {
        let case = case.expect("valid JSON case");
        match cases::judge(&case) {
            Verdict::Note => {}
            Verdict::Pass | Verdict::KnownDifference(_) => passed += 1,
            Verdict::Fail(problems) => failures.push(format!(
                "{file}:{line} {}\n  expr: {}\n  {}",
                cases::case_name(&case),
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
