//! The README's "Use with Envoy" walk-through, as written: `samples/envoy/gateway.yaml`
//! in front of a server on `samples/default` and `samples/policy/envoy` gives a denial, a
//! 429 on the sixth request and Istio's request metric; `samples/envoy/sidecar.yaml`
//! reports its workload from the node metadata. Only the ports differ (free ones).

use std::time::{Duration, Instant};

use test_support::config::samples_dir;
use test_support::envoy_process::EnvoyProcess;
use test_support::free_port;

use crate::common::*;

/// The sample's text with its fixed ports replaced by free ones, and the server's.
fn bootstrap(name: &str, ports: &[(u16, u16)]) -> String {
    let mut text = std::fs::read_to_string(samples_dir().join("envoy").join(name)).unwrap();
    for (from, to) in ports {
        text = text.replace(
            &format!("port_value: {from}}}"),
            &format!("port_value: {to}}}"),
        );
    }
    text
}

fn server() -> ServerProcess {
    let policy = samples_dir().join("policy/envoy");
    ServerProcess::start(
        MIXER,
        &samples_dir().join("default"),
        &["--config-dir", policy.to_str().unwrap()],
    )
}

fn get(port: u16, path: &str) -> test_support::http::Response {
    test_support::http::request(
        ("127.0.0.1", port),
        "GET",
        path,
        &[("x-request-id", "readme-walkthrough")],
        Duration::from_secs(10),
    )
    .expect("Envoy answers")
}

/// The scrape's `istio_requests_total` lines, once one has all of `labels`.
fn wait_for_series(server: &ServerProcess, labels: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let scrape =
            test_support::http::get(&*server.prometheus, "/metrics", Duration::from_secs(5))
                .map(|r| r.text())
                .unwrap_or_default();
        let found = scrape
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .find(|l| labels.iter().all(|label| l.contains(label)));
        if let Some(line) = found {
            return line.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no series with {labels:?}:\n{scrape}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_gateway_sample_denies_limits_and_reports() {
    let server = server();
    let api = server.api.rsplit_once(':').unwrap().1.parse().unwrap();
    let (gateway, app) = (free_port(), free_port());
    let envoy = EnvoyProcess::start(&bootstrap(
        "gateway.yaml",
        &[(15000, 0), (8080, gateway), (8090, app), (9091, api)],
    ));

    let denied = get(gateway, "/untrusted");
    assert_eq!(denied.status, 403, "{}", envoy.log());
    assert_eq!(
        denied.text(),
        "PERMISSION_DENIED:deny-untrusted.istio-system:requests from untrusted workloads are not allowed"
    );
    let codes: Vec<u16> = (0..6).map(|_| get(gateway, "/").status).collect();
    assert_eq!(codes, [200, 200, 200, 200, 200, 429]);

    wait_for_series(
        &server,
        &[
            r#"reporter="source""#,
            r#"destination_service="productpage.default.svc.cluster.local""#,
            r#"source_workload="istio-ingressgateway""#,
            r#"response_code="429""#,
        ],
    );
}

#[test]
fn the_sidecar_sample_reports_its_workload() {
    let server = server();
    let api = server.api.rsplit_once(':').unwrap().1.parse().unwrap();
    let (inbound, workload) = (free_port(), free_port());
    let envoy = EnvoyProcess::start(&bootstrap(
        "sidecar.yaml",
        &[(15001, 0), (8081, inbound), (9080, workload), (9091, api)],
    ));
    let r = get(inbound, "/index.html");
    assert_eq!(r.status, 200, "{}", envoy.log());
    assert_eq!(r.text(), "hello from productpage\n");
    wait_for_series(
        &server,
        &[
            r#"reporter="destination""#,
            r#"destination_workload="productpage-v1""#,
            r#"destination_app="productpage""#,
            r#"destination_version="v1""#,
            r#"response_code="200""#,
        ],
    );
}
