//! Hot-reload trigger for the file-system config store.
//!
//! Poll-based on purpose: a Kubernetes ConfigMap update swaps the `..data` symlink,
//! which inotify-style watchers miss, and Mixer itself re-read its tree every 500 ms.
//! A [`Fingerprint`] summarises the whole tree (same walk as
//! [`crate::config::store::read_dirs`]); [`spawn_watcher`] compares
//! fingerprints and calls back once per settled change.
//!
//! The callback says whether it acted on the change ([`Reaction`]): a reload that finds
//! files still being written (see `store::read_dirs_settled`) answers
//! [`Reaction::Retry`], and the watcher calls again after its next debounce.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::store;

/// Identity of the content of a config tree: the walked file paths, their bytes and the
/// walk errors. Any edit, create, delete or rename of a read file changes it (up to
/// 64-bit hash collisions). Only comparable within one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64);

/// Fingerprints the files [`store::walk`] selects under `dirs`. Blocking (reads every
/// file).
pub fn fingerprint(dirs: &[PathBuf]) -> Fingerprint {
    let walk = store::walk(dirs);
    let mut hasher = DefaultHasher::new();
    walk.files.len().hash(&mut hasher);
    for file in &walk.files {
        file.as_os_str().as_encoded_bytes().hash(&mut hasher);
        match std::fs::read(file) {
            Ok(bytes) => {
                0u8.hash(&mut hasher);
                bytes.hash(&mut hasher);
            }
            Err(e) => {
                1u8.hash(&mut hasher);
                e.kind().hash(&mut hasher);
            }
        }
    }
    walk.errors.len().hash(&mut hasher);
    for error in &walk.errors {
        error.to_string().hash(&mut hasher);
    }
    Fingerprint(hasher.finish())
}

/// Smallest poll period used (a zero `poll` would spin).
const MIN_POLL: Duration = Duration::from_millis(1);

/// What became of a change reported to a watcher's `on_change`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// Acted on (applied, or rejected for its errors): report the next change.
    Done,
    /// The files were not ready (still changing, or not rested long enough): call again
    /// once the tree has held still for another debounce.
    Retry,
}

/// Starts a background task that polls `dirs` every `poll` and calls `on_change` once
/// the tree has changed and then stayed unchanged for `debounce`.
///
/// * The baseline fingerprint is taken on the calling thread before this returns, so
///   every change made after `spawn_watcher` returns is reported. Later fingerprints
///   are computed on tokio's blocking pool.
/// * A burst of changes whose gaps are shorter than `debounce` yields a single call.
///   If the tree ends up identical to the state last acted on (edit then revert within
///   the debounce window), no call is made.
/// * `on_change` runs on the blocking pool (so it may do blocking work such as
///   re-reading the store); the watcher waits for it to return before polling again,
///   so calls never overlap. A panicking `on_change` is logged and the watcher goes on.
/// * When `on_change` answers [`Reaction::Retry`], the change counts as not acted on:
///   `on_change` is called again once the tree has held still for another `debounce`.
/// * Runs until the returned task is aborted. Must be called inside a tokio runtime.
pub fn spawn_watcher(
    dirs: Vec<PathBuf>,
    poll: Duration,
    debounce: Duration,
    on_change: impl Fn() -> Reaction + Send + Sync + 'static,
) -> JoinHandle<()> {
    let poll = poll.max(MIN_POLL);
    let baseline = fingerprint(&dirs);
    let dirs = Arc::new(dirs);
    let on_change = Arc::new(on_change);
    tokio::spawn(async move {
        let mut acted = baseline;
        loop {
            tokio::time::sleep(poll).await;
            let Some(current) = observe(&dirs).await else {
                continue;
            };
            if current == acted {
                continue;
            }

            // Changed: wait until the fingerprint has held still for `debounce`.
            tracing::debug!(dirs = ?dirs, "config change detected; debouncing");
            let mut pending = current;
            let mut since = Instant::now();
            loop {
                let held = since.elapsed();
                if held >= debounce {
                    break;
                }
                tokio::time::sleep(poll.min(debounce - held)).await;
                if let Some(current) = observe(&dirs).await
                    && current != pending
                {
                    pending = current;
                    since = Instant::now();
                }
            }

            if pending == acted {
                tracing::debug!(dirs = ?dirs, "config change reverted; nothing to do");
                continue;
            }
            tracing::info!(dirs = ?dirs, "config changed; reloading");
            let callback = Arc::clone(&on_change);
            match tokio::task::spawn_blocking(move || callback()).await {
                Ok(Reaction::Retry) => tracing::debug!(dirs = ?dirs, "config reload deferred"),
                Ok(Reaction::Done) => acted = pending,
                Err(e) => {
                    acted = pending;
                    tracing::error!(error = %e, "config watcher: on_change callback failed");
                }
            }
        }
    })
}

/// Fingerprints on the blocking pool; `None` only if that task failed.
async fn observe(dirs: &Arc<Vec<PathBuf>>) -> Option<Fingerprint> {
    let dirs = Arc::clone(dirs);
    match tokio::task::spawn_blocking(move || fingerprint(&dirs)).await {
        Ok(fingerprint) => Some(fingerprint),
        Err(e) => {
            tracing::warn!(error = %e, "config watcher: fingerprinting failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    const DOC: &str = "kind: rule\nmetadata: {name: a, namespace: ns}\nspec: {match: 'true'}\n";
    const DOC2: &str = "kind: rule\nmetadata: {name: a, namespace: ns}\nspec: {match: 'fals'}\n";

    fn fp(dir: &Path) -> Fingerprint {
        fingerprint(&[dir.to_path_buf()])
    }

    #[test]
    fn fingerprint_tracks_content_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("a.yaml"), DOC).unwrap();
        let base = fp(dir);
        assert_eq!(fp(dir), base, "stable when nothing changes");

        // Same length, different content.
        fs::write(dir.join("a.yaml"), DOC2).unwrap();
        let edited = fp(dir);
        assert_ne!(edited, base);
        fs::write(dir.join("a.yaml"), DOC).unwrap();
        assert_eq!(fp(dir), base, "content-based, not mtime-based");

        fs::write(dir.join("b.yaml"), DOC).unwrap();
        let created = fp(dir);
        assert_ne!(created, base);

        fs::rename(dir.join("b.yaml"), dir.join("c.yaml")).unwrap();
        let renamed = fp(dir);
        assert_ne!(renamed, created);
        assert_ne!(renamed, base);

        fs::remove_file(dir.join("c.yaml")).unwrap();
        assert_eq!(fp(dir), base);

        // Files the store does not read do not count.
        fs::write(dir.join("notes.txt"), "x").unwrap();
        fs::write(dir.join(".hidden.yaml"), DOC).unwrap();
        assert_eq!(fp(dir), base);

        // A missing directory has a fingerprint too, distinct from an empty one.
        let missing = dir.join("missing");
        let gone = fp(&missing);
        fs::create_dir(&missing).unwrap();
        assert_ne!(fp(&missing), gone);
    }

    #[test]
    fn fingerprint_sees_configmap_symlink_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir(dir.join("..2024_01")).unwrap();
        fs::write(dir.join("..2024_01/a.yaml"), DOC).unwrap();
        symlink("..2024_01", dir.join("..data")).unwrap();
        symlink("..data/a.yaml", dir.join("a.yaml")).unwrap();
        let before = fp(dir);

        // What the kubelet does: new timestamped dir, new link, atomic rename over `..data`.
        fs::create_dir(dir.join("..2024_02")).unwrap();
        fs::write(dir.join("..2024_02/a.yaml"), DOC2).unwrap();
        symlink("..2024_02", dir.join("..data_tmp")).unwrap();
        fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        fs::remove_dir_all(dir.join("..2024_01")).unwrap();
        assert_ne!(fp(dir), before);
    }

    async fn expect_call(rx: &mut UnboundedReceiver<()>, what: &str) {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => panic!("{what}: watcher stopped"),
            Err(_) => panic!("{what}: on_change not called within 10 s"),
        }
    }

    async fn expect_quiet(rx: &mut UnboundedReceiver<()>, window: Duration, what: &str) {
        if let Ok(got) = tokio::time::timeout(window, rx.recv()).await {
            panic!("{what}: unexpected extra on_change ({got:?})");
        }
    }

    fn watch(
        dir: &Path,
        poll_ms: u64,
        debounce_ms: u64,
    ) -> (JoinHandle<()>, UnboundedReceiver<()>) {
        let (tx, rx) = unbounded_channel();
        let handle = spawn_watcher(
            vec![dir.to_path_buf()],
            Duration::from_millis(poll_ms),
            Duration::from_millis(debounce_ms),
            move || {
                let _ = tx.send(());
                Reaction::Done
            },
        );
        (handle, rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watcher_fires_on_edit_create_delete_rename() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        fs::write(dir.join("a.yaml"), DOC).unwrap();
        let (handle, mut rx) = watch(&dir, 20, 60);
        let quiet = Duration::from_millis(250);

        expect_quiet(&mut rx, quiet, "no change yet").await;

        fs::write(dir.join("a.yaml"), DOC2).unwrap();
        expect_call(&mut rx, "edit").await;
        expect_quiet(&mut rx, quiet, "edit").await;

        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/b.yaml"), DOC).unwrap();
        expect_call(&mut rx, "create").await;
        expect_quiet(&mut rx, quiet, "create").await;

        fs::rename(dir.join("sub/b.yaml"), dir.join("sub/c.yaml")).unwrap();
        expect_call(&mut rx, "rename").await;
        expect_quiet(&mut rx, quiet, "rename").await;

        fs::remove_file(dir.join("a.yaml")).unwrap();
        expect_call(&mut rx, "delete").await;
        expect_quiet(&mut rx, quiet, "delete").await;

        handle.abort();
        let joined = handle.await;
        assert!(joined.unwrap_err().is_cancelled());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_reload_is_tried_again_once_the_files_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let file = dir.join("a.yaml");
        fs::write(&file, DOC).unwrap();
        let (tx, mut rx) = unbounded_channel();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let handle = spawn_watcher(
            vec![dir.clone()],
            Duration::from_millis(20),
            Duration::from_millis(100),
            move || {
                // The first call finds the file just rewritten in place, with the bytes the
                // watcher already saw: the content fingerprint alone would never call again.
                if calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                    fs::write(dir.join("a.yaml"), DOC2).unwrap();
                }
                let settled = store::read_dirs_settled(
                    std::slice::from_ref(&dir),
                    Duration::from_millis(100),
                );
                let _ = tx.send(settled.is_ok());
                if settled.is_ok() {
                    Reaction::Done
                } else {
                    Reaction::Retry
                }
            },
        );
        fs::write(&file, DOC2).unwrap();
        let next = async |rx: &mut UnboundedReceiver<bool>| {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("on_change called within 10 s")
                .expect("watcher running")
        };
        assert!(!next(&mut rx).await, "the first read is deferred");
        assert!(next(&mut rx).await, "the second one reads the rested file");
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await {
            panic!("unexpected extra on_change ({got:?})");
        }
        handle.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn burst_of_edits_fires_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        fs::write(dir.join("a.yaml"), DOC).unwrap();
        let (handle, mut rx) = watch(&dir, 20, 100);

        for i in 0..5 {
            fs::write(dir.join("a.yaml"), format!("{DOC}# edit {i}\n")).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        expect_call(&mut rx, "burst").await;
        expect_quiet(&mut rx, Duration::from_millis(500), "burst").await;

        handle.abort();
    }
}
