//! The Envoy launcher and the upstream work together: a request through a real Envoy
//! reaches the upstream with its headers.

use std::time::Duration;

use test_support::envoy_process::EnvoyProcess;
use test_support::free_port;
use test_support::upstream::Upstream;

#[test]
fn a_request_through_envoy_reaches_the_upstream() {
    let upstream = Upstream::start();
    let listener = free_port();
    let bootstrap = format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: http
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listener}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}
"#,
        upstream = upstream.port()
    );
    let envoy = EnvoyProcess::start(&bootstrap);
    let response = test_support::http::request(
        ("127.0.0.1", listener),
        "GET",
        "/hello?x=1",
        &[("x-test", "yes")],
        Duration::from_secs(10),
    )
    .expect("Envoy answers");
    assert_eq!(response.status, 200, "{}", envoy.log());
    assert_eq!(response.header("x-upstream"), Some("echo"));
    let seen = upstream
        .last("/hello")
        .expect("the upstream saw the request");
    assert_eq!(seen.path, "/hello?x=1");
    assert_eq!(seen.headers.get("x-test").map(String::as_str), Some("yes"));
    assert!(
        envoy
            .stat("http.http.downstream_rq_2xx")
            .is_some_and(|n| n >= 1)
    );
}
