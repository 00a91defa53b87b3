//! The `listchecker` adapter's provider is an untrusted peer (issue table rows 7, 8 and 9):
//! a huge body is cut at `maxProviderBodyBytes`, a regex list too big to compile is
//! rejected off the async workers, and credentials in `providerUrl` are never shown. In
//! every case the last good list keeps answering.
//!
//! The provider is a small HTTP/1.1 server in this file, on loopback, whose answer the
//! test changes while the mixer server runs.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use tonic::transport::Channel;

use crate::common::{MIXER, ServerProcess};
use crate::common::{check, config_dir, map, status_of};

const MIB: u64 = 1024 * 1024;
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAVAILABLE: i32 = 14;

/// What the test provider answers to `GET`.
#[derive(Clone)]
enum Answer {
    /// A list, with its Content-Length.
    List(String),
    /// 1 GiB of list lines, produced while being sent (never held in memory); every other
    /// response declares its length, the others end at connection close.
    Huge,
}

/// 1 GiB: the body of the hostile provider in row 7.
const HUGE_BODY_BYTES: u64 = 1 << 30;

#[derive(Default)]
struct Stats {
    /// Requests answered, any answer.
    requests: AtomicUsize,
    /// Huge responses finished (sent whole, or cut by the client hanging up).
    huge_done: AtomicUsize,
    /// The most bytes of one huge body the client accepted before hanging up.
    huge_max_sent: AtomicU64,
    /// Requests refused for lacking the expected credentials.
    unauthorized: AtomicUsize,
}

/// A list provider on a free loopback port.
struct ListProvider {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    stats: Arc<Stats>,
}

impl ListProvider {
    /// Serves `answer`; with `auth`, only to requests carrying that `Authorization` header
    /// value and the request target (path and query), others get 401.
    fn start(answer: Answer, auth: Option<(&str, &str)>) -> ListProvider {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new(answer));
        let stats = Arc::new(Stats::default());
        let auth = auth.map(|(h, t)| (h.to_owned(), t.to_owned()));
        let (shared_answer, shared_stats) = (answer.clone(), stats.clone());
        // Lives as long as the test binary; each connection gets its own thread.
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (answer, stats, auth) =
                    (shared_answer.clone(), shared_stats.clone(), auth.clone());
                std::thread::spawn(move || serve(stream, &answer, &stats, auth.as_ref()));
            }
        });
        ListProvider {
            port,
            answer,
            stats,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

/// Answers one request, then closes the connection.
fn serve(
    mut stream: TcpStream,
    answer: &Mutex<Answer>,
    stats: &Stats,
    auth: Option<&(String, String)>,
) {
    let Some((target, authorization)) = read_request_head(&stream) else {
        return;
    };
    let n = stats.requests.fetch_add(1, Ordering::SeqCst);
    if let Some((want_header, want_target)) = auth
        && (authorization.as_deref() != Some(want_header.as_str()) || target != *want_target)
    {
        stats.unauthorized.fetch_add(1, Ordering::SeqCst);
        let _ = stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let answer = answer.lock().unwrap().clone();
    match answer {
        Answer::List(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: \
                 close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
        Answer::Huge => {
            let sent = send_huge_body(&mut stream, n.is_multiple_of(2));
            stats.huge_max_sent.fetch_max(sent, Ordering::SeqCst);
            stats.huge_done.fetch_add(1, Ordering::SeqCst);
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// Reads the request line and headers (bounded): the request target and the
/// `Authorization` header, if any.
fn read_request_head(stream: &TcpStream) -> Option<(String, Option<String>)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_owned();
    let mut authorization = None;
    for _ in 0..100 {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            return Some((target, authorization));
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
    None
}

/// Streams [`HUGE_BODY_BYTES`] of 64-byte list lines until done or the client hangs up:
/// the body bytes the client accepted.
fn send_huge_body(stream: &mut TcpStream, declare_length: bool) -> u64 {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let head = if declare_length {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {HUGE_BODY_BYTES}\r\nConnection: close\r\n\r\n")
    } else {
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_owned()
    };
    if stream.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let line = format!("{}\n", "h".repeat(63));
    let chunk = line.repeat(1024);
    let mut sent = 0;
    while sent < HUGE_BODY_BYTES {
        if stream.write_all(chunk.as_bytes()).is_err() {
            break;
        }
        sent += chunk.len() as u64;
    }
    sent
}

/// A port nothing listens on.
fn refused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A listchecker handler `name` over `url`, a `listentry` instance of
/// `source.labels["app"]`, and a rule applying the handler when
/// `source.labels["case"] == name`.
fn list_config(name: &str, extra_params: &str, url: &str) -> String {
    format!(
        r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: {name}, namespace: istio-system}}
spec:
  compiledAdapter: listchecker
  params:
    providerUrl: "{url}"
    refreshInterval: 1s
    ttl: 600s
{extra_params}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: check{name}, namespace: istio-system}}
spec:
  match: source.labels["case"] == "{name}"
  actions:
  - handler: {name}
    instances: [sourceapp]
---
"#
    )
}

const SOURCE_APP_INSTANCE: &str = r#"apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: sourceapp, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: source.labels["app"] | ""
"#;

/// Checks `app` against the rule for handler `case`: (code, message, time taken).
async fn check_app(
    client: &mut MixerClient<Channel>,
    case: &str,
    app: &str,
) -> (i32, String, Duration) {
    let started = Instant::now();
    let response = check(
        client,
        &[("source.labels", map(&[("app", app), ("case", case)]))],
    )
    .await
    .expect("the Check RPC answers");
    let (code, message) = status_of(&response);
    (code, message, started.elapsed())
}

/// Polls until the check of `app` under `case` gives `code` (bounded): the last answer.
async fn wait_for_code(
    client: &mut MixerClient<Channel>,
    case: &str,
    app: &str,
    code: i32,
) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, message, _) = check_app(client, case, app).await;
        if got == code || Instant::now() > deadline {
            return (got, message);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `done` every 50 ms until it holds or `limit` passes: whether it held.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Row 7: the provider answers with 1 GiB (with and without a Content-Length). Before:
/// the whole body was buffered (several GB peak). Now the body is read up to
/// `maxProviderBodyBytes` (default 8 MiB), the refresh fails naming that param, and the
/// last good list keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row7_huge_provider_body_is_cut_at_the_cap() {
    let provider = ListProvider::start(Answer::List("alpha\nbeta\n".to_owned()), None);
    let url = format!("http://127.0.0.1:{}/list", provider.port);
    let dir = config_dir(&[
        ("instance.yaml", SOURCE_APP_INSTANCE),
        ("biglist.yaml", &list_config("biglist", "", &url)),
    ]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut client = MixerClient::connect(server.api_url()).await.unwrap();
    let (code, message) = wait_for_code(&mut client, "biglist", "alpha", OK).await;
    assert_eq!(code, OK, "the first list never arrived: {message}");

    provider.set(Answer::Huge);
    let stats = provider.stats.clone();
    let served = wait_until(Duration::from_secs(120), || {
        stats.huge_done.load(Ordering::SeqCst) >= 4
    })
    .await;
    let peak = server.peak_rss_bytes();
    let max_sent = provider.stats.huge_max_sent.load(Ordering::SeqCst);
    eprintln!(
        "row7: {} huge responses, at most {} MiB of one accepted; peak RSS {} MiB",
        provider.stats.huge_done.load(Ordering::SeqCst),
        max_sent / MIB,
        peak / MIB
    );
    assert!(served, "the provider was not asked again: {}", server.log());
    assert!(peak < 150 * MIB, "peak RSS {} MiB", peak / MIB);
    // The cap plus what the socket buffers held.
    assert!(
        max_sent < 64 * MIB,
        "{} MiB of one body read",
        max_sent / MIB
    );

    // The last good list still decides.
    let (code, message, _) = check_app(&mut client, "biglist", "alpha").await;
    assert_eq!((code, message.as_str()), (OK, ""));
    let (code, message, _) = check_app(&mut client, "biglist", "gamma").await;
    assert_eq!(
        (code, message.as_str()),
        (
            PERMISSION_DENIED,
            "biglist.istio-system:gamma is not whitelisted"
        )
    );
    let log = server.log();
    for form in ["declares", "exceeds"] {
        assert!(
            log.lines()
                .any(|l| l.contains("maxProviderBodyBytes") && l.contains(form)),
            "no body-cap error ({form}) in the log: {log}"
        );
    }
}

/// 50 copies of `\w{100}x`: each `\w` is a large Unicode class, so the set compiles to
/// far more than the compile budget.
fn hostile_regex_list() -> String {
    "\\w{100}x\n".repeat(50)
}

/// Row 8: a REGEX provider list of 50 × `\w{100}x`. Before: every refresh spent seconds
/// compiling it on an async worker (and the per-pattern diagnosis compiled each pattern
/// again). Now it is compiled on a blocking thread within a size budget, rejected once
/// with an error naming the budget, and an identical body is not compiled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row8_hostile_regex_list_is_rejected_off_the_async_workers() {
    let provider = ListProvider::start(Answer::List("^alpha$\n".to_owned()), None);
    let url = format!("http://127.0.0.1:{}/list", provider.port);
    let dir = config_dir(&[
        ("instance.yaml", SOURCE_APP_INSTANCE),
        (
            "regexlist.yaml",
            &list_config("regexlist", "    entryType: REGEX", &url),
        ),
    ]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut client = MixerClient::connect(server.api_url()).await.unwrap();
    let (code, message) = wait_for_code(&mut client, "regexlist", "alpha", OK).await;
    assert_eq!(code, OK, "the first list never arrived: {message}");

    provider.set(Answer::List(hostile_regex_list()));
    let stats = provider.stats.clone();
    let before = stats.requests.load(Ordering::SeqCst);
    let asked = wait_until(Duration::from_secs(60), || {
        stats.requests.load(Ordering::SeqCst) >= before + 2
    })
    .await;
    assert!(asked, "the provider was not asked again: {}", server.log());

    // A window of several refreshes: CPU spent, and the slowest /healthz and Check.
    let window = Duration::from_secs(6);
    let cpu_before = server.cpu_time();
    let requests_before = stats.requests.load(Ordering::SeqCst);
    let monitoring = server.monitoring.clone();
    let healthz = tokio::task::spawn_blocking(move || {
        let mut slowest = Duration::ZERO;
        let started = Instant::now();
        while started.elapsed() < window {
            let healthz =
                test_support::http::get(&*monitoring, "/healthz", Duration::from_secs(20))
                    .expect("/healthz answers");
            let (status, took) = (healthz.status, healthz.elapsed);
            assert_eq!(status, 200);
            slowest = slowest.max(took);
            std::thread::sleep(Duration::from_millis(20));
        }
        slowest
    });
    let mut slowest_check = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < window {
        let (code, message, took) = check_app(&mut client, "regexlist", "alpha").await;
        // The last good list keeps answering.
        assert_eq!((code, message.as_str()), (OK, ""));
        slowest_check = slowest_check.max(took);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slowest_healthz = healthz.await.unwrap();
    let cpu = server.cpu_time().saturating_sub(cpu_before);
    let refreshes = stats.requests.load(Ordering::SeqCst) - requests_before;
    eprintln!(
        "row8: {refreshes} refreshes in {window:?}: server CPU {cpu:?}, slowest /healthz \
         {slowest_healthz:?}, slowest Check {slowest_check:?}"
    );
    assert!(refreshes >= 2, "only {refreshes} refreshes in {window:?}");
    assert!(
        slowest_healthz < Duration::from_secs(1),
        "{slowest_healthz:?}"
    );
    assert!(slowest_check < Duration::from_secs(1), "{slowest_check:?}");
    // Refreshing an identical rejected body costs a fetch, not a compilation.
    assert!(
        cpu < Duration::from_secs(2),
        "server CPU {cpu:?} in {window:?}"
    );

    let (code, message, _) = check_app(&mut client, "regexlist", "beta").await;
    assert_eq!(
        (code, message.as_str()),
        (
            PERMISSION_DENIED,
            "regexlist.istio-system:beta is not whitelisted"
        )
    );
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("compile budget") && l.contains("regexlist")),
        "no compile budget error in the log: {log}"
    );
}

/// Row 9: `providerUrl` with `user:password@` and `?token=secret`. Before: the whole URL
/// was in the Check's UNAVAILABLE message, in the fetch logs and in validation errors.
/// Now every display shows `user:xxxxx@...?xxxxx`, while the fetch still sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_provider_url_credentials_are_never_shown() {
    // base64("user:password")
    let provider = ListProvider::start(
        Answer::List("alpha\n".to_owned()),
        Some(("Basic dXNlcjpwYXNzd29yZA==", "/list?token=secret")),
    );
    let served = format!(
        "http://user:password@127.0.0.1:{}/list?token=secret",
        provider.port
    );
    let refused = format!(
        "http://user:password@127.0.0.1:{}/list?token=secret",
        refused_port()
    );
    let malformed = "http://user:password@127.0.0.1:notaport/list?token=secret";
    let dir = config_dir(&[
        ("instance.yaml", SOURCE_APP_INSTANCE),
        ("fetched.yaml", &list_config("fetched", "", &served)),
        ("refused.yaml", &list_config("refused", "", &refused)),
        ("malformed.yaml", &list_config("malformed", "", malformed)),
    ]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    let mut client = MixerClient::connect(server.api_url()).await.unwrap();

    // The credentials still reach the provider.
    let (code, message) = wait_for_code(&mut client, "fetched", "alpha", OK).await;
    assert_eq!(code, OK, "the authenticated fetch failed: {message}");
    assert_eq!(provider.stats.unauthorized.load(Ordering::SeqCst), 0);

    // The provider that refuses connections: the denial names the URL, redacted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let (code, message, _) = check_app(&mut client, "refused", "alpha").await;
        if (code == UNAVAILABLE && message.contains("no fetch has succeeded"))
            || Instant::now() > deadline
        {
            break message;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("row9: denial: {message}");
    assert!(message.contains("no fetch has succeeded"), "{message}");
    assert!(message.contains("127.0.0.1"), "{message}");
    for secret in ["password", "secret"] {
        assert!(
            !message.contains(secret),
            "{secret:?} in the denial: {message}"
        );
    }

    let response = server
        .monitoring_get("/debug/config", Duration::from_secs(10))
        .expect("/debug/config answers");
    let (status, debug_config) = (response.status, response.text());
    assert_eq!(status, 200);
    let log = server.log();
    // The three URLs were each shown somewhere: a fetch, a failure, a validation error.
    assert!(log.contains("Fetched a new listchecker list"), "{log}");
    assert!(log.contains("params.providerUrl"), "{log}");
    for (place, text) in [("log", &log), ("/debug/config", &debug_config)] {
        for secret in ["password", "secret"] {
            assert!(!text.contains(secret), "{secret:?} in the {place}: {text}");
        }
    }
}
