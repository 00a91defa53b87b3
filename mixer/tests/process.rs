//! The `mixer` binary as a user runs it: `mixer server` on the sample config, `mixer check`
//! and `mixer report` against it, and a clean exit on SIGTERM.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{ServerProcess, mixer_command};

fn samples_default() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/default"))
}

#[test]
fn server_on_samples_check_report_and_sigterm() {
    let mut server = ServerProcess::start(samples_default(), &[]);

    let out = mixer_command()
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

    let out = mixer_command()
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

    let out = mixer_command()
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

    let out = mixer_command()
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
    let out = mixer_command()
        .args(["server", "--configStoreURL", "k8s://"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only fs:// stores are supported"));
    let out = mixer_command().args(["server"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config-dir"));
}
