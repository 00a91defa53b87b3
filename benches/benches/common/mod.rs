//! Setup shared by the `pipeline` and `alloc` benches: configurations written to a
//! tempdir and compiled with their handlers really built, the server service over the
//! same directory, and pre-encoded Envoy-shaped requests.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use adapters::{Resources, ValidateInput};
use benches::Traffic;
use expr_lang::{FunctionTable, Manifest, MapBag, StringMapRef, Value, ValueType};
use mixer::api::mixer::MixerService;
use mixer::api::shed::{LoadShedder, SheddingOptions};
use mixer::attrs::ProtoBag;
use mixer::config::Severity;
use mixer::config::Snapshot;
use mixer::config::compile::{CompileOptions, compile};
use mixer::config::store::read_dirs;
use mixer::metrics::Metrics;
use mixer::runtime::{PolicyErrorMode, Runtime, RuntimeOptions};
use mixer::wire::pb::istio::mixer::v1::report_request::RepeatedAttributesSemantics;
use mixer::wire::pb::istio::mixer::v1::{CheckRequest, ReportRequest, check_request};
use mixer::wire::view::CheckView;
use prost::Message;
use serde_json::json;
use tempfile::TempDir;
use templates::{Handler, InstanceBuilder, TemplateKind};
use test_support::config::{config_dir, read_sample, write_file};

pub const DEFAULT_NAMESPACE: &str = "istio-system";

/// The quota the policy configuration defines (a Check asks for it by this name).
pub const QUOTA_NAME: &str = "requestcount";

/// Report elements per batch, as Envoy batches them.
pub const BATCH: usize = 100;

/// Replaces `from` with `to` in `text`, which must contain it exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected one {from:?} in the sample"
    );
    text.replacen(from, to, 1)
}

/// A configuration directory and the access-log file its stdio handler writes, if any.
pub struct ConfigDir {
    pub dir: TempDir,
    pub log: Option<PathBuf>,
}

/// `samples/default` (attribute manifests, the eight Prometheus metrics, the stdio access
/// log, the demo policy), with the access log written to a file in the tempdir instead of
/// standard output. With `tracing`, `tracing.yaml` too, exporting to a loopback port
/// where nothing listens (spans are queued, exports fail and are counted).
pub fn telemetry_config(tracing: bool) -> ConfigDir {
    let dir = config_dir(&[
        ("metrics.yaml", &read_sample("metrics.yaml")),
        ("policy.yaml", &read_sample("policy.yaml")),
    ]);
    let log = dir.path().join("access.log");
    let accesslog = replace_once(
        &read_sample("accesslog.yaml"),
        "    outputAsJson: true\n",
        &format!(
            "    outputAsJson: true\n    logStream: FILE\n    outputPath: {}\n",
            log.display()
        ),
    );
    write_file(dir.path(), "accesslog.yaml", &accesslog);
    if tracing {
        let tracing = replace_once(
            &read_sample("tracing.yaml"),
            "endpoint: http://localhost:4317",
            "endpoint: http://127.0.0.1:9",
        );
        write_file(dir.path(), "tracing.yaml", &tracing);
    }
    ConfigDir {
        dir,
        log: Some(log),
    }
}

/// Ten rules in the default namespace (so all of them apply to every request): two
/// deniers by label, six listcheckers (white- and blacklists over labels, IPs,
/// namespaces and paths, all from `overrides`), one header operation, and one memquota
/// quota rule. Envoy-shaped traffic passes every check.
const POLICY: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny-untrusted, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: requests from untrusted workloads are not allowed}
    validDuration: 10s
    validUseCount: 1000
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: deny-legacy, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: the v0 API is retired}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denied-request, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-untrusted, namespace: istio-system}
spec:
  match: (source.labels["app"] | "") == "untrusted"
  actions:
  - handler: deny-untrusted
    instances: [denied-request]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-legacy, namespace: istio-system}
spec:
  match: (destination.labels["version"] | "") == "v0" && (source.namespace | "") != "prod"
  actions:
  - handler: deny-legacy
    instances: [denied-request]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: version-whitelist, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params:
    overrides: ["v1", "v2", "v3"]
    blacklist: false
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: source-version, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: source.labels["version"] | "v1"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: whitelist-versions, namespace: istio-system}
spec:
  match: (destination.labels["app"] | "") != ""
  actions:
  - handler: version-whitelist
    instances: [source-version]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: app-blacklist, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params:
    overrides: ["untrusted", "scanner", "evil"]
    blacklist: true
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: source-app, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: source.labels["app"] | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: blacklist-apps, namespace: istio-system}
spec:
  actions:
  - handler: app-blacklist
    instances: [source-app]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: source-ip-whitelist, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params:
    overrides: ["10.0.0.0/8", "192.168.0.0/16"]
    entryType: IP_ADDRESSES
    blacklist: false
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: source-ip, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: source.ip | ip("0.0.0.0")
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: whitelist-source-ip, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions:
  - handler: source-ip-whitelist
    instances: [source-ip]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: destination-ip-blacklist, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params:
    overrides: ["172.16.0.0/12", "203.0.113.0/24"]
    entryType: IP_ADDRESSES
    blacklist: true
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: destination-ip, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: destination.ip | ip("0.0.0.0")
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: blacklist-destination-ip, namespace: istio-system}
spec:
  actions:
  - handler: destination-ip-blacklist
    instances: [destination-ip]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: namespace-whitelist, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params:
    overrides: ["default", "shop", "bookinfo", "prod"]
    entryType: CASE_INSENSITIVE_STRINGS
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: source-namespace, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: source.namespace | "default"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: whitelist-namespaces, namespace: istio-system}
spec:
  actions:
  - handler: namespace-whitelist
    instances: [source-namespace]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: path-blacklist, namespace: istio-system}
spec:
  compiledAdapter: listchecker
  params:
    overrides: ["^/admin", "\\.php$", "^/debug/"]
    entryType: REGEX
    blacklist: true
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: request-path, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: request.path | "/"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: blacklist-paths, namespace: istio-system}
spec:
  match: (request.method | "GET") != "OPTIONS"
  actions:
  - handler: path-blacklist
    instances: [request-path]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: mark-checked, namespace: istio-system}
spec:
  match: (context.protocol | "") == "http"
  requestHeaderOperations:
  - name: x-mixer-checked
    values: ['"true"']
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quota, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - name: requestcount.instance.istio-system
      maxAmount: 1000000000
      validDuration: 1s
      overrides:
      - dimensions: {destination: reviews, source: untrusted}
        maxAmount: 1
        validDuration: 5s
      - dimensions: {destination: productpage, source: scanner}
        maxAmount: 2
        validDuration: 5s
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      source: source.labels["app"] | "unknown"
      destination: destination.labels["app"] | destination.service.name | "unknown"
      destinationVersion: destination.labels["version"] | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: quota, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions:
  - handler: quota
    instances: [requestcount]
"#;

/// The 10-rule policy (see [`POLICY`]) with the sample attribute manifests.
pub fn policy_config() -> ConfigDir {
    let dir = config_dir(&[("policy.yaml", POLICY)]);
    ConfigDir { dir, log: None }
}

/// `benches/configs/policy-10-rules`, the 10-rule policy `mixer-load` measures, copied
/// to a tempdir: Check cost here can be compared with what `mixer-load` sees over gRPC.
pub fn mixer_load_policy_config() -> ConfigDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/policy-10-rules");
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            fs::copy(&path, dir.path().join(path.file_name().expect("file name")))
                .expect("copy config");
        }
    }
    ConfigDir { dir, log: None }
}

/// A compiled snapshot with its handlers built, and the metrics dispatch counts into.
pub struct Loaded {
    pub config: ConfigDir,
    pub snapshot: Snapshot,
    pub metrics: Metrics,
    pub resources: Arc<Resources>,
}

impl Loaded {
    /// Reads and compiles `config` as the server would, building every handler; panics
    /// on any error diagnostic.
    pub fn new(config: ConfigDir, runtime: &tokio::runtime::Handle) -> Loaded {
        let read = read_dirs(&[config.dir.path().to_path_buf()]);
        assert!(read.errors.is_empty(), "config errors: {:?}", read.errors);
        let resources = Arc::new(Resources {
            runtime: Some(runtime.clone()),
            ..Default::default()
        });
        let compiled = compile(
            &read.documents,
            &CompileOptions {
                default_namespace: DEFAULT_NAMESPACE.to_owned(),
                build_handlers: true,
                generation: 1,
                resources: resources.clone(),
            },
            None,
        );
        let errors: Vec<String> = compiled
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "compile errors:\n{}", errors.join("\n"));
        Loaded {
            config,
            snapshot: compiled.snapshot,
            metrics: Metrics::new(),
            resources,
        }
    }

    /// Empties the access log (its writer appends, so it keeps writing at the new end):
    /// keeps a long run from filling the disk.
    pub fn truncate_log(&self) {
        if let Some(log) = &self.config.log {
            let _ = fs::OpenOptions::new()
                .write(true)
                .open(log)
                .and_then(|f| f.set_len(0));
        }
    }

    /// The sum of the adapter self-metric samples whose name contains `part` (e.g.
    /// `dropped`), read from their text exposition.
    pub fn adapter_metric_sum(&self, part: &str) -> f64 {
        self.metrics
            .render_with(&self.resources.metrics)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next().is_some_and(|n| n.contains(part)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The gRPC service, serving a runtime loaded from `dir` (its own handlers and metrics),
/// with a server-side Check cache of `check_cache_size` decisions (0: none; the server's
/// default is 10000) and load shedding disabled (the server's default).
pub fn service(
    dir: &Path,
    runtime: &tokio::runtime::Handle,
    check_cache_size: u64,
) -> MixerService {
    let rt = Runtime::new(
        RuntimeOptions {
            config_dirs: vec![dir.to_path_buf()],
            resources: Arc::new(Resources {
                runtime: Some(runtime.clone()),
                ..Default::default()
            }),
            default_namespace: DEFAULT_NAMESPACE.to_owned(),
            policy_errors: PolicyErrorMode::Mixer,
            check_cache_size,
        },
        Metrics::new(),
    );
    let status = rt.reload();
    assert!(status.applied, "not applied: {:?}", status.diagnostics);
    assert!(
        status
            .diagnostics
            .iter()
            .all(|d| d.severity != Severity::Error),
        "errors: {:?}",
        status.diagnostics
    );
    let shedder = LoadShedder::new(SheddingOptions::default(), rt.metrics.shed.clone());
    MixerService::new(
        Arc::new(rt),
        Arc::new(shedder),
        mixer::attrs::DecodeLimits::default(),
    )
}

/// `n` Check requests, as Envoy encodes them.
pub fn check_requests(traffic: &mut Traffic, n: usize) -> Vec<CheckRequest> {
    (0..n).map(|_| traffic.check_request()).collect()
}

/// `n` Report requests of [`BATCH`] elements each, as Envoy encodes them.
pub fn report_requests(traffic: &mut Traffic, n: usize) -> Vec<ReportRequest> {
    (0..n).map(|_| traffic.report_request(BATCH)).collect()
}

pub fn encode_all<M: Message>(messages: &[M]) -> Vec<Vec<u8>> {
    messages.iter().map(Message::encode_to_vec).collect()
}

/// A Check request's bag, decoded as the server decodes it.
pub fn check_bag<'r>(req: &'r CheckRequest, snap: &Snapshot) -> ProtoBag<'r> {
    let attrs = req.attributes.as_ref().expect("attributes");
    ProtoBag::decode(attrs, &attrs.words, &snap.attributes).expect("decodes")
}

/// A Check request's bag, read from its bytes as the server reads it.
pub fn view_bag<'r>(view: &'r CheckView, snap: &Snapshot) -> ProtoBag<'r> {
    let attrs = view.attributes();
    ProtoBag::decode_wire(
        attrs,
        attrs.words(),
        &snap.attributes,
        mixer::attrs::DecodeLimits::default(),
    )
    .expect("decodes")
}

/// The views of `requests`, as the server reads them.
pub fn check_views(requests: &[CheckRequest]) -> Vec<CheckView> {
    requests.iter().map(CheckView::from_request).collect()
}

/// A placeholder deduplication id, replaced by a fresh one in each copy of a request.
const DEDUP_PLACEHOLDER: &[u8; 16] = b"################";

/// Encoded Check requests into which a fresh deduplication id is written per call, so
/// that memquota allocates rather than replays, as it does for Envoy's traffic.
pub struct CheckBytes {
    encoded: Vec<Vec<u8>>,
    /// Where the placeholder id is in each.
    offsets: Vec<usize>,
}

impl CheckBytes {
    /// `requests`, each asking for one unit of [`QUOTA_NAME`] when `quota`.
    pub fn new(requests: &[CheckRequest], quota: bool) -> CheckBytes {
        let placeholder = std::str::from_utf8(DEDUP_PLACEHOLDER).expect("ascii");
        let encoded: Vec<Vec<u8>> = requests
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.deduplication_id = placeholder.to_owned();
                if quota {
                    r.quotas.insert(
                        QUOTA_NAME.to_owned(),
                        check_request::QuotaParams {
                            amount: 1,
                            best_effort: false,
                        },
                    );
                }
                r.encode_to_vec()
            })
            .collect();
        let offsets = encoded
            .iter()
            .map(|bytes| {
                bytes
                    .windows(DEDUP_PLACEHOLDER.len())
                    .position(|w| w == DEDUP_PLACEHOLDER)
                    .expect("the placeholder id is in the request")
            })
            .collect();
        CheckBytes { encoded, offsets }
    }

    /// Request `i` (cycling) with deduplication id `id`, as the bytes a server receives.
    pub fn with_id(&self, i: usize, id: u64) -> bytes::Bytes {
        let i = i % self.encoded.len();
        let mut bytes = self.encoded[i].clone();
        let mut buf = [0u8; 16];
        let at = self.offsets[i];
        bytes[at..at + 16].copy_from_slice(hex_id(id, &mut buf).as_bytes());
        bytes::Bytes::from(bytes)
    }
}

/// A Report request's bags, decoded as the server decodes INDEPENDENT_ENCODING batches.
pub fn report_bags<'r>(req: &'r ReportRequest, snap: &Snapshot) -> Vec<ProtoBag<'r>> {
    assert_eq!(
        req.repeated_attributes_semantics,
        RepeatedAttributesSemantics::IndependentEncoding as i32
    );
    req.attributes
        .iter()
        .map(|a| {
            let words = if a.words.is_empty() {
                &req.default_words
            } else {
                &a.words
            };
            ProtoBag::decode(a, words, &snap.attributes).expect("decodes")
        })
        .collect()
}

/// Writes `n` as 16 hex digits into `buf`: a unique deduplication id without formatting
/// machinery or allocation.
pub fn hex_id(n: u64, buf: &mut [u8; 16]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((n >> ((15 - i) * 4)) & 0xf) as usize];
    }
    std::str::from_utf8(buf).expect("ascii")
}

/// A memquota handler built through the adapter inventory (validate + build), its quota
/// instance builder, and a bag to build the instance from.
pub struct MemQuotaSetup {
    pub handler: Arc<dyn Handler>,
    pub builder: InstanceBuilder,
    pub bag: MapBag,
}

pub fn memquota() -> MemQuotaSetup {
    let manifest = Manifest::from_pairs([
        ("source.labels", ValueType::StringMap),
        ("destination.labels", ValueType::StringMap),
        ("destination.service.name", ValueType::String),
    ]);
    let builder = InstanceBuilder::compile(
        "requestcount.instance.istio-system",
        TemplateKind::Quota,
        &json!({
            "dimensions": {
                "source": "source.labels[\"app\"] | \"unknown\"",
                "destination": "destination.labels[\"app\"] | destination.service.name | \"unknown\"",
                "destinationVersion": "destination.labels[\"version\"] | \"unknown\"",
            }
        }),
        None,
        &manifest,
        &FunctionTable::standard(),
    )
    .expect("quota instance compiles");
    // A 10 ms deduplication window keeps the table near the size it has at real
    // per-counter rates (tens of thousands of ids) rather than the millions of ids a
    // tight loop would leave in a 1 s window.
    let params = json!({
        "quotas": [{
            "name": "requestcount.instance.istio-system",
            "maxAmount": 1_000_000_000_000_i64,
            "validDuration": "1s",
            "overrides": [
                {"dimensions": {"destination": "reviews", "source": "untrusted"}, "maxAmount": 1, "validDuration": "5s"},
                {"dimensions": {"destination": "productpage", "source": "scanner"}, "maxAmount": 2, "validDuration": "5s"},
            ],
        }],
        "minDeduplicationDuration": "10ms",
    });
    let adapter = adapters::find("memquota").expect("memquota adapter");
    let validated = adapter
        .validate(&ValidateInput {
            handler: "quota.istio-system",
            params: &params,
            instances: &[&builder],
        })
        .config
        .expect("memquota params validate");
    let handler = adapter
        .build(validated, &adapters::Env::standalone("quota.istio-system"))
        .expect("memquota builds");
    let labels = |app: &str, version: &str| {
        Value::StringMap(StringMapRef::Owned(Arc::new(
            [("app", app), ("version", version)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )))
    };
    let bag = MapBag::new()
        .with("source.labels", labels("productpage", "v1"))
        .with("destination.labels", labels("reviews", "v2"))
        .with("destination.service.name", Value::str("reviews"));
    MemQuotaSetup {
        handler,
        builder,
        bag,
    }
}
