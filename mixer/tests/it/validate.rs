//! `mixer validate` on Istio's own configuration files, and on broken variants.

use std::path::{Path, PathBuf};

use crate::common::{ATTRIBUTES_YAML, mixer_command};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/istio-configs")
}

/// Adds `namespace: default` to documents that have none (the bookinfo samples are meant
/// for `kubectl apply -n default`; Mixer's file store requires a namespace).
fn with_default_namespace(text: &str) -> String {
    text.split("\n---")
        .map(|doc| {
            if doc.contains("metadata:") && !doc.contains("namespace:") {
                doc.replacen("metadata:\n", "metadata:\n  namespace: default\n", 1)
            } else {
                doc.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n---")
}

fn validate(path: &Path) -> (bool, String) {
    let out = mixer_command()
        .arg("validate")
        .arg(path)
        .output()
        .expect("mixer runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn every_istio_config_file_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut versions: Vec<_> = std::fs::read_dir(data_dir()).unwrap().flatten().collect();
    versions.sort_by_key(|e| e.path());
    for version in versions {
        let mut files: Vec<_> = std::fs::read_dir(version.path())
            .unwrap()
            .flatten()
            .collect();
        files.sort_by_key(|e| e.path());
        for f in files {
            let text = std::fs::read_to_string(f.path()).unwrap();
            let copy = tmp.path().join(f.file_name());
            std::fs::write(&copy, with_default_namespace(&text)).unwrap();
            let (ok, out) = validate(&copy);
            checked += 1;
            if !ok || !out.contains("valid: ") {
                failures.push(format!("{}:\n{out}", f.path().display()));
            }
            std::fs::remove_file(&copy).unwrap();
        }
    }
    assert!(checked >= 60, "only {checked} files");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_whole_mixer_testdata_directory_validates_together() {
    let dir = data_dir().join("1.4.10");
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = f.file_name().into_string().unwrap();
        if name.starts_with("mixer__testdata__config__") && !name.contains("template") {
            std::fs::copy(f.path(), tmp.path().join(&name)).unwrap();
        }
    }
    let (ok, out) = validate(tmp.path());
    assert!(ok, "{out}");
    // Every rule's references resolve when the files are read together.
    assert!(!out.contains("is not defined"), "{out}");
}

fn broken(name: &str, yaml: &str) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("attributes.yaml"), ATTRIBUTES_YAML).unwrap();
    std::fs::write(tmp.path().join(name), yaml).unwrap();
    let r = validate(tmp.path());
    assert!(!r.0, "{name} should be rejected:\n{}", r.1);
    r
}

#[test]
fn broken_variants_are_rejected_with_precise_messages() {
    let (_, out) = broken(
        "rule.yaml",
        "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata:\n  name: r1\n  namespace: istio-system\nspec:\n  match: source.labels[\"app\"] == 1\n",
    );
    assert!(out.contains("rule.yaml:1: error: rule/istio-system/r1: match: EQ(INDEX($source.labels, \"app\"), 1) arg 2 (1) typeError got INT64, expected STRING"), "{out}");
    assert!(out.contains("at column 25"), "{out}");

    let (_, out) = broken(
        "instance.yaml",
        "kind: instance\nmetadata: {name: m, namespace: istio-system}\nspec:\n  compiledTemplate: metric\n  params:\n    value: \"1\"\n    dimensions:\n      app: source.labels[\"app\"] | unknown\n    colour: '\"red\"'\n",
    );
    assert!(
        out.contains("instance/istio-system/m: params.dimensions.app: unknown attribute unknown"),
        "{out}"
    );
    assert!(
        out.contains("params.colour: template 'metric' has no field 'colour'"),
        "{out}"
    );

    let (_, out) = broken(
        "log.yaml",
        "kind: logentry\nmetadata: {name: l, namespace: istio-system}\nspec:\n  severity: request.size\n",
    );
    assert!(out.contains("logentry/istio-system/l: severity: expression has type INT64, but the field needs STRING"), "{out}");

    let (_, out) = broken(
        "handler.yaml",
        "kind: handler\nmetadata: {name: h, namespace: istio-system}\nspec:\n  compiledAdapter: denier\n  params:\n    status: {code: 7}\n    validUseCunt: 3\n",
    );
    assert!(
        out.contains("handler/istio-system/h: params.validUseCunt: unknown field `validUseCunt`"),
        "{out}"
    );

    let (_, out) = broken(
        "handler.yaml",
        "kind: handler\nmetadata: {name: h, namespace: istio-system}\nspec:\n  compiledAdapter: denyer\n",
    );
    assert!(out.contains("unknown adapter 'denyer'"), "{out}");

    let (_, out) = broken(
        "route.yaml",
        "kind: handler\nmetadata: {name: d, namespace: istio-system}\nspec:\n  compiledAdapter: denier\n---\nkind: instance\nmetadata: {name: m, namespace: istio-system}\nspec:\n  compiledTemplate: metric\n  params: {value: \"1\"}\n---\nkind: rule\nmetadata: {name: r, namespace: istio-system}\nspec:\n  actions:\n  - handler: d\n    instances: [m]\n",
    );
    assert!(out.contains("actions[0].instances[0]: handler 'd.istio-system' (adapter 'denier') cannot take instance 'm.instance.istio-system' of template 'metric'"), "{out}");

    let (_, out) = broken(
        "bad.yaml",
        "kind: rule\nmetadata: {name: r, namespace: istio-system\nspec: {}\n",
    );
    assert!(out.contains("bad.yaml:"), "{out}");

    let (_, out) = broken(
        "manifest.yaml",
        "kind: attributemanifest\nmetadata: {name: extra, namespace: istio-system}\nspec:\n  attributes:\n    my.attr: {valueType: STRNG}\n",
    );
    assert!(
        out.contains("attributes.my.attr.valueType: unknown value type \"STRNG\""),
        "{out}"
    );
}

#[test]
fn strict_mode_fails_on_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("rule.yaml"),
        "kind: rule\nmetadata: {name: r, namespace: istio-system}\nspec:\n  actions:\n  - handler: missing\n    instances: [gone]\n",
    )
    .unwrap();
    let out = mixer_command()
        .arg("validate")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = mixer_command()
        .args(["validate", "--strict"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("handler 'missing' is not defined"));
}
