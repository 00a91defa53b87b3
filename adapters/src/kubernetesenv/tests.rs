use std::borrow::Cow;

use k8s_openapi::api::core::v1::Pod;

use super::cache::{Kind, OwnerRef};
use super::*;

const LIMITS: Limits = Limits {
    max_objects: 100,
    max_pod_bytes: 64 * 1024,
};

/// A pod as the API server serves it: a Deployment's, through its ReplicaSet.
fn api_pod(name: &str, ip: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app": "reviews", "version": "v1"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-7f9c",
                 "uid": "1", "controller": true}
            ]
        },
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "containers": [
                {"name": "reviews", "image": "r", "ports": [{"containerPort": 9080}]},
                {"name": "istio-proxy", "image": "p", "ports": [{"containerPort": 15090}]}
            ]
        },
        "status": {"podIP": ip, "hostIP": "192.168.0.7", "phase": "Running"}
    }))
    .unwrap()
}

fn tables() -> Tables {
    let mut t = Tables::default();
    let record = watch::pod_record(api_pod("reviews-v1-7f9c-x", "10.0.0.5")).unwrap();
    t.put_pod(record, LIMITS).unwrap();
    t.put_owner(
        Kind::ReplicaSet,
        "default",
        "reviews-v1-7f9c",
        Some(OwnerRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "reviews-v1".into(),
        }),
        LIMITS,
    )
    .unwrap();
    t
}

fn instance<'a>(
    source_uid: &'a str,
    source_ip: Option<&'a [u8]>,
    destination_uid: &'a str,
    destination_ip: Option<&'a [u8]>,
    destination_port: i64,
) -> kubernetes::Instance<'a> {
    kubernetes::Instance {
        name: "attributes.instance.istio-system",
        source_uid: Cow::Borrowed(source_uid),
        source_ip: source_ip.map(Cow::Borrowed),
        destination_uid: Cow::Borrowed(destination_uid),
        destination_ip: destination_ip.map(Cow::Borrowed),
        destination_port,
    }
}

#[test]
fn api_pods_become_compact_records() {
    let r = watch::pod_record(api_pod("p", "10.0.0.5")).unwrap();
    assert_eq!((r.name.as_str(), r.namespace.as_str()), ("p", "default"));
    assert_eq!(r.labels["version"], "v1");
    assert_eq!(r.service_account, "bookinfo-reviews");
    assert_eq!(r.pod_ip, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(r.host_ip, Some("192.168.0.7".parse().unwrap()));
    assert_eq!(
        r.ports,
        [
            (9080, "reviews".to_owned()),
            (15090, "istio-proxy".to_owned())
        ]
    );
    assert_eq!(r.controller.unwrap().kind, "ReplicaSet");
    assert!(!r.host_network && !r.terminated);
    let nameless: Pod = serde_json::from_value(serde_json::json!({"metadata": {}})).unwrap();
    assert!(watch::pod_record(nameless).is_none());
}

#[test]
fn both_sides_by_uid_with_the_destination_container() {
    let t = tables();
    let uid = "kubernetes://reviews-v1-7f9c-x.default";
    let out = generate(&t, &instance(uid, None, uid, None, 9080));
    let d = out.destination.as_ref().unwrap();
    assert_eq!(d.workload_name, "reviews-v1");
    assert_eq!(d.workload_uid, "istio://default/workloads/reviews-v1");
    assert_eq!(
        d.owner,
        "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1"
    );
    assert_eq!(d.pod_uid, uid);
    assert_eq!(out.destination_container_name, "reviews");
    assert_eq!(out.source, out.destination);
}

#[test]
fn ip_is_used_only_when_the_uid_is_empty() {
    let t = tables();
    let ip = [10, 0, 0, 5];
    let out = generate(&t, &instance("", Some(&ip), "", None, 0));
    assert_eq!(out.source.unwrap().pod_name, "reviews-v1-7f9c-x");
    assert!(out.destination.is_none());
    assert_eq!(out.destination_container_name, "");
    // A uid that names no pod is not retried by IP.
    let out = generate(
        &t,
        &instance("kubernetes://gone.default", Some(&ip), "", None, 0),
    );
    assert!(out.source.is_none());
    // A bare IP as the uid.
    let out = generate(&t, &instance("10.0.0.5", None, "", None, 0));
    assert!(out.source.is_some());
    // IPv4-mapped IPv6, and the unspecified address Istio's config defaults to.
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped[12..].copy_from_slice(&ip);
    assert!(
        generate(&t, &instance("", Some(&mapped), "", None, 0))
            .source
            .is_some()
    );
    let out = generate(
        &t,
        &instance("", Some(&[0, 0, 0, 0]), "", Some(&[1, 2, 3]), 0),
    );
    assert_eq!(out, KubernetesOutput::default());
}

#[test]
fn without_a_cluster_the_handler_is_inactive() {
    // Runs only where no cluster is configured (as in CI); elsewhere it has nothing to say.
    if std::env::var_os("KUBECONFIG").is_some() || in_cluster().is_some() {
        return;
    }
    let env = Env::standalone("kubernetesenv.istio-system");
    let config = config::validate(&ValidateInput {
        handler: "kubernetesenv.istio-system",
        params: &serde_json::Value::Null,
        instances: &[],
    })
    .unwrap();
    match ADAPTER.build(config, &env) {
        Err(BuildError::Inactive(reason)) => assert_eq!(reason, INACTIVE),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("built without a cluster"),
    }
}

#[test]
fn a_missing_kubeconfig_file_names_the_path() {
    if std::env::var_os("KUBECONFIG").is_some() {
        return;
    }
    let config = Config {
        kubeconfig_path: Some("/nonexistent/kubeconfig".into()),
        cache_refresh_duration: config::DEFAULT_CACHE_REFRESH_DURATION,
        cluster_registries_namespace: None,
    };
    let e = ADAPTER
        .build(config, &Env::standalone("k.istio-system"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("/nonexistent/kubeconfig"), "{e}");
}

/// A kubeconfig pointing at `server`, written into `dir`.
fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\"}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn handlers_with_the_same_params_share_one_cache_until_dropped() {
    if std::env::var_os("KUBECONFIG").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the cache keeps retrying, which is all this test needs.
    let path = kubeconfig(dir.path(), "http://127.0.0.1:9");
    let config = || Config {
        kubeconfig_path: Some(path.to_string_lossy().into_owned()),
        cache_refresh_duration: config::DEFAULT_CACHE_REFRESH_DURATION,
        cluster_registries_namespace: None,
    };
    let env = Env {
        handler: "k.istio-system".into(),
        resources: Arc::new(crate::Resources {
            runtime: Some(tokio::runtime::Handle::current()),
            ..Default::default()
        }),
    };
    let a = ADAPTER.build(config(), &env).unwrap();
    let b = ADAPTER.build(config(), &env).unwrap();
    let looks_up_nothing = |h: &Arc<dyn Handler>| {
        let out = h
            .kubernetes()
            .unwrap()
            .generate_kubernetes(&instance("kubernetes://x.default", None, "", None, 0))
            .unwrap();
        assert_eq!(out, KubernetesOutput::default(), "nothing listed yet");
    };
    looks_up_nothing(&a);
    looks_up_nothing(&b);
    let count = || watch::live_caches();
    let before = count();
    assert!(before >= 1);
    drop(a);
    assert_eq!(count(), before, "b still uses the cache");
    drop(b);
    assert_eq!(count(), before - 1, "the last handler's drop stops it");
}
