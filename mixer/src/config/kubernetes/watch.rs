//! The watch of one kind, and the reloader that turns bursts of changes into one reload.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::task::JoinHandle;

use super::{ConfigKind, KubernetesSource, Objects, config_kinds, to_document};
use crate::config::watch::Reaction;

/// Lists and watches kind number `index` of [`config_kinds`] into `source`, forever:
/// kube-runtime's watcher re-lists after 410 Gone and re-watches after a dropped
/// connection; errors are retried with its default backoff (0.8 s doubling to 30 s).
pub(super) async fn watch_kind(source: Arc<KubernetesSource>, client: kube::Client, index: usize) {
    let kind = &config_kinds()[index];
    let resource = ApiResource {
        group: super::GROUP.to_owned(),
        version: super::VERSION.to_owned(),
        api_version: super::API_VERSION.to_owned(),
        kind: kind.kind.to_owned(),
        plural: kind.plural.clone(),
    };
    let api: Api<DynamicObject> = match &source.options.namespace {
        Some(namespace) => Api::namespaced_with(client, namespace, &resource),
        None => Api::all_with(client, &resource),
    };
    let mut events =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    let mut watch = KindWatch {
        source: &source,
        kind,
        index,
        listing: None,
        failing: false,
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => watch.event(event),
            Err(error) => watch.error(&error),
        }
    }
}

/// What one kind's watch remembers between events.
struct KindWatch<'a> {
    source: &'a KubernetesSource,
    kind: &'a ConfigKind,
    index: usize,
    /// A (re-)list in progress: applied only once complete.
    listing: Option<Objects>,
    /// The last event was an error (logged once until the watch works again).
    failing: bool,
}

impl KindWatch<'_> {
    fn event(&mut self, event: Event<DynamicObject>) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(kind = self.kind.kind, resource = %self.kind.plural, "Kubernetes: watching again.");
        }
        let max = self.source.options.max_object_bytes;
        match event {
            Event::Init => self.listing = Some(Objects::new()),
            Event::InitApply(object) => {
                let key = key_of(&object);
                let held = to_document(self.kind, object, max);
                self.listing.get_or_insert_default().insert(key, held);
            }
            Event::InitDone => {
                let objects = self.listing.take().unwrap_or_default();
                tracing::debug!(
                    kind = self.kind.kind,
                    objects = objects.len(),
                    "Kubernetes: listed."
                );
                self.source.replace_kind(self.index, objects);
            }
            Event::Apply(object) => {
                let key = key_of(&object);
                tracing::info!(
                    resource = %format!("{}/{}/{}", self.kind.kind, key.0, key.1),
                    resource_version = object.metadata.resource_version.as_deref().unwrap_or_default(),
                    "Kubernetes: object added or changed."
                );
                self.source
                    .upsert(self.index, key, to_document(self.kind, object, max));
            }
            Event::Delete(object) => {
                let key = key_of(&object);
                tracing::info!(resource = %format!("{}/{}/{}", self.kind.kind, key.0, key.1), "Kubernetes: object deleted.");
                self.source.remove(self.index, &key);
            }
        }
    }

    fn error(&mut self, error: &watcher::Error) {
        self.listing = None;
        if is_not_found(error) {
            if self.source.not_installed(self.index) {
                tracing::warn!(
                    kind = self.kind.kind,
                    resource = %format!("{}.{}", self.kind.plural, super::GROUP),
                    "Kubernetes: the API server does not serve this kind (its CustomResourceDefinition is not installed); skipping it and checking again now and then."
                );
            }
            return;
        }
        if let watcher::Error::WatchError(status) = error
            && status.code == 410
        {
            tracing::info!(
                kind = self.kind.kind,
                "Kubernetes: watch history expired (410 Gone); listing again."
            );
            return;
        }
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!(kind = self.kind.kind, error = %error, "Kubernetes: still failing; retrying.");
        } else {
            tracing::warn!(kind = self.kind.kind, error = %error, "Kubernetes: watch failed; retrying with backoff, the configuration held keeps serving.");
        }
    }
}

fn key_of(object: &DynamicObject) -> (String, String) {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether the API server answered 404 for the kind's resource.
fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.is_not_found(),
        watcher::Error::WatchError(status) => status.is_not_found(),
        _ => false,
    }
}

/// Calls `reload` (on the blocking pool) once the source's objects have changed and then
/// stayed unchanged for `debounce`; again after another `debounce` when it answers
/// [`Reaction::Retry`]. Runs until the task is aborted.
pub fn spawn_reloader(
    source: Arc<KubernetesSource>,
    debounce: Duration,
    reload: impl Fn() -> Reaction + Send + Sync + 'static,
) -> JoinHandle<()> {
    let mut changes = source.subscribe();
    let reload = Arc::new(reload);
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            loop {
                // A burst: wait until the changes stop for `debounce`.
                while let Ok(changed) = tokio::time::timeout(debounce, changes.changed()).await {
                    if changed.is_err() {
                        return;
                    }
                }
                let reload = reload.clone();
                match tokio::task::spawn_blocking(move || reload()).await {
                    Ok(Reaction::Retry) => changes.mark_changed(),
                    Ok(Reaction::Done) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "Kubernetes: the configuration reload failed");
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::kubernetes::KubernetesOptions;

    fn upsert(source: &KubernetesSource, name: &str) {
        let key = ("ns".to_owned(), name.to_owned());
        let doc = crate::config::store::Document {
            origin: crate::config::store::Origin::File,
            file: Default::default(),
            line: 0,
            api_version: String::new(),
            kind: "rule".to_owned(),
            name: name.to_owned(),
            namespace: Some("ns".to_owned()),
            annotations: Default::default(),
            spec: serde_json::Value::Null,
        };
        source.upsert(0, key, Ok(doc));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_of_changes_is_one_reload_that_sees_them_all() {
        let source = Arc::new(KubernetesSource::new(
            KubernetesOptions::default(),
            "x".into(),
        ));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let seen = source.clone();
        let task = spawn_reloader(source.clone(), Duration::from_millis(50), move || {
            let _ = tx.send(*seen.changes.borrow());
            Reaction::Done
        });
        // No await in between: the reloader cannot run until the burst is over.
        for i in 0..50 {
            upsert(&source, &format!("r{i}"));
        }
        assert_eq!(
            rx.recv().await,
            Some(50),
            "one reload, after the whole burst"
        );
        upsert(&source, "late");
        assert_eq!(
            rx.recv().await,
            Some(51),
            "the next change is the next reload"
        );
        task.abort();
    }
}
