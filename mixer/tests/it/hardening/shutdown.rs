//! Row 13: SIGTERM while the access log's stdout is a pipe nobody reads.

use std::process::Stdio;
use std::time::Duration;

use mixer::attrs::{GLOBAL_WORD_COUNT, encode_report};
use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;

use crate::common::s;
use crate::common::{MIXER, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row13_shutdown_has_a_deadline() {
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/default");
    let dir = tempfile::tempdir().unwrap();
    for f in ["attributes.yaml", "accesslog.yaml"] {
        std::fs::copy(format!("{samples}/{f}"), dir.path().join(f)).unwrap();
    }
    // stdout is a pipe this test holds and never reads.
    let mut server = ServerProcess::start_with(
        MIXER,
        dir.path(),
        &["--shutdown-timeout", "2s"],
        Stdio::piped(),
    );
    let _unread = server.child.stdout.take();
    let mut c = MixerClient::connect(server.api_url()).await.unwrap();
    let now = expr_lang::golib::time::Timestamp::from_unix(1_700_000_000, 0);
    let set: Vec<(String, expr_lang::Value<'static>)> = vec![
        ("request.path".into(), s(&"/p".repeat(200))),
        ("context.protocol".into(), s("http")),
        ("destination.service.host".into(), s("reviews")),
        ("request.time".into(), expr_lang::Value::Timestamp(now)),
        ("response.time".into(), expr_lang::Value::Timestamp(now)),
    ];
    // Far more access-log lines than a pipe holds (64 KiB).
    for _ in 0..20 {
        let report = encode_report(GLOBAL_WORD_COUNT as u32, &vec![set.clone(); 50]);
        c.report(report).await.unwrap();
    }
    server.terminate();
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the server exits within the shutdown deadline");
    assert_eq!(status.code(), Some(1), "{status:?}");
    let log = server.log();
    assert!(
        log.contains("Shutdown did not finish within --shutdown-timeout")
            && log.contains("flushing handler stdio"),
        "{log}"
    );
}
