//! The Kubernetes config source (`--config-store-url k8s://`), end to end: a real `mixer
//! server` process, its kube-rs client talking list/watch over HTTP to the API server fake
//! of `test_support::kube_api`, and Check answers, `/readyz`, `/debug/config` and the log
//! observed from outside. Every wait polls for a condition with a generous deadline.

use std::time::Duration;

use mixer::config::kubernetes::{API_VERSION, GROUP, VERSION, config_kinds};
use mixer::wire::pb::istio::mixer::v1::mixer_client::MixerClient;
use serde::Deserialize;
use serde_json::Value as Json;
use test_support::kube_api::{KubeApi, ResourceType, Restart};
use tonic::transport::Channel;

use crate::common::{ATTRIBUTES_YAML, MIXER, ServerProcess, check, config_dir, eventually, s};

/// How long any condition may take to come true (reconnect backoff included).
const DEADLINE: Duration = Duration::from_secs(60);

const PERMISSION_DENIED: i32 = 7;

/// An API server fake serving every configuration kind, holding Istio's attribute
/// manifests (as a cluster with Istio installed does).
pub(crate) fn fake() -> KubeApi {
    let api = KubeApi::start();
    for kind in config_kinds() {
        api.register(ResourceType::new(
            GROUP,
            VERSION,
            kind.kind,
            &kind.plural,
            kind.namespaced,
        ));
    }
    apply_yaml(&api, ATTRIBUTES_YAML);
    api
}

/// Applies every document of a multi-document YAML text, as `kubectl apply -f` does.
pub(crate) fn apply_yaml(api: &KubeApi, yaml: &str) {
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let object = Json::deserialize(document).expect("YAML a test wrote");
        if !object.is_null() {
            api.apply(object);
        }
    }
}

/// `mixer server --config-store-url k8s:// --kubeconfig FAKE` plus `extra`, once ready.
pub(crate) fn start_server(api: &KubeApi, extra: &[&str]) -> ServerProcess {
    let mut server = launch(api, extra);
    server.wait_ready();
    server
}

/// As [`start_server`], without waiting for it to be ready.
fn launch(api: &KubeApi, extra: &[&str]) -> ServerProcess {
    let kubeconfig = api.kubeconfig();
    let monitoring = format!("127.0.0.1:{}", test_support::free_port());
    let mut args = vec![
        "--config-store-url",
        "k8s://",
        "--kubeconfig",
        kubeconfig.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    ServerProcess::launch(MIXER, &monitoring, &args)
}

/// A denier handler and a checknothing instance; rules using them come separately.
const DENIER: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny-all, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: denied by a Kubernetes rule}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec:
  compiledTemplate: checknothing
"#;

/// A rule denying requests for `path`.
fn deny_rule(name: &str, namespace: &str, path: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  match: request.path == "{path}"
  actions:
  - handler: deny-all.istio-system
    instances: [nothing.istio-system]
"#
    )
}

async fn client(server: &ServerProcess) -> MixerClient<Channel> {
    MixerClient::connect(server.api_url())
        .await
        .expect("connects")
}

/// The precondition code of a Check of a request for `path`.
async fn code_for(client: &mut MixerClient<Channel>, path: &str) -> i32 {
    let response = check(client, &[("request.path", s(path))])
        .await
        .expect("Check answers");
    response
        .precondition
        .and_then(|p| p.status)
        .map(|s| s.code)
        .unwrap_or_default()
}

/// Waits until a Check for `path` answers `code`.
async fn until_code(client: &mut MixerClient<Channel>, path: &str, code: i32, what: &str) {
    let reached = eventually(DEADLINE, || {
        let mut client = client.clone();
        async move { code_for(&mut client, path).await == code }
    })
    .await;
    assert!(reached, "{what}: a Check of {path} never answered {code}");
}

/// The server's `/debug/config`.
fn debug_config(server: &ServerProcess) -> Json {
    let response = server
        .monitoring_get("/debug/config", Duration::from_secs(30))
        .expect("GET /debug/config");
    serde_json::from_str(&response.text()).expect("JSON")
}

/// Waits until `/debug/config` satisfies `condition`; returns it.
async fn until_debug_config(
    server: &ServerProcess,
    what: &str,
    condition: impl Fn(&Json) -> bool,
) -> Json {
    let mut last = Json::Null;
    let reached = eventually(DEADLINE, || {
        last = debug_config(server);
        std::future::ready(condition(&last))
    })
    .await;
    assert!(reached, "{what}: /debug/config is {last:#}");
    last
}

/// Waits until the server's log holds `text`.
async fn until_logged(server: &ServerProcess, text: &str) {
    let logged = eventually(DEADLINE, || std::future::ready(server.log().contains(text))).await;
    assert!(logged, "never logged {text:?}: {}", server.log());
}

#[tokio::test]
async fn kubernetes_rules_change_check_answers() {
    let api = fake();
    apply_yaml(&api, DENIER);
    let server = start_server(&api, &[]);
    let mut client = client(&server).await;
    assert_eq!(code_for(&mut client, "/admin").await, 0);

    apply_yaml(&api, &deny_rule("deny-admin", "istio-system", "/admin"));
    until_code(&mut client, "/admin", PERMISSION_DENIED, "rule created").await;
    assert_eq!(code_for(&mut client, "/public").await, 0);

    apply_yaml(&api, &deny_rule("deny-admin", "istio-system", "/private"));
    until_code(&mut client, "/private", PERMISSION_DENIED, "rule updated").await;
    assert_eq!(code_for(&mut client, "/admin").await, 0);

    assert!(api.delete(API_VERSION, "rule", "istio-system", "deny-admin"));
    until_code(&mut client, "/private", 0, "rule deleted").await;

    // Where each resource came from.
    let config = debug_config(&server);
    let origins = config["last_load"]["origins"].to_string();
    assert!(
        origins.contains("kubernetes handler/istio-system/deny-all (resourceVersion"),
        "{origins}"
    );
    assert_eq!(config["kubernetes"]["synced"], true, "{config:#}");
    assert_eq!(
        config["kubernetes"]["kinds"]["rules"], "listed",
        "{config:#}"
    );
    assert!(server.log().contains("Kubernetes: object deleted."));
}

#[tokio::test]
async fn a_bad_object_keeps_the_last_good_configuration_and_is_named() {
    let api = fake();
    apply_yaml(&api, DENIER);
    apply_yaml(&api, &deny_rule("deny-admin", "istio-system", "/admin"));
    let server = start_server(&api, &["--config-max-object-bytes", "4096"]);
    let mut client = client(&server).await;
    until_code(&mut client, "/admin", PERMISSION_DENIED, "at start").await;

    // A rule whose match does not compile: rejected as a whole, named by kind/ns/name.
    apply_yaml(
        &api,
        r#"
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: broken, namespace: default}
spec:
  match: request.path ==
  actions: [{handler: deny-all.istio-system, instances: [nothing.istio-system]}]
"#,
    );
    assert!(api.delete(API_VERSION, "rule", "istio-system", "deny-admin"));
    let config = until_debug_config(&server, "the broken rule is reported", |c| {
        c["last_load"]["applied"] == false
            && c["last_load"]["diagnostics"]
                .to_string()
                .contains("rule/default/broken")
    })
    .await;
    let diagnostic = config["last_load"]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["resource"] == "rule/default/broken")
        .unwrap()
        .clone();
    assert_eq!(diagnostic["field"], "match", "{diagnostic}");
    assert!(
        diagnostic["origin"]
            .as_str()
            .unwrap()
            .starts_with("kubernetes rule/default/broken (resourceVersion "),
        "{diagnostic}"
    );
    assert_eq!(
        code_for(&mut client, "/admin").await,
        PERMISSION_DENIED,
        "the last good configuration serves"
    );
    until_logged(&server, "kubernetes rule/default/broken (resourceVersion").await;

    // Fixed: the change applies (the deny rule's deletion with it).
    apply_yaml(&api, &deny_rule("broken", "default", "/never"));
    until_code(&mut client, "/admin", 0, "after the fix").await;

    // An object over --config-max-object-bytes: an error naming it, nothing applied.
    let mut big = deny_rule("big", "istio-system", "/admin");
    big.push_str(&format!("  sampling: \"{}\"\n", "x".repeat(5000)));
    apply_yaml(&api, &big);
    let config = until_debug_config(&server, "the big rule is reported", |c| {
        c["last_load"]["diagnostics"]
            .to_string()
            .contains("over the 4096-byte limit")
    })
    .await;
    assert_eq!(config["last_load"]["applied"], false, "{config:#}");
    assert!(
        config["last_load"]["diagnostics"]
            .to_string()
            .contains("rule/istio-system/big"),
        "{config:#}"
    );
    assert_eq!(code_for(&mut client, "/admin").await, 0);
}

#[tokio::test]
async fn expired_watch_history_is_recovered_by_listing_again() {
    let api = fake();
    apply_yaml(&api, DENIER);
    let server = start_server(&api, &[]);
    let mut client = client(&server).await;
    apply_yaml(&api, &deny_rule("deny-a", "istio-system", "/a"));
    until_code(&mut client, "/a", PERMISSION_DENIED, "before").await;
    api.bookmark();

    let lists_before = api.list_count("rules");
    api.compact();
    api.drop_watches();
    apply_yaml(&api, &deny_rule("deny-b", "istio-system", "/b"));
    until_code(&mut client, "/b", PERMISSION_DENIED, "after 410 Gone").await;
    let relisted = eventually(DEADLINE, || {
        std::future::ready(api.list_count("rules") > lists_before)
    })
    .await;
    assert!(relisted, "the server listed rules again");
    until_logged(&server, "watch history expired (410 Gone); listing again").await;

    // The watch goes on after the re-list.
    assert!(api.delete(API_VERSION, "rule", "istio-system", "deny-a"));
    until_code(&mut client, "/a", 0, "a change after the re-list").await;
}

#[tokio::test]
async fn the_server_converges_after_an_api_server_restart() {
    let mut api = fake();
    apply_yaml(&api, DENIER);
    apply_yaml(&api, &deny_rule("deny-a", "istio-system", "/a"));
    let server = start_server(&api, &[]);
    let mut client = client(&server).await;
    until_code(&mut client, "/a", PERMISSION_DENIED, "at start").await;

    // Changes made while the API server is down are seen once it is back.
    api.stop();
    assert!(api.delete(API_VERSION, "rule", "istio-system", "deny-a"));
    apply_yaml(&api, &deny_rule("deny-b", "istio-system", "/b"));
    assert_eq!(
        code_for(&mut client, "/a").await,
        PERMISSION_DENIED,
        "what was loaded keeps serving while the API server is away"
    );
    api.restart(Restart::KeepState);
    until_code(&mut client, "/b", PERMISSION_DENIED, "after the restart").await;
    until_code(&mut client, "/a", 0, "after the restart").await;

    // A restart that lost everything (resource versions included): the server lists
    // again and follows.
    api.restart(Restart::LoseState);
    apply_yaml(&api, ATTRIBUTES_YAML);
    apply_yaml(&api, DENIER);
    apply_yaml(&api, &deny_rule("deny-c", "istio-system", "/c"));
    until_code(
        &mut client,
        "/c",
        PERMISSION_DENIED,
        "after a restart losing state",
    )
    .await;
    until_code(&mut client, "/b", 0, "after a restart losing state").await;
}

#[tokio::test]
async fn readyz_waits_for_the_initial_list() {
    let api = fake();
    apply_yaml(&api, DENIER);
    apply_yaml(&api, &deny_rule("deny-a", "istio-system", "/a"));
    api.hold_lists();
    let mut server = launch(&api, &[]);
    let mut answer = (0, String::new());
    let answered = eventually(DEADLINE, || {
        if let Ok(response) = server.monitoring_get("/readyz", Duration::from_secs(30)) {
            answer = (response.status, response.text());
        }
        std::future::ready(answer.0 != 0)
    })
    .await;
    assert!(answered, "/readyz answers while lists are held");
    assert_eq!(answer.0, 503, "{answer:?}");
    assert!(
        answer
            .1
            .contains("waiting for the initial list of the Kubernetes configuration"),
        "{answer:?}"
    );
    assert!(
        api.list_count("rules") >= 1,
        "the server asked for the list"
    );

    api.release_lists();
    server.wait_ready();
    let response = server
        .monitoring_get("/readyz", Duration::from_secs(30))
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let mut client = client(&server).await;
    assert_eq!(code_for(&mut client, "/a").await, PERMISSION_DENIED);
}

#[tokio::test]
async fn a_missing_crd_is_skipped_with_one_warning() {
    let api = fake();
    api.set_not_found(GROUP, "memquotas", true);
    apply_yaml(&api, DENIER);
    apply_yaml(&api, &deny_rule("deny-a", "istio-system", "/a"));
    let server = start_server(&api, &[]);
    let mut client = client(&server).await;
    assert_eq!(code_for(&mut client, "/a").await, PERMISSION_DENIED);
    let config = debug_config(&server);
    assert_eq!(config["kubernetes"]["kinds"]["memquotas"], "not_installed");

    // Checked again now and then, quietly.
    let rechecked = eventually(DEADLINE, || {
        std::future::ready(api.list_count("memquotas") >= 3)
    })
    .await;
    assert!(rechecked, "the missing kind is checked again");
    let warning = "its CustomResourceDefinition is not installed";
    let log = server.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(warning)).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("memquota"), "{log}");
    assert!(warnings[0].contains("WARN"), "{log}");

    // Installed later: picked up.
    api.set_not_found(GROUP, "memquotas", false);
    until_debug_config(&server, "memquotas installed", |c| {
        c["kubernetes"]["kinds"]["memquotas"] == "listed"
    })
    .await;
}

#[tokio::test]
async fn config_namespace_watches_one_namespace() {
    let api = fake();
    apply_yaml(&api, DENIER);
    apply_yaml(&api, &deny_rule("deny-a", "istio-system", "/a"));
    apply_yaml(&api, &deny_rule("elsewhere", "other", "/a"));
    let server = start_server(&api, &["--config-namespace", "istio-system"]);
    let config = debug_config(&server);
    let origins = config["last_load"]["origins"].to_string();
    assert!(origins.contains("rule/istio-system/deny-a"), "{origins}");
    assert!(!origins.contains("rule/other/elsewhere"), "{origins}");
    assert_eq!(config["kubernetes"]["namespace"], "istio-system");
    for request in api.requests() {
        assert!(
            request.path.contains("/namespaces/istio-system/"),
            "{request:?}"
        );
    }
}

#[tokio::test]
async fn files_and_kubernetes_together_and_the_kubernetes_object_wins_a_clash() {
    let api = fake();
    apply_yaml(&api, &deny_rule("deny", "istio-system", "/from-kubernetes"));
    // The files hold the handler and instance, and a rule of the same name.
    let file_rule = deny_rule("deny", "istio-system", "/from-file");
    let dir = config_dir(&[("policy.yaml", DENIER), ("rule.yaml", &file_rule)]);
    let dir_arg = dir.path().to_str().unwrap().to_owned();
    let server = start_server(&api, &["--config-dir", &dir_arg]);
    let mut client = client(&server).await;
    assert_eq!(
        code_for(&mut client, "/from-kubernetes").await,
        PERMISSION_DENIED
    );
    assert_eq!(code_for(&mut client, "/from-file").await, 0);

    let config = debug_config(&server);
    let clash = config["last_load"]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["severity"] == "warning" && d["resource"] == "rule/istio-system/deny")
        .unwrap_or_else(|| panic!("a clash warning: {config:#}"))
        .clone();
    assert!(
        clash["file"].as_str().unwrap().ends_with("rule.yaml"),
        "{clash}"
    );
    assert!(
        clash["message"]
            .as_str()
            .unwrap()
            .starts_with("also defined by kubernetes rule/istio-system/deny (resourceVersion "),
        "{clash}"
    );
    assert!(
        server
            .log()
            .contains("also defined by kubernetes rule/istio-system/deny")
    );

    // The Kubernetes object goes away: the file's rule serves.
    assert!(api.delete(API_VERSION, "rule", "istio-system", "deny"));
    until_code(
        &mut client,
        "/from-file",
        PERMISSION_DENIED,
        "object deleted",
    )
    .await;
}

#[test]
fn no_cluster_is_a_clear_error() {
    let out = crate::common::mixer_command()
        .args([
            "server",
            "--config-store-url",
            "k8s://",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot use the kubeconfig /nonexistent/kubeconfig"),
        "{stderr}"
    );

    let home = tempfile::tempdir().unwrap();
    let out = crate::common::mixer_command()
        .args(["server", "--configStoreURL", "k8s://"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", home.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no Kubernetes cluster configured: give --kubeconfig PATH, set KUBECONFIG"),
        "{stderr}"
    );
}
