//! `kubernetesenv` end to end: a real `mixer server` process with Istio 1.4's
//! kubernetesenv handler, instance and rules beside `samples/default`'s metrics, its
//! kube-rs watchers listing pods, replicasets and deployments from the API server fake of
//! `test_support::kube_api`, and Reports whose `source.uid`/`destination.uid` name those
//! pods: the `istio_requests_total` series scraped from the Prometheus port carry the
//! workloads found. Every wait polls for a condition with a generous deadline.

use std::time::{Duration, Instant};

use expr_lang::Value;
use mixer::attrs::{GLOBAL_WORD_COUNT, encode_report};
use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use serde_json::json;
use test_support::config::read_sample;
use test_support::kube_api::KubeApi;
use tonic::transport::Channel;

use crate::common::{MIXER, ServerProcess, config_dir, metric_value, s};

/// How long any condition may take to come true (watch back-off included).
const DEADLINE: Duration = Duration::from_secs(60);

/// Istio 1.4's kubernetesenv configuration (the Helm chart's handler, instance and both
/// rules), the handler pointed at `kubeconfig`.
fn kubernetesenv_yaml(kubeconfig: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: kubernetesenv, namespace: istio-system}}
spec:
  compiledAdapter: kubernetesenv
  params:
    kubeconfigPath: "{kubeconfig}"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: kubeattrgenrulerule, namespace: istio-system}}
spec:
  actions:
  - handler: kubernetesenv
    instances: [attributes]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: tcpkubeattrgenrulerule, namespace: istio-system}}
spec:
  match: context.protocol == "tcp"
  actions:
  - handler: kubernetesenv
    instances: [attributes]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: attributes, namespace: istio-system}}
spec:
  compiledTemplate: kubernetes
  params:
    source_uid: source.uid | ""
    source_ip: source.ip | ip("0.0.0.0")
    destination_uid: destination.uid | ""
    destination_port: destination.port | 0
  attributeBindings:
    source.ip: $out.source_pod_ip | ip("0.0.0.0")
    source.uid: $out.source_pod_uid | "unknown"
    source.labels: $out.source_labels | emptyStringMap()
    source.name: $out.source_pod_name | "unknown"
    source.namespace: $out.source_namespace | "default"
    source.owner: $out.source_owner | "unknown"
    source.serviceAccount: $out.source_service_account_name | "unknown"
    source.workload.uid: $out.source_workload_uid | "unknown"
    source.workload.name: $out.source_workload_name | "unknown"
    source.workload.namespace: $out.source_workload_namespace | "unknown"
    destination.ip: $out.destination_pod_ip | ip("0.0.0.0")
    destination.uid: $out.destination_pod_uid | "unknown"
    destination.labels: $out.destination_labels | emptyStringMap()
    destination.name: $out.destination_pod_name | "unknown"
    destination.namespace: $out.destination_namespace | "default"
    destination.owner: $out.destination_owner | "unknown"
    destination.serviceAccount: $out.destination_service_account_name | "unknown"
    destination.workload.uid: $out.destination_workload_uid | "unknown"
    destination.workload.name: $out.destination_workload_name | "unknown"
    destination.workload.namespace: $out.destination_workload_namespace | "unknown"
"#
    )
}

/// A Deployment `name` in `namespace`, its ReplicaSet `name-hash` and one pod
/// `name-hash-pod` labelled `app`/`version`, applied to the fake.
fn deploy(api: &KubeApi, namespace: &str, name: &str, app: &str, ip: &str) -> String {
    let rs = format!("{name}-5d8f7c9b6");
    let pod = format!("{rs}-x2k4q");
    let owner = |api_version: &str, kind: &str, name: &str| json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": true}]);
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": app}}, "template": {}}
    }));
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": rs, "namespace": namespace,
                     "ownerReferences": owner("apps/v1", "Deployment", name)},
        "spec": {"selector": {"matchLabels": {"app": app}}}
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "namespace": namespace,
                     "labels": {"app": app, "version": "v1"},
                     "ownerReferences": owner("apps/v1", "ReplicaSet", &rs)},
        "spec": {
            "serviceAccountName": format!("bookinfo-{app}"),
            "containers": [{"name": app, "image": "x", "ports": [{"containerPort": 9080}]}]
        },
        "status": {"phase": "Running", "podIP": ip, "hostIP": "192.168.0.7"}
    }));
    format!("kubernetes://{pod}.{namespace}")
}

/// A server on the fake's cluster, with `samples/default`'s metrics.
fn start(api: &KubeApi) -> (ServerProcess, tempfile::TempDir) {
    let kubeconfig = api.kubeconfig();
    let dir = config_dir(&[
        ("metrics.yaml", &read_sample("metrics.yaml")),
        (
            "kubernetesenv.yaml",
            &kubernetesenv_yaml(kubeconfig.to_str().expect("a UTF-8 path")),
        ),
    ]);
    let server = ServerProcess::start(MIXER, dir.path(), &[]);
    (server, dir)
}

/// Polls `f` until it holds or [`DEADLINE`] passes.
async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The server's own metrics.
fn self_metrics(server: &ServerProcess) -> String {
    server
        .monitoring_get("/metrics", Duration::from_secs(10))
        .map(|r| r.text())
        .unwrap_or_default()
}

fn scrape(server: &ServerProcess) -> String {
    test_support::http::get(&*server.prometheus, "/metrics", Duration::from_secs(10))
        .map(|r| r.text())
        .unwrap_or_default()
}

/// An inbound HTTP request from `source_uid` to `destination_uid`, whose proxy also
/// claims a destination workload: the generator's answer must win.
fn request(source_uid: &str, destination_uid: &str) -> Vec<(String, Value<'static>)> {
    [
        ("context.reporter.kind", s("inbound")),
        ("context.protocol", s("http")),
        ("response.code", Value::Int64(200)),
        ("destination.port", Value::Int64(9080)),
        (
            "destination.service.host",
            s("svc.default.svc.cluster.local"),
        ),
        ("source.uid", s(source_uid)),
        ("destination.uid", s(destination_uid)),
        ("destination.workload.name", s("claimed-by-the-proxy")),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect()
}

async fn report(client: &mut MixerClient<Channel>, set: Vec<(String, Value<'static>)>) {
    client
        .report(encode_report(GLOBAL_WORD_COUNT as u32, &[set]))
        .await
        .expect("Report answers");
}

fn fake_with_bookinfo() -> (KubeApi, String, String) {
    let api = KubeApi::start();
    let productpage = deploy(&api, "default", "productpage-v1", "productpage", "10.1.0.5");
    let reviews = deploy(&api, "bookinfo", "reviews-v1", "reviews", "10.1.0.6");
    (api, productpage, reviews)
}

#[tokio::test]
async fn workload_attributes_come_from_pods_into_istio_requests_total() {
    let (api, productpage, reviews) = fake_with_bookinfo();
    let (server, _dir) = start(&api);
    assert!(
        eventually(async || self_metrics(&server)
            .contains("mixer_adapter_kubernetesenv_synced{kind=\"pods\"} 1"))
        .await,
        "the pod cache syncs: {}",
        server.log()
    );
    let mut client = MixerClient::connect(server.api_url()).await.unwrap();

    report(&mut client, request(&productpage, &reviews)).await;
    let known = [
        "reporter=\"destination\"",
        "source_workload=\"productpage-v1\"",
        "source_workload_namespace=\"default\"",
        "source_app=\"productpage\"",
        "destination_workload=\"reviews-v1\"",
        "destination_workload_namespace=\"bookinfo\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v1\"",
    ];
    assert!(
        eventually(
            async || metric_value(&scrape(&server), "istio_requests_total", &known) == Some(1.0)
        )
        .await,
        "{}",
        scrape(&server)
    );

    // A pod created later is found once its watch event arrives.
    let ratings = deploy(&api, "bookinfo", "ratings-v1", "ratings", "10.1.0.7");
    let later = [
        "destination_workload=\"ratings-v1\"",
        "destination_app=\"ratings\"",
    ];
    assert!(
        eventually(async || {
            report(&mut client, request(&productpage, &ratings)).await;
            metric_value(&scrape(&server), "istio_requests_total", &later).is_some()
        })
        .await,
        "{}",
        scrape(&server)
    );

    // A pod nobody knows: the bindings' defaults, not what the proxy claimed. Reports sent
    // above before the ratings pod reached the cache also counted as unknown, so this one
    // is judged by the difference it makes.
    let unknown = [
        "source_workload=\"productpage-v1\"",
        "destination_workload=\"unknown\"",
        "destination_workload_namespace=\"unknown\"",
        "destination_app=\"unknown\"",
    ];
    let unknown_before = metric_value(&scrape(&server), "istio_requests_total", &unknown);
    report(
        &mut client,
        request(&productpage, "kubernetes://gone-1.default"),
    )
    .await;
    assert!(
        eventually(
            async || metric_value(&scrape(&server), "istio_requests_total", &unknown)
                == Some(unknown_before.unwrap_or(0.0) + 1.0)
        )
        .await,
        "{}",
        scrape(&server)
    );
    assert!(!scrape(&server).contains("claimed-by-the-proxy"));
    let cached = self_metrics(&server);
    assert!(
        cached.contains("mixer_adapter_kubernetesenv_cached_objects{kind=\"pods\"} 3"),
        "{cached}"
    );
}

#[tokio::test]
async fn a_deleted_pod_is_unknown_again() {
    let (api, productpage, reviews) = fake_with_bookinfo();
    let (server, _dir) = start(&api);
    let mut client = MixerClient::connect(server.api_url()).await.unwrap();
    let known = ["destination_workload=\"reviews-v1\""];
    assert!(
        eventually(async || {
            report(&mut client, request(&productpage, &reviews)).await;
            metric_value(&scrape(&server), "istio_requests_total", &known).is_some()
        })
        .await,
        "{}",
        server.log()
    );
    let pod = reviews
        .strip_prefix("kubernetes://")
        .and_then(|p| p.strip_suffix(".bookinfo"))
        .unwrap();
    assert!(api.delete("v1", "Pod", "bookinfo", pod));
    let unknown = [
        "source_workload=\"productpage-v1\"",
        "destination_workload=\"unknown\"",
    ];
    assert!(
        eventually(async || {
            report(&mut client, request(&productpage, &reviews)).await;
            metric_value(&scrape(&server), "istio_requests_total", &unknown).is_some()
        })
        .await,
        "{}",
        scrape(&server)
    );
}
