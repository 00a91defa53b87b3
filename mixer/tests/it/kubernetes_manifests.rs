//! samples/kubernetes: every manifest parses, and the fields the server relies on agree with
//! the server itself — its ports and probe paths (asked of a real server process), the
//! CRDs against the kinds it watches, the Deployment's arguments against an API server
//! (the fake of `test_support::kube_api`) that has exactly the shipped CRDs, the service
//! account its RBAC binds, read-only verbs, and the image the Dockerfile builds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mixer::config::kubernetes::{GROUP, VERSION, config_kinds};
use serde_json::Value as Json;
use test_support::kube_api::{KubeApi, ResourceType};

use crate::common::*;
use crate::kubernetes::apply_yaml;

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/kubernetes")
}

/// Every document of every `.yaml` file directly in samples/kubernetes, by file name.
fn documents() -> BTreeMap<String, Vec<Json>> {
    let mut by_file = BTreeMap::new();
    for entry in std::fs::read_dir(manifests_dir()).expect("samples/kubernetes exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Json> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| {
                serde::Deserialize::deserialize(d)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            })
            .filter(|d: &Json| !d.is_null())
            .collect();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        by_file.insert(name, docs);
    }
    by_file
}

/// The one document of `kind` named `name`.
fn object<'a>(docs: &'a BTreeMap<String, Vec<Json>>, kind: &str, name: &str) -> &'a Json {
    let found: Vec<&Json> = docs
        .values()
        .flatten()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name}");
    found[0]
}

fn strings(value: &Json) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("a list: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

fn container(docs: &BTreeMap<String, Vec<Json>>) -> &Json {
    let pod = &object(docs, "Deployment", "mixer")["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{pod}");
    &containers[0]
}

#[test]
fn kustomization_lists_every_manifest_once() {
    let docs = documents();
    let kustomization = &docs["kustomization.yaml"][0];
    assert_eq!(kustomization["kind"], "Kustomization");
    let kustomization = kustomization["resources"].clone();
    let listed = strings(&kustomization);
    let files: BTreeSet<String> = docs
        .keys()
        .filter(|f| *f != "kustomization.yaml")
        .cloned()
        .collect();
    assert_eq!(listed, files);
    assert_eq!(kustomization.as_array().unwrap().len(), listed.len());
}

/// `mixer server --help` shows the default of each address flag: the manifests must use the
/// same ports, since the Deployment does not override them.
#[test]
fn service_and_container_ports_are_the_servers_defaults() {
    let help = mixer_command().args(["server", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let default_port = |flag: &str| -> u16 {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} in {help}"));
        let rest = &help[at..];
        let default = &rest[rest.find("[default: ").unwrap() + 10..];
        let default = &default[..default.find(']').unwrap()];
        default.rsplit(':').next().unwrap().parse().unwrap()
    };
    let expected: BTreeMap<&str, u16> = [
        ("grpc-mixer", default_port("--address")),
        ("http-monitoring", default_port("--monitoring-address")),
        ("prometheus", default_port("--prometheus-address")),
    ]
    .into();
    assert_eq!(
        expected.values().copied().collect::<Vec<_>>(),
        [9091, 15014, 42422]
    );

    let docs = documents();
    let container_ports: BTreeMap<String, u16> = container(&docs)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    let service = &object(&docs, "Service", "mixer")["spec"];
    let mut service_ports = BTreeMap::new();
    for port in service["ports"].as_array().unwrap() {
        let name = port["name"].as_str().unwrap();
        assert_eq!(
            port["targetPort"], name,
            "targets the container port by name"
        );
        service_ports.insert(name.to_owned(), port["port"].as_u64().unwrap() as u16);
    }
    for (name, port) in &expected {
        assert_eq!(
            container_ports.get(*name),
            Some(port),
            "container port {name}"
        );
        assert_eq!(service_ports.get(*name), Some(port), "service port {name}");
    }
    assert_eq!(service_ports.len(), expected.len());

    let labels = &object(&docs, "Deployment", "mixer")["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["selector"].as_object().unwrap() {
        assert_eq!(
            &labels[key], value,
            "the Service selects the Deployment's pods"
        );
    }
}

/// The probes point at the monitoring port, and a real server answers both paths with 200
/// there once it has loaded its configuration.
#[test]
fn probes_hit_endpoints_a_running_server_answers() {
    let docs = documents();
    let container = container(&docs);
    let probe = |name: &str| -> (String, u64) {
        let get = &container[name]["httpGet"];
        (
            get["path"].as_str().unwrap().to_owned(),
            get["port"].as_u64().unwrap(),
        )
    };
    assert_eq!(probe("livenessProbe"), ("/healthz".to_owned(), 15014));
    assert_eq!(probe("readinessProbe"), ("/readyz".to_owned(), 15014));

    let server = ServerProcess::start(MIXER, &test_support::config::default_samples(), &[]);
    for path in ["/healthz", "/readyz"] {
        let response = server
            .monitoring_get(path, Duration::from_secs(10))
            .unwrap();
        assert_eq!(response.status, 200, "{path}: {}", response.text());
    }
}

/// Read-only access to exactly what the server watches, bound to the Deployment's account.
#[test]
fn rbac_grants_only_get_list_watch_to_the_deployments_service_account() {
    let docs = documents();
    let role = object(&docs, "ClusterRole", "mixer-istio-system");
    let mut granted = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        let verbs = strings(&rule["verbs"]);
        assert_eq!(
            verbs,
            BTreeSet::from(["get".into(), "list".into(), "watch".into()]),
            "read-only: {rule}"
        );
        for group in strings(&rule["apiGroups"]) {
            granted
                .entry(group)
                .or_insert_with(BTreeSet::new)
                .extend(strings(&rule["resources"]));
        }
    }
    let expected: BTreeMap<String, BTreeSet<String>> = [
        ("config.istio.io", vec!["*"]),
        ("", vec!["pods"]),
        ("apps", vec!["deployments", "replicasets"]),
    ]
    .into_iter()
    .map(|(g, r)| (g.to_owned(), r.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(granted, expected);

    let deployment = object(&docs, "Deployment", "mixer");
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    object(&docs, "ServiceAccount", account);
    object(&docs, "Namespace", namespace);
    let binding = object(&docs, "ClusterRoleBinding", "mixer-istio-system");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], "mixer-istio-system");
    let subjects = binding["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], account);
    assert_eq!(subjects[0]["namespace"], namespace);
}

/// Non-root, no privilege escalation, read-only root: the server writes no files.
#[test]
fn the_pod_runs_unprivileged_and_the_image_is_non_root() {
    let docs = documents();
    let pod = &object(&docs, "Deployment", "mixer")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let user = pod["securityContext"]["runAsUser"].as_u64().unwrap();
    assert_ne!(user, 0);
    let container = container(&docs);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(
        container["resources"]["requests"]["cpu"].is_string()
            && container["resources"]["requests"]["memory"].is_string()
            && container["resources"]["limits"]["memory"].is_string(),
        "{container}"
    );

    let dockerfile =
        std::fs::read_to_string(manifests_dir().join("../../Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    assert!(dockerfile.contains("cargo build --release --locked"));
    let final_stage = &dockerfile[dockerfile.rfind("\nFROM ").unwrap()..];
    let image_user = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the final stage sets USER");
    assert_eq!(
        image_user.split(':').next().unwrap().parse::<u64>().ok(),
        Some(user),
        "the image's user is the one the pod runs as"
    );
}

/// The custom resources the shipped CRDs define, as `(kind, plural)`, after checking each
/// definition's shape: group, version, scope, and a schema that keeps every field.
fn shipped_crds(docs: &BTreeMap<String, Vec<Json>>) -> BTreeSet<(String, String)> {
    let mut kinds = BTreeSet::new();
    for crd in &docs["crds.yaml"] {
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1", "{crd}");
        assert_eq!(crd["kind"], "CustomResourceDefinition");
        let spec = &crd["spec"];
        assert_eq!(spec["group"], GROUP);
        assert_eq!(spec["scope"], "Namespaced");
        let plural = spec["names"]["plural"].as_str().unwrap().to_owned();
        let kind = spec["names"]["kind"].as_str().unwrap().to_owned();
        assert_eq!(crd["metadata"]["name"], format!("{plural}.{GROUP}"));
        let versions = spec["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1, "{kind}");
        assert_eq!(versions[0]["name"], VERSION);
        assert_eq!(versions[0]["served"], true);
        assert_eq!(versions[0]["storage"], true);
        let schema = &versions[0]["schema"]["openAPIV3Schema"];
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["x-kubernetes-preserve-unknown-fields"], true);
        assert!(kinds.insert((kind, plural)), "one CRD per kind");
    }
    kinds
}

#[test]
fn the_crds_define_exactly_the_kinds_the_server_watches() {
    let watched: BTreeSet<(String, String)> = config_kinds()
        .iter()
        .inspect(|k| assert!(k.namespaced, "{}", k.kind))
        .map(|k| (k.kind.to_owned(), k.plural.clone()))
        .collect();
    assert_eq!(shipped_crds(&documents()), watched);
}

/// A cluster with exactly the shipped CRDs and Istio's default config applied: the server
/// started with the Deployment's own arguments lists every kind, loads the config without
/// errors and turns ready on the readiness probe's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployments_arguments_serve_the_config_applied_to_the_cluster() {
    let docs = documents();
    let api = KubeApi::start();
    for (kind, plural) in shipped_crds(&docs) {
        api.register(ResourceType::new(GROUP, VERSION, &kind, &plural, true));
    }
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    for dir in ["default", "kubernetes/config"] {
        for entry in std::fs::read_dir(samples.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
                apply_yaml(&api, &std::fs::read_to_string(&path).unwrap());
            }
        }
    }

    let container = container(&docs);
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args.first(), Some(&"server"), "{args:?}");
    let kubeconfig = api.kubeconfig();
    let mut flags = args[1..].to_vec();
    flags.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
    let monitoring = format!("127.0.0.1:{}", test_support::free_port());
    let mut server = ServerProcess::launch(MIXER, &monitoring, &flags);
    server.wait_ready();
    let ready = server
        .monitoring_get("/readyz", Duration::from_secs(10))
        .unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());

    let debug = server
        .monitoring_get("/debug/config", Duration::from_secs(10))
        .unwrap();
    let debug: Json = serde_json::from_str(&debug.text()).unwrap();
    let load = &debug["last_load"];
    assert_eq!(load["applied"], true, "{debug}");
    let errors: Vec<&Json> = load["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let rules = debug["summary"]["rules"].as_u64();
    assert_eq!(
        rules,
        Some(11),
        "samples/default's 9 rules and kubernetesenv's 2: {debug}"
    );
}
