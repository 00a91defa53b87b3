//! The Kubernetes config source: every configuration kind ([`kinds::config_kinds`]) listed
//! and watched through the API server, held as the same [`Document`]s the file store
//! produces, so they go through the same compile → validate → swap.
//!
//! * One kube-runtime `watcher` per kind (`watch.rs`): it re-lists after `410 Gone`, follows
//!   bookmarks, and reconnects with backoff after dropped connections and API-server
//!   restarts. A re-list replaces the kind's objects only once complete.
//! * A kind whose CRD is not installed (404) is skipped with one warning and re-checked
//!   quietly (at the watcher's backoff, at most every 30 s).
//! * [`KubernetesSource::is_synced`]: every kind has been listed (or found missing) once;
//!   `/readyz` waits for it.
//! * One object's `spec` may cost at most [`KubernetesOptions::max_object_bytes`]; a larger
//!   one is kept only as an error diagnostic, which rejects the configuration change.
//! * [`merge_into`] adds the objects to what the files hold; a file document with the same
//!   (kind, namespace, name) as an object is dropped with a warning naming both: the
//!   Kubernetes object wins.

pub mod kinds;
mod watch;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;

use super::store::{Document, Origin, ReadResult};
use super::{Diagnostic, Severity};
pub use kinds::{API_VERSION, ConfigKind, GROUP, VERSION, config_kinds};
pub use watch::spawn_reloader;

/// How the Kubernetes source connects and what it watches.
#[derive(Clone, Debug)]
pub struct KubernetesOptions {
    /// A kubeconfig file; without one, `$KUBECONFIG` (or `~/.kube/config`), then the
    /// in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Watch this namespace only; `None`: all namespaces.
    pub namespace: Option<String>,
    /// Largest `spec` of one object, in bytes of JSON.
    pub max_object_bytes: usize,
}

impl Default for KubernetesOptions {
    fn default() -> KubernetesOptions {
        KubernetesOptions {
            kubeconfig: None,
            namespace: None,
            max_object_bytes: 1024 * 1024,
        }
    }
}

/// The Kubernetes source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("cannot use the kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes cluster configured: give --kubeconfig PATH, set KUBECONFIG, or run in a pod with a service account ({0})"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Where one kind's watch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KindState {
    /// The initial list has not completed yet.
    Listing,
    /// Listed; changes are being watched.
    Listed,
    /// The API server does not serve the kind (its CRD is not installed).
    NotInstalled,
}

/// One object as held: its document, or why it is not used.
type Held = Result<Document, Box<Diagnostic>>;

/// Objects by (namespace, name), per kind.
type Objects = BTreeMap<(String, String), Held>;

/// What the watches have found.
struct Cluster {
    states: Vec<KindState>,
    objects: Vec<Objects>,
    last_change: Option<Instant>,
}

/// The configuration objects of the cluster, kept current by the watches.
pub struct KubernetesSource {
    options: KubernetesOptions,
    /// The API server's URL, for messages.
    server: String,
    held: Mutex<Cluster>,
    /// Bumped on every change (object or kind state), for the reloader.
    changes: tokio::sync::watch::Sender<u64>,
}

impl KubernetesSource {
    /// Connects (reading the kubeconfig or the service account) and starts one watch per
    /// kind. The watches run until the returned tasks are aborted.
    pub async fn start(
        options: KubernetesOptions,
    ) -> Result<(Arc<KubernetesSource>, Vec<JoinHandle<()>>), KubernetesError> {
        let config = client_config(&options).await?;
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(KubernetesError::Client)?;
        let source = Arc::new(KubernetesSource::new(options, server));
        tracing::info!(
            server = %source.server,
            namespace = source.options.namespace.as_deref().unwrap_or("(all)"),
            kinds = config_kinds().len(),
            "Watching configuration in Kubernetes."
        );
        let tasks = (0..config_kinds().len())
            .map(|index| tokio::spawn(watch::watch_kind(source.clone(), client.clone(), index)))
            .collect();
        Ok((source, tasks))
    }

    fn new(options: KubernetesOptions, server: String) -> KubernetesSource {
        let kinds = config_kinds().len();
        KubernetesSource {
            options,
            server,
            held: Mutex::new(Cluster {
                states: vec![KindState::Listing; kinds],
                objects: vec![Objects::new(); kinds],
                last_change: None,
            }),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every kind has been listed once (or found not installed).
    pub fn is_synced(&self) -> bool {
        self.lock().states.iter().all(|s| *s != KindState::Listing)
    }

    /// (kinds listed or found missing, all kinds).
    pub fn progress(&self) -> (usize, usize) {
        let held = self.lock();
        let done = held
            .states
            .iter()
            .filter(|s| **s != KindState::Listing)
            .count();
        (done, held.states.len())
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits until [`KubernetesSource::is_synced`], at most `timeout`; whether it is.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut changes = self.subscribe();
        let synced = async {
            while !self.is_synced() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, synced).await.is_ok()
    }

    /// The documents and the problems of the objects held now, and how long ago the last
    /// change came.
    fn read(&self) -> (Vec<Document>, Vec<Diagnostic>, Option<Duration>) {
        let held = self.lock();
        let mut documents = Vec::new();
        let mut diagnostics = Vec::new();
        for held in held.objects.iter().flat_map(BTreeMap::values) {
            match held {
                Ok(doc) => documents.push(doc.clone()),
                Err(diagnostic) => diagnostics.push(Diagnostic::clone(diagnostic)),
            }
        }
        (
            documents,
            diagnostics,
            held.last_change.map(|at| at.elapsed()),
        )
    }

    /// What `/debug/config` shows: the server, the namespace, each kind's state, and how
    /// many objects are held.
    pub fn status(&self) -> Json {
        let held = self.lock();
        let kinds: serde_json::Map<String, Json> = config_kinds()
            .iter()
            .zip(&held.states)
            .map(|(kind, state)| (kind.plural.clone(), json!(state)))
            .collect();
        json!({
            "server": self.server,
            "namespace": self.options.namespace,
            "synced": held.states.iter().all(|s| *s != KindState::Listing),
            "objects": held.objects.iter().map(BTreeMap::len).sum::<usize>(),
            "kinds": kinds,
        })
    }

    /// Records a change and wakes the reloader.
    fn changed(&self, held: &mut Cluster) {
        held.last_change = Some(Instant::now());
        self.changes.send_modify(|n| *n += 1);
    }

    /// The result of a complete (re-)list of a kind: replaces what was held.
    fn replace_kind(&self, index: usize, objects: Objects) {
        let mut held = self.lock();
        held.states[index] = KindState::Listed;
        held.objects[index] = objects;
        self.changed(&mut held);
    }

    fn upsert(&self, index: usize, key: (String, String), object: Held) {
        let mut held = self.lock();
        held.objects[index].insert(key, object);
        self.changed(&mut held);
    }

    fn remove(&self, index: usize, key: &(String, String)) {
        let mut held = self.lock();
        if held.objects[index].remove(key).is_some() {
            self.changed(&mut held);
        }
    }

    /// The kind is not served: nothing of it is held. Returns whether that is news.
    fn not_installed(&self, index: usize) -> bool {
        let mut held = self.lock();
        if held.states[index] == KindState::NotInstalled {
            return false;
        }
        held.states[index] = KindState::NotInstalled;
        held.objects[index].clear();
        self.changed(&mut held);
        true
    }
}

/// The client configuration: `--kubeconfig`, else inferred (`$KUBECONFIG`,
/// `~/.kube/config`, the in-cluster service account).
async fn client_config(options: &KubernetesOptions) -> Result<kube::Config, KubernetesError> {
    let Some(path) = &options.kubeconfig else {
        return kube::Config::infer().await.map_err(KubernetesError::Infer);
    };
    let error = |source| KubernetesError::Kubeconfig {
        path: path.clone(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(error)?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(error)
}

/// An object of `kind` as a [`Document`], or an error when its spec is over `max_bytes`.
fn to_document(kind: &ConfigKind, object: kube::core::DynamicObject, max_bytes: usize) -> Held {
    let meta = object.metadata;
    let mut doc = Document {
        origin: Origin::Kubernetes {
            resource_version: meta.resource_version.unwrap_or_default(),
        },
        file: PathBuf::new(),
        line: 0,
        api_version: API_VERSION.to_owned(),
        kind: kind.kind.to_owned(),
        name: meta.name.unwrap_or_default(),
        namespace: meta.namespace,
        annotations: meta.annotations.unwrap_or_default(),
        spec: Json::Null,
    };
    let mut data = object.data;
    let spec = data.get_mut("spec").map(Json::take).unwrap_or(Json::Null);
    let size = json_size(&spec);
    if size > max_bytes {
        return Err(Box::new(Diagnostic {
            severity: Severity::Error,
            file: None,
            line: None,
            resource: Some(format!(
                "{}/{}/{}",
                doc.kind,
                doc.namespace.as_deref().unwrap_or_default(),
                doc.name
            )),
            field: Some("spec".to_owned()),
            message: format!(
                "the spec is {size} bytes of JSON, over the {max_bytes}-byte limit (--config-max-object-bytes); the object is not used"
            ),
            origin: Some(doc.location()),
        }));
    }
    doc.spec = spec;
    Ok(doc)
}

/// Bytes of `value` as compact JSON, counted without building the text.
fn json_size(value: &Json) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Adds the objects of `source` to what was read from files. A file document naming the
/// same (kind, namespace, name) as an object is dropped, with a warning naming both: the
/// Kubernetes object wins. Returns whether the source had listed every kind before its
/// objects were read (a load without that is not the cluster's whole configuration).
pub fn merge_into(read: &mut ReadResult, source: &KubernetesSource) -> bool {
    // Before the objects are read: if synced now, what is read holds every initial list.
    let synced = source.is_synced();
    let (documents, diagnostics, since_change) = source.read();
    let objects: BTreeMap<(&str, &str, &str), &Document> = documents
        .iter()
        .map(|d| {
            let ns = d.namespace.as_deref().unwrap_or_default();
            ((d.kind.as_str(), ns, d.name.as_str()), d)
        })
        .collect();
    let mut clashes = Vec::new();
    read.documents.retain(|file_doc| {
        let Some(ns) = file_doc.namespace.as_deref() else {
            return true;
        };
        match objects.get(&(file_doc.kind.as_str(), ns, file_doc.name.as_str())) {
            Some(object) => {
                clashes.push(clash_warning(file_doc, object));
                false
            }
            None => true,
        }
    });
    read.diagnostics.extend(clashes);
    read.diagnostics.extend(diagnostics);
    read.documents.extend(documents);
    read.rested = match (read.rested, since_change) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    synced
}

fn clash_warning(file_doc: &Document, object: &Document) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        file: Some(file_doc.file.clone()),
        line: Some(file_doc.line),
        resource: Some(format!(
            "{}/{}/{}",
            file_doc.kind,
            file_doc.namespace.as_deref().unwrap_or_default(),
            file_doc.name
        )),
        field: None,
        message: format!(
            "also defined by {}; the Kubernetes object is used and this file's definition is ignored",
            object.location()
        ),
        origin: None,
    }
}

/// `KIND/NAMESPACE/NAME → ORIGIN` of every document, for `/debug/config`.
pub fn origins(documents: &[Document]) -> Vec<Json> {
    let mut seen = HashSet::new();
    documents
        .iter()
        .filter(|d| seen.insert((&d.kind, &d.namespace, &d.name)))
        .map(|d| {
            json!({
                "resource": format!("{}/{}/{}", d.kind, d.namespace.as_deref().unwrap_or_default(), d.name),
                "origin": d.location(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::{DynamicObject, ObjectMeta};

    fn object(name: &str, spec: Json) -> DynamicObject {
        DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                resource_version: Some("7".to_owned()),
                ..ObjectMeta::default()
            },
            data: json!({ "spec": spec }),
        }
    }

    fn rule_kind() -> &'static ConfigKind {
        config_kinds().iter().find(|k| k.kind == "rule").unwrap()
    }

    #[test]
    fn objects_become_documents_within_the_size_limit() {
        let doc = to_document(rule_kind(), object("r", json!({"match": "true"})), 100).unwrap();
        assert_eq!(doc.kind, "rule");
        assert_eq!(doc.namespace.as_deref(), Some("ns"));
        assert_eq!(doc.spec, json!({"match": "true"}));
        assert_eq!(doc.location(), "kubernetes rule/ns/r (resourceVersion 7)");

        let big = json!({"match": "x".repeat(200)});
        let err = to_document(rule_kind(), object("big", big), 100).unwrap_err();
        assert_eq!(err.resource.as_deref(), Some("rule/ns/big"));
        assert_eq!(err.field.as_deref(), Some("spec"));
        assert!(err.to_string().starts_with("kubernetes rule/ns/big (resourceVersion 7): error: rule/ns/big: spec: the spec is 212 bytes"), "{err}");
    }

    #[test]
    fn a_kubernetes_object_wins_a_clash_with_a_file() {
        let source = KubernetesSource::new(KubernetesOptions::default(), "http://x".into());
        let index = config_kinds()
            .iter()
            .position(|k| k.kind == "rule")
            .unwrap();
        let held = to_document(rule_kind(), object("r", json!({"match": "false"})), 1000);
        source.upsert(index, ("ns".into(), "r".into()), held);
        assert!(!source.is_synced());

        let (mut file_docs, _) = crate::config::store::parse_file(
            std::path::Path::new("f.yaml"),
            "kind: rule\nmetadata: {name: r, namespace: ns}\nspec: {match: 'true'}\n---\nkind: rule\nmetadata: {name: other, namespace: ns}\nspec: {}\n",
        );
        file_docs.truncate(2);
        let mut read = ReadResult {
            documents: file_docs,
            ..ReadResult::default()
        };
        assert!(!merge_into(&mut read, &source));
        let names: Vec<(&str, &Origin)> = read
            .documents
            .iter()
            .map(|d| (d.name.as_str(), &d.origin))
            .collect();
        assert_eq!(names.len(), 2);
        assert_eq!(names[0], ("other", &Origin::File));
        assert_eq!(names[1].0, "r");
        assert_ne!(names[1].1, &Origin::File);
        assert_eq!(read.diagnostics.len(), 1);
        assert_eq!(
            read.diagnostics[0].to_string(),
            "f.yaml:1: warning: rule/ns/r: also defined by kubernetes rule/ns/r (resourceVersion 7); the Kubernetes object is used and this file's definition is ignored"
        );
    }
}
