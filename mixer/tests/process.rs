//! The `mixer` binary as a user runs it: `mixer server` on the sample config, `mixer check`
//! and `mixer report` against it, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn mixer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mixer"))
}

struct Server {
    child: Child,
    api: String,
    monitoring: String,
}

/// Starts `mixer server` on free loopback ports and reads the bound addresses from its log.
fn start(config: &Path) -> Server {
    let mut child = mixer()
        .args([
            "server",
            "--address",
            "127.0.0.1:0",
            "--monitoring-address",
            "127.0.0.1:0",
        ])
        .arg("--config-dir")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("mixer server starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut api = None;
    let mut monitoring = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.is_none() || monitoring.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("server logs its addresses");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .map(str::to_owned);
        if line.contains("gRPC API listening") {
            api = addr;
        } else if line.contains("Monitoring endpoints listening") {
            monitoring = addr;
        }
    }
    Server {
        child,
        api: api.unwrap(),
        monitoring: monitoring.unwrap(),
    }
}

fn samples_default() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/default"))
}

#[test]
fn server_on_samples_check_report_and_sigterm() {
    let mut server = start(samples_default());

    let out = mixer()
        .args([
            "check",
            "--address",
            &server.api,
            "-a",
            "source.labels=app:untrusted",
            "-a",
            "context.protocol=http",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("precondition: PERMISSION_DENIED (7): deny-untrusted.istio-system:requests from untrusted workloads are not allowed"), "{text}");
    assert!(text.contains("source.labels[app] (Exact)"), "{text}");

    let out = mixer()
        .args([
            "check",
            "--address",
            &server.api,
            "-a",
            "source.labels=app:reviews",
            "-a",
            "context.protocol=http",
            "-q",
            "requestcount=3",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("precondition: OK"), "{text}");
    assert!(text.contains("REPLACE x-mixer-checked: \"true\""), "{text}");
    // No quota instance has this name: granted, as Mixer does.
    assert!(text.contains("quota requestcount: granted 3"), "{text}");

    let out = mixer()
        .args([
            "report",
            "--address",
            &server.api,
            "-a",
            "request.path=/x",
            "-a",
            "request.size=10",
            "-a",
            "x.custom:INT64=3",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = mixer()
        .args(["check", "--address", &server.api, "-a", "nope=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give its type as nope:TYPE=value"));

    // Health over real HTTP.
    let resp = std::net::TcpStream::connect(&server.monitoring).and_then(|mut s| {
        use std::io::{Read, Write};
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    });
    assert!(resp.unwrap().starts_with("HTTP/1.1 200"));

    // SIGTERM: exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn server_refuses_bad_flags_clearly() {
    let out = mixer()
        .args(["server", "--configStoreURL", "k8s://"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only fs:// stores are supported"));
    let out = mixer().args(["server"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config-dir"));
}
