//! Rows 5 and 6: a connection that stalls its requests, and connections that idle or pile
//! up until the process has no file descriptors left.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Code;

use crate::common::config_dir;
use crate::common::{MIXER, ServerProcess};

const MIB: u64 = 1024 * 1024;

/// The gRPC status of a response: from its headers (trailers-only) or its trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> Option<i32> {
    let response = response.await.ok()?;
    let from_headers = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    if from_headers.is_some() {
        return from_headers;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.ok()??;
    trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

fn report_request() -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri("http://localhost/istio.mixer.v1.Mixer/Report")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row5_stalled_streams_cannot_hold_memory() {
    let dir = config_dir(&[]);
    let server = ServerProcess::start(
        MIXER,
        dir.path(),
        &[
            "--max-connection-buffered-bytes",
            "16777216",
            "--request-read-timeout",
            "3s",
        ],
    );
    let baseline = server.rss_bytes();
    let tcp = tokio::net::TcpStream::connect(&server.api).await.unwrap();
    let (mut h2, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 30)
        .initial_connection_window_size(1 << 30)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);

    // 200 streams on one connection, each sending 900 KB of a message that says it is
    // 1 000 000 bytes long, then nothing more.
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&1_000_000u32.to_be_bytes());
    let mut partial = prefix;
    partial.resize(5 + 900_000, 0);
    let partial = Bytes::from(partial);
    let mut responses = Vec::new();
    for _ in 0..200 {
        h2 = h2.ready().await.unwrap();
        let (response, mut body) = h2.send_request(report_request(), false).unwrap();
        body.send_data(partial.clone(), false).unwrap();
        responses.push((response, body));
    }
    let (responses, _bodies): (Vec<_>, Vec<_>) = responses.into_iter().unzip();
    let mut codes = Vec::new();
    for r in responses {
        let code = tokio::time::timeout(Duration::from_secs(30), grpc_status(r))
            .await
            .expect("every stalled call is answered");
        codes.push(code);
    }
    let exhausted = codes
        .iter()
        .filter(|c| **c == Some(Code::ResourceExhausted as i32))
        .count();
    let timed_out = codes
        .iter()
        .filter(|c| **c == Some(Code::DeadlineExceeded as i32))
        .count();
    let peak = server.peak_rss_bytes();
    eprintln!(
        "row 5: 200 stalled 900 KB streams: {exhausted} RESOURCE_EXHAUSTED, {timed_out} DEADLINE_EXCEEDED, peak RSS {} MiB (baseline {} MiB), RSS after {} MiB",
        peak / MIB,
        baseline / MIB,
        server.rss_bytes() / MIB
    );
    assert!(exhausted > 150, "{codes:?}");
    assert_eq!(exhausted + timed_out, 200, "{codes:?}");
    assert!(peak < baseline + 120 * MIB, "peak RSS {} MiB", peak / MIB);

    // A message whose prefix is over --max-message-size is refused at once, naming the flag.
    let tcp = tokio::net::TcpStream::connect(&server.api).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let (response, mut body) = h2.send_request(report_request(), false).unwrap();
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&(64u32 << 20).to_be_bytes());
    body.send_data(Bytes::from(prefix), false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap();
    let headers = response.headers();
    assert_eq!(headers["grpc-status"], "8", "{headers:?}");
    let message = headers["grpc-message"].to_str().unwrap();
    assert!(message.contains("--max-message-size"), "{message}");
}

/// Opens up to `n` TCP connections to `addr` that never send a byte. Stops at the first
/// that does not connect within a second: the listen backlog is full, and the kernel would
/// only make later ones wait tens of seconds in SYN retries.
fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    (0..n)
        .map_while(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
        .collect()
}

/// True when the server closed `conn` within `wait`.
fn closed_by_server(conn: &mut TcpStream, wait: Duration) -> bool {
    conn.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            // A server may write a preface or GOAWAY before closing.
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn row6_idle_connections_are_closed() {
    let dir = config_dir(&[]);
    let server = ServerProcess::start(MIXER, dir.path(), &["--connection-idle-timeout", "1s"]);
    let mut api = idle_connections(&server.api, 50);
    let mut monitoring = idle_connections(&server.monitoring, 50);
    assert_eq!(api.len() + monitoring.len(), 100);
    let started = Instant::now();
    for conn in api.iter_mut().chain(monitoring.iter_mut()) {
        assert!(
            closed_by_server(conn, Duration::from_secs(10)),
            "an idle connection stayed open"
        );
    }
    eprintln!(
        "row 6: 100 idle connections closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn row6_connection_cap_keeps_healthz_answering() {
    let dir = config_dir(&[]);
    // 64 descriptors: a few hundred connections would exhaust them.
    let server = ServerProcess::start_prlimited(
        MIXER,
        dir.path(),
        64,
        &[
            "--max-connections",
            "20",
            "--connection-idle-timeout",
            "30s",
        ],
    );
    let held = idle_connections(&server.api, 200);
    std::thread::sleep(Duration::from_millis(300));
    let cpu = server.cpu_time();
    let healthz = test_support::http::get(&*server.monitoring, "/healthz", Duration::from_secs(5))
        .expect("/healthz answers while the gRPC listener is at its cap");
    let (status, took) = (healthz.status, healthz.elapsed);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(2));
    let spent = server.cpu_time().saturating_sub(cpu);
    eprintln!(
        "row 6: {} connections held, cap 20: /healthz in {took:?}, server CPU over 2 s: {spent:?}",
        held.len()
    );
    assert!(spent < Duration::from_millis(500), "{spent:?}");
    drop(held);
}

#[test]
fn row6_out_of_descriptors_backs_off_and_recovers() {
    let dir = config_dir(&[]);
    let server = ServerProcess::start_prlimited(
        MIXER,
        dir.path(),
        64,
        &[
            "--max-connections",
            "10000",
            "--connection-idle-timeout",
            "2s",
        ],
    );
    // More connections than the process has descriptors: accepting fails with EMFILE.
    let held = idle_connections(&server.api, 200);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = server.cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let spent = server.cpu_time().saturating_sub(cpu);
    // The idle connections are closed, descriptors return, /healthz answers again.
    let recovered = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        test_support::http::get(&*server.monitoring, "/healthz", Duration::from_secs(1))
            .is_ok_and(|r| r.status == 200)
    });
    eprintln!(
        "row 6: out of descriptors with {} connections: server CPU over 1 s {spent:?}; /healthz recovered: {recovered}",
        held.len()
    );
    assert!(spent < Duration::from_millis(500), "{spent:?}");
    assert!(recovered);
    assert!(server.log().contains("Cannot accept connections"));
    drop(held);
}
