//! The pod, replicaset and deployment cache behind `kubernetesenv`: compact records
//! (only what the `kubernetes` template outputs), bounded in number, and the lookups
//! Istio 1.4's adapter made: a pod by `kubernetes://<name>.<namespace>` or by IP, and its
//! workload from the chain of controlling owners (Pod → ReplicaSet → Deployment …).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use templates::PodAttributes;

/// The prefix of a pod uid.
pub const POD_UID_PREFIX: &str = "kubernetes://";

/// `kubernetes://<name>.<namespace>`, a pod's uid as Istio writes it.
pub fn pod_uid(name: &str, namespace: &str) -> String {
    format!("{POD_UID_PREFIX}{name}.{namespace}")
}

/// `istio://<namespace>/workloads/<name>`, a workload's uid as Istio writes it.
pub fn workload_uid(namespace: &str, name: &str) -> String {
    format!("istio://{namespace}/workloads/{name}")
}

/// The controller an object names in its `ownerReferences` (the one with
/// `controller: true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl OwnerRef {
    /// `kubernetes://apis/<apiVersion>/namespaces/<ns>/<kind>s/<name>`, Istio's owner.
    fn url(&self, namespace: &str) -> String {
        format!(
            "kubernetes://apis/{}/namespaces/{namespace}/{}s/{}",
            self.api_version,
            self.kind.to_ascii_lowercase(),
            self.name
        )
    }
}

/// What the cache keeps of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRecord {
    pub name: String,
    pub namespace: String,
    pub labels: Arc<BTreeMap<String, String>>,
    pub service_account: String,
    pub pod_ip: Option<IpAddr>,
    pub host_ip: Option<IpAddr>,
    /// Whether the pod's IP is the node's (`hostNetwork`): such a pod is not found by IP,
    /// since every pod of the node shares it.
    pub host_network: bool,
    /// Whether the pod has terminated (`Succeeded`/`Failed`): its IP may already be
    /// another pod's, so it is not found by IP.
    pub terminated: bool,
    /// `(containerPort, container name)` of every declared port.
    pub ports: Vec<(i32, String)>,
    pub controller: Option<OwnerRef>,
}

impl PodRecord {
    /// Bytes of text this record holds: what the per-pod bound counts.
    pub fn text_bytes(&self) -> usize {
        let labels: usize = self.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        let ports: usize = self.ports.iter().map(|(_, n)| n.len() + 4).sum();
        let owner = self
            .controller
            .as_ref()
            .map_or(0, |o| o.api_version.len() + o.kind.len() + o.name.len());
        self.name.len() + self.namespace.len() + self.service_account.len() + labels + ports + owner
    }

    fn ip_indexed(&self) -> Option<IpAddr> {
        self.pod_ip
            .filter(|_| !self.host_network && !self.terminated)
    }
}

/// `namespace/name`.
type Key = (String, String);

/// Why the cache refused an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The table already holds its limit of objects.
    Full,
    /// The pod's labels, ports and names are over the per-pod byte limit.
    TooLarge,
}

/// The cache's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most objects of each kind (pods, replicasets, deployments) kept.
    pub max_objects: usize,
    /// Most bytes of text one pod record may hold (labels, names, ports).
    pub max_pod_bytes: usize,
}

/// One kind's objects, by `namespace/name`.
#[derive(Debug)]
struct Table<V> {
    by_key: HashMap<Key, V>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            by_key: HashMap::new(),
        }
    }
}

/// Pods, replicasets and deployments as last listed and watched.
#[derive(Debug, Default)]
pub struct Tables {
    pods: Table<Arc<PodRecord>>,
    by_ip: HashMap<IpAddr, Key>,
    replicasets: Table<Option<OwnerRef>>,
    deployments: Table<Option<OwnerRef>>,
}

/// The kinds the cache holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    ReplicaSet,
    Deployment,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Pod, Kind::ReplicaSet, Kind::Deployment];

    /// The resource name (`pods`), as metrics and RBAC call it.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::ReplicaSet => "replicasets",
            Kind::Deployment => "deployments",
        }
    }
}

/// Deepest owner chain followed (a cycle of owners, which the API server does not
/// prevent, must not loop).
const MAX_OWNER_DEPTH: usize = 8;

impl Tables {
    /// How many objects of `kind` are held.
    pub fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::Pod => self.pods.by_key.len(),
            Kind::ReplicaSet => self.replicasets.by_key.len(),
            Kind::Deployment => self.deployments.by_key.len(),
        }
    }

    /// Adds or replaces a pod.
    pub fn put_pod(&mut self, pod: PodRecord, limits: Limits) -> Result<(), Refused> {
        let key = (pod.namespace.clone(), pod.name.clone());
        if pod.text_bytes() > limits.max_pod_bytes {
            // An update over the limit drops the old record too: it no longer holds.
            self.remove_pod(&key.0, &key.1);
            return Err(Refused::TooLarge);
        }
        if !self.pods.by_key.contains_key(&key) && self.pods.by_key.len() >= limits.max_objects {
            return Err(Refused::Full);
        }
        let old = self.pods.by_key.insert(key.clone(), Arc::new(pod));
        if let Some(ip) = old.and_then(|o| o.ip_indexed()) {
            self.unindex_ip(ip, &key);
        }
        if let Some(ip) = self.pods.by_key[&key].ip_indexed() {
            self.by_ip.insert(ip, key);
        }
        Ok(())
    }

    pub fn remove_pod(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(ip) = self.pods.by_key.remove(&key).and_then(|o| o.ip_indexed()) {
            self.unindex_ip(ip, &key);
        }
    }

    /// Forgets `ip` if it still points at `key` (a newer pod may have taken it).
    fn unindex_ip(&mut self, ip: IpAddr, key: &Key) {
        if self.by_ip.get(&ip) == Some(key) {
            self.by_ip.remove(&ip);
        }
    }

    /// Adds or replaces a replicaset or deployment (`kind` is not [`Kind::Pod`]).
    pub fn put_owner(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        controller: Option<OwnerRef>,
        limits: Limits,
    ) -> Result<(), Refused> {
        let table = self.owner_table(kind);
        let key = (namespace.to_owned(), name.to_owned());
        if !table.by_key.contains_key(&key) && table.by_key.len() >= limits.max_objects {
            return Err(Refused::Full);
        }
        table.by_key.insert(key, controller);
        Ok(())
    }

    pub fn remove_owner(&mut self, kind: Kind, namespace: &str, name: &str) {
        self.owner_table(kind)
            .by_key
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    fn owner_table(&mut self, kind: Kind) -> &mut Table<Option<OwnerRef>> {
        match kind {
            Kind::Deployment => &mut self.deployments,
            _ => &mut self.replicasets,
        }
    }

    /// Replaces every object of `kind` with those of a fresh list (`other` holds them).
    pub fn replace(&mut self, kind: Kind, other: Tables) {
        match kind {
            Kind::Pod => {
                self.pods = other.pods;
                self.by_ip = other.by_ip;
            }
            Kind::ReplicaSet => self.replicasets = other.replicasets,
            Kind::Deployment => self.deployments = other.deployments,
        }
    }

    /// The pod an instance's uid names: `kubernetes://<name>.<namespace>`, or a bare IP.
    pub fn pod_by_uid(&self, uid: &str) -> Option<&Arc<PodRecord>> {
        if let Ok(ip) = uid.parse::<IpAddr>() {
            return self.pod_by_ip(ip);
        }
        let full = uid.strip_prefix(POD_UID_PREFIX).unwrap_or(uid);
        // Namespaces have no dots; pod names may.
        let (name, namespace) = full.rsplit_once('.')?;
        self.pods
            .by_key
            .get(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Arc<PodRecord>> {
        self.by_ip.get(&ip).and_then(|k| self.pods.by_key.get(k))
    }

    /// The pod's workload: its root controller (a Deployment through its ReplicaSet, a
    /// bare ReplicaSet, a Job, a StatefulSet …), or the pod itself when it has none.
    /// Returns (name, owner URL).
    pub fn workload(&self, pod: &PodRecord) -> (String, String) {
        match self.root_controller(&pod.namespace, pod.controller.as_ref()) {
            Some(root) => (root.name.clone(), root.url(&pod.namespace)),
            None => (
                pod.name.clone(),
                format!(
                    "kubernetes://apis/v1/namespaces/{}/pods/{}",
                    pod.namespace, pod.name
                ),
            ),
        }
    }

    /// Follows controllers up through the replicasets and deployments held; an owner
    /// not held (or of another kind) is the root.
    fn root_controller<'a>(
        &'a self,
        namespace: &str,
        mut owner: Option<&'a OwnerRef>,
    ) -> Option<&'a OwnerRef> {
        for _ in 0..MAX_OWNER_DEPTH {
            let current = owner?;
            let table = match current.kind.as_str() {
                "ReplicaSet" => &self.replicasets,
                "Deployment" => &self.deployments,
                _ => return Some(current),
            };
            match table
                .by_key
                .get(&(namespace.to_owned(), current.name.clone()))
            {
                Some(Some(parent)) => owner = Some(parent),
                _ => return Some(current),
            }
        }
        owner
    }

    /// Everything the `kubernetes` template outputs about `pod`.
    pub fn attributes(&self, pod: &PodRecord) -> PodAttributes {
        let (workload_name, owner) = self.workload(pod);
        PodAttributes {
            pod_uid: pod_uid(&pod.name, &pod.namespace),
            pod_ip: pod.pod_ip,
            pod_name: pod.name.clone(),
            labels: pod.labels.clone(),
            namespace: pod.namespace.clone(),
            service_account_name: pod.service_account.clone(),
            host_ip: pod.host_ip,
            workload_uid: workload_uid(&pod.namespace, &workload_name),
            workload_name,
            workload_namespace: pod.namespace.clone(),
            owner,
        }
    }
}

/// The container of `pod` that declares `port`; empty when none does.
pub fn container_for_port(pod: &PodRecord, port: i64) -> String {
    pod.ports
        .iter()
        .find(|(p, _)| i64::from(*p) == port)
        .map(|(_, c)| c.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_objects: 3,
        max_pod_bytes: 1024,
    };

    fn owner(kind: &str, name: &str) -> Option<OwnerRef> {
        Some(OwnerRef {
            api_version: if kind == "Job" { "batch/v1" } else { "apps/v1" }.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
        })
    }

    fn pod(name: &str, ip: &str, controller: Option<OwnerRef>) -> PodRecord {
        PodRecord {
            name: name.to_owned(),
            namespace: "default".to_owned(),
            labels: Arc::new(BTreeMap::from([("app".to_owned(), "reviews".to_owned())])),
            service_account: "bookinfo-reviews".to_owned(),
            pod_ip: Some(ip.parse().unwrap()),
            host_ip: Some("192.168.0.7".parse().unwrap()),
            ports: vec![
                (9080, "reviews".to_owned()),
                (15090, "istio-proxy".to_owned()),
            ],
            controller,
            ..PodRecord::default()
        }
    }

    #[test]
    fn finds_pods_by_uid_and_ip() {
        let mut t = Tables::default();
        t.put_pod(pod("reviews-v1-abc", "10.0.0.5", None), LIMITS)
            .unwrap();
        t.put_pod(pod("with.dots", "10.0.0.6", None), LIMITS)
            .unwrap();
        let by_uid = t.pod_by_uid("kubernetes://reviews-v1-abc.default").unwrap();
        assert_eq!(by_uid.name, "reviews-v1-abc");
        assert_eq!(t.pod_by_uid("reviews-v1-abc.default"), Some(by_uid));
        assert_eq!(t.pod_by_uid("10.0.0.5"), Some(by_uid));
        assert_eq!(t.pod_by_ip("10.0.0.5".parse().unwrap()), Some(by_uid));
        assert_eq!(
            t.pod_by_uid("kubernetes://with.dots.default").unwrap().name,
            "with.dots"
        );
        for missing in [
            "kubernetes://reviews-v1-abc.other",
            "kubernetes://nodots",
            "",
            "10.0.0.9",
        ] {
            assert_eq!(t.pod_by_uid(missing), None, "{missing}");
        }
    }

    #[test]
    fn ip_index_follows_updates_and_skips_shared_ips() {
        let mut t = Tables::default();
        t.put_pod(pod("a", "10.0.0.5", None), LIMITS).unwrap();
        // The IP moves to a new pod; deleting the old one must not unindex it.
        t.put_pod(pod("b", "10.0.0.5", None), LIMITS).unwrap();
        t.remove_pod("default", "a");
        assert_eq!(t.pod_by_uid("10.0.0.5").unwrap().name, "b");
        // A pod changing IP is found by the new one only.
        t.put_pod(pod("b", "10.0.0.8", None), LIMITS).unwrap();
        assert_eq!(t.pod_by_uid("10.0.0.5"), None);
        assert_eq!(t.pod_by_uid("10.0.0.8").unwrap().name, "b");
        let host = PodRecord {
            host_network: true,
            ..pod("h", "192.168.0.7", None)
        };
        t.put_pod(host, LIMITS).unwrap();
        assert_eq!(t.pod_by_uid("192.168.0.7"), None);
        assert!(t.pod_by_uid("kubernetes://h.default").is_some());
        let done = PodRecord {
            terminated: true,
            ..pod("b", "10.0.0.8", None)
        };
        t.put_pod(done, LIMITS).unwrap();
        assert_eq!(t.pod_by_uid("10.0.0.8"), None);
    }

    #[test]
    fn workload_follows_replicaset_to_deployment() {
        let mut t = Tables::default();
        t.put_owner(
            Kind::ReplicaSet,
            "default",
            "reviews-v1-7f9c",
            owner("Deployment", "reviews-v1"),
            LIMITS,
        )
        .unwrap();
        t.put_owner(Kind::Deployment, "default", "reviews-v1", None, LIMITS)
            .unwrap();
        let p = pod(
            "reviews-v1-7f9c-x",
            "10.0.0.5",
            owner("ReplicaSet", "reviews-v1-7f9c"),
        );
        let a = t.attributes(&p);
        assert_eq!(a.workload_name, "reviews-v1");
        assert_eq!(a.workload_namespace, "default");
        assert_eq!(a.workload_uid, "istio://default/workloads/reviews-v1");
        assert_eq!(
            a.owner,
            "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1"
        );
        assert_eq!(a.pod_uid, "kubernetes://reviews-v1-7f9c-x.default");
        assert_eq!(a.service_account_name, "bookinfo-reviews");
        assert_eq!(a.labels["app"], "reviews");
    }

    #[test]
    fn bare_owners_and_no_owner() {
        let mut t = Tables::default();
        // A ReplicaSet the cache holds, without a controller of its own.
        t.put_owner(Kind::ReplicaSet, "default", "bare", None, LIMITS)
            .unwrap();
        let (name, owner_url) = t.workload(&pod("bare-x", "10.0.0.1", owner("ReplicaSet", "bare")));
        assert_eq!(name, "bare");
        assert_eq!(
            owner_url,
            "kubernetes://apis/apps/v1/namespaces/default/replicasets/bare"
        );
        // A ReplicaSet not (yet) listed is the root.
        assert_eq!(
            t.workload(&pod("x", "10.0.0.1", owner("ReplicaSet", "unlisted")))
                .0,
            "unlisted"
        );
        let (name, owner_url) = t.workload(&pod("job-x", "10.0.0.1", owner("Job", "nightly")));
        assert_eq!(name, "nightly");
        assert_eq!(
            owner_url,
            "kubernetes://apis/batch/v1/namespaces/default/jobs/nightly"
        );
        let (name, owner_url) = t.workload(&pod("solo", "10.0.0.1", None));
        assert_eq!(name, "solo");
        assert_eq!(
            owner_url,
            "kubernetes://apis/v1/namespaces/default/pods/solo"
        );
    }

    #[test]
    fn owner_cycles_end() {
        let mut t = Tables::default();
        t.put_owner(
            Kind::ReplicaSet,
            "default",
            "a",
            owner("Deployment", "b"),
            LIMITS,
        )
        .unwrap();
        t.put_owner(
            Kind::Deployment,
            "default",
            "b",
            owner("ReplicaSet", "a"),
            LIMITS,
        )
        .unwrap();
        let (name, _) = t.workload(&pod("p", "10.0.0.1", owner("ReplicaSet", "a")));
        assert!(name == "a" || name == "b");
    }

    #[test]
    fn limits_refuse_new_objects_not_updates() {
        let mut t = Tables::default();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            t.put_pod(pod(name, &format!("10.0.0.{i}"), None), LIMITS)
                .unwrap();
        }
        assert_eq!(
            t.put_pod(pod("d", "10.0.0.9", None), LIMITS),
            Err(Refused::Full)
        );
        assert_eq!(t.put_pod(pod("a", "10.0.0.7", None), LIMITS), Ok(()));
        assert_eq!(t.len(Kind::Pod), 3);
        let big = PodRecord {
            labels: Arc::new(BTreeMap::from([("k".to_owned(), "v".repeat(2000))])),
            ..pod("a", "10.0.0.7", None)
        };
        assert_eq!(t.put_pod(big, LIMITS), Err(Refused::TooLarge));
        assert_eq!(
            t.pod_by_uid("kubernetes://a.default"),
            None,
            "the old record is dropped"
        );
        for name in ["r1", "r2", "r3"] {
            t.put_owner(Kind::ReplicaSet, "default", name, None, LIMITS)
                .unwrap();
        }
        assert_eq!(
            t.put_owner(Kind::ReplicaSet, "default", "r4", None, LIMITS),
            Err(Refused::Full)
        );
        assert_eq!(t.len(Kind::ReplicaSet), 3);
        assert_eq!(t.len(Kind::Deployment), 0);
    }

    #[test]
    fn container_by_destination_port() {
        let p = pod("a", "10.0.0.1", None);
        assert_eq!(container_for_port(&p, 9080), "reviews");
        assert_eq!(container_for_port(&p, 15090), "istio-proxy");
        assert_eq!(container_for_port(&p, 80), "");
    }
}
