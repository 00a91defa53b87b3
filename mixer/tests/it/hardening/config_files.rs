//! Rows 14 and 15: config files written in place (not write + rename) and deeply nested
//! YAML. A file caught half-written is never served, an emptied policy is served only once
//! it has rested and with a warning, and nesting is refused before the parser sees it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use tonic::transport::Channel;

use crate::common::{MIXER, ServerProcess, mixer_command};
use crate::common::{check_request, config_dir, s, status_of, write_file};

const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;

/// A policy denying every request, as three documents; the rule comes last, so every
/// prefix of the file that ends on a document boundary is a valid config with no rule.
const DENY_ALL_PIECES: [&str; 3] = [
    "apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyall, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: denied by policy}
---
",
    "apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
",
    "apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-everything, namespace: istio-system}
spec:
  match: \"true\"
  actions:
  - handler: denyall
    instances: [nothing]
",
];

fn deny_all() -> String {
    DENY_ALL_PIECES.concat()
}

async fn client(server: &ServerProcess) -> MixerClient<Channel> {
    MixerClient::connect(server.api_url())
        .await
        .expect("connects")
}

/// The precondition code of one Check.
async fn check_code(client: &mut MixerClient<Channel>) -> i32 {
    let request = check_request(&[("request.path", s("/anything"))], &[]);
    let response = client.check(request).await.expect("Check answers");
    status_of(&response.into_inner()).0
}

/// Polls Check until it answers `code`, for at most `timeout`.
async fn until_check_is(client: &mut MixerClient<Channel>, code: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check_code(client).await == code {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits until the server log contains `needle`, for at most `timeout`.
fn until_logged(server: &ServerProcess, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if server.log().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The server's `--reload-debounce` (set by `ServerProcess`).
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Rewrites `path` in place again and again until `stop`: truncate, then the documents
/// one by one (each state in between meant to live a couple of milliseconds), then a rest
/// whose length sweeps across the debounce so that some reloads start while the next
/// rewrite is under way. Every rewrite ends with a distinct comment. Returns the number
/// of rewrites and the longest any state without the rule actually lived (the writer can
/// be descheduled on a busy machine).
fn rewrite_in_place_until(path: &Path, stop: &AtomicBool) -> (usize, Duration) {
    const RESTS_MS: [u64; 7] = [95, 105, 115, 125, 135, 145, 155];
    let (mut rewrites, mut longest_partial) = (0, Duration::ZERO);
    while !stop.load(Ordering::Relaxed) {
        let mut began = Instant::now();
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .expect("policy file opens");
        std::thread::sleep(Duration::from_millis(2));
        for piece in DENY_ALL_PIECES {
            file.write_all(piece.as_bytes()).unwrap();
            longest_partial = longest_partial.max(began.elapsed());
            began = Instant::now();
            std::thread::sleep(Duration::from_millis(2));
        }
        writeln!(file, "# rewrite {rewrites}").unwrap();
        drop(file);
        std::thread::sleep(Duration::from_millis(RESTS_MS[rewrites % RESTS_MS.len()]));
        rewrites += 1;
    }
    (rewrites, longest_partial)
}

/// Checks as fast as one client goes for `length` while `policy` is rewritten in place:
/// (denied, let through, rewrites, longest a state without the rule lived).
async fn churn(
    c: &mut MixerClient<Channel>,
    policy: &Path,
    length: Duration,
) -> (u32, u32, usize, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (policy, stop) = (policy.to_path_buf(), stop.clone());
        std::thread::spawn(move || rewrite_in_place_until(&policy, &stop))
    };
    let (mut denied, mut let_through) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < length {
        match check_code(c).await {
            PERMISSION_DENIED => denied += 1,
            _ => let_through += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (rewrites, longest_partial) = writer.join().unwrap();
    (denied, let_through, rewrites, longest_partial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row14_policy_rewritten_in_place_never_lets_a_check_through() {
    let dir = config_dir(&[("policy.yaml", &deny_all())]);
    let policy = dir.path().join("policy.yaml");
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut c = client(&server).await;
    assert!(
        until_check_is(&mut c, PERMISSION_DENIED, Duration::from_secs(10)).await,
        "the deny-all policy is served: {}",
        server.log()
    );

    // A state without the rule that lived twice the debounce may be served, as a policy
    // deliberately cut down would be: such a run (a writer descheduled that long) proves
    // nothing, and is run again.
    let mut stalls = Vec::new();
    loop {
        let (denied, let_through, rewrites, longest_partial) =
            churn(&mut c, &policy, Duration::from_secs(6)).await;
        eprintln!(
            "row 14: {denied} denied, {let_through} let through, {rewrites} rewrites, \
             longest state without the rule {longest_partial:?}"
        );
        if longest_partial >= 2 * DEBOUNCE {
            stalls.push(longest_partial);
            assert!(stalls.len() < 3, "the writer kept stalling: {stalls:?}");
            continue;
        }
        assert!(rewrites >= 20, "{rewrites} rewrites");
        assert!(denied > 100, "{denied} Checks");
        assert_eq!(
            let_through,
            0,
            "Checks let through while the policy was rewritten in place ({denied} denied, \
             {rewrites} rewrites, states without the rule lived at most {longest_partial:?}): \
             {}",
            server.log()
        );
        break;
    }

    // A policy genuinely emptied, left alone: served once it has rested, with a warning
    // naming the file.
    let emptied = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&policy)
        .unwrap();
    drop(emptied);
    assert!(
        until_check_is(&mut c, OK, Duration::from_secs(10)).await,
        "the emptied policy is applied in the end: {}",
        server.log()
    );
    let log = server.log();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("every rule"))
        .unwrap_or_else(|| panic!("no warning about the removed rules: {log}"));
    assert!(warning.contains("policy.yaml"), "{warning}");
}

/// A file whose single document nests `unit` `repeat` times.
fn nested(unit: &str, repeat: usize) -> String {
    unit.repeat(repeat)
}

/// Runs `mixer validate DIR`, killed after 60 s; its output and how long it took.
fn validate(dir: &Path) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = mixer_command()
        .arg("validate")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mixer validate starts");
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    (output, started.elapsed())
}

#[test]
fn row15_deeply_nested_yaml_fails_fast_in_validate_naming_file_line_and_limit() {
    // 200 KB each: `[` took 6 s and `{a: ` 20 s of CPU (debug build) before the parser
    // gave up at its recursion limit; `{a: ` grows quadratically.
    let cases = [
        ("brackets.yaml", nested("[", 200_000)),
        ("braces.yaml", nested("{", 200_000)),
        ("keys.yaml", nested("{a: ", 50_000)),
        (
            "value.yaml",
            format!(
                "kind: rule\nmetadata: {{name: deep}}\nspec:\n  match: 'true'\n  x: {}\n",
                nested("[", 200_000)
            ),
        ),
    ];
    for (name, text) in cases {
        let dir = config_dir(&[(name, &text)]);
        let (output, took) = validate(dir.path());
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprintln!("row 15: validate {name} took {took:?}");
        assert!(!output.status.success(), "{name}: {stdout}");
        assert!(
            took < Duration::from_secs(3),
            "{name}: validate took {took:?}"
        );
        let line = if name == "value.yaml" { 5 } else { 1 };
        let error = stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name}: no error naming the file: {stdout}"));
        assert!(
            error.contains(&format!("{name}:{line}: ")) && error.contains("100 levels"),
            "{name}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row15_deeply_nested_yaml_leaves_a_running_server_on_its_last_good_config() {
    let dir = config_dir(&[("policy.yaml", &deny_all())]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut c = client(&server).await;
    assert!(until_check_is(&mut c, PERMISSION_DENIED, Duration::from_secs(10)).await);

    let cpu_before = server.cpu_time();
    write_file(dir.path(), "deep.yaml", &nested("{a: ", 50_000));
    assert!(
        until_logged(&server, "Configuration rejected", Duration::from_secs(10)),
        "the nested file is rejected within seconds: {}",
        server.log()
    );
    let cpu = server.cpu_time() - cpu_before;
    eprintln!("row 15: the rejected reload cost the server {cpu:?} of CPU");
    assert!(
        cpu < Duration::from_secs(3),
        "the rejected reload cost {cpu:?} of CPU"
    );
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("deep.yaml:1:") && l.contains("100 levels")),
        "{log}"
    );

    assert_eq!(check_code(&mut c).await, PERMISSION_DENIED);
    let status = server
        .monitoring_get("/healthz", Duration::from_secs(5))
        .expect("healthz answers")
        .status;
    assert_eq!(status, 200);
}
