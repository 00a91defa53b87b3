//! The `mixer` binary as a user runs it: `mixer server` on the sample config, `mixer check`
//! and `mixer report` against it, a clean exit on SIGTERM, and `--ready-file`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::http;
use test_support::process::{Ready, wait_for_ready_file};

use crate::common::{MIXER, ServerProcess, config_dir, mixer_command};

fn samples_default() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/default"))
}

#[test]
fn server_on_samples_check_report_and_sigterm() {
    let mut server = ServerProcess::start(MIXER, samples_default(), &[]);

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
    let resp = http::get(&*server.monitoring, "/readyz", Duration::from_secs(10));
    assert!(resp.unwrap().head.starts_with("HTTP/1.1 200"));

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
        .args(["server", "--configStoreURL", "mcp://galley:9901"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only fs:// and k8s:// stores are supported")
    );
    let out = mixer_command().args(["server"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config-dir"));
}

#[test]
fn ready_file_names_the_bound_ports_once_the_server_is_ready() {
    let config = config_dir(&[]);
    let ports = [
        test_support::free_port(),
        test_support::free_port(),
        test_support::free_port(),
    ];
    let [api, monitoring, prometheus] = ports.map(|p| format!("127.0.0.1:{p}"));
    let dir = tempfile::tempdir().unwrap();
    let ready_file = dir.path().join("ready.json");
    let mut child = mixer_command()
        .args(["server", "--address", &api])
        .args(["--monitoring-address", &monitoring])
        .args(["--prometheus-address", &prometheus])
        .arg("--config-dir")
        .arg(config.path())
        .arg("--ready-file")
        .arg(&ready_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_for_ready_file(&ready_file, &mut child, Duration::from_secs(60));
    let answers = ready.as_ref().ok().map(|ready| {
        (
            http::get(&*ready.monitoring, "/readyz", Duration::from_secs(10)).map(|r| r.status),
            http::get(&*ready.prometheus, "/metrics", Duration::from_secs(10)).map(|r| r.status),
            mixer_command()
                .args(["check", "--address", &ready.api, "-a", "request.path=/x"])
                .output()
                .map(|out| out.status.code()),
        )
    });
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let _ = child.kill();
    let _ = child.wait();

    let ready = ready.unwrap();
    assert_eq!(
        ready,
        Ready {
            api,
            monitoring,
            prometheus,
            pid: child.id(),
        }
    );
    // Each address is the listener it names, and ready (the first load is done).
    let (readyz, metrics, check) = answers.unwrap();
    assert_eq!(readyz.unwrap(), 200);
    assert_eq!(metrics.unwrap(), 200);
    assert_eq!(check.unwrap(), Some(0), "mixer check on the API address");
    // Written through a temporary file that was renamed, not left behind.
    assert_eq!(leftovers, ["ready.json"]);
}

#[test]
fn ready_file_addresses_match_the_log_on_free_ports() {
    let config = config_dir(&[]);
    let server = ServerProcess::start(MIXER, config.path(), &[]);
    let expected = [
        ("gRPC API listening", &server.api),
        ("Monitoring endpoints listening", &server.monitoring),
        ("Prometheus exposition listening", &server.prometheus),
    ];
    let logged = |log: &str| {
        expected.iter().all(|(listener, address)| {
            log.lines()
                .any(|l| l.contains(listener) && l.contains(&format!("address={address}")))
        })
    };
    // The lines were written before the ready file; the log reader may still be on its way.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logged(&server.log()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (_, address) in &expected {
        assert!(!address.ends_with(":0"), "{address}");
    }
    assert!(logged(&server.log()), "{expected:?}:\n{}", server.log());
}
