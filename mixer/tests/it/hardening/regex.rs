//! Rows 10 and 11: regular expressions in rule expressions never fail open and never cost a
//! Check more than a bounded compile.
//!
//! Row 10: a constant pattern that cannot compile (here over the regex engine's size
//! limit) is a configuration error naming the rule, the field and the column, caught by
//! `mixer validate` and refused by a running server, which keeps its last good snapshot.
//!
//! Row 11: in `a.matches(b)` the target `a` is the pattern, so `request.path.matches(..)`
//! compiles every request's path. Hostile paths are compiled under a small limit (and
//! cached); a path that fails is an evaluation error handled by `--policy-errors`, counted
//! and logged at a bounded rate.

use std::time::{Duration, Instant};

use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;

use crate::common::{MIXER, ServerProcess, mixer_command};
use crate::common::{check_request, config_dir, metric_value, s, status_of, write_file};

const PERMISSION_DENIED: i32 = 7;

/// A denier, a checknothing instance and one rule sending to them when `predicate` holds.
fn deny_rule(rule: &str, predicate: &str) -> String {
    format!(
        r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: deny-all, namespace: istio-system}}
spec:
  compiledAdapter: denier
  params:
    status: {{code: 7, message: blocked by a regex rule}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: nothing, namespace: istio-system}}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: {rule}, namespace: istio-system}}
spec:
  match: '{predicate}'
  actions:
  - handler: deny-all
    instances: [nothing]
"#
    )
}

/// `^\w{1000}$`: valid syntax, but its compiled program is over the regex engine's size
/// limit. Written as a Go string literal inside a single-quoted YAML scalar.
const OVERSIZED_PATTERN_RULE: &str = r#""^\\w{1000}$".matches(request.path)"#;
const GOOD_PATTERN_RULE: &str = r#""^/\\w{3}$".matches(request.path)"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One Check with `request.path` and the destination namespace set: (code, message).
async fn check_path(
    client: &mut MixerClient<tonic::transport::Channel>,
    path: &str,
) -> (i32, String) {
    let request = check_request(
        &[
            ("request.path", s(path)),
            ("destination.namespace", s("default")),
        ],
        &[],
    );
    let response = tokio::time::timeout(Duration::from_secs(30), client.check(request))
        .await
        .expect("Check answers within 30 s")
        .expect("Check succeeds")
        .into_inner();
    status_of(&response)
}

async fn connect(server: &ServerProcess) -> MixerClient<tonic::transport::Channel> {
    MixerClient::connect(server.api_url())
        .await
        .expect("connects")
}

/// Polls `/debug/config` until `last_load` satisfies `pred`; the last body seen.
fn wait_for_last_load(server: &ServerProcess, pred: impl Fn(&serde_json::Value) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut body = String::new();
    while Instant::now() < deadline {
        if let Ok(r) = server.monitoring_get("/debug/config", Duration::from_secs(5))
            && r.status == 200
        {
            let b = r.text();
            let json: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
            if pred(&json["last_load"]) {
                return b;
            }
            body = b;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("last_load never reached the expected state; last /debug/config:\n{body}");
}

fn validate(dir: &std::path::Path, strict: bool) -> (Option<i32>, String) {
    let mut cmd = mixer_command();
    cmd.arg("validate").arg(dir);
    if strict {
        cmd.arg("--strict");
    }
    let out = cmd.output().expect("mixer validate runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn row10_oversized_constant_regex_is_a_validate_error_naming_rule_field_and_column() {
    let predicate = format!(r#"request.path != "/" && {OVERSIZED_PATTERN_RULE}"#);
    let dir = config_dir(&[("deny.yaml", &deny_rule("block-long-words", &predicate))]);
    for strict in [false, true] {
        let (code, out) = validate(dir.path(), strict);
        assert_eq!(code, Some(1), "strict={strict}:\n{out}");
        let line = out
            .lines()
            .find(|l| l.contains("error: rule/istio-system/block-long-words: match: "))
            .unwrap_or_else(|| panic!("no diagnostic for the rule's match:\n{out}"));
        assert!(line.contains("deny.yaml:"), "{line}");
        assert!(line.contains("expression too large"), "{line}");
        // The pattern literal starts after `request.path != "/" && `.
        assert!(line.contains("at column 24"), "{line}");
    }
}

#[test]
fn row10_oversized_constant_regex_never_replaces_a_good_deny_rule() {
    let dir = config_dir(&[(
        "deny.yaml",
        &deny_rule("block-short-words", GOOD_PATTERN_RULE),
    )]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let rt = runtime();
    let mut client = rt.block_on(connect(&server));
    let (code, message) = rt.block_on(check_path(&mut client, "/abc"));
    assert_eq!(code, PERMISSION_DENIED, "{message}");

    write_file(
        dir.path(),
        "deny.yaml",
        &deny_rule("block-short-words", OVERSIZED_PATTERN_RULE),
    );
    let body = wait_for_last_load(&server, |l| {
        l["applied"] == false && l["diagnostics"].as_array().is_some_and(|d| !d.is_empty())
    });
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let last = &json["last_load"];
    assert_eq!(last["applied"], false, "{body}");
    let diagnostic = &last["diagnostics"][0];
    assert_eq!(
        diagnostic["resource"], "rule/istio-system/block-short-words",
        "{body}"
    );
    assert_eq!(diagnostic["field"], "match", "{body}");
    let message = diagnostic["message"].as_str().unwrap();
    assert!(message.contains("expression too large"), "{message}");
    assert!(message.contains("at column 1"), "{message}");
    assert_eq!(
        json["generation"], 1,
        "the good snapshot keeps serving: {body}"
    );

    // The good deny rule still applies: nothing failed open.
    let (code, message) = rt.block_on(check_path(&mut client, "/abc"));
    assert_eq!(code, PERMISSION_DENIED, "{message}");
    assert!(
        server.log().contains("block-short-words"),
        "the rejection is logged"
    );
}

#[test]
fn row10_oversized_constant_regex_is_reported_on_first_load() {
    let dir = config_dir(&[(
        "deny.yaml",
        &deny_rule("block-long-words", OVERSIZED_PATTERN_RULE),
    )]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let body = wait_for_last_load(&server, |l| l["generation"].as_u64() >= Some(1));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let diagnostics = json["last_load"]["diagnostics"].as_array().unwrap();
    assert!(
        diagnostics
            .iter()
            .any(|d| d["resource"] == "rule/istio-system/block-long-words"
                && d["field"] == "match"
                && d["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("expression too large"))),
        "{body}"
    );
    let rules = json["rules"].as_array().unwrap();
    assert!(rules.is_empty(), "the broken rule is not served: {body}");
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("block-long-words")),
        "{log}"
    );
}

/// The rule of the issue: `request.path` is the pattern, `"^/admin"` the subject.
const PATH_AS_PATTERN_RULE: &str = r#"request.path.matches("^/admin")"#;

/// A path that is a valid regex whose compiled program is huge; distinct for each `i`.
fn hostile_path(i: usize) -> String {
    format!(r"/(\w{{100}}){{{}}}", 100 + i)
}

const HOSTILE_CHECKS: usize = 200;

/// Sends [`HOSTILE_CHECKS`] Checks with `path(i)`, stopping early if they take too long (as
/// they did before); (Checks answered, CPU the server spent on them, the answers).
fn send_hostile_checks(
    server: &ServerProcess,
    path: impl Fn(usize) -> String,
) -> (usize, Duration, Vec<(i32, String)>) {
    let rt = runtime();
    let mut client = rt.block_on(connect(server));
    let (code, message) = rt.block_on(check_path(&mut client, "/public"));
    assert_eq!(code, 0, "a plain path is a plain pattern: {message}");
    let cpu_before = server.cpu_time();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut answers = Vec::new();
    for i in 0..HOSTILE_CHECKS {
        if Instant::now() > deadline {
            break;
        }
        answers.push(rt.block_on(check_path(&mut client, &path(i))));
    }
    let cpu = server.cpu_time() - cpu_before;
    eprintln!("{} hostile Checks: {cpu:?} of server CPU", answers.len());
    (answers.len(), cpu, answers)
}

#[test]
fn row11_hostile_paths_as_patterns_cost_little_cpu_and_are_counted_and_logged_rarely() {
    let dir = config_dir(&[("admin.yaml", &deny_rule("admin-only", PATH_AS_PATTERN_RULE))]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    // Every Check a different pattern: each costs one compile, cut short at the size limit.
    let (answered, cpu, answers) = send_hostile_checks(&server, hostile_path);
    assert_eq!(
        answered, HOSTILE_CHECKS,
        "only {answered} Checks in 40 s ({cpu:?} CPU)"
    );
    // Debug builds compile regexes ~10x slower than release. Before, each of these Checks
    // cost ~0.4 s of CPU here (~0.1 s in release): 40 Checks in 40 s; now ~15 ms.
    assert!(
        cpu < Duration::from_secs(10),
        "{HOSTILE_CHECKS} hostile Checks cost {cpu:?} of CPU"
    );
    // Default mode: the rule does not apply (as in Mixer) ...
    assert!(answers.iter().all(|(code, _)| *code == 0), "{answers:?}");

    // ... but every failure is counted ...
    let response = server
        .monitoring_get("/metrics", Duration::from_secs(10))
        .expect("/metrics answers");
    let (status, scrape) = (response.status, response.text());
    assert_eq!(status, 200);
    let failures = metric_value(
        &scrape,
        "mixer_policy_errors_total",
        &[
            r#"rule="admin-only.rule.istio-system""#,
            r#"stage="match""#,
            r#"api="check""#,
        ],
    );
    assert_eq!(failures, Some(HOSTILE_CHECKS as f64), "{scrape}");

    // ... and logged, at a bounded rate rather than once per Check.
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("admin-only.rule.istio-system"))
        .collect();
    assert!(!lines.is_empty(), "no warning for the failing rule:\n{log}");
    eprintln!("{} warning lines; the first:\n{}", lines.len(), lines[0]);
    assert!(lines.len() <= 20, "{} warning lines:\n{log}", lines.len());
    assert!(
        lines[0].contains("stage=match") && lines[0].contains("expression too large"),
        "{}",
        lines[0]
    );
    assert!(
        !lines[0].contains(r"\w{100}"),
        "request data is not echoed into the log: {}",
        lines[0]
    );
}

#[test]
fn row11_hostile_path_as_pattern_is_denied_naming_the_rule_when_closed() {
    let dir = config_dir(&[("admin.yaml", &deny_rule("admin-only", PATH_AS_PATTERN_RULE))]);
    let server = ServerProcess::start(MIXER, dir.path(), &["--policy-errors", "closed"]);
    // The same hostile pattern every time: its failed compile is cached, so it costs one
    // compile in all (before: one per Check, ~0.4 s each in a debug build).
    let (answered, cpu, answers) = send_hostile_checks(&server, |_| hostile_path(0));
    assert_eq!(
        answered, HOSTILE_CHECKS,
        "only {answered} Checks in 40 s ({cpu:?} CPU)"
    );
    assert!(
        cpu < Duration::from_secs(2),
        "{HOSTILE_CHECKS} hostile Checks cost {cpu:?} of CPU"
    );
    for (code, message) in &answers {
        assert_eq!(*code, PERMISSION_DENIED, "{message}");
        assert!(
            message.contains("rule 'admin-only.rule.istio-system'")
                && message.contains("expression too large"),
            "{message}"
        );
    }

    // A path longer than the limit for patterns from request data is refused before the
    // regex engine sees it.
    let rt = runtime();
    let mut client = rt.block_on(connect(&server));
    let long = format!("/{}", "a".repeat(4096));
    let (code, message) = rt.block_on(check_path(&mut client, &long));
    assert_eq!(code, PERMISSION_DENIED, "{message}");
    assert!(
        message.contains("rule 'admin-only.rule.istio-system'"),
        "{message}"
    );
    assert!(message.contains("longer than"), "{message}");
    assert!(
        !message.contains("aaaa"),
        "the pattern is not echoed: {message}"
    );
}
