//! Configuration directories: the repository's samples, Istio's attribute manifests, and
//! files written the way editors and ConfigMap updates write them.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// Istio's attribute manifests (`samples/default/attributes.yaml`): every configuration a
/// test writes starts from them, as a real deployment does.
pub const ATTRIBUTES_YAML: &str = include_str!("../../samples/default/attributes.yaml");

/// The repository's `samples/` directory.
pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

/// `samples/default`: Istio 1.4's telemetry configuration.
pub fn default_samples() -> PathBuf {
    samples_dir().join("default")
}

/// The text of `samples/default/<name>`.
pub fn read_sample(name: &str) -> String {
    let path = default_samples().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A temporary config directory holding Istio's attribute manifests plus `files`
/// (name, contents).
pub fn config_dir(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("creates a tempdir");
    write_file(dir.path(), "attributes.yaml", ATTRIBUTES_YAML);
    for (name, body) in files {
        write_file(dir.path(), name, body);
    }
    dir
}

/// Writes `dir/name`, returning its path.
pub fn write_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    // Write-then-rename, as editors and ConfigMap updates do, so a poll never sees half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, body).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
    path
}
