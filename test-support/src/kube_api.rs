//! A Kubernetes API server fake: the list/watch HTTP protocol kube-rs (kube-runtime's
//! `watcher`, reflectors) speaks, over plain HTTP on loopback, for any resource a test
//! registers. No API server can run where these tests run; this one implements what a
//! client sees of one:
//!
//! * list: `GET /api/v1/PLURAL`, `/apis/GROUP/VERSION/PLURAL`, and the namespaced
//!   `.../namespaces/NS/PLURAL`, answering a `…List` whose `metadata.resourceVersion` is the
//!   current one; `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`), `fieldSelector`
//!   (`metadata.name`, `metadata.namespace`, any dotted path; `=`, `==`, `!=`), and
//!   `limit`/`continue` pagination (a continue token older than the compacted history is
//!   `410 Gone`);
//! * get: `.../PLURAL/NAME`;
//! * watch (`watch=true|1`): newline-delimited `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR,
//!   "object": …}` events after `resourceVersion` (replayed from history, then live), ending
//!   after `timeoutSeconds`; with `sendInitialEvents=true`, the current objects first and a
//!   bookmark annotated `k8s.io/initial-events-end`. A `resourceVersion` older than the
//!   compacted history gets, as from a real API server, a `200` stream holding one ERROR
//!   event (a `Status` with code 410, reason `Expired`);
//! * one global, monotonically increasing resourceVersion for every change.
//!
//! Test controls: [`KubeApi::apply`] / [`KubeApi::delete`] objects, [`KubeApi::bookmark`],
//! [`KubeApi::compact`] the history, [`KubeApi::drop_watches`], answer 404 for a resource
//! ([`KubeApi::set_not_found`], a CRD not installed), hold lists back
//! ([`KubeApi::hold_lists`]), [`KubeApi::stop`] and [`KubeApi::restart`] on the same port
//! (keeping or losing the objects), and the requests seen ([`KubeApi::requests`]).
//! [`KubeApi::kubeconfig`] is a kubeconfig file naming the server (no authentication).
//!
//! Each run of the server has its own tokio runtime on its own thread, so the fake serves
//! tests with or without a runtime of their own, and stopping it closes every connection.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;

/// A resource the fake serves: which URL path and which `kind` its objects have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// `""` for the core group (`/api/v1`).
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl ResourceType {
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
        }
    }

    /// `v1` or `GROUP/VERSION`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The core and apps resources `kubernetesenv` reads; registered at start.
pub fn workload_resources() -> Vec<ResourceType> {
    vec![
        ResourceType::new("", "v1", "Pod", "pods", true),
        ResourceType::new("apps", "v1", "ReplicaSet", "replicasets", true),
        ResourceType::new("apps", "v1", "Deployment", "deployments", true),
    ]
}

/// One request the fake answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The resource's plural, when the path named one.
    pub plural: Option<String>,
    pub watch: bool,
}

/// One change, as kept in the history that watches resume from.
#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    resource: usize,
    event: &'static str,
    object: Json,
}

/// An open watch stream.
struct Watcher {
    resource: usize,
    namespace: Option<String>,
    selectors: Selectors,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct Store {
    resources: Vec<ResourceType>,
    /// Resources answering 404, by index.
    not_found: Vec<bool>,
    /// Objects per resource, by (namespace, name).
    objects: Vec<BTreeMap<(String, String), Json>>,
    rv: u64,
    /// Resource versions up to this one (included) are too old to watch from (410).
    compacted: u64,
    history: Vec<Change>,
    watchers: Vec<Watcher>,
    requests: Vec<Request>,
    next_uid: u64,
}

impl Store {
    fn index_of_kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.api_version() == api_version && r.kind == kind)
    }

    fn index_of_path(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.resources
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Makes every resourceVersion handed out so far too old to watch from. The current
    /// one moves on, so that a list made now gives a version that can be watched.
    fn expire_history(&mut self) {
        self.compacted = self.rv;
        self.rv += 1;
        self.history.clear();
    }

    /// Records a change and sends it to the watches it concerns.
    fn publish(&mut self, resource: usize, event: &'static str, object: Json) {
        let line = event_line(event, &object);
        self.watchers.retain(|w| {
            if w.resource != resource || !w.selectors.matches(w.namespace.as_deref(), &object) {
                return !w.tx.is_closed();
            }
            w.tx.send(line.clone()).is_ok()
        });
        self.history.push(Change {
            rv: self.rv,
            resource,
            event,
            object,
        });
    }
}

/// Shared between the test's controls and every run of the server.
struct Shared {
    store: Mutex<Store>,
    /// `false` while lists are held back ([`KubeApi::hold_lists`]).
    lists_open: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running (or stopped) API server fake.
pub struct KubeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
}

/// What happens to the objects when the fake restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// As after an API server restart: everything is still there.
    KeepState,
    /// As after etcd was restored from nothing: no objects, and every resourceVersion
    /// handed out before is too old (clients must re-list).
    LoseState,
}

impl KubeApi {
    /// Starts on a free loopback port with [`workload_resources`] registered.
    pub fn start() -> KubeApi {
        let dir = tempfile::tempdir().expect("creates a tempdir");
        let shared = Arc::new(Shared {
            // Starts above 0: a watch from "0" means "from any point", not "from the start".
            store: Mutex::new(Store {
                rv: 1,
                ..Store::default()
            }),
            lists_open: tokio::sync::watch::channel(true).0,
        });
        let (runtime, addr) = serve(shared.clone(), SocketAddr::from(([127, 0, 0, 1], 0)));
        let api = KubeApi {
            shared,
            addr,
            runtime: Some(runtime),
            dir,
        };
        for resource in workload_resources() {
            api.register(resource);
        }
        write_kubeconfig(&api.kubeconfig(), addr);
        api
    }

    /// Serves `resource` from now on (one line per resource, as a CRD being installed).
    pub fn register(&self, resource: ResourceType) {
        let mut store = self.shared.lock();
        if store
            .index_of_kind(&resource.api_version(), &resource.kind)
            .is_none()
        {
            store.resources.push(resource);
            store.not_found.push(false);
            store.objects.push(BTreeMap::new());
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig file whose current context is this server, without credentials.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Creates or replaces an object (by `apiVersion`, `kind`, `metadata.namespace`,
    /// `metadata.name`), as `kubectl apply` does: ADDED or MODIFIED to the watches. A
    /// namespaced object without a namespace goes to `default`. Returns its new
    /// resourceVersion. Panics when the kind is not registered.
    pub fn apply(&self, mut object: Json) -> u64 {
        let mut store = self.shared.lock();
        let resource = resource_of(&store, &object);
        let namespaced = store.resources[resource].namespaced;
        let key = object_key(&mut object, namespaced);
        store.rv += 1;
        let rv = store.rv;
        let existing = store.objects[resource].get(&key).cloned();
        let uid = match existing.as_ref() {
            Some(old) => old["metadata"]["uid"].clone(),
            None => {
                store.next_uid += 1;
                json!(format!("00000000-0000-4000-8000-{:012}", store.next_uid))
            }
        };
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        meta["uid"] = uid;
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        store.objects[resource].insert(key, object.clone());
        let event = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.publish(resource, event, object);
        rv
    }

    /// Deletes an object; DELETED to the watches. Returns whether it existed.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let mut store = self.shared.lock();
        let resource = store
            .index_of_kind(api_version, kind)
            .unwrap_or_else(|| panic!("the fake serves no {api_version} {kind}"));
        let key = (namespace.to_owned(), name.to_owned());
        let Some(mut object) = store.objects[resource].remove(&key) else {
            return false;
        };
        store.rv += 1;
        object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
        store.publish(resource, "DELETED", object);
        true
    }

    /// The objects of a kind now, in (namespace, name) order.
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Json> {
        let store = self.shared.lock();
        store
            .index_of_kind(api_version, kind)
            .map(|i| store.objects[i].values().cloned().collect())
            .unwrap_or_default()
    }

    /// The current (last handed out) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch that allows them.
    pub fn bookmark(&self) {
        let mut store = self.shared.lock();
        let rv = store.rv;
        let Store {
            resources,
            watchers,
            ..
        } = &mut *store;
        watchers.retain(|w| {
            if !w.bookmarks {
                return true;
            }
            let line = event_line(
                "BOOKMARK",
                &bookmark_object(&resources[w.resource], rv, false),
            );
            w.tx.send(line).is_ok()
        });
    }

    /// Forgets the history: every resourceVersion handed out so far becomes too old to
    /// watch from (as etcd compaction through the current revision), so a client whose
    /// watch is re-established gets 410 Gone and must re-list. Open watches go on.
    pub fn compact(&self) {
        self.shared.lock().expire_history();
    }

    /// Ends every open watch stream (the connections stay usable), as a load balancer
    /// or an API server rollout does.
    pub fn drop_watches(&self) {
        self.shared.lock().watchers.clear();
    }

    /// Whether `GROUP/PLURAL` answers 404 (its CRD not installed) from now on.
    pub fn set_not_found(&self, group: &str, plural: &str, not_found: bool) {
        let mut store = self.shared.lock();
        let indices: Vec<usize> = (0..store.resources.len())
            .filter(|&i| store.resources[i].group == group && store.resources[i].plural == plural)
            .collect();
        assert!(!indices.is_empty(), "the fake serves no {group}/{plural}");
        for i in indices {
            store.not_found[i] = not_found;
            if not_found {
                store.watchers.retain(|w| w.resource != i);
            }
        }
    }

    /// Holds every list request back until [`KubeApi::release_lists`] (watches still
    /// answer): a slow API server at start.
    pub fn hold_lists(&self) {
        self.shared.lists_open.send_replace(false);
    }

    pub fn release_lists(&self) {
        self.shared.lists_open.send_replace(true);
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// List requests (not watches) for `plural` so far.
    pub fn list_count(&self, plural: &str) -> usize {
        self.count(plural, false)
    }

    /// Watch requests for `plural` so far.
    pub fn watch_count(&self, plural: &str) -> usize {
        self.count(plural, true)
    }

    fn count(&self, plural: &str, watch: bool) -> usize {
        let store = self.shared.lock();
        store
            .requests
            .iter()
            .filter(|r| r.watch == watch && r.plural.as_deref() == Some(plural))
            .count()
    }

    /// Open watch streams now.
    pub fn open_watches(&self) -> usize {
        let mut store = self.shared.lock();
        store.watchers.retain(|w| !w.tx.is_closed());
        store.watchers.len()
    }

    /// Stops serving: the port is closed and every connection with it.
    pub fn stop(&mut self) {
        self.shared.lock().watchers.clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Serves again on the same port (stopping first if running).
    pub fn restart(&mut self, restart: Restart) {
        self.stop();
        if restart == Restart::LoseState {
            let mut store = self.shared.lock();
            for objects in &mut store.objects {
                objects.clear();
            }
            store.expire_history();
        }
        let (runtime, addr) = serve(self.shared.clone(), self.addr);
        assert_eq!(addr, self.addr);
        self.runtime = Some(runtime);
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A kubeconfig naming `addr` over plain HTTP, without credentials.
fn write_kubeconfig(path: &Path, addr: SocketAddr) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Binds `addr` (retrying a while: a port just closed may still be held) and serves on a
/// runtime of its own. Blocking only on the std listener, so callable from async tests.
fn serve(shared: Arc<Shared>, addr: SocketAddr) -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("kube-api-fake")
        .enable_all()
        .build()
        .expect("builds a runtime");
    let mut tries = 0;
    let listener = loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => break listener,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("binding {addr}: {e}"),
        }
    };
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let bound = listener.local_addr().expect("a bound address");
    let router = axum::Router::new().fallback(handle).with_state(shared);
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        let _ = axum::serve(listener, router).await;
    });
    (runtime, bound)
}

/// What a request path names.
struct Target {
    resource: usize,
    namespace: Option<String>,
    name: Option<String>,
}

/// Splits `/api/v1/...` or `/apis/G/V/...` into group, version and the rest.
fn split_path(path: &str) -> Option<(String, String, Vec<String>)> {
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    match parts.first().map(String::as_str) {
        Some("api") if parts.len() >= 2 => {
            Some((String::new(), parts[1].clone(), parts[2..].to_vec()))
        }
        Some("apis") if parts.len() >= 3 => {
            Some((parts[1].clone(), parts[2].clone(), parts[3..].to_vec()))
        }
        _ => None,
    }
}

/// The plural, namespace and name of the rest of a path.
fn split_rest(rest: &[String]) -> Option<(Option<String>, String, Option<String>)> {
    match rest {
        [ns_word, ns, plural] if ns_word == "namespaces" => {
            Some((Some(ns.clone()), plural.clone(), None))
        }
        [ns_word, ns, plural, name] if ns_word == "namespaces" => {
            Some((Some(ns.clone()), plural.clone(), Some(name.clone())))
        }
        [plural] => Some((None, plural.clone(), None)),
        [plural, name] => Some((None, plural.clone(), Some(name.clone()))),
        _ => None,
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let parsed = split_path(uri.path()).and_then(|(g, v, rest)| Some((g, v, split_rest(&rest)?)));
    let target = {
        let mut store = shared.lock();
        store.requests.push(Request {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            plural: parsed.as_ref().map(|(_, _, (_, plural, _))| plural.clone()),
            watch,
        });
        parsed.and_then(|(group, version, (namespace, plural, name))| {
            let resource = store.index_of_path(&group, &version, &plural)?;
            (!store.not_found[resource]).then_some(Target {
                resource,
                namespace,
                name,
            })
        })
    };
    let Some(target) = target else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    if method != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake only reads",
        );
    }
    let selectors = match Selectors::parse(&query) {
        Ok(s) => s,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    match (&target.name, watch) {
        (Some(name), false) => get(&shared, &target, name),
        (None, false) => list(&shared, &target, &selectors, &query).await,
        (_, true) => watch_stream(&shared, target, selectors, &query),
    }
}

fn get(shared: &Shared, target: &Target, name: &str) -> Response {
    let store = shared.lock();
    let key = (
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    );
    match store.objects[target.resource].get(&key) {
        Some(object) => json_response(StatusCode::OK, object),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{name:?} not found"),
        ),
    }
}

async fn list(
    shared: &Shared,
    target: &Target,
    selectors: &Selectors,
    query: &HashMap<String, String>,
) -> Response {
    let mut open = shared.lists_open.subscribe();
    let _ = open.wait_for(|open| *open).await;
    let store = shared.lock();
    let offset = match query.get("continue").filter(|c| !c.is_empty()) {
        None => 0,
        Some(token) => match parse_continue(token) {
            Some((rv, _)) if rv <= store.compacted => {
                return status(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result.",
                );
            }
            Some((_, offset)) => offset,
            None => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid continue token",
                );
            }
        },
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let matching: Vec<&Json> = store.objects[target.resource]
        .values()
        .filter(|o| selectors.matches(target.namespace.as_deref(), o))
        .collect();
    let page: Vec<Json> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|o| (*o).clone())
        .collect();
    let next = offset + page.len();
    let resource = &store.resources[target.resource];
    let mut metadata = json!({"resourceVersion": store.rv.to_string()});
    if next < matching.len() {
        metadata["continue"] = json!(format!("{}-{next}", store.rv));
    }
    let body = json!({
        "apiVersion": resource.api_version(),
        "kind": format!("{}List", resource.kind),
        "metadata": metadata,
        "items": page,
    });
    json_response(StatusCode::OK, &body)
}

fn parse_continue(token: &str) -> Option<(u64, usize)> {
    let (rv, offset) = token.split_once('-')?;
    Some((rv.parse().ok()?, offset.parse().ok()?))
}

/// A watch: replayed history (or the initial objects), then live events, until the
/// timeout, a drop, or the server stops.
fn watch_stream(
    shared: &Shared,
    target: Target,
    selectors: Selectors,
    query: &HashMap<String, String>,
) -> Response {
    let (tx, rx) = mpsc::unbounded_channel();
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let initial = query.get("sendInitialEvents").is_some_and(|b| b == "true");
    let since = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse::<u64>().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut store = shared.lock();
    let namespace = target.namespace.as_deref();
    let resource = &store.resources[target.resource];
    if initial || since == 0 {
        for object in store.objects[target.resource].values() {
            if selectors.matches(namespace, object) {
                let _ = tx.send(event_line("ADDED", object));
            }
        }
        if initial {
            let _ = tx.send(event_line(
                "BOOKMARK",
                &bookmark_object(resource, store.rv, true),
            ));
        }
    } else if since <= store.compacted {
        let message = format!(
            "too old resource version: {since} ({})",
            store.compacted + 1
        );
        let _ = tx.send(event_line(
            "ERROR",
            &status_object(410, "Expired", &message),
        ));
        drop(tx);
        return stream_response(rx, None);
    } else {
        for change in store
            .history
            .iter()
            .filter(|c| c.rv > since && c.resource == target.resource)
        {
            if selectors.matches(namespace, &change.object) {
                let _ = tx.send(event_line(change.event, &change.object));
            }
        }
    }
    store.watchers.push(Watcher {
        resource: target.resource,
        namespace: target.namespace,
        selectors,
        bookmarks,
        tx,
    });
    stream_response(rx, timeout)
}

fn stream_response(rx: mpsc::UnboundedReceiver<Bytes>, timeout: Option<Duration>) -> Response {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let stream = futures::stream::unfold(rx, move |mut rx| async move {
        let next = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten(),
            None => rx.recv().await,
        };
        next.map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

fn event_line(event: &str, object: &Json) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": event, "object": object})).expect("JSON");
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark_object(resource: &ResourceType, rv: u64, initial_end: bool) -> Json {
    let mut object = json!({
        "apiVersion": resource.api_version(),
        "kind": resource.kind,
        "metadata": {"resourceVersion": rv.to_string()},
    });
    if initial_end {
        object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    object
}

fn status_object(code: u16, reason: &str, message: &str) -> Json {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    json_response(code, &status_object(code.as_u16(), reason, message))
}

fn json_response(code: StatusCode, body: &Json) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn resource_of(store: &Store, object: &Json) -> usize {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    store
        .index_of_kind(api_version, kind)
        .unwrap_or_else(|| panic!("the fake serves no {api_version} {kind}"))
}

/// (namespace, name) of an object, defaulting a namespaced object's namespace.
fn object_key(object: &mut Json, namespaced: bool) -> (String, String) {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("an object without metadata.name: {object}"))
        .to_owned();
    if !namespaced {
        return (String::new(), name);
    }
    let namespace = match object["metadata"]["namespace"].as_str() {
        Some(ns) => ns.to_owned(),
        None => {
            object["metadata"]["namespace"] = json!("default");
            "default".to_owned()
        }
    };
    (namespace, name)
}

/// Label and field selectors of a request.
#[derive(Clone, Debug, Default)]
struct Selectors {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

#[derive(Clone, Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Selectors {
    fn parse(query: &HashMap<String, String>) -> Result<Selectors, String> {
        let parse = |name: &str| {
            query
                .get(name)
                .map(|s| parse_requirements(s))
                .unwrap_or(Ok(Vec::new()))
        };
        Ok(Selectors {
            labels: parse("labelSelector")?,
            fields: parse("fieldSelector")?,
        })
    }

    /// Whether `object` is in `namespace` (any, when `None`) and matches the selectors.
    fn matches(&self, namespace: Option<&str>, object: &Json) -> bool {
        let meta = &object["metadata"];
        if let Some(ns) = namespace
            && meta["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        let label = |key: &str| meta["labels"][key].as_str().map(str::to_owned);
        let field = |path: &str| {
            let value = path.split('.').fold(object, |v, part| &v[part]);
            match value {
                Json::String(s) => Some(s.clone()),
                Json::Null => None,
                other => Some(other.to_string()),
            }
        };
        self.labels.iter().all(|r| r.holds(label))
            && self
                .fields
                .iter()
                .all(|r| r.holds(|p| field(p).or(Some(String::new()))))
    }
}

impl Requirement {
    fn holds(&self, value: impl Fn(&str) -> Option<String>) -> bool {
        match self {
            Requirement::Equals(k, v) => value(k).as_deref() == Some(v),
            Requirement::NotEquals(k, v) => value(k).as_deref() != Some(v),
            Requirement::Exists(k) => value(k).is_some(),
            Requirement::Absent(k) => value(k).is_none(),
        }
    }
}

fn parse_requirements(text: &str) -> Result<Vec<Requirement>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            if let Some((k, v)) = r.split_once("!=") {
                Ok(Requirement::NotEquals(
                    k.trim().to_owned(),
                    v.trim().to_owned(),
                ))
            } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                Ok(Requirement::Equals(
                    k.trim().to_owned(),
                    v.trim().to_owned(),
                ))
            } else if let Some(k) = r.strip_prefix('!') {
                Ok(Requirement::Absent(k.trim().to_owned()))
            } else if r.contains([' ', '(']) {
                Err(format!("unsupported selector requirement {r:?}"))
            } else {
                Ok(Requirement::Exists(r.to_owned()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;

    fn rule(name: &str, ns: &str, matched: &str) -> Json {
        json!({
            "apiVersion": "config.istio.io/v1alpha2",
            "kind": "rule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"match": matched},
        })
    }

    fn fake() -> KubeApi {
        let api = KubeApi::start();
        api.register(ResourceType::new(
            "config.istio.io",
            "v1alpha2",
            "rule",
            "rules",
            true,
        ));
        api
    }

    /// Sends a GET and returns the connection after the status line and headers.
    fn open(api: &KubeApi, target: &str) -> (u16, BufReader<TcpStream>) {
        let mut stream = TcpStream::connect(api.address()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let code = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        (code, reader)
    }

    /// A chunked body's next event line.
    fn next_event(reader: &mut BufReader<TcpStream>) -> Json {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            assert!(size > 0, "the stream ended");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            let text = String::from_utf8(chunk[..size].to_vec()).unwrap();
            if !text.trim().is_empty() {
                return serde_json::from_str(text.trim()).unwrap();
            }
        }
    }

    fn body(reader: BufReader<TcpStream>) -> Json {
        let mut text = String::new();
        let mut reader = reader;
        reader.read_to_string(&mut text).unwrap();
        // The body may be chunked or not; the JSON is the one line starting with `{`.
        let line = text.lines().find(|l| l.starts_with('{')).unwrap();
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn lists_with_resource_version_and_pages() {
        let api = fake();
        api.apply(rule("a", "ns1", "true"));
        api.apply(rule("b", "ns2", "true"));
        let rv = api.apply(rule("c", "ns1", "false"));
        let (code, reader) = open(&api, "/apis/config.istio.io/v1alpha2/rules");
        assert_eq!(code, 200);
        let list = body(reader);
        assert_eq!(list["kind"], "ruleList");
        assert_eq!(list["metadata"]["resourceVersion"], rv.to_string());
        assert_eq!(list["items"].as_array().unwrap().len(), 3);

        let (_, reader) = open(&api, "/apis/config.istio.io/v1alpha2/namespaces/ns1/rules");
        let names: Vec<Json> = body(reader)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, [json!("a"), json!("c")]);

        let (_, reader) = open(&api, "/apis/config.istio.io/v1alpha2/rules?limit=2");
        let first = body(reader);
        assert_eq!(first["items"].as_array().unwrap().len(), 2);
        let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
        let (_, reader) = open(
            &api,
            &format!("/apis/config.istio.io/v1alpha2/rules?limit=2&continue={token}"),
        );
        let second = body(reader);
        assert_eq!(second["items"].as_array().unwrap().len(), 1);
        assert!(second["metadata"].get("continue").is_none());

        api.set_not_found("config.istio.io", "rules", true);
        let (code, _) = open(&api, "/apis/config.istio.io/v1alpha2/rules");
        assert_eq!(code, 404);
        assert_eq!(api.list_count("rules"), 5);
    }

    #[test]
    fn watch_streams_changes_after_the_resource_version() {
        let api = fake();
        let rv = api.apply(rule("a", "ns1", "true"));
        api.apply(rule("a", "ns1", "false"));
        let (code, mut reader) = open(
            &api,
            &format!(
                "/apis/config.istio.io/v1alpha2/rules?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"
            ),
        );
        assert_eq!(code, 200);
        let modified = next_event(&mut reader);
        assert_eq!(modified["type"], "MODIFIED");
        assert_eq!(modified["object"]["spec"]["match"], "false");

        api.apply(rule("b", "ns1", "true"));
        assert_eq!(next_event(&mut reader)["type"], "ADDED");
        api.bookmark();
        let bookmark = next_event(&mut reader);
        assert_eq!(bookmark["type"], "BOOKMARK");
        assert_eq!(
            bookmark["object"]["metadata"]["resourceVersion"],
            api.resource_version().to_string()
        );
        assert!(api.delete("config.istio.io/v1alpha2", "rule", "ns1", "a"));
        let deleted = next_event(&mut reader);
        assert_eq!(deleted["type"], "DELETED");
        assert_eq!(deleted["object"]["metadata"]["name"], "a");

        api.drop_watches();
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest.trim(), "0", "the stream ends with its last chunk");
    }

    #[test]
    fn too_old_resource_version_is_gone() {
        let mut api = fake();
        let rv = api.apply(rule("a", "ns1", "true"));
        api.apply(rule("b", "ns1", "true"));
        api.compact();
        let (code, mut reader) = open(
            &api,
            &format!("/apis/config.istio.io/v1alpha2/rules?watch=1&resourceVersion={rv}"),
        );
        assert_eq!(code, 200);
        let error = next_event(&mut reader);
        assert_eq!(error["type"], "ERROR");
        assert_eq!(error["object"]["code"], 410);
        assert_eq!(error["object"]["reason"], "Expired");

        let (code, _) = open(
            &api,
            &format!("/apis/config.istio.io/v1alpha2/rules?limit=1&continue={rv}-1"),
        );
        assert_eq!(code, 410);

        // A restart that loses the objects: lists are empty, old versions are gone.
        api.restart(Restart::LoseState);
        let (_, reader) = open(&api, "/apis/config.istio.io/v1alpha2/rules");
        assert!(body(reader)["items"].as_array().unwrap().is_empty());
        assert_eq!(api.watch_count("rules"), 1);
    }
}
